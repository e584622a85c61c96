// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// A feed-forward network as a learner with exact gradient, Hessian-vector product and mixed
/// products, generic over the tensor policy. Built either from layer specs (dense,
/// activation, 2-D convolution, pooling, flatten, mixed operations: the chain builder for
/// the simple case) or from any layers of the open layer concept (layers/layer_concept.hpp):
/// chains, graphs (residual blocks, DARTS cells), batch normalization, a user's own layers.
///
/// Modes and state. Losses, gradients and every product are taken in training mode (batch
/// statistics, dropout on), as the strategies differentiate what training computes;
/// `forward(..., pass_mode::evaluation)` gives the evaluation-mode outputs (running
/// statistics, dropout off). Layers with state (batch normalization's running statistics)
/// change it only in `on_real_step`, which the solver calls once per real optimizer step of
/// the level, with the point and batch of that step; look-ahead steps, HVPs and finite
/// differences never do. The same call advances the step counter that seeds dropout masks,
/// so every evaluation between two real steps (a virtual step, its HVPs and its mixed
/// products) sees one mask.
///
/// Parameters live in one flat vector, layer after layer. The loss is
/// L = (1/B) Σ_i c_i ℓ_i with ℓ_i cross-entropy against the target row (one-hot or soft) or
/// half the squared error, and c_i per-sample weights read from an upper level through the
/// Weighting policy (sample_weighting.hpp).
///
/// Second order by Pearlmutter's R-operator, layer by layer (layers/layer.hpp): a tangent
/// pass pushes a direction v through the value pass and then through the backward pass,
/// whose tangent is the HVP. The value and backward passes are cached, keyed on exact
/// equality of θ, the batch and the weights, so the repeated HVPs of a CG or Neumann solve at
/// a fixed point pay only the tangent passes. The cache (and the scratch buffers the passes
/// reuse from call to call) makes a network object unsafe to share between threads.
///
/// Why the key compares contents rather than the identity of θ: the learner sees θ as a
/// `const vector&` that its owner may change in place between calls (an optimizer steps
/// θ where it is), and equal values reach it through different objects (a look-ahead step's
/// copy of θ, then the level's own θ: the real step reuses the virtual step's value pass).
/// An address, or an address and a size, would serve stale values after an in-place step;
/// nothing outside the vector's owner can count its modifications. So the key is the cache's
/// own copy of θ, the targets and the inputs, compared element by element (the policy's
/// equal(), a vectorised pass that stops at the first block that differs), and the weights
/// the inputs give, gathered again and compared. On a device each comparison is a wait for
/// the queue, so a policy whose arrays carry content stamps (core/content_stamps.hpp: the
/// owner's writes do renew them, a copy keeps them) is keyed by stamps instead: θ, α, the
/// targets and the inputs by theirs, the weights by the value pass they were gathered on, the
/// inputs' stamps and the samples' ids. Equal stamps are equal values; different stamps with
/// equal values only cost a recomputation.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "bilevel/core/content_stamps.hpp"
#include "bilevel/core/device_loss.hpp"
#include "bilevel/core/entry_scalars.hpp"
#include "bilevel/learners/classification_batch.hpp"
#include "bilevel/learners/layers/any_layer.hpp"
#include "bilevel/learners/layers/activation_layer.hpp"
#include "bilevel/learners/layers/conv2d.hpp"
#include "bilevel/learners/layers/dense.hpp"
#include "bilevel/learners/layers/flatten.hpp"
#include "bilevel/learners/layers/mixed.hpp"
#include "bilevel/learners/layers/pool2d.hpp"
#include "bilevel/learners/sample_weighting.hpp"

namespace bilevel::learners {

enum class loss_kind { cross_entropy, squared_error };

/// How to build one layer; the network works out shapes and offsets.
namespace layer {
struct dense { std::size_t units; };
struct act { activation kind; };
struct conv { std::size_t channels, kernel, stride = 1, padding = 0; };
struct max_pool { std::size_t kernel, stride = 0; };  ///< stride 0: the kernel size
struct avg_pool { std::size_t kernel, stride = 0; };
struct flatten {};
using basic_spec = std::variant<dense, act, conv, max_pool, avg_pool, flatten>;
/// One candidate of a mixed operation: a layer sequence (empty: the identity), or zero.
struct candidate {
  std::vector<basic_spec> layers;
  bool zero = false;
};
inline candidate skip() { return {}; }
inline candidate zero_op() { return {{}, true}; }
/// A mixed operation over candidates; its softmax weights are a segment of the
/// architecture vector, which the network reads as its last input.
struct mixed {
  std::vector<candidate> candidates;
};
using spec = std::variant<dense, act, conv, max_pool, avg_pool, flatten, mixed>;
}  // namespace layer

template <nn_tensor_policy P, class Weighting = unweighted>
class sequential {
 public:
  using policy = P;
  using batch_type = classification_batch<P>;
  using vector = vector_t<P>;
  using matrix = typename P::matrix;
  using scalar = scalar_t<P>;
  using layer_variant = std::variant<dense_layer<P>, activation_layer<P>, conv2d_layer<P>, pool2d_layer<P>,
                                     flatten_layer<P>, mixed_layer<P>, any_layer<P>>;

