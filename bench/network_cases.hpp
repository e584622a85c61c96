// SPDX-License-Identifier: MIT
#pragma once
// The cases of the papers' networks benchmark, written once against the tensor policy concept:
// bench/networks.cpp runs them on the Eigen policy (against PyTorch on the CPU,
// bench/compare/networks.sh) and bench/gpu/networks_gpu.cu on the CUDA policy (against
// PyTorch on the same GPU). The cases, the command line and the random data:
//
//   --case resnet20-grad|resnet20-hvp|darts-grad|darts-step [--warmup N] [--timed N] [--seed S]
//   [--batch B]   (B: 128 for ResNet-20, 64 for DARTS unless given)
//
// resnet20-grad  ResNet-20 (learners::resnet defaults: option A, 16 channels, 28x28x1, 10
//                classes): one net.gradient() (value pass, loss, backward pass).
// resnet20-hvp   the same, then net.hvp() at the same point along a fixed random v (the HVP
//                reuses the value and backward passes the gradient cached: it adds the two
//                tangent passes).
// darts-grad     the DARTS supernet (darts_space_options defaults: 5 cells of 8 channels, 4
//                nodes, stem multiplier 3, 28x28x1, 10 classes): one net.gradient() with
//                respect to the weights at a given α (the backward pass also gives ∂L/∂α).
// darts-step     methods::darts (second order, hypergrad::finite_difference, defaults: SGD lr
//                0.025, momentum 0.9, weight decay 3e-4; Adam on α), training and validation
//                batches of the same size: one solver.iterate(), which is
//                  α's step: the virtual step w' = w − η(μm + ∇_w L_train(w, α) + wd·w) on the
//                    training batch the weights' real step then takes (1 gradient); ∇_α L_val(w',
//                    α) and ∇_w' L_val (1 value + backward pass gives both); the mixed product by
//                    central differences ∇_α L_train(w ± εv, α), ε = 0.01/‖v‖ (2 gradients);
//                    the hypergradient and Adam's step on α;
//                  the weights' step: ∇_w L_train(w, α_new) on that training batch (1 gradient),
//                    the batch norms' running statistics, SGD's step.
//                Five value + backward passes of the supernet in all.
//
// Gradient cases alternate between two parameter vectors, so that the network's cache of the
// last point (sequential.hpp) never serves a repetition.
#include <bilevel/learners/networks/network_design.hpp>
#include <bilevel/methods/darts.hpp>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <functional>
#include <memory>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace network_bench {
using namespace bilevel;
using namespace bilevel::learners;


struct options {
  std::string which;
  std::size_t warmup = 2, timed = 10;
  unsigned seed = 1;
  std::size_t batch = 0;  ///< 0: the case's own (128 for ResNet-20, 64 for DARTS)
};

inline options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
      return argv[++i];
    };
    if (a == "--case") o.which = next();
    else if (a == "--warmup") o.warmup = std::stoul(next());
    else if (a == "--timed") o.timed = std::stoul(next());
    else if (a == "--seed") o.seed = unsigned(std::stoul(next()));
    else if (a == "--batch") o.batch = std::stoul(next());
    else throw std::invalid_argument("unknown argument " + a);
  }
  if (o.which != "resnet20-grad" && o.which != "resnet20-hvp" && o.which != "darts-grad" && o.which != "darts-step")
    throw std::invalid_argument("--case must be resnet20-grad, resnet20-hvp, darts-grad or darts-step");
  if (o.timed == 0) throw std::invalid_argument("--timed must be >= 1");
  return o;
}

inline void reset_rss_peak() { std::ofstream("/proc/self/clear_refs") << "5"; }
inline double status_mb(const std::string& field) {  // VmRSS / VmHWM of /proc/self/status (kB there)
  std::ifstream f("/proc/self/status");
  for (std::string line; std::getline(f, line);)
    if (line.rfind(field + ":", 0) == 0) return std::stod(line.substr(field.size() + 1)) / 1024.0;
  return -1.0;
}

inline double percentile(std::vector<double> v, double q) {  // linear interpolation, as numpy's default
  std::sort(v.begin(), v.end());
  const double at = q * double(v.size() - 1);
  const auto lo = std::size_t(at);
  const std::size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (at - double(lo)) * (v[hi] - v[lo]);
}

/// Random 28x28x1 images (uniform pixels) and uniform labels over 10 classes.
inline std::shared_ptr<data::dataset> random_images(std::size_t rows, std::uint64_t seed) {
  auto d = std::make_shared<data::dataset>();
  d->rows = rows;
  d->cols = 784;
  d->num_classes = 10;
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<float> pixel(0.f, 1.f);
  std::uniform_int_distribution<int> label(0, 9);
  d->features.resize(rows * 784);
  for (auto& x : d->features) x = pixel(gen);
  for (std::size_t r = 0; r < rows; ++r) d->labels.push_back(label(gen));
  d->ids.resize(rows);
  std::iota(d->ids.begin(), d->ids.end(), std::size_t(0));
  return d;
}

