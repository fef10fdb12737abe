// The one torch-aware file of the CUDA backend: checks tensors, allocates outputs, takes the
// current stream and a device guard, fills the plain param structs of include/ac4k_kernel and
// calls the launcher that this build compiled (one arch, chosen at install time).
//
// Every op is a torch custom op (namespace ac4k) so torch.compile(fullgraph=True) and CUDA-graph
// capture see it; fake implementations live in python/ac4k_kernel/ops/_fake.py. Ops that write
// into caller buffers are separate `*_out` schemas that declare the mutation.
#include <ATen/MemoryOverlap.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <tuple>
#include <vector>

#include "ac4k_kernel/ops.h"

#if defined(AC4K_ARCH_SM90A)
#define AC4K_ARCH_NAME "sm90a"
#elif defined(AC4K_ARCH_SM89)
#define AC4K_ARCH_NAME "sm89"
#else
#error "ac4k_kernel: no arch selected; setup.py passes -DAC4K_ARCH_<ARCH>=1"
#endif

#ifndef AC4K_SASS_CC  // 10 * major + minor of the SASS inside (setup.py sets it)
#error "ac4k_kernel: AC4K_SASS_CC not set; setup.py passes -DAC4K_SASS_CC=<cc>"
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

// ------------------------------------------------------------------------------ quantize (8-bit)

// x as [B, S, H, D] for per_block / per_channel: 4-D in the given layout, or 2-D [T, C].
ac4k::TokenView token_view(const at::Tensor& t, const std::string& layout, const char* op, const char* name) {
  ac4k::TokenView v;
  if (t.dim() == 2) {
    v.S = t.size(0);
    v.D = t.size(1);
    v.stride_s = t.stride(0);
    return v;
  }
  TORCH_CHECK(t.dim() == 4, "ac4k::", op, ": per_block / per_channel need ", name,
              " of shape [B, S, H, D] (BNHD), [B, H, S, D] (BHND) or [T, C], got ", shape_str(t.sizes()));
  TORCH_CHECK(layout == "BNHD" || layout == "BHND", "ac4k::", op, ": layout must be BNHD or BHND, got '", layout, "'");
  const bool bnhd = layout == "BNHD";
  v.B = t.size(0);
  v.S = t.size(bnhd ? 1 : 2);
  v.H = t.size(bnhd ? 2 : 1);
  v.D = t.size(3);
  v.stride_b = t.stride(0);
  v.stride_s = t.stride(bnhd ? 1 : 2);
  v.stride_h = t.stride(bnhd ? 2 : 1);
  return v;
}

// per_channel of a 2-D [T, C] with C > 256 (a linear layer's activation): the columns regrouped as
// heads of D' channels, [1, T, C / D', D'] (D' the largest multiple of 8 up to 256 dividing C), so
// that the kernels' head-dim limit still holds. The statistic is per column either way, and the
// scales [C] are [1, C / D', D'] in the same order.
void split_wide_columns(ac4k::TokenView& v) {
  if (v.D <= 256 || v.D % 8 != 0) return;
  int64_t d = 256;
  while (v.D % d != 0) d -= 8;
  v.H = v.D / d;
  v.stride_h = d;
  v.D = d;
}

std::vector<int64_t> scale_shape_8bit(const at::Tensor& x, Granularity g, int64_t block_size, const std::string& layout,
                                      const char* op) {
  if (g == Granularity::PerToken) return std::vector<int64_t>(x.sizes().begin(), x.sizes().end() - 1);
  const ac4k::TokenView v = token_view(x, layout, op, "x");
  if (g == Granularity::PerBlock) {
    TORCH_CHECK(block_size > 0, "ac4k::", op, ": per_block needs block_size > 0, got ", std::to_string(block_size));
    const int64_t nblk = (v.S + block_size - 1) / block_size;
    return x.dim() == 2 ? std::vector<int64_t>{nblk} : std::vector<int64_t>{v.B, v.H, nblk};
  }
  return x.dim() == 2 ? std::vector<int64_t>{v.D} : std::vector<int64_t>{v.B, v.H, v.D};
}

using Launcher8 = cudaError_t (*)(const ac4k::QuantizeParams&, cudaStream_t);

void quantize_8bit_out(const char* op, Launcher8 launch, at::ScalarType qdtype, const at::Tensor& x,
                       const std::string& granularity, int64_t block_size, const std::string& layout, at::Tensor& out,
                       at::Tensor& scales) {
  check_half_input(x, op, "x");
  const Granularity g = parse_granularity(granularity, op);
  check_output(out, qdtype, x.sizes(), x, op, "out");
  check_output(scales, at::kFloat, scale_shape_8bit(x, g, block_size, layout, op), x, op, "scales");

  c10::cuda::CUDAGuard guard(x.device());
  ac4k::QuantizeParams p;
  p.x = x.data_ptr();
  p.x_dtype = to_ac4k(x.scalar_type());
  p.granularity = g;
  p.q = out.data_ptr();
  p.scales = scales.data_ptr<float>();
  if (g == Granularity::PerToken) {
    if (x.numel() == 0 && scales.numel() == 0) return;
    p.x_rows = row_view(x, op);
    p.cols = x.size(-1);
    p.rows = scales.numel();
  } else {
    p.xv = token_view(x, layout, op, "x");
    p.qv = token_view(out, layout, op, "out");
    if (g == Granularity::PerChannel && x.dim() == 2) {
      split_wide_columns(p.xv);
      split_wide_columns(p.qv);
    }
    p.block_size = static_cast<int32_t>(block_size);
  }
  const cudaError_t err = launch(p, c10::cuda::getCurrentCUDAStream(x.device().index()).stream());
  TORCH_CHECK(err != cudaErrorNotSupported, "ac4k::", op, ": not supported for these arguments on " AC4K_ARCH_NAME
              " (per_token rows up to 32768 elements, 8192 if the row is not a multiple of 8; per_block / "
              "per_channel need D % 8 == 0, D <= 256 (2-D per_channel: C <= 256 or C % 8 == 0), 16-byte aligned rows; per_block: block_size <= 4096 / ceil_pow2(D / 8))");
  check_cuda_call(err, op);
}

std::tuple<at::Tensor, at::Tensor> quantize_8bit(const char* op, Launcher8 launch, at::ScalarType qdtype,
                                                 const at::Tensor& x, const std::string& granularity,
                                                 int64_t block_size, const std::string& layout) {
  check_half_input(x, op, "x");
  const Granularity g = parse_granularity(granularity, op);
  at::Tensor out = at::empty(x.sizes(), x.options().dtype(qdtype));
  at::Tensor scales = at::empty(scale_shape_8bit(x, g, block_size, layout, op), x.options().dtype(at::kFloat));
  quantize_8bit_out(op, launch, qdtype, x, granularity, block_size, layout, out, scales);
  return {out, scales};
}

std::tuple<at::Tensor, at::Tensor> quantize_int8(const at::Tensor& x, const std::string& granularity,
                                                 int64_t block_size, const std::string& layout) {
  return quantize_8bit("quantize_int8", &ac4k::quantize_int8, at::kChar, x, granularity, block_size, layout);
}
void quantize_int8_out(const at::Tensor& x, const std::string& granularity, int64_t block_size,
                       const std::string& layout, at::Tensor& out, at::Tensor& scales) {
  quantize_8bit_out("quantize_int8", &ac4k::quantize_int8, at::kChar, x, granularity, block_size, layout, out, scales);
}
std::tuple<at::Tensor, at::Tensor> quantize_fp8(const at::Tensor& x, const std::string& granularity,
                                                int64_t block_size, const std::string& layout) {
  return quantize_8bit("quantize_fp8", &ac4k::quantize_fp8, at::kFloat8_e4m3fn, x, granularity, block_size, layout);
}
void quantize_fp8_out(const at::Tensor& x, const std::string& granularity, int64_t block_size,
                      const std::string& layout, at::Tensor& out, at::Tensor& scales) {
  quantize_8bit_out("quantize_fp8", &ac4k::quantize_fp8, at::kFloat8_e4m3fn, x, granularity, block_size, layout, out,
                    scales);
}

#if defined(AC4K_HAS_QUANTIZE_NVFP4)
// ------------------------------------------------------------------------------ quantize_nvfp4

int64_t leading_rows(const at::Tensor& x) {
  int64_t rows = 1;
  for (int64_t d = 0; d + 1 < x.dim(); ++d) rows *= x.size(d);
  return rows;
}

// Plain: [..., K / 16]. Swizzled: the [rows, K / 16] matrix padded to 128 x 4 tiles.
std::vector<int64_t> nvfp4_scale_shape(const at::Tensor& x, bool swizzled) {
  std::vector<int64_t> s(x.sizes().begin(), x.sizes().end());
  s.back() /= 16;
  if (!swizzled) return s;
  return {(leading_rows(x) + 127) / 128 * 128, (s.back() + 3) / 4 * 4};
}

// Packed E2M1 values [..., K / 2]; K must be a multiple of 16.
std::vector<int64_t> nvfp4_value_shape(const at::Tensor& x, const char* op) {
  TORCH_CHECK(x.size(-1) % 16 == 0, "ac4k::", op, ": the last dim must be a multiple of 16, got ",
              std::to_string(x.size(-1)));
  std::vector<int64_t> v(x.sizes().begin(), x.sizes().end());
  v.back() /= 2;
  return v;
}

bool parse_scale_layout(const std::string& l, const char* op) {
  TORCH_CHECK(l == "plain" || l == "swizzled", "ac4k::", op, ": scale_layout must be plain or swizzled, got '", l, "'");
  return l == "swizzled";
}

