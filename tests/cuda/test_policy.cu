// SPDX-License-Identifier: MIT
// The CUDA policy's operations against naive host loops, for float and double: the CPU
// suite's tests/test_policy.cpp (same data, same bounds) plus every matrix operation the
// layers use, the device/host split of `transform`, determinism, and the CUDA errors.
//
// Reference values are computed in double from the very scalars the policy holds, so the
// only differences are the policy's own roundings; the bounds are the textbook ones in units
// of u = ε_S/2 (see tests/test_policy.cpp). Device code may contract a·b + c into one fused
// multiply-add (nvcc's default), which rounds once instead of twice: the bounds below allow
// for either.
#include <doctest/doctest.h>

#include <bilevel/core/elementwise.hpp>
#include <bilevel/policy/cuda.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "common.hpp"
#include "../entry_op_checks.hpp"
#include "../fused_map_checks.hpp"
#include "../gemm_cases.hpp"
#include "../per_sample_checks.hpp"
#include "../window_max_checks.hpp"

static_assert(bilevel::tensor_policy<bilevel::policy::cuda<float>>);
static_assert(bilevel::tensor_policy<bilevel::policy::cuda<double>>);
static_assert(bilevel::nn_tensor_policy<bilevel::policy::cuda<float>>);
static_assert(bilevel::nn_tensor_policy<bilevel::policy::cuda<double>>);

#define BILEVEL_CUDA_POLICIES bilevel::policy::cuda<float>, bilevel::policy::cuda<double>

// This file's own helpers, next to (not inside) the shared cuda_test namespace of common.hpp:
// the file may be compiled inside a namespace of its own (cmake/BilevelUnity.cmake), where
// reopening cuda_test would make a second, nested one that hides the shared helpers.
namespace {

/// Host values rounded to S and back to double: what the policy really holds.
template <class S>
std::vector<double> rounded(std::vector<double> v) {
  for (auto& x : v) x = double(S(x));
  return v;
}
template <class S>
constexpr double unit_roundoff = std::numeric_limits<S>::epsilon() / 2;

template <class P>
typename P::matrix matrix(std::size_t r, std::size_t c, const std::vector<double>& h) {
  std::vector<typename P::scalar> s(h.begin(), h.end());
  return P::matrix_from_host(r, c, s);
}
template <class P>
std::vector<double> host_matrix(const typename P::matrix& m) {
  const auto h = P::matrix_to_host(m);
  return {h.begin(), h.end()};
}

/// An extended __host__ __device__ lambda (nvcc --extended-lambda): runs on the device.
template <class P>
void device_lambda_affine(const typename P::vector& x, typename P::vector& out) {
  using S = typename P::scalar;
  P::transform(x, out, [] __host__ __device__(S v) { return S(2) * v + S(1); });
}
template <class P>
void device_lambda_combine(const typename P::vector& x, const typename P::vector& y, typename P::vector& out) {
  using S = typename P::scalar;
  P::transform(x, y, out, [] __host__ __device__(S a, S b) { return a - S(3) * b; });
}
/// A functor struct that declares itself device-callable.
struct tagged_square {
  using bilevel_device_callable = void;
  template <class S>
  __host__ __device__ S operator()(S v) const {
    return v * v;
  }
};

}  // namespace

using namespace cuda_test;

