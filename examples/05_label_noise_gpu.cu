// SPDX-License-Identifier: MIT
// 05: the label-noise experiment's Meta-Weight-Net run (example 02) on the GPU: the same
// method, unchanged, instantiated with the CUDA policy (bilevel/policy/cuda.hpp) instead of
// Eigen. Fashion-MNIST (Debian package dataset-fashion-mnist), 40% symmetric label noise, 100
// clean validation images per class, MLP 784-256-128-10; prints the test accuracy and the time
// of each epoch.
//
//   build/examples/05_label_noise_gpu [--epochs N] [--noise R] [--seed S] [--data DIR] [--quick]
//
// Built where nvcc is found (the bilevel::cuda target); this translation unit is CUDA and
// keeps Eigen out. Without a GPU (or without the data) it says so and exits 77, which ctest
// reports as Skipped. Exits 1 when the result is off: non-finite, or (full run) no better
// than chance.
#include <bilevel/data/corruption.hpp>
#include <bilevel/data/fashion_mnist.hpp>
#include <bilevel/methods/meta_weight_net.hpp>
#include <bilevel/policy/cuda.hpp>

#include <cuda_runtime.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

namespace {
using P = bilevel::policy::cuda<float>;

/// Test accuracy (%) of the classifier at theta, in chunks of 1000 images; only the argmax
/// of each row comes back from the device.
template <class Net>
double accuracy(const Net& net, const P::vector& theta, const bilevel::data::dataset& d) {
  std::size_t correct = 0;
  for (std::size_t start = 0; start < d.rows; start += 1000) {
    std::vector<std::size_t> rows;
    for (std::size_t r = start; r < std::min(d.rows, start + 1000); ++r) rows.push_back(r);
    const auto b = bilevel::learners::make_batch<P>(d, rows);
    P::vector max;
    std::vector<std::int64_t> predicted;
    P::row_max(net.forward(theta, b).logits, max, predicted);
    for (std::size_t i = 0; i < rows.size(); ++i) correct += predicted[i] == b.labels[i];
  }
  return 100.0 * double(correct) / double(d.rows);
}
}  // namespace

int main(int argc, char** argv) {
  std::size_t epochs = 5;
  double noise = 0.4;
  unsigned seed = 1;
  std::string dir;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&] {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "05_label_noise_gpu: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return std::string(argv[++i]);
    };
    if (a == "--epochs") epochs = std::stoul(value());
    else if (a == "--noise") noise = std::stod(value());
    else if (a == "--seed") seed = unsigned(std::stoul(value()));
    else if (a == "--data") dir = value();
    else if (a == "--quick") quick = true;
    else if (a == "--help") {
      std::puts("05_label_noise_gpu [--epochs N] [--noise R] [--seed S] [--data DIR] [--quick]");
      return 0;
    } else {
      std::fprintf(stderr, "05_label_noise_gpu: unknown option %s (see --help)\n", a.c_str());
      return 2;
    }
  }
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::puts("05_label_noise_gpu: no CUDA device; built, not run");
    return 77;
  }
  if (!bilevel::data::fashion_mnist_available(dir)) {
    std::puts("05_label_noise_gpu: Fashion-MNIST not found (apt-get install dataset-fashion-mnist, or --data DIR)");
    return 77;
  }
  namespace data = bilevel::data;
  auto fm = data::load_fashion_mnist(dir);
  auto split = data::split_validation(fm.train, 100, seed);
  if (quick) {  // a slice, so that ctest finishes in seconds
    std::vector<std::size_t> rows(2000);
    for (std::size_t r = 0; r < rows.size(); ++r) rows[r] = r;
    split.train = split.train.subset(rows);
    std::vector<std::size_t> test_rows(1000);
    for (std::size_t r = 0; r < test_rows.size(); ++r) test_rows[r] = r;
    fm.test = fm.test.subset(test_rows);
    epochs = 1;
  }
  const auto corruption = data::symmetric_label_noise(split.train, noise, seed + 10);
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  std::printf("%s: %zu training images (%zu labels corrupted), %zu clean validation, %zu test\n", prop.name,
              split.train.rows, corruption.count(), split.validation.rows, fm.test.rows);
  auto s = bilevel::methods::meta_weight_net<P>(std::make_shared<const data::dataset>(split.train),
                                                std::make_shared<const data::dataset>(split.validation),
                                                {.seed = seed});
  const std::size_t steps = (split.train.rows + 99) / 100;  // batches of 100
  double last = 0;
  for (std::size_t epoch = 1; epoch <= epochs; ++epoch) {
    const auto start = std::chrono::steady_clock::now();
    s.run(steps);
    P::synchronize();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    last = accuracy(s.level<0>().learner, s.level<0>().theta, fm.test);
    std::printf("epoch %zu/%zu: %zu steps in %.2f s (%.2f ms/step), test accuracy %.2f%%\n", epoch, epochs, steps,
                seconds, 1e3 * seconds / double(steps), last);
  }
  const bool ok = std::isfinite(last) && (quick || last > 20.0);
  if (!ok) std::puts("FAILED: non-finite or chance-level accuracy");
  return ok ? 0 : 1;
}
