#include "pipeline/step_cache_schedule.h"

#include <algorithm>
#include <cmath>
#include <complex>
#include <cstdint>

#include "core/error.h"

namespace sdcpu {
namespace {

using Complex = std::complex<double>;

// Python's `x ** e` for a float x and a non-integer float e: a negative base gives a complex number, computed as
// CPython's complex_pow (c_pow) does: |x|^e at the angle atan2(0, x) * e.
Complex python_power(double x, double e) {
  if (x >= 0) return {x == 0 ? 0.0 : std::pow(x, e), 0.0};
  const double length = std::pow(std::hypot(x, 0.0), e);
  const double phase = std::atan2(0.0, x) * e;
  return {length * std::cos(phase), length * std::sin(phase)};
}

}  // namespace

std::vector<int> sample_from_quad_center(int total, int samples, int center, double power, double* power_used) {
  if (samples < 1) throw InvalidArgument("step caching: at least one full UNet call is needed", "cache_interval");
  const int num = samples + 1;
  while (power > 1) {
    // x_values = np.linspace((-center) ** (1 / pow), (total - center) ** (1 / pow), n_samples + 1): in complex
    // arithmetic when the start is negative, as numpy 1.24's linspace computes it: step = delta * (1 / div) (its
    // complex division), y = k * step + start, and the last value set to stop exactly.
    const Complex start = python_power(-static_cast<double>(center), 1.0 / power);
    const Complex stop = python_power(static_cast<double>(total - center), 1.0 / power);
    // numpy's dtype: complex as soon as either end is (a negative base), real otherwise.
    const bool complex_values = center > 0 || total - center < 0;
    const Complex delta = stop - start;
    const double reciprocal = 1.0 / static_cast<double>(num - 1);
    const Complex step(delta.real() * reciprocal, delta.imag() * reciprocal);
    std::vector<int> values;
    for (int k = 0; k < num; ++k) {
      const Complex x = k == num - 1 ? stop : Complex(k * step.real() + start.real(), k * step.imag() + start.imag());
      // x_values ** pow: numpy's complex power is libm's cpow (std::pow of two complex numbers calls it), its real
      // power C's pow; np.int32 keeps the real part, truncated.
      double value;
      if (!complex_values)
        value = x.real() == 0 ? 0.0 : std::pow(x.real(), power);
      else
        value = (x == Complex(0, 0)) ? 0.0 : std::pow(x, Complex(power, 0.0)).real();
      values.push_back(static_cast<int32_t>(value));
    }
    // indices = [0] + [x + center for x in np.unique(...)[1:-1]]
    std::sort(values.begin(), values.end());
    values.erase(std::unique(values.begin(), values.end()), values.end());
    std::vector<int> indices = {0};
    for (size_t i = 1; i + 1 < values.size(); ++i) indices.push_back(values[i] + center);
    if (static_cast<int>(indices.size()) == samples) {
      if (power_used) *power_used = power;
      return indices;
    }
    power -= 0.02;
  }
  throw InvalidArgument("step caching: the quadratic schedule finds no power for " + std::to_string(samples) +
                            " full calls of " + std::to_string(total) + " around center " + std::to_string(center) +
                            " (as DeepCache's sample_from_quad_center: \"Cannot find suitable pow\"); try another "
                            "center, interval or power",
                        "cache_schedule");
}

void validate(const StepCacheSchedule& s) {
  if (s.interval < 1 || s.interval > 1000)
    throw InvalidArgument("cache interval must be between 1 (off) and 1000, got " + std::to_string(s.interval),
                          "cache_interval");
  if (s.kind != "uniform" && s.kind != "quadratic")
    throw InvalidArgument("cache schedule must be uniform or quadratic, got \"" + s.kind + "\"", "cache_schedule");
  if (s.center < -1 || s.center > 1000)
    throw InvalidArgument("cache center must be a step index (or -1 for the middle), got " + std::to_string(s.center),
                          "cache_center");
  if (!std::isfinite(s.power) || s.power <= 1 || s.power > 10)
    throw InvalidArgument("cache power must be above 1 and at most 10", "cache_power");
}

std::vector<bool> full_unet_passes(const StepCacheSchedule& s, int calls) {
  validate(s);
  std::vector<bool> full(std::max(calls, 0), s.interval <= 1);
  if (s.interval <= 1 || calls <= 0) return full;
  if (s.kind == "uniform") {
    for (int i = 0; i < calls; i += s.interval) full[i] = true;
    return full;
  }
  // DeepCache's pipeline: num_slow_step = calls // interval, plus one when interval does not divide calls.
  const int samples = calls / s.interval + (calls % s.interval != 0 ? 1 : 0);
  const int center = s.center < 0 ? calls / 2 : s.center;
  for (int i : sample_from_quad_center(calls, samples, center, s.power, nullptr))
    if (i >= 0 && i < calls) full[i] = true;
  return full;
}

}  // namespace sdcpu
