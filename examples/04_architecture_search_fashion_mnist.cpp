// SPDX-License-Identifier: MIT
// 04 — Architecture search on Fashion-MNIST: DARTS (first and second order), Learning from
// Mistakes in its architecture-search form and Small-Group Learning, each a method header
// handed to the one solver, on a small MLP search space or on the DARTS search space (its
// supernet of cells), against the random-search baseline (architectures drawn uniformly, each
// trained briefly, the best on validation kept: learners::random_genotype for the DARTS space);
// each searched architecture is then discretised, retrained from scratch and tested.
//
// What it teaches: searches as multilevel problems (bilevel/methods/darts.hpp,
// lfm_architecture_search.hpp, small_group_learning.hpp: two, three and five levels) over a
// network design (learners/networks/network_design.hpp: a chain of layer specs with mixed
// operations, or learners::darts_supernet_design), networks that read their architecture from
// a longer upper vector (learners/reading_segment.hpp), and the discretisation
// (chosen_operations and derive_architecture for the MLP space; derive_genotype, a genotype's
// str() and darts_network for the DARTS space); each method's levels reached by name
// (s.searched_architecture(), s.group_architectures(), s.v<k>()), the weights' cosine decay
// stated in the method's configuration, and per-epoch progress through the solver's on_epoch
// callback.
//
// Setting: --space mlp (the default) is an MLP 784 → dense 64 + ReLU → three mixed edges, each
// over {linear 64 + ReLU, linear 64 + tanh, skip, zero} → dense 10 (12 architecture entries
// per network). --space darts is DARTS's space (learners/networks/darts_space.hpp) at the CPU
// size on 28x28x1 images: a stem, 5 cells of 8 channels (--cells, --channels; reductions at
// 1/3 and 2/3 of the depth, channels doubled there), 4 nodes per cell (--nodes), each edge a
// mixed operation over DARTS's 8 primitives (224 architecture entries: α_normal, α_reduce);
// its searched α becomes a genotype (derive_genotype), whose discrete network (darts_network,
// the same cells and channels) is retrained.
//
// Search on DARTS's 50/50 split of the 60000 training images (30000 train the weights, 30000
// validate the architecture; LFM takes its 100 reference samples, 10 per class, from the
// validation half; SGL's unlabelled set is the training half with its labels hidden), float,
// batches of 64 (--batch), weights by SGD (lr 0.025 cosine to 0.001, momentum 0.9, weight
// decay 3e-4), architectures by Adam (lr 1e-3, betas (0.5, 0.999)); SGL with K = 2
// learners, λ = 1, first order (the published commands). The derived architecture (for SGL,
// the learner whose V has the lower validation loss) is retrained from scratch on all 60000
// training images (SGD Nesterov 0.9, lr 0.1 ×0.1 at 2/3 and 5/6, weight decay 5e-4, batch
// 100) and evaluated on the 10000 test images.
//
// What it prints: after each pass of the weights' batches over the training half, the
// current architecture (for the DARTS space, its genotype in DARTS's notation,
// Genotype(normal=[('sep_conv_3x3', 0), ...], ...)); per method and seed the derived
// architecture, search time and test accuracy (in evaluation mode) per retraining epoch; then
// last and best test accuracy (mean ± std over seeds), search and retraining time. Writes
// <out>/search_epochs.csv, <out>/search_runs.csv and <out>/search_architectures.csv (its
// chosen_operations column holds the genotype for the DARTS space). Exits non-zero on a
// non-finite result or accuracy at chance (not checked in a quick DARTS run, one retraining
// step long); exits 1 with one line on stderr on missing or malformed data or an unwritable
// --out, 2 on a bad command line (examples/support/options.hpp).
//
// Options (--help lists them, with their ranges): --random-samples N (random search's
// architectures, each trained for --epochs); --space mlp|darts, and for darts --cells,
// --channels and --nodes; --epochs (search) and --retrain-epochs; --batch (the search's);
// --train-size N (a stratified random subset, drawn with the seed: the images split for the
// search and retrained on) and --test-size N (of the test split); --lr, --weight-decay and
// --schedule constant|multistep|cosine for the searched networks' weights (defaults: DARTS's
// 0.025, 3e-4, cosine); --seed or --seeds A,B,C, --methods LIST|all, --data DIR, --out DIR;
// --quick (2000 images, 1 + 1 epochs, unless given; with --space darts 100 images, 500 test
// images, 3 cells of 4 channels with 2 nodes, batches of 16, as the supernet trains slowly on
// a CPU). On a CPU, one gradient of the default DARTS supernet on a batch of 64 takes some 13 s
// (2-core VM), so a search epoch on all the data takes hours: start with --train-size.
//
// docs/methods.md, "Architecture search at small scale": on a space this small the
// differences between methods are expected inside the seed noise; the search is a
// correctness and smoke test, not an effect size.
#include <bilevel/eigen.hpp>
#include <bilevel/data/fashion_mnist.hpp>
#include <bilevel/learners/classification_accuracy.hpp>
#include <bilevel/learners/classification_batch.hpp>
#include <bilevel/learners/networks/network_design.hpp>
#include <bilevel/methods/darts.hpp>
#include <bilevel/methods/lfm_architecture_search.hpp>
#include <bilevel/methods/small_group_learning.hpp>
#include <bilevel/optim/schedule.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "support/experiment.hpp"

