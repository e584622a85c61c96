// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Checkpoint files: a versioned, checksummed binary container written atomically.
///
/// Layout: the 8-byte magic "BLVLCKPT", the format version (u32), the byte size of the
/// tensor scalar (u32), the payload length (u64), the payload, and the CRC-32 of the
/// payload. Integers are little-endian on disk whatever the host. The payload is written by
/// the solver (core/solver.hpp) through checkpoint_writer and read back through
/// checkpoint_reader, which throws checkpoint_error on any short read, so a truncated or
/// corrupted file is rejected before a single value reaches the solver.
///
/// Atomicity: the file is written to `<path>.tmp`, flushed and fsync'ed, then renamed over
/// `<path>`; a crash mid-write leaves the previous checkpoint intact.
#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <vector>
#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

#include "bilevel/core/errors.hpp"

namespace bilevel {

namespace detail {
inline constexpr std::array<std::uint32_t, 256> crc32_table = [] {
  std::array<std::uint32_t, 256> t{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    t[i] = c;
  }
  return t;
}();

/// CRC-32 (IEEE 802.3, as zlib and PNG compute it).
inline std::uint32_t crc32(std::string_view bytes) {
  std::uint32_t c = 0xFFFFFFFFu;
  for (unsigned char b : bytes) c = crc32_table[(c ^ b) & 0xFFu] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

template <class T>
void put_le(std::string& out, T value) {
  static_assert(std::is_trivially_copyable_v<T>);
  char raw[sizeof(T)];
  std::memcpy(raw, &value, sizeof(T));
  if constexpr (std::endian::native == std::endian::big) std::reverse(raw, raw + sizeof(T));
  out.append(raw, sizeof(T));
}
}  // namespace detail

/// Appends typed values to a checkpoint payload.
class checkpoint_writer {
 public:
  void u64(std::uint64_t v) { detail::put_le(bytes_, v); }
  void f64(double v) { detail::put_le(bytes_, v); }
  void text(std::string_view s) {
    u64(s.size());
    bytes_.append(s);
  }
  template <class T>
  void values(std::span<const T> v) {
    u64(v.size());
    for (const T& x : v) detail::put_le(bytes_, x);
  }
  [[nodiscard]] const std::string& bytes() const { return bytes_; }

 private:
  std::string bytes_;
};

/// Reads typed values back, in the order they were written; any read past the end, or a
/// length that cannot fit in what is left, throws checkpoint_error naming `what`.
class checkpoint_reader {
 public:
  explicit checkpoint_reader(std::string_view payload) : data_(payload) {}

  std::uint64_t u64(std::string_view what) { return get<std::uint64_t>(what); }
  double f64(std::string_view what) { return get<double>(what); }
  std::string text(std::string_view what) {
    const std::uint64_t n = u64(what);
    need(n, what);
    std::string s(data_.substr(pos_, n));
    pos_ += n;
    return s;
  }
  template <class T>
  std::vector<T> values(std::string_view what) {
    const std::uint64_t n = u64(what);
    if (n > (data_.size() - pos_) / sizeof(T))
      throw checkpoint_error("bilevel: checkpoint is truncated or corrupted: " + std::string(what) + " claims " +
                             std::to_string(n) + " values but only " + std::to_string(data_.size() - pos_) +
                             " bytes remain");
    std::vector<T> v(n);
    for (auto& x : v) x = get<T>(what);
    return v;
  }
  [[nodiscard]] bool at_end() const { return pos_ == data_.size(); }

 private:
  void need(std::uint64_t n, std::string_view what) const {
    if (n > data_.size() - pos_)
      throw checkpoint_error("bilevel: checkpoint is truncated or corrupted while reading " + std::string(what));
  }
  template <class T>
  T get(std::string_view what) {
    need(sizeof(T), what);
    char raw[sizeof(T)];
    std::memcpy(raw, data_.data() + pos_, sizeof(T));
    if constexpr (std::endian::native == std::endian::big) std::reverse(raw, raw + sizeof(T));
    pos_ += sizeof(T);
    T v;
    std::memcpy(&v, raw, sizeof(T));
    return v;
  }

