// The 16-bit attention kernel of sm90a, shared by mha_bf16_fwd.cu (bf16 / fp16 operands as given)
// and mha_nvfp4_fwd.cu (NVFP4 operands decoded to fp16, P quantized): FlashAttention-3's schedule
// (written from its description, no code taken). One CTA an SM takes tiles of 128 query rows of
// one (batch, head) in turn (mha16_grid), with three warpgroups:
//   warpgroup 0  producer: one thread issues the TMA loads (Q once, then K_n and V_n, BN =
//                Policy::kBlockN keys each (128 or 176), into kStages stages on full barriers; a
//                stage is refilled once both consumers released it on its empty barrier).
//                setmaxnreg.dec to 24 registers.
//   warpgroups 1, 2  consumers, 64 query rows each (setmaxnreg.inc to 240):
//     S = Q K^T     wgmma m64nBNk16, Q and K from shared memory (K-major, 128-byte swizzle; a
//                   D = 128 tile is two 64-column panels, a SW128 TMA box is at most 128 B wide)
//     softmax       Policy::softmax: FP32 online softmax in the log2 domain
//     P             Policy::convert: the f32 accumulator layout of 16 columns is the k16 A
//                   fragment of the next wgmma
//     O += P V      wgmma m64nDk16, A = P from registers, B from shared memory: V [keys, D] read
//                   MN-major (transpose-b; LBO = the 64-column panel stride, SBO = 1024 B between
//                   8-key groups), or V^T [D, keys] K-major (Policy::kVt); O accumulates in the
//                   wgmma's f32 accumulator (no promotion)
// Schedules (a template parameter): kOverlap, intra-warpgroup pipelining (S_{n+1} = Q K_{n+1} and
// O += P_n V_n issued together, the softmax of S_{n+1} while P_n V_n is in flight); kPingPong, the
// two consumers take turns issuing their GEMMs (named barriers 1 and 2), so one warpgroup's softmax
// overlaps the other's tensor-core work.
// Masking only on the blocks that need it (the partial last key block, the causal diagonal);
// keys past Sk are zero-filled by TMA and masked to -inf; a row that sees no key outputs 0 and
// lse -inf. Epilogue: O * Policy::out_scale / l staged in shared memory (its own tile, or Q's at
// 176-key stages), stored as 16-byte row chunks in the caller's layout with row guards; the next
// tile's Q and K / V load meanwhile. Offsets into q / o / lse are 64-bit.
//
// A Policy has: Params (q_view, k_view, o_view, o, lse, sm_scale, causal), In (the wgmma operand
// type), Out (o's type), kVt, kQuadInKey0 (the masks' key offsets include 2 * quad), PState,
// score_scale(p) (sm_scale * log2 e and any operand scales), out_scale(p), softmax<kMask>(s, ps,
// m, l, alpha, c, quad, key_end, diag) and convert(s, ps, pa).
#pragma once

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cuda/ptx>
#include <type_traits>

#include "ac4k_kernel/types.h"
#include "common/math.cuh"
#include "common/utils.cuh"
#include "sm90a/barrier.cuh"
#include "sm90a/tma.cuh"
#include "sm90a/wgmma.cuh"

