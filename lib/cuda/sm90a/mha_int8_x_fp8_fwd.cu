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
constexpr int kBlockN = 128;  // keys per step
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
  const int64_t n_qblk = ceil_div(qv.S, 16), n_kblk = ceil_div(kv.S, 64);
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

  for (int64_t n = 0; n < n_blocks; ++n) {
    const int s = int(n % kStages);
    mbar_wait(full + s, uint32_t((n / kStages) & 1));

    int32_t acc[kBlockN / 2];
    const uint64_t dk = qk_desc<D>(sk + s * Smem<D>::kK);
    wgmma_fence_operand(acc);
    wgmma_fence();
#pragma unroll
    for (int k = 0; k < D / 32; ++k) wgmma_s8_ss(acc, smem_desc_advance(dq, 32 * k), smem_desc_advance(dk, 32 * k), k > 0);
    wgmma_commit();
    wgmma_wait<0>();
    wgmma_fence_operand(acc);

    // Scores in the log2 domain; masked keys (past Sk, or causal) are -inf.
    const float c[2] = {c_q * k_scale[2 * n], 2 * n + 1 < n_kblk ? c_q * k_scale[2 * n + 1] : 0.f};
    const int64_t key0 = n * kBlockN + 2 * quad;
    const bool need_mask = (n + 1) * kBlockN > kv.S || (p.causal && (n + 1) * kBlockN - 1 > row0 - warp * 16 - lane / 4 + causal_shift);
    float sc[kBlockN / 2];
#pragma unroll
    for (int i = 0; i < kBlockN / 2; ++i) sc[i] = float(acc[i]) * c[i / 32];  // i < 32: keys 0..63
    if (need_mask) {
#pragma unroll
      for (int i = 0; i < kBlockN / 2; ++i) {
        const int64_t key = key0 + 8 * (i / 4) + (i % 2);
        const int64_t row = row0 + 8 * ((i / 2) % 2);
        if (key >= kv.S || (p.causal && key > row + causal_shift)) sc[i] = -INFINITY;
      }
    }
    float mx[2] = {m[0], m[1]};
#pragma unroll
    for (int i = 0; i < kBlockN / 2; ++i) mx[(i / 2) % 2] = fmaxf(mx[(i / 2) % 2], sc[i]);
    float alpha[2], mo[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
      const float m_use = mx[r] == -INFINITY ? 0.f : mx[r];  // fully masked so far: p = 0
      alpha[r] = ex2(m[r] - m_use);
      mo[r] = m_use - kLog2P;
      m[r] = mx[r];
    }
    float ps[2] = {0.f, 0.f};
#pragma unroll
    for (int i = 0; i < kBlockN / 2; ++i) {
      sc[i] = ex2(sc[i] - mo[(i / 2) % 2]);
      ps[(i / 2) % 2] += sc[i];
    }
    l[0] = l[0] * alpha[0] + ps[0];
    l[1] = l[1] * alpha[1] + ps[1];

    // P as E4M3 A fragments, one per k32 step (keys 32k..32k+31): the thread's scores at columns
    // 2q, 2q+1, 8+2q, 9+2q (+16) are exactly the permuted V^T slots 4q..4q+3 (+16).
    uint32_t pa[kBlockN / 32][4];
#pragma unroll
    for (int k = 0; k < kBlockN / 32; ++k) {
      const int i = 16 * k;
      pa[k][0] = e4m3x2(sc[i + 0], sc[i + 1]) | (e4m3x2(sc[i + 4], sc[i + 5]) << 16);
      pa[k][1] = e4m3x2(sc[i + 2], sc[i + 3]) | (e4m3x2(sc[i + 6], sc[i + 7]) << 16);
      pa[k][2] = e4m3x2(sc[i + 8], sc[i + 9]) | (e4m3x2(sc[i + 12], sc[i + 13]) << 16);
      pa[k][3] = e4m3x2(sc[i + 10], sc[i + 11]) | (e4m3x2(sc[i + 14], sc[i + 15]) << 16);
    }

    float ob[D / 2];
    const uint64_t dv = make_smem_desc_kmajor_sw128(sv + s * Smem<D>::kV);
    wgmma_fence_operand(ob);
    wgmma_fence();
#pragma unroll
    for (int k = 0; k < kBlockN / 32; ++k) wgmma_e4m3_rs(ob, pa[k], smem_desc_advance(dv, 32 * k), k > 0);
    wgmma_commit();
    wgmma_wait<0>();
    wgmma_fence_operand(ob);
    if (tid == 0) mbar_arrive(empty + s);  // this warpgroup is done with K and V of stage s

#pragma unroll
    for (int i = 0; i < D / 2; ++i) o[i] = fmaf(o[i], alpha[(i / 2) % 2], ob[i]);
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
