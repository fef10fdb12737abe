// quantize_fp8 for sm89: FP8 E4M3, scale = amax/448 per group, round to nearest even, saturating.
// Bit-exact with ac4k_kernel.reference.quantize_fp8. Kernels: quantize_8bit.cuh.
#include "sm89/quantize_8bit.cuh"

namespace ac4k {

cudaError_t quantize_fp8(const QuantizeParams& p, cudaStream_t stream) {
  return sm89::quantize_8bit<Fp8Format>(p, stream);
}

}  // namespace ac4k
