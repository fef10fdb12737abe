"""Launch the attention kernels once each at one shape, for Nsight Compute (tools/gpu_check.sh's
`profile` stage runs this under ncu). Ours always; SageAttention2's sm90 kernel when importable.

    python tools/profile_attention.py [S] [D]
"""
import sys

import torch

import ac4k_kernel  # noqa: F401  (registers torch.ops.ac4k)

S = int(sys.argv[1]) if len(sys.argv) > 1 else 8192
D = int(sys.argv[2]) if len(sys.argv) > 2 else 128
B, H = 1, 40
q, k, v = (torch.randn(B, S, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
k8, ks, _, vt, vs = torch.ops.ac4k.quantize_attention_kv(k, v, "BNHD")
torch.ops.ac4k.mha_int8_x_fp8_fwd(q, k8, ks, vt, vs, "BNHD", False, D ** -0.5, False)
sys.path.insert(0, "bench")
from run import _sage  # noqa: E402

sage = _sage()
if sage is not None:
    sage[1](q, k, v)()
torch.cuda.synchronize()
