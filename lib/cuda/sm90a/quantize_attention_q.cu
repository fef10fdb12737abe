// quantize_attention_q for sm90a: attention Q (bf16 / fp16) to INT8 or E4M3 per 16-token block of
// one head (bit-exact with quantize_int8 / quantize_fp8(q, "per_block", 16)), rotated by rope3d on
// the way when asked (bit-exact with quantizing rope3d(q)): the 8-bit attention kernels' quantized-Q
// input. Memory-bound: q is read once, 1 byte an element written.
//
// Shaped like rope3d, not like the attention kernel: a CTA takes 16 tokens of one sample across all
// heads, so each token's multipliers are built once in shared memory for every head (the rotations
// fused where one CTA holds one head re-read 16 bytes of table a pair for each of the 40 heads, and
// lost to rope3d + a plain pass: docs/perf-notes.md). A pair of warps owns one head's 16 x D block
// at a time, 8 tokens each; each warp issues its next head's loads chunk by chunk as it rotates, and
// the block's scale is the two warps' shuffle maxima met in shared memory. At <= 64 registers four
// CTAs share an SM (8% faster than a warp a block at ~100 registers and two CTAs; session 23).
#include <cuda_runtime.h>

#include "ac4k_kernel/ops.h"
#include "common/math.cuh"
#include "common/quant_format.cuh"
#include "common/rope.cuh"
#include "common/utils.cuh"
#include "sm90a/barrier.cuh"

