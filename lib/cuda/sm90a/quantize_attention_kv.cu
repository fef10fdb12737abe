// quantize_attention_kv for sm90a: K and V of one attention call -> the inputs of
// mha_int8_x_fp8_fwd (layouts in types.h), in one launch. Q is quantized inside the attention kernel.
//   K: k - mean over tokens per (b, h, d), then INT8 per 64-token block.
//   V: FP8 E4M3 per channel, stored transposed (tokens contiguous, permuted in 16-groups, zero-padded
//      to a multiple of 128): the K-major B operand of the PV wgmma.
// Both need a statistic over all tokens of a head before any output byte, i.e. two reads of the
// head. A cluster of up to 8 CTAs owns one (tensor, b, h): each CTA reduces its token range, the
// partials meet in distributed shared memory, and each CTA reads its range again, newest tokens
// first, while they are still in L2. The aim is one HBM read and one write when the heads in flight
// fit L2 (S up to ~4-8K at D = 128); measured at S = 4096 (ncu): 58% L2 hits on the second read and
// latency-bound at 2 CTAs per SM, 87-103 us against a 42 us floor (docs/perf-notes.md).
#include <cooperative_groups.h>
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
constexpr int kTile = 128;        // tokens per V tile (and per vt padding unit)
constexpr int kKBlock = 64;       // tokens per K scale (two per tile)
constexpr int kMaxCluster = 8;    // the portable cluster size

// Slot of token t (0..15) inside its 16-group of vt; see types.h.
__device__ __forceinline__ int v_slot(int t) { return 2 * (t / 8) + 4 * ((t / 2) % 4) + (t % 2); }

