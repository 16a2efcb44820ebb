// The CLIP tokenizer against the goldens of transformers' slow CLIPTokenizer (no ftfy), plus the edge cases the
// goldens do not reach: case mapping, Unicode cleanup, added tokens, invalid UTF-8, long and hostile input.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "test_support.h"
#include "text/clip_tokenizer.h"

namespace sdcpu {
namespace {

namespace fs = std::filesystem;

constexpr int kBos = 49406;
constexpr int kEos = 49407;

std::string fixture_tokenizer_dir() { return testing::fixture("tiny-sd/tokenizer"); }

const ClipTokenizer& fixture_tokenizer() {
  static const ClipTokenizer tok = ClipTokenizer::from_directory(fixture_tokenizer_dir());
  return tok;
}

struct GoldenPrompt {
  std::string prompt;
  std::vector<int> ids;
};

std::vector<GoldenPrompt> golden_prompts() {
  std::ifstream f(testing::fixture("goldens/tiny-sd/tokenizer.json"));
  EXPECT_TRUE(f.good());
  const nlohmann::json j = nlohmann::json::parse(f);
  std::vector<GoldenPrompt> out;
  for (const auto& e : j) out.push_back({e.at("prompt").get<std::string>(), e.at("input_ids").get<std::vector<int>>()});
  return out;
}

// BOS + ids[:max_length - 2] + EOS + padding: what encode() must be in terms of tokenize().
std::vector<int> frame(std::vector<int> ids, int max_length, int pad) {
  if (ids.size() > static_cast<size_t>(max_length - 2)) ids.resize(static_cast<size_t>(max_length - 2));
  ids.insert(ids.begin(), kBos);
  ids.push_back(kEos);
  ids.resize(static_cast<size_t>(max_length), pad);
  return ids;
}

// A tokenizer folder with the fixture's vocabulary and the given extra files.
std::string tokenizer_dir_with(const std::vector<std::pair<std::string, std::string>>& files) {
  const std::string dir = testing::temp_dir();
  for (const char* name : {"vocab.json", "merges.txt"})
    fs::copy_file(fixture_tokenizer_dir() + "/" + name, dir + "/" + name, fs::copy_options::overwrite_existing);
  for (const auto& [name, content] : files) std::ofstream(dir + "/" + name, std::ios::binary) << content;
  return dir;
}

void check_goldens(const ClipTokenizer& tok) {
  const std::vector<GoldenPrompt> goldens = golden_prompts();
  ASSERT_EQ(goldens.size(), 12u);
  int matched = 0;
  for (const GoldenPrompt& g : goldens) {
    ASSERT_EQ(g.ids.size(), 77u);
    const std::vector<int> ids = tok.encode(g.prompt);
    EXPECT_EQ(ids, g.ids) << "prompt: " << g.prompt;
    EXPECT_EQ(frame(tok.tokenize(g.prompt), 77, tok.pad_id()), g.ids) << "prompt: " << g.prompt;
    matched += ids == g.ids;
  }
  EXPECT_EQ(matched, 12);
}

TEST(ClipTokenizer, FixtureTokenizerMatchesEveryGoldenPrompt) { check_goldens(fixture_tokenizer()); }

TEST(ClipTokenizer, BundledTokenizerMatchesEveryGoldenPrompt) { check_goldens(ClipTokenizer::bundled()); }

TEST(ClipTokenizer, SpecialTokenIds) {
  const ClipTokenizer& tok = fixture_tokenizer();
  EXPECT_EQ(tok.bos_id(), kBos);
  EXPECT_EQ(tok.eos_id(), kEos);
  EXPECT_EQ(tok.pad_id(), kEos);
  EXPECT_EQ(tok.unk_id(), kEos);
  // Without config files CLIPTokenizer's defaults apply: pad is <|endoftext|> too.
  const ClipTokenizer bare = ClipTokenizer::from_directory(tokenizer_dir_with({}));
  EXPECT_EQ(bare.bos_id(), kBos);
  EXPECT_EQ(bare.eos_id(), kEos);
  EXPECT_EQ(bare.pad_id(), kEos);
}

TEST(ClipTokenizer, EmptyAndWhitespaceOnlyPrompts) {
  const ClipTokenizer& tok = fixture_tokenizer();
  const std::vector<int> empty = frame({}, 77, kEos);
  const std::vector<std::string> prompts = {
      "", " ", " \t\n\r ", std::string("\0\0", 2), "\u200b\ufeff", "\u3000\u00a0\u2028"};
  for (const std::string& p : prompts) {
    EXPECT_TRUE(tok.tokenize(p).empty()) << p;
    EXPECT_EQ(tok.encode(p), empty) << p;
  }
}

// Expected ids from a line-by-line Python re-implementation of transformers' CLIPTokenizer (no ftfy, `regex`
// 2026.5.9, Python 3.11) that reproduces all 12 goldens; they pin behaviour the goldens do not cover.
TEST(ClipTokenizer, UnicodeCornerCases) {
  const ClipTokenizer& tok = fixture_tokenizer();
  const std::vector<std::pair<std::string, std::vector<int>>> cases = {
      // str.lower() with Final_Sigma: ΟΔΟΣ -> οδος, a lone Σ -> σ.
      {"\u039f\u0394\u039f\u03a3 \u03a3\u0391\u03a3 \u03a3",
       {138, 123, 138, 112, 138, 123, 139, 480, 139, 225, 138, 109, 139, 480, 139, 481}},
      // İ lower-cases to i + U+0307, and the combining dot is not a letter for the split pattern.
      {"\u0130stanbul", {328, 16384, 11231}},
      // IGNORECASE: 'ſ (long s) matches the 's contraction; an upper-case 'S is lower-cased first.
      {"it'\u017f it'S", {585, 6, 129, 379, 585, 568}},
      // Upper-case special tokens escape the (case-sensitive) added-token split but are lower-cased and then
      // caught by the pattern's literal alternatives and CLIPTokenizer.cache.
      {"<|ENDOFTEXT|>x<|StartOfText|>", {kEos, 343, kBos}},
      // ... while a literal only IGNORECASE-equal (ſ for s) is an ordinary BPE word.
      {"<|\u017ftartoftext|>", {27, 91, 129, 123, 2002, 6659, 18169, 91, 285}},
      // U+0345 matches no alternative of the pattern under IGNORECASE, so it separates a from b.
      {"a\u0345b", {320, 321}},
      // _clean_text drops format characters (ZWJ, ZWSP, BOM), NUL, U+FFFD and controls other than \t\n\r.
      {"\u200dzero\u200bwidth\ufeff", {14867, 23571}},
      {"tab\x0bvt\x1c"
       "fs" +
           std::string(1, '\0') + "nul\ufffdrep",
       {2648, 85, 18828, 1672, 914, 6487}},
      // Zs becomes a space; U+2028 is split on by str.split(); U+0085 is a control and vanishes.
      {"x\u2028y\u00a0z\u3000w\u0085v", {343, 344, 345, 14743}},
      // No compatibility normalization (NFC only): ligatures and number forms stay as they are.
      {"\ufb01ne \u00bd \u2460 \u216b", {171, 105, 223, 1422, 33613, 158, 239, 510, 158, 227, 375}},
      // NFC composes e + U+0301 into é.
      {"cafe\u0301", {15304}},
      // CJK ideographs are split apart; U+F900 is NFC-normalized to U+8C48.
      {"\uf900\u4e00x", {164, 109, 486, 19759, 478, 343}},
  };
  for (const auto& [prompt, ids] : cases) EXPECT_EQ(tok.tokenize(prompt), ids) << prompt;
}

TEST(ClipTokenizer, LiteralSpecialTokensInThePrompt) {
  const ClipTokenizer& tok = fixture_tokenizer();
  EXPECT_EQ(tok.tokenize("<|endoftext|>"), std::vector<int>{kEos});
  EXPECT_EQ(tok.tokenize("<|startoftext|>"), std::vector<int>{kBos});
  // Split out before the text is cleaned: no space needed around them.
  EXPECT_EQ(tok.tokenize("a<|endoftext|>a"), (std::vector<int>{320, kEos, 320}));
  EXPECT_EQ(tok.tokenize("<|endoftext|><|endoftext|>"), (std::vector<int>{kEos, kEos}));
}

// Stable Diffusion 2.x / XL tokenizers pad with "!" (id 0). transformers makes every special token an added
// token, so each "!" of the prompt becomes id 0 on its own: the ids below are those diffusers issue #4153
// reports for "! !! !!!" with SDXL's tokenizer_2.
TEST(ClipTokenizer, PadTokenFromConfigIsAlsoSplitOut) {
  const std::string map = R"({"bos_token": {"content": "<|startoftext|>", "lstrip": false, "normalized": true,
    "rstrip": false, "single_word": false}, "eos_token": "<|endoftext|>", "pad_token": "!",
    "unk_token": "<|endoftext|>"})";
  const ClipTokenizer tok = ClipTokenizer::from_directory(tokenizer_dir_with({{"special_tokens_map.json", map}}));
  EXPECT_EQ(tok.pad_id(), 0);
  EXPECT_EQ(tok.bos_id(), kBos);
  std::vector<int> expected = {kBos, 0, 0, 0, 0, 0, 0, kEos};
  expected.resize(77, 0);
  EXPECT_EQ(tok.encode("! !! !!!"), expected);
  // Whereas with <|endoftext|> padding "!!!" is one BPE token.
  EXPECT_EQ(fixture_tokenizer().tokenize("! !! !!!"), (std::vector<int>{256, 748, 995}));
}

