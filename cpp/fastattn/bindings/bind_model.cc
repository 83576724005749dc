// Model and session bindings: filled in by the model work.
#include "fastattn/bindings/bindings.h"

namespace fastattn::py_bind {

void bind_model(py::module_& m) { (void)m; }

}  // namespace fastattn::py_bind
