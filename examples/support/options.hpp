// SPDX-License-Identifier: MIT
#pragma once
// The command line of every example, on CLI11, and what every example does at its top level
// with what goes wrong. Not part of the library: a convenience of the examples.
//
// Exit statuses, the same in every example:
//   0  done (or --help);
//   1  the run failed: unreadable or missing data, an output directory that cannot be
//      written, a result that is off (each example says which);
//   2  a bad command line, rejected before anything is read, with the option and the value;
//  77  the data set is missing and --skip-without-data was given (the test suite's runs,
//      which ctest then reports as Skipped rather than passed).
#include <CLI/CLI.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <exception>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace example {

/// A command line that parsed but does not make sense as a whole (an option that does not
/// combine with a method, say): reported like a parse error, exit 2.
struct usage_error : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

/// The data set is missing and the caller asked for a skip instead of an error (exit 77).
struct skipped : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// What the examples take from the command line. Each example adds the options it reads;
/// fields it does not offer keep these values.
struct options {
  std::string data, out = "results";
  std::vector<unsigned> seeds = {1};
  std::vector<std::string> methods;
  std::size_t epochs = 15;
  std::size_t train_size = 0;  ///< 0: the whole training split
  std::size_t test_size = 0;   ///< 0: the whole test split
  std::string network = "mlp";
  double lr = 0.1, weight_decay = 5e-4;
  std::string schedule = "multistep";
  std::string noise_type = "symmetric";
  double noise = 0.4;
  double imbalance = 100;
  std::size_t retrain_epochs = 10;
  std::string space = "mlp";                        ///< example 04's search space
  std::size_t cells = 5, channels = 8, nodes = 4;   ///< the DARTS space's size (learners::darts_space_options)
  std::size_t batch = 64;                           ///< example 04's search batch
  bool quick = false, skip_without_data = false;
  std::set<std::string> given;  ///< the options on the command line, so --quick leaves them alone

  [[nodiscard]] bool was_given(const std::string& flag) const { return given.count(flag) != 0; }
};

namespace detail {

// Validators check the text before CLI11 converts it, so each says what it wanted and what it
// got; CLI11 puts the option's name in front.
inline CLI::Validator whole_number(unsigned long long lowest, unsigned long long highest) {
  const std::string range = "[" + std::to_string(lowest) + ", " + std::to_string(highest) + "]";
  return CLI::Validator(
      [=](std::string& text) -> std::string {
        unsigned long long n = 0;
        const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), n);
        if (text.empty() || error != std::errc{} || end != text.data() + text.size() || n < lowest || n > highest)
          return "'" + text + "' is not a whole number in " + range;
        return {};
      },
      "in " + range);
}

/// Which ends of a range of real numbers are excluded.
enum class open_end { none, below, above };

/// A finite real number in [lowest, highest], or with `open` (lowest, highest] or
/// [lowest, highest).
inline CLI::Validator real_number(double lowest, double highest, open_end open = open_end::none) {
  auto show = [](double x) {
    if (std::isinf(x)) return std::string("inf");
    std::string s = std::to_string(x);
    s.erase(s.find_last_not_of('0') + 1);
    if (s.back() == '.') s.pop_back();
    return s;
  };
  const std::string range = (open == open_end::below ? "(" : "[") + show(lowest) + ", " + show(highest) +
                            (open == open_end::above ? ")" : "]");
  return CLI::Validator(
      [=](std::string& text) -> std::string {
        double x = 0;
        const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), x);
        const bool below = open == open_end::below ? x <= lowest : x < lowest;
        const bool above = open == open_end::above ? x >= highest : x > highest;
        if (text.empty() || error != std::errc{} || end != text.data() + text.size() || !std::isfinite(x) || below ||
            above)
          return "'" + text + "' is not a number in " + range;
        return {};
      },
      "in " + range);
}

