// WeightArena: where a model's weights live. On the CPU the memory-mapped file views are used as
// they are (zero-copy). On a GPU all weights are copied into one device allocation sized from
// the rank's tensor files before the first copy, so a model that does not fit fails before
// anything is uploaded, with the sizes in the message.
#pragma once

#include <string>

#include "fastattn/core/allocator.h"
#include "fastattn/core/device.h"
#include "fastattn/core/tensor.h"

namespace fastattn::models {

class WeightArena {
 public:
  // rank_dir: the folder of the rank's *.fat files (their total size bounds the arena).
  WeightArena(Device device, const std::string& rank_dir);
  // In-memory weights: num_tensors tensors of data_bytes in all; `source` names them in messages.
  WeightArena(Device device, size_t data_bytes, size_t num_tensors, const std::string& source);

  // The tensor as the model should use it: `host` itself on the CPU, a device copy on a GPU.
  Tensor place(const Tensor& host);
  // Waits for the uploads (call once after the last place()).
  void finish();

  Device device() const { return device_; }
  // Bytes of weights on the device (0 on the CPU, where they stay memory-mapped).
  size_t device_bytes() const { return used_; }

 private:
  void allocate(Allocator* a, size_t bytes, const std::string& source);

  Device device_;
  Buffer arena_;
  size_t used_ = 0;
};

}  // namespace fastattn::models
