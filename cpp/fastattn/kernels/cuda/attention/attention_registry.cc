// Lookups in the generated attention registry, and the AttentionDevice of a GPU built from it.
#include "fastattn/kernels/cuda/attention/attention_registry.h"

#include <cstdlib>

#include "fastattn/core/error.h"
#include "fastattn/kernels/cuda/attention/attention_device_cuda.h"
#include "fastattn/kernels/cuda/device_props.h"

namespace fastattn::kernels::cuda {

bool sass_runs_on(int arch, int cc) { return arch / 10 == cc / 10 && arch <= cc; }

bool archs_run_on(const char* archs, int cc) {
  for (const char* s = archs; *s != '\0';) {
    char* end = nullptr;
    const long arch = std::strtol(s, &end, 10);
    FA_ASSERT(end != s, "attention registry: bad arch list '", archs, "'");
    if (sass_runs_on(static_cast<int>(arch), cc)) return true;
    s = *end == ';' ? end + 1 : end;
  }
  return false;
}

const AttentionInstance* find_attention_instance(AttentionKernel kernel, int head_dim, DType dtype,
                                                 int cc) {
  int n = 0;
  const AttentionInstance* table = attention_instance_table(&n);
  for (int i = 0; i < n; ++i) {
    const AttentionInstance& inst = table[i];
    if (inst.kernel == kernel && inst.head_dim == head_dim && inst.dtype == dtype &&
        archs_run_on(inst.archs, cc)) {
      return &inst;
    }
  }
  return nullptr;
}

AttentionDevice attention_device(int device) {
  AttentionDevice d;
  d.gpu = true;
  d.cc = device_props(device).cc;
  const int cc = d.cc;
  d.runnable = [cc](AttentionKernel kernel, DType dtype, int head_dim) {
    return find_attention_instance(kernel, head_dim, dtype, cc) != nullptr;
  };
  return d;
}

}  // namespace fastattn::kernels::cuda
