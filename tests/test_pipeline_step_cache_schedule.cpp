// Step caching's schedules (pipeline/step_cache_schedule.h): the quadratic one against DeepCache's own
// sample_from_quad_center (tests/oracle/make_deepcache_schedule_goldens.py), which runs complex arithmetic through
// numpy and truncates: every index has to come out the same.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "pipeline/step_cache_schedule.h"
#include "test_support.h"

namespace sdcpu {
namespace {

TEST(StepCacheSchedule, QuadraticIsDeepCachesSampleFromQuadCenter) {
  const auto golden = nlohmann::json::parse(
      testing::read_text(std::string(SDCPU_SOURCE_DIR) + "/tests/goldens/deepcache/quad_center_schedules.json"));
  int checked = 0, errors = 0;
  for (const auto& c : golden.at("cases")) {
    const int steps = c.at("steps"), center = c.at("center"), samples = c.at("samples");
    const double power = c.at("pow");
    SCOPED_TRACE(c.dump());
    if (c.contains("error")) {
      EXPECT_THROW(sample_from_quad_center(steps, samples, center, power, nullptr), InvalidArgument);
      ++errors;
      continue;
    }
    double used = 0;
    EXPECT_EQ(sample_from_quad_center(steps, samples, center, power, &used), c.at("indices").get<std::vector<int>>());
    EXPECT_DOUBLE_EQ(used, c.at("pow_used").get<double>());
    ++checked;
  }
  EXPECT_GT(checked, 400);
  EXPECT_GT(errors, 0);  // the failing searches are covered too
}

TEST(StepCacheSchedule, PicksTheFullCalls) {
  auto full = [](const StepCacheSchedule& s, int calls) {
    std::vector<int> out;
    const std::vector<bool> f = full_unet_passes(s, calls);
    for (int i = 0; i < calls; ++i)
      if (f[i]) out.push_back(i);
    return out;
  };
  EXPECT_EQ(full({1}, 4), (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(full({3}, 10), (std::vector<int>{0, 3, 6, 9}));
  // DeepCache's pipeline at 20 steps, interval 3, center 10, pow 1.4: 7 full steps, densest around the center.
  EXPECT_EQ(full({3, "quadratic", 10, 1.4}, 20), (std::vector<int>{0, 4, 7, 9, 11, 13, 16}));
  EXPECT_EQ(full({3, "quadratic", -1, 1.4}, 20), full({3, "quadratic", 10, 1.4}, 20));  // default: the middle
  EXPECT_THROW(full({2, "quadratic", 5, 1.2}, 10), InvalidArgument);                    // no power fits
  EXPECT_THROW(validate(StepCacheSchedule{0}), InvalidArgument);
  EXPECT_THROW(validate(StepCacheSchedule{3, "cubic"}), InvalidArgument);
  EXPECT_THROW(validate(StepCacheSchedule{3, "quadratic", -2}), InvalidArgument);
  EXPECT_THROW(validate(StepCacheSchedule{3, "quadratic", 5, 1.0}), InvalidArgument);
  EXPECT_THROW(validate(StepCacheSchedule{3, "quadratic", 5, std::nan("")}), InvalidArgument);
}

}  // namespace
}  // namespace sdcpu