TEST_CASE_TEMPLATE("cuda policy: allocation, BLAS-1 and reductions match naive loops", P, BILEVEL_CUDA_POLICIES) {
  using S = typename P::scalar;
  const double u = unit_roundoff<S>;
  // 1000 elements: several blocks of the reductions and a tail.
  const std::size_t n = 1000;
  const auto xh = rounded<S>(random_vector(n, 1)), yh = rounded<S>(random_vector(n, 2));
  const auto x = device<P>(xh);
  auto y = device<P>(yh);

  SUBCASE("zeros, resize, size, copy, fill; copies are deep") {
    const auto z = P::zeros(5);
    CHECK(P::size(z) == 5);
    CHECK(host<P>(z) == std::vector<double>(5, 0.0));
    typename P::vector r;
    CHECK(P::size(r) == 0);
    P::resize(r, 7);
    CHECK(P::size(r) == 7);
    P::copy(x, r);
    CHECK(host<P>(r) == xh);  // a copy is exact
    P::fill(r, S(3));
    CHECK(host<P>(r) == std::vector<double>(n, 3.0));
    CHECK(host<P>(x) == xh);  // the source is untouched
    typename P::vector c = y;  // copy construction
    P::fill(y, S(-1));
    CHECK(host<P>(c) == yh);
    c = x;  // copy assignment, same size: the block is reused
    CHECK(host<P>(c) == xh);
    typename P::vector m = std::move(c);
    CHECK(host<P>(m) == xh);
    CHECK(P::size(c) == 0);  // NOLINT: moved-from is empty
  }
  SUBCASE("axpy") {
    const S a = S(-1.75);
    P::axpy(a, x, y);
    const auto got = host<P>(y);
    for (std::size_t i = 0; i < n; ++i) {
      CAPTURE(i);
      const double exact = yh[i] + double(a) * xh[i];
      CHECK(std::abs(got[i] - exact) <= 2 * u * (std::abs(yh[i]) + std::abs(double(a) * xh[i])));
    }
  }
  SUBCASE("scale") {
    P::scale(y, S(0.3));
    const auto got = host<P>(y);
    for (std::size_t i = 0; i < n; ++i) {
      CAPTURE(i);
      const double exact = double(S(0.3)) * yh[i];
      CHECK(std::abs(got[i] - exact) <= u * std::abs(exact));
    }
  }
  SUBCASE("dot, norm, sum accumulate in double; deterministic") {
    double dot = 0, abs_dot = 0, sum = 0, abs_sum = 0, sq = 0;
    for (std::size_t i = 0; i < n; ++i) {
      dot += xh[i] * yh[i];
      abs_dot += std::abs(xh[i] * yh[i]);
      sum += xh[i];
      abs_sum += std::abs(xh[i]);
      sq += xh[i] * xh[i];
    }
    // float: each product is exact in double and every sum is in double, so the error is
    // that of an n-term double sum, n·2⁻⁵³·Σ|terms|, far below float's u; double: cuBLAS
    // (dot, nrm2) or the double kernel (sum), n·u·Σ|terms| for any order.
    const double k = double(n) * std::numeric_limits<double>::epsilon() / 2 / u;
    CHECK(std::abs(P::dot(x, y) - dot) <= k * u * abs_dot);
    CHECK(std::abs(P::sum(x) - sum) <= k * u * abs_sum);
    CHECK(std::abs(P::norm(x) - std::sqrt(sq)) <= (k * u / 2 + u) * std::sqrt(sq) + 4 * u * std::sqrt(sq));
    CHECK(P::dot(x, y) == P::dot(x, y));  // same grid, same order: the same bits
    CHECK(P::sum(x) == P::sum(x));
    CHECK(P::dot(P::zeros(0), P::zeros(0)) == 0.0);
    CHECK(P::sum(P::zeros(0)) == 0.0);
    CHECK(P::norm(P::zeros(0)) == 0.0);
  }
  SUBCASE("hadamard and transform: on the device, and on the host for a functor that opts in") {
    typename P::vector out;
    P::hadamard(x, y, out);
    REQUIRE(P::size(out) == n);
    auto got = host<P>(out);
    // One rounding per element, the one the host makes in S: exactly equal.
    for (std::size_t i = 0; i < n; ++i) CHECK(got[i] == double(S(xh[i]) * S(yh[i])));

    const std::size_t before = P::host_transforms();
    device_lambda_affine<P>(x, out);  // 2v + 1: 2v is exact, so fused or not it rounds once
    got = host<P>(out);
    for (std::size_t i = 0; i < n; ++i) CHECK(got[i] == double(S(2) * S(xh[i]) + S(1)));
    device_lambda_combine<P>(x, y, out);  // a − 3b: one or two roundings
    got = host<P>(out);
    for (std::size_t i = 0; i < n; ++i) {
      CAPTURE(i);
      CHECK(std::abs(got[i] - (xh[i] - 3 * yh[i])) <= 2 * u * (std::abs(xh[i]) + 3 * std::abs(yh[i])));
    }
    P::transform(x, out, tagged_square{});
    got = host<P>(out);
    for (std::size_t i = 0; i < n; ++i) CHECK(got[i] == double(S(xh[i]) * S(xh[i])));
    CHECK(P::host_transforms() == before);  // all three ran in kernels

    // A plain lambda cannot run in a kernel: wrapped in on_host (without, it does not compile:
    // tests/cuda/compile_fail), the policy maps on the host, exactly as given.
    P::transform(x, out, bilevel::elementwise::on_host([](S v) { return S(2) * v + S(1); }));
    got = host<P>(out);
    for (std::size_t i = 0; i < n; ++i) CHECK(got[i] == double(S(2) * S(xh[i]) + S(1)));
    P::transform(x, y, out, bilevel::elementwise::on_host([](S a, S b) { return a - S(3) * b; }));
    got = host<P>(out);
    for (std::size_t i = 0; i < n; ++i) CHECK(got[i] == double(S(xh[i]) - S(3) * S(yh[i])));
    CHECK(P::host_transforms() == before + 2);
  }
}

