// SPDX-License-Identifier: MIT
// 02 — Learning to reweight noisy labels on Fashion-MNIST: plain training against L2RW,
// Meta-Weight-Net, a teacher reading the student's internal states (deep interactions) and
// learning from mistakes (LFM, data-reweighting form), each a method header that hands its
// levels to the one solver.
//
// What it teaches: published methods as levels of bilevel::solver, reached by the names of
// their roles (s.model(), s.example_weights()); a learning-rate decay stated in the method's
// configuration (`epochs`, `lr_decay`) rather than in steps; per-epoch evaluation through
// the solver's on_epoch callback; real data from the Debian package dataset-fashion-mnist,
// label noise that records what it corrupted, progress and results written as CSV, and how
// to read the learned weights back (s.sample_weights(dataset)).
//
// Setting: 1000 clean validation images (100 per class) held out of the 60000
// training images; 40% of the remaining labels moved uniformly to another class; an MLP
// 784-256-128-10, SGD (Nesterov 0.9, weight decay 5e-4, lr 0.1, ×0.1 at 2/3 and 5/6 of
// training), batches of 100. Plain training uses the same model and schedule, weights 1.
// L2RW starts from lr 0.03 instead (see methods/l2rw.hpp: at 0.1 it diverges). Test accuracy
// in evaluation mode (a ResNet's batch norms read their running statistics).
//
// Options (--help lists them, with their ranges): --noise R in [0, 1) and --noise-type
// symmetric|pair|next (symmetric, the default: each corrupted label to any other class,
// uniformly; pair: to the class most like it, T-shirt/top <-> Shirt, Pullover <-> Coat, Sandal
// <-> Sneaker, Trouser <-> Dress, Bag <-> Ankle boot, data::fashion_mnist_similar_pairs(); next:
// class c to c+1 mod 10, the pair flipping of the noisy-label benchmarks, a pairing that knows
// nothing of the classes, data::next_class_pairing()); --train-size N
// (a stratified random subset of the training split, drawn with the seed) and --test-size N
// (of the test split); --network mlp|lenet|resnet20|resnet32|wrn
// (LeNet-5, the CIFAR ResNet-20 and -32, the wide ResNet WRN-16-2; every method trains it:
// the teacher reads the features entering its last layer); --lr, --weight-decay and --schedule
// constant|multistep|cosine for the classifier; --epochs, --seed or --seeds A,B,C, --methods
// LIST|all, --data DIR, --out DIR; --quick (6000 images, 2 epochs, unless given; with a ResNet
// 200 training and 500 test images, 1 epoch, as a ResNet trains slowly on a CPU);
// --similarity-scale S for LFM (methods::lfm_reweighting_config::similarity_scale); --export DIR
// writes, for each seed, the Meta-Weight-Net problem (training rows and their noisy labels,
// which are corrupted, validation and test rows, the classifier's and the weighting net's
// starting parameters, the settings) to DIR/seed<N>/ and trains nothing, for another
// implementation to train on the same data from the same start
// (bench/compare/label_noise_betty.py).
//
// What it prints: test accuracy per epoch and method; at the end a table of last and best
// test accuracy (mean ± std over the seeds), the mean learned weight of corrupted and clean
// training samples, and wall time. Writes <out>/label_noise_epochs.csv (per epoch: accuracy
// and mean weights) and <out>/label_noise_runs.csv (per run). Exits non-zero if a run
// produced no finite result, accuracy at chance (not checked in a quick ResNet run, two steps
// long) or, in a full run, a reweighting method did not give corrupted samples less weight
// than clean ones; exits 1 with one line on stderr on missing or malformed data or an
// unwritable --out, 2 on a bad command line (examples/support/options.hpp).
#include <bilevel/eigen.hpp>
#include <bilevel/data/corruption.hpp>
#include <bilevel/data/fashion_mnist.hpp>
#include <bilevel/learners/classification_accuracy.hpp>
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

