// mha_nvfp4_fwd for sm90a: attention with Q, K, P and V in NVFP4, the numerics of the Blackwell
// (SageAttention3-style) kernel; ac4k_kernel.reference.attention_nvfp4. Hopper has no FP4 tensor
// cores, so the operands are decoded exactly to FP16 (sm90a/nvfp4_decode.cuh) and fed to f16 wgmma
// with FP32 accumulation: the products and sums are the Blackwell kernel's up to summation order.
//
// Two kernels. decode_kernel turns Q, K and V^T into FP16 (e2m1 * block scale, exact; the global
// scales stay apart) in the op's scratch, once: decoding inside the attention kernel repeated it
// for every 128-row query block (Sq / 128 times); on the H100 at S = 32760 that version ran at 311
// TFLOPS, this one at 466 with the pass included (docs/perf-notes.md). The
// attention kernel is then mha_bf16_fwd's schedule on FP16 operands (TMA producer warpgroup, two
// consumer warpgroups with overlap + ping-pong at D = 128), with
//   S = Q K^T     wgmma m64n128k16 f16 from shared memory
//   softmax       FP32 online softmax in the log2 domain (sm_scale * q_gs * k_gs folded in); the
//                 row sums l take the unquantized p (the reference's)
//   P -> NVFP4    (quantize_p, after the previous P V has read the fragments) per row and 16 keys
//                 amax from the block's raw score max (the same FFMA + ex2 as its p), E4M3 scale
//                 sf = e4m3(amax * 448 / 6) (global scale 1/448), y = p / (sf / 448) rounded to
//                 E2M1 in f16x2 arithmetic: y * 2^-14 in FP16 puts E2M1's subnormal step (0.5 below
//                 1) on FP16's, so one integer round-half-even to 1 mantissa bit is E2M1's rounding;
//                 times sf * 2^9 that is the exact FP16 A fragment e2m1 * sf * 2^-5
//   O += P V      wgmma m64nDk16 f16, A = P from registers, B = V^T tile (D rows of 128 keys,
//                 K-major, two 64-key panels) from shared memory
// O is scaled by v_gs * 2^5 / 448 / l in the epilogue. Keys past Sk: K rows zero-filled by TMA and
// masked; V^T is zero-padded to s_pad (a multiple of 128) by the caller.
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <initializer_list>
#include <cuda/ptx>

#include "ac4k_kernel/ops.h"
#include "ac4k_kernel/types.h"
#include "common/math.cuh"
#include "common/utils.cuh"
#include "sm90a/barrier.cuh"
#include "sm90a/nvfp4_decode.cuh"
#include "sm90a/tma.cuh"
#include "sm90a/wgmma.cuh"

