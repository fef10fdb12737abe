"""Pure-torch definitions of every ac4k_kernel operator (CPU or GPU). The kernels must match
them: quantizers bit for bit, attention / linear within the tolerances their tests state."""
from .quant import *  # noqa: F401,F403
from .quant import QuantizedTensor, dequantize, quantize, quantize_fp8, quantize_int8, quantize_nvfp4  # noqa: F401
from .attention import attention, attention_bf16, attention_exact, attention_fp8, attention_int8_fp8, attention_nvfp4  # noqa: F401
from .linear import gemm_fp8, gemm_nvfp4, linear_fp8, linear_nvfp4, quantize_weight_fp8, quantize_weight_nvfp4  # noqa: F401
from .rope import rope3d, rope3d_freqs  # noqa: F401
