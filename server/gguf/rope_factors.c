/* rope_factors: Llama 3 rope frequency factors (see rope_factors.h). */
#include "rope_factors.h"

#include <math.h>

void cv_llama3_rope_factors(const cv_llama3_rope *r, float base, int32_t n_rot, float *out) {
    const double lo_wl = r->original_context / r->low_freq_factor;
    const double hi_wl = r->original_context / r->high_freq_factor;
    for (int32_t i = 0; i < n_rot / 2; i++) {
        /* The converter computes the frequency in float32, as here. */
        const float freq = 1.0f / powf(base, (float)(2 * i) / (float)n_rot);
        const double wl = 2 * M_PI / freq;
        if (wl < hi_wl) out[i] = 1.0f;
        else if (wl > lo_wl) out[i] = r->factor;
        else {
            const double smooth = (r->original_context / wl - r->low_freq_factor) /
                                  (r->high_freq_factor - r->low_freq_factor);
            out[i] = (float)(1.0 / ((1 - smooth) / r->factor + smooth));
        }
    }
}
