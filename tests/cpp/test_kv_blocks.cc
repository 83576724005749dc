// Paged KV-cache bookkeeping (SpillBlockManager): allocation, slots, freeing, exhaustion, reuse,
// and spilling to the host pool; KvCache pools.
#include <algorithm>
#include <set>

#include "fastattn/kvcache/kv_cache.h"
#include "fastattn/kvcache/spill_manager.h"
#include "test_util.h"

using fastattn::InvalidArgument;
using fastattn::OutOfMemory;
using fastattn::kvcache::SpillBlockManager;
using fastattn::kvcache::SpillMove;

namespace {

// A copy function that records the moves (and fails the test if one is called with none).
struct Recorder {
  std::vector<SpillMove> moves;
  int calls = 0;
  SpillBlockManager::CopyFn fn() {
    return [this](const std::vector<SpillMove>& m) {
      CHECK(!m.empty());
      ++calls;
      moves.insert(moves.end(), m.begin(), m.end());
    };
  }
};

const SpillBlockManager::CopyFn kNoSpill = [](const std::vector<SpillMove>&) {
  CHECK(false);  // a pool with room never spills
};

}  // namespace

TEST(allocates_distinct_blocks_and_slots) {
  SpillBlockManager bm(10, 0, 4);
  CHECK(bm.free_device_blocks() == 10 && bm.block_size() == 4);
  const auto a = bm.add_sequence();
  const auto b = bm.add_sequence();
  CHECK(a != b);
  bm.reserve(a, 9, 0, kNoSpill);  // 3 blocks
  bm.reserve(b, 4, 0, kNoSpill);  // 1 block
  CHECK(bm.device_table(a).size() == 3 && bm.device_table(b).size() == 1);
  CHECK(bm.capacity(a) == 12 && bm.capacity(b) == 4 && bm.host_tokens(a) == 0);
  CHECK(bm.free_device_blocks() == 6);
  std::set<int32_t> slots;
  for (int64_t p = 0; p < 12; ++p) {
    const int32_t s = bm.slot(a, p);
    CHECK(s == bm.device_table(a)[static_cast<size_t>(p / 4)] * 4 + p % 4);
    slots.insert(s);
  }
  for (int64_t p = 0; p < 4; ++p) slots.insert(bm.slot(b, p));
  CHECK(slots.size() == 16);
  for (int32_t s : slots) CHECK(s >= 0 && s < 40);
  bm.reserve(a, 13, 0, kNoSpill);  // grows by the extra block only
  CHECK(bm.device_table(a).size() == 4 && bm.free_device_blocks() == 5);
  bm.reserve(a, 2, 0, kNoSpill);  // reserving less is a no-op
  CHECK(bm.device_table(a).size() == 4);
  CHECK_THROWS(bm.slot(a, 16), InvalidArgument, "not in the device part");
  CHECK_THROWS(bm.slot(a, -1), InvalidArgument, "position -1");
}

TEST(exhaustion_without_host_pool_names_tokens_and_changes_nothing) {
  SpillBlockManager bm(4, 0, 16);
  const auto a = bm.add_sequence();
  bm.reserve(a, 40, 0, kNoSpill);  // 3 blocks
  const auto b = bm.add_sequence();
  CHECK_THROWS(bm.reserve(b, 20, 0, kNoSpill), OutOfMemory, "needs 32 more tokens");
  CHECK(bm.free_device_blocks() == 1 && bm.device_table(b).empty());  // all or nothing
  bm.reserve(b, 16, 0, kNoSpill);
  CHECK(bm.free_device_blocks() == 0);
  CHECK_THROWS(bm.reserve(a, 49, 40, kNoSpill), OutOfMemory, "host pool");
}

TEST(spills_oldest_blocks_of_the_growing_sequence_first) {
  SpillBlockManager bm(4, 8, 2);
  Recorder rec;
  const auto a = bm.add_sequence();
  bm.reserve(a, 8, 0, rec.fn());  // 4 device blocks, no spill
  CHECK(rec.calls == 0);
  const std::vector<int32_t> first = bm.device_table(a);
  bm.reserve(a, 10, 8, rec.fn());  // a 5th block: the oldest moves to the host
  CHECK(rec.calls == 1 && rec.moves.size() == 1);
  CHECK(rec.moves[0].device_block == first[0]);
  CHECK(bm.host_tokens(a) == 2 && bm.host_table(a).size() == 1);
  CHECK(bm.host_table(a)[0] == rec.moves[0].host_block);
  CHECK(bm.device_table(a).size() == 4 && bm.capacity(a) == 10);
  // The freed device block was reused for the new tokens, after the copy.
  CHECK(bm.device_table(a).back() == first[0]);
  // Positions map past the host part.
  CHECK(bm.slot(a, 2) == bm.device_table(a)[0] * 2);
  CHECK_THROWS(bm.slot(a, 1), InvalidArgument, "not in the device part");
  CHECK(bm.spilled_blocks_total() == 1);
}

