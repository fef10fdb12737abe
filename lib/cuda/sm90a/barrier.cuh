// Synchronization wrappers for sm90a warp-specialized kernels: mbarriers (TMA completion and
// producer/consumer handoff), named barriers (warpgroup ping-pong), elect.sync, setmaxnreg and
// the async-proxy fence. CCCL cuda::ptx where it has the instruction, inline PTX otherwise.
#pragma once

#include <cuda/ptx>

#include <cstdint>

namespace ac4k {
namespace sm90a {

// ---- mbarrier (a 64-bit word in shared memory) ----

// One thread initializes; count = arrivals that complete a phase (TMA bytes are tracked apart).
__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t count) {
  cuda::ptx::mbarrier_init(bar, count);
}

// Makes the initialized barriers visible to the async proxy (TMA) and to other threads; follow
// it with __syncthreads() before any thread waits or any TMA completes on the barriers.
__device__ __forceinline__ void fence_barrier_init() {
  cuda::ptx::fence_mbarrier_init(cuda::ptx::sem_release, cuda::ptx::scope_cluster);
}

// Plain arrival (release.cta): e.g. a consumer handing a smem stage back to the producer.
// The returned state token is not needed (we wait on parity); nvcc keeps the asm regardless.
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  (void)cuda::ptx::mbarrier_arrive(bar);
}

// Arrival that also expects `bytes` of TMA traffic in this phase. Bytes = full box size, even
// for boxes that are partly out of bounds (TMA still writes the zero fill).
__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
  (void)cuda::ptx::mbarrier_arrive_expect_tx(cuda::ptx::sem_release, cuda::ptx::scope_cta,
                                             cuda::ptx::space_shared, bar, bytes);
}

__device__ __forceinline__ bool mbar_try_wait(uint64_t* bar, uint32_t phase) {
  return cuda::ptx::mbarrier_try_wait_parity(bar, phase);
}

// Blocks until the phase with parity `phase` (0/1) has completed. try_wait suspends in
// hardware for a while before returning false, so the spin is cheap.
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t phase) {
  while (!cuda::ptx::mbarrier_try_wait_parity(bar, phase)) {
  }
}

// ---- named barriers (ids 1..15; 0 is __syncthreads) ----

// nthreads is a multiple of 32 and counts every thread that syncs or arrives on `id`.
__device__ __forceinline__ void named_barrier_sync(uint32_t id, uint32_t nthreads) {
  asm volatile("bar.sync %0, %1;" : : "r"(id), "r"(nthreads) : "memory");
}

// Signals without waiting: lets the other consumer warpgroup proceed (ping-pong).
__device__ __forceinline__ void named_barrier_arrive(uint32_t id, uint32_t nthreads) {
  asm volatile("bar.arrive %0, %1;" : : "r"(id), "r"(nthreads) : "memory");
}

// ---- warp / warpgroup helpers ----

// True in exactly one active lane of the warp. Must be called by the full warp; unlike
// threadIdx.x % 32 == 0 it lets the compiler know the branch is warp-uniform-but-one.
__device__ __forceinline__ bool elect_one_sync() {
  uint32_t pred = 0;
  asm volatile(
      "{\n\t.reg .pred p;\n\t"
      "elect.sync _|p, %1;\n\t"
      "selp.u32 %0, 1, 0, p;\n\t}"
      : "=r"(pred)
      : "r"(0xffffffffu));
  return pred != 0;
}

// Register reallocation between warpgroups: the producer gives registers back (dec), the
// consumers take them (inc). N: 24..256, multiple of 8; every warp of the warpgroup must run it.
template <uint32_t N>
__device__ __forceinline__ void setmaxnreg_inc() {
  static_assert(N >= 24 && N <= 256 && N % 8 == 0, "setmaxnreg: 24..256, multiple of 8");
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" : : "n"(N));
}

template <uint32_t N>
__device__ __forceinline__ void setmaxnreg_dec() {
  static_assert(N >= 24 && N <= 256 && N % 8 == 0, "setmaxnreg: 24..256, multiple of 8");
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" : : "n"(N));
}

// Orders this thread's generic-proxy shared-memory writes before later async-proxy accesses
// (wgmma operand reads, TMA stores) of the same bytes.
__device__ __forceinline__ void fence_proxy_async_shared() {
  cuda::ptx::fence_proxy_async(cuda::ptx::space_shared);
}

}  // namespace sm90a
}  // namespace ac4k
