// quantize_nvfp4's kernels and launcher, shared by the sm90a and sm89 folders (each one's
// quantize_nvfp4.cu instantiates them for its own SASS): E2M1 values in blocks of 16 along the last
// dim, E4M3 block scales (plain or 128x4-swizzled), FP32 global scale computed on the GPU. Bit-exact
// with ac4k_kernel.reference.quantize_nvfp4. A memory-bound pass that needs nothing newer than sm_89
// (cvt.e4m3x2); the tuning below (4 CTAs of 256 an SM, 64 KB of loads in flight an SM) suits both.
//
// The global scale depends on the whole tensor's absmax, so without a given global scale x is
// read twice: an absmax pass (atomic max into a scratch float), then the quantize pass, which
// reads the absmax from device memory (no host sync) and walks x backwards, so that its first
// tiles are the ones the absmax pass read last and still sit in L2.
//
// Both kernels are persistent (a few CTAs an SM). The quantize kernel walks x in warp tiles of
// 2 KB: each lane holds four 16-byte chunks 512 bytes apart, so each load instruction reads 512
// contiguous bytes and a 16-block is two neighbouring lanes; it loads the next tile while it
// quantizes the current one, which keeps 64 bytes a thread (64 KB an SM) in flight. Per element
// it spends ~16 instructions (it was ~43): the compare-free E2M1 encode (math.cuh), the block
// scale's division by 6 as a product and one FMA, the per-block reciprocal from a 256-entry
// table of the E4M3 scale values, and no per-element index math.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>

#include "ac4k_kernel/ops.h"
#include "common/math.cuh"
#include "common/utils.cuh"

