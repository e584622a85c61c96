// SPDX-License-Identifier: MIT
#pragma once
// The Eigen policy, counting the calls whose result is a host value: the calls that make a
// device back end wait for its queue (policy/cuda.hpp lists them). What a step of the solver
// reads on the host can then be checked here, without a GPU.
//
// It also stamps its arrays (core/content_stamps.hpp) and says it is device-resident
// (core/tensor_policy.hpp) as the CUDA policy does, so that the caches, L2RW's weight rule and
// finite differences take the paths they take there. A device policy stamps an array when it writes it;
// here the stamp is a hash of the values (FNV-1a of the bytes and the shape), which keeps the
// promise (equal stamps, equal values) up to a 2^-64 chance of a collision, enough for tests.
//
// And it counts every operation, by name: each call of a primitive that a device back end
// runs as a kernel, a cuBLAS call or a copy (shape queries and resizes aside), so what a step
// asks of a GPU, launch by launch, is known here too (the CUDA policy's activity() counters
// measure the same on a device).
//
// And it has a stand-in for a device's graph capture (core/step_capture.hpp), so that the
// solver's capture_steps runs its probe and captures here: inside a "captured" step every host
// read throws, as a device's capture refuses a wait, so a run that completes shows that no
// captured step read anything back.
#include <cstdint>
#include <cstring>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <bilevel/core/policy_stream.hpp>
#include <bilevel/policy/eigen.hpp>