template <typename T, int D>
struct KvSmem {
  static constexpr int RT = D / 8;             // threads per token (16-byte chunks)
  static constexpr int kRows = kThreads / RT;  // tokens per pass
  float red[kRows][D + 1];
  float part[D];  // this CTA's partial sum / absmax, read by the whole cluster
  float stat[D];  // K: mean; V: inverse scale
  float warp_max[2][2][kThreads / 32];
  alignas(16) T tile[kTile][D + 8];  // V tile; +8 elements: rows start on different banks
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

template <typename T, int D>
__global__ void __launch_bounds__(kThreads, 2) quantize_kv_kernel(const QuantizeAttentionKvParams p) {
  using Sm = KvSmem<T, D>;
  constexpr int RT = Sm::RT, kRows = Sm::kRows;
  __shared__ Sm sm;
  cg::cluster_group cluster = cg::this_cluster();
  const int rank = int(cluster.block_rank()), n_ranks = int(cluster.num_blocks());
  const bool is_v = blockIdx.z == 1;
  const TokenView& xv = is_v ? p.vv : p.kv;
  const int64_t bh = blockIdx.y, b = bh / xv.H, h = bh % xv.H;
  // This CTA's tokens: a contiguous range of whole 128-token tiles.
  const int64_t n_tiles = p.s_pad / kTile;
  const int64_t tpc = ceil_div(n_tiles, n_ranks);
  const int64_t tile0 = min(n_tiles, rank * tpc), tile1 = min(n_tiles, tile0 + tpc);
  const int64_t s0 = tile0 * kTile, s1 = min(xv.S, tile1 * kTile);

  const int c = threadIdx.x % RT, r = threadIdx.x / RT;
  const T* xb = static_cast<const T*>(is_v ? p.v : p.k) + b * xv.stride_b + h * xv.stride_h + c * 8;

  // Pass 1: this CTA's column sums (K) or absmax (V), kept in L2 (plain loads) for pass 2.
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
#pragma unroll 8
  for (int64_t s = s0 + r; s < s1; s += kRows) {
    float v[8];
    unpack8<T>(*reinterpret_cast<const uint4*>(xb + s * xv.stride_s), v);
#pragma unroll
    for (int k = 0; k < 8; ++k) acc[k] = is_v ? absmax_acc(acc[k], v[k]) : acc[k] + v[k];
  }
#pragma unroll
  for (int k = 0; k < 8; ++k) sm.red[r][c * 8 + k] = acc[k];
  __syncthreads();
  for (int d = threadIdx.x; d < D; d += kThreads) {
    float a = 0.f;
    for (int i = 0; i < kRows; ++i) a = is_v ? fmaxf(a, sm.red[i][d]) : a + sm.red[i][d];
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

  if (!is_v) {
    // Pass 2, K: INT8 per 64-token block of k - mean, two blocks (one V tile) per step, newest
    // first; the 16-bit values stay in registers between the block max and the quantization.
    float mean[8];
#pragma unroll
    for (int k = 0; k < 8; ++k) mean[k] = sm.stat[c * 8 + k];
    constexpr int NP = kTile / kRows;  // rows per thread per step: NP / 2 in each block
    const int64_t n_kblk = ceil_div(xv.S, kKBlock);
    int8_t* qb = p.k8 + b * p.k8v.stride_b + h * p.k8v.stride_h + c * 8;
    int parity = 0;
    for (int64_t tile = tile1 - 1; tile >= tile0; --tile, parity ^= 1) {
      uint4 raw[NP];
#pragma unroll
      for (int i = 0; i < NP; ++i) {
        const int64_t s = tile * kTile + r + i * kRows;
        raw[i] = s < xv.S ? ldg_stream(xb + s * xv.stride_s) : make_uint4(0, 0, 0, 0);
      }
      float amax[2] = {0.f, 0.f};  // per 64-token block
#pragma unroll
      for (int i = 0; i < NP; ++i) {
        const int64_t s = tile * kTile + r + i * kRows;
        float v[8];
        unpack8<T>(raw[i], v);
#pragma unroll
        for (int k = 0; k < 8; ++k) amax[i / (NP / 2)] = absmax_acc(amax[i / (NP / 2)], s < xv.S ? __fsub_rn(v[k], mean[k]) : 0.f);
      }
      cta_max2(amax, sm.warp_max, parity);
      const float inv[2] = {recip_scale(127.f, amax[0]), recip_scale(127.f, amax[1])};
#pragma unroll
      for (int i = 0; i < NP; ++i) {
        const int64_t s = tile * kTile + r + i * kRows;
        if (s >= xv.S) continue;
        float v[8];
        unpack8<T>(raw[i], v);
#pragma unroll
        for (int k = 0; k < 8; ++k) v[k] = __fsub_rn(v[k], mean[k]);
        __stcs(reinterpret_cast<uint2*>(qb + s * p.k8v.stride_s), pack8_uniform<Int8Format>(v, inv[i / (NP / 2)]));
      }
      if (threadIdx.x < 2 && 2 * tile + threadIdx.x < n_kblk)
        p.k_scale[bh * n_kblk + 2 * tile + threadIdx.x] = __fdiv_rn(threadIdx.x == 0 ? amax[0] : amax[1], 127.f);
    }
    return;
  }

  // Pass 2, V: per 128-token tile (newest first) through shared memory, then each thread writes 64
  // (D = 128) or 32 (D = 64) permuted slots of one channel row of vt. Tiles past S are zeros.
  constexpr int kSlotsPerThread = kTile * D / kThreads;
  const int d = threadIdx.x / (kTile / kSlotsPerThread);
  const int slot0 = (threadIdx.x % (kTile / kSlotsPerThread)) * kSlotsPerThread;
  const float inv = sm.stat[d];
  uint8_t* dst = p.vt + (bh * D + d) * p.s_pad + slot0;
  for (int64_t tile = tile1 - 1; tile >= tile0; --tile) {
    const int64_t t0 = tile * kTile;
    __syncthreads();  // the previous tile has been read
    for (int i = threadIdx.x; i < kTile * RT; i += kThreads) {
      const int t = i / RT, ch = i % RT;
      uint4 u = make_uint4(0, 0, 0, 0);
      if (t0 + t < xv.S) u = ldg_stream(static_cast<const T*>(p.v) + b * xv.stride_b + h * xv.stride_h +
                                        (t0 + t) * xv.stride_s + ch * 8);
      *reinterpret_cast<uint4*>(&sm.tile[t][ch * 8]) = u;
    }
    __syncthreads();
#pragma unroll
    for (int j = 0; j < kSlotsPerThread; j += 16) {
      float f[16];
#pragma unroll
      for (int t = 0; t < 16; ++t) f[v_slot(t)] = __fmul_rn(InputTraits<T>::to_float(sm.tile[slot0 + j + t][d]), inv);
      uint4 w;
      w.x = e4m3x2(f[0], f[1]) | (e4m3x2(f[2], f[3]) << 16);
      w.y = e4m3x2(f[4], f[5]) | (e4m3x2(f[6], f[7]) << 16);
      w.z = e4m3x2(f[8], f[9]) | (e4m3x2(f[10], f[11]) << 16);
      w.w = e4m3x2(f[12], f[13]) | (e4m3x2(f[14], f[15]) << 16);
      __stcs(reinterpret_cast<uint4*>(dst + t0 + j), w);
    }
  }
}

template <typename T, int D>
cudaError_t launch_kv(const QuantizeAttentionKvParams& p, cudaStream_t stream) {
  const int64_t n_tiles = p.s_pad / kTile;
  const unsigned cluster = unsigned(n_tiles < kMaxCluster ? n_tiles : kMaxCluster);
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(cluster, unsigned(p.kv.B * p.kv.H), 2);
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = 0;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = cluster;
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  return cudaLaunchKernelEx(&cfg, quantize_kv_kernel<T, D>, p);
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
