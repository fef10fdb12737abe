"""linear: Python → torch.ops.ac4k.gemm_<precision> → launcher (lib/cuda/<arch>/gemm_*.cu).
Semantics: ac4k_kernel.reference.linear."""
from __future__ import annotations

from typing import Optional

import torch

from ..reference.quant import QuantizedTensor
from ._common import require_op

_OP = {"fp8e4m3": "gemm_fp8", "nvfp4": "gemm_nvfp4"}


def quantize_weight(w: torch.Tensor, *, precision: str = "fp8e4m3") -> QuantizedTensor:
    """Pre-quantize a [N, K] weight for `linear` (per output channel for fp8, 16-blocks for nvfp4)."""
    require_op(_OP.get(precision, ""), "quantize_weight", precision, _OP)
    raise NotImplementedError("linear kernels are registered but not wired yet")  # unreachable today


def linear(x: torch.Tensor, weight: QuantizedTensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """y = x @ Wᵀ + b with x quantized on the fly and W from `quantize_weight`; output in x's dtype."""
    precision = getattr(weight, "precision", None)
    require_op(_OP.get(precision, ""), "linear", precision, _OP)
    raise NotImplementedError("linear kernels are registered but not wired yet")  # unreachable today
