"""Launch kernels once each at one shape, for Nsight Compute (tools/gpu_check.sh's `profile` stage
runs this under ncu; PROFILE_REGEX picks the kernels to profile).

    python tools/profile_ops.py attention [S] [D]    # ours (int8+fp8e4m3) and SageAttention2's when importable
    python tools/profile_ops.py bf16 [S] [D]         # mha_bf16_fwd and SDPA's cuDNN kernel
    python tools/profile_ops.py nvfp4 [S] [D]        # mha_nvfp4_fwd (and mha_bf16_fwd beside it)
    python tools/profile_ops.py gemm_nvfp4 [M] [N] [K]
    python tools/profile_ops.py gemm_fp8 [M] [N] [K]     # ours and torch._scaled_mm rowwise, accurate then fast
    python tools/profile_ops.py kv [S] [D]           # the K/V pass (quantize_attention_kv), B=1 H=40
    python tools/profile_ops.py per_channel [S] [D]  # quantize(x, "fp8e4m3", granularity="per_channel"), B=1 H=40
    python tools/profile_ops.py q_rope [S] [D]       # quantize_attention_q with rope, then rope3d; B=1 H=40, grid 21x30x52
"""
import sys

import torch

import ac4k_kernel

case = sys.argv[1] if len(sys.argv) > 1 else "attention"
args = [int(a) for a in sys.argv[2:]]
if case in ("attention", "bf16", "nvfp4"):
    S, D = (args + [8192, 128][len(args):])[:2]
    B, H = 1, 40
    q, k, v = (torch.randn(B, S, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    if case == "nvfp4":
        ac4k_kernel.attention(q, k, v, precision="nvfp4")
        torch.ops.ac4k.mha_bf16_fwd(q, k, v, "BNHD", False, D ** -0.5, False)
    elif case == "bf16":
        torch.ops.ac4k.mha_bf16_fwd(q, k, v, "BNHD", False, D ** -0.5, False)
        from torch.nn.attention import SDPBackend, sdpa_kernel
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            torch.nn.functional.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, k, v)))
    else:
        k8, ks, _, vt, vs = torch.ops.ac4k.quantize_attention_kv(k, v, "BNHD")
        torch.ops.ac4k.mha_int8_x_fp8_fwd(q, k8, ks, vt, vs, "BNHD", False, D ** -0.5, False)
        sys.path.insert(0, "bench")
        from run import _sage  # noqa: E402

        sage = _sage()
        if sage is not None:
            sage[1](q, k, v)()
elif case == "kv":
    # The pass's timeline (launch stats, SM activity, DRAM throughput) shows whether its last round
    # of clusters leaves the GPU idle (docs/perf-notes.md, session 15).
    S, D = (args + [4096, 128][len(args):])[:2]
    k, v = (torch.randn(1, S, 40, D, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    torch.ops.ac4k.quantize_attention_kv(k, v, "BNHD")
elif case == "per_channel":
    # Where a per_channel build spends its time (the two-pass kernel, or a one-launch variant).
    S, D = (args + [32760, 128][len(args):])[:2]
    x = torch.randn(1, S, 40, D, device="cuda", dtype=torch.bfloat16)
    ac4k_kernel.quantize(x, precision="fp8e4m3", granularity="per_channel")
elif case == "q_rope":
    # The fused Q pass at the bench's shape: how close to copy it runs and what holds it back.
    S, D = (args + [32760, 128][len(args):])[:2]
    from ac4k_kernel import reference as ref

    x = torch.randn(1, S, 40, D, device="cuda", dtype=torch.bfloat16)
    grid, freqs = torch.tensor([[21, 30, 52]]), ref.rope3d_freqs(1024, D).cuda()
    torch.ops.ac4k.quantize_attention_q(x, "BNHD", grid, freqs)
    ac4k_kernel.rope3d(x, grid, freqs)  # the same multiplier reads without the quantization
elif case == "gemm_nvfp4":
    M, N, K = (args + [32760, 5120, 5120][len(args):])[:3]
    x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
    w = ac4k_kernel.quantize_weight(torch.randn(N, K, device="cuda", dtype=torch.bfloat16), precision="nvfp4")
    ac4k_kernel.linear(x, w)
    torch.nn.functional.linear(x, torch.randn(N, K, device="cuda", dtype=torch.bfloat16))
elif case == "gemm_fp8":
    # cuBLAS's kernel names (ncu lists them) give its tile shape, and ncu's shared-memory
    # throughput tells whether 128x128 tiles are bound by it (docs/perf-notes.md, session 14).
    M, N, K = (args + [32760, 5120, 5120][len(args):])[:3]
    x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
    wq = ac4k_kernel.quantize_weight((torch.randn(N, K, device="cuda") * K ** -0.5).to(torch.bfloat16))
    xq = ac4k_kernel.quantize(x, precision="fp8e4m3")
    a, sa, b, sb = xq.values, xq.scales, wq.values, wq.scales
    torch.ops.ac4k.gemm_fp8(a, sa, b, sb, None, torch.bfloat16)
    for fast in (False, True):
        torch._scaled_mm(a, b.t(), scale_a=sa[:, None], scale_b=sb[None, :], out_dtype=torch.bfloat16,
                         use_fast_accum=fast)
else:
    sys.exit(f"unknown case {case}")
torch.cuda.synchronize()
