#include "core/activation_arena.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <exception>
#include <limits>
#include <map>
#include <mutex>
#include <new>
#include <vector>

#include "core/memory.h"
#include "core/tensor.h"

// Buffers freed in the arena are poisoned under AddressSanitizer, so that a use after free or an overflow into a
// neighbour is caught there as it is on the heap.
#if defined(__SANITIZE_ADDRESS__)
#define SDCPU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SDCPU_ASAN 1
#endif
#endif
#ifdef SDCPU_ASAN
#include <sanitizer/asan_interface.h>
#define SDCPU_POISON(p, n) __asan_poison_memory_region((p), (n))
#define SDCPU_UNPOISON(p, n) __asan_unpoison_memory_region((p), (n))
#else
#define SDCPU_POISON(p, n) ((void)(p), (void)(n))
#define SDCPU_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

namespace sdcpu {
namespace {

constexpr size_t kAlign = 64;
constexpr size_t kHugePage = size_t{2} << 20;
constexpr size_t kCommitStep = size_t{64} << 20;
constexpr uint64_t kAlive = std::numeric_limits<uint64_t>::max();  // not freed (yet)
// No offset in the range: in a plan, a buffer that outlived its recorded pass (later passes take it from the heap);
// from first_fit, no gap big enough.
constexpr size_t kNoOffset = std::numeric_limits<size_t>::max();
// Plans kept at once; a service that sees many image sizes drops the least recently used.
constexpr size_t kMaxPlans = 16;

size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

thread_local ActivationArena::Pass* current_pass = nullptr;

struct Plan {
  std::vector<size_t> sizes, offsets;  // per allocation of the pass, in order; offsets from the end of the front
  size_t bytes = 0;
  uint64_t last_used = 0;
};

struct Block {
  size_t begin, end;  // offsets in the range
};

}  // namespace

struct ActivationArena::Pass::Recording {
  std::vector<size_t> sizes;
  std::vector<uint64_t> born, died;
  uint64_t clock = 0;
  bool open = true;
};

struct ActivationArena::State {
  mutable std::mutex mutex;
  void* mapping = nullptr;
  size_t mapping_bytes = 0;
  char* base = nullptr;  // 2 MiB aligned, inside the mapping
  size_t reserved = 0;
  size_t committed = 0;      // the part made readable and writable so far, from the base
  size_t front = 0;          // the end of the last hold_front, each hold rounded to 2 MiB; passes place after it
  std::vector<Block> holds;  // hold_front's holds, in the order taken (so by offset)
  size_t touched = 0;
  std::vector<Block> live;  // sorted by begin
  std::map<std::string, std::shared_ptr<Plan>> plans;
  uint64_t uses = 0;
  Stats stats;

  ~State() {
    if (mapping) ::munmap(mapping, mapping_bytes);
  }

  bool overlaps_live(size_t begin, size_t end) const {
    auto it = std::lower_bound(live.begin(), live.end(), end, [](const Block& b, size_t e) { return b.begin < e; });
    return it != live.begin() && std::prev(it)->end > begin;
  }

  // The lowest offset at or after the front where `bytes` fit between live buffers, or kNoOffset when none.
  size_t first_fit(size_t bytes) const {
    size_t at = front;
    for (const Block& b : live) {
      if (b.end <= at) continue;
      if (b.begin >= at + bytes) break;
      at = b.end;
    }
    return at + bytes <= reserved ? at : kNoOffset;
  }

  // Makes [0, end) of the range usable, in steps of kCommitStep. Until then it is reserved without access
  // (PROT_NONE), which even strict overcommit (vm.overcommit_memory=2) does not charge; writable private memory it
  // does, so the charge grows with what the arena uses, not with the reservation. False when refused.
  bool commit(size_t end) {
    if (end <= committed) return true;
    const size_t to = std::min(reserved, round_up(end, kCommitStep));
    if (::mprotect(base + committed, to - committed, PROT_READ | PROT_WRITE) != 0) return false;
    committed = to;
    return true;
  }

  void insert(size_t begin, size_t end) {
    auto it = std::lower_bound(live.begin(), live.end(), begin, [](const Block& b, size_t v) { return b.begin < v; });
    live.insert(it, Block{begin, end});
    touched = std::max(touched, end);
  }

