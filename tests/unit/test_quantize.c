/* Tests for server/quantize and server/synthetic: llama.cpp's stories260K files
 * against our reference quantizers (byte for byte), model rewrites within each
 * format's error, the recipes' per-tensor rules, and synthetic models (shapes, keys,
 * statistics, determinism). Fixtures from tests/data/models and /vocab. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gguf.h"
#include "quant.h"
#include "quantize.h"
#include "synthetic.h"
#include "../support/test_models.h"
#include "../support/test_tmpdir.h"
#include "../support/test_data.h"

static char g_dir[200];
static uint64_t g_seed;

static void fixture(char *out, size_t n, const char *rel) { cv_test_data(out, n, rel); }

static void tmp_path(char *out, size_t n, const char *name) {
    assert_true(snprintf(out, n, "%s/%s", g_dir, name) < (int)n);
}

static cv_gguf *open_or_fail(const char *path) {
    cv_gguf *g = NULL;
    cv_error e = {0};
    if (cv_gguf_open(path, &g, &e)) fail_msg("%s: %s", path, e.msg);
    return g;
}

static int64_t n_elems(const cv_gguf_tensor *t) {
    int64_t n = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) n *= t->ne[d];
    return n;
}

static float *dequantize_tensor(const cv_gguf_tensor *t) {
    const int64_t n = n_elems(t), rows = n / t->ne[0];
    float *x = malloc((size_t)n * sizeof *x);
    assert_non_null(x);
    const size_t rb = cv_type_row_bytes(t->type, t->ne[0]);
    for (int64_t r = 0; r < rows; r++)
        cv_dequantize_row(t->type, (const uint8_t *)t->data + r * rb, x + r * t->ne[0], t->ne[0]);
    return x;
}

static char *tensor_name(const cv_gguf_tensor *t, char *buf, size_t n) {
    snprintf(buf, n, "%.*s", (int)t->name.len, t->name.ptr);
    return buf;
}

/* Relative RMS error of a tensor against the F32 original. Bounds for trained
 * weights: about 1.5x what these tensors reach. */
static double rel_rms(const float *a, const float *ref, int64_t n) {
    double e = 0, s = 0;
    for (int64_t i = 0; i < n; i++) {
        e += (double)(a[i] - ref[i]) * (a[i] - ref[i]);
        s += (double)ref[i] * ref[i];
    }
    return s ? sqrt(e / s) : sqrt(e);
}

static double model_bound(cv_type t) {
    switch (t) {
    case CV_TYPE_F32: return 0;
    case CV_TYPE_F16: return 5e-4;
    case CV_TYPE_BF16: return 4e-3;
    case CV_TYPE_Q8_0: return 0.01;
    case CV_TYPE_Q6_K: return 0.03;
    case CV_TYPE_Q5_0: return 0.07;
    case CV_TYPE_Q4_0: return 0.15;
    case CV_TYPE_Q4_K: return 0.1;
    default: return 0;
    }
}

/* Every tensor of `q` against the same-named F32 tensor of `f`: same shape, error
 * within the bound of q's type. */
static void check_against_f32(const cv_gguf *f, const cv_gguf *q, const char *label) {
    double worst[CV_TYPE_COUNT] = {0};
    assert_int_equal(cv_gguf_n_tensors(f), cv_gguf_n_tensors(q));
    for (int64_t i = 0; i < cv_gguf_n_tensors(q); i++) {
        const cv_gguf_tensor *tq = cv_gguf_tensor_at(q, i);
        char name[128];
        const cv_gguf_tensor *tf = cv_gguf_find_tensor(f, tensor_name(tq, name, sizeof name));
        assert_non_null(tf);
        assert_int_equal(tf->n_dims, tq->n_dims);
        for (int d = 0; d < 4; d++) assert_int_equal(tf->ne[d], tq->ne[d]);
        float *x = dequantize_tensor(tq);
        const double err = rel_rms(x, tf->data, n_elems(tq));
        if (err > model_bound(tq->type))
            fail_msg("%s (%s): relative RMS error %.4f > %.4f", name, cv_type_get(tq->type)->name, err,
                     model_bound(tq->type));
        if (err > worst[tq->type]) worst[tq->type] = err;
        free(x);
    }
    print_message("  %s: worst relative RMS error", label);
    for (int t = 0; t < CV_TYPE_COUNT; t++)
        if (worst[t] > 0) print_message(" %s %.4f (bound %.3f)", cv_type_get(t)->name, worst[t], model_bound(t));
    print_message("\n");
}

