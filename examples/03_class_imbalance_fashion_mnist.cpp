// SPDX-License-Identifier: MIT
// 03 — Class imbalance on Fashion-MNIST: plain training against class weighting learned from
// mistakes (LFM-CW, with synthetic data from a class-conditional generator), class weights
// learned as a hyperparameter (methods/meta_class_weighting.hpp), Meta-Weight-Net and learning
// from mistakes (LFM, data reweighting), each a method header handed to the one solver; and the
// fixed class weightings a learned one has to beat, c_k ∝ n_k^(−1/2) and n_k^(−1)
// (data::class_frequency_weights, on a network whose loss reads class weights).
//
// What it teaches: a three-level method whose re-learner trains on real plus generated data
// (bilevel/methods/lfm_class_weighting.hpp), a generator behind a concept
// (bilevel/data/generator.hpp; the PCA-Gaussian stands in for the paper's GAN), long-tailed
// data, balanced accuracy (learners/classification_accuracy.hpp), and results read through
// the methods' names for their levels: s.model(), s.class_weights(), s.sample_weights(d).
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
// non-finite result, accuracy at chance (not checked in a quick ResNet run, four steps long)
// or, in a full run on a long tail, learned class weights that do not favour the tail; exits
// 1 with one line on stderr on missing or malformed data or an unwritable --out, 2 on a bad
// command line (examples/support/options.hpp). Balanced accuracy in evaluation mode (a
// ResNet's batch norms read their running statistics).
//
// Options (--help lists them, with their ranges): --imbalance IF in [1, 1000]; --train-size N
// (the stratified random subset of the training split the long tail is cut from, drawn with
// the seed) and --test-size N (of the test split); --network mlp|lenet|resnet20|resnet32|wrn
// (LeNet-5, the CIFAR ResNet-20 and -32, the wide ResNet WRN-16-2; every method trains it, LFM
// and LFM-CW as both their learners); --lr, --weight-decay and --schedule
// constant|multistep|cosine for the classifiers; --class-weights-lr for the learned class
// weights' logits (methods::meta_class_weighting_config::meta_lr); --epochs, --seed or --seeds A,B,C, --methods
// LIST|all, --data DIR, --out DIR; --quick (5900 images, IF 10, 2 epochs, unless given; with a
// ResNet the tail cut from 500 images, 500 test images, as a ResNet trains slowly on a CPU).
#include <bilevel/eigen.hpp>
#include <bilevel/data/corruption.hpp>
#include <bilevel/data/fashion_mnist.hpp>
#include <bilevel/data/generator.hpp>
#include <bilevel/learners/classification_accuracy.hpp>
#include <bilevel/methods/learning_from_mistakes.hpp>
#include <bilevel/methods/lfm_class_weighting.hpp>
#include <bilevel/methods/meta_class_weighting.hpp>
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
    {"plain", "plain"},         {"inv_sqrt", "fixed n^-1/2"},       {"inv_freq", "fixed 1/n"},
    {"lfm_cw", "LFM-CW"},       {"class_weights", "learned class weights"},
    {"mwn", "Meta-Weight-Net"}, {"lfm", "LFM (reweighting)"}};

