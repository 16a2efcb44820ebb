#include "pipeline/int8_policy.h"

namespace sdcpu {

std::vector<std::string> unet_int8_exclusions() {
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