using namespace bilevel;
using example::P;
using seconds = std::chrono::duration<double>;

namespace {

const std::map<std::string, std::string> method_names = {
    {"darts1", "DARTS 1st order"}, {"darts2", "DARTS 2nd order"}, {"lfm", "LFM (search)"}, {"sgl", "SGL (K = 2)"},
    {"random", "random search"}};

// The MLP space: flat 784-pixel rows, three mixed edges of four candidates.
const char* const candidate_names[] = {"linear+relu", "linear+tanh", "skip", "zero"};
constexpr std::size_t width = 64, edges = 3;
const learners::geometry mlp_input{1, 1, 784};

std::vector<learners::layer::spec> mlp_space() {
  using namespace bilevel::learners;
  std::vector<layer::spec> s = {layer::dense{width}, layer::act{activation::relu}};
  for (std::size_t e = 0; e < edges; ++e)
    s.push_back(layer::mixed{{layer::candidate{{layer::dense{width}, layer::act{activation::relu}}},
                              layer::candidate{{layer::dense{width}, layer::act{activation::tanh}}}, layer::skip(),
                              layer::zero_op()}});
  s.push_back(layer::dense{10});
  return s;
}

std::string describe_chosen(const std::vector<std::size_t>& chosen) {
  std::string out;
  for (std::size_t e = 0; e < chosen.size(); ++e) out += (e ? " | " : "") + std::string(candidate_names[chosen[e]]);
  return out;
}

/// The search space of --space and what the example does with an architecture α of it: the
/// network the methods search (supernet()), α in one line (describe) and the discrete network
/// to retrain (derived). mlp: the chain above, discretised by chosen_operations and
/// derive_architecture; darts: DARTS's supernet of `darts`'s size, discretised by
/// derive_genotype into a genotype and its darts_network (the same cells and channels).
struct search_space {
  bool is_darts = false;
  std::vector<learners::layer::spec> specs;  ///< mlp: the chain with mixed edges
  learners::darts_space_options darts{};     ///< darts: the size of the space

