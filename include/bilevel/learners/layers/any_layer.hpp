// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// any_layer<P>: a layer of any type that satisfies network_layer (layer_concept.hpp), held by
/// value. Chains, graphs and networks store their parts as any_layer, so a part can be a
/// library layer, a user's layer or another chain or graph. Copies are deep (each copy owns
/// its layer, whose state, such as running statistics, is then its own).
///
/// The cost is one virtual call per layer and pass, and the layer's cache lives in a std::any
/// that is created on the first pass and reused after it.
#include <any>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "bilevel/learners/layers/layer_concept.hpp"

namespace bilevel::learners {

template <nn_tensor_policy P>
class any_layer {
 public:
  using matrix = typename P::matrix;
  using vector = vector_t<P>;
  using scalar = scalar_t<P>;
  using cache = std::any;

  /// From any type that means to be a layer (it declares a cache or its shapes); what else it
  /// lacks of the concept is named at compile time.
  template <class L>
    requires(!std::same_as<std::remove_cvref_t<L>, any_layer> && (detail::has_cache<L> || detail::has_shapes<L>))
  any_layer(L layer)  // NOLINT(google-explicit-constructor): a layer is an any_layer
      : impl_(std::make_unique<model<L>>(std::move(layer))) {
    static_assert(check_network_layer<L, P>());
  }
  any_layer(const any_layer& o) : impl_(o.impl_ ? o.impl_->clone() : nullptr) {}
  any_layer(any_layer&&) noexcept = default;
  any_layer& operator=(const any_layer& o) {
    if (this != &o) impl_ = o.impl_ ? o.impl_->clone() : nullptr;
    return *this;
  }
  any_layer& operator=(any_layer&&) noexcept = default;
  ~any_layer() = default;

  [[nodiscard]] geometry input_shape() const { return impl_->input_shape(); }
  [[nodiscard]] geometry output_shape() const { return impl_->output_shape(); }
  [[nodiscard]] std::size_t num_parameters() const { return impl_->num_parameters(); }
  [[nodiscard]] std::size_t arch_size() const { return impl_->arch_size(); }
  void initialize(std::span<scalar> params, std::mt19937_64& gen) const { impl_->initialize(params, gen); }

  void forward(const pass_context<P>& p, const matrix& x, matrix& y, cache& c) const { impl_->forward(p, x, y, c); }
  void backward(const pass_context<P>& p, const matrix& x, const matrix& g, cache& c, matrix* gx, vector& grad) const {
    impl_->backward(p, x, g, c, gx, grad);
  }
  void tangent_forward(const tangent_context<P>& t, const matrix& x, const matrix* x_dot, cache& c,
                       matrix& y_dot) const {
    impl_->tangent_forward(t, x, x_dot, c, y_dot);
  }
  void tangent_backward(const tangent_context<P>& t, const matrix& x, const matrix* x_dot, const matrix& g,
                        const matrix& g_dot, cache& c, matrix* gx_dot, vector& grad_dot) const {
    impl_->tangent_backward(t, x, x_dot, g, g_dot, c, gx_dot, grad_dot);
  }
  void commit(const pass_context<P>& p, const cache& c) { impl_->commit(p, c); }
  /// Whether a real step changes this layer (it has `commit`, and keeps state or says nothing
  /// of it): a composite of stateless layers (a cell of convolutions) answers false.
  [[nodiscard]] bool keeps_state() const { return impl_->keeps_state(); }
  [[nodiscard]] std::vector<double> state() const { return impl_->state(); }
  void restore(std::span<const double> s) { impl_->restore(s); }

  /// The held layer if it is an L (for reading a trained layer back), else null.
  template <class L>
  [[nodiscard]] const L* get() const {
    const auto* m = dynamic_cast<const model<L>*>(impl_.get());
    return m ? &m->layer : nullptr;
  }
  template <class L>
  [[nodiscard]] L* get() {
    auto* m = dynamic_cast<model<L>*>(impl_.get());
    return m ? &m->layer : nullptr;
  }

