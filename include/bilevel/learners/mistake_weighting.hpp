// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// The mistake-driven sample weights of Learning from Mistakes (LFM; Zhang et al., TAI 2025),
/// as a Weighting (sample_weighting.hpp) of the re-learner W2:
///
///     a_i = σ( Σ_j r_j · x_ij · z_ij · u_j ),
///     x_ij = softmax_j( f_V(x_i) · f_V(x̃_j) ),   z_ij = 1[y_i = ỹ_j],   u_j = ℓ(W1; x̃_j, ỹ_j),
///
/// for a training sample (x_i, y_i) against reference validation samples (x̃_j, ỹ_j): a
/// sample is up-weighted when it looks like, and shares its label with, validation samples
/// the first learner W1 gets wrong. Inputs: slot 0 = W1's parameters (its solution, read
/// from the level below), slot 1 = the top level's vector, laid out [B | V | r]: B (the
/// per-sample table W1 trains with, `table` entries, unused here), the encoder V (k × d,
/// f_V(x) = V x) and r (one coefficient per reference sample).
///
/// Fixed against the official code (the mathematics, not its quirks; see algorithms.md §4):
/// r is indexed by a fixed set of reference samples instead of by position in a random
/// validation batch, so r_j means the same sample at every step. The paper's encoder is an
/// ImageNet-pretrained ResNet; here V is a learned linear map initialised at random with a
/// scale that puts the similarities at O(1) (a random projection keeps pixel-space geometry),
/// a CPU stand-in.
///
/// Architecture-search form (LFM's NAS form, methods/lfm_architecture_search.hpp): W1 is a
/// network with mixed operations and u_j = ℓ(A, W1; x̃_j, ỹ_j) depends on its architecture A
/// too. The top vector is then [A | V | r]: the prefix that the data-reweighting form fills
/// with B holds A (W1's architecture first; any further prefix entries are unused here), and
/// the products in the top vector gain the path through u_j's dependence on A.
///
/// Exact products: Σ_i ρ_i ∂a_i/∂(V, r) and ∂a/∂(V, r)·t in closed form (the softmax's
/// Jacobian); through u_j, the VJP in W1 is the gradient of Σ_j β_j u_j(W1) and the JVP the
/// per-sample loss tangents, both taken by W1's own network (exact, via its R-operator); in
/// A, the same network's architecture gradient with weights β, and per-reference
/// architecture gradients for the JVP (reference_losses.hpp).
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "bilevel/core/learner.hpp"
#include "bilevel/learners/classification_batch.hpp"
#include "bilevel/learners/reference_losses.hpp"
#include "bilevel/learners/sample_weighting.hpp"

namespace bilevel::learners {

template <nn_tensor_policy P>
class mistake_weighting {
 public:
  using vector = vector_t<P>;
  using matrix = typename P::matrix;
  static constexpr std::size_t num_inputs = 2;

  /// `first_learner_widths`: W1's MLP; `references`: the reference validation samples;
  /// `table`: entries of B at the front of the top vector; `encoder_dim`: k.
  mistake_weighting(const std::vector<std::size_t>& first_learner_widths, const data::dataset& references,
                    std::size_t table, std::size_t encoder_dim)
      : mistake_weighting(reference_losses<P>(first_learner_widths, references), references, table, encoder_dim) {}

  /// W1 any sequential network of `first_learner_layers` on `input`-shaped samples. With mixed
  /// operations, W1's architecture is the first entries of the top vector's prefix of
  /// `prefix` entries (prefix >= its size).
  mistake_weighting(geometry input, const std::vector<layer::spec>& first_learner_layers,
                    const data::dataset& references, std::size_t prefix, std::size_t encoder_dim)
      : mistake_weighting(reference_losses<P>(input, first_learner_layers, references), references, prefix,
                          encoder_dim) {}

  [[nodiscard]] std::size_t references() const { return refs_.size(); }
  [[nodiscard]] std::size_t top_size() const { return table_ + k_ * d_ + references(); }
  [[nodiscard]] std::size_t input_size(std::size_t slot) const {
    return slot == 0 ? refs_.num_parameters() : top_size();
  }
  [[nodiscard]] std::size_t encoder_offset() const { return table_; }
  /// Entries of W1's architecture at the front of the top vector (0: W1 has none).
  [[nodiscard]] std::size_t arch_size() const { return refs_.arch_size(); }
  [[nodiscard]] std::size_t r_offset() const { return table_ + k_ * d_; }

  /// The top vector's starting value: B = 1, r = 1, V random at the scale where the
  /// reference similarities f·g are O(1).
  [[nodiscard]] vector initial_top(std::uint64_t seed) const {
    std::vector<scalar_t<P>> t(top_size(), scalar_t<P>(1));
    const auto xr = P::matrix_to_host(refs_.batch().x);
    double sq = 0;
    for (auto v : xr) sq += double(v) * double(v);
    sq /= double(references());
    std::mt19937_64 gen(seed);
    std::normal_distribution<double> normal(0.0, 1.0 / std::sqrt(double(k_) * std::max(sq, 1e-12)));
    for (std::size_t i = 0; i < k_ * d_; ++i) t[table_ + i] = scalar_t<P>(normal(gen));
    return P::from_host(t);
  }

