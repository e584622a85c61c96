// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// graph<P>: a directed acyclic graph of layers, itself a layer. Node 0 is the graph's
/// input; every later node is either
///   - the sum of edges, each edge a layer (a chain, a mixed operation, another graph, ...)
///     applied to an earlier node: residual blocks and the nodes of a DARTS cell; or
///   - the channel concatenation of earlier nodes of the same height and width: a DARTS
///     cell's output.
/// The last node added is the graph's output. A node that feeds no later node (a DARTS
/// cell's input that its genotype does not read) is still computed, as in the DARTS code,
/// and its edges' gradient is zero. Edges' parameters follow one another in θ in the order
/// the edges were added.
///
/// The passes visit the nodes in order (value, tangent) or in reverse (backward and its
/// tangent), accumulating each node's adjoint from the edges and concatenations that read it.
#include <algorithm>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "bilevel/learners/layers/chain.hpp"

namespace bilevel::learners {

template <nn_tensor_policy P>
class graph {
 public:
  using matrix = typename P::matrix;
  using vector = vector_t<P>;
  using scalar = scalar_t<P>;
  using node_id = std::size_t;
  /// One term of a sum node: `layer` applied to node `from`.
  struct edge {
    node_id from;
    any_layer<P> layer;
  };
  struct cache {
    std::vector<matrix> acts;                  ///< each node's value (node 0 and the output: unused)
    std::vector<std::vector<std::any>> edges;  ///< each edge's cache, by node
    std::vector<matrix> g, g_dot;              ///< each node's adjoint and its tangent
    std::vector<matrix> dots;                  ///< each node's tangent
    std::vector<char> has_adjoint;
    matrix scratch, gx_part;
  };

  explicit graph(geometry input) { nodes_.push_back({node_kind::input, {}, {}, {}, input}); }

  [[nodiscard]] static constexpr node_id input() { return 0; }
  /// A node that is `layer` applied to node `from`.
  node_id add(node_id from, any_layer<P> layer) {
    std::vector<edge> one;
    one.push_back({from, std::move(layer)});
    return sum(std::move(one));
  }
  /// A node that is the sum of the edges (at least one; all of one output shape).
  node_id sum(std::vector<edge> edges) {
    if (edges.empty()) throw std::invalid_argument("bilevel::learners::graph: a sum node needs at least one edge");
    const geometry shape = edges.front().layer.output_shape();
    for (const auto& e : edges) {
      require_node(e.from, "an edge");
      if (!(e.layer.input_shape() == nodes_[e.from].shape))
        throw std::invalid_argument("bilevel::learners::graph: an edge from node " + std::to_string(e.from) + " takes " +
                                    shape_text(e.layer.input_shape()) + " but the node is " +
                                    shape_text(nodes_[e.from].shape));
      if (!(e.layer.output_shape() == shape))
        throw std::invalid_argument("bilevel::learners::graph: the edges of a sum give " + shape_text(shape) + " and " +
                                    shape_text(e.layer.output_shape()));
    }
    node n{node_kind::sum, {}, {}, {}, shape};  // all checked: nothing changes when an edge is refused
    for (auto& e : edges) {
      n.offsets.push_back(num_parameters_);
      num_parameters_ += e.layer.num_parameters();
      arch_size_ = std::max(arch_size_, e.layer.arch_size());
      n.edges.push_back(std::move(e));
    }
    nodes_.push_back(std::move(n));
    return nodes_.size() - 1;
  }
  /// A node that is the nodes' channels side by side (all of one height and width).
  node_id concat(std::vector<node_id> sources) {
    if (sources.empty()) throw std::invalid_argument("bilevel::learners::graph: a concatenation needs a node");
    geometry shape = nodes_.at(require_node(sources.front(), "a concatenation")).shape;
    shape.channels = 0;
    for (node_id s : sources) {
      const geometry& g = nodes_[require_node(s, "a concatenation")].shape;
      if (g.height != shape.height || g.width != shape.width)
        throw std::invalid_argument("bilevel::learners::graph: a concatenation of " + shape_text(g) + " with " +
                                    std::to_string(shape.height) + "x" + std::to_string(shape.width) + " nodes");
      shape.channels += g.channels;
    }
    nodes_.push_back({node_kind::concat, {}, {}, std::move(sources), shape});
    return nodes_.size() - 1;
  }
  [[nodiscard]] geometry shape(node_id n) const { return nodes_.at(n).shape; }
  [[nodiscard]] std::size_t num_nodes() const { return nodes_.size(); }
  /// The edges into node n (empty for the input and concatenations).
  [[nodiscard]] const std::vector<edge>& edges(node_id n) const { return nodes_.at(n).edges; }
  [[nodiscard]] std::size_t edge_offset(node_id n, std::size_t e) const { return nodes_.at(n).offsets.at(e); }

