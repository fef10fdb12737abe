// mha_int8_x_fp8_fwd for sm90a: attention with QK^T on INT8 tensor cores and PV on FP8 tensor
// cores (the SageAttention2 recipe; ac4k_kernel.reference.attention_int8_fp8). Inputs come from
// the quantizers of quantize_attention_inputs.cu (layouts in types.h).
//
// One CTA per (128 query rows, head, batch); 384 threads: warpgroup 0 is the producer (one thread
// issues TMA loads of Q once and K / V^T per 128-key block into a kStages ring guarded by
// mbarriers), warpgroups 1 and 2 each own 64 query rows:
//   S = Q K^T          wgmma m64n128k32 s8, both operands from shared memory (K-major, swizzled)
//   online softmax     FP32, exp2 with q_scale * k_scale * sm_scale * log2(e) folded in, P scaled
//                      to [0, 448] by an offset of log2(448) on the running max
//   O_blk = P V        wgmma m64nDk32 e4m3, P straight from the score registers (the permuted V^T
//                      layout makes each thread's scores its A fragment), V^T from shared memory
//   O = O * alpha + O_blk   in FP32 registers: the FP8 wgmma accumulator is narrower than FP32,
//                      so each block's product is promoted once
// Within a warpgroup, S_n = Q K_n^T and P_{n-1} V_{n-1} are issued together and the softmax of
// S_n runs while the PV product is on the tensor cores.
// Epilogue: O * v_scale[d] / l, stored in the caller's layout with row guards.
#include <cuda.h>
#include <cuda_runtime.h>
#include <cudaTypedefs.h>

#include <cuda/ptx>

#include "ac4k_kernel/ops.h"
#include "common/math.cuh"
#include "common/utils.cuh"
#include "sm90a/barrier.cuh"
#include "sm90a/tma.cuh"
#include "sm90a/wgmma.cuh"

namespace ac4k {
namespace sm90a {
namespace {

constexpr int kBlockM = 128;  // query rows per CTA (64 per consumer warpgroup)
constexpr int kBlockN = 128;  // keys per pipeline stage (TMA box)
constexpr int kSub = 64;      // keys per softmax step
constexpr int kStages = 2;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLog2P = 8.807354922057604f;  // log2(448): P in [0, 448] uses the E4M3 range

template <int D>
struct Smem {
  static constexpr int kQ = kBlockM * D;  // bytes
  static constexpr int kK = kBlockN * D;
  static constexpr int kV = D * kBlockN;
  static constexpr int kBytes = kQ + kStages * (kK + kV) + 1024 /* barriers */ + 1024 /* alignment */;
};

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

template <int D>
__global__ void __launch_bounds__(384, 1)
mha_int8_x_fp8_kernel(const __grid_constant__ CUtensorMap tm_q, const __grid_constant__ CUtensorMap tm_k,
                      const __grid_constant__ CUtensorMap tm_v, const MhaInt8Fp8Params p) {
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
  uint8_t* sq = smem;
  uint8_t* sk = sq + Smem<D>::kQ;
  uint8_t* sv = sk + kStages * Smem<D>::kK;
  uint64_t* bars = reinterpret_cast<uint64_t*>(sv + kStages * Smem<D>::kV);
  uint64_t* q_full = bars;
  uint64_t* full = bars + 1;
  uint64_t* empty = bars + 1 + kStages;

  const TokenView& qv = p.q_view;
  const TokenView& kv = p.k_view;
  const int m_blk = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int hkv = int(h / (qv.H / kv.H));
  const int64_t n_blocks_all = ceil_div(kv.S, kBlockN);
  // Causal (bottom-right aligned): query row i sees keys j <= i + Sk - Sq.
  int64_t n_blocks = n_blocks_all;
  if (p.causal) {
    const int64_t last_key = int64_t(m_blk + 1) * kBlockM - 1 + kv.S - qv.S;
    n_blocks = last_key < 0 ? 0 : min(n_blocks_all, last_key / kBlockN + 1);
  }

  if (threadIdx.x == 0) {
    mbar_init(q_full, 1);
    for (int s = 0; s < kStages; ++s) {
      mbar_init(full + s, 1);
      mbar_init(empty + s, 2);  // one elected thread per consumer warpgroup
    }
    fence_barrier_init();
  }
  __syncthreads();

  const int wg = threadIdx.x / 128;
  if (wg == 0) {
    setmaxnreg_dec<24>();
    if (threadIdx.x == 0) {
      tma_prefetch_desc(&tm_q);
      tma_prefetch_desc(&tm_k);
      tma_prefetch_desc(&tm_v);
      mbar_arrive_expect_tx(q_full, Smem<D>::kQ);
      tma_load_4d(sq, &tm_q, q_full, 0, m_blk * kBlockM, h, b);
      for (int64_t n = 0; n < n_blocks; ++n) {
        const int s = int(n % kStages);
        mbar_wait(empty + s, uint32_t((n / kStages) & 1) ^ 1u);
        mbar_arrive_expect_tx(full + s, Smem<D>::kK + Smem<D>::kV);
        tma_load_4d(sk + s * Smem<D>::kK, &tm_k, full + s, 0, int32_t(n * kBlockN), hkv, b);
        tma_load_3d(sv + s * Smem<D>::kV, &tm_v, full + s, int32_t(n * kBlockN), 0, b * int(kv.H) + hkv);
      }
    }
    return;
  }

  setmaxnreg_inc<240>();
  const int cw = wg - 1;              // consumer warpgroup: rows cw*64 .. +63 of the tile
  const int tid = threadIdx.x % 128;  // thread in the warpgroup
  const int warp = tid / 32, lane = tid % 32, quad = lane % 4;
  const int64_t row0 = int64_t(m_blk) * kBlockM + cw * 64 + warp * 16 + lane / 4;  // and row0 + 8
  // Q scales per 16 rows (one per warp), K scales per 64 keys (two per block): see types.h.
  const int64_t q_blk = int64_t(m_blk) * 8 + cw * 4 + warp;
  const int64_t n_qblk = ceil_div(qv.S, 16), n_kblk = ceil_div(kv.S, kSub);
  const float q_scale = q_blk < n_qblk ? p.q_scale[(int64_t(b) * qv.H + h) * n_qblk + q_blk] : 0.f;
  const float c_q = q_scale * p.sm_scale * kLog2e;
  const float* k_scale = p.k_scale + (int64_t(b) * kv.H + hkv) * n_kblk;
  const int64_t causal_shift = kv.S - qv.S;

  float o[D / 2];
#pragma unroll
  for (int i = 0; i < D / 2; ++i) o[i] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};

