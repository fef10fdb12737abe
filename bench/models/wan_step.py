"""One denoising step of a Wan2.1-T2V-1.3B-shaped transformer (diffusers' WanTransformer3DModel with
the published config and random bf16 weights; nothing is downloaded) on the 480p 81-frame latent
(21 x 60 x 104 -> 32760 tokens), with diffusers' native attention (torch SDPA, best backend) and
with ac4k_kernel's attention (ac4k_kernel.integrations.diffusers). Prints step times, the attention
share of each step (CUDA kernel time from the profiler) and the ac4k step's accuracy against the SDPA
step; writes JSON with --json.

    python bench/models/wan_step.py [--layers 30] [--iters 5] [--json out.json]

Needs a CUDA GPU and diffusers (carry its wheel to a machine without network).
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

import ac4k_kernel
from ac4k_kernel._timing import device_name, time_cuda

WAN_1_3B = dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
                out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
                qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)
LATENT = (1, 16, 21, 60, 104)  # 81 frames at 480 x 832 after the VAE (4x temporal, 8x spatial)
TEXT = (1, 512, 4096)


def attention_share(fn) -> float:
    """Share of the CUDA kernel time spent in attention kernels during one call."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    total = att = 0.0
    for e in prof.key_averages():
        t = e.device_time_total if hasattr(e, "device_time_total") else e.cuda_time_total
        total += t
        name = e.key.lower()
        if any(s in name for s in ("mha_int8_x_fp8", "flash", "fmha", "cudnn", "attention", "sdpa")):
            att += t
    return att / total if total else float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 3
    from diffusers import WanTransformer3DModel
    from ac4k_kernel.integrations import diffusers as ac4k_diffusers

    torch.manual_seed(0)
    cfg = dict(WAN_1_3B, num_layers=args.layers)
    model = WanTransformer3DModel(**cfg).to("cuda", torch.bfloat16).eval()
    x = torch.randn(LATENT, device="cuda", dtype=torch.bfloat16)
    text = torch.randn(TEXT, device="cuda", dtype=torch.bfloat16)
    t = torch.tensor([500], device="cuda")

    @torch.no_grad()
    def step():
        return model(x, t, text, return_dict=False)[0]

    # SDPA's best backend for this shape: time flash and cuDNN, keep the faster as the baseline.
    from torch.nn.attention import SDPBackend, sdpa_kernel
    sdpa_times = {}
    for name, backend in (("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)):
        with sdpa_kernel(backend):
            try:
                sdpa_times[name] = time_cuda(step, warmup=2, iters=args.iters)
            except RuntimeError as e:
                print(f"SDPA {name}: {str(e)[:120]}")
    best = min(sdpa_times, key=sdpa_times.get)
    best_backend = SDPBackend.FLASH_ATTENTION if best == "flash" else SDPBackend.CUDNN_ATTENTION
    with sdpa_kernel(best_backend):
        base = step()
        t_sdpa = sdpa_times[best]
        share_sdpa = attention_share(step)
    with ac4k_diffusers.enabled():
        ours = step()
        t_ours = time_cuda(step, warmup=2, iters=args.iters)
        share_ours = attention_share(step)
        routed = ac4k_diffusers.stats()
    o, r = ours.double().flatten(), base.double().flatten()
    cos = torch.nn.functional.cosine_similarity(o, r, dim=0).item()
    rel = ((o - r).abs().sum() / r.abs().sum()).item()
    res = {"device": device_name(), "torch": torch.__version__, "config": {k: list(v) if isinstance(v, tuple) else v
                                                                           for k, v in cfg.items()},
           "latent": LATENT, "sdpa_backend": best, "step_ms_sdpa_backends": sdpa_times, "step_ms_sdpa": t_sdpa, "step_ms_ac4k": t_ours, "speedup": t_sdpa / t_ours,
           "attention_share_sdpa": share_sdpa, "attention_share_ac4k": share_ours, "cos": cos, "rel_l1": rel,
           "dispatch": routed}
    print(f"device: {res['device']}; Wan 1.3B-shaped, {args.layers} layers, latent {LATENT} (32760 tokens)")
    print(f"SDPA step by backend (ms): {sdpa_times}")
    print(f"step: SDPA {best} {t_sdpa:.1f} ms (attention {100 * share_sdpa:.0f}%), ac4k {t_ours:.1f} ms "
          f"(attention {100 * share_ours:.0f}%): {t_sdpa / t_ours:.2f}x; output vs SDPA: cos {cos:.5f}, rel L1 {rel:.4f}")
    print(f"dispatcher: {routed}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
