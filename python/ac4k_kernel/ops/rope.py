"""rope3d: Python → torch.ops.ac4k.rope3d → launcher (lib/cuda/<arch>/rope3d.cu).
Semantics: ac4k_kernel.reference.rope3d (Wan 2.x)."""
from __future__ import annotations

from typing import Optional

import torch

from ._common import require_op


def rope3d(x: torch.Tensor, grid_sizes: torch.Tensor, freqs: torch.Tensor, *,
           out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """3D RoPE over (frame, height, width) positions, Wan semantics; tokens past f*h*w copied."""
    require_op("rope3d", "rope3d", "bf16", {"bf16": "rope3d"})
    raise NotImplementedError("rope3d is registered but not wired yet")  # unreachable today
