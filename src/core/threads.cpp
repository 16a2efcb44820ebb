#include "core/threads.h"

#include <omp.h>
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <exception>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <utility>

#include "core/error.h"

namespace sdcpu {
namespace {

// "0-3,8,10-11" (the kernel's cpulist format) -> {0, 1, 2, 3, 8, 10, 11}; empty on anything unexpected.
std::vector<int> parse_cpu_list(const std::string& text) {
  std::vector<int> cpus;
  size_t i = 0;
  while (i < text.size()) {
    size_t end = text.find(',', i);
    if (end == std::string::npos) end = text.size();
    const std::string part = text.substr(i, end - i);
    try {
      const size_t dash = part.find('-');
      const int lo = std::stoi(part.substr(0, dash));
      const int hi = dash == std::string::npos ? lo : std::stoi(part.substr(dash + 1));
      for (int c = lo; c <= hi && hi - lo < 65536; ++c) cpus.push_back(c);
    } catch (const std::exception&) {
      return {};
    }
    i = end + 1;
  }
  return cpus;
}

}  // namespace

std::vector<int> physical_core_cpus() {
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  std::vector<int> all;
  if (sched_getaffinity(0, sizeof allowed, &allowed) == 0) {
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &allowed)) all.push_back(c);
  }
  std::vector<int> firsts;
  std::set<std::vector<int>> cores_seen;
  for (int c : all) {
    std::ifstream in("/sys/devices/system/cpu/cpu" + std::to_string(c) + "/topology/thread_siblings_list");
    std::string line;
    if (!std::getline(in, line)) return all;
    std::vector<int> siblings = parse_cpu_list(line);
    if (siblings.empty()) return all;
    if (cores_seen.insert(std::move(siblings)).second) firsts.push_back(c);
  }
  return firsts.empty() ? all : firsts;
}

int allowed_cpu_count() {
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (sched_getaffinity(0, sizeof allowed, &allowed) == 0) return std::max(1, CPU_COUNT(&allowed));
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

int setup_threads(int threads, bool pin) {
  const int limit = allowed_cpu_count();
  if (threads < 0 || threads > limit)
    throw InvalidArgument("threads must be between 0 (one per physical core) and " + std::to_string(limit) +
                          " (the CPUs this process may use), got " + std::to_string(threads));
  const std::vector<int> cpus = physical_core_cpus();
  const int team = threads > 0 ? threads : std::max<int>(1, static_cast<int>(cpus.size()));
  omp_set_num_threads(team);
  if (pin && !cpus.empty()) {
#pragma omp parallel num_threads(team)
    {
      cpu_set_t one;
      CPU_ZERO(&one);
      CPU_SET(cpus[static_cast<size_t>(omp_get_thread_num()) % cpus.size()], &one);
      pthread_setaffinity_np(pthread_self(), sizeof one, &one);  // advisory: a refusal leaves the thread free
    }
  }
  return team;
}

}  // namespace sdcpu
