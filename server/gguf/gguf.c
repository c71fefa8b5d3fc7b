/* gguf: the reader. Parses and validates the whole file once at open time, so that
 * the accessors can trust every offset they follow afterwards. */
#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "utf8.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf.c reads little-endian values in place: port it before building big-endian"
#endif

#define GGUF_MAGIC "GGUF"
#define GGUF_HEADER_BYTES 24u          /* magic, version, n_tensors, n_kv */
#define GGUF_MIN_KV_BYTES 13u          /* key length, type, a 1-byte value */
#define GGUF_MIN_TENSOR_BYTES 32u      /* name length, n_dims, one ne, type, offset */
#define GGUF_ARR_HDR_BYTES 12u         /* element type, count */
#define GGUF_MAX_DIMS 4u
/* Deeper nesting has no use in any known file; the limit bounds the recursion. */
#define GGUF_MAX_ARRAY_DEPTH 8

typedef struct gguf_kv {
    cv_str key;
    cv_gguf_vtype type;
    uint64_t val_off;     /* first byte of the value, after its type */
    uint64_t val_len;
    /* arrays only */
    cv_gguf_vtype elem_type;
    uint64_t n;
    uint64_t data_off;    /* first element */
    uint64_t pool_idx;    /* element offsets (strings, arrays) start here in pool */
} gguf_kv;

/* Open-addressing set of names: slot holds index+1, 0 is empty. */
typedef struct name_index {
    uint64_t *slots;
    uint64_t mask;
} name_index;

struct cv_gguf {
    const uint8_t *base;
    uint64_t size;
    int mapped;
    uint32_t version;
    uint32_t alignment;
    int64_t n_kv;
    int64_t n_tensors;
    gguf_kv *kvs;
    cv_gguf_tensor *tensors;
    /* Offsets of variable-size array elements, so element i is O(1): a string
     * element takes one slot (offset of its length); an array element takes two
     * (offset of its header, pool index of its own element offsets). */
    uint64_t *pool;
    uint64_t pool_len, pool_cap;
    name_index kv_index, tensor_index;
    uint64_t data_off;
};

/* ---- small helpers ---- */

static const uint8_t vtype_size[] = {
    [CV_GGUF_UINT8] = 1, [CV_GGUF_INT8] = 1, [CV_GGUF_UINT16] = 2, [CV_GGUF_INT16] = 2,
    [CV_GGUF_UINT32] = 4, [CV_GGUF_INT32] = 4, [CV_GGUF_FLOAT32] = 4, [CV_GGUF_BOOL] = 1,
    [CV_GGUF_STRING] = 0, [CV_GGUF_ARRAY] = 0, [CV_GGUF_UINT64] = 8, [CV_GGUF_INT64] = 8,
    [CV_GGUF_FLOAT64] = 8,
};
#define N_VTYPES (sizeof vtype_size / sizeof vtype_size[0])

const char *cv_gguf_vtype_name(cv_gguf_vtype t) {
    static const char *const names[] = {
        "UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32", "FLOAT32", "BOOL",
        "STRING", "ARRAY", "UINT64", "INT64", "FLOAT64",
    };
    return (unsigned)t < N_VTYPES ? names[t] : "unknown";
}

static int vtype_is_int(cv_gguf_vtype t) {
    switch (t) {
    case CV_GGUF_UINT8: case CV_GGUF_INT8: case CV_GGUF_UINT16: case CV_GGUF_INT16:
    case CV_GGUF_UINT32: case CV_GGUF_INT32: case CV_GGUF_UINT64: case CV_GGUF_INT64:
        return 1;
    default:
        return 0;
    }
}

/* A scalar integer at p as a sign flag and magnitude, so that u64 values above
 * INT64_MAX and negative i64 values are both represented exactly. */
typedef struct int_val {
    int neg;
    uint64_t mag;
} int_val;

static int_val read_int(cv_gguf_vtype t, const uint8_t *p) {
    int64_t s = 0;
    uint64_t u = 0;
    int is_signed = 1;
    switch (t) {
    case CV_GGUF_UINT8: u = p[0]; is_signed = 0; break;
    case CV_GGUF_INT8: { int8_t v; memcpy(&v, p, 1); s = v; break; }
    case CV_GGUF_UINT16: { uint16_t v; memcpy(&v, p, 2); u = v; is_signed = 0; break; }
    case CV_GGUF_INT16: { int16_t v; memcpy(&v, p, 2); s = v; break; }
    case CV_GGUF_UINT32: { uint32_t v; memcpy(&v, p, 4); u = v; is_signed = 0; break; }
    case CV_GGUF_INT32: { int32_t v; memcpy(&v, p, 4); s = v; break; }
    case CV_GGUF_UINT64: memcpy(&u, p, 8); is_signed = 0; break;
    case CV_GGUF_INT64: memcpy(&s, p, 8); break;
    default: break;
    }
    if (!is_signed) return (int_val){0, u};
    if (s < 0) return (int_val){1, (uint64_t)0 - (uint64_t)s};
    return (int_val){0, (uint64_t)s};
}

static int64_t int_val_to_i64(int_val v) {
    if (v.neg) return v.mag > (uint64_t)INT64_MAX ? INT64_MIN : -(int64_t)v.mag;
    return v.mag > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)v.mag;
}

