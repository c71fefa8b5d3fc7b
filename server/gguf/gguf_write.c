/* gguf: the writer. Values are encoded when they are set, so that writing is a plain
 * copy and a key set twice keeps its first position with the newest value. */
#include "gguf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ggml's GGML_MAX_NAME is 64 including the NUL: longer names break llama.cpp. */
#define GGUF_MAX_TENSOR_NAME 63
#define GGUF_DEFAULT_ALIGNMENT 32u

typedef struct wkv {
    char *key;          /* not NUL-terminated in general: keys copied from files */
    uint64_t key_len;
    cv_gguf_vtype type;
    uint8_t *val;       /* encoded value, as it follows the type in the file */
    uint64_t val_len;
} wkv;

typedef struct wtensor {
    char *name;
    cv_type type;
    uint32_t n_dims;
    int64_t ne[4];
    const void *data;
    uint64_t nbytes;
} wtensor;

struct cv_gguf_writer {
    wkv *kvs;
    size_t n_kv, cap_kv;
    wtensor *tensors;
    size_t n_tensors, cap_tensors;
};

cv_gguf_writer *cv_gguf_writer_new(void) {
    return calloc(1, sizeof(cv_gguf_writer));
}

void cv_gguf_writer_free(cv_gguf_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kvs[i].key);
        free(w->kvs[i].val);
    }
    for (size_t i = 0; i < w->n_tensors; i++) free(w->tensors[i].name);
    free(w->kvs);
    free(w->tensors);
    free(w);
}

static wkv *find_wkv(cv_gguf_writer *w, const char *key, uint64_t len) {
    for (size_t i = 0; i < w->n_kv; i++)
        if (w->kvs[i].key_len == len && !memcmp(w->kvs[i].key, key, len)) return &w->kvs[i];
    return NULL;
}

/* Takes ownership of val (freed on failure too). */
static cv_status put_kv(cv_gguf_writer *w, const char *key, uint64_t key_len,
                        cv_gguf_vtype type, uint8_t *val, uint64_t val_len, cv_error *err) {
    wkv *kv = find_wkv(w, key, key_len);
    if (kv) {
        free(kv->val);
        kv->type = type;
        kv->val = val;
        kv->val_len = val_len;
        return CV_OK;
    }
    if (w->n_kv == w->cap_kv) {
        size_t cap = w->cap_kv ? 2 * w->cap_kv : 16;
        wkv *p = realloc(w->kvs, cap * sizeof *p);
        if (!p) goto nomem;
        w->kvs = p;
        w->cap_kv = cap;
    }
    char *k = malloc(key_len ? key_len : 1);
    if (!k) goto nomem;
    memcpy(k, key, key_len);
    w->kvs[w->n_kv++] = (wkv){k, key_len, type, val, val_len};
    return CV_OK;
nomem:
    free(val);
    return cv_errorf(err, CV_ENOMEM, "gguf writer: no memory for key '%.*s'", (int)key_len, key);
}

static uint8_t *alloc_val(uint64_t len, const char *key, cv_error *err) {
    uint8_t *v = len <= SIZE_MAX ? malloc(len ? len : 1) : NULL;
    if (!v) cv_errorf(err, CV_ENOMEM, "gguf writer: no memory for %llu bytes of '%s'",
                      (unsigned long long)len, key);
    return v;
}

