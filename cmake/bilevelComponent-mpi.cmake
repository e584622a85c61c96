# SPDX-License-Identifier: MIT
# Component "mpi" of the installed bilevel package, read by bilevelConfig.cmake only when a
# consumer asks for it: find_package(bilevel CONFIG REQUIRED COMPONENTS mpi).
# Target bilevel::mpi (INTERFACE): bilevel::bilevel + MPI::MPI_CXX, for data-parallel training
# over MPI (#include <bilevel/distributed/mpi.hpp>). MPI is found here, on the consumer's
# machine (Debian: libopenmpi-dev); when it is missing, find_dependency() returns from this file
# and bilevelConfig.cmake reports the component as not found.
find_dependency(MPI COMPONENTS CXX)

if(NOT TARGET bilevel::mpi)
  include("${CMAKE_CURRENT_LIST_DIR}/bilevelMpiTargets.cmake")
endif()
set(bilevel_mpi_FOUND TRUE)
