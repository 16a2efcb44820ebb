// The one team of compute threads (DESIGN.md principle 6). oneDNN (Debian's build runs on OpenMP) and our own
// kernels share the OpenMP team, so sizing and pinning it here covers both: no oversubscription.
#pragma once
#include <vector>

namespace sdcpu {

// The CPUs this process may run on (its affinity mask), one per physical core: the first hardware thread of
// each core (SMT siblings share a core's FMA units, so a second thread per core only adds contention to
// FMA-bound work). Falls back to every allowed CPU when the topology cannot be read.
std::vector<int> physical_core_cpus();

// How many CPUs this process may run on (its affinity mask, SMT siblings included); at least 1.
int allowed_cpu_count();

// Sizes the team: `threads` > 0 as given, 0 = one per physical core (physical_core_cpus). With `pin`, thread i
// of the team is bound to the i-th of those CPUs (modulo their count), so the OS does not move threads between
// cores mid-step and each keeps its caches. Returns the team size. Call before the first parallel work. Throws
// InvalidArgument unless 0 <= threads <= allowed_cpu_count(): more threads than CPUs only take turns on them (1000
// threads on 2 cores made a tiny image take minutes).
int setup_threads(int threads, bool pin);

}  // namespace sdcpu
