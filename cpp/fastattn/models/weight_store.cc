#include "fastattn/models/weight_store.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "fastattn/core/error.h"

namespace fastattn::models {
namespace {

constexpr char kMagic[8] = {'F', 'A', 'S', 'T', 'A', 'T', 'T', 'N'};
constexpr uint32_t kVersion = 1;
constexpr size_t kFixedHeader = 24;

template <typename T>
T read_le(const unsigned char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));  // the format is little-endian, as is every supported host
  return v;
}

// Reads all `size` bytes of fd into 64-byte aligned memory (the data offsets are multiples of
// 64, so tensor views keep the alignment a mapping has).
void* read_whole_file(int fd, size_t size, const std::string& path) {
  void* buf = std::aligned_alloc(64, (size + 63) / 64 * 64);
  if (buf == nullptr) {
    FA_THROW_AS(OutOfMemory, path, ": cannot allocate ", size, " bytes to copy the weight file");
  }
  size_t got = 0;
  while (got < size) {
    const ssize_t n =
        ::pread(fd, static_cast<char*>(buf) + got, size - got, static_cast<off_t>(got));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = errno;
      std::free(buf);
      FA_THROW_AS(FileError, path, ": read error after ", got, " of ", size, " bytes (",
                  n < 0 ? std::strerror(err) : "the file shrank while being read", ")");
    }
    got += static_cast<size_t>(n);
  }
  return buf;
}

}  // namespace

WeightLoad weight_load_from_name(const std::string& name) {
  if (name == "mmap") return WeightLoad::kMmap;
  if (name == "copy") return WeightLoad::kCopy;
  FA_THROW_AS(InvalidArgument, "load: must be 'mmap' or 'copy', got '", name, "'");
}

MappedFile::MappedFile(const std::string& path, WeightLoad mode) : path_(path) {
  // O_NONBLOCK: a FIFO must be refused by the check below, not block open() for a writer.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) FA_THROW_AS(FileError, path, ": weight file is missing");
    FA_THROW_AS(FileError, path, ": cannot open (", std::strerror(err), ")");
  }
  struct stat st{};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    FA_THROW_AS(FileError, path, ": not a regular file (a FIFO, device or directory?)");
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ > 0 && mode == WeightLoad::kCopy) {
    try {
      data_ = read_whole_file(fd, size_, path);
    } catch (...) {
      ::close(fd);
      throw;
    }
    copied_ = true;
  } else if (size_ > 0) {
    data_ = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (data_ == MAP_FAILED) {
      const int err = errno;
      data_ = nullptr;
      ::close(fd);
      FA_THROW_AS(FileError, path, ": mmap failed (", std::strerror(err), ")");
    }
  }
  ::close(fd);  // the mapping stays valid after the descriptor is closed
}

MappedFile::~MappedFile() {
  if (data_ == nullptr) return;
  if (copied_) {
    std::free(data_);
  } else {
    ::munmap(data_, size_);
  }
}

TensorFileHeader parse_tensor_header(const void* data, size_t size, const std::string& path) {
  const auto* p = static_cast<const unsigned char*>(data);
  if (size < kFixedHeader) {
    FA_THROW_AS(FileError, path, ": truncated: ", size, " bytes, shorter than the ", kFixedHeader,
                "-byte header");
  }
  if (std::memcmp(p, kMagic, sizeof(kMagic)) != 0) {
    FA_THROW_AS(FileError, path, ": bad magic (not a FastAttention tensor file; expected ",
                "'FASTATTN' in the first 8 bytes)");
  }
  const uint32_t version = read_le<uint32_t>(p + 8);
  if (version != kVersion) {
    FA_THROW_AS(FileError, path, ": format version ", version, "; this build reads version ",
                kVersion);
  }
  const uint32_t code = read_le<uint32_t>(p + 12);
  if (code > static_cast<uint32_t>(DType::kInt64)) {
    FA_THROW_AS(FileError, path, ": unknown dtype code ", code);
  }
  const uint32_t ndim = read_le<uint32_t>(p + 16);
  if (ndim < 1 || ndim > static_cast<uint32_t>(kMaxDims)) {
    FA_THROW_AS(FileError, path, ": ndim ", ndim, " out of range 1..", kMaxDims);
  }
  TensorFileHeader h;
  h.dtype = static_cast<DType>(code);
  h.data_offset = read_le<uint32_t>(p + 20);
  const size_t shape_end = kFixedHeader + 8 * ndim;
  if (h.data_offset % 64 != 0 || h.data_offset < shape_end) {
    FA_THROW_AS(FileError, path, ": bad data_offset ", h.data_offset,
                " (must be a multiple of 64 and at least ", shape_end, ")");
  }
  if (size < shape_end) {
    FA_THROW_AS(FileError, path, ": truncated inside the shape (", size, " bytes)");
  }
  size_t numel = 1;
  for (uint32_t i = 0; i < ndim; ++i) {
    const uint64_t s = read_le<uint64_t>(p + kFixedHeader + 8 * i);
    if (s > (uint64_t{1} << 40))
      FA_THROW_AS(FileError, path, ": implausible size ", s, " in dim ", i);
    h.shape.push_back(static_cast<int64_t>(s));
    numel *= static_cast<size_t>(s);
  }
  const size_t expected = h.data_offset + numel * dtype_size(h.dtype);
  if (size < expected) {
    FA_THROW_AS(FileError, path, ": truncated: ", size, " bytes, but the header (",
                dtype_name(h.dtype), shape_str(h.shape), ") needs ", expected);
  }
  if (size > expected) {
    FA_THROW_AS(FileError, path, ": ", size - expected, " unexpected trailing bytes after the ",
                dtype_name(h.dtype), shape_str(h.shape), " data (file size ", size, ", expected ",
                expected, ")");
  }
  return h;
}

