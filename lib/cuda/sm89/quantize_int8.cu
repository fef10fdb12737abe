// quantize_int8 for sm89: symmetric INT8, scale = amax/127 per group, round half to even.
// Bit-exact with ac4k_kernel.reference.quantize_int8. Kernels: quantize_8bit.cuh.
#include "sm89/quantize_8bit.cuh"

namespace ac4k {

cudaError_t quantize_int8(const QuantizeParams& p, cudaStream_t stream) {
  return sm89::quantize_8bit<Int8Format>(p, stream);
}

}  // namespace ac4k