  [[nodiscard]] geometry input_shape() const { return nodes_.front().shape; }
  [[nodiscard]] geometry output_shape() const { return nodes_.back().shape; }
  [[nodiscard]] std::size_t num_parameters() const { return num_parameters_; }
  [[nodiscard]] std::size_t arch_size() const { return arch_size_; }

  void initialize(std::span<scalar> params, std::mt19937_64& gen) const {
    for (const auto& n : nodes_)
      for (std::size_t e = 0; e < n.edges.size(); ++e)
        n.edges[e].layer.initialize(params.subspan(n.offsets[e], n.edges[e].layer.num_parameters()), gen);
  }

  void forward(const pass_context<P>& p, const matrix& x, matrix& y, cache& c) const {
    if (nodes_.size() < 2) throw std::invalid_argument("bilevel::learners::graph: no nodes besides the input");
    const std::size_t N = nodes_.size();
    c.acts.resize(N);
    c.edges.resize(N);
    for (std::size_t k = 1; k < N; ++k) {
      const node& n = nodes_[k];
      matrix& out = k + 1 == N ? y : c.acts[k];
      if (n.kind == node_kind::concat) {
        out = P::matrix_zeros(p.batch * n.shape.pixels(), n.shape.channels);
        std::size_t at = 0;
        for (node_id s : n.sources) {
          P::set_columns(value(s, x, c), out, at);
          at += nodes_[s].shape.channels;
        }
        continue;
      }
      c.edges[k].resize(n.edges.size());
      for (std::size_t e = 0; e < n.edges.size(); ++e) {
        matrix& target = e == 0 ? out : c.scratch;
        n.edges[e].layer.forward(p.shifted(n.offsets[e]), value(n.edges[e].from, x, c), target, c.edges[k][e]);
        if (e > 0) P::axpy(scalar(1), c.scratch, out);
      }
    }
  }

  void backward(const pass_context<P>& p, const matrix& x, const matrix& g, cache& c, matrix* gx,
                vector& grad) const {
    const std::size_t N = nodes_.size();
    c.g.resize(N);
    c.has_adjoint.assign(N, 0);
    for (std::size_t k = N; k-- > 1;) {
      const node& n = nodes_[k];
      if (k + 1 < N && !c.has_adjoint[k]) {  // read by no later node
        for (std::size_t e = 0; e < n.edges.size(); ++e) zero_segment(grad, p.offset + n.offsets[e], n.edges[e]);
        continue;
      }
      const matrix& gk = k + 1 == N ? g : c.g[k];
      if (n.kind == node_kind::concat) {
        std::size_t at = 0;
        for (node_id s : n.sources) {
          const std::size_t ch = nodes_[s].shape.channels;
          if (s != 0 || gx) {
            P::columns(gk, at, ch, c.gx_part);
            accumulate(c.g, c.has_adjoint, s, c.gx_part);
          }
          at += ch;
        }
        if (!p.keep_adjoints && k + 1 < N) c.g[k] = matrix{};
        continue;
      }
      for (std::size_t e = 0; e < n.edges.size(); ++e) {
        const node_id s = n.edges[e].from;
        const bool want = s != 0 || gx;
        n.edges[e].layer.backward(p.shifted(n.offsets[e]), value(s, x, c), gk, c.edges[k][e],
                                  want ? &c.gx_part : nullptr, grad);
        if (want) accumulate(c.g, c.has_adjoint, s, c.gx_part);
      }
      if (!p.keep_adjoints && k + 1 < N) c.g[k] = matrix{};  // every reader has added to it: released
    }
    if (gx) {
      if (!c.has_adjoint[0]) *gx = P::matrix_zeros(P::rows(x), P::cols(x));
      else if (p.keep_adjoints) *gx = c.g[0];
      else *gx = std::move(c.g[0]);  // released: handed over instead of copied
    }
    if (!p.keep_adjoints) c.g[0] = matrix{}, c.gx_part = matrix{};
  }

  void tangent_forward(const tangent_context<P>& t, const matrix& x, const matrix* x_dot, cache& c,
                       matrix& y_dot) const {
    const std::size_t N = nodes_.size();
    c.dots.resize(N);
    for (std::size_t k = 1; k < N; ++k) {
      const node& n = nodes_[k];
      matrix& out = k + 1 == N ? y_dot : c.dots[k];
      if (n.kind == node_kind::concat) {
        out = P::matrix_zeros(t.batch * n.shape.pixels(), n.shape.channels);
        std::size_t at = 0;
        for (node_id s : n.sources) {
          if (const matrix* d = tangent(s, x_dot, c)) P::set_columns(*d, out, at);
          at += nodes_[s].shape.channels;
        }
        continue;
      }
      for (std::size_t e = 0; e < n.edges.size(); ++e) {
        const node_id s = n.edges[e].from;
        matrix& target = e == 0 ? out : c.scratch;
        n.edges[e].layer.tangent_forward(t.shifted(n.offsets[e]), value(s, x, c), tangent(s, x_dot, c), c.edges[k][e],
                                         target);
        if (e > 0) P::axpy(scalar(1), c.scratch, out);
      }
    }
  }

