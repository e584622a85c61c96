// SPDX-License-Identifier: MIT
// Data parallelism over MPI, run by ctest as `mpirun -np 2` (tests/mpi/CMakeLists.txt). Every
// rank runs every case; each case also computes the one-process answer itself, in the same
// process, and compares. Tolerances: the 2-rank numbers differ from one process only by the
// round-off of summing two half-batch means instead of one mean (about 1e-16 relative per
// product in double), amplified by what a strategy does with them (a CG solve of condition
// number ~20, 1/s for central differences); 1e-12 in double covers every strategy but central
// differences with a margin of 100 or more (the measured errors are printed).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <bilevel/distributed/data_parallel.hpp>
#include <bilevel/distributed/mpi.hpp>
#include <bilevel/distributed/replicas.hpp>
#include <bilevel/eigen.hpp>
#include <bilevel/learners/mlp.hpp>
#include <bilevel/learners/sample_weighting.hpp>
#include <bilevel/learners/solution_loss.hpp>
#include <bilevel/data/generator.hpp>
#include <bilevel/methods/darts.hpp>
#include <bilevel/methods/learning_from_mistakes.hpp>
#include <bilevel/methods/lfm_architecture_search.hpp>
#include <bilevel/methods/lfm_class_weighting.hpp>
#include <bilevel/methods/meta_weight_net.hpp>
#include <bilevel/methods/small_group_learning.hpp>
#include <bilevel/problems/ridge.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>
#include <functional>
#include <string>
#include <vector>

#include "host_math.hpp"
#include "search_cell.hpp"
#include "toy_data.hpp"

namespace {

namespace dist = bilevel::distributed;
namespace hg = bilevel::hypergrad;
using bilevel::problems::labelled_data;
using bilevel::problems::ridge_problem;
using bilevel::problems::ridge_training_loss;
using bilevel::problems::validation_least_squares;
using P64 = bilevel::policy::eigen<double>;
using P32 = bilevel::policy::eigen<float>;

const dist::mpi_communicator& world() {
  static const dist::mpi_communicator comm;
  return comm;
}

/// Rows [⌊r·n/R⌋, ⌊(r+1)·n/R⌋) of a data set: this rank's part.
template <class P>
labelled_data<P> my_rows(const labelled_data<P>& d, std::size_t rank, std::size_t ranks) {
  const std::size_t first = rank * d.rows / ranks, last = (rank + 1) * d.rows / ranks;
  std::vector<double> x(d.host_x.begin() + std::ptrdiff_t(first * d.cols), d.host_x.begin() + std::ptrdiff_t(last * d.cols));
  std::vector<double> y(d.host_y.begin() + std::ptrdiff_t(first), d.host_y.begin() + std::ptrdiff_t(last));
  return labelled_data<P>::from_host(last - first, d.cols, std::move(x), std::move(y));
}

constexpr std::size_t d = 8;
const std::vector<double> log_penalty = {-1.0, -0.5, -1.5, 0.0, -1.0, -2.0, -0.3, -1.2};
const std::vector<double> theta0 = {0.1, -0.2, 0.3, 0.0, 0.5, -0.1, 0.2, 0.4};

/// The ridge problem's hypergradient with `strategy` after a block of `steps` inner steps, computed by
/// one process (comm == nullptr) or by every rank of `comm` on its rows.
template <class P, class Strategy>
std::vector<double> ridge_hypergradient(Strategy strategy, std::size_t steps, const dist::mpi_communicator* comm,
                                        std::uint64_t* bytes = nullptr) {
  static const auto problem = ridge_problem<P>::synthetic(60, 40, d, 3, 0.5, 7);
  const bilevel::optim::sgd<P> inner_opt{.lr = 0.1};
  const bilevel::optim::sgd<P> outer_opt{.lr = 0.1};
  if (!comm) {
    auto inner = bilevel::make_level("theta", ridge_training_loss<P>(problem.train), inner_opt, strategy,
                                     test::device<P>(theta0))
                     .reading({1})
                     .steps_per_iteration(steps);
    auto outer = bilevel::make_level("log_penalty", validation_least_squares<P>(problem.validation, d), outer_opt,
                                     hg::first_order{}, test::device<P>(log_penalty))
                     .reading({0});
    bilevel::solver s(std::move(inner), std::move(outer));
    s.step_level(0);
    return test::host<P>(s.hypergradient(1).gradient);
  }
  const std::size_t r = comm->rank(), n = comm->size();
  const auto train = my_rows(problem.train, r, n), val = my_rows(problem.validation, r, n);
  const double train_share = double(train.rows) / double(problem.train.rows);
  const double val_share = double(val.rows) / double(problem.validation.rows);
  auto inner = bilevel::make_level("theta",
                                   dist::data_parallel(ridge_training_loss<P>(train), *comm, dist::own_data{train_share}),
                                   inner_opt, strategy, test::device<P>(theta0))
                   .reading({1})
                   .steps_per_iteration(steps);
  auto outer = bilevel::make_level(
                   "log_penalty",
                   dist::data_parallel(validation_least_squares<P>(val, d), *comm, dist::own_data{val_share}),
                   outer_opt, hg::first_order{}, test::device<P>(log_penalty))
                   .reading({0});
  bilevel::solver s(std::move(inner), std::move(outer));
  s.step_level(0);
  const auto before = comm->all_reduced_bytes();
  const auto g = s.hypergradient(1);
  if (bytes) *bytes = comm->all_reduced_bytes() - before;
  return test::host<P>(g.gradient);
}

/// Bit patterns of a vector, for "identical on every rank".
bool same_on_every_rank(const std::vector<double>& v) {
  std::vector<double> mine = v, sum = v;
  world().all_reduce_sum(std::span<double>(sum));
  for (std::size_t i = 0; i < v.size(); ++i)
    if (sum[i] != mine[i] * double(world().size())) return false;
  return true;
}

template <class Strategy>
void check_strategy(const char* name, Strategy strategy, std::size_t steps, double tolerance) {
  const auto one = ridge_hypergradient<P64>(strategy, steps, nullptr);
  std::uint64_t bytes = 0;
  const auto two = ridge_hypergradient<P64>(strategy, steps, &world(), &bytes);
  const double err = test::relative_error(two, one);
  MESSAGE(std::string(name) << " on " << world().size() << " ranks against one process: " << err << "; all-reduced "
                            << bytes / (sizeof(double) * d) << " vectors of |theta| (" << bytes << " bytes)");
  CHECK(err <= tolerance);
  // Every rank holds the same bits: replicas stay replicas.
  CHECK(same_on_every_rank(two));
}

}  // namespace

