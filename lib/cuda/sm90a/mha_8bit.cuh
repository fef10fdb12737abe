// The 8-bit attention kernels for sm90a: QK^T on INT8 (mha_int8_x_fp8_fwd, the SageAttention2
// recipe, ac4k_kernel.reference.attention_int8_fp8) or FP8 E4M3 tensor cores (mha_fp8_fwd,
// reference.attention_fp8), PV on FP8 tensor cores; the two differ only in Q and K's format.
// Inputs come from quantize_attention_kv.cu (layouts in types.h); Q comes in bf16 / fp16 and is
// quantized here, or comes already quantized by quantize_attention_q.cu (with rope3d fused there).
// Included by the two ops' files, each instantiating its format.
//
// One warpgroup per CTA owns 64 query rows of one (batch, head); three CTAs share an SM (two
// stages of K and V^T in 76 KB of shared memory, <= 168 registers), and the resident CTAs
// interleave their softmax and tensor-core phases by themselves. Thread 0 issues the TMA loads of
// K / V^T, two 128-key blocks ahead on mbarriers, refilling a stage once its PV is done. Meanwhile
// each warp quantizes its 16 query rows to INT8 / E4M3 (one scale per warp: the 16-token Q
// blocks) straight into the swizzled tile the QK wgmma reads: Q never makes an INT8 round trip
// through memory, which saves the separate pass (a third of the input quantization's bytes).
// Per key block n, serially:
//   softmax(S_n)       FP32 online softmax in the log2 domain: row max on the raw scores,
//                      dequantization and max subtraction in one FFMA, ex2, P to E4M3 offset by
//                      log2(448); the thread's scores are the PV A fragment (permuted V^T layout)
//   O_blk = P V        wgmma m64n(D+8)k32 e4m3, A from registers; the 8 extra B rows are E4M3
//                      ones, so columns D..D+7 return P's row sums (no FADD chain, no shuffles)
//   O = O * alpha + O_blk   FP32 promotion of the narrower FP8 wgmma accumulator, every block
//   S_{n+1} = Q K^T    wgmma m64n128k32 s8 / e4m3, both operands from shared memory (K-major,
//                      swizzled); FP8's adds the products at reduced precision (about 22 bits)
// Epilogue: O * v_scale[d] / l, staged in shared memory, stored in the caller's layout as 16-byte
// row chunks with row guards.
//
// Measured alternatives (docs/perf-notes.md): two consumer warpgroups with a producer warpgroup,
// with and without ping-pong and intra-warpgroup overlap, were 8-25% slower: with one or two
// warps per scheduler the softmax is latency-bound, and the overlap variants spill. A persistent
// grid (tiles strided over resident CTAs, loads running ahead across tiles) lost 5-11%: thread 0's
// tile bookkeeping in the hot loop delays warp 0, which the whole warpgroup waits for.
// Three warpgroups an SM in one CTA sharing 5 K / V^T stages (each block loaded once for 192 rows),
// unordered or with a tensor-core turn order between them, were 2-16% slower than three CTAs.
// The softmax of block n + 1 overlapped with the PV of block n in each warpgroup (FA3's order, two
// CTAs an SM at 254 registers, three stages) was 8-13% slower at D = 128 (session 19).
#pragma once
#include <cuda.h>
#include <cuda_runtime.h>
#include <cudaTypedefs.h>

#include <cuda/ptx>
#include <type_traits>

#include "ac4k_kernel/types.h"
#include "common/math.cuh"
#include "common/rope.cuh"
#include "common/utils.cuh"
#include "sm90a/barrier.cuh"
#include "sm90a/quantize_8bit.cuh"
#include "sm90a/tma.cuh"
#include "sm90a/wgmma.cuh"

