// Split-KV decode kernels: float16, head dim 96 (see decode_instance.cuh).
#include "fastattn/kernels/cuda/decode_instance.cuh"

FASTATTN_DECODE_INSTANCES(__half, ::fastattn::DType::kFloat16, f16, 96)
