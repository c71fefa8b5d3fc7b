/* gguf: GGUF v3 reader (memory-mapped, validated) and writer.
 *
 * cv_gguf_open maps the file and validates everything before returning: header,
 * every key/value (types, string and array lengths, nested arrays), known keys'
 * value types, tensor infos (n_dims <= 4, dimension products, sizes, overflow),
 * alignment, tensor data inside the file and not overlapping, token ids in
 * metadata inside the vocabulary. A bad file is a CV_EFORMAT error whose message
 * names the field and the byte offset; nothing is trusted after that.
 *
 * Strings point into the mapping and are NOT NUL-terminated (cv_str). All pointers
 * stay valid until cv_gguf_close.
 *
 * Versions: 3 is read; 2 is also accepted because its layout is identical (v3 only
 * added the big-endian variant, which is rejected). v1 (32-bit counts) is rejected.
 * Known keys and the types they must have: general.architecture/name STRING,
 * general.alignment UINT32 (a power of two, default 32), tokenizer.ggml.tokens and
 * .merges ARRAY of STRING, .scores ARRAY of FLOAT32 and .token_type ARRAY of INT32
 * (both as long as .tokens), tokenizer.ggml.*_token_id a non-negative integer below
 * the vocabulary size (or -1 / all ones: llama.cpp's "none"),
 * <arch>.context_length/.block_count/.embedding_length/... a non-negative integer,
 * <arch>.attention.layer_norm_rms_epsilon/.rope.freq_base/... FLOAT32,
 * tokenizer.ggml.add_*_token BOOL. Tensors: n_dims 1..4, every ne > 0,
 * ne[0] a multiple of the type's block size, offsets aligned, data inside the file and
 * not overlapping. Nothing else is checked about unknown keys.
 * A handle is read-only after open: any number of threads may use it at once.
 * A file that is truncated on disk while mapped can still raise SIGBUS (mmap).
 */
#ifndef CV_GGUF_H
#define CV_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "cv_error.h"
#include "quant.h"

typedef enum cv_gguf_vtype {
    CV_GGUF_UINT8 = 0, CV_GGUF_INT8 = 1, CV_GGUF_UINT16 = 2, CV_GGUF_INT16 = 3,
    CV_GGUF_UINT32 = 4, CV_GGUF_INT32 = 5, CV_GGUF_FLOAT32 = 6, CV_GGUF_BOOL = 7,
    CV_GGUF_STRING = 8, CV_GGUF_ARRAY = 9, CV_GGUF_UINT64 = 10, CV_GGUF_INT64 = 11,
    CV_GGUF_FLOAT64 = 12
} cv_gguf_vtype;

typedef struct cv_str {
    const char *ptr;
    uint64_t len;
} cv_str;

typedef struct cv_gguf_tensor {
    cv_str name;
    uint32_t n_dims;
    int64_t ne[4];        /* ne[0] is the row length (innermost); unused dims are 1 */
    cv_type type;
    uint64_t offset;      /* relative to the start of the data section */
    uint64_t nbytes;
    const void *data;     /* into the mapping */
} cv_gguf_tensor;

typedef struct cv_gguf cv_gguf;

/* "UINT8", ..., "FLOAT64"; "unknown" outside the enum. */
const char *cv_gguf_vtype_name(cv_gguf_vtype t);

cv_status cv_gguf_open(const char *path, cv_gguf **out, cv_error *err);
/* Parse a buffer the caller owns (it must outlive the handle): fuzzing, tests. */
cv_status cv_gguf_open_memory(const void *buf, size_t len, cv_gguf **out, cv_error *err);
void cv_gguf_close(cv_gguf *g);
/* The whole pages of a mapped file's bytes [p, p + len) leave this process's resident
 * memory (read from the file again if touched: the mapping is read-only and private);
 * for a gguf read from memory, or a range outside the mapping, nothing happens. For
 * bytes a backend has copied into memory of its own. */
void cv_gguf_drop_pages(const cv_gguf *g, const void *p, size_t len);

uint32_t cv_gguf_version(const cv_gguf *g);
uint32_t cv_gguf_alignment(const cv_gguf *g);
uint64_t cv_gguf_file_size(const cv_gguf *g);

/* Key/values, in file order. */
int64_t cv_gguf_n_kv(const cv_gguf *g);
int64_t cv_gguf_find_key(const cv_gguf *g, const char *key);  /* -1 when absent */
cv_str cv_gguf_kv_key(const cv_gguf *g, int64_t i);
cv_gguf_vtype cv_gguf_kv_type(const cv_gguf *g, int64_t i);
/* The value's encoded bytes as stored after its type (len set); NULL out of range. */
const void *cv_gguf_kv_raw(const cv_gguf *g, int64_t i, uint64_t *len);

/* Typed accessors: the value of `key`, or `def` when the key is absent. A key that
 * is present with an incompatible type is rejected at open time for known keys;
 * for other keys the accessor returns def. Integer accessors accept any integer
 * type whose value fits. */
