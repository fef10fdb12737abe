// quantize_attention_kv for sm89: K and V of one attention call -> the inputs of
// mha_int8_x_fp8_fwd / mha_fp8_fwd, in the layouts of types.h (the same as sm90a's: the permuted,
// transposed V^T slots are also what lets the mma.sync PV product take P straight from the score
// registers, see mha_8bit.cuh).
//   K: k - mean over tokens per (b, h, d), then INT8 (or E4M3) per 64-token block.
//   V: FP8 E4M3 per channel, stored transposed [B, H, D, s_pad], tokens permuted in 16-groups,
//      zero-padded.
// Both need a statistic over all tokens of a head first. Plain loads, four launches, no clusters:
//   1. partials: CTA (chunk of kChunk tokens, tensor, b, h) -> column sum (K) / absmax (V) of its
//      chunk into scratch;
//   2. stats: CTA (tensor, b, h) merges the chunks in order (deterministic bits, whatever the grid)
//      -> k_mean, v_scale, and the inverse scales of V in scratch;
//   3. K: CTA (64-token block, b, h): absmax of k - mean, then the block quantized (second read
//      from L1 / L2);
//   4. V: CTA (128-token tile, b, h): the tile through shared memory, written as 16-byte runs of
//      vt (16 permuted slots of one channel).
// With p.rope, K's tokens s < f*h*w are rotated as rope3d does (common/rope.cuh) wherever they are
// read (passes 1 and 3 rotate the same bits).
#include <cuda_runtime.h>

#include "ac4k_kernel/ops.h"
#include "common/math.cuh"
#include "common/quant_format.cuh"
#include "common/rope.cuh"
#include "common/utils.cuh"