namespace ac4k {
namespace sm90a {
namespace {  // internal to each kernel file that includes this

constexpr int kBlockM = 64;   // query rows per CTA: one warpgroup
constexpr int kStages = 2;    // K / V^T blocks in flight: three CTAs per SM must fit in shared memory
constexpr int kBlockN = 128;  // keys per step
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLog2P = 8.807354922057604f;  // log2(448): P in [0, 448] uses the E4M3 range

__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// K-major 8-bit tile of D bytes per row as TMA writes it: 128-byte swizzle for D = 128, 64-byte
// swizzle for D = 64 (a row must fit the swizzle span); 8-row groups are 8 * D bytes apart.
template <int D>
__device__ __forceinline__ uint64_t qk_desc(const void* tile) {
  return make_smem_desc(tile, 16, 8 * D, D == 128 ? 1 : 2);
}

// Scores of the QK^T operand format: INT8 -> s32, FP8 E4M3 -> f32.
template <typename Fmt>
using QkAcc = std::conditional_t<std::is_same_v<Fmt, Fp8Format>, float, int32_t>;

// S = Q K^T for one 128-key block: D/32 k-steps, the first one overwriting acc. The caller fences
// (wgmma_fence_operand(acc) before, wgmma_fence() once per issue batch) and commits.
template <int D, typename Acc>
__device__ __forceinline__ void issue_qk(Acc (&acc)[kBlockN / 2], uint64_t dq, const uint8_t* k_tile) {
  const uint64_t dk = qk_desc<D>(k_tile);
#pragma unroll
  for (int k = 0; k < D / 32; ++k) {
    if constexpr (std::is_same_v<Acc, float>) {
      wgmma_e4m3_ss(acc, smem_desc_advance(dq, 32 * k), smem_desc_advance(dk, 32 * k), k > 0);
    } else {
      wgmma_s8_ss(acc, smem_desc_advance(dq, 32 * k), smem_desc_advance(dk, 32 * k), k > 0);
    }
  }
}

// Online softmax of one 128-key block, in the log2 domain. acc[i] holds the raw score of row
// r = (i/2)%2 (row0 + 8r) and key key0 + 8(i/4) + i%2 (key0 = block start + 2*quad); c[i/32] is
// q_scale * k_scale * sm_scale * log2(e) for its 64-key half. The row max is taken on the raw
// scores (exact), so each score costs (I2F +) one FFMA (dequantize, subtract the max) + ex2; the row sums
// come from the PV wgmma (add_block).
// P is offset by log2(448) to use the E4M3 range and packed as the PV A fragments: the thread's
// scores at columns 2q, 2q+1, 8+2q, 9+2q (+16) are the permuted V^T slots 4q..4q+3 (+16).
// Masking of one block in 32-bit offsets: the thread's key offset 8(i/4) + i%2 is masked when it is
// >= key_end (past Sk) or, for row r, > diag + 8r (causal; diag = row0 + Sk - Sq - key0, clamped).
template <bool kMask, typename Acc>
__device__ __forceinline__ void softmax_step(Acc (&acc)[kBlockN / 2], uint32_t (&pa)[kBlockN / 32][4],
                                             const float (&c)[2], float (&m)[2], float (&alpha)[2],
                                             int key_end, int diag) {
  // INT8: |real scores| <= 127 * 127 * D < 2^22; FP8: finite (saturated operands).
  constexpr Acc kMasked = std::is_same_v<Acc, float> ? Acc(-INFINITY) : Acc(INT32_MIN);
  if (kMask) {
#pragma unroll
    for (int i = 0; i < kBlockN / 2; ++i) {
      const int key = 8 * (i / 4) + (i % 2);
      if (key >= key_end || key > diag + 8 * ((i / 2) % 2)) acc[i] = kMasked;
    }
  }
  Acc im[2][2] = {{kMasked, kMasked}, {kMasked, kMasked}};  // [row][half]
#pragma unroll
  for (int i = 0; i < kBlockN / 2; ++i) im[(i / 2) % 2][i / 32] = max(im[(i / 2) % 2][i / 32], acc[i]);
  float mo[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float mx = m[r];
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      if (!kMask || im[r][hf] != kMasked) mx = fmaxf(mx, float(im[r][hf]) * c[hf]);
    }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    const float m_use = mx == -INFINITY ? 0.f : mx;  // fully masked so far: p = 0
    alpha[r] = ex2(m[r] - m_use);
    mo[r] = m_use - kLog2P;
    m[r] = mx;
  }
  float pf[kBlockN / 2];
#pragma unroll
  for (int i = 0; i < kBlockN / 2; ++i) {
    const int r = (i / 2) % 2;
    float x = ex2(fmaf(float(acc[i]), c[i / 32], -mo[r]));
    if (kMask && acc[i] == kMasked) x = 0.f;
    pf[i] = x;
  }
#pragma unroll
  for (int k = 0; k < kBlockN / 32; ++k) {
    const int i = 16 * k;
    pa[k][0] = e4m3x2(pf[i + 0], pf[i + 1]) | (e4m3x2(pf[i + 4], pf[i + 5]) << 16);
    pa[k][1] = e4m3x2(pf[i + 2], pf[i + 3]) | (e4m3x2(pf[i + 6], pf[i + 7]) << 16);
    pa[k][2] = e4m3x2(pf[i + 8], pf[i + 9]) | (e4m3x2(pf[i + 12], pf[i + 13]) << 16);
    pa[k][3] = e4m3x2(pf[i + 10], pf[i + 11]) | (e4m3x2(pf[i + 14], pf[i + 15]) << 16);
  }
}

template <int D>
struct Smem {
  static constexpr int kQ = kBlockM * D;
  static constexpr int kK = kBlockN * D;
  static constexpr int kVData = D * kBlockN;
  static constexpr int kV = (D + 8) * kBlockN;
  // No alignment slack: three CTAs must fit in the SM's 228 KB (the base is checked below).
  static constexpr int kBytes = kQ + kStages * (kK + kV) + 64 /* barriers */;
};

// Byte offset of (row, 8-byte chunk ch) in a K-major 8-bit tile of D bytes per row, swizzled as TMA
// writes K (128-byte swizzle: 16-byte unit ^= row % 8; 64-byte: unit ^= (row / 2) % 4).
template <int D>
__device__ __forceinline__ int swizzled_offset(int row, int ch) {
  const int unit = D == 128 ? (ch >> 1) ^ (row & 7) : (ch >> 1) ^ ((row >> 1) & 3);
  return row * D + unit * 16 + (ch & 1) * 8;
}

// Q of one warp (16 rows x D, 16-byte chunks): loaded first thing in the kernel, quantized once
// the setup is done, so that the load latency overlaps the setup. Rows past Sq read as zeros.
template <int D>
struct QRows {
  static constexpr int kChunks = D / 8;           // 16-byte chunks per row
  static constexpr int kPer = 16 * kChunks / 32;  // chunks per lane
  uint4 raw[kPer];

