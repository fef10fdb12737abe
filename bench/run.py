"""One benchmark runner: each ac4k op against what a user would call instead, in one run.

    python bench/run.py [--only quantize_int8] [--json results.json] [--iters 50]

Prints a table (op, shape, impl, time, ratio to ours, TFLOPS or GB/s vs the measured copy
bandwidth) and writes the same figures as JSON. Timings: CUDA events after warm-up, median.
Inputs are larger than L2. Never used for pass/fail.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch

import ac4k_kernel
from ac4k_kernel import reference as ref
from ac4k_kernel._timing import copy_bandwidth_gbs, device_name, time_cuda


def _compiled(fn):
    return torch.compile(fn, fullgraph=True, dynamic=False)


def bench_quantize_int8(iters: int):
    """Per-token INT8: attention-shaped and linear-activation-shaped bf16 inputs."""
    rows = []
    compiled_ref = _compiled(lambda t: tuple(ref.quantize_int8(t, "per_token")[:2]))
    for shape in [(1, 32760, 40, 128), (32760, 5120)]:
        x = torch.randn(shape, device="cuda", dtype=torch.bfloat16)
        nbytes = x.numel() * 2 + x.numel() + (x.numel() // shape[-1]) * 4  # read bf16, write int8 + scales
        impls = {
            "ac4k": lambda: ac4k_kernel.quantize(x, precision="int8"),
            "torch eager (reference)": lambda: ref.quantize_int8(x, "per_token"),
            "torch.compile (reference)": lambda: compiled_ref(x),
        }
        q = ac4k_kernel.quantize(x, precision="int8")
        cv, cs = compiled_ref(x)
        match = bool(torch.equal(q.values, cv) and torch.equal(q.scales.view(torch.int32), cs.view(torch.int32)))
        times = {name: time_cuda(fn, warmup=10, iters=iters) for name, fn in impls.items()}
        for name, ms in times.items():
            rows.append({"op": "quantize_int8 per_token", "shape": "x".join(map(str, shape)) + " bf16", "impl": name,
                         "ms": ms, "bytes": nbytes, "gbs": nbytes / ms / 1e6,
                         "vs_ours": ms / times["ac4k"], "bitexact_vs_compiled_ref": match})
        del x
    return rows


BENCHES = {"quantize_int8": bench_quantize_int8}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="", help="comma-separated subset of: " + ", ".join(BENCHES))
    ap.add_argument("--json", default="", help="write the figures here as JSON")
    ap.add_argument("--iters", type=int, default=50)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench needs a CUDA GPU", file=sys.stderr)
        return 3
    names = [n for n in args.only.split(",") if n] or list(BENCHES)
    info = ac4k_kernel.get_info()
    bw = copy_bandwidth_gbs()
    dev = device_name()
    print(f"device: {dev}; torch {torch.__version__}; ac4k {info['version']} {info['arch']}")
    print(f"device-to-device copy: {bw:.0f} GB/s (read + write)")
    rows = []
    for n in names:
        t0 = time.time()
        rows += BENCHES[n](args.iters)
        print(f"[{n}: {time.time() - t0:.0f} s]", flush=True)
    for r in rows:
        if "gbs" in r:
            r["pct_copy_bw"] = 100 * r["gbs"] / bw
    head = f"{'op':28} {'shape':22} {'impl':28} {'us':>9} {'t/t_ours':>8} {'throughput':>26}"
    print(head)
    print("-" * len(head))
    for r in rows:
        thr = (f"{r['tflops']:.0f} TFLOPS" if "tflops" in r else f"{r['gbs']:.0f} GB/s ({r['pct_copy_bw']:.0f}% copy)")
        print(f"{r['op']:28} {r['shape']:22} {r['impl']:28} {r['ms'] * 1e3:9.1f} {r['vs_ours']:8.2f} {thr:>26}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": dev, "torch": torch.__version__, "copy_gbs": bw, "info": info, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
