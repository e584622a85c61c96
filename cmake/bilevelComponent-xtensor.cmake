# SPDX-License-Identifier: MIT
# Component "xtensor" of the installed bilevel package, read by bilevelConfig.cmake only when
# a consumer asks for it: find_package(bilevel CONFIG REQUIRED COMPONENTS xtensor).
# Target bilevel::xtensor (INTERFACE): bilevel::bilevel + xtensor + BLAS::BLAS, for the
# xtensor policy (#include <bilevel/policy/xtensor.hpp>): xtensor containers, CBLAS from
# OpenBLAS for GEMM/GEMV. Its dependencies are found here, on the consumer's machine; when
# one is missing, find_dependency() returns from this file and bilevelConfig.cmake reports
# the component as not found.
find_dependency(xtensor)

# FindBLAS restricted to OpenBLAS (its cblas.h is what the policy includes). In a function,
# so the consumer's own BLA_VENDOR (and BLAS_* variables) are left as they were; BLAS::BLAS
# is an imported target, which belongs to the directory, not to the function's scope.
function(_bilevel_find_openblas)
  set(BLA_VENDOR OpenBLAS)
  find_dependency(BLAS)  # on failure: returns from this function before the line below
  set(_bilevel_openblas_found TRUE PARENT_SCOPE)
endfunction()
set(_bilevel_openblas_found FALSE)
_bilevel_find_openblas()
if(NOT _bilevel_openblas_found)
  set(bilevel_xtensor_NOT_FOUND_MESSAGE
      "bilevel's component \"xtensor\" is not available because dependency BLAS (BLA_VENDOR OpenBLAS) could not be found")
  unset(_bilevel_openblas_found)
  return()
endif()
unset(_bilevel_openblas_found)

if(NOT TARGET bilevel::xtensor)
  include("${CMAKE_CURRENT_LIST_DIR}/bilevelXtensorTargets.cmake")
endif()
set(bilevel_xtensor_FOUND TRUE)
