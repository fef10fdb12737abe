// quantize_attention_kv for sm90a: K and V of one attention call -> the inputs of
// mha_int8_x_fp8_fwd (layouts in types.h), in one launch. Q is quantized inside the attention kernel.
//   K: k - mean over tokens per (b, h, d), then INT8 per 64-token block.
//   V: FP8 E4M3 per channel, stored transposed (tokens contiguous, permuted in 16-groups, zero-padded
//      to a multiple of 128): the K-major B operand of the PV wgmma.
// Both need a statistic over all tokens of a head before any output byte. A cluster of up to 16
// CTAs owns one (tensor, b, h); each CTA copies its first 128-token tiles into shared memory with
// cp.async (64 KB: all of a head up to S = 4096 at D = 128, 8192 at D = 64), reduces them and any
// further tiles of its range, the partials meet in distributed shared memory, and the outputs are
// written from shared memory; tiles past the cache are read again (from L2 when they are still
// there) through a ring of the freed buffers. So up to those sizes a head is read from HBM once.
// The former design (every tile read twice, the second time hoping for L2) was latency-bound at
// 87-103 us for S = 4096, H = 40 against a 42 us floor (docs/perf-notes.md).
#include <cooperative_groups.h>
#include <cuda_pipeline_primitives.h>
#include <cuda_runtime.h>

#include "ac4k_kernel/ops.h"
#include "common/math.cuh"
#include "common/utils.cuh"
#include "sm90a/quantize_8bit.cuh"