uint32_t cv_gguf_get_u32(const cv_gguf *g, const char *key, uint32_t def);
uint64_t cv_gguf_get_u64(const cv_gguf *g, const char *key, uint64_t def);
int64_t cv_gguf_get_i64(const cv_gguf *g, const char *key, int64_t def);
float cv_gguf_get_f32(const cv_gguf *g, const char *key, float def);
int cv_gguf_get_bool(const cv_gguf *g, const char *key, int def);
/* A tokenizer.ggml.*_token_id value: -1 when absent, not an integer, or llama.cpp's
 * "no such token" (-1, stored by unsigned types as all ones); otherwise an id that
 * open checked to be inside the vocabulary (when the file has one). */
int64_t cv_gguf_get_token_id(const cv_gguf *g, const char *key);
/* {NULL, 0} when absent or not a string. */
cv_str cv_gguf_get_str(const cv_gguf *g, const char *key);

/* Arrays. Element access is by index; numeric elements are converted. For an array of
 * arrays, cv_gguf_arr_sub returns a handle usable with the same accessors. */
typedef struct cv_gguf_arr {
    const cv_gguf *g;
    cv_gguf_vtype type;   /* element type */
    uint64_t n;
    const uint8_t *data;  /* first element in the mapping */
    const uint64_t *str_off; /* for string/array elements: offsets of each element */
} cv_gguf_arr;

/* 0 (and arr zeroed) when the key is absent or not an array. */
int cv_gguf_get_arr(const cv_gguf *g, const char *key, cv_gguf_arr *arr);
cv_str cv_gguf_arr_str(const cv_gguf_arr *a, uint64_t i);
int64_t cv_gguf_arr_i64(const cv_gguf_arr *a, uint64_t i);
double cv_gguf_arr_f64(const cv_gguf_arr *a, uint64_t i);
int cv_gguf_arr_sub(const cv_gguf_arr *a, uint64_t i, cv_gguf_arr *sub);

/* Tensors, in file order. */
int64_t cv_gguf_n_tensors(const cv_gguf *g);
const cv_gguf_tensor *cv_gguf_tensor_at(const cv_gguf *g, int64_t i);
const cv_gguf_tensor *cv_gguf_find_tensor(const cv_gguf *g, const char *name);
/* Byte offset of the data section (tensor offsets are relative to it). */
uint64_t cv_gguf_data_offset(const cv_gguf *g);

/* Bytes of a tensor of `type` shaped ne[0..n_dims): whole blocks of the type. 0 when
 * the type is unknown, n_dims is outside 1..4, a dimension is not positive, ne[0] is
 * not a multiple of the block size, or the count or the size overflows. */
uint64_t cv_gguf_tensor_bytes(cv_type type, uint32_t n_dims, const int64_t *ne);

/* ---- writer ----
 * Build a file: add key/values (encoded and copied at once) and tensors (data
 * referenced), then write it. Key order and tensor order are kept; setting a key
 * again replaces its value in place. Nested arrays come from cv_gguf_copy_kvs.
 * read(write(x)) == x. The writer checks structure (tensor names, shapes, types,
 * alignment), not what keys mean: a vocabulary and token ids that disagree are
 * written as given and refused by the reader. */
typedef struct cv_gguf_writer cv_gguf_writer;

cv_gguf_writer *cv_gguf_writer_new(void);
void cv_gguf_writer_free(cv_gguf_writer *w);
/* Any fixed-size type (integers, floats, BOOL): *v holds its little-endian bytes. */
cv_status cv_gguf_set_scalar(cv_gguf_writer *w, const char *key, cv_gguf_vtype type,
                             const void *v, cv_error *err);
cv_status cv_gguf_set_u32(cv_gguf_writer *w, const char *key, uint32_t v, cv_error *err);
cv_status cv_gguf_set_i32(cv_gguf_writer *w, const char *key, int32_t v, cv_error *err);
cv_status cv_gguf_set_u64(cv_gguf_writer *w, const char *key, uint64_t v, cv_error *err);
cv_status cv_gguf_set_f32(cv_gguf_writer *w, const char *key, float v, cv_error *err);
cv_status cv_gguf_set_bool(cv_gguf_writer *w, const char *key, int v, cv_error *err);
cv_status cv_gguf_set_str(cv_gguf_writer *w, const char *key, const char *v, cv_error *err);
cv_status cv_gguf_set_str_arr(cv_gguf_writer *w, const char *key, const char *const *v,
                              uint64_t n, cv_error *err);
/* Numeric array: n elements of `type` (not STRING/ARRAY), raw little-endian bytes. */
cv_status cv_gguf_set_arr(cv_gguf_writer *w, const char *key, cv_gguf_vtype type,
                          const void *data, uint64_t n, cv_error *err);
/* Copy every key/value of an open file (except those the writer already has). */
cv_status cv_gguf_copy_kvs(cv_gguf_writer *w, const cv_gguf *src, cv_error *err);
/* The data is referenced, not copied: it must live until cv_gguf_write returns. */
cv_status cv_gguf_add_tensor(cv_gguf_writer *w, const char *name, cv_type type,
                             uint32_t n_dims, const int64_t *ne, const void *data,
                             cv_error *err);
/* Tensor data starts at a multiple of general.alignment (UINT32, default 32) and each
 * tensor is padded to it, as llama.cpp writes. A failed write removes the file. */
cv_status cv_gguf_write(cv_gguf_writer *w, const char *path, cv_error *err);
/* The same bytes into a malloc'ed buffer the caller frees. */
cv_status cv_gguf_write_memory(cv_gguf_writer *w, uint8_t **buf, size_t *len, cv_error *err);

#endif
