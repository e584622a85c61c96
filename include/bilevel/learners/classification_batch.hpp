// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// A batch for classifiers: inputs on the back end, targets as rows (one-hot for hard labels,
/// distributions for soft labels such as SGL's pseudo-labels), and each sample's id, so that
/// per-sample upper variables follow the sample, not its position in the batch.
#include <algorithm>
#include <cstddef>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "bilevel/core/tensor_policy.hpp"
#include "bilevel/data/dataset.hpp"

namespace bilevel::learners {

template <tensor_policy P>
struct classification_batch {
  typename P::matrix x;        ///< batch × features
  typename P::matrix targets;  ///< batch × classes; rows sum to 1 for cross-entropy
  std::vector<int> labels;     ///< hard labels, or −1 where a row is soft
  std::vector<std::size_t> ids;
  /// When this batch is one rank's part of a larger batch (distributed::data_parallel), the
  /// larger batch's number of labelled rows (label ≥ 0) and of rows; 0: this batch is whole.
  /// Learners whose loss weighs the kinds of rows by their counts in the batch
  /// (peer_label_loss) read the whole batch's counts here, so that the parts' losses add up.
  std::size_t whole_labelled = 0, whole_rows = 0;

  [[nodiscard]] std::size_t size() const { return ids.size(); }
};

/// Copies the rows `which` of a host data set into x (|which| × cols, row-major) and their
/// one-hot targets into t (|which| × classes, zeroed here), and appends their labels and ids.
/// The host half of make_batch, shared with samplers that add rows of their own before the
/// one upload (with_synthetic_batches).
template <class S>
void gather_rows(const data::dataset& d, std::span<const std::size_t> which, S* x, S* t, std::vector<int>& labels,
                 std::vector<std::size_t>& ids) {
  std::fill_n(t, which.size() * d.num_classes, S(0));
  for (std::size_t i = 0; i < which.size(); ++i) {
    const std::size_t r = which[i];
    if (r >= d.rows)
      throw std::out_of_range("bilevel::learners::make_batch: row " + std::to_string(r) + " of " + std::to_string(d.rows));
    std::copy_n(d.features.begin() + std::ptrdiff_t(r * d.cols), d.cols, x + i * d.cols);
    t[i * d.num_classes + std::size_t(d.labels[r])] = S(1);
    labels.push_back(d.labels[r]);
    ids.push_back(d.ids[r]);
  }
}

/// The rows `which` of a host data set as a batch with one-hot targets, gathered on the host
/// in `staging` (resized as needed; a sampler passes the same buffer each time, so drawing a
/// batch does not allocate and fault in a batch-sized host array afresh).
template <tensor_policy P>
classification_batch<P> make_batch(const data::dataset& d, std::span<const std::size_t> which,
                                   std::vector<scalar_t<P>>& staging) {
  if (which.empty()) throw std::invalid_argument("bilevel::learners::make_batch: empty batch");
  classification_batch<P> b;
  b.labels.reserve(which.size());
  b.ids.reserve(which.size());
  const std::size_t nx = which.size() * d.cols, nt = which.size() * d.num_classes;
  staging.resize(nx + nt);
  gather_rows(d, which, staging.data(), staging.data() + nx, b.labels, b.ids);
  const std::span<const scalar_t<P>> host(staging);
  b.x = P::matrix_from_host(which.size(), d.cols, host.first(nx));
  b.targets = P::matrix_from_host(which.size(), d.num_classes, host.subspan(nx));
  return b;
}
/// The same with a staging buffer of its own.
template <tensor_policy P>
classification_batch<P> make_batch(const data::dataset& d, std::span<const std::size_t> which) {
  std::vector<scalar_t<P>> staging;
  return make_batch<P>(d, which, staging);
}

}  // namespace bilevel::learners

#include <memory>

namespace bilevel::learners {

/// A level's sampler over a host data set: each call draws the next batch (seeded, with or
/// without replacement) and builds it on the back end. The data set is shared, not copied,
/// when levels and solvers are copied.
template <tensor_policy P>
class dataset_batches {
 public:
  dataset_batches(std::shared_ptr<const data::dataset> d, std::size_t batch_size, std::uint64_t seed,
                  bool with_replacement = false)
      : data_(checked(std::move(d))), sampler_(data_->rows, batch_size, seed, with_replacement) {}
  classification_batch<P> operator()() {
    const auto rows = sampler_.next();
    return make_batch<P>(*data_, rows, staging_);
  }
  /// The next batch's row indices without building the batch (advances the sampler like a
  /// draw), for samplers that gather more rows into the same upload.
  std::vector<std::size_t> next_rows() { return sampler_.next(); }
  [[nodiscard]] std::size_t batches_per_epoch() const { return sampler_.batches_per_epoch(); }
  /// Passes over the data set completed by the batches drawn so far (data::batch_sampler's
  /// count; 0 when drawing with replacement). The solver's on_epoch reports these.
  [[nodiscard]] std::size_t epochs_completed() const { return sampler_.epochs_completed(); }
  [[nodiscard]] const data::dataset& data() const { return *data_; }
  void save_state(checkpoint_writer& w) const { sampler_.save_state(w); }
  void load_state(checkpoint_reader& r) { sampler_.load_state(r); }

 private:
  static std::shared_ptr<const data::dataset> checked(std::shared_ptr<const data::dataset> d) {
    if (!d) throw std::invalid_argument("bilevel::learners::dataset_batches: no data set (null pointer)");
    d->validate("the data set of a batch sampler");
    return d;
  }

  std::shared_ptr<const data::dataset> data_;
  data::batch_sampler sampler_;
  std::vector<scalar_t<P>> staging_;  ///< make_batch's host buffer, kept between draws
};

}  // namespace bilevel::learners
