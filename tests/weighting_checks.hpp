// SPDX-License-Identifier: MIT
#pragma once
// The check every Weighting's derivatives get: in input slot `slot`, along direction t and
// with output cotangent ρ, the VJP and JVP satisfy ⟨ρ, J t⟩ = ⟨Jᵀ ρ, t⟩ (to round-off), and
// the JVP matches central differences of gather (h = 1e-6 in double: O(h²) truncation and
// ~1e-10 round-off relative to weights of O(1), so 1e-7 relative).
#include <doctest/doctest.h>

#include <vector>

#include <bilevel/learners/classification_batch.hpp>
#include <bilevel/learners/sample_weighting.hpp>

#include "support.hpp"

namespace test {

/// gather, scatter and gather_tangent at host `point` (one vector per input slot).
template <class P, class Weighting>
struct weighting_at {
  const Weighting& w;
  std::vector<bilevel::vector_t<P>> values;
  std::vector<const bilevel::vector_t<P>*> pointers;
  weighting_at(const Weighting& weighting, const std::vector<std::vector<double>>& point) : w(weighting) {
    for (const auto& p : point) values.push_back(device<P>(p));
    for (const auto& v : values) pointers.push_back(&v);
  }
  bilevel::input_list<P> in() const { return bilevel::input_list<P>(pointers); }
};

template <class P, class Weighting>
void check_weighting_products(const Weighting& weighting, const bilevel::learners::classification_batch<P>& b,
                              const bilevel::learners::sample_signals<P>& s,
                              const std::vector<std::vector<double>>& point, std::size_t slot,
                              const std::vector<double>& t, unsigned seed) {
  const weighting_at<P, Weighting> at(weighting, point);
  const auto rho = random_vector(b.size(), seed, 1.0);
  const auto vjp = host<P>(weighting.scatter(at.in(), b, s, device<P>(rho), slot));
  const auto jvp = host<P>(weighting.gather_tangent(at.in(), b, s, device<P>(t), slot));
  double lhs = 0, rhs = 0;
  for (std::size_t i = 0; i < rho.size(); ++i) lhs += rho[i] * jvp[i];
  for (std::size_t k = 0; k < t.size(); ++k) rhs += vjp[k] * t[k];
  CHECK(lhs == doctest::Approx(rhs).epsilon(1e-12));
  auto plus = point, minus = point;
  for (std::size_t k = 0; k < t.size(); ++k) plus[slot][k] += 1e-6 * t[k], minus[slot][k] -= 1e-6 * t[k];
  const weighting_at<P, Weighting> at_plus(weighting, plus), at_minus(weighting, minus);
  const auto cp = host<P>(weighting.gather(at_plus.in(), b, s)), cm = host<P>(weighting.gather(at_minus.in(), b, s));
  std::vector<double> fd(cp.size());
  for (std::size_t i = 0; i < fd.size(); ++i) fd[i] = (cp[i] - cm[i]) / 2e-6;
  MESSAGE("slot " << slot << ": JVP vs central differences " << relative_error(jvp, fd));
  CHECK(relative_error(jvp, fd) <= 1e-7);
}

}  // namespace test
