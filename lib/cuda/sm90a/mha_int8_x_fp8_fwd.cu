// mha_int8_x_fp8_fwd for sm90a: QK^T in INT8, PV in FP8; the kernel is in mha_8bit.cuh.
#include "ac4k_kernel/ops.h"
#include "sm90a/mha_8bit.cuh"

namespace ac4k {

cudaError_t mha_int8_x_fp8_fwd(const Mha8bitParams& p, cudaStream_t stream) {
  return sm90a::mha_8bit_fwd<sm90a::Int8Format>(p, stream);
}

}  // namespace ac4k
