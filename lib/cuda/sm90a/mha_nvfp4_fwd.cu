// mha_nvfp4_fwd for sm90a: attention with Q, K, P and V in NVFP4, the numerics of the Blackwell
// (SageAttention3-style) kernel; ac4k_kernel.reference.attention_nvfp4. Hopper has no FP4 tensor
// cores, so the operands are decoded exactly to FP16 (sm90a/nvfp4_decode.cuh) and fed to f16 wgmma
// with FP32 accumulation: the products and sums are the Blackwell kernel's up to summation order.
//
// Two kernels. decode_kernel (sm90a/nvfp4_decode.cuh, shared with gemm_nvfp4) turns Q, K and V^T
// into FP16 (e2m1 * block scale, exact; the global scales stay apart) in the op's scratch, once: decoding inside the attention kernel repeated it
// for every 128-row query block (Sq / 128 times); on the H100 at S = 32760 that version ran at 311
// TFLOPS, this one at 466 with the pass included (docs/perf-notes.md). The
// attention kernel is then sm90a/mha_16bit.cuh's (mha_bf16_fwd's schedule: TMA producer warpgroup,
// two consumer warpgroups with overlap + ping-pong at D = 128) on FP16 operands, with the policy:
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
#include "sm90a/mha_16bit.cuh"
#include "sm90a/nvfp4_decode.cuh"
#include "sm90a/tma.cuh"

namespace ac4k {
namespace sm90a {
namespace {

using namespace mha16;

// P's quantization (reference: quantize_nvfp4(p, global_scale=1/448)).
constexpr float kPGs = 1.f / 448.f;
constexpr float kPInvGs = 1.f / kPGs;

#ifdef AC4K_NVFP4_SCHEDULE
template <int D>
constexpr int kDefaultSchedule = AC4K_NVFP4_SCHEDULE;
#else
template <int D>
constexpr int kDefaultSchedule = D == 128 ? kOverlapPingPong : kOverlap;  // mha_bf16_fwd's choice
#endif

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
    update_row_max(x, c, m[r], alpha[r], neg_m[r]);
  }
  exp_and_sum<kMask>(s, c, neg_m, alpha, l);
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

template <typename T>
struct Nvfp4Policy {
  using Params = MhaNvfp4Params;
  using In = __half;
  using Out = T;
  static constexpr int kBlockN = mha16::kBlockN;
  static constexpr bool kVt = true;
  static constexpr bool kQuadInKey0 = false;
  struct PState {
    float amax[kBlockN / 16][2];
  };
  __device__ static float score_scale(const Params& p) { return p.sm_scale * kLog2e * (*p.q_gs) * (*p.k_gs); }
  __device__ static float out_scale(const Params& p) { return (*p.v_gs) * (32.f / 448.f); }  // P's 2^-5 and 1/448
  template <bool kMask>
  __device__ static void softmax(float (&s)[kBlockN / 2], PState& ps, float (&m)[2], float (&l)[2], float (&alpha)[2],
                                 float c, int quad, int key_end, int diag) {
    softmax_block<kMask>(s, ps.amax, m, l, alpha, c, 2 * quad, key_end, diag);
  }
  __device__ static void convert(const float (&s)[kBlockN / 2], const PState& ps, uint32_t (&pa)[kBlockN / 16][4]) {
    quantize_p(s, ps.amax, pa);
  }
};

template <typename T, int D, int kSchedule>
__global__ void __launch_bounds__(kThreads, 1)
mha_nvfp4_kernel(const __grid_constant__ CUtensorMap tm_q, const __grid_constant__ CUtensorMap tm_k,
                 const __grid_constant__ CUtensorMap tm_v, const MhaNvfp4Params p) {
  mha_16bit_body<Nvfp4Policy<T>, D, kSchedule>(tm_q, tm_k, tm_v, p);
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
  constexpr int smem = Layout<D, kBlockN>::kBytes;
  err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (err != cudaSuccess) return err;
  const dim3 grid(mha16_grid(q, p.causal));
  if (grid.x == 0) return cudaErrorNotSupported;
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
