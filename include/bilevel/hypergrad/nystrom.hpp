// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Implicit differentiation with a Nyström approximation of the Hessian (Hataya and Yamada,
/// "Nyström method for accurate and scalable implicit differentiation", AISTATS 2023).
///
/// k HVPs along directions Ω = [ω_1 … ω_k] give Y = HΩ and the core C = ΩᵀHΩ. The rank-k
/// approximation Ĥ = Y C⁺ Yᵀ agrees with H on the span of Ω, and (Ĥ + μI) x = v is then
/// solved in closed form instead of iteratively; the result is −(∂²L/∂λ∂θ) x, as for CG
/// (detail/implicit.hpp).
///
/// The solve. With Y = QR (Q orthonormal, r columns) and S = R C⁺ Rᵀ (r×r), Ĥ = Q S Qᵀ, so
/// Ĥ + μI is S + μI on the span of Q and μI on its complement:
///     x = Q (S + μI)⁻¹ Qᵀ v + (1/μ)(v − Q Qᵀ v).
/// For invertible C this is the paper's Woodbury form x = (1/μ)[v − Y(μC + YᵀY)⁻¹Yᵀv]
/// (Woodbury with A = μI, U = Y, the middle factor C⁻¹: (μI + YC⁻¹Yᵀ)⁻¹ = μ⁻¹I −
/// μ⁻²Y(C + YᵀY/μ)⁻¹Yᵀ). That form is not used as written: its bracket is two vectors of
/// size ‖v‖ that cancel down to μ‖x‖, so its round-off is multiplied by 1/μ on every
/// direction, captured or not, and small dampings lose all their digits. The split form
/// multiplies by 1/μ only the part of v outside the sketch, which the method itself scales
/// by 1/μ; when the sketch spans the whole space (k = |θ|) that part is empty and is not
/// formed. C and S + μI may be indefinite or nearly singular (a Hessian with negative or
/// tiny eigenvalues): both are inverted through their eigen-decompositions (Jacobi, in
/// double, on the host), with eigenvalues under the numerical-rank threshold k·ε·max|λ| (ε
/// of the policy's scalar) treated as zero, so round-off is never divided by.
///
/// Damping. μ > 0 is the paper's approximation: the part of v outside the sketch gets 1/μ
/// (Ĥ has no curvature there), so μ should be about the size of the eigenvalues the sketch
/// misses. μ = 0 returns x = Ĥ⁺v, the minimum-norm least-squares solution of Ĥx = v: H⁻¹v
/// exactly when the sketch spans H's range, and otherwise the part of v outside the sketch
/// is left out rather than divided by zero.
///
/// Directions. Gaussian, drawn in order from one stream seeded by `seed` (so runs repeat and
/// the span for rank k lies inside the span for any larger rank) and orthonormalised.
/// Gaussian rather than the paper's column subsets: k columns of H see it only through k
/// coordinates and miss an eigenvector that lives on the others, while Gaussian directions
/// capture the leading k-dimensional eigenspace with high probability in any basis (Halko,
/// Martinsson and Tropp, SIAM Review 2011), for the same k HVPs; the price is nk normal draws
/// on the host and k transfers, at the first call only. Orthonormalising changes no result in exact arithmetic (Ĥ
/// depends on the span of Ω alone) and keeps C as well conditioned as H on that span.
///
/// Cost: k HVPs (at most |θ|: more directions than parameters add nothing) + 1 for the
/// reported residual + 1 mixed product per input + 1 gradient for the reported stationarity, O(k²) dots and axpys of |θ| to
/// orthonormalise (once: the directions are kept), O(k³) on the host. Memory: 2k + 1 vectors of
/// |θ| (the k directions, kept between calls, and the sketch). Worth it when H's
/// spectrum decays fast, so that its leading k eigenpairs carry most of it.
///
/// Report: `rank` is the number of directions sketched (min(k, |θ|)); `residual` the true
/// relative residual ‖(H+μI)x − v‖/‖v‖ of the system approximated (one more HVP, so it also
/// measures the sketch's error); `converged` says residual <= `tolerance` (0: 1e-10 in double,
/// 1e-5 in float). With k < |θ| the sketch is an approximation and the residual says how good;
/// `iterations` stays 0.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "bilevel/detail/symmetric_eigen.hpp"
#include "bilevel/hypergrad/detail/implicit.hpp"