  template <typename T>
  __device__ __forceinline__ void load(const T* qb, int64_t stride_s, int64_t n_rows, int64_t row_first, int lane) {
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const int i = lane + 32 * j;
      const int64_t row = row_first + i / kChunks;
      raw[j] = row < n_rows ? ldg_stream(qb + row * stride_s + (i % kChunks) * 8) : make_uint4(0, 0, 0, 0);
    }
  }

  // rope3d's rotation of rows < n_rot (their bits as rope3d writes them).
  template <typename T>
  __device__ __forceinline__ void rotate(const RopeFreqs& f, int64_t n_rot, int64_t row_first, int lane, uint32_t gh,
                                         uint32_t gw) {
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const int i = lane + 32 * j;
      const int64_t row = row_first + i / kChunks;
      if (row < n_rot) raw[j] = rope8<T>(raw[j], f, uint32_t(row), (i % kChunks) * 4, gh, gw);
    }
  }

  // -> Fmt (INT8 / E4M3) rows tile_row0.. of the swizzled Q tile; returns the scale amax / Fmt::kMax
  // (bit-exact with quantize_int8 / quantize_fp8(q, "per_block", 16)).
  template <typename T, typename Fmt>
  __device__ __forceinline__ float quantize(uint8_t* sq, int tile_row0, int lane) const {
    float x[kPer][8];
    float amax = 0.f;
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      unpack8<T>(raw[j], x[j]);
#pragma unroll
      for (int k = 0; k < 8; ++k) amax = absmax_acc(amax, x[j][k]);
    }
    amax = group_max<32>(amax);
    const float inv = recip_scale(Fmt::kMax, amax);
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const int i = lane + 32 * j;
      *reinterpret_cast<uint2*>(sq + swizzled_offset<D>(tile_row0 + i / kChunks, i % kChunks)) =
          pack8_uniform<Fmt>(x[j], inv);
    }
    return __fdiv_rn(amax, Fmt::kMax);
  }
};

