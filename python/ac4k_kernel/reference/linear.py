"""Pure-torch definitions of `ac4k_kernel.linear`: y = x @ W^T + b with a pre-quantized W.

x is quantized on the fly (per token); runs on CPU or CUDA tensors alike.
"""
from __future__ import annotations

from typing import Optional

import torch

from .quant import NVFP4_BLOCK, QuantizedTensor, dequantize, e2m1_decode, quantize_fp8, quantize_nvfp4, unpack_fp4

__all__ = ["gemm_fp8", "gemm_nvfp4", "linear_fp8", "linear_nvfp4", "quantize_weight_fp8", "quantize_weight_nvfp4"]


def _check_weight(w: torch.Tensor) -> None:
    if not isinstance(w, torch.Tensor) or w.dim() != 2:
        raise ValueError(f"weight must be a 2-D tensor [N, K], got {getattr(w, 'shape', type(w))}")


def quantize_weight_fp8(w: torch.Tensor) -> QuantizedTensor:
    """W [N, K] -> FP8 E4M3 with one scale per output channel (row of W): quantize_fp8(w, "per_token"),
    scales [N] = amax(|W[n, :]|) / 448."""
    _check_weight(w)
    return quantize_fp8(w, "per_token")


def quantize_weight_nvfp4(w: torch.Tensor) -> QuantizedTensor:
    """W [N, K] -> NVFP4 along K (blocks of 16, E4M3 block scales, FP32 global scale): quantize_nvfp4(w),
    plain scale layout. K must be a multiple of 16."""
    _check_weight(w)
    return quantize_nvfp4(w)


def _check_linear(x, wq, bias, precision):
    if not isinstance(wq, QuantizedTensor):
        raise ValueError(f"weight must be a QuantizedTensor made by quantize_weight_*, got {type(wq).__name__}")
    if wq.precision != precision:
        raise ValueError(f"weight precision must be {precision!r}, got {wq.precision!r}")
    if len(wq.shape) != 2:
        raise ValueError(f"weight must be 2-D [N, K], got shape {tuple(wq.shape)}")
    if not isinstance(x, torch.Tensor) or x.dim() < 1:
        raise ValueError("x must be a tensor [..., K]")
    N, K = wq.shape
    if x.shape[-1] != K:
        raise ValueError(f"x's last dim K = {x.shape[-1]} != weight K = {K}")
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != N):
        raise ValueError(f"bias must have shape [N] = [{N}], got {tuple(bias.shape)}")
    return N, K


def gemm_fp8(a: torch.Tensor, a_scale: torch.Tensor, b: torch.Tensor, b_scale: torch.Tensor,
             bias: Optional[torch.Tensor] = None, out_dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """The GEMM of `linear_fp8` (torch.ops.ac4k.gemm_fp8): a [M, K] and b [N, K] float8_e4m3fn,
    a_scale [M] and b_scale [N] float32, bias [N] (any float dtype) or None:

        out[m, n] = float32(sum_k float(a[m, k]) * float(b[n, k])) * a_scale[m] * b_scale[n] + bias[n]
    in fp32, left to right; the dot is exact (e4m3 products summed in fp64) and rounded once.
    """
    dot = (a.double() @ b.double().T).float()
    y = dot * a_scale.float().unsqueeze(-1) * b_scale.float()
    if bias is not None:
        y = y + bias.float()
    return y.to(out_dtype)


def _decode_nvfp4_blocks(v: torch.Tensor, sf: torch.Tensor) -> torch.Tensor:
    """Packed E2M1 [rows, K/2] times plain E4M3 block scales [rows, K/16] -> float64 [rows, K], exact."""
    rows, K = v.shape[0], v.shape[1] * 2
    codes = e2m1_decode(unpack_fp4(v)).double().reshape(rows, K // NVFP4_BLOCK, NVFP4_BLOCK)
    return (codes * sf.double().reshape(rows, K // NVFP4_BLOCK, 1)).reshape(rows, K)


def gemm_nvfp4(a: torch.Tensor, a_scales: torch.Tensor, a_global_scale: torch.Tensor, b: torch.Tensor,
               b_scales: torch.Tensor, b_global_scale: torch.Tensor, bias: Optional[torch.Tensor] = None,
               out_dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """The GEMM of linear(precision="nvfp4") (torch.ops.ac4k.gemm_nvfp4), the math of a Blackwell
    block-scaled NVFP4 GEMM: a [M, K/2] and b [N, K/2] packed E2M1 (uint8, even k in the low nibble),
    a_scales [M, K/16] / b_scales [N, K/16] plain E4M3 block scales, float32 global scales of one
    element, bias [N] (any float dtype) or None:

        dec(v)[r, k] = e2m1(v[r, k]) * e4m3(v_scales[r, k // 16])          (exact)
        out[m, n]    = float32(sum_k dec(a)[m, k] * dec(b)[n, k]) * a_gs * b_gs + bias[n]
    in fp32, left to right; the dot is summed in fp64 (exact for any realistic scales) and rounded once.
    """
    dot = (_decode_nvfp4_blocks(a, a_scales) @ _decode_nvfp4_blocks(b, b_scales).T).float()
    y = dot * a_global_scale.float().reshape(()) * b_global_scale.float().reshape(())
    if bias is not None:
        y = y + bias.float()
    return y.to(out_dtype)


def linear_fp8(x: torch.Tensor, wq: QuantizedTensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """FP8 linear: per-token x scales times per-output-channel W scales.

        xq = quantize_fp8(x, "per_token")                       (scales x.shape[:-1])
        y[t, n] = float32(sum_k float(xq[t, k]) * float(wq[n, k])) * x_scale[t] * w_scale[n] + bias[n]
    in fp32, left to right; the dot is exact (e4m3 products summed in fp64) and rounded once.
    Output bfloat16, or float16 when x is float16. Shape [..., N].
    """
    _check_linear(x, wq, bias, "fp8e4m3")
    if wq.granularity != "per_token":
        raise ValueError(f"fp8 weight must be quantized per output channel (per_token), got {wq.granularity!r}")
    xq = quantize_fp8(x, "per_token")
    N, K = wq.shape
    y = gemm_fp8(xq.values.reshape(-1, K), xq.scales.reshape(-1), wq.values, wq.scales, bias,
                 torch.float16 if x.dtype == torch.float16 else torch.bfloat16)
    return y.reshape(*x.shape[:-1], N)


def linear_nvfp4(x: torch.Tensor, wq: QuantizedTensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """NVFP4 linear.

        xq = quantize_nvfp4(x)                                   (plain scales, x's own global scale)
        y  = float32(dequantize(xq) @ dequantize(wq)^T) + bias   (the dequantized fp32 values
                                                                   multiplied and summed in fp64)
    Output x's dtype, shape [..., N]. K must be a multiple of 16.
    The kernel path (quantize_nvfp4 of x, then gemm_nvfp4) applies the two global scales after the dot
    instead of inside each dequantized value: the same numbers up to FP32 rounding (~2^-24 relative).
    """
    _check_linear(x, wq, bias, "nvfp4")
    xd = dequantize(quantize_nvfp4(x)).double()
    wd = dequantize(wq).double()
    y = (xd @ wd.T).float()
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)
