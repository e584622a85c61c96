// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// A labelled data set on the host, with stable sample ids, seeded splits and batches.
///
/// Every row keeps the id it had in the file it came from, through subsets, splits and
/// batches, so that per-sample upper variables (a weight table keyed by sample id, as LFM's
/// data-reweighting form needs) follow the sample, not its position in a batch.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <sstream>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "bilevel/core/checkpoint.hpp"

namespace bilevel::data {

struct dataset {
  std::size_t rows = 0, cols = 0, num_classes = 0;
  std::vector<float> features;     ///< rows × cols, row-major
  std::vector<int> labels;         ///< in [0, num_classes)
  std::vector<std::size_t> ids;    ///< the sample's row in its original file

  /// Throws std::invalid_argument naming the first inconsistency.
  void validate(const std::string& what = "dataset") const {
    if (features.size() != rows * cols)
      throw std::invalid_argument("bilevel::data: " + what + " has " + std::to_string(features.size()) +
                                  " feature values for " + std::to_string(rows) + " rows of " + std::to_string(cols));
    if (labels.size() != rows || ids.size() != rows)
      throw std::invalid_argument("bilevel::data: " + what + " has " + std::to_string(labels.size()) + " labels and " +
                                  std::to_string(ids.size()) + " ids for " + std::to_string(rows) + " rows");
    if (rows == 0) throw std::invalid_argument("bilevel::data: " + what + " is empty");
    if (num_classes == 0) throw std::invalid_argument("bilevel::data: " + what + " has no classes");
    for (std::size_t i = 0; i < features.size(); ++i)
      if (!std::isfinite(features[i]))
        throw std::invalid_argument("bilevel::data: " + what + " row " + std::to_string(i / cols) + " column " +
                                    std::to_string(i % cols) + " is " + std::to_string(features[i]) +
                                    " (NaN/Inf in the inputs)");
    for (std::size_t i = 0; i < rows; ++i)
      if (labels[i] < 0 || std::size_t(labels[i]) >= num_classes)
        throw std::invalid_argument("bilevel::data: " + what + " row " + std::to_string(i) + " has label " +
                                    std::to_string(labels[i]) + ", outside [0, " + std::to_string(num_classes) + ")");
  }

  /// The rows at `which`, in that order, ids kept.
  [[nodiscard]] dataset subset(std::span<const std::size_t> which) const {
    dataset s;
    s.rows = which.size();
    s.cols = cols;
    s.num_classes = num_classes;
    s.features.reserve(which.size() * cols);
    for (std::size_t r : which) {
      if (r >= rows)
        throw std::out_of_range("bilevel::data::dataset::subset: row " + std::to_string(r) + " of " + std::to_string(rows));
      s.features.insert(s.features.end(), features.begin() + std::ptrdiff_t(r * cols),
                        features.begin() + std::ptrdiff_t((r + 1) * cols));
      s.labels.push_back(labels[r]);
      s.ids.push_back(ids[r]);
    }
    return s;
  }

  /// How many rows carry each label.
  [[nodiscard]] std::vector<std::size_t> class_counts() const {
    std::vector<std::size_t> c(num_classes, 0);
    for (int l : labels) ++c.at(std::size_t(l));
    return c;
  }
};

/// A training set and a clean, class-balanced validation set drawn from it.
struct train_validation_split {
  dataset train, validation;
};

/// Holds out `per_class` rows of every class as the validation set (seeded), the rest is the
/// training set. Throws if a class has fewer than `per_class` rows.
inline train_validation_split split_validation(const dataset& all, std::size_t per_class, std::uint64_t seed) {
  all.validate("split input");
  std::mt19937_64 gen(seed);
  std::vector<std::vector<std::size_t>> by_class(all.num_classes);
  for (std::size_t r = 0; r < all.rows; ++r) by_class[std::size_t(all.labels[r])].push_back(r);
  std::vector<std::size_t> val, train;
  for (std::size_t c = 0; c < all.num_classes; ++c) {
    auto& rows = by_class[c];
    if (rows.size() < per_class)
      throw std::invalid_argument("bilevel::data::split_validation: class " + std::to_string(c) + " has " +
                                  std::to_string(rows.size()) + " rows, fewer than the " + std::to_string(per_class) +
                                  " asked for validation");
    std::shuffle(rows.begin(), rows.end(), gen);
    val.insert(val.end(), rows.begin(), rows.begin() + std::ptrdiff_t(per_class));
    train.insert(train.end(), rows.begin() + std::ptrdiff_t(per_class), rows.end());
  }
  std::sort(val.begin(), val.end());
  std::sort(train.begin(), train.end());
  return {all.subset(train), all.subset(val)};
}

/// Mini-batches of row indices, seeded. Without replacement it walks a fresh permutation each
/// epoch (the last batch of an epoch may be short unless drop_last); with replacement every
/// batch is drawn independently, as the validation batches of LFM and DARTS are.
class batch_sampler {
 public:
  batch_sampler(std::size_t rows, std::size_t batch_size, std::uint64_t seed, bool with_replacement = false,
                bool drop_last = true)
      : rows_(rows), batch_(batch_size), replacement_(with_replacement), drop_last_(drop_last), gen_(seed) {
    if (rows == 0) throw std::invalid_argument("bilevel::data::batch_sampler: the data set is empty");
    if (batch_size == 0) throw std::invalid_argument("bilevel::data::batch_sampler: batch size must be >= 1");
    // A batch larger than its data set is a configuration error in every mode: with
    // replacement it would repeat rows within one batch (a validation set smaller than its
    // batch), without it the batch would silently shrink.
    if (batch_size > rows)
      throw std::invalid_argument("bilevel::data::batch_sampler: batch size " + std::to_string(batch_size) +
                                  " exceeds the " + std::to_string(rows) + " rows of its data set");
    order_.resize(rows);
    std::iota(order_.begin(), order_.end(), std::size_t(0));
    position_ = rows;  // start a new epoch on the first call
  }

