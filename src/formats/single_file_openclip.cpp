#include "formats/single_file_openclip.h"

#include <set>

#include "core/error.h"

namespace sdcpu {
namespace {

constexpr std::string_view kResblocks = "transformer.resblocks.";

[[noreturn]] void fail_in(const std::string& prefix, const std::string& what) {
  throw ModelError("single-file checkpoint: OpenCLIP text encoder (" + prefix + "*): " + what);
}

// "transformer.resblocks.N.rest" -> N (and rest), else nullopt.
std::optional<std::pair<int, std::string>> resblock(const std::string& name) {
  if (!name.starts_with(kResblocks)) return std::nullopt;
  const size_t begin = kResblocks.size(), dot = name.find('.', begin);
  if (dot == std::string::npos || dot == begin || dot - begin > 4) return std::nullopt;
  int n = 0;
  for (size_t i = begin; i < dot; ++i) {
    if (name[i] < '0' || name[i] > '9') return std::nullopt;
    n = n * 10 + (name[i] - '0');
  }
  return std::make_pair(n, name.substr(dot + 1));
}

}  // namespace

OpenClipShape open_clip_shape(const std::vector<NamedShape>& tensors, const std::string& prefix, bool sdxl) {
  auto fail = [&](const std::string& what) { fail_in(prefix, what); };
  OpenClipShape clip;
  clip.sdxl = sdxl;
  std::set<int> blocks;
  for (const auto& t : tensors) {
    if (t.name == "token_embedding.weight") {
      if (t.shape.size() != 2 || t.shape[0] <= 0 || t.shape[1] <= 0)
        fail("token_embedding.weight has shape " + shape_to_string(t.shape) + ", expected [vocabulary, width]");
      clip.width = t.shape[1];
    }
    if (auto b = resblock(t.name)) blocks.insert(b->first);
    if (t.name == "text_projection") clip.projection = t.shape;
  }
  if (clip.width == 0) fail("there is no token_embedding.weight");
  if (blocks.empty()) fail("there are no transformer.resblocks.*");
  clip.layers_in_file = *blocks.rbegin() + 1;
  for (int i = 0; i < clip.layers_in_file; ++i)
    if (!blocks.count(i))
      fail("transformer.resblocks." + std::to_string(i) + " is missing (the file has resblocks up to " +
           std::to_string(clip.layers_in_file - 1) + ")");
  if (!sdxl && clip.layers_in_file < 2)
    fail("one transformer resblock; SD 2.x uses the penultimate layer's output, so it needs at least two");
  if (sdxl && (clip.projection.size() != 2 || clip.projection[0] != clip.width || clip.projection[1] <= 0))
    fail(clip.projection.empty() ? "there is no text_projection (SDXL's pooled text embeds need it)"
                                 : "text_projection has shape " + shape_to_string(clip.projection) + ", expected [" +
                                       std::to_string(clip.width) + ", projection]");
  return clip;
}

std::vector<MappedTensor> map_open_clip_key(const NamedShape& t, const std::string& source, const OpenClipShape& clip) {
  auto one = [&](std::string name) { return std::vector<MappedTensor>{{std::move(name), source, t.shape}}; };
  if (t.name == "token_embedding.weight") return one("text_model.embeddings.token_embedding.weight");
  if (t.name == "positional_embedding") return one("text_model.embeddings.position_embedding.weight");
  if (t.name == "ln_final.weight") return one("text_model.final_layer_norm.weight");
  if (t.name == "ln_final.bias") return one("text_model.final_layer_norm.bias");
  if (t.name == "text_projection" && clip.sdxl)
    return {MappedTensor{"text_projection.weight", source, {t.shape[1], t.shape[0]}, -1, /*transposed=*/true}};
  const auto block = resblock(t.name);
  // text_projection, logit_scale, attn_mask, and (SD 2.x) the last layer, which SD 2.x does not use.
  if (!block || (!clip.sdxl && block->first >= clip.layers_in_file - 1)) return {};
  const std::string layer = "text_model.encoder.layers." + std::to_string(block->first) + ".";
  const std::string& rest = block->second;

  if (rest == "attn.in_proj_weight" || rest == "attn.in_proj_bias") {
    const bool weight = rest == "attn.in_proj_weight";
    const int64_t w = clip.width;
    const Shape expected = weight ? Shape{3 * w, w} : Shape{3 * w};
    if (t.shape != expected) {
      std::string why = "has shape " + shape_to_string(t.shape) + ", expected " + shape_to_string(expected) +
                        " (q, k and v of width " + std::to_string(w) + " stacked)";
      if (!t.shape.empty() && t.shape[0] % 3 != 0)
        why += ": " + std::to_string(t.shape[0]) + " rows cannot be split into q, k and v";
      fail_in(source.substr(0, source.size() - t.name.size()), "'" + source + "' " + why);
    }
    std::vector<MappedTensor> out;
    const char* parts[] = {"q_proj", "k_proj", "v_proj"};
    for (int i = 0; i < 3; ++i) {
      Shape part = t.shape;
      part[0] = w;
      out.push_back({layer + "self_attn." + parts[i] + (weight ? ".weight" : ".bias"), source, part, i * w});
    }
    return out;
  }
  static const std::pair<std::string_view, std::string_view> kRenames[] = {
      {"attn.out_proj.", "self_attn.out_proj."},
      {"ln_1.", "layer_norm1."},
      {"ln_2.", "layer_norm2."},
      {"mlp.c_fc.", "mlp.fc1."},
      {"mlp.c_proj.", "mlp.fc2."},
  };
  for (const auto& [from, to] : kRenames)
    if (rest.starts_with(from)) return one(layer + std::string(to) + rest.substr(from.size()));
  return {};
}

}  // namespace sdcpu
