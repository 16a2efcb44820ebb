#include "text/byte_bpe.h"

#include <algorithm>
#include <queue>
#include <utility>

#include "core/error.h"
#include "text/unicode_text.h"

namespace sdcpu::text {
namespace {

// CLIPTokenizer.__init__ keeps merges[1 : 49152 - 256 - 2 + 1]: CLIP's 49152-entry vocabulary is 256 bytes,
// 256 bytes + "</w>", the merges and 2 special tokens, so 48894 merges at most.
constexpr size_t kMaxMerges = 49152 - 256 - 2;

// str.split() of one line of merges.txt: pieces between runs of Python whitespace, back in UTF-8.
std::vector<std::string> split_python_whitespace(std::u32string_view line) {
  std::vector<std::string> parts;
  std::string current;
  for (char32_t c : line) {
    if (is_python_space(c)) {
      if (!current.empty()) parts.push_back(std::move(current));
      current.clear();
    } else {
      append_utf8(c, current);
    }
  }
  if (!current.empty()) parts.push_back(std::move(current));
  return parts;
}

}  // namespace

char32_t byte_to_unicode(uint8_t b) {
  // bytes_to_unicode(): "!".."~", "¡".."¬" and "®".."ÿ" stand for themselves; the remaining bytes, in
  // increasing order, get U+0100, U+0101, ...
  auto printable = [](unsigned v) { return (v >= 0x21 && v <= 0x7E) || (v >= 0xA1 && v <= 0xAC) || v >= 0xAE; };
  if (printable(b)) return b;
  char32_t next = 0x100;
  for (unsigned v = 0; v < b; ++v)
    if (!printable(v)) ++next;
  return next;
}

int ByteBpe::intern(const std::string& s) {
  auto [it, inserted] = symbol_ids_.try_emplace(s, static_cast<int>(symbols_.size()));
  if (inserted) symbols_.push_back(s);
  return it->second;
}

ByteBpe::ByteBpe(std::string_view merges_txt) {
  std::u32string text;
  try {
    text = decode_utf8(merges_txt);
  } catch (const InvalidArgument& e) {
    throw ModelError(std::string("merges.txt is not UTF-8 (") + e.what() + ")");
  }
  for (int b = 0; b < 256; ++b) {
    std::string s;
    append_utf8(byte_to_unicode(static_cast<uint8_t>(b)), s);
    byte_symbol_[b] = intern(s);
    final_byte_symbol_[b] = intern(s + "</w>");
  }
  // read().strip().split("\n")[1 : kMaxMerges + 1]
  std::u32string_view rest(text);
  while (!rest.empty() && is_python_space(rest.front())) rest.remove_prefix(1);
  while (!rest.empty() && is_python_space(rest.back())) rest.remove_suffix(1);
  size_t eol = rest.find(U'\n');  // end of the "#version" header line, skipped whatever it says
  for (size_t rank = 0; eol != std::u32string_view::npos && rank < kMaxMerges; ++rank) {
    rest.remove_prefix(eol + 1);
    eol = rest.find(U'\n');
    const std::vector<std::string> parts = split_python_whitespace(rest.substr(0, eol));
    if (parts.size() != 2) continue;
    const int left = intern(parts[0]);
    const int right = intern(parts[1]);
    const int result = intern(parts[0] + parts[1]);
    merges_[key(left, right)] = Merge{static_cast<int>(rank), result};
  }
}

void ByteBpe::apply(std::string_view word, std::vector<int>& out) const {
  const int n = static_cast<int>(word.size());
  if (n == 0) return;
  std::vector<int> sym(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    const auto b = static_cast<uint8_t>(word[static_cast<size_t>(i)]);
    sym[static_cast<size_t>(i)] = i + 1 < n ? byte_symbol_[b] : final_byte_symbol_[b];
  }
  if (n == 1) {
    out.push_back(sym[0]);
    return;
  }
  // The word as a linked list over the original positions; a merge keeps the left slot. Slot order is word
  // order, so "left to right" is "by slot index".
  std::vector<int> next(static_cast<size_t>(n)), prev(static_cast<size_t>(n));
  std::vector<char> alive(static_cast<size_t>(n), 1);
  for (int i = 0; i < n; ++i) {
    next[static_cast<size_t>(i)] = i + 1 < n ? i + 1 : -1;
    prev[static_cast<size_t>(i)] = i - 1;
  }
  using Entry = std::pair<int, int>;  // (rank, left slot)
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> heap;
  auto push_pair = [&](int left) {
    if (left < 0) return;
    const int right = next[static_cast<size_t>(left)];
    if (right < 0) return;
    if (const Merge* m = find(sym[static_cast<size_t>(left)], sym[static_cast<size_t>(right)]))
      heap.emplace(m->rank, left);
  };
  for (int i = 0; i + 1 < n; ++i) push_pair(i);

  // transformers repeats: take the ranked pair with the lowest rank among the word's current pairs, and merge
  // every occurrence of it in one left-to-right scan that skips overlaps. Here one round pops every heap entry
  // of the lowest rank and merges the still-valid ones in slot order. Pairs created during a round never have
  // that round's rank (a merged symbol is longer than either of its parts, so it cannot re-form the pair), and
  // any with a lower rank wait for the next round, exactly as transformers only picks them up on its next
  // min(). Stale entries (a slot merged away or its symbol changed) are recognized by re-checking the pair.
  std::vector<int> round;
  while (!heap.empty()) {
    const int rank = heap.top().first;
    round.clear();
    while (!heap.empty() && heap.top().first == rank) {
      round.push_back(heap.top().second);
      heap.pop();
    }
    std::sort(round.begin(), round.end());
    round.erase(std::unique(round.begin(), round.end()), round.end());
    for (int left : round) {
      if (!alive[static_cast<size_t>(left)]) continue;
      const int right = next[static_cast<size_t>(left)];
      if (right < 0) continue;
      const Merge* m = find(sym[static_cast<size_t>(left)], sym[static_cast<size_t>(right)]);
      if (m == nullptr || m->rank != rank) continue;
      sym[static_cast<size_t>(left)] = m->result;
      alive[static_cast<size_t>(right)] = 0;
      const int after = next[static_cast<size_t>(right)];
      next[static_cast<size_t>(left)] = after;
      if (after >= 0) prev[static_cast<size_t>(after)] = left;
      push_pair(prev[static_cast<size_t>(left)]);
      push_pair(left);
    }
  }
  for (int i = 0; i >= 0; i = next[static_cast<size_t>(i)]) out.push_back(sym[static_cast<size_t>(i)]);
}

}  // namespace sdcpu::text