// How Q arrives: bf16 / fp16 quantized here (kPlain), rotated by rope3d first (kRope, p.rope), or
// already quantized by quantize_attention_q (kQuantized, p.q_scale): one TMA load of the tile.
enum class QIn { kPlain, kRope, kQuantized };

// QkFmt: Int8Format (mha_int8_x_fp8_fwd) or Fp8Format (mha_fp8_fwd), Q's and K's format.
// T: q's dtype (kPlain, kRope) and the output's.
template <typename T, int D, typename QkFmt, QIn kQIn>
__global__ void __launch_bounds__(128, D == 64 ? 4 : 3)
mha_8bit_kernel(const __grid_constant__ CUtensorMap tm_k, const __grid_constant__ CUtensorMap tm_v,
                const __grid_constant__ CUtensorMap tm_q, const __grid_constant__ Mha8bitParams p) {
  extern __shared__ __align__(1024) uint8_t smem[];
  // Swizzled TMA tiles and wgmma descriptors need 1024-byte alignment; the dynamic shared memory
  // window starts there on sm90 (no static shared memory in this kernel).
  if ((static_cast<uint32_t>(__cvta_generic_to_shared(smem)) & 1023u) != 0) __trap();
  uint8_t* sq = smem;
  uint8_t* sk = sq + Smem<D>::kQ;
  uint8_t* sv = sk + kStages * Smem<D>::kK;
  uint64_t* full = reinterpret_cast<uint64_t*>(sv + kStages * Smem<D>::kV);

  const TokenView& qv = p.q_view;
  const TokenView& kv = p.k_view;
  const int m_blk = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int hkv = int(h / (qv.H / kv.H));
  const int n_blocks_all = int(ceil_div(kv.S, kBlockN));
  // Causal (bottom-right aligned): query row i sees keys j <= i + Sk - Sq.
  int n_blocks = n_blocks_all;
  if (p.causal) {
    const int64_t last_key = int64_t(m_blk + 1) * kBlockM - 1 + kv.S - qv.S;
    n_blocks = last_key < 0 ? 0 : int(min(int64_t(n_blocks_all), last_key / kBlockN + 1));
  }

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, quad = lane % 4;
  QRows<D> qrows;
  if constexpr (kQIn != QIn::kQuantized)
    qrows.load(static_cast<const T*>(p.q) + int64_t(b) * qv.stride_b + int64_t(h) * qv.stride_h, qv.stride_s, qv.S,
               int64_t(m_blk) * kBlockM + warp * 16, lane);
  if constexpr (kQIn == QIn::kRope) {
    // A bad GPU grid traps (no message: an assert's call would serialize the wgmmas, see rope.cuh);
    // attention() meets it first in the K / V pass, which says what is wrong.
    int64_t gf = 0, gh = 0, gw = 0;
    if (rope_grid_read(p.rope_freqs, b, qv.S, gf, gh, gw) != 0) __trap();
    qrows.template rotate<T>(p.rope_freqs, gf * gh * gw, int64_t(m_blk) * kBlockM + warp * 16, lane, uint32_t(gh),
                             uint32_t(gw));
  }

  // The ones rows of every V^T stage (E4M3 1.0 = 0x38; the swizzle moves bytes only within a row).
  for (int i = threadIdx.x; i < kStages * 8 * kBlockN / 16; i += blockDim.x) {
    const int stage = i / (8 * kBlockN / 16), off = i % (8 * kBlockN / 16);
    reinterpret_cast<uint4*>(sv + stage * Smem<D>::kV + Smem<D>::kVData)[off] =
        make_uint4(0x38383838u, 0x38383838u, 0x38383838u, 0x38383838u);
  }
  auto load_kv = [&](int n, int stage) {
    mbar_arrive_expect_tx(full + stage, Smem<D>::kK + Smem<D>::kVData);
    tma_load_4d(sk + stage * Smem<D>::kK, &tm_k, full + stage, 0, n * kBlockN, hkv, b);
    tma_load_3d(sv + stage * Smem<D>::kV, &tm_v, full + stage, n * kBlockN, 0, b * int(kv.H) + hkv);
  };
  uint64_t* q_full = full + kStages;  // kQuantized: the Q tile's TMA load
  if (tid == 0) {
    for (int s = 0; s < kStages; ++s) mbar_init(full + s, 1);
    if constexpr (kQIn == QIn::kQuantized) mbar_init(q_full, 1);
    fence_barrier_init();
    if constexpr (kQIn == QIn::kQuantized) {  // rows past Sq read as zeros
      mbar_arrive_expect_tx(q_full, Smem<D>::kQ);
      tma_load_4d(sq, &tm_q, q_full, 0, m_blk * kBlockM, h, b);
    }
    for (int n = 0; n < kStages && n < n_blocks; ++n) load_kv(n, n);
  }
  // Q scale per 16 rows (one per warp), K scales per 64 keys (two per block): see types.h.
  float q_scale;
  if constexpr (kQIn == QIn::kQuantized) {
    const int64_t n_qblk = ceil_div(qv.S, 16), blk = int64_t(m_blk) * (kBlockM / 16) + warp;
    q_scale = blk < n_qblk ? p.q_scale[(int64_t(b) * qv.H + h) * n_qblk + blk] : 0.f;
  } else {
    q_scale = qrows.template quantize<T, QkFmt>(sq, warp * 16, lane);
  }
  fence_proxy_async_shared();  // generic-proxy writes (Q, ones rows) before the wgmma reads them
  __syncthreads();
  if constexpr (kQIn == QIn::kQuantized) mbar_wait(q_full, 0);

  const int64_t row0 = int64_t(m_blk) * kBlockM + warp * 16 + lane / 4;  // and row0 + 8
  const int n_kblk = int(ceil_div(kv.S, 64));
  const float c_q = q_scale * p.sm_scale * kLog2e;
  const float* k_scale = p.k_scale + (int64_t(b) * kv.H + hkv) * n_kblk;
  const int64_t causal_shift = kv.S - qv.S;
  const int64_t row_first = int64_t(m_blk) * kBlockM;

  float o[D / 2];
#pragma unroll
  for (int i = 0; i < D / 2; ++i) o[i] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};

  if (n_blocks > 0) {
    const uint64_t dq = qk_desc<D>(sq);
    QkAcc<QkFmt> acc[kBlockN / 2];
    float ob[D / 2 + 4];
    float c[2];
    auto block_c = [&](int n) {
      c[0] = c_q * k_scale[2 * n];
      c[1] = 2 * n + 1 < n_kblk ? c_q * k_scale[2 * n + 1] : 0.f;
    };
    auto qk = [&](int stage) {
      wgmma_fence_operand(acc);
      wgmma_fence();
      issue_qk<D>(acc, dq, sk + stage * Smem<D>::kK);
      wgmma_commit();
    };
    int stage = 0;
    uint32_t phase = 0;
    mbar_wait(full, 0);
    qk(0);
    block_c(0);
    wgmma_wait<0>();
    wgmma_fence_operand(acc);
    auto step = [&](int n, auto more) {
      constexpr bool kMore = decltype(more)::value;
      float alpha[2];
      uint32_t pa[kBlockN / 32][4];
      const bool need_mask = int64_t(n + 1) * kBlockN > kv.S ||
                             (p.causal && int64_t(n + 1) * kBlockN - 1 > row_first + causal_shift);
      if (need_mask) {
        const int64_t key0 = int64_t(n) * kBlockN + 2 * quad;
        const int key_end = int(min(kv.S - key0, int64_t(kBlockN)));
        const int diag = p.causal ? int(max(min(row0 + causal_shift - key0, int64_t(kBlockN)), int64_t(-kBlockN))) : kBlockN;
        softmax_step<true>(acc, pa, c, m, alpha, key_end, diag);
      } else {
        softmax_step<false>(acc, pa, c, m, alpha, 0, 0);
      }
      const uint64_t dv = make_smem_desc_kmajor_sw128(sv + stage * Smem<D>::kV);
      wgmma_fence_operand(ob);
      wgmma_fence();
#pragma unroll
      for (int k = 0; k < kBlockN / 32; ++k) wgmma_e4m3_rs(ob, pa[k], smem_desc_advance(dv, 32 * k), k > 0);
      wgmma_commit();
      wgmma_wait<0>();
      wgmma_fence_operand(ob);
      if (tid == 0 && n + kStages < n_blocks) load_kv(n + kStages, stage);  // the stage is free
#pragma unroll
      for (int i = 0; i < D / 2; ++i) o[i] = fmaf(o[i], alpha[(i / 2) % 2], ob[i]);
      l[0] = fmaf(l[0], alpha[0], ob[D / 2]);
      l[1] = fmaf(l[1], alpha[1], ob[D / 2 + 2]);
      if (++stage == kStages) {
        stage = 0;
        phase ^= 1u;
      }
      if (kMore) {
        mbar_wait(full + stage, phase);
        qk(stage);
        block_c(n + 1);
        wgmma_wait<0>();
        wgmma_fence_operand(acc);
      }
    };
    for (int n = 0; n + 1 < n_blocks; ++n) step(n, std::true_type{});
    step(n_blocks - 1, std::false_type{});
  }

  // Epilogue: O * v_scale / l, stores in the caller's layout.
  // The thread's channels 8j + 2q, +1: one 8-byte load each, shared by its two rows.
  const float2* v_scale = reinterpret_cast<const float2*>(p.v_scale + (int64_t(b) * kv.H + hkv) * D) + quad;
  float2 vs[D / 8];
