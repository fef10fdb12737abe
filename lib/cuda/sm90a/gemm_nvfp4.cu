// gemm_nvfp4 for sm90a: out = (dec(A) dec(B)^T) * a_gs * b_gs + bias[n], A [M, K] and B [N, K] in
// NVFP4 (packed E2M1, E4M3 block scales of 16 along K, one FP32 global scale each), out bf16 / fp16;
// ac4k_kernel.reference.gemm_nvfp4 (the math of a Blackwell block-scaled NVFP4 GEMM).
//
// Hopper has no FP4 tensor cores. Every E2M1 value times its E4M3 block scale is exact in FP16
// (sm90a/nvfp4_decode.cuh), so the products and FP32 sums are those of the Blackwell kernel up to
// summation order, whichever way the values reach the tensor cores:
//   M > 64     A and B decoded to FP16 once by a memory-bound pass (nvfp4_decode.cuh's decode_kernel,
//              into the op's scratch; A in chunks of at most kChunkBytes), then sm90a's persistent
//              warp-specialized GEMM (gemm_wgmma.cuh) on FP16 operands, f16 wgmma straight into
//              FP32, with the global scales in its epilogue (acc * a_gs * b_gs + bias, the
//              reference's order). The previous kernel decoded A and B in its consumers for every
//              tile (each B tile M / 128 times): issue-bound at ~200 TFLOPS against bf16's ~700
//              (docs/perf-notes.md, session 13).
//   M <= 64    gemm_nvfp4_small_m_kernel (below): all SMs stream the weight, each warp decoding into
//              mma.sync fragments.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <algorithm>

#include <cuda/ptx>

#include "ac4k_kernel/ops.h"
#include "ac4k_kernel/types.h"
#include "common/math.cuh"
#include "common/utils.cuh"
#include "sm90a/gemm_tiles.cuh"
#include "sm90a/gemm_wgmma.cuh"
#include "sm90a/mma.cuh"
#include "sm90a/nvfp4_decode.cuh"

