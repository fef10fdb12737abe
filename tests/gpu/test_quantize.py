"""GPU tests of the quantize kernels: bit for bit against ac4k_kernel.reference (computed on the CPU)."""
import pytest
import torch

import ac4k_kernel
from ac4k_kernel import reference as ref

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

DTYPES = [torch.bfloat16, torch.float16]


def _assert_bits_equal(got: torch.Tensor, want: torch.Tensor, what: str):
    got = got.cpu()
    assert got.dtype == want.dtype and got.shape == want.shape, f"{what}: {got.dtype}{tuple(got.shape)} vs {want.dtype}{tuple(want.shape)}"
    view = {1: torch.uint8, 4: torch.int32}[got.element_size()]
    g, w = got.contiguous().view(view), want.contiguous().view(view)
    bad = (g != w).nonzero()
    assert bad.numel() == 0, f"{what}: {bad.shape[0]} of {g.numel()} differ, first at {bad[0].tolist()}: {got[tuple(bad[0])]} vs {want[tuple(bad[0])]}"


def _poisoned(shape, dtype):
    t = torch.empty(shape, dtype=dtype, device="cuda")
    if dtype == torch.float32:
        t.fill_(float("nan"))
    else:
        t.fill_(0x55)
    return t


def _check_int8(x: torch.Tensor, use_out: bool = False):
    want = ref.quantize_int8(x.cpu(), "per_token")
    if use_out:
        out = (_poisoned(x.shape, torch.int8), _poisoned(x.shape[:-1], torch.float32))
        got = ac4k_kernel.quantize(x, precision="int8", out=out)
        assert got.values.data_ptr() == out[0].data_ptr() and got.scales.data_ptr() == out[1].data_ptr()
    else:
        got = ac4k_kernel.quantize(x, precision="int8")
    torch.cuda.synchronize()
    _assert_bits_equal(got.values, want.values, "values")
    _assert_bits_equal(got.scales, want.scales, "scales")
    return got