int run(int argc, char** argv) {
  example::options o;
  o.methods = {"plain", "mwn"};
  example::command_line cli("02_label_noise_fashion_mnist",
                            "Reweighting methods against plain training on Fashion-MNIST with label noise.", o);
  cli.common("epochs over the training split",
             "6000 training images, 2 epochs, unless given; with a ResNet 200 training and 500 test images, 1 epoch "
             "(a smoke test, not a result)")
      .methods(method_names)
      .training("the classifier", "; L2RW's 0.03, as at 0.1 it diverges")
      .network()
      .noise();
  cli.add("--noise-type", o.noise_type,
          "symmetric (uniformly to another class), pair (to the class most like it: T-shirt/top <-> Shirt, "
          "Pullover <-> Coat, Sandal <-> Sneaker, Trouser <-> Dress, Bag <-> Ankle boot) or next (class c to c+1 "
          "mod 10, whatever the classes) (default " +
              o.noise_type + ")")
      ->check(example::detail::one_of({"symmetric", "pair", "next"}));
  double similarity_scale = 1.0;
  cli.add("--similarity-scale", similarity_scale,
          "LFM: the scale of the encoder's starting similarities, how sharply a sample's weight reads its nearest "
          "references (default 1)")
      ->check(example::detail::real_number(1e-3, 1e3));
  std::string export_dir;
  cli.add("--export", export_dir,
          "write each seed's Meta-Weight-Net problem (rows, noisy labels, starting parameters, settings) to "
          "DIR/seed<N>/ and train nothing");
  if (const auto status = cli.parse(argc, argv)) return *status;
  if (o.quick) {
    const bool resnet = example::is_resnet(o.network);
    if (!o.was_given("--train-size")) o.train_size = resnet ? 200 : 6000;
    if (!o.was_given("--test-size") && resnet) o.test_size = 500;
    if (!o.was_given("--epochs")) o.epochs = resnet ? 1 : 2;
  }
  const double noise = o.noise;
  const auto fm = example::load_data(o);
  const auto test = example::test_subset(fm.test, o.test_size);
  const auto design = example::network_design(o.network);  // nothing for mlp: the configs' widths
  example::result_files files(o.out, "label_noise", "test_accuracy", "weight_clean", "weight_corrupted");
  std::map<std::string, std::vector<example::run_result>> results;
  bool ok = true;
  // A quick ResNet run takes two steps per method: its accuracy is still at chance (its batch
  // norms' running statistics have seen two batches), so only finiteness is checked.
  const bool at_chance_expected = o.quick && example::is_resnet(o.network);

  for (unsigned seed : o.seeds) {
    auto split = data::split_validation(fm.train, 100, seed);
    split.train = example::training_subset(split.train, o.train_size, seed + 30);
    const auto corruption =
        o.noise_type == "symmetric"
            ? data::symmetric_label_noise(split.train, noise, seed + 10)
            : data::pair_label_noise(split.train, noise, seed + 10,
                                     o.noise_type == "pair" ? data::fashion_mnist_similar_pairs()
                                                            : data::next_class_pairing(split.train.num_classes));
    std::printf("seed %u: %zu training images (%zu labels corrupted, %.0f%%, %s), %zu clean validation, %zu test\n",
                seed, split.train.rows, corruption.count(),
                100.0 * double(corruption.count()) / double(split.train.rows), o.noise_type.c_str(),
                split.validation.rows, test.rows);
    const auto train = std::make_shared<const data::dataset>(split.train);
    const auto validation = std::make_shared<const data::dataset>(split.validation);
    // --schedule as a decay relative to each method's `lr` and `epochs`: the methods work out
    // the steps (epochs × batches per epoch of their training set), so each states its rate once.
    const auto decay = example::make_schedule(o.schedule);
    // The classifier of Meta-Weight-Net and the teacher: the example's epochs, learning rate,
    // its decay and weight decay, and with --network other than mlp that network's design
    // (LeNet's layers, a ResNet's options) instead of the MLP's widths; L2RW and LFM take the
    // same design in their own configurations.
    methods::meta_weight_net_config classifier{.widths = example::mlp_widths, .network = design, .epochs = o.epochs,
                                                .lr = o.lr, .lr_decay = decay, .weight_decay = o.weight_decay,
                                                .seed = seed};

    if (!export_dir.empty()) {
      if (design) throw example::usage_error("--export: only the MLP's problem is exported (drop --network)");
      const auto s = methods::meta_weight_net<P>(train, validation, classifier);
      const auto& cfg = classifier;
      example::export_problem(
          std::filesystem::path(export_dir) / ("seed" + std::to_string(seed)), *train, corruption.corrupted,
          *validation, test, P::to_host(s.classifier().theta), P::to_host(s.weighting_net().theta),
          {{"seed", double(seed)}, {"epochs", double(o.epochs)}, {"lr", cfg.lr}, {"momentum", cfg.momentum},
           {"weight_decay", cfg.weight_decay}, {"nesterov", cfg.nesterov ? 1.0 : 0.0}, {"meta_lr", cfg.meta_lr},
           {"meta_weight_decay", cfg.meta_weight_decay}, {"hidden", double(cfg.hidden)}, {"batch", double(cfg.batch)},
           {"validation_batch", double(cfg.validation_batch)}, {"noise", noise}},
          {{"schedule", o.schedule}, {"noise_type", o.noise_type}});
      continue;
    }
    for (const auto& method : o.methods) {
      example::run_result r;
      const auto t0 = std::chrono::steady_clock::now();
      // The test accuracy of the trained network `net` at θ, in evaluation mode: `net` must be
      // the network that trained (its batch norms' running statistics), and the mean weights.
      auto report = [&](const auto& net, const P::vector& theta, std::pair<double, double> w) {
        r.epochs.push_back({example::test_accuracy(net, theta, test).plain, w.first, w.second});
        std::printf("  %-18s seed %u epoch %2zu/%zu  test accuracy %.2f%%  mean weight clean %.3f corrupted %.3f\n",
                    method_names.at(method).c_str(), seed, r.epochs.size(), o.epochs, r.epochs.back().accuracy,
                    w.first, w.second);
        std::fflush(stdout);
      };
      // Runs a method's solver for the training its configuration states (total_iterations():
      // its epochs × the batches in one) and reports after every epoch, as the solver's
      // on_epoch sees it: the test accuracy of s.model(), the level whose learner (with its
      // running statistics) and parameters are the trained classifier, and `weights()`, the
      // mean learned weight of clean and corrupted samples. The epochs counted are those of
      // level `callbacks.epoch_level`'s sampler (default 0); a method whose model is not level
      // 0 sets it to the model's level.
      auto run_solver = [&](auto& s, auto&& weights, solver_callbacks callbacks = {}) {
        callbacks.on_epoch = [&](const epoch_event&) {
          report(s.model().learner, s.model().theta, weights());
          return true;
        };
        s.run(s.total_iterations(), callbacks);
      };
      // The mean weight a method's weighting gives the clean and the corrupted training samples
      // now (sample_weights: one weight per row of the data set, in row order).
      auto mean_weights = [&](const auto& s) {
        return example::group_means(s.sample_weights(*train), corruption.corrupted);
      };
      if (method == "plain") {
        auto net = example::make_network(o.network);  // a fresh one for each run: it keeps running statistics
        example::train_plain(net, train, seed, o.epochs, o.lr, o.weight_decay, decay,
                             [&](const P::vector& theta) { report(net, theta, {1.0, 1.0}); });
      } else if (method == "mwn") {
        auto s = methods::meta_weight_net<P>(train, validation, classifier);  // model(): the classifier
        run_solver(s, [&] { return mean_weights(s); });
      } else if (method == "teacher") {
        auto s = methods::deep_interactions<P>(train, validation, classifier);  // model(): the student
        run_solver(s, [&] { return mean_weights(s); });
      } else if (method == "l2rw") {
        methods::l2rw_config cfg{.network = design, .epochs = o.epochs, .lr_decay = decay,
                                 .weight_decay = o.weight_decay, .seed = seed};
        if (o.was_given("--lr")) cfg.lr = o.lr;  // else L2RW's own (methods/l2rw.hpp); the decay follows it
        auto s = methods::l2rw<P>(train, validation, cfg);
        std::vector<bool> corrupted_by_id(methods::id_table_size(*train), false);  // ids are file rows
        for (std::size_t row = 0; row < train->rows; ++row) corrupted_by_id[train->ids[row]] = corruption.corrupted[row];
        // L2RW's weight table is set afresh for each batch and zero elsewhere, so the table at
        // the end of an epoch (s.sample_weights) shows one batch only: average instead the
        // weights every batch got when the table was set for it, over the epoch.
        example::weight_means epoch_weights;
        run_solver(
            s,
            [&] {
              const auto m = epoch_weights.means();
              epoch_weights = {};
              return m;
            },
            {.on_step = [&](const step_event& e) {
              if (e.level_name != s.example_weights().name) return;
              // The table was just set for the batch the classifier steps on next.
              const auto w = P::to_host(s.example_weights().theta);
              for (std::size_t id : s.classifier().peek_batch().ids)
                epoch_weights.add(double(w[id]), corrupted_by_id[id]);
            }});
      } else if (method == "lfm") {
        auto s = methods::learning_from_mistakes_reweighting<P>(
            train, validation,
            {.network = design, .epochs = o.epochs, .lr = o.lr, .lr_decay = decay, .weight_decay = o.weight_decay,
             .similarity_scale = similarity_scale, .seed = seed});  // W1 and W2: --network's design, or the MLP
        // model() is the re-learner W2, level 1: count the epochs of its batches.
        run_solver(s, [&] { return mean_weights(s); }, {.epoch_level = 1});
      }
      r.seconds = seconds(std::chrono::steady_clock::now() - t0).count();
      files.write(method, seed, r);
      const auto& last = r.epochs.back();
      ok &= std::isfinite(last.accuracy) && (at_chance_expected || last.accuracy > 20);
      // Without a corrupted sample (--noise 0) there is no weight of corrupted samples to compare.
      if (!o.quick && method != "plain" && corruption.count() > 0) ok &= last.weight_b < last.weight_a;
      results[method].push_back(std::move(r));
    }
  }
  if (!export_dir.empty()) {
    std::printf("exported %zu seed(s) to %s\n", o.seeds.size(), export_dir.c_str());
    return 0;
  }
  example::print_summary(o.methods, method_names, results, "w clean", "w corrupt",
                         std::to_string(o.seeds.size()) + " seed(s), " + std::to_string(o.epochs) + " epochs, " +
                             std::to_string(int(std::lround(100 * noise))) + "% " + o.noise_type + " noise, " +
                             o.network);
  files.print_paths();
  if (!ok) {
    std::puts("FAILED: non-finite result, accuracy at chance, or corrupted samples not down-weighted");
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return example::guarded_main("02_label_noise_fashion_mnist", [&] { return run(argc, argv); });
}
