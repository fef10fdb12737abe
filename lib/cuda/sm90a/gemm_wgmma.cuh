// The persistent warp-specialized GEMM of sm90a, shared by gemm_fp8 (E4M3 operands) and gemm_nvfp4
// (operands decoded exactly to FP16 first): out = (A B^T) * a_scale[m] * b_scale[n] + bias[n], A [M, K]
// and B [N, K] both K-major, out bf16 / fp16.
//
// Written from the DeepGEMM / CUTLASS descriptions (no code taken): one CTA an SM walks 128 x BN
// output tiles (blockIdx.x, + gridDim.x, ...; BN = Op::kBlockN: 160 for E4M3, 256 for FP16) with three
// warpgroups:
//   warpgroup 0      producer: one thread issues the TMA loads of A (128 rows) and B (BN rows) for
//                    each 128-byte-wide K block into kStages stages on full barriers, running ahead
//                    across tiles; a stage is refilled once all eight consumer warps released it.
//                    setmaxnreg.dec to 40 registers.
//   warpgroups 1, 2  consumers, 64 rows of the tile each (setmaxnreg.inc to 232): per K block four
//                    wgmma from shared memory (128-byte swizzle). E4M3: m64nBNk32 into a scratch
//                    accumulator, then added into the FP32 accumulator: Hopper's FP8 wgmma adds its
//                    products with a narrower accumulator (about 22 bits kept), and promoting every
//                    128 of K bounds the loss (DeepGEMM's fix); while one consumer adds, the other's
//                    wgmmas keep the tensor cores busy. FP16: m64nBNk16 straight into the FP32
//                    accumulator (16-bit wgmma accumulates in full FP32).
// Epilogue (per consumer warp, its 16 rows): acc * a_scale * b_scale + bias in FP32 (the references'
// order), rounded to bf16 / fp16, staged in shared memory, stored as 16-byte row chunks (coalesced)
// with row / column guards; a scalar path when out's rows are not 16-byte aligned (N % 8 != 0). The
// producer keeps loading the next tile meanwhile.
// Tails: TMA zero-fills rows past M / N and columns past K, so partial tiles and a K that is not a
// multiple of the K block need no masking in the main loop; stores are guarded.
// Tile order: bands of kMaxGroup n-blocks, m fastest inside a band (TileOrder, gemm_tiles.cuh).
#pragma once

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cuda/ptx>
#include <type_traits>

#include "ac4k_kernel/types.h"
#include "common/math.cuh"
#include "common/utils.cuh"
#include "sm90a/barrier.cuh"
#include "sm90a/gemm_tiles.cuh"
#include "sm90a/tma.cuh"
#include "sm90a/wgmma.cuh"

