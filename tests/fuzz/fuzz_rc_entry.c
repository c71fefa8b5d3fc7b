/* libFuzzer target for the response cache's entry decoder (rc_entry.h): what Redis
 * holds is untrusted, written by any replica or anyone who reaches that Redis.
 * Input: the entry's bytes. The digest and prompt count the request expects are taken
 * from the input itself, so fuzzing gets past those checks into the chunks.
 * Checks: a decoded entry satisfies the contract (ids in the vocabulary, texts valid
 * UTF-8 without NUL, reason stop or length), and writing it again gives the same
 * bytes (the decoder accepts nothing the writer would not write). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rc_entry.h"
#include "utf8.h"

#define N_VOCAB 512

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t digest[CV_RC_DIGEST] = {0};
    int32_t n_prompt = 0;
    if (size >= 8 + CV_RC_DIGEST + 5) {
        memcpy(digest, data + 8, CV_RC_DIGEST);
        const uint8_t *p = data + 8 + CV_RC_DIGEST + 1;
        n_prompt = (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
    }
    cv_rc_entry e;
    cv_error err;
    if (cv_rc_entry_decode(data, size, digest, n_prompt, N_VOCAB, &e, &err) != CV_OK) return 0;
    if (e.reason != CV_FINISH_STOP && e.reason != CV_FINISH_LENGTH) abort();
    cv_rc_writer w = {0};
    for (size_t i = 0; i < e.n_chunks; i++) {
        const cv_rc_chunk *c = &e.chunks[i];
        if (memchr(c->text, 0, c->len) || !cv_utf8_valid(c->text, c->len)) abort();
        for (int32_t k = 0; k < c->n_ids; k++)
            if (c->ids[k] < 0 || c->ids[k] >= N_VOCAB) abort();
        cv_rc_writer_chunk(&w, c->text, c->len, c->ids, c->n_ids);
    }
    cv_engine_final f = {.reason = e.reason, .prompt_tokens = e.prompt_tokens,
                         .completion_tokens = e.completion_tokens,
                         .stop_string = e.stop_string[0] ? e.stop_string : NULL};
    size_t len = 0;
    uint8_t *again = cv_rc_writer_finish(&w, digest, &f, &len);
    if (!again || len != size || memcmp(again, data, size)) abort();
    free(again);
    cv_rc_entry_free(&e);
    return 0;
}