namespace ac4k {
namespace sm90a {
namespace mha16 {

constexpr int kBlockM = 128;  // query rows per CTA: two consumer warpgroups of 64
constexpr int kBlockN = 128;  // keys per step unless a Policy says otherwise (Policy::kBlockN)
constexpr int kThreads = 384;
constexpr float kLog2e = 1.4426950408889634f;

// Bit 0: intra-warpgroup overlap, bit 1: ping-pong between the consumers.
enum Schedule : int { kSerial = 0, kOverlap = 1, kPingPong = 2, kOverlapPingPong = 3 };

// BN keys a step. O is staged in its own tile when that fits (so the next tile's Q can load during
// the epilogue), else in Q's tile (each consumer in its own 64 rows, once its last QK is done), so
// that 176-key stages fit at D = 128.
template <int D, int BN>
struct Layout {
  static constexpr int kStages = D == 128 ? 2 : 4;
  static constexpr int kPanelQ = kBlockM * 128;     // 128 rows of 64 elements (128 B): 16 KB
  static constexpr int kPanel = BN * 128;           // BN rows of K or V
  static constexpr int kPanelV = D * 128;           // V^T: D rows of 64 keys (BN = 128)
  static constexpr int kTileQ = D / 64 * kPanelQ;
  static constexpr int kTile = D / 64 * kPanel;     // BN rows of K or V (D rows of V^T)
  static constexpr int kBarBytes = 8 * (2 + 4 * kStages);
  static constexpr int kQ = 0;
  static constexpr int kK = kQ + kTileQ;
  static constexpr int kV = kK + kStages * kTile;
  static constexpr bool kOwnO = kV + kStages * kTile + kTileQ + kBarBytes <= 227 * 1024;
  static constexpr int kO = kOwnO ? kV + kStages * kTile : kQ;
  static constexpr int kBar = kV + kStages * kTile + (kOwnO ? kTileQ : 0);
  static constexpr int kBytes = kBar + kBarBytes;
  static_assert(kTile % 1024 == 0 && kBar % 8 == 0, "1024-byte aligned tiles");
  static_assert(kBytes <= 227 * 1024, "shared memory");
};

// Tiles (one 128-row query block of one (batch, head)) and the CTAs that take them in turn: one an
// SM without a causal mask (a CTA's next Q and K / V load during its epilogue; the tiles of a head
// are consecutive, so the CTAs running at once share its K / V in L2), else one a tile, the longest
// rows first (the last CTAs to start are the short ones). 0: too many tiles for that (a causal CTA
// must not take a second tile: one that sees no key would stage its zeros in Q's tile while the
// next Q lands there).
inline unsigned mha16_grid(const TokenView& q, bool causal) {
  const int64_t tiles = ceil_div(q.S, int64_t(kBlockM)) * q.H * q.B;
  if (causal) return tiles > 0x7fffffff ? 0u : unsigned(tiles);
  return unsigned(std::min<int64_t>(tiles, sm_count()));
}

__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// The online softmax's step for one row r after its block maximum x (the raw scores' max over the
// quad; -inf when nothing is visible in this block): the running max m (log2 domain, times c >= 0),
// alpha (the factor for the previous O and l) and -m for the exponent (0 while nothing is visible
// so far, so that p = 0).
__device__ __forceinline__ void update_row_max(float x, float c, float& m, float& alpha, float& neg_m) {
  // x = -inf: nothing visible in this block (the product with c = 0 would be NaN).
  const float m_new = x == -INFINITY ? m : fmaxf(m, x * c);
  const float m_use = m_new == -INFINITY ? 0.f : m_new;  // nothing visible so far: p = 0
  alpha = ex2(m - m_use);
  m = m_new;
  neg_m = -m_use;
}

// s[i] (row r = (i/2)%2) -> p = 2^(s c - m) in place, l = l alpha + this thread's row sums (in four
// independent chains a row; reduced over the quad at the end).
template <bool kMask, int NS>
__device__ __forceinline__ void exp_and_sum(float (&s)[NS], float c, const float (&neg_m)[2],
                                            const float (&alpha)[2], float (&l)[2]) {
  float sum[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
#pragma unroll
  for (int i = 0; i < NS; ++i) {
    const int r = (i / 2) % 2;
    float e = ex2(fmaf(s[i], c, neg_m[r]));
    if (kMask && s[i] == -INFINITY) e = 0.f;  // -inf * 0 (sm_scale = 0) is NaN
    s[i] = e;
    sum[r][(i / 4) % 4] += e;
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) l[r] = fmaf(l[r], alpha[r], (sum[r][0] + sum[r][1]) + (sum[r][2] + sum[r][3]));
}

// S (+)= Q K^T and O (+)= P V for bf16 or fp16 operands.
template <typename T, int NS>
__device__ __forceinline__ void mma_qk(float (&d)[NS], uint64_t a, uint64_t b, bool acc) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    wgmma_bf16_ss(d, a, b, acc);
  } else {
    wgmma_f16_ss(d, a, b, acc);
  }
}
template <typename T, int N>
__device__ __forceinline__ void mma_pv(float (&d)[N], const uint32_t (&a)[4], uint64_t b) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    wgmma_bf16_rs_tb(d, a, b, true);
  } else {
    wgmma_f16_rs_tb(d, a, b, true);
  }
}

