// SPDX-License-Identifier: MIT
// The CUDA policy against the Eigen policy in one run, and against cuBLAS's own GEMM rate:
// gradient, Hessian-vector product and one Meta-Weight-Net look-ahead step of the MLP
// 784-256-128-10 and the small CNN at batches of 128 and 1024, in float.
//
//   build/bench/bench_gpu_learners [--out results.md]
//
// For each model and batch it prints the median milliseconds of each operation on the GPU,
// on the CPU with Eigen at 1 thread and at all of the machine's threads, and the GPU's speed-up
// over each; and, as the ceiling for the gradient, the time cuBLAS alone takes for the very
// GEMMs a gradient must run (forward, weight gradients, input adjoints; convolutions as their
// im2col products), with the share of the gradient's time that is GEMM. Not a test: CI builds
// it and never runs it (it exits 77 without a GPU).
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <bilevel/policy/cuda.hpp>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include "cpu_side.hpp"
#include "workloads.hpp"

namespace {
using namespace gpu_bench;
using G = bilevel::policy::cuda<float>;

void check(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) throw std::runtime_error(std::string("cuBLAS failed: ") + what);
}
void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

/// cuBLAS SGEMMs on preallocated buffers, on the policy's stream: the floor under any
/// implementation of the same products.
struct raw_gemm {
  cublasHandle_t handle{};
  float *a = nullptr, *b = nullptr, *c = nullptr;
  explicit raw_gemm(std::size_t max_elements) {
    check(cublasCreate(&handle), "cublasCreate");
    check(cublasSetStream(handle, cudaStreamPerThread), "cublasSetStream");
    for (float** p : {&a, &b, &c}) {
      check(cudaMalloc(p, max_elements * sizeof(float)), "cudaMalloc");
      check(cudaMemset(*p, 0, max_elements * sizeof(float)), "cudaMemset");
    }
  }
  ~raw_gemm() {
    cudaFree(a);
    cudaFree(b);
    cudaFree(c);
    cublasDestroy(handle);
  }
  /// C (m×n) = op(A) op(B), column-major; the shapes are what matter here.
  void run(std::size_t m, std::size_t n, std::size_t k, bool ta = false, bool tb = false) {
    const float one = 1, zero = 0;
    check(cublasSgemm(handle, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N, int(m), int(n), int(k),
                      &one, a, ta ? int(k) : int(m), b, tb ? int(n) : int(k), &zero, c, int(m)),
          "cublasSgemm");
  }
  /// A gradient's GEMMs: forward, weight gradients, input adjoints (not the first layer's).
  void gradient(model md, std::size_t batch) {
    const auto g = forward_gemms(md, batch);
    for (const auto& s : g) run(s.m, s.n, s.k);
    for (std::size_t l = g.size(); l-- > 0;) {
      run(g[l].k, g[l].n, g[l].m, true, false);
      if (l > 0) run(g[l].m, g[l].k, g[l].n, false, true);
    }
  }
};

std::string fmt(double x, int digits = 3) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, x);
  return buf;
}
}  // namespace

