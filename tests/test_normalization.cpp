// SPDX-License-Identifier: MIT
// Batch normalization and dropout, layers of the open layer concept: their passes against a
// host loop and central differences (alone, and inside networks whose every exact product is
// checked), the running statistics (changed by real steps only, also under a solver whose
// look-ahead evaluates the network many times), their checkpoint state, dropout's masks, and
// the errors.
#include <doctest/doctest.h>

#include <cmath>
#include <cstddef>
#include <filesystem>
#include <memory>
#include <span>
#include <stdexcept>
#include <vector>

#include <bilevel/core/level.hpp>
#include <bilevel/core/solver.hpp>
#include <bilevel/hypergrad/first_order.hpp>
#include <bilevel/hypergrad/unrolled.hpp>
#include <bilevel/learners/layers/batch_norm.hpp>
#include <bilevel/learners/layers/chain.hpp>
#include <bilevel/learners/layers/dropout.hpp>
#include <bilevel/learners/layers/identity.hpp>
#include <bilevel/learners/layers/linear.hpp>
#include <bilevel/learners/layers/nonlinearity.hpp>
#include <bilevel/learners/sequential.hpp>
#include <bilevel/learners/solution_loss.hpp>
#include <bilevel/optim/sgd.hpp>

#include "batches.hpp"
#include "derivative_checks.hpp"
#include "policies.hpp"
#include "toy_data.hpp"

namespace normalization_test {
using bilevel::learners::activation;
using bilevel::learners::any_layer;
using bilevel::learners::batch_norm;
using bilevel::learners::dropout;
using bilevel::learners::geometry;
using bilevel::learners::linear;
using bilevel::learners::loss_kind;
using bilevel::learners::nonlinearity;
using bilevel::learners::pass_context;
using bilevel::learners::pass_mode;
using bilevel::learners::sample_weights;
using bilevel::learners::sequential;
using bilevel::learners::tangent_context;

template <class P>
typename P::matrix matrix_of(const std::vector<double>& h, std::size_t rows, std::size_t cols) {
  const std::vector<bilevel::scalar_t<P>> s(h.begin(), h.end());
  return P::matrix_from_host(rows, cols, s);
}
template <class P>
std::vector<double> host_matrix(const typename P::matrix& m) {
  const auto h = P::matrix_to_host(m);
  return {h.begin(), h.end()};
}
template <class P>
pass_context<P> pass_at(const bilevel::vector_t<P>& theta, std::size_t batch, pass_mode mode, std::uint64_t step = 0) {
  return {theta, 0, batch, mode, step, nullptr, 0, nullptr};
}

/// Per channel of a rows × C row-major matrix: the mean and the biased variance.
inline void host_moments(const std::vector<double>& x, std::size_t rows, std::size_t C, std::vector<double>& mean,
                         std::vector<double>& var) {
  mean.assign(C, 0.0);
  var.assign(C, 0.0);
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t c = 0; c < C; ++c) mean[c] += x[r * C + c] / double(rows);
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t c = 0; c < C; ++c) var[c] += (x[r * C + c] - mean[c]) * (x[r * C + c] - mean[c]) / double(rows);
}