/* ---- llama.cpp's files ---- */

static void test_llamacpp_files_match_f32_within_bounds(void **state) {
    (void)state;
    char pf[512], p8[512], p4[512];
    fixture(pf, sizeof pf, "models/stories260K.gguf");
    fixture(p8, sizeof p8, "models/stories260K-Q8_0-mixed.gguf");
    fixture(p4, sizeof p4, "models/stories260K-Q4_0-mixed.gguf");
    cv_gguf *f = open_or_fail(pf), *q8 = open_or_fail(p8), *q4 = open_or_fail(p4);
    check_against_f32(f, q8, "llama.cpp Q8_0");
    check_against_f32(f, q4, "llama.cpp Q4_0");
    cv_gguf_close(f);
    cv_gguf_close(q8);
    cv_gguf_close(q4);
}

/* Our reference quantizers on the F32 weights give exactly llama-quantize's bytes. */
static void test_requantized_f32_equals_llamacpp_bytes(void **state) {
    (void)state;
    const char *files[] = {"models/stories260K-Q8_0-mixed.gguf", "models/stories260K-Q4_0-mixed.gguf"};
    char pf[512], pq[512];
    fixture(pf, sizeof pf, "models/stories260K.gguf");
    cv_gguf *f = open_or_fail(pf);
    for (size_t k = 0; k < 2; k++) {
        fixture(pq, sizeof pq, files[k]);
        cv_gguf *q = open_or_fail(pq);
        int quantized = 0;
        for (int64_t i = 0; i < cv_gguf_n_tensors(q); i++) {
            const cv_gguf_tensor *tq = cv_gguf_tensor_at(q, i);
            char name[128];
            const cv_gguf_tensor *tf = cv_gguf_find_tensor(f, tensor_name(tq, name, sizeof name));
            assert_non_null(tf);
            uint8_t *buf = malloc(tq->nbytes);
            assert_non_null(buf);
            cv_error e;
            assert_int_equal(cv_convert_rows(CV_TYPE_F32, tf->data, tq->type, buf, tq->ne[0],
                                             n_elems(tq) / tq->ne[0], 2, &e), CV_OK);
            if (memcmp(buf, tq->data, tq->nbytes)) fail_msg("%s: %s bytes differ from llama.cpp's", files[k], name);
            quantized += tq->type != CV_TYPE_F32;
            free(buf);
        }
        assert_true(quantized >= 30);  /* 2 + 5 x 6 tensors are quantized in these files */
        cv_gguf_close(q);
    }
    cv_gguf_close(f);
}

/* ---- cv_quantize_model ---- */

