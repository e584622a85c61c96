// SPDX-License-Identifier: MIT
// The examples' option groups and parsing (options.hpp), compiled once for every example.
#include "options_cli.hpp"

#include <algorithm>
#include <cstdio>

namespace example {

command_line::command_line(std::string program, std::string description, options& o)
    : program_(std::move(program)), app_(std::make_unique<CLI::App>(std::move(description), program_)), o_(o) {
  app_->get_formatter()->column_width(28);
}
command_line::~command_line() = default;

command_line& command_line::common(const std::string& epochs_help, const std::string& quick_help) {
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

command_line& command_line::seed(const std::string& help) {
  seed_ = o_.seeds.front();
  add("--seed", seed_, help + " (default " + std::to_string(seed_) + ")")
      ->check(detail::whole_number(0, std::numeric_limits<unsigned>::max()));
  return *this;
}

command_line& command_line::epochs(const std::string& help) {
  add("--epochs", o_.epochs, help + " (default " + std::to_string(o_.epochs) + ")")
      ->check(detail::whole_number(1, 1'000'000));
  return *this;
}

command_line& command_line::data(const std::string& help, const std::string& skip_help) {
  add("--data", o_.data, help);
  app_->add_flag("--skip-without-data", o_.skip_without_data, skip_help);
  return *this;
}

command_line& command_line::quick(const std::string& help) {
  app_->add_flag("--quick", o_.quick, help);
  return *this;
}

command_line& command_line::methods(const std::map<std::string, std::string>& names) {
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

command_line& command_line::training(const std::string& what, const std::string& lr_note) {
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

command_line& command_line::noise() {
  add("--noise", o_.noise, "fraction of training labels moved to another class (default " + show(o_.noise) + ")")
      ->check(detail::real_number(0, 1, detail::open_end::above));
  return *this;
}

command_line& command_line::network() {
  add("--network", o_.network,
      "the classifier every method trains: mlp (784-256-128-10), lenet (LeNet-5: two 5x5 convolutions with max "
      "pooling, then 120-84-10), resnet20 or resnet32 (He et al.'s CIFAR ResNets, widths 16-32-64, batch norm, "
      "option-A shortcuts) or wrn (wide ResNet WRN-16-2, widths 32-64-128) (default " + o_.network + ")")
      ->check(detail::one_of({"mlp", "lenet", "resnet20", "resnet32", "wrn"}));
  return *this;
}

std::optional<int> command_line::parse(int argc, char** argv) {
  try {
    app_->parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::fputs(app_->help().c_str(), stdout);
    return 0;
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "%s: %s (try --help)\n", program_.c_str(), e.what());
    return 2;
  }
  for (const CLI::Option* opt : app_->get_options())
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

std::string command_line::show(double x) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%g", x);
  return buffer;
}

std::optional<int> command_line::fail(const std::string& what) const {
  std::fprintf(stderr, "%s: %s (try --help)\n", program_.c_str(), what.c_str());
  return 2;
}

}  // namespace example
