// TMA (cp.async.bulk.tensor) for sm90a: tile loads into shared memory that complete on an
// mbarrier, and the host-side encoding of the CUtensorMap they read.
//
// Coordinates and dims are innermost first, as the driver and PTX want. Pass the map to the
// kernel as `const __grid_constant__ CUtensorMap` and hand its address to these functions.
#pragma once

#include <cuda.h>  // CUtensorMap
#include <cuda_runtime.h>
#include <cudaTypedefs.h>  // PFN_cuTensorMapEncodeTiled_v12000

#include <cstdint>

#include "ac4k_kernel/types.h"

#if defined(__CUDACC__)
#include <cuda/ptx>
#endif

namespace ac4k {
namespace sm90a {

#if defined(__CUDACC__)

// Pulls the descriptor into the cache ahead of the first load (one thread, once per kernel).
__device__ __forceinline__ void tma_prefetch_desc(const CUtensorMap* map) {
  asm volatile("prefetch.tensormap [%0];" : : "l"(reinterpret_cast<uint64_t>(map)) : "memory");
}

// Loads one box at `coords` into smem `dst` and adds its bytes to `bar`'s transaction count.
// The shared::cluster form (PTX 8.0) is the classic one; a CTA's own smem address is valid there.
// dst: 128 B aligned, 1024 B for SWIZZLE_128B (the swizzle pattern repeats every 1024 B).
// One function per rank the kernels use.
__device__ __forceinline__ void tma_load_2d(void* dst, const CUtensorMap* map, uint64_t* bar,
                                            int32_t c0, int32_t c1) {
  const int32_t c[2] = {c0, c1};
  cuda::ptx::cp_async_bulk_tensor(cuda::ptx::space_cluster, cuda::ptx::space_global, dst, map, c,
                                  bar);
}

__device__ __forceinline__ void tma_load_3d(void* dst, const CUtensorMap* map, uint64_t* bar,
                                            int32_t c0, int32_t c1, int32_t c2) {
  const int32_t c[3] = {c0, c1, c2};
  cuda::ptx::cp_async_bulk_tensor(cuda::ptx::space_cluster, cuda::ptx::space_global, dst, map, c,
                                  bar);
}

__device__ __forceinline__ void tma_load_4d(void* dst, const CUtensorMap* map, uint64_t* bar,
                                            int32_t c0, int32_t c1, int32_t c2, int32_t c3) {
  const int32_t c[4] = {c0, c1, c2, c3};
  cuda::ptx::cp_async_bulk_tensor(cuda::ptx::space_cluster, cuda::ptx::space_global, dst, map, c,
                                  bar);
}

// Multicast forms: the same box into shared memory at `dst`'s offset in every CTA of `cta_mask`
// (cluster ranks), each completing its bytes on the mbarrier at `bar`'s offset in that CTA.
template <int R>
__device__ __forceinline__ void tma_load_multicast(void* dst, const CUtensorMap* map, uint64_t* bar,
                                                   const int32_t (&c)[R], uint16_t cta_mask) {
  cuda::ptx::cp_async_bulk_tensor(cuda::ptx::space_cluster, cuda::ptx::space_global, dst, map, c,
                                  bar, cta_mask);
}

#endif  // __CUDACC__

// ---- host: descriptor encoding ----

enum class TmaSwizzle : int32_t { None = 0, B32 = 32, B64 = 64, B128 = 128 };

// cuTensorMapEncodeTiled through the runtime's entry-point query, so nothing links -lcuda.
// Looked up once (thread-safe static init); nullptr if the driver lacks it.
inline PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encode_fn() {
  static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
    const cudaError_t e = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000,
                                                           cudaEnableDefault, &q);
    if (e != cudaSuccess) (void)cudaGetLastError();  // keep it out of the next launch check
    if (e != cudaSuccess || q != cudaDriverEntryPointSuccess)
      return PFN_cuTensorMapEncodeTiled_v12000(nullptr);
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(p);
  }();
  return fn;
}

