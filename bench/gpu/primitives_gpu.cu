// SPDX-License-Identifier: MIT
// The CUDA policy's own kernels against the toolkit's CUB and Thrust doing the same work, on the
// same stream, in one run: the measurement that decides, primitive by primitive, whether a
// kernel of policy/cuda/kernels.cuh stays or gives way to the library call.
//
//   build/bench/bench_gpu_primitives [--out results.md] [--rounds 9]
//
// Primitives, each at 1,000 elements (a bias), 235,146 (the 784-256-128-10 MLP's parameter
// vector) and 10,000,000 (bandwidth-bound), in float:
//   map          out_i = max(x_i, 0)             transform | cub::DeviceTransform | thrust::transform
//   update       SGD with momentum, in place    zip_apply | cub::DeviceFor::Bulk | thrust::for_each_n
//   dot->entry   out_k += <x, y> in double,       add_scaled_dot_into | cub::DeviceReduce::TransformReduce
//                left on the device                 and a one-thread add
//   dot->host    <x, y> in double, read back      dot | cub TransformReduce + copy | thrust::transform_reduce
//   finite->entry  out_k = 1 if x has a NaN/Inf  mark_nonfinite | cub TransformReduce (max) + a mark
//   finite->host   all finite?                   all_finite | thrust::all_of
//   gather       out_i = x[index_i]             gather (host index, its cached plan found by
//                                                 comparing the index) | thrust::gather (device
//                                                 index); and the policy's kernel alone
// Thrust's temporary storage comes from a block kept across calls (its default allocator would
// time a cudaMalloc and a device-wide cudaFree per reduction).
// Each figure is the median over rounds of (time of K back-to-back calls) / K, measured with
// CUDA events on the stream: what a call costs in a sequence of calls, launch included. Every
// pair's results are compared (maps, updates and gathers bit for bit; sums within the bound of
// two double sums in different orders) and the program fails if one differs. Not a test: CI
// builds it and never runs it (it exits 77 without a GPU).
#include <cub/device/device_for.cuh>
#include <cub/device/device_reduce.cuh>
#include <cub/device/device_transform.cuh>
#include <thrust/execution_policy.h>
#include <thrust/gather.h>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/logical.h>
#include <thrust/transform.h>
#include <thrust/transform_reduce.h>

#include <bilevel/policy/cuda.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <limits>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {
using G = bilevel::policy::cuda<float>;
using bilevel::policy::cuda_detail::stream;

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

struct relu {
  using bilevel_device_callable = void;
  __host__ __device__ float operator()(float x) const { return x > 0.0f ? x : 0.0f; }
};
/// SGD with momentum on (θ, v, g): v = μv + g; θ -= η v (the optimizers' zip_apply form).
struct momentum_step {
  using bilevel_device_callable = void;
  float lr, mu;
  __host__ __device__ void operator()(float& theta, float& v, const float& g) const {
    v = mu * v + g;
    theta -= lr * v;
  }
};
/// The same update as an index functor over raw pointers, for DeviceFor and for_each_n.
struct momentum_index {
  float *theta, *v;
  const float* g;
  float lr, mu;
  __host__ __device__ void operator()(std::size_t i) const {
    v[i] = mu * v[i] + g[i];
    theta[i] -= lr * v[i];
  }
};
struct product_at {
  const float *x, *y;
  __host__ __device__ double operator()(std::size_t i) const { return double(x[i]) * double(y[i]); }
};
struct nonfinite_at {
  const float* x;
  __host__ __device__ int operator()(std::size_t i) const { return ::cuda::std::isfinite(x[i]) ? 0 : 1; }
};
struct is_finite {
  __host__ __device__ bool operator()(float x) const { return ::cuda::std::isfinite(x); }
};
struct max_int {
  __host__ __device__ int operator()(int a, int b) const { return a > b ? a : b; }
};
struct plus_double {
  __host__ __device__ double operator()(double a, double b) const { return a + b; }
};

__global__ void add_to_entry(const double* sum, float* entry) { *entry += float(*sum); }
__global__ void mark_entry(const int* flag, float* entry) {
  if (*flag) *entry = 1.0f;
}

