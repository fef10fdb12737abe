"""GPU tests of rope3d against the fp64 reference (ac4k_kernel.reference.rope3d): every element
within one ulp of the output dtype (spacing of the format at the reference value), tokens past
f*h*w copied bit for bit, every element written (outputs start poisoned), per-sample grids on the
CPU and the GPU, all three freqs forms, strided / in-place calls, inputs built so that a*cos - b*sin
cancels (where plain float32 products are several ulps off), no host sync, torch.compile and CUDA
graphs, and the errors (host-side ones raised, device-side ones as a device assert in a child process)."""
import subprocess
import sys
import textwrap

import pytest
import torch

import ac4k_kernel
from ac4k_kernel import reference as ref
from ac4k_kernel.ops.rope import rope_args

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available() or "rope3d" not in ac4k_kernel.get_info()["ops"],
                                 reason="needs a CUDA GPU and the rope3d kernel")]

_MANT = {torch.bfloat16: 7, torch.float16: 10}


def _ulps(got: torch.Tensor, want: torch.Tensor) -> torch.Tensor:
    """|got - want| in units of the format's spacing at want (subnormal spacing below the normals)."""
    fi = torch.finfo(want.dtype)
    w = want.double().cpu()
    emin = torch.log2(torch.tensor(fi.tiny, dtype=torch.float64))
    e = torch.maximum(torch.floor(torch.log2(w.abs())), emin)  # log2(0) = -inf -> emin
    return (got.double().cpu() - w).abs() / torch.exp2(e - _MANT[want.dtype])


def _assert_close(got: torch.Tensor, want: torch.Tensor, what: str = ""):
    assert got.dtype == want.dtype and got.shape == want.shape
    assert torch.isfinite(got).all(), f"{what}: non-finite values (an element left unwritten?)"
    u = _ulps(got, want)
    worst = u.max().item()
    assert worst <= 1.0, f"{what}: {int((u > 1).sum())} elements more than 1 ulp off, worst {worst} ulps at " \
                         f"{list(torch.nonzero(u == worst)[0])}"


def _poisoned_like(x: torch.Tensor) -> torch.Tensor:
    return torch.full(x.shape, float("nan"), dtype=x.dtype, device=x.device)


def _freqs_forms(max_pos: int, D: int):
    """(what the kernel gets, the complex128 table the reference uses) for each accepted form."""
    f128 = ref.rope3d_freqs(max_pos, D)
    f64 = f128.to(torch.complex64)
    cos, sin = f64.real.contiguous(), f64.imag.contiguous()
    return {
        "complex128": (f128.cuda(), f128),
        "complex64": (f64.cuda(), f64.to(torch.complex128)),
        "cos_sin": ((cos.cuda(), sin.cuda()), torch.complex(cos.double(), sin.double())),
    }


CASES = [  # B, S, H, D, grids, max_pos
    (1, 300, 3, 128, [[3, 10, 9]], 64),                  # 270 of 300 tokens rotated, 30 copied
    (2, 257, 5, 64, [[2, 8, 16], [1, 16, 15]], 16),      # per-sample grids, odd S, a size == max_pos
    (1, 32, 2, 128, [[1, 4, 8]], 64),                    # the grid covers every token
    (2, 16, 1, 128, [[0, 4, 4], [1, 1, 1]], 8),          # an empty grid (a copy), a single token
    (3, 97, 4, 48, [[1, 1, 1], [4, 5, 4], [2, 7, 6]], 8),  # D/8 = 6 chunks per head, D/2 = 24 pairs
    (2, 77, 1, 64, [[7, 11, 1], [3, 5, 5]], 16),         # 8 chunks a token: many tokens per CTA
    (1, 24, 80, 128, [[2, 3, 3]], 8),                    # 1280 chunks a token: two rounds per CTA
]


