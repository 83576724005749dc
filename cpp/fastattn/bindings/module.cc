// The extension module fastattention._C. Each area binds itself in its own file (bind_*.cc).
#include <pybind11/pybind11.h>

#include <cstring>

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
  // Messages are decoded with backslashreplace: one that quotes a path or value that is not valid
  // UTF-8 still reaches Python, with those bytes written as \xNN.
  py::register_exception_translator([](std::exception_ptr p) {
    const auto raise = [](PyObject* type, const char* what) {
      PyObject* msg = PyUnicode_DecodeUTF8(what, static_cast<Py_ssize_t>(std::strlen(what)),
                                           "backslashreplace");
      if (msg == nullptr) return;  // the decode error is set instead
      PyErr_SetObject(type, msg);
      Py_DECREF(msg);
    };
    try {
      if (p) std::rethrow_exception(p);
    } catch (const fastattn::InvalidArgument& e) {
      raise(PyExc_ValueError, e.what());
    } catch (const fastattn::FileError& e) {
      raise(weight_file_error.ptr(), e.what());
    } catch (const fastattn::OutOfMemory& e) {
      raise(PyExc_MemoryError, e.what());
    } catch (const fastattn::Error& e) {
      raise(PyExc_RuntimeError, e.what());
    }
  });

  m.def("blas_name", &fastattn::kernels::blas_name, "Name of the BLAS this build links.");
  m.def(
      "set_log_level",
      [](int level) { fastattn::set_log_level(static_cast<fastattn::LogLevel>(level)); },
      "0 debug, 1 info, 2 warning, 3 error");

  fastattn::py_bind::bind_core(m);
  fastattn::py_bind::bind_attention(m);
  fastattn::py_bind::bind_kernels(m);
  fastattn::py_bind::bind_rope_kv_sampling(m);
  fastattn::py_bind::bind_model(m);
  fastattn::py_bind::bind_comm(m);
  fastattn::py_bind::bind_engine(m);
}