template <class P>
classification_batch<P> first_rows(const data::dataset& d, std::size_t n) {
  std::vector<std::size_t> rows(n);
  std::iota(rows.begin(), rows.end(), std::size_t(0));
  return make_batch<P>(d, rows);
}

template <class P>
typename P::vector random_vector(std::size_t n, std::uint64_t seed, float scale) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<float> normal;
  std::vector<float> h(n);
  for (auto& x : h) x = scale * normal(gen);
  return P::from_host(h);
}

/// One case, set up: `work(t)` runs repetition t. It keeps what `work` refers to, so it stays
/// where it was made (make it with std::make_unique).
template <class P>
struct bench_case {
  std::size_t params = 0, arch_params = 0, batch = 0;
  std::string contents;
  std::function<void(std::size_t)> work;

  std::unique_ptr<sequential<P>> net;
  typename P::vector theta[2], alpha, v, g, hv;
  std::vector<const typename P::vector*> arch_in;
  classification_batch<P> b;
  std::shared_ptr<data::dataset> train, val;
  std::function<void()> iterate;
  std::string which;

  explicit bench_case(const options& o) : which(o.which) {
    if (o.which == "resnet20-grad" || o.which == "resnet20-hvp") {
      const resnet_options ro{};  // ResNet-20, option A, 16 channels, 28x28x1, 10 classes
      net = std::make_unique<sequential<P>>(ro.input, resnet<P>(ro));
      batch = o.batch ? o.batch : 128;
      train = random_images(batch, o.seed + 100);
      b = first_rows<P>(*train, batch);
      theta[0] = net->initial_parameters(o.seed);
      theta[1] = net->initial_parameters(o.seed + 1);
      params = net->num_parameters();
      if (o.which == "resnet20-grad") {
        contents = "net.gradient(theta, {}, batch, g): value pass, loss, backward pass";
        work = [&](std::size_t t) { net->gradient(theta[t % 2], {}, b, g); };
      } else {
        v = random_vector<P>(params, o.seed + 7, 1.f);
        contents = "net.gradient(theta, {}, batch, g) then net.hvp(theta, {}, batch, v, hv) at the same point (the HVP "
                   "reuses the cached value and backward passes: two tangent passes)";
        work = [&](std::size_t t) {
          net->gradient(theta[t % 2], {}, b, g);
          net->hvp(theta[t % 2], {}, b, v, hv);
        };
      }
    } else if (o.which == "darts-grad") {
      const darts_space_options so{};  // 5 cells of 8 channels, 4 nodes, stem multiplier 3, 28x28x1, 10 classes
      net = std::make_unique<sequential<P>>(so.input, darts_supernet<P>(so));
      batch = o.batch ? o.batch : 64;
      train = random_images(batch, o.seed + 100);
      b = first_rows<P>(*train, batch);
      theta[0] = net->initial_parameters(o.seed);
      theta[1] = net->initial_parameters(o.seed + 1);
      alpha = random_vector<P>(net->arch_size(), o.seed + 3, 1e-3f);
      arch_in = {&alpha};
      params = net->num_parameters();
      arch_params = net->arch_size();
      contents = "net.gradient(w, {alpha}, batch, g): value pass, loss, backward pass (which also gives dL/dalpha)";
      work = [&](std::size_t t) { net->gradient(theta[t % 2], arch_in, b, g); };
    } else {
      const darts_space_options so{};
      batch = o.batch ? o.batch : 64;
      // 8 batches of each: the samplers draw without (training) and with (validation) replacement.
      train = random_images(8 * batch, o.seed + 100);
      val = random_images(8 * batch, o.seed + 200);
      methods::darts_config cfg{};  // batches of 64, SGD 0.025 / 0.9 / 3e-4, Adam 3e-4 (0.5, 0.999) wd 1e-3
      cfg.seed = o.seed;
      cfg.batch = cfg.validation_batch = batch;
      auto s = std::make_shared<decltype(methods::darts<P>(darts_supernet_design{so}, train, val, cfg))>(
          methods::darts<P>(darts_supernet_design{so}, train, val, cfg));
      params = P::size(s->weights().theta);
      arch_params = P::size(s->architecture().theta);
      contents = "solver.iterate() of methods::darts (second order): alpha's step (virtual SGD step with momentum and "
                 "weight decay on the next training batch, the validation gradient at w' for alpha and w', central "
                 "differences of grad_alpha L_train at w +- eps v, Adam) then the weights' step (gradient at the new "
                 "alpha, running statistics, SGD): 5 value + backward passes";
      iterate = [s] { s->iterate(); };
      work = [&](std::size_t) { iterate(); };
    }
  }
  bench_case(const bench_case&) = delete;
  bench_case& operator=(const bench_case&) = delete;

  /// The norm of what the last repetition computed (the gradient, or the HVP), printed so that
  /// a run that computes nothing shows; 0 for a solver step.
  [[nodiscard]] double check_norm() const {
    return which == "darts-step" ? 0.0 : double(P::norm(which == "resnet20-hvp" ? hv : g));
  }
};

}  // namespace network_bench