TEST_CASE_TEMPLATE("cuda policy: gemv, both transposes, beta zero and non-zero", P, BILEVEL_CUDA_POLICIES) {
  using S = typename P::scalar;
  const double u = unit_roundoff<S>;
  const std::size_t r = 5, c = 3;
  const auto ah = rounded<S>(random_vector(r * c, 3));
  const auto a = matrix<P>(r, c, ah);
  const S alpha = S(1.5), beta = S(-0.5);
  for (bool transpose : {false, true}) {
    CAPTURE(transpose);
    const std::size_t in = transpose ? r : c, out = transpose ? c : r;
    const auto xh = rounded<S>(random_vector(in, 4));
    const auto y0h = rounded<S>(random_vector(out, 5));
    const auto x = device<P>(xh);
    auto op = [&](std::size_t i, std::size_t j) { return transpose ? ah[j * c + i] : ah[i * c + j]; };

    // beta = 0: y is resized and its old contents (NaN, wrong size) are not read.
    typename P::vector y = P::zeros(out + 2);
    P::fill(y, std::numeric_limits<S>::quiet_NaN());
    P::gemv(alpha, a, transpose, x, S(0), y);
    REQUIRE(P::size(y) == out);
    CHECK(P::all_finite(y));
    auto got = host<P>(y);
    for (std::size_t i = 0; i < out; ++i) {
      CAPTURE(i);
      double s = 0, abs_s = 0;
      for (std::size_t j = 0; j < in; ++j) s += op(i, j) * xh[j], abs_s += std::abs(op(i, j) * xh[j]);
      CHECK(std::abs(got[i] - double(alpha) * s) <= (in + 1) * u * std::abs(double(alpha)) * abs_s);
    }
    y = device<P>(y0h);
    P::gemv(alpha, a, transpose, x, beta, y);
    REQUIRE(P::size(y) == out);
    got = host<P>(y);
    for (std::size_t i = 0; i < out; ++i) {
      CAPTURE(i);
      double s = 0, abs_s = 0;
      for (std::size_t j = 0; j < in; ++j) s += op(i, j) * xh[j], abs_s += std::abs(op(i, j) * xh[j]);
      const double exact = double(alpha) * s + double(beta) * y0h[i];
      CHECK(std::abs(got[i] - exact) <= (in + 3) * u * (std::abs(double(alpha)) * abs_s + std::abs(double(beta) * y0h[i])));
    }
  }
}

TEST_CASE_TEMPLATE("cuda policy: gemm, gemm_into_segment and gemm_by_segment, all four transpose combinations, beta zero "
                   "and non-zero",
                   P, BILEVEL_CUDA_POLICIES) {
  using S = typename P::scalar;
  const double u = unit_roundoff<S>;
  const std::size_t m = 4, k = 3, n = 5;
  const auto opa = rounded<S>(random_vector(m * k, 6)), opb = rounded<S>(random_vector(k * n, 7));
  const auto c0h = rounded<S>(random_vector(m * n, 8));
  auto stored = [](const std::vector<double>& h, std::size_t rows, std::size_t cols, bool trans) {
    std::vector<double> s(h.size());
    for (std::size_t i = 0; i < rows; ++i)
      for (std::size_t j = 0; j < cols; ++j) (trans ? s[j * rows + i] : s[i * cols + j]) = h[i * cols + j];
    return trans ? matrix<P>(cols, rows, s) : matrix<P>(rows, cols, s);
  };
  const S alpha = S(0.75), beta = S(2);
  test::for_each_gemm_case([&](bool ta, bool tb, bool with_beta) {
    const auto a = stored(opa, m, k, ta), b = stored(opb, k, n, tb);
    auto check = [&](const std::vector<double>& got) {
      REQUIRE(got.size() == m * n);
      for (std::size_t i = 0; i < m; ++i)
        for (std::size_t j = 0; j < n; ++j) {
          CAPTURE(i);
          CAPTURE(j);
          double s = 0, abs_s = 0;
          for (std::size_t l = 0; l < k; ++l)
            s += opa[i * k + l] * opb[l * n + j], abs_s += std::abs(opa[i * k + l] * opb[l * n + j]);
          const double old = with_beta ? double(beta) * c0h[i * n + j] : 0.0;
          CHECK(std::abs(got[i * n + j] - (double(alpha) * s + old)) <=
                (k + 3) * u * (std::abs(double(alpha)) * abs_s + std::abs(old)));
        }
    };
    typename P::matrix c;
    if (with_beta) {
      c = matrix<P>(m, n, c0h);
    } else {  // wrong shape and NaN: beta = 0 resizes and never reads them
      c = matrix<P>(2, 2, {std::numeric_limits<double>::quiet_NaN(), 0, 0, 0});
    }
    P::gemm(alpha, a, ta, b, tb, with_beta ? beta : S(0), c);
    REQUIRE(P::rows(c) == m);
    REQUIRE(P::cols(c) == n);
    check(host_matrix<P>(c));

    // The same product written into the middle of a flat vector, its surroundings kept.
    std::vector<double> flat(3 + m * n + 2, 7.0);
    for (std::size_t i = 0; i < m * n; ++i) flat[3 + i] = with_beta ? c0h[i] : std::numeric_limits<double>::quiet_NaN();
    auto dst = device<P>(flat);
    P::gemm_into_segment(alpha, a, ta, b, tb, with_beta ? beta : S(0), dst, 3);
    const auto got = host<P>(dst);
    CHECK(got[0] == 7.0);
    CHECK(got[2] == 7.0);
    CHECK(got[3 + m * n] == 7.0);
    CHECK(got[4 + m * n] == 7.0);
    check(std::vector<double>(got.begin() + 3, got.begin() + 3 + std::ptrdiff_t(m * n)));

    // B read in place from the middle of a flat vector (a layer's weights in θ).
    const auto bh = host_matrix<P>(b);
    std::vector<double> theta_h(3 + k * n + 2, 9.0);
    std::copy(bh.begin(), bh.end(), theta_h.begin() + 3);
    const auto theta = device<P>(theta_h);
    typename P::matrix cs;
    if (with_beta) cs = matrix<P>(m, n, c0h);
    else cs = matrix<P>(2, 2, {std::numeric_limits<double>::quiet_NaN(), 0, 0, 0});
    P::gemm_by_segment(alpha, a, ta, theta, 3, P::rows(b), P::cols(b), tb, with_beta ? beta : S(0), cs);
    REQUIRE(P::rows(cs) == m);
    REQUIRE(P::cols(cs) == n);
    check(host_matrix<P>(cs));
  });
}

