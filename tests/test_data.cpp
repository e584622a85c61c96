// SPDX-License-Identifier: MIT
// IDX reading and writing (plain and gzip), every malformed-file error, the real
// Fashion-MNIST files when the Debian package is installed, seeded splits and batches that
// keep sample ids, and the label-noise (symmetric, pair to the next class or along a checked
// pairing) and long-tail corruptions.
#include <doctest/doctest.h>

#include <bilevel/data/corruption.hpp>
#include <bilevel/data/dataset.hpp>
#include <bilevel/data/fashion_mnist.hpp>
#include <bilevel/data/idx.hpp>
#include <bilevel/data/subset.hpp>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>

namespace fs = std::filesystem;
using namespace bilevel::data;

namespace {

struct temp_dir {
  fs::path path;
  temp_dir() : path(fs::temp_directory_path() / ("bilevel_test_" + std::to_string(::getpid()) + "_" +
                                                 std::to_string(counter()++))) {
    fs::create_directories(path);
  }
  ~temp_dir() { fs::remove_all(path); }
  static int& counter() {
    static int c = 0;
    return c;
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

std::vector<unsigned char> read_bytes(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}
void write_bytes(const std::string& p, const std::vector<unsigned char>& b) {
  std::ofstream f(p, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}

idx_array sample_array(idx_type t) {
  idx_array a{t, {3, 2, 2}, {}};
  for (std::size_t i = 0; i < a.count(); ++i) {
    double v = double(i) * 7 - 20;  // negatives for signed types
    if (t == idx_type::u8) v = double(i * 21 % 256);
    if (t == idx_type::f32 || t == idx_type::f64) v = double(i) * 0.25 - 1.5;
    a.values.push_back(v);
  }
  return a;
}

dataset toy(std::size_t rows, std::size_t classes) {
  dataset d;
  d.rows = rows;
  d.cols = 2;
  d.num_classes = classes;
  for (std::size_t r = 0; r < rows; ++r) {
    d.features.push_back(float(r));
    d.features.push_back(float(r) * 0.5f);
    d.labels.push_back(int(r % classes));
    d.ids.push_back(1000 + r);
  }
  return d;
}

}  // namespace

TEST_CASE("IDX: every element type round-trips, plain and gzip") {
  temp_dir dir;
  for (auto t : {idx_type::u8, idx_type::i8, idx_type::i16, idx_type::i32, idx_type::f32, idx_type::f64}) {
    for (bool gz : {false, true}) {
      CAPTURE(int(t));
      CAPTURE(gz);
      const auto a = sample_array(t);
      const auto path = dir.file(gz ? "a.idx.gz" : "a.idx");
      write_idx(path, a, gz);
      const auto b = read_idx(path);
      CHECK(b.type == a.type);
      CHECK(b.dims == a.dims);
      CHECK(b.values == a.values);
    }
  }
}

TEST_CASE("IDX: malformed files are rejected with a message naming the problem") {
  temp_dir dir;
  const auto good = dir.file("good.idx");
  write_idx(good, sample_array(idx_type::i16));
  const auto bytes = read_bytes(good);
  auto with = [&](const std::string& name, std::vector<unsigned char> b) {
    write_bytes(dir.file(name), b);
    return dir.file(name);
  };
  CHECK_THROWS_WITH_AS(read_idx(dir.file("missing.idx")), doctest::Contains("cannot open"), idx_error);
  auto bad_magic = bytes;
  bad_magic[0] = 0x12;
  CHECK_THROWS_WITH_AS(read_idx(with("magic.idx", bad_magic)), doctest::Contains("wrong magic number"), idx_error);
  auto bad_type = bytes;
  bad_type[2] = 0x07;
  CHECK_THROWS_WITH_AS(read_idx(with("type.idx", bad_type)), doctest::Contains("unknown element type code 7"), idx_error);
  auto truncated = bytes;
  truncated.resize(bytes.size() - 3);
  CHECK_THROWS_WITH_AS(read_idx(with("short.idx", truncated)), doctest::Contains("(truncated)"), idx_error);
  auto trailing = bytes;
  trailing.push_back(0);
  CHECK_THROWS_WITH_AS(read_idx(with("long.idx", trailing)), doctest::Contains("(trailing data)"), idx_error);
  auto zero_dims = bytes;
  zero_dims[3] = 0;
  CHECK_THROWS_WITH_AS(read_idx(with("zero.idx", zero_dims)), doctest::Contains("zero dimensions"), idx_error);
  CHECK_THROWS_WITH_AS(read_idx(with("header.idx", {0, 0, 8, 3, 0, 0})), doctest::Contains("ends inside it"), idx_error);
  CHECK_THROWS_WITH_AS(read_idx(with("tiny.idx", {0, 0})), doctest::Contains("shorter than an IDX header"), idx_error);

  // gzip: a stream cut short, and one with damaged compressed bytes.
  const auto gz = dir.file("good.idx.gz");
  write_idx(gz, sample_array(idx_type::f64), true);
  auto gz_bytes = read_bytes(gz);
  auto cut = gz_bytes;
  cut.resize(gz_bytes.size() / 2);
  CHECK_THROWS_WITH_AS(read_idx(with("cut.idx.gz", cut)), doctest::Contains("corrupt or truncated"), idx_error);
  auto damaged = gz_bytes;
  for (std::size_t i = 12; i < damaged.size() - 8; i += 3) damaged[i] ^= 0x5A;
  CHECK_THROWS_AS(read_idx(with("damaged.idx.gz", damaged)), idx_error);
}

TEST_CASE("Fashion-MNIST: the Debian package's files have the published counts") {
  if (!fashion_mnist_available()) {
    MESSAGE("SKIPPED: Fashion-MNIST not found in " << fashion_mnist_dir()
                                                   << " (apt-get install dataset-fashion-mnist)");
    return;
  }
  const auto f = load_fashion_mnist();
  CHECK(f.train.rows == 60000);
  CHECK(f.test.rows == 10000);
  CHECK(f.train.cols == 784);
  for (auto c : f.train.class_counts()) CHECK(c == 6000);
  for (auto c : f.test.class_counts()) CHECK(c == 1000);
  const auto [lo, hi] = std::minmax_element(f.train.features.begin(), f.train.features.end());
  CHECK(*lo == 0.0f);
  CHECK(*hi == 1.0f);
}

TEST_CASE("Fashion-MNIST: a directory without the files gives an error that says what to install") {
  temp_dir dir;
  CHECK_FALSE(fashion_mnist_available(dir.path.string()));
  CHECK_THROWS_WITH_AS(load_fashion_mnist(dir.path.string()), doctest::Contains("dataset-fashion-mnist"), idx_error);
}

TEST_CASE("split: a clean balanced validation set, disjoint from training, reproducible") {
  const auto all = toy(100, 4);
  const auto s = split_validation(all, 5, 42);
  CHECK(s.validation.rows == 20);
  CHECK(s.train.rows == 80);
  for (auto c : s.validation.class_counts()) CHECK(c == 5);
  std::set<std::size_t> ids(s.train.ids.begin(), s.train.ids.end());
  for (auto id : s.validation.ids) CHECK(ids.insert(id).second);  // disjoint
  CHECK(ids.size() == 100);                                        // and together everything
  CHECK(split_validation(all, 5, 42).validation.ids == s.validation.ids);
  CHECK(split_validation(all, 5, 43).validation.ids != s.validation.ids);
  CHECK_THROWS_WITH_AS(split_validation(all, 26, 1), doctest::Contains("fewer than the 26"), std::invalid_argument);
}

TEST_CASE("batches: every row once per epoch without replacement; ids follow the samples") {
  batch_sampler b(10, 3, 7);
  CHECK(b.batches_per_epoch() == 3);
  std::multiset<std::size_t> seen;
  for (int i = 0; i < 3; ++i)
    for (auto r : b.next()) seen.insert(r);
  CHECK(seen.size() == 9);
  CHECK(std::set<std::size_t>(seen.begin(), seen.end()).size() == 9);  // no repeats within an epoch
  const auto d = toy(10, 2);
  const std::vector<std::size_t> rows = {7, 2};
  const auto sub = d.subset(rows);
  CHECK(sub.ids == std::vector<std::size_t>{1007, 1002});
  CHECK(sub.features[0] == 7.0f);
  batch_sampler w(10, 8, 7, true);
  for (auto r : w.next()) CHECK(r < 10);
  // A validation set smaller than its batch is an error even when drawing with replacement.
  CHECK_THROWS_WITH_AS(batch_sampler(10, 50, 7, true), doctest::Contains("batch size 50 exceeds the 10 rows"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(batch_sampler(0, 1, 1), doctest::Contains("empty"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(batch_sampler(5, 8, 1), doctest::Contains("batch size 8 exceeds the 5 rows"), std::invalid_argument);
}

TEST_CASE("batches: a pass is complete when its last batch is drawn") {
  batch_sampler b(10, 3, 7);  // 3 batches a pass, the row left over dropped
  std::vector<std::size_t> completed;
  for (int i = 0; i < 10; ++i) {
    (void)b.next();
    completed.push_back(b.epochs_completed());
  }
  CHECK(completed == std::vector<std::size_t>{0, 0, 1, 1, 1, 2, 2, 2, 3, 3});
  batch_sampler keep_last(10, 3, 7, false, false);  // 3, 3, 3, then the short batch of 1
  for (int i = 0; i < 3; ++i) (void)keep_last.next();
  CHECK(keep_last.epochs_completed() == 0);
  CHECK(keep_last.next().size() == 1);
  CHECK(keep_last.epochs_completed() == 1);
  batch_sampler with_replacement(10, 3, 7, true);
  for (int i = 0; i < 10; ++i) (void)with_replacement.next();
  CHECK(with_replacement.epochs_completed() == 0);  // no epochs
}

TEST_CASE("random subset: the asked size, ids kept, original order, the same rows for the same seed") {
  const auto d = toy(50, 5);
  const auto s = random_subset(d, 12, 3);
  s.validate();
  CHECK(s.rows == 12);
  CHECK(std::is_sorted(s.ids.begin(), s.ids.end()));
  CHECK(std::set<std::size_t>(s.ids.begin(), s.ids.end()).size() == 12);
  for (std::size_t i = 0; i < s.rows; ++i) {  // every row is the original row of its id
    const std::size_t r = s.ids[i] - 1000;
    CHECK(s.labels[i] == d.labels[r]);
    CHECK(s.features[2 * i] == d.features[2 * r]);
  }
  CHECK(random_subset(d, 12, 3).ids == s.ids);
  CHECK(random_subset(d, 12, 4).ids != s.ids);
  CHECK(random_subset(d, 50, 1).ids == d.ids);
  CHECK_THROWS_WITH_AS(random_subset(d, 51, 1), doctest::Contains("asked for 51 rows of a data set of 50"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(random_subset(d, 0, 1), doctest::Contains("asked for 0 rows"), std::invalid_argument);
}

TEST_CASE("stratified subset: class counts proportional to the data's, largest remainder, every class kept") {
  // Class sizes 60, 30, 9, 1 (100 rows).
  dataset d = toy(100, 1);
  d.num_classes = 4;
  for (std::size_t r = 0; r < 100; ++r) d.labels[r] = r < 60 ? 0 : r < 90 ? 1 : r < 99 ? 2 : 3;
  // 20 rows: exact shares 12, 6, 1.8, 0.2 -> 12, 6, 2, 0 by largest remainder; class 3 then
  // takes one from the class most over its share (class 2: +0.2).
  CHECK(stratified_quotas(d.class_counts(), 20) == std::vector<std::size_t>{12, 6, 1, 1});
  // 10 rows: 6, 3, 0.9, 0.1 -> 6, 3, 1, 0; classes 0 and 1 are both exactly at their share,
  // so class 3 takes its row from the lower of them.
  CHECK(stratified_quotas(d.class_counts(), 10) == std::vector<std::size_t>{5, 3, 1, 1});
  CHECK(stratified_quotas(d.class_counts(), 3) == std::vector<std::size_t>{2, 1, 0, 0});  // fewer rows than classes
  CHECK(stratified_quotas({5, 5, 5}, 4) == std::vector<std::size_t>{2, 1, 1});              // ties to the lower class
  const auto s = stratified_subset(d, 20, 9);
  s.validate();
  CHECK(s.rows == 20);
  CHECK(s.class_counts() == std::vector<std::size_t>{12, 6, 1, 1});
  CHECK(std::is_sorted(s.ids.begin(), s.ids.end()));
  for (std::size_t i = 0; i < s.rows; ++i) CHECK(s.labels[i] == d.labels[s.ids[i] - 1000]);
  CHECK(stratified_subset(d, 20, 9).ids == s.ids);
  CHECK(stratified_subset(d, 20, 10).ids != s.ids);
  CHECK(stratified_subset(d, 100, 1).ids == d.ids);
  CHECK_THROWS_WITH_AS(stratified_subset(d, 101, 1), doctest::Contains("asked for 101 rows of a data set of 100"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(stratified_subset(d, 0, 1), doctest::Contains("asked for 0 rows"), std::invalid_argument);
}

TEST_CASE("symmetric noise: exactly the asked fraction, always to another class") {
  auto d = toy(1000, 10);
  const auto rec = symmetric_label_noise(d, 0.4, 3);
  CHECK(rec.count() == 400);
  for (std::size_t r = 0; r < d.rows; ++r) CHECK((d.labels[r] != rec.original_labels[r]) == rec.corrupted[r]);
  d.validate();
}

TEST_CASE("symmetric noise, Meta-Weight-Net's uniform_mix: about rate·(C−1)/C of labels change") {
  auto d = toy(20000, 10);
  const auto rec = symmetric_label_noise(d, 0.4, 5, true);
  const double changed = double(rec.count()) / double(d.rows);
  // Expected 0.36; the binomial standard deviation at n = 20000 is 0.0034: ±0.015 is 4.4σ.
  CHECK(std::abs(changed - 0.36) < 0.015);
}

TEST_CASE("pair noise moves labels to the next class") {
  auto d = toy(100, 5);
  const auto rec = pair_label_noise(d, 0.2, 1);
  CHECK(rec.count() == 20);
  for (std::size_t r = 0; r < d.rows; ++r)
    if (rec.corrupted[r]) CHECK(d.labels[r] == (rec.original_labels[r] + 1) % 5);
  CHECK_THROWS_WITH_AS(pair_label_noise(d, 1.5, 1), doctest::Contains("noise rate must be in [0, 1]"),
                       std::invalid_argument);
}

TEST_CASE("pair noise along a pairing: exactly the asked fraction, each to its partner, the rest kept") {
  const auto partner = fashion_mnist_similar_pairs();
  auto d = toy(200, 10);
  const auto rec = pair_label_noise(d, 0.3, 4, partner);
  CHECK(rec.count() == 60);
  for (std::size_t r = 0; r < d.rows; ++r) {
    CHECK(rec.original_labels[r] == int(r % 10));
    CHECK(d.labels[r] == (rec.corrupted[r] ? partner[std::size_t(rec.original_labels[r])] : rec.original_labels[r]));
  }
  d.validate();
  // The pairing decides where rows go, not which: the next-class noise of the same seed and
  // rate corrupts the same rows.
  auto cyclic = toy(200, 10);
  CHECK(pair_label_noise(cyclic, 0.3, 4).corrupted == rec.corrupted);
}

TEST_CASE("the similar Fashion-MNIST classes pair up: each class and its partner are each other's") {
  const auto partner = fashion_mnist_similar_pairs();
  REQUIRE(partner.size() == 10);
  for (int c = 0; c < 10; ++c) {
    CHECK(partner[std::size_t(c)] != c);
    CHECK(partner[std::size_t(partner[std::size_t(c)])] == c);
  }
  CHECK(partner[0] == 6);  // T-shirt/top and Shirt
  CHECK(partner[2] == 4);  // Pullover and Coat
  CHECK(partner[5] == 7);  // Sandal and Sneaker
  CHECK(partner[1] == 3);  // Trouser and Dress
  CHECK(partner[8] == 9);  // Bag and Ankle boot
}

TEST_CASE("pair noise refuses a pairing that does not send every class to another class") {
  auto d = toy(30, 3);
  const auto before = d.labels;
  CHECK_THROWS_WITH_AS(pair_label_noise(d, 0.5, 1, {1, 0}),
                       doctest::Contains("the pairing has 2 entries for 3 classes"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(pair_label_noise(d, 0.5, 1, {1, 3, 0}),
                       doctest::Contains("the pairing maps class 1 to 3, outside [0, 3)"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(pair_label_noise(d, 0.5, 1, {1, -1, 0}),
                       doctest::Contains("the pairing maps class 1 to -1, outside [0, 3)"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(pair_label_noise(d, 0.5, 1, {1, 0, 2}), doctest::Contains("the pairing maps class 2 to itself"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(pair_label_noise(d, 1.5, 1, {1, 2, 0}), doctest::Contains("noise rate must be in [0, 1]"),
                       std::invalid_argument);
  auto one_class = toy(10, 1);
  CHECK_THROWS_WITH_AS(pair_label_noise(one_class, 0.5, 1),
                       doctest::Contains("pair_label_noise: needs at least 2 classes"), std::invalid_argument);
  CHECK(d.labels == before);  // refused before any label changed
}

TEST_CASE("long tail: n_c = n_max · IF^(−c/(C−1))") {
  const auto counts = long_tail_counts(6000, 10, 100.0);
  CHECK(counts.front() == 6000);
  CHECK(counts.back() == 60);
  CHECK(counts[5] == std::size_t(std::llround(6000 * std::pow(100.0, -5.0 / 9.0))));
  const auto d = long_tail(toy(1000, 10), 10.0, 2);  // 100 per class available
  const auto c = d.class_counts();
  CHECK(c[0] == 100);
  CHECK(c[9] == 10);
  CHECK_THROWS_WITH_AS(long_tail_counts(10, 10, 0.5), doctest::Contains("imbalance factor must be >= 1"),
                       std::invalid_argument);
}

TEST_CASE("class frequency weights: c_k ∝ n_k^(−power), mean 1 over the classes present") {
  const auto d = long_tail(toy(1000, 10), 10.0, 2);  // 100 ... 10 per class
  const auto c = d.class_counts();
  for (double power : {0.0, 0.5, 1.0}) {
    const auto w = class_frequency_weights(d, power);
    REQUIRE(w.size() == 10);
    double mean = 0;
    for (double x : w) mean += x / 10;
    CHECK(mean == doctest::Approx(1.0).epsilon(1e-14));
    // the ratio of two classes' weights is the inverse ratio of their sizes to the power
    CHECK(w[9] / w[0] == doctest::Approx(std::pow(double(c[0]) / double(c[9]), power)).epsilon(1e-13));
  }
  CHECK(class_frequency_weights(d, 0.0) == std::vector<double>(10, 1.0));
  auto gap = toy(30, 3);  // class 2 emptied: weight 0, the other two keep a mean of 1
  for (auto& l : gap.labels) l = l == 2 ? 0 : l;
  const auto w = class_frequency_weights(gap, 1.0);
  CHECK(w[2] == 0.0);
  CHECK(w[0] + w[1] == doctest::Approx(2.0));
  CHECK_THROWS_WITH_AS(class_frequency_weights(d, -1.0), doctest::Contains("power must be finite and >= 0, got -1"),
                       std::invalid_argument);
}

TEST_CASE("dataset validation names the bad label") {
  auto d = toy(10, 3);
  d.labels[4] = 3;
  CHECK_THROWS_WITH_AS(d.validate("toy"), doctest::Contains("toy row 4 has label 3, outside [0, 3)"),
                       std::invalid_argument);
}
