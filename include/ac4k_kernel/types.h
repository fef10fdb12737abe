// Plain types shared by the launchers (lib/<backend>/<arch>/*.cu) and the one binding file.
// No torch here: the kernel layer compiles and links without it.
#pragma once

#include <cstdint>

namespace ac4k {

enum class ScalarType : int32_t { BFloat16 = 0, Float16 = 1, Float32 = 2, Int8 = 3, Float8E4M3 = 4, UInt8 = 5 };

enum class Granularity : int32_t { PerToken = 0, PerBlock = 1, PerChannel = 2 };

// Rows of a tensor whose last dim is contiguous and whose leading dims (up to 4, outermost
// first) have arbitrary strides, counted in elements. The binding merges leading dims that
// are contiguous with each other, so the common case has ndim == 1 and needs no index division.
struct RowView {
  static constexpr int kMaxDims = 4;
  int32_t ndim = 1;
  int64_t size[kMaxDims] = {0, 0, 0, 0};
  int64_t stride[kMaxDims] = {0, 0, 0, 0};
};

// A tensor seen as [B, S, H, D] (tokens S, heads H, last dim D contiguous) with element strides;
// covers BNHD, BHND (strides swapped) and 2-D [T, C] (B = H = 1).
struct TokenView {
  int64_t B = 1, S = 0, H = 1, D = 0;
  int64_t stride_b = 0, stride_s = 0, stride_h = 0;
};

// quantize_int8 / quantize_fp8: x -> q (x's shape, contiguous) and float32 scales.
//   per_token:   rows of x_rows (cols = last dim); scales [rows].
//   per_block:   block_size tokens x D of one (b, h); scales [B, H, ceil(S / block_size)].
//   per_channel: all S tokens of one (b, h, d); scales [B, H, D].
struct QuantizeParams {
  const void* x = nullptr;
  ScalarType x_dtype = ScalarType::BFloat16;
  Granularity granularity = Granularity::PerToken;
  RowView x_rows;    // per_token
  int64_t rows = 0;  // per_token: product of x_rows.size
  int64_t cols = 0;  // per_token: last dim
  TokenView xv;      // per_block / per_channel: x
  TokenView qv;      // per_block / per_channel: q (same sizes, its own strides)
  int32_t block_size = 0;
  void* q = nullptr;
  float* scales = nullptr;
};

// quantize_nvfp4: x [rows, cols] (cols % 16 == 0) -> packed E2M1 [rows, cols / 2], E4M3 block
// scales (plain [rows, cols / 16] or 128x4-swizzled, padding zeroed by the kernel) and the FP32
// global scale. global_scale_in (device pointer) replaces the tensor's own amax / 2688 when given.
struct QuantizeNvfp4Params {
  const void* x = nullptr;
  ScalarType x_dtype = ScalarType::BFloat16;
  RowView x_rows;
  int64_t rows = 0, cols = 0;
  void* q = nullptr;             // uint8 [rows, cols / 2]
  void* block_scales = nullptr;  // e4m3
  bool swizzled = false;
  float* global_scale = nullptr;           // out: [1]
  const float* global_scale_in = nullptr;  // optional in: [1]
  float* amax_scratch = nullptr;           // [1], used when global_scale_in is null
};

// rope3d (Wan 2.x; ac4k_kernel.reference.rope3d). x, out [B, S, H, D] (any strides, D contiguous,
// rows 16-byte aligned, D % 8 == 0; out may be x). Token s < f*h*w of sample b sits at
// (s / (h*w), (s / w) % h, s % w); pair p of its last dim is multiplied by freqs[pos, p] with pos
// its position on p's axis (frame pairs [0, split0), height [split0, split1), width [split1, D/2)).
// Tokens past f*h*w are copied bit for bit.
enum class RopeTable : int32_t {
  Complex128 = 0,  // freqs: complex128 [max_pos, D/2] (double pairs), row stride freqs_ld
  Complex64 = 1,   // freqs: complex64 [max_pos, D/2] (float pairs), row stride freqs_ld
  CosSin = 2,      // freqs: float32 cos [max_pos, D/2] (row stride freqs_ld); sin likewise (sin_ld)
  HiLo = 3,        // freqs: float4 (cos hi, sin hi, cos lo, sin lo) [max_pos, D/2], row stride freqs_ld
                   // float4s: any of the above as rope_table converts it, the form the fused ops read
};

// The rotation itself, shared by rope3d and the ops that fuse it (quantize_attention_kv's K).
struct RopeFreqs {
  static constexpr int kMaxHostGrid = 32;
  // Grid sizes (f, h, w) per sample: int64 [B, 3] on the device, checked by the kernel (a device
  // assert on a negative size, f*h*w > S or a size > max_pos); or, when grid_sizes is null, the
  // first 3*B entries of host_grid (B <= kMaxHostGrid), checked by the caller on the host.
  const int64_t* grid_sizes = nullptr;
  int32_t host_grid[3 * kMaxHostGrid] = {};
  RopeTable table = RopeTable::Complex128;
  const void* freqs = nullptr;
  const float* sin = nullptr;
  int64_t freqs_ld = 0, sin_ld = 0;
  int64_t max_pos = 0;
  int32_t split0 = 0, split1 = 0;
};

struct Rope3dParams : RopeFreqs {
  const void* x = nullptr;
  void* out = nullptr;
  ScalarType dtype = ScalarType::BFloat16;
  TokenView xv, ov;
};

// Attention inputs of mha_int8_x_fp8_fwd (the SageAttention2 recipe):
//   q  -> int8 per 16-token block (one scale per warp of 16 rows), quantized by the attention
//         kernel itself as quantize_int8(q, "per_block", 16) would
//   k  -> k - mean_tokens(k) (k_mean [B, Hkv, D]), int8 per 64-token block [B, Hkv, ceil(Sk / 64)]
//         (mha_fp8_fwd: q and k in FP8 E4M3 the same way, scale amax / 448)
//   v  -> FP8 E4M3 per channel (v_scale [B, Hkv, D]) stored transposed as vt [B, Hkv, D, Sk_pad]
//         (Sk_pad = Sk rounded up to 128, zero-filled), tokens permuted inside each 16-token group
//         (token t at slot 2*(t/8) + 4*((t/2)%4) + t%2) so the PV product takes P straight from
//         the score registers (see mha_8bit.cuh).
// quantize_attention_kv writes k8 / k_scale / k_mean / vt / v_scale in one launch.
struct QuantizeAttentionKvParams {
  const void* k = nullptr;
  const void* v = nullptr;
  ScalarType dtype = ScalarType::BFloat16;  // of k and v
  TokenView kv, vv;                         // [B, S, H, D] views of k and v (same sizes)
  int8_t* k8 = nullptr;                     // INT8, or E4M3 bytes with k_fp8
  TokenView k8v;                            // k8's view (k's sizes, its own strides)
  bool k_fp8 = false;                       // K to FP8 E4M3 (scale amax / 448) for mha_fp8_fwd
  float* k_scale = nullptr;                 // [B, H, ceil(S / 64)]
  float* k_mean = nullptr;                  // [B, H, D]
  int64_t s_pad = 0;                        // tokens in vt: S rounded up to 128
  uint8_t* vt = nullptr;                    // [B, H, D, s_pad]
  float* v_scale = nullptr;                 // [B, H, D]
  // Optional: K is rotated by rope3d (token s of sample b at its (f, h, w) position) before the
  // mean and the quantization, the rotated values rounded to k's dtype exactly as rope3d writes them.
  bool rope = false;
  RopeFreqs rope_freqs;
  // Work space of the arch's kernels, quantize_attention_kv_scratch(params) floats (0 on sm90a,
  // whose clusters meet in distributed shared memory; sm89: per-chunk partial statistics, merged in
  // a fixed order so that the output is deterministic).
  float* scratch = nullptr;
};

// quantize_attention_q: q (bf16 / fp16) -> INT8 (or E4M3) per 16-token block of one head, as
// quantize_int8 / quantize_fp8(q, "per_block", 16) would, optionally rotated by rope3d first (the
// rotated values rounded to q's dtype exactly as rope3d writes them): the 8-bit attention kernels'
// quantized-Q input (Mha8bitParams::q_scale), so a rotated q never goes through memory in bf16.
struct QuantizeAttentionQParams {
  const void* q = nullptr;
  ScalarType dtype = ScalarType::BFloat16;  // of q
  TokenView qv;                             // [B, S, H, D] view of q, D 64 or 128
  uint8_t* q8 = nullptr;                    // INT8, or E4M3 bytes with fp8
  TokenView q8v;                            // q8's view (q's sizes; rows 8-byte aligned)
  bool fp8 = false;
  float* q_scale = nullptr;                 // [B, H, ceil(S / 16)]
  bool rope = false;
  RopeFreqs rope_freqs;
};

// The 8-bit attention kernels: mha_int8_x_fp8_fwd (k INT8) and mha_fp8_fwd (k FP8 E4M3; q
// quantized in the kernel as quantize_fp8(q, "per_block", 16), or given quantized).
struct Mha8bitParams {
  const void* q = nullptr;     // TokenView q_view, bf16 / fp16 (q_dtype, also the output's dtype)
  ScalarType q_dtype = ScalarType::BFloat16;
  const int8_t* k = nullptr;   // TokenView k_view (smoothed; INT8, or E4M3 bytes for mha_fp8_fwd)
  const uint8_t* vt = nullptr; // [B, Hkv, D, sk_pad]
  const float* k_scale = nullptr;
  const float* v_scale = nullptr;
  TokenView q_view, k_view, o_view;  // sizes and element strides
  int64_t sk_pad = 0;
  void* o = nullptr;
  float* lse = nullptr;  // optional [B, Hq, Sq], natural log, of the smoothed-K scores
  float sm_scale = 0.f;
  bool causal = false;
  // Optional: q is rotated by rope3d (token s of sample b at its (f, h, w) position) on its way into
  // the kernel's quantization, the rotated values rounded to q's dtype exactly as rope3d writes them.
  bool rope = false;
  RopeFreqs rope_freqs;
  // Optional (sm90a): q comes quantized by quantize_attention_q, INT8 (E4M3 for mha_fp8_fwd) bytes
  // with these [B, Hq, ceil(Sq / 16)] scales, loaded by TMA (16-byte aligned rows); q_dtype is then
  // only the output's dtype, and rope must be off.
  const float* q_scale = nullptr;
};

// mha_bf16_fwd: unquantized attention on 16-bit tensor cores (reference.attention_bf16). q, k, v
// bf16 (or all fp16) in the caller's layout (TokenView: any strides, D contiguous, rows 16-byte
// aligned); o in q's dtype. k_view and v_view have the same sizes (their own strides).
struct MhaBf16Params {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  ScalarType dtype = ScalarType::BFloat16;  // of q, k, v and o
  TokenView q_view, k_view, v_view, o_view;
  void* o = nullptr;
  float* lse = nullptr;  // optional [B, Hq, Sq], natural log
  float sm_scale = 0.f;  // >= 0
  bool causal = false;   // bottom-right aligned: query i sees keys j <= i + Sk - Sq
};

// mha_nvfp4_fwd (ac4k_kernel.reference.attention_nvfp4 after the quantization of q, k, v): NVFP4
// operands (packed E2M1, two a byte, even element low; E4M3 block scales of 16; FP32 global scales
// read on the device). q [B, Sq, Hq, D] and the smoothed k [B, Sk, Hkv, D] quantized along D: the
// views' sizes are in elements, their strides in bytes (packed rows D / 2 bytes, scale rows D / 16;
// row strides multiples of 8 and 4 bytes). v transposed and quantized along the tokens: vt
// [B, Hkv, D, s_pad / 2] and vt_sf [B, Hkv, D, s_pad / 16], both contiguous, s_pad a multiple of
// 128 >= Sk with zeros past Sk. o in `dtype` (bf16 / fp16) in the caller's layout (16-byte aligned
// rows).
struct MhaNvfp4Params {
  const uint8_t *q = nullptr, *q_sf = nullptr, *k = nullptr, *k_sf = nullptr, *vt = nullptr, *vt_sf = nullptr;
  const float *q_gs = nullptr, *k_gs = nullptr, *v_gs = nullptr;  // one float each
  TokenView q_view, q_sf_view, k_view, k_sf_view, o_view;
  int64_t s_pad = 0;
  ScalarType dtype = ScalarType::BFloat16;  // of o
  void* o = nullptr;
  float* lse = nullptr;  // optional [B, Hq, Sq], natural log (of the smoothed scores)
  float sm_scale = 0.f;  // >= 0
  bool causal = false;   // bottom-right aligned
  void* scratch = nullptr;  // mha_nvfp4_fwd_scratch(params) bytes, 16-byte aligned: Q, K, V^T decoded
};

// gemm_fp8 (ac4k_kernel.reference.linear_fp8 after the activation quantization):
//   out[m, n] = float(sum_k a[m, k] * b[n, k]) * a_scale[m] * b_scale[n] + bias[n]
// a: E4M3 [M, K] (the per-token quantized activations), b: E4M3 [N, K] (the weight as stored,
// K-major); both read by TMA, so their row strides (lda, ldb, in bytes = elements) must be
// multiples of 16 and the pointers 16-byte aligned, hence K % 16 == 0. out: [M, N] bf16 / fp16
// with row stride ldo (elements); any M, N >= 1.
struct GemmFp8Params {
  const void* a = nullptr;
  const void* b = nullptr;
  const float* a_scale = nullptr;  // [M]
  const float* b_scale = nullptr;  // [N]
  const void* bias = nullptr;      // [N] or null
  ScalarType bias_dtype = ScalarType::BFloat16;  // bf16, fp16 or fp32
  void* out = nullptr;
  ScalarType out_dtype = ScalarType::BFloat16;   // bf16 or fp16
  int64_t M = 0, N = 0, K = 0;
  int64_t lda = 0, ldb = 0, ldo = 0;
};

// gemm_nvfp4 (ac4k_kernel.reference.gemm_nvfp4; the semantics of a Blackwell block-scaled NVFP4 GEMM):
//   out[m, n] = float(sum_k dec(a)[m, k] * dec(b)[n, k]) * a_gs * b_gs + bias[n]
// with dec(v)[r, k] = e2m1(v[r, k]) * e4m3(v_sf[r, k / 16]) (exact; the global scales come after
// the dot). a: packed E2M1 [M, K / 2] (two values a byte, the even k in the low nibble), b: [N, K / 2]
// likewise (the weight as stored), row strides lda / ldb in bytes (multiples of 8, 8-byte aligned
// pointers); a_sf [M, K / 16] / b_sf [N, K / 16] E4M3 block scales in the plain layout (row strides
// in bytes, any); a_gs / b_gs: one float each, on the device (read by the kernel, no host sync).
// K % 16 == 0; any M, N >= 1; out [M, N] bf16 / fp16 with row stride ldo (elements).
struct GemmNvfp4Params {
  const void* a = nullptr;
  const void* b = nullptr;
  const uint8_t* a_sf = nullptr;
  const uint8_t* b_sf = nullptr;
  const float* a_gs = nullptr;
  const float* b_gs = nullptr;
  const void* bias = nullptr;                    // [N] or null
  ScalarType bias_dtype = ScalarType::BFloat16;  // bf16, fp16 or fp32
  void* out = nullptr;
  ScalarType out_dtype = ScalarType::BFloat16;   // bf16 or fp16
  int64_t M = 0, N = 0, K = 0;
  int64_t lda = 0, ldb = 0, lda_sf = 0, ldb_sf = 0, ldo = 0;
  void* scratch = nullptr;  // gemm_nvfp4_scratch(params) bytes, 16-byte aligned
};

}  // namespace ac4k