  mbar_wait(q_full, 0);
  const uint64_t dq = qk_desc<D>(sq + cw * 64 * D);
  const int64_t wg_row0 = int64_t(m_blk) * kBlockM + cw * 64;

  // Each 128-key stage is consumed as two 64-key sub-blocks t = 2n + half, so that the score
  // accumulators (32 regs), P (2 x 8), the block product (D/2) and O (D/2) fit 240 registers
  // while S_t and P_{t-1} V_{t-1} are in flight together.
  // S_t = Q K_t^T into acc (issued, not waited).
  auto issue_qk = [&](int32_t (&acc)[kSub / 2], int64_t t) {
    const uint64_t dk = qk_desc<D>(sk + int(t / 2 % kStages) * Smem<D>::kK + int(t % 2) * kSub * D);
    wgmma_fence_operand(acc);
    wgmma_fence();
#pragma unroll
    for (int k = 0; k < D / 32; ++k) wgmma_s8_ss(acc, smem_desc_advance(dq, 32 * k), smem_desc_advance(dk, 32 * k), k > 0);
    wgmma_commit();
  };
  // O_t = P_t V_t into ob (issued, not waited); pa must stay untouched until the wait.
  auto issue_pv = [&](float (&ob)[D / 2], uint32_t (&pa)[kSub / 32][4], int64_t t) {
    const uint64_t dv = make_smem_desc_kmajor_sw128(sv + int(t / 2 % kStages) * Smem<D>::kV);
    wgmma_fence_operand(ob);
    wgmma_fence();
#pragma unroll
    for (int k = 0; k < kSub / 32; ++k) {
      wgmma_e4m3_rs(ob, pa[k], smem_desc_advance(dv, 32 * (int(t % 2) * (kSub / 32) + k)), k > 0);
    }
    wgmma_commit();
  };
  // Online softmax of sub-block t from its integer scores: updates m, l; P as E4M3 A fragments
  // in pa; alpha rescales what was accumulated against the previous max. The row max is taken on
  // the integers (the scale is positive), so a score costs I2F, FFMA, EX2, FADD and half a cvt.
  // acc is read-only: it is the next S product's accumulator, and writing it while the PV product
  // is in flight would serialize the wgmmas (ptxas C7513).
  auto softmax = [&](const int32_t (&acc)[kSub / 2], int64_t t, uint32_t (&pa)[kSub / 32][4], float (&alpha)[2]) {
    const float c = c_q * k_scale[t];
    const bool need_mask = (t + 1) * kSub > kv.S || (p.causal && (t + 1) * kSub - 1 > wg_row0 + causal_shift);
    // Visible keys of this sub-block per row half: key offset (0..63) < lim[r].
    int lim[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      int64_t x = kv.S - t * kSub;
      if (p.causal) x = min(x, row0 + 8 * r + causal_shift + 1 - t * kSub);
      lim[r] = int(max(int64_t(-1), min(x, int64_t(kSub))));
    }
    auto hidden = [&](int i) { return need_mask && 8 * (i / 4) + (i % 2) + 2 * quad >= lim[(i / 2) % 2]; };
    int32_t mi[2] = {INT32_MIN, INT32_MIN};
#pragma unroll
    for (int i = 0; i < kSub / 2; ++i) mi[(i / 2) % 2] = max(mi[(i / 2) % 2], hidden(i) ? INT32_MIN : acc[i]);
    float mo[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      int32_t v = max(mi[r], __shfl_xor_sync(0xffffffffu, mi[r], 1));
      v = max(v, __shfl_xor_sync(0xffffffffu, v, 2));
      const float mx = v == INT32_MIN ? m[r] : fmaxf(m[r], float(v) * c);
      const float m_use = mx == -INFINITY ? 0.f : mx;  // fully masked so far: p = 0
      alpha[r] = ex2(m[r] - m_use);
      mo[r] = m_use - kLog2P;  // p = 2^(s - m) * 448
      m[r] = mx;
    }
    float ps[2] = {0.f, 0.f};
    // The thread's scores at columns 2q, 2q+1, 8+2q, 9+2q (+16) of each k32 step are exactly the
    // permuted V^T slots 4q..4q+3 (+16): no shuffles.
#pragma unroll
    for (int k = 0; k < kSub / 32; ++k) {
      float sc[16];
#pragma unroll
      for (int e = 0; e < 16; ++e) {
        const int i = 16 * k + e;
        sc[e] = hidden(i) ? 0.f : ex2(fmaf(float(acc[i]), c, -mo[(i / 2) % 2]));
        ps[(i / 2) % 2] += sc[e];
      }
      pa[k][0] = e4m3x2(sc[0], sc[1]) | (e4m3x2(sc[4], sc[5]) << 16);
      pa[k][1] = e4m3x2(sc[2], sc[3]) | (e4m3x2(sc[6], sc[7]) << 16);
      pa[k][2] = e4m3x2(sc[8], sc[9]) | (e4m3x2(sc[12], sc[13]) << 16);
      pa[k][3] = e4m3x2(sc[10], sc[11]) | (e4m3x2(sc[14], sc[15]) << 16);
    }
    l[0] = l[0] * alpha[0] + ps[0];
    l[1] = l[1] * alpha[1] + ps[1];
  };
  auto accumulate = [&](const float (&ob)[D / 2], const float (&alpha)[2]) {
#pragma unroll
    for (int i = 0; i < D / 2; ++i) o[i] = fmaf(o[i], alpha[(i / 2) % 2], ob[i]);
  };
  const int64_t n_sub = min(n_blocks * 2, n_kblk);  // 64-key sub-blocks with a visible key
  auto wait_stage = [&](int64_t t) {  // K / V of sub-block t landed (once per 128-key stage)
    if (t % 2 == 0) mbar_wait(full + int(t / 2 % kStages), uint32_t((t / 2 / kStages) & 1));
  };
  auto release = [&](int64_t t) {  // both halves of the stage consumed by this warpgroup
    if ((t % 2 == 1 || t == n_sub - 1) && tid == 0) mbar_arrive(empty + int(t / 2 % kStages));
  };
  // One step: S_t and P_{t-1} V_{t-1} on the tensor cores, softmax of S_t meanwhile. Two copies
  // with the P / alpha buffers swapped keep every register statically named (no copies, which
  // ptxas would fold into the in-flight operands).
  auto step = [&](int32_t (&acc)[kSub / 2], float (&ob)[D / 2], int64_t t, uint32_t (&pa_prev)[kSub / 32][4],
                  float (&alpha_prev)[2], uint32_t (&pa_cur)[kSub / 32][4], float (&alpha_cur)[2]) {
    wait_stage(t);
    issue_qk(acc, t);
    issue_pv(ob, pa_prev, t - 1);
    wgmma_wait<1>();  // S_t is ready; P_{t-1} V_{t-1} may still run
    wgmma_fence_operand(acc);
    softmax(acc, t, pa_cur, alpha_cur);
    wgmma_wait<0>();
    wgmma_fence_operand(ob);
    release(t - 1);
    accumulate(ob, alpha_prev);
  };

