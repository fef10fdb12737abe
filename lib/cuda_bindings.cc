// The one torch-aware file of the CUDA backend: checks tensors, allocates outputs, takes the
// current stream and a device guard, fills the plain param structs of include/ac4k_kernel and
// calls the launcher that this build compiled (one arch, chosen at install time).
//
// Every op is a torch custom op (namespace ac4k) so torch.compile(fullgraph=True) and CUDA-graph
// capture see it; fake implementations live in python/ac4k_kernel/ops/_fake.py. Ops that write
// into caller buffers are separate `*_out` schemas that declare the mutation.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>
#include <torch/library.h>

#include <string>
#include <tuple>

#include "ac4k_kernel/ops.h"

#if defined(AC4K_ARCH_SM90A)
#define AC4K_ARCH_NAME "sm90a"
#else
#error "ac4k_kernel: no arch selected; setup.py passes -DAC4K_ARCH_<ARCH>=1"
#endif

namespace {

using ac4k::Granularity;
using ac4k::ScalarType;

// Messages never stream numbers through std::ostream here: with a newer g++ than the process's
// libstdc++ (seen on the device image, /opt/gcc), the numeric inserter inlined into this module
// crashes. std::to_string goes through snprintf and is safe.
std::string shape_str(at::IntArrayRef s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

void check_cuda_call(cudaError_t err, const char* op) {
  TORCH_CHECK(err != cudaErrorNotSupported, "ac4k::", op,
              ": this argument combination is not implemented for " AC4K_ARCH_NAME);
  TORCH_CHECK(err == cudaSuccess, "ac4k::", op, ": CUDA error: ", cudaGetErrorString(err));
}

ScalarType to_ac4k(at::ScalarType t) {
  switch (t) {
    case at::kBFloat16: return ScalarType::BFloat16;
    case at::kHalf: return ScalarType::Float16;
    case at::kFloat: return ScalarType::Float32;
    case at::kChar: return ScalarType::Int8;
    case at::kFloat8_e4m3fn: return ScalarType::Float8E4M3;
    case at::kByte: return ScalarType::UInt8;
    default: TORCH_CHECK(false, "ac4k: unsupported dtype ", c10::toString(t));
  }
}

void check_cuda_tensor(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.is_cuda(), "ac4k::", op, ": ", name, " must be a CUDA tensor, got device ", t.device().str());
}

void check_same_device(const at::Tensor& a, const at::Tensor& b, const char* op, const char* name) {
  TORCH_CHECK(a.device() == b.device(), "ac4k::", op, ": ", name, " is on ", b.device().str(),
              " but x is on ", a.device().str());
}

void check_half_input(const at::Tensor& x, const char* op, const char* name) {
  check_cuda_tensor(x, op, name);
  TORCH_CHECK(x.scalar_type() == at::kBFloat16 || x.scalar_type() == at::kHalf, "ac4k::", op, ": ", name,
              " must be bfloat16 or float16, got ", c10::toString(x.scalar_type()));
  TORCH_CHECK(x.dim() >= 1, "ac4k::", op, ": ", name, " must have at least one dimension");
  TORCH_CHECK(x.size(-1) <= 1 || x.stride(-1) == 1, "ac4k::", op, ": ", name,
              " must have a contiguous last dim (stride 1), got strides ", shape_str(x.strides()));
}

void check_output(const at::Tensor& t, at::ScalarType dtype, at::IntArrayRef shape, const at::Tensor& x,
                  const char* op, const char* name) {
  check_cuda_tensor(t, op, name);
  check_same_device(x, t, op, name);
  TORCH_CHECK(t.scalar_type() == dtype, "ac4k::", op, ": ", name, " must be ", c10::toString(dtype), ", got ",
              c10::toString(t.scalar_type()));
  TORCH_CHECK(t.sizes() == shape, "ac4k::", op, ": ", name, " must have shape ", shape_str(shape), ", got ",
              shape_str(t.sizes()));
  TORCH_CHECK(t.is_contiguous(), "ac4k::", op, ": ", name, " must be contiguous");
}

// Leading dims of x as a RowView, merging dims that are contiguous with each other.
ac4k::RowView row_view(const at::Tensor& x, const char* op) {
  ac4k::RowView v;
  int n = 0;
  int64_t size[16], stride[16];
  for (int64_t d = 0; d + 1 < x.dim(); ++d) {
    if (x.size(d) == 1) continue;
    if (n > 0 && stride[n - 1] == x.stride(d) * x.size(d)) {
      size[n - 1] *= x.size(d);
      stride[n - 1] = x.stride(d);
    } else {
      TORCH_CHECK(n < 16, "ac4k::", op, ": too many dims");
      size[n] = x.size(d);
      stride[n] = x.stride(d);
      ++n;
    }
  }
  if (n == 0) {
    size[0] = 1;
    stride[0] = x.size(-1);
    n = 1;
  }
  TORCH_CHECK(n <= ac4k::RowView::kMaxDims, "ac4k::", op, ": x has ", std::to_string(n),
              " non-mergeable leading dims (at most 4); call .contiguous() first");
  v.ndim = n;
  for (int i = 0; i < n; ++i) {
    v.size[i] = size[i];
    v.stride[i] = stride[i];
  }
  return v;
}

Granularity parse_granularity(const std::string& g, const char* op) {
  if (g == "per_token") return Granularity::PerToken;
  if (g == "per_block") return Granularity::PerBlock;
  if (g == "per_channel") return Granularity::PerChannel;
  TORCH_CHECK(false, "ac4k::", op, ": granularity must be per_token, per_block or per_channel, got '", g, "'");
}

// ------------------------------------------------------------------------------ quantize_int8

std::vector<int64_t> per_token_scale_shape(const at::Tensor& x) {
  return std::vector<int64_t>(x.sizes().begin(), x.sizes().end() - 1);
}

void quantize_int8_out(const at::Tensor& x, const std::string& granularity, int64_t block_size,
                       const std::string& layout, at::Tensor& out, at::Tensor& scales) {
  const char* op = "quantize_int8";
  check_half_input(x, op, "x");
  const Granularity g = parse_granularity(granularity, op);
  TORCH_CHECK(g == Granularity::PerToken, "ac4k::", op, ": granularity '", granularity,
              "' is not implemented for " AC4K_ARCH_NAME " yet (available: per_token)");
  (void)block_size;
  (void)layout;
  check_output(out, at::kChar, x.sizes(), x, op, "out");
  check_output(scales, at::kFloat, per_token_scale_shape(x), x, op, "scales");
  if (x.numel() == 0 && scales.numel() == 0) return;

  c10::cuda::CUDAGuard guard(x.device());
  ac4k::QuantizeParams p;
  p.x = x.data_ptr();
  p.x_dtype = to_ac4k(x.scalar_type());
  p.x_rows = row_view(x, op);
  p.cols = x.size(-1);
  p.rows = scales.numel();
  p.q = out.data_ptr();
  p.scales = scales.data_ptr<float>();
  p.granularity = g;
  check_cuda_call(ac4k::quantize_int8(p, c10::cuda::getCurrentCUDAStream(x.device().index()).stream()), op);
}

std::tuple<at::Tensor, at::Tensor> quantize_int8(const at::Tensor& x, const std::string& granularity,
                                                 int64_t block_size, const std::string& layout) {
  check_half_input(x, "quantize_int8", "x");
  at::Tensor out = at::empty(x.sizes(), x.options().dtype(at::kChar));
  at::Tensor scales = at::empty(per_token_scale_shape(x), x.options().dtype(at::kFloat));
  quantize_int8_out(x, granularity, block_size, layout, out, scales);
  return {out, scales};
}

}  // namespace

TORCH_LIBRARY(ac4k, m) {
  m.def("quantize_int8(Tensor x, str granularity=\"per_token\", int block_size=0, str layout=\"BNHD\")"
        " -> (Tensor, Tensor)");
  m.def("quantize_int8_out(Tensor x, str granularity, int block_size, str layout, Tensor(a!) out,"
        " Tensor(b!) scales) -> ()");
}

TORCH_LIBRARY_IMPL(ac4k, CUDA, m) {
  m.impl("quantize_int8", &quantize_int8);
  m.impl("quantize_int8_out", &quantize_int8_out);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "ac4k_kernel CUDA backend, built for " AC4K_ARCH_NAME;
  m.attr("__arch__") = AC4K_ARCH_NAME;
  m.attr("__backend__") = "cuda";
  // Direct bindings (no dispatcher); the Python API goes through torch.ops.ac4k for torch.compile.
  m.def("quantize_int8", &quantize_int8, pybind11::arg("x"), pybind11::arg("granularity") = "per_token",
        pybind11::arg("block_size") = 0, pybind11::arg("layout") = "BNHD");
}