void quantize_nvfp4_out(const at::Tensor& x, const std::string& scale_layout, const c10::optional<at::Tensor>& gs_in,
                        at::Tensor& out, at::Tensor& scales, at::Tensor& global_scale) {
  const char* op = "quantize_nvfp4";
  check_half_input(x, op, "x");
  const bool swizzled = parse_scale_layout(scale_layout, op);
  check_output(out, at::kByte, nvfp4_value_shape(x, op), x, op, "out");
  check_output(scales, at::kFloat8_e4m3fn, nvfp4_scale_shape(x, swizzled), x, op, "scales");
  check_output(global_scale, at::kFloat, {}, x, op, "global_scale");
  if (gs_in.has_value()) {
    check_cuda_tensor(*gs_in, op, "global_scale (input)");
    check_same_device(x, *gs_in, op, "global_scale (input)");
    TORCH_CHECK(gs_in->scalar_type() == at::kFloat && gs_in->numel() == 1, "ac4k::", op,
                ": the given global_scale must be a float32 tensor of one element");
  }

  c10::cuda::CUDAGuard guard(x.device());
  at::Tensor amax = at::empty({1}, x.options().dtype(at::kFloat));
  ac4k::QuantizeNvfp4Params p;
  p.x = x.data_ptr();
  p.x_dtype = to_ac4k(x.scalar_type());
  p.x_rows = row_view(x, op);
  p.cols = x.size(-1);
  p.rows = leading_rows(x);
  p.q = out.data_ptr();
  p.block_scales = scales.data_ptr();
  p.swizzled = swizzled;
  p.global_scale = global_scale.data_ptr<float>();
  p.global_scale_in = gs_in.has_value() ? gs_in->data_ptr<float>() : nullptr;
  p.amax_scratch = amax.data_ptr<float>();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(x.device().index()).stream();
  const cudaError_t err = ac4k::quantize_nvfp4(p, stream);  // also zeroes the swizzled layout's padding
  TORCH_CHECK(err != cudaErrorNotSupported, "ac4k::", op, ": x needs 16-byte aligned rows (row strides a multiple of 8)");
  check_cuda_call(err, op);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> quantize_nvfp4(const at::Tensor& x, const std::string& scale_layout,
                                                              const c10::optional<at::Tensor>& global_scale) {
  const char* op = "quantize_nvfp4";
  check_half_input(x, op, "x");
  const bool swizzled = parse_scale_layout(scale_layout, op);
  at::Tensor out = at::empty(nvfp4_value_shape(x, op), x.options().dtype(at::kByte));
  at::Tensor scales = at::empty(nvfp4_scale_shape(x, swizzled), x.options().dtype(at::kFloat8_e4m3fn));
  at::Tensor gs = at::empty({}, x.options().dtype(at::kFloat));
  quantize_nvfp4_out(x, scale_layout, global_scale, out, scales, gs);
  return {out, scales, gs};
}

#endif  // AC4K_HAS_QUANTIZE_NVFP4

// The rotation's arguments for x [B, S, H, D] (rope3d and the ops fusing it): grid_sizes int64
// [B, 3] on the CPU or on x's device; freqs complex128 / complex64 [max_pos, D/2], or float32 cos
// with `sin` float32, on x's device. Checked here, on the host and without a sync: shapes, dtypes,
// devices, and the values of CPU grid sizes (passed to the kernel by value when B <= 32). The
// values of GPU grid sizes are checked by the kernel (device assert). Returns the device copy of
// the grid sizes, if any, to be kept alive until the launch is queued.
at::Tensor rope_freqs(ac4k::RopeFreqs& p, const at::Tensor& x, int64_t B, int64_t S, int64_t D,
                      const at::Tensor& grid_sizes, const at::Tensor& freqs, const c10::optional<at::Tensor>& sin,
                      const char* op) {
  const int64_t c = D / 2;
  check_same_device(x, freqs, op, "freqs");
  if (sin.has_value()) {
    check_same_device(x, *sin, op, "sin");
    TORCH_CHECK(freqs.scalar_type() == at::kFloat && sin->scalar_type() == at::kFloat, "ac4k::", op,
                ": cos and sin must be float32, got ", c10::toString(freqs.scalar_type()), " and ",
                c10::toString(sin->scalar_type()));
    TORCH_CHECK(freqs.dim() == 2 && freqs.size(1) == c && sin->sizes() == freqs.sizes(), "ac4k::", op,
                ": cos and sin must both be [max_pos, D/2 = ", std::to_string(c), "], got ", shape_str(freqs.sizes()),
                " and ", shape_str(sin->sizes()));
    TORCH_CHECK(freqs.stride(1) == 1 && sin->stride(1) == 1, "ac4k::", op, ": cos and sin need a contiguous last dim");
    p.table = ac4k::RopeTable::CosSin;
    p.sin = sin->data_ptr<float>();
    p.sin_ld = sin->stride(0);
  } else {
    TORCH_CHECK(freqs.scalar_type() == at::kComplexDouble || freqs.scalar_type() == at::kComplexFloat, "ac4k::", op,
                ": freqs must be complex128 or complex64 (or pass cos and sin), got ",
                c10::toString(freqs.scalar_type()));
    TORCH_CHECK(freqs.dim() == 2 && freqs.size(1) == c, "ac4k::", op, ": freqs must be [max_pos, D/2 = ",
                std::to_string(c), "], got ", shape_str(freqs.sizes()));
    TORCH_CHECK(freqs.stride(1) == 1, "ac4k::", op, ": freqs needs a contiguous last dim");
    const bool c128 = freqs.scalar_type() == at::kComplexDouble;
    TORCH_CHECK(reinterpret_cast<uintptr_t>(freqs.data_ptr()) % (c128 ? 16 : 8) == 0, "ac4k::", op,
                ": freqs must be aligned to its element size");
    p.table = c128 ? ac4k::RopeTable::Complex128 : ac4k::RopeTable::Complex64;
  }
  p.freqs = freqs.data_ptr();
  p.freqs_ld = freqs.stride(0);
  p.max_pos = freqs.size(0);
  TORCH_CHECK(p.max_pos < (int64_t(1) << 31), "ac4k::", op, ": freqs has too many positions");

  TORCH_CHECK(grid_sizes.scalar_type() == at::kLong && grid_sizes.dim() == 2 && grid_sizes.size(0) == B &&
                  grid_sizes.size(1) == 3,
              "ac4k::", op, ": grid_sizes must be an int64 [B, 3] = [", std::to_string(B), ", 3] tensor, got ",
              c10::toString(grid_sizes.scalar_type()), " ", shape_str(grid_sizes.sizes()));
  at::Tensor grid_dev;
  if (grid_sizes.is_cpu()) {
    const at::Tensor g = grid_sizes.contiguous();
    const int64_t* v = g.data_ptr<int64_t>();
    for (int64_t i = 0; i < B; ++i) {
      const int64_t f = v[3 * i], h = v[3 * i + 1], w = v[3 * i + 2];
      const std::string at_i = "grid_sizes[" + std::to_string(i) + "] = (" + std::to_string(f) + ", " +
                               std::to_string(h) + ", " + std::to_string(w) + ")";
      TORCH_CHECK(f >= 0 && h >= 0 && w >= 0, "ac4k::", op, ": ", at_i, " has a negative size");
      TORCH_CHECK(f <= p.max_pos && h <= p.max_pos && w <= p.max_pos, "ac4k::", op, ": freqs has ",
                  std::to_string(p.max_pos), " positions, ", at_i, " needs ", std::to_string(std::max({f, h, w})));
      TORCH_CHECK(f * h <= S && f * h * w <= S, "ac4k::", op, ": ", at_i, " covers ",
                  f * h <= S ? std::to_string(f * h * w) : "more than " + std::to_string(S),
                  " tokens, more than S = ", std::to_string(S));
    }
    if (B <= ac4k::RopeFreqs::kMaxHostGrid) {
      for (int64_t i = 0; i < 3 * B; ++i) p.host_grid[i] = static_cast<int32_t>(v[i]);
    } else {  // pinned, so the copy is queued on the stream without a host sync
      grid_dev = g.pin_memory().to(x.device(), at::kLong, /*non_blocking=*/true);
    }
  } else {
    check_same_device(x, grid_sizes, op, "grid_sizes");
    grid_dev = grid_sizes.contiguous();
  }
  if (grid_dev.defined()) p.grid_sizes = grid_dev.data_ptr<int64_t>();
  p.split0 = static_cast<int32_t>(c - 2 * (c / 3));
  p.split1 = static_cast<int32_t>(p.split0 + c / 3);
  return grid_dev;
}

// For the ops that rotate on the way (quantize_attention_kv's K, the 8-bit attention kernel's Q):
// p's table, after rope_freqs, converted to HiLo on x's stream (one small kernel) and pointed to.
// Returns the table, to be kept alive until the launch is queued.
at::Tensor rope_table_hilo(ac4k::RopeFreqs& p, const at::Tensor& x, int64_t D, const char* op) {
  const int pairs = static_cast<int>(D / 2);
  at::Tensor t = at::empty({p.max_pos, pairs, 4}, x.options().dtype(at::kFloat));
  const cudaError_t err =
      ac4k::rope_table(p, pairs, t.data_ptr(), c10::cuda::getCurrentCUDAStream(x.device().index()).stream());
  TORCH_CHECK(err == cudaSuccess, "ac4k::", op, ": rope table conversion failed: ", cudaGetErrorString(err));
  p.table = ac4k::RopeTable::HiLo;
  p.freqs = t.data_ptr();
  p.freqs_ld = pairs;
  p.sin = nullptr;
  p.sin_ld = 0;
  return t;
}

// The fused ops' optional rope arguments: none, or grid_sizes and freqs (and sin for a cos / sin
// table), read into f by rope_freqs for x's view v. Returns whether x is rotated; grid_dev keeps the
// grid's device copy alive until the launch is queued.
bool optional_rope(ac4k::RopeFreqs& f, at::Tensor& grid_dev, const at::Tensor& x, const ac4k::TokenView& v,
                   const c10::optional<at::Tensor>& grid_sizes, const c10::optional<at::Tensor>& freqs,
                   const c10::optional<at::Tensor>& sin, const char* op) {
  TORCH_CHECK(grid_sizes.has_value() == freqs.has_value() && (!sin.has_value() || freqs.has_value()), "ac4k::", op,
              ": rope needs both grid_sizes and freqs");
  if (!grid_sizes.has_value()) return false;
  grid_dev = rope_freqs(f, x, v.B, v.S, v.D, *grid_sizes, *freqs, sin, op);
  return true;
}

// ------------------------------------------------------------------------------ attention (int8 x fp8)

// The kernels' 16-byte vectors (rope3d, the attention output): data pointer and B / S / H strides of [B, S, H, D] (a dim of size
// one never moves, whatever its stride).
bool rows_16b_aligned(const at::Tensor& t) {
  bool ok = reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0;
  for (int d = 0; d < 3; ++d) ok = ok && (t.size(d) == 1 || t.stride(d) % 8 == 0);
  return ok;
}


// The head dims of the attention kernels and their quantizers.
void check_head_dim(int64_t D, const char* op) {
  TORCH_CHECK(D == 64 || D == 128, "ac4k::", op, ": head dim must be 64 or 128, got ", std::to_string(D));
}

// An 8-bit attention operand's format argument (k_precision, q_precision): true for E4M3.
bool fp8_format(const std::string& precision, const char* op, const char* name) {
  TORCH_CHECK(precision == "int8" || precision == "fp8e4m3", "ac4k::", op, ": ", name,
              " must be 'int8' or 'fp8e4m3', got '", precision, "'");
  return precision == "fp8e4m3";
}

void check_attention_input(const at::Tensor& t, const char* op, const char* name, const at::Tensor& q) {
  check_half_input(t, op, name);
  TORCH_CHECK(t.dim() == 4, "ac4k::", op, ": ", name, " must be 4-D ([B, S, H, D] for BNHD, [B, H, S, D] for BHND), got ",
              shape_str(t.sizes()));
  check_same_device(q, t, op, name);
  TORCH_CHECK(t.scalar_type() == q.scalar_type(), "ac4k::", op, ": ", name, " must have q's dtype ",
              c10::toString(q.scalar_type()), ", got ", c10::toString(t.scalar_type()));
}

// k, v (bf16 / fp16) -> the K / V inputs of mha_int8_x_fp8_fwd (layouts in include/ac4k_kernel/types.h).
// With grid_sizes and freqs (and sin for a cos / sin table), K is rotated by rope3d in the same pass
// (see rope_freqs for what is checked where).
// k_precision "fp8e4m3": K in E4M3 (for mha_fp8_fwd) instead of INT8.
std::vector<at::Tensor> quantize_attention_kv(const at::Tensor& k, const at::Tensor& v, const std::string& layout,
                                              const c10::optional<at::Tensor>& grid_sizes,
                                              const c10::optional<at::Tensor>& freqs,
                                              const c10::optional<at::Tensor>& sin, const std::string& k_precision) {
  const char* op = "quantize_attention_kv";
  const bool k_fp8 = fp8_format(k_precision, op, "k_precision");
  check_attention_input(k, op, "k", k);
  check_attention_input(v, op, "v", k);
  const ac4k::TokenView kv = token_view(k, layout, op, "k"), vv = token_view(v, layout, op, "v");
  check_head_dim(kv.D, op);
  TORCH_CHECK(k.sizes() == v.sizes(), "ac4k::", op, ": k and v must have the same shape, got ", shape_str(k.sizes()),
              " and ", shape_str(v.sizes()));
  TORCH_CHECK(kv.S >= 1, "ac4k::", op, ": k and v need at least one token");

  const auto f32 = k.options().dtype(at::kFloat);
  at::Tensor k8 = at::empty(k.sizes(), k.options().dtype(k_fp8 ? at::kFloat8_e4m3fn : at::kChar));
  at::Tensor k_scale = at::empty({kv.B, kv.H, (kv.S + 63) / 64}, f32);
  at::Tensor k_mean = at::empty({kv.B, kv.H, kv.D}, f32);
  const int64_t s_pad = (kv.S + 127) / 128 * 128;
  at::Tensor vt = at::empty({kv.B, kv.H, kv.D, s_pad}, k.options().dtype(at::kFloat8_e4m3fn));
  at::Tensor v_scale = at::empty({kv.B, kv.H, kv.D}, f32);

  c10::cuda::CUDAGuard guard(k.device());
  ac4k::QuantizeAttentionKvParams p;
  p.k = k.data_ptr();
  p.v = v.data_ptr();
  p.dtype = to_ac4k(k.scalar_type());
  p.kv = kv;
  p.vv = vv;
  p.k8 = static_cast<int8_t*>(k8.data_ptr());
  p.k_fp8 = k_fp8;
  p.k8v = token_view(k8, layout, op, "k8");
  p.k_scale = k_scale.data_ptr<float>();
  p.k_mean = k_mean.data_ptr<float>();
  p.s_pad = s_pad;
  p.vt = static_cast<uint8_t*>(vt.data_ptr());
  p.v_scale = v_scale.data_ptr<float>();
  const int64_t n_scratch = ac4k::quantize_attention_kv_scratch(p);
  at::Tensor scratch;
  if (n_scratch > 0) {
    scratch = at::empty({n_scratch}, f32);
    p.scratch = scratch.data_ptr<float>();
  }
  at::Tensor grid_dev, table;
  p.rope = optional_rope(p.rope_freqs, grid_dev, k, kv, grid_sizes, freqs, sin, op);
  if (p.rope) table = rope_table_hilo(p.rope_freqs, k, kv.D, op);
  const cudaError_t err = ac4k::quantize_attention_kv(p, c10::cuda::getCurrentCUDAStream(k.device().index()).stream());
  TORCH_CHECK(err != cudaErrorNotSupported, "ac4k::", op,
              ": not supported for these inputs (16-byte aligned data and token / head strides a multiple of 8 "
              "elements)");
  check_cuda_call(err, op);
  return {k8, k_scale, k_mean, vt, v_scale};
}

#if defined(AC4K_HAS_QUANTIZE_ATTENTION_Q)
// q (bf16 / fp16) -> the quantized-Q input of the 8-bit attention ops: INT8 (q_precision "int8") or
// E4M3 ("fp8e4m3") per 16-token block of one head, in q's layout, and scales [B, H, ceil(S / 16)];
// bit for bit quantize_int8 / quantize_fp8(q, "per_block", 16, layout). With grid_sizes and freqs
// (and sin for a cos / sin table), q is rotated by rope3d first, bit for bit as rope3d(q) would be.
std::vector<at::Tensor> quantize_attention_q(const at::Tensor& q, const std::string& layout,
                                             const c10::optional<at::Tensor>& grid_sizes,
                                             const c10::optional<at::Tensor>& freqs,
                                             const c10::optional<at::Tensor>& sin, const std::string& q_precision) {
  const char* op = "quantize_attention_q";
  const bool fp8 = fp8_format(q_precision, op, "q_precision");
  check_attention_input(q, op, "q", q);
  const ac4k::TokenView qv = token_view(q, layout, op, "q");
  check_head_dim(qv.D, op);
  at::Tensor q8 = at::empty(q.sizes(), q.options().dtype(fp8 ? at::kFloat8_e4m3fn : at::kChar));
  at::Tensor q_scale = at::empty({qv.B, qv.H, (qv.S + 15) / 16}, q.options().dtype(at::kFloat));

  c10::cuda::CUDAGuard guard(q.device());
  ac4k::QuantizeAttentionQParams p;
  p.q = q.data_ptr();
  p.dtype = to_ac4k(q.scalar_type());
  p.qv = qv;
  p.q8 = static_cast<uint8_t*>(q8.data_ptr());
  p.q8v = token_view(q8, layout, op, "q8");
  p.fp8 = fp8;
  p.q_scale = q_scale.data_ptr<float>();
  at::Tensor grid_dev;  // the table as given: each CTA builds its tokens' multipliers once
  p.rope = optional_rope(p.rope_freqs, grid_dev, q, qv, grid_sizes, freqs, sin, op);
  const cudaError_t err = ac4k::quantize_attention_q(p, c10::cuda::getCurrentCUDAStream(q.device().index()).stream());
  TORCH_CHECK(err != cudaErrorNotSupported, "ac4k::", op,
              ": not supported for these inputs (16-byte aligned data and token / head strides a multiple of 8 "
              "elements)");
  check_cuda_call(err, op);
  return {q8, q_scale};
}
#endif

// The 8-bit attention ops: k INT8 (mha_int8_x_fp8_fwd) or E4M3 (mha_fp8_fwd), from quantize_attention_kv.
// With grid_sizes and freqs (and sin for a cos / sin table), q is rotated by rope3d inside the kernel
// before its quantization (see rope_freqs for what is checked where); k must have been rotated by
// quantize_attention_kv with the same arguments.
// With q_scale, q comes quantized by quantize_attention_q (INT8, E4M3 for mha_fp8_fwd) and the output's
// dtype is out's (out_dtype for the functional form, bf16 by default).
template <bool kFp8>
at::Tensor mha_8bit_fwd_out(const at::Tensor& q, const at::Tensor& k8, const at::Tensor& k_scale,
                            const at::Tensor& vt, const at::Tensor& v_scale, const std::string& layout, bool causal,
                            double sm_scale, bool return_lse, at::Tensor& out,
                            const c10::optional<at::Tensor>& grid_sizes, const c10::optional<at::Tensor>& freqs,
                            const c10::optional<at::Tensor>& sin, const c10::optional<at::Tensor>& q_scale) {
  const char* op = kFp8 ? "mha_fp8_fwd" : "mha_int8_x_fp8_fwd";
  const bool q_quantized = q_scale.has_value();
  if (q_quantized) {
#if !defined(AC4K_HAS_QUANTIZE_ATTENTION_Q)
    TORCH_CHECK(false, "ac4k::", op, ": this build (" AC4K_ARCH_NAME ") takes q in bf16 / fp16 only (no q_scale)");
#endif
    check_cuda_tensor(q, op, "q");
    TORCH_CHECK(q.scalar_type() == (kFp8 ? at::kFloat8_e4m3fn : at::kChar), "ac4k::", op, ": a quantized q must be ",
                kFp8 ? "float8_e4m3fn" : "int8", " (from quantize_attention_q), got ", c10::toString(q.scalar_type()));
    TORCH_CHECK(q.dim() == 4 && q.stride(-1) == 1, "ac4k::", op, ": q must be 4-D with a contiguous last dim");
    TORCH_CHECK(!grid_sizes.has_value(), "ac4k::", op,
                ": q is already quantized; rotate it in quantize_attention_q (grid_sizes / freqs there)");
    check_cuda_tensor(out, op, "out");
    TORCH_CHECK(out.scalar_type() == at::kBFloat16 || out.scalar_type() == at::kHalf, "ac4k::", op,
                ": out must be bfloat16 or float16, got ", c10::toString(out.scalar_type()));
  } else {
    check_attention_input(q, op, "q", q);
  }
  TORCH_CHECK(k8.scalar_type() == (kFp8 ? at::kFloat8_e4m3fn : at::kChar), "ac4k::", op, ": k must be ",
              kFp8 ? "float8_e4m3fn (quantize_attention_kv with k_precision='fp8e4m3')" : "int8 (from quantize_attention_kv)",
              ", got ", c10::toString(k8.scalar_type()));
  TORCH_CHECK(vt.scalar_type() == at::kFloat8_e4m3fn && vt.dim() == 4 && vt.is_contiguous(), "ac4k::", op,
              ": v must be the contiguous float8_e4m3fn [B, H, D, S_pad] tensor of quantize_attention_kv");
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{&k_scale, &v_scale}) {
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->is_contiguous() && t->dim() == 3, "ac4k::", op,
                ": scales must be contiguous float32 [B, H, n] tensors");
  }
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{&k8, &k_scale, &vt, &v_scale, &out})
    check_same_device(q, *t, op, "an input");
  TORCH_CHECK(reinterpret_cast<uintptr_t>(v_scale.data_ptr()) % 8 == 0, "ac4k::", op,
              ": v_scale must be 8-byte aligned (the kernel reads channel pairs)");
  const ac4k::TokenView qv = token_view(q, layout, op, "q"), kv = token_view(k8, layout, op, "k");
  if (q_quantized) {
    check_same_device(q, *q_scale, op, "q_scale");
    TORCH_CHECK(q_scale->scalar_type() == at::kFloat && q_scale->is_contiguous() && q_scale->dim() == 3 &&
                    q_scale->size(0) == qv.B && q_scale->size(1) == qv.H && q_scale->size(2) == (qv.S + 15) / 16,
                "ac4k::", op, ": q_scale must be the contiguous float32 [B, H, ceil(Sq / 16)] tensor of "
                "quantize_attention_q, got ", c10::toString(q_scale->scalar_type()), " ", shape_str(q_scale->sizes()));
  }
  TORCH_CHECK(k8.dim() == 4 && k8.stride(-1) == 1, "ac4k::", op, ": k must be 4-D with a contiguous last dim");
  TORCH_CHECK(qv.B == kv.B && qv.D == kv.D, "ac4k::", op, ": q ", shape_str(q.sizes()), " and k ",
              shape_str(k8.sizes()), " differ in batch or head dim");
  check_head_dim(qv.D, op);
  TORCH_CHECK(kv.H > 0 && qv.H % kv.H == 0, "ac4k::", op, ": q heads (", std::to_string(qv.H),
              ") must be a multiple of k/v heads (", std::to_string(kv.H), ")");
  TORCH_CHECK(vt.size(0) == kv.B && vt.size(1) == kv.H && vt.size(2) == kv.D && vt.size(3) % 128 == 0 &&
                  vt.size(3) >= kv.S,
              "ac4k::", op, ": v has shape ", shape_str(vt.sizes()), ", which does not match k");
  TORCH_CHECK(k_scale.size(0) == kv.B && k_scale.size(1) == kv.H && k_scale.size(2) == (kv.S + 63) / 64 &&
                  v_scale.size(0) == kv.B && v_scale.size(1) == kv.H && v_scale.size(2) == kv.D,
              "ac4k::", op, ": k_scale must be [B, H, ceil(Sk / 64)] and v_scale [B, H, D]");
  TORCH_CHECK(q_quantized || out.scalar_type() == q.scalar_type(), "ac4k::", op, ": out must have q's dtype ",
              c10::toString(q.scalar_type()), ", got ", c10::toString(out.scalar_type()));
  TORCH_CHECK(out.sizes() == q.sizes() && out.stride(-1) == 1, "ac4k::", op, ": out must have q's shape ",
              shape_str(q.sizes()), " and a contiguous last dim");
  TORCH_CHECK(rows_16b_aligned(out), "ac4k::", op,  // the kernel stores 16-byte row chunks
              ": out must be 16-byte aligned with strides a multiple of 8 elements");
  at::Tensor lse = return_lse ? at::empty({qv.B, qv.H, qv.S}, k_scale.options()) : at::empty({0}, k_scale.options());

  c10::cuda::CUDAGuard guard(q.device());
  ac4k::Mha8bitParams p;
  p.q = q.data_ptr();
  p.q_dtype = to_ac4k(out.scalar_type());
  p.q_scale = q_quantized ? q_scale->data_ptr<float>() : nullptr;
  p.k = static_cast<const int8_t*>(k8.data_ptr());
  p.vt = static_cast<const uint8_t*>(vt.data_ptr());
  p.k_scale = k_scale.data_ptr<float>();
  p.v_scale = v_scale.data_ptr<float>();
  p.q_view = qv;
  p.k_view = kv;
  p.o_view = token_view(out, layout, op, "out");
  p.sk_pad = vt.size(3);
  p.o = out.data_ptr();
  p.lse = return_lse ? lse.data_ptr<float>() : nullptr;
  p.sm_scale = static_cast<float>(sm_scale);
  p.causal = causal;
