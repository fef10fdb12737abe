// rope3d for sm89: Wan 2.x's 3D rotary embedding (ac4k_kernel.reference.rope3d), memory-bound.
// Each thread rotates 16-byte chunks (8 elements, 4 pairs) of x with the shared float32 rotation of
// common/rope.cuh (within one ulp of the fp64 formulation, the same bits as every arch); the
// multipliers are read from the table (L2-resident) per pair. A CTA covers a contiguous range of one
// sample's chunks, so the sample's grid is read and checked once per CTA. Tokens past f*h*w are
// copied bit for bit.
#include <cuda_runtime.h>

#include "ac4k_kernel/ops.h"
#include "common/math.cuh"
#include "common/rope.cuh"
#include "common/utils.cuh"

namespace ac4k {
namespace sm89 {
namespace {

constexpr int kThreads = 256;
constexpr int kPerThread = 4;  // chunks per thread: four 16-byte loads in flight

template <typename T>
__global__ void __launch_bounds__(kThreads) rope_kernel(const __grid_constant__ Rope3dParams p, FastDiv per_token,
                                                       FastDiv per_head) {
  const TokenView &xv = p.xv, &ov = p.ov;
  const int64_t b = blockIdx.y;
  int64_t f, gh, gw;
  if (!rope_grid(p, b, xv.S, f, gh, gw)) return;  // the whole CTA leaves (device assert raised)
  const uint32_t n_rot = uint32_t(f * gh * gw);
  const uint32_t n = uint32_t(xv.S) * per_token.d;  // chunks of the sample (< 2^31, checked)
  const uint32_t base = blockIdx.x * (kThreads * kPerThread) + threadIdx.x;
  uint4 u[kPerThread];
  uint32_t s[kPerThread], hh[kPerThread], c[kPerThread];
#pragma unroll
  for (int j = 0; j < kPerThread; ++j) {  // all loads first
    const uint32_t i = base + j * kThreads;
    s[j] = per_token.div(i);
    const uint32_t rem = i - s[j] * per_token.d;
    hh[j] = per_head.div(rem);
    c[j] = rem - hh[j] * per_head.d;
    if (i < n)
      u[j] = *reinterpret_cast<const uint4*>(static_cast<const T*>(p.x) + b * xv.stride_b + s[j] * xv.stride_s +
                                             hh[j] * xv.stride_h + c[j] * 8);
  }
#pragma unroll
  for (int j = 0; j < kPerThread; ++j) {
    const uint32_t i = base + j * kThreads;
    if (i >= n) continue;
    const uint4 w = s[j] < n_rot ? rope8<T, false>(u[j], p, s[j], int(c[j] * 4), uint32_t(gh), uint32_t(gw)) : u[j];
    *reinterpret_cast<uint4*>(static_cast<T*>(p.out) + b * ov.stride_b + s[j] * ov.stride_s + hh[j] * ov.stride_h +
                              c[j] * 8) = w;
  }
}

template <typename T>
cudaError_t launch(const Rope3dParams& p, cudaStream_t stream) {
  const TokenView& xv = p.xv;
  if (xv.B == 0 || xv.S == 0 || xv.H == 0) return cudaSuccess;
  const int64_t per_token = xv.H * (xv.D / 8);
  const int64_t n = xv.S * per_token;
  if (n + int64_t(kThreads) * kPerThread >= (int64_t(1) << 31) || xv.B > 65535) return cudaErrorNotSupported;
  if (p.grid_sizes == nullptr && xv.B > RopeFreqs::kMaxHostGrid) return cudaErrorNotSupported;
  const dim3 grid(unsigned(ceil_div(n, kThreads * kPerThread)), unsigned(xv.B));
  rope_kernel<T><<<grid, kThreads, 0, stream>>>(p, FastDiv(uint32_t(per_token)), FastDiv(uint32_t(xv.D / 8)));
  return last_launch_error();
}

}  // namespace
}  // namespace sm89

cudaError_t rope3d(const Rope3dParams& p, cudaStream_t stream) {
  if (!rope3d_views_ok(p)) return cudaErrorNotSupported;
  switch (p.dtype) {
    case ScalarType::BFloat16: return sm89::launch<__nv_bfloat16>(p, stream);
    case ScalarType::Float16: return sm89::launch<__half>(p, stream);
    default: return cudaErrorNotSupported;
  }
}

cudaError_t rope_table(const RopeFreqs& p, int pairs, void* out, cudaStream_t stream) {
  return launch_rope_table(p, pairs, out, stream);
}

}  // namespace ac4k