static void test_quantize_stories_each_recipe(void **state) {
    (void)state;
    char pf[512], out[512], ref[512];
    fixture(pf, sizeof pf, "models/stories260K.gguf");
    cv_gguf *f = open_or_fail(pf);
    for (int r = 0; r < CV_QRECIPE_COUNT; r++) {
        const cv_qrecipe_info *ri = cv_qrecipe_get((cv_qrecipe)r);
        snprintf(out, sizeof out, "%s/stories-%s.gguf", g_dir, ri->name);
        cv_error e = {0};
        const cv_quantize_opts o = {1 + (int)(g_seed % 3), NULL};
        if (cv_quantize_model(pf, out, (cv_qrecipe)r, &o, &e)) fail_msg("%s: %s", ri->name, e.msg);
        cv_gguf *q = open_or_fail(out);
        check_against_f32(f, q, ri->name);
        /* metadata: everything copied, the file type updated */
        assert_int_equal(cv_gguf_get_u32(q, "general.file_type", 999), ri->file_type);
        assert_int_equal(cv_gguf_get_u32(q, "general.quantization_version", 0), 2);
        for (int64_t i = 0; i < cv_gguf_n_kv(f); i++) {
            const cv_str k = cv_gguf_kv_key(f, i);
            char key[128];
            snprintf(key, sizeof key, "%.*s", (int)k.len, k.ptr);
            const int64_t j = cv_gguf_find_key(q, key);
            assert_true(j >= 0);
            uint64_t la, lb;
            const void *a = cv_gguf_kv_raw(f, i, &la), *b = cv_gguf_kv_raw(q, j, &lb);
            assert_int_equal(la, lb);
            assert_memory_equal(a, b, la);
        }
        /* types: as the recipe picks them; 1-D and 172-column tensors in F32 */
        int n_f32_2d = 0;
        for (int64_t i = 0; i < cv_gguf_n_tensors(q); i++) {
            const cv_gguf_tensor *t = cv_gguf_tensor_at(q, i);
            char name[128];
            tensor_name(t, name, sizeof name);
            assert_int_equal(t->type, cv_qrecipe_pick((cv_qrecipe)r, name, t->n_dims, t->ne, 5, 1, NULL));
            if (t->n_dims == 1) assert_int_equal(t->type, CV_TYPE_F32);
            n_f32_2d += t->n_dims == 2 && t->type == CV_TYPE_F32;
        }
        assert_int_equal(n_f32_2d, r == CV_QRECIPE_F32 ? 5 * 7 + 2 : ri->base == CV_TYPE_F16 || ri->base == CV_TYPE_BF16 ? 0 : 5);
        /* the pure 32-block recipes reproduce llama.cpp's tensors */
        if (r == CV_QRECIPE_Q8_0 || r == CV_QRECIPE_Q4_0) {
            snprintf(ref, sizeof ref, "models/stories260K-%s-mixed.gguf", ri->name);
            char pr[512];
            fixture(pr, sizeof pr, ref);
            cv_gguf *l = open_or_fail(pr);
            for (int64_t i = 0; i < cv_gguf_n_tensors(q); i++) {
                const cv_gguf_tensor *a = cv_gguf_tensor_at(q, i);
                char name[128];
                const cv_gguf_tensor *b = cv_gguf_find_tensor(l, tensor_name(a, name, sizeof name));
                assert_non_null(b);
                assert_int_equal(a->type, b->type);
                assert_int_equal(a->nbytes, b->nbytes);
                assert_memory_equal(a->data, b->data, a->nbytes);
            }
            cv_gguf_close(l);
        }
        cv_gguf_close(q);
        unlink(out);
    }
    cv_gguf_close(f);
}

