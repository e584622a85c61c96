// SPDX-License-Identifier: MIT
// The IDX fuzz corpus (fuzz/corpus, built by scripts/fuzz.sh and fuzz/make_seed_corpus.py)
// as regression tests: every input either parses into a self-consistent array or throws
// idx_error, never anything else, read from memory and from the file alike; the named seeds
// and findings also have their expected outcome checked.
#include <doctest/doctest.h>

#include <bilevel/data/idx.hpp>

#include <algorithm>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using namespace bilevel::data;

namespace {

fs::path corpus_dir() { return fs::path(__FILE__).parent_path().parent_path() / "fuzz" / "corpus"; }

std::vector<unsigned char> file_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}

/// The outcome of one read: the array, or the idx_error message. Any other exception fails
/// the test (it is caught so that the file is named in the report).
struct outcome {
  std::optional<idx_array> array;
  std::string error;
};

template <class Read>
outcome attempt(Read read) {
  outcome o;
  try {
    o.array = read();
  } catch (const idx_error& e) {
    o.error = e.what();
  } catch (const std::exception& e) {
    FAIL("an exception other than idx_error: " << e.what());
  } catch (...) {
    FAIL("a non-standard exception");
  }
  return o;
}

void check_consistent(const idx_array& a) {
  REQUIRE(!a.dims.empty());
  CHECK(a.dims.size() <= 255);
  const std::size_t element = idx_element_size(static_cast<std::uint8_t>(a.type));
  REQUIRE(element != 0);
  // The product of the dimensions, in checked arithmetic: the reader must have rejected any
  // shape whose (non-zero) dimensions overflow, whatever their order.
  std::size_t bytes = element;
  bool empty = false;
  for (auto d : a.dims) {
    if (d == 0) {
      empty = true;
    } else {
      REQUIRE(bytes <= std::numeric_limits<std::size_t>::max() / d);
      bytes *= d;
    }
  }
  const std::size_t count = empty ? 0 : bytes / element;
  CHECK(a.values.size() == count);
  CHECK(a.count() == count);
}

bool same_array(const idx_array& a, const idx_array& b) {
  if (a.type != b.type || a.dims != b.dims || a.values.size() != b.values.size()) return false;
  for (std::size_t i = 0; i < a.values.size(); ++i)
    if (!(a.values[i] == b.values[i] || (a.values[i] != a.values[i] && b.values[i] != b.values[i]))) return false;
  return true;
}

}  // namespace

TEST_CASE("IDX fuzz corpus: every input parses consistently or throws idx_error, from memory and from file") {
  const fs::path dir = corpus_dir();
  INFO("corpus: " << dir.string());
  REQUIRE(fs::is_directory(dir));
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.is_regular_file()) files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  REQUIRE(files.size() >= 10);

  std::size_t parsed = 0, rejected = 0;
  for (const auto& path : files) {
    CAPTURE(path.filename().string());
    const auto bytes = file_bytes(path);
    CHECK(bytes.size() < 4096);
    const outcome memory = attempt([&] { return parse_idx_bytes(bytes, path.string()); });
    const outcome file = attempt([&] { return read_idx(path.string()); });
    // The file path reads the bytes and parses them in memory: the same outcome.
    CHECK(memory.array.has_value() == file.array.has_value());
    CHECK(memory.error == file.error);
    if (memory.array) {
      ++parsed;
      check_consistent(*memory.array);
      if (file.array) CHECK(same_array(*memory.array, *file.array));
      // A plain input's size is exactly header + data.
      if (!(bytes.size() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b))
        CHECK(bytes.size() == 4 + 4 * memory.array->dims.size() +
                                  memory.array->values.size() *
                                      idx_element_size(static_cast<std::uint8_t>(memory.array->type)));
    } else {
      ++rejected;
      CHECK(memory.error.find("bilevel::data::read_idx") != std::string::npos);
    }
    // parse_idx reads plain IDX only; idx_error or a consistent array too.
    const outcome plain = attempt([&] { return parse_idx(bytes, path.string()); });
    if (plain.array) check_consistent(*plain.array);
  }
  MESSAGE(files.size() << " corpus files: " << parsed << " parsed, " << rejected << " rejected with idx_error");
  CHECK(parsed >= 5);
  CHECK(rejected >= 5);
}

TEST_CASE("IDX fuzz corpus: the named seeds and findings have their expected outcome") {
  const fs::path dir = corpus_dir();
  // Valid seeds (fuzz/make_seed_corpus.py): the .gz ones hold the same array as the plain one.
  const std::map<std::string, std::string> valid = {
      {"u8_1d.idx", ""},         {"u8_3d.idx", ""},           {"i8_1d.idx", ""},
      {"i16_2d.idx", ""},        {"i32_2d.idx", ""},          {"f32_1d.idx", ""},
      {"f32_special.idx", ""},   {"f64_2d.idx", ""},          {"f64_3d.idx", ""},
      {"u8_empty.idx", ""},      {"i32_zero_dim.idx", ""},    {"u8_3d.idx.gz", "u8_3d.idx"},
      {"i32_2d.idx.gz", "i32_2d.idx"}, {"f32_1d.idx.gz", "f32_1d.idx"}, {"f64_2d.idx.gz", "f64_2d.idx"},
      {"two_members.idx.gz", ""},
  };
  // Malformed seeds and fuzz findings, with a part of the message that names the problem.
  const std::map<std::string, std::string> invalid = {
      {"empty.idx", "shorter than an IDX header"},
      {"tiny.idx", "shorter than an IDX header"},
      {"wrong_magic.idx", "wrong magic number"},
      {"unknown_type.idx", "unknown element type code 7"},
      {"zero_ndims.idx", "zero dimensions"},
      {"header_cut.idx", "ends inside it"},
      {"data_cut.idx", "(truncated)"},
      {"trailing.idx", "(trailing data)"},
      {"dims_exceed_data.idx", "dimensions 65536x65536 need 4294967308 bytes but the file has 20 bytes (truncated)"},
      {"huge_dims.idx", "dimensions 4294967295x4294967295 overflow"},
      {"overflow_dims.idx", "dimensions 4294967295x4294967295x4294967295 overflow"},
      {"overflow_then_zero.idx", "overflow"},
      {"zero_then_overflow.idx", "dimensions 0x4294967295x4294967295x4294967295 overflow"},
      {"finding_zero_dim_hides_overflow.idx", "overflow"},
      {"gzip_magic_only.idx", "corrupt or truncated"},
      {"gz_cut.idx.gz", "corrupt or truncated"},
      {"gz_bad_crc.idx.gz", "corrupt or truncated"},
      {"gz_bad_length.idx.gz", "corrupt or truncated"},
      {"gz_garbage_after.idx.gz", "after the end of the gzip stream"},
      {"gz_wrong_inner_magic.idx.gz", "wrong magic number"},
      {"gz_trailing_inside.idx.gz", "decompresses to more (trailing data)"},
      {"gz_huge_dims.idx.gz", "(truncated)"},
  };
  for (const auto& [name, plain_twin] : valid) {
    CAPTURE(name);
    REQUIRE(fs::exists(dir / name));
    const idx_array a = read_idx((dir / name).string());
    check_consistent(a);
    if (!plain_twin.empty()) CHECK(same_array(a, read_idx((dir / plain_twin).string())));
  }
  for (const auto& [name, message] : invalid) {
    CAPTURE(name);
    REQUIRE(fs::exists(dir / name));
    CHECK_THROWS_WITH_AS(read_idx((dir / name).string()), doctest::Contains(message.c_str()), idx_error);
  }
}