#if !defined(AC4K_HAS_MHA_ROPE)
  TORCH_CHECK(!grid_sizes.has_value(), "ac4k::", op, ": this build (" AC4K_ARCH_NAME
              ") does not rotate q in the kernel; apply rope3d to q first");
#endif
  at::Tensor grid_dev, table;
  p.rope = optional_rope(p.rope_freqs, grid_dev, q, qv, grid_sizes, freqs, sin, op);
  if (p.rope) table = rope_table_hilo(p.rope_freqs, q, qv.D, op);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(q.device().index()).stream();
#if defined(AC4K_HAS_MHA_FP8)
  const cudaError_t err = kFp8 ? ac4k::mha_fp8_fwd(p, stream) : ac4k::mha_int8_x_fp8_fwd(p, stream);
#else
  const cudaError_t err = kFp8 ? cudaErrorNotSupported : ac4k::mha_int8_x_fp8_fwd(p, stream);
#endif
  TORCH_CHECK(err != cudaErrorNotSupported, "ac4k::", op,
              ": not supported for these shapes (head dim 64 or 128, q heads a multiple of k heads, 16-byte aligned "
              "q with token / head strides a multiple of 8 elements, 16 bytes for a quantized q)");
  check_cuda_call(err, op);
  return lse;
}

template <bool kFp8>
std::tuple<at::Tensor, at::Tensor> mha_8bit_fwd(const at::Tensor& q, const at::Tensor& k8, const at::Tensor& k_scale,
                                                const at::Tensor& vt, const at::Tensor& v_scale,
                                                const std::string& layout, bool causal, double sm_scale,
                                                bool return_lse, const c10::optional<at::Tensor>& grid_sizes,
                                                const c10::optional<at::Tensor>& freqs,
                                                const c10::optional<at::Tensor>& sin,
                                                const c10::optional<at::Tensor>& q_scale,
                                                c10::optional<at::ScalarType> out_dtype) {
  const at::ScalarType o_dtype = q_scale.has_value() ? out_dtype.value_or(at::kBFloat16)
                                                     : out_dtype.value_or(q.scalar_type());
  at::Tensor out = at::empty(q.sizes(), q.options().dtype(o_dtype));
  at::Tensor lse = mha_8bit_fwd_out<kFp8>(q, k8, k_scale, vt, v_scale, layout, causal, sm_scale, return_lse, out,
                                          grid_sizes, freqs, sin, q_scale);
  return {out, lse};
}

