// SPDX-License-Identifier: MIT
// bilevel's side of the comparison with the Python tools (bench/compare/run.sh, RESULTS.md):
// Meta-Weight-Net on Fashion-MNIST with 40% symmetric label noise, timed per outer step.
//
//   mwn_step [--mode lookahead|last_step|cg|neumann|sama|soba|nystrom|f2sa|bome|zero_order]
//            [--width W] [--threads T] [--seed S] [--warmup N] [--timed N] [--train-steps N]
//            [--iterations K] [--neumann-step A] [--damping MU] [--samples N] [--data DIR] [--export DIR]
//
// The problem: 1000 clean validation images (100 per class, data::split_validation, seed S),
// 40% of the other 59000 labels moved uniformly to another class (data::symmetric_label_noise,
// seed S+10), classifier MLP 784-W-128-10 (ReLU), batches of 128 (training, without
// replacement) and 128 (validation, with replacement), classifier SGD lr 0.1, momentum 0.9,
// weight decay 5e-4 (no Nesterov), weighting net V 1-100-1 (ReLU, sigmoid) with Adam lr 1e-3,
// weight decay 1e-4, initial parameters from the seeds S (classifier) and S+1 (V).
//
// --mode lookahead: methods::meta_weight_net (one exact virtual step, upper level first).
// --mode last_step: Betty's schedule with the exact product: the classifier steps first, then V
//   along the hypergradient through that real step (hypergrad::unrolled{.keep_last = 1}), so
//   no virtual step is taken: the arithmetic of Betty's `darts` setting (one step of the
//   classifier, the validation gradient, the mixed product), with the product exact instead
//   of two extra forward passes.
// --mode cg / neumann: the same two levels assembled by hand with hypergrad::implicit_cg /
//   hypergrad::neumann on the classifier (K iterations, forced: the tolerance is never met),
//   classifier stepped first, then V along the implicit hypergradient (Betty's order).
// The newer strategies, on the classifier in the same classifier-first assembly (the classifier's
// real step, then V's Adam step along the hypergradient; bench/NEWER_STRATEGIES.md):
// --mode sama: hypergrad::sama with its defaults (the inverse Hessian replaced by the derivative
//   of the classifier's SGD update, η·I here; the mixed product by central differences at the
//   level's float scale 1e-2; Betty's type="sama"): 2 input gradients, no HVP.
// --mode soba: hypergrad::soba, z's step equal to the classifier's lr (0.1), no decay, damping
//   --damping (default 0): 1 HVP + 1 mixed product per step.
// --mode nystrom: hypergrad::nystrom, rank K = --iterations, damping --damping: K HVPs + 1 for
//   the reported residual + 1 mixed product (+ 1 gradient for the report).
// --mode f2sa: hypergrad::f2sa, y's step = the classifier's lr (0.1), penalty ρ_k = 1 + 0.1·k
//   (capped at 1e4), and V's Adam learning rate shrinking like 1/ρ as penalty.hpp asks of the
//   upper level: 1e-3·min(1, 10/ρ_k) (1e-3 until ρ reaches 10, at step 90). V reads y, the
//   classifier's penalised copy; the test accuracy is the classifier's θ. First order only.
// --mode bome: hypergrad::bome with its defaults (step ξ = 0.1, η = 0.5); V keeps its Adam at
//   lr 1e-3 (the method as published steps λ by ξ with plain gradient descent; Adam at ξ would
//   be a step 100 times V's). First order only.
// --mode zero_order: hypergrad::zero_order, N = --samples (default 8) antithetic pairs,
//   σ = 1e-2, T = 1 virtual SGD step from the classifier's new parameters: 2N + 1 gradients
//   per step, no input gradient, no second-order product.
//
// Memory: peak RSS of the process (getrusage), and the peak RSS over the training steps alone
// (VmHWM after resetting it through /proc/self/clear_refs just before the first step).
//
// Timing: `--warmup` iterations of solver.iterate(), then `--timed` iterations each timed
// with steady_clock; training continues to `--train-steps` iterations in all (when larger),
// and the test accuracy is measured at the end. Prints one JSON line.
//
// --export DIR writes the problem for the Python implementations (bench/compare/peers.py) and
// exits: train_rows.i64 (file rows of the 59000 training images, in order), train_labels.i64
// (noisy), corrupted.u8, val_rows.i64, theta0.f32 (the classifier, bilevel's layout: per layer
// W fan_in x fan_out row-major, then b), phi0.f32 (V: w1[100], b1[100], w2[100], b2), and
// problem.json.
#include <bilevel/eigen.hpp>
#include <bilevel/data/corruption.hpp>
#include <bilevel/data/fashion_mnist.hpp>
#include <bilevel/methods/meta_weight_net.hpp>

