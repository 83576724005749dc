// Split-KV decode kernels: float32, head dim 128 (see decode_instance.cuh).
#include "fastattn/kernels/cuda/decode_instance.cuh"

FASTATTN_DECODE_INSTANCES(float, ::fastattn::DType::kFloat32, f32, 128)
