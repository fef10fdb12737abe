// Warpgroup MMA (wgmma) for sm90a: shared-memory matrix descriptors, fence / commit / wait, and
// the m64nNk* instructions of the attention kernels. CCCL has no wgmma, so this is inline PTX.
//
// All 128 threads of a warpgroup execute each call. The instruction shape is picked by the
// accumulator array length: N = 2 * length (64 x N values over 128 threads).
//
// Accumulator layout (s32 or f32), thread t of the warpgroup, w = t / 32, l = t % 32, j < N/8:
//   d[4j + 0], d[4j + 1]: row 16w + l/4,     columns 8j + 2(l%4) + {0, 1}
//   d[4j + 2], d[4j + 3]: row 16w + l/4 + 8, same columns
// A from registers, 8-bit, one k32 step (4 words, low byte = lowest k; r = 16w + l/4):
//   a[0]: row r, k 4(l%4)..+3   a[1]: row r+8, same k   a[2]/a[3]: rows r/r+8, k 16 + 4(l%4)..+3
//
// Rules: accumulators must be statically indexed (templates / unrolled loops) or ptxas
// serializes the wgmmas (C7515). Issue as
//   wgmma_fence_operand(acc); wgmma_fence(); wgmma_*(acc, ...) x k; wgmma_commit();
//   ... wgmma_wait<n>(); wgmma_fence_operand(acc); read acc
// The operand fences pin register writes (e.g. zero init, O rescale) before wgmma_fence() and
// reads after the wait; without the first, nvcc may sink writes past the fence and ptxas then
// injects an extra warpgroup.arrive (C7519). wgmma_fence() is also needed after writing A regs.
#pragma once

#include <cstdint>

namespace ac4k {
namespace sm90a {

// ---- shared-memory matrix descriptors ----

// Fields: bits 0-13 start address >> 4, 16-29 leading byte offset >> 4, 32-45 stride byte
// offset >> 4, 62-63 swizzle (0 none, 1 = 128 B, 2 = 64 B, 3 = 32 B). Base offset (49-51) stays 0:
// tiles start on a swizzle-pattern boundary (1024 B for 128 B swizzle).
__device__ __forceinline__ uint64_t make_smem_desc(const void* tile, uint32_t lbo_bytes,
                                                   uint32_t sbo_bytes, uint32_t swizzle_mode) {
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(tile));
  return uint64_t((addr >> 4) & 0x3fff) | (uint64_t((lbo_bytes >> 4) & 0x3fff) << 16) |
         (uint64_t((sbo_bytes >> 4) & 0x3fff) << 32) | (uint64_t(swizzle_mode & 3) << 62);
}

// K-major tile as TMA SWIZZLE_128B writes it (box inner dim = 128 B): rows of 128 B, 8-row
// core groups 1024 B apart (SBO). LBO is unused for swizzled K-major (set to 16 B as usual).
__device__ __forceinline__ uint64_t make_smem_desc_kmajor_sw128(const void* tile) {
  return make_smem_desc(tile, 16, 1024, 1);
}

// Steps a descriptor along K inside the 128 B row (k32 of 8-bit or k16 of bf16 = 32 B), or to
// the next panel. Hardware applies the swizzle to the final address, so a plain add is right.
__device__ __forceinline__ uint64_t smem_desc_advance(uint64_t desc, uint32_t bytes) {
  return desc + (bytes >> 4);
}

// ---- ordering ----

__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;" : : : "memory");
}

__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;" : : : "memory");
}

// Waits until at most N committed groups are still in flight.
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  static_assert(N >= 0 && N <= 7, "wgmma.wait_group: 0..7");
  asm volatile("wgmma.wait_group.sync.aligned %0;" : : "n"(N) : "memory");
}

