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
    # Where CMake knows nvcc's C++20 flag, make it this project's default CUDA standard too;
    # otherwise bilevel::cuda passes -std=c++20 itself (cmake/bilevelCudaInterface.cmake).
    if("cuda_std_20" IN_LIST CMAKE_CUDA_COMPILE_FEATURES)
      if(NOT DEFINED CMAKE_CUDA_STANDARD)
        set(CMAKE_CUDA_STANDARD 20)
      endif()
      set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    endif()
    find_package(CUDAToolkit)
  endif()

  if(CMAKE_CUDA_COMPILER AND CUDAToolkit_FOUND)
    add_library(bilevel_cuda INTERFACE)
    add_library(bilevel::cuda ALIAS bilevel_cuda)
    set_target_properties(bilevel_cuda PROPERTIES EXPORT_NAME cuda)
    include(${CMAKE_CURRENT_LIST_DIR}/bilevelCudaInterface.cmake)
    bilevel_cuda_interface(bilevel_cuda bilevel)
    message(STATUS "bilevel: CUDA policy enabled (CUDA ${CUDAToolkit_VERSION}, architectures ${CMAKE_CUDA_ARCHITECTURES})")
    # NCCL (bilevel/distributed/nccl.hpp): data parallelism between GPUs, bootstrapped over MPI,
    # so only where bilevel::mpi exists (where NCCL is looked for: cmake/bilevelFindNCCL.cmake,
    # which the installed component "nccl" shares).
    if(TARGET bilevel::mpi)
      include(${CMAKE_CURRENT_LIST_DIR}/bilevelFindNCCL.cmake)
      bilevel_find_nccl()
      if(BILEVEL_NCCL_INCLUDE_DIR AND BILEVEL_NCCL_LIBRARY)
        add_library(bilevel_nccl INTERFACE)
        add_library(bilevel::nccl ALIAS bilevel_nccl)
        target_include_directories(bilevel_nccl SYSTEM INTERFACE ${BILEVEL_NCCL_INCLUDE_DIR})
        target_link_libraries(bilevel_nccl INTERFACE bilevel_cuda bilevel_mpi ${BILEVEL_NCCL_LIBRARY})
        message(STATUS "bilevel: NCCL found (${BILEVEL_NCCL_LIBRARY}); bilevel::nccl defined")
      else()
        message(STATUS "bilevel: NCCL not found; bilevel::nccl is not defined")
      endif()
    endif()
    if(BILEVEL_BUILD_TESTS)
      enable_testing()  # in case this file is included before the top level enables it
      add_subdirectory(${CMAKE_CURRENT_LIST_DIR}/../tests/cuda ${CMAKE_CURRENT_BINARY_DIR}/tests/cuda)
    endif()
  else()
    message(STATUS "bilevel: no CUDA compiler or toolkit found; the CUDA policy is not built")
  endif()
endif()
