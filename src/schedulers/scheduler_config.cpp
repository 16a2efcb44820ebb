#include "schedulers/scheduler_config.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "schedulers/scheduler.h"

namespace sdcpu {
namespace {

using nlohmann::json;

// ---- reading values ----

// Python's json.dumps writes float('inf') and float('nan') as the bare words Infinity, -Infinity and NaN,
// which JSON does not have (diffusers saves lambda_min_clipped = -inf so). Quote them outside strings so the
// parser accepts the file; number() below reads the quoted forms back.
std::string quote_nonfinite_literals(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      out += c;
      if (c == '\\' && i + 1 < text.size()) {
        out += text[++i];
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
      out += c;
      continue;
    }
    bool replaced = false;
    for (const char* word : {"-Infinity", "Infinity", "NaN"}) {
      const size_t len = std::char_traits<char>::length(word);
      if (text.compare(i, len, word) == 0) {
        out += '"';
        out += word;
        out += '"';
        i += len - 1;
        replaced = true;
        break;
      }
    }
    if (!replaced) out += c;
  }
  return out;
}

[[noreturn]] void bad(const std::string& key, const std::string& why) {
  throw ModelError("scheduler config: \"" + key + "\" " + why);
}

double number(const json& v, const std::string& key) {
  if (v.is_number()) return v.get<double>();
  if (v.is_string()) {
    const auto& s = v.get_ref<const std::string&>();
    if (s == "Infinity") return INFINITY;
    if (s == "-Infinity") return -INFINITY;
    if (s == "NaN") return NAN;
  }
  bad(key, "must be a number, got " + std::string(v.type_name()));
}

double finite_number(const json& v, const std::string& key) {
  const double d = number(v, key);
  if (!std::isfinite(d)) bad(key, "must be finite");
  return d;
}

int integer(const json& v, const std::string& key, int lo, int hi) {
  // Integral floats (1000.0) are accepted: Python writes what the user typed.
  const bool integral = v.is_number_integer() || (v.is_number_float() && std::isfinite(v.get<double>()) &&
                                                  v.get<double>() == std::floor(v.get<double>()));
  if (!integral) bad(key, "must be an integer, got " + std::string(v.is_number() ? "a fraction" : v.type_name()));
  const double d = v.get<double>();
  if (d < lo || d > hi) bad(key, "must be between " + std::to_string(lo) + " and " + std::to_string(hi));
  return static_cast<int>(d);
}

bool boolean(const json& v, const std::string& key) {
  if (!v.is_boolean()) bad(key, "must be true or false, got " + std::string(v.type_name()));
  return v.get<bool>();
}

std::string choice(const json& v, const std::string& key, std::initializer_list<const char*> allowed) {
  if (!v.is_string()) bad(key, "must be a string, got " + std::string(v.type_name()));
  const auto& s = v.get_ref<const std::string&>();
  std::string list;
  for (const char* a : allowed) {
    if (s == a) return s;
    list += std::string(list.empty() ? "" : ", ") + a;
  }
  bad(key, "is \"" + s + "\"; supported: " + list);
}

// Sets in `c` every key of `keys` (a JSON object) that sdcpu reads, validating it; other keys are ignored.
// The one place that knows each key's type and valid values.
void apply_keys(const json& keys, SchedulerConfig& c) {
  auto has = [&](const char* key) {
    auto it = keys.find(key);
    return it != keys.end() && !it->is_null();  // null means "not set" (e.g. trained_betas: null)
  };
  auto at = [&](const char* key) -> const json& { return keys.at(key); };
  if (has("num_train_timesteps"))
    c.num_train_timesteps = integer(at("num_train_timesteps"), "num_train_timesteps", 2, 100000);
  if (has("beta_start")) c.beta_start = finite_number(at("beta_start"), "beta_start");
  if (has("beta_end")) c.beta_end = finite_number(at("beta_end"), "beta_end");
  if (has("beta_schedule"))
    c.beta_schedule = choice(at("beta_schedule"), "beta_schedule", {"linear", "scaled_linear", "squaredcos_cap_v2"});
  if (has("trained_betas")) {
    const json& tb = at("trained_betas");
    if (!tb.is_array()) bad("trained_betas", "must be an array of numbers or null");
    c.trained_betas.clear();
    for (const json& b : tb) {
      const double v = finite_number(b, "trained_betas");
      if (v < 0 || v >= 1) bad("trained_betas", "values must be in [0, 1)");
      c.trained_betas.push_back(v);
    }
  }
  if (has("prediction_type"))
    c.prediction_type = choice(at("prediction_type"), "prediction_type", {"epsilon", "v_prediction", "sample"});
  if (has("timestep_spacing"))
    c.timestep_spacing = choice(at("timestep_spacing"), "timestep_spacing", {"leading", "linspace", "trailing"});
  if (has("steps_offset")) c.steps_offset = integer(at("steps_offset"), "steps_offset", 0, 100000);
  if (has("set_alpha_to_one")) c.set_alpha_to_one = boolean(at("set_alpha_to_one"), "set_alpha_to_one");
  if (has("skip_prk_steps")) c.skip_prk_steps = boolean(at("skip_prk_steps"), "skip_prk_steps");
  if (has("clip_sample")) c.clip_sample = boolean(at("clip_sample"), "clip_sample");
  if (has("clip_sample_range")) {
    c.clip_sample_range = finite_number(at("clip_sample_range"), "clip_sample_range");
    if (c.clip_sample_range <= 0) bad("clip_sample_range", "must be positive");
  }
  if (has("thresholding")) c.thresholding = boolean(at("thresholding"), "thresholding");
  if (has("interpolation_type"))
    c.interpolation_type = choice(at("interpolation_type"), "interpolation_type", {"linear", "log_linear"});
  if (has("use_karras_sigmas")) c.use_karras_sigmas = boolean(at("use_karras_sigmas"), "use_karras_sigmas");
  if (has("sigma_min")) {
    c.sigma_min = finite_number(at("sigma_min"), "sigma_min");
    if (*c.sigma_min <= 0) bad("sigma_min", "must be positive");
  }
  if (has("sigma_max")) {
    c.sigma_max = finite_number(at("sigma_max"), "sigma_max");
    if (*c.sigma_max <= 0) bad("sigma_max", "must be positive");
  }
  if (has("rescale_betas_zero_snr"))
    c.rescale_betas_zero_snr = boolean(at("rescale_betas_zero_snr"), "rescale_betas_zero_snr");
  if (has("timestep_type")) c.timestep_type = choice(at("timestep_type"), "timestep_type", {"discrete", "continuous"});
  if (has("solver_order")) c.solver_order = integer(at("solver_order"), "solver_order", 1, 3);
  // Kept as written: which names a class maps to its own default is the class's business (normalize_for_class).
  if (has("solver_type"))
    c.solver_type = choice(at("solver_type"), "solver_type", {"midpoint", "heun", "logrho", "bh1", "bh2"});
  if (has("lower_order_final")) c.lower_order_final = boolean(at("lower_order_final"), "lower_order_final");
  if (has("euler_at_final")) c.euler_at_final = boolean(at("euler_at_final"), "euler_at_final");
  if (has("final_sigmas_type"))
    c.final_sigmas_type = choice(at("final_sigmas_type"), "final_sigmas_type", {"zero", "sigma_min"});
  if (has("lambda_min_clipped")) {
    c.lambda_min_clipped = number(at("lambda_min_clipped"), "lambda_min_clipped");
    if (std::isnan(c.lambda_min_clipped)) bad("lambda_min_clipped", "must not be NaN");
  }
  if (has("use_lu_lambdas")) c.use_lu_lambdas = boolean(at("use_lu_lambdas"), "use_lu_lambdas");
  if (has("predict_x0")) c.predict_x0 = boolean(at("predict_x0"), "predict_x0");
  if (has("disable_corrector")) {
    const json& dc = at("disable_corrector");
    if (!dc.is_array()) bad("disable_corrector", "must be an array of step indices");
    c.disable_corrector.clear();
    for (const json& step : dc) c.disable_corrector.push_back(integer(step, "disable_corrector", 0, 100000));
  }
  if (has("original_inference_steps"))
    c.original_inference_steps = integer(at("original_inference_steps"), "original_inference_steps", 1, 100000);
  if (has("timestep_scaling")) c.timestep_scaling = finite_number(at("timestep_scaling"), "timestep_scaling");
}

// Checks between keys, on the settings a scheduler would run with.
void check_consistent(const SchedulerConfig& c) {
  if (!c.trained_betas.empty() && static_cast<int64_t>(c.trained_betas.size()) != c.num_train_timesteps)
    throw ModelError("scheduler config: trained_betas has " + std::to_string(c.trained_betas.size()) +
                     " values but num_train_timesteps is " + std::to_string(c.num_train_timesteps));
  if (c.trained_betas.empty() && (c.beta_start < 0 || c.beta_start >= 1 || c.beta_end < 0 || c.beta_end >= 1))
    throw ModelError("scheduler config: beta_start and beta_end must be in [0, 1)");
}

// The keys apply_keys() reads: what a stored config keeps.
const std::vector<std::string>& known_keys() {
  static const std::vector<std::string> kKeys = {"num_train_timesteps",
                                                 "beta_start",
                                                 "beta_end",
                                                 "beta_schedule",
                                                 "trained_betas",
                                                 "prediction_type",
                                                 "timestep_spacing",
                                                 "steps_offset",
                                                 "set_alpha_to_one",
                                                 "skip_prk_steps",
                                                 "clip_sample",
                                                 "clip_sample_range",
                                                 "thresholding",
                                                 "interpolation_type",
                                                 "use_karras_sigmas",
                                                 "sigma_min",
                                                 "sigma_max",
                                                 "rescale_betas_zero_snr",
                                                 "timestep_type",
                                                 "solver_type",
                                                 "lower_order_final",
                                                 "euler_at_final",
                                                 "final_sigmas_type",
                                                 "lambda_min_clipped",
                                                 "use_lu_lambdas",
                                                 "solver_order",
                                                 "predict_x0",
                                                 "disable_corrector",
                                                 "original_inference_steps",
                                                 "timestep_scaling"};
  return kKeys;
}

// A key's value in `c` as JSON text, the way diffusers writes it into scheduler_config.json; "" for a key that
// is not a SchedulerConfig field (those are fixed by a sampler's name and shown from there).
std::string value_text(const SchedulerConfig& c, const std::string& key) {
  json v;
  if (key == "num_train_timesteps")
    v = c.num_train_timesteps;
  else if (key == "beta_start")
    v = c.beta_start;
  else if (key == "beta_end")
    v = c.beta_end;
  else if (key == "beta_schedule")
    v = c.beta_schedule;
  else if (key == "trained_betas")
    v = c.trained_betas.empty() ? json(nullptr) : json(c.trained_betas);
  else if (key == "prediction_type")
    v = c.prediction_type;
  else if (key == "timestep_spacing")
    v = c.timestep_spacing;
  else if (key == "steps_offset")
    v = c.steps_offset;
  else if (key == "set_alpha_to_one")
    v = c.set_alpha_to_one;
  else if (key == "skip_prk_steps")
    v = c.skip_prk_steps;
  else if (key == "clip_sample")
    v = c.clip_sample;
  else if (key == "clip_sample_range")
    v = c.clip_sample_range;
  else if (key == "thresholding")
    v = c.thresholding;
  else if (key == "interpolation_type")
    v = c.interpolation_type;
  else if (key == "use_karras_sigmas")
    v = c.use_karras_sigmas;
  else if (key == "sigma_min")
    v = c.sigma_min ? json(*c.sigma_min) : json(nullptr);
  else if (key == "sigma_max")
    v = c.sigma_max ? json(*c.sigma_max) : json(nullptr);
  else if (key == "rescale_betas_zero_snr")
    v = c.rescale_betas_zero_snr;
  else if (key == "timestep_type")
    v = c.timestep_type;
  else if (key == "solver_type")
    v = c.solver_type;
  else if (key == "lower_order_final")
    v = c.lower_order_final;
  else if (key == "euler_at_final")
    v = c.euler_at_final;
  else if (key == "final_sigmas_type")
    v = c.final_sigmas_type;
  else if (key == "lambda_min_clipped") {
    if (std::isinf(c.lambda_min_clipped))
      return c.lambda_min_clipped < 0 ? "-Infinity" : "Infinity";  // as Python writes
    v = c.lambda_min_clipped;
  } else if (key == "use_lu_lambdas")
    v = c.use_lu_lambdas;
  else if (key == "solver_order")
    v = c.solver_order;
  else if (key == "predict_x0")
    v = c.predict_x0;
  else if (key == "disable_corrector")
    v = c.disable_corrector;
  else if (key == "original_inference_steps")
    v = c.original_inference_steps;
  else if (key == "timestep_scaling")
    v = c.timestep_scaling;
  else
    return "";
  return v.dump();
}

// ---- the samplers' diffusers classes ----

// A (key, JSON value) list, applied with apply_keys() as a layer.
using KeyValues = std::vector<std::pair<const char*, const char*>>;

struct SamplerClass {
  const char* sampler;
  const char* diffusers_class;
  // The class's __init__ defaults where they differ from a default-constructed SchedulerConfig (PNDMScheduler's).
  KeyValues class_defaults;
  // The __init__ keys sdcpu reads or fixes, in __init__ order (sdcpu info lists them).
  std::vector<const char*> keys;
  // What the sampler's name fixes, as `from_config(config, key=value)` would: key and JSON value.
  KeyValues fixed_by_name;
};

const std::vector<SamplerClass>& sampler_classes() {
  static const std::vector<const char*> kEulerKeys = {"num_train_timesteps",
                                                      "beta_start",
                                                      "beta_end",
                                                      "beta_schedule",
                                                      "trained_betas",
                                                      "prediction_type",
                                                      "interpolation_type",
                                                      "use_karras_sigmas",
                                                      "sigma_min",
                                                      "sigma_max",
                                                      "timestep_spacing",
                                                      "timestep_type",
                                                      "steps_offset",
                                                      "rescale_betas_zero_snr"};
  // DPMSolverMultistepScheduler's, for its four samplers.
  static const std::vector<const char*> kDpmSolverKeys = {
      "num_train_timesteps", "beta_start",       "beta_end",          "beta_schedule",         "trained_betas",
      "solver_order",        "prediction_type",  "thresholding",      "algorithm_type",        "solver_type",
      "lower_order_final",   "euler_at_final",   "use_karras_sigmas", "use_lu_lambdas",        "final_sigmas_type",
      "lambda_min_clipped",  "timestep_spacing", "steps_offset",      "rescale_betas_zero_snr"};
  static const KeyValues kLinspace = {{"timestep_spacing", "\"linspace\""}};
  static const KeyValues kDpmpp2m = {{"solver_order", "2"}, {"algorithm_type", "\"dpmsolver++\""}};
  static const KeyValues kDpmpp2mSde = {{"solver_order", "2"}, {"algorithm_type", "\"sde-dpmsolver++\""}};
  static const KeyValues kKarras = {{"use_karras_sigmas", "true"}};
  auto with_karras = [](KeyValues kv) {
    kv.insert(kv.end(), kKarras.begin(), kKarras.end());
    return kv;
  };
  static const std::vector<SamplerClass> kClasses = {
      {"pndm",
       "PNDMScheduler",
       {},
       {"num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "skip_prk_steps",
        "set_alpha_to_one", "prediction_type", "timestep_spacing", "steps_offset"},
       {}},
      {"ddim",
       "DDIMScheduler",
       {{"set_alpha_to_one", "true"}},
       {"num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "clip_sample",
        "set_alpha_to_one", "steps_offset", "prediction_type", "thresholding", "clip_sample_range", "timestep_spacing",
        "rescale_betas_zero_snr"},
       {}},
      {"euler", "EulerDiscreteScheduler", kLinspace, kEulerKeys, {}},
      {"euler_karras", "EulerDiscreteScheduler", kLinspace, kEulerKeys, kKarras},
      {"euler_a",
       "EulerAncestralDiscreteScheduler",
       kLinspace,
       {"num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "prediction_type",
        "timestep_spacing", "steps_offset", "rescale_betas_zero_snr"},
       {}},
      {"lms",
       "LMSDiscreteScheduler",
       kLinspace,
       {"num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "use_karras_sigmas",
        "prediction_type", "timestep_spacing", "steps_offset"},
       {}},
      {"heun",
       "HeunDiscreteScheduler",
       {{"beta_start", "0.00085"},
        {"beta_end", "0.012"},
        {"clip_sample", "false"},
        {"timestep_spacing", "\"linspace\""}},
       {"num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "prediction_type",
        "use_karras_sigmas", "clip_sample", "clip_sample_range", "timestep_spacing", "steps_offset"},
       {}},
      {"dpmpp_2m", "DPMSolverMultistepScheduler", kLinspace, kDpmSolverKeys, kDpmpp2m},
      {"dpmpp_2m_karras", "DPMSolverMultistepScheduler", kLinspace, kDpmSolverKeys, with_karras(kDpmpp2m)},
      {"dpmpp_2m_sde", "DPMSolverMultistepScheduler", kLinspace, kDpmSolverKeys, kDpmpp2mSde},
      {"dpmpp_2m_sde_karras", "DPMSolverMultistepScheduler", kLinspace, kDpmSolverKeys, with_karras(kDpmpp2mSde)},
      {"unipc",
       "UniPCMultistepScheduler",
       {{"solver_type", "\"bh2\""}, {"timestep_spacing", "\"linspace\""}},
       {"num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "solver_order",
        "prediction_type", "thresholding", "predict_x0", "solver_type", "lower_order_final", "disable_corrector",
        "use_karras_sigmas", "timestep_spacing", "steps_offset"},
       {}},
      {"lcm",
       "LCMScheduler",
       {{"beta_start", "0.00085"},
        {"beta_end", "0.012"},
        {"beta_schedule", "\"scaled_linear\""},
        {"clip_sample", "false"},
        {"set_alpha_to_one", "true"}},
       {"num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "original_inference_steps",
        "clip_sample", "clip_sample_range", "set_alpha_to_one", "steps_offset", "prediction_type", "thresholding",
        "timestep_spacing", "timestep_scaling", "rescale_betas_zero_snr"},
       {}},
  };
  return kClasses;
}

// What a class's __init__ does to a solver_type it does not know: DPMSolverMultistepScheduler registers
// logrho/bh1/bh2 as midpoint, UniPCMultistepScheduler midpoint/heun/logrho as bh2.
void normalize_for_class(const SamplerClass& cls, SchedulerConfig& c) {
  const std::string name = cls.diffusers_class;
  if (name == "DPMSolverMultistepScheduler" && c.solver_type != "heun") c.solver_type = "midpoint";
  if (name == "UniPCMultistepScheduler" && c.solver_type != "bh1") c.solver_type = "bh2";
}

// A KeyValues list as the JSON object apply_keys() reads.
json key_values_object(const KeyValues& kv) {
  json o = json::object();
  for (const auto& [key, value] : kv) o[key] = json::parse(value);
  return o;
}

const SamplerClass& sampler_class(const std::string& sampler) {
  std::string list;
  for (const SamplerClass& c : sampler_classes()) {
    if (sampler == c.sampler) return c;
    list += std::string(list.empty() ? "" : ", ") + c.sampler;
  }
  throw InvalidArgument("unknown scheduler \"" + sampler + "\"; valid schedulers: " + list);
}

}  // namespace

