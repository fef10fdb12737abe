"""GPU tests of the diffusers integration: a small random Wan transformer (2 layers, Wan 1.3B's
head layout) gives the same output within quantization noise with ac4k_kernel's attention as with
diffusers' native SDPA, every attention call is routed, and torch.compile(model) runs with it."""
import pytest
import torch

import ac4k_kernel

diffusers = pytest.importorskip("diffusers", reason="diffusers is optional")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available() or "mha_int8_x_fp8_fwd" not in ac4k_kernel.get_info()["ops"],
                                reason="needs a CUDA GPU and the attention kernel")

from ac4k_kernel.integrations import diffusers as ac4k_diffusers  # noqa: E402


def _small_wan():
    from diffusers import WanTransformer3DModel
    torch.manual_seed(0)
    return WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
                                 out_channels=16, text_dim=256, freq_dim=256, ffn_dim=1024, num_layers=2,
                                 cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                                 rope_max_seq_len=1024).to("cuda", torch.bfloat16).eval()


def _inputs():
    g = torch.Generator(device="cuda").manual_seed(1)
    x = torch.randn(1, 16, 5, 30, 26, device="cuda", generator=g).to(torch.bfloat16)  # 5 x 15 x 13 = 975 tokens
    text = torch.randn(1, 77, 256, device="cuda", generator=g).to(torch.bfloat16)
    return x, torch.tensor([500], device="cuda"), text


def _close(o, r):
    o, r = o.double().flatten(), r.double().flatten()
    cos = torch.nn.functional.cosine_similarity(o, r, dim=0).item()
    rel = ((o - r).abs().sum() / r.abs().sum()).item()
    return cos, rel


@torch.no_grad()
def test_wan_with_ac4k_attention_matches_sdpa():
    model = _small_wan()
    x, t, text = _inputs()
    want = model(x, t, text, return_dict=False)[0]
    ac4k_diffusers.stats(reset=True)
    with ac4k_diffusers.enabled():
        got = torch.full_like(want, float("nan"))
        got.copy_(model(x, t, text, return_dict=False)[0])
    s = ac4k_diffusers.stats()
    assert s["routed"] == 4 and s["passed"] == 0, s  # self + cross attention, 2 layers
    assert torch.isfinite(got).all()
    cos, rel = _close(got, want)
    assert cos >= 0.999 and rel <= 0.05, (cos, rel)


@torch.no_grad()
def test_wan_compiled_with_ac4k_attention():
    model = _small_wan()
    x, t, text = _inputs()
    with ac4k_diffusers.enabled():
        eager = model(x, t, text, return_dict=False)[0]
        torch._dynamo.reset()
        compiled = torch.compile(model)
        compiled(x, t, text, return_dict=False)  # compile outside the profiled call
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            got = compiled(x, t, text, return_dict=False)[0]
            torch.cuda.synchronize()
    kernels = [e.key for e in prof.key_averages()]
    # The compiled graph runs our attention kernel, and no SDPA attention kernel (flash, memory-
    # efficient or cuDNN's "sdpa" kernels; the patch embedding's cuDNN convolution may appear).
    assert any("mha_int8_x_fp8" in k for k in kernels), kernels
    assert not any(s in k.lower() for k in kernels for s in ("flash", "fmha", "sdpa")), kernels
    cos, rel = _close(got, eager)  # compiled vs eager: other ops round differently
    assert cos >= 0.9999 and rel <= 0.02, (cos, rel)
