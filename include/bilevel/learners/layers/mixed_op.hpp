// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// mixed_op<P>: DARTS's mixed operation over candidate layers of the open concept,
///     y = Σ_o m_o · op_o(x),   m = softmax(α_e),
/// α_e being k entries of the architecture vector at `arch_at` (relative to the context's
/// arch_offset). Several mixed ops may read the same entries (the cells of one type share
/// α in DARTS); their derivatives then add up. A candidate that is a zero_layer (DARTS's
/// `none`) is weighed in the softmax but never run.
///
/// With a_o = ⟨G, Y_o⟩ (Frobenius; G the output's adjoint, Y_o = op_o(x)):
///     ∂L/∂α_e = m ⊙ (a − ⟨m, a⟩)                      (the softmax Jacobian is symmetric)
/// Along a parameter direction v, ȧ_o = ⟨Ġ, Y_o⟩ + ⟨G, Ẏ_o⟩ gives the mixed product
/// (∂²L/∂α∂θ) v; along an architecture direction u, ṁ = m ⊙ (u − ⟨m, u⟩) enters the tangent
/// passes, which gives (∂²L/∂θ∂α) u. The tangent of ∂L/∂α is written only for u = 0 (what the
/// mixed product (∂²L/∂α∂θ) v needs); the second derivative of the softmax is never needed.
#include <algorithm>
#include <cstddef>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "bilevel/learners/layers/any_layer.hpp"
#include "bilevel/learners/layers/detail/edge_softmax.hpp"
#include "bilevel/learners/layers/identity.hpp"

namespace bilevel::learners {

template <nn_tensor_policy P>
class mixed_op {
 public:
  using matrix = typename P::matrix;
  using vector = vector_t<P>;
  using scalar = scalar_t<P>;
  struct cache {
    vector mix;                    ///< softmax of this edge's α
    std::vector<matrix> outputs;   ///< Y_o
    std::vector<matrix> dots;      ///< Ẏ_o of the latest tangent pass
    std::vector<std::any> ops;     ///< each candidate's own cache
    matrix g_o, g_dot_o, gx_o;     ///< scratch
  };

  /// Candidates of one input and one output shape; `arch_at`: this edge's first entry of α.
  mixed_op(std::vector<any_layer<P>> candidates, std::size_t arch_at) : ops_(std::move(candidates)), arch_at_(arch_at) {
    if (ops_.empty()) throw std::invalid_argument("bilevel::learners::mixed_op: no candidate operations");
    for (std::size_t o = 0; o < ops_.size(); ++o) {
      if (!(ops_[o].input_shape() == ops_[0].input_shape()) || !(ops_[o].output_shape() == ops_[0].output_shape()))
        throw std::invalid_argument("bilevel::learners::mixed_op: candidate " + std::to_string(o) + " maps " +
                                    shape_text(ops_[o].input_shape()) + " to " + shape_text(ops_[o].output_shape()) +
                                    ", candidate 0 " + shape_text(ops_[0].input_shape()) + " to " +
                                    shape_text(ops_[0].output_shape()));
      offsets_.push_back(num_parameters_);
      num_parameters_ += ops_[o].num_parameters();
      zero_.push_back(ops_[o].template get<zero_layer<P>>() != nullptr);
    }
  }

  [[nodiscard]] geometry input_shape() const { return ops_[0].input_shape(); }
  [[nodiscard]] geometry output_shape() const { return ops_[0].output_shape(); }
  [[nodiscard]] std::size_t num_parameters() const { return num_parameters_; }
  [[nodiscard]] std::size_t arch_size() const { return arch_at_ + ops_.size(); }
  [[nodiscard]] std::size_t arch_at() const { return arch_at_; }
  [[nodiscard]] std::size_t size() const { return ops_.size(); }
  [[nodiscard]] const any_layer<P>& candidate(std::size_t o) const { return ops_.at(o); }

  void initialize(std::span<scalar> params, std::mt19937_64& gen) const {
    for (std::size_t o = 0; o < ops_.size(); ++o)
      ops_[o].initialize(params.subspan(offsets_[o], ops_[o].num_parameters()), gen);
  }

  void forward(const pass_context<P>& p, const matrix& x, matrix& y, cache& c) const {
    if (!p.alpha) throw std::invalid_argument("bilevel::learners::mixed_op: the network was given no architecture");
    detail::edge_softmax<P>(*p.alpha, p.arch_offset + arch_at_, ops_.size(), c.mix, "bilevel::learners::mixed_op");
    c.outputs.resize(ops_.size());
    c.ops.resize(ops_.size());
    const geometry out = output_shape();
    y = P::matrix_zeros(p.batch * out.pixels(), out.channels);
    for (std::size_t o = 0; o < ops_.size(); ++o) {
      if (zero_[o]) continue;
      ops_[o].forward(p.shifted(offsets_[o]), x, c.outputs[o], c.ops[o]);
      P::axpy_entry(scalar(1), c.mix, o, c.outputs[o], y);
    }
  }

