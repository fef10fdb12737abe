"""CPU tests of linear(precision="fp8e4m3") without a GPU: the gemm_fp8 reference, the API's argument
checks (on CPU tensors and on fake CUDA tensors), the fake kernels torch.compile traces with, and
ac4k_kernel.nn.Linear / quantize_linear_ (construction, weight bits, state_dict round trip)."""
import io
import warnings

import pytest
import torch

import ac4k_kernel
from ac4k_kernel import reference as ref
from ac4k_kernel.reference.quant import QuantizedTensor

needs_build = pytest.mark.skipif(ac4k_kernel.get_arch() is None, reason="needs the built extension")
needs_gemm = pytest.mark.skipif("gemm_fp8" not in ac4k_kernel.get_info()["ops"], reason="this build has no gemm_fp8")


def _cuda(*shape, dtype=torch.bfloat16):
    return torch.empty(*shape, dtype=dtype, device="cuda")


# ============================================================================ reference

def test_reference_gemm_fp8_formula():
    g = torch.Generator().manual_seed(0)
    a = (torch.randn(37, 96, generator=g) * 100).clamp(-448, 448).to(torch.float8_e4m3fn)
    b = (torch.randn(21, 96, generator=g) * 100).clamp(-448, 448).to(torch.float8_e4m3fn)
    sa, sb = torch.rand(37, generator=g) + 0.1, torch.rand(21, generator=g) + 0.1
    bias = torch.randn(21, generator=g)
    y = ref.gemm_fp8(a, sa, b, sb, bias, torch.float16)
    assert y.dtype == torch.float16 and y.shape == (37, 21)
    # Element by element: an exact dot (E4M3 products are exact in fp64 and the sums stay far below
    # 2^53), then the scales and the bias in float32, left to right.
    m, n = 5, 7
    dot = sum(float(a[m, k]) * float(b[n, k]) for k in range(96))
    want = ((torch.tensor(dot, dtype=torch.float32) * sa[m]) * sb[n] + bias[n]).to(torch.float16)
    assert y[m, n] == want
    assert torch.equal(ref.gemm_fp8(a, sa, b, sb).float(),
                       ((a.double() @ b.double().T).float() * sa[:, None] * sb).bfloat16().float())


def test_reference_linear_is_quantize_then_gemm():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 5, 64, generator=g).bfloat16()
    w = (0.05 * torch.randn(24, 64, generator=g)).bfloat16()
    bias = torch.randn(24, generator=g).bfloat16()
    wq = ref.quantize_weight_fp8(w)
    xq = ref.quantize_fp8(x, "per_token")
    want = ref.gemm_fp8(xq.values.reshape(10, 64), xq.scales.reshape(10), wq.values, wq.scales, bias)
    assert torch.equal(ref.linear_fp8(x, wq, bias), want.reshape(2, 5, 24))


# ============================================================================ API checks

@needs_build
@needs_gemm
def test_linear_errors_on_cpu_tensors():
    x = torch.randn(4, 64, dtype=torch.bfloat16)
    wq = ac4k_kernel.quantize_weight(torch.randn(32, 64))
    with pytest.raises(ValueError, match="x must be a CUDA tensor"):
        ac4k_kernel.linear(x, wq)
    with pytest.raises(TypeError, match="QuantizedTensor"):
        ac4k_kernel.linear(x, torch.randn(32, 64), precision="fp8e4m3")
    with pytest.raises(ValueError, match="quantized as 'int8'"):
        ac4k_kernel.linear(x, wq._replace(precision="int8"), precision="fp8e4m3")
    with pytest.raises(ValueError, match="per output channel"):
        ac4k_kernel.linear(x, wq._replace(granularity="per_block"))
    with pytest.raises(ValueError, match="precision must be one of"):
        ac4k_kernel.linear(x, wq, precision="fp4")
    with pytest.raises(ValueError, match="2-D"):
        ac4k_kernel.quantize_weight(torch.randn(64))


