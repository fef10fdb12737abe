"""Pure-torch definitions of the quantized formats. The CUDA kernels match these bit for bit.

Every formula works in float32 on values upcast exactly from bf16/fp16, with IEEE
division and round-to-nearest-even, so the same sequence of float32 operations on the
GPU gives the same bits. Non-finite inputs have a defined result (see `quantize_int8`).
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch

INT8_MAX = 127.0
FP8_E4M3_MAX = 448.0
FP4_E2M1_MAX = 6.0
NVFP4_BLOCK = 16
# E2M1 magnitudes by code 0..7; bit 3 is the sign.
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)

PRECISIONS = ("int8", "fp8e4m3", "nvfp4")
GRANULARITIES = ("per_token", "per_block", "per_channel")
LAYOUTS = ("BNHD", "BHND")
SCALE_LAYOUTS = ("plain", "swizzled")


class QuantizedTensor(NamedTuple):
    """What `quantize` returns and `dequantize` takes.

    values: int8 / float8_e4m3fn with the input's shape, or uint8 [..., K/2] for nvfp4.
    scales: float32 (int8, fp8) or float8_e4m3fn block scales (nvfp4).
    global_scale: float32 scalar tensor (nvfp4 only), else None.
    The remaining fields record how it was made, so dequantize needs nothing else.
    """

    values: torch.Tensor
    scales: torch.Tensor
    global_scale: Optional[torch.Tensor] = None
    precision: str = "int8"
    granularity: str = "per_token"
    block_size: int = 0
    scale_layout: str = "plain"
    layout: str = "BNHD"
    shape: tuple = ()


# --------------------------------------------------------------------------- helpers

def _nan_free_abs(x: torch.Tensor) -> torch.Tensor:
    """|x| with NaN replaced by 0: a NaN never becomes the block's absmax (as fmaxf on the GPU)."""
    a = x.abs()
    return torch.where(torch.isnan(a), torch.zeros_like(a), a)


def _div(a, b) -> torch.Tensor:
    """IEEE float32 a / b on a's (or b's) device.

    Both operands are made full tensors: torch's CUDA division by a scalar multiplies by its
    reciprocal instead, which differs in the last bit, and the format must not depend on the device.
    """
    if not isinstance(a, torch.Tensor):
        a = torch.full_like(b, a)
    if not isinstance(b, torch.Tensor):
        b = torch.full_like(a, b)
    return a / b


def _recip_scale(qmax: float, amax: torch.Tensor) -> torch.Tensor:
    """qmax / amax in float32, or 0 where amax == 0 (an all-zero block quantizes to 0)."""
    inv = _div(qmax, amax)
    return torch.where(amax > 0, inv, torch.zeros_like(inv))


def _round_int8(v: torch.Tensor) -> torch.Tensor:
    """rint (half to even), NaN -> 0, saturate to [-127, 127] (cvt.rni.s32.f32 then clamp)."""
    v = torch.where(torch.isnan(v), torch.zeros_like(v), v)
    return torch.round(v).clamp_(-INT8_MAX, INT8_MAX).to(torch.int8)


def _to_e4m3(v: torch.Tensor) -> torch.Tensor:
    """Round to nearest even E4M3 with saturation to ±448 (cvt.rn.satfinite.e4m3x2.f32). NaN stays NaN."""
    return v.clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX).to(torch.float8_e4m3fn)


def _token_dim(x: torch.Tensor, layout: str) -> int:
    if x.dim() == 4:
        return 1 if layout == "BNHD" else 2
    if x.dim() == 2:
        return 0
    raise ValueError(f"per_block / per_channel need x of shape [B,S,H,D] or [B,H,S,D] (4-D) or [T,C] (2-D), got {tuple(x.shape)}")


def _to_bhsd(x: torch.Tensor, layout: str) -> torch.Tensor:
    """View a 4-D tensor as [B,H,S,D] and a 2-D one as [1,1,T,C]."""
    if x.dim() == 2:
        return x[None, None]
    return x.transpose(1, 2) if layout == "BNHD" else x


