"""CPU tests of the public API (no GPU needed): build facts, argument checks, clear errors."""
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

import ac4k_kernel
from ac4k_kernel import _backend
from ac4k_kernel.reference import quant as ref_quant

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, "python", "ac4k_kernel")

needs_build = pytest.mark.skipif(ac4k_kernel.get_arch() is None,
                                 reason="no compiled backend in this install")


def _pyproject_version():
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        m = re.search(r'^version\s*=\s*"([^"]+)"', f.read(), re.M)
    assert m, "no version in pyproject.toml"
    return m.group(1)


# ============================================================================ build facts

def test_version_matches_pyproject_and_setup():
    assert isinstance(ac4k_kernel.__version__, str)
    assert ac4k_kernel.__version__ == _pyproject_version()
    with open(os.path.join(ROOT, "setup.py")) as f:
        m = re.search(r'^VERSION\s*=\s*"([^"]+)"', f.read(), re.M)
    assert m and m.group(1) == ac4k_kernel.__version__


@needs_build
def test_backend_and_arch():
    assert ac4k_kernel.get_backend() == "cuda"
    assert ac4k_kernel.get_arch() in ("sm90a", "sm89")


def test_get_info():
    info = ac4k_kernel.get_info()
    assert set(info) == {"version", "backend", "arch", "sass", "ptx_jit", "extension_error", "ops", "torch",
                         "torch_cuda", "gpus"}
    assert info["version"] == ac4k_kernel.__version__
    assert info["backend"] == ac4k_kernel.get_backend()
    assert info["arch"] == ac4k_kernel.get_arch()
    assert info["torch"] == torch.__version__
    assert info["ops"] == sorted(info["ops"])
    assert set(info["ops"]) <= _backend._KNOWN_OPS
    if not torch.cuda.is_available():
        assert info["gpus"] == []


@needs_build
def test_get_info_with_build():
    info = ac4k_kernel.get_info()
    assert info["extension_error"] is None
    assert "quantize_int8" in info["ops"]
    # every op listed is really registered
    for name in info["ops"]:
        assert hasattr(torch.ops.ac4k, name)


def test_public_names():
    for name in ("attention", "quantize", "dequantize", "rope3d", "linear", "quantize_weight",
                 "QuantizedTensor", "reference", "get_backend", "get_arch", "get_info", "__version__"):
        assert hasattr(ac4k_kernel, name), name
        assert name in ac4k_kernel.__all__


# ============================================================================ GPU / arch match at import

def _fake_torch(caps, available=True):
    cuda = SimpleNamespace(
        is_available=lambda: available,
        device_count=lambda: len(caps),
        get_device_capability=lambda i: caps[i],
        get_device_name=lambda i: f"Fake GPU {i}",
    )
    return SimpleNamespace(cuda=cuda)


def _fake_mod(arch, sass):
    return SimpleNamespace(__arch__=arch, __sass_cc__=sass)


SM90A, SM89, SM89_ON_SM120 = _fake_mod("sm90a", (9, 0)), _fake_mod("sm89", (8, 9)), _fake_mod("sm89", (12, 0))


def test_check_gpu_matches():
    check = _backend.check_gpu_matches
    check(_fake_torch([(9, 0), (9, 0)]), mod=SM90A, env={})  # matches: no error
    check(_fake_torch([], available=False), mod=SM90A, env={})  # no GPU: no error
    with pytest.raises(RuntimeError) as e:
        check(_fake_torch([(9, 0), (8, 9)]), mod=SM90A, env={})
    msg = str(e.value)
    assert "sm90a" in msg and "cuda:1" in msg and "8.9" in msg and "cuda:0" not in msg
    assert "AC4K_ALLOW_PTX_JIT" not in msg  # sm90a embeds no PTX
    with pytest.raises(RuntimeError, match="12.0"):
        check(_fake_torch([(12, 0)]), mod=SM90A, env={"AC4K_ALLOW_PTX_JIT": "1"})


def test_check_gpu_matches_needs_exact_capability():
    # an sm89 build must refuse an sm86 GPU (same major): the whole capability is compared, and
    # PTX cannot run on an older GPU whatever the environment says
    _backend.check_gpu_matches(_fake_torch([(8, 9)]), mod=SM89, env={})
    with pytest.raises(RuntimeError, match="8.6") as e:
        _backend.check_gpu_matches(_fake_torch([(8, 6)]), mod=SM89, env={"AC4K_ALLOW_PTX_JIT": "1"})
    assert "AC4K_ALLOW_PTX_JIT" not in str(e.value)


