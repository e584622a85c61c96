// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Class-conditional generators of synthetic samples, and the one shipped: a per-class
/// Gaussian in a PCA basis fitted on the training set.
///
/// LFM-CW (Gala & Xie, arXiv 2112.00275) re-trains on real data plus images from a
/// pretrained class-conditional GAN. That is out of reach on a CPU without downloads, so
/// pca_gaussian_generator stands in for it: it fits the top principal directions of the
/// training inputs, then for each class the mean and per-direction variance of the class's
/// coordinates, and samples x = μ + Σ_k z_k u_k with z ~ N(m_c, diag(s_c²)), clipped to the
/// data's range. Crude images, but class-conditional and cheap, which is what the method's
/// class weights act on. Any type with the members below can replace it.
#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "bilevel/data/dataset.hpp"

namespace bilevel::data {

/// What the methods need of a generator: n samples of class c (row-major, n × features).
template <class G>
concept class_conditional_generator = requires(const G& g, std::size_t c, std::size_t n, std::mt19937_64& rng) {
  { g.features() } -> std::convertible_to<std::size_t>;
  { g.classes() } -> std::convertible_to<std::size_t>;
  { g.sample(c, n, rng) } -> std::same_as<std::vector<float>>;
};

class pca_gaussian_generator {
 public:
  /// Fits `components` principal directions by subspace iteration on at most `max_rows`
  /// rows (seeded), then each class's Gaussian on all rows. Throws on an empty data set or a
  /// class with fewer than two samples.
  pca_gaussian_generator(const dataset& d, std::size_t components, std::uint64_t seed, std::size_t max_rows = 10000)
      : features_(d.cols), classes_(d.num_classes), k_(std::min(components, d.cols)) {
    d.validate("pca_gaussian_generator input");
    if (k_ == 0) throw std::invalid_argument("bilevel::data::pca_gaussian_generator: needs at least one component");
    lo_ = *std::min_element(d.features.begin(), d.features.end());
    hi_ = *std::max_element(d.features.begin(), d.features.end());
    mean_.assign(features_, 0.0);
    for (std::size_t r = 0; r < d.rows; ++r)
      for (std::size_t c = 0; c < features_; ++c) mean_[c] += d.features[r * features_ + c];
    for (auto& m : mean_) m /= double(d.rows);
    std::mt19937_64 gen(seed);
    std::vector<std::size_t> rows(d.rows);
    for (std::size_t r = 0; r < d.rows; ++r) rows[r] = r;
    std::shuffle(rows.begin(), rows.end(), gen);
    rows.resize(std::min(rows.size(), max_rows));
    fit_basis(d, rows, gen);
    fit_classes(d);
  }

  [[nodiscard]] std::size_t features() const { return features_; }
  [[nodiscard]] std::size_t classes() const { return classes_; }
  [[nodiscard]] std::size_t components() const { return k_; }

  [[nodiscard]] std::vector<float> sample(std::size_t cls, std::size_t n, std::mt19937_64& rng) const {
    if (cls >= classes_)
      throw std::out_of_range("bilevel::data::pca_gaussian_generator: class " + std::to_string(cls) + " of " +
                              std::to_string(classes_));
    std::normal_distribution<double> normal;
    std::vector<float> out(n * features_);
    std::vector<double> z(k_);
    for (std::size_t s = 0; s < n; ++s) {
      for (std::size_t k = 0; k < k_; ++k) z[k] = class_mean_[cls][k] + class_sd_[cls][k] * normal(rng);
      for (std::size_t c = 0; c < features_; ++c) {
        double x = mean_[c];
        for (std::size_t k = 0; k < k_; ++k) x += z[k] * basis_[k * features_ + c];
        out[s * features_ + c] = float(std::clamp(x, double(lo_), double(hi_)));
      }
    }
    return out;
  }