WeightStore::WeightStore(std::string rank_dir, WeightLoad load)
    : dir_(std::move(rank_dir)), load_(load) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir_, ec)) {
    FA_THROW_AS(FileError, dir_, ": weight directory is missing (expected one folder per ",
                "tensor-parallel rank, rank0 .. rank{tp_size-1})");
  }
}

WeightStore WeightStore::from_memory(std::map<std::string, Tensor> tensors, std::string label,
                                     std::shared_ptr<const void> owner) {
  WeightStore s;
  s.dir_ = std::move(label);
  s.in_memory_ = true;
  s.memory_ = std::move(tensors);
  s.owner_ = std::move(owner);
  return s;
}

size_t WeightStore::memory_bytes() const {
  size_t total = 0;
  for (const auto& [name, t] : memory_) total += t.nbytes();
  return total;
}

void WeightStore::release_memory() {
  memory_.clear();
  owner_.reset();
}

Tensor WeightStore::load_from_memory(const std::string& name, DType dtype,
                                     const std::vector<int64_t>& shape) {
  const auto it = memory_.find(name);
  if (it == memory_.end()) {
    FA_THROW_AS(FileError, dir_, ": tensor '", name, "' is missing (the config needs ",
                dtype_name(dtype), shape_str(shape), ")");
  }
  const Tensor& t = it->second;
  if (t.dtype() != dtype) {
    FA_THROW_AS(FileError, dir_, ": tensor '", name, "' is ", dtype_name(t.dtype()),
                ", but the config says ", dtype_name(dtype));
  }
  if (t.shape() != shape) {
    FA_THROW_AS(FileError, dir_, ": tensor '", name, "' has shape ", shape_str(t.shape()),
                ", but the config implies ", shape_str(shape));
  }
  if (!t.is_contiguous()) {
    FA_THROW_AS(FileError, dir_, ": tensor '", name, "' is not contiguous (strides ",
                shape_str(t.strides()), "); pass a contiguous array");
  }
  if (t.device().type != DeviceType::kCPU) {
    FA_THROW_AS(FileError, dir_, ": tensor '", name, "' is on ", t.device().str(),
                "; in-memory weights must be in host memory");
  }
  mapped_bytes_ += t.nbytes();
  loaded_.insert(name);
  return t;
}

Tensor WeightStore::load(const std::string& name, DType dtype, const std::vector<int64_t>& shape) {
  if (in_memory_) return load_from_memory(name, dtype, shape);
  const std::string path = dir_ + "/" + name + ".fat";
  auto file = std::make_unique<MappedFile>(path, load_);
  const TensorFileHeader h = parse_tensor_header(file->data(), file->size(), path);
  if (h.dtype != dtype) {
    FA_THROW_AS(FileError, path, ": dtype ", dtype_name(h.dtype), ", but the config says ",
                dtype_name(dtype));
  }
  if (h.shape != shape) {
    FA_THROW_AS(FileError, path, ": shape ", shape_str(h.shape), ", but the config implies ",
                shape_str(shape));
  }
  // The view is non-const because Tensor has no const flavour; the pages are PROT_READ, and no
  // kernel writes its weight arguments.
  void* elems = const_cast<char*>(static_cast<const char*>(file->data()) + h.data_offset);
  Tensor t(elems, h.dtype, h.shape);
  mapped_bytes_ += file->size();
  loaded_.insert(name + ".fat");
  files_.push_back(std::move(file));
  return t;
}

std::vector<std::string> WeightStore::unused_files() const {
  std::vector<std::string> out;
  if (in_memory_) {
    for (const auto& [name, t] : memory_) {
      if (loaded_.count(name) == 0) out.push_back(name);
    }
    return out;
  }
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir_, ec)) {
    const std::string fname = entry.path().filename().string();
    if (entry.path().extension() == ".fat" && loaded_.count(fname) == 0) out.push_back(fname);
  }
  return out;
}

}  // namespace fastattn::models
