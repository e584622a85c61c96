// SPDX-License-Identifier: MIT
// 02 — Learning to reweight noisy labels on Fashion-MNIST: plain training against L2RW,
// Meta-Weight-Net, a teacher reading the student's internal states (deep interactions) and
// learning from mistakes (LFM, data-reweighting form), each a method header that hands its
// levels to the one solver.
//
// What it teaches: published methods as levels of bilevel::solver, real data from the Debian
// package dataset-fashion-mnist, label noise that records what it corrupted, progress and
// results written as CSV, and how to read the learned weights back.
//
// Setting (the issue's): 1000 clean validation images (100 per class) held out of the 60000
// training images; 40% of the remaining labels moved uniformly to another class; an MLP
// 784-256-128-10, SGD (Nesterov 0.9, weight decay 5e-4, lr 0.1, ×0.1 at 2/3 and 5/6 of
// training), batches of 100. Plain training uses the same model and schedule, weights 1.
// L2RW starts from lr 0.03 instead (see methods/l2rw.hpp: at 0.1 it diverges).
//
// What it prints: test accuracy per epoch and method; at the end a table of last and best
// test accuracy (mean ± std over the seeds), the mean learned weight of corrupted and clean
// training samples, and wall time. Writes <out>/label_noise_epochs.csv (per epoch: accuracy
// and mean weights) and <out>/label_noise_runs.csv (per run). Exits non-zero if a run
// produced no finite result or, in a full run, a reweighting method did not give corrupted
// samples less weight than clean ones.
#include <bilevel/bilevel.hpp>
#include <bilevel/data/corruption.hpp>
#include <bilevel/data/fashion_mnist.hpp>
#include <bilevel/methods/deep_interactions.hpp>
#include <bilevel/methods/l2rw.hpp>
#include <bilevel/methods/learning_from_mistakes.hpp>
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

const std::map<std::string, std::string> method_names = {{"plain", "plain"},
                                                         {"l2rw", "L2RW"},
                                                         {"mwn", "Meta-Weight-Net"},
                                                         {"teacher", "deep interactions"},
                                                         {"lfm", "LFM (reweighting)"}};

}  // namespace

