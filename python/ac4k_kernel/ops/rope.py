"""rope3d: Python -> torch.ops.ac4k.rope3d (lib/cuda_bindings.cc) -> launcher and kernel
(lib/cuda/<arch>/rope3d.cu). Semantics: ac4k_kernel.reference.rope3d (Wan 2.x)."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch

from ._common import require_cuda, require_op

Freqs = Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]


def rope3d(x: torch.Tensor, grid_sizes: Union[torch.Tensor, Sequence[Sequence[int]]], freqs: Freqs, *,
           out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """3D RoPE over (frame, height, width) positions, Wan semantics; tokens past f*h*w copied.

    x: [B, S, H, D] bf16 / fp16 CUDA tensor (D a multiple of 8, last dim contiguous, 16-byte
    aligned rows). grid_sizes: [B, 3] integers (f, h, w) per sample, a CPU tensor (as Wan makes
    it), a CUDA tensor on x's device, or nested lists. freqs: [max_pos, D/2] complex128 /
    complex64 as Wan builds it, or a (cos, sin) pair of float32 [max_pos, D/2], on x's device;
    it is read as given (no conversion per call). out: a tensor like x to write into; may be x.

    Where the checks happen (none syncs with the GPU): shapes, dtypes, devices, alignment and
    overlap on the host; CPU grid sizes on the host too (a negative size, f*h*w > S, or a size
    above max_pos raises RuntimeError), and they reach the kernel as launch arguments (B <= 32;
    larger B goes through a pinned, non-blocking copy). CUDA grid sizes are checked by the
    kernel: a bad one stops it with a device assert, and the next synchronizing call raises
    "device-side assert triggered" (the CUDA context is unusable after that).
    """
    require_op("rope3d", "rope3d", "bf16", {"bf16": "rope3d"})
    require_cuda(x, "rope3d", "x")
    gs, table, sin = rope_args(grid_sizes, freqs, "rope3d")
    if out is None:
        return torch.ops.ac4k.rope3d(x, gs, table, sin)
    torch.ops.ac4k.rope3d_out(x, gs, table, sin, out)
    return out


def rope_args(grid_sizes, freqs: Freqs, op: str):
    """(grid_sizes, freqs) as the ops take them: int64 grid sizes on their own device (no sync), the
    table and the optional sin tensor."""
    if isinstance(freqs, (tuple, list)):
        if len(freqs) != 2 or not all(isinstance(t, torch.Tensor) for t in freqs):
            raise ValueError(f"{op}: freqs as a pair must be two tensors (cos, sin)")
        table, sin = freqs
    elif isinstance(freqs, torch.Tensor):
        table, sin = freqs, None
    else:
        raise TypeError(f"{op}: freqs must be a complex tensor or a (cos, sin) pair, got {type(freqs).__name__}")
    gs = grid_sizes if isinstance(grid_sizes, torch.Tensor) else torch.tensor(grid_sizes, dtype=torch.int64)
    if gs.is_floating_point() or gs.is_complex() or gs.dtype == torch.bool:
        raise ValueError(f"{op}: grid_sizes must hold integers, got {gs.dtype}")
    if gs.dtype != torch.int64:
        gs = gs.to(torch.int64)  # on its own device: no sync
    return gs, table, sin
