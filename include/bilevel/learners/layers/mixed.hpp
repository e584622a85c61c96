// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// A mixed operation (DARTS, Liu et al. 2019): out = Σ_o m_o · op_o(in), m = softmax(α_e),
/// where α_e is this edge's segment of the architecture vector, an input the network reads
/// from an upper level. Candidates are small layer sequences with the output geometry of the
/// edge; an empty sequence is the identity (skip), and `zero` is the zero operation.
///
/// Derivatives with respect to the architecture, with a_o = ⟨G_out, op_o(in)⟩ (Frobenius):
///     ∂L/∂α_e = m ⊙ (a − ⟨m, a⟩)                         (the softmax Jacobian, symmetric)
/// and their tangents along a parameter direction v (ȧ_o = ⟨Ġ_out, Y_o⟩ + ⟨G_out, Ẏ_o⟩) give the
/// mixed product (∂²L/∂α∂θ) v. Along an architecture direction u, ṁ = m ⊙ (u − ⟨m, u⟩)
/// enters the tangent passes, giving (∂²L/∂θ∂α) u.
///
/// m, a and their tangents stay in the policy's vectors: the candidates' outputs are scaled by
/// entries of m where it lies (`axpy_entry`) and a_o is reduced into its entry (`add_dot_into`),
/// so on a device back end no pass reads α or m on the host.
#include <cstddef>
#include <stdexcept>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "bilevel/learners/layers/activation_layer.hpp"
#include "bilevel/learners/layers/conv2d.hpp"
#include "bilevel/learners/layers/detail/edge_softmax.hpp"
#include "bilevel/learners/layers/dense.hpp"
#include "bilevel/learners/layers/flatten.hpp"
#include "bilevel/learners/layers/pool2d.hpp"

namespace bilevel::learners {

/// The layers a candidate operation may use.
template <nn_tensor_policy P>
using basic_layer = std::variant<dense_layer<P>, activation_layer<P>, conv2d_layer<P>, pool2d_layer<P>, flatten_layer<P>>;

template <nn_tensor_policy P>
struct mixed_layer {
  using matrix = typename P::matrix;
  using vector = vector_t<P>;
  using scalar = scalar_t<P>;

  struct candidate {
    std::vector<basic_layer<P>> layers;  ///< empty: identity
    bool zero = false;
  };

  geometry in, out;
  std::vector<candidate> candidates;
  std::size_t arch_offset = 0;

  mixed_layer(geometry input, std::vector<candidate> cands, std::size_t arch_at)
      : in(input), out(input), candidates(std::move(cands)), arch_offset(arch_at) {
    if (candidates.empty()) throw std::invalid_argument("bilevel::learners::mixed_layer: no candidate operations");
    bool first = true;
    for (const auto& c : candidates) {
      if (c.zero) continue;
      geometry g = input;
      for (const auto& l : c.layers) g = std::visit([](const auto& x) { return x.out; }, l);
      if (first) out = g, first = false;
      else if (!(g == out))
        throw std::invalid_argument("bilevel::learners::mixed_layer: candidates produce different output shapes");
    }
  }
  [[nodiscard]] std::size_t num_parameters() const {
    std::size_t n = 0;
    for (const auto& c : candidates)
      for (const auto& l : c.layers) n += std::visit([](const auto& x) { return x.num_parameters(); }, l);
    return n;
  }
  [[nodiscard]] std::size_t arch_size() const { return candidates.size(); }

  void forward(const vector& theta, const vector& alpha, const matrix& x, std::size_t batch, matrix& y,
               layer_cache<P>& c) const {
    softmax_of(alpha, c.mix);
    c.sub.assign(candidates.size(), {});
    c.sub_cache.assign(candidates.size(), {});
    bool first = true;  // y not yet written
    for (std::size_t o = 0; o < candidates.size(); ++o) {
      if (candidates[o].zero) continue;
      const auto& layers = candidates[o].layers;
      auto& acts = c.sub[o];
      acts.assign(layers.size() + 1, {});
      acts[0] = x;
      c.sub_cache[o].assign(layers.size(), {});
      for (std::size_t l = 0; l < layers.size(); ++l)
        std::visit([&](const auto& L) { L.forward(theta, acts[l], batch, acts[l + 1], c.sub_cache[o][l]); }, layers[l]);
      add_term(c.mix, o, acts.back(), y, first);
    }
    if (first) y = P::matrix_zeros(batch * out.pixels(), out.channels);
  }

  /// Adjoints; writes this edge's ∂L/∂α segment into arch_grad (when given).
  void backward(const vector& theta, const matrix& x, const matrix& g, std::size_t batch, layer_cache<P>& c,
                matrix* gx, vector& grad, vector* arch_grad) const {
    c.sub_g.assign(candidates.size(), {});
    vector a = P::zeros(candidates.size());
    bool first_gx = true;
    for (std::size_t o = 0; o < candidates.size(); ++o) {
      if (candidates[o].zero) continue;
      P::add_dot_into(g, c.sub[o].back(), a, o);
      matrix go;
      bool first = true;
      add_term(c.mix, o, g, go, first);
      matrix g_in = run_backward(theta, o, go, batch, c, grad, gx != nullptr);
      if (gx) accumulate(std::move(g_in), *gx, first_gx);
    }
    if (gx && first_gx) *gx = P::matrix_zeros(P::rows(x), P::cols(x));
    if (arch_grad) P::set_segment(softmax_vjp(c.mix, a), *arch_grad, arch_offset);
  }

