"""CPU tests of the 3D RoPE reference (ac4k_kernel.reference.rope)."""
import math

import pytest
import torch

from ac4k_kernel.reference.rope import rope3d, rope3d_freqs

THETA = 10000.0


def _wan_rope_apply(x, grid_sizes, freqs):
    """Wan 2.x's rope_apply, kept to its loop, returning float64 (Wan returns .float())."""
    n, c = x.size(2), x.size(3) // 2
    freqs = freqs.split([c - 2 * (c // 3), c // 3, c // 3], dim=1)
    output = []
    for i, (f, h, w) in enumerate(grid_sizes.tolist()):
        seq_len = f * h * w
        x_i = torch.view_as_complex(x[i, :seq_len].to(torch.float64).reshape(seq_len, n, -1, 2))
        freqs_i = torch.cat([
            freqs[0][:f].view(f, 1, 1, -1).expand(f, h, w, -1),
            freqs[1][:h].view(1, h, 1, -1).expand(f, h, w, -1),
            freqs[2][:w].view(1, 1, w, -1).expand(f, h, w, -1),
        ], dim=-1).reshape(seq_len, 1, -1)
        x_i = torch.view_as_real(x_i * freqs_i).flatten(2)
        x_i = torch.cat([x_i, x[i, seq_len:].to(torch.float64)])
        output.append(x_i)
    return torch.stack(output)


def _angles(pos_fhw, D):
    """Rotation angle of every pair for one token at (frame, height, width), from the formula."""
    c = D // 2
    split = (c - 2 * (c // 3), c // 3, c // 3)
    out = []
    for pos, n in zip(pos_fhw, split):
        dim = 2 * n
        out += [pos / THETA ** (2 * r / dim) for r in range(n)]
    return torch.tensor(out, dtype=torch.float64)


def _rotate_cos_sin(x, grid_sizes):
    """Explicit (a, b) -> (a cos t - b sin t, a sin t + b cos t) per pair, token by token."""
    B, S, H, D = x.shape
    out = x.double().clone()
    for i, (f, h, w) in enumerate(grid_sizes.tolist()):
        for t in range(f * h * w):
            ang = _angles((t // (h * w), (t // w) % h, t % w), D)
            a, b = x[i, t, :, 0::2].double(), x[i, t, :, 1::2].double()
            out[i, t, :, 0::2] = a * torch.cos(ang) - b * torch.sin(ang)
            out[i, t, :, 1::2] = a * torch.sin(ang) + b * torch.cos(ang)
    return out


def _x(B, S, H, D, seed, dtype):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, S, H, D, generator=g).to(dtype)


@pytest.mark.parametrize("D", [64, 128])
def test_freqs_table(D):
    f = rope3d_freqs(40, D)
    assert f.dtype == torch.complex128 and f.shape == (40, D // 2)
    for pos in (0, 1, 7, 39):
        ang = _angles((pos, pos, pos), D)
        torch.testing.assert_close(f[pos], torch.polar(torch.ones_like(ang), ang), rtol=1e-12, atol=1e-12)
    # Each axis restarts at theta^0: the first column of each split turns by the position.
    c = D // 2
    for col in (0, c - 2 * (c // 3), c - c // 3):
        torch.testing.assert_close(f[:, col].angle()[:4], torch.arange(4, dtype=torch.float64))


@pytest.mark.parametrize("D", [64, 128])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_matches_wan_loop(D, dtype):
    # Batch 2 with different grids and padding tokens past f*h*w.
    x = _x(2, 70, 3, D, seed=D, dtype=dtype)
    grid = torch.tensor([[3, 4, 5], [2, 6, 3]])
    freqs = rope3d_freqs(64, D)
    out = rope3d(x, grid, freqs)
    assert out.dtype == dtype and out.shape == x.shape
    torch.testing.assert_close(out, _wan_rope_apply(x, grid, freqs).to(dtype), rtol=0, atol=0)


@pytest.mark.parametrize("D", [64, 128])
def test_matches_cos_sin_rotation(D):
    x = _x(2, 40, 2, D, seed=3 + D, dtype=torch.float32)
    grid = torch.tensor([[2, 3, 5], [3, 4, 2]])  # 30 and 24 tokens, the rest padding
    out = rope3d(x, grid, rope3d_freqs(16, D))
    torch.testing.assert_close(out.double(), _rotate_cos_sin(x, grid), rtol=1e-6, atol=1e-6)


def test_padding_unchanged_pairs_keep_norm_and_origin_fixed():
    D = 128
    x = _x(2, 50, 4, D, seed=11, dtype=torch.float32)
    grid = torch.tensor([[2, 4, 5], [1, 3, 7]])  # 40 and 21 tokens
    out = rope3d(x, grid, rope3d_freqs(32, D))
    assert torch.equal(out[0, 40:], x[0, 40:]) and torch.equal(out[1, 21:], x[1, 21:])
    # Rotations: every pair keeps its length, token (0, 0, 0) is not rotated, others are.
    pn = lambda t: t.double().reshape(*t.shape[:-1], D // 2, 2).norm(dim=-1)
    torch.testing.assert_close(pn(out), pn(x), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out[:, 0], x[:, 0], rtol=1e-7, atol=1e-7)
    assert (out[0, 1:40] - x[0, 1:40]).abs().amax(dim=(-1, -2)).min() > 1e-3


def test_axes_are_distinguished():
    # Swapping height and width moves tokens to other positions, so the outputs differ.
    D = 64
    x = _x(1, 12, 2, D, seed=21, dtype=torch.float32)
    freqs = rope3d_freqs(8, D)
    a = rope3d(x, torch.tensor([[1, 3, 4]]), freqs)
    b = rope3d(x, torch.tensor([[1, 4, 3]]), freqs)
    c = rope3d(x, torch.tensor([[3, 1, 4]]), freqs)
    assert not torch.allclose(a, b, atol=1e-3) and not torch.allclose(a, c, atol=1e-3)


def test_fp16_and_empty_grid():
    x = _x(2, 16, 2, 64, seed=31, dtype=torch.float16)
    out = rope3d(x, torch.tensor([[0, 4, 4], [1, 4, 4]]), rope3d_freqs(4, 64))
    assert out.dtype == torch.float16
    assert torch.equal(out[0], x[0])  # no video tokens: all copied
    assert not torch.equal(out[1], x[1])


def test_errors():
    x = _x(2, 20, 2, 64, seed=41, dtype=torch.bfloat16)
    freqs = rope3d_freqs(8, 64)
    grid = torch.tensor([[1, 2, 3], [2, 2, 2]])
    rope3d(x, grid, freqs)  # valid
    with pytest.raises(ValueError, match="even"):
        rope3d(_x(2, 20, 2, 63, seed=1, dtype=torch.float32), grid, rope3d_freqs(8, 64))
    with pytest.raises(ValueError, match="split"):
        rope3d(_x(2, 20, 2, 4, seed=1, dtype=torch.float32), grid, torch.ones(8, 2, dtype=torch.complex128))
    with pytest.raises(ValueError, match="grid_sizes"):
        rope3d(x, grid[:, :2], freqs)
    with pytest.raises(ValueError, match="grid_sizes"):
        rope3d(x, grid[:1], freqs)
    with pytest.raises(ValueError, match="grid_sizes"):
        rope3d(x, torch.tensor([[1, 2, 3], [3, 3, 3]]), freqs)  # 27 > S = 20
    with pytest.raises(ValueError, match="grid_sizes"):
        rope3d(x, grid.float(), freqs)
    with pytest.raises(ValueError, match="freqs"):
        rope3d(x, torch.tensor([[1, 2, 9], [2, 2, 2]]), freqs)  # needs 9 positions, has 8
    with pytest.raises(ValueError, match="freqs"):
        rope3d(x, grid, rope3d_freqs(8, 128))
    with pytest.raises(ValueError, match="freqs"):
        rope3d(x, grid, freqs.real)
    with pytest.raises(ValueError, match="x"):
        rope3d(x[0], grid, freqs)
    with pytest.raises(ValueError, match="head_dim"):
        rope3d_freqs(8, 63)
    assert math.isclose(rope3d_freqs(2, 64, theta=100.0)[1, 1].angle().item(), 100.0 ** (-2 / 24))  # first split: 24 dims
