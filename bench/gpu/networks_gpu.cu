// SPDX-License-Identifier: MIT
// The papers' networks on the CUDA policy: bilevel's side of the GPU comparison with PyTorch
// (bench/compare/networks.py --device cuda, the same cases on the same GPU; bench/gpu/device_checks.sh
// runs both). One case per run, float, policy::cuda<float>; the cases and the command line are
// bench/network_cases.hpp's (e.g. --case resnet20-grad --batch 256).
//
// Each timed repetition is one call followed by cudaDeviceSynchronize, timed with
// steady_clock, so that it counts the GPU's work and not only the launches. GPU memory from
// cudaMemGetInfo: in use after set-up and the most seen after any repetition (the policy's
// allocator keeps what it has taken, so this is its high-water mark). Prints one JSON line;
// exits 77 without a GPU.
#include <cuda_runtime.h>

#include <bilevel/policy/cuda.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "../network_cases.hpp"

namespace {
using G = bilevel::policy::cuda<float>;
using namespace network_bench;

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

double gpu_used_mb() {
  std::size_t free = 0, total = 0;
  check(cudaMemGetInfo(&free, &total), "cudaMemGetInfo");
  return double(total - free) / (1024.0 * 1024.0);
}

}  // namespace

int main(int argc, char** argv) try {
  const options o = parse(argc, argv);
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::fprintf(stderr, "bench_gpu_networks: no CUDA device; nothing measured\n");
    return 77;
  }
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  const double used_before = gpu_used_mb();
  const auto c = std::make_unique<bench_case<G>>(o);
  check(cudaDeviceSynchronize(), "set-up");
  const double used_setup = gpu_used_mb();
  double used_peak = used_setup;
  for (std::size_t t = 0; t < o.warmup; ++t) {
    c->work(t);
    check(cudaDeviceSynchronize(), "warm-up");
    used_peak = std::max(used_peak, gpu_used_mb());
  }
  std::vector<double> ms;
  for (std::size_t t = 0; t < o.timed; ++t) {
    const auto t0 = std::chrono::steady_clock::now();
    c->work(o.warmup + t);
    check(cudaDeviceSynchronize(), "repetition");
    const auto t1 = std::chrono::steady_clock::now();
    ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    used_peak = std::max(used_peak, gpu_used_mb());
  }
  std::printf(
      "{\"implementation\": \"bilevel\", \"device\": \"%s\", \"case\": \"%s\", \"batch\": %zu, \"params\": %zu, "
      "\"arch_params\": %zu, \"warmup\": %zu, \"timed\": %zu, \"median_ms\": %.3f, \"p10_ms\": %.3f, \"p90_ms\": %.3f, "
      "\"min_ms\": %.3f, \"max_ms\": %.3f, \"gpu_used_before_mb\": %.1f, \"gpu_used_setup_mb\": %.1f, "
      "\"gpu_used_peak_mb\": %.1f, \"check_norm\": %.6g, \"contents\": \"%s\"}\n",
      prop.name, o.which.c_str(), c->batch, c->params, c->arch_params, o.warmup, o.timed, percentile(ms, 0.5),
      percentile(ms, 0.1), percentile(ms, 0.9), *std::min_element(ms.begin(), ms.end()),
      *std::max_element(ms.begin(), ms.end()), used_before, used_setup, used_peak, c->check_norm(),
      c->contents.c_str());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_gpu_networks: %s\n", e.what());
  return 1;
}
