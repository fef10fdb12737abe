// gemm_nvfp4 for sm90a: out = (dec(A) dec(B)^T) * a_gs * b_gs + bias[n], A [M, K] and B [N, K] in
// NVFP4 (packed E2M1, E4M3 block scales of 16 along K, one FP32 global scale each), out bf16 / fp16;
// ac4k_kernel.reference.gemm_nvfp4 (the math of a Blackwell block-scaled NVFP4 GEMM).
//
// Hopper has no FP4 tensor cores, so the FP4 data is decoded exactly in the main loop and fed to
// 16-bit wgmma (sm90a/nvfp4_decode.cuh: FP16, exact), so the products and FP32 sums are those of
// the Blackwell kernel.
//
// Persistent, warp-specialized, one CTA an SM walking 128x128 output tiles (as gemm_fp8.cu):
//   warpgroup 0      producer: all 128 threads copy the packed rows of A and B for each 64-wide K
//                    block (32 bytes a row) into kStages stages with cp.async (8-byte copies, zero
//                    filled past M / N / K), completing on the stage's full mbarrier. Not TMA: the
//                    packed rows are K/2 bytes, a multiple of 8 but of 16 (TMA's stride rule) only
//                    when K % 32 == 0. setmaxnreg.dec to 40.
//   warpgroups 1, 2  consumers, 64 rows of the tile each (setmaxnreg.inc to 232). Per K block each
//                    thread decodes its share of A (two rows, one 16-block) into its consumer's
//                    128-byte-swizzled FP16 A tile and a 1/256 share of B (one row, two 16-blocks)
//                    into the FP16 B tile both consumers read (all triple-buffered);
//                    fence.proxy.async, one 256-thread named barrier, then four wgmma m64n128k16
//                    f16 from shared memory. The wgmmas of one K block run while the next one is
//                    decoded (wait_group 1). A straight into wgmma's A registers would save its
//                    shared-memory round trip, but ptxas serializes the wgmmas (C7513) when their
//                    A registers are written while an earlier group is in flight.
// K order inside a K block is permuted, the same way for A and B (a dot product does not care): lane
// q = lane % 4 of a warp takes 16-block q of its two rows (one 8-byte load and one block scale a
// row); the decoded pairs of one 16-block land in 4-byte column q of each 16-byte chunk. Pair P[i] of a decoded 16-block (nibbles
// (0,2) (4,6) (1,3) (5,7) (8,10) (12,14) (9,11) (13,15)) feeds k16 step i/2, k offset 2q (+8 for odd i);
// the B decoder writes block q's P[i] to exactly that column.
// Block scales (plain layout, any K / 16 row stride) are read by the consumers from global memory
// (L2-resident, tiny), one K block ahead. The global scales are read on the device in the epilogue.
// Epilogue (per consumer warp, its 16 rows): acc * a_gs * b_gs + bias in FP32 (the reference's
// order), staged in shared memory, 16-byte row stores with guards (scalar when out's rows are not
// 16-byte aligned), as gemm_fp8.cu.
// M <= 64 (decode steps, per-sample linears) takes gemm_nvfp4_small_m_kernel instead: all SMs stream
// the weight, each warp decoding into mma.sync fragments (see there).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <algorithm>

#include <cuda/ptx>

#include "ac4k_kernel/ops.h"
#include "ac4k_kernel/types.h"
#include "common/math.cuh"
#include "common/utils.cuh"
#include "sm90a/barrier.cuh"
#include "sm90a/cp_async.cuh"
#include "sm90a/gemm_tiles.cuh"
#include "sm90a/mma.cuh"
#include "sm90a/nvfp4_decode.cuh"
#include "sm90a/wgmma.cuh"

