// HeunDiscreteScheduler (diffusers 0.27.2): Heun's method (the explicit trapezoidal rule) on the
// probability-flow ODE in sigma parameterization, Karras et al. 2022, "Elucidating the Design Space of
// Diffusion-Based Generative Models", Algorithm 1 (second order, no churn). Each step from sigma_i to
// sigma_(i+1) takes an Euler step, evaluates the model again at its end and averages the two derivatives, so
// every inner sigma appears twice: timesteps [t0, t1, t1, t2, t2, ...], sigmas [s0, s1, s1, s2, s2, ..., 0], one
// model evaluation and one step() call per entry. The last step, down to sigma = 0, stays first order.
#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/torch_rng.h"
#include "schedulers/noise_schedule.h"
#include "schedulers/scheduler_impl.h"

namespace sdcpu {
namespace {

class HeunScheduler final : public Scheduler {
 public:
  explicit HeunScheduler(const SchedulerConfig& config) : config_(config) {
    SchedulerConfig no_rescale = config;  // HeunDiscreteScheduler has no rescale_betas_zero_snr
    no_rescale.rescale_betas_zero_snr = false;
    sigma_table_ = noise::sigmas_from_alphas_cumprod(noise::make_alphas_cumprod(no_rescale, false));
    log_sigmas_ = noise::log_f32(sigma_table_);
    // __init__ calls set_timesteps(num_train_timesteps): init_noise_sigma before set_timesteps() comes from that
    // schedule.
    std::vector<double> unused;
    const std::vector<double> sigmas = schedule(config.num_train_timesteps, unused);
    init_sigma_max_ = static_cast<float>(*std::max_element(sigmas.begin(), sigmas.end()));
  }

  const std::string& name() const override {
    static const std::string kName = "heun";
    return kName;
  }

  // HeunDiscreteScheduler.set_timesteps
  void set_timesteps(int num_inference_steps) override {
    check_num_inference_steps(num_inference_steps, config_.num_train_timesteps);
    std::vector<double> ts;
    const std::vector<double> sigmas = schedule(num_inference_steps, ts);
    // np.concatenate([sigmas, [0.0]]).astype(np.float32), then every inner value repeated:
    // torch.cat([sigmas[:1], sigmas[1:-1].repeat_interleave(2), sigmas[-1:]]).
    const std::vector<float> once = noise::sigmas_with_final_zero(sigmas);
    sigmas_f32_.assign(1, once.front());
    for (size_t i = 1; i + 1 < once.size(); ++i) sigmas_f32_.insert(sigmas_f32_.end(), 2, once[i]);
    sigmas_f32_.push_back(once.back());
    // torch.cat([timesteps[:1], timesteps[1:].repeat_interleave(2)])
    timesteps_.assign(1, ts.front());
    for (size_t i = 1; i < ts.size(); ++i) timesteps_.insert(timesteps_.end(), 2, ts[i]);
    sigmas_.assign(sigmas_f32_.begin(), sigmas_f32_.end());
    prev_derivative_ = Tensor();
    first_sample_ = Tensor();
    in_first_order_ = true;
    reset_steps();
  }

  float init_noise_sigma() const override {
    const float max_sigma =
        sigmas_f32_.empty() ? init_sigma_max_ : *std::max_element(sigmas_f32_.begin(), sigmas_f32_.end());
    if (config_.timestep_spacing == "linspace" || config_.timestep_spacing == "trailing") return max_sigma;
    return std::sqrt(max_sigma * max_sigma + 1.0f);
  }

  Tensor scale_model_input(const Tensor& sample, int step_index) const override {
    check_step_index(step_index);
    return noise::scale_by_sigma(sample, sigmas_f32_[step_index]);
  }

