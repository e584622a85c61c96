// SPDX-License-Identifier: MIT
// The CUDA suite's runner. Without a usable CUDA device it runs nothing: it says so and
// exits 77, which ctest reports as Skipped (SKIP_RETURN_CODE), not Passed. Queries that need
// no device (--help, --version, --list-test-cases, --count, ...) still work, so test cases
// can be listed on a machine without a GPU.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <string>
#include <string_view>

#include <bilevel/policy/cuda/context.cuh>

namespace {
constexpr int skip_code = 77;

bool is_query(std::string_view a) {
  for (std::string_view q : {"-h", "--help", "-?", "-v", "--version", "-c", "--count", "-ltc", "--list-test-cases",
                             "-lts", "--list-test-suites", "-lr", "--list-reporters"})
    if (a == q || (a.size() > q.size() && a.substr(0, q.size()) == q && a[q.size()] == '=')) return true;
  // doctest's prefixed spellings: -dt-ltc, --dt-list-test-cases
  if (a.substr(0, 4) == "-dt-") return is_query(std::string("-").append(a.substr(4)));
  if (a.substr(0, 5) == "--dt-") return is_query(std::string("--").append(a.substr(5)));
  return false;
}
}  // namespace

int main(int argc, char** argv) {
  doctest::Context context(argc, argv);
  bool query = false;
  for (int i = 1; i < argc; ++i) query = query || is_query(argv[i]);
  std::string why;
  if (!query && bilevel::policy::cuda_device_count(&why) == 0) {
    std::printf("bilevel_cuda_tests: no CUDA device, skipping (%zu test cases built)\n",
                doctest::detail::getRegisteredTests().size());
    std::printf("bilevel_cuda_tests: %s\n", why.c_str());
    return skip_code;
  }
  return context.run();
}