namespace ac4k {
namespace sm90a {
namespace {

namespace cg = cooperative_groups;

constexpr int kBlockM = 128;           // two consumer warpgroups of 64 rows
constexpr int kBlockN = 128;           // wgmma n128: 64 accumulator registers a thread
constexpr int kBlockK = 64;            // one 128-byte swizzle row of FP16
constexpr int kPackedRow = kBlockK / 2;  // 32 bytes of packed E2M1 a row and K block
constexpr int kStages = 8;
constexpr int kDecBufs = 3;            // decoded B tiles: see the barrier argument in the main loop
constexpr int kThreads = 384;
constexpr int kConsumerThreads = 256;
constexpr int kConsumerWarps = 8;
constexpr int kMaxGroup = 16;          // n-blocks per band of the tile order
constexpr uint32_t kBarDecoded = 1;    // named barrier: both consumers wrote their half of B

struct Smem {
  static constexpr int kDec = kBlockN * kBlockK * 2;      // 16 KB decoded FP16 B tile
  static constexpr int kTileA = kBlockM * kPackedRow;     // 4 KB packed
  static constexpr int kTileB = kBlockN * kPackedRow;     // 4 KB packed
  static constexpr int kStage = kTileA + kTileB;
  static constexpr int kPitch = kBlockN * 2 + 16;         // staged output row, bytes (padded)
  static constexpr int kWarpOut = 16 * kPitch;
  static constexpr int kDecATile = 64 * kBlockK * 2;     // 8 KB: one consumer's 64 decoded A rows
  static constexpr int kDecB = 0;
  static constexpr int kDecA = kDecB + kDecBufs * kDec;   // [buffer][consumer]
  static constexpr int kPacked = kDecA + kDecBufs * 2 * kDecATile;
  static constexpr int kOut = kPacked + kStages * kStage;
  static constexpr int kBar = kOut + kConsumerWarps * kWarpOut;
  static constexpr int kBytes = kBar + 8 * 2 * kStages;
  static_assert(kDec % 1024 == 0 && kStage % 128 == 0 && kBar % 8 == 0, "alignment");
  static_assert(kBytes <= 227 * 1024, "shared memory");
};
static_assert(kBlockM * kPackedRow / 8 + kBlockN * kPackedRow / 8 == 8 * 128, "8 copies a producer thread");

struct Operands {
  const uint8_t *a, *b, *a_sf, *b_sf;
};

template <typename T>
__global__ void __launch_bounds__(kThreads, 1)
gemm_nvfp4_kernel(const GemmNvfp4Params p, const TileOrder order, const int num_tiles, const bool vec_store) {
  extern __shared__ __align__(1024) uint8_t smem[];
  // The swizzled decoded tiles need 1024-byte alignment (no static shared memory in this kernel).
  if ((static_cast<uint32_t>(__cvta_generic_to_shared(smem)) & 1023u) != 0) __trap();
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + Smem::kBar);
  uint64_t* empty = full + kStages;
  const int num_kb = int(ceil_div(p.K, kBlockK));
  const Operands op{static_cast<const uint8_t*>(p.a), static_cast<const uint8_t*>(p.b), p.a_sf, p.b_sf};

  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbar_init(full + s, 128);                // every producer thread's cp.async arrival
      mbar_init(empty + s, kConsumerWarps);    // each consumer warp, once its loads are done
    }
    fence_barrier_init();
  }
  __syncthreads();

  if (threadIdx.x < 128) {  // ---- producer ----
    setmaxnreg_dec<40>();
    const int t = threadIdx.x;
    const int64_t kbytes = p.K / 2;
    int stage = 0;
    uint32_t phase = 0;
    bool first_round = true;
    for (int tile = blockIdx.x; tile < num_tiles; tile += gridDim.x) {
      int mb, nb;
      order(tile, mb, nb);
      for (int kb = 0; kb < num_kb; ++kb) {
        if (!first_round) mbar_wait(empty + stage, phase ^ 1u);
        uint8_t* dst = smem + Smem::kPacked + stage * Smem::kStage;
#pragma unroll
        for (int i = 0; i < 8; ++i) {  // copies 0..511: A rows, 512..1023: B rows (4 a row)
          const bool is_b = i >= 4;
          const int c = (t + 128 * i) & 511, row = c >> 2, ch = c & 3;
          const int64_t grow = (is_b ? int64_t(nb) * kBlockN : int64_t(mb) * kBlockM) + row;
          const int64_t kbyte = int64_t(kb) * kPackedRow + ch * 8;
          const bool valid = grow < (is_b ? p.N : p.M) && kbyte < kbytes;
          const uint8_t* base = is_b ? op.b : op.a;
          const uint8_t* src = valid ? base + grow * (is_b ? p.ldb : p.lda) + kbyte : base;
          cp_async_8_zfill(dst + (is_b ? Smem::kTileA : 0) + row * kPackedRow + ch * 8, src, valid);
        }
        cp_async_mbar_arrive_noinc(full + stage);
        if (++stage == kStages) {
          stage = 0;
          phase ^= 1u;
          first_round = false;
        }
      }
    }
    asm volatile("cp.async.wait_all;" ::: "memory");
    return;
  }