static double read_num_f64(cv_gguf_vtype t, const uint8_t *p) {
    if (t == CV_GGUF_FLOAT32) { float f; memcpy(&f, p, 4); return f; }
    if (t == CV_GGUF_FLOAT64) { double d; memcpy(&d, p, 8); return d; }
    if (t == CV_GGUF_BOOL) return p[0] != 0;
    if (vtype_is_int(t)) {
        int_val v = read_int(t, p);
        return v.neg ? -(double)v.mag : (double)v.mag;
    }
    return 0.0;
}

static uint64_t rd64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }

static uint64_t hash_bytes(const char *s, uint64_t n) {
    uint64_t h = 1469598103934665603ull;  /* FNV-1a */
    for (uint64_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

static int str_eq(cv_str a, const char *b, uint64_t blen) {
    return a.len == blen && memcmp(a.ptr, b, blen) == 0;
}

/* Names come from the file: keep messages printable and short. */
static const char *show(cv_str s, char out[72]) {
    uint64_t n = s.len < 60 ? s.len : 60;
    for (uint64_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        out[i] = (c >= 0x20 && c < 0x7f && c != '\'') ? (char)c : '?';
    }
    if (s.len > n) { memcpy(out + n, "...", 4); } else { out[n] = 0; }
    return out;
}

/* ---- name index ---- */

static int index_init(name_index *ix, uint64_t n) {
    uint64_t cap = 8;
    while (cap < 2 * n) cap <<= 1;
    ix->slots = calloc(cap, sizeof *ix->slots);
    ix->mask = cap - 1;
    return ix->slots != NULL;
}

/* Returns the index already holding `name`, or -1 after inserting idx. */
static int64_t index_insert(name_index *ix, const cv_str *names, size_t stride, int64_t idx) {
    cv_str name = *(const cv_str *)((const char *)names + (size_t)idx * stride);
    for (uint64_t h = hash_bytes(name.ptr, name.len) & ix->mask;; h = (h + 1) & ix->mask) {
        if (!ix->slots[h]) { ix->slots[h] = (uint64_t)idx + 1; return -1; }
        int64_t j = (int64_t)ix->slots[h] - 1;
        cv_str other = *(const cv_str *)((const char *)names + (size_t)j * stride);
        if (str_eq(other, name.ptr, name.len)) return j;
    }
}

static int64_t index_find(const name_index *ix, const cv_str *names, size_t stride,
                          const char *key) {
    if (!ix->slots || !key) return -1;
    uint64_t n = strlen(key);
    for (uint64_t h = hash_bytes(key, n) & ix->mask;; h = (h + 1) & ix->mask) {
        if (!ix->slots[h]) return -1;
        int64_t j = (int64_t)ix->slots[h] - 1;
        if (str_eq(*(const cv_str *)((const char *)names + (size_t)j * stride), key, n)) return j;
    }
}

/* ---- parser ---- */

typedef struct parser {
    cv_gguf *g;
    uint64_t off;
    char ctx[160];   /* which field is being read: "kv 3 'general.alignment'" */
    int depth;       /* array nesting of the element being read, and its indices */
    uint64_t elem[GGUF_MAX_ARRAY_DEPTH];
    cv_error *err;
} parser;

__attribute__((format(printf, 3, 4)))
static cv_status fail(parser *P, uint64_t at, const char *fmt, ...) {
    char detail[320], path[GGUF_MAX_ARRAY_DEPTH * 24 + 16] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    size_t n = 0;
    for (int d = 0; d < P->depth; d++)
        n += (size_t)snprintf(path + n, sizeof path - n, "%s%llu", d ? "][" : " element [",
                              (unsigned long long)P->elem[d]);
    if (P->depth) snprintf(path + n, sizeof path - n, "]");
    return cv_errorf(P->err, CV_EFORMAT, "%s%s: %s (at byte %llu)", P->ctx, path, detail,
                     (unsigned long long)at);
}

static uint64_t left(const parser *P) { return P->g->size - P->off; }

static cv_status need(parser *P, uint64_t n, const char *what) {
    if (left(P) >= n) return CV_OK;
    return fail(P, P->off, "truncated: %s needs %llu bytes, %llu left in the file", what,
                (unsigned long long)n, (unsigned long long)left(P));
}

static cv_status get_u32(parser *P, uint32_t *v, const char *what) {
    cv_status s = need(P, 4, what);
    if (s) return s;
    *v = rd32(P->g->base + P->off);
    P->off += 4;
    return CV_OK;
}

static cv_status get_u64(parser *P, uint64_t *v, const char *what) {
    cv_status s = need(P, 8, what);
    if (s) return s;
    *v = rd64(P->g->base + P->off);
    P->off += 8;
    return CV_OK;
}

static cv_status get_str(parser *P, cv_str *out, const char *what) {
    uint64_t at = P->off, len;
    cv_status s = get_u64(P, &len, what);
    if (s) return s;
    if (len > left(P))
        return fail(P, at, "%s length %llu exceeds the %llu bytes left in the file", what,
                    (unsigned long long)len, (unsigned long long)left(P));
    out->ptr = (const char *)P->g->base + P->off;
    out->len = len;
    P->off += len;
    return CV_OK;
}

static cv_status get_vtype(parser *P, cv_gguf_vtype *t, const char *what) {
    uint64_t at = P->off;
    uint32_t v;
    cv_status s = get_u32(P, &v, what);
    if (s) return s;
    if (v >= N_VTYPES) return fail(P, at, "%s %u is not a GGUF value type (0..12)", what, v);
    *t = (cv_gguf_vtype)v;
    return CV_OK;
}

static cv_status pool_reserve(parser *P, uint64_t n, uint64_t *idx) {
    cv_gguf *g = P->g;
    /* n is bounded by the bytes left in the file (checked by the caller), so the sums
     * below cannot wrap. */
    if (g->pool_len + n > g->pool_cap) {
        uint64_t cap = g->pool_cap ? g->pool_cap : 64;
        while (cap < g->pool_len + n) cap *= 2;
        uint64_t *p = realloc(g->pool, cap * sizeof *p);
        if (!p) return cv_errorf(P->err, CV_ENOMEM, "%s: no memory for %llu array offsets",
                                 P->ctx, (unsigned long long)cap);
        g->pool = p;
        g->pool_cap = cap;
    }
    *idx = g->pool_len;
    g->pool_len += n;
    return CV_OK;
}

typedef struct arr_info {
    cv_gguf_vtype elem_type;
    uint64_t n;
    uint64_t data_off;
    uint64_t pool_idx;
} arr_info;

/* The array header at P->off and all its elements; nested arrays recurse. */
static cv_status parse_array(parser *P, int depth, arr_info *a) {
    cv_status s;
    if (depth > GGUF_MAX_ARRAY_DEPTH)
        return fail(P, P->off, "arrays nested deeper than %d levels", GGUF_MAX_ARRAY_DEPTH);
    if ((s = get_vtype(P, &a->elem_type, "array element type"))) return s;
    uint64_t at_n = P->off;
    if ((s = get_u64(P, &a->n, "array length"))) return s;
    a->data_off = P->off;
    a->pool_idx = 0;
    uint64_t esize = vtype_size[a->elem_type];
    uint64_t min = esize ? esize : a->elem_type == CV_GGUF_STRING ? 8 : GGUF_ARR_HDR_BYTES;
    if (a->n > left(P) / min)
        return fail(P, at_n, "array length %llu of %s needs at least %llu bytes each, "
                    "only %llu bytes left in the file", (unsigned long long)a->n,
                    cv_gguf_vtype_name(a->elem_type), (unsigned long long)min,
                    (unsigned long long)left(P));
    if (esize) {
        P->off += a->n * esize;
        return CV_OK;
    }
    int is_str = a->elem_type == CV_GGUF_STRING;
    if ((s = pool_reserve(P, is_str ? a->n : 2 * a->n, &a->pool_idx))) return s;
    P->depth = depth;
    for (uint64_t i = 0; i < a->n; i++) {
        uint64_t at = P->off;
        P->elem[depth - 1] = i;
        if (is_str) {
            cv_str str;
            P->g->pool[a->pool_idx + i] = at;
            if ((s = get_str(P, &str, "string"))) return s;
        } else {
            arr_info sub;
            if ((s = parse_array(P, depth + 1, &sub))) return s;
            P->g->pool[a->pool_idx + 2 * i] = at;
            P->g->pool[a->pool_idx + 2 * i + 1] = sub.pool_idx;
            P->depth = depth;
        }
    }
    P->depth = depth - 1;
    return CV_OK;
}

/* The name of kv or tensor i (names[i], with `stride` between entries): read, set as
 * the error context, and checked against the names before it. */
static cv_status get_unique_name(parser *P, const char *what, const char *label,
                                 name_index *ix, cv_str *names, size_t stride, int64_t i) {
    cv_str *name = (cv_str *)((char *)names + (size_t)i * stride);
    char shown[72];
    snprintf(P->ctx, sizeof P->ctx, "%s %lld", what, (long long)i);
    cv_status s = get_str(P, name, label);
    if (s) return s;
    /* Names are text that reaches messages, logs and lookups by C string: no empty
     * name, no invalid UTF-8, no NUL. */
    size_t bad = 0;
    if (name->len == 0) return fail(P, P->off, "empty %s", label);
    if (cv_utf8_check(name->ptr, (size_t)name->len, &bad) != CV_UTF8_OK)
        return fail(P, P->off - name->len + bad, "%s is not UTF-8 text without NUL (byte %zu of it)", label,
                    bad);
    snprintf(P->ctx, sizeof P->ctx, "%s %lld '%s'", what, (long long)i, show(*name, shown));
    int64_t dup = index_insert(ix, names, stride, i);
    if (dup >= 0)
        return fail(P, P->off - name->len, "duplicate %s (first used by %s %lld)", label, what,
                    (long long)dup);
    return CV_OK;
}

static cv_status parse_kvs(parser *P) {
    cv_gguf *g = P->g;
    cv_status s;
    for (int64_t i = 0; i < g->n_kv; i++) {
        gguf_kv *kv = &g->kvs[i];
        if ((s = get_unique_name(P, "kv", "key", &g->kv_index, &g->kvs[0].key, sizeof *kv, i)))
            return s;
        if ((s = get_vtype(P, &kv->type, "value type"))) return s;
        kv->val_off = P->off;
        if (kv->type == CV_GGUF_ARRAY) {
            arr_info a;
            if ((s = parse_array(P, 1, &a))) return s;
            kv->elem_type = a.elem_type;
            kv->n = a.n;
            kv->data_off = a.data_off;
            kv->pool_idx = a.pool_idx;
        } else if (kv->type == CV_GGUF_STRING) {
            cv_str v;
            if ((s = get_str(P, &v, "string value"))) return s;
        } else {
            if ((s = need(P, vtype_size[kv->type], cv_gguf_vtype_name(kv->type)))) return s;
            P->off += vtype_size[kv->type];
        }
        kv->val_len = P->off - kv->val_off;
    }
    return CV_OK;
}

/* ---- known keys ---- */

typedef enum key_class {
    K_STR, K_U32, K_UINT, K_F32, K_BOOL, K_ARR_STR, K_ARR_F32, K_ARR_I32, K_TOKEN_ID
} key_class;

static const struct { const char *key; key_class c; } exact_keys[] = {
    {"general.architecture", K_STR},
    {"general.name", K_STR},
    {"general.alignment", K_U32},
    {"general.file_type", K_UINT},
    {"general.quantization_version", K_UINT},
    {"tokenizer.ggml.model", K_STR},
    {"tokenizer.ggml.pre", K_STR},
    {"tokenizer.ggml.tokens", K_ARR_STR},
    {"tokenizer.ggml.scores", K_ARR_F32},
    {"tokenizer.ggml.token_type", K_ARR_I32},
    {"tokenizer.ggml.merges", K_ARR_STR},
    {"tokenizer.ggml.add_bos_token", K_BOOL},
    {"tokenizer.ggml.add_eos_token", K_BOOL},
    {"tokenizer.ggml.add_space_prefix", K_BOOL},
    {"tokenizer.chat_template", K_STR},
};

/* Keys written as "<architecture>.<suffix>". */
static const struct { const char *suffix; key_class c; } arch_keys[] = {
    {".context_length", K_UINT},
    {".block_count", K_UINT},
    {".embedding_length", K_UINT},
    {".feed_forward_length", K_UINT},
    {".vocab_size", K_UINT},
    {".attention.head_count", K_UINT},
    {".attention.head_count_kv", K_UINT},
    {".attention.key_length", K_UINT},
    {".attention.value_length", K_UINT},
    {".attention.sliding_window", K_UINT},
    {".rope.dimension_count", K_UINT},
    {".attention.layer_norm_rms_epsilon", K_F32},
    {".attention.layer_norm_epsilon", K_F32},
    {".rope.freq_base", K_F32},
    {".rope.scaling.factor", K_F32},
    {".attn_logit_softcapping", K_F32},
    {".final_logit_softcapping", K_F32},
};

static int classify(cv_str key, key_class *c) {
    for (size_t i = 0; i < sizeof exact_keys / sizeof exact_keys[0]; i++)
        if (str_eq(key, exact_keys[i].key, strlen(exact_keys[i].key))) {
            *c = exact_keys[i].c;
            return 1;
        }
    static const char tok_prefix[] = "tokenizer.ggml.", tok_suffix[] = "_token_id";
    uint64_t lp = sizeof tok_prefix - 1, ls = sizeof tok_suffix - 1;
    if (key.len > lp + ls && !memcmp(key.ptr, tok_prefix, lp) &&
        !memcmp(key.ptr + key.len - ls, tok_suffix, ls)) {
        *c = K_TOKEN_ID;
        return 1;
    }
    for (size_t i = 0; i < sizeof arch_keys / sizeof arch_keys[0]; i++) {
        uint64_t n = strlen(arch_keys[i].suffix);
        if (key.len <= n || memcmp(key.ptr + key.len - n, arch_keys[i].suffix, n)) continue;
        /* The prefix must be one name (no dots): "llama", not "foo.llama". */
        if (memchr(key.ptr, '.', key.len - n)) continue;
        *c = arch_keys[i].c;
        return 1;
    }
    return 0;
}

/* llama.cpp writes "no such token" as -1, which unsigned types store as all ones
 * (the stories260K files carry seperator_token_id = 0xffffffff). */
static int token_id_is_none(cv_gguf_vtype t, const uint8_t *v) {
    int_val iv = read_int(t, v);
    if (iv.neg) return iv.mag == 1;
    return (t == CV_GGUF_UINT32 && iv.mag == UINT32_MAX) ||
           (t == CV_GGUF_UINT64 && iv.mag == UINT64_MAX) ||
           (t == CV_GGUF_UINT16 && iv.mag == UINT16_MAX) ||
           (t == CV_GGUF_UINT8 && iv.mag == UINT8_MAX);
}

static cv_status check_known_key(parser *P, const gguf_kv *kv, uint64_t n_vocab, int has_vocab) {
    key_class c;
    if (!classify(kv->key, &c)) return CV_OK;
    const cv_gguf *g = P->g;
    const uint8_t *v = g->base + kv->val_off;
    const char *want = NULL;
    switch (c) {
    case K_STR: if (kv->type != CV_GGUF_STRING) want = "STRING"; break;
    case K_U32: if (kv->type != CV_GGUF_UINT32) want = "UINT32"; break;
    case K_UINT: case K_TOKEN_ID: if (!vtype_is_int(kv->type)) want = "an integer"; break;
    case K_F32: if (kv->type != CV_GGUF_FLOAT32) want = "FLOAT32"; break;
    case K_BOOL: if (kv->type != CV_GGUF_BOOL) want = "BOOL"; break;
    case K_ARR_STR:
        if (kv->type != CV_GGUF_ARRAY || kv->elem_type != CV_GGUF_STRING) want = "ARRAY of STRING";
        break;
    case K_ARR_F32:
        if (kv->type != CV_GGUF_ARRAY || kv->elem_type != CV_GGUF_FLOAT32) want = "ARRAY of FLOAT32";
        break;
    case K_ARR_I32:
        if (kv->type != CV_GGUF_ARRAY || kv->elem_type != CV_GGUF_INT32) want = "ARRAY of INT32";
        break;
    }
    uint64_t at = kv->val_off - 4;  /* the value's type field */
    if (want) {
        if (kv->type == CV_GGUF_ARRAY)
            return fail(P, at, "value type ARRAY of %s, expected %s",
                        cv_gguf_vtype_name(kv->elem_type), want);
        return fail(P, at, "value type %s, expected %s", cv_gguf_vtype_name(kv->type), want);
    }
    if (c == K_U32) {  /* general.alignment, the only exact-u32 key */
        uint32_t a = rd32(v);
        if (a == 0 || (a & (a - 1)))
            return fail(P, kv->val_off, "alignment %u is not a power of two", a);
    }
    if (c == K_TOKEN_ID && token_id_is_none(kv->type, v)) return CV_OK;
    if (c == K_UINT || c == K_TOKEN_ID) {
        int_val iv = read_int(kv->type, v);
        if (iv.neg && iv.mag)
            return fail(P, kv->val_off, "value -%llu is negative", (unsigned long long)iv.mag);
        if (c == K_TOKEN_ID && has_vocab && iv.mag >= n_vocab)
            return fail(P, kv->val_off, "token id %llu is outside the vocabulary "
                        "(tokenizer.ggml.tokens has %llu tokens)",
                        (unsigned long long)iv.mag, (unsigned long long)n_vocab);
    }
    if ((c == K_ARR_F32 || c == K_ARR_I32) && has_vocab && kv->n != n_vocab)
        return fail(P, kv->val_off, "%llu elements, tokenizer.ggml.tokens has %llu",
                    (unsigned long long)kv->n, (unsigned long long)n_vocab);
    return CV_OK;
}

static cv_status check_known_keys(parser *P) {
    cv_gguf *g = P->g;
    char name[72];
    int64_t iv = index_find(&g->kv_index, &g->kvs[0].key, sizeof *g->kvs, "tokenizer.ggml.tokens");
    int has_vocab = iv >= 0 && g->kvs[iv].type == CV_GGUF_ARRAY &&
                    g->kvs[iv].elem_type == CV_GGUF_STRING;
    uint64_t n_vocab = has_vocab ? g->kvs[iv].n : 0;
    for (int64_t i = 0; i < g->n_kv; i++) {
        snprintf(P->ctx, sizeof P->ctx, "kv %lld '%s'", (long long)i, show(g->kvs[i].key, name));
        cv_status s = check_known_key(P, &g->kvs[i], n_vocab, has_vocab);
        if (s) return s;
        if (str_eq(g->kvs[i].key, "general.alignment", 17))
            g->alignment = rd32(g->base + g->kvs[i].val_off);
    }
    return CV_OK;
}

/* ---- tensors ---- */

uint64_t cv_gguf_tensor_bytes(cv_type type, uint32_t n_dims, const int64_t *ne) {
    const cv_type_info *ti = cv_type_get((uint32_t)type);
    if (!ti || n_dims < 1 || n_dims > GGUF_MAX_DIMS) return 0;
    uint64_t n = 1;
    for (uint32_t d = 0; d < n_dims; d++)
        if (ne[d] <= 0 || __builtin_mul_overflow(n, (uint64_t)ne[d], &n) || n > INT64_MAX)
            return 0;
    if ((uint64_t)ne[0] % ti->block_elems) return 0;
    uint64_t bytes;
    /* Whole blocks: the row's byte count is exact, then rows multiply it. */
    if (__builtin_mul_overflow(n / ti->block_elems, (uint64_t)ti->block_bytes, &bytes)) return 0;
    return bytes;
}

static cv_status parse_tensor_info(parser *P, int64_t i) {
    cv_gguf *g = P->g;
    cv_gguf_tensor *t = &g->tensors[i];
    cv_status s;
    if ((s = get_unique_name(P, "tensor", "tensor name", &g->tensor_index, &g->tensors[0].name,
                             sizeof *t, i)))
        return s;
    uint64_t at = P->off;
    if ((s = get_u32(P, &t->n_dims, "n_dims"))) return s;
    if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS)
        return fail(P, at, "n_dims %u outside 1..%u", t->n_dims, GGUF_MAX_DIMS);
    uint64_t n_elems = 1;
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) {
        uint64_t ne = 1;
        at = P->off;
        if (d < t->n_dims && (s = get_u64(P, &ne, "ne"))) return s;
        if (ne == 0) return fail(P, at, "ne[%u] is 0", d);
        if (ne > INT64_MAX || __builtin_mul_overflow(n_elems, ne, &n_elems) ||
            n_elems > INT64_MAX)
            return fail(P, at, "ne[%u] = %llu makes the element count overflow int64", d,
                        (unsigned long long)ne);
        t->ne[d] = (int64_t)ne;
    }
    at = P->off;
    uint32_t type;
    if ((s = get_u32(P, &type, "type"))) return s;
    const cv_type_info *ti = cv_type_get(type);
    if (!ti) return fail(P, at, "type %u is not a known tensor type", type);
    t->type = (cv_type)type;
    if ((uint64_t)t->ne[0] % ti->block_elems)
        return fail(P, at, "ne[0] = %lld is not a multiple of the %s block size %u",
                    (long long)t->ne[0], ti->name, ti->block_elems);
    t->nbytes = cv_gguf_tensor_bytes(t->type, t->n_dims, t->ne);
    if (!t->nbytes || t->nbytes > UINT64_MAX - (g->alignment - 1))
        return fail(P, at, "data size of %llu elements of %s (with alignment padding) "
                    "overflows 64 bits", (unsigned long long)n_elems, ti->name);
    at = P->off;
    if ((s = get_u64(P, &t->offset, "offset"))) return s;
    if (t->offset % g->alignment)
        return fail(P, at, "offset %llu is not a multiple of the alignment %u",
                    (unsigned long long)t->offset, g->alignment);
    return CV_OK;
}