/// Device scratch that CUB's two-phase calls size once and reuse.
struct scratch {
  void* p = nullptr;
  std::size_t bytes = 0;
  void reserve(std::size_t b) {
    if (b <= bytes) return;
    if (p) check(cudaFree(p), "cudaFree");
    check(cudaMalloc(&p, b), "cudaMalloc");
    bytes = b;
  }
  ~scratch() {
    if (p) cudaFree(p);
  }
};

/// Thrust's temporary storage from one block kept across calls: its default allocator would
/// cudaMalloc and cudaFree at every reduction (and cudaFree waits for the device), timing the
/// allocations rather than the reduction. A bump allocator, reset when nothing is out.
struct kept_block_allocator {
  using value_type = char;
  char* block = nullptr;
  std::size_t size = 0, used = 0, out = 0;
  std::vector<char*> extra;  // allocations that did not fit while the block was in use
  char* allocate(std::ptrdiff_t n) {
    const std::size_t bytes = (std::size_t(n) + 255) / 256 * 256;
    if (out == 0 && bytes > size) {
      if (block) check(cudaFree(block), "cudaFree");
      check(cudaMalloc(reinterpret_cast<void**>(&block), bytes), "cudaMalloc");
      size = bytes;
      used = 0;
    }
    ++out;
    if (used + bytes <= size) {
      char* p = block + used;
      used += bytes;
      return p;
    }
    char* p = nullptr;
    check(cudaMalloc(reinterpret_cast<void**>(&p), bytes), "cudaMalloc");
    extra.push_back(p);
    return p;
  }
  void deallocate(char* p, std::size_t) {
    if (auto it = std::find(extra.begin(), extra.end(), p); it != extra.end()) {
      check(cudaFree(p), "cudaFree");
      extra.erase(it);
    }
    if (--out == 0) used = 0;
  }
  ~kept_block_allocator() {
    if (block) cudaFree(block);
  }
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

/// Median microseconds per call of f over `rounds` rounds of `calls` back-to-back calls.
template <class F>
double time_per_call_us(F&& f, std::size_t calls, std::size_t rounds) {
  cudaEvent_t a, b;
  check(cudaEventCreate(&a), "cudaEventCreate");
  check(cudaEventCreate(&b), "cudaEventCreate");
  for (int i = 0; i < 10; ++i) f();
  check(cudaStreamSynchronize(stream()), "cudaStreamSynchronize");
  std::vector<double> per_call;
  for (std::size_t r = 0; r < rounds; ++r) {
    check(cudaEventRecord(a, stream()), "cudaEventRecord");
    for (std::size_t i = 0; i < calls; ++i) f();
    check(cudaEventRecord(b, stream()), "cudaEventRecord");
    check(cudaEventSynchronize(b), "cudaEventSynchronize");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, a, b), "cudaEventElapsedTime");
    per_call.push_back(1e3 * double(ms) / double(calls));
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return median(per_call);
}

struct row {
  std::string primitive;
  std::size_t n;
  std::vector<std::pair<std::string, double>> us;  // implementation, µs per call (the first is bilevel's)
};

std::string fmt(double x, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, x);
  return buf;
}

void require(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error("bench_gpu_primitives: results differ: " + what);
}

