// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// A quadratic objective coupled to any number of inputs: the building block of multilevel
/// test problems whose total derivatives have closed forms (every best response is affine).
///
///     L(θ; in_1..in_k) = ½ θᵀAθ + aᵀθ + Σ_s [ θᵀ B_s in_s + ½ in_sᵀ C_s in_s + c_sᵀ in_s ]
///
///     ∇_θ L = Aθ + a + Σ_s B_s in_s          ∂L/∂in_s = B_sᵀθ + C_s in_s + c_s
///     H v = A v     (∂²L/∂in_s∂θ) v = B_sᵀ v     (∂²L/∂θ∂in_s) u = B_s u
#include <cmath>
#include <cstddef>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "bilevel/core/learner.hpp"

namespace bilevel::problems {

/// Host description (row-major, double) of a coupled quadratic; public so that tests can
/// build closed forms from exactly the numbers the learner uses.
struct quadratic_spec {
  std::size_t n = 0;                 ///< size of θ
  std::vector<double> a_mat, a_vec;  ///< A (n×n, symmetric), a (n)
  struct coupling {
    std::size_t m = 0;               ///< size of the input
    std::vector<double> b, c_mat, c_vec;  ///< B (n×m), C (m×m, symmetric), c (m)
  };
  std::vector<coupling> inputs;

  /// Random instance: A = MᵀM/n + shift·I scaled so that its eigenvalues lie in about
  /// [shift, 1 + shift]; couplings of size `scale`. Seeded, so tests repeat.
  static quadratic_spec random(std::size_t n, const std::vector<std::size_t>& input_sizes, unsigned seed,
                               double shift = 0.2, double scale = 0.5) {
    std::mt19937_64 gen(seed);
    std::normal_distribution<double> normal;
    quadratic_spec q;
    q.n = n;
    q.a_mat = spd(n, shift, gen);
    q.a_vec.resize(n);
    for (auto& v : q.a_vec) v = normal(gen);
    for (std::size_t m : input_sizes) {
      coupling c;
      c.m = m;
      c.b.resize(n * m);
      for (auto& v : c.b) v = scale * normal(gen) / std::sqrt(double(m));
      c.c_mat = spd(m, shift, gen);
      c.c_vec.resize(m);
      for (auto& v : c.c_vec) v = normal(gen);
      q.inputs.push_back(std::move(c));
    }
    return q;
  }

 private:
  static std::vector<double> spd(std::size_t n, double shift, std::mt19937_64& gen) {
    std::normal_distribution<double> normal;
    std::vector<double> m(n * n), a(n * n, 0.0);
    for (auto& v : m) v = normal(gen);
    // MᵀM/(4n) has eigenvalues up to about 1 (Marchenko-Pastur edge (1+1)²/4).
    for (std::size_t i = 0; i < n; ++i)
      for (std::size_t j = 0; j < n; ++j) {
        double s = 0.0;
        for (std::size_t k = 0; k < n; ++k) s += m[k * n + i] * m[k * n + j];
        a[i * n + j] = s / (4.0 * n) + (i == j ? shift : 0.0);
      }
    return a;
  }
};

template <tensor_policy P>
class quadratic_objective {
 public:
  using policy = P;
  using batch_type = full_batch;
  using vector = vector_t<P>;
  using scalar = scalar_t<P>;

  explicit quadratic_objective(const quadratic_spec& q) : n_(q.n) {
    a_ = to_matrix(q.n, q.n, q.a_mat);
    a_vec_ = to_vector(q.a_vec);
    for (const auto& c : q.inputs) {
      b_.push_back(to_matrix(q.n, c.m, c.b));
      c_.push_back(to_matrix(c.m, c.m, c.c_mat));
      c_vec_.push_back(to_vector(c.c_vec));
      m_.push_back(c.m);
    }
  }

  [[nodiscard]] std::size_t num_parameters() const { return n_; }
  [[nodiscard]] std::size_t num_inputs() const { return m_.size(); }
  [[nodiscard]] std::size_t input_size(std::size_t s) const { return m_.at(s); }

  double loss(const vector& theta, input_list<P> in, const batch_type&) const {
    vector t;
    P::gemv(scalar(0.5), a_, false, theta, scalar(0), t);
    P::axpy(scalar(1), a_vec_, t);
    double l = P::dot(theta, t);
    for (std::size_t s = 0; s < m_.size(); ++s) {
      P::gemv(scalar(1), b_[s], false, *in[s], scalar(0), t);
      l += P::dot(theta, t);
      P::gemv(scalar(0.5), c_[s], false, *in[s], scalar(0), t);
      P::axpy(scalar(1), c_vec_[s], t);
      l += P::dot(*in[s], t);
    }
    return l;
  }
  double gradient(const vector& theta, input_list<P> in, const batch_type& b, vector& out) const {
    P::gemv(scalar(1), a_, false, theta, scalar(0), out);
    P::axpy(scalar(1), a_vec_, out);
    for (std::size_t s = 0; s < m_.size(); ++s) P::gemv(scalar(1), b_[s], false, *in[s], scalar(1), out);
    return loss(theta, in, b);
  }
  void input_gradient(const vector& theta, input_list<P> in, const batch_type&, std::size_t s, vector& out) const {
    P::gemv(scalar(1), b_[s], true, theta, scalar(0), out);
    P::gemv(scalar(1), c_[s], false, *in[s], scalar(1), out);
    P::axpy(scalar(1), c_vec_[s], out);
  }
  void hvp(const vector&, input_list<P>, const batch_type&, const vector& v, vector& out) const {
    P::gemv(scalar(1), a_, false, v, scalar(0), out);
  }
  void mixed_vjp(const vector&, input_list<P>, const batch_type&, std::size_t s, const vector& v, vector& out) const {
    P::gemv(scalar(1), b_[s], true, v, scalar(0), out);
  }
  void mixed_jvp(const vector&, input_list<P>, const batch_type&, std::size_t s, const vector& u, vector& out) const {
    P::gemv(scalar(1), b_[s], false, u, scalar(0), out);
  }

 private:
  static typename P::matrix to_matrix(std::size_t r, std::size_t c, const std::vector<double>& v) {
    std::vector<scalar> s(v.begin(), v.end());
    return P::matrix_from_host(r, c, s);
  }
  static vector to_vector(const std::vector<double>& v) {
    std::vector<scalar> s(v.begin(), v.end());
    return P::from_host(s);
  }
  std::size_t n_;
  typename P::matrix a_;
  vector a_vec_;
  std::vector<typename P::matrix> b_, c_;
  std::vector<vector> c_vec_;
  std::vector<std::size_t> m_;
};

}  // namespace bilevel::problems
