"""`python -m ac4k_kernel`: build info, then every op of this build on a Wan-shaped input
(B=1, 32760 tokens, 40 heads, head dim 128) against what a user would call instead.

Exit codes: 0 ran; 2 no compiled backend in this install; 3 no CUDA GPU (build info only).
"""
from __future__ import annotations

import sys

import torch

import ac4k_kernel
from ac4k_kernel import reference as ref
from ac4k_kernel._timing import copy_bandwidth_gbs, device_name, time_cuda

B, S, H, D = 1, 32760, 40, 128


def _print_info() -> dict:
    info = ac4k_kernel.get_info()
    print(f"ac4k_kernel {info['version']}  backend={info['backend']}  arch={info['arch']}  "
          f"torch={info['torch']} (CUDA {info['torch_cuda']})")
    print(f"ops in this build: {', '.join(info['ops']) or 'none'}")
    if info["extension_error"]:
        print(f"compiled backend missing: {info['extension_error']}")
    return info


def _row(name, shape, ours_ms, alt_name, alt_ms, metric, accuracy):
    return [name, shape, f"{ours_ms * 1e3:.1f}", alt_name, f"{alt_ms * 1e3:.1f}", f"{alt_ms / ours_ms:.2f}x",
            metric, accuracy]


def _quantize_rows(bw: float, ops: set):
    x = torch.randn(B, S, H, D, device="cuda", dtype=torch.bfloat16)
    cases = [("int8", "quantize_int8", {}, ref.quantize_int8, 1.0, "per token"),
             ("fp8e4m3", "quantize_fp8", {}, ref.quantize_fp8, 1.0, "per token"),
             ("int8", "quantize_int8", {"granularity": "per_block", "block_size": 64},
              lambda t: ref.quantize_int8(t, "per_block", 64), 1.0, "per 64-token block (Q/K)"),
             ("fp8e4m3", "quantize_fp8", {"granularity": "per_channel"},
              lambda t: ref.quantize_fp8(t, "per_channel"), 1.0, "per channel (V)"),
             ("nvfp4", "quantize_nvfp4", {}, ref.quantize_nvfp4, 0.5625, "16-blocks")]
    rows = []
    for precision, op, kw, ref_fn, out_b, what in cases:
        if op not in ops:
            continue
        ours = time_cuda(lambda: ac4k_kernel.quantize(x, precision=precision, **kw))
        eager = time_cuda(lambda: ref_fn(x))
        got, want = ac4k_kernel.quantize(x, precision=precision, **kw), ref_fn(x)
        mism = sum(int((a.reshape(-1).view(torch.uint8) != b.reshape(-1).view(torch.uint8)).sum())
                   for a, b in ((got.values, want.values), (got.scales, want.scales)))
        gbs = x.numel() * (2 + out_b) / ours / 1e6
        rows.append(_row(f"quantize {precision} {what}", "1x32760x40x128 bf16", ours, "eager torch", eager,
                         f"{gbs:.0f} GB/s = {100 * gbs / bw:.0f}% of copy",
                         "bit-exact" if mism == 0 else f"{mism} bytes differ"))
    return rows


def _attention_rows(ops: set):
    precisions = [(p, op) for p, op in (("int8+fp8e4m3", "mha_int8_x_fp8_fwd"), ("fp8e4m3", "mha_fp8_fwd"),
                                        ("bf16", "mha_bf16_fwd")) if op in ops]
    if not precisions:
        return []
    from torch.nn.attention import SDPBackend, sdpa_kernel
    q, k, v = (torch.randn(B, S, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))

    def sdpa():
        with sdpa_kernel([SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION]):
            return torch.nn.functional.scaled_dot_product_attention(qt, kt, vt)

    alt = time_cuda(sdpa, warmup=3, iters=10)
    r = sdpa().transpose(1, 2).double()
    rows = []
    for precision, _ in precisions:
        ours = time_cuda(lambda p=precision: ac4k_kernel.attention(q, k, v, precision=p), warmup=3, iters=10)
        o = ac4k_kernel.attention(q, k, v, precision=precision).double()
        cos = torch.nn.functional.cosine_similarity(o.flatten(), r.flatten(), dim=0).item()
        rel = ((o - r).abs().sum() / r.abs().sum()).item()
        tflops = 4 * B * H * S * S * D / ours / 1e9
        rows.append(_row(f"attention {precision} (whole call)", "1x32760x40x128 bf16", ours, "torch SDPA (cuDNN)", alt,
                         f"{tflops:.0f} TFLOPS", f"vs SDPA: cos {cos:.5f}, rel L1 {rel:.4f}"))
    return rows


def _linear_rows(ops: set):
    if "gemm_fp8" not in ops:
        return []
    M, K, N = S, 5120, 5120  # a Wan 14B projection over the 32760 tokens
    x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
    w = (torch.randn(N, K, device="cuda") * K ** -0.5).to(torch.bfloat16)
    b = torch.randn(N, device="cuda", dtype=torch.bfloat16)
    wq = ac4k_kernel.quantize_weight(w)
    ours = time_cuda(lambda: ac4k_kernel.linear(x, wq, b), warmup=3, iters=20)
    alt = time_cuda(lambda: torch.nn.functional.linear(x, w, b), warmup=3, iters=20)
    y, r = ac4k_kernel.linear(x, wq, b).float(), torch.nn.functional.linear(x, w, b).float()
    cos = torch.nn.functional.cosine_similarity(y.flatten(), r.flatten(), dim=0).item()
    rel = ((y - r).norm() / r.norm()).item()
    return [_row("linear fp8e4m3 (whole call)", f"{M}x{K} @ {N}x{K}^T bf16", ours, "torch F.linear (bf16)", alt,
                 f"{2 * M * N * K / ours / 1e9:.0f} TFLOPS", f"vs bf16: cos {cos:.5f}, rel L2 {rel:.4f}")]


def main() -> int:
    info = _print_info()
    if info["extension_error"]:
        print("Reinstall: AC4K_CUDA_ARCH=<arch> pip install --no-build-isolation --force-reinstall --no-deps .")
        return 2
    if not torch.cuda.is_available():
        print("No CUDA GPU is visible: ac4k_kernel needs a CUDA GPU to run; nothing was timed.")
        return 3
    print(f"device: {device_name()}")
    bw = copy_bandwidth_gbs()
    print(f"measured device-to-device copy bandwidth: {bw:.0f} GB/s (read + write)")
    rows = []
    ops = set(info["ops"])
    rows += _quantize_rows(bw, ops)
    rows += _attention_rows(ops)
    rows += _linear_rows(ops)
    head = ["op", "shape", "ours (us)", "alternative", "alt (us)", "speed-up", "throughput", "accuracy"]
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    for r in [head] + rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
