// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Element-wise maps that every policy can run where its data live.
///
/// `P::transform(x, out, f)` runs f in a kernel on the CUDA policy only when f's call operator
/// is compiled for the device, which nvcc cannot see in a plain lambda: such a map would
/// bring the operand to the host and back on every call (policy/cuda/functors.cuh). The
/// library's own maps are therefore named functors, marked `BILEVEL_HOST_DEVICE` and tagged
/// `bilevel_device_callable`; with any other compiler the macro is empty and they are
/// ordinary functors. A user functor is made device-callable the same way.
///
/// A functor that cannot run on the device is a compile-time error under the CUDA policy,
/// unless it is wrapped in `bilevel::elementwise::on_host(f)`: the explicit opt-in to the
/// host round trip (two transfers and a synchronisation per call). On the host policies the
/// wrapper is just f.
///
/// They compute in double whatever the scalar, as the host lambdas they replace did, and use
/// the C library's global math functions (::exp, ::sqrt, ::log1p), which both the host and
/// CUDA's device math library provide.
#include <math.h>  // NOLINT(modernize-deprecated-headers): the global ::exp/::sqrt/::log1p, host and device

#if defined(__CUDACC__)
#define BILEVEL_HOST_DEVICE __host__ __device__
#else
#define BILEVEL_HOST_DEVICE
#endif

namespace bilevel::elementwise {

/// f, marked as allowed to run on the host under a device policy (see the file comment).
template <class F>
struct host_only {
  using bilevel_host_fallback = void;
  F f;
  template <class... S>
  auto operator()(S... x) const {
    return f(x...);
  }
};
template <class F>
host_only<F> on_host(F f) {
  return {f};
}

/// σ(z), without overflow of e^{±z}.
BILEVEL_HOST_DEVICE inline double sigmoid(double z) {
  return z >= 0 ? 1.0 / (1.0 + ::exp(-z)) : ::exp(z) / (1.0 + ::exp(z));
}
/// log(1 + e^{−m}), without overflow for large |m|.
BILEVEL_HOST_DEVICE inline double softplus_neg(double m) {
  return m > 0 ? ::log1p(::exp(-m)) : -m + ::log1p(::exp(m));
}

/// x ↦ e^x.
struct exponential {
  using bilevel_device_callable = void;
  template <class S>
  BILEVEL_HOST_DEVICE S operator()(S x) const { return S(::exp(double(x))); }
};
/// x ↦ σ(x).
struct logistic {
  using bilevel_device_callable = void;
  template <class S>
  BILEVEL_HOST_DEVICE S operator()(S x) const { return S(sigmoid(double(x))); }
};
/// x ↦ −σ(−x): the derivative of log(1 + e^{−x}).
struct negative_logistic_of_negative {
  using bilevel_device_callable = void;
  template <class S>
  BILEVEL_HOST_DEVICE S operator()(S x) const { return S(-sigmoid(-double(x))); }
};
/// x ↦ σ(x)(1 − σ(x)): the logistic's slope.
struct logistic_slope {
  using bilevel_device_callable = void;
  template <class S>
  BILEVEL_HOST_DEVICE S operator()(S x) const {
    const double s = sigmoid(double(x));
    return S(s * (1.0 - s));
  }
};
/// σ ↦ σ(1 − σ): the logistic's slope from its value.
struct logistic_slope_from_value {
  using bilevel_device_callable = void;
  template <class S>
  BILEVEL_HOST_DEVICE S operator()(S s) const { return s * (S(1) - s); }
};
/// (s, r) ↦ s(1 − s)·r: the logistic's slope from its value, times r (a chain-rule step).
struct logistic_slope_from_value_times {
  using bilevel_device_callable = void;
  template <class S>
  BILEVEL_HOST_DEVICE S operator()(S s, S r) const { return s * (S(1) - s) * r; }
};
/// x ↦ 1/√x for x > 0, else 0 (a row's inverse norm from its squared norm; 0 for a zero row).
struct inverse_sqrt_or_zero {
  using bilevel_device_callable = void;
  template <class S>
  BILEVEL_HOST_DEVICE S operator()(S x) const { return x > S(0) ? S(1.0 / ::sqrt(double(x))) : S(0); }
};
/// x ↦ max(−x, 0).
/// x ↦ c / x for x > 0, 0 otherwise: a normaliser that leaves an all-zero sum at zero.
struct reciprocal_if_positive {
  using bilevel_device_callable = void;
  double c = 1.0;
  template <class S>
  BILEVEL_HOST_DEVICE S operator()(S x) const { return x > S(0) ? S(c / double(x)) : S(0); }
};
/// x ↦ c / √x for x > 0, 0 otherwise: the step c/‖v‖ from ‖v‖² (0 along a zero direction).
struct scaled_rsqrt_if_positive {
  using bilevel_device_callable = void;
  double c = 1.0;
  template <class S>
  BILEVEL_HOST_DEVICE S operator()(S x) const { return x > S(0) ? S(c / ::sqrt(double(x))) : S(0); }
};
/// x ↦ c √x (x ≥ 0).
struct scaled_sqrt {
  using bilevel_device_callable = void;
  double c = 1.0;
  template <class S>
  BILEVEL_HOST_DEVICE S operator()(S x) const { return S(c * ::sqrt(double(x))); }
};
struct negative_part {
  using bilevel_device_callable = void;
  template <class S>
  BILEVEL_HOST_DEVICE S operator()(S x) const { return -x > S(0) ? -x : S(0); }
};
/// x ↦ log(1 + e^{−x}).
struct softplus_of_negative {
  using bilevel_device_callable = void;
  template <class S>
  BILEVEL_HOST_DEVICE S operator()(S x) const { return S(softplus_neg(double(x))); }
};

}  // namespace bilevel::elementwise
