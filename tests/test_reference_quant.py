"""CPU tests of the quantized-format reference (ac4k_kernel.reference.quant).

That module is the spec the CUDA kernels must match bit for bit, so the expected values here are
worked out by hand (or by an independent computation), never by calling the function under test.
"""
import math

import pytest
import torch

from ac4k_kernel.reference import quant as Q
from ac4k_kernel.reference.quant import (
    E2M1_VALUES,
    QuantizedTensor,
    dequantize,
    e2m1_decode,
    e2m1_encode,
    nvfp4_global_scale,
    pack_fp4,
    quantize,
    quantize_fp8,
    quantize_int8,
    quantize_nvfp4,
    swizzle_scales_128x4,
    swizzled_scale_shape,
    unpack_fp4,
    unswizzle_scales_128x4,
)

NAN = float("nan")
INF = float("inf")


def f32(*vals):
    return torch.tensor(vals, dtype=torch.float32)


def rel_err(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def fp8_bits(t):
    return t.view(torch.uint8)


# ============================================================================ INT8

def test_int8_known_row_scale_one():
    # amax 127 -> scale 1, inv 1: codes are rint(x); 0.5 -> 0 and 63.5 -> 64 (half to even)
    q = quantize_int8(f32(127, 1, -2, 0.5, 63.5)[None])
    assert q.values.dtype == torch.int8
    assert q.values.tolist() == [[127, 1, -2, 0, 64]]
    assert q.scales.dtype == torch.float32
    assert q.scales.tolist() == [1.0]


def test_int8_known_row_scale_two_ties_to_even():
    # amax 254 -> scale 2, inv 0.5 exactly: 1 -> 0.5 -> 0, -3 -> -1.5 -> -2, 5 -> 2.5 -> 2, 7 -> 3.5 -> 4
    q = quantize_int8(f32(254, 1, -3, 5, 7, -254, -1)[None])
    assert q.values.tolist() == [[127, 0, -2, 2, 4, -127, 0]]
    assert q.scales.tolist() == [2.0]


def test_int8_ties_many():
    # scale 1 (amax 127): every k + 0.5 must round to the even neighbour
    halves = [k + 0.5 for k in range(-10, 10)]
    q = quantize_int8(f32(127, *halves)[None])
    # independent half-to-even: of the two neighbours of k + 0.5, the even one
    expected = [127] + [int(math.floor(h)) if math.floor(h) % 2 == 0 else int(math.ceil(h)) for h in halves]
    assert q.values[0].tolist() == expected


def test_int8_scale_is_amax_over_127_in_float32():
    x = f32(3.0, -1.0, 0.25)
    q = quantize_int8(x[None])
    assert q.scales.item() == (torch.tensor(3.0) / torch.tensor(127.0)).item()
    # inv = 127/3 in float32 -> 1 * inv = 42.33 -> 42 ; 0.25 * inv = 10.58 -> 11
    assert q.values.tolist() == [[127, -42, 11]]


def test_int8_saturation_and_rounding_helper():
    v = f32(200, -1000, 127.4, 127.5, -127.5, 126.5, -0.5, INF, -INF, NAN)
    assert Q._round_int8(v).tolist() == [127, -127, 127, 127, -127, 126, 0, 127, -127, 0]


def test_int8_never_minus_128():
    x = torch.randn(64, 257, generator=torch.Generator().manual_seed(0))
    q = quantize_int8(x)
    assert q.values.min().item() >= -127
    assert q.values.max().item() <= 127
    # the absmax element of each row maps to +-127
    idx = x.abs().argmax(dim=-1)
    picked = q.values.gather(-1, idx[:, None])[:, 0]
    assert (picked.abs() == 127).all()


def test_int8_all_zero_row():
    x = torch.zeros(3, 8)
    x[1] = f32(1, 2, 3, 4, 5, 6, 7, 8)
    q = quantize_int8(x)
    assert q.scales[0].item() == 0.0 and q.scales[2].item() == 0.0
    assert (q.values[0] == 0).all() and (q.values[2] == 0).all()
    assert q.scales[1].item() == pytest.approx(8 / 127)
    assert not torch.isnan(dequantize(q)).any()
    assert (dequantize(q)[0] == 0).all()


def test_int8_nan_ignored_for_amax_and_quantizes_to_zero():
    # amax 4 (NaN ignored), inv = 127/4 = 31.75 exactly; 2 * 31.75 = 63.5 -> 64 (even)
    q = quantize_int8(f32(NAN, 2, -4, 1)[None])
    assert q.scales.item() == pytest.approx(4 / 127, rel=1e-7)
    assert q.values.tolist() == [[0, 64, -127, 32]]  # 1 * 31.75 = 31.75 -> 32


def test_int8_all_nan_row():
    q = quantize_int8(torch.full((1, 5), NAN))
    assert q.scales.item() == 0.0
    assert (q.values == 0).all()


def test_int8_inf_row():
    x = torch.stack([f32(1, INF, -2, 3), f32(1, 2, 3, 4)])
    q = quantize_int8(x)
    assert q.scales[0].item() == INF
    assert (q.values[0] == 0).all()
    assert q.values[1].tolist() == [32, 64, 95, 127]  # 31.75, 63.5, 95.25, 127 -> rint
    dq = dequantize(q)
    assert torch.isnan(dq[0]).all()  # 0 * inf marks the group
    assert torch.isfinite(dq[1]).all()


def test_int8_neg_inf_row():
    q = quantize_int8(f32(-INF, 5, 0)[None])
    assert q.scales.item() == INF
    assert (q.values == 0).all()


# ============================================================================ FP8 E4M3

def test_fp8_known_values():
    # amax 448 -> inv 1: 17 ties between 16 (mantissa 000) and 18 (001) -> 16; 19 -> 20;
    # 0.3 -> 0.3125 (spacing 1/32 in [0.25, 0.5)); 2^-10 ties between 0 and the least subnormal 2^-9 -> 0
    x = f32(448, 1, -17, 19, 0.3, 2.0 ** -10, 3 * 2.0 ** -10)
    q = quantize_fp8(x[None])
    assert q.values.dtype == torch.float8_e4m3fn
    assert q.scales.tolist() == [1.0]
    assert q.values.float()[0].tolist() == [448, 1, -16, 20, 0.3125, 0.0, 2 * 2.0 ** -9]


def test_fp8_scale_is_amax_over_448():
    q = quantize_fp8(f32(-896, 2, 0)[None])
    assert q.scales.tolist() == [2.0]
    assert q.values.float().tolist() == [[-448, 1, 0]]


def test_fp8_matches_torch_cast_of_scaled_input():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 96, generator=g) * torch.logspace(-3, 3, 16)[:, None]
    q = quantize_fp8(x)
    amax = x.abs().amax(dim=-1, keepdim=True)
    inv = torch.tensor(448.0) / amax
    expected = (x * inv).clamp(-448.0, 448.0).to(torch.float8_e4m3fn)
    assert torch.equal(fp8_bits(q.values), fp8_bits(expected))
    assert torch.equal(q.scales, (amax / 448.0)[:, 0])


