// SPDX-License-Identifier: MIT
#pragma once
// Helpers shared by the CUDA tests (.cu, compiled by nvcc) and their host reference
// (host_reference.cpp, compiled by the host compiler with Eigen). Neither Eigen nor CUDA
// here: only the policy-generic parts of the library, and tests/host_math.hpp's helpers
// (shared with the CPU suite).
#include <cmath>
#include <cstddef>
#include <functional>
#include <vector>

#include <bilevel/core/tensor_policy.hpp>
#include <bilevel/learners/classification_batch.hpp>

#include "../host_math.hpp"

namespace cuda_test {

using test::central_gradient;
using test::device;
using test::host;
using test::norm;
using test::random_vector;
using test::relative_error;

/// max_i |a_i − b_i|.
inline double max_abs_difference(const std::vector<double>& a, const std::vector<double>& b) {
  double m = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b.at(i)));
  return m;
}

/// Directional derivative of a vector function along dir, by central differences.
inline std::vector<double> central_directional(const std::function<std::vector<double>(const std::vector<double>&)>& f,
                                               const std::vector<double>& x, const std::vector<double>& dir, double h) {
  std::vector<double> xp = x, xm = x;
  for (std::size_t i = 0; i < x.size(); ++i) {
    xp[i] += h * dir[i];
    xm[i] -= h * dir[i];
  }
  const auto fp = f(xp), fm = f(xm);
  std::vector<double> d(fp.size());
  for (std::size_t i = 0; i < d.size(); ++i) d[i] = (fp[i] - fm[i]) / (2.0 * h);
  return d;
}

/// n samples of `features` uniform values in [−2, 2], label (i + seed) mod classes, id i
/// (tests/batches.hpp's random_batch).
inline bilevel::data::dataset random_dataset(std::size_t n, std::size_t features, std::size_t classes, unsigned seed) {
  bilevel::data::dataset d;
  d.rows = n;
  d.cols = features;
  d.num_classes = classes;
  const auto x = random_vector(n * features, seed, 2.0);
  d.features.assign(x.begin(), x.end());
  for (std::size_t i = 0; i < n; ++i) {
    d.labels.push_back(int((i + seed) % classes));
    d.ids.push_back(i);
  }
  return d;
}
template <class P>
bilevel::learners::classification_batch<P> random_batch(std::size_t n, std::size_t features, std::size_t classes,
                                                        unsigned seed) {
  const auto d = random_dataset(n, features, classes, seed);
  std::vector<std::size_t> rows(n);
  for (std::size_t i = 0; i < n; ++i) rows[i] = i;
  return bilevel::learners::make_batch<P>(d, rows);
}

}  // namespace cuda_test
