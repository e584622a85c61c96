// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Corruptions for experiments: symmetric and pair label noise (to the next class or along a
/// given pairing, such as fashion_mnist_similar_pairs()), long-tail class imbalance.
/// Each is seeded and records what it did, so that experiments can report the learned
/// weight of corrupted against clean samples.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "bilevel/data/dataset.hpp"

namespace bilevel::data {

/// Which rows a corruption changed, and their labels before.
struct corruption_record {
  std::vector<bool> corrupted;      ///< per row of the corrupted data set
  std::vector<int> original_labels; ///< per row
  [[nodiscard]] std::size_t count() const { return std::size_t(std::count(corrupted.begin(), corrupted.end(), true)); }
};

namespace detail {
inline void check_rate(double rate, const char* who) {
  if (!(rate >= 0.0 && rate <= 1.0))
    throw std::invalid_argument(std::string("bilevel::data::") + who + ": noise rate must be in [0, 1], got " +
                                std::to_string(rate));
}
/// Exactly round(rate · rows) distinct rows, seeded.
inline std::vector<std::size_t> pick_rows(std::size_t rows, double rate, std::mt19937_64& gen) {
  std::vector<std::size_t> order(rows);
  std::iota(order.begin(), order.end(), std::size_t(0));
  std::shuffle(order.begin(), order.end(), gen);
  order.resize(static_cast<std::size_t>(std::llround(rate * double(rows))));
  return order;
}
/// A pairing for pair noise must send every class to a real class other than itself: a class
/// sent to itself would count rows as corrupted whose labels did not change.
inline void check_pairing(const std::vector<int>& partner, std::size_t classes, const char* who) {
  const std::string where = std::string("bilevel::data::") + who + ": ";
  if (classes < 2) throw std::invalid_argument(where + "needs at least 2 classes");
  if (partner.size() != classes)
    throw std::invalid_argument(where + "the pairing has " + std::to_string(partner.size()) + " entries for " +
                                std::to_string(classes) + " classes");
  for (std::size_t c = 0; c < classes; ++c) {
    if (partner[c] < 0 || std::size_t(partner[c]) >= classes)
      throw std::invalid_argument(where + "the pairing maps class " + std::to_string(c) + " to " +
                                  std::to_string(partner[c]) + ", outside [0, " + std::to_string(classes) + ")");
    if (std::size_t(partner[c]) == c)
      throw std::invalid_argument(where + "the pairing maps class " + std::to_string(c) + " to itself");
  }
}
}  // namespace detail

/// Symmetric (uniform) noise. By default exactly round(rate·rows) rows get a label drawn
/// uniformly from the *other* classes, so `rate` is the fraction corrupted. With
/// `uniform_mix`, Meta-Weight-Net's `uniform_mix_C` is followed instead: every row, with
/// probability rate, gets a label drawn uniformly from *all* classes, so only about
/// rate·(C−1)/C of the labels change (36 % at rate 0.4, C = 10); only changed rows count as
/// corrupted.
inline corruption_record symmetric_label_noise(dataset& ds, double rate, std::uint64_t seed, bool uniform_mix = false) {
  detail::check_rate(rate, "symmetric_label_noise");
  if (ds.num_classes < 2) throw std::invalid_argument("bilevel::data::symmetric_label_noise: needs at least 2 classes");
  std::mt19937_64 gen(seed);
  corruption_record rec{std::vector<bool>(ds.rows, false), ds.labels};
  if (uniform_mix) {
    std::bernoulli_distribution flip(rate);
    std::uniform_int_distribution<int> any(0, int(ds.num_classes) - 1);
    for (std::size_t r = 0; r < ds.rows; ++r)
      if (flip(gen)) {
        ds.labels[r] = any(gen);
        rec.corrupted[r] = ds.labels[r] != rec.original_labels[r];
      }
    return rec;
  }
  std::uniform_int_distribution<int> other(1, int(ds.num_classes) - 1);
  for (std::size_t r : detail::pick_rows(ds.rows, rate, gen)) {
    ds.labels[r] = (ds.labels[r] + other(gen)) % int(ds.num_classes);
    rec.corrupted[r] = true;
  }
  return rec;
}

/// Pair (flip) noise with a given pairing: exactly round(rate·rows) rows, drawn from all rows
/// whatever their class, move from their class c to `partner[c]`. The pairing need not be
/// symmetric, but must map each of the data set's classes to another class (std::invalid_argument
/// otherwise, naming the entry), so every row drawn is a changed label and counts as corrupted.
/// The rows drawn depend on the seed and the rate only, not on the pairing.
inline corruption_record pair_label_noise(dataset& ds, double rate, std::uint64_t seed,
                                          const std::vector<int>& partner) {
  detail::check_rate(rate, "pair_label_noise");
  detail::check_pairing(partner, ds.num_classes, "pair_label_noise");
  std::mt19937_64 gen(seed);
  corruption_record rec{std::vector<bool>(ds.rows, false), ds.labels};
  for (std::size_t r : detail::pick_rows(ds.rows, rate, gen)) {
    ds.labels[r] = partner[std::size_t(ds.labels[r])];
    rec.corrupted[r] = true;
  }
  return rec;
}

/// The pairing c → (c+1) mod C: each class to the next, which knows nothing of the classes.
inline std::vector<int> next_class_pairing(std::size_t classes) {
  std::vector<int> partner(classes);
  for (std::size_t c = 0; c < classes; ++c) partner[c] = int((c + 1) % classes);
  return partner;
}

/// Pair (flip) noise to the next class: exactly round(rate·rows) rows move c → (c+1) mod C.
inline corruption_record pair_label_noise(dataset& ds, double rate, std::uint64_t seed) {
  return pair_label_noise(ds, rate, seed, next_class_pairing(ds.num_classes));
}

/// The pairing of similar Fashion-MNIST classes, for pair noise whose wrong labels are the
/// plausible mistakes (a shirt labelled T-shirt) rather than arbitrary ones (a shirt labelled
/// sneaker, as next_class_pairing would have it). Three pairs are garments or shoes of nearly
/// the same outline: T-shirt/top (0) ↔ Shirt (6), Pullover (2) ↔ Coat (4), Sandal (5) ↔
/// Sneaker (7). Of the four classes left, Trouser (1) ↔ Dress (3) are the two long, narrow
/// garments, and Bag (8) ↔ Ankle boot (9) pairs the two that remain (the ankle boot's closer
/// classes, the other shoes, are taken). The pairing is symmetric, every class flipping to a
/// partner that flips back, so that on balanced data such as Fashion-MNIST's each class gains
/// about as many wrong labels as it loses and keeps its size in expectation.
inline std::vector<int> fashion_mnist_similar_pairs() { return {6, 3, 4, 1, 2, 7, 0, 5, 9, 8}; }

/// The per-class counts of a long tail: n_c = round(n_max · IF^(−c/(C−1))), so class 0 keeps
/// n_max and the last class n_max/IF.
inline std::vector<std::size_t> long_tail_counts(std::size_t n_max, std::size_t classes, double imbalance_factor) {
  if (!(imbalance_factor >= 1.0))
    throw std::invalid_argument("bilevel::data::long_tail: imbalance factor must be >= 1, got " +
                                std::to_string(imbalance_factor));
  if (classes < 2) throw std::invalid_argument("bilevel::data::long_tail: needs at least 2 classes");
  std::vector<std::size_t> n(classes);
  for (std::size_t c = 0; c < classes; ++c)
    n[c] = std::size_t(std::llround(double(n_max) * std::pow(imbalance_factor, -double(c) / double(classes - 1))));
  return n;
}

/// A long-tailed subset (seeded): n_max is the smallest class count of `ds`, so every class
/// can supply its share. Rows keep their ids.
inline dataset long_tail(const dataset& ds, double imbalance_factor, std::uint64_t seed) {
  ds.validate("long_tail input");
  const auto counts = ds.class_counts();
  const std::size_t n_max = *std::min_element(counts.begin(), counts.end());
  const auto want = long_tail_counts(n_max, ds.num_classes, imbalance_factor);
  std::mt19937_64 gen(seed);
  std::vector<std::vector<std::size_t>> by_class(ds.num_classes);
  for (std::size_t r = 0; r < ds.rows; ++r) by_class[std::size_t(ds.labels[r])].push_back(r);
  std::vector<std::size_t> keep;
  for (std::size_t c = 0; c < ds.num_classes; ++c) {
    std::shuffle(by_class[c].begin(), by_class[c].end(), gen);
    keep.insert(keep.end(), by_class[c].begin(), by_class[c].begin() + std::ptrdiff_t(want[c]));
  }
  std::sort(keep.begin(), keep.end());
  return ds.subset(keep);
}

/// Fixed class weights from class sizes, the baselines that learned class weighting must beat:
/// c_k ∝ n_k^(−power), normalised to a mean of 1 over the classes that have samples (the convention of
/// class-balanced losses, Cui et al. 2019), so that a batch's loss keeps its scale however
/// skewed the classes are. power = 1 is inverse frequency, 0.5 the square-root rule, 0 all
/// ones. A class with no samples gets weight 0 (nothing to weigh). For a sequential<P, class_weights> network's input.
inline std::vector<double> class_frequency_weights(const dataset& ds, double power) {
  ds.validate("class_frequency_weights input");
  if (!(power >= 0.0) || !std::isfinite(power))
    throw std::invalid_argument("bilevel::data::class_frequency_weights: power must be finite and >= 0, got " +
                                std::to_string(power));
  const auto counts = ds.class_counts();
  std::vector<double> w(counts.size(), 0.0);
  double sum = 0;
  std::size_t present = 0;
  for (std::size_t k = 0; k < counts.size(); ++k)
    if (counts[k] > 0) {
      w[k] = std::pow(double(counts[k]), -power);
      sum += w[k];
      ++present;
    }
  if (present == 0) throw std::invalid_argument("bilevel::data::class_frequency_weights: the data set has no rows");
  for (double& x : w) x *= double(present) / sum;
  return w;
}

}  // namespace bilevel::data