# Head dims and hidden sizes the models use, plus odd ones that take the other code paths.
SHAPES = [(1, 130, 3, 64), (2, 77, 40, 128), (3, 128), (33, 5120), (5, 13824), (2, 3, 5, 256),
          (7, 1536), (1, 8), (4, 16), (9, 4096), (2, 32768),  # vector path
          (5, 7), (4, 100), (3, 1), (2, 3, 250), (1, 8000)]  # not a multiple of 8: scalar path


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_quantize_int8_per_token_bitexact(shape, dtype):
    torch.manual_seed(hash(shape) % 1000)
    x = (torch.randn(shape, device="cuda") * torch.rand(shape[:-1] + (1,), device="cuda") * 8).to(dtype)
    _check_int8(x, use_out=False)
    _check_int8(x, use_out=True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_quantize_int8_strided_inputs(dtype):
    torch.manual_seed(1)
    qkv = torch.randn(2, 67, 3, 5, 128, device="cuda", dtype=dtype)
    _check_int8(qkv[:, :, 1])  # q/k/v slice of a fused projection: rows not evenly strided
    _check_int8(qkv[:, :, 1].transpose(1, 2))  # BNHD viewed as BHND
    rows = torch.randn(40, 300, device="cuda", dtype=dtype)[:, :256]  # padded rows
    _check_int8(rows)
    four = torch.randn(6, 5, 4, 3, 64, device="cuda", dtype=dtype)
    _check_int8(four.permute(1, 0, 3, 2, 4))  # 4 non-mergeable leading dims


def test_quantize_int8_special_values():
    torch.manual_seed(2)
    x = torch.randn(6, 128, device="cuda", dtype=torch.bfloat16)
    x[0] = 0  # all-zero row: scale 0, codes 0
    x[1, 5] = float("nan")  # NaN ignored for the scale, quantizes to 0
    x[2, 7] = float("inf")  # Inf: scale inf, codes 0
    x[3, 9] = -float("inf")
    x[4] = 1e-30  # subnormal-range values
    x[5, :4] = torch.tensor([127.0, -63.5, 0.5, 1.5])  # exact ties
    got = _check_int8(x)
    assert got.scales[0].item() == 0 and torch.isinf(got.scales[2]).item()


def test_quantize_int8_empty():
    for shape in [(0, 128), (3, 0), (2, 0, 64)]:
        x = torch.randn(shape, device="cuda", dtype=torch.bfloat16)
        got = ac4k_kernel.quantize(x, precision="int8")
        assert got.values.shape == x.shape and got.scales.shape == x.shape[:-1]
        if x.shape[-1] == 0 and got.scales.numel():
            assert (got.scales == 0).all()


def test_quantize_int8_torch_compile_and_cuda_graph():
    torch.manual_seed(3)
    x = torch.randn(64, 4, 128, device="cuda", dtype=torch.bfloat16)
    want = ref.quantize_int8(x.cpu())

    @torch.compile(fullgraph=True)
    def f(t):
        q = ac4k_kernel.quantize(t * 2, precision="int8")
        return q.values, q.scales

    v, s = f(x / 2)
    _assert_bits_equal(v, want.values, "compiled values")
    _assert_bits_equal(s, want.scales, "compiled scales")

    static_x = x.clone()
    g = torch.cuda.CUDAGraph()
    torch.cuda.synchronize()
    with torch.cuda.graph(g):
        q = ac4k_kernel.quantize(static_x, precision="int8")
    x2 = torch.randn_like(x)
    static_x.copy_(x2)
    g.replay()
    torch.cuda.synchronize()
    want2 = ref.quantize_int8(x2.cpu())
    _assert_bits_equal(q.values, want2.values, "graph values")
    _assert_bits_equal(q.scales, want2.scales, "graph scales")


def test_quantize_int8_errors():
    x = torch.randn(4, 64, device="cuda", dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="bfloat16 or float16"):
        ac4k_kernel.quantize(x.float(), precision="int8")
    with pytest.raises(RuntimeError, match="contiguous last dim"):
        ac4k_kernel.quantize(x.t(), precision="int8")
    with pytest.raises(RuntimeError, match="out must be Char"):
        ac4k_kernel.quantize(x, precision="int8", out=(torch.empty_like(x), torch.empty(4, device="cuda")))
    with pytest.raises(RuntimeError, match="scales must have shape"):
        ac4k_kernel.quantize(x, precision="int8",
                             out=(torch.empty(4, 64, dtype=torch.int8, device="cuda"), torch.empty(5, device="cuda")))
    with pytest.raises(ValueError, match="CUDA"):
        ac4k_kernel.quantize(x.cpu(), precision="int8")
    five = torch.randn(6, 5, 4, 3, 2, 64, device="cuda", dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="leading dims"):
        ac4k_kernel.quantize(five.permute(1, 0, 3, 2, 4, 5), precision="int8")
    with pytest.raises(RuntimeError, match="too long|not implemented"):
        ac4k_kernel.quantize(torch.randn(2, 40000, device="cuda", dtype=torch.bfloat16), precision="int8")


@pytest.mark.parametrize("precision,kw", [("int8", {}), ("fp8e4m3", {}), ("nvfp4", {}),
                                          ("nvfp4", {"scale_layout": "swizzled"})])
def test_reference_is_device_independent(precision, kw):
    """The reference defines the bits: on the GPU (torch CUDA ops) it must give the CPU's bits."""
    torch.manual_seed(4)
    x = torch.randn(300, 256, dtype=torch.bfloat16) * torch.rand(300, 1) * 10
    x[3, 3] = float("nan")
    a, b = ref.quantize(x, precision, **kw), ref.quantize(x.cuda(), precision, **kw)
    for name in ("values", "scales", "global_scale"):
        if getattr(a, name) is not None:
            _assert_bits_equal(getattr(b, name), getattr(a, name), name)
