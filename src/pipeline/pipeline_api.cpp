// The public API (include/sdcpu/sdcpu.h) over Txt2ImgPipeline.
#include <algorithm>
#include <filesystem>
#include <random>
#include <sstream>

#include "core/error.h"
#include "core/image_png.h"
#include "core/threads.h"
#include "pipeline/generation_parameters.h"
#include "pipeline/model_family.h"
#include "pipeline/precision.h"
#include "pipeline/txt2img.h"
#include "sdcpu/sdcpu.h"

namespace sdcpu {
namespace {

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const std::string& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

std::string join(const std::vector<int>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(v[i]);
  }
  return s;
}

std::string model_name(const std::string& path) {
  std::filesystem::path p(path);
  if (p.filename().empty()) p = p.parent_path();
  return p.stem().string();
}

// The pipeline's request for image k of a batch (seed + k).
Txt2ImgRequest request_for(const GenerateOptions& o, uint64_t seed) {
  Txt2ImgRequest r;
  r.prompt = o.prompt;
  r.negative_prompt = o.negative_prompt;
  r.steps = o.steps;
  r.cfg_scale = o.cfg_scale;
  r.sampler = o.sampler;
  r.timestep_spacing = o.timestep_spacing;
  r.seed = seed;
  r.width = o.width;
  r.height = o.height;
  r.clip_skip = o.clip_skip;
  r.cache_interval = o.cache_interval;
  r.cache_branch = o.cache_branch;
  r.cache_schedule = o.cache_schedule;
  r.cache_center = o.cache_center;
  r.cache_power = o.cache_power;
  r.tome_ratio = o.tome_ratio;
  r.tome_max_downsample = o.tome_max_downsample;
  return r;
}

// An image as the user sees it: [B, 3, H, W] in about [-1, 1], batch element 0.
Image to_image(const Tensor& decoded) {
  Image img;
  img.height = static_cast<int>(decoded.dim(2));
  img.width = static_cast<int>(decoded.dim(3));
  img.rgb = image_to_rgb8(decoded, 0);
  return img;
}

// One line for all the networks whose cache file could not be written (the first one's reason), or "".
std::string weight_cache_notice(const std::vector<WeightCacheStatus>& status) {
  std::vector<std::string> components;
  std::string reason;
  for (const WeightCacheStatus& s : status) {
    if (!s.outcome.starts_with("not written: ")) continue;
    components.push_back(s.component);
    if (reason.empty()) reason = s.outcome.substr(std::string("not written: ").size());
  }
  if (components.empty()) return "";
  std::string names;
  for (const std::string& c : components) names += (names.empty() ? "" : ", ") + c;
  return "weight cache not written (" + reason + "); the " + names +
         " weights are packed in memory instead, a higher peak (--weight-cache DIR picks another directory, "
         "--no-weight-cache none)";
}

class PipelineImpl : public Pipeline {
 public:
  const std::vector<WeightCacheStatus>& weight_cache_status() const { return txt2img_.weight_cache_status(); }
  PipelineImpl(ModelFiles files, ComputeType compute, MemoryOptions memory, TaesdOptions taesd,
               const std::string& family)
      : txt2img_(std::move(files), compute, std::move(memory), std::move(taesd)),
        family_(family.empty() ? detect_model_family(txt2img_.files(), txt2img_.scheduler_config())
                               : model_family_named(family, txt2img_.files(), txt2img_.scheduler_config())) {}

  const ModelFamily& family() const override { return family_; }

  std::vector<Image> generate(const GenerateOptions& o, const ProgressCallback& progress) override {
    // Images one after another: a batch of one per UNet call, so that each is what diffusers gives for its seed.
    return generate_batch({o}, 1,
                          [&](int, int image, int step, int steps) {
                            if (progress) progress(image, step, steps);
                            return true;
                          })
        .front();
  }

