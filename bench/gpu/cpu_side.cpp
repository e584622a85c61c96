// SPDX-License-Identifier: MIT
#include "cpu_side.hpp"

#include <bilevel/policy/eigen.hpp>

#include <fstream>
#include <string>
#include <thread>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace gpu_bench {

int cpu_threads_available() {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

std::string cpu_description() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line, model = "unknown CPU";
  while (std::getline(cpuinfo, line))
    if (line.rfind("model name", 0) == 0) {
      model = line.substr(line.find(':') + 2);
      break;
    }
  return model + " (" + std::to_string(std::thread::hardware_concurrency()) + " threads), Eigen " +
         std::to_string(EIGEN_WORLD_VERSION) + "." + std::to_string(EIGEN_MAJOR_VERSION) + "." +
         std::to_string(EIGEN_MINOR_VERSION);
}

workload_times measure_cpu(model m, std::size_t batch, int threads) {
  Eigen::setNbThreads(threads);
  return measure<bilevel::policy::eigen<float>>(m, batch, [] {});
}

method_times measure_method_cpu(method k, std::size_t batch, int threads) {
  Eigen::setNbThreads(threads);
  return measure_method<bilevel::policy::eigen<float>>(k, batch, [] {});
}

}  // namespace gpu_bench