int main(int argc, char** argv) {
  std::string out_path;
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "--out" && i + 1 < argc) out_path = argv[++i];
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::cout << "bench_gpu_learners: no CUDA device; nothing measured\n";
    return 77;
  }
  try {
    cudaDeviceProp prop{};
    check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
    const int threads = cpu_threads_available();
    std::ostringstream md;
    md << "Device: " << prop.name << " (" << prop.multiProcessorCount << " SMs, "
       << fmt(double(prop.totalGlobalMem) / (1u << 30), 1) << " GiB); CPU side: " << cpu_description()
       << ", Eigen at 1 and " << threads << " threads. float throughout; median ms per call (reps in results).\n\n";
    // The square SGEMM rate: what cuBLAS reaches when the shape is not the limit.
    raw_gemm raw(std::size_t(1024) * 28 * 28 * 150);
    const std::size_t sq = 8192;
    const auto square = time_calls([&] { raw.run(sq, sq, sq); }, [] { G::synchronize(); }, 1.0, 5, 50, 2);
    const double peak_tflops = 2.0 * double(sq) * sq * sq / (square.median_ms * 1e-3) / 1e12;
    md << "cuBLAS SGEMM " << sq << "³: " << fmt(square.median_ms) << " ms, " << fmt(peak_tflops, 1)
       << " TFLOP/s (FP32, TF32 off).\n\n";
    md << "| model | batch | operation | GPU ms | CPU 1 thread ms | CPU " << threads
       << " threads ms | GPU speed-up vs 1 / " << threads << " threads |\n| --- | ---: | --- | ---: | ---: | ---: | ---: |\n";
    std::ostringstream ceiling, counts;
    counts << "| workload | batch | operation | kernels | cuBLAS calls | graph launches | host waits | GPU ms | µs per "
              "kernel or cuBLAS call |\n| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n";
    auto add_counts = [&](const char* what, std::size_t batch, const char* op, const timing& t, const call_counts& c) {
      counts << "| " << what << " | " << batch << " | " << op << " | " << c.kernels << " | " << c.blas_calls << " | "
             << c.graph_launches << " | " << c.host_waits << " | " << fmt(t.median_ms) << " | "
             << fmt(1e3 * t.median_ms / double(std::max<std::size_t>(1, c.kernels + c.blas_calls)), 1) << " |\n";
    };
    ceiling << "| model | batch | gradient GFLOP | GPU gradient ms | cuBLAS GEMMs alone ms | GEMM share | gradient TFLOP/s |\n"
               "| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n";
    for (model m : {model::mlp, model::cnn})
      for (std::size_t batch : {std::size_t(128), std::size_t(1024)}) {
        const auto gpu = measure<G>(m, batch, [] { G::synchronize(); });
        const auto cpu1 = measure_cpu(m, batch, 1);
        const auto cpun = measure_cpu(m, batch, threads);
        const std::pair<const char*, timing workload_times::*> ops[] = {
            {"gradient", &workload_times::gradient},
            {"HVP", &workload_times::hvp},
            {"MWN look-ahead step", &workload_times::lookahead_step},
            {"MWN look-ahead step, deferred checks", &workload_times::lookahead_step_deferred}};
        add_counts(name(m), batch, "gradient", gpu.gradient, gpu.gradient_calls);
        add_counts(name(m), batch, "HVP", gpu.hvp, gpu.hvp_calls);
        add_counts(name(m), batch, "MWN look-ahead step", gpu.lookahead_step, gpu.lookahead_step_calls);
        add_counts(name(m), batch, "MWN look-ahead step, deferred checks (check_every = 100)",
                   gpu.lookahead_step_deferred, gpu.lookahead_step_deferred_calls);
        add_counts(name(m), batch, "MWN look-ahead step, deferred checks, one CUDA graph a step",
                   gpu.lookahead_step_captured, gpu.lookahead_step_captured_calls);
        std::cerr << name(m) << " batch " << batch << " MWN look-ahead step captured: gpu "
                  << gpu.lookahead_step_captured.median_ms << " ms (" << gpu.lookahead_step_captured.reps
                  << " reps), plain deferred " << gpu.lookahead_step_deferred.median_ms << " ms\n";
        {  // the same with the GEMMs on tensor cores at TF32 (bilevel::policy::gemm_precision_scope)
          const bilevel::policy::gemm_precision_scope tf32(bilevel::policy::gemm_precision::tf32);
          const auto t = measure<G>(m, batch, [] { G::synchronize(); });
          add_counts(name(m), batch, "gradient, TF32 GEMMs", t.gradient, t.gradient_calls);
          add_counts(name(m), batch, "MWN look-ahead step, TF32 GEMMs, deferred checks", t.lookahead_step_deferred,
                     t.lookahead_step_deferred_calls);
        }
        for (const auto& [op, t] : ops) {
          md << "| " << name(m) << " | " << batch << " | " << op << " | " << fmt((gpu.*t).median_ms) << " | "
             << fmt((cpu1.*t).median_ms) << " | " << fmt((cpun.*t).median_ms) << " | "
             << fmt((cpu1.*t).median_ms / (gpu.*t).median_ms, 1) << "x / "
             << fmt((cpun.*t).median_ms / (gpu.*t).median_ms, 1) << "x |\n";
          std::cerr << name(m) << " batch " << batch << " " << op << ": gpu " << (gpu.*t).median_ms << " ms ("
                    << (gpu.*t).reps << " reps, p10 " << (gpu.*t).p10_ms << ", p90 " << (gpu.*t).p90_ms << "), cpu1 "
                    << (cpu1.*t).median_ms << " (" << (cpu1.*t).reps << "), cpu" << threads << " "
                    << (cpun.*t).median_ms << " (" << (cpun.*t).reps << ")\n";
        }
        std::cerr << "  loss at the gradient's point: gpu " << gpu.check << ", cpu " << cpu1.check << "\n";
        const auto gemms = time_calls([&] { raw.gradient(m, batch); }, [] { G::synchronize(); });
        const double flops = gradient_flops(m, batch);
        ceiling << "| " << name(m) << " | " << batch << " | " << fmt(flops / 1e9) << " | " << fmt(gpu.gradient.median_ms)
                << " | " << fmt(gemms.median_ms) << " | " << fmt(100.0 * gemms.median_ms / gpu.gradient.median_ms, 0)
                << "% | " << fmt(flops / (gpu.gradient.median_ms * 1e-3) / 1e12, 2) << " |\n";
      }
    // Every other method's outer iteration, at the smaller batch (one CPU thread takes
    // ~0.1-1 s per LFM iteration at 1024).
    constexpr std::size_t method_batch = 128;
    md << "\nOne outer iteration of each of the other methods (every level's block, in the method's schedule; "
          "classifiers MLP 784-256-128-10, DARTS on example 04's search space), batch "
       << method_batch << ":\n\n| method | GPU ms | CPU 1 thread ms | CPU " << threads
       << " threads ms | GPU speed-up vs 1 / " << threads << " threads |\n| --- | ---: | ---: | ---: | ---: |\n";
    for (method k : all_methods) {
      const auto gpu_run = measure_method<G>(k, method_batch, [] { G::synchronize(); });
      const auto gpu = gpu_run.iteration, cpu1 = measure_method_cpu(k, method_batch, 1).iteration,
                 cpun = measure_method_cpu(k, method_batch, threads).iteration;
      add_counts(name(k), method_batch, "outer iteration", gpu, gpu_run.calls);
      add_counts(name(k), method_batch, "outer iteration, deferred checks, one CUDA graph", gpu_run.captured,
                 gpu_run.captured_calls);
      std::cerr << name(k) << " batch " << method_batch << " captured: gpu " << gpu_run.captured.median_ms << " ms ("
                << gpu_run.captured.reps << " reps)\n";
      md << "| " << name(k) << " | " << fmt(gpu.median_ms) << " | " << fmt(cpu1.median_ms) << " | "
         << fmt(cpun.median_ms) << " | " << fmt(cpu1.median_ms / gpu.median_ms, 1) << "x / "
         << fmt(cpun.median_ms / gpu.median_ms, 1) << "x |\n";
      std::cerr << name(k) << " batch " << method_batch << ": gpu " << gpu.median_ms << " ms (" << gpu.reps
                << " reps, p10 " << gpu.p10_ms << ", p90 " << gpu.p90_ms << "), cpu1 " << cpu1.median_ms << " ("
                << cpu1.reps << "), cpu" << threads << " " << cpun.median_ms << " (" << cpun.reps << ")\n";
    }
    md << "\nThe gradient against cuBLAS alone on the same GEMMs (the ceiling: the share is how much of the "
          "gradient's time those GEMMs would take by themselves):\n\n"
       << ceiling.str()
       << "\nWhat one call asks of the device (the CUDA policy's counters, `cuda<S>::activity()`, over one "
          "call after the timed ones), and the GPU time per kernel or cuBLAS call:\n\n"
       << counts.str();
    std::cout << md.str();
    if (!out_path.empty()) std::ofstream(out_path) << md.str();
  } catch (const std::exception& e) {
    std::cerr << "bench_gpu_learners: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