#if defined(AC4K_HAS_MHA_BF16)
// ------------------------------------------------------------------------------ attention (bf16)

// Unquantized attention: q, k, v bf16 (or all fp16) in `layout`, read by TMA (16-byte aligned rows).
at::Tensor mha_bf16_fwd_out(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const std::string& layout,
                            bool causal, double sm_scale, bool return_lse, at::Tensor& out) {
  const char* op = "mha_bf16_fwd";
  check_attention_input(q, op, "q", q);
  check_attention_input(k, op, "k", q);
  check_attention_input(v, op, "v", q);
  check_cuda_tensor(out, op, "out");
  check_same_device(q, out, op, "out");
  const ac4k::TokenView qv = token_view(q, layout, op, "q"), kv = token_view(k, layout, op, "k"),
                        vv = token_view(v, layout, op, "v");
  TORCH_CHECK(k.sizes() == v.sizes(), "ac4k::", op, ": k and v must have the same shape, got ", shape_str(k.sizes()),
              " and ", shape_str(v.sizes()));
  TORCH_CHECK(qv.B == kv.B && qv.D == kv.D, "ac4k::", op, ": q ", shape_str(q.sizes()), " and k ",
              shape_str(k.sizes()), " differ in batch or head dim");
  check_head_dim(qv.D, op);
  TORCH_CHECK(kv.H > 0 && qv.H % kv.H == 0, "ac4k::", op, ": q heads (", std::to_string(qv.H),
              ") must be a multiple of k/v heads (", std::to_string(kv.H), ")");
  TORCH_CHECK(kv.S >= 1, "ac4k::", op, ": k and v need at least one token");
  TORCH_CHECK(std::isfinite(sm_scale) && sm_scale >= 0, "ac4k::", op, ": sm_scale must be finite and >= 0, got ",
              std::to_string(sm_scale));
  for (const auto& [t, name] : {std::make_pair(&q, "q"), std::make_pair(&k, "k"), std::make_pair(&v, "v")}) {
    TORCH_CHECK(rows_16b_aligned(*t), "ac4k::", op, ": ", name,  // TMA tile loads
                " must be 16-byte aligned with strides a multiple of 8 elements, got strides ",
                shape_str(t->strides()), "; call .contiguous()");
  }
  TORCH_CHECK(out.scalar_type() == q.scalar_type(), "ac4k::", op, ": out must have q's dtype ",
              c10::toString(q.scalar_type()), ", got ", c10::toString(out.scalar_type()));
  TORCH_CHECK(out.sizes() == q.sizes() && out.stride(-1) == 1, "ac4k::", op, ": out must have q's shape ",
              shape_str(q.sizes()), " and a contiguous last dim");
  TORCH_CHECK(rows_16b_aligned(out), "ac4k::", op,  // the kernel stores 16-byte row chunks
              ": out must be 16-byte aligned with strides a multiple of 8 elements");
  const auto f32 = q.options().dtype(at::kFloat);
  at::Tensor lse = return_lse ? at::empty({qv.B, qv.H, qv.S}, f32) : at::empty({0}, f32);

  c10::cuda::CUDAGuard guard(q.device());
  ac4k::MhaBf16Params p;
  p.q = q.data_ptr();
  p.k = k.data_ptr();
  p.v = v.data_ptr();
  p.dtype = to_ac4k(q.scalar_type());
  p.q_view = qv;
  p.k_view = kv;
  p.v_view = vv;
  p.o_view = token_view(out, layout, op, "out");
  p.o = out.data_ptr();
  p.lse = return_lse ? lse.data_ptr<float>() : nullptr;
  p.sm_scale = static_cast<float>(sm_scale);
  p.causal = causal;
  const cudaError_t err = ac4k::mha_bf16_fwd(p, c10::cuda::getCurrentCUDAStream(q.device().index()).stream());
  TORCH_CHECK(err != cudaErrorNotSupported, "ac4k::", op,
              ": not supported for these shapes (head dim 64 or 128, q heads a multiple of k heads, 16-byte aligned "
              "q / k / v / out with strides a multiple of 8 elements, fewer than 2^31 tokens, B and H <= 65535)");
  check_cuda_call(err, op);
  return lse;
}

