// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// NCCL: a communicator that all-reduces the CUDA policy's vectors where they lie, on the
/// policy's stream (CMake: target bilevel::nccl, where nvcc, MPI and NCCL are found; a CUDA
/// translation unit).
///
/// One GPU per rank: choose it (cudaSetDevice) before constructing the communicator, e.g. the
/// rank's index among the ranks on its node. MPI starts the processes and carries NCCL's
/// bootstrap (rank 0's ncclUniqueId, broadcast), and the host-side operations (a loss, a
/// fingerprint) go through MPI as well; the vectors of a data-parallel learner go through
/// ncclAllReduce, asynchronously on the stream the CUDA policy is using, so the reduction is
/// ordered after the products that produced the vector and before whatever reads it, with no
/// host wait.
///
/// The sum is the same on every rank: NCCL's ring and tree all-reduces reduce each chunk once
/// and then broadcast it. From run to run it is the same when NCCL chooses the same algorithm,
/// protocol and channel count for the same sizes, which it does on the same machine and
/// version; pin them (NCCL_ALGO=Ring, NCCL_PROTO=Simple) where runs must repeat across
/// machines or versions.
#include <nccl.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "bilevel/distributed/communicator.hpp"
#include "bilevel/distributed/mpi.hpp"
#include "bilevel/policy/cuda.hpp"

namespace bilevel::distributed {

namespace detail {
inline void nccl_check(ncclResult_t code, const char* call, std::size_t rank) {
  if (code == ncclSuccess) return;
  throw std::runtime_error(std::string("bilevel::distributed::nccl: ") + call + " failed on rank " +
                           std::to_string(rank) + ": " + ncclGetErrorString(code));
}
template <class T> ncclDataType_t nccl_type() {
  if constexpr (std::is_same_v<T, double>) return ncclDouble;
  else if constexpr (std::is_same_v<T, float>) return ncclFloat;
  else static_assert(dependent_false<T>, "bilevel::distributed::nccl: vectors of float or double only");
}
}  // namespace detail

class nccl_communicator {
 public:
  /// Bootstraps NCCL over `host` (collective: every rank of `host` constructs one).
  explicit nccl_communicator(mpi_communicator host) : host_(std::move(host)) {
    ncclUniqueId id{};
    if (host_.rank() == 0) detail::nccl_check(ncclGetUniqueId(&id), "ncclGetUniqueId", 0);
    detail::mpi_check(MPI_Bcast(&id, int(sizeof(id)), MPI_BYTE, 0, host_.handle()), "MPI_Bcast (NCCL id)",
                      int(host_.rank()));
    ncclComm_t comm = nullptr;
    detail::nccl_check(ncclCommInitRank(&comm, int(host_.size()), id, int(host_.rank())), "ncclCommInitRank",
                       host_.rank());
    comm_ = std::shared_ptr<ncclComm>(comm, [](ncclComm_t c) { ncclCommDestroy(c); });
  }

  [[nodiscard]] std::size_t rank() const { return host_.rank(); }
  [[nodiscard]] std::size_t size() const { return host_.size(); }
  [[nodiscard]] const mpi_communicator& host() const { return host_; }
  [[nodiscard]] std::uint64_t all_reduced_bytes() const { return host_.all_reduced_bytes() + *device_bytes_; }

  /// Host buffers (losses, fingerprints): through MPI, in rank order.
  template <class T> void all_reduce_sum(std::span<T> buffer) const { host_.all_reduce_sum(buffer); }
  template <class T> void broadcast(std::span<T> buffer, std::size_t root) const { host_.broadcast(buffer, root); }
  void barrier() const { host_.barrier(); }

  /// A policy vector: on the device with NCCL (CUDA policy), through MPI otherwise.
  template <tensor_policy P>
  void all_reduce_vector(vector_t<P>& v) const {
    if constexpr (detail::vectors_on_host<P>) {
      host_.all_reduce_sum(std::span<scalar_t<P>>(v.data(), P::size(v)));
    } else {
      const std::size_t n = P::size(v);
      *device_bytes_ += n * sizeof(scalar_t<P>);
      if (size() == 1 || n == 0) return;
      detail::nccl_check(ncclAllReduce(v.data(), v.data(), n, detail::nccl_type<scalar_t<P>>(), ncclSum, comm_.get(),
                                       policy::cuda_detail::stream()),
                         "ncclAllReduce", rank());
    }
  }

 private:
  mpi_communicator host_;
  std::shared_ptr<ncclComm> comm_;
  std::shared_ptr<std::uint64_t> device_bytes_ = std::make_shared<std::uint64_t>(0);
};

}  // namespace bilevel::distributed