#pragma unroll
  for (int j = 0; j < D / 8; ++j) vs[j] = v_scale[4 * j];
  const TokenView& ov = p.o_view;
  // O is staged in shared memory (the K stages, free now: every wgmma and TMA load has completed),
  // then stored as 16-byte row chunks (the 4-byte fragment stores were ~10% of the 512-key
  // cross-attention). Rows padded by 16 bytes: the 8 rows a fragment store writes fall in
  // distinct banks. Each warp reads back only its own 16 rows.
  constexpr int kPitch = D * 2 + 16;  // bytes
  static_assert(kBlockM * kPitch <= kStages * Smem<D>::kK, "O tile fits the K stages");
  uint8_t* so = sk;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const float inv_l = l[r] > 0.f ? 1.f / l[r] : 0.f;
    uint8_t* srow = so + (warp * 16 + lane / 4 + 8 * r) * kPitch;
#pragma unroll
    for (int j = 0; j < D / 8; ++j) {
      const int d = 8 * j + 2 * quad;
      const float x0 = o[4 * j + 2 * r] * inv_l * vs[j].x;
      const float x1 = o[4 * j + 2 * r + 1] * inv_l * vs[j].y;
      *reinterpret_cast<uint32_t*>(srow + 2 * d) = pack2<T>(x0, x1);
    }
  }
  __syncwarp();
  constexpr int kChunks = D / 8;  // 16-byte chunks a row
  // Opaque copies: else the row addresses below are computed before the main loop and spilled.
  int mb = m_blk, hh = h, bb = b, ln = lane, wp = warp;
  asm volatile("" : "+r"(mb), "+r"(hh), "+r"(bb), "+r"(ln), "+r"(wp));
  T* obase = static_cast<T*>(p.o) + bb * ov.stride_b + hh * ov.stride_h;