TEST_CASE("mpi: every strategy's hypergradient on 2 ranks equals one process's (ridge, own rows, double)") {
  REQUIRE(world().size() >= 2);
  check_strategy("implicit_cg", hg::implicit_cg{}, 40, 1e-12);
  check_strategy("neumann", hg::neumann{.iterations = 50}, 40, 1e-12);
  check_strategy("nystrom", hg::nystrom{.rank = d}, 40, 1e-12);
  check_strategy("fixed_point", hg::fixed_point{.max_iterations = 2000}, 40, 1e-12);
  check_strategy("unrolled", hg::unrolled{}, 10, 1e-12);
  check_strategy("unrolled (last 3)", hg::unrolled{.keep_last = 3}, 10, 1e-12);
  check_strategy("lookahead", hg::lookahead{}, 1, 1e-12);
  check_strategy("forward_mode", hg::forward_mode{}, 10, 1e-12);
  // Central differences divide the two gradients' round-off (1e-16 relative) by the relative
  // step s = 1e-4 (double's default), so they agree to ~1e-12 at best (measured 7e-13): 1e-10.
  check_strategy("finite_difference", hg::finite_difference{}, 10, 1e-10);
  check_strategy("first_order", hg::first_order{}, 10, 1e-12);
}

TEST_CASE("mpi: float hypergradients on 2 ranks equal one process's to float round-off") {
  const auto one = ridge_hypergradient<P32>(hg::implicit_cg{}, 40, nullptr);
  const auto two = ridge_hypergradient<P32>(hg::implicit_cg{}, 40, &world());
  const double err = test::relative_error(two, one);
  MESSAGE("implicit_cg, float: " << err);
  // Float's unit round-off is 6e-8; 40 inner steps and a CG solve (κ ~ 20) of products that
  // differ by a few ulps give errors of order 1e-6 (the CG tolerance for float is 1e-5).
  CHECK(err <= 1e-4);
  CHECK(same_on_every_rank(two));
}

