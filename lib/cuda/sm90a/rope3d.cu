// rope3d for sm90a: Wan 2.x's 3D rotary embedding (ac4k_kernel.reference.rope3d), memory-bound:
// x is read once and written once in 16-byte vectors; the freqs table stays in L2.
//
// A CTA takes `tokens_per_block` consecutive tokens of one sample (about 1024 16-byte chunks, so
// each of its 128 threads has up to 8 loads in flight). It issues its loads first; while they are
// in flight it reads the sample's grid sizes and builds each token's D/2 multipliers (cos, sin as
// float hi + lo parts) in shared memory, from whichever table form was passed, so the per-chunk
// work is two fast divisions and the rotation.
//
// The rotation is float32 with each product's rounding error recovered by an FMA and the table's
// lo parts added (complex128 tables keep ~48 bits of cos / sin): the value before the final
// rounding is within ~2^-23 relative of the complex128 product, so the output is within one ulp
// of the fp64 formulation even where a*cos - b*sin cancels (plain float32 products are not).
#include <cuda_runtime.h>

#include <algorithm>
#include <type_traits>

#include "ac4k_kernel/ops.h"
#include "common/math.cuh"
#include "common/rope.cuh"
#include "common/utils.cuh"

namespace ac4k {
namespace sm90a {
namespace {

constexpr int kThreads = 128;
constexpr int kUnroll = 8;                               // 16-byte chunks per thread per round
constexpr int kChunksPerRound = kThreads * kUnroll;      // what a CTA aims to cover
constexpr int64_t kMaxMultBytes = 16 * 1024;             // shared multipliers per CTA (D <= 2048)

struct Launch {
  FastDiv cpt;    // 16-byte chunks per token, H * D/8
  FastDiv cpd;    // chunks per head, D/8
  FastDiv pairs;  // D/2
  int32_t tokens_per_block = 1;
};

template <typename T>
__global__ void __launch_bounds__(kThreads, 8) rope3d_kernel(const __grid_constant__ Rope3dParams p, const Launch l) {
  extern __shared__ float4 mult[];  // [tokens of this CTA][D/2], mult_slot order
  const TokenView &xv = p.xv, &ov = p.ov;
  const int64_t b = blockIdx.y;
  const int64_t s0 = int64_t(blockIdx.x) * l.tokens_per_block;
  const uint32_t ntok = uint32_t(min(int64_t(l.tokens_per_block), xv.S - s0));
  const uint32_t nchunks = ntok * l.cpt.d;
  const T* x = static_cast<const T*>(p.x) + b * xv.stride_b + s0 * xv.stride_s;
  T* out = static_cast<T*>(p.out) + b * ov.stride_b + s0 * ov.stride_s;

  // Chunk i of this CTA: token t = i / cpt, head h, 8 elements from d = 8q.
  auto x_at = [&](uint32_t i) {
    const uint32_t t = l.cpt.div(i), r = i - t * l.cpt.d, h = l.cpd.div(r), q = r - h * l.cpd.d;
    return t * xv.stride_s + h * xv.stride_h + 8 * q;
  };
  uint4 v[kUnroll];
  auto load_round = [&](uint32_t base) {
#pragma unroll
    for (int k = 0; k < kUnroll; ++k) {
      const uint32_t i = base + k * kThreads + threadIdx.x;
      if (i < nchunks) v[k] = ldg_stream(x + x_at(i));
    }
  };
  load_round(0);

  // While the loads are in flight: this sample's grid and the tokens' multipliers.
  int64_t f, gh, gw;
  if (!rope_grid(p, b, xv.S, f, gh, gw)) return;
  const int64_t fh = f * gh;
  const int64_t n = fh * gw;  // tokens rotated; the rest are copied
  if (s0 < n) {
    const uint32_t hw = uint32_t(gh * gw);  // <= n <= S < 2^31 and nonzero here
    for (uint32_t e = threadIdx.x; e < ntok * l.pairs.d; e += kThreads) {
      const uint32_t t = l.pairs.div(e), pair = e - t * l.pairs.d;
      const uint32_t s = uint32_t(s0 + t);
      if (s >= n) break;  // e only grows
      mult[t * l.pairs.d + mult_slot(pair, l.cpd.d)] =
          load_mult(p, rope_pos(p, int(pair), s, hw, uint32_t(gh), uint32_t(gw)), int(pair));
    }
  }
  __syncthreads();

  for (uint32_t base = 0;;) {
#pragma unroll
    for (int k = 0; k < kUnroll; ++k) {
      const uint32_t i = base + k * kThreads + threadIdx.x;
      if (i >= nchunks) continue;
      const uint32_t t = l.cpt.div(i), r = i - t * l.cpt.d, h = l.cpd.div(r), q = r - h * l.cpd.d;
      uint4 w = v[k];
      if (s0 + t < n) {
        float a[8];
        unpack8<T>(v[k], a);
        const float4* m = mult + t * l.pairs.d + q;  // pairs 4q .. 4q + 3 (mult_slot)
        w.x = rotate_pair_bits<T>(a[0], a[1], m[0]);
        w.y = rotate_pair_bits<T>(a[2], a[3], m[l.cpd.d]);
        w.z = rotate_pair_bits<T>(a[4], a[5], m[2 * l.cpd.d]);
        w.w = rotate_pair_bits<T>(a[6], a[7], m[3 * l.cpd.d]);
      }
      __stcs(reinterpret_cast<uint4*>(out + t * ov.stride_s + h * ov.stride_h + 8 * q), w);
    }
    base += kChunksPerRound;
    if (base >= nchunks) break;
    load_round(base);
  }
}

template <typename T>
cudaError_t launch(const Rope3dParams& p, cudaStream_t stream) {
  const TokenView& v = p.xv;
  if (v.B == 0 || v.S == 0 || v.H == 0) return cudaSuccess;
  const int64_t pairs = v.D / 2, cpd = v.D / 8, cpt = v.H * cpd;
  const int64_t mult_bytes = pairs * int64_t(sizeof(float4));
  if (mult_bytes > kMaxMultBytes || cpt > kChunksPerRound * int64_t(1 << 20) || v.S >= (int64_t(1) << 31) ||
      v.B > 65535 || (p.grid_sizes == nullptr && v.B > Rope3dParams::kMaxHostGrid))
    return cudaErrorNotSupported;
  const int64_t tpb = std::max<int64_t>(1, std::min({int64_t(kChunksPerRound) / cpt, kMaxMultBytes / mult_bytes, v.S}));
  Launch l;
  l.cpt = FastDiv(uint32_t(cpt));
  l.cpd = FastDiv(uint32_t(cpd));
  l.pairs = FastDiv(uint32_t(pairs));
  l.tokens_per_block = int32_t(tpb);
  const dim3 grid(unsigned((v.S + tpb - 1) / tpb), unsigned(v.B));
  rope3d_kernel<T><<<grid, kThreads, size_t(tpb * mult_bytes), stream>>>(p, l);
  return last_launch_error();
}

}  // namespace
}  // namespace sm90a

cudaError_t rope3d(const Rope3dParams& p, cudaStream_t stream) {
  if (!rope3d_views_ok(p)) return cudaErrorNotSupported;
  switch (p.dtype) {
    case ScalarType::BFloat16: return sm90a::launch<__nv_bfloat16>(p, stream);
    case ScalarType::Float16: return sm90a::launch<__half>(p, stream);
    default: return cudaErrorNotSupported;
  }
}

cudaError_t rope_table(const RopeFreqs& p, int pairs, void* out, cudaStream_t stream) {
  return launch_rope_table(p, pairs, out, stream);
}

}  // namespace ac4k