@pytest.mark.parametrize("form", ["complex128", "complex64", "cos_sin"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("B,S,H,D,grids,max_pos", CASES)
def test_rope3d_matches_reference(B, S, H, D, grids, max_pos, dtype, form):
    g = torch.Generator().manual_seed(S * 131 + D + B)
    x = torch.randn(B, S, H, D, generator=g).to(dtype)
    freqs, table = _freqs_forms(max_pos, D)[form]
    grid = torch.tensor(grids)
    want = ref.rope3d(x, grid, table)
    xc = x.cuda()
    for gs in (grid, grid.cuda(), grid.to(torch.int32).cuda(), grids):  # host-checked, device-checked, lists
        got = ac4k_kernel.rope3d(xc, gs, freqs, out=_poisoned_like(xc))
        _assert_close(got, want, f"grid {type(gs).__name__} {getattr(gs, 'device', '')}")
    got = ac4k_kernel.rope3d(xc, grid, freqs)
    _assert_close(got, want, "out=None")
    assert got.is_contiguous()
    for i, (f, h, w) in enumerate(grids):
        n = f * h * w
        assert torch.equal(got[i, n:].cpu().view(torch.int16), x[i, n:].view(torch.int16)), "padding not copied"


def test_rope3d_padding_copied_bit_for_bit():
    """Tokens past f*h*w keep NaN payloads, infinities and signed zeros exactly."""
    x = torch.randn(1, 40, 2, 64).to(torch.bfloat16)
    bits = x.view(torch.int16)
    bits[0, 30:, 0, :4] = torch.tensor([0x7FC1, 0x7F80, -0x0080, -0x8000], dtype=torch.int16)  # NaN, inf, -inf, -0
    grid = torch.tensor([[2, 3, 5]])
    freqs = ref.rope3d_freqs(8, 64)
    got = ac4k_kernel.rope3d(x.cuda(), grid, freqs.cuda()).cpu()
    assert torch.equal(got[0, 30:].view(torch.int16), bits[0, 30:])
    _assert_close(got[:, :30], ref.rope3d(x, grid, freqs)[:, :30])


def test_rope3d_wan_shape():
    """Wan 14B's heads (40 of 128) and freqs (max_pos 1024) on every other token of a GPU tensor
    (strided tokens), grid (3, 30, 45): 4050 of 4096 tokens rotated."""
    g = torch.Generator().manual_seed(5)
    base = torch.randn(1, 8192, 40, 128, generator=g).to(torch.bfloat16)
    x = base.cuda()[:, ::2]
    grid = torch.tensor([[3, 30, 45]])
    freqs = ref.rope3d_freqs(1024, 128)
    got = ac4k_kernel.rope3d(x, grid, freqs.cuda())
    _assert_close(got, ref.rope3d(base[:, ::2], grid, freqs), "wan")


def _cancelling(S, H, D, grid, freqs, dtype, K=256, seed=0):
    """x whose pairs (a, b) make a*cos - b*sin (or a*sin + b*cos) cancel to ~2^-17 of |b|: the best of
    K random b for each pair, with a = b*sin/cos (or -b*cos/sin) rounded to dtype."""
    g = torch.Generator().manual_seed(seed)
    unit = torch.zeros(1, S, 1, D, dtype=torch.float64)
    unit[..., 0::2] = 1
    m = ref.rope3d(unit, grid, freqs)[0, :, 0]  # each token's multipliers, (cos, sin) interleaved
    c, s = m[:, 0::2][:, None], m[:, 1::2][:, None]
    b = torch.randn(K, S, H, D // 2, generator=g).to(dtype).double()
    use_c = c.abs() >= s.abs()
    a = torch.where(use_c, b * s / c, -b * c / s).to(dtype).double()
    resid = torch.where(use_c, a * c - b * s, a * s + b * c).abs() / b.abs().clamp_min(1e-30)
    k = resid.argmin(0, keepdim=True)
    x = torch.stack([a.gather(0, k)[0], b.gather(0, k)[0]], -1).flatten(-2)[None].to(dtype)
    return x, c.float(), s.float()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_rope3d_cancellation(dtype):
    D, S, H = 128, 64, 2
    grid = torch.tensor([[4, 4, 4]])
    freqs = ref.rope3d_freqs(16, D)
    x, c, s = _cancelling(S, H, D, grid, freqs, dtype)
    want = ref.rope3d(x, grid, freqs)
    # The inputs are sharp: a plain float32 rotation (float32 table, FMA) is more than 1 ulp off.
    a, b = x[0].float()[..., 0::2], x[0].float()[..., 1::2]
    re = (a.double() * c.double() - (b * s).double()).float()
    im = (a.double() * s.double() + (b * c).double()).float()
    naive = torch.stack([re, im], -1).flatten(-2)[None].to(dtype)
    assert _ulps(naive, want).max() > 1
    for form in ("complex128", "complex64", "cos_sin"):
        kfreqs, table = _freqs_forms(16, D)[form]
        _assert_close(ac4k_kernel.rope3d(x.cuda(), grid, kfreqs), ref.rope3d(x, grid, table), form)


@pytest.mark.parametrize("view", ["heads_1_to_5", "every_other_token", "bhnd_memory"])
def test_rope3d_strided_and_in_place(view):
    """Strided views of GPU tensors as x, as out, and in place: the view is rotated, nothing
    outside it is touched."""
    grid = torch.tensor([[2, 4, 5], [1, 3, 3]])
    freqs = ref.rope3d_freqs(16, 128)
    g = torch.Generator().manual_seed(11)
    if view == "bhnd_memory":
        base, fn = torch.randn(2, 3, 40, 128, generator=g), (lambda t: t.transpose(1, 2))
    elif view == "heads_1_to_5":
        base, fn = torch.randn(2, 40, 6, 128, generator=g), (lambda t: t[:, :, 1:5])
    else:
        base, fn = torch.randn(2, 80, 3, 128, generator=g), (lambda t: t[:, ::2])
    base = base.to(torch.bfloat16).cuda()
    x = fn(base)
    assert x.shape[1] == 40 and (view == "bhnd_memory" or not x.is_contiguous())
    want = ref.rope3d(x.cpu(), grid, freqs)
    _assert_close(ac4k_kernel.rope3d(x, grid, freqs.cuda()), want, "strided x")

    out_base = _poisoned_like(base)
    out = fn(out_base)
    assert ac4k_kernel.rope3d(x, grid.cuda(), freqs.cuda(), out=out) is out
    _assert_close(out, want, "strided out")
    assert int(torch.isnan(out_base).sum()) == out_base.numel() - out.numel(), "wrote outside out"

    y_base = base.clone()
    y = fn(y_base)
    assert ac4k_kernel.rope3d(y, grid, freqs.cuda(), out=y) is y
    expect = base.clone()
    fn(expect).copy_(want.cuda())
    _assert_close(y_base, expect, "in place")  # inside the view within 1 ulp, outside it untouched
    assert not torch.equal(y_base, base)


def test_rope3d_batch_over_32_cpu_grid():
    """B > 32 CPU grids reach the kernel through a pinned copy, not launch arguments."""
    B, S = 37, 12
    grid = torch.tensor([[1 + i % 2, 2, 1 + i % 3] for i in range(B)])
    freqs = ref.rope3d_freqs(8, 64)
    x = torch.randn(B, S, 2, 64).to(torch.bfloat16)
    got = ac4k_kernel.rope3d(x.cuda(), grid, freqs.cuda(), out=_poisoned_like(x.cuda()))
    _assert_close(got, ref.rope3d(x, grid, freqs))


def test_rope3d_no_host_sync():
    x = torch.randn(2, 64, 4, 128, device="cuda", dtype=torch.bfloat16)
    freqs = ref.rope3d_freqs(16, 128).cuda()
    grids = torch.tensor([[2, 4, 8], [1, 8, 8]])
    big = torch.randn(33, 8, 1, 64, device="cuda", dtype=torch.bfloat16)
    big_grid = torch.tensor([[1, 2, 4]] * 33)
    small = ref.rope3d_freqs(8, 64).cuda()
    g_cuda, g_i32 = grids.cuda(), grids.to(torch.int32).cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for gs in (grids, g_cuda, g_i32):
            ac4k_kernel.rope3d(x, gs, freqs)
            ac4k_kernel.rope3d(x, gs, freqs, out=x)
        ac4k_kernel.rope3d(big, big_grid, small)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()


def test_rope3d_torch_compile_and_cuda_graph():
    torch.manual_seed(7)
    grid = torch.tensor([[2, 4, 6]])
    freqs = ref.rope3d_freqs(16, 128).cuda()
    x = torch.randn(1, 50, 4, 128, device="cuda", dtype=torch.bfloat16)

    @torch.compile(fullgraph=True)
    def f(t, g):
        return ac4k_kernel.rope3d(t * 2, g, freqs)

    _assert_close(f(x / 2, grid), ref.rope3d(x.cpu(), grid, freqs.cpu()), "compiled, CPU grid")
    _assert_close(f(x / 2, grid.cuda()), ref.rope3d(x.cpu(), grid, freqs.cpu()), "compiled, GPU grid")

    static_x = x.clone()
    g_cuda = grid.cuda()
    outs = []
    graph = torch.cuda.CUDAGraph()
    torch.cuda.synchronize()
    with torch.cuda.graph(graph):
        outs.append(ac4k_kernel.rope3d(static_x, grid, freqs))
        outs.append(ac4k_kernel.rope3d(static_x, g_cuda, freqs))
    x2 = torch.randn_like(x)
    static_x.copy_(x2)
    graph.replay()
    torch.cuda.synchronize()
    want = ref.rope3d(x2.cpu(), grid, freqs.cpu())
    _assert_close(outs[0], want, "graph, CPU grid")
    _assert_close(outs[1], want, "graph, GPU grid")


def test_rope3d_errors():
    x = torch.randn(1, 16, 2, 128, device="cuda", dtype=torch.bfloat16)
    freqs = ref.rope3d_freqs(8, 128).cuda()
    one = torch.tensor([[1, 1, 1]])
    # CPU grid sizes: checked on the host
    with pytest.raises(RuntimeError, match=r"covers 18 tokens, more than S = 16"):
        ac4k_kernel.rope3d(x, torch.tensor([[2, 3, 3]]), freqs)
    with pytest.raises(RuntimeError, match="freqs has 8 positions"):
        ac4k_kernel.rope3d(x, torch.tensor([[1, 1, 9]]), freqs)
    with pytest.raises(RuntimeError, match="freqs has 8 positions"):
        ac4k_kernel.rope3d(x, torch.tensor([[9, 0, 1]]), freqs)  # no token rotated, still out of the table
    with pytest.raises(RuntimeError, match="negative"):
        ac4k_kernel.rope3d(x, torch.tensor([[-1, 2, 2]]), freqs)
    with pytest.raises(RuntimeError, match=r"grid_sizes must be an int64 \[B, 3\]"):
        ac4k_kernel.rope3d(x, torch.tensor([[1, 1, 1], [1, 1, 1]]), freqs)
    with pytest.raises(RuntimeError, match=r"grid_sizes must be an int64 \[B, 3\]"):
        ac4k_kernel.rope3d(x, torch.tensor([1, 1, 1]), freqs)
    with pytest.raises(ValueError, match="integers"):
        ac4k_kernel.rope3d(x, torch.tensor([[1.0, 1.0, 1.0]]), freqs)
    # freqs
    with pytest.raises(RuntimeError, match="D/2 = 64"):
        ac4k_kernel.rope3d(x, one, ref.rope3d_freqs(8, 64).cuda())
    with pytest.raises(RuntimeError, match="complex128 or complex64"):
        ac4k_kernel.rope3d(x, one, freqs.real.contiguous())
    with pytest.raises(RuntimeError, match="freqs is on cpu"):
        ac4k_kernel.rope3d(x, one, freqs.cpu())
    with pytest.raises(RuntimeError, match="cos and sin must be float32"):
        ac4k_kernel.rope3d(x, one, (freqs.real, freqs.imag))
    with pytest.raises(RuntimeError, match="cos and sin must both be"):
        ac4k_kernel.rope3d(x, one, (freqs.real.float(), freqs.imag.float()[:4]))
    with pytest.raises(ValueError, match="pair"):
        ac4k_kernel.rope3d(x, one, (freqs.real.float(),))
    # x
    with pytest.raises(RuntimeError, match="bfloat16 or float16"):
        ac4k_kernel.rope3d(x.float(), one, freqs)
    with pytest.raises(ValueError, match="CUDA"):
        ac4k_kernel.rope3d(x.cpu(), one, freqs)
    with pytest.raises(RuntimeError, match=r"must be \[B, S, H, D\]"):
        ac4k_kernel.rope3d(x[0], one, freqs)
    odd = torch.randn(1, 16, 2, 63, device="cuda", dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="must be even"):
        ac4k_kernel.rope3d(odd, one, ref.rope3d_freqs(8, 62).cuda())
    with pytest.raises(RuntimeError, match="at least 6"):
        ac4k_kernel.rope3d(torch.randn(1, 16, 2, 4, device="cuda", dtype=torch.bfloat16), one, freqs[:, :2])
    with pytest.raises(RuntimeError, match="multiple of 8"):
        ac4k_kernel.rope3d(torch.randn(1, 16, 2, 36, device="cuda", dtype=torch.bfloat16), one,
                           ref.rope3d_freqs(8, 36).cuda())
    with pytest.raises(RuntimeError, match="contiguous last dim"):
        ac4k_kernel.rope3d(x.transpose(2, 3)[..., :2, :], one, freqs[:, :1])
    buf = torch.randn(2 * 16 * 2 * 128 + 8, device="cuda", dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="16-byte aligned"):
        ac4k_kernel.rope3d(buf[1:1 + x.numel()].view(x.shape), one, freqs)
    # out
    with pytest.raises(RuntimeError, match="out must have x's dtype"):
        ac4k_kernel.rope3d(x, one, freqs, out=torch.empty_like(x, dtype=torch.float16))
    with pytest.raises(RuntimeError, match="out must have x's dtype"):
        ac4k_kernel.rope3d(x, one, freqs, out=torch.empty(1, 16, 2, 64, device="cuda", dtype=torch.bfloat16))
    with pytest.raises(RuntimeError, match="out must be a CUDA tensor"):
        ac4k_kernel.rope3d(x, one, freqs, out=torch.empty_like(x, device="cpu"))
    xs = buf[:x.numel()].view(x.shape)
    with pytest.raises(RuntimeError, match="single memory location"):  # out overlaps x, shifted by 8 elements
        ac4k_kernel.rope3d(xs, one, freqs, out=buf[8:8 + x.numel()].view(x.shape))
    with pytest.raises(RuntimeError, match="single memory location|internal overlap"):
        ac4k_kernel.rope3d(x, one, freqs, out=torch.empty(1, 1, 2, 128, device="cuda", dtype=x.dtype).expand(x.shape))


_CHILD = textwrap.dedent("""
    import sys, torch, ac4k_kernel
    from ac4k_kernel import reference as ref
    x = torch.randn(1, 16, 2, 128, device="cuda", dtype=torch.bfloat16)
    op, grid = sys.argv[1], torch.tensor([[int(v) for v in sys.argv[2].split(",")]], device="cuda")
    if op == "rope3d":
        ac4k_kernel.rope3d(x, grid, ref.rope3d_freqs(8, 128).cuda())
    else:  # attention(rope=...) checks through the same kernels
        ac4k_kernel.attention(x, x, x, rope=(grid, ref.rope3d_freqs(8, 128).cuda()))
    torch.cuda.synchronize()
    print("no error")
""")


@pytest.mark.parametrize("grid,message", [
    ("2,3,3", "covers more tokens than x has"),
    ("1,1,9", "needs more positions than freqs has"),
    ("1,-2,2", "negative size"),
])
@pytest.mark.parametrize("op", ["rope3d", "attention"])
def test_rope3d_device_grid_errors(op, grid, message):
    """GPU grid sizes are checked by the kernel without a host sync: a bad one is a device assert,
    which ends the CUDA context, so each runs in a child process."""
    r = subprocess.run([sys.executable, "-c", _CHILD, op, grid], capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "no error" not in r.stdout, out[-2000:]
    assert message in out and "device-side assert" in out, out[-2000:]


# ---- rope fused into the attention-input quantization (issue: rope3d on the way into attention)

def _bits(t):
    return t.contiguous().view(torch.uint8) if t.element_size() == 1 else t.contiguous().view(torch.int32)


def _bnhd(x, layout):
    return x if layout == "BNHD" else x.transpose(1, 2)


FUSED = [  # B, S, H, D, grids, max_pos, layout
    (2, 300, 3, 128, [[3, 10, 9], [2, 7, 11]], 64, "BNHD"),   # per-sample grids, copied tails
    (1, 5000, 2, 128, [[5, 25, 40]], 64, "BHND"),              # tiles past the CTA's cache (re-read, rotated again)
    (2, 1100, 2, 64, [[4, 16, 17], [1, 1, 1]], 32, "BNHD"),   # D = 64, a one-token grid
]


@pytest.mark.parametrize("B,S,H,D,grids,max_pos,layout", FUSED)
@pytest.mark.parametrize("form", ["complex128", "complex64", "cos_sin"])
@pytest.mark.parametrize("grid_on_gpu", [False, True])
def test_quantize_attention_kv_rope_fused(B, S, H, D, grids, max_pos, layout, form, grid_on_gpu):
    """K rotated inside quantize_attention_kv: every output bit equal to quantizing rope3d(k)."""
    freqs, _ = _freqs_forms(max_pos, D)[form]
    g = torch.Generator(device="cuda").manual_seed(S + D)
    shape = (B, S, H, D) if layout == "BNHD" else (B, H, S, D)
    k = (torch.randn(shape, device="cuda", generator=g) + 3.0).to(torch.bfloat16)  # a bias: smoothing matters
    v = torch.randn(shape, device="cuda", generator=g).to(torch.bfloat16)
    gs = torch.tensor(grids, dtype=torch.int64, device="cuda" if grid_on_gpu else "cpu")
    table, sin = (freqs, None) if form != "cos_sin" else freqs
    got = torch.ops.ac4k.quantize_attention_kv(k, v, layout, gs, table, sin)
    k_rot = _bnhd(ac4k_kernel.rope3d(_bnhd(k, layout), gs, freqs), layout)
    want = torch.ops.ac4k.quantize_attention_kv(k_rot, v, layout)
    for name, a, b in zip(["k8", "k_scale", "k_mean", "vt", "v_scale"], got, want):
        assert torch.equal(_bits(a), _bits(b)), name


ATT_ROPE = [  # B, Sq, Sk, Hq, Hkv, D, layout, causal, grids, form, grid_on_gpu
    (2, 777, 777, 4, 2, 128, "BNHD", False, [[3, 16, 16], [2, 20, 19]], "complex128", False),  # GQA, copied tails
    (2, 777, 777, 4, 4, 128, "BHND", True, [[3, 16, 16], [2, 20, 19]], "complex64", True),
    (1, 300, 500, 2, 1, 64, "BNHD", False, [[2, 10, 14]], "cos_sin", False),  # Sq != Sk, MQA, D = 64
    (1, 1100, 1100, 2, 2, 64, "BHND", True, [[4, 16, 17]], "complex128", True),
]


@pytest.mark.parametrize("precision", ["int8+fp8e4m3", "fp8e4m3", "bf16"])
@pytest.mark.parametrize("B,Sq,Sk,Hq,Hkv,D,layout,causal,grids,form,grid_on_gpu", ATT_ROPE)
def test_attention_rope(B, Sq, Sk, Hq, Hkv, D, layout, causal, grids, form, grid_on_gpu, precision):
    """attention(..., rope=(grid_sizes, freqs)) equals attention on rope3d(q), rope3d(k), bit for bit
    (o and lse); and the 8-bit attention ops rotating q inside the kernel (their grid_sizes / freqs
    arguments, sm90a) equal the op on rope3d(q), bit for bit."""
    ops = ac4k_kernel.get_info()["ops"]
    name = {"int8+fp8e4m3": "mha_int8_x_fp8_fwd", "fp8e4m3": "mha_fp8_fwd", "bf16": "mha_bf16_fwd"}[precision]
    if name not in ops:
        pytest.skip(f"this build has no {name}")
    freqs, table = _freqs_forms(64, D)[form]
    g = torch.Generator(device="cuda").manual_seed(Sq + Sk + D)
    shape = lambda S, H: (B, S, H, D) if layout == "BNHD" else (B, H, S, D)
    q = torch.randn(shape(Sq, Hq), device="cuda", generator=g).to(torch.bfloat16)
    k = (torch.randn(shape(Sk, Hkv), device="cuda", generator=g) + 2.0).to(torch.bfloat16)
    v = torch.randn(shape(Sk, Hkv), device="cuda", generator=g).to(torch.bfloat16)
    gs = torch.tensor(grids, dtype=torch.int64, device="cuda" if grid_on_gpu else "cpu")
    out = torch.full_like(q, float("nan"))  # poisoned: every element must be written
    got, lse = ac4k_kernel.attention(q, k, v, layout=layout, causal=causal, precision=precision, return_lse=True,
                                     out=out, rope=(gs, freqs))
    assert got.data_ptr() == out.data_ptr()
    qr, kr = (_bnhd(ac4k_kernel.rope3d(_bnhd(x, layout), gs, freqs), layout) for x in (q, k))
    want, want_lse = ac4k_kernel.attention(qr, kr, v, layout=layout, causal=causal, precision=precision,
                                           return_lse=True)
    assert torch.equal(got, want)
    assert torch.equal(lse, want_lse)
    assert torch.equal(ac4k_kernel.attention(q, k, v, layout=layout, causal=causal, precision=precision,
                                             rope=(gs, freqs)), want)
    if precision != "bf16" and ac4k_kernel.get_info()["arch"] == "sm90a":
        k8, ks, _, vt, vs = torch.ops.ac4k.quantize_attention_kv(kr, v, layout, None, None, None,
                                                                 "fp8e4m3" if precision == "fp8e4m3" else "int8")
        op, scale = getattr(torch.ops.ac4k, name), D ** -0.5
        o_in, lse_in = op(q, k8, ks, vt, vs, layout, causal, scale, True, *rope_args(gs, freqs, "test"))
        o_first, lse_first = op(qr, k8, ks, vt, vs, layout, causal, scale, True)
        assert torch.equal(o_in, o_first)
        assert torch.equal(lse_in, lse_first)
    if causal:
        return
    exact = ref.attention_exact(*(_bnhd(ref.rope3d(_bnhd(x, layout).cpu(), grids, table), layout).cuda() for x in (q, k)),
                                v, layout=layout)
    cos = torch.nn.functional.cosine_similarity(got.double().flatten(), exact.double().flatten(), dim=0).item()
    assert cos >= 0.998, cos


def test_rope_fused_errors():
    k = torch.randn(1, 64, 2, 128, device="cuda", dtype=torch.bfloat16)
    freqs = ref.rope3d_freqs(16, 128).cuda()
    with pytest.raises(RuntimeError, match="rope needs both grid_sizes and freqs"):
        torch.ops.ac4k.quantize_attention_kv(k, k, "BNHD", torch.tensor([[1, 8, 8]]), None, None)
    with pytest.raises(RuntimeError, match="covers 72 tokens, more than S = 64"):
        torch.ops.ac4k.quantize_attention_kv(k, k, "BNHD", torch.tensor([[1, 8, 9]]), freqs, None)
    with pytest.raises(RuntimeError, match="freqs must be"):
        torch.ops.ac4k.quantize_attention_kv(k, k, "BNHD", torch.tensor([[1, 8, 8]]), freqs[:, :10], None)
    with pytest.raises(ValueError, match="rope must be a pair"):
        ac4k_kernel.attention(k, k, k, rope=freqs)


def _has_q_op():
    return "quantize_attention_q" in ac4k_kernel.get_info()["ops"]


def _poisoned_pool(nbytes: int = 64 << 20):
    """Fill freed allocator blocks with 0x55 so that outputs the op allocates start poisoned: an element
    it does not write keeps the pattern (which no quantized value or scale bit pattern here equals in
    bulk), instead of whatever happened to be there."""
    torch.full((nbytes,), 0x55, dtype=torch.uint8, device="cuda")
    torch.cuda.synchronize()


Q_CASES = [  # B, S, H, D, grids (None: no rope), max_pos, layout, dtype
    (2, 300, 3, 128, [[3, 10, 9], [2, 7, 11]], 64, "BNHD", torch.bfloat16),  # per-sample grids, copied tails
    (1, 1, 2, 128, [[1, 1, 1]], 8, "BNHD", torch.bfloat16),                  # one token
    (2, 17, 11, 64, [[1, 3, 5], [1, 1, 17]], 32, "BHND", torch.bfloat16),     # 11 heads: warps take 2; 15 of 17 rotated
    (1, 1100, 40, 128, [[4, 16, 17]], 64, "BNHD", torch.float16),             # Wan's 40 heads, fp16
    (2, 777, 5, 64, None, 0, "BHND", torch.bfloat16),                         # no rope: per_block 16 alone
    (1, 4096, 9, 128, [[16, 16, 16]], 64, "BHND", torch.bfloat16),            # every token rotated
]


@pytest.mark.skipif(not _has_q_op(), reason="this build has no quantize_attention_q")
@pytest.mark.parametrize("B,S,H,D,grids,max_pos,layout,dtype", Q_CASES)
@pytest.mark.parametrize("q_precision", ["int8", "fp8e4m3"])
def test_quantize_attention_q(B, S, H, D, grids, max_pos, layout, dtype, q_precision):
    """q rotated and quantized in one pass: values and scales bit for bit the reference quantizer
    (per_block, 16 tokens) applied to rope3d(q), in q's layout; every output element written."""
    g = torch.Generator(device="cuda").manual_seed(S + H + D)
    shape = (B, S, H, D) if layout == "BNHD" else (B, H, S, D)
    q = (3 * torch.randn(shape, device="cuda", generator=g)).to(dtype)
    rope = ()
    qr = q
    if grids is not None:
        freqs = _freqs_forms(max_pos, D)["complex128"][0]
        gs = torch.tensor(grids, dtype=torch.int64)
        rope = (gs, freqs, None)
        qr = _bnhd(ac4k_kernel.rope3d(_bnhd(q, layout), gs, freqs), layout)
    _poisoned_pool()
    q8, qs = torch.ops.ac4k.quantize_attention_q(q, layout, *rope, q_precision) if rope else \
        torch.ops.ac4k.quantize_attention_q(q, layout, q_precision=q_precision)
    want = (ref.quantize_int8 if q_precision == "int8" else ref.quantize_fp8)(qr.cpu(), "per_block", 16, layout)
    assert q8.shape == q.shape and q8.dtype == want.values.dtype
    assert qs.shape == (B, H, -(-S // 16)) and qs.dtype == torch.float32
    assert torch.equal(_bits(q8.cpu()), _bits(want.values))
    assert torch.equal(_bits(qs.cpu()), _bits(want.scales))


@pytest.mark.skipif(not _has_q_op(), reason="this build has no quantize_attention_q")
@pytest.mark.parametrize("form", ["complex64", "cos_sin"])
@pytest.mark.parametrize("grid_on_gpu", [False, True])
def test_quantize_attention_q_table_forms(form, grid_on_gpu):
    """The other table forms and GPU grid sizes: the same bits as quantizing rope3d(q) with them."""
    freqs = _freqs_forms(32, 128)[form][0]
    q = torch.randn(2, 500, 4, 128, device="cuda").to(torch.bfloat16)
    gs = torch.tensor([[2, 10, 20], [3, 8, 8]], dtype=torch.int64, device="cuda" if grid_on_gpu else "cpu")
    got = torch.ops.ac4k.quantize_attention_q(q, "BNHD", *rope_args(gs, freqs, "test"))
    want = ref.quantize_int8(ac4k_kernel.rope3d(q, gs, freqs).cpu(), "per_block", 16)
    assert torch.equal(_bits(got[0].cpu()), _bits(want.values))
    assert torch.equal(_bits(got[1].cpu()), _bits(want.scales))


@pytest.mark.skipif(not _has_q_op(), reason="this build has no quantize_attention_q")
def test_quantize_attention_q_strided_and_special_values():
    """q as a view into a packed qkv tensor (token stride 3 H D), with NaN and +-inf in some blocks:
    the reference's semantics (NaN ignored by the absmax, an inf makes the block's scale inf and its
    values 0; E4M3 keeps NaN) bit for bit."""
    qkv = torch.randn(1, 100, 3, 6, 64, device="cuda").to(torch.bfloat16)
    q = qkv[:, :, 0]
    q[0, 3, 1, 5] = float("nan")
    q[0, 40, 2, 0] = float("inf")
    q[0, 99, 5, 63] = -float("inf")
    for prec, fn in (("int8", ref.quantize_int8), ("fp8e4m3", ref.quantize_fp8)):
        q8, qs = torch.ops.ac4k.quantize_attention_q(q, "BNHD", q_precision=prec)
        want = fn(q.cpu(), "per_block", 16)
        got_v, want_v = q8.cpu(), want.values
        if prec == "fp8e4m3":  # 0 * inf is NaN in both; its sign bit is not defined
            nan = torch.isnan(got_v.float())
            assert torch.equal(nan, torch.isnan(want_v.float()))
            got_v, want_v = got_v[~nan], want_v[~nan]
        assert torch.equal(_bits(got_v), _bits(want_v)), prec
        assert torch.equal(_bits(qs.cpu()), _bits(want.scales)), prec


@pytest.mark.skipif(not _has_q_op(), reason="this build has no quantize_attention_q")
def test_quantize_attention_q_errors():
    q = torch.randn(1, 64, 2, 128, device="cuda", dtype=torch.bfloat16)
    freqs = ref.rope3d_freqs(16, 128).cuda()
    op = torch.ops.ac4k.quantize_attention_q
    with pytest.raises(RuntimeError, match="q_precision must be"):
        op(q, "BNHD", q_precision="int4")
    with pytest.raises(RuntimeError, match="head dim must be 64 or 128"):
        op(torch.randn(1, 64, 2, 96, device="cuda", dtype=torch.bfloat16), "BNHD")
    with pytest.raises(RuntimeError, match="q must be bfloat16 or float16"):
        op(q.float(), "BNHD")
    with pytest.raises(RuntimeError, match="layout must be"):
        op(q, "BSHD")
    with pytest.raises(RuntimeError, match="rope needs both grid_sizes and freqs"):
        op(q, "BNHD", torch.tensor([[1, 8, 8]]))
    with pytest.raises(RuntimeError, match="covers 72 tokens, more than S = 64"):
        op(q, "BNHD", torch.tensor([[1, 8, 9]]), freqs)
    base = torch.randn(64 * 2 * 128 + 4, device="cuda", dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="not supported"):  # data 8 bytes past a 16-byte boundary
        op(base[4:].view(1, 64, 2, 128), "BNHD")