  std::vector<std::vector<Image>> generate_batch(const std::vector<GenerateOptions>& requests, int max_batch,
                                                 const BatchProgressCallback& progress) override {
    if (requests.empty()) throw InvalidArgument("no requests to generate");
    if (max_batch < 1 || max_batch > 64) throw InvalidArgument("max batch must be between 1 and 64");
    for (const GenerateOptions& o : requests) {
      validate(o);
      if (o.preview_every > 0 && !txt2img_.taesd())
        throw InvalidArgument("previews need a TAESD to decode them: load the model with --vae or --preview-vae");
      if (!batchable(o, requests.front()))
        throw InvalidArgument(
            "requests generated together must agree on size, steps, sampler, timestep spacing, guidance and clip skip");
    }
    // Every image of every request, in order: image k of request j has seed_j + k.
    struct Item {
      int request, image;
      uint64_t seed;
    };
    std::vector<Item> items;
    for (size_t j = 0; j < requests.size(); ++j) {
      const uint64_t seed = requests[j].seed == kRandomSeed ? random_seed() : requests[j].seed;
      for (int k = 0; k < requests[j].batch_count; ++k)
        items.push_back({static_cast<int>(j), k, seed + static_cast<uint64_t>(k)});
    }
    std::vector<std::vector<Image>> images(requests.size());
    std::vector<bool> dropped(requests.size(), false);
    for (size_t first = 0; first < items.size(); first += max_batch) {
      std::vector<Item> chunk;
      std::vector<Txt2ImgRequest> chunk_requests;
      for (size_t i = first; i < std::min(items.size(), first + max_batch); ++i) {
        if (dropped[items[i].request]) continue;
        chunk.push_back(items[i]);
        chunk_requests.push_back(request_for(requests[items[i].request], items[i].seed));
      }
      if (chunk.empty()) continue;
      const auto results =
          txt2img_.run_batch(chunk_requests, [&](int member, int step, int steps, const Tensor& latents) {
            const Item& item = chunk[member];
            const GenerateOptions& o = requests[item.request];
            const int done = step + 1;
            if (!dropped[item.request] && progress && !progress(item.request, item.image, done, steps))
              dropped[item.request] = true;
            if (!dropped[item.request] && o.preview_every > 0 && o.on_preview && done % o.preview_every == 0 &&
                done < steps)
              o.on_preview(item.image, done, to_image(txt2img_.preview_latents(latents)));
            return !dropped[item.request];
          });
      for (size_t m = 0; m < chunk.size(); ++m)
        if (!dropped[chunk[m].request])
          images[chunk[m].request].push_back(make_image(requests[chunk[m].request], results[m], chunk[m].seed));
    }
    for (size_t j = 0; j < requests.size(); ++j)
      if (dropped[j]) images[j].clear();
    return images;
  }

  std::string describe_scheduler(const GenerateOptions& o) const override {
    const ResolvedSchedulerConfig resolved = txt2img_.scheduler_settings(request_for(o, 0));
    const ModelFiles& f = txt2img_.files();
    const StoredSchedulerConfig& stored = txt2img_.scheduler_config();
    std::ostringstream s;
    s << "scheduler:    " << resolved.sampler << " (" << resolved.diffusers_class << "), from "
      << (f.scheduler_config_path.empty()
              ? "diffusers' single-file default config (DDIMScheduler)"
              : f.scheduler_config_path + " (" + (stored.class_name.empty() ? "no _class_name" : stored.class_name) +
                    ")")
      << "\n";
    size_t width = 0;
    for (const SchedulerSetting& setting : resolved.settings) width = std::max(width, setting.key.size());
    for (const SchedulerSetting& setting : resolved.settings)
      s << "  " << setting.key << std::string(width + 2 - setting.key.size(), ' ') << setting.value << "  ("
        << setting_source_name(setting.source) << ")\n";
    return s.str();
  }