namespace ac4k {
namespace sm90a {
namespace {

namespace cg = cooperative_groups;

// ---- small M (<= 64 rows): the weight's bytes, not the MMA, bound it ----
// A 128-row tiling would run only ceil(N/128) CTAs (40 at N = 5120), and decoding the weight first
// would write and read it again in FP16. Here a warp owns all M rows (MT m16 tiles) x 32 columns
// for a share of K, and decodes B from global memory straight into mma.sync m16n8k16 f16 fragments
// (no shared-memory round trip); a CTA's 4 warps and a cluster of G CTAs split K, and their partial
// sums meet in (distributed) shared memory in a fixed order.
// K order: a dot product does not care, so lane q of a quad takes the two 16-blocks 2q, 2q+1 of
// each 128-wide K chunk (16 packed bytes a row, two 8-byte loads); decode8 of its word t gives the
// fragments of k16 steps 2t (pairs (n0,n2), (n4,n6)) and 2t+1 ((n1,n3), (n5,n7)), the same for A
// rows and B columns.
constexpr int kSmallWarps = 4;
constexpr int kSmallN = 32;        // columns a CTA: four n8 tiles a warp
constexpr int kSmallMaxG = 8;      // CTAs of a cluster splitting K
constexpr int kSmallMaxM = 64;

// Row r's 16 packed bytes of chunk c for lane q (blocks 2q, 2q+1), and their two scale bytes;
// zeros past the matrix (rows >= rows, blocks >= nblk), so that they add nothing.
struct Packed16 {
  uint2 w[2];
  uint32_t sf[2];
};
template <bool kStream>
__device__ __forceinline__ Packed16 load_packed(const uint8_t* base, const uint8_t* sf, int64_t ld, int64_t ld_sf,
                                                int64_t row, int64_t rows, int64_t blk, int64_t nblk) {
  Packed16 r = {{make_uint2(0, 0), make_uint2(0, 0)}, {0, 0}};
  if (row >= rows) return r;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    if (blk + h < nblk) {
      const uint2* src = reinterpret_cast<const uint2*>(base + row * ld + (blk + h) * 8);
      r.w[h] = kStream ? __ldcs(src) : __ldg(src);
      r.sf[h] = __ldg(sf + row * ld_sf + blk + h);
    }
  }
  return r;
}

// For M > 16, A is decoded once into the fragments the small-M warps read, instead of by every CTA
// (ceil(N / 32) of them) and for each of its MT m16 tiles: uint4 f = (((chunk * 4 + word) * MT + m16
// tile) * 2 + step) * 32 + lane holds the m16n8k16 A fragment {a0, a1, a2, a3} of k16 step
// 2 word + step for lane (g, q), from decode8 of word `word` of rows 16 tile + g and + 8 (blocks 2q,
// 2q + 1 of the chunk): one 16-byte load lands in the four registers the mma reads, and a warp's
// loads are 512 contiguous bytes. At M <= 16 the extra launch costs more than the decode it saves
// (session 12: M = 64, 5120 x 13824: 79.4 -> 58.1 us; M = 1, 5120^2: 24.2 -> 28.4).
template <int MT>
__global__ void __launch_bounds__(128) nvfp4_decode_a_kernel(const GemmNvfp4Params p) {
  const int64_t nblk = p.K / 16, n_frag = ceil_div(p.K, int64_t(128)) * 4 * MT;
  const int lane = threadIdx.x % 32, g = lane / 4, q = lane % 4;
  uint4* out = static_cast<uint4*>(p.scratch);
  for (int64_t f = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32; f < n_frag;
       f += int64_t(gridDim.x) * blockDim.x / 32) {
    const int i = int(f % MT), t = int((f / MT) % 4);
    const int64_t c = f / (4 * MT);
    uint32_t o[2][4];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const Packed16 pa = load_packed<false>(static_cast<const uint8_t*>(p.a), p.a_sf, p.lda, p.lda_sf,
                                             16 * i + 8 * h + g, p.M, c * 8 + 2 * q, nblk);
      const uint2 w = t < 2 ? pa.w[0] : pa.w[1];  // selects: t is not a compile-time index here
      decode8(t % 2 ? w.y : w.x, scale_f16x2(t < 2 ? pa.sf[0] : pa.sf[1]), o[h]);
    }
    out[(f * 2) * 32 + lane] = make_uint4(o[0][0], o[1][0], o[0][1], o[1][1]);
    out[(f * 2 + 1) * 32 + lane] = make_uint4(o[0][2], o[1][2], o[0][3], o[1][3]);
  }
}

template <typename T, int MT>
__global__ void __launch_bounds__(kSmallWarps * 32, 3)
gemm_nvfp4_small_m_kernel(const GemmNvfp4Params p) {
  constexpr bool kPre = MT > 1;  // A's fragments from nvfp4_decode_a_kernel
  __shared__ float red[kSmallWarps][MT * 16][kSmallN + 1];  // +1: the fragment stores hit distinct banks
  cg::cluster_group cluster = cg::this_cluster();
  const int G = int(cluster.num_blocks()), rank = int(cluster.block_rank());
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, q = lane % 4;
  const int64_t n0 = int64_t(blockIdx.x) * kSmallN;
  const int64_t nblk = p.K / 16, n_chunks = ceil_div(p.K, int64_t(128));
  const uint8_t* a = static_cast<const uint8_t*>(p.a);
  const uint8_t* b = static_cast<const uint8_t*>(p.b);
  const uint4* adec = static_cast<const uint4*>(p.scratch) + lane;
  // kPre: this lane's four B rows (columns n0 + 8j + g) as pointers at their blocks 2q of chunk 0;
  // rows past N read row 0 and are zeroed (no branches in the loop).
  const uint8_t* brow[4];
  const uint8_t* bsf[4];
  bool bvalid[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const int64_t n = n0 + 8 * j + g;
    bvalid[j] = n < p.N;
    brow[j] = b + (bvalid[j] ? n : 0) * p.ldb + 16 * q;
    bsf[j] = p.b_sf + (bvalid[j] ? n : 0) * p.ldb_sf + 2 * q;
  }
  float acc[MT][4][4] = {};
  const int kw = rank * kSmallWarps + warp, nkw = G * kSmallWarps;
  for (int64_t c = kw; c < n_chunks; c += nkw) {
    const uint4* ac = adec + c * (4 * MT * 2 * 32);  // kPre: this chunk's A fragments
    Packed16 pb[4], pa[kPre ? 1 : MT][2];
    if (kPre && c * 8 + 8 <= nblk) {  // a whole chunk
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const uint2* src = reinterpret_cast<const uint2*>(brow[j] + c * 64);
        const uint2 w0 = __ldcs(src), w1 = __ldcs(src + 1);
        const uint32_t s0 = __ldg(bsf[j] + c * 8), s1 = __ldg(bsf[j] + c * 8 + 1);
        pb[j].w[0] = bvalid[j] ? w0 : make_uint2(0, 0);
        pb[j].w[1] = bvalid[j] ? w1 : make_uint2(0, 0);
        pb[j].sf[0] = bvalid[j] ? s0 : 0u;
        pb[j].sf[1] = bvalid[j] ? s1 : 0u;
      }
    } else {
#pragma unroll
      for (int j = 0; j < 4; ++j)
        pb[j] = load_packed<true>(b, p.b_sf, p.ldb, p.ldb_sf, n0 + 8 * j + g, p.N, c * 8 + 2 * q, nblk);
    }
    if constexpr (!kPre) {
      const int64_t blk = c * 8 + 2 * q;
#pragma unroll
      for (int i = 0; i < MT; ++i) {
#pragma unroll
        for (int h = 0; h < 2; ++h) pa[i][h] = load_packed<false>(a, p.a_sf, p.lda, p.lda_sf, 16 * i + 8 * h + g, p.M, blk, nblk);
      }
    }
#pragma unroll
    for (int t = 0; t < 4; ++t) {  // word t: block 2q + t / 2, k16 steps 2t and 2t + 1
      uint32_t fb[4][4];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const uint32_t w = t % 2 ? pb[j].w[t / 2].y : pb[j].w[t / 2].x;
        decode8(w, scale_f16x2(pb[j].sf[t / 2]), fb[j]);
      }
#pragma unroll
      for (int i = 0; i < MT; ++i) {
        uint32_t fa[2][4];
        if constexpr (!kPre) {
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const uint32_t w = t % 2 ? pa[i][h].w[t / 2].y : pa[i][h].w[t / 2].x;
            decode8(w, scale_f16x2(pa[i][h].sf[t / 2]), fa[h]);
          }
        }
#pragma unroll
        for (int s = 0; s < 2; ++s) {
          const uint4 v = kPre ? __ldg(ac + ((t * MT + i) * 2 + s) * 32)
                               : make_uint4(fa[0][2 * s], fa[1][2 * s], fa[0][2 * s + 1], fa[1][2 * s + 1]);
          const uint32_t fr[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
          for (int j = 0; j < 4; ++j) mma_f16_16816(acc[i][j], fr, fb[j][2 * s], fb[j][2 * s + 1]);
        }
      }
    }
  }
