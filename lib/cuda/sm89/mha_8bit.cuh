// The 8-bit attention kernels for sm89 (Ada; consumer Blackwell runs the same code): the
// SageAttention2 recipe of ac4k_kernel.reference.attention_int8_fp8 (QkFmt = Int8Format) and
// attention_fp8 (Fp8Format) on mma.sync.
//
// CTA: 4 warps x 16 query rows = 64 rows of one (b, h); keys in blocks of 128 (the reference's
// P_BLOCK, so each block's P is taken against the same running max as there).
//   Q    loaded by each warp (16 rows, 16-byte loads), quantized in registers per 16 rows (the
//        reference's quantize(q, "per_block", 16)), staged in shared memory and kept as mma A
//        fragments for the whole loop (ldmatrix).
//   K, V one shared buffer each, filled by cp.async: V(n) lands while S(n) = Q K(n)^T and the
//        softmax run, K(n+1) while P V(n) runs. Rows are padded by 16 bytes, so the ldmatrix
//        phases (8 rows of 16 bytes) hit 32 different banks.
//   S    mma.sync m16n8k32 INT8 (s32, exact) or E4M3 (f32, chains of 64 products started from zero
//        and added in FP32), 16 n-tiles of 8 keys a warp.
//   P    online softmax in FP32, log2 domain: scores scaled by q_scale * k_scale * sm_scale * log2e,
//        row max over the block and the quad, p = 2^(x - m + log2 448) in [0, 448] -> E4M3. The
//        thread's score registers are the PV A fragment directly: the permuted V^T slots
//        (types.h) put key 2t, 2t+1, 8+2t, 9+2t of a 16-group at slots 4t .. 4t+3.
//   PV   mma.sync m16n8k32 E4M3 with f32 accumulators; the 4 mmas of a block start from zero and
//        the sum is added into the FP32 output accumulator (the recipe's FP32 promotion: the fp8
//        mma accumulates at reduced precision). The row sums l come from the same mma against
//        a B fragment of ones, i.e. they sum the E4M3-rounded P, as the reference does.
//   out  o * v_scale / l in the input dtype; lse = (m + log2 l - log2 448) * ln 2 (of the smoothed-K
//        scores; the Python layer adds the smoothing back).
#pragma once

#include <cuda_runtime.h>

#include <type_traits>

#include "ac4k_kernel/ops.h"
#include "common/math.cuh"
#include "common/quant_format.cuh"
#include "common/utils.cuh"
#include "sm89/mma.cuh"