  // ---- consumers ----
  setmaxnreg_inc<232>();
  const int cw = int(threadIdx.x / 128) - 1;
  const int tid = threadIdx.x % 128, warp = tid / 32, lane = tid % 32, q = lane % 4;
  const int ra = 64 * cw + 16 * warp + lane / 4;  // tile rows ra and ra + 8 of this thread's A fragment
  const int u = threadIdx.x - 128, bn = u >> 1, bh = u & 1;  // B share: row bn, 16-blocks 2bh, 2bh + 1
  uint8_t* stage_out = smem + Smem::kOut + (cw * 4 + warp) * Smem::kWarpOut;
  const float a_gs = *p.a_gs, b_gs = *p.b_gs;
  const int64_t nblk = p.K / 16;
  int stage = 0, dbuf = 0;
  uint32_t phase = 0;
  float acc[kBlockN / 2];

  // This thread's four block scales of K block kb: A rows ra, ra + 8 (block 4kb + q) in bytes 0, 1;
  // B row bn (blocks 4kb + 2bh, + 1) in bytes 2, 3. Zero outside the matrices (the packed data there
  // is zero-filled, and 0 * a stale NaN scale would not be 0).
  auto load_scales = [&](int mb, int nb, int kb) -> uint32_t {
    const int64_t m0 = int64_t(mb) * kBlockM + ra, n0 = int64_t(nb) * kBlockN + bn;
    const int64_t ka = int64_t(kb) * 4 + q, kbb = int64_t(kb) * 4 + 2 * bh;
    uint32_t r = 0;
    if (ka < nblk) {
      if (m0 < p.M) r |= uint32_t(__ldg(op.a_sf + m0 * p.lda_sf + ka));
      if (m0 + 8 < p.M) r |= uint32_t(__ldg(op.a_sf + (m0 + 8) * p.lda_sf + ka)) << 8;
    }
    if (n0 < p.N) {
      if (kbb < nblk) r |= uint32_t(__ldg(op.b_sf + n0 * p.ldb_sf + kbb)) << 16;
      if (kbb + 1 < nblk) r |= uint32_t(__ldg(op.b_sf + n0 * p.ldb_sf + kbb + 1)) << 24;
    }
    return r;
  };