  std::string_view data_;
  std::size_t pos_ = 0;
};

/// A sampler whose position can be saved (its random generator, its place in the epoch), so
/// a resumed run draws the same batches. bilevel's samplers satisfy it; a sampler with no
/// state (an empty class) needs nothing.
template <class S>
concept checkpointable_sampler = requires(const S& cs, S& s, checkpoint_writer& w, checkpoint_reader& r) {
  cs.save_state(w);
  s.load_state(r);
};

inline constexpr char checkpoint_magic[8] = {'B', 'L', 'V', 'L', 'C', 'K', 'P', 'T'};
inline constexpr std::uint32_t checkpoint_format_version = 2;  ///< 2: each level's learner state

/// Writes header + payload + CRC to `path` atomically (temporary file, fsync, rename).
inline void write_checkpoint_file(const std::filesystem::path& path, std::string_view payload,
                                  std::uint32_t scalar_bytes) {
  std::string file(checkpoint_magic, sizeof checkpoint_magic);
  detail::put_le(file, checkpoint_format_version);
  detail::put_le(file, scalar_bytes);
  detail::put_le(file, std::uint64_t(payload.size()));
  file.append(payload);
  detail::put_le(file, detail::crc32(payload));

  std::filesystem::path tmp = path;
  tmp += ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw checkpoint_error("bilevel: cannot open '" + tmp.string() + "' to write a checkpoint");
  const bool written = std::fwrite(file.data(), 1, file.size(), f) == file.size() && std::fflush(f) == 0;
#if defined(__unix__) || defined(__APPLE__)
  const bool synced = written && ::fsync(::fileno(f)) == 0;
#else
  const bool synced = written;
#endif
  const bool closed = std::fclose(f) == 0;
  if (!(written && synced && closed)) {
    std::error_code ignored;
    std::filesystem::remove(tmp, ignored);
    throw checkpoint_error("bilevel: writing the checkpoint '" + tmp.string() + "' failed (disk full?)");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) throw checkpoint_error("bilevel: cannot rename '" + tmp.string() + "' to '" + path.string() + "': " + ec.message());
}

/// Reads and verifies a checkpoint file; returns its payload.
inline std::string read_checkpoint_file(const std::filesystem::path& path, std::uint32_t scalar_bytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw checkpoint_error("bilevel: cannot open checkpoint '" + path.string() + "'");
  const std::string file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string name = "checkpoint '" + path.string() + "'";
  constexpr std::size_t header = sizeof checkpoint_magic + 4 + 4 + 8;
  if (file.size() < header + 4)
    throw checkpoint_error("bilevel: " + name + " is truncated (" + std::to_string(file.size()) + " bytes)");
  if (std::memcmp(file.data(), checkpoint_magic, sizeof checkpoint_magic) != 0)
    throw checkpoint_error("bilevel: " + name + " is not a bilevel checkpoint (wrong magic)");
  const auto le = [&](std::size_t at, std::size_t n) {
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < n; ++i) v |= std::uint64_t(static_cast<unsigned char>(file[at + i])) << (8 * i);
    return v;
  };
  const auto version = std::uint32_t(le(8, 4)), scalar = std::uint32_t(le(12, 4));
  const std::uint64_t length = le(16, 8);
  if (version != checkpoint_format_version)
    throw checkpoint_error("bilevel: " + name + " has format version " + std::to_string(version) + ", this build reads " +
                           std::to_string(checkpoint_format_version));
  if (scalar != scalar_bytes)
    throw checkpoint_error("bilevel: " + name + " holds " + std::to_string(scalar) + "-byte scalars, this solver uses " +
                           std::to_string(scalar_bytes) + "-byte scalars");
  if (length != file.size() - header - 4)
    throw checkpoint_error("bilevel: " + name + " is truncated or padded: header says " + std::to_string(length) +
                           " payload bytes, the file holds " + std::to_string(file.size() - header - 4));
  const std::string_view payload = std::string_view(file).substr(header, length);
  const auto stored = std::uint32_t(le(header + length, 4));
  if (stored != detail::crc32(payload))
    throw checkpoint_error("bilevel: " + name + " is corrupted (checksum mismatch)");
  return std::string(payload);
}

}  // namespace bilevel
