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

// quantize_int8 / quantize_fp8: x [rows, cols] -> q [rows, cols] (contiguous) and float scales.
struct QuantizeParams {
  const void* x = nullptr;
  ScalarType x_dtype = ScalarType::BFloat16;
  RowView x_rows;
  int64_t rows = 0;  // product of x_rows.size
  int64_t cols = 0;  // last dim
  void* q = nullptr;        // contiguous [rows, cols]
  float* scales = nullptr;  // per_token: [rows]
  Granularity granularity = Granularity::PerToken;
};

}  // namespace ac4k
