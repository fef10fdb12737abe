"""Fake (meta) implementations of the ac4k custom ops, so torch.compile traces them without running.
Shapes mirror lib/cuda_bindings.cc."""
from __future__ import annotations

import torch

from .._backend import available_ops


def scale_shape_8bit(x, granularity: str, block_size: int, layout: str) -> tuple:
    if granularity == "per_token":
        return tuple(x.shape[:-1])
    if x.dim() == 2:
        S, D, lead = x.shape[0], x.shape[1], ()
    elif x.dim() == 4:
        B, S, H, D = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]) if layout == "BNHD" else \
            (x.shape[0], x.shape[2], x.shape[1], x.shape[3])
        lead = (B, H)
    else:
        raise ValueError(f"per_block / per_channel need x of shape [B,S,H,D], [B,H,S,D] or [T,C], got {tuple(x.shape)}")
    if granularity == "per_block":
        return lead + ((S + block_size - 1) // block_size,)
    return lead + (D,)


def nvfp4_scale_shape(x, scale_layout: str) -> tuple:
    k16 = x.shape[-1] // 16
    if scale_layout != "swizzled":
        return tuple(x.shape[:-1]) + (k16,)
    rows = 1
    for d in x.shape[:-1]:
        rows *= d
    return ((rows + 127) // 128 * 128, (k16 + 3) // 4 * 4)


def _lse(q, layout, return_lse):
    Sq, Hq = (q.shape[1], q.shape[2]) if layout == "BNHD" else (q.shape[2], q.shape[1])
    return q.new_empty((q.shape[0], Hq, Sq) if return_lse else (0,), dtype=torch.float32)


def _register() -> None:
    ops = available_ops()
    for name, qdtype in (("quantize_int8", torch.int8), ("quantize_fp8", torch.float8_e4m3fn)):
        if name not in ops:
            continue

        def fake(x, granularity="per_token", block_size=0, layout="BNHD", _q=qdtype):
            return (x.new_empty(x.shape, dtype=_q),
                    x.new_empty(scale_shape_8bit(x, granularity, block_size, layout), dtype=torch.float32))

        def fake_out(x, granularity, block_size, layout, out, scales):
            return None

        torch.library.register_fake(f"ac4k::{name}")(fake)
        torch.library.register_fake(f"ac4k::{name}_out")(fake_out)

    if "quantize_nvfp4" in ops:
        @torch.library.register_fake("ac4k::quantize_nvfp4")
        def _nvfp4(x, scale_layout="plain", global_scale=None):
            return (x.new_empty(tuple(x.shape[:-1]) + (x.shape[-1] // 2,), dtype=torch.uint8),
                    x.new_empty(nvfp4_scale_shape(x, scale_layout), dtype=torch.float8_e4m3fn),
                    x.new_empty((), dtype=torch.float32))

        @torch.library.register_fake("ac4k::quantize_nvfp4_out")
        def _nvfp4_out(x, scale_layout, global_scale, out, scales, global_scale_out):
            return None

    if "mha_int8_x_fp8_fwd" in ops:
        @torch.library.register_fake("ac4k::quantize_attention_kv")
        def _qkv(k, v, layout, grid_sizes=None, freqs=None, sin=None, k_precision="int8"):
            B, D = k.shape[0], k.shape[3]
            Sk, Hkv = (k.shape[1], k.shape[2]) if layout == "BNHD" else (k.shape[2], k.shape[1])
            f32 = dict(dtype=torch.float32)
            k_dtype = torch.int8 if k_precision == "int8" else torch.float8_e4m3fn
            return [k.new_empty(k.shape, dtype=k_dtype), k.new_empty((B, Hkv, (Sk + 63) // 64), **f32),
                    k.new_empty((B, Hkv, D), **f32),
                    v.new_empty((B, Hkv, D, (Sk + 127) // 128 * 128), dtype=torch.float8_e4m3fn),
                    v.new_empty((B, Hkv, D), **f32)]

        def _mha(q, k, k_scale, v, v_scale, layout, causal, sm_scale, return_lse, grid_sizes=None, freqs=None,
                 sin=None, q_scale=None, out_dtype=None):
            dt = out_dtype or (torch.bfloat16 if q_scale is not None else q.dtype)
            return q.new_empty(q.shape, dtype=dt), _lse(q, layout, return_lse)

        def _mha_out(q, k, k_scale, v, v_scale, layout, causal, sm_scale, return_lse, out, grid_sizes=None,
                     freqs=None, sin=None, q_scale=None):
            return _lse(q, layout, return_lse)

        if "quantize_attention_q" in ops:
            @torch.library.register_fake("ac4k::quantize_attention_q")
            def _qq(q, layout, grid_sizes=None, freqs=None, sin=None, q_precision="int8"):
                B = q.shape[0]
                Sq, Hq = (q.shape[1], q.shape[2]) if layout == "BNHD" else (q.shape[2], q.shape[1])
                q_dtype = torch.int8 if q_precision == "int8" else torch.float8_e4m3fn
                return [q.new_empty(q.shape, dtype=q_dtype), q.new_empty((B, Hq, (Sq + 15) // 16), dtype=torch.float32)]

        for name in ("mha_int8_x_fp8_fwd", "mha_fp8_fwd"):
            if name in ops:
                torch.library.register_fake(f"ac4k::{name}")(_mha)
                torch.library.register_fake(f"ac4k::{name}_out")(_mha_out)

    if "mha_bf16_fwd" in ops:
        @torch.library.register_fake("ac4k::mha_bf16_fwd")
        def _mha_bf16(q, k, v, layout, causal, sm_scale, return_lse):
            return q.new_empty(q.shape), _lse(q, layout, return_lse)

        @torch.library.register_fake("ac4k::mha_bf16_fwd_out")
        def _mha_bf16_out(q, k, v, layout, causal, sm_scale, return_lse, out):
            return _lse(q, layout, return_lse)

    if "mha_nvfp4_fwd" in ops:
        @torch.library.register_fake("ac4k::mha_nvfp4_fwd")
        def _mha_nvfp4(q, q_scales, q_gs, k, k_scales, k_gs, vt, vt_scales, v_gs, layout, causal, sm_scale,
                       return_lse, out_dtype=None):
            return (q.new_empty((*q.shape[:3], 2 * q.shape[3]), dtype=out_dtype or torch.bfloat16),
                    _lse(q, layout, return_lse))

        @torch.library.register_fake("ac4k::mha_nvfp4_fwd_out")
        def _mha_nvfp4_out(q, q_scales, q_gs, k, k_scales, k_gs, vt, vt_scales, v_gs, layout, causal, sm_scale,
                           return_lse, out):
            return _lse(q, layout, return_lse)

    if "gemm_fp8" in ops:
        @torch.library.register_fake("ac4k::gemm_fp8")
        def _gemm_fp8(a, a_scale, b, b_scale, bias=None, out_dtype=None):
            return a.new_empty((a.shape[0], b.shape[0]), dtype=out_dtype or torch.bfloat16)

        @torch.library.register_fake("ac4k::gemm_fp8_out")
        def _gemm_fp8_out(a, a_scale, b, b_scale, bias, out):
            return None

    if "gemm_nvfp4" in ops:
        @torch.library.register_fake("ac4k::gemm_nvfp4")
        def _gemm_nvfp4(a, a_scales, a_global_scale, b, b_scales, b_global_scale, bias=None, out_dtype=None):
            return a.new_empty((a.shape[0], b.shape[0]), dtype=out_dtype or torch.bfloat16)

        @torch.library.register_fake("ac4k::gemm_nvfp4_out")
        def _gemm_nvfp4_out(a, a_scales, a_global_scale, b, b_scales, b_global_scale, bias, out):
            return None

    if "rope3d" in ops:
        @torch.library.register_fake("ac4k::rope3d")
        def _rope(x, grid_sizes, freqs, sin=None):
            return x.new_empty(x.shape)

        @torch.library.register_fake("ac4k::rope3d_out")
        def _rope_out(x, grid_sizes, freqs, sin, out):
            return None


_register()
