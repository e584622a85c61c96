// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Learning from Mistakes (LFM; Zhang, Garg, Sridhara, Hosseini, Xie, TAI 2025), the
/// architecture-search form, as three levels of the one solver:
///
///     level 0 (W1, learner):      min_W1 L_train(W1, A)                            training batches
///     level 1 (W2, re-learner):   min_W2 (1/B) Σ_i a_i(A, W1*, V, r) ℓ_i(W2, A)    the same batches
///     level 2 ([A | V | r]):      min L_val(W2*(W1*(A), A, V, r), A)                validation batches
///
/// W1 and W2 are two weight sets of one searched network (mixed operations, as DARTS's) that
/// share the architecture A; a_i are the mistake-driven weights of learners/mistake_weighting.hpp,
/// with u_j = ℓ(A, W1*; x̃_j, ỹ_j) W1's losses on reference validation samples. Both networks
/// read A as a prefix of the top vector (learners/reading_segment.hpp). Each outer iteration
/// steps the top level first, then W1, then W2 (the official order, `Architect.step`, then
/// `step_w1`, `step_w2`); W1 and W2 take one exact look-ahead step each (lookahead, on the
/// batch their real step then takes), so the top level's hypergradient is the chain rule
/// through both:
///
///     dF/dA = ∂_A L_val + (path through W2's step: A in W2's network and in u_j)
///             + (path through W1's step, then u_j, then W2's step),
///
/// every product exact, where the official code (`architect_lfm.py`) takes the two
/// architecture products by finite differences and drops the direct path A → u_j.
///
/// Fixed against the official code (docs/methods.md, "LFM, architecture search"; the
/// mathematics, not the quirks):
/// r is indexed by a fixed set of reference validation samples, not by position in a random
/// validation batch; the A-gradient includes u_j's direct dependence on A; the products are
/// exact. Simplifications, stated: A, V and r share one optimizer (Adam, lr 1e-3, betas
/// (0.5, 0.999), weight decay 1e-5: the code's settings for A; it gives V and r lr 1e-2,
/// weight decay 1e-4); the encoder V is linear (a CPU stand-in for the paper's pretrained
/// ResNet); no gradient clipping. W1 and W2 follow the code: SGD lr 1e-2, momentum 0.9,
/// weight decay 1e-4. A starts at 1e-3·N(0, 1) (DARTS's initialisation), r at 1.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "bilevel/core/level.hpp"
#include "bilevel/core/solver.hpp"
#include "bilevel/data/dataset.hpp"
#include "bilevel/hypergrad/first_order.hpp"
#include "bilevel/hypergrad/unrolled.hpp"
#include "bilevel/learners/architecture_loss.hpp"
#include "bilevel/learners/classification_batch.hpp"
#include "bilevel/learners/mistake_weighting.hpp"
#include "bilevel/learners/reading_segment.hpp"
#include "bilevel/learners/sequential.hpp"
#include "bilevel/methods/learning_from_mistakes.hpp"
#include "bilevel/methods/method_solver.hpp"
#include "bilevel/optim/adam.hpp"
#include "bilevel/optim/schedule.hpp"
#include "bilevel/optim/sgd.hpp"