namespace ac4k {
namespace sm90a {
namespace {  // internal to each kernel file that includes this
namespace gemm {

constexpr int kBlockM = 128;       // two consumer warpgroups of 64 rows
constexpr int kBlockKBytes = 128;  // one 128-byte swizzle row a K block (E4M3: 128 of K, FP16: 64)
constexpr int kThreads = 384;
constexpr int kConsumerWarps = 8;
constexpr int kMaxGroup = 16;  // n-blocks per band of the tile order

// Operand formats: E4M3 (one byte) or FP16.
// Tile width: E4M3 keeps a scratch accumulator beside the FP32 one (2 x kBlockN / 2 registers a
// thread), FP16 accumulates in place. A wider tile reads less shared memory per product: at n128
// the two consumers' wgmmas and the TMA fills need ~160 B a clock at the full FP8 rate against
// ~128 available. Measured on the H100 (docs/perf-notes.md, session 16): FP8 n160 (5 stages)
// +2-27% over n128 and ahead of n192 (4 stages) at most shapes; FP16 n256 +27-33% at M = 32760.
#ifndef AC4K_GEMM_FP8_BLOCK_N
#define AC4K_GEMM_FP8_BLOCK_N 160
#endif
struct E4m3Operands {
  static constexpr int kBytes = 1;
  static constexpr ScalarType kType = ScalarType::Float8E4M3;
  static constexpr int kBlockN = AC4K_GEMM_FP8_BLOCK_N;  // 80 + 80 accumulator registers a thread
  static constexpr int kStages = kBlockN > 160 ? 4 : 5;   // 36 KB a stage at n160
};
#ifndef AC4K_GEMM_F16_BLOCK_N
#define AC4K_GEMM_F16_BLOCK_N 256
#endif
struct F16Operands {
  static constexpr int kBytes = 2;
  static constexpr ScalarType kType = ScalarType::Float16;
  static constexpr int kBlockN = AC4K_GEMM_F16_BLOCK_N;  // 128 accumulator registers a thread
  static constexpr int kStages = kBlockN > 128 ? 3 : 5;   // 48 KB a stage at n256
};

// What the kernel reads besides the operand maps. The scales are per row / column with a stride
// (0: one value for all, gemm_nvfp4's global scales).
struct Args {
  const float* a_scale = nullptr;
  const float* b_scale = nullptr;
  int64_t a_scale_stride = 1, b_scale_stride = 1;
  const void* bias = nullptr;  // [N] or null
  ScalarType bias_dtype = ScalarType::BFloat16;
  void* out = nullptr;
  int64_t M = 0, N = 0, K = 0, ldo = 0;
};

template <typename Op>
struct Smem {
  static constexpr int kBlockN = Op::kBlockN, kStages = Op::kStages;
  static constexpr int kTileA = kBlockM * kBlockKBytes;  // 16 KB
  static constexpr int kTileB = kBlockN * kBlockKBytes;  // 16-24 KB
  static constexpr int kPitch = kBlockN * 2 + 16;        // staged output row, bytes (padded: no bank conflicts)
  static constexpr int kWarpOut = 16 * kPitch;
  static constexpr int kA = 0;
  static constexpr int kB = kA + kStages * kTileA;
  static constexpr int kOut = kB + kStages * kTileB;
  static constexpr int kBar = kOut + kConsumerWarps * kWarpOut;
  static constexpr int kBytes = kBar + 8 * 2 * kStages;
  static_assert(kTileA % 1024 == 0 && kTileB % 1024 == 0 && kBar % 8 == 0, "1024-byte aligned tiles");
  static_assert(kBytes <= 227 * 1024, "shared memory");
};

template <typename T, typename Op>
__global__ void __launch_bounds__(kThreads, 1)
gemm_wgmma_kernel(const __grid_constant__ CUtensorMap tm_a, const __grid_constant__ CUtensorMap tm_b,
                  const Args p, const TileOrder order, const int num_tiles, const bool vec_store) {
  using Smem = gemm::Smem<Op>;
  constexpr bool kFp8 = std::is_same_v<Op, E4m3Operands>;
  constexpr int kBlockK = kBlockKBytes / Op::kBytes;
  constexpr int kBlockN = Op::kBlockN, kStages = Op::kStages;
  extern __shared__ __align__(1024) uint8_t smem[];
  // Swizzled TMA tiles and wgmma descriptors need 1024-byte alignment; the dynamic window starts
  // there on sm90 (no static shared memory in this kernel).
  if ((static_cast<uint32_t>(__cvta_generic_to_shared(smem)) & 1023u) != 0) __trap();
  uint8_t* sa = smem + Smem::kA;
  uint8_t* sb = smem + Smem::kB;
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + Smem::kBar);
  uint64_t* empty = full + kStages;
  const int num_kb = int(ceil_div(p.K, kBlockK));

  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbar_init(full + s, 1);
      mbar_init(empty + s, kConsumerWarps);  // each consumer warp releases after its own wait
    }
    fence_barrier_init();
  }
  __syncthreads();

