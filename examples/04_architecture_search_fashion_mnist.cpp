// SPDX-License-Identifier: MIT
// 04 — Architecture search on Fashion-MNIST: DARTS (first and second order), Learning from
// Mistakes in its architecture-search form and Small-Group Learning, each a method header
// handed to the one solver, on one small MLP search space; each searched architecture is then
// discretised, retrained from scratch and tested.
//
// What it teaches: searches as multilevel problems (bilevel/methods/darts.hpp,
// lfm_architecture_search.hpp, small_group_learning.hpp: two, three and five levels), networks
// that read their architecture from a longer upper vector (learners/reading_segment.hpp), and
// the discretisation (chosen_operations, derive_architecture); each method's levels reached
// by name (s.searched_architecture(), s.group_architectures(), s.v<k>()), the weights'
// cosine decay stated in the method's configuration, and per-epoch progress through the
// solver's on_epoch callback.
//
// Setting: the search space is an MLP 784 → dense 64 + ReLU → three mixed edges, each over
// {linear 64 + ReLU, linear 64 + tanh, skip, zero} → dense 10 (12 architecture entries per
// network). Search on DARTS's 50/50 split of the 60000 training images (30000 train the
// weights, 30000 validate the architecture; LFM takes its 100 reference samples, 10 per class,
// from the validation half; SGL's unlabelled set is the training half with its labels
// hidden), float, batches of 64, weights by SGD (lr 0.025 cosine to 0.001, momentum 0.9,
// weight decay 3e-4), architectures by Adam (lr 1e-3, betas (0.5, 0.999)); SGL with K = 2
// learners, λ = 1, first order (the published commands). The derived architecture (for SGL,
// the learner whose V has the lower validation loss) is retrained from scratch on all 60000
// training images (SGD Nesterov 0.9, lr 0.1 ×0.1 at 2/3 and 5/6, weight decay 5e-4, batch
// 100) and evaluated on the 10000 test images.
//
// What it prints: after each pass of the weights' batches over the training half, the
// current architecture; per method and seed the derived architecture, search time and test
// accuracy per retraining epoch; then last and best test accuracy (mean ± std over seeds),
// search and retraining time. Writes <out>/search_epochs.csv, <out>/search_runs.csv and
// <out>/search_architectures.csv. Exits non-zero on a non-finite
// result or accuracy at chance; exits 1 with one line on stderr on missing or malformed data or
// an unwritable --out, 2 on a bad command line (examples/support/options.hpp).
//
// Options (--help lists them, with their ranges): --epochs (search) and --retrain-epochs;
// --train-size N (a stratified random subset, drawn with the seed: the images split for the
// search and retrained on); --lr, --weight-decay and
// --schedule constant|multistep|cosine for the searched networks' weights (defaults: DARTS's
// 0.025, 3e-4, cosine); --seed or --seeds A,B,C, --methods LIST|all, --data DIR, --out DIR;
// --quick (2000 images, 1 + 1 epochs, unless given).
//
// docs/methods.md, "Architecture search at small scale": on a space this small the
// differences between methods are expected inside the seed noise; the search is a
// correctness and smoke test, not an effect size.
#include <bilevel/eigen.hpp>
#include <bilevel/data/fashion_mnist.hpp>
#include <bilevel/learners/classification_accuracy.hpp>
#include <bilevel/learners/classification_batch.hpp>
#include <bilevel/methods/darts.hpp>
#include <bilevel/methods/lfm_architecture_search.hpp>
#include <bilevel/methods/small_group_learning.hpp>
#include <bilevel/optim/schedule.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "support/experiment.hpp"

using namespace bilevel;
using example::P;
using seconds = std::chrono::duration<double>;

