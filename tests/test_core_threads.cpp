// The compute team: sized to physical cores, optionally pinned one thread per core.
#include <gtest/gtest.h>
#include <omp.h>
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <set>
#include <vector>

#include "core/error.h"
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
  // As many threads as CPUs: with SMT that is more than physical cores, and the binding wraps around them.
  const int n = allowed_cpu_count();
  EXPECT_EQ(setup_threads(n, true), n);
  std::vector<int> bound(n, -1);
#pragma omp parallel num_threads(n)
  {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (pthread_getaffinity_np(pthread_self(), sizeof set, &set) == 0 && CPU_COUNT(&set) == 1)
      for (int c = 0; c < CPU_SETSIZE; ++c)
        if (CPU_ISSET(c, &set)) bound[omp_get_thread_num()] = c;
  }
  for (int i = 0; i < n; ++i) EXPECT_EQ(bound[i], cores[i % cores.size()]) << "thread " << i;
}

TEST(Threads, MoreThreadsThanCpusAreRefused) {
  const int n = allowed_cpu_count();
  EXPECT_GE(n, static_cast<int>(physical_core_cpus().size()));
  for (int bad : {-1, n + 1, 1000}) {
    try {
      setup_threads(bad, false);
      ADD_FAILURE() << bad << " threads accepted";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("threads must be between 0"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(setup_threads(n, false), n);
  setup_threads(0, false);
}

}  // namespace
}  // namespace sdcpu