#pragma unroll
  for (int i = 0; i < MT; ++i) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) red[warp][16 * i + g + 8 * (e / 2)][8 * j + 2 * q + e % 2] = acc[i][j][e];
    }
  }
  // The CTA's sum in warp order into red[0], then rank r finishes rows r, r + G, ... summing the
  // ranks' partials in rank order: the same bits every run.
  const int col = threadIdx.x % kSmallN, row0 = threadIdx.x / kSmallN;
  constexpr int kRowStep = kSmallWarps * 32 / kSmallN;
  __syncthreads();
  for (int row = row0; row < MT * 16; row += kRowStep) {
    float v = red[0][row][col];
#pragma unroll
    for (int w = 1; w < kSmallWarps; ++w) v += red[w][row][col];
    red[0][row][col] = v;
  }
  cluster.sync();  // every CTA's partial sum is in its shared memory
  const int64_t n = n0 + col;
  if (n < p.N) {
    const float a_gs = *p.a_gs, b_gs = *p.b_gs;
    const float bias = p.bias != nullptr ? load_bias(p.bias, p.bias_dtype, n) : 0.f;
    T* out = static_cast<T*>(p.out);
    for (int row = row0 * G + rank; row < p.M; row += kRowStep * G) {
      float v = 0.f;
      for (int r = 0; r < G; ++r) v += cluster.map_shared_rank(&red[0][0][0], r)[row * (kSmallN + 1) + col];
      reinterpret_cast<uint16_t*>(out)[row * p.ldo + n] = uint16_t(pack2<T>(v * a_gs * b_gs + bias, 0.f));
    }
  }
  cluster.sync();  // no CTA leaves while another may still read its shared memory
}

