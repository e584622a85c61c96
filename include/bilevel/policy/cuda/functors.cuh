// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Which element-wise functors the CUDA policy's `transform` can run on the device.
///
/// A functor runs in a kernel only if its call operator is compiled for the device. nvcc
/// cannot tell that from the type of an ordinary struct, and refuses outright to instantiate a
/// kernel with the closure type of a plain (host) lambda. So `transform` runs on the device:
///   - extended lambdas (`[] __host__ __device__ (S x) { ... }` or `[] __device__ ...`, with
///     nvcc --extended-lambda, which the bilevel::cuda target passes);
///   - functor types that say so with a member `using bilevel_device_callable = void;` (their
///     operator() must be `__host__ __device__`);
///   - the library's activation functors (learners/activation.hpp), through device mirrors
///     below that compute the same formulas;
/// Any other functor (a plain lambda, an untagged struct) is a compile-time error, which
/// names the two ways above, unless the call opts in to the host round trip: the functor
/// wrapped in `elementwise::on_host(f)` (core/elementwise.hpp), or every such call of a
/// translation unit with BILEVEL_CUDA_HOST_TRANSFORM_FALLBACK defined before the first
/// include. The operand then comes to the host, the functor maps it there and the result goes
/// back: correct, but two transfers and a synchronisation per call; host_transforms() counts
/// them.
#include <cuda/std/cmath>

#include <atomic>
#include <cstddef>
#include <type_traits>

#include "bilevel/learners/activation.hpp"

namespace bilevel::policy::cuda_detail {

template <class F>
concept tagged_device_functor = requires { typename F::bilevel_device_callable; };

/// The caller allowed F to run on the host (elementwise::on_host, or the macro above).
template <class F>
inline constexpr bool host_fallback_allowed =
#if defined(BILEVEL_CUDA_HOST_TRANSFORM_FALLBACK)
    true;
#else
    requires { typename F::bilevel_host_fallback; };
#endif

template <class F>
inline constexpr bool is_extended_lambda =
#if defined(__CUDACC_EXTENDED_LAMBDA__)
    __nv_is_extended_device_lambda_closure_type(F) || __nv_is_extended_host_device_lambda_closure_type(F);
#else
    false;
#endif

/// `device_map<F>::on_device`: whether `transform` runs F in a kernel; `get(f)` is the
/// functor the kernel calls (f itself, or a device mirror of it).
template <class F>
struct device_map {
  static constexpr bool on_device = is_extended_lambda<F> || tagged_device_functor<F>;
  static const F& get(const F& f) { return f; }
};

/// Device mirrors of learners::activation_value / activation_slope / activation_slope_product /
/// activation_curvature / activation_tangent_adjoint:
/// the same formulas, term by term, with the device's tanh and exp.
struct device_activation_value {
  learners::activation a;
  template <class S>
  __host__ __device__ S operator()(S z) const {
    switch (a) {
      case learners::activation::relu: return z > S(0) ? z : S(0);
      case learners::activation::tanh: return ::cuda::std::tanh(z);
      case learners::activation::sigmoid: return S(1) / (S(1) + ::cuda::std::exp(-z));
      default: return z;
    }
  }
};
struct device_activation_slope {
  learners::activation a;
  template <class S>
  __host__ __device__ S operator()(S z) const {
    switch (a) {
      case learners::activation::relu: return z > S(0) ? S(1) : S(0);
      case learners::activation::tanh: {
        const S t = ::cuda::std::tanh(z);
        return S(1) - t * t;
      }
      case learners::activation::sigmoid: {
        const S s = S(1) / (S(1) + ::cuda::std::exp(-z));
        return s * (S(1) - s);
      }
      default: return S(1);
    }
  }
};
struct device_activation_curvature {
  learners::activation a;
  template <class S>
  __host__ __device__ S operator()(S z) const {
    switch (a) {
      case learners::activation::tanh: {
        const S t = ::cuda::std::tanh(z);
        return S(-2) * t * (S(1) - t * t);
      }
      case learners::activation::sigmoid: {
        const S s = S(1) / (S(1) + ::cuda::std::exp(-z));
        return s * (S(1) - s) * (S(1) - S(2) * s);
      }
      default: return S(0);
    }
  }
};
struct device_activation_slope_product {
  device_activation_slope slope;
  template <class S>
  __host__ __device__ S operator()(S x, S z) const {
    return x * slope(z);
  }
};
struct device_activation_tangent_adjoint {
  device_activation_slope slope;
  device_activation_curvature curvature;
  template <class S>
  __host__ __device__ S operator()(S g_dot, S z, S g, S z_dot) const {
    return g_dot * slope(z) + g * curvature(z) * z_dot;
  }
};
template <>
struct device_map<learners::activation_value> {
  static constexpr bool on_device = true;
  static device_activation_value get(const learners::activation_value& f) { return {f.a}; }
};
template <>
struct device_map<learners::activation_slope> {
  static constexpr bool on_device = true;
  static device_activation_slope get(const learners::activation_slope& f) { return {f.a}; }
};
template <>
struct device_map<learners::activation_slope_product> {
  static constexpr bool on_device = true;
  static device_activation_slope_product get(const learners::activation_slope_product& f) { return {{f.a}}; }
};
template <>
struct device_map<learners::activation_tangent_adjoint> {
  static constexpr bool on_device = true;
  static device_activation_tangent_adjoint get(const learners::activation_tangent_adjoint& f) {
    return {{f.a}, {f.a}};
  }
};
template <>
struct device_map<learners::activation_curvature> {
  static constexpr bool on_device = true;
  static device_activation_curvature get(const learners::activation_curvature& f) { return {f.a}; }
};

/// x · y, for hadamard.
struct multiplies {
  template <class S>
  __host__ __device__ S operator()(S x, S y) const {
    return x * y;
  }
};

/// How many transform calls ran their functor on the host (process-wide).
inline std::atomic<std::size_t>& host_transform_counter() {
  static std::atomic<std::size_t> n{0};
  return n;
}
/// Behind cuda<S>::array_downloads().
inline std::atomic<std::size_t>& array_download_counter() {
  static std::atomic<std::size_t> n{0};
  return n;
}

}  // namespace bilevel::policy::cuda_detail