namespace ac4k {
namespace sm89 {

constexpr int kBlockM = 64;   // query rows per CTA
constexpr int kBlockN = 128;  // keys per block
constexpr int kWarps = 4;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLog2P = 8.807354922057604f;  // log2(448)
constexpr uint32_t kE4m3Ones = 0x38383838u;   // four E4M3 1.0

template <int D>
struct Tiles {
  static constexpr int kQKPitch = D + 16;        // bytes per Q / K row
  static constexpr int kVPitch = kBlockN + 16;   // bytes per V^T row (one channel)
  uint8_t q[kBlockM * kQKPitch];
  uint8_t k[kBlockN * kQKPitch];
  uint8_t v[D * kVPitch];
};

template <typename QkFmt>
using QkAcc = std::conditional_t<std::is_same_v<QkFmt, Fp8Format>, float, int32_t>;

// K block n0.. (128 keys x D bytes; keys past Sk read as zeros) and V^T slots n0.. (D x 128).
template <int D>
__device__ __forceinline__ void load_k(Tiles<D>& t, const int8_t* kb, int64_t stride_s, int64_t n0, int64_t Sk) {
  constexpr int kChunks = D / 16;  // per key
#pragma unroll 1  // unrolled, the per-chunk addresses stay live across the main loop (spills)
  for (int i = threadIdx.x; i < kBlockN * kChunks; i += kWarps * 32) {
    const int r = i / kChunks, c = i % kChunks;
    const bool in = n0 + r < Sk;
    cp_async_16(t.k + r * Tiles<D>::kQKPitch + 16 * c, in ? kb + (n0 + r) * stride_s + 16 * c : kb, in);
  }
}
template <int D>
__device__ __forceinline__ void load_v(Tiles<D>& t, const uint8_t* vb, int64_t sk_pad, int64_t n0) {
  constexpr int kChunks = kBlockN / 16;  // per channel
#pragma unroll 1
  for (int i = threadIdx.x; i < D * kChunks; i += kWarps * 32) {
    const int r = i / kChunks, c = i % kChunks;
    cp_async_16(t.v + r * Tiles<D>::kVPitch + 16 * c, vb + r * sk_pad + n0 + 16 * c, true);
  }
}

// One softmax step on the 16 x 128 scores of this warp. s[j][e]: n-tile j (keys 8j..8j+7), row
// g + 8 (e / 2), key 8j + 2 (lane % 4) + e % 2. c[h]: dequantization * log2e for key half h (one
// K scale per 64 keys). kMask: keys >= key_end or (causal) key > diag + row offset are hidden.
template <bool kMask, typename Acc>
__device__ __forceinline__ void softmax_block(const Acc (&s)[16][4], uint32_t (&pa)[4][4], const float (&c)[2],
                                              float (&m)[2], float (&alpha)[2], int key_end, int diag0) {
  const int tq = threadIdx.x % 4, g = (threadIdx.x % 32) / 4;
  float x[16][4];
#pragma unroll
  for (int j = 0; j < 16; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      x[j][e] = float(s[j][e]) * c[j / 8];
      if (kMask) {
        const int key = 8 * j + 2 * tq + (e % 2);
        if (key >= key_end || key > diag0 + g + 8 * (e / 2)) x[j][e] = -INFINITY;
      }
    }
  }
  float mo[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float mx = m[r];
#pragma unroll
    for (int j = 0; j < 16; ++j) mx = fmaxf(mx, fmaxf(x[j][2 * r], x[j][2 * r + 1]));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    const float m_use = mx == -INFINITY ? 0.f : mx;  // nothing visible yet: p = 0, alpha irrelevant
    alpha[r] = ex2(m[r] - m_use);
    mo[r] = m_use - kLog2P;
    m[r] = mx;
  }
#pragma unroll
  for (int j = 0; j < 16; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) x[j][e] = ex2(x[j][e] - mo[e / 2]);  // -inf -> 0
  }
#pragma unroll
  for (int kc = 0; kc < 4; ++kc) {  // keys 32 kc .. 32 kc + 31 = n-tiles 4 kc .. 4 kc + 3
    const int j = 4 * kc;
    pa[kc][0] = e4m3x2(x[j][0], x[j][1]) | (e4m3x2(x[j + 1][0], x[j + 1][1]) << 16);
    pa[kc][1] = e4m3x2(x[j][2], x[j][3]) | (e4m3x2(x[j + 1][2], x[j + 1][3]) << 16);
    pa[kc][2] = e4m3x2(x[j + 2][0], x[j + 2][1]) | (e4m3x2(x[j + 3][0], x[j + 3][1]) << 16);
    pa[kc][3] = e4m3x2(x[j + 2][2], x[j + 2][3]) | (e4m3x2(x[j + 3][2], x[j + 3][3]) << 16);
  }
}

