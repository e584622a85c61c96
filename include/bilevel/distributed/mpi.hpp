// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// MPI: a communicator over an MPI communicator (CMake: find_package(bilevel COMPONENTS mpi),
/// target bilevel::mpi), and the process's MPI environment.
///
/// Start the program with mpirun or srun (`mpirun -np 2 ./program`); every rank runs the
/// same program, builds the same solver and calls the same library functions in the same
/// order, which is what keeps the collectives matched.
///
/// The sum is computed by the library in rank order, not by MPI_Allreduce, whose association
/// MPI leaves to the implementation (Open MPI picks an algorithm by message size and rank
/// count): the buffer is cut into R blocks, MPI_Alltoall hands block b of every rank to rank
/// b, which adds them in rank order (in double, for float buffers too), and MPI_Allgather
/// gives every rank every summed block. That moves 2(R−1)/R of the buffer per rank, as a ring
/// all-reduce does, and every rank ends with the same bits.
///
/// Errors: every MPI call's error code is checked (the communicator is set to
/// MPI_ERRORS_RETURN) and turns into std::runtime_error naming the call and the rank. A rank
/// that throws must not leave the others waiting in a collective: run the program's body in
/// run_or_abort(), which prints the error with the rank and calls MPI_Abort, and mpirun then
/// stops every rank with a non-zero exit.
// The C API only: MPI's deprecated C++ bindings are neither needed nor warning-free.
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <limits>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "bilevel/distributed/communicator.hpp"

namespace bilevel::distributed {

namespace detail {
inline void mpi_check(int code, const char* call, int rank) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  throw std::runtime_error(std::string("bilevel::distributed::mpi: ") + call + " failed on rank " +
                           std::to_string(rank) + ": " + std::string(text, std::size_t(length)));
}
template <class T> MPI_Datatype mpi_type() {
  if constexpr (std::is_same_v<T, double>) return MPI_DOUBLE;
  else if constexpr (std::is_same_v<T, float>) return MPI_FLOAT;
  else if constexpr (std::is_same_v<T, std::uint64_t>) return MPI_UINT64_T;
  else static_assert(dependent_false<T>, "bilevel::distributed::mpi: buffers of double, float or uint64 only");
}
}  // namespace detail

/// MPI_Init on construction (unless MPI is already initialised), MPI_Finalize on destruction
/// (if it initialised). One per process, in main, before any mpi_communicator.
class mpi_environment {
 public:
  mpi_environment(int& argc, char**& argv) {
    int ready = 0;
    MPI_Initialized(&ready);
    if (!ready) {
      int provided = 0;
      // Only the main thread calls MPI.
      detail::mpi_check(MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread", -1);
      owns_ = true;
    }
  }
  mpi_environment(const mpi_environment&) = delete;
  mpi_environment& operator=(const mpi_environment&) = delete;
  ~mpi_environment() {
    int done = 0;
    MPI_Finalized(&done);
    if (owns_ && !done) MPI_Finalize();
  }

 private:
  bool owns_ = false;
};

/// The communicator concept over an MPI communicator (MPI_COMM_WORLD by default).
class mpi_communicator {
 public:
  explicit mpi_communicator(MPI_Comm comm = MPI_COMM_WORLD) : comm_(comm) {
    int initialised = 0;
    MPI_Initialized(&initialised);
    if (!initialised)
      throw std::logic_error("bilevel::distributed::mpi_communicator: MPI is not initialised (construct a "
                             "bilevel::distributed::mpi_environment in main first)");
    int r = 0, n = 0;
    MPI_Comm_rank(comm_, &r);
    MPI_Comm_size(comm_, &n);
    rank_ = std::size_t(r);
    size_ = std::size_t(n);
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  }

  [[nodiscard]] std::size_t rank() const { return rank_; }
  [[nodiscard]] std::size_t size() const { return size_; }
  [[nodiscard]] MPI_Comm handle() const { return comm_; }
  [[nodiscard]] std::uint64_t all_reduced_bytes() const { return *bytes_; }
  /// Seconds this rank has spent in all_reduce_sum, waiting for the others included (what
  /// communication costs a step, for benchmarks).
  [[nodiscard]] double all_reduce_seconds() const { return *seconds_; }

