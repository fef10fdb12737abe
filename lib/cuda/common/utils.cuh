// Small host/device helpers shared by every CUDA arch folder.
#pragma once

#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>

#include "ac4k_kernel/types.h"

namespace ac4k {

// Returns the error of the kernel launch just made (launch-config errors surface here).
inline cudaError_t last_launch_error() { return cudaGetLastError(); }

__host__ __device__ inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline bool is_aligned(const void* p, uintptr_t bytes) {
  return (reinterpret_cast<uintptr_t>(p) % bytes) == 0;
}

// Rows of a 16-bit [B, S, H, D] view readable / writable as 16-byte vectors: data 16-byte aligned,
// B / S / H strides multiples of 8 elements.
inline bool rows_aligned_16b(const void* p, const TokenView& t) {
  return is_aligned(p, 16) && t.stride_b % 8 == 0 && t.stride_s % 8 == 0 && t.stride_h % 8 == 0;
}

// Element offset of row r in a RowView. ndim == 1 is the common, division-free case.
__device__ __forceinline__ int64_t row_offset(const RowView& v, int64_t r) {
  if (v.ndim == 1) return r * v.stride[0];
  int64_t off = 0;
#pragma unroll
  for (int d = RowView::kMaxDims - 1; d >= 0; --d) {
    if (d < v.ndim) {
      const int64_t i = r % v.size[d];
      r /= v.size[d];
      off += i * v.stride[d];
    }
  }
  return off;
}

// n / d for a divisor fixed at launch and 0 <= n < 2^31, as a multiply-high and a shift
// (Granlund-Montgomery, as CUTLASS's FastDivmod): m = ceil(2^(31 + l) / d), l = ceil(log2 d).
struct FastDiv {
  uint32_t d = 1, mul = 0, shr = 0;
  FastDiv() = default;
  __host__ explicit FastDiv(uint32_t divisor) : d(divisor) {
    if (d <= 1) return;
    uint32_t l = 0;
    while ((uint64_t(1) << l) < d) ++l;
    const uint32_t p = 31 + l;
    mul = uint32_t(((uint64_t(1) << p) + d - 1) / d);
    shr = p - 32;
  }
  __device__ __forceinline__ uint32_t div(uint32_t n) const { return d == 1 ? n : __umulhi(n, mul) >> shr; }
};

// query(dev) for the current device once, then from `memo` (the caller's static array, one per
// question, zero until asked): for what launchers would otherwise ask the driver on every launch.
// A result <= 0 (a failed query) is returned and not kept; so is 0 when there is no current device.
template <typename Query>
inline int once_per_device(std::atomic<int> (&memo)[64], Query&& query) {
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return 0;
  const bool keep = dev >= 0 && dev < 64;
  int n = keep ? memo[dev].load(std::memory_order_relaxed) : 0;
  if (n > 0) return n;
  n = query(dev);
  if (n > 0 && keep) memo[dev].store(n, std::memory_order_relaxed);
  return n;
}

// SMs of the current device (the persistent grids' size); 132 if the driver cannot say.
inline int sm_count() {
  static std::atomic<int> memo[64];
  const int n = once_per_device(memo, [](int dev) {
    int v = 0;
    return cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev) == cudaSuccess ? v : 0;
  });
  return n > 0 ? n : 132;
}

}  // namespace ac4k
