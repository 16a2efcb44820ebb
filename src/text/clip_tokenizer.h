// The CLIP BPE tokenizer, number for number as transformers' slow CLIPTokenizer without ftfy, called the way
// diffusers' StableDiffusionPipeline calls it: tokenizer(prompt, padding="max_length", max_length=77,
// truncation=True).
//
// The steps, each mirroring a transformers function:
//   1. PreTrainedTokenizer.tokenize: added/special tokens found literally in the prompt ("<|endoftext|>", or
//      "!" for tokenizers whose pad token is "!") are split out first and map to their id.
//   2. CLIPTokenizer._tokenize on each remaining piece: BasicTokenizer cleanup (see unicode_text.h), the split
//      pattern <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
//      (IGNORECASE), byte-level encoding and CLIPTokenizer.bpe (see byte_bpe.h).
//   3. Vocabulary ids (unknown tokens map to the unk token), truncation to max_length - 2, BOS + ids + EOS,
//      right padding with the pad token.
#pragma once
#include <memory>
#include <string>
#include <vector>

namespace sdcpu {

class ClipTokenizer {
 public:
  // Loads vocab.json and merges.txt from `dir`, plus tokenizer_config.json and special_tokens_map.json when
  // present (the latter wins, as in from_pretrained). Special tokens default to CLIPTokenizer's:
  // bos <|startoftext|>, eos, unk and pad <|endoftext|>. Throws ModelError if a file is missing or malformed or
  // a special token has no id.
  static ClipTokenizer from_directory(const std::string& dir);

  // The vocabulary shipped with sdcpu in data/clip-tokenizer, for single-file checkpoints, which carry none.
  // The data directory is the source tree's data/ unless the SDCPU_DATA_DIR environment variable names
  // another.
  // `pad_token`: another pad token than CLIPTokenizer's, as a special_tokens_map.json would set it ("!" for
  // SD 2.x's tokenizer); "" = the default.
  static ClipTokenizer bundled(const std::string& pad_token = "");

  // Token ids of `text` (UTF-8): no BOS/EOS, no truncation. Throws InvalidArgument if `text` is not UTF-8.
  std::vector<int> tokenize(const std::string& text) const;

  // What the pipeline feeds the text encoder: BOS, the first max_length - 2 token ids, EOS, then pad ids up to
  // max_length. Throws InvalidArgument if `text` is not UTF-8 or max_length < 2.
  std::vector<int> encode(const std::string& text, int max_length = 77) const;

  int bos_id() const;
  int eos_id() const;
  int pad_id() const;
  int unk_id() const;

 private:
  struct Impl;
  static ClipTokenizer load(const std::string& dir, const std::string& pad_token);
  explicit ClipTokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;  // immutable after loading (the word cache locks itself): cheap to copy
};

}  // namespace sdcpu
