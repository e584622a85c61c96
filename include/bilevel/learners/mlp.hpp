// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// A multilayer perceptron classifier with exact gradient, Hessian-vector product and mixed
/// products, generic over the tensor policy.
///
/// Layers: Z_l = A_l W_l + 1 b_lᵀ, A_{l+1} = σ(Z_l) for hidden layers, logits = Z_{L−1}.
/// Parameters live in one flat vector, layer by layer, W_l (row-major, fan_in × fan_out)
/// then b_l. The loss is L = (1/B) Σ_i c_i ℓ_i with ℓ_i cross-entropy against the target row
/// (one-hot or soft) or half the squared error, and c_i per-sample weights read from an
/// upper level through the Weighting policy (sample_weighting.hpp).
///
/// Second order by Pearlmutter's R-operator: a tangent pass pushes a direction V through
/// the forward pass (Ż_l = Ȧ_l W_l + A_l V_l + v_b, Ȧ_{l+1} = σ'(Z_l) ⊙ Ż_l) and then through
/// the backward pass, whose tangent is the HVP. The value pass is cached (keyed on exact
/// equality of θ, the batch and the weights), so the repeated HVPs of a CG or Neumann solve
/// at a fixed point pay only the tangent pass: about two GEMMs per GEMM of the gradient.
/// The cache makes a learner object unsafe to share between threads.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "bilevel/core/learner.hpp"
#include "bilevel/learners/activation.hpp"
#include "bilevel/learners/classification_batch.hpp"
#include "bilevel/learners/sample_weighting.hpp"

namespace bilevel::learners {

enum class loss_kind { cross_entropy, squared_error };

template <nn_tensor_policy P, class Weighting = unweighted>
class mlp {
 public:
  using policy = P;
  using batch_type = classification_batch<P>;
  using vector = vector_t<P>;
  using matrix = typename P::matrix;
  using scalar = scalar_t<P>;

  /// widths = {inputs, hidden..., outputs}; at least one layer.
  explicit mlp(std::vector<std::size_t> widths, activation hidden = activation::relu,
               loss_kind loss = loss_kind::cross_entropy, Weighting weighting = {})
      : widths_(std::move(widths)), hidden_(hidden), loss_(loss), weighting_(std::move(weighting)) {
    if (widths_.size() < 2) throw std::invalid_argument("bilevel::learners::mlp: need at least input and output widths");
    for (std::size_t w : widths_)
      if (w == 0) throw std::invalid_argument("bilevel::learners::mlp: a layer width is 0");
    std::size_t offset = 0;
    for (std::size_t l = 0; l + 1 < widths_.size(); ++l) {
      weight_offset_.push_back(offset);
      offset += widths_[l] * widths_[l + 1];
      bias_offset_.push_back(offset);
      offset += widths_[l + 1];
    }
    num_parameters_ = offset;
  }

  [[nodiscard]] std::size_t num_parameters() const { return num_parameters_; }
  [[nodiscard]] std::size_t num_inputs() const { return Weighting::num_inputs; }
  [[nodiscard]] std::size_t input_size(std::size_t s) const { return weighting_.input_size(s); }
  [[nodiscard]] std::size_t layers() const { return widths_.size() - 1; }
  [[nodiscard]] const std::vector<std::size_t>& widths() const { return widths_; }

  /// Seeded initialisation: He-uniform for ReLU, Glorot-uniform otherwise; biases zero.
  [[nodiscard]] vector initial_parameters(std::uint64_t seed) const {
    std::mt19937_64 gen(seed);
    std::vector<scalar> host(num_parameters_, scalar(0));
    for (std::size_t l = 0; l < layers(); ++l) {
      const double fan_in = double(widths_[l]), fan_out = double(widths_[l + 1]);
      const double bound = hidden_ == activation::relu ? std::sqrt(6.0 / fan_in) : std::sqrt(6.0 / (fan_in + fan_out));
      std::uniform_real_distribution<double> u(-bound, bound);
      for (std::size_t i = 0; i < widths_[l] * widths_[l + 1]; ++i) host[weight_offset_[l] + i] = scalar(u(gen));
    }
    return P::from_host(host);
  }