namespace {
/// 50 outer iterations of a reweighting problem: an MLP whose loss reads one weight per
/// training sample (the upper level's variable), trained by SGD with momentum on batches of
/// 16 drawn from 64 samples; the upper level steps the weights by the one-step look-ahead
/// hypergradient of the validation loss. Both levels' learners split every batch by rows
/// when `comm` is given. Returns both levels' final parameters.
std::vector<double> reweighting_run(const dist::mpi_communicator* comm, std::size_t iterations,
                                    const std::function<void(std::size_t)>& each = {}) {
  using P = P64;
  using bilevel::learners::mlp;
  using bilevel::learners::sample_weights;
  using bilevel::learners::solution_loss;
  static const auto train = test::toy_classes(64, 3, 0.3);
  static const auto validation = test::toy_classes(30, 4, 0.0, 1000);
  const mlp<P, sample_weights> net({8, 12, 3}, bilevel::learners::activation::tanh,
                                   bilevel::learners::loss_kind::cross_entropy, sample_weights{64});
  const mlp<P> judge({8, 12, 3});
  std::vector<double> ones(64, 1.0);
  auto build = [&](auto classifier, auto validator) {
    auto inner = bilevel::make_level("classifier", std::move(classifier),
                                     bilevel::optim::sgd<P>{.lr = 0.2, .momentum = 0.9}, hg::lookahead{},
                                     net.initial_parameters(11),
                                     bilevel::learners::dataset_batches<P>(train.data, 16, 5))
                     .reading({1});
    auto outer = bilevel::make_level("weights", std::move(validator), bilevel::optim::sgd<P>{.lr = 1.0},
                                     hg::first_order{}, test::device<P>(ones),
                                     bilevel::learners::dataset_batches<P>(validation.data, 30, 6))
                     .reading({0});
    bilevel::solver s(std::move(inner), std::move(outer));
    s.schedule({1, 0});
    for (std::size_t it = 0; it < iterations; ++it) {
      s.iterate();
      if (each) each(it);
      if (comm && (it + 1) % 10 == 0) dist::check_replicas(*comm, s, it);
    }
    std::vector<double> out = test::host<P>(s.template level<0>().theta);
    const auto w = test::host<P>(s.template level<1>().theta);
    out.insert(out.end(), w.begin(), w.end());
    return out;
  };
  const solution_loss<mlp<P>> val_loss(judge, 64);
  if (!comm) return build(net, val_loss);
  return build(dist::data_parallel(net, *comm), dist::data_parallel(val_loss, *comm));
}
}  // namespace

TEST_CASE("mpi: 50 outer steps of a per-sample reweighting on 2 ranks match one process") {
  const auto one = reweighting_run(nullptr, 50);
  const auto two = reweighting_run(&world(), 50);
  const double err = test::relative_error(two, one);
  MESSAGE("both levels' parameters after 50 outer steps, 2 ranks against one process: " << err);
  // 50 steps of SGD with momentum and 50 look-ahead hypergradients compound the per-product
  // round-off (1e-16) by the steps' Lipschitz constants; measured 3e-16 (Eigen, double).
  CHECK(err <= 1e-12);
  CHECK(same_on_every_rank(two));
}

namespace {
/// Every level's parameters after `iterations` outer iterations of a method's solver.
template <class Solver>
std::vector<double> all_parameters(Solver& s, std::size_t iterations) {
  s.run(iterations);
  std::vector<double> out;
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    ((void)[&] {
      const auto t = test::host<P64>(s.template level<I>().theta);
      out.insert(out.end(), t.begin(), t.end());
    }(), ...);
  }(std::make_index_sequence<Solver::size()>{});
  dist::check_replicas(world(), s, iterations);
  return out;
}
}  // namespace