static void test_quantize_errors(void **state) {
    (void)state;
    char pf[512], out[512];
    cv_error e = {0};
    fixture(pf, sizeof pf, "models/stories260K.gguf");
    tmp_path(out, sizeof out, "never.gguf");
    const cv_status st = cv_quantize_model("/nonexistent/in.gguf", out, CV_QRECIPE_Q8_0, NULL, &e);
    assert_int_not_equal(st, CV_OK);
    assert_int_equal(st, e.code);
    assert_non_null(strstr(e.msg, "/nonexistent/in.gguf"));
    assert_int_equal(access(out, F_OK), -1);
    assert_int_equal(cv_quantize_model(pf, pf, CV_QRECIPE_Q8_0, NULL, &e), CV_EINVAL);
    assert_non_null(strstr(e.msg, "is the input file"));

    /* a tensor type corvid cannot convert is named in the error */
    cv_gguf_writer *w = cv_gguf_writer_new();
    assert_non_null(w);
    uint8_t blocks[2 * 20] = {0};
    const int64_t ne[2] = {32, 2};
    char in[512];
    tmp_path(in, sizeof in, "q4_1.gguf");
    assert_int_equal(cv_gguf_set_str(w, "general.architecture", "llama", &e), CV_OK);
    assert_int_equal(cv_gguf_add_tensor(w, "blk.0.attn_q.weight", CV_TYPE_Q4_1, 2, ne, blocks, &e), CV_OK);
    assert_int_equal(cv_gguf_write(w, in, &e), CV_OK);
    cv_gguf_writer_free(w);
    assert_int_equal(cv_quantize_model(in, out, CV_QRECIPE_Q8_0, NULL, &e), CV_EUNSUPPORTED);
    assert_non_null(strstr(e.msg, "blk.0.attn_q.weight"));
    assert_non_null(strstr(e.msg, "Q4_1"));
    assert_int_equal(access(out, F_OK), -1);
    unlink(in);

    cv_qrecipe r;
    assert_int_equal(cv_qrecipe_parse("q4_k_m", &r, &e), CV_OK);
    assert_int_equal(r, CV_QRECIPE_Q4_K_M);
    assert_int_equal(cv_qrecipe_parse("Q3_K", &r, &e), CV_EINVAL);
    assert_non_null(strstr(e.msg, "'Q3_K'"));
}

static void test_recipe_rules(void **state) {
    (void)state;
    const int64_t ne[2] = {2048, 2048}, odd[2] = {172, 64}, k32[2] = {64, 64};
    /* 1-D and non-weight tensors stay F32 */
    assert_int_equal(cv_qrecipe_pick(CV_QRECIPE_Q4_0, "blk.0.attn_norm.weight", 1, ne, 22, 1, NULL), CV_TYPE_F32);
    assert_int_equal(cv_qrecipe_pick(CV_QRECIPE_Q4_0, "blk.0.attn_q.bias", 1, ne, 22, 1, NULL), CV_TYPE_F32);
    /* pure recipes */
    assert_int_equal(cv_qrecipe_pick(CV_QRECIPE_Q4_0, "output.weight", 2, ne, 22, 1, NULL), CV_TYPE_Q4_0);
    assert_int_equal(cv_qrecipe_pick(CV_QRECIPE_Q6_K, "blk.3.ffn_up.weight", 2, ne, 22, 1, NULL), CV_TYPE_Q6_K);
    /* Q4_K_M on 22 layers: llama.cpp's use_more_bits picks these layers */
    const char *note;
    char name[64];
    const int more[22] = {1, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 1, 1};
    for (int l = 0; l < 22; l++) {
        const cv_type want = more[l] ? CV_TYPE_Q6_K : CV_TYPE_Q4_K;
        snprintf(name, sizeof name, "blk.%d.attn_v.weight", l);
        assert_int_equal(cv_qrecipe_pick(CV_QRECIPE_Q4_K_M, name, 2, ne, 22, 1, &note), want);
        assert_null(note);
        snprintf(name, sizeof name, "blk.%d.ffn_down.weight", l);
        assert_int_equal(cv_qrecipe_pick(CV_QRECIPE_Q4_K_M, name, 2, ne, 22, 1, NULL), want);
        snprintf(name, sizeof name, "blk.%d.attn_k.weight", l);
        assert_int_equal(cv_qrecipe_pick(CV_QRECIPE_Q4_K_M, name, 2, ne, 22, 1, NULL), CV_TYPE_Q4_K);
    }
    assert_int_equal(cv_qrecipe_pick(CV_QRECIPE_Q4_K_M, "output.weight", 2, ne, 22, 1, NULL), CV_TYPE_Q6_K);
    assert_int_equal(cv_qrecipe_pick(CV_QRECIPE_Q4_K_M, "token_embd.weight", 2, ne, 22, 1, NULL), CV_TYPE_Q4_K);
    /* tied embeddings: token_embd is the output matrix */
    assert_int_equal(cv_qrecipe_pick(CV_QRECIPE_Q4_K_M, "token_embd.weight", 2, ne, 22, 0, NULL), CV_TYPE_Q6_K);
    /* rows that do not divide: K-quant fallbacks, then F32, with a note */
    assert_int_equal(cv_qrecipe_pick(CV_QRECIPE_Q4_K, "blk.0.attn_q.weight", 2, k32, 5, 1, &note), CV_TYPE_Q5_0);
    assert_non_null(note);
    assert_int_equal(cv_qrecipe_pick(CV_QRECIPE_Q4_K_M, "output.weight", 2, k32, 5, 1, NULL), CV_TYPE_Q8_0);
    assert_int_equal(cv_qrecipe_pick(CV_QRECIPE_Q4_0, "blk.0.ffn_down.weight", 2, odd, 5, 1, &note), CV_TYPE_F32);
    assert_non_null(strstr(note, "F32"));
    assert_int_equal(cv_qrecipe_pick(CV_QRECIPE_F16, "blk.0.ffn_down.weight", 2, odd, 5, 1, &note), CV_TYPE_F16);
    assert_null(note);
}