/// One of `choices`.
inline CLI::Validator one_of(std::vector<std::string> choices) {
  std::string list;
  for (const auto& c : choices) list += (list.empty() ? "" : "|") + c;
  return CLI::Validator(
      [=](std::string& text) -> std::string {
        for (const auto& c : choices)
          if (text == c) return {};
        return "'" + text + "' is not one of " + list;
      },
      list);
}

}  // namespace detail

/// The parser of one example: add the option groups it offers, then parse().
class command_line {
 public:
  command_line(std::string program, std::string description, options& o)
      : program_(std::move(program)), app_(std::move(description), program_), o_(o) {
    app_.get_formatter()->column_width(28);
  }

  /// The options of every Fashion-MNIST experiment: seeds, epochs, the test images, data and
  /// output directories, --quick and --skip-without-data. `epochs_help` says what an epoch is
  /// in this example.
  command_line& common(const std::string& epochs_help, const std::string& quick_help) {
    seed();
    add("--seeds", o_.seeds, "comma-separated seeds, one run per seed and method")
        ->delimiter(',')
        ->check(detail::whole_number(0, std::numeric_limits<unsigned>::max()));
    epochs(epochs_help);
    add("--test-size", o_.test_size,
        "test on N images drawn at random from the test split with each class's share kept (stratified, the same "
        "images for every run) (default: all 10000)")
        ->check(detail::whole_number(100, 10000));
    data("directory of the Fashion-MNIST IDX files, plain or .gz (default: $BILEVEL_FASHION_MNIST_DIR, else the "
         "Debian package's /usr/share/datasets/fashion-mnist)",
         "without the data set, exit 77 (what ctest reports as Skipped) instead of failing");
    add("--out", o_.out, "directory for the CSV results (default " + o_.out + ")");
    quick(quick_help);
    return *this;
  }

  /// --seed N.
  command_line& seed(const std::string& help = "seed of one run") {
    seed_ = o_.seeds.front();
    add("--seed", seed_, help + " (default " + std::to_string(seed_) + ")")
        ->check(detail::whole_number(0, std::numeric_limits<unsigned>::max()));
    return *this;
  }

  /// --epochs N, at least 1.
  command_line& epochs(const std::string& help) {
    add("--epochs", o_.epochs, help + " (default " + std::to_string(o_.epochs) + ")")
        ->check(detail::whole_number(1, 1'000'000));
    return *this;
  }

  /// --data DIR and --skip-without-data.
  command_line& data(const std::string& help, const std::string& skip_help) {
    add("--data", o_.data, help);
    app_.add_flag("--skip-without-data", o_.skip_without_data, skip_help);
    return *this;
  }

  /// --quick.
  command_line& quick(const std::string& help) {
    app_.add_flag("--quick", o_.quick, help);
    return *this;
  }

  /// --methods: a comma-separated subset of `names`' keys, or `all`.
  command_line& methods(const std::map<std::string, std::string>& names) {
    names_ = &names;
    std::vector<std::string> keys{"all"};
    std::string list;
    for (const auto& [key, name] : names) keys.push_back(key), list += (list.empty() ? "" : ",") + key;
    std::string defaults;
    for (const auto& m : o_.methods) defaults += (defaults.empty() ? "" : ",") + m;
    add("--methods", o_.methods, "comma-separated from " + list + ", or all (default " + defaults + ")")
        ->delimiter(',')
        ->check(detail::one_of(keys));
    return *this;
  }

  /// --train-size, --lr, --weight-decay, --schedule: the training of the classifier (`what`);
  /// `lr_note` qualifies the default learning rate.
  command_line& training(const std::string& what, const std::string& lr_note = {}) {
    add("--train-size", o_.train_size,
        "train on N images drawn at random from the training split with each class's share kept (stratified, "
        "seeded by the run's seed) (default: all of it)")
        ->check(detail::whole_number(100, 60000));
    add("--lr", o_.lr, "learning rate of " + what + " (default " + show(o_.lr) + lr_note + ")")
        ->check(detail::real_number(0, 100, detail::open_end::below));
    add("--weight-decay", o_.weight_decay, "weight decay of " + what + " (default " + show(o_.weight_decay) + ")")
        ->check(detail::real_number(0, 1));
    add("--schedule", o_.schedule,
        "learning-rate schedule: constant, multistep (x0.1 at 2/3 and at 5/6 of training) or cosine (default " +
            o_.schedule + ")")
        ->check(detail::one_of({"constant", "multistep", "cosine"}));
    return *this;
  }

