// SPDX-License-Identifier: MIT
#pragma once
// Helpers shared by every test file, CPU and CUDA: host conversions, relative errors,
// central differences, seeded random vectors. Policy-generic: no Eigen here, so the CUDA
// tests (.cu files, where Eigen stays out) use the same helpers.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <utility>
#include <functional>
#include <vector>

#include <bilevel/core/tensor_policy.hpp>

namespace test {

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
/// An r × c matrix of policy P from row-major doubles, and a matrix's values back as doubles.
template <class P>
typename P::matrix device_matrix(std::size_t r, std::size_t c, const std::vector<double>& v) {
  return P::matrix_from_host(r, c, std::vector<bilevel::scalar_t<P>>(v.begin(), v.end()));
}
template <class P>
std::vector<double> host_matrix(const typename P::matrix& m) {
  const auto h = P::matrix_to_host(m);
  return {h.begin(), h.end()};
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

/// Central differences of a scalar function of a vector, step h per component.
/// Truncation error O(h² f'''), round-off O(ε_mach |f| / h).
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

/// Same for a vector-valued function: column i of the Jacobian times nothing, i.e. returns
/// the directional derivative along `dir` of f, by central differences with step h.
template <class F>
std::vector<double> central_directional(F f, const std::vector<double>& x, const std::vector<double>& dir, double h) {
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

inline std::vector<double> random_vector(std::size_t n, unsigned seed, double scale = 1.0) {
  std::vector<double> v(n);
  unsigned s = seed * 2654435761u + 12345u;
  for (auto& x : v) {
    s = s * 1664525u + 1013904223u;
    x = scale * ((s >> 8) / double(1u << 24) - 0.5) * 2.0;
  }
  return v;
}

/// Every level's θ, optimizer buffers and step count, as raw bytes (NaN-safe, −0 ≠ +0): what
/// "bit for bit as before" compares.
template <class Solver>
std::vector<std::vector<unsigned char>> state_bits(const Solver& s) {
  using P = typename Solver::policy;
  std::vector<std::vector<unsigned char>> out;
  auto bytes = [&](const std::vector<double>& v) {
    std::vector<unsigned char> b(v.size() * sizeof(double));
    if (!v.empty()) std::memcpy(b.data(), v.data(), b.size());
    out.push_back(std::move(b));
  };
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    ((void)[&](const auto& lv) {
      bytes(host<P>(lv.theta));
      for (const auto& buffer : lv.state.buffers) bytes(host<P>(buffer));
      bytes({double(lv.state.step)});
    }(s.template level<I>()), ...);
  }(std::make_index_sequence<Solver::size()>{});
  return out;
}

}  // namespace test
