# SPDX-License-Identifier: MIT
# Component "xtensor" of the installed bilevel package, read by bilevelConfig.cmake only when
# a consumer asks for it: find_package(bilevel CONFIG REQUIRED COMPONENTS xtensor).
# Target bilevel::xtensor (INTERFACE): bilevel::bilevel + xtensor + BLAS::BLAS, for the
# xtensor policy (#include <bilevel/policy/xtensor.hpp>): xtensor containers, CBLAS from
# OpenBLAS for GEMM/GEMV. Its dependencies are found here, on the consumer's machine; when
# one is missing, find_dependency() returns from this file and bilevelConfig.cmake reports
# the component as not found.
find_dependency(xtensor)

include("${CMAKE_CURRENT_LIST_DIR}/bilevelFindOpenBLAS.cmake")
_bilevel_require_openblas(xtensor)  # returns from this file when OpenBLAS is missing

if(NOT TARGET bilevel::xtensor)
  include("${CMAKE_CURRENT_LIST_DIR}/bilevelXtensorTargets.cmake")
endif()
set(bilevel_xtensor_FOUND TRUE)