 private:
  /// Orthonormal top-k directions of the centred rows: k·(d) block subspace iteration.
  void fit_basis(const dataset& d, const std::vector<std::size_t>& rows, std::mt19937_64& gen) {
    std::normal_distribution<double> normal;
    basis_.assign(k_ * features_, 0.0);
    for (auto& b : basis_) b = normal(gen);
    orthonormalise();
    std::vector<double> proj(rows.size() * k_), next(k_ * features_);
    for (int iteration = 0; iteration < 6; ++iteration) {
      for (std::size_t i = 0; i < rows.size(); ++i)  // P = X_c Qᵀ
        for (std::size_t k = 0; k < k_; ++k) {
          double s = 0;
          const float* x = &d.features[rows[i] * features_];
          const double* q = &basis_[k * features_];
          for (std::size_t c = 0; c < features_; ++c) s += (double(x[c]) - mean_[c]) * q[c];
          proj[i * k_ + k] = s;
        }
      std::fill(next.begin(), next.end(), 0.0);  // Q' = Pᵀ X_c
      for (std::size_t i = 0; i < rows.size(); ++i) {
        const float* x = &d.features[rows[i] * features_];
        for (std::size_t k = 0; k < k_; ++k) {
          const double p = proj[i * k_ + k];
          double* q = &next[k * features_];
          for (std::size_t c = 0; c < features_; ++c) q[c] += p * (double(x[c]) - mean_[c]);
        }
      }
      basis_.swap(next);
      orthonormalise();
    }
  }

  void orthonormalise() {  // modified Gram–Schmidt over the k rows
    for (std::size_t k = 0; k < k_; ++k) {
      double* v = &basis_[k * features_];
      for (std::size_t m = 0; m < k; ++m) {
        const double* u = &basis_[m * features_];
        double dot = 0;
        for (std::size_t c = 0; c < features_; ++c) dot += v[c] * u[c];
        for (std::size_t c = 0; c < features_; ++c) v[c] -= dot * u[c];
      }
      double norm = 0;
      for (std::size_t c = 0; c < features_; ++c) norm += v[c] * v[c];
      norm = std::sqrt(norm);
      if (!(norm > 1e-12)) throw std::runtime_error("bilevel::data::pca_gaussian_generator: data have rank < components");
      for (std::size_t c = 0; c < features_; ++c) v[c] /= norm;
    }
  }

  void fit_classes(const dataset& d) {
    class_mean_.assign(classes_, std::vector<double>(k_, 0.0));
    class_sd_.assign(classes_, std::vector<double>(k_, 0.0));
    std::vector<std::size_t> count(classes_, 0);
    std::vector<double> z(k_);
    for (int pass = 0; pass < 2; ++pass)
      for (std::size_t r = 0; r < d.rows; ++r) {
        const std::size_t y = std::size_t(d.labels[r]);
        for (std::size_t k = 0; k < k_; ++k) {
          double s = 0;
          for (std::size_t c = 0; c < features_; ++c) s += (double(d.features[r * features_ + c]) - mean_[c]) * basis_[k * features_ + c];
          if (pass == 0) class_mean_[y][k] += s;
          else class_sd_[y][k] += (s - class_mean_[y][k]) * (s - class_mean_[y][k]);
        }
        if (pass == 0) ++count[y];
        if (pass == 0 && r + 1 == d.rows)
          for (std::size_t c = 0; c < classes_; ++c) {
            if (count[c] < 2)
              throw std::invalid_argument("bilevel::data::pca_gaussian_generator: class " + std::to_string(c) + " has " +
                                          std::to_string(count[c]) + " samples; a Gaussian needs two");
            for (auto& m : class_mean_[c]) m /= double(count[c]);
          }
      }
    for (std::size_t c = 0; c < classes_; ++c)
      for (auto& v : class_sd_[c]) v = std::sqrt(v / double(count[c] - 1));
  }

  std::size_t features_, classes_, k_;
  float lo_ = 0, hi_ = 1;
  std::vector<double> mean_, basis_;  // basis_: k × features, orthonormal rows
  std::vector<std::vector<double>> class_mean_, class_sd_;
};

static_assert(class_conditional_generator<pca_gaussian_generator>);

}  // namespace bilevel::data