namespace ac4k {
namespace sm90a {
namespace {

constexpr int kBlockM = 128;  // query rows per CTA: two consumer warpgroups of 64
constexpr int kBlockN = 128;  // keys per step
constexpr int kThreads = 384;
constexpr float kLog2e = 1.4426950408889634f;
// P's quantization (reference: quantize_nvfp4(p, global_scale=1/448)).
constexpr float kPGs = 1.f / 448.f;
constexpr float kPInvGs = 1.f / kPGs;

enum Schedule : int { kSerial = 0, kOverlap = 1, kPingPong = 2, kOverlapPingPong = 3 };
#ifdef AC4K_NVFP4_SCHEDULE
template <int D>
constexpr int kDefaultSchedule = AC4K_NVFP4_SCHEDULE;
#else
template <int D>
constexpr int kDefaultSchedule = D == 128 ? kOverlapPingPong : kOverlap;  // mha_bf16_fwd's choice
#endif

template <int D>
struct Layout {
  static constexpr int kStages = D == 128 ? 2 : 4;
  static constexpr int kPanelQK = 128 * 128;       // 128 rows (queries / keys) of 64 fp16
  static constexpr int kPanelV = D * 128;          // D rows of 64 keys
  static constexpr int kTile = 128 * D * 2;        // Q, K or V^T tile
  static constexpr int kPitch = 2 * D + 16;        // O staging row, bytes (padded: no bank conflicts)
  static constexpr int kOWg = 64 * kPitch;
  static constexpr int kQ = 0;
  static constexpr int kK = kQ + kTile;
  static constexpr int kV = kK + kStages * kTile;
  static constexpr int kO = kV + kStages * kTile;
  static constexpr int kBar = kO + 2 * kOWg;
  static constexpr int kBytes = kBar + 8 * (1 + 4 * kStages);
  static_assert(kTile % 1024 == 0 && kBar % 8 == 0, "1024-byte aligned tiles");
  static_assert(kBytes <= 227 * 1024, "shared memory");
};

__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ float rcp_approx(float x) {
  float y;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ uint32_t hmin2(uint32_t a, uint32_t b) {
  uint32_t r;
  asm("min.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  return r;
}

// Key index (within the 128-key block) of accumulator column i of a thread with quad q: 8(i/4) +
// 2q + i%2 (kq = 2q).
__device__ __forceinline__ int key_of(int i, int kq) { return 8 * (i / 4) + (i % 2) + kq; }

// Two p values of one row and 16-key block -> their f16x2 A fragment e2m1(p * inv) * sf * 2^-5.
// inv = 2^-14 / (sf / 448) (0 for sf = 0), sf9 = (sf * 2^9, sf * 2^9) in f16x2. The FP16 step first
// rounds twice: a y within FP16's step (2^-10 below 1, 2^-11 relative above) above an E2M1 tie goes
// to the even side; 0.07% of a uniform sweep of [0, 8] differs from reference.e2m1_encode by one step.
__device__ __forceinline__ uint32_t quant_p2(float a, float b, float inv, uint32_t sf9) {
  uint32_t h = pack2<__half>(a * inv, b * inv);  // y * 2^-14, E2M1's grid on FP16's
  h = hmin2(h, 0x0E000E00u);                     // saturate at 6 * 2^-14 (tiny sf: y may pass 6)
  h = (h + 0x00FF00FFu + ((h >> 9) & 0x00010001u)) & 0xFE00FE00u;  // round half even to 1 mantissa bit
  return hmul2(h, sf9);
}

// Online softmax of one 128-key block in the log2 domain, in place: s[i] (raw score of row
// r = (i/2)%2 -> row0 + 8r, key key_of(i)) becomes p; m, l, alpha as mha_bf16_fwd. amax[j][r]: the
// largest p of 16-key block j in row r (its max score through the same FFMA + ex2), for quantize_p.
// Masking (kMask): key >= key_end or, for row r, key > diag + 8r -> p = 0.
template <bool kMask>
__device__ __forceinline__ void softmax_block(float (&s)[kBlockN / 2], float (&amax)[kBlockN / 16][2], float (&m)[2],
                                              float (&l)[2], float (&alpha)[2], float c, int kq, int key_end,
                                              int diag) {
  if (kMask) {
#pragma unroll
    for (int i = 0; i < kBlockN / 2; ++i) {
      const int key = key_of(i, kq);
      if (key >= key_end || key > diag + 8 * ((i / 2) % 2)) s[i] = -INFINITY;
    }
  }
  // Block maxima (this thread's 4 values of a block row, then the quad), then the row maxima.
  float bm[kBlockN / 16][2];
#pragma unroll
  for (int j = 0; j < kBlockN / 16; ++j) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float x = fmaxf(fmaxf(s[8 * j + 2 * r], s[8 * j + 2 * r + 1]), fmaxf(s[8 * j + 4 + 2 * r], s[8 * j + 5 + 2 * r]));
      x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
      bm[j][r] = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
    }
  }
  float neg_m[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const float x = fmaxf(fmaxf(fmaxf(bm[0][r], bm[1][r]), fmaxf(bm[2][r], bm[3][r])),
                          fmaxf(fmaxf(bm[4][r], bm[5][r]), fmaxf(bm[6][r], bm[7][r])));
    const float m_new = x == -INFINITY ? m[r] : fmaxf(m[r], x * c);
    const float m_use = m_new == -INFINITY ? 0.f : m_new;  // nothing visible so far: p = 0
    alpha[r] = ex2(m[r] - m_use);
    m[r] = m_new;
    neg_m[r] = -m_use;
  }
  float sum[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
#pragma unroll
  for (int i = 0; i < kBlockN / 2; ++i) {
    const int r = (i / 2) % 2;
    float e = ex2(fmaf(s[i], c, neg_m[r]));
    if (kMask && s[i] == -INFINITY) e = 0.f;  // -inf * 0 (sm_scale = 0) is NaN
    s[i] = e;
    sum[r][(i / 4) % 4] += e;
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) l[r] = fmaf(l[r], alpha[r], (sum[r][0] + sum[r][1]) + (sum[r][2] + sum[r][3]));
#pragma unroll
  for (int j = 0; j < kBlockN / 16; ++j) {
#pragma unroll
    for (int r = 0; r < 2; ++r) amax[j][r] = bm[j][r] == -INFINITY ? 0.f : ex2(fmaf(bm[j][r], c, neg_m[r]));
  }
}

// P (p in s) -> NVFP4 per row and 16-key block j (the k16 A fragment pa[j] of P V): sf = e4m3(amax *
// 448 / 6), both rows' scales in one conversion; the fragments e2m1(p / (sf / 448)) * sf * 2^-5.
__device__ __forceinline__ void quantize_p(const float (&s)[kBlockN / 2], const float (&amax)[kBlockN / 16][2],
                                           uint32_t (&pa)[kBlockN / 16][4]) {
#pragma unroll
  for (int j = 0; j < kBlockN / 16; ++j) {
    const uint32_t sf16 = e4m3x2_to_f16x2(e4m3x2(amax[j][0] * (kPInvGs / 6.f), amax[j][1] * (kPInvGs / 6.f)));
    const uint32_t sf9 = hmul2(sf16, 0x60006000u);  // * 2^9: at most 72 * 512, exact
    float inv[2];
    uint32_t sfb[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float sf = __half2float(__ushort_as_half(static_cast<unsigned short>(sf16 >> (16 * r))));
      inv[r] = sf > 0.f ? rcp_approx(sf * (kPGs * 16384.f)) : 0.f;
      sfb[r] = __byte_perm(sf9, 0, r ? 0x3232 : 0x1010);
    }
#pragma unroll
    for (int jj = 0; jj < 4; ++jj)
      pa[j][jj] = quant_p2(s[8 * j + 2 * jj], s[8 * j + 2 * jj + 1], inv[jj % 2], sfb[jj % 2]);
  }
}

// ---- the decode pass ----

// A packed NVFP4 tensor seen as [B, H, S rows, C columns] (element strides in bytes; scales the
// same with C / 16 a row), decoded to FP16 [B, H, S, C] contiguous.
struct DecodeView {
  const uint8_t* vals;
  const uint8_t* sf;
  TokenView v, s;  // D = C (columns)
  __half* out;
};

// One thread per 16-block: 8 packed bytes and a scale byte in, 32 bytes out, in natural order.
__global__ void __launch_bounds__(256) decode_kernel(const DecodeView d) {
  const int nblk = int(d.v.D / 16);
  const int64_t idx = int64_t(blockIdx.x) * 256 + threadIdx.x;
  if (idx >= d.v.S * nblk) return;
  const int64_t row = idx / nblk;
  const int c = int(idx - row * nblk);
  const int h = blockIdx.y, b = blockIdx.z;
  const uint2 w = *reinterpret_cast<const uint2*>(d.vals + b * d.v.stride_b + h * d.v.stride_h + row * d.v.stride_s + 8 * c);
  const uint32_t sf = d.sf[b * d.s.stride_b + h * d.s.stride_h + row * d.s.stride_s + c];
  uint32_t o[8];
  decode16(w.x, w.y, sf, o);
  // decode16's pairs (0,2) (4,6) (1,3) (5,7) | (8,10) ... -> (0,1) (2,3) ... 
  uint4 lo, hi;
  lo.x = __byte_perm(o[0], o[2], 0x5410);
  lo.y = __byte_perm(o[0], o[2], 0x7632);
  lo.z = __byte_perm(o[1], o[3], 0x5410);
  lo.w = __byte_perm(o[1], o[3], 0x7632);
  hi.x = __byte_perm(o[4], o[6], 0x5410);
  hi.y = __byte_perm(o[4], o[6], 0x7632);
  hi.z = __byte_perm(o[5], o[7], 0x5410);
  hi.w = __byte_perm(o[5], o[7], 0x7632);
  uint4* dst = reinterpret_cast<uint4*>(d.out + ((int64_t(b) * d.v.H + h) * d.v.S + row) * d.v.D + 16 * c);
  dst[0] = lo;
  dst[1] = hi;
}

cudaError_t decode(const uint8_t* vals, const uint8_t* sf, const TokenView& v, const TokenView& s, __half* out,
                   cudaStream_t stream) {
  DecodeView d{vals, sf, v, s, out};
  const int64_t n = v.S * (v.D / 16);
  decode_kernel<<<dim3(unsigned(ceil_div(n, int64_t(256))), unsigned(v.H), unsigned(v.B)), 256, 0, stream>>>(d);
  return last_launch_error();
}

template <typename T, int D, int kSchedule>
__global__ void __launch_bounds__(kThreads, 1)
mha_nvfp4_kernel(const __grid_constant__ CUtensorMap tm_q, const __grid_constant__ CUtensorMap tm_k,
                 const __grid_constant__ CUtensorMap tm_v, const MhaNvfp4Params p) {
  constexpr bool kOv = (kSchedule & kOverlap) != 0;
  constexpr bool kPP = (kSchedule & kPingPong) != 0;
  using L = Layout<D>;
  constexpr int kStages = L::kStages;
  extern __shared__ __align__(1024) uint8_t smem[];
  if ((static_cast<uint32_t>(__cvta_generic_to_shared(smem)) & 1023u) != 0) __trap();
  uint8_t* sq = smem + L::kQ;
  uint8_t* sk = smem + L::kK;
  uint8_t* sv = smem + L::kV;
  uint64_t* bar_q = reinterpret_cast<uint64_t*>(smem + L::kBar);
  uint64_t* full_k = bar_q + 1;
  uint64_t* full_v = full_k + kStages;
  uint64_t* empty_k = full_v + kStages;
  uint64_t* empty_v = empty_k + kStages;

  const TokenView& qv = p.q_view;
  const TokenView& kv = p.k_view;
  const int h = blockIdx.y, b = blockIdx.z;
  const int hkv = int(h / (qv.H / kv.H));
  const int m_blk = p.causal ? int(gridDim.x - 1 - blockIdx.x) : int(blockIdx.x);
  const int64_t row_first = int64_t(m_blk) * kBlockM;
  const int64_t causal_shift = kv.S - qv.S;
  const int n_blocks_all = int(ceil_div(kv.S, kBlockN));
  int n_blocks = n_blocks_all;
  if (p.causal) {
    const int64_t last_key = min(row_first + kBlockM, qv.S) - 1 + causal_shift;
    n_blocks = last_key < 0 ? 0 : int(min(int64_t(n_blocks_all), last_key / kBlockN + 1));
  }

  if (threadIdx.x == 0) {
    mbar_init(bar_q, 1);
    for (int s = 0; s < kStages; ++s) {
      mbar_init(full_k + s, 1);
      mbar_init(full_v + s, 1);
      mbar_init(empty_k + s, 2);
      mbar_init(empty_v + s, 2);
    }
    fence_barrier_init();
  }
  __syncthreads();

  if (threadIdx.x < 128) {  // producer: Q [B, Hq, Sq, D], K [B, Hkv, Sk, D], V^T [B, Hkv, D, s_pad] (FP16)
    setmaxnreg_dec<24>();
    if (threadIdx.x == 0 && n_blocks > 0) {
      mbar_arrive_expect_tx(bar_q, L::kTile);
#pragma unroll
      for (int pn = 0; pn < D / 64; ++pn) tma_load_4d(sq + pn * L::kPanelQK, &tm_q, bar_q, 64 * pn, int(row_first), h, b);
      int stage = 0;
      uint32_t phase = 0;
      for (int n = 0; n < n_blocks; ++n) {
        if (n >= kStages) mbar_wait(empty_k + stage, phase ^ 1u);
        mbar_arrive_expect_tx(full_k + stage, L::kTile);
#pragma unroll
        for (int pn = 0; pn < D / 64; ++pn)
          tma_load_4d(sk + stage * L::kTile + pn * L::kPanelQK, &tm_k, full_k + stage, 64 * pn, n * kBlockN, hkv, b);
        if (n >= kStages) mbar_wait(empty_v + stage, phase ^ 1u);
        mbar_arrive_expect_tx(full_v + stage, L::kTile);
#pragma unroll
        for (int pv = 0; pv < 2; ++pv)
          tma_load_4d(sv + stage * L::kTile + pv * L::kPanelV, &tm_v, full_v + stage, n * kBlockN + 64 * pv, 0, hkv, b);
        if (++stage == kStages) {
          stage = 0;
          phase ^= 1u;
        }
      }
    }
    return;
  }

  // ---- consumers ----
  setmaxnreg_inc<240>();
  const int cw = int(threadIdx.x / 128) - 1;
  const int tid = threadIdx.x % 128, warp = tid / 32, lane = tid % 32, quad = lane % 4;
  const int kq = 2 * quad;  // key_of's per-thread offset
  const int64_t row_wg = row_first + 64 * cw;
  const int64_t row0 = row_wg + warp * 16 + lane / 4;
  const float c = p.sm_scale * kLog2e * (*p.q_gs) * (*p.k_gs);

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

  float o[D / 2];
#pragma unroll
  for (int i = 0; i < D / 2; ++i) o[i] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};

  if (n_blocks > 0) {
    const uint64_t dq = make_smem_desc(sq + cw * 64 * 128, 16, 1024, 1);
    const uint64_t dk0 = make_smem_desc(sk, 16, 1024, 1);
    const uint64_t dv0 = make_smem_desc(sv, 16, 1024, 1);
    float s[kBlockN / 2];
    float amax[kBlockN / 16][2];
    uint32_t pa[kBlockN / 16][4];
    auto issue_qk = [&](int stage) {
      wgmma_fence_operand(s);
      wgmma_fence();
      const uint64_t dk = smem_desc_advance(dk0, stage * L::kTile);
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        const uint32_t off = (kk / 4) * L::kPanelQK + (kk % 4) * 32;
        wgmma_f16_ss(s, smem_desc_advance(dq, off), smem_desc_advance(dk, off), kk > 0);
      }
      wgmma_commit();
    };
    auto issue_pv = [&](int stage) {
      wgmma_fence_operand(o);
      wgmma_fence();
      const uint64_t dv = smem_desc_advance(dv0, stage * L::kTile);
#pragma unroll
      for (int kk = 0; kk < kBlockN / 16; ++kk)
        wgmma_f16_rs(o, pa[kk], smem_desc_advance(dv, (kk / 4) * L::kPanelV + (kk % 4) * 32), true);
      wgmma_commit();
    };
    float alpha[2];
    mbar_wait(bar_q, 0);
    auto softmax = [&](int n) {
      const bool need_mask = int64_t(n + 1) * kBlockN > kv.S ||
                             (p.causal && int64_t(n + 1) * kBlockN - 1 > row_wg + causal_shift);
      if (need_mask) {
        const int64_t key0 = int64_t(n) * kBlockN;
        const int key_end = int(min(kv.S - key0, int64_t(kBlockN)));
        const int diag = p.causal ? int(max(min(row0 + causal_shift - key0, int64_t(kBlockN)), int64_t(-kBlockN)))
                                  : kBlockN;
        softmax_block<true>(s, amax, m, l, alpha, c, kq, key_end, diag);
      } else {
        softmax_block<false>(s, amax, m, l, alpha, c, kq, 0, 0);
      }
    };
    auto rescale_o = [&] {
#pragma unroll
      for (int i = 0; i < D / 2; ++i) o[i] *= alpha[(i / 2) % 2];
    };

    if constexpr (kOv) {
      // As mha_bf16_fwd: S_{n} and P_{n-1} V_{n-1} issued together, softmax(S_n) while PV runs.
      mbar_wait(full_k, 0);
      turn_begin();
      issue_qk(0);
      turn_end();
      wgmma_wait<0>();
      wgmma_fence_operand(s);
      release(empty_k);
      softmax(0);
      quantize_p(s, amax, pa);
      int stage = 0;
      uint32_t phase = 0;
      for (int n = 1; n < n_blocks; ++n) {
        const int next = stage + 1 == kStages ? 0 : stage + 1;
        const uint32_t next_phase = next == 0 ? phase ^ 1u : phase;
        mbar_wait(full_k + next, next_phase);
        mbar_wait(full_v + stage, phase);
        turn_begin();
        issue_qk(next);
        issue_pv(stage);
        turn_end();
        wgmma_wait<1>();
        wgmma_fence_operand(s);
        release(empty_k + next);
        softmax(n);
        wgmma_wait<0>();  // P_{n-1} V_{n-1} has read pa
        wgmma_fence_operand(o);
        release(empty_v + stage);
        rescale_o();
        quantize_p(s, amax, pa);
        stage = next;
        phase = next_phase;
      }
      mbar_wait(full_v + stage, phase);
      turn_begin();
      issue_pv(stage);
      turn_end();
      wgmma_wait<0>();
      wgmma_fence_operand(o);
      release(empty_v + stage);
    } else {
      int stage = 0;
      uint32_t phase = 0;
      for (int n = 0; n < n_blocks; ++n) {
        mbar_wait(full_k + stage, phase);
        turn_begin();
        issue_qk(stage);
        turn_end();
        wgmma_wait<0>();
        wgmma_fence_operand(s);
        release(empty_k + stage);
        softmax(n);
        rescale_o();
        quantize_p(s, amax, pa);
        mbar_wait(full_v + stage, phase);
        turn_begin();
        issue_pv(stage);
        turn_end();
        wgmma_wait<0>();
        wgmma_fence_operand(o);
        release(empty_v + stage);
        if (++stage == kStages) {
          stage = 0;
          phase ^= 1u;
        }
      }
    }
  }
  if (kPP && cw == 0) named_bar_sync(1, 256);