namespace ac4k {
namespace sm89 {
namespace {

constexpr int kThreads = 256;
constexpr int kChunk = 512;  // tokens per partial of pass 1
constexpr int kKBlock = 64;  // tokens per K scale
constexpr int kTile = 128;   // vt padding unit, tokens per V CTA

// Slot of token t (0..15) inside its 16-group of vt; see types.h.
__host__ __device__ constexpr int v_slot(int t) { return 2 * (t / 8) + 4 * ((t / 2) % 4) + (t % 2); }

int64_t chunks_of(int64_t S) { return ceil_div(S, kChunk); }

// Scratch: partials [2][B*H][n_chunks][D], then V's inverse scales [B*H][D].
struct Scratch {
  float* partial;
  float* v_inv;
  int64_t n_chunks;
  __host__ Scratch(const QuantizeAttentionKvParams& p)
      : partial(p.scratch), v_inv(p.scratch + 2 * p.kv.B * p.kv.H * chunks_of(p.kv.S) * p.kv.D),
        n_chunks(chunks_of(p.kv.S)) {}
};

// K's chunk of token s at channel chunk c, rotated when p.rope and s < n_rot.
struct KRope {
  int64_t n_rot = 0;
  uint32_t gh = 1, gw = 1;
  __device__ __forceinline__ bool init(const QuantizeAttentionKvParams& p, int64_t b) {
    if (!p.rope) return true;
    int64_t f, h, w;
    if (!rope_grid(p.rope_freqs, b, p.kv.S, f, h, w)) return false;
    n_rot = f * h * w;
    gh = uint32_t(h);
    gw = uint32_t(w);
    return true;
  }
  template <typename T>
  __device__ __forceinline__ uint4 apply(const QuantizeAttentionKvParams& p, uint4 u, int64_t s, int c) const {
    return s < n_rot ? rope8<T>(u, p.rope_freqs, uint32_t(s), c * 4, gh, gw) : u;
  }
};

// Pass 1. blockIdx.y = tensor * B * H + bh (tensor 0: K, 1: V).
template <typename T, int D>
__global__ void __launch_bounds__(kThreads) partial_kernel(const __grid_constant__ QuantizeAttentionKvParams p,
                                                          Scratch sc) {
  constexpr int RT = D / 8, kRows = kThreads / RT;
  const int64_t BH = p.kv.B * p.kv.H;
  const bool is_v = blockIdx.y >= BH;
  const int64_t bh = is_v ? blockIdx.y - BH : blockIdx.y, b = bh / p.kv.H, h = bh % p.kv.H;
  const TokenView& xv = is_v ? p.vv : p.kv;
  KRope rope;
  if (!is_v && !rope.init(p, b)) return;
  const int c = threadIdx.x % RT, r = threadIdx.x / RT;
  const int64_t s0 = int64_t(blockIdx.x) * kChunk, s1 = min(xv.S, s0 + kChunk);
  const T* xb = static_cast<const T*>(is_v ? p.v : p.k) + b * xv.stride_b + h * xv.stride_h + c * 8;
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int64_t s = s0 + r; s < s1; s += kRows) {
    uint4 u = *reinterpret_cast<const uint4*>(xb + s * xv.stride_s);
    if (!is_v) u = rope.apply<T>(p, u, s, c);
    float v[8];
    unpack8<T>(u, v);
#pragma unroll
    for (int k = 0; k < 8; ++k) acc[k] = is_v ? absmax_acc(acc[k], v[k]) : acc[k] + v[k];
  }
  __shared__ float red[kRows][D + 1];
#pragma unroll
  for (int k = 0; k < 8; ++k) red[r][c * 8 + k] = acc[k];
  __syncthreads();
  for (int d = threadIdx.x; d < D; d += kThreads) {
    float a = 0.f;
    for (int i = 0; i < kRows; ++i) a = is_v ? fmaxf(a, red[i][d]) : a + red[i][d];
    sc.partial[(blockIdx.y * sc.n_chunks + blockIdx.x) * D + d] = a;
  }
}

// Pass 2: one thread a channel, CTA (tensor, bh).
template <int D>
__global__ void __launch_bounds__(D) stats_kernel(const __grid_constant__ QuantizeAttentionKvParams p, Scratch sc) {
  const int64_t BH = p.kv.B * p.kv.H;
  const bool is_v = blockIdx.x >= BH;
  const int64_t bh = is_v ? blockIdx.x - BH : blockIdx.x;
  const int d = threadIdx.x;
  const float* part = sc.partial + int64_t(blockIdx.x) * sc.n_chunks * D + d;
  float a = 0.f;
  for (int64_t i = 0; i < sc.n_chunks; ++i) a = is_v ? fmaxf(a, part[i * D]) : a + part[i * D];
  if (is_v) {
    p.v_scale[bh * D + d] = __fdiv_rn(a, Fp8Format::kMax);
    sc.v_inv[bh * D + d] = recip_scale(Fp8Format::kMax, a);
  } else {
    p.k_mean[bh * D + d] = __fmul_rn(a, 1.f / float(p.kv.S));
  }
}

// Pass 3: K, CTA (64-token block, bh); the thread's rows r, r + kRows, ... of the block.
template <typename T, int D, typename Fmt>
__global__ void __launch_bounds__(kThreads) k_kernel(const __grid_constant__ QuantizeAttentionKvParams p) {
  constexpr int RT = D / 8, kRows = kThreads / RT, NB = kKBlock / kRows;
  const int64_t bh = blockIdx.y, b = bh / p.kv.H, h = bh % p.kv.H;
  KRope rope;
  if (!rope.init(p, b)) return;
  const int c = threadIdx.x % RT, r = threadIdx.x / RT;
  const TokenView& xv = p.kv;
  const int64_t s0 = int64_t(blockIdx.x) * kKBlock;
  const T* xb = static_cast<const T*>(p.k) + b * xv.stride_b + h * xv.stride_h + c * 8;
  float mean[8];
#pragma unroll
  for (int k = 0; k < 8; ++k) mean[k] = p.k_mean[bh * D + c * 8 + k];
  auto row = [&](int j, float (&x)[8]) {
    const int64_t s = s0 + r + j * kRows;
    if (s >= xv.S) return false;
    unpack8<T>(rope.apply<T>(p, *reinterpret_cast<const uint4*>(xb + s * xv.stride_s), s, c), x);
#pragma unroll
    for (int k = 0; k < 8; ++k) x[k] = __fsub_rn(x[k], mean[k]);
    return true;
  };
  float amax = 0.f;
#pragma unroll
  for (int j = 0; j < NB; ++j) {
    float x[8];
    if (row(j, x)) {
#pragma unroll
      for (int k = 0; k < 8; ++k) amax = absmax_acc(amax, x[k]);
    }
  }
  __shared__ float red[kThreads / 32];
  amax = group_max<32>(amax);
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = amax;
  __syncthreads();
#pragma unroll
  for (int w = 0; w < kThreads / 32; ++w) amax = fmaxf(amax, red[w]);
  const float inv = recip_scale(Fmt::kMax, amax);
  int8_t* qb = p.k8 + b * p.k8v.stride_b + h * p.k8v.stride_h + c * 8;
#pragma unroll
  for (int j = 0; j < NB; ++j) {
    float x[8];
    if (row(j, x)) *reinterpret_cast<uint2*>(qb + (s0 + r + j * kRows) * p.k8v.stride_s) = pack8_uniform<Fmt>(x, inv);
  }
  if (threadIdx.x == 0) p.k_scale[bh * gridDim.x + blockIdx.x] = __fdiv_rn(amax, Fmt::kMax);
}

// Pass 4: V, CTA (128-token tile, bh): the tile (zeros past S) into shared memory, then work item
// (channel d, 16-group g) -> 16 E4M3 bytes at vt[bh, d, tile * 128 + 16 g ...] in slot order.
template <typename T, int D>
__global__ void __launch_bounds__(kThreads) v_kernel(const __grid_constant__ QuantizeAttentionKvParams p,
                                                    const float* __restrict__ v_inv) {
  constexpr int RT = D / 8, kRows = kThreads / RT;
  constexpr int kPitch = D + 8;  // elements: rows 16 bytes apart in banks
  __shared__ __align__(16) T tile[kTile * kPitch];
  const int64_t bh = blockIdx.y, b = bh / p.vv.H, h = bh % p.vv.H;
  const TokenView& xv = p.vv;
  const int64_t s0 = int64_t(blockIdx.x) * kTile;
  const int c = threadIdx.x % RT, r = threadIdx.x / RT;
  const T* xb = static_cast<const T*>(p.v) + b * xv.stride_b + h * xv.stride_h + c * 8;
#pragma unroll 4
  for (int t = r; t < kTile; t += kRows) {
    const int64_t s = s0 + t;
    *reinterpret_cast<uint4*>(tile + t * kPitch + c * 8) =
        s < xv.S ? *reinterpret_cast<const uint4*>(xb + s * xv.stride_s) : make_uint4(0, 0, 0, 0);
  }
  __syncthreads();
  uint8_t* dst = p.vt + bh * D * p.s_pad + s0;
  for (int item = threadIdx.x; item < D * (kTile / 16); item += kThreads) {
    const int d = item % D, g = item / D;  // consecutive threads: consecutive channels of one group
    const float inv = v_inv[bh * D + d];
    float f[16];
#pragma unroll
    for (int t = 0; t < 16; ++t) {  // padding past S is 0 even where inv is inf (0 x inf = NaN)
      const float x = __fmul_rn(InputTraits<T>::to_float(tile[(16 * g + t) * kPitch + d]), inv);
      f[v_slot(t)] = s0 + 16 * g + t < xv.S ? x : 0.f;
    }
    uint4 w;
    w.x = e4m3x2(f[0], f[1]) | (e4m3x2(f[2], f[3]) << 16);
    w.y = e4m3x2(f[4], f[5]) | (e4m3x2(f[6], f[7]) << 16);
    w.z = e4m3x2(f[8], f[9]) | (e4m3x2(f[10], f[11]) << 16);
    w.w = e4m3x2(f[12], f[13]) | (e4m3x2(f[14], f[15]) << 16);
    *reinterpret_cast<uint4*>(dst + d * p.s_pad + 16 * g) = w;
  }
}

template <typename T, int D>
cudaError_t launch(const QuantizeAttentionKvParams& p, cudaStream_t stream) {
  const Scratch sc(p);
  const int64_t BH = p.kv.B * p.kv.H;
  if (2 * BH > 65535 || sc.n_chunks > 0x7fffffffLL) return cudaErrorNotSupported;
  partial_kernel<T, D><<<dim3(unsigned(sc.n_chunks), unsigned(2 * BH)), kThreads, 0, stream>>>(p, sc);
  stats_kernel<D><<<unsigned(2 * BH), D, 0, stream>>>(p, sc);
  const dim3 kgrid(unsigned(ceil_div(p.kv.S, kKBlock)), unsigned(BH));
  if (p.k_fp8) {
    k_kernel<T, D, Fp8Format><<<kgrid, kThreads, 0, stream>>>(p);
  } else {
    k_kernel<T, D, Int8Format><<<kgrid, kThreads, 0, stream>>>(p);
  }
  v_kernel<T, D><<<dim3(unsigned(p.s_pad / kTile), unsigned(BH)), kThreads, 0, stream>>>(p, sc.v_inv);
  return last_launch_error();
}

}  // namespace
}  // namespace sm89