namespace {

const std::map<std::string, std::string> method_names = {
    {"darts1", "DARTS 1st order"}, {"darts2", "DARTS 2nd order"}, {"lfm", "LFM (search)"}, {"sgl", "SGL (K = 2)"}};
const char* const candidate_names[] = {"linear+relu", "linear+tanh", "skip", "zero"};
constexpr std::size_t width = 64, edges = 3;
const learners::geometry input{1, 1, 784};

std::vector<learners::layer::spec> search_space() {
  using namespace bilevel::learners;
  std::vector<layer::spec> s = {layer::dense{width}, layer::act{activation::relu}};
  for (std::size_t e = 0; e < edges; ++e)
    s.push_back(layer::mixed{{layer::candidate{{layer::dense{width}, layer::act{activation::relu}}},
                              layer::candidate{{layer::dense{width}, layer::act{activation::tanh}}}, layer::skip(),
                              layer::zero_op()}});
  s.push_back(layer::dense{10});
  return s;
}

std::string describe(const std::vector<std::size_t>& chosen) {
  std::string out;
  for (std::size_t e = 0; e < chosen.size(); ++e) out += (e ? " | " : "") + std::string(candidate_names[chosen[e]]);
  return out;
}

/// The mixing weights softmax(α_e) of every edge, for the record.
std::string softmax_weights(const std::vector<double>& alpha) {
  std::string out;
  for (std::size_t e = 0; e < alpha.size() / 4; ++e) {
    double mx = -1e300, total = 0;
    for (std::size_t o = 0; o < 4; ++o) mx = std::max(mx, alpha[e * 4 + o]);
    for (std::size_t o = 0; o < 4; ++o) total += std::exp(alpha[e * 4 + o] - mx);
    for (std::size_t o = 0; o < 4; ++o) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%s%.3f", (e || o) ? ";" : "", std::exp(alpha[e * 4 + o] - mx) / total);
      out += buf;
    }
  }
  return out;
}

/// Mean loss over every row of `d` of the search-space network with architecture `alpha` and
/// weights `theta`, in chunks of 1000 rows: how SGL's learners are compared on the whole
/// validation half.
double mean_loss(const std::vector<learners::layer::spec>& specs, const P::vector& theta,
                 const std::vector<double>& alpha, const data::dataset& d) {
  const learners::sequential<P> net(input, specs);
  const P::vector a = P::from_host(std::vector<float>(alpha.begin(), alpha.end()));
  const P::vector* in[] = {&a};  // the network reads its architecture as its one input
  double total = 0;
  std::vector<std::size_t> rows;
  for (std::size_t start = 0; start < d.rows; start += 1000) {
    rows.resize(std::min<std::size_t>(1000, d.rows - start));
    std::iota(rows.begin(), rows.end(), start);
    total += net.loss(theta, in, learners::make_batch<P>(d, rows)) * double(rows.size());
  }
  return total / double(d.rows);
}

