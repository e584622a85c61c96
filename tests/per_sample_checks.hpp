// SPDX-License-Identifier: MIT
#pragma once
// The per-sample index maps (gather_per_sample, scatter_add_per_sample) and row_max_onehot,
// checked for any nn_tensor_policy against host loops: shared by the CPU suite
// (tests/test_policy.cpp, Eigen and xtensor) and the GPU suite (tests/cuda/test_policy.cu).
// Gathers and scatters move values without arithmetic, or add them in a fixed order, so the
// comparisons are exact.
#include <doctest/doctest.h>

#include <bilevel/core/tensor_policy.hpp>

#include <cstdint>
#include <limits>
#include <stdexcept>
#include <vector>

#include "host_math.hpp"

namespace test {

template <class P>
void check_per_sample_maps() {
  using S = bilevel::scalar_t<P>;
  using matrix = typename P::matrix;
  const auto as_matrix = device_matrix<P>;
  const auto values = host_matrix<P>;
  // 3 samples of 7 elements (stored 3 × 7); one sample's map: 2 × 3 outputs with padding
  // (−1) and a repeated source (4).
  constexpr std::size_t batch = 3, block = 7, r = 2, c = 3, n = r * c;
  std::vector<double> src_h(batch * block);
  for (std::size_t i = 0; i < src_h.size(); ++i) src_h[i] = double(S(0.25 * double(i) - 2.0));
  const matrix src = as_matrix(batch, block, src_h);
  const std::vector<std::int64_t> index = {4, -1, 0, 6, 4, 2};

  matrix out;
  P::gather_per_sample(src, index, batch, r, c, out);
  REQUIRE(P::rows(out) == batch * r);
  REQUIRE(P::cols(out) == c);
  const auto got = values(out);
  for (std::size_t b = 0; b < batch; ++b)
    for (std::size_t i = 0; i < n; ++i) {
      CAPTURE(b);
      CAPTURE(i);
      CHECK(got[b * n + i] == (index[i] >= 0 ? src_h[b * block + std::size_t(index[i])] : 0.0));
    }
  // The same as gather with the whole batch's map (one sample's, offset by b·block).
  std::vector<std::int64_t> whole;
  for (std::size_t b = 0; b < batch; ++b)
    for (auto k : index) whole.push_back(k >= 0 ? std::int64_t(b * block) + k : -1);
  matrix via_whole;
  P::gather(src, whole, batch * r, c, via_whole);
  CHECK(P::equal(via_whole, out));
  P::gather_per_sample(out, {0, 1}, batch * r, 1, 2, out);  // in place: src is out
  CHECK(P::rows(out) == batch * r);
  CHECK(P::cols(out) == 2);

  // scatter_add_per_sample: each destination adds its sources in ascending order, as the
  // host loop below does in S.
  std::vector<double> y_h(batch * n);
  for (std::size_t i = 0; i < y_h.size(); ++i) y_h[i] = double(S(1.0 + 0.125 * double(i)));
  matrix acc = src;
  P::scatter_add_per_sample(as_matrix(batch * r, c, y_h), index, batch, acc);
  std::vector<S> expect(src_h.begin(), src_h.end());
  for (std::size_t b = 0; b < batch; ++b)
    for (std::size_t i = 0; i < n; ++i)
      if (index[i] >= 0) expect[b * block + std::size_t(index[i])] += S(y_h[b * n + i]);
  CHECK(P::matrix_to_host(acc) == expect);  // bit for bit

  // Errors name the problem.
  CHECK_THROWS_WITH_AS(P::gather_per_sample(src, {0, 7}, batch, 1, 2, out),
                       doctest::Contains("gather_per_sample: index 7 is out of range for samples of 7 elements"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(P::gather_per_sample(src, index, 4, r, c, out),
                       doctest::Contains("gather_per_sample: 21 elements in 4 samples"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(P::gather_per_sample(src, index, batch, r, 2, out),
                       doctest::Contains("a map of 6 entries for 4 per sample"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(P::scatter_add_per_sample(as_matrix(batch * r, c, y_h), index, 2, acc),
                       doctest::Contains("scatter_add_per_sample: 18 elements are not 2 samples of 6"), std::invalid_argument);

  // row_max_onehot: the first maximum on ties, the first element of a −inf row.
  const double inf = std::numeric_limits<double>::infinity();
  const std::vector<double> m_h = {1, 3, 3, -2,  //
                                   -inf, -inf, -inf, -inf,
                                   0.5, -1, 2, 7};
  typename P::vector mx;
  matrix onehot;
  P::row_max_onehot(as_matrix(3, 4, m_h), mx, onehot);
  CHECK(host<P>(mx) == std::vector<double>{3, -inf, 7});
  CHECK(values(onehot) == std::vector<double>{0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1});
  CHECK_THROWS_WITH_AS(P::row_max_onehot(as_matrix(2, 0, {}), mx, onehot),
                       doctest::Contains("row_max_onehot: a matrix of 2 rows and no columns has no maximum"),
                       std::invalid_argument);
  P::row_max_onehot(as_matrix(0, 0, {}), mx, onehot);  // no rows: nothing to take, no error
  CHECK(P::size(mx) == 0);
  // row_max: the same maxima and their first indices; rows without columns have none.
  std::vector<std::int64_t> arg;
  P::row_max(as_matrix(3, 4, m_h), mx, arg);
  CHECK(host<P>(mx) == std::vector<double>{3, -inf, 7});
  CHECK(arg == std::vector<std::int64_t>{1, 0, 3});
  CHECK_THROWS_WITH_AS(P::row_max(as_matrix(2, 0, {}), mx, arg),
                       doctest::Contains("row_max: a matrix of 2 rows and no columns has no maximum"),
                       std::invalid_argument);
}

}  // namespace test
