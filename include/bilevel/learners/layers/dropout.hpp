// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// dropout<P>: inverted dropout, a layer of the open layer concept.
///
///   training    y = x ⊙ m / (1 − rate),  m_ij ~ Bernoulli(1 − rate) independently
///   evaluation  y = x
///
/// The mask is drawn on the host from a generator seeded by (seed, ctx.step), ctx.step being
/// the real optimizer steps the network has taken (sequential::on_real_step advances it), and
/// uploaded once: between two real steps every evaluation (the look-ahead or virtual step, its
/// HVPs and mixed products, finite differences) sees the same mask, so the function the
/// strategies differentiate is fixed, and the next real step draws a new one. The cache keeps
/// the mask, scaled by 1/(1 − rate), and draws it again only when the step or the
/// activation's shape changes. Given the mask the layer is linear: every pass multiplies by it.
/// The draw uses the generator's raw bits (not std::bernoulli_distribution), so a seed gives
/// the same masks with every standard library.
#include <cstddef>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "bilevel/learners/layers/layer_concept.hpp"

namespace bilevel::learners {

template <nn_tensor_policy P>
struct dropout {
  using matrix = typename P::matrix;
  using vector = vector_t<P>;
  using scalar = scalar_t<P>;
  struct cache {
    bool masked = false;     ///< the value pass applied a mask (training mode)
    bool drawn = false;      ///< `mask` holds the mask of (step, rows, cols)
    std::uint64_t step = 0;
    std::size_t rows = 0, cols = 0;
    matrix mask;             ///< m / (1 − rate)
  };

  /// rate in [0, 1): the probability that an entry is dropped.
  dropout(geometry shape, double rate, std::uint64_t seed) : shape_(shape), rate_(rate), seed_(seed) {
    if (!(rate >= 0.0 && rate < 1.0))
      throw std::invalid_argument("bilevel::learners::dropout: rate " + std::to_string(rate) + " is outside [0, 1)");
  }

  [[nodiscard]] geometry input_shape() const { return shape_; }
  [[nodiscard]] geometry output_shape() const { return shape_; }
  [[nodiscard]] std::size_t num_parameters() const { return 0; }
  [[nodiscard]] double rate() const { return rate_; }
  [[nodiscard]] std::uint64_t seed() const { return seed_; }

  void forward(const pass_context<P>& p, const matrix& x, matrix& y, cache& c) const {
    c.masked = p.mode == pass_mode::training && rate_ > 0.0;
    if (!c.masked) {
      y = x;
      return;
    }
    const std::size_t r = P::rows(x), k = P::cols(x);
    if (!c.drawn || c.step != p.step || c.rows != r || c.cols != k) {
      c.mask = draw(p.step, r, k);
      c.step = p.step;
      c.rows = r;
      c.cols = k;
      c.drawn = true;
    }
    P::hadamard(x, c.mask, y);
  }
  void backward(const pass_context<P>&, const matrix&, const matrix& g, cache& c, matrix* gx, vector&) const {
    if (gx) apply(c, g, *gx);
  }
  void tangent_forward(const tangent_context<P>&, const matrix& x, const matrix* x_dot, cache& c,
                       matrix& y_dot) const {
    if (x_dot) apply(c, *x_dot, y_dot);
    else y_dot = P::matrix_zeros(P::rows(x), P::cols(x));
  }
  void tangent_backward(const tangent_context<P>&, const matrix&, const matrix*, const matrix&, const matrix& g_dot,
                        cache& c, matrix* gx_dot, vector&) const {
    if (gx_dot) apply(c, g_dot, *gx_dot);
  }

  /// The scaled mask of a step for an r × k activation (what the value pass uses).
  [[nodiscard]] matrix draw(std::uint64_t step, std::size_t r, std::size_t k) const {
    std::mt19937_64 gen(splitmix(seed_ ^ splitmix(step + 0x632be59bd9b4e019ULL)));
    const scalar kept = scalar(1.0 / (1.0 - rate_));
    std::vector<scalar> host(r * k);
    for (auto& e : host) {
      const double u = double(gen() >> 11) * 0x1.0p-53;  // uniform in [0, 1)
      e = u < rate_ ? scalar(0) : kept;
    }
    return P::matrix_from_host(r, k, host);
  }

 private:
  static std::uint64_t splitmix(std::uint64_t z) {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  static void apply(const cache& c, const matrix& in, matrix& out) {
    if (c.masked) P::hadamard(in, c.mask, out);
    else out = in;
  }

  geometry shape_;
  double rate_;
  std::uint64_t seed_;
};

}  // namespace bilevel::learners
