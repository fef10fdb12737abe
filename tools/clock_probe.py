"""SM clock, power and throttle reasons while one kernel runs back to back (~3 s each), from
nvidia-smi sampled every 50 ms: tells a power-capped kernel (clock below max at the power limit)
from one limited inside the SM. Diagnostic only (tools/, not a benchmark).

    python tools/clock_probe.py [S] [D]
"""
import statistics
import subprocess
import sys
import time

import torch

import ac4k_kernel  # noqa: F401  (loads the ops)

S, D = ([int(a) for a in sys.argv[1:]] + [32760, 128][len(sys.argv) - 1:])[:2]
B, H = 1, 40
q, k, v = (torch.randn(B, S, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
k8, ks, _, vt, vs = torch.ops.ac4k.quantize_attention_kv(k, v, "BNHD")
kf8, ksf8, _, vtf, vsf = torch.ops.ac4k.quantize_attention_kv(k, v, "BNHD", k_precision="fp8e4m3")
flops = 4 * B * H * S * S * D
ops = {
    "int8+fp8 kernel": lambda: torch.ops.ac4k.mha_int8_x_fp8_fwd(q, k8, ks, vt, vs, "BNHD", False, D ** -0.5, False),
    "fp8 kernel": lambda: torch.ops.ac4k.mha_fp8_fwd(q, kf8, ksf8, vtf, vsf, "BNHD", False, D ** -0.5, False),
    "bf16 kernel": lambda: torch.ops.ac4k.mha_bf16_fwd(q, k, v, "BNHD", False, D ** -0.5, False),
}
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
ops["bf16 matmul 8192^3"] = (lambda: a @ a, 2 * 8192 ** 3)
sys.path.insert(0, "bench")
try:
    from run import _sage  # noqa: E402

    sage = _sage()
    if sage is not None:
        ops["SageAttention2 kernel"] = sage[1](q, k, v)
except Exception as e:  # the probe runs without it
    print("no SageAttention2:", e)

fields = "timestamp,clocks.sm,power.draw,temperature.gpu,clocks_event_reasons.active"
print(f"B{B} H{H} S{S} D{D}; nvidia-smi every 50 ms while each op runs back to back for ~3 s")
for name, op in ops.items():
    fl = flops
    if isinstance(op, tuple):
        op, fl = op
    for _ in range(3):
        op()
    torch.cuda.synchronize()
    smi = subprocess.Popen(["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader,nounits", "-lms", "50"],
                           stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)
    n, t0 = 0, time.perf_counter()
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    e0.record()
    while time.perf_counter() - t0 < 3.0:
        for _ in range(4):
            op()
        n += 4
        torch.cuda.synchronize()
    e1.record()
    torch.cuda.synchronize()
    smi.terminate()
    rows = [r.split(", ") for r in smi.communicate()[0].strip().splitlines()]
    rows = [r for r in rows if len(r) == 5][5:]  # skip the warm-up samples
    ms = e0.elapsed_time(e1) / n
    clk = [float(r[1]) for r in rows]
    pw = [float(r[2]) for r in rows]
    reasons = sorted({r[4] for r in rows})
    print(f"{name:24s} {ms * 1e3:9.1f} us  {fl / ms / 1e9:6.0f} TFLOPS  SM clock median {statistics.median(clk):.0f} MHz "
          f"(min {min(clk):.0f} max {max(clk):.0f})  power median {statistics.median(pw):.0f} W (max {max(pw):.0f})  "
          f"temp {rows[-1][3]} C  reasons {reasons}  samples {len(rows)}")
