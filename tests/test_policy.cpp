// SPDX-License-Identifier: MIT
// The Eigen policy's operations against naive loops, for float and double: BLAS-1, element-wise
// maps, gemv and gemm in every transpose combination with and without beta, host transfer;
// dot and sum accumulating in double for float; shape errors that name the sizes; all_finite.
//
// Reference values are computed in double from the very scalars the policy holds (each host
// value is first rounded to S), so the only differences are the policy's own roundings. The
// tolerances are the textbook bounds for those roundings, in units of u = ε_S/2 (S's unit
// roundoff): a k-term sum or dot has |error| ≤ k·u·Σ|terms| (to first order). A wrong index,
// transpose or coefficient gives an O(1) relative error and fails them.
#include <doctest/doctest.h>

#include <bilevel/core/elementwise.hpp>
#include <bilevel/policy/eigen.hpp>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

#include "entry_op_checks.hpp"
#include "fused_map_checks.hpp"
#include "gemm_cases.hpp"
#include "per_sample_checks.hpp"
#include "policies.hpp"
#include "support.hpp"
#include "window_max_checks.hpp"

namespace {
/// Host values rounded to S and back to double: what the policy really holds.
template <class S>
std::vector<double> rounded(std::vector<double> v) {
  for (auto& x : v) x = double(S(x));
  return v;
}
/// Unit roundoff of S.
template <class S>
constexpr double unit_roundoff = std::numeric_limits<S>::epsilon() / 2;
}  // namespace

TEST_CASE_TEMPLATE("policy: allocation, BLAS-1 and reductions match naive loops", P, BILEVEL_FLOAT_POLICIES, BILEVEL_DOUBLE_POLICIES) {
  using S = typename P::scalar;
  const double u = unit_roundoff<S>;
  // 1000 elements: three full blocks of 256 and a tail of 232, so the blocked float
  // accumulation of dot and sum is exercised across block boundaries and in its tail.
  const std::size_t n = 1000;
  const auto xh = rounded<S>(test::random_vector(n, 1)), yh = rounded<S>(test::random_vector(n, 2));
  const auto x = test::device<P>(xh);
  auto y = test::device<P>(yh);

  SUBCASE("zeros, resize, size, copy, fill") {
    const auto z = P::zeros(5);
    CHECK(P::size(z) == 5);
    CHECK(test::host<P>(z) == std::vector<double>(5, 0.0));
    typename P::vector r;
    P::resize(r, 7);
    CHECK(P::size(r) == 7);
    P::copy(x, r);
    CHECK(test::host<P>(r) == xh);  // a copy is exact
    P::fill(r, S(3));
    CHECK(test::host<P>(r) == std::vector<double>(n, 3.0));
  }
  SUBCASE("axpy") {
    const S a = S(-1.75);  // exactly representable, so a·x is rounded once
    P::axpy(a, x, y);
    for (std::size_t i = 0; i < n; ++i) {
      CAPTURE(i);
      // y_i + a x_i: at most two roundings (product, sum; one if fused): ≤ 2u(|y_i| + |a x_i|).
      const double exact = yh[i] + double(a) * xh[i];
      CHECK(std::abs(double(y[long(i)]) - exact) <= 2 * u * (std::abs(yh[i]) + std::abs(double(a) * xh[i])));
    }
  }
  SUBCASE("scale") {
    P::scale(y, S(0.3));
    for (std::size_t i = 0; i < n; ++i) {
      CAPTURE(i);
      // one rounding of the product: ≤ u|exact| (S(0.3) is what the policy multiplies by).
      const double exact = double(S(0.3)) * yh[i];
      CHECK(std::abs(double(y[long(i)]) - exact) <= u * std::abs(exact));
    }
  }
  SUBCASE("dot, norm, sum") {
    double dot = 0, abs_dot = 0, sum = 0, abs_sum = 0, sq = 0;
    for (std::size_t i = 0; i < n; ++i) {
      dot += xh[i] * yh[i];  // products of two S values are exact in double (float) or ~u-accurate (double)
      abs_dot += std::abs(xh[i] * yh[i]);
      sum += xh[i];
      abs_sum += std::abs(xh[i]);
      sq += xh[i] * xh[i];
    }
    // Each term is accumulated in S within a block of at most 256 (then in double across
    // blocks): |error| ≤ (256 + 1)·u·Σ|terms| for float; for double, n·u·Σ|terms| bounds any order.
    const double k = std::is_same_v<S, float> ? 257.0 : double(n);
    CHECK(std::abs(P::dot(x, y) - dot) <= k * u * abs_dot);
    CHECK(std::abs(P::sum(x) - sum) <= k * u * abs_sum);
    // norm = sqrt(dot(x, x)): relative error at most half that of the dot, plus one rounding.
    CHECK(std::abs(P::norm(x) - std::sqrt(sq)) <= (k * u / 2 + u) * std::sqrt(sq));
    CHECK(P::dot(x, y) == P::dot(y, x));  // same products, same order
  }
  SUBCASE("hadamard and transform") {
    typename P::vector out;
    P::hadamard(x, y, out);
    REQUIRE(P::size(out) == n);
    // One rounding per element, the same one the loop below makes in S: exactly equal.
    for (std::size_t i = 0; i < n; ++i) CHECK(out[long(i)] == S(xh[i]) * S(yh[i]));
    P::transform(x, out, [](S v) { return S(2) * v + S(1); });
    REQUIRE(P::size(out) == n);
    for (std::size_t i = 0; i < n; ++i) CHECK(out[long(i)] == S(2) * S(xh[i]) + S(1));  // f applied as given: exact
    P::transform(x, y, out, [](S a, S b) { return a - S(3) * b; });
    REQUIRE(P::size(out) == n);
    for (std::size_t i = 0; i < n; ++i) CHECK(out[long(i)] == S(xh[i]) - S(3) * S(yh[i]));  // f applied as given: exact
    // The CUDA policy's opt-in to host maps is plain f on the host policies, so generic code
    // may use it with any policy.
    P::transform(x, y, out, bilevel::elementwise::on_host([](S a, S b) { return a + S(2) * b; }));
    for (std::size_t i = 0; i < n; ++i) CHECK(out[long(i)] == S(xh[i]) + S(2) * S(yh[i]));
  }
}