namespace bilevel::methods {

/// LFM's settings (architecture search). Designated initialisers must name the fields in
/// declaration order (C++20): {.batch = 64, .lr = 0.025, .seed = 2} compiles,
/// {.seed = 2, .lr = 0.025} does not. The order: data and the length of training, W1's and
/// W2's SGD, the top level's Adam, the weighting, the seed. Each learning rate is stated once
/// (`lr`, `top_lr`); its decay is relative to it and to `epochs` (optim/schedule.hpp), e.g.
/// DARTS's cosine to 0.001: {.epochs = 50, .lr = 0.025, .lr_decay = optim::cosine_decay{.lr_min = 0.001}}.
struct lfm_search_config {
  std::size_t batch = 32, validation_batch = 32;
  /// The length of training in epochs of the training set, what the decays' fractions are
  /// of (total_iterations() of the result); 0: not stated, and only constant rates allowed.
  std::size_t epochs = 0;
  double lr = 1e-2;                                      ///< W1's and W2's base learning rate (SGD)
  optim::lr_decay lr_decay{};                            ///< its decay over training (default: constant)
  double momentum = 0.9, weight_decay = 1e-4;            ///< W1 and W2 (SGD)
  double top_lr = 1e-3;                                  ///< A, V, r: base learning rate (Adam)
  optim::lr_decay top_lr_decay{};                        ///< its decay over training (default: constant)
  double top_beta1 = 0.5, top_weight_decay = 1e-5;       ///< A, V, r (Adam)
  std::size_t encoder_dim = 16;            ///< k, V's output dimension
  std::size_t references_per_class = 10;   ///< reference validation samples for r and u
  std::uint64_t seed = 1;
};

/// What lfm_architecture_search returns: lfm_solver (learner() W1, relearner() and model()
/// W2, top() [A | V | r]; learning_from_mistakes.hpp), and
///
///     searched_architecture()   A, the first arch_size() entries of the top vector, on the
///                               host (for chosen_operations / derive_architecture)
template <class Solver>
class lfm_search_solver : public lfm_solver<Solver> {
 public:
  lfm_search_solver(Solver s, std::size_t iterations_per_epoch, std::size_t epochs, std::size_t arch_size)
      : lfm_solver<Solver>(std::move(s), iterations_per_epoch, epochs), arch_size_(arch_size) {}
  /// The number of architecture entries (one per candidate of every mixed operation).
  [[nodiscard]] std::size_t arch_size() const { return arch_size_; }
  [[nodiscard]] std::vector<double> searched_architecture() const;

