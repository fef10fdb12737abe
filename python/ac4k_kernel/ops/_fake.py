"""Fake (meta) implementations of the ac4k custom ops, so torch.compile traces them without running."""
from __future__ import annotations

import torch

from .._backend import available_ops


def _per_token_only(granularity: str) -> None:
    # Mirrors the kernel's check, so tracing fails as running would.
    if granularity != "per_token":
        raise NotImplementedError(f"ac4k::quantize_int8: granularity {granularity!r} is not in this build (per_token only)")


def _register() -> None:
    ops = available_ops()
    if "quantize_int8" in ops:
        @torch.library.register_fake("ac4k::quantize_int8")
        def _quantize_int8(x, granularity="per_token", block_size=0, layout="BNHD"):
            _per_token_only(granularity)
            return x.new_empty(x.shape, dtype=torch.int8), x.new_empty(x.shape[:-1], dtype=torch.float32)

        @torch.library.register_fake("ac4k::quantize_int8_out")
        def _quantize_int8_out(x, granularity, block_size, layout, out, scales):
            _per_token_only(granularity)
            return None


_register()
