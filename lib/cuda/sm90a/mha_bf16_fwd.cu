// mha_bf16_fwd for sm90a: unquantized attention on 16-bit tensor cores (bf16, or fp16 when the
// inputs are fp16), FP32 online softmax and accumulation; ac4k_kernel.reference.attention_bf16.
//
// Unlike the 8-bit kernels (mha_8bit.cuh) this one is tensor-bound: bf16 wgmma gives 8 scores a
// clock an SM at D = 128, the exp unit 16. The kernel is sm90a/mha_16bit.cuh's (FlashAttention-3's
// warp-specialized schedule) with the policy below: Q, K, V as given, read by TMA; the softmax
// takes the row max of the raw scores (quad shuffles), one FFMA (sm_scale * log2(e) folded in) +
// ex2 a score, thread-local row sums reduced once at the end; P converted in registers to the
// input type. Schedule (kDefaultSchedule<D>, chosen by measurement: docs/perf-notes.md,
// mha_bf16_fwd): overlap + ping-pong at D = 128, overlap at D = 64.
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <initializer_list>
#include <cuda/ptx>
#include <type_traits>

#include "ac4k_kernel/ops.h"
#include "ac4k_kernel/types.h"
#include "common/math.cuh"
#include "common/utils.cuh"
#include "sm90a/mha_16bit.cuh"
#include "sm90a/tma.cuh"

namespace ac4k {
namespace sm90a {
namespace {

using namespace mha16;

// Measured on the H200 (session 8): at D = 128 overlap+pingpong is the fastest or tied at every S,
// at D = 64 overlap beats it by 4%. -DAC4K_BF16_SCHEDULE=0..3 builds another one for experiments.
#ifdef AC4K_BF16_SCHEDULE
template <int D>
constexpr int kDefaultSchedule = AC4K_BF16_SCHEDULE;
#else
template <int D>
constexpr int kDefaultSchedule = D == 128 ? kOverlapPingPong : kOverlap;
#endif

// Keys a step (BN): 176 at D = 128 when Sk >= kLongKeys (FlashAttention-3's tile: the per-step work
// of the rescale, the row-max shuffles and the barriers spread over 37% more scores; the 2 x 88 KB
// stages fit with O staged in Q's tile), else 128. H100: 176 gave +2-7% at Sk = 4096-32760 (session
// 16; session 20: +2, +5, +9, +5%) and lost 9% at Sk = 512 (three steps instead of four, the pipeline
// never fills), hence the threshold.
constexpr int64_t kLongKeys = 2048;

// Online softmax of one key block in the log2 domain, in place (NS scores a thread: NS / 2 keys of
// each of its two rows): s[i] (the raw score of row r = (i/2)%2 -> row0 + 8r, key key0 + 8(i/4) +
// i%2, key0 = block start + 2*quad) becomes p = 2^(s c - m), c = sm_scale * log2(e) >= 0, m the
// running row max of s c. alpha: the factor that rescales the previous O and l. l: this thread's
// partial row sums (its NS / 2 columns), reduced over the quad at the end. Masking (kMask): key
// offset 8(i/4) + i%2 >= key_end (past Sk) or, for row r, > diag + 8r (causal) -> p = 0.
template <bool kMask, int NS>
__device__ __forceinline__ void softmax_block(float (&s)[NS], float (&m)[2], float (&l)[2],
                                              float (&alpha)[2], float c, int key_end, int diag) {
  if (kMask) {
#pragma unroll
    for (int i = 0; i < NS; ++i) {
      const int key = 8 * (i / 4) + (i % 2);
      if (key >= key_end || key > diag + 8 * ((i / 2) % 2)) s[i] = -INFINITY;
    }
  }
  // Row maxima in four independent chains a row (short dependency chains).
  float mx[2][4];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
#pragma unroll
    for (int k = 0; k < 4; ++k) mx[r][k] = -INFINITY;
  }
#pragma unroll
  for (int i = 0; i < NS; ++i) mx[(i / 2) % 2][(i / 4) % 4] = fmaxf(mx[(i / 2) % 2][(i / 4) % 4], s[i]);
  float neg_m[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float x = fmaxf(fmaxf(mx[r][0], mx[r][1]), fmaxf(mx[r][2], mx[r][3]));
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
    update_row_max(x, c, m[r], alpha[r], neg_m[r]);
  }
  exp_and_sum<kMask>(s, c, neg_m, alpha, l);
}

// P (f32 in s) -> the k16 A fragments of P V: fragment kk holds columns 16kk..16kk+15, i.e. the
// accumulator entries 8kk..8kk+7 packed in pairs.
template <typename T, int NS>
__device__ __forceinline__ void convert_p(const float (&s)[NS], uint32_t (&pa)[NS / 8][4]) {
#pragma unroll
  for (int kk = 0; kk < NS / 8; ++kk) {
#pragma unroll
    for (int j = 0; j < 4; ++j) pa[kk][j] = pack2<T>(s[8 * kk + 2 * j], s[8 * kk + 2 * j + 1]);
  }
}

template <typename T, int BN>
struct Bf16Policy {
  using Params = MhaBf16Params;
  using In = T;
  using Out = T;
  static constexpr int kBlockN = BN;
  static constexpr bool kVt = false;
  static constexpr bool kQuadInKey0 = true;
  struct PState {};
  __device__ static float score_scale(const Params& p) { return p.sm_scale * kLog2e; }
  __device__ static float out_scale(const Params&) { return 1.f; }
  template <bool kMask>
  __device__ static void softmax(float (&s)[BN / 2], PState&, float (&m)[2], float (&l)[2], float (&alpha)[2],
                                 float c, int, int key_end, int diag) {
    softmax_block<kMask>(s, m, l, alpha, c, key_end, diag);
  }
  __device__ static void convert(const float (&s)[BN / 2], const PState&, uint32_t (&pa)[BN / 16][4]) {
    convert_p<T>(s, pa);
  }
};

template <typename T, int D, int kSchedule, int BN>
__global__ void __launch_bounds__(kThreads, 1)
mha_bf16_kernel(const __grid_constant__ CUtensorMap tm_q, const __grid_constant__ CUtensorMap tm_k,
                const __grid_constant__ CUtensorMap tm_v, const MhaBf16Params p) {
  static_assert(BN == 128 || BN == 176, "wgmma.cuh has m64n128 and m64n176 QK only");
  mha_16bit_body<Bf16Policy<T, BN>, D, kSchedule>(tm_q, tm_k, tm_v, p);
}

// [B, S, H, D] of q, k or v as a 4-D tensor map with boxes of `rows` rows of one 64-column panel. A
// dim of size one never moves, so its stride is replaced by a valid one (the driver checks them all).
cudaError_t encode_view(CUtensorMap* map, const void* base, ScalarType dtype, const TokenView& v, int rows) {
  const int64_t dims[4] = {v.D, v.S, v.H, v.B};
  const int64_t strides[4] = {1, v.S == 1 ? v.D : v.stride_s, v.H == 1 ? v.D : v.stride_h,
                              v.B == 1 ? v.D : v.stride_b};
  const uint32_t box[4] = {64, uint32_t(rows), 1, 1};
  return encode_tensor_map(map, base, dtype, 4, dims, strides, box, TmaSwizzle::B128);
}

template <typename T, int D, int kSchedule, int BN>
cudaError_t launch(const MhaBf16Params& p, cudaStream_t stream) {
  CUtensorMap tq, tk, tv;
  cudaError_t err = encode_view(&tq, p.q, p.dtype, p.q_view, kBlockM);
  if (err == cudaSuccess) err = encode_view(&tk, p.k, p.dtype, p.k_view, BN);
  if (err == cudaSuccess) err = encode_view(&tv, p.v, p.dtype, p.v_view, BN);
  if (err != cudaSuccess) return err;
  auto kernel = mha_bf16_kernel<T, D, kSchedule, BN>;
  constexpr int smem = Layout<D, BN>::kBytes;
  err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (err != cudaSuccess) return err;
  const dim3 grid(mha16_grid(p.q_view, p.causal));
  if (grid.x == 0) return cudaErrorNotSupported;
  kernel<<<grid, kThreads, smem, stream>>>(tq, tk, tv, p);
  return last_launch_error();
}

}  // namespace
}  // namespace sm90a