@needs_build
@needs_gemm
def test_linear_argument_checks_on_cuda_tensors(fake):
    with fake:
        wq = ac4k_kernel.quantize_weight(_cuda(32, 64))
        with pytest.raises(TypeError, match="bfloat16 or float16"):
            ac4k_kernel.linear(_cuda(4, 64, dtype=torch.float32), wq)
        with pytest.raises(ValueError, match="must equal the weight's K"):
            ac4k_kernel.linear(_cuda(4, 48), wq)
        wq40 = ac4k_kernel.quantize_weight(_cuda(32, 40))
        with pytest.raises(ValueError, match="multiple of 16"):
            ac4k_kernel.linear(_cuda(4, 40), wq40)
        with pytest.raises(ValueError, match="bias must have shape"):
            ac4k_kernel.linear(_cuda(4, 64), wq, _cuda(31))
        with pytest.raises(ValueError, match="out must be"):
            ac4k_kernel.linear(_cuda(4, 64), wq, out=_cuda(4, 33))
        with pytest.raises(ValueError, match="out must be"):
            ac4k_kernel.linear(_cuda(4, 64), wq, out=_cuda(4, 32, dtype=torch.float16))
    with fake:
        x = _cuda(4, 64)
    with pytest.raises(ValueError, match="weight.values is on cpu"):
        ac4k_kernel.linear(x, ac4k_kernel.quantize_weight(torch.randn(32, 64)))


# ============================================================================ fake kernels

@needs_build
@needs_gemm
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_linear_fake_shapes(fake, dtype):
    with fake:
        x = _cuda(2, 3, 50, 128, dtype=dtype)
        wq = ac4k_kernel.quantize_weight(_cuda(200, 128))
        y = ac4k_kernel.linear(x, wq, _cuda(200, dtype=torch.float32))
        out = _cuda(2, 3, 50, 200, dtype=dtype)
        y2 = ac4k_kernel.linear(x, wq, out=out)
        g = torch.ops.ac4k.gemm_fp8(_cuda(7, 64, dtype=torch.float8_e4m3fn), _cuda(7, dtype=torch.float32),
                                    _cuda(9, 64, dtype=torch.float8_e4m3fn), _cuda(9, dtype=torch.float32))
        g16 = torch.ops.ac4k.gemm_fp8(_cuda(7, 64, dtype=torch.float8_e4m3fn), _cuda(7, dtype=torch.float32),
                                      _cuda(9, 64, dtype=torch.float8_e4m3fn), _cuda(9, dtype=torch.float32), None,
                                      torch.float16)
    assert y.shape == (2, 3, 50, 200) and y.dtype == dtype and y.device.type == "cuda"
    assert y2 is out
    assert wq.values.shape == (200, 128) and wq.values.dtype == torch.float8_e4m3fn
    assert wq.scales.shape == (200,) and wq.scales.dtype == torch.float32
    assert g.shape == (7, 9) and g.dtype == torch.bfloat16 and g16.dtype == torch.float16


# ============================================================================ nn.Linear / quantize_linear_

def _lin(K, N, bias=True, dtype=torch.bfloat16, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Linear(K, N, bias=bias).to(dtype)


@needs_build
@needs_gemm
def test_nn_linear_from_linear_holds_reference_bits():
    lin = _lin(64, 48)
    m = ac4k_kernel.nn.Linear.from_linear(lin)
    want = ref.quantize_weight_fp8(lin.weight.detach())
    assert m.weight.dtype == torch.float8_e4m3fn and m.weight.shape == (48, 64)
    assert torch.equal(m.weight.view(torch.uint8), want.values.view(torch.uint8))
    assert torch.equal(m.weight_scale, want.scales)
    assert torch.equal(m.bias, lin.bias.detach()) and m.bias.dtype == torch.bfloat16
    q = m.quantized_weight()
    assert isinstance(q, QuantizedTensor) and q.precision == "fp8e4m3" and q.granularity == "per_token"
    assert not any(True for _ in m.parameters())  # inference only: everything is a buffer
    assert "in_features=64" in repr(m) and "fp8e4m3" in repr(m)
    assert ac4k_kernel.nn.Linear.from_linear(_lin(64, 48, bias=False)).bias is None
    with pytest.raises(ValueError, match="multiple of 16"):
        ac4k_kernel.nn.Linear.from_linear(_lin(40, 8))
    with pytest.raises(NotImplementedError, match="precision"):
        ac4k_kernel.nn.Linear(64, 8, precision="fp4")


@needs_build
@needs_gemm
def test_nn_linear_forward_needs_cuda_and_traces_on_fake_cuda(fake):
    m = ac4k_kernel.nn.Linear.from_linear(_lin(64, 48))
    with pytest.raises(ValueError, match="CUDA"):
        m(torch.randn(3, 64, dtype=torch.bfloat16))
    with fake:
        mc = ac4k_kernel.nn.Linear(64, 48, device="cuda")
        y = mc(_cuda(2, 5, 64, dtype=torch.float16))
    assert y.shape == (2, 5, 48) and y.dtype == torch.float16


@needs_build
@needs_gemm
@pytest.mark.parametrize("bias", [True, False])
def test_nn_linear_state_dict_round_trip(bias):
    m = ac4k_kernel.nn.Linear.from_linear(_lin(64, 48, bias=bias, seed=3))
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf)
    assert set(sd) == ({"weight", "weight_scale", "bias"} if bias else {"weight", "weight_scale"})
    m2 = ac4k_kernel.nn.Linear(64, 48, bias=bias)
    assert not torch.equal(m2.weight_scale, m.weight_scale)  # the load below really changes it
    m2.load_state_dict(sd)
    assert torch.equal(m2.weight.view(torch.uint8), m.weight.view(torch.uint8))
    assert torch.equal(m2.weight_scale, m.weight_scale)
    if bias:
        assert torch.equal(m2.bias, m.bias)
    with pytest.raises(RuntimeError, match="size mismatch"):
        ac4k_kernel.nn.Linear(64, 32, bias=bias).load_state_dict(sd)


