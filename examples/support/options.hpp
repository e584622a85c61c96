// SPDX-License-Identifier: MIT
#pragma once
// The command line of every example, on CLI11, and what every example does at its top level
// with what goes wrong. Not part of the library: a convenience of the examples.
//
// CLI11 is a large header: this one only names it, and the option groups are compiled once,
// in options.cpp (the examples' library bilevel_example_options). An example that adds
// options of its own (command_line::add) includes options_cli.hpp.
//
// Exit statuses, the same in every example:
//   0  done (or --help);
//   1  the run failed: unreadable or missing data, an output directory that cannot be
//      written, a result that is off (each example says which);
//   2  a bad command line, rejected before anything is read, with the option and the value;
//  77  the data set is missing and --skip-without-data was given (the test suite's runs,
//      which ctest then reports as Skipped rather than passed).
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <exception>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace CLI {
class App;
class Option;
}  // namespace CLI

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

/// The parser of one example: add the option groups it offers, then parse().
class command_line {
 public:
  command_line(std::string program, std::string description, options& o);
  ~command_line();
  command_line(const command_line&) = delete;
  command_line& operator=(const command_line&) = delete;

  /// The options of every Fashion-MNIST experiment: seeds, epochs, the test images, data and
  /// output directories, --quick and --skip-without-data. `epochs_help` says what an epoch is
  /// in this example.
  command_line& common(const std::string& epochs_help, const std::string& quick_help);
  /// --seed N.
  command_line& seed(const std::string& help = "seed of one run");
  /// --epochs N, at least 1.
  command_line& epochs(const std::string& help);
  /// --data DIR and --skip-without-data.
  command_line& data(const std::string& help, const std::string& skip_help);
  /// --quick.
  command_line& quick(const std::string& help);
  /// --methods: a comma-separated subset of `names`' keys, or `all`.
  command_line& methods(const std::map<std::string, std::string>& names);
  /// --train-size, --lr, --weight-decay, --schedule: the training of the classifier (`what`);
  /// `lr_note` qualifies the default learning rate.
  command_line& training(const std::string& what, const std::string& lr_note = {});
  /// --noise R in [0, 1): the fraction of training labels moved to another class.
  command_line& noise();
  /// --network mlp|lenet|resnet20|resnet32|wrn: the classifier every method trains.
  command_line& network();

  /// Any other option of one example (defined in options_cli.hpp).
  template <class T>
  CLI::Option* add(const std::string& flag, T& value, const std::string& help);

  /// Parses the command line. Returns the exit status when the program should stop now: 0
  /// after --help, 2 after a bad command line (one line on stderr naming the option and the
  /// value); nothing when it should run.
  std::optional<int> parse(int argc, char** argv);

 private:
  static std::string show(double x);
  std::optional<int> fail(const std::string& what) const;

  std::string program_;
  std::unique_ptr<CLI::App> app_;
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
