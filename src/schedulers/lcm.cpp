// LCMScheduler (diffusers 0.27.2): multistep consistency sampling, Luo et al. 2023, "Latent Consistency Models:
// Synthesizing High-Resolution Images with Few-Step Inference", Algorithm 3. Each step maps the sample to its
// denoised estimate with the consistency-model parameterization c_skip(t) x + c_out(t) x0 (Song et al. 2023,
// with sigma_data = 0.5 and t scaled by timestep_scaling), then, except at the last step, noises it again to
// the next timestep with fresh noise from the pipeline's generator. The timesteps are a subset of the
// `original_inference_steps`-step schedule the model was distilled on: k - 1, 2k - 1, ..., T - 1 with
// k = T // original_inference_steps, taken evenly by index from the top.
//
// This is the scheduler only: an LCM-distilled UNet's guidance embedding (time_cond_proj_dim) is not part of it,
// so with an ordinary UNet it gives what diffusers' StableDiffusionPipeline gives with LCMScheduler.
#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/torch_rng.h"
#include "schedulers/noise_schedule.h"
#include "schedulers/scheduler_impl.h"

namespace sdcpu {
namespace {

class LcmScheduler final : public Scheduler {
 public:
  explicit LcmScheduler(const SchedulerConfig& config) : config_(config) {
    if (config.thresholding) throw ModelError("lcm: dynamic thresholding is not supported");
    // (rescale_betas_zero_snr without Euler's 2**-24 floor: LCMScheduler's __init__ has none)
    alphas_cumprod_ = noise::make_alphas_cumprod(config, /*zero_snr_last_2m24=*/false);
    final_alpha_cumprod_ = config.set_alpha_to_one ? 1.0f : alphas_cumprod_[0];
  }

  const std::string& name() const override {
    static const std::string kName = "lcm";
    return kName;
  }

  // LCMScheduler.set_timesteps(num_inference_steps) with strength 1.
  void set_timesteps(int num_inference_steps) override {
    const int T = config_.num_train_timesteps;
    check_num_inference_steps(num_inference_steps, T);
    const int original_steps = config_.original_inference_steps;
    if (original_steps > T)
      throw ModelError("lcm: original_inference_steps (" + std::to_string(original_steps) +
                       ") cannot be larger than num_train_timesteps (" + std::to_string(T) + ")");
    if (num_inference_steps > original_steps)
      throw InvalidArgument("steps must be at most " + std::to_string(original_steps) +
                            " for lcm (the scheduler config's original_inference_steps), got " +
                            std::to_string(num_inference_steps));
    const int64_t k = T / original_steps;
    // lcm_origin_timesteps = np.asarray(range(1, original_steps + 1)) * k - 1, reversed
    std::vector<int64_t> origin(original_steps);
    for (int64_t i = 0; i < original_steps; ++i) origin[i] = (original_steps - i) * k - 1;
    // inference_indices = np.floor(np.linspace(0, len, num=N, endpoint=False)): i * (len / N), floored
    const double step = static_cast<double>(original_steps) / static_cast<double>(num_inference_steps);
    timesteps_.resize(num_inference_steps);
    for (int i = 0; i < num_inference_steps; ++i) {
      const auto index = static_cast<int64_t>(std::floor(static_cast<double>(i) * step + 0.0));
      timesteps_[i] = static_cast<double>(origin[index]);
    }
    sigmas_.clear();
    reset_steps();
  }

  float init_noise_sigma() const override { return 1.0f; }

  // LCMScheduler.step
  Tensor step(const Tensor& model_output, int step_index, const Tensor& sample, TorchGenerator& generator) override {
    check_step_index(step_index);
    noise::check_same_shape(model_output, sample, "lcm");
    const auto t = static_cast<int64_t>(timesteps_[step_index]);
    const bool last = step_index == num_steps() - 1;
    const int64_t prev_t = last ? t : static_cast<int64_t>(timesteps_[step_index + 1]);
    // 1. alphas and betas
    const float alpha_prod_t = alphas_cumprod_[t];
    const float alpha_prod_t_prev = prev_t >= 0 ? alphas_cumprod_[prev_t] : final_alpha_cumprod_;
    const float beta_prod_t = 1.0f - alpha_prod_t;
    const float beta_prod_t_prev = 1.0f - alpha_prod_t_prev;
    // 2. get_scalings_for_boundary_condition_discrete (sigma_data = 0.5). torch evaluates
    // `sigma_data ** 2 / x` as x.reciprocal() * sigma_data ** 2.
    const float scaled_t = static_cast<float>(t) * static_cast<float>(config_.timestep_scaling);
    const float denom = scaled_t * scaled_t + 0.25f;
    const float c_skip = (1.0f / denom) * 0.25f;
    const float c_out = scaled_t / std::sqrt(denom);
    // 3. predicted x0
    const float sqrt_alpha = std::sqrt(alpha_prod_t), sqrt_beta = std::sqrt(beta_prod_t);
    const std::string& pred = config_.prediction_type;
    const float* m = model_output.data();
    const float* s = sample.data();
    const int64_t n = sample.numel();
    Tensor out(sample.shape());
    float* o = out.data();
    const float range = static_cast<float>(config_.clip_sample_range);
    for (int64_t i = 0; i < n; ++i) {
      float x0;
      if (pred == "epsilon") {
        x0 = (s[i] - sqrt_beta * m[i]) / sqrt_alpha;
      } else if (pred == "sample") {
        x0 = m[i];
      } else {  // v_prediction
        x0 = sqrt_alpha * s[i] - sqrt_beta * m[i];
      }
      if (config_.clip_sample) x0 = std::clamp(x0, -range, range);
      // 4. denoised = c_out * x0 + c_skip * sample
      const float a = c_out * x0;
      const float b = c_skip * s[i];
      o[i] = a + b;
    }
    if (last) return out;  // the denoised sample itself
    // 5. noise it to the next timestep: randn_tensor(model_output.shape, generator)
    const Tensor noise_t = generator.randn(model_output.shape());
    const float sqrt_alpha_prev = std::sqrt(alpha_prod_t_prev), sqrt_beta_prev = std::sqrt(beta_prod_t_prev);
    const float* z = noise_t.data();
    for (int64_t i = 0; i < n; ++i) {
      const float a = sqrt_alpha_prev * o[i];
      const float b = sqrt_beta_prev * z[i];
      o[i] = a + b;
    }
    return out;
  }

 private:
  SchedulerConfig config_;
  std::vector<float> alphas_cumprod_;
  float final_alpha_cumprod_ = 1.0f;
};

}  // namespace

std::unique_ptr<Scheduler> make_lcm_scheduler(const SchedulerConfig& config) {
  return std::make_unique<LcmScheduler>(config);
}

}  // namespace sdcpu
