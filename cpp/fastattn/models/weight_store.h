// WeightStore: the tensors of one tensor-parallel rank, by name (docs/FORMAT.md): either its
// tensor files (*.fat), memory-mapped read-only, or tensors already in memory (from_memory: e.g.
// numpy arrays a Python caller built). Tensors handed out are zero-copy views, valid while the
// store lives (and, in memory, while the caller's buffers do).
#pragma once

#include <cstddef>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "fastattn/core/tensor.h"

namespace fastattn::models {

// How a WeightStore over files holds their bytes:
//   kMmap: a read-only mapping (the default: no copy, pages shared with the page cache and other
//          processes). The files must not change while the session lives: a file truncated in
//          place makes the next access to its missing pages fail with SIGBUS.
//   kCopy: read into memory the store owns; the files may then be replaced, truncated or deleted.
enum class WeightLoad { kMmap, kCopy };

// "mmap" / "copy"; throws InvalidArgument naming the value otherwise.
WeightLoad weight_load_from_name(const std::string& name);

// The read-only bytes of a whole file: a POSIX mapping (kMmap) or a copy in 64-byte aligned
// memory (kCopy). Move-only; unmaps / frees on destruction.
class MappedFile {
 public:
  // Throws FileError naming the path.
  explicit MappedFile(const std::string& path, WeightLoad mode = WeightLoad::kMmap);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const void* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  void* data_ = nullptr;
  size_t size_ = 0;
  bool copied_ = false;
};

// The parsed header of a tensor file.
struct TensorFileHeader {
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;
  size_t data_offset = 0;
};

// Parses and checks the header (magic, version, dtype code, ndim, data_offset) and that the file
// size is exactly data_offset + numel * itemsize. Throws FileError naming `path` and the fault.
TensorFileHeader parse_tensor_header(const void* data, size_t size, const std::string& path);

class WeightStore {
 public:
  // rank_dir: MODEL_DIR/rank{r}. Throws FileError if it is not a directory. `load`: how the
  // files are held.
  explicit WeightStore(std::string rank_dir, WeightLoad load = WeightLoad::kMmap);

  // In-memory weights: `tensors` by name, each contiguous and in host memory (checked by load()).
  // The store does not copy them: `owner` (may be null) keeps their memory alive while the store
  // holds it (see release_memory()). `label` names the source in messages (it is dir()).
  static WeightStore from_memory(std::map<std::string, Tensor> tensors, std::string label,
                                 std::shared_ptr<const void> owner = nullptr);

  // Files: maps rank_dir/<name>.fat and checks it holds `dtype` with `shape`; returns a view of
  // it. In memory: the tensor `name`, checked the same way. Throws FileError naming the file or
  // the tensor and what is wrong.
  Tensor load(const std::string& name, DType dtype, const std::vector<int64_t>& shape);

  // *.fat files in the directory (in memory: tensor names) that no load() asked for (a config /
  // weights mismatch sign).
  std::vector<std::string> unused_files() const;

  // Bytes of the tensors load() handed out (mapped files, or in-memory tensors).
  size_t mapped_bytes() const { return mapped_bytes_; }
  const std::string& dir() const { return dir_; }

  bool in_memory() const { return in_memory_; }
  // In memory: bytes and count of all tensors given (what a device copy of them needs).
  size_t memory_bytes() const;
  size_t memory_tensors() const { return memory_.size(); }
  // In memory: drops the tensors and `owner` (once a GPU model has copied them); views handed
  // out before stay as valid as the caller's buffers are.
  void release_memory();

 private:
  WeightStore() = default;
  Tensor load_from_memory(const std::string& name, DType dtype, const std::vector<int64_t>& shape);

  std::string dir_;
  std::vector<std::unique_ptr<MappedFile>> files_;
  std::set<std::string> loaded_;
  size_t mapped_bytes_ = 0;
  bool in_memory_ = false;
  WeightLoad load_ = WeightLoad::kMmap;
  std::map<std::string, Tensor> memory_;
  std::shared_ptr<const void> owner_;
};

}  // namespace fastattn::models
