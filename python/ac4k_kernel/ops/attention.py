"""attention: Python → torch.ops.ac4k.quantize_attention_kv + mha_<precision>_fwd
(lib/cuda_bindings.cc) → launchers in lib/cuda/<arch>/quantize_attention_kv.cu and
mha_*.cu (which quantizes Q itself; with rope, quantize_attention_q.cu rotates and quantizes Q
first); precision "bf16" → torch.ops.ac4k.mha_bf16_fwd alone;
"nvfp4" → torch.ops.ac4k.quantize_nvfp4 (q, smoothed k, V^T) + mha_nvfp4_fwd (mha_nvfp4_fwd.cu).
The recipes are defined in ac4k_kernel.reference.attention."""
from __future__ import annotations

from typing import Optional

import torch

from .._backend import available_ops
from ..reference.quant import LAYOUTS
from ._common import require_cuda, require_op
from .rope import rope3d, rope_args

_OP = {"int8+fp8e4m3": "mha_int8_x_fp8_fwd", "fp8e4m3": "mha_fp8_fwd", "bf16": "mha_bf16_fwd",
       "nvfp4": "mha_nvfp4_fwd"}
# The compiled arch's fast path (fixed at build time).
DEFAULT_PRECISION = "int8+fp8e4m3"
HEAD_DIMS = (64, 128)