  vector gather(input_list<P> in, const classification_batch<P>& b, const sample_signals<P>&) const {
    const pass f = forward(in, b);
    return P::from_host(std::vector<scalar_t<P>>(f.a.begin(), f.a.end()));
  }

  /// Σ_i ρ_i ∂a_i/∂in_slot.
  vector scatter(input_list<P> in, const classification_batch<P>& b, const sample_signals<P>&, const vector& rho,
                 std::size_t slot) const {
    const pass f = forward(in, b);
    const auto rh = P::to_host(rho);
    const std::size_t B = f.a.size(), n = references();
    std::vector<double> delta(B);
    for (std::size_t i = 0; i < B; ++i) delta[i] = double(rh[i]) * f.a[i] * (1.0 - f.a[i]);
    // β_j = Σ_i δ_i ∂e_i/∂u_j: the adjoint of W1's mistakes.
    std::vector<double> beta(n, 0.0);
    for (std::size_t i = 0; i < B; ++i)
      for (std::size_t j = 0; j < n; ++j) beta[j] += delta[i] * f.x[i * n + j] * f.z(i, j) * f.r[j];
    if (slot == 0) return refs_.vjp(*in[0], beta, f.arch_ptr());  // through u_j: Σ_j β_j ∇u_j(W1)
    std::vector<scalar_t<P>> out(top_size(), scalar_t<P>(0));
    if (arch_size() > 0) {  // through u_j's architecture: Σ_j β_j ∂u_j/∂A
      const auto ga = P::to_host(refs_.arch_vjp(*in[0], beta, f.arch));
      std::copy(ga.begin(), ga.end(), out.begin());
    }
    std::vector<scalar_t<P>> gamma(B * n);  // ∂/∂S_ij
    for (std::size_t i = 0; i < B; ++i)
      for (std::size_t j = 0; j < n; ++j) {
        out[r_offset() + j] += scalar_t<P>(delta[i] * f.x[i * n + j] * f.z(i, j) * f.u[j]);
        gamma[i * n + j] = scalar_t<P>(delta[i] * f.x[i * n + j] * (f.q(i, j) - f.e[i]));
      }
    // S = F Gᵀ, F = X Vᵀ, G = X̃ Vᵀ:  dV = (Γ G)ᵀ X + (Γᵀ F)ᵀ X̃.
    const matrix gm = P::matrix_from_host(B, n, gamma);
    matrix dF = P::matrix_zeros(B, k_), dG = P::matrix_zeros(n, k_), dV = P::matrix_zeros(k_, d_);
    P::gemm(scalar_t<P>(1), gm, false, f.G, false, scalar_t<P>(0), dF);
    P::gemm(scalar_t<P>(1), gm, true, f.F, false, scalar_t<P>(0), dG);
    P::gemm(scalar_t<P>(1), dF, true, b.x, false, scalar_t<P>(0), dV);
    P::gemm(scalar_t<P>(1), dG, true, refs_.batch().x, false, scalar_t<P>(1), dV);
    vector result = P::from_host(out);
    P::flatten_into(dV, result, encoder_offset());
    return result;
  }

  /// ∂a/∂in_slot · t.
  vector gather_tangent(input_list<P> in, const classification_batch<P>& b, const sample_signals<P>&, const vector& t,
                        std::size_t slot) const {
    const pass f = forward(in, b);
    const std::size_t B = f.a.size(), n = references();
    std::vector<double> e_dot(B, 0.0);
    // e_i moves with W1's mistakes as Σ_j x_ij z_ij r_j u̇_j.
    auto through_mistakes = [&](const std::vector<double>& ud) {
      for (std::size_t i = 0; i < B; ++i)
        for (std::size_t j = 0; j < n; ++j) e_dot[i] += f.x[i * n + j] * f.z(i, j) * f.r[j] * ud[j];
    };
    if (slot == 0) {  // through u̇_j = ⟨∇u_j, t⟩
      through_mistakes(refs_.jvp(*in[0], t, f.arch_ptr()));
    } else {
      if (arch_size() > 0) {  // through u̇_j = ⟨∂u_j/∂A, t_A⟩
        vector ta;
        P::segment(t, 0, arch_size(), ta);
        through_mistakes(refs_.arch_jvp(*in[0], ta, f.arch));
      }
      const auto th = P::to_host(t);
      matrix Vd, Fd = P::matrix_zeros(B, k_), Gd = P::matrix_zeros(n, k_);
      P::unflatten(t, encoder_offset(), k_, d_, Vd);
      P::gemm(scalar_t<P>(1), b.x, false, Vd, true, scalar_t<P>(0), Fd);
      P::gemm(scalar_t<P>(1), refs_.batch().x, false, Vd, true, scalar_t<P>(0), Gd);
      const auto fd = P::matrix_to_host(Fd), gd = P::matrix_to_host(Gd);
      const auto fh = P::matrix_to_host(f.F), gh = P::matrix_to_host(f.G);
      for (std::size_t i = 0; i < B; ++i)
        for (std::size_t j = 0; j < n; ++j) {
          double s_dot = 0;
          for (std::size_t c = 0; c < k_; ++c)
            s_dot += double(fd[i * k_ + c]) * double(gh[j * k_ + c]) + double(fh[i * k_ + c]) * double(gd[j * k_ + c]);
          e_dot[i] += f.x[i * n + j] * (f.z(i, j) * f.u[j] * double(th[r_offset() + j]) + (f.q(i, j) - f.e[i]) * s_dot);
        }
    }
    std::vector<scalar_t<P>> out(B);
    for (std::size_t i = 0; i < B; ++i) out[i] = scalar_t<P>(f.a[i] * (1.0 - f.a[i]) * e_dot[i]);
    return P::from_host(out);
  }

