// Random weights that do not depend on how a model is split: every element of a logical
// (unsplit, tp = 1) tensor is a counter-based hash of (seed, tensor name, logical row, logical
// column), so any tensor-parallel rank can generate exactly its shard, in memory, and all splits of
// one seed describe the same model. Used by examples/pangu38b_infer.py --random-weights
// (python/fastattention/random_weights.py knows which logical rows and columns a rank holds).
//
// The value of logical element (row, col) of a tensor with `logical_cols` columns:
//   key   = splitmix64(seed ^ fnv1a64(name))
//   h     = splitmix64(key + (row * logical_cols + col + 1) * 0x9E3779B97F4A7C15)
//   u     = (h >> 40) * 2^-24                                   in [0, 1), exact in float32
//   value = float32(shift + scale * (2u - 1))  (scale and shift rounded to float32 first; the
//           sum in double, then rounded once to float32)
// then rounded to the tensor's dtype (round to nearest even). splitmix64(z) is the finaliser
// z ^= z >> 30; z *= 0xBF58476D1CE4E5B9; z ^= z >> 27; z *= 0x94D049BB133111EB; z ^= z >> 31.
// (A numpy version of the same arithmetic is in tests/python/test_pangu.py.)
#pragma once

#include <cstdint>
#include <string>

#include "fastattn/core/context.h"
#include "fastattn/core/tensor.h"

namespace fastattn::models {

struct RandomFillParams {
  uint64_t seed = 0;
  std::string name;          // the tensor's name: each name gets its own stream
  int64_t logical_cols = 1;  // columns of the logical tensor (1 for a vector)
  int64_t col_offset = 0;    // logical column of the shard's first column
  double scale = 1.0;        // values are shift + scale * U[-1, 1) (both rounded to float32 first)
  double shift = 0.0;
};

// The stream key of a tensor (first line of the formula above).
uint64_t random_weight_key(uint64_t seed, const std::string& name);

// out: [rows] or [rows, cols], contiguous float32 / float16 / bfloat16 in host memory.
// logical_rows: int64 [rows]: the logical row of each of out's rows, or -1 for a row of zeros
// (vocabulary padding). Requires col_offset + cols <= logical_cols. OpenMP over rows.
void fill_random_weight(const Context& ctx, const RandomFillParams& p, const Tensor& logical_rows,
                        Tensor& out);

}  // namespace fastattn::models
