// gemm_fp8 for sm90a: out = (A B^T) * a_scale[m] * b_scale[n] + bias[n], A [M, K] and B [N, K]
// in FP8 E4M3 (both K-major: the per-token activations and the weight as stored), out bf16 / fp16;
// ac4k_kernel.reference.linear_fp8 after the activation quantization. The kernel is sm90a's
// persistent warp-specialized GEMM (gemm_wgmma.cuh) on E4M3 operands, with the FP8 accumulator
// promoted into FP32 every 128 of K.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "ac4k_kernel/ops.h"
#include "ac4k_kernel/types.h"
#include "sm90a/gemm_wgmma.cuh"

namespace ac4k {

cudaError_t gemm_fp8(const GemmFp8Params& params, cudaStream_t stream) {
  GemmFp8Params p = params;
  if (p.M == 1) p.lda = p.K;
  if (p.N == 1) p.ldb = p.K;
  if (p.M == 1) p.ldo = (p.N + 7) / 8 * 8;  // a lone row never moves
  const bool bias_ok = p.bias == nullptr || p.bias_dtype == ScalarType::BFloat16 ||
                       p.bias_dtype == ScalarType::Float16 || p.bias_dtype == ScalarType::Float32;
  if ((p.out_dtype != ScalarType::BFloat16 && p.out_dtype != ScalarType::Float16) || !bias_ok || p.M < 0 ||
      p.N < 0 || p.K < 16 || p.K % 16 != 0 || p.lda < p.K || p.ldb < p.K || p.lda % 16 != 0 || p.ldb % 16 != 0 ||
      (p.M > 0 && p.N > 0 && p.ldo < p.N) || !is_aligned(p.a, 16) || !is_aligned(p.b, 16))
    return cudaErrorNotSupported;
  if (p.M == 0 || p.N == 0) return cudaSuccess;
  if (!sm90a::gemm::sizes_ok<sm90a::gemm::E4m3Operands>(p.M, p.N, p.K)) return cudaErrorNotSupported;
  sm90a::gemm::Args g;
  g.a_scale = p.a_scale;
  g.b_scale = p.b_scale;
  g.bias = p.bias;
  g.bias_dtype = p.bias_dtype;
  g.out = p.out;
  g.M = p.M, g.N = p.N, g.K = p.K, g.ldo = p.ldo;
  using Op = sm90a::gemm::E4m3Operands;
  return p.out_dtype == ScalarType::BFloat16 ? sm90a::gemm::run<__nv_bfloat16, Op>(p.a, p.lda, p.b, p.ldb, g, stream)
                                             : sm90a::gemm::run<__half, Op>(p.a, p.lda, p.b, p.ldb, g, stream);
}

}  // namespace ac4k