TEST_CASE_TEMPLATE("cuda policy: host transfer round trips; matrix_from_host is row-major", P, BILEVEL_CUDA_POLICIES) {
  using S = typename P::scalar;
  const auto h = random_vector(11, 9);
  const std::vector<S> hs(h.begin(), h.end());
  const auto v = P::from_host(hs);
  REQUIRE(P::size(v) == hs.size());
  CHECK(P::to_host(v) == hs);
  CHECK(P::to_host(P::from_host(std::vector<S>{})).empty());
  const std::size_t rows = 3, cols = 4;
  std::vector<S> mh(rows * cols);
  for (std::size_t i = 0; i < rows; ++i)
    for (std::size_t j = 0; j < cols; ++j) mh[i * cols + j] = S(10 * i + j);
  const auto m = P::matrix_from_host(rows, cols, mh);
  REQUIRE(P::rows(m) == rows);
  REQUIRE(P::cols(m) == cols);
  CHECK(P::matrix_to_host(m) == mh);
  // Row-major on the device too: the first row times (1, 0, 0, 0)ᵀ... as a gemv.
  typename P::vector y;
  P::gemv(S(1), m, false, device<P>({0, 1, 0, 0}), S(0), y);
  CHECK(host<P>(y) == std::vector<double>{1, 11, 21});  // column 1: 10·i + 1
}

TEST_CASE("cuda policy: uploads are staged in pinned memory: queued without a host wait, intact past the ring's end") {
  using P = bilevel::policy::cuda<float>;
  using ring = bilevel::policy::cuda_detail::upload_ring;
  // One host buffer, rewritten right after each upload: each copy must have taken its bytes at
  // the call. Uploads of 1 MiB go round the ring two and a half times, so regions are reused
  // (after the copies that read them have run, waiting for them if need be).
  const std::size_t n = (std::size_t(1) << 20) / sizeof(float);
  const std::size_t uploads = 5 * ring::capacity / (std::size_t(2) << 20);
  std::vector<float> h(n);
  const auto fill_for = [&](std::size_t k) {
    for (std::size_t i = 0; i < n; ++i) h[i] = float(k) + float(i % 1000) / 1024.0f;
  };
  P::synchronize();
  const auto before = P::activity();
  std::vector<typename P::vector> up;
  for (std::size_t k = 0; k < 3; ++k) {  // 3 MiB: within one lap of an idle ring, no wait
    fill_for(k);
    up.push_back(P::from_host(h));
  }
  CHECK(P::activity().host_waits == before.host_waits);
  for (std::size_t k = 3; k < uploads; ++k) {
    fill_for(k);
    up.push_back(P::from_host(h));
  }
  std::fill(h.begin(), h.end(), -1.0f);
  for (std::size_t k = 0; k < up.size(); ++k) {
    CAPTURE(k);
    const auto got = P::to_host(up[k]);
    REQUIRE(got.size() == n);
    bool intact = true;
    for (std::size_t i = 0; i < n; ++i) intact = intact && got[i] == float(k) + float(i % 1000) / 1024.0f;
    CHECK(intact);
  }
  // Larger than a quarter of the ring: copied from pageable memory, just as intact.
  std::vector<float> big(ring::largest / sizeof(float) + 1);
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = float(i % 4096);
  CHECK(P::to_host(P::from_host(big)) == big);
}

TEST_CASE("cuda policy: an upload inside a CUDA graph capture that bilevel did not begin is refused, by name") {
  // The graph would copy from a region of the pinned ring at every replay, after later uploads
  // had rewritten it. Refused before anything is queued; the capture stays valid and ends.
  namespace cd = bilevel::policy::cuda_detail;
  using P = bilevel::policy::cuda<float>;
  const std::vector<float> h(1000, 2.5f);
  auto d = P::from_host(std::vector<float>(h.size(), 0.0f));
  bilevel::policy::cuda_stream s;
  {
    bilevel::policy::cuda_stream_scope on(s);
    REQUIRE(cudaStreamBeginCapture(s.get(), cudaStreamCaptureModeRelaxed) == cudaSuccess);
    CHECK(cd::captured_by_application(s.get()));
    CHECK_THROWS_WITH_AS(cd::copy_to_device(d.data(), h.data(), h.size() * sizeof(float)),
                         doctest::Contains("into a CUDA graph that bilevel did not begin"), std::logic_error);
    cudaGraph_t graph = nullptr;
    CHECK(cudaStreamEndCapture(s.get(), &graph) == cudaSuccess);
    if (graph) CHECK(cudaGraphDestroy(graph) == cudaSuccess);
    CHECK_FALSE(cd::captured_by_application(s.get()));
    cd::copy_to_device(d.data(), h.data(), h.size() * sizeof(float));  // after it, as before
  }
  CHECK(P::to_host(d) == h);
}