  /// --noise R in [0, 1): the fraction of training labels moved to another class.
  command_line& noise() {
    add("--noise", o_.noise, "fraction of training labels moved to another class (default " + show(o_.noise) + ")")
        ->check(detail::real_number(0, 1, detail::open_end::above));
    return *this;
  }

  /// --network mlp|lenet|resnet20|resnet32|wrn: the classifier every method trains.
  command_line& network() {
    add("--network", o_.network,
        "the classifier every method trains: mlp (784-256-128-10), lenet (LeNet-5: two 5x5 convolutions with max "
        "pooling, then 120-84-10), resnet20 or resnet32 (He et al.'s CIFAR ResNets, widths 16-32-64, batch norm, "
        "option-A shortcuts) or wrn (wide ResNet WRN-16-2, widths 32-64-128) (default " + o_.network + ")")
        ->check(detail::one_of({"mlp", "lenet", "resnet20", "resnet32", "wrn"}));
    return *this;
  }

  /// Any other option of one example.
  template <class T>
  CLI::Option* add(const std::string& flag, T& value, const std::string& help) {
    return app_.add_option(flag, value, help);
  }

  /// Parses the command line. Returns the exit status when the program should stop now: 0
  /// after --help, 2 after a bad command line (one line on stderr naming the option and the
  /// value); nothing when it should run.
  std::optional<int> parse(int argc, char** argv) {
    try {
      app_.parse(argc, argv);
    } catch (const CLI::CallForHelp&) {
      std::fputs(app_.help().c_str(), stdout);
      return 0;
    } catch (const CLI::ParseError& e) {
      std::fprintf(stderr, "%s: %s (try --help)\n", program_.c_str(), e.what());
      return 2;
    }
    for (const CLI::Option* opt : app_.get_options())
      if (opt->count() > 0) o_.given.insert(opt->get_name());
    if (o_.was_given("--seed") && o_.was_given("--seeds")) return fail("give --seed or --seeds, not both");
    if (names_) {
      if (std::find(o_.methods.begin(), o_.methods.end(), "all") != o_.methods.end()) {
        o_.methods.clear();
        for (const auto& [key, name] : *names_) o_.methods.push_back(key);
      }
      if (o_.methods.empty()) return fail("--methods: no method given");
      std::vector<std::string> once;  // a method named twice runs once
      for (const auto& m : o_.methods)
        if (std::find(once.begin(), once.end(), m) == once.end()) once.push_back(m);
      o_.methods = std::move(once);
    }
    if (o_.was_given("--seed")) o_.seeds = {seed_};
    return std::nullopt;
  }

 private:
  static std::string show(double x) {
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, "%g", x);
    return buffer;
  }
  std::optional<int> fail(const std::string& what) const {
    std::fprintf(stderr, "%s: %s (try --help)\n", program_.c_str(), what.c_str());
    return 2;
  }

  std::string program_;
  CLI::App app_;
  options& o_;
  const std::map<std::string, std::string>* names_ = nullptr;
  unsigned seed_ = 1;  // --seed, apart from --seeds' vector, whose storage parsing may replace
};

/// Runs an example's body, turning what escapes it into one line on stderr and the exit
/// status above, so that no input ends in std::terminate or a stack of messages.
inline int guarded_main(const char* program, const std::function<int()>& body) {
  try {
    return body();
  } catch (const usage_error& e) {
    std::fprintf(stderr, "%s: %s (try --help)\n", program, e.what());
    return 2;
  } catch (const skipped& e) {
    std::printf("SKIPPED: %s\n", e.what());
    return 77;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", program, e.what());
    return 1;
  } catch (...) {
    std::fprintf(stderr, "%s: stopped by an exception of unknown type\n", program);
    return 1;
  }
}

}  // namespace example
