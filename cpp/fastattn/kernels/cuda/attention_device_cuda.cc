#include "fastattn/kernels/cuda/attention_device_cuda.h"

#include <cstdlib>

#include "fastattn/kernels/cuda/decode_cuda.h"
#include "fastattn/kernels/cuda/device_props.h"
#include "fastattn/kernels/cuda/fmha_registry.h"

namespace fastattn::kernels::cuda {
namespace {

constexpr int kCpAsyncMinCc = 80;  // cp.async (the decode kernel's async copy path) needs sm_80

bool runnable(AttentionKernel kernel, DType dtype, int head_dim, int cc) {
  if (is_decode_kernel(kernel)) {
    return decode_supports(dtype, head_dim) && (kernel != AttentionKernel::kDecodeAsync || cc >= kCpAsyncMinCc);
  }
  int n = 0;
  const FmhaInstance* table = fmha_instance_table(&n);
  for (int i = 0; i < n; ++i) {
    const FmhaInstance& inst = table[i];
    if (inst.kernel == kernel && inst.head_dim == head_dim && inst.dtype == dtype && archs_run_on(inst.archs, cc)) {
      return true;
    }
  }
  return false;
}

}  // namespace

bool sass_runs_on(int arch, int cc) { return arch / 10 == cc / 10 && arch <= cc; }

bool archs_run_on(const char* archs, int cc) {
  for (const char* s = archs; *s != '\0';) {
    char* end = nullptr;
    const long arch = std::strtol(s, &end, 10);
    if (end == s) return false;  // not a number: the registry is generated, so this is a bug
    if (sass_runs_on(static_cast<int>(arch), cc)) return true;
    s = *end == ';' ? end + 1 : end;
  }
  return false;
}

AttentionDevice attention_device(int device) {
  AttentionDevice d;
  d.gpu = true;
  d.cc = device_props(device).cc;
  const int cc = d.cc;
  d.runnable = [cc](AttentionKernel kernel, DType dtype, int head_dim) {
    return runnable(kernel, dtype, head_dim, cc);
  };
  return d;
}

}  // namespace fastattn::kernels::cuda
