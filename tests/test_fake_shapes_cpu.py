"""The fake (meta) kernels that torch.compile traces with, checked on the CPU through FakeTensorMode
(fake CUDA tensors need no GPU): shapes and dtypes of every op's outputs, in both layouts, and the
attention wrapper's argument checks on CUDA-placed tensors."""
import pytest
import torch

import ac4k_kernel
from ac4k_kernel import reference as ref

pytestmark = pytest.mark.skipif(ac4k_kernel.get_arch() is None, reason="needs the built extension")


def _cuda(*shape, dtype=torch.bfloat16):
    return torch.empty(*shape, dtype=dtype, device="cuda")


@pytest.mark.parametrize("precision,qdtype", [("int8", torch.int8), ("fp8e4m3", torch.float8_e4m3fn)])
@pytest.mark.parametrize("granularity,layout,want", [
    ("per_token", "BNHD", (2, 130, 3)), ("per_block", "BNHD", (2, 3, 3)), ("per_block", "BHND", (2, 130, 1)),
    ("per_channel", "BNHD", (2, 3, 64)), ("per_channel", "BHND", (2, 130, 64))])
def test_quantize_8bit_fake_shapes(fake, precision, qdtype, granularity, layout, want):
    with fake:
        x = _cuda(2, 130, 3, 64)
        q = ac4k_kernel.quantize(x, precision=precision, granularity=granularity, block_size=64, layout=layout)
    assert q.values.shape == x.shape and q.values.dtype == qdtype
    assert tuple(q.scales.shape) == want and q.scales.dtype == torch.float32
    # the reference agrees on the scale shape
    assert tuple(ref.quantize(torch.randn(2, 130, 3, 64), precision, granularity, 64, layout=layout).scales.shape) == want


@pytest.mark.parametrize("scale_layout,want", [("plain", (3, 200, 8)), ("swizzled", (640, 8))])
@pytest.mark.skipif("quantize_nvfp4" not in ac4k_kernel.get_info()["ops"],
                    reason=f"this build ({ac4k_kernel.get_arch()}) has no quantize_nvfp4")
def test_quantize_nvfp4_fake_shapes(fake, scale_layout, want):
    with fake:
        q = ac4k_kernel.quantize(_cuda(3, 200, 128), precision="nvfp4", scale_layout=scale_layout)
    assert q.values.shape == (3, 200, 64) and q.values.dtype == torch.uint8
    assert tuple(q.scales.shape) == want and q.scales.dtype == torch.float8_e4m3fn
    assert q.global_scale.shape == () and q.global_scale.dtype == torch.float32
    assert (q.granularity, q.block_size, q.scale_layout) == ("per_block", 16, scale_layout)
    assert tuple(ref.quantize_nvfp4(torch.randn(3, 200, 128), scale_layout).scales.shape) == want


