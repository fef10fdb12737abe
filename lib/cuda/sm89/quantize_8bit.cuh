// The 8-bit quantizers (INT8, FP8 E4M3) for sm89: quantize_int8.cu and quantize_fp8.cu instantiate
// them with their format (common/quant_format.cuh). Bit-exact with ac4k_kernel.reference.
//
// Plain loads and stores, memory-bound, and simpler than sm90a's (no row-in-registers limits):
//   per_token:   one warp a row; short rows (<= 1024 elements) stay in registers, longer ones are
//                read twice (absmax, then quantize; the second read hits L1/L2);
//   per_block:   one CTA per (b, h, block of tokens), read twice the same way;
//   per_channel: a column-absmax pass (atomicMax on the float bits: order-free, so deterministic),
//                a quantize pass, then scales = amax / qmax in place.
// W = 8: 16-byte chunks (D or cols a multiple of 8, 16-byte aligned rows); W = 1: any layout.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>

#include "ac4k_kernel/ops.h"
#include "common/math.cuh"
#include "common/quant_format.cuh"
#include "common/utils.cuh"

namespace ac4k {
namespace sm89 {

// W contiguous elements at p as float (zeros when !in).
template <typename T, int W>
__device__ __forceinline__ void load_w(const T* p, bool in, float (&v)[W]) {
  if constexpr (W == 8) {
    if (in) {
      unpack8<T>(*reinterpret_cast<const uint4*>(p), v);
      return;
    }
  } else {
    if (in) {
      v[0] = InputTraits<T>::to_float(p[0]);
      return;
    }
  }
#pragma unroll
  for (int i = 0; i < W; ++i) v[i] = 0.f;
}

template <typename Fmt, int W>
__device__ __forceinline__ void store_w(uint8_t* q, const float (&v)[W], float inv) {
  if constexpr (W == 8) {
    *reinterpret_cast<uint2*>(q) = pack8_uniform<Fmt>(v, inv);
  } else {
    q[0] = Fmt::pack1(v[0], inv);
  }
}

template <int kThreads>
__device__ __forceinline__ float cta_max(float v) {
  __shared__ float red[kThreads / 32];
  v = group_max<32>(v);
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = v;
  __syncthreads();
  v = red[0];
#pragma unroll
  for (int w = 1; w < kThreads / 32; ++w) v = fmaxf(v, red[w]);
  return v;
}

// ---------------------------------------------------------------------------------- per token
// NV > 0: the row's chunks (NV per lane) stay in registers; NV == 0: two reads of the row.
template <typename T, typename Fmt, int W, int NV>
__global__ void __launch_bounds__(256) token_kernel(const QuantizeParams p) {
  const int lane = threadIdx.x % 32;
  const int64_t row = int64_t(blockIdx.x) * 8 + threadIdx.x / 32;
  if (row >= p.rows) return;  // whole warps leave together
  const int64_t cols = p.cols;
  const T* x = static_cast<const T*>(p.x) + row_offset(p.x_rows, row);
  uint8_t* q = static_cast<uint8_t*>(p.q) + row * cols;
  float amax = 0.f;
  if constexpr (NV > 0) {
    float v[NV][W];
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int64_t e = (int64_t(j) * 32 + lane) * W;
      load_w<T, W>(x + e, e < cols, v[j]);
#pragma unroll
      for (int i = 0; i < W; ++i) amax = absmax_acc(amax, v[j][i]);
    }
    amax = group_max<32>(amax);
    const float inv = recip_scale(Fmt::kMax, amax);
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int64_t e = (int64_t(j) * 32 + lane) * W;
      if (e < cols) store_w<Fmt, W>(q + e, v[j], inv);
    }
  } else {
    for (int64_t e = int64_t(lane) * W; e < cols; e += 32 * W) {
      float v[W];
      load_w<T, W>(x + e, true, v);
#pragma unroll
      for (int i = 0; i < W; ++i) amax = absmax_acc(amax, v[i]);
    }
    amax = group_max<32>(amax);
    const float inv = recip_scale(Fmt::kMax, amax);
    for (int64_t e = int64_t(lane) * W; e < cols; e += 32 * W) {
      float v[W];
      load_w<T, W>(x + e, true, v);
      store_w<Fmt, W>(q + e, v, inv);
    }
  }
  if (lane == 0) p.scales[row] = __fdiv_rn(amax, Fmt::kMax);
}

