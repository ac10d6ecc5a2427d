// ExecuTorch's two LLM custom ops, `llama::update_cache.out` and `llama::custom_sdpa.out`, which edgevlm's
// ExecuTorch text decoder calls (edgevlm/export/executorch.py, TextDecoder). The wheel ships them only inside
// libcustom_ops_aot_lib.so, which links libtorch and the CPython extension (_C): a standalone program, let
// alone a phone, cannot load it. These are the same operations, written out in plain C++ (float32, as the
// exporter writes them), registered with ExecuTorch's kernel registry when this file is linked:
//   update_cache(value (1, T, H_kv, hd), cache (1, S, H_kv, hd), start) writes positions start..start+T-1;
//   custom_sdpa(q (1, T, H, hd), k_cache, v_cache, start, mask=None, 0, is_causal) attends query i to cache
//   positions 0..start+i (grouped-query heads share a KV head), scale 1/sqrt(hd); (position, head) pairs run
//   in parallel on ExecuTorch's thread pool and dot products in vectorizable lanes, as ExecuTorch's own
//   kernel does (a scalar single-threaded loop made native decode 0.70x the Python runtime's at real size).
#include <cmath>
#include <cstring>
#include <optional>
#include <vector>

#ifndef ET_USE_THREADPOOL
#define ET_USE_THREADPOOL  // parallel_for from libexecutorch_threadpool, which the XNNPACK backend links
#endif
#include <executorch/extension/kernel_util/make_boxed_from_unboxed_functor.h>
#include <executorch/runtime/kernel/thread_parallel_interface.h>
#include <executorch/runtime/kernel/kernel_includes.h>

namespace evr_et {

using executorch::aten::ScalarType;
using executorch::aten::Tensor;
using executorch::runtime::Error;
using executorch::runtime::KernelRuntimeContext;

bool four_d_float(const Tensor& t) { return t.dim() == 4 && t.scalar_type() == ScalarType::Float; }


Tensor& update_cache_out(KernelRuntimeContext& ctx, const Tensor& value, Tensor& cache, const int64_t start,
                         Tensor& out) {
  const int64_t T = four_d_float(value) ? value.size(1) : 0;
  if (!four_d_float(value) || !four_d_float(cache) || value.size(0) != 1 || cache.size(0) != 1 ||
      value.size(2) != cache.size(2) || value.size(3) != cache.size(3) || start < 0 || start + T > cache.size(1)) {
    ctx.fail(Error::InvalidArgument);
    return out;
  }
  const size_t row = size_t(cache.size(2)) * cache.size(3);  // one position: H_kv x hd
  std::memcpy(cache.mutable_data_ptr<float>() + start * row, value.const_data_ptr<float>(), T * row * sizeof(float));
  return out;
}

// sum of a[d] * b[d] in 8 independent lanes: the compiler vectorizes it without reassociating a single sum
inline __attribute__((always_inline)) float dot(const float* a, const float* b, int64_t D) {
  float lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t d = 0;
  for (; d + 8 <= D; d += 8)
    for (int i = 0; i < 8; ++i) lane[i] += a[d + i] * b[d + i];
  float total = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
  for (; d < D; ++d) total += a[d] * b[d];
  return total;
}

// one query vector against positions 0..n-1 of one KV head (rows `stride` floats apart): softmax(q.k * s) . v.
// Compiled for AVX-512, AVX2 + FMA and the baseline, picked at load time by the CPU (GCC's function
// multiversioning): the build stays portable and a modern x86 core gets its wide vectors.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "avx2,fma", "default")))
#endif
void attend(const float* qv, const float* k, const float* v, int64_t stride, int64_t D, int64_t n, float s,
            float* w, float* o) {
  float top = -INFINITY;
  for (int64_t j = 0; j < n; ++j) top = std::max(top, w[j] = dot(qv, k + j * stride, D) * s);
  float total = 0;
  for (int64_t j = 0; j < n; ++j) total += (w[j] = std::exp(w[j] - top));
  std::fill(o, o + D, 0.0f);
  for (int64_t j = 0; j < n; ++j) {
    const float* vv = v + j * stride;
    const float p = w[j] / total;
    for (int64_t d = 0; d < D; ++d) o[d] += p * vv[d];
  }
}

Tensor& custom_sdpa_out(KernelRuntimeContext& ctx, const Tensor& q, const Tensor& k, const Tensor& v,
                        const int64_t start, const std::optional<Tensor>& mask, const double dropout,
                        const bool is_causal, const std::optional<double> scale, Tensor& out) {
  if (!four_d_float(q) || !four_d_float(k) || !four_d_float(v) || out.scalar_type() != ScalarType::Float ||
      out.dim() != 4 || q.size(0) != 1 || mask.has_value() || dropout != 0.0 || !is_causal || k.size(2) == 0 ||
      q.size(2) % k.size(2) != 0 || q.size(3) != k.size(3) || start < 0 || start + q.size(1) > k.size(1)) {
    ctx.fail(Error::InvalidArgument);  // only what the exporter writes: causal, no mask, no dropout
    return out;
  }
  if (executorch::runtime::resize_tensor(out, q.sizes()) != Error::Ok) {  // planned at the longest prompt
    ctx.fail(Error::InvalidArgument);
    return out;
  }
  const int64_t T = q.size(1), H = q.size(2), D = q.size(3), Hkv = k.size(2), group = H / Hkv;
  const float s = float(scale.has_value() ? *scale : 1.0 / std::sqrt(double(D)));
  const float *qp = q.const_data_ptr<float>(), *kp = k.const_data_ptr<float>(), *vp = v.const_data_ptr<float>();
  float* op = out.mutable_data_ptr<float>();
  // one (query position, head) pair per task, on ExecuTorch's thread pool (the one XNNPACK runs on)
  const bool ok = executorch::extension::parallel_for(0, T * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> w(start + T);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t t = task / H, h = task % H;
      attend(qp + (t * H + h) * D, kp + (h / group) * D, vp + (h / group) * D, Hkv * D, D, start + t + 1, s,
             w.data(), op + (t * H + h) * D);
    }
  });
  if (!ok) ctx.fail(Error::Internal);
  return out;
}

constexpr char kUpdateCache[] = "llama::update_cache.out";
constexpr char kCustomSdpa[] = "llama::custom_sdpa.out";

}  // namespace evr_et

namespace evr {

// Called by the ExecuTorch backend before it loads a program: an explicit call, not a static initializer,
// which a linker drops from a static library when nothing else in its object file is referenced.
void register_llama_ops() {
  static const executorch::runtime::Error registered = [] {
    static const executorch::runtime::Kernel kernels[] = {
        executorch::extension::make_boxed_kernel(evr_et::kUpdateCache,
                                                 EXECUTORCH_FN(evr_et::update_cache_out, evr_et::kUpdateCache)),
        executorch::extension::make_boxed_kernel(evr_et::kCustomSdpa,
                                                 EXECUTORCH_FN(evr_et::custom_sdpa_out, evr_et::kCustomSdpa)),
    };
    return executorch::runtime::register_kernels({kernels, 2});
  }();
  (void)registered;
}

}  // namespace evr
