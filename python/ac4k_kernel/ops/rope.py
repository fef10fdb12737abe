"""rope3d: Python -> torch.ops.ac4k.rope3d -> launcher and kernel (lib/cuda/<arch>/rope3d.cu).
Semantics: ac4k_kernel.reference.rope3d (Wan 2.x)."""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch

from ..reference.rope import rope3d_split
from ._common import require_cuda, require_op

Freqs = Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]


def _table(freqs: Freqs, c: int, device: torch.device) -> torch.Tensor:
    """Wan's complex freqs [max_pos, D/2] (complex128 or complex64), or (cos, sin) float32 pairs,
    as the kernel's float32 [max_pos, D/2, 2] table."""
    if isinstance(freqs, (tuple, list)):
        if len(freqs) != 2 or not all(isinstance(t, torch.Tensor) for t in freqs):
            raise ValueError("rope3d: freqs as a pair must be (cos, sin) tensors")
        cos, sin = freqs
        if cos.shape != sin.shape or cos.dim() != 2 or cos.shape[1] != c:
            raise ValueError(f"rope3d: cos and sin must both have shape [max_pos, D/2 = {c}], got "
                             f"{tuple(cos.shape)} and {tuple(sin.shape)}")
        if cos.dtype != torch.float32 or sin.dtype != torch.float32:
            raise ValueError(f"rope3d: cos and sin must be float32, got {cos.dtype} and {sin.dtype}")
        table = torch.stack([cos, sin], dim=-1)
    else:
        if not isinstance(freqs, torch.Tensor) or not freqs.is_complex():
            raise ValueError(f"rope3d: freqs must be a complex tensor or a (cos, sin) pair, got "
                             f"{getattr(freqs, 'dtype', type(freqs))}")
        if freqs.dim() != 2 or freqs.shape[1] != c:
            raise ValueError(f"rope3d: freqs must have shape [max_pos, D/2 = {c}], got {tuple(freqs.shape)}")
        table = torch.view_as_real(freqs.to(torch.complex64))
    if table.shape[0] == 0:
        raise ValueError("rope3d: freqs has no positions")
    return table.to(device).contiguous()


def rope3d(x: torch.Tensor, grid_sizes: torch.Tensor, freqs: Freqs, *,
           out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """3D RoPE over (frame, height, width) positions, Wan semantics; tokens past f*h*w copied.

    x [B, S, H, D] bf16 / fp16 (D a multiple of 8, last dim contiguous); grid_sizes [B, 3] integers;
    freqs [max_pos, D/2] complex128 / complex64 as Wan builds it, or a (cos, sin) pair of float32
    [max_pos, D/2]. out= may be x (in place).
    Checked on the host: shapes, dtypes, devices, and grid_sizes when it is a CPU tensor. When
    grid_sizes is on the GPU its values are checked by the kernel (no host sync): a grid larger
    than S or than max_pos stops the kernel with a device assert.
    """
    require_op("rope3d", "rope3d", "bf16", {"bf16": "rope3d"})
    require_cuda(x, "rope3d", "x")
    if x.dim() != 4:
        raise ValueError(f"rope3d: x must be [B, S, H, D], got shape {tuple(x.shape)}")
    if x.dtype not in (torch.bfloat16, torch.float16):
        raise TypeError(f"rope3d: x must be bfloat16 or float16, got {x.dtype}")
    B, S, H, D = x.shape
    try:
        rope3d_split(D)
    except ValueError as e:
        raise ValueError(f"rope3d: x head dim: {e}") from None
    if D % 8:
        raise ValueError(f"rope3d: x head dim must be a multiple of 8, got {D}")
    table = _table(freqs, D // 2, x.device)
    gs = grid_sizes if isinstance(grid_sizes, torch.Tensor) else torch.tensor(grid_sizes)
    if gs.dim() != 2 or gs.shape[0] != B or gs.shape[1] != 3:
        raise ValueError(f"rope3d: grid_sizes must have shape [B, 3] = [{B}, 3], got {tuple(gs.shape)}")
    if gs.is_floating_point() or gs.is_complex() or gs.dtype == torch.bool:
        raise ValueError(f"rope3d: grid_sizes must hold integers, got {gs.dtype}")
    if gs.device.type == "cpu":
        for i, (f, h, w) in enumerate(gs.tolist()):
            if min(f, h, w) < 0:
                raise ValueError(f"rope3d: grid_sizes[{i}] = {(f, h, w)} has a negative size")
            if f * h * w > S:
                raise ValueError(f"rope3d: grid_sizes[{i}] = {(f, h, w)} covers {f * h * w} tokens, more than S = {S}")
            if max(f, h, w) > table.shape[0]:
                raise ValueError(f"rope3d: freqs has {table.shape[0]} positions, grid_sizes[{i}] needs {max(f, h, w)}")
    elif gs.device != x.device:
        raise ValueError(f"rope3d: grid_sizes is on {gs.device}, x on {x.device}")
    gs = gs.to(device=x.device, dtype=torch.int64).contiguous()
    if out is None:
        return torch.ops.ac4k.rope3d(x, gs, table)
    if not isinstance(out, torch.Tensor) or out.shape != x.shape or out.dtype != x.dtype or out.device != x.device:
        raise ValueError(f"rope3d: out must be a {x.dtype} tensor of shape {tuple(x.shape)} on {x.device}")
    torch.ops.ac4k.rope3d_out(x, gs, table, out)
    return out