  [[nodiscard]] learners::network_design supernet() const {
    if (is_darts) return learners::darts_supernet_design{darts};
    return learners::layer_specs{mlp_input, specs};
  }
  /// The candidates of one mixed operation: the columns of α.
  [[nodiscard]] std::size_t candidates() const { return is_darts ? learners::darts_primitives.size() : 4; }
  [[nodiscard]] std::string describe(const std::vector<double>& alpha) const {
    if (is_darts) return learners::derive_genotype(alpha, darts).str();
    return describe_chosen(methods::chosen_operations(specs, alpha));
  }
  [[nodiscard]] learners::network_design derived(const std::vector<double>& alpha) const {
    if (is_darts) return learners::darts_network_design{learners::derive_genotype(alpha, darts), darts};
    return learners::layer_specs{mlp_input, methods::derive_architecture(specs, alpha)};
  }
  /// An architecture drawn uniformly: for the DARTS space a random genotype (random_genotype,
  /// recorded as the α that derives it), for the MLP space one candidate per edge.
  [[nodiscard]] std::vector<double> random_architecture(std::mt19937_64& gen) const {
    if (is_darts) return learners::genotype_alpha(learners::random_genotype(darts, gen), darts);
    std::vector<double> alpha(edges * 4, 0.0);
    for (std::size_t e = 0; e < edges; ++e) alpha[e * 4 + std::uniform_int_distribution<std::size_t>(0, 3)(gen)] = 1.0;
    return alpha;
  }
  [[nodiscard]] std::string summary() const {
    if (!is_darts) return "mlp space";
    return "darts space, " + std::to_string(darts.cells) + " cells of " + std::to_string(darts.channels) +
           " channels, " + std::to_string(darts.nodes) + " nodes";
  }
};

/// The mixing weights softmax(α_e) of every edge (`k` candidates each), for the record.
std::string softmax_weights(const std::vector<double>& alpha, std::size_t k) {
  std::string out;
  for (std::size_t e = 0; e < alpha.size() / k; ++e) {
    double mx = -1e300, total = 0;
    for (std::size_t o = 0; o < k; ++o) mx = std::max(mx, alpha[e * k + o]);
    for (std::size_t o = 0; o < k; ++o) total += std::exp(alpha[e * k + o] - mx);
    for (std::size_t o = 0; o < k; ++o) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%s%.3f", (e || o) ? ";" : "", std::exp(alpha[e * k + o] - mx) / total);
      out += buf;
    }
  }
  return out;
}

/// A CSV field: quoted when it holds a comma (a genotype), quotes doubled.
std::string csv_field(const std::string& text) {
  if (text.find_first_of(",\"\n") == std::string::npos) return text;
  std::string out = "\"";
  for (char c : text) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + '"';
}

/// Mean loss over every row of `d` of the search network `supernet` with architecture `alpha`
/// and weights `theta` (training mode: batch statistics), in chunks of 50 rows: how SGL's
/// learners are compared on the whole validation half.
double mean_loss(const learners::network_design& supernet, const P::vector& theta, const std::vector<double>& alpha,
                 const data::dataset& d) {
  const learners::sequential<P> net = learners::build_network<P>(supernet);
  const P::vector a = P::from_host(std::vector<float>(alpha.begin(), alpha.end()));
  const P::vector* in[] = {&a};  // the network reads its architecture as its one input
  double total = 0;
  std::vector<std::size_t> rows;
  for (std::size_t start = 0; start < d.rows; start += 50) {
    rows.resize(std::min<std::size_t>(50, d.rows - start));
    std::iota(rows.begin(), rows.end(), start);
    total += net.loss(theta, in, learners::make_batch<P>(d, rows)) * double(rows.size());
  }
  return total / double(d.rows);
}