TEST_CASE_TEMPLATE("policy: gemv, both transposes, beta zero and non-zero, matches naive loops", P,
                   BILEVEL_FLOAT_POLICIES, BILEVEL_DOUBLE_POLICIES) {
  using S = typename P::scalar;
  const double u = unit_roundoff<S>;
  const std::size_t r = 5, c = 3;  // not square, so a transpose mix-up changes the shape
  const auto ah = rounded<S>(test::random_vector(r * c, 3));
  const std::vector<S> as(ah.begin(), ah.end());
  const auto a = P::matrix_from_host(r, c, as);
  const S alpha = S(1.5), beta = S(-0.5);

  for (bool transpose : {false, true}) {
    CAPTURE(transpose);
    const std::size_t in = transpose ? r : c, out = transpose ? c : r;
    const auto xh = rounded<S>(test::random_vector(in, 4));
    const auto y0h = rounded<S>(test::random_vector(out, 5));
    const auto x = test::device<P>(xh);
    // op(A)_ij from the row-major host array
    auto op = [&](std::size_t i, std::size_t j) { return transpose ? ah[j * c + i] : ah[i * c + j]; };

    // beta = 0: y is resized and its old contents (NaN, wrong size) are not read.
    typename P::vector y = P::zeros(out + 2);
    P::fill(y, std::numeric_limits<S>::quiet_NaN());
    P::gemv(alpha, a, transpose, x, S(0), y);
    REQUIRE(P::size(y) == out);
    CHECK(P::all_finite(y));
    for (std::size_t i = 0; i < out; ++i) {
      CAPTURE(i);
      double s = 0, abs_s = 0;
      for (std::size_t j = 0; j < in; ++j) s += op(i, j) * xh[j], abs_s += std::abs(op(i, j) * xh[j]);
      // in-term dot, then the scaling by alpha: ≤ (in + 1)·u·|alpha|·Σ|terms|.
      CHECK(std::abs(double(y[long(i)]) - double(alpha) * s) <= (in + 1) * u * std::abs(double(alpha)) * abs_s);
    }

    // beta != 0: y = alpha op(A) x + beta y.
    y = test::device<P>(y0h);
    P::gemv(alpha, a, transpose, x, beta, y);
    REQUIRE(P::size(y) == out);
    for (std::size_t i = 0; i < out; ++i) {
      CAPTURE(i);
      double s = 0, abs_s = 0;
      for (std::size_t j = 0; j < in; ++j) s += op(i, j) * xh[j], abs_s += std::abs(op(i, j) * xh[j]);
      const double exact = double(alpha) * s + double(beta) * y0h[i];
      // as above plus the scaled old value and the final sum: ≤ (in + 3)·u·(|alpha|Σ|terms| + |beta y_i|).
      CHECK(std::abs(double(y[long(i)]) - exact) <=
            (in + 3) * u * (std::abs(double(alpha)) * abs_s + std::abs(double(beta) * y0h[i])));
    }
  }
}