 private:
  struct base {
    virtual ~base() = default;
    [[nodiscard]] virtual std::unique_ptr<base> clone() const = 0;
    [[nodiscard]] virtual geometry input_shape() const = 0;
    [[nodiscard]] virtual geometry output_shape() const = 0;
    [[nodiscard]] virtual std::size_t num_parameters() const = 0;
    [[nodiscard]] virtual std::size_t arch_size() const = 0;
    virtual void initialize(std::span<scalar>, std::mt19937_64&) const = 0;
    virtual void forward(const pass_context<P>&, const matrix&, matrix&, cache&) const = 0;
    virtual void backward(const pass_context<P>&, const matrix&, const matrix&, cache&, matrix*, vector&) const = 0;
    virtual void tangent_forward(const tangent_context<P>&, const matrix&, const matrix*, cache&, matrix&) const = 0;
    virtual void tangent_backward(const tangent_context<P>&, const matrix&, const matrix*, const matrix&,
                                  const matrix&, cache&, matrix*, vector&) const = 0;
    virtual void commit(const pass_context<P>&, const cache&) = 0;
    [[nodiscard]] virtual bool keeps_state() const = 0;
    [[nodiscard]] virtual std::vector<double> state() const = 0;
    virtual void restore(std::span<const double>) = 0;
  };
  template <class L>
  struct model final : base {
    using own_cache = typename L::cache;
    L layer;
    explicit model(L l) : layer(std::move(l)) {}
    std::unique_ptr<base> clone() const override { return std::make_unique<model>(layer); }
    geometry input_shape() const override { return layer.input_shape(); }
    geometry output_shape() const override { return layer.output_shape(); }
    std::size_t num_parameters() const override { return layer.num_parameters(); }
    std::size_t arch_size() const override { return layer_arch_size(layer); }
    void initialize(std::span<scalar> params, std::mt19937_64& gen) const override {
      initialize_layer(layer, params, gen);
    }
    static own_cache& of(cache& c) {
      if (auto* p = std::any_cast<own_cache>(&c)) return *p;
      return c.template emplace<own_cache>();
    }
    void forward(const pass_context<P>& p, const matrix& x, matrix& y, cache& c) const override {
      layer.forward(p, x, y, of(c));
    }
    void backward(const pass_context<P>& p, const matrix& x, const matrix& g, cache& c, matrix* gx,
                  vector& grad) const override {
      layer.backward(p, x, g, of(c), gx, grad);
    }
    void tangent_forward(const tangent_context<P>& t, const matrix& x, const matrix* x_dot, cache& c,
                         matrix& y_dot) const override {
      layer.tangent_forward(t, x, x_dot, of(c), y_dot);
    }
    void tangent_backward(const tangent_context<P>& t, const matrix& x, const matrix* x_dot, const matrix& g,
                          const matrix& g_dot, cache& c, matrix* gx_dot, vector& grad_dot) const override {
      layer.tangent_backward(t, x, x_dot, g, g_dot, of(c), gx_dot, grad_dot);
    }
    void commit(const pass_context<P>& p, const cache& c) override {
      if (const auto* own = std::any_cast<own_cache>(&c)) commit_layer(layer, p, *own);
    }
    bool keeps_state() const override {
      if constexpr (requires { { layer.keeps_state() } -> std::convertible_to<bool>; })
        return layer.keeps_state();  // a composite asks its parts
      else if constexpr (!requires(L& l, const pass_context<P>& p, const own_cache& c) { l.commit(p, c); })
        return false;
      else if constexpr (requires { { layer.state() } -> std::convertible_to<std::vector<double>>; })
        return !layer.state().empty();
      else
        return true;  // commits without saying what it keeps: assume it needs the step's pass
    }
    std::vector<double> state() const override { return layer_state(layer); }
    void restore(std::span<const double> s) override {
      if constexpr (requires { layer.restore(s); }) {
        layer.restore(s);
      } else if (!s.empty()) {
        throw std::invalid_argument("bilevel::learners::any_layer: " + std::to_string(s.size()) +
                                    " state values for a layer that keeps no state");
      }
    }
  };
  std::unique_ptr<base> impl_;
};

namespace detail {

/// The states of a composite's parts, one after another; `for_each(f)` calls f on every part.
template <class ForEach>
std::vector<double> joined_state(ForEach for_each) {
  std::vector<double> s;
  for_each([&](const auto& part) {
    const auto ps = part.state();
    s.insert(s.end(), ps.begin(), ps.end());
  });
  return s;
}

/// Restores what joined_state gave, after checking the size (so a refused state changes nothing).
template <class ForEach>
void restore_joined(ForEach for_each, std::span<const double> s, const char* who) {
  std::size_t total = 0;
  for_each([&](auto& part) { total += part.state().size(); });
  if (total != s.size())
    throw std::invalid_argument(std::string(who) + ": " + std::to_string(s.size()) + " state values, its layers keep " +
                                std::to_string(total));
  std::size_t at = 0;
  for_each([&](auto& part) {
    const std::size_t n = part.state().size();
    part.restore(s.subspan(at, n));
    at += n;
  });
}

}  // namespace detail

}  // namespace bilevel::learners
