// choose_attention_kernel (kernels/attention/attention_dispatch.h) against fake devices: which
// kernel "auto" picks per layout, dtype, query count and compute capability, and that every
// unsupported case says why (the same answer the GPU path acts on).
#include <set>
#include <string>

#include "fastattn/kernels/attention/attention_dispatch.h"
#include "test_util.h"

using namespace fastattn;
using namespace fastattn::kernels;

namespace {

using K = AttentionKernel;

// A GPU of compute capability cc whose build runs the kernels in `kernels` for head dims 64 and
// 128 and every dtype a kernel takes.
AttentionDevice gpu(int cc, std::set<K> kernels) {
  AttentionDevice d;
  d.gpu = true;
  d.cc = cc;
  d.runnable = [kernels](K k, DType dtype, int head_dim) {
    if (head_dim != 64 && head_dim != 128) return false;
    if (dtype == DType::kFloat32 && !is_decode_kernel(k)) return false;
    return kernels.count(k) > 0;
  };
  return d;
}

// What a native build for sm_cc holds: that arch's MMA path and the decode copy paths it runs.
AttentionDevice native_gpu(int cc) {
  if (cc >= 80) return gpu(cc, {K::kFmha16816, K::kDecodeAsync, K::kDecodeRegStaged});
  if (cc >= 75) return gpu(cc, {K::kFmha1688, K::kDecodeRegStaged});
  return gpu(cc, {K::kFmha884, K::kDecodeRegStaged});
}

AttentionProblem problem(DType dtype, int max_seqlen_q, bool paged = false, int hq = 8,
                         int hk = 8) {
  AttentionProblem p;
  p.q_dtype = p.kv_dtype = p.out_dtype = dtype;
  p.shape.head_dim = 128;
  p.shape.num_heads_q = hq;
  p.shape.num_heads_k = hk;
  p.shape.batch = 2;
  p.shape.paged = paged;
  p.shape.block_size = paged ? 16 : 0;
  p.shape.max_seqlen_q = max_seqlen_q;
  return p;
}

K pick(const AttentionProblem& p, const AttentionDevice& d,
       AttentionImpl impl = AttentionImpl::kAuto) {
  const AttentionChoice c = choose_attention_kernel(p, impl, d);
  CHECK_MSG(c.kernel != K::kNone || !c.reason.empty(), "kNone without a reason");
  return c.kernel;
}

std::string why(const AttentionProblem& p, const AttentionDevice& d, AttentionImpl impl) {
  return choose_attention_kernel(p, impl, d).reason;
}

}  // namespace

TEST(impl_names_parse_and_bad_ones_are_named) {
  CHECK(parse_attention_impl("auto") == AttentionImpl::kAuto);
  CHECK(parse_attention_impl("884-plain") == AttentionImpl::kFmha884Plain);
  CHECK(parse_attention_impl("decode-regstage") == AttentionImpl::kDecodeRegStaged);
  CHECK_THROWS(parse_attention_impl("999"), InvalidArgument, "impl: '999' is not one of");
  CHECK_THROWS(parse_attention_impl("cpu"), InvalidArgument, "decode-regstage");
}

TEST(cpu_tensors_run_the_cpu_kernel_with_auto_only) {
  const AttentionDevice cpu;
  CHECK(pick(problem(DType::kFloat32, 0), cpu) == K::kCpu);
  CHECK(pick(problem(DType::kFloat16, 0, true), cpu) == K::kCpu);
  CHECK(pick(problem(DType::kFloat32, 0), cpu, AttentionImpl::kFmha16816) == K::kNone);
  CHECK(why(problem(DType::kFloat32, 0), cpu, AttentionImpl::kDecode)
            .find("'decode' selects a CUDA kernel") != std::string::npos);
  CHECK(!needs_max_seqlen_q(problem(DType::kFloat16, 0), AttentionImpl::kAuto, cpu));
}

TEST(auto_on_each_arch) {
  // Prefill-sized: the device's native MMA path.
  CHECK(pick(problem(DType::kFloat16, 512), native_gpu(70)) == K::kFmha884);
  CHECK(pick(problem(DType::kFloat16, 512), native_gpu(75)) == K::kFmha1688);
  CHECK(pick(problem(DType::kBFloat16, 512), native_gpu(80)) == K::kFmha16816);
  CHECK(pick(problem(DType::kFloat16, 512), native_gpu(90)) == K::kFmha16816);
  // Decode-sized: the split-KV kernel, cp.async on sm_80..89 only.
  CHECK(pick(problem(DType::kFloat16, 1), native_gpu(70)) == K::kDecodeRegStaged);
  CHECK(pick(problem(DType::kFloat16, 1), native_gpu(86)) == K::kDecodeAsync);
  CHECK(pick(problem(DType::kFloat16, 1), native_gpu(90)) == K::kDecodeRegStaged);
  // Paged KV and float32 always decode, whatever the query count.
  CHECK(pick(problem(DType::kFloat16, 512, true), native_gpu(80)) == K::kDecodeAsync);
  CHECK(pick(problem(DType::kFloat32, 512), native_gpu(90)) == K::kDecodeRegStaged);
}