TEST_CASE_TEMPLATE("policy: gemm, all four transpose combinations, beta zero and non-zero, matches naive loops", P,
                   BILEVEL_FLOAT_POLICIES, BILEVEL_DOUBLE_POLICIES) {
  using S = typename P::scalar;
  const double u = unit_roundoff<S>;
  const std::size_t m = 4, k = 3, n = 5;  // three different sizes: any transpose mix-up changes a shape
  // op(A) is m×k and op(B) is k×n, as host row-major arrays.
  const auto opa = rounded<S>(test::random_vector(m * k, 6)), opb = rounded<S>(test::random_vector(k * n, 7));
  const auto c0h = rounded<S>(test::random_vector(m * n, 8));
  const std::vector<S> c0s(c0h.begin(), c0h.end());
  /// The stored matrix whose op is the host array `h` (rows×cols): its transpose when `trans`.
  auto stored = [](const std::vector<double>& h, std::size_t rows, std::size_t cols, bool trans) {
    std::vector<S> s(h.size());
    for (std::size_t i = 0; i < rows; ++i)
      for (std::size_t j = 0; j < cols; ++j) (trans ? s[j * rows + i] : s[i * cols + j]) = S(h[i * cols + j]);
    return trans ? P::matrix_from_host(cols, rows, s) : P::matrix_from_host(rows, cols, s);
  };
  const S alpha = S(0.75), beta = S(2);

  test::for_each_gemm_case([&](bool ta, bool tb, bool with_beta) {
    const auto a = stored(opa, m, k, ta), b = stored(opb, k, n, tb);
    typename P::matrix c;
    if (with_beta) {
      c = P::matrix_from_host(m, n, c0s);
    } else {  // wrong shape and NaN: beta = 0 resizes and never reads them
      c = P::matrix_zeros(2, 2);
      c(0, 0) = std::numeric_limits<S>::quiet_NaN();
    }
    P::gemm(alpha, a, ta, b, tb, with_beta ? beta : S(0), c);
    REQUIRE(P::rows(c) == m);
    REQUIRE(P::cols(c) == n);
    for (std::size_t i = 0; i < m; ++i)
      for (std::size_t j = 0; j < n; ++j) {
        CAPTURE(i);
        CAPTURE(j);
        double s = 0, abs_s = 0;
        for (std::size_t l = 0; l < k; ++l) s += opa[i * k + l] * opb[l * n + j], abs_s += std::abs(opa[i * k + l] * opb[l * n + j]);
        const double old = with_beta ? double(beta) * c0h[i * n + j] : 0.0;
        // k-term dot, scaling, adding beta·C: ≤ (k + 3)·u·(|alpha|Σ|terms| + |beta C_ij|).
        CHECK(std::abs(double(c(long(i), long(j))) - (double(alpha) * s + old)) <=
              (k + 3) * u * (std::abs(double(alpha)) * abs_s + std::abs(old)));
      }
  });
}

TEST_CASE_TEMPLATE("policy: host transfer round trips; matrix_from_host is row-major", P, BILEVEL_FLOAT_POLICIES, BILEVEL_DOUBLE_POLICIES) {
  using S = typename P::scalar;
  const auto h = test::random_vector(11, 9);
  const std::vector<S> hs(h.begin(), h.end());
  const auto v = P::from_host(hs);
  REQUIRE(P::size(v) == hs.size());
  CHECK(P::to_host(v) == hs);  // a copy both ways: bit-exact
  for (std::size_t i = 0; i < hs.size(); ++i) CHECK(v[long(i)] == hs[i]);
  CHECK(P::to_host(P::from_host(std::vector<S>{})).empty());

  // 3×4 with value 10·row + col: element (i, j) must be host[i·cols + j].
  const std::size_t rows = 3, cols = 4;
  std::vector<S> mh(rows * cols);
  for (std::size_t i = 0; i < rows; ++i)
    for (std::size_t j = 0; j < cols; ++j) mh[i * cols + j] = S(10 * i + j);
  const auto m = P::matrix_from_host(rows, cols, mh);
  REQUIRE(P::rows(m) == rows);
  REQUIRE(P::cols(m) == cols);
  for (std::size_t i = 0; i < rows; ++i)
    for (std::size_t j = 0; j < cols; ++j) CHECK(m(long(i), long(j)) == S(10 * i + j));
  CHECK(P::matrix_to_host(m) == mh);
}

