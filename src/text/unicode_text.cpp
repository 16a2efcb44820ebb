#include "text/unicode_text.h"

#include <unicode/locid.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>
#include <unicode/utf16.h>

#include <string>

#include "core/error.h"

namespace sdcpu::text {
namespace {

[[noreturn]] void bad_utf8(size_t offset, const char* what) {
  throw InvalidArgument("prompt is not valid UTF-8: " + std::string(what) + " at byte " + std::to_string(offset));
}

// transformers tokenization_utils._is_control: category C* (Cc, Cf, Co, Cs, Cn) except \t, \n, \r.
bool is_control(char32_t c) {
  if (c == U'\t' || c == U'\n' || c == U'\r') return false;
  switch (u_charType(static_cast<UChar32>(c))) {
    case U_CONTROL_CHAR:
    case U_FORMAT_CHAR:
    case U_PRIVATE_USE_CHAR:
    case U_SURROGATE:
    case U_UNASSIGNED:
      return true;
    default:
      return false;
  }
}

// transformers tokenization_utils._is_whitespace: space, \t, \n, \r or category Zs.
bool is_bert_whitespace(char32_t c) {
  if (c == U' ' || c == U'\t' || c == U'\n' || c == U'\r') return true;
  return u_charType(static_cast<UChar32>(c)) == U_SPACE_SEPARATOR;
}

// BasicTokenizer._is_chinese_char: the CJK Unified Ideographs blocks (not Hangul, Hiragana or Katakana).
bool is_cjk_ideograph(char32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
         (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

// `\s` of the `regex` module for str patterns: the Unicode White_Space property (unlike str.isspace(), it
// leaves out U+001C..U+001F).
bool is_regex_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

void append_utf16(char32_t c, std::u16string& out) {
  if (c < 0x10000) {
    out.push_back(static_cast<char16_t>(c));
  } else {
    out.push_back(static_cast<char16_t>(0xD800 + ((c - 0x10000) >> 10)));
    out.push_back(static_cast<char16_t>(0xDC00 + ((c - 0x10000) & 0x3FF)));
  }
}

}  // namespace

std::u32string decode_utf8(std::string_view bytes) {
  std::u32string out;
  out.reserve(bytes.size());
  const auto* s = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t n = bytes.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char b = s[i];
    if (b < 0x80) {
      out.push_back(b);
      ++i;
      continue;
    }
    int len;
    char32_t cp;
    char32_t min;
    if (b >= 0xC2 && b <= 0xDF) {
      len = 2, cp = b & 0x1F, min = 0x80;
    } else if (b >= 0xE0 && b <= 0xEF) {
      len = 3, cp = b & 0x0F, min = 0x800;
    } else if (b >= 0xF0 && b <= 0xF4) {
      len = 4, cp = b & 0x07, min = 0x10000;
    } else {
      bad_utf8(i, b < 0xC0 ? "unexpected continuation byte" : "invalid lead byte");
    }
    if (n - i < static_cast<size_t>(len)) bad_utf8(i, "truncated sequence");
    for (int k = 1; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) bad_utf8(i, "truncated sequence");
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if (cp < min) bad_utf8(i, "overlong encoding");
    if (cp >= 0xD800 && cp <= 0xDFFF) bad_utf8(i, "encoded surrogate");
    if (cp > 0x10FFFF) bad_utf8(i, "code point above U+10FFFF");
    out.push_back(cp);
    i += len;
  }
  return out;
}

void append_utf8(char32_t cp, std::string& out) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

bool is_python_space(char32_t c) { return is_regex_space(c) || (c >= 0x1C && c <= 0x1F); }

std::u32string clip_basic_clean(std::u32string_view text) {
  // BasicTokenizer._clean_text, then _tokenize_chinese_chars, written straight into UTF-16 for ICU.
  std::u16string cleaned;
  cleaned.reserve(text.size() + 16);
  for (char32_t c : text) {
    if (c == 0 || c == 0xFFFD || is_control(c)) continue;
    if (is_bert_whitespace(c)) {
      cleaned.push_back(u' ');
    } else if (is_cjk_ideograph(c)) {
      cleaned.push_back(u' ');
      append_utf16(c, cleaned);
      cleaned.push_back(u' ');
    } else {
      append_utf16(c, cleaned);
    }
  }
  if (cleaned.size() > static_cast<size_t>(INT32_MAX / 4)) throw InvalidArgument("prompt is too long");

  // unicodedata.normalize("NFC", text), then str.lower() on each whitespace-separated piece. Lower-casing the
  // whole string is the same thing: lower() maps no character to or from whitespace, and the only
  // context-dependent mapping (Final_Sigma) looks through case-ignorable characters only, which whitespace
  // is not, so it never sees past a piece's ends.
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* nfc = icu::Normalizer2::getNFCInstance(status);
  if (U_FAILURE(status)) throw Error(std::string("ICU NFC normalizer unavailable: ") + u_errorName(status));
  const icu::UnicodeString source(false, cleaned.data(), static_cast<int32_t>(cleaned.size()));
  icu::UnicodeString normalized = nfc->normalize(source, status);
  if (U_FAILURE(status)) throw Error(std::string("ICU NFC normalization failed: ") + u_errorName(status));
  // The root locale applies only the language-independent mappings, as Python's str.lower() does.
  normalized.toLower(icu::Locale::getRoot());

  // whitespace_tokenize (str.split()) and " ".join.
  std::u32string out;
  out.reserve(static_cast<size_t>(normalized.length()));
  bool pending_space = false;
  for (int32_t i = 0; i < normalized.length();) {
    const UChar32 c = normalized.char32At(i);
    i += U16_LENGTH(c);
    if (is_python_space(static_cast<char32_t>(c))) {
      pending_space = !out.empty();
      continue;
    }
    if (pending_space) out.push_back(U' ');
    pending_space = false;
    out.push_back(static_cast<char32_t>(c));
  }
  return out;
}

PatternClass pattern_class(char32_t c) {
  // U+0345 COMBINING GREEK YPOGEGRAMMENI is the one code point whose class the IGNORECASE flag changes: the
  // `regex` module then matches it with neither `[\p{L}]` nor `[^\s\p{L}\p{N}]` (its case folding is a letter,
  // ι), so findall skips it like whitespace. Checked against regex 2026.5.9.
  if (c == 0x345) return PatternClass::kUnmatched;
  if (is_regex_space(c)) return PatternClass::kSpace;
  switch (u_charType(static_cast<UChar32>(c))) {
    case U_UPPERCASE_LETTER:
    case U_LOWERCASE_LETTER:
    case U_TITLECASE_LETTER:
    case U_MODIFIER_LETTER:
    case U_OTHER_LETTER:
      return PatternClass::kLetter;
    case U_DECIMAL_DIGIT_NUMBER:
    case U_LETTER_NUMBER:
    case U_OTHER_NUMBER:
      return PatternClass::kNumber;
    default:
      return PatternClass::kOther;
  }
}

}  // namespace sdcpu::text
