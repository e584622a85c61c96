// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// data_parallel<L, C>: any learner, computed by several processes on their shares of the data.
///
/// The loss of a batch of n samples is their mean, so it splits over R ranks as
///     L(θ, in, B) = Σ_r (n_r / n) · L_r(θ, in, B_r),
/// with B_r rank r's rows and L_r the learner's mean over them. Every quantity a strategy asks
/// of a learner is linear in L, so each rank computes its term, scales it by its share
/// n_r / n, and one all-reduce (a rank-ordered sum, identical on every rank: communicator.hpp)
/// gives every rank the global value: the loss, the gradient, the input gradient, the
/// Hessian-vector product and both mixed products. Strategies, optimizers and methods see an
/// ordinary learner and run unchanged; parameters stay replicated because every rank takes
/// the same step from the same numbers.
///
/// Two ways to share the data:
///   - `rows_of_each_batch{}` (the default): every rank draws the same global batch (the same
///     sampler, the same seed) and takes its rows [⌊r·n/R⌋, ⌊(r+1)·n/R⌋), keeping the samples'
///     ids, so per-sample upper variables (weight tables, sample weights) follow the sample.
///     The global batch sequence therefore does not depend on the number of ranks. The batch
///     type must offer rows_of_rank(batch, rank, ranks) (classification_batch does, below). A
///     batch of labelled rows followed by unlabelled ones (label −1: SGL's peer batches) is
///     split kind by kind, each rank taking its block of the labelled rows, then its block of
///     the unlabelled ones, and its part records the whole batch's counts, because a loss that
///     averages each kind separately (peer_label_loss) is not the mean over the rows: its
///     parts add up only when each knows the whole batch's counts;
///   - `own_data{share}`: each rank's learner was built on its own part of the data
///     (full-batch learners, data sets too large to hold on each rank), and share is its rows
///     over all rows (the shares sum to 1 over the ranks).
/// A term that does not average over samples (a weight penalty) is the same on every rank and
/// comes out once, because the shares sum to 1.
///
/// What is not the same as one process: layers that compute statistics over the batch
/// (batch normalization in training mode) see their rank's rows only, as PyTorch's
/// DistributedDataParallel without SyncBatchNorm does, and their running statistics are each
/// rank's own. Everything else equals one process up to the round-off of summing n_r-row
/// means instead of one n-row mean (tests/mpi/: 1e-12 relative in double).
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "bilevel/core/checkpoint.hpp"
#include "bilevel/core/learner.hpp"
#include "bilevel/distributed/communicator.hpp"
#include "bilevel/learners/classification_batch.hpp"

