"""GPU test of patch_sdpa: routed SDPA calls give attention()'s result, close to the original SDPA."""
import pytest
import torch
import torch.nn.functional as F

import ac4k_kernel

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_patched_sdpa_routes_to_attention():
    q, k, v = (torch.randn(2, 8, 333, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    mask = torch.rand(333, 333, device="cuda") > 0.1
    want = F.scaled_dot_product_attention(q, k, v)
    want_masked = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    ac4k_kernel.sdpa_patch_stats(reset=True)
    with ac4k_kernel.sdpa_patched():
        got = F.scaled_dot_product_attention(q, k, v)
        masked = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.equal(got, ac4k_kernel.attention(q, k, v, layout="BHND"))
    cos = F.cosine_similarity(got.double().flatten(), want.double().flatten(), dim=0).item()
    assert cos >= 0.999, cos
    assert torch.equal(masked, want_masked)  # a masked call passes through to the original SDPA
    stats = ac4k_kernel.sdpa_patch_stats()
    assert stats["routed"] == 1 and stats["passed"] == 1 and stats["reasons"] == {"attn_mask": 1}
