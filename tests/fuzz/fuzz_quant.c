/* fuzz_quant: the quant kernels on tensor bytes from a hostile file.
 *
 * Input: byte 0 picks the weight type; byte 1 the number of blocks (1..8, low bits)
 * and the mode (bit 7); then the weights and the activations (little-endian floats).
 *  - raw mode: the weight row is raw bytes (any scale: inf, NaN, subnormal; any
 *    level). Every kernel must run without undefined behaviour (the sanitizers).
 *  - float mode: the weights are floats (made finite and at most 1e4) quantized by
 *    the reference; the AVX2 dot must equal the scalar one within float rounding.
 * Both modes: for finite activations the fast activation quantizer writes the
 * reference's bytes, and a multi-row dot gives each row exactly the single-row
 * result (NaN payloads aside).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"

static const cv_type k_types[] = {CV_TYPE_F32, CV_TYPE_F16, CV_TYPE_BF16, CV_TYPE_Q4_0, CV_TYPE_Q5_0,
                                  CV_TYPE_Q8_0, CV_TYPE_Q4_K, CV_TYPE_Q5_K, CV_TYPE_Q6_K, CV_TYPE_Q8_K};

static int all_finite(const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

/* Bit for bit, except that any NaN equals any NaN (the payload depends on operand
 * order, which the compiler may commute). */
static int same_result(float a, float b) { return (isnan(a) && isnan(b)) || !memcmp(&a, &b, sizeof a); }

static void tame(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] = isfinite(x[i]) ? fmaxf(-1e4f, fminf(1e4f, x[i])) : 0.f;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    const cv_type t = k_types[data[0] % (sizeof k_types / sizeof k_types[0])];
    const cv_type at = cv_type_vec_dot_type(t);
    const int from_floats = data[1] >> 7;
    const int64_t be = cv_type_get(t)->block_elems;
    const int64_t n = (1 + (data[1] & 7)) * (be == 1 ? 16 : be);
    const size_t wb = cv_type_row_bytes(t, n), ab = cv_type_row_bytes(at, n);
    const size_t w_in = from_floats ? (size_t)n * 4 : wb;
    if (size < 2 + w_in + (size_t)n * 4) return 0;
    uint8_t *w = malloc(wb), *a = malloc(2 * ab), *a_fast = malloc(ab);
    float *x = malloc((size_t)n * 4), *wf = malloc((size_t)n * 4), *af = malloc((size_t)n * 4);
    if (!w || !x || !wf || !af || !a || !a_fast) abort();
    if (from_floats) {
        memcpy(wf, data + 2, w_in);
        tame(wf, n);
        cv_quantize_row(t, wf, w, n);
    } else {
        memcpy(w, data + 2, wb);
    }
    memcpy(x, data + 2 + w_in, (size_t)n * 4);
    if (from_floats) tame(x, n);

    cv_quant_force_scalar(0);
    cv_quantize_row(at, x, a, n);
    cv_quantize_row_act(at, x, a_fast, n);
    if (all_finite(x, n) && memcmp(a, a_fast, ab)) abort();
    memcpy(a + ab, a, ab);  /* a second activation row for the multi-row path */

    cv_quant_force_scalar(1);
    const float ref = cv_vec_dot(t, n, w, a);
    cv_quant_force_scalar(0);
    float fast[2];
    cv_vec_dot_rows(t, n, w, a, ab, 2, fast);
    const float single = cv_vec_dot(t, n, w, a);
    if (!same_result(fast[0], fast[1]) || !same_result(fast[0], single)) abort();
    if (from_floats) {
        /* rounding scales with the products and, for the offset tricks (levels
         * minus 8/16/32, mins), with max|w| * sum|a| */
        cv_dequantize_row(t, w, wf, n);
        cv_dequantize_row(at, a, af, n);
        double abs_sum = 0, a_sum = 0, w_max = 0;
        for (int64_t i = 0; i < n; i++) {
            abs_sum += fabs((double)wf[i] * af[i]);
            a_sum += fabs((double)af[i]);
            w_max = fmax(w_max, fabs((double)wf[i]));
        }
        const double tol = 1e-4 * abs_sum + 1e-6 * w_max * a_sum + 1e-30;
        if (!(fabs((double)fast[0] - ref) <= tol)) abort();
    }
    free(w);
    free(a);
    free(a_fast);
    free(x);
    free(wf);
    free(af);
    return 0;
}
