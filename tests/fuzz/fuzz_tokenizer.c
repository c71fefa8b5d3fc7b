/* libFuzzer target for the tokenizer.
 *
 * First byte < 0xF0: text mode. The byte picks one of eleven small tokenizers built
 * once with the GGUF writer (SPM with byte fallback; byte-level BPE with each of the
 * ten pre-tokenizer rule sets), whether special tokens are
 * parsed, and whether plain spans come first (a count byte, then 3 bytes a span:
 * start as 16-bit little endian, length); the rest is the text. Checks: every id
 * in range and at most len + 3 of them; decode(encode(x)) == x wherever that must
 * hold (BPE always; SPM when specials are not parsed and x has no U+2581, the
 * character SPM writes spaces as); the streaming decoder emits only valid UTF-8
 * and, with its flush, exactly the repaired one-shot decode. With spans: refused
 * exactly when they are unsorted, overlapping or past the text, and (BPE, where
 * the decode gives each id's bytes back in place) no control token's text meets
 * a non-empty span.
 *
 * First byte >= 0xF0: metadata mode. The rest is a GGUF file whose tokenizer is
 * loaded (hostile token types, merges, ids) and then used.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"
#include "tok_internal.h"
#include "tokenizer.h"
#include "utf8.h"

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "check failed: %s\n", #c); __builtin_trap(); } } while (0)

enum { N_TOKS = 11 };
static volatile uint64_t g_sink; /* keeps the reads of pieces from being optimised away */
static cv_tok *g_toks[N_TOKS];

/* Writes w to a temporary file, loads its tokenizer, removes the file. */
static cv_tok *load_written(cv_gguf_writer *w) {
    char path[] = "/tmp/fuzz-tok-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    cv_error e;
    cv_gguf *g;
    cv_tok *t = NULL;
    CHECK(cv_gguf_write(w, path, &e) == CV_OK);
    CHECK(cv_gguf_open(path, &g, &e) == CV_OK);
    CHECK(cv_tok_load(g, &t, &e) == CV_OK);
    cv_gguf_close(g);
    unlink(path);
    cv_gguf_writer_free(w);
    return t;
}

static cv_tok *build_spm(void) {
    static const char *const pieces[] = {
        "\xE2\x96\x81", "\xE2\x96\x81t", "h", "e", "he", "\xE2\x96\x81the", "\xE2\x96\x81\x61", /* "▁a": \x61 because "\x81a" would be one escape */
        "a", "b", "ab", "\xE4\xBD\xA0", "\xE5\xA5\xBD", "\xE4\xBD\xA0\xE5\xA5\xBD",
        "\xE2\x96\x81\xE2\x96\x81", "\n", "1", "12",
    };
    enum { N_PIECES = sizeof pieces / sizeof pieces[0], N = 3 + 256 + N_PIECES };
    static char bytes[256][7];
    const char *toks[N];
    float scores[N];
    int32_t types[N];
    toks[0] = "<unk>", toks[1] = "<s>", toks[2] = "</s>";
    types[0] = CV_TOK_TYPE_UNKNOWN, types[1] = types[2] = CV_TOK_TYPE_CONTROL;
    for (int i = 0; i < N; i++) scores[i] = -(float)i;
    for (int b = 0; b < 256; b++) {
        snprintf(bytes[b], sizeof bytes[b], "<0x%02X>", b);
        toks[3 + b] = bytes[b];
        types[3 + b] = CV_TOK_TYPE_BYTE;
    }
    for (int i = 0; i < N_PIECES; i++) {
        toks[259 + i] = pieces[i];
        types[259 + i] = CV_TOK_TYPE_NORMAL;
    }
    cv_gguf_writer *w = cv_gguf_writer_new();
    cv_error e;
    CHECK(w);
    CHECK(cv_gguf_set_str(w, "tokenizer.ggml.model", "llama", &e) == CV_OK);
    CHECK(cv_gguf_set_str_arr(w, "tokenizer.ggml.tokens", toks, N, &e) == CV_OK);
    CHECK(cv_gguf_set_arr(w, "tokenizer.ggml.scores", CV_GGUF_FLOAT32, scores, N, &e) == CV_OK);
    CHECK(cv_gguf_set_arr(w, "tokenizer.ggml.token_type", CV_GGUF_INT32, types, N, &e) == CV_OK);
    return load_written(w);
}