  /// What an upper level may read of the network on a batch: logits, the penultimate
  /// features (the input of the last layer) and each sample's unweighted loss.
  struct outputs {
    matrix logits, features;
    vector losses;
  };
  [[nodiscard]] outputs forward(const vector& theta, const batch_type& b) const {
    const auto& c = value_pass(theta, b, ones(b.size()));
    return {c.z.back(), c.a.back(), c.losses};
  }

  double loss(const vector& theta, input_list<P> in, const batch_type& b) const {
    const auto& c = value_pass(theta, b, weighting_.gather(in, b));
    return P::dot(c.weights, c.losses) / double(b.size());
  }

  double gradient(const vector& theta, input_list<P> in, const batch_type& b, vector& out) const {
    const auto& c = value_pass(theta, b, weighting_.gather(in, b));
    if (!c.backward_done) backward(cache_, c.weights, true, out);
    else P::copy(c.gradient, out);
    return P::dot(c.weights, c.losses) / double(b.size());
  }

  /// ∂L/∂w = scatter(ℓ / B).
  void input_gradient(const vector& theta, input_list<P> in, const batch_type& b, std::size_t, vector& out) const
    requires(Weighting::num_inputs > 0)
  {
    const auto& c = value_pass(theta, b, weighting_.gather(in, b));
    vector r = c.losses;
    P::scale(r, scalar(1.0 / double(b.size())));
    out = weighting_.scatter(in, b, r);
  }

  /// (∂²L/∂θ²) v by the R-operator (see the file comment).
  void hvp(const vector& theta, input_list<P> in, const batch_type& b, const vector& v, vector& out) const {
    const auto& c = value_pass(theta, b, weighting_.gather(in, b));
    if (!c.backward_done) {
      vector g;
      backward(cache_, c.weights, true, g);
    }
    tangent t;
    tangent_forward(v, t);
    tangent_backward(v, t, out);
  }

  /// (∂²L/∂w∂θ) v = scatter(ℓ̇(v) / B), ℓ̇ the directional derivative of each sample's loss.
  void mixed_vjp(const vector& theta, input_list<P> in, const batch_type& b, std::size_t, const vector& v,
                 vector& out) const
    requires(Weighting::num_inputs > 0)
  {
    value_pass(theta, b, weighting_.gather(in, b));
    tangent t;
    tangent_forward(v, t);
    vector ldot;
    P::row_dots(cache_.d, t.z.back(), ldot);
    P::scale(ldot, scalar(1.0 / double(b.size())));
    out = weighting_.scatter(in, b, ldot);
  }

  /// (∂²L/∂θ∂w) u: the gradient with the weights replaced by gather(u) (L is linear in them).
  void mixed_jvp(const vector& theta, input_list<P> in, const batch_type& b, std::size_t, const vector& u,
                 vector& out) const
    requires(Weighting::num_inputs > 0)
  {
    value_pass(theta, b, weighting_.gather(in, b));
    std::vector<const vector*> moved(in.begin(), in.end());
    moved[0] = &u;
    backward(cache_, weighting_.gather(input_list<P>(moved), b), false, out);
  }

 private:
  struct value_cache {
    bool valid = false, backward_done = false;
    vector theta, weights, losses, gradient;
    matrix x, targets;
    std::vector<matrix> w;      // W_l
    std::vector<vector> bias;   // b_l
    std::vector<matrix> z, a;   // Z_l; A_l (a[0] = x)
    matrix d;                   // ∂ℓ_i/∂z_i, row i
    vector target_mass;         // Σ_k t_ik (1 for distributions)
    std::vector<matrix> g, ga;  // ∂L/∂Z_l and ∂L/∂A_l at the cached weights
  };
  struct tangent {
    std::vector<matrix> z, a;  // Ż_l, Ȧ_l (a[0] unused: the data is constant)
  };

  static vector ones(std::size_t n) {
    vector o = P::zeros(n);
    P::fill(o, scalar(1));
    return o;
  }