  for (int tile = blockIdx.x; tile < num_tiles; tile += gridDim.x) {
    int mb, nb;
    order(tile, mb, nb);
    uint32_t sf_cur = load_scales(mb, nb, 0);

    // One K block. Buffer argument: this step writes decoded tiles dbuf, last read by the wgmmas of
    // step j - 3 of both consumers; each consumer's wait_group<1> at the end of step j - 2 retired
    // those before it arrived at step j - 1's barrier, which this thread has passed.
    auto step = [&](int kb) {
      const uint32_t sf_next = kb + 1 < num_kb ? load_scales(mb, nb, kb + 1) : 0u;
      mbar_wait(full + stage, phase);
      const uint8_t* pk = smem + Smem::kPacked + stage * Smem::kStage;
      const uint2 a0 = *reinterpret_cast<const uint2*>(pk + ra * kPackedRow + 8 * q);
      const uint2 a1 = *reinterpret_cast<const uint2*>(pk + (ra + 8) * kPackedRow + 8 * q);
      const uint4 bv = *reinterpret_cast<const uint4*>(pk + Smem::kTileA + bn * kPackedRow + 16 * bh);
      __syncwarp();
      if (lane == 0) (void)cuda::ptx::mbarrier_arrive(empty + stage);  // release: the loads are done
      if (++stage == kStages) {
        stage = 0;
        phase ^= 1u;
      }

      uint32_t o0[8], o1[8];
      decode16(bv.x, bv.y, sf_cur >> 16, o0);
      decode16(bv.z, bv.w, sf_cur >> 24, o1);
      uint8_t* dec = smem + Smem::kDecB + dbuf * Smem::kDec + bn * 128;
#pragma unroll
      for (int i = 0; i < 8; ++i) {  // pair i -> 16-byte chunk i (k 8i..8i+7), bytes 8bh..; 128-byte swizzle
        const uint2 v = make_uint2(o0[i], o1[i]);
        *reinterpret_cast<uint2*>(dec + ((i ^ (bn & 7)) << 4) + 8 * bh) = v;
      }
      uint32_t r0[8], r1[8];
      decode16(a0.x, a0.y, sf_cur, r0);
      decode16(a1.x, a1.y, sf_cur >> 8, r1);
      uint8_t* deca = smem + Smem::kDecA + (dbuf * 2 + cw) * Smem::kDecATile;
      const int rw = ra - 64 * cw;  // row inside this consumer's 64-row A tile
#pragma unroll
      for (int i = 0; i < 8; ++i) {  // pair i -> chunk i, bytes 4q..4q+3 (as B's 16-block q)
        *reinterpret_cast<uint32_t*>(deca + rw * 128 + ((i ^ (rw & 7)) << 4) + 4 * q) = r0[i];
        *reinterpret_cast<uint32_t*>(deca + (rw + 8) * 128 + ((i ^ ((rw + 8) & 7)) << 4) + 4 * q) = r1[i];
      }
      fence_proxy_async_shared();  // the generic B stores, before the async proxy (wgmma) reads them
      named_bar_sync(kBarDecoded, kConsumerThreads);

      const uint64_t da = make_smem_desc_kmajor_sw128(deca);
      const uint64_t db = make_smem_desc_kmajor_sw128(smem + Smem::kDecB + dbuf * Smem::kDec);
      wgmma_fence();
#pragma unroll
      for (int s = 0; s < 4; ++s)
        wgmma_f16_ss(acc, smem_desc_advance(da, 32 * s), smem_desc_advance(db, 32 * s), kb > 0 || s > 0);
      wgmma_commit();
      wgmma_wait<1>();  // step j's wgmmas run while step j + 1 decodes
      if (++dbuf == kDecBufs) dbuf = 0;
      sf_cur = sf_next;
    };

    wgmma_fence_operand(acc);
    for (int kb = 0; kb < num_kb; ++kb) step(kb);
    wgmma_wait<0>();
    wgmma_fence_operand(acc);

    // ---- epilogue: this warp's 16 rows ----
    const int64_t row_w = int64_t(mb) * kBlockM + 64 * cw + 16 * warp;
    const int64_t col_t = int64_t(nb) * kBlockN;
#pragma unroll
    for (int j = 0; j < kBlockN / 8; ++j) {
      const int c = 8 * j + 2 * q;
      float b_col[2];
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int64_t col = col_t + c + e;
        b_col[e] = col < p.N && p.bias != nullptr ? load_bias(p.bias, p.bias_dtype, col) : 0.f;
      }
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const float v0 = acc[4 * j + 2 * r] * a_gs * b_gs + b_col[0];
        const float v1 = acc[4 * j + 2 * r + 1] * a_gs * b_gs + b_col[1];
        *reinterpret_cast<uint32_t*>(stage_out + (lane / 4 + 8 * r) * Smem::kPitch + 2 * c) = pack2<T>(v0, v1);
      }
    }
    __syncwarp();
    constexpr int kChunks = kBlockN / 8;  // 16-byte chunks a row
    T* out = static_cast<T*>(p.out);
