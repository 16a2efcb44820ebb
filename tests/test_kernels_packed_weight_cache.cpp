// The on-disk cache of packed weights (kernels/packed_weight_cache.h): a layer packed through the cache computes
// exactly what a layer packed from the plain weight computes; a reopened cache hands the same bytes back without
// reading the weight; a damaged, truncated or foreign file is refused, never trusted; and Use maps and drops the
// file's pages in this process.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>

#include "core/error.h"
#include "kernels/conv2d.h"
#include "kernels/linear.h"
#include "kernels/packed_weight_cache.h"
#include "random_tensor.h"
#include "test_support.h"

namespace sdcpu {
namespace {

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

void write_file(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

// A weight source that counts how often its values are read.
WeightSource counted(const Tensor& w, const std::shared_ptr<PackedWeightCache>& cache, const std::string& name,
                     int& reads) {
  return {w.shape(),
          [w, &reads] {
            ++reads;
            return w;
          },
          cache, name};
}

struct Layers {
  Tensor conv_w = testing::random_tensor({32, 16, 3, 3}, 1), conv_b = testing::random_tensor({32}, 2);
  Tensor lin_w = testing::random_tensor({48, 32}, 3), lin_b = testing::random_tensor({48}, 4);
  Tensor x = testing::random_tensor({1, 16, 12, 12}, 5), rows = testing::random_tensor({7, 32}, 6);
};

// Writes a cache of one conv and one linear to `path`.
void write_cache(const std::string& path, const std::string& fingerprint, const Layers& l) {
  auto cache = std::make_shared<PackedWeightCache>(path, fingerprint);
  int reads = 0;
  PreparedConv2d conv(counted(l.conv_w, cache, "conv.weight", reads), l.conv_b, 1, Conv2dPadding::same(1));
  PreparedLinear lin(counted(l.lin_w, cache, "lin.weights", reads), l.lin_b);  // as long as "conv.weight"
  EXPECT_EQ(reads, 2);
  EXPECT_FALSE(cache->complete());
  cache->save();
}

TEST(PackedWeightCache, ReopenedCacheGivesTheSameResultsWithoutReadingWeights) {
  const Layers l;
  const std::string path = testing::temp_dir() + "/net.sdcw";
  auto missing = std::make_shared<PackedWeightCache>(path, "fp");
  EXPECT_EQ(missing->state(), "missing");
  write_cache(path, "fp", l);

  auto cache = std::make_shared<PackedWeightCache>(path, "fp");
  ASSERT_EQ(cache->state(), "valid");
  EXPECT_EQ(cache->entries(), 2u);
  int reads = 0;
  PreparedConv2d conv(counted(l.conv_w, cache, "conv.weight", reads), l.conv_b, 1, Conv2dPadding::same(1));
  PreparedLinear lin(counted(l.lin_w, cache, "lin.weights", reads), l.lin_b);
  EXPECT_EQ(reads, 0) << "a cached weight must not be read from the checkpoint";
  EXPECT_TRUE(cache->complete());

  const PreparedConv2d conv_plain(l.conv_w, l.conv_b, 1, 1);
  const PreparedLinear lin_plain(l.lin_w, l.lin_b);
  // Bit for bit: the same packed bytes through the same primitive.
  EXPECT_EQ(testing::compare(conv2d(l.x, conv), conv2d(l.x, conv_plain)).max_abs, 0.0);
  EXPECT_EQ(testing::compare(linear(l.rows, lin), linear(l.rows, lin_plain)).max_abs, 0.0);
}

TEST(PackedWeightCache, BF16WeightsRoundTrip) {
  const Layers l;
  const std::string path = testing::temp_dir() + "/net-bf16.sdcw";
  {
    auto cache = std::make_shared<PackedWeightCache>(path, "bf16");
    int reads = 0;
    PreparedLinear lin(counted(l.lin_w, cache, "lin.weight", reads), l.lin_b, ComputeType::bf16);
    cache->save();
  }
  auto cache = std::make_shared<PackedWeightCache>(path, "bf16");
  int reads = 0;
  PreparedLinear lin(counted(l.lin_w, cache, "lin.weight", reads), l.lin_b, ComputeType::bf16);
  EXPECT_EQ(reads, 0);
  const PreparedLinear plain(l.lin_w, l.lin_b, ComputeType::bf16);
  EXPECT_EQ(lin.compute_type(), plain.compute_type());
  EXPECT_EQ(testing::compare(linear(l.rows, lin), linear(l.rows, plain)).max_abs, 0.0);
}

TEST(PackedWeightCache, AnotherFingerprintIsStale) {
  const Layers l;
  const std::string path = testing::temp_dir() + "/net.sdcw";
  write_cache(path, "model A", l);
  PackedWeightCache other(path, "model B");
  EXPECT_EQ(other.state(), "stale");
  EXPECT_FALSE(other.valid());
  EXPECT_EQ(other.find("conv.weight", dnnl::memory::desc()), nullptr);
}

TEST(PackedWeightCache, AWeightInAnotherLayoutOrUnderAnotherNameIsAMiss) {
  const Layers l;
  const std::string path = testing::temp_dir() + "/net.sdcw";
  write_cache(path, "fp", l);
  auto cache = std::make_shared<PackedWeightCache>(path, "fp");
  // The linear's weight asked for under the conv's name: the descriptors differ, so it is packed anew.
  int reads = 0;
  PreparedLinear lin(counted(l.lin_w, cache, "conv.weight", reads), l.lin_b);
  EXPECT_EQ(reads, 1);
  PreparedLinear unknown(counted(l.lin_w, cache, "no.such.weight", reads), l.lin_b);
  EXPECT_EQ(reads, 2);
  EXPECT_EQ(cache->misses(), 2u);
  EXPECT_FALSE(cache->complete());
  const PreparedLinear plain(l.lin_w, l.lin_b);
  EXPECT_EQ(testing::compare(linear(l.rows, lin), linear(l.rows, plain)).max_abs, 0.0);
}

TEST(PackedWeightCache, EveryTruncationIsRefused) {
  const Layers l;
  const std::string dir = testing::temp_dir(), path = dir + "/net.sdcw";
  write_cache(path, "fp", l);
  const std::vector<uint8_t> bytes = read_file(path);
  const size_t data_offset = parse_packed_weight_index(bytes.data(), bytes.size()).data_offset;
  // Every cut inside the header and index, then a few inside the data.
  std::vector<size_t> cuts;
  for (size_t n = 0; n < 2048 && n < data_offset; ++n) cuts.push_back(n);
  for (size_t n : {data_offset, data_offset + 1, bytes.size() / 2, bytes.size() - 1}) cuts.push_back(n);
  for (size_t n : cuts) {
    SCOPED_TRACE(n);
    const std::string cut = dir + "/cut.sdcw";
    write_file(cut, std::vector<uint8_t>(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n)));
    PackedWeightCache cache(cut, "fp");
    EXPECT_FALSE(cache.valid());
    EXPECT_EQ(cache.state().rfind("damaged", 0), 0u) << cache.state();
  }
}

// Offsets of the fields of the first index entry, for the mutations below.
struct FirstEntry {
  size_t name_len, desc_len, offset, bytes;
};
FirstEntry first_entry(const std::vector<uint8_t>& file) {
  uint64_t fingerprint_bytes = 0;
  std::memcpy(&fingerprint_bytes, file.data() + 16, 8);
  FirstEntry e;
  e.name_len = 64 + fingerprint_bytes;
  uint32_t name_bytes = 0;
  std::memcpy(&name_bytes, file.data() + e.name_len, 4);
  e.desc_len = e.name_len + 4 + name_bytes;
  e.offset = e.desc_len + 4 + sizeof(dnnl_memory_desc_t);
  e.bytes = e.offset + 8;
  return e;
}

TEST(PackedWeightCache, DamagedIndexesAreRefusedWithAReason) {
  const Layers l;
  const std::string dir = testing::temp_dir(), path = dir + "/net.sdcw";
  write_cache(path, "fp", l);
  const std::vector<uint8_t> good = read_file(path);
  ASSERT_NO_THROW(parse_packed_weight_index(good.data(), good.size()));
  const FirstEntry e = first_entry(good);
  auto expect_refused = [&](const char* what, const std::function<void(std::vector<uint8_t>&)>& mutate,
                            const std::string& reason) {
    SCOPED_TRACE(what);
    std::vector<uint8_t> bad = good;
    mutate(bad);
    try {
      parse_packed_weight_index(bad.data(), bad.size());
      ADD_FAILURE() << "accepted";
    } catch (const ModelError& err) {
      EXPECT_NE(std::string(err.what()).find(reason), std::string::npos) << err.what();
    }
  };
  auto put64 = [](std::vector<uint8_t>& b, size_t at, uint64_t v) { std::memcpy(b.data() + at, &v, 8); };
  auto put32 = [](std::vector<uint8_t>& b, size_t at, uint32_t v) { std::memcpy(b.data() + at, &v, 4); };
  expect_refused(
      "magic", [](auto& b) { b[0] = 'X'; }, "not an sdcpu weight cache");
  expect_refused(
      "version", [&](auto& b) { put32(b, 8, 2); }, "format version");
  expect_refused(
      "entry count", [&](auto& b) { put32(b, 12, 1u << 30); }, "too many entries");
  expect_refused(
      "file size", [&](auto& b) { put64(b, 40, b.size() + 1); }, "header says");
  expect_refused(
      "data offset", [&](auto& b) { put64(b, 32, 4096); }, "header sizes");
  expect_refused(
      "name length", [&](auto& b) { put32(b, e.name_len, 1u << 20); }, "bad name");
  expect_refused(
      "descriptor size", [&](auto& b) { put32(b, e.desc_len, 12); }, "descriptor of 12 bytes");
  expect_refused(
      "offset outside", [&](auto& b) { put64(b, e.offset, uint64_t{1} << 40); }, "outside the file");
  expect_refused(
      "size outside", [&](auto& b) { put64(b, e.bytes, ~uint64_t{0}); }, "outside the file");
  expect_refused(
      "misaligned", [&](auto& b) { put64(b, e.offset, 8); }, "outside the file");
  // The second entry moved onto the first.
  expect_refused(
      "overlap",
      [&](auto& b) {
        uint32_t second_name = 0;
        const size_t second = e.bytes + 8;
        std::memcpy(&second_name, b.data() + second, 4);
        put64(b, second + 4 + second_name + 4 + sizeof(dnnl_memory_desc_t), 0);
      },
      "overlap");
  // The second entry renamed to the first's name (write_cache's names have the same length).
  expect_refused(
      "duplicate",
      [&](auto& b) {
        const size_t second = e.bytes + 8;
        std::memcpy(b.data() + second + 4, b.data() + e.name_len + 4, std::strlen("conv.weight"));
      },
      "appears twice");
}

TEST(PackedWeightCache, SaveIntoAMissingDirectoryThrowsIoErrorAndLeavesNothing) {
  const Layers l;
  const std::string dir = testing::temp_dir();
  auto cache = std::make_shared<PackedWeightCache>(dir + "/no/such/dir/net.sdcw", "fp");
  int reads = 0;
  PreparedLinear lin(counted(l.lin_w, cache, "lin.weight", reads), l.lin_b);
  EXPECT_THROW(cache->save(), IoError);
}

// This process's resident bytes of the mapping of `path` (/proc/self/smaps).
size_t mapped_rss_kb(const std::string& path) {
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool in_mapping = false;
  size_t total = 0;
  while (std::getline(smaps, line)) {
    const bool header =
        !line.empty() && std::isxdigit(static_cast<unsigned char>(line[0])) && line.find('-') < line.find(' ');
    if (header) {
      in_mapping = line.size() >= path.size() && line.compare(line.size() - path.size(), path.size(), path) == 0;
    } else if (in_mapping && line.rfind("Rss:", 0) == 0) {
      total += std::stoul(line.substr(4));
    }
  }
  return total;
}

TEST(PackedWeightCache, UseMapsThePagesAndTheLastUseDropsThem) {
  const Layers l;
  const std::string path = testing::temp_dir() + "/net.sdcw";
  write_cache(path, "fp", l);
  auto cache = std::make_shared<PackedWeightCache>(path, "fp");
  int reads = 0;
  PreparedConv2d conv(counted(l.conv_w, cache, "conv.weight", reads), l.conv_b, 1, Conv2dPadding::same(1));
  cache->release_pages();
  EXPECT_EQ(mapped_rss_kb(path), 0u);
  Tensor y;
  {
    const PackedWeightCache::Use outer(cache.get());
    EXPECT_GT(mapped_rss_kb(path), 0u);
    { const PackedWeightCache::Use inner(cache.get()); }
    EXPECT_GT(mapped_rss_kb(path), 0u) << "an inner Use must not drop the pages of an outer one";
    y = conv2d(l.x, conv);
  }
  EXPECT_EQ(mapped_rss_kb(path), 0u);
  // Dropped pages come back from the file when touched without a Use.
  EXPECT_EQ(testing::compare(conv2d(l.x, conv), y).max_abs, 0.0);
}

TEST(PackedWeightCache, CopyInModeComputesFromACopyAndReturnsToTheMapping) {
  const Layers l;
  const std::string path = testing::temp_dir() + "/net.sdcw";
  write_cache(path, "fp", l);
  auto cache = std::make_shared<PackedWeightCache>(path, "fp");
  cache->set_copy_in(true);
  int reads = 0;
  PreparedConv2d conv(counted(l.conv_w, cache, "conv.weight", reads), l.conv_b, 1, Conv2dPadding::same(1));
  PreparedLinear lin(counted(l.lin_w, cache, "lin.weights", reads), l.lin_b);
  cache->release_pages();
  const Tensor y_conv = conv2d(l.x, PreparedConv2d(l.conv_w, l.conv_b, 1, 1));
  const Tensor y_lin = linear(l.rows, PreparedLinear(l.lin_w, l.lin_b));
  {
    const PackedWeightCache::Use use(cache.get());
    EXPECT_EQ(testing::compare(conv2d(l.x, conv), y_conv).max_abs, 0.0);
    EXPECT_EQ(testing::compare(linear(l.rows, lin), y_lin).max_abs, 0.0);
    EXPECT_EQ(mapped_rss_kb(path), 0u) << "in copy-in mode the layers must read the copy, not the mapping";
  }
  // After the last Use the layers read the mapping again.
  EXPECT_EQ(testing::compare(conv2d(l.x, conv), y_conv).max_abs, 0.0);
  EXPECT_GT(mapped_rss_kb(path), 0u);
  // A layer destroyed before the cache detaches itself: the next Use must not touch it.
  { PreparedLinear gone(counted(l.lin_w, cache, "lin.weights", reads), l.lin_b); }
  const PackedWeightCache::Use again(cache.get());
  EXPECT_EQ(testing::compare(linear(l.rows, lin), y_lin).max_abs, 0.0);
}

// Two networks used together (SDXL's two text encoders) in copy-in mode with one arena: both copies go to the
// arena's front, one after the other, and neither to the heap (issue 12: a heap copy of the second encoder's
// 1.26 GB outlived the stage and raised SDXL's peak).
TEST(PackedWeightCache, CopiesUsedTogetherStackInTheArenasFront) {
  const Layers l;
  const std::string path_a = testing::temp_dir() + "/a.sdcw", path_b = testing::temp_dir() + "/b.sdcw";
  write_cache(path_a, "fp", l);
  write_cache(path_b, "fp", l);
  ActivationArena arena;
  auto a = std::make_shared<PackedWeightCache>(path_a, "fp"), b = std::make_shared<PackedWeightCache>(path_b, "fp");
  a->set_copy_in(true, &arena);
  b->set_copy_in(true, &arena);
  int reads = 0;
  PreparedConv2d conv_a(counted(l.conv_w, a, "conv.weight", reads), l.conv_b, 1, Conv2dPadding::same(1));
  PreparedConv2d conv_b(counted(l.conv_w, b, "conv.weight", reads), l.conv_b, 1, Conv2dPadding::same(1));
  a->release_pages();
  b->release_pages();
  const Tensor y = conv2d(l.x, PreparedConv2d(l.conv_w, l.conv_b, 1, 1));
  {
    const PackedWeightCache::Use use_a(a.get()), use_b(b.get());
    // Each file's data area is well under 2 MiB: one 2 MiB hold each.
    EXPECT_EQ(arena.stats().touched_bytes, size_t{4} << 20);
    EXPECT_EQ(testing::compare(conv2d(l.x, conv_a), y).max_abs, 0.0);
    EXPECT_EQ(testing::compare(conv2d(l.x, conv_b), y).max_abs, 0.0);
    EXPECT_EQ(mapped_rss_kb(path_a) + mapped_rss_kb(path_b), 0u) << "both must compute from their copies";
  }
  // Both released: the next network's copy starts at the front again.
  {
    const PackedWeightCache::Use use_b(b.get());
    EXPECT_EQ(testing::compare(conv2d(l.x, conv_b), y).max_abs, 0.0);
  }
  EXPECT_EQ(arena.stats().touched_bytes, size_t{4} << 20);
}

// Streaming (a first start): each weight goes to the file as it is packed and leaves the layer, which then cannot
// run; the finished file gives layers the same results as plain packing.
TEST(PackedWeightCache, StreamingWritesEachWeightAndKeepsNoCopy) {
  const Layers l;
  const std::string dir = testing::temp_dir(), path = dir + "/net.sdcw";
  {
    auto cache = std::make_shared<PackedWeightCache>(path, "fp");
    cache->stream_misses({"conv.weight", "lin.weights"});
    int reads = 0;
    PreparedConv2d conv(counted(l.conv_w, cache, "conv.weight", reads), l.conv_b, 1, Conv2dPadding::same(1));
    PreparedLinear lin(counted(l.lin_w, cache, "lin.weights", reads), l.lin_b);
    EXPECT_EQ(reads, 2);
    EXPECT_TRUE(cache->dropped_weights());
    EXPECT_THROW(conv2d(l.x, conv), std::logic_error) << "a streamed layer holds no weight";
    EXPECT_FALSE(std::filesystem::exists(path)) << "nothing at the path before save()";
    cache->save();
  }
  auto cache = std::make_shared<PackedWeightCache>(path, "fp");
  ASSERT_EQ(cache->state(), "valid");
  EXPECT_EQ(cache->entries(), 2u);
  int reads = 0;
  PreparedConv2d conv(counted(l.conv_w, cache, "conv.weight", reads), l.conv_b, 1, Conv2dPadding::same(1));
  PreparedLinear lin(counted(l.lin_w, cache, "lin.weights", reads), l.lin_b);
  EXPECT_EQ(reads, 0);
  EXPECT_TRUE(cache->complete());
  EXPECT_EQ(testing::compare(conv2d(l.x, conv), conv2d(l.x, PreparedConv2d(l.conv_w, l.conv_b, 1, 1))).max_abs, 0.0);
  EXPECT_EQ(testing::compare(linear(l.rows, lin), linear(l.rows, PreparedLinear(l.lin_w, l.lin_b))).max_abs, 0.0);
  // The same bytes as the file written all at once.
  const std::string whole = dir + "/whole.sdcw";
  write_cache(whole, "fp", l);
  EXPECT_EQ(read_file(whole), read_file(path));
}

// A streamed file that was never finished (the process died, or the disk refused) is never taken for a cache:
// it has another name, no header until save(), and a writer that gives up removes it.
TEST(PackedWeightCache, AnUnfinishedStreamedFileIsNeverValid) {
  const Layers l;
  const std::string dir = testing::temp_dir(), path = dir + "/net.sdcw";
  const std::string temp = path + ".tmp." + std::to_string(::getpid());
  {
    auto cache = std::make_shared<PackedWeightCache>(path, "fp");
    cache->stream_misses({"conv.weight", "lin.weights"});
    int reads = 0;
    PreparedConv2d conv(counted(l.conv_w, cache, "conv.weight", reads), l.conv_b, 1, Conv2dPadding::same(1));
    ASSERT_TRUE(std::filesystem::exists(temp));
    // What a crash at this point leaves, put where a cache would be read: refused.
    std::filesystem::copy_file(temp, path);
    PackedWeightCache partial(path, "fp");
    EXPECT_FALSE(partial.valid());
    EXPECT_EQ(partial.state().rfind("damaged", 0), 0u) << partial.state();
    std::filesystem::remove(path);
  }  // never saved
  EXPECT_FALSE(std::filesystem::exists(temp)) << "an abandoned stream removes its temporary file";
  EXPECT_FALSE(std::filesystem::exists(path));

  // A temporary file left by a process that died is removed by the next writer of the same path.
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ASSERT_GT(child, 0);
  ::waitpid(child, nullptr, 0);
  const std::string orphan = path + ".tmp." + std::to_string(child);
  write_file(orphan, {1, 2, 3});
  const std::string other = dir + "/other.sdcw.tmp." + std::to_string(child);  // another file's: left alone
  write_file(other, {1, 2, 3});
  write_cache(path, "fp", l);
  EXPECT_FALSE(std::filesystem::exists(orphan));
  EXPECT_TRUE(std::filesystem::exists(other));
  EXPECT_EQ(PackedWeightCache(path, "fp").state(), "valid");
}

// Streaming into a place that cannot be written: the layers keep their weights (they run), save() says why.
TEST(PackedWeightCache, StreamingThatCannotStartKeepsTheWeights) {
  const Layers l;
  auto cache = std::make_shared<PackedWeightCache>(testing::temp_dir() + "/no/such/dir/net.sdcw", "fp");
  cache->stream_misses({"lin.weight"});
  int reads = 0;
  PreparedLinear lin(counted(l.lin_w, cache, "lin.weight", reads), l.lin_b);
  EXPECT_FALSE(cache->dropped_weights());
  EXPECT_EQ(testing::compare(linear(l.rows, lin), linear(l.rows, PreparedLinear(l.lin_w, l.lin_b))).max_abs, 0.0);
  EXPECT_THROW(cache->save(), IoError);
}

// Rewriting a file that has some weights: those found are copied over from the old file, the others streamed.
TEST(PackedWeightCache, StreamingARewriteKeepsTheWeightsFoundInTheOldFile) {
  const Layers l;
  const std::string dir = testing::temp_dir(), path = dir + "/net.sdcw";
  {
    auto cache = std::make_shared<PackedWeightCache>(path, "fp");
    int reads = 0;
    PreparedConv2d conv(counted(l.conv_w, cache, "conv.weight", reads), l.conv_b, 1, Conv2dPadding::same(1));
    cache->save();
  }
  {
    auto cache = std::make_shared<PackedWeightCache>(path, "fp");
    ASSERT_EQ(cache->state(), "valid");
    cache->stream_misses({"conv.weight", "lin.weights"});
    int reads = 0;
    PreparedConv2d conv(counted(l.conv_w, cache, "conv.weight", reads), l.conv_b, 1, Conv2dPadding::same(1));
    PreparedLinear lin(counted(l.lin_w, cache, "lin.weights", reads), l.lin_b);
    EXPECT_EQ(reads, 1);
    EXPECT_FALSE(cache->complete());
    cache->save();
  }
  const std::string whole = dir + "/whole.sdcw";
  write_cache(whole, "fp", l);
  EXPECT_EQ(read_file(whole), read_file(path));
}

}  // namespace
}  // namespace sdcpu
