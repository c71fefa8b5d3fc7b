#include "matmul.h"

#include <string.h>

size_t cv_matmul_vec_dot_act_bytes(cv_type wtype, int64_t cols) {
    cv_type vt = cv_type_vec_dot_type(wtype);
    return vt == CV_TYPE_F32 ? 0 : cv_type_row_bytes(vt, cols);
}

void cv_matmul_vec_dot_act_convert(cv_type wtype, const float *x, void *act, int64_t cols) {
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

const cv_matmul_kernel cv_matmul_ref = {cv_matmul_vec_dot_act_bytes, cv_matmul_vec_dot_act_convert, ref_rows};

typedef struct mm_task {
    const cv_matmul_kernel *k;
    const cv_tensor *w;
    const float *x;      /* the current chunk of tokens */
    float *y;
    int64_t ldx, ldy;    /* floats from one token's x (y) row to the next */
    int32_t n;           /* tokens in the chunk */
    int64_t item_rows;   /* weight rows per work item, a multiple of 16 */
    size_t act_bytes;    /* per converted row; 0 = dot with x directly */
    int private_act;     /* each thread converts all rows into its own scratch part */
    char *scratch;
    uint8_t converted[1024]; /* private_act: thread ith has converted this call's rows */
} mm_task;

/* Up to this many tokens (decode) every thread converts the whole batch itself: a
 * microsecond of duplicated work instead of a second dispatch. */
#define PRIVATE_ACT_MAX 4
/* About 100 us of tile work per item; below SERIAL_MACS the caller does it all. */
#define ITEM_MACS ((int64_t)1 << 22)
#define SERIAL_MACS ((int64_t)1 << 17)
/* Converted activations per chunk of a long batch: a quarter of a 1 MiB L2, leaving
 * room for the item's weight rows. */
#define CHUNK_ACT_BYTES ((size_t)256 << 10)

/* Items of 16..128 rows: several per thread and about ITEM_MACS of work each, so that a
 * thread that starts late, runs slow or is preempted holding an item delays the others
 * little; as long as that allows, so that each is a long stream. */
static int64_t item_rows(const cv_tensor *w, int32_t n, int nth) {
    int64_t macs_per_16 = 16 * w->cols * (int64_t)n;
    int64_t by_work = ITEM_MACS / macs_per_16, by_balance = w->rows / (16 * 4 * (int64_t)nth);
    int64_t units = by_work < by_balance ? by_work : by_balance;
    return 16 * (units < 1 ? 1 : units > 8 ? 8 : units);
}

static void mm_convert_item(void *ctx, int64_t t, int ith) {
    (void)ith;
    mm_task *m = ctx;
    m->k->convert(m->w->type, m->x + t * m->ldx, m->scratch + t * m->act_bytes, m->w->cols);
}

static void mm_rows_item(void *ctx, int64_t item, int ith) {
    mm_task *m = ctx;
    int64_t r0 = item * m->item_rows, r1 = r0 + m->item_rows < m->w->rows ? r0 + m->item_rows : m->w->rows;
    const void *act = m->x;
    size_t stride = (size_t)m->ldx * sizeof(float);
    if (m->private_act) {
        act = m->scratch + (size_t)ith * (size_t)m->n * m->act_bytes;
        if (!m->converted[ith]) {
            for (int32_t t = 0; t < m->n; t++)
                m->k->convert(m->w->type, m->x + (int64_t)t * m->ldx, (char *)act + t * m->act_bytes, m->w->cols);
            m->converted[ith] = 1;
        }
        stride = m->act_bytes;
    } else if (m->act_bytes) {
        act = m->scratch;
        stride = m->act_bytes;
    }
    m->k->rows(m->w, r0, r1, act, stride, m->n, m->y, m->ldy);
}

void cv_matmul_run(cv_threadpool *pool, const cv_matmul_kernel *k, void *scratch, size_t scratch_bytes,
                   const cv_tensor *w, const float *x, float *y, int32_t n) {
    cv_matmul_run_strided(pool, k, scratch, scratch_bytes, w, x, w->cols, y, w->rows, n);
}

void cv_matmul_run_strided(cv_threadpool *pool, const cv_matmul_kernel *k, void *scratch, size_t scratch_bytes,
                           const cv_tensor *w, const float *x, int64_t ldx, float *y, int64_t ldy, int32_t n) {
    int nth = cv_threadpool_size(pool);
    mm_task m = {.k = k, .w = w, .scratch = scratch, .ldx = ldx, .ldy = ldy};
    /* Too little work to be worth waking the pool (small models, tiny matrices). */
    if (w->rows * w->cols * (int64_t)n < SERIAL_MACS) nth = 1;
    int32_t chunk = n;
    m.act_bytes = k->act_row_bytes(w->type, w->cols);
    if (m.act_bytes) {
        m.act_bytes = (m.act_bytes + 63) & ~(size_t)63;
        size_t fit = scratch_bytes / m.act_bytes; /* >= 1: weight_load checked */
        m.private_act = n <= PRIVATE_ACT_MAX && (size_t)n * (size_t)nth <= fit;
        if (m.private_act) memset(m.converted, 0, (size_t)nth);
        /* A long batch (prefill) goes in chunks whose converted rows stay in each
         * core's L2 while all the items pass over them: otherwise every 16 rows stream
         * the whole batch in from L3 again. */
        size_t in_l2 = CHUNK_ACT_BYTES / m.act_bytes / 16 * 16;
        if (in_l2 < 16) in_l2 = 16;
        if (in_l2 < fit) fit = in_l2;
        if (fit < (size_t)n) chunk = (int32_t)fit;
    }
    m.item_rows = item_rows(w, chunk, nth);
    int64_t items = (w->rows + m.item_rows - 1) / m.item_rows;
    for (int32_t c0 = 0; c0 < n; c0 += chunk) {
        m.n = n - c0 < chunk ? n - c0 : chunk;
        m.x = x + (int64_t)c0 * ldx;
        m.y = y + (int64_t)c0 * ldy;
        if (nth == 1) {
            for (int32_t t = 0; m.act_bytes && !m.private_act && t < m.n; t++) mm_convert_item(&m, t, 0);
            for (int64_t i = 0; i < items; i++) mm_rows_item(&m, i, 0);
            continue;
        }
        if (m.act_bytes && !m.private_act) cv_threadpool_for(pool, mm_convert_item, &m, m.n);
        cv_threadpool_for(pool, mm_rows_item, &m, items);
    }
}

/* ---- several weights, one input ---------------------------------------------------- */

typedef struct mm_multi {
    int count;
    const cv_matmul_kernel *k[CV_MATMUL_MULTI_MAX];
    const cv_tensor *w[CV_MATMUL_MULTI_MAX];
    float *y[CV_MATMUL_MULTI_MAX];
    int fmt[CV_MATMUL_MULTI_MAX];            /* which activation format w[i] dots with */
    int64_t item_rows[CV_MATMUL_MULTI_MAX];
    int64_t first_item[CV_MATMUL_MULTI_MAX + 1]; /* w[i]'s items: first_item[i] .. [i+1]-1 */
    size_t fmt_off[CV_MATMUL_MULTI_MAX];     /* a format's rows in a thread's scratch part */
    size_t fmt_bytes[CV_MATMUL_MULTI_MAX];   /* one converted row, 64-byte aligned; 0: x */
    const float *x;
    int32_t n;
    size_t per_thread;
    char *scratch;
    uint8_t converted[1024]; /* bit f: thread ith has converted format f */
} mm_multi;

/* Whether kernel ka's activations for wa are the same bytes as kb's for wb: the same
 * conversion of the same weight type, or quant's conversion to the same vec_dot type
 * (which depends on the weight type only through that). */
static int same_act(const cv_matmul_kernel *ka, const cv_tensor *wa, const cv_matmul_kernel *kb,
                    const cv_tensor *wb) {
    if (ka->convert != kb->convert || ka->act_row_bytes != kb->act_row_bytes) return 0;
    if (wa->type == wb->type) return 1;
    return ka->convert == cv_matmul_vec_dot_act_convert &&
           cv_type_vec_dot_type(wa->type) == cv_type_vec_dot_type(wb->type);
}

static void mm_multi_item(void *ctx, int64_t item, int ith) {
    mm_multi *m = ctx;
    int i = 0;
    while (item >= m->first_item[i + 1]) i++;
    const cv_tensor *w = m->w[i];
    const int f = m->fmt[i];
    const void *act = m->x;
    size_t stride = (size_t)w->cols * sizeof(float);
    if (m->fmt_bytes[f]) {
        char *a = m->scratch + (size_t)ith * m->per_thread + m->fmt_off[f];
        if (!(m->converted[ith] & (1u << f))) {
            for (int32_t t = 0; t < m->n; t++)
                m->k[i]->convert(w->type, m->x + (int64_t)t * w->cols, a + t * m->fmt_bytes[f], w->cols);
            m->converted[ith] |= (uint8_t)(1u << f);
        }
        act = a;
        stride = m->fmt_bytes[f];
    }
    int64_t r0 = (item - m->first_item[i]) * m->item_rows[i];
    int64_t r1 = r0 + m->item_rows[i] < w->rows ? r0 + m->item_rows[i] : w->rows;
    m->k[i]->rows(w, r0, r1, act, stride, m->n, m->y[i], w->rows);
}

void cv_matmul_run_multi(cv_threadpool *pool, int count, const cv_matmul_kernel *const *k, void *scratch,
                         size_t scratch_bytes, const cv_tensor *const *w, const float *x, float *const *y,
                         int32_t n) {
    int nth = cv_threadpool_size(pool);
    int ok = count >= 1 && count <= CV_MATMUL_MULTI_MAX && n <= PRIVATE_ACT_MAX && nth <= 1024;
    mm_multi m = {.count = count, .x = x, .n = n, .scratch = scratch};
    int64_t macs = 0;
    int n_fmt = 0, first_of[CV_MATMUL_MULTI_MAX]; /* format f's first weight */
    for (int i = 0; ok && i < count; i++) {
        ok = w[i]->cols == w[0]->cols;
        m.k[i] = k[i], m.w[i] = w[i], m.y[i] = y[i];
        macs += w[i]->rows * w[i]->cols * (int64_t)n;
        int f = 0;
        while (f < n_fmt && !same_act(k[first_of[f]], w[first_of[f]], k[i], w[i])) f++;
        if (f == n_fmt) {
            first_of[n_fmt++] = i;
            m.fmt_bytes[f] = (k[i]->act_row_bytes(w[i]->type, w[i]->cols) + 63) & ~(size_t)63;
            m.fmt_off[f] = m.per_thread;
            m.per_thread += (size_t)n * m.fmt_bytes[f];
        }
        m.fmt[i] = f;
    }
    /* Only decode-sized batches, whose rows every thread converts itself (see
     * cv_matmul_run_strided); anything else runs one weight at a time. */
    if (!ok || (size_t)nth * m.per_thread > scratch_bytes) {
        for (int i = 0; i < count; i++) cv_matmul_run(pool, k[i], scratch, scratch_bytes, w[i], x, y[i], n);
        return;
    }
    if (macs < SERIAL_MACS) nth = 1;
    for (int i = 0; i < count; i++) {
        m.item_rows[i] = item_rows(w[i], n, nth);
        m.first_item[i + 1] = m.first_item[i] + (w[i]->rows + m.item_rows[i] - 1) / m.item_rows[i];
    }
    memset(m.converted, 0, (size_t)nth);
    if (nth == 1) {
        for (int64_t it = 0; it < m.first_item[count]; it++) mm_multi_item(&m, it, 0);
        return;
    }
    cv_threadpool_for(pool, mm_multi_item, &m, m.first_item[count]);
}
