// Errors inside the engine are exceptions of the public kinds in include/sdcpu/error.h; the apps turn
// them into messages and exit codes, the service into HTTP statuses (DESIGN.md, principle 7).
#pragma once
#include "sdcpu/error.h"
