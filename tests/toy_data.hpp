// SPDX-License-Identifier: MIT
#pragma once
// Small classification data sets for method tests: 8 features, 3 classes, labels from a fixed
// linear rule (classes roughly balanced), optionally with a fraction of labels moved to another class.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include <bilevel/data/dataset.hpp>
#include <bilevel/learners/classification_batch.hpp>

namespace test {

struct toy_set {
  std::shared_ptr<const bilevel::data::dataset> data;
  std::vector<bool> corrupted;  ///< per row
};

/// `rows` samples, ids starting at `first_id`; a fraction `noise` of labels (chosen at
/// random) moved to the next class.
inline toy_set toy_classes(std::size_t rows, std::uint64_t seed, double noise = 0.0, std::size_t first_id = 0) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<float> normal;
  std::uniform_real_distribution<double> uniform;
  bilevel::data::dataset d;
  d.rows = rows;
  d.cols = 8;
  d.num_classes = 3;
  toy_set out;
  for (std::size_t r = 0; r < rows; ++r) {
    float score[3] = {0, 0, 0};
    for (std::size_t c = 0; c < d.cols; ++c) {
      const float x = normal(gen);
      d.features.push_back(x);
      for (int k = 0; k < 3; ++k) score[k] += x * float((c * 7 + std::size_t(k) * 3) % 5);
    }
    int label = int(std::max_element(score, score + 3) - score);
    const bool flip = uniform(gen) < noise;
    if (flip) label = (label + 1) % 3;
    d.labels.push_back(label);
    d.ids.push_back(first_id + r);
    out.corrupted.push_back(flip);
  }
  out.data = std::make_shared<const bilevel::data::dataset>(std::move(d));
  return out;
}

/// Every row of a data set as one batch.
template <class P>
bilevel::learners::classification_batch<P> whole(const bilevel::data::dataset& d) {
  std::vector<std::size_t> rows(d.rows);
  for (std::size_t r = 0; r < d.rows; ++r) rows[r] = r;
  return bilevel::learners::make_batch<P>(d, rows);
}

}  // namespace test
