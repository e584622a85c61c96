// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// The DARTS search space (Liu et al., ICLR 2019), sized by options, and the discrete
/// networks its genotypes describe.
///
/// The supernet: a stem (3x3 convolution to stem_multiplier · C channels, batch norm), then
/// `cells` cells, the ones at 1/3 and 2/3 of the depth reduction cells (stride 2, channels
/// doubled), then global average pooling and a linear classifier. A cell reads the outputs
/// of the two cells before it (s0, s1; the stem's for the first), preprocesses them to C
/// channels (ReLU, 1x1 convolution, batch norm; a factorized reduction for s0 after a
/// reduction cell), and computes `nodes` intermediate nodes, node i being the sum over
/// every earlier state j (s0, s1, nodes 0..i−1) of a mixed operation over the 8 primitives
///     none, max_pool_3x3, avg_pool_3x3, skip_connect, sep_conv_3x3, sep_conv_5x5,
///     dil_conv_3x3, dil_conv_5x5
/// (stride 2 on the edges from s0 and s1 of a reduction cell). Its output is the channel
/// concatenation of the intermediate nodes. As in DARTS's search code, the search network's
/// batch norms have no affine parameters, and a pooling candidate is followed by a batch norm.
///
/// The architecture α (the network's last input) is α_normal then α_reduce, each an
/// edges × 8 row-major matrix (14 × 8 for 4 nodes), shared by all cells of its type.
/// derive_genotype keeps for each node the two incoming edges whose strongest operation other
/// than `none` is strongest, and for each that operation, as DARTS's genotype() does; the
/// discrete network of a genotype (darts_network) has affine batch norms, as DARTS's
/// evaluation network (without its auxiliary head and drop path).
///
/// The operations are DARTS's (operations.py): sep_conv_k = (ReLU, depthwise k×k at the
/// stride, 1x1, BN, ReLU, depthwise k×k, 1x1, BN); dil_conv_k = (ReLU, depthwise k×k with
/// dilation 2 at the stride, 1x1, BN); skip_connect at stride 2 = (ReLU, factorized
/// reduction, BN); pooling 3x3 with padding 1 (average excluding the padding).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <numeric>
#include <optional>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "bilevel/learners/layers/batch_norm.hpp"
#include "bilevel/learners/layers/chain.hpp"
#include "bilevel/learners/layers/convolution.hpp"
#include "bilevel/learners/layers/factorized_reduce.hpp"
#include "bilevel/learners/layers/graph.hpp"
#include "bilevel/learners/layers/identity.hpp"
#include "bilevel/learners/layers/linear.hpp"
#include "bilevel/learners/layers/mixed_op.hpp"
#include "bilevel/learners/layers/nonlinearity.hpp"
#include "bilevel/learners/layers/pooling.hpp"

namespace bilevel::learners {

enum class darts_primitive {
  none, max_pool_3x3, avg_pool_3x3, skip_connect, sep_conv_3x3, sep_conv_5x5, dil_conv_3x3, dil_conv_5x5
};
/// DARTS's PRIMITIVES, in its order (the columns of α).
inline constexpr std::array<darts_primitive, 8> darts_primitives = {
    darts_primitive::none,         darts_primitive::max_pool_3x3, darts_primitive::avg_pool_3x3,
    darts_primitive::skip_connect, darts_primitive::sep_conv_3x3, darts_primitive::sep_conv_5x5,
    darts_primitive::dil_conv_3x3, darts_primitive::dil_conv_5x5};

[[nodiscard]] inline std::string_view name(darts_primitive p) {
  constexpr std::array<std::string_view, 8> names = {"none",         "max_pool_3x3", "avg_pool_3x3",
                                                     "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
                                                     "dil_conv_3x3", "dil_conv_5x5"};
  return names[std::size_t(p)];
}

/// The size of a DARTS space. The defaults are the CPU size for 28x28x1 images; DARTS's own
/// search uses 8 cells of 16 channels (the GPU size).
struct darts_space_options {
  geometry input{28, 28, 1};
  std::size_t classes = 10;
  std::size_t cells = 5;            ///< reduction cells at cells/3 and 2·cells/3
  std::size_t channels = 8;         ///< C of the first cells (doubled at each reduction)
  std::size_t nodes = 4;            ///< intermediate nodes per cell (DARTS's steps)
  std::size_t stem_multiplier = 3;  ///< the stem gives stem_multiplier · C channels
  /// The operations' nonlinearity: DARTS's ReLU. A smooth one (tanh) makes the network's
  /// every derivative smooth, as central-difference checks of a large network need (with
  /// thousands of ReLUs, some input is always within a difference step of its kink).
  activation nonlinearity = activation::relu;

