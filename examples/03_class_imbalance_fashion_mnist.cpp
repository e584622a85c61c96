// SPDX-License-Identifier: MIT
// 03 — Class imbalance on Fashion-MNIST: plain training against class weighting learned from
// mistakes (LFM-CW, with synthetic data from a class-conditional generator), Meta-Weight-Net
// and learning from mistakes (LFM, data reweighting), each a method header handed to the one
// solver.
//
// What it teaches: a three-level method whose re-learner trains on real plus generated data
// (bilevel/methods/lfm_class_weighting.hpp), a generator behind a concept
// (bilevel/data/generator.hpp; the PCA-Gaussian stands in for the paper's GAN), long-tailed
// data, and balanced accuracy.
//
// Setting: 1000 clean, balanced validation images (100 per class) held out; the remaining
// training images cut to a long tail n_c = n_max · IF^(−c/9) with IF = 100 (5900 … 59
// images); the balanced 10000-image test set. MLP 784-256-128-10, SGD (Nesterov 0.9, weight
// decay 5e-4, lr 0.1, ×0.1 at 2/3 and 5/6 of training), batches of 100; LFM-CW adds 50
// generated images to each batch, spread over the classes.
//
// What it prints: balanced test accuracy (mean per-class recall) per epoch and method, then
// last and best balanced accuracy (mean ± std over the seeds), the mean learned weight of head
// (classes 0-4) and tail (5-9) samples (for LFM-CW: of their synthetic data, γ·c_k), and wall
// time. Writes <out>/imbalance_epochs.csv and <out>/imbalance_runs.csv. Exits non-zero on a
// non-finite result or accuracy at chance.
#include <bilevel/bilevel.hpp>
#include <bilevel/data/corruption.hpp>
#include <bilevel/data/fashion_mnist.hpp>
#include <bilevel/data/generator.hpp>
#include <bilevel/methods/learning_from_mistakes.hpp>
#include <bilevel/methods/lfm_class_weighting.hpp>
#include <bilevel/methods/meta_weight_net.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "support/experiment.hpp"

using namespace bilevel;
using example::P;
using seconds = std::chrono::duration<double>;

namespace {

const std::map<std::string, std::string> method_names = {
    {"plain", "plain"}, {"lfm_cw", "LFM-CW"}, {"mwn", "Meta-Weight-Net"}, {"lfm", "LFM (reweighting)"}};

}  // namespace