TEST(auto_decode_threshold_counts_query_heads_per_kv_head) {
  const AttentionDevice d = native_gpu(90);
  CHECK(decode_like(16, 2));
  CHECK(!decode_like(17, 1));
  CHECK(!decode_like(5, 8));  // 40 rows per KV head
  CHECK(pick(problem(DType::kFloat16, 4, false, 8, 1), d) == K::kDecodeRegStaged);  // 32 rows
  CHECK(pick(problem(DType::kFloat16, 5, false, 8, 1), d) == K::kFmha16816);        // 40 rows
  CHECK(needs_max_seqlen_q(problem(DType::kFloat16, 0), AttentionImpl::kAuto, d));
  CHECK(!needs_max_seqlen_q(problem(DType::kFloat16, 0, true), AttentionImpl::kAuto, d));
  CHECK(!needs_max_seqlen_q(problem(DType::kFloat32, 0), AttentionImpl::kAuto, d));
  CHECK(!needs_max_seqlen_q(problem(DType::kFloat16, 0), AttentionImpl::kFmha16816, d));
}

TEST(auto_takes_the_newest_runnable_mma_path) {
  // An FASTATTN_CUDA_ALL_IMPLS build on sm_90 runs all three; auto keeps 16816.
  const AttentionDevice all =
      gpu(90, {K::kFmha884, K::kFmha1688, K::kFmha16816, K::kDecodeRegStaged});
  CHECK(pick(problem(DType::kFloat16, 512), all) == K::kFmha16816);
  CHECK(pick(problem(DType::kFloat16, 512), all, AttentionImpl::kFmha884) == K::kFmha884);
  // A build whose only runnable path is 1688 (e.g. sm_75 code on an sm_75 GPU).
  CHECK(pick(problem(DType::kFloat16, 512), gpu(75, {K::kFmha1688})) == K::kFmha1688);
  // No decode instance for the head dim: even one query goes to FlashAttention-2.
  CHECK(pick(problem(DType::kFloat16, 1), gpu(90, {K::kFmha16816})) == K::kFmha16816);
}

TEST(unsupported_calls_say_why) {
  const AttentionDevice d = native_gpu(90);
  AttentionProblem mixed = problem(DType::kFloat16, 512);
  mixed.kv_dtype = DType::kBFloat16;
  CHECK(why(mixed, d, AttentionImpl::kAuto).find("of one dtype") != std::string::npos);
  CHECK(why(problem(DType::kFloat16, 512, true), d, AttentionImpl::kFmha16816).find("paged") !=
        std::string::npos);
  CHECK(why(problem(DType::kFloat32, 512), d, AttentionImpl::kFmha16816)
            .find("float16 or bfloat16") != std::string::npos);
  // Not compiled for this arch: the explicit path is refused, not launched.
  CHECK(why(problem(DType::kFloat16, 512), d, AttentionImpl::kFmha884)
            .find("no CUDA instance of kernel 884") != std::string::npos);
  CHECK(pick(problem(DType::kFloat16, 1), native_gpu(75), AttentionImpl::kDecodeAsync) == K::kNone);
  AttentionProblem hd48 = problem(DType::kFloat16, 512);
  hd48.shape.head_dim = 48;
  CHECK(why(hd48, d, AttentionImpl::kAuto).find("head dim 48") != std::string::npos);
  AttentionProblem big = problem(DType::kFloat16, 1, true);
  big.shape.batch = 70000;
  CHECK(why(big, d, AttentionImpl::kAuto).find("batch <= 65535") != std::string::npos);
}

TEST(explicit_decode_follows_the_device) {
  CHECK(pick(problem(DType::kFloat16, 512), native_gpu(80), AttentionImpl::kDecode) ==
        K::kDecodeAsync);
  CHECK(pick(problem(DType::kFloat16, 512), native_gpu(90), AttentionImpl::kDecode) ==
        K::kDecodeRegStaged);
  CHECK(pick(problem(DType::kFloat16, 512), native_gpu(90), AttentionImpl::kDecodeAsync) ==
        K::kDecodeAsync);
  CHECK(pick(problem(DType::kFloat16, 512), native_gpu(70), AttentionImpl::kDecode) ==
        K::kDecodeRegStaged);
}

TEST_MAIN()