const std::vector<std::string>& scheduler_names() {
  static const std::vector<std::string> kNames = [] {
    std::vector<std::string> names;
    for (const SamplerClass& c : sampler_classes()) names.push_back(c.sampler);
    return names;
  }();
  return kNames;
}

const char* setting_source_name(SettingSource source) {
  switch (source) {
    case SettingSource::file:
      return "file";
    case SettingSource::single_file_default:
      return "single-file default";
    case SettingSource::class_default:
      return "class default";
    case SettingSource::sampler:
      return "sampler";
    case SettingSource::option:
      return "option";
  }
  return "?";
}

StoredSchedulerConfig parse_scheduler_config(const std::string& json_text, SettingSource source) {
  json root;
  try {
    root = json::parse(quote_nonfinite_literals(json_text));
  } catch (const json::exception& e) {
    throw ModelError(std::string("scheduler config is not valid JSON: ") + e.what());
  }
  if (!root.is_object()) throw ModelError("scheduler config must be a JSON object");
  SchedulerConfig validated;  // every value checked now, so that resolving for a sampler cannot fail on one
  apply_keys(root, validated);
  check_consistent(validated);

  StoredSchedulerConfig stored;
  stored.source = source;
  if (auto it = root.find("_class_name"); it != root.end() && it->is_string())
    stored.class_name = it->get<std::string>();
  for (const std::string& key : known_keys())
    if (auto it = root.find(key); it != root.end() && !it->is_null()) stored.keys[key] = it->dump();
  return stored;
}

