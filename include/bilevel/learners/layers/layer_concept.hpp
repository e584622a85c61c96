// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// The open layer concept: what a type must offer to be a layer of a network (a `chain`, a
/// `graph`, or a `sequential` learner), so that users add layers without editing the library.
///
/// Activations are (batch · height · width) × channels matrices, row-major (layer.hpp). A
/// layer L for policy P declares:
///
///   typename L::cache                       what its value pass keeps for the other passes
///                                           (default-constructible; the network owns one per
///                                           use of the layer and hands it to every pass)
///   geometry input_shape() const            one sample's input and output shapes
///   geometry output_shape() const
///   std::size_t num_parameters() const      its parameters, a segment of θ at ctx.offset
///   void forward(ctx, x, y, cache) const                         y = f(θ, x)
///   void backward(ctx, x, g, cache, gx*, grad) const             grad's segment = (∂f/∂θ)ᵀ g;
///                                                                *gx = (∂f/∂x)ᵀ g unless null
///   void tangent_forward(tctx, x, x_dot*, cache, y_dot) const    ẏ along (v, ẋ)   (x_dot null: ẋ = 0)
///   void tangent_backward(tctx, x, x_dot*, g, g_dot, cache, gx_dot*, grad_dot) const
///                                                                the tangent of backward: grad_dot's
///                                                                segment is the layer's share of the HVP
///
/// where ctx is a pass_context (θ, the layer's offset, the batch size, the mode, the
/// architecture) and tctx a tangent_context (adds the directions v in θ and u in α). The
/// tangent passes are Pearlmutter's R-operator: with them every network made of layers has an
/// exact gradient, Hessian-vector product and both mixed products. Passes run in the order
/// forward, backward, tangent_forward, tangent_backward on one cache; a tangent pass may be
/// repeated along new directions after one value and backward pass (a CG solve's HVPs).
///
/// Writing rules. A layer overwrites its own segment of grad and grad_dot (parameters are
/// never shared). The architecture vector α is shared (DARTS's cells of one type read the
/// same α), so a layer that reads α *adds* its ∂L/∂α and its tangent into ctx.arch_grad and
/// tctx.arch_dot, which the network zeroes first.
///
/// Optional members, used when present:
///   std::size_t arch_size() const           entries of α it reads, from ctx.arch_offset
///   void initialize(std::span<scalar> params, std::mt19937_64& gen) const
///                                           its initial parameters (absent: zeros)
///   void commit(const pass_context&, const cache&)
///                                           after a real optimizer step: fold what the value
///                                           pass saw into the layer's state (batch
///                                           normalization's running statistics). Never called
///                                           for look-ahead steps, HVPs or finite differences.
///   std::vector<double> state() const / void restore(std::span<const double>)
///                                           that state, for checkpoints
///   bool keeps_state() const                whether a real step changes the layer (absent:
///                                           true when it has commit and a non-empty state,
///                                           or commit and no state()); the network runs the
///                                           value pass at a real step's point only then
///
/// check_network_layer<L, P>() turns an unmet requirement into a compile-time message naming it.
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "bilevel/learners/layers/layer.hpp"

namespace bilevel::learners {

/// Batch statistics (training) or running statistics (evaluation); dropout is off in
/// evaluation.
enum class pass_mode { training, evaluation };

/// What a value or backward pass sees besides its activations.
template <nn_tensor_policy P>
struct pass_context {
  const vector_t<P>& theta;                ///< every parameter of the network
  std::size_t offset = 0;                  ///< this layer's first parameter in theta
  std::size_t batch = 0;                   ///< samples (activations have batch · pixels rows)
  pass_mode mode = pass_mode::training;
  std::uint64_t step = 0;                  ///< real optimizer steps taken so far (dropout masks)
  const vector_t<P>* alpha = nullptr;      ///< the architecture vector, when the network reads one
  std::size_t arch_offset = 0;             ///< where this layer's view of alpha starts
  vector_t<P>* arch_grad = nullptr;        ///< backward: ∂L/∂α is added here (null: not wanted)
  /// Whether the layers keep, for the tangent passes, what only those need: composite layers
  /// (chains, graphs, mixed operations) their inner adjoints in the backward pass. (Max
  /// pooling keeps its selection, one index per output, in either case.) False when no
  /// second-order product is expected
  /// (sequential::keep_adjoints): each inner adjoint is then released once used, so a
  /// backward pass holds a few adjoints at a time instead of one per activation. A backward
  /// pass that second-order products follow always has it true. A layer that keeps nothing
  /// may ignore it.
  bool keep_adjoints = true;

  /// The context of a part whose parameters start `params` further into θ.
  [[nodiscard]] pass_context shifted(std::size_t params) const {
    pass_context c = *this;
    c.offset += params;
    return c;
  }
};

/// What a tangent pass sees: the value pass's context and the directions.
template <nn_tensor_policy P>
struct tangent_context : pass_context<P> {
  const vector_t<P>& v;                    ///< the direction in θ
  const vector_t<P>* u = nullptr;          ///< the direction in α (null: zero)
  vector_t<P>* arch_dot = nullptr;         ///< tangent_backward: the tangent of ∂L/∂α along v is added here