  // HeunDiscreteScheduler.step: a first-order (Euler) step stores its derivative, dt and sample; the following
  // call (the model evaluated at the Euler step's end) completes it with the averaged derivative.
  Tensor step(const Tensor& model_output, int step_index, const Tensor& sample, TorchGenerator&) override {
    check_sequential_step(step_index);
    noise::check_same_shape(model_output, sample, "heun");
    float sigma, sigma_next;
    if (in_first_order_) {
      sigma = sigmas_f32_[step_index];
      sigma_next = sigmas_f32_[step_index + 1];
    } else {  // (check_sequential_step: the first half was step_index - 1)
      sigma = sigmas_f32_[step_index - 1];
      sigma_next = sigmas_f32_[step_index];
    }
    const float sigma_hat = sigma * (0.0f + 1.0f);  // gamma = 0
    // 1. predicted x0 (at sigma_hat in the first half, at sigma_next in the second)
    const float sigma_input = in_first_order_ ? sigma_hat : sigma_next;
    Tensor x0 = noise::sigma_pred_original_sample(config_.prediction_type, model_output, sample, sigma_input);
    if (config_.clip_sample) {
      const float range = static_cast<float>(config_.clip_sample_range);
      for (int64_t i = 0; i < x0.numel(); ++i) x0[i] = std::clamp(x0[i], -range, range);
    }
    const float* s = sample.data();
    const float* p = x0.data();
    Tensor out(sample.shape());
    float* o = out.data();
    if (in_first_order_) {
      // 2. derivative (x - x0) / sigma_hat; 3. dt = sigma_next - sigma_hat; keep them for the second half
      dt_ = sigma_next - sigma_hat;
      prev_derivative_ = Tensor(sample.shape());
      float* d = prev_derivative_.data();
      for (int64_t i = 0; i < sample.numel(); ++i) {
        d[i] = (s[i] - p[i]) / sigma_hat;
        o[i] = s[i] + d[i] * dt_;
      }
      first_sample_ = sample.clone();
      in_first_order_ = false;
    } else {
      // 2. Heun: the mean of the two derivatives, applied from the first half's sample with its dt
      const float* d_prev = prev_derivative_.data();
      const float* s0 = first_sample_.data();
      for (int64_t i = 0; i < sample.numel(); ++i) {
        const float derivative = (s[i] - p[i]) / sigma_next;
        const float mean = (d_prev[i] + derivative) / 2.0f;
        o[i] = s0[i] + mean * dt_;
      }
      prev_derivative_ = Tensor();
      first_sample_ = Tensor();
      in_first_order_ = true;
    }
    return out;
  }

 private:
  // The first half of HeunDiscreteScheduler.set_timesteps: the float64 sigmas of `n` steps and, in `timesteps`,
  // their (float32-valued, or with Karras sigmas fractional float64) timesteps, before the repetition.
  std::vector<double> schedule(int n, std::vector<double>& timesteps) const {
    const std::vector<float> ts =
        noise::sigma_timesteps(config_.timestep_spacing, config_.num_train_timesteps, n, config_.steps_offset);
    timesteps.assign(ts.begin(), ts.end());
    std::vector<double> sigmas(ts.size());
    for (size_t i = 0; i < ts.size(); ++i) sigmas[i] = noise::np_interp_index(ts[i], sigma_table_);
    if (config_.use_karras_sigmas) {
      // _convert_to_karras (copied from Euler's: sigma_min/sigma_max from the config when it has them)
      const double sigma_min = config_.sigma_min.value_or(sigmas.back());
      const double sigma_max = config_.sigma_max.value_or(sigmas.front());
      sigmas = noise::karras_sigmas(sigma_min, sigma_max, n);
      for (size_t i = 0; i < sigmas.size(); ++i) timesteps[i] = noise::sigma_to_t(sigmas[i], log_sigmas_);
    }
    return sigmas;
  }

  SchedulerConfig config_;
  std::vector<float> sigma_table_, log_sigmas_;  // per training timestep
  float init_sigma_max_ = 0.0f;                  // the largest sigma of __init__'s num_train_timesteps schedule
  std::vector<float> sigmas_f32_;                // scheduler.sigmas (float32), num_steps + 1
  // The first half's state (diffusers' prev_derivative, dt, sample; state_in_first_order is dt is None).
  bool in_first_order_ = true;
  Tensor prev_derivative_, first_sample_;
  float dt_ = 0.0f;
};

}  // namespace

std::unique_ptr<Scheduler> make_heun_scheduler(const SchedulerConfig& config) {
  return std::make_unique<HeunScheduler>(config);
}

}  // namespace sdcpu
