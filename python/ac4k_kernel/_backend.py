"""Loads the one compiled backend and checks, once, that it matches the GPU."""
from __future__ import annotations

import importlib

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


def check_gpu_matches(torch_mod=None) -> None:
    """Raise if a visible GPU has another compute capability than the compiled arch."""
    if _C is None:
        return
    torch_mod = torch_mod or torch
    if not torch_mod.cuda.is_available():
        return
    arch = get_arch()
    want = _ARCH_CAPABILITY.get(arch)
    found = [torch_mod.cuda.get_device_capability(i) for i in range(torch_mod.cuda.device_count())]
    bad = [f"cuda:{i} ({torch_mod.cuda.get_device_name(i)}, compute capability {c[0]}.{c[1]})"
           for i, c in enumerate(found) if c != want]
    if bad:
        raise RuntimeError(
            f"ac4k_kernel was built for {arch} (compute capability {want[0]}.{want[1]}) but found "
            f"{', '.join(bad)}. Rebuild for this GPU: {REINSTALL} (the arch is detected from nvidia-smi, "
            "or set AC4K_CUDA_ARCH), or hide other GPUs with CUDA_VISIBLE_DEVICES.")


_KNOWN_OPS = {"quantize_int8", "quantize_int8_out", "quantize_fp8", "quantize_fp8_out", "quantize_nvfp4",
              "quantize_nvfp4_out", "mha_int8_x_fp8_fwd", "mha_fp8_fwd", "mha_bf16_fwd", "mha_nvfp4_fwd",
              "rope3d", "gemm_fp8", "gemm_nvfp4"}
# Registered when the compiled module loaded; a constant, so torch.compile traces the checks.
AVAILABLE_OPS = frozenset(n for n in _KNOWN_OPS if _C is not None and hasattr(torch.ops.ac4k, n))


def available_ops() -> frozenset:
    """Names of the ops this build registered under torch.ops.ac4k."""
    return AVAILABLE_OPS