  void backward(const pass_context<P>& p, const matrix& x, const matrix& g, cache& c, matrix* gx,
                vector& grad) const {
    vector a = P::zeros(ops_.size());
    bool first = true;
    for (std::size_t o = 0; o < ops_.size(); ++o) {
      if (zero_[o]) {
        zero_segment(grad, p.offset + offsets_[o], ops_[o].num_parameters());
        continue;
      }
      P::add_dot_into(g, c.outputs[o], a, o);
      scaled(c.mix, o, g, c.g_o);  // G_o = m_o G
      ops_[o].backward(p.shifted(offsets_[o]), x, c.g_o, c.ops[o], gx ? &c.gx_o : nullptr, grad);
      if (gx) add_into(c.gx_o, *gx, first);
      first = false;
    }
    if (gx && first) *gx = P::matrix_zeros(P::rows(x), P::cols(x));
    if (p.arch_grad) add_segment(detail::edge_softmax_vjp<P>(c.mix, a), *p.arch_grad, p.arch_offset + arch_at_);
    if (!p.keep_adjoints) c.g_o = matrix{}, c.gx_o = matrix{};  // scratch: not held between passes
  }

  void tangent_forward(const tangent_context<P>& t, const matrix& x, const matrix* x_dot, cache& c,
                       matrix& y_dot) const {
    const vector mdot = mix_tangent(t, c.mix);
    c.dots.resize(ops_.size());
    const geometry out = output_shape();
    y_dot = P::matrix_zeros(t.batch * out.pixels(), out.channels);
    for (std::size_t o = 0; o < ops_.size(); ++o) {
      if (zero_[o]) continue;
      ops_[o].tangent_forward(t.shifted(offsets_[o]), x, x_dot, c.ops[o], c.dots[o]);
      P::axpy_entry(scalar(1), c.mix, o, c.dots[o], y_dot);
      if (t.u) P::axpy_entry(scalar(1), mdot, o, c.outputs[o], y_dot);
    }
  }

  void tangent_backward(const tangent_context<P>& t, const matrix& x, const matrix* x_dot, const matrix& g,
                        const matrix& g_dot, cache& c, matrix* gx_dot, vector& grad_dot) const {
    const vector mdot = mix_tangent(t, c.mix);
    vector adot = P::zeros(ops_.size());
    bool first = true;
    for (std::size_t o = 0; o < ops_.size(); ++o) {
      if (zero_[o]) {
        zero_segment(grad_dot, t.offset + offsets_[o], ops_[o].num_parameters());
        continue;
      }
      P::add_dot_into(g_dot, c.outputs[o], adot, o);
      P::add_dot_into(g, c.dots[o], adot, o);
      scaled(c.mix, o, g, c.g_o);          // G_o = m_o G
      scaled(c.mix, o, g_dot, c.g_dot_o);  // Ġ_o = m_o Ġ + ṁ_o G
      if (t.u) P::axpy_entry(scalar(1), mdot, o, g, c.g_dot_o);
      ops_[o].tangent_backward(t.shifted(offsets_[o]), x, x_dot, c.g_o, c.g_dot_o, c.ops[o],
                               gx_dot ? &c.gx_o : nullptr, grad_dot);
      if (gx_dot) add_into(c.gx_o, *gx_dot, first);
      first = false;
    }
    if (gx_dot && first) *gx_dot = P::matrix_zeros(P::rows(x), P::cols(x));
    if (t.arch_dot && !t.u)
      add_segment(detail::edge_softmax_vjp<P>(c.mix, adot), *t.arch_dot, t.arch_offset + arch_at_);
  }

  void commit(const pass_context<P>& p, const cache& c) {
    if (c.ops.size() != ops_.size()) return;
    for (std::size_t o = 0; o < ops_.size(); ++o)
      if (!zero_[o]) ops_[o].commit(p.shifted(offsets_[o]), c.ops[o]);
  }
  [[nodiscard]] bool keeps_state() const {
    return std::any_of(ops_.begin(), ops_.end(), [](const auto& l) { return l.keeps_state(); });
  }
  [[nodiscard]] std::vector<double> state() const {
    return detail::joined_state([&](auto f) { for (const auto& op : ops_) f(op); });
  }
  void restore(std::span<const double> s) {
    detail::restore_joined([&](auto f) { for (auto& op : ops_) f(op); }, s, "bilevel::learners::mixed_op");
  }

 private:
  /// out = m_o · g.
  static void scaled(const vector& m, std::size_t o, const matrix& g, matrix& out) {
    out = P::matrix_zeros(P::rows(g), P::cols(g));
    P::axpy_entry(scalar(1), m, o, g, out);
  }
  static void add_into(matrix& part, matrix& total, bool first) {
    if (first) std::swap(total, part);
    else P::axpy(scalar(1), part, total);
  }
  static void add_segment(const vector& v, vector& dst, std::size_t offset) {
    vector seg;
    P::segment(dst, offset, P::size(v), seg);
    P::axpy(scalar(1), v, seg);
    P::set_segment(seg, dst, offset);
  }
  static void zero_segment(vector& dst, std::size_t offset, std::size_t n) {
    if (n > 0) P::set_segment(P::zeros(n), dst, offset);
  }
  /// ṁ = Jᵀ u_e along the architecture direction (empty without one).
  vector mix_tangent(const tangent_context<P>& t, const vector& m) const {
    if (!t.u) return {};
    vector seg;
    P::segment(*t.u, t.arch_offset + arch_at_, ops_.size(), seg);
    return detail::edge_softmax_vjp<P>(m, seg);
  }

  std::vector<any_layer<P>> ops_;
  std::vector<std::size_t> offsets_;
  std::vector<char> zero_;
  std::size_t arch_at_ = 0, num_parameters_ = 0;
};

}  // namespace bilevel::learners
