// SPDX-License-Identifier: MIT
#pragma once
// Random classification batches for the learner tests, built through the library's own
// make_batch so they work on every policy.
#include <bilevel/learners/classification_batch.hpp>

#include "support.hpp"

namespace test {

/// n samples of `features` uniform values in [−2, 2], label (i + seed) mod classes, id i.
template <class P>
bilevel::learners::classification_batch<P> random_batch(std::size_t n, std::size_t features, std::size_t classes,
                                                        unsigned seed) {
  bilevel::data::dataset d;
  d.rows = n;
  d.cols = features;
  d.num_classes = classes;
  const auto x = random_vector(n * features, seed, 2.0);
  d.features.assign(x.begin(), x.end());
  std::vector<std::size_t> rows;
  for (std::size_t i = 0; i < n; ++i) {
    d.labels.push_back(int((i + seed) % classes));
    d.ids.push_back(i);
    rows.push_back(i);
  }
  return bilevel::learners::make_batch<P>(d, rows);
}

}  // namespace test
