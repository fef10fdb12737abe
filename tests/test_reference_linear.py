"""CPU tests of the linear references (ac4k_kernel.reference.linear)."""
import pytest
import torch

from ac4k_kernel.reference.linear import (
    linear_fp8,
    linear_nvfp4,
    quantize_weight_fp8,
    quantize_weight_nvfp4,
)
from ac4k_kernel.reference.quant import dequantize, quantize_int8, quantize_nvfp4

# Against x.float() @ w.float().T on randn x, 0.05 * randn W (bf16; K 256..4096; 3 seeds):
#   fp8   rel L2 0.036..0.039, cos >= 0.99924;  nvfp4 rel L2 0.131..0.136, cos >= 0.9908.
BOUNDS = {"fp8": (0.05, 0.999), "nvfp4": (0.16, 0.985)}  # (max rel L2, min cosine)
E2M1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]


def _data(T, K, N, seed, dtype=torch.bfloat16, lead=()):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*lead, T, K, generator=g).to(dtype)
    w = (0.05 * torch.randn(N, K, generator=g)).to(dtype)
    b = torch.randn(N, generator=g).to(dtype)
    return x, w, b


def _fns(kind):
    return (quantize_weight_fp8, linear_fp8) if kind == "fp8" else (quantize_weight_nvfp4, linear_nvfp4)


@pytest.mark.parametrize("kind", ["fp8", "nvfp4"])
@pytest.mark.parametrize("T,K,N", [(64, 256, 128), (200, 1024, 96)])
def test_accuracy_vs_float_matmul(kind, T, K, N):
    x, w, b = _data(T, K, N, seed=K + T)
    qw, lin = _fns(kind)
    y = lin(x, qw(w), b)
    assert y.dtype == torch.bfloat16 and y.shape == (T, N)
    ref = x.float() @ w.float().T + b.float()
    yb = y.float() - b.float()
    rb = ref - b.float()
    rel = ((yb - rb).norm() / rb.norm()).item()
    cos = torch.nn.functional.cosine_similarity(yb.flatten(), rb.flatten(), dim=0).item()
    max_rel, min_cos = BOUNDS[kind]
    assert rel <= max_rel and cos >= min_cos, (rel, cos)


def test_fp8_weight_scales_per_output_channel():
    _, w, _ = _data(1, 128, 48, seed=1)
    q = quantize_weight_fp8(w)
    assert q.values.dtype == torch.float8_e4m3fn and q.values.shape == (48, 128)
    assert q.scales.shape == (48,)
    torch.testing.assert_close(q.scales, w.float().abs().amax(dim=1) / 448, rtol=0, atol=0)


def test_fp8_follows_its_formula():
    x, w, b = _data(37, 160, 24, seed=2)
    q = quantize_weight_fp8(w)
    y = linear_fp8(x, q, b)
    # Manually: per-token x scale = amax / 448, e4m3 values, exact dot, scales after the dot.
    xs = x.float().abs().amax(dim=1) / 448
    inv = torch.tensor(448.0) / x.float().abs().amax(dim=1, keepdim=True)  # IEEE division, not 448 * (1/amax)
    x8 = (x.float() * inv).clamp(-448, 448).to(torch.float8_e4m3fn)
    dot = torch.einsum("tk,nk->tn", x8.double(), q.values.double()).float()
    y_m = (dot * xs[:, None] * q.scales[None, :] + b.float()).bfloat16()
    torch.testing.assert_close(y, y_m, rtol=0, atol=0)
    # Dequantize-then-matmul rounds in another order: equal up to one bf16 step.
    y_d = (x8.float() * xs[:, None]) @ dequantize(q).T + b.float()
    torch.testing.assert_close(y.float(), y_d, rtol=2 ** -7, atol=1e-5)


def _decode_nvfp4(q, K):
    """Unpack bytes (low nibble first), E2M1 by table, times E4M3 block scale, times global scale."""
    lo, hi = q.values & 0xF, q.values >> 4
    codes = torch.empty(*q.values.shape[:-1], K, dtype=torch.uint8)
    codes[..., 0::2], codes[..., 1::2] = lo, hi
    mag = torch.tensor(E2M1)[(codes & 7).long()]
    val = torch.where(codes >= 8, -mag, mag)
    sf = q.scales.float().repeat_interleave(16, dim=-1)
    return val * sf * q.global_scale


def test_nvfp4_follows_its_formula():
    x, w, b = _data(45, 96, 40, seed=3)
    qw = quantize_weight_nvfp4(w)
    y = linear_nvfp4(x, qw, b)
    xd = _decode_nvfp4(quantize_nvfp4(x), 96)
    wd = _decode_nvfp4(qw, 96)
    y_m = ((xd.double() @ wd.double().T).float() + b.float()).bfloat16()
    torch.testing.assert_close(y, y_m, rtol=0, atol=0)
    # And the weight really is NVFP4: 16-wide blocks, E4M3 scales, global scale amax / 2688.
    assert qw.values.shape == (40, 48) and qw.scales.shape == (40, 6)
    torch.testing.assert_close(qw.global_scale, w.float().abs().max() / 2688, rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["fp8", "nvfp4"])
def test_bias_and_3d_input(kind):
    x, w, b = _data(30, 64, 32, seed=4, lead=(3,))
    qw, lin = _fns(kind)
    wq = qw(w)
    y3 = lin(x, wq, b)
    assert y3.shape == (3, 30, 32)
    torch.testing.assert_close(y3, lin(x.reshape(90, 64), wq, b).reshape(3, 30, 32), rtol=0, atol=0)
    y0 = lin(x, wq)
    torch.testing.assert_close((y3.float() - y0.float()), b.float().expand(3, 30, 32), rtol=0, atol=0.07)
    assert (y3.float() - y0.float()).abs().mean() > 0.3


def test_output_dtypes():
    for dtype, fp8_out, nv_out in [(torch.float16, torch.float16, torch.float16),
                                   (torch.float32, torch.bfloat16, torch.float32),
                                   (torch.bfloat16, torch.bfloat16, torch.bfloat16)]:
        x, w, _ = _data(8, 32, 16, seed=5, dtype=dtype)
        assert linear_fp8(x, quantize_weight_fp8(w)).dtype == fp8_out
        assert linear_nvfp4(x, quantize_weight_nvfp4(w)).dtype == nv_out


def test_errors():
    x, w, b = _data(8, 64, 16, seed=6)
    q8, q4 = quantize_weight_fp8(w), quantize_weight_nvfp4(w)
    with pytest.raises(ValueError, match="K"):
        linear_fp8(x[:, :32], q8)
    with pytest.raises(ValueError, match="K"):
        linear_nvfp4(x[:, :32], q4)
    with pytest.raises(ValueError, match="precision"):
        linear_fp8(x, q4)
    with pytest.raises(ValueError, match="precision"):
        linear_nvfp4(x, q8)
    with pytest.raises(ValueError, match="precision"):
        linear_fp8(x, quantize_int8(w, "per_token"))
    with pytest.raises(ValueError, match="bias"):
        linear_fp8(x, q8, b[:8])
    with pytest.raises(ValueError, match="weight"):
        linear_fp8(x, w)
    with pytest.raises(ValueError, match="weight"):
        quantize_weight_fp8(w[0])
    with pytest.raises(ValueError, match="weight"):
        quantize_weight_nvfp4(w[None])
    with pytest.raises(ValueError, match="16"):
        quantize_weight_nvfp4(w[:, :40])