std::tuple<at::Tensor, at::Tensor> mha_bf16_fwd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                const std::string& layout, bool causal, double sm_scale,
                                                bool return_lse) {
  check_attention_input(q, "mha_bf16_fwd", "q", q);
  at::Tensor out = at::empty(q.sizes(), q.options());
  at::Tensor lse = mha_bf16_fwd_out(q, k, v, layout, causal, sm_scale, return_lse, out);
  return {out, lse};
}

#endif  // AC4K_HAS_MHA_BF16

#if defined(AC4K_HAS_MHA_NVFP4)
// ------------------------------------------------------------------------------ attention (nvfp4)

// One NVFP4 operand of mha_nvfp4_fwd: packed uint8 values, float8_e4m3fn block scales of 16 along
// the last dim (values' last dim / 8), a float32 global scale of one element, all on ref's device.
void check_nvfp4_attention_operand(const at::Tensor& vals, const at::Tensor& sf, const at::Tensor& gs,
                                   const at::Tensor& ref, const char* op, const std::string& n) {
  for (const auto& [t, name] : {std::make_pair(&vals, n), std::make_pair(&sf, n + "_scales"),
                                std::make_pair(&gs, n + "_global_scale")}) {
    check_cuda_tensor(*t, op, name.c_str());
    check_same_device(ref, *t, op, name.c_str());
  }
  TORCH_CHECK(vals.scalar_type() == at::kByte && vals.dim() == 4, "ac4k::", op, ": ", n,
              " must be packed E2M1, uint8 4-D, got ", c10::toString(vals.scalar_type()), " ", shape_str(vals.sizes()));
  TORCH_CHECK(sf.scalar_type() == at::kFloat8_e4m3fn && sf.dim() == 4, "ac4k::", op, ": ", n,
              "_scales must be float8_e4m3fn 4-D (plain layout), got ", c10::toString(sf.scalar_type()), " ",
              shape_str(sf.sizes()));
  std::vector<int64_t> want(vals.sizes().begin(), vals.sizes().end());
  want[3] = vals.size(3) / 8;
  TORCH_CHECK(vals.size(3) % 8 == 0 && sf.sizes() == at::IntArrayRef(want), "ac4k::", op, ": ", n, " ",
              shape_str(vals.sizes()), " and ", n, "_scales ", shape_str(sf.sizes()),
              " do not match (one scale per 16 values, i.e. per 8 packed bytes)");
  TORCH_CHECK(vals.stride(3) == 1 && sf.stride(3) == 1, "ac4k::", op, ": ", n, " and its scales need a contiguous last dim");
  TORCH_CHECK(gs.scalar_type() == at::kFloat && gs.numel() == 1, "ac4k::", op, ": ", n,
              "_global_scale must be a float32 tensor of one element");
}

// o = attention of the NVFP4 operands (quantize_nvfp4 of q, of the smoothed k, and of V^T padded
// to s_pad tokens); o in out's dtype.
at::Tensor mha_nvfp4_fwd_out(const at::Tensor& q, const at::Tensor& q_sf, const at::Tensor& q_gs, const at::Tensor& k,
                             const at::Tensor& k_sf, const at::Tensor& k_gs, const at::Tensor& vt,
                             const at::Tensor& vt_sf, const at::Tensor& v_gs, const std::string& layout, bool causal,
                             double sm_scale, bool return_lse, at::Tensor& out) {
  const char* op = "mha_nvfp4_fwd";
  check_nvfp4_attention_operand(q, q_sf, q_gs, q, op, "q");
  check_nvfp4_attention_operand(k, k_sf, k_gs, q, op, "k");
  check_nvfp4_attention_operand(vt, vt_sf, v_gs, q, op, "vt");
  ac4k::TokenView qv = token_view(q, layout, op, "q"), kv = token_view(k, layout, op, "k");
  qv.D *= 2;
  kv.D *= 2;
  TORCH_CHECK(qv.B == kv.B && qv.D == kv.D, "ac4k::", op, ": q ", shape_str(q.sizes()), " and k ",
              shape_str(k.sizes()), " differ in batch or head dim");
  check_head_dim(qv.D, op);
  TORCH_CHECK(kv.H > 0 && qv.H % kv.H == 0, "ac4k::", op, ": q heads (", std::to_string(qv.H),
              ") must be a multiple of k/v heads (", std::to_string(kv.H), ")");
  TORCH_CHECK(kv.S >= 1, "ac4k::", op, ": k and v need at least one token");
  const int64_t s_pad = 2 * vt.size(3);
  TORCH_CHECK(vt.size(0) == kv.B && vt.size(1) == kv.H && vt.size(2) == kv.D && s_pad % 128 == 0 && s_pad >= kv.S,
              "ac4k::", op, ": vt must be V^T packed along the tokens, [B, Hkv, D, s_pad / 2] = [", std::to_string(kv.B),
              ", ", std::to_string(kv.H), ", ", std::to_string(kv.D), ", s_pad / 2] with s_pad a multiple of 128 >= Sk = ",
              std::to_string(kv.S), ", got ", shape_str(vt.sizes()));
  TORCH_CHECK(vt.is_contiguous() && vt_sf.is_contiguous(), "ac4k::", op, ": vt and vt_scales must be contiguous");
  TORCH_CHECK(std::isfinite(sm_scale) && sm_scale >= 0, "ac4k::", op, ": sm_scale must be finite and >= 0, got ",
              std::to_string(sm_scale));
  check_cuda_tensor(out, op, "out");
  check_same_device(q, out, op, "out");
  TORCH_CHECK(out.scalar_type() == at::kBFloat16 || out.scalar_type() == at::kHalf, "ac4k::", op,
              ": out must be bfloat16 or float16, got ", c10::toString(out.scalar_type()));
  std::vector<int64_t> oshape(q.sizes().begin(), q.sizes().end());
  oshape[3] = qv.D;
  TORCH_CHECK(out.sizes() == at::IntArrayRef(oshape) && out.stride(-1) == 1, "ac4k::", op, ": out must have shape ",
              shape_str(oshape), " and a contiguous last dim, got ", shape_str(out.sizes()));
  TORCH_CHECK(rows_16b_aligned(out), "ac4k::", op, ": out must be 16-byte aligned with strides a multiple of 8 elements");
  const auto f32 = q.options().dtype(at::kFloat);
  at::Tensor lse = return_lse ? at::empty({qv.B, qv.H, qv.S}, f32) : at::empty({0}, f32);

  c10::cuda::CUDAGuard guard(q.device());
  ac4k::MhaNvfp4Params p;
  p.q = static_cast<const uint8_t*>(q.data_ptr());
  p.q_sf = static_cast<const uint8_t*>(q_sf.data_ptr());
  p.k = static_cast<const uint8_t*>(k.data_ptr());
  p.k_sf = static_cast<const uint8_t*>(k_sf.data_ptr());
  p.vt = static_cast<const uint8_t*>(vt.data_ptr());
  p.vt_sf = static_cast<const uint8_t*>(vt_sf.data_ptr());
  p.q_gs = q_gs.data_ptr<float>();
  p.k_gs = k_gs.data_ptr<float>();
  p.v_gs = v_gs.data_ptr<float>();
  p.q_view = qv;
  p.k_view = kv;
  p.q_sf_view = token_view(q_sf, layout, op, "q_scales");
  p.k_sf_view = token_view(k_sf, layout, op, "k_scales");
  p.o_view = token_view(out, layout, op, "out");
  p.s_pad = s_pad;
  p.dtype = to_ac4k(out.scalar_type());
  p.o = out.data_ptr();
  p.lse = return_lse ? lse.data_ptr<float>() : nullptr;
  p.sm_scale = static_cast<float>(sm_scale);
  p.causal = causal;
  at::Tensor scratch = at::empty({ac4k::mha_nvfp4_fwd_scratch(p)}, q.options().dtype(at::kByte));
  p.scratch = scratch.data_ptr();
  const cudaError_t err = ac4k::mha_nvfp4_fwd(p, c10::cuda::getCurrentCUDAStream(q.device().index()).stream());
  TORCH_CHECK(err != cudaErrorNotSupported, "ac4k::", op,
              ": not supported for these shapes (head dim 64 or 128, q heads a multiple of k heads, 8-byte aligned "
              "packed rows and 4-byte aligned scale rows, 16-byte aligned out, fewer than 2^31 tokens, B and H <= 65535)");
  check_cuda_call(err, op);
  return lse;
}

