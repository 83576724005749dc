// WeightStore: the tensor files (*.fat, docs/FORMAT.md) of one tensor-parallel rank, memory-mapped
// read-only. Tensors handed out are zero-copy views into the mappings, valid while the store lives.
#pragma once

#include <cstddef>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "fastattn/core/tensor.h"

namespace fastattn::models {

// One read-only POSIX mapping of a whole file. Move-only; unmaps on destruction.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path);  // throws FileError naming the path
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
  // rank_dir: MODEL_DIR/rank{r}. Throws FileError if it is not a directory.
  explicit WeightStore(std::string rank_dir);

  // Maps rank_dir/<name>.fat and checks it holds `dtype` with `shape`; returns a view of it.
  Tensor load(const std::string& name, DType dtype, const std::vector<int64_t>& shape);

  // *.fat files in the directory that no load() asked for (a config / weights mismatch sign).
  std::vector<std::string> unused_files() const;

  size_t mapped_bytes() const { return mapped_bytes_; }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  std::vector<std::unique_ptr<MappedFile>> files_;
  std::set<std::string> loaded_;
  size_t mapped_bytes_ = 0;
};

}  // namespace fastattn::models