@pytest.mark.parametrize("layout", ["BNHD", "BHND"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_attention_fake_shapes(fake, layout, dtype):
    def mk(S, H):
        return _cuda(2, S, H, 128, dtype=dtype) if layout == "BNHD" else _cuda(2, H, S, 128, dtype=dtype)

    with fake:
        q, k, v = mk(300, 8), mk(77, 2), mk(77, 2)
        o, lse = ac4k_kernel.attention(q, k, v, layout=layout, causal=True, return_lse=True)
        o2 = ac4k_kernel.attention(q, k, v, layout=layout, out=torch.empty_like(q))
        parts = torch.ops.ac4k.quantize_attention_kv(k, v, layout)
    assert o.shape == q.shape and o.dtype == dtype and o2.shape == q.shape
    assert lse.shape == (2, 8, 300) and lse.dtype == torch.float32
    shapes = [tuple(t.shape) for t in parts]
    kv = (2, 77, 2, 128) if layout == "BNHD" else (2, 2, 77, 128)
    assert shapes == [kv, (2, 2, 2), (2, 2, 128), (2, 2, 128, 128), (2, 2, 128)]
    assert parts[3].dtype == torch.float8_e4m3fn and parts[0].dtype == torch.int8


@pytest.mark.parametrize("layout", ["BNHD", "BHND"])
def test_quantize_attention_q_fake_shapes(fake, layout):
    if "quantize_attention_q" not in ac4k_kernel.get_info()["ops"]:
        pytest.skip("this build has no quantize_attention_q")

    def mk(S, H):
        return _cuda(2, S, H, 128) if layout == "BNHD" else _cuda(2, H, S, 128)

    with fake:
        q, k, v = mk(300, 8), mk(77, 2), mk(77, 2)
        q8, qs = torch.ops.ac4k.quantize_attention_q(q, layout, q_precision="fp8e4m3")
        k8, ks, _, vt, vs = torch.ops.ac4k.quantize_attention_kv(k, v, layout, None, None, None, "fp8e4m3")
        o, lse = torch.ops.ac4k.mha_fp8_fwd(q8, k8, ks, vt, vs, layout, False, 0.1, True, q_scale=qs,
                                            out_dtype=torch.float16)
        o_rope = ac4k_kernel.attention(q, k, v, layout=layout, rope=(torch.tensor([[3, 10, 10], [1, 1, 1]]),
                                                                     _cuda(64, 64, dtype=torch.complex128)))
    assert q8.shape == q.shape and q8.dtype == torch.float8_e4m3fn
    assert qs.shape == (2, 8, 19) and qs.dtype == torch.float32
    assert o.shape == q.shape and o.dtype == torch.float16 and lse.shape == (2, 8, 300)
    assert o_rope.shape == q.shape and o_rope.dtype == q.dtype


@pytest.mark.parametrize("layout", ["BNHD", "BHND"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_attention_bf16_fake_shapes(fake, layout, dtype):
    if "mha_bf16_fwd" not in ac4k_kernel.get_info()["ops"]:
        pytest.skip("this build has no mha_bf16_fwd")

    def mk(S, H, D=64):
        return _cuda(2, S, H, D, dtype=dtype) if layout == "BNHD" else _cuda(2, H, S, D, dtype=dtype)

    with fake:
        q, k, v = mk(300, 8), mk(77, 2), mk(77, 2)
        o, lse = ac4k_kernel.attention(q, k, v, layout=layout, causal=True, return_lse=True, precision="bf16")
        out = torch.empty_like(q)
        o2 = ac4k_kernel.attention(q, k, v, layout=layout, out=out, precision="bf16")
        o3, lse3 = torch.ops.ac4k.mha_bf16_fwd(q, k, v, layout, False, 0.125, False)
    assert o.shape == q.shape and o.dtype == dtype and o2 is out and o3.shape == q.shape
    assert lse.shape == (2, 8, 300) and lse.dtype == torch.float32 and lse3.shape == (0,)


def test_attention_argument_checks_on_cuda_tensors(fake):
    with fake:
        q = _cuda(1, 64, 4, 128)
        with pytest.raises(ValueError, match="head dim"):
            ac4k_kernel.attention(_cuda(1, 64, 4, 96), _cuda(1, 64, 4, 96), _cuda(1, 64, 4, 96))
        with pytest.raises(ValueError, match="multiple of k/v heads"):
            ac4k_kernel.attention(q, _cuda(1, 64, 3, 128), _cuda(1, 64, 3, 128))
        with pytest.raises(TypeError, match="dtype"):
            ac4k_kernel.attention(q, _cuda(1, 64, 4, 128, dtype=torch.float16), q)
        with pytest.raises(ValueError, match="same shape"):
            ac4k_kernel.attention(q, q, _cuda(1, 65, 4, 128))
        with pytest.raises(ValueError, match="at least one token"):
            ac4k_kernel.attention(q, _cuda(1, 0, 4, 128), _cuda(1, 0, 4, 128))
        with pytest.raises(ValueError, match="batch"):
            ac4k_kernel.attention(q, _cuda(2, 64, 4, 128), _cuda(2, 64, 4, 128))
        with pytest.raises(ValueError, match="out must be"):
            ac4k_kernel.attention(q, q, q, out=_cuda(1, 64, 4, 64))


def test_rope3d_fake_shapes(fake):
    with fake:
        x = _cuda(2, 300, 3, 128)
        freqs = torch.empty(64, 64, dtype=torch.complex128, device="cuda")
        cos_sin = (torch.empty(64, 64, device="cuda"), torch.empty(64, 64, device="cuda"))
        for grid in (torch.tensor([[2, 3, 4], [1, 5, 5]]), torch.empty(2, 3, dtype=torch.int32, device="cuda"),
                     [[2, 3, 4], [1, 5, 5]]):
            y = ac4k_kernel.rope3d(x, grid, freqs)
            assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device and y.is_contiguous()
            y = ac4k_kernel.rope3d(x.transpose(1, 2).contiguous().transpose(1, 2), grid, cos_sin)
            assert y.shape == x.shape and y.is_contiguous()
            out = _cuda(2, 300, 3, 128, dtype=torch.bfloat16)
            assert ac4k_kernel.rope3d(x, grid, freqs, out=out) is out
        with pytest.raises(ValueError, match="integers"):
            ac4k_kernel.rope3d(x, torch.ones(2, 3), freqs)
        with pytest.raises(ValueError, match="pair"):
            ac4k_kernel.rope3d(x, [[1, 1, 1]] * 2, cos_sin[:1])
