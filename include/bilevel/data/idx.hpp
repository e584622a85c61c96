// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Reading and writing IDX files (the MNIST / Fashion-MNIST format), plain or gzip-compressed.
///
/// Layout: two zero bytes, a type code (0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32, 0x0D f32,
/// 0x0E f64), the number of dimensions, each dimension as a big-endian u32, then the data,
/// big-endian, row-major. A file is read whole and checked against its header: a wrong magic,
/// an unknown type, dimensions whose product overflows, a size that does not match the
/// dimensions (too short *or* too long), a truncated or corrupt gzip stream, or bytes after
/// it that are not another gzip member each throw bilevel::data::idx_error naming the file
/// and the problem. idx_error is the only exception malformed input raises (a valid file too
/// large for memory can still raise std::bad_alloc). Nothing partial is ever returned as
/// data, and nothing is allocated from the declared dimensions before the data has been
/// checked against them; a gzip stream is inflated no further than its header says the file
/// is long.
///
/// read_idx reads a file; parse_idx_bytes parses plain or gzip bytes held in memory;
/// parse_idx parses plain bytes. fuzz/idx_fuzzer.cpp fuzzes them (scripts/fuzz.sh) and
/// tests/test_idx_corpus.cpp replays the fuzz corpus.
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <span>
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

[[noreturn]] inline void idx_fail(const std::string& name, const std::string& what) {
  throw idx_error("bilevel::data::read_idx: '" + name + "': " + what);
}

inline std::uint64_t big_endian(const unsigned char* p, std::size_t n) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < n; ++i) v = (v << 8) | p[i];
  return v;
}

/// A checked IDX header: the type, the dimensions, the element count and the size in bytes
/// the whole file must have.
struct idx_header {
  idx_type type = idx_type::u8;
  std::size_t element = 0, header_bytes = 0, count = 0, total_bytes = 0;
  std::vector<std::size_t> dims;
  std::string shape;  // "60000x28x28", for messages
};

/// True once `bytes` hold the whole header (4 bytes, then 4 per dimension), so that it can
/// be checked while the rest is still being decompressed.
inline bool idx_header_available(std::span<const unsigned char> bytes) {
  return bytes.size() >= 4 && bytes.size() >= 4 + 4 * std::size_t(bytes[3]);
}

/// Checks the header of (decompressed) IDX bytes. Nothing is allocated from the declared
/// sizes: the dimensions are only multiplied, in checked arithmetic. The product of the
/// non-zero dimensions times the element size must fit in size_t whatever the order of the
/// dimensions (so no product of some of them a caller forms can overflow either).
inline idx_header parse_idx_header(std::span<const unsigned char> bytes, const std::string& name) {
  if (bytes.size() < 4) idx_fail(name, "file is " + std::to_string(bytes.size()) + " bytes, shorter than an IDX header");
  if (bytes[0] != 0 || bytes[1] != 0)
    idx_fail(name, "wrong magic number (first two bytes must be 0, got " + std::to_string(bytes[0]) + ", " +
                       std::to_string(bytes[1]) + "): not an IDX file");
  idx_header h;
  h.element = idx_element_size(bytes[2]);
  if (h.element == 0) idx_fail(name, "unknown element type code " + std::to_string(bytes[2]));
  h.type = static_cast<idx_type>(bytes[2]);
  const std::size_t ndims = bytes[3];
  if (ndims == 0) idx_fail(name, "zero dimensions");
  h.header_bytes = 4 + 4 * ndims;
  if (bytes.size() < h.header_bytes)
    idx_fail(name, "header declares " + std::to_string(ndims) + " dimensions but the file ends inside it");
  h.dims.reserve(ndims);
  for (std::size_t i = 0; i < ndims; ++i) {
    h.dims.push_back(static_cast<std::size_t>(big_endian(&bytes[4 + 4 * i], 4)));
    h.shape += (i ? "x" : "") + std::to_string(h.dims.back());
  }
  constexpr std::size_t max = std::numeric_limits<std::size_t>::max();
  std::size_t data_bytes = h.element;  // element size times the non-zero dimensions
  bool empty = false;
  for (auto d : h.dims) {
    if (d == 0) {
      empty = true;
    } else if (data_bytes > max / d) {
      idx_fail(name, "dimensions " + h.shape + " overflow: with " + std::to_string(h.element) +
                         "-byte elements they exceed " + std::to_string(max) + " bytes");
    } else {
      data_bytes *= d;
    }
  }
  if (empty) data_bytes = 0;
  if (data_bytes > max - h.header_bytes)
    idx_fail(name, "dimensions " + h.shape + " overflow: header and data exceed " + std::to_string(max) + " bytes");
  h.count = data_bytes / h.element;
  h.total_bytes = h.header_bytes + data_bytes;
  return h;
}