  /// Tangent of the value pass along (v in θ-space, u in architecture space or null).
  void tangent_forward(const vector& theta, const vector& v, const vector* u, const matrix&, const matrix* x_dot,
                       std::size_t batch, layer_cache<P>& c, matrix& y_dot) const {
    const vector mdot = mix_tangent(c.mix, u);
    bool first = true;  // y_dot not yet written
    tangent_acts_.assign(candidates.size(), {});
    for (std::size_t o = 0; o < candidates.size(); ++o) {
      if (candidates[o].zero) continue;
      const auto& layers = candidates[o].layers;
      auto& dots = tangent_acts_[o];
      dots.assign(layers.size() + 1, {});
      const matrix* in_dot = x_dot;
      for (std::size_t l = 0; l < layers.size(); ++l) {
        std::visit([&](const auto& L) {
          L.tangent_forward(theta, v, c.sub[o][l], in_dot, batch, c.sub_cache[o][l], dots[l + 1]);
        }, layers[l]);
        in_dot = &dots[l + 1];
      }
      if (in_dot) add_term(c.mix, o, *in_dot, y_dot, first);
      if (u) add_term(mdot, o, c.sub[o].back(), y_dot, first);
    }
    if (first) y_dot = P::matrix_zeros(batch * out.pixels(), out.channels);
  }

  /// Tangent of the backward pass; writes this edge's segment of the tangent of ∂L/∂α along
  /// v into arch_dot (when given; exact for u = null, which is all mixed_vjp needs).
  void tangent_backward(const vector& theta, const vector& v, const vector* u, const matrix& x, const matrix* x_dot,
                        const matrix& g, const matrix& g_dot, std::size_t batch, layer_cache<P>& c, matrix* gx_dot,
                        vector& grad_dot, vector* arch_dot) const {
    const vector mdot = mix_tangent(c.mix, u);
    bool first_gx = true;
    vector adot = P::zeros(candidates.size());
    for (std::size_t o = 0; o < candidates.size(); ++o) {
      if (candidates[o].zero) continue;
      const auto& layers = candidates[o].layers;
      const auto& dots = tangent_acts_[o];
      const matrix* y_dot_o = layers.empty() ? x_dot : &dots.back();
      P::add_dot_into(g_dot, c.sub[o].back(), adot, o);
      if (y_dot_o) P::add_dot_into(g, *y_dot_o, adot, o);
      // G_o = m_o g, so Ġ_o = m_o ġ + ṁ_o g
      matrix go_dot;
      bool first = true;
      add_term(c.mix, o, g_dot, go_dot, first);
      if (u) add_term(mdot, o, g, go_dot, first);
      for (std::size_t l = layers.size(); l-- > 0;) {
        matrix next;
        std::visit([&](const auto& L) {
          L.tangent_backward(theta, v, c.sub[o][l], l > 0 ? &dots[l] : x_dot, c.sub_g[o][l], go_dot, batch,
                             c.sub_cache[o][l], (l > 0 || gx_dot) ? &next : nullptr, grad_dot);
        }, layers[l]);
        go_dot = std::move(next);
      }
      if (gx_dot) accumulate(std::move(go_dot), *gx_dot, first_gx);
    }
    if (gx_dot && first_gx) *gx_dot = P::matrix_zeros(P::rows(x), P::cols(x));
    if (arch_dot) P::set_segment(softmax_vjp(c.mix, adot), *arch_dot, arch_offset);
  }

 private:
  /// One term of a weighted sum: y = c_o·x for the first (first is then cleared), y += c_o·x
  /// after it; in one pass where the policy has scale_entry, after a fill otherwise.
  static void add_term(const vector& c, std::size_t o, const matrix& x, matrix& y, bool& first) {
    if (first) {
      first = false;
      if constexpr (fused_scaled_copies<P>) {
        P::scale_entry(scalar(1), c, o, x, y);
        return;
      } else {
        y = P::matrix_zeros(P::rows(x), P::cols(x));
      }
    }
    P::axpy_entry(scalar(1), c, o, x, y);
  }
  /// sum += term, or sum = term for the first (no zeros to add it to).
  static void accumulate(matrix term, matrix& sum, bool& first) {
    if (first) {
      sum = std::move(term);
      first = false;
    } else {
      P::axpy(scalar(1), term, sum);
    }
  }
  /// Runs candidate o's layers backward from its output adjoint; keeps the adjoints of its
  /// layers' outputs for the tangent pass; returns the adjoint of the edge's input.
  matrix run_backward(const vector& theta, std::size_t o, matrix g, std::size_t batch, layer_cache<P>& c, vector& grad,
                      bool want_input) const {
    const auto& layers = candidates[o].layers;
    c.sub_g[o].assign(layers.size(), {});
    for (std::size_t l = layers.size(); l-- > 0;) {
      matrix g_in;
      std::visit([&](const auto& L) {
        L.backward(theta, c.sub[o][l], g, batch, c.sub_cache[o][l], (l > 0 || want_input) ? &g_in : nullptr, grad);
      }, layers[l]);
      c.sub_g[o][l] = std::move(g);
      g = std::move(g_in);
    }
    return g;
  }
  void softmax_of(const vector& alpha, vector& m) const {
    detail::edge_softmax<P>(alpha, arch_offset, candidates.size(), m, "bilevel::learners::mixed_layer");
  }
  static vector softmax_vjp(const vector& m, const vector& a) { return detail::edge_softmax_vjp<P>(m, a); }
  /// ṁ along the architecture direction u (empty without one).
  vector mix_tangent(const vector& m, const vector* u) const {
    if (!u) return {};
    vector seg;
    P::segment(*u, arch_offset, candidates.size(), seg);
    return softmax_vjp(m, seg);
  }
  mutable std::vector<std::vector<matrix>> tangent_acts_;  // Ẏ of each candidate's layers, last tangent pass
};

}  // namespace bilevel::learners