  if (n_sub > 0) {
    int32_t acc[kSub / 2];
    uint32_t pa0[kSub / 32][4], pa1[kSub / 32][4];
    float ob[D / 2];
    float alpha0[2], alpha1[2];
    wait_stage(0);
    issue_qk(acc, 0);
    wgmma_wait<0>();
    wgmma_fence_operand(acc);
    softmax(acc, 0, pa0, alpha0);
    int64_t t = 1;
    for (; t + 1 < n_sub; t += 2) {
      step(acc, ob, t, pa0, alpha0, pa1, alpha1);
      step(acc, ob, t + 1, pa1, alpha1, pa0, alpha0);
    }
    if (t < n_sub) {  // an even number of sub-blocks: one step left, then P1 is the last
      step(acc, ob, t, pa0, alpha0, pa1, alpha1);
      issue_pv(ob, pa1, n_sub - 1);
      wgmma_wait<0>();
      wgmma_fence_operand(ob);
      release(n_sub - 1);
      accumulate(ob, alpha1);
    } else {
      issue_pv(ob, pa0, n_sub - 1);
      wgmma_wait<0>();
      wgmma_fence_operand(ob);
      release(n_sub - 1);
      accumulate(ob, alpha0);
    }
  }

  // Epilogue: row sums over the quad, O * v_scale / l, stores in the caller's layout.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
  }
  const float* v_scale = p.v_scale + (int64_t(b) * kv.H + hkv) * D;
  const TokenView& ov = p.o_view;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t row = row0 + 8 * r;
    if (row >= qv.S) continue;
    const float inv_l = l[r] > 0.f ? 1.f / l[r] : 0.f;
    const int64_t base = b * ov.stride_b + row * ov.stride_s + h * ov.stride_h;
#pragma unroll
    for (int j = 0; j < D / 8; ++j) {
      const int d = 8 * j + 2 * quad;
      const float x0 = o[4 * j + 2 * r] * inv_l * v_scale[d];
      const float x1 = o[4 * j + 2 * r + 1] * inv_l * v_scale[d + 1];
      if (p.o_dtype == ScalarType::BFloat16) {
        *reinterpret_cast<__nv_bfloat162*>(static_cast<__nv_bfloat16*>(p.o) + base + d) = __floats2bfloat162_rn(x0, x1);
      } else {
        *reinterpret_cast<__half2*>(static_cast<__half*>(p.o) + base + d) = __floats2half2_rn(x0, x1);
      }
    }
    if (p.lse != nullptr && quad == 0) {
      // Natural-log LSE of the (smoothed-K) scores: p carries a factor 448 = 2^kLog2P.
      p.lse[(int64_t(b) * qv.H + h) * qv.S + row] =
          l[r] > 0.f ? (m[r] + __log2f(l[r]) - kLog2P) / kLog2e : -INFINITY;
    }
  }
}