  /// `input`: one sample's geometry (e.g. {28, 28, 1}; {1, 1, n} for flat features).
  sequential(geometry input, const std::vector<layer::spec>& specs, loss_kind loss = loss_kind::cross_entropy,
             Weighting weighting = {})
      : input_(input), loss_(loss), weighting_(std::move(weighting)) {
    if (specs.empty()) throw std::invalid_argument("bilevel::learners::sequential: no layers");
    geometry g = input;
    std::size_t offset = 0;
    for (const auto& s : specs) {
      features_ = g;  // the input of the layer built next: at the end, the last layer's
      layer_variant l = std::visit([&](const auto& sp) { return make_any(g, sp, offset); }, s);
      std::visit([&](const auto& built) {
        if constexpr (!std::is_same_v<std::decay_t<decltype(built)>, any_layer<P>>) {  // specs build no boxed layers
          g = built.out;
          offset += built.num_parameters();
        }
      }, l);
      layers_.push_back(std::move(l));
    }
    if (g.pixels() != 1)
      throw std::invalid_argument("bilevel::learners::sequential: the last layer outputs " + std::to_string(g.height) +
                                  "x" + std::to_string(g.width) + "x" + std::to_string(g.channels) +
                                  "; end with flatten and dense");
    classes_ = g.channels;
    num_parameters_ = offset;
  }

  /// A network of layers of the open layer concept, one after another (a single graph or
  /// chain is one layer); the first takes `input`, the last gives 1 × 1 × classes. The
  /// architecture vector, when the layers read one (mixed operations), is the network's last
  /// input, its size the layers' largest arch_size().
  sequential(geometry input, std::vector<any_layer<P>> layers, loss_kind loss = loss_kind::cross_entropy,
             Weighting weighting = {})
      : input_(input), loss_(loss), weighting_(std::move(weighting)) {
    if (layers.empty()) throw std::invalid_argument("bilevel::learners::sequential: no layers");
    geometry g = input;
    std::size_t offset = 0;
    for (std::size_t l = 0; l < layers.size(); ++l) {
      if (!(layers[l].input_shape() == g))
        throw std::invalid_argument("bilevel::learners::sequential: layer " + std::to_string(l) + " takes " +
                                    shape_text(layers[l].input_shape()) + " but receives " + shape_text(g));
      features_ = g;
      g = layers[l].output_shape();
      box_offsets_.resize(l + 1, 0);
      box_offsets_[l] = offset;
      offset += layers[l].num_parameters();
      arch_size_ = std::max(arch_size_, layers[l].arch_size());
      layers_.push_back(std::move(layers[l]));
    }
    if (g.pixels() != 1)
      throw std::invalid_argument("bilevel::learners::sequential: the last layer outputs " + shape_text(g) +
                                  "; end with a global pooling or a flatten and a linear layer");
    classes_ = g.channels;
    num_parameters_ = offset;
  }

  [[nodiscard]] std::size_t num_parameters() const { return num_parameters_; }
  /// The weighting's inputs, then the architecture vector when there are mixed operations.
  [[nodiscard]] std::size_t num_inputs() const { return Weighting::num_inputs + (arch_size_ > 0 ? 1 : 0); }
  [[nodiscard]] std::size_t input_size(std::size_t s) const {
    return s == arch_slot() ? arch_size_ : weighting_.input_size(s);
  }
  /// The input slot of the architecture vector (one entry per candidate of every mixed op).
  [[nodiscard]] std::size_t arch_slot() const { return Weighting::num_inputs; }
  [[nodiscard]] std::size_t arch_size() const { return arch_size_; }
  [[nodiscard]] std::size_t classes() const { return classes_; }
  /// One sample's shape as the network takes it (its features() are a batch row's columns).
  [[nodiscard]] geometry input_shape() const { return input_; }
  /// One sample's shape at the input of the last layer: the features a weighting reads
  /// (sample_signals::features, outputs::features), e.g. {1, 1, 128} for the MLP
  /// 784-256-128-10 or {1, 1, 64} for a CIFAR ResNet after its global pooling. With more than
  /// one pixel (a last layer that is a convolution, or one graph that holds the whole network),
  /// those features come as (batch · pixels) × channels rows, not one row per sample.
  [[nodiscard]] geometry feature_shape() const { return features_; }
  [[nodiscard]] const std::vector<layer_variant>& layer_list() const { return layers_; }
  /// How this network weights its samples (e.g. to read the learned weights of a data set).
  [[nodiscard]] const Weighting& weighting() const { return weighting_; }

  /// Seeded initialisation: He-uniform for weights followed by a ReLU, Glorot-uniform
  /// otherwise; biases zero.
  [[nodiscard]] vector initial_parameters(std::uint64_t seed) const {
    std::mt19937_64 gen(seed);
    std::vector<scalar> host(num_parameters_, scalar(0));
    initialize(layers_, host, gen);
    return P::from_host(host);
  }

  /// What an upper level may read of the network on a batch: logits, the features entering
  /// the last layer, and each sample's unweighted loss.
  struct outputs {
    matrix logits, features;
    vector losses;
  };
  /// Training mode (batch statistics) unless told otherwise; evaluation reads running
  /// statistics and turns dropout off.
  [[nodiscard]] outputs forward(const vector& theta, const batch_type& b, input_list<P> in = {},
                                pass_mode mode = pass_mode::training) const {
    const auto& c = value_pass(theta, b, architecture(in), mode);
    return {c.acts.back(), c.acts[c.acts.size() - 2], c.losses};
  }

