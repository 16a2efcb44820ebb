// The noise-schedule arithmetic the schedulers share, reproducing the dtypes diffusers 0.27.2 computes in:
//   * betas and alphas_cumprod are torch float32 tensors (torch.linspace, torch.cumprod),
//   * the sigma table sqrt((1 - alphas_cumprod) / alphas_cumprod) is float32 torch arithmetic,
//   * timestep grids and interpolation are numpy float64 (np.linspace, np.arange, np.interp, np.round),
//   * scheduler.sigmas is float32 again, and every step's tensor arithmetic is float32.
// Only the scheduler sources and their tests include this header.
#pragma once

// Each float32 product below must be rounded before it is added, as torch rounds every tensor op: no fused
// multiply-add contraction (GCC contracts across statements by default in C++ with -march=native).
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "schedulers/scheduler.h"

namespace sdcpu::noise {

// ---- torch float32 tables ----

// torch.linspace(start, end, steps, dtype=torch.float32) on the CPU as the PyTorch 1.13 wheels compute it
// (RangeFactoriesKernel.cpp linspace_kernel, AVX2 build): a float32 step, the first half counted up from
// start and the second half down from end with fused multiply-adds, in vector chunks of `vector_width`
// lanes (8: AVX2, 16: AVX-512) whose lanes are base + lane * step, the tail one element at a time. The
// goldens' sigma tables match this bit for bit (both widths give the same SD tables).
std::vector<float> torch_linspace_f32(double start, double end, int64_t steps, int vector_width = 8);

// The config's betas as diffusers' scheduler __init__ makes them: trained_betas, "linear"
// (torch.linspace(beta_start, beta_end)), "scaled_linear" (torch.linspace(sqrt(beta_start),
// sqrt(beta_end)) ** 2) or "squaredcos_cap_v2" (betas_for_alpha_bar: the Glide cosine schedule, Nichol &
// Dhariwal 2021, computed in float64 and stored as float32).
std::vector<float> make_betas(const SchedulerConfig& config);

// diffusers' rescale_zero_terminal_snr (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps
// are Flawed", Algorithm 1), in float32 torch arithmetic.
std::vector<float> rescale_zero_terminal_snr(const std::vector<float>& betas);

// torch.cumprod(1.0 - betas, dim=0): float32 factors, a float64 running product (PyTorch's CPU cumprod
// accumulates in acc_type<float> = double), each output rounded to float32.
std::vector<float> cumprod_alphas(const std::vector<float>& betas);

// The alphas_cumprod of a scheduler's __init__: make_betas, rescale_zero_terminal_snr when configured,
// cumprod_alphas. With `zero_snr_last_2m24` (Euler, Euler a, DPM-Solver) a rescaled schedule's last
// entry is set to 2**-24 so that the first sigma is finite, as those classes do.
std::vector<float> make_alphas_cumprod(const SchedulerConfig& config, bool zero_snr_last_2m24);

// ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5 in float32: sigma at each training timestep.
std::vector<float> sigmas_from_alphas_cumprod(const std::vector<float>& alphas_cumprod);

// np.log of a float32 value as numpy 1.24 computes it on x86-64 CPUs with AVX2 and FMA3 (or AVX512F): its own
// vectorized approximation, not the C library's logf (numpy uses that only on CPUs without them).
float numpy_logf(float x);
// np.log of a float32 array (float32 results), numpy_logf of each value.
std::vector<float> log_f32(const std::vector<float>& values);

// ---- numpy float64 helpers ----

// np.linspace(start, stop, num): start + i * ((stop - start) / (num - 1)), the last one exactly stop.
std::vector<double> np_linspace(double start, double stop, int64_t num);
// np.arange(start, stop, step) for a float step: ceil((stop - start) / step) values start + i * delta,
// delta = (start + step) - start (numpy's fill).
std::vector<double> np_arange(double start, double stop, double step);
// np.round: half to even.
double np_round(double x);
// np.interp(x, np.arange(len(fp)), fp).
double np_interp_index(double x, const std::vector<float>& fp);

// The timestep grid of DDIM and PNDM (DDIMScheduler.set_timesteps), descending integers:
// linspace: np.linspace(0, T - 1, N).round(); leading: arange(N) * (T // N) + steps_offset;
// trailing: np.round(np.arange(T, 0, -T / N)) - 1.
std::vector<int64_t> discrete_timesteps(const std::string& spacing, int num_train_timesteps, int num_inference_steps,
                                        int steps_offset);

// The timestep grid of Euler, Euler a and LMS (EulerDiscreteScheduler.set_timesteps), descending float32
// values: linspace: np.linspace(0, T - 1, N, dtype=float32) (fractional in general); leading and trailing as
// discrete_timesteps, cast to float32.
std::vector<float> sigma_timesteps(const std::string& spacing, int num_train_timesteps, int num_inference_steps,
                                   int steps_offset);

// Karras et al. 2022 ("Elucidating the Design Space of Diffusion-Based Generative Models", eq. 5) with
// rho = 7: (max^(1/rho) + ramp * (min^(1/rho) - max^(1/rho)))^rho for ramp = np.linspace(0, 1, n).
std::vector<double> karras_sigmas(double sigma_min, double sigma_max, int n);

// diffusers' _sigma_to_t: the (fractional) training timestep whose log-sigma interpolates linearly to
// log(sigma), from the float32 table log_sigmas (np.log of the sigma table), with numpy 1.x's dtypes: the
// interpolation weight is float32, the result float64.
double sigma_to_t(double sigma, const std::vector<float>& log_sigmas);

// The 21-point Gauss-Kronrod estimate of the integral of f over [a, b] (b < a allowed), summed in the
// order of QUADPACK's dqk21 (Piessens et al. 1983). scipy.integrate.quad returns this estimate when its
// error estimate is already small, as it is for polynomials of degree <= 31.
double gauss_kronrod_21(const std::function<double(double)>& f, double a, double b);

// ---- shared by the sigma-parameterized schedulers: Euler, Euler a and LMS ----

// The schedule's float32 sigmas followed by the final 0 diffusers appends (np.concatenate([sigmas, [0.0]])).
std::vector<float> sigmas_with_final_zero(const std::vector<double>& sigmas);

// init_noise_sigma: the largest sigma, or sqrt(max ** 2 + 1) for "leading" spacing. `sigmas` is the
// inference schedule, or the training table before set_timesteps() (as diffusers' __init__ sigmas).
float sigma_init_noise_sigma(const std::vector<float>& sigmas, const std::string& spacing);

// ---- float32 step arithmetic shared by Euler, Euler a and LMS ----

// sample / ((sigma ** 2 + 1) ** 0.5): the k-diffusion input scaling (EulerDiscreteScheduler.scale_model_input).
Tensor scale_by_sigma(const Tensor& sample, float sigma);

// The predicted x0 of the sigma-parameterized schedulers (EulerDiscreteScheduler.step and LMS):
//   epsilon:      sample - sigma * model_output
//   v_prediction: model_output * (-sigma / (sigma ** 2 + 1) ** 0.5) + sample / (sigma ** 2 + 1)
//   sample:       model_output
Tensor sigma_pred_original_sample(const std::string& prediction_type, const Tensor& model_output, const Tensor& sample,
                                  float sigma);

// Throws InvalidArgument unless the two tensors have the same shape.
void check_same_shape(const Tensor& a, const Tensor& b, const char* what);

}  // namespace sdcpu::noise
