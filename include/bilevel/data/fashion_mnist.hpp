// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Fashion-MNIST (Xiao et al., 2017): 60000 training and 10000 test images of 28x28 grey
/// pixels in 10 classes, read from the IDX files of the Debian package
/// `dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist) or a directory the user
/// gives. Pixels are scaled to [0, 1]. Nothing is downloaded.
#include <cstdlib>
#include <filesystem>
#include <string>

#include "bilevel/data/dataset.hpp"
#include "bilevel/data/idx.hpp"

namespace bilevel::data {

/// Where the Debian package puts the files.
inline constexpr const char* fashion_mnist_default_dir = "/usr/share/datasets/fashion-mnist";

struct fashion_mnist {
  dataset train, test;
  static constexpr std::size_t image_side = 28, classes = 10;
};

/// The directory to read: `dir` if not empty, else $BILEVEL_FASHION_MNIST_DIR, else the
/// Debian package's.
inline std::string fashion_mnist_dir(const std::string& dir = {}) {
  if (!dir.empty()) return dir;
  if (const char* env = std::getenv("BILEVEL_FASHION_MNIST_DIR"); env && *env) return env;
  return fashion_mnist_default_dir;
}

/// True when the four files are present (plain or .gz) in the directory.
inline bool fashion_mnist_available(const std::string& dir = {}) {
  namespace fs = std::filesystem;
  const std::string d = fashion_mnist_dir(dir);
  for (const char* stem : {"train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                           "t10k-labels-idx1-ubyte"})
    if (!fs::exists(fs::path(d) / stem) && !fs::exists(fs::path(d) / (std::string(stem) + ".gz"))) return false;
  return true;
}

namespace detail {
inline std::string find_idx(const std::string& dir, const std::string& stem) {
  namespace fs = std::filesystem;
  for (const std::string& name : {stem, stem + ".gz"})
    if (fs::exists(fs::path(dir) / name)) return (fs::path(dir) / name).string();
  throw idx_error("bilevel::data::load_fashion_mnist: no " + stem + "[.gz] in '" + dir +
                  "' (install the Debian package dataset-fashion-mnist, or pass the directory that holds the files)");
}

/// Images (n × 28 × 28, u8) and labels (n, u8 in 0..9) into a dataset.
inline dataset images_and_labels(const std::string& images_path, const std::string& labels_path) {
  const idx_array images = read_idx(images_path), labels = read_idx(labels_path);
  if (images.type != idx_type::u8 || images.dims.size() != 3 || images.dims[1] != 28 || images.dims[2] != 28)
    throw idx_error("bilevel::data::load_fashion_mnist: '" + images_path + "' is not an array of 28x28 u8 images");
  if (labels.type != idx_type::u8 || labels.dims.size() != 1 || labels.dims[0] != images.dims[0])
    throw idx_error("bilevel::data::load_fashion_mnist: '" + labels_path + "' does not hold one u8 label per image of '" +
                    images_path + "'");
  dataset d;
  d.rows = images.dims[0];
  d.cols = 28 * 28;
  d.num_classes = 10;
  d.features.resize(images.values.size());
  for (std::size_t i = 0; i < images.values.size(); ++i) d.features[i] = float(images.values[i] / 255.0);
  d.labels.resize(d.rows);
  d.ids.resize(d.rows);
  for (std::size_t r = 0; r < d.rows; ++r) {
    d.labels[r] = int(labels.values[r]);
    d.ids[r] = r;
  }
  d.validate(labels_path);
  return d;
}
}  // namespace detail

/// Loads both splits; throws idx_error naming the missing or malformed file.
inline fashion_mnist load_fashion_mnist(const std::string& dir = {}) {
  const std::string d = fashion_mnist_dir(dir);
  fashion_mnist f;
  f.train = detail::images_and_labels(detail::find_idx(d, "train-images-idx3-ubyte"),
                                      detail::find_idx(d, "train-labels-idx1-ubyte"));
  f.test = detail::images_and_labels(detail::find_idx(d, "t10k-images-idx3-ubyte"),
                                     detail::find_idx(d, "t10k-labels-idx1-ubyte"));
  return f;
}

}  // namespace bilevel::data
