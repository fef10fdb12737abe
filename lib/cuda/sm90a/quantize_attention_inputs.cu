// The attention-input quantizers of mha_int8_x_fp8_fwd for sm90a (layouts: types.h).
//   K: mean over tokens per (b, h, d) (a column-sum pass), then INT8 per 128-token block of
//      k - mean in one pass (the per_block kernel of quantize_8bit.cuh with `smooth`).
//   V: FP8 per channel: a column-absmax pass, then one pass that reads 128-token tiles through
//      shared memory and writes them transposed (tokens contiguous, permuted in 16-groups, padded
//      with zeros to a multiple of 128), the layout the PV wgmma reads as its K-major B operand.
#include <cuda_runtime.h>

#include "sm90a/quantize_8bit.cuh"

namespace ac4k {
namespace sm90a {

__global__ void mean_from_sum_kernel(float* sums, int64_t n, float inv_count) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) sums[i] = __fmul_rn(sums[i], inv_count);
}

template <typename T>
cudaError_t k_smooth(const QuantizeKSmoothParams& p, cudaStream_t stream) {
  const TokenView& kv = p.k.xv;
  cudaError_t err;
  switch (row_threads(kv.D)) {
    case 4: err = channel_reduce<T, 4, true>(kv, p.k.x, p.k_mean, stream); break;
    case 8: err = channel_reduce<T, 8, true>(kv, p.k.x, p.k_mean, stream); break;
    case 16: err = channel_reduce<T, 16, true>(kv, p.k.x, p.k_mean, stream); break;
    default: err = channel_reduce<T, 32, true>(kv, p.k.x, p.k_mean, stream); break;
  }
  if (err != cudaSuccess) return err;
  const int64_t n = kv.B * kv.H * kv.D;
  if (kv.S > 0) {
    mean_from_sum_kernel<<<unsigned(ceil_div(n, 256)), 256, 0, stream>>>(p.k_mean, n, 1.f / float(kv.S));
  }
  QuantizeParams q = p.k;
  q.smooth = p.k_mean;
  return dispatch_tokens<T, Int8Format>(q, stream);
}

// Slot of token t (0..15) inside its 16-group of vt; see types.h.
__device__ __forceinline__ int v_slot(int t) { return 2 * (t / 8) + 4 * ((t / 2) % 4) + (t % 2); }

// One CTA per (b, h, 128-token tile): 128 x D tokens in shared memory, then each thread writes
// 64 permuted slots of one channel row of vt. scales holds the channel amax on entry.
template <typename T, int D>
__global__ void __launch_bounds__(256) v_transpose_kernel(const QuantizeVTransposedParams p) {
  __shared__ T tile[128][D + 8];  // +8 elements: rows start on different banks
  const TokenView& vv = p.vv;
  const int64_t bh = blockIdx.y, b = bh / vv.H, h = bh % vv.H;
  const int64_t s0 = int64_t(blockIdx.x) * 128;
  const T* src = static_cast<const T*>(p.v) + b * vv.stride_b + h * vv.stride_h;
  constexpr int kChunks = D / 8;  // 16-byte chunks per token
  for (int i = threadIdx.x; i < 128 * kChunks; i += 256) {
    const int t = i / kChunks, c = i % kChunks;
    uint4 u = make_uint4(0, 0, 0, 0);
    if (s0 + t < vv.S) u = ldg_stream(src + (s0 + t) * vv.stride_s + c * 8);
    *reinterpret_cast<uint4*>(&tile[t][c * 8]) = u;
  }
  __syncthreads();
  constexpr int kSlotsPerThread = 128 * D / 256;  // 64 for D = 128, 32 for D = 64
  const int d = threadIdx.x / (128 / kSlotsPerThread);
  const int slot0 = (threadIdx.x % (128 / kSlotsPerThread)) * kSlotsPerThread;
  const float inv = recip_scale(448.f, p.v_scale[bh * D + d]);
  uint8_t* dst = p.vt + (bh * D + d) * p.s_pad + s0 + slot0;
#pragma unroll
  for (int j = 0; j < kSlotsPerThread; j += 16) {
    // The 16 slots of one group come from the 16 tokens of that group, permuted.
    float f[16];
#pragma unroll
    for (int t = 0; t < 16; ++t) f[v_slot(t)] = __fmul_rn(InputTraits<T>::to_float(tile[slot0 + j + t][d]), inv);
    uint4 w;
    w.x = e4m3x2(f[0], f[1]) | (e4m3x2(f[2], f[3]) << 16);
    w.y = e4m3x2(f[4], f[5]) | (e4m3x2(f[6], f[7]) << 16);
    w.z = e4m3x2(f[8], f[9]) | (e4m3x2(f[10], f[11]) << 16);
    w.w = e4m3x2(f[12], f[13]) | (e4m3x2(f[14], f[15]) << 16);
    *reinterpret_cast<uint4*>(dst + j) = w;
  }
}

template <typename T, int D>
cudaError_t v_transposed(const QuantizeVTransposedParams& p, cudaStream_t stream) {
  constexpr int RT = D / 8;
  cudaError_t err = channel_reduce<T, RT, false>(p.vv, p.v, p.v_scale, stream);
  if (err != cudaSuccess) return err;
  const dim3 grid(unsigned(p.s_pad / 128), unsigned(p.vv.B * p.vv.H));
  if (grid.x > 0) v_transpose_kernel<T, D><<<grid, 256, 0, stream>>>(p);
  const int64_t n = p.vv.B * p.vv.H * D;
  amax_to_scale_kernel<Fp8Format><<<unsigned(ceil_div(n, 256)), 256, 0, stream>>>(p.v_scale, n);
  return last_launch_error();
}

}  // namespace sm90a

cudaError_t quantize_k_smooth_int8(const QuantizeKSmoothParams& p, cudaStream_t stream) {
  if (p.k.granularity != Granularity::PerBlock) return cudaErrorNotSupported;
  if (p.k.xv.B * p.k.xv.H == 0) return cudaSuccess;
  switch (p.k.x_dtype) {
    case ScalarType::BFloat16: return sm90a::k_smooth<__nv_bfloat16>(p, stream);
    case ScalarType::Float16: return sm90a::k_smooth<__half>(p, stream);
    default: return cudaErrorNotSupported;
  }
}

cudaError_t quantize_v_fp8_transposed(const QuantizeVTransposedParams& p, cudaStream_t stream) {
  const TokenView& vv = p.vv;
  if (vv.B * vv.H == 0) return cudaSuccess;
  if ((vv.D != 64 && vv.D != 128) || p.s_pad % 128 != 0 || p.s_pad < vv.S || !is_aligned(p.v, 16) ||
      vv.stride_b % 8 || vv.stride_s % 8 || vv.stride_h % 8)
    return cudaErrorNotSupported;
  const bool bf16 = p.v_dtype == ScalarType::BFloat16;
  if (!bf16 && p.v_dtype != ScalarType::Float16) return cudaErrorNotSupported;
  if (vv.D == 128) return bf16 ? sm90a::v_transposed<__nv_bfloat16, 128>(p, stream) : sm90a::v_transposed<__half, 128>(p, stream);
  return bf16 ? sm90a::v_transposed<__nv_bfloat16, 64>(p, stream) : sm90a::v_transposed<__half, 64>(p, stream);
}

}  // namespace ac4k