static uint32_t scalar_size(cv_gguf_vtype t) {
    switch (t) {
    case CV_GGUF_UINT8: case CV_GGUF_INT8: case CV_GGUF_BOOL: return 1;
    case CV_GGUF_UINT16: case CV_GGUF_INT16: return 2;
    case CV_GGUF_UINT32: case CV_GGUF_INT32: case CV_GGUF_FLOAT32: return 4;
    case CV_GGUF_UINT64: case CV_GGUF_INT64: case CV_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

cv_status cv_gguf_set_scalar(cv_gguf_writer *w, const char *key, cv_gguf_vtype type,
                             const void *v, cv_error *err) {
    uint32_t n = scalar_size(type);
    if (!key || !v || !n)
        return cv_errorf(err, CV_EINVAL, "gguf writer: set '%s': type %s is not a scalar",
                         key ? key : "(null)", cv_gguf_vtype_name(type));
    uint8_t *val = alloc_val(n, key, err);
    if (!val) return CV_ENOMEM;
    memcpy(val, v, n);
    if (type == CV_GGUF_BOOL) val[0] = val[0] != 0;
    return put_kv(w, key, strlen(key), type, val, n, err);
}

cv_status cv_gguf_set_u32(cv_gguf_writer *w, const char *key, uint32_t v, cv_error *err) {
    return cv_gguf_set_scalar(w, key, CV_GGUF_UINT32, &v, err);
}

cv_status cv_gguf_set_i32(cv_gguf_writer *w, const char *key, int32_t v, cv_error *err) {
    return cv_gguf_set_scalar(w, key, CV_GGUF_INT32, &v, err);
}

cv_status cv_gguf_set_u64(cv_gguf_writer *w, const char *key, uint64_t v, cv_error *err) {
    return cv_gguf_set_scalar(w, key, CV_GGUF_UINT64, &v, err);
}

cv_status cv_gguf_set_f32(cv_gguf_writer *w, const char *key, float v, cv_error *err) {
    return cv_gguf_set_scalar(w, key, CV_GGUF_FLOAT32, &v, err);
}

cv_status cv_gguf_set_bool(cv_gguf_writer *w, const char *key, int v, cv_error *err) {
    uint8_t b = v != 0;
    return cv_gguf_set_scalar(w, key, CV_GGUF_BOOL, &b, err);
}

cv_status cv_gguf_set_str(cv_gguf_writer *w, const char *key, const char *v, cv_error *err) {
    if (!key || !v) return cv_errorf(err, CV_EINVAL, "gguf writer: set_str with a NULL argument");
    uint64_t n = strlen(v);
    uint8_t *val = alloc_val(8 + n, key, err);
    if (!val) return CV_ENOMEM;
    memcpy(val, &n, 8);
    memcpy(val + 8, v, n);
    return put_kv(w, key, strlen(key), CV_GGUF_STRING, val, 8 + n, err);
}

static void put_arr_header(uint8_t *p, cv_gguf_vtype elem, uint64_t n) {
    uint32_t t = elem;
    memcpy(p, &t, 4);
    memcpy(p + 4, &n, 8);
}

cv_status cv_gguf_set_str_arr(cv_gguf_writer *w, const char *key, const char *const *v,
                              uint64_t n, cv_error *err) {
    if (!key || (!v && n)) return cv_errorf(err, CV_EINVAL, "gguf writer: set_str_arr with a NULL argument");
    uint64_t len = 12;
    for (uint64_t i = 0; i < n; i++) {
        if (!v[i])
            return cv_errorf(err, CV_EINVAL, "gguf writer: '%s' element %llu is NULL", key,
                             (unsigned long long)i);
        len += 8 + strlen(v[i]);
    }
    uint8_t *val = alloc_val(len, key, err);
    if (!val) return CV_ENOMEM;
    put_arr_header(val, CV_GGUF_STRING, n);
    uint8_t *p = val + 12;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t sl = strlen(v[i]);
        memcpy(p, &sl, 8);
        memcpy(p + 8, v[i], sl);
        p += 8 + sl;
    }
    return put_kv(w, key, strlen(key), CV_GGUF_ARRAY, val, len, err);
}

cv_status cv_gguf_set_arr(cv_gguf_writer *w, const char *key, cv_gguf_vtype type,
                          const void *data, uint64_t n, cv_error *err) {
    uint32_t es = scalar_size(type);
    if (!key || !es || (!data && n))
        return cv_errorf(err, CV_EINVAL, "gguf writer: set_arr '%s': element type %s is not "
                         "a scalar, or data is NULL", key ? key : "(null)",
                         cv_gguf_vtype_name(type));
    if (n > (UINT64_MAX - 12) / es)
        return cv_errorf(err, CV_ERANGE, "gguf writer: set_arr '%s': %llu elements overflow",
                         key, (unsigned long long)n);
    uint8_t *val = alloc_val(12 + n * es, key, err);
    if (!val) return CV_ENOMEM;
    put_arr_header(val, type, n);
    if (n) memcpy(val + 12, data, n * es);
    return put_kv(w, key, strlen(key), CV_GGUF_ARRAY, val, 12 + n * es, err);
}

cv_status cv_gguf_copy_kvs(cv_gguf_writer *w, const cv_gguf *src, cv_error *err) {
    for (int64_t i = 0; i < cv_gguf_n_kv(src); i++) {
        cv_str key = cv_gguf_kv_key(src, i);
        if (find_wkv(w, key.ptr, key.len)) continue;
        uint64_t len;
        const void *raw = cv_gguf_kv_raw(src, i, &len);
        uint8_t *val = alloc_val(len, "copied value", err);
        if (!val) return CV_ENOMEM;
        memcpy(val, raw, len);
        cv_status s = put_kv(w, key.ptr, key.len, cv_gguf_kv_type(src, i), val, len, err);
        if (s) return s;
    }
    return CV_OK;
}

cv_status cv_gguf_add_tensor(cv_gguf_writer *w, const char *name, cv_type type,
                             uint32_t n_dims, const int64_t *ne, const void *data,
                             cv_error *err) {
    if (!name || !ne || !data)
        return cv_errorf(err, CV_EINVAL, "gguf writer: add_tensor with a NULL argument");
    size_t name_len = strlen(name);
    if (name_len > GGUF_MAX_TENSOR_NAME)
        return cv_errorf(err, CV_EINVAL, "gguf writer: tensor name '%s' is %zu bytes, at most %d",
                         name, name_len, GGUF_MAX_TENSOR_NAME);
    for (size_t i = 0; i < w->n_tensors; i++)
        if (!strcmp(w->tensors[i].name, name))
            return cv_errorf(err, CV_EINVAL, "gguf writer: duplicate tensor name '%s'", name);
    uint64_t nbytes = cv_gguf_tensor_bytes(type, n_dims, ne);
    if (!nbytes)
        return cv_errorf(err, CV_EINVAL, "gguf writer: tensor '%s': type %d with %u dims "
                         "(ne[0] = %lld) is not a valid shape", name, (int)type, n_dims,
                         n_dims ? (long long)ne[0] : 0LL);
    if (w->n_tensors == w->cap_tensors) {
        size_t cap = w->cap_tensors ? 2 * w->cap_tensors : 16;
        wtensor *p = realloc(w->tensors, cap * sizeof *p);
        if (!p) return cv_errorf(err, CV_ENOMEM, "gguf writer: no memory for tensor '%s'", name);
        w->tensors = p;
        w->cap_tensors = cap;
    }
    char *copy = strdup(name);
    if (!copy) return cv_errorf(err, CV_ENOMEM, "gguf writer: no memory for tensor '%s'", name);
    wtensor *t = &w->tensors[w->n_tensors++];
    *t = (wtensor){.name = copy, .type = type, .n_dims = n_dims, .data = data, .nbytes = nbytes};
    for (uint32_t d = 0; d < 4; d++) t->ne[d] = d < n_dims ? ne[d] : 1;
    return CV_OK;
}

static cv_status writer_alignment(cv_gguf_writer *w, uint32_t *align, cv_error *err) {
    *align = GGUF_DEFAULT_ALIGNMENT;
    wkv *kv = find_wkv(w, "general.alignment", 17);
    if (!kv) return CV_OK;
    if (kv->type != CV_GGUF_UINT32)
        return cv_errorf(err, CV_EINVAL, "gguf writer: general.alignment has type %s, "
                         "expected UINT32", cv_gguf_vtype_name(kv->type));
    memcpy(align, kv->val, 4);
    if (*align == 0 || (*align & (*align - 1)))
        return cv_errorf(err, CV_EINVAL, "gguf writer: general.alignment %u is not a power "
                         "of two", *align);
    return CV_OK;
}

static uint64_t pad_to(uint64_t n, uint32_t align) {
    return (align - n % align) % align;
}

/* Emits the whole file; returns 0 when every write succeeded. */
static int emit(const cv_gguf_writer *w, uint32_t align, FILE *f) {
    static const uint8_t zeros[256];
    int bad = 0;
    uint64_t pos = 0;
#define PUT(p, n) do { uint64_t n_ = (n); if (n_ && fwrite((p), 1, n_, f) != n_) bad = 1; pos += n_; } while (0)
#define PUT64(v) do { uint64_t v_ = (v); PUT(&v_, 8); } while (0)
#define PUT32(v) do { uint32_t v_ = (v); PUT(&v_, 4); } while (0)
#define PAD() do { uint64_t p_ = pad_to(pos, align); while (p_) { uint64_t c_ = p_ < sizeof zeros ? p_ : sizeof zeros; PUT(zeros, c_); p_ -= c_; } } while (0)
    PUT("GGUF", 4);
    PUT32(3);
    PUT64(w->n_tensors);
    PUT64(w->n_kv);
    for (size_t i = 0; i < w->n_kv && !bad; i++) {
        PUT64(w->kvs[i].key_len);
        PUT(w->kvs[i].key, w->kvs[i].key_len);
        PUT32(w->kvs[i].type);
        PUT(w->kvs[i].val, w->kvs[i].val_len);
    }
    uint64_t offset = 0;
    for (size_t i = 0; i < w->n_tensors && !bad; i++) {
        const wtensor *t = &w->tensors[i];
        PUT64(strlen(t->name));
        PUT(t->name, strlen(t->name));
        PUT32(t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++) PUT64((uint64_t)t->ne[d]);
        PUT32(t->type);
        PUT64(offset);
        offset += t->nbytes + pad_to(t->nbytes, align);
    }
    PAD();
    for (size_t i = 0; i < w->n_tensors && !bad; i++) {
        PUT(w->tensors[i].data, w->tensors[i].nbytes);
        PAD();
    }
#undef PAD
#undef PUT32
#undef PUT64
#undef PUT
    return bad;
}

cv_status cv_gguf_write(cv_gguf_writer *w, const char *path, cv_error *err) {
    uint32_t align;
    cv_status s = writer_alignment(w, &align, err);
    if (s) return s;
    FILE *f = fopen(path, "wb");
    if (!f) return cv_errorf(err, CV_EIO, "%s: open for writing: %m", path);
    int bad = emit(w, align, f);
    if (fclose(f) != 0) bad = 1;
    if (bad) {
        s = cv_errorf(err, CV_EIO, "%s: write: %m", path);
        unlink(path);  /* never leave a truncated file that looks like a model */
    }
    return s;
}

cv_status cv_gguf_write_memory(cv_gguf_writer *w, uint8_t **buf, size_t *len, cv_error *err) {
    uint32_t align;
    *buf = NULL;
    *len = 0;
    cv_status s = writer_alignment(w, &align, err);
    if (s) return s;
    char *mem = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&mem, &size);
    if (!f) return cv_errorf(err, CV_ENOMEM, "gguf writer: open_memstream: %m");
    int bad = emit(w, align, f);
    if (fclose(f) != 0) bad = 1;
    if (bad) {
        free(mem);
        return cv_errorf(err, CV_ENOMEM, "gguf writer: building the file in memory failed");
    }
    *buf = (uint8_t *)mem;
    *len = size;
    return CV_OK;
}
