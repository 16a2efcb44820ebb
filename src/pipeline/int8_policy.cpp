#include "pipeline/int8_policy.h"

#include <algorithm>
#include <cstdlib>

namespace sdcpu {

std::vector<std::string> unet_int8_exclusions() {
  // For measuring another policy (README, "int8"): SDCPU_INT8_KEEP=conv_in,conv_out,... replaces the list below.
  if (const char* keep = std::getenv("SDCPU_INT8_KEEP")) {
    std::vector<std::string> patterns;
    std::string list = keep;
    for (size_t begin = 0; begin <= list.size();) {
      const size_t comma = std::min(list.find(',', begin), list.size());
      if (comma > begin) patterns.push_back(list.substr(begin, comma - begin));
      begin = comma + 1;
    }
    return patterns;
  }
  return {
      // The first and last convolutions: conv_in reads the 4 latent channels (0.3% of the UNet's FLOPs, and
      // oneDNN has no int8 kernel for 4 input channels), conv_out writes the noise prediction that every step
      // adds to the latents, so its error is not damped by anything after it.
      "conv_in",
      "conv_out",
      // The timestep (and SDXL's size and text, LCM's guidance) embeddings: two rows per step, no time to save,
      // and their output scales every resnet's features.
      "time_embedding",
      "add_embedding",
  };
}

}  // namespace sdcpu
