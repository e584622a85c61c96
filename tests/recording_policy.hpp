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
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <vector>

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

struct recording_policy : bilevel::policy::eigen<double> {
  using base = bilevel::policy::eigen<double>;
  /// As a device policy: code with the choice keeps its scalars in one-entry vectors.
  static constexpr bool device_resident = true;
  static double dot(const vector& x, const vector& y) { return counted("dot", base::dot(x, y)); }
  static double norm(const vector& x) { return counted("norm", base::norm(x)); }
  static double sum(const vector& x) { return counted("sum", base::sum(x)); }
  static bool all_finite(const vector& x) { return counted("all_finite", base::all_finite(x)); }
  static bool equal(const vector& a, const vector& b) { return counted("equal", base::equal(a, b)); }
  static bool equal(const matrix& a, const matrix& b) { return counted("equal", base::equal(a, b)); }
  static std::vector<scalar> to_host(const vector& v) { return counted("to_host", base::to_host(v)); }
  static std::vector<scalar> matrix_to_host(const matrix& m) { return counted("matrix_to_host", base::matrix_to_host(m)); }
  static void row_max(const matrix& m, vector& max, std::vector<std::int64_t>& arg) {
    ++host_reads()["row_max"];
    base::row_max(m, max, arg);
  }
  static std::vector<std::int64_t> indices_to_host(const index_vector& i) {
    return counted("indices_to_host", base::indices_to_host(i));
  }

  static std::uint64_t content_stamp(const vector& v) { return hash(v.data(), std::size_t(v.size()), 1); }
  static std::uint64_t content_stamp(const matrix& m) {
    return hash(m.data(), std::size_t(m.size()), std::uint64_t(m.rows()) * 0x9E3779B97F4A7C15ULL + std::uint64_t(m.cols()));
  }

 private:
  template <class T>
  static T counted(const char* name, T value) {
    ++host_reads()[name];
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
