"""GPU tests of gemm_nvfp4 and linear(precision="nvfp4") against reference.gemm_nvfp4 (exact decode, dot
in fp64, global scales and bias in FP32): M 1..4096 (odd), N tails, K multiples of 16 (incl. not of 32 /
64), bias dtypes, fp16, strided / poisoned outputs, errors, nn.Linear, CUDA graph, torch.compile."""
import pytest
import torch

import ac4k_kernel
from ac4k_kernel import reference as ref

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
              pytest.mark.skipif("gemm_nvfp4" not in ac4k_kernel.get_info()["ops"], reason="no gemm_nvfp4 in this build")]

# Against the reference before its final rounding: the decoded products are exact and the kernel sums
# them in FP32 (wgmma f16 -> f32), a few FP32 ulps of the partial sums away from the fp64 dot; the
# bf16 / fp16 output rounding is <= 2^-9 relative. A wrong K permutation, block scale or tile gives
# errors of the order of the values themselves.
MAX_REL_L2 = 1e-2
ELEM_RTOL = 1e-2  # |y - r| <= ELEM_RTOL * (|r| + rms(r)) element by element
# Against bf16 torch (no quantization): NVFP4 of x and W (~0.13 rel L2, tests/test_reference_linear.py).
BF16_MAX_REL_L2, BF16_MIN_COS = 0.2, 0.98


