"""attention: Python → torch.ops.ac4k.mha_<precision>_fwd (lib/cuda_bindings.cc) → launcher
(lib/cuda/<arch>/mha_*.cu). The recipes are defined in ac4k_kernel.reference.attention."""
from __future__ import annotations

from typing import Optional

import torch

from ._common import require_op

_OP = {"int8+fp8e4m3": "mha_int8_x_fp8_fwd", "fp8e4m3": "mha_fp8_fwd", "bf16": "mha_bf16_fwd",
       "nvfp4": "mha_nvfp4_fwd"}
# The compiled arch's fast path (fixed at build time).
DEFAULT_PRECISION = "int8+fp8e4m3"


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, layout: str = "BNHD",
              precision: str = DEFAULT_PRECISION, causal: bool = False, sm_scale: Optional[float] = None,
              return_lse: bool = False, out: Optional[torch.Tensor] = None):
    """Drop-in for scaled_dot_product_attention / flash_attn_func.

    q [B, Sq, Hq, D], k/v [B, Sk, Hkv, D] for layout "BNHD" ([B, H, S, D] for "BHND"); returns o in
    q's layout (and lse [B, Hq, Sq] float32 when return_lse). precision selects the kernel.
    """
    require_op(_OP.get(precision, ""), "attention", precision, _OP)
    raise NotImplementedError("attention kernels are registered but not wired yet")  # unreachable today
