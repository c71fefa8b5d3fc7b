/* libFuzzer target for the GGUF reader: parse a buffer, then walk every accessor so
 * that any offset validation missed at open time shows up as an ASan report. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "gguf.h"

static volatile uint64_t sink;  /* keeps the reads from being optimised away */

static void touch(const void *p, uint64_t n) {
    if (!n) return;
    const uint8_t *b = p;
    sink += b[0] + b[n - 1] + b[n / 2];
}

static void walk_arr(const cv_gguf_arr *a, int depth) {
    for (uint64_t i = 0; i < a->n; i++) {
        cv_str s = cv_gguf_arr_str(a, i);
        touch(s.ptr, s.len);
        sink += (uint64_t)cv_gguf_arr_i64(a, i);
        double d = cv_gguf_arr_f64(a, i);
        sink += d == d;
        cv_gguf_arr sub;
        if (cv_gguf_arr_sub(a, i, &sub)) walk_arr(&sub, depth + 1);
    }
    /* Out-of-range indices must be refused, not read. */
    touch(cv_gguf_arr_str(a, a->n).ptr, 0);
    sink += (uint64_t)cv_gguf_arr_i64(a, a->n);
    (void)depth;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cv_gguf *g;
    cv_error err;
    if (cv_gguf_open_memory(data, size, &g, &err) != CV_OK) {
        sink += strlen(err.msg);
        return 0;
    }
    sink += cv_gguf_version(g) + cv_gguf_alignment(g) + cv_gguf_file_size(g);
    for (int64_t i = 0; i < cv_gguf_n_kv(g); i++) {
        cv_str k = cv_gguf_kv_key(g, i);
        char key[256];
        if (k.len >= sizeof key || memchr(k.ptr, 0, k.len)) continue;
        memcpy(key, k.ptr, k.len);
        key[k.len] = 0;
        if (cv_gguf_find_key(g, key) != i) __builtin_trap();
        uint64_t len;
        touch(cv_gguf_kv_raw(g, i, &len), len);
        sink += cv_gguf_get_u32(g, key, 1) + cv_gguf_get_u64(g, key, 2) +
                (uint64_t)cv_gguf_get_i64(g, key, 3) + (uint64_t)cv_gguf_get_bool(g, key, 4) +
                (uint64_t)cv_gguf_get_token_id(g, key);
        float f = cv_gguf_get_f32(g, key, 5.0f);
        sink += f == f;
        cv_str s = cv_gguf_get_str(g, key);
        touch(s.ptr, s.len);
        cv_gguf_arr a;
        if (cv_gguf_get_arr(g, key, &a)) walk_arr(&a, 0);
    }
    for (int64_t i = 0; i < cv_gguf_n_tensors(g); i++) {
        const cv_gguf_tensor *t = cv_gguf_tensor_at(g, i);
        touch(t->data, t->nbytes);
        char name[256];
        if (t->name.len >= sizeof name || memchr(t->name.ptr, 0, t->name.len)) continue;
        memcpy(name, t->name.ptr, t->name.len);
        name[t->name.len] = 0;
        if (cv_gguf_find_tensor(g, name) != t) __builtin_trap();
    }
    cv_gguf_close(g);
    return 0;
}
