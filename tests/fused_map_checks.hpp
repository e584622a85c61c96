// SPDX-License-Identifier: MIT
#pragma once
// The fused element-wise primitives (zip_apply, the cross-entropy head with its tangent, the
// segment and bias-and-map primitives),
// checked for any policy that has them against host loops in double: shared by the CPU suite
// (tests/test_policy.cpp) and the GPU suite (tests/cuda/test_policy.cu).
//
// Tolerances: zip_apply's functor below is one multiply-add per entry on exactly representable
// inputs, so it is exact. The head's entries are a few exp/log and sums over 7 classes, each
// rounded once per operation in the policy's scalar: within 32 units of its rounding (ε·32)
// of the double loop, relative to the row's largest entry (|z| ≤ 3, so nothing is amplified).
#include <doctest/doctest.h>

#include <bilevel/core/elementwise.hpp>
#include <bilevel/core/tensor_policy.hpp>
#include <bilevel/learners/activation.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

namespace test {

/// a_i += s·b_i; c_i = a_i (the new value) — one entry written from another written one.
struct axpy_and_copy {
  using bilevel_device_callable = void;
  double s;
  template <class S>
  BILEVEL_HOST_DEVICE void operator()(S& a, S b, S& c) const {
    a += S(s) * b;
    c = a;
  }
};

template <class P>
void check_zip_apply() {
  using S = bilevel::scalar_t<P>;
  constexpr std::size_t n = 300;  // more than one block of threads on a device
  std::vector<S> ah(n), bh(n);
  for (std::size_t i = 0; i < n; ++i) {
    ah[i] = S(0.25 * double(int(i % 9) - 4));
    bh[i] = S(0.5 * double(int(i % 5) - 2));
  }
  auto a = P::from_host(ah);
  const auto b = P::from_host(bh);
  auto c = P::zeros(n);
  P::zip_apply(axpy_and_copy{0.5}, a, b, c);
  const auto got_a = P::to_host(a), got_c = P::to_host(c);
  for (std::size_t i = 0; i < n; ++i) {
    CHECK(got_a[i] == S(ah[i] + S(0.5) * bh[i]));
    CHECK(got_c[i] == got_a[i]);
  }
  CHECK(P::to_host(b) == bh);  // a const operand is only read
  auto short_c = P::zeros(n - 1);
  CHECK_THROWS_AS(P::zip_apply(axpy_and_copy{0.5}, a, b, short_c), std::invalid_argument);
}

template <class P>
void check_softmax_cross_entropy() {
  using S = bilevel::scalar_t<P>;
  constexpr std::size_t r = 5, k = 7;  // row 3: soft targets with mass 0.5; row 4: no target at all
  std::vector<S> zh(r * k), th(r * k, S(0)), dzh(r * k), wh(r);
  for (std::size_t i = 0; i < r * k; ++i) {
    zh[i] = S(0.37 * double(int((i * 5) % 17) - 8));  // |z| <= 3
    dzh[i] = S(0.21 * double(int((i * 3) % 11) - 5));
  }
  for (std::size_t i = 0; i < 3; ++i) th[i * k + (i * 2) % k] = S(1);
  th[3 * k + 1] = S(0.25);
  th[3 * k + 4] = S(0.25);
  for (std::size_t i = 0; i < r; ++i) wh[i] = S(0.5 + 0.25 * double(i));
  const auto z = P::matrix_from_host(r, k, zh), t = P::matrix_from_host(r, k, th);
  const auto dz = P::matrix_from_host(r, k, dzh);
  typename P::vector mass, losses;
  typename P::matrix d, g;
  P::softmax_cross_entropy(z, t, mass, losses, d);
  P::softmax_cross_entropy_tangent(z, dz, mass, P::from_host(wh), S(0.125), g);
  const auto mh = P::to_host(mass), lh = P::to_host(losses), dh = P::matrix_to_host(d), gh = P::matrix_to_host(g);
  REQUIRE(mh.size() == r);
  REQUIRE(dh.size() == r * k);
  REQUIRE(gh.size() == r * k);
  const double tol = 32 * double(std::numeric_limits<S>::epsilon());
  for (std::size_t i = 0; i < r; ++i) {
    double mx = -1e300, s = 0, m = 0, tz = 0;
    for (std::size_t j = 0; j < k; ++j) mx = std::max(mx, double(zh[i * k + j]));
    for (std::size_t j = 0; j < k; ++j) {
      s += std::exp(double(zh[i * k + j]) - mx);
      m += double(th[i * k + j]);
      tz += double(th[i * k + j]) * double(zh[i * k + j]);
    }
    const double lse = std::log(s) + mx;
    CHECK(double(mh[i]) == doctest::Approx(m).epsilon(tol));
    CHECK(std::abs(double(lh[i]) - (m * lse - tz)) <= tol * (1 + std::abs(lse)));
    double pdz = 0;
    for (std::size_t j = 0; j < k; ++j) pdz += std::exp(double(zh[i * k + j]) - lse) * double(dzh[i * k + j]);
    for (std::size_t j = 0; j < k; ++j) {
      const double p = std::exp(double(zh[i * k + j]) - lse);
      CHECK(std::abs(double(dh[i * k + j]) - (m * p - double(th[i * k + j]))) <= tol);
      const double want = 0.125 * double(wh[i]) * m * (p * double(dzh[i * k + j]) - p * pdz);
      CHECK(std::abs(double(gh[i * k + j]) - want) <= tol * 2);  // |ż| <= 1.05, |p| <= 1
    }
  }
  auto wrong = P::matrix_zeros(r, k - 1);
  CHECK_THROWS_AS(P::softmax_cross_entropy(z, wrong, mass, losses, d), std::invalid_argument);
  CHECK_THROWS_AS(P::softmax_cross_entropy_tangent(z, wrong, mass, P::from_host(wh), S(1), g), std::invalid_argument);
  CHECK_THROWS_AS(P::softmax_cross_entropy_tangent(z, dz, P::zeros(r - 1), P::from_host(wh), S(1), g),
                  std::invalid_argument);
}

template <class P>
void check_segment_ops() {
  using S = bilevel::scalar_t<P>;
  constexpr std::size_t r = 4, c = 3, offset = 2;
  std::vector<S> mh(r * c), vh(8);
  for (std::size_t i = 0; i < r * c; ++i) mh[i] = S(0.25 * double(int(i % 7) - 3));
  for (std::size_t i = 0; i < vh.size(); ++i) vh[i] = S(0.5 * double(i) - 1);
  auto m = P::matrix_from_host(r, c, mh);
  const auto v = P::from_host(vh);
  P::add_segment_row(m, v, offset);
  const auto got = P::matrix_to_host(m);
  for (std::size_t i = 0; i < r; ++i)
    for (std::size_t j = 0; j < c; ++j) CHECK(got[i * c + j] == S(mh[i * c + j] + vh[offset + j]));
  auto w = P::from_host(vh);
  P::column_sums_into_segment(P::matrix_from_host(r, c, mh), w, offset);
  const auto wh = P::to_host(w);
  for (std::size_t j = 0; j < vh.size(); ++j) {
    if (j < offset || j >= offset + c) {
      CHECK(wh[j] == vh[j]);  // the rest of the vector untouched
      continue;
    }
    double sum = 0;
    for (std::size_t i = 0; i < r; ++i) sum += double(mh[i * c + j - offset]);
    CHECK(double(wh[j]) == sum);  // quarters: exact in any order
  }
  CHECK_THROWS_AS(P::add_segment_row(m, v, 6), std::invalid_argument);
  CHECK_THROWS_AS(P::column_sums_into_segment(m, w, 6), std::invalid_argument);

  // add_segment_row_map: the bias row added in place, then the map of the biased entries (and
  // of another operand's) written out; quarters and halves, and the ReLU's products with 0 and
  // 1, are exact. Into another matrix and into the biased one itself.
  {
    auto biased = P::matrix_from_host(r, c, mh);
    typename P::matrix mapped;
    P::add_segment_row_map(biased, v, offset, mapped, bilevel::learners::relu_value{});
    const auto bh = P::matrix_to_host(biased), oh = P::matrix_to_host(mapped);
    REQUIRE(oh.size() == r * c);
    for (std::size_t i = 0; i < r; ++i)
      for (std::size_t j = 0; j < c; ++j) {
        const S y = S(mh[i * c + j] + vh[offset + j]);
        CHECK(bh[i * c + j] == y);
        CHECK(oh[i * c + j] == (y > S(0) ? y : S(0)));
      }
    // The tangent's form: ẏ += v_b, then ẏ·σ'(y) with y another operand, in place.
    auto dots = P::matrix_from_host(r, c, mh);
    const auto y = P::matrix_from_host(r, c, std::vector<S>(bh.begin(), bh.end()));
    P::add_segment_row_map(dots, v, offset, dots, bilevel::learners::relu_slope_product{}, y);
    const auto dh = P::matrix_to_host(dots);
    for (std::size_t e = 0; e < r * c; ++e)
      CHECK(dh[e] == (bh[e] > S(0) ? S(mh[e] + vh[offset + e % c]) : S(0)));
    // A general activation's functor (a device mirror on the GPU), y ∈ [−0.75, 1.75]: tanh is
    // within 2 units of rounding, and 1 − t² then loses up to 2t²/(1 − t²) ≈ 16 units more at
    // y = 1.75, so 64 units of the scalar's rounding bound the product.
    auto smooth = P::matrix_from_host(r, c, mh);
    typename P::matrix slope;
    P::add_segment_row_map(smooth, v, offset, slope,
                           bilevel::learners::activation_slope_product{bilevel::learners::activation::tanh}, y);
    const auto sh = P::matrix_to_host(slope);
    for (std::size_t e = 0; e < r * c; ++e) {
      const double t = std::tanh(double(bh[e]));
      CHECK(double(sh[e]) == doctest::Approx(double(bh[e]) * (1 - t * t))
                                 .epsilon(64 * double(std::numeric_limits<S>::epsilon())));
    }
    CHECK_THROWS_AS(P::add_segment_row_map(biased, v, 6, mapped, bilevel::learners::relu_value{}),
                    std::invalid_argument);
    CHECK_THROWS_AS(P::add_segment_row_map(biased, v, offset, mapped, bilevel::learners::relu_slope_product{},
                                           P::matrix_zeros(r, c + 1)),
                    std::invalid_argument);
  }

  // map_column_sums_into_segment: out = f(x...) and v[offset + j] = Σ_i out_ij, the rest of v
  // untouched. The ReLU's slope product of quarters: every entry and sum exact.
  {
    const auto g = P::matrix_from_host(r, c, mh);
    std::vector<S> yh(r * c);
    for (std::size_t e = 0; e < r * c; ++e) yh[e] = S(0.5 * double(int(e % 5) - 2));
    const auto y = P::matrix_from_host(r, c, yh);
    auto sums = P::from_host(vh);
    typename P::matrix adjoint;
    P::map_column_sums_into_segment(adjoint, sums, offset, bilevel::learners::relu_slope_product{}, g, y);
    const auto ah = P::matrix_to_host(adjoint), sh = P::to_host(sums);
    REQUIRE(ah.size() == r * c);
    for (std::size_t e = 0; e < r * c; ++e) CHECK(ah[e] == (yh[e] > S(0) ? mh[e] : S(0)));
    for (std::size_t j = 0; j < vh.size(); ++j) {
      if (j < offset || j >= offset + c) {
        CHECK(sh[j] == vh[j]);
        continue;
      }
      S sum = 0;
      for (std::size_t i = 0; i < r; ++i) sum += ah[i * c + j - offset];
      CHECK(sh[j] == sum);
    }
    // In place (out is the first operand): the same values.
    auto in_place = P::matrix_from_host(r, c, mh);
    auto sums2 = P::from_host(vh);
    P::map_column_sums_into_segment(in_place, sums2, offset, bilevel::learners::relu_slope_product{}, in_place, y);
    CHECK(P::matrix_to_host(in_place) == ah);
    CHECK(P::to_host(sums2) == sh);
    // The tangent's four-operand map, ġ·σ'(y) + g·σ''(y)·ẏ, for tanh: each term within 64 units
    // of rounding (as above: tanh to 2 units, 1 − t² and t(1 − t²) losing ≈ 16 more at
    // |y| ≤ 1), their sum within 64 units of the terms' magnitudes, and a four-row column sum
    // adding 3 units of the magnitudes more, so 128 units bound both.
    std::vector<S> gdh(r * c), ydh(r * c);
    for (std::size_t e = 0; e < r * c; ++e) {
      gdh[e] = S(0.125 * double(int(e % 9) - 4));
      ydh[e] = S(0.25 * double(int(e % 4) - 1));
    }
    auto tangent_sums = P::from_host(vh);
    typename P::matrix tangent;
    P::map_column_sums_into_segment(tangent, tangent_sums, offset,
                                    bilevel::learners::activation_tangent_adjoint{bilevel::learners::activation::tanh},
                                    P::matrix_from_host(r, c, gdh), y, g, P::matrix_from_host(r, c, ydh));
    const auto th = P::matrix_to_host(tangent), tsh = P::to_host(tangent_sums);
    const double unit = double(std::numeric_limits<S>::epsilon());
    std::vector<double> column(c, 0.0), magnitude(c, 0.0);
    for (std::size_t e = 0; e < r * c; ++e) {
      const double t = std::tanh(double(yh[e]));
      const double first = double(gdh[e]) * (1 - t * t), second = double(mh[e]) * (-2 * t * (1 - t * t)) * double(ydh[e]);
      CHECK(std::abs(double(th[e]) - (first + second)) <= 64 * unit * (std::abs(first) + std::abs(second)));
      column[e % c] += first + second;
      magnitude[e % c] += std::abs(first) + std::abs(second);
    }
    for (std::size_t j = 0; j < c; ++j) CHECK(std::abs(double(tsh[offset + j]) - column[j]) <= 128 * unit * magnitude[j]);
    CHECK(tsh[0] == vh[0]);
    CHECK(tsh[offset + c] == vh[offset + c]);
    // More rows than one block of the device's kernel sums (256) and more columns than its 32
    // lanes: sums over chunks; quarters, so exact in any order.
    constexpr std::size_t tall = 600, wide = 40;
    std::vector<S> th2(tall * wide);
    for (std::size_t e = 0; e < th2.size(); ++e) th2[e] = S(0.25 * double(int(e % 11) - 5));
    const auto big = P::matrix_from_host(tall, wide, th2);
    auto big_sums = P::zeros(wide + 1);
    typename P::matrix doubled;
    P::map_column_sums_into_segment(doubled, big_sums, 1, bilevel::learners::relu_slope_product{}, big, big);
    const auto dh = P::matrix_to_host(doubled), bsh = P::to_host(big_sums);
    for (std::size_t j = 0; j < wide; ++j) {
      double sum = 0;
      for (std::size_t i = 0; i < tall; ++i) {
        const S x = th2[i * wide + j];
        CHECK(dh[i * wide + j] == (x > S(0) ? x : S(0)));
        sum += x > S(0) ? double(x) : 0.0;
      }
      CHECK(double(bsh[1 + j]) == sum);
    }
    CHECK(bsh[0] == S(0));
    CHECK_THROWS_AS(P::map_column_sums_into_segment(adjoint, sums, 6, bilevel::learners::relu_slope_product{}, g, y),
                    std::invalid_argument);
    CHECK_THROWS_AS(P::map_column_sums_into_segment(adjoint, sums, offset, bilevel::learners::relu_slope_product{}, g,
                                                    P::matrix_zeros(r, c + 1)),
                    std::invalid_argument);
  }

  // scale_rows_into: out_ij = m_ij·(c_i·factor), into another matrix and in place.
  const auto src = P::matrix_from_host(r, c, mh);
  const std::vector<S> ch = {S(1), S(-0.5), S(2), S(0.25)};
  typename P::matrix out;
  P::scale_rows_into(src, P::from_host(ch), S(0.5), out);
  auto in_place = P::matrix_from_host(r, c, mh);
  P::scale_rows_into(in_place, P::from_host(ch), S(0.5), in_place);
  const auto oh = P::matrix_to_host(out), ih = P::matrix_to_host(in_place);
  REQUIRE(oh.size() == r * c);
  for (std::size_t i = 0; i < r; ++i)
    for (std::size_t j = 0; j < c; ++j) {
      CHECK(oh[i * c + j] == mh[i * c + j] * (ch[i] * S(0.5)));
      CHECK(ih[i * c + j] == oh[i * c + j]);
    }
  CHECK_THROWS_AS(P::scale_rows_into(src, P::from_host(vh), S(1), out), std::invalid_argument);

  // scale_entry: y = (s·c_i)·x, the factor read from entry i.
  typename P::matrix y;
  P::scale_entry(S(2), P::from_host(ch), 1, src, y);  // 2 · (−0.5)
  const auto yh = P::matrix_to_host(y);
  REQUIRE(yh.size() == r * c);
  for (std::size_t e = 0; e < r * c; ++e) CHECK(yh[e] == S(-1) * mh[e]);
  CHECK_THROWS_AS(P::scale_entry(S(1), P::from_host(ch), 4, src, y), std::invalid_argument);

  // add_scaled_dot_into: out_i += s·⟨x, y⟩ for vectors (quarters and halves: exact).
  auto entries = P::from_host(std::vector<S>{S(1), S(10)});
  P::add_scaled_dot_into(P::from_host(ch), P::from_host(ch), S(0.5), entries, 1);
  double dot = 0;
  for (S x : ch) dot += double(x) * double(x);
  const auto eh = P::to_host(entries);
  CHECK(eh[0] == S(1));
  CHECK(double(eh[1]) == 10 + 0.5 * dot);
  CHECK_THROWS_AS(P::add_scaled_dot_into(P::from_host(ch), P::from_host(vh), S(1), entries, 0), std::invalid_argument);
  CHECK_THROWS_AS(P::add_scaled_dot_into(P::from_host(ch), P::from_host(ch), S(1), entries, 2), std::invalid_argument);
}

}  // namespace test
