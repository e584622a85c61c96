// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Second-order products of a learner: the exact member when the learner has one, central
/// differences of gradients otherwise (as DARTS does). Every strategy calls these, so a
/// learner with only a gradient still works with every strategy, and the report says when
/// finite differences stood in.
///
/// Central differences use ε = s / ‖v‖, so that the perturbation θ ± εv has length s whatever
/// the scale of v. The best s depends on precision (measured, see docs/strategies.md): s = 1e-2 is
/// about optimal in float (error ~8e-5; DARTS's value) and far too coarse in double, where
/// s = 1e-4 gives ~1e-10. Forward differences are 100-1000x worse and are never used.
#include <cstddef>
#include <type_traits>
#include <vector>

#include "bilevel/core/device_loss.hpp"
#include "bilevel/core/elementwise.hpp"
#include "bilevel/core/entry_scalars.hpp"

namespace bilevel {

/// The default central-difference scale s for a scalar type (see the file comment).
template <class Scalar>
constexpr double default_fd_scale() {
  return std::is_same_v<Scalar, float> ? 1e-2 : 1e-4;
}

/// How a strategy wants its second-order products taken.
struct second_order_options {
  /// Central-difference scale s (ε = s/‖v‖); the default depends on the scalar type.
  double fd_scale = 1e-4;
  /// Take central differences even where the learner has an exact product (the DARTS
  /// approximation, and a way to measure what exactness buys).
  bool force_finite_differences = false;
};

namespace detail {
/// θ + shift · v into a fresh vector.
template <tensor_policy P>
vector_t<P> shifted(const vector_t<P>& theta, double shift, const vector_t<P>& v) {
  vector_t<P> x;
  P::copy(theta, x);
  P::axpy(scalar_t<P>(shift), v, x);
  return x;
}

/// Central difference of a vector-valued function f along `dir` from `base`:
/// out = (f(base + ε dir) − f(base − ε dir)) / 2ε, with ε = s/‖dir‖. `eval(point, out)`
/// evaluates f. A zero direction gives a zero product. On a device-resident policy ε and
/// 1/2ε stay on the device (core/entry_scalars.hpp): the same product, no host wait.
template <tensor_policy P, class Eval>
void central_difference(const vector_t<P>& base, const vector_t<P>& dir, double s, std::size_t out_size,
                        vector_t<P>& out, Eval eval) {
  vector_t<P> minus;
  if constexpr (device_resident<P> && nn_tensor_policy<P>) {
    const vector_t<P> norm2 = squared_norm_entry<P>(dir);
    vector_t<P> step, back, factor;  // ε, −ε and 1/2ε = ‖dir‖/2s; all 0 along a zero direction
    P::transform(norm2, step, elementwise::scaled_rsqrt_if_positive{s});
    P::transform(norm2, back, elementwise::scaled_rsqrt_if_positive{-s});
    P::transform(norm2, factor, elementwise::scaled_sqrt{0.5 / s});
    vector_t<P> point;
    P::copy(base, point);
    axpy_by_entry<P>(step, dir, point);
    eval(point, out);
    P::copy(base, point);
    axpy_by_entry<P>(back, dir, point);
    eval(point, minus);
    P::axpy(scalar_t<P>(-1), minus, out);
    scale_by_entry<P>(out, factor);
  } else {
    const double dir_norm = P::norm(dir);
    if (dir_norm == 0.0) {
      out = P::zeros(out_size);
      return;
    }
    const double eps = s / dir_norm;
    eval(shifted<P>(base, eps, dir), out);
    eval(shifted<P>(base, -eps, dir), minus);
    P::axpy(scalar_t<P>(-1), minus, out);
    P::scale(out, scalar_t<P>(1.0 / (2.0 * eps)));
  }
}
}  // namespace detail

/// out = (∂²L/∂θ²) v. Returns true when the product was exact.
template <learner L>
bool hvp(const L& l, const vector_t<typename L::policy>& theta, input_list<typename L::policy> in,
         const typename L::batch_type& b, const vector_t<typename L::policy>& v,
         vector_t<typename L::policy>& out, const second_order_options& opt) {
  using P = typename L::policy;
  if constexpr (has_exact_hvp<L>) {
    if (!opt.force_finite_differences) {
      l.hvp(theta, in, b, v, out);
      return true;
    }
  }
  {
    detail::central_difference<P>(theta, v, opt.fd_scale, P::size(theta), out,
                                  [&](const vector_t<P>& point, vector_t<P>& g) { gradient_into(l, point, in, b, g); });
    return false;
  }
}

/// out = (∂²L/∂in_slot ∂θ) v: how the θ-gradient's inner product with v moves with the
/// input. Returns true when exact.
template <input_differentiable_learner L>
bool mixed_vjp(const L& l, const vector_t<typename L::policy>& theta,
               input_list<typename L::policy> in, const typename L::batch_type& b,
               std::size_t slot, const vector_t<typename L::policy>& v,
               vector_t<typename L::policy>& out, const second_order_options& opt) {
  using P = typename L::policy;
  if constexpr (has_exact_mixed_vjp<L>) {
    if (!opt.force_finite_differences) {
      l.mixed_vjp(theta, in, b, slot, v, out);
      return true;
    }
  }
  {
    detail::central_difference<P>(theta, v, opt.fd_scale, P::size(*in[slot]), out,
                                  [&](const vector_t<P>& point, vector_t<P>& g) {
                                    l.input_gradient(point, in, b, slot, g);
                                  });
    return false;
  }
}

/// out = (∂²L/∂θ ∂in_slot) u: how the θ-gradient moves when the input moves along u.
/// Returns true when exact.
template <learner L>
bool mixed_jvp(const L& l, const vector_t<typename L::policy>& theta,
               input_list<typename L::policy> in, const typename L::batch_type& b,
               std::size_t slot, const vector_t<typename L::policy>& u,
               vector_t<typename L::policy>& out, const second_order_options& opt) {
  using P = typename L::policy;
  if constexpr (has_exact_mixed_jvp<L>) {
    if (!opt.force_finite_differences) {
      l.mixed_jvp(theta, in, b, slot, u, out);
      return true;
    }
  }
  {
    std::vector<const vector_t<P>*> moved(in.begin(), in.end());
    detail::central_difference<P>(*in[slot], u, opt.fd_scale, P::size(theta), out,
                                  [&](const vector_t<P>& input, vector_t<P>& g) {
                                    moved[slot] = &input;
                                    gradient_into(l, theta, input_list<P>(moved), b, g);
                                  });
    return false;
  }
}

}  // namespace bilevel