  void erase(size_t begin) {
    auto it = std::lower_bound(live.begin(), live.end(), begin, [](const Block& b, size_t v) { return b.begin < v; });
    if (it != live.end() && it->begin == begin) live.erase(it);
  }
};

size_t plan_activation_offsets(const size_t* sizes, const uint64_t* born, const uint64_t* died, size_t count,
                               size_t* offsets) {
  std::vector<size_t> order(count);
  for (size_t i = 0; i < count; ++i) order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return sizes[a] != sizes[b] ? sizes[a] > sizes[b] : born[a] < born[b]; });
  std::vector<size_t> placed;     // indices, sorted by offset
  std::vector<size_t> conflicts;  // placed buffers alive together with the one being placed, by offset
  size_t total = 0;
  for (size_t i : order) {
    conflicts.clear();
    for (size_t j : placed)
      if (born[j] < died[i] && born[i] < died[j]) conflicts.push_back(j);
    size_t at = 0;
    for (size_t j : conflicts) {
      if (at + sizes[i] <= offsets[j]) break;
      at = std::max(at, offsets[j] + sizes[j]);
    }
    offsets[i] = at;
    total = std::max(total, at + sizes[i]);
    placed.insert(
        std::upper_bound(placed.begin(), placed.end(), at, [&](size_t v, size_t j) { return v < offsets[j]; }), i);
  }
  return total;
}

ActivationArena::ActivationArena() : state_(std::make_shared<State>()) {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page <= 0) return;
  const size_t reserve = round_up(static_cast<size_t>(pages) * static_cast<size_t>(page), kHugePage);
  const size_t bytes = reserve + kHugePage;  // room to align the base to a huge page
  void* m = ::mmap(nullptr, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) return;  // every buffer then comes from the heap
  State& s = *state_;
  s.mapping = m;
  s.mapping_bytes = bytes;
  s.base = reinterpret_cast<char*>(round_up(reinterpret_cast<uintptr_t>(m), kHugePage));
  s.reserved = reserve;
#ifdef MADV_HUGEPAGE
  ::madvise(s.base, reserve, MADV_HUGEPAGE);  // advisory, as in core/memory.cpp
#endif
}

ActivationArena::~ActivationArena() = default;

bool ActivationArena::contains(const void* p) const {
  const State& s = *state_;
  const char* c = static_cast<const char*>(p);
  return s.base && c >= s.base && c < s.base + s.reserved;
}

void* ActivationArena::hold_front(size_t bytes) {
  State& s = *state_;
  std::lock_guard<std::mutex> lock(s.mutex);
  if (!s.base) return nullptr;
  const size_t begin = s.front, end = begin + round_up(std::max<size_t>(bytes, 1), kHugePage);
  if (end > s.reserved || s.overlaps_live(begin, end) || !s.commit(end)) return nullptr;
  s.holds.push_back(Block{begin, end});
  s.front = end;
  s.touched = std::max(s.touched, end);
  SDCPU_UNPOISON(s.base + begin, bytes);
  return s.base + begin;
}

void ActivationArena::release_front(const void* held) {
  State& s = *state_;
  std::lock_guard<std::mutex> lock(s.mutex);
  const size_t begin = static_cast<size_t>(static_cast<const char*>(held) - s.base);
  auto it = std::find_if(s.holds.begin(), s.holds.end(), [begin](const Block& b) { return b.begin == begin; });
  if (it == s.holds.end()) return;
  SDCPU_POISON(s.base + it->begin, it->end - it->begin);
  s.holds.erase(it);
  s.front = s.holds.empty() ? 0 : s.holds.back().end;
}

ActivationArena::Stats ActivationArena::stats() const {
  const State& s = *state_;
  std::lock_guard<std::mutex> lock(s.mutex);
  Stats st = s.stats;
  st.reserved_bytes = s.reserved;
  st.touched_bytes = s.touched;
  for (const auto& [key, plan] : s.plans) st.plans.push_back({key, plan->bytes, plan->sizes.size()});
  return st;
}

ActivationArena::Pass::Pass(ActivationArena* arena, std::string key) : arena_(arena), key_(std::move(key)) {
  if (!arena_) return;
  outer_ = current_pass;
  current_pass = this;
  State& s = *arena_->state_;
  std::lock_guard<std::mutex> lock(s.mutex);
  auto it = s.plans.find(key_);
  if (it != s.plans.end())
    it->second->last_used = ++s.uses;
  else
    recording_ = std::make_shared<Recording>();
  uncaught_ = std::uncaught_exceptions();
}

ActivationArena::Pass::~Pass() {
  if (!arena_) return;
  current_pass = outer_;
  arena_->end_pass(*this);
}

Tensor ActivationArena::Pass::output(const Tensor& t) {
  if (!arena_ || !arena_->contains(t.data())) return t;
  Pass* const saved = current_pass;
  current_pass = nullptr;  // the copy comes from the heap
  Tensor copy = t.clone();
  current_pass = saved;
  return copy;
}