namespace bilevel::distributed {

/// Every rank draws the same global batch and computes its rows.
struct rows_of_each_batch {};
/// The rank's learner holds its own part of the data: `share` = its rows / all rows.
struct own_data {
  double share = 1.0;
};

/// Rows [first, first + count) of a classification batch, with their targets, labels and ids.
template <tensor_policy P>
learners::classification_batch<P> take_rows(const learners::classification_batch<P>& b, std::size_t first,
                                            std::size_t count) {
  learners::classification_batch<P> s;
  P::row_block(b.x, first, count, s.x);
  P::row_block(b.targets, first, count, s.targets);
  s.labels.assign(b.labels.begin() + std::ptrdiff_t(first), b.labels.begin() + std::ptrdiff_t(first + count));
  s.ids.assign(b.ids.begin() + std::ptrdiff_t(first), b.ids.begin() + std::ptrdiff_t(first + count));
  return s;
}

/// The rows rank `rank` of `ranks` computes of a classification batch, with the whole batch's
/// counts (whole_labelled, whole_rows). Each kind of row is split on its own: of n_l labelled
/// rows (label ≥ 0) followed by n_u unlabelled ones (label −1), the rank takes labelled rows
/// [⌊r·n_l/R⌋, ⌊(r+1)·n_l/R⌋), then the same block of the unlabelled rows, in that order; so
/// every part has the whole batch's layout and each kind is shared as evenly as it can be,
/// where one split of all rows could give a rank a single kind. A batch with no −1 rows is
/// split as rows [⌊r·n/R⌋, ⌊(r+1)·n/R⌋), and so is one whose −1 rows are not all at the end
/// (by position: such a batch has no kinds to keep apart). A part may lack one kind; a split
/// that leaves some rank no rows at all is refused, on every rank alike (each sees the same
/// batch), so that no rank waits in an all-reduce the others never reach.
template <tensor_policy P>
learners::classification_batch<P> rows_of_rank(const learners::classification_batch<P>& b, std::size_t rank,
                                                std::size_t ranks) {
  const std::string who = "bilevel::distributed::rows_of_rank";
  if (rank >= ranks)
    throw std::invalid_argument(who + ": rank " + std::to_string(rank) + " of " + std::to_string(ranks));
  const std::size_t n = b.size();
  std::size_t labelled = 0;
  while (labelled < n && b.labels[labelled] >= 0) ++labelled;
  const bool unlabelled_last = std::all_of(b.labels.begin() + std::ptrdiff_t(labelled), b.labels.end(),
                                           [](int label) { return label < 0; });
  // The first kind's rows, then the second's; a batch of another layout is one kind.
  const std::size_t first_kind = unlabelled_last ? labelled : n, second_kind = n - first_kind;
  if (!unlabelled_last)
    labelled = std::size_t(std::count_if(b.labels.begin(), b.labels.end(), [](int label) { return label >= 0; }));
  const auto first_row = [&](std::size_t q, std::size_t count) { return q * count / ranks; };
  for (std::size_t q = 0; q < ranks; ++q)
    if (first_row(q + 1, first_kind) == first_row(q, first_kind) &&
        first_row(q + 1, second_kind) == first_row(q, second_kind))
      throw std::invalid_argument(
          who + ": a batch of " + std::to_string(labelled) + " labelled and " + std::to_string(n - labelled) +
          " unlabelled rows (label −1), split over " + std::to_string(ranks) + " ranks, leaves rank " +
          std::to_string(q) + " no rows: each rank needs at least one");
  const std::size_t l0 = first_row(rank, first_kind), l1 = first_row(rank + 1, first_kind),
                    u0 = first_kind + first_row(rank, second_kind), u1 = first_kind + first_row(rank + 1, second_kind);
  learners::classification_batch<P> s;
  if (u1 == u0 || l1 == l0) {  // one block of consecutive rows
    s = l1 > l0 ? take_rows(b, l0, l1 - l0) : take_rows(b, u0, u1 - u0);
  } else {
    const auto l = take_rows(b, l0, l1 - l0), u = take_rows(b, u0, u1 - u0);
    s.x = P::matrix_zeros(l.size() + u.size(), P::cols(b.x));
    s.targets = P::matrix_zeros(l.size() + u.size(), P::cols(b.targets));
    P::set_row_block(l.x, s.x, 0);
    P::set_row_block(u.x, s.x, l.size());
    P::set_row_block(l.targets, s.targets, 0);
    P::set_row_block(u.targets, s.targets, l.size());
    s.labels = l.labels;
    s.labels.insert(s.labels.end(), u.labels.begin(), u.labels.end());
    s.ids = l.ids;
    s.ids.insert(s.ids.end(), u.ids.begin(), u.ids.end());
  }
  s.whole_labelled = labelled;
  s.whole_rows = n;
  return s;
}

/// A batch type data_parallel can split by rows: size(), and rows_of_rank(batch, rank, ranks),
/// the part rank `rank` of `ranks` computes, which must give every rank at least one row of a
/// batch of `ranks` rows or more, or refuse on every rank alike.
template <class B>
concept row_shardable = requires(const B& b, std::size_t i) {
  { b.size() } -> std::convertible_to<std::size_t>;
  { rows_of_rank(b, i, i) } -> std::same_as<B>;
};

template <class L, communicator C>
  requires learner<L>
class data_parallel {
 public:
  using policy = typename L::policy;
  using batch_type = typename L::batch_type;
  using vector = vector_t<policy>;
  using scalar = scalar_t<policy>;

