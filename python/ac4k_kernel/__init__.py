"""ac4k_kernel: quantized attention, quantize, RoPE-3D and linear kernels for video-diffusion
transformers, compiled for exactly one GPU architecture chosen at install time."""
from __future__ import annotations

__version__ = "0.1.0"

from ._backend import check_gpu_matches as _check_gpu_matches
from ._backend import get_arch, get_backend
from . import reference
from .ops import attention, dequantize, linear, quantize, quantize_weight, rope3d
from .reference.quant import QuantizedTensor
from .patch import patch_sdpa, sdpa_patch_stats, sdpa_patched, unpatch_sdpa
from . import nn
from .nn import quantize_linear_

_check_gpu_matches()  # once, at import: a wrong-arch build fails here, not in every call


def get_info() -> dict:
    """Build and runtime facts: version, backend, arch, ops in this build, torch/CUDA, GPUs."""
    import torch

    from . import _backend
    from ._backend import _load_error, available_ops
    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            c = torch.cuda.get_device_capability(i)
            gpus.append(f"{torch.cuda.get_device_name(i)} (cc {c[0]}.{c[1]})")
    return {
        "version": __version__,
        "backend": get_backend(),
        "arch": get_arch(),
        "sass": (lambda c: None if c is None else f"sm_{c[0]}{c[1]}")(_backend.get_sass_cc()),
        "ptx_jit": _backend.ptx_jit_in_use,
        "extension_error": _load_error,
        "ops": sorted(available_ops()),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "gpus": gpus,
    }


__all__ = ["__version__", "get_backend", "get_arch", "get_info", "attention", "quantize", "dequantize",
           "rope3d", "linear", "quantize_weight", "QuantizedTensor", "reference", "patch_sdpa", "unpatch_sdpa",
           "sdpa_patched", "sdpa_patch_stats", "nn", "quantize_linear_"]
