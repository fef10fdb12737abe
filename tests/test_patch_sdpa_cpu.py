"""CPU tests of patch_sdpa's routing: which SDPA calls go to attention() and which pass through
unchanged. Routed calls run the real wrapper down to the registered fake kernels (FakeTensorMode
makes CUDA tensors without a GPU); pass-through calls reach a spy standing in for the original."""
import pytest
import torch
import torch.nn.functional as F

import ac4k_kernel
from ac4k_kernel import patch as patch_mod

pytestmark = pytest.mark.skipif("mha_int8_x_fp8_fwd" not in ac4k_kernel.get_info()["ops"],
                                reason="needs the built extension with the attention kernel")


@pytest.fixture
def spy(monkeypatch):
    """The 'original' SDPA, recording its calls; restored after the test."""
    calls = []

    def original(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kw):
        calls.append(dict(q=q, k=k, v=v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale,
                          **kw))
        return torch.empty_like(q)

    monkeypatch.setattr(F, "scaled_dot_product_attention", original)
    ac4k_kernel.sdpa_patch_stats(reset=True)
    yield calls
    ac4k_kernel.unpatch_sdpa()
    assert F.scaled_dot_product_attention is original


def _t(B, H, S, D, dtype=torch.bfloat16, device="cuda"):
    return torch.empty(B, H, S, D, dtype=dtype, device=device)


def test_supported_calls_are_routed(spy, fake):
    ac4k_kernel.patch_sdpa()
    with fake:
        q, k = _t(1, 8, 300, 128), _t(1, 8, 77, 128)
        o = F.scaled_dot_product_attention(q, k, k)
        assert o.shape == q.shape and o.dtype == q.dtype
        F.scaled_dot_product_attention(_t(2, 4, 64, 64, torch.float16), _t(2, 4, 64, 64, torch.float16),
                                       _t(2, 4, 64, 64, torch.float16), is_causal=True, scale=0.1)
        F.scaled_dot_product_attention(_t(1, 8, 64, 128), _t(1, 2, 64, 128), _t(1, 2, 64, 128), enable_gqa=True)
    stats = ac4k_kernel.sdpa_patch_stats()
    assert stats["routed"] == 3 and stats["passed"] == 0 and not spy
    assert stats["patched"] and stats["precision"] == "int8+fp8e4m3"


@pytest.mark.parametrize("case,reason", [
    ("mask", "attn_mask"), ("dropout", "dropout"), ("fp32", "dtype"), ("cpu", "not CUDA"), ("d96", "head dim"),
    ("causal_cross", "causal with Sq != Sk"), ("gqa_off", "heads"), ("grad", "needs grad"), ("3d", "not 4-D"),
    ("strided", "last dim not contiguous")])
def test_unsupported_calls_pass_through_unchanged(spy, fake, case, reason):
    ac4k_kernel.patch_sdpa()
    kw = {}
    with fake:
        q = k = v = _t(1, 4, 64, 128)
        if case == "mask":
            kw["attn_mask"] = torch.ones(64, 64, dtype=torch.bool, device="cuda")
        elif case == "dropout":
            kw["dropout_p"] = 0.1
        elif case == "fp32":
            q = k = v = _t(1, 4, 64, 128, torch.float32)
        elif case == "d96":
            q = k = v = _t(1, 4, 64, 96)
        elif case == "causal_cross":
            k = v = _t(1, 4, 65, 128)
            kw["is_causal"] = True
        elif case == "gqa_off":
            k = v = _t(1, 2, 64, 128)
        elif case == "grad":
            q = _t(1, 4, 64, 128).requires_grad_()
        elif case == "3d":
            q = k = v = torch.empty(4, 64, 128, dtype=torch.bfloat16, device="cuda")
        elif case == "strided":
            q = k = v = _t(1, 4, 64, 256)[..., ::2]
    if case == "cpu":
        q = k = v = _t(1, 4, 64, 128, device="cpu")
    with fake if case != "cpu" else torch.no_grad():
        F.scaled_dot_product_attention(q, k, v, **kw)
    assert len(spy) == 1 and spy[0]["q"] is q and spy[0]["k"] is k and spy[0]["v"] is v
    for name, val in kw.items():
        assert spy[0][name] is val or spy[0][name] == val
    stats = ac4k_kernel.sdpa_patch_stats()
    assert stats["routed"] == 0 and stats["passed"] == 1 and stats["reasons"] == {reason: 1}


def test_context_manager_restores_on_error(spy):
    original = F.scaled_dot_product_attention
    with pytest.raises(RuntimeError, match="boom"):
        with ac4k_kernel.sdpa_patched():
            assert F.scaled_dot_product_attention is patch_mod._sdpa
            raise RuntimeError("boom")
    assert F.scaled_dot_product_attention is original and not ac4k_kernel.sdpa_patch_stats()["patched"]


def test_patch_argument_errors(spy):
    with pytest.raises(ValueError, match="precision"):
        ac4k_kernel.patch_sdpa(precision="int4")
    if "mha_bf16_fwd" not in ac4k_kernel.get_info()["ops"]:
        with pytest.raises(NotImplementedError, match="mha_bf16_fwd"):
            ac4k_kernel.patch_sdpa(precision="bf16")
    assert not ac4k_kernel.sdpa_patch_stats()["patched"]


def test_passed_calls_give_the_original_result():
    """With the real SDPA behind it, a CPU call through the patch equals the unpatched call."""
    q, k, v = (torch.randn(1, 2, 10, 64) for _ in range(3))
    want = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    with ac4k_kernel.sdpa_patched():
        got = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert torch.equal(got, want)