std::tuple<at::Tensor, at::Tensor> mha_nvfp4_fwd(const at::Tensor& q, const at::Tensor& q_sf, const at::Tensor& q_gs,
                                                 const at::Tensor& k, const at::Tensor& k_sf, const at::Tensor& k_gs,
                                                 const at::Tensor& vt, const at::Tensor& vt_sf, const at::Tensor& v_gs,
                                                 const std::string& layout, bool causal, double sm_scale,
                                                 bool return_lse, c10::optional<at::ScalarType> out_dtype) {
  check_nvfp4_attention_operand(q, q_sf, q_gs, q, "mha_nvfp4_fwd", "q");
  std::vector<int64_t> oshape(q.sizes().begin(), q.sizes().end());
  oshape[3] *= 2;
  at::Tensor out = at::empty(oshape, q.options().dtype(out_dtype.value_or(at::kBFloat16)));
  at::Tensor lse = mha_nvfp4_fwd_out(q, q_sf, q_gs, k, k_sf, k_gs, vt, vt_sf, v_gs, layout, causal, sm_scale,
                                     return_lse, out);
  return {out, lse};
}
#endif  // AC4K_HAS_MHA_NVFP4

// ------------------------------------------------------------------------------ rope3d

// token_view of a [B, S, H, D] tensor, with the stride of a dim of size one set to 0.
ac4k::TokenView rope_view(const at::Tensor& t, const char* op, const char* name) {
  ac4k::TokenView v = token_view(t, "BNHD", op, name);
  if (v.B == 1) v.stride_b = 0;
  if (v.S == 1) v.stride_s = 0;
  if (v.H == 1) v.stride_h = 0;
  return v;
}

// x, out [B, S, H, D] bf16 / fp16; grid_sizes int64 [B, 3] on the CPU or on x's device; freqs
// complex128 / complex64 [max_pos, D/2], or float32 cos with `sin` float32, on x's device.
// Checked here, on the host and without a sync: shapes, dtypes, devices, alignment, overlap, and
// the values of CPU grid sizes (passed to the kernel by value when B <= 32). The values of GPU
// grid sizes are checked by the kernel (device assert).
void rope3d_out(const at::Tensor& x, const at::Tensor& grid_sizes, const at::Tensor& freqs,
                const c10::optional<at::Tensor>& sin, at::Tensor& out) {
  const char* op = "rope3d";
  check_half_input(x, op, "x");
  TORCH_CHECK(x.dim() == 4, "ac4k::", op, ": x must be [B, S, H, D], got ", shape_str(x.sizes()));
  const int64_t B = x.size(0), S = x.size(1), D = x.size(3), c = D / 2;
  TORCH_CHECK(D % 2 == 0 && c / 3 > 0, "ac4k::", op, ": head dim D must be even and at least 6 (D/2 pairs split ",
              "over frame, height and width), got ", std::to_string(D));
  TORCH_CHECK(D % 8 == 0 && D <= 2048, "ac4k::", op, ": this kernel needs D a multiple of 8 and at most 2048, got ",
              std::to_string(D));
  TORCH_CHECK(B <= 65535 && S < (int64_t(1) << 31), "ac4k::", op, ": x ", shape_str(x.sizes()),
              " is too large (B <= 65535, S < 2^31)");
  check_cuda_tensor(out, op, "out");
  check_same_device(x, out, op, "out");
  TORCH_CHECK(out.scalar_type() == x.scalar_type() && out.sizes() == x.sizes(), "ac4k::", op,
              ": out must have x's dtype ", c10::toString(x.scalar_type()), " and shape ", shape_str(x.sizes()),
              ", got ", c10::toString(out.scalar_type()), " ", shape_str(out.sizes()));
  TORCH_CHECK(out.stride(3) == 1, "ac4k::", op, ": out must have a contiguous last dim");
  at::assert_no_internal_overlap(out);
  at::assert_no_partial_overlap(out, x);  // out = x (in place) is fine
  TORCH_CHECK(rows_16b_aligned(x) && rows_16b_aligned(out), "ac4k::", op,
              ": x and out need 16-byte aligned rows (data pointer 16-byte aligned, B / S / H strides multiples of "
              "8 elements); x strides ", shape_str(x.strides()), ", out strides ", shape_str(out.strides()),
              "; call .contiguous()");

  c10::cuda::CUDAGuard guard(x.device());
  ac4k::Rope3dParams p;
  const at::Tensor grid_dev = rope_freqs(p, x, B, S, D, grid_sizes, freqs, sin, op);
  p.x = x.data_ptr();
  p.out = out.data_ptr();
  p.dtype = to_ac4k(x.scalar_type());
  p.xv = rope_view(x, op, "x");
  p.ov = rope_view(out, op, "out");
  check_cuda_call(ac4k::rope3d(p, c10::cuda::getCurrentCUDAStream(x.device().index()).stream()), op);
}

at::Tensor rope3d(const at::Tensor& x, const at::Tensor& grid_sizes, const at::Tensor& freqs,
                  const c10::optional<at::Tensor>& sin) {
  check_half_input(x, "rope3d", "x");
  at::Tensor out = at::empty(x.sizes(), x.options());
  rope3d_out(x, grid_sizes, freqs, sin, out);
  return out;
}

#if defined(AC4K_HAS_GEMM)
// ------------------------------------------------------------------------------ gemm_fp8

// An E4M3 operand [rows, K] read by TMA: a contiguous last dim, 16-byte aligned rows.
void check_gemm_operand(const at::Tensor& t, const char* op, const char* name) {
  check_cuda_tensor(t, op, name);
  TORCH_CHECK(t.scalar_type() == at::kFloat8_e4m3fn, "ac4k::", op, ": ", name, " must be float8_e4m3fn, got ",
              c10::toString(t.scalar_type()));
  TORCH_CHECK(t.dim() == 2, "ac4k::", op, ": ", name, " must be 2-D, got shape ", shape_str(t.sizes()));
  TORCH_CHECK(t.size(1) >= 16 && t.size(1) % 16 == 0, "ac4k::", op, ": ", name,
              "'s K (last dim) must be a positive multiple of 16 (TMA needs 16-byte aligned rows), got ",
              std::to_string(t.size(1)));
  TORCH_CHECK(t.stride(1) == 1 && (t.size(0) <= 1 || t.stride(0) % 16 == 0) &&
                  reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0,
              "ac4k::", op, ": ", name, " needs a contiguous last dim, a row stride that is a multiple of 16 and a "
              "16-byte aligned data pointer, got strides ", shape_str(t.strides()), "; call .contiguous()");
}

void check_gemm_vector(const at::Tensor& t, int64_t n, const at::Tensor& a, const char* op, const char* name,
                       bool any_float) {
  check_cuda_tensor(t, op, name);
  check_same_device(a, t, op, name);
  const auto d = t.scalar_type();
  TORCH_CHECK(any_float ? (d == at::kFloat || d == at::kBFloat16 || d == at::kHalf) : d == at::kFloat, "ac4k::", op,
              ": ", name, any_float ? " must be float32, bfloat16 or float16" : " must be float32", ", got ",
              c10::toString(d));
  TORCH_CHECK(t.dim() == 1 && t.size(0) == n, "ac4k::", op, ": ", name, " must have shape [", std::to_string(n),
              "], got ", shape_str(t.sizes()));
  TORCH_CHECK(t.is_contiguous(), "ac4k::", op, ": ", name, " must be contiguous");
}