def _check(q, k, v, layout, out):
    if layout not in LAYOUTS:
        raise ValueError(f"attention: layout must be one of {LAYOUTS}, got {layout!r}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        require_cuda(t, "attention", name)
        if t.dim() != 4:
            raise ValueError(f"attention: {name} must be 4-D ([B, S, H, D] for BNHD, [B, H, S, D] for BHND), "
                             f"got shape {tuple(t.shape)}")
        if t.dtype not in (torch.bfloat16, torch.float16):
            raise TypeError(f"attention: {name} must be bfloat16 or float16, got {t.dtype}")
        if t.dtype != q.dtype:
            raise TypeError(f"attention: {name} has dtype {t.dtype} but q has {q.dtype}")
    s_ax, h_ax = (1, 2) if layout == "BNHD" else (2, 1)
    B, D, Hq, Hkv = q.shape[0], q.shape[3], q.shape[h_ax], k.shape[h_ax]
    if k.shape[0] != B or v.shape[0] != B:
        raise ValueError(f"attention: batch sizes differ: q {q.shape[0]}, k {k.shape[0]}, v {v.shape[0]}")
    if D not in HEAD_DIMS or k.shape[3] != D or v.shape[3] != D:
        raise ValueError(f"attention: head dim must be one of {HEAD_DIMS} and equal for q, k, v; got "
                         f"{q.shape[3]}, {k.shape[3]}, {v.shape[3]}")
    if k.shape != v.shape:
        raise ValueError(f"attention: k and v must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}")
    if Hkv == 0 or Hq % Hkv:
        raise ValueError(f"attention: q heads ({Hq}) must be a multiple of k/v heads ({Hkv})")
    if k.shape[s_ax] < 1:
        raise ValueError("attention: k and v need at least one token")
    if out is not None and (out.shape != q.shape or out.dtype != q.dtype or out.device != q.device):
        raise ValueError(f"attention: out must be a {q.dtype} tensor of q's shape {tuple(q.shape)} on {q.device}")
    return Hq, Hkv, D


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, layout: str = "BNHD",
              precision: str = DEFAULT_PRECISION, causal: bool = False, sm_scale: Optional[float] = None,
              return_lse: bool = False, out: Optional[torch.Tensor] = None, rope: Optional[tuple] = None):
    """Drop-in for scaled_dot_product_attention / flash_attn_func.

    q [B, Sq, Hq, D], k/v [B, Sk, Hkv, D] for layout "BNHD" ([B, H, S, D] for "BHND"), bf16 or fp16,
    last dim contiguous, D in (64, 128), Hq a multiple of Hkv (GQA / MQA). causal is bottom-right
    aligned (query i sees keys j <= i + Sk - Sq). Returns o in q's layout and dtype, and with
    return_lse also lse [B, Hq, Sq] float32 (natural log of the softmax denominator of sm_scale·q·k).
    precision selects the kernel; the quantization of q, k, v is part of the call: "int8+fp8e4m3"
    (QK^T in INT8, PV in FP8) or "fp8e4m3" (both in FP8 E4M3; reference.attention_fp8), with K
    smoothed by its token mean and Q per 16 tokens, K per 64 quantized in both; or "bf16": no
    quantization, q, k, v on 16-bit tensor cores (bf16, or fp16 for fp16 inputs) with FP32 softmax
    and accumulation (reference.attention_bf16); its inputs need 16-byte aligned rows (strides a
    multiple of 8 elements) and sm_scale >= 0; or "nvfp4": Q, smoothed K, P and V in NVFP4 (blocks of
    16, E4M3 scales; V and P along the tokens), the numerics of Blackwell's FP4 attention, run on
    Hopper by decoding exactly to FP16 tensor cores (reference.attention_nvfp4; sm_scale >= 0).

    rope = (grid_sizes, freqs): Wan's 3D RoPE applied to q and k first, as `rope3d(q, *rope)` and
    `rope3d(k, *rope)` would (same arguments and checks, rope3d's bits; token s of either is at its
    (f, h, w) position), bit for bit the output of attention on rope3d(q), rope3d(k). For the 8-bit
    precisions (without return_lse, whose correction term needs the rotated q) q is rotated and
    quantized in one pass (quantize_attention_q, sm90a), so a rotated q never goes through memory
    in bf16; k goes through rope3d, then the K / V pass (its mean needs every rotated token before
    any output: a fused pass rotates K twice and measured slower, docs/perf-notes.md).
    """
    require_op(_OP.get(precision, ""), "attention", precision, _OP)
    Hq, Hkv, D = _check(q, k, v, layout, out)
    scale = float(sm_scale) if sm_scale is not None else D ** -0.5
    qk_format = "fp8e4m3" if precision == "fp8e4m3" else "int8"  # Q's and K's format (8-bit precisions)
    q_in, q_kw = q, {}  # the kernel's q: as given, or (with rope) its INT8 / E4M3 bytes and q_scale
    if rope is not None:
        if not isinstance(rope, (tuple, list)) or len(rope) != 2:
            raise ValueError("attention: rope must be a pair (grid_sizes, freqs)")
        k = _rope(k, *rope, layout)
        if precision in ("int8+fp8e4m3", "fp8e4m3") and not return_lse and "quantize_attention_q" in available_ops():
            q_in, q_scale = torch.ops.ac4k.quantize_attention_q(q, layout, *rope_args(*rope, "attention"), qk_format)
            q_kw = {"q_scale": q_scale, "out_dtype": q.dtype}
        else:
            q = q_in = _rope(q, *rope, layout)
    if precision == "bf16":  # no quantization: q, k, v go to the kernel as they are (TMA loads)
        o, lse = _run("mha_bf16_fwd", (q, k, v, layout, causal, scale, return_lse), out)
        return (o, lse) if return_lse else o
    if precision == "nvfp4":
        o, lse, k_mean = _attention_nvfp4(q, k, v, layout, causal, scale, return_lse, out)
    else:  # both 8-bit precisions: K smoothed and quantized (INT8 or E4M3) with V in one pass, Q in the kernel
        k8, k_scale, k_mean, vt, v_scale = torch.ops.ac4k.quantize_attention_kv(k, v, layout, None, None, None,
                                                                                qk_format)
        o, lse = _run(_OP[precision], (q_in, k8, k_scale, vt, v_scale, layout, causal, scale, return_lse), out,
                      **q_kw)
    if not return_lse:
        return o
    # Smoothing moved every score of row i by sm_scale * q_i . k_mean (q as rotated); add it back.
    qh = (q if layout == "BHND" else q.transpose(1, 2)).float()
    km = k_mean.repeat_interleave(Hq // Hkv, dim=1)
    return o, lse + scale * torch.einsum("bhsd,bhd->bhs", qh, km)


def _run(name: str, args: tuple, out: Optional[torch.Tensor], out_dtype: Optional[torch.dtype] = None, **kw):
    """(o, lse) from torch.ops.ac4k.<name>_out(*args, out, **kw) into out, or <name>(*args, **kw) with
    out_dtype (for the ops whose output dtype is not q's)."""
    if out is not None:
        return out, getattr(torch.ops.ac4k, name + "_out")(*args, out, **kw)
    if out_dtype is not None:
        kw["out_dtype"] = out_dtype
    return getattr(torch.ops.ac4k, name)(*args, **kw)


def _attention_nvfp4(q, k, v, layout, causal, scale, return_lse, out):
    """reference.attention_nvfp4's quantization in torch + quantize_nvfp4, then mha_nvfp4_fwd: Q along
    D; K smoothed by its token mean (fp32, rounded to the inputs' dtype) along D; V transposed to
    [B, Hkv, D, s_pad] (zeros past Sk, s_pad a multiple of 128) along the tokens. Returns o, lse
    (of the smoothed scores) and k_mean [B, Hkv, D]."""
    s_ax = 1 if layout == "BNHD" else 2
    nv = torch.ops.ac4k.quantize_nvfp4
    # No fp32 copy of k: the mean and the difference promote on the fly (2-10% of the whole call).
    k_mean = k.mean(dim=s_ax, keepdim=True, dtype=torch.float32)
    qq = nv(q, "plain", None)
    kq = nv(torch.sub(k, k_mean).to(k.dtype), "plain", None)
    vh = v.transpose(1, 2) if layout == "BNHD" else v  # [B, Hkv, Sk, D]
    B, Hkv, Sk, D = vh.shape
    vt = v.new_empty(B, Hkv, D, -(-Sk // 128) * 128)
    vt[..., :Sk] = vh.transpose(-1, -2)
    vt[..., Sk:].zero_()
    vq = nv(vt, "plain", None)
    o, lse = _run("mha_nvfp4_fwd", (*qq, *kq, *vq, layout, causal, scale, return_lse), out, out_dtype=q.dtype)
    return o, lse, k_mean.squeeze(s_ax)


def _rope(x: torch.Tensor, grid_sizes, freqs, layout: str) -> torch.Tensor:
    """rope3d of q or k in `layout` (rope3d sees [B, S, H, D])."""
    if layout == "BNHD":
        return rope3d(x, grid_sizes, freqs)
    return rope3d(x.transpose(1, 2), grid_sizes, freqs).transpose(1, 2)