/* Byte strings as a byte-level vocabulary writes them. */
static void alias(const char *s, char *out) {
    size_t w = 0;
    for (; *s; s++) w += (size_t)cv_utf8_encode(tok_bpe_byte_to_cp((uint8_t)*s), out + w);
    out[w] = 0;
}

static cv_tok *build_bpe(const char *pre) {
    static const char *const merges[][2] = {
        {" ", "t"}, {"h", "e"}, {" t", "he"}, {"a", "b"}, {"\xE4", "\xBD"}, {"\xE4\xBD", "\xA0"},
        {"1", "2"}, {"12", "3"}, {"\n", "\n"}, {" ", " "}, {"'", "s"}, {" ", "\xE4\xBD\xA0"},
    };
    static const char *const specials[] = {"<|bos|>", "<|eot|>", "<ud>", "[PAD1]"};
    static const int32_t special_types[] = {CV_TOK_TYPE_CONTROL, CV_TOK_TYPE_CONTROL,
                                            CV_TOK_TYPE_USER_DEFINED, CV_TOK_TYPE_USER_DEFINED};
    enum { NM = sizeof merges / sizeof merges[0], NS = 4, N = 256 + NM + NS };
    static char texts[256 + NM][16], merge_texts[NM][40];
    const char *toks[N], *mt[NM];
    int32_t types[N];
    for (int b = 0; b < 256; b++) {
        char s[2] = {(char)b, 0};
        if (b == 0) { /* alias() stops at NUL: NUL's alias is U+0100 */
            cv_utf8_encode(tok_bpe_byte_to_cp(0), texts[0]);
            texts[0][2] = 0;
        } else {
            alias(s, texts[b]);
        }
        toks[b] = texts[b];
        types[b] = CV_TOK_TYPE_NORMAL;
    }
    for (int i = 0; i < NM; i++) {
        char cat[16], l[16], r[16];
        snprintf(cat, sizeof cat, "%s%s", merges[i][0], merges[i][1]);
        alias(cat, texts[256 + i]);
        alias(merges[i][0], l);
        alias(merges[i][1], r);
        snprintf(merge_texts[i], sizeof merge_texts[i], "%s %s", l, r);
        mt[i] = merge_texts[i];
        toks[256 + i] = texts[256 + i];
        types[256 + i] = CV_TOK_TYPE_NORMAL;
    }
    for (int i = 0; i < NS; i++) {
        toks[256 + NM + i] = specials[i];
        types[256 + NM + i] = special_types[i];
    }
    cv_gguf_writer *w = cv_gguf_writer_new();
    cv_error e;
    CHECK(w);
    CHECK(cv_gguf_set_str(w, "tokenizer.ggml.model", "gpt2", &e) == CV_OK);
    CHECK(cv_gguf_set_str(w, "tokenizer.ggml.pre", pre, &e) == CV_OK);
    CHECK(cv_gguf_set_str_arr(w, "tokenizer.ggml.tokens", toks, N, &e) == CV_OK);
    CHECK(cv_gguf_set_arr(w, "tokenizer.ggml.token_type", CV_GGUF_INT32, types, N, &e) == CV_OK);
    CHECK(cv_gguf_set_str_arr(w, "tokenizer.ggml.merges", mt, NM, &e) == CV_OK);
    CHECK(cv_gguf_set_u32(w, "tokenizer.ggml.bos_token_id", 256 + NM, &e) == CV_OK);
    CHECK(cv_gguf_set_bool(w, "tokenizer.ggml.add_bos_token", 1, &e) == CV_OK);
    return load_written(w);
}

