// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Seeded subsets of a data set: uniformly at random, or stratified by class.
///
/// Experiments train on a fraction of a data set (a quick run, a low-data regime, a learning
/// curve); a plain random fraction of a small or long-tailed set can leave a class out or
/// skew the class mix, so the stratified subset keeps each class's share. Both keep each
/// row's sample id (per-sample upper variables keep following the sample) and return the rows
/// in their original order, so the same seed gives the same subset in the same order.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "bilevel/data/dataset.hpp"

namespace bilevel::data {

namespace detail {
inline void check_subset_size(const dataset& d, std::size_t n, const char* who) {
  d.validate(std::string("the input of ") + who);
  if (n == 0) throw std::invalid_argument(std::string("bilevel::data::") + who + ": asked for 0 rows (need >= 1)");
  if (n > d.rows)
    throw std::invalid_argument(std::string("bilevel::data::") + who + ": asked for " + std::to_string(n) +
                                " rows of a data set of " + std::to_string(d.rows));
}
}  // namespace detail

/// `n` rows drawn uniformly without replacement (seeded), in their original order, ids kept.
/// Throws std::invalid_argument for n == 0 or n > d.rows.
inline dataset random_subset(const dataset& d, std::size_t n, std::uint64_t seed) {
  detail::check_subset_size(d, n, "random_subset");
  std::vector<std::size_t> rows(d.rows);
  std::iota(rows.begin(), rows.end(), std::size_t(0));
  std::mt19937_64 gen(seed);
  std::shuffle(rows.begin(), rows.end(), gen);
  rows.resize(n);
  std::sort(rows.begin(), rows.end());
  return d.subset(rows);
}

/// How many rows of each class a stratified subset of `n` rows takes, given the class counts
/// (n <= their sum): shares proportional to the counts, rounded by the largest remainder
/// (ties to the lower class), then every class present in the data gets at least one row
/// when n is at least the number of such classes, each taken from the class whose share is
/// most over its exact quota. Never more than a class has.
inline std::vector<std::size_t> stratified_quotas(const std::vector<std::size_t>& counts, std::size_t n) {
  const std::size_t total = std::accumulate(counts.begin(), counts.end(), std::size_t(0));
  if (n > total)
    throw std::invalid_argument("bilevel::data::stratified_quotas: asked for " + std::to_string(n) + " rows of " +
                                std::to_string(total));
  const std::size_t C = counts.size();
  std::vector<std::size_t> quota(C, 0);
  std::vector<double> exact(C, 0.0);
  std::size_t given = 0;
  for (std::size_t c = 0; c < C; ++c) {
    // Integer floor of n·count/total (exact; the double is only for the remainders).
    quota[c] = std::size_t((static_cast<unsigned long long>(n) * counts[c]) / total);
    exact[c] = double(n) * double(counts[c]) / double(total);
    given += quota[c];
  }
  std::vector<std::size_t> order(C);
  std::iota(order.begin(), order.end(), std::size_t(0));
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return exact[a] - double(quota[a]) > exact[b] - double(quota[b]);
  });
  for (std::size_t i = 0; given < n; ++i, ++given) ++quota[order[i % C]];
  const std::size_t present = std::size_t(std::count_if(counts.begin(), counts.end(), [](std::size_t k) { return k > 0; }));
  if (n >= present) {
    for (std::size_t c = 0; c < C; ++c) {
      if (counts[c] == 0 || quota[c] > 0) continue;
      std::size_t donor = C;
      for (std::size_t k = 0; k < C; ++k)
        if (quota[k] > 1 && (donor == C || double(quota[k]) - exact[k] > double(quota[donor]) - exact[donor])) donor = k;
      if (donor == C) break;  // cannot happen when n >= present; kept as a guard
      --quota[donor];
      ++quota[c];
    }
  }
  return quota;
}

/// `n` rows with each class's count proportional to its frequency in `d` (stratified_quotas:
/// largest remainder, every class at least one row where n allows), drawn without
/// replacement within each class (seeded), in their original order, ids kept. Throws
/// std::invalid_argument for n == 0 or n > d.rows.
inline dataset stratified_subset(const dataset& d, std::size_t n, std::uint64_t seed) {
  detail::check_subset_size(d, n, "stratified_subset");
  const auto quota = stratified_quotas(d.class_counts(), n);
  std::vector<std::vector<std::size_t>> by_class(d.num_classes);
  for (std::size_t r = 0; r < d.rows; ++r) by_class[std::size_t(d.labels[r])].push_back(r);
  std::mt19937_64 gen(seed);
  std::vector<std::size_t> rows;
  rows.reserve(n);
  for (std::size_t c = 0; c < d.num_classes; ++c) {
    auto& members = by_class[c];
    std::shuffle(members.begin(), members.end(), gen);
    rows.insert(rows.end(), members.begin(), members.begin() + std::ptrdiff_t(quota[c]));
  }
  std::sort(rows.begin(), rows.end());
  return d.subset(rows);
}

}  // namespace bilevel::data
