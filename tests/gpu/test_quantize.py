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


QDTYPE = {"int8": torch.int8, "fp8e4m3": torch.float8_e4m3fn}


def _check_8bit(x: torch.Tensor, precision: str = "int8", use_out: bool = False, granularity: str = "per_token",
                block_size: int = 0, layout: str = "BNHD"):
    """Kernel vs the CPU reference, bit for bit, into poisoned buffers."""
    want = ref.quantize(x.cpu(), precision, granularity, block_size, layout=layout)
    kw = dict(precision=precision, granularity=granularity, block_size=block_size or None, layout=layout)
    if use_out:
        out = (_poisoned(x.shape, QDTYPE[precision]), _poisoned(want.scales.shape, torch.float32))
        got = ac4k_kernel.quantize(x, out=out, **kw)
        assert got.values.data_ptr() == out[0].data_ptr() and got.scales.data_ptr() == out[1].data_ptr()
    else:
        got = ac4k_kernel.quantize(x, **kw)
    torch.cuda.synchronize()
    _assert_bits_equal(got.values, want.values, f"{precision} {granularity} values")
    _assert_bits_equal(got.scales, want.scales, f"{precision} {granularity} scales")
    return got


def _check_int8(x: torch.Tensor, use_out: bool = False):
    return _check_8bit(x, "int8", use_out)


# Head dims and hidden sizes the models use, plus odd ones that take the other code paths.
SHAPES = [(1, 130, 3, 64), (2, 77, 40, 128), (3, 128), (33, 5120), (5, 13824), (2, 3, 5, 256),
          (7, 1536), (1, 8), (4, 16), (9, 4096), (2, 32768),  # vector path
          (5, 7), (4, 100), (3, 1), (2, 3, 250), (1, 8000)]  # not a multiple of 8: scalar path


def _rand(shape, dtype, seed):
    """randn with a different magnitude per row, so scales vary."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    return (torch.randn(shape, device="cuda", generator=g) * torch.rand(shape[:-1] + (1,), device="cuda", generator=g)
            * 8).to(dtype)


@pytest.mark.parametrize("precision", ["int8", "fp8e4m3"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_quantize_8bit_per_token_bitexact(shape, dtype, precision):
    x = _rand(shape, dtype, len(shape) * 1000 + shape[-1])
    _check_8bit(x, precision, use_out=False)
    _check_8bit(x, precision, use_out=True)


# (shape, layout): attention tensors in both layouts, odd token counts, 2-D [T, C], 3 heads.
TOKEN_CASES = [((2, 130, 3, 64), "BNHD"), ((2, 3, 130, 64), "BHND"), ((1, 77, 40, 128), "BNHD"),
               ((1, 5, 1000, 128), "BHND"), ((2, 33, 2, 256), "BNHD"), ((300, 128), "BNHD"), ((1, 1, 1, 128), "BNHD"),
               ((1, 50, 3, 32), "BHND")]


@pytest.mark.parametrize("precision", ["int8", "fp8e4m3"])
@pytest.mark.parametrize("block_size", [16, 64, 100, 128])
@pytest.mark.parametrize("shape,layout", TOKEN_CASES)
def test_quantize_8bit_per_block_bitexact(shape, layout, block_size, precision):
    x = _rand(shape, torch.bfloat16, 7 + block_size)
    _check_8bit(x, precision, granularity="per_block", block_size=block_size, layout=layout)
    _check_8bit(x.half(), precision, granularity="per_block", block_size=block_size, layout=layout, use_out=True)


@pytest.mark.parametrize("precision", ["int8", "fp8e4m3"])
@pytest.mark.parametrize("shape,layout", [((1, 600, 3, 128), "BNHD"), ((2, 3, 513, 64), "BHND")])
def test_quantize_8bit_per_block_256_tokens(shape, layout, precision):
    """256-token blocks (the largest sm90a takes at D = 128), with a partial last block."""
    x = _rand(shape, torch.bfloat16, 3)
    _check_8bit(x, precision, granularity="per_block", block_size=256, layout=layout)


@pytest.mark.parametrize("precision", ["int8", "fp8e4m3"])
@pytest.mark.parametrize("shape,layout", TOKEN_CASES + [((1, 4097, 5, 64), "BNHD"), ((1000, 256), "BNHD")])
def test_quantize_8bit_per_channel_bitexact(shape, layout, precision):
    x = _rand(shape, torch.bfloat16, 11)
    _check_8bit(x, precision, granularity="per_channel", layout=layout)
    _check_8bit(x.half(), precision, granularity="per_channel", layout=layout, use_out=True)


@pytest.mark.parametrize("shape,layout", [((1, 40000, 3, 128), "BNHD"), ((2, 2, 23000, 64), "BHND")])
def test_quantize_8bit_per_channel_long(shape, layout):
    """Heads of 3-10 MB: several slabs of sm90a's one-launch kernel (a slab is about the GPU's
    in-flight window, ~8 MB), so Q tasks wait on R tasks of other CTAs, with a partial last slab."""
    x = _rand(shape, torch.bfloat16, 17)
    _check_8bit(x, "fp8e4m3", granularity="per_channel", layout=layout)
    _check_8bit(x, "int8", granularity="per_channel", layout=layout, use_out=True)


@pytest.mark.parametrize("precision", ["int8", "fp8e4m3"])
@pytest.mark.parametrize("shape", [(33, 5120), (7, 13824), (40, 4104), (1, 264)])
def test_quantize_8bit_per_channel_wide_2d(shape, precision):
    """A linear activation [T, C] per column, C > 256: the binding regroups the columns into heads of
    256 (5120, 13824), 216 (4104 = 19 x 216) or 88 (264 = 3 x 88) channels; also a strided row view."""
    x = _rand(shape, torch.bfloat16, 13)
    _check_8bit(x, precision, granularity="per_channel")
    _check_8bit(x.half(), precision, granularity="per_channel", use_out=True)
    wide = _rand((shape[0], shape[1] + 24), torch.bfloat16, 14)[:, 8:8 + shape[1]]  # rows 16-byte aligned
    _check_8bit(wide, precision, granularity="per_channel")


@pytest.mark.parametrize("granularity", ["per_block", "per_channel"])
def test_quantize_8bit_token_granularities_strided(granularity):
    qkv = _rand((2, 67, 3, 5, 128), torch.bfloat16, 5)
    k = qkv[:, :, 1]  # a slice of a fused projection, BNHD with a token stride of 3*H*D
    for precision in ("int8", "fp8e4m3"):
        _check_8bit(k, precision, granularity=granularity, block_size=64, layout="BNHD")
        _check_8bit(k.transpose(1, 2), precision, granularity=granularity, block_size=64, layout="BHND")


def _need(op):
    """Skip where this arch's build lacks the kernel."""
    if op not in ac4k_kernel.get_info()["ops"]:
        pytest.skip(f"this build ({ac4k_kernel.get_arch()}) has no {op}")


