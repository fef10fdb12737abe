"""GPU tests of attention(precision="bf16") (mha_bf16_fwd: no quantization, 16-bit tensor cores)
against fp64 exact attention: outputs, LSE, layouts, GQA / MQA, causal masks, fp16, strided
inputs, errors, CUDA graphs and torch.compile."""
import pytest
import torch

import ac4k_kernel
from ac4k_kernel import reference as ref
from test_attention import _cos, _qkv, _rel_l1

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
              # an arch without the kernel (sm89) says so in test_api_cpu's missing-kernel tests
              pytest.mark.skipif("mha_bf16_fwd" not in ac4k_kernel.get_info()["ops"],
                                 reason=f"this build ({ac4k_kernel.get_arch()}) has no mha_bf16_fwd")]

# The bars against fp64 exact attention (bf16 output rounding alone is ~0.001 rel L1).
MIN_COS, MAX_REL = 0.99999, 0.005
LSE_ATOL = 1e-3


def _check_exact(o, q, k, v, layout, causal, sm_scale=None, lse=None):
    want, want_lse = ref.attention_exact(q, k, v, layout=layout, causal=causal, sm_scale=sm_scale, return_lse=True)
    assert o.dtype == q.dtype and o.shape == q.shape and not torch.isnan(o).any()
    cos, rel = _cos(o, want), _rel_l1(o, want)
    assert cos >= MIN_COS and rel <= MAX_REL, (cos, rel)
    if lse is not None:
        _check_lse(o, lse, want_lse, layout, LSE_ATOL)
    return cos, rel


def _check_lse(o, lse, want_lse, layout, atol):
    """lse against the reference's (-inf exactly where a row sees no key), and those rows of o exactly 0."""
    assert lse.dtype == torch.float32 and lse.shape == want_lse.shape
    finite = torch.isfinite(want_lse)
    assert torch.equal(finite, torch.isfinite(lse))
    assert (lse[~finite] == float("-inf")).all()
    torch.testing.assert_close(lse[finite], want_lse[finite].float(), rtol=0, atol=atol)
    blind = ~finite  # [B, H, Sq]: causal with Sq > Sk
    if blind.any():
        oh = o if layout == "BHND" else o.transpose(1, 2)
        assert (oh[blind] == 0).all()


CASES = [  # B, Sq, Sk, Hq, Hkv, D, layout, causal
    (1, 256, 256, 2, 2, 128, "BNHD", False),
    (2, 300, 77, 4, 2, 128, "BNHD", False),  # Sq != Sk, GQA, partial blocks
    (1, 77, 300, 3, 1, 64, "BHND", False),  # MQA, D = 64
    (2, 129, 513, 2, 2, 128, "BHND", True),  # causal with Sq < Sk
    (1, 300, 200, 2, 2, 64, "BNHD", True),  # causal with Sq > Sk: the first 100 rows see nothing
    (1, 1, 1, 1, 1, 128, "BNHD", False),
    (1, 1, 1000, 2, 1, 64, "BHND", True),  # one query row sees every key
    (2, 1000, 129, 4, 4, 64, "BNHD", False),
    (1, 513, 1000, 2, 2, 128, "BNHD", True),  # several stage wraps, diagonal blocks
    (1, 1000, 513, 4, 2, 128, "BHND", True),  # causal Sq > Sk with GQA
    (2, 77, 1, 2, 1, 128, "BHND", False),  # one key
    # Long odd cases (variant bf16_n176 takes 176-key steps from Sk >= 2048 at D = 128):
    (1, 2112, 2112, 2, 2, 128, "BNHD", True),  # 12 whole blocks; causal blocks wholly masked for one consumer
    (2, 129, 4097, 2, 1, 128, "BHND", False),  # GQA, a 49-key last block
    (1, 300, 2048, 3, 3, 128, "BNHD", True),  # causal Sq < Sk at the threshold
    # Without a causal mask a CTA takes tiles in turn (one CTA an SM, 132 on an H100 / H200): several
    # tiles a CTA, the last one partial, across heads and batches; O in its own tile (128 keys, D 64
    # and 128) and in Q's (176 keys).
    (2, 4100, 300, 8, 2, 128, "BNHD", False),
    (1, 2000, 1000, 10, 5, 64, "BHND", False),
    (1, 3000, 2100, 8, 8, 128, "BNHD", False),
]


