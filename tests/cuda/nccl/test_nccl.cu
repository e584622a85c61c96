// SPDX-License-Identifier: MIT
// The NCCL communicator on the CUDA policy, run by ctest as `mpirun -np 1` (one GPU; with
// several GPUs on one machine, `mpirun -np R` runs the same checks on R of them). Without a
// CUDA device it says so and exits 77 (Skipped). Checks:
//   - ncclAllReduce of a device vector: every rank gets the sum, and the same bits;
//   - ridge regression's implicit-CG hypergradient on cuda<double>, data-parallel over NCCL
//     (each rank its rows), against one process on the whole data: 1e-12 relative (the same
//     round-off argument as tests/mpi/test_data_parallel.cpp).
#include <bilevel/distributed/data_parallel.hpp>
#include <bilevel/distributed/nccl.hpp>
#include <bilevel/hypergrad/first_order.hpp>
#include <bilevel/hypergrad/implicit_cg.hpp>
#include <bilevel/optim/sgd.hpp>
#include <bilevel/policy/cuda.hpp>
#include <bilevel/problems/ridge.hpp>
#include <bilevel/core/solver.hpp>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

namespace {
namespace dist = bilevel::distributed;
using P = bilevel::policy::cuda<double>;
using bilevel::problems::labelled_data;
using bilevel::problems::ridge_problem;
using bilevel::problems::ridge_training_loss;
using bilevel::problems::validation_least_squares;

int failures = 0;
void check(bool ok, const std::string& what, std::size_t rank) {
  std::printf("rank %zu: %s: %s\n", rank, ok ? "ok" : "FAILED", what.c_str());
  failures += ok ? 0 : 1;
}

labelled_data<P> my_rows(const labelled_data<P>& d, std::size_t rank, std::size_t ranks) {
  const std::size_t first = rank * d.rows / ranks, last = (rank + 1) * d.rows / ranks;
  std::vector<double> x(d.host_x.begin() + std::ptrdiff_t(first * d.cols), d.host_x.begin() + std::ptrdiff_t(last * d.cols));
  std::vector<double> y(d.host_y.begin() + std::ptrdiff_t(first), d.host_y.begin() + std::ptrdiff_t(last));
  return labelled_data<P>::from_host(last - first, d.cols, std::move(x), std::move(y));
}

template <class Inner, class Outer>
std::vector<double> hypergradient(Inner inner_learner, Outer outer_learner) {
  const std::vector<double> theta0 = {0.1, -0.2, 0.3, 0.0, 0.5, -0.1, 0.2, 0.4};
  const std::vector<double> lam = {-1.0, -0.5, -1.5, 0.0, -1.0, -2.0, -0.3, -1.2};
  auto inner = bilevel::make_level("theta", std::move(inner_learner), bilevel::optim::sgd<P>{.lr = 0.1},
                                   bilevel::hypergrad::implicit_cg{}, P::from_host(std::vector<double>(theta0)))
                   .reading({1})
                   .steps_per_iteration(40);
  auto outer = bilevel::make_level("log_penalty", std::move(outer_learner), bilevel::optim::sgd<P>{.lr = 0.1},
                                   bilevel::hypergrad::first_order{}, P::from_host(std::vector<double>(lam)))
                   .reading({0});
  bilevel::solver s(std::move(inner), std::move(outer));
  s.step_level(0);
  const auto g = P::to_host(s.hypergradient(1).gradient);
  return {g.begin(), g.end()};
}
}  // namespace

int main(int argc, char** argv) {
  dist::mpi_environment mpi(argc, argv);
  const dist::mpi_communicator world;
  std::string why;
  const int devices = bilevel::policy::cuda_device_count(&why);
  if (devices == 0) {
    if (world.rank() == 0) std::printf("SKIPPED: no CUDA device (%s)\n", why.c_str());
    return 77;
  }
  return dist::run_or_abort(world, [&] {
    cudaSetDevice(int(world.rank() % std::size_t(devices)));
    const dist::nccl_communicator nccl(world);
    const std::size_t r = nccl.rank(), n = nccl.size();

    // The sum of rank-dependent device vectors.
    std::vector<double> mine(1000), expected(1000, 0.0);
    for (std::size_t i = 0; i < mine.size(); ++i) {
      mine[i] = 1.0 / double(i + 1) + double(r);
      for (std::size_t k = 0; k < n; ++k) expected[i] += 1.0 / double(i + 1) + double(k);
    }
    auto v = P::from_host(std::vector<double>(mine));
    dist::all_reduce<P>(nccl, v);
    const auto got = P::to_host(v);
    double worst = 0;
    for (std::size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::abs(got[i] - expected[i]) / expected[i]);
    check(worst <= 1e-15 * double(n), "ncclAllReduce sum, worst relative error " + std::to_string(worst), r);
    check(nccl.all_reduced_bytes() == 1000 * sizeof(double) || n == 1, "bytes counted", r);

    // The ridge hypergradient: data-parallel over NCCL against one process.
    static const auto problem = ridge_problem<P>::synthetic(60, 40, 8, 3, 0.5, 7);
    const auto one = hypergradient(ridge_training_loss<P>(problem.train), validation_least_squares<P>(problem.validation, 8));
    const auto train = my_rows(problem.train, r, n), val = my_rows(problem.validation, r, n);
    const auto two = hypergradient(
        dist::data_parallel(ridge_training_loss<P>(train), nccl, dist::own_data{double(train.rows) / 60.0}),
        dist::data_parallel(validation_least_squares<P>(val, 8), nccl, dist::own_data{double(val.rows) / 40.0}));
    double diff = 0, norm = 0;
    for (std::size_t i = 0; i < one.size(); ++i) {
      diff += (two[i] - one[i]) * (two[i] - one[i]);
      norm += one[i] * one[i];
    }
    const double err = std::sqrt(diff / norm);
    check(err <= 1e-12, "implicit-CG hypergradient on " + std::to_string(n) + " rank(s) over NCCL against one process: " +
                            std::to_string(err), r);
    return failures == 0 ? 0 : 1;
  });
}
