/* llama_ref: greedy ids and logits from llama.cpp for the reference-data recorder.
 *
 * Our own program against llama.cpp's public API (llama.h); record_llama_ref.py compiles
 * it at record time against the peer named by LLAMA_CPP_DIR. It is never part of the
 * project's build nor of CI: only the data it writes is committed.
 *
 *   llama_ref MODEL.gguf N_GEN LOGIT_ROWS OUT_PREFIX PROMPT...
 *
 * For each PROMPT (text, tokenized by llama.cpp with the model's BOS rule) it decodes
 * the prompt in one batch that asks for every position's logits, then N_GEN greedy
 * tokens one at a time (argmax, lowest id on a tie, EOS not special), with an F32 KV
 * cache, no flash attention, one sequence. It prints one JSON object on stdout:
 *   {"n_vocab": V, "prompts": [{"text", "ids", "greedy", "logit_rows", "gaps", "scales"}...]}
 * gaps[k] is the top-1 minus top-2 logit of the row generated token k came from, and
 * scales[k] that row's largest |logit|. The
 * logits of sequence positions 0 .. LOGIT_ROWS-1 (prompt rows first, then the decoded
 * ones) go to OUT_PREFIX.<prompt index>.f32, raw little-endian float32 rows of V.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llama.h"

static void quiet(enum ggml_log_level level, const char *text, void *user) {
    (void)user;
    if (level >= GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

static void json_str(const char *s) {
    putchar('"');
    for (; *s; s++) {
        const unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20) printf("\\u%04x", c);
        else putchar(c);
    }
    putchar('"');
}

static void json_ints(const int32_t *v, int n) {
    putchar('[');
    for (int i = 0; i < n; i++) printf("%s%d", i ? ", " : "", v[i]);
    putchar(']');
}

/* argmax (lowest index on a tie), the gap to the runner-up and the largest |logit| */
static int32_t greedy(const float *row, int32_t n, float *gap, float *scale) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (row[i] > row[best]) best = i;
    float second = -1e30f, mx = 0;
    for (int32_t i = 0; i < n; i++) {
        if (i != best && row[i] > second) second = row[i];
        if (fabsf(row[i]) > mx) mx = fabsf(row[i]);
    }
    *gap = row[best] - second;
    *scale = mx;
    return best;
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: llama_ref MODEL.gguf N_GEN LOGIT_ROWS OUT_PREFIX PROMPT...\n");
        return 2;
    }
    const char *path = argv[1], *prefix = argv[4];
    const int n_gen = atoi(argv[2]), logit_rows = atoi(argv[3]);
    llama_log_set(quiet, NULL);
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    struct llama_model *model = llama_model_load_from_file(path, mp);
    if (!model) {
        fprintf(stderr, "llama_ref: llama.cpp cannot load %s\n", path);
        return 1;
    }
    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    const int32_t n_vocab = llama_vocab_n_tokens(vocab);
    printf("{\"n_vocab\": %d, \"prompts\": [", n_vocab);
    for (int p = 5; p < argc; p++) {
        struct llama_context_params cp = llama_context_default_params();
        cp.n_ctx = 256;
        cp.n_batch = cp.n_ubatch = 256;
        cp.n_seq_max = 1;
        cp.n_threads = cp.n_threads_batch = 2;
        cp.type_k = cp.type_v = GGML_TYPE_F32;
        cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
        struct llama_context *ctx = llama_init_from_model(model, cp);
        if (!ctx) {
            fprintf(stderr, "llama_ref: llama.cpp cannot make a context for %s\n", path);
            return 1;
        }
        int32_t ids[256], out[256];
        float gaps[256], scales[256];
        const int32_t n_ids = llama_tokenize(vocab, argv[p], (int32_t)strlen(argv[p]), ids, 128, true, false);
        if (n_ids <= 0 || n_ids + n_gen > 200) {
            fprintf(stderr, "llama_ref: prompt %d gives %d tokens (need 1..%d)\n", p - 4, n_ids, 200 - n_gen);
            return 1;
        }
        char name[4096];
        snprintf(name, sizeof name, "%s.%d.f32", prefix, p - 5);
        FILE *f = fopen(name, "wb");
        if (!f) {
            perror(name);
            return 1;
        }
        int rows_written = 0;
        struct llama_batch b = llama_batch_init(n_ids, 0, 1);
        for (int32_t i = 0; i < n_ids; i++) {
            b.token[i] = ids[i];
            b.pos[i] = i;
            b.n_seq_id[i] = 1;
            b.seq_id[i][0] = 0;
            b.logits[i] = 1;
        }
        b.n_tokens = n_ids;
        if (llama_decode(ctx, b)) {
            fprintf(stderr, "llama_ref: llama_decode failed on the prompt\n");
            return 1;
        }
        for (int32_t i = 0; i < n_ids && rows_written < logit_rows; i++, rows_written++)
            fwrite(llama_get_logits_ith(ctx, i), sizeof(float), (size_t)n_vocab, f);
        const float *row = llama_get_logits_ith(ctx, n_ids - 1);
        for (int k = 0; k < n_gen; k++) {
            out[k] = greedy(row, n_vocab, &gaps[k], &scales[k]);
            if (k == n_gen - 1) break;
            struct llama_batch one = llama_batch_get_one(&out[k], 1);
            if (llama_decode(ctx, one)) {
                fprintf(stderr, "llama_ref: llama_decode failed at generated token %d\n", k);
                return 1;
            }
            row = llama_get_logits_ith(ctx, -1);
            if (rows_written < logit_rows) {
                fwrite(row, sizeof(float), (size_t)n_vocab, f);
                rows_written++;
            }
        }
        llama_batch_free(b);
        fclose(f);
        llama_free(ctx);
        printf("%s{\"text\": ", p > 5 ? ", " : "");
        json_str(argv[p]);
        printf(", \"ids\": ");
        json_ints(ids, n_ids);
        printf(", \"greedy\": ");
        json_ints(out, n_gen);
        printf(", \"logit_rows\": %d, \"gaps\": [", rows_written);
        for (int k = 0; k < n_gen; k++) printf("%s%.6g", k ? ", " : "", gaps[k]);
        printf("], \"scales\": [");
        for (int k = 0; k < n_gen; k++) printf("%s%.6g", k ? ", " : "", scales[k]);
        printf("]}");
    }
    printf("]}\n");
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