std::vector<row> run_size(std::size_t n, std::size_t rounds) {
  const std::size_t calls = n >= 1000000 ? 50 : 200;
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> hx(n), hy(n);
  for (auto& e : hx) e = u(rng);
  for (auto& e : hy) e = u(rng);
  const auto x = G::from_host(hx), y = G::from_host(hy);
  const float* xp = x.data();
  const float* yp = y.data();
  auto out = G::zeros(n), out_cub = G::zeros(n), out_thrust = G::zeros(n);
  auto entry = G::zeros(3);
  scratch tmp;
  double* d_sum = nullptr;
  int* d_flag = nullptr;
  check(cudaMalloc(&d_sum, sizeof(double)), "cudaMalloc");
  check(cudaMalloc(&d_flag, sizeof(int)), "cudaMalloc");
  kept_block_allocator thrust_storage;
  const auto par = thrust::cuda::par_nosync(thrust_storage).on(stream());
  std::vector<row> rows;
  const std::string size = std::to_string(n);

  // ---- map ----
  {
    row r{"map (ReLU)", n, {}};
    r.us.emplace_back("bilevel", time_per_call_us([&] { G::transform(x, out, relu{}); }, calls, rounds));
    float* oc = out_cub.data();
    r.us.emplace_back("CUB", time_per_call_us([&] {
      check(cub::DeviceTransform::Transform(xp, oc, n, relu{}, stream()), "cub::DeviceTransform");
    }, calls, rounds));
    float* ot = out_thrust.data();
    r.us.emplace_back("Thrust", time_per_call_us([&] { thrust::transform(par, xp, xp + n, ot, relu{}); }, calls, rounds));
    require(G::equal(out, out_cub) && G::equal(out, out_thrust), "map at n = " + size);
    rows.push_back(r);
  }
  // ---- update: the same number of calls from the same start, so the three end equal ----
  {
    row r{"update (SGD momentum)", n, {}};
    auto theta = G::from_host(hx), v = G::zeros(n);
    auto theta_c = theta, v_c = v, theta_t = theta, v_t = v;
    const float lr = 1e-3f, mu = 0.9f;
    r.us.emplace_back("bilevel", time_per_call_us([&] { G::zip_apply(momentum_step{lr, mu}, theta, v, y); },
                                                  calls, rounds));
    const momentum_index cub_op{theta_c.data(), v_c.data(), yp, lr, mu};
    r.us.emplace_back("CUB", time_per_call_us([&] {
      check(cub::DeviceFor::Bulk(n, cub_op, stream()), "cub::DeviceFor::Bulk");
    }, calls, rounds));
    const momentum_index thrust_op{theta_t.data(), v_t.data(), yp, lr, mu};
    r.us.emplace_back("Thrust", time_per_call_us([&] {
      thrust::for_each_n(par, thrust::counting_iterator<std::size_t>(0), n, thrust_op);
    }, calls, rounds));
    require(G::equal(theta, theta_c) && G::equal(theta, theta_t) && G::equal(v, v_c) && G::equal(v, v_t),
            "update at n = " + size);
    rows.push_back(r);
  }
  // ---- dot into a vector entry, on the device ----
  double abs_sum = 0;
  for (std::size_t i = 0; i < n; ++i) abs_sum += std::abs(double(hx[i]) * double(hy[i]));
  const double sum_bound = 2.0 * double(n) * std::ldexp(1.0, -53) * abs_sum;  // two n-term double sums
  {
    row r{"dot into an entry", n, {}};
    r.us.emplace_back("bilevel", time_per_call_us([&] { G::add_scaled_dot_into(x, y, 1.0f, entry, 0); }, calls, rounds));
    std::size_t bytes = 0;
    const auto first = thrust::counting_iterator<std::size_t>(0);
    check(cub::DeviceReduce::TransformReduce(nullptr, bytes, first, d_sum, n, plus_double{}, product_at{xp, yp}, 0.0,
                                             stream()),
          "cub::DeviceReduce::TransformReduce");
    tmp.reserve(bytes);
    float* e1 = entry.data() + 1;
    r.us.emplace_back("CUB", time_per_call_us([&] {
      std::size_t b = tmp.bytes;
      check(cub::DeviceReduce::TransformReduce(tmp.p, b, first, d_sum, n, plus_double{}, product_at{xp, yp}, 0.0,
                                               stream()),
            "cub::DeviceReduce::TransformReduce");
      add_to_entry<<<1, 1, 0, stream()>>>(d_sum, e1);
    }, calls, rounds));
    // Both entries took as many additions of the same dot, each total rounded to float and
    // added in float: every addition rounds at |entry| 2^-24 at most, and the totals differ by
    // the two double sums' bound, so |e0 - e1| <= adds (|e0| 2^-22 + bound).
    const auto e = G::to_host(entry);
    const double adds = 10.0 + double(rounds * calls);
    require(std::abs(double(e[0]) - double(e[1])) <= adds * (std::abs(double(e[0])) * std::ldexp(1.0, -22) + sum_bound),
            "dot into an entry at n = " + size);
    rows.push_back(r);
  }
  // ---- dot to the host ----
  {
    row r{"dot to the host", n, {}};
    double ours = 0, cub_value = 0, thrust_value = 0;
    r.us.emplace_back("bilevel", time_per_call_us([&] { ours = G::dot(x, y); }, calls, rounds));
    const auto first = thrust::counting_iterator<std::size_t>(0);
    r.us.emplace_back("CUB", time_per_call_us([&] {
      std::size_t b = tmp.bytes;
      check(cub::DeviceReduce::TransformReduce(tmp.p, b, first, d_sum, n, plus_double{}, product_at{xp, yp}, 0.0,
                                               stream()),
            "cub::DeviceReduce::TransformReduce");
      check(cudaMemcpyAsync(&cub_value, d_sum, sizeof(double), cudaMemcpyDeviceToHost, stream()), "cudaMemcpyAsync");
      check(cudaStreamSynchronize(stream()), "cudaStreamSynchronize");
    }, calls, rounds));
    r.us.emplace_back("Thrust", time_per_call_us([&] {
      thrust_value = thrust::transform_reduce(par, first, first + n, product_at{xp, yp}, 0.0, plus_double{});
    }, calls, rounds));
    require(std::abs(ours - cub_value) <= sum_bound && std::abs(ours - thrust_value) <= sum_bound,
            "dot at n = " + size + " (" + fmt(ours, 17) + ", " + fmt(cub_value, 17) + ", " + fmt(thrust_value, 17) + ")");
    rows.push_back(r);
  }
  // ---- finiteness: into an entry, and to the host; checked on clean and on poisoned data ----
  {
    row r{"finite? into an entry", n, {}};
    r.us.emplace_back("bilevel", time_per_call_us([&] { G::mark_nonfinite(x, entry, 2); }, calls, rounds));
    std::size_t bytes = 0;
    const auto first = thrust::counting_iterator<std::size_t>(0);
    check(cub::DeviceReduce::TransformReduce(nullptr, bytes, first, d_flag, n, max_int{}, nonfinite_at{xp}, 0, stream()),
          "cub::DeviceReduce::TransformReduce");
    tmp.reserve(bytes);
    float* e2 = entry.data() + 2;
    const auto cub_mark = [&](const float* data) {
      std::size_t b = tmp.bytes;
      check(cub::DeviceReduce::TransformReduce(tmp.p, b, first, d_flag, n, max_int{}, nonfinite_at{data}, 0,
                                               stream()),
            "cub::DeviceReduce::TransformReduce");
      mark_entry<<<1, 1, 0, stream()>>>(d_flag, e2);
    };
    r.us.emplace_back("CUB", time_per_call_us([&] { cub_mark(xp); }, calls, rounds));
    require(G::to_host(entry)[2] == 0.0f, "a NaN reported in finite data at n = " + size);
    rows.push_back(r);

    row h{"finite? to the host", n, {}};
    bool ours = false, theirs = false;
    h.us.emplace_back("bilevel", time_per_call_us([&] { ours = G::all_finite(x); }, calls, rounds));
    h.us.emplace_back("Thrust", time_per_call_us([&] { theirs = thrust::all_of(par, xp, xp + n, is_finite{}); },
                                                 calls, rounds));
    require(ours && theirs, "all finite at n = " + size);
    auto poisoned = hx;
    poisoned[n / 2] = std::numeric_limits<float>::quiet_NaN();
    const auto p = G::from_host(poisoned);
    auto marks = G::zeros(3);
    G::mark_nonfinite(p, marks, 0);
    G::fill(entry, 0.0f);
    cub_mark(p.data());
    require(!G::all_finite(p) && !thrust::all_of(par, p.data(), p.data() + n, is_finite{}) &&
                G::to_host(marks)[0] == 1.0f && G::to_host(entry)[2] == 1.0f,
            "a NaN missed at n = " + size);
    rows.push_back(h);
  }
  // ---- gather: a fixed permutation (a shuffled batch's rows, element by element) ----
  {
    row r{"gather (bilevel: host index looked up)", n, {}};
    std::vector<std::int64_t> index(n);
    for (std::size_t i = 0; i < n; ++i) index[i] = std::int64_t(i);
    std::shuffle(index.begin(), index.end(), rng);
    const auto src = G::matrix_from_host(1, n, hx);
    G::matrix gathered;
    r.us.emplace_back("bilevel", time_per_call_us([&] { G::gather(src, index, 1, n, gathered); }, calls, rounds));
    std::int64_t* d_index = nullptr;
    check(cudaMalloc(&d_index, n * sizeof(std::int64_t)), "cudaMalloc");
    check(cudaMemcpy(d_index, index.data(), n * sizeof(std::int64_t), cudaMemcpyHostToDevice), "cudaMemcpy");
    float* ot = out_thrust.data();
    r.us.emplace_back("Thrust", time_per_call_us([&] { thrust::gather(par, d_index, d_index + n, xp, ot); },
                                                 calls, rounds));
    const auto g = G::matrix_to_host(gathered);
    const auto t = G::to_host(out_thrust);
    require(std::equal(g.begin(), g.end(), t.begin()), "gather at n = " + size);
    rows.push_back(r);
    // The same gather without the host side: the policy's kernel over the device index.
    row k{"gather (kernel alone)", n, {}};
    float* ob = out.data();
    namespace cd = bilevel::policy::cuda_detail;
    k.us.emplace_back("bilevel", time_per_call_us([&] {
      cd::for_each_index(n, cd::gather_op<float>{d_index, xp, ob}, "gather");
    }, calls, rounds));
    k.us.emplace_back("Thrust", r.us.back().second);
    require(G::equal(out, out_thrust), "gather kernel at n = " + size);
    cudaFree(d_index);
    rows.push_back(k);
  }
  G::synchronize();
  cudaFree(d_sum);
  cudaFree(d_flag);
  return rows;
}