namespace ac4k {
namespace nvfp4 {

constexpr int kThreads = 256;
constexpr int kCtasPerSm = 4;                 // 1024 threads an SM: at most 64 registers a thread
constexpr int kCtasPerSmStrided = 3;          // strided rows: more index math, 80 registers
constexpr int kLoads = 4;                     // 16-byte chunks a lane holds in a warp tile
constexpr int kTileChunks = 32 * kLoads;      // 2 KB of x a warp tile
constexpr int kAmaxLoads = 8;                 // the absmax pass does little per load: more in flight
constexpr float kGlobalDiv = 448.f * 6.f;

// What the host derives once per launch.
struct Nvfp4Geometry {
  int64_t nchunk = 0;          // 16-byte chunks of x (8 elements; two a 16-block)
  int64_t chunks_per_row = 0;  // cols / 8
  int64_t blocks_per_row = 0;  // cols / 16
  int64_t scale_cols = 0;      // swizzled: blocks_per_row rounded up to 4
  FastDiv by_chunks, by_blocks;
  bool small = true;           // chunk indices and scale offsets < 2^31: 32-bit index math
  bool reverse = false;        // walk the tiles backwards (after the absmax pass)
};

__device__ __forceinline__ int64_t div_rows(const Nvfp4Geometry& g, int64_t n, int64_t d, const FastDiv& fd) {
  return g.small ? int64_t(fd.div(uint32_t(n))) : n / d;
}

// kDense: the rows are contiguous (the common case), so chunk c is at x + 8 c.
template <typename T, bool kDense>
__device__ __forceinline__ const T* chunk_ptr(const QuantizeNvfp4Params& p, const Nvfp4Geometry& g, int64_t c) {
  const T* x = static_cast<const T*>(p.x);
  if (kDense) return x + c * 8;
  const int64_t row = div_rows(g, c, g.chunks_per_row, g.by_chunks);
  return x + row_offset(p.x_rows, row) + (c - row * g.chunks_per_row) * 8;
}

// Byte offset of block scale (row r, column c) in the 128x4 tiled layout (reference.swizzle_scales_128x4).
__device__ __forceinline__ int64_t swizzled_offset(int64_t r, int64_t c, int64_t cols_padded) {
  return ((r / 128) * (cols_padded / 4) + c / 4) * 512 + (r % 32) * 16 + ((r % 128) / 32) * 4 + (c % 4);
}

__device__ __forceinline__ uint32_t swizzled_offset32(uint32_t r, uint32_t c, uint32_t cols_padded) {
  return (((r >> 7) * (cols_padded >> 2) + (c >> 2)) << 9) | ((r & 31) << 4) | ((r >> 3) & 12) | (c & 3);
}

// fminf that keeps a NaN (fminf would return the other operand).
__device__ __forceinline__ float fmin_keep_nan(float a, float b) {
  float r;
  asm("min.NaN.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
}

// E4M3 block scale e4m3((bamax * inv_gs) / 6). The division by 6 is the reciprocal product with
// one FMA correction: equal to the IEEE quotient for every p in [2^-125, 65536] (checked for all
// of them); below, both round to the E4M3 zero. Clamping p to 65536 (NaN kept) keeps Inf out of
// the correction and still saturates to 448, as Inf / 6 does.
__device__ __forceinline__ uint32_t block_scale(float bamax, float inv_gs) {
  constexpr float kSixth = 1.f / 6.f;
  const float pr = fmin_keep_nan(__fmul_rn(bamax, inv_gs), 65536.f);
  const float q0 = __fmul_rn(pr, kSixth);
  return e4m3x2(__fmaf_rn(__fmaf_rn(-6.f, q0, pr), kSixth, q0), 0.f);  // byte 1: e4m3(0) = 0
}

template <typename T, bool kDense>
__global__ void __launch_bounds__(kThreads, kCtasPerSm) nvfp4_amax_kernel(const QuantizeNvfp4Params p,
                                                                          const Nvfp4Geometry g) {
  float m = 0.f;
  constexpr int kSpan = kThreads * kAmaxLoads;
  // Plain (L2-allocating) loads: the quantize pass, walking backwards, finds the last ones in L2.
  for (int64_t c0 = int64_t(blockIdx.x) * kSpan + threadIdx.x; c0 < g.nchunk; c0 += int64_t(gridDim.x) * kSpan) {
    uint4 raw[kAmaxLoads];
#pragma unroll
    for (int k = 0; k < kAmaxLoads; ++k) {
      const int64_t c = c0 + k * kThreads;
      raw[k] = c < g.nchunk ? __ldg(reinterpret_cast<const uint4*>(chunk_ptr<T, kDense>(p, g, c)))
                            : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int k = 0; k < kAmaxLoads; ++k) {
      float v[8];
      unpack8<T>(raw[k], v);
#pragma unroll
      for (int e = 0; e < 8; ++e) m = absmax_acc(m, v[e]);
    }
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

// The swizzled layout's padding reads as zero scales (the caller's buffer may hold anything):
// rows rows..Mp-1, and where blocks_per_row % 4 != 0 the tail of every row's last 4-column group.
__device__ inline void zero_scale_padding(const QuantizeNvfp4Params& p, const Nvfp4Geometry& g) {
  uint8_t* scales = static_cast<uint8_t*>(p.block_scales);
  const int64_t tid = int64_t(blockIdx.x) * kThreads + threadIdx.x, nthreads = int64_t(gridDim.x) * kThreads;
  const int64_t pad_rows = ceil_div(p.rows, 128) * 128 - p.rows;
  for (int64_t i = tid; i < pad_rows * g.scale_cols; i += nthreads) {
    const int64_t r = p.rows + i / g.scale_cols;
    scales[swizzled_offset(r, i % g.scale_cols, g.scale_cols)] = 0;
  }
  if (g.scale_cols == g.blocks_per_row) return;
  for (int64_t r = tid; r < p.rows; r += nthreads) {
    for (int64_t c = g.blocks_per_row; c < g.scale_cols; ++c) scales[swizzled_offset(r, c, g.scale_cols)] = 0;
  }
}

// Chunk k (0..3) of the tile whose lane-0 chunk is t0, or zeros past the end of x.
template <typename T, bool kDense>
__device__ __forceinline__ uint4 load_chunk(const QuantizeNvfp4Params& p, const Nvfp4Geometry& g, int64_t t0, int k) {
  const int64_t c = t0 + 32 * k + threadIdx.x % 32;
  if (c >= g.nchunk) return make_uint4(0, 0, 0, 0);
  return ldg_stream(chunk_ptr<T, kDense>(p, g, c));
}

// One warp tile; t0 is its lane-0 chunk, lanes 2i and 2i+1 hold the two halves of a block. As
// soon as chunk k is unpacked, raw[k] takes chunk k of the next tile (t_next, if more), so that 4
// loads stay in flight without a second set of registers. kFull: this tile and the next lie
// inside x (all but at most one tile a warp), so no bounds checks.
template <typename T, bool kDense, bool kFull>
__device__ __forceinline__ void quantize_tile(const QuantizeNvfp4Params& p, const Nvfp4Geometry& g,
                                              const float* inv_tab, float inv_gs, int64_t t0, uint4 (&raw)[kLoads],
                                              int64_t t_next, bool more) {
  const int lane = threadIdx.x % 32;
  const T* next = static_cast<const T*>(p.x) + (t_next + lane) * 8;  // dense rows
  uint32_t* q = static_cast<uint32_t*>(p.q) + t0 + lane;
  uint32_t sf[kLoads];
#pragma unroll
  for (int k = 0; k < kLoads; ++k) {
    float v[8];
    unpack8<T>(raw[k], v);
    if (more) raw[k] = kFull && kDense ? ldg_stream(next + 256 * k) : load_chunk<T, kDense>(p, g, t_next, k);
    float bamax = 0.f;
#pragma unroll
    for (int e = 0; e < 8; ++e) bamax = absmax_acc(bamax, v[e]);
    bamax = fmaxf(bamax, __shfl_xor_sync(0xffffffffu, bamax, 1));
    sf[k] = block_scale(bamax, inv_gs);
    // inv_tab[sf] = 1 / (float(sf) * gs), 0 where that is 0 or NaN (reference: inv_b).
    const float inv = inv_tab[sf[k]];
    uint32_t b[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) b[e] = e2m1_biased(__fmul_rn(v[e], inv));
    if (kFull || t0 + lane + 32 * k < g.nchunk) __stcs(q + 32 * k, pack_e2m1x8(b));
  }
  // Both lanes of a pair know the 4 scales; the even lane stores those of chunks 0 and 1, the
  // odd lane those of chunks 2 and 3.
  const int odd = lane & 1;
  const int64_t blk0 = t0 / 2 + lane / 2 + 32 * odd;
  uint8_t* scales = static_cast<uint8_t*>(p.block_scales);
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    const int64_t blk = blk0 + 16 * j;
    if (!kFull && 2 * blk >= g.nchunk) continue;
    const uint8_t s = uint8_t(odd ? sf[2 + j] : sf[j]);
    if (!p.swizzled) {
      scales[blk] = s;
    } else if (g.small) {  // 32-bit index math: the scales are < 2^31 bytes
      const uint32_t row = g.by_blocks.div(uint32_t(blk)), col = uint32_t(blk) - row * uint32_t(g.blocks_per_row);
      scales[swizzled_offset32(row, col, uint32_t(g.scale_cols))] = s;
    } else {
      const int64_t row = blk / g.blocks_per_row;
      scales[swizzled_offset(row, blk - row * g.blocks_per_row, g.scale_cols)] = s;
    }
  }
}

template <typename T, bool kDense>
__global__ void __launch_bounds__(kThreads, kDense ? kCtasPerSm : kCtasPerSmStrided)
    nvfp4_quantize_kernel(const QuantizeNvfp4Params p, const Nvfp4Geometry g) {
  float gs, inv_gs;
  if (p.global_scale_in != nullptr) {
    gs = *p.global_scale_in;
    inv_gs = recip_scale(1.f, gs);
  } else {
    const float amax = *p.amax_scratch;
    gs = __fdiv_rn(amax, kGlobalDiv);
    inv_gs = recip_scale(kGlobalDiv, amax);
  }
  if (blockIdx.x == 0 && threadIdx.x == 0) *p.global_scale = gs;
  // The per-block reciprocal depends on the block scale's 256 values only.
  __shared__ float inv_tab[256];
  static_assert(kThreads == 256, "one table entry a thread");
  inv_tab[threadIdx.x] = recip_scale(1.f, __fmul_rn(e4m3_to_float(uint8_t(threadIdx.x)), gs));
  if (p.swizzled) zero_scale_padding(p, g);
  __syncthreads();

  // Warp w takes tiles w, w + nwarps, ... (counted from the end when g.reverse). Only the last
  // tile of x can be partial (tile numbers fit 31 bits: the host checks).
  const int ntiles = int(ceil_div(g.nchunk, kTileChunks));
  const int nwarps = gridDim.x * (kThreads / 32);
  const int w = (blockIdx.x * kThreads + threadIdx.x) / 32;
  if (w >= ntiles) return;
  const int partial = g.nchunk % kTileChunks != 0 ? ntiles - 1 : -1;
  const int ntodo = (ntiles - 1 - w) / nwarps + 1;
  const int step = g.reverse ? -nwarps : nwarps;
  int tile = g.reverse ? ntiles - 1 - w : w;
  uint4 raw[kLoads];
#pragma unroll
  for (int k = 0; k < kLoads; ++k) raw[k] = load_chunk<T, kDense>(p, g, int64_t(tile) * kTileChunks, k);
  for (int i = 1; i <= ntodo; ++i, tile += step) {
    const bool more = i < ntodo;
    const int64_t t0 = int64_t(tile) * kTileChunks, t_next = int64_t(tile + step) * kTileChunks;
    if (tile != partial && (!more || tile + step != partial)) {
      quantize_tile<T, kDense, true>(p, g, inv_tab, inv_gs, t0, raw, t_next, more);
    } else {
      quantize_tile<T, kDense, false>(p, g, inv_tab, inv_gs, t0, raw, t_next, more);
    }
  }
}

template <typename T, bool kDense>
cudaError_t launch(const QuantizeNvfp4Params& p, const Nvfp4Geometry& g, cudaStream_t stream) {
  const int64_t max_grid = int64_t(sm_count()) * kCtasPerSm;
  if (p.global_scale_in == nullptr) {
    cudaError_t err = cudaMemsetAsync(p.amax_scratch, 0, sizeof(float), stream);
    if (err != cudaSuccess) return err;
    if (g.nchunk > 0) {
      const int64_t grid = std::min(ceil_div(g.nchunk, kThreads * kAmaxLoads), max_grid);
      nvfp4_amax_kernel<T, kDense><<<unsigned(grid), kThreads, 0, stream>>>(p, g);
    }
  }
  const int64_t quantize_grid = int64_t(sm_count()) * (kDense ? kCtasPerSm : kCtasPerSmStrided);
  const int64_t grid = std::max<int64_t>(1, std::min(ceil_div(g.nchunk, kTileChunks * (kThreads / 32)), quantize_grid));
  nvfp4_quantize_kernel<T, kDense><<<unsigned(grid), kThreads, 0, stream>>>(p, g);
  return last_launch_error();
}

template <typename T>
cudaError_t run(const QuantizeNvfp4Params& p, cudaStream_t stream) {
  Nvfp4Geometry g;
  g.chunks_per_row = p.cols / 8;
  g.blocks_per_row = p.cols / 16;
  g.scale_cols = ceil_div(g.blocks_per_row, 4) * 4;
  g.nchunk = p.rows * g.chunks_per_row;
  g.small = g.nchunk < (int64_t(1) << 31) && ceil_div(p.rows, 128) * 128 * g.scale_cols < (int64_t(1) << 31);
  if (g.small && g.nchunk > 0) {
    g.by_chunks = FastDiv(uint32_t(g.chunks_per_row));
    g.by_blocks = FastDiv(uint32_t(g.blocks_per_row));
  }
  g.reverse = p.global_scale_in == nullptr;
  if (ceil_div(g.nchunk, kTileChunks) >= (int64_t(1) << 31)) return cudaErrorNotSupported;  // > 4 TB of x
  const bool dense = p.x_rows.ndim == 1 && p.x_rows.stride[0] == p.cols;
  return dense ? launch<T, true>(p, g, stream) : launch<T, false>(p, g, stream);
}

// The launcher behind each arch's ac4k::quantize_nvfp4.
inline cudaError_t quantize(const QuantizeNvfp4Params& p, cudaStream_t stream) {
  if (p.cols % 16 != 0 || !is_aligned(p.x, 16) || !is_aligned(p.q, 4)) return cudaErrorNotSupported;
  for (int d = 0; d < p.x_rows.ndim; ++d) {
    if (p.x_rows.stride[d] % 8 != 0) return cudaErrorNotSupported;
  }
  switch (p.x_dtype) {
    case ScalarType::BFloat16: return run<__nv_bfloat16>(p, stream);
    case ScalarType::Float16: return run<__half>(p, stream);
    default: return cudaErrorNotSupported;
  }
}

}  // namespace nvfp4
}  // namespace ac4k
