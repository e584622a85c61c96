# SPDX-License-Identifier: MIT
# The optional CUDA back end (bilevel/policy/cuda.hpp): the INTERFACE target bilevel_cuda
# (alias bilevel::cuda) and, with the tests, the GPU suite tests/cuda (bilevel_cuda_tests).
#
# Included from the top-level CMakeLists.txt after the bilevel target exists:
#     include(cmake/BilevelCuda.cmake)
# It enables CUDA only when a CUDA compiler is found, so a machine without the toolkit
# configures as before; a machine with the toolkit but no GPU builds everything, and the GPU
# suite reports itself Skipped under ctest (exit code 77) instead of failing.
#
# Consumers: compile the translation units that include bilevel/policy/cuda.hpp as CUDA
# (.cu, C++20) and link bilevel::cuda; keep Eigen (bilevel/policy/eigen.hpp, bilevel.hpp) out
# of those translation units.

option(BILEVEL_WITH_CUDA "Look for a CUDA compiler and toolkit; when found, define bilevel::cuda here and build its GPU tests" ON)

if(BILEVEL_WITH_CUDA)
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    # Defaults; a value given on the command line (or by a parent project) wins. The
    # architectures are set before the language is enabled so that its checks use them too
    # (80: A100, 90: H100/H200); the standard after, because CMake knows the flags for it only
    # once it has identified the compiler.
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES 80 90)
    endif()
    enable_language(CUDA)
    # CMake learned nvcc's C++20 flag only after 3.25: where it does not know it, the target
    # below passes -std=c++20 itself instead (a CUDA standard CMake cannot honour would be a
    # generate-time error).
    if("cuda_std_20" IN_LIST CMAKE_CUDA_COMPILE_FEATURES)
      set(BILEVEL_CUDA_STD_FEATURE ON)
      if(NOT DEFINED CMAKE_CUDA_STANDARD)
        set(CMAKE_CUDA_STANDARD 20)
      endif()
      set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    else()
      set(BILEVEL_CUDA_STD_FEATURE OFF)
    endif()
    find_package(CUDAToolkit)
  endif()

  if(CMAKE_CUDA_COMPILER AND CUDAToolkit_FOUND)
    add_library(bilevel_cuda INTERFACE)
    add_library(bilevel::cuda ALIAS bilevel_cuda)
    set_target_properties(bilevel_cuda PROPERTIES EXPORT_NAME cuda)
    target_link_libraries(bilevel_cuda INTERFACE bilevel CUDA::cublas CUDA::cudart)
    if(BILEVEL_CUDA_STD_FEATURE)
      target_compile_features(bilevel_cuda INTERFACE cuda_std_20)
    else()
      target_compile_options(bilevel_cuda INTERFACE $<$<COMPILE_LANGUAGE:CUDA>:-std=c++20>)
    endif()
    # Extended lambdas let callers pass `[] __host__ __device__ (...) {...}` to
    # cuda<S>::transform (run in a kernel); relaxed constexpr lets device code call constexpr
    # host functions (std::min, std::numeric_limits, ...).
    target_compile_options(bilevel_cuda INTERFACE
                           $<$<COMPILE_LANGUAGE:CUDA>:--extended-lambda --expt-relaxed-constexpr>)
    message(STATUS "bilevel: CUDA policy enabled (CUDA ${CUDAToolkit_VERSION}, architectures ${CMAKE_CUDA_ARCHITECTURES})")
    if(BILEVEL_BUILD_TESTS)
      enable_testing()  # in case this file is included before the top level enables it
      add_subdirectory(${CMAKE_CURRENT_LIST_DIR}/../tests/cuda ${CMAKE_CURRENT_BINARY_DIR}/tests/cuda)
    endif()
  else()
    message(STATUS "bilevel: no CUDA compiler or toolkit found; the CUDA policy is not built")
  endif()
endif()