int run(int argc, char** argv) {
  example::options o;
  o.methods = {"darts1", "darts2", "lfm", "sgl"};
  o.epochs = 10;
  o.lr = 0.025, o.weight_decay = 3e-4, o.schedule = "cosine";  // DARTS's weights
  example::command_line cli("04_architecture_search_fashion_mnist",
                            "DARTS (1st and 2nd order), LFM (architecture search) and SGL on a small MLP search "
                            "space; each derived architecture retrained from scratch and tested.",
                            o);
  cli.common("search epochs over the training half of the split",
             "2000 images, 1 search and 1 retraining epoch, unless given (a smoke test)")
      .methods(method_names)
      .training("the searched networks' weights (cosine: down to 0.001; retraining keeps SGD 0.1, x0.1 at 2/3 "
                "and 5/6, weight decay 5e-4)");
  cli.add("--retrain-epochs", o.retrain_epochs, "epochs of retraining the derived architecture (default 10)")
      ->check(example::detail::whole_number(1, 1'000'000));
  if (const auto status = cli.parse(argc, argv)) return *status;
  if (o.quick) {
    if (!o.was_given("--train-size")) o.train_size = 2000;
    if (!o.was_given("--epochs")) o.epochs = 1;
    if (!o.was_given("--retrain-epochs")) o.retrain_epochs = 1;
  }
  const auto retrain_epochs = o.retrain_epochs;
  const auto fm = example::load_data(o);
  const auto specs = search_space();
  example::result_files files(o.out, "search", "test_accuracy", "search_seconds", "retrain_seconds");
  const auto arch_path = std::filesystem::path(o.out) / "search_architectures.csv";
  std::ofstream arch_file(arch_path);
  if (!arch_file) throw std::runtime_error("cannot write '" + arch_path.string() + "'");
  arch_file << "method,seed,learner,chosen_operations,mixing_weights\n";
  std::map<std::string, std::vector<example::run_result>> results;
  bool ok = true;

  for (unsigned seed : o.seeds) {
    // DARTS's split: half of every class validates the architecture.
    const auto source = example::training_subset(fm.train, o.train_size, seed + 30);
    const auto counts = source.class_counts();
    const auto split = data::split_validation(source, *std::min_element(counts.begin(), counts.end()) / 2, seed);
    const auto train = std::make_shared<const data::dataset>(split.train);
    const auto validation = std::make_shared<const data::dataset>(split.validation);
    const auto full = std::make_shared<const data::dataset>(source);
    const std::size_t batch = 64;
    std::printf("seed %u: search on %zu + %zu images, %zu epochs; retraining on %zu, test on %zu\n", seed, train->rows,
                validation->rows, o.epochs, full->rows, fm.test.rows);
    // --schedule for the searched networks' weights, as a decay of each configuration's `lr`
    // over its `epochs`; cosine ends at DARTS's 0.001 (or at --lr, if that is lower: the
    // rate never anneals upwards).
    const auto weights_decay = example::make_schedule(o.schedule, std::min(o.lr, 0.001));

    for (const auto& method : o.methods) {
      example::run_result r;
      const std::string name = method_names.at(method);
      const auto t0 = std::chrono::steady_clock::now();
      // The search: the architecture it ends with, and every learner's (one but for SGL).
      std::vector<std::vector<double>> found;
      std::size_t pick = 0;
      // Runs a search for the epochs its configuration states (total_iterations(): epochs ×
      // iterations per epoch), printing the architecture so far after every pass of level
      // `weights_level`'s sampler over the training half (on_epoch). These are the batches
      // actually drawn: DARTS's second order takes a fresh training batch for its virtual step
      // (finite_difference's default), so its weights' sampler passes over the data twice in
      // the iterations of one configured epoch; the iteration shows where each pass ended.
      // `alpha()` reads the architecture by name.
      auto search = [&](auto& s, std::size_t weights_level, auto&& alpha) {
        solver_callbacks callbacks;
        callbacks.epoch_level = weights_level;
        callbacks.on_epoch = [&](const epoch_event& e) {
          std::printf("  %-16s seed %u search epoch %2zu (iteration %zu/%zu)  %s  (%.0f s)\n", name.c_str(), seed,
                      e.epoch + 1, e.iteration + 1, s.total_iterations(),
                      describe(methods::chosen_operations(specs, alpha())).c_str(),
                      seconds(std::chrono::steady_clock::now() - t0).count());
          std::fflush(stdout);
          return true;
        };
        s.run(s.total_iterations(), callbacks);
      };
      if (method == "darts1" || method == "darts2") {
        const methods::darts_config cfg{.batch = batch, .validation_batch = batch, .epochs = o.epochs, .lr = o.lr,
                                        .lr_decay = weights_decay, .weight_decay = o.weight_decay, .arch_lr = 1e-3,
                                        .seed = seed};
        auto darts = [&](auto strategy) {
          auto s = methods::darts<P>(input, specs, train, validation, cfg, strategy);
          search(s, 0, [&] { return s.searched_architecture(); });  // weights(): level 0
          found = {s.searched_architecture()};
        };
        if (method == "darts1") darts(hypergrad::first_order{});
        else darts(hypergrad::finite_difference{});
      } else if (method == "lfm") {
        auto s = methods::lfm_architecture_search<P>(input, specs, train, validation,
                                                     {.batch = batch, .validation_batch = batch, .epochs = o.epochs,
                                                      .lr = o.lr, .lr_decay = weights_decay,
                                                      .weight_decay = o.weight_decay, .seed = seed});
        search(s, 1, [&] { return s.searched_architecture(); });  // relearner(), W2: level 1
        found = {s.searched_architecture()};
      } else if (method == "sgl") {
        auto s = methods::small_group_learning<P, 2>(
            input, specs, train, validation,
            {.batch = batch, .unlabelled_batch = batch, .validation_batch = batch, .epochs = o.epochs, .lr = o.lr,
             .lr_decay = weights_decay, .weight_decay = o.weight_decay, .arch_lr = 1e-3, .seed = seed});
        search(s, 0, [&] { return s.group_architectures()[0]; });  // w<0>(), W1: level 0
        found = s.group_architectures();
        // Keep the learner whose V validates better (on the whole validation half).
        const double loss[] = {mean_loss(specs, s.v<0>().theta, found[0], *validation),
                               mean_loss(specs, s.v<1>().theta, found[1], *validation)};
        pick = loss[1] < loss[0] ? 1 : 0;
      }
      const double search_seconds = seconds(std::chrono::steady_clock::now() - t0).count();
      for (std::size_t k = 0; k < found.size(); ++k)
        arch_file << method << ',' << seed << ',' << k + 1 << ',' << describe(methods::chosen_operations(specs, found[k]))
                  << ',' << softmax_weights(found[k]) << '\n';
      arch_file.flush();
      const auto chosen = methods::chosen_operations(specs, found[pick]);
      std::printf("  %-16s seed %u derived: %s  (search %.0f s)\n", name.c_str(), seed, describe(chosen).c_str(),
                  search_seconds);

      // Retrain the derived architecture from scratch and test it.
      const auto t1 = std::chrono::steady_clock::now();
      const learners::sequential<P> derived(input, methods::derive_architecture(specs, found[pick]));
      example::train_plain(derived, full, seed, retrain_epochs, 0.1, 5e-4, example::make_schedule("multistep"),
                           [&](const P::vector& theta) {
                             const double accuracy = learners::classification_accuracy(derived, theta, fm.test).plain;
                             r.epochs.push_back({accuracy, search_seconds, 0.0});
                             std::printf("  %-16s seed %u retrain epoch %2zu/%zu  test accuracy %.2f%%\n", name.c_str(),
                                         seed, r.epochs.size(), retrain_epochs, accuracy);
                             std::fflush(stdout);
                           });
      const double retrain_seconds = seconds(std::chrono::steady_clock::now() - t1).count();
      for (auto& e : r.epochs) e.weight_b = retrain_seconds;
      r.seconds = search_seconds + retrain_seconds;
      files.write(method, seed, r);
      ok &= std::isfinite(r.epochs.back().accuracy) && r.epochs.back().accuracy > 20;
      for (const auto& a : found)
        for (double v : a) ok &= std::isfinite(v);
      results[method].push_back(std::move(r));
    }
  }
  example::print_summary(o.methods, method_names, results, "search s", "retrain s",
                         "test accuracy of the derived architecture, " + std::to_string(o.seeds.size()) + " seed(s), " +
                             std::to_string(o.epochs) + " search + " + std::to_string(retrain_epochs) +
                             " retraining epochs");
  files.print_paths();
  std::printf("architectures:     %s\n",
              std::filesystem::absolute(std::filesystem::path(o.out) / "search_architectures.csv").string().c_str());
  if (!ok) {
    std::puts("FAILED: non-finite result or accuracy at chance");
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return example::guarded_main("04_architecture_search_fashion_mnist", [&] { return run(argc, argv); });
}