def _check_nvfp4(x, scale_layout="plain", global_scale=None, use_out=False):
    _need("quantize_nvfp4")
    want = ref.quantize_nvfp4(x.cpu(), scale_layout, None if global_scale is None else global_scale.cpu())
    if use_out:
        out = (_poisoned(want.values.shape, torch.uint8),
               torch.full(want.scales.shape, 0x55, dtype=torch.uint8, device="cuda").view(torch.float8_e4m3fn),
               _poisoned((), torch.float32))
        got = ac4k_kernel.quantize(x, precision="nvfp4", scale_layout=scale_layout, global_scale=global_scale, out=out)
    else:
        got = ac4k_kernel.quantize(x, precision="nvfp4", scale_layout=scale_layout, global_scale=global_scale)
    torch.cuda.synchronize()
    _assert_bits_equal(got.values, want.values, "nvfp4 values")
    _assert_bits_equal(got.scales, want.scales, "nvfp4 block scales")
    _assert_bits_equal(got.global_scale.reshape(()), want.global_scale.reshape(()), "nvfp4 global scale")
    ok = ~torch.isnan(x.float())
    rel = (ac4k_kernel.dequantize(got, torch.float32) - x.float())[ok].norm() / x.float()[ok].norm()
    assert rel < 0.15, rel
    return got


@pytest.mark.parametrize("scale_layout", ["plain", "swizzled"])
@pytest.mark.parametrize("shape", [(300, 256), (2, 77, 5, 128), (1, 16), (129, 5120), (3, 1, 48), (130, 64)])
def test_quantize_nvfp4_bitexact(shape, scale_layout):
    x = _rand(shape, torch.bfloat16, shape[-1])
    _check_nvfp4(x, scale_layout)
    _check_nvfp4(x.half(), scale_layout, use_out=True)
    gs = torch.tensor([x.float().abs().amax().item() / 2000.0], device="cuda")  # a calibrated scale, not amax/2688
    _check_nvfp4(x, scale_layout, global_scale=gs)


@pytest.mark.parametrize("scale_layout", ["plain", "swizzled"])
def test_quantize_nvfp4_bitexact_many_tiles(scale_layout):
    """Big enough that each warp of the persistent grid quantizes several 2 KB tiles (the next
    tile's loads in flight, the backward walk after the absmax pass), with a partial last tile,
    rows not a multiple of 128 and blocks per row not a multiple of 4; then strided rows."""
    x = _rand((4099, 2064), torch.bfloat16, 11)
    _check_nvfp4(x, scale_layout)
    _check_nvfp4(x.half(), scale_layout, use_out=True)
    gs = torch.tensor([x.float().abs().amax().item() / 2000.0], device="cuda")
    _check_nvfp4(x, scale_layout, global_scale=gs)
    wide = _rand((4200, 2576), torch.bfloat16, 12)
    _check_nvfp4(wide[:, 16:2064], scale_layout)
    _check_nvfp4(wide[:, 16:2064], scale_layout, global_scale=gs)