namespace bilevel::hypergrad {

template <class L, class O>
class nystrom_engine;

struct nystrom {
  std::size_t rank = 10;    ///< k: directions sketched, one HVP each
  double damping = 0.0;     ///< μ, finite and >= 0; 0: the sketch's pseudo-inverse (see above)
  std::uint64_t seed = 0;   ///< seeds the Gaussian directions
  double tolerance = 0.0;   ///< relative residual at or under which the result counts as converged; 0: by precision

  template <class L, class O>
  using engine = nystrom_engine<L, O>;
};

namespace detail {

/// Orthogonalises w against an orthonormal basis, adding the coefficients it removes to
/// coef[0, basis.size()); returns ‖w‖ afterwards. Two passes of modified Gram–Schmidt: one
/// leaves w only as orthogonal as the cancellation allowed, the second brings it to round-off.
template <tensor_policy P>
double orthogonalize(vector_t<P>& w, const std::vector<vector_t<P>>& basis, std::vector<double>& coef) {
  coef.assign(basis.size(), 0.0);
  for (int pass = 0; pass < 2; ++pass)
    for (std::size_t i = 0; i < basis.size(); ++i) {
      const double c = P::dot(basis[i], w);
      coef[i] += c;
      P::axpy(scalar_t<P>(-c), basis[i], w);
    }
  return P::norm(w);
}

/// Relative size under which a value of an m×m problem is round-off of the scalar type (the
/// threshold of numpy's pinv and matrix_rank).
template <class Scalar>
double rank_tolerance(std::size_t m) {
  return double(std::max<std::size_t>(m, 1)) * std::numeric_limits<Scalar>::epsilon();
}

}  // namespace detail

/// What a level using nystrom keeps: its options and the gradient norm its block of steps
/// started with (for the report's stationarity); the sketch is rebuilt at every call, at the
/// level's current θ.
template <class L, class O>
class nystrom_engine : public detail::implicit_engine_base<L> {
  using P = typename L::policy;
  using S = scalar_t<P>;

 public:
  explicit nystrom_engine(const nystrom& options) : opt_(options) {
    std::string bad;
    const auto refuse = [&bad](const std::string& what) { bad += (bad.empty() ? "" : "; ") + what; };
    if (options.rank == 0) refuse("rank must be >= 1 (got 0)");
    if (!(options.damping >= 0.0 && std::isfinite(options.damping)))
      refuse("damping must be finite and >= 0 (got " + std::to_string(options.damping) + ")");
    if (!(options.tolerance >= 0.0 && options.tolerance < 1.0))
      refuse("tolerance must be in [0, 1) (got " + std::to_string(options.tolerance) + ")");
    if (!bad.empty()) throw std::invalid_argument("bilevel::hypergrad::nystrom: " + bad);
  }

