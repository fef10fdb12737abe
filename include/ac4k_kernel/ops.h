// The operator interface: one launcher per op, the same declaration for every backend/arch.
// Each build compiles exactly one arch folder, which defines these. Launchers take plain param
// structs and a stream, never torch objects, and return cudaSuccess or the error they hit
// (cudaErrorNotSupported for an argument combination this arch does not implement).
#pragma once

#include <cuda_runtime_api.h>

#include "ac4k_kernel/types.h"

// The ops each arch folder implements (the binding registers only these; the others stay absent
// from torch.ops.ac4k, and the Python API says which precisions the build has).
#if defined(AC4K_ARCH_SM90A)
#define AC4K_HAS_QUANTIZE_NVFP4 1
#define AC4K_HAS_MHA_FP8 1
#define AC4K_HAS_MHA_BF16 1
#define AC4K_HAS_MHA_NVFP4 1
#define AC4K_HAS_MHA_ROPE 1  // q rotated inside the 8-bit attention kernel
#define AC4K_HAS_QUANTIZE_ATTENTION_Q 1  // and the 8-bit attention kernels' quantized-Q input
#define AC4K_HAS_GEMM 1
#elif defined(AC4K_ARCH_SM89)  // Ada (and consumer Blackwell until lib/cuda/sm120): mma.sync kernels
#define AC4K_HAS_QUANTIZE_NVFP4 1
#define AC4K_HAS_MHA_FP8 1
#endif

namespace ac4k {

// Symmetric INT8 (scale = amax/127, round half to even); see ac4k_kernel.reference.quantize_int8.
cudaError_t quantize_int8(const QuantizeParams& params, cudaStream_t stream);
// FP8 E4M3 (scale = amax/448, round to nearest even, saturating); reference.quantize_fp8.
cudaError_t quantize_fp8(const QuantizeParams& params, cudaStream_t stream);
// NVFP4 (E2M1 in 16-blocks, E4M3 block scales, FP32 global scale); reference.quantize_nvfp4.
cudaError_t quantize_nvfp4(const QuantizeNvfp4Params& params, cudaStream_t stream);
// Attention K and V: smoothed K to INT8 (or E4M3) per 64-token block, V to transposed, permuted FP8.
cudaError_t quantize_attention_kv(const QuantizeAttentionKvParams& params, cudaStream_t stream);
// Attention Q to INT8 (or E4M3) per 16-token block, rotated by rope3d on the way if asked; the
// 8-bit attention kernels' quantized-Q input (sm90a).
cudaError_t quantize_attention_q(const QuantizeAttentionQParams& params, cudaStream_t stream);
// Floats of params.scratch that quantize_attention_kv needs for these sizes (the caller allocates).
int64_t quantize_attention_kv_scratch(const QuantizeAttentionKvParams& params);
// Wan's 3D rotary embedding; reference.rope3d.
cudaError_t rope3d(const Rope3dParams& params, cudaStream_t stream);
// The multiplier table of params (any RopeTable form) as HiLo: float4 [max_pos, D/2] into out,
// which the fused rotations (quantize_attention_kv's K, the attention kernel's Q) read.
cudaError_t rope_table(const RopeFreqs& params, int pairs, void* out, cudaStream_t stream);
// Attention, QK^T in INT8 and PV in FP8 (Q quantized in the kernel, K and V by the op above);
// reference.attention_int8_fp8.
cudaError_t mha_int8_x_fp8_fwd(const Mha8bitParams& params, cudaStream_t stream);
// Attention, QK^T and PV in FP8 E4M3 (Q quantized in the kernel, K and V by quantize_attention_kv
// with K in E4M3); reference.attention_fp8.
cudaError_t mha_fp8_fwd(const Mha8bitParams& params, cudaStream_t stream);
// Attention in bf16 / fp16 on tensor cores, no quantization (FP32 softmax and accumulation);
// reference.attention_bf16.
cudaError_t mha_bf16_fwd(const MhaBf16Params& params, cudaStream_t stream);
// Attention in NVFP4 (Q, K, P, V; P quantized in the kernel), decoded exactly to FP16 tensor cores
// on Hopper; reference.attention_nvfp4.
cudaError_t mha_nvfp4_fwd(const MhaNvfp4Params& params, cudaStream_t stream);
// Bytes of params.scratch that mha_nvfp4_fwd needs (FP16 copies of the decoded Q, K and V^T).
int64_t mha_nvfp4_fwd_scratch(const MhaNvfp4Params& params);
// FP8 E4M3 GEMM with per-row (A) and per-column (B) scales and an optional bias;
// out = (A B^T) * a_scale * b_scale + bias (types.h GemmFp8Params).
cudaError_t gemm_fp8(const GemmFp8Params& params, cudaStream_t stream);
// NVFP4 x NVFP4 GEMM (E2M1 values, E4M3 block scales of 16 along K, FP32 global scales) with an
// optional bias; out = (dec(A) dec(B)^T) * a_gs * b_gs + bias (types.h GemmNvfp4Params).
cudaError_t gemm_nvfp4(const GemmNvfp4Params& params, cudaStream_t stream);
// Bytes of params.scratch that gemm_nvfp4 needs for these sizes (0: none; the caller allocates).
int64_t gemm_nvfp4_scratch(const GemmNvfp4Params& params);

}  // namespace ac4k
