// cp.async (the non-bulk, per-thread asynchronous copy) for sm90a, completing on an mbarrier.
// CCCL's cuda::ptx has the bulk forms (TMA) but not these, so this is inline PTX. Used where TMA
// cannot go: gemm_nvfp4's packed FP4 rows are K/2 bytes, a multiple of 8 but not always of the
// 16 bytes TMA needs for its row strides.
#pragma once

#include <cstdint>

namespace ac4k {
namespace sm90a {

// Copies N = 4, 8 or 16 bytes global -> shared (both N-byte aligned); with valid == false nothing is
// read and the N bytes are zero-filled (src-size 0), so tails need no masking downstream. `src` must
// still be a valid-looking global address (pass the tensor's base).
template <int N>
__device__ __forceinline__ void cp_async_zfill(void* dst, const void* src, bool valid) {
  static_assert(N == 4 || N == 8 || N == 16, "cp.async copies 4, 8 or 16 bytes");
  const uint32_t d = static_cast<uint32_t>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;" : : "r"(d), "l"(src), "n"(N), "r"(valid ? uint32_t(N) : 0u)
               : "memory");
}

// Makes `bar` receive one arrival once all of this thread's earlier cp.async copies have landed.
// .noinc: the arrival counts against the barrier's expected count (init it with the number of
// threads that call this), instead of adding one pending arrival of its own.
__device__ __forceinline__ void cp_async_mbar_arrive_noinc(uint64_t* bar) {
  const uint32_t b = static_cast<uint32_t>(__cvta_generic_to_shared(bar));
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];" : : "r"(b) : "memory");
}

}  // namespace sm90a
}  // namespace ac4k