cudaError_t mha_bf16_fwd(const MhaBf16Params& params, cudaStream_t stream) {
  // A dim of size one never moves, whatever its stride: zero it (alignment checks, TMA maps).
  MhaBf16Params p = params;
  for (TokenView* t : {&p.q_view, &p.k_view, &p.v_view, &p.o_view}) {
    if (t->B == 1) t->stride_b = 0;
    if (t->S == 1) t->stride_s = 0;
    if (t->H == 1) t->stride_h = 0;
  }
  const TokenView &q = p.q_view, &k = p.k_view, &v = p.v_view;
  const bool bf16 = p.dtype == ScalarType::BFloat16;
  if ((!bf16 && p.dtype != ScalarType::Float16) || q.D != k.D || v.D != k.D || (q.D != 64 && q.D != 128) ||
      k.H == 0 || q.H % k.H != 0 || k.B != q.B || v.B != k.B || v.S != k.S || v.H != k.H || k.S < 1 ||
      !(p.sm_scale >= 0.f) || !rows_aligned_16b(p.q, q) || !rows_aligned_16b(p.k, k) || !rows_aligned_16b(p.v, v) ||
      !rows_aligned_16b(p.o, p.o_view))
    return cudaErrorNotSupported;
  if (q.B * q.H * q.S == 0) return cudaSuccess;
  if (q.B > 65535 || q.H > 65535 || k.S > (int64_t(1) << 31) - 256 ||
      q.S > (int64_t(1) << 31) - sm90a::kBlockM) return cudaErrorNotSupported;
  using sm90a::kDefaultSchedule;
  if (q.D == 128) {
    constexpr int S = kDefaultSchedule<128>;
    if (k.S >= sm90a::kLongKeys)
      return bf16 ? sm90a::launch<__nv_bfloat16, 128, S, 176>(p, stream) : sm90a::launch<__half, 128, S, 176>(p, stream);
    return bf16 ? sm90a::launch<__nv_bfloat16, 128, S, 128>(p, stream) : sm90a::launch<__half, 128, S, 128>(p, stream);
  }
  return bf16 ? sm90a::launch<__nv_bfloat16, 64, kDefaultSchedule<64>, 128>(p, stream)
              : sm90a::launch<__half, 64, kDefaultSchedule<64>, 128>(p, stream);
}

}  // namespace ac4k