// out [M, N] = (a [M, K] . b [N, K]^T) * a_scale[m] * b_scale[n] + bias[n]; a, b E4M3, out bf16 / fp16.
void gemm_fp8_out(const at::Tensor& a, const at::Tensor& a_scale, const at::Tensor& b, const at::Tensor& b_scale,
                  const c10::optional<at::Tensor>& bias, at::Tensor& out) {
  const char* op = "gemm_fp8";
  check_gemm_operand(a, op, "a");
  check_gemm_operand(b, op, "b");
  check_same_device(a, b, op, "b");
  const int64_t M = a.size(0), N = b.size(0), K = a.size(1);
  TORCH_CHECK(b.size(1) == K, "ac4k::", op, ": a is ", shape_str(a.sizes()), " and b is ", shape_str(b.sizes()),
              "; both must be [rows, K] with the same K");
  check_gemm_vector(a_scale, M, a, op, "a_scale", false);
  check_gemm_vector(b_scale, N, a, op, "b_scale", false);
  if (bias.has_value()) check_gemm_vector(*bias, N, a, op, "bias", true);
  check_cuda_tensor(out, op, "out");
  check_same_device(a, out, op, "out");
  TORCH_CHECK(out.scalar_type() == at::kBFloat16 || out.scalar_type() == at::kHalf, "ac4k::", op,
              ": out must be bfloat16 or float16, got ", c10::toString(out.scalar_type()));
  TORCH_CHECK(out.dim() == 2 && out.size(0) == M && out.size(1) == N, "ac4k::", op, ": out must have shape [",
              std::to_string(M), ", ", std::to_string(N), "], got ", shape_str(out.sizes()));
  TORCH_CHECK(N <= 1 || out.stride(1) == 1, "ac4k::", op, ": out needs a contiguous last dim");
  TORCH_CHECK(M <= 1 || out.stride(0) >= N, "ac4k::", op, ": out's rows overlap (row stride < N)");

  c10::cuda::CUDAGuard guard(a.device());
  ac4k::GemmFp8Params p;
  p.a = a.data_ptr();
  p.b = b.data_ptr();
  p.a_scale = a_scale.data_ptr<float>();
  p.b_scale = b_scale.data_ptr<float>();
  if (bias.has_value()) {
    p.bias = bias->data_ptr();
    p.bias_dtype = to_ac4k(bias->scalar_type());
  }
  p.out = out.data_ptr();
  p.out_dtype = to_ac4k(out.scalar_type());
  p.M = M;
  p.N = N;
  p.K = K;
  p.lda = M <= 1 ? K : a.stride(0);
  p.ldb = N <= 1 ? K : b.stride(0);
  p.ldo = M <= 1 ? N : out.stride(0);
  const cudaError_t err = ac4k::gemm_fp8(p, c10::cuda::getCurrentCUDAStream(a.device().index()).stream());
  TORCH_CHECK(err != cudaErrorNotSupported, "ac4k::", op,
              ": not supported for these shapes (K a multiple of 16, 16-byte aligned operand rows, M and N below 2^31)");
  check_cuda_call(err, op);
}

at::Tensor gemm_fp8(const at::Tensor& a, const at::Tensor& a_scale, const at::Tensor& b, const at::Tensor& b_scale,
                    const c10::optional<at::Tensor>& bias, c10::optional<at::ScalarType> out_dtype) {
  const char* op = "gemm_fp8";
  check_gemm_operand(a, op, "a");
  check_gemm_operand(b, op, "b");
  const at::ScalarType dt = out_dtype.value_or(at::kBFloat16);
  TORCH_CHECK(dt == at::kBFloat16 || dt == at::kHalf, "ac4k::", op, ": out_dtype must be bfloat16 or float16, got ",
              c10::toString(dt));
  at::Tensor out = at::empty({a.size(0), b.size(0)}, a.options().dtype(dt));
  gemm_fp8_out(a, a_scale, b, b_scale, bias, out);
  return out;
}


// ------------------------------------------------------------------------------ gemm_nvfp4

// A packed NVFP4 operand: values uint8 [rows, K / 2] (8-byte aligned rows, contiguous last dim) and
// plain E4M3 block scales [rows, K / 16] (contiguous last dim) and a float32 global scale of one
// element, all on `ref`'s device. Returns K.
int64_t check_nvfp4_operand(const at::Tensor& v, const at::Tensor& sf, const at::Tensor& gs, const at::Tensor& ref,
                            const char* op, const char* name) {
  const std::string n(name);
  check_cuda_tensor(v, op, name);
  check_same_device(ref, v, op, name);
  TORCH_CHECK(v.scalar_type() == at::kByte, "ac4k::", op, ": ", n, " must be uint8 (packed E2M1, two values a byte), got ",
              c10::toString(v.scalar_type()));
  TORCH_CHECK(v.dim() == 2, "ac4k::", op, ": ", n, " must be 2-D [rows, K / 2], got shape ", shape_str(v.sizes()));
  const int64_t K = v.size(1) * 2;
  TORCH_CHECK(K >= 16 && K % 16 == 0, "ac4k::", op, ": ", n, "'s K (2 x its last dim) must be a positive multiple of 16, got ",
              std::to_string(K));
  TORCH_CHECK(v.stride(1) == 1 && (v.size(0) <= 1 || v.stride(0) % 8 == 0) &&
                  reinterpret_cast<uintptr_t>(v.data_ptr()) % 8 == 0,
              "ac4k::", op, ": ", n, " needs a contiguous last dim, a row stride that is a multiple of 8 and an 8-byte "
              "aligned data pointer, got strides ", shape_str(v.strides()), "; call .contiguous()");
  check_cuda_tensor(sf, op, (n + "_scales").c_str());
  check_same_device(ref, sf, op, (n + "_scales").c_str());
  TORCH_CHECK(sf.scalar_type() == at::kFloat8_e4m3fn, "ac4k::", op, ": ", n, "_scales must be float8_e4m3fn, got ",
              c10::toString(sf.scalar_type()));
  TORCH_CHECK(sf.dim() == 2 && sf.size(0) == v.size(0) && sf.size(1) == K / 16, "ac4k::", op, ": ", n,
              "_scales must be plain [", std::to_string(v.size(0)), ", ", std::to_string(K / 16), "] (one E4M3 scale a "
              "16-block; quantize with scale_layout='plain'), got ", shape_str(sf.sizes()));
  TORCH_CHECK(sf.size(1) <= 1 || sf.stride(1) == 1, "ac4k::", op, ": ", n, "_scales needs a contiguous last dim");
  check_cuda_tensor(gs, op, (n + "_global_scale").c_str());
  check_same_device(ref, gs, op, (n + "_global_scale").c_str());
  TORCH_CHECK(gs.scalar_type() == at::kFloat && gs.numel() == 1, "ac4k::", op, ": ", n,
              "_global_scale must be a float32 tensor of one element");
  return K;
}

// out [M, N] = (dec(a) . dec(b)^T) * a_gs * b_gs + bias[n]; out bf16 / fp16.
void gemm_nvfp4_out(const at::Tensor& a, const at::Tensor& a_scales, const at::Tensor& a_gs, const at::Tensor& b,
                    const at::Tensor& b_scales, const at::Tensor& b_gs, const c10::optional<at::Tensor>& bias,
                    at::Tensor& out) {
  const char* op = "gemm_nvfp4";
  const int64_t K = check_nvfp4_operand(a, a_scales, a_gs, a, op, "a");
  const int64_t Kb = check_nvfp4_operand(b, b_scales, b_gs, a, op, "b");
  TORCH_CHECK(K == Kb, "ac4k::", op, ": a is ", shape_str(a.sizes()), " and b is ", shape_str(b.sizes()),
              "; both must be packed [rows, K / 2] with the same K");
  const int64_t M = a.size(0), N = b.size(0);
  if (bias.has_value()) check_gemm_vector(*bias, N, a, op, "bias", true);
  check_cuda_tensor(out, op, "out");
  check_same_device(a, out, op, "out");
  TORCH_CHECK(out.scalar_type() == at::kBFloat16 || out.scalar_type() == at::kHalf, "ac4k::", op,
              ": out must be bfloat16 or float16, got ", c10::toString(out.scalar_type()));
  TORCH_CHECK(out.dim() == 2 && out.size(0) == M && out.size(1) == N, "ac4k::", op, ": out must have shape [",
              std::to_string(M), ", ", std::to_string(N), "], got ", shape_str(out.sizes()));
  TORCH_CHECK(N <= 1 || out.stride(1) == 1, "ac4k::", op, ": out needs a contiguous last dim");
  TORCH_CHECK(M <= 1 || out.stride(0) >= N, "ac4k::", op, ": out's rows overlap (row stride < N)");

  c10::cuda::CUDAGuard guard(a.device());
  ac4k::GemmNvfp4Params p;
  p.a = a.data_ptr();
  p.b = b.data_ptr();
  p.a_sf = static_cast<const uint8_t*>(a_scales.data_ptr());
  p.b_sf = static_cast<const uint8_t*>(b_scales.data_ptr());
  p.a_gs = a_gs.data_ptr<float>();
  p.b_gs = b_gs.data_ptr<float>();
  if (bias.has_value()) {
    p.bias = bias->data_ptr();
    p.bias_dtype = to_ac4k(bias->scalar_type());
  }
  p.out = out.data_ptr();
  p.out_dtype = to_ac4k(out.scalar_type());
  p.M = M;
  p.N = N;
  p.K = K;
  p.lda = M <= 1 ? K / 2 : a.stride(0);
  p.ldb = N <= 1 ? K / 2 : b.stride(0);
  p.lda_sf = M <= 1 ? K / 16 : a_scales.stride(0);
  p.ldb_sf = N <= 1 ? K / 16 : b_scales.stride(0);
  p.ldo = M <= 1 ? N : out.stride(0);
  at::Tensor scratch;
  if (const int64_t n = ac4k::gemm_nvfp4_scratch(p); n > 0) {
    scratch = at::empty({n}, a.options().dtype(at::kByte));
    p.scratch = scratch.data_ptr();
  }
  const cudaError_t err = ac4k::gemm_nvfp4(p, c10::cuda::getCurrentCUDAStream(a.device().index()).stream());
  TORCH_CHECK(err != cudaErrorNotSupported, "ac4k::", op,
              ": not supported for these shapes (K a multiple of 16, 8-byte aligned packed rows, M and N below 2^31)");
  check_cuda_call(err, op);
}