  /// The real optimizer step at (θ, inputs, batch) has been taken: layers fold what the value
  /// pass there saw into their state (batch normalization's running statistics), and the
  /// dropout step counter advances. The solver calls this once per real step; nothing else
  /// should.
  void on_real_step(const vector& theta, input_list<P> in, const batch_type& b) {
    if (has_state_layers()) {
      const auto& c = value_pass(theta, b, architecture(in), pass_mode::training);
      for (std::size_t l = 0; l < layers_.size(); ++l)
        if (auto* box = std::get_if<any_layer<P>>(&layers_[l]))
          box->commit(context(l, P::rows(c.targets), pass_mode::training, nullptr), c.layers[l].boxed);
    }
    ++step_;
    cache_.valid = false;  // dropout masks depend on the step
    ++generation_;
  }
  /// Whether the backward pass keeps every inner adjoint for later second-order products.
  /// true (the default): an HVP or mixed product at the point of a gradient costs only the
  /// two tangent passes, as CG and Neumann solves want. false: each adjoint is released once
  /// used, so a backward pass holds a few adjoints at a time instead of one per activation
  /// (for strategies with no exact second-order product: first order, finite differences);
  /// an HVP or mixed product then re-runs the backward pass, keeping them, before its
  /// tangent passes. The numbers are the same either way.
  void keep_adjoints(bool keep) { keep_adjoints_ = keep; }
  [[nodiscard]] bool keeps_adjoints() const { return keep_adjoints_; }

  /// Real steps taken so far (the dropout masks' counter).
  [[nodiscard]] std::uint64_t real_steps() const { return step_; }

  /// The layers' state (running statistics) and the step counter, for checkpoints.
  [[nodiscard]] std::vector<double> state() const {
    std::vector<double> s{double(step_)};
    for (const auto& l : layers_)
      if (const auto* box = std::get_if<any_layer<P>>(&l)) {
        const auto ls = box->state();
        s.insert(s.end(), ls.begin(), ls.end());
      }
    return s;
  }
  void restore(std::span<const double> s) {
    if (s.empty()) throw std::invalid_argument("bilevel::learners::sequential: an empty state");
    std::size_t at = 1;
    for (auto& l : layers_)
      if (auto* box = std::get_if<any_layer<P>>(&l)) {
        const std::size_t n = box->state().size();
        if (at + n > s.size())
          throw std::invalid_argument("bilevel::learners::sequential: " + std::to_string(s.size()) +
                                      " state values are too few for this network");
        box->restore(s.subspan(at, n));
        at += n;
      }
    if (at != s.size())
      throw std::invalid_argument("bilevel::learners::sequential: " + std::to_string(s.size()) +
                                  " state values, this network keeps " + std::to_string(at));
    step_ = std::uint64_t(s[0]);
    cache_.valid = false;
    ++generation_;
  }

  double loss(const vector& theta, input_list<P> in, const batch_type& b) const {
    const auto& c = weighted_pass(theta, in, b);
    return P::dot(c.weights, c.losses) / double(b.size());
  }

  double gradient(const vector& theta, input_list<P> in, const batch_type& b, vector& out) const {
    const auto& c = backward_pass(theta, in, b);
    P::copy(c.gradient, out);  // the cache keeps its own: a gradient at the same point is served from it
    return P::dot(c.weights, c.losses) / double(b.size());
  }
  /// The same two, leaving the loss on the policy's storage (core/device_loss.hpp): added into
  /// the slot, or not computed when the slot is empty.
  void loss(const vector& theta, input_list<P> in, const batch_type& b, loss_slot<P> slot) const {
    const auto& c = weighted_pass(theta, in, b);
    add_mean_loss(c, slot);
  }
  void gradient(const vector& theta, input_list<P> in, const batch_type& b, vector& out, loss_slot<P> slot) const {
    const auto& c = backward_pass(theta, in, b);
    P::copy(c.gradient, out);
    add_mean_loss(c, slot);
  }

  /// ∂L/∂w = scatter(ℓ / B) for the weighting's input; ∂L/∂α from the backward pass for the
  /// architecture.
  void input_gradient(const vector& theta, input_list<P> in, const batch_type& b, std::size_t slot,
                      vector& out) const {
    check_slot(slot);
    if (slot == arch_slot()) {
      out = backward_pass(theta, in, b).arch_gradient;
      return;
    }
    const auto& c = weighted_pass(theta, in, b);
    vector r = c.losses;
    P::scale(r, scalar(1.0 / double(b.size())));
    out = weighting_.scatter(in, b, signals(c), r, slot);
  }

  /// (∂²L/∂θ²) v by the R-operator.
  void hvp(const vector& theta, input_list<P> in, const batch_type& b, const vector& v, vector& out) const {
    backward_pass(theta, in, b, true);
    const auto& dots = tangent_forward(v, nullptr);
    tangent_backward(v, nullptr, dots, out, nullptr);
  }

  /// (∂²L/∂in∂θ) v: for sample weights scatter(ℓ̇(v) / B), ℓ̇ the directional derivative of
  /// each sample's loss; for the architecture the tangent of ∂L/∂α along v.
  void mixed_vjp(const vector& theta, input_list<P> in, const batch_type& b, std::size_t slot, const vector& v,
                 vector& out) const {
    check_slot(slot);
    backward_pass(theta, in, b, slot == arch_slot());  // the weights' slot needs only the tangent forward
    const auto& dots = tangent_forward(v, nullptr);
    if (slot == arch_slot()) {
      vector hv;
      out = P::zeros(arch_size_);
      tangent_backward(v, nullptr, dots, hv, &out);
      return;
    }
    vector ldot;
    P::row_dots(cache_.d, dots.back(), ldot);
    P::scale(ldot, scalar(1.0 / double(b.size())));
    out = weighting_.scatter(in, b, signals(cache_), ldot, slot);
  }

