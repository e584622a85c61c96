// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Reading and writing IDX files (the MNIST / Fashion-MNIST format), plain or gzip-compressed.
///
/// Layout: two zero bytes, a type code (0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32, 0x0D f32,
/// 0x0E f64), the number of dimensions, each dimension as a big-endian u32, then the data,
/// big-endian, row-major. A file is read whole and checked against its header: a wrong magic,
/// an unknown type, a size that does not match the dimensions (too short *or* too long), a
/// truncated or corrupt gzip stream each throw bilevel::data::idx_error naming the file and
/// the problem. Nothing partial is ever returned as data.
#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace bilevel::data {

class idx_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class idx_type : std::uint8_t { u8 = 0x08, i8 = 0x09, i16 = 0x0B, i32 = 0x0C, f32 = 0x0D, f64 = 0x0E };

/// The size in bytes of one element of a type, 0 for a code that is not an IDX type.
constexpr std::size_t idx_element_size(std::uint8_t code) {
  switch (code) {
    case 0x08: case 0x09: return 1;
    case 0x0B: return 2;
    case 0x0C: case 0x0D: return 4;
    case 0x0E: return 8;
    default: return 0;
  }
}

/// An IDX array: its dimensions and its elements converted to double (exact for every IDX
/// type but 64-bit floats, which stay exact too).
struct idx_array {
  idx_type type = idx_type::u8;
  std::vector<std::size_t> dims;
  std::vector<double> values;

  [[nodiscard]] std::size_t count() const {
    std::size_t n = 1;
    for (auto d : dims) n *= d;
    return n;
  }
};

namespace detail {

/// Reads a whole file, decompressing it if it starts with the gzip magic. zlib's gz* API
/// reads plain files transparently; a gzip stream that ends early or fails its CRC sets an
/// error that is turned into an exception here.
inline std::vector<unsigned char> read_file(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw idx_error("bilevel::data::read_idx: cannot open '" + path + "'");
  std::vector<unsigned char> bytes;
  unsigned char buffer[1 << 16];
  for (;;) {
    const int n = gzread(f, buffer, sizeof buffer);
    if (n < 0) {
      int code = 0;
      const std::string msg = gzerror(f, &code);
      gzclose(f);
      throw idx_error("bilevel::data::read_idx: '" + path + "' is corrupt or truncated (zlib: " + msg + ")");
    }
    if (n == 0) break;
    bytes.insert(bytes.end(), buffer, buffer + n);
  }
  // gzread returns 0 at a premature end of a gzip stream as well; gzclose_r reports it.
  int code = 0;
  const std::string msg = gzerror(f, &code);
  const int closed = gzclose(f);
  if (code != Z_OK || closed != Z_OK)
    throw idx_error("bilevel::data::read_idx: '" + path + "' is corrupt or truncated (zlib: " +
                    (msg.empty() ? "unexpected end of stream" : msg) + ")");
  return bytes;
}

inline std::uint64_t big_endian(const unsigned char* p, std::size_t n) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < n; ++i) v = (v << 8) | p[i];
  return v;
}

}  // namespace detail

