# SPDX-License-Identifier: MIT
# Component "cuda" of the installed bilevel package, read by bilevelConfig.cmake only when a
# consumer asks for it: find_package(bilevel CONFIG REQUIRED COMPONENTS cuda).
# Target bilevel::cuda (INTERFACE): bilevel::bilevel + cuBLAS + the CUDA runtime, with the
# nvcc flags the CUDA policy needs (cmake/bilevelCudaInterface.cmake). The library is
# header-only, so the target is defined here, against the consumer's own CUDA toolkit: the
# component is available wherever the consumer compiles CUDA, whether or not the machine
# that installed bilevel had a toolkit. Compile the translation units that include
# bilevel/policy/cuda.hpp as CUDA (.cu) and keep Eigen out of them.
if(NOT CMAKE_CUDA_COMPILER)
  set(bilevel_cuda_NOT_FOUND_MESSAGE
      "bilevel's component \"cuda\" needs the CUDA language enabled before find_package(bilevel COMPONENTS cuda): "
      "project(... LANGUAGES CXX CUDA) or enable_language(CUDA)")
  return()
endif()
find_dependency(CUDAToolkit)  # on failure: returns, and bilevelConfig.cmake reports the component missing

if(NOT TARGET bilevel::cuda)
  include("${CMAKE_CURRENT_LIST_DIR}/bilevelCudaInterface.cmake")
  add_library(bilevel::cuda INTERFACE IMPORTED)
  bilevel_cuda_interface(bilevel::cuda bilevel::bilevel)
endif()
set(bilevel_cuda_FOUND TRUE)
