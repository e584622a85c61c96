// SPDX-License-Identifier: MIT
// 04 — Architecture search on Fashion-MNIST: DARTS (first and second order), Learning from
// Mistakes in its architecture-search form and Small-Group Learning, each a method header
// handed to the one solver, on one small MLP search space; each searched architecture is then
// discretised, retrained from scratch and tested.
//
// What it teaches: searches as multilevel problems (bilevel/methods/darts.hpp,
// lfm_architecture_search.hpp, small_group_learning.hpp: two, three and five levels), networks
// that read their architecture from a longer upper vector (learners/reading_segment.hpp), and
// the discretisation (chosen_operations, derive_architecture).
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
// What it prints: per search epoch the current architecture; per method and seed the derived
// architecture, search time and test accuracy per retraining epoch; then last and best test
// accuracy (mean ± std over seeds), search and retraining time. Writes <out>/search_epochs.csv,
// <out>/search_runs.csv and <out>/search_architectures.csv. Exits non-zero on a non-finite
// result or accuracy at chance.
//
// algorithms.md §8.4: on a space this small the differences between methods are expected
// inside the seed noise; the search is a correctness and smoke test, not an effect size.
#include <bilevel/bilevel.hpp>
#include <bilevel/data/fashion_mnist.hpp>
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

}  // namespace

