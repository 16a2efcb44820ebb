#include "text/clip_tokenizer.h"

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string_view>
#include <unordered_map>

#include "core/error.h"
#include "text/byte_bpe.h"
#include "text/unicode_text.h"

#ifndef SDCPU_DATA_DIR
#define SDCPU_DATA_DIR "data"
#endif

namespace sdcpu {
namespace {

using text::PatternClass;
using json = nlohmann::json;

// Bounds on what one request may make us allocate (DESIGN.md, principle 7). CLIP reads 77 tokens; a prompt of
// 16 MiB is already far past anything useful.
constexpr size_t kMaxPromptBytes = size_t{16} << 20;
constexpr int kMaxLength = 1 << 16;
// The word cache keeps short words only and starts over when full, so it stays a few MiB at most.
constexpr size_t kMaxCachedWordBytes = 64;
constexpr size_t kMaxCacheEntries = size_t{1} << 16;

std::optional<std::string> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return std::nullopt;
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) throw ModelError("cannot read " + path);
  return ss.str();
}

json parse_json(const std::string& text, const std::string& path) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    throw ModelError(path + " is not valid JSON: " + e.what());
  }
}

// A special token as tokenizer files write it: a string, or a serialized AddedToken {"content": ...}. null
// means unset (CLIPTokenizer then keeps its default).
std::optional<std::string> token_content(const json& v, const std::string& where) {
  if (v.is_null()) return std::nullopt;
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  throw ModelError(where + " is neither a string nor an object with a \"content\" string");
}

bool is_ascii_letter(char32_t c) { return (c >= U'a' && c <= U'z') || (c >= U'A' && c <= U'Z'); }

// One character of a literal in CLIPTokenizer.pat against the text under IGNORECASE. The `regex` module folds
// case simply (one code point to one), and the only non-ASCII code points that fold to an ASCII letter are
// U+017F LATIN SMALL LETTER LONG S (to s) and U+212A KELVIN SIGN (to k), which lower() does not change.
bool ignorecase_equal(char32_t c, char p) {
  const auto lp = static_cast<char32_t>(p);
  if (c == lp) return true;
  if (!is_ascii_letter(lp)) return false;
  if ((c | 0x20) == (lp | 0x20) && is_ascii_letter(c)) return true;
  return (c == 0x17F && (lp | 0x20) == U's') || (c == 0x212A && (lp | 0x20) == U'k');
}

bool literal_at(std::u32string_view s, size_t i, std::string_view literal) {
  if (s.size() - i < literal.size()) return false;
  for (size_t k = 0; k < literal.size(); ++k)
    if (!ignorecase_equal(s[i + k], literal[k])) return false;
  return true;
}

// re.findall(CLIPTokenizer.pat, text): calls `emit(begin, end)` for each match. The alternation is ordered, so
// at each position the first alternative that matches wins: the two special-token literals, the contractions
// (in the pattern's order: 's 't 're 've 'm 'll 'd), a run of letters, a single number character, or a run of
// characters that are none of whitespace, letter or number. Positions no alternative matches are skipped.
template <typename Emit>
void find_pattern_matches(std::u32string_view s, Emit emit) {
  static constexpr std::string_view kLiterals[] = {"<|startoftext|>", "<|endoftext|>"};
  static constexpr std::string_view kContractions[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
  size_t i = 0;
  while (i < s.size()) {
    size_t matched = 0;
    if (s[i] == U'<') {
      for (std::string_view lit : kLiterals)
        if (literal_at(s, i, lit)) {
          matched = lit.size();
          break;
        }
    } else if (s[i] == U'\'') {
      for (std::string_view c : kContractions)
        if (literal_at(s, i, c)) {
          matched = c.size();
          break;
        }
    }
    if (matched == 0) {
      switch (text::pattern_class(s[i])) {
        case PatternClass::kLetter:
        case PatternClass::kOther: {
          const PatternClass run = text::pattern_class(s[i]);
          size_t j = i + 1;
          while (j < s.size() && text::pattern_class(s[j]) == run) ++j;
          matched = j - i;
          break;
        }
        case PatternClass::kNumber:
          matched = 1;
          break;
        case PatternClass::kSpace:
        case PatternClass::kUnmatched:
          ++i;
          continue;
      }
    }
    emit(i, i + matched);
    i += matched;
  }
}

std::string data_dir() {
  if (const char* env = std::getenv("SDCPU_DATA_DIR"); env != nullptr && *env != '\0') return env;
  return SDCPU_DATA_DIR;
}

}  // namespace

