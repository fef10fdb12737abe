// mha_fp8_fwd for sm89: QK^T and PV in FP8 E4M3 on mma.sync; ac4k_kernel.reference.attention_fp8.
// Kernel: mha_8bit.cuh.
#include "sm89/mha_8bit.cuh"

namespace ac4k {

cudaError_t mha_fp8_fwd(const Mha8bitParams& p, cudaStream_t stream) {
  return sm89::mha_8bit_fwd<Fp8Format>(p, stream);
}

}  // namespace ac4k