  /// (∂²L/∂θ∂in) u: for the weighting's input the gradient with the weights replaced by their
  /// tangent along u (L is linear in the weights); for the architecture the tangent passes
  /// along u with v = 0.
  void mixed_jvp(const vector& theta, input_list<P> in, const batch_type& b, std::size_t slot, const vector& u,
                 vector& out) const {
    check_slot(slot);
    if (slot == arch_slot()) {
      backward_pass(theta, in, b, true);
      const vector zero = P::zeros(num_parameters_);
      const auto& dots = tangent_forward(zero, &u);
      tangent_backward(zero, &u, dots, out, nullptr);
      return;
    }
    const auto& c = weighted_pass(theta, in, b);
    vector ignored;
    backward(weighting_.gather_tangent(in, b, signals(c), u, slot), false, out, ignored);
  }

 private:
  struct value_cache;
  /// The detached per-sample signals a weighting may read: losses, logits, last features.
  static sample_signals<P> signals(const value_cache& c) {
    return {c.losses, &c.acts.back(), &c.acts[c.acts.size() - 2]};
  }

  struct value_cache {
    bool valid = false, backward_done = false;
    bool adjoints_kept = false;          // the backward pass kept every adjoint, inner ones included
    pass_mode mode = pass_mode::training;
    vector theta, alpha, weights, losses, gradient, arch_gradient, target_mass;
    matrix targets;
    // Stamps of θ, α, the targets and the inputs when they were cached (core/content_stamps.hpp).
    std::uint64_t theta_stamp = 0, alpha_stamp = 0, targets_stamp = 0, x_stamp = 0;
    // With stamps: what the weights were gathered from (the value pass, the inputs, the ids).
    bool weights_keyed = false;
    std::size_t weights_generation = 0;
    std::vector<std::uint64_t> weights_inputs;
    std::vector<std::size_t> weights_ids;
    std::vector<matrix> acts;            // acts[0] = input as (B·pixels) × channels, acts[l+1] = layer l's output
    std::vector<layer_cache<P>> layers;
    matrix d;                            // ∂ℓ_i/∂z_i, row i
    std::vector<matrix> g;               // g[l] = ∂L/∂acts[l+1] at the cached weights
  };
  /// Buffers the passes overwrite on every call, kept so that a step does not allocate (and
  /// fault in) its batch-sized temporaries afresh; nothing in them outlives a call.
  struct scratch_buffers {
    std::vector<matrix> g;     // backward without storing: two adjoints, used in turn
    std::vector<matrix> dots;  // tangent pass along an architecture direction u
    matrix g_dot, g_in_dot, p, pz;
    vector scaled, pdz;
  };

  template <class Spec>
  layer_variant make_any(const geometry& g, const Spec& s, std::size_t offset) {
    if constexpr (std::is_same_v<Spec, layer::mixed>) {
      std::vector<typename mixed_layer<P>::candidate> cands;
      std::size_t at = offset;
      for (const auto& c : s.candidates) {
        typename mixed_layer<P>::candidate built{{}, c.zero};
        geometry cg = g;
        for (const auto& sp : c.layers) {
          auto l = std::visit([&](const auto& x) { return basic(cg, x, at); }, sp);
          std::visit([&](const auto& x) {
            cg = x.out;
            at += x.num_parameters();
          }, l);
          built.layers.push_back(std::move(l));
        }
        cands.push_back(std::move(built));
      }
      mixed_layer<P> m(g, std::move(cands), arch_size_);
      arch_size_ += m.arch_size();
      return m;
    } else {
      return std::visit([](auto&& l) -> layer_variant { return std::move(l); }, basic(g, s, offset));
    }
  }
  static basic_layer<P> basic(const geometry& g, const layer::dense& s, std::size_t offset) {
    return dense_layer<P>(g, s.units, offset);
  }
  static basic_layer<P> basic(const geometry& g, const layer::act& s, std::size_t) { return activation_layer<P>(g, s.kind); }
  static basic_layer<P> basic(const geometry& g, const layer::conv& s, std::size_t offset) {
    return conv2d_layer<P>(g, s.channels, s.kernel, s.stride, s.padding, offset);
  }
  static basic_layer<P> basic(const geometry& g, const layer::max_pool& s, std::size_t) {
    return pool2d_layer<P>(g, pooling::max, s.kernel, s.stride ? s.stride : s.kernel);
  }
  static basic_layer<P> basic(const geometry& g, const layer::avg_pool& s, std::size_t) {
    return pool2d_layer<P>(g, pooling::average, s.kernel, s.stride ? s.stride : s.kernel);
  }
  static basic_layer<P> basic(const geometry& g, const layer::flatten&, std::size_t) { return flatten_layer<P>(g); }

  /// Initialises a layer list (the network's, or a mixed operation's candidates, recursively).
  template <class Layers>
  void initialize(const Layers& layers, std::vector<scalar>& host, std::mt19937_64& gen) const {
    for (std::size_t l = 0; l < layers.size(); ++l) {
      const bool relu_next = l + 1 < layers.size() && std::visit([](const auto& next) {
        if constexpr (std::is_same_v<std::decay_t<decltype(next)>, activation_layer<P>>) return next.kind == activation::relu;
        else return false;
      }, layers[l + 1]);
      std::visit([&](const auto& layer) {
        using T = std::decay_t<decltype(layer)>;
        if constexpr (std::is_same_v<T, any_layer<P>>)
          layer.initialize(std::span<scalar>(host).subspan(box_offsets_[l], layer.num_parameters()), gen);
        else if constexpr (std::is_same_v<T, dense_layer<P>> || std::is_same_v<T, conv2d_layer<P>>)
          layer.map.initialize(host, relu_next, gen);
        else if constexpr (std::is_same_v<T, mixed_layer<P>>)
          for (const auto& c : layer.candidates) initialize(c.layers, host, gen);
      }, layers[l]);
    }
  }