// The kernel body; each op's __global__ wrapper calls it (kernel names stay per op for profilers).
template <class Policy, int D, int kSchedule>
__device__ __forceinline__ void mha_16bit_body(const CUtensorMap& tm_q, const CUtensorMap& tm_k, const CUtensorMap& tm_v,
                                               const typename Policy::Params& p) {
  using T = typename Policy::Out;
  using In = typename Policy::In;
  constexpr bool kOv = (kSchedule & kOverlap) != 0;
  constexpr bool kPP = (kSchedule & kPingPong) != 0;
  using L = Layout<D, Policy::kBlockN>;
  constexpr int kStages = L::kStages;
  constexpr int BN = Policy::kBlockN;
  static_assert(BN % 16 == 0 && BN <= 256 && (!Policy::kVt || BN == 128), "key block");
  extern __shared__ __align__(1024) uint8_t smem[];
  // Swizzled TMA tiles and wgmma descriptors need 1024-byte alignment; the dynamic shared memory
  // window starts there on sm90 (no static shared memory in this kernel).
  if ((static_cast<uint32_t>(__cvta_generic_to_shared(smem)) & 1023u) != 0) __trap();
  uint8_t* sq = smem + L::kQ;
  uint8_t* sk = smem + L::kK;
  uint8_t* sv = smem + L::kV;
  uint64_t* bar_q = reinterpret_cast<uint64_t*>(smem + L::kBar);
  uint64_t* empty_q = bar_q + 1;
  uint64_t* full_k = empty_q + 1;
  uint64_t* full_v = full_k + kStages;
  uint64_t* empty_k = full_v + kStages;
  uint64_t* empty_v = empty_k + kStages;

  const TokenView& qv = p.q_view;
  const TokenView& kv = p.k_view;
  const int64_t n_m = ceil_div(qv.S, int64_t(kBlockM));
  const int64_t n_tiles = n_m * qv.H * qv.B;
  const int64_t causal_shift = kv.S - qv.S;
  const int n_blocks_all = int(ceil_div(kv.S, int64_t(BN)));
  // Tile t: query block m_blk of head h of batch b (the blocks of a head consecutive; causal: the
  // longest rows first); n_blocks, its key blocks (both consumers step through all of them).
  struct Tile {
    int h, b, n_blocks;
    int64_t row_first;
  };
  auto tile_at = [&](int64_t t) {
    Tile x;
    const int64_t bh = t / n_m;
    const int64_t mb = t - bh * n_m;
    x.h = int(bh % qv.H);
    x.b = int(bh / qv.H);
    x.row_first = (p.causal ? n_m - 1 - mb : mb) * kBlockM;
    x.n_blocks = n_blocks_all;
    if (p.causal) {
      const int64_t last_key = min(x.row_first + kBlockM, qv.S) - 1 + causal_shift;
      x.n_blocks = last_key < 0 ? 0 : int(min(int64_t(n_blocks_all), last_key / BN + 1));
    }
    return x;
  };

  if (threadIdx.x == 0) {
    mbar_init(bar_q, 1);
    mbar_init(empty_q, 2);  // one arrival per consumer warpgroup
    for (int s = 0; s < kStages; ++s) {
      mbar_init(full_k + s, 1);
      mbar_init(full_v + s, 1);
      mbar_init(empty_k + s, 2);
      mbar_init(empty_v + s, 2);
    }
    fence_barrier_init();
  }
  __syncthreads();

  if (threadIdx.x < 128) {  // producer
    setmaxnreg_dec<24>();
    if (threadIdx.x == 0) {
      // Running counts over the CTA's tiles: Q loads (the parity of bar_q / empty_q) and key blocks
      // (stage and parity of the K / V ring).
      uint32_t q_loads = 0;
      int stage = 0;
      uint32_t phase = 0;
      int64_t kv_loads = 0;
      for (int64_t t = blockIdx.x; t < n_tiles; t += gridDim.x) {
        const Tile x = tile_at(t);
        if (x.n_blocks == 0) continue;
        const int hkv = int(x.h / (qv.H / kv.H));
        if (q_loads > 0) mbar_wait(empty_q, (q_loads - 1) & 1u);
        ++q_loads;
        mbar_arrive_expect_tx(bar_q, L::kTileQ);
#pragma unroll
        for (int pn = 0; pn < D / 64; ++pn)
          tma_load_4d(sq + pn * L::kPanelQ, &tm_q, bar_q, 64 * pn, int(x.row_first), x.h, x.b);
        for (int n = 0; n < x.n_blocks; ++n, ++kv_loads) {
          if (kv_loads >= kStages) mbar_wait(empty_k + stage, phase ^ 1u);
          mbar_arrive_expect_tx(full_k + stage, L::kTile);
#pragma unroll
          for (int pn = 0; pn < D / 64; ++pn)
            tma_load_4d(sk + stage * L::kTile + pn * L::kPanel, &tm_k, full_k + stage, 64 * pn, n * BN, hkv, x.b);
          if (kv_loads >= kStages) mbar_wait(empty_v + stage, phase ^ 1u);
          mbar_arrive_expect_tx(full_v + stage, L::kTile);
          if constexpr (Policy::kVt) {  // V^T [B, Hkv, D, s_pad]: two 64-key panels of D rows
#pragma unroll
            for (int pv = 0; pv < 2; ++pv)
              tma_load_4d(sv + stage * L::kTile + pv * L::kPanelV, &tm_v, full_v + stage, n * BN + 64 * pv, 0, hkv,
                          x.b);
          } else {  // V [keys, D]: D / 64 panels of BN keys
#pragma unroll
            for (int pn = 0; pn < D / 64; ++pn)
              tma_load_4d(sv + stage * L::kTile + pn * L::kPanel, &tm_v, full_v + stage, 64 * pn, n * BN, hkv, x.b);
          }
          if (++stage == kStages) {
            stage = 0;
            phase ^= 1u;
          }
        }
      }
    }
    return;
  }

  // ---- consumers ----
  setmaxnreg_inc<240>();
  const int cw = int(threadIdx.x / 128) - 1;  // 0 or 1: rows 64 cw .. of the CTA's 128
  const int tid = threadIdx.x % 128, warp = tid / 32, lane = tid % 32, quad = lane % 4;
  const float c = Policy::score_scale(p);

  // Ping-pong: consumer w issues its GEMMs between named_bar_sync(1 + w) and an arrive on the
  // other's barrier. Consumer 1 makes consumer 0's first arrival up front, consumer 0 takes one
  // extra turn at the end, so every barrier phase completes (both take the same number of turns
  // in every tile).
  if (kPP && cw == 1) named_bar_arrive(1, 256);
  auto turn_begin = [&] {
    if (kPP) named_bar_sync(1 + cw, 256);
  };
  auto turn_end = [&] {
    if (kPP) named_bar_arrive(2 - cw, 256);
  };
  auto release = [&](uint64_t* bar) {
    if (tid == 0) (void)cuda::ptx::mbarrier_arrive(bar);
  };
  // Q's tile is free once this consumer's last QK is complete (if O is staged there: once the
  // epilogue has read it back).
  auto release_q = [&] {
    if constexpr (L::kOwnO) release(empty_q);
  };

  // Descriptors: Q rows 64 cw.. of each panel (8 KB in), K / V stage bases; a k16 step of QK is 32 B
  // along the 128-byte row, the next panel after four; a k16 step of PV is 16 keys = 2 KB.
  const uint64_t dq = make_smem_desc(sq + cw * 64 * 128, 16, 1024, 1);
  const uint64_t dk0 = make_smem_desc(sk, 16, 1024, 1);
  // V: MN-major (LBO = the panel stride); V^T: K-major like K.
  const uint64_t dv0 = make_smem_desc(sv, Policy::kVt ? 16 : L::kPanel, 1024, 1);
  uint32_t q_loads = 0;
  int stage = 0;  // of the CTA's next key block
  uint32_t phase = 0;

  for (int64_t t = blockIdx.x; t < n_tiles; t += gridDim.x) {
    const Tile x = tile_at(t);
    const int n_blocks = x.n_blocks;
    const int64_t row_wg = x.row_first + 64 * cw;
    const int64_t row0 = row_wg + warp * 16 + lane / 4;  // and row0 + 8

    float o[D / 2];
#pragma unroll
    for (int i = 0; i < D / 2; ++i) o[i] = 0.f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};

    if (n_blocks > 0) {
      float s[BN / 2];
      typename Policy::PState ps;  // what the softmax leaves for the conversion of P
      uint32_t pa[BN / 16][4];
      auto issue_qk = [&](int st) {
        wgmma_fence_operand(s);
        wgmma_fence();
        const uint64_t dk = smem_desc_advance(dk0, st * L::kTile);
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
          const uint32_t off = (kk % 4) * 32;  // along the 128-byte row, then the next 64-column panel
          mma_qk<In>(s, smem_desc_advance(dq, (kk / 4) * L::kPanelQ + off),
                     smem_desc_advance(dk, (kk / 4) * L::kPanel + off), kk > 0);
        }
        wgmma_commit();
      };
      auto issue_pv = [&](int st) {
        wgmma_fence_operand(o);
        wgmma_fence();
        const uint64_t dv = smem_desc_advance(dv0, st * L::kTile);
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk) {
          if constexpr (Policy::kVt)
            wgmma_f16_rs(o, pa[kk], smem_desc_advance(dv, (kk / 4) * L::kPanelV + (kk % 4) * 32), true);
          else
            mma_pv<In>(o, pa[kk], smem_desc_advance(dv, kk * 16 * 128));
        }
        wgmma_commit();
      };
      float alpha[2];
      mbar_wait(bar_q, q_loads & 1u);
      ++q_loads;
      auto softmax = [&](int n) {
        const bool need_mask = int64_t(n + 1) * BN > kv.S ||
                               (p.causal && int64_t(n + 1) * BN - 1 > row_wg + causal_shift);
        if (need_mask) {
          const int64_t key0 = int64_t(n) * BN + (Policy::kQuadInKey0 ? 2 * quad : 0);
          const int key_end = int(min(kv.S - key0, int64_t(BN)));
          const int diag = p.causal ? int(max(min(row0 + causal_shift - key0, int64_t(BN)), int64_t(-BN))) : BN;
          Policy::template softmax<true>(s, ps, m, l, alpha, c, quad, key_end, diag);
        } else {
          Policy::template softmax<false>(s, ps, m, l, alpha, c, quad, 0, 0);
        }
      };
      auto rescale_o = [&] {
#pragma unroll
        for (int i = 0; i < D / 2; ++i) o[i] *= alpha[(i / 2) % 2];
      };
      auto advance = [&](int& st, uint32_t& ph) {
        if (++st == kStages) {
          st = 0;
          ph ^= 1u;
        }
      };
      // S = Q K^T for the block in `stage`, on its own (both schedules' first step, the serial one's
      // every step), then its K stage released (and Q's tile after the tile's last block).
      auto qk_step = [&](bool last) {
        mbar_wait(full_k + stage, phase);
        turn_begin();
        issue_qk(stage);
        turn_end();
        wgmma_wait<0>();
        wgmma_fence_operand(s);
        release(empty_k + stage);
        if (last) release_q();
      };
      // O += P V for the block in `stage`, on its own (both schedules' last step, the serial one's
      // every step), then its V stage released and the ring advanced.
      auto pv_step = [&] {
        mbar_wait(full_v + stage, phase);
        turn_begin();
        issue_pv(stage);
        turn_end();
        wgmma_wait<0>();
        wgmma_fence_operand(o);
        release(empty_v + stage);
        advance(stage, phase);
      };

      if constexpr (kOv) {
        // S_0, then per n >= 1: issue S_n and O += P_{n-1} V_{n-1}; softmax(S_n) while PV runs;
        // then O *= alpha_n and P_n replaces P_{n-1} (its registers are free once PV is done).
        qk_step(n_blocks == 1);
        softmax(0);
        Policy::convert(s, ps, pa);
        for (int n = 1; n < n_blocks; ++n) {
          int next = stage;
          uint32_t next_phase = phase;
          advance(next, next_phase);
          mbar_wait(full_k + next, next_phase);
          mbar_wait(full_v + stage, phase);
          turn_begin();
          issue_qk(next);
          issue_pv(stage);
          turn_end();
          wgmma_wait<1>();
          wgmma_fence_operand(s);
          release(empty_k + next);
          if (n == n_blocks - 1) release_q();
          softmax(n);
          wgmma_wait<0>();
          wgmma_fence_operand(o);
          release(empty_v + stage);
          rescale_o();
          Policy::convert(s, ps, pa);
          stage = next;
          phase = next_phase;
        }
        pv_step();
      } else {
        for (int n = 0; n < n_blocks; ++n) {
          qk_step(n == n_blocks - 1);
          softmax(n);
          rescale_o();
          Policy::convert(s, ps, pa);
          pv_step();
        }
      }
    }

    // ---- epilogue: O / l, staged in this consumer's 64 rows of the O tile (each warp its own 16
    // rows; if that is Q's tile, all of this warpgroup's wgmmas, which read them, are complete),
    // 16-byte stores ----
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
      l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    }
    const float o_scale = Policy::out_scale(p);
    // Row rr (0..63) of this consumer, 16-byte chunk ch of the row: panel ch / 8, chunk ch % 8 XOR
    // rr % 8 within its 128 bytes (eight rows of a warp's store hit eight different chunks).
    uint8_t* so = smem + L::kO + cw * 64 * 128;
    auto o_chunk = [&](int rr, int ch) { return so + (ch / 8) * L::kPanelQ + rr * 128 + ((ch % 8) ^ (rr % 8)) * 16; };
    __syncwarp();  // the warp's reads of its rows for the previous tile are done
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float inv_l = l[r] > 0.f ? o_scale / l[r] : 0.f;
      const int rr = warp * 16 + lane / 4 + 8 * r;
