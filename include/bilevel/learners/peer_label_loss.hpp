// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Learning from peers' pseudo-labels, the second stage of Small-Group Learning (SGL; Du &
/// Xie, arXiv 2012.12502): learner k's weights V_k minimise
///
///     L(V_k) = (1/B_l) Σ_{labelled i} CE(f(x_i; V_k, A_k), y_i)
///            + λ (1/B_u) Σ_{unlabelled u} Σ_{j≠k} CE(f(x_u; V_k, A_k), p_j(x_u)),
///     p_j(x) = softmax(f(x; W_j, A_j))     (peer j's soft pseudo-label)
///
/// on a batch of labelled and unlabelled samples: one classification_batch whose unlabelled
/// rows come last, with label −1 (peer_batches draws them). The pseudo-labels are
/// detached, as in the published code (docs/methods.md, "SGL": computed with gradients off): they
/// are constants to every derivative, so this learner reads the peers' weights W_j (input
/// slots 1..K−1) for their values only, and its derivatives in them are zero. Slot 0 is the
/// vector the networks read their architectures from (SGL's top level [A_1 | … | A_K]); the
/// own network reads A_k from it, each peer's network A_j, and only A_k is differentiated.
///
/// Cross-entropy is linear in its target, so the whole loss is the own network's loss on the
/// same batch with its targets filled in: the labelled rows' one-hot targets scaled by B/B_l,
/// the unlabelled rows' target λ (B/B_u) Σ_j p_j, B = B_l + B_u. Every product is the own
/// network's on that batch, exact where the network's are. Filling the targets copies them
/// through the host (B × classes values per call).
///
/// Data-parallel (distributed::data_parallel): each rank's part of a batch holds b_l of its
/// labelled and b_u of its unlabelled rows (distributed::rows_of_rank) and records the whole
/// batch's B_l and B (whole_labelled, whole_rows). The targets are then scaled with the whole
/// batch's B, B_l, B_u, so that the part's mean over its b_l + b_u rows, weighted by the share
/// (b_l + b_u)/B that data_parallel gives it, is exactly its labelled rows' (1/B_l) Σ CE plus
/// its unlabelled rows' (λ/B_u) Σ CE, and the parts add up to the loss above. A part may hold
/// one kind only (its peers then give no pseudo-labels); a whole batch needs both.
///
/// Why one batch with hidden labels rather than a pair of batches: the solver instantiates
/// each level's objective with the batch type of every level it computes a hypergradient for,
/// so the levels of one solver share one batch type.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <span>
#include <vector>

#include "bilevel/core/checkpoint.hpp"
#include "bilevel/core/learner.hpp"
#include "bilevel/learners/classification_batch.hpp"

namespace bilevel::learners {

/// The sampler of peer_label_loss's batches: `labelled` rows of `train`, then `unlabelled`
/// rows of `unlabelled_set` with their labels hidden (−1, targets zero), per draw; each part
/// without replacement, seeded.
template <nn_tensor_policy P>
class peer_batches {
 public:
  peer_batches(std::shared_ptr<const data::dataset> train, std::size_t labelled,
               std::shared_ptr<const data::dataset> unlabelled_set, std::size_t unlabelled, std::uint64_t seed)
      : train_(checked(std::move(train))),
        unlabelled_(checked(std::move(unlabelled_set))),
        labelled_rows_(train_->rows, labelled, seed),
        unlabelled_rows_(unlabelled_->rows, unlabelled, seed + 1) {
    if (train_->cols != unlabelled_->cols || train_->num_classes != unlabelled_->num_classes)
      throw std::invalid_argument("bilevel::learners::peer_batches: the labelled and unlabelled sets differ in shape");
  }

  classification_batch<P> operator()() {
    const auto lr = labelled_rows_.next(), ur = unlabelled_rows_.next();
    const std::size_t d = train_->cols, C = train_->num_classes, rows = lr.size() + ur.size();
    std::vector<scalar_t<P>> x, t(rows * C, scalar_t<P>(0));
    x.reserve(rows * d);
    classification_batch<P> b;
    auto append = [&](const data::dataset& set, std::size_t r) {
      x.insert(x.end(), set.features.begin() + std::ptrdiff_t(r * d), set.features.begin() + std::ptrdiff_t((r + 1) * d));
      b.ids.push_back(set.ids[r]);
    };
    for (std::size_t i = 0; i < lr.size(); ++i) {
      append(*train_, lr[i]);
      b.labels.push_back(train_->labels[lr[i]]);
      t[i * C + std::size_t(train_->labels[lr[i]])] = scalar_t<P>(1);
    }
    for (std::size_t r : ur) append(*unlabelled_, r);
    b.labels.resize(rows, -1);  // hidden
    b.x = P::matrix_from_host(rows, d, x);
    b.targets = P::matrix_from_host(rows, C, t);
    return b;
  }
  void save_state(checkpoint_writer& w) const {
    labelled_rows_.save_state(w);
    unlabelled_rows_.save_state(w);
  }
  void load_state(checkpoint_reader& r) {
    labelled_rows_.load_state(r);
    unlabelled_rows_.load_state(r);
  }

