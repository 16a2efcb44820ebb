// Byte-level BPE as CLIPTokenizer.bpe() does it: a word's UTF-8 bytes become the characters of GPT-2's
// bytes_to_unicode() table, the last one gets "</w>", and the pair with the lowest merge rank is merged
// everywhere (left to right, non-overlapping) until no ranked pair is left.
//
// Symbols are interned strings, so a merge is an integer table look-up; the merge loop uses a heap instead of
// rescanning the word, which keeps adversarially long words O(n log n) while producing exactly the symbols of
// transformers' quadratic loop (see apply()).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace sdcpu::text {

// GPT-2's bytes_to_unicode(): printable Latin-1 bytes map to themselves, the other 68 to U+0100.. in order.
char32_t byte_to_unicode(uint8_t b);

class ByteBpe {
 public:
  // `merges_txt` is the whole merges.txt. Mirrors CLIPTokenizer.__init__: the text is stripped, split on
  // "\n", the first line (the "#version" header) dropped, at most 49152 - 256 - 2 lines kept, and each line
  // split on whitespace; line k (0-based, after the header) has rank k, and a pair listed twice keeps its
  // later rank (a Python dict built from the list). Lines without exactly two parts rank nothing.
  // Throws ModelError if the text is not UTF-8.
  explicit ByteBpe(std::string_view merges_txt);

  // CLIPTokenizer.bpe(token) for the pre-token whose UTF-8 bytes are `word` (non-empty): appends its final
  // symbols' ids to `out`.
  void apply(std::string_view word, std::vector<int>& out) const;

  int num_symbols() const { return static_cast<int>(symbols_.size()); }
  const std::string& symbol(int id) const { return symbols_[static_cast<size_t>(id)]; }
  size_t num_merges() const { return merges_.size(); }

 private:
  struct Merge {
    int rank;
    int result;
  };
  int intern(const std::string& s);
  const Merge* find(int left, int right) const {
    auto it = merges_.find(key(left, right));
    return it == merges_.end() ? nullptr : &it->second;
  }
  static uint64_t key(int left, int right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
  }

  std::vector<std::string> symbols_;  // UTF-8 text of each symbol
  std::unordered_map<std::string, int> symbol_ids_;
  std::unordered_map<uint64_t, Merge> merges_;  // (left, right) -> rank and merged symbol
  int byte_symbol_[256];                        // the byte's character
  int final_byte_symbol_[256];                  // the byte's character + "</w>"
};

}  // namespace sdcpu::text
