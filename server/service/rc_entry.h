/* rc_entry: the bytes of one response-cache entry (response_cache.h), written by
 * corvid and read back from the memory LRU or from Redis.
 *
 * What Redis holds is untrusted on read: another replica, an older build or anyone
 * who can write to that Redis may have put it there. cv_rc_entry_decode accepts only
 * an entry that answers exactly the request asking (the key's digest, the prompt's
 * token count), that ended normally (stop or length), whose token ids exist in the
 * model's vocabulary and whose texts are valid UTF-8 without NUL; anything else is
 * CV_EFORMAT and the caller runs the model instead.
 *
 * Layout (little-endian): "CVRC" | u8 format (1) | 3 zero bytes | digest[32] |
 * u8 reason | u32 prompt_tokens | u32 completion_tokens | u8 stop_len | u8 0 | stop bytes |
 * u32 n_chunks | n_chunks x (u32 text_len | text | u32 n_ids | n_ids x i32).
 */
#ifndef CV_RC_ENTRY_H
#define CV_RC_ENTRY_H

#include <stddef.h>
#include <stdint.h>

#include "cv_error.h"
#include "engine.h"

#define CV_RC_DIGEST 32
#define CV_RC_FORMAT 1
#define CV_RC_HEADER_BYTES 51           /* up to the stop string */
#define CV_RC_MAX_ENTRY (8u << 20)      /* larger answers are not cached */

/* One chunk as the engine sent it: text (not NUL-terminated) and its token ids. */
typedef struct cv_rc_chunk {
    const char *text;
    size_t len;
    const int32_t *ids;
    int32_t n_ids;
} cv_rc_chunk;

typedef struct cv_rc_entry {
    cv_finish reason;
    int32_t prompt_tokens, completion_tokens;
    char stop_string[256];     /* "" when none matched */
    cv_rc_chunk *chunks;
    size_t n_chunks;
    void *mem;                 /* what chunks point into (one allocation) */
} cv_rc_entry;

/* An entry being written: the chunks first (cv_rc_writer_chunk), then the header
 * (cv_rc_writer_finish). */
typedef struct cv_rc_writer {
    uint8_t *buf;
    size_t len, cap;
    uint32_t n_chunks;
    int failed;                /* out of memory or over CV_RC_MAX_ENTRY: nothing to store */
} cv_rc_writer;

void cv_rc_writer_chunk(cv_rc_writer *w, const char *text, size_t len, const int32_t *ids, int32_t n_ids);
/* The finished entry (malloc'd, *len bytes) or NULL when it cannot be stored; the
 * writer is emptied either way. */
uint8_t *cv_rc_writer_finish(cv_rc_writer *w, const uint8_t digest[CV_RC_DIGEST], const cv_engine_final *f,
                             size_t *len);
void cv_rc_writer_free(cv_rc_writer *w);

/* Checks and decodes buf[0..len) as the answer to the request with this digest and
 * n_prompt prompt tokens on a model of n_vocab tokens. CV_OK with *out filled
 * (cv_rc_entry_free it), or CV_EFORMAT / CV_ENOMEM with the reason. */
cv_status cv_rc_entry_decode(const uint8_t *buf, size_t len, const uint8_t digest[CV_RC_DIGEST], int32_t n_prompt,
                             int32_t n_vocab, cv_rc_entry *out, cv_error *err);
void cv_rc_entry_free(cv_rc_entry *e);

#endif
