/* test_vocab: a small ChatML vocabulary as a GGUF in memory, for tests and fuzz
 * targets of chat templates (header-only).
 *
 * SPM with byte fallback only: <unk> <s> </s> (ids 0-2), the 256 byte tokens, then
 * <|im_start|> (259) and <|im_end|> (260), all control tokens but the bytes. With
 * tmpl non-NULL the file also carries tokenizer.chat_template, general.architecture
 * "llama", bos/eos ids 1/2 and add_bos_token. Returns the file's bytes (malloc'd, in
 * *buf, *len), or false when the writer fails.
 */
#ifndef CV_TEST_VOCAB_H
#define CV_TEST_VOCAB_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "gguf.h"
#include "tokenizer.h"

enum { CV_TEST_IM_START = 259, CV_TEST_IM_END = 260, CV_TEST_N_VOCAB = 261 };

static inline bool cv_test_chatml_gguf(const char *tmpl, uint8_t **buf, size_t *len) {
    static char bytes[256][7];
    const char *toks[CV_TEST_N_VOCAB];
    float scores[CV_TEST_N_VOCAB] = {0};
    int32_t types[CV_TEST_N_VOCAB];
    toks[0] = "<unk>", toks[1] = "<s>", toks[2] = "</s>";
    types[0] = CV_TOK_TYPE_UNKNOWN, types[1] = types[2] = CV_TOK_TYPE_CONTROL;
    for (int b = 0; b < 256; b++) {
        snprintf(bytes[b], sizeof bytes[b], "<0x%02X>", b);
        toks[3 + b] = bytes[b];
        types[3 + b] = CV_TOK_TYPE_BYTE;
    }
    toks[CV_TEST_IM_START] = "<|im_start|>", toks[CV_TEST_IM_END] = "<|im_end|>";
    types[CV_TEST_IM_START] = types[CV_TEST_IM_END] = CV_TOK_TYPE_CONTROL;
    cv_gguf_writer *w = cv_gguf_writer_new();
    cv_error e;
    bool ok = w && cv_gguf_set_str(w, "tokenizer.ggml.model", "llama", &e) == CV_OK &&
              cv_gguf_set_str_arr(w, "tokenizer.ggml.tokens", toks, CV_TEST_N_VOCAB, &e) == CV_OK &&
              cv_gguf_set_arr(w, "tokenizer.ggml.scores", CV_GGUF_FLOAT32, scores, CV_TEST_N_VOCAB, &e) == CV_OK &&
              cv_gguf_set_arr(w, "tokenizer.ggml.token_type", CV_GGUF_INT32, types, CV_TEST_N_VOCAB, &e) == CV_OK;
    if (ok && tmpl)
        ok = cv_gguf_set_str(w, "general.architecture", "llama", &e) == CV_OK &&
             cv_gguf_set_u32(w, "tokenizer.ggml.bos_token_id", 1, &e) == CV_OK &&
             cv_gguf_set_u32(w, "tokenizer.ggml.eos_token_id", 2, &e) == CV_OK &&
             cv_gguf_set_bool(w, "tokenizer.ggml.add_bos_token", 1, &e) == CV_OK &&
             cv_gguf_set_str(w, "tokenizer.chat_template", tmpl, &e) == CV_OK;
    ok = ok && cv_gguf_write_memory(w, buf, len, &e) == CV_OK;
    cv_gguf_writer_free(w);
    return ok;
}

#endif