  if (threadIdx.x < 128) {  // producer
    setmaxnreg_dec<40>();
    if (threadIdx.x == 0) {
      tma_prefetch_desc(&tm_a);
      tma_prefetch_desc(&tm_b);
      int stage = 0;
      uint32_t phase = 0;
      bool first_round = true;  // stages not filled yet: nothing to wait for
      for (int t = blockIdx.x; t < num_tiles; t += gridDim.x) {
        int mb, nb;
        order(t, mb, nb);
        for (int kb = 0; kb < num_kb; ++kb) {
          if (!first_round) mbar_wait(empty + stage, phase ^ 1u);
          mbar_arrive_expect_tx(full + stage, Smem::kTileA + Smem::kTileB);
          tma_load_2d(sa + stage * Smem::kTileA, &tm_a, full + stage, kb * kBlockK, mb * kBlockM);
          tma_load_2d(sb + stage * Smem::kTileB, &tm_b, full + stage, kb * kBlockK, nb * kBlockN);
          if (++stage == kStages) {
            stage = 0;
            phase ^= 1u;
            first_round = false;
          }
        }
      }
    }
    return;
  }

  // ---- consumers ----
  setmaxnreg_inc<232>();
  const int cw = int(threadIdx.x / 128) - 1;  // rows 64 cw .. 64 cw + 63 of the tile
  const int tid = threadIdx.x % 128, warp = tid / 32, lane = tid % 32, quad = lane % 4;
  uint8_t* stage_out = smem + Smem::kOut + (cw * 4 + warp) * Smem::kWarpOut;
  int stage = 0;
  uint32_t phase = 0;
  float acc[kBlockN / 2], tmp[kFp8 ? kBlockN / 2 : 1];

  for (int t = blockIdx.x; t < num_tiles; t += gridDim.x) {
    int mb, nb;
    order(t, mb, nb);
#pragma unroll
    for (int i = 0; i < kBlockN / 2; ++i) acc[i] = 0.f;
    for (int kb = 0; kb < num_kb; ++kb) {
      mbar_wait(full + stage, phase);
      const uint64_t da = make_smem_desc_kmajor_sw128(sa + stage * Smem::kTileA + cw * 64 * kBlockKBytes);
      const uint64_t db = make_smem_desc_kmajor_sw128(sb + stage * Smem::kTileB);
      // Four k-steps of 32 bytes (E4M3 k32, FP16 k16).
      if constexpr (kFp8) {
        wgmma_fence_operand(tmp);
        wgmma_fence();
#pragma unroll
        for (int k = 0; k < 4; ++k)
          wgmma_e4m3_ss(tmp, smem_desc_advance(da, 32 * k), smem_desc_advance(db, 32 * k), k > 0);
        wgmma_commit();
        wgmma_wait<0>();
        wgmma_fence_operand(tmp);
      } else {
        wgmma_fence_operand(acc);
        wgmma_fence();
#pragma unroll
        for (int k = 0; k < 4; ++k)
          wgmma_f16_ss(acc, smem_desc_advance(da, 32 * k), smem_desc_advance(db, 32 * k), true);
        wgmma_commit();
        wgmma_wait<0>();
        wgmma_fence_operand(acc);
      }
      if (lane == 0) (void)cuda::ptx::mbarrier_arrive(empty + stage);
      if constexpr (kFp8) {
#pragma unroll
        for (int i = 0; i < kBlockN / 2; ++i) acc[i] += tmp[i];
      }
      if (++stage == kStages) {
        stage = 0;
        phase ^= 1u;
      }
    }

    // ---- epilogue: this warp's 16 rows ----
    const int64_t row_w = int64_t(mb) * kBlockM + 64 * cw + 16 * warp;
    const int64_t col_t = int64_t(nb) * kBlockN;
    float s_row[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int64_t row = row_w + lane / 4 + 8 * r;
      s_row[r] = row < p.M ? p.a_scale[row * p.a_scale_stride] : 0.f;
    }
#pragma unroll
    for (int j = 0; j < kBlockN / 8; ++j) {
      const int c = 8 * j + 2 * quad;
      float s_col[2], b_col[2];
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int64_t col = col_t + c + e;
        const bool in = col < p.N;
        s_col[e] = in ? p.b_scale[col * p.b_scale_stride] : 0.f;
        b_col[e] = in && p.bias != nullptr ? load_bias(p.bias, p.bias_dtype, col) : 0.f;
      }
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const float v0 = acc[4 * j + 2 * r] * s_row[r] * s_col[0] + b_col[0];
        const float v1 = acc[4 * j + 2 * r + 1] * s_row[r] * s_col[1] + b_col[1];
        *reinterpret_cast<uint32_t*>(stage_out + (lane / 4 + 8 * r) * Smem::kPitch + 2 * c) = pack2<T>(v0, v1);
      }
    }
    __syncwarp();
    constexpr int kChunks = kBlockN / 8;  // 16-byte chunks a row
    T* out = static_cast<T*>(p.out);
#pragma unroll 4
    for (int k = 0; k < 16 * kChunks / 32; ++k) {
      const int i = lane + 32 * k, rr = i / kChunks, ch = i % kChunks;
      const int64_t row = row_w + rr, col = col_t + 8 * ch;
      if (row >= p.M || col >= p.N) continue;
      const uint8_t* src = stage_out + rr * Smem::kPitch + 16 * ch;
      T* dst = out + row * p.ldo + col;
      if (vec_store && col + 8 <= p.N) {
        *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
      } else {
        const T* s = reinterpret_cast<const T*>(src);
        for (int e = 0; e < 8 && col + e < p.N; ++e) dst[e] = s[e];
      }
    }
    __syncwarp();  // the staging rows are rewritten by the next tile
  }
}

