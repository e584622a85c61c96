// SPDX-License-Identifier: MIT
#pragma once
// What the Fashion-MNIST experiments (examples 02, 03, 04) share: loading the data (or saying
// why not), the training and test subsets, the networks, the --schedule choices, the mean
// learned weight of two groups of samples, per-run records and the mean ± std summary. Test
// accuracy is the library's (learners/classification_accuracy.hpp, in evaluation mode), the
// subsets too (data/subset.hpp), the networks too (learners/networks/network_design.hpp). The
// command line is options.hpp. Not part of the library: a convenience of the examples.
#include <bilevel/eigen.hpp>
#include <bilevel/data/fashion_mnist.hpp>
#include <bilevel/data/subset.hpp>
#include <bilevel/learners/classification_accuracy.hpp>
#include <bilevel/learners/classification_batch.hpp>
#include <bilevel/learners/mlp.hpp>
#include <bilevel/learners/networks/network_design.hpp>
#include <bilevel/optim/schedule.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "options_cli.hpp"

namespace example {

using P = bilevel::policy::eigen<float>;

/// Creates the output directory, so that an unwritable --out fails before any training.
inline void prepare_out_dir(const std::string& out) {
  std::error_code ec;
  std::filesystem::create_directories(out, ec);
  if (ec || !std::filesystem::is_directory(out))
    throw std::runtime_error("--out '" + out + "': cannot create the directory (" +
                             (ec ? ec.message() : std::string("not a directory")) + ")");
}

/// The data set, or why not: a missing data set is an error naming the directory (exit 1),
/// or with --skip-without-data a skip (exit 77). A malformed file raises the library's
/// idx_error, which names the file. The output directory is created once the files are found
/// and before they are read: a bad --out then fails at once, and a mistyped --data leaves no
/// empty directory behind.
inline bilevel::data::fashion_mnist load_data(const options& o) {
  namespace fs = std::filesystem;
  const std::string dir = bilevel::data::fashion_mnist_dir(o.data);
  if (!bilevel::data::fashion_mnist_available(o.data)) {
    const std::string where = o.data.empty() ? "Fashion-MNIST directory '" + dir + "'" : "--data '" + dir + "'";
    if (o.skip_without_data)
      throw skipped("Fashion-MNIST not found in " + dir + " (apt-get install dataset-fashion-mnist, or --data DIR)");
    std::error_code ec;
    if (!fs::is_directory(dir, ec))
      throw std::runtime_error(where + ": no such directory (install the Debian package dataset-fashion-mnist, or "
                               "give --data DIR)");
  }
  prepare_out_dir(o.out);
  return bilevel::data::load_fashion_mnist(o.data);  // names the file that is missing or malformed
}

/// --train-size: `n` rows of `d` with each class's share kept (the library's stratified
/// subset, drawn with `seed`), or all of `d` when n is 0. Stratified rather than the first n
/// rows, so that a small subset still has every class in its proportion; a long tail cut
/// from it afterwards (example 03) then starts from balanced classes.
inline bilevel::data::dataset training_subset(const bilevel::data::dataset& d, std::size_t n, std::uint64_t seed) {
  if (n == 0) return d;
  if (n > d.rows)
    throw usage_error("--train-size " + std::to_string(n) + ": the training split has only " + std::to_string(d.rows) +
                      " images");
  return bilevel::data::stratified_subset(d, n, seed);
}

/// --test-size: `n` rows of the test split with each class's share kept, the same rows for
/// every run of the process (drawn with a fixed seed, so that runs of different seeds and
/// methods are tested on the same images), or all of it when n is 0.
inline bilevel::data::dataset test_subset(const bilevel::data::dataset& test, std::size_t n) {
  if (n == 0 || n >= test.rows) return test;
  return bilevel::data::stratified_subset(test, n, 7);
}

/// Plain and balanced accuracy on `d` in evaluation mode (batch norm's running statistics,
/// no dropout): the library's classification_accuracy, in chunks of 50 rows. The default
/// chunk of 1000 rows makes a convolution's unfolded input some 100 MB, whose allocation and
/// page faults cost more than the chunk saves: ResNet-20 on 1000 images took 17 s of wall
/// time in chunks of 1000 and 3.3 s in chunks of 50 (2-core VM); MLPs are as fast either way.
template <class Net>
bilevel::learners::accuracy_percent test_accuracy(const Net& net, const P::vector& theta,
                                                  const bilevel::data::dataset& d, bilevel::input_list<P> in = {}) {
  return bilevel::learners::classification_accuracy(net, theta, d, in, 50);
}

/// The --schedule choices as the decay a method configuration holds (its `lr_decay`): the
/// shape only, stated against the configuration's `lr` and `epochs`, so no step counts are
/// worked out here. constant; multistep, ×0.1 at 2/3 and again at 5/6 of training
/// (Meta-Weight-Net's 80 and 100 of 120 epochs); cosine annealing down to `lr_min`.
inline bilevel::optim::lr_decay make_schedule(const std::string& kind, double lr_min = 0.0) {
  namespace optim = bilevel::optim;
  if (kind == "constant") return optim::constant_decay{};
  if (kind == "multistep") return optim::multistep_decay{.at = {2.0 / 3, 5.0 / 6}, .gamma = 0.1};
  if (kind == "cosine") return optim::cosine_decay{.lr_min = lr_min};
  throw usage_error("--schedule: unknown schedule '" + kind + "'");
}

/// The --network choices. LeNet-5 on 28×28 grey images: conv 6@5×5 (padding 2), ReLU, max
/// pool 2, conv 16@5×5, ReLU, max pool 2, then dense 120-84-10 (61,706 parameters).
/// resnet20 and resnet32: He et al.'s CIFAR ResNets (learners/networks/resnet.hpp: widths
/// 16-32-64, batch norm, option-A shortcuts; 269,434 and 463,866 parameters on 28x28x1). wrn:
/// the wide ResNet WRN-16-2 (widths 32-64-128, pre-activation blocks, no dropout).
inline const bilevel::learners::geometry image_input{28, 28, 1};
inline std::vector<bilevel::learners::layer::spec> lenet_layers() {
  using namespace bilevel::learners;
  return {layer::conv{6, 5, 1, 2}, layer::act{activation::relu}, layer::max_pool{2},
          layer::conv{16, 5},      layer::act{activation::relu}, layer::max_pool{2},
          layer::flatten{},        layer::dense{120},            layer::act{activation::relu},
          layer::dense{84},        layer::act{activation::relu}, layer::dense{10}};
}
inline const std::vector<std::size_t> mlp_widths = {784, 256, 128, 10};
/// The network of --network as the design a method's configuration takes (its `network`), or
/// nothing for mlp, which the configurations build from their `widths`.
inline std::optional<bilevel::learners::network_design> network_design(const std::string& network) {
  using namespace bilevel::learners;
  if (network == "mlp") return std::nullopt;
  if (network == "lenet") return layer_specs{image_input, lenet_layers()};
  if (network == "resnet20") return resnet_options{.input = image_input, .classes = 10, .depth = 20};
  if (network == "resnet32") return resnet_options{.input = image_input, .classes = 10, .depth = 32};
  if (network == "wrn") return wide_resnet_options{.input = image_input, .classes = 10, .depth = 16, .widen = 2};
  throw usage_error("--network: unknown network '" + network + "'");
}
/// The network of --network, for plain training, its loss weighing samples by `weighting`
/// (none by default; class_weights for the fixed class-weight baselines).
template <class Weighting = bilevel::learners::unweighted>
bilevel::learners::sequential<P, Weighting> make_network(const std::string& network, Weighting weighting = {}) {
  using namespace bilevel::learners;
  if (const auto design = network_design(network)) return build_network<P>(*design, std::move(weighting));
  return mlp<P, Weighting>(mlp_widths, activation::relu, loss_kind::cross_entropy, std::move(weighting));
}
/// A ResNet or the wide ResNet: networks a CPU trains slowly, which --quick shrinks further.
inline bool is_resnet(const std::string& network) { return network.rfind("resnet", 0) == 0 || network == "wrn"; }

inline std::pair<double, double> mean_std(const std::vector<double>& v) {
  const double m = std::accumulate(v.begin(), v.end(), 0.0) / double(v.size());
  double ss = 0;
  for (double x : v) ss += (x - m) * (x - m);
  return {m, v.size() > 1 ? std::sqrt(ss / double(v.size() - 1)) : 0.0};
}

/// Mean weight of two groups of samples (clean / corrupted, head / tail).
struct weight_means {
  double a = 0, b = 0;
  std::size_t na = 0, nb = 0;
  void add(double w, bool in_b) {
    if (in_b) b += w, ++nb;
    else a += w, ++na;
  }
  [[nodiscard]] std::pair<double, double> means() const {
    return {na ? a / double(na) : NAN, nb ? b / double(nb) : NAN};
  }
};

/// The mean of `weights` (one per sample, as a method's sample_weights(d) gives them in row
/// order, or one per class) over the two groups `in_b` separates.
inline std::pair<double, double> group_means(const std::vector<double>& weights, const std::vector<bool>& in_b) {
  if (weights.size() != in_b.size())
    throw std::logic_error("group_means: " + std::to_string(weights.size()) + " weights for " +
                           std::to_string(in_b.size()) + " samples");
  weight_means m;
  for (std::size_t i = 0; i < weights.size(); ++i) m.add(weights[i], in_b[i]);
  return m.means();
}

/// One epoch of a run: the test accuracy it reports and the mean learned weights of the two
/// groups of samples (clean / corrupted, head / tail).
struct epoch_record {
  double accuracy, weight_a, weight_b;
};
struct run_result {
  std::vector<epoch_record> epochs;
  double seconds = 0;
  [[nodiscard]] double best() const {
    double b = 0;
    for (const auto& e : epochs) b = std::max(b, e.accuracy);
    return b;
  }
};

/// Writes <out>/<stem>_epochs.csv and <out>/<stem>_runs.csv as runs finish (flushed, so an
/// interrupted experiment keeps what it measured).
class result_files {
 public:
  result_files(const std::string& out, const std::string& stem, const std::string& accuracy, const std::string& a,
               const std::string& b)
      : epochs_path_(std::filesystem::path(out) / (stem + "_epochs.csv")),
        runs_path_(std::filesystem::path(out) / (stem + "_runs.csv")) {
    prepare_out_dir(out);
    epochs_.open(epochs_path_);
    runs_.open(runs_path_);
    if (!epochs_) throw std::runtime_error("cannot write '" + epochs_path_.string() + "'");
    if (!runs_) throw std::runtime_error("cannot write '" + runs_path_.string() + "'");
    epochs_ << "method,seed,epoch," << accuracy << ',' << a << ',' << b << '\n';
    runs_ << "method,seed,last_" << accuracy << ",best_" << accuracy << ',' << a << ',' << b << ",seconds\n";
  }
  void write(const std::string& method, unsigned seed, const run_result& r) {
    for (std::size_t e = 0; e < r.epochs.size(); ++e)
      epochs_ << method << ',' << seed << ',' << e + 1 << ',' << r.epochs[e].accuracy << ',' << r.epochs[e].weight_a
              << ',' << r.epochs[e].weight_b << '\n';
    const auto& last = r.epochs.back();
    runs_ << method << ',' << seed << ',' << last.accuracy << ',' << r.best() << ',' << last.weight_a << ','
          << last.weight_b << ',' << r.seconds << '\n';
    epochs_.flush();
    runs_.flush();
  }
  void print_paths() const {
    std::printf("per-epoch results: %s\nper-run results:   %s\n",
                std::filesystem::absolute(epochs_path_).string().c_str(),
                std::filesystem::absolute(runs_path_).string().c_str());
  }

