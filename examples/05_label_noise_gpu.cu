// SPDX-License-Identifier: MIT
// 05: the label-noise experiment's Meta-Weight-Net run (example 02) on the GPU: the same
// method, unchanged, instantiated with the CUDA policy (bilevel/policy/cuda.hpp) instead of
// Eigen. Fashion-MNIST (Debian package dataset-fashion-mnist), 40% symmetric label noise, 100
// clean validation images per class, MLP 784-256-128-10; prints the test accuracy and the time
// of each epoch.
//
//   build/examples/05_label_noise_gpu [--epochs N] [--noise R] [--seed S] [--data DIR] [--quick]
//
// The command line is the other examples' (examples/support/options.hpp, CLI11; --help lists
// the options with their ranges, exit 2 on a bad one). The results are read by name:
// s.model() is the classifier, its test accuracy the library's classification_accuracy (only
// the argmax of each row comes back from the device); the epochs are the solver's on_epoch,
// the length of training the configuration's `epochs`. The losses and finiteness checks stay
// on the device and are read once per epoch (failure_policy::check_every, docs/guide.md), so
// a training step never waits for the GPU; a NaN is still reported with its step, at the end
// of that epoch. Since a step waits for nothing, each is captured as one CUDA graph and
// launched as one (solver::capture_steps), with the plain launches' results.
//
// Built where nvcc is found (the bilevel::cuda target); this translation unit is CUDA and
// keeps Eigen out. Without a GPU (or without the data) it says so and exits 77, which ctest
// reports as Skipped. Exits 1 when the result is off: non-finite, or (full run) no better
// than chance.
#include <bilevel/data/corruption.hpp>
#include <bilevel/data/fashion_mnist.hpp>
#include <bilevel/data/subset.hpp>
#include <bilevel/learners/classification_accuracy.hpp>
#include <bilevel/methods/meta_weight_net.hpp>
#include <bilevel/policy/cuda.hpp>

#include <cuda_runtime.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>

#include "support/options.hpp"

namespace {
using P = bilevel::policy::cuda<float>;

int run(int argc, char** argv) {
  example::options o;
  o.epochs = 5;
  example::command_line cli("05_label_noise_gpu",
                            "Meta-Weight-Net on Fashion-MNIST with label noise, on the GPU (the CUDA policy).", o);
  cli.seed()
      .epochs("epochs over the training split")
      .noise()
      .data("directory of the Fashion-MNIST IDX files, plain or .gz (default: $BILEVEL_FASHION_MNIST_DIR, else the "
            "Debian package's /usr/share/datasets/fashion-mnist)",
            "accepted like the other examples'; without the data set this program always exits 77")
      .quick("2000 training and 1000 test images, 1 epoch unless --epochs is given (what ctest runs)");
  if (const auto status = cli.parse(argc, argv)) return *status;
  const unsigned seed = o.seeds.front();
  const std::size_t epochs = o.quick && !o.was_given("--epochs") ? 1 : o.epochs;

  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::puts("05_label_noise_gpu: no CUDA device; built, not run");
    return 77;
  }
  if (!bilevel::data::fashion_mnist_available(o.data)) {
    std::puts("05_label_noise_gpu: Fashion-MNIST not found (apt-get install dataset-fashion-mnist, or --data DIR)");
    return 77;
  }
  namespace data = bilevel::data;
  auto fm = data::load_fashion_mnist(o.data);
  auto split = data::split_validation(fm.train, 100, seed);
  if (o.quick) {  // a stratified slice of each, so that ctest finishes in seconds with every class present
    split.train = data::stratified_subset(split.train, 2000, seed + 30);
    fm.test = data::stratified_subset(fm.test, 1000, seed + 31);
  }
  const auto corruption = data::symmetric_label_noise(split.train, o.noise, seed + 10);
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  std::printf("%s: %zu training images (%zu labels corrupted), %zu clean validation, %zu test\n", prop.name,
              split.train.rows, corruption.count(), split.validation.rows, fm.test.rows);
  auto s = bilevel::methods::meta_weight_net<P>(std::make_shared<const data::dataset>(split.train),
                                                std::make_shared<const data::dataset>(split.validation),
                                                {.epochs = epochs, .seed = seed});
  // Each epoch's time counts its training steps only: the clock restarts after the test.
  const std::size_t steps = s.iterations_per_epoch();  // full batches of 100
  s.on_failure({.check_every = steps});                // read once per epoch, before on_epoch
  s.capture_steps();  // so each outer step can go to the GPU as one CUDA graph (docs/gpu.md)
  double last = 0;
  auto start = std::chrono::steady_clock::now();
  bilevel::solver_callbacks callbacks;
  callbacks.on_epoch = [&](const bilevel::epoch_event& e) {
    P::synchronize();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    last = bilevel::learners::classification_accuracy(s.model().learner, s.model().theta, fm.test).plain;
    std::printf("epoch %zu/%zu: %zu steps in %.2f s (%.2f ms/step), test accuracy %.2f%%\n", e.epoch + 1, s.epochs(),
                steps, seconds, 1e3 * seconds / double(steps), last);
    start = std::chrono::steady_clock::now();
    return true;
  };
  s.run(s.total_iterations(), callbacks);
  const auto& graphs = s.capture_report();
  if (graphs.fallback.empty())
    std::printf("%zu outer steps launched as CUDA graphs (%zu instantiated, %zu updated in place), %zu plain\n",
                graphs.captured_steps, graphs.instantiations, graphs.updates, graphs.plain_steps);
  else
    std::printf("steps run with plain launches: %s\n", graphs.fallback.c_str());
  const bool ok = std::isfinite(last) && (o.quick || last > 20.0);
  if (!ok) std::puts("FAILED: non-finite or chance-level accuracy");
  return ok ? 0 : 1;
}
}  // namespace

int main(int argc, char** argv) {
  return example::guarded_main("05_label_noise_gpu", [&] { return run(argc, argv); });
}
