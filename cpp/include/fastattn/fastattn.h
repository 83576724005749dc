// FastAttention C++ embedding API: one include for a program linking FastAttention::fastattn.
// docs/CPP_API.md describes it; examples/cpp/fastattn_embed.cc uses all of it.
//
//   fastattn::runtime::InferenceSession   load an exported model directory, generate tokens
//   fastattn::kernels::fmha_forward       FlashAttention-2 forward on strided Q/K/V views
//                                         (prefill, paged-KV decode, GQA, masks, ALiBi)
//   fastattn::Tensor, fastattn::Context   non-owning strided views; device / stream / threads
//   fastattn::Error and subclasses        what every bad input throws (a message naming it)
#pragma once

#include "fastattn/version.h"

#include "fastattn/core/context.h"
#include "fastattn/core/dtype.h"
#include "fastattn/core/error.h"
#include "fastattn/core/tensor.h"
#include "fastattn/kernels/attention/fmha.h"
#include "fastattn/runtime/session.h"
