"""Pure-torch definition of `ac4k_kernel.rope3d`: the 3D rotary embedding of Wan 2.x.

Runs on CPU or CUDA tensors alike.
"""
from __future__ import annotations

import torch

__all__ = ["rope3d", "rope3d_freqs", "rope3d_split"]


def _rope_params(n: int, dim: int, theta: float) -> torch.Tensor:
    """Wan's rope_params: polar(1, outer(arange(n), 1 / theta ** (arange(0, dim, 2) / dim))), float64."""
    inv = 1.0 / torch.pow(torch.tensor(theta, dtype=torch.float64),
                          torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    ang = torch.outer(torch.arange(n, dtype=torch.float64), inv)
    return torch.polar(torch.ones_like(ang), ang)


def rope3d_split(head_dim: int) -> tuple:
    """How the head_dim/2 frequency pairs split over (frame, height, width): (c - 2*(c//3), c//3, c//3)."""
    if head_dim <= 0 or head_dim % 2:
        raise ValueError(f"head_dim must be even and positive, got {head_dim}")
    c = head_dim // 2
    if c // 3 == 0:
        raise ValueError(f"head_dim {head_dim} is too small to split into frame/height/width pairs (need >= 6)")
    return (c - 2 * (c // 3), c // 3, c // 3)


def rope3d_freqs(max_pos: int, head_dim: int, theta: float = 10000.0) -> torch.Tensor:
    """The complex128 table [max_pos, head_dim/2] that Wan builds:

        cat([rope_params(max_pos, d - 4*(d//6)), rope_params(max_pos, 2*(d//6)),
             rope_params(max_pos, 2*(d//6))], dim=1)          (d = head_dim)
        rope_params(n, dim) = polar(1, outer(arange(n), 1 / theta ** (arange(0, dim, 2) / dim)))

    Each axis restarts its frequencies at theta^0, so column 0 of each split rotates by the
    position itself.
    """
    rope3d_split(head_dim)
    if max_pos <= 0:
        raise ValueError(f"max_pos must be positive, got {max_pos}")
    d = head_dim
    return torch.cat([
        _rope_params(max_pos, d - 4 * (d // 6), theta),
        _rope_params(max_pos, 2 * (d // 6), theta),
        _rope_params(max_pos, 2 * (d // 6), theta),
    ], dim=1)


def rope3d(x: torch.Tensor, grid_sizes, freqs: torch.Tensor) -> torch.Tensor:
    """Wan 2.x 3D RoPE.

    x [B, S, H, D]; grid_sizes [B, 3] integers (frames f, height h, width w) per sample;
    freqs [max_pos, D/2] complex (as from `rope3d_freqs`). With c = D/2, the c pairs split as
    (c - 2*(c//3), c//3, c//3) over the (frame, height, width) axes. For sample i, token
    t < f*h*w sits at (t // (h*w), (t // w) % h, t % w); pair p of the last dim, the complex
    number x[..., 2p] + i x[..., 2p+1], is multiplied in complex128 by
    freqs[pos_axis(p), p] (the table's column p, row = the token's position on p's axis).
    Tokens t >= f*h*w (padding) are copied unchanged. Returns x's dtype and shape.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x must be a 4-D tensor [B, S, H, D], got {getattr(x, 'shape', type(x))}")
    if not (x.is_floating_point()):
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
    B, S, H, D = x.shape
    if D % 2:
        raise ValueError(f"x head dim D must be even, got {D}")
    try:
        split = rope3d_split(D)
    except ValueError as e:
        raise ValueError(f"x head dim: {e}") from None
    c = D // 2

    gs = grid_sizes if isinstance(grid_sizes, torch.Tensor) else torch.tensor(grid_sizes)
    if gs.dim() != 2 or gs.shape[0] != B or gs.shape[1] != 3:
        raise ValueError(f"grid_sizes must have shape [B, 3] = [{B}, 3], got {tuple(gs.shape)}")
    if gs.is_floating_point() or gs.is_complex() or gs.dtype == torch.bool:
        raise ValueError(f"grid_sizes must hold integers, got {gs.dtype}")
    sizes = gs.tolist()
    for i, (f, h, w) in enumerate(sizes):
        if min(f, h, w) < 0:
            raise ValueError(f"grid_sizes[{i}] = {(f, h, w)} has a negative size")
        if f * h * w > S:
            raise ValueError(f"grid_sizes[{i}] = {(f, h, w)} covers {f * h * w} tokens, more than x's S = {S}")

    if not isinstance(freqs, torch.Tensor) or not freqs.is_complex():
        raise ValueError(f"freqs must be a complex tensor, got {getattr(freqs, 'dtype', type(freqs))}")
    if freqs.dim() != 2 or freqs.shape[1] != c:
        raise ValueError(f"freqs must have shape [max_pos, D/2 = {c}], got {tuple(freqs.shape)}")
    need = max((max(s) for s in sizes), default=0)
    if need > freqs.shape[0]:
        raise ValueError(f"freqs has {freqs.shape[0]} positions, grid_sizes needs {need}")

    table = freqs.to(device=x.device, dtype=torch.complex128)
    c0, c1 = split[0], split[0] + split[1]
    out = x.clone()
    for i, (f, h, w) in enumerate(sizes):
        n = f * h * w
        if n == 0:
            continue
        t = torch.arange(n, device=x.device)
        mult = torch.cat([
            table[t // (h * w), :c0],
            table[(t // w) % h, c0:c1],
            table[t % w, c1:],
        ], dim=-1)  # [n, c]
        xc = torch.view_as_complex(x[i, :n].to(torch.float64).reshape(n, H, c, 2).contiguous())
        rot = torch.view_as_real(xc * mult[:, None, :]).reshape(n, H, D)
        out[i, :n] = rot.to(x.dtype)
    return out
