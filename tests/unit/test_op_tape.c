/* op_tape: every compute op, called through a deferring ops table and replayed from
 * the tape onto the CPU backend, computes exactly what the direct call computes (so no
 * argument is lost or swapped on the way); equal calls give equal tapes and a change of
 * any one argument (a pointer, an int, a float, a field of a struct argument) does not.
 * Fresh random data each run; CORVID_TEST_SEED=N replays one. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cpu_backend.h"
#include "op_tape.h"
#include "quant.h"
#include "../support/test_rng.h"

static cv_test_rng g_rng;
static cv_backend *g_cpu;

/* ---- a backend that only records ---- */

typedef struct rec_backend {
    cv_backend base;
    cv_op_tape tape;
} rec_backend;

static void rec_sink(cv_backend *be, const cv_op *op) {
    cv_error err = {0};
    if (cv_op_tape_push(&((rec_backend *)be)->tape, op, &err)) fail_msg("%s", err.msg);
}

static cv_op_defer_table g_rec_table;

static void rec_init(rec_backend *r) {
    memset(r, 0, sizeof *r);
    r->base = (cv_backend){&g_rec_table.ops, CV_DEVICE_CPU, "recorder"};
}

/* ---- one call of every op on an arena of buffers ---- */

enum { N = 5, DIM = 64, HEADS = 4, KV_HEADS = 2, HD = 16, ROWS = 48, BS = 4, NBLK = 8, LEN = N * DIM };

typedef struct arena {
    float x[N * DIM], xn[N * DIM], y[N * ROWS], e[N * DIM], q[N * HEADS * HD], k[N * KV_HEADS * HD];
    float v[N * KV_HEADS * HD], att[N * HEADS * HD], g[LEN], u[LEN], o[LEN], sm[N * ROWS];
    uint16_t kpool[NBLK * BS * KV_HEADS * HD], vpool[NBLK * BS * KV_HEADS * HD];
    cv_attn_row rows[N];
} arena;

/* What every call shares and only reads: weights, tables, parameters. */
typedef struct fixture {
    cv_tensor w, emb;
    unsigned char wq[ROWS * 68]; /* Q8_0: 2 blocks of 34 bytes per row of 64 */
    float emb_f[ROWS * DIM], nw[DIM], bias[HEADS * HD], ff[HD / 2];
    int32_t ids[N], pos[N], table[NBLK];
    cv_rope_params rope;
    cv_attn_params ap;
    float eps, s, cap;
    int add_one;
} fixture;

static float frand(float a) {
    return (float)((double)(cv_test_rng_next(&g_rng) >> 11) / 9007199254740992.0 * 2 - 1) * a;
}

static void fill(float *x, size_t n, float a) {
    for (size_t i = 0; i < n; i++) x[i] = frand(a);
}

static void make_fixture(fixture *f) {
    memset(f, 0, sizeof *f);
    float wf[ROWS * DIM];
    fill(wf, ROWS * DIM, 1);
    for (int r = 0; r < ROWS; r++) cv_quantize_row(CV_TYPE_Q8_0, wf + r * DIM, f->wq + r * 68, DIM);
    cv_tensor host = {CV_TYPE_Q8_0, ROWS, DIM, 68, f->wq, CV_DEVICE_CPU, 0};
    cv_error err = {0};
    if (g_cpu->ops->weight_load(g_cpu, &host, &f->w, &err)) fail_msg("%s", err.msg);
    fill(f->emb_f, ROWS * DIM, 1);
    f->emb = (cv_tensor){CV_TYPE_F32, ROWS, DIM, DIM * sizeof(float), f->emb_f, CV_DEVICE_CPU, 0};
    fill(f->nw, DIM, 1);
    fill(f->bias, HEADS * HD, 1);
    for (int i = 0; i < HD / 2; i++) f->ff[i] = 1 + fabsf(frand(3));
    for (int i = 0; i < N; i++) {
        f->ids[i] = (int32_t)(cv_test_rng_next(&g_rng) % ROWS);
        f->pos[i] = 3 + i; /* positions 3..7: two blocks of the table */
    }
    for (int i = 0; i < NBLK; i++) f->table[i] = NBLK - 1 - i;
    f->rope = (cv_rope_params){CV_ROPE_NEOX, HD, 10000.0f, 0.5f, f->ff, 1.19f, 1.0f, 1.0f, 5.0f};
    f->ap = (cv_attn_params){HEADS, 0.25f, 30.0f};
    f->eps = 1e-5f, f->s = 0.7f, f->cap = 1.5f, f->add_one = 1;
}

static void make_arena(arena *a, const fixture *f) {
    memset(a, 0, sizeof *a);
    fill(a->x, N * DIM, 2);
    fill(a->q, N * HEADS * HD, 1);
    fill(a->k, N * KV_HEADS * HD, 1);
    fill(a->v, N * KV_HEADS * HD, 1);
    fill(a->g, LEN, 3);
    fill(a->u, LEN, 1);
    fill(a->sm, N * ROWS, 5);
    for (int i = 0; i < N; i++) a->rows[i] = (cv_attn_row){f->table, f->pos[i], i == 2 ? 1 : 0};
}