  /// The next batch of row indices.
  std::vector<std::size_t> next() {
    std::vector<std::size_t> b;
    if (replacement_) {
      std::uniform_int_distribution<std::size_t> pick(0, rows_ - 1);
      for (std::size_t i = 0; i < batch_; ++i) b.push_back(pick(gen_));
      return b;
    }
    if (position_ >= rows_ || (drop_last_ && position_ + batch_ > rows_)) {
      std::shuffle(order_.begin(), order_.end(), gen_);
      position_ = 0;
      ++epoch_;
    }
    const std::size_t end = std::min(rows_, position_ + batch_);
    b.assign(order_.begin() + std::ptrdiff_t(position_), order_.begin() + std::ptrdiff_t(end));
    position_ = end;
    return b;
  }
  /// Batches in one epoch.
  [[nodiscard]] std::size_t batches_per_epoch() const {
    return drop_last_ ? rows_ / batch_ : (rows_ + batch_ - 1) / batch_;
  }
  /// Completed-or-started epochs (without replacement).
  [[nodiscard]] std::size_t epoch() const { return epoch_; }
  /// Passes over the data completed by the batches drawn so far: a pass is complete once its
  /// last batch is drawn (with drop_last, the last full one; the rows left over are not
  /// drawn in that pass). With 10 rows and batches of 3 that is after draws 3, 6, 9, ...
  /// Drawing with replacement has no epochs: always 0.
  [[nodiscard]] std::size_t epochs_completed() const {
    if (replacement_ || epoch_ == 0) return 0;
    const bool exhausted = position_ >= rows_ || (drop_last_ && position_ + batch_ > rows_);
    return exhausted ? epoch_ : epoch_ - 1;
  }

  /// Saves the generator and the place in the current epoch (core/checkpoint.hpp).
  void save_state(checkpoint_writer& w) const {
    w.u64(rows_);
    w.u64(batch_);
    w.u64((replacement_ ? 1u : 0u) | (drop_last_ ? 2u : 0u));
    std::ostringstream gen;
    gen << gen_;
    w.text(gen.str());
    w.values(std::span<const std::size_t>(order_));
    w.u64(position_);
    w.u64(epoch_);
  }
  /// Restores what save_state wrote; a sampler of another shape is rejected, unchanged.
  void load_state(checkpoint_reader& r) {
    const auto rows = r.u64("sampler rows"), batch = r.u64("sampler batch"), flags = r.u64("sampler flags");
    const std::uint64_t mine = (replacement_ ? 1u : 0u) | (drop_last_ ? 2u : 0u);
    if (rows != rows_ || batch != batch_ || flags != mine)
      throw checkpoint_error("bilevel: checkpoint sampler draws batches of " + std::to_string(batch) + " from " +
                             std::to_string(rows) + " rows, this one " + std::to_string(batch_) + " from " +
                             std::to_string(rows_) + (flags != mine ? " (and other replacement settings)" : ""));
    std::istringstream text(r.text("sampler generator"));
    std::mt19937_64 gen;
    text >> gen;
    if (text.fail()) throw checkpoint_error("bilevel: checkpoint sampler generator state is corrupted");
    auto order = r.values<std::size_t>("sampler order");
    const auto position = r.u64("sampler position"), epoch = r.u64("sampler epoch");
    if (order.size() != rows_ || position > rows_)
      throw checkpoint_error("bilevel: checkpoint sampler permutation is corrupted");
    for (std::size_t i : order)
      if (i >= rows_) throw checkpoint_error("bilevel: checkpoint sampler permutation is corrupted");
    gen_ = gen;
    order_ = std::move(order);
    position_ = position;
    epoch_ = epoch;
  }

 private:
  std::size_t rows_, batch_;
  bool replacement_, drop_last_;
  std::mt19937_64 gen_;
  std::vector<std::size_t> order_;
  std::size_t position_ = 0, epoch_ = 0;
};

}  // namespace bilevel::data
