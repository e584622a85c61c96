// SPDX-License-Identifier: MIT
// The papers' networks against PyTorch (bench/compare/networks.sh writes bench/NETWORKS.md):
// bilevel's side, one case per run, float, Eigen policy, one thread. The cases and the
// command line: bench/network_cases.hpp (ResNet-20 at batch 128 and the DARTS supernet at 64
// unless --batch says otherwise).
//
//   bench_networks --case resnet20-grad|resnet20-hvp|darts-grad|darts-step [--warmup N] [--timed N] [--seed S]
//                  [--batch B]
//
// Each timed repetition is one call timed with steady_clock. Memory from /proc/self/status:
// VmRSS after set-up, VmHWM reset through /proc/self/clear_refs before the warm-up and again
// before the timed repetitions, read after each. Prints one JSON line.
#include <bilevel/eigen.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "network_cases.hpp"

namespace {
using P = bilevel::policy::eigen<float>;
using namespace network_bench;

std::string compiler() {
#if defined(__clang__)
  return "clang " __clang_version__;
#elif defined(__GNUC__)
  return "gcc " __VERSION__;
#else
  return "?";
#endif
}

}  // namespace

int main(int argc, char** argv) try {
  const options o = parse(argc, argv);
  const auto c = std::make_unique<bench_case<P>>(o);
  const auto& work = c->work;
  const std::size_t batch = c->batch, params = c->params, arch_params = c->arch_params;
  const std::string& contents = c->contents;

  const double rss_setup = status_mb("VmRSS"), peak_setup = status_mb("VmHWM");
  reset_rss_peak();
  for (std::size_t t = 0; t < o.warmup; ++t) work(t);
  const double peak_warmup = o.warmup > 0 ? status_mb("VmHWM") : rss_setup;
  const double rss_before_timed = status_mb("VmRSS");
  reset_rss_peak();
  std::vector<double> ms;
  for (std::size_t t = 0; t < o.timed; ++t) {
    const auto t0 = std::chrono::steady_clock::now();
    work(o.warmup + t);
    const auto t1 = std::chrono::steady_clock::now();
    ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  const double peak_timed = status_mb("VmHWM");
  const double norm = c->check_norm();
  std::printf(
      "{\"implementation\": \"bilevel\", \"case\": \"%s\", \"batch\": %zu, \"params\": %zu, \"arch_params\": %zu, "
      "\"warmup\": %zu, \"timed\": %zu, \"median_ms\": %.3f, \"p10_ms\": %.3f, \"p90_ms\": %.3f, \"min_ms\": %.3f, "
      "\"max_ms\": %.3f, \"rss_setup_mb\": %.1f, \"peak_setup_mb\": %.1f, \"peak_warmup_mb\": %.1f, "
      "\"rss_before_timed_mb\": %.1f, \"peak_timed_mb\": %.1f, \"growth_timed_mb\": %.1f, \"growth_mb\": %.1f, "
      "\"peak_mb\": %.1f, \"check_norm\": %.6g, \"contents\": \"%s\", \"threads\": 1, \"eigen_threads\": %d, "
      "\"compiler\": \"%s\", \"eigen\": \"%d.%d.%d\"}\n",
      o.which.c_str(), batch, params, arch_params, o.warmup, o.timed, percentile(ms, 0.5), percentile(ms, 0.1),
      percentile(ms, 0.9), *std::min_element(ms.begin(), ms.end()), *std::max_element(ms.begin(), ms.end()), rss_setup,
      peak_setup, peak_warmup, rss_before_timed, peak_timed, peak_timed - rss_before_timed,
      std::max(peak_warmup, peak_timed) - rss_setup, std::max({peak_setup, peak_warmup, peak_timed}), norm,
      contents.c_str(), Eigen::nbThreads(), compiler().c_str(), EIGEN_WORLD_VERSION, EIGEN_MAJOR_VERSION,
      EIGEN_MINOR_VERSION);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_networks: %s\n", e.what());
  return 1;
}