  template <class Level>
  hypergradient_report vjp(Level& lv, input_list<P> in, const vector_t<P>& v, std::span<vector_t<P>> out) {
    hypergradient_report r{.strategy = "nystrom"};
    const auto batch = lv.next_batch();
    const detail::damped_hessian<Level> hessian{lv, in, batch, 0.0, r};  // Ĥ approximates H; μ enters the solve
    const detail::damped_hessian<Level> damped{lv, in, batch, opt_.damping, r};
    const std::size_t n = P::size(v);
    std::vector<double> coef;

    // Ω, orthonormal. A direction already in the span of the others (only possible past n
    // directions, or by round-off) would add an HVP and nothing else. The same seed gives the
    // same directions at every call, so they are drawn once and kept: drawing n·k normal
    // numbers on the host cost as much as the k HVPs themselves (measured, bench/STRATEGIES.md).
    if (directions_.empty() || P::size(directions_.front()) != n) {
      directions_.clear();
      std::mt19937_64 gen(opt_.seed);
      std::normal_distribution<double> normal;
      std::vector<S> host(n);
      for (std::size_t drawn = 0; drawn < opt_.rank && directions_.size() < n; ++drawn) {
        for (auto& h : host) h = S(normal(gen));
        vector_t<P> w = P::from_host(host);
        const double drawn_norm = P::norm(w);
        const double rest = detail::orthogonalize<P>(w, directions_, coef);
        if (!(rest > detail::rank_tolerance<S>(std::min(opt_.rank, n)) * drawn_norm)) continue;
        P::scale(w, S(1.0 / rest));
        directions_.push_back(std::move(w));
      }
    }
    std::vector<vector_t<P>> sketch = directions_;
    const std::size_t m = sketch.size();
    r.rank = m;

    // Y = HΩ and C = ΩᵀY. H is symmetric, so C's upper triangle is its lower one mirrored:
    // computing only C_ij = ω_iᵀ(Hω_j) for i >= j lets ω_j be overwritten by Hω_j as soon as
    // that is formed, and the sketch holds k + 1 vectors rather than 2k. (The mirror is also
    // the symmetrisation, for products that are not exactly symmetric.)
    std::vector<double> core(m * m);
    {
      vector_t<P> hw;
      for (std::size_t j = 0; j < m; ++j) {
        hessian(sketch[j], hw);
        for (std::size_t i = j; i < m; ++i) core[i * m + j] = core[j * m + i] = P::dot(sketch[i], hw);
        std::swap(sketch[j], hw);
      }
    }

    // Y = QR, dropping the columns already in the span of the earlier ones (H singular on
    // the sketch): R is row-major m×m, of which the first q rows are used.
    double largest = 0.0;
    for (const auto& y : sketch) largest = std::max(largest, P::norm(y));
    std::vector<vector_t<P>> basis;
    basis.reserve(m);
    std::vector<double> rfac(m * m, 0.0);
    for (std::size_t j = 0; j < m; ++j) {
      const double rest = detail::orthogonalize<P>(sketch[j], basis, coef);
      for (std::size_t i = 0; i < basis.size(); ++i) rfac[i * m + j] = coef[i];
      if (!(rest > detail::rank_tolerance<S>(m) * largest)) continue;
      rfac[basis.size() * m + j] = rest;
      P::scale(sketch[j], S(1.0 / rest));
      basis.push_back(std::move(sketch[j]));
    }
    sketch.clear();
    const std::size_t q = basis.size();

    // S = R C⁺ Rᵀ = Σ_i (R u_i)(R u_i)ᵀ / λ_i over C's eigenpairs above the rank threshold.
    std::vector<double> reduced(q * q, 0.0);  // S
    {
      const auto ce = bilevel::detail::symmetric_eigen(core, m);
      double cmax = 0.0;
      for (double l : ce.values) cmax = std::max(cmax, std::abs(l));
      std::vector<double> ru(q);
      for (std::size_t e = 0; e < m; ++e) {
        const double l = ce.values[e];
        if (!(std::abs(l) > detail::rank_tolerance<S>(m) * cmax)) continue;
        for (std::size_t a = 0; a < q; ++a) {
          double s = 0.0;
          for (std::size_t j = 0; j < m; ++j) s += rfac[a * m + j] * ce.vectors[j * m + e];
          ru[a] = s;
        }
        for (std::size_t a = 0; a < q; ++a)
          for (std::size_t b = 0; b < q; ++b) reduced[a * q + b] += ru[a] * ru[b] / l;
      }
    }

    // x = Q (S + μI)⁺ Qᵀv [+ (1/μ)(v − QQᵀv) when the span of Q is not the whole space].
    std::vector<double> z(q);
    for (std::size_t a = 0; a < q; ++a) z[a] = P::dot(basis[a], v);
    const double mu = opt_.damping;
    const auto se = bilevel::detail::symmetric_eigen(reduced, q);
    double top = mu;  // the largest |eigenvalue| of Ĥ + μI
    for (double s : se.values) top = std::max(top, std::abs(s + mu));
    const double cut = detail::rank_tolerance<S>(m) * top;
    std::vector<double> c(q, 0.0);
    for (std::size_t e = 0; e < q; ++e) {
      const double l = se.values[e] + mu;
      if (!(std::abs(l) > cut)) continue;
      double proj = 0.0;
      for (std::size_t b = 0; b < q; ++b) proj += se.vectors[b * q + e] * z[b];
      for (std::size_t a = 0; a < q; ++a) c[a] += se.vectors[a * q + e] * proj / l;
    }
    const bool complement = q < n && mu > cut;
    vector_t<P> x = complement ? v : P::zeros(n);
    if (complement) {
      P::scale(x, S(1.0 / mu));
      for (std::size_t a = 0; a < q; ++a) c[a] -= z[a] / mu;
    }
    for (std::size_t a = 0; a < q; ++a) P::axpy(S(c[a]), basis[a], x);

    const double tol = opt_.tolerance > 0.0 ? opt_.tolerance : detail::default_solve_tolerance<S>();
    r.residual = P::norm(v) == 0.0 ? 0.0 : detail::relative_residual<Level>(damped, x, v);
    r.converged = r.residual <= tol;
    detail::negative_mixed_products(lv, in, batch, x, out, r);
    this->stationarity_.measure(lv, in, batch, r);  // last: a network serves it from the solve's cached passes
    return r;
  }

 private:
  std::vector<vector_t<P>> directions_;  ///< Ω, kept between calls
  nystrom opt_;
};

}  // namespace bilevel::hypergrad