int64_t quantize_attention_kv_scratch(const QuantizeAttentionKvParams& p) {
  const int64_t BH = p.kv.B * p.kv.H;
  return BH * p.kv.D * (2 * sm89::chunks_of(p.kv.S) + 1);
}

cudaError_t quantize_attention_kv(const QuantizeAttentionKvParams& p, cudaStream_t stream) {
  const TokenView &kv = p.kv, &vv = p.vv;
  if (kv.B * kv.H == 0) return cudaSuccess;
  const bool bf16 = p.dtype == ScalarType::BFloat16;
  if ((kv.D != 64 && kv.D != 128) || vv.D != kv.D || vv.S != kv.S || vv.H != kv.H || vv.B != kv.B || kv.S < 1 ||
      p.s_pad % 128 != 0 || p.s_pad < kv.S || p.s_pad - kv.S >= 128 || !rows_aligned_16b(p.k, kv) ||
      !rows_aligned_16b(p.v, vv) || !is_aligned(p.k8, 8) || p.k8v.stride_b % 8 || p.k8v.stride_s % 8 ||
      p.k8v.stride_h % 8 || (!bf16 && p.dtype != ScalarType::Float16) || p.scratch == nullptr ||
      !is_aligned(p.vt, 16))
    return cudaErrorNotSupported;
  if (p.rope && (p.rope_freqs.grid_sizes == nullptr && kv.B > RopeFreqs::kMaxHostGrid)) return cudaErrorNotSupported;
  if (kv.D == 128) return bf16 ? sm89::launch<__nv_bfloat16, 128>(p, stream) : sm89::launch<__half, 128>(p, stream);
  return bf16 ? sm89::launch<__nv_bfloat16, 64>(p, stream) : sm89::launch<__half, 64>(p, stream);
}

}  // namespace ac4k
