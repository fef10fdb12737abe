"""What every op wrapper needs: the compiled ops, and clear errors for what this build lacks."""
from __future__ import annotations

import torch

from .._backend import available_ops, backend_module, get_arch, get_backend


def require_op(op: str, api: str, precision: str, by_precision: dict) -> None:
    """Raise a clear error when `op` (selected by `precision` in `api`) is not in this build."""
    if precision not in by_precision:
        raise ValueError(f"{api}: precision must be one of {sorted(by_precision)}, got {precision!r}")
    backend_module()  # raises if there is no compiled backend at all
    if op not in available_ops():
        have = sorted(p for p, o in by_precision.items() if o in available_ops())
        raise NotImplementedError(
            f"{api}(precision={precision!r}) needs the kernel {op}, which this build ({get_backend()}/{get_arch()}) "
            f"does not have; precisions available here: {have or 'none yet'}")


def require_cuda(t: torch.Tensor, api: str, name: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{api}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cuda":
        raise ValueError(f"{api}: {name} must be a CUDA tensor, got device {t.device}")