  std::string describe() const override {
    const ModelFiles& f = txt2img_.files();
    std::ostringstream s;
    s << "model:        " << f.path << "\n"
      << "layout:       " << f.layout << "\n"
      << "architecture: " << f.architecture << "\n";
    if (!f.prediction_type.empty())
      s << "prediction:   " << f.prediction_type << " (" << f.prediction_type_reason << ")\n";
    s << "family:       " << family_.name << ": " << family_.reason << "\n"
      << "defaults:     " << family_.width << "x" << family_.height << ", " << family_.steps
      << (family_.steps == 1 ? " step" : " steps") << ", guidance " << family_.cfg_scale << ", sampler "
      << family_.sampler << "\n";
    if (family_.embedded_guidance)
      s << "guidance:     embedded (time_cond_proj_dim " << f.unet_config.time_cond_proj_dim
        << "): one UNet pass per step, no negative prompt\n";
    s << "text encoder: " << (f.architecture == "SD 2.x" ? "OpenCLIP" : "CLIP") << ", "
      << f.text_encoder_config.num_hidden_layers << " layers, hidden " << f.text_encoder_config.hidden_size << ", "
      << f.text_encoder_config.num_attention_heads << " heads, " << f.text_encoder_config.hidden_act << "\n";
    if (f.text_encoder_2)
      s << "text enc. 2:  CLIP with projection " << f.text_encoder_2_config.projection_dim << ", "
        << f.text_encoder_2_config.num_hidden_layers << " layers, hidden " << f.text_encoder_2_config.hidden_size
        << ", " << f.text_encoder_2_config.num_attention_heads << " heads, " << f.text_encoder_2_config.hidden_act
        << "\n";
    s << "unet:         channels " << join(f.unet_config.block_out_channels) << ", heads "
      << join(f.unet_config.num_attention_heads) << ", cross-attention " << f.unet_config.cross_attention_dim
      << (f.unet_config.use_linear_projection ? ", linear projections" : ", conv projections") << "\n"
      << "vae:          channels " << join(f.vae_config.block_out_channels) << ", latent channels "
      << f.vae_config.latent_channels << ", scaling factor " << f.vae_config.scaling_factor << "\n"
      << "precision:    " << compute_type_name(txt2img_.compute_type()) << "\n";
    if (const auto& int8 = txt2img_.int8_report(); !int8.int8.empty())
      s << "int8 layers:  " << int8.int8.size() << " of the UNet's " << int8.int8.size() + int8.kept.size()
        << " convolutions and linear layers; bf16: " << join(int8.kept) << " and the attention products\n";
    if (const TaesdFiles* t = txt2img_.taesd())
      s << "taesd:        " << t->path << " (" << t->layout << "), decoder channels "
        << join(t->config.decoder_block_out_channels) << ", latent channels " << t->config.latent_channels << ", "
        << (txt2img_.taesd_decodes() ? "decodes the images instead of the VAE" : "decodes previews") << "\n";
    s << "tokenizer:    " << (f.tokenizer_dir.empty() ? "bundled CLIP vocabulary" : f.tokenizer_dir)
      << (f.tokenizer_pad_token.empty() ? "" : ", pad token \"" + f.tokenizer_pad_token + "\"") << "\n";
    if (!f.tokenizer_2_dir.empty()) s << "tokenizer 2:  " << f.tokenizer_2_dir << "\n";
    for (const WeightCacheStatus& c : txt2img_.weight_cache_status())
      s << "weight cache: " << c.component << " " << c.outcome << " (was " << c.previous_state << "): " << c.path
        << "\n";
    std::vector<std::string> ignored = f.ignored_tensors;
    int vae_encoder_tensors = 0;
    for (const auto* store : {f.text_encoder.get(), f.unet.get(), f.vae.get(), f.text_encoder_2.get()})
      if (store)
        for (const std::string& name : store->unused()) {
          // The VAE encoder belongs to the model (img2img uses it); txt2img just does not load it. Nor the decoder
          // when a TAESD replaces it.
          if (store == f.vae.get() && (name.starts_with("encoder.") || name.starts_with("quant_conv."))) {
            ++vae_encoder_tensors;
            continue;
          }
          if (store == f.vae.get() && txt2img_.taesd_decodes()) continue;
          ignored.push_back(store->component() + ": " + name);
        }
    s << "vae encoder:  "
      << (vae_encoder_tensors ? std::to_string(vae_encoder_tensors) + " tensors (for img2img)" : "absent") << "\n";
    s << "ignored tensors (" << ignored.size() << ")" << (ignored.empty() ? "" : ":") << "\n";
    for (const std::string& name : ignored) s << "  " << name << "\n";
    return s.str();
  }