#include <Eigen/Core>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

using namespace bilevel;
using P = policy::eigen<float>;

namespace {

struct options {
  std::string mode = "lookahead", data, export_dir;
  std::size_t width = 256, threads = 1, warmup = 20, timed = 200, train_steps = 0, iterations = 10, samples = 8;
  double neumann_step = 0.01, damping = 0.0;
  unsigned seed = 1;
};

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
      return argv[++i];
    };
    if (a == "--mode") o.mode = next();
    else if (a == "--width") o.width = std::stoul(next());
    else if (a == "--threads") o.threads = std::stoul(next());
    else if (a == "--warmup") o.warmup = std::stoul(next());
    else if (a == "--timed") o.timed = std::stoul(next());
    else if (a == "--train-steps") o.train_steps = std::stoul(next());
    else if (a == "--iterations") o.iterations = std::stoul(next());
    else if (a == "--neumann-step") o.neumann_step = std::stod(next());
    else if (a == "--damping") o.damping = std::stod(next());
    else if (a == "--samples") o.samples = std::stoul(next());
    else if (a == "--seed") o.seed = unsigned(std::stoul(next()));
    else if (a == "--data") o.data = next();
    else if (a == "--export") o.export_dir = next();
    else if (a == "--help") {
      std::puts("usage: mwn_step [--mode lookahead|last_step|cg|neumann|sama|soba|nystrom|f2sa|bome|zero_order]\n"
                "                [--width W] [--threads T] [--seed S] [--warmup N] [--timed N] [--train-steps N]\n"
                "                [--iterations K] [--neumann-step A] [--damping MU] [--samples N] [--data DIR]\n"
                "                [--export DIR]   (see the comment at the top of bench/compare/mwn_step.cpp)");
      std::exit(0);
    } else throw std::invalid_argument("unknown argument " + a);
  }
  static const std::vector<std::string> modes = {"lookahead", "last_step", "cg",   "neumann", "sama",
                                                 "soba",      "nystrom",   "f2sa", "bome",    "zero_order"};
  if (std::find(modes.begin(), modes.end(), o.mode) == modes.end())
    throw std::invalid_argument("--mode must be lookahead, last_step, cg, neumann, sama, soba, nystrom, f2sa, bome or zero_order");
  if (o.samples == 0) throw std::invalid_argument("--samples must be >= 1");
  if (o.threads == 0 || o.timed == 0) throw std::invalid_argument("--threads and --timed must be >= 1");
  return o;
}

/// Resets the kernel's high-water mark of this process's RSS (Linux >= 4.0), so that
/// VmHWM sees the training alone and not the data loading before it.
void reset_rss_peak() { std::ofstream("/proc/self/clear_refs") << "5"; }
double status_mb(const std::string& field) {  // VmRSS / VmHWM of /proc/self/status, in kB there
  std::ifstream f("/proc/self/status");
  for (std::string line; std::getline(f, line);)
    if (line.rfind(field + ":", 0) == 0) return std::stod(line.substr(field.size() + 1)) / 1024.0;
  return -1.0;
}

double peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_maxrss) / 1024.0;  // kilobytes on Linux
}

methods::meta_weight_net_config config(const options& o) {
  return {.widths = {784, o.width, 128, 10},
          .batch = 128,
          .validation_batch = 128,
          .lr = 0.1,
          .momentum = 0.9,
          .weight_decay = 5e-4,
          .nesterov = false,
          .meta_lr = 1e-3,
          .meta_weight_decay = 1e-4,
          .hidden = 100,
          .seed = o.seed};
}

