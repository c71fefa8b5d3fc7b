/* libFuzzer target for the model loader: hyperparameters and tensor shapes from a
 * hostile GGUF. Whatever loads must also run a two-token forward step without a
 * sanitizer report; scratch sizes are bounded by the tensors actually in the file. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "cpu_backend.h"
#include "gguf.h"
#include "kv_cache.h"
#include "model.h"

static cv_backend *backend(void) {
    static cv_backend *be;
    cv_error err;
    cv_cpu_options co = {.n_threads = 1};
    if (!be && cv_cpu_backend_create(&co, &be, &err) != CV_OK) return NULL;
    return be;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cv_gguf *g;
    cv_error err;
    cv_backend *be = backend();
    if (!be || cv_gguf_open_memory(data, size, &g, &err) != CV_OK) return 0;
    cv_model *m;
    cv_model_opts mo = {.max_batch = 4, .max_logits = 2};
    if (cv_model_load(be, g, &mo, &m, &err) == CV_OK) {
        cv_kv_config kc = cv_model_kv_config(m, 8, 1, CV_TYPE_F16);
        cv_kv_cache *kv;
        if (cv_kv_create(&kc, &kv, &err) == CV_OK) {
            int32_t tokens[2] = {0, cv_model_hparams(m)->n_vocab - 1}, pos[2] = {0, 1}, seq[2] = {0, 0};
            uint8_t want[2] = {1, 1};
            static float logits[2 * 4096];
            cv_batch b = {.n = 2, .tokens = tokens, .pos = pos, .seq = seq, .want_logits = want};
            if (cv_model_hparams(m)->n_vocab <= 4096 && cv_kv_reserve(kv, 0, 2, &err) == CV_OK)
                (void)cv_model_forward(m, kv, &b, logits, &err);
            cv_kv_free(kv);
        }
        cv_model_free(m);
    }
    cv_gguf_close(g);
    return 0;
}