// Compiler-only barrier on each register of `d`: pins reads/writes of it relative to the
// surrounding (volatile) wgmma asm.
template <int K>
__device__ __forceinline__ void wgmma_fence_operand(float (&d)[K]) {
#pragma unroll
  for (int i = 0; i < K; ++i) asm volatile("" : "+f"(d[i]) : : "memory");
}
template <int K>
__device__ __forceinline__ void wgmma_fence_operand(int32_t (&d)[K]) {
#pragma unroll
  for (int i = 0; i < K; ++i) asm volatile("" : "+r"(d[i]) : : "memory");
}

// Warp specialization: a warpgroup gives registers back (the producer) or takes them (the
// consumers); every thread of the warpgroup executes it, N a multiple of 8 in [24, 256].
template <uint32_t N>
__device__ __forceinline__ void setmaxnreg_inc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" : : "n"(N));
}
template <uint32_t N>
__device__ __forceinline__ void setmaxnreg_dec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" : : "n"(N));
}

// ---- instructions ----
// asm has no symbolic operand names in nvcc, so the operand numbers after the accumulators
// (%NREG...) are spelled out per shape. scale-d = 0 (accumulate == false) overwrites d.

#define AC4K_P0 "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
#define AC4K_P32 "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, " \
  "%47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
#define AC4K_P64 "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79"
#define AC4K_P80 "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95"
#define AC4K_P96 "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, " \
  "%111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127"
#define AC4K_D32 "{" AC4K_P0 "}"
#define AC4K_D64 "{" AC4K_P0 ", " AC4K_P32 "}"
// N = 72 / 136: D columns plus 8 (the ones rows that give P's row sums, see mha_int8_x_fp8_fwd.cu).
#define AC4K_D36 "{" AC4K_P0 ", %32, %33, %34, %35}"
#define AC4K_D68 "{" AC4K_P0 ", " AC4K_P32 ", %64, %65, %66, %67}"
// N = 160 / 192 / 256: the GEMMs' wider tiles.
#define AC4K_D80 "{" AC4K_P0 ", " AC4K_P32 ", " AC4K_P64 "}"
#define AC4K_D96 "{" AC4K_P0 ", " AC4K_P32 ", " AC4K_P64 ", " AC4K_P80 "}"
#define AC4K_D128 "{" AC4K_P0 ", " AC4K_P32 ", " AC4K_P64 ", " AC4K_P80 ", " AC4K_P96 "}"
// N = 176: mha_bf16_fwd's key block at D = 128.
#define AC4K_D88 "{" AC4K_P0 ", " AC4K_P32 ", " AC4K_P64 ", %80, %81, %82, %83, %84, %85, %86, %87}"

// Operand lists "+r"(d[0]), ... with constraint c.
#define AC4K_X8(c, d, i) c(d[i]), c(d[i + 1]), c(d[i + 2]), c(d[i + 3]), \
  c(d[i + 4]), c(d[i + 5]), c(d[i + 6]), c(d[i + 7])
#define AC4K_X32(c, d, i) AC4K_X8(c, d, i), AC4K_X8(c, d, i + 8), AC4K_X8(c, d, i + 16), \
  AC4K_X8(c, d, i + 24)
#define AC4K_OPS32(c, d) AC4K_X32(c, d, 0)
#define AC4K_OPS64(c, d) AC4K_X32(c, d, 0), AC4K_X32(c, d, 32)
#define AC4K_OPS36(c, d) AC4K_X32(c, d, 0), c(d[32]), c(d[33]), c(d[34]), c(d[35])
#define AC4K_OPS68(c, d) AC4K_X32(c, d, 0), AC4K_X32(c, d, 32), c(d[64]), c(d[65]), c(d[66]), c(d[67])
#define AC4K_OPS80(c, d) AC4K_X32(c, d, 0), AC4K_X32(c, d, 32), AC4K_X8(c, d, 64), AC4K_X8(c, d, 72)
#define AC4K_OPS96(c, d) AC4K_X32(c, d, 0), AC4K_X32(c, d, 32), AC4K_X32(c, d, 64)
#define AC4K_OPS128(c, d) AC4K_X32(c, d, 0), AC4K_X32(c, d, 32), AC4K_X32(c, d, 64), AC4K_X32(c, d, 96)
#define AC4K_OPS88(c, d) AC4K_OPS80(c, d), AC4K_X8(c, d, 80)
#define AC4K_SETP(i) "{\n.reg .pred p;\nsetp.ne.b32 p, " i ", 0;\n"

