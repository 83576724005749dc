// Paged KV-cache bookkeeping: allocation, slots, freeing, exhaustion, reuse; KvCache pools.
#include <algorithm>
#include <set>

#include "fastattn/kvcache/block_manager.h"
#include "fastattn/kvcache/kv_cache.h"
#include "test_util.h"

using fastattn::InvalidArgument;
using fastattn::OutOfMemory;
using fastattn::kvcache::BlockManager;

TEST(allocates_distinct_blocks_and_slots) {
  BlockManager bm(10, 4);
  CHECK(bm.num_free_blocks() == 10 && bm.block_size() == 4);
  const auto a = bm.add_sequence();
  const auto b = bm.add_sequence();
  CHECK(a != b);
  bm.reserve(a, 9);  // 3 blocks
  bm.reserve(b, 4);  // 1 block
  CHECK(bm.block_table(a).size() == 3 && bm.block_table(b).size() == 1);
  CHECK(bm.capacity(a) == 12 && bm.capacity(b) == 4);
  CHECK(bm.num_free_blocks() == 6);
  std::set<int32_t> used(bm.block_table(a).begin(), bm.block_table(a).end());
  used.insert(bm.block_table(b).begin(), bm.block_table(b).end());
  CHECK(used.size() == 4);
  // Every slot of both sequences is distinct and maps through the table.
  std::set<int32_t> slots;
  for (int64_t p = 0; p < 12; ++p) {
    const int32_t s = bm.slot(a, p);
    CHECK(s == bm.block_table(a)[static_cast<size_t>(p / 4)] * 4 + p % 4);
    slots.insert(s);
  }
  for (int64_t p = 0; p < 4; ++p) slots.insert(bm.slot(b, p));
  CHECK(slots.size() == 16);
  for (int32_t s : slots) CHECK(s >= 0 && s < 40);
  // Growing reserves only the extra blocks; reserving less is a no-op.
  bm.reserve(a, 13);
  CHECK(bm.block_table(a).size() == 4 && bm.num_free_blocks() == 5);
  bm.reserve(a, 2);
  CHECK(bm.block_table(a).size() == 4);
  CHECK_THROWS(bm.slot(a, 16), InvalidArgument, "position 16 is outside the 16 reserved slots");
  CHECK_THROWS(bm.slot(a, -1), InvalidArgument, "position -1");
}

TEST(exhaustion_names_tokens_and_changes_nothing) {
  BlockManager bm(4, 16);
  const auto a = bm.add_sequence();
  bm.reserve(a, 40);  // 3 blocks
  const auto b = bm.add_sequence();
  CHECK_THROWS(bm.reserve(b, 20), OutOfMemory, "needs 20 more tokens of cache (2 blocks of 16)");
  CHECK_THROWS(bm.reserve(b, 20), OutOfMemory, "only 16 tokens (1 blocks) are free of 64");
  CHECK(bm.num_free_blocks() == 1 && bm.block_table(b).empty());  // all or nothing
  bm.reserve(b, 16);
  CHECK(bm.num_free_blocks() == 0);
  CHECK_THROWS(bm.reserve(a, 49), OutOfMemory, "needs 1 more tokens");
}

TEST(freeing_returns_blocks_without_leaks) {
  BlockManager bm(8, 2);
  for (int round = 0; round < 50; ++round) {
    std::vector<BlockManager::SeqId> ids;
    for (int s = 0; s < 4; ++s) {
      ids.push_back(bm.add_sequence());
      bm.reserve(ids.back(), 1 + (round + s) % 4);  // 1..4 tokens: 1 or 2 blocks
    }
    CHECK(bm.num_sequences() == 4);
    if (round % 2 == 0) {
      for (auto id : ids) bm.free_sequence(id);
    } else {
      bm.reset();
    }
    CHECK(bm.num_free_blocks() == 8 && bm.num_sequences() == 0);
  }
  // After all that churn the whole pool can still go to one sequence.
  const auto big = bm.add_sequence();
  bm.reserve(big, 16);
  std::vector<int32_t> t = bm.block_table(big);
  std::sort(t.begin(), t.end());
  CHECK(t == (std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6, 7}));
}

TEST(unknown_sequences_and_bad_sizes) {
  BlockManager bm(2, 8);
  const auto a = bm.add_sequence();
  bm.free_sequence(a);
  CHECK_THROWS(bm.free_sequence(a), InvalidArgument, "unknown sequence id");
  CHECK_THROWS(bm.reserve(a, 1), InvalidArgument, "unknown sequence id");
  CHECK_THROWS(bm.block_table(12345), InvalidArgument, "unknown sequence id 12345");
  CHECK_THROWS(BlockManager(0, 16), InvalidArgument, "at least one block");
  CHECK_THROWS(BlockManager(4, 0), InvalidArgument, "kv_block_size");
  const auto b = bm.add_sequence();
  CHECK(b != a);  // ids are never reused
  CHECK_THROWS(bm.reserve(b, -1), InvalidArgument, "negative token count");
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