// Q / K as [B, S, H, D] int8 (any strides; D contiguous): box of 128 tokens x D of one head.
cudaError_t qk_map(CUtensorMap* map, const void* base, const TokenView& v) {
  const int64_t dims[4] = {v.D, v.S, v.H, v.B};
  const int64_t strides[4] = {1, v.stride_s, v.stride_h, v.stride_b};
  const uint32_t box[4] = {uint32_t(v.D), 128, 1, 1};
  return encode_tensor_map(map, base, ScalarType::Int8, 4, dims, strides, box,
                           v.D == 128 ? TmaSwizzle::B128 : TmaSwizzle::B64);
}

template <int D>
cudaError_t launch(const MhaInt8Fp8Params& p, cudaStream_t stream) {
  CUtensorMap tq, tk, tv;
  cudaError_t err = qk_map(&tq, p.q, p.q_view);
  if (err == cudaSuccess) err = qk_map(&tk, p.k, p.k_view);
  if (err == cudaSuccess) {
    const int64_t dims[3] = {p.sk_pad, D, p.k_view.B * p.k_view.H};
    const int64_t strides[3] = {1, p.sk_pad, D * p.sk_pad};
    const uint32_t box[3] = {kBlockN, D, 1};
    err = encode_tensor_map(&tv, p.vt, ScalarType::UInt8, 3, dims, strides, box, TmaSwizzle::B128);
  }
  if (err != cudaSuccess) return err;
  const int smem = Smem<D>::kBytes;
  err = cudaFuncSetAttribute(mha_int8_x_fp8_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (err != cudaSuccess) return err;
  const dim3 grid(unsigned(ceil_div(p.q_view.S, kBlockM)), unsigned(p.q_view.H), unsigned(p.q_view.B));
  mha_int8_x_fp8_kernel<D><<<grid, 384, smem, stream>>>(tq, tk, tv, p);
  return last_launch_error();
}

}  // namespace
}  // namespace sm90a

cudaError_t mha_int8_x_fp8_fwd(const MhaInt8Fp8Params& p, cudaStream_t stream) {
  const TokenView &q = p.q_view, &k = p.k_view;
  if (q.D != k.D || (q.D != 64 && q.D != 128) || k.H == 0 || q.H % k.H != 0 || p.sk_pad % 128 != 0 ||
      p.sk_pad < k.S)
    return cudaErrorNotSupported;
  if (q.B * q.H * q.S == 0) return cudaSuccess;
  if (q.B > 65535 || q.H > 65535) return cudaErrorNotSupported;
  return q.D == 128 ? sm90a::launch<128>(p, stream) : sm90a::launch<64>(p, stream);
}

}  // namespace ac4k
