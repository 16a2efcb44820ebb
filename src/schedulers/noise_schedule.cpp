#include "schedulers/noise_schedule.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/error.h"

namespace sdcpu::noise {

std::vector<float> torch_linspace_f32(double start_d, double end_d, int64_t steps, int vector_width) {
  std::vector<float> out(static_cast<size_t>(std::max<int64_t>(steps, 0)));
  if (steps <= 0) return out;
  const float start = static_cast<float>(start_d), end = static_cast<float>(end_d);
  if (steps == 1) {  // linspace_out fills the single element with start
    out[0] = start;
    return out;
  }
  const float step = (end - start) / static_cast<float>(steps - 1);
  const int64_t halfway = steps / 2;
  // PyTorch's CPU kernels are built with -mfma and GCC's default -ffp-contract=fast, so `start + step * idx`
  // is one fused multiply-add. (Without the fusion the sigma table is off by an ulp at many timesteps.)
  auto scalar = [&](int64_t idx) {
    return idx < halfway ? std::fma(step, static_cast<float>(idx), start)
                         : std::fma(-step, static_cast<float>(steps - idx - 1), end);
  };
  // cpu_serial_kernel_vec: pairs of vectors while 2 * width elements remain, then the scalar tail.
  const int64_t w = vector_width > 1 ? vector_width : 1;
  int64_t i = 0;
  if (w > 1) {
    for (; i + 2 * w <= steps; i += 2 * w) {
      for (int64_t idx = i; idx < i + 2 * w; idx += w) {
        const float base = scalar(idx);  // Vectorized<float>::arange(base, step): base + lane * step
        out[idx] = base;
        for (int64_t lane = 1; lane < w; ++lane) out[idx + lane] = std::fma(static_cast<float>(lane), step, base);
      }
    }
  }
  for (; i < steps; ++i) out[i] = scalar(i);
  return out;
}

std::vector<float> make_betas(const SchedulerConfig& config) {
  const int n = config.num_train_timesteps;
  if (!config.trained_betas.empty()) {
    std::vector<float> betas(config.trained_betas.size());
    for (size_t i = 0; i < betas.size(); ++i) betas[i] = static_cast<float>(config.trained_betas[i]);
    return betas;
  }
  if (config.beta_schedule == "linear") return torch_linspace_f32(config.beta_start, config.beta_end, n);
  if (config.beta_schedule == "scaled_linear") {
    // "this schedule is very specific to the latent diffusion model": linear in sqrt(beta), then squared
    // (torch's ** 2 is x * x).
    std::vector<float> betas = torch_linspace_f32(std::pow(config.beta_start, 0.5), std::pow(config.beta_end, 0.5), n);
    for (float& b : betas) b = b * b;
    return betas;
  }
  if (config.beta_schedule == "squaredcos_cap_v2") {
    // betas_for_alpha_bar(n, max_beta=0.999, alpha_transform_type="cosine"), in Python floats.
    constexpr double kPi = 3.141592653589793;
    auto alpha_bar = [](double t) {
      const double c = std::cos((t + 0.008) / 1.008 * kPi / 2);
      return c * c;
    };
    std::vector<float> betas(n);
    for (int i = 0; i < n; ++i) {
      const double t1 = static_cast<double>(i) / n, t2 = static_cast<double>(i + 1) / n;
      betas[i] = static_cast<float>(std::min(1 - alpha_bar(t2) / alpha_bar(t1), 0.999));
    }
    return betas;
  }
  throw ModelError("unsupported beta_schedule \"" + config.beta_schedule + "\"");
}

std::vector<float> cumprod_alphas(const std::vector<float>& betas) {
  std::vector<float> out(betas.size());
  double product = 1.0;
  for (size_t i = 0; i < betas.size(); ++i) {
    const float alpha = 1.0f - betas[i];
    product *= alpha;
    out[i] = static_cast<float>(product);
  }
  return out;
}

std::vector<float> rescale_zero_terminal_snr(const std::vector<float>& betas) {
  if (betas.empty()) return {};
  std::vector<float> s = cumprod_alphas(betas);
  for (float& v : s) v = std::sqrt(v);
  const float s0 = s.front(), s_last = s.back();
  for (float& v : s) v = v - s_last;  // shift so the last timestep has zero SNR
  const float scale = s0 / (s0 - s_last);
  for (float& v : s) v = v * scale;  // scale so the first timestep keeps its value
  std::vector<float> alphas_bar(s.size());
  for (size_t i = 0; i < s.size(); ++i) alphas_bar[i] = s[i] * s[i];
  std::vector<float> out(s.size());
  out[0] = 1.0f - alphas_bar[0];
  for (size_t i = 1; i < s.size(); ++i) out[i] = 1.0f - alphas_bar[i] / alphas_bar[i - 1];
  return out;
}

std::vector<float> make_alphas_cumprod(const SchedulerConfig& config, bool zero_snr_last_2m24) {
  std::vector<float> betas = make_betas(config);
  if (config.rescale_betas_zero_snr) betas = rescale_zero_terminal_snr(betas);
  std::vector<float> ac = cumprod_alphas(betas);
  // "Close to 0 without being 0 so first sigma is not inf" (the smallest fp16 subnormal).
  if (config.rescale_betas_zero_snr && zero_snr_last_2m24 && !ac.empty()) ac.back() = std::ldexp(1.0f, -24);
  return ac;
}

std::vector<float> sigmas_from_alphas_cumprod(const std::vector<float>& alphas_cumprod) {
  std::vector<float> out(alphas_cumprod.size());
  for (size_t i = 0; i < out.size(); ++i) {
    const float a = alphas_cumprod[i];
    const float ratio = (1.0f - a) / a;
    out[i] = std::sqrt(ratio);
  }
  return out;
}

float numpy_logf(float x) {
  // numpy 1.24's simd_log_FLOAT (umath/loops_exponent_log.dispatch.c.src, the AVX2+FMA3 and AVX512F loops, which
  // compute the same): log(x) = log(m) + e ln 2 with m in (sqrt(1/2), sqrt(2)] and log(m) = P(m - 1) / Q(m - 1),
  // degree-5 minimax polynomials evaluated with fused multiply-adds. Up to 3.8 ulp from the exact logarithm:
  // std::log differs from it in about one table entry in five.
  if (std::isnan(x)) return x;
  if (x < 0.0f) return -std::numeric_limits<float>::quiet_NaN();
  if (x == 0.0f) return -std::numeric_limits<float>::infinity();
  if (std::isinf(x)) return x;
  constexpr float kP[6] = {0.000000000000000000000e+00f, 9.999999999999998702752e-01f, 2.112677543073053063722e+00f,
                           1.480000633576506585156e+00f, 3.808837741388407920751e-01f, 2.589979117907922693523e-02f};
  constexpr float kQ[6] = {1.000000000000000000000e+00f, 2.612677543073109236779e+00f, 2.453006071784736363091e+00f,
                           9.864942958519418960339e-01f, 1.546476374983906719538e-01f, 5.875095403124574342950e-03f};
  // The exponent and the mantissa in [0.5, 1) (fma_get_exponent / fma_get_mantissa; denormals scaled by 2^100).
  float exponent_offset = 0.0f;
  if (x < std::numeric_limits<float>::min()) {
    x = x * 0x1p100f;
    exponent_offset = 100.0f;
  }
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  float exponent = static_cast<float>(static_cast<int32_t>(bits >> 23) - 0x7E) - exponent_offset;
  bits = (bits & 0x7fffffu) | (126u << 23);
  float m;
  std::memcpy(&m, &bits, sizeof m);
  if (m <= 0.707106781186547524400844362104849039f) {  // NPY_SQRT1_2f
    m = m + m;
    exponent = exponent - 1.0f;
  }
  m = m - 1.0f;
  float num = std::fma(kP[5], m, kP[4]);
  for (int k = 3; k >= 0; --k) num = std::fma(num, m, kP[k]);
  float den = std::fma(kQ[5], m, kQ[4]);
  for (int k = 3; k >= 0; --k) den = std::fma(den, m, kQ[k]);
  return std::fma(exponent, 0.693147180559945309417232121458176568f, num / den);  // NPY_LOGE2f
}

std::vector<float> log_f32(const std::vector<float>& values) {
  std::vector<float> out(values.size());
  for (size_t i = 0; i < out.size(); ++i) out[i] = numpy_logf(values[i]);
  return out;
}

std::vector<double> np_linspace(double start, double stop, int64_t num) {
  std::vector<double> y(static_cast<size_t>(std::max<int64_t>(num, 0)));
  if (num <= 0) return y;
  if (num == 1) {
    y[0] = start;
    return y;
  }
  const double delta = stop - start;
  const double step = delta / static_cast<double>(num - 1);
  for (int64_t i = 0; i < num; ++i) {
    // y = arange(num) * step (or / div * delta when the step underflows to 0); y += start
    const double scaled =
        step == 0 ? static_cast<double>(i) / static_cast<double>(num - 1) * delta : static_cast<double>(i) * step;
    y[i] = scaled + start;
  }
  y[num - 1] = stop;
  return y;
}

std::vector<double> np_arange(double start, double stop, double step) {
  const double len = std::ceil((stop - start) / step);
  if (!(len > 0)) return {};
  const auto n = static_cast<size_t>(len);
  std::vector<double> y(n);
  y[0] = start;
  if (n == 1) return y;
  y[1] = start + step;
  const double delta = y[1] - y[0];
  for (size_t i = 2; i < n; ++i) y[i] = start + static_cast<double>(i) * delta;
  return y;
}

double np_round(double x) { return std::nearbyint(x); }

double np_interp_index(double x, const std::vector<float>& fp) {
  const int64_t n = static_cast<int64_t>(fp.size());
  if (std::isnan(x)) return x;
  if (x <= 0) return fp.front();  // left of (or at) the first point
  if (x >= static_cast<double>(n - 1)) return fp.back();
  const int64_t j = static_cast<int64_t>(std::floor(x));
  if (static_cast<double>(j) == x) return fp[j];
  const double slope = (static_cast<double>(fp[j + 1]) - static_cast<double>(fp[j])) / 1.0;
  double r = slope * (x - static_cast<double>(j)) + static_cast<double>(fp[j]);
  if (std::isnan(r)) {  // "If we get nan in one direction, try the other"
    r = slope * (x - static_cast<double>(j + 1)) + static_cast<double>(fp[j + 1]);
    if (std::isnan(r) && fp[j] == fp[j + 1]) r = fp[j];
  }
  return r;
}

std::vector<int64_t> discrete_timesteps(const std::string& spacing, int num_train_timesteps, int num_inference_steps,
                                        int steps_offset) {
  const int64_t T = num_train_timesteps, N = num_inference_steps;
  std::vector<int64_t> ts;
  if (spacing == "linspace") {
    for (double v : np_linspace(0, static_cast<double>(T - 1), N)) ts.push_back(static_cast<int64_t>(np_round(v)));
    std::reverse(ts.begin(), ts.end());
  } else if (spacing == "leading") {
    const int64_t ratio = T / N;  // integer timesteps "to avoid issues when num_inference_step is power of 3"
    for (int64_t i = N - 1; i >= 0; --i) ts.push_back(i * ratio + steps_offset);
  } else if (spacing == "trailing") {
    for (double v : np_arange(static_cast<double>(T), 0, -(static_cast<double>(T) / static_cast<double>(N))))
      ts.push_back(static_cast<int64_t>(np_round(v)) - 1);
  } else {
    throw ModelError("unsupported timestep_spacing \"" + spacing + "\"");
  }
  return ts;
}

std::vector<float> sigma_timesteps(const std::string& spacing, int num_train_timesteps, int num_inference_steps,
                                   int steps_offset) {
  const int64_t T = num_train_timesteps, N = num_inference_steps;
  std::vector<float> ts;
  if (spacing == "linspace") {
    for (double v : np_linspace(0, static_cast<double>(T - 1), N)) ts.push_back(static_cast<float>(v));
    std::reverse(ts.begin(), ts.end());
  } else if (spacing == "leading") {
    const int64_t ratio = T / N;
    for (int64_t i = N - 1; i >= 0; --i) ts.push_back(static_cast<float>(i * ratio) + static_cast<float>(steps_offset));
  } else if (spacing == "trailing") {
    for (double v : np_arange(static_cast<double>(T), 0, -(static_cast<double>(T) / static_cast<double>(N))))
      ts.push_back(static_cast<float>(np_round(v)) - 1.0f);
  } else {
    throw ModelError("unsupported timestep_spacing \"" + spacing + "\"");
  }
  return ts;
}

std::vector<double> karras_sigmas(double sigma_min, double sigma_max, int n) {
  constexpr double rho = 7.0;  // "7.0 is the value used in the paper"
  const std::vector<double> ramp = np_linspace(0, 1, n);
  const double min_inv_rho = std::pow(sigma_min, 1 / rho);
  const double max_inv_rho = std::pow(sigma_max, 1 / rho);
  std::vector<double> out(ramp.size());
  for (size_t i = 0; i < ramp.size(); ++i) {
    const double scaled = ramp[i] * (min_inv_rho - max_inv_rho);
    out[i] = std::pow(max_inv_rho + scaled, rho);
  }
  return out;
}

double sigma_to_t(double sigma, const std::vector<float>& log_sigmas) {
  const int64_t n = static_cast<int64_t>(log_sigmas.size());
  const double log_sigma = std::log(std::max(sigma, 1e-10));  // a numpy float64 scalar
  // numpy 1.x casts a scalar to the array's dtype when both are floats, so every difference with the float32
  // table is float32 arithmetic on float(log_sigma).
  const float log_sigma_f = static_cast<float>(log_sigma);
  // low_idx = np.cumsum(dists >= 0).argmax(): the last index whose log-sigma is <= log_sigma (0 if none),
  // clipped so that low_idx + 1 is valid.
  int64_t low_idx = 0;
  for (int64_t j = 0; j < n; ++j)
    if (log_sigma_f - log_sigmas[j] >= 0.0f) low_idx = j;
  low_idx = std::min(low_idx, n - 2);
  const int64_t high_idx = low_idx + 1;
  const float low = log_sigmas[low_idx], high = log_sigmas[high_idx];
  const float numerator = low - log_sigma_f, denominator = low - high;
  const float w = std::clamp(numerator / denominator, 0.0f, 1.0f);
  // (1 - w) is float32; times the int64 indices it becomes float64.
  const float one_minus_w = 1.0f - w;
  return static_cast<double>(one_minus_w) * static_cast<double>(low_idx) +
         static_cast<double>(w) * static_cast<double>(high_idx);
}

namespace {
// dqk21's 21-point Kronrod nodes on [-1, 1] (kXgk[1], kXgk[3], ... are the 10-point Gauss nodes) and weights.
constexpr double kXgk[11] = {
    0.995657163025808080735527280689003, 0.973906528517171720077964012084452, 0.930157491355708226001207180059508,
    0.865063366688984510732096688423493, 0.780817726586416897063717578345042, 0.679409568299024406234327365114874,
    0.562757134668604683339000099272694, 0.433395394129247190799265943165784, 0.294392862701460198131126603103866,
    0.148874338981631210884826001129720, 0.000000000000000000000000000000000};
constexpr double kWgk[11] = {
    0.011694638867371874278064396062192, 0.032558162307964727478818972459390, 0.054755896574351996031381300244580,
    0.075039674810919952767043140916190, 0.093125454583697605535065465083366, 0.109387158802297641899210590325805,
    0.123491976262065851077958109831074, 0.134709217311473325928054001771707, 0.142775938577060080797094273138717,
    0.147739104901338491374841515972068, 0.149445554002916905664936468389821};
}  // namespace

double gauss_kronrod_21(const std::function<double(double)>& f, double a, double b) {
  const double centr = 0.5 * (a + b);
  const double hlgth = 0.5 * (b - a);
  double resk = kWgk[10] * f(centr);
  for (int j = 1; j <= 5; ++j) {  // the Gauss nodes (dqk21's jtw = 2j, 1-based)
    const int jtw = 2 * j - 1;
    const double absc = hlgth * kXgk[jtw];
    const double fsum = f(centr - absc) + f(centr + absc);
    resk += kWgk[jtw] * fsum;
  }
  for (int j = 1; j <= 5; ++j) {  // the Kronrod extension nodes (jtwm1 = 2j - 1, 1-based)
    const int jtwm1 = 2 * j - 2;
    const double absc = hlgth * kXgk[jtwm1];
    const double fsum = f(centr - absc) + f(centr + absc);
    resk += kWgk[jtwm1] * fsum;
  }
  return resk * hlgth;
}

void check_same_shape(const Tensor& a, const Tensor& b, const char* what) {
  if (a.shape() != b.shape())
    throw InvalidArgument(std::string(what) + ": model_output " + shape_to_string(a.shape()) + " and sample " +
                          shape_to_string(b.shape()) + " differ in shape");
}

std::vector<float> sigmas_with_final_zero(const std::vector<double>& sigmas) {
  std::vector<float> out(sigmas.size() + 1, 0.0f);
  for (size_t i = 0; i < sigmas.size(); ++i) out[i] = static_cast<float>(sigmas[i]);
  return out;
}

float sigma_init_noise_sigma(const std::vector<float>& sigmas, const std::string& spacing) {
  const float max_sigma = *std::max_element(sigmas.begin(), sigmas.end());
  if (spacing == "linspace" || spacing == "trailing") return max_sigma;
  return std::sqrt(max_sigma * max_sigma + 1.0f);
}

Tensor scale_by_sigma(const Tensor& sample, float sigma) {
  const float denom = std::sqrt(sigma * sigma + 1.0f);
  Tensor out(sample.shape());
  const float* s = sample.data();
  float* o = out.data();
  for (int64_t i = 0; i < sample.numel(); ++i) o[i] = s[i] / denom;
  return out;
}

Tensor sigma_pred_original_sample(const std::string& prediction_type, const Tensor& model_output, const Tensor& sample,
                                  float sigma) {
  const int64_t n = sample.numel();
  const float* m = model_output.data();
  const float* s = sample.data();
  Tensor out(sample.shape());
  float* x0 = out.data();
  if (prediction_type == "epsilon") {
    for (int64_t i = 0; i < n; ++i) x0[i] = s[i] - sigma * m[i];
  } else if (prediction_type == "v_prediction") {
    // denoised = model_output * c_out + input * c_skip (Karras et al. 2022, Table 1, for v-prediction)
    const float sigma2_plus_1 = sigma * sigma + 1.0f;
    const float c_out = -sigma / std::sqrt(sigma2_plus_1);
    for (int64_t i = 0; i < n; ++i) x0[i] = m[i] * c_out + s[i] / sigma2_plus_1;
  } else if (prediction_type == "sample") {
    for (int64_t i = 0; i < n; ++i) x0[i] = m[i];
  } else {
    throw ModelError("unsupported prediction_type \"" + prediction_type + "\"");
  }
  return out;
}

}  // namespace sdcpu::noise