  /// The context of boxed layer l's passes.
  pass_context<P> context(std::size_t l, std::size_t batch, pass_mode mode, vector* arch_grad) const {
    const value_cache& c = cache_;
    return {c.theta, box_offsets_[l], batch, mode, step_, arch_size_ > 0 ? &c.alpha : nullptr, 0, arch_grad,
            keep_adjoints_};
  }
  tangent_context<P> tangent(std::size_t l, std::size_t batch, const vector& v, const vector* u,
                             vector* arch_dot) const {
    return {context(l, batch, pass_mode::training, nullptr), v, u, arch_dot};
  }
  /// Whether a layer keeps state that a real step updates (batch normalization's running
  /// statistics, alone or inside a chain, graph or mixed operation): only then does
  /// on_real_step need the value pass at the step's point. A network of layers without state
  /// (linear, convolution, pooling, dropout, whose masks follow the step counter) skips it.
  [[nodiscard]] bool has_state_layers() const {
    for (const auto& l : layers_)
      if (const auto* box = std::get_if<any_layer<P>>(&l); box && box->keeps_state()) return true;
    return false;
  }

  /// Whether layer l is a dense or convolution layer with a bias that an activation follows:
  /// its four passes then leave the bias to the activation's (activation_layer's
  /// forward_with_bias, backward_with_bias_gradient and their tangents), the same sums in one
  /// pass over the output instead of two.
  [[nodiscard]] bool bias_activation(std::size_t l) const {
    if (l + 1 >= layers_.size() || !std::holds_alternative<activation_layer<P>>(layers_[l + 1])) return false;
    if (const auto* dense = std::get_if<dense_layer<P>>(&layers_[l])) return dense->map.bias;
    if (const auto* conv = std::get_if<conv2d_layer<P>>(&layers_[l])) return conv->map.bias;
    return false;
  }
  /// f(layer l), a dense or convolution layer (bias_activation(l) holds).
  template <class F>
  void with_affine(std::size_t l, F&& f) const {
    if (const auto* dense = std::get_if<dense_layer<P>>(&layers_[l])) f(*dense);
    else f(std::get<conv2d_layer<P>>(layers_[l]));
  }

  static vector ones(std::size_t n) {
    vector o = P::zeros(n);
    P::fill(o, scalar(1));
    return o;
  }

  void check_slot(std::size_t slot) const {
    if (slot >= num_inputs())
      throw std::invalid_argument("bilevel::learners::sequential: input slot " + std::to_string(slot) +
                                  " but the network reads " + std::to_string(num_inputs()) + " input(s)");
  }

  /// The architecture vector among the inputs (null when the network has no mixed op).
  const vector* architecture(input_list<P> in) const {
    if (arch_size_ == 0) return nullptr;
    if (in.size() <= arch_slot())
      throw std::invalid_argument("bilevel::learners::sequential: the network has mixed operations and reads its "
                                  "architecture as input " + std::to_string(arch_slot()) + ", but only " +
                                  std::to_string(in.size()) + " input(s) were given");
    if (P::size(*in[arch_slot()]) != arch_size_)
      throw std::invalid_argument("bilevel::learners::sequential: the architecture input has " +
                                  std::to_string(P::size(*in[arch_slot()])) + " entries, the network's mixed "
                                  "operations have " + std::to_string(arch_size_) + " candidates");
    return in[arch_slot()];
  }

  void check_batch(const batch_type& b) const {
    if (P::rows(b.x) == 0) throw std::invalid_argument("bilevel::learners::sequential: empty batch");
    if (P::cols(b.x) != input_.features())
      throw std::invalid_argument("bilevel::learners::sequential: batch has " + std::to_string(P::cols(b.x)) +
                                  " features, the network takes " + std::to_string(input_.features()));
    if (P::rows(b.targets) != P::rows(b.x) || P::cols(b.targets) != classes_)
      throw std::invalid_argument("bilevel::learners::sequential: targets are " + std::to_string(P::rows(b.targets)) +
                                  "x" + std::to_string(P::cols(b.targets)) + ", expected " +
                                  std::to_string(P::rows(b.x)) + "x" + std::to_string(classes_));
  }

