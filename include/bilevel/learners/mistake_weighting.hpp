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
/// Fixed against the official code (the mathematics, not its quirks; see docs/methods.md,
/// "LFM, data reweighting"):
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
///
/// Every pass runs on the policy's operations, so on a device back end nothing batch-sized
/// crosses to the host: with X = rowsoftmax(F Gᵀ), Z = Y Ỹᵀ (one-hot targets: z_ij =
/// 1[y_i = ỹ_j]; soft rows give the expected label agreement) and q = r ⊙ u,
///     e = rowsums(X ⊙ Z diag(q)),   a = σ(e),
/// and the products are GEMMs, GEMVs and row reductions of the same B × n matrices.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "bilevel/core/elementwise.hpp"
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
  /// W1 the network of a design (the DARTS supernet, say), its architecture read as above.
  mistake_weighting(const network_design& first_learner, const data::dataset& references, std::size_t prefix,
                    std::size_t encoder_dim)
      : mistake_weighting(reference_losses<P>(first_learner, references), references, prefix, encoder_dim) {}

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
  /// reference similarities f·g are O(similarity_scale). The scale sets how sharp the softmax
  /// over the references starts: at O(1) (scale 1) with a hundred references x_ij ≈ 1/n for
  /// every j, so a_i hardly depends on which references sample i resembles, only on its
  /// label; at scale 10-100 the softmax concentrates on the nearest references, as it does in
  /// the paper's code on pretrained features, whose raw dot products are in the hundreds.
  /// V's entries grow as √scale, so Adam's steps on V are relatively smaller too.
  [[nodiscard]] vector initial_top(std::uint64_t seed, double similarity_scale = 1.0) const {
    if (!(similarity_scale > 0) || !std::isfinite(similarity_scale))
      throw std::invalid_argument("bilevel::learners::mistake_weighting: similarity_scale must be finite and > 0, got " +
                                  std::to_string(similarity_scale));
    std::vector<scalar_t<P>> t(top_size(), scalar_t<P>(1));
    const auto xr = P::matrix_to_host(refs_.batch().x);
    double sq = 0;
    for (auto v : xr) sq += double(v) * double(v);
    sq /= double(references());
    std::mt19937_64 gen(seed);
    std::normal_distribution<double> normal(0.0, std::sqrt(similarity_scale / (double(k_) * std::max(sq, 1e-12))));
    for (std::size_t i = 0; i < k_ * d_; ++i) t[table_ + i] = scalar_t<P>(normal(gen));
    return P::from_host(t);
  }

  vector gather(input_list<P> in, const classification_batch<P>& b, const sample_signals<P>&) const {
    return forward(in, b).a;
  }

  /// Σ_i ρ_i ∂a_i/∂in_slot.
  vector scatter(input_list<P> in, const classification_batch<P>& b, const sample_signals<P>&, const vector& rho,
                 std::size_t slot) const {
    const pass f = forward(in, b);
    if (P::size(rho) != P::size(f.a))
      throw std::invalid_argument("bilevel::learners::mistake_weighting: " + std::to_string(P::size(rho)) +
                                  " adjoints for a batch of " + std::to_string(P::size(f.a)));
    vector delta;  // δ_i = ρ_i a_i (1 − a_i): the adjoint of e_i
    P::transform(f.a, delta, elementwise::logistic_slope_from_value{});
    P::hadamard(delta, rho, delta);
    // c_j = Σ_i δ_i x_ij z_ij; β_j = c_j r_j is the adjoint of W1's mistake u_j.
    vector c = P::zeros(references()), beta;
    P::gemv(scalar_t<P>(1), f.XZ, true, delta, scalar_t<P>(0), c);
    P::hadamard(c, f.r, beta);
    if (slot == 0) return refs_.vjp(*in[0], beta, f.arch_ptr());  // through u_j: Σ_j β_j ∇u_j(W1)
    vector out = P::zeros(top_size());
    if (arch_size() > 0)  // through u_j's architecture: Σ_j β_j ∂u_j/∂A
      P::set_segment(refs_.arch_vjp(*in[0], beta, f.arch), out, 0);
    vector dr;  // ∂/∂r_j = c_j u_j
    P::hadamard(c, f.u, dr);
    P::set_segment(dr, out, r_offset());
    // ∂/∂S_ij = δ_i x_ij (z_ij q_j − e_i), the softmax's Jacobian;
    // S = F Gᵀ, F = X Vᵀ, G = X̃ Vᵀ:  dV = (Γ G)ᵀ X + (Γᵀ F)ᵀ X̃.
    matrix gm = f.centred;
    P::scale_rows(gm, delta);
    matrix dF = P::matrix_zeros(P::size(f.a), k_), dG = P::matrix_zeros(references(), k_),
           dV = P::matrix_zeros(k_, d_);
    P::gemm(scalar_t<P>(1), gm, false, f.G, false, scalar_t<P>(0), dF);
    P::gemm(scalar_t<P>(1), gm, true, f.F, false, scalar_t<P>(0), dG);
    P::gemm(scalar_t<P>(1), dF, true, b.x, false, scalar_t<P>(0), dV);
    P::gemm(scalar_t<P>(1), dG, true, refs_.batch().x, false, scalar_t<P>(1), dV);
    P::flatten_into(dV, out, encoder_offset());
    return out;
  }

  /// ∂a/∂in_slot · t.
  vector gather_tangent(input_list<P> in, const classification_batch<P>& b, const sample_signals<P>&, const vector& t,
                        std::size_t slot) const {
    const pass f = forward(in, b);
    const std::size_t B = P::size(f.a);
    vector e_dot = P::zeros(B);
    // e_i moves with W1's mistakes as Σ_j x_ij z_ij r_j u̇_j, and with r as Σ_j x_ij z_ij ṙ_j u_j.
    auto add_mistake_path = [&](const vector& coefficient, const vector& moving) {
      vector w;
      P::hadamard(coefficient, moving, w);
      P::gemv(scalar_t<P>(1), f.XZ, false, w, scalar_t<P>(1), e_dot);
    };
    if (slot == 0) {  // through u̇_j = ⟨∇u_j, t⟩
      add_mistake_path(f.r, refs_.jvp(*in[0], t, f.arch_ptr()));
    } else {
      if (arch_size() > 0) {  // through u̇_j = ⟨∂u_j/∂A, t_A⟩
        vector ta;
        P::segment(t, 0, arch_size(), ta);
        add_mistake_path(f.r, refs_.arch_jvp(*in[0], ta, f.arch));
      }
      vector r_dot;
      P::segment(t, r_offset(), references(), r_dot);
      add_mistake_path(f.u, r_dot);
      // Ṡ = Ḟ Gᵀ + F Ġᵀ, and ė_i gains Σ_j x_ij (z_ij q_j − e_i) Ṡ_ij.
      matrix Vd, Fd = P::matrix_zeros(B, k_), Gd = P::matrix_zeros(references(), k_),
                 Sd = P::matrix_zeros(B, references());
      P::unflatten(t, encoder_offset(), k_, d_, Vd);
      P::gemm(scalar_t<P>(1), b.x, false, Vd, true, scalar_t<P>(0), Fd);
      P::gemm(scalar_t<P>(1), refs_.batch().x, false, Vd, true, scalar_t<P>(0), Gd);
      P::gemm(scalar_t<P>(1), Fd, false, f.G, true, scalar_t<P>(0), Sd);
      P::gemm(scalar_t<P>(1), f.F, false, Gd, true, scalar_t<P>(1), Sd);
      vector through_similarity;
      P::row_dots(f.centred, Sd, through_similarity);
      P::axpy(scalar_t<P>(1), through_similarity, e_dot);
    }
    vector out;  // ȧ_i = a_i (1 − a_i) ė_i
    P::transform(f.a, out, elementwise::logistic_slope_from_value{});
    P::hadamard(out, e_dot, out);
    return out;
  }

 private:
  struct pass {
    vector arch;  // W1's architecture (empty when W1 has none)
    [[nodiscard]] const vector* arch_ptr() const { return P::size(arch) > 0 ? &arch : nullptr; }
    matrix F, G;        // B × k and n × k encodings
    matrix XZ;          // B × n: x_ij z_ij (similarities where the labels match)
    matrix centred;     // B × n: x_ij (z_ij q_j − e_i), the softmax's Jacobian applied
    vector u, r, e, a;  // W1's mistakes, r, the logits e and the weights a = σ(e)
  };

  pass forward(input_list<P> in, const classification_batch<P>& b) const {
    if (in.size() < 2 || P::size(*in[0]) != refs_.num_parameters() || P::size(*in[1]) != top_size())
      throw std::invalid_argument("bilevel::learners::mistake_weighting: expects W1's " +
                                  std::to_string(refs_.num_parameters()) + " parameters and a top vector of " +
                                  std::to_string(top_size()));
    if (P::cols(b.x) != d_)
      throw std::invalid_argument("bilevel::learners::mistake_weighting: batch has " + std::to_string(P::cols(b.x)) +
                                  " features, the references " + std::to_string(d_));
    const auto& refs = refs_.batch();
    if (P::cols(b.targets) != P::cols(refs.targets))
      throw std::invalid_argument("bilevel::learners::mistake_weighting: batch has " +
                                  std::to_string(P::cols(b.targets)) + " classes, the references " +
                                  std::to_string(P::cols(refs.targets)));
    pass f;
    const std::size_t B = b.size(), n = references();
    if (arch_size() > 0) P::segment(*in[1], 0, arch_size(), f.arch);
    f.u = refs_.losses(*in[0], f.arch_ptr());
    P::segment(*in[1], r_offset(), n, f.r);
    f.F = P::matrix_zeros(B, k_);
    f.G = P::matrix_zeros(n, k_);
    P::gemm_by_segment(scalar_t<P>(1), b.x, false, *in[1], encoder_offset(), k_, d_, true, scalar_t<P>(0), f.F);
    P::gemm_by_segment(scalar_t<P>(1), refs.x, false, *in[1], encoder_offset(), k_, d_, true, scalar_t<P>(0), f.G);
    matrix S = P::matrix_zeros(B, n), X;
    P::gemm(scalar_t<P>(1), f.F, false, f.G, true, scalar_t<P>(0), S);
    P::row_softmax(S, X);
    // Z = Y Ỹᵀ, and Z diag(q) = Y (diag(q) Ỹ)ᵀ without forming diag(q).
    matrix Z = P::matrix_zeros(B, n), Zq = P::matrix_zeros(B, n), Yq = refs.targets;
    P::gemm(scalar_t<P>(1), b.targets, false, refs.targets, true, scalar_t<P>(0), Z);
    vector q;
    P::hadamard(f.r, f.u, q);
    P::scale_rows(Yq, q);
    P::gemm(scalar_t<P>(1), b.targets, false, Yq, true, scalar_t<P>(0), Zq);
    P::hadamard(X, Z, f.XZ);
    matrix XZq;
    P::hadamard(X, Zq, XZq);
    P::row_sums(XZq, f.e);
    P::transform(f.e, f.a, elementwise::logistic{});
    f.centred = X;  // x_ij z_ij q_j − x_ij e_i
    P::scale_rows(f.centred, f.e);
    P::scale(f.centred, scalar_t<P>(-1));
    P::axpy(scalar_t<P>(1), XZq, f.centred);
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
