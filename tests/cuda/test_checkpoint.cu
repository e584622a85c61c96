// SPDX-License-Identifier: MIT
// Checkpoints on the CUDA policy (solver::save_checkpoint / load_checkpoint): parameters,
// optimizer states, sampler positions and generators leave the device and come back, so a
// resumed run continues as the uninterrupted one; and a checkpoint written by the Eigen
// policy's solver resumes on the GPU (the format depends on the scalar type, not the back end).
#include <doctest/doctest.h>

#include <bilevel/policy/cuda.hpp>

#include <filesystem>
#include <string>
#include <vector>

#include "cases.hpp"
#include "host_reference.hpp"

namespace {
using C64 = bilevel::policy::cuda<double>;

std::vector<std::vector<double>> parameters(auto& s) {
  return {cuda_test::host<C64>(s.template level<0>().theta), cuda_test::host<C64>(s.template level<1>().theta)};
}
void check_close(const std::vector<std::vector<double>>& got, const std::vector<std::vector<double>>& want,
                 double bound, const char* what) {
  REQUIRE(got.size() == want.size());
  for (std::size_t level = 0; level < got.size(); ++level) {
    const double err = cuda_test::relative_error(got[level], want[level]);
    MESSAGE(std::string(what) << ", level " << level << ": relative difference " << err);
    CHECK(err <= bound);
  }
}
}  // namespace

TEST_CASE("cuda solver: a run resumed from a checkpoint continues as the uninterrupted run") {
  const auto path = (std::filesystem::temp_directory_path() / "bilevel_cuda_checkpoint_test.ckpt").string();
  const auto straight = cuda_test::meta_weight_net_checkpointed<C64>(path, 3, 4);

  auto resumed = cuda_test::toy_meta_weight_net<C64>();  // a fresh solver on its own stream
  resumed.run(1);                                        // elsewhere until loaded
  resumed.load_checkpoint(path);
  CHECK(resumed.iteration() == 3);
  resumed.run(4);
  std::filesystem::remove(path);
  // The same kernels and cuBLAS calls on the same device from the same state: equal to
  // round-off at most (cuBLAS documents its results as reproducible on one GPU). 1e-12 still
  // catches a lost momentum buffer, Adam moment or sampler position: each moves the
  // parameters at the 1e-3 level within four steps.
  check_close(parameters(resumed), straight, 1e-12, "resumed vs uninterrupted (cuda)");
}

TEST_CASE("cuda solver: a checkpoint written on the Eigen policy resumes on the GPU") {
  const auto path = (std::filesystem::temp_directory_path() / "bilevel_eigen_to_cuda_test.ckpt").string();
  const auto on_cpu = cuda_test::eigen_reference::meta_weight_net_checkpointed(path, 3, 4);
  auto on_gpu = cuda_test::toy_meta_weight_net<C64>();
  on_gpu.load_checkpoint(path);
  on_gpu.run(4);
  std::filesystem::remove(path);
  // The Eigen run's last four iterations redone on the device: summation order only, the
  // bound of the other Eigen comparisons (test_problems.cu, test_methods.cu).
  check_close(parameters(on_gpu), on_cpu, 1e-9, "resumed on cuda vs continued on eigen");
}
