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
// scales (plain [rows, cols / 16] or 128x4-swizzled, zero-padded by the caller) and the FP32
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

}  // namespace ac4k
