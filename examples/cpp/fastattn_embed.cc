// FastAttention embedded in a C++ program, through the installed package (docs/CPP_API.md):
//
//   fastattn_embed                         (a) the attention kernel on FasterTransformer-style
//                                              [batch, heads, seq, head_dim] buffers (prefill
//                                              and a decode step), checked against a float64
//                                              reference
//   fastattn_embed MODEL_DIR [options]     (a), then (b): load an exported model and generate
//
// With a CUDA build of the library and a GPU, (a) also runs on the GPU in float16 on the
// program's own stream. Options for (b): --prompt "1 2 3" (repeatable; default "1 2 3 4 5"),
// --max-new-tokens N (default 8), --threads N, --device cpu|cuda[:N]. It prints one line per
// prompt, "generated[i]: id id ...", then the timings. Exit status 0 when everything ran and the
// attention checks passed.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <fastattn/fastattn.h>
#if defined(FASTATTN_WITH_CUDA)  // defined by FastAttention::fastattn when it has GPU kernels
#include <cuda_runtime.h>
#endif

namespace fa = fastattn;

namespace {

// ---------------------------------------------------------------------------------------------
// (a) fmha_forward on [B, H, S, D] buffers
//
// FasterTransformer's context attention holds Q, K and V (after the QKV bias and rotary) as
// three [B, H, S, D] buffers, every sequence padded to S tokens. fmha_forward takes
// [tokens, heads, head_dim] views with any token and head strides, so those buffers are used in
// place, no transpose:
//   * one call for the whole batch when every sequence has S tokens (or with causal masking and
//     right padding: a valid query never sees a later, padded key): batch and heads merge into
//     one head axis, q = [S, B*H, D] with strides {D, S*D, 1} (head b*H + h is at (b*H + h)*S*D);
//     query head b*H + h reads KV head (b*H + h) / (H / Hk) = b*Hk + h / (H / Hk), the right one.
//   * one call per sequence for any lengths: q_b = [len_b, H, D] with strides {D, S*D, 1} at
//     element offset b*H*S*D; the output can go straight into FT's [B, S, H, D] layout.

struct Problem {
  int B = 3, H = 8, Hk = 2, S = 45, D = 64;  // GQA: 4 query heads per KV head
  std::vector<int> lengths{45, 17, 1};       // tokens per sequence (right padding to S)
  std::vector<float> q, k, v;                // [B, H, S, D] and [B, Hk, S, D]
};

Problem make_problem() {
  Problem p;
  std::mt19937 rng(1234);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto fill = [&](std::vector<float>& x, size_t n) {
    x.resize(n);
    for (float& e : x) e = normal(rng);
  };
  fill(p.q, size_t(p.B) * p.H * p.S * p.D);
  fill(p.k, size_t(p.B) * p.Hk * p.S * p.D);
  fill(p.v, size_t(p.B) * p.Hk * p.S * p.D);
  return p;
}

// Float64 reference for one (sequence, query head, query): softmax(q k^T / sqrt(D)) v over keys
// 0 .. last_key, written into ref[0 .. D).
void reference_row(const Problem& p, int b, int h, int i, int last_key, double* ref) {
  const int kh = h / (p.H / p.Hk);
  const float* qi = &p.q[((size_t(b) * p.H + h) * p.S + i) * p.D];
  std::vector<double> scores(last_key + 1);
  double mx = -std::numeric_limits<double>::infinity();
  for (int j = 0; j <= last_key; ++j) {
    const float* kj = &p.k[((size_t(b) * p.Hk + kh) * p.S + j) * p.D];
    double s = 0;
    for (int d = 0; d < p.D; ++d) s += double(qi[d]) * kj[d];
    scores[j] = s / std::sqrt(double(p.D));
    mx = std::max(mx, scores[j]);
  }
  double sum = 0;
  for (double& s : scores) sum += (s = std::exp(s - mx));
  for (int d = 0; d < p.D; ++d) ref[d] = 0;
  for (int j = 0; j <= last_key; ++j) {
    const float* vj = &p.v[((size_t(b) * p.Hk + kh) * p.S + j) * p.D];
    for (int d = 0; d < p.D; ++d) ref[d] += scores[j] / sum * vj[d];
  }
}

// The largest error of the output row o (D values) of (sequence b, query head h, query i) against
// its float64 reference over keys 0 .. last_key; a NaN (an output element the kernel left
// unwritten) counts as infinite.
double row_error(const Problem& p, int b, int h, int i, int last_key, const float* o) {
  std::vector<double> ref(p.D);
  reference_row(p, b, h, i, last_key, ref.data());
  double worst = 0;
  for (int d = 0; d < p.D; ++d) {
    const double err = std::fabs(o[d] - ref[d]);
    worst = std::isnan(err) ? std::numeric_limits<double>::infinity() : std::max(worst, err);
  }
  return worst;
}

// The largest error of a whole-batch causal output [B, H, S, D].
double causal_batch_error(const Problem& p, const std::vector<float>& out) {
  double worst = 0;
  for (int b = 0; b < p.B; ++b)
    for (int h = 0; h < p.H; ++h)
      for (int i = 0; i < p.S; ++i)
        worst = std::max(worst,
                         row_error(p, b, h, i, i, &out[((size_t(b) * p.H + h) * p.S + i) * p.D]));
  return worst;
}

fa::Tensor i32(std::vector<int32_t>& x) {
  return fa::Tensor(x.data(), fa::DType::kInt32, {int64_t(x.size())});
}

// Whole batch in one call, causal, every sequence S tokens. Output [B, H, S, D].
double whole_batch_causal(const fa::Context& ctx, Problem& p) {
  const int64_t S = p.S, D = p.D;
  std::vector<float> out(p.q.size(), std::numeric_limits<float>::quiet_NaN());
  std::vector<int32_t> cu{0, p.S};
  fa::kernels::FmhaParams a;
  a.q = fa::Tensor(p.q.data(), fa::DType::kFloat32, {S, int64_t(p.B) * p.H, D}, {D, S * D, 1});
  a.k = fa::Tensor(p.k.data(), fa::DType::kFloat32, {S, int64_t(p.B) * p.Hk, D}, {D, S * D, 1});
  a.v = fa::Tensor(p.v.data(), fa::DType::kFloat32, {S, int64_t(p.B) * p.Hk, D}, {D, S * D, 1});
  a.out = fa::Tensor(out.data(), fa::DType::kFloat32, {S, int64_t(p.B) * p.H, D}, {D, S * D, 1});
  a.cu_seqlens_q = i32(cu);
  a.cu_seqlens_k = i32(cu);
  a.causal = true;
  fa::kernels::fmha_forward(ctx, a);
  return causal_batch_error(p, out);
}

// One call per sequence, its own length, not causal (an encoder's or a prefix's attention).
// Output in FT's [B, S, H, D] layout; padded rows must stay unwritten (NaN).
double per_sequence(const fa::Context& ctx, Problem& p, bool* padding_untouched) {
  const int64_t S = p.S, D = p.D, H = p.H, Hk = p.Hk;
  std::vector<float> out(p.q.size(), std::numeric_limits<float>::quiet_NaN());
  for (int b = 0; b < p.B; ++b) {
    const int64_t len = p.lengths[b];
    std::vector<int32_t> cu{0, int32_t(len)};
    fa::kernels::FmhaParams a;
    a.q = fa::Tensor(&p.q[size_t(b) * H * S * D], fa::DType::kFloat32, {len, H, D}, {D, S * D, 1});
    a.k =
        fa::Tensor(&p.k[size_t(b) * Hk * S * D], fa::DType::kFloat32, {len, Hk, D}, {D, S * D, 1});
    a.v =
        fa::Tensor(&p.v[size_t(b) * Hk * S * D], fa::DType::kFloat32, {len, Hk, D}, {D, S * D, 1});
    a.out = fa::Tensor(&out[size_t(b) * S * H * D], fa::DType::kFloat32, {len, H, D});
    a.cu_seqlens_q = i32(cu);
    a.cu_seqlens_k = i32(cu);
    fa::kernels::fmha_forward(ctx, a);
  }
  double worst = 0;
  *padding_untouched = true;
  for (int b = 0; b < p.B; ++b)
    for (int i = 0; i < p.S; ++i)
      for (int h = 0; h < p.H; ++h) {
        const float* o = &out[((size_t(b) * S + i) * H + h) * D];
        if (i >= p.lengths[b]) {
          for (int d = 0; d < p.D; ++d) *padding_untouched &= std::isnan(o[d]);
          continue;
        }
        worst = std::max(worst, row_error(p, b, h, i, p.lengths[b] - 1, o));
      }
  return worst;
}

// One decode step (one new query per sequence) against a KV cache held as [B, Hk, max_seq, D]
// (FasterTransformer's V-cache layout), sequence b holding lengths[b] keys. The cache is viewed
// as a paged one, one block per sequence: k = [B, max_seq, Hk, D] with strides
// {Hk*max_seq*D, D, max_seq*D, 1}, block_table[b] = {b}, seqlens_k[b] = lengths[b]; so the whole
// batch, with its different lengths, is one call (on a GPU: the split-KV decode kernel).
double decode_step(const fa::Context& ctx, Problem& p) {
  const int64_t S = p.S, D = p.D, H = p.H, Hk = p.Hk, B = p.B;
  std::vector<float> q_new(size_t(B) * H * D),
      out(size_t(B) * H * D, std::numeric_limits<float>::quiet_NaN());
  for (int b = 0; b < p.B; ++b) {  // the new token's query: the last valid row of the prefill q
    for (int h = 0; h < p.H; ++h) {
      const float* last = &p.q[((size_t(b) * H + h) * S + p.lengths[b] - 1) * D];
      std::copy(last, last + D, &q_new[(size_t(b) * H + h) * D]);
    }
  }
  std::vector<int32_t> cu_q(B + 1), table(B), seqlens(B);
  for (int b = 0; b <= p.B; ++b) cu_q[b] = b;
  for (int b = 0; b < p.B; ++b) table[b] = b, seqlens[b] = p.lengths[b];
  fa::kernels::FmhaParams a;
  a.q = fa::Tensor(q_new.data(), fa::DType::kFloat32, {B, H, D});
  a.k = fa::Tensor(p.k.data(), fa::DType::kFloat32, {B, S, Hk, D}, {Hk * S * D, D, S * D, 1});
  a.v = fa::Tensor(p.v.data(), fa::DType::kFloat32, {B, S, Hk, D}, {Hk * S * D, D, S * D, 1});
  a.out = fa::Tensor(out.data(), fa::DType::kFloat32, {B, H, D});
  a.cu_seqlens_q = i32(cu_q);
  a.block_table = fa::Tensor(table.data(), fa::DType::kInt32, {B, 1});
  a.seqlens_k = i32(seqlens);
  a.causal = true;
  fa::kernels::fmha_forward(ctx, a);

  double worst = 0;
  for (int b = 0; b < p.B; ++b)
    for (int h = 0; h < p.H; ++h) {
      const int last = p.lengths[b] - 1;
      worst = std::max(worst, row_error(p, b, h, last, last, &out[(size_t(b) * H + h) * D]));
    }
  return worst;
}

bool run_attention_demo() {
  Problem p = make_problem();
  const fa::Context ctx = fa::cpu_context();
  const double tol = 2e-5;  // float32 inputs and accumulation against float64
  const double e1 = whole_batch_causal(ctx, p);
  bool untouched = false;
  const double e2 = per_sequence(ctx, p, &untouched);
  const double e3 = decode_step(ctx, p);
  // Bad input is an exception naming the tensor at fault (here: a mismatched head dim).
  std::string message;
  try {
    fa::kernels::FmhaParams bad;
    std::vector<int32_t> cu{0, 1};
    bad.q = fa::Tensor(p.q.data(), fa::DType::kFloat32, {1, 1, 64});
    bad.k = fa::Tensor(p.k.data(), fa::DType::kFloat32, {1, 1, 32});
    bad.v = bad.k;
    bad.out = bad.q;
    bad.cu_seqlens_q = bad.cu_seqlens_k = i32(cu);
    fa::kernels::fmha_forward(ctx, bad);
  } catch (const fa::InvalidArgument& e) {
    message = e.what();
  }
  const bool ok = e1 < tol && e2 < tol && e3 < tol && untouched && !message.empty();
  std::printf(
      "fmha [B=%d, H=%d, Hk=%d, S=%d, D=%d], max |err| vs float64:\n"
      "  whole batch, causal, [B,H,S,D] in and out:          %.2e\n"
      "  per sequence (lengths %d %d %d), out [B,S,H,D]:     %.2e (padding rows %s)\n"
      "  decode step on a [B,Hk,max_seq,D] cache as paged: %.2e\n"
      "  bad input: \"%s\"\n"
      "fmha checks -> %s\n",
      p.B, p.H, p.Hk, p.S, p.D, e1, p.lengths[0], p.lengths[1], p.lengths[2], e2,
      untouched ? "untouched" : "WRITTEN", e3, message.c_str(), ok ? "OK" : "FAILED");
  return ok;
}

#if defined(FASTATTN_WITH_CUDA)
// The same calls on a GPU, as FasterTransformer would make them: float16 [B, H, S, D] buffers in
// device memory, the caller's own stream, the library's caching device allocator for scratch.
// Nothing synchronises until the copy back.
#define CUDA_OK(call)                                                                           \
  do {                                                                                          \
    const cudaError_t e_ = (call);                                                              \
    if (e_ != cudaSuccess) throw fa::Error(std::string(#call) + ": " + cudaGetErrorString(e_)); \
  } while (0)

struct DeviceBuffer {
  void* ptr = nullptr;
  explicit DeviceBuffer(size_t bytes) { CUDA_OK(cudaMalloc(&ptr, bytes)); }
  ~DeviceBuffer() { cudaFree(ptr); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

std::vector<uint16_t> to_half(std::vector<float>& x) {  // rounds x in place to what fp16 holds
  std::vector<uint16_t> h(x.size());
  for (size_t i = 0; i < x.size(); ++i) x[i] = fa::half_to_float(h[i] = fa::float_to_half(x[i]));
  return h;
}

bool run_attention_demo_cuda() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("fmha on CUDA: no GPU visible, skipped\n");
    return true;
  }
  Problem p = make_problem();
  const std::vector<uint16_t> q = to_half(p.q), k = to_half(p.k), v = to_half(p.v);
  const int64_t S = p.S, D = p.D, B = p.B, H = p.H, Hk = p.Hk;
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreate(&stream));
  DeviceBuffer dq(q.size() * 2), dk(k.size() * 2), dv(v.size() * 2), dout(q.size() * 2),
      dcu(2 * sizeof(int32_t));
  const int32_t cu[2] = {0, p.S};
  CUDA_OK(cudaMemcpyAsync(dq.ptr, q.data(), q.size() * 2, cudaMemcpyHostToDevice, stream));
  CUDA_OK(cudaMemcpyAsync(dk.ptr, k.data(), k.size() * 2, cudaMemcpyHostToDevice, stream));
  CUDA_OK(cudaMemcpyAsync(dv.ptr, v.data(), v.size() * 2, cudaMemcpyHostToDevice, stream));
  CUDA_OK(cudaMemcpyAsync(dcu.ptr, cu, sizeof(cu), cudaMemcpyHostToDevice, stream));
  CUDA_OK(cudaMemsetAsync(dout.ptr, 0xff, q.size() * 2, stream));  // NaN until written

  fa::Context ctx;
  ctx.device = fa::Device{fa::DeviceType::kCUDA, 0};
  ctx.allocator = fa::device_allocator(0);
  ctx.stream = stream;
  const fa::Device dev = ctx.device;
  const fa::DType f16 = fa::DType::kFloat16;
  fa::kernels::FmhaParams a;
  a.q = fa::Tensor(dq.ptr, f16, {S, B * H, D}, {D, S * D, 1}, dev);
  a.k = fa::Tensor(dk.ptr, f16, {S, B * Hk, D}, {D, S * D, 1}, dev);
  a.v = fa::Tensor(dv.ptr, f16, {S, B * Hk, D}, {D, S * D, 1}, dev);
  a.out = fa::Tensor(dout.ptr, f16, {S, B * H, D}, {D, S * D, 1}, dev);
  a.cu_seqlens_q = a.cu_seqlens_k = fa::Tensor(dcu.ptr, fa::DType::kInt32, {2}, dev);
  a.max_seqlen_q = a.max_seqlen_k = p.S;
  a.causal = true;
  fa::kernels::fmha_forward(ctx, a);
  std::vector<uint16_t> out(q.size());
  CUDA_OK(cudaMemcpyAsync(out.data(), dout.ptr, out.size() * 2, cudaMemcpyDeviceToHost, stream));
  CUDA_OK(cudaStreamSynchronize(stream));
  CUDA_OK(cudaStreamDestroy(stream));

  std::vector<float> out_f(out.size());
  for (size_t i = 0; i < out.size(); ++i) out_f[i] = fa::half_to_float(out[i]);
  const double worst = causal_batch_error(p, out_f);
  const bool ok = worst < 2e-3;  // float16 output rounding (half an ulp near 1 is 5e-4) and more
  std::printf("fmha on CUDA, float16, own stream, whole batch causal: max |err| %.2e -> %s\n",
              worst, ok ? "OK" : "FAILED");
  return ok;
}
#endif

// ---------------------------------------------------------------------------------------------
// (b) load an exported model and generate

std::vector<int64_t> parse_ids(const std::string& text) {
  std::vector<int64_t> ids;
  std::string field;
  std::istringstream in(text);
  while (in >> field) {
    size_t used = 0;
    const long long id = std::stoll(field, &used);
    if (used != field.size() || id < 0) throw fa::InvalidArgument("bad token id '" + field + "'");
    ids.push_back(id);
  }
  if (ids.empty()) throw fa::InvalidArgument("empty prompt");
  return ids;
}

int run_generation(int argc, char** argv) {
  const std::string model_dir = argv[1];
  std::vector<std::vector<int64_t>> prompts;
  fa::runtime::SessionOptions options;
  fa::runtime::GenerateOptions gen;
  gen.max_new_tokens = 8;
  for (int i = 2; i < argc; ++i) {
    const std::string arg = argv[i];
    if (i + 1 >= argc) throw fa::InvalidArgument("option " + arg + " needs a value");
    const std::string value = argv[++i];
    if (arg == "--prompt") {
      prompts.push_back(parse_ids(value));
    } else if (arg == "--max-new-tokens") {
      gen.max_new_tokens = std::stoll(value);
    } else if (arg == "--threads") {
      options.num_threads = std::stoi(value);
    } else if (arg == "--device") {
      options.device = value;
    } else {
      throw fa::InvalidArgument("unknown option " + arg);
    }
  }
  if (prompts.empty()) prompts.push_back({1, 2, 3, 4, 5});
  options.max_batch = int(prompts.size());

  fa::runtime::InferenceSession session(model_dir, options);
  const auto& cfg = session.config();
  std::printf("model %s: %s, %d layers, hidden %lld, vocab %lld, %s, %.1f MB of weights\n",
              model_dir.c_str(), cfg.architecture.c_str(), cfg.num_layers,
              static_cast<long long>(cfg.hidden_size), static_cast<long long>(cfg.vocab_size),
              fa::dtype_name(cfg.dtype), session.weight_bytes() / 1e6);
  // Greedy (temperature 0); set gen.sampling.{temperature, top_k, top_p, seed} to sample.
  const auto outputs = session.generate(prompts, gen);
  for (size_t i = 0; i < outputs.size(); ++i) {
    std::printf("generated[%zu]:", i);
    for (int64_t t : outputs[i]) std::printf(" %lld", static_cast<long long>(t));
    std::printf("\n");
  }
  const auto& t = session.timings();
  std::printf("prefill: %lld tokens, %.1f tokens/s; decode: %lld steps, %.2f ms/step\n",
              static_cast<long long>(t.prefill_tokens), t.prefill_tokens_per_s(),
              static_cast<long long>(t.decode_steps), t.decode_ms_per_step());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::printf("FastAttention %s\n", FASTATTN_VERSION_STRING);
  try {
    if (!run_attention_demo()) return 1;
#if defined(FASTATTN_WITH_CUDA)
    if (!run_attention_demo_cuda()) return 1;
#endif
    if (argc >= 2) return run_generation(argc, argv);
  } catch (const fa::Error& e) {  // FileError, InvalidArgument, OutOfMemory: messages name it
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {  // e.g. std::stoll on a bad number
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  return 0;
}