  // ---- epilogue: O * v_gs * 2^5 / 448 / l, staged in shared memory ----
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
  }
  const float o_scale = (*p.v_gs) * (32.f / 448.f);
  constexpr int kPitch = L::kPitch;
  uint8_t* so = smem + L::kO + cw * L::kOWg;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const float f = l[r] > 0.f ? o_scale / l[r] : 0.f;
    uint8_t* srow = so + (warp * 16 + lane / 4 + 8 * r) * kPitch;
#pragma unroll
    for (int j = 0; j < D / 8; ++j) {
      const int d = 8 * j + 2 * quad;
      *reinterpret_cast<uint32_t*>(srow + 2 * d) = pack2<T>(o[4 * j + 2 * r] * f, o[4 * j + 2 * r + 1] * f);
    }
  }
  __syncwarp();
  constexpr int kChunks = D / 8;
  const TokenView& ov = p.o_view;
  int hh = h, bb = b, ln = lane, wp = warp;
  asm volatile("" : "+r"(hh), "+r"(bb), "+r"(ln), "+r"(wp));
  T* obase = static_cast<T*>(p.o) + bb * ov.stride_b + hh * ov.stride_h;
  const int64_t row_w = row_wg + wp * 16;
#pragma unroll
  for (int k = 0; k < 16 * kChunks / 32; ++k) {
    const int i = ln + 32 * k, rr = i / kChunks, ch = i % kChunks;
    const int64_t row = row_w + rr;
    if (row < qv.S)
      *reinterpret_cast<uint4*>(obase + row * ov.stride_s + 8 * ch) =
          *reinterpret_cast<const uint4*>(so + (wp * 16 + rr) * kPitch + 16 * ch);
  }
  if (p.lse != nullptr && quad == 0) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int64_t row = row0 + 8 * r;
      if (row < qv.S)
        p.lse[(int64_t(b) * qv.H + h) * qv.S + row] = l[r] > 0.f ? (m[r] + __log2f(l[r])) / kLog2e : -INFINITY;
    }
  }
}

