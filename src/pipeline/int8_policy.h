// Which UNet layers compute in int8 under --precision int8 (core/compute_type.h), as a list of patterns: a layer
// whose name contains one stays bf16. Decided by measurement (README, "int8"): a layer is kept out when quantizing it costs
// quality out of proportion to the time it saves.
#pragma once
#include <string>
#include <vector>

namespace sdcpu {

// The layers of a UNet2DConditionModel that stay bf16 in int8 mode.
std::vector<std::string> unet_int8_exclusions();

}  // namespace sdcpu