/* ---- synthetic models ---- */

static void synth(const char *shape, cv_qrecipe r, uint64_t seed, const char *vocab, int threads, const char *out) {
    const cv_synth_opts o = {.recipe = r, .seed = seed, .vocab_from = vocab, .n_threads = threads};
    cv_error e = {0};
    if (cv_synth_write(cv_synth_find(shape), &o, out, &e)) fail_msg("%s: %s", shape, e.msg);
}

static int files_equal(const char *a, const char *b) {
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    assert_non_null(fa);
    assert_non_null(fb);
    int ca, cb, same = 1;
    do {
        ca = fgetc(fa);
        cb = fgetc(fb);
        if (ca != cb) same = 0;
    } while (same && ca != EOF);
    fclose(fa);
    fclose(fb);
    return same;
}

static void test_synthetic_deterministic(void **state) {
    (void)state;
    char a[512], b[512], c[512];
    tmp_path(a, sizeof a, "synth-a.gguf");
    tmp_path(b, sizeof b, "synth-b.gguf");
    tmp_path(c, sizeof c, "synth-c.gguf");
    const uint64_t seed = g_seed;
    synth("tiny", CV_QRECIPE_Q4_K_M, seed, NULL, 1, a);
    synth("tiny", CV_QRECIPE_Q4_K_M, seed, NULL, 3, b);  /* thread count does not matter */
    synth("tiny", CV_QRECIPE_Q4_K_M, seed + 1, NULL, 2, c);
    assert_true(files_equal(a, b));
    assert_false(files_equal(a, c));
    unlink(a);
    unlink(b);
    unlink(c);
}