  void tangent_backward(const tangent_context<P>& t, const matrix& x, const matrix* x_dot, const matrix& g,
                        const matrix& g_dot, cache& c, matrix* gx_dot, vector& grad_dot) const {
    const std::size_t N = nodes_.size();
    c.g_dot.resize(N);
    std::vector<char> has(N, 0);
    for (std::size_t k = N; k-- > 1;) {
      const node& n = nodes_[k];
      if (k + 1 < N && !c.has_adjoint[k]) {
        for (std::size_t e = 0; e < n.edges.size(); ++e) zero_segment(grad_dot, t.offset + n.offsets[e], n.edges[e]);
        continue;
      }
      const matrix& gk = k + 1 == N ? g : c.g[k];
      const matrix& gdk = k + 1 == N ? g_dot : c.g_dot[k];
      if (n.kind == node_kind::concat) {
        std::size_t at = 0;
        for (node_id s : n.sources) {
          const std::size_t ch = nodes_[s].shape.channels;
          if (s != 0 || gx_dot) {
            P::columns(gdk, at, ch, c.gx_part);
            accumulate(c.g_dot, has, s, c.gx_part);
          }
          at += ch;
        }
        continue;
      }
      for (std::size_t e = 0; e < n.edges.size(); ++e) {
        const node_id s = n.edges[e].from;
        const bool want = s != 0 || gx_dot;
        n.edges[e].layer.tangent_backward(t.shifted(n.offsets[e]), value(s, x, c), tangent(s, x_dot, c), gk, gdk,
                                          c.edges[k][e], want ? &c.gx_part : nullptr, grad_dot);
        if (want) accumulate(c.g_dot, has, s, c.gx_part);
      }
    }
    if (gx_dot) *gx_dot = has[0] ? c.g_dot[0] : P::matrix_zeros(P::rows(x), P::cols(x));
  }

  void commit(const pass_context<P>& p, const cache& c) {
    if (c.edges.size() != nodes_.size()) return;  // no value pass yet
    for (std::size_t k = 1; k < nodes_.size(); ++k)
      for (std::size_t e = 0; e < nodes_[k].edges.size(); ++e)
        nodes_[k].edges[e].layer.commit(p.shifted(nodes_[k].offsets[e]), c.edges[k][e]);
  }
  [[nodiscard]] bool keeps_state() const {
    for (const auto& n : nodes_)
      for (const auto& e : n.edges)
        if (e.layer.keeps_state()) return true;
    return false;
  }
  [[nodiscard]] std::vector<double> state() const {
    return detail::joined_state([&](auto f) {
      for (const auto& n : nodes_)
        for (const auto& e : n.edges) f(e.layer);
    });
  }
  void restore(std::span<const double> s) {
    detail::restore_joined(
        [&](auto f) {
          for (auto& n : nodes_)
            for (auto& e : n.edges) f(e.layer);
        },
        s, "bilevel::learners::graph");
  }

 private:
  enum class node_kind { input, sum, concat };
  struct node {
    node_kind kind;
    std::vector<edge> edges;           ///< sum: its terms
    std::vector<std::size_t> offsets;  ///< sum: each edge's first parameter
    std::vector<node_id> sources;      ///< concat: its parts, in channel order
    geometry shape;
  };

  node_id require_node(node_id n, const char* what) const {
    if (n >= nodes_.size())
      throw std::invalid_argument(std::string("bilevel::learners::graph: ") + what + " reads node " +
                                  std::to_string(n) + ", but only nodes 0-" + std::to_string(nodes_.size() - 1) +
                                  " exist so far");
    return n;
  }
  static void zero_segment(vector& grad, std::size_t offset, const edge& e) {
    if (const std::size_t n = e.layer.num_parameters()) P::set_segment(P::zeros(n), grad, offset);
  }
  static const matrix& value(node_id s, const matrix& x, const cache& c) { return s == 0 ? x : c.acts[s]; }
  static const matrix* tangent(node_id s, const matrix* x_dot, const cache& c) { return s == 0 ? x_dot : &c.dots[s]; }
  static void accumulate(std::vector<matrix>& into, std::vector<char>& has, node_id s, matrix& part) {
    if (has[s]) {
      P::axpy(scalar(1), part, into[s]);
    } else {
      std::swap(into[s], part);
      has[s] = 1;
    }
  }

  std::vector<node> nodes_;
  std::size_t num_parameters_ = 0, arch_size_ = 0;
};

}  // namespace bilevel::learners
