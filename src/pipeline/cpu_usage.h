// Who used the machine's CPUs while sdcpu bench timed its runs (issue 12): this process, other processes, and the
// hypervisor (steal). On a shared machine a slow UNet step is often another job's doing; the FMA peak measured
// before and after the runs cannot tell, since the other job may start or stop in between. Counting CPU time over
// the timed runs themselves can: the machine's busy time from /proc/stat, less this process's own (getrusage).
// This process's time includes OpenMP's spin-waits, so "self" reads as busy even while it waits at a barrier.
#pragma once
#include <string>

namespace sdcpu {

struct MachineCpuTimes {
  double busy_s = 0;   // user + nice + system + irq + softirq (guest time is inside user), all CPUs together
  double steal_s = 0;  // time the hypervisor ran something else while a CPU of this VM wanted to run
};

// The aggregate "cpu " line of /proc/stat text, in seconds at `ticks_per_second` (sysconf(_SC_CLK_TCK)). Throws
// InvalidArgument when the text has no such line or it is malformed.
MachineCpuTimes parse_proc_stat(const std::string& text, double ticks_per_second);
// This machine's now (zeros where /proc/stat cannot be read).
MachineCpuTimes machine_cpu_times();
// This process's user + system CPU seconds, all threads.
double process_cpu_seconds();
// CPUs online (at least 1).
int online_cpus();

}  // namespace sdcpu
