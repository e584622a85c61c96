// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// chain<P>: layers applied one after another, itself a layer (so chains nest in graphs and
/// graphs in chains). Each part's parameters follow the previous part's in θ. The value
/// pass keeps every intermediate activation, the backward pass every intermediate adjoint
/// (unless told no second-order pass follows: pass_context::keep_adjoints) and the tangent
/// pass every intermediate tangent, in the chain's cache, for the passes after them.
#include <algorithm>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "bilevel/learners/layers/any_layer.hpp"

namespace bilevel::learners {

template <nn_tensor_policy P>
class chain {
 public:
  using matrix = typename P::matrix;
  using vector = vector_t<P>;
  using scalar = scalar_t<P>;
  struct cache {
    std::vector<matrix> acts;        ///< acts[l]: the output of part l (l < size − 1)
    std::vector<std::any> parts;     ///< each part's own cache
    std::vector<matrix> g;           ///< g[l]: the adjoint of acts[l]
    std::vector<matrix> dots;        ///< dots[l]: the tangent of acts[l]
    matrix g_dot[2];                 ///< the adjoint's tangent, alternating between parts
  };

  /// At least one part; each part's input shape must be the previous part's output shape.
  explicit chain(std::vector<any_layer<P>> parts) : parts_(std::move(parts)) {
    if (parts_.empty()) throw std::invalid_argument("bilevel::learners::chain: no layers");
    for (std::size_t l = 0; l < parts_.size(); ++l) {
      offsets_.push_back(num_parameters_);
      num_parameters_ += parts_[l].num_parameters();
      arch_size_ = std::max(arch_size_, parts_[l].arch_size());
      if (l > 0 && !(parts_[l].input_shape() == parts_[l - 1].output_shape()))
        throw std::invalid_argument("bilevel::learners::chain: layer " + std::to_string(l) + " takes " +
                                    shape_text(parts_[l].input_shape()) + " but layer " + std::to_string(l - 1) +
                                    " gives " + shape_text(parts_[l - 1].output_shape()));
    }
  }

  [[nodiscard]] geometry input_shape() const { return parts_.front().input_shape(); }
  [[nodiscard]] geometry output_shape() const { return parts_.back().output_shape(); }
  [[nodiscard]] std::size_t num_parameters() const { return num_parameters_; }
  [[nodiscard]] std::size_t arch_size() const { return arch_size_; }
  [[nodiscard]] std::size_t size() const { return parts_.size(); }
  [[nodiscard]] const any_layer<P>& part(std::size_t l) const { return parts_.at(l); }
  [[nodiscard]] std::size_t parameter_offset(std::size_t l) const { return offsets_.at(l); }

  void initialize(std::span<scalar> params, std::mt19937_64& gen) const {
    for (std::size_t l = 0; l < parts_.size(); ++l)
      parts_[l].initialize(params.subspan(offsets_[l], parts_[l].num_parameters()), gen);
  }

  void forward(const pass_context<P>& p, const matrix& x, matrix& y, cache& c) const {
    const std::size_t L = parts_.size();
    c.acts.resize(L - 1);
    c.parts.resize(L);
    for (std::size_t l = 0; l < L; ++l)
      parts_[l].forward(p.shifted(offsets_[l]), in(l, x, c), l + 1 == L ? y : c.acts[l], c.parts[l]);
  }
  void backward(const pass_context<P>& p, const matrix& x, const matrix& g, cache& c, matrix* gx,
                vector& grad) const {
    const std::size_t L = parts_.size();
    c.g.resize(L - 1);
    for (std::size_t l = L; l-- > 0;) {
      parts_[l].backward(p.shifted(offsets_[l]), in(l, x, c), l + 1 == L ? g : c.g[l], c.parts[l],
                         l > 0 ? &c.g[l - 1] : gx, grad);
      if (!p.keep_adjoints && l + 1 < L) c.g[l] = matrix{};  // used: released
    }
  }
  void tangent_forward(const tangent_context<P>& t, const matrix& x, const matrix* x_dot, cache& c,
                       matrix& y_dot) const {
    const std::size_t L = parts_.size();
    c.dots.resize(L - 1);
    for (std::size_t l = 0; l < L; ++l)
      parts_[l].tangent_forward(t.shifted(offsets_[l]), in(l, x, c), l > 0 ? &c.dots[l - 1] : x_dot, c.parts[l],
                                l + 1 == L ? y_dot : c.dots[l]);
  }
  void tangent_backward(const tangent_context<P>& t, const matrix& x, const matrix* x_dot, const matrix& g,
                        const matrix& g_dot, cache& c, matrix* gx_dot, vector& grad_dot) const {
    const std::size_t L = parts_.size();
    const matrix* gd = &g_dot;
    for (std::size_t l = L; l-- > 0;) {
      matrix* next = l > 0 ? &c.g_dot[l % 2] : gx_dot;
      parts_[l].tangent_backward(t.shifted(offsets_[l]), in(l, x, c), l > 0 ? &c.dots[l - 1] : x_dot,
                                 l + 1 == L ? g : c.g[l], *gd, c.parts[l], next, grad_dot);
      gd = next;
    }
  }
  void commit(const pass_context<P>& p, const cache& c) {
    if (c.parts.size() != parts_.size()) return;  // no value pass yet
    for (std::size_t l = 0; l < parts_.size(); ++l) parts_[l].commit(p.shifted(offsets_[l]), c.parts[l]);
  }
  [[nodiscard]] bool keeps_state() const {
    return std::any_of(parts_.begin(), parts_.end(), [](const auto& l) { return l.keeps_state(); });
  }
  [[nodiscard]] std::vector<double> state() const {
    return detail::joined_state([&](auto f) { for (const auto& part : parts_) f(part); });
  }
  void restore(std::span<const double> s) {
    detail::restore_joined([&](auto f) { for (auto& part : parts_) f(part); }, s, "bilevel::learners::chain");
  }

 private:
  const matrix& in(std::size_t l, const matrix& x, const cache& c) const { return l == 0 ? x : c.acts[l - 1]; }

  std::vector<any_layer<P>> parts_;
  std::vector<std::size_t> offsets_;
  std::size_t num_parameters_ = 0, arch_size_ = 0;
};

}  // namespace bilevel::learners
