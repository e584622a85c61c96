// SPDX-License-Identifier: MIT
#pragma once
// What an example needs to add options of its own: CLI11, the validators the option groups
// use, and command_line::add. See options.hpp.
#include <CLI/CLI.hpp>

#include <limits>
#include <string>
#include <vector>

#include "options.hpp"

namespace example {

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

template <class T>
CLI::Option* command_line::add(const std::string& flag, T& value, const std::string& help) {
  return app_->add_option(flag, value, help);
}

}  // namespace example
