// The request a pipeline golden was made with, from the settings its generator script wrote into the file's
// metadata (tests/oracle/make_*_goldens.py): prompt, negative prompt, steps, guidance, sampler, seed and size.
#pragma once
#include <string>

#include "formats/safetensors.h"
#include "pipeline/txt2img.h"

namespace sdcpu::testing {

// `sampler_key`: the metadata key naming the sampler ("scheduler" in most scripts, "sampler" in some).
inline Txt2ImgRequest golden_request(const SafetensorsFile& g, const std::string& sampler_key = "scheduler") {
  const auto& m = g.metadata();
  Txt2ImgRequest r;
  r.prompt = m.at("prompt");
  r.negative_prompt = m.at("negative_prompt");
  r.steps = std::stoi(m.at("steps"));
  r.cfg_scale = std::stof(m.at("guidance_scale"));
  r.sampler = m.at(sampler_key);
  r.seed = std::stoull(m.at("seed"));
  r.width = std::stoi(m.at("width"));
  r.height = std::stoi(m.at("height"));
  return r;
}

}  // namespace sdcpu::testing
