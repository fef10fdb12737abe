"""CPU tests of the attention reference (ac4k_kernel.reference.attention)."""
import importlib
import math

import pytest
import torch

from ac4k_kernel.reference.attention import (
    attention,
    attention_bf16,
    attention_exact,
    attention_fp8,
    attention_int8_fp8,
    attention_nvfp4,
)
from ac4k_kernel.reference.quant import (
    dequantize,
    quantize_fp8,
    quantize_int8,
    quantize_nvfp4,
)

# The package re-exports the function `attention` under the module's own name: fetch the module.
ref_attn = importlib.import_module("ac4k_kernel.reference.attention")

PRECISIONS = ("int8+fp8e4m3", "fp8e4m3", "bf16", "nvfp4")

# Accuracy against attention_exact, measured on randn q/k/v (bf16; Sq = Sk = 1024 with D 64 / 128,
# with and without a large shared K offset, causal or not; Sq=300 / Sk=77, GQA, causal or not;
# three seeds each), then loosened:   precision: (min cosine, max rel L1, max |lse - lse_exact|)
# Worst measured:  bf16          0.999997 / 0.0016 / 2e-6
#                  int8+fp8e4m3  0.99922  / 0.039  / 0.029
#                  fp8e4m3       0.99845  / 0.055  / 0.13
#                  nvfp4         0.9807   / 0.195  / 0.47
# The lse error peaks on causal rows that see a handful of keys, where it is the error of one
# quantized score; over 1024 keys it is 0.006 / 0.03 / 0.09 for the three quantized recipes.
BOUNDS = {
    "bf16": (0.99995, 0.004, 1e-4),
    "int8+fp8e4m3": (0.999, 0.05, 0.05),
    "fp8e4m3": (0.998, 0.07, 0.2),
    "nvfp4": (0.97, 0.25, 0.7),
}


def _rand(shape, seed, dtype=torch.bfloat16, offset=0.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g)
    if offset:
        x = x + offset * torch.randn(shape[-1], generator=g)  # shared by every token and head
    return x.to(dtype)


def _qkv(B, Sq, Sk, Hq, Hkv, D, seed=0, dtype=torch.bfloat16, k_offset=0.0, layout="BNHD"):
    q = _rand((B, Sq, Hq, D), seed, dtype)
    k = _rand((B, Sk, Hkv, D), seed + 1, dtype, k_offset)
    v = _rand((B, Sk, Hkv, D), seed + 2, dtype)
    if layout == "BHND":
        q, k, v = (t.transpose(1, 2).contiguous() for t in (q, k, v))
    return q, k, v


def _metrics(o, r):
    o = o.double().flatten()
    r = r.double().flatten()
    cos = torch.nn.functional.cosine_similarity(o, r, dim=0).item()
    rel_l1 = ((o - r).abs().sum() / r.abs().sum()).item()
    return cos, rel_l1


def _lse_err(lse, ref):
    """max |lse - ref| over rows with a visible key; -inf (no key) must match exactly."""
    assert torch.equal(torch.isneginf(lse), torch.isneginf(ref))
    fin = torch.isfinite(ref)
    return (lse[fin].double() - ref[fin].double()).abs().max().item()