namespace ac4k {
namespace sm90a {
namespace {

namespace cg = cooperative_groups;

constexpr int kThreads = 256;
constexpr int kTile = 128;                // tokens per tile (the vt padding unit, two K blocks)
constexpr int kKBlock = 64;               // tokens per K scale
constexpr int kMaxCluster = 16;           // non-portable on sm90, allowed at launch
constexpr int kCacheBytes = 64 * 1024;    // tiles cached per CTA: three CTAs fit an SM

template <typename T, int D>
constexpr int kCacheTiles = kCacheBytes / int(kTile * D * sizeof(T));

// Slot of token t (0..15) inside its 16-group of vt; see types.h.
__device__ __forceinline__ int v_slot(int t) { return 2 * (t / 8) + 4 * ((t / 2) % 4) + (t % 2); }

template <int D>
struct KvShared {
  float red[kThreads / 32][D];  // per-warp partials
  float part[D];                // this CTA's partial sum / absmax, read by the whole cluster
  float stat[D];                // K: mean; V: inverse scale
  float warp_max[2][2][kThreads / 32];
};

// Two maxima over the CTA; `parity` alternates between calls so that one barrier per call suffices.
__device__ __forceinline__ void cta_max2(float (&v)[2], float (&warp_max)[2][2][kThreads / 32], int parity) {
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    v[j] = group_max<32>(v[j]);
    if (threadIdx.x % 32 == 0) warp_max[parity][j][threadIdx.x / 32] = v[j];
  }
  __syncthreads();
#pragma unroll
  for (int j = 0; j < 2; ++j) {
#pragma unroll
    for (int w = 0; w < kThreads / 32; ++w) v[j] = fmaxf(v[j], warp_max[parity][j][w]);
  }
}

// 16 floats -> 16 E4M3 bytes.
__device__ __forceinline__ uint4 e4m3x16(const float (&f)[16]) {
  uint4 w;
  w.x = e4m3x2(f[0], f[1]) | (e4m3x2(f[2], f[3]) << 16);
  w.y = e4m3x2(f[4], f[5]) | (e4m3x2(f[6], f[7]) << 16);
  w.z = e4m3x2(f[8], f[9]) | (e4m3x2(f[10], f[11]) << 16);
  w.w = e4m3x2(f[12], f[13]) | (e4m3x2(f[14], f[15]) << 16);
  return w;
}

template <typename T, int D>
__global__ void __launch_bounds__(kThreads, 3) quantize_kv_kernel(const QuantizeAttentionKvParams p) {
  constexpr int RT = D / 8;             // threads per token (16-byte chunks)
  constexpr int kRows = kThreads / RT;  // tokens per pass of the CTA
  constexpr int C = kCacheTiles<T, D>;
  extern __shared__ uint4 cache_raw[];  // C tiles of [kTile][D], unpadded
  T* cache = reinterpret_cast<T*>(cache_raw);
  __shared__ KvShared<D> sm;
  cg::cluster_group cluster = cg::this_cluster();
  const int rank = int(cluster.block_rank()), n_ranks = int(cluster.num_blocks());
  const bool is_v = blockIdx.z == 1;
  const TokenView& xv = is_v ? p.vv : p.kv;
  const int64_t bh = blockIdx.y, b = bh / xv.H, h = bh % xv.H;
  // This CTA's tokens: a contiguous range of whole tiles, the first n_cached of them in shared memory.
  const int64_t n_tiles = p.s_pad / kTile;
  const int64_t tpc = ceil_div(n_tiles, n_ranks);
  const int64_t tile0 = min(n_tiles, rank * tpc), tile1 = min(n_tiles, tile0 + tpc);
  const int64_t n_mine = tile1 - tile0;
  const int n_cached = int(min(int64_t(C), n_mine));
  const T* xb = static_cast<const T*>(is_v ? p.v : p.k) + b * xv.stride_b + h * xv.stride_h;

  // One tile into buffer `buf` (tokens past S as zeros), as one cp.async group.
  auto issue_tile = [&](int64_t tile, int buf) {
    T* dst = cache + buf * (kTile * D);
    for (int i = threadIdx.x; i < kTile * RT; i += kThreads) {
      const int t = i / RT, ch = i % RT;
      const int64_t s = tile * kTile + t;
      const bool in = s < xv.S;
      __pipeline_memcpy_async(dst + t * D + ch * 8, in ? xb + s * xv.stride_s + ch * 8 : xb, 16, in ? 0 : 16);
    }
    __pipeline_commit();
  };
  for (int k = 0; k < n_cached; ++k) issue_tile(tile0 + k, k);

  // Pass 1: this CTA's column sums (K) or absmax (V): the uncached tiles from global memory (plain
  // loads: they are read again) while the cached ones land, then the cached ones. Zero-filled
  // tokens past S change neither.
  const int c = threadIdx.x % RT, r = threadIdx.x / RT;
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  auto add = [&](const uint4& u) {
    float v[8];
    unpack8<T>(u, v);
#pragma unroll
    for (int k = 0; k < 8; ++k) acc[k] = is_v ? absmax_acc(acc[k], v[k]) : acc[k] + v[k];
  };
  {
    const int64_t s1 = min(xv.S, tile1 * kTile);
#pragma unroll 8
    for (int64_t s = (tile0 + n_cached) * kTile + r; s < s1; s += kRows)
      add(*reinterpret_cast<const uint4*>(xb + s * xv.stride_s + c * 8));
  }
  __pipeline_wait_prior(0);
  __syncthreads();
  for (int t = r; t < n_cached * kTile; t += kRows) add(*reinterpret_cast<const uint4*>(cache + t * D + c * 8));
  // Lanes l, l + RT, ... hold the same channels.
#pragma unroll
  for (int o = RT; o < 32; o *= 2) {
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const float x = __shfl_xor_sync(0xffffffffu, acc[k], o);
      acc[k] = is_v ? fmaxf(acc[k], x) : acc[k] + x;
    }
  }
  if (threadIdx.x % 32 < RT) {
#pragma unroll
    for (int k = 0; k < 8; ++k) sm.red[threadIdx.x / 32][c * 8 + k] = acc[k];
  }
  __syncthreads();
  for (int d = threadIdx.x; d < D; d += kThreads) {
    float a = 0.f;
#pragma unroll
    for (int w = 0; w < kThreads / 32; ++w) a = is_v ? fmaxf(a, sm.red[w][d]) : a + sm.red[w][d];
    sm.part[d] = a;
  }
  cluster.sync();
  // Every CTA merges the partials in rank order, so all of them hold the same statistic.
  for (int d = threadIdx.x; d < D; d += kThreads) {
    float a = 0.f;
    for (int q = 0; q < n_ranks; ++q) {
      const float x = cluster.map_shared_rank(sm.part, q)[d];
      a = is_v ? fmaxf(a, x) : a + x;
    }
    if (is_v) {
      sm.stat[d] = recip_scale(448.f, a);
      if (rank == 0) p.v_scale[bh * D + d] = __fdiv_rn(a, 448.f);
    } else {
      const float mean = __fmul_rn(a, 1.f / float(xv.S));
      sm.stat[d] = mean;
      if (rank == 0) p.k_mean[bh * D + d] = mean;
    }
  }
  cluster.sync();  // no CTA leaves (or reuses part) while another still reads its shared memory

