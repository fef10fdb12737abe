// The 8-bit quantizer family for sm90a (INT8 and FP8 E4M3 share it; quantize_int8.cu and
// quantize_fp8.cu instantiate it with their format). Bit-exact with ac4k_kernel.reference.
//
// All granularities are memory-bound. Each thread owns chunks of 8 contiguous elements (one
// 16-byte streaming load), keeps them in registers, the group's absmax is reduced by shuffles
// (and shared memory across warps), then values are scaled and packed into 8-byte stores.
//   per_token:   RT threads share one row (a row sits in registers, x is read once);
//   per_block:   one CTA per (b, h, block of tokens);
//   per_channel: absmax over all tokens needs x twice: a column-max pass with atomics, then a
//                quantize pass, then scales = amax / qmax in place.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>

#include "ac4k_kernel/ops.h"
#include "common/math.cuh"
#include "common/quant_format.cuh"
#include "common/utils.cuh"

namespace ac4k {
namespace sm90a {

// The formats live in common/quant_format.cuh (shared with the sm89 kernels).
using ac4k::Fp8Format;
using ac4k::Int8Format;
using ac4k::pack8_uniform;

template <int RT>
__host__ __device__ constexpr int block_threads() { return RT > 256 ? RT : 256; }

// Max over the whole CTA (all threads must call it).
template <int kBlock>
__device__ __forceinline__ float block_max(float v) {
  __shared__ float warp_max[kBlock / 32];
  v = group_max<32>(v);
  if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32] = v;
  __syncthreads();
#pragma unroll
  for (int w = 0; w < kBlock / 32; ++w) v = fmaxf(v, warp_max[w]);
  return v;
}

template <typename T>
__device__ __forceinline__ void load8(const T* p, bool in, float (&v)[8]) {
  if (in) {
    unpack8<T>(ldg_stream(p), v);
  } else {
#pragma unroll
    for (int i = 0; i < 8; ++i) v[i] = 0.f;
  }
}

// ---------------------------------------------------------------------------------- per token
// VEC: chunks of 8 elements (16-byte loads); else 1 element per chunk (any cols, any alignment).
template <typename T, typename Fmt, int RT, int NV, bool VEC>
__global__ void __launch_bounds__(block_threads<RT>()) quantize_per_token_kernel(const QuantizeParams p) {
  constexpr int kBlock = block_threads<RT>();
  constexpr int W = VEC ? 8 : 1;
  const int t = threadIdx.x % RT;
  const int64_t cols = p.cols;
  const int64_t row = int64_t(blockIdx.x) * (kBlock / RT) + threadIdx.x / RT;
  const bool active = row < p.rows;

  float v[NV][8];
  float amax = 0.f;
  const T* xr = static_cast<const T*>(p.x) + (active ? row_offset(p.x_rows, row) : 0);
#pragma unroll
  for (int c = 0; c < NV; ++c) {
    const int64_t e = (int64_t(c) * RT + t) * W;
    const bool in = active && e < cols;
    if constexpr (VEC) {
      load8<T>(xr + e, in, v[c]);
    } else {
      v[c][0] = in ? InputTraits<T>::to_float(xr[e]) : 0.f;
    }
#pragma unroll
    for (int i = 0; i < W; ++i) amax = absmax_acc(amax, v[c][i]);
  }
  if constexpr (RT <= 32) {
    amax = group_max<RT>(amax);
  } else {
    amax = block_max<kBlock>(amax);  // one row per CTA
  }
  if (!active) return;

  const float inv = recip_scale(Fmt::kMax, amax);
  uint8_t* qr = static_cast<uint8_t*>(p.q) + row * cols;
#pragma unroll
  for (int c = 0; c < NV; ++c) {
    const int64_t e = (int64_t(c) * RT + t) * W;
    if (e >= cols) continue;
    if constexpr (VEC) {
      __stcs(reinterpret_cast<uint2*>(qr + e), pack8_uniform<Fmt>(v[c], inv));
    } else {
      qr[e] = Fmt::pack1(v[c][0], inv);
    }
  }
  if (t == 0) p.scales[row] = __fdiv_rn(amax, Fmt::kMax);
}

template <typename T, typename Fmt, int RT, int NV, bool VEC>
cudaError_t launch_per_token(const QuantizeParams& p, cudaStream_t stream) {
  constexpr int kBlock = block_threads<RT>();
  const int64_t blocks = ceil_div(p.rows, kBlock / RT);
  if (blocks > 0x7fffffffLL) return cudaErrorInvalidConfiguration;
  quantize_per_token_kernel<T, Fmt, RT, NV, VEC><<<dim3(unsigned(blocks)), kBlock, 0, stream>>>(p);
  return last_launch_error();
}

// Threads-per-row and chunks-per-thread such that a row sits in registers without spills
// (1024 threads x 8 chunks would pass the 64-register cap, so vector rows stop at 32768).
// One row per thread group: 2, 4 or 8 rows per thread measured slower (docs/perf-notes.md v1).
template <typename T, typename Fmt>
cudaError_t dispatch_per_token(const QuantizeParams& p, cudaStream_t stream) {
  bool vec = p.cols % 8 == 0 && is_aligned(p.x, 16) && is_aligned(p.q, 8);
  for (int d = 0; d < p.x_rows.ndim; ++d) vec = vec && (p.x_rows.stride[d] % 8 == 0);
  if (vec) {
    const int64_t n = p.cols / 8;  // 16-byte chunks per row
    if (n <= 4) return launch_per_token<T, Fmt, 4, 1, true>(p, stream);
    if (n <= 8) return launch_per_token<T, Fmt, 8, 1, true>(p, stream);
    if (n <= 16) return launch_per_token<T, Fmt, 16, 1, true>(p, stream);
    if (n <= 32) return launch_per_token<T, Fmt, 32, 1, true>(p, stream);
    if (n <= 64) return launch_per_token<T, Fmt, 32, 2, true>(p, stream);
    if (n <= 128) return launch_per_token<T, Fmt, 32, 4, true>(p, stream);
    if (n <= 512) return launch_per_token<T, Fmt, 256, 2, true>(p, stream);
    if (n <= 1024) return launch_per_token<T, Fmt, 256, 4, true>(p, stream);
    if (n <= 2048) return launch_per_token<T, Fmt, 256, 8, true>(p, stream);
    if (n <= 4096) return launch_per_token<T, Fmt, 1024, 4, true>(p, stream);
    return cudaErrorNotSupported;
  }
  const int64_t n = p.cols;
  if (n <= 32) return launch_per_token<T, Fmt, 32, 1, false>(p, stream);
  if (n <= 128) return launch_per_token<T, Fmt, 32, 4, false>(p, stream);
  if (n <= 1024) return launch_per_token<T, Fmt, 256, 4, false>(p, stream);
  if (n <= 2048) return launch_per_token<T, Fmt, 256, 8, false>(p, stream);
  if (n <= 8192) return launch_per_token<T, Fmt, 1024, 8, false>(p, stream);
  return cudaErrorNotSupported;
}

// ---------------------------------------------------------------------------------- per block
// One CTA of kThreads per (b, h, token block): RT threads cover a token's D (8 elements each),
// kThreads / RT tokens per pass, NP <= 4 passes cover the block (at 8 passes per thread a 128-token
// block ran at 80% of copy against 91% at 4: docs/perf-notes.md).
template <typename T, typename Fmt, int RT, int NP, int kThreads>
__global__ void __launch_bounds__(kThreads) quantize_per_block_kernel(const QuantizeParams p) {
  constexpr int kRows = kThreads / RT;
  const TokenView& xv = p.xv;
  const int64_t nblk = ceil_div(xv.S, p.block_size);
  // Heads fastest: neighbouring CTAs read neighbouring pieces of the same token rows in BNHD (one
  // contiguous stream, as the per-token kernel reads it: 93 -> 99% of copy on the H100); scales
  // stay [B, H, nblk]. BHND (a head's tokens contiguous) measured 97% in this order (session 20).
  const int64_t h = blockIdx.x % xv.H, blk = (blockIdx.x / xv.H) % nblk, b = blockIdx.x / (nblk * xv.H);
  const int64_t g = (b * xv.H + h) * nblk + blk;
  const int64_t s_end = min(xv.S, (blk + 1) * p.block_size);
  const int c = threadIdx.x % RT;
  const bool col_in = c * 8 < xv.D;
  const T* xb = static_cast<const T*>(p.x) + b * xv.stride_b + h * xv.stride_h + c * 8;

  float v[NP][8];
  float amax = 0.f;
#pragma unroll
  for (int i = 0; i < NP; ++i) {
    const int64_t s = blk * p.block_size + threadIdx.x / RT + i * kRows;
    const bool in = col_in && s < s_end;
    load8<T>(xb + s * xv.stride_s, in, v[i]);
#pragma unroll
    for (int k = 0; k < 8; ++k) amax = absmax_acc(amax, v[i][k]);
  }
  amax = block_max<kThreads>(amax);
  const float inv = recip_scale(Fmt::kMax, amax);
  uint8_t* qb = static_cast<uint8_t*>(p.q) + b * p.qv.stride_b + h * p.qv.stride_h + c * 8;
#pragma unroll
  for (int i = 0; i < NP; ++i) {
    const int64_t s = blk * p.block_size + threadIdx.x / RT + i * kRows;
    if (col_in && s < s_end) __stcs(reinterpret_cast<uint2*>(qb + s * p.qv.stride_s), pack8_uniform<Fmt>(v[i], inv));
  }
  if (threadIdx.x == 0) p.scales[g] = __fdiv_rn(amax, Fmt::kMax);
}

template <typename T, typename Fmt, int RT>
cudaError_t launch_per_block(const QuantizeParams& p, cudaStream_t stream) {
  const int64_t grid = p.xv.B * p.xv.H * ceil_div(p.xv.S, p.block_size);
  if (grid > 0x7fffffffLL) return cudaErrorInvalidConfiguration;
  const int64_t rows = p.block_size;  // tokens per CTA
#define AC4K_PER_BLOCK(NP, THREADS)                                                             \
  if (rows <= NP * (THREADS / RT)) {                                                            \
    quantize_per_block_kernel<T, Fmt, RT, NP, THREADS><<<unsigned(grid), THREADS, 0, stream>>>(p); \
    return last_launch_error();                                                                 \
  }
  AC4K_PER_BLOCK(1, 256) AC4K_PER_BLOCK(2, 256) AC4K_PER_BLOCK(4, 256) AC4K_PER_BLOCK(4, 512)
  AC4K_PER_BLOCK(4, 1024)
#undef AC4K_PER_BLOCK
  return cudaErrorNotSupported;
}

// ---------------------------------------------------------------------------------- per channel
// Pass 1: column absmax (or sum, kSum) of a token range of one (b, h), merged into out[b, h, :]
// by atomics (out zeroed first).
template <typename T, int RT, bool kSum>
__global__ void __launch_bounds__(256) channel_reduce_kernel(const TokenView xv, const void* x, float* out,
                                                             int64_t tokens_per_cta) {
  constexpr int kRows = 256 / RT;
  const int64_t bh = blockIdx.y, b = bh / xv.H, h = bh % xv.H;
  const int c = threadIdx.x % RT;
  const bool col_in = c * 8 < xv.D;
  const int64_t s0 = blockIdx.x * tokens_per_cta, s1 = min(xv.S, s0 + tokens_per_cta);
  const T* xb = static_cast<const T*>(x) + b * xv.stride_b + h * xv.stride_h + c * 8;
  float m[8] = {0, 0, 0, 0, 0, 0, 0, 0};
#pragma unroll 4
  for (int64_t s = s0 + threadIdx.x / RT; s < s1; s += kRows) {
    float v[8];
    load8<T>(xb + s * xv.stride_s, col_in, v);
#pragma unroll
    for (int k = 0; k < 8; ++k) m[k] = kSum ? m[k] + v[k] : absmax_acc(m[k], v[k]);
  }
  __shared__ float red[kRows][RT * 8 + 1];
#pragma unroll
  for (int k = 0; k < 8; ++k) red[threadIdx.x / RT][c * 8 + k] = m[k];
  __syncthreads();
  for (int d = threadIdx.x; d < xv.D; d += 256) {
    float a = 0.f;
    for (int r = 0; r < kRows; ++r) a = kSum ? a + red[r][d] : fmaxf(a, red[r][d]);
    if (kSum) {
      atomicAdd(out + bh * xv.D + d, a);
    } else {
      atomic_max_nonneg(out + bh * xv.D + d, a);
    }
  }
}

// Grid for the channel passes: ~4 CTAs per SM in all, each over a contiguous token range.
template <int RT>
dim3 channel_grid(const TokenView& xv, int64_t& tokens_per_cta) {
  const int64_t splits =
      std::max<int64_t>(1, std::min<int64_t>(ceil_div(528, xv.B * xv.H), ceil_div(xv.S, 256 / RT)));
  tokens_per_cta = ceil_div(xv.S, splits);
  return dim3(unsigned(ceil_div(xv.S, tokens_per_cta)), unsigned(xv.B * xv.H));
}

// out[b, h, d] = absmax (kSum: sum) over tokens, on the stream, without a host sync.
template <typename T, int RT, bool kSum>
cudaError_t channel_reduce(const TokenView& xv, const void* x, float* out, cudaStream_t stream) {
  cudaError_t err = cudaMemsetAsync(out, 0, xv.B * xv.H * xv.D * sizeof(float), stream);
  if (err != cudaSuccess || xv.S == 0) return err;
  int64_t tpc;
  const dim3 grid = channel_grid<RT>(xv, tpc);
  channel_reduce_kernel<T, RT, kSum><<<grid, 256, 0, stream>>>(xv, x, out, tpc);
  return last_launch_error();
}

// Pass 2: every element with its channel's inverse scale (from the amax left in scales).
template <typename T, typename Fmt, int RT>
__global__ void __launch_bounds__(256) channel_quantize_kernel(const QuantizeParams p, int64_t tokens_per_cta) {
  constexpr int kRows = 256 / RT;
  const TokenView& xv = p.xv;
  const int64_t bh = blockIdx.y, b = bh / xv.H, h = bh % xv.H;
  const int c = threadIdx.x % RT;
  if (c * 8 >= xv.D) return;
  float inv[8];
#pragma unroll
  for (int k = 0; k < 8; ++k) inv[k] = recip_scale(Fmt::kMax, p.scales[bh * xv.D + c * 8 + k]);
  const int64_t s0 = blockIdx.x * tokens_per_cta, s1 = min(xv.S, s0 + tokens_per_cta);
  const T* xb = static_cast<const T*>(p.x) + b * xv.stride_b + h * xv.stride_h + c * 8;
  uint8_t* qb = static_cast<uint8_t*>(p.q) + b * p.qv.stride_b + h * p.qv.stride_h + c * 8;
#pragma unroll 4
  for (int64_t s = s0 + threadIdx.x / RT; s < s1; s += kRows) {
    float v[8];
    load8<T>(xb + s * xv.stride_s, true, v);
    const uint2 w = Fmt::pack8(v, inv);
    __stcs(reinterpret_cast<uint2*>(qb + s * p.qv.stride_s), w);
  }
}

template <typename T, typename Fmt, int RT>
cudaError_t launch_per_channel(const QuantizeParams& p, cudaStream_t stream) {
  const TokenView& xv = p.xv;
  const int64_t n = xv.B * xv.H * xv.D;
  cudaError_t err = channel_reduce<T, RT, false>(xv, p.x, p.scales, stream);
  if (err != cudaSuccess || xv.S == 0) return err;
  int64_t tpc;
  const dim3 grid = channel_grid<RT>(xv, tpc);
  channel_quantize_kernel<T, Fmt, RT><<<grid, 256, 0, stream>>>(p, tpc);
  amax_to_scale_kernel<Fmt><<<unsigned(ceil_div(n, 256)), 256, 0, stream>>>(p.scales, n);
  return last_launch_error();
}

// ---------------------------------------------------------------------------------- entry
// Threads covering a token's D in 8-element chunks (a power of two, 4..32).
inline int row_threads(int64_t D) { return D <= 32 ? 4 : D <= 64 ? 8 : D <= 128 ? 16 : 32; }

template <typename T, typename Fmt>
cudaError_t dispatch_tokens(const QuantizeParams& p, cudaStream_t stream) {
  const TokenView& xv = p.xv;
  // 16-byte chunks of a token's D: D % 8 == 0 and aligned rows (every model head dim is).
  bool vec = xv.D % 8 == 0 && is_aligned(p.x, 16) && is_aligned(p.q, 8) && xv.stride_b % 8 == 0 &&
             xv.stride_s % 8 == 0 && xv.stride_h % 8 == 0;
  if (!vec || xv.D > 256 || xv.D == 0) return cudaErrorNotSupported;
  const int rt = row_threads(xv.D);
  if (p.granularity == Granularity::PerBlock) {
    if (p.block_size <= 0 || p.block_size > 4 * (1024 / rt)) return cudaErrorNotSupported;
    switch (rt) {
      case 4: return launch_per_block<T, Fmt, 4>(p, stream);
      case 8: return launch_per_block<T, Fmt, 8>(p, stream);
      case 16: return launch_per_block<T, Fmt, 16>(p, stream);
      default: return launch_per_block<T, Fmt, 32>(p, stream);
    }
  }
  switch (rt) {
    case 4: return launch_per_channel<T, Fmt, 4>(p, stream);
    case 8: return launch_per_channel<T, Fmt, 8>(p, stream);
    case 16: return launch_per_channel<T, Fmt, 16>(p, stream);
    default: return launch_per_channel<T, Fmt, 32>(p, stream);
  }
}

template <typename Fmt>
cudaError_t quantize_8bit(const QuantizeParams& p, cudaStream_t stream) {
  const bool bf16 = p.x_dtype == ScalarType::BFloat16;
  if (!bf16 && p.x_dtype != ScalarType::Float16) return cudaErrorNotSupported;
  if (p.granularity == Granularity::PerToken) {
    if (p.rows == 0) return cudaSuccess;
    return bf16 ? dispatch_per_token<__nv_bfloat16, Fmt>(p, stream) : dispatch_per_token<__half, Fmt>(p, stream);
  }
  if (p.xv.B * p.xv.H == 0) return cudaSuccess;
  if (p.granularity == Granularity::PerBlock && p.xv.S == 0) return cudaSuccess;
  return bf16 ? dispatch_tokens<__nv_bfloat16, Fmt>(p, stream) : dispatch_tokens<__half, Fmt>(p, stream);
}

}  // namespace sm90a
}  // namespace ac4k
