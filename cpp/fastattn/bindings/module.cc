// The extension module fastattention._C. Each area binds itself in its own file (bind_*.cc).
#include <pybind11/pybind11.h>

#include "fastattn/bindings/bindings.h"
#include "fastattn/core/error.h"
#include "fastattn/core/logging.h"
#include "fastattn/kernels/gemm.h"

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "FastAttention runtime core (C++).";

  // C++ exceptions -> Python: bad input is a ValueError, a bad or missing weight file a
  // WeightFileError (a ValueError too), a budget that cannot be met a MemoryError.
  static py::exception<fastattn::FileError> weight_file_error(m, "WeightFileError",
                                                              PyExc_ValueError);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const fastattn::InvalidArgument& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const fastattn::FileError& e) {
      py::set_error(weight_file_error, e.what());
    } catch (const fastattn::OutOfMemory& e) {
      PyErr_SetString(PyExc_MemoryError, e.what());
    } catch (const fastattn::Error& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what());
    }
  });

  m.def("blas_name", &fastattn::kernels::blas_name, "Name of the BLAS this build links.");
  m.def(
      "set_log_level",
      [](int level) { fastattn::set_log_level(static_cast<fastattn::LogLevel>(level)); },
      "0 debug, 1 info, 2 warning, 3 error");

  fastattn::py_bind::bind_core(m);
  fastattn::py_bind::bind_ops(m);
  fastattn::py_bind::bind_kernels(m);
  fastattn::py_bind::bind_kernels_b(m);
  fastattn::py_bind::bind_model(m);
  fastattn::py_bind::bind_comm(m);
  fastattn::py_bind::bind_engine(m);
}