def _operand(rows, K, seed, scale=1.0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = (torch.randn(rows, K, device="cuda", generator=g) * scale).bfloat16()
    return ref.quantize_nvfp4(x)


def _want32(aq, bq, bias):
    return ref.gemm_nvfp4(aq.values, aq.scales, aq.global_scale, bq.values, bq.scales, bq.global_scale, bias,
                          torch.float32)


def _args(aq, bq):
    return aq.values, aq.scales, aq.global_scale, bq.values, bq.scales, bq.global_scale


def _check(y, want32, out_dtype):
    assert y.dtype == out_dtype and y.shape == want32.shape
    assert torch.isfinite(y).all(), "unwritten (NaN-poisoned) or non-finite outputs"
    yf = y.float()
    rms = want32.pow(2).mean().sqrt()
    rel = ((yf - want32).norm() / want32.norm()).item()
    assert rel <= MAX_REL_L2, rel
    bad = (yf - want32).abs() > ELEM_RTOL * (want32.abs() + rms)
    assert not bad.any(), f"{int(bad.sum())} elements off, first at {bad.nonzero()[0].tolist()}"


GEMM_CASES = [  # M, N, K
    (1, 5128, 5120),
    (7, 200, 64),
    (129, 201, 1040),  # odd N: the scalar store path; K / 16 = 65 (odd scale rows), K % 64 = 16
    (1000, 5128, 13824),
    (300, 77, 16),     # the smallest K: one 16-block, K % 32 != 0
    (64, 384, 48),     # K % 32 == 16 with more than one block
    (4096, 5120, 5120),  # ~10 tiles a CTA: the persistent loop's stage / buffer bookkeeping
    # M <= 64: the small-M kernel (1..4 m16 tiles, K split over 4 warps x a cluster of 1..8 CTAs)
    (16, 5120, 5120),   # one m16 tile, clusters of 2
    (24, 520, 1040),    # two tiles (A decoded by its own kernel from 17 rows on), a partial last chunk
    (33, 1000, 13824),  # three tiles, 32 column CTAs: clusters of 8
    (50, 33, 2064),     # four tiles, a 1-column CTA, 129 blocks: a partial last 128-wide chunk
]


@pytest.mark.parametrize("M,N,K", GEMM_CASES)
@pytest.mark.parametrize("bias_dtype", [None, torch.bfloat16, torch.float32])
def test_gemm_nvfp4_matches_reference(M, N, K, bias_dtype):
    aq = _operand(M, K, seed=M + K)
    bq = _operand(N, K, seed=N + 7 * K, scale=0.05)
    bias = None if bias_dtype is None else torch.randn(N, device="cuda").to(bias_dtype)
    out = torch.full((M, N), float("nan"), device="cuda", dtype=torch.bfloat16)  # poisoned
    torch.ops.ac4k.gemm_nvfp4_out(*_args(aq, bq), bias, out)
    _check(out, _want32(aq, bq, bias), torch.bfloat16)
    y = torch.ops.ac4k.gemm_nvfp4(*_args(aq, bq), bias)
    assert torch.equal(y, out)  # deterministic, and the allocating op is the same kernel


def test_gemm_nvfp4_decoded_in_chunks():
    # An A whose FP16 copy (8300 x 16384 x 2 bytes = 272 MB) exceeds 256 MB: a path that decodes A
    # before the GEMM (tools/variants/session14.patch) does it in two chunks of 4224 and 4076 rows.
    M, N, K = 8300, 136, 16384
    aq = _operand(M, K, seed=21)
    bq = _operand(N, K, seed=22, scale=0.05)
    bias = torch.randn(N, device="cuda", dtype=torch.float32)
    out = torch.full((M, N), float("nan"), device="cuda", dtype=torch.bfloat16)
    torch.ops.ac4k.gemm_nvfp4_out(*_args(aq, bq), bias, out)
    _check(out, _want32(aq, bq, bias), torch.bfloat16)


@pytest.mark.parametrize("M,with_bias", [(100, True), (8300, False)])
def test_gemm_nvfp4_weight_decoded_in_chunks(M, with_bias):
    # A weight of 8300 x 16384 decodes to 272 MB of FP16: B in two chunks of 4224 and 4076 rows, each
    # its own GEMM over output columns [n0, n0 + nc) (bias offset with them); at M = 8300 A is chunked
    # as well and decoded again for the second B chunk.
    N, K = 8300, 16384
    aq = _operand(M, K, seed=23)
    bq = _operand(N, K, seed=24, scale=0.05)
    bias = torch.randn(N, device="cuda", dtype=torch.bfloat16) if with_bias else None
    out = torch.full((M, N), float("nan"), device="cuda", dtype=torch.bfloat16)
    torch.ops.ac4k.gemm_nvfp4_out(*_args(aq, bq), bias, out)
    _check(out, _want32(aq, bq, bias), torch.bfloat16)


def test_gemm_nvfp4_wide_scale_range():
    # Rows spanning 2^-12 .. 2^12 (block scales from E4M3 subnormals to the top): the decode stays exact.
    g = torch.Generator(device="cuda").manual_seed(11)
    x = torch.randn(200, 256, device="cuda", generator=g) * torch.logspace(-12, 12, 200, base=2, device="cuda")[:, None]
    aq = ref.quantize_nvfp4(x.bfloat16())
    bq = _operand(96, 256, seed=12)
    assert (aq.scales.float() < 2 ** -6).any()  # some subnormal block scales really occur
    want = _want32(aq, bq, None)
    y = torch.ops.ac4k.gemm_nvfp4(*_args(aq, bq))
    rel_rows = (y.float() - want).norm(dim=1) / want.norm(dim=1).clamp_min(1e-30)
    assert rel_rows.max().item() <= 1e-2, rel_rows.max().item()


@pytest.mark.parametrize("M,N,K", [(129, 200, 1040), (1, 77, 64), (513, 5128, 5120)])
def test_gemm_nvfp4_fp16_and_strided_out(M, N, K):
    aq = _operand(M, K, seed=1)
    bq = _operand(N, K, seed=2, scale=0.05)
    bias = torch.randn(N, device="cuda", dtype=torch.float16)
    big = torch.full((M, N + 9), float("nan"), device="cuda", dtype=torch.float16)
    out = big[:, 3:3 + N]  # row stride N + 9: neither 16-byte aligned rows nor pointer
    torch.ops.ac4k.gemm_nvfp4_out(*_args(aq, bq), bias, out)
    _check(out, _want32(aq, bq, bias), torch.float16)
    assert big[:, :3].isnan().all() and big[:, 3 + N:].isnan().all()  # nothing written outside out
    assert torch.equal(torch.ops.ac4k.gemm_nvfp4(*_args(aq, bq), bias, torch.float16), out)


@pytest.mark.parametrize("M", [300, 40])  # the tiled and the small-M kernel
def test_gemm_nvfp4_strided_operands(M):
    # Views into wider buffers: packed row strides > K / 2 (multiples of 8), scale row strides > K / 16.
    af, bf = _operand(M, 512, seed=3), _operand(260, 512, seed=4, scale=0.05)
    a, asf = af.values[:, 32:32 + 160], af.scales[:, 4:4 + 20]
    b, bsf = bf.values[:, 64:64 + 160], bf.scales[:, 8:8 + 20]
    y = torch.ops.ac4k.gemm_nvfp4(a, asf, af.global_scale, b, bsf, bf.global_scale)
    want = ref.gemm_nvfp4(a, asf, af.global_scale, b, bsf, bf.global_scale, None, torch.float32)
    _check(y, want, torch.bfloat16)


def test_gemm_nvfp4_zero_rows_and_empty():
    x = torch.randn(70, 64, device="cuda").bfloat16()  # the tiled kernel; x[:40] below the small-M one
    x[::3] = 0  # all-zero rows quantize to zero scales: their output is the bias
    aq, bq = ref.quantize_nvfp4(x), _operand(40, 64, seed=6)
    bias = torch.randn(40, device="cuda").bfloat16()
    y = torch.ops.ac4k.gemm_nvfp4(*_args(aq, bq), bias)
    assert torch.equal(y[::3], bias.expand(y[::3].shape))
    _check(y, _want32(aq, bq, bias), torch.bfloat16)
    y40 = torch.ops.ac4k.gemm_nvfp4(aq.values[:40], aq.scales[:40], aq.global_scale, *_args(aq, bq)[3:], bias)
    assert torch.equal(y40[::3], bias.expand(y40[::3].shape))
    e = torch.ops.ac4k.gemm_nvfp4(aq.values[:0], aq.scales[:0], aq.global_scale, *_args(aq, bq)[3:])
    assert e.shape == (0, 40)


LINEAR_CASES = [((1, 5120), 5120), ((7, 64), 200), ((129, 1040), 5128), ((1000, 13824), 5120),
                ((2, 3, 50, 128), 200), ((4, 77, 5120), 13824)]


@pytest.mark.parametrize("shape,N", LINEAR_CASES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_nvfp4_matches_reference(shape, N, dtype, with_bias):
    K = shape[-1]
    g = torch.Generator(device="cuda").manual_seed(K + N)
    x = torch.randn(shape, device="cuda", generator=g).to(dtype)
    w = (torch.randn(N, K, device="cuda", generator=g) * K ** -0.5).to(dtype)
    bias = torch.randn(N, device="cuda", generator=g).to(dtype) if with_bias else None
    wq = ac4k_kernel.quantize_weight(w, precision="nvfp4")
    wq_ref = ref.quantize_weight_nvfp4(w)
    assert torch.equal(wq.values, wq_ref.values)
    assert torch.equal(wq.scales.view(torch.uint8), wq_ref.scales.view(torch.uint8))
    y = ac4k_kernel.linear(x, wq, bias)
    assert y.shape == (*shape[:-1], N) and y.dtype == dtype
    xq = ref.quantize_nvfp4(x.reshape(-1, K))
    _check(y.reshape(-1, N), _want32(xq, wq_ref, bias), dtype)
    t = x.float() @ w.float().T + (bias.float() if with_bias else 0)
    rel = ((y.float() - t).norm() / t.norm()).item()
    cos = torch.nn.functional.cosine_similarity(y.float().flatten(), t.flatten(), dim=0).item()
    assert rel <= BF16_MAX_REL_L2 and cos >= BF16_MIN_COS, (rel, cos)


def test_linear_nvfp4_out_and_strided_x():
    x = torch.randn(64, 3, 512, device="cuda", dtype=torch.bfloat16)[:, 1]  # [64, 512], row stride 1536
    wq = ac4k_kernel.quantize_weight(torch.randn(300, 512, device="cuda", dtype=torch.bfloat16) * 0.05,
                                     precision="nvfp4")
    out = torch.full((64, 300), float("nan"), device="cuda", dtype=torch.bfloat16)
    assert ac4k_kernel.linear(x, wq, out=out) is out
    assert torch.equal(out, ac4k_kernel.linear(x.contiguous(), wq))


def test_gemm_nvfp4_errors():
    aq, bq = _operand(8, 64, seed=0), _operand(32, 64, seed=1)
    op = torch.ops.ac4k.gemm_nvfp4
    a, asf, ags, b, bsf, bgs = _args(aq, bq)
    with pytest.raises(RuntimeError, match="a must be uint8"):
        op(a.view(torch.int8), asf, ags, b, bsf, bgs)
    with pytest.raises(RuntimeError, match="multiple of 16"):
        op(a[:, :4].contiguous(), asf[:, :1].contiguous(), ags, b[:, :4].contiguous(), bsf[:, :1].contiguous(), bgs)
    with pytest.raises(RuntimeError, match="same K"):
        op(a, asf, ags, b[:, :16].contiguous(), bsf[:, :2].contiguous(), bgs)
    with pytest.raises(RuntimeError, match="a_scales must be plain"):
        op(a, ref.quantize_nvfp4(torch.randn(8, 64, device="cuda").bfloat16(), "swizzled").scales, ags, b, bsf, bgs)
    with pytest.raises(RuntimeError, match="b_scales must be float8_e4m3fn"):
        op(a, asf, ags, b, bsf.float(), bgs)
    with pytest.raises(RuntimeError, match="b_global_scale must be a float32 tensor of one element"):
        op(a, asf, ags, b, bsf, bgs.half())
    with pytest.raises(RuntimeError, match=r"bias must have shape \[32\]"):
        op(a, asf, ags, b, bsf, bgs, torch.zeros(31, device="cuda"))
    with pytest.raises(RuntimeError, match="out_dtype must be bfloat16 or float16"):
        op(a, asf, ags, b, bsf, bgs, None, torch.float32)
    with pytest.raises(RuntimeError, match="a_global_scale must be a CUDA tensor"):
        op(a, asf, ags.cpu(), b, bsf, bgs)
    with pytest.raises(RuntimeError, match=r"out must have shape \[8, 32\]"):
        torch.ops.ac4k.gemm_nvfp4_out(a, asf, ags, b, bsf, bgs, None,
                                      torch.empty(8, 33, device="cuda", dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="multiple of 16"):
        ac4k_kernel.linear(torch.randn(8, 40, device="cuda", dtype=torch.bfloat16),
                           ac4k_kernel.quantize_weight(torch.randn(32, 64, device="cuda", dtype=torch.bfloat16),
                                                       precision="nvfp4")._replace(shape=(32, 40)))


def test_nn_linear_nvfp4_on_gpu_cuda_graph_and_compile():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.GELU(), torch.nn.Linear(512, 128)).cuda().bfloat16()
    x = torch.randn(4, 100, 256, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        want = model(x).float()
    ac4k_kernel.quantize_linear_(model, precision="nvfp4")
    with torch.no_grad():
        y = model(x)
    h = torch.nn.functional.gelu(ref.linear_nvfp4(x, model[0].quantized_weight(), model[0].bias))
    want_q = ref.linear_nvfp4(h, model[2].quantized_weight(), model[2].bias).float()
    assert ((y.float() - want_q).norm() / want_q.norm()).item() <= 2e-2  # layer 2 sees a re-quantized h
    assert ((y.float() - want).norm() / want.norm()).item() <= BF16_MAX_REL_L2
    lin = model[0]
    compiled = torch.compile(lambda t: lin(t), fullgraph=True)
    assert torch.equal(compiled(x), lin(x))
    static_x = x.clone()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        lin(static_x)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_y = lin(static_x)
    x2 = torch.randn_like(x)
    static_x.copy_(x2)
    graph.replay()
    assert torch.equal(static_y, lin(x2))