def _naive(q, k, v, causal=False, sm_scale=None):
    """Straightforward float64 softmax attention, BNHD, one (batch, head) at a time."""
    B, Sq, Hq, D = q.shape
    Sk, Hkv = k.shape[1], k.shape[2]
    g = Hq // Hkv
    scale = 1.0 / math.sqrt(D) if sm_scale is None else sm_scale
    o = torch.zeros(B, Sq, Hq, D, dtype=torch.float64)
    lse = torch.zeros(B, Hq, Sq, dtype=torch.float64)
    for b in range(B):
        for h in range(Hq):
            s = q[b, :, h].double() @ k[b, :, h // g].double().T * scale
            if causal:
                keep = torch.ones(Sq, Sk, dtype=torch.bool).tril(diagonal=Sk - Sq)
                s = s.masked_fill(~keep, float("-inf"))
            lse[b, h] = torch.logsumexp(s, dim=-1)
            w = torch.softmax(s, dim=-1).nan_to_num(0.0)  # a row with no key: 0
            o[b, :, h] = w @ v[b, :, h // g].double()
    return o, lse


# --------------------------------------------------------------------------- exact

@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("Sq,Sk", [(37, 53), (53, 37)])
def test_exact_matches_naive_formula(causal, Sq, Sk):
    q, k, v = _qkv(2, Sq, Sk, 4, 2, 64, seed=3, dtype=torch.float32)
    o, lse = attention_exact(q, k, v, causal=causal, sm_scale=0.2, return_lse=True)
    o_ref, lse_ref = _naive(q, k, v, causal=causal, sm_scale=0.2)
    assert o.dtype == torch.float32 and o.shape == q.shape
    assert lse.dtype == torch.float32 and lse.shape == (2, 4, Sq)
    torch.testing.assert_close(o, o_ref.float(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(lse, lse_ref.float(), rtol=1e-6, atol=1e-6)


def test_default_sm_scale_is_rsqrt_d():
    q, k, v = _qkv(1, 20, 30, 2, 2, 128, seed=5, dtype=torch.float32)
    o = attention_exact(q, k, v)
    torch.testing.assert_close(o, _naive(q, k, v, sm_scale=1 / math.sqrt(128))[0].float(), rtol=1e-6, atol=1e-6)
    assert not torch.allclose(o, attention_exact(q, k, v, sm_scale=0.5), atol=1e-3)


# --------------------------------------------------------------------------- accuracy of the recipes

@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("D,k_offset", [(64, 0.0), (128, 0.0), (128, 5.0)])
def test_recipe_accuracy_vs_exact(precision, D, k_offset):
    q, k, v = _qkv(1, 1024, 1024, 2, 2, D, seed=10 + D, k_offset=k_offset)
    o_ref, lse_ref = attention_exact(q, k, v, return_lse=True)
    o, lse = attention(q, k, v, precision=precision, return_lse=True)
    assert o.dtype == torch.bfloat16 and o.shape == q.shape
    cos_min, rel_max, lse_max = BOUNDS[precision]
    cos, rel = _metrics(o, o_ref)
    assert cos >= cos_min, (cos, rel)
    assert rel <= rel_max, (cos, rel)
    assert _lse_err(lse, lse_ref) <= lse_max


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("causal", [False, True])
def test_recipe_cross_attention_gqa_batch2(precision, causal):
    # Sq != Sk (causal bottom-right aligned), GQA, batch 2, head dim 64.
    q, k, v = _qkv(2, 300, 77, 4, 2, 64, seed=20)
    o_ref, lse_ref = attention_exact(q, k, v, causal=causal, return_lse=True)
    o, lse = attention(q, k, v, precision=precision, causal=causal, return_lse=True)
    cos_min, rel_max, lse_max = BOUNDS[precision]
    cos, rel = _metrics(o, o_ref)
    assert cos >= cos_min and rel <= rel_max, (cos, rel)
    assert _lse_err(lse, lse_ref) <= lse_max


@pytest.mark.parametrize("fn", [attention_int8_fp8, attention_fp8, attention_nvfp4])
def test_k_smoothing_makes_recipe_offset_invariant(fn):
    # Adding one vector c to every key shifts each score row by sm_scale * q.c: softmax ignores
    # it, and K smoothing removes it before quantization, so the quantized recipe barely moves
    # (it would lose most of its K resolution to c without smoothing). The lse moves by q.c * scale.
    q, k, v = _qkv(1, 256, 256, 2, 2, 64, seed=30, dtype=torch.float32)
    c = 8.0 * torch.randn(64, generator=torch.Generator().manual_seed(31))
    o0, lse0 = fn(q, k, v, return_lse=True)
    o1, lse1 = fn(q, k + c, v, return_lse=True)
    assert _metrics(o1, o0)[1] < 2e-3
    shift = (q.double() @ c.double()).transpose(1, 2) / 8.0  # [B, H, Sq], sm_scale = 1/sqrt(64)
    torch.testing.assert_close(lse1.double(), lse0.double() + shift, rtol=0, atol=2e-3)


# --------------------------------------------------------------------------- the recipes' formulas

def _manual_quantized(q, k, v, kind, causal=False):
    """The recipes' steps spelled out per (batch, head) on BNHD tensors, without attention.py."""
    B, Sq, Hq, D = q.shape
    Sk, Hkv = k.shape[1], k.shape[2]
    g = Hq // Hkv
    scale = 1.0 / math.sqrt(D)
    km = k.float().mean(dim=1, keepdim=True)
    ks = k.float() - km
    if kind in ("int8", "fp8"):
        quant = quantize_int8 if kind == "int8" else quantize_fp8
        qb, kb = 16, 64  # both recipes' default blocks (those of the sm90a kernels)
        qq, kq = quant(q, "per_block", qb), quant(ks, "per_block", kb)
        vq = quantize_fp8(v, "per_channel")
    else:
        ks = ks.to(k.dtype) if k.dtype != torch.float32 else ks  # nvfp4 rounds k_s to the inputs' dtype
        qd, kd = dequantize(quantize_nvfp4(q)), dequantize(quantize_nvfp4(ks))
        skp = (Sk + 15) // 16 * 16
        vt = torch.zeros(B, Hkv, D, skp)
        vt[..., :Sk] = v.float().permute(0, 2, 3, 1)
        vd = dequantize(quantize_nvfp4(vt))  # [B, Hkv, D, skp]
    o = torch.zeros(B, Sq, Hq, D)
    lse = torch.zeros(B, Hq, Sq)
    for b in range(B):
        for h in range(Hq):
            hk = h // g
            if kind in ("int8", "fp8"):
                qs = qq.scales[b, h][torch.arange(Sq) // qb]
                kss = kq.scales[b, hk][torch.arange(Sk) // kb]
                dot = (qq.values[b, :, h].double() @ kq.values[b, :, hk].double().T).float()
                s = dot * qs[:, None] * kss[None, :] * scale
            else:
                s = (qd[b, :, h].double() @ kd[b, :, hk].double().T).float() * scale
            if causal:
                keep = torch.ones(Sq, Sk, dtype=torch.bool).tril(diagonal=Sk - Sq)
                s = s.masked_fill(~keep, float("-inf"))
            m = s.max(dim=1, keepdim=True).values
            # Flash-attention loop over 128-key blocks: P against the running max, rescaled.
            run = torch.full((Sq, 1), float("-inf"), dtype=torch.float64)
            l = torch.zeros(Sq, dtype=torch.float64)
            acc = torch.zeros(Sq, D, dtype=torch.float64)
            for j0 in range(0, Sk, 128):
                sb = s[:, j0:j0 + 128].double()
                new = torch.maximum(run, sb.max(dim=1, keepdim=True).values)
                mu = torch.where(torch.isneginf(new), torch.zeros_like(new), new)
                alpha = torch.exp2((run - mu) * 1.4426950408889634)
                pb = torch.exp2((sb - mu) * 1.4426950408889634)
                if kind in ("int8", "fp8"):
                    pq = (pb * 448.0).float().to(torch.float8_e4m3fn).double()
                    l = l * alpha[:, 0] + pq.sum(dim=1)  # the quantized P: the kernel sums it on the tensor cores
                    vb = vq.values[b, j0:j0 + 128, hk].double()
                else:  # P per 16 keys (global scale 1/448); l from the unquantized p
                    l = l * alpha[:, 0] + pb.sum(dim=1)
                    w16 = -(-pb.shape[1] // 16) * 16
                    pp = torch.zeros(Sq, w16)
                    pp[:, :pb.shape[1]] = pb.float()
                    pq = dequantize(quantize_nvfp4(pp, global_scale=torch.tensor(1 / 448.0))).double()
                    vb = vd[b, hk][:, j0:j0 + w16].double().T
                acc = acc * alpha + pq @ vb
                run = new
            l = l.float()
            if kind in ("int8", "fp8"):
                acc = acc.float() * vq.scales[b, hk]
                lse[b, h] = m[:, 0] + torch.log(l / 448.0)
            else:
                acc = acc.float()
                lse[b, h] = m[:, 0] + torch.log(l)
            o[b, :, h] = acc / l[:, None]
            lse[b, h] += (q[b, :, h].double() @ km[b, 0, hk].double() * scale).float()
    return o.to(q.dtype), lse


@pytest.mark.parametrize("kind,fn", [("int8", attention_int8_fp8), ("fp8", attention_fp8),
                                     ("nvfp4", attention_nvfp4)])
@pytest.mark.parametrize("causal", [False, True])
def test_recipe_follows_its_formula(kind, fn, causal):
    q, k, v = _qkv(2, 150, 200, 4, 2, 64, seed=40, k_offset=2.0)
    o, lse = fn(q, k, v, causal=causal, return_lse=True)
    o_m, lse_m = _manual_quantized(q, k, v, kind, causal=causal)
    # An FA-style loop in fp64 against the reference's weighted sum: rounding apart.
    torch.testing.assert_close(o.float(), o_m.float(), rtol=1e-2, atol=2e-3)
    torch.testing.assert_close(lse, lse_m, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_bf16_recipe_follows_its_formula(dtype):
    q, k, v = _qkv(2, 60, 90, 4, 2, 64, seed=50, dtype=dtype)
    o, lse = attention_bf16(q, k, v, causal=True, return_lse=True)
    o_m = torch.zeros(2, 60, 4, 64)
    lse_m = torch.zeros(2, 4, 60)
    keep = torch.ones(60, 90, dtype=torch.bool).tril(diagonal=30)
    for b in range(2):
        for h in range(4):
            s = (q[b, :, h].float() @ k[b, :, h // 2].float().T) * 0.125
            s = s.masked_fill(~keep, float("-inf"))
            m = s.max(dim=1, keepdim=True).values
            e = torch.exp(s - m)
            l = e.sum(dim=1, keepdim=True)
            o_m[b, :, h] = (e.to(dtype).float() @ v[b, :, h // 2].float()) / l  # P in the input dtype
            lse_m[b, h] = (m + torch.log(l))[:, 0]
    assert o.dtype == dtype
    torch.testing.assert_close(o, o_m.to(dtype), rtol=0, atol=0)
    torch.testing.assert_close(lse, lse_m, rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------- layouts, GQA, masks

@pytest.mark.parametrize("precision", PRECISIONS)
def test_layouts_agree(precision):
    q, k, v = _qkv(2, 70, 90, 4, 2, 64, seed=60)
    o_a, lse_a = attention(q, k, v, layout="BNHD", precision=precision, causal=True, return_lse=True)
    qt, kt, vt = (t.transpose(1, 2).contiguous() for t in (q, k, v))
    o_b, lse_b = attention(qt, kt, vt, layout="BHND", precision=precision, causal=True, return_lse=True)
    assert o_b.shape == qt.shape and o_a.shape == q.shape
    torch.testing.assert_close(o_b.transpose(1, 2), o_a, rtol=0, atol=0)
    torch.testing.assert_close(lse_b, lse_a, rtol=0, atol=0)


@pytest.mark.parametrize("precision", PRECISIONS + ("exact",))
def test_gqa_equals_repeated_kv_heads(precision):
    q, k, v = _qkv(2, 100, 130, 4, 2, 64, seed=70)
    fn = attention_exact if precision == "exact" else (lambda *a, **kw: attention(*a, precision=precision, **kw))
    o, lse = fn(q, k, v, return_lse=True)
    kr, vr = k.repeat_interleave(2, dim=2), v.repeat_interleave(2, dim=2)  # head h -> kv head h // 2
    o_r, lse_r = fn(q, kr, vr, return_lse=True)
    torch.testing.assert_close(o, o_r, rtol=0, atol=0)
    torch.testing.assert_close(lse, lse_r, rtol=0, atol=0)


@pytest.mark.parametrize("precision", PRECISIONS + ("exact",))
def test_fully_masked_causal_rows(precision):
    # Sq = 10 > Sk = 4: query i sees keys j <= i - 6, so rows 0..5 see nothing.
    q, k, v = _qkv(2, 10, 4, 2, 1, 64, seed=80)
    fn = attention_exact if precision == "exact" else (lambda *a, **kw: attention(*a, precision=precision, **kw))
    o, lse = fn(q, k, v, causal=True, return_lse=True)
    assert torch.all(o[:, :6] == 0)
    assert torch.all(torch.isneginf(lse[:, :, :6]))
    assert torch.isfinite(o).all() and torch.isfinite(lse[:, :, 6:]).all()
    assert (o[:, 6:].abs().amax(dim=-1) > 0).all()
    # Row 6 sees exactly key 0: its output is v[:, 0] (up to quantization).
    ref = v[:, 0].float().repeat_interleave(2, dim=1)
    tol = {"exact": 0.01, "bf16": 0.01, "nvfp4": 0.3}.get(precision, 0.1)
    torch.testing.assert_close(o[:, 6].float(), ref, rtol=tol, atol=tol)


def test_causal_square_row_sees_prefix():
    q, k, v = _qkv(1, 50, 50, 2, 2, 64, seed=90, dtype=torch.float32)
    o = attention_exact(q, k, v, causal=True)
    for i in (0, 17, 49):
        oi = attention_exact(q[:, i:i + 1], k[:, :i + 1], v[:, :i + 1])
        torch.testing.assert_close(o[:, i:i + 1], oi, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(o, attention_exact(q, k, v), atol=1e-3)


@pytest.mark.parametrize("precision", PRECISIONS + ("exact",))
def test_row_blocking_does_not_change_results(precision, monkeypatch):
    q, k, v = _qkv(1, 130, 70, 2, 1, 64, seed=100)
    fn = attention_exact if precision == "exact" else (lambda *a, **kw: attention(*a, precision=precision, **kw))
    o, lse = fn(q, k, v, causal=True, return_lse=True)
    monkeypatch.setattr(ref_attn, "_BLOCK_ELEMS", 2 * 70 * 7)  # 7 rows a block
    o_b, lse_b = fn(q, k, v, causal=True, return_lse=True)
    torch.testing.assert_close(o_b, o, rtol=0, atol=0)
    torch.testing.assert_close(lse_b, lse, rtol=0, atol=0)


def test_fp16_and_fp32_inputs_keep_dtype():
    for dtype in (torch.float16, torch.float32):
        q, k, v = _qkv(1, 40, 40, 2, 2, 64, seed=110, dtype=dtype)
        for prec in PRECISIONS:
            o = attention(q, k, v, precision=prec)
            assert o.dtype == dtype and o.shape == q.shape
            assert _metrics(o, attention_exact(q, k, v))[1] <= BOUNDS[prec][1]


# --------------------------------------------------------------------------- errors

def test_errors():
    q, k, v = _qkv(1, 16, 16, 4, 2, 64, seed=120)
    with pytest.raises(ValueError, match="int8\\+fp8e4m3.*fp8e4m3.*bf16.*nvfp4"):
        attention(q, k, v, precision="fp4")
    with pytest.raises(ValueError, match="layout"):
        attention(q, k, v, layout="BSHD")
    with pytest.raises(ValueError, match="k head dim"):
        attention(q, k[..., :32], v)
    with pytest.raises(ValueError, match="v head dim"):
        attention(q, k, v[..., :32])
    with pytest.raises(ValueError, match="heads"):
        attention(q, k[:, :, :1].expand(1, 16, 3, 64), v[:, :, :1].expand(1, 16, 3, 64))
    with pytest.raises(ValueError, match="k batch"):
        attention(q, torch.cat([k, k]), torch.cat([v, v]))
    with pytest.raises(ValueError, match="v batch"):
        attention(q, k, torch.cat([v, v]))
    with pytest.raises(ValueError, match="q must be 4-D"):
        attention(q[0], k, v)
    with pytest.raises(ValueError, match="multiple of 16"):
        attention(q[..., :40], k[..., :40], v[..., :40], precision="nvfp4")
    with pytest.raises(TypeError):
        attention(q.float(), k, v)
