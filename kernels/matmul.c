#include "matmul.h"

#include <string.h>

static size_t ref_act_row_bytes(cv_type wtype, int64_t cols) {
    cv_type vt = cv_type_vec_dot_type(wtype);
    return vt == CV_TYPE_F32 ? 0 : cv_type_row_bytes(vt, cols);
}

static void ref_convert(cv_type wtype, const float *x, void *act, int64_t cols) {
    cv_quantize_row_act(cv_type_vec_dot_type(wtype), x, act, cols);
}

/* quant's multi-row dot reads each weight row once per CV_VEC_DOT_ROWS tokens. */
static void ref_rows(const cv_tensor *w, int64_t r0, int64_t r1, const void *act, size_t act_stride,
                     int32_t n, float *y, int64_t ldy) {
    float out[CV_VEC_DOT_ROWS];
    for (int64_t r = r0; r < r1; r++) {
        const void *row = (const char *)w->data + r * w->row_stride;
        for (int32_t t = 0; t < n; t += CV_VEC_DOT_ROWS) {
            int k = n - t < CV_VEC_DOT_ROWS ? n - t : CV_VEC_DOT_ROWS;
            cv_vec_dot_rows(w->type, w->cols, row, (const char *)act + t * act_stride, act_stride, k, out);
            for (int j = 0; j < k; j++) y[(t + j) * ldy + r] = out[j];
        }
    }
}

const cv_matmul_kernel cv_matmul_ref = {ref_act_row_bytes, ref_convert, ref_rows};

typedef struct mm_task {
    cv_threadpool *pool;
    const cv_matmul_kernel *k;
    const cv_tensor *w;
    const float *x;
    float *y;
    int32_t n;
    int32_t chunk;       /* tokens converted per pass */
    size_t act_bytes;    /* per converted row; 0 = dot with x directly */
    int private_act;     /* each thread converts all rows into its own scratch part */
    char *scratch;
} mm_task;

/* Up to this many tokens (decode) every thread converts the whole batch itself: a
 * microsecond of duplicated work instead of a barrier, which costs far more when the
 * machine has fewer free cores than the pool has threads. */
#define PRIVATE_ACT_MAX 4

/* Rows go to threads in multiples of 16 so that a tile never straddles two threads. */
#define ROW_ALIGN 16

static void mm_worker(void *ctx, int ith, int nth) {
    mm_task *m = ctx;
    int64_t r0, r1;
    cv_split_range(m->w->rows, ROW_ALIGN, ith, nth, &r0, &r1);
    for (int32_t c0 = 0; c0 < m->n; c0 += m->chunk) {
        int32_t cn = m->n - c0 < m->chunk ? m->n - c0 : m->chunk;
        const void *act = m->x + (int64_t)c0 * m->w->cols;
        size_t stride = (size_t)m->w->cols * sizeof(float);
        if (m->private_act) {
            char *mine = m->scratch + (size_t)ith * (size_t)cn * m->act_bytes;
            for (int32_t t = 0; t < cn; t++)
                m->k->convert(m->w->type, m->x + (int64_t)t * m->w->cols, mine + t * m->act_bytes, m->w->cols);
            act = mine;
            stride = m->act_bytes;
        } else if (m->act_bytes) {
            int64_t t0, t1;
            cv_split_range(cn, 1, ith, nth, &t0, &t1);
            for (int64_t t = t0; t < t1; t++)
                m->k->convert(m->w->type, m->x + (c0 + t) * m->w->cols, m->scratch + t * m->act_bytes,
                              m->w->cols);
            cv_threadpool_barrier(m->pool);
            act = m->scratch;
            stride = m->act_bytes;
        }
        if (r1 > r0) m->k->rows(m->w, r0, r1, act, stride, cn, m->y + (int64_t)c0 * m->w->rows, m->w->rows);
        /* The next pass overwrites the scratch the others may still be reading. */
        if (m->act_bytes && !m->private_act && c0 + m->chunk < m->n) cv_threadpool_barrier(m->pool);
    }
}

void cv_matmul_run(cv_threadpool *pool, const cv_matmul_kernel *k, void *scratch, size_t scratch_bytes,
                   const cv_tensor *w, const float *x, float *y, int32_t n) {
    mm_task m = {.pool = pool, .k = k, .w = w, .x = x, .y = y, .n = n, .chunk = n, .scratch = scratch};
    m.act_bytes = k->act_row_bytes(w->type, w->cols);
    if (m.act_bytes) {
        m.act_bytes = (m.act_bytes + 63) & ~(size_t)63;
        size_t fit = scratch_bytes / m.act_bytes;
        if (fit < (size_t)n) m.chunk = fit > 0 ? (int32_t)fit : 1;
        m.private_act = n <= PRIVATE_ACT_MAX && (size_t)n * (size_t)cv_threadpool_size(pool) <= fit;
    }
    cv_threadpool_run(pool, mm_worker, &m);
}
