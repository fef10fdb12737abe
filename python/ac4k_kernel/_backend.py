"""Loads the one compiled backend and checks, once, that it matches the GPU."""
from __future__ import annotations

import importlib
import os
import warnings

import torch  # loads libc10/libtorch, which the compiled module links against)

_ARCH_CAPABILITY = {"sm80": (8, 0), "sm86": (8, 6), "sm89": (8, 9), "sm90a": (9, 0), "sm100": (10, 0),
                    "sm120": (12, 0)}
REINSTALL = "pip install --no-build-isolation --force-reinstall --no-deps ."

_C = None
_load_error: str | None = None
try:
    _C = importlib.import_module("ac4k_kernel._cuda_ops")
except ImportError as e:  # a source checkout without a build, or a broken install
    _load_error = f"{type(e).__name__}: {e}"


def backend_module():
    """The compiled module, or a clear error when this install has none."""
    if _C is None:
        raise RuntimeError(
            "ac4k_kernel has no compiled backend in this install (" + str(_load_error) + "). Build it with: "
            "AC4K_CUDA_ARCH=<arch> " + REINSTALL)
    return _C


def get_backend() -> str | None:
    """'cuda' (or 'rocm'): the backend this install was compiled for; None without a build."""
    return getattr(_C, "__backend__", None)


def get_arch() -> str | None:
    """The GPU arch this install was compiled for (e.g. 'sm90a'); None without a build."""
    return getattr(_C, "__arch__", None)


def get_sass_cc(mod=None) -> tuple | None:
    """(major, minor) of the SASS this build carries (e.g. (8, 9)); None without a build."""
    mod = _C if mod is None else mod
    cc = getattr(mod, "__sass_cc__", None)
    if cc is None:  # a module built before the attribute existed: the arch's own capability
        return _ARCH_CAPABILITY.get(getattr(mod, "__arch__", None))
    return tuple(int(x) for x in cc)


# Archs whose build also embeds PTX (compute_89 for sm89), which the driver can JIT for a newer GPU.
PTX_ARCHS = {"sm89": (8, 9)}
PTX_JIT_ENV = "AC4K_ALLOW_PTX_JIT"
ptx_jit_in_use = False  # set by check_gpu_matches when a GPU runs this build's PTX


def check_gpu_matches(torch_mod=None, mod=None, env=None) -> None:
    """Raise if a visible GPU has another compute capability than the compiled SASS. An sm89 build
    (compute_89 PTX inside) may run on a newer GPU through the driver's JIT, but only when
    AC4K_ALLOW_PTX_JIT=1 is set (for testing the sm89 kernels on an H100); it warns when it does."""
    global ptx_jit_in_use
    mod = _C if mod is None else mod
    if mod is None:
        return
    torch_mod = torch_mod or torch
    env = os.environ if env is None else env
    if not torch_mod.cuda.is_available():
        return
    arch = getattr(mod, "__arch__", None)
    want = get_sass_cc(mod)
    found = [torch_mod.cuda.get_device_capability(i) for i in range(torch_mod.cuda.device_count())]
    names = [torch_mod.cuda.get_device_name(i) for i in range(len(found))]
    bad = [i for i, c in enumerate(found) if tuple(c) != tuple(want)]
    if not bad:
        return
    desc = ", ".join(f"cuda:{i} ({names[i]}, compute capability {found[i][0]}.{found[i][1]})" for i in bad)
    ptx = PTX_ARCHS.get(arch)
    jit_ok = ptx is not None and all(tuple(found[i]) >= ptx for i in bad)
    if jit_ok and env.get(PTX_JIT_ENV, "") == "1":
        ptx_jit_in_use = True
        warnings.warn(
            f"ac4k_kernel: running the {arch} build (SASS for {want[0]}.{want[1]}) on {desc} through the "
            f"driver's JIT of its compute_{ptx[0]}{ptx[1]} PTX ({PTX_JIT_ENV}=1): for testing the {arch} kernels; "
            "timings do not represent either GPU.", RuntimeWarning, stacklevel=2)
        return
    hint = (f" This build embeds compute_{ptx[0]}{ptx[1]} PTX: set {PTX_JIT_ENV}=1 to run it on this GPU anyway "
            "through the driver's JIT (for testing)." if jit_ok else "")
    raise RuntimeError(
        f"ac4k_kernel was built for {arch} (SASS for compute capability {want[0]}.{want[1]}) but found "
        f"{desc}. Rebuild for this GPU: {REINSTALL} (the arch is detected from nvidia-smi, "
        f"or set AC4K_CUDA_ARCH), or hide other GPUs with CUDA_VISIBLE_DEVICES.{hint}")


_KNOWN_OPS = {"quantize_int8", "quantize_int8_out", "quantize_fp8", "quantize_fp8_out", "quantize_nvfp4",
              "quantize_nvfp4_out", "mha_int8_x_fp8_fwd", "mha_fp8_fwd", "mha_bf16_fwd", "mha_nvfp4_fwd",
              "rope3d", "quantize_attention_q", "gemm_fp8", "gemm_nvfp4"}
# Registered when the compiled module loaded; a constant, so torch.compile traces the checks.
AVAILABLE_OPS = frozenset(n for n in _KNOWN_OPS if _C is not None and hasattr(torch.ops.ac4k, n))


def available_ops() -> frozenset:
    """Names of the ops this build registered under torch.ops.ac4k."""
    return AVAILABLE_OPS
