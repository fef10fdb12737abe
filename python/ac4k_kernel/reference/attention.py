"""Pure-torch definitions of `ac4k_kernel.attention`, one function per precision recipe.

Shapes: q [B, Sq, Hq, D], k and v [B, Sk, Hkv, D] for layout "BNHD" (flash-attn / Wan),
or [B, H, S, D] for "BHND" (SDPA). dtype bf16, fp16 or fp32 (all three the same).
Hq % Hkv == 0 (GQA: query head h reads kv head h // (Hq // Hkv)). sm_scale defaults to
1/sqrt(D). With causal=True query i sees keys j <= i + Sk - Sq (bottom-right aligned, as
flash-attn when Sq != Sk); a query that sees no key outputs 0 and has lse = -inf.
The output has q's dtype and layout; with return_lse=True the functions return (o, lse),
lse [B, Hq, Sq] float32 = natural-log logsumexp over the visible keys of sm_scale * q.k.

Everything here runs on CPU or CUDA tensors alike. Work is done in blocks of query rows so
long sequences fit in memory; the blocking does not change any result.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from .quant import (
    FP8_E4M3_MAX,
    LAYOUTS,
    NVFP4_BLOCK,
    _to_e4m3,
    dequantize,
    quantize_fp8,
    quantize_int8,
    quantize_nvfp4,
)

__all__ = [
    "ATTENTION_PRECISIONS",
    "attention",
    "attention_bf16",
    "attention_exact",
    "attention_fp8",
    "attention_int8_fp8",
    "attention_nvfp4",
]

ATTENTION_PRECISIONS = ("int8+fp8e4m3", "fp8e4m3", "bf16", "nvfp4")
LOG2E = 1.4426950408889634
# Keys per online-softmax step of the FP8-P recipes (the sm90a kernel steps 128 keys).
P_BLOCK = 128
# Score elements per query-row block (B * Hq * rows * Sk); 4M fp64 values = 32 MiB.
_BLOCK_ELEMS = 1 << 22
_FLOAT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


# --------------------------------------------------------------------------- shared plumbing

class _Prep:
    """Checked inputs viewed as [B, H, S, D] (no copies)."""

    def __init__(self, q, k, v, layout, sm_scale):
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        for name, t in (("q", q), ("k", k), ("v", v)):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
            if t.dim() != 4:
                raise ValueError(f"{name} must be 4-D ({'[B,S,H,D]' if layout == 'BNHD' else '[B,H,S,D]'}), "
                                 f"got shape {tuple(t.shape)}")
            if t.dtype not in _FLOAT_DTYPES:
                raise TypeError(f"{name} must be bfloat16, float16 or float32, got {t.dtype}")
        if k.dtype != q.dtype or v.dtype != q.dtype:
            raise TypeError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
        if k.device != q.device or v.device != q.device:
            raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
        qh, kh, vh = (t.transpose(1, 2) if layout == "BNHD" else t for t in (q, k, v))
        B, Hq, Sq, D = qh.shape
        _, Hkv, Sk, Dk = kh.shape
        if kh.shape[0] != B:
            raise ValueError(f"k batch {kh.shape[0]} != q batch {B}")
        if vh.shape[0] != B:
            raise ValueError(f"v batch {vh.shape[0]} != q batch {B}")
        if Dk != D:
            raise ValueError(f"k head dim {Dk} != q head dim {D}")
        if vh.shape[3] != D:
            raise ValueError(f"v head dim {vh.shape[3]} != q head dim {D}")
        if vh.shape != kh.shape:
            raise ValueError(f"v shape {tuple(v.shape)} must equal k shape {tuple(k.shape)}")
        if Hkv == 0 or Hq % Hkv:
            raise ValueError(f"q heads ({Hq}) must be a multiple of k/v heads ({Hkv})")
        if Sk == 0:
            raise ValueError("k and v need at least one token")
        self.q, self.k, self.v = qh, kh, vh
        self.B, self.Hq, self.Hkv, self.Sq, self.Sk, self.D = B, Hq, Hkv, Sq, Sk, D
        self.group = Hq // Hkv
        self.layout = layout
        self.dtype = q.dtype
        self.device = q.device
        self.sm_scale = 1.0 / math.sqrt(D) if sm_scale is None else float(sm_scale)

    def kv_heads(self, t: torch.Tensor) -> torch.Tensor:
        """[B, Hkv, ...] -> [B, Hq, ...]: query head h reads kv head h // group."""
        return t if self.group == 1 else t.repeat_interleave(self.group, dim=1)

    def finish(self, o: torch.Tensor, lse: torch.Tensor, return_lse: bool):
        o = o.to(self.dtype)
        if self.layout == "BNHD":
            o = o.transpose(1, 2)
        o = o.contiguous()
        return (o, lse.float()) if return_lse else o


