// Wan 3D RoPE math shared by rope3d and the kernels that fuse it (quantize_attention_kv's K): the
// multiplier table read as given, the grid sizes and their checks, and a float32 rotation whose
// result is within one ulp of the fp64 formulation (see rope3d.cu), the same bits wherever it runs.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "ac4k_kernel/types.h"
#include "common/math.cuh"
#include "common/utils.cuh"

namespace ac4k {

// (a + ib)(c + is) with c = m.x + m.z, s = m.y + m.w (hi, lo parts). Explicit _rn intrinsics:
// contracting a product into the next add would break the error recovery.
template <typename T>
__device__ __forceinline__ uint32_t rotate_pair_bits(float a, float b, float4 m) {
  const float ac = __fmul_rn(a, m.x), ac_e = __fmaf_rn(a, m.x, -ac);
  const float bs = __fmul_rn(b, m.y), bs_e = __fmaf_rn(b, m.y, -bs);
  const float as = __fmul_rn(a, m.y), as_e = __fmaf_rn(a, m.y, -as);
  const float bc = __fmul_rn(b, m.x), bc_e = __fmaf_rn(b, m.x, -bc);
  // ac - bs and as + bc are exact when they cancel (Sterbenz); else their error is 2^-24 of the result.
  const float re_lo = __fadd_rn(__fsub_rn(ac_e, bs_e), __fmaf_rn(a, m.z, -__fmul_rn(b, m.w)));
  const float im_lo = __fadd_rn(__fadd_rn(as_e, bc_e), __fmaf_rn(a, m.w, __fmul_rn(b, m.z)));
  const float re = __fadd_rn(__fsub_rn(ac, bs), re_lo), im = __fadd_rn(__fadd_rn(as, bc), im_lo);
  return pack2<T>(re, im);
}

// freqs[pos, pair] as (cos hi, sin hi, cos lo, sin lo).
__device__ __forceinline__ float4 load_mult(const RopeFreqs& p, int64_t pos, int pair) {
  if (p.table == RopeTable::Complex128) {
    const double2 z = static_cast<const double2*>(p.freqs)[pos * p.freqs_ld + pair];
    const float c = __double2float_rn(z.x), s = __double2float_rn(z.y);
    return make_float4(c, s, __double2float_rn(z.x - double(c)), __double2float_rn(z.y - double(s)));
  }
  if (p.table == RopeTable::Complex64) {
    const float2 z = static_cast<const float2*>(p.freqs)[pos * p.freqs_ld + pair];
    return make_float4(z.x, z.y, 0.f, 0.f);
  }
  if (p.table == RopeTable::HiLo) return static_cast<const float4*>(p.freqs)[pos * p.freqs_ld + pair];
  return make_float4(static_cast<const float*>(p.freqs)[pos * p.freqs_ld + pair], p.sin[pos * p.sin_ld + pair], 0.f,
                     0.f);
}

// The whole table as HiLo (rope_table): converting complex128 per chunk costs six FP64-pipe
// instructions a pair, which made the fused K pass 1.8x slower than rope3d + the plain pass.
template <int kUnused = 0>
__global__ void rope_table_kernel(const __grid_constant__ RopeFreqs p, int pairs, float4* out) {
  const int64_t n = p.max_pos * pairs;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = load_mult(p, i / pairs, int(i % pairs));
}

// The whole table's launch (each arch's rope_table).
inline cudaError_t launch_rope_table(const RopeFreqs& p, int pairs, void* out, cudaStream_t stream) {
  const int64_t n = p.max_pos * pairs;
  if (n == 0) return cudaSuccess;
  const int64_t blocks = (n + 255) / 256;
  rope_table_kernel<<<unsigned(blocks < 1024 ? blocks : 1024), 256, 0, stream>>>(p, pairs, static_cast<float4*>(out));
  return cudaGetLastError();
}

// rope3d's views: x and out of the same shape, D a multiple of 8, 16-byte aligned rows.
inline bool rope3d_views_ok(const Rope3dParams& p) {
  const TokenView &xv = p.xv, &ov = p.ov;
  return xv.D % 8 == 0 && xv.D >= 8 && ov.B == xv.B && ov.S == xv.S && ov.H == xv.H && ov.D == xv.D &&
         rows_aligned_16b(p.x, xv) && rows_aligned_16b(p.out, ov);
}

// Position of token s on pair `pair`'s axis (frame pairs [0, split0), height [split0, split1), width).
__device__ __forceinline__ uint32_t rope_pos(const RopeFreqs& p, int pair, uint32_t s, uint32_t hw, uint32_t gh,
                                             uint32_t gw) {
  return pair < p.split0 ? s / hw : pair < p.split1 ? (s / gw) % gh : s % gw;
}

// Stops the kernel with a message (not compiled out by NDEBUG); the next synchronizing CUDA call
// raises "device-side assert triggered".
__device__ __forceinline__ void rope_fail(const char* msg) { __assert_fail(msg, __FILE__, __LINE__, "rope3d"); }

// Sample b's grid (f, h, w) as given (GPU or host copy), and whether it is valid for x's S tokens.
__device__ __forceinline__ int rope_grid_read(const RopeFreqs& p, int64_t b, int64_t S, int64_t& f, int64_t& gh,
                                              int64_t& gw) {
  if (p.grid_sizes != nullptr) {
    f = p.grid_sizes[3 * b];
    gh = p.grid_sizes[3 * b + 1];
    gw = p.grid_sizes[3 * b + 2];
  } else {
    f = p.host_grid[3 * b];
    gh = p.host_grid[3 * b + 1];
    gw = p.host_grid[3 * b + 2];
  }
  if (f < 0 || gh < 0 || gw < 0) return 1;
  if (f > p.max_pos || gh > p.max_pos || gw > p.max_pos) return 2;
  if (f * gh > S || f * gh * gw > S) return 3;  // each factor <= max_pos < 2^31: no overflow
  return 0;
}

// Sample b's grid; GPU grid sizes are checked here, where they are (no host sync), host ones by
// the binding. Returns false (after a device assert) on a bad grid; the conditions are the same for
// a whole CTA, so it leaves together. (Kernels with wgmma cannot call this: a call in them makes
// ptxas serialize every wgmma; they use rope_grid_read and trap.)
__device__ __forceinline__ bool rope_grid(const RopeFreqs& p, int64_t b, int64_t S, int64_t& f, int64_t& gh,
                                          int64_t& gw) {
  switch (rope_grid_read(p, b, S, f, gh, gw)) {
    case 1: rope_fail("rope3d: grid_sizes has a negative size"); return false;
    case 2: rope_fail("rope3d: grid_sizes needs more positions than freqs has (a size > max_pos)"); return false;
    case 3: rope_fail("rope3d: grid_sizes covers more tokens than x has (f*h*w > S)"); return false;
    default: return true;
  }
}

// A token's multipliers in shared memory (rope3d, quantize_attention_q): pair 4q + k at slot
// k * quarter + q (quarter = pairs / 4 = 16-byte chunks a head), so the lanes on consecutive chunks q
// read consecutive float4s. In pair order each 8-lane phase of those reads fell on two bank groups
// (16-way conflicts in ncu, 75% of the shared wavefronts; session 23).
__device__ __forceinline__ uint32_t mult_slot(uint32_t pair, uint32_t quarter) { return (pair & 3) * quarter + (pair >> 2); }

// 8 elements (pairs pair0 .. pair0 + 3) of token s, rotated. kHiLo: the table is HiLo (the fused
// ops get theirs from rope_table), one float4 load a pair; else any form through load_mult. The
// token's axis positions take two divisions once (per pair they were a third of the fused K pass's
// instructions).
template <typename T, bool kHiLo = true>
__device__ __forceinline__ uint4 rope8(const uint4& u, const RopeFreqs& p, uint32_t s, int pair0, uint32_t gh,
                                       uint32_t gw) {
  const uint32_t sw = s / gw, pf = sw / gh, ph = sw - pf * gh, pw = s - sw * gw;
  float a[8];
  unpack8<T>(u, a);
  float4 m[4];  // all four loads in flight before the math
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    const int pair = pair0 + e;
    const uint32_t pos = pair < p.split0 ? pf : pair < p.split1 ? ph : pw;
    m[e] = kHiLo ? static_cast<const float4*>(p.freqs)[int64_t(pos) * p.freqs_ld + pair] : load_mult(p, pos, pair);
  }
  uint32_t w[4];
#pragma unroll
  for (int e = 0; e < 4; ++e) w[e] = rotate_pair_bits<T>(a[2 * e], a[2 * e + 1], m[e]);
  return make_uint4(w[0], w[1], w[2], w[3]);
}

}  // namespace ac4k