 private:
  struct pass {
    vector arch;                   // W1's architecture (empty when W1 has none)
    [[nodiscard]] const vector* arch_ptr() const { return P::size(arch) > 0 ? &arch : nullptr; }
    matrix F, G;                   // B × k and n × k encodings
    std::vector<double> x, u, r, e, a;  // x: B × n similarities (softmax rows)
    std::vector<int> labels, ref_labels;
    std::size_t n = 0;
    [[nodiscard]] double z(std::size_t i, std::size_t j) const { return labels[i] == ref_labels[j] ? 1.0 : 0.0; }
    [[nodiscard]] double q(std::size_t i, std::size_t j) const { return r[j] * z(i, j) * u[j]; }
  };

  pass forward(input_list<P> in, const classification_batch<P>& b) const {
    if (in.size() < 2 || P::size(*in[0]) != refs_.num_parameters() || P::size(*in[1]) != top_size())
      throw std::invalid_argument("bilevel::learners::mistake_weighting: expects W1's " +
                                  std::to_string(refs_.num_parameters()) + " parameters and a top vector of " +
                                  std::to_string(top_size()));
    if (P::cols(b.x) != d_)
      throw std::invalid_argument("bilevel::learners::mistake_weighting: batch has " + std::to_string(P::cols(b.x)) +
                                  " features, the references " + std::to_string(d_));
    pass f;
    const std::size_t B = b.size(), n = references();
    f.n = n;
    f.labels = b.labels;
    f.ref_labels = refs_.labels();
    if (arch_size() > 0) P::segment(*in[1], 0, arch_size(), f.arch);
    f.u = refs_.losses(*in[0], f.arch_ptr());
    const auto top = P::to_host(*in[1]);
    f.r.assign(top.begin() + std::ptrdiff_t(r_offset()), top.end());
    matrix V;
    P::unflatten(*in[1], encoder_offset(), k_, d_, V);
    f.F = P::matrix_zeros(B, k_);
    f.G = P::matrix_zeros(n, k_);
    P::gemm(scalar_t<P>(1), b.x, false, V, true, scalar_t<P>(0), f.F);
    P::gemm(scalar_t<P>(1), refs_.batch().x, false, V, true, scalar_t<P>(0), f.G);
    const auto fh = P::matrix_to_host(f.F), gh = P::matrix_to_host(f.G);
    f.x.assign(B * n, 0.0);
    f.e.assign(B, 0.0);
    f.a.assign(B, 0.0);
    for (std::size_t i = 0; i < B; ++i) {
      double mx = -1e300, total = 0;
      for (std::size_t j = 0; j < n; ++j) {
        double s = 0;
        for (std::size_t c = 0; c < k_; ++c) s += double(fh[i * k_ + c]) * double(gh[j * k_ + c]);
        f.x[i * n + j] = s;
        mx = std::max(mx, s);
      }
      for (std::size_t j = 0; j < n; ++j) total += (f.x[i * n + j] = std::exp(f.x[i * n + j] - mx));
      for (std::size_t j = 0; j < n; ++j) {
        f.x[i * n + j] /= total;
        f.e[i] += f.x[i * n + j] * f.q(i, j);
      }
      f.a[i] = f.e[i] >= 0 ? 1.0 / (1.0 + std::exp(-f.e[i])) : std::exp(f.e[i]) / (1.0 + std::exp(f.e[i]));
    }
    return f;
  }

  mistake_weighting(reference_losses<P> refs, const data::dataset& references, std::size_t prefix,
                    std::size_t encoder_dim)
      : refs_(std::move(refs)), table_(prefix), k_(encoder_dim), d_(references.cols) {
    if (encoder_dim == 0) throw std::invalid_argument("bilevel::learners::mistake_weighting: encoder dimension must be >= 1");
    if (refs_.arch_size() > table_)
      throw std::invalid_argument("bilevel::learners::mistake_weighting: W1's architecture has " +
                                  std::to_string(refs_.arch_size()) + " entries but the top vector's prefix only " +
                                  std::to_string(table_));
  }

  reference_losses<P> refs_;
  std::size_t table_, k_, d_;
};

}  // namespace bilevel::learners
