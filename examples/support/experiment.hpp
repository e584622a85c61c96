// SPDX-License-Identifier: MIT
#pragma once
// What the Fashion-MNIST experiments (examples 02, 03, 04) share: command-line options, test
// accuracy (plain and class-balanced), the learning-rate schedule, per-run records and the
// mean ± std summary. Not part of the library: a convenience of the examples.
#include <bilevel/bilevel.hpp>
#include <bilevel/data/fashion_mnist.hpp>
#include <bilevel/learners/classification_batch.hpp>
#include <bilevel/learners/mlp.hpp>
#include <bilevel/learners/sample_weighting.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <numeric>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace example {

using P = bilevel::policy::eigen<float>;

struct options {
  std::string data, out = "results";
  std::vector<unsigned> seeds = {1};
  std::vector<std::string> methods;
  std::size_t epochs = 15;
  double setting = 0.0;  ///< the experiment's knob (noise rate, imbalance factor)
  bool quick = false;
};

inline std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

/// Parses the options every experiment takes; `setting_flag` names the experiment's knob
/// (e.g. "--noise"). Returns false after printing --help. Throws std::invalid_argument on a
/// bad command line.
inline bool parse(int argc, char** argv, options& o, const std::map<std::string, std::string>& known_methods,
                  const std::string& setting_flag, const std::string& usage) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
      return argv[++i];
    };
    if (a == "--help") {
      std::puts(usage.c_str());
      return false;
    }
    if (a == "--data") o.data = next();
    else if (a == "--seed") o.seeds = {unsigned(std::stoul(next()))};
    else if (a == "--seeds") {
      o.seeds.clear();
      for (const auto& s : split_list(next())) o.seeds.push_back(unsigned(std::stoul(s)));
    } else if (a == "--epochs") o.epochs = std::stoul(next());
    else if (a == "--methods") {
      const auto list = next();
      if (list == "all") {
        o.methods.clear();
        for (const auto& [key, name] : known_methods) o.methods.push_back(key);
      } else {
        o.methods = split_list(list);
      }
    } else if (a == setting_flag) o.setting = std::stod(next());
    else if (a == "--out") o.out = next();
    else if (a == "--quick") o.quick = true, o.epochs = 2;
    else throw std::invalid_argument("unknown argument " + a + " (try --help)");
  }
  for (const auto& m : o.methods)
    if (!known_methods.count(m)) throw std::invalid_argument("unknown method " + m + " (try --help)");
  if (o.seeds.empty() || o.epochs == 0) throw std::invalid_argument("need at least one seed and one epoch");
  return true;
}

/// A data set in chunks of 1000 rows, as batches.
template <class F>
void for_chunks(const bilevel::data::dataset& d, F&& f) {
  for (std::size_t start = 0; start < d.rows; start += 1000) {
    std::vector<std::size_t> rows(std::min<std::size_t>(1000, d.rows - start));
    std::iota(rows.begin(), rows.end(), start);
    f(rows, bilevel::learners::make_batch<P>(d, rows));
  }
}

/// Test accuracy in percent: plain (correct / all) and balanced (mean per-class recall).
struct accuracy_pair {
  double plain, balanced;
};
inline accuracy_pair accuracy(const bilevel::learners::sequential<P>& net, const P::vector& theta,
                              const bilevel::data::dataset& d) {
  std::vector<std::size_t> correct(d.num_classes, 0), total(d.num_classes, 0);
  for_chunks(d, [&](const auto&, const auto& b) {
    const auto logits = net.forward(theta, b).logits;
    for (long i = 0; i < logits.rows(); ++i) {
      long k;
      logits.row(i).maxCoeff(&k);
      const auto y = std::size_t(b.labels[std::size_t(i)]);
      ++total[y];
      correct[y] += std::size_t(k) == y;
    }
  });
  double recall = 0;
  std::size_t seen = 0;
  for (std::size_t c = 0; c < d.num_classes; ++c)
    if (total[c]) recall += double(correct[c]) / double(total[c]), ++seen;
  const double all = double(std::accumulate(correct.begin(), correct.end(), std::size_t(0)));
  return {100.0 * all / double(d.rows), 100.0 * recall / double(std::max<std::size_t>(seen, 1))};
}

/// lr, ×0.1 at 2/3 and at 5/6 of training (Meta-Weight-Net's 80 and 100 of 120 epochs).
inline double scheduled_lr(double lr, std::size_t step, std::size_t total) {
  return lr * (step >= total * 2 / 3 ? 0.1 : 1.0) * (step >= total * 5 / 6 ? 0.1 : 1.0);
}

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

/// The weights a network's Weighting gives every sample of `d` with inputs `in`, averaged
/// over the two groups `in_b` separates.
template <class Net>
std::pair<double, double> learned_weights(const Net& net, const P::vector& theta, bilevel::input_list<P> in,
                                          const bilevel::data::dataset& d, const std::vector<bool>& in_b) {
  weight_means m;
  for_chunks(d, [&](const auto& rows, const auto& b) {
    const auto out = net.forward(theta, b);
    const bilevel::learners::sample_signals<P> s{out.losses, &out.logits, &out.features};
    const auto c = P::to_host(net.weighting().gather(in, b, s));
    for (std::size_t i = 0; i < rows.size(); ++i) m.add(double(c[i]), in_b[rows[i]]);
  });
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
    std::filesystem::create_directories(out);
    epochs_.open(epochs_path_);
    runs_.open(runs_path_);
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

/// The table at the end: last and best accuracy (mean ± std over seeds), the two mean
/// weights and wall time, one row per method.
inline void print_summary(const std::vector<std::string>& methods, const std::map<std::string, std::string>& names,
                          const std::map<std::string, std::vector<run_result>>& results, const char* a,
                          const char* b, const std::string& context) {
  std::printf("\n%-18s %16s %16s %10s %10s %9s   (%s)\n", "method", "last (%)", "best (%)", a, b, "time (s)",
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
    const auto [lm, ls] = mean_std(last);
    const auto [bm, bs] = mean_std(best);
    std::printf("%-18s %8.2f ± %5.2f %8.2f ± %5.2f %10.3f %10.3f %9.1f\n", names.at(method).c_str(), lm, ls, bm, bs,
                mean_std(wa).first, mean_std(wb).first, mean_std(sec).first);
  }
}

/// Plain training, the baseline of every experiment: the same MLP (or any network without
/// mixed operations, e.g. a searched architecture retrained from scratch), SGD with Nesterov
/// momentum 0.9 and weight decay 5e-4, `schedule` for the learning rate, batches of 100;
/// `on_epoch(θ)` after each epoch.
inline void train_plain(const bilevel::learners::sequential<P>& net, std::shared_ptr<const bilevel::data::dataset> train,
                        unsigned seed, std::size_t epochs, std::function<double(std::size_t)> schedule,
                        const std::function<void(const P::vector&)>& on_epoch) {
  auto theta = net.initial_parameters(seed);
  const bilevel::optim::sgd<P> opt{.lr = 0.1, .momentum = 0.9, .weight_decay = 5e-4, .nesterov = true,
                                   .schedule = std::move(schedule)};
  auto state = opt.init(theta);
  bilevel::learners::dataset_batches<P> batches(train, 100, seed);
  const std::size_t per_epoch = train->rows / 100;
  P::vector g;
  for (std::size_t e = 0; e < epochs; ++e) {
    for (std::size_t t = 0; t < per_epoch; ++t) {
      net.gradient(theta, {}, batches(), g);
      opt.step(theta, state, g);
    }
    on_epoch(theta);
  }
}

}  // namespace example