  /// Edges of one cell: 2 + 3 + ... + (nodes + 1) (14 for 4 nodes).
  [[nodiscard]] std::size_t edges() const { return nodes * (nodes + 3) / 2; }
  /// Entries of α: α_normal then α_reduce, each edges × 8.
  [[nodiscard]] std::size_t arch_size() const { return 2 * edges() * darts_primitives.size(); }
  [[nodiscard]] bool is_reduction(std::size_t cell) const { return cell == cells / 3 || cell == 2 * cells / 3; }
  void validate() const {
    const std::string who = "bilevel::learners::darts_space_options: ";
    if (cells < 1 || channels < 1 || nodes < 1 || classes < 1 || stem_multiplier < 1)
      throw std::invalid_argument(who + "cells, channels, nodes, classes and stem_multiplier must be >= 1");
    if (input.height == 0 || input.width == 0 || input.channels == 0)
      throw std::invalid_argument(who + "empty input shape " + shape_text(input));
  }
};

/// A discrete DARTS cell pair: per intermediate node, two (operation, input state) pairs;
/// states 0 and 1 are the cell's inputs s0 and s1, state j + 2 is node j.
struct darts_genotype {
  std::vector<std::pair<darts_primitive, std::size_t>> normal, reduce;
  std::vector<std::size_t> normal_concat, reduce_concat;

  /// DARTS's notation, e.g. Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=[2, 3, 4, 5], ...).
  [[nodiscard]] std::string str() const {
    auto cell = [](const auto& ops) {
      std::string s = "[";
      for (std::size_t i = 0; i < ops.size(); ++i)
        s += (i ? ", ('" : "('") + std::string(name(ops[i].first)) + "', " + std::to_string(ops[i].second) + ")";
      return s + "]";
    };
    auto list = [](const std::vector<std::size_t>& v) {
      std::string s = "[";
      for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
      return s + "]";
    };
    return "Genotype(normal=" + cell(normal) + ", normal_concat=" + list(normal_concat) + ", reduce=" + cell(reduce) +
           ", reduce_concat=" + list(reduce_concat) + ")";
  }
  friend bool operator==(const darts_genotype&, const darts_genotype&) = default;
};

/// DARTS's genotype of α (α_normal then α_reduce, as the supernet reads it): per node, the
/// two incoming edges with the strongest operation other than `none` (softmax weights of
/// each edge; ties to the earlier edge), and on each that operation.
[[nodiscard]] inline darts_genotype derive_genotype(std::span<const double> alpha, const darts_space_options& o) {
  o.validate();
  if (alpha.size() != o.arch_size())
    throw std::invalid_argument("bilevel::learners::derive_genotype: α has " + std::to_string(alpha.size()) +
                                " entries, the space has " + std::to_string(o.arch_size()));
  constexpr std::size_t K = darts_primitives.size();
  auto parse = [&](std::size_t base) {
    std::vector<std::pair<darts_primitive, std::size_t>> gene;
    std::size_t start = 0;
    for (std::size_t i = 0; i < o.nodes; ++i) {
      const std::size_t n = i + 2;
      std::vector<std::array<double, K>> w(n);
      for (std::size_t j = 0; j < n; ++j) {  // the softmax of edge start + j
        const double* a = alpha.data() + base + (start + j) * K;
        const double mx = *std::max_element(a, a + K);
        double sum = 0;
        for (std::size_t k = 0; k < K; ++k) sum += (w[j][k] = std::exp(a[k] - mx));
        for (auto& e : w[j]) e /= sum;
      }
      auto strongest = [&](std::size_t j) {  // the best operation other than none
        std::size_t best = 1;
        for (std::size_t k = 2; k < K; ++k)
          if (w[j][k] > w[j][best]) best = k;
        return best;
      };
      std::vector<std::size_t> order(n);
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(),
                       [&](std::size_t a, std::size_t b) { return w[a][strongest(a)] > w[b][strongest(b)]; });
      for (std::size_t e = 0; e < std::min<std::size_t>(2, n); ++e)
        gene.emplace_back(darts_primitives[strongest(order[e])], order[e]);
      start += n;
    }
    return gene;
  };
  std::vector<std::size_t> concat(o.nodes);
  std::iota(concat.begin(), concat.end(), 2);
  return {parse(0), parse(o.edges() * K), concat, concat};
}

