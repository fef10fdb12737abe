"""GPU tests of rope3d against the fp64 reference (ac4k_kernel.reference.rope3d): at most one ulp
of the output dtype apart, tokens past f*h*w copied exactly, per-sample grids, strided and in-place
calls, both freqs forms, and the errors."""
import pytest
import torch

import ac4k_kernel
from ac4k_kernel import reference as ref

pytestmark = pytest.mark.skipif(not torch.cuda.is_available() or "rope3d" not in ac4k_kernel.get_info()["ops"],
                                reason="needs a CUDA GPU and the rope3d kernel")


def _ulps(a, b):
    """|a - b| in units of the last place of the reference value b (a, b of one 16-bit dtype)."""
    bits = 7 if b.dtype == torch.bfloat16 else 10
    bf = b.float()
    exp = torch.floor(torch.log2(bf.abs().clamp_min(torch.finfo(b.dtype).tiny)))
    return ((a.float() - bf).abs() / torch.exp2(exp - bits)).max().item()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("B,S,H,D,grids", [
    (1, 300, 3, 128, [[3, 10, 9]]),            # 270 of 300 tokens rotated, 30 copied
    (2, 257, 5, 64, [[2, 8, 16], [1, 16, 15]]),  # per-sample grids, odd S
    (1, 32, 2, 128, [[1, 4, 8]]),               # grid covers every token
    (1, 16, 1, 128, [[0, 4, 4]]),               # empty grid: a copy
])
def test_rope3d_matches_reference(dtype, B, S, H, D, grids):
    g = torch.Generator(device="cuda").manual_seed(S + D)
    x = torch.randn(B, S, H, D, device="cuda", generator=g).to(dtype)
    grid = torch.tensor(grids)
    freqs = ref.rope3d_freqs(64, D)
    want = ref.rope3d(x, grid, freqs)
    for gs in (grid, grid.cuda()):  # host-checked and device-checked grid sizes
        got = torch.full_like(x, float("nan"))
        ac4k_kernel.rope3d(x, gs, freqs, out=got)
        assert _ulps(got, want) <= 1.0
    for i, (f, h, w) in enumerate(grids):
        n = f * h * w
        assert torch.equal(ac4k_kernel.rope3d(x, grid, freqs)[i, n:], x[i, n:])


def test_rope3d_cos_sin_strided_and_in_place():
    grid = torch.tensor([[2, 4, 5]])
    freqs = ref.rope3d_freqs(16, 128)
    cos_sin = (freqs.real.float(), freqs.imag.float())
    base = torch.randn(1, 40, 6, 128, device="cuda").to(torch.bfloat16)
    for x in (base[:, :, 1:5],  # 4 of 6 heads: strided tokens
              torch.randn(1, 3, 40, 128, device="cuda").to(torch.bfloat16).transpose(1, 2)):  # BHND memory
        want = ref.rope3d(x, grid, freqs)
        assert _ulps(ac4k_kernel.rope3d(x, grid, cos_sin), want) <= 1.0
        y = x.clone()
        ac4k_kernel.rope3d(y, grid, freqs.to(torch.complex64), out=y)
        assert _ulps(y, want) <= 1.0


def test_rope3d_errors():
    x = torch.randn(1, 16, 2, 128, device="cuda", dtype=torch.bfloat16)
    freqs = ref.rope3d_freqs(8, 128)
    with pytest.raises(ValueError, match="covers"):
        ac4k_kernel.rope3d(x, torch.tensor([[2, 3, 3]]), freqs)
    with pytest.raises(ValueError, match="positions"):
        ac4k_kernel.rope3d(x, torch.tensor([[1, 1, 9]]), freqs)
    with pytest.raises(ValueError, match="shape"):
        ac4k_kernel.rope3d(x, torch.tensor([[1, 1, 1], [1, 1, 1]]), freqs)
    with pytest.raises(ValueError, match="D/2"):
        ac4k_kernel.rope3d(x, torch.tensor([[1, 1, 1]]), ref.rope3d_freqs(8, 64))
    with pytest.raises(TypeError, match="bfloat16"):
        ac4k_kernel.rope3d(x.float(), torch.tensor([[1, 1, 1]]), freqs)
    with pytest.raises(ValueError, match="multiple of 8"):
        ac4k_kernel.rope3d(torch.randn(1, 16, 2, 36, device="cuda", dtype=torch.bfloat16), torch.tensor([[1, 1, 1]]),
                           ref.rope3d_freqs(8, 36))
    with pytest.raises(ValueError, match="integers"):
        ac4k_kernel.rope3d(x, torch.tensor([[1.0, 1.0, 1.0]]), freqs)
