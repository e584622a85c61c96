// SPDX-License-Identifier: MIT
#pragma once
// Reference values from the Eigen policy, computed in host_reference.cpp (compiled by the
// host compiler, the only translation unit of bilevel_cuda_tests that sees Eigen) by the very
// code the CUDA side runs (cases.hpp). Plain host types cross the boundary.
#include <cstddef>
#include <string>
#include <vector>

#include "cases.hpp"
#include "method_cases.hpp"

namespace cuda_test::eigen_reference {

/// learner_products<eigen<double>> or, with single, <eigen<float>>.
products learner_products(net_kind k, bool single);
/// ridge_hypergradient<eigen<double>> by implicit CG at the exact inner solution.
std::vector<double> ridge_implicit_cg();
/// meta_weight_net_run<eigen<double>> or <eigen<float>>.
mwn_trace meta_weight_net(std::size_t iterations, bool single);
/// meta_weight_net_checkpointed<eigen<double>>.
std::vector<std::vector<double>> meta_weight_net_checkpointed(const std::string& path, std::size_t before,
                                                              std::size_t after);
/// method_run<eigen<double>>.
std::vector<std::vector<double>> method_parameters(method_kind k, std::size_t iterations);

}  // namespace cuda_test::eigen_reference
