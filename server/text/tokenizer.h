/* tokenizer: text <-> token ids, built from a GGUF file's tokenizer.* metadata.
 *
 * Two families, as llama.cpp reads them from GGUF:
 *  - "llama" (SentencePiece-style): pieces merged by score, spaces written as
 *    U+2581, an optional leading space (tokenizer.ggml.add_space_prefix, default
 *    on), bytes without a piece fall back to <0xNN> byte tokens (else <unk>).
 *  - "gpt2" (byte-level BPE): text split into words by the pre-tokenizer that
 *    tokenizer.ggml.pre names (gpt-2/default, llama3/llama-bpe and their variants,
 *    qwen2, qwen35, deepseek-llm, deepseek-coder, deepseek-v3, falcon,
 *    smollm/starcoder, tekken: the names llama.cpp gives them), each byte mapped
 *    to a printable code point, then merged by tokenizer.ggml.merges rank.
 * Special tokens (control/unknown types) in the input are matched as whole tokens
 * only with CV_TOK_PARSE_SPECIAL (and, with cv_tok_encode_plain, only outside the
 * caller's plain spans); user-defined tokens are always matched. Matching is
 * leftmost-longest. Input need not be valid UTF-8: invalid bytes go through
 * byte fallback (SPM) or their byte tokens (BPE).
 *
 * The tokenizer copies what it needs: the GGUF handle may be closed after
 * cv_tok_load. A loaded tokenizer is immutable and safe to share across threads;
 * a cv_tok_stream belongs to one sequence.
 */
#ifndef CV_TOKENIZER_H
#define CV_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "cv_error.h"
#include "gguf.h"

typedef struct cv_tok cv_tok;

typedef enum cv_tok_kind { CV_TOK_SPM = 1, CV_TOK_BPE = 2 } cv_tok_kind;

/* GGUF tokenizer.ggml.token_type values. */
typedef enum cv_tok_type {
    CV_TOK_TYPE_UNDEFINED = 0,
    CV_TOK_TYPE_NORMAL = 1,
    CV_TOK_TYPE_UNKNOWN = 2,
    CV_TOK_TYPE_CONTROL = 3,
    CV_TOK_TYPE_USER_DEFINED = 4,
    CV_TOK_TYPE_UNUSED = 5,
    CV_TOK_TYPE_BYTE = 6
} cv_tok_type;

/* Encode flags. */
#define CV_TOK_ADD_SPECIAL   1u /* add BOS/EOS as the model asks (add_bos/add_eos_token) */
#define CV_TOK_PARSE_SPECIAL 2u /* match control tokens ("<s>", "<|im_end|>") in the text */

/* Decode flags. */
#define CV_TOK_RENDER_SPECIAL 1u /* control/unknown tokens render as their text, not "" */
#define CV_TOK_STRIP_SPACE    2u /* drop the leading space an SPM add_space_prefix added */

cv_status cv_tok_load(const cv_gguf *g, cv_tok **out, cv_error *err);
void cv_tok_free(cv_tok *t);

cv_tok_kind cv_tok_get_kind(const cv_tok *t);
/* "spm" or "bpe". */
const char *cv_tok_kind_name(const cv_tok *t);
/* The pre-tokenizer's name as tokenizer.ggml.pre gives it ("gpt-2" when the key
 * is absent); "" for SPM. */
const char *cv_tok_pre_name(const cv_tok *t);
int32_t cv_tok_n_vocab(const cv_tok *t);
/* -1 when the model has none. */
int32_t cv_tok_bos(const cv_tok *t);
int32_t cv_tok_eos(const cv_tok *t);
/* End of generation: EOS, EOT, EOM, and control tokens that end a turn in the
 * common chat formats (<|eot_id|>, <|im_end|>, <end_of_turn>, ...). */
int cv_tok_is_eog(const cv_tok *t, int32_t id);
int cv_tok_adds_bos(const cv_tok *t);
cv_tok_type cv_tok_token_type(const cv_tok *t, int32_t id);
/* The vocabulary text of a token as stored (U+2581 / byte-level code points). */
const char *cv_tok_token_text(const cv_tok *t, int32_t id, size_t *len);
/* Token id of an exact vocabulary text, -1 when absent. */
int32_t cv_tok_find(const cv_tok *t, const char *text, size_t len);

/* Tokenizes text[0..len). Writes up to cap ids and sets *n to the number of ids
 * the text needs; when *n > cap the result is CV_ERANGE (call again with more
 * room). At most CV_TOK_MAX_IDS(len) ids are ever needed. */
cv_status cv_tok_encode(const cv_tok *t, const char *text, size_t len, unsigned flags,
                        int32_t *ids, size_t cap, size_t *n, cv_error *err);
/* The most ids len bytes of text can take: SPM writes each space as U+2581 (3 bytes),
 * which a vocabulary without that piece spells as 3 byte tokens; then the leading
 * U+2581, BOS and EOS. (len + 3 held only for vocabularies with U+2581.) */
#define CV_TOK_MAX_IDS(len) (3 * (size_t)(len) + 5)

/* A byte range [start, start + len) of a text. */
typedef struct cv_tok_span {
    size_t start, len;
} cv_tok_span;

/* cv_tok_encode, except that with CV_TOK_PARSE_SPECIAL a control (or unknown) token
 * is matched only where its whole text lies outside the plain spans: text inside
 * them (a chat message's content between the template's own control tokens) is
 * encoded as without that flag, so it can never become a control token. The
 * spans must be sorted and disjoint (CV_EINVAL otherwise); empty ones are allowed.
 * Where no control-token text meets a span, the ids are exactly cv_tok_encode's:
 * the text is cut into the same fragments. */
cv_status cv_tok_encode_plain(const cv_tok *t, const char *text, size_t len, unsigned flags,
                              const cv_tok_span *plain, size_t n_plain, int32_t *ids, size_t cap,
                              size_t *n, cv_error *err);

/* Bytes of one token. The pointer stays valid while t lives. An id outside the
 * vocabulary yields CV_EINVAL. */
cv_status cv_tok_piece(const cv_tok *t, int32_t id, unsigned flags, const char **piece,
                       size_t *len, cv_error *err);

/* Concatenated bytes of ids[0..n_ids) (not NUL-terminated, possibly not valid
 * UTF-8 when a multi-byte character is cut). Same room protocol as encode:
 * *len is the full length, CV_ERANGE when it exceeds cap. */
cv_status cv_tok_decode(const cv_tok *t, const int32_t *ids, size_t n_ids, unsigned flags,
                        char *out, size_t cap, size_t *len, cv_error *err);

/* Streaming decoder for generation: feed ids one at a time and get only complete
 * UTF-8 characters back; bytes that can never form one become U+FFFD. */
typedef struct cv_tok_stream cv_tok_stream;
cv_status cv_tok_stream_new(const cv_tok *t, unsigned flags, cv_tok_stream **out, cv_error *err);
void cv_tok_stream_free(cv_tok_stream *s);
/* *text points into the stream's buffer, valid until the next call. */
cv_status cv_tok_stream_feed(cv_tok_stream *s, int32_t id, const char **text, size_t *len,
                             cv_error *err);
/* End of sequence: emits U+FFFD for a held incomplete character and resets. */
void cv_tok_stream_flush(cv_tok_stream *s, const char **text, size_t *len);

#endif