#pragma unroll
  for (int k = 0; k < 16 * kChunks / 32; ++k) {
    const int i = ln + 32 * k, rr = wp * 16 + i / kChunks, c = i % kChunks;
    const int64_t row = int64_t(mb) * kBlockM + rr;
    if (row < qv.S)
      *reinterpret_cast<uint4*>(obase + row * ov.stride_s + 8 * c) = *reinterpret_cast<const uint4*>(so + rr * kPitch + 16 * c);
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t row = row0 + 8 * r;
    if (p.lse != nullptr && quad == 0 && row < qv.S) {
      // Natural-log LSE of the (smoothed-K) scores: p carries a factor 448 = 2^kLog2P.
      p.lse[(int64_t(b) * qv.H + h) * qv.S + row] =
          l[r] > 0.f ? (m[r] + __log2f(l[r]) - kLog2P) / kLog2e : -INFINITY;
    }
  }
}

template <typename T, int D, typename QkFmt>
cudaError_t launch(const Mha8bitParams& p, cudaStream_t stream) {
  // K as [B, S, H, D] 8-bit (any strides; D contiguous): box of 128 keys x D of one head.
  CUtensorMap tk, tv;
  const TokenView& kv = p.k_view;
  const int64_t k_dims[4] = {kv.D, kv.S, kv.H, kv.B};
  const int64_t k_strides[4] = {1, kv.stride_s, kv.stride_h, kv.stride_b};
  const uint32_t k_box[4] = {uint32_t(D), kBlockN, 1, 1};
  cudaError_t err = encode_tensor_map(&tk, p.k, ScalarType::UInt8, 4, k_dims, k_strides, k_box,
                                      D == 128 ? TmaSwizzle::B128 : TmaSwizzle::B64);
  if (err == cudaSuccess) {
    const int64_t dims[3] = {p.sk_pad, D, p.k_view.B * p.k_view.H};
    const int64_t strides[3] = {1, p.sk_pad, D * p.sk_pad};
    const uint32_t box[3] = {kBlockN, D, 1};
    err = encode_tensor_map(&tv, p.vt, ScalarType::UInt8, 3, dims, strides, box, TmaSwizzle::B128);
  }
  // Quantized Q as [B, S, H, D] 8-bit, a box of 64 rows x D of one head, swizzled as K is (qk_desc).
  CUtensorMap tq = tk;  // unused unless p.q_scale
  if (err == cudaSuccess && p.q_scale != nullptr) {
    const TokenView& qv = p.q_view;
    const int64_t dims[4] = {qv.D, qv.S, qv.H, qv.B};
    const int64_t strides[4] = {1, qv.stride_s, qv.stride_h, qv.stride_b};
    const uint32_t box[4] = {uint32_t(D), kBlockM, 1, 1};
    err = encode_tensor_map(&tq, p.q, ScalarType::UInt8, 4, dims, strides, box,
                            D == 128 ? TmaSwizzle::B128 : TmaSwizzle::B64);
  }
  if (err != cudaSuccess) return err;
  auto kernel = p.q_scale != nullptr ? mha_8bit_kernel<T, D, QkFmt, QIn::kQuantized>
                : p.rope             ? mha_8bit_kernel<T, D, QkFmt, QIn::kRope>
                                     : mha_8bit_kernel<T, D, QkFmt, QIn::kPlain>;
  const int smem = Smem<D>::kBytes;
  err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (err != cudaSuccess) return err;
  const dim3 grid(unsigned(ceil_div(p.q_view.S, kBlockM)), unsigned(p.q_view.H), unsigned(p.q_view.B));
  kernel<<<grid, 128, smem, stream>>>(tk, tv, tq, p);
  return last_launch_error();
}