std::string table(const std::vector<row>& rows) {
  std::ostringstream s;
  s << "| primitive | n | bilevel µs | CUB µs | Thrust µs | fastest other / bilevel |\n";
  s << "| --- | ---: | ---: | ---: | ---: | ---: |\n";
  for (const auto& r : rows) {
    double ours = r.us.front().second, cub = -1, thrust = -1, best = std::numeric_limits<double>::infinity();
    for (const auto& [who, us] : r.us) {
      if (who == "CUB") cub = us;
      if (who == "Thrust") thrust = us;
      if (who != "bilevel") best = std::min(best, us);
    }
    s << "| " << r.primitive << " | " << r.n << " | " << fmt(ours, 2) << " | " << (cub < 0 ? "-" : fmt(cub, 2))
      << " | " << (thrust < 0 ? "-" : fmt(thrust, 2)) << " | " << fmt(best / ours, 2) << " |\n";
  }
  return s.str();
}
}  // namespace

int main(int argc, char** argv) {
  std::string out_path;
  std::size_t rounds = 9;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--out") && i + 1 < argc) {
      out_path = argv[++i];
    } else if (!std::strcmp(argv[i], "--rounds") && i + 1 < argc) {
      rounds = std::stoul(argv[++i]);
    } else {
      std::cerr << "usage: bench_gpu_primitives [--out results.md] [--rounds 9]\n";
      return 2;
    }
  }
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::cerr << "bench_gpu_primitives: no CUDA device; nothing measured\n";
    return 77;
  }
  try {
    cudaDeviceProp prop{};
    check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
    std::vector<row> rows;
    for (std::size_t n : {std::size_t(1000), std::size_t(235146), std::size_t(10000000)}) {
      auto r = run_size(n, rounds);
      rows.insert(rows.end(), r.begin(), r.end());
    }
    std::ostringstream s;
    s << "bilevel's CUDA kernels against CUB and Thrust (CCCL " << CCCL_MAJOR_VERSION << "." << CCCL_MINOR_VERSION
      << ") on " << prop.name << ", float, median of " << rounds
      << " rounds of back-to-back calls on one stream; a ratio below 1 means the library call is faster.\n\n"
      << table(rows);
    std::cout << s.str();
    if (!out_path.empty()) std::ofstream(out_path) << s.str();
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
  return 0;
}