  template <class T>
  void all_reduce_sum(std::span<T> buffer) const {
    *bytes_ += buffer.size() * sizeof(T);
    if (size_ == 1 || buffer.empty()) return;
    const double start = MPI_Wtime();
    const std::size_t block = (buffer.size() + size_ - 1) / size_;
    if (block > std::size_t(std::numeric_limits<int>::max()))
      throw std::length_error("bilevel::distributed::mpi_communicator: a buffer of " + std::to_string(buffer.size()) +
                              " entries is too long for MPI's int counts on " + std::to_string(size_) + " ranks");
    std::vector<T>& send = work<T>(0);
    std::vector<T>& recv = work<T>(1);
    send.assign(block * size_, T(0));
    std::copy(buffer.begin(), buffer.end(), send.begin());
    recv.resize(block * size_);
    const int count = int(block);
    const MPI_Datatype type = detail::mpi_type<T>();
    check(MPI_Alltoall(send.data(), count, type, recv.data(), count, type, comm_), "MPI_Alltoall");
    // recv[j·block + i] is rank j's entry rank_·block + i: add them in rank order.
    for (std::size_t i = 0; i < block; ++i) {
      double total = 0.0;
      for (std::size_t j = 0; j < size_; ++j) total += double(recv[j * block + i]);
      send[i] = T(total);
    }
    check(MPI_Allgather(send.data(), count, type, recv.data(), count, type, comm_), "MPI_Allgather");
    std::copy_n(recv.begin(), buffer.size(), buffer.begin());
    *seconds_ += MPI_Wtime() - start;
  }

  template <class T>
  void broadcast(std::span<T> buffer, std::size_t root) const {
    if (size_ == 1 || buffer.empty()) return;
    if (buffer.size() > std::size_t(std::numeric_limits<int>::max()))
      throw std::length_error("bilevel::distributed::mpi_communicator: broadcast of " + std::to_string(buffer.size()) +
                              " entries exceeds MPI's int count");
    check(MPI_Bcast(buffer.data(), int(buffer.size()), detail::mpi_type<T>(), int(root), comm_), "MPI_Bcast");
  }

  void barrier() const { check(MPI_Barrier(comm_), "MPI_Barrier"); }

  /// Stops every rank: MPI_Abort with `code` (mpirun reports which rank called it).
  [[noreturn]] void abort(int code) const {
    MPI_Abort(comm_, code);
    std::terminate();  // MPI_Abort does not return; this is for the compiler
  }

 private:
  void check(int code, const char* call) const { detail::mpi_check(code, call, int(rank_)); }
  template <class T> std::vector<T>& work(int which) const {
    if constexpr (std::is_same_v<T, double>) return which == 0 ? buffers_->d0 : buffers_->d1;
    else if constexpr (std::is_same_v<T, float>) return which == 0 ? buffers_->f0 : buffers_->f1;
    else return which == 0 ? buffers_->u0 : buffers_->u1;
  }
  struct buffers {
    std::vector<double> d0, d1;
    std::vector<float> f0, f1;
    std::vector<std::uint64_t> u0, u1;
  };

  MPI_Comm comm_;
  std::size_t rank_ = 0, size_ = 1;
  // Shared by copies (a communicator is copied into every data-parallel learner): one count
  // of the bytes this rank reduced and of the time it took, and one set of work buffers.
  std::shared_ptr<std::uint64_t> bytes_ = std::make_shared<std::uint64_t>(0);
  std::shared_ptr<double> seconds_ = std::make_shared<double>(0.0);
  std::shared_ptr<buffers> buffers_ = std::make_shared<buffers>();
};

/// Runs body(); if it throws, prints "bilevel: rank r of R failed: <what>" to stderr and stops
/// every rank through MPI_Abort (exit code 1), so that no rank waits forever in a collective
/// for one that has given up. Returns body()'s result otherwise.
template <class F>
int run_or_abort(const mpi_communicator& comm, F&& body) {
  try {
    return body();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bilevel: rank %zu of %zu failed: %s\n", comm.rank(), comm.size(), e.what());
    std::fflush(stderr);
    comm.abort(1);
  }
}

}  // namespace bilevel::distributed