TEST(ClipTokenizer, SpecialTokensMapOverridesTokenizerConfig) {
  const ClipTokenizer tok = ClipTokenizer::from_directory(
      tokenizer_dir_with({{"tokenizer_config.json", R"({"pad_token": "<|endoftext|>", "model_max_length": 77})"},
                          {"special_tokens_map.json", R"({"pad_token": "!"})"}}));
  EXPECT_EQ(tok.pad_id(), 0);
}

// transformers >= 4.34 writes added tokens with their ids into tokenizer_config.json; a textual-inversion token
// added there is split out of the prompt like the special tokens.
TEST(ClipTokenizer, AddedTokensFromTokenizerConfig) {
  const std::string config = R"({"added_tokens_decoder": {
    "49406": {"content": "<|startoftext|>", "lstrip": false, "normalized": true, "rstrip": false,
              "single_word": false, "special": true},
    "49407": {"content": "<|endoftext|>", "lstrip": false, "normalized": true, "rstrip": false,
              "single_word": false, "special": true},
    "49408": {"content": "<cat-toy>", "lstrip": false, "normalized": true, "rstrip": false,
              "single_word": false, "special": false}},
    "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
    "unk_token": "<|endoftext|>", "do_lower_case": true, "model_max_length": 77})";
  const ClipTokenizer tok = ClipTokenizer::from_directory(tokenizer_dir_with({{"tokenizer_config.json", config}}));
  EXPECT_EQ(tok.tokenize("a <cat-toy>photo"), (std::vector<int>{320, 49408, 1125}));
  for (const GoldenPrompt& g : golden_prompts()) EXPECT_EQ(tok.encode(g.prompt), g.ids) << g.prompt;
}

