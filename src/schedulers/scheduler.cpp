#include "schedulers/scheduler.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "schedulers/scheduler_impl.h"

namespace sdcpu {
namespace {

using nlohmann::json;

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

}  // namespace

SchedulerConfig SchedulerConfig::diffusers_defaults() {
  SchedulerConfig c;
  c.class_name.clear();
  c.beta_start = 0.0001;
  c.beta_end = 0.02;
  c.beta_schedule = "linear";
  c.timestep_spacing.reset();
  c.steps_offset = 0;
  c.set_alpha_to_one.reset();
  c.skip_prk_steps = false;
  return c;
}

SchedulerConfig parse_scheduler_config(const std::string& json_text) {
  json root;
  try {
    root = json::parse(quote_nonfinite_literals(json_text));
  } catch (const json::exception& e) {
    throw ModelError(std::string("scheduler config is not valid JSON: ") + e.what());
  }
  if (!root.is_object()) throw ModelError("scheduler config must be a JSON object");

  SchedulerConfig c = SchedulerConfig::diffusers_defaults();
  auto has = [&](const char* key) {
    auto it = root.find(key);
    return it != root.end() && !it->is_null();  // null means "not set" (e.g. trained_betas: null)
  };
  if (has("_class_name") && root["_class_name"].is_string()) c.class_name = root["_class_name"].get<std::string>();
  if (has("num_train_timesteps"))
    c.num_train_timesteps = integer(root["num_train_timesteps"], "num_train_timesteps", 2, 100000);
  if (has("beta_start")) c.beta_start = finite_number(root["beta_start"], "beta_start");
  if (has("beta_end")) c.beta_end = finite_number(root["beta_end"], "beta_end");
  if (has("beta_schedule"))
    c.beta_schedule = choice(root["beta_schedule"], "beta_schedule", {"linear", "scaled_linear", "squaredcos_cap_v2"});
  if (has("trained_betas")) {
    const json& tb = root["trained_betas"];
    if (!tb.is_array()) bad("trained_betas", "must be an array of numbers or null");
    for (const json& b : tb) {
      const double v = finite_number(b, "trained_betas");
      if (v < 0 || v >= 1) bad("trained_betas", "values must be in [0, 1)");
      c.trained_betas.push_back(v);
    }
  }
  if (has("prediction_type"))
    c.prediction_type = choice(root["prediction_type"], "prediction_type", {"epsilon", "v_prediction", "sample"});
  if (has("timestep_spacing"))
    c.timestep_spacing = choice(root["timestep_spacing"], "timestep_spacing", {"leading", "linspace", "trailing"});
  if (has("steps_offset")) c.steps_offset = integer(root["steps_offset"], "steps_offset", 0, 100000);
  if (has("set_alpha_to_one")) c.set_alpha_to_one = boolean(root["set_alpha_to_one"], "set_alpha_to_one");
  if (has("skip_prk_steps")) c.skip_prk_steps = boolean(root["skip_prk_steps"], "skip_prk_steps");
  if (has("clip_sample")) c.clip_sample = boolean(root["clip_sample"], "clip_sample");
  if (has("clip_sample_range")) {
    c.clip_sample_range = finite_number(root["clip_sample_range"], "clip_sample_range");
    if (c.clip_sample_range <= 0) bad("clip_sample_range", "must be positive");
  }
  if (has("thresholding")) c.thresholding = boolean(root["thresholding"], "thresholding");
  if (has("use_karras_sigmas")) c.use_karras_sigmas = boolean(root["use_karras_sigmas"], "use_karras_sigmas");
  for (const char* key : {"sigma_min", "sigma_max"}) {
    if (!has(key)) continue;
    const double v = finite_number(root[key], key);
    if (v <= 0) bad(key, "must be positive");
    (std::string(key) == "sigma_min" ? c.sigma_min : c.sigma_max) = v;
  }
  if (has("rescale_betas_zero_snr"))
    c.rescale_betas_zero_snr = boolean(root["rescale_betas_zero_snr"], "rescale_betas_zero_snr");
  if (has("interpolation_type")) choice(root["interpolation_type"], "interpolation_type", {"linear"});
  if (has("timestep_type"))
    c.timestep_type = choice(root["timestep_type"], "timestep_type", {"discrete", "continuous"});
  if (has("solver_type")) {
    c.solver_type = choice(root["solver_type"], "solver_type", {"midpoint", "heun", "logrho", "bh1", "bh2"});
    // DPMSolverMultistepScheduler.__init__ maps the other solvers' names to midpoint.
    if (c.solver_type != "heun") c.solver_type = "midpoint";
  }
  if (has("lower_order_final")) c.lower_order_final = boolean(root["lower_order_final"], "lower_order_final");
  if (has("euler_at_final")) c.euler_at_final = boolean(root["euler_at_final"], "euler_at_final");
  if (has("final_sigmas_type"))
    c.final_sigmas_type = choice(root["final_sigmas_type"], "final_sigmas_type", {"zero", "sigma_min"});
  if (has("lambda_min_clipped")) {
    c.lambda_min_clipped = number(root["lambda_min_clipped"], "lambda_min_clipped");
    if (std::isnan(c.lambda_min_clipped)) bad("lambda_min_clipped", "must not be NaN");
  }
  if (has("use_lu_lambdas")) c.use_lu_lambdas = boolean(root["use_lu_lambdas"], "use_lu_lambdas");

  if (!c.trained_betas.empty() && static_cast<int64_t>(c.trained_betas.size()) != c.num_train_timesteps)
    throw ModelError("scheduler config: trained_betas has " + std::to_string(c.trained_betas.size()) +
                     " values but num_train_timesteps is " + std::to_string(c.num_train_timesteps));
  if (c.trained_betas.empty() && (c.beta_start < 0 || c.beta_start >= 1 || c.beta_end < 0 || c.beta_end >= 1))
    throw ModelError("scheduler config: beta_start and beta_end must be in [0, 1)");
  return c;
}

void Scheduler::check_num_inference_steps(int num_inference_steps, int num_train_timesteps) {
  if (num_inference_steps < 1 || num_inference_steps > num_train_timesteps)
    throw InvalidArgument("number of inference steps must be between 1 and " + std::to_string(num_train_timesteps) +
                          " (the model's training timesteps), got " + std::to_string(num_inference_steps));
}

void Scheduler::check_step_index(int step_index) const {
  if (timesteps_.empty()) throw InvalidArgument(name() + " scheduler: set_timesteps() must be called before use");
  if (step_index < 0 || step_index >= num_steps())
    throw InvalidArgument(name() + " scheduler: step index " + std::to_string(step_index) + " is outside [0, " +
                          std::to_string(num_steps()) + ")");
}

void Scheduler::check_sequential_step(int step_index) {
  check_step_index(step_index);
  if (next_step_ >= 0 && step_index != next_step_)
    throw InvalidArgument(name() + " scheduler: steps must be taken in order: expected step " +
                          std::to_string(next_step_) + ", got " + std::to_string(step_index) +
                          " (call set_timesteps() to start over)");
  next_step_ = step_index + 1;
}

Tensor Scheduler::scale_model_input(const Tensor& sample, int step_index) const {
  check_step_index(step_index);
  return sample;
}

const std::vector<std::string>& scheduler_names() {
  static const std::vector<std::string> kNames = {"pndm", "ddim",     "euler",          "euler_a",
                                                  "lms",  "dpmpp_2m", "dpmpp_2m_karras"};
  return kNames;
}

std::unique_ptr<Scheduler> make_scheduler(const std::string& name, const SchedulerConfig& config) {
  if (name == "pndm") return make_pndm_scheduler(config);
  if (name == "ddim") return make_ddim_scheduler(config);
  if (name == "euler") return make_euler_scheduler(config);
  if (name == "euler_a") return make_euler_ancestral_scheduler(config);
  if (name == "lms") return make_lms_scheduler(config);
  if (name == "dpmpp_2m" || name == "dpmpp_2m_karras") {
    SchedulerConfig c = config;
    c.use_karras_sigmas = name == "dpmpp_2m_karras";
    return make_dpm_solver_multistep_scheduler(c, name);
  }
  std::string list;
  for (const std::string& n : scheduler_names()) list += (list.empty() ? "" : ", ") + n;
  throw InvalidArgument("unknown scheduler \"" + name + "\"; valid schedulers: " + list);
}

}  // namespace sdcpu
