// SPDX-License-Identifier: MIT
// Single-thread SGEMM rate on the first layer's shapes of the comparison's MLP (bench/compare):
// the forward product X·Wᵀ (128×784 by 784×W) and the weight gradient Gᵀ·X (W×128 by 128×784),
// row-major as the Eigen policy stores them. Built twice by gemm_rates.sh: with Eigen's own
// kernel, and with -DEIGEN_USE_BLAS and OpenBLAS. Prints one line per width: median ms of 200
// calls and GFLOP/s.
#include <Eigen/Dense>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

namespace {
using matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

template <class F>
double median_ms(F f) {
  std::vector<double> t;
  for (int r = 0; r < 200; ++r) {
    const auto a = std::chrono::steady_clock::now();
    f();
    const auto b = std::chrono::steady_clock::now();
    t.push_back(std::chrono::duration<double, std::milli>(b - a).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}
}  // namespace

int main() {
#ifdef EIGEN_USE_BLAS
  const char* kernel = "openblas";
#else
  const char* kernel = "eigen";
#endif
  for (int width : {256, 2048}) {
    const matrix x = matrix::Random(128, 784), w = matrix::Random(width, 784), g = matrix::Random(128, width);
    matrix y(128, width), dw(width, 784);
    const double forward = median_ms([&] { y.noalias() = x * w.transpose(); });
    const double weight_gradient = median_ms([&] { dw.noalias() = g.transpose() * x; });
    const double flop = 2.0 * 128 * 784 * width;
    std::printf("%-8s W=%-4d forward %.3f ms (%.1f GFLOP/s)  weight gradient %.3f ms (%.1f GFLOP/s)\n", kernel, width,
                forward, flop / forward / 1e6, weight_gradient, flop / weight_gradient / 1e6);
  }
}