/// Parses plain (already decompressed) IDX bytes.
inline idx_array parse_idx_plain(std::span<const unsigned char> bytes, const std::string& name) {
  const idx_header h = parse_idx_header(bytes, name);
  // Checked before anything is allocated: the data must be exactly what the header declares.
  if (bytes.size() != h.total_bytes)
    idx_fail(name, "dimensions " + h.shape + " need " + std::to_string(h.total_bytes) + " bytes but the file has " +
                       std::to_string(bytes.size()) + " bytes" +
                       (bytes.size() < h.total_bytes ? " (truncated)" : " (trailing data)"));
  idx_array a;
  a.type = h.type;
  a.dims = h.dims;
  a.values.resize(h.count);
  const std::size_t element = h.element;
  const unsigned char* p = bytes.data() + h.header_bytes;
  for (std::size_t i = 0; i < h.count; ++i, p += element) {
    const std::uint64_t raw = big_endian(p, element);
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

inline bool is_gzip(std::span<const unsigned char> bytes) {
  return bytes.size() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b;
}

/// Inflates gzip data in memory: one member or several concatenated (as gzip(1) and zlib's
/// gzread accept). A stream cut short, a damaged one, a failed CRC or length check, and
/// bytes after the last member that are not another member each throw. The IDX header is
/// checked as soon as it has been inflated, and inflating stops as soon as the output is
/// longer than the header says the file is, so a small compressed file cannot make the
/// reader allocate more than its header declares (plus one buffer).
inline std::vector<unsigned char> gunzip_idx(std::span<const unsigned char> in, const std::string& name) {
  auto corrupt = [&](const std::string& why) {
    throw idx_error("bilevel::data::read_idx: '" + name + "' is corrupt or truncated (zlib: " + why + ")");
  };
  z_stream s{};
  if (inflateInit2(&s, 15 + 16) != Z_OK) corrupt("cannot initialise the decompressor");
  struct end_guard {
    z_stream* s;
    ~end_guard() { inflateEnd(s); }
  } guard{&s};
  std::vector<unsigned char> out;
  std::size_t limit = 0;
  std::string shape;
  bool header_checked = false;
  std::size_t fed = 0;  // bytes of `in` handed to zlib so far
  unsigned char buffer[1 << 16];
  for (;;) {
    if (s.avail_in == 0 && fed < in.size()) {
      const std::size_t n = std::min<std::size_t>(in.size() - fed, std::numeric_limits<uInt>::max());
      s.next_in = const_cast<Bytef*>(in.data() + fed);
      s.avail_in = static_cast<uInt>(n);
      fed += n;
    }
    s.next_out = buffer;
    s.avail_out = sizeof buffer;
    const int rc = inflate(&s, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR)
      corrupt(s.msg ? s.msg : (rc == Z_MEM_ERROR ? "out of memory" : "error " + std::to_string(rc)));
    out.insert(out.end(), buffer, buffer + (sizeof buffer - s.avail_out));
    if (!header_checked && idx_header_available(out)) {
      const idx_header h = parse_idx_header(out, name);
      limit = h.total_bytes;
      shape = h.shape;
      header_checked = true;
    }
    if (header_checked && out.size() > limit)
      idx_fail(name, "dimensions " + shape + " need " + std::to_string(limit) +
                         " bytes but the file decompresses to more (trailing data)");
    const std::size_t rest = s.avail_in + (in.size() - fed);  // compressed bytes not yet consumed
    if (rc == Z_STREAM_END) {
      if (rest == 0) break;
      if (!is_gzip(in.subspan(in.size() - rest)))
        idx_fail(name, std::to_string(rest) + " bytes after the end of the gzip stream that are not gzip data (trailing data)");
      if (inflateReset(&s) != Z_OK) corrupt("cannot reset the decompressor");
      continue;
    }
    // With room for output, no progress means zlib wants input that is not there.
    if (rc == Z_BUF_ERROR) corrupt(rest == 0 ? "unexpected end of stream" : "no progress");
  }
  return out;
}

/// Reads a whole file into memory.
inline std::vector<unsigned char> read_file(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw idx_error("bilevel::data::read_idx: cannot open '" + path + "' (" + std::strerror(errno) + ")");
  std::vector<unsigned char> bytes;
  unsigned char buffer[1 << 16];
  for (;;) {
    const std::size_t n = std::fread(buffer, 1, sizeof buffer, f);
    bytes.insert(bytes.end(), buffer, buffer + n);
    if (n < sizeof buffer) break;
  }
  const bool failed = std::ferror(f) != 0;
  const int error = errno;
  std::fclose(f);
  if (failed) throw idx_error("bilevel::data::read_idx: cannot read '" + path + "' (" + std::strerror(error) + ")");
  return bytes;
}

}  // namespace detail

/// Parses plain IDX bytes (already decompressed). `name` is used in error messages.
inline idx_array parse_idx(const std::vector<unsigned char>& bytes, const std::string& name) {
  return detail::parse_idx_plain(bytes, name);
}

/// Parses IDX bytes held in memory, plain or gzip-compressed (recognised by the gzip magic
/// 1f 8b; an IDX file starts with two zero bytes). `name` is used in error messages. Throws
/// idx_error, and only idx_error, for anything malformed.
inline idx_array parse_idx_bytes(std::span<const unsigned char> bytes, const std::string& name) {
  if (detail::is_gzip(bytes)) return detail::parse_idx_plain(detail::gunzip_idx(bytes, name), name);
  return detail::parse_idx_plain(bytes, name);
}

/// Reads an IDX file, plain or gzip-compressed.
inline idx_array read_idx(const std::string& path) { return parse_idx_bytes(detail::read_file(path), path); }

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
