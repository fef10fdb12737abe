// quantize_int8 for sm90a: symmetric INT8, scale = amax/127 per group, round half to even.
// Bit-exact with ac4k_kernel.reference.quantize_int8.
//
// Per token: memory-bound (read 2 B + write 1 B per element). RT threads share one row, each
// holding NV chunks of 8 elements (one 16-byte load) in registers, so x is read exactly once.
#include <cuda_runtime.h>

#include "ac4k_kernel/ops.h"
#include "common/math.cuh"
#include "common/utils.cuh"

namespace ac4k {
namespace sm90a {

template <int RT>
__host__ __device__ constexpr int block_threads() { return RT > 256 ? RT : 256; }

// VEC: 8 contiguous elements per chunk via 16-byte loads; else 1 element per chunk (any cols).
template <typename T, int RT, int NV, bool VEC>
__global__ void __launch_bounds__(block_threads<RT>())
quantize_int8_per_token_kernel(const QuantizeParams p) {
  constexpr int kBlock = block_threads<RT>();
  constexpr int W = VEC ? 8 : 1;
  const int t = threadIdx.x % RT;
  const int64_t cols = p.cols;
  const int64_t row = int64_t(blockIdx.x) * (kBlock / RT) + threadIdx.x / RT;
  const bool active = row < p.rows;

  float v[NV][W];
  float amax = 0.f;
  const T* xr = static_cast<const T*>(p.x) + (active ? row_offset(p.x_rows, row) : 0);
#pragma unroll
  for (int c = 0; c < NV; ++c) {
    const int64_t e = (int64_t(c) * RT + t) * W;
    const bool in = active && e < cols;
    if constexpr (VEC) {
      if (in) {
        unpack8<T>(ldg_stream(xr + e), v[c]);
      } else {
#pragma unroll
        for (int i = 0; i < W; ++i) v[c][i] = 0.f;
      }
    } else {
      v[c][0] = in ? InputTraits<T>::to_float(xr[e]) : 0.f;
    }
#pragma unroll
    for (int i = 0; i < W; ++i) amax = absmax_acc(amax, v[c][i]);
  }
  if constexpr (RT <= 32) {
    amax = group_max<RT>(amax);
  } else {  // one row per block: warp maxima through shared memory
    __shared__ float warp_max[kBlock / 32];
    amax = group_max<32>(amax);
    if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32] = amax;
    __syncthreads();
#pragma unroll
    for (int w = 0; w < kBlock / 32; ++w) amax = fmaxf(amax, warp_max[w]);
  }
  if (!active) return;

  const float inv = recip_scale(127.f, amax);
  int8_t* qr = static_cast<int8_t*>(p.q) + row * cols;
#pragma unroll
  for (int c = 0; c < NV; ++c) {
    const int64_t e = (int64_t(c) * RT + t) * W;
    if (e >= cols) continue;
    if constexpr (VEC) {
      uint2 w;
      w.x = pack_s8x4(quant_int8(v[c][0], inv), quant_int8(v[c][1], inv), quant_int8(v[c][2], inv),
                      quant_int8(v[c][3], inv));
      w.y = pack_s8x4(quant_int8(v[c][4], inv), quant_int8(v[c][5], inv), quant_int8(v[c][6], inv),
                      quant_int8(v[c][7], inv));
      __stcs(reinterpret_cast<uint2*>(qr + e), w);
    } else {
      qr[e] = static_cast<int8_t>(quant_int8(v[c][0], inv));
    }
  }
  if (t == 0) p.scales[row] = __fdiv_rn(amax, 127.f);
}

template <typename T, int RT, int NV, bool VEC>
static cudaError_t launch(const QuantizeParams& p, cudaStream_t stream) {
  constexpr int kBlock = block_threads<RT>();
  const int64_t blocks = ceil_div(p.rows, kBlock / RT);
  if (blocks > 0x7fffffffLL) return cudaErrorInvalidConfiguration;
  quantize_int8_per_token_kernel<T, RT, NV, VEC><<<dim3(unsigned(blocks)), kBlock, 0, stream>>>(p);
  return last_launch_error();
}

// Picks threads-per-row and chunks-per-thread so that a row sits in registers (no spills:
// 1024 threads x 8 chunks would exceed the 64-register cap, so rows stop at 32768 elements).
template <typename T>
static cudaError_t dispatch_per_token(const QuantizeParams& p, cudaStream_t stream) {
  bool vec = p.cols % 8 == 0 && is_aligned(p.x, 16) && is_aligned(p.q, 8);
  for (int d = 0; d < p.x_rows.ndim; ++d) vec = vec && (p.x_rows.stride[d] % 8 == 0);
  if (vec) {
    const int64_t n = p.cols / 8;  // 16-byte chunks per row
    // One row per thread group: 2, 4 or 8 rows per thread measured slower (docs/perf-notes.md v1).
    if (n <= 4) return launch<T, 4, 1, true>(p, stream);
    if (n <= 8) return launch<T, 8, 1, true>(p, stream);
    if (n <= 16) return launch<T, 16, 1, true>(p, stream);
    if (n <= 32) return launch<T, 32, 1, true>(p, stream);
    if (n <= 64) return launch<T, 32, 2, true>(p, stream);
    if (n <= 128) return launch<T, 32, 4, true>(p, stream);
    if (n <= 512) return launch<T, 256, 2, true>(p, stream);
    if (n <= 1024) return launch<T, 256, 4, true>(p, stream);
    if (n <= 2048) return launch<T, 256, 8, true>(p, stream);
    if (n <= 4096) return launch<T, 1024, 4, true>(p, stream);
    return cudaErrorNotSupported;
  }
  const int64_t n = p.cols;
  if (n <= 32) return launch<T, 32, 1, false>(p, stream);
  if (n <= 128) return launch<T, 32, 4, false>(p, stream);
  if (n <= 1024) return launch<T, 256, 4, false>(p, stream);
  if (n <= 2048) return launch<T, 256, 8, false>(p, stream);
  if (n <= 8192) return launch<T, 1024, 8, false>(p, stream);
  return cudaErrorNotSupported;
}

}  // namespace sm90a

cudaError_t quantize_int8(const QuantizeParams& p, cudaStream_t stream) {
  if (p.granularity != Granularity::PerToken) return cudaErrorNotSupported;
  if (p.rows == 0) return cudaSuccess;
  switch (p.x_dtype) {
    case ScalarType::BFloat16: return sm90a::dispatch_per_token<__nv_bfloat16>(p, stream);
    case ScalarType::Float16: return sm90a::dispatch_per_token<__half>(p, stream);
    default: return cudaErrorNotSupported;
  }
}

}  // namespace ac4k
