// Warp-level mma.sync shapes the sm90a kernels use where wgmma's 64-row granularity does not fit
// (gemm_nvfp4's small-M path: operands decoded straight into fragment registers).
#pragma once

#include <cstdint>

namespace ac4k {
namespace sm90a {

// D = A (16x16 f16, row) * B (16x8 f16, col) + D, f32. Fragments (g = lane / 4, q = lane % 4):
// a0 (row g, k 2q..2q+1), a1 (row g+8, k 2q..), a2 (row g, k 2q+8..), a3 (row g+8, k 2q+8..);
// b0 (k 2q..2q+1, col g), b1 (k 2q+8.., col g); d0, d1 (row g, cols 2q, 2q+1), d2, d3 (row g+8).
__device__ __forceinline__ void mma_f16_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

}  // namespace sm90a
}  // namespace ac4k