#pragma unroll
      for (int j = 0; j < D / 8; ++j)
        *reinterpret_cast<uint32_t*>(o_chunk(rr, j) + 4 * quad) =
            pack2<T>(o[4 * j + 2 * r] * inv_l, o[4 * j + 2 * r + 1] * inv_l);
    }
    __syncwarp();
    constexpr int kChunks = D / 8;  // 16-byte chunks a row
    const TokenView& ov = p.o_view;
    // Opaque copies: else the row addresses below may be computed before the main loop and spilled.
    int hh = x.h, bb = x.b, ln = lane, wp = warp;
    asm volatile("" : "+r"(hh), "+r"(bb), "+r"(ln), "+r"(wp));
    T* obase = static_cast<T*>(p.o) + bb * ov.stride_b + hh * ov.stride_h;
    const int64_t row_w = row_wg + wp * 16;
#pragma unroll
    for (int k = 0; k < 16 * kChunks / 32; ++k) {
      const int i = ln + 32 * k, rr = i / kChunks, ch = i % kChunks;
      const int64_t row = row_w + rr;
      if (row < qv.S)
        *reinterpret_cast<uint4*>(obase + row * ov.stride_s + 8 * ch) =
            *reinterpret_cast<const uint4*>(o_chunk(wp * 16 + rr, ch));
    }
    if constexpr (!L::kOwnO) {
      // O was staged in Q's tile: free it once every warp of this consumer has read its rows back.
      if (n_blocks > 0) {
        // The generic proxy's accesses before the TMA (async proxy) overwrites the tile.
        cuda::ptx::fence_proxy_async(cuda::ptx::space_shared);
        named_bar_sync(3 + cw, 128);
        release(empty_q);
      }
    }
    if (p.lse != nullptr && quad == 0) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int64_t row = row0 + 8 * r;
        if (row < qv.S)
          p.lse[(int64_t(x.b) * qv.H + x.h) * qv.S + row] = l[r] > 0.f ? (m[r] + __log2f(l[r])) / kLog2e : -INFINITY;
      }
    }
  }
  if (kPP && cw == 0) named_bar_sync(1, 256);
}


}  // namespace mha16
}  // namespace sm90a
}  // namespace ac4k