def test_fp8_saturation_helper():
    v = f32(1000, -1e6, 448, 464, INF, -INF, NAN)
    out = Q._to_e4m3(v).float()
    assert out[:6].tolist() == [448, -448, 448, 448, 448, -448]
    assert torch.isnan(out[6])


def test_fp8_nan_ignored_for_amax_and_stays_nan():
    q = quantize_fp8(f32(NAN, 2, -4)[None])
    assert q.scales.item() == pytest.approx(4 / 448, rel=1e-7)
    v = q.values.float()[0]
    assert torch.isnan(v[0])
    assert v[1:].tolist() == [224, -448]


def test_fp8_all_zero_and_inf_rows():
    x = torch.stack([torch.zeros(4), f32(1, INF, -2, 3)])
    q = quantize_fp8(x)
    assert q.scales[0].item() == 0.0
    assert q.values.float()[0].tolist() == [0, 0, 0, 0]
    assert q.scales[1].item() == INF
    v = q.values.float()[1]
    # inv = 0: finite elements -> 0, inf * 0 = NaN -> NaN
    assert v[[0, 2, 3]].tolist() == [0, 0, 0]
    assert torch.isnan(v[1])


def test_fp8_keeps_negative_zero_sign():
    q = quantize_fp8(f32(4, -0.0, -1e-9)[None])
    bits = fp8_bits(q.values)[0].tolist()
    assert bits[1] == 0x80 and bits[2] == 0x80