int run(int argc, char** argv) {
  example::options o;
  o.methods = {"darts1", "darts2", "lfm", "sgl", "random"};
  o.epochs = 10;
  o.lr = 0.025, o.weight_decay = 3e-4, o.schedule = "cosine";  // DARTS's weights
  example::command_line cli("04_architecture_search_fashion_mnist",
                            "DARTS (1st and 2nd order), LFM (architecture search) and SGL on a small MLP search "
                            "space or on DARTS's cells; each derived architecture retrained from scratch and tested.",
                            o);
  cli.common("search epochs over the training half of the split",
             "2000 images, 1 search and 1 retraining epoch, unless given; with --space darts 100 images, 500 test "
             "images, 3 cells of 4 channels with 2 nodes, batches of 16 (a smoke test)")
      .methods(method_names)
      .training("the searched networks' weights (cosine: down to 0.001; retraining keeps SGD 0.1, x0.1 at 2/3 "
                "and 5/6, weight decay 5e-4)");
  cli.add("--retrain-epochs", o.retrain_epochs, "epochs of retraining the derived architecture (default 10)")
      ->check(example::detail::whole_number(1, 1'000'000));
  cli.add("--space", o.space,
          "the search space: mlp (784-64, three mixed edges over linear+relu, linear+tanh, skip, zero, then 10) or "
          "darts (DARTS's cells on 28x28 images: a supernet of mixed operations over its 8 primitives, derived "
          "into a genotype) (default " + o.space + ")")
      ->check(example::detail::one_of({"mlp", "darts"}));
  cli.add("--cells", o.cells, "--space darts: cells, the ones at 1/3 and 2/3 of the depth reductions (default " +
                                  std::to_string(o.cells) + ")")
      ->check(example::detail::whole_number(1, 20));
  cli.add("--channels", o.channels, "--space darts: channels of the first cells, doubled at each reduction (default " +
                                        std::to_string(o.channels) + ")")
      ->check(example::detail::whole_number(1, 64));
  cli.add("--nodes", o.nodes, "--space darts: intermediate nodes of a cell (default " + std::to_string(o.nodes) + ")")
      ->check(example::detail::whole_number(1, 8));
  std::size_t random_samples = 8;
  cli.add("--random-samples", random_samples,
          "random search: architectures drawn uniformly, each trained for the search epochs on the training half "
          "and the best on the validation half kept (default 8)")
      ->check(example::detail::whole_number(1, 1000));
  cli.add("--batch", o.batch, "batch size of the search: the weights', the architecture's and SGL's unlabelled "
                              "batches (default " + std::to_string(o.batch) + ", DARTS's)")
      ->check(example::detail::whole_number(1, 10000));
  if (const auto status = cli.parse(argc, argv)) return *status;
  const bool darts_space = o.space == "darts";
  if (!darts_space)
    for (const char* flag : {"--cells", "--channels", "--nodes"})
      if (o.was_given(flag))
        throw example::usage_error(std::string(flag) + ": sizes the DARTS space: give --space darts");
  if (o.quick) {
    if (!o.was_given("--train-size")) o.train_size = darts_space ? 100 : 2000;
    if (!o.was_given("--epochs")) o.epochs = 1;
    if (!o.was_given("--retrain-epochs")) o.retrain_epochs = 1;
    if (darts_space) {
      if (!o.was_given("--test-size")) o.test_size = 500;
      if (!o.was_given("--cells")) o.cells = 3;
      if (!o.was_given("--channels")) o.channels = 4;
      if (!o.was_given("--nodes")) o.nodes = 2;
      if (!o.was_given("--batch")) o.batch = 16;
    }
  }
  search_space space;
  space.is_darts = darts_space;
  if (darts_space) space.darts = {.input = example::image_input, .classes = 10, .cells = o.cells,
                                  .channels = o.channels, .nodes = o.nodes};
  else space.specs = mlp_space();
  const auto retrain_epochs = o.retrain_epochs;
  const auto fm = example::load_data(o);
  const auto test = example::test_subset(fm.test, o.test_size);
  example::result_files files(o.out, "search", "test_accuracy", "search_seconds", "retrain_seconds");
  const auto arch_path = std::filesystem::path(o.out) / "search_architectures.csv";
  std::ofstream arch_file(arch_path);
  if (!arch_file) throw std::runtime_error("cannot write '" + arch_path.string() + "'");
  arch_file << "method,seed,learner,chosen_operations,mixing_weights\n";
  std::map<std::string, std::vector<example::run_result>> results;
  bool ok = true;
  // A quick DARTS run retrains for one step: its accuracy is still at chance (its batch norms'
  // running statistics have seen one batch), so only finiteness is checked.
  const bool at_chance_expected = o.quick && darts_space;

  for (unsigned seed : o.seeds) {
    // DARTS's split: half of every class validates the architecture.
    const auto source = example::training_subset(fm.train, o.train_size, seed + 30);
    const auto counts = source.class_counts();
    const auto split = data::split_validation(source, *std::min_element(counts.begin(), counts.end()) / 2, seed);
    const auto train = std::make_shared<const data::dataset>(split.train);
    const auto validation = std::make_shared<const data::dataset>(split.validation);
    const auto full = std::make_shared<const data::dataset>(source);
    const std::size_t batch = o.batch;
    std::printf("seed %u: %s; search on %zu + %zu images, %zu epochs, batches of %zu; retraining on %zu, test on %zu\n",
                seed, space.summary().c_str(), train->rows, validation->rows, o.epochs, batch, full->rows, test.rows);
    // --schedule for the searched networks' weights, as a decay of each configuration's `lr`
    // over its `epochs`; cosine ends at DARTS's 0.001 (or at --lr, if that is lower: the
    // rate never anneals upwards).
    const auto weights_decay = example::make_schedule(o.schedule, std::min(o.lr, 0.001));

    for (const auto& method : o.methods) {
      example::run_result r;
      const std::string name = method_names.at(method);
      const auto t0 = std::chrono::steady_clock::now();
      // The search: the architecture it ends with, and every learner's (one but for SGL).
      std::vector<std::vector<double>> found;
      std::size_t pick = 0;
      // Runs a search for the epochs its configuration states (total_iterations(): epochs ×
      // iterations per epoch), printing the architecture so far after every pass of level
      // `weights_level`'s sampler over the training half (on_epoch). These are the batches
      // actually drawn: DARTS's second order takes a fresh training batch for its virtual step
      // (finite_difference's default), so its weights' sampler passes over the data twice in
      // the iterations of one configured epoch; the iteration shows where each pass ended.
      // `alpha()` reads the architecture by name.
      auto search = [&](auto& s, std::size_t weights_level, auto&& alpha) {
        solver_callbacks callbacks;
        callbacks.epoch_level = weights_level;
        callbacks.on_epoch = [&](const epoch_event& e) {
          std::printf("  %-16s seed %u search epoch %2zu (iteration %zu/%zu)  %s  (%.0f s)\n", name.c_str(), seed,
                      e.epoch + 1, e.iteration + 1, s.total_iterations(), space.describe(alpha()).c_str(),
                      seconds(std::chrono::steady_clock::now() - t0).count());
          std::fflush(stdout);
          return true;
        };
        s.run(s.total_iterations(), callbacks);
      };
      // Every method searches the same design: the MLP chain or the DARTS supernet.
      const learners::network_design supernet = space.supernet();
      if (method == "darts1" || method == "darts2") {
        const methods::darts_config cfg{.batch = batch, .validation_batch = batch, .epochs = o.epochs, .lr = o.lr,
                                        .lr_decay = weights_decay, .weight_decay = o.weight_decay, .arch_lr = 1e-3,
                                        .seed = seed};
        auto darts = [&](auto strategy) {
          auto s = methods::darts<P>(supernet, train, validation, cfg, strategy);
          search(s, 0, [&] { return s.searched_architecture(); });  // weights(): level 0
          found = {s.searched_architecture()};
        };
        if (method == "darts1") darts(hypergrad::first_order{});
        else darts(hypergrad::finite_difference{});
      } else if (method == "lfm") {
        auto s = methods::lfm_architecture_search<P>(supernet, train, validation,
                                                     {.batch = batch, .validation_batch = batch, .epochs = o.epochs,
                                                      .lr = o.lr, .lr_decay = weights_decay,
                                                      .weight_decay = o.weight_decay, .seed = seed});
        search(s, 1, [&] { return s.searched_architecture(); });  // relearner(), W2: level 1
        found = {s.searched_architecture()};
      } else if (method == "sgl") {
        auto s = methods::small_group_learning<P, 2>(
            supernet, train, validation,
            {.batch = batch, .unlabelled_batch = batch, .validation_batch = batch, .epochs = o.epochs, .lr = o.lr,
             .lr_decay = weights_decay, .weight_decay = o.weight_decay, .arch_lr = 1e-3, .seed = seed});
        search(s, 0, [&] { return s.group_architectures()[0]; });  // w<0>(), W1: level 0
        found = s.group_architectures();
        // Keep the learner whose V validates better (on the whole validation half).
        const double loss[] = {mean_loss(supernet, s.v<0>().theta, found[0], *validation),
                               mean_loss(supernet, s.v<1>().theta, found[1], *validation)};
        pick = loss[1] < loss[0] ? 1 : 0;
      } else if (method == "random") {
        // The baseline of architecture search: architectures drawn uniformly, each trained
        // from scratch on the training half for the search's epochs (the weights' rate, decay
        // and batch of the search), the one with the best validation accuracy kept.
        std::mt19937_64 gen(seed + 40);
        double best = -1;
        for (std::size_t k = 0; k < random_samples; ++k) {
          found.push_back(space.random_architecture(gen));
          learners::sequential<P> net = learners::build_network<P>(space.derived(found.back()));
          double accuracy = 0;
          example::train_plain(
              net, train, seed + unsigned(k), o.epochs, o.lr, o.weight_decay, weights_decay,
              [&](const P::vector& theta) { accuracy = example::test_accuracy(net, theta, *validation).plain; }, {},
              batch);
          std::printf("  %-16s seed %u sample %zu/%zu  validation accuracy %.2f%%  %s  (%.0f s)\n", name.c_str(),
                      seed, k + 1, random_samples, accuracy, space.describe(found.back()).c_str(),
                      seconds(std::chrono::steady_clock::now() - t0).count());
          std::fflush(stdout);
          if (accuracy > best) best = accuracy, pick = k;
        }
      }
      const double search_seconds = seconds(std::chrono::steady_clock::now() - t0).count();
      for (std::size_t k = 0; k < found.size(); ++k)
        arch_file << method << ',' << seed << ',' << k + 1 << ',' << csv_field(space.describe(found[k])) << ','
                  << softmax_weights(found[k], space.candidates()) << '\n';
      arch_file.flush();
      std::printf("  %-16s seed %u derived: %s  (search %.0f s)\n", name.c_str(), seed,
                  space.describe(found[pick]).c_str(), search_seconds);

      // Retrain the derived architecture from scratch and test it (in evaluation mode: the
      // running statistics of the batch norms of a DARTS network, which train_plain updates).
      const auto t1 = std::chrono::steady_clock::now();
      learners::sequential<P> derived = learners::build_network<P>(space.derived(found[pick]));
      example::train_plain(derived, full, seed, retrain_epochs, 0.1, 5e-4, example::make_schedule("multistep"),
                           [&](const P::vector& theta) {
                             const double accuracy = example::test_accuracy(derived, theta, test).plain;
                             r.epochs.push_back({accuracy, search_seconds, 0.0});
                             std::printf("  %-16s seed %u retrain epoch %2zu/%zu  test accuracy %.2f%%\n", name.c_str(),
                                         seed, r.epochs.size(), retrain_epochs, accuracy);
                             std::fflush(stdout);
                           });
      const double retrain_seconds = seconds(std::chrono::steady_clock::now() - t1).count();
      for (auto& e : r.epochs) e.weight_b = retrain_seconds;
      r.seconds = search_seconds + retrain_seconds;
      files.write(method, seed, r);
      ok &= std::isfinite(r.epochs.back().accuracy) && (at_chance_expected || r.epochs.back().accuracy > 20);
      for (const auto& a : found)
        for (double v : a) ok &= std::isfinite(v);
      results[method].push_back(std::move(r));
    }
  }
  example::print_summary(o.methods, method_names, results, "search s", "retrain s",
                         "test accuracy of the derived architecture, " + std::to_string(o.seeds.size()) + " seed(s), " +
                             std::to_string(o.epochs) + " search + " + std::to_string(retrain_epochs) +
                             " retraining epochs, " + space.summary());
  files.print_paths();
  std::printf("architectures:     %s\n",
              std::filesystem::absolute(std::filesystem::path(o.out) / "search_architectures.csv").string().c_str());
  if (!ok) {
    std::puts("FAILED: non-finite result or accuracy at chance");
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return example::guarded_main("04_architecture_search_fashion_mnist", [&] { return run(argc, argv); });
}