/// A genotype drawn uniformly from the space, the random-search baseline of architecture
/// search (Li and Talwalkar, 2019): per node of each cell type, two distinct input states
/// out of the node's predecessors and, for each, an operation other than `none`, all uniform.
/// The pairs of a node are listed by input state, as derive_genotype lists them.
template <class UniformRandomBitGenerator>
[[nodiscard]] darts_genotype random_genotype(const darts_space_options& o, UniformRandomBitGenerator& gen) {
  o.validate();
  std::uniform_int_distribution<std::size_t> op(1, darts_primitives.size() - 1);  // not none
  auto cell = [&] {
    std::vector<std::pair<darts_primitive, std::size_t>> gene;
    for (std::size_t i = 0; i < o.nodes; ++i) {
      const std::size_t n = i + 2;  // s0, s1 and the nodes before
      const std::size_t a = std::uniform_int_distribution<std::size_t>(0, n - 1)(gen);
      std::size_t b = std::uniform_int_distribution<std::size_t>(0, n - 2)(gen);
      if (b >= a) ++b;  // uniform over the states other than a
      const auto [first, second] = std::minmax(a, b);
      const auto op_first = darts_primitives[op(gen)], op_second = darts_primitives[op(gen)];
      gene.emplace_back(op_first, first);
      gene.emplace_back(op_second, second);
    }
    return gene;
  };
  std::vector<std::size_t> concat(o.nodes);
  std::iota(concat.begin(), concat.end(), 2);
  auto normal = cell();
  auto reduce = cell();
  return {std::move(normal), std::move(reduce), concat, concat};
}

/// An architecture α whose genotype (derive_genotype) is `g`: 1 for each chosen operation on
/// its edge, 0 everywhere else. For recording a discrete architecture where a searched α goes.
[[nodiscard]] inline std::vector<double> genotype_alpha(const darts_genotype& g, const darts_space_options& o) {
  o.validate();
  constexpr std::size_t K = darts_primitives.size();
  std::vector<double> alpha(o.arch_size(), 0.0);
  auto fill = [&](const std::vector<std::pair<darts_primitive, std::size_t>>& gene, std::size_t base,
                  const char* which) {
    if (gene.size() != 2 * o.nodes)
      throw std::invalid_argument(std::string("bilevel::learners::genotype_alpha: the ") + which + " cell has " +
                                  std::to_string(gene.size()) + " operations, the space's nodes need " +
                                  std::to_string(2 * o.nodes));
    std::size_t start = 0;
    for (std::size_t i = 0; i < o.nodes; ++i) {
      for (std::size_t e = 0; e < 2; ++e) {
        const auto [op, state] = gene[2 * i + e];
        if (state >= i + 2 || op == darts_primitive::none)
          throw std::invalid_argument(std::string("bilevel::learners::genotype_alpha: the ") + which +
                                      " cell's node " + std::to_string(i) + " reads state " + std::to_string(state) +
                                      " with " + std::string(name(op)) + ": states below " + std::to_string(i + 2) +
                                      " and an operation other than none are allowed");
        alpha[base + (start + state) * K + std::size_t(op)] = 1.0;
      }
      start += i + 2;
    }
  };
  fill(g.normal, 0, "normal");
  fill(g.reduce, o.edges() * K, "reduction");
  return alpha;
}

namespace detail {

/// Batch normalization's options in the DARTS code: affine in the evaluation network, not in
/// the search network.
template <nn_tensor_policy P>
any_layer<P> relu_conv_bn(geometry in, std::size_t channels, bool affine, activation act) {
  const convolution<P> conv(in, conv_options{.channels = channels, .kernel = 1, .bias = false});
  return chain<P>({nonlinearity<P>(in, act), conv, batch_norm<P>(conv.output_shape(), affine)});
}
template <nn_tensor_policy P>
any_layer<P> reduce_block(geometry in, std::size_t channels, bool affine, activation act) {
  const factorized_reduce<P> fr(in, channels);
  return chain<P>({nonlinearity<P>(in, act), fr, batch_norm<P>(fr.output_shape(), affine)});
}
/// ReLU, depthwise k×k (stride, dilation), 1x1 to `channels`, BN.
template <nn_tensor_policy P>
std::vector<any_layer<P>> relu_dw_pw_bn(geometry in, std::size_t channels, std::size_t k, std::size_t stride,
                                        std::size_t dilation, bool affine, activation act) {
  const convolution<P> dw(in, conv_options{.channels = in.channels,
                                           .kernel = k,
                                           .stride = stride,
                                           .padding = dilation * (k - 1) / 2,
                                           .dilation = dilation,
                                           .groups = in.channels,
                                           .bias = false});
  const linear<P> pw(dw.output_shape(), channels, false);
  return {nonlinearity<P>(in, act), dw, pw, batch_norm<P>(pw.output_shape(), affine)};
}

}  // namespace detail

