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
             scale_layout: str = "plain", layout: str = "BNHD", global_scale: Optional[torch.Tensor] = None,
             out: Optional[Union[QuantizedTensor, Sequence[torch.Tensor]]] = None) -> QuantizedTensor:
    """Quantize a bf16/fp16 CUDA tensor; the exact format is `ac4k_kernel.reference.quantize`.

    precision: "int8" | "fp8e4m3" | "nvfp4".
    granularity (int8, fp8): "per_token" (a scale per row of the last dim), "per_block" (block_size
    tokens × D of one head; x [B,S,H,D] for layout "BNHD", [B,H,S,D] for "BHND", or [T,C]),
    "per_channel" (all tokens of one (b, h, d)). nvfp4 is always blocks of 16 along the last dim.
    scale_layout (nvfp4): "plain" or "swizzled" (the 128x4 layout of Blackwell block-scaled GEMMs).
    global_scale (nvfp4): a float32 CUDA tensor of one element to use instead of amax(x) / 2688
    (saves the absmax pass over x).
    out: (values, scales) buffers — (values, scales, global_scale) for nvfp4 — to write into.
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
    if precision == "nvfp4" and granularity != "per_token":
        raise ValueError("quantize: nvfp4 uses blocks of 16 along the last dim; leave granularity at its default")
    require_op(_OP.get(precision, ""), "quantize", precision, _OP)
    require_cuda(x, "quantize", "x")
    name = _OP[precision]
    if precision == "nvfp4":
        if out is not None:
            values, scales, gs = out[0], out[1], out[2]
            getattr(torch.ops.ac4k, name + "_out")(x, scale_layout, global_scale, values, scales, gs)
        else:
            values, scales, gs = getattr(torch.ops.ac4k, name)(x, scale_layout, global_scale)
        return QuantizedTensor(values, scales, gs, precision, "per_block", _ref.NVFP4_BLOCK, scale_layout, layout,
                               tuple(x.shape))
    bs = int(block_size or 0)
    if out is not None:
        values, scales = out[0], out[1]
        getattr(torch.ops.ac4k, name + "_out")(x, granularity, bs, layout, values, scales)
    else:
        values, scales = getattr(torch.ops.ac4k, name)(x, granularity, bs, layout)
    return QuantizedTensor(values, scales, None, precision, granularity, bs, "plain", layout, tuple(x.shape))


def dequantize(q: QuantizedTensor, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """values × scales back to `dtype` (torch ops on the tensors' device; the inverse of `quantize`)."""
    return _ref.dequantize(q, dtype)
