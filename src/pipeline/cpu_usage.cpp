#include "pipeline/cpu_usage.h"

#include <sys/resource.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "core/error.h"

namespace sdcpu {

MachineCpuTimes parse_proc_stat(const std::string& text, double ticks_per_second) {
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind("cpu ", 0) != 0) continue;
    // cpu  user nice system idle iowait irq softirq steal [guest guest_nice] (proc(5))
    std::istringstream fields(line.substr(4));
    double user, nice, system, idle, iowait, irq, softirq, steal;
    if (!(fields >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal) || ticks_per_second <= 0)
      throw InvalidArgument("/proc/stat: malformed cpu line: " + line);
    return {(user + nice + system + irq + softirq) / ticks_per_second, steal / ticks_per_second};
  }
  throw InvalidArgument("/proc/stat: no aggregate cpu line");
}

MachineCpuTimes machine_cpu_times() {
  std::ifstream f("/proc/stat");
  if (!f) return {};
  std::stringstream text;
  text << f.rdbuf();
  try {
    return parse_proc_stat(text.str(), static_cast<double>(::sysconf(_SC_CLK_TCK)));
  } catch (const InvalidArgument&) {
    return {};
  }
}

double process_cpu_seconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& t) { return static_cast<double>(t.tv_sec) + 1e-6 * static_cast<double>(t.tv_usec); };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

int online_cpus() {
  const long n = ::sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? static_cast<int>(n) : 1;
}

}  // namespace sdcpu
