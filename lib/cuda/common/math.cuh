// Format and math helpers shared by every CUDA arch: loads of bf16/fp16 as float, the
// rounding rules of the quantized formats (bit-exact with ac4k_kernel.reference), reductions.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace ac4k {

template <typename T>
struct InputTraits;
template <>
struct InputTraits<__nv_bfloat16> {
  // bf16 is the top half of a float: one shift or mask an element (the intrinsic takes two for
  // the high half).
  __device__ __forceinline__ static float2 to_float2(uint32_t w) {
    return make_float2(__uint_as_float(w << 16), __uint_as_float(w & 0xffff0000u));
  }
  __device__ __forceinline__ static float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
};
template <>
struct InputTraits<__half> {
  __device__ __forceinline__ static float2 to_float2(uint32_t w) {
    return __half22float2(*reinterpret_cast<const __half2*>(&w));
  }
  __device__ __forceinline__ static float to_float(__half v) { return __half2float(v); }
};

// 8 consecutive 16-bit elements (one 16-byte load) as float.
template <typename T>
__device__ __forceinline__ void unpack8(const uint4& u, float (&f)[8]) {
  const float2 a = InputTraits<T>::to_float2(u.x), b = InputTraits<T>::to_float2(u.y);
  const float2 c = InputTraits<T>::to_float2(u.z), d = InputTraits<T>::to_float2(u.w);
  f[0] = a.x; f[1] = a.y; f[2] = b.x; f[3] = b.y; f[4] = c.x; f[5] = c.y; f[6] = d.x; f[7] = d.y;
}

// Streaming 16-byte load: data read once should not evict what others reuse.
__device__ __forceinline__ uint4 ldg_stream(const void* p) {
  return __ldcs(reinterpret_cast<const uint4*>(p));
}

// |x| max that ignores NaN (fmaxf returns the non-NaN operand), as the reference does.
__device__ __forceinline__ float absmax_acc(float acc, float x) { return fmaxf(acc, fabsf(x)); }

// absmax_acc on two packed 16-bit values a lane (acc's two halves kept apart), in their own type:
// one instruction for two elements, and exact (the conversion to float is monotonic; max.bf16x2 /
// max.f16x2 return the non-NaN operand too). absmax2_float: the float max of acc's halves.
template <typename T>
__device__ __forceinline__ uint32_t absmax2_acc(uint32_t acc, uint32_t w) {
  using T2 = std::conditional_t<std::is_same_v<T, __half>, __half2, __nv_bfloat162>;
  T2 a, x;
  memcpy(&a, &acc, 4);
  memcpy(&x, &w, 4);
  const T2 r = __hmax2(a, __habs2(x));
  uint32_t out;
  memcpy(&out, &r, 4);
  return out;
}
template <typename T>
__device__ __forceinline__ float absmax2_float(uint32_t acc) {
  const float2 f = InputTraits<T>::to_float2(acc);
  return fmaxf(f.x, f.y);
}

// qmax / amax, 0 for amax == 0; IEEE division (never build with --use_fast_math).
__device__ __forceinline__ float recip_scale(float qmax, float amax) {
  return amax > 0.f ? __fdiv_rn(qmax, amax) : 0.f;
}

// rint (half to even) with NaN -> 0 (cvt.rni), saturated to [-127, 127].
__device__ __forceinline__ int32_t quant_int8(float x, float inv) {
  const int32_t q = __float2int_rn(__fmul_rn(x, inv));
  return max(-127, min(127, q));
}

// rint (half to even) with NaN -> 0, saturated to [-128, 127], in one instruction (F2I.S8). Equal to
// quant_int8's product rounding whenever |x * inv| < 127.5, i.e. for |x| <= amax and a finite
// inv = 127 / amax; callers take quant_int8 where inv is infinite.
__device__ __forceinline__ int32_t cvt_rni_sat_s8(float y) {
  int32_t q;
  asm("cvt.rni.sat.s8.f32 %0, %1;" : "=r"(q) : "f"(y));
  return q;
}

// Low bytes of four sign-extended int8 values, a in the lowest byte (two byte permutes and a third).
__device__ __forceinline__ uint32_t pack_b8x4(int32_t a, int32_t b, int32_t c, int32_t d) {
  return __byte_perm(__byte_perm(a, b, 0x0040), __byte_perm(c, d, 0x0040), 0x5410);
}

// Two floats -> one 32-bit word of T (bf16 / fp16), round to nearest even, a in the low half.
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