static void test_synthetic_shape_and_statistics(void **state) {
    (void)state;
    char out[512];
    tmp_path(out, sizeof out, "synth-qwen.gguf");
    synth("tiny-qwen2", CV_QRECIPE_F32, g_seed, NULL, 2, out);
    const cv_synth_shape *s = cv_synth_find("tiny-qwen2");
    cv_gguf *g = open_or_fail(out);
    assert_int_equal(cv_gguf_get_str(g, "general.architecture").len, 5);
    assert_int_equal(cv_gguf_get_u32(g, "qwen2.embedding_length", 0), s->n_embd);
    assert_int_equal(cv_gguf_get_u32(g, "qwen2.block_count", 0), s->n_layer);
    assert_int_equal(cv_gguf_get_u32(g, "qwen2.attention.head_count_kv", 0), s->n_head_kv);
    assert_int_equal(cv_gguf_get_u32(g, "qwen2.rope.dimension_count", 0), s->n_embd / s->n_head);
    assert_true(cv_gguf_get_f32(g, "qwen2.rope.freq_base", 0) == 1e6f);
    /* tensors: 1 + layers x 12 + 1 (tied: no output.weight) */
    assert_int_equal(cv_gguf_n_tensors(g), 2 + 12 * s->n_layer);
    assert_null(cv_gguf_find_tensor(g, "output.weight"));
    const cv_gguf_tensor *k = cv_gguf_find_tensor(g, "blk.1.attn_k.weight");
    assert_non_null(k);
    assert_int_equal(k->ne[0], s->n_embd);
    assert_int_equal(k->ne[1], s->n_embd / s->n_head * s->n_head_kv);
    assert_non_null(cv_gguf_find_tensor(g, "blk.1.attn_v.bias"));
    const cv_gguf_tensor *norm = cv_gguf_find_tensor(g, "output_norm.weight");
    for (int i = 0; i < norm->ne[0]; i++) assert_true(((const float *)norm->data)[i] == 1.0f);
    /* weights: mean ~0, sd ~0.02, bounded by the sum of four uniforms (3.46 sd) */
    const cv_gguf_tensor *e = cv_gguf_find_tensor(g, "token_embd.weight");
    const float *x = e->data;
    double m = 0, v = 0;
    const int64_t n = n_elems(e);
    for (int64_t i = 0; i < n; i++) {
        m += x[i];
        v += (double)x[i] * x[i];
        assert_true(fabsf(x[i]) <= 0.02f * 3.47f);
    }
    m /= n;
    v = sqrt(v / n - m * m);
    assert_true(fabs(m) < 0.001);
    assert_true(fabs(v - 0.02) < 0.001);
    /* the made-up vocabulary: specials, 256 byte tokens, distinct pieces */
    cv_gguf_arr tok;
    assert_true(cv_gguf_get_arr(g, "tokenizer.ggml.tokens", &tok));
    assert_int_equal(tok.n, s->n_vocab);
    const cv_str b0 = cv_gguf_arr_str(&tok, 3), bff = cv_gguf_arr_str(&tok, 258);
    assert_memory_equal(b0.ptr, "<0x00>", 6);
    assert_memory_equal(bff.ptr, "<0xFF>", 6);
    for (uint64_t i = 0; i < tok.n; i++)
        for (uint64_t j = i + 1; j < tok.n; j++) {
            const cv_str p = cv_gguf_arr_str(&tok, i), q = cv_gguf_arr_str(&tok, j);
            assert_false(p.len == q.len && !memcmp(p.ptr, q.ptr, p.len));
        }
    assert_int_equal(cv_gguf_get_token_id(g, "tokenizer.ggml.bos_token_id"), 1);
    cv_gguf_close(g);
    unlink(out);
}

static void test_synthetic_vocab_from_file(void **state) {
    (void)state;
    char out[512], voc[512];
    tmp_path(out, sizeof out, "synth-vocab.gguf");
    fixture(voc, sizeof voc, "vocab/ggml-vocab-llama-spm.gguf");
    synth("tiny", CV_QRECIPE_Q8_0, g_seed, voc, 2, out);
    cv_gguf *g = open_or_fail(out), *v = open_or_fail(voc);
    cv_gguf_arr a, b;
    assert_true(cv_gguf_get_arr(g, "tokenizer.ggml.tokens", &a));
    assert_true(cv_gguf_get_arr(v, "tokenizer.ggml.tokens", &b));
    assert_int_equal(a.n, b.n);
    for (uint64_t i = 0; i < a.n; i += 97) {
        const cv_str p = cv_gguf_arr_str(&a, i), q = cv_gguf_arr_str(&b, i);
        assert_int_equal(p.len, q.len);
        assert_memory_equal(p.ptr, q.ptr, p.len);
    }
    /* the model follows the file's vocabulary size; the rest is the shape's */
    assert_int_equal(cv_gguf_get_u32(g, "llama.vocab_size", 0), b.n);
    assert_int_equal(cv_gguf_find_tensor(g, "output.weight")->ne[1], (int64_t)b.n);
    assert_int_equal(cv_gguf_get_u32(g, "llama.embedding_length", 0), cv_synth_find("tiny")->n_embd);
    assert_int_equal(cv_gguf_find_tensor(g, "blk.0.ffn_up.weight")->type, CV_TYPE_Q8_0);
    cv_gguf_close(g);
    cv_gguf_close(v);
    unlink(out);
}