TEST(ClipTokenizer, InvalidUtf8IsAnInvalidArgument) {
  const ClipTokenizer& tok = fixture_tokenizer();
  const std::vector<std::string> bad = {
      "\xff",              // never valid
      "abc\x80",           // stray continuation byte
      "\xc3",              // truncated 2-byte sequence
      "\xe2\x82",          // truncated 3-byte sequence
      "\xc0\xaf",          // overlong "/"
      "\xe0\x80\xaf",      // overlong "/"
      "\xed\xa0\x80",      // encoded surrogate U+D800
      "\xf4\x90\x80\x80",  // U+110000
      "\xf8\x88\x80\x80\x80",
      "a photo of \xe2\x28\xa1 a cat",
  };
  for (const std::string& b : bad) {
    EXPECT_THROW(tok.tokenize(b), InvalidArgument) << ::testing::PrintToString(b);
    EXPECT_THROW(tok.encode(b), InvalidArgument) << ::testing::PrintToString(b);
  }
  // The extremes that are valid.
  EXPECT_NO_THROW(tok.encode("\xf4\x8f\xbf\xbf"));
  EXPECT_NO_THROW(tok.encode("\xef\xbf\xbf\xc2\x80\xe0\xa0\x80\xf0\x90\x80\x80"));
}