TEST_CASE("policy<float>: dot and sum accumulate across blocks in double") {
  using P = bilevel::policy::eigen<float>;
  // x = 819/8192 ≈ 0.09998 has 10 significant bits, so every partial sum of up to 256 copies
  // (≤ 209664·2⁻¹³, 18 bits) is exact in float whatever order the vectorised kernel adds in:
  // each block of 256 sums exactly, and adding the block totals in double is exact too. The
  // policy's answer is therefore the exact n·x, and 1e-6 relative is a loose bound on it.
  // A float accumulator of n = 1e6 copies is clearly wrong: at totals near 1e5 its ulp is
  // 2⁻⁷ ≈ 0.008, so each addition of ~0.1 rounds by up to 4%, with a bias that does not
  // average out (measured: ~1% off at 1e6, ~4% at 4e6). (0.1f itself would not isolate the
  // cross-block accumulation: a non-vectorised build rounds each float block of 256 copies of
  // 0.1f by 2.4e-6, which is the in-block float error the policy accepts by design.)
  const float x = 819.0f / 8192.0f;
  for (std::size_t n : {1000000ul, 4000000ul}) {
    CAPTURE(n);
    auto v = P::zeros(n);
    P::fill(v, x);
    auto ones = P::zeros(n);
    P::fill(ones, 1.0f);
    const double exact = double(n) * double(x);
    float naive = 0.0f;
    for (std::size_t i = 0; i < n; ++i) naive += v[long(i)];
    REQUIRE(std::abs(double(naive) - exact) / exact > 1e-3);  // premise: float accumulation fails
    CHECK(std::abs(P::sum(v) - exact) / exact <= 1e-6);
    CHECK(std::abs(P::dot(v, ones) - exact) / exact <= 1e-6);
  }
  // 2^24 + 1 is not representable in float: a float accumulator of 2^24 + 64 ones stalls at
  // 2^24; block totals of 256 are exact and their double sum is exact.
  const std::size_t n = (1u << 24) + 64;
  auto ones = P::zeros(n);
  P::fill(ones, 1.0f);
  CHECK(P::sum(ones) == double(n));
  CHECK(P::dot(ones, ones) == double(n));
}

