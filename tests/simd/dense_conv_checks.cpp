// SPDX-License-Identifier: MIT
// The direct dense-convolution loops (policy/detail/dense_conv_maps.hpp) built for one SIMD
// width (AVX2 or AVX-512 float and double vectors, their half- and quarter-width tails and
// register blocks of 6 or 8 rows), against a direct loop in double: the rest of the suite
// compiles for the baseline x86-64 (16-byte vectors), so without this file the widths a
// -march=native build uses would go untested. Shapes cover full blocks and every tail: output
// channels 13, 24 and 40, input channels 1, 7, 11 and 16, strides 1 and 2, dilation 2.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include <bilevel/policy/detail/dense_conv_maps.hpp>

namespace {
using bilevel::policy::detail::inverse_tap_map;
using bilevel::policy::detail::tap_product;
using bilevel::policy::detail::tap_weight_adjoint;
using bilevel::policy::detail::transposed_taps;

struct shape {
  std::size_t batch, size, K, N, stride, dilation;
};

std::vector<std::int64_t> tap_map(const shape& s, std::size_t& out) {
  const std::size_t k = 3, pad = s.dilation;
  out = (s.size + 2 * pad - s.dilation * (k - 1) - 1) / s.stride + 1;
  std::vector<std::int64_t> index(out * out * k * k, -1);
  std::size_t i = 0;
  for (std::size_t oh = 0; oh < out; ++oh)
    for (std::size_t ow = 0; ow < out; ++ow)
      for (std::size_t kh = 0; kh < k; ++kh)
        for (std::size_t kw = 0; kw < k; ++kw, ++i) {
          const auto ih = std::int64_t(oh * s.stride + kh * s.dilation) - std::int64_t(pad);
          const auto iw = std::int64_t(ow * s.stride + kw * s.dilation) - std::int64_t(pad);
          if (ih >= 0 && iw >= 0 && ih < std::int64_t(s.size) && iw < std::int64_t(s.size))
            index[i] = ih * std::int64_t(s.size) + iw;
        }
  return index;
}

double relative_error(const std::vector<double>& want, const auto& got) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    num += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    den += want[i] * want[i];
  }
  return std::sqrt(num / (den > 0 ? den : 1));
}

/// Returns the number of failed checks for scalar type S.
template <class S>
int check(const shape& s, double tolerance) {
  std::size_t out = 0;
  const auto index = tap_map(s, out);
  const std::size_t taps = 9, in_pixels = s.size * s.size, out_pixels = out * out;
  std::mt19937 gen(7);
  std::uniform_real_distribution<double> u(-1, 1);
  const auto random = [&](std::size_t n) {
    std::vector<S> v(n);
    for (auto& e : v) e = S(u(gen));
    return v;
  };
  const auto x = random(s.batch * in_pixels * s.K), w = random(taps * s.K * s.N), gy = random(s.batch * out_pixels * s.N);
  std::vector<double> y_ref(gy.size(), 0.0), gx_ref(x.size(), 0.0), gw_ref(w.size(), 0.0);
  for (std::size_t b = 0; b < s.batch; ++b)
    for (std::size_t p = 0; p < out_pixels; ++p)
      for (std::size_t t = 0; t < taps; ++t) {
        const std::int64_t q = index[p * taps + t];
        if (q < 0) continue;
        for (std::size_t k = 0; k < s.K; ++k)
          for (std::size_t n = 0; n < s.N; ++n) {
            const std::size_t xi = (b * in_pixels + std::size_t(q)) * s.K + k, yi = (b * out_pixels + p) * s.N + n;
            const std::size_t wi = (t * s.K + k) * s.N + n;
            y_ref[yi] += double(x[xi]) * double(w[wi]);
            gx_ref[xi] += double(gy[yi]) * double(w[wi]);
            gw_ref[wi] += double(x[xi]) * double(gy[yi]);
          }
      }
  std::vector<S> y(y_ref.size()), gx(gx_ref.size()), gw(gw_ref.size());
  tap_product(x.data(), in_pixels, s.K, index, taps, s.batch, w.data(), s.N, S(0), y.data());
  const auto inverse = inverse_tap_map("test", "test", index, taps, in_pixels);
  const auto wt = transposed_taps(w.data(), taps, s.K, s.N);
  tap_product(gy.data(), out_pixels, s.N, inverse, taps, s.batch, wt.data(), s.K, S(0), gx.data());
  tap_weight_adjoint(x.data(), in_pixels, s.K, gy.data(), s.N, index, taps, s.batch, S(0), gw.data());
  int failed = 0;
  const char* names[] = {"value", "input adjoint", "weight adjoint"};
  const double errors[] = {relative_error(y_ref, y), relative_error(gx_ref, gx), relative_error(gw_ref, gw)};
  for (int i = 0; i < 3; ++i) {
    const bool ok = errors[i] <= tolerance;
    failed += !ok;
    std::printf("%s %-6s batch %zu, %zux%zu, K %2zu -> N %2zu, stride %zu, dilation %zu, %-14s: error %.1e (<= %.0e) %s\n",
                BILEVEL_SIMD_ISA, sizeof(S) == 4 ? "float" : "double", s.batch, s.size, s.size, s.K, s.N, s.stride,
                s.dilation, names[i], errors[i], tolerance, ok ? "ok" : "FAILED");
  }
  return failed;
}
}  // namespace

int run_dense_conv_checks() {
  const shape shapes[] = {{3, 7, 11, 13, 1, 1}, {2, 8, 16, 24, 2, 1}, {2, 6, 7, 40, 1, 2}, {3, 5, 1, 16, 1, 1}};
  int failed = 0;
  // Sums of at most a few hundred O(1) products (the weight adjoint's over batch · pixels rows):
  // float rounding leaves ~1e-6 relative, double ~1e-15.
  for (const auto& s : shapes) failed += check<float>(s, 1e-5) + check<double>(s, 1e-12);
  std::printf("%d check(s) failed\n", failed);
  return failed == 0 ? 0 : 1;
}