@pytest.mark.parametrize("B,Sq,Sk,Hq,Hkv,D,layout,causal", CASES)
def test_bf16_matches_exact(B, Sq, Sk, Hq, Hkv, D, layout, causal):
    q, k, v = _qkv(B, Sq, Sk, Hq, Hkv, D, layout, seed=Sq + 3 * Sk + D)
    out = torch.full_like(q, float("nan"))  # poisoned: every element must be written
    o, lse = ac4k_kernel.attention(q, k, v, layout=layout, causal=causal, return_lse=True, out=out, precision="bf16")
    assert o.data_ptr() == out.data_ptr()
    _check_exact(o, q, k, v, layout, causal, lse=lse)
    # Without out= / return_lse: the same values.
    assert torch.equal(ac4k_kernel.attention(q, k, v, layout=layout, causal=causal, precision="bf16"), o)


@pytest.mark.parametrize("D", [64, 128])
@pytest.mark.parametrize("causal", [False, True])
def test_bf16_fp16_and_sm_scale(D, causal):
    q, k, v = _qkv(1, 200, 333, 2, 2, D, dtype=torch.float16, seed=3 + D)
    o, lse = ac4k_kernel.attention(q, k, v, sm_scale=0.05, causal=causal, return_lse=True, precision="bf16")
    assert o.dtype == torch.float16
    _check_exact(o, q, k, v, "BNHD", causal, sm_scale=0.05, lse=lse)


@pytest.mark.parametrize("sm_scale", [0.3, 0.0])
def test_bf16_sm_scale(sm_scale):
    q, k, v = _qkv(1, 150, 260, 2, 2, 128, seed=4)
    o, lse = ac4k_kernel.attention(q, k, v, sm_scale=sm_scale, return_lse=True, precision="bf16")
    _check_exact(o, q, k, v, "BNHD", False, sm_scale=sm_scale, lse=lse)


