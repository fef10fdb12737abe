// The 8-bit quantized formats (INT8, FP8 E4M3) as the quantizers of every arch write them:
// bit-exact with ac4k_kernel.reference.quantize_int8 / quantize_fp8 given the group's inverse scale.
#pragma once

#include <cstdint>
#include <type_traits>

#include "common/math.cuh"

namespace ac4k {

// pack8: 8 values, each times its inverse scale, to 8 bytes (first value in the low byte).
struct Int8Format {
  static constexpr float kMax = 127.f;
  __device__ __forceinline__ static uint2 pack8(const float (&v)[8], const float (&inv)[8]) {
    int32_t q[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) q[i] = quant_int8(v[i], inv[i]);
    return make_uint2(pack_s8x4(q[0], q[1], q[2], q[3]), pack_s8x4(q[4], q[5], q[6], q[7]));
  }
  __device__ __forceinline__ static uint8_t pack1(float v, float inv) { return uint8_t(quant_int8(v, inv)); }
};

struct Fp8Format {
  static constexpr float kMax = 448.f;
  __device__ __forceinline__ static uint2 pack8(const float (&v)[8], const float (&inv)[8]) {
    float s[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) s[i] = __fmul_rn(v[i], inv[i]);
    return make_uint2(e4m3x2(s[0], s[1]) | (e4m3x2(s[2], s[3]) << 16), e4m3x2(s[4], s[5]) | (e4m3x2(s[6], s[7]) << 16));
  }
  __device__ __forceinline__ static uint8_t pack1(float v, float inv) { return e4m3(__fmul_rn(v, inv)); }
};

// scales[i] = amax[i] / Fmt::kMax in place (the per-channel quantizers' second step).
template <typename Fmt>
__global__ void amax_to_scale_kernel(float* scales, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) scales[i] = __fdiv_rn(scales[i], Fmt::kMax);
}

// pack8 with one inverse scale inv = kMax / amax, every |v[i]| <= amax (each caller's amax is taken
// over its values). INT8 on sm90a: F2I.S8 rounds and saturates in one instruction, equal to
// quant_int8 there (|v * inv| < 127.5) while inv is finite; an infinite inv (a subnormal amax) takes
// quant_int8. Other arches keep quant_int8 until this path has run on them.
template <typename Fmt>
__device__ __forceinline__ uint2 pack8_uniform(const float (&v)[8], float inv) {
#ifdef AC4K_ARCH_SM90A
  constexpr bool kS8 = std::is_same_v<Fmt, Int8Format>;
#else
  constexpr bool kS8 = false;
#endif
  if constexpr (kS8) {
    if (inv <= 3.4028235e38f) {
      int32_t q[8];
#pragma unroll
      for (int i = 0; i < 8; ++i) q[i] = cvt_rni_sat_s8(__fmul_rn(v[i], inv));
      return make_uint2(pack_b8x4(q[0], q[1], q[2], q[3]), pack_b8x4(q[4], q[5], q[6], q[7]));
    }
  }
  const float invs[8] = {inv, inv, inv, inv, inv, inv, inv, inv};
  return Fmt::pack8(v, invs);
}

}  // namespace ac4k