/* K-quants on rows of 256+: a synthetic F32 model through the K recipes. */
static void test_quantize_k_recipes_on_synthetic(void **state) {
    (void)state;
    char pf[512], out[512];
    tmp_path(pf, sizeof pf, "synth-f32.gguf");
    tmp_path(out, sizeof out, "synth-k.gguf");
    synth("tiny", CV_QRECIPE_F32, g_seed, NULL, 2, pf);
    cv_gguf *f = open_or_fail(pf);
    const cv_qrecipe rs[] = {CV_QRECIPE_Q4_K, CV_QRECIPE_Q6_K, CV_QRECIPE_Q4_K_M};
    for (size_t k = 0; k < 3; k++) {
        cv_error e = {0};
        if (cv_quantize_model(pf, out, rs[k], NULL, &e)) fail_msg("%s", e.msg);
        cv_gguf *q = open_or_fail(out);
        check_against_f32(f, q, cv_qrecipe_get(rs[k])->name);
        assert_int_equal(cv_gguf_find_tensor(q, "output.weight")->type, rs[k] == CV_QRECIPE_Q4_K ? CV_TYPE_Q4_K : CV_TYPE_Q6_K);
        cv_gguf_close(q);
    }
    cv_gguf_close(f);
    unlink(pf);
    unlink(out);
}

/* The real Q4_K_M files `make models` fetches (Gemma 3 270M, Qwen2.5-Coder 0.5B):
 * their K-quant fallbacks (Q5_0, Q8_0) and Q4_K/Q6_K blocks decode to finite,
 * plausible weights, and both dot paths agree with the dequantized rows. */
static void check_real_file(const char *file) {
    cv_gguf *g = cv_test_open_model(file);
    int seen[CV_TYPE_COUNT] = {0};
    for (int64_t i = 0; i < cv_gguf_n_tensors(g); i++) {
        const cv_gguf_tensor *t = cv_gguf_tensor_at(g, i);
        char name[128];
        tensor_name(t, name, sizeof name);
        const cv_type_info *ti = cv_type_get(t->type);
        if (!ti || !ti->supported) fail_msg("%s: %s has unsupported type %s", file, name, ti ? ti->name : "?");
        seen[t->type]++;
        const int64_t n = t->ne[0], rows = n_elems(t) / n;
        const size_t rb = cv_type_row_bytes(t->type, n);
        const cv_type at = cv_type_vec_dot_type(t->type);
        float *w = malloc((size_t)n * 4), *x = malloc((size_t)n * 4), *xa = malloc((size_t)n * 4);
        void *a = malloc(cv_type_row_bytes(at, n) + 1);
        assert_true(w && x && xa && a);
        for (int64_t k = 0; k < n; k++) x[k] = (float)((int64_t)((g_seed + (uint64_t)k * 2654435761u) % 2001) - 1000) / 500.f;
        cv_quantize_row_act(at, x, a, n);
        cv_dequantize_row(at, a, xa, n);
        for (int s = 0; s < 8; s++) {
            const int64_t r = (int64_t)((g_seed + (uint64_t)s * 7919) % (uint64_t)rows);
            const void *row = (const uint8_t *)t->data + (size_t)r * rb;
            cv_dequantize_row(t->type, row, w, n);
            double exact = 0, abs_sum = 0, wmax = 0;
            for (int64_t k = 0; k < n; k++) {
                if (!isfinite(w[k])) fail_msg("%s: %s row %lld element %lld is %g", file, name, (long long)r, (long long)k, w[k]);
                exact += (double)w[k] * xa[k];
                abs_sum += fabs((double)w[k] * xa[k]);
                wmax = fmax(wmax, fabs(w[k]));
            }
            assert_true(wmax < 1e4);  /* trained weights, norms included, are far below */
            cv_quant_force_scalar(1);
            const float ref = cv_vec_dot(t->type, n, row, a);
            cv_quant_force_scalar(0);
            const float fast = cv_vec_dot(t->type, n, row, a);
            const double tol = 1e-4 * abs_sum + 1e-6;
            if (fabs(ref - exact) > tol || fabs(fast - exact) > tol)
                fail_msg("%s: %s row %lld: scalar %g avx2 %g exact %g", file, name, (long long)r, ref, fast, exact);
        }
        free(w);
        free(x);
        free(xa);
        free(a);
    }
    print_message("  %s:", file);
    for (int t = 0; t < CV_TYPE_COUNT; t++)
        if (seen[t]) print_message(" %d %s", seen[t], cv_type_get(t)->name);
    print_message("\n");
    assert_true(seen[CV_TYPE_Q4_K] && seen[CV_TYPE_Q6_K] && seen[CV_TYPE_Q5_0] && seen[CV_TYPE_Q8_0]);
    cv_gguf_close(g);
}