#pragma unroll 4
    for (int k = 0; k < 16 * kChunks / 32; ++k) {
      const int i = lane + 32 * k, rr = i / kChunks, ch = i % kChunks;
      const int64_t row = row_w + rr, col = col_t + 8 * ch;
      if (row >= p.M || col >= p.N) continue;
      const uint8_t* src = stage_out + rr * Smem::kPitch + 16 * ch;
      T* dst = out + row * p.ldo + col;
      if (vec_store && col + 8 <= p.N) {
        *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
      } else {
        const T* s = reinterpret_cast<const T*>(src);
        for (int e = 0; e < 8 && col + e < p.N; ++e) dst[e] = s[e];
      }
    }
    __syncwarp();  // the staging rows are rewritten by the next tile
  }
}

// ---- small M (<= 64 rows): the weight's bytes, not the MMA, bound it ----
// The tiled kernel above runs ceil(N/128) CTAs of 128 rows at M <= 64 (40 at N = 5120), each
// walking all of K with its decode latency exposed. Here a warp owns all M rows (MT m16 tiles) x 32
// columns for a share of K, and decodes A and B from global memory straight into mma.sync
// m16n8k16 f16 fragments (no shared-memory round trip); a CTA's 4 warps and a cluster of G CTAs
// split K, and their partial sums meet in (distributed) shared memory in a fixed order.
// K order: as the tiled kernel, a dot product does not care, so lane q of a quad takes the two
// 16-blocks 2q, 2q+1 of each 128-wide K chunk (16 packed bytes a row, two 8-byte loads); decode8 of
// its word t gives the fragments of k16 steps 2t (pairs (n0,n2), (n4,n6)) and 2t+1 ((n1,n3), (n5,n7)),
// the same for A rows and B columns.
constexpr int kSmallWarps = 4;
constexpr int kSmallN = 32;        // columns a CTA: four n8 tiles a warp
constexpr int kSmallMaxG = 8;      // CTAs of a cluster splitting K
constexpr int kSmallMaxM = 64;

// Row r's 16 packed bytes of chunk c for lane q (blocks 2q, 2q+1), and their two scale bytes;
// zeros past the matrix (rows >= rows, blocks >= nblk), so that they add nothing.
struct Packed16 {
  uint2 w[2];
  uint32_t sf[2];
};
template <bool kStream>
__device__ __forceinline__ Packed16 load_packed(const uint8_t* base, const uint8_t* sf, int64_t ld, int64_t ld_sf,
                                                int64_t row, int64_t rows, int64_t blk, int64_t nblk) {
  Packed16 r = {{make_uint2(0, 0), make_uint2(0, 0)}, {0, 0}};
  if (row >= rows) return r;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    if (blk + h < nblk) {
      const uint2* src = reinterpret_cast<const uint2*>(base + row * ld + (blk + h) * 8);
      r.w[h] = kStream ? __ldcs(src) : __ldg(src);
      r.sf[h] = __ldg(sf + row * ld_sf + blk + h);
    }
  }
  return r;
}

// For M > 16, A is decoded once into the fragments the small-M warps read, instead of by every CTA
// (ceil(N / 32) of them) and for each of its MT m16 tiles: uint4 f = (((chunk * 4 + word) * MT + m16
// tile) * 2 + step) * 32 + lane holds the m16n8k16 A fragment {a0, a1, a2, a3} of k16 step
// 2 word + step for lane (g, q), from decode8 of word `word` of rows 16 tile + g and + 8 (blocks 2q,
// 2q + 1 of the chunk): one 16-byte load lands in the four registers the mma reads, and a warp's
// loads are 512 contiguous bytes. At M <= 16 the extra launch costs more than the decode it saves
// (session 12: M = 64, 5120 x 13824: 79.4 -> 58.1 us; M = 1, 5120^2: 24.2 -> 28.4).
template <int MT>
__global__ void __launch_bounds__(128) nvfp4_decode_a_kernel(const GemmNvfp4Params p) {
  const int64_t nblk = p.K / 16, n_frag = ceil_div(p.K, int64_t(128)) * 4 * MT;
  const int lane = threadIdx.x % 32, g = lane / 4, q = lane % 4;
  uint4* out = static_cast<uint4*>(p.scratch);
  for (int64_t f = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32; f < n_frag;
       f += int64_t(gridDim.x) * blockDim.x / 32) {
    const int i = int(f % MT), t = int((f / MT) % 4);
    const int64_t c = f / (4 * MT);
    uint32_t o[2][4];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const Packed16 pa = load_packed<false>(static_cast<const uint8_t*>(p.a), p.a_sf, p.lda, p.lda_sf,
                                             16 * i + 8 * h + g, p.M, c * 8 + 2 * q, nblk);
      const uint2 w = t < 2 ? pa.w[0] : pa.w[1];  // selects: t is not a compile-time index here
      decode8(t % 2 ? w.y : w.x, scale_f16x2(t < 2 ? pa.sf[0] : pa.sf[1]), o[h]);
    }
    out[(f * 2) * 32 + lane] = make_uint4(o[0][0], o[1][0], o[0][1], o[1][1]);
    out[(f * 2 + 1) * 32 + lane] = make_uint4(o[0][2], o[1][2], o[0][3], o[1][3]);
  }
}

