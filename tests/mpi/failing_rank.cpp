// SPDX-License-Identifier: MIT
// A data-parallel run in which rank 1 fails at iteration 5, for the failure tests
// (tests/mpi/check_failure.cmake): `failing_rank throw` makes it throw, `failing_rank kill`
// makes it kill itself with SIGKILL. Either way every rank must stop, non-zero, with a message
// that names the rank, and none may wait forever in a collective.
#include <bilevel/distributed/data_parallel.hpp>
#include <bilevel/distributed/mpi.hpp>
#include <bilevel/eigen.hpp>
#include <bilevel/problems/ridge.hpp>

#include <csignal>
#include <cstdio>
#include <stdexcept>
#include <string>

int main(int argc, char** argv) {
  namespace dist = bilevel::distributed;
  using P = bilevel::policy::eigen<double>;
  using namespace bilevel::problems;
  dist::mpi_environment mpi(argc, argv);
  const dist::mpi_communicator comm;
  const std::string mode = argc > 1 ? argv[1] : "throw";
  return dist::run_or_abort(comm, [&] {
    // Every rank holds all rows here (share 1/R each): the run only has to exercise the
    // collectives of a real solve.
    const auto problem = ridge_problem<P>::synthetic(40, 20, 6, 2, 0.5, 3);
    const double share = 1.0 / double(comm.size());
    auto inner = bilevel::make_level("theta", dist::data_parallel(ridge_training_loss<P>(problem.train), comm,
                                                                  dist::own_data{share}),
                                     bilevel::optim::sgd<P>{.lr = 0.1}, bilevel::hypergrad::implicit_cg{}, P::zeros(6))
                     .reading({1});
    auto outer = bilevel::make_level("log_penalty", dist::data_parallel(validation_least_squares<P>(problem.validation, 6),
                                                                        comm, dist::own_data{share}),
                                     bilevel::optim::sgd<P>{.lr = 0.1}, bilevel::hypergrad::first_order{}, P::zeros(6))
                     .reading({0});
    bilevel::solver s(std::move(inner), std::move(outer));
    for (std::size_t it = 0; it < 1000; ++it) {
      if (comm.rank() == 1 && it == 5) {
        if (mode == "kill") std::raise(SIGKILL);
        throw std::runtime_error("injected failure at iteration " + std::to_string(it));
      }
      s.iterate();
    }
    if (comm.rank() == 0) std::printf("finished without the injected failure\n");
    return 0;
  });
}
