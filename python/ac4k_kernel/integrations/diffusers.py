"""diffusers integration: route diffusers' attention dispatcher (`dispatch_attention_fn`, which the
Wan, HunyuanVideo and CogVideoX transformers call with [B, S, H, D] tensors) to
ac4k_kernel.attention where the kernels support the call; everything else goes to diffusers'
own dispatcher unchanged.

    from ac4k_kernel.integrations import diffusers as ac4k_diffusers
    ac4k_diffusers.enable()          # after importing the model classes; or: with ac4k_diffusers.enabled(): ...
    pipe(...)                        # or transformer(...)
    ac4k_diffusers.stats()           # {"routed": ..., "passed": ..., "reasons": {...}}
    ac4k_diffusers.disable()

diffusers registers backends under a fixed enum (AttentionBackendName), so a new backend cannot be
added by name; the dispatcher is wrapped instead, in every loaded diffusers module that imported it.
diffusers is optional: importing this module without it raises a clear ImportError.
"""
from __future__ import annotations

import contextlib
import importlib
import sys

from ..ops.attention import DEFAULT_PRECISION, _OP, attention
from ..patch import RouteCounts, pass_reason
from .._backend import available_ops

try:
    importlib.import_module("diffusers.models.attention_dispatch")
except ImportError as e:  # pragma: no cover - exercised only without diffusers
    raise ImportError("ac4k_kernel.integrations.diffusers needs diffusers (pip install diffusers)") from e

# Transformers whose attention goes through the dispatcher; imported so that enable() finds them.
_MODEL_MODULES = ("diffusers.models.transformers.transformer_wan",
                  "diffusers.models.transformers.transformer_hunyuan_video",
                  "diffusers.models.transformers.cogvideox_transformer_3d")

_state = {"original": None, "patched": [], "precision": DEFAULT_PRECISION}
_counts = RouteCounts()


def _dispatch(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False,
              attention_kwargs=None, *, backend=None, parallel_config=None):
    reason = pass_reason(query, key, value, attn_mask, dropout_p, is_causal, enable_gqa, layout="BNHD")
    if reason is None and (attention_kwargs or parallel_config is not None):
        reason = "attention_kwargs / parallel_config"
    if _counts.record(reason):
        return attention(query, key, value, layout="BNHD", precision=_state["precision"], causal=is_causal,
                         sm_scale=scale)
    return _state["original"](query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                              scale=scale, enable_gqa=enable_gqa, attention_kwargs=attention_kwargs,
                              backend=backend, parallel_config=parallel_config)


def enable(precision: str = DEFAULT_PRECISION) -> list:
    """Wrap dispatch_attention_fn in every loaded diffusers module; returns the module names."""
    if precision not in _OP:
        raise ValueError(f"enable: precision must be one of {sorted(_OP)}, got {precision!r}")
    if _OP[precision] not in available_ops():
        raise NotImplementedError(f"enable: this build has no {_OP[precision]} kernel for precision {precision!r}")
    for name in _MODEL_MODULES:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    dispatch_mod = sys.modules["diffusers.models.attention_dispatch"]
    if _state["original"] is None:
        _state["original"] = dispatch_mod.dispatch_attention_fn
    _state["precision"] = precision
    for name, mod in list(sys.modules.items()):
        if name.startswith("diffusers.") and getattr(mod, "dispatch_attention_fn", None) is _state["original"]:
            mod.dispatch_attention_fn = _dispatch
            _state["patched"].append(name)
    return list(_state["patched"])


def disable() -> None:
    """Put diffusers' dispatcher back everywhere it was wrapped."""
    for name in _state["patched"]:
        mod = sys.modules.get(name)
        if mod is not None and getattr(mod, "dispatch_attention_fn", None) is _dispatch:
            mod.dispatch_attention_fn = _state["original"]
    _state["patched"] = []
    _state["original"] = None


@contextlib.contextmanager
def enabled(precision: str = DEFAULT_PRECISION):
    enable(precision)
    try:
        yield
    finally:
        disable()


def stats(reset: bool = False) -> dict:
    return {"enabled": bool(_state["patched"]), **_counts.snapshot(reset)}