// [B, H, S, D] FP16 (contiguous) as a 4-D tensor map with `rows`-row boxes of one 64-column panel.
cudaError_t encode_f16(CUtensorMap* map, const __half* base, int64_t B, int64_t H, int64_t S, int64_t D, uint32_t rows) {
  const int64_t dims[4] = {D, S, H, B};
  const int64_t strides[4] = {1, D, S * D, H * S * D};
  const uint32_t box[4] = {64, rows, 1, 1};
  return encode_tensor_map(map, base, ScalarType::Float16, 4, dims, strides, box, TmaSwizzle::B128);
}

template <typename T, int D>
cudaError_t launch(const MhaNvfp4Params& p, cudaStream_t stream) {
  const TokenView &q = p.q_view, &k = p.k_view;
  __half* q16 = static_cast<__half*>(p.scratch);
  __half* k16 = q16 + q.B * q.H * q.S * D;
  __half* v16 = k16 + k.B * k.H * k.S * D;
  cudaError_t err = decode(p.q, p.q_sf, q, p.q_sf_view, q16, stream);
  if (err == cudaSuccess) err = decode(p.k, p.k_sf, k, p.k_sf_view, k16, stream);
  if (err != cudaSuccess) return err;
  TokenView vt;  // V^T [B, Hkv, D rows, s_pad columns], contiguous
  vt.B = k.B;
  vt.H = k.H;
  vt.S = D;
  vt.D = p.s_pad;
  vt.stride_s = p.s_pad / 2;
  vt.stride_h = D * vt.stride_s;
  vt.stride_b = k.H * vt.stride_h;
  TokenView vts = vt;
  vts.stride_s = p.s_pad / 16;
  vts.stride_h = D * vts.stride_s;
  vts.stride_b = k.H * vts.stride_h;
  err = decode(p.vt, p.vt_sf, vt, vts, v16, stream);
  if (err != cudaSuccess) return err;
  CUtensorMap tq, tk, tv;
  err = encode_f16(&tq, q16, q.B, q.H, q.S, D, kBlockM);
  if (err == cudaSuccess) err = encode_f16(&tk, k16, k.B, k.H, k.S, D, kBlockN);
  if (err == cudaSuccess) err = encode_f16(&tv, v16, k.B, k.H, D, p.s_pad, D);  // box: 64 keys x D rows
  if (err != cudaSuccess) return err;
  auto kernel = mha_nvfp4_kernel<T, D, kDefaultSchedule<D>>;
  constexpr int smem = Layout<D>::kBytes;
  err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (err != cudaSuccess) return err;
  const dim3 grid(unsigned(ceil_div(q.S, kBlockM)), unsigned(q.H), unsigned(q.B));
  kernel<<<grid, kThreads, smem, stream>>>(tq, tk, tv, p);
  return last_launch_error();
}

