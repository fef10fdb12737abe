"""CPU tests of linear(precision="nvfp4") without a GPU: reference.gemm_nvfp4 (exact block-scaled dot,
then the global scales and the bias in FP32), its agreement with reference.linear_nvfp4, the API's
argument checks (CPU and fake CUDA tensors), the fake kernels, and nn.Linear / quantize_linear_ with
precision="nvfp4" (weight bits, state_dict round trip)."""
import io

import pytest
import torch

import ac4k_kernel
from ac4k_kernel import reference as ref

needs_build = pytest.mark.skipif(ac4k_kernel.get_arch() is None, reason="needs the built extension")
needs_gemm = pytest.mark.skipif("gemm_nvfp4" not in ac4k_kernel.get_info()["ops"], reason="this build has no gemm_nvfp4")
E2M1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]


def _cuda(*shape, dtype=torch.bfloat16):
    return torch.empty(*shape, dtype=dtype, device="cuda")


def _dec(q):
    """Element-by-element decode, independent of the reference's helpers: low nibble first, E2M1 by
    table, times the E4M3 block scale (no global scale)."""
    v = q.values.reshape(-1, q.values.shape[-1])
    sf = q.scales.float().reshape(v.shape[0], -1)
    out = torch.empty(v.shape[0], v.shape[1] * 2, dtype=torch.float64)
    for r in range(v.shape[0]):
        for k in range(v.shape[1] * 2):
            code = (int(v[r, k // 2]) >> (4 * (k % 2))) & 0xF
            mag = E2M1[code & 7]
            out[r, k] = (-mag if code & 8 else mag) * float(sf[r, k // 16])
    return out


# ============================================================================ reference

def test_reference_gemm_nvfp4_formula():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(9, 48, generator=g).bfloat16()
    w = (0.1 * torch.randn(7, 48, generator=g)).bfloat16()
    xq, wq = ref.quantize_nvfp4(x), ref.quantize_nvfp4(w)
    bias = torch.randn(7, generator=g)
    y = ref.gemm_nvfp4(xq.values, xq.scales, xq.global_scale, wq.values, wq.scales, wq.global_scale, bias,
                       torch.float16)
    assert y.dtype == torch.float16 and y.shape == (9, 7)
    dot = (_dec(xq) @ _dec(wq).T).float()  # exact here: few, well-scaled products
    want = (dot * xq.global_scale * wq.global_scale + bias).to(torch.float16)
    assert torch.equal(y, want)
    # The global scales come after the dot: doubling one doubles the output exactly (no bias).
    y1 = ref.gemm_nvfp4(xq.values, xq.scales, xq.global_scale, wq.values, wq.scales, wq.global_scale)
    y2 = ref.gemm_nvfp4(xq.values, xq.scales, xq.global_scale * 2, wq.values, wq.scales, wq.global_scale)
    assert torch.equal(y2.float(), 2 * y1.float())


def test_reference_linear_nvfp4_is_quantize_then_gemm_up_to_fp32_rounding():
    # linear_nvfp4 folds the global scales into each dequantized value (fp32 rounding there), gemm_nvfp4
    # applies them after the dot: equal up to a bf16 step, and much closer before the final rounding.
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 5, 64, generator=g).bfloat16()
    w = (0.05 * torch.randn(24, 64, generator=g)).bfloat16()
    bias = torch.randn(24, generator=g).bfloat16()
    wq = ref.quantize_weight_nvfp4(w)
    xq = ref.quantize_nvfp4(x.reshape(10, 64))
    got = ref.gemm_nvfp4(xq.values, xq.scales, xq.global_scale, wq.values, wq.scales, wq.global_scale, bias,
                         torch.float32)
    want = ref.linear_nvfp4(x.float(), wq, bias).reshape(10, 24)  # float32 out: no final rounding
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert torch.equal(ref.gemm_nvfp4(xq.values, xq.scales, xq.global_scale, wq.values, wq.scales,
                                      wq.global_scale, bias).float(),
                       got.bfloat16().float())


def test_reference_gemm_nvfp4_decode_is_exact_in_fp16_and_bf16():
    # The kernel's premise: every E2M1 value times every E4M3 scale is exact in FP16 (and BF16).
    codes = torch.arange(16, dtype=torch.uint8)
    vals = ref.quant.e2m1_decode(codes).double()
    sf = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).double()
    sf = sf[torch.isfinite(sf)]
    prod = vals[:, None] * sf[None, :]
    assert torch.equal(prod.half().double(), prod)
    assert torch.equal(prod.bfloat16().double(), prod)
    # and so is value * 2^-6 (the E4M3 reading of the nibble) times scale * 2^6, step by step in FP16.
    assert torch.equal(((vals * 2 ** -6).half()[:, None] * (sf * 64).half()[None, :]).double(), prod)


# ============================================================================ API checks

@needs_build
@needs_gemm
def test_quantize_weight_nvfp4_on_cpu_is_the_reference():
    w = torch.randn(32, 64)
    q = ac4k_kernel.quantize_weight(w, precision="nvfp4")
    r = ref.quantize_weight_nvfp4(w)
    assert q.precision == "nvfp4" and q.values.shape == (32, 32) and q.scales.shape == (32, 4)
    assert torch.equal(q.values, r.values) and torch.equal(q.scales.view(torch.uint8), r.scales.view(torch.uint8))
    assert torch.equal(q.global_scale, r.global_scale)


@needs_build
@needs_gemm
def test_linear_nvfp4_errors_on_cpu_tensors():
    x = torch.randn(4, 64, dtype=torch.bfloat16)
    wq = ac4k_kernel.quantize_weight(torch.randn(32, 64), precision="nvfp4")
    with pytest.raises(ValueError, match="x must be a CUDA tensor"):
        ac4k_kernel.linear(x, wq)
    with pytest.raises(ValueError, match="quantized as 'nvfp4'"):
        ac4k_kernel.linear(x, wq, precision="fp8e4m3")
    with pytest.raises(ValueError, match="plain block scales"):
        ac4k_kernel.linear(x, wq._replace(scale_layout="swizzled"))
    with pytest.raises(ValueError, match="plain block scales"):
        ac4k_kernel.linear(x, wq._replace(global_scale=None))


@needs_build
@needs_gemm
def test_linear_nvfp4_argument_checks_on_cuda_tensors(fake):
    with fake:
        wq = ac4k_kernel.quantize_weight(_cuda(32, 64), precision="nvfp4")
        assert wq.values.shape == (32, 32) and wq.scales.shape == (32, 4) and wq.shape == (32, 64)
        with pytest.raises(TypeError, match="bfloat16 or float16"):
            ac4k_kernel.linear(_cuda(4, 64, dtype=torch.float32), wq)
        with pytest.raises(ValueError, match="must equal the weight's K"):
            ac4k_kernel.linear(_cuda(4, 32), wq)
        with pytest.raises(ValueError, match="bias must have shape"):
            ac4k_kernel.linear(_cuda(4, 64), wq, _cuda(31))
        with pytest.raises(ValueError, match="out must be"):
            ac4k_kernel.linear(_cuda(4, 64), wq, out=_cuda(4, 33))
        with pytest.raises(ValueError, match="multiple of 16"):
            # a weight whose recorded K is not a multiple of 16 (quantize itself refuses to make one)
            ac4k_kernel.linear(_cuda(4, 40), wq._replace(shape=(32, 40)))


@needs_build
@needs_gemm
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_linear_nvfp4_fake_shapes(fake, dtype):
    with fake:
        x = _cuda(2, 3, 50, 128, dtype=dtype)
        wq = ac4k_kernel.quantize_weight(_cuda(200, 128), precision="nvfp4")
        y = ac4k_kernel.linear(x, wq, _cuda(200, dtype=torch.float32))
        out = _cuda(2, 3, 50, 200, dtype=dtype)
        y2 = ac4k_kernel.linear(x, wq, out=out)
        u8 = dict(dtype=torch.uint8)
        sf = dict(dtype=torch.float8_e4m3fn)
        g = torch.ops.ac4k.gemm_nvfp4(_cuda(7, 32, **u8), _cuda(7, 4, **sf), _cuda(1, dtype=torch.float32),
                                      _cuda(9, 32, **u8), _cuda(9, 4, **sf), _cuda(1, dtype=torch.float32), None,
                                      torch.float16)
    assert y.shape == (2, 3, 50, 200) and y.dtype == dtype and y.device.type == "cuda"
    assert y2 is out
    assert g.shape == (7, 9) and g.dtype == torch.float16


# ============================================================================ nn.Linear / quantize_linear_

def _lin(K, N, bias=True, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Linear(K, N, bias=bias).to(torch.bfloat16)


@needs_build
@needs_gemm
def test_nn_linear_nvfp4_holds_reference_bits():
    lin = _lin(64, 48)
    m = ac4k_kernel.nn.Linear.from_linear(lin, precision="nvfp4")
    want = ref.quantize_weight_nvfp4(lin.weight.detach())
    assert m.weight.dtype == torch.uint8 and m.weight.shape == (48, 32)
    assert m.weight_scale.dtype == torch.float8_e4m3fn and m.weight_scale.shape == (48, 4)
    assert torch.equal(m.weight, want.values)
    assert torch.equal(m.weight_scale.view(torch.uint8), want.scales.view(torch.uint8))
    assert torch.equal(m.weight_global_scale, want.global_scale.reshape(()))
    q = m.quantized_weight()
    assert q.precision == "nvfp4" and q.shape == (48, 64) and q.scale_layout == "plain"
    assert torch.equal(ref.dequantize(q), ref.dequantize(want))
    assert "nvfp4" in repr(m)


@needs_build
@needs_gemm
@pytest.mark.parametrize("bias", [True, False])
def test_nn_linear_nvfp4_state_dict_round_trip(bias):
    m = ac4k_kernel.nn.Linear.from_linear(_lin(64, 48, bias=bias, seed=3), precision="nvfp4")
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf)
    want = {"weight", "weight_scale", "weight_global_scale"} | ({"bias"} if bias else set())
    assert set(sd) == want
    m2 = ac4k_kernel.nn.Linear(64, 48, bias=bias, precision="nvfp4")
    assert not torch.equal(m2.weight, m.weight)  # the load below really changes it
    m2.load_state_dict(sd)
    assert torch.equal(m2.weight, m.weight)
    assert torch.equal(m2.weight_scale.view(torch.uint8), m.weight_scale.view(torch.uint8))
    assert torch.equal(m2.weight_global_scale, m.weight_global_scale)
    # an fp8 layer's state_dict does not load into an nvfp4 one
    with pytest.raises(RuntimeError):
        ac4k_kernel.nn.Linear(64, 48, bias=bias, precision="fp8e4m3").load_state_dict(sd)


@needs_build
@needs_gemm
def test_quantize_linear_nvfp4():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.GELU(), torch.nn.Linear(32, 16),
                                torch.nn.Linear(16, 8), torch.nn.Linear(40, 8)).to(torch.bfloat16)
    w2 = model[2].weight.detach().clone()
    with pytest.warns(UserWarning, match="4"):  # in_features 40: left alone
        ac4k_kernel.quantize_linear_(model, precision="nvfp4")
    assert all(isinstance(model[i], ac4k_kernel.nn.Linear) and model[i].precision == "nvfp4" for i in (0, 2, 3))
    assert type(model[4]) is torch.nn.Linear
    assert torch.equal(model[2].weight, ref.quantize_weight_nvfp4(w2).values)
