// quantize_nvfp4 for sm89: the shared kernels of common/quantize_nvfp4.cuh, compiled for this arch.
// Bit-exact with ac4k_kernel.reference.quantize_nvfp4.
#include "common/quantize_nvfp4.cuh"

namespace ac4k {

cudaError_t quantize_nvfp4(const QuantizeNvfp4Params& p, cudaStream_t stream) { return nvfp4::quantize(p, stream); }

}  // namespace ac4k