  /// The value pass and loss head at (θ, α, batch), reused when all are unchanged.
  const value_cache& value_pass(const vector& theta, const batch_type& b, const vector* alpha,
                                pass_mode mode = pass_mode::training) const {
    value_cache& c = cache_;
    const std::size_t batch = P::rows(b.x);
    // Cheapest first: the targets are small, and a moved θ differs in its first block.
    if (c.valid && c.mode == mode && P::rows(c.acts[0]) == batch * input_.pixels() &&
        unchanged<P>(c.targets, c.targets_stamp, b.targets) && unchanged<P>(c.theta, c.theta_stamp, theta) &&
        (!alpha || unchanged<P>(c.alpha, c.alpha_stamp, *alpha)) && same_input(c, b.x))
      return c;
    if (P::size(theta) != num_parameters_)
      throw std::invalid_argument("bilevel::learners::sequential: parameters have " + std::to_string(P::size(theta)) +
                                  " elements, the network has " + std::to_string(num_parameters_));
    check_batch(b);
    c.valid = false;
    c.backward_done = false;
    ++generation_;  // any kept tangent pass belongs to the old point
    c.theta = theta;
    c.theta_stamp = stamp_of<P>(theta);
    if (alpha) {
      c.alpha = *alpha;
      c.alpha_stamp = stamp_of<P>(*alpha);
    }
    c.mode = mode;
    c.targets = b.targets;
    c.targets_stamp = stamp_of<P>(b.targets);
    c.x_stamp = stamp_of<P>(b.x);
    P::resize(c.weights, 0);  // set by weighted_pass once the losses are known
    c.weights_keyed = false;
    c.acts.resize(layers_.size() + 1);
    c.layers.resize(layers_.size());
    P::reshape(b.x, batch * input_.pixels(), input_.channels, c.acts[0]);
    for (std::size_t l = 0; l < layers_.size(); ++l) {
      if (bias_activation(l)) {  // layer l's bias added in the pass of the activation after it
        const auto& act = std::get<activation_layer<P>>(layers_[l + 1]);
        with_affine(l, [&](const auto& layer) {
          layer.forward(theta, c.acts[l], batch, c.acts[l + 1], c.layers[l], false);
          act.forward_with_bias(theta, layer.map.bias_offset(), c.acts[l + 1], c.acts[l + 2]);
        });
        ++l;
        continue;
      }
      std::visit([&](const auto& layer) {
        using T = std::decay_t<decltype(layer)>;
        if constexpr (std::is_same_v<T, any_layer<P>>)
          layer.forward(context(l, batch, mode, nullptr), c.acts[l], c.acts[l + 1], c.layers[l].boxed);
        else if constexpr (std::is_same_v<T, mixed_layer<P>>)
          layer.forward(theta, *alpha, c.acts[l], batch, c.acts[l + 1], c.layers[l]);
        else
          layer.forward(theta, c.acts[l], batch, c.acts[l + 1], c.layers[l]);
      }, layers_[l]);
    }
    const matrix& logits = c.acts.back();
    if (loss_ == loss_kind::cross_entropy) {
      if constexpr (fused_softmax_cross_entropy<P>) {  // one pass: target mass, losses and ∂ℓ/∂z
        P::softmax_cross_entropy(logits, b.targets, c.target_mass, c.losses, c.d);
      } else {
        P::gemv(scalar(1), b.targets, false, ones(classes_), scalar(0), c.target_mass);
        vector lse, tz;
        P::row_logsumexp(logits, lse);
        P::row_dots(b.targets, logits, tz);
        P::hadamard(c.target_mass, lse, c.losses);
        P::axpy(scalar(-1), tz, c.losses);  // ℓ = (Σt)·lse − ⟨t, z⟩
        P::row_softmax(logits, c.d);
        P::scale_rows(c.d, c.target_mass);
        P::axpy(scalar(-1), b.targets, c.d);  // ∂ℓ/∂z = (Σt)·p − t
      }
    } else {
      P::gemv(scalar(1), b.targets, false, ones(classes_), scalar(0), c.target_mass);
      c.d = logits;
      P::axpy(scalar(-1), b.targets, c.d);  // ∂ℓ/∂z = z − t
      P::row_dots(c.d, c.d, c.losses);
      P::scale(c.losses, scalar(0.5));
    }
    c.valid = true;
    return c;
  }

  /// The value pass and the per-sample weights the inputs give (which may depend on the
  /// losses, as Meta-Weight-Net's do); a change of weights invalidates the backward pass.
  const value_cache& weighted_pass(const vector& theta, input_list<P> in, const batch_type& b) const {
    value_cache& c = cache_;
    value_pass(theta, b, architecture(in));
    if constexpr (content_stamps<P>) {
      // The weights are a function of the value pass, the inputs and the samples' ids: with
      // stamps, unchanged ones are known without gathering and comparing them.
      std::vector<std::uint64_t> inputs;
      for (const vector* v : in) inputs.push_back(P::content_stamp(*v));
      if (c.weights_keyed && c.weights_generation == generation_ && c.weights_inputs == inputs && c.weights_ids == b.ids)
        return c;
      c.weights = weighting_.gather(in, b, signals(c));
      c.weights_keyed = true;
      c.weights_generation = generation_;
      c.weights_inputs = std::move(inputs);
      c.weights_ids = b.ids;
      c.backward_done = false;
    } else {
      vector w = weighting_.gather(in, b, signals(c));
      if (!P::equal(c.weights, w)) {
        c.weights = std::move(w);
        c.backward_done = false;
      }
    }
    return c;
  }

  /// Value and backward passes at the inputs' weights, reused when cached; with
  /// `second_order`, with every adjoint kept for the tangent passes.
  const value_cache& backward_pass(const vector& theta, input_list<P> in, const batch_type& b,
                                   bool second_order = false) const {
    const auto& c = weighted_pass(theta, in, b);
    if (!c.backward_done || (second_order && !c.adjoints_kept))
      backward(c.weights, true, cache_.gradient, cache_.arch_gradient, keep_adjoints_ || second_order);
    return c;
  }

  /// slot += (1/B) Σ_i c_i ℓ_i, reduced where the data are (add_dot_into: no host read).
  void add_mean_loss(const value_cache& c, loss_slot<P> slot) const {
    if (!slot.wanted()) return;
    bilevel::detail::add_dot_into_entry<P>(c.weights, c.losses, *slot.values, slot.index,
                                           scalar(1.0 / double(P::size(c.losses))));
  }

  /// The batch's inputs equal the cached first activation (same elements, row-major). Flat
  /// samples (one pixel) keep the batch's shape there, so no reshaped copy is needed.
  bool same_input(const value_cache& c, const matrix& x) const {
    if constexpr (content_stamps<P>) return P::content_stamp(x) == c.x_stamp;
    const matrix& cached = c.acts[0];
    if (input_.pixels() == 1) return P::equal(cached, x);
    matrix reshaped;
    P::reshape(cached, P::rows(x), P::cols(x), reshaped);
    return P::equal(reshaped, x);
  }