  void check_batch(const batch_type& b) const {
    if (P::cols(b.x) != widths_.front())
      throw std::invalid_argument("bilevel::learners::mlp: batch has " + std::to_string(P::cols(b.x)) +
                                  " features, the network takes " + std::to_string(widths_.front()));
    if (P::rows(b.targets) != P::rows(b.x) || P::cols(b.targets) != widths_.back())
      throw std::invalid_argument("bilevel::learners::mlp: targets are " + std::to_string(P::rows(b.targets)) + "x" +
                                  std::to_string(P::cols(b.targets)) + ", expected " + std::to_string(P::rows(b.x)) +
                                  "x" + std::to_string(widths_.back()));
    if (P::rows(b.x) == 0) throw std::invalid_argument("bilevel::learners::mlp: empty batch");
  }

  /// The forward pass and loss head at (θ, batch, weights), reused when all three are
  /// unchanged since the last call.
  const value_cache& value_pass(const vector& theta, const batch_type& b, const vector& weights) const {
    value_cache& c = cache_;
    if (c.valid && P::equal(c.theta, theta) && P::equal(c.x, b.x) && P::equal(c.targets, b.targets)) {
      if (!P::equal(c.weights, weights)) {
        c.weights = weights;
        c.backward_done = false;
      }
      return c;
    }
    if (P::size(theta) != num_parameters_)
      throw std::invalid_argument("bilevel::learners::mlp: parameters have " + std::to_string(P::size(theta)) +
                                  " elements, the network has " + std::to_string(num_parameters_));
    check_batch(b);
    c.valid = false;
    c.backward_done = false;
    c.theta = theta;
    c.x = b.x;
    c.targets = b.targets;
    c.weights = weights;
    const std::size_t L = layers();
    c.w.resize(L);
    c.bias.resize(L);
    c.z.resize(L);
    c.a.resize(L);
    c.a[0] = b.x;
    for (std::size_t l = 0; l < L; ++l) {
      P::unflatten(theta, weight_offset_[l], widths_[l], widths_[l + 1], c.w[l]);
      P::segment(theta, bias_offset_[l], widths_[l + 1], c.bias[l]);
      P::gemm(scalar(1), c.a[l], false, c.w[l], false, scalar(0), c.z[l]);
      P::add_row(c.z[l], c.bias[l]);
      if (l + 1 < L) P::transform(c.z[l], c.a[l + 1], activation_value{hidden_});
    }
    const matrix& logits = c.z.back();
    vector ones_c = ones(widths_.back());
    P::gemv(scalar(1), b.targets, false, ones_c, scalar(0), c.target_mass);
    if (loss_ == loss_kind::cross_entropy) {
      vector lse, tz;
      P::row_logsumexp(logits, lse);
      P::row_dots(b.targets, logits, tz);
      P::hadamard(c.target_mass, lse, c.losses);
      P::axpy(scalar(-1), tz, c.losses);  // ℓ = (Σt)·lse − ⟨t, z⟩
      P::row_softmax(logits, c.d);
      P::scale_rows(c.d, c.target_mass);
      P::axpy(scalar(-1), b.targets, c.d);  // ∂ℓ/∂z = (Σt)·p − t
    } else {
      c.d = logits;
      P::axpy(scalar(-1), b.targets, c.d);  // ∂ℓ/∂z = z − t
      P::row_dots(c.d, c.d, c.losses);
      P::scale(c.losses, scalar(0.5));
    }
    c.valid = true;
    return c;
  }

  /// Backpropagation of L = (1/B) Σ c_i ℓ_i for the given c. With `store`, keeps the
  /// per-layer adjoints (the HVP's tangent pass needs them) and the gradient in the cache.
  void backward(value_cache& c, const vector& weights, bool store, vector& out) const {
    const std::size_t L = layers();
    const double inv_b = 1.0 / double(P::rows(c.x));
    P::resize(out, num_parameters_);  // every segment is written below
    matrix g = c.d, ga;
    vector scaled = weights, db;
    P::scale(scaled, scalar(inv_b));
    P::scale_rows(g, scaled);
    if (store) {
      c.g.assign(L, {});
      c.ga.assign(L, {});
    }
    for (std::size_t l = L; l-- > 0;) {
      P::gemm_into_segment(scalar(1), c.a[l], true, g, false, scalar(0), out, weight_offset_[l]);
      P::column_sums(g, db);
      P::set_segment(db, out, bias_offset_[l]);
      if (store) c.g[l] = g;
      if (l == 0) break;
      P::gemm(scalar(1), g, false, c.w[l], true, scalar(0), ga);
      if (store) c.ga[l] = ga;
      matrix slope;
      P::transform(c.z[l - 1], slope, activation_slope{hidden_});
      P::hadamard(ga, slope, g);
    }
    if (store) {
      c.gradient = out;
      c.backward_done = true;
    }
  }