 private:
  Image make_image(const GenerateOptions& o, const Txt2ImgPipeline::Result& result, uint64_t seed) const {
    Image img;
    img.width = o.width;
    img.height = o.height;
    img.rgb = image_to_rgb8(result.image, 0);
    img.seed = seed;
    GenerationParameters p;
    p.prompt = o.prompt;
    p.negative_prompt = o.negative_prompt;
    p.sampler = o.sampler;
    p.model = model_name(txt2img_.files().path);
    p.timestep_spacing = o.timestep_spacing;
    p.steps = o.steps;
    p.width = o.width;
    p.height = o.height;
    p.clip_skip = o.clip_skip;
    p.cache_interval = o.cache_interval;
    p.cache_branch = o.cache_branch;
    p.cache_schedule = o.cache_schedule;
    p.cache_center = o.cache_center;
    p.cache_power = o.cache_power;
    p.tome_ratio = o.tome_ratio;
    p.cfg_scale = o.cfg_scale;
    if (txt2img_.taesd_decodes()) p.vae = model_name(txt2img_.taesd()->path);
    p.seed = seed;
    img.parameters = format_a1111_parameters(p);
    return img;
  }

  Txt2ImgPipeline txt2img_;
  ModelFamily family_;
};

}  // namespace

// A1111's random seed: int(random.randrange(4294967294)), so that the seed fits every tool that reads it back.
uint64_t random_seed() {
  std::random_device device;
  return std::uniform_int_distribution<uint64_t>(0, 4294967293u)(device);
}

void validate(const GenerateOptions& options) {
  if (options.batch_count < 1 || options.batch_count > 1000)
    throw InvalidArgument("batch count must be between 1 and 1000", "batch_count");
  if (options.preview_every < 0 || options.preview_every > 1000)
    throw InvalidArgument("preview every must be between 0 (no previews) and 1000 steps", "preview_every");
  validate(request_for(options, 0));
}

bool batchable(const GenerateOptions& a, const GenerateOptions& b) {
  return batchable(request_for(a, 0), request_for(b, 0));
}

std::vector<std::string> sampler_names() { return scheduler_names(); }

std::unique_ptr<Pipeline> Pipeline::load(const std::string& model_path, const LoadOptions& options) {
  if (options.threads < 0) throw InvalidArgument("threads must be >= 0");
  const ComputeType compute = resolve_precision(options.precision);  // refuses bad names before any loading
  if (!options.vae_path.empty() && !options.preview_vae_path.empty())
    throw InvalidArgument("give a preview VAE only without --vae: the --vae TAESD makes the previews too");
  if (!options.family.empty()) {
    const std::vector<std::string> families = model_family_names();
    if (std::find(families.begin(), families.end(), options.family) == families.end()) {
      std::string list;
      for (const std::string& n : families) list += (list.empty() ? "" : ", ") + n;
      throw InvalidArgument("unknown model family \"" + options.family + "\"; valid families: " + list);
    }
  }
  setup_threads(options.threads, options.pin_threads);
  TaesdOptions taesd;
  if (!options.vae_path.empty()) taesd = {open_taesd(options.vae_path), /*replaces_vae=*/true};
  if (!options.preview_vae_path.empty()) taesd = {open_taesd(options.preview_vae_path), /*replaces_vae=*/false};
  auto pipeline = std::make_unique<PipelineImpl>(open_model(model_path, options.variant, options.prediction_type),
                                                 compute, MemoryOptions{options.weight_cache_dir, options.low_memory},
                                                 std::move(taesd), options.family);
  if (options.on_notice) {
    const std::string notice = weight_cache_notice(pipeline->weight_cache_status());
    if (!notice.empty()) options.on_notice(notice);
  }
  return pipeline;
}

void Image::save_png(const std::string& path) const {
  write_png_rgb8(path, width, height, rgb.data(), {{"parameters", parameters}});
}

std::vector<uint8_t> Image::encode_png() const {
  return encode_png_rgb8(width, height, rgb.data(), {{"parameters", parameters}});
}

}  // namespace sdcpu
