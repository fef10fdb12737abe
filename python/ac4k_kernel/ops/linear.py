"""linear: Python → torch.ops.ac4k.quantize_fp8 (x, per token) or quantize_nvfp4 (x, blocks of 16) +
torch.ops.ac4k.gemm_<precision> (lib/cuda_bindings.cc) → launcher (lib/cuda/<arch>/gemm_*.cu).
Semantics: ac4k_kernel.reference.linear."""
from __future__ import annotations

from typing import Optional

import torch

from ..reference import linear as _ref
from ..reference.quant import QuantizedTensor
from ._common import require_cuda, require_op
from .quant import quantize

_OP = {"fp8e4m3": "gemm_fp8", "nvfp4": "gemm_nvfp4"}
# fp8: TMA reads the 8-bit operands' rows, which must be 16-byte aligned; nvfp4: blocks of 16 along K.
K_MULTIPLE = 16


def quantize_weight(w: torch.Tensor, *, precision: str = "fp8e4m3") -> QuantizedTensor:
    """Pre-quantize a [N, K] weight (as nn.Linear stores it) for `linear`, once.

    fp8e4m3: E4M3 values [N, K] with one float32 scale per output channel (row), i.e.
    quantize(w, precision="fp8e4m3") (reference.quantize_weight_fp8).
    nvfp4: packed E2M1 [N, K/2], plain E4M3 block scales [N, K/16] (16 along K) and a float32 global
    scale, i.e. quantize(w, precision="nvfp4") (reference.quantize_weight_nvfp4); 4x smaller than bf16.
    A bf16 / fp16 CUDA weight goes through the quantize kernel; any other (CPU, float32) through the
    reference, bit-identical.
    """
    require_op(_OP.get(precision, ""), "quantize_weight", precision, _OP)
    if not isinstance(w, torch.Tensor) or w.dim() != 2:
        raise ValueError(f"quantize_weight: w must be a 2-D tensor [N, K], got {getattr(w, 'shape', type(w))}")
    if w.device.type == "cuda" and w.dtype in (torch.bfloat16, torch.float16):
        return quantize(w, precision=precision)
    return _ref.quantize_weight_fp8(w) if precision == "fp8e4m3" else _ref.quantize_weight_nvfp4(w)


def _check_weight(weight, precision: str) -> None:
    if not isinstance(weight, QuantizedTensor):
        raise TypeError("linear: weight must be a QuantizedTensor made by quantize_weight(w, precision=...), got "
                        f"{type(weight).__name__}")
    if weight.precision != precision:
        raise ValueError(f"linear: precision={precision!r} but the weight was quantized as {weight.precision!r}")
    if precision == "nvfp4":
        if (weight.values.dim() != 2 or weight.scale_layout != "plain" or weight.global_scale is None
                or len(weight.shape) != 2):
            raise ValueError("linear: the nvfp4 weight must be packed [N, K/2] with plain block scales and a global "
                             "scale (quantize_weight(w, precision='nvfp4')), got values "
                             f"{tuple(weight.values.shape)}, scale_layout {weight.scale_layout!r}")
        return
    if weight.values.dim() != 2 or weight.granularity != "per_token":
        raise ValueError("linear: the fp8 weight must be [N, K] with one scale per output channel "
                         f"(quantize_weight(w)), got values {tuple(weight.values.shape)}, granularity "
                         f"{weight.granularity!r}")


def linear(x: torch.Tensor, weight: QuantizedTensor, bias: Optional[torch.Tensor] = None, *,
           precision: Optional[str] = None, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """y = x @ Wᵀ + b: x bf16 / fp16 CUDA [..., K], quantized on the fly; weight from `quantize_weight`;
    bias [N] (bf16, fp16 or fp32) or None, added in FP32 in the GEMM's epilogue. Returns [..., N] in
    x's dtype (or writes `out`).

    precision defaults to the weight's:
      "fp8e4m3" (reference.linear_fp8): x per token (quantize(x, precision="fp8e4m3")), gemm_fp8.
      "nvfp4" (reference.linear_nvfp4, i.e. reference.gemm_nvfp4 of the quantized x): x in NVFP4 with
        its own global scale computed on the GPU (quantize(x, precision="nvfp4")), gemm_nvfp4, which on
        sm90a decodes the FP4 values exactly to 16-bit for the tensor cores: Blackwell's numbers.
    K must be a multiple of 16 (fp8: TMA reads 16-byte aligned rows; nvfp4: blocks of 16): a K that is
    not raises ValueError, with no silent padding copy.
    """
    wp = getattr(weight, "precision", None)
    precision = wp if precision is None else precision
    require_op(_OP.get(precision, ""), "linear", precision, _OP)
    _check_weight(weight, precision)
    require_cuda(x, "linear", "x")
    if x.dtype not in (torch.bfloat16, torch.float16):
        raise TypeError(f"linear: x must be bfloat16 or float16, got {x.dtype}")
    if x.dim() < 1:
        raise ValueError("linear: x must have at least one dimension [..., K]")
    N, K = weight.values.shape if precision == "fp8e4m3" else tuple(weight.shape)
    if x.shape[-1] != K:
        raise ValueError(f"linear: x's last dim ({x.shape[-1]}) must equal the weight's K ({K}); "
                         f"x {tuple(x.shape)}, weight [{N}, {K}]")
    if K % K_MULTIPLE:
        why = ("the FP8 GEMM's TMA loads need 16-byte aligned rows" if precision == "fp8e4m3"
               else "NVFP4 scales blocks of 16 along K")
        raise ValueError(f"linear: K = {K} must be a multiple of {K_MULTIPLE} ({why}); pad the weight and x "
                         "along K with zeros")
    for name, t in (("weight.values", weight.values), ("weight.scales", weight.scales),
                    ("weight.global_scale", weight.global_scale), ("bias", bias)):
        if t is not None and t.device != x.device:
            raise ValueError(f"linear: {name} is on {t.device} but x is on {x.device}")
    if bias is not None and tuple(bias.shape) != (N,):
        raise ValueError(f"linear: bias must have shape [N] = [{N}], got {tuple(bias.shape)}")
    lead = tuple(x.shape[:-1])
    if out is not None:
        require_cuda(out, "linear", "out")
        if tuple(out.shape) != lead + (N,) or out.dtype != x.dtype or not out.is_contiguous():
            raise ValueError(f"linear: out must be a contiguous {x.dtype} tensor of shape {lead + (N,)}, got "
                             f"{out.dtype} {tuple(out.shape)}")
    if precision == "nvfp4":
        xq = quantize(x, precision="nvfp4")  # plain block scales, global scale amax / 2688 on the GPU
        args = (xq.values.reshape(-1, K // 2), xq.scales.reshape(-1, K // 16), xq.global_scale, weight.values,
                weight.scales, weight.global_scale, bias)
        if out is None:
            return torch.ops.ac4k.gemm_nvfp4(*args, x.dtype).reshape(*lead, N)
        torch.ops.ac4k.gemm_nvfp4_out(*args, out.view(-1, N))
        return out
    xq = quantize(x, precision="fp8e4m3")
    a, sa = xq.values.reshape(-1, K), xq.scales.reshape(-1)
    if out is None:
        y = torch.ops.ac4k.gemm_fp8(a, sa, weight.values, weight.scales, bias, x.dtype)
        return y.reshape(*lead, N)
    torch.ops.ac4k.gemm_fp8_out(a, sa, weight.values, weight.scales, bias, out.view(-1, N))
    return out
