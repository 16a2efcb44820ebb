// LMSDiscreteScheduler (diffusers 0.27.2): the linear multistep sampler of k-diffusion (sample_lms,
// Karras et al. 2022's sigma parameterization): x_next = x + sum_j c_j d_(i-j), where c_j integrates the
// Lagrange basis polynomial through the last `order` sigmas over [sigma_i, sigma_(i+1)] (an Adams-Bashforth
// method with variable steps). diffusers integrates with scipy.integrate.quad; its first 21-point
// Gauss-Kronrod rule is exact for these polynomials (degree <= 3) and is what quad returns, so we apply
// the same rule to the same float32-evaluated integrand.
#include <algorithm>
#include <cmath>
#include <deque>

#include "core/error.h"
#include "core/torch_rng.h"
#include "schedulers/noise_schedule.h"
#include "schedulers/scheduler_impl.h"

namespace sdcpu {
namespace {

constexpr int kLmsOrder = 4;  // LMSDiscreteScheduler.step(order=4)

class LmsScheduler final : public Scheduler {
 public:
  explicit LmsScheduler(const SchedulerConfig& config) : config_(config) {
    SchedulerConfig no_rescale = config;  // LMSDiscreteScheduler has no rescale_betas_zero_snr
    no_rescale.rescale_betas_zero_snr = false;
    sigma_table_ = noise::sigmas_from_alphas_cumprod(noise::make_alphas_cumprod(no_rescale, false));
    log_sigmas_ = noise::log_f32(sigma_table_);
  }

  const std::string& name() const override {
    static const std::string kName = "lms";
    return kName;
  }

  // LMSDiscreteScheduler.set_timesteps
  void set_timesteps(int num_inference_steps) override {
    const int T = config_.num_train_timesteps;
    check_num_inference_steps(num_inference_steps, T);
    const std::vector<float> ts =
        noise::sigma_timesteps(config_.timestep_spacing, T, num_inference_steps, config_.steps_offset);
    std::vector<double> sigmas(ts.size()), timesteps(ts.begin(), ts.end());
    for (size_t i = 0; i < ts.size(); ++i) sigmas[i] = noise::np_interp_index(ts[i], sigma_table_);
    if (config_.use_karras_sigmas) {
      // LMS's _convert_to_karras ignores sigma_min/sigma_max; its timesteps stay float64.
      sigmas = noise::karras_sigmas(sigmas.back(), sigmas.front(), num_inference_steps);
      for (size_t i = 0; i < sigmas.size(); ++i) timesteps[i] = noise::sigma_to_t(sigmas[i], log_sigmas_);
    }
    sigmas_f32_ = noise::sigmas_with_final_zero(sigmas);
    timesteps_ = timesteps;
    sigmas_.assign(sigmas_f32_.begin(), sigmas_f32_.end());
    derivatives_.clear();
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

  // LMSDiscreteScheduler.step(order=4)
  Tensor step(const Tensor& model_output, int step_index, const Tensor& sample, TorchGenerator&) override {
    check_sequential_step(step_index);
    noise::check_same_shape(model_output, sample, "lms");
    const float sigma = sigmas_f32_[step_index];
    // 1. predicted x0, 2. ODE derivative (x - x0) / sigma
    const Tensor x0 = noise::sigma_pred_original_sample(config_.prediction_type, model_output, sample, sigma);
    Tensor derivative(sample.shape());
    {
      const float* s = sample.data();
      const float* p = x0.data();
      float* d = derivative.data();
      for (int64_t i = 0; i < sample.numel(); ++i) d[i] = (s[i] - p[i]) / sigma;
    }
    derivatives_.push_back(derivative);
    if (derivatives_.size() > kLmsOrder) derivatives_.pop_front();

    // 3. the linear multistep coefficients; order min(step_index + 1, 4) as diffusers (which also zips the
    // coefficients with however many derivatives it has)
    const int order = std::min(step_index + 1, kLmsOrder);
    std::vector<double> coeffs(order);
    for (int k = 0; k < order; ++k) coeffs[k] = lms_coefficient(order, step_index, k);

    // 4. x + sum(coeff * derivative), newest derivative first, summed left to right from 0
    const int terms = std::min<int>(order, static_cast<int>(derivatives_.size()));
    Tensor sum = Tensor::zeros(sample.shape());
    float* acc = sum.data();
    for (int k = 0; k < terms; ++k) {
      const float c = static_cast<float>(coeffs[k]);
      const float* d = derivatives_[derivatives_.size() - 1 - k].data();
      for (int64_t i = 0; i < sample.numel(); ++i) {
        const float term = c * d[i];
        acc[i] = acc[i] + term;
      }
    }
    const float* s = sample.data();
    Tensor out(sample.shape());
    float* o = out.data();
    for (int64_t i = 0; i < sample.numel(); ++i) o[i] = s[i] + acc[i];
    return out;
  }

 private:
  // LMSDiscreteScheduler.get_lms_coefficient: integral over [sigma_t, sigma_(t+1)] of the Lagrange basis
  // polynomial of node `current_order` through sigmas t, t-1, ..., t-order+1. The integrand is evaluated
  // as diffusers does, in float32 torch arithmetic on the float32 sigmas (tau rounded to float32).
  double lms_coefficient(int order, int t, int current_order) const {
    const std::vector<float>& sig = sigmas_f32_;
    auto lms_derivative = [&](double tau) -> double {
      bool any = false;
      float prod = 1.0f;
      const float tau_f = static_cast<float>(tau);
      for (int k = 0; k < order; ++k) {
        if (current_order == k) continue;
        const float num = tau_f - sig[t - k];
        const float den = sig[t - current_order] - sig[t - k];
        const float factor = num / den;
        prod = any ? prod * factor : factor;
        any = true;
      }
      return any ? static_cast<double>(prod) : 1.0;
    };
    return noise::gauss_kronrod_21(lms_derivative, sig[t], sig[t + 1]);
  }

  SchedulerConfig config_;
  std::vector<float> sigma_table_, log_sigmas_;
  std::vector<float> sigmas_f32_;
  std::deque<Tensor> derivatives_;
};

}  // namespace

std::unique_ptr<Scheduler> make_lms_scheduler(const SchedulerConfig& config) {
  return std::make_unique<LmsScheduler>(config);
}

}  // namespace sdcpu