 private:
  static std::shared_ptr<const data::dataset> checked(std::shared_ptr<const data::dataset> d) {
    if (!d) throw std::invalid_argument("bilevel::learners::peer_batches: no data set (null pointer)");
    d->validate("a data set of peer batches");
    return d;
  }

  std::shared_ptr<const data::dataset> train_, unlabelled_;
  data::batch_sampler labelled_rows_, unlabelled_rows_;
};

/// `Net`: a classifier network that reads one input (the vector it takes its architecture
/// from), e.g. reading_segment<sequential<P>>; the own network and the peers' may read
/// different segments of it.
template <class Net>
class peer_label_loss {
 public:
  using policy = typename Net::policy;
  using batch_type = typename Net::batch_type;
  using vector = vector_t<policy>;

  peer_label_loss(Net own, std::vector<Net> peers, double lambda)
      : own_(std::move(own)), peers_(std::move(peers)), lambda_(lambda) {
    if (own_.num_inputs() != 1)
      throw std::invalid_argument("bilevel::learners::peer_label_loss: the network must read one input (its architecture)");
    for (const auto& p : peers_)
      if (p.num_inputs() != 1 || p.input_size(0) != own_.input_size(0))
        throw std::invalid_argument("bilevel::learners::peer_label_loss: every peer must read the same vector as the own network");
    if (!(lambda_ >= 0.0)) throw std::invalid_argument("bilevel::learners::peer_label_loss: λ must be >= 0");
  }

  [[nodiscard]] std::size_t num_parameters() const { return own_.num_parameters(); }
  [[nodiscard]] std::size_t num_inputs() const { return 1 + peers_.size(); }
  [[nodiscard]] std::size_t input_size(std::size_t s) const {
    return s == 0 ? own_.input_size(0) : peers_.at(s - 1).num_parameters();
  }
  [[nodiscard]] const Net& network() const { return own_; }
  [[nodiscard]] double lambda() const { return lambda_; }

  /// The own network's real step (batch normalization's running statistics, dropout's step
  /// counter), taken on the batch's samples; the peers' networks only give pseudo-labels.
  void on_real_step(const vector& theta, input_list<policy> in, const batch_type& b)
    requires requires(Net& n, const vector& t, const batch_type& bb, input_list<policy> i) { n.on_real_step(t, i, bb); }
  {
    own_.on_real_step(theta, own_input(in), b);
  }
  /// The own network's state, for checkpoints.
  [[nodiscard]] std::vector<double> state() const
    requires requires(const Net& n) { n.state(); }
  {
    return own_.state();
  }
  void restore(std::span<const double> s)
    requires requires(Net& n) { n.restore(s); }
  {
    own_.restore(s);
  }