TEST_CASE("cuda policy: after a discarded capture no cache claims device data that the capture never wrote") {
  using P = bilevel::policy::cuda<float>;
  // An index map no other case uses (its plan is uploaded inside the capture) and more rows
  // than any other case sums by columns (the ones of the column sums grow inside it).
  const std::size_t n = 5, rows = 3000001;
  std::vector<std::int64_t> index(n);
  for (std::size_t i = 0; i < n; ++i) index[i] = std::int64_t(n - 1 - i);
  index.push_back(-1);  // and one empty slot: a key of its own
  const auto src = P::matrix_from_host(1, n, std::vector<float>{10, 11, 12, 13, 14});
  const auto tall = P::matrix_from_host(rows, 1, std::vector<float>(rows, 1.0f));
  bilevel::policy::cuda_stream s;
  bilevel::policy::cuda_graph_capture capture;
  {
    bilevel::policy::cuda_stream_scope on(s);
    capture.begin(s);
    typename P::matrix gathered;
    typename P::vector sums;
    P::gather(src, index, 2, 3, gathered);
    P::column_sums(tall, sums);
    capture.abort(s);  // as when a step throws: nothing it queued runs
  }
  typename P::matrix gathered;
  typename P::vector sums;
  P::gather(src, index, 2, 3, gathered);
  P::column_sums(tall, sums);
  CHECK(P::matrix_to_host(gathered) == std::vector<float>{14, 13, 12, 11, 10, 0});
  CHECK(P::to_host(sums) == std::vector<float>{float(rows)});
}

TEST_CASE("cuda policy<float>: dot and sum accumulate in double") {
  using P = bilevel::policy::cuda<float>;
  // As tests/test_policy.cpp: 819/8192 has 10 significant bits; a float accumulator of 1e6
  // copies is ~1% off, the policy's double accumulation is exact here.
  const float x = 819.0f / 8192.0f;
  for (std::size_t n : {1000000ul, 4000000ul}) {
    CAPTURE(n);
    auto v = P::zeros(n);
    P::fill(v, x);
    auto ones = P::zeros(n);
    P::fill(ones, 1.0f);
    const double exact = double(n) * double(x);
    CHECK(std::abs(P::sum(v) - exact) / exact <= 1e-12);
    CHECK(std::abs(P::dot(v, ones) - exact) / exact <= 1e-12);
  }
  const std::size_t n = (1u << 24) + 64;  // a float accumulator of ones stalls at 2^24
  auto ones = P::zeros(n);
  P::fill(ones, 1.0f);
  CHECK(P::sum(ones) == double(n));
  CHECK(P::dot(ones, ones) == double(n));
  CHECK(P::norm(ones) == doctest::Approx(std::sqrt(double(n))).epsilon(1e-15));
}