def _run_blocks(p: _Prep, causal: bool, acc_dtype: torch.dtype,
                body: Callable[[int, int, Optional[torch.Tensor]], tuple]):
    """Call body(i0, i1, visible) over blocks of query rows; visible is [rows, Sk] bool or None."""
    o = torch.zeros(p.B, p.Hq, p.Sq, p.D, dtype=acc_dtype, device=p.device)
    lse = torch.empty(p.B, p.Hq, p.Sq, dtype=acc_dtype, device=p.device)
    rows = max(1, _BLOCK_ELEMS // max(1, p.B * p.Hq * p.Sk))
    for i0 in range(0, p.Sq, rows):
        i1 = min(p.Sq, i0 + rows)
        vis = None
        if causal:
            i = torch.arange(i0, i1, device=p.device).unsqueeze(1)
            j = torch.arange(p.Sk, device=p.device).unsqueeze(0)
            vis = j <= i + (p.Sk - p.Sq)
        ob, lb = body(i0, i1, vis)
        o[:, :, i0:i1] = ob
        lse[:, :, i0:i1] = lb
    return o, lse


def _masked_max(s: torch.Tensor, vis: Optional[torch.Tensor]):
    """(s with hidden keys at -inf, row max with fully hidden rows at 0 so they give p = 0, not NaN)."""
    if vis is not None:
        s = s.masked_fill(~vis, float("-inf"))
    m = s.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isneginf(m), torch.zeros_like(m), m)
    return s, m