TEST_CASE("mpi: 50 outer iterations of Meta-Weight-Net and of LFM on 2 ranks match one process") {
  const auto train = test::toy_classes(96, 3, 0.3), val = test::toy_classes(48, 4, 0.0, 1000);
  const bilevel::methods::meta_weight_net_config mwn{.widths = {8, 12, 3}, .batch = 16, .validation_batch = 16,
                                                     .hidden = 10, .seed = 3};
  auto mwn_one = bilevel::methods::meta_weight_net<P64>(train.data, val.data, mwn);
  auto mwn_two = bilevel::methods::meta_weight_net<P64>(train.data, val.data, mwn, dist::across(world()));
  const auto one = all_parameters(mwn_one, 50), two = all_parameters(mwn_two, 50);
  const double mwn_err = test::relative_error(two, one);
  MESSAGE("Meta-Weight-Net, every parameter after 50 outer iterations, 2 ranks against one process: " << mwn_err);
  // As the reweighting case above, through Adam on the weighting net: measured 1.4e-16.
  CHECK(mwn_err <= 1e-12);
  CHECK(same_on_every_rank(two));

  const bilevel::methods::lfm_reweighting_config lfm{.widths = {8, 6, 3}, .batch = 12, .validation_batch = 12,
                                                     .encoder_dim = 3, .references_per_class = 3, .seed = 4};
  auto lfm_one = bilevel::methods::learning_from_mistakes_reweighting<P64>(train.data, val.data, lfm);
  auto lfm_two = bilevel::methods::learning_from_mistakes_reweighting<P64>(train.data, val.data, lfm,
                                                                           dist::across(world()));
  const auto lone = all_parameters(lfm_one, 50), ltwo = all_parameters(lfm_two, 50);
  const double lfm_err = test::relative_error(ltwo, lone);
  MESSAGE("LFM (reweighting), every parameter of its three levels after 50 outer iterations: " << lfm_err);
  CHECK(lfm_err <= 1e-12);
  CHECK(same_on_every_rank(ltwo));
}

TEST_CASE("mpi: LFM with class weighting, DARTS and LFM's architecture search (an MLP search space) on 2 ranks match one process") {
  const auto train = test::toy_classes(96, 3, 0.3), val = test::toy_classes(48, 4, 0.0, 1000);
  auto gen = std::make_shared<const bilevel::data::pca_gaussian_generator>(*train.data, 4, 1);
  const bilevel::methods::lfm_class_weighting_config cw{.widths = {8, 6, 3}, .batch = 12, .synthetic_per_batch = 6,
                                                        .validation_batch = 12, .references_per_class = 3, .seed = 4};
  auto cw_one = bilevel::methods::lfm_class_weighting<P64>(train.data, val.data, gen, cw);
  auto cw_two = bilevel::methods::lfm_class_weighting<P64>(train.data, val.data, gen, cw, dist::across(world()));
  const auto a = all_parameters(cw_one, 30), b = all_parameters(cw_two, 30);
  const double cw_err = test::relative_error(b, a);
  MESSAGE("LFM-CW, every parameter after 30 outer iterations, 2 ranks against one process: " << cw_err);
  CHECK(cw_err <= 1e-12);

  namespace layer = bilevel::learners::layer;
  using bilevel::learners::activation;
  const std::vector<layer::spec> specs = {
      layer::dense{6}, layer::act{activation::tanh},
      layer::mixed{{layer::candidate{{layer::dense{6}, layer::act{activation::tanh}}}, layer::skip(), layer::zero_op()}},
      layer::dense{3}};
  const bilevel::methods::darts_config dc{.batch = 16, .validation_batch = 16, .lr = 0.1, .arch_lr = 3e-2};
  auto d_one = bilevel::methods::darts<P64>({1, 1, 8}, specs, train.data, val.data, dc);
  auto d_two = bilevel::methods::darts<P64>({1, 1, 8}, specs, train.data, val.data, dc,
                                            bilevel::methods::darts_second_order(), dist::across(world()));
  const auto c = all_parameters(d_one, 30), e = all_parameters(d_two, 30);
  const double d_err = test::relative_error(e, c);
  MESSAGE("DARTS (second order), weights and architecture after 30 outer iterations: " << d_err);
  // Its mixed product is a central difference (relative step 1e-4 in double), which divides
  // the round-off of two gradients by the step: 1e-10, as for finite_difference above.
  CHECK(d_err <= 1e-10);

  const bilevel::methods::lfm_search_config lc{.batch = 16, .validation_batch = 16, .encoder_dim = 3,
                                               .references_per_class = 3, .seed = 5};
  auto l_one = bilevel::methods::lfm_architecture_search<P64>({1, 1, 8}, specs, train.data, val.data, lc);
  auto l_two =
      bilevel::methods::lfm_architecture_search<P64>({1, 1, 8}, specs, train.data, val.data, lc, dist::across(world()));
  const auto g = all_parameters(l_one, 30), h = all_parameters(l_two, 30);
  const double l_err = test::relative_error(h, g);
  MESSAGE("LFM architecture search, every parameter of its three levels after 30 outer iterations: " << l_err);
  CHECK(l_err <= 1e-12);

}