// D[64 x N] (+)= A[64 x 32] . B[N x 32]^T from 8-bit A and B, both K-major in smem: int8 x int8 ->
// int32 (wgmma_s8_ss) or e4m3 x e4m3 -> f32 (wgmma_e4m3_ss; TAIL: its scale-a / scale-b immediates).
#define AC4K_WGMMA_8BIT_SS(FN, T, C, TYPES, TAIL, NREG, N, A, B, S)                           \
  __device__ __forceinline__ void FN(T (&d)[NREG], uint64_t a_desc, uint64_t b_desc,          \
                                     bool accumulate) {                                       \
    asm volatile(AC4K_SETP(S) "wgmma.mma_async.sync.aligned.m64n" #N "k32." TYPES " "         \
                 AC4K_D##NREG ", " A ", " B ", p" TAIL ";\n}"                                 \
                 : AC4K_OPS##NREG(C, d)                                                       \
                 : "l"(a_desc), "l"(b_desc), "r"(uint32_t(accumulate)));                      \
  }
AC4K_WGMMA_8BIT_SS(wgmma_s8_ss, int32_t, "+r", "s32.s8.s8", "", 64, 128, "%64", "%65", "%66")
AC4K_WGMMA_8BIT_SS(wgmma_e4m3_ss, float, "+f", "f32.e4m3.e4m3", ", 1, 1", 64, 128, "%64", "%65", "%66")
AC4K_WGMMA_8BIT_SS(wgmma_e4m3_ss, float, "+f", "f32.e4m3.e4m3", ", 1, 1", 80, 160, "%80", "%81", "%82")
AC4K_WGMMA_8BIT_SS(wgmma_e4m3_ss, float, "+f", "f32.e4m3.e4m3", ", 1, 1", 96, 192, "%96", "%97", "%98")

// D[64 x N] (+)= A[64 x 32] . B[N x 32]^T, e4m3 x e4m3 -> f32; A in registers (4 words), B
// K-major in smem. 8-bit wgmma has no transpose: B must be K-major (V^T for P.V).
#define AC4K_WGMMA_E4M3_RS(NREG, N, A, B, S)                                                 \
  __device__ __forceinline__ void wgmma_e4m3_rs(float (&d)[NREG], const uint32_t (&a)[4],    \
                                                uint64_t b_desc, bool accumulate) {          \
    asm volatile(AC4K_SETP(S) "wgmma.mma_async.sync.aligned.m64n" #N "k32.f32.e4m3.e4m3 "   \
                 AC4K_D##NREG ", " A ", " B ", p, 1, 1;\n}"                                 \
                 : AC4K_OPS##NREG("+f", d)                                                   \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b_desc),                  \
                   "r"(uint32_t(accumulate)));                                               \
  }
AC4K_WGMMA_E4M3_RS(36, 72, "{%36, %37, %38, %39}", "%40", "%41")
AC4K_WGMMA_E4M3_RS(68, 136, "{%68, %69, %70, %71}", "%72", "%73")

// 16-bit operands (mha_bf16_fwd), f32 accumulators. TYPES: "bf16.bf16" or "f16.f16".
// SS: D[64 x N] (+)= A[64 x 16] . B[N x 16]^T, both K-major in smem (trans-a = trans-b = 0).
#define AC4K_WGMMA_16BIT_SS(FN, TYPES, NREG, N, A, B, S)                                      \
  __device__ __forceinline__ void FN(float (&d)[NREG], uint64_t a_desc, uint64_t b_desc,      \
                                     bool accumulate) {                                       \
    asm volatile(AC4K_SETP(S) "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32." TYPES " "     \
                 AC4K_D##NREG ", " A ", " B ", p, 1, 1, 0, 0;\n}"                             \
                 : AC4K_OPS##NREG("+f", d)                                                    \
                 : "l"(a_desc), "l"(b_desc), "r"(uint32_t(accumulate)));                      \
  }
