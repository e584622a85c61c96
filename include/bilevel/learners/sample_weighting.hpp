// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// How a classifier's loss reads per-sample weights from an upper level. The weighted loss
/// is L = (1/B) Σ_i c_i ℓ_i, c a function of the upper variable w and (for weighting nets)
/// of the network's detached per-sample signals s (its losses ℓ, logits, the features
/// entering its last layer). A Weighting provides
///   gather(in, batch, s) → c,     scatter(in, batch, s, r, k) → Σ_i r_i ∂c_i/∂in_k,
///   gather_tangent(in, batch, s, u, k) → ∂c/∂in_k · u,
/// for each of its `num_inputs` input slots k (most weightings read one),
/// from which every product with respect to w follows. The signals are constants to the
/// classifier (detached, as in Meta-Weight-Net's code). For the linear weightings here
/// gather_tangent(u) is gather at u and scatter does not depend on w.
///   - unweighted:      no input, c_i = 1;
///   - sample_weights:  input = a table with one weight per sample id, c_i = w[id_i]
///                      (LFM's data-reweighting form, keyed by id, not batch position);
///   - class_weights:   input = one weight per class, c_i = w[label_i] (LFM-CW's weights).
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "bilevel/core/learner.hpp"
#include "bilevel/learners/classification_batch.hpp"

namespace bilevel::learners {

/// What a network shows a weighting about each sample of a batch, detached.
template <tensor_policy P>
struct sample_signals {
  const vector_t<P>& losses;                    ///< ℓ_i, unweighted
  const typename P::matrix* logits = nullptr;    ///< B × classes, or null if the learner has none
  const typename P::matrix* features = nullptr;  ///< B × F, the input of the last layer, or null
};

struct unweighted {
  static constexpr std::size_t num_inputs = 0;
  [[nodiscard]] std::size_t input_size(std::size_t) const { return 0; }
  template <tensor_policy P>
  vector_t<P> gather(input_list<P>, const classification_batch<P>& b, const sample_signals<P>&) const {
    vector_t<P> c = P::zeros(b.size());
    P::fill(c, scalar_t<P>(1));
    return c;
  }
  template <tensor_policy P>
  vector_t<P> scatter(input_list<P>, const classification_batch<P>&, const sample_signals<P>&, const vector_t<P>&,
                      std::size_t) const {
    throw std::logic_error("bilevel::learners::unweighted has no input to differentiate");
  }
  template <tensor_policy P>
  vector_t<P> gather_tangent(input_list<P>, const classification_batch<P>&, const sample_signals<P>&,
                             const vector_t<P>&, std::size_t) const {
    throw std::logic_error("bilevel::learners::unweighted has no input to differentiate");
  }
};

namespace detail {
/// A weight table read at one entry per sample; `Key::entry(batch, i, size)` says which
/// (and throws, naming the sample, when it has none). Linear in the table, so the tangent
/// is the table lookup at u and the adjoint is a scatter-add.
template <class Key>
struct table_weighting {
  static constexpr std::size_t num_inputs = 1;

  template <nn_tensor_policy P>
  vector_t<P> gather(input_list<P> in, const classification_batch<P>& b) const {
    const std::size_t n = P::size(*in[0]);
    typename P::matrix table, picked;
    P::reshape(*in[0], n, 1, table);
    P::gather(table, entries(b, n), b.size(), 1, picked);
    vector_t<P> c;
    P::row_sums(picked, c);  // the B × 1 result as a vector
    return c;
  }
  template <nn_tensor_policy P>
  vector_t<P> gather(input_list<P> in, const classification_batch<P>& b, const sample_signals<P>&) const {
    return gather(in, b);
  }
  template <nn_tensor_policy P>
  vector_t<P> gather_tangent(input_list<P>, const classification_batch<P>& b, const sample_signals<P>&,
                             const vector_t<P>& u, std::size_t = 0) const {
    const vector_t<P>* at[] = {&u};
    return gather(input_list<P>(at), b);
  }
  template <nn_tensor_policy P>
  vector_t<P> scatter(input_list<P> in, const classification_batch<P>& b, const sample_signals<P>&,
                      const vector_t<P>& r, std::size_t = 0) const {
    const std::size_t n = P::size(*in[0]);
    typename P::matrix table = P::matrix_zeros(n, 1), adjoints;
    P::reshape(r, P::size(r), 1, adjoints);
    P::scatter_add(adjoints, entries(b, n), table);
    vector_t<P> out;
    P::row_sums(table, out);
    return out;
  }

 private:
  /// The table entry of every sample of the batch (host data: the batch's ids or labels), as
  /// an index map for the policy's gather and scatter-add, so the table stays where it is.
  template <class B>
  static std::vector<std::int64_t> entries(const B& b, std::size_t n) {
    std::vector<std::int64_t> e(b.size());
    for (std::size_t i = 0; i < b.size(); ++i) e[i] = std::int64_t(Key::entry(b, i, n));
    return e;
  }
};

struct by_sample_id {
  template <class B>
  static std::size_t entry(const B& b, std::size_t i, std::size_t n) {
    const std::size_t id = b.ids.at(i);
    if (id >= n)
      throw std::out_of_range("bilevel::learners::sample_weights: sample id " + std::to_string(id) +
                              " has no entry in a weight table of " + std::to_string(n));
    return id;
  }
};
struct by_label {
  template <class B>
  static std::size_t entry(const B& b, std::size_t i, std::size_t n) {
    const int l = b.labels.at(i);
    if (l < 0 || std::size_t(l) >= n)
      throw std::out_of_range("bilevel::learners::class_weights: sample " + std::to_string(i) + " has label " +
                              std::to_string(l) + " but there are " + std::to_string(n) + " class weights");
    return std::size_t(l);
  }
};
}  // namespace detail

/// One weight per sample id in [0, num_samples).
struct sample_weights : detail::table_weighting<detail::by_sample_id> {
  std::size_t num_samples = 0;
  explicit sample_weights(std::size_t n = 0) : num_samples(n) {}
  [[nodiscard]] std::size_t input_size(std::size_t) const { return num_samples; }
};

/// One weight per class.
struct class_weights : detail::table_weighting<detail::by_label> {
  std::size_t classes = 0;
  explicit class_weights(std::size_t n = 0) : classes(n) {}
  [[nodiscard]] std::size_t input_size(std::size_t) const { return classes; }
};

}  // namespace bilevel::learners
