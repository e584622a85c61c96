// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Batches of real training samples followed by class-conditional synthetic ones: `real`
/// rows drawn like dataset_batches, then `synthetic` rows from a generator, spread evenly
/// over the classes (round robin, so every class appears as often over time). Synthetic rows
/// carry ids from synthetic_id_base upward, so a weighting can tell them from real samples.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "bilevel/core/checkpoint.hpp"
#include "bilevel/data/generator.hpp"
#include "bilevel/learners/classification_batch.hpp"

namespace bilevel::learners {

/// Ids at or above this mark synthetic samples (no data set has 2^40 rows).
inline constexpr std::size_t synthetic_id_base = std::size_t(1) << 40;

template <tensor_policy P, data::class_conditional_generator G>
class with_synthetic_batches {
 public:
  with_synthetic_batches(std::shared_ptr<const data::dataset> d, std::shared_ptr<const G> generator, std::size_t real,
                         std::size_t synthetic, std::uint64_t seed)
      : real_(std::move(d), real, seed), generator_(std::move(generator)), synthetic_(synthetic), gen_(seed + 7919) {
    if (!generator_) throw std::invalid_argument("bilevel::learners::with_synthetic_batches: no generator");
    if (generator_->features() != real_.data().cols || generator_->classes() != real_.data().num_classes)
      throw std::invalid_argument("bilevel::learners::with_synthetic_batches: the generator makes " +
                                  std::to_string(generator_->features()) + " features in " +
                                  std::to_string(generator_->classes()) + " classes, the data have " +
                                  std::to_string(real_.data().cols) + " in " + std::to_string(real_.data().num_classes));
  }

  /// The real rows and the synthetic rows gathered on the host and uploaded once (the real
  /// rows never make a round trip through the device).
  classification_batch<P> operator()() {
    const auto rows = real_.next_rows();
    const data::dataset& d = real_.data();
    const std::size_t B = rows.size(), C = generator_->classes(), F = generator_->features(), N = B + synthetic_;
    classification_batch<P> b;
    b.labels.reserve(N);
    b.ids.reserve(N);
    staging_.resize(N * (F + C));
    scalar_t<P>* x = staging_.data();
    scalar_t<P>* t = x + N * F;
    gather_rows(d, rows, x, t, b.labels, b.ids);
    std::fill(t + B * C, t + N * C, scalar_t<P>(0));
    for (std::size_t s = 0; s < synthetic_; ++s) {
      const std::size_t c = next_class_++ % C;
      const auto sample = generator_->sample(c, 1, gen_);
      std::copy_n(sample.begin(), F, x + (B + s) * F);
      t[(B + s) * C + c] = scalar_t<P>(1);
      b.labels.push_back(int(c));
      b.ids.push_back(synthetic_id_base + next_id_++);
    }
    const std::span<const scalar_t<P>> host(staging_);
    b.x = P::matrix_from_host(N, F, host.first(N * F));
    b.targets = P::matrix_from_host(N, C, host.subspan(N * F));
    return b;
  }
  [[nodiscard]] std::size_t batches_per_epoch() const { return real_.batches_per_epoch(); }
  /// Passes over the real data completed so far (synthetic rows have no epochs).
  [[nodiscard]] std::size_t epochs_completed() const { return real_.epochs_completed(); }

  void save_state(checkpoint_writer& w) const {
    real_.save_state(w);
    std::ostringstream g;
    g << gen_;
    w.text(g.str());
    w.u64(next_class_);
    w.u64(next_id_);
  }
  void load_state(checkpoint_reader& r) {
    auto real = real_;
    real.load_state(r);
    std::istringstream text(r.text("generator rng"));
    std::mt19937_64 gen;
    text >> gen;
    if (text.fail()) throw checkpoint_error("bilevel: checkpoint synthetic-sampler generator state is corrupted");
    const auto next_class = r.u64("next class"), next_id = r.u64("next id");
    real_ = std::move(real);
    gen_ = gen;
    next_class_ = next_class;
    next_id_ = next_id;
  }

 private:
  dataset_batches<P> real_;
  std::shared_ptr<const G> generator_;
  std::size_t synthetic_;
  std::mt19937_64 gen_;
  std::size_t next_class_ = 0, next_id_ = 0;
  std::vector<scalar_t<P>> staging_;  ///< the host batch, kept between draws
};

}  // namespace bilevel::learners