template <typename T, int MT>
__global__ void __launch_bounds__(kSmallWarps * 32, 3)
gemm_nvfp4_small_m_kernel(const GemmNvfp4Params p) {
  constexpr bool kPre = MT > 1;  // A's fragments from nvfp4_decode_a_kernel
  __shared__ float red[kSmallWarps][MT * 16][kSmallN + 1];  // +1: the fragment stores hit distinct banks
  cg::cluster_group cluster = cg::this_cluster();
  const int G = int(cluster.num_blocks()), rank = int(cluster.block_rank());
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, q = lane % 4;
  const int64_t n0 = int64_t(blockIdx.x) * kSmallN;
  const int64_t nblk = p.K / 16, n_chunks = ceil_div(p.K, int64_t(128));
  const uint8_t* a = static_cast<const uint8_t*>(p.a);
  const uint8_t* b = static_cast<const uint8_t*>(p.b);
  const uint4* adec = static_cast<const uint4*>(p.scratch) + lane;
  // kPre: this lane's four B rows (columns n0 + 8j + g) as pointers at their blocks 2q of chunk 0;
  // rows past N read row 0 and are zeroed (no branches in the loop).
  const uint8_t* brow[4];
  const uint8_t* bsf[4];
  bool bvalid[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const int64_t n = n0 + 8 * j + g;
    bvalid[j] = n < p.N;
    brow[j] = b + (bvalid[j] ? n : 0) * p.ldb + 16 * q;
    bsf[j] = p.b_sf + (bvalid[j] ? n : 0) * p.ldb_sf + 2 * q;
  }
  float acc[MT][4][4] = {};
  const int kw = rank * kSmallWarps + warp, nkw = G * kSmallWarps;
  for (int64_t c = kw; c < n_chunks; c += nkw) {
    const uint4* ac = adec + c * (4 * MT * 2 * 32);  // kPre: this chunk's A fragments
    Packed16 pb[4], pa[kPre ? 1 : MT][2];
    if (kPre && c * 8 + 8 <= nblk) {  // a whole chunk
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const uint2* src = reinterpret_cast<const uint2*>(brow[j] + c * 64);
        const uint2 w0 = __ldcs(src), w1 = __ldcs(src + 1);
        const uint32_t s0 = __ldg(bsf[j] + c * 8), s1 = __ldg(bsf[j] + c * 8 + 1);
        pb[j].w[0] = bvalid[j] ? w0 : make_uint2(0, 0);
        pb[j].w[1] = bvalid[j] ? w1 : make_uint2(0, 0);
        pb[j].sf[0] = bvalid[j] ? s0 : 0u;
        pb[j].sf[1] = bvalid[j] ? s1 : 0u;
      }
    } else {
#pragma unroll
      for (int j = 0; j < 4; ++j)
        pb[j] = load_packed<true>(b, p.b_sf, p.ldb, p.ldb_sf, n0 + 8 * j + g, p.N, c * 8 + 2 * q, nblk);
    }
    if constexpr (!kPre) {
      const int64_t blk = c * 8 + 2 * q;
#pragma unroll
      for (int i = 0; i < MT; ++i) {
#pragma unroll
        for (int h = 0; h < 2; ++h) pa[i][h] = load_packed<false>(a, p.a_sf, p.lda, p.lda_sf, 16 * i + 8 * h + g, p.M, blk, nblk);
      }
    }
#pragma unroll
    for (int t = 0; t < 4; ++t) {  // word t: block 2q + t / 2, k16 steps 2t and 2t + 1
      uint32_t fb[4][4];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const uint32_t w = t % 2 ? pb[j].w[t / 2].y : pb[j].w[t / 2].x;
        decode8(w, scale_f16x2(pb[j].sf[t / 2]), fb[j]);
      }
#pragma unroll
      for (int i = 0; i < MT; ++i) {
        uint32_t fa[2][4];
        if constexpr (!kPre) {
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const uint32_t w = t % 2 ? pa[i][h].w[t / 2].y : pa[i][h].w[t / 2].x;
            decode8(w, scale_f16x2(pa[i][h].sf[t / 2]), fa[h]);
          }
        }
#pragma unroll
        for (int s = 0; s < 2; ++s) {
          const uint4 v = kPre ? __ldg(ac + ((t * MT + i) * 2 + s) * 32)
                               : make_uint4(fa[0][2 * s], fa[1][2 * s], fa[0][2 * s + 1], fa[1][2 * s + 1]);
          const uint32_t fr[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
          for (int j = 0; j < 4; ++j) mma_f16_16816(acc[i][j], fr, fb[j][2 * s], fb[j][2 * s + 1]);
        }
      }
    }
  }
