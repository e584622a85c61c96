// SPDX-License-Identifier: MIT
// The Eigen side of the CUDA tests' cross-back-end comparisons (see host_reference.hpp).
#include "host_reference.hpp"

#include <bilevel/policy/eigen.hpp>

namespace cuda_test::eigen_reference {

using E64 = bilevel::policy::eigen<double>;
using E32 = bilevel::policy::eigen<float>;

products learner_products(net_kind k, bool single) {
  return single ? cuda_test::learner_products<E32>(k) : cuda_test::learner_products<E64>(k);
}

std::vector<double> ridge_implicit_cg() {
  const auto prob = ridge<E64>();
  return ridge_hypergradient<E64>(prob, bilevel::hypergrad::implicit_cg{}, prob.solution(ridge_log_penalty()), 1).first;
}

mwn_trace meta_weight_net(std::size_t iterations, bool single) {
  return single ? meta_weight_net_run<E32>(iterations) : meta_weight_net_run<E64>(iterations);
}

std::vector<std::vector<double>> meta_weight_net_checkpointed(const std::string& path, std::size_t before,
                                                              std::size_t after) {
  return cuda_test::meta_weight_net_checkpointed<E64>(path, before, after);
}

std::vector<std::vector<double>> method_parameters(method_kind k, std::size_t iterations) {
  return method_run<E64>(k, iterations);
}

}  // namespace cuda_test::eigen_reference
