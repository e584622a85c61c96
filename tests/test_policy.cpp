// SPDX-License-Identifier: MIT
// The Eigen policy's operations against naive loops, for float and double; dot and sum
// accumulating in double; shape errors that name the sizes.
#include <doctest/doctest.h>

#include <bilevel/policy/eigen.hpp>

#include <cmath>
#include <limits>

#include "support.hpp"

TEST_CASE_TEMPLATE("policy: BLAS-1, element-wise maps and host transfer match naive loops", P,
                   bilevel::policy::eigen<float>, bilevel::policy::eigen<double>) {
  using S = typename P::scalar;
  const auto xh = test::random_vector(37, 1), yh = test::random_vector(37, 2);
  const auto x = test::device<P>(xh);
  auto y = test::device<P>(yh);
  CHECK(test::relative_error(test::host<P>(x), xh) < 1e-7);  // exact in double; float rounds to 6e-8
  double dot = 0, sum = 0;
  for (std::size_t i = 0; i < 37; ++i) dot += double(S(xh[i])) * double(S(yh[i])), sum += double(S(xh[i]));
  CHECK(P::dot(x, y) == doctest::Approx(dot).epsilon(1e-6));
  CHECK(P::norm(x) == doctest::Approx(std::sqrt(P::dot(x, x))));
  CHECK(P::sum(x) == doctest::Approx(sum).epsilon(1e-6));
  P::axpy(S(2), x, y);
  for (std::size_t i = 0; i < 37; ++i) CHECK(double(y[long(i)]) == doctest::Approx(double(S(yh[i])) + 2 * double(S(xh[i]))).epsilon(1e-6));
  typename P::vector h;
  P::hadamard(x, x, h);
  P::transform(x, y, [](S v) { return v * v; });
  CHECK(test::host<P>(h) == test::host<P>(y));
  P::scale(h, S(0));
  CHECK(P::norm(h) == 0.0);
  P::fill(h, S(3));
  CHECK(P::sum(h) == doctest::Approx(3.0 * 37));
  CHECK(P::size(P::zeros(5)) == 5);
}

TEST_CASE_TEMPLATE("policy: gemv and gemm in every transpose combination match naive loops", P,
                   bilevel::policy::eigen<float>, bilevel::policy::eigen<double>) {
  using S = typename P::scalar;
  const std::size_t r = 4, c = 3;
  const auto ah = test::random_vector(r * c, 3);
  const std::vector<S> as(ah.begin(), ah.end());
  const auto a = P::matrix_from_host(r, c, as);
  CHECK(double(a(1, 2)) == doctest::Approx(double(as[1 * c + 2])));  // row-major
  const auto x3 = test::device<P>(test::random_vector(c, 4)), x4 = test::device<P>(test::random_vector(r, 5));
  typename P::vector y;
  P::gemv(S(2), a, false, x3, S(0), y);
  for (std::size_t i = 0; i < r; ++i) {
    double s = 0;
    for (std::size_t j = 0; j < c; ++j) s += double(a(long(i), long(j))) * double(x3[long(j)]);
    CHECK(double(y[long(i)]) == doctest::Approx(2 * s).epsilon(1e-5));
  }
  typename P::vector z = P::zeros(c);
  P::fill(z, S(1));
  P::gemv(S(1), a, true, x4, S(0.5), z);
  for (std::size_t j = 0; j < c; ++j) {
    double s = 0.5;
    for (std::size_t i = 0; i < r; ++i) s += double(a(long(i), long(j))) * double(x4[long(i)]);
    CHECK(double(z[long(j)]) == doctest::Approx(s).epsilon(1e-5));
  }
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      const auto opa = ta ? typename P::matrix(a.transpose()) : a;
      const auto b = P::matrix_from_host(tb ? r : c, tb ? c : r, as);  // op(B) is c x r either way
      typename P::matrix out;
      P::gemm(S(1), opa, ta, b, tb, S(0), out);
      const typename P::matrix opb = tb ? typename P::matrix(b.transpose()) : b;
      for (long i = 0; i < long(r); ++i)
        for (long j = 0; j < long(r); ++j) {
          double s = 0;
          for (long k = 0; k < long(c); ++k) s += double(a(i, k)) * double(opb(k, j));
          CHECK(double(out(i, j)) == doctest::Approx(s).epsilon(1e-5));
        }
    }
}

TEST_CASE("policy<float>: dot and sum accumulate in double") {
  // 2^24 + 1 is not representable in float: summing 2^24 + 64 ones in float stalls at 2^24,
  // while a double accumulator is exact.
  using P = bilevel::policy::eigen<float>;
  const std::size_t n = (1u << 24) + 64;
  auto ones = P::zeros(n);
  P::fill(ones, 1.0f);
  CHECK(P::sum(ones) == double(n));
  CHECK(P::dot(ones, ones) == double(n));
}

TEST_CASE("policy: shape errors name the sizes; all_finite sees NaN and Inf") {
  using P = bilevel::policy::eigen<double>;
  auto a = P::zeros(3), b = P::zeros(4);
  CHECK_THROWS_WITH_AS(P::axpy(1.0, a, b), doctest::Contains("vector sizes differ (3 vs 4)"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(P::dot(a, b), doctest::Contains("dot: vector sizes differ"), std::invalid_argument);
  const std::vector<double> six(6, 1.0);
  const auto m = P::matrix_from_host(2, 3, six);
  CHECK_THROWS_WITH_AS(P::gemv(1.0, m, false, b, 0.0, a), doctest::Contains("matrix is 2x3 but x has 4 elements"),
                       std::invalid_argument);
  P::matrix c;
  CHECK_THROWS_WITH_AS(P::gemm(1.0, m, false, m, false, 0.0, c), doctest::Contains("inner dimensions differ"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(P::matrix_from_host(4, 2, six), doctest::Contains("6 values cannot fill a 4x2 matrix"),
                       std::invalid_argument);
  CHECK(P::all_finite(a));
  a[1] = std::numeric_limits<double>::quiet_NaN();
  CHECK_FALSE(P::all_finite(a));
  a[1] = std::numeric_limits<double>::infinity();
  CHECK_FALSE(P::all_finite(a));
}