struct ClipTokenizer::Impl {
  std::unordered_map<std::string, int> vocab;  // vocab.json
  std::unordered_map<std::string, int> added;  // added tokens (special ones included) -> id
  std::vector<std::u32string> split_tokens;    // added tokens split out of the text, longest first
  std::vector<int> split_token_ids;
  std::unordered_map<char32_t, std::vector<size_t>> split_by_first;  // first code point -> split_tokens indices
  std::unique_ptr<text::ByteBpe> bpe;
  std::vector<int> symbol_token_id;  // BPE symbol -> token id
  int bos = -1, eos = -1, pad = -1, unk = -1;

  mutable std::mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<int>> cache;  // CLIPTokenizer.cache, as ids

  // PreTrainedTokenizer._convert_token_to_id_with_added_voc, then CLIPTokenizer._convert_token_to_id's
  // fallback to the unk token.
  std::optional<int> find_id(const std::string& token) const {
    if (auto it = added.find(token); it != added.end()) return it->second;
    if (auto it = vocab.find(token); it != vocab.end()) return it->second;
    return std::nullopt;
  }

  // CLIPTokenizer.bpe + _convert_token_to_id for one pre-token given as UTF-8 bytes.
  void word_ids(const std::string& word, std::vector<int>& out) const {
    // CLIPTokenizer.cache starts with the two special tokens mapped to themselves (no "</w>"): reached when
    // the pattern's literal alternatives match, e.g. for an upper-case "<|ENDOFTEXT|>" that the added-token
    // split (case-sensitive) let through.
    if (word == "<|startoftext|>" || word == "<|endoftext|>") {
      out.push_back(find_id(word).value_or(unk));
      return;
    }
    const bool cacheable = word.size() <= kMaxCachedWordBytes;
    if (cacheable) {
      std::lock_guard<std::mutex> lock(cache_mutex);
      if (auto it = cache.find(word); it != cache.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    std::vector<int> symbols;
    bpe->apply(word, symbols);
    const size_t first = out.size();
    for (int s : symbols) out.push_back(symbol_token_id[static_cast<size_t>(s)]);
    if (cacheable) {
      std::lock_guard<std::mutex> lock(cache_mutex);
      if (cache.size() >= kMaxCacheEntries) cache.clear();
      cache.emplace(word, std::vector<int>(out.begin() + static_cast<std::ptrdiff_t>(first), out.end()));
    }
  }

  // CLIPTokenizer._tokenize (the no-ftfy branch) for a piece of text without added tokens.
  void tokenize_piece(std::u32string_view piece, std::vector<int>& out, size_t limit) const {
    const std::u32string cleaned = text::clip_basic_clean(piece);
    std::string word;
    find_pattern_matches(cleaned, [&](size_t begin, size_t end) {
      if (out.size() >= limit) return;
      word.clear();
      for (size_t k = begin; k < end; ++k) text::append_utf8(cleaned[k], word);
      word_ids(word, out);
    });
  }

  // PreTrainedTokenizer.tokenize + convert_tokens_to_ids, stopping once `limit` ids exist (the ones after
  // would be truncated away).
  std::vector<int> tokenize(const std::string& utf8, size_t limit) const {
    if (utf8.size() > kMaxPromptBytes)
      throw InvalidArgument("prompt is too long: " + std::to_string(utf8.size()) + " bytes (at most " +
                            std::to_string(kMaxPromptBytes) + ")");
    const std::u32string s = text::decode_utf8(utf8);
    std::vector<int> ids;
    // tokens_trie.split: the leftmost occurrence of an added token, the longest one where several start there.
    // The text between them goes through _tokenize; whitespace around the added tokens needs no stripping
    // here since _tokenize drops it anyway.
    size_t piece_begin = 0;
    for (size_t i = 0; i < s.size() && ids.size() < limit;) {
      size_t found = split_tokens.size();
      if (auto candidates = split_by_first.find(s[i]); candidates != split_by_first.end()) {
        for (size_t t : candidates->second) {
          if (s.compare(i, split_tokens[t].size(), split_tokens[t]) == 0) {
            found = t;
            break;
          }
        }
      }
      if (found == split_tokens.size()) {
        ++i;
        continue;
      }
      tokenize_piece(std::u32string_view(s).substr(piece_begin, i - piece_begin), ids, limit);
      if (ids.size() < limit) ids.push_back(split_token_ids[found]);
      i += split_tokens[found].size();
      piece_begin = i;
    }
    if (ids.size() < limit) tokenize_piece(std::u32string_view(s).substr(piece_begin), ids, limit);
    if (ids.size() > limit) ids.resize(limit);
    return ids;
  }
};

ClipTokenizer ClipTokenizer::from_directory(const std::string& dir) { return load(dir, ""); }

ClipTokenizer ClipTokenizer::load(const std::string& dir, const std::string& pad_token) {
  auto impl = std::make_shared<Impl>();

  const std::string vocab_path = dir + "/vocab.json";
  const std::optional<std::string> vocab_text = read_file(vocab_path);
  if (!vocab_text) throw ModelError("tokenizer file missing: " + vocab_path);
  const json vocab = parse_json(*vocab_text, vocab_path);
  if (!vocab.is_object() || vocab.empty()) throw ModelError(vocab_path + " is not a non-empty JSON object");
  impl->vocab.reserve(vocab.size());
  for (const auto& [token, id] : vocab.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT_MAX)
      throw ModelError(vocab_path + ": the id of token " + json(token).dump() + " is not a non-negative int");
    impl->vocab.emplace(token, static_cast<int>(id.get<int64_t>()));
  }

  const std::string merges_path = dir + "/merges.txt";
  const std::optional<std::string> merges_text = read_file(merges_path);
  if (!merges_text) throw ModelError("tokenizer file missing: " + merges_path);
  impl->bpe = std::make_unique<text::ByteBpe>(*merges_text);

  // Special tokens: CLIPTokenizer.__init__'s defaults, overridden by tokenizer_config.json, then by
  // special_tokens_map.json (PreTrainedTokenizerBase._from_pretrained reads the map last).
  std::string bos = "<|startoftext|>", eos = "<|endoftext|>", unk = "<|endoftext|>", pad = "<|endoftext|>";
  std::vector<std::string> additional;
  std::vector<std::string> split_strings;
  for (const char* name : {"tokenizer_config.json", "special_tokens_map.json"}) {
    const std::string path = dir + "/" + name;
    const std::optional<std::string> text = read_file(path);
    if (!text) continue;
    const json config = parse_json(*text, path);
    if (!config.is_object()) throw ModelError(path + " is not a JSON object");
    for (auto [key, slot] : {std::pair<const char*, std::string*>{"bos_token", &bos},
                             {"eos_token", &eos},
                             {"unk_token", &unk},
                             {"pad_token", &pad}}) {
      if (!config.contains(key)) continue;
      if (std::optional<std::string> v = token_content(config[key], path + ": " + key)) *slot = *v;
    }
    if (config.contains("additional_special_tokens") && config["additional_special_tokens"].is_array()) {
      additional.clear();
      for (const json& v : config["additional_special_tokens"])
        if (std::optional<std::string> t = token_content(v, path + ": additional_special_tokens"))
          additional.push_back(*t);
    }
    // Added tokens with their ids (transformers >= 4.34 writes them here).
    if (config.contains("added_tokens_decoder") && config["added_tokens_decoder"].is_object()) {
      for (const auto& [id_text, token] : config["added_tokens_decoder"].items()) {
        int64_t id = -1;
        try {
          size_t used = 0;
          id = std::stoll(id_text, &used);
          if (used != id_text.size()) id = -1;
        } catch (const std::exception&) {
        }
        if (id < 0 || id > INT_MAX) throw ModelError(path + ": added token id " + json(id_text).dump() + " is invalid");
        std::optional<std::string> content = token_content(token, path + ": added_tokens_decoder");
        if (!content || content->empty()) continue;
        impl->added[*content] = static_cast<int>(id);
        split_strings.push_back(*content);
      }
    }
  }

  if (!pad_token.empty()) pad = pad_token;

  // Every special token is an added token too (PreTrainedTokenizer.__init__ adds all_special_tokens), with the
  // id it has, so the text is split on it: for tokenizers whose pad token is "!", each "!" becomes id 0.
  auto special_id = [&](const std::string& token, const char* role) {
    std::optional<int> id = impl->find_id(token);
    if (!id)
      throw ModelError(dir + ": the " + std::string(role) + " token " + json(token).dump() +
                       " is not in the vocabulary");
    return *id;
  };
  impl->bos = special_id(bos, "bos");
  impl->eos = special_id(eos, "eos");
  impl->unk = special_id(unk, "unk");
  impl->pad = special_id(pad, "pad");
  std::vector<std::string> specials = {bos, eos, unk, pad};
  specials.insert(specials.end(), additional.begin(), additional.end());
  for (const std::string& t : specials) {
    if (t.empty()) continue;
    impl->added.emplace(t, special_id(t, "special"));
    split_strings.push_back(t);
  }
  std::sort(split_strings.begin(), split_strings.end());
  split_strings.erase(std::unique(split_strings.begin(), split_strings.end()), split_strings.end());
  std::vector<std::pair<std::u32string, int>> split;
  for (const std::string& t : split_strings) {
    try {
      split.emplace_back(text::decode_utf8(t), impl->added.at(t));
    } catch (const InvalidArgument&) {
      throw ModelError(dir + ": added token " + json(t).dump() + " is not UTF-8");
    }
  }
  // Longest first, so that where several start at the same place the longest wins.
  std::stable_sort(split.begin(), split.end(),
                   [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  for (auto& [tok, id] : split) {
    impl->split_by_first[tok[0]].push_back(impl->split_tokens.size());
    impl->split_tokens.push_back(std::move(tok));
    impl->split_token_ids.push_back(id);
  }

  impl->symbol_token_id.resize(static_cast<size_t>(impl->bpe->num_symbols()));
  for (int s = 0; s < impl->bpe->num_symbols(); ++s)
    impl->symbol_token_id[static_cast<size_t>(s)] = impl->find_id(impl->bpe->symbol(s)).value_or(impl->unk);
  return ClipTokenizer(std::move(impl));
}

ClipTokenizer ClipTokenizer::bundled(const std::string& pad_token) {
  return load(data_dir() + "/clip-tokenizer", pad_token);
}

std::vector<int> ClipTokenizer::tokenize(const std::string& text) const {
  return impl_->tokenize(text, static_cast<size_t>(-1));
}

std::vector<int> ClipTokenizer::encode(const std::string& text, int max_length) const {
  if (max_length < 2 || max_length > kMaxLength)
    throw InvalidArgument("max_length must be in [2, " + std::to_string(kMaxLength) + "], got " +
                          std::to_string(max_length));
  // PreTrainedTokenizerBase: truncate the ids to max_length - num_special_tokens_to_add() (2), then
  // build_inputs_with_special_tokens (BOS ids EOS), then pad on the right.
  std::vector<int> ids = impl_->tokenize(text, static_cast<size_t>(max_length - 2));
  std::vector<int> out;
  out.reserve(static_cast<size_t>(max_length));
  out.push_back(impl_->bos);
  out.insert(out.end(), ids.begin(), ids.end());
  out.push_back(impl_->eos);
  out.resize(static_cast<size_t>(max_length), impl_->pad);
  return out;
}

int ClipTokenizer::bos_id() const { return impl_->bos; }
int ClipTokenizer::eos_id() const { return impl_->eos; }
int ClipTokenizer::pad_id() const { return impl_->pad; }
int ClipTokenizer::unk_id() const { return impl_->unk; }

}  // namespace sdcpu