  /// The batch the own network's loss is taken on: targets as the file comment says.
  [[nodiscard]] batch_type targets_filled(input_list<policy> in, const batch_type& b) const {
    using matrix = typename policy::matrix;
    if (in.size() != num_inputs())
      throw std::invalid_argument("bilevel::learners::peer_label_loss: " + std::to_string(in.size()) +
                                  " inputs given, expects " + std::to_string(num_inputs()));
    const std::size_t rows = b.size(), d = policy::cols(b.x);
    std::size_t nl = 0;
    while (nl < rows && b.labels[nl] >= 0) ++nl;
    const std::size_t nu = rows - nl;
    for (std::size_t i = nl; i < rows; ++i)
      if (b.labels[i] >= 0)
        throw std::invalid_argument("bilevel::learners::peer_label_loss: labelled row " + std::to_string(i) +
                                    " after an unlabelled one (the unlabelled rows, label −1, come last)");
    // The whole batch's counts: this batch's own, or, for one rank's part of it, those it records.
    const bool part = b.whole_rows > 0;
    const std::size_t whole = part ? b.whole_rows : rows, whole_l = part ? b.whole_labelled : nl,
                      whole_u = whole - std::min(whole_l, whole);
    if (whole_l == 0 || whole_u == 0)
      throw std::invalid_argument("bilevel::learners::peer_label_loss: a batch needs labelled rows and unlabelled "
                                  "rows (label −1); it has " + std::to_string(whole_l) + " and " +
                                  std::to_string(whole_u) + (part ? " (the whole batch this one is part of)" : ""));
    // A part with more rows of a kind than its whole batch has was not cut from it: its
    // targets would be scaled wrong.
    if (rows == 0 || nl > whole_l || nu > whole_u)
      throw std::invalid_argument("bilevel::learners::peer_label_loss: a part of " + std::to_string(nl) +
                                  " labelled and " + std::to_string(nu) + " unlabelled rows of a batch of " +
                                  std::to_string(whole_l) + " and " + std::to_string(whole_u));
    auto t = policy::matrix_to_host(b.targets);
    const std::size_t C = policy::cols(b.targets);
    for (std::size_t i = 0; i < nl * C; ++i) t[i] *= scalar_t<policy>(double(whole) / double(whole_l));
    std::fill(t.begin() + std::ptrdiff_t(nl * C), t.end(), scalar_t<policy>(0));
    if (!peers_.empty() && nu > 0) {
      // The unlabelled rows alone, for the peers (their targets are not used).
      batch_type u;
      std::vector<std::int64_t> index(nu * d);
      for (std::size_t k = 0; k < index.size(); ++k) index[k] = std::int64_t(nl * d + k);
      policy::gather(b.x, index, nu, d, u.x);
      u.targets = policy::matrix_zeros(nu, C);
      u.labels.assign(b.labels.begin() + std::ptrdiff_t(nl), b.labels.end());
      u.ids.assign(b.ids.begin() + std::ptrdiff_t(nl), b.ids.end());
      const vector* arch[] = {in[0]};
      const double scale = lambda_ * double(whole) / double(whole_u);
      for (std::size_t j = 0; j < peers_.size(); ++j) {
        matrix p;
        policy::row_softmax(peers_[j].forward(*in[1 + j], u, input_list<policy>(arch)).logits, p);
        const auto ph = policy::matrix_to_host(p);
        for (std::size_t i = 0; i < nu * C; ++i) t[nl * C + i] += scalar_t<policy>(scale * double(ph[i]));
      }
    }
    batch_type out = b;
    out.targets = policy::matrix_from_host(rows, C, t);
    return out;
  }

  double loss(const vector& theta, input_list<policy> in, const batch_type& b) const {
    return own_.loss(theta, own_input(in), targets_filled(in, b));
  }
  double gradient(const vector& theta, input_list<policy> in, const batch_type& b, vector& out) const {
    return own_.gradient(theta, own_input(in), targets_filled(in, b), out);
  }
  /// Slot 0: ∂L/∂(the architecture vector) through the own network; the peers' slots: zero
  /// (detached pseudo-labels).
  void input_gradient(const vector& theta, input_list<policy> in, const batch_type& b, std::size_t s,
                      vector& out) const {
    if (s > 0) {
      out = policy::zeros(input_size(s));
      return;
    }
    own_.input_gradient(theta, own_input(in), targets_filled(in, b), 0, out);
  }
  void hvp(const vector& theta, input_list<policy> in, const batch_type& b, const vector& v, vector& out) const
    requires has_exact_hvp<Net>
  {
    own_.hvp(theta, own_input(in), targets_filled(in, b), v, out);
  }
  void mixed_vjp(const vector& theta, input_list<policy> in, const batch_type& b, std::size_t s, const vector& v,
                 vector& out) const
    requires has_exact_mixed_vjp<Net>
  {
    if (s > 0) {
      out = policy::zeros(input_size(s));
      return;
    }
    own_.mixed_vjp(theta, own_input(in), targets_filled(in, b), 0, v, out);
  }
  void mixed_jvp(const vector& theta, input_list<policy> in, const batch_type& b, std::size_t s, const vector& u,
                 vector& out) const
    requires has_exact_mixed_jvp<Net>
  {
    if (s > 0) {
      out = policy::zeros(num_parameters());
      return;
    }
    own_.mixed_jvp(theta, own_input(in), targets_filled(in, b), 0, u, out);
  }

 private:
  static input_list<policy> own_input(input_list<policy> in) { return in.subspan(0, 1); }

  Net own_;
  std::vector<Net> peers_;
  double lambda_;
};

}  // namespace bilevel::learners
