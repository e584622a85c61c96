// SPDX-License-Identifier: MIT
// 07: the label-noise experiment's Meta-Weight-Net (example 02) on several processes with MPI:
// the same method, each of its levels wrapped data-parallel by one extra argument,
// distributed::across(world). Every rank draws the same batches and computes its rows of each;
// one deterministic all-reduce per product gives every rank the numbers of one process.
// Fashion-MNIST (Debian package dataset-fashion-mnist), 40% symmetric label noise, 100 clean
// validation images per class, MLP 784-256-128-10.
//
//   mpirun -np 2 build/examples/07_label_noise_mpi [--epochs N] [--noise R] [--seed S] [--data DIR] [--quick]
//
// Rank 0 prints each epoch's time and test accuracy. With --quick (what ctest runs, on 2 ranks)
// rank 0 then trains the same method on one process and prints how far the two runs' final
// parameters are apart (round-off: about 1e-7 relative in float), and the run fails if they
// differ by more than 1e-4 or if the ranks' parameters differ at all (check_replicas).
//
// Built where MPI is found (the bilevel::mpi target). Without the data it exits 77 on every
// rank, which ctest reports as Skipped.
#include <bilevel/data/corruption.hpp>
#include <bilevel/data/fashion_mnist.hpp>
#include <bilevel/data/subset.hpp>
#include <bilevel/distributed/data_parallel.hpp>
#include <bilevel/distributed/mpi.hpp>
#include <bilevel/distributed/replicas.hpp>
#include <bilevel/eigen.hpp>
#include <bilevel/learners/classification_accuracy.hpp>
#include <bilevel/methods/meta_weight_net.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "support/options.hpp"

namespace {
using P = bilevel::policy::eigen<float>;
namespace dist = bilevel::distributed;

int run(int argc, char** argv, const dist::mpi_communicator& world) {
  example::options o;
  o.epochs = 5;
  example::command_line cli("07_label_noise_mpi",
                            "Meta-Weight-Net on Fashion-MNIST with label noise, data-parallel over MPI ranks "
                            "(start with mpirun -np R).",
                            o);
  cli.seed()
      .epochs("epochs over the training split")
      .noise()
      .data("directory of the Fashion-MNIST IDX files, plain or .gz (default: $BILEVEL_FASHION_MNIST_DIR, else the "
            "Debian package's /usr/share/datasets/fashion-mnist)",
            "without the data set, exit 77 on every rank instead of failing (the test suite's runs)")
      .quick("2000 training and 1000 test images, 1 epoch unless --epochs is given, then the same on one process "
             "for comparison (what ctest runs)");
  if (const auto status = cli.parse(argc, argv)) return *status;
  const bool root = world.rank() == 0;
  const unsigned seed = o.seeds.front();
  const std::size_t epochs = o.quick && !o.was_given("--epochs") ? 1 : o.epochs;
  if (!bilevel::data::fashion_mnist_available(o.data)) {
    if (o.skip_without_data) throw example::skipped("Fashion-MNIST not found (apt-get install dataset-fashion-mnist)");
    throw std::runtime_error("Fashion-MNIST not found in '" + o.data + "' (apt-get install dataset-fashion-mnist, or --data DIR)");
  }
  namespace data = bilevel::data;
  // Every rank reads and splits the data the same way (same seeds): the ranks differ only in
  // which rows of each batch they compute.
  auto fm = data::load_fashion_mnist(o.data);
  auto split = data::split_validation(fm.train, 100, seed);
  if (o.quick) {
    split.train = data::stratified_subset(split.train, 2000, seed + 30);
    fm.test = data::stratified_subset(fm.test, 1000, seed + 31);
  }
  const auto corruption = data::symmetric_label_noise(split.train, o.noise, seed + 10);
  if (root)
    std::printf("%zu ranks: %zu training images (%zu labels corrupted), %zu clean validation, %zu test\n", world.size(),
                split.train.rows, corruption.count(), split.validation.rows, fm.test.rows);
  const auto train = std::make_shared<const data::dataset>(split.train);
  const auto validation = std::make_shared<const data::dataset>(split.validation);
  const bilevel::methods::meta_weight_net_config cfg{.epochs = epochs, .seed = seed};

  // A rank that fails from here on stops every rank (rather than leaving them in a collective).
  return dist::run_or_abort(world, [&] {
    auto s = bilevel::methods::meta_weight_net<P>(train, validation, cfg, dist::across(world));
    dist::broadcast_parameters(world, s);
    double last = 0;
    auto start = std::chrono::steady_clock::now();
    bilevel::solver_callbacks callbacks;
    callbacks.on_epoch = [&](const bilevel::epoch_event& e) {
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      dist::check_replicas(world, s, e.iteration);
      last = bilevel::learners::classification_accuracy(s.model().learner, s.model().theta, fm.test).plain;
      if (root)
        std::printf("epoch %zu/%zu: %.2f s (%.2f ms/step), test accuracy %.2f%%\n", e.epoch + 1, s.epochs(), seconds,
                    1e3 * seconds / double(s.iterations_per_epoch()), last);
      start = std::chrono::steady_clock::now();
      return true;
    };
    s.run(s.total_iterations(), callbacks);
    bool ok = std::isfinite(last) && (o.quick || last > 20.0);
    if (o.quick) {
      // The same run on one process, on rank 0: the data-parallel run must match it to round-off.
      double apart = 0;
      if (root) {
        auto one = bilevel::methods::meta_weight_net<P>(train, validation, cfg);
        one.run(one.total_iterations());
        const auto a = P::to_host(s.model().theta), b = P::to_host(one.model().theta);
        double diff = 0, norm = 0;
        for (std::size_t i = 0; i < a.size(); ++i) {
          diff += double(a[i] - b[i]) * double(a[i] - b[i]);
          norm += double(b[i]) * double(b[i]);
        }
        apart = std::sqrt(diff / norm);
        std::printf("classifier after %zu iterations, %zu ranks against one process: relative difference %.2e\n",
                    s.total_iterations(), world.size(), apart);
      }
      ok = ok && apart <= 1e-4;
    }
    if (!ok && root) std::puts("FAILED: non-finite or chance-level accuracy, or not the one-process result");
    return ok ? 0 : 1;
  });
}
}  // namespace

int main(int argc, char** argv) {
  dist::mpi_environment mpi(argc, argv);
  const dist::mpi_communicator world;
  return example::guarded_main("07_label_noise_mpi", [&] { return run(argc, argv, world); });
}