static void init(void) {
    if (g_toks[0]) return;
    g_toks[0] = build_spm();
    static const char *const pre[N_TOKS - 1] = {
        "gpt-2", "llama3", "qwen2", "qwen35", "deepseek-llm", "deepseek-coder",
        "deepseek-v3", "falcon", "smollm", "tekken",
    };
    for (int i = 0; i < N_TOKS - 1; i++) g_toks[i + 1] = build_bpe(pre[i]);
}

static int has_space_mark(const uint8_t *s, size_t n) {
    for (size_t i = 0; i + 3 <= n; i++)
        if (s[i] == 0xE2 && s[i + 1] == 0x96 && s[i + 2] == 0x81) return 1;
    return 0;
}

/* Streams ids through the decoder and compares with the repaired full decode. */
static void check_stream(const cv_tok *t, const int32_t *ids, size_t n, unsigned flags,
                         const char *full, size_t full_len) {
    cv_tok_stream *s;
    cv_error e;
    CHECK(cv_tok_stream_new(t, flags, &s, &e) == CV_OK);
    char *want = malloc(CV_UTF8_STREAM_BOUND(full_len)), *got = malloc(CV_UTF8_STREAM_BOUND(full_len));
    CHECK(want && got);
    cv_utf8_stream u;
    cv_utf8_stream_init(&u);
    size_t wl = cv_utf8_stream_feed(&u, full, full_len, want);
    wl += cv_utf8_stream_flush(&u, want + wl);
    size_t gl = 0;
    for (size_t i = 0; i < n; i++) {
        const char *chunk;
        size_t cl;
        CHECK(cv_tok_stream_feed(s, ids[i], &chunk, &cl, &e) == CV_OK);
        CHECK(cv_utf8_valid(chunk, cl));
        CHECK(gl + cl <= wl);
        memcpy(got + gl, chunk, cl);
        gl += cl;
    }
    const char *tail;
    size_t tl;
    cv_tok_stream_flush(s, &tail, &tl);
    CHECK(gl + tl == wl);
    memcpy(got + gl, tail, tl);
    CHECK(memcmp(got, want, wl) == 0);
    free(want);
    free(got);
    cv_tok_stream_free(s);
}

enum { MAX_SPANS = 7 };

static int spans_valid(const cv_tok_span *sp, size_t n, size_t len) {
    for (size_t i = 0, end = 0; i < n; end = sp[i].start + sp[i].len, i++)
        if (sp[i].start < end || sp[i].start + sp[i].len > len) return 0;
    return 1;
}

/* Each control id's bytes, found in place by walking the pieces, lie outside
 * every non-empty span. */
static void check_controls_outside(const cv_tok *t, const int32_t *ids, size_t n,
                                   const cv_tok_span *sp, size_t n_sp) {
    cv_error e;
    for (size_t i = 0, off = 0; i < n; i++) {
        const char *p;
        size_t pl;
        CHECK(cv_tok_piece(t, ids[i], CV_TOK_RENDER_SPECIAL, &p, &pl, &e) == CV_OK);
        cv_tok_type ty = cv_tok_token_type(t, ids[i]);
        if (ty == CV_TOK_TYPE_CONTROL || ty == CV_TOK_TYPE_UNKNOWN)
            for (size_t k = 0; k < n_sp; k++)
                CHECK(sp[k].len == 0 || off + pl <= sp[k].start || sp[k].start + sp[k].len <= off);
        off += pl;
    }
}

