// quantize_attention_kv for sm90a: K and V of one attention call -> the inputs of
// mha_int8_x_fp8_fwd (layouts in types.h), in one launch. Q is quantized inside the attention kernel.
//   K: k - mean over tokens per (b, h, d), then INT8 per 64-token block.
//   V: FP8 E4M3 per channel, stored transposed (tokens contiguous, permuted in 16-groups, zero-padded
//      to a multiple of 128): the K-major B operand of the PV wgmma.
// Both need a statistic over all tokens of a head before any output byte. A cluster of up to 16
// CTAs owns one (tensor, b, h) at a time and goes on to the next (a persistent grid of one wave);
// each CTA loads its first 128-token tiles by TMA into shared memory (64 KB: all of a head up to
// S = 4096 at D = 128, 8192 at D = 64), reduces them and any further tiles of its range, the
// partials meet in distributed shared memory, and the outputs are written from shared memory;
// tiles past the cache are read again (from L2 when they are still there) through the freed
// buffers. Up to those sizes a head is read from HBM once, and the next head's tiles load while
// this one's outputs are written. V's absmax runs on packed pairs, K's INT8 rounding and
// saturation is one F2I.S8. With p.rope (a separate instantiation), K is rotated as rope3d does
// (common/rope.cuh) where each thread first reads its chunks; that path reads the multipliers from
// the table in global memory per head and measured 3.7x slower than rope3d followed by the plain
// pass. History and figures: docs/perf-notes.md.
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <type_traits>

#include "ac4k_kernel/ops.h"
#include "common/math.cuh"
#include "common/rope.cuh"
#include "common/utils.cuh"
#include "sm90a/barrier.cuh"
#include "sm90a/quantize_8bit.cuh"
#include "sm90a/tma.cuh"