  /// Backpropagation of L = (1/B) Σ c_i ℓ_i for the given c, writing ∂L/∂θ to out and ∂L/∂α
  /// to arch_grad. With `store` (out is then the cache's gradient) and `keep`, keeps every
  /// adjoint, each layer's output adjoint here and the inner ones in the layers' caches (the
  /// tangent passes need them); otherwise the adjoints go through two scratch buffers in
  /// turn and the layers release their inner ones. Layers overwrite the buffers they are
  /// given, so the buffers of the last call are reused as they are.
  void backward(const vector& weights, bool store, vector& out, vector& arch_grad, bool keep = false) const {
    value_cache& c = cache_;
    const std::size_t batch = P::rows(c.targets), L = layers_.size();
    keep = keep && store;
    if (store) c.backward_done = false;  // c.g is overwritten below: valid again only at the end
    c.adjoints_kept = false;  // the layers' inner adjoints are overwritten (or released) below
    P::resize(out, num_parameters_);  // every parameter segment is written below
    // Mixed operations add into ∂L/∂α; a network without them has none (no fill to ask for).
    if (arch_size_ > 0) arch_grad = P::zeros(arch_size_);
    else P::resize(arch_grad, 0);
    if (store && !keep) c.g.clear();
    std::vector<matrix>& gs = keep ? c.g : scratch_.g;
    gs.resize(keep ? L : 2);
    // adjoint(l) = ∂L/∂acts[l+1]: stored per layer, or alternating between the two scratch matrices.
    auto adjoint = [&](std::size_t l) -> matrix& { return keep ? gs[l] : gs[l % 2]; };
    matrix& top = adjoint(L - 1);
    if constexpr (fused_scaled_copies<P>) {
      P::scale_rows_into(c.d, weights, scalar(1.0 / double(batch)), top);
    } else {
      top = c.d;
      P::copy(weights, scratch_.scaled);
      P::scale(scratch_.scaled, scalar(1.0 / double(batch)));
      P::scale_rows(top, scratch_.scaled);
    }
    for (std::size_t l = L; l-- > 0;) {
      if (l > 0 && bias_activation(l - 1)) {  // the bias gradient of layer l - 1 summed in the activation's pass
        const auto& act = std::get<activation_layer<P>>(layers_[l]);
        with_affine(l - 1, [&](const auto& layer) {
          act.backward_with_bias_gradient(c.acts[l], adjoint(l), adjoint(l - 1), out, layer.map.bias_offset());
          matrix* g_in = l > 1 ? &adjoint(l - 2) : nullptr;
          layer.backward(c.theta, c.acts[l - 1], adjoint(l - 1), batch, c.layers[l - 1], g_in, out, false);
        });
        --l;
        continue;
      }
      matrix* g_in = l > 0 ? &adjoint(l - 1) : nullptr;
      std::visit([&](const auto& layer) {
        using T = std::decay_t<decltype(layer)>;
        if constexpr (std::is_same_v<T, any_layer<P>>) {
          pass_context<P> p = context(l, batch, pass_mode::training, &arch_grad);
          p.keep_adjoints = keep;
          layer.backward(p, c.acts[l], adjoint(l), c.layers[l].boxed, g_in, out);
        }
        else if constexpr (std::is_same_v<T, mixed_layer<P>>)
          layer.backward(c.theta, c.acts[l], adjoint(l), batch, c.layers[l], g_in, out, &arch_grad);
        else
          layer.backward(c.theta, c.acts[l], adjoint(l), batch, c.layers[l], g_in, out);
      }, layers_[l]);
    }
    if (store) c.backward_done = true;
    c.adjoints_kept = keep;
  }

  /// dots[l] = Ṙ(acts[l]) along (v, u) (dots[0] is the data's: zero, left empty). The last
  /// pass along a θ-direction is kept, so an HVP and a mixed product along the same v (the
  /// full second-order pass of a hypergradient step) push the tangent forward once. Returns
  /// the kept pass (u null) or a scratch one (u given), valid until the next tangent pass.
  const std::vector<matrix>& tangent_forward(const vector& v, const vector* u) const {
    value_cache& c = cache_;
    if (!u && last_tangent_.valid && last_tangent_.generation == generation_ &&
        unchanged<P>(last_tangent_.v, last_tangent_.v_stamp, v))
      return last_tangent_.dots;
    // Any tangent pass invalidates the kept one: mixed operations keep their candidates'
    // tangents of the latest pass (layers/mixed.hpp), which tangent_backward reads.
    last_tangent_.valid = false;
    std::vector<matrix>& dots = u ? scratch_.dots : last_tangent_.dots;
    const std::size_t batch = P::rows(c.targets);
    dots.resize(layers_.size() + 1);  // layers overwrite their entries; dots[0] stays empty
    for (std::size_t l = 0; l < layers_.size(); ++l) {
      const matrix* in_dot = l > 0 ? &dots[l] : nullptr;
      if (bias_activation(l)) {  // as in value_pass: the bias's tangent added in the activation's pass
        const auto& act = std::get<activation_layer<P>>(layers_[l + 1]);
        with_affine(l, [&](const auto& layer) {
          layer.tangent_forward(c.theta, v, c.acts[l], in_dot, batch, c.layers[l], dots[l + 1], false);
          act.tangent_forward_with_bias(v, layer.map.bias_offset(), c.acts[l + 1], dots[l + 1], dots[l + 2]);
        });
        ++l;
        continue;
      }
      std::visit([&](const auto& layer) {
        using T = std::decay_t<decltype(layer)>;
        if constexpr (std::is_same_v<T, any_layer<P>>)
          layer.tangent_forward(tangent(l, batch, v, u, nullptr), c.acts[l], in_dot, c.layers[l].boxed, dots[l + 1]);
        else if constexpr (std::is_same_v<T, mixed_layer<P>>)
          layer.tangent_forward(c.theta, v, u, c.acts[l], in_dot, batch, c.layers[l], dots[l + 1]);
        else
          layer.tangent_forward(c.theta, v, c.acts[l], in_dot, batch, c.layers[l], dots[l + 1]);
      }, layers_[l]);
    }
    if (!u) {
      last_tangent_.generation = generation_;
      P::copy(v, last_tangent_.v);
      last_tangent_.v_stamp = stamp_of<P>(v);
      last_tangent_.valid = true;
    }
    return dots;
  }

