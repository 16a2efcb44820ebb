// The compute team: sized to physical cores, optionally pinned one thread per core.
#include <gtest/gtest.h>
#include <omp.h>
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <set>
#include <vector>

#include "core/threads.h"

namespace sdcpu {
namespace {

std::vector<int> allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> cpus;
  if (sched_getaffinity(0, sizeof set, &set) == 0)
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &set)) cpus.push_back(c);
  return cpus;
}

TEST(CoreThreads, PhysicalCoresAreAllowedDistinctCpus) {
  const std::vector<int> all = allowed_cpus(), cores = physical_core_cpus();
  ASSERT_FALSE(cores.empty());
  EXPECT_LE(cores.size(), all.size());
  EXPECT_EQ(std::set<int>(cores.begin(), cores.end()).size(), cores.size());
  for (int c : cores) EXPECT_NE(std::find(all.begin(), all.end(), c), all.end()) << c;
}

TEST(CoreThreads, SetupSizesAndPinsTheTeam) {
  const std::vector<int> cores = physical_core_cpus();
  {  // Pinning is advisory; a sandbox that forbids it leaves nothing to check.
    cpu_set_t mine;
    CPU_ZERO(&mine);
    if (pthread_getaffinity_np(pthread_self(), sizeof mine, &mine) != 0 ||
        pthread_setaffinity_np(pthread_self(), sizeof mine, &mine) != 0)
      GTEST_SKIP() << "this process may not set thread affinity";
  }
  EXPECT_EQ(setup_threads(0, false), static_cast<int>(cores.size()));
  EXPECT_EQ(omp_get_max_threads(), static_cast<int>(cores.size()));
  EXPECT_EQ(setup_threads(3, true), 3);
  std::vector<int> bound(3, -1);
#pragma omp parallel num_threads(3)
  {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (pthread_getaffinity_np(pthread_self(), sizeof set, &set) == 0 && CPU_COUNT(&set) == 1)
      for (int c = 0; c < CPU_SETSIZE; ++c)
        if (CPU_ISSET(c, &set)) bound[omp_get_thread_num()] = c;
  }
  for (int i = 0; i < 3; ++i) EXPECT_EQ(bound[i], cores[i % cores.size()]) << "thread " << i;
}

}  // namespace
}  // namespace sdcpu