typedef struct span {
    uint64_t offset;
    int64_t tensor;
} span;

static int cmp_span(const void *a, const void *b) {
    uint64_t x = ((const span *)a)->offset, y = ((const span *)b)->offset;
    return x < y ? -1 : x > y;
}

/* Data inside the file and no two tensors sharing a byte. Sorting by offset makes the
 * overlap check linear after the sort instead of quadratic. */
static cv_status check_tensor_data(parser *P, uint64_t infos_end) {
    cv_gguf *g = P->g;
    char n1[72], n2[72];
    g->data_off = infos_end + (g->alignment - infos_end % g->alignment) % g->alignment;
    uint64_t avail = g->data_off <= g->size ? g->size - g->data_off : 0;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        cv_gguf_tensor *t = &g->tensors[i];
        if (t->offset > avail || t->nbytes > avail - t->offset) {
            snprintf(P->ctx, sizeof P->ctx, "tensor %lld '%s'", (long long)i, show(t->name, n1));
            return fail(P, g->data_off, "data [%llu, +%llu) lies outside the file's data "
                        "section (%llu bytes from byte %llu)", (unsigned long long)t->offset,
                        (unsigned long long)t->nbytes, (unsigned long long)avail,
                        (unsigned long long)g->data_off);
        }
        t->data = g->base + g->data_off + t->offset;
    }
    if (g->n_tensors < 2) return CV_OK;
    span *order = malloc((size_t)g->n_tensors * sizeof *order);
    if (!order) return cv_errorf(P->err, CV_ENOMEM, "no memory to sort %lld tensors",
                                 (long long)g->n_tensors);
    for (int64_t i = 0; i < g->n_tensors; i++) order[i] = (span){g->tensors[i].offset, i};
    qsort(order, (size_t)g->n_tensors, sizeof *order, cmp_span);
    cv_status s = CV_OK;
    for (int64_t k = 1; k < g->n_tensors && !s; k++) {
        const cv_gguf_tensor *a = &g->tensors[order[k - 1].tensor];
        const cv_gguf_tensor *b = &g->tensors[order[k].tensor];
        if (a->offset + a->nbytes <= b->offset) continue;
        snprintf(P->ctx, sizeof P->ctx, "tensor %lld '%s'", (long long)order[k].tensor,
                 show(b->name, n1));
        s = fail(P, g->data_off + b->offset, "data at offset %llu overlaps tensor %lld '%s' "
                 "[%llu, %llu)", (unsigned long long)b->offset, (long long)order[k - 1].tensor,
                 show(a->name, n2), (unsigned long long)a->offset,
                 (unsigned long long)(a->offset + a->nbytes));
    }
    free(order);
    return s;
}

