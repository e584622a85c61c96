// SPDX-License-Identifier: MIT
// libFuzzer target for the IDX reader (bilevel/data/idx.hpp). Build and run: scripts/fuzz.sh.
//
// Each input is read three ways:
//   1. parse_idx_bytes(input): gzip when it starts with 1f 8b, else plain IDX;
//   2. parse_idx(input): always plain IDX;
//   3. parse_idx_bytes(gzip(input)): the input wrapped in a valid gzip stream, which must give
//      exactly what (2) gives (same error-or-not, same type, dims and value bits).
// The reader documents one exception type, idx_error; it is caught. Anything else escapes
// and is a finding: a sanitizer report, a crash, an allocation over -rss_limit_mb /
// -malloc_limit_mb (e.g. trusting absurd dimensions), std::bad_alloc, std::length_error or
// any other exception. A successful parse must be self-consistent, else __builtin_trap():
// 1 to 255 dimensions, values.size() == product of dims == count(), and no product of the
// dimensions overflows size_t; for plain input the byte size is exactly header + count *
// element size.
#include <bilevel/data/idx.hpp>

#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <vector>

using bilevel::data::idx_array;
using bilevel::data::idx_error;

namespace {

/// Product of the dimensions in checked arithmetic; nullopt when a product of the non-zero
/// ones (times the element size) overflows, which the reader must have rejected.
std::optional<std::size_t> checked_count(const idx_array& a) {
  const std::size_t element = bilevel::data::idx_element_size(static_cast<std::uint8_t>(a.type));
  if (element == 0) return std::nullopt;
  std::size_t bytes = element;
  bool empty = false;
  for (auto d : a.dims) {
    if (d == 0) {
      empty = true;
      continue;
    }
    if (__builtin_mul_overflow(bytes, d, &bytes)) return std::nullopt;
  }
  return empty ? 0 : bytes / element;
}

void check_consistent(const idx_array& a) {
  if (a.dims.empty() || a.dims.size() > 255) __builtin_trap();
  const auto n = checked_count(a);
  if (!n) __builtin_trap();
  if (a.values.size() != *n || a.count() != *n) __builtin_trap();
}

std::size_t plain_size(const idx_array& a) {
  return 4 + 4 * a.dims.size() + a.values.size() * bilevel::data::idx_element_size(static_cast<std::uint8_t>(a.type));
}

bool same(const idx_array& a, const idx_array& b) {
  return a.type == b.type && a.dims == b.dims && a.values.size() == b.values.size() &&
         (a.values.empty() || std::memcmp(a.values.data(), b.values.data(), a.values.size() * sizeof(double)) == 0);
}

std::vector<unsigned char> gzip(const std::uint8_t* data, std::size_t size) {
  z_stream s{};
  if (deflateInit2(&s, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) __builtin_trap();
  std::vector<unsigned char> out(deflateBound(&s, static_cast<uLong>(size)) + 64);
  s.next_in = const_cast<Bytef*>(data);
  s.avail_in = static_cast<uInt>(size);
  s.next_out = out.data();
  s.avail_out = static_cast<uInt>(out.size());
  if (deflate(&s, Z_FINISH) != Z_STREAM_END) __builtin_trap();
  out.resize(out.size() - s.avail_out);
  deflateEnd(&s);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const unsigned char> input(data, size);

  // 1. As given: gzip or plain, by magic.
  try {
    check_consistent(bilevel::data::parse_idx_bytes(input, "fuzz-input"));
  } catch (const idx_error&) {
  }

  // 2. As plain IDX.
  std::optional<idx_array> plain;
  try {
    plain = bilevel::data::parse_idx(std::vector<unsigned char>(input.begin(), input.end()), "fuzz-plain");
    check_consistent(*plain);
    if (plain_size(*plain) != size) __builtin_trap();
  } catch (const idx_error&) {
  }

  // 3. Wrapped in gzip: the same outcome as (2).
  const auto compressed = gzip(data, size);
  std::optional<idx_array> unzipped;
  try {
    unzipped = bilevel::data::parse_idx_bytes(compressed, "fuzz-gzip");
    check_consistent(*unzipped);
  } catch (const idx_error&) {
  }
  if (plain.has_value() != unzipped.has_value()) __builtin_trap();
  if (plain && !same(*plain, *unzipped)) __builtin_trap();
  return 0;
}