TEST_CASE_TEMPLATE("policy: shape errors throw std::invalid_argument naming the sizes", P, BILEVEL_FLOAT_POLICIES, BILEVEL_DOUBLE_POLICIES) {
  using S = typename P::scalar;
  auto a = P::zeros(3), b = P::zeros(4);
  typename P::vector out;
  CHECK_THROWS_WITH_AS(P::axpy(S(1), a, b), doctest::Contains("axpy: vector sizes differ (3 vs 4)"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(P::dot(a, b), doctest::Contains("dot: vector sizes differ (3 vs 4)"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(P::hadamard(b, a, out), doctest::Contains("hadamard: vector sizes differ (4 vs 3)"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(P::transform(a, b, out, [](S p, S q) { return p + q; }),
                       doctest::Contains("transform: vector sizes differ (3 vs 4)"), std::invalid_argument);

  const std::vector<S> six(6, S(1));
  const auto m = P::matrix_from_host(2, 3, six);
  CHECK_THROWS_WITH_AS(P::gemv(S(1), m, false, b, S(0), out), doctest::Contains("matrix is 2x3 but x has 4 elements"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(P::gemv(S(1), m, true, a, S(0), out),
                       doctest::Contains("matrix is 2x3 (transposed) but x has 3 elements"), std::invalid_argument);
  // With beta != 0 the old y is read, so its size must be right too.
  CHECK_THROWS_WITH_AS(P::gemv(S(1), m, false, a, S(1), b), doctest::Contains("y has 4 elements, expected 2"),
                       std::invalid_argument);

  typename P::matrix c;
  CHECK_THROWS_WITH_AS(P::gemm(S(1), m, false, m, false, S(0), c),
                       doctest::Contains("inner dimensions differ: A is 2x3, B is 2x3"), std::invalid_argument);
  const std::vector<S> twelve(12, S(1));
  const auto m34 = P::matrix_from_host(3, 4, twelve);
  CHECK_THROWS_WITH_AS(P::gemm(S(1), m, true, m34, false, S(0), c),
                       doctest::Contains("inner dimensions differ: A is 2x3ᵀ, B is 3x4"), std::invalid_argument);
  c = P::matrix_zeros(3, 3);
  CHECK_THROWS_WITH_AS(P::gemm(S(1), m, false, m, true, S(1), c), doctest::Contains("C is 3x3, expected 2x2"),
                       std::invalid_argument);
  CHECK_NOTHROW(P::gemm(S(1), m, false, m, true, S(0), c));  // beta = 0: C is resized instead

  CHECK_THROWS_WITH_AS(P::matrix_from_host(4, 2, six), doctest::Contains("6 values cannot fill a 4x2 matrix"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(P::matrix_from_host(2, 2, six), doctest::Contains("6 values cannot fill a 2x2 matrix"),
                       std::invalid_argument);
}

TEST_CASE_TEMPLATE("policy: all_finite detects NaN and +-Inf anywhere", P, BILEVEL_FLOAT_POLICIES, BILEVEL_DOUBLE_POLICIES) {
  using S = typename P::scalar;
  const std::size_t n = 300;  // longer than a SIMD packet, with a tail
  auto v = test::device<P>(test::random_vector(n, 10));
  CHECK(P::all_finite(v));
  CHECK(P::all_finite(P::zeros(0)));
  for (S bad : {std::numeric_limits<S>::quiet_NaN(), std::numeric_limits<S>::infinity(),
                -std::numeric_limits<S>::infinity()})
    for (std::size_t i : {std::size_t(0), std::size_t(137), n - 1}) {
      CAPTURE(i);
      auto w = v;
      w[long(i)] = bad;
      CHECK_FALSE(P::all_finite(w));
    }
  v[5] = std::numeric_limits<S>::max();  // large but finite
  CHECK(P::all_finite(v));
}

TEST_CASE_TEMPLATE("policy: per-sample gather and scatter-add, row_max_onehot, against host loops", P,
                   BILEVEL_FLOAT_POLICIES, BILEVEL_DOUBLE_POLICIES) {
  test::check_per_sample_maps<P>();
}

TEST_CASE_TEMPLATE("policy: max pooling's window_max primitives, against naive loops", P, BILEVEL_FLOAT_POLICIES,
                   BILEVEL_DOUBLE_POLICIES) {
  test::check_window_max<P>();
}

TEST_CASE_TEMPLATE("policy: axpy_entry and add_dot_into take their scalar from a vector entry", P,
                   BILEVEL_FLOAT_POLICIES, BILEVEL_DOUBLE_POLICIES) {
  test::check_entry_ops<P>();
}

TEST_CASE_TEMPLATE("policy: zip_apply, the fused head, the weighted copy and the bias segments match host loops", P, BILEVEL_FLOAT_POLICIES,
                   BILEVEL_DOUBLE_POLICIES) {
  static_assert(bilevel::fused_elementwise<P> && bilevel::fused_softmax_cross_entropy<P>);
  test::check_zip_apply<P>();
  test::check_softmax_cross_entropy<P>();
  static_assert(bilevel::fused_segment_ops<P> && bilevel::fused_scaled_copies<P> && bilevel::vector_dot_into<P> &&
                bilevel::fused_bias_maps<P> && bilevel::fused_bias_gradients<P>);
  test::check_segment_ops<P>();
}

TEST_CASE_TEMPLATE("policy: gemm_by_segment reads a segment of θ in place, as gemm reads it unflattened", P,
                   BILEVEL_FLOAT_POLICIES, BILEVEL_DOUBLE_POLICIES) {
  using S = typename P::scalar;
  const std::size_t m = 4, k = 3, n = 5, offset = 7;  // the segment starts off any alignment boundary
  const auto theta = test::device<P>(test::random_vector(offset + k * n + 2, 11));
  const auto c0 = test::random_vector(m * n, 12);
  const std::vector<S> c0s(c0.begin(), c0.end());
  const S alpha = S(0.75), beta = S(2);
  test::for_each_gemm_case([&](bool ta, bool tb, bool with_beta) {
    const auto ah = test::random_vector(m * k, 13);
    const auto a = P::matrix_from_host(ta ? k : m, ta ? m : k, std::vector<S>(ah.begin(), ah.end()));
    const std::size_t r = tb ? n : k, c = tb ? k : n;  // the segment as stored: op(S) is k × n
    typename P::matrix w, expected, got;
    P::unflatten(theta, offset, r, c, w);
    expected = P::matrix_from_host(m, n, c0s);
    if (with_beta) {
      got = expected;
    } else {  // wrong shape and NaN: beta = 0 resizes and never reads them
      got = P::matrix_zeros(2, 2);
      got(0, 0) = std::numeric_limits<S>::quiet_NaN();
    }
    P::gemm(alpha, a, ta, w, tb, with_beta ? beta : S(0), expected);
    P::gemm_by_segment(alpha, a, ta, theta, offset, r, c, tb, with_beta ? beta : S(0), got);
    CHECK(P::equal(got, expected));  // the same product, bit for bit
  });
  typename P::matrix out;
  const auto a = P::matrix_zeros(m, k);
  CHECK_THROWS_WITH_AS(P::gemm_by_segment(S(1), a, false, theta, offset + 3, k, n, false, S(0), out),
                       doctest::Contains("exceeds"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(P::gemm_by_segment(S(1), a, false, theta, offset, n, k, false, S(0), out),
                       doctest::Contains("inner dimensions differ"), std::invalid_argument);
}

TEST_CASE_TEMPLATE("policy: equal is exact equality of shape and every element, and NaN equals nothing", P,
                   BILEVEL_FLOAT_POLICIES, BILEVEL_DOUBLE_POLICIES) {
  using S = typename P::scalar;
  const std::size_t n = 1300;  // several blocks of the Eigen policy's blocked comparison, and a tail
  const auto a = test::device<P>(test::random_vector(n, 14));
  CHECK(P::equal(a, a));
  CHECK(P::equal(P::zeros(0), P::zeros(0)));
  CHECK_FALSE(P::equal(P::zeros(3), P::zeros(4)));
  for (std::size_t i : {std::size_t(0), std::size_t(511), std::size_t(512), std::size_t(1024), n - 1}) {
    CAPTURE(i);
    auto b = a;
    b[long(i)] = std::nextafter(b[long(i)], S(10));  // one ulp
    CHECK_FALSE(P::equal(a, b));
    auto c = a, d = a;
    c[long(i)] = d[long(i)] = std::numeric_limits<S>::quiet_NaN();
    CHECK_FALSE(P::equal(c, d));
    c[long(i)] = S(0);
    d[long(i)] = -S(0);
    CHECK(P::equal(c, d));  // +0 == −0, as the scalars compare
  }
  const std::vector<S> six = {1, 2, 3, 4, 5, 6};
  CHECK(P::equal(P::matrix_from_host(2, 3, six), P::matrix_from_host(2, 3, six)));
  CHECK_FALSE(P::equal(P::matrix_from_host(2, 3, six), P::matrix_from_host(3, 2, six)));
}

TEST_CASE_TEMPLATE("policy: transform may write over an operand", P, BILEVEL_FLOAT_POLICIES, BILEVEL_DOUBLE_POLICIES) {
  using S = typename P::scalar;
  const auto xh = test::random_vector(301, 15), yh = test::random_vector(301, 16);
  auto x = test::device<P>(xh);
  auto y = test::device<P>(yh);
  P::transform(x, y, y, [](S p, S q) { return p - q; });
  P::transform(x, x, [](S p) { return p > S(0) ? p : S(0); });
  const auto xs = test::host<P>(x), ys = test::host<P>(y);
  for (std::size_t i = 0; i < xh.size(); ++i) {
    CAPTURE(i);
    const S p = S(xh[i]), q = S(yh[i]);
    CHECK(xs[i] == double(p > S(0) ? p : S(0)));
    CHECK(ys[i] == double(S(p - q)));
  }
}
