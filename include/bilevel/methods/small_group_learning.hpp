// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Small-Group Learning (SGL; Du & Xie, arXiv 2012.12502) for architecture search, as 2K + 1
/// levels of the one solver, K learners each with an architecture A_k and two weight sets:
///
///     levels 0..K−1   (W_k):  min_W_k L_train(W_k, A_k)
///     levels K..2K−1  (V_k):  min_V_k L_train(V_k, A_k) + λ Σ_{j≠k} CE(V_k, A_k; U, p_j(W_j*, A_j))
///     level 2K (A_1..A_K):    min Σ_k L_val(V_k*, A_k)
///
/// p_j the soft pseudo-labels of peer j on unlabelled batches U (learners/peer_label_loss.hpp);
/// the top vector is [A_1 | … | A_K] and each network reads its own block of it
/// (learners/reading_segment.hpp); the top objective is the sum of the K validation losses
/// (learners/summed_loss.hpp). Each outer iteration steps the architectures, then every W_k,
/// then every V_k (the published code's order).
///
/// Formulation and defaults follow the published code (docs/methods.md, "SGL"; a reconstruction: the
/// paper's text was not available): pseudo-labels detached (computed with gradients off), so
/// no derivative crosses from V_k to a peer; U = the training set with its labels ignored
/// unless given; λ = 1; weights by DARTS's SGD (lr 0.025, momentum 0.9, weight decay 3e-4),
/// architectures by Adam (lr 3e-4, betas (0.5, 0.999), weight decay 1e-3), A at 1e-3·N(0, 1).
///
/// Strategy. `Strategy` differentiates V_k's response: hypergrad::first_order (the default,
/// the published commands' first-order DARTS step: the gradient is ∂/∂A Σ_k L_val(V_k, A_k)
/// at the current V_k) or hypergrad::lookahead{.steps = 1, .on_next_batch = true} (one exact
/// virtual step of V_k, as DARTS's second order with exact products). With detached labels W_k
/// does not reach the top objective, so its level is first order in both cases. Not offered:
/// the non-detached cross path A_j → W_j* → p_j → V_k, whose products need the network's
/// logit-level VJP and JVP (sequential exposes per-sample losses and parameter products only).
///
/// Data-parallel: an optional last argument `adapt` wraps every level's learner (W_k's network,
/// V_k's peer_label_loss, the top's sum of validation losses); distributed::across(comm) runs
/// them all data-parallel. V_k's batches are labelled rows followed by unlabelled ones, and its
/// loss averages each kind on its own, so each rank takes its block of each kind and weighs
/// them by the whole batch's counts (distributed::rows_of_rank, peer_label_loss.hpp): the sum
/// over the ranks is the one-process loss, up to round-off.
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "bilevel/core/level.hpp"
#include "bilevel/core/solver.hpp"
#include "bilevel/data/dataset.hpp"
#include "bilevel/hypergrad/first_order.hpp"
#include "bilevel/hypergrad/unrolled.hpp"
#include "bilevel/learners/architecture_loss.hpp"
#include "bilevel/learners/classification_batch.hpp"
#include "bilevel/learners/peer_label_loss.hpp"
#include "bilevel/learners/reading_segment.hpp"
#include "bilevel/learners/sequential.hpp"
#include "bilevel/learners/summed_loss.hpp"
#include "bilevel/methods/detail/levels.hpp"
#include "bilevel/methods/method_solver.hpp"
#include "bilevel/optim/adam.hpp"
#include "bilevel/optim/schedule.hpp"
#include "bilevel/optim/sgd.hpp"