def test_check_gpu_sm89_build_on_newer_gpu_needs_opt_in(monkeypatch):
    """An sm89 build carries compute_89 PTX: on the H100 (9.0) it runs only with AC4K_ALLOW_PTX_JIT=1,
    which warns; without it the error names the variable."""
    monkeypatch.setattr(_backend, "ptx_jit_in_use", False)
    for env in ({}, {"AC4K_ALLOW_PTX_JIT": "0"}, {"AC4K_ALLOW_PTX_JIT": "yes"}):
        with pytest.raises(RuntimeError) as e:
            _backend.check_gpu_matches(_fake_torch([(9, 0)]), mod=SM89, env=env)
        assert "AC4K_ALLOW_PTX_JIT=1" in str(e.value) and "sm89" in str(e.value) and "9.0" in str(e.value)
    assert not _backend.ptx_jit_in_use
    with pytest.warns(RuntimeWarning, match="JIT"):
        _backend.check_gpu_matches(_fake_torch([(9, 0)]), mod=SM89, env={"AC4K_ALLOW_PTX_JIT": "1"})
    assert _backend.ptx_jit_in_use


def test_check_gpu_sm89_folder_built_for_sm120():
    # AC4K_CUDA_ARCH=sm120 (or a detected 12.0) builds the sm89 folder with sm_120 SASS: native there
    _backend.check_gpu_matches(_fake_torch([(12, 0)]), mod=SM89_ON_SM120, env={})
    with pytest.raises(RuntimeError, match="AC4K_ALLOW_PTX_JIT"):
        _backend.check_gpu_matches(_fake_torch([(9, 0)]), mod=SM89_ON_SM120, env={})
    with pytest.raises(RuntimeError) as e:  # older than the PTX
        _backend.check_gpu_matches(_fake_torch([(8, 6)]), mod=SM89_ON_SM120, env={"AC4K_ALLOW_PTX_JIT": "1"})
    assert "12.0" in str(e.value)


# ============================================================================ quantize argument checks

def test_quantize_unknown_precision():
    with pytest.raises(ValueError) as e:
        ac4k_kernel.quantize(torch.randn(4, 64), precision="int4")
    msg = str(e.value)
    for p in ("int8", "fp8e4m3", "nvfp4"):
        assert p in msg
    assert "int4" in msg


def test_quantize_precision_is_keyword_only():
    with pytest.raises(TypeError):
        ac4k_kernel.quantize(torch.randn(4, 64), "int8")


@needs_build
def test_quantize_int8_cpu_tensor():
    with pytest.raises(ValueError, match="CUDA"):
        ac4k_kernel.quantize(torch.randn(4, 64, dtype=torch.bfloat16), precision="int8")


@needs_build
def test_quantize_int8_not_a_tensor():
    with pytest.raises(TypeError, match="torch.Tensor"):
        ac4k_kernel.quantize([[1.0, 2.0]], precision="int8")


@needs_build
@pytest.mark.parametrize("precision,op", [("fp8e4m3", "quantize_fp8"), ("nvfp4", "quantize_nvfp4")])
def test_quantize_missing_kernel(precision, op):
    if op in ac4k_kernel.get_info()["ops"]:
        pytest.skip("kernel present; covered by GPU tests")
    with pytest.raises(NotImplementedError) as e:
        ac4k_kernel.quantize(torch.randn(4, 64, dtype=torch.bfloat16), precision=precision)
    msg = str(e.value)
    assert op in msg and "int8" in msg and ac4k_kernel.get_arch() in msg


@needs_build
@pytest.mark.parametrize("kwargs", [
    {"granularity": "per_tensor"},
    {"layout": "BSHD"},
    {"granularity": "per_block"},
    {"granularity": "per_block", "block_size": 0},
])
def test_quantize_bad_args_on_cpu_raise_value_error(kwargs):
    # The CUDA-device check runs before these checks, so on a CPU tensor what is guaranteed is a
    # ValueError (about the device) and no kernel call.
    with pytest.raises(ValueError):
        ac4k_kernel.quantize(torch.randn(2, 8, 2, 64, dtype=torch.bfloat16), precision="int8", **kwargs)