/// The map y = f(θ, x) of one layer with its parameters at offset 0, and its passes, checked
/// against central differences of L(θ, x) = ⟨R, y⟩ + ½ ‖y‖² for a fixed random R (so the
/// output adjoint g = R + y has a tangent ġ = ẏ and every term of tangent_backward is met):
/// the gradient in (θ, x), the tangent of y along (v, ẋ), and the tangent of the gradient
/// (the Hessian-vector product of L) along (v, ẋ) and along (v, 0).
template <class P, class L>
void check_layer_passes(const L& layer, const std::vector<double>& theta_h, std::size_t batch, pass_mode mode,
                        double tolerance) {
  using matrix = typename P::matrix;
  using vector = bilevel::vector_t<P>;
  const std::size_t np = layer.num_parameters();
  REQUIRE(theta_h.size() == np);
  const std::size_t rows = batch * layer.input_shape().pixels(), cin = layer.input_shape().channels;
  const std::size_t cout = layer.output_shape().channels, rows_out = batch * layer.output_shape().pixels();
  const auto x_h = test::random_vector(rows * cin, 31, 1.5);
  const auto r_h = test::random_vector(rows_out * cout, 32);
  std::vector<double> z0 = theta_h;  // z = (θ, x)
  z0.insert(z0.end(), x_h.begin(), x_h.end());
  const auto split = [&](const std::vector<double>& z, vector& theta, matrix& x) {
    theta = test::device<P>(std::vector<double>(z.begin(), z.begin() + std::ptrdiff_t(np)));
    x = matrix_of<P>(std::vector<double>(z.begin() + std::ptrdiff_t(np), z.end()), rows, cin);
  };
  const auto output = [&](const std::vector<double>& z) {
    vector theta;
    matrix x, y;
    split(z, theta, x);
    typename L::cache c;
    layer.forward(pass_at<P>(theta, batch, mode), x, y, c);
    return host_matrix<P>(y);
  };
  const auto objective = [&](const std::vector<double>& z) {
    const auto y = output(z);
    double s = 0;
    for (std::size_t i = 0; i < y.size(); ++i) s += r_h[i] * y[i] + 0.5 * y[i] * y[i];
    return s;
  };
  // The value and backward passes at z, on `c`; g = R + y returned.
  const auto value_and_backward = [&](const std::vector<double>& z, vector& theta, matrix& x, typename L::cache& c,
                                      matrix& g, std::vector<double>& grad) {
    split(z, theta, x);
    matrix y;
    layer.forward(pass_at<P>(theta, batch, mode), x, y, c);
    g = matrix_of<P>(r_h, rows_out, cout);
    P::axpy(bilevel::scalar_t<P>(1), y, g);
    vector gt = P::zeros(np);
    matrix gx;
    layer.backward(pass_at<P>(theta, batch, mode), x, g, c, &gx, gt);
    grad = test::host<P>(gt);
    const auto gxh = host_matrix<P>(gx);
    grad.insert(grad.end(), gxh.begin(), gxh.end());
  };
  const auto gradient = [&](const std::vector<double>& z) {
    vector theta;
    matrix x, g;
    typename L::cache c;
    std::vector<double> grad;
    value_and_backward(z, theta, x, c, g, grad);
    return grad;
  };
  constexpr double h = 1e-5;
  const auto fd_grad = test::central_gradient(objective, z0, h);
  const double grad_err = test::relative_error(gradient(z0), fd_grad);
  MESSAGE("gradient in (θ, x): relative error " << grad_err);
  CHECK(grad_err <= tolerance);

  for (const bool with_x_dot : {true, false}) {
    CAPTURE(with_x_dot);
    std::vector<double> dz = test::random_vector(np, 33);
    const auto xd_h = test::random_vector(rows * cin, 34);
    for (double e : xd_h) dz.push_back(with_x_dot ? e : 0.0);
    vector theta;
    matrix x, g;
    typename L::cache c;
    std::vector<double> grad;
    value_and_backward(z0, theta, x, c, g, grad);
    const vector v = test::device<P>(std::vector<double>(dz.begin(), dz.begin() + std::ptrdiff_t(np)));
    const matrix x_dot = matrix_of<P>(xd_h, rows, cin);
    const tangent_context<P> t{pass_at<P>(theta, batch, mode), v, nullptr, nullptr};
    matrix y_dot;
    layer.tangent_forward(t, x, with_x_dot ? &x_dot : nullptr, c, y_dot);
    const double y_err = test::relative_error(host_matrix<P>(y_dot), test::central_directional(output, z0, dz, h));
    vector grad_dot = P::zeros(np);
    matrix gx_dot;
    layer.tangent_backward(t, x, with_x_dot ? &x_dot : nullptr, g, y_dot, c, &gx_dot, grad_dot);
    std::vector<double> hv = test::host<P>(grad_dot);
    const auto gxd = host_matrix<P>(gx_dot);
    hv.insert(hv.end(), gxd.begin(), gxd.end());
    const double hv_err = test::relative_error(hv, test::central_directional(gradient, z0, dz, h));
    MESSAGE("tangent of y: " << y_err << ", tangent of the gradient (HVP): " << hv_err);
    CHECK(y_err <= tolerance);
    CHECK(hv_err <= tolerance);
  }
}

/// A user layer: (batch · H · W) × C to batch × (H · W · C), the same elements (a reshape), so
/// a network on images can end 1 × 1 × classes.
template <class P>
struct flatten_images {
  using matrix = typename P::matrix;
  using vector = bilevel::vector_t<P>;
  struct cache {};
  geometry in;
  [[nodiscard]] geometry input_shape() const { return in; }
  [[nodiscard]] geometry output_shape() const { return {1, 1, in.features()}; }
  [[nodiscard]] std::size_t num_parameters() const { return 0; }
  void forward(const pass_context<P>& p, const matrix& x, matrix& y, cache&) const {
    P::reshape(x, p.batch, in.features(), y);
  }
  void backward(const pass_context<P>& p, const matrix&, const matrix& g, cache&, matrix* gx, vector&) const {
    if (gx) P::reshape(g, p.batch * in.pixels(), in.channels, *gx);
  }
  void tangent_forward(const tangent_context<P>& t, const matrix&, const matrix* x_dot, cache&, matrix& y_dot) const {
    if (x_dot) P::reshape(*x_dot, t.batch, in.features(), y_dot);
    else y_dot = P::matrix_zeros(t.batch, in.features());
  }
  void tangent_backward(const tangent_context<P>& t, const matrix&, const matrix*, const matrix&, const matrix& g_dot,
                        cache&, matrix* gx_dot, vector&) const {
    if (gx_dot) P::reshape(g_dot, t.batch * in.pixels(), in.channels, *gx_dot);
  }
};

/// A user layer that passes its input on and counts its commits (the real steps it is told of).
template <class P>
struct commit_counter : bilevel::learners::identity_layer<P> {
  using typename bilevel::learners::identity_layer<P>::cache;
  std::shared_ptr<std::size_t> commits = std::make_shared<std::size_t>(0);
  explicit commit_counter(geometry shape) : bilevel::learners::identity_layer<P>(shape) {}
  void commit(const pass_context<P>&, const cache&) { ++*commits; }
};

