// quantize_nvfp4 for sm90a: E2M1 values in blocks of 16 along the last dim, E4M3 block scales
// (plain or 128x4-swizzled), FP32 global scale computed on the GPU. Bit-exact with
// ac4k_kernel.reference.quantize_nvfp4.
//
// The global scale depends on the whole tensor's absmax, so without a given global scale x is
// read twice: an absmax pass (atomic max into a scratch float), then the quantize pass, which
// reads the absmax from device memory (no host sync).
#include <cuda_runtime.h>

#include <algorithm>

#include "ac4k_kernel/ops.h"
#include "common/math.cuh"
#include "common/utils.cuh"

namespace ac4k {
namespace sm90a {

constexpr int kThreads = 256;
constexpr float kE2M1Max = 6.f;
constexpr float kGlobalDiv = 448.f * 6.f;

// (row, 16-block column) of block blk; 32-bit division whenever it fits (64-bit is ~10x dearer).
__device__ __forceinline__ void split_block(int64_t blk, int64_t per_row, int64_t& row, int64_t& cb) {
  if ((blk | per_row) < 0x100000000LL) {
    const uint32_t r = uint32_t(blk) / uint32_t(per_row);
    row = r;
    cb = uint32_t(blk) - r * uint32_t(per_row);
  } else {
    row = blk / per_row;
    cb = blk % per_row;
  }
}

// Two threads per 16-block, 8 elements (one 16-byte load) each: a warp reads 512 contiguous
// bytes per load instruction. (One thread per block, with two loads 32 bytes apart, ran at 64% of
// copy bandwidth: docs/perf-notes.md.)
template <typename T>
__device__ __forceinline__ void load_half_block(const QuantizeNvfp4Params& p, int64_t half, float (&v)[8]) {
  const T* x = static_cast<const T*>(p.x);
  if (p.x_rows.ndim == 1 && p.x_rows.stride[0] == p.cols) {  // dense rows: no index division
    x += half * 8;
  } else {
    int64_t row, cb;
    split_block(half, p.cols / 8, row, cb);
    x += row_offset(p.x_rows, row) + cb * 8;
  }
  unpack8<T>(ldg_stream(x), v);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) nvfp4_amax_kernel(const QuantizeNvfp4Params p, int64_t nhalf) {
  float m = 0.f;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < nhalf; i += int64_t(gridDim.x) * kThreads) {
    float v[8];
    load_half_block<T>(p, i, v);
#pragma unroll
    for (int k = 0; k < 8; ++k) m = absmax_acc(m, v[k]);
  }
  __shared__ float warp_max[kThreads / 32];
  m = group_max<32>(m);
  if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32] = m;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kThreads / 32; ++w) m = fmaxf(m, warp_max[w]);
    atomic_max_nonneg(p.amax_scratch, m);
  }
}

// Byte offset of block scale (row r, column c) in the 128x4 tiled layout (reference.swizzle_scales_128x4).
__device__ __forceinline__ int64_t swizzled_offset(int64_t r, int64_t c, int64_t cols_padded) {
  return ((r / 128) * (cols_padded / 4) + c / 4) * 512 + (r % 32) * 16 + ((r % 128) / 32) * 4 + (c % 4);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) nvfp4_quantize_kernel(const QuantizeNvfp4Params p, int64_t nhalf) {
  float gs, inv_gs;
  if (p.global_scale_in != nullptr) {
    gs = *p.global_scale_in;
    inv_gs = recip_scale(1.f, gs);
  } else {
    const float amax = *p.amax_scratch;
    gs = __fdiv_rn(amax, kGlobalDiv);
    inv_gs = recip_scale(kGlobalDiv, amax);
  }
  const int64_t half = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (half == 0) *p.global_scale = gs;
  // nhalf is even, so both threads of a block are in or out together (the shuffle needs both).
  const bool in = half < nhalf;
  float v[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  if (in) load_half_block<T>(p, half, v);
  float bamax = 0.f;
#pragma unroll
  for (int k = 0; k < 8; ++k) bamax = absmax_acc(bamax, v[k]);
  bamax = fmaxf(bamax, __shfl_xor_sync(0xffffffffu, bamax, 1));
  if (!in) return;
  const uint8_t sf = e4m3(__fdiv_rn(__fmul_rn(bamax, inv_gs), kE2M1Max));
  const float inv = recip_scale(1.f, __fmul_rn(e4m3_to_float(sf), gs));
  uint32_t w = 0;
#pragma unroll
  for (int k = 0; k < 8; ++k) w |= e2m1(__fmul_rn(v[k], inv)) << (4 * k);
  __stcs(reinterpret_cast<uint32_t*>(p.q) + half, w);
  if (half & 1) return;
  const int64_t blk = half / 2, per_row = p.cols / 16;
  uint8_t* scales = static_cast<uint8_t*>(p.block_scales);
  if (p.swizzled) {
    int64_t row, cb;
    split_block(blk, per_row, row, cb);
    scales[swizzled_offset(row, cb, ceil_div(per_row, 4) * 4)] = sf;
  } else {
    scales[blk] = sf;
  }
}

template <typename T>
static cudaError_t run(const QuantizeNvfp4Params& p, cudaStream_t stream) {
  const int64_t nhalf = p.rows * (p.cols / 8);  // 8-element halves of the 16-blocks
  if (p.global_scale_in == nullptr) {
    cudaError_t err = cudaMemsetAsync(p.amax_scratch, 0, sizeof(float), stream);
    if (err != cudaSuccess) return err;
    if (nhalf > 0) {
      // A few waves of a grid-stride loop: one atomic per CTA.
      const int64_t grid = std::min<int64_t>(ceil_div(nhalf, kThreads), 132 * 8);
      nvfp4_amax_kernel<T><<<unsigned(grid), kThreads, 0, stream>>>(p, nhalf);
    }
  }
  const int64_t grid = std::max<int64_t>(1, ceil_div(nhalf, kThreads));
  if (grid > 0x7fffffffLL) return cudaErrorInvalidConfiguration;
  nvfp4_quantize_kernel<T><<<unsigned(grid), kThreads, 0, stream>>>(p, nhalf);
  return last_launch_error();
}

}  // namespace sm90a

cudaError_t quantize_nvfp4(const QuantizeNvfp4Params& p, cudaStream_t stream) {
  if (p.cols % 16 != 0 || !is_aligned(p.x, 16) || !is_aligned(p.q, 4)) return cudaErrorNotSupported;
  for (int d = 0; d < p.x_rows.ndim; ++d) {
    if (p.x_rows.stride[d] % 8 != 0) return cudaErrorNotSupported;
  }
  switch (p.x_dtype) {
    case ScalarType::BFloat16: return sm90a::run<__nv_bfloat16>(p, stream);
    case ScalarType::Float16: return sm90a::run<__half>(p, stream);
    default: return cudaErrorNotSupported;
  }
}

}  // namespace ac4k
