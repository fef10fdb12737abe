"""Modules: `Linear`, an inference-only stand-in for torch.nn.Linear that holds its weight quantized
(FP8 E4M3 per output channel, or NVFP4) and runs `ac4k_kernel.linear`, and `quantize_linear_`, which swaps a
model's nn.Linear layers for it in place."""
from __future__ import annotations

import warnings
from typing import Callable, Optional

import torch

from .ops.linear import K_MULTIPLE, linear, quantize_weight
from .reference.quant import QuantizedTensor

__all__ = ["Linear", "quantize_linear_"]

PRECISIONS = ("fp8e4m3", "nvfp4")


class Linear(torch.nn.Module):
    """y = x @ Wᵀ + b with W stored as E4M3 values `weight` [out, in] and float32 `weight_scale` [out]
    (precision "fp8e4m3"), or as packed E2M1 `weight` uint8 [out, in/2], E4M3 block scales
    `weight_scale` [out, in/16] and a float32 `weight_global_scale` [] (precision "nvfp4", 4x smaller
    than bf16) (buffers: `.to()`, `.cuda()` and state_dict carry them; no gradients). `bias` [out] keeps the dtype
    it was given (bf16, fp16 or fp32). x: bf16 / fp16 CUDA [..., in], quantized per token on each call.
    in_features must be a multiple of 16. Build it with `Linear.from_linear(nn_linear)`, or empty and
    then `load_state_dict` of a saved one."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, precision: str = "fp8e4m3",
                 device=None, bias_dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        if precision not in PRECISIONS:
            raise NotImplementedError(f"ac4k_kernel.nn.Linear: precision must be one of {PRECISIONS}, got {precision!r}")
        if in_features % K_MULTIPLE:
            raise ValueError(f"ac4k_kernel.nn.Linear: in_features = {in_features} must be a multiple of {K_MULTIPLE}")
        self.in_features, self.out_features, self.precision = in_features, out_features, precision
        if precision == "nvfp4":
            self.register_buffer("weight", torch.zeros(out_features, in_features // 2, dtype=torch.uint8, device=device))
            self.register_buffer("weight_scale", torch.zeros(out_features, in_features // 16, dtype=torch.float8_e4m3fn,
                                                             device=device))
            self.register_buffer("weight_global_scale", torch.zeros((), dtype=torch.float32, device=device))
        else:
            self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.float8_e4m3fn,
                                                       device=device))
            self.register_buffer("weight_scale", torch.zeros(out_features, dtype=torch.float32, device=device))
        if bias:
            self.register_buffer("bias", torch.zeros(out_features, dtype=bias_dtype, device=device))
        else:
            self.bias = None

    @classmethod
    def from_linear(cls, module: torch.nn.Linear, precision: str = "fp8e4m3") -> "Linear":
        """Quantize an nn.Linear's weight (quantize_weight) into a new Linear on the same device."""
        w = module.weight.detach()
        b = module.bias.detach() if module.bias is not None else None
        m = cls(module.in_features, module.out_features, bias=b is not None, precision=precision, device=w.device,
                bias_dtype=b.dtype if b is not None else torch.bfloat16)
        q = quantize_weight(w, precision=precision)
        m.weight.copy_(q.values)
        m.weight_scale.copy_(q.scales)
        if precision == "nvfp4":
            m.weight_global_scale.copy_(q.global_scale.reshape(()))
        if b is not None:
            m.bias.copy_(b)
        return m

    def quantized_weight(self) -> QuantizedTensor:
        if self.precision == "nvfp4":
            return QuantizedTensor(self.weight, self.weight_scale, self.weight_global_scale, "nvfp4", "per_block", 16,
                                   "plain", "BNHD", (self.out_features, self.in_features))
        return QuantizedTensor(self.weight, self.weight_scale, None, self.precision, "per_token", 0, "plain", "BNHD",
                               tuple(self.weight.shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.quantized_weight(), self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"precision={self.precision!r}")


def quantize_linear_(module: torch.nn.Module, precision: str = "fp8e4m3",
                     filter: Optional[Callable[[str, torch.nn.Module], bool]] = None) -> torch.nn.Module:
    """Replace, in place, every layer of `module` whose type is exactly torch.nn.Linear (and for which
    `filter(name, layer)` is true, if given) by `Linear.from_linear(layer, precision)`; returns `module`.

    Subclasses of nn.Linear are left alone (e.g. nn.MultiheadAttention's out_proj, whose weight is read
    as a tensor), and so are layers with in_features not a multiple of 16 (a warning lists them). A layer
    shared under several names is quantized once and stays shared. `module` itself must not be an
    nn.Linear (use Linear.from_linear)."""
    if precision not in PRECISIONS:
        raise NotImplementedError(f"quantize_linear_: precision must be one of {PRECISIONS}, got {precision!r}")
    if type(module) is torch.nn.Linear:
        raise ValueError("quantize_linear_: module is itself an nn.Linear and cannot be replaced in place; "
                         "use ac4k_kernel.nn.Linear.from_linear(module)")
    done: dict = {}
    skipped = []
    for name, child in list(module.named_modules(remove_duplicate=False)):
        if type(child) is not torch.nn.Linear:
            continue
        if filter is not None and not filter(name, child):
            continue
        if child.in_features % K_MULTIPLE:
            skipped.append(name)
            continue
        if id(child) not in done:
            done[id(child)] = Linear.from_linear(child, precision)
        parent_name, _, leaf = name.rpartition(".")
        setattr(module.get_submodule(parent_name), leaf, done[id(child)])
    if skipped:
        warnings.warn(f"quantize_linear_: left {len(skipped)} nn.Linear layer(s) unquantized, in_features not a "
                      f"multiple of {K_MULTIPLE}: {', '.join(skipped)}", stacklevel=2)
    return module