/// On 2 × 2 × 2 images: a per-pixel linear map, batch norm (affine), tanh, a per-pixel linear
/// map, batch norm (not affine), flatten, linear to 3 classes. 9 + 6 + 6 + 0 + 27 parameters.
template <class P, class Weighting = bilevel::learners::unweighted>
sequential<P, Weighting> image_network(Weighting w = {}, double momentum = 0.1) {
  const geometry in{2, 2, 2}, mid{2, 2, 3}, low{2, 2, 2};
  return sequential<P, Weighting>(in,
                                  {linear<P>(in, 3), batch_norm<P>(mid, true, momentum),
                                   nonlinearity<P>(mid, activation::tanh), linear<P>(mid, 2, false),
                                   batch_norm<P>(low, false, momentum), flatten_images<P>{low}, linear<P>({1, 1, 8}, 3)},
                                  loss_kind::cross_entropy, std::move(w));
}

/// Initial parameters moved at random (γ away from 1, β from 0).
template <class Net>
std::vector<double> moved_parameters(const Net& net, std::uint64_t seed) {
  auto t = test::host<typename Net::policy>(net.initial_parameters(seed));
  const auto d = test::random_vector(t.size(), unsigned(seed) + 40, 0.3);
  for (std::size_t i = 0; i < t.size(); ++i) t[i] += d[i];
  return t;
}

template <class P, class Net>
const batch_norm<P>& norm_layer(const Net& net, std::size_t l) {
  const auto* bn = std::get<any_layer<P>>(net.layer_list().at(l)).template get<batch_norm<P>>();
  REQUIRE(bn != nullptr);
  return *bn;
}

}  // namespace normalization_test

TEST_CASE_TEMPLATE("batch_norm: training and evaluation outputs against a host loop", P, BILEVEL_DOUBLE_POLICIES) {
  using namespace normalization_test;
  const geometry shape{2, 2, 3};
  const std::size_t batch = 3, rows = 12, C = 3;
  const auto x = test::random_vector(rows * C, 5, 2.0);
  std::vector<double> mean, var;
  host_moments(x, rows, C, mean, var);
  const std::vector<double> gb = {1.5, -0.5, 0.8, 0.2, -1.0, 0.3};  // γ, then β
  for (const bool affine : {true, false}) {
    CAPTURE(affine);
    const batch_norm<P> bn(shape, affine);
    CHECK(bn.num_parameters() == (affine ? 6u : 0u));
    const auto theta = test::device<P>(affine ? gb : std::vector<double>{});
    typename batch_norm<P>::cache c;
    typename P::matrix y;
    bn.forward(pass_at<P>(theta, batch, pass_mode::training), matrix_of<P>(x, rows, C), y, c);
    const auto yh = host_matrix<P>(y);
    for (std::size_t r = 0; r < rows; ++r)
      for (std::size_t k = 0; k < C; ++k) {
        double e = (x[r * C + k] - mean[k]) / std::sqrt(var[k] + 1e-5);
        if (affine) e = gb[k] * e + gb[C + k];
        CHECK(yh[r * C + k] == doctest::Approx(e).epsilon(1e-12));
      }
    // Evaluation: the running statistics, whatever the batch.
    batch_norm<P> ev(shape, affine);
    const std::vector<double> stats = {0.5, -1.0, 2.0, 0.25, 4.0, 1.5};
    ev.restore(stats);
    ev.forward(pass_at<P>(theta, batch, pass_mode::evaluation), matrix_of<P>(x, rows, C), y, c);
    const auto ye = host_matrix<P>(y);
    for (std::size_t r = 0; r < rows; ++r)
      for (std::size_t k = 0; k < C; ++k) {
        double e = (x[r * C + k] - stats[k]) / std::sqrt(stats[C + k] + 1e-5);
        if (affine) e = gb[k] * e + gb[C + k];
        CHECK(ye[r * C + k] == doctest::Approx(e).epsilon(1e-12));
      }
  }
  // Fresh statistics: mean 0, variance 1; initialize gives γ = 1, β = 0.
  const batch_norm<P> fresh(shape);
  CHECK(fresh.state() == std::vector<double>{0, 0, 0, 1, 1, 1});
  std::vector<bilevel::scalar_t<P>> params(6, -7);
  std::mt19937_64 gen(1);
  fresh.initialize(params, gen);
  CHECK(params == std::vector<bilevel::scalar_t<P>>{1, 1, 1, 0, 0, 0});
}

// Central differences with h = 1e-5 in double on O(1) functions: truncation O(h²) ≈ 1e-10,
// round-off ≈ 1e-16 / 1e-5 ≈ 1e-11 relative; 1e-6 leaves a wide margin, and a missing term
// of the normalization's second order (through μ or σ) shows up at O(1e-1).
TEST_CASE_TEMPLATE("batch_norm: every pass against central differences, alone", P, BILEVEL_DOUBLE_POLICIES) {
  using namespace normalization_test;
  const geometry image{2, 2, 3}, flat{1, 1, 3};
  for (const bool affine : {true, false}) {
    CAPTURE(affine);
    const std::vector<double> gb = affine ? std::vector<double>{1.3, -0.7, 0.9, 0.4, -0.2, 0.1} : std::vector<double>{};
    SUBCASE("training, images") { check_layer_passes<P>(batch_norm<P>(image, affine), gb, 3, pass_mode::training, 1e-6); }
    SUBCASE("training, flat samples") {
      check_layer_passes<P>(batch_norm<P>(flat, affine), gb, 4, pass_mode::training, 1e-6);
    }
    SUBCASE("evaluation") {
      batch_norm<P> bn(image, affine);
      bn.restore(std::vector<double>{0.3, -0.4, 0.1, 0.8, 1.7, 0.5});
      check_layer_passes<P>(bn, gb, 3, pass_mode::evaluation, 1e-6);
    }
  }
}

