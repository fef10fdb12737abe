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


def _quantize_int8_rows(bw: float):
    x = torch.randn(B, S, H, D, device="cuda", dtype=torch.bfloat16)
    ours = time_cuda(lambda: ac4k_kernel.quantize(x, precision="int8"))
    eager = time_cuda(lambda: ref.quantize_int8(x))
    got, want = ac4k_kernel.quantize(x, precision="int8"), ref.quantize_int8(x)
    mism = int((got.values != want.values).sum()) + int((got.scales != want.scales).sum())
    nbytes = x.numel() * 3 + x.numel() // D * 4
    gbs = nbytes / ours / 1e6
    return [_row("quantize int8 per-token", "1x32760x40x128 bf16", ours, "eager torch", eager,
                 f"{gbs:.0f} GB/s = {100 * gbs / bw:.0f}% of copy", "bit-exact" if mism == 0 else f"{mism} mismatches")]


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
    if "quantize_int8" in ops:
        rows += _quantize_int8_rows(bw)
    head = ["op", "shape", "ours (us)", "alternative", "alt (us)", "speed-up", "throughput", "accuracy"]
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    for r in [head] + rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