namespace ac4k {
namespace sm90a {
namespace {

namespace cg = cooperative_groups;

constexpr int kThreads = 256;
constexpr int kTile = 128;                // tokens per tile (the vt padding unit, two K blocks)
constexpr int kKBlock = 64;               // tokens per K scale
constexpr int kMaxCluster = 16;           // non-portable on sm90, allowed at launch
constexpr int kCacheBytes = 64 * 1024;    // tiles cached per CTA: three CTAs fit an SM

// Slot of token t (0..15) inside its 16-group of vt; see types.h.
__device__ __forceinline__ int v_slot(int t) { return 2 * (t / 8) + 4 * ((t / 2) % 4) + (t % 2); }

template <int D>
struct KvShared {
  float red[kThreads / 32][D];  // per-warp partials
  float part[2][D];             // this CTA's partial sum / absmax, read by the whole cluster;
                                // alternate items use alternate halves (one cluster barrier an item)
  float stat[D];                // K: mean; V: inverse scale
  float warp_max[2][kThreads / 32];
  uint64_t bar[4];              // one mbarrier per tile buffer
};

// Dynamic shared memory: KvShared, then the tile buffers (1 KB aligned for TMA); a launch with
// fewer buffers (short sequences) cuts the tail.
template <typename T, int D>
struct KvLayout {
  static constexpr int kSharedBytes = (int(sizeof(KvShared<D>)) + 1023) / 1024 * 1024;
  static constexpr int kTileBytes = kTile * D * int(sizeof(T));
  static constexpr int kTiles = kCacheBytes / kTileBytes;  // buffers: 2 (D = 128), 4 (D = 64)
  static constexpr int kBytes = kSharedBytes + kTiles * kTileBytes;
  static_assert(kTiles <= 4, "one mbarrier per buffer");
};

// Max over the CTA; `parity` alternates between calls so that one barrier per call suffices.
__device__ __forceinline__ float cta_max(float v, float (&warp_max)[2][kThreads / 32], int parity) {
  v = group_max<32>(v);
  if (threadIdx.x % 32 == 0) warp_max[parity][threadIdx.x / 32] = v;
  __syncthreads();
#pragma unroll
  for (int w = 0; w < kThreads / 32; ++w) v = fmaxf(v, warp_max[parity][w]);
  return v;
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

// The 16 E4M3 values of a run (slot order) with the slots of tokens >= n set to 0.
__device__ __forceinline__ uint4 zero_slots_from(uint4 w, int n) {
  uint32_t b[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
  for (int t = 0; t < 16; ++t) {
    if (t >= n) b[v_slot(t) / 4] &= ~(0xffu << 8 * (v_slot(t) % 4));
  }
  return make_uint4(b[0], b[1], b[2], b[3]);
}

// |x| max of two packed 16-bit values (NaN ignored, as absmax_acc): one AND and one HMNMX2.
template <typename T>
__device__ __forceinline__ uint32_t absmax2(uint32_t acc, uint32_t w) {
  using T2 = typename std::conditional<std::is_same<T, __half>::value, __half2, __nv_bfloat162>::type;
  const uint32_t a = w & 0x7fff7fffu;
  const T2 m = __hmax2(*reinterpret_cast<const T2*>(&acc), *reinterpret_cast<const T2*>(&a));
  return *reinterpret_cast<const uint32_t*>(&m);
}

// kRope: K rotated on the way (p.rope); the rotation's registers cost the third CTA an SM.
template <typename T, int D, bool kRope>
__global__ void __launch_bounds__(kThreads, kRope ? 2 : 3)
    quantize_kv_kernel(const __grid_constant__ QuantizeAttentionKvParams p, const __grid_constant__ CUtensorMap tk,
                       const __grid_constant__ CUtensorMap tv) {
  using L = KvLayout<T, D>;
  constexpr int RT = D / 8;             // threads per token (16-byte chunks)
  constexpr int kRows = kThreads / RT;  // tokens per pass of the CTA
  constexpr int C = L::kTiles;
  constexpr int kTileElems = kTile * D;
  extern __shared__ __align__(1024) uint8_t smem[];  // KvShared, then C tile buffers of [kTile][D]
  KvShared<D>& sm = *reinterpret_cast<KvShared<D>*>(smem);
  T* cache = reinterpret_cast<T*>(smem + L::kSharedBytes);
  cg::cluster_group cluster = cg::this_cluster();
  const int rank = int(cluster.block_rank()), n_ranks = int(cluster.num_blocks());
  // Work items: (tensor, b, h) = (item % 2, item / 2), items blockIdx.y, blockIdx.y + gridDim.y, ...
  // of this cluster (persistent: one wave of clusters). This CTA's tokens in every item: a
  // contiguous range of whole tiles, the first n_cached of them kept in shared memory.
  const int64_t H = p.kv.H, S = p.kv.S;
  const int64_t n_items = 2 * p.kv.B * H;
  const int64_t my_items = blockIdx.y < n_items ? ceil_div(n_items - blockIdx.y, gridDim.y) : 0;
  const int64_t n_tiles = p.s_pad / kTile;
  const int64_t tpc = ceil_div(n_tiles, n_ranks);
  const int64_t tile0 = min(n_tiles, rank * tpc), tile1 = min(n_tiles, tile0 + tpc);
  const int n_mine = int(tile1 - tile0);  // the launcher checks items * tiles per CTA < 2^31
  // Buffers in use (the launch allocates fewer for short sequences), and how many of them stay
  // with one item from its first pass to its second.
  const int nbuf = int(min(int64_t(C), tpc));
  const int n_cached = min(nbuf, n_mine);
  // Pass 2 visits the cached tiles, then the others newest first (the likeliest still in L2).
  auto tile_at = [&](int k) { return k < n_cached ? tile0 + k : tile1 - 1 - (k - n_cached); };

  // The tiles of all of this CTA's items form one sequence, tile k of item i at i * n_mine + k,
  // loaded by TMA (tokens past S read as zeros) into buffer seq % nbuf once tile seq - nbuf has
  // been used: the first tiles of the next item load while this one's outputs are written.
  const uint32_t n_seq = uint32_t(my_items * n_mine);
  if (threadIdx.x == 0) {
    for (int b = 0; b < C; ++b) mbar_init(&sm.bar[b], 1);
    fence_barrier_init();
    tma_prefetch_desc(&tk);
    tma_prefetch_desc(&tv);
  }
  __syncthreads();
  auto issue = [&](uint32_t seq) {
    if (threadIdx.x != 0 || seq >= n_seq) return;
    const int64_t item = blockIdx.y + int64_t(seq / uint32_t(n_mine)) * gridDim.y, bh = item >> 1;
    uint64_t* bar = &sm.bar[seq % nbuf];
    mbar_arrive_expect_tx(bar, L::kTileBytes);
    tma_load_4d(cache + (seq % nbuf) * kTileElems, item & 1 ? &tv : &tk, bar, 0, int32_t(tile_at(int(seq % uint32_t(n_mine))) * kTile),
                int32_t(bh % H), int32_t(bh / H));
  };
  auto wait = [&](uint32_t seq) { mbar_wait(&sm.bar[seq % nbuf], (seq / nbuf) & 1); };
  for (int seq = 0; seq < nbuf; ++seq) issue(uint32_t(seq));

  const int c = threadIdx.x % RT, r = threadIdx.x / RT;
  constexpr int DP = D / 2;                      // V: channel pairs, one 32-bit word a token
  constexpr int kRuns = kTile * DP / kThreads / 16;  // V: 16-token runs per thread and tile (2 or 1)
  // V: lanes 2q and 2q + 1 take channel pair dp = q % DP and the adjacent runs 2g, 2g + 1.
  const int dp = (threadIdx.x >> 1) % DP, run0 = 2 * ((threadIdx.x >> 1) / DP) * kRuns + (threadIdx.x & 1);
  const int64_t n_kblk = ceil_div(S, kKBlock);
  int parity = 0;

  for (int64_t i = 0; i < my_items; ++i) {
    const int64_t item = blockIdx.y + i * gridDim.y, bh = item >> 1;
    const uint32_t base = uint32_t(i * n_mine);
    const bool is_v = item & 1;
    const TokenView& xv = is_v ? p.vv : p.kv;
    // K with p.rope: tokens s < n_rot are rotated (rope3d's bits) where first read, in registers or
    // in the tile buffer in place (each thread rotates the chunks it reads itself, in both passes).
    const bool rope = kRope && !is_v;
    int64_t n_rot = 0, gf = 0, gh = 0, gw = 0;
    if (rope) {
      if (!rope_grid(p.rope_freqs, bh / H, S, gf, gh, gw)) return;
      n_rot = gf * gh * gw;
    }
    auto rotate = [&](const uint4& u, int64_t s) {
      return rope8<T>(u, p.rope_freqs, uint32_t(s), c * 4, uint32_t(gh), uint32_t(gw));
    };

    // Pass 1: this CTA's column sums (K) or absmax (V, on packed pairs): the uncached tiles from
    // global memory (plain loads: they are read again) while the cached ones land, then the
    // cached ones. Zero-filled tokens past S change neither.
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    uint32_t amax2[4] = {0, 0, 0, 0};
    auto add = [&](const uint4& u) {
      if (is_v) {
        amax2[0] = absmax2<T>(amax2[0], u.x);
        amax2[1] = absmax2<T>(amax2[1], u.y);
        amax2[2] = absmax2<T>(amax2[2], u.z);
        amax2[3] = absmax2<T>(amax2[3], u.w);
      } else {
        float v[8];
        unpack8<T>(u, v);
#pragma unroll
        for (int k = 0; k < 8; ++k) acc[k] += v[k];
      }
    };
    {
      const T* xb = static_cast<const T*>(is_v ? p.v : p.k) + (bh / H) * xv.stride_b + (bh % H) * xv.stride_h + c * 8;
      const int64_t s0 = (tile0 + n_cached) * kTile + r, s1 = min(S, tile1 * kTile);
      const int n = s0 < s1 ? int((s1 - s0 + kRows - 1) / kRows) : 0;
      const T* x = xb + s0 * xv.stride_s;
#pragma unroll 8
      for (int j = 0; j < n; ++j) {
        const uint4 u = *reinterpret_cast<const uint4*>(x + j * (kRows * xv.stride_s));
        add(rope && s0 + j * kRows < n_rot ? rotate(u, s0 + j * kRows) : u);
      }
    }
    for (int k = 0; k < n_cached; ++k) {
      wait(base + k);
      T* buf = cache + ((base + k) % nbuf) * kTileElems;
      const int64_t s_tile = (tile0 + k) * kTile;
#pragma unroll 8
      for (int t = r; t < kTile; t += kRows) {
        uint4* chunk = reinterpret_cast<uint4*>(buf + t * D + c * 8);
        if (rope && s_tile + t < n_rot) *chunk = rotate(*chunk, s_tile + t);
        add(*chunk);
      }
    }
    if (is_v) unpack8<T>(make_uint4(amax2[0], amax2[1], amax2[2], amax2[3]), acc);
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
      sm.part[i & 1][d] = a;
    }
    // Once every CTA has passed this barrier, none still reads the other half from item i - 1.
    cluster.sync();
    // Every CTA merges the partials in rank order, so all of them hold the same statistic; the
    // remote loads go out four at a time.
    for (int d = threadIdx.x; d < D; d += kThreads) {
      float a = 0.f;
      for (int q0 = 0; q0 < n_ranks; q0 += 4) {
        float x[4];
#pragma unroll
        for (int q = 0; q < 4; ++q) x[q] = q0 + q < n_ranks ? cluster.map_shared_rank(sm.part[i & 1], q0 + q)[d] : 0.f;
#pragma unroll
        for (int q = 0; q < 4; ++q) a = is_v ? fmaxf(a, x[q]) : a + x[q];
      }
      if (is_v) {
        sm.stat[d] = recip_scale(448.f, a);
        if (rank == 0) p.v_scale[bh * D + d] = __fdiv_rn(a, 448.f);
      } else {
        const float mean = __fmul_rn(a, 1.f / float(S));
        sm.stat[d] = mean;
        if (rank == 0) p.k_mean[bh * D + d] = mean;
      }
    }
    __syncthreads();  // stat is complete

    float mean[8];
    if (!is_v) {
#pragma unroll
      for (int k = 0; k < 8; ++k) mean[k] = sm.stat[c * 8 + k];
    }
    const float inv0 = is_v ? sm.stat[2 * dp] : 0.f, inv1 = is_v ? sm.stat[2 * dp + 1] : 0.f;
    int8_t* k8b = p.k8 + (bh / H) * p.k8v.stride_b + (bh % H) * p.k8v.stride_h + c * 8;
    for (int k = 0; k < n_mine; ++k) {
      const int64_t tile = tile_at(k);
      const uint32_t seq = base + k;
      T* buf = cache + (seq % nbuf) * kTileElems;
      if (k >= n_cached) {
        wait(seq);
        if (rope) {
          for (int t = r; t < kTile; t += kRows) {
            uint4* chunk = reinterpret_cast<uint4*>(buf + t * D + c * 8);
            if (tile * kTile + t < n_rot) *chunk = rotate(*chunk, tile * kTile + t);
          }
        }
      }
      if (!is_v) {
        // INT8 per 64-token block of k - mean: the thread's NB rows r + j * kRows of the block, read
        // from shared memory twice (keeping them in registers would cost the third CTA an SM).
        constexpr int NB = kKBlock / kRows;
        const int valid = int(min(int64_t(kTile), S - tile * kTile));  // rows < valid are tokens
#pragma unroll
        for (int blk = 0; blk < 2; ++blk) {
          auto row = [&](int j, float (&x)[8]) {
            const int t = blk * kKBlock + r + j * kRows;
            unpack8<T>(*reinterpret_cast<const uint4*>(buf + t * D + c * 8), x);
#pragma unroll
            for (int e = 0; e < 8; ++e) x[e] = __fsub_rn(x[e], mean[e]);
            return t < valid;
          };
          float amax = 0.f;
#pragma unroll
          for (int j = 0; j < NB; ++j) {
            float x[8];
            if (row(j, x)) {
#pragma unroll
              for (int e = 0; e < 8; ++e) amax = absmax_acc(amax, x[e]);
            }
          }
          amax = cta_max(amax, sm.warp_max, parity);
          parity ^= 1;
          const float qmax = p.k_fp8 ? Fp8Format::kMax : Int8Format::kMax;
          const float inv = recip_scale(qmax, amax);
          const bool fast = inv <= 3.4028235e38f;  // the whole CTA takes the same branch
#pragma unroll
          for (int j = 0; j < NB; ++j) {
            float x[8];
            if (!row(j, x)) continue;
            uint2 w;
            if (p.k_fp8) {  // as quantize_fp8(..., "per_block", 64)
              w = pack8_uniform<Fp8Format>(x, inv);
            } else {
              int32_t q[8];
#pragma unroll
              for (int e = 0; e < 8; ++e) q[e] = fast ? cvt_rni_sat_s8(__fmul_rn(x[e], inv)) : quant_int8(x[e], inv);
              w = make_uint2(pack_b8x4(q[0], q[1], q[2], q[3]), pack_b8x4(q[4], q[5], q[6], q[7]));
            }
            const int t = blk * kKBlock + r + j * kRows;
            __stcs(reinterpret_cast<uint2*>(k8b + (tile * kTile + t) * p.k8v.stride_s), w);
          }
          if (threadIdx.x == 0 && 2 * tile + blk < n_kblk) p.k_scale[bh * n_kblk + 2 * tile + blk] = __fdiv_rn(amax, qmax);
        }
      } else {
        // Channels 2 dp and 2 dp + 1 of the thread's 16-token runs: the two lanes of a pair store
        // adjacent 16 bytes of one vt row, so each store instruction fills whole 32-byte sectors
        // (their reads of one channel pair share a bank: 2-way conflicts).
        const uint32_t* words = reinterpret_cast<const uint32_t*>(buf);
        uint8_t* dst = p.vt + (bh * D + 2 * dp) * p.s_pad + tile * kTile;
        // Padding past S is written as 0 even where inv is inf (a channel of subnormal absmax):
        // 0 x inf would be NaN there, and the PV wgmma turns P = 0 times NaN into NaN outputs.
        const int valid = int(min(int64_t(kTile), S - tile * kTile));
#pragma unroll
        for (int m = 0; m < kRuns; ++m) {
          const int t0 = 16 * (run0 + 2 * m);
          float f0[16], f1[16];
#pragma unroll
          for (int t = 0; t < 16; ++t) {
            const float2 x = InputTraits<T>::to_float2(words[(t0 + t) * DP + dp]);
            f0[v_slot(t)] = __fmul_rn(x.x, inv0);
            f1[v_slot(t)] = __fmul_rn(x.y, inv1);
          }
          uint4 w0 = e4m3x16(f0), w1 = e4m3x16(f1);
          if (valid - t0 < 16) {  // masked after packing: a select per value spills at 80 registers
            w0 = zero_slots_from(w0, valid - t0);
            w1 = zero_slots_from(w1, valid - t0);
          }
          __stcs(reinterpret_cast<uint4*>(dst + t0), w0);
          __stcs(reinterpret_cast<uint4*>(dst + p.s_pad + t0), w1);
        }
      }
      __syncthreads();  // buffer seq % nbuf has been read by every thread
      issue(seq + nbuf);
    }
  }
  cluster.sync();  // no CTA leaves while another may still read its shared memory
}

// Clusters of one launch configuration that fit the GPU at once (the persistent grid's height).
template <typename T, int D, bool kRope>
int resident_clusters(const cudaLaunchConfig_t& cfg) {
  int device = 0, n = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return 0;
  // Per device, cluster size and cached tiles: the occupancy query costs more than the launch.
  static int memo[16][kMaxCluster + 1][KvLayout<T, D>::kTiles + 1] = {};
  const int tiles = int((cfg.dynamicSmemBytes - KvLayout<T, D>::kSharedBytes) / KvLayout<T, D>::kTileBytes);
  const unsigned cl = cfg.attrs[0].val.clusterDim.x;
  int* m = device < 16 ? &memo[device][cl][tiles] : nullptr;
  if (m != nullptr && *m > 0) return *m;
  if (cudaOccupancyMaxActiveClusters(&n, quantize_kv_kernel<T, D, kRope>, &cfg) != cudaSuccess) return 0;
  if (m != nullptr) *m = n;
  return n;
}

// [B, S, H, D] as a 4-D map, one 128-token tile of one head per box. Strides of size-1 dims do not
// matter (torch may give them anything); they are set to D to satisfy the encoder.
cudaError_t kv_map(CUtensorMap* map, const void* x, ScalarType dtype, const TokenView& v) {
  const int64_t dims[4] = {v.D, v.S, v.H, v.B};
  const int64_t strides[4] = {1, v.S > 1 ? v.stride_s : v.D, v.H > 1 ? v.stride_h : v.D, v.B > 1 ? v.stride_b : v.D};
  const uint32_t box[4] = {uint32_t(v.D), uint32_t(kTile), 1, 1};
  return encode_tensor_map(map, x, dtype, 4, dims, strides, box, TmaSwizzle::None);
}

template <typename T, int D, bool kRope>
cudaError_t launch_kv(const QuantizeAttentionKvParams& p, cudaStream_t stream) {
  using L = KvLayout<T, D>;
  alignas(64) CUtensorMap tk, tv;
  cudaError_t err = kv_map(&tk, p.k, p.dtype, p.kv);
  if (err == cudaSuccess) err = kv_map(&tv, p.v, p.dtype, p.vv);
  if (err != cudaSuccess) return cudaErrorNotSupported;
  const int64_t n_tiles = p.s_pad / kTile;
  const unsigned cluster = unsigned(n_tiles < kMaxCluster ? n_tiles : kMaxCluster);
  const int64_t tpc = ceil_div(n_tiles, cluster);
  auto kernel = quantize_kv_kernel<T, D, kRope>;
  err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, L::kBytes);
  if (err == cudaSuccess) err = cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
  if (err != cudaSuccess) return err;
  cudaLaunchConfig_t cfg = {};
  cfg.blockDim = dim3(kThreads);
  // The buffers this launch uses (fewer for short sequences), then KvShared.
  const int tiles = int(tpc < L::kTiles ? tpc : L::kTiles);
  cfg.dynamicSmemBytes = size_t(L::kBytes - (L::kTiles - tiles) * L::kTileBytes);
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = cluster;
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  const int64_t items = 2 * p.kv.B * p.kv.H;
  if (items * tpc >= (int64_t(1) << 31)) return cudaErrorNotSupported;  // the kernel's 32-bit tile sequence
  cfg.gridDim = dim3(cluster, 1, 1);
  const int resident = resident_clusters<T, D, kRope>(cfg);
  if (resident < 1) return cudaErrorNotSupported;
  cfg.gridDim.y = unsigned(items < resident ? items : resident);
  return cudaLaunchKernelEx(&cfg, kernel, p, tk, tv);
}

}  // namespace
}  // namespace sm90a

// The clusters meet in distributed shared memory: no global work space.
int64_t quantize_attention_kv_scratch(const QuantizeAttentionKvParams&) { return 0; }

cudaError_t quantize_attention_kv(const QuantizeAttentionKvParams& p, cudaStream_t stream) {
  const TokenView &kv = p.kv, &vv = p.vv;
  if (kv.B * kv.H == 0) return cudaSuccess;
  const bool bf16 = p.dtype == ScalarType::BFloat16;
  if ((kv.D != 64 && kv.D != 128) || vv.D != kv.D || vv.S != kv.S || vv.H != kv.H || vv.B != kv.B || kv.S < 1 ||
      p.s_pad % 128 != 0 || p.s_pad < kv.S || p.s_pad - kv.S >= 128 || !rows_aligned_16b(p.k, kv) || !rows_aligned_16b(p.v, vv) ||
      !is_aligned(p.k8, 8) || p.k8v.stride_b % 8 || p.k8v.stride_s % 8 || p.k8v.stride_h % 8 ||
      (!bf16 && p.dtype != ScalarType::Float16))
    return cudaErrorNotSupported;
  if (p.rope && (p.rope_freqs.grid_sizes == nullptr && kv.B > RopeFreqs::kMaxHostGrid)) return cudaErrorNotSupported;
  using sm90a::launch_kv;
  if (p.rope) {
    if (kv.D == 128) return bf16 ? launch_kv<__nv_bfloat16, 128, true>(p, stream) : launch_kv<__half, 128, true>(p, stream);
    return bf16 ? launch_kv<__nv_bfloat16, 64, true>(p, stream) : launch_kv<__half, 64, true>(p, stream);
  }
  if (kv.D == 128) return bf16 ? launch_kv<__nv_bfloat16, 128, false>(p, stream) : launch_kv<__half, 128, false>(p, stream);
  return bf16 ? launch_kv<__nv_bfloat16, 64, false>(p, stream) : launch_kv<__half, 64, false>(p, stream);
}

}  // namespace ac4k
