"""CPU tests of the diffusers integration: a tiny random Wan transformer gives the same output with
the integration enabled (on the CPU every call passes through, and is counted), and the routing
decisions of the wrapped dispatcher on fake CUDA tensors ([B, S, H, D], as Wan calls it)."""
import pytest
import torch

import ac4k_kernel

diffusers = pytest.importorskip("diffusers", reason="diffusers is optional")
pytestmark = pytest.mark.skipif("mha_int8_x_fp8_fwd" not in ac4k_kernel.get_info()["ops"],
                                reason="needs the built extension with the attention kernel")

from ac4k_kernel.integrations import diffusers as ac4k_diffusers  # noqa: E402


def _tiny_wan():
    from diffusers import WanTransformer3DModel
    torch.manual_seed(0)
    return WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=64, in_channels=4,
                                 out_channels=4, text_dim=32, freq_dim=32, ffn_dim=64, num_layers=2,
                                 cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=64).eval()


def test_wan_forward_unchanged_when_calls_pass_through():
    model = _tiny_wan()
    x = torch.randn(1, 4, 3, 8, 8)
    text = torch.randn(1, 7, 32)
    t = torch.tensor([500])
    with torch.no_grad():
        want = model(x, t, text, return_dict=False)[0]
        ac4k_diffusers.stats(reset=True)
        with ac4k_diffusers.enabled():
            assert "diffusers.models.transformers.transformer_wan" in ac4k_diffusers._state["patched"]
            got = model(x, t, text, return_dict=False)[0]
    assert torch.equal(got, want)
    s = ac4k_diffusers.stats()
    assert s["routed"] == 0 and s["passed"] == 4 and s["reasons"] == {"not CUDA": 4}  # self + cross, 2 layers
    assert not s["enabled"]
    from diffusers.models import attention_dispatch
    from diffusers.models.transformers import transformer_wan
    assert transformer_wan.dispatch_attention_fn is attention_dispatch.dispatch_attention_fn


def test_dispatch_routing_on_fake_cuda_tensors(monkeypatch):
    from torch._subclasses.fake_tensor import FakeTensorMode
    calls = []
    monkeypatch.setitem(ac4k_diffusers._state, "original", lambda *a, **kw: calls.append(kw) or a[0])
    ac4k_diffusers.stats(reset=True)
    with FakeTensorMode():
        try:
            q = torch.empty(1, 300, 12, 128, dtype=torch.bfloat16, device="cuda")
        except Exception as e:  # pragma: no cover
            pytest.skip(f"FakeTensorMode cannot make a CUDA tensor here: {e}")
        text = torch.empty(1, 512, 12, 128, dtype=torch.bfloat16, device="cuda")
        o = ac4k_diffusers._dispatch(q, q, q)  # self-attention
        o2 = ac4k_diffusers._dispatch(q, text, text)  # cross-attention to 512 text tokens
        ac4k_diffusers._dispatch(q, q, q, attn_mask=torch.ones(300, 300, dtype=torch.bool, device="cuda"))
        ac4k_diffusers._dispatch(q, q, q, parallel_config=object())
    assert o.shape == q.shape and o2.shape == q.shape and len(calls) == 2
    s = ac4k_diffusers.stats()
    assert s["routed"] == 2 and s["passed"] == 2
    assert s["reasons"] == {"attn_mask": 1, "attention_kwargs / parallel_config": 1}