TEST_CASE("mpi: the peer-label loss and its products on 2 ranks equal one process's (7 labelled, 5 unlabelled rows)") {
  using namespace bilevel::learners;
  using net_t = reading_segment<sequential<P64>>;
  const sequential<P64> plain(geometry{1, 1, 8}, test::search_cell());
  const std::size_t m = plain.arch_size();
  const peer_label_loss<net_t> one(net_t(plain, 0, 0, 2 * m), {net_t(plain, 0, m, 2 * m)}, 0.7);
  const dist::data_parallel two(one, world());
  // Odd counts: rank 0 takes 3 labelled and 2 unlabelled rows, rank 1 4 and 3.
  const auto train = test::toy_classes(30, 3), pool = test::toy_classes(30, 5, 0.0, 100);
  const auto b = peer_batches<P64>(train.data, 7, pool.data, 5, 9)();
  const auto theta = plain.initial_parameters(1), peer_w = plain.initial_parameters(2);
  const auto top = test::device<P64>(test::random_vector(2 * m, 3, 0.5));
  const auto v = test::device<P64>(test::random_vector(plain.num_parameters(), 4));
  const auto u = test::device<P64>(test::random_vector(2 * m, 5));
  const P64::vector* in[] = {&top, &peer_w};
  auto compare = [&](const char* what, const P64::vector& a, const P64::vector& c) {
    const double err = test::relative_error(test::host<P64>(a), test::host<P64>(c));
    MESSAGE(std::string(what) << ", 2 ranks against one process: " << err);
    CHECK(err <= 1e-12);
    CHECK(same_on_every_rank(test::host<P64>(a)));
  };
  P64::vector a, c;
  const double l2 = two.gradient(theta, in, b, a), l1 = one.gradient(theta, in, b, c);
  MESSAGE("peer-label loss, 2 ranks against one process: " << std::abs(l2 - l1) / std::abs(l1));
  CHECK(std::abs(l2 - l1) <= 1e-12 * std::abs(l1));
  CHECK(two.loss(theta, in, b) == l2);
  compare("gradient", a, c);
  two.input_gradient(theta, in, b, 0, a), one.input_gradient(theta, in, b, 0, c);
  compare("input gradient (architectures)", a, c);
  two.hvp(theta, in, b, v, a), one.hvp(theta, in, b, v, c);
  compare("HVP", a, c);
  two.mixed_vjp(theta, in, b, 0, v, a), one.mixed_vjp(theta, in, b, 0, v, c);
  compare("mixed VJP", a, c);
  two.mixed_jvp(theta, in, b, 0, u, a), one.mixed_jvp(theta, in, b, 0, u, c);
  compare("mixed JVP", a, c);
  // The peer's slot stays detached.
  two.input_gradient(theta, in, b, 1, a);
  CHECK(test::norm(test::host<P64>(a)) == 0.0);
}