TEST_CASE_TEMPLATE("batch_norm: every exact product of networks with batch normalization", P, BILEVEL_DOUBLE_POLICIES) {
  using namespace normalization_test;
  SUBCASE("images: normalization over batch and pixels, affine and not") {
    const auto net = image_network<P>(sample_weights{3});
    CHECK(net.num_parameters() == 48);
    test::check_learner_derivatives(net, moved_parameters(net, 3), {{0.5, 1.0, 1.5}}, test::random_batch<P>(3, 8, 3, 2),
                                    1e-6);
  }
  SUBCASE("flat samples: normalization over the batch") {
    const geometry in{1, 1, 4}, mid{1, 1, 3};
    const sequential<P, sample_weights> net(in,
                                            {linear<P>(in, 3), batch_norm<P>(mid), nonlinearity<P>(mid, activation::tanh),
                                             linear<P>(mid, 3), batch_norm<P>(mid, false), linear<P>(mid, 3)},
                                            loss_kind::cross_entropy, sample_weights{4});
    test::check_learner_derivatives(net, moved_parameters(net, 4), {{0.5, 1.0, 1.5, 0.7}},
                                    test::random_batch<P>(4, 4, 3, 1), 1e-6);
  }
}

TEST_CASE_TEMPLATE("batch_norm: running statistics change in on_real_step only, as PyTorch folds them", P,
                   BILEVEL_DOUBLE_POLICIES) {
  using namespace normalization_test;
  using vector = bilevel::vector_t<P>;
  auto net = image_network<P>(sample_weights{3});
  const auto theta_h = moved_parameters(net, 5);
  const vector theta = test::device<P>(theta_h);
  const vector w = test::device<P>({0.5, 1.0, 1.5});
  const vector* in_ptrs[] = {&w};
  const bilevel::input_list<P> in(in_ptrs);
  const auto b = test::random_batch<P>(3, 8, 3, 6);
  const auto fresh = net.state();
  CHECK(fresh == std::vector<double>{0, 0, 0, 0, 1, 1, 1, 0, 0, 1, 1});  // steps; BN 1 means, vars; BN 2 ...
  {
    const vector v = test::device<P>(test::random_vector(net.num_parameters(), 7));
    const vector u = test::device<P>({0.2, -0.1, 0.3});
    vector out;
    (void)net.loss(theta, in, b);
    (void)net.gradient(theta, in, b, out);
    net.hvp(theta, in, b, v, out);
    net.input_gradient(theta, in, b, 0, out);
    net.mixed_vjp(theta, in, b, 0, v, out);
    net.mixed_jvp(theta, in, b, 0, u, out);
    (void)net.forward(theta, b, in);
    (void)net.forward(theta, b, in, pass_mode::evaluation);
    const vector moved = test::device<P>(test::random_vector(net.num_parameters(), 8));
    (void)net.loss(moved, in, test::random_batch<P>(3, 8, 3, 9));  // a look-ahead point, another batch
    CHECK(net.state() == fresh);
    CHECK(net.real_steps() == 0);
  }
  // The first batch norm's input is x W + b per pixel: its batch statistics on the host.
  const auto bn_input_moments = [](const std::vector<double>& t, const auto& batch, std::vector<double>& mean,
                                   std::vector<double>& var) {
    const auto x = host_matrix<P>(batch.x);  // 3 × 8 = 12 pixels × 2 channels, row-major
    std::vector<double> z(12 * 3);
    for (std::size_t r = 0; r < 12; ++r)
      for (std::size_t k = 0; k < 3; ++k) {
        double s = t[6 + k];
        for (std::size_t i = 0; i < 2; ++i) s += x[r * 2 + i] * t[i * 3 + k];
        z[r * 3 + k] = s;
      }
    host_moments(z, 12, 3, mean, var);
  };
  std::vector<double> mean, var;
  bn_input_moments(theta_h, b, mean, var);
  net.on_real_step(theta, in, b);
  CHECK(net.real_steps() == 1);
  std::vector<double> rm(3), rv(3);
  for (std::size_t k = 0; k < 3; ++k) {
    rm[k] = 0.1 * mean[k];
    rv[k] = 0.9 * 1.0 + 0.1 * var[k] * 12.0 / 11.0;  // the unbiased variance
  }
  const auto check_running = [&] {
    const auto& bn = norm_layer<P>(net, 1);
    const auto m = test::host<P>(bn.running_mean()), v = test::host<P>(bn.running_var());
    for (std::size_t k = 0; k < 3; ++k) {
      CHECK(m[k] == doctest::Approx(rm[k]).epsilon(1e-12));
      CHECK(v[k] == doctest::Approx(rv[k]).epsilon(1e-12));
    }
  };
  check_running();
  CHECK(test::host<P>(norm_layer<P>(net, 4).running_var()) != std::vector<double>{1, 1});  // the second one too
  // A second real step at another point and batch folds again.
  const auto theta2_h = moved_parameters(net, 6);
  const auto b2 = test::random_batch<P>(3, 8, 3, 10);
  bn_input_moments(theta2_h, b2, mean, var);
  net.on_real_step(test::device<P>(theta2_h), in, b2);
  for (std::size_t k = 0; k < 3; ++k) {
    rm[k] = 0.9 * rm[k] + 0.1 * mean[k];
    rv[k] = 0.9 * rv[k] + 0.1 * var[k] * 12.0 / 11.0;
  }
  check_running();
  CHECK(net.real_steps() == 2);

  // Evaluation mode reads them: the logits change with the statistics, training mode's do not.
  auto other = image_network<P>(sample_weights{3});
  const auto eval = host_matrix<P>(net.forward(theta, b, in, pass_mode::evaluation).logits);
  CHECK(eval != host_matrix<P>(other.forward(theta, b, in, pass_mode::evaluation).logits));
  CHECK(host_matrix<P>(net.forward(theta, b, in).logits) == host_matrix<P>(other.forward(theta, b, in).logits));

  // The network's state (steps, then each layer's) round-trips into another network.
  other.restore(net.state());
  CHECK(other.state() == net.state());
  CHECK(host_matrix<P>(other.forward(theta, b, in, pass_mode::evaluation).logits) == eval);
}

