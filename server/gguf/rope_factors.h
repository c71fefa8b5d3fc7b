/* rope_factors: the rope frequency factors GGUF converters compute for Llama 3.1+.
 *
 * Llama 3 rope scaling slows long wavelengths by `factor`, keeps short ones and
 * interpolates the band between (original context / low_freq_factor .. / high_freq_factor).
 * llama.cpp's converter stores the result as rope_freqs.weight; the synthetic writer
 * makes that tensor with this function, and the model uses it for files that carry only
 * the rope.scaling.* keys.
 */
#ifndef CV_ROPE_FACTORS_H
#define CV_ROPE_FACTORS_H

#include <stdint.h>

typedef struct cv_llama3_rope {
    float factor, low_freq_factor, high_freq_factor;
    float original_context;
} cv_llama3_rope;

/* out[i], i < n_rot / 2: the divisor of pair i's frequency base^(-2i / n_rot). */
void cv_llama3_rope_factors(const cv_llama3_rope *r, float base, int32_t n_rot, float *out);

#endif