TEST_CASE("mpi: 25 outer iterations of small-group learning (K = 2) on 2 ranks match one process") {
  const auto train = test::toy_classes(96, 3, 0.3), val = test::toy_classes(48, 4, 0.0, 1000);
  // Odd batches, so the ranks' parts differ in size: 11 labelled and 7 unlabelled rows per V_k batch.
  const bilevel::methods::sgl_config cfg{.batch = 11, .unlabelled_batch = 7, .validation_batch = 13, .lr = 0.1,
                                         .arch_lr = 3e-2, .seed = 6};
  auto check = [&](const char* name, auto one, auto two) {
    const auto a = all_parameters(one, 25), b = all_parameters(two, 25);
    const double err = test::relative_error(b, a);
    MESSAGE(std::string(name) << ", every parameter of its five levels after 25 outer iterations, 2 ranks against one process: "
                 << err);
    // Every gradient and product is a sum of two parts, off by round-off (1e-16 relative), which
    // 25 steps of SGD with momentum and of Adam (and the look-ahead's virtual steps) compound.
    CHECK(err <= 1e-12);
    CHECK(same_on_every_rank(b));
  };
  const bilevel::learners::geometry in{1, 1, 8};
  check("SGL (first order)", bilevel::methods::small_group_learning<P64, 2>(in, test::search_cell(), train.data, val.data, cfg),
        bilevel::methods::small_group_learning<P64, 2>(in, test::search_cell(), train.data, val.data, cfg,
                                                       hg::first_order{}, dist::across(world())));
  const hg::lookahead exact{.steps = 1, .on_next_batch = true};
  check("SGL (one exact look-ahead step of each V_k)",
        bilevel::methods::small_group_learning<P64, 2>(in, test::search_cell(), train.data, val.data, cfg, exact),
        bilevel::methods::small_group_learning<P64, 2>(in, test::search_cell(), train.data, val.data, cfg, exact,
                                                       dist::across(world())));
}

TEST_CASE("mpi: a checkpoint written by rank 0 resumes on every rank, bit for bit; another rank count is refused") {
  const auto train = test::toy_classes(96, 3, 0.3), val = test::toy_classes(48, 4, 0.0, 1000);
  const bilevel::methods::meta_weight_net_config cfg{.widths = {8, 12, 3}, .batch = 16, .validation_batch = 16,
                                                     .hidden = 10, .seed = 5};
  // One path for every rank: rank 0's random name, broadcast.
  std::vector<double> tag{double(std::random_device{}() % 1000000)};
  world().broadcast(std::span<double>(tag), 0);
  const auto path = std::filesystem::temp_directory_path() /
                    ("bilevel_mpi_checkpoint_" + std::to_string(std::size_t(tag[0])) + ".bin");
  auto whole = bilevel::methods::meta_weight_net<P64>(train.data, val.data, cfg, dist::across(world()));
  const auto uninterrupted = all_parameters(whole, 30);

  auto first = bilevel::methods::meta_weight_net<P64>(train.data, val.data, cfg, dist::across(world()));
  first.checkpoint_every(20, path);
  first.run(20);
  world().barrier();  // rank 0 has written it
  CHECK(std::filesystem::exists(path));
  auto resumed = bilevel::methods::meta_weight_net<P64>(train.data, val.data, cfg, dist::across(world()));
  resumed.load_checkpoint(path);
  const auto after = all_parameters(resumed, 10);
  CHECK(after == uninterrupted);  // bit for bit
  CHECK(same_on_every_rank(after));

  // A checkpoint of a one-process run (each rank writes its own here) is refused by the 2-rank run.
  const auto single_path = path.string() + ".rank" + std::to_string(world().rank());
  auto single = bilevel::methods::meta_weight_net<P64>(train.data, val.data, cfg, dist::across(dist::single_process{}));
  single.run(2);
  single.save_checkpoint(single_path);
  CHECK_THROWS_WITH_AS(resumed.load_checkpoint(single_path),
                       doctest::Contains("written by a run on 1 rank(s), this run has 2"), bilevel::checkpoint_error);
  world().barrier();
  std::filesystem::remove(single_path);
  if (world().rank() == 0) std::filesystem::remove(path);
}