// An operand [rows, K] (row stride ld elements) as a 2-D map with 128-byte x 128-row boxes.
template <typename Op>
cudaError_t encode_operand(CUtensorMap* map, const void* base, int64_t rows, int64_t K, int64_t ld, uint32_t box_rows) {
  const int64_t dims[2] = {K, rows};
  const int64_t strides[2] = {1, rows == 1 ? ((K + 15) / 16) * 16 : ld};  // a lone row never moves
  const uint32_t box[2] = {kBlockKBytes / Op::kBytes, box_rows};
  return encode_tensor_map(map, base, Op::kType, 2, dims, strides, box, TmaSwizzle::B128);
}

// A [M, K] (row stride lda elements), B [N, K] (ldb): 16-byte aligned, row strides multiples of 16 bytes.
template <typename T, typename Op>
cudaError_t run(const void* a, int64_t lda, const void* b, int64_t ldb, const Args& p, cudaStream_t stream) {
  using Smem = gemm::Smem<Op>;
  CUtensorMap ta, tb;
  cudaError_t err = encode_operand<Op>(&ta, a, p.M, p.K, lda, kBlockM);
  if (err == cudaSuccess) err = encode_operand<Op>(&tb, b, p.N, p.K, ldb, Op::kBlockN);
  if (err != cudaSuccess) return err;
  const int m_blocks = int(ceil_div(p.M, kBlockM)), n_blocks = int(ceil_div(p.N, Op::kBlockN));
  const TileOrder order{m_blocks, n_blocks, n_blocks < kMaxGroup ? n_blocks : kMaxGroup};
  const int num_tiles = m_blocks * n_blocks;
  const bool vec_store = is_aligned(p.out, 16) && p.ldo % 8 == 0;
  auto kernel = gemm_wgmma_kernel<T, Op>;
  err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Smem::kBytes);
  if (err != cudaSuccess) return err;
  const int grid = num_tiles < sm_count() ? num_tiles : sm_count();
  kernel<<<grid, kThreads, Smem::kBytes, stream>>>(ta, tb, p, order, num_tiles, vec_store);
  return last_launch_error();
}

// Sizes the 32-bit tile indices and TMA coordinates cover.
template <typename Op>
inline bool sizes_ok(int64_t M, int64_t N, int64_t K) {
  return M <= (int64_t(1) << 31) - kBlockM && N <= (int64_t(1) << 31) - Op::kBlockN &&
         ceil_div(M, kBlockM) * ceil_div(N, Op::kBlockN) < (int64_t(1) << 31) && K <= (int64_t(1) << 31) - kBlockKBytes;
}

}  // namespace gemm
}  // namespace
}  // namespace sm90a
}  // namespace ac4k