TEST(never_spills_the_tokens_of_the_current_pass) {
  SpillBlockManager bm(3, 8, 4);
  Recorder rec;
  const auto a = bm.add_sequence();
  bm.reserve(a, 12, 0, rec.fn());  // 3 blocks, all holding this pass's tokens
  const auto b = bm.add_sequence();
  // b needs a block; a's blocks hold tokens at or after its keep_from (0): none may move.
  CHECK_THROWS(bm.reserve(b, 1, 0, rec.fn()), OutOfMemory, "could move");
  CHECK(rec.calls == 0 && bm.device_table(b).empty());
  bm.reserve(a, 12, 8, rec.fn());  // a's next pass starts at 8: blocks 0 and 1 may now move
  bm.reserve(b, 5, 0, rec.fn());   // two blocks for b: a's two oldest spill
  CHECK(rec.moves.size() == 2 && bm.host_tokens(a) == 8 && bm.device_table(a).size() == 1);
  CHECK(bm.device_table(b).size() == 2 && bm.host_tokens(b) == 0);
}

TEST(host_pool_exhaustion_is_all_or_nothing) {
  SpillBlockManager bm(2, 1, 4);
  Recorder rec;
  const auto a = bm.add_sequence();
  bm.reserve(a, 8, 0, rec.fn());
  bm.reserve(a, 12, 8, rec.fn());  // spills one block: the host pool is now full
  CHECK(bm.free_host_blocks() == 0 && rec.moves.size() == 1);
  const auto before_dev = bm.device_table(a);
  CHECK_THROWS(bm.reserve(a, 16, 12, rec.fn()), OutOfMemory, "host pool");
  CHECK(bm.device_table(a) == before_dev && bm.host_tokens(a) == 4 && rec.moves.size() == 1);
  CHECK(bm.capacity_tokens() == 12);
}

TEST(freeing_returns_blocks_of_both_pools) {
  SpillBlockManager bm(4, 4, 2);
  for (int round = 0; round < 30; ++round) {
    Recorder rec;
    const auto a = bm.add_sequence();
    const auto b = bm.add_sequence();
    bm.reserve(a, 6, 0, rec.fn());
    bm.reserve(a, 8, 6, rec.fn());
    bm.reserve(b, 2 + round % 3, 0, rec.fn());
    if (round % 2 == 0) {
      bm.free_sequence(a);
      bm.free_sequence(b);
    } else {
      bm.reset();
    }
    CHECK(bm.free_device_blocks() == 4 && bm.free_host_blocks() == 4);
  }
  const auto big = bm.add_sequence();
  bm.reserve(big, 8, 0, kNoSpill);
  std::vector<int32_t> t = bm.device_table(big);
  std::sort(t.begin(), t.end());
  CHECK(t == (std::vector<int32_t>{0, 1, 2, 3}));
}

TEST(unknown_sequences_and_bad_sizes) {
  SpillBlockManager bm(2, 0, 8);
  const auto a = bm.add_sequence();
  bm.free_sequence(a);
  CHECK_THROWS(bm.free_sequence(a), InvalidArgument, "unknown sequence id");
  CHECK_THROWS(bm.reserve(a, 1, 0, kNoSpill), InvalidArgument, "unknown sequence id");
  CHECK_THROWS(bm.device_table(12345), InvalidArgument, "unknown sequence id 12345");
  CHECK_THROWS(SpillBlockManager(0, 4, 16), InvalidArgument, "at least one block");
  CHECK_THROWS(SpillBlockManager(4, 0, 0), InvalidArgument, "kv_block_size");
  CHECK_THROWS(SpillBlockManager(4, -1, 16), InvalidArgument, "negative host pool");
  const auto b = bm.add_sequence();
  CHECK(b != a);  // ids are never reused
  CHECK_THROWS(bm.reserve(b, -1, 0, kNoSpill), InvalidArgument, "bad token range");
  CHECK_THROWS(bm.reserve(b, 4, 5, kNoSpill), InvalidArgument, "bad token range");
}

TEST(kv_cache_pools) {
  fastattn::kvcache::KvCacheConfig c;
  c.num_layers = 3;
  c.num_blocks = 5;
  c.block_size = 4;
  c.num_kv_heads = 2;
  c.head_dim = 8;
  c.dtype = fastattn::DType::kFloat16;
  fastattn::kvcache::KvCache cache(c, fastattn::host_allocator());
  CHECK(cache.k(0).shape() == (std::vector<int64_t>{5, 4, 2, 8}));
  CHECK(cache.v(2).dtype() == fastattn::DType::kFloat16);
  CHECK(cache.k(1).data() != cache.k(2).data() && cache.k(1).data() != cache.v(1).data());
  CHECK(cache.nbytes() == 3u * 2u * 5u * 4u * 2u * 8u * 2u);
  CHECK(fastattn::kvcache::KvCache::bytes_per_token(c) == 2u * 3u * 2u * 8u * 2u);
  c.dtype = fastattn::DType::kInt32;
  CHECK_THROWS(fastattn::kvcache::KvCache(c, fastattn::host_allocator()), InvalidArgument,
               "kv_dtype");
  c.dtype = fastattn::DType::kFloat32;
  c.num_blocks = 0;
  CHECK_THROWS(fastattn::kvcache::KvCache(c, fastattn::host_allocator()), InvalidArgument,
               "every size must be positive");
}

TEST_MAIN()