def test_quantize_nvfp4_special_values_and_strides():
    x = _rand((8, 128), torch.bfloat16, 3)
    x[1, 3] = float("nan")
    x[2] = 0
    x[3, :16] = 1e-6  # block scale underflows to 0 against the tensor's amax
    _check_nvfp4(x)
    qkv = _rand((2, 33, 3, 4, 64), torch.bfloat16, 9)
    _check_nvfp4(qkv[:, :, 2])
    with pytest.raises(RuntimeError, match="multiple of 16"):
        ac4k_kernel.quantize(_rand((4, 40), torch.bfloat16, 1), precision="nvfp4")


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


COMPILE_GRAPH_CASES = [  # precision, granularity, block_size, scale_layout, layout, shape
    ("fp8e4m3", "per_token", 0, "plain", "BNHD", (64, 4, 128)),
    ("fp8e4m3", "per_channel", 0, "plain", "BNHD", (2, 96, 3, 64)),
    ("int8", "per_block", 64, "plain", "BHND", (1, 3, 200, 128)),
    ("nvfp4", "per_block", 16, "plain", "BNHD", (100, 256)),
    ("nvfp4", "per_block", 16, "swizzled", "BNHD", (130, 80)),
]


@pytest.mark.parametrize("precision,granularity,block_size,scale_layout,layout,shape", COMPILE_GRAPH_CASES)
def test_quantize_torch_compile_and_cuda_graph(precision, granularity, block_size, scale_layout, layout, shape):
    """Every quantizer inside torch.compile(fullgraph=True) and replayed from a CUDA graph on new
    data: bit for bit the reference."""
    torch.manual_seed(5)
    kw = dict(precision=precision, granularity=granularity, block_size=block_size or None, layout=layout)
    if precision == "nvfp4":
        _need("quantize_nvfp4")
        kw = dict(precision=precision, scale_layout=scale_layout)

    def parts(q):
        return (q.values, q.scales) + ((q.global_scale,) if precision == "nvfp4" else ())

    def check(got, x, what):
        want = parts(ref.quantize(x.cpu(), precision, granularity, block_size, scale_layout, layout))
        for name, g, w in zip(["values", "scales", "global scale"], got, want):
            _assert_bits_equal(g.reshape(w.shape), w, f"{what} {name}")

    x = torch.randn(shape, device="cuda", dtype=torch.bfloat16)

    @torch.compile(fullgraph=True)
    def f(t):
        return parts(ac4k_kernel.quantize(t * 2, **kw))

    check(f(x / 2), x, "compiled")
    static_x = x.clone()
    g = torch.cuda.CUDAGraph()
    torch.cuda.synchronize()
    with torch.cuda.graph(g):
        q = parts(ac4k_kernel.quantize(static_x, **kw))
    x2 = torch.randn_like(x)
    static_x.copy_(x2)
    g.replay()
    torch.cuda.synchronize()
    check(q, x2, "graph")


def test_quantize_attention_kv_torch_compile_and_cuda_graph():
    """The attention-input quantizer compiled and graph-replayed: the eager outputs bit for bit."""
    torch.manual_seed(6)
    k, v = (torch.randn(2, 300, 3, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    want = torch.ops.ac4k.quantize_attention_kv(k, v, "BNHD")
    bits = lambda t: t.view(torch.uint8) if t.element_size() == 1 else t.view(torch.int32)  # noqa: E731
    got = torch.compile(lambda a, b: torch.ops.ac4k.quantize_attention_kv(a + 0, b, "BNHD"), fullgraph=True)(k, v)
    for a, b in zip(got, want):
        assert torch.equal(bits(a), bits(b))
    sk, sv = torch.zeros_like(k), torch.zeros_like(v)
    g = torch.cuda.CUDAGraph()
    torch.cuda.synchronize()
    with torch.cuda.graph(g):
        got = torch.ops.ac4k.quantize_attention_kv(sk, sv, "BNHD")
    sk.copy_(k)
    sv.copy_(v)
    g.replay()
    torch.cuda.synchronize()
    for a, b in zip(got, want):
        assert torch.equal(bits(a), bits(b))


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
    with pytest.raises(RuntimeError, match="per_block / per_channel need x"):
        ac4k_kernel.quantize(x.reshape(2, 2, 64), precision="int8", granularity="per_block", block_size=64)
    long_rows = torch.randn(2, 40000, device="cuda", dtype=torch.bfloat16)
    if ac4k_kernel.get_arch() == "sm90a":  # sm90a keeps a group in registers: these sizes are refused
        with pytest.raises(RuntimeError, match="not supported"):
            ac4k_kernel.quantize(x.reshape(1, 4, 1, 64), precision="fp8e4m3", granularity="per_block", block_size=1024)
        with pytest.raises(RuntimeError, match="not supported"):
            ac4k_kernel.quantize(long_rows, precision="int8")
        with pytest.raises(RuntimeError, match="not supported"):  # C > 256 and not a multiple of 8
            ac4k_kernel.quantize(torch.randn(4, 300, device="cuda", dtype=torch.bfloat16), precision="int8",
                                 granularity="per_channel")
    else:  # sm89 reads such a group twice instead: any size, the reference's bits
        _check_8bit(x.reshape(1, 4, 1, 64), "fp8e4m3", granularity="per_block", block_size=1024)
        _check_8bit(long_rows, "int8")


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