template <typename T, int D, typename QkFmt>
__global__ void __launch_bounds__(kWarps * 32) mha_8bit_kernel(const __grid_constant__ Mha8bitParams p) {
  using Acc = QkAcc<QkFmt>;
  constexpr bool kFp8 = std::is_same_v<QkFmt, Fp8Format>;
  constexpr int kQP = Tiles<D>::kQKPitch, kVP = Tiles<D>::kVPitch;
  __shared__ __align__(128) Tiles<D> t;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tq = lane % 4;
  const TokenView &qv = p.q_view, &kv = p.k_view, &ov = p.o_view;
  const int64_t b = blockIdx.z, h = blockIdx.y, hk = h / (qv.H / kv.H);
  const int64_t m0 = int64_t(blockIdx.x) * kBlockM;
  const int64_t Sq = qv.S, Sk = kv.S;
  const int64_t bhk = b * kv.H + hk;
  const int8_t* kb = p.k + b * kv.stride_b + hk * kv.stride_h;
  const uint8_t* vb = p.vt + bhk * D * p.sk_pad;
  const float* ks = p.k_scale + bhk * ceil_div(Sk, 64);
  const int n_kblk = int(ceil_div(Sk, 64));

  // Keys this CTA needs: all, or (causal, bottom-right) up to its last row's diagonal.
  const int64_t shift = Sk - Sq;
  int64_t n_end = Sk;
  if (p.causal) n_end = max(int64_t(0), min(Sk, min(m0 + kBlockM, Sq) - 1 + shift + 1));
  const int n_blocks = int(ceil_div(n_end, kBlockN));
  if (n_blocks > 0) {
    load_k<D>(t, kb, kv.stride_s, 0, Sk);
    cp_async_commit();
    load_v<D>(t, vb, p.sk_pad, 0);
    cp_async_commit();
  }

  // Q: this warp's 16 rows, quantized per 16 rows while K and V load.
  float q_scale;
  {
    constexpr int kChunks = D / 8, kPer = 16 * kChunks / 32;
    const T* qb = static_cast<const T*>(p.q) + b * qv.stride_b + h * qv.stride_h;
    const int64_t row0 = m0 + warp * 16;
    float x[kPer][8];
    float amax = 0.f;
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const int i = lane + 32 * j;
      const int64_t row = row0 + i / kChunks;
      const uint4 u = row < Sq ? *reinterpret_cast<const uint4*>(qb + row * qv.stride_s + 8 * (i % kChunks))
                               : make_uint4(0, 0, 0, 0);
      unpack8<T>(u, x[j]);
#pragma unroll
      for (int e = 0; e < 8; ++e) amax = absmax_acc(amax, x[j][e]);
    }
    amax = group_max<32>(amax);
    const float inv = recip_scale(QkFmt::kMax, amax);
    q_scale = __fdiv_rn(amax, QkFmt::kMax);
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const int i = lane + 32 * j;
      *reinterpret_cast<uint2*>(t.q + (warp * 16 + i / kChunks) * kQP + 8 * (i % kChunks)) =
          pack8_uniform<QkFmt>(x[j], inv);
    }
  }
  // Q's A fragments are read again from shared memory for every key block (4 ldmatrix a block):
  // kept in registers through the softmax and PV they cost the D = 128 kernel its last spills.
  const uint32_t q_lane = smem_addr(t.q + (warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * kQP + (lane >> 4) * 16);

  const float qk_scale = q_scale * p.sm_scale * kLog2e;
  float o[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  // This warp's first row and this thread's first score row (the second is 8 below); query row i
  // sees key j <= i + shift.
  const int64_t row_w = m0 + warp * 16, row_g = row_w + g;
  // ldmatrix row addresses: lanes 8i.. give matrix i = (32-byte chunk i / 2, 16-byte half i % 2).
  const int lrow = lane & 7, lcol = (lane >> 3) * 16;
  const uint32_t k_lane = smem_addr(t.k + lrow * kQP + lcol), v_lane = smem_addr(t.v + lrow * kVP + lcol);

  for (int nb = 0; nb < n_blocks; ++nb) {
    const int64_t n0 = int64_t(nb) * kBlockN;
    cp_async_wait<1>();
    __syncthreads();  // K(nb) is in shared memory
    uint32_t qf[D / 32][4];
#pragma unroll
    for (int kc = 0; kc < D / 32; ++kc) ldmatrix_x4(qf[kc], q_lane + 32 * kc);  // (written by this warp)
    Acc s[16][4];
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      s[j][0] = s[j][1] = s[j][2] = s[j][3] = Acc(0);
#pragma unroll
      for (int kp = 0; kp < D / 64; ++kp) {
        uint32_t bf[4];
        ldmatrix_x4(bf, k_lane + 8 * j * kQP + 64 * kp);
        if constexpr (kFp8) {
          // 64 products a chain from zero, added in FP32 (as PV's promotion, at a finer step).
          float t0[4] = {0.f, 0.f, 0.f, 0.f};
          mma_e4m3(t0, qf[2 * kp], bf[0], bf[1]);
          mma_e4m3(t0, qf[2 * kp + 1], bf[2], bf[3]);
#pragma unroll
          for (int e = 0; e < 4; ++e) s[j][e] += t0[e];
        } else {
          mma_s8(s[j], qf[2 * kp], bf[0], bf[1]);
          mma_s8(s[j], qf[2 * kp + 1], bf[2], bf[3]);
        }
      }
    }
    __syncthreads();  // every warp is done with K(nb)
    if (nb + 1 < n_blocks) load_k<D>(t, kb, kv.stride_s, n0 + kBlockN, Sk);
    cp_async_commit();

    const int kb0 = int(n0 / 64);
    const float c[2] = {qk_scale * ks[kb0], kb0 + 1 < n_kblk ? qk_scale * ks[kb0 + 1] : 0.f};
    uint32_t pa[4][4];
    float alpha[2];
    const int key_end = int(min(int64_t(kBlockN), Sk - n0));
    const int64_t diag = row_w + shift - n0;  // key offset <= diag + (row - row_w) is visible
    const bool need_mask = key_end < kBlockN || (p.causal && diag < kBlockN - 1);
    const int diag0 = p.causal ? int(max(min(diag, int64_t(kBlockN)), int64_t(-2 * kBlockN))) : kBlockN;
    if (need_mask) {
      softmax_block<true>(s, pa, c, m, alpha, key_end, diag0);
    } else {
      softmax_block<false>(s, pa, c, m, alpha, key_end, diag0);
    }
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      o[n][0] *= alpha[0];
      o[n][1] *= alpha[0];
      o[n][2] *= alpha[1];
      o[n][3] *= alpha[1];
    }
    // Row sums of the E4M3 P, 32 keys an mma, each added in FP32.
#pragma unroll
    for (int kc = 0; kc < 4; ++kc) {
      float ls[4] = {0.f, 0.f, 0.f, 0.f};
      mma_e4m3(ls, pa[kc], kE4m3Ones, kE4m3Ones);
      l[0] = l[0] * (kc == 0 ? alpha[0] : 1.f) + ls[0];
      l[1] = l[1] * (kc == 0 ? alpha[1] : 1.f) + ls[2];
    }

    cp_async_wait<1>();
    __syncthreads();  // V(nb) is in shared memory
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      float acc[4] = {0.f, 0.f, 0.f, 0.f};  // this block's 128 keys, then promoted to FP32
#pragma unroll
      for (int kp = 0; kp < 2; ++kp) {
        uint32_t bf[4];
        ldmatrix_x4(bf, v_lane + 8 * n * kVP + 64 * kp);
        mma_e4m3(acc, pa[2 * kp], bf[0], bf[1]);
        mma_e4m3(acc, pa[2 * kp + 1], bf[2], bf[3]);
      }
#pragma unroll
      for (int e = 0; e < 4; ++e) o[n][e] += acc[e];
    }
    __syncthreads();  // every warp is done with V(nb)
    if (nb + 1 < n_blocks) load_v<D>(t, vb, p.sk_pad, n0 + kBlockN);
    cp_async_commit();
  }
  cp_async_wait<0>();

  // Output: o * v_scale / l (0 for rows that saw no key).
  T* obase = static_cast<T*>(p.o) + b * ov.stride_b + h * ov.stride_h;
  const float* vs = p.v_scale + bhk * D;
  float rl[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) rl[r] = l[r] > 0.f ? 1.f / l[r] : 0.f;