SchedulerConfig scheduler_class_defaults(const std::string& sampler) {
  const SamplerClass& cls = sampler_class(sampler);
  SchedulerConfig c;
  apply_keys(key_values_object(cls.class_defaults), c);
  return c;
}

ResolvedSchedulerConfig resolve_scheduler_config(const std::string& sampler, const StoredSchedulerConfig& stored,
                                                 const SchedulerOverrides& overrides) {
  const SamplerClass& cls = sampler_class(sampler);
  if (!overrides.timestep_spacing.empty()) {
    const auto& names = timestep_spacing_names();
    if (std::find(names.begin(), names.end(), overrides.timestep_spacing) == names.end())
      throw InvalidArgument("timestep spacing must be leading, linspace or trailing, got \"" +
                            overrides.timestep_spacing + "\"");
  }
  ResolvedSchedulerConfig r;
  r.sampler = cls.sampler;
  r.diffusers_class = cls.diffusers_class;
  r.config = scheduler_class_defaults(sampler);

  // Each layer is a JSON object applied over the one before, as from_config's init_dict is built.
  std::map<std::string, SettingSource> source_of;
  json from_file = json::object();
  for (const auto& [key, value] : stored.keys) {
    from_file[key] = json::parse(quote_nonfinite_literals(value));
    source_of[key] = stored.source;
  }
  json from_name = key_values_object(cls.fixed_by_name);
  for (const auto& [key, value] : cls.fixed_by_name) source_of[key] = SettingSource::sampler;
  json from_options = json::object();
  if (!overrides.timestep_spacing.empty()) {
    from_options["timestep_spacing"] = overrides.timestep_spacing;
    source_of["timestep_spacing"] = SettingSource::option;
  }
  for (const json* layer : {&from_file, &from_name, &from_options}) apply_keys(*layer, r.config);
  normalize_for_class(cls, r.config);
  check_consistent(r.config);

  for (const char* key : cls.keys) {
    auto it = source_of.find(key);
    const SettingSource source = it == source_of.end() ? SettingSource::class_default : it->second;
    std::string value = value_text(r.config, key);
    if (value.empty()) {  // not a field: fixed by the name
      for (const auto& [fixed_key, fixed_value] : cls.fixed_by_name)
        if (std::string(fixed_key) == key) value = fixed_value;
    }
    r.settings.push_back({key, value, source});
  }
  return r;
}

const std::vector<std::string>& timestep_spacing_names() {
  static const std::vector<std::string> kNames = {"leading", "linspace", "trailing"};
  return kNames;
}

}  // namespace sdcpu