/* ---- open / close ---- */

static cv_status parse(cv_gguf *g, cv_error *err) {
    parser P = {.g = g, .off = 0, .err = err};
    cv_status s;
    uint64_t n_tensors, n_kv;
    snprintf(P.ctx, sizeof P.ctx, "header");
    /* Not GGUF: say only that. The bytes of whatever file was named (a key, a password
     * file) must never reach a message, a log or a remote caller. A file shorter than
     * the magic that starts like it counts as a truncated GGUF. */
    if (g->size && memcmp(g->base, GGUF_MAGIC, g->size < 4 ? (size_t)g->size : 4))
        return fail(&P, 0, "not a GGUF file (it does not start with \"GGUF\")");
    if (g->size < GGUF_HEADER_BYTES)
        return fail(&P, 0, "truncated: the header needs %u bytes, the file has %llu",
                    GGUF_HEADER_BYTES, (unsigned long long)g->size);
    P.off = 4;
    get_u32(&P, &g->version, "version");
    if (g->version == 0x03000000u || g->version == 0x02000000u)
        return fail(&P, 4, "version field reads %#x: a big-endian GGUF, not supported",
                    g->version);
    if (g->version != 2 && g->version != 3)
        return fail(&P, 4, "version %u is not supported (GGUF 3, or 2 which has the same "
                    "layout)", g->version);
    get_u64(&P, &n_tensors, "tensor count");
    get_u64(&P, &n_kv, "kv count");
    if (n_kv > left(&P) / GGUF_MIN_KV_BYTES)
        return fail(&P, 16, "kv count %llu needs at least %u bytes each, only %llu bytes "
                    "follow the header", (unsigned long long)n_kv, GGUF_MIN_KV_BYTES,
                    (unsigned long long)left(&P));
    if (n_tensors > (left(&P) - n_kv * GGUF_MIN_KV_BYTES) / GGUF_MIN_TENSOR_BYTES)
        return fail(&P, 8, "tensor count %llu needs at least %u bytes each, only %llu bytes "
                    "follow the header", (unsigned long long)n_tensors, GGUF_MIN_TENSOR_BYTES,
                    (unsigned long long)left(&P));
    g->n_kv = (int64_t)n_kv;
    g->n_tensors = (int64_t)n_tensors;
    g->alignment = 32;
    g->kvs = calloc(n_kv ? n_kv : 1, sizeof *g->kvs);
    g->tensors = calloc(n_tensors ? n_tensors : 1, sizeof *g->tensors);
    if (!g->kvs || !g->tensors || !index_init(&g->kv_index, n_kv) ||
        !index_init(&g->tensor_index, n_tensors))
        return cv_errorf(err, CV_ENOMEM, "no memory for %llu kvs and %llu tensors",
                         (unsigned long long)n_kv, (unsigned long long)n_tensors);
    if ((s = parse_kvs(&P))) return s;
    if ((s = check_known_keys(&P))) return s;
    for (int64_t i = 0; i < g->n_tensors; i++)
        if ((s = parse_tensor_info(&P, i))) return s;
    snprintf(P.ctx, sizeof P.ctx, "tensor data");
    return check_tensor_data(&P, P.off);
}