at::Tensor gemm_nvfp4(const at::Tensor& a, const at::Tensor& a_scales, const at::Tensor& a_gs, const at::Tensor& b,
                      const at::Tensor& b_scales, const at::Tensor& b_gs, const c10::optional<at::Tensor>& bias,
                      c10::optional<at::ScalarType> out_dtype) {
  const char* op = "gemm_nvfp4";
  check_nvfp4_operand(a, a_scales, a_gs, a, op, "a");
  check_nvfp4_operand(b, b_scales, b_gs, a, op, "b");
  const at::ScalarType dt = out_dtype.value_or(at::kBFloat16);
  TORCH_CHECK(dt == at::kBFloat16 || dt == at::kHalf, "ac4k::", op, ": out_dtype must be bfloat16 or float16, got ",
              c10::toString(dt));
  at::Tensor out = at::empty({a.size(0), b.size(0)}, a.options().dtype(dt));
  gemm_nvfp4_out(a, a_scales, a_gs, b, b_scales, b_gs, bias, out);
  return out;
}
#endif  // AC4K_HAS_GEMM

}  // namespace

TORCH_LIBRARY(ac4k, m) {
  for (const char* name : {"quantize_int8", "quantize_fp8"}) {
    const std::string n(name);
    m.def((n + "(Tensor x, str granularity=\"per_token\", int block_size=0, str layout=\"BNHD\") -> (Tensor, Tensor)").c_str());
    m.def((n + "_out(Tensor x, str granularity, int block_size, str layout, Tensor(a!) out, Tensor(b!) scales) -> ()").c_str());
  }
#if defined(AC4K_HAS_QUANTIZE_NVFP4)
  m.def("quantize_nvfp4(Tensor x, str scale_layout=\"plain\", Tensor? global_scale=None) -> (Tensor, Tensor, Tensor)");
  m.def("quantize_nvfp4_out(Tensor x, str scale_layout, Tensor? global_scale, Tensor(a!) out, Tensor(b!) scales,"
        " Tensor(c!) global_scale_out) -> ()");
#endif
  m.def("quantize_attention_kv(Tensor k, Tensor v, str layout, Tensor? grid_sizes=None, Tensor? freqs=None, "
        "Tensor? sin=None, str k_precision=\"int8\") -> Tensor[]");
#if defined(AC4K_HAS_QUANTIZE_ATTENTION_Q)
  m.def("quantize_attention_q(Tensor q, str layout, Tensor? grid_sizes=None, Tensor? freqs=None, Tensor? sin=None, "
        "str q_precision=\"int8\") -> Tensor[]");
#endif
  m.def("rope3d(Tensor x, Tensor grid_sizes, Tensor freqs, Tensor? sin=None) -> Tensor");
  m.def("rope3d_out(Tensor x, Tensor grid_sizes, Tensor freqs, Tensor? sin, Tensor(a!) out) -> ()");
  m.def("mha_int8_x_fp8_fwd(Tensor q, Tensor k, Tensor k_scale, Tensor v, Tensor v_scale, str layout,"
        " bool causal, float sm_scale, bool return_lse, Tensor? grid_sizes=None, Tensor? freqs=None,"
        " Tensor? sin=None, Tensor? q_scale=None, ScalarType? out_dtype=None) -> (Tensor, Tensor)");
  m.def("mha_int8_x_fp8_fwd_out(Tensor q, Tensor k, Tensor k_scale, Tensor v, Tensor v_scale,"
        " str layout, bool causal, float sm_scale, bool return_lse, Tensor(a!) out, Tensor? grid_sizes=None,"
        " Tensor? freqs=None, Tensor? sin=None, Tensor? q_scale=None) -> Tensor");
#if defined(AC4K_HAS_MHA_FP8)
  m.def("mha_fp8_fwd(Tensor q, Tensor k, Tensor k_scale, Tensor v, Tensor v_scale, str layout,"
        " bool causal, float sm_scale, bool return_lse, Tensor? grid_sizes=None, Tensor? freqs=None,"
        " Tensor? sin=None, Tensor? q_scale=None, ScalarType? out_dtype=None) -> (Tensor, Tensor)");
  m.def("mha_fp8_fwd_out(Tensor q, Tensor k, Tensor k_scale, Tensor v, Tensor v_scale,"
        " str layout, bool causal, float sm_scale, bool return_lse, Tensor(a!) out, Tensor? grid_sizes=None,"
        " Tensor? freqs=None, Tensor? sin=None, Tensor? q_scale=None) -> Tensor");
#endif
#if defined(AC4K_HAS_MHA_BF16)
  m.def("mha_bf16_fwd(Tensor q, Tensor k, Tensor v, str layout, bool causal, float sm_scale, bool return_lse)"
        " -> (Tensor, Tensor)");
  m.def("mha_bf16_fwd_out(Tensor q, Tensor k, Tensor v, str layout, bool causal, float sm_scale, bool return_lse,"
        " Tensor(a!) out) -> Tensor");
#endif
#if defined(AC4K_HAS_MHA_NVFP4)
  m.def("mha_nvfp4_fwd(Tensor q, Tensor q_scales, Tensor q_global_scale, Tensor k, Tensor k_scales,"
        " Tensor k_global_scale, Tensor vt, Tensor vt_scales, Tensor v_global_scale, str layout, bool causal,"
        " float sm_scale, bool return_lse, ScalarType? out_dtype=None) -> (Tensor, Tensor)");
  m.def("mha_nvfp4_fwd_out(Tensor q, Tensor q_scales, Tensor q_global_scale, Tensor k, Tensor k_scales,"
        " Tensor k_global_scale, Tensor vt, Tensor vt_scales, Tensor v_global_scale, str layout, bool causal,"
        " float sm_scale, bool return_lse, Tensor(a!) out) -> Tensor");
#endif
#if defined(AC4K_HAS_GEMM)
  m.def("gemm_fp8(Tensor a, Tensor a_scale, Tensor b, Tensor b_scale, Tensor? bias=None, ScalarType? out_dtype=None)"
        " -> Tensor");
  m.def("gemm_fp8_out(Tensor a, Tensor a_scale, Tensor b, Tensor b_scale, Tensor? bias, Tensor(a!) out) -> ()");
  m.def("gemm_nvfp4(Tensor a, Tensor a_scales, Tensor a_global_scale, Tensor b, Tensor b_scales,"
        " Tensor b_global_scale, Tensor? bias=None, ScalarType? out_dtype=None) -> Tensor");
  m.def("gemm_nvfp4_out(Tensor a, Tensor a_scales, Tensor a_global_scale, Tensor b, Tensor b_scales,"
        " Tensor b_global_scale, Tensor? bias, Tensor(a!) out) -> ()");
#endif
}

TORCH_LIBRARY_IMPL(ac4k, CUDA, m) {
  m.impl("quantize_int8", &quantize_int8);
  m.impl("quantize_int8_out", &quantize_int8_out);
  m.impl("quantize_fp8", &quantize_fp8);
  m.impl("quantize_fp8_out", &quantize_fp8_out);
#if defined(AC4K_HAS_QUANTIZE_NVFP4)
  m.impl("quantize_nvfp4", &quantize_nvfp4);
  m.impl("quantize_nvfp4_out", &quantize_nvfp4_out);
#endif
  m.impl("quantize_attention_kv", &quantize_attention_kv);
#if defined(AC4K_HAS_QUANTIZE_ATTENTION_Q)
  m.impl("quantize_attention_q", &quantize_attention_q);
#endif
  m.impl("rope3d", &rope3d);
  m.impl("rope3d_out", &rope3d_out);
  m.impl("mha_int8_x_fp8_fwd", &mha_8bit_fwd<false>);
  m.impl("mha_int8_x_fp8_fwd_out", &mha_8bit_fwd_out<false>);
#if defined(AC4K_HAS_MHA_FP8)
  m.impl("mha_fp8_fwd", &mha_8bit_fwd<true>);
  m.impl("mha_fp8_fwd_out", &mha_8bit_fwd_out<true>);
#endif
#if defined(AC4K_HAS_MHA_BF16)
  m.impl("mha_bf16_fwd", &mha_bf16_fwd);
  m.impl("mha_bf16_fwd_out", &mha_bf16_fwd_out);
#endif
#if defined(AC4K_HAS_MHA_NVFP4)
  m.impl("mha_nvfp4_fwd", &mha_nvfp4_fwd);
  m.impl("mha_nvfp4_fwd_out", &mha_nvfp4_fwd_out);
#endif
#if defined(AC4K_HAS_GEMM)
  m.impl("gemm_fp8", &gemm_fp8);
  m.impl("gemm_fp8_out", &gemm_fp8_out);
  m.impl("gemm_nvfp4", &gemm_nvfp4);
  m.impl("gemm_nvfp4_out", &gemm_nvfp4_out);
#endif
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "ac4k_kernel CUDA backend, built for " AC4K_ARCH_NAME;
  m.attr("__arch__") = AC4K_ARCH_NAME;
  m.attr("__backend__") = "cuda";
  // The SASS inside (an sm89 build may carry sm_120 SASS, and always compute_89 PTX as well).
  m.attr("__sass_cc__") = pybind11::make_tuple(AC4K_SASS_CC / 10, AC4K_SASS_CC % 10);
  // Direct bindings (no dispatcher); the Python API goes through torch.ops.ac4k for torch.compile.
  for (auto f : {std::make_pair("quantize_int8", &quantize_int8), std::make_pair("quantize_fp8", &quantize_fp8)}) {
    m.def(f.first, f.second, pybind11::arg("x"), pybind11::arg("granularity") = "per_token",
          pybind11::arg("block_size") = 0, pybind11::arg("layout") = "BNHD");
  }
#if defined(AC4K_HAS_QUANTIZE_NVFP4)
  m.def("quantize_nvfp4", &quantize_nvfp4, pybind11::arg("x"), pybind11::arg("scale_layout") = "plain",
        pybind11::arg("global_scale") = pybind11::none());
#endif
}