def test_bf16_strided_inputs_and_out():
    """q, k, v as views into one packed qkv tensor (BNHD) and as transposed BNHD tensors (BHND
    views); out= a view with padded rows: nothing outside it is written."""
    qkv = torch.randn(2, 300, 3, 4, 128, device="cuda", dtype=torch.bfloat16)
    q, k, v = qkv.unbind(2)
    assert not q.is_contiguous()
    buf = torch.full((2, 310, 4, 136), 7.0, device="cuda", dtype=torch.bfloat16)
    out = buf[:, :300, :, :128]
    o = ac4k_kernel.attention(q, k, v, out=out, precision="bf16")
    assert o.data_ptr() == out.data_ptr()
    _check_exact(o, q, k, v, "BNHD", False)
    assert (buf[:, 300:] == 7.0).all() and (buf[..., 128:] == 7.0).all()
    # BHND views of BNHD storage (token stride H * D), causal with Sq != Sk.
    qb = torch.randn(1, 129, 3, 64, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
    kb, vb = (torch.randn(1, 257, 3, 64, device="cuda", dtype=torch.bfloat16).transpose(1, 2) for _ in range(2))
    o, lse = ac4k_kernel.attention(qb, kb, vb, layout="BHND", causal=True, return_lse=True, precision="bf16")
    _check_exact(o, qb, kb, vb, "BHND", True, lse=lse)


def test_bf16_accuracy_s8192():
    """S = 8192, H = 4, D = 128 against fp64 exact attention."""
    q, k, v = _qkv(1, 8192, 8192, 4, 4, 128, seed=7)
    o = ac4k_kernel.attention(q, k, v, precision="bf16")
    cos, rel = _check_exact(o, q, k, v, "BNHD", False)
    print(f"bf16 S=8192: cos {cos:.7f} rel L1 {rel:.5f}")


def test_bf16_errors():
    q, k, v = _qkv(1, 64, 64, 4, 4, 128)
    with pytest.raises(ValueError, match="head dim"):
        ac4k_kernel.attention(q[..., :96], k[..., :96], v[..., :96], precision="bf16")
    with pytest.raises(TypeError, match="dtype"):
        ac4k_kernel.attention(q, k.half(), v, precision="bf16")
    with pytest.raises(TypeError, match="bfloat16 or float16"):
        ac4k_kernel.attention(q.float(), k.float(), v.float(), precision="bf16")
    with pytest.raises(ValueError, match="same shape"):
        ac4k_kernel.attention(q, k, v[:, :32], precision="bf16")
    with pytest.raises(ValueError, match="multiple of k/v heads"):
        ac4k_kernel.attention(q, k[:, :, :3], v[:, :, :3], precision="bf16")
    with pytest.raises(ValueError, match="out must be"):
        ac4k_kernel.attention(q, k, v, out=torch.empty_like(q, dtype=torch.float16), precision="bf16")


def test_bf16_op_errors():
    """The op behind attention(precision="bf16") names the bad argument."""
    q, k, v = _qkv(1, 200, 200, 4, 2, 128)
    mha, mha_out = torch.ops.ac4k.mha_bf16_fwd, torch.ops.ac4k.mha_bf16_fwd_out
    with pytest.raises(RuntimeError, match="head dim must be 64 or 128"):
        mha(q[..., :96], k[..., :96], v[..., :96], "BNHD", False, 0.1, False)
    with pytest.raises(RuntimeError, match="k must have q's dtype"):
        mha(q, k.half(), v, "BNHD", False, 0.1, False)
    with pytest.raises(RuntimeError, match="v must be bfloat16 or float16"):
        mha(q, k, v.float(), "BNHD", False, 0.1, False)
    with pytest.raises(RuntimeError, match="k and v must have the same shape"):
        mha(q, k, v[:, :100], "BNHD", False, 0.1, False)
    with pytest.raises(RuntimeError, match="multiple of k/v heads"):
        mha(q[:, :, :3], k, v, "BNHD", False, 0.1, False)
    with pytest.raises(RuntimeError, match="differ in batch or head dim"):
        mha(q, torch.cat([k, k]), torch.cat([v, v]), "BNHD", False, 0.1, False)
    with pytest.raises(RuntimeError, match="sm_scale must be finite and >= 0"):
        mha(q, k, v, "BNHD", False, -0.1, False)
    with pytest.raises(RuntimeError, match="layout must be BNHD or BHND"):
        mha(q, k, v, "BSHD", False, 0.1, False)
    misaligned = torch.randn(q.numel() + 4, device="cuda", dtype=q.dtype)[4:].view(q.shape)  # 8-byte offset
    with pytest.raises(RuntimeError, match="q must be 16-byte aligned"):
        mha(misaligned, k, v, "BNHD", False, 0.1, False)
    odd = torch.randn(1, 200, 2, 130, device="cuda", dtype=q.dtype)[..., :128]  # head stride 130
    with pytest.raises(RuntimeError, match="v must be 16-byte aligned"):
        mha(q, k, odd, "BNHD", False, 0.1, False)
    with pytest.raises(RuntimeError, match="out must have q's dtype"):
        mha_out(q, k, v, "BNHD", False, 0.1, False, torch.empty_like(q, dtype=torch.float16))
    with pytest.raises(RuntimeError, match="out must have q's shape"):
        mha_out(q, k, v, "BNHD", False, 0.1, False, torch.empty_like(q[:, :100]))
    with pytest.raises(RuntimeError, match="out must be 16-byte aligned"):
        mha_out(q, k, v, "BNHD", False, 0.1, False, misaligned)


def test_bf16_cuda_graph():
    """attention(precision="bf16") captured in a CUDA graph and replayed on new inputs."""
    q, k, v = _qkv(1, 1000, 777, 4, 2, 128, seed=5)
    sq, sk, sv = q.clone(), k.clone(), v.clone()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        ac4k_kernel.attention(sq, sk, sv, precision="bf16", causal=True)  # warm-up outside the capture
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        got, lse = ac4k_kernel.attention(sq, sk, sv, precision="bf16", causal=True, return_lse=True)
    for seed in (1, 2):
        q2, k2, v2 = _qkv(1, 1000, 777, 4, 2, 128, seed=seed)
        sq.copy_(q2)
        sk.copy_(k2)
        sv.copy_(v2)
        got.fill_(float("nan"))
        g.replay()
        torch.cuda.synchronize()
        want, want_lse = ac4k_kernel.attention(q2, k2, v2, precision="bf16", causal=True, return_lse=True)
        assert torch.equal(got, want) and torch.equal(lse, want_lse)


def test_bf16_torch_compile():
    """attention(precision="bf16") inside torch.compile(fullgraph=True): the eager result bit for bit."""
    q, k, v = _qkv(2, 300, 500, 4, 2, 64, seed=9)

    @torch.compile(fullgraph=True)
    def f(a, b, c):
        o, lse = ac4k_kernel.attention(a * 1, b, c, precision="bf16", causal=True, return_lse=True)
        return o, lse

    got, got_lse = f(q, k, v)
    want, want_lse = ac4k_kernel.attention(q, k, v, precision="bf16", causal=True, return_lse=True)
    assert torch.equal(got, want) and torch.equal(got_lse, want_lse)
    out = torch.empty_like(q)
    g = torch.compile(lambda a, b, c, o: ac4k_kernel.attention(a, b, c, precision="bf16", out=o), fullgraph=True)
    g(q, k, v, out)
    assert torch.equal(out, ac4k_kernel.attention(q, k, v, precision="bf16"))