template <typename QkFmt>
cudaError_t mha_8bit_fwd(const Mha8bitParams& p, cudaStream_t stream) {
  const TokenView &q = p.q_view, &k = p.k_view;
  const bool bf16 = p.q_dtype == ScalarType::BFloat16;
  if (q.D != k.D || (q.D != 64 && q.D != 128) || k.H == 0 || q.H % k.H != 0 || p.sk_pad % 128 != 0 ||
      p.sk_pad < k.S || (!bf16 && p.q_dtype != ScalarType::Float16) || !rows_aligned_16b(p.o, p.o_view))
    return cudaErrorNotSupported;
  // 16-byte loads of q's rows, or (quantized) TMA: 16-byte aligned base and strides.
  if (p.q_scale != nullptr ? (p.rope || !is_aligned(p.q, 16) || q.stride_b % 16 || q.stride_s % 16 || q.stride_h % 16)
                           : !rows_aligned_16b(p.q, q))
    return cudaErrorNotSupported;
  if (q.B * q.H * q.S == 0) return cudaSuccess;
  if (q.B > 65535 || q.H > 65535) return cudaErrorNotSupported;
  if (p.rope && p.rope_freqs.grid_sizes == nullptr && q.B > RopeFreqs::kMaxHostGrid) return cudaErrorNotSupported;
  if (q.D == 128) return bf16 ? launch<__nv_bfloat16, 128, QkFmt>(p, stream) : launch<__half, 128, QkFmt>(p, stream);
  return bf16 ? launch<__nv_bfloat16, 64, QkFmt>(p, stream) : launch<__half, 64, QkFmt>(p, stream);
}

}  // namespace
}  // namespace sm90a
}  // namespace ac4k

