// SPDX-License-Identifier: MIT
#pragma once
// The Eigen side of the GPU benchmark, compiled by the host compiler (cpu_side.cpp): only plain
// types cross into the CUDA translation unit.
#include <cstddef>
#include <string>

#include "workloads.hpp"

namespace gpu_bench {
/// measure<eigen<float>> with Eigen using `threads` threads (1 without OpenMP).
workload_times measure_cpu(model m, std::size_t batch, int threads);
method_times measure_method_cpu(method k, std::size_t batch, int threads);
/// The threads Eigen can use here (OpenMP's maximum; 1 without OpenMP).
int cpu_threads_available();
/// The processor's model name and Eigen's version, for the report.
std::string cpu_description();
}  // namespace gpu_bench