TEST_CASE("mpi: the sum is in rank order and bit-identical on every rank; the bytes are counted") {
  const std::size_t r = world().rank(), n = world().size();
  std::vector<double> v(1001);
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = 1.0 / double(i + 1) + 1e-3 * double(r + 1) * double(i % 7);
  std::vector<double> expected(v.size(), 0.0);
  for (std::size_t k = 0; k < n; ++k)
    for (std::size_t i = 0; i < v.size(); ++i) expected[i] += 1.0 / double(i + 1) + 1e-3 * double(k + 1) * double(i % 7);
  const auto before = world().all_reduced_bytes();
  world().all_reduce_sum(std::span<double>(v));
  CHECK(world().all_reduced_bytes() - before == v.size() * sizeof(double));
  CHECK(std::memcmp(v.data(), expected.data(), v.size() * sizeof(double)) == 0);
  CHECK(same_on_every_rank(v));
  std::vector<float> f(5, float(r + 1));
  world().all_reduce_sum(std::span<float>(f));
  CHECK(f[4] == float(n * (n + 1) / 2));
  std::vector<double> b(3, double(r));
  world().broadcast(std::span<double>(b), 1);
  CHECK(b[0] == 1.0);
}

TEST_CASE("mpi: parameters are broadcast at the start, and replicas that drift apart are found") {
  using P = P64;
  static const auto problem = ridge_problem<P>::synthetic(60, 40, d, 3, 0.5, 7);
  std::vector<double> start = theta0;
  start[0] += double(world().rank());  // a different start on each rank
  auto inner = bilevel::make_level("theta", ridge_training_loss<P>(problem.train), bilevel::optim::sgd<P>{.lr = 0.1},
                                   hg::implicit_cg{}, test::device<P>(start))
                   .reading({1});
  auto outer = bilevel::make_level("log_penalty", validation_least_squares<P>(problem.validation, d),
                                   bilevel::optim::sgd<P>{.lr = 0.1}, hg::first_order{}, test::device<P>(log_penalty))
                   .reading({0});
  bilevel::solver s(std::move(inner), std::move(outer));
  CHECK_THROWS_WITH_AS(dist::check_replicas(world(), s, 0), doctest::Contains("level 0's parameters on rank 1"),
                       std::runtime_error);
  dist::broadcast_parameters(world(), s);
  CHECK(test::host<P>(s.level<0>().theta) == theta0);
  CHECK_NOTHROW(dist::check_replicas(world(), s, 0));
}

TEST_CASE("mpi: bad configurations are reported on every rank") {
  using P = P64;
  static const auto problem = ridge_problem<P>::synthetic(60, 40, d, 3, 0.5, 7);
  // Shares that do not sum to 1: every rank claims all the rows.
  CHECK_THROWS_WITH_AS(dist::data_parallel(ridge_training_loss<P>(problem.train), world(), dist::own_data{1.0}),
                       doctest::Contains("shares sum to 2"), std::invalid_argument);
  // Ranks that built different learners: found at construction, on every rank.
  const bilevel::learners::mlp<P> mine({8, 4 + world().rank(), 3});
  CHECK_THROWS_WITH_AS(dist::data_parallel(mine, world()),
                       doctest::Contains("rank 1's learner's parameter count is 63, rank 0's 51"),
                       std::invalid_argument);
  // A batch with fewer rows than ranks.
  const auto tiny = test::toy_classes(1, 3);
  const bilevel::learners::mlp<P> net({8, 4, 3});
  const dist::data_parallel wide(net, world());
  const auto batch = test::whole<P>(*tiny.data);
  CHECK_THROWS_WITH_AS((void)wide.loss(net.initial_parameters(1), {}, batch),
                       doctest::Contains("a batch of 1 rows cannot be split over 2 ranks"), std::invalid_argument);
}

int main(int argc, char** argv) {
  dist::mpi_environment mpi(argc, argv);
  doctest::Context context(argc, argv);
  // Only rank 0 prints the summary; every rank's failures are printed, with its rank.
  if (world().rank() != 0) context.setOption("minimal", true);
  const int failed = context.run();
  // Every rank must agree: a failure on one rank fails the test program on all.
  double any = failed ? 1.0 : 0.0;
  world().all_reduce_sum(std::span<double>(&any, 1));
  return any > 0 ? 1 : 0;
}