int main(int argc, char** argv) {
  example::options o;
  o.methods = {"darts1", "darts2", "lfm", "sgl"};
  o.epochs = 10;
  o.setting = 10;  // retraining epochs
  try {
    if (!example::parse(argc, argv, o, method_names, "--retrain-epochs",
                        "usage: 04_architecture_search_fashion_mnist [--data DIR] [--seed N | --seeds A,B,C] [--epochs N]\n"
                        "                                           [--retrain-epochs N] [--methods LIST|all] [--out DIR] [--quick]\n"
                        "DARTS (1st and 2nd order), LFM (architecture search) and SGL on a small MLP search space;\n"
                        "each derived architecture retrained from scratch on the 60000 training images and tested.\n"
                        "--data: directory of the IDX files (default: the Debian package's, or "
                        "$BILEVEL_FASHION_MNIST_DIR)\n"
                        "--epochs: search epochs over the 30000-image training half (default 10)\n"
                        "--retrain-epochs: epochs of retraining the derived architecture (default 10)\n"
                        "--methods: comma-separated from darts1,darts2,lfm,sgl (default all)\n"
                        "--out: directory for search_epochs.csv, search_runs.csv, search_architectures.csv "
                        "(default results)\n"
                        "--quick: 1000 + 1000 images for the search, 2000 for retraining, 1 epoch each (a smoke test)"))
      return 0;
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  }
  if (o.quick) o.epochs = 1, o.setting = 1;
  const auto retrain_epochs = std::size_t(o.setting);
  if (!data::fashion_mnist_available(o.data)) {
    std::printf("SKIPPED: Fashion-MNIST not found in %s (apt-get install dataset-fashion-mnist, or --data DIR)\n",
                data::fashion_mnist_dir(o.data).c_str());
    return 0;
  }
  const auto fm = data::load_fashion_mnist(o.data);
  const auto specs = search_space();
  const std::size_t arch = learners::sequential<P>(input, specs).arch_size();
  example::result_files files(o.out, "search", "test_accuracy", "search_seconds", "retrain_seconds");
  std::ofstream arch_file(std::filesystem::path(o.out) / "search_architectures.csv");
  arch_file << "method,seed,learner,chosen_operations,mixing_weights\n";
  std::map<std::string, std::vector<example::run_result>> results;
  bool ok = true;

  for (unsigned seed : o.seeds) {
    // DARTS's split: half of every class validates the architecture.
    const auto source = o.quick ? fm.train.subset([] {
      std::vector<std::size_t> rows(2000);
      std::iota(rows.begin(), rows.end(), std::size_t(0));
      return rows;
    }())
                                : fm.train;
    const auto counts = source.class_counts();
    const auto split = data::split_validation(source, *std::min_element(counts.begin(), counts.end()) / 2, seed);
    const auto train = std::make_shared<const data::dataset>(split.train);
    const auto validation = std::make_shared<const data::dataset>(split.validation);
    const auto full = std::make_shared<const data::dataset>(source);
    const std::size_t batch = 64, per_epoch = train->rows / batch, total = per_epoch * o.epochs;
    std::printf("seed %u: search on %zu + %zu images, %zu iterations; retraining on %zu, test on %zu\n", seed,
                train->rows, validation->rows, total, full->rows, fm.test.rows);
    const optim::cosine_schedule weights_lr{.lr = 0.025, .lr_min = 0.001, .total_steps = total};

    for (const auto& method : o.methods) {
      example::run_result r;
      const std::string name = method_names.at(method);
      const auto t0 = std::chrono::steady_clock::now();
      // The search: the architecture it ends with, and every learner's (one but for SGL).
      std::vector<std::vector<double>> found;
      std::size_t pick = 0;
      auto progress = [&](std::size_t it, const std::vector<double>& alpha) {
        if ((it + 1) % per_epoch == 0)
          std::printf("  %-16s seed %u search epoch %2zu/%zu  %s  (%.0f s)\n", name.c_str(), seed, (it + 1) / per_epoch,
                      o.epochs, describe(methods::chosen_operations(specs, alpha)).c_str(),
                      seconds(std::chrono::steady_clock::now() - t0).count());
        std::fflush(stdout);
        return true;
      };
      if (method == "darts1" || method == "darts2") {
        const methods::darts_config cfg{.batch = batch, .validation_batch = batch, .arch_lr = 1e-3, .seed = seed};
        auto search = [&](auto strategy) {
          auto s = methods::darts<P>(input, specs, train, validation, cfg, strategy);
          s.template level<0>().optimizer.schedule = weights_lr;
          auto alpha = [&] { return methods::searched_architecture<P>(s.template level<1>().theta, arch); };
          s.run(total, {.on_iteration = [&](const iteration_event& ev) { return progress(ev.iteration, alpha()); }});
          found = {alpha()};
        };
        if (method == "darts1") search(hypergrad::first_order{});
        else search(hypergrad::finite_difference{});
      } else if (method == "lfm") {
        auto s = methods::lfm_architecture_search<P>(input, specs, train, validation,
                                                     {.batch = batch, .validation_batch = batch, .lr = 0.025,
                                                      .weight_decay = 3e-4, .seed = seed});
        s.level<0>().optimizer.schedule = weights_lr;
        s.level<1>().optimizer.schedule = weights_lr;
        auto alpha = [&] { return methods::searched_architecture<P>(s.level<2>().theta, arch); };
        s.run(total, {.on_iteration = [&](const iteration_event& ev) { return progress(ev.iteration, alpha()); }});
        found = {alpha()};
      } else if (method == "sgl") {
        auto s = methods::small_group_learning<P, 2>(input, specs, train, validation,
                                                     {.batch = batch, .unlabelled_batch = batch,
                                                      .validation_batch = batch, .arch_lr = 1e-3, .seed = seed});
        for (auto* opt : {&s.level<0>().optimizer, &s.level<1>().optimizer, &s.level<2>().optimizer,
                          &s.level<3>().optimizer})
          opt->schedule = weights_lr;
        auto alphas = [&] { return methods::group_architectures<P>(s.level<4>().theta, 2); };
        s.run(total, {.on_iteration = [&](const iteration_event& ev) { return progress(ev.iteration, alphas()[0]); }});
        found = alphas();
        // Keep the learner whose V validates better (on the whole validation half).
        double best = 1e300;
        for (std::size_t k = 0; k < 2; ++k) {
          const learners::sequential<P> net(input, specs);
          const P::vector a = P::from_host(std::vector<float>(found[k].begin(), found[k].end()));
          const P::vector* in[] = {&a};
          double loss = 0;
          example::for_chunks(*validation, [&](const auto& rows, const auto& b) {
            loss += net.loss(k == 0 ? s.level<2>().theta : s.level<3>().theta, in, b) * double(rows.size());
          });
          if (loss < best) best = loss, pick = k;
        }
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
      const std::size_t steps = full->rows / 100 * retrain_epochs;
      example::train_plain(derived, full, seed, retrain_epochs,
                           [steps](std::size_t t) { return example::scheduled_lr(0.1, t, steps); },
                           [&](const P::vector& theta) {
                             r.epochs.push_back({example::accuracy(derived, theta, fm.test).plain, search_seconds, 0.0});
                             std::printf("  %-16s seed %u retrain epoch %2zu/%zu  test accuracy %.2f%%\n", name.c_str(),
                                         seed, r.epochs.size(), retrain_epochs, r.epochs.back().accuracy);
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