static cv_status open_buffer(const void *buf, size_t len, int mapped, cv_gguf **out,
                             cv_error *err) {
    *out = NULL;
    cv_gguf *g = calloc(1, sizeof *g);
    if (!g) return cv_errorf(err, CV_ENOMEM, "no memory for a gguf handle");
    g->base = buf;
    g->size = len;
    g->mapped = mapped;
    cv_status s = parse(g, err);
    if (s) {
        g->mapped = 0;  /* the caller still owns the buffer on failure */
        cv_gguf_close(g);
        return s;
    }
    *out = g;
    return CV_OK;
}

cv_status cv_gguf_open_memory(const void *buf, size_t len, cv_gguf **out, cv_error *err) {
    static const uint8_t empty[1];
    return open_buffer(len ? buf : empty, len, 0, out, err);
}

cv_status cv_gguf_open(const char *path, cv_gguf **out, cv_error *err) {
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* a FIFO must not block: refused below */
    if (fd < 0)
        return cv_errorf(err, errno == ENOENT ? CV_ENOTFOUND : CV_EIO, "%s: open: %s", path,
                         strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0) {
        cv_status s = cv_errorf(err, CV_EIO, "%s: fstat: %s", path, strerror(errno));
        close(fd);
        return s;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return cv_errorf(err, CV_EINVAL, "%s: not a regular file", path);
    }
    size_t len = (size_t)st.st_size;
    void *map = NULL;
    if (len) {
        map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            cv_status s = cv_errorf(err, CV_EIO, "%s: mmap %zu bytes: %s", path, len,
                                    strerror(errno));
            close(fd);
            return s;
        }
    }
    close(fd);  /* the mapping keeps the file */
    static const uint8_t empty[1];
    cv_status s = open_buffer(map ? map : empty, len, map != NULL, out, err);
    if (s) {
        if (map) munmap(map, len);
        if (s == CV_EFORMAT) cv_error_wrap(err, "%s", path);
    }
    return s;
}