TEST_CASE_TEMPLATE("batch_norm: state, restore and the errors", P, BILEVEL_DOUBLE_POLICIES) {
  using namespace normalization_test;
  const geometry shape{1, 1, 3};
  batch_norm<P> bn(shape);
  const std::vector<double> s = {0.1, 0.2, 0.3, 1.5, 2.5, 3.5};
  bn.restore(s);
  CHECK(bn.state() == s);
  CHECK(test::host<P>(bn.running_mean()) == std::vector<double>{0.1, 0.2, 0.3});
  CHECK(test::host<P>(bn.running_var()) == std::vector<double>{1.5, 2.5, 3.5});
  CHECK_THROWS_WITH_AS(bn.restore(std::vector<double>(5, 1.0)),
                       doctest::Contains("restore got 5 values, the layer keeps 6"), std::invalid_argument);
  CHECK(bn.state() == s);  // a rejected restore changes nothing

  CHECK_THROWS_WITH_AS(batch_norm<P>({2, 2, 0}), doctest::Contains("zero channels"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(batch_norm<P>(shape, true, -0.1), doctest::Contains("momentum"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(batch_norm<P>(shape, true, 1.5), doctest::Contains("outside [0, 1]"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(batch_norm<P>(shape, true, 0.1, 0.0), doctest::Contains("eps"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(batch_norm<P>(shape, true, 0.1, -1e-5), doctest::Contains("eps"), std::invalid_argument);
  CHECK_NOTHROW(batch_norm<P>(shape, true, 0.0));
  CHECK_NOTHROW(batch_norm<P>(shape, true, 1.0));

  // One value per channel: no variance in training mode (as PyTorch); evaluation is fine.
  const auto theta = test::device<P>({1.0, 1.0, 1.0, 0.0, 0.0, 0.0});
  typename batch_norm<P>::cache c;
  typename P::matrix y;
  const auto one = matrix_of<P>({0.5, 1.0, 2.0}, 1, 3);
  CHECK_THROWS_WITH_AS(bn.forward(pass_at<P>(theta, 1, pass_mode::training), one, y, c),
                       doctest::Contains("more than 1 value per channel"), std::invalid_argument);
  CHECK_NOTHROW(bn.forward(pass_at<P>(theta, 1, pass_mode::evaluation), one, y, c));
  // One sample of several pixels has a variance.
  const batch_norm<P> image({2, 1, 3});
  CHECK_NOTHROW(image.forward(pass_at<P>(theta, 1, pass_mode::training), matrix_of<P>({0.5, 1, 2, 1, 0, 3}, 2, 3), y, c));
}

TEST_CASE_TEMPLATE("dropout: one mask between real steps, a new one after, none in evaluation", P,
                   BILEVEL_DOUBLE_POLICIES) {
  using namespace normalization_test;
  const geometry in{1, 1, 5}, mid{1, 1, 6};
  sequential<P> net(in, {linear<P>(in, 6), dropout<P>(mid, 0.5, 7), linear<P>(mid, 3)});
  const sequential<P> plain(in, {linear<P>(in, 6), linear<P>(mid, 3)});
  const auto theta = test::device<P>(moved_parameters(net, 2));
  const auto b = test::random_batch<P>(4, 5, 3, 1), other = test::random_batch<P>(4, 5, 3, 2);
  const auto first = host_matrix<P>(net.forward(theta, b).logits);
  (void)net.loss(theta, {}, other);  // the cache moves to another batch and back: same step, same mask
  CHECK(host_matrix<P>(net.forward(theta, b).logits) == first);
  CHECK(first != host_matrix<P>(plain.forward(theta, b).logits));
  CHECK(host_matrix<P>(net.forward(theta, b, {}, pass_mode::evaluation).logits) ==
        host_matrix<P>(plain.forward(theta, b).logits));
  net.on_real_step(theta, {}, b);
  const auto second = host_matrix<P>(net.forward(theta, b).logits);
  CHECK(second != first);
  CHECK(host_matrix<P>(net.forward(theta, b).logits) == second);

  // The layer alone: entries 0 or 1/(1 − rate), about `rate` of them dropped; a mask is a
  // function of (seed, step).
  const dropout<P> d({1, 1, 10}, 0.3, 11);
  const auto mask = host_matrix<P>(d.draw(0, 200, 10));
  std::size_t dropped = 0;
  for (double m : mask) {
    CHECK((m == 0.0 || m == doctest::Approx(1.0 / 0.7).epsilon(1e-15)));
    dropped += m == 0.0;
  }
  CHECK(dropped > 500);  // 2000 · 0.3 = 600 expected, σ ≈ 20
  CHECK(dropped < 700);
  CHECK(host_matrix<P>(dropout<P>({1, 1, 10}, 0.3, 11).draw(0, 200, 10)) == mask);
  CHECK(host_matrix<P>(d.draw(1, 200, 10)) != mask);
  CHECK(host_matrix<P>(dropout<P>({1, 1, 10}, 0.3, 12).draw(0, 200, 10)) != mask);
  const auto x = matrix_of<P>(test::random_vector(40, 3), 4, 10);
  const auto none = test::device<P>({});
  typename dropout<P>::cache c;
  typename P::matrix y;
  d.forward(pass_at<P>(none, 4, pass_mode::evaluation), x, y, c);
  CHECK(host_matrix<P>(y) == host_matrix<P>(x));
  d.forward(pass_at<P>(none, 4, pass_mode::training, 5), x, y, c);
  typename P::matrix expected;
  P::hadamard(x, d.draw(5, 4, 10), expected);
  CHECK(host_matrix<P>(y) == host_matrix<P>(expected));

  CHECK_THROWS_WITH_AS(dropout<P>(mid, 1.0, 1), doctest::Contains("rate 1.000000 is outside [0, 1)"),
                       std::invalid_argument);
  CHECK_THROWS_AS(dropout<P>(mid, -0.1, 1), std::invalid_argument);
  CHECK_THROWS_AS(dropout<P>(mid, std::nan(""), 1), std::invalid_argument);
  CHECK_NOTHROW(dropout<P>(mid, 0.0, 1));
}

TEST_CASE_TEMPLATE("dropout: every exact product at a fixed step", P, BILEVEL_DOUBLE_POLICIES) {
  using namespace normalization_test;
  const geometry in{1, 1, 5}, mid{1, 1, 6};
  sequential<P, sample_weights> net(in,
                                    {linear<P>(in, 6), nonlinearity<P>(mid, activation::tanh), dropout<P>(mid, 0.4, 3),
                                     linear<P>(mid, 3)},
                                    loss_kind::cross_entropy, sample_weights{4});
  const auto theta_h = moved_parameters(net, 2);
  const auto b = test::random_batch<P>(4, 5, 3, 1);
  net.on_real_step(test::device<P>(theta_h), {}, b);  // step 1's mask
  test::check_learner_derivatives(net, theta_h, {{0.5, 1.0, 1.5, 0.7}}, b, 1e-6);
}

// The solver calls on_real_step once per real step of a level and never for its look-ahead.
// Level 0, a network with batch norm (momentum 1: the running statistics are those of the
// last committed pass alone) and a commit counter, is differentiated by a one-step look-ahead
// on the batch its real step takes next (Meta-Weight-Net / L2RW): every iteration evaluates
// the network's loss, gradient and mixed product there before the real step, and the counter
// shows that none of them committed.
TEST_CASE("batch_norm under a solver: running statistics are those of the last real step's batch") {
  using namespace normalization_test;
  using P = test::P64;
  using sgd = bilevel::optim::sgd<P>;
  const auto train = test::toy_classes(24, 3, 0.2), val = test::toy_classes(12, 4, 0.0, 1000);
  const geometry in{1, 1, 8}, mid{1, 1, 4};
  const commit_counter<P> counter{mid};
  const auto layers = [&] {
    return std::vector<any_layer<P>>{linear<P>(in, 4), batch_norm<P>(mid, true, 1.0), counter,
                                     nonlinearity<P>(mid, activation::tanh), linear<P>(mid, 3)};
  };
  const sequential<P, sample_weights> net(in, layers(), loss_kind::cross_entropy, sample_weights{24});
  const std::size_t own = 24;
  auto weights0 = P::zeros(own);
  P::fill(weights0, 1.0);
  auto low = bilevel::make_level("classifier", net, sgd{.lr = 0.3}, bilevel::hypergrad::lookahead{.steps = 1, .on_next_batch = true},
                                 net.initial_parameters(1), bilevel::learners::dataset_batches<P>(train.data, 6, 2))
                 .reading({1});
  const sequential<P> evaluated(in, {linear<P>(in, 4), batch_norm<P>(mid, true, 1.0),
                                     nonlinearity<P>(mid, activation::tanh), linear<P>(mid, 3)});
  auto high = bilevel::make_level("weights", bilevel::learners::solution_loss<sequential<P>>(evaluated, own),
                                  sgd{.lr = 0.5}, bilevel::hypergrad::first_order{}, weights0,
                                  bilevel::learners::dataset_batches<P>(val.data, 6, 3, true))
                  .reading({0});
  bilevel::solver s(std::move(low), std::move(high));
  s.schedule({1, 0});
  s.run(3);
  // The next real step's point and batch.
  const P::vector theta = s.level<0>().theta;
  const auto b = s.level<0>().peek_batch();
  s.run(1);
  CHECK(*counter.commits == 4);  // one per real step: no look-ahead step, HVP or mixed product committed
  CHECK(s.level<0>().learner.real_steps() == 4);
  CHECK_FALSE(P::equal(theta, s.level<0>().theta));  // the level moved
  // Momentum 1: the batch mean and unbiased variance of x W + b at θ before the step.
  const auto t = test::host<P>(theta);
  const auto x = host_matrix<P>(b.x);
  const std::size_t n = P::rows(b.x);
  std::vector<double> z(n * 4), mean, var;
  for (std::size_t r = 0; r < n; ++r)
    for (std::size_t k = 0; k < 4; ++k) {
      double sum = t[32 + k];
      for (std::size_t i = 0; i < 8; ++i) sum += x[r * 8 + i] * t[i * 4 + k];
      z[r * 4 + k] = sum;
    }
  host_moments(z, n, 4, mean, var);
  const auto& bn = norm_layer<P>(s.level<0>().learner, 1);
  const auto m = test::host<P>(bn.running_mean()), v = test::host<P>(bn.running_var());
  for (std::size_t k = 0; k < 4; ++k) {
    CHECK(m[k] == doctest::Approx(mean[k]).epsilon(1e-12));
    CHECK(v[k] == doctest::Approx(var[k] * double(n) / double(n - 1)).epsilon(1e-12));
  }
}

// A checkpoint keeps the learner's state: running statistics and the dropout step counter.
TEST_CASE("batch_norm and dropout under a solver: a resumed run is bit-identical") {
  using namespace normalization_test;
  using P = test::P64;
  using sgd = bilevel::optim::sgd<P>;
  const auto train = test::toy_classes(24, 3, 0.2), val = test::toy_classes(12, 4, 0.0, 1000);
  const geometry in{1, 1, 8}, mid{1, 1, 4};
  const sequential<P, sample_weights> net(in,
                                          {linear<P>(in, 4), batch_norm<P>(mid), dropout<P>(mid, 0.25, 7),
                                           nonlinearity<P>(mid, activation::tanh), linear<P>(mid, 3)},
                                          loss_kind::cross_entropy, sample_weights{24});
  const sequential<P> evaluated(in, {linear<P>(in, 4), batch_norm<P>(mid), nonlinearity<P>(mid, activation::tanh),
                                     linear<P>(mid, 3)});
  auto make = [&] {
    auto weights0 = P::zeros(24);
    P::fill(weights0, 1.0);
    auto low = bilevel::make_level("classifier", net, sgd{.lr = 0.3, .momentum = 0.9},
                                   bilevel::hypergrad::lookahead{.steps = 1, .on_next_batch = true},
                                   net.initial_parameters(1), bilevel::learners::dataset_batches<P>(train.data, 6, 2))
                   .reading({1});
    auto high = bilevel::make_level("weights", bilevel::learners::solution_loss<sequential<P>>(evaluated, 24),
                                    sgd{.lr = 0.5}, bilevel::hypergrad::first_order{}, weights0,
                                    bilevel::learners::dataset_batches<P>(val.data, 6, 3, true))
                    .reading({0});
    bilevel::solver s(std::move(low), std::move(high));
    s.schedule({1, 0});
    return s;
  };
  const auto path = std::filesystem::temp_directory_path() / "bilevel_test_bn_checkpoint.ckpt";
  auto straight = make();
  straight.run(3);
  straight.save_checkpoint(path);
  straight.run(3);
  auto resumed = make();
  resumed.load_checkpoint(path);
  CHECK(resumed.level<0>().learner.real_steps() == 3);
  CHECK(resumed.level<0>().learner.state() != make().level<0>().learner.state());  // not the fresh state
  resumed.run(3);
  CHECK(P::equal(resumed.level<0>().theta, straight.level<0>().theta));
  CHECK(P::equal(resumed.level<1>().theta, straight.level<1>().theta));
  CHECK(resumed.level<0>().learner.state() == straight.level<0>().learner.state());
  std::filesystem::remove(path);
}

// A network runs the value pass at a real step's point only when a layer keeps state that the
// step changes; keeps_state() says which, through chains, graphs and mixed operations.
TEST_CASE("keeps_state: batch norm and committing user layers do, stateless layers and their composites do not") {
  using namespace normalization_test;
  using P = test::P64;
  const geometry in{1, 1, 4}, mid{1, 1, 3};
  const any_layer<P> lin = linear<P>(in, 3), bn = batch_norm<P>(mid), tanh_layer = nonlinearity<P>(mid, activation::tanh);
  CHECK_FALSE(lin.keeps_state());
  CHECK_FALSE(tanh_layer.keeps_state());
  CHECK_FALSE(any_layer<P>(dropout<P>(mid, 0.5, 1)).keeps_state());  // its masks follow the step counter
  CHECK(bn.keeps_state());
  CHECK(any_layer<P>(commit_counter<P>{mid}).keeps_state());  // commits, says nothing of its state
  using bilevel::learners::chain;
  CHECK_FALSE(any_layer<P>(chain<P>(std::vector<any_layer<P>>{lin, tanh_layer})).keeps_state());
  CHECK(any_layer<P>(chain<P>(std::vector<any_layer<P>>{lin, bn, tanh_layer})).keeps_state());
  CHECK(any_layer<P>(chain<P>(std::vector<any_layer<P>>{lin, commit_counter<P>{mid}})).keeps_state());
  // In a network: a real step on a stateless network commits nothing and still counts the step.
  sequential<P> net(in, {lin, tanh_layer, linear<P>(mid, 2)});
  const auto theta = net.initial_parameters(3);
  net.on_real_step(theta, {}, test::random_batch<P>(4, 4, 2, 5));
  CHECK(net.real_steps() == 1);
}

namespace normalization_test {
/// The Eigen policy without its fused column primitives (deleted, so fused_column_maps is
/// false): learners::column_sums_pair and combine_columns then compose them from the required
/// primitives, as on the CUDA policy.
struct eigen_unfused : bilevel::policy::eigen<double> {
  template <class... A>
  static void column_sums_pair(A&&...) = delete;
  template <class... A>
  static void combine_columns(A&&...) = delete;
};
}  // namespace normalization_test

TEST_CASE("column sums and combinations: fused and composed against a host loop, and their errors") {
  using namespace normalization_test;
  using P = bilevel::policy::eigen<double>;
  using U = eigen_unfused;
  static_assert(bilevel::fused_column_maps<P> && !bilevel::fused_column_maps<U> && bilevel::nn_tensor_policy<U>);
  const std::size_t rows = 300, cols = 5;  // more rows than one partial-sum block (256)
  const auto a_h = test::random_vector(rows * cols, 1), b_h = test::random_vector(rows * cols, 2);
  const auto c_h = test::random_vector(rows * cols, 3);
  const auto u0 = test::random_vector(cols, 4), u1 = test::random_vector(cols, 5), u2 = test::random_vector(cols, 6);
  const auto z_h = test::random_vector(cols, 7);
  std::vector<double> sa(cols, 0.0), sab(cols, 0.0), combined(rows * cols);
  for (std::size_t i = 0; i < rows; ++i)
    for (std::size_t j = 0; j < cols; ++j) {
      const std::size_t k = i * cols + j;
      sa[j] += a_h[k];
      sab[j] += a_h[k] * b_h[k];
      combined[k] = a_h[k] * u0[j] + b_h[k] * u1[j] + c_h[k] * u2[j] + z_h[j];
    }
  const auto a = matrix_of<P>(a_h, rows, cols), b = matrix_of<P>(b_h, rows, cols), c = matrix_of<P>(c_h, rows, cols);
  const auto v0 = test::device<P>(u0), v1 = test::device<P>(u1), v2 = test::device<P>(u2), z = test::device<P>(z_h);
  const auto check_both = [&]<class Q>() {
    using bilevel::learners::column_sums_pair;
    using bilevel::learners::combine_columns;
    P::vector s1, s2;
    column_sums_pair<Q>(a, b, s1, s2);
    CHECK(test::relative_error(test::host<P>(s1), sa) <= 1e-14);
    CHECK(test::relative_error(test::host<P>(s2), sab) <= 1e-14);
    P::matrix out;
    combine_columns<Q>({{a, v0}, {b, v1}, {c, v2}}, z, out);
    CHECK(test::relative_error(host_matrix<P>(out), combined) <= 1e-14);
    P::matrix in_place = a;  // out may be the first term's matrix
    combine_columns<Q>({{in_place, v0}, {b, v1}, {c, v2}}, z, in_place);
    CHECK(test::relative_error(host_matrix<P>(in_place), combined) <= 1e-14);
    // The special cases: a sum of products alone, a shift and a scaling, in place or not.
    P::vector s3;
    bilevel::learners::column_sums_of_product<Q>(a, b, s3);
    CHECK(test::relative_error(test::host<P>(s3), sab) <= 1e-14);
    std::vector<double> shifted(rows * cols), scaled(rows * cols);
    for (std::size_t k = 0; k < rows * cols; ++k) {
      shifted[k] = a_h[k] + z_h[k % cols];
      scaled[k] = a_h[k] * u0[k % cols];
    }
    P::matrix out2, same = a;
    bilevel::learners::shift_columns<Q>(a, z, out2);
    bilevel::learners::shift_columns<Q>(same, z, same);
    CHECK(host_matrix<P>(out2) == shifted);
    CHECK(host_matrix<P>(same) == shifted);
    same = a;
    bilevel::learners::scale_columns_of<Q>(a, v0, out2);
    bilevel::learners::scale_columns_of<Q>(same, v0, same);
    CHECK(host_matrix<P>(out2) == scaled);
    CHECK(host_matrix<P>(same) == scaled);
  };
  check_both.template operator()<P>();
  check_both.template operator()<U>();

  const auto fails = [](auto f, const char* text) {
    CHECK_THROWS_WITH_AS(f(), doctest::Contains(text), std::invalid_argument);
  };
  P::vector s1, s2;
  P::matrix out = b;
  const P::vector short_factors = P::zeros(cols - 1);
  fails([&] { P::column_sums_pair(a, P::matrix_zeros(rows, cols + 1), s1, s2); },
        "bilevel::policy::eigen::column_sums_pair: a 300x5 and b 300x6 differ in shape");
  fails([&] { bilevel::learners::combine_columns<P>({{a, v0}, {out, v1}}, z, out); },
        "combine_columns: the output is term 1's matrix (only term 0's may be)");
  fails([&] { bilevel::learners::combine_columns<P>({{a, v0}, {P::matrix_zeros(rows, cols + 1), v1}}, z, out); },
        "combine_columns: term 1 is 300x6, term 0 300x5");
  fails([&] { bilevel::learners::combine_columns<P>({{a, short_factors}}, z, out); },
        "combine_columns: term 0 has 4 factors for 5 columns");
  fails([&] { bilevel::learners::combine_columns<P>({{a, v0}}, short_factors, out); },
        "combine_columns: the constant has 4 entries for 5 columns");
}
