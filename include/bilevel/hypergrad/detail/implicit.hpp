// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Pieces shared by the implicit strategies (CG, Neumann, Nyström, fixed point): the damped
/// Hessian operator, a power-iteration estimate of its largest eigenvalue, the final mixed
/// product that turns the solve into adjoints of the inputs, and the stationarity check.
///
/// Implicit function theorem: at a stationary point ∇_θ L(θ*, λ) = 0,
///     (∂θ*/∂λ)ᵀ v = −(∂²L/∂λ∂θ) H⁻¹ v,   H = ∂²L/∂θ²,
/// so every implicit strategy solves H x = v (approximately, damped) and returns −mixed(x).
/// Away from a stationary point the same solve still succeeds, with a tiny residual, and the
/// result is the derivative of nothing in particular; so every implicit report also says how
/// far from stationary the level was (stationarity_monitor below).
#include <cmath>
#include <cstddef>
#include <limits>
#include <random>
#include <span>
#include <vector>

#include "bilevel/core/hypergradient_report.hpp"
#include "bilevel/core/second_order.hpp"
#include "bilevel/hypergrad/detail/step_tape.hpp"

namespace bilevel::hypergrad::detail {

/// x ↦ (H + μI) x at a fixed point, batch and inputs; counts its products in the report.
template <class Level>
struct damped_hessian {
  using P = typename Level::policy;
  Level& lv;
  input_list<P> in;
  const typename Level::batch_type& batch;
  double damping;
  hypergradient_report& r;

  void operator()(const vector_t<P>& x, vector_t<P>& out) const {
    r.exact_second_order &= hvp(lv.learner, lv.theta, in, batch, x, out, lv.second_order);
    ++r.hvp_evals;
    if (damping != 0.0) P::axpy(scalar_t<P>(damping), x, out);
  }
};

/// Largest |eigenvalue| of a symmetric operator by power iteration from a fixed
/// pseudo-random start (seeded, so runs repeat). Converges from below; a few iterations give
/// the scale Neumann needs, not a precise value.
template <tensor_policy P, class Op>
double estimate_largest_eigenvalue(const Op& op, std::size_t n, std::size_t iterations) {
  std::mt19937 gen(12345);
  std::normal_distribution<double> normal;
  std::vector<scalar_t<P>> host(n);
  for (auto& h : host) h = scalar_t<P>(normal(gen));
  vector_t<P> v = P::from_host(host), hv;
  double lambda = 0.0;
  for (std::size_t k = 0; k < iterations; ++k) {
    const double nv = P::norm(v);
    if (nv == 0.0) return 0.0;
    P::scale(v, scalar_t<P>(1.0 / nv));
    op(v, hv);
    lambda = std::abs(P::dot(v, hv));  // Rayleigh quotient of the unit vector
    std::swap(v, hv);
  }
  return lambda;
}

/// out[s] = −(∂²L/∂in_s ∂θ) x for each input slot.
template <class Level>
void negative_mixed_products(Level& lv, input_list<typename Level::policy> in,
                             const typename Level::batch_type& batch,
                             const vector_t<typename Level::policy>& x,
                             std::span<vector_t<typename Level::policy>> out, hypergradient_report& r) {
  using P = typename Level::policy;
  static_assert(check_input_differentiable_learner<typename Level::learner_type>());
  for (std::size_t s = 0; s < out.size(); ++s) {
    r.exact_second_order &= mixed_vjp(lv.learner, lv.theta, in, batch, s, x, out[s], lv.second_order);
    ++r.mixed_evals;
    P::scale(out[s], scalar_t<P>(-1));
  }
}

/// Relative residual ‖(H+μI)x − v‖ / ‖v‖ (one more product: the honest number to report).
template <class Level, class Op>
double relative_residual(const Op& op, const vector_t<typename Level::policy>& x,
                         const vector_t<typename Level::policy>& v) {
  using P = typename Level::policy;
  vector_t<P> hx;
  op(x, hx);
  P::axpy(scalar_t<P>(-1), v, hx);
  const double nv = P::norm(v);
  return nv == 0.0 ? P::norm(hx) : P::norm(hx) / nv;
}

/// Keeps the gradient norm the level's inner run started with (its first step) and, at vjp
/// time, fills the report's gradient_norm and stationarity (core/hypergradient_report.hpp). The
/// reference is the start of the run, not of each block: a warm-started level that is already
/// stationary when a block begins would otherwise read about 1 however small its gradient, and
/// one that oscillates reads above 1 either way. The starting norm comes from the gradient the
/// solver hands the first on_step, so it costs nothing extra; the norm at the solve point costs one learner gradient, on the
/// solve's batch and at the solve's θ (which a network serves from the value pass the solve
/// cached, when it is taken after the solve's products).
template <tensor_policy P>
class stationarity_monitor {
 public:
  void begin_block() {}
  void on_step(const vector_t<P>& gradient) {
    if (started_) return;
    start_norm_ = P::norm(gradient);
    started_ = true;
  }

  /// Measures ‖∇_θ L‖ at the level's θ on `batch` and reports it.
  template <class Level>
  void measure(Level& lv, input_list<P> in, const typename Level::batch_type& batch, hypergradient_report& r) const {
    vector_t<P> g;
    gradient_into(lv.learner, lv.theta, in, batch, g);
    ++r.gradient_evals;
    report(P::norm(g), r);
  }
  /// Reports a gradient norm the strategy measured itself (fixed_point needs the gradient anyway).
  void report(double gradient_norm, hypergradient_report& r) const {
    r.assumes_stationarity = true;
    r.gradient_norm = gradient_norm;
    r.stationarity = relative(gradient_norm);
  }

 private:
  [[nodiscard]] double relative(double norm) const {
    if (!started_) return std::numeric_limits<double>::quiet_NaN();
    // A block that started exactly stationary: staying there is 0, leaving it is unbounded.
    if (start_norm_ == 0.0) return norm == 0.0 ? 0.0 : std::numeric_limits<double>::infinity();
    return norm / start_norm_;
  }

  bool started_ = false;
  double start_norm_ = 0.0;
};

/// What the implicit strategies' engines share: they differentiate at the level's θ itself (the
/// response upper levels read), and note the gradient at the level's first step, against
/// which their reports state the stationarity of the point they assume.
template <class L>
class implicit_engine_base {
  using P = typename L::policy;

 public:
  template <class Level> void begin_block(Level&, input_list<P>) { stationarity_.begin_block(); }
  template <class Level>
  void on_step(Level&, input_list<P>, const typename L::batch_type&, const vector_t<P>& g) {
    stationarity_.on_step(g);
  }
  template <class Level>
  const vector_t<P>& response(Level& lv, input_list<P>) { return lv.theta; }

 protected:
  stationarity_monitor<P> stationarity_;
};

/// Default solve tolerance by precision: ~100 ulp-equivalents of relative residual.
template <class Scalar>
constexpr double default_solve_tolerance() {
  return std::is_same_v<Scalar, float> ? 1e-5 : 1e-10;
}

}  // namespace bilevel::hypergrad::detail