/// The classifier-first variants (every mode but lookahead): the two levels of
/// methods/meta_weight_net.hpp with `strategy` on the classifier instead of the look-ahead;
/// `meta_schedule`, when given, is V's Adam learning rate at each of its steps.
template <class Strategy>
auto classifier_first_mwn(std::shared_ptr<const data::dataset> train, std::shared_ptr<const data::dataset> validation,
                  const methods::meta_weight_net_config& cfg, Strategy strategy,
                  std::function<double(std::size_t)> meta_schedule = {}) {
  using namespace bilevel::learners;
  const loss_weighting_net v{cfg.hidden};
  auto phi0 = v.initial_parameters<P>(cfg.seed + 1);
  mlp<P, loss_weighting_net> classifier(cfg.widths, activation::relu, loss_kind::cross_entropy, v);
  auto theta0 = classifier.initial_parameters(cfg.seed);
  auto model = make_level("classifier", std::move(classifier),
                          optim::sgd<P>{.lr = cfg.lr, .momentum = cfg.momentum, .weight_decay = cfg.weight_decay,
                                        .nesterov = cfg.nesterov},
                          strategy, std::move(theta0), dataset_batches<P>(std::move(train), cfg.batch, cfg.seed))
                   .reading({1});
  auto net = make_level("weighting_net", solution_loss<mlp<P>>(mlp<P>(cfg.widths), v.input_size(0)),
                        optim::adam<P>{.lr = cfg.meta_lr, .weight_decay = cfg.meta_weight_decay,
                                       .schedule = std::move(meta_schedule)},
                        hypergrad::first_order{}, std::move(phi0),
                        dataset_batches<P>(std::move(validation), cfg.validation_batch, cfg.seed + 2, true))
                 .reading({0});
  solver s(std::move(model), std::move(net));
  // An undamped solve on a network's indefinite Hessian may blow up now and then: skip that
  // V step (counted in the output) rather than stop the run.
  s.on_failure({.non_finite = failure_action::skip_step, .max_consecutive_failures = 1000000});
  return s;
}

double test_accuracy(const learners::mlp<P>& net, const P::vector& theta, const data::dataset& test) {
  std::size_t correct = 0;
  for (std::size_t start = 0; start < test.rows; start += 1000) {
    std::vector<std::size_t> rows(std::min<std::size_t>(1000, test.rows - start));
    std::iota(rows.begin(), rows.end(), start);
    const auto b = learners::make_batch<P>(test, rows);
    const auto logits = net.forward(theta, b).logits;
    for (long i = 0; i < logits.rows(); ++i) {
      long k;
      logits.row(i).maxCoeff(&k);
      correct += k == b.labels[std::size_t(i)];
    }
  }
  return 100.0 * double(correct) / double(test.rows);
}

double percentile(std::vector<double> v, double q) {  // linear interpolation, as numpy's default
  std::sort(v.begin(), v.end());
  const double pos = q * double(v.size() - 1);
  const auto lo = std::size_t(pos);
  const auto hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (pos - double(lo)) * (v[hi] - v[lo]);
}

template <class T>
void write_raw(const std::filesystem::path& path, const std::vector<T>& v) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(v.data()), std::streamsize(v.size() * sizeof(T)));
  if (!f) throw std::runtime_error("cannot write " + path.string());
}

/// bilevel with Eigen's own GEMM, or with Eigen's products handed to a BLAS (EIGEN_USE_BLAS).
#ifdef EIGEN_USE_BLAS
constexpr const char* implementation = "bilevel+openblas";
#else
constexpr const char* implementation = "bilevel";
#endif

std::string compiler() {
#if defined(__clang__)
  return "clang " __clang_version__;
#elif defined(__GNUC__)
  return "gcc " __VERSION__;
#else
  return "unknown";
#endif
}

}  // namespace

