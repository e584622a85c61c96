// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Device copies of the host index maps that `gather` and `scatter_add` take.
///
/// The concept passes those maps as host vectors (std::vector<std::int64_t>), computed once
/// per layer shape by the layers. Uploading one at every call would put a host-to-device copy
/// in every convolution and pooling pass, so each thread keeps its most recently used maps on
/// the device, keyed by content (a hit costs one memcmp on the host), together with the
/// inverse map that scatter-add runs on (built on the first scatter through that map). A
/// changed map is simply a new key; the least recently used ones are dropped past 32 maps or
/// 256 MiB.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <list>
#include <utility>
#include <vector>

#include "bilevel/policy/cuda/context.cuh"

namespace bilevel::policy::cuda_detail {

struct index_plan {
  std::vector<std::int64_t> key;        ///< the host map
  device_buffer<std::int64_t> index;    ///< the same on the device
  std::int64_t max_index = -1;          ///< largest entry (−1: all padding)
  // The inverse (for scatter-add): destination target[t] receives the sources
  // sources[offsets[t], offsets[t+1]), ascending.
  bool has_inverse = false;
  std::size_t targets = 0;
  device_buffer<std::int64_t> target, offsets, sources;

  [[nodiscard]] std::size_t bytes() const {
    return sizeof(std::int64_t) * (2 * key.size() + target.size() + offsets.size() + sources.size());
  }
};

inline void upload(const std::vector<std::int64_t>& host, device_buffer<std::int64_t>& dev) {
  dev.resize(host.size());
  copy_to_device(dev.data(), host.data(), host.size() * sizeof(std::int64_t));
}

class plan_cache {
 public:
  static constexpr std::size_t max_plans = 32;
  static constexpr std::size_t max_bytes = std::size_t(256) << 20;

  static plan_cache& get() {
    thread_local plan_cache c;
    return c;
  }

  /// The plan for `index`, uploaded now if it is not among the cached ones.
  index_plan& find(const std::vector<std::int64_t>& index) {
    if (capture_discarded_since(seen_discarded_)) plans_.clear();  // its queued uploads never ran
    for (auto it = plans_.begin(); it != plans_.end(); ++it)
      if (it->key.size() == index.size() &&
          (index.empty() || std::memcmp(it->key.data(), index.data(), index.size() * sizeof(std::int64_t)) == 0)) {
        plans_.splice(plans_.begin(), plans_, it);  // most recently used first
        return plans_.front();
      }
    index_plan p;
    p.key = index;
    p.max_index = index.empty() ? -1 : *std::max_element(index.begin(), index.end());
    upload(p.key, p.index);
    plans_.push_front(std::move(p));
    trim();
    return plans_.front();
  }

  /// Builds the inverse map of `p` if it has none yet.
  void ensure_inverse(index_plan& p) {
    if (p.has_inverse) return;
    std::vector<std::pair<std::int64_t, std::int64_t>> pairs;  // (destination, source), sorted
    pairs.reserve(p.key.size());
    for (std::size_t i = 0; i < p.key.size(); ++i)
      if (p.key[i] >= 0) pairs.emplace_back(p.key[i], std::int64_t(i));
    std::sort(pairs.begin(), pairs.end());
    std::vector<std::int64_t> target, offsets, sources;
    sources.reserve(pairs.size());
    for (std::size_t k = 0; k < pairs.size(); ++k) {
      if (k == 0 || pairs[k].first != pairs[k - 1].first) {
        target.push_back(pairs[k].first);
        offsets.push_back(std::int64_t(k));
      }
      sources.push_back(pairs[k].second);
    }
    offsets.push_back(std::int64_t(pairs.size()));
    upload(target, p.target);
    upload(offsets, p.offsets);
    upload(sources, p.sources);
    p.targets = target.size();
    p.has_inverse = true;
  }

 private:
  void trim() {
    std::size_t bytes = 0;
    for (const auto& p : plans_) bytes += p.bytes();
    while (plans_.size() > 1 && (plans_.size() > max_plans || bytes > max_bytes)) {
      bytes -= plans_.back().bytes();
      plans_.pop_back();
    }
  }
  std::list<index_plan> plans_;
  std::uint64_t seen_discarded_ = 0;  ///< discarded_captures() when plans_ was last known good
};

}  // namespace bilevel::policy::cuda_detail