namespace test {

/// Calls whose result is a host value, by name, since the last clear().
inline std::map<std::string, std::size_t>& host_reads() {
  static std::map<std::string, std::size_t> counts;
  return counts;
}
inline std::size_t total_host_reads() {
  std::size_t n = 0;
  for (const auto& [name, count] : host_reads()) n += count;
  return n;
}
/// Operations (primitive calls, host reads included) by name, since the last clear().
inline std::map<std::string, std::size_t>& operations() {
  static std::map<std::string, std::size_t> counts;
  return counts;
}
inline std::size_t total_operations() {
  std::size_t n = 0;
  for (const auto& [name, count] : operations()) n += count;
  return n;
}
/// While log_operations() is set, every operation's name in the order of the calls.
inline bool& log_operations() {
  static bool on = false;
  return on;
}
inline std::vector<std::string>& operation_log() {
  static std::vector<std::string> log;
  return log;
}
/// Host reads since the process began (never cleared: the capture probe's counter).
inline std::size_t& host_reads_ever() {
  static std::size_t n = 0;
  return n;
}
/// Set while a step is "captured" (recording_policy::graph_capture).
inline bool& capturing() {
  static bool on = false;
  return on;
}
inline void record_operation(const char* name) {
  ++operations()[name];
  if (log_operations()) operation_log().emplace_back(name);
}

// A primitive of the base policy, counted; SFINAE-friendly, so that the optional primitives'
// concepts see what the base has.
#define BILEVEL_TEST_COUNTED(op)                                                                   \
  template <class... A>                                                                          \
  static auto op(A&&... a)->decltype(base::op(std::forward<A>(a)...)) {                          \
    record_operation(#op);                                                                       \
    return base::op(std::forward<A>(a)...);                                                      \
  }

struct recording_policy : bilevel::policy::eigen<double> {
  using base = bilevel::policy::eigen<double>;
  /// As a device policy: code with the choice keeps its scalars in one-entry vectors.
  static constexpr bool device_resident = true;
  BILEVEL_TEST_COUNTED(zeros)
  BILEVEL_TEST_COUNTED(matrix_zeros)
  BILEVEL_TEST_COUNTED(from_host)
  BILEVEL_TEST_COUNTED(matrix_from_host)
  BILEVEL_TEST_COUNTED(copy)
  BILEVEL_TEST_COUNTED(fill)
  BILEVEL_TEST_COUNTED(axpy)
  BILEVEL_TEST_COUNTED(scale)
  BILEVEL_TEST_COUNTED(hadamard)
  BILEVEL_TEST_COUNTED(transform)
  BILEVEL_TEST_COUNTED(gemv)
  BILEVEL_TEST_COUNTED(gemm)
  BILEVEL_TEST_COUNTED(unflatten)
  BILEVEL_TEST_COUNTED(segment)
  BILEVEL_TEST_COUNTED(flatten_into)
  BILEVEL_TEST_COUNTED(gemm_into_segment)
  BILEVEL_TEST_COUNTED(gemm_by_segment)
  BILEVEL_TEST_COUNTED(set_segment)
  BILEVEL_TEST_COUNTED(axpy_entry)
  BILEVEL_TEST_COUNTED(add_dot_into)
  BILEVEL_TEST_COUNTED(mark_nonfinite)
  BILEVEL_TEST_COUNTED(add_row)
  BILEVEL_TEST_COUNTED(column_sums)
  BILEVEL_TEST_COUNTED(row_dots)
  BILEVEL_TEST_COUNTED(scale_rows)
  BILEVEL_TEST_COUNTED(scale_columns)
  BILEVEL_TEST_COUNTED(row_softmax)
  BILEVEL_TEST_COUNTED(row_logsumexp)
  BILEVEL_TEST_COUNTED(row_sums)
  BILEVEL_TEST_COUNTED(row_max_onehot)
  BILEVEL_TEST_COUNTED(gather)
  BILEVEL_TEST_COUNTED(scatter_add)
  BILEVEL_TEST_COUNTED(gather_per_sample)
  BILEVEL_TEST_COUNTED(scatter_add_per_sample)
  BILEVEL_TEST_COUNTED(reshape)
  BILEVEL_TEST_COUNTED(columns)
  BILEVEL_TEST_COUNTED(set_columns)
  BILEVEL_TEST_COUNTED(row_block)
  BILEVEL_TEST_COUNTED(set_row_block)
  BILEVEL_TEST_COUNTED(column_sums_pair)
  BILEVEL_TEST_COUNTED(combine_columns)
  BILEVEL_TEST_COUNTED(depthwise_per_sample)
  BILEVEL_TEST_COUNTED(depthwise_input_adjoint_per_sample)
  BILEVEL_TEST_COUNTED(depthwise_weight_adjoint_per_sample)
  BILEVEL_TEST_COUNTED(dense_conv_per_sample)
  BILEVEL_TEST_COUNTED(dense_conv_input_adjoint_per_sample)
  BILEVEL_TEST_COUNTED(dense_conv_weight_adjoint_per_sample)
  BILEVEL_TEST_COUNTED(window_max_per_sample)
  BILEVEL_TEST_COUNTED(window_max_adjoint_per_sample)
  BILEVEL_TEST_COUNTED(window_max_tangent)
  BILEVEL_TEST_COUNTED(zip_apply)
  BILEVEL_TEST_COUNTED(softmax_cross_entropy)
  BILEVEL_TEST_COUNTED(softmax_cross_entropy_tangent)
  BILEVEL_TEST_COUNTED(scale_rows_into)
  BILEVEL_TEST_COUNTED(scale_entry)
  BILEVEL_TEST_COUNTED(add_scaled_dot_into)
  BILEVEL_TEST_COUNTED(add_segment_row)
  BILEVEL_TEST_COUNTED(column_sums_into_segment)
  BILEVEL_TEST_COUNTED(add_segment_row_map)
  BILEVEL_TEST_COUNTED(map_column_sums_into_segment)
  static double dot(const vector& x, const vector& y) { return counted("dot", base::dot(x, y)); }
  static double norm(const vector& x) { return counted("norm", base::norm(x)); }
  static double sum(const vector& x) { return counted("sum", base::sum(x)); }
  static bool all_finite(const vector& x) { return counted("all_finite", base::all_finite(x)); }
  static bool equal(const vector& a, const vector& b) { return counted("equal", base::equal(a, b)); }
  static bool equal(const matrix& a, const matrix& b) { return counted("equal", base::equal(a, b)); }
  static std::vector<scalar> to_host(const vector& v) { return counted("to_host", base::to_host(v)); }
  static std::vector<scalar> matrix_to_host(const matrix& m) { return counted("matrix_to_host", base::matrix_to_host(m)); }
  static void row_max(const matrix& m, vector& max, std::vector<std::int64_t>& arg) {
    note_read("row_max");
    record_operation("row_max");
    base::row_max(m, max, arg);
  }
  static std::vector<std::int64_t> indices_to_host(const index_vector& i) {
    return counted("indices_to_host", base::indices_to_host(i));
  }

  /// A device graph capture's stand-in (see the file comment): begin and end mark the step,
  /// the first capture "instantiates" and the later ones "update".
  struct graph_capture {
    static std::size_t host_waits() { return host_reads_ever(); }
    std::string refuse(bilevel::detail::no_stream&) { return {}; }
    void begin(bilevel::detail::no_stream&) {
      if (capturing()) throw std::logic_error("recording_policy: a capture inside a capture");
      capturing() = true;
    }
    void end_and_launch(bilevel::detail::no_stream&) {
      capturing() = false;
      if (launched++ == 0) made = 1;
      else ++updated;
    }
    void abort(bilevel::detail::no_stream&) noexcept {
      capturing() = false;
      ++aborted;
    }
    [[nodiscard]] std::size_t instantiations() const { return made; }
    [[nodiscard]] std::size_t updates() const { return updated; }
    std::size_t launched = 0, made = 0, updated = 0, aborted = 0;
  };

  static std::uint64_t content_stamp(const vector& v) { return hash(v.data(), std::size_t(v.size()), 1); }
  static std::uint64_t content_stamp(const matrix& m) {
    return hash(m.data(), std::size_t(m.size()), std::uint64_t(m.rows()) * 0x9E3779B97F4A7C15ULL + std::uint64_t(m.cols()));
  }

 private:
  static void note_read(const char* name) {
    if (capturing())
      throw std::logic_error(std::string("recording_policy: ") + name + " read back inside a captured step");
    ++host_reads()[name];
    ++host_reads_ever();
  }
  template <class T>
  static T counted(const char* name, T value) {
    note_read(name);
    record_operation(name);
    return value;
  }
  static std::uint64_t hash(const scalar* p, std::size_t n, std::uint64_t shape) {
    std::uint64_t h = 1469598103934665603ULL ^ shape;
    for (std::size_t i = 0; i < n; ++i) {
      std::uint64_t bits;
      std::memcpy(&bits, p + i, sizeof bits);
      h = (h ^ bits) * 1099511628211ULL;
    }
    return h ^ n;
  }
};

}  // namespace test

#undef BILEVEL_TEST_COUNTED