/// One DARTS operation on C = in.channels channels at a stride (1, or 2 in a reduction); `act`
/// is the nonlinearity where DARTS has a ReLU.
template <nn_tensor_policy P>
any_layer<P> darts_operation(darts_primitive op, geometry in, std::size_t stride, bool affine,
                             activation act = activation::relu) {
  switch (op) {
    case darts_primitive::none: return zero_layer<P>(in, stride);
    case darts_primitive::max_pool_3x3: return pool<P>(in, pooling::max, 3, stride, 1);
    case darts_primitive::avg_pool_3x3: return pool<P>(in, pooling::average, 3, stride, 1);
    case darts_primitive::skip_connect:
      return stride == 1 ? any_layer<P>(identity_layer<P>(in)) : detail::reduce_block<P>(in, in.channels, affine, act);
    case darts_primitive::sep_conv_3x3:
    case darts_primitive::sep_conv_5x5: {
      const std::size_t k = op == darts_primitive::sep_conv_3x3 ? 3 : 5;
      auto parts = detail::relu_dw_pw_bn<P>(in, in.channels, k, stride, 1, affine, act);
      auto second = detail::relu_dw_pw_bn<P>(parts.back().output_shape(), in.channels, k, 1, 1, affine, act);
      parts.insert(parts.end(), second.begin(), second.end());
      return chain<P>(std::move(parts));
    }
    case darts_primitive::dil_conv_3x3:
    case darts_primitive::dil_conv_5x5:
      return chain<P>(
          detail::relu_dw_pw_bn<P>(in, in.channels, op == darts_primitive::dil_conv_3x3 ? 3 : 5, stride, 2, affine, act));
  }
  throw std::invalid_argument("bilevel::learners::darts_operation: unknown operation");
}

namespace detail {

/// The cells of a DARTS network, added to a graph after its stem. `edge(i, from, shape,
/// stride, reduction, edge_index)` makes the layers of node i's edge from state `from`
/// (returns false to leave the edge out); `concat` lists the states whose channels the
/// cell's output concatenates.
template <nn_tensor_policy P, class Edges>
void add_cells(graph<P>& g, std::size_t stem, const darts_space_options& o, bool affine, Edges edges) {
  std::size_t s0 = stem, s1 = stem;
  bool reduction_prev = false;
  std::size_t C = o.channels;
  for (std::size_t cell = 0; cell < o.cells; ++cell) {
    const bool reduction = o.is_reduction(cell);
    if (reduction) C *= 2;
    const std::size_t p0 = g.add(s0, reduction_prev ? reduce_block<P>(g.shape(s0), C, affine, o.nonlinearity)
                                                    : relu_conv_bn<P>(g.shape(s0), C, affine, o.nonlinearity));
    const std::size_t p1 = g.add(s1, relu_conv_bn<P>(g.shape(s1), C, affine, o.nonlinearity));
    std::vector<std::size_t> states = {p0, p1};
    std::size_t edge = 0;
    for (std::size_t i = 0; i < o.nodes; ++i) {
      std::vector<typename graph<P>::edge> in;
      for (std::size_t j = 0; j < states.size(); ++j, ++edge) {
        const std::size_t stride = reduction && j < 2 ? 2 : 1;
        if (auto layer = edges(reduction, i, j, g.shape(states[j]), stride, edge))
          in.push_back({states[j], std::move(*layer)});
      }
      states.push_back(g.sum(std::move(in)));
    }
    std::vector<std::size_t> out;
    for (std::size_t s : edges.concat(reduction, states)) out.push_back(s);
    s0 = s1;
    s1 = g.concat(std::move(out));
    reduction_prev = reduction;
  }
}

template <nn_tensor_policy P>
std::size_t add_stem(graph<P>& g, const darts_space_options& o) {
  const convolution<P> conv(
      o.input, conv_options{.channels = o.stem_multiplier * o.channels, .kernel = 3, .padding = 1, .bias = false});
  return g.add(g.input(), chain<P>({conv, batch_norm<P>(conv.output_shape(), true)}));
}

template <nn_tensor_policy P>
std::vector<any_layer<P>> with_head(graph<P> body, std::size_t classes) {
  const geometry out = body.output_shape();
  return {std::move(body), global_avg_pool<P>(out), linear<P>({1, 1, out.channels}, classes)};
}

}  // namespace detail

