// SPDX-License-Identifier: MIT
#pragma once
// Helpers shared by the CUDA tests (.cu, compiled by nvcc) and their host reference
// (host_reference.cpp, compiled by the host compiler with Eigen). Neither Eigen nor CUDA
// here: only the policy-generic parts of the library. random_vector and random_batch are the
// CPU suite's (tests/support.hpp, tests/batches.hpp), repeated here because those headers
// include bilevel.hpp and with it Eigen, which stays out of .cu files.
#include <cmath>
#include <cstddef>
#include <functional>
#include <vector>

#include <bilevel/core/tensor_policy.hpp>
#include <bilevel/learners/classification_batch.hpp>

namespace cuda_test {

template <class P>
std::vector<double> host(const bilevel::vector_t<P>& v) {
  const auto h = P::to_host(v);
  return {h.begin(), h.end()};
}
template <class P>
bilevel::vector_t<P> device(const std::vector<double>& v) {
  std::vector<bilevel::scalar_t<P>> s(v.begin(), v.end());
  return P::from_host(s);
}

inline double norm(const std::vector<double>& a) {
  double s = 0.0;
  for (double x : a) s += x * x;
  return std::sqrt(s);
}
/// ‖a − b‖ / ‖b‖ (‖a − b‖ when b is zero).
inline double relative_error(const std::vector<double>& a, const std::vector<double>& b) {
  double d = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) d += (a[i] - b.at(i)) * (a[i] - b[i]);
  const double nb = norm(b);
  return nb == 0.0 ? std::sqrt(d) : std::sqrt(d) / nb;
}
/// max_i |a_i − b_i|.
inline double max_abs_difference(const std::vector<double>& a, const std::vector<double>& b) {
  double m = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b.at(i)));
  return m;
}

inline std::vector<double> random_vector(std::size_t n, unsigned seed, double scale = 1.0) {
  std::vector<double> v(n);
  unsigned s = seed * 2654435761u + 12345u;
  for (auto& x : v) {
    s = s * 1664525u + 1013904223u;
    x = scale * ((s >> 8) / double(1u << 24) - 0.5) * 2.0;
  }
  return v;
}

/// Central differences of a scalar function, step h per component.
inline std::vector<double> central_gradient(const std::function<double(const std::vector<double>&)>& f,
                                            std::vector<double> x, double h) {
  std::vector<double> g(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double xi = x[i];
    x[i] = xi + h;
    const double fp = f(x);
    x[i] = xi - h;
    const double fm = f(x);
    x[i] = xi;
    g[i] = (fp - fm) / (2.0 * h);
  }
  return g;
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