#pragma unroll
  for (int n = 0; n < D / 8; ++n) {
    const float2 sc = *reinterpret_cast<const float2*>(vs + 8 * n + 2 * tq);
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int64_t row = row_g + 8 * r;
      if (row < Sq)
        *reinterpret_cast<uint32_t*>(obase + row * ov.stride_s + 8 * n + 2 * tq) =
            pack2<T>(o[n][2 * r] * sc.x * rl[r], o[n][2 * r + 1] * sc.y * rl[r]);
    }
  }
  if (p.lse != nullptr && tq == 0) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int64_t row = row_g + 8 * r;
      if (row < Sq) p.lse[(b * qv.H + h) * Sq + row] = l[r] > 0.f ? (m[r] + __log2f(l[r]) - kLog2P) / kLog2e : -INFINITY;
    }
  }
}

template <typename T, int D, typename QkFmt>
cudaError_t launch(const Mha8bitParams& p, cudaStream_t stream) {
  const dim3 grid(unsigned(ceil_div(p.q_view.S, kBlockM)), unsigned(p.q_view.H), unsigned(p.q_view.B));
  mha_8bit_kernel<T, D, QkFmt><<<grid, kWarps * 32, 0, stream>>>(p);
  return last_launch_error();
}

template <typename QkFmt>
cudaError_t mha_8bit_fwd(const Mha8bitParams& p, cudaStream_t stream) {
  const TokenView &qv = p.q_view, &kv = p.k_view, &ov = p.o_view;
  if (qv.B * qv.H * qv.S == 0) return cudaSuccess;
  const bool bf16 = p.q_dtype == ScalarType::BFloat16;
  // p.q_scale (a quantized q) is sm90a's alone.
  if (p.q_scale != nullptr || (!bf16 && p.q_dtype != ScalarType::Float16) || (qv.D != 64 && qv.D != 128) ||
      kv.D != qv.D || kv.B != qv.B || kv.H < 1 || qv.H % kv.H != 0 || kv.S < 1 || ov.S != qv.S || ov.H != qv.H ||
      ov.B != qv.B)
    return cudaErrorNotSupported;
  // 16-byte loads of q rows, cp.async of k rows and vt runs; 4-byte stores of o.
  if (!rows_aligned_16b(p.q, qv) || !is_aligned(p.k, 16) || kv.stride_s % 16 || kv.stride_h % 16 ||
      kv.stride_b % 16 || !is_aligned(p.vt, 16) || p.sk_pad % kBlockN != 0 || p.sk_pad < kv.S ||
      !is_aligned(p.o, 4) || ov.stride_s % 2 || ov.stride_h % 2 || ov.stride_b % 2 || !is_aligned(p.v_scale, 8))
    return cudaErrorNotSupported;
  if (qv.H > 65535 || qv.B > 65535 || ceil_div(qv.S, kBlockM) > 0x7fffffffLL || kv.S >= (int64_t(1) << 31))
    return cudaErrorNotSupported;
  if (qv.D == 128)
    return bf16 ? launch<__nv_bfloat16, 128, QkFmt>(p, stream) : launch<__half, 128, QkFmt>(p, stream);
  return bf16 ? launch<__nv_bfloat16, 64, QkFmt>(p, stream) : launch<__half, 64, QkFmt>(p, stream);
}

}  // namespace sm89
}  // namespace ac4k