#pragma unroll
  for (int i = 0; i < MT; ++i) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) red[warp][16 * i + g + 8 * (e / 2)][8 * j + 2 * q + e % 2] = acc[i][j][e];
    }
  }
  // The CTA's sum in warp order into red[0], then rank r finishes rows r, r + G, ... summing the
  // ranks' partials in rank order: the same bits every run.
  const int col = threadIdx.x % kSmallN, row0 = threadIdx.x / kSmallN;
  constexpr int kRowStep = kSmallWarps * 32 / kSmallN;
  __syncthreads();
  for (int row = row0; row < MT * 16; row += kRowStep) {
    float v = red[0][row][col];
#pragma unroll
    for (int w = 1; w < kSmallWarps; ++w) v += red[w][row][col];
    red[0][row][col] = v;
  }
  cluster.sync();  // every CTA's partial sum is in its shared memory
  const int64_t n = n0 + col;
  if (n < p.N) {
    const float a_gs = *p.a_gs, b_gs = *p.b_gs;
    const float bias = p.bias != nullptr ? load_bias(p.bias, p.bias_dtype, n) : 0.f;
    T* out = static_cast<T*>(p.out);
    for (int row = row0 * G + rank; row < p.M; row += kRowStep * G) {
      float v = 0.f;
      for (int r = 0; r < G; ++r) v += cluster.map_shared_rank(&red[0][0][0], r)[row * (kSmallN + 1) + col];
      reinterpret_cast<uint16_t*>(out)[row * p.ldo + n] = uint16_t(pack2<T>(v * a_gs * b_gs + bias, 0.f));
    }
  }
  cluster.sync();  // no CTA leaves while another may still read its shared memory
}

template <typename T, int MT>
cudaError_t launch_small_m(const GemmNvfp4Params& p, cudaStream_t stream) {
  const int64_t n_ctas = ceil_div(p.N, int64_t(kSmallN)), n_chunks = ceil_div(p.K, int64_t(128));
  // Enough CTAs for two an SM (K split further across a cluster), but every warp with a chunk.
  int G = 1;
  while (G < kSmallMaxG && n_ctas * G < 2 * sm_count() && int64_t(2 * G) * kSmallWarps <= n_chunks) G *= 2;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(unsigned(n_ctas), unsigned(G), 1);
  cfg.blockDim = dim3(kSmallWarps * 32);
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = 1;
  attr[0].val.clusterDim.y = unsigned(G);
  attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  if constexpr (MT > 1) {
    const int64_t n_frag = n_chunks * 4 * MT;  // a warp each
    nvfp4_decode_a_kernel<MT><<<unsigned(std::min<int64_t>(ceil_div(n_frag, int64_t(4)), 4 * sm_count())), 128, 0, stream>>>(p);
  }
  cudaError_t err = cudaLaunchKernelEx(&cfg, gemm_nvfp4_small_m_kernel<T, MT>, p);
  return err != cudaSuccess ? err : last_launch_error();
}

