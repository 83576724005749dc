// Split-KV decode kernels: bfloat16, head dim 128 (see decode_instance.cuh).
#include "fastattn/kernels/cuda/decode_instance.cuh"

FASTATTN_DECODE_INSTANCES(__nv_bfloat16, ::fastattn::DType::kBFloat16, bf16, 128)