  // Pass 2 over this CTA's tiles: the cached ones, then the others newest first (the likeliest
  // still in L2), each loaded into the buffer the tile C steps earlier has freed.
  int8_t* k8b = p.k8 + b * p.k8v.stride_b + h * p.k8v.stride_h + c * 8;
  const int64_t n_kblk = ceil_div(xv.S, kKBlock);
  float mean[8];
  if (!is_v) {
#pragma unroll
    for (int k = 0; k < 8; ++k) mean[k] = sm.stat[c * 8 + k];
  }
  constexpr int DP = D / 2;                          // V: channel pairs, one 32-bit word a token
  constexpr int kSlots = kTile * DP / kThreads;      // V: tokens per thread and tile (32 or 16)
  const int dp = threadIdx.x % DP, slot0 = (threadIdx.x / DP) * kSlots;
  const float inv0 = is_v ? sm.stat[2 * dp] : 0.f, inv1 = is_v ? sm.stat[2 * dp + 1] : 0.f;
  auto tile_at = [&](int64_t k) { return k < n_cached ? tile0 + k : tile1 - 1 - (k - n_cached); };

  for (int64_t k = 0; k < n_mine; ++k) {
    const int64_t tile = tile_at(k);
    const T* buf = cache + (k % C) * (kTile * D);
    if (k >= n_cached) {  // its copy was issued C steps ago
      __pipeline_wait_prior(C - 1);
      __syncthreads();
    }
    if (!is_v) {
      // INT8 per 64-token block of k - mean; rows r + i * kRows, the first NP / 2 in block 0.
      constexpr int NP = kTile / kRows;
      float amax[2] = {0.f, 0.f};
#pragma unroll
      for (int i = 0; i < NP; ++i) {
        const int t = r + i * kRows;
        float v[8];
        unpack8<T>(*reinterpret_cast<const uint4*>(buf + t * D + c * 8), v);
        if (tile * kTile + t < xv.S) {
#pragma unroll
          for (int j = 0; j < 8; ++j) amax[i / (NP / 2)] = absmax_acc(amax[i / (NP / 2)], __fsub_rn(v[j], mean[j]));
        }
      }
      cta_max2(amax, sm.warp_max, int(k & 1));
      const float inv[2] = {recip_scale(127.f, amax[0]), recip_scale(127.f, amax[1])};
#pragma unroll
      for (int i = 0; i < NP; ++i) {
        const int t = r + i * kRows;
        const int64_t s = tile * kTile + t;
        if (s >= xv.S) continue;
        float v[8];
        unpack8<T>(*reinterpret_cast<const uint4*>(buf + t * D + c * 8), v);
#pragma unroll
        for (int j = 0; j < 8; ++j) v[j] = __fsub_rn(v[j], mean[j]);
        __stcs(reinterpret_cast<uint2*>(k8b + s * p.k8v.stride_s), pack8_uniform<Int8Format>(v, inv[i / (NP / 2)]));
      }
      if (threadIdx.x < 2 && 2 * tile + threadIdx.x < n_kblk)
        p.k_scale[bh * n_kblk + 2 * tile + threadIdx.x] = __fdiv_rn(threadIdx.x == 0 ? amax[0] : amax[1], 127.f);
    } else {
      // Channels 2 dp and 2 dp + 1 of tokens slot0 .. slot0 + kSlots: a warp reads 32 consecutive
      // words of one token row (no bank conflicts) and writes two 16-byte runs of vt per 16 tokens.
      const uint32_t* words = reinterpret_cast<const uint32_t*>(buf);
      uint8_t* dst = p.vt + (bh * D + 2 * dp) * p.s_pad + tile * kTile + slot0;
#pragma unroll
      for (int j = 0; j < kSlots; j += 16) {
        float f0[16], f1[16];
#pragma unroll
        for (int t = 0; t < 16; ++t) {
          const float2 x = InputTraits<T>::to_float2(words[(slot0 + j + t) * DP + dp]);
          f0[v_slot(t)] = __fmul_rn(x.x, inv0);
          f1[v_slot(t)] = __fmul_rn(x.y, inv1);
        }
        __stcs(reinterpret_cast<uint4*>(dst + j), e4m3x16(f0));
        __stcs(reinterpret_cast<uint4*>(dst + p.s_pad + j), e4m3x16(f1));
      }
    }
    if (k + C < n_mine) {
      __syncthreads();  // buffer k % C has been read by every thread
      issue_tile(tile_at(k + C), int(k % C));
    } else {
      __pipeline_commit();  // an empty group keeps wait_prior's count
    }
  }
}

template <typename T, int D>
cudaError_t launch_kv(const QuantizeAttentionKvParams& p, cudaStream_t stream) {
  constexpr int C = kCacheTiles<T, D>;
  const int64_t n_tiles = p.s_pad / kTile;
  const unsigned cluster = unsigned(n_tiles < kMaxCluster ? n_tiles : kMaxCluster);
  const int64_t tpc = ceil_div(n_tiles, cluster);
  const size_t smem = size_t(tpc < C ? tpc : C) * kTile * D * sizeof(T);
  auto kernel = quantize_kv_kernel<T, D>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, C * kTile * D * int(sizeof(T)));
  if (err == cudaSuccess) err = cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
  if (err != cudaSuccess) return err;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(cluster, unsigned(p.kv.B * p.kv.H), 2);
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = cluster;
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  return cudaLaunchKernelEx(&cfg, kernel, p);
}

}  // namespace
}  // namespace sm90a