/* Every compute op once, in an order where later ops read what earlier ones wrote. */
static void run_all(const cv_backend_ops *ops, cv_backend *be, const fixture *f, arena *a) {
    const cv_kv_layer kv = {a->kpool, a->vpool, CV_TYPE_F16, BS, KV_HEADS, HD, 0};
    ops->matmul(be, &f->w, a->x, a->y, N);
    ops->get_rows(be, &f->emb, f->ids, N, a->e);
    ops->rmsnorm(be, a->x, f->nw, a->xn, N, DIM, f->eps, f->add_one);
    ops->rope(be, &f->rope, a->q, N, HEADS, HD, f->pos);
    ops->softmax(be, a->sm, N, ROWS);
    ops->glu(be, CV_GLU_GEGLU, a->g, a->u, a->o, LEN);
    ops->glu(be, CV_GLU_SWIGLU, a->o, a->u, a->g, LEN);
    ops->add(be, a->x, a->e, a->x, LEN);
    ops->scale(be, a->e, f->s, LEN);
    ops->softcap(be, a->y, f->cap, N * ROWS);
    ops->add_bias(be, a->q, f->bias, N, HEADS * HD);
    ops->kv_store(be, &kv, a->rows, N, a->k, a->v);
    ops->attention(be, &f->ap, &kv, a->rows, N, a->q, a->att);
}

static int setup(void **state) {
    (void)state;
    cv_op_defer_init(&g_rec_table, rec_sink);
    cv_error err = {0};
    return cv_cpu_backend_create(&(cv_cpu_options){.n_threads = 1}, &g_cpu, &err) == CV_OK ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    cv_backend_destroy(g_cpu);
    return 0;
}

static void test_replay_computes_the_direct_calls(void **state) {
    (void)state;
    static fixture f;
    static arena direct, replayed;
    make_fixture(&f);
    make_arena(&direct, &f);
    memcpy(&replayed, &direct, sizeof direct);
    rec_backend rec;
    rec_init(&rec);
    run_all(&g_rec_table.ops, &rec.base, &f, &replayed);
    assert_int_equal(rec.tape.n, 13);
    assert_memory_equal(&replayed, &direct, sizeof direct); /* recording computes nothing */
    run_all(g_cpu->ops, g_cpu, &f, &direct);
    cv_op_tape_apply(&rec.tape, g_cpu->ops, g_cpu);
    /* bytes of the direct run that the replay did not reproduce, by buffer */
    const struct { const char *name; const void *a, *b; size_t n; } bufs[] = {
#define B(field) {#field, direct.field, replayed.field, sizeof direct.field}
        B(x), B(xn), B(y), B(e), B(q), B(att), B(g), B(o), B(sm), B(kpool), B(vpool),
#undef B
    };
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        if (memcmp(bufs[i].a, bufs[i].b, bufs[i].n))
            fail_msg("replayed tape differs from the direct calls in %s", bufs[i].name);
    /* and the direct run changed every one of them, so the comparison means something */
    arena fresh;
    make_arena(&fresh, &f);
    assert_memory_not_equal(fresh.att, direct.att, sizeof fresh.att);
    assert_memory_not_equal(fresh.kpool, direct.kpool, sizeof fresh.kpool);
    cv_op_tape_free(&rec.tape);
    g_cpu->ops->weight_release(g_cpu, &f.w);
}

/* Records run_all on (f, a) into a fresh tape. */
static void record(const fixture *f, arena *a, cv_op_tape *out) {
    rec_backend rec;
    rec_init(&rec);
    run_all(&g_rec_table.ops, &rec.base, f, a);
    *out = rec.tape;
}

static void test_tape_equality_is_argument_equality(void **state) {
    (void)state;
    static fixture f, f2;
    static arena a, b;
    make_fixture(&f);
    make_arena(&a, &f);
    cv_op_tape t1, t2;
    record(&f, &a, &t1);
    /* other contents of the same buffers: the same calls */
    make_arena(&b, &f);
    memcpy(a.x, b.x, sizeof a.x);
    record(&f, &a, &t2);
    assert_true(cv_op_tape_equal(&t1, &t2));
    cv_op_tape_free(&t2);
    /* one changed argument at a time, each of another kind */
    for (int change = 0; change < 8; change++) {
        f2 = f;
        arena *target = &a;
        switch (change) {
        case 0: f2.eps *= 2; break;                              /* a float */
        case 1: f2.add_one = 0; break;                           /* an int */
        case 2: f2.w.rows--; break;                              /* a tensor field */
        case 3: f2.rope.freq_base = 500000.0f; break;            /* a rope field */
        case 4: f2.rope.freq_factors = NULL; break;              /* a pointer field */
        case 5: f2.ap.softcap = 0; break;                        /* an attention field */
        case 6: f2.emb.row_stride += 4; break;                   /* a size_t field */
        case 7: target = &b; break;                              /* every buffer elsewhere */
        }
        record(&f2, target, &t2);
        if (cv_op_tape_equal(&t1, &t2)) fail_msg("change %d left the tape equal", change);
        assert_int_equal(t2.n, t1.n);
        cv_op_tape_free(&t2);
    }
    /* clearing keeps the memory and forgets the ops */
    cv_op_tape_clear(&t1);
    assert_int_equal(t1.n, 0);
    assert_non_null(t1.ops);
    cv_op_tape empty = {0};
    assert_true(cv_op_tape_equal(&t1, &empty));
    cv_op_tape_free(&t1);
    g_cpu->ops->weight_release(g_cpu, &f.w);
}

int main(void) {
    g_rng = cv_test_rng_new(cv_test_seed("test_op_tape"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_replay_computes_the_direct_calls),
        cmocka_unit_test(test_tape_equality_is_argument_equality),
    };
    return cmocka_run_group_tests_name("op_tape", tests, setup, teardown);
}