static void text_mode(uint8_t sel, const uint8_t *text, size_t len) {
    init();
    const cv_tok *t = g_toks[sel % N_TOKS];
    int parse = (sel >> 3) & 1, add = (sel >> 4) & 1;
    unsigned flags = (parse ? CV_TOK_PARSE_SPECIAL : 0) | (add ? CV_TOK_ADD_SPECIAL : 0);
    cv_tok_span sp[MAX_SPANS];
    size_t n_sp = 0;
    if ((sel >> 5) & 1 && len > 0) {
        size_t want = text[0] % (MAX_SPANS + 1);
        text++, len--;
        for (; n_sp < want && len >= 3; n_sp++, text += 3, len -= 3)
            sp[n_sp] = (cv_tok_span){(size_t)text[0] | (size_t)text[1] << 8, text[2]};
    }
    size_t cap = len + 3, n;
    int32_t *ids = malloc(cap * sizeof *ids);
    CHECK(ids);
    cv_error e;
    cv_status st = cv_tok_encode_plain(t, (const char *)text, len, flags, sp, n_sp, ids, cap, &n, &e);
    if (!spans_valid(sp, n_sp, len)) {
        CHECK(st == CV_EINVAL);
        free(ids);
        return;
    }
    CHECK(st == CV_OK);
    CHECK(n <= cap);
    for (size_t i = 0; i < n; i++) CHECK(ids[i] >= 0 && ids[i] < cv_tok_n_vocab(t));
    int spm = cv_tok_get_kind(t) == CV_TOK_SPM;
    /* The BOS renders as its text: skip it. */
    size_t bos = add && cv_tok_adds_bos(t) && n > 0 ? 1 : 0;
    if (!spm) check_controls_outside(t, ids + bos, n - bos, sp, n_sp);
    unsigned dflags = CV_TOK_RENDER_SPECIAL | (spm ? CV_TOK_STRIP_SPACE : 0);
    size_t dcap = 0, dl;
    for (size_t i = 0; i < n; i++) {
        const char *p;
        size_t pl;
        CHECK(cv_tok_piece(t, ids[i], CV_TOK_RENDER_SPECIAL, &p, &pl, &e) == CV_OK);
        dcap += pl;
    }
    char *dec = malloc(dcap + 1);
    CHECK(dec);
    CHECK(cv_tok_decode(t, ids + bos, n - bos, dflags, dec, dcap, &dl, &e) == CV_OK);
    if (!spm || (!parse && !has_space_mark(text, len))) CHECK(dl == len && memcmp(dec, text, len) == 0);
    check_stream(t, ids + bos, n - bos, dflags, dec, dl);
    free(dec);
    free(ids);
}

static void metadata_mode(const uint8_t *data, size_t size) {
    cv_gguf *g;
    cv_tok *t;
    cv_error e;
    if (cv_gguf_open_memory(data, size, &g, &e) != CV_OK) return;
    cv_status st = cv_tok_load(g, &t, &e);
    cv_gguf_close(g);
    if (st != CV_OK) return;
    static const char sample[] = "Hello w\xC3\xB6rld \xE4\xBD\xA0\xE5\xA5\xBD <s> 1234\n\n 's \xFF";
    int32_t ids[sizeof sample + 3];
    size_t n;
    if (cv_tok_encode(t, sample, sizeof sample - 1, CV_TOK_ADD_SPECIAL | CV_TOK_PARSE_SPECIAL, ids,
                      sizeof ids / sizeof ids[0], &n, &e) == CV_OK) {
        CHECK(n <= sizeof ids / sizeof ids[0]);
        for (size_t i = 0; i < n; i++) CHECK(ids[i] >= 0 && ids[i] < cv_tok_n_vocab(t));
        char out[4096];
        size_t len;
        cv_tok_decode(t, ids, n, CV_TOK_RENDER_SPECIAL, out, sizeof out, &len, &e);
    }
    for (int32_t id = 0; id < cv_tok_n_vocab(t) && id < 4096; id++) {
        const char *p;
        size_t len;
        CHECK(cv_tok_piece(t, id, id & 1 ? CV_TOK_RENDER_SPECIAL : 0, &p, &len, &e) == CV_OK);
        if (len) g_sink += (uint8_t)p[0] + (uint8_t)p[len - 1];
    }
    cv_tok_free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    if (data[0] >= 0xF0) metadata_mode(data + 1, size - 1);
    else text_mode(data[0], data + 1, size - 1);
    return 0;
}
