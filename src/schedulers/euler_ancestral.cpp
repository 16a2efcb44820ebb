// EulerAncestralDiscreteScheduler (diffusers 0.27.2): the ancestral Euler sampler of k-diffusion
// (sample_euler_ancestral, eta = 1): an Euler step down to sigma_down, then fresh noise of size sigma_up,
// where sigma_down^2 + sigma_up^2 = sigma_next^2 (the DDPM ancestral split, Ho et al. 2020, in Karras et
// al. 2022's sigma parameterization). The noise comes from the generator that made the initial latents.
#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/torch_rng.h"
#include "schedulers/noise_schedule.h"
#include "schedulers/scheduler_impl.h"

namespace sdcpu {
namespace {

class EulerAncestralScheduler final : public Scheduler {
 public:
  explicit EulerAncestralScheduler(const SchedulerConfig& config) : config_(config) {
    if (config.prediction_type == "sample")
      throw ModelError("euler_a: prediction_type \"sample\" is not supported (diffusers: not implemented)");
    sigma_table_ = noise::sigmas_from_alphas_cumprod(noise::make_alphas_cumprod(config, /*zero_snr_last_2m24=*/true));
  }

  const std::string& name() const override {
    static const std::string kName = "euler_a";
    return kName;
  }

  // EulerAncestralDiscreteScheduler.set_timesteps
  void set_timesteps(int num_inference_steps) override {
    const int T = config_.num_train_timesteps;
    check_num_inference_steps(num_inference_steps, T);
    const std::vector<float> ts =
        noise::sigma_timesteps(config_.timestep_spacing, T, num_inference_steps, config_.steps_offset);
    std::vector<double> sigmas(ts.size());
    for (size_t i = 0; i < ts.size(); ++i) sigmas[i] = noise::np_interp_index(ts[i], sigma_table_);
    sigmas_f32_ = noise::sigmas_with_final_zero(sigmas);
    timesteps_.assign(ts.begin(), ts.end());
    sigmas_.assign(sigmas_f32_.begin(), sigmas_f32_.end());
    reset_steps();
  }

  float init_noise_sigma() const override {
    // (before set_timesteps(): the training table's, as diffusers' __init__ sigmas)
    return noise::sigma_init_noise_sigma(sigmas_f32_.empty() ? sigma_table_ : sigmas_f32_, config_.timestep_spacing);
  }

  Tensor scale_model_input(const Tensor& sample, int step_index) const override {
    check_step_index(step_index);
    return noise::scale_by_sigma(sample, sigmas_f32_[step_index]);
  }

  // EulerAncestralDiscreteScheduler.step
  Tensor step(const Tensor& model_output, int step_index, const Tensor& sample, TorchGenerator& generator) override {
    check_step_index(step_index);
    noise::check_same_shape(model_output, sample, "euler_a");
    const float sigma = sigmas_f32_[step_index];
    // 1. predicted x0
    const Tensor x0 = noise::sigma_pred_original_sample(config_.prediction_type, model_output, sample, sigma);
    // The ancestral split of the step from sigma_from to sigma_to.
    const float sigma_from = sigma, sigma_to = sigmas_f32_[step_index + 1];
    const float sigma_to2 = sigma_to * sigma_to, sigma_from2 = sigma_from * sigma_from;
    const float sigma_up = std::sqrt(sigma_to2 * (sigma_from2 - sigma_to2) / sigma_from2);
    const float sigma_down = std::sqrt(sigma_to2 - sigma_up * sigma_up);
    // 2. Euler step to sigma_down
    const float dt = sigma_down - sigma;
    // then noise * sigma_up, drawn from the pipeline's generator
    const Tensor noise_t = generator.randn(model_output.shape());
    const float* s = sample.data();
    const float* p = x0.data();
    const float* z = noise_t.data();
    Tensor out(sample.shape());
    float* o = out.data();
    for (int64_t i = 0; i < sample.numel(); ++i) {
      const float derivative = (s[i] - p[i]) / sigma;
      const float euler = s[i] + derivative * dt;
      o[i] = euler + z[i] * sigma_up;
    }
    return out;
  }

 private:
  SchedulerConfig config_;
  std::vector<float> sigma_table_;
  std::vector<float> sigmas_f32_;
};

}  // namespace

std::unique_ptr<Scheduler> make_euler_ancestral_scheduler(const SchedulerConfig& config) {
  return std::make_unique<EulerAncestralScheduler>(config);
}

}  // namespace sdcpu
