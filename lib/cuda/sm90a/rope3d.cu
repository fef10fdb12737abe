// rope3d for sm90a: Wan 2.x's 3D rotary embedding (ac4k_kernel.reference.rope3d), memory-bound.
// One CTA per token: it reads the token's grid sizes once, derives the (frame, row, column)
// position, and its threads walk the H * D/8 16-byte chunks of the token, rotating four pairs per
// chunk by float32 products with the complex64 table (the reference rotates in complex128; the
// float32 result rounds to within one ulp of it in bf16 / fp16).
#include <cassert>
#include <cuda_runtime.h>

#include "ac4k_kernel/ops.h"
#include "common/math.cuh"
#include "common/utils.cuh"

namespace ac4k {
namespace sm90a {
namespace {

constexpr int kThreads = 128;

template <typename T>
__device__ __forceinline__ uint32_t pack2(float a, float b);
template <>
__device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float a, float b) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(a, b);
  return *reinterpret_cast<const uint32_t*>(&v);
}
template <>
__device__ __forceinline__ uint32_t pack2<__half>(float a, float b) {
  const __half2 v = __floats2half2_rn(a, b);
  return *reinterpret_cast<const uint32_t*>(&v);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) rope3d_kernel(const Rope3dParams p) {
  const TokenView &xv = p.xv, &ov = p.ov;
  const int64_t b = blockIdx.x / xv.S, s = blockIdx.x % xv.S;
  const int64_t f = p.grid_sizes[3 * b], gh = p.grid_sizes[3 * b + 1], gw = p.grid_sizes[3 * b + 2];
  // Checked here because grid_sizes lives on the GPU (no host sync): a failed assert stops the
  // kernel with its message, and the next synchronizing call raises cudaErrorAssert.
  assert(f >= 0 && gh >= 0 && gw >= 0 && "rope3d: grid_sizes has a negative size");
  assert(f * gh * gw <= xv.S && "rope3d: grid_sizes covers more tokens than x has");
  assert(f <= p.max_pos && gh <= p.max_pos && gw <= p.max_pos && "rope3d: grid_sizes exceeds the freqs table");
  const T* x = static_cast<const T*>(p.x) + b * xv.stride_b + s * xv.stride_s;
  T* out = static_cast<T*>(p.out) + b * ov.stride_b + s * ov.stride_s;
  const int chunks_per_head = int(xv.D / 8);
  const int chunks = int(xv.H) * chunks_per_head;
  const bool rotate = s < f * gh * gw;
  const int64_t pf = rotate ? s / (gh * gw) : 0, ph = rotate ? (s / gw) % gh : 0, pw = rotate ? s % gw : 0;
  const int64_t c = xv.D / 2;
  const float2* table = reinterpret_cast<const float2*>(p.table);
  for (int i = threadIdx.x; i < chunks; i += kThreads) {
    const int h = i / chunks_per_head, d0 = (i % chunks_per_head) * 8;
    const uint4 u = *reinterpret_cast<const uint4*>(x + h * xv.stride_h + d0);
    uint4 w = u;
    if (rotate) {
      float v[8];
      unpack8<T>(u, v);
      uint32_t r[4];
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const int pair = d0 / 2 + k;
        const int64_t pos = pair < p.split0 ? pf : (pair < p.split1 ? ph : pw);
        const float2 m = table[pos * c + pair];
        r[k] = pack2<T>(v[2 * k] * m.x - v[2 * k + 1] * m.y, v[2 * k] * m.y + v[2 * k + 1] * m.x);
      }
      w = make_uint4(r[0], r[1], r[2], r[3]);
    }
    *reinterpret_cast<uint4*>(out + h * ov.stride_h + d0) = w;
  }
}

template <typename T>
cudaError_t launch(const Rope3dParams& p, cudaStream_t stream) {
  const int64_t tokens = p.xv.B * p.xv.S;
  if (tokens == 0 || p.xv.H == 0) return cudaSuccess;
  if (tokens > 0x7fffffffLL) return cudaErrorInvalidConfiguration;
  rope3d_kernel<T><<<unsigned(tokens), kThreads, 0, stream>>>(p);
  return last_launch_error();
}

}  // namespace
}  // namespace sm90a

cudaError_t rope3d(const Rope3dParams& p, cudaStream_t stream) {
  const TokenView &xv = p.xv, &ov = p.ov;
  if (xv.D % 8 != 0 || !is_aligned(p.x, 16) || !is_aligned(p.out, 16) || xv.stride_b % 8 || xv.stride_s % 8 ||
      xv.stride_h % 8 || ov.stride_b % 8 || ov.stride_s % 8 || ov.stride_h % 8)
    return cudaErrorNotSupported;
  switch (p.dtype) {
    case ScalarType::BFloat16: return sm90a::launch<__nv_bfloat16>(p, stream);
    case ScalarType::Float16: return sm90a::launch<__half>(p, stream);
    default: return cudaErrorNotSupported;
  }
}

}  // namespace ac4k