class _Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = torch.nn.Linear(64, 192)
        self.proj = torch.nn.Linear(64, 64, bias=False)
        self.odd = torch.nn.Linear(40, 64)  # in_features not a multiple of 16: left alone
        self.attn = torch.nn.MultiheadAttention(64, 4)  # out_proj is an nn.Linear subclass: left alone
        self.norm = torch.nn.LayerNorm(64)


class _Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList([_Block(), _Block()])
        self.head = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.GELU(), torch.nn.Linear(32, 16))
        self.shared = self.head[0]


@needs_build
@needs_gemm
def test_quantize_linear_swaps_in_place():
    torch.manual_seed(0)
    model = _Model().to(torch.bfloat16)
    w_qkv = model.blocks[1].qkv.weight.detach().clone()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = ac4k_kernel.quantize_linear_(model)
    assert out is model
    QL = ac4k_kernel.nn.Linear
    for blk in model.blocks:
        assert isinstance(blk.qkv, QL) and isinstance(blk.proj, QL) and blk.proj.bias is None
        assert type(blk.odd) is torch.nn.Linear
        assert type(blk.attn.out_proj) is torch.nn.modules.linear.NonDynamicallyQuantizableLinear
    assert isinstance(model.head[0], QL) and isinstance(model.head[2], QL)
    assert model.shared is model.head[0]  # a shared layer stays shared
    assert torch.equal(model.blocks[1].qkv.weight.view(torch.uint8),
                       ref.quantize_weight_fp8(w_qkv).values.view(torch.uint8))
    msgs = [str(w.message) for w in caught]
    assert any("blocks.0.odd" in s and "blocks.1.odd" in s for s in msgs), msgs
    # The quantized model's state_dict loads into a freshly quantized copy of the same architecture.
    with pytest.warns(UserWarning, match="odd"):
        fresh = ac4k_kernel.quantize_linear_(_Model().to(torch.bfloat16))
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh.blocks[0].qkv.weight_scale, model.blocks[0].qkv.weight_scale)


@needs_build
@needs_gemm
def test_quantize_linear_filter_and_errors():
    model = _Model()
    seen = []

    def only_qkv(name, mod):
        seen.append(name)
        return name.endswith("qkv")

    ac4k_kernel.quantize_linear_(model, filter=only_qkv)
    assert isinstance(model.blocks[0].qkv, ac4k_kernel.nn.Linear)
    assert type(model.blocks[0].proj) is torch.nn.Linear and type(model.head[0]) is torch.nn.Linear
    assert "blocks.0.proj" in seen and "head.2" in seen and "blocks.0.attn.out_proj" not in seen
    with pytest.raises(ValueError, match="from_linear"):
        ac4k_kernel.quantize_linear_(torch.nn.Linear(64, 8))
    with pytest.raises(NotImplementedError, match="precision"):
        ac4k_kernel.quantize_linear_(_Model(), precision="fp4")