# ============================================================================ E2M1

@pytest.mark.parametrize("v, code", [
    (0.0, 0), (0.25, 0), (0.75, 2), (1.25, 2), (1.75, 4), (2.5, 4), (3.5, 6), (5.0, 6),
    (0.5, 1), (1.0, 2), (1.5, 3), (2.0, 4), (3.0, 5), (4.0, 6), (6.0, 7),
    (7.0, 7), (100.0, 7), (INF, 7),
    (-0.25, 8), (-0.75, 10), (-1.25, 10), (-1.75, 12), (-2.5, 12), (-3.5, 14), (-5.0, 14),
    (-6.0, 15), (-7.0, 15), (-INF, 15), (-0.1, 8), (NAN, 0),
])
def test_e2m1_encode_ties_and_saturation(v, code):
    assert e2m1_encode(f32(v)).tolist() == [code]


def test_e2m1_encode_just_off_every_tie():
    # one float32 ulp either side of each midpoint must go to the nearer neighbour
    mids = [(0.25, 0, 1), (0.75, 1, 2), (1.25, 2, 3), (1.75, 3, 4), (2.5, 4, 5), (3.5, 5, 6), (5.0, 6, 7)]
    for m, lo, hi in mids:
        below = torch.nextafter(f32(m), f32(0))
        above = torch.nextafter(f32(m), f32(100))
        assert e2m1_encode(below).item() == lo, m
        assert e2m1_encode(above).item() == hi, m
        assert e2m1_encode(-above).item() == hi | 8, m


def test_e2m1_encode_dtype_and_range():
    c = e2m1_encode(torch.linspace(-10, 10, 1001))
    assert c.dtype == torch.uint8
    assert int(c.max()) <= 15


def test_e2m1_decode_encode_roundtrip_all_16():
    vals = list(E2M1_VALUES) + [-v for v in E2M1_VALUES]
    t = f32(*vals)
    assert e2m1_decode(e2m1_encode(t)).tolist() == vals
    codes = torch.arange(16, dtype=torch.uint8)
    dec = e2m1_decode(codes)
    assert dec.tolist() == [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]
    # re-encoding the decoded codes gives the codes back (except -0 -> +0)
    re = e2m1_encode(dec)
    assert re[1:8].tolist() == list(range(1, 8)) and re[9:].tolist() == list(range(9, 16))


def test_pack_fp4_low_nibble_is_even_element():
    codes = torch.tensor([[1, 2, 0xF, 0x3, 0, 9]], dtype=torch.uint8)
    packed = pack_fp4(codes)
    assert packed.dtype == torch.uint8
    assert packed.tolist() == [[0x21, 0x3F, 0x90]]
    assert torch.equal(unpack_fp4(packed), codes)


