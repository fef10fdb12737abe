"""GPU tests of gemm_fp8 and linear(precision="fp8e4m3") against the reference's math (exact E4M3
dot, scales and bias in FP32): tails in M, N and K, batch dims, bias dtypes, fp16, strided / poisoned
outputs, errors, nn.Linear / quantize_linear_, CUDA graphs and torch.compile."""
import pytest
import torch

import ac4k_kernel
from ac4k_kernel import reference as ref

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
              pytest.mark.skipif("gemm_fp8" not in ac4k_kernel.get_info()["ops"], reason="no gemm_fp8 in this build")]

# Against the reference before its final rounding: the kernel's FP32 sums differ from the exact dot
# by a few FP32 ulps a 128-K chunk (FP8 wgmma keeps ~22 bits, promoted to FP32 every 128 of K);
# the bf16 / fp16 output rounding is <= 2^-9 relative. Missing scales, a wrong tile or stale data
# give errors of the order of the values themselves.
MAX_REL_L2 = 1e-2
ELEM_RTOL = 1e-2  # |y - r| <= ELEM_RTOL * (|r| + rms(r)) element by element
# Against bf16 torch (no quantization): the FP8 E4M3 quantization of x and W (~0.04 rel L2, see
# tests/test_reference_linear.py).
BF16_MAX_REL_L2, BF16_MIN_COS = 0.06, 0.998