// E4M3, round to nearest even, saturating to ±448 (cvt.rn.satfinite.e4m3x2.f32); NaN -> NaN.
__device__ __forceinline__ uint32_t e4m3x2(float lo, float hi) {
  return __nv_cvt_float2_to_fp8x2(make_float2(lo, hi), __NV_SATFINITE, __NV_E4M3);  // lo in the low byte
}
__device__ __forceinline__ uint8_t e4m3(float v) { return __nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3); }
__device__ __forceinline__ float e4m3_to_float(uint8_t b) {
  return __half2float(__half(__nv_cvt_fp8_to_halfraw(b, __NV_E4M3)));
}

// Two E4M3 bytes (lo in bits 0-7, hi in bits 8-15 of `pair`) -> f16x2, exact (cvt.rn.f16x2.e4m3x2,
// sm_89+); lo lands in the low half.
__device__ __forceinline__ uint32_t e4m3x2_to_f16x2(uint32_t pair) {
  uint32_t r;
  asm("{\n.reg .b16 lo, hi;\nmov.b32 {lo, hi}, %1;\ncvt.rn.f16x2.e4m3x2 %0, lo;\n}" : "=r"(r) : "r"(pair));
  return r;
}

// E2M1 code (reference.e2m1_encode: round half to even, saturate to ±6, sign bit for v < 0,
// NaN -> 0) plus 0x4B000000: the bits of the float 2^23 + code. sm_90 has no e2m1 conversion and
// the comparison chain costs ~17 instructions an element, mostly on the half-rate ALU pipe; this
// costs 8, 7 of them on the FMA pipe. With a = |v|, the saturating ramps u1 = sat(a/2),
// u2 = sat(a/2 - 1), u3 = sat(a/2 - 2) (each exact, NaN -> 0) give 4 u1 + 2 u2 + u3 = the code
// before rounding on each of [0, 2], [2, 4], [4, 6] (steps 0.5, 1, 2 of the E2M1 grid), and adding
// them one by one to 2^23 (ulp 1) rounds each step half to even; the partial sum is even (0 or 4
// or 6) whenever the next ramp is non-zero, so the ties go as the reference's. Checked equal to
// the comparison chain for all 2^32 floats.
__device__ __forceinline__ float set_lt0(float v) {  // 1.0f if v < 0 (not for -0 or NaN), else 0.0f
  float r;
  asm("set.lt.f32.f32 %0, %1, 0f00000000;" : "=f"(r) : "f"(v));
  return r;
}
__device__ __forceinline__ uint32_t e2m1_biased(float v) {
  const float a = fabsf(v);
  float acc = __fmaf_rn(set_lt0(v), 8.f, 0x1p23f);
  acc = __fmaf_rn(__saturatef(__fmul_rn(a, 0.5f)), 4.f, acc);
  acc = __fmaf_rn(__saturatef(__fmaf_rn(a, 0.5f, -1.f)), 2.f, acc);
  acc = __fadd_rn(__saturatef(__fmaf_rn(a, 0.5f, -2.f)), acc);
  return __float_as_uint(acc);
}
__device__ __forceinline__ uint32_t e2m1(float v) { return e2m1_biased(v) - 0x4B000000u; }

// Eight E2M1 codes (e2m1_biased of each element) packed two a byte, the even element in the low
// nibble. The 0x4B000000 biases fall out of the low bits: 16 * b1 + b0 has the byte in bits 0-7.
__device__ __forceinline__ uint32_t pack_e2m1x8(const uint32_t (&b)[8]) {
  const uint32_t p0 = b[1] * 16u + b[0], p1 = b[3] * 16u + b[2], p2 = b[5] * 16u + b[4], p3 = b[7] * 16u + b[6];
  return __byte_perm(p1 * 256u + p0, p3 * 256u + p2, 0x5410);
}

// Non-negative floats order like their bit patterns, so atomicMax on the bits is a float max.
__device__ __forceinline__ void atomic_max_nonneg(float* addr, float v) {
  atomicMax(reinterpret_cast<unsigned int*>(addr), __float_as_uint(v));
}

__device__ __forceinline__ uint32_t pack_s8x4(int32_t a, int32_t b, int32_t c, int32_t d) {
  return (uint32_t(a) & 0xffu) | ((uint32_t(b) & 0xffu) << 8) | ((uint32_t(c) & 0xffu) << 16) |
         (uint32_t(d) << 24);
}

// Butterfly max over groups of WIDTH consecutive lanes (WIDTH a power of two <= 32).
template <int WIDTH>
__device__ __forceinline__ float group_max(float v) {
#pragma unroll
  for (int o = WIDTH / 2; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

}  // namespace ac4k