cudaError_t quantize_attention_kv(const QuantizeAttentionKvParams& p, cudaStream_t stream) {
  const TokenView &kv = p.kv, &vv = p.vv;
  if (kv.B * kv.H == 0) return cudaSuccess;
  const bool bf16 = p.dtype == ScalarType::BFloat16;
  auto aligned = [](const void* x, const TokenView& t) {
    return is_aligned(x, 16) && t.stride_b % 8 == 0 && t.stride_s % 8 == 0 && t.stride_h % 8 == 0;
  };
  if ((kv.D != 64 && kv.D != 128) || vv.D != kv.D || vv.S != kv.S || vv.H != kv.H || vv.B != kv.B || kv.S < 1 ||
      p.s_pad % 128 != 0 || p.s_pad < kv.S || p.s_pad - kv.S >= 128 || !aligned(p.k, kv) || !aligned(p.v, vv) ||
      !is_aligned(p.k8, 8) || p.k8v.stride_b % 8 || p.k8v.stride_s % 8 || p.k8v.stride_h % 8 ||
      (!bf16 && p.dtype != ScalarType::Float16))
    return cudaErrorNotSupported;
  if (kv.B * kv.H > 65535) return cudaErrorNotSupported;
  if (kv.D == 128) return bf16 ? sm90a::launch_kv<__nv_bfloat16, 128>(p, stream) : sm90a::launch_kv<__half, 128>(p, stream);
  return bf16 ? sm90a::launch_kv<__nv_bfloat16, 64>(p, stream) : sm90a::launch_kv<__half, 64>(p, stream);
}

}  // namespace ac4k