bool aligned(const void* ptr, int bytes) { return reinterpret_cast<uintptr_t>(ptr) % bytes == 0; }

}  // namespace
}  // namespace sm90a

int64_t mha_nvfp4_fwd_scratch(const MhaNvfp4Params& p) {
  const TokenView &q = p.q_view, &k = p.k_view;
  return 2 * (q.B * q.H * q.S * q.D + k.B * k.H * k.S * k.D + k.B * k.H * k.D * p.s_pad);
}

cudaError_t mha_nvfp4_fwd(const MhaNvfp4Params& params, cudaStream_t stream) {
  MhaNvfp4Params p = params;
  for (TokenView* t : {&p.q_view, &p.q_sf_view, &p.k_view, &p.k_sf_view, &p.o_view}) {
    if (t->B == 1) t->stride_b = 0;
    if (t->S == 1) t->stride_s = 0;
    if (t->H == 1) t->stride_h = 0;
  }
  const TokenView &q = p.q_view, &k = p.k_view;
  using sm90a::aligned;
  auto rows_ok = [](const void* base, const TokenView& v, int bytes) {  // byte strides
    return aligned(base, bytes) && v.stride_b % bytes == 0 && v.stride_s % bytes == 0 && v.stride_h % bytes == 0;
  };
  const bool bf16 = p.dtype == ScalarType::BFloat16;
  if ((!bf16 && p.dtype != ScalarType::Float16) || q.D != k.D || (q.D != 64 && q.D != 128) || k.H == 0 ||
      q.H % k.H != 0 || k.B != q.B || k.S < 1 || !(p.sm_scale >= 0.f) || p.s_pad % 128 != 0 || p.s_pad < k.S ||
      !rows_ok(p.q, q, 8) || !rows_ok(p.k, k, 8) || !rows_ok(p.q_sf, p.q_sf_view, 4) ||
      !rows_ok(p.k_sf, p.k_sf_view, 4) || !aligned(p.vt, 16) || !aligned(p.vt_sf, 16) || !rows_aligned_16b(p.o, p.o_view) ||
      p.scratch == nullptr || !aligned(p.scratch, 16))
    return cudaErrorNotSupported;
  if (q.B * q.H * q.S == 0) return cudaSuccess;
  if (q.B > 65535 || q.H > 65535 || k.S > (int64_t(1) << 31) - sm90a::kBlockN ||
      q.S > (int64_t(1) << 31) - sm90a::kBlockM) return cudaErrorNotSupported;
  if (q.D == 128) return bf16 ? sm90a::launch<__nv_bfloat16, 128>(p, stream) : sm90a::launch<__half, 128>(p, stream);
  return bf16 ? sm90a::launch<__nv_bfloat16, 64>(p, stream) : sm90a::launch<__half, 64>(p, stream);
}

}  // namespace ac4k
