// SPDX-License-Identifier: MIT
// Meta-Weight-Net's outer step, data-parallel over MPI ranks: the time per step and the bytes
// each rank all-reduces per step. Run it on 1 rank and on R ranks (bench/distributed/run.sh
// does, interleaved) to get the parallel efficiency t_1 / (R · t_R).
//
//   mpirun -np R bench_distributed_mwn_step [--batch B] [--warmup N] [--timed N]
//
// Synthetic data (Fashion-MNIST's shapes: 784 features, 10 classes; random pixels and labels):
// only time is measured. MLP 784-256-128-10, float, Eigen (one thread per rank), the method's
// defaults otherwise (SGD with Nesterov momentum, Adam on the weighting net, a one-step
// look-ahead on the batch the real step takes); the global batch is B for both levels.
// Rank 0 prints one JSON line.
#include <bilevel/distributed/data_parallel.hpp>
#include <bilevel/distributed/mpi.hpp>
#include <bilevel/eigen.hpp>
#include <bilevel/methods/meta_weight_net.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace {
std::shared_ptr<const bilevel::data::dataset> random_set(std::size_t rows, std::uint64_t seed, std::size_t first_id) {
  bilevel::data::dataset d;
  d.rows = rows;
  d.cols = 784;
  d.num_classes = 10;
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<float> pixel(0.f, 1.f);
  std::uniform_int_distribution<int> label(0, 9);
  d.features.resize(rows * d.cols);
  for (auto& x : d.features) x = pixel(gen);
  for (std::size_t r = 0; r < rows; ++r) {
    d.labels.push_back(label(gen));
    d.ids.push_back(first_id + r);
  }
  return std::make_shared<const bilevel::data::dataset>(std::move(d));
}
}  // namespace

int main(int argc, char** argv) {
  namespace dist = bilevel::distributed;
  using P = bilevel::policy::eigen<float>;
  dist::mpi_environment mpi(argc, argv);
  const dist::mpi_communicator world;
  std::size_t batch = 256, warmup = 3, timed = 20;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const std::size_t value = std::strtoull(argv[i + 1], nullptr, 10);
    if (flag == "--batch") batch = value;
    else if (flag == "--warmup") warmup = value;
    else if (flag == "--timed") timed = value;
  }
  return dist::run_or_abort(world, [&] {
    const auto train = random_set(batch * 50, 1, 0), validation = random_set(batch * 4, 2, 1000000);
    auto s = bilevel::methods::meta_weight_net<P>(
        train, validation, {.batch = batch, .validation_batch = batch, .seed = 3}, dist::across(world));
    for (std::size_t i = 0; i < warmup; ++i) s.iterate();
    std::vector<double> ms;
    const auto bytes0 = world.all_reduced_bytes();
    const double comm0 = world.all_reduce_seconds();
    for (std::size_t i = 0; i < timed; ++i) {
      world.barrier();
      const auto t0 = std::chrono::steady_clock::now();
      s.iterate();
      world.barrier();  // a step ends when its slowest rank ends
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    const double bytes_per_step = double(world.all_reduced_bytes() - bytes0) / double(timed);
    const double comm_ms = 1e3 * (world.all_reduce_seconds() - comm0) / double(timed);
    std::sort(ms.begin(), ms.end());
    if (world.rank() == 0)
      std::printf("{\"ranks\": %zu, \"global_batch\": %zu, \"timed\": %zu, \"median_ms\": %.3f, \"min_ms\": %.3f, "
                  "\"max_ms\": %.3f, \"allreduced_bytes_per_step\": %.0f, \"allreduce_ms_per_step\": %.3f, "
                  "\"parameters\": %zu}\n",
                  world.size(), batch, timed, ms[ms.size() / 2], ms.front(), ms.back(), bytes_per_step, comm_ms,
                  std::size_t(P::size(s.template level<0>().theta) + P::size(s.template level<1>().theta)));
    return 0;
  });
}