def _block_amax(xf: torch.Tensor, layout: str, block_size: int) -> torch.Tensor:
    """absmax per block of `block_size` tokens (all channels) per (b, h): [B, H, nblk] (or [nblk] for 2-D)."""
    t = _to_bhsd(xf, layout)
    B, H, S, D = t.shape
    nblk = -(-S // block_size)
    pad = nblk * block_size - S
    a = _nan_free_abs(t)
    if pad:
        a = torch.nn.functional.pad(a, (0, 0, 0, pad))
    amax = a.reshape(B, H, nblk, block_size * D).amax(dim=-1)
    return amax[0, 0] if xf.dim() == 2 else amax


def _expand_block(s: torch.Tensor, x: torch.Tensor, layout: str, block_size: int) -> torch.Tensor:
    """Broadcast per-block values [B,H,nblk] back to x's shape."""
    if x.dim() == 2:
        s = s[None, None]
    S = x.shape[_token_dim(x, layout)]
    e = s.repeat_interleave(block_size, dim=-1)[..., :S]  # [B,H,S]
    e = e.unsqueeze(-1)  # [B,H,S,1]
    if x.dim() == 2:
        return e[0, 0]
    return e.transpose(1, 2) if layout == "BNHD" else e


def _channel_amax(xf: torch.Tensor, layout: str) -> torch.Tensor:
    """absmax over tokens per (b, h, channel): [B, H, D] (or [C] for 2-D)."""
    t = _to_bhsd(xf, layout)
    amax = _nan_free_abs(t).amax(dim=2)
    return amax[0, 0] if xf.dim() == 2 else amax


def _expand_channel(s: torch.Tensor, x: torch.Tensor, layout: str) -> torch.Tensor:
    if x.dim() == 2:
        return s[None, :]
    s = s.unsqueeze(2)  # [B,H,1,D]
    return s.transpose(1, 2) if layout == "BNHD" else s


def _scales_and_expand(xf, granularity, layout, block_size, qmax):
    """(scales, inv_expanded): scale = amax / qmax; inv = qmax / amax broadcast to x."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if granularity in ("per_block", "per_channel"):
        _token_dim(xf, layout)  # raises for anything but 4-D [B,S,H,D] / [B,H,S,D] or 2-D [T,C]
    if granularity == "per_token":
        amax = _nan_free_abs(xf).amax(dim=-1) if xf.shape[-1] else torch.zeros(xf.shape[:-1], device=xf.device)
        inv = _recip_scale(qmax, amax).unsqueeze(-1)
    elif granularity == "per_block":
        if block_size <= 0:
            raise ValueError(f"per_block needs block_size > 0, got {block_size}")
        amax = _block_amax(xf, layout, block_size)
        inv = _expand_block(_recip_scale(qmax, amax), xf, layout, block_size)
    elif granularity == "per_channel":
        amax = _channel_amax(xf, layout)
        inv = _expand_channel(_recip_scale(qmax, amax), xf, layout)
    else:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    return _div(amax, qmax), inv


def _check_float_input(x: torch.Tensor, name: str = "x") -> None:
    if x.dtype not in (torch.bfloat16, torch.float16, torch.float32):
        raise TypeError(f"{name} must be bfloat16, float16 or float32, got {x.dtype}")
    if x.dim() < 1:
        raise ValueError(f"{name} must have at least one dimension")


# --------------------------------------------------------------------------- INT8 / FP8

def quantize_int8(x: torch.Tensor, granularity: str = "per_token", block_size: int = 0,
                  layout: str = "BNHD") -> QuantizedTensor:
    """Symmetric INT8.

    For each group G (a row for per_token; `block_size` tokens × all channels of one head
    for per_block; all tokens of one (b, h, channel) for per_channel), in float32:
        amax  = max_{i in G} |x_i|          (NaN ignored)
        scale = amax / 127                  (the stored scale; 0 for an all-zero group)
        inv   = 127 / amax  (0 if amax == 0)
        q_i   = clamp(rint(x_i * inv), -127, 127)   (rint = half to even; NaN -> 0)
    Dequantized: x_i ≈ q_i * scale. An Inf in the group makes scale = inf and inv = 0,
    so the group's values become 0 (and dequantize to NaN, which marks the group).
    Scales: per_token x.shape[:-1]; per_block [B, H, ceil(S/block_size)]; per_channel [B, H, D];
    for 2-D [T, C] input per_block gives [ceil(T/block_size)] and per_channel [C].
    """
    _check_float_input(x)
    xf = x.float()
    scale, inv = _scales_and_expand(xf, granularity, layout, block_size, INT8_MAX)
    q = _round_int8(xf * inv)
    return QuantizedTensor(q, scale, None, "int8", granularity, block_size, "plain", layout, tuple(x.shape))


def quantize_fp8(x: torch.Tensor, granularity: str = "per_token", block_size: int = 0,
                 layout: str = "BNHD") -> QuantizedTensor:
    """FP8 E4M3 (float8_e4m3fn), same groups as `quantize_int8`:
        scale = amax / 448;  inv = 448 / amax (0 if amax == 0)
        q_i   = e4m3_rn_satfinite(x_i * inv)    (round to nearest even, saturate to ±448; NaN stays NaN)
    """
    _check_float_input(x)
    xf = x.float()
    scale, inv = _scales_and_expand(xf, granularity, layout, block_size, FP8_E4M3_MAX)
    q = _to_e4m3(xf * inv)
    return QuantizedTensor(q, scale, None, "fp8e4m3", granularity, block_size, "plain", layout, tuple(x.shape))


# --------------------------------------------------------------------------- NVFP4

def e2m1_encode(v: torch.Tensor) -> torch.Tensor:
    """float32 -> 4-bit E2M1 code (uint8 0..15), round to nearest even, saturate to ±6.

    Ties go to the even code: 0.25->0, 0.75->1, 1.25->1, 1.75->2, 2.5->2, 3.5->4, 5->4.
    The sign bit (8) is set for v < 0 (so -0.1 gives code 8, "-0"). NaN gives code 0.
    """
    a = v.abs()
    code = ((a > 0.25).to(torch.uint8) + (a >= 0.75).to(torch.uint8) + (a > 1.25).to(torch.uint8)
            + (a >= 1.75).to(torch.uint8) + (a > 2.5).to(torch.uint8) + (a >= 3.5).to(torch.uint8)
            + (a > 5.0).to(torch.uint8))
    return code | ((v < 0).to(torch.uint8) << 3)


def e2m1_decode(code: torch.Tensor) -> torch.Tensor:
    """4-bit E2M1 code -> float32."""
    lut = torch.tensor(E2M1_VALUES, dtype=torch.float32, device=code.device)
    mag = lut[(code & 7).long()]
    return torch.where((code & 8) != 0, -mag, mag)


def pack_fp4(codes: torch.Tensor) -> torch.Tensor:
    """[..., K] codes -> [..., K/2] bytes, the even element in the low nibble."""
    return codes[..., 0::2] | (codes[..., 1::2] << 4)


def unpack_fp4(packed: torch.Tensor) -> torch.Tensor:
    """[..., K/2] bytes -> [..., K] codes."""
    lo = packed & 0xF
    hi = packed >> 4
    return torch.stack([lo, hi], dim=-1).flatten(-2)


def swizzled_scale_shape(rows: int, cols: int) -> tuple:
    """Shape of the 128x4 swizzled block-scale tensor for a [rows, cols] scale matrix."""
    return (-(-rows // 128) * 128, -(-cols // 4) * 4)


def swizzle_scales_128x4(s: torch.Tensor) -> torch.Tensor:
    """[M, C] block scales -> the 128x4 tiled layout read by Blackwell block-scaled GEMMs.

    M is padded to a multiple of 128 and C to a multiple of 4 with zeros. Tiles of 128 rows ×
    4 columns are stored one after another, row-tile major (tile (mt, ct) at offset
    (mt * ceil(C/4) + ct) * 512). Inside a tile, scale (r, c) sits at byte
    (r % 32) * 16 + (r // 32) * 4 + c. Returned as a contiguous [Mpad, Cpad] tensor whose
    memory is in that order (as cuBLASLt / torch._scaled_mm expect).
    """
    M, C = s.shape
    Mp, Cp = swizzled_scale_shape(M, C)
    p = torch.zeros((Mp, Cp), dtype=s.dtype, device=s.device)
    p[:M, :C] = s
    t = p.view(torch.uint8).reshape(Mp // 128, 4, 32, Cp // 4, 4)  # mt, r//32, r%32, ct, c
    t = t.permute(0, 3, 2, 1, 4).contiguous()  # mt, ct, r%32, r//32, c
    return t.reshape(Mp, Cp).view(s.dtype)


def unswizzle_scales_128x4(sw: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Inverse of `swizzle_scales_128x4`: back to [rows, cols]."""
    Mp, Cp = swizzled_scale_shape(rows, cols)
    t = sw.contiguous().view(torch.uint8).reshape(Mp // 128, Cp // 4, 32, 4, 4)
    t = t.permute(0, 3, 2, 1, 4).contiguous().reshape(Mp, Cp)
    return t[:rows, :cols].view(sw.dtype)


def nvfp4_global_scale(x: torch.Tensor) -> torch.Tensor:
    """The FP32 global (decode) scale: amax(|x|) / (448 * 6), NaN ignored. A float32 scalar tensor."""
    amax = _nan_free_abs(x.float()).amax() if x.numel() else torch.zeros((), device=x.device)
    return _div(amax, FP8_E4M3_MAX * FP4_E2M1_MAX)


def quantize_nvfp4(x: torch.Tensor, scale_layout: str = "plain",
                   global_scale: Optional[torch.Tensor] = None) -> QuantizedTensor:
    """NVFP4: E2M1 values in blocks of 16 along the last dim, E4M3 block scales, FP32 global scale.

    In float32, with amax_t = max |x| over the whole tensor (NaN ignored):
        gs     = amax_t / 2688                       (stored global_scale; 2688 = 448 * 6)
        inv_gs = 2688 / amax_t   (0 if amax_t == 0)
      (or, if `global_scale` is given: gs = global_scale, inv_gs = 1 / gs (0 if gs == 0))
    per block b of 16 along the last dim:
        sf_b   = e4m3_rn_satfinite((amax_b * inv_gs) / 6)      (stored block scale)
        enc_b  = float(sf_b) * gs
        inv_b  = 1 / enc_b       (0 if enc_b == 0)
        code_i = e2m1_encode(x_i * inv_b)
    values: uint8 [..., K/2], two codes a byte, the even element in the low nibble.
    scales: float8_e4m3fn [..., K/16] (plain) or the 128x4 swizzled layout over the
    [prod(leading dims), K/16] scale matrix (see `swizzle_scales_128x4`).
    Dequantized: x_i ≈ e2m1_decode(code_i) * float(sf_b) * gs. K must be a multiple of 16.
    """
    _check_float_input(x)
    if scale_layout not in SCALE_LAYOUTS:
        raise ValueError(f"scale_layout must be one of {SCALE_LAYOUTS}, got {scale_layout!r}")
    K = x.shape[-1]
    if K % NVFP4_BLOCK:
        raise ValueError(f"nvfp4 needs the last dim to be a multiple of 16, got {K}")
    xf = x.float()
    if global_scale is None:
        amax_t = _nan_free_abs(xf).amax() if xf.numel() else torch.zeros((), device=xf.device)
        gs = _div(amax_t, FP8_E4M3_MAX * FP4_E2M1_MAX)
        inv_gs = _recip_scale(FP8_E4M3_MAX * FP4_E2M1_MAX, amax_t)
    else:
        gs = global_scale.float().reshape(())
        inv_gs = _recip_scale(1.0, gs)
    blocks = xf.reshape(*xf.shape[:-1], K // NVFP4_BLOCK, NVFP4_BLOCK)
    bamax = _nan_free_abs(blocks).amax(dim=-1) if blocks.numel() else torch.zeros(blocks.shape[:-1], device=xf.device)
    sf = _to_e4m3(_div(bamax * inv_gs, FP4_E2M1_MAX))
    enc = sf.float() * gs
    inv_b = _recip_scale(1.0, enc)
    codes = e2m1_encode(blocks * inv_b.unsqueeze(-1)).reshape(xf.shape)
    values = pack_fp4(codes)
    if scale_layout == "swizzled":
        sf = swizzle_scales_128x4(sf.reshape(-1, K // NVFP4_BLOCK))
    return QuantizedTensor(values, sf, gs, "nvfp4", "per_block", NVFP4_BLOCK, scale_layout, "BNHD", tuple(x.shape))


# --------------------------------------------------------------------------- dequantize

def dequantize(q: QuantizedTensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Inverse of the quantizers above (up to the quantization error): values × scales."""
    if q.precision == "nvfp4":
        K = q.shape[-1]
        lead = q.shape[:-1]
        sf = q.scales
        if q.scale_layout == "swizzled":
            rows = 1
            for d in lead:
                rows *= d
            sf = unswizzle_scales_128x4(sf, rows, K // NVFP4_BLOCK)
        sf = sf.float().reshape(*lead, K // NVFP4_BLOCK, 1)
        vals = e2m1_decode(unpack_fp4(q.values)).reshape(*lead, K // NVFP4_BLOCK, NVFP4_BLOCK)
        return (vals * sf * q.global_scale.float()).reshape(q.shape).to(dtype)
    v = q.values.float()
    if q.granularity == "per_token":
        s = q.scales.unsqueeze(-1)
    elif q.granularity == "per_block":
        s = _expand_block(q.scales, v, q.layout, q.block_size)
    elif q.granularity == "per_channel":
        s = _expand_channel(q.scales, v, q.layout)
    else:
        raise ValueError(f"unknown granularity {q.granularity!r}")
    return (v * s).to(dtype)


def quantize(x: torch.Tensor, precision: str, granularity: str = "per_token", block_size: int = 0,
             scale_layout: str = "plain", layout: str = "BNHD") -> QuantizedTensor:
    """Reference of `ac4k_kernel.quantize`: picks the quantizer by precision."""
    if precision == "int8":
        return quantize_int8(x, granularity, block_size, layout)
    if precision == "fp8e4m3":
        return quantize_fp8(x, granularity, block_size, layout)
    if precision == "nvfp4":
        return quantize_nvfp4(x, scale_layout)
    raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