  /// Ż_l and Ȧ_l along direction v (θ-space).
  void tangent_forward(const vector& v, tangent& t) const {
    const std::size_t L = layers();
    const value_cache& c = cache_;
    t.z.assign(L, {});
    t.a.assign(L, {});
    matrix vw, tmp;
    vector vb;
    for (std::size_t l = 0; l < L; ++l) {
      P::unflatten(v, weight_offset_[l], widths_[l], widths_[l + 1], vw);
      P::segment(v, bias_offset_[l], widths_[l + 1], vb);
      P::gemm(scalar(1), c.a[l], false, vw, false, scalar(0), t.z[l]);
      if (l > 0) {
        P::gemm(scalar(1), t.a[l], false, c.w[l], false, scalar(0), tmp);
        P::axpy(scalar(1), tmp, t.z[l]);
      }
      P::add_row(t.z[l], vb);
      if (l + 1 < L) {
        P::transform(c.z[l], tmp, activation_slope{hidden_});
        P::hadamard(tmp, t.z[l], t.a[l + 1]);
      }
    }
  }

  /// The tangent of the backward pass: the HVP.
  void tangent_backward(const vector& v, const tangent& t, vector& out) const {
    const std::size_t L = layers();
    const value_cache& c = cache_;
    const double inv_b = 1.0 / double(P::rows(c.x));
    P::resize(out, num_parameters_);  // every segment is written below
    // Ḋ: CE: (Σt)·ṗ with ṗ = p ⊙ ż − p·⟨p, ż⟩; squared error: ż.
    matrix gdot;
    if (loss_ == loss_kind::cross_entropy) {
      matrix p, pz;
      P::row_softmax(c.z.back(), p);
      P::hadamard(p, t.z.back(), gdot);
      vector pdz;
      P::row_dots(p, t.z.back(), pdz);
      pz = p;
      P::scale_rows(pz, pdz);
      P::axpy(scalar(-1), pz, gdot);
      P::scale_rows(gdot, c.target_mass);
    } else {
      gdot = t.z.back();
    }
    vector scaled = c.weights, db;
    P::scale(scaled, scalar(inv_b));
    P::scale_rows(gdot, scaled);
    matrix tmp, vw, gadot, slope, curv;
    for (std::size_t l = L; l-- > 0;) {
      P::gemm_into_segment(scalar(1), c.a[l], true, gdot, false, scalar(0), out, weight_offset_[l]);
      if (l > 0) P::gemm_into_segment(scalar(1), t.a[l], true, c.g[l], false, scalar(1), out, weight_offset_[l]);
      P::column_sums(gdot, db);
      P::set_segment(db, out, bias_offset_[l]);
      if (l == 0) break;
      P::unflatten(v, weight_offset_[l], widths_[l], widths_[l + 1], vw);
      P::gemm(scalar(1), gdot, false, c.w[l], true, scalar(0), gadot);
      P::gemm(scalar(1), c.g[l], false, vw, true, scalar(0), tmp);
      P::axpy(scalar(1), tmp, gadot);
      P::transform(c.z[l - 1], slope, activation_slope{hidden_});
      P::hadamard(gadot, slope, gdot);
      if (hidden_ == activation::tanh || hidden_ == activation::sigmoid) {
        P::transform(c.z[l - 1], curv, activation_curvature{hidden_});
        P::hadamard(c.ga[l], curv, tmp);
        P::hadamard(tmp, t.z[l - 1], curv);
        P::axpy(scalar(1), curv, gdot);
      }
    }
  }

  std::vector<std::size_t> widths_;
  activation hidden_;
  loss_kind loss_;
  Weighting weighting_;
  std::vector<std::size_t> weight_offset_, bias_offset_;
  std::size_t num_parameters_ = 0;
  mutable value_cache cache_;
};

}  // namespace bilevel::learners