int run(int argc, char** argv) {
  example::options o;
  o.methods = {"plain", "lfm_cw"};
  example::command_line cli("03_class_imbalance_fashion_mnist",
                            "Class-weighting and reweighting methods against plain training on long-tailed "
                            "Fashion-MNIST.",
                            o);
  cli.common("epochs over the long-tailed training set",
             "a tenth of the training split (5900 images), IF 10, 2 epochs, unless given; with a ResNet 500 "
             "images (cut to some 200) and 500 test images (a smoke test, not a result)")
      .methods(method_names)
      .training("the classifiers")
      .network();
  cli.add("--imbalance", o.imbalance, "largest over smallest class size, IF (default 100)")
      ->check(example::detail::real_number(1, 1000));
  double class_weights_lr = methods::meta_class_weighting_config{}.meta_lr;
  char shown[32];
  std::snprintf(shown, sizeof shown, "%g", class_weights_lr);
  cli.add("--class-weights-lr", class_weights_lr,
          std::string("the learned class weights' Adam learning rate, for their logits (default ") + shown + ")")
      ->check(example::detail::real_number(1e-6, 10));
  if (const auto status = cli.parse(argc, argv)) return *status;
  if (o.quick) {
    const bool resnet = example::is_resnet(o.network);
    if (!o.was_given("--train-size")) o.train_size = resnet ? 500 : 5900;
    if (!o.was_given("--test-size") && resnet) o.test_size = 500;
    if (!o.was_given("--imbalance")) o.imbalance = 10;
    if (!o.was_given("--epochs")) o.epochs = 2;
  }
  const auto fm = example::load_data(o);
  const auto test = example::test_subset(fm.test, o.test_size);
  const auto design = example::network_design(o.network);  // nothing for mlp: the configs' widths
  example::result_files files(o.out, "imbalance", "balanced_accuracy", "weight_head", "weight_tail");
  std::map<std::string, std::vector<example::run_result>> results;
  bool ok = true;
  // A quick ResNet run takes four steps per method: its accuracy may still be at chance (its
  // batch norms' running statistics have seen four batches), so only finiteness is checked.
  const bool at_chance_expected = o.quick && example::is_resnet(o.network);

  for (unsigned seed : o.seeds) {
    auto split = data::split_validation(fm.train, 100, seed);
    split.train =
        data::long_tail(example::training_subset(split.train, o.train_size, seed + 30), o.imbalance, seed + 20);
    const auto counts = split.train.class_counts();
    std::printf("seed %u: %zu training images (class 0: %zu ... class 9: %zu, IF %g), %zu validation, %zu test\n",
                seed, split.train.rows, counts.front(), counts.back(), o.imbalance, split.validation.rows,
                test.rows);
    const auto train = std::make_shared<const data::dataset>(split.train);
    const auto validation = std::make_shared<const data::dataset>(split.validation);
    std::vector<bool> tail(train->rows);
    for (std::size_t r = 0; r < train->rows; ++r) tail[r] = train->labels[r] >= 5;
    // --schedule as a decay relative to each method's `lr` and `epochs`: the methods work out
    // the steps (epochs × batches per epoch of the long-tailed set).
    const auto decay = example::make_schedule(o.schedule);

    for (const auto& method : o.methods) {
      example::run_result r;
      const auto t0 = std::chrono::steady_clock::now();
      // The balanced test accuracy of the trained network `net` at θ, in evaluation mode: `net`
      // must be the network that trained (its batch norms' running statistics), and the mean
      // weights.
      auto report = [&](const auto& net, const P::vector& theta, std::pair<double, double> w) {
        r.epochs.push_back({example::test_accuracy(net, theta, test).balanced, w.first, w.second});
        std::printf("  %-18s seed %u epoch %2zu/%zu  balanced test accuracy %.2f%%  mean weight head %.3f tail %.3f\n",
                    method_names.at(method).c_str(), seed, r.epochs.size(), o.epochs, r.epochs.back().accuracy,
                    w.first, w.second);
        std::fflush(stdout);
      };
      // Runs a method's solver for the training its configuration states (total_iterations():
      // its epochs × the batches in one) and reports after every epoch, as the solver's
      // on_epoch sees it: the balanced test accuracy of s.model() (its learner, with its
      // running statistics, at its parameters) and `weights()`, the mean learned weight of
      // head and tail. The epochs counted are those of the model's level
      // (`model_level`, on_epoch's epoch_level).
      auto run_solver = [&](auto& s, std::size_t model_level, auto&& weights) {
        solver_callbacks callbacks;
        callbacks.epoch_level = model_level;
        callbacks.on_epoch = [&](const epoch_event&) {
          report(s.model().learner, s.model().theta, weights());
          return true;
        };
        s.run(s.total_iterations(), callbacks);
      };
      if (method == "plain") {
        auto net = example::make_network(o.network);  // a fresh one for each run: it keeps running statistics
        example::train_plain(net, train, seed, o.epochs, o.lr, o.weight_decay, decay,
                             [&](const P::vector& theta) { report(net, theta, {1.0, 1.0}); });
      } else if (method == "inv_sqrt" || method == "inv_freq") {
        // Plain training with fixed class weights c_k ∝ n_k^(−1/2) or n_k^(−1), mean 1 over
        // the classes (data::class_frequency_weights): the baselines a learned class
        // weighting has to beat. Reported weights: the mean c of head and tail samples.
        const auto c = data::class_frequency_weights(*train, method == "inv_freq" ? 1.0 : 0.5);
        const std::vector<P::scalar> host(c.begin(), c.end());
        const P::vector table = P::from_host(host);
        std::vector<double> per_sample(train->rows);
        for (std::size_t row = 0; row < train->rows; ++row) per_sample[row] = c[std::size_t(train->labels[row])];
        const auto means = example::group_means(per_sample, tail);
        auto net = example::make_network(o.network, learners::class_weights(train->num_classes));
        const P::vector* in[] = {&table};
        example::train_plain(
            net, train, seed, o.epochs, o.lr, o.weight_decay, decay,
            [&](const P::vector& theta) { report(net, theta, means); }, in);
      } else if (method == "lfm_cw") {
        const auto generator = std::make_shared<const data::pca_gaussian_generator>(*train, 50, seed);
        auto s = methods::lfm_class_weighting<P>(
            train, validation, generator,
            {.network = design, .epochs = o.epochs, .lr = o.lr, .lr_decay = decay, .weight_decay = o.weight_decay,
             .seed = seed});
        // model() is the re-learner W2, level 1. Its weights are per class (the synthetic
        // samples of class k weigh γ·c_k): head is classes 0-4, tail 5-9.
        std::vector<bool> tail_class(train->num_classes);
        for (std::size_t k = 0; k < tail_class.size(); ++k) tail_class[k] = k >= 5;
        run_solver(s, 1, [&] { return example::group_means(s.class_weights(), tail_class); });
      } else if (method == "class_weights") {
        // One logit per class, c = C · softmax(φ), learned along the exact look-ahead
        // hypergradient of the balanced validation loss (Meta-Weight-Net's schedule).
        auto s = methods::meta_class_weighting<P>(
            train, validation,
            {.widths = example::mlp_widths, .network = design, .epochs = o.epochs, .lr = o.lr, .lr_decay = decay,
             .weight_decay = o.weight_decay, .meta_lr = class_weights_lr, .seed = seed});
        std::vector<double> per_sample(train->rows);
        run_solver(s, 0, [&] {
          const auto c = s.class_weights();
          for (std::size_t row = 0; row < train->rows; ++row) per_sample[row] = c[std::size_t(train->labels[row])];
          return example::group_means(per_sample, tail);
        });
      } else if (method == "mwn") {
        // With --network other than mlp that network's design (LeNet's layers, a ResNet's
        // options) instead of the MLP's widths.
        const methods::meta_weight_net_config cfg{.widths = example::mlp_widths, .network = design,
                                                  .epochs = o.epochs, .lr = o.lr, .lr_decay = decay,
                                                  .weight_decay = o.weight_decay, .seed = seed};
        auto s = methods::meta_weight_net<P>(train, validation, cfg);  // model(): the classifier, level 0
        run_solver(s, 0, [&] { return example::group_means(s.sample_weights(*train), tail); });
      } else if (method == "lfm") {
        auto s = methods::learning_from_mistakes_reweighting<P>(
            train, validation,
            {.network = design, .epochs = o.epochs, .lr = o.lr, .lr_decay = decay, .weight_decay = o.weight_decay,
             .seed = seed});
        run_solver(s, 1, [&] { return example::group_means(s.sample_weights(*train), tail); });  // model(): W2
      }
      r.seconds = seconds(std::chrono::steady_clock::now() - t0).count();
      files.write(method, seed, r);
      ok &= std::isfinite(r.epochs.back().accuracy) && (at_chance_expected || r.epochs.back().accuracy > 20);
      // Learned class weights on a long tail must end up favouring the tail (weight_b) over the head.
      if (!o.quick && method == "class_weights" && o.imbalance > 1)
        ok &= r.epochs.back().weight_b > r.epochs.back().weight_a;
      results[method].push_back(std::move(r));
    }
  }
  example::print_summary(o.methods, method_names, results, "w head", "w tail",
                         "balanced accuracy, " + std::to_string(o.seeds.size()) + " seed(s), " +
                             std::to_string(o.epochs) + " epochs, IF " + std::to_string(int(std::lround(o.imbalance))) +
                             ", " + o.network);
  files.print_paths();
  if (!ok) {
    std::puts("FAILED: non-finite result, accuracy at chance, or learned class weights not favouring the tail");
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return example::guarded_main("03_class_imbalance_fashion_mnist", [&] { return run(argc, argv); });
}
