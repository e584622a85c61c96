# SPDX-License-Identifier: MIT
# Component "nccl" of the installed bilevel package, read by bilevelConfig.cmake only when a
# consumer asks for it: find_package(bilevel CONFIG REQUIRED COMPONENTS nccl).
# Target bilevel::nccl (INTERFACE): bilevel::cuda + bilevel::mpi + NCCL, for data-parallel
# training between GPUs (#include <bilevel/distributed/nccl.hpp> in a CUDA translation unit;
# MPI starts the processes and carries NCCL's bootstrap). Like the cuda component it is defined
# here, against the consumer's own CUDA toolkit, MPI and NCCL (cmake/bilevelFindNCCL.cmake says
# where NCCL is looked for), so it is available wherever those are, whatever the machine that
# installed bilevel had.
include("${CMAKE_CURRENT_LIST_DIR}/bilevelComponent-cuda.cmake")
if(NOT bilevel_cuda_FOUND)
  if(DEFINED bilevel_cuda_NOT_FOUND_MESSAGE)
    set(bilevel_nccl_NOT_FOUND_MESSAGE "bilevel's component \"nccl\" needs the component \"cuda\": ${bilevel_cuda_NOT_FOUND_MESSAGE}")
  endif()
  return()
endif()
include("${CMAKE_CURRENT_LIST_DIR}/bilevelComponent-mpi.cmake")
if(NOT bilevel_mpi_FOUND)
  return()  # find_dependency(MPI) has said why; bilevelConfig.cmake names this component
endif()
include("${CMAKE_CURRENT_LIST_DIR}/bilevelFindNCCL.cmake")
bilevel_find_nccl()
if(NOT BILEVEL_NCCL_INCLUDE_DIR OR NOT BILEVEL_NCCL_LIBRARY)
  set(bilevel_nccl_NOT_FOUND_MESSAGE
      "bilevel's component \"nccl\" is not available because NCCL (nccl.h and libnccl) was not found next to "
      "the CUDA toolkit or under NCCL_HOME (set NCCL_HOME, or BILEVEL_NCCL_INCLUDE_DIR and BILEVEL_NCCL_LIBRARY)")
  return()
endif()

if(NOT TARGET bilevel::nccl)
  add_library(bilevel::nccl INTERFACE IMPORTED)
  target_include_directories(bilevel::nccl SYSTEM INTERFACE "${BILEVEL_NCCL_INCLUDE_DIR}")
  target_link_libraries(bilevel::nccl INTERFACE bilevel::cuda bilevel::mpi "${BILEVEL_NCCL_LIBRARY}")
endif()
set(bilevel_nccl_FOUND TRUE)
