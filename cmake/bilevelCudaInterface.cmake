# SPDX-License-Identifier: MIT
# What a target that compiles against the CUDA policy (bilevel/policy/cuda.hpp) needs, in one
# place for both definitions of bilevel::cuda: the build tree's (cmake/BilevelCuda.cmake) and
# the installed package's (cmake/bilevelComponent-cuda.cmake). Needs the CUDA language enabled
# and CUDA::cublas / CUDA::cudart (find_package(CUDAToolkit)).
#   bilevel_cuda_interface(<target> <bilevel target>)
function(bilevel_cuda_interface target bilevel_target)
  target_link_libraries(${target} INTERFACE ${bilevel_target} CUDA::cublas CUDA::cudart)
  # CMake learned nvcc's C++20 flag only after 3.25: where it does not know it, pass
  # -std=c++20 directly (a CUDA standard CMake cannot honour is a generate-time error).
  if("cuda_std_20" IN_LIST CMAKE_CUDA_COMPILE_FEATURES)
    target_compile_features(${target} INTERFACE cuda_std_20)
  else()
    target_compile_options(${target} INTERFACE $<$<COMPILE_LANGUAGE:CUDA>:-std=c++20>)
  endif()
  # Extended lambdas let callers pass `[] __host__ __device__ (...) {...}` to
  # cuda<S>::transform (run in a kernel); relaxed constexpr lets device code call constexpr
  # host functions (std::min, std::numeric_limits, ...).
  target_compile_options(${target} INTERFACE $<$<COMPILE_LANGUAGE:CUDA>:--extended-lambda --expt-relaxed-constexpr>)
endfunction()