int main(int argc, char** argv) {
  example::options o;
  o.methods = {"plain", "lfm_cw"};
  o.setting = 100;
  try {
    if (!example::parse(argc, argv, o, method_names, "--imbalance",
                        "usage: 03_class_imbalance_fashion_mnist [--data DIR] [--seed N | --seeds A,B,C] [--epochs N]\n"
                        "                                        [--methods LIST|all] [--imbalance IF] [--out DIR] [--quick]\n"
                        "Class-weighting and reweighting methods against plain training on long-tailed Fashion-MNIST.\n"
                        "--data: directory of the IDX files (default: the Debian package's, or "
                        "$BILEVEL_FASHION_MNIST_DIR)\n"
                        "--methods: comma-separated from plain,lfm_cw,mwn,lfm (default plain,lfm_cw); all = every one\n"
                        "--imbalance: largest over smallest class size (default 100)\n"
                        "--out: directory for imbalance_epochs.csv and imbalance_runs.csv (default results)\n"
                        "--quick: IF 10 on a tenth of the data, 2 epochs (a smoke test, not a result)"))
      return 0;
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  }
  if (o.quick) o.setting = 10;
  if (!data::fashion_mnist_available(o.data)) {
    std::printf("SKIPPED: Fashion-MNIST not found in %s (apt-get install dataset-fashion-mnist, or --data DIR)\n",
                data::fashion_mnist_dir(o.data).c_str());
    return 0;
  }
  const auto fm = data::load_fashion_mnist(o.data);
  const learners::mlp<P> net({784, 256, 128, 10});
  example::result_files files(o.out, "imbalance", "balanced_accuracy", "weight_head", "weight_tail");
  std::map<std::string, std::vector<example::run_result>> results;
  bool ok = true;

  for (unsigned seed : o.seeds) {
    auto split = data::split_validation(fm.train, 100, seed);
    if (o.quick) {
      std::vector<std::size_t> rows;
      for (std::size_t r = 0; r < split.train.rows; r += 10) rows.push_back(r);
      split.train = split.train.subset(rows);
    }
    split.train = data::long_tail(split.train, o.setting, seed + 20);
    const auto counts = split.train.class_counts();
    std::printf("seed %u: %zu training images (class 0: %zu ... class 9: %zu, IF %.0f), %zu validation, %zu test\n",
                seed, split.train.rows, counts.front(), counts.back(), o.setting, split.validation.rows, fm.test.rows);
    const auto train = std::make_shared<const data::dataset>(split.train);
    const auto validation = std::make_shared<const data::dataset>(split.validation);
    std::vector<bool> tail(train->rows);
    for (std::size_t r = 0; r < train->rows; ++r) tail[r] = train->labels[r] >= 5;
    const std::size_t per_epoch = train->rows / 100, total = per_epoch * o.epochs;
    const auto schedule = [total](std::size_t t) { return example::scheduled_lr(0.1, t, total); };

    for (const auto& method : o.methods) {
      example::run_result r;
      const auto t0 = std::chrono::steady_clock::now();
      auto report = [&](const P::vector& theta, std::pair<double, double> w) {
        r.epochs.push_back({example::accuracy(net, theta, fm.test).balanced, w.first, w.second});
        std::printf("  %-18s seed %u epoch %2zu/%zu  balanced test accuracy %.2f%%  mean weight head %.3f tail %.3f\n",
                    method_names.at(method).c_str(), seed, r.epochs.size(), o.epochs, r.epochs.back().accuracy,
                    w.first, w.second);
        std::fflush(stdout);
      };
      auto run_solver = [&](auto& s, auto&& model, auto&& weights) {
        s.run(total, {.on_iteration = [&](const iteration_event& ev) {
                        if ((ev.iteration + 1) % per_epoch == 0) report(model(), weights());
                        return true;
                      }});
      };
      if (method == "plain") {
        example::train_plain(net, train, seed, o.epochs, schedule, [&](const P::vector& theta) { report(theta, {1.0, 1.0}); });
      } else if (method == "lfm_cw") {
        const auto generator = std::make_shared<const data::pca_gaussian_generator>(*train, 50, seed);
        auto s = methods::lfm_class_weighting<P>(train, validation, generator, {.seed = seed});
        s.level<0>().optimizer.schedule = schedule;
        s.level<1>().optimizer.schedule = schedule;
        run_solver(s, [&] { return s.level<1>().theta; }, [&] {
          const auto c = s.level<1>().learner.weighting().class_weights(s.level<0>().theta, s.level<2>().theta);
          example::weight_means m;
          for (std::size_t k = 0; k < c.size(); ++k) m.add(c[k], k >= 5);
          return m.means();
        });
      } else if (method == "mwn") {
        auto s = methods::meta_weight_net<P>(train, validation, {.seed = seed});
        s.level<0>().optimizer.schedule = schedule;
        run_solver(s, [&] { return s.level<0>().theta; }, [&] {
          const P::vector* in[] = {&s.level<1>().theta};
          return example::learned_weights(s.level<0>().learner, s.level<0>().theta, input_list<P>(in), *train, tail);
        });
      } else if (method == "lfm") {
        auto s = methods::learning_from_mistakes_reweighting<P>(train, validation, {.seed = seed});
        s.level<0>().optimizer.schedule = schedule;
        s.level<1>().optimizer.schedule = schedule;
        run_solver(s, [&] { return s.level<1>().theta; }, [&] {
          const P::vector* in[] = {&s.level<0>().theta, &s.level<2>().theta};
          return example::learned_weights(s.level<1>().learner, s.level<1>().theta, input_list<P>(in), *train, tail);
        });
      }
      r.seconds = seconds(std::chrono::steady_clock::now() - t0).count();
      files.write(method, seed, r);
      ok &= std::isfinite(r.epochs.back().accuracy) && r.epochs.back().accuracy > 20;
      results[method].push_back(std::move(r));
    }
  }
  example::print_summary(o.methods, method_names, results, "w head", "w tail",
                         "balanced accuracy, " + std::to_string(o.seeds.size()) + " seed(s), " +
                             std::to_string(o.epochs) + " epochs, IF " + std::to_string(int(o.setting)));
  files.print_paths();
  if (!ok) {
    std::puts("FAILED: non-finite result or accuracy at chance");
    return 1;
  }
  return 0;
}
