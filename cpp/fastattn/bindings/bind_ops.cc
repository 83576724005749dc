// Kernel-level ops (attention): filled in by the attention work.
#include "fastattn/bindings/bindings.h"

namespace fastattn::py_bind {

void bind_ops(py::module_& m) { (void)m; }

}  // namespace fastattn::py_bind
