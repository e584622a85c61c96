// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// The host policies' (Eigen, xtensor) per-sample index maps and row maximum with a one-hot
/// choice, on raw row-major storage, written once for both.
///
/// A per-sample map is one sample's: convolution patches and pooling windows read the same
/// positions of every sample, so the map has the size of one sample's output, whatever the
/// batch (a whole-batch map grows with the batch, and a device back end would have to compare
/// and upload it at every call). Storage falls into `batch` equal blocks, one per sample.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace bilevel::policy::detail {

/// One sample's share of `elements`, after checking that the batch divides it and that the
/// map has `n` entries.
inline std::size_t per_sample_block(const char* policy, const char* op, std::size_t elements,
                                    const std::vector<std::int64_t>& index, std::size_t batch, std::size_t n) {
  if (batch == 0 || elements % batch != 0 || index.size() != n)
    throw std::invalid_argument(std::string("bilevel::policy::") + policy + "::" + op + ": " +
                                std::to_string(elements) + " elements in " + std::to_string(batch) +
                                " samples, a map of " + std::to_string(index.size()) + " entries for " +
                                std::to_string(n) + " per sample");
  return elements / batch;
}
/// Throws unless `elements` are `batch` samples of n (a scatter's source: one map's worth each).
inline void require_samples_of(const char* policy, const char* op, std::size_t elements, std::size_t batch,
                               std::size_t n) {
  if (batch == 0 || elements != batch * n)
    throw std::invalid_argument(std::string("bilevel::policy::") + policy + "::" + op + ": " +
                                std::to_string(elements) + " elements are not " + std::to_string(batch) +
                                " samples of " + std::to_string(n));
}
/// Throws unless the map's largest entry points inside a sample of `block` elements.
inline void require_inside_sample(const char* policy, const char* op, std::int64_t max_index, std::size_t block) {
  if (max_index >= std::int64_t(block))
    throw std::invalid_argument(std::string("bilevel::policy::") + policy + "::" + op + ": index " +
                                std::to_string(max_index) + " is out of range for samples of " +
                                std::to_string(block) + " elements");
}
inline std::int64_t largest_entry(const std::vector<std::int64_t>& index) {
  std::int64_t m = -1;
  for (std::int64_t k : index) m = k > m ? k : m;
  return m;
}

/// Throws unless x (rows_x rows) and y (rows_y rows) are `batch` samples each and the tap map
/// (output pixel, tap) → input pixel has whole output pixels that read inside x's samples;
/// gives x's pixels per sample. What the direct convolution primitives check.
inline std::size_t tap_map_input_pixels(const char* policy, const char* op, std::size_t rows_x, std::size_t rows_y,
                                        const std::vector<std::int64_t>& index, std::size_t taps, std::size_t batch) {
  const auto fail = [&](const std::string& what) {
    throw std::invalid_argument(std::string("bilevel::policy::") + policy + "::" + op + ": " + what);
  };
  if (batch == 0 || taps == 0 || index.size() % taps != 0)
    fail("a tap map of " + std::to_string(index.size()) + " entries is not whole pixels of " + std::to_string(taps) +
         " taps");
  if (rows_x % batch != 0 || rows_y != batch * (index.size() / taps))
    fail(std::to_string(rows_x) + " input and " + std::to_string(rows_y) + " output rows are not " +
         std::to_string(batch) + " samples of the map's " + std::to_string(index.size() / taps) + " output pixels");
  require_inside_sample(policy, op, largest_entry(index), rows_x / batch);
  return rows_x / batch;
}
/// Throws unless the weights [offset, offset + n) lie inside a vector of `size` elements.
inline void require_weights_inside(const char* policy, const char* op, std::size_t size, std::size_t offset,
                                   std::size_t n) {
  if (offset + n > size)
    throw std::invalid_argument(std::string("bilevel::policy::") + policy + "::" + op + ": weights [" +
                                std::to_string(offset) + ", " + std::to_string(offset + n) + ") exceed a vector of " +
                                std::to_string(size) + " elements");
}

/// A stretch of a map that reads consecutive source elements (`from` ≥ 0) or only zeros
/// (`from` = −1): convolution patches read a window tap's channels as one run, so a gather or
/// scatter copies runs instead of looking up every element (about 3x faster on im2col maps).
struct index_run {
  std::size_t at, length;
  std::int64_t from;
};
inline std::vector<index_run> runs_of(const std::vector<std::int64_t>& index) {
  std::vector<index_run> runs;
  for (std::size_t i = 0; i < index.size();) {
    std::size_t j = i + 1;
    if (index[i] < 0)
      while (j < index.size() && index[j] < 0) ++j;
    else
      while (j < index.size() && index[j] == index[j - 1] + 1) ++j;
    runs.push_back({i, j - i, index[i] < 0 ? -1 : index[i]});
    i = j;
  }
  return runs;
}

/// out block b (index.size() elements) = src block b read through index (−1: 0).
template <class S>
void gather_per_sample(const S* src, std::size_t block, const std::vector<std::int64_t>& index, std::size_t batch,
                       S* out) {
  const std::size_t n = index.size();
  const auto runs = runs_of(index);
  for (std::size_t b = 0; b < batch; ++b, src += block, out += n)
    for (const auto& r : runs) {
      S* o = out + r.at;
      if (r.from < 0) std::fill_n(o, r.length, S(0));
      else std::copy_n(src + r.from, r.length, o);
    }
}

/// out block b (block elements) += src block b (index.size() elements) scattered through index.
/// Within a run the source and destination are distinct buffers, so the loop vectorises.
template <class S>
void scatter_add_per_sample(const S* src, const std::vector<std::int64_t>& index, std::size_t batch, S* out,
                            std::size_t block) {
  const std::size_t n = index.size();
  const auto runs = runs_of(index);
  for (std::size_t b = 0; b < batch; ++b, src += n, out += block)
    for (const auto& r : runs) {
      if (r.from < 0) continue;
      const S* __restrict s = src + r.at;
      S* __restrict o = out + r.from;
      for (std::size_t k = 0; k < r.length; ++k) o[k] += s[k];
    }
}

/// Throws unless every row has a column to take the maximum of (a matrix with rows and no
/// columns would leave the maxima unwritten, or be read out of range).
inline void require_columns_for_max(const char* policy, const char* op, std::size_t rows, std::size_t cols) {
  if (rows > 0 && cols == 0)
    throw std::invalid_argument(std::string("bilevel::policy::") + policy + "::" + op + ": a matrix of " +
                                std::to_string(rows) + " rows and no columns has no maximum");
}

/// max_i = max_j m_ij; onehot_ij = 1 at each row's first maximum, 0 elsewhere. A row's first
/// element is taken unless a later one is strictly larger (as row_max does).
template <class S>
void row_max_onehot(const S* m, std::size_t rows, std::size_t cols, S* max, S* onehot) {
  for (std::size_t i = 0; i < rows; ++i, m += cols, onehot += cols) {
    std::size_t best = 0;
    for (std::size_t j = 1; j < cols; ++j)
      if (m[j] > m[best]) best = j;
    for (std::size_t j = 0; j < cols; ++j) onehot[j] = S(j == best ? 1 : 0);
    if (cols) max[i] = m[best];
  }
}

}  // namespace bilevel::policy::detail
