// Synchronization wrappers for sm90a kernels: mbarriers (TMA completion) and the async-proxy
// fence, through CCCL cuda::ptx.
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

// Arrival that also expects `bytes` of TMA traffic in this phase. Bytes = full box size, even
// for boxes that are partly out of bounds (TMA still writes the zero fill).
__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
  (void)cuda::ptx::mbarrier_arrive_expect_tx(cuda::ptx::sem_release, cuda::ptx::scope_cta,
                                             cuda::ptx::space_shared, bar, bytes);
}

// Blocks until the phase with parity `phase` (0/1) has completed. try_wait suspends in
// hardware for a while before returning false, so the spin is cheap.
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t phase) {
  while (!cuda::ptx::mbarrier_try_wait_parity(bar, phase)) {
  }
}

// ---- clusters (the multicast variants in tools/variants/ use these) ----

// This CTA's rank in its cluster.
__device__ __forceinline__ uint32_t cluster_rank() { return cuda::ptx::get_sreg_cluster_ctarank(); }

// `p`'s offset in the shared memory of cluster CTA `rank` (this one included), as a shared::cluster
// address.
__device__ __forceinline__ uint32_t cluster_addr(const void* p, uint32_t rank) {
  uint32_t a;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;"
               : "=r"(a)
               : "r"(static_cast<uint32_t>(__cvta_generic_to_shared(p))), "r"(rank));
  return a;
}

// Arrival on the mbarrier at `bar`'s offset in cluster CTA `rank`. The default .release.cta
// semantics, as CUTLASS's cluster barrier: the stage's readers (wgmmas) are already waited for, and
// .release.cluster compiles to a GPU-wide MEMBAR before every arrival.
__device__ __forceinline__ void mbar_arrive_cluster(uint64_t* bar, uint32_t rank) {
  asm volatile("mbarrier.arrive.shared::cluster.b64 _, [%0];" : : "r"(cluster_addr(bar, rank)) : "memory");
}

// The same that also expects `bytes` of TMA traffic in the phase (the multicast loads that complete
// there may land before or after it).
__device__ __forceinline__ void mbar_arrive_expect_tx_cluster(uint64_t* bar, uint32_t rank, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cluster.b64 _, [%0], %1;"
               :
               : "r"(cluster_addr(bar, rank)), "r"(bytes)
               : "memory");
}

// Compare-and-swap of the word at `p`'s offset in cluster CTA `rank`; returns the old value. (An
// atomic add would do as well, but ptxas turns a one-lane add into a warp-aggregated one whose
// shuffle waits for the result at once.)
__device__ __forceinline__ uint32_t atom_cas_cluster(uint32_t* p, uint32_t rank, uint32_t cmp, uint32_t val) {
  uint32_t old;
  asm volatile("atom.shared::cluster.cas.b32 %0, [%1], %2, %3;"
               : "=r"(old)
               : "r"(cluster_addr(p, rank)), "r"(cmp), "r"(val)
               : "memory");
  return old;
}

// Every non-exited thread of the cluster meets here (release / acquire): barrier inits and shared
// memory made visible to the other CTAs before any of them signals or writes this one.
__device__ __forceinline__ void cluster_sync() {
  cuda::ptx::barrier_cluster_arrive(cuda::ptx::sem_release);
  cuda::ptx::barrier_cluster_wait(cuda::ptx::sem_acquire);
}

// Orders this thread's generic-proxy shared-memory writes before later async-proxy accesses
// (wgmma operand reads, TMA stores) of the same bytes.
__device__ __forceinline__ void fence_proxy_async_shared() {
  cuda::ptx::fence_proxy_async(cuda::ptx::space_shared);
}

// ---- named barriers (bar.sync / bar.arrive; CCCL has no wrapper) ----
// id 0 is __syncthreads(); ids 1..15 are free. `threads` counts every participant (a multiple of
// 32): bar_sync waits for them all, bar_arrive signals without waiting (producer / consumer order).
__device__ __forceinline__ void named_bar_sync(uint32_t id, uint32_t threads) {
  asm volatile("bar.sync %0, %1;" : : "r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void named_bar_arrive(uint32_t id, uint32_t threads) {
  asm volatile("bar.arrive %0, %1;" : : "r"(id), "r"(threads) : "memory");
}

}  // namespace sm90a
}  // namespace ac4k