template <typename T, int MT>
cudaError_t launch_small_m(const GemmNvfp4Params& p, cudaStream_t stream) {
  const int64_t n_ctas = ceil_div(p.N, int64_t(kSmallN)), n_chunks = ceil_div(p.K, int64_t(128));
  // Enough CTAs for two an SM (K split further across a cluster), but every warp with a chunk.
  int G = 1;
  while (G < kSmallMaxG && n_ctas * G < 2 * sm_count() && int64_t(2 * G) * kSmallWarps <= n_chunks) G *= 2;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(unsigned(n_ctas), unsigned(G), 1);
  cfg.blockDim = dim3(kSmallWarps * 32);
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = 1;
  attr[0].val.clusterDim.y = unsigned(G);
  attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  if constexpr (MT > 1) {
    const int64_t n_frag = n_chunks * 4 * MT;  // a warp each
    nvfp4_decode_a_kernel<MT><<<unsigned(std::min<int64_t>(ceil_div(n_frag, int64_t(4)), 4 * sm_count())), 128, 0, stream>>>(p);
  }
  cudaError_t err = cudaLaunchKernelEx(&cfg, gemm_nvfp4_small_m_kernel<T, MT>, p);
  return err != cudaSuccess ? err : last_launch_error();
}

bool small_m(const GemmNvfp4Params& p) { return p.M <= kSmallMaxM && p.N <= int64_t(65535) * kSmallN; }

// Bytes of A's decoded fragments (M in 17..64; at M <= 16 the kernel decodes A itself).
int64_t small_m_scratch(const GemmNvfp4Params& p) {
  return p.M <= 16 ? 0 : ceil_div(p.K, int64_t(128)) * 4 * ((p.M + 15) / 16) * 2 * 32 * 16;
}

// ---- M > 64: decode, then the FP16 GEMM ----
constexpr int64_t kChunkBytes = int64_t(256) << 20;  // decoded rows of A, and of B, at a time

// Rows of an operand decoded at a time: all of them, or equal chunks of about kChunkBytes at most
// (multiples of 128 rows: aligned column offsets for B's chunks of the output).
int64_t chunk_rows(int64_t rows, int64_t K) {
  const int64_t n = ceil_div(rows * K * 2, kChunkBytes);
  return n <= 1 ? rows : ceil_div(ceil_div(rows, n), int64_t(128)) * 128;
}

int64_t decoded_b_bytes(const GemmNvfp4Params& p) { return ceil_div(chunk_rows(p.N, p.K) * p.K * 2, int64_t(256)) * 256; }

// Rows [rows, K] of a packed operand (row strides ld / ld_sf bytes) -> FP16 [rows, K] contiguous.
cudaError_t decode_rows(const void* v, const uint8_t* sf, int64_t ld, int64_t ld_sf, int64_t rows, int64_t K,
                        __half* out, cudaStream_t stream) {
  TokenView vv, sv;
  vv.S = sv.S = rows;
  vv.D = sv.D = K;
  vv.stride_s = ld;
  sv.stride_s = ld_sf;
  return decode(static_cast<const uint8_t*>(v), sf, vv, sv, out, stream);
}