namespace ac4k {
namespace sm90a {
namespace {

constexpr int kTokens = 16;  // tokens a scale (the attention kernel's 16 query rows a warp)
constexpr int kWarps = 8;
constexpr int kPairs = kWarps / 2;  // a pair of warps shares a head's 16-token block, 8 tokens each

// Half a block per warp keeps ~64 registers, so four CTAs (32 warps) share an SM: twice the warps
// of a block per warp (~116 registers), to hide the rotation's arithmetic behind the loads.
template <typename T, int D, typename Fmt, bool kRope>
__global__ void __launch_bounds__(kWarps * 32, 4)
quantize_attention_q_kernel(const __grid_constant__ QuantizeAttentionQParams p) {
  extern __shared__ float4 mult[];               // [kTokens][D / 2] in mult_slot order (kRope)
  __shared__ float pair_amax[2][kWarps];         // double-buffered by head parity
  constexpr int kChunks = D / 8;                 // 16-byte chunks a row
  constexpr int kPer = kTokens / 2 * kChunks / 32;  // a lane's chunks of one 8 x D half block
  const TokenView &qv = p.qv, &ov = p.q8v;
  const int64_t b = blockIdx.y, s0 = int64_t(blockIdx.x) * kTokens;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, pair = warp / 2, t0 = 8 * (warp % 2);
  const int n_rows = int(min(int64_t(kTokens), qv.S - s0));
  const T* x = static_cast<const T*>(p.q) + b * qv.stride_b + s0 * qv.stride_s;
  uint8_t* y = p.q8 + b * ov.stride_b + s0 * ov.stride_s;

  uint4 raw[kPer];
  auto load_chunk = [&](int j, int64_t h) {  // this lane's chunk j of head h
    const int i = lane + 32 * j, t = t0 + i / kChunks;
    return t < n_rows ? ldg_stream(x + t * qv.stride_s + h * qv.stride_h + 8 * (i % kChunks)) : make_uint4(0, 0, 0, 0);
  };
  int64_t h = pair;
  if (h < qv.H) {
#pragma unroll
    for (int j = 0; j < kPer; ++j) raw[j] = load_chunk(j, h);
  }

  int n_rot = 0;  // rows of this block that are rotated (tokens < f*h*w); the rest pass unchanged
  if constexpr (kRope) {
    // While the loads are in flight: this sample's grid and the block's multipliers.
    int64_t f, gh, gw;
    if (!rope_grid(p.rope_freqs, b, qv.S, f, gh, gw)) return;  // the same for the whole CTA
    n_rot = int(max(int64_t(0), min(int64_t(n_rows), f * gh * gw - s0)));
    const uint32_t hw = uint32_t(gh * gw);
    constexpr int kMultPer = kTokens * (D / 2) / (kWarps * 32);  // unrolled: the table loads overlap
    float4 mv[kMultPer];
#pragma unroll
    for (int k = 0; k < kMultPer; ++k) {
      const int e = threadIdx.x + k * kWarps * 32, t = e / (D / 2), pair = e % (D / 2);
      if (t < n_rot)
        mv[k] = load_mult(p.rope_freqs, rope_pos(p.rope_freqs, pair, uint32_t(s0 + t), hw, uint32_t(gh),
                                                 uint32_t(gw)), pair);
    }
#pragma unroll
    for (int k = 0; k < kMultPer; ++k) {
      const int e = threadIdx.x + k * kWarps * 32;
      const int t = e / (D / 2);
      if (t < n_rot) mult[t * (D / 2) + mult_slot(e % (D / 2), kChunks)] = mv[k];
    }
    __syncthreads();
  }

  const int64_t n_blk = ceil_div(qv.S, int64_t(kTokens));
  for (int it = 0; h < qv.H; h += kPairs, ++it) {
    uint4 w[kPer];  // the values to quantize, in q's dtype (rotated as rope3d writes them)
    uint32_t amax2[2] = {0u, 0u};  // |w| max on packed pairs (absmax2_acc), two chains
    const bool more = h + kPairs < qv.H;
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const int i = lane + 32 * j, t = t0 + i / kChunks;
      w[j] = raw[j];
      if (kRope && t < n_rot) {
        float a[8];
        unpack8<T>(raw[j], a);
        const float4* m = mult + t * (D / 2) + i % kChunks;  // pairs 4c .. 4c + 3 (mult_slot)
        w[j] = make_uint4(rotate_pair_bits<T>(a[0], a[1], m[0]), rotate_pair_bits<T>(a[2], a[3], m[kChunks]),
                          rotate_pair_bits<T>(a[4], a[5], m[2 * kChunks]),
                          rotate_pair_bits<T>(a[6], a[7], m[3 * kChunks]));
      }
      // raw[j] is free: the next head's chunk goes out now, so its load overlaps this head's rotation
      // (issued after the rotation, the loads left the DRAM idle while the SM's 16 warps computed).
      if (more) raw[j] = load_chunk(j, h + kPairs);
      amax2[0] = absmax2_acc<T>(absmax2_acc<T>(amax2[0], w[j].x), w[j].y);
      amax2[1] = absmax2_acc<T>(absmax2_acc<T>(amax2[1], w[j].z), w[j].w);
    }
    float amax = fmaxf(absmax2_float<T>(amax2[0]), absmax2_float<T>(amax2[1]));
    // The block's absmax: the two halves meet in shared memory (a buffer per head parity, so a warp
    // a head ahead never overwrites what its partner has yet to read). max is order-free: the bits of
    // one warp's reduction.
    amax = group_max<32>(amax);
    pair_amax[it & 1][warp] = amax;
    named_bar_sync(1 + pair, 64);
    amax = fmaxf(amax, pair_amax[it & 1][warp ^ 1]);
    const float inv = recip_scale(Fmt::kMax, amax);
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const int i = lane + 32 * j, t = t0 + i / kChunks;
      float v[8];
      unpack8<T>(w[j], v);
      if (t < n_rows)
        __stcs(reinterpret_cast<uint2*>(y + t * ov.stride_s + h * ov.stride_h + 8 * (i % kChunks)),
               pack8_uniform<Fmt>(v, inv));
    }
    if (lane == 0 && t0 == 0) p.q_scale[(b * qv.H + h) * n_blk + blockIdx.x] = __fdiv_rn(amax, Fmt::kMax);
  }
}

template <typename T, int D, typename Fmt>
cudaError_t launch(const QuantizeAttentionQParams& p, cudaStream_t stream) {
  auto kernel = p.rope ? quantize_attention_q_kernel<T, D, Fmt, true> : quantize_attention_q_kernel<T, D, Fmt, false>;
  const int smem = p.rope ? kTokens * (D / 2) * int(sizeof(float4)) : 0;
  const dim3 grid(unsigned(ceil_div(p.qv.S, int64_t(kTokens))), unsigned(p.qv.B));
  kernel<<<grid, kWarps * 32, smem, stream>>>(p);
  return last_launch_error();
}

template <typename T>
cudaError_t dispatch(const QuantizeAttentionQParams& p, cudaStream_t stream) {
  if (p.qv.D == 128) return p.fp8 ? launch<T, 128, Fp8Format>(p, stream) : launch<T, 128, Int8Format>(p, stream);
  return p.fp8 ? launch<T, 64, Fp8Format>(p, stream) : launch<T, 64, Int8Format>(p, stream);
}

}  // namespace
}  // namespace sm90a

cudaError_t quantize_attention_q(const QuantizeAttentionQParams& p, cudaStream_t stream) {
  const TokenView &qv = p.qv, &ov = p.q8v;
  if ((qv.D != 64 && qv.D != 128) || ov.B != qv.B || ov.S != qv.S || ov.H != qv.H || ov.D != qv.D ||
      !rows_aligned_16b(p.q, qv) || !is_aligned(p.q8, 8) || ov.stride_b % 8 || ov.stride_s % 8 || ov.stride_h % 8 ||
      qv.B > 65535 || ceil_div(qv.S, int64_t(sm90a::kTokens)) >= (int64_t(1) << 31) ||
      (p.rope && p.rope_freqs.grid_sizes == nullptr && qv.B > RopeFreqs::kMaxHostGrid))
    return cudaErrorNotSupported;
  if (qv.B * qv.S * qv.H == 0) return cudaSuccess;
  switch (p.dtype) {
    case ScalarType::BFloat16: return sm90a::dispatch<__nv_bfloat16>(p, stream);
    case ScalarType::Float16: return sm90a::dispatch<__half>(p, stream);
    default: return cudaErrorNotSupported;
  }
}

}  // namespace ac4k
