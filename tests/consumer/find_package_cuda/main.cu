// SPDX-License-Identifier: MIT
// The cuda component's consumer program (package.find_package_cuda_consumer): the ridge check
// of every consumer (../ridge_check.hpp) on the CUDA policy, in double. Without a CUDA device
// it says so and exits 0; the test's SKIP_REGULAR_EXPRESSION turns that line into Skipped.
#include <bilevel/policy/cuda.hpp>

#include <cuda_runtime.h>

#include <cstdio>

#include "../ridge_check.hpp"

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("consumer (cuda): configured, built and linked; no CUDA device to run on\n");
    return 0;
  }
  return check<bilevel::policy::cuda<double>>("cuda") ? 0 : 1;
}