def _fp8_operand(rows, K, seed, scale=1.0):
    """E4M3 values with per-row scales, made as the quantizers make them (a randn bf16 matrix)."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = (torch.randn(rows, K, device="cuda", generator=g) * scale).bfloat16()
    q = ref.quantize_fp8(x, "per_token")
    return q.values, q.scales


def _check(y, want32, out_dtype):
    assert y.dtype == out_dtype and y.shape == want32.shape
    assert torch.isfinite(y).all(), "unwritten (NaN-poisoned) or non-finite outputs"
    yf = y.float()
    rms = want32.pow(2).mean().sqrt()
    rel = ((yf - want32).norm() / want32.norm()).item()
    assert rel <= MAX_REL_L2, rel
    bad = (yf - want32).abs() > ELEM_RTOL * (want32.abs() + rms)
    assert not bad.any(), f"{int(bad.sum())} elements off, first at {bad.nonzero()[0].tolist()}"
    return rel


def _want32(a, sa, b, sb, bias):
    y = (a.double() @ b.double().T).float() * sa[:, None] * sb
    return y + bias.float() if bias is not None else y


GEMM_CASES = [  # M, N, K
    (1, 5128, 5120),
    (7, 200, 64),
    (129, 201, 1040),  # odd N: the scalar store path; K not a multiple of 128
    (1000, 5128, 13824),
    (300, 77, 16),  # the smallest K
    (4096, 5120, 5120),  # ~10 tiles a CTA: the persistent loop's stage / phase bookkeeping
    (1000, 384, 128),
]


@pytest.mark.parametrize("M,N,K", GEMM_CASES)
@pytest.mark.parametrize("bias_dtype", [None, torch.bfloat16, torch.float32])
def test_gemm_fp8_matches_reference(M, N, K, bias_dtype):
    a, sa = _fp8_operand(M, K, seed=M + K)
    b, sb = _fp8_operand(N, K, seed=N + 7 * K, scale=0.05)
    bias = None if bias_dtype is None else torch.randn(N, device="cuda").to(bias_dtype)
    out = torch.full((M, N), float("nan"), device="cuda", dtype=torch.bfloat16)  # poisoned
    torch.ops.ac4k.gemm_fp8_out(a, sa, b, sb, bias, out)
    _check(out, _want32(a, sa, b, sb, bias), torch.bfloat16)
    y = torch.ops.ac4k.gemm_fp8(a, sa, b, sb, bias)
    assert torch.equal(y, out)  # deterministic, and the allocating op is the same kernel


@pytest.mark.parametrize("M,N,K", [(129, 200, 1040), (1, 77, 64), (513, 5128, 5120)])
def test_gemm_fp8_fp16_and_strided_out(M, N, K):
    a, sa = _fp8_operand(M, K, seed=1)
    b, sb = _fp8_operand(N, K, seed=2, scale=0.05)
    bias = torch.randn(N, device="cuda", dtype=torch.float16)
    big = torch.full((M, N + 9), float("nan"), device="cuda", dtype=torch.float16)
    out = big[:, 3:3 + N]  # row stride N + 9 (odd): neither 16-byte aligned rows nor pointer
    torch.ops.ac4k.gemm_fp8_out(a, sa, b, sb, bias, out)
    _check(out, _want32(a, sa, b, sb, bias), torch.float16)
    assert big[:, :3].isnan().all() and big[:, 3 + N:].isnan().all()  # nothing written outside out
    y = torch.ops.ac4k.gemm_fp8(a, sa, b, sb, bias, torch.float16)
    assert torch.equal(y, out)


def test_gemm_fp8_strided_operands():
    # Row strides larger than K (multiples of 16): views into wider buffers.
    a_full, sa = _fp8_operand(300, 512, seed=3)
    b_full, sb = _fp8_operand(260, 512, seed=4, scale=0.05)
    a, b = a_full[:, 64:64 + 320], b_full[:, 128:128 + 320]
    y = torch.ops.ac4k.gemm_fp8(a, sa, b, sb)
    _check(y, _want32(a, sa, b, sb, None), torch.bfloat16)


def test_gemm_fp8_zero_scales_and_empty():
    a, sa = _fp8_operand(70, 64, seed=5)
    b, sb = _fp8_operand(40, 64, seed=6)
    sa = sa.clone()
    sa[::3] = 0  # an all-zero row of x quantizes to scale 0: its output is the bias
    bias = torch.randn(40, device="cuda").bfloat16()
    y = torch.ops.ac4k.gemm_fp8(a, sa, b, sb, bias)
    assert torch.equal(y[::3], bias.expand(y[::3].shape))
    _check(y, _want32(a, sa, b, sb, bias), torch.bfloat16)
    e = torch.ops.ac4k.gemm_fp8(a[:0], sa[:0], b, sb)
    assert e.shape == (0, 40)


LINEAR_CASES = [  # x shape, N
    ((1, 5120), 5120),
    ((7, 64), 200),
    ((129, 1040), 5128),
    ((1000, 13824), 5120),
    ((2, 3, 50, 128), 200),  # batch leading dims
    ((4, 77, 5120), 13824),
]


@pytest.mark.parametrize("shape,N", LINEAR_CASES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_matches_reference(shape, N, dtype, with_bias):
    K = shape[-1]
    g = torch.Generator(device="cuda").manual_seed(K + N)
    x = torch.randn(shape, device="cuda", generator=g).to(dtype)
    w = (torch.randn(N, K, device="cuda", generator=g) * K ** -0.5).to(dtype)
    bias = torch.randn(N, device="cuda", generator=g).to(dtype) if with_bias else None
    wq = ac4k_kernel.quantize_weight(w)
    wq_ref = ref.quantize_weight_fp8(w)
    assert torch.equal(wq.values.view(torch.uint8), wq_ref.values.view(torch.uint8))
    assert torch.equal(wq.scales, wq_ref.scales)
    y = ac4k_kernel.linear(x, wq, bias)
    assert y.shape == (*shape[:-1], N)
    xq = ref.quantize_fp8(x, "per_token")
    want32 = _want32(xq.values.reshape(-1, K), xq.scales.reshape(-1), wq_ref.values, wq_ref.scales, bias)
    _check(y.reshape(-1, N), want32, dtype)
    # Sanity against unquantized torch (bf16 / fp16 inputs, fp32 math).
    t = x.float() @ w.float().T + (bias.float() if with_bias else 0)
    d = (y.float() - t).flatten()
    rel = (d.norm() / t.norm()).item()
    cos = torch.nn.functional.cosine_similarity(y.float().flatten(), t.flatten(), dim=0).item()
    assert rel <= BF16_MAX_REL_L2 and cos >= BF16_MIN_COS, (rel, cos)


def test_linear_out_and_strided_x():
    x = torch.randn(64, 3, 512, device="cuda", dtype=torch.bfloat16)[:, 1]  # [64, 512], row stride 1536
    w = torch.randn(300, 512, device="cuda", dtype=torch.bfloat16) * 0.05
    wq = ac4k_kernel.quantize_weight(w)
    out = torch.full((64, 300), float("nan"), device="cuda", dtype=torch.bfloat16)
    y = ac4k_kernel.linear(x, wq, out=out)
    assert y is out
    assert torch.equal(out, ac4k_kernel.linear(x.contiguous(), wq))


def test_linear_and_gemm_errors():
    x = torch.randn(8, 64, device="cuda", dtype=torch.bfloat16)
    wq = ac4k_kernel.quantize_weight(torch.randn(32, 64, device="cuda", dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="multiple of 16"):
        ac4k_kernel.linear(torch.randn(8, 40, device="cuda", dtype=torch.bfloat16),
                           ac4k_kernel.quantize_weight(torch.randn(32, 40, device="cuda", dtype=torch.bfloat16)))
    with pytest.raises(TypeError, match="bfloat16 or float16"):
        ac4k_kernel.linear(x.float(), wq)
    with pytest.raises(ValueError, match="weight.values is on cpu"):
        ac4k_kernel.linear(x, ac4k_kernel.quantize_weight(torch.randn(32, 64)))
    a, sa = _fp8_operand(8, 64, seed=0)
    b, sb = wq.values, wq.scales
    op = torch.ops.ac4k.gemm_fp8
    with pytest.raises(RuntimeError, match="a must be float8_e4m3fn"):
        op(x, sa, b, sb)
    with pytest.raises(RuntimeError, match="b must be float8_e4m3fn"):
        op(a, sa, b.view(torch.uint8), sb)
    a40 = torch.zeros(8, 40, device="cuda", dtype=torch.float8_e4m3fn)
    with pytest.raises(RuntimeError, match="a's K .* multiple of 16"):
        op(a40, sa, a40, sa)
    with pytest.raises(RuntimeError, match="same K"):
        op(a, sa, b[:, :48].contiguous(), sb)
    with pytest.raises(RuntimeError, match=r"a_scale must have shape \[8\]"):
        op(a, sa[:7], b, sb)
    with pytest.raises(RuntimeError, match="b_scale must be float32"):
        op(a, sa, b, sb.half())
    with pytest.raises(RuntimeError, match=r"bias must have shape \[32\]"):
        op(a, sa, b, sb, torch.zeros(31, device="cuda"))
    with pytest.raises(RuntimeError, match="bias must be float32, bfloat16 or float16"):
        op(a, sa, b, sb, torch.zeros(32, device="cuda", dtype=torch.int32))
    with pytest.raises(RuntimeError, match="a_scale must be a CUDA tensor"):
        op(a, sa.cpu(), b, sb)
    with pytest.raises(RuntimeError, match="out_dtype must be bfloat16 or float16"):
        op(a, sa, b, sb, None, torch.float32)
    with pytest.raises(RuntimeError, match="out must be bfloat16 or float16"):
        torch.ops.ac4k.gemm_fp8_out(a, sa, b, sb, None, torch.empty(8, 32, device="cuda"))
    with pytest.raises(RuntimeError, match=r"out must have shape \[8, 32\]"):
        torch.ops.ac4k.gemm_fp8_out(a, sa, b, sb, None, torch.empty(8, 33, device="cuda", dtype=torch.bfloat16))
    with pytest.raises(RuntimeError, match="row stride that is a multiple of 16"):
        op(torch.zeros(8, 72, device="cuda", dtype=torch.float8_e4m3fn)[:, :64], sa, b, sb)


def test_nn_linear_and_quantize_linear_on_gpu():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.GELU(), torch.nn.Linear(512, 128))
    model = model.cuda().bfloat16()
    x = torch.randn(4, 100, 256, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        want = model(x).float()
    ac4k_kernel.quantize_linear_(model)
    assert all(isinstance(model[i], ac4k_kernel.nn.Linear) for i in (0, 2))
    with torch.no_grad():
        y = model(x)
    # Layer by layer, the quantized model is the reference applied to its own buffers.
    h = ref.linear_fp8(x, model[0].quantized_weight(), model[0].bias)
    h = torch.nn.functional.gelu(h)
    want_q = ref.linear_fp8(h, model[2].quantized_weight(), model[2].bias).float()
    assert ((y.float() - want_q).norm() / want_q.norm()).item() <= MAX_REL_L2
    assert ((y.float() - want).norm() / want.norm()).item() <= BF16_MAX_REL_L2
    # state_dict round trip through a module moved to the GPU after loading.
    m2 = ac4k_kernel.nn.Linear(256, 512)
    m2.load_state_dict({k: v.cpu() for k, v in model[0].state_dict().items()})
    m2 = m2.cuda()
    assert torch.equal(m2(x), model[0](x))


def test_linear_cuda_graph_and_compile():
    x = torch.randn(300, 1024, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(640, 1024, device="cuda", dtype=torch.bfloat16) * 0.03
    bias = torch.randn(640, device="cuda", dtype=torch.bfloat16)
    wq = ac4k_kernel.quantize_weight(w)
    eager = ac4k_kernel.linear(x, wq, bias)
    compiled = torch.compile(lambda t: ac4k_kernel.linear(t, wq, bias), fullgraph=True)
    assert torch.equal(compiled(x), eager)
    static_x = x.clone()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        ac4k_kernel.linear(static_x, wq, bias)  # warm-up outside the capture
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_y = ac4k_kernel.linear(static_x, wq, bias)
    x2 = torch.randn_like(x)
    static_x.copy_(x2)
    graph.replay()
    assert torch.equal(static_y, ac4k_kernel.linear(x2, wq, bias))
