// Compile-only check of the sm90a wrappers (barrier.cuh, tma.cuh, wgmma.cuh): a toy
// warp-specialized S = Q.K^T (int8) -> P (e4m3) -> O += P.V kernel that ptxas must assemble
// without serializing wgmma (C7515), ignoring setmaxnreg (C7508) or spilling. Never launched.
//
//   nvcc -O3 -gencode=arch=compute_90a,code=sm_90a -std=c++17 -Iinclude -Ilib/cuda -Xptxas -v
//        -c tests/cuda/sm90a_wrappers_compile.cu -o /tmp/w.o
//   cuobjdump --dump-sass /tmp/w.o | grep -cE 'IGMMA|QGMMA|HGMMA|UTMALDG'
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "sm90a/barrier.cuh"
#include "sm90a/tma.cuh"
#include "sm90a/wgmma.cuh"

namespace ac4k {
namespace sm90a {
namespace {

constexpr int kTile = 128 * 128;  // 128 rows x 128 B, the SW128 box of Q, K and V^T
constexpr int kSmemBytes = 3 * kTile + 1024 + 64;  // + alignment slack + barriers

// e4m3x2 of (lo, hi): low byte = lo.
__device__ __forceinline__ uint32_t pack_e4m3x4(float a, float b, float c, float d) {
  const uint32_t lo = __nv_cvt_float2_to_fp8x2(make_float2(a, b), __NV_SATFINITE, __NV_E4M3);
  const uint32_t hi = __nv_cvt_float2_to_fp8x2(make_float2(c, d), __NV_SATFINITE, __NV_E4M3);
  return lo | (hi << 16);
}

// 384 threads: warpgroup 0 produces (TMA), warpgroups 1 and 2 consume 64 Q rows each.
__global__ void __launch_bounds__(384, 1)
toy_attention_kernel(const __grid_constant__ CUtensorMap q_map,
                     const __grid_constant__ CUtensorMap k_map,
                     const __grid_constant__ CUtensorMap v_map, float* out, int n_blocks,
                     float scale) {
  extern __shared__ uint8_t smem_raw[];
  // SW128 tiles must start on 1024 B; dynamic smem is only guaranteed 16 B.
  uint8_t* smem = reinterpret_cast<uint8_t*>(
      (reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
  uint8_t* q_s = smem;
  uint8_t* k_s = smem + kTile;
  uint8_t* v_s = smem + 2 * kTile;
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + 3 * kTile);
  uint64_t* empty = full + 1;

  const int wg = threadIdx.x / 128;
  if (threadIdx.x == 0) {
    mbar_init(full, 1);
    mbar_init(empty, 256);
    fence_barrier_init();
  }
  fence_proxy_async_shared();
  __syncthreads();

  if (wg == 0) {
    setmaxnreg_dec<24>();
    if (threadIdx.x / 32 == 0 && elect_one_sync()) {
      tma_prefetch_desc(&q_map);
      tma_prefetch_desc(&k_map);
      tma_prefetch_desc(&v_map);
      for (int it = 0; it < n_blocks; ++it) {
        mbar_wait(empty, (it & 1) ^ 1);  // first wait passes: the "previous" phase is complete
        mbar_arrive_expect_tx(full, 3 * kTile);
        if (n_blocks > 1000) {
          tma_load_5d(q_s, &q_map, full, 0, 0, 0, 0, blockIdx.x);
        } else {
          tma_load_2d(q_s, &q_map, full, 0, blockIdx.x * 128);
        }
        tma_load_3d(k_s, &k_map, full, 0, it * 128, blockIdx.y);
        tma_load_4d(v_s, &v_map, full, it * 128, 0, blockIdx.y, 0);
      }
    }
  } else {
    setmaxnreg_inc<240>();
    const int c = wg - 1;
    int32_t s[64];
    float o_tmp[64], o[64];
#pragma unroll
    for (int i = 0; i < 64; ++i) o[i] = 0.f;
    if (c == 1) named_barrier_arrive(1, 256);  // consumer 0 issues first

    const uint64_t q_desc = make_smem_desc_kmajor_sw128(q_s + c * 64 * 128);
    const uint64_t k_desc = make_smem_desc_kmajor_sw128(k_s);
    const uint64_t v_desc = make_smem_desc_kmajor_sw128(v_s);
    for (int it = 0; it < n_blocks; ++it) {
      mbar_wait(full, it & 1);
      named_barrier_sync(1 + c, 256);
      wgmma_fence_operand(s);
      wgmma_fence();
#pragma unroll
      for (int k = 0; k < 4; ++k)
        wgmma_s8_ss(s, smem_desc_advance(q_desc, 32 * k), smem_desc_advance(k_desc, 32 * k), k > 0);
      wgmma_commit();
      named_barrier_arrive(1 + (c ^ 1), 256);
      wgmma_wait<0>();
      wgmma_fence_operand(s);

      // P in the e4m3 A layout (V^T token-permuted, HOPPER-ATTENTION.md section 4).
      uint32_t p[4][4];
      const auto x = [&](int i) { return float(s[i]) * scale; };
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int b = 16 * i;
        p[i][0] = pack_e4m3x4(x(b), x(b + 1), x(b + 4), x(b + 5));
        p[i][1] = pack_e4m3x4(x(b + 2), x(b + 3), x(b + 6), x(b + 7));
        p[i][2] = pack_e4m3x4(x(b + 8), x(b + 9), x(b + 12), x(b + 13));
        p[i][3] = pack_e4m3x4(x(b + 10), x(b + 11), x(b + 14), x(b + 15));
      }
      wgmma_fence_operand(o_tmp);
      wgmma_fence();
#pragma unroll
      for (int k = 0; k < 4; ++k)
        wgmma_e4m3_rs(o_tmp, p[k], smem_desc_advance(v_desc, 32 * k), k > 0);
      wgmma_commit();
      wgmma_wait<0>();
      wgmma_fence_operand(o_tmp);
      mbar_arrive(empty);
#pragma unroll
      for (int i = 0; i < 64; ++i) o[i] += o_tmp[i];
    }

    const int t = threadIdx.x % 128, row = c * 64 + 16 * (t / 32) + (t % 32) / 4;
    float* o_row = out + (int64_t(blockIdx.x) * 128 + row) * 128;
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      const int col = 8 * j + 2 * (t % 4);
      *reinterpret_cast<float2*>(o_row + col) = make_float2(o[4 * j], o[4 * j + 1]);
      *reinterpret_cast<float2*>(o_row + 8 * 128 + col) = make_float2(o[4 * j + 2], o[4 * j + 3]);
    }
  }
}

// The other wgmma shapes, one small single-warpgroup kernel per family so that each
// assembles on its own register budget (all in one kernel, the compiler keeps several
// accumulator sets live at once and spills).

// Waits for every committed group (an extra empty commit_group would cost a dummy HGMMA).
template <typename T, int K>
__device__ __forceinline__ float drain(T (&d)[K]) {
  wgmma_wait<0>();
  wgmma_fence_operand(d);
  float acc = 0.f;
#pragma unroll
  for (int i = 0; i < K; ++i) acc += float(d[i]);
  return acc;
}

__device__ __forceinline__ uint64_t test_desc() {
  extern __shared__ uint8_t smem_raw[];
  return make_smem_desc_kmajor_sw128(reinterpret_cast<uint8_t*>(
      (reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023)));
}

__global__ void __launch_bounds__(128, 1) wgmma_s8_kernel(float* out) {
  const uint64_t desc = test_desc();
  int32_t s64[32], s256[128];
  wgmma_fence_operand(s64);
  wgmma_fence_operand(s256);
  wgmma_fence();
  wgmma_s8_ss(s64, desc, desc, false);
  wgmma_commit();
  wgmma_s8_ss(s256, desc, desc, false);
  wgmma_commit();
  wgmma_wait<1>();  // the n64 group is done, the n256 one may still run
  wgmma_fence_operand(s64);
  float acc = 0.f;
#pragma unroll
  for (int i = 0; i < 32; ++i) acc += float(s64[i]);
  out[threadIdx.x] = acc + drain(s256);
}

__global__ void __launch_bounds__(128, 1) wgmma_e4m3_kernel(float* out) {
  const uint64_t desc = test_desc();
  const uint32_t a[4] = {threadIdx.x, threadIdx.x * 3u, threadIdx.x * 5u, threadIdx.x * 7u};
  float f64[32];
  wgmma_fence_operand(f64);
  wgmma_fence();
  wgmma_e4m3_rs(f64, a, desc, false);
  wgmma_commit();
  out[threadIdx.x] = drain(f64);
}

__global__ void __launch_bounds__(128, 1) wgmma_bf16_kernel(float* out) {
  const uint64_t desc = test_desc();
  const uint32_t a[4] = {threadIdx.x, threadIdx.x * 3u, threadIdx.x * 5u, threadIdx.x * 7u};
  float f64[32], f128[64];
  wgmma_fence_operand(f64);
  wgmma_fence_operand(f128);
  wgmma_fence();
  wgmma_bf16_ss(f128, desc, desc, false);
  wgmma_bf16_ss<1>(f64, desc, desc, false);
  wgmma_commit();
  const float x = drain(f128) + drain(f64);
  wgmma_fence_operand(f64);
  wgmma_fence_operand(f128);
  wgmma_fence();
  wgmma_bf16_rs(f64, a, desc, false);
  wgmma_bf16_rs<1>(f128, a, desc, true);
  wgmma_commit();
  out[threadIdx.x] = x + drain(f64) + drain(f128);
}

}  // namespace

// Host side: the three maps of the toy kernel (Q [rows, 128] int8, K [heads, keys, 128] int8,
// V^T [batch, heads, 128, keys_pad] e4m3), all SW128 with 128-byte-wide boxes.
cudaError_t encode_toy_maps(CUtensorMap* q_map, CUtensorMap* k_map, CUtensorMap* v_map,
                            const void* q, const void* k, const void* v, int64_t rows,
                            int64_t heads, int64_t keys_pad) {
  const int64_t q_dims[2] = {128, rows}, q_strides[2] = {1, 128};
  const uint32_t q_box[2] = {128, 128};
  cudaError_t e = encode_tensor_map(q_map, q, ScalarType::Int8, 2, q_dims, q_strides, q_box,
                                    TmaSwizzle::B128);
  if (e != cudaSuccess) return e;
  const int64_t k_dims[3] = {128, keys_pad, heads}, k_strides[3] = {1, 128, 128 * keys_pad};
  const uint32_t k_box[3] = {128, 128, 1};
  e = encode_tensor_map(k_map, k, ScalarType::Int8, 3, k_dims, k_strides, k_box, TmaSwizzle::B128);
  if (e != cudaSuccess) return e;
  const int64_t v_dims[4] = {keys_pad, 128, heads, 1};
  const int64_t v_strides[4] = {1, keys_pad, 128 * keys_pad, 128 * keys_pad * heads};
  const uint32_t v_box[4] = {128, 128, 1, 1};
  return encode_tensor_map(v_map, v, ScalarType::Float8E4M3, 4, v_dims, v_strides, v_box,
                           TmaSwizzle::B128);
}

// Keeps the kernels referenced (and so compiled); never called by the tests.
cudaError_t launch_toy(const CUtensorMap& q_map, const CUtensorMap& k_map, const CUtensorMap& v_map,
                       float* out, int n_blocks, cudaStream_t stream) {
  cudaError_t e = cudaFuncSetAttribute(toy_attention_kernel,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes);
  if (e != cudaSuccess) return e;
  toy_attention_kernel<<<dim3(1, 1), 384, kSmemBytes, stream>>>(q_map, k_map, v_map, out,
                                                               n_blocks, 1.f);
  wgmma_s8_kernel<<<1, 128, 2048 + 1024, stream>>>(out);
  wgmma_e4m3_kernel<<<1, 128, 2048 + 1024, stream>>>(out);
  wgmma_bf16_kernel<<<1, 128, 2048 + 1024, stream>>>(out);
  return cudaGetLastError();
}

}  // namespace sm90a
}  // namespace ac4k
