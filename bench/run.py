"""One benchmark runner: each ac4k op against what a user would call instead, in one run.

    python bench/run.py [--only quantize,linear,linear_nvfp4] [--json results.json] [--iters 50] [--ours-only] [--impl bf16]

Prints a table (op, shape, impl, time, ratio to ours, TFLOPS or GB/s vs the measured copy
bandwidth) and writes the same figures as JSON. Timings: CUDA events after warm-up, median.
Inputs are larger than L2. Never used for pass/fail.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

import ac4k_kernel
from ac4k_kernel import reference as ref
from ac4k_kernel._timing import copy_bandwidth_gbs, device_name, time_cuda


def _compiled(fn):
    return torch.compile(fn, fullgraph=True, dynamic=False)


def _bench_quantizer(op: str, shape, kw: dict, ref_fn, out_bytes_per_elem: float, scale_bytes: int, iters: int):
    """One quantizer case: ac4k vs eager and compiled reference; GB/s over bytes read + written once."""
    torch._dynamo.reset()  # each case compiles its own reference (one code object, many cases)
    x = torch.randn(shape, device="cuda", dtype=torch.bfloat16)
    compiled_ref = _compiled(lambda t: tuple(v for v in ref_fn(t)[:3] if v is not None))
    nbytes = int(x.numel() * (2 + out_bytes_per_elem)) + scale_bytes
    impls = {
        "ac4k": lambda: ac4k_kernel.quantize(x, **kw),
        "torch eager (reference)": lambda: ref_fn(x),
        "torch.compile (reference)": lambda: compiled_ref(x),
    }
    if OURS_ONLY:  # comparing builds of ac4k (e.g. sm89 against sm90a): no anchors
        impls = {"ac4k": impls["ac4k"]}
    try:
        if not OURS_ONLY:
            compiled_ref(x)
    except Exception as e:  # an anchor that does not compile is reported, not fatal
        print(f"torch.compile of the reference failed for {op or kw}: {type(e).__name__}: {str(e)[:200]}")
        del impls["torch.compile (reference)"]
    q = ac4k_kernel.quantize(x, **kw)
    want = ref_fn(x)
    exact = all(torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))
                for a, b in zip((q.values, q.scales), (want.values, want.scales)))
    times = {name: time_cuda(fn, warmup=10, iters=iters) for name, fn in impls.items()}
    desc = " ".join(f"{k}={v}" for k, v in kw.items() if k not in ("precision", "global_scale"))
    rows = [{"op": op or f"quantize {kw['precision']} {desc}".strip(), "shape": "x".join(map(str, shape)) + " bf16",
             "impl": name, "ms": ms, "bytes": nbytes, "gbs": nbytes / ms / 1e6, "vs_ours": ms / times["ac4k"],
             "bitexact_vs_eager_ref": exact} for name, ms in times.items()]
    del x
    return rows


ATT = (1, 32760, 40, 128)  # Wan 14B attention: B, S, H, D (BNHD)
ATT_BHND = (1, 40, 32760, 128)
ACT = (32760, 5120)  # a linear layer's activation


def bench_quantize(iters: int):
    r = ref
    cases = [
        # per token (linear activations, and attention-shaped)
        (ATT, dict(precision="int8"), lambda t: r.quantize_int8(t), 1, ATT[0] * ATT[1] * ATT[2] * 4),
        (ACT, dict(precision="int8"), lambda t: r.quantize_int8(t), 1, ACT[0] * 4),
        (ACT, dict(precision="fp8e4m3"), lambda t: r.quantize_fp8(t), 1, ACT[0] * 4),
        # per block of tokens (attention Q / K), BNHD then BHND (the CTA order was tuned on BNHD)
        (ATT, dict(precision="int8", granularity="per_block", block_size=64), lambda t: r.quantize_int8(t, "per_block", 64),
         1, 40 * 512 * 4),
        (ATT, dict(precision="int8", granularity="per_block", block_size=128),
         lambda t: r.quantize_int8(t, "per_block", 128), 1, 40 * 256 * 4),
        (ATT_BHND, dict(precision="int8", granularity="per_block", block_size=64, layout="BHND"),
         lambda t: r.quantize_int8(t, "per_block", 64, "BHND"), 1, 40 * 512 * 4),
        # per channel over all tokens (attention V), both layouts: x is read twice by design
        (ATT, dict(precision="fp8e4m3", granularity="per_channel"), lambda t: r.quantize_fp8(t, "per_channel"), 1,
         40 * 128 * 4),
        (ATT_BHND, dict(precision="fp8e4m3", granularity="per_channel", layout="BHND"),
         lambda t: r.quantize_fp8(t, "per_channel", layout="BHND"), 1, 40 * 128 * 4),
        # NVFP4: own global scale (two passes over x), swizzled scales
        (ACT, dict(precision="nvfp4"), lambda t: r.quantize_nvfp4(t), 0.5 + 1 / 16, 4),
        (ACT, dict(precision="nvfp4", scale_layout="swizzled"), lambda t: r.quantize_nvfp4(t, "swizzled"),
         0.5 + 1 / 16, 4),
    ]
    rows = []
    for shape, kw, fn, ob, sb in cases:
        if QUANT_FILTER and not any(f"{k}={v}" in QUANT_FILTER.split("|") for k, v in kw.items()):
            continue
        rows += _bench_quantizer("", shape, kw, fn, ob, sb, iters)
    if QUANT_FILTER:
        return rows
    # NVFP4 with a given (calibrated) global scale: one pass over x.
    gs = torch.tensor([0.01], device="cuda")
    rows += _bench_quantizer("quantize nvfp4 given global_scale", ACT, dict(precision="nvfp4", global_scale=gs),
                             lambda t: r.quantize_nvfp4(t, "plain", gs), 0.5 + 1 / 16, 4, iters)
    return rows


def _sage():
    """SageAttention2's sm90 path when importable (built on the device in the bench call, never
    shipped here): the whole call, and its kernel fed by its own quantizers (default per_thread)."""
    try:
        from sageattention import sageattn_qk_int8_pv_fp8_cuda_sm90 as whole
        from sageattention import sm90_compile
        from sageattention.quant import per_channel_fp8
        from sageattention.triton.quant_per_thread import per_thread_int8
    except Exception as e:
        print(f"SageAttention2 not importable: {type(e).__name__}: {str(e)[:150]}")
        return None

    def kernel_only(q, k, v):  # NHD; the steps of whole() before its kernel, done once
        km = k.mean(dim=1, keepdim=True)
        q8, qs, k8, ks = per_thread_int8(q, k, km, tensor_layout="NHD", BLKQ=64, WARPQ=16, BLKK=128, WARPK=128)
        pad = (-k.size(1)) % 128
        if pad:
            v = torch.cat([v, v.new_zeros(v.size(0), pad, v.size(2), v.size(3))], dim=1)
        v8, vs, _ = per_channel_fp8(v, tensor_layout="NHD", smooth_v=False)
        o = torch.empty_like(q)
        scale = q.size(-1) ** -0.5
        return lambda: sm90_compile.qk_int8_sv_f8_accum_f32_fuse_v_scale_attn_inst_buf(
            q8, k8, v8, o, qs, ks, vs, 0, 0, 3, scale, 0)

    return whole, kernel_only


def bench_attention(iters: int):
    """Non-causal attention, B=1, H=40, BNHD bf16, against SDPA's flash and cuDNN backends (and
    SageAttention2 when importable). FLOPs = 4 B H Sq Sk D."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    sage = _sage()
    rows = []
    for Sq, Sk, D in [(4096, 4096, 128), (8192, 8192, 128), (16384, 16384, 128), (32760, 32760, 128),
                      (8192, 8192, 64), (32760, 512, 128)]:
        B, H = 1, 40
        q = torch.randn(B, Sq, H, D, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(B, Sk, H, D, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(B, Sk, H, D, device="cuda", dtype=torch.bfloat16)
        flops = 4 * B * H * Sq * Sk * D
        inputs = torch.ops.ac4k.quantize_attention_kv(k, v, "BNHD")
        k8, ks, _, vt, vs = inputs
        k8f, ksf = torch.ops.ac4k.quantize_attention_kv(k, v, "BNHD", None, None, None, "fp8e4m3")[:2]
        scale = D ** -0.5
        qt, kt, vt_ = (t.transpose(1, 2) for t in (q, k, v))

        def sdpa(backend):
            def f():
                with sdpa_kernel(backend):
                    return torch.nn.functional.scaled_dot_product_attention(qt, kt, vt_)
            return f

        impls = {
            "ac4k attention() whole call": lambda: ac4k_kernel.attention(q, k, v),
            # The kernel quantizes Q itself: "kernel only" includes Q's quantization, the K / V pass is apart.
            "ac4k kernel only": lambda: torch.ops.ac4k.mha_int8_x_fp8_fwd(q, k8, ks, vt, vs, "BNHD", False, scale,
                                                                          False),
            "ac4k K/V quantization only": lambda: torch.ops.ac4k.quantize_attention_kv(k, v, "BNHD"),
            "ac4k fp8e4m3 whole call": lambda: ac4k_kernel.attention(q, k, v, precision="fp8e4m3"),
            "ac4k fp8e4m3 kernel only": lambda: torch.ops.ac4k.mha_fp8_fwd(q, k8f, ksf, vt, vs, "BNHD", False, scale,
                                                                           False),
            # precision="bf16": mha_bf16_fwd, no quantization.
            **({"ac4k bf16 whole call": lambda: ac4k_kernel.attention(q, k, v, precision="bf16")} if HAS_BF16 else {}),
            "SDPA flash (bf16)": sdpa(SDPBackend.FLASH_ATTENTION),
            "SDPA cuDNN (bf16)": sdpa(SDPBackend.CUDNN_ATTENTION),
        }
        if "quantize_attention_q" in ac4k_kernel.get_info()["ops"]:  # Q quantized by its own pass (sm90a)
            q8, qs = torch.ops.ac4k.quantize_attention_q(q, "BNHD")
            impls["ac4k kernel only, q quantized before it"] = lambda: torch.ops.ac4k.mha_int8_x_fp8_fwd(
                q8, k8, ks, vt, vs, "BNHD", False, scale, False, q_scale=qs)
            impls["ac4k Q quantization only (quantize_attention_q)"] = lambda: torch.ops.ac4k.quantize_attention_q(
                q, "BNHD")
        if HAS_NVFP4:  # precision="nvfp4": the whole call quantizes q, smoothed k and V^T first
            impls["ac4k nvfp4 whole call"] = lambda: ac4k_kernel.attention(q, k, v, precision="nvfp4")
            nv = torch.ops.ac4k.quantize_nvfp4
            vtp = torch.zeros(B, H, D, -(-Sk // 128) * 128, device="cuda", dtype=torch.bfloat16)
            vtp[..., :Sk] = v.permute(0, 2, 3, 1)
            ops4 = (*nv(q, "plain", None), *nv(k, "plain", None), *nv(vtp, "plain", None))
            impls["ac4k nvfp4 kernel only"] = lambda: torch.ops.ac4k.mha_nvfp4_fwd(*ops4, "BNHD", False, scale, False,
                                                                                   torch.bfloat16)
        if OURS_ONLY:
            impls = {k: f for k, f in impls.items() if k.startswith("ac4k")}
        elif sage is not None:
            impls["Sage2 sm90 whole call"] = lambda: sage[0](q, k, v, tensor_layout="NHD", is_causal=False,
                                                             pv_accum_dtype="fp32+fp32")
            try:
                impls["Sage2 sm90 kernel only"] = sage[1](q, k, v)
            except Exception as e:
                print(f"Sage2 kernel-only setup at Sq={Sq} Sk={Sk} D={D}: {type(e).__name__}: {str(e)[:150]}")
        impls = {k: f for k, f in impls.items() if impl_selected(k)}
        if "ac4k attention() whole call" in impls:
            # The same call replayed from a CUDA graph: no host work between the kernels, so a gap
            # between this row and the eager one is the host's (Python, dispatch, launches).
            try:
                ac4k_kernel.attention(q, k, v)
                torch.cuda.synchronize()
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    ac4k_kernel.attention(q, k, v)
                impls["ac4k attention() whole call, CUDA graph"] = graph.replay
                t0 = time.perf_counter()
                for _ in range(20):
                    ac4k_kernel.attention(q, k, v)
                host_us = (time.perf_counter() - t0) / 20 * 1e6
                torch.cuda.synchronize()
                print(f"attention() at Sq={Sq} Sk={Sk} D={D}: host time per call {host_us:.0f} us (no sync)")
            except Exception as e:
                print(f"graph capture of attention() at Sq={Sq}: {type(e).__name__}: {str(e)[:150]}")
        times = {}
        for name, fn in impls.items():
            try:
                times[name] = time_cuda(fn, warmup=5, iters=iters)
            except Exception as e:  # a backend that refuses the shape is reported, not fatal
                print(f"{name} at Sq={Sq} Sk={Sk} D={D}: {type(e).__name__}: {str(e)[:150]}")
        base = times.get("ac4k attention() whole call") or times.get("ac4k bf16 whole call")
        for name, ms in times.items():
            op = "attention " + ("fp8e4m3" if "fp8e4m3" in name else "bf16" if "bf16" in name else
                                 "nvfp4" if "nvfp4" in name else "int8+fp8e4m3") \
                if name.startswith("ac4k") else "attention"
            row = {"op": op,
                   "shape": f"B1 H40 Sq{Sq} Sk{Sk} D{D}", "impl": name, "ms": ms, "vs_ours": ms / base if base else 0.0}
            if "quantization only" not in name:
                row["tflops"] = flops / ms / 1e9
            else:
                row["pct_of_kernel"] = 100 * ms / times.get("ac4k kernel only", float("nan"))
            rows.append(row)
        del q, k, v, inputs
        if HAS_NVFP4:
            del ops4, vtp
    return rows


def bench_accuracy(iters: int):
    """Accuracy against fp64 attention (B=1, H=4, S=8192, D=128, BNHD): randn q, k, v, and k with a
    large per-channel bias (k = randn + 5 c). Ours, SageAttention2 (when importable), SDPA cuDNN."""
    del iters
    sage = _sage()
    rows = []
    for k_bias in (0.0, 5.0):
        g = torch.Generator(device="cuda").manual_seed(1)
        B, S, H, D = 1, 8192, 4, 128
        q, k, v = (torch.randn(B, S, H, D, device="cuda", generator=g).to(torch.bfloat16) for _ in range(3))
        if k_bias:
            k = (k.float() + k_bias * torch.randn(D, device="cuda", generator=g)).to(torch.bfloat16)
        want = ref.attention_exact(q, k, v).double()
        outs = {"ac4k int8+fp8e4m3": ac4k_kernel.attention(q, k, v)}
        if "mha_fp8_fwd" in ac4k_kernel.get_info()["ops"]:
            outs["ac4k fp8e4m3"] = ac4k_kernel.attention(q, k, v, precision="fp8e4m3")
        if HAS_BF16:
            outs["ac4k bf16"] = ac4k_kernel.attention(q, k, v, precision="bf16")
        if HAS_NVFP4:
            outs["ac4k nvfp4"] = ac4k_kernel.attention(q, k, v, precision="nvfp4")
        with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.CUDNN_ATTENTION):
            outs["SDPA cuDNN (bf16)"] = torch.nn.functional.scaled_dot_product_attention(
                *(t.transpose(1, 2) for t in (q, k, v))).transpose(1, 2)
        if sage is not None and impl_selected("Sage2 sm90"):
            outs["Sage2 sm90"] = sage[0](q, k, v, tensor_layout="NHD", is_causal=False, pv_accum_dtype="fp32+fp32")
        for name, o in outs.items():
            if not impl_selected(name):
                continue
            o = o.double()
            rows.append({"op": "accuracy vs fp64", "shape": f"S8192 H4 D128 k_bias={k_bias:g}", "impl": name,
                         "cos": torch.nn.functional.cosine_similarity(o.flatten(), want.flatten(), dim=0).item(),
                         "rel_l1": ((o - want).abs().sum() / want.abs().sum()).item()})
    return rows


def _rope_eager_complex(x, grid, freqs):
    """Wan's formulation, written here: per sample, complex128 products of the (frame, height,
    width) frequency columns expanded over the grid, padding tokens appended unchanged."""
    B, S, H, D = x.shape
    c = D // 2
    parts = freqs.split([c - 2 * (c // 3), c // 3, c // 3], dim=1)
    outs = []
    for i, (f, h, w) in enumerate(grid.tolist()):
        n = f * h * w
        xc = torch.view_as_complex(x[i, :n].double().reshape(n, H, c, 2))
        m = torch.cat([parts[0][:f].view(f, 1, 1, -1).expand(f, h, w, -1),
                       parts[1][:h].view(1, h, 1, -1).expand(f, h, w, -1),
                       parts[2][:w].view(1, 1, w, -1).expand(f, h, w, -1)], dim=-1).reshape(n, 1, c)
        outs.append(torch.cat([torch.view_as_real(xc * m).flatten(2).to(x.dtype), x[i, n:]]))
    return torch.stack(outs)


def _rope_real_f32(x, cos, sin):
    """The same rotation in float32 real arithmetic with per-token cos / sin [S, D/2] (what
    torch.compile handles): one sample, the grid covering every token."""
    xf = x.float().unflatten(-1, (-1, 2))
    a, b = xf[..., 0], xf[..., 1]
    cos, sin = cos[None, :, None], sin[None, :, None]
    return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2).to(x.dtype)


def bench_rope(iters: int):
    """rope3d at Wan 14B's (1, 32760, 40, 128) bf16, grid (21, 30, 52): ours (Wan's complex128 freqs
    and CPU grid sizes as Wan passes them, out of place and in place; complex64 freqs with GPU grid
    sizes) against the eager complex formulation and torch.compile of a float32 real one. GB/s over
    x read once and written once. Then K's rotation fused into its quantization pass against rope3d
    first (t/t_ours against the fused row), and the whole attention(rope=...) call."""
    if "rope3d" not in ac4k_kernel.get_info()["ops"]:
        print("rope3d: this build has no rope3d kernel; skipped")
        return []
    x = torch.randn(ATT, device="cuda", dtype=torch.bfloat16)
    grid = torch.tensor([[21, 30, 52]])
    freqs = ref.rope3d_freqs(1024, ATT[3])
    freqs_cuda = freqs.cuda()
    c = ATT[3] // 2
    t = torch.arange(21 * 30 * 52, device="cuda")
    c0, c1 = c - 2 * (c // 3), c - (c // 3)
    mult = torch.cat([freqs_cuda[t // (30 * 52), :c0], freqs_cuda[(t // 52) % 30, c0:c1], freqs_cuda[t % 52, c1:]], -1)
    cos, sin = mult.real.float(), mult.imag.float()
    compiled = _compiled(_rope_real_f32)
    y = x.clone()
    grid_cuda, freqs_c64 = grid.cuda(), freqs_cuda.to(torch.complex64)
    impls = {
        "ac4k": lambda: ac4k_kernel.rope3d(x, grid, freqs_cuda),
        "ac4k in place": lambda: ac4k_kernel.rope3d(y, grid, freqs_cuda, out=y),
        "ac4k, complex64 freqs, GPU grid_sizes": lambda: ac4k_kernel.rope3d(x, grid_cuda, freqs_c64),
        "torch eager (complex128, Wan's formulation)": lambda: _rope_eager_complex(x, grid, freqs_cuda),
        "torch.compile (float32 real)": lambda: compiled(x, cos, sin),
    }
    nbytes = 2 * x.numel() * x.element_size()
    rows = []
    times = {name: time_cuda(fn, warmup=5, iters=iters) for name, fn in impls.items()}
    for name, ms in times.items():
        rows.append({"op": "rope3d", "shape": "x".join(map(str, ATT)) + " bf16 grid 21x30x52", "impl": name,
                     "ms": ms, "bytes": nbytes, "gbs": nbytes / ms / 1e6, "vs_ours": ms / times["ac4k"]})
    if "mha_int8_x_fp8_fwd" not in ac4k_kernel.get_info()["ops"]:
        return rows
    # The fused paths, each group's rows against its first row (t / t_first): Q rotated and quantized in
    # one pass against rope3d then the per-block quantizer (GB/s over each path's own bytes); K's rotation
    # in the K/V pass against rope3d first; the whole attention(rope=...) call; the kernel alone with q
    # quantized before it, rotated in it, or as it is.
    v = torch.randn_like(x)
    k8, ks, _, vt, vs = torch.ops.ac4k.quantize_attention_kv(x, v, "BNHD")
    scale = x.size(-1) ** -0.5
    n = x.numel()
    q_bytes = 2 * n + n + 4 * n // (16 * ATT[3])  # bf16 read, int8 + scales written
    two_pass_bytes = 4 * n + q_bytes               # + rope3d's write and re-read of the rotated q
    groups = {"Q rope + quantize": {}, "K rope + K/V pass": {}, "attention(rope=)": {}, "attention kernel": {}}
    if "quantize_attention_q" in ac4k_kernel.get_info()["ops"]:
        q8, qs = torch.ops.ac4k.quantize_attention_q(x, "BNHD", grid, freqs_cuda)
        groups["Q rope + quantize"] = {
            "quantize_attention_q (rope fused)": (lambda: torch.ops.ac4k.quantize_attention_q(x, "BNHD", grid,
                                                                                             freqs_cuda), q_bytes),
            "rope3d(q), then quantize_int8 per_block 16": (lambda: torch.ops.ac4k.quantize_int8(
                ac4k_kernel.rope3d(x, grid, freqs_cuda), "per_block", 16, "BNHD"), two_pass_bytes),
            "quantize_attention_q, no rope": (lambda: torch.ops.ac4k.quantize_attention_q(x, "BNHD"), q_bytes),
        }
        groups["attention kernel"]["attention kernel, q quantized before it"] = (
            lambda: torch.ops.ac4k.mha_int8_x_fp8_fwd(q8, k8, ks, vt, vs, "BNHD", False, scale, False,
                                                      q_scale=qs), None)
    groups["K rope + K/V pass"] = {
        "K/V quantization, K rope fused": (lambda: torch.ops.ac4k.quantize_attention_kv(x, v, "BNHD", grid,
                                                                                        freqs_cuda), None),
        "rope3d(k), then K/V quantization": (lambda: torch.ops.ac4k.quantize_attention_kv(
            ac4k_kernel.rope3d(x, grid, freqs_cuda), v, "BNHD"), None),
    }
    groups["attention(rope=)"] = {
        "attention(q, k, v, rope=...)": (lambda: ac4k_kernel.attention(x, x, v, rope=(grid, freqs_cuda)), None),
        "rope3d(q), rope3d(k), attention()": (lambda: ac4k_kernel.attention(
            ac4k_kernel.rope3d(x, grid, freqs_cuda), ac4k_kernel.rope3d(x, grid, freqs_cuda), v), None),
        "attention(q, k, v), no rope": (lambda: ac4k_kernel.attention(x, x, v), None),
    }
    groups["attention kernel"].update({
        "attention kernel, q quantized in it": (lambda: torch.ops.ac4k.mha_int8_x_fp8_fwd(
            x, k8, ks, vt, vs, "BNHD", False, scale, False), None),
        "attention kernel, q rotated in it": (lambda: torch.ops.ac4k.mha_int8_x_fp8_fwd(
            x, k8, ks, vt, vs, "BNHD", False, scale, False, grid, freqs_cuda), None),
    })
    # Three interleaved rounds a group, each row's median: the power-capped card drifts by several % over
    # a few seconds, which one row after the other would read as a difference between the rows.
    for group, impls in groups.items():
        runs = {}
        for _ in range(3):
            for name, (fn, nbytes) in impls.items():
                try:
                    runs.setdefault(name, []).append(time_cuda(fn, warmup=3, iters=iters if nbytes else max(5, iters // 5)))
                except Exception as e:  # a build without the fused paths (sm89: no Q rotation in its kernel)
                    print(f"{name}: {type(e).__name__}: {str(e)[:150]}")
        first = None
        for name, (fn, nbytes) in impls.items():
            if name not in runs:
                continue
            ms = statistics.median(runs[name])
            first = first or ms
            row = {"op": "rope3d fused", "shape": "x".join(map(str, ATT)) + f" bf16 grid 21x30x52, {group}",
                   "impl": name, "ms": ms, "vs_ours": ms / first}
            if nbytes:
                row.update(bytes=nbytes, gbs=nbytes / ms / 1e6)
            rows.append(row)
    return rows


def bench_linear(iters: int):
    """linear at Wan 14B's shapes (bf16 x [M, K], weight [N, K], bf16 bias): our gemm_fp8 kernel alone
    (x pre-quantized), our linear() whole call (with the per-token quantization of x), bf16
    F.linear (cuBLAS), torch._scaled_mm FP8 row-wise (per-token x, per-channel W; the same inputs as
    our kernel) with use_fast_accum False and True. TFLOPS = 2 M N K / time."""
    if "gemm_fp8" not in ac4k_kernel.get_info()["ops"]:
        print("linear: this build has no gemm_fp8 kernel; skipped")
        return []
    rows = []
    for M in (1024, 32760):
        for K, N in ((5120, 5120), (5120, 13824), (13824, 5120)):
            x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
            w = (torch.randn(N, K, device="cuda") * K ** -0.5).to(torch.bfloat16)
            bias = torch.randn(N, device="cuda", dtype=torch.bfloat16)
            wq = ac4k_kernel.quantize_weight(w)
            xq = ac4k_kernel.quantize(x, precision="fp8e4m3")
            a, sa, b, sb = xq.values, xq.scales, wq.values, wq.scales
            flops = 2 * M * N * K

            def scaled_mm(fast):
                return lambda: torch._scaled_mm(a, b.t(), scale_a=sa[:, None], scale_b=sb[None, :], bias=bias,
                                                out_dtype=torch.bfloat16, use_fast_accum=fast)

            impls = {
                "ac4k gemm_fp8 kernel only": lambda: torch.ops.ac4k.gemm_fp8(a, sa, b, sb, bias, torch.bfloat16),
                "ac4k linear() whole call": lambda: ac4k_kernel.linear(x, wq, bias),
                "torch bf16 F.linear": lambda: torch.nn.functional.linear(x, w, bias),
                "torch._scaled_mm rowwise": scaled_mm(False),
                "torch._scaled_mm rowwise fast_accum": scaled_mm(True),
            }
            if OURS_ONLY:
                impls = {k: f for k, f in impls.items() if k.startswith("ac4k")}
            times, outs = {}, {}
            for name, fn in impls.items():
                try:
                    outs[name] = fn()
                    times[name] = time_cuda(fn, warmup=5, iters=iters)
                except Exception as e:  # an anchor that refuses the shape is reported, not fatal
                    print(f"{name} at M={M} K={K} N={N}: {type(e).__name__}: {str(e)[:150]}")
            # Agreement with the same-input FP8 anchor (the kernel's own accuracy is in tests/gpu/test_linear.py).
            mine, anchor = outs.get("ac4k gemm_fp8 kernel only"), outs.get("torch._scaled_mm rowwise")
            if mine is not None and anchor is not None:
                rel = ((mine.float() - anchor.float()).norm() / anchor.float().norm()).item()
                print(f"linear M={M} K={K} N={N}: gemm_fp8 vs _scaled_mm rowwise rel L2 {rel:.2e}")
            base = times.get("ac4k gemm_fp8 kernel only")
            for name, ms in times.items():
                rows.append({"op": "linear fp8e4m3" if name.startswith("ac4k") else "linear",
                             "shape": f"M{M} K{K} N{N}", "impl": name, "ms": ms,
                             "vs_ours": ms / base if base else 0.0, "tflops": flops / ms / 1e9})
            del x, w, wq, xq, a, b, outs
    return rows


def bench_linear_nvfp4(iters: int):
    """linear(precision="nvfp4") at Wan 14B's shapes and M in {1, 16, 64, 1024, 32760} (small M is its
    point: 4x fewer weight bytes than bf16): our gemm_nvfp4 kernel alone (x pre-quantized), our linear()
    whole call (with quantize_nvfp4 of x, global scale on the GPU), bf16 F.linear and torch._scaled_mm
    FP8 row-wise. TFLOPS = 2 M N K / time."""
    if "gemm_nvfp4" not in ac4k_kernel.get_info()["ops"]:
        print("linear nvfp4: this build has no gemm_nvfp4 kernel; skipped")
        return []
    rows = []
    for M in (1, 16, 64, 1024, 32760):
        for K, N in ((5120, 5120), (5120, 13824), (13824, 5120)):
            x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
            w = (torch.randn(N, K, device="cuda") * K ** -0.5).to(torch.bfloat16)
            bias = torch.randn(N, device="cuda", dtype=torch.bfloat16)
            wq = ac4k_kernel.quantize_weight(w, precision="nvfp4")
            xq = ac4k_kernel.quantize(x, precision="nvfp4")
            args = (xq.values, xq.scales, xq.global_scale, wq.values, wq.scales, wq.global_scale, bias)
            w8 = ac4k_kernel.quantize_weight(w)
            x8 = ac4k_kernel.quantize(x, precision="fp8e4m3")
            # Small M reads little but the weight: cycle through copies of it (4 x >= 14.7 MB, more than
            # L2) so that each call reads its weight from HBM, as bf16's 52 MB weight is.
            n_copies = 4 if M <= 64 else 1
            wqs = [wq] + [ac4k_kernel.quantize_weight(w, precision="nvfp4") for _ in range(n_copies - 1)]
            turn = [0]

            def next_w():
                turn[0] = (turn[0] + 1) % n_copies
                return wqs[turn[0]]

            def kernel_only():
                wc = next_w()
                return torch.ops.ac4k.gemm_nvfp4(*args[:3], wc.values, wc.scales, wc.global_scale, bias, torch.bfloat16)

            impls = {
                "ac4k gemm_nvfp4 kernel only": kernel_only,
                "ac4k linear(nvfp4) whole call": lambda: ac4k_kernel.linear(x, next_w(), bias),
                "torch bf16 F.linear": lambda: torch.nn.functional.linear(x, w, bias),
                "torch._scaled_mm rowwise": lambda: torch._scaled_mm(
                    x8.values, w8.values.t(), scale_a=x8.scales[:, None], scale_b=w8.scales[None, :], bias=bias,
                    out_dtype=torch.bfloat16),
            }
            if OURS_ONLY:
                impls = {k: f for k, f in impls.items() if k.startswith("ac4k")}
            times, outs = {}, {}
            for name, fn in impls.items():
                try:
                    outs[name] = fn()
                    times[name] = time_cuda(fn, warmup=5, iters=iters)
                except Exception as e:
                    print(f"{name} at M={M} K={K} N={N}: {type(e).__name__}: {str(e)[:150]}")
            mine, exact = outs.get("ac4k gemm_nvfp4 kernel only"), outs.get("torch bf16 F.linear")
            if mine is not None and exact is not None:
                rel = ((mine.float() - exact.float()).norm() / exact.float().norm()).item()
                print(f"linear nvfp4 M={M} K={K} N={N}: vs bf16 F.linear rel L2 {rel:.3f} (NVFP4 quantization, ~0.13)")
            base = times.get("ac4k gemm_nvfp4 kernel only")
            for name, ms in times.items():
                rows.append({"op": "linear nvfp4" if name.startswith("ac4k") else "linear",
                             "shape": f"M{M} K{K} N{N}", "impl": name, "ms": ms,
                             "vs_ours": ms / base if base else 0.0, "tflops": 2 * M * N * K / ms / 1e9})
            del x, w, wq, wqs, xq, w8, x8, args, outs
    return rows


BENCHES = {"quantize": bench_quantize, "attention": bench_attention, "accuracy": bench_accuracy,
           "rope": bench_rope, "linear": bench_linear,
           "linear_nvfp4": bench_linear_nvfp4}
OURS_ONLY = False  # --ours-only: attention / linear rows of ac4k alone (comparing builds of ac4k)
QUANT_FILTER = ""  # --quant: quantize cases with one of these "key=value" arguments ("a|b")
IMPL_FILTER = ""  # --impl: attention / accuracy rows whose impl name contains this (or one of "a|b")


def impl_selected(name: str) -> bool:
    return any(f in name for f in IMPL_FILTER.split("|"))
HAS_BF16 = "mha_bf16_fwd" in ac4k_kernel.get_info()["ops"]
HAS_NVFP4 = "mha_nvfp4_fwd" in ac4k_kernel.get_info()["ops"]


def _print_row(r: dict):
    if "cos" in r:
        print(f"{r['op']:44} {r['shape']:22} {r['impl']:26} cos {r['cos']:.5f} rel L1 {r['rel_l1']:.4f}")
        return
    if "tflops" in r:
        thr = f"{r['tflops']:.0f} TFLOPS"
    elif "gbs" in r:
        thr = f"{r['gbs']:.0f} GB/s ({r['pct_copy_bw']:.0f}% copy)"
    elif "pct_of_kernel" in r:
        thr = f"{r['pct_of_kernel']:.0f}% of the kernel"
    else:
        thr = ""
    print(f"{r['op']:44} {r['shape']:22} {r['impl']:26} {r['ms'] * 1e3:9.1f} {r['vs_ours']:8.2f} {thr:>26}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="", help="comma-separated subset of: " + ", ".join(BENCHES))
    ap.add_argument("--json", default="", help="write the figures here as JSON")
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--ours-only", action="store_true", help="attention, linear, quantize: time ac4k alone, no anchors")
    ap.add_argument("--impl", default="", help="attention / accuracy: only the rows whose impl name contains this (or one of 'a|b') "
                    "(e.g. 'bf16': ac4k bf16 and the SDPA bf16 anchors)")
    ap.add_argument("--quant", default="", help="quantize: only the cases with one of these arguments, e.g. "
                    "'granularity=per_channel|layout=BHND'")
    args = ap.parse_args(argv)
    global OURS_ONLY, IMPL_FILTER, QUANT_FILTER
    QUANT_FILTER = args.quant
    OURS_ONLY = args.ours_only
    IMPL_FILTER = args.impl
    if not torch.cuda.is_available():
        print("bench needs a CUDA GPU", file=sys.stderr)
        return 3
    names = [n for n in args.only.split(",") if n] or list(BENCHES)
    info = ac4k_kernel.get_info()
    bw = copy_bandwidth_gbs()
    dev = device_name()
    print(f"device: {dev}; torch {torch.__version__}; ac4k {info['version']} {info['arch']} from {ac4k_kernel.__file__}")
    print(f"device-to-device copy: {bw:.0f} GB/s (read + write)")
    head = f"{'op':44} {'shape':22} {'impl':26} {'us':>9} {'t/t_ours':>8} {'throughput':>26}"
    print(head)
    print("-" * len(head))
    rows = []
    for n in names:  # each section's rows as soon as it is done (a cut-off run keeps them)
        t0 = time.time()
        section = BENCHES[n](args.iters)
        for r in section:
            if "gbs" in r:
                r["pct_copy_bw"] = 100 * r["gbs"] / bw
            _print_row(r)
        print(f"[{n}: {time.time() - t0:.0f} s]", flush=True)
        rows += section
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": dev, "torch": torch.__version__, "copy_gbs": bw, "info": info, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
