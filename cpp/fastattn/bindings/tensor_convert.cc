// DLPack import: a zero-copy Tensor view over numpy arrays and torch tensors.
#include <cstdint>

#include "fastattn/bindings/bindings.h"

namespace fastattn::py_bind {
namespace {

// The DLPack ABI (v0.x, unversioned capsule named "dltensor"), as every producer exports it.
struct DLDevice {
  int32_t device_type;  // 1 = CPU, 2 = CUDA, 3 = CUDA host
  int32_t device_id;
};
struct DLDataType {
  uint8_t code;  // 0 int, 1 uint, 2 float, 4 bfloat
  uint8_t bits;
  uint16_t lanes;
};
struct DLTensor {
  void* data;
  DLDevice device;
  int32_t ndim;
  DLDataType dtype;
  int64_t* shape;
  int64_t* strides;  // in elements; may be null (compact row-major)
  uint64_t byte_offset;
};
struct DLManagedTensor {
  DLTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(DLManagedTensor*);
};

DType dtype_from_dl(const DLDataType& t, const char* name) {
  if (t.lanes == 1) {
    if (t.code == 2 && t.bits == 32) return DType::kFloat32;
    if (t.code == 2 && t.bits == 16) return DType::kFloat16;
    if (t.code == 4 && t.bits == 16) return DType::kBFloat16;
    if (t.code == 0 && t.bits == 32) return DType::kInt32;
    if (t.code == 0 && t.bits == 64) return DType::kInt64;
  }
  FA_THROW_AS(InvalidArgument, name, ": unsupported element type (DLPack code ",
              static_cast<int>(t.code), ", ", static_cast<int>(t.bits),
              " bits); expected float32, float16, bfloat16, int32 or int64");
}

Device device_from_dl(const DLDevice& d, const char* name) {
  switch (d.device_type) {
    case 1:
      return Device{DeviceType::kCPU, 0};
    case 2:
      return Device{DeviceType::kCUDA, d.device_id};
    case 3:
      return Device{DeviceType::kCUDAHost, 0};
    default:
      FA_THROW_AS(InvalidArgument, name, ": tensors on DLPack device type ", d.device_type,
                  " are not supported (expected CPU or CUDA)");
  }
}

// A read-only buffer-protocol object (e.g. a numpy array with writeable=False) as a Tensor.
Tensor tensor_from_buffer(const py::handle& obj, const char* name) {
  const py::buffer_info info = py::reinterpret_borrow<py::buffer>(obj).request();
  DType dtype;
  const std::string f = info.format;
  if (f == py::format_descriptor<float>::format()) {
    dtype = DType::kFloat32;
  } else if (f == "e") {
    dtype = DType::kFloat16;
  } else if (f == py::format_descriptor<int32_t>::format()) {
    dtype = DType::kInt32;
  } else if (f == py::format_descriptor<int64_t>::format() || (f == "l" && info.itemsize == 8)) {
    dtype = DType::kInt64;
  } else {
    FA_THROW_AS(InvalidArgument, name, ": unsupported element type (buffer format '", f,
                "'); expected float32, float16, int32 or int64");
  }
  std::vector<int64_t> shape(info.shape.begin(), info.shape.end());
  std::vector<int64_t> strides;
  for (const auto st : info.strides) {
    FA_CHECK(st % info.itemsize == 0, name, ": byte strides that are not a multiple of the ",
             "element size are not supported");
    strides.push_back(st / info.itemsize);
  }
  return Tensor(info.ptr, dtype, shape, strides, Device{DeviceType::kCPU, 0});
}

}  // namespace

Tensor readonly_tensor_from_py(const py::handle& obj, const char* name) {
  try {
    return tensor_from_py(obj, name);
  } catch (const py::error_already_set& e) {
    if (!e.matches(PyExc_BufferError) || !PyObject_CheckBuffer(obj.ptr())) throw;
  }
  return tensor_from_buffer(obj, name);
}

Tensor tensor_from_py(const py::handle& obj, const char* name) {
  FA_CHECK(!obj.is_none(), name, ": expected an array or tensor, got None");
  FA_CHECK(py::hasattr(obj, "__dlpack__"), name, ": expected a numpy array or torch tensor, got ",
           std::string(py::str(py::type::of(obj).attr("__name__"))));
  py::object capsule = obj.attr("__dlpack__")();
  auto* managed = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(capsule.ptr(), "dltensor"));
  if (managed == nullptr) {
    PyErr_Clear();
    FA_THROW_AS(InvalidArgument, name, ": __dlpack__ did not return a 'dltensor' capsule");
  }
  // The capsule was not consumed (not renamed), so its own destructor releases the export when
  // `capsule` goes out of scope; the data stays owned by `obj`, which the caller keeps alive.
  const DLTensor& t = managed->dl_tensor;
  const DType dtype = dtype_from_dl(t.dtype, name);
  const Device device = device_from_dl(t.device, name);
  std::vector<int64_t> shape(t.shape, t.shape + t.ndim);
  std::vector<int64_t> strides(t.ndim);
  if (t.strides != nullptr) {
    strides.assign(t.strides, t.strides + t.ndim);
  } else {
    int64_t s = 1;
    for (int i = t.ndim - 1; i >= 0; --i) {
      strides[i] = s;
      s *= shape[i];
    }
  }
  void* data = static_cast<char*>(t.data) + t.byte_offset;
  return Tensor(data, dtype, shape, strides, device);
}

Tensor optional_tensor_from_py(const py::handle& obj, const char* name) {
  if (obj.is_none()) return Tensor();
  return tensor_from_py(obj, name);
}

Context call_context(int num_threads, uintptr_t stream, const Tensor& on) {
  FA_CHECK(num_threads >= 0, "num_threads: expected >= 0 (0 = the OpenMP default), got ",
           num_threads);
  Context ctx = cpu_context(num_threads);
  ctx.stream = reinterpret_cast<void*>(stream);
  if (on.defined() && on.device().type == DeviceType::kCUDA) ctx.device = on.device();
  return ctx;
}

}  // namespace fastattn::py_bind
