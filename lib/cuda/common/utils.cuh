// Small host/device helpers shared by every CUDA arch folder.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "ac4k_kernel/types.h"

namespace ac4k {

// Returns the error of the kernel launch just made (launch-config errors surface here).
inline cudaError_t last_launch_error() { return cudaGetLastError(); }

__host__ __device__ inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline bool is_aligned(const void* p, uintptr_t bytes) {
  return (reinterpret_cast<uintptr_t>(p) % bytes) == 0;
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

}  // namespace ac4k
