// SPDX-License-Identifier: MIT
#pragma once
// The methods besides Meta-Weight-Net (L2RW, the deep-interactions teacher, LFM in its
// data-reweighting form, LFM-CW with its PCA-Gaussian generator, learned class weights, DARTS
// first and second order),
// each run for a few iterations on toy data, written once against the policy concept like
// cases.hpp: instantiated with cuda<double> in test_methods.cu and with eigen<double> in
// host_reference.cpp. Each returns every level's parameters afterwards.
#include <cstddef>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include <bilevel/data/generator.hpp>
#include <bilevel/hypergrad/first_order.hpp>
#include <bilevel/methods/darts.hpp>
#include <bilevel/methods/deep_interactions.hpp>
#include <bilevel/methods/l2rw.hpp>
#include <bilevel/methods/learning_from_mistakes.hpp>
#include <bilevel/methods/lfm_class_weighting.hpp>
#include <bilevel/methods/meta_class_weighting.hpp>

#include "cases.hpp"

namespace cuda_test {

enum class method_kind {
  l2rw,
  teacher,
  lfm,
  lfm_class_weighting,
  class_weights,
  darts_first_order,
  darts_second_order
};
inline constexpr method_kind all_methods[] = {method_kind::l2rw,
                                              method_kind::teacher,
                                              method_kind::lfm,
                                              method_kind::lfm_class_weighting,
                                              method_kind::class_weights,
                                              method_kind::darts_first_order,
                                              method_kind::darts_second_order};
inline const char* name(method_kind k) {
  switch (k) {
    case method_kind::l2rw: return "L2RW";
    case method_kind::teacher: return "deep-interactions teacher";
    case method_kind::lfm: return "LFM (data reweighting, 3 levels)";
    case method_kind::lfm_class_weighting: return "LFM-CW (3 levels, synthetic data)";
    case method_kind::class_weights: return "learned class weights";
    case method_kind::darts_first_order: return "DARTS, first order";
    case method_kind::darts_second_order: return "DARTS, second order";
  }
  return "?";
}

template <class P, class Solver, std::size_t... L>
std::vector<std::vector<double>> level_parameters(const Solver& s, std::index_sequence<L...>) {
  return {host<P>(s.template level<L>().theta)...};
}
/// Runs the solver and reads every level's parameters; `mark` (if given) is called after the
/// first iteration (set-up behind it) and again after the last, before anything is read. With
/// `check_every` > 1 the checks are deferred (failure_policy::check_every) and read after the
/// second mark, so that the marks enclose steps only. With `capture`, the outer steps are
/// captured as device graphs (solver::capture_steps) and what that did is written there.
template <class P, std::size_t Levels, class Solver>
std::vector<std::vector<double>> run_and_read(Solver s, std::size_t iterations, const std::function<void()>& mark,
                                              std::size_t check_every, bilevel::step_capture_report* capture) {
  if (check_every > 1) s.on_failure({.check_every = check_every});
  if (capture) s.capture_steps();
  s.run(1);
  if (mark) mark();
  for (std::size_t it = 1; it < iterations; ++it) s.iterate();
  if (mark) mark();
  s.flush_checks();
  if (capture) *capture = s.capture_report();
  return level_parameters<P>(s, std::make_index_sequence<Levels>{});
}

template <class P>
std::vector<std::vector<double>> method_run(method_kind k, std::size_t iterations,
                                            const std::function<void()>& mark = {}, std::size_t check_every = 1,
                                            bilevel::step_capture_report* capture = nullptr) {
  namespace m = bilevel::methods;
  using namespace bilevel::learners;
  const auto train = test::toy_classes(60, 3, 0.3), val = test::toy_classes(30, 4, 0.0, 1000);
  const auto& widths = mwn_widths();
  switch (k) {
    case method_kind::l2rw:
      return run_and_read<P, 2>(
          m::l2rw<P>(train.data, val.data, {.widths = widths, .batch = 10, .validation_batch = 20, .seed = 5}),
          iterations, mark, check_every, capture);
    case method_kind::teacher:
      return run_and_read<P, 2>(
          m::deep_interactions<P>(train.data, val.data,
                                  {.widths = widths, .batch = 10, .validation_batch = 20, .hidden = 4, .seed = 5}),
          iterations, mark, check_every, capture);
    case method_kind::lfm:
      return run_and_read<P, 3>(
          m::learning_from_mistakes_reweighting<P>(train.data, val.data,
                                                   {.widths = widths, .batch = 10, .validation_batch = 15,
                                                    .encoder_dim = 3, .references_per_class = 3, .seed = 4}),
          iterations, mark, check_every, capture);
    case method_kind::lfm_class_weighting: {
      auto generator = std::make_shared<const bilevel::data::pca_gaussian_generator>(*train.data, 4, 1);
      return run_and_read<P, 3>(
          m::lfm_class_weighting<P>(train.data, val.data, generator,
                                    {.widths = widths, .batch = 10, .synthetic_per_batch = 6, .validation_batch = 15,
                                     .references_per_class = 3, .seed = 4}),
          iterations, mark, check_every, capture);
    }
    case method_kind::class_weights:
      return run_and_read<P, 2>(
          m::meta_class_weighting<P>(train.data, val.data,
                                     {.widths = widths, .batch = 10, .validation_batch = 20, .meta_lr = 0.1, .seed = 5}),
          iterations, mark, check_every, capture);
    case method_kind::darts_first_order:
    case method_kind::darts_second_order:
      break;
  }
  // A cell on toy_classes' 8 features: two mixed edges over small candidate networks.
  const std::vector<layer::spec> cell = {
      layer::dense{5}, layer::act{activation::tanh},
      layer::mixed{{layer::candidate{{layer::dense{5}, layer::act{activation::relu}}},
                    layer::candidate{{layer::dense{5}, layer::act{activation::tanh}}}, layer::skip(), layer::zero_op()}},
      layer::mixed{{layer::candidate{{layer::dense{5}, layer::act{activation::sigmoid}}}, layer::skip()}},
      layer::dense{3}};
  const m::darts_config cfg{.batch = 10, .validation_batch = 20, .lr = 0.1, .arch_lr = 3e-2};
  if (k == method_kind::darts_first_order)
    return run_and_read<P, 2>(
        m::darts<P>({1, 1, 8}, cell, train.data, val.data, cfg, bilevel::hypergrad::first_order{}), iterations, mark, check_every, capture);
  return run_and_read<P, 2>(m::darts<P>({1, 1, 8}, cell, train.data, val.data, cfg), iterations, mark, check_every, capture);
}

}  // namespace cuda_test
