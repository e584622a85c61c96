# SPDX-License-Identifier: MIT
# Component "eigen_blas" of the installed bilevel package, read by bilevelConfig.cmake only
# when a consumer asks for it: find_package(bilevel CONFIG REQUIRED COMPONENTS eigen_blas).
# Target bilevel::eigen_blas (INTERFACE): bilevel::bilevel + BLAS::BLAS (OpenBLAS) + the
# definition EIGEN_USE_BLAS, so that the Eigen policy's large products go to OpenBLAS's SGEMM
# and DGEMM (bench/RESULTS.md: 15-30% faster on the shapes measured). Link it to every target
# of a program or to none: translation units built with and without EIGEN_USE_BLAS must not
# be mixed in one program (Eigen's product kernels would differ between them).
include("${CMAKE_CURRENT_LIST_DIR}/bilevelFindOpenBLAS.cmake")
_bilevel_require_openblas(eigen_blas)  # returns from this file when OpenBLAS is missing

if(NOT TARGET bilevel::eigen_blas)
  include("${CMAKE_CURRENT_LIST_DIR}/bilevelEigenBlasTargets.cmake")
endif()
set(bilevel_eigen_blas_FOUND TRUE)