TEST(ClipTokenizer, LongPromptsAreTruncated) {
  const ClipTokenizer& tok = fixture_tokenizer();
  std::string prompt;
  for (int i = 0; i < 20000; ++i) prompt += "a photo of word" + std::to_string(i) + ", ";
  const std::vector<int> all = tok.tokenize(prompt);
  EXPECT_GT(all.size(), 100000u);
  const std::vector<int> ids = tok.encode(prompt);
  ASSERT_EQ(ids.size(), 77u);
  EXPECT_EQ(ids, frame(all, 77, kEos));
  EXPECT_EQ(ids.front(), kBos);
  EXPECT_EQ(ids.back(), kEos);
  // Other lengths, down to BOS + EOS only.
  EXPECT_EQ(tok.encode(prompt, 10), frame(all, 10, kEos));
  EXPECT_EQ(tok.encode(prompt, 2), (std::vector<int>{kBos, kEos}));
  EXPECT_EQ(tok.encode("a cat", 1000), frame(tok.tokenize("a cat"), 1000, kEos));
  EXPECT_THROW(tok.encode("a cat", 1), InvalidArgument);
  EXPECT_THROW(tok.encode("a cat", -5), InvalidArgument);
}

TEST(ClipTokenizer, HostileWordsStayFast) {
  const ClipTokenizer& tok = fixture_tokenizer();
  // One huge word: transformers' BPE loop is quadratic in its length, ours must not be.
  for (const std::string& unit : std::vector<std::string>{"a", "ab", "\xf0\x9f\x90\xb1", "!", "1"}) {
    std::string word;
    while (word.size() < 300000) word += unit;
    const auto t0 = std::chrono::steady_clock::now();
    const std::vector<int> ids = tok.tokenize(word);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_FALSE(ids.empty());
    EXPECT_LT(s, 20.0) << unit;  // generous: sanitizer builds on a shared machine
    EXPECT_EQ(tok.encode(word).size(), 77u);
  }
  EXPECT_THROW(tok.encode(std::string(size_t{17} << 20, 'a')), InvalidArgument);  // past the 16 MiB bound
}

TEST(ClipTokenizer, ConcurrentUseGivesTheSameIds) {
  const ClipTokenizer& tok = fixture_tokenizer();
  const std::vector<GoldenPrompt> goldens = golden_prompts();
  std::vector<std::thread> threads;
  std::vector<int> failures(4, 0);
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int round = 0; round < 50; ++round)
        for (const GoldenPrompt& g : goldens) failures[static_cast<size_t>(t)] += tok.encode(g.prompt) != g.ids;
    });
  for (std::thread& th : threads) th.join();
  for (int f : failures) EXPECT_EQ(f, 0);
}