  [[nodiscard]] tangent_context shifted(std::size_t params) const {
    tangent_context c = *this;
    c.offset += params;
    return c;
  }
};

namespace detail {
template <class L> concept has_cache = requires { typename L::cache; } && std::default_initializable<typename L::cache>;
template <class L> concept has_shapes = requires(const L& l) {
  { l.input_shape() } -> std::same_as<geometry>;
  { l.output_shape() } -> std::same_as<geometry>;
};
template <class L> concept counts_parameters = requires(const L& l) {
  { l.num_parameters() } -> std::convertible_to<std::size_t>;
};
template <class L, class P> concept has_layer_forward =
    requires(const L& l, const pass_context<P>& p, const typename P::matrix& x, typename P::matrix& y,
             typename L::cache& c) { l.forward(p, x, y, c); };
template <class L, class P> concept has_layer_backward =
    requires(const L& l, const pass_context<P>& p, const typename P::matrix& x, typename P::matrix* gx,
             typename L::cache& c, vector_t<P>& grad) { l.backward(p, x, x, c, gx, grad); };
template <class L, class P> concept has_layer_tangent_forward =
    requires(const L& l, const tangent_context<P>& t, const typename P::matrix& x, const typename P::matrix* xd,
             typename P::matrix& y, typename L::cache& c) { l.tangent_forward(t, x, xd, c, y); };
template <class L, class P> concept has_layer_tangent_backward =
    requires(const L& l, const tangent_context<P>& t, const typename P::matrix& x, const typename P::matrix* xd,
             typename P::matrix* gx, typename L::cache& c, vector_t<P>& grad) {
      l.tangent_backward(t, x, xd, x, x, c, gx, grad);
    };
}  // namespace detail

template <class L, class P>
concept network_layer = nn_tensor_policy<P> && detail::has_cache<L> && detail::has_shapes<L> &&
                        detail::counts_parameters<L> && detail::has_layer_forward<L, P> &&
                        detail::has_layer_backward<L, P> && detail::has_layer_tangent_forward<L, P> &&
                        detail::has_layer_tangent_backward<L, P>;

/// Names the first unmet requirement of network_layer at compile time.
template <class L, class P>
consteval bool check_network_layer() {
  static_assert(detail::has_cache<L>, "bilevel layer: needs a default-constructible member type `cache` "
                                      "(what its value pass keeps for the other passes)");
  static_assert(detail::has_shapes<L>, "bilevel layer: needs `geometry input_shape() const` and "
                                       "`geometry output_shape() const`");
  static_assert(detail::counts_parameters<L>, "bilevel layer: needs `std::size_t num_parameters() const`");
  if constexpr (detail::has_cache<L>) {
    static_assert(detail::has_layer_forward<L, P>,
                  "bilevel layer: needs `void forward(const pass_context<P>&, const matrix& x, matrix& y, cache&) const`");
    static_assert(detail::has_layer_backward<L, P>,
                  "bilevel layer: needs `void backward(const pass_context<P>&, const matrix& x, const matrix& g, "
                  "cache&, matrix* gx, vector& grad) const`");
    static_assert(detail::has_layer_tangent_forward<L, P>,
                  "bilevel layer: needs `void tangent_forward(const tangent_context<P>&, const matrix& x, "
                  "const matrix* x_dot, cache&, matrix& y_dot) const`");
    static_assert(detail::has_layer_tangent_backward<L, P>,
                  "bilevel layer: needs `void tangent_backward(const tangent_context<P>&, const matrix& x, "
                  "const matrix* x_dot, const matrix& g, const matrix& g_dot, cache&, matrix* gx_dot, "
                  "vector& grad_dot) const`");
  }
  return true;
}

// The optional members, with their defaults.

template <class L>
[[nodiscard]] std::size_t layer_arch_size(const L& l) {
  if constexpr (requires { { l.arch_size() } -> std::convertible_to<std::size_t>; }) return l.arch_size();
  else return 0;
}

template <class L, class Scalar>
void initialize_layer(const L& l, std::span<Scalar> params, std::mt19937_64& gen) {
  if constexpr (requires { l.initialize(params, gen); }) l.initialize(params, gen);
}

template <class L, class P>
void commit_layer(L& l, const pass_context<P>& ctx, const typename L::cache& c) {
  if constexpr (requires { l.commit(ctx, c); }) l.commit(ctx, c);
}

template <class L>
[[nodiscard]] std::vector<double> layer_state(const L& l) {
  if constexpr (requires { { l.state() } -> std::convertible_to<std::vector<double>>; }) return l.state();
  else return {};
}

template <class L>
void restore_layer(L& l, std::span<const double> s) {
  if constexpr (requires { l.restore(s); }) l.restore(s);
}

}  // namespace bilevel::learners