template <typename T, typename Fmt, int W>
cudaError_t launch_token(const QuantizeParams& p, cudaStream_t stream) {
  const int64_t blocks = ceil_div(p.rows, 8);
  if (blocks > 0x7fffffffLL) return cudaErrorInvalidConfiguration;
  const int64_t per_lane = ceil_div(p.cols, 32 * W);
  const dim3 grid{unsigned(blocks)};
  if (per_lane <= 1) {
    token_kernel<T, Fmt, W, 1><<<grid, 256, 0, stream>>>(p);
  } else if (per_lane <= 2) {
    token_kernel<T, Fmt, W, 2><<<grid, 256, 0, stream>>>(p);
  } else if (W == 8 && per_lane <= 4) {
    token_kernel<T, Fmt, W, 4><<<grid, 256, 0, stream>>>(p);
  } else {
    token_kernel<T, Fmt, W, 0><<<grid, 256, 0, stream>>>(p);
  }
  return last_launch_error();
}

// ---------------------------------------------------------------------------------- per block
// One CTA of 256 threads per (b, h, block): chunk i of the block is token i / (D / W), chunk
// i % (D / W) of it.
template <typename T, typename Fmt, int W>
__global__ void __launch_bounds__(256) block_kernel(const QuantizeParams p, FastDiv chunks_per_token) {
  const TokenView& xv = p.xv;
  const int64_t nblk = ceil_div(xv.S, p.block_size);
  const int64_t g = blockIdx.x;
  const int64_t blk = g % nblk, h = (g / nblk) % xv.H, b = g / (nblk * xv.H);
  const int64_t s0 = blk * p.block_size;
  const uint32_t n = uint32_t(min(int64_t(p.block_size), xv.S - s0)) * chunks_per_token.d;
  const T* xb = static_cast<const T*>(p.x) + b * xv.stride_b + h * xv.stride_h + s0 * xv.stride_s;
  uint8_t* qb = static_cast<uint8_t*>(p.q) + b * p.qv.stride_b + h * p.qv.stride_h + s0 * p.qv.stride_s;
  float amax = 0.f;
  for (uint32_t i = threadIdx.x; i < n; i += 256) {
    const uint32_t t = chunks_per_token.div(i), c = i - t * chunks_per_token.d;
    float v[W];
    load_w<T, W>(xb + t * xv.stride_s + c * W, true, v);
#pragma unroll
    for (int k = 0; k < W; ++k) amax = absmax_acc(amax, v[k]);
  }
  amax = cta_max<256>(amax);
  const float inv = recip_scale(Fmt::kMax, amax);
  for (uint32_t i = threadIdx.x; i < n; i += 256) {
    const uint32_t t = chunks_per_token.div(i), c = i - t * chunks_per_token.d;
    float v[W];
    load_w<T, W>(xb + t * xv.stride_s + c * W, true, v);
    store_w<Fmt, W>(qb + t * p.qv.stride_s + c * W, v, inv);
  }
  if (threadIdx.x == 0) p.scales[g] = __fdiv_rn(amax, Fmt::kMax);
}

// ---------------------------------------------------------------------------------- per channel
// CTA (token range, b * h): thread column c = threadIdx.x % (D / W) (up to 256 / (D / W) tokens a
// pass); kQuant: quantize with the channel's amax (left in scales by the first pass), else
// atomicMax the column absmax into scales.
template <typename T, typename Fmt, int W, bool kQuant>
__global__ void __launch_bounds__(256) channel_kernel(const QuantizeParams p, int64_t tokens_per_cta) {
  const TokenView& xv = p.xv;
  const int cpt = int(xv.D / W);
  const int rows = 256 / cpt;
  const int c = threadIdx.x % cpt, r = threadIdx.x / cpt;
  if (r >= rows) return;
  const int64_t bh = blockIdx.y, b = bh / xv.H, h = bh % xv.H;
  const int64_t s0 = blockIdx.x * tokens_per_cta, s1 = min(xv.S, s0 + tokens_per_cta);
  const T* xb = static_cast<const T*>(p.x) + b * xv.stride_b + h * xv.stride_h + c * W;
  uint8_t* qb = static_cast<uint8_t*>(p.q) + b * p.qv.stride_b + h * p.qv.stride_h + c * W;
  float* sc = p.scales + bh * xv.D + c * W;
  float m[W];
  if constexpr (kQuant) {
#pragma unroll
    for (int k = 0; k < W; ++k) m[k] = recip_scale(Fmt::kMax, sc[k]);
  } else {
#pragma unroll
    for (int k = 0; k < W; ++k) m[k] = 0.f;
  }
  for (int64_t s = s0 + r; s < s1; s += rows) {
    float v[W];
    load_w<T, W>(xb + s * xv.stride_s, true, v);
    if constexpr (kQuant) {
      if constexpr (W == 8) {
        *reinterpret_cast<uint2*>(qb + s * p.qv.stride_s) = Fmt::pack8(v, m);
      } else {
        qb[s * p.qv.stride_s] = Fmt::pack1(v[0], m[0]);
      }
    } else {
#pragma unroll
      for (int k = 0; k < W; ++k) m[k] = absmax_acc(m[k], v[k]);
    }
  }
  if constexpr (!kQuant) {
#pragma unroll
    for (int k = 0; k < W; ++k) atomic_max_nonneg(sc + k, m[k]);
  }
}