// Bytes of A's decoded fragments (M in 17..64; at M <= 16 the kernel decodes A itself).
int64_t small_m_scratch(const GemmNvfp4Params& p) {
  if (p.M <= 16 || p.M > kSmallMaxM || p.N < 1 || p.N > int64_t(65535) * kSmallN || p.K < 16) return 0;
  return ceil_div(p.K, int64_t(128)) * 4 * ((p.M + 15) / 16) * 2 * 32 * 16;
}

template <typename T>
cudaError_t launch(const GemmNvfp4Params& p, cudaStream_t stream) {
  if (p.M <= kSmallMaxM && p.N <= int64_t(65535) * kSmallN && (p.M <= 16 || p.scratch != nullptr)) {
    switch ((p.M + 15) / 16) {
      case 1: return launch_small_m<T, 1>(p, stream);
      case 2: return launch_small_m<T, 2>(p, stream);
      case 3: return launch_small_m<T, 3>(p, stream);
      default: return launch_small_m<T, 4>(p, stream);
    }
  }
  const int m_blocks = int(ceil_div(p.M, kBlockM)), n_blocks = int(ceil_div(p.N, kBlockN));
  const TileOrder order{m_blocks, n_blocks, n_blocks < kMaxGroup ? n_blocks : kMaxGroup};
  const int num_tiles = m_blocks * n_blocks;
  const bool vec_store = is_aligned(p.out, 16) && p.ldo % 8 == 0;
  auto kernel = gemm_nvfp4_kernel<T>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Smem::kBytes);
  if (err != cudaSuccess) return err;
  const int grid = num_tiles < sm_count() ? num_tiles : sm_count();
  kernel<<<grid, kThreads, Smem::kBytes, stream>>>(p, order, num_tiles, vec_store);
  return last_launch_error();
}

}  // namespace
}  // namespace sm90a

int64_t gemm_nvfp4_scratch(const GemmNvfp4Params& p) { return sm90a::small_m_scratch(p); }

cudaError_t gemm_nvfp4(const GemmNvfp4Params& params, cudaStream_t stream) {
  GemmNvfp4Params p = params;
  if (p.M == 1) p.ldo = (p.N + 7) / 8 * 8;  // a lone row never moves
  const bool bias_ok = p.bias == nullptr || p.bias_dtype == ScalarType::BFloat16 ||
                       p.bias_dtype == ScalarType::Float16 || p.bias_dtype == ScalarType::Float32;
  if ((p.out_dtype != ScalarType::BFloat16 && p.out_dtype != ScalarType::Float16) || !bias_ok || p.M < 0 ||
      p.N < 0 || p.K < 16 || p.K % 16 != 0)
    return cudaErrorNotSupported;
  if (p.M == 0 || p.N == 0) return cudaSuccess;  // nothing to write (an empty operand's pointer may be null)
  if (p.a_gs == nullptr || p.b_gs == nullptr || p.a_sf == nullptr ||
      p.b_sf == nullptr || (p.M > 1 && (p.lda < p.K / 2 || p.lda % 8 != 0 || p.lda_sf < p.K / 16)) ||
      (p.N > 1 && (p.ldb < p.K / 2 || p.ldb % 8 != 0 || p.ldb_sf < p.K / 16)) ||
      p.ldo < p.N || !is_aligned(p.a, 8) || !is_aligned(p.b, 8))
    return cudaErrorNotSupported;
  if (p.M > (int64_t(1) << 31) - sm90a::kBlockM || p.N > (int64_t(1) << 31) - sm90a::kBlockN ||
      ceil_div(p.M, sm90a::kBlockM) * ceil_div(p.N, sm90a::kBlockN) >= (int64_t(1) << 31) ||
      p.K > (int64_t(1) << 31) - sm90a::kBlockK)
    return cudaErrorNotSupported;
  return p.out_dtype == ScalarType::BFloat16 ? sm90a::launch<__nv_bfloat16>(p, stream)
                                             : sm90a::launch<__half>(p, stream);
}

}  // namespace ac4k