def _fake_cuda_bf16(*shape):
    """A fake CUDA tensor (FakeTensorMode needs no GPU): ops run their registered fake kernels."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    mode = FakeTensorMode()
    with mode:
        try:
            x = torch.empty(*shape, dtype=torch.bfloat16, device="cuda")
        except Exception as e:  # pragma: no cover - depends on the torch build
            pytest.skip(f"FakeTensorMode cannot make a CUDA tensor here: {e}")
    return mode, x


@needs_build
@pytest.mark.parametrize("kwargs,match", [
    ({"granularity": "per_tensor"}, "granularity"),
    ({"layout": "BSHD"}, "layout"),
    ({"granularity": "per_block"}, "block_size"),
    ({"granularity": "per_block", "block_size": 0}, "block_size"),
    ({"granularity": "per_block", "block_size": -64}, "block_size"),
])
def test_quantize_argument_checks_on_cuda_tensor(kwargs, match):
    # On a (fake) CUDA tensor the device check passes and the argument checks that follow it speak.
    mode, x = _fake_cuda_bf16(2, 8, 2, 64)
    with mode:
        with pytest.raises(ValueError, match=match):
            ac4k_kernel.quantize(x, precision="int8", **kwargs)


@needs_build
def test_quantize_int8_wrapper_result_fields():
    mode, x = _fake_cuda_bf16(2, 8, 3, 64)
    with mode:
        q = ac4k_kernel.quantize(x, precision="int8")
        assert isinstance(q, ac4k_kernel.QuantizedTensor)
        assert q.values.shape == (2, 8, 3, 64) and q.values.dtype == torch.int8
        assert q.scales.shape == (2, 8, 3) and q.scales.dtype == torch.float32
        assert q.values.device.type == "cuda"
        assert (q.global_scale, q.precision, q.granularity, q.block_size, q.layout, q.shape) == \
            (None, "int8", "per_token", 0, "BNHD", (2, 8, 3, 64))
        out = (torch.empty(2, 8, 3, 64, dtype=torch.int8, device="cuda"),
               torch.empty(2, 8, 3, dtype=torch.float32, device="cuda"))
        q2 = ac4k_kernel.quantize(x, precision="int8", out=out)
        assert q2.values is out[0] and q2.scales is out[1]


def test_dequantize_on_cpu_uses_reference():
    x = torch.randn(3, 5, 64)
    q = ref_quant.quantize_int8(x)
    out = ac4k_kernel.dequantize(q)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, (q.values.float() * q.scales[..., None]).to(torch.bfloat16))
    assert ac4k_kernel.dequantize(q, torch.float32).dtype == torch.float32


# ============================================================================ attention / linear / rope3d

def test_attention_unknown_precision():
    q = torch.randn(1, 8, 2, 64)
    with pytest.raises(ValueError) as e:
        ac4k_kernel.attention(q, q, q, precision="int4")
    msg = str(e.value)
    for p in ("int8+fp8e4m3", "fp8e4m3", "bf16", "nvfp4"):
        assert p in msg


@needs_build
@pytest.mark.parametrize("precision,op", [("int8+fp8e4m3", "mha_int8_x_fp8_fwd"), ("bf16", "mha_bf16_fwd"),
                                          ("fp8e4m3", "mha_fp8_fwd"), ("nvfp4", "mha_nvfp4_fwd")])
def test_attention_missing_kernel(precision, op):
    if op in ac4k_kernel.get_info()["ops"]:
        pytest.skip("kernel present; covered by GPU tests")
    q = torch.randn(1, 8, 2, 64, dtype=torch.bfloat16)
    with pytest.raises(NotImplementedError, match=op):
        ac4k_kernel.attention(q, q, q, precision=precision)


@needs_build
def test_attention_bf16_in_this_build():
    """This build has mha_bf16_fwd (sm90a): precision="bf16" gets past the kernel check and stops at
    the device check on CPU tensors (no kernel call)."""
    if ac4k_kernel.get_arch() == "sm90a":
        assert "mha_bf16_fwd" in ac4k_kernel.get_info()["ops"]
    elif "mha_bf16_fwd" not in ac4k_kernel.get_info()["ops"]:
        pytest.skip("no mha_bf16_fwd in this arch's build (test_attention_missing_kernel covers it)")
    q = torch.randn(1, 8, 2, 64, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="CUDA"):
        ac4k_kernel.attention(q, q, q, precision="bf16")


def test_linear_unknown_precision():
    with pytest.raises(ValueError, match="precision"):
        ac4k_kernel.quantize_weight(torch.randn(16, 32), precision="int8")
    with pytest.raises(ValueError, match="precision"):
        ac4k_kernel.linear(torch.randn(2, 32), SimpleNamespace(precision="bf16"))


@needs_build
def test_rope3d_missing_kernel():
    if "rope3d" in ac4k_kernel.get_info()["ops"]:
        pytest.skip("kernel present; covered by GPU tests")
    with pytest.raises(NotImplementedError, match="rope3d"):
        ac4k_kernel.rope3d(torch.randn(1, 8, 2, 64), torch.tensor([[1, 2, 4]]), torch.randn(64, 32))


# ============================================================================ python -m ac4k_kernel

@pytest.mark.skipif(not os.path.exists(os.path.join(PKG, "__main__.py")),
                    reason="python/ac4k_kernel/__main__.py not written yet")
@needs_build
def test_main_without_gpu():
    # CUDA_VISIBLE_DEVICES="" hides any GPU, so this checks the no-GPU path on every machine
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    r = subprocess.run([sys.executable, "-m", "ac4k_kernel"], capture_output=True, text=True, env=env,
                       timeout=120, cwd=ROOT)
    out = r.stdout + r.stderr
    assert r.returncode == 3, out
    assert ac4k_kernel.get_arch() in out
    assert ac4k_kernel.__version__ in out
    assert "needs a CUDA GPU" in out
    assert "Traceback" not in out
