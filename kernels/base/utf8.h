/* utf8: strict UTF-8 decoding and encoding, and a streaming repairer.
 *
 * Decoding follows RFC 3629: no overlong forms, no surrogates, nothing above
 * U+10FFFF. cv_utf8_decode never reads past `n` bytes.
 *
 * cv_utf8_stream turns an arbitrary byte stream, fed in pieces of any size, into
 * valid UTF-8: complete characters pass through, a character split across feeds
 * is held back until its last byte arrives, and bytes that cannot start or
 * continue a character become U+FFFD (one per maximal invalid subpart, as
 * WHATWG's decoder does). Output never contains half a character.
 */
#ifndef CV_UTF8_H
#define CV_UTF8_H

#include <stddef.h>
#include <stdint.h>

#define CV_UTF8_REPLACEMENT 0xFFFDu

/* Length (1..4) of the valid character at s[0..n) and its code point in *cp;
 * 0 when s does not start with a valid, complete character (or n == 0). */
int cv_utf8_decode(const uint8_t *s, size_t n, uint32_t *cp);

/* Writes cp (<= U+10FFFF, not a surrogate) to out; returns its length 1..4,
 * or 0 for a value that is not a Unicode scalar value. */
int cv_utf8_encode(uint32_t cp, char out[4]);

/* 1 when s[0..n) is entirely valid UTF-8 (U+0000 included). */
int cv_utf8_valid(const char *s, size_t n);

/* What cv_utf8_check found first in a text that arrived with an explicit length. */
typedef enum cv_utf8_verdict {
    CV_UTF8_OK = 0,      /* valid UTF-8 without U+0000 */
    CV_UTF8_INVALID = 1, /* a byte that does not start or continue a valid character here */
    CV_UTF8_NUL = 2      /* U+0000: valid UTF-8, but it would cut the text as a C string */
} cv_utf8_verdict;

/* Checks s[0..n) for input validation: strict UTF-8 (as cv_utf8_decode: no lone
 * continuation bytes, truncated sequences, overlong forms, surrogates, nothing above
 * U+10FFFF) and no NUL. *bad_offset (may be NULL) gets the byte offset of the first
 * character that is not valid or is U+0000, or n when the verdict is CV_UTF8_OK. NUL is
 * reported apart so that a caller can name it; the server refuses both, because its
 * tokenizers and templates take C strings. */
cv_utf8_verdict cv_utf8_check(const char *s, size_t n, size_t *bad_offset);

typedef struct cv_utf8_stream {
    uint8_t pend[4]; /* start of a character still missing bytes */
    uint8_t n_pend;
} cv_utf8_stream;

/* Most bytes one cv_utf8_stream_feed of n input bytes can write. */
#define CV_UTF8_STREAM_BOUND(n) (((size_t)(n) + 4) * 3)

void cv_utf8_stream_init(cv_utf8_stream *s);
/* Appends the repaired text for in[0..n) to out (room for CV_UTF8_STREAM_BOUND(n)
 * bytes); returns the number of bytes written. */
size_t cv_utf8_stream_feed(cv_utf8_stream *s, const char *in, size_t n, char *out);
/* Ends the stream: a held-back incomplete character becomes U+FFFD (out needs 3
 * bytes). Returns the bytes written; the stream is ready for reuse. */
size_t cv_utf8_stream_flush(cv_utf8_stream *s, char *out);

/* s[0..n) repaired in one go (as a stream fed once and flushed): a malloc'd,
 * NUL-terminated copy that is valid UTF-8, its length in *len; NULL when out of memory. */
char *cv_utf8_repaired(const char *s, size_t n, size_t *len);

#endif
