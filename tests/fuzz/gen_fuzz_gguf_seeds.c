/* Writes the seed corpus of fuzz_gguf with the GGUF writer: small valid files that
 * reach every part of the reader (all value types, nested arrays, several tensor
 * types, a non-default alignment, a vocabulary with token ids). Not built by make;
 * regenerate with:
 *   make && cc -std=c11 -D_GNU_SOURCE -Ikernels -Iserver tests/fuzz/gen_fuzz_gguf_seeds.c \
 *     build/lib/libcorvid_engine.a build/lib/libcorvid_kernels.a -o build/gen_seeds && \
 *     build/gen_seeds tests/fuzz/corpus/fuzz_gguf
 */
#include <stdio.h>
#include <string.h>

#include "gguf.h"

#define CHECK(call) do { if ((call) != CV_OK) goto fail; } while (0)

static int save(cv_gguf_writer *w, const char *dir, const char *name, cv_error *err) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    cv_status s = cv_gguf_write(w, path, err);
    cv_gguf_writer_free(w);
    return s == CV_OK ? 0 : -1;
}

/* Tokenizer only, no tensors: what the vocab files look like. */
static int seed_vocab(const char *dir, cv_error *err) {
    static const char *const toks[] = {"<unk>", "<s>", "</s>", "\xe2\x96\x81" "a", "b", "ab"};
    static const float scores[] = {0, 0, 0, -1, -2, -3};
    static const int32_t types[] = {2, 3, 3, 1, 1, 1};
    static const char *const merges[] = {"a b"};
    cv_gguf_writer *w = cv_gguf_writer_new();
    if (!w) return -1;
    CHECK(cv_gguf_set_str(w, "general.architecture", "llama", err));
    CHECK(cv_gguf_set_str(w, "tokenizer.ggml.model", "llama", err));
    CHECK(cv_gguf_set_str_arr(w, "tokenizer.ggml.tokens", toks, 6, err));
    CHECK(cv_gguf_set_arr(w, "tokenizer.ggml.scores", CV_GGUF_FLOAT32, scores, 6, err));
    CHECK(cv_gguf_set_arr(w, "tokenizer.ggml.token_type", CV_GGUF_INT32, types, 6, err));
    CHECK(cv_gguf_set_str_arr(w, "tokenizer.ggml.merges", merges, 1, err));
    CHECK(cv_gguf_set_u32(w, "tokenizer.ggml.bos_token_id", 1, err));
    CHECK(cv_gguf_set_u32(w, "tokenizer.ggml.eos_token_id", 2, err));
    CHECK(cv_gguf_set_u32(w, "tokenizer.ggml.padding_token_id", UINT32_MAX, err));
    CHECK(cv_gguf_set_bool(w, "tokenizer.ggml.add_bos_token", 1, err));
    return save(w, dir, "vocab.gguf", err);
fail:
    cv_gguf_writer_free(w);
    return -1;
}

/* A model-shaped file: hyperparameters and tensors of three types, alignment 64. */
static int seed_model(const char *dir, cv_error *err) {
    static float f32[64 * 2];
    static uint8_t q8[2 * 34], q4k[144];
    for (int i = 0; i < 128; i++) f32[i] = (float)i / 7.0f;
    memset(q8, 0x11, sizeof q8);
    memset(q4k, 0x22, sizeof q4k);
    cv_gguf_writer *w = cv_gguf_writer_new();
    if (!w) return -1;
    CHECK(cv_gguf_set_str(w, "general.architecture", "llama", err));
    CHECK(cv_gguf_set_u32(w, "general.alignment", 64, err));
    CHECK(cv_gguf_set_u32(w, "llama.block_count", 1, err));
    CHECK(cv_gguf_set_u32(w, "llama.context_length", 128, err));
    CHECK(cv_gguf_set_u32(w, "llama.embedding_length", 64, err));
    CHECK(cv_gguf_set_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f, err));
    CHECK(cv_gguf_add_tensor(w, "token_embd.weight", CV_TYPE_F32, 2, (const int64_t[]){64, 2}, f32, err));
    CHECK(cv_gguf_add_tensor(w, "blk.0.attn_q.weight", CV_TYPE_Q8_0, 2, (const int64_t[]){32, 2}, q8, err));
    CHECK(cv_gguf_add_tensor(w, "output.weight", CV_TYPE_Q4_K, 1, (const int64_t[]){256}, q4k, err));
    return save(w, dir, "model.gguf", err);
fail:
    cv_gguf_writer_free(w);
    return -1;
}

/* Every scalar type, an array of each, and nested arrays (through copy_kvs, the
 * writer's only way to emit them). */
static int seed_values(const char *dir, cv_error *err) {
    static const uint8_t nested[] = {
        'G', 'G', 'U', 'F', 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0,
        4, 0, 0, 0, 0, 0, 0, 0, 'n', 'e', 's', 't', 9, 0, 0, 0,
        9, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0,               /* 2 arrays */
        8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 'x',  /* ["x"] */
        5, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff,       /* [-1] */
    };
    cv_gguf_writer *w = cv_gguf_writer_new();
    if (!w) return -1;
    cv_gguf *src = NULL;
    uint8_t bytes[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    for (int t = 0; t <= CV_GGUF_FLOAT64; t++) {
        if (t == CV_GGUF_STRING || t == CV_GGUF_ARRAY) continue;
        char key[32];
        snprintf(key, sizeof key, "s.%s", cv_gguf_vtype_name((cv_gguf_vtype)t));
        CHECK(cv_gguf_set_scalar(w, key, (cv_gguf_vtype)t, bytes, err));
        snprintf(key, sizeof key, "a.%s", cv_gguf_vtype_name((cv_gguf_vtype)t));
        CHECK(cv_gguf_set_arr(w, key, (cv_gguf_vtype)t, bytes, 1, err));
    }
    CHECK(cv_gguf_set_str(w, "s.STRING", "value", err));
    CHECK(cv_gguf_open_memory(nested, sizeof nested, &src, err));
    CHECK(cv_gguf_copy_kvs(w, src, err));
    cv_gguf_close(src);
    return save(w, dir, "values.gguf", err);
fail:
    cv_gguf_close(src);
    cv_gguf_writer_free(w);
    return -1;
}

int main(int argc, char **argv) {
    cv_error err = {0};
    if (argc != 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
        return 2;
    }
    if (seed_vocab(argv[1], &err) || seed_model(argv[1], &err) || seed_values(argv[1], &err)) {
        fprintf(stderr, "gen_fuzz_gguf_seeds: %s\n", err.msg);
        return 1;
    }
    return 0;
}
