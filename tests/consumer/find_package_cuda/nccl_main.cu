// SPDX-License-Identifier: MIT
// The nccl component's consumer program (package.find_package_cuda_consumer, where the
// consumer's machine has MPI and NCCL): compiled against the installed bilevel::nccl, linked
// with NCCL, MPI and CUDA, and run to ask the NCCL library it linked for its version; that
// needs no GPU. The communicator itself runs in tests/cuda/nccl on a machine with a GPU.
#include <bilevel/distributed/nccl.hpp>

#include <nccl.h>

#include <cstdio>

static_assert(bilevel::distributed::communicator<bilevel::distributed::nccl_communicator>,
              "the installed nccl_communicator satisfies the communicator concept");

int main() {
  int version = 0;
  if (ncclGetVersion(&version) != ncclSuccess || version <= 0) {
    std::printf("consumer (nccl): ncclGetVersion failed\n");
    return 1;
  }
  std::printf("consumer (nccl): built and linked against NCCL %d\n", version);
  return 0;
}
