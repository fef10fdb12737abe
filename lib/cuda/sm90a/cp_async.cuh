// cp.async (the non-bulk, per-thread asynchronous copy) for sm90a, completing on an mbarrier.
// CCCL's cuda::ptx has the bulk forms (TMA) but not these, so this is inline PTX. Used where TMA
// cannot go: gemm_nvfp4's packed FP4 rows are K/2 bytes, a multiple of 8 but not always of the
// 16 bytes TMA needs for its row strides.
#pragma once

#include <cstdint>

namespace ac4k {
namespace sm90a {

// Copies 8 bytes global -> shared (both 8-byte aligned); with valid == false nothing is read and the
// 8 bytes are zero-filled (src-size 0), so tails need no masking downstream. `src` must still be
// a valid-looking global address (pass the tensor's base).
__device__ __forceinline__ void cp_async_8_zfill(void* dst, const void* src, bool valid) {
  const uint32_t d = static_cast<uint32_t>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;" : : "r"(d), "l"(src), "r"(valid ? 8u : 0u) : "memory");
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
