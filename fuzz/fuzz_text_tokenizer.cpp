// libFuzzer target: the CLIP tokenizer must turn any byte string into 77 valid ids or reject it (invalid
// UTF-8) with an InvalidArgument, never crash, hang or allocate without bound.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"
#include "text/clip_tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const sdcpu::ClipTokenizer tok = sdcpu::ClipTokenizer::bundled();
  const std::string text(reinterpret_cast<const char*>(data), size);
  std::vector<int> ids;
  try {
    ids = tok.encode(text);
  } catch (const sdcpu::InvalidArgument&) {
    return 0;
  }
  // The contract: BOS, ids from the vocabulary, EOS, padding; and the same ids as tokenize() (early stopping
  // in encode() must not change them).
  if (ids.size() != 77 || ids.front() != tok.bos_id()) __builtin_trap();
  for (int id : ids)
    if (id < 0 || id >= 49408) __builtin_trap();
  const std::vector<int> all = tok.tokenize(text);
  const size_t n = all.size() < 75 ? all.size() : 75;
  for (size_t i = 0; i < n; ++i)
    if (ids[i + 1] != all[i]) __builtin_trap();
  if (ids[n + 1] != tok.eos_id()) __builtin_trap();
  for (size_t i = n + 2; i < ids.size(); ++i)
    if (ids[i] != tok.pad_id()) __builtin_trap();
  return 0;
}