  /// The tangent of the backward pass: the HVP (and, given arch_dot, the tangent of ∂L/∂α).
  void tangent_backward(const vector& v, const vector* u, const std::vector<matrix>& dots, vector& out,
                        vector* arch_dot) const {
    value_cache& c = cache_;
    const std::size_t batch = P::rows(c.targets), L = layers_.size();
    P::resize(out, num_parameters_);
    // Ḋ: cross-entropy (Σt)·ṗ with ṗ = p ⊙ ż − p·⟨p, ż⟩; squared error ż. The adjoint's
    // tangent alternates between two scratch matrices, layer by layer.
    scratch_buffers& s = scratch_;
    const matrix& z_dot = dots.back();
    const scalar per_sample = scalar(1.0 / double(batch));
    if (loss_ == loss_kind::cross_entropy && fused_softmax_cross_entropy<P>) {
      // One pass: the composed form below, weighting included.
      if constexpr (fused_softmax_cross_entropy<P>)
        P::softmax_cross_entropy_tangent(c.acts.back(), z_dot, c.target_mass, c.weights, per_sample, s.g_dot);
    } else {
      if (loss_ == loss_kind::cross_entropy) {
        P::row_softmax(c.acts.back(), s.p);
        P::hadamard(s.p, z_dot, s.g_dot);
        P::row_dots(s.p, z_dot, s.pdz);
        s.pz = s.p;
        P::scale_rows(s.pz, s.pdz);
        P::axpy(scalar(-1), s.pz, s.g_dot);
        P::scale_rows(s.g_dot, c.target_mass);
      } else {
        s.g_dot = z_dot;
      }
      if constexpr (fused_scaled_copies<P>) {
        P::scale_rows_into(s.g_dot, c.weights, per_sample, s.g_dot);
      } else {
        P::copy(c.weights, s.scaled);
        P::scale(s.scaled, per_sample);
        P::scale_rows(s.g_dot, s.scaled);
      }
    }
    matrix* g_dot = &s.g_dot;
    matrix* g_in_dot = &s.g_in_dot;
    for (std::size_t l = L; l-- > 0;) {
      if (l > 0 && bias_activation(l - 1)) {  // as in backward: the bias's part in the activation's pass
        const auto& act = std::get<activation_layer<P>>(layers_[l]);
        with_affine(l - 1, [&](const auto& layer) {
          act.tangent_backward_with_bias_gradient(c.acts[l], dots[l], c.g[l], *g_dot, *g_in_dot, out,
                                                  layer.map.bias_offset());
          std::swap(g_dot, g_in_dot);
          const matrix* in_dot = l > 1 ? &dots[l - 1] : nullptr;
          layer.tangent_backward(c.theta, v, c.acts[l - 1], in_dot, c.g[l - 1], *g_dot, batch, c.layers[l - 1],
                                 l > 1 ? g_in_dot : nullptr, out, false);
          std::swap(g_dot, g_in_dot);
        });
        --l;
        continue;
      }
      std::visit([&](const auto& layer) {
        const matrix* in_dot = l > 0 ? &dots[l] : nullptr;
        matrix* gx = l > 0 ? g_in_dot : nullptr;
        using T = std::decay_t<decltype(layer)>;
        if constexpr (std::is_same_v<T, any_layer<P>>)
          layer.tangent_backward(tangent(l, batch, v, u, arch_dot), c.acts[l], in_dot, c.g[l], *g_dot, c.layers[l].boxed,
                                 gx, out);
        else if constexpr (std::is_same_v<T, mixed_layer<P>>)
          layer.tangent_backward(c.theta, v, u, c.acts[l], in_dot, c.g[l], *g_dot, batch, c.layers[l], gx, out, arch_dot);
        else
          layer.tangent_backward(c.theta, v, c.acts[l], in_dot, c.g[l], *g_dot, batch, c.layers[l], gx, out);
      }, layers_[l]);
      std::swap(g_dot, g_in_dot);
    }
  }

  geometry input_, features_{};  ///< one sample's input, and the last layer's input (feature_shape)
  loss_kind loss_;
  Weighting weighting_;
  std::vector<layer_variant> layers_;
  std::vector<std::size_t> box_offsets_;  ///< each boxed layer's first parameter (the others keep their own)
  std::uint64_t step_ = 0;                ///< real steps taken (on_real_step)
  bool keep_adjoints_ = true;             ///< keep_adjoints()
  std::size_t num_parameters_ = 0, classes_ = 0, arch_size_ = 0;
  mutable value_cache cache_;
  struct tangent_cache {
    bool valid = false;
    std::size_t generation = 0;
    vector v;
    std::uint64_t v_stamp = 0;
    std::vector<matrix> dots;
  };
  mutable tangent_cache last_tangent_;
  mutable std::size_t generation_ = 0;
  mutable scratch_buffers scratch_;
};

}  // namespace bilevel::learners