 private:
  std::size_t arch_size_;
};

/// The three levels of a search over a network with mixed operations (the DARTS supernet,
/// learners::darts_supernet_design, or a chain of layer specs with layer::mixed operations),
/// assembled and scheduled (top, W1, W2). Level 0 is W1, level 1 W2 (the model the top level
/// validates), level 2 the vector [A | V | r]; A is its first arch_size() entries
/// (searched_architecture() reads them).
/// `adapt` wraps each level's learner: distributed::across(comm) runs all three data-parallel.
template <nn_tensor_policy P, class Adapt = detail::learner_as_is>
auto lfm_architecture_search(const learners::network_design& design, std::shared_ptr<const data::dataset> train,
                             std::shared_ptr<const data::dataset> validation, const lfm_search_config& cfg = {},
                             const Adapt& adapt = {}) {
  using namespace bilevel::learners;
  const std::string who = "bilevel::methods::lfm_architecture_search";
  if (!train || !validation) throw std::invalid_argument(who + ": missing data");
  const std::size_t per_epoch = detail::iterations_per_epoch(train->rows, cfg.batch, who),
                    total = cfg.epochs * per_epoch;
  const sequential<P> net = build_network<P>(design);
  const std::size_t arch = net.arch_size();
  if (arch == 0)
    throw std::invalid_argument("bilevel::methods::lfm_architecture_search: the layers have no mixed operation to search");
  mistake_weighting<P> mistakes(design, reference_samples(*validation, cfg.references_per_class), arch,
                                cfg.encoder_dim);
  const std::size_t top = mistakes.top_size();
  // [A | V | r]: V random at the scale where the similarities are O(1), r = 1 (the
  // weighting's initial_top, whose prefix is 1), then A = 1e-3·N(0, 1) as DARTS.
  auto top_host = P::to_host(mistakes.initial_top(cfg.seed + 3));
  std::mt19937_64 gen(cfg.seed + 7);
  std::normal_distribution<double> normal;
  for (std::size_t a = 0; a < arch; ++a) top_host[a] = scalar_t<P>(1e-3 * normal(gen));

  const optim::sgd<P> sgd{.lr = cfg.lr,
                          .momentum = cfg.momentum,
                          .weight_decay = cfg.weight_decay,
                          .schedule = optim::resolve_schedule(cfg.lr_decay, cfg.lr, total, who + ": lr_decay")};
  const hypergrad::lookahead one_step{.steps = 1, .on_next_batch = true};
  // W1 reads A (its only input) as the prefix of level 2's vector.
  reading_segment<sequential<P>> w1_net(net, net.arch_slot(), 0, top);
  auto w1_0 = net.initial_parameters(cfg.seed);
  auto w1 = make_level("W1", adapt(std::move(w1_net)), sgd, one_step, std::move(w1_0),
                       dataset_batches<P>(train, cfg.batch, cfg.seed))
                .reading({2});
  // W2 reads W1's solution and the top vector (the weighting's inputs), then A (the prefix
  // of the same vector): level 2 twice, its two slots' contributions summed by the solver.
  auto w2_inner = build_network<P, mistake_weighting<P>>(design, std::move(mistakes));
  const std::size_t w2_arch_slot = w2_inner.arch_slot();
  auto w2_0 = w2_inner.initial_parameters(cfg.seed + 1);
  reading_segment<sequential<P, mistake_weighting<P>>> w2_net(std::move(w2_inner), w2_arch_slot, 0, top);
  auto w2 = make_level("W2", adapt(std::move(w2_net)), sgd, one_step, std::move(w2_0),
                       dataset_batches<P>(train, cfg.batch, cfg.seed))
                .reading({0, 2, 2});
  auto upper = make_level("A_V_r", adapt(architecture_loss(reading_segment<sequential<P>>(net, net.arch_slot(), 0, top))),
                          optim::adam<P>{.lr = cfg.top_lr, .beta1 = cfg.top_beta1, .beta2 = 0.999,
                                         .weight_decay = cfg.top_weight_decay,
                                         .schedule = optim::resolve_schedule(cfg.top_lr_decay, cfg.top_lr, total,
                                                                             who + ": top_lr_decay")},
                          hypergrad::first_order{}, P::from_host(top_host),
                          dataset_batches<P>(std::move(validation), cfg.validation_batch, cfg.seed + 2, true))
                   .reading({1});
  solver s(std::move(w1), std::move(w2), std::move(upper));
  s.schedule({2, 0, 1});
  return lfm_search_solver<decltype(s)>(std::move(s), per_epoch, cfg.epochs, arch);
}

/// The search over `specs` (which contain layer::mixed operations) on `input`-shaped samples.
template <nn_tensor_policy P, class Adapt = detail::learner_as_is>
auto lfm_architecture_search(learners::geometry input, const std::vector<learners::layer::spec>& specs,
                             std::shared_ptr<const data::dataset> train,
                             std::shared_ptr<const data::dataset> validation, const lfm_search_config& cfg = {},
                             const Adapt& adapt = {}) {
  return lfm_architecture_search<P>(learners::layer_specs{input, specs}, std::move(train), std::move(validation), cfg,
                                    adapt);
}

/// The first `arch_size` entries of a top vector (LFM's [A | V | r]), on the host: the
/// architecture to discretise with chosen_operations / derive_architecture (darts.hpp).
template <tensor_policy P>
std::vector<double> searched_architecture(const vector_t<P>& top, std::size_t arch_size) {
  const auto h = P::to_host(top);
  if (h.size() < arch_size)
    throw std::invalid_argument("bilevel::methods::searched_architecture: the vector is shorter than the architecture");
  return {h.begin(), h.begin() + std::ptrdiff_t(arch_size)};
}

template <class Solver>
std::vector<double> lfm_search_solver<Solver>::searched_architecture() const {
  return methods::searched_architecture<typename Solver::policy>(this->top().theta, arch_size_);
}

}  // namespace bilevel::methods
