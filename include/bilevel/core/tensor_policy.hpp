// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// The TensorPolicy concept: the back end that carries every piece of arithmetic.
///
/// Everything above this layer (learners, optimizers, strategies, the solver) is written
/// against these static functions and never names Eigen, xtensor, cuBLAS or CUDA. A policy names:
///   1. `scalar` (float or double), `vector` (flat, contiguous, owning) and `matrix`
///      (dense, row-major: one sample a row);
///   2. allocation and shape: `zeros(n)`, `resize(v, n)`, `size(v)`, `rows(m)`, `cols(m)`;
///   3. BLAS-1: `copy`, `fill`, `axpy` (y += a x), `scale`, `dot` and `norm`, which
///      accumulate in double whatever the scalar (CG's scalars lose digits otherwise);
///   4. BLAS-2/3: `gemv` and `gemm` with transpose flags;
///   5. element-wise `hadamard` and `transform`, the reduction `sum`, and `all_finite`;
///   6. host transfer: `to_host`, `from_host`, `matrix_from_host` (row-major host data).
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

namespace bilevel {

template <class P>
concept tensor_policy = requires(typename P::vector& v, const typename P::vector& cv,
                                 typename P::matrix& m, const typename P::matrix& cm,
                                 typename P::scalar s, std::size_t n,
                                 std::span<const typename P::scalar> host, bool trans) {
  typename P::scalar;
  typename P::vector;
  typename P::matrix;
  requires std::floating_point<typename P::scalar>;
  { P::zeros(n) } -> std::same_as<typename P::vector>;
  P::resize(v, n);
  { P::size(cv) } -> std::convertible_to<std::size_t>;
  { P::rows(cm) } -> std::convertible_to<std::size_t>;
  { P::cols(cm) } -> std::convertible_to<std::size_t>;
  P::copy(cv, v);
  P::fill(v, s);
  P::axpy(s, cv, v);
  P::scale(v, s);
  { P::dot(cv, cv) } -> std::same_as<double>;
  { P::norm(cv) } -> std::same_as<double>;
  { P::sum(cv) } -> std::same_as<double>;
  { P::all_finite(cv) } -> std::same_as<bool>;
  P::hadamard(cv, cv, v);
  P::gemv(s, cm, trans, cv, s, v);
  P::gemm(s, cm, trans, cm, trans, s, m);
  { P::to_host(cv) } -> std::same_as<std::vector<typename P::scalar>>;
  { P::from_host(host) } -> std::same_as<typename P::vector>;
  { P::matrix_from_host(n, n, host) } -> std::same_as<typename P::matrix>;
};

/// What layers need beyond tensor_policy: matrix views of segments of the flat parameter
/// vector (copied out by `unflatten`, or used in place as a GEMM operand by
/// `gemm_by_segment`), matrix BLAS-1 and element-wise maps (`axpy_entry` and `add_dot_into`
/// take and leave their scalar in a vector entry, so a device back end never reads it on the
/// host), bias rows, row reductions and a stable row-wise softmax. Learners that are networks require this refinement.
///
/// Max pooling has three direct primitives over a per-sample tap map (the depthwise one's
/// layout, below: input pixel per output pixel and tap, −1 for padding, which counts as −∞),
/// with the selection as `index_vector`, one position in x's storage per output, kept where
/// the policy keeps its data (so a device back end never brings it to the host):
///   window_max_per_sample:          y[o] = max of o's window, argmax[o] = its first maximum
///   window_max_adjoint_per_sample:  gx[argmax[o]] += gy[o]
///   window_max_tangent:             ẏ[o] = ẋ[argmax[o]]
/// `indices_to_host` reads a selection back (for tests and diagnostics).
template <class P>
concept nn_tensor_policy =
    tensor_policy<P> && requires(typename P::vector& v, const typename P::vector& cv, typename P::matrix& m,
                                 const typename P::matrix& cm, typename P::scalar s, std::size_t n,
                                 typename P::index_vector& iv, const typename P::index_vector& civ) {
      typename P::index_vector;
      { P::matrix_zeros(n, n) } -> std::same_as<typename P::matrix>;
      P::unflatten(cv, n, n, n, m);
      P::segment(cv, n, n, v);
      P::flatten_into(cm, v, n);
      P::gemm_into_segment(s, cm, true, cm, false, s, v, n);
      P::gemm_by_segment(s, cm, false, cv, n, n, n, true, s, m);
      P::set_segment(cv, v, n);
      P::axpy(s, cm, m);
      P::axpy_entry(s, cv, n, cm, m);
      P::add_dot_into(cm, cm, v, n);
      P::scale(m, s);
      P::hadamard(cm, cm, m);
      P::add_row(m, cv);
      P::column_sums(cm, v);
      P::row_dots(cm, cm, v);
      P::scale_rows(m, cv);
      P::row_softmax(cm, m);
      P::row_logsumexp(cm, v);
      { P::equal(cv, cv) } -> std::same_as<bool>;
      P::gather(cm, std::declval<const std::vector<std::int64_t>&>(), n, n, m);
      P::scatter_add(cm, std::declval<const std::vector<std::int64_t>&>(), m);
      P::gather_per_sample(cm, std::declval<const std::vector<std::int64_t>&>(), n, n, n, m);
      P::scatter_add_per_sample(cm, std::declval<const std::vector<std::int64_t>&>(), n, m);
      P::row_max_onehot(cm, v, m);
      P::window_max_per_sample(cm, std::declval<const std::vector<std::int64_t>&>(), n, n, m, iv);
      P::window_max_adjoint_per_sample(cm, std::declval<const std::vector<std::int64_t>&>(), n, n, civ, m);
      P::window_max_tangent(cm, civ, m);
      { P::indices_to_host(civ) } -> std::same_as<std::vector<std::int64_t>>;
      P::reshape(cm, n, n, m);
      P::reshape(cv, n, n, m);
      P::row_max(cm, v, std::declval<std::vector<std::int64_t>&>());
      P::row_sums(cm, v);
      P::columns(cm, n, n, m);
      P::set_columns(cm, m, n);
      P::row_block(cm, n, n, m);
      P::set_row_block(cm, m, n);
      P::scale_columns(m, cv);
      { P::equal(cm, cm) } -> std::same_as<bool>;
      { P::matrix_to_host(cm) } -> std::same_as<std::vector<typename P::scalar>>;
    };

/// Optional depthwise-convolution primitives (the Eigen and xtensor policies have them):
/// through a per-sample map of (output pixel, tap) → input pixel (−1: padding), with channel
/// c's taps at theta[offset + c · taps, + taps),
///   depthwise_per_sample:                y = beta · y + Σ_t x[pixel(p, t)] ⊙ w_t
///   depthwise_input_adjoint_per_sample:  gx[pixel(p, t)] += gy[p] ⊙ w_t
///   depthwise_weight_adjoint_per_sample: grad[offset + c · taps + t] = beta · grad[…] + Σ x[pixel(p, t), c] gy[p, c]
/// A convolution with groups == C_in == C_out uses them when a policy has them, and grouped
/// patch products otherwise.
template <class P>
concept depthwise_maps =
    nn_tensor_policy<P> && requires(typename P::vector& v, const typename P::vector& cv, typename P::matrix& m,
                                    const typename P::matrix& cm, typename P::scalar s, std::size_t n,
                                    const std::vector<std::int64_t>& index) {
      P::depthwise_per_sample(cm, index, n, n, cv, n, s, m);
      P::depthwise_input_adjoint_per_sample(cm, index, n, n, cv, n, m);
      P::depthwise_weight_adjoint_per_sample(cm, cm, index, n, n, s, v, n);
    };

/// Optional dense-convolution primitives (the Eigen and xtensor policies have them), direct
/// loops with no im2col patches (policy/detail/dense_conv_maps.hpp): through the same kind of
/// per-sample map of (output pixel, tap) → input pixel (−1: padding), with the weights at
/// theta[offset, + taps · K · N) as taps row-major K × N blocks (K input, N output channels),
///   dense_conv_per_sample:                y = beta · y + Σ_t x[pixel(p, t)] W_t
///   dense_conv_input_adjoint_per_sample:  gx = beta · gx + Σ_{p, t} (gy[p] W_tᵀ at pixel(p, t))
///   dense_conv_weight_adjoint_per_sample: grad[offset + (t · K + k) · N + n] = beta · grad[…] + Σ x[pixel(p, t), k] gy[p, n]
/// A convolution with one group and a map other than the identity uses them when a policy has
/// them, and patch products otherwise.
template <class P>
concept dense_conv_maps =
    nn_tensor_policy<P> && requires(typename P::vector& v, const typename P::vector& cv, typename P::matrix& m,
                                    const typename P::matrix& cm, typename P::scalar s, std::size_t n,
                                    const std::vector<std::int64_t>& index) {
      P::dense_conv_per_sample(cm, index, n, n, cv, n, n, s, m);
      P::dense_conv_input_adjoint_per_sample(cm, index, n, n, cv, n, n, n, s, m);
      P::dense_conv_weight_adjoint_per_sample(cm, cm, index, n, n, s, v, n);
    };

/// Optional fused column primitives (the Eigen and xtensor policies have them;
/// policy/detail/column_maps.hpp), one pass over the data each:
///   column_sums_pair: sa_j = Σ_i a_ij, sab_j = Σ_i a_ij b_ij
///   combine_columns:  out = Σ_t m_t ⊙ u_t (per-column factors) + z (per column); out may be m_0
/// learners/layers/column_ops.hpp composes the same from the required primitives otherwise.
template <class P>
concept fused_column_maps =
    nn_tensor_policy<P> && requires(typename P::vector& v, const typename P::vector& cv, typename P::matrix& m,
                                    const typename P::matrix& cm) {
      P::column_sums_pair(cm, cm, v, v);
      P::combine_columns(std::declval<std::span<const typename P::matrix* const>>(),
                         std::declval<std::span<const typename P::vector* const>>(), cv, m);
    };

namespace detail {
/// A functor of the shape zip_apply takes (one element written, one read), for the concept.
struct zip_probe {
  using bilevel_device_callable = void;
  template <class S>
  void operator()(S& out, S in) const;
};
}  // namespace detail

/// Optional fused element-wise primitives (every policy here has them;
/// policy/detail/fused_maps.hpp for the host ones):
///   zip_apply(f, a, b, ...):  f(a_i, b_i, ...) for every i over vectors of one length, a
///                             non-const vector by reference (written), a const one by value;
/// an optimizer's update, VJP and JVP are one such pass (optim/), instead of 5 to 20 BLAS-1
/// calls; under a device policy f must run on the device (core/elementwise.hpp).
template <class P>
concept fused_elementwise = tensor_policy<P> && requires(typename P::vector& v, const typename P::vector& cv) {
  P::zip_apply(detail::zip_probe{}, v, cv);
};

/// Optional fused classifier head (every policy here has it): for logits z and target rows t,
///   softmax_cross_entropy(z, t, mass, losses, d):
///       mass_i = Σ_j t_ij, losses_i = mass_i·lse(z_i) − ⟨t_i, z_i⟩, d = diag(mass)·softmax(z) − t
///   softmax_cross_entropy_tangent(z, ż, mass, w, factor, g):
///       g_i = factor·w_i·mass_i·(p_i ⊙ ż_i − p_i·⟨p_i, ż_i⟩), p = softmax(z)
/// one pass (one kernel) each where learners/sequential.hpp composes 8 and 9 primitives otherwise.
template <class P>
concept fused_softmax_cross_entropy =
    nn_tensor_policy<P> && requires(typename P::vector& v, const typename P::vector& cv, typename P::matrix& m,
                                    const typename P::matrix& cm, typename P::scalar s) {
      P::softmax_cross_entropy(cm, cm, v, v, m);
      P::softmax_cross_entropy_tangent(cm, cm, cv, cv, s, m);
    };

/// Optional scaled copies (every policy here has them), each one pass where a copy or a fill
/// came first otherwise:
///   scale_rows_into(src, c, factor, out):  out_ij = src_ij·(c_i·factor), out may be src (a
///                                          network's logit adjoint weighted per sample and by
///                                          1/batch, learners/sequential.hpp);
///   scale_entry(s, c, i, x, y):            y = (s·c_i)·x, the factor read from a vector entry
///                                          (the first term of a mixed operation's weighted sum,
///                                          learners/layers/mixed.hpp, instead of zeros and axpy_entry).
template <class P>
concept fused_scaled_copies = nn_tensor_policy<P> && requires(const typename P::vector& cv, typename P::matrix& m,
                                                              const typename P::matrix& cm, typename P::scalar s,
                                                              std::size_t n) {
  P::scale_rows_into(cm, cv, s, m);
  P::scale_entry(s, cv, n, cm, m);
};

/// An optional scaled dot into a vector entry (every policy here has it):
///   add_scaled_dot_into(x, y, s, out, i):  out_i += s·⟨x, y⟩, accumulated in double
/// for vectors, where add_dot_into takes matrices: a mean loss or a squared norm left on the
/// policy's storage (core/entry_scalars.hpp) in one operation instead of a scaled copy and two
/// reshapes.
template <class P>
concept vector_dot_into = tensor_policy<P> && requires(const typename P::vector& cv, typename P::vector& v,
                                                       typename P::scalar s, std::size_t n) {
  P::add_scaled_dot_into(cv, cv, s, v, n);
};

/// Optional in-place segment primitives (every policy here has them): a layer's bias row read
/// where it lies in the flat parameter vector, and its gradient written there,
///   add_segment_row(m, v, offset):           m_ij += v[offset + j]
///   column_sums_into_segment(m, v, offset):  v[offset + j] = Σ_i m_ij
/// instead of a segment copy and add_row, and column_sums and set_segment (a copy each way).
template <class P>
concept fused_segment_ops = nn_tensor_policy<P> && requires(typename P::vector& v, const typename P::vector& cv,
                                                            typename P::matrix& m, const typename P::matrix& cm,
                                                            std::size_t n) {
  P::add_segment_row(m, cv, n);
  P::column_sums_into_segment(cm, v, n);
};

namespace detail {
/// A functor of the shapes add_segment_row_map takes (the biased entry, and one more), for the
/// concept.
struct bias_map_probe {
  using bilevel_device_callable = void;
  template <class S>
  S operator()(S) const;
  template <class S>
  S operator()(S, S) const;
  template <class S>
  S operator()(S, S, S, S) const;
};
}  // namespace detail

/// An optional bias-and-map primitive (every policy here has it):
///   add_segment_row_map(m, v, offset, out, f, x...):  m_ij += v[offset + j], then
///                                                     out_ij = f(m_ij, x_ij...)
/// for matrices x of m's shape (none or more); out may be m. A layer's bias and the activation
/// after it in one pass (learners/layers/activation_layer.hpp): forward f = σ, tangent
/// m = ẏ, x = y and f = ẏ·σ'(y). m keeps the biased values, which the activation's backward
/// and tangent passes read. Under a device policy f must run on the device.
template <class P>
concept fused_bias_maps = nn_tensor_policy<P> && requires(typename P::matrix& m, const typename P::matrix& cm,
                                                          const typename P::vector& cv, std::size_t n) {
  P::add_segment_row_map(m, cv, n, m, detail::bias_map_probe{});
  P::add_segment_row_map(m, cv, n, m, detail::bias_map_probe{}, cm);
};

/// An optional map-and-bias-gradient primitive (every policy here has it):
///   map_column_sums_into_segment(out, v, offset, f, x...):  out_ij = f(x_ij...), then
///                                                           v[offset + j] = Σ_i out_ij
/// for one to four matrices x of one shape; out may be one of them. The backward pass of an
/// activation and the bias gradient of the layer before it in one pass
/// (learners/layers/activation_layer.hpp): f = g·σ'(y), and the tangent's
/// f = ġ·σ'(y) + g·σ''(y)·ẏ, whose four products are then one pass too. On a device the sums
/// are one kernel with a fixed order of addition. Under a device policy f must run on the
/// device.
template <class P>
concept fused_bias_gradients = nn_tensor_policy<P> && requires(typename P::matrix& m, const typename P::matrix& cm,
                                                               typename P::vector& v, std::size_t n) {
  P::map_column_sums_into_segment(m, v, n, detail::bias_map_probe{}, cm, cm);
  P::map_column_sums_into_segment(m, v, n, detail::bias_map_probe{}, cm, cm, cm, cm);
};

/// An optional finiteness check that leaves its answer where the policy keeps its data (every
/// policy here has it): `mark_nonfinite(x, out, i)` sets out_i = 1 when x has a NaN or Inf and
/// leaves it as it is otherwise. all_finite returns a host bool, a wait on a device back end;
/// the solver's deferred checks (failure_policy::check_every) use this instead and read all
/// their answers at once.
template <class P>
concept deferred_checks = tensor_policy<P> && requires(const typename P::vector& cv, typename P::vector& v,
                                                       std::size_t n) { P::mark_nonfinite(cv, v, n); };

/// A policy whose data live where a host read waits for the queued work (a device back end)
/// says so with `static constexpr bool device_resident = true;`. Code that has the choice then
/// keeps its scalars on the policy's storage (core/entry_scalars.hpp) instead of reading them;
/// on host policies, where a read costs nothing, it reads them and keeps the host arithmetic.
template <class P>
concept device_resident = tensor_policy<P> && requires { requires P::device_resident; };

/// The vector and scalar types of a policy, spelled once.
template <tensor_policy P> using vector_t = typename P::vector;
template <tensor_policy P> using scalar_t = typename P::scalar;

}  // namespace bilevel