/// The DARTS supernet's layers (stem and cells as one graph, then global pooling and the
/// linear classifier), for `sequential<P, Weighting>(o.input, darts_supernet<P>(o), ...)`.
template <nn_tensor_policy P>
std::vector<any_layer<P>> darts_supernet(const darts_space_options& o) {
  o.validate();
  constexpr std::size_t K = darts_primitives.size();
  graph<P> g(o.input);
  const std::size_t stem = detail::add_stem(g, o);
  struct mixed_edges {
    const darts_space_options& o;
    std::optional<any_layer<P>> operator()(bool reduction, std::size_t, std::size_t, geometry in, std::size_t stride,
                                           std::size_t edge) const {
      std::vector<any_layer<P>> ops;
      for (darts_primitive p : darts_primitives) {
        any_layer<P> op = darts_operation<P>(p, in, stride, false, o.nonlinearity);
        if (p == darts_primitive::max_pool_3x3 || p == darts_primitive::avg_pool_3x3) {
          const geometry out = op.output_shape();
          op = chain<P>({std::move(op), batch_norm<P>(out, false)});
        }
        ops.push_back(std::move(op));
      }
      return mixed_op<P>(std::move(ops), ((reduction ? o.edges() : 0) + edge) * K);
    }
    std::vector<std::size_t> concat(bool, const std::vector<std::size_t>& states) const {
      return std::vector<std::size_t>(states.end() - std::ptrdiff_t(o.nodes), states.end());
    }
  };
  detail::add_cells(g, stem, o, false, mixed_edges{o});
  return detail::with_head(std::move(g), o.classes);
}

/// The discrete network of a genotype (affine batch norms), for retraining.
template <nn_tensor_policy P>
std::vector<any_layer<P>> darts_network(const darts_genotype& genotype, const darts_space_options& o) {
  o.validate();
  for (const auto* cell : {&genotype.normal, &genotype.reduce}) {
    if (cell->size() != 2 * o.nodes)
      throw std::invalid_argument("bilevel::learners::darts_network: a cell of the genotype has " +
                                  std::to_string(cell->size()) + " operations, " + std::to_string(o.nodes) +
                                  " nodes need " + std::to_string(2 * o.nodes));
    for (std::size_t e = 0; e < cell->size(); ++e)
      if ((*cell)[e].second >= e / 2 + 2)
        throw std::invalid_argument("bilevel::learners::darts_network: operation " + std::to_string(e) +
                                    " of the genotype reads state " + std::to_string((*cell)[e].second) +
                                    ", node " + std::to_string(e / 2) + " can read states 0-" +
                                    std::to_string(e / 2 + 1));
  }
  graph<P> g(o.input);
  const std::size_t stem = detail::add_stem(g, o);
  struct chosen_edges {
    const darts_genotype& gt;
    const darts_space_options& space;
    std::optional<any_layer<P>> operator()(bool reduction, std::size_t node, std::size_t from, geometry in,
                                           std::size_t stride, std::size_t) const {
      const auto& cell = reduction ? gt.reduce : gt.normal;
      std::optional<any_layer<P>> layer;
      for (std::size_t e = 2 * node; e < 2 * node + 2; ++e)
        if (cell[e].second == from) {
          auto op = darts_operation<P>(cell[e].first, in, stride, true, space.nonlinearity);
          // the same input chosen twice (DARTS allows it): the two operations summed
          layer = layer ? any_layer<P>(sum_of(std::move(*layer), std::move(op))) : std::move(op);
        }
      return layer;
    }
    std::vector<std::size_t> concat(bool reduction, const std::vector<std::size_t>& states) const {
      std::vector<std::size_t> out;
      for (std::size_t s : reduction ? gt.reduce_concat : gt.normal_concat) out.push_back(states.at(s));
      return out;
    }
    static graph<P> sum_of(any_layer<P> a, any_layer<P> b) {
      graph<P> g(a.input_shape());
      g.sum({{0, std::move(a)}, {0, std::move(b)}});
      return g;
    }
  };
  detail::add_cells(g, stem, o, true, chosen_edges{genotype, o});
  return detail::with_head(std::move(g), o.classes);
}

}  // namespace bilevel::learners