TEST(ClipTokenizer, MalformedFoldersAreModelErrors) {
  EXPECT_THROW(ClipTokenizer::from_directory(testing::temp_dir()), ModelError);  // nothing there
  {
    const std::string dir = tokenizer_dir_with({{"vocab.json", "{\"a\": 1,"}});
    EXPECT_THROW(ClipTokenizer::from_directory(dir), ModelError);
  }
  {
    const std::string dir = tokenizer_dir_with({{"vocab.json", "[1, 2, 3]"}});
    EXPECT_THROW(ClipTokenizer::from_directory(dir), ModelError);
  }
  {
    const std::string dir = tokenizer_dir_with({{"vocab.json", R"({"<|startoftext|>": "x"})"}});
    EXPECT_THROW(ClipTokenizer::from_directory(dir), ModelError);
  }
  {
    const std::string dir = tokenizer_dir_with({{"merges.txt", "#version: 0.2\nh \xff\n"}});
    EXPECT_THROW(ClipTokenizer::from_directory(dir), ModelError);
  }
  {
    const std::string dir = tokenizer_dir_with({{"tokenizer_config.json", "{not json"}});
    EXPECT_THROW(ClipTokenizer::from_directory(dir), ModelError);
  }
  {
    const std::string dir = tokenizer_dir_with({{"special_tokens_map.json", R"({"pad_token": "<pad>"})"}});
    EXPECT_THROW(ClipTokenizer::from_directory(dir), ModelError);  // a pad token without an id
  }
  {
    const std::string dir = tokenizer_dir_with({{"special_tokens_map.json", R"({"pad_token": 5})"}});
    EXPECT_THROW(ClipTokenizer::from_directory(dir), ModelError);
  }
  {
    const std::string dir = testing::temp_dir();
    fs::copy_file(fixture_tokenizer_dir() + "/vocab.json", dir + "/vocab.json");
    EXPECT_THROW(ClipTokenizer::from_directory(dir), ModelError);  // merges.txt missing
  }
}

TEST(ClipTokenizer, MergesFileIsReadAsTransformersReadsIt) {
  // CRLF line ends and trailing blank lines change nothing (str.strip() and str.split()).
  std::ifstream in(fixture_tokenizer_dir() + "/merges.txt", std::ios::binary);
  std::string merges((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::string crlf;
  for (char c : merges) {
    if (c == '\n') crlf += '\r';
    crlf += c;
  }
  crlf += "\r\n\r\n";
  const ClipTokenizer tok = ClipTokenizer::from_directory(tokenizer_dir_with({{"merges.txt", crlf}}));
  for (const GoldenPrompt& g : golden_prompts()) EXPECT_EQ(tok.encode(g.prompt), g.ids) << g.prompt;
  // Without merges every byte is its own token.
  const ClipTokenizer bytes_only =
      ClipTokenizer::from_directory(tokenizer_dir_with({{"merges.txt", "#version: 0.2\n"}}));
  EXPECT_EQ(bytes_only.tokenize("hi"), (std::vector<int>{71, 328}));  // "h", "i</w>"
}

TEST(ClipTokenizer, BundledHonoursDataDirEnvironment) {
  const char* old = std::getenv("SDCPU_DATA_DIR");
  const std::string saved = old ? old : "";
  ::setenv("SDCPU_DATA_DIR", (testing::temp_dir() + "/nowhere").c_str(), 1);
  EXPECT_THROW(ClipTokenizer::bundled(), ModelError);
  const std::string data = testing::temp_dir();
  fs::create_directories(data + "/clip-tokenizer");
  for (const char* name : {"vocab.json", "merges.txt"})
    fs::copy_file(fixture_tokenizer_dir() + "/" + name, data + "/clip-tokenizer/" + name);
  ::setenv("SDCPU_DATA_DIR", data.c_str(), 1);
  EXPECT_EQ(ClipTokenizer::bundled().encode("a photo of an astronaut riding a horse on mars"), golden_prompts()[0].ids);
  if (old)
    ::setenv("SDCPU_DATA_DIR", saved.c_str(), 1);
  else
    ::unsetenv("SDCPU_DATA_DIR");
}

}  // namespace
}  // namespace sdcpu
