"""The high-level API: each function's precision argument selects the compiled kernel."""
from . import _fake  # noqa: F401  (fake implementations for torch.compile)
from .attention import attention
from .linear import linear, quantize_weight
from .quant import dequantize, quantize
from .rope import rope3d

__all__ = ["attention", "quantize", "dequantize", "rope3d", "linear", "quantize_weight"]