/// Parses IDX bytes (already decompressed). `name` is used in error messages.
inline idx_array parse_idx(const std::vector<unsigned char>& bytes, const std::string& name) {
  auto fail = [&](const std::string& what) { throw idx_error("bilevel::data::read_idx: '" + name + "': " + what); };
  if (bytes.size() < 4) fail("file is " + std::to_string(bytes.size()) + " bytes, shorter than an IDX header");
  if (bytes[0] != 0 || bytes[1] != 0)
    fail("wrong magic number (first two bytes must be 0, got " + std::to_string(bytes[0]) + ", " +
         std::to_string(bytes[1]) + "): not an IDX file");
  const std::size_t element = idx_element_size(bytes[2]);
  if (element == 0) fail("unknown element type code " + std::to_string(bytes[2]));
  const std::size_t ndims = bytes[3];
  if (ndims == 0) fail("zero dimensions");
  const std::size_t header = 4 + 4 * ndims;
  if (bytes.size() < header) fail("header declares " + std::to_string(ndims) + " dimensions but the file ends inside it");
  idx_array a;
  a.type = static_cast<idx_type>(bytes[2]);
  std::size_t count = 1;
  std::string shape;
  for (std::size_t i = 0; i < ndims; ++i) {
    const auto d = static_cast<std::size_t>(detail::big_endian(&bytes[4 + 4 * i], 4));
    a.dims.push_back(d);
    shape += (i ? "x" : "") + std::to_string(d);
    if (d != 0 && count > std::numeric_limits<std::size_t>::max() / element / d) fail("dimensions " + shape + " overflow");
    count *= d;
  }
  const std::size_t expected = header + count * element;
  if (bytes.size() != expected)
    fail("dimensions " + shape + " need " + std::to_string(expected) + " bytes but the file has " +
         std::to_string(bytes.size()) + (bytes.size() < expected ? " (truncated)" : " (trailing data)"));
  a.values.resize(count);
  const unsigned char* p = bytes.data() + header;
  for (std::size_t i = 0; i < count; ++i, p += element) {
    const std::uint64_t raw = detail::big_endian(p, element);
    switch (a.type) {
      case idx_type::u8: a.values[i] = double(std::uint8_t(raw)); break;
      case idx_type::i8: a.values[i] = double(std::int8_t(std::uint8_t(raw))); break;
      case idx_type::i16: a.values[i] = double(std::int16_t(std::uint16_t(raw))); break;
      case idx_type::i32: a.values[i] = double(std::int32_t(std::uint32_t(raw))); break;
      case idx_type::f32: {
        const auto bits = std::uint32_t(raw);
        float f;
        std::memcpy(&f, &bits, 4);
        a.values[i] = f;
        break;
      }
      case idx_type::f64: {
        double d;
        std::memcpy(&d, &raw, 8);
        a.values[i] = d;
        break;
      }
    }
  }
  return a;
}

/// Reads an IDX file, plain or gzip-compressed.
inline idx_array read_idx(const std::string& path) { return parse_idx(detail::read_file(path), path); }

/// Writes an IDX file (gzip-compressed when `gzip`), converting values to the array's type.
inline void write_idx(const std::string& path, const idx_array& a, bool gzip = false) {
  if (a.dims.empty() || a.dims.size() > 255) throw idx_error("bilevel::data::write_idx: need 1 to 255 dimensions");
  if (a.values.size() != a.count())
    throw idx_error("bilevel::data::write_idx: " + std::to_string(a.values.size()) + " values for dimensions holding " +
                    std::to_string(a.count()));
  std::vector<unsigned char> out = {0, 0, static_cast<unsigned char>(a.type), static_cast<unsigned char>(a.dims.size())};
  auto put = [&](std::uint64_t v, std::size_t n) {
    for (std::size_t i = n; i-- > 0;) out.push_back(static_cast<unsigned char>((v >> (8 * i)) & 0xFF));
  };
  for (auto d : a.dims) put(d, 4);
  for (double v : a.values) {
    switch (a.type) {
      case idx_type::u8: put(std::uint8_t(v), 1); break;
      case idx_type::i8: put(std::uint8_t(std::int8_t(v)), 1); break;
      case idx_type::i16: put(std::uint16_t(std::int16_t(v)), 2); break;
      case idx_type::i32: put(std::uint32_t(std::int32_t(v)), 4); break;
      case idx_type::f32: {
        const float f = float(v);
        std::uint32_t bits;
        std::memcpy(&bits, &f, 4);
        put(bits, 4);
        break;
      }
      case idx_type::f64: {
        std::uint64_t bits;
        std::memcpy(&bits, &v, 8);
        put(bits, 8);
        break;
      }
    }
  }
  gzFile f = gzopen(path.c_str(), gzip ? "wb9" : "wbT");
  if (!f) throw idx_error("bilevel::data::write_idx: cannot open '" + path + "' for writing");
  const int written = gzwrite(f, out.data(), static_cast<unsigned>(out.size()));
  if (gzclose(f) != Z_OK || written != static_cast<int>(out.size()))
    throw idx_error("bilevel::data::write_idx: failed writing '" + path + "'");
}

}  // namespace bilevel::data