TEST_CASE_TEMPLATE("cuda policy: shape errors throw std::invalid_argument naming the sizes", P, BILEVEL_CUDA_POLICIES) {
  using S = typename P::scalar;
  auto a = P::zeros(3), b = P::zeros(4);
  typename P::vector out;
  CHECK_THROWS_WITH_AS(P::axpy(S(1), a, b), doctest::Contains("axpy: vector sizes differ (3 vs 4)"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(P::dot(a, b), doctest::Contains("dot: vector sizes differ (3 vs 4)"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(P::hadamard(b, a, out), doctest::Contains("hadamard: vector sizes differ (4 vs 3)"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(P::transform(a, b, out, bilevel::elementwise::on_host([](S p, S q) { return p + q; })),
                       doctest::Contains("transform: vector sizes differ (3 vs 4)"), std::invalid_argument);
  const std::vector<S> six(6, S(1));
  const auto m = P::matrix_from_host(2, 3, six);
  CHECK_THROWS_WITH_AS(P::gemv(S(1), m, false, b, S(0), out), doctest::Contains("matrix is 2x3 but x has 4 elements"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(P::gemv(S(1), m, true, a, S(0), out),
                       doctest::Contains("matrix is 2x3 (transposed) but x has 3 elements"), std::invalid_argument);
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
  CHECK_NOTHROW(P::gemm(S(1), m, false, m, true, S(0), c));
  CHECK_THROWS_WITH_AS(P::matrix_from_host(4, 2, six), doctest::Contains("6 values cannot fill a 4x2 matrix"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(P::segment(a, 2, 2, out), doctest::Contains("segment: range [2, 4) exceeds a vector of 3"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(P::add_row(c, a), doctest::Contains("add_row: matrix is 2x2 but the row has 3 elements"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(P::gather(m, {0, 1, 6}, 1, 3, c),
                       doctest::Contains("gather: index 6 is out of range for a source of 6 elements"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(P::scatter_add(m34, std::vector<std::int64_t>(12, 7), c),
                       doctest::Contains("scatter_add: index 7 is out of range for a destination of 4 elements"),
                       std::invalid_argument);
}

TEST_CASE_TEMPLATE("cuda policy: all_finite detects NaN and +-Inf anywhere", P, BILEVEL_CUDA_POLICIES) {
  using S = typename P::scalar;
  const std::size_t n = 300;
  const auto h = random_vector(n, 10);
  CHECK(P::all_finite(device<P>(h)));
  CHECK(P::all_finite(P::zeros(0)));
  for (S bad : {std::numeric_limits<S>::quiet_NaN(), std::numeric_limits<S>::infinity(),
                -std::numeric_limits<S>::infinity()})
    for (std::size_t i : {std::size_t(0), std::size_t(137), n - 1}) {
      CAPTURE(i);
      std::vector<S> w(h.begin(), h.end());
      w[i] = bad;
      CHECK_FALSE(P::all_finite(P::from_host(w)));
    }
  std::vector<S> w(h.begin(), h.end());
  w[5] = std::numeric_limits<S>::max();
  CHECK(P::all_finite(P::from_host(w)));
}

TEST_CASE_TEMPLATE("cuda policy: the layers' matrix operations match naive loops", P, BILEVEL_CUDA_POLICIES) {
  using S = typename P::scalar;
  const double u = unit_roundoff<S>;
  // 5 × 70: rows wider than a warp (each lane takes several columns) and a short last round.
  const std::size_t r = 5, c = 70;
  const auto zh = rounded<S>(random_vector(r * c, 21, 3.0));
  const auto z = matrix<P>(r, c, zh);

  SUBCASE("unflatten, segment, flatten_into, set_segment, reshape") {
    const auto th = rounded<S>(random_vector(40, 22));
    const auto theta = device<P>(th);
    typename P::matrix w;
    P::unflatten(theta, 4, 3, 5, w);
    REQUIRE(P::rows(w) == 3);
    REQUIRE(P::cols(w) == 5);
    CHECK(host_matrix<P>(w) == std::vector<double>(th.begin() + 4, th.begin() + 19));
    typename P::vector s;
    P::segment(theta, 30, 10, s);
    CHECK(host<P>(s) == std::vector<double>(th.begin() + 30, th.end()));
    auto dst = P::zeros(40);
    P::flatten_into(w, dst, 20);
    P::set_segment(s, dst, 2);
    auto expect = std::vector<double>(40, 0.0);
    std::copy(th.begin() + 4, th.begin() + 19, expect.begin() + 20);
    std::copy(th.begin() + 30, th.end(), expect.begin() + 2);
    CHECK(host<P>(dst) == expect);
    typename P::matrix q;
    P::reshape(w, 5, 3, q);
    CHECK(P::rows(q) == 5);
    CHECK(host_matrix<P>(q) == host_matrix<P>(w));
    P::reshape(q, 15, 1, q);  // in place
    CHECK(P::rows(q) == 15);
    CHECK(P::cols(q) == 1);
    CHECK(host_matrix<P>(q) == host_matrix<P>(w));
    P::reshape(s, 2, 5, q);
    CHECK(host_matrix<P>(q) == host<P>(s));
    P::segment(s, 1, 3, s);  // a segment of itself
    CHECK(host<P>(s) == std::vector<double>(th.begin() + 31, th.begin() + 34));
  }
  SUBCASE("matrix axpy, scale, hadamard, transform with the activation functors (on the device)") {
    const auto yh = rounded<S>(random_vector(r * c, 23));
    auto y = matrix<P>(r, c, yh);
    P::axpy(S(-0.5), z, y);
    auto got = host_matrix<P>(y);
    for (std::size_t i = 0; i < r * c; ++i)
      CHECK(std::abs(got[i] - (yh[i] - 0.5 * zh[i])) <= 2 * u * (std::abs(yh[i]) + 0.5 * std::abs(zh[i])));
    P::scale(y, S(2));
    typename P::matrix h;
    P::hadamard(y, z, h);
    const auto yg = host_matrix<P>(y);
    got = host_matrix<P>(h);
    for (std::size_t i = 0; i < r * c; ++i) CHECK(got[i] == double(S(yg[i]) * S(zh[i])));
    using bilevel::learners::activation;
    const std::size_t before = P::host_transforms();
    for (auto a : {activation::identity, activation::relu, activation::tanh, activation::sigmoid}) {
      CAPTURE(to_string(a));
      typename P::matrix out;
      P::transform(z, out, bilevel::learners::activation_value{a});
      const auto v = host_matrix<P>(out);
      P::transform(z, out, bilevel::learners::activation_slope{a});
      const auto d1 = host_matrix<P>(out);
      P::transform(z, out, bilevel::learners::activation_curvature{a});
      const auto d2 = host_matrix<P>(out);
      // The device's tanh and exp are within 2 ulp (CUDA math library), the host's within 1-2,
      // and nvcc may fuse the products: a few u of magnitudes ≤ 1 (the value: ≤ |z| + 1), and
      // up to three factors of them in the derivatives. A wrong formula is off by O(1).
      for (std::size_t i = 0; i < r * c; ++i) {
        CAPTURE(i);
        const S x = S(zh[i]);
        CHECK(std::abs(v[i] - double(bilevel::learners::activation_value{a}(x))) <= 16 * u * (1 + std::abs(zh[i])));
        CHECK(std::abs(d1[i] - double(bilevel::learners::activation_slope{a}(x))) <= 32 * u);
        CHECK(std::abs(d2[i] - double(bilevel::learners::activation_curvature{a}(x))) <= 64 * u);
      }
    }
    CHECK(P::host_transforms() == before);
  }
  SUBCASE("add_row, scale_rows, column_sums, row_sums, row_dots") {
    const auto bh = rounded<S>(random_vector(c, 24)), ch = rounded<S>(random_vector(r, 25));
    auto m = z;
    P::add_row(m, device<P>(bh));
    auto got = host_matrix<P>(m);
    for (std::size_t i = 0; i < r; ++i)
      for (std::size_t j = 0; j < c; ++j) CHECK(got[i * c + j] == double(S(zh[i * c + j]) + S(bh[j])));
    m = z;
    P::scale_rows(m, device<P>(ch));
    got = host_matrix<P>(m);
    for (std::size_t i = 0; i < r; ++i)
      for (std::size_t j = 0; j < c; ++j) CHECK(got[i * c + j] == double(S(zh[i * c + j]) * S(ch[i])));
    typename P::vector out;
    P::column_sums(z, out);
    REQUIRE(P::size(out) == c);
    got = host<P>(out);
    for (std::size_t j = 0; j < c; ++j) {
      double s = 0, a = 0;
      for (std::size_t i = 0; i < r; ++i) s += zh[i * c + j], a += std::abs(zh[i * c + j]);
      CHECK(std::abs(got[j] - s) <= r * u * a);
    }
    P::row_sums(z, out);
    REQUIRE(P::size(out) == r);
    got = host<P>(out);
    for (std::size_t i = 0; i < r; ++i) {
      double s = 0, a = 0;
      for (std::size_t j = 0; j < c; ++j) s += zh[i * c + j], a += std::abs(zh[i * c + j]);
      CHECK(std::abs(got[i] - s) <= c * u * a);
    }
    const auto yh = rounded<S>(random_vector(r * c, 26));
    P::row_dots(z, matrix<P>(r, c, yh), out);
    REQUIRE(P::size(out) == r);
    got = host<P>(out);
    for (std::size_t i = 0; i < r; ++i) {
      double s = 0, a = 0;
      for (std::size_t j = 0; j < c; ++j) s += zh[i * c + j] * yh[i * c + j], a += std::abs(zh[i * c + j] * yh[i * c + j]);
      CHECK(std::abs(got[i] - s) <= (c + 1) * u * a);
    }
  }
  SUBCASE("row_softmax, row_logsumexp, row_max (first index on ties)") {
    typename P::matrix p;
    P::row_softmax(z, p);
    typename P::vector lse;
    P::row_logsumexp(z, lse);
    const auto ph = host_matrix<P>(p), lh = host<P>(lse);
    for (std::size_t i = 0; i < r; ++i) {
      double mx = -1e300;
      for (std::size_t j = 0; j < c; ++j) mx = std::max(mx, zh[i * c + j]);
      double s = 0;
      for (std::size_t j = 0; j < c; ++j) s += std::exp(zh[i * c + j] - mx);
      // z − max rounds by u·|z − max| ≤ 6u (|z| ≤ 3), the device's exp adds ≤ 2 ulp, the
      // row sum in S ≤ c·u relative, the division u: below (c + 16)·u; twice that, plus slack.
      for (std::size_t j = 0; j < c; ++j) {
        CAPTURE(j);
        const double exact = std::exp(zh[i * c + j] - mx) / s;
        CHECK(std::abs(ph[i * c + j] - exact) <= (2 * c + 32) * u * exact);
      }
      CHECK(std::abs(lh[i] - (mx + std::log(s))) <= (2 * c + 32) * u * (std::abs(mx) + 1));
    }
    P::row_softmax(p, p);  // in place
    CHECK(P::rows(p) == r);

    // Ties: row 1 has its maximum 9 at columns 3 and 40, and −inf rows take the first index.
    auto th = zh;
    th[1 * c + 3] = 9;
    th[1 * c + 40] = 9;
    for (std::size_t j = 0; j < c; ++j) th[3 * c + j] = -std::numeric_limits<double>::infinity();
    typename P::vector mx;
    std::vector<std::int64_t> arg = {42};
    P::row_max(matrix<P>(r, c, th), mx, arg);
    REQUIRE(arg.size() == r);
    const auto mh = host<P>(mx);
    for (std::size_t i = 0; i < r; ++i) {
      CAPTURE(i);
      std::size_t best = 0;
      for (std::size_t j = 1; j < c; ++j)
        if (th[i * c + j] > th[i * c + best]) best = j;
      CHECK(arg[i] == std::int64_t(best));
      CHECK(mh[i] == th[i * c + best]);
    }
    CHECK(arg[1] == 3);
    CHECK(arg[3] == 0);
  }
  SUBCASE("gather with padding, scatter_add with repeated destinations (same order as the host loop)") {
    const std::vector<std::int64_t> index = {5, -1, 0, 349, 5, 17, -1, 2, 2, 100, 349, 0};
    typename P::matrix g;
    P::gather(z, index, 3, 4, g);
    REQUIRE(P::rows(g) == 3);
    REQUIRE(P::cols(g) == 4);
    auto got = host_matrix<P>(g);
    for (std::size_t i = 0; i < index.size(); ++i) CHECK(got[i] == (index[i] >= 0 ? zh[std::size_t(index[i])] : 0.0));
    P::gather(z, index, 3, 4, g);  // the cached plan serves the second call
    CHECK(host_matrix<P>(g) == got);

    const auto sh = rounded<S>(random_vector(12, 27));
    auto out = z;
    P::scatter_add(matrix<P>(3, 4, sh), index, out);
    std::vector<S> expect(zh.begin(), zh.end());
    for (std::size_t i = 0; i < index.size(); ++i)
      if (index[i] >= 0) expect[std::size_t(index[i])] += S(sh[i]);  // in S, in this order
    const auto sg = P::matrix_to_host(out);
    CHECK(sg == expect);  // bit for bit
  }
  SUBCASE("equal: shapes and every element; NaN equals nothing") {
    auto w = z;
    CHECK(P::equal(w, z));
    auto h = zh;
    h[r * c - 1] += 1;
    CHECK_FALSE(P::equal(matrix<P>(r, c, h), z));
    CHECK_FALSE(P::equal(matrix<P>(c, r, zh), z));
    CHECK(P::equal(P::zeros(0), P::zeros(0)));
    CHECK_FALSE(P::equal(P::zeros(3), P::zeros(4)));
    const auto nan = device<P>({1.0, std::numeric_limits<double>::quiet_NaN()});
    CHECK_FALSE(P::equal(nan, nan));
    CHECK(P::equal(device<P>(zh), device<P>(zh)));
  }
}

TEST_CASE("cuda policy: a failed allocation throws cuda_error naming the bytes") {
  using P = bilevel::policy::cuda<double>;
  P::zeros(1);  // the context exists (and with it the CUDA runtime's)
  std::size_t free_bytes = 0, total_bytes = 0;
  REQUIRE(cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess);
  const std::size_t n = 2 * (total_bytes / sizeof(double));  // twice the device's memory
  CHECK_THROWS_WITH_AS(P::zeros(n),
                       doctest::Contains(doctest::String(
                           ("out of device memory allocating " + std::to_string(n * sizeof(double)) + " bytes").c_str())),
                       bilevel::cuda_error);
  // The failure is not sticky: the device works on.
  CHECK(P::sum(device<P>({1.0, 2.0})) == 3.0);
}

TEST_CASE_TEMPLATE("cuda policy: per-sample gather and scatter-add, row_max_onehot, against host loops", P,
                   BILEVEL_CUDA_POLICIES) {
  test::check_per_sample_maps<P>();
}

TEST_CASE_TEMPLATE("cuda policy: max pooling's window_max primitives, against naive loops", P, BILEVEL_CUDA_POLICIES) {
  test::check_window_max<P>();
}

TEST_CASE_TEMPLATE("cuda policy: axpy_entry and add_dot_into take their scalar from a vector entry", P,
                   BILEVEL_CUDA_POLICIES) {
  test::check_entry_ops<P>();
}

TEST_CASE_TEMPLATE("cuda policy: zip_apply, the fused head, the weighted copy and the bias segments match host loops, one kernel each", P,
                   BILEVEL_CUDA_POLICIES) {
  static_assert(bilevel::fused_elementwise<P> && bilevel::fused_softmax_cross_entropy<P>);
  test::check_zip_apply<P>();
  test::check_softmax_cross_entropy<P>();
  static_assert(bilevel::fused_segment_ops<P> && bilevel::fused_scaled_copies<P> && bilevel::vector_dot_into<P> &&
                bilevel::fused_bias_maps<P> && bilevel::fused_bias_gradients<P>);
  test::check_segment_ops<P>();
  const auto z = P::matrix_from_host(4, 3, std::vector<bilevel::scalar_t<P>>(12, 1));
  typename P::vector mass, losses;
  typename P::matrix d;
  auto before = P::activity();
  P::softmax_cross_entropy(z, z, mass, losses, d);
  CHECK(P::activity().kernels == before.kernels + 1);
  // add_dot_into: the reduction and its addition to the entry, one kernel (one block here).
  before = P::activity();
  P::add_dot_into(z, z, losses, 1);
  CHECK(P::activity().kernels == before.kernels + 1);
  // Many blocks (the last one to finish adds the partials): still one kernel, the same bits
  // each time, whichever block ends last, and the sum of 2^-10 · i exact in double.
  {
    const std::size_t n = 300000;
    std::vector<bilevel::scalar_t<P>> h(n);
    for (std::size_t i = 0; i < n; ++i) h[i] = bilevel::scalar_t<P>(std::ldexp(double(i % 1024), -10));
    const auto x = P::from_host(h), ones = P::from_host(std::vector<bilevel::scalar_t<P>>(n, 1));
    double exact = 0;
    for (auto e : h) exact += double(e);
    auto entries = P::zeros(2);
    before = P::activity();
    P::add_scaled_dot_into(x, ones, 1, entries, 0);
    CHECK(P::activity().kernels == before.kernels + 1);
    P::add_scaled_dot_into(x, ones, 1, entries, 1);
    const auto got = P::to_host(entries);
    CHECK(double(got[0]) == doctest::Approx(exact).epsilon(1e-6));
    CHECK(got[0] == got[1]);
    CHECK(P::sum(x) == exact);
  }
  // ℓ_1 = 3·lse(1, 1, 1) − 3 = 3 log 3, plus ⟨z, z⟩ = 12.
  CHECK(double(P::to_host(losses)[1]) == doctest::Approx(3.0 * std::log(3.0) + 12.0));
}