  /// Splits every batch by rows over the communicator's ranks.
  data_parallel(L inner, C comm, rows_of_each_batch = {}) : inner_(std::move(inner)), comm_(std::move(comm)) {
    static_assert(check_communicator<C>());
    static_assert(row_shardable<batch_type>,
                  "bilevel::distributed::data_parallel: this learner's batch type cannot be split by rows "
                  "(it needs size() and a rows_of_rank(batch, rank, ranks) overload); build each rank's learner "
                  "on its own data and pass own_data{share} instead");
    require_same_shape();
  }
  /// The learner already holds this rank's part of the data.
  data_parallel(L inner, C comm, own_data d) : inner_(std::move(inner)), comm_(std::move(comm)), share_(d.share) {
    static_assert(check_communicator<C>());
    if (!(d.share >= 0.0 && d.share <= 1.0))
      throw std::invalid_argument("bilevel::distributed::data_parallel: own_data share " + std::to_string(d.share) +
                                  " is not in [0, 1] (it is this rank's rows over all rows)");
    split_ = false;
    require_same_shape();
    // The shares must sum to 1, or every loss and derivative is off by their sum.
    const double total = all_reduce_scalar(comm_, d.share);
    if (std::abs(total - 1.0) > 1e-12)
      throw std::invalid_argument("bilevel::distributed::data_parallel: the ranks' own_data shares sum to " +
                                  std::to_string(total) + ", not 1");
  }

  [[nodiscard]] const L& inner() const { return inner_; }
  [[nodiscard]] L& inner() { return inner_; }
  [[nodiscard]] const C& comm() const { return comm_; }

  [[nodiscard]] std::size_t num_parameters() const { return inner_.num_parameters(); }
  [[nodiscard]] std::size_t num_inputs() const
    requires declares_inputs<L>
  {
    return inner_.num_inputs();
  }
  [[nodiscard]] std::size_t input_size(std::size_t s) const
    requires declares_inputs<L>
  {
    return inner_.input_size(s);
  }

  double loss(const vector& theta, input_list<policy> in, const batch_type& b) const {
    const shard s = shard_of(b);
    return all_reduce_scalar(comm_, s.share * inner_.loss(theta, in, s.batch()));
  }
  double gradient(const vector& theta, input_list<policy> in, const batch_type& b, vector& out) const {
    const shard s = shard_of(b);
    const double l = inner_.gradient(theta, in, s.batch(), out);
    return reduce(s, out, l);
  }
  void input_gradient(const vector& theta, input_list<policy> in, const batch_type& b, std::size_t slot,
                      vector& out) const
    requires input_differentiable_learner<L>
  {
    const shard s = shard_of(b);
    inner_.input_gradient(theta, in, s.batch(), slot, out);
    reduce(s, out);
  }
  void hvp(const vector& theta, input_list<policy> in, const batch_type& b, const vector& v, vector& out) const
    requires has_exact_hvp<L>
  {
    const shard s = shard_of(b);
    inner_.hvp(theta, in, s.batch(), v, out);
    reduce(s, out);
  }
  void mixed_vjp(const vector& theta, input_list<policy> in, const batch_type& b, std::size_t slot, const vector& v,
                 vector& out) const
    requires has_exact_mixed_vjp<L>
  {
    const shard s = shard_of(b);
    inner_.mixed_vjp(theta, in, s.batch(), slot, v, out);
    reduce(s, out);
  }
  void mixed_jvp(const vector& theta, input_list<policy> in, const batch_type& b, std::size_t slot, const vector& u,
                 vector& out) const
    requires has_exact_mixed_jvp<L>
  {
    const shard s = shard_of(b);
    inner_.mixed_jvp(theta, in, s.batch(), slot, u, out);
    reduce(s, out);
  }