template <typename T, typename Fmt, int W>
cudaError_t launch_channel(const QuantizeParams& p, cudaStream_t stream) {
  const TokenView& xv = p.xv;
  const int64_t n = xv.B * xv.H * xv.D;
  cudaError_t err = cudaMemsetAsync(p.scales, 0, n * sizeof(float), stream);
  if (err != cudaSuccess || xv.S == 0) return err;
  // About 4 CTAs an SM in all, each over a contiguous token range.
  const int64_t rows = 256 / (xv.D / W);
  const int64_t splits = std::max<int64_t>(1, std::min<int64_t>(ceil_div(512, xv.B * xv.H), ceil_div(xv.S, rows)));
  const int64_t tpc = ceil_div(xv.S, splits);
  const dim3 grid(unsigned(ceil_div(xv.S, tpc)), unsigned(xv.B * xv.H));
  channel_kernel<T, Fmt, W, false><<<grid, 256, 0, stream>>>(p, tpc);
  channel_kernel<T, Fmt, W, true><<<grid, 256, 0, stream>>>(p, tpc);
  amax_to_scale_kernel<Fmt><<<unsigned(ceil_div(n, 256)), 256, 0, stream>>>(p.scales, n);
  return last_launch_error();
}

// ---------------------------------------------------------------------------------- entry
template <typename T, typename Fmt>
cudaError_t dispatch(const QuantizeParams& p, cudaStream_t stream) {
  if (p.granularity == Granularity::PerToken) {
    bool vec = p.cols % 8 == 0 && is_aligned(p.x, 16) && is_aligned(p.q, 8);
    for (int d = 0; d < p.x_rows.ndim; ++d) vec = vec && (p.x_rows.stride[d] % 8 == 0);
    return vec ? launch_token<T, Fmt, 8>(p, stream) : launch_token<T, Fmt, 1>(p, stream);
  }
  const TokenView& xv = p.xv;
  if (xv.D == 0 || xv.D > 256 * 8) return cudaErrorNotSupported;
  const bool vec = xv.D % 8 == 0 && is_aligned(p.x, 16) && is_aligned(p.q, 8) && xv.stride_b % 8 == 0 &&
                   xv.stride_s % 8 == 0 && xv.stride_h % 8 == 0 && p.qv.stride_b % 8 == 0 &&
                   p.qv.stride_s % 8 == 0 && p.qv.stride_h % 8 == 0;
  if (p.granularity == Granularity::PerBlock) {
    if (p.block_size <= 0) return cudaErrorNotSupported;
    const int64_t grid = xv.B * xv.H * ceil_div(xv.S, p.block_size);
    if (grid > 0x7fffffffLL || int64_t(p.block_size) * xv.D >= (int64_t(1) << 31)) return cudaErrorNotSupported;
    if (vec) {
      block_kernel<T, Fmt, 8><<<unsigned(grid), 256, 0, stream>>>(p, FastDiv(uint32_t(xv.D / 8)));
    } else {
      block_kernel<T, Fmt, 1><<<unsigned(grid), 256, 0, stream>>>(p, FastDiv(uint32_t(xv.D)));
    }
    return last_launch_error();
  }
  if (!vec && xv.D > 256) return cudaErrorNotSupported;  // one thread a channel
  return vec ? launch_channel<T, Fmt, 8>(p, stream) : launch_channel<T, Fmt, 1>(p, stream);
}

template <typename Fmt>
cudaError_t quantize_8bit(const QuantizeParams& p, cudaStream_t stream) {
  const bool bf16 = p.x_dtype == ScalarType::BFloat16;
  if (!bf16 && p.x_dtype != ScalarType::Float16) return cudaErrorNotSupported;
  if (p.granularity == Granularity::PerToken) {
    if (p.rows == 0) return cudaSuccess;
  } else {
    if (p.xv.B * p.xv.H == 0) return cudaSuccess;
    if (p.granularity == Granularity::PerBlock && p.xv.S == 0) return cudaSuccess;
  }
  return bf16 ? dispatch<__nv_bfloat16, Fmt>(p, stream) : dispatch<__half, Fmt>(p, stream);
}

}  // namespace sm89
}  // namespace ac4k
