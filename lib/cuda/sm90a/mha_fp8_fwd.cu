// mha_fp8_fwd for sm90a: QK^T and PV in FP8 E4M3; the kernel is in mha_8bit.cuh.
#include "ac4k_kernel/ops.h"
#include "sm90a/mha_8bit.cuh"

namespace ac4k {

cudaError_t mha_fp8_fwd(const Mha8bitParams& p, cudaStream_t stream) {
  return sm90a::mha_8bit_fwd<sm90a::Fp8Format>(p, stream);
}

}  // namespace ac4k