  /// The learner's state changes at real steps from the rank's rows (see the file comment).
  void on_real_step(const vector& theta, input_list<policy> in, const batch_type& b)
    requires has_real_step_hook<L>
  {
    const shard s = shard_of(b);
    inner_.on_real_step(theta, in, s.batch());
  }
  /// The wrapped learner's state, then the number of ranks, so that a checkpoint written with
  /// R ranks is refused by a run with another count (check_state): the global batches would be
  /// the same, but the batch statistics of layers that keep any, and each rank's share of the
  /// rows, would not.
  [[nodiscard]] std::vector<double> state() const {
    std::vector<double> st;
    if constexpr (has_learner_state<L>) st = inner_.state();
    st.push_back(double(comm_.size()));
    return st;
  }
  void check_state(std::span<const double> st) const {
    const double ranks = st.empty() ? 0.0 : st.back();
    if (ranks != double(comm_.size()))
      throw checkpoint_error("bilevel::distributed::data_parallel: the checkpoint was written by a run on " +
                             std::to_string(std::size_t(ranks)) + " rank(s), this run has " +
                             std::to_string(comm_.size()) + "; resume with the same number of ranks");
  }
  void restore(std::span<const double> st) {
    if constexpr (has_learner_state<L>) inner_.restore(st.first(st.size() - 1));
  }
  /// Checkpoints are written by rank 0 only (solver::save_checkpoint asks); every rank reads.
  [[nodiscard]] bool writes_checkpoints() const { return comm_.rank() == 0; }
  /// The wrapped learner's forward pass on a whole batch, on this rank alone (evaluation:
  /// every rank computes the same thing; nothing is communicated).
  template <class... Args>
  [[nodiscard]] auto forward(const vector& theta, const batch_type& b, Args&&... args) const
    requires requires(const L& l) { l.forward(theta, b, std::forward<Args>(args)...); }
  {
    return inner_.forward(theta, b, std::forward<Args>(args)...);
  }
  [[nodiscard]] std::size_t arch_slot() const
    requires requires(const L& l) { l.arch_slot(); }
  {
    return inner_.arch_slot();
  }

 private:
  /// Every rank's learner must have the same parameters and inputs, or the all-reduces would
  /// add vectors of different lengths: checked once, here, rather than found as a hang or an
  /// MPI error later.
  void require_same_shape() const {
    std::vector<double> shape{double(inner_.num_parameters())};
    std::vector<std::string> labels{"learner's parameter count"};
    if constexpr (declares_inputs<L>) {
      shape.push_back(double(inner_.num_inputs()));
      labels.emplace_back("learner's input count");
      for (std::size_t s = 0; s < inner_.num_inputs(); ++s) {
        shape.push_back(double(inner_.input_size(s)));
        labels.push_back("size of input " + std::to_string(s));
      }
    }
    require_same_on_every_rank(comm_, shape, labels, "bilevel::distributed::data_parallel");
  }

  /// This rank's rows of a batch, or the batch itself (own_data), and its weight.
  struct shard {
    const batch_type* whole = nullptr;
    std::variant<std::monostate, batch_type> rows;
    double share = 1.0;
    [[nodiscard]] const batch_type& batch() const {
      return rows.index() == 1 ? std::get<1>(rows) : *whole;
    }
  };

  [[nodiscard]] shard shard_of(const batch_type& b) const {
    shard s{.whole = &b, .rows = {}, .share = share_};
    if constexpr (row_shardable<batch_type>) {
      if (split_ && comm_.size() > 1) {
        const std::size_t n = b.size(), ranks = comm_.size();
        if (n < ranks)
          throw std::invalid_argument("bilevel::distributed::data_parallel: a batch of " + std::to_string(n) +
                                      " rows cannot be split over " + std::to_string(ranks) +
                                      " ranks: each rank needs at least one row");
        const auto& part = s.rows.template emplace<1>(rows_of_rank(b, comm_.rank(), ranks));
        s.share = double(part.size()) / double(n);
      }
    }
    return s;
  }
  /// out ← Σ_r share_r out_r; returns Σ_r share_r loss_r.
  double reduce(const shard& s, vector& out, double loss) const {
    if (comm_.size() == 1) return loss;
    reduce(s, out);
    return all_reduce_scalar(comm_, s.share * loss);
  }
  void reduce(const shard& s, vector& out) const {
    if (comm_.size() == 1) return;
    if (s.share != 1.0) policy::scale(out, scalar(s.share));
    all_reduce<policy>(comm_, out);
  }

  L inner_;
  C comm_;
  double share_ = 1.0;
  bool split_ = true;
};

/// What the methods take to run data-parallel (`methods::meta_weight_net<P>(train, val, cfg,
/// distributed::across(comm))`): every learner a method builds is wrapped in data_parallel,
/// splitting the rows of each batch over the communicator's ranks.
template <communicator C>
struct across {
  C comm;
  template <class L>
  [[nodiscard]] data_parallel<L, C> operator()(L learner) const {
    return data_parallel<L, C>(std::move(learner), comm);
  }
};
template <communicator C> across(C) -> across<C>;

}  // namespace bilevel::distributed