static void test_real_q4_k_m_gemma3(void **state) {
    (void)state;
    check_real_file("gemma-3-270m-q4_k_m.gguf");
}

static void test_real_q4_k_m_qwen2(void **state) {
    (void)state;
    check_real_file("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf");
}

static void test_synthetic_real_shapes_listed(void **state) {
    (void)state;
    const cv_synth_shape *t = cv_synth_find("tinyllama-1.1b"), *q = cv_synth_find("qwen2-1.5b"),
                         *l = cv_synth_find("llama-7b");
    assert_non_null(t);
    assert_non_null(q);
    assert_non_null(l);
    assert_true(t->n_embd == 2048 && t->n_layer == 22 && t->n_head == 32 && t->n_head_kv == 4 && t->n_ff == 5632 &&
                t->n_vocab == 32000 && t->n_ctx == 2048);
    assert_true(q->n_embd == 1536 && q->n_layer == 28 && q->n_head == 12 && q->n_head_kv == 2 && q->n_ff == 8960 &&
                q->n_vocab == 151936 && q->qkv_bias && q->tied && q->rope_base == 1e6f);
    assert_true(l->n_embd == 4096 && l->n_layer == 32 && l->n_head == 32 && l->n_head_kv == 32 && l->n_ff == 11008);
    assert_null(cv_synth_find("no-such-shape"));
    int n = 0;
    while (cv_synth_at(n)) n++;
    assert_true(n >= 5);
}

static int setup(void **state) {
    (void)state;
    const char *s = getenv("CORVID_TEST_SEED");
    g_seed = s ? strtoull(s, NULL, 10) : (uint64_t)time(NULL);
    printf("test_quantize: seed %llu (CORVID_TEST_SEED to repeat)\n", (unsigned long long)g_seed);
    return cv_test_tmpdir(g_dir, sizeof g_dir, "quantize");
}

static int teardown(void **state) {
    (void)state;
    return rmdir(g_dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llamacpp_files_match_f32_within_bounds),
        cmocka_unit_test(test_requantized_f32_equals_llamacpp_bytes),
        cmocka_unit_test(test_quantize_stories_each_recipe),
        cmocka_unit_test(test_quantize_errors),
        cmocka_unit_test(test_recipe_rules),
        cmocka_unit_test(test_synthetic_deterministic),
        cmocka_unit_test(test_synthetic_shape_and_statistics),
        cmocka_unit_test(test_synthetic_vocab_from_file),
        cmocka_unit_test(test_quantize_k_recipes_on_synthetic),
        cmocka_unit_test(test_real_q4_k_m_gemma3),
        cmocka_unit_test(test_real_q4_k_m_qwen2),
        cmocka_unit_test(test_synthetic_real_shapes_listed),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
