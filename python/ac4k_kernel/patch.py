"""One line to use ac4k_kernel in existing model code: route the calls of
`torch.nn.functional.scaled_dot_product_attention` that the kernels support to `attention()`,
and pass every other call to the original SDPA unchanged.

    ac4k_kernel.patch_sdpa()              # or: with ac4k_kernel.sdpa_patched(): ...
    ...                                   # model code calling F.scaled_dot_product_attention
    ac4k_kernel.sdpa_patch_stats()        # {"routed": 80, "passed": 2, "reasons": {...}}
    ac4k_kernel.unpatch_sdpa()

Only code that looks the function up on `torch.nn.functional` at call time is affected (a module
that did `from torch.nn.functional import scaled_dot_product_attention` keeps the original).
The kernels are forward-only: calls that need gradients pass through.
"""
from __future__ import annotations

import contextlib
import threading
from collections import Counter
from typing import Optional

import torch
import torch.nn.functional as F

from .ops.attention import DEFAULT_PRECISION, HEAD_DIMS, _OP, attention
from ._backend import available_ops



class RouteCounts:
    """Calls routed to attention() and passed to the original, with the reasons for passing."""

    def __init__(self):
        self.routed, self.passed, self.reasons = 0, 0, Counter()

    def record(self, reason: Optional[str]) -> bool:
        """Counts one call; True when it is routed (reason is None)."""
        if reason is None:
            self.routed += 1
            return True
        self.passed += 1
        self.reasons[reason] += 1
        return False

    def snapshot(self, reset: bool = False) -> dict:
        out = {"routed": self.routed, "passed": self.passed, "reasons": dict(self.reasons)}
        if reset:
            self.__init__()
        return out


_lock = threading.Lock()
_state = {"original": None, "precision": None}
_counts = RouteCounts()


def pass_reason(q, k, v, attn_mask, dropout_p, is_causal, enable_gqa, layout="BHND") -> Optional[str]:
    """Why an attention call must go to the original implementation, or None when attention()
    computes it. layout: "BHND" (SDPA) or "BNHD" (flash-attn, diffusers' dispatcher)."""
    if attn_mask is not None:
        return "attn_mask"
    if dropout_p:
        return "dropout"
    if not all(isinstance(t, torch.Tensor) for t in (q, k, v)):
        return "not tensors"
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        return "not 4-D"
    if q.device.type != "cuda" or k.device != q.device or v.device != q.device:
        return "not CUDA"
    if q.dtype not in (torch.bfloat16, torch.float16) or k.dtype != q.dtype or v.dtype != q.dtype:
        return "dtype"
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        return "needs grad"
    D = q.shape[-1]
    if D not in HEAD_DIMS or k.shape[-1] != D or v.shape[-1] != D:
        return "head dim"
    s_ax, h_ax = (2, 1) if layout == "BHND" else (1, 2)
    if k.shape != v.shape or k.shape[0] != q.shape[0] or k.shape[s_ax] < 1:
        return "shapes"
    Hq, Hkv = q.shape[h_ax], k.shape[h_ax]
    if Hq != Hkv and not (enable_gqa and Hkv > 0 and Hq % Hkv == 0):
        return "heads"
    if is_causal and q.shape[s_ax] != k.shape[s_ax]:
        return "causal with Sq != Sk"  # SDPA aligns the mask top-left, attention() bottom-right
    if any(t.stride(-1) != 1 for t in (q, k, v)):
        return "last dim not contiguous"
    return None


def _sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    if _counts.record(pass_reason(query, key, value, attn_mask, dropout_p, is_causal, enable_gqa)):
        return attention(query, key, value, layout="BHND", precision=_state["precision"], causal=is_causal,
                         sm_scale=scale)
    kwargs = {"enable_gqa": enable_gqa} if enable_gqa else {}
    return _state["original"](query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                              scale=scale, **kwargs)


def patch_sdpa(precision: str = DEFAULT_PRECISION) -> None:
    """Replace torch.nn.functional.scaled_dot_product_attention by the routing wrapper."""
    if precision not in _OP:
        raise ValueError(f"patch_sdpa: precision must be one of {sorted(_OP)}, got {precision!r}")
    if _OP[precision] not in available_ops():
        raise NotImplementedError(f"patch_sdpa: this build has no {_OP[precision]} kernel for precision {precision!r}")
    with _lock:
        if _state["original"] is None:
            _state["original"] = F.scaled_dot_product_attention
        _state["precision"] = precision
        F.scaled_dot_product_attention = _sdpa


def unpatch_sdpa() -> None:
    """Restore the original SDPA (a no-op when not patched)."""
    with _lock:
        if _state["original"] is not None:
            F.scaled_dot_product_attention = _state["original"]
            _state["original"] = None


@contextlib.contextmanager
def sdpa_patched(precision: str = DEFAULT_PRECISION):
    """`with sdpa_patched(): model(x)` — patched inside, restored after (also on errors)."""
    was_patched = _state["original"] is not None
    old_precision = _state["precision"]
    patch_sdpa(precision)
    try:
        yield
    finally:
        if was_patched:
            _state["precision"] = old_precision
        else:
            unpatch_sdpa()


def sdpa_patch_stats(reset: bool = False) -> dict:
    """Routed and passed-through call counts since the last reset, with the reasons for passing."""
    return {"patched": _state["original"] is not None, "precision": _state["precision"], **_counts.snapshot(reset)}
