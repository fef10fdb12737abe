"""quantize / dequantize: Python → torch.ops.ac4k.quantize_{int8,fp8,nvfp4} (lib/cuda_bindings.cc)
→ ac4k::quantize_* launcher (lib/cuda/<arch>/quantize_*.cu)."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from ..reference import quant as _ref
from ..reference.quant import QuantizedTensor
from ._common import require_cuda, require_op

_OP = {"int8": "quantize_int8", "fp8e4m3": "quantize_fp8", "nvfp4": "quantize_nvfp4"}


def quantize(x: torch.Tensor, *, precision: str, granularity: str = "per_token", block_size: Optional[int] = None,
             scale_layout: str = "plain", layout: str = "BNHD",
             out: Optional[Union[QuantizedTensor, Sequence[torch.Tensor]]] = None) -> QuantizedTensor:
    """Quantize a bf16/fp16 CUDA tensor; the exact format is `ac4k_kernel.reference.quantize`.

    precision: "int8" | "fp8e4m3" | "nvfp4".
    granularity (int8, fp8): "per_token" (a scale per row of the last dim), "per_block" (block_size
    tokens of one head, x [B,S,H,D] for layout "BNHD" or [B,H,S,D] for "BHND"), "per_channel".
    scale_layout (nvfp4): "plain" or "swizzled" (the 128x4 layout of Blackwell block-scaled GEMMs).
    out: (values, scales) buffers to write into, shaped and typed as the result would be.
    Returns QuantizedTensor(values, scales, global_scale, ...).
    """
    if granularity not in _ref.GRANULARITIES:
        raise ValueError(f"quantize: granularity must be one of {_ref.GRANULARITIES}, got {granularity!r}")
    if layout not in _ref.LAYOUTS:
        raise ValueError(f"quantize: layout must be one of {_ref.LAYOUTS}, got {layout!r}")
    if scale_layout not in _ref.SCALE_LAYOUTS:
        raise ValueError(f"quantize: scale_layout must be one of {_ref.SCALE_LAYOUTS}, got {scale_layout!r}")
    if granularity == "per_block" and (block_size is None or block_size <= 0):
        raise ValueError("quantize: granularity='per_block' needs block_size > 0")
    require_op(_OP.get(precision, ""), "quantize", precision, _OP)
    require_cuda(x, "quantize", "x")
    bs = int(block_size or 0)
    op = getattr(torch.ops.ac4k, _OP[precision])
    if out is not None:
        values, scales = out[0], out[1]
        getattr(torch.ops.ac4k, _OP[precision] + "_out")(x, granularity, bs, layout, values, scales)
    else:
        values, scales = op(x, granularity, bs, layout)
    return QuantizedTensor(values, scales, None, precision, granularity, bs, scale_layout, layout, tuple(x.shape))


def dequantize(q: QuantizedTensor, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """values × scales back to `dtype` (torch ops on the tensors' device; the inverse of `quantize`)."""
    return _ref.dequantize(q, dtype)