int main(int argc, char** argv) {
  example::options o;
  o.methods = {"plain", "mwn"};
  o.setting = 0.4;
  try {
    if (!example::parse(argc, argv, o, method_names, "--noise",
                        "usage: 02_label_noise_fashion_mnist [--data DIR] [--seed N | --seeds A,B,C] [--epochs N]\n"
                        "                                    [--methods LIST|all] [--noise R] [--out DIR] [--quick]\n"
                        "Reweighting methods against plain training on Fashion-MNIST with symmetric label noise.\n"
                        "--data: directory of the IDX files (default: the Debian package's, or "
                        "$BILEVEL_FASHION_MNIST_DIR)\n"
                        "--methods: comma-separated from plain,l2rw,mwn,teacher,lfm (default plain,mwn); all = every one\n"
                        "--noise: fraction of training labels moved to another class (default 0.4)\n"
                        "--out: directory for label_noise_epochs.csv and label_noise_runs.csv (default results)\n"
                        "--quick: 6000 training images, 2 epochs (a smoke test, not a result)"))
      return 0;
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  }
  const double noise = o.setting;
  if (!data::fashion_mnist_available(o.data)) {
    std::printf("SKIPPED: Fashion-MNIST not found in %s (apt-get install dataset-fashion-mnist, or --data DIR)\n",
                data::fashion_mnist_dir(o.data).c_str());
    return 0;
  }
  const auto fm = data::load_fashion_mnist(o.data);
  const learners::mlp<P> net({784, 256, 128, 10});
  example::result_files files(o.out, "label_noise", "test_accuracy", "weight_clean", "weight_corrupted");
  std::map<std::string, std::vector<example::run_result>> results;
  bool ok = true;

  for (unsigned seed : o.seeds) {
    auto split = data::split_validation(fm.train, 100, seed);
    if (o.quick) {  // a subset, for the test suite
      std::vector<std::size_t> rows(6000);
      std::iota(rows.begin(), rows.end(), std::size_t(0));
      split.train = split.train.subset(rows);
    }
    const auto corruption = data::symmetric_label_noise(split.train, noise, seed + 10);
    std::printf("seed %u: %zu training images (%zu labels corrupted, %.0f%%), %zu clean validation, %zu test\n", seed,
                split.train.rows, corruption.count(), 100.0 * double(corruption.count()) / double(split.train.rows),
                split.validation.rows, fm.test.rows);
    const auto train = std::make_shared<const data::dataset>(split.train);
    const auto validation = std::make_shared<const data::dataset>(split.validation);
    const std::size_t per_epoch = train->rows / 100, total = per_epoch * o.epochs;
    const auto schedule = [total](std::size_t t) { return example::scheduled_lr(0.1, t, total); };

    for (const auto& method : o.methods) {
      example::run_result r;
      const auto t0 = std::chrono::steady_clock::now();
      auto report = [&](const P::vector& theta, std::pair<double, double> w) {
        r.epochs.push_back({example::accuracy(net, theta, fm.test).plain, w.first, w.second});
        std::printf("  %-18s seed %u epoch %2zu/%zu  test accuracy %.2f%%  mean weight clean %.3f corrupted %.3f\n",
                    method_names.at(method).c_str(), seed, r.epochs.size(), o.epochs, r.epochs.back().accuracy,
                    w.first, w.second);
        std::fflush(stdout);
      };
      // Runs a method's solver for every epoch; `weights` reads the learned weights at the end
      // of each epoch, `model` is the level whose parameters are the trained classifier.
      auto run_solver = [&](auto& s, auto&& model, auto&& weights, solver_callbacks callbacks = {}) {
        callbacks.on_iteration = [&](const iteration_event& ev) {
          if ((ev.iteration + 1) % per_epoch == 0) report(model(), weights());
          return true;
        };
        s.run(total, callbacks);
      };
      if (method == "plain") {
        example::train_plain(net, train, seed, o.epochs, schedule, [&](const P::vector& theta) { report(theta, {1.0, 1.0}); });
      } else if (method == "mwn" || method == "teacher") {
        auto go = [&](auto s) {
          s.template level<0>().optimizer.schedule = schedule;
          auto& lv0 = s.template level<0>();
          auto& lv1 = s.template level<1>();
          run_solver(s, [&] { return lv0.theta; }, [&] {
            const P::vector* in[] = {&lv1.theta};
            return example::learned_weights(lv0.learner, lv0.theta, input_list<P>(in), *train, corruption.corrupted);
          });
        };
        if (method == "mwn") go(methods::meta_weight_net<P>(train, validation, {.seed = seed}));
        else go(methods::deep_interactions<P>(train, validation, {.seed = seed}));
      } else if (method == "l2rw") {
        auto s = methods::l2rw<P>(train, validation, {.seed = seed});
        std::vector<bool> corrupted_by_id(methods::id_table_size(*train), false);  // ids are file rows
        for (std::size_t row = 0; row < train->rows; ++row) corrupted_by_id[train->ids[row]] = corruption.corrupted[row];
        const double base = s.level<0>().optimizer.lr;  // L2RW's own default (methods/l2rw.hpp)
        s.level<0>().optimizer.schedule = [total, base](std::size_t t) { return example::scheduled_lr(base, t, total); };
        example::weight_means epoch_weights;  // the weights each batch got, over the epoch
        run_solver(
            s, [&] { return s.level<0>().theta; },
            [&] {
              const auto m = epoch_weights.means();
              epoch_weights = {};
              return m;
            },
            {.on_step = [&](const step_event& e) {
              if (e.level != 1) return;
              const auto w = P::to_host(s.level<1>().theta);
              const auto& b = s.level<0>().peek_batch();
              for (std::size_t id : b.ids) epoch_weights.add(double(w[id]), corrupted_by_id[id]);
            }});
      } else if (method == "lfm") {
        auto s = methods::learning_from_mistakes_reweighting<P>(train, validation, {.seed = seed});
        s.level<0>().optimizer.schedule = schedule;
        s.level<1>().optimizer.schedule = schedule;
        auto& w1 = s.level<0>();
        auto& w2 = s.level<1>();
        auto& top = s.level<2>();
        run_solver(s, [&] { return w2.theta; }, [&] {
          const P::vector* in[] = {&w1.theta, &top.theta};
          return example::learned_weights(w2.learner, w2.theta, input_list<P>(in), *train, corruption.corrupted);
        });
      }
      r.seconds = seconds(std::chrono::steady_clock::now() - t0).count();
      files.write(method, seed, r);
      const auto& last = r.epochs.back();
      ok &= std::isfinite(last.accuracy) && last.accuracy > 20;
      if (!o.quick && method != "plain") ok &= last.weight_b < last.weight_a;
      results[method].push_back(std::move(r));
    }
  }
  example::print_summary(o.methods, method_names, results, "w clean", "w corrupt",
                         std::to_string(o.seeds.size()) + " seed(s), " + std::to_string(o.epochs) + " epochs, " +
                             std::to_string(int(100 * noise)) + "% noise");
  files.print_paths();
  if (!ok) {
    std::puts("FAILED: non-finite result, accuracy at chance, or corrupted samples not down-weighted");
    return 1;
  }
  return 0;
}