def _normalize(acc: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    """acc / l, with 0 for rows that saw no key (l == 0)."""
    return torch.where(l > 0, acc / torch.where(l > 0, l, torch.ones_like(l)), torch.zeros_like(acc))


def _plain_softmax(p: _Prep, causal: bool, dtype: torch.dtype, p_for_pv: Callable[[torch.Tensor], torch.Tensor]):
    """Unquantized attention in `dtype`: S = (q . k^T) * sm_scale, p = exp(S - m), l from the
    unrounded p, o = p_for_pv(p) @ v / l, lse = m + log(l)."""
    qd = p.q.to(dtype)
    kd = p.kv_heads(p.k.to(dtype))
    vd = p.kv_heads(p.v.to(dtype))

    def body(i0, i1, vis):
        s = (qd[:, :, i0:i1] @ kd.transpose(-1, -2)) * p.sm_scale
        s, m = _masked_max(s, vis)
        e = torch.exp(s - m)
        l = e.sum(dim=-1, keepdim=True)
        return _normalize(p_for_pv(e) @ vd, l), (m + torch.log(l)).squeeze(-1)

    return _run_blocks(p, causal, dtype, body)


def _smooth_k(p: _Prep):
    """SageAttention's K smoothing: (k - mean over tokens, per (b, kv head, channel)) in fp32, and
    the per-row lse correction sm_scale * q . k_mean [B, Hq, Sq, 1] fp32.

    Subtracting k_mean shifts every score of a query row by the same q . k_mean, which softmax
    ignores, while it shrinks the range that K's quantization must cover."""
    kf = p.k.float()
    k_mean = kf.mean(dim=2, keepdim=True)  # [B, Hkv, 1, D]
    k_s = kf - k_mean
    corr = (p.q.double() @ p.kv_heads(k_mean).double().transpose(-1, -2)) * p.sm_scale
    return k_s, corr.float()


def _per_token(scales: torch.Tensor, block: int, n: int) -> torch.Tensor:
    """Per-block scales [B, H, nblk] -> per-token [B, H, n]."""
    return scales.repeat_interleave(block, dim=-1)[..., :n]


def _running_max(s: torch.Tensor, m: torch.Tensor):
    """Online softmax over blocks of P_BLOCK keys, as the kernels run it: block n's P is taken
    against the running max m_n (max over blocks 0..n) and quantized, then weighted by
    w = 2^((m_n - m) log2 e) <= 1 into the final sum (l is unchanged by this, exactly). From the
    masked scores s [..., Sk] and the row max m: (m_n per key, 0 where nothing is seen yet; w)."""
    Sk = s.shape[-1]
    nb = -(-Sk // P_BLOCK)
    sp = torch.nn.functional.pad(s, (0, nb * P_BLOCK - Sk), value=float("-inf"))
    run = sp.reshape(*s.shape[:-1], nb, P_BLOCK).amax(dim=-1).cummax(dim=-1).values
    run = run.repeat_interleave(P_BLOCK, dim=-1)[..., :Sk]  # running max per key
    seen = ~torch.isneginf(run)
    m_n = torch.where(seen, run, torch.zeros_like(run))
    w = torch.where(seen, torch.exp2((m_n - m) * LOG2E), torch.zeros_like(run))
    return m_n, w


def _fp8_p_v(p: _Prep, causal: bool, scores: Callable[[int, int], torch.Tensor],
             corr: torch.Tensor):
    """Steps 4-6 shared by the int8+fp8e4m3 and fp8e4m3 recipes, from fp32 scores S [B,Hq,rows,Sk]."""
    vq = quantize_fp8(p.v, "per_channel", layout="BHND")  # scales [B, Hkv, D]
    v8 = p.kv_heads(vq.values.double())  # e4m3 values are exact in fp64
    v_scale = p.kv_heads(vq.scales).unsqueeze(2)  # [B, Hq, 1, D]

    def body(i0, i1, vis):
        s, m = _masked_max(scores(i0, i1), vis)
        m_n, w = _running_max(s, m)
        pr = torch.exp2((s - m_n) * LOG2E) * FP8_E4M3_MAX  # [0, 448]; hidden keys -> 0
        p8 = _to_e4m3(pr).double() * w.double()
        l = p8.sum(dim=-1, keepdim=True).float()
        # e4m3 x e4m3 products and their sum are exact in fp64 (up to 2^17 keys): one rounding, to fp32.
        acc = (p8 @ v8).float() * v_scale
        o = _normalize(acc, l)
        lse = m + torch.log(l / FP8_E4M3_MAX) + corr[:, :, i0:i1]
        return o, lse.squeeze(-1)

    return _run_blocks(p, causal, torch.float32, body)


def _quantized_qk(p: _Prep, causal: bool, quantize: Callable, q_block: int, k_block: int):
    """Steps 1-3 of the 8-bit recipes (K smoothed, Q and K quantized per block of tokens by
    `quantize`, scores dequantized in fp32 from the exact dot), then steps 4-6 (_fp8_p_v)."""
    k_s, corr = _smooth_k(p)
    qq = quantize(p.q, "per_block", q_block, "BHND")
    kq = quantize(k_s, "per_block", k_block, "BHND")
    qv = qq.values.double()
    kv = p.kv_heads(kq.values.double()).transpose(-1, -2)
    qs = _per_token(qq.scales, q_block, p.Sq).unsqueeze(-1)  # [B, Hq, Sq, 1]
    ks = p.kv_heads(_per_token(kq.scales, k_block, p.Sk)).unsqueeze(-2)  # [B, Hq, 1, Sk]

    def scores(i0, i1):
        dot = (qv[:, :, i0:i1] @ kv).float()  # int8: |dot| <= 127^2 * D; e4m3: summed in fp64
        return dot * qs[:, :, i0:i1] * ks * p.sm_scale

    return _fp8_p_v(p, causal, scores, corr)


# --------------------------------------------------------------------------- recipes

def attention_exact(q, k, v, *, layout: str = "BNHD", causal: bool = False,
                    sm_scale: Optional[float] = None, return_lse: bool = False):
    """Unquantized attention in float64: the gold reference for accuracy tests.

        S   = sm_scale * q . k^T                    (float64)
        o_i = sum_j softmax_j(S_i)[visible] * v_j   (float64), cast to q's dtype
        lse = log sum_{j visible} exp(S_ij)         (float32)
    """
    p = _Prep(q, k, v, layout, sm_scale)
    o, lse = _plain_softmax(p, causal, torch.float64, lambda e: e)
    return p.finish(o, lse, return_lse)


def attention_bf16(q, k, v, *, layout: str = "BNHD", causal: bool = False,
                   sm_scale: Optional[float] = None, return_lse: bool = False):
    """Unquantized attention as a tensor-core kernel computes it (precision "bf16").

        S   = (q . k^T in fp32) * sm_scale                       (fp32)
        m_i = max_{j visible} S_ij;  p_ij = exp(S_ij - m_i)      (fp32, hidden keys 0)
        l_i = sum_j p_ij                                          (fp32, from the unrounded p)
        o_i = (sum_j float(dtype(p_ij)) * v_j in fp32) / l_i      (P cast to the input dtype
                                                                   before P@V, as the MMA reads it)
        lse = m_i + log(l_i)
    A real kernel uses an online max, so its P rounding differs slightly from this one.
    """
    p = _Prep(q, k, v, layout, sm_scale)
    o, lse = _plain_softmax(p, causal, torch.float32, lambda e: e.to(p.dtype).float())
    return p.finish(o, lse, return_lse)


def attention_int8_fp8(q, k, v, *, layout: str = "BNHD", causal: bool = False,
                       sm_scale: Optional[float] = None, return_lse: bool = False,
                       q_block: int = 16, k_block: int = 64):
    """The SageAttention2 recipe (precision "int8+fp8e4m3"): Q.K in INT8, P.V in FP8.

    1. k_mean[b,h,:] = mean over tokens of k (fp32); k_s = k.float() - k_mean.
    2. q_i8 = quantize_int8(q, "per_block", q_block); k_i8 = quantize_int8(k_s, "per_block", k_block)
       (scales [B, H, nblk], one per block of tokens of one head).
    3. S_ij = float32(q_i8_i . k_i8_j, an exact integer dot) * q_scale[blk(i)] * k_scale[blk(j)]
       * sm_scale, evaluated left to right in fp32.
    4. Online softmax over blocks of 128 keys: m_i = max_{j visible} S_ij, and m_in the running
       max over key blocks 0..n (the block of key j and those before it). p_ij = exp2((S_ij -
       m_in) * log2(e)) * 448 in [0, 448] (fp32, hidden keys 0); P8 = e4m3_rn_satfinite(p);
       w_ij = exp2((m_in - m_i) * log2(e)); l_i = sum_j float(P8_ij) w_ij (the quantized p: the
       kernel sums the same E4M3 values on the tensor cores, so numerator and denominator agree).
    5. v8, v_scale = quantize_fp8(v, "per_channel"): v_scale [B, Hkv, D].
    6. o_id = float32(sum_j float(P8_ij) w_ij * float(v8_jd)) * v_scale[d] / l_i, cast to q's
       dtype. The sum is taken in fp64 and rounded once to fp32.
    lse_i = m_i + log(l_i / 448) + sm_scale * q_i . k_mean (q unquantized, fp64 then fp32): the
    lse of the dequantized scores of the original (unsmoothed) logits.

    The CUDA kernel computes the same P8 (its exp2 is the hardware approximation) and sums P.V
    per block in the FP8 tensor-core accumulator before promoting it to FP32; it must match this
    reference to a relative L1 error (sum|o - ref| / sum|ref|) <= 0.005.
    """
    p = _Prep(q, k, v, layout, sm_scale)
    o, lse = _quantized_qk(p, causal, quantize_int8, q_block, k_block)
    return p.finish(o, lse, return_lse)


def attention_fp8(q, k, v, *, layout: str = "BNHD", causal: bool = False,
                  sm_scale: Optional[float] = None, return_lse: bool = False,
                  q_block: int = 16, k_block: int = 64):
    """Precision "fp8e4m3": Q, K, P, V in FP8 E4M3 (the blocks of the INT8 recipe: Q per 16 tokens,
    K per 64, as the sm90a kernel mha_fp8_fwd quantizes them).

    As `attention_int8_fp8`, except step 2-3: q8 = quantize_fp8(q, "per_block", q_block) and
    k8 = quantize_fp8(k_s, "per_block", k_block) (scale = amax / 448), and
        S_ij = float32(sum_d float(q8_id) * float(k8_jd)) * q_scale[blk(i)] * k_scale[blk(j)] * sm_scale
    where the dot is exact (e4m3 products summed in fp64) and rounded once to fp32.
    Steps 4-6 (P and V in FP8, per-channel V scale) and the lse are those of `attention_int8_fp8`.
    The CUDA kernel's FP8 tensor cores add the Q.K products at reduced precision (about 22 bits)
    instead of exactly; it must match this reference to a relative L1 error <= 0.005.
    """
    p = _Prep(q, k, v, layout, sm_scale)
    o, lse = _quantized_qk(p, causal, quantize_fp8, q_block, k_block)
    return p.finish(o, lse, return_lse)


def attention_nvfp4(q, k, v, *, layout: str = "BNHD", causal: bool = False,
                    sm_scale: Optional[float] = None, return_lse: bool = False):
    """Precision "nvfp4": Q, K, P, V in NVFP4 (E2M1 values, E4M3 scales per 16, FP32 global scale).

    1. k_s = k - k_mean as in `attention_int8_fp8`, rounded to the inputs' dtype (quantize_nvfp4
       takes 16-bit input: the op smooths K in fp32 and quantizes the rounded result).
    2. Q and k_s are quantized along D with `quantize_nvfp4` (each with its own global scale
       over the whole tensor) and dequantized exactly: qd, kd (fp32). D must be a multiple of 16.
    3. S_ij = float32(qd_i . kd_j) * sm_scale (the dot taken in fp64, rounded once to fp32).
    4. m_i = max_{j visible} S_ij; l_i = sum_j exp(S_ij - m_i) (fp32, unquantized p, hidden keys 0).
    5. Online softmax over blocks of 128 keys as in `attention_int8_fp8`: p_ij = exp2((S_ij - m_in)
       * log2(e)) in [0, 1] against the running max m_in; P, zero-padded to a multiple of 16 keys,
       is quantized along the key dim with quantize_nvfp4(p, global_scale=1/448) (fixed, so the
       block scales of a row max of 1 sit near the top of E4M3), dequantized, and weighted by
       w_ij = exp2((m_in - m_i) * log2(e)): pd. (Against the final max instead, early blocks
       quantize differently: 2-6% rel L1 apart, the size of the FP4 noise itself.)
    6. V is transposed to [B, Hkv, D, Sk], zero-padded to a multiple of 16 tokens and quantized
       along the tokens with quantize_nvfp4 (its own global scale), dequantized: vd.
    7. o_i = float32(pd_i . vd) / l_i (the sum taken in fp64, rounded once), cast to q's dtype.
    lse_i = m_i + log(l_i) + sm_scale * q_i . k_mean.
    On sm90a the kernel decodes the FP4 data exactly and feeds it to FP16 tensor cores; its P
    rounding (in FP16 steps) differs from e2m1_encode in rare near-tie cases.
    """
    p = _Prep(q, k, v, layout, sm_scale)
    if p.D % NVFP4_BLOCK:
        raise ValueError(f"nvfp4 attention needs head dim D to be a multiple of 16, got {p.D}")
    k_s, corr = _smooth_k(p)
    if p.dtype != torch.float32:
        k_s = k_s.to(p.dtype)
    qd = dequantize(quantize_nvfp4(p.q)).double()
    kd = p.kv_heads(dequantize(quantize_nvfp4(k_s)).double()).transpose(-1, -2)
    sk_pad = -(-p.Sk // NVFP4_BLOCK) * NVFP4_BLOCK
    vt = torch.nn.functional.pad(p.v.float().transpose(-1, -2), (0, sk_pad - p.Sk))
    vd = p.kv_heads(dequantize(quantize_nvfp4(vt)).double()).transpose(-1, -2)  # [B, Hq, Sk_pad, D]
    p_gs = torch.tensor(1.0 / FP8_E4M3_MAX, dtype=torch.float32, device=p.device)

    def body(i0, i1, vis):
        s = (qd[:, :, i0:i1] @ kd).float() * p.sm_scale
        s, m = _masked_max(s, vis)
        l = torch.exp(s - m).sum(dim=-1, keepdim=True)
        m_n, w = _running_max(s, m)
        pr = torch.nn.functional.pad(torch.exp2((s - m_n) * LOG2E), (0, sk_pad - p.Sk))
        pd = dequantize(quantize_nvfp4(pr, global_scale=p_gs)).double()
        pd = pd[..., :p.Sk] * w.double()
        o = _normalize((pd @ vd[:, :, :p.Sk]).float(), l)
        lse = m + torch.log(l) + corr[:, :, i0:i1]
        return o, lse.squeeze(-1)

    o, lse = _run_blocks(p, causal, torch.float32, body)
    return p.finish(o, lse, return_lse)


_RECIPES = {
    "int8+fp8e4m3": attention_int8_fp8,
    "fp8e4m3": attention_fp8,
    "bf16": attention_bf16,
    "nvfp4": attention_nvfp4,
}


def attention(q, k, v, *, layout: str = "BNHD", precision: str = "int8+fp8e4m3",
              causal: bool = False, sm_scale: Optional[float] = None, return_lse: bool = False):
    """Reference of `ac4k_kernel.attention`: the recipe named by `precision`
    ("int8+fp8e4m3" -> attention_int8_fp8, "fp8e4m3" -> attention_fp8, "bf16" -> attention_bf16,
    "nvfp4" -> attention_nvfp4). Returns o, or (o, lse) with return_lse=True."""
    fn = _RECIPES.get(precision) if isinstance(precision, str) else None
    if fn is None:
        raise ValueError(f"precision must be one of {ATTENTION_PRECISIONS}, got {precision!r}")
    return fn(q, k, v, layout=layout, causal=causal, sm_scale=sm_scale, return_lse=return_lse)