// B is decoded once per call (a weight of up to 256 MB in FP16: all of a DiT's), A once unless both
// are chunked (huge weights at large M), in which case A's chunks are decoded again per B chunk.
template <typename T>
cudaError_t launch_decoded(const GemmNvfp4Params& p, cudaStream_t stream) {
  __half* b16 = static_cast<__half*>(p.scratch);
  __half* a16 = reinterpret_cast<__half*>(static_cast<uint8_t*>(p.scratch) + decoded_b_bytes(p));
  const int64_t mc = chunk_rows(p.M, p.K), nc = chunk_rows(p.N, p.K);
  const auto* a = static_cast<const uint8_t*>(p.a);
  const auto* b = static_cast<const uint8_t*>(p.b);
  const int64_t bias_bytes = p.bias_dtype == ScalarType::Float32 ? 4 : 2;
  gemm::Args g;
  g.a_scale = p.a_gs;
  g.b_scale = p.b_gs;
  g.a_scale_stride = g.b_scale_stride = 0;  // one global scale each
  g.bias_dtype = p.bias_dtype;
  g.K = p.K, g.ldo = p.ldo;
  cudaError_t err = cudaSuccess;
  for (int64_t n0 = 0; n0 < p.N && err == cudaSuccess; n0 += nc) {
    g.N = std::min(nc, p.N - n0);
    g.bias = p.bias == nullptr ? nullptr : static_cast<const uint8_t*>(p.bias) + n0 * bias_bytes;
    err = decode_rows(b + n0 * p.ldb, p.b_sf + n0 * p.ldb_sf, p.ldb, p.ldb_sf, g.N, p.K, b16, stream);
    for (int64_t m0 = 0; m0 < p.M && err == cudaSuccess; m0 += mc) {
      g.M = std::min(mc, p.M - m0);
      g.out = static_cast<T*>(p.out) + m0 * p.ldo + n0;
      if (n0 == 0 || mc < p.M)
        err = decode_rows(a + m0 * p.lda, p.a_sf + m0 * p.lda_sf, p.lda, p.lda_sf, g.M, p.K, a16, stream);
      if (err == cudaSuccess) err = gemm::run<T, gemm::F16Operands>(a16, p.K, b16, p.K, g, stream);
    }
  }
  return err;
}

// Bytes of the op's scratch: small M, A's fragments (M in 17..64); M > 64, a chunk of B and one of
// A in FP16.
int64_t scratch_bytes(const GemmNvfp4Params& p) {
  if (p.M < 1 || p.N < 1 || p.K < 16) return 0;
  if (small_m(p)) return small_m_scratch(p);
  return decoded_b_bytes(p) + chunk_rows(p.M, p.K) * p.K * 2;
}

template <typename T>
cudaError_t launch(const GemmNvfp4Params& p, cudaStream_t stream) {
  if (small_m(p)) {
    if (p.M > 16 && p.scratch == nullptr) return cudaErrorNotSupported;
    switch ((p.M + 15) / 16) {
      case 1: return launch_small_m<T, 1>(p, stream);
      case 2: return launch_small_m<T, 2>(p, stream);
      case 3: return launch_small_m<T, 3>(p, stream);
      default: return launch_small_m<T, 4>(p, stream);
    }
  }
  if (p.scratch == nullptr || !gemm::sizes_ok<gemm::F16Operands>(p.M, p.N, p.K)) return cudaErrorNotSupported;
  return launch_decoded<T>(p, stream);
}

}  // namespace
}  // namespace sm90a

int64_t gemm_nvfp4_scratch(const GemmNvfp4Params& p) { return sm90a::scratch_bytes(p); }

cudaError_t gemm_nvfp4(const GemmNvfp4Params& params, cudaStream_t stream) {
  GemmNvfp4Params p = params;
  if (p.M == 1) p.ldo = (p.N + 7) / 8 * 8;  // a lone row never moves
  const bool bias_ok = p.bias == nullptr || p.bias_dtype == ScalarType::BFloat16 ||
                       p.bias_dtype == ScalarType::Float16 || p.bias_dtype == ScalarType::Float32;
  if ((p.out_dtype != ScalarType::BFloat16 && p.out_dtype != ScalarType::Float16) || !bias_ok || p.M < 0 ||
      p.N < 0 || p.K < 16 || p.K % 16 != 0)
    return cudaErrorNotSupported;
  if (p.M == 0 || p.N == 0) return cudaSuccess;  // nothing to write (an empty operand's pointer may be null)
  if (p.a_gs == nullptr || p.b_gs == nullptr || p.a_sf == nullptr ||
      p.b_sf == nullptr || (p.M > 1 && (p.lda < p.K / 2 || p.lda % 8 != 0 || p.lda_sf < p.K / 16)) ||
      (p.N > 1 && (p.ldb < p.K / 2 || p.ldb % 8 != 0 || p.ldb_sf < p.K / 16)) ||
      p.ldo < p.N || !is_aligned(p.a, 8) || !is_aligned(p.b, 8))
    return cudaErrorNotSupported;
  return p.out_dtype == ScalarType::BFloat16 ? sm90a::launch<__nv_bfloat16>(p, stream)
                                             : sm90a::launch<__half>(p, stream);
}

}  // namespace ac4k
