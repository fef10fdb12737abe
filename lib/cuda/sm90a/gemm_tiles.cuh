// Pieces the persistent sm90a GEMMs (gemm_fp8.cu, gemm_nvfp4.cu) share: the tile order, the bias
// load, the grid size.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "ac4k_kernel/types.h"

namespace ac4k {
namespace sm90a {

// Tile t -> (m-block, n-block): bands of `group` n-blocks (the last one may be narrower), m fastest
// inside a band, so the CTAs running at one time share a few B panels and A rows in L2.
struct TileOrder {
  int m_blocks, n_blocks, group;
  __device__ __forceinline__ void operator()(int t, int& mb, int& nb) const {
    const int band = t / (group * m_blocks);
    const int n0 = band * group;
    const int width = min(group, n_blocks - n0);
    const int r = t - band * group * m_blocks;
    mb = r / width;
    nb = n0 + r % width;
  }
};

__device__ __forceinline__ float load_bias(const void* bias, ScalarType dtype, int64_t n) {
  if (dtype == ScalarType::Float32) return static_cast<const float*>(bias)[n];
  if (dtype == ScalarType::Float16) return __half2float(static_cast<const __half*>(bias)[n]);
  return __bfloat162float(static_cast<const __nv_bfloat16*>(bias)[n]);
}

}  // namespace sm90a
}  // namespace ac4k
