// Exact NVFP4 -> FP16 decode for sm90a (no FP4 tensor cores): gemm_nvfp4 and mha_nvfp4_fwd feed the
// decoded values to 16-bit wgmma / mma.sync. Every E2M1 value times its E4M3 block scale is exact in
// FP16 (at most 6 significant bits; |v| in [2^-10, 2688]; FP16 is normal from 2^-14 up to 65504). An
// E2M1 nibble s.e1.e0.m placed as the E4M3 byte s.00.e1e0m.00 is the same value times 2^-6
// (subnormals included: both formats' subnormal steps line up), one cvt.f16x2.e4m3x2 turns two of
// those into FP16, and one f16x2 multiply by (block scale * 2^6) finishes both values, exactly.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "ac4k_kernel/types.h"
#include "common/math.cuh"
#include "common/utils.cuh"

namespace ac4k {
namespace sm90a {

__device__ __forceinline__ uint32_t hmul2(uint32_t a, uint32_t b) {
  uint32_t r;
  asm("mul.rn.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  return r;
}

// E4M3 block scale byte -> f16x2 (s * 2^6, s * 2^6): exact (s * 64 <= 28672).
__device__ __forceinline__ uint32_t scale_f16x2(uint32_t byte) {
  return hmul2(e4m3x2_to_f16x2((byte & 0xffu) * 0x101u), 0x54005400u);  // 0x5400 = 64.0
}

// Eight E2M1 nibbles (n0 in bits 0-3) times the block scale -> four f16x2: (n0,n2) (n4,n6) (n1,n3) (n5,n7).
__device__ __forceinline__ void decode8(uint32_t w, uint32_t sf2, uint32_t* o) {
  const uint32_t lo = ((w << 4) & 0x80808080u) | ((w << 2) & 0x1C1C1C1Cu);  // E4M3 bytes of n0 n2 n4 n6
  const uint32_t hi = (w & 0x80808080u) | ((w >> 2) & 0x1C1C1C1Cu);          // n1 n3 n5 n7
  o[0] = hmul2(e4m3x2_to_f16x2(lo), sf2);
  o[1] = hmul2(e4m3x2_to_f16x2(lo >> 16), sf2);
  o[2] = hmul2(e4m3x2_to_f16x2(hi), sf2);
  o[3] = hmul2(e4m3x2_to_f16x2(hi >> 16), sf2);
}

// One 16-block (8 bytes) -> eight f16x2 pairs: nibbles (0,2) (4,6) (1,3) (5,7) (8,10) (12,14)
// (9,11) (13,15), i.e. written out in order the block's elements sit permuted as
// 0 2 4 6 1 3 5 7 | 8 10 12 14 9 11 13 15.
__device__ __forceinline__ void decode16(uint32_t w0, uint32_t w1, uint32_t sf_byte, uint32_t (&o)[8]) {
  const uint32_t sf2 = scale_f16x2(sf_byte);
  decode8(w0, sf2, o);
  decode8(w1, sf2, o + 4);
}

// ---- the decode pass (mha_nvfp4_fwd's Q, K, V^T; gemm_nvfp4's A and B from M > 64 on) ----
namespace {  // internal to each kernel file that includes this

// A packed NVFP4 tensor seen as [B, H, S rows, C columns] (element strides in bytes; scales the
// same with C / 16 a row), decoded to FP16 [B, H, S, C] contiguous.
struct DecodeView {
  const uint8_t* vals;
  const uint8_t* sf;
  TokenView v, s;  // D = C (columns)
  __half* out;
};

// One thread per 16-block: 8 packed bytes and a scale byte in, 32 bytes out, in natural order.
__global__ void __launch_bounds__(256) decode_kernel(const DecodeView d) {
  const int nblk = int(d.v.D / 16);
  const int64_t idx = int64_t(blockIdx.x) * 256 + threadIdx.x;
  if (idx >= d.v.S * nblk) return;
  const int64_t row = idx / nblk;
  const int c = int(idx - row * nblk);
  const int h = blockIdx.y, b = blockIdx.z;
  const uint2 w = *reinterpret_cast<const uint2*>(d.vals + b * d.v.stride_b + h * d.v.stride_h + row * d.v.stride_s + 8 * c);
  const uint32_t sf = d.sf[b * d.s.stride_b + h * d.s.stride_h + row * d.s.stride_s + c];
  uint32_t o[8];
  decode16(w.x, w.y, sf, o);
  // decode16's pairs (0,2) (4,6) (1,3) (5,7) | (8,10) ... -> (0,1) (2,3) ...
  uint4 lo, hi;
  lo.x = __byte_perm(o[0], o[2], 0x5410);
  lo.y = __byte_perm(o[0], o[2], 0x7632);
  lo.z = __byte_perm(o[1], o[3], 0x5410);
  lo.w = __byte_perm(o[1], o[3], 0x7632);
  hi.x = __byte_perm(o[4], o[6], 0x5410);
  hi.y = __byte_perm(o[4], o[6], 0x7632);
  hi.z = __byte_perm(o[5], o[7], 0x5410);
  hi.w = __byte_perm(o[5], o[7], 0x7632);
  uint4* dst = reinterpret_cast<uint4*>(d.out + ((int64_t(b) * d.v.H + h) * d.v.S + row) * d.v.D + 16 * c);
  dst[0] = lo;
  dst[1] = hi;
}

inline cudaError_t decode(const uint8_t* vals, const uint8_t* sf, const TokenView& v, const TokenView& s, __half* out,
                          cudaStream_t stream) {
  DecodeView d{vals, sf, v, s, out};
  const int64_t n = v.S * (v.D / 16);
  decode_kernel<<<dim3(unsigned(ceil_div(n, int64_t(256))), unsigned(v.H), unsigned(v.B)), 256, 0, stream>>>(d);
  return last_launch_error();
}

}  // namespace
}  // namespace sm90a
}  // namespace ac4k