int main(int argc, char** argv) try {
  const auto o = parse(argc, argv);
#ifdef _OPENMP
  omp_set_num_threads(int(o.threads));
  const bool openmp = true;
#else
  const bool openmp = false;
#endif
  Eigen::setNbThreads(int(o.threads));  // a no-op without OpenMP: Eigen is then single-threaded

  if (!data::fashion_mnist_available(o.data)) {
    std::fprintf(stderr, "mwn_step: Fashion-MNIST not found in %s\n", data::fashion_mnist_dir(o.data).c_str());
    return 2;
  }
  auto fm = data::load_fashion_mnist(o.data);
  auto split = data::split_validation(fm.train, 100, o.seed);
  fm.train = {};  // the program keeps what the Python side keeps: training, validation and test sets
  const auto corruption = data::symmetric_label_noise(split.train, 0.4, o.seed + 10);
  const auto cfg = config(o);

  if (!o.export_dir.empty()) {
    const std::filesystem::path dir(o.export_dir);
    std::filesystem::create_directories(dir);
    std::vector<std::int64_t> train_rows(split.train.ids.begin(), split.train.ids.end()),
        labels(split.train.labels.begin(), split.train.labels.end()),
        val_rows(split.validation.ids.begin(), split.validation.ids.end());
    std::vector<std::uint8_t> corrupted(corruption.corrupted.begin(), corruption.corrupted.end());
    const learners::loss_weighting_net v{cfg.hidden};
    write_raw(dir / "train_rows.i64", train_rows);
    write_raw(dir / "train_labels.i64", labels);
    write_raw(dir / "corrupted.u8", corrupted);
    write_raw(dir / "val_rows.i64", val_rows);
    write_raw(dir / "theta0.f32", P::to_host(learners::mlp<P>(cfg.widths).initial_parameters(cfg.seed)));
    write_raw(dir / "phi0.f32", P::to_host(v.initial_parameters<P>(cfg.seed + 1)));
    std::ofstream(dir / "problem.json") << "{\"seed\": " << o.seed << ", \"widths\": [784, " << o.width
                                        << ", 128, 10], \"hidden\": " << cfg.hidden << ", \"train\": "
                                        << split.train.rows << ", \"validation\": " << split.validation.rows
                                        << ", \"corrupted\": " << corruption.count() << "}\n";
    std::printf("exported %zu training rows (%zu corrupted), %zu validation rows to %s\n", split.train.rows,
                corruption.count(), split.validation.rows, dir.string().c_str());
    return 0;
  }

  const auto train = std::make_shared<const data::dataset>(std::move(split.train));
  const auto validation = std::make_shared<const data::dataset>(std::move(split.validation));
  const learners::mlp<P> net(cfg.widths);
  const std::size_t total = std::max(o.train_steps, o.warmup + o.timed);

  auto go = [&](auto s) {
    std::size_t hvps = 0, gradients = 0, mixed = 0, hypergradients = 0, skipped = 0;
    bool counting = false;  // products per hypergradient, over the timed steps
    const solver_callbacks callbacks{.on_step = [&](const step_event& e) {
      if (e.level != 1 || !counting) return;
      ++hypergradients;
      for (const auto& r : e.reports) {
        hvps += r.hvp_evals;
        gradients += r.gradient_evals;
        mixed += r.mixed_evals;
      }
    }};
    const double loading_peak = peak_rss_mb(), baseline = status_mb("VmRSS");
    reset_rss_peak();  // getrusage's ru_maxrss follows VmHWM: keep the loading peak first
    std::vector<double> ms;
    ms.reserve(o.timed);
    solver_callbacks counted = callbacks;
    counted.on_failure = [&](const failure_event&) { ++skipped; };
    for (std::size_t t = 0; t < total; ++t) {
      counting = t >= o.warmup && t < o.warmup + o.timed;
      const auto t0 = std::chrono::steady_clock::now();
      s.iterate(counted);
      const auto t1 = std::chrono::steady_clock::now();
      if (t >= o.warmup && t < o.warmup + o.timed) ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    }
    const double training_peak = status_mb("VmHWM");
    const double per_hypergradient = 1.0 / double(std::max<std::size_t>(hypergradients, 1));
    const double hvps_per_step = double(hvps) * per_hypergradient;
    const double acc = o.train_steps > 0 ? test_accuracy(net, s.template level<0>().theta, fm.test) : -1.0;
    std::printf(
        "{\"implementation\": \"%s\", \"mode\": \"%s\", \"threads\": %zu, \"eigen_threads\": %d, \"openmp\": %s, "
        "\"width\": %zu, \"seed\": %u, \"warmup\": %zu, \"timed\": %zu, \"median_ms\": %.4f, \"p10_ms\": %.4f, "
        "\"p90_ms\": %.4f, \"mean_ms\": %.4f, \"peak_rss_mb\": %.1f, \"rss_before_training_mb\": %.1f, "
        "\"training_peak_rss_mb\": %.1f, "
        "\"train_steps\": %zu, \"test_accuracy\": %s, \"iterations\": %zu, \"damping\": %g, \"hvps_per_step\": %.2f, "
        "\"gradients_per_step\": %.2f, \"mixed_per_step\": %.2f, \"samples\": %zu, \"skipped_steps\": %zu, \"compiler\": \"%s\", \"eigen\": \"%d.%d.%d\"}\n",
        implementation, o.mode.c_str(), o.threads, Eigen::nbThreads(), openmp ? "true" : "false", o.width, o.seed, o.warmup, o.timed,
        percentile(ms, 0.5), percentile(ms, 0.1), percentile(ms, 0.9),
        std::accumulate(ms.begin(), ms.end(), 0.0) / double(ms.size()), std::max(loading_peak, peak_rss_mb()), baseline, training_peak,
        o.train_steps > 0 ? total : std::size_t(0), o.train_steps > 0 ? std::to_string(acc).c_str() : "null",
        o.mode == "cg" || o.mode == "neumann" || o.mode == "nystrom" ? o.iterations : std::size_t(1), o.damping,
        hvps_per_step, double(gradients) * per_hypergradient, double(mixed) * per_hypergradient,
        o.mode == "zero_order" ? o.samples : std::size_t(0), skipped, compiler().c_str(), EIGEN_WORLD_VERSION,
        EIGEN_MAJOR_VERSION, EIGEN_MINOR_VERSION);
  };
  if (o.mode == "lookahead") {
    go(methods::meta_weight_net<P>(train, validation, cfg));
  } else if (o.mode == "last_step") {
    go(classifier_first_mwn(train, validation, cfg, hypergrad::unrolled{.keep_last = 1}));
  } else if (o.mode == "cg") {
    // A tolerance no float solve meets: exactly K iterations unless CG meets negative curvature.
    go(classifier_first_mwn(train, validation, cfg,
                    hypergrad::implicit_cg{.damping = o.damping, .max_iterations = o.iterations, .tolerance = 1e-30}));
  } else if (o.mode == "neumann") {
    go(classifier_first_mwn(train, validation, cfg,
                    hypergrad::neumann{.iterations = o.iterations, .damping = o.damping, .step = o.neumann_step}));
  } else if (o.mode == "sama") {
    go(classifier_first_mwn(train, validation, cfg, hypergrad::sama{}));
  } else if (o.mode == "soba") {
    go(classifier_first_mwn(train, validation, cfg, hypergrad::soba{.step = cfg.lr, .damping = o.damping}));
  } else if (o.mode == "nystrom") {
    go(classifier_first_mwn(train, validation, cfg,
                            hypergrad::nystrom{.rank = o.iterations, .damping = o.damping, .seed = o.seed}));
  } else if (o.mode == "f2sa") {
    const hypergrad::f2sa f{.step = cfg.lr, .penalty = 1.0, .penalty_growth = 0.1, .max_penalty = 1e4};
    const double meta_lr = cfg.meta_lr;
    go(classifier_first_mwn(train, validation, cfg, f,
                            [f, meta_lr](std::size_t k) { return meta_lr * std::min(1.0, 10.0 / f.penalty_at(k)); }));
  } else if (o.mode == "bome") {
    go(classifier_first_mwn(train, validation, cfg, hypergrad::bome{}));
  } else {
    go(classifier_first_mwn(train, validation, cfg,
                            hypergrad::zero_order{.samples = o.samples, .sigma = 1e-2, .steps = 1, .seed = o.seed}));
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "mwn_step: %s\n", e.what());
  return 1;
}