void ActivationArena::end_pass(Pass& pass) {
  State& s = *state_;
  std::lock_guard<std::mutex> lock(s.mutex);
  auto it = s.plans.find(pass.key_);
  if (!pass.recording_) {
    // A pass that allocated other sizes than its plan: record afresh next time.
    if (pass.diverged_ && it != s.plans.end()) s.plans.erase(it);
    return;
  }
  Pass::Recording& r = *pass.recording_;
  r.open = false;
  // A pass left by an exception did not make all its allocations: its record is no plan.
  if (it != s.plans.end() || std::uncaught_exceptions() > pass.uncaught_) return;
  auto plan = std::make_shared<Plan>();
  plan->sizes = r.sizes;
  plan->offsets.assign(r.sizes.size(), kNoOffset);
  // Buffers still alive at the end outlived the pass (results that did not go through output()): later passes
  // take them from the heap, so that they do not pin the range.
  std::vector<size_t> sizes, index, offsets;
  std::vector<uint64_t> born, died;
  for (size_t i = 0; i < r.sizes.size(); ++i) {
    if (r.died[i] == kAlive) continue;
    index.push_back(i);
    sizes.push_back(r.sizes[i]);
    born.push_back(r.born[i]);
    died.push_back(r.died[i]);
  }
  offsets.resize(sizes.size());
  plan->bytes = plan_activation_offsets(sizes.data(), born.data(), died.data(), sizes.size(), offsets.data());
  for (size_t i = 0; i < index.size(); ++i) plan->offsets[index[i]] = offsets[i];
  plan->last_used = ++s.uses;
  if (s.plans.size() >= kMaxPlans) {
    auto oldest = std::min_element(s.plans.begin(), s.plans.end(), [](const auto& a, const auto& b) {
      return a.second->last_used < b.second->last_used;
    });
    s.plans.erase(oldest);
  }
  s.plans.emplace(pass.key_, std::move(plan));
}

std::shared_ptr<void> ActivationArena::allocate(Pass& pass, size_t bytes) {
  bytes = round_up(bytes, kAlign);
  const std::shared_ptr<State>& state = state_;
  State& s = *state;
  std::unique_lock<std::mutex> lock(s.mutex);
  const size_t k = pass.next_++;
  size_t at = kNoOffset;
  uint64_t* counter = &s.stats.heap;  // where this buffer is counted
  if (pass.recording_) {
    Pass::Recording& r = *pass.recording_;
    r.sizes.push_back(bytes);
    r.born.push_back(r.clock++);
    r.died.push_back(kAlive);
    at = s.first_fit(bytes);
    counter = &s.stats.recorded;
  } else {
    auto it = s.plans.find(pass.key_);
    const Plan* plan = it == s.plans.end() ? nullptr : it->second.get();
    if (!pass.diverged_ && (!plan || k >= plan->sizes.size() || plan->sizes[k] != bytes)) pass.diverged_ = true;
    const bool outlived = !pass.diverged_ && plan->offsets[k] == kNoOffset;  // planned for the heap
    if (!pass.diverged_ && !outlived) {
      const size_t planned = s.front + plan->offsets[k];
      if (planned + bytes <= s.reserved && !s.overlaps_live(planned, planned + bytes)) at = planned;
      counter = &s.stats.planned;
    }
    if (at == kNoOffset && !outlived) {
      at = s.first_fit(bytes);
      counter = &s.stats.unplanned;
    }
  }
  if (at != kNoOffset && !s.commit(at + bytes)) at = kNoOffset;
  ++*(at == kNoOffset ? &s.stats.heap : counter);
  std::shared_ptr<Pass::Recording> recording = pass.recording_;
  if (at == kNoOffset) {
    lock.unlock();
    void* p = allocate_buffer(bytes);
    return std::shared_ptr<void>(p, [state, recording, k](void* q) {
      free_buffer(q);
      if (!recording) return;
      std::lock_guard<std::mutex> l(state->mutex);
      if (recording->open) recording->died[k] = recording->clock++;
    });
  }
  s.insert(at, at + bytes);
  char* p = s.base + at;
  SDCPU_UNPOISON(p, bytes);
  lock.unlock();  // should making the shared_ptr throw, it runs the deleter, which locks
  return std::shared_ptr<void>(p, [state, recording, k, at, bytes](void* q) {
    std::lock_guard<std::mutex> l(state->mutex);
    SDCPU_POISON(q, bytes);
    state->erase(at);
    if (recording && recording->open) recording->died[k] = recording->clock++;
  });
}

std::shared_ptr<void> allocate_activation(size_t bytes) {
  if (ActivationArena::Pass* pass = current_pass; pass && pass->arena_->state_->base)
    return pass->arena_->allocate(*pass, bytes);
  void* p = allocate_buffer(bytes);
  return std::shared_ptr<void>(p, [](void* q) { free_buffer(q); });
}

bool in_activation_pass() { return current_pass != nullptr; }

}  // namespace sdcpu