// Encodes a tiled map over `base`: rank 1..5; dims[i], strides[i] (elements, strides[0] == 1)
// and box[i] innermost first. Out-of-bounds box elements read as zeros. Checks the driver's
// rules up front so a bad shape returns cudaErrorInvalidValue instead of a driver code.
// 8-bit types (int8 / uint8 / e4m3) all map to UINT8: TMA only moves bytes.
inline cudaError_t encode_tensor_map(CUtensorMap* map, const void* base, ScalarType dtype,
                                     int rank, const int64_t* dims, const int64_t* strides,
                                     const uint32_t* box, TmaSwizzle swizzle) {
  CUtensorMapDataType type;
  int64_t esize;
  switch (dtype) {
    case ScalarType::Int8:
    case ScalarType::UInt8:
    case ScalarType::Float8E4M3: type = CU_TENSOR_MAP_DATA_TYPE_UINT8; esize = 1; break;
    case ScalarType::BFloat16: type = CU_TENSOR_MAP_DATA_TYPE_BFLOAT16; esize = 2; break;
    case ScalarType::Float16: type = CU_TENSOR_MAP_DATA_TYPE_FLOAT16; esize = 2; break;
    case ScalarType::Float32: type = CU_TENSOR_MAP_DATA_TYPE_FLOAT32; esize = 4; break;
    default: return cudaErrorNotSupported;
  }
  CUtensorMapSwizzle swz;
  switch (swizzle) {
    case TmaSwizzle::None: swz = CU_TENSOR_MAP_SWIZZLE_NONE; break;
    case TmaSwizzle::B32: swz = CU_TENSOR_MAP_SWIZZLE_32B; break;
    case TmaSwizzle::B64: swz = CU_TENSOR_MAP_SWIZZLE_64B; break;
    case TmaSwizzle::B128: swz = CU_TENSOR_MAP_SWIZZLE_128B; break;
    default: return cudaErrorInvalidValue;
  }
  if (map == nullptr || base == nullptr || rank < 1 || rank > 5) return cudaErrorInvalidValue;
  if (reinterpret_cast<uintptr_t>(map) % 64 != 0) return cudaErrorInvalidValue;
  if (reinterpret_cast<uintptr_t>(base) % 16 != 0 || strides[0] != 1) return cudaErrorInvalidValue;

  cuuint64_t gdim[5], gstride[4];
  cuuint32_t bdim[5], estride[5];
  for (int i = 0; i < rank; ++i) {
    if (dims[i] < 1 || dims[i] > (int64_t(1) << 32) || box[i] < 1 || box[i] > 256)
      return cudaErrorInvalidValue;
    gdim[i] = cuuint64_t(dims[i]);
    bdim[i] = box[i];
    estride[i] = 1;
    if (i > 0) {  // the driver takes the rank-1 outer strides, in bytes
      const int64_t bytes = strides[i] * esize;
      if (strides[i] < 1 || bytes % 16 != 0 || bytes >= (int64_t(1) << 40))
        return cudaErrorInvalidValue;
      gstride[i - 1] = cuuint64_t(bytes);
    }
  }
  const int64_t inner_bytes = int64_t(box[0]) * esize;
  if (inner_bytes % 16 != 0) return cudaErrorInvalidValue;
  if (swizzle != TmaSwizzle::None && inner_bytes > int64_t(swizzle)) return cudaErrorInvalidValue;

  const PFN_cuTensorMapEncodeTiled_v12000 encode = tensor_map_encode_fn();
  if (encode == nullptr) return cudaErrorNotSupported;
  const CUresult r = encode(map, type, cuuint32_t(rank), const_cast<void*>(base), gdim, gstride,
                            bdim, estride, CU_TENSOR_MAP_INTERLEAVE_NONE, swz,
                            CU_TENSOR_MAP_L2_PROMOTION_L2_128B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return r == CUDA_SUCCESS ? cudaSuccess : cudaErrorInvalidValue;
}

}  // namespace sm90a
}  // namespace ac4k
