// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// bilevel::cuda_error and the checks every CUDA runtime and cuBLAS call of the CUDA policy
/// goes through: a failure throws, naming the call, the error string and the code.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <stdexcept>
#include <string>

namespace bilevel {

/// A CUDA runtime or cuBLAS call of the CUDA back end failed: no device, out of device
/// memory, a kernel that could not launch, an asynchronous fault reported at the next
/// synchronisation. `what()` names the call and the error; `code()` is the cudaError_t or
/// cublasStatus_t value (which one `from_cublas()` says).
class cuda_error : public std::runtime_error {
 public:
  cuda_error(const std::string& what, int code, bool from_cublas = false)
      : std::runtime_error(what), code_(code), from_cublas_(from_cublas) {}
  [[nodiscard]] int code() const noexcept { return code_; }
  [[nodiscard]] bool from_cublas() const noexcept { return from_cublas_; }

 private:
  int code_;
  bool from_cublas_;
};

}  // namespace bilevel

namespace bilevel::policy::cuda_detail {

[[noreturn]] inline void throw_cuda(cudaError_t e, const char* call) {
  throw cuda_error(std::string("bilevel::cuda: ") + call + " failed: " + cudaGetErrorString(e) + " (" +
                       cudaGetErrorName(e) + ")",
                   int(e));
}
inline void check(cudaError_t e, const char* call) {
  if (e != cudaSuccess) throw_cuda(e, call);
}
inline void check(cublasStatus_t s, const char* call) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw cuda_error(std::string("bilevel::cuda: ") + call + " failed: " + cublasGetStatusString(s) + " (" +
                         cublasGetStatusName(s) + ")",
                     int(s), true);
}
/// After a kernel launch: launch errors (bad configuration, no kernel image for this GPU).
inline void check_launch(const char* kernel) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess)
    throw cuda_error(std::string("bilevel::cuda: launching kernel ") + kernel + " failed: " + cudaGetErrorString(e) +
                         " (" + cudaGetErrorName(e) + ")",
                     int(e));
}

}  // namespace bilevel::policy::cuda_detail

/// Checks a cudaError_t or cublasStatus_t expression, naming it in the exception.
#define BILEVEL_CUDA_CHECK(call) ::bilevel::policy::cuda_detail::check((call), #call)
