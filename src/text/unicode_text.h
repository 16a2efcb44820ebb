// The Unicode text handling of transformers' slow CLIPTokenizer when ftfy is not installed: strict UTF-8
// decoding, BasicTokenizer's cleanup, and the character classes of CLIPTokenizer's split pattern.
//
// transformers works on Python `str` (code points), so everything here does too (std::u32string); ICU supplies
// the Unicode data (general categories, NFC, full lower-casing) that Python's unicodedata and str.lower() use.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace sdcpu::text {

// Decodes UTF-8 strictly (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF). A Python str,
// which is what transformers tokenizes, can hold nothing else, so any other byte sequence is a caller error:
// throws InvalidArgument naming the byte offset.
std::u32string decode_utf8(std::string_view bytes);

// Appends the UTF-8 form of the scalar value `cp` (never a surrogate: decode_utf8 rejected those).
void append_utf8(char32_t cp, std::string& out);

// " ".join(BasicTokenizer(strip_accents=False, do_split_on_punc=False).tokenize(text)), which is what
// CLIPTokenizer._tokenize feeds its split pattern without ftfy: _clean_text (drop NUL, U+FFFD and category C*
// except \t\n\r; Zs and \t\n\r become spaces), _tokenize_chinese_chars (spaces around CJK ideographs),
// NFC, lower() (full case mapping, final sigma), then whitespace_tokenize, i.e. str.split() and a single space
// between the pieces. No accent stripping and no punctuation splitting in this configuration.
std::u32string clip_basic_clean(std::u32string_view text);

// Which part of CLIPTokenizer.pat a code point can be matched by. The pattern is compiled by the `regex` module
// with IGNORECASE, so the classes are those of `[\p{L}]`, `[\p{N}]`, `[^\s\p{L}\p{N}]` and `\s` under that flag.
enum class PatternClass : uint8_t {
  kLetter,     // [\p{L}]: general category L*
  kNumber,     // [\p{N}]: general category N*
  kOther,      // [^\s\p{L}\p{N}]
  kSpace,      // \s: matched by no alternative, so skipped between tokens
  kUnmatched,  // matched by no alternative either (see pattern_class), also skipped
};
PatternClass pattern_class(char32_t c);

// Python's str.isspace() set (Py_UNICODE_ISSPACE), which str.split() and str.strip() use.
bool is_python_space(char32_t c);

}  // namespace sdcpu::text
