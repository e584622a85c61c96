// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Test accuracy of a classifier network on a host data set: plain and class-balanced.
///
/// Every experiment reports these two numbers; balanced accuracy (the mean of the per-class
/// recalls) is the one that tells on long-tailed or noisy-label data, where a network can
/// score well by favouring the head classes. The data set is walked in chunks (1000 rows by
/// default) so that a test set of any size fits on the device, and the predicted class comes
/// from the policy's row_max (the first maximum on every back end, its indices brought to the
/// host), so the same code serves Eigen, xtensor and CUDA.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "bilevel/core/learner.hpp"
#include "bilevel/core/tensor_policy.hpp"
#include "bilevel/data/dataset.hpp"
#include "bilevel/learners/classification_batch.hpp"
#include "bilevel/learners/layers/layer_concept.hpp"

namespace bilevel::learners {

/// Accuracy in percent: `plain` = correct / rows; `balanced` = mean over the classes present
/// in the data set of correct / rows of that class (classes with no rows are left out of
/// the mean rather than counted as 0).
struct accuracy_percent {
  double plain = 0.0;
  double balanced = 0.0;
};

/// A network whose forward pass gives a batch × classes matrix of logits (sequential, mlp,
/// reading_segment<sequential>, ...).
template <class Net>
concept classifier_network =
    nn_tensor_policy<typename Net::policy> &&
    requires(const Net& net, const vector_t<typename Net::policy>& theta,
             const classification_batch<typename Net::policy>& b, input_list<typename Net::policy> in) {
      { net.forward(theta, b, in).logits } -> std::convertible_to<typename Net::policy::matrix>;
    };

/// The logits in evaluation mode (running statistics, no dropout) where the network has
/// modes (sequential), else its only forward pass.
template <classifier_network Net>
auto evaluation_logits(const Net& net, const vector_t<typename Net::policy>& theta,
                       const classification_batch<typename Net::policy>& b, input_list<typename Net::policy> in) {
  if constexpr (requires { net.forward(theta, b, in, pass_mode::evaluation); })
    return net.forward(theta, b, in, pass_mode::evaluation).logits;
  else
    return net.forward(theta, b, in).logits;
}

/// Plain and class-balanced accuracy of `net` in evaluation mode at parameters `theta` on
/// every row of `d`, in chunks of `chunk_rows` (256 by default: ResNet-20 on 28x28 took 5x
/// as long per image in chunks of 1000 as in chunks of 50, its convolutions' patches no longer
/// fitting a cache; measured on a 2-core AMD EPYC VM); `in` is what the network reads (its
/// architecture, for one that reads a segment of an upper level's variable), empty for a
/// plain network.
template <classifier_network Net>
accuracy_percent classification_accuracy(const Net& net, const vector_t<typename Net::policy>& theta,
                                         const data::dataset& d, input_list<typename Net::policy> in = {},
                                         std::size_t chunk_rows = 256) {
  using P = typename Net::policy;
  d.validate("the data set of classification_accuracy");
  if (chunk_rows == 0) throw std::invalid_argument("bilevel::learners::classification_accuracy: chunk_rows must be >= 1");
  std::vector<std::size_t> correct(d.num_classes, 0), total(d.num_classes, 0);
  std::vector<std::size_t> rows;
  std::vector<scalar_t<P>> staging;
  vector_t<P> row_maxima;
  std::vector<std::int64_t> predicted;
  for (std::size_t start = 0; start < d.rows; start += chunk_rows) {
    rows.resize(std::min(chunk_rows, d.rows - start));
    std::iota(rows.begin(), rows.end(), start);
    const auto batch = make_batch<P>(d, rows, staging);
    const auto logits = evaluation_logits(net, theta, batch, in);
    if (P::rows(logits) != rows.size() || P::cols(logits) != d.num_classes)
      throw std::invalid_argument("bilevel::learners::classification_accuracy: the network gives " +
                                  std::to_string(P::rows(logits)) + " x " + std::to_string(P::cols(logits)) +
                                  " logits for " + std::to_string(rows.size()) + " rows of a data set with " +
                                  std::to_string(d.num_classes) + " classes");
    P::row_max(logits, row_maxima, predicted);
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const auto y = std::size_t(batch.labels[i]);
      ++total[y];
      correct[y] += std::size_t(predicted[i]) == y ? 1 : 0;
    }
  }
  double recall = 0.0;
  std::size_t present = 0;
  for (std::size_t c = 0; c < d.num_classes; ++c)
    if (total[c] > 0) recall += double(correct[c]) / double(total[c]), ++present;
  const double all = double(std::accumulate(correct.begin(), correct.end(), std::size_t(0)));
  return {100.0 * all / double(d.rows), 100.0 * recall / double(present)};
}

}  // namespace bilevel::learners