namespace bilevel::methods {

/// SGL's settings. Designated initialisers must name the fields in declaration order (C++20):
/// {.batch = 64, .arch_lr = 1e-3, .seed = 2} compiles, {.seed = 2, .arch_lr = 1e-3} does not.
/// The order: data and the length of training, the W's and V's SGD, the architectures' Adam,
/// the pseudo-labels, the seed. Each learning rate is stated once (`lr`, `arch_lr`); its
/// decay is relative to it and to `epochs` (optim/schedule.hpp).
struct sgl_config {
  std::size_t batch = 64, unlabelled_batch = 64, validation_batch = 64;
  /// The length of training in epochs of the training set, what the decays' fractions are
  /// of (total_iterations() of the result); 0: not stated, and only constant rates allowed.
  std::size_t epochs = 0;
  double lr = 0.025;                                        ///< every W_k's and V_k's base learning rate (SGD)
  optim::lr_decay lr_decay{};                               ///< its decay over training (default: constant)
  double momentum = 0.9, weight_decay = 3e-4;               ///< every W_k and V_k (SGD)
  double arch_lr = 3e-4;                                    ///< [A_1 | … | A_K]: base learning rate (Adam)
  optim::lr_decay arch_lr_decay{};                          ///< its decay over training (default: constant)
  double arch_beta1 = 0.5, arch_weight_decay = 1e-3;        ///< [A_1 | … | A_K] (Adam)
  double lambda = 1.0;  ///< weight of the peers' pseudo-labels
  /// The unlabelled set U; null: the training set, its labels ignored (the published code).
  std::shared_ptr<const data::dataset> unlabelled{};
  std::uint64_t seed = 1;
};

/// What small_group_learning returns: its solver (method_solver.hpp), with the levels by
/// role, k from 0 to K − 1 (the paper's and the level names' learner k + 1):
///
///     w<k>()                  level k, learner k's first weights W_k
///     v<k>()                  level K + k, learner k's second weights V_k (validated by the top)
///     architectures()         level 2K, the top vector [A_1 | … | A_K]
///     group_architectures()   the K architectures on the host (group_architectures below)
template <class Solver>
class sgl_solver : public method_solver<Solver> {
 public:
  /// K, the learners in the group.
  static constexpr std::size_t group_size = (Solver::size() - 1) / 2;
  using method_solver<Solver>::method_solver;
  template <std::size_t k>
  auto& w() {
    static_assert(k < group_size, "bilevel::methods::sgl_solver::w<k>: k must be < K");
    return Solver::template level<k>();
  }
  template <std::size_t k>
  const auto& w() const {
    static_assert(k < group_size, "bilevel::methods::sgl_solver::w<k>: k must be < K");
    return Solver::template level<k>();
  }
  template <std::size_t k>
  auto& v() {
    static_assert(k < group_size, "bilevel::methods::sgl_solver::v<k>: k must be < K");
    return Solver::template level<group_size + k>();
  }
  template <std::size_t k>
  const auto& v() const {
    static_assert(k < group_size, "bilevel::methods::sgl_solver::v<k>: k must be < K");
    return Solver::template level<group_size + k>();
  }
  auto& architectures() { return Solver::template level<2 * group_size>(); }
  const auto& architectures() const { return Solver::template level<2 * group_size>(); }
  [[nodiscard]] std::vector<std::vector<double>> group_architectures() const;
};

/// The 2K + 1 levels of a search over `specs` (with layer::mixed operations) on
/// `input`-shaped samples, assembled and scheduled (architectures, W's, V's). Level k is W_k,
/// level K + k is V_k, level 2K the architectures (group_architectures() splits them).
/// `adapt` wraps each level's learner: distributed::across(comm) runs every level data-parallel.
template <nn_tensor_policy P, std::size_t K = 2, class Strategy = hypergrad::first_order,
          class Adapt = detail::learner_as_is>
auto small_group_learning(const learners::network_design& design, std::shared_ptr<const data::dataset> train,
                          std::shared_ptr<const data::dataset> validation, const sgl_config& cfg = {},
                          Strategy strategy = {}, const Adapt& adapt = {}) {
  static_assert(K >= 2, "bilevel::methods::small_group_learning: a group has at least two learners");
  using namespace bilevel::learners;
  using net_t = reading_segment<sequential<P>>;
  const std::string who = "bilevel::methods::small_group_learning";
  if (!train || !validation) throw std::invalid_argument(who + ": missing data");
  const std::size_t per_epoch = detail::iterations_per_epoch(train->rows, cfg.batch, who),
                    total = cfg.epochs * per_epoch;
  sequential<P> net = build_network<P>(design);
  // With first order everywhere no level takes an exact second-order product, so every copy of
  // the network may release its adjoints (sequential::keep_adjoints; exact either way).
  if constexpr (std::is_same_v<Strategy, hypergrad::first_order>) net.keep_adjoints(false);
  const std::size_t m = net.arch_size(), top = K * m;
  if (m == 0)
    throw std::invalid_argument("bilevel::methods::small_group_learning: the layers have no mixed operation to search");
  auto reader = [&](std::size_t k) { return net_t(net, net.arch_slot(), k * m, top); };
  const auto unlabelled = cfg.unlabelled ? cfg.unlabelled : train;

  std::mt19937_64 gen(cfg.seed + 7);
  std::normal_distribution<double> normal;
  std::vector<scalar_t<P>> alpha(top);
  for (auto& a : alpha) a = scalar_t<P>(1e-3 * normal(gen));
  const optim::sgd<P> sgd{.lr = cfg.lr,
                          .momentum = cfg.momentum,
                          .weight_decay = cfg.weight_decay,
                          .schedule = optim::resolve_schedule(cfg.lr_decay, cfg.lr, total, who + ": lr_decay")};

  auto make_w = [&](std::size_t k) {
    return make_level("W" + std::to_string(k + 1), adapt(reader(k)), sgd, hypergrad::first_order{},
                      net.initial_parameters(cfg.seed + k), dataset_batches<P>(train, cfg.batch, cfg.seed + k))
        .reading({2 * K});
  };
  auto make_v = [&](std::size_t k) {
    std::vector<net_t> peers;
    for (std::size_t j = 0; j < K; ++j)
      if (j != k) peers.push_back(reader(j));
    auto level = make_level("V" + std::to_string(k + 1),
                            adapt(peer_label_loss<net_t>(reader(k), std::move(peers), cfg.lambda)), sgd, strategy,
                            net.initial_parameters(cfg.seed + K + k),
                            peer_batches<P>(train, cfg.batch, unlabelled, cfg.unlabelled_batch, cfg.seed + K + k));
    std::vector<std::size_t> reads = {2 * K};  // the architectures, then the peers' W_j
    for (std::size_t j = 0; j < K; ++j)
      if (j != k) reads.push_back(j);
    level.reads = std::move(reads);
    return level;
  };
  auto make_top = [&] {
    std::vector<architecture_loss<net_t>> terms;
    for (std::size_t k = 0; k < K; ++k) terms.emplace_back(reader(k));
    auto level = make_level("architectures", adapt(summed_loss<architecture_loss<net_t>>(std::move(terms))),
                            optim::adam<P>{.lr = cfg.arch_lr, .beta1 = cfg.arch_beta1, .beta2 = 0.999,
                                           .weight_decay = cfg.arch_weight_decay,
                                           .schedule = optim::resolve_schedule(cfg.arch_lr_decay, cfg.arch_lr, total,
                                                                               who + ": arch_lr_decay")},
                            hypergrad::first_order{}, P::from_host(alpha),
                            dataset_batches<P>(validation, cfg.validation_batch, cfg.seed + 2 * K, true));
    std::vector<std::size_t> reads(K);
    for (std::size_t k = 0; k < K; ++k) reads[k] = K + k;
    level.reads = std::move(reads);
    return level;
  };
  return [&]<std::size_t... I>(std::index_sequence<I...>) {
    solver s(make_w(I)..., make_v(I)..., make_top());
    std::vector<std::size_t> order = {2 * K};  // architectures, then the W's, then the V's
    for (std::size_t l = 0; l < 2 * K; ++l) order.push_back(l);
    s.schedule(std::move(order));
    return sgl_solver<decltype(s)>(std::move(s), per_epoch, cfg.epochs);
  }(std::make_index_sequence<K>{});
}

/// The search over `specs` (with layer::mixed operations) on `input`-shaped samples.
template <nn_tensor_policy P, std::size_t K = 2, class Strategy = hypergrad::first_order,
          class Adapt = detail::learner_as_is>
auto small_group_learning(learners::geometry input, const std::vector<learners::layer::spec>& specs,
                          std::shared_ptr<const data::dataset> train, std::shared_ptr<const data::dataset> validation,
                          const sgl_config& cfg = {}, Strategy strategy = {}, const Adapt& adapt = {}) {
  return small_group_learning<P, K, Strategy>(learners::layer_specs{input, specs}, std::move(train),
                                              std::move(validation), cfg, std::move(strategy), adapt);
}

/// The K architectures of SGL's top vector [A_1 | … | A_K], on the host, each to discretise
/// with chosen_operations / derive_architecture (darts.hpp).
template <tensor_policy P>
std::vector<std::vector<double>> group_architectures(const vector_t<P>& top, std::size_t learners) {
  const auto h = P::to_host(top);
  if (learners == 0 || h.size() % learners != 0)
    throw std::invalid_argument("bilevel::methods::group_architectures: the vector does not split into that many learners");
  const std::size_t m = h.size() / learners;
  std::vector<std::vector<double>> out;
  for (std::size_t k = 0; k < learners; ++k)
    out.emplace_back(h.begin() + std::ptrdiff_t(k * m), h.begin() + std::ptrdiff_t((k + 1) * m));
  return out;
}

template <class Solver>
std::vector<std::vector<double>> sgl_solver<Solver>::group_architectures() const {
  return methods::group_architectures<typename Solver::policy>(architectures().theta, group_size);
}

}  // namespace bilevel::methods