def test_pack_unpack_random_roundtrip():
    codes = torch.randint(0, 16, (5, 3, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    p = pack_fp4(codes)
    assert p.shape == (5, 3, 32)
    assert torch.equal(unpack_fp4(p), codes)
    assert torch.equal(p & 0xF, codes[..., 0::2])


# ============================================================================ 128x4 swizzle

def _swizzle_offset(r, c, C):
    mt, ct = r // 128, c // 4
    rr, cc = r % 128, c % 4
    return (mt * (-(-C // 4)) + ct) * 512 + (rr % 32) * 16 + (rr // 32) * 4 + cc


def test_swizzled_scale_shape():
    assert swizzled_scale_shape(200, 7) == (256, 8)
    assert swizzled_scale_shape(128, 4) == (128, 4)
    assert swizzled_scale_shape(1, 1) == (128, 4)
    assert swizzled_scale_shape(129, 5) == (256, 8)


def test_swizzle_128x4_concrete_positions_odd_shape():
    M, C = 200, 7
    s = torch.randint(1, 256, (M, C), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    sw = swizzle_scales_128x4(s)
    assert sw.shape == (256, 8) and sw.dtype == torch.uint8 and sw.is_contiguous()
    flat = sw.flatten()
    # hand-computed spots
    assert flat[0].item() == s[0, 0].item()
    assert flat[1].item() == s[0, 1].item()
    assert flat[4].item() == s[32, 0].item()            # (r//32)*4
    assert flat[16].item() == s[1, 0].item()            # (r%32)*16
    assert flat[512].item() == s[0, 4].item()           # next column tile
    assert flat[1024].item() == s[128, 0].item()        # next row tile: (1*2+0)*512
    # r=199 -> tile row 1, rr=71 -> (7*16 + 2*4); c=6 -> tile col 1, cc=2
    assert flat[(1 * 2 + 1) * 512 + 7 * 16 + 2 * 4 + 2].item() == s[199, 6].item()
    # every element by the formula, and zeros everywhere else (the padding)
    expected = torch.zeros(256 * 8, dtype=torch.uint8)
    for r in range(M):
        for c in range(C):
            expected[_swizzle_offset(r, c, C)] = s[r, c]
    assert torch.equal(flat, expected)
    assert int((flat != 0).sum()) == M * C


def test_unswizzle_inverts_swizzle():
    for M, C in [(200, 7), (128, 4), (1, 1), (300, 9)]:
        s = torch.randint(0, 256, (M, C), dtype=torch.uint8, generator=torch.Generator().manual_seed(M * C))
        sw = swizzle_scales_128x4(s)
        assert torch.equal(unswizzle_scales_128x4(sw, M, C), s)


def test_swizzle_keeps_fp8_dtype():
    s = (torch.rand(130, 5, generator=torch.Generator().manual_seed(4)) * 100).to(torch.float8_e4m3fn)
    sw = swizzle_scales_128x4(s)
    assert sw.dtype == torch.float8_e4m3fn and sw.shape == (256, 8)
    assert sw.view(torch.uint8).flatten()[_swizzle_offset(129, 4, 5)].item() == s.view(torch.uint8)[129, 4].item()
    assert torch.equal(unswizzle_scales_128x4(sw, 130, 5).view(torch.uint8), s.view(torch.uint8))


# ============================================================================ NVFP4

def test_nvfp4_global_scale():
    x = f32(1, -2688 * 3, NAN, 5)
    assert nvfp4_global_scale(x).item() == 3.0
    assert nvfp4_global_scale(f32(0, 0)).item() == 0.0
    assert nvfp4_global_scale(torch.zeros(0)).item() == 0.0
    y = torch.randn(4, 32)
    assert nvfp4_global_scale(y).item() == (y.abs().max() / torch.tensor(2688.0)).item()


def test_nvfp4_known_values():
    # amax over the tensor = 2688 -> gs = 1, inv_gs = 1 exactly.
    # block 0: amax 2688 -> sf = e4m3(2688/6 = 448) = 448.
    # block 1: amax 24 -> sf = 4, inv_b = 0.25: 24 -> 6 (7), 10 -> 2.5 tie -> 2 (4), -14 -> -3.5 tie -> -4 (14),
    #          1 -> 0.25 tie -> 0 (0), 3 -> 0.75 tie -> 1 (2), 6 -> 1.5 (3), -2 -> -0.5 (9), rest 0.
    b0 = [2688.0] + [0.0] * 15
    b1 = [24.0, 10.0, -14.0, 1.0, 3.0, 6.0, -2.0] + [0.0] * 9
    x = f32(*(b0 + b1))[None]
    q = quantize_nvfp4(x)
    assert q.global_scale.dtype == torch.float32 and q.global_scale.item() == 1.0
    assert q.scales.dtype == torch.float8_e4m3fn and q.scales.shape == (1, 2)
    assert q.scales.float().tolist() == [[448.0, 4.0]]
    assert q.values.dtype == torch.uint8 and q.values.shape == (1, 16)
    codes = unpack_fp4(q.values)[0].tolist()
    assert codes[:16] == [7] + [0] * 15
    assert codes[16:] == [7, 4, 14, 0, 2, 3, 9] + [0] * 9
    # bytes: even element low nibble -> block 1 first byte = 0x47
    assert q.values[0, 8].item() == 0x47
    dq = dequantize(q)
    assert dq[0, 16:23].tolist() == [24.0, 8.0, -16.0, 0.0, 4.0, 6.0, -2.0]


def test_nvfp4_given_global_scale():
    # gs = 2 -> inv_gs = 0.5; block amax 24 -> sf = e4m3(24 * 0.5 / 6) = 2 -> enc = 4 -> same codes as above
    b1 = [24.0, 10.0, -14.0, 1.0, 3.0, 6.0, -2.0] + [0.0] * 9
    q = quantize_nvfp4(f32(*b1)[None], global_scale=torch.tensor(2.0))
    assert q.global_scale.item() == 2.0
    assert q.scales.float().tolist() == [[2.0]]
    assert unpack_fp4(q.values)[0].tolist() == [7, 4, 14, 0, 2, 3, 9] + [0] * 9


def _e2m1_nearest_even(v: float) -> int:
    """Independent E2M1 encoder: nearest grid value, ties to the even code, saturate, sign bit."""
    if v != v:
        return 0
    a = min(abs(v), 6.0)
    best = min(range(8), key=lambda c: (abs(E2M1_VALUES[c] - a), c % 2))
    return best | (8 if v < 0 else 0)


def test_nvfp4_matches_formula_on_random():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(64, 64, generator=g) * torch.logspace(-2, 2, 64)[:, None]
    q = quantize_nvfp4(x)
    amax_t = x.abs().max()
    gs = amax_t / torch.tensor(2688.0)
    assert q.global_scale.item() == gs.item()
    inv_gs = torch.tensor(2688.0) / amax_t
    bamax = x.reshape(64, 4, 16).abs().amax(dim=-1)
    sf = ((bamax * inv_gs) / torch.tensor(6.0)).to(torch.float8_e4m3fn)
    assert torch.equal(q.scales.view(torch.uint8), sf.view(torch.uint8))
    inv_b = torch.tensor(1.0) / (sf.float() * gs)
    scaled = (x.reshape(64, 4, 16) * inv_b[..., None]).reshape(64, 64)
    expected = [[_e2m1_nearest_even(v) for v in row] for row in scaled.tolist()]
    assert unpack_fp4(q.values).tolist() == expected


def test_nvfp4_zero_tensor_and_zero_block():
    q = quantize_nvfp4(torch.zeros(2, 32))
    assert q.global_scale.item() == 0.0
    assert (q.values == 0).all() and (q.scales.float() == 0).all()
    assert (dequantize(q) == 0).all()
    x = torch.zeros(1, 32)
    x[0, 20] = 3.0
    q = quantize_nvfp4(x)
    assert q.scales.float()[0, 0].item() == 0.0
    assert (unpack_fp4(q.values)[0, :16] == 0).all()


def test_nvfp4_nan_ignored_for_amax():
    x = torch.zeros(1, 16)
    x[0, 0] = NAN
    x[0, 1] = 2688.0
    q = quantize_nvfp4(x)
    assert q.global_scale.item() == 1.0
    assert unpack_fp4(q.values)[0, 0].item() == 0  # NaN -> code 0
    assert unpack_fp4(q.values)[0, 1].item() == 7


def test_nvfp4_swizzled_scales():
    x = torch.randn(3, 50, 64, generator=torch.Generator().manual_seed(5))
    plain = quantize_nvfp4(x)
    sw = quantize_nvfp4(x, scale_layout="swizzled")
    assert plain.scales.shape == (3, 50, 4)
    assert sw.scales.shape == (256, 4) and sw.scale_layout == "swizzled"
    assert torch.equal(sw.values, plain.values)
    back = unswizzle_scales_128x4(sw.scales, 150, 4)
    assert torch.equal(back.view(torch.uint8), plain.scales.reshape(150, 4).view(torch.uint8))
    assert torch.equal(dequantize(sw), dequantize(plain))


# ============================================================================ round trips

def _randn(shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# Worst relative L2 error measured on randn over 5 seeds, then loosened:
#   int8: per_token 0.0060, per_block 0.0088, per_channel 0.0065 ; fp8: 0.0265 ; nvfp4: 0.0957
BOUND = {("int8", "per_token"): 1e-2, ("int8", "per_block"): 1.5e-2, ("int8", "per_channel"): 1.5e-2,
         ("fp8e4m3", "per_token"): 4e-2, ("fp8e4m3", "per_block"): 4e-2, ("fp8e4m3", "per_channel"): 4e-2}


@pytest.mark.parametrize("precision", ["int8", "fp8e4m3"])
@pytest.mark.parametrize("granularity", ["per_token", "per_block", "per_channel"])
@pytest.mark.parametrize("layout", ["BNHD", "BHND"])
def test_roundtrip_error(precision, granularity, layout):
    x = _randn((2, 130, 3, 64), 10)
    if layout == "BHND":
        x = x.transpose(1, 2).contiguous()  # [2, 3, 130, 64]
    bs = 64 if granularity == "per_block" else 0
    q = quantize(x, precision, granularity, bs, layout=layout)
    assert q.values.shape == x.shape
    expected_scale_shape = {"per_token": tuple(x.shape[:-1]), "per_block": (2, 3, 3), "per_channel": (2, 3, 64)}
    assert tuple(q.scales.shape) == expected_scale_shape[granularity]
    dq = dequantize(q)
    assert dq.shape == x.shape and dq.dtype == torch.float32
    err = rel_err(dq, x)
    assert 0 < err < BOUND[(precision, granularity)]
    assert dequantize(q, torch.bfloat16).dtype == torch.bfloat16


def test_roundtrip_nvfp4():
    x = _randn((4, 37, 128), 11)
    for layout in ("plain", "swizzled"):
        q = quantize(x, "nvfp4", scale_layout=layout)
        err = rel_err(dequantize(q), x)
        assert 0 < err < 0.12


def test_per_block_layouts_agree():
    x = _randn((2, 130, 3, 64), 12)
    a = quantize_int8(x, "per_block", 64, "BNHD")
    b = quantize_int8(x.transpose(1, 2).contiguous(), "per_block", 64, "BHND")
    assert torch.equal(a.scales, b.scales)
    assert torch.equal(a.values, b.values.transpose(1, 2))


def _per_block_by_rows(x_bhsd, bs, fn):
    """Independent per_block: pad S with zeros, make each block one row, quantize per_token."""
    B, H, S, D = x_bhsd.shape
    nblk = -(-S // bs)
    padded = torch.zeros(B, H, nblk * bs, D)
    padded[:, :, :S] = x_bhsd
    q = fn(padded.reshape(B, H, nblk, bs * D), "per_token")
    vals = q.values.reshape(B, H, nblk * bs, D)[:, :, :S]
    return vals, q.scales


@pytest.mark.parametrize("fn", [quantize_int8, quantize_fp8])
@pytest.mark.parametrize("layout", ["BNHD", "BHND"])
def test_per_block_equals_per_token_on_reshaped_blocks(fn, layout):
    x_bhsd = _randn((2, 3, 130, 64), 13)
    x = x_bhsd.transpose(1, 2).contiguous() if layout == "BNHD" else x_bhsd
    q = fn(x, "per_block", 64, layout)
    vals, scales = _per_block_by_rows(x_bhsd, 64, fn)
    assert q.scales.shape == (2, 3, 3)
    assert torch.equal(q.scales, scales)
    got = q.values.transpose(1, 2) if layout == "BNHD" else q.values
    assert torch.equal(got.view(torch.uint8) if got.dtype != torch.int8 else got,
                       vals.view(torch.uint8) if vals.dtype != torch.int8 else vals)


def test_per_block_ragged_last_block_scale():
    x_bhsd = _randn((1, 2, 130, 8), 14)
    x_bhsd[0, 1, 128:] *= 100  # the 2-token last block of head 1 has its own (large) amax
    q = quantize_int8(x_bhsd, "per_block", 64, "BHND")
    for h in range(2):
        for j in range(3):
            blk = x_bhsd[0, h, j * 64:(j + 1) * 64]
            assert q.scales[0, h, j].item() == (blk.abs().max() / torch.tensor(127.0)).item()


def test_per_channel_manual():
    x = _randn((2, 50, 3, 16), 15)  # BNHD
    q = quantize_int8(x, "per_channel", layout="BNHD")
    assert q.scales.shape == (2, 3, 16)
    for b in range(2):
        for h in range(3):
            amax = x[b, :, h, :].abs().amax(dim=0)
            assert torch.equal(q.scales[b, h], amax / torch.tensor(127.0))
            inv = torch.tensor(127.0) / amax
            assert torch.equal(q.values[b, :, h, :], torch.round(x[b, :, h, :] * inv).to(torch.int8))


def test_2d_per_block_and_per_channel():
    x = _randn((100, 24), 16)
    qb = quantize_int8(x, "per_block", 32)
    assert qb.scales.shape == (4,)
    assert qb.scales[3].item() == (x[96:].abs().max() / torch.tensor(127.0)).item()
    qc = quantize_fp8(x, "per_channel")
    assert qc.scales.shape == (24,)
    assert torch.equal(qc.scales, x.abs().amax(dim=0) / torch.tensor(448.0))
    assert rel_err(dequantize(qb), x) < 1.5e-2
    assert rel_err(dequantize(qc), x) < 4e-2


# ============================================================================ fields, dtypes, errors

def test_quantized_tensor_fields():
    x = _randn((2, 70, 3, 32), 17)
    q = quantize(x, "fp8e4m3", "per_block", 32, layout="BNHD")
    assert isinstance(q, QuantizedTensor)
    assert (q.precision, q.granularity, q.block_size, q.scale_layout, q.layout, q.shape) == \
        ("fp8e4m3", "per_block", 32, "plain", "BNHD", (2, 70, 3, 32))
    assert q.global_scale is None
    qn = quantize(x, "nvfp4", scale_layout="swizzled")
    assert (qn.precision, qn.granularity, qn.block_size, qn.scale_layout, qn.shape) == \
        ("nvfp4", "per_block", 16, "swizzled", (2, 70, 3, 32))
    assert qn.global_scale is not None and qn.global_scale.dim() == 0
    assert QuantizedTensor._fields == ("values", "scales", "global_scale", "precision", "granularity",
                                       "block_size", "scale_layout", "layout", "shape")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("precision,granularity,bs", [
    ("int8", "per_token", 0), ("int8", "per_block", 64), ("int8", "per_channel", 0),
    ("fp8e4m3", "per_token", 0), ("fp8e4m3", "per_block", 64), ("fp8e4m3", "per_channel", 0),
    ("nvfp4", "per_token", 0),
])
def test_half_inputs_match_float32_upcast(dtype, precision, granularity, bs):
    x = (_randn((2, 130, 3, 64), 18) * 3).to(dtype)
    a = quantize(x, precision, granularity, bs)
    b = quantize(x.float(), precision, granularity, bs)
    assert torch.equal(a.values.view(torch.uint8), b.values.view(torch.uint8))
    assert torch.equal(a.scales.view(torch.uint8), b.scales.view(torch.uint8))
    assert a.shape == b.shape


def test_error_bad_precision():
    with pytest.raises(ValueError, match="precision"):
        quantize(torch.randn(4, 16), "int4")


def test_error_bad_granularity():
    with pytest.raises(ValueError, match="granularity"):
        quantize(torch.randn(4, 16), "int8", "per_tensor")
    with pytest.raises(ValueError, match="granularity"):
        quantize_fp8(torch.randn(4, 16), "per_row")


def test_error_nvfp4_k_not_multiple_of_16():
    with pytest.raises(ValueError, match="multiple of 16"):
        quantize_nvfp4(torch.randn(4, 24))


def test_error_nvfp4_bad_scale_layout():
    with pytest.raises(ValueError, match="scale_layout"):
        quantize_nvfp4(torch.randn(4, 32), scale_layout="tiled")


def test_error_per_block_without_block_size():
    with pytest.raises(ValueError, match="block_size"):
        quantize_int8(torch.randn(1, 8, 2, 16), "per_block")
    with pytest.raises(ValueError, match="block_size"):
        quantize_fp8(torch.randn(1, 8, 2, 16), "per_block", -1)


def test_error_per_block_3d_tensor():
    with pytest.raises(ValueError, match="4-D"):
        quantize_int8(torch.randn(2, 8, 16), "per_block", 4)


def test_error_per_channel_3d_tensor():
    with pytest.raises(ValueError, match="4-D"):
        quantize_int8(torch.randn(2, 8, 16), "per_channel")


def test_error_bad_layout():
    with pytest.raises(ValueError, match="layout"):
        quantize_int8(torch.randn(1, 8, 2, 16), "per_block", 4, layout="BSHD")


def test_error_bad_dtype_and_scalar():
    with pytest.raises(TypeError):
        quantize_int8(torch.ones(4, 8, dtype=torch.int32))
    with pytest.raises(TypeError):
        quantize_fp8(torch.ones(4, 8, dtype=torch.float64))
    with pytest.raises(ValueError):
        quantize_int8(torch.tensor(1.0))