void cv_gguf_drop_pages(const cv_gguf *g, const void *p, size_t len) {
    const uintptr_t base = (uintptr_t)g->base, a = (uintptr_t)p, page = (uintptr_t)sysconf(_SC_PAGESIZE);
    if (!g->mapped || a < base || a + len > base + g->size || a + len < a) return;
    uintptr_t lo = (a + page - 1) & ~(page - 1), hi = (a + len) & ~(page - 1);
    if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

void cv_gguf_close(cv_gguf *g) {
    if (!g) return;
    if (g->mapped) munmap((void *)g->base, g->size);
    free(g->kvs);
    free(g->tensors);
    free(g->pool);
    free(g->kv_index.slots);
    free(g->tensor_index.slots);
    free(g);
}

/* ---- accessors ---- */

uint32_t cv_gguf_version(const cv_gguf *g) { return g->version; }
uint32_t cv_gguf_alignment(const cv_gguf *g) { return g->alignment; }
uint64_t cv_gguf_file_size(const cv_gguf *g) { return g->size; }
int64_t cv_gguf_n_kv(const cv_gguf *g) { return g->n_kv; }
int64_t cv_gguf_n_tensors(const cv_gguf *g) { return g->n_tensors; }

int64_t cv_gguf_find_key(const cv_gguf *g, const char *key) {
    return index_find(&g->kv_index, &g->kvs[0].key, sizeof *g->kvs, key);
}

cv_str cv_gguf_kv_key(const cv_gguf *g, int64_t i) {
    return i >= 0 && i < g->n_kv ? g->kvs[i].key : (cv_str){NULL, 0};
}

cv_gguf_vtype cv_gguf_kv_type(const cv_gguf *g, int64_t i) {
    return i >= 0 && i < g->n_kv ? g->kvs[i].type : (cv_gguf_vtype)-1;
}

const void *cv_gguf_kv_raw(const cv_gguf *g, int64_t i, uint64_t *len) {
    if (i < 0 || i >= g->n_kv) { *len = 0; return NULL; }
    *len = g->kvs[i].val_len;
    return g->base + g->kvs[i].val_off;
}

static const gguf_kv *find_kv(const cv_gguf *g, const char *key) {
    int64_t i = cv_gguf_find_key(g, key);
    return i >= 0 ? &g->kvs[i] : NULL;
}

static int get_int(const cv_gguf *g, const char *key, int_val *v) {
    const gguf_kv *kv = find_kv(g, key);
    if (!kv || !vtype_is_int(kv->type)) return 0;
    *v = read_int(kv->type, g->base + kv->val_off);
    return 1;
}

uint32_t cv_gguf_get_u32(const cv_gguf *g, const char *key, uint32_t def) {
    int_val v;
    return get_int(g, key, &v) && (!v.neg || !v.mag) && v.mag <= UINT32_MAX ? (uint32_t)v.mag : def;
}

uint64_t cv_gguf_get_u64(const cv_gguf *g, const char *key, uint64_t def) {
    int_val v;
    return get_int(g, key, &v) && (!v.neg || !v.mag) ? v.mag : def;
}

int64_t cv_gguf_get_i64(const cv_gguf *g, const char *key, int64_t def) {
    int_val v;
    if (!get_int(g, key, &v)) return def;
    if (v.neg ? v.mag > (uint64_t)INT64_MAX + 1 : v.mag > (uint64_t)INT64_MAX) return def;
    return int_val_to_i64(v);
}

float cv_gguf_get_f32(const cv_gguf *g, const char *key, float def) {
    const gguf_kv *kv = find_kv(g, key);
    if (!kv || (kv->type != CV_GGUF_FLOAT32 && kv->type != CV_GGUF_FLOAT64)) return def;
    return (float)read_num_f64(kv->type, g->base + kv->val_off);
}

int cv_gguf_get_bool(const cv_gguf *g, const char *key, int def) {
    const gguf_kv *kv = find_kv(g, key);
    if (!kv || kv->type != CV_GGUF_BOOL) return def;
    return g->base[kv->val_off] != 0;
}

int64_t cv_gguf_get_token_id(const cv_gguf *g, const char *key) {
    const gguf_kv *kv = find_kv(g, key);
    if (!kv || !vtype_is_int(kv->type)) return -1;
    const uint8_t *v = g->base + kv->val_off;
    return token_id_is_none(kv->type, v) ? -1 : int_val_to_i64(read_int(kv->type, v));
}

static cv_str str_at(const cv_gguf *g, uint64_t off) {
    return (cv_str){(const char *)g->base + off + 8, rd64(g->base + off)};
}

cv_str cv_gguf_get_str(const cv_gguf *g, const char *key) {
    const gguf_kv *kv = find_kv(g, key);
    if (!kv || kv->type != CV_GGUF_STRING) return (cv_str){NULL, 0};
    return str_at(g, kv->val_off);
}

static const uint64_t *pool_at(const cv_gguf *g, cv_gguf_vtype elem_type, uint64_t idx) {
    return (elem_type == CV_GGUF_STRING || elem_type == CV_GGUF_ARRAY) && g->pool
               ? g->pool + idx : NULL;
}

int cv_gguf_get_arr(const cv_gguf *g, const char *key, cv_gguf_arr *arr) {
    memset(arr, 0, sizeof *arr);
    const gguf_kv *kv = find_kv(g, key);
    if (!kv || kv->type != CV_GGUF_ARRAY) return 0;
    arr->g = g;
    arr->type = kv->elem_type;
    arr->n = kv->n;
    arr->data = g->base + kv->data_off;
    arr->str_off = pool_at(g, kv->elem_type, kv->pool_idx);
    return 1;
}

cv_str cv_gguf_arr_str(const cv_gguf_arr *a, uint64_t i) {
    if (a->type != CV_GGUF_STRING || i >= a->n) return (cv_str){NULL, 0};
    return str_at(a->g, a->str_off[i]);
}

int64_t cv_gguf_arr_i64(const cv_gguf_arr *a, uint64_t i) {
    if (i >= a->n) return 0;
    const uint8_t *p = a->data + i * vtype_size[a->type];
    if (vtype_is_int(a->type)) return int_val_to_i64(read_int(a->type, p));
    if (a->type == CV_GGUF_BOOL) return p[0] != 0;
    if (a->type == CV_GGUF_FLOAT32 || a->type == CV_GGUF_FLOAT64) {
        double d = read_num_f64(a->type, p);
        /* Saturate: converting NaN or an out-of-range double to int64 is undefined. */
        if (!(d == d)) return 0;
        if (d >= 9223372036854775807.0) return INT64_MAX;
        if (d <= -9223372036854775808.0) return INT64_MIN;
        return (int64_t)d;
    }
    return 0;
}

double cv_gguf_arr_f64(const cv_gguf_arr *a, uint64_t i) {
    if (i >= a->n || !vtype_size[a->type]) return 0.0;
    return read_num_f64(a->type, a->data + i * vtype_size[a->type]);
}

int cv_gguf_arr_sub(const cv_gguf_arr *a, uint64_t i, cv_gguf_arr *sub) {
    memset(sub, 0, sizeof *sub);
    if (a->type != CV_GGUF_ARRAY || i >= a->n) return 0;
    const cv_gguf *g = a->g;
    uint64_t hdr = a->str_off[2 * i];
    sub->g = g;
    sub->type = (cv_gguf_vtype)rd32(g->base + hdr);
    sub->n = rd64(g->base + hdr + 4);
    sub->data = g->base + hdr + GGUF_ARR_HDR_BYTES;
    sub->str_off = pool_at(g, sub->type, a->str_off[2 * i + 1]);
    return 1;
}

const cv_gguf_tensor *cv_gguf_tensor_at(const cv_gguf *g, int64_t i) {
    return i >= 0 && i < g->n_tensors ? &g->tensors[i] : NULL;
}

const cv_gguf_tensor *cv_gguf_find_tensor(const cv_gguf *g, const char *name) {
    int64_t i = index_find(&g->tensor_index, &g->tensors[0].name, sizeof *g->tensors, name);
    return i >= 0 ? &g->tensors[i] : NULL;
}

uint64_t cv_gguf_data_offset(const cv_gguf *g) { return g->data_off; }