AC4K_WGMMA_16BIT_SS(wgmma_bf16_ss, "bf16.bf16", 64, 128, "%64", "%65", "%66")
AC4K_WGMMA_16BIT_SS(wgmma_f16_ss, "f16.f16", 64, 128, "%64", "%65", "%66")
AC4K_WGMMA_16BIT_SS(wgmma_bf16_ss, "bf16.bf16", 88, 176, "%88", "%89", "%90")
AC4K_WGMMA_16BIT_SS(wgmma_f16_ss, "f16.f16", 88, 176, "%88", "%89", "%90")
AC4K_WGMMA_16BIT_SS(wgmma_f16_ss, "f16.f16", 128, 256, "%128", "%129", "%130")

// RS: D[64 x N] (+)= A[64 x 16] . B, A in registers (4 words of 2 elements: a[0] row r, k
// 2(l%4)..+1; a[1] row r+8; a[2] / a[3] the same at k + 8 -- i.e. the f32 accumulator layout of
// columns 16s..16s+15 packed in pairs). B in smem: *_tb MN-major (trans-b = 1: B[k][n] with n
// contiguous, e.g. V [keys, D] for P.V), the others K-major (B[n][k], e.g. V^T [D, keys]).
#define AC4K_WGMMA_16BIT_RS(FN, TYPES, TB, NREG, N, A, B, S)                                  \
  __device__ __forceinline__ void FN(float (&d)[NREG], const uint32_t (&a)[4], uint64_t b_desc, \
                                     bool accumulate) {                                       \
    asm volatile(AC4K_SETP(S) "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32." TYPES " "     \
                 AC4K_D##NREG ", " A ", " B ", p, 1, 1, " #TB ";\n}"                          \
                 : AC4K_OPS##NREG("+f", d)                                                    \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b_desc),                   \
                   "r"(uint32_t(accumulate)));                                                \
  }
AC4K_WGMMA_16BIT_RS(wgmma_bf16_rs_tb, "bf16.bf16", 1, 32, 64, "{%32, %33, %34, %35}", "%36", "%37")
AC4K_WGMMA_16BIT_RS(wgmma_bf16_rs_tb, "bf16.bf16", 1, 64, 128, "{%64, %65, %66, %67}", "%68", "%69")
AC4K_WGMMA_16BIT_RS(wgmma_f16_rs_tb, "f16.f16", 1, 32, 64, "{%32, %33, %34, %35}", "%36", "%37")
AC4K_WGMMA_16BIT_RS(wgmma_f16_rs_tb, "f16.f16", 1, 64, 128, "{%64, %65, %66, %67}", "%68", "%69")
AC4K_WGMMA_16BIT_RS(wgmma_f16_rs, "f16.f16", 0, 32, 64, "{%32, %33, %34, %35}", "%36", "%37")
AC4K_WGMMA_16BIT_RS(wgmma_f16_rs, "f16.f16", 0, 64, 128, "{%64, %65, %66, %67}", "%68", "%69")

#undef AC4K_WGMMA_16BIT_RS
#undef AC4K_WGMMA_16BIT_SS
#undef AC4K_WGMMA_E4M3_RS
#undef AC4K_WGMMA_8BIT_SS
#undef AC4K_SETP
#undef AC4K_OPS128
#undef AC4K_OPS88
#undef AC4K_OPS96
#undef AC4K_OPS80
#undef AC4K_OPS68
#undef AC4K_OPS36
#undef AC4K_OPS64
#undef AC4K_OPS32
#undef AC4K_X32
#undef AC4K_X8
#undef AC4K_D128
#undef AC4K_D88
#undef AC4K_D96
#undef AC4K_D80
#undef AC4K_D68
#undef AC4K_D36
#undef AC4K_D64
#undef AC4K_D32
#undef AC4K_P80
#undef AC4K_P64
#undef AC4K_P96
#undef AC4K_P32
#undef AC4K_P0

}  // namespace sm90a
}  // namespace ac4k