 private:
  std::filesystem::path epochs_path_, runs_path_;
  std::ofstream epochs_, runs_;
};

/// "mean ± std" over seeds, or the value alone from one seed (whose spread is unknown, not 0),
/// 16 characters wide.
inline std::string mean_and_spread(const std::vector<double>& v) {
  const auto [m, s] = mean_std(v);
  char buffer[64];
  if (v.size() > 1) std::snprintf(buffer, sizeof buffer, "%8.2f ± %5.2f", m, s);
  else std::snprintf(buffer, sizeof buffer, "%16.2f", m);
  return buffer;
}

/// The table at the end: last and best accuracy (mean ± std over seeds; the value alone from
/// one seed), the two mean weights and wall time, one row per method.
inline void print_summary(const std::vector<std::string>& methods, const std::map<std::string, std::string>& names,
                          const std::map<std::string, std::vector<run_result>>& results, const char* a,
                          const char* b, const std::string& context) {
  int width = 18;  // the longest method name's, at least
  for (const auto& method : methods) width = std::max(width, int(names.at(method).size()));
  std::printf("\n%-*s %16s %16s %10s %10s %9s   (%s)\n", width, "method", "last (%)", "best (%)", a, b, "time (s)",
              context.c_str());
  for (const auto& method : methods) {
    std::vector<double> last, best, wa, wb, sec;
    for (const auto& r : results.at(method)) {
      last.push_back(r.epochs.back().accuracy);
      best.push_back(r.best());
      wa.push_back(r.epochs.back().weight_a);
      wb.push_back(r.epochs.back().weight_b);
      sec.push_back(r.seconds);
    }
    std::printf("%-*s %s %s %10.3f %10.3f %9.1f\n", width, names.at(method).c_str(), mean_and_spread(last).c_str(),
                mean_and_spread(best).c_str(), mean_std(wa).first, mean_std(wb).first, mean_std(sec).first);
  }
}

/// Writes a label-noise problem for another implementation to train on the same data from
/// the same start (bench/compare/label_noise_betty.py reads it), into `dir`:
///   train_rows.i64, train_labels.i64  the training rows (rows of the Fashion-MNIST training
///                                     file, the data sets' ids) and their noisy labels;
///   corrupted.u8                      1 where a training label was corrupted;
///   val_rows.i64, test_rows.i64       the validation rows (training file) and test rows (test file);
///   theta0.f32, phi0.f32              the classifier's and the weighting net's starting parameters,
///                                     in the library's layout (dense W fan_in × fan_out row-major, then b);
///   problem.json                      `numbers` and `words`, the settings.
/// Raw little-endian arrays, as bench/compare/mwn_step.cpp --export writes them.
inline void export_problem(const std::filesystem::path& dir, const bilevel::data::dataset& train,
                           const std::vector<bool>& corrupted, const bilevel::data::dataset& validation,
                           const bilevel::data::dataset& test, const std::vector<P::scalar>& theta0,
                           const std::vector<P::scalar>& phi0, const std::map<std::string, double>& numbers,
                           const std::map<std::string, std::string>& words) {
  std::filesystem::create_directories(dir);
  auto write = [&](const char* name, const auto& values) {
    std::ofstream f(dir / name, std::ios::binary);
    f.write(reinterpret_cast<const char*>(values.data()), std::streamsize(values.size() * sizeof(values[0])));
    if (!f) throw std::runtime_error("cannot write " + (dir / name).string());
  };
  auto as_i64 = [](const auto& v) { return std::vector<std::int64_t>(v.begin(), v.end()); };
  write("train_rows.i64", as_i64(train.ids));
  write("train_labels.i64", as_i64(train.labels));
  write("corrupted.u8", std::vector<std::uint8_t>(corrupted.begin(), corrupted.end()));
  write("val_rows.i64", as_i64(validation.ids));
  write("test_rows.i64", as_i64(test.ids));
  write("theta0.f32", theta0);
  write("phi0.f32", phi0);
  std::ofstream json(dir / "problem.json");
  json << "{\"widths\": [";
  for (std::size_t i = 0; i < mlp_widths.size(); ++i) json << (i ? ", " : "") << mlp_widths[i];
  json << "], \"train\": " << train.rows << ", \"validation\": " << validation.rows << ", \"test\": " << test.rows;
  json.precision(17);
  for (const auto& [k, v] : numbers) json << ", \"" << k << "\": " << v;
  for (const auto& [k, v] : words) json << ", \"" << k << "\": \"" << v << "\"";
  json << "}\n";
  if (!json) throw std::runtime_error("cannot write " + (dir / "problem.json").string());
}

/// Plain training, the baseline of every experiment: the same network (or any network without
/// mixed operations, e.g. a searched architecture retrained from scratch), SGD with Nesterov
/// momentum 0.9 and `weight_decay`, learning rate `lr` decayed by `decay` over the `epochs`,
/// batches of `batch` (100 unless given); `on_epoch(θ)` after each epoch. A plain loop has no
/// method configuration to resolve the decay, so it does so itself (optim::resolve_schedule), with the same
/// arithmetic the methods use; and no solver to tell the network of its real steps, so it
/// calls net.on_real_step itself at each step, as the solver does (batch normalization's
/// running statistics, which evaluation reads, change there): evaluate `net` itself. `in` is
/// what the network's weighting reads, fixed during training (a class-weight table for a
/// sequential<P, class_weights>; nothing for an unweighted network).
template <class Weighting = bilevel::learners::unweighted>
void train_plain(bilevel::learners::sequential<P, Weighting>& net, std::shared_ptr<const bilevel::data::dataset> train,
                 unsigned seed, std::size_t epochs, double lr, double weight_decay,
                 const bilevel::optim::lr_decay& decay, const std::function<void(const P::vector&)>& on_epoch,
                 bilevel::input_list<P> in = {}, std::size_t batch = 100) {
  if (train->rows < batch)  // not even one batch: no epoch to report
    throw std::runtime_error("only " + std::to_string(train->rows) + " training images, fewer than a batch of " +
                             std::to_string(batch) + " (raise --train-size)");
  const std::size_t per_epoch = train->rows / batch;
  auto theta = net.initial_parameters(seed);
  const bilevel::optim::sgd<P> opt{.lr = lr, .momentum = 0.9, .weight_decay = weight_decay, .nesterov = true,
                                   .schedule = bilevel::optim::resolve_schedule(decay, lr, epochs * per_epoch,
                                                                                "train_plain")};
  auto state = opt.init(theta);
  bilevel::learners::dataset_batches<P> batches(train, batch, seed);
  P::vector g;
  for (std::size_t e = 0; e < epochs; ++e) {
    for (std::size_t t = 0; t < per_epoch; ++t) {
      const auto b = batches();
      net.gradient(theta, in, b, g);
      net.on_real_step(theta, in, b);  // at the point and batch of the step, before it is taken
      opt.step(theta, state, g);
    }
    on_epoch(theta);
  }
}

}  // namespace example
