/* text_field: the one check of a request's text field, for every protocol.
 *
 * The server refuses text that is not strict UTF-8 (base/utf8.h's cv_utf8_check) or
 * holds U+0000 (its tokenizers, templates and stop strings take C strings), with one
 * wording everywhere, naming the field as the request's API spells it and the byte:
 * "messages[1].content: not valid UTF-8 at byte 7",
 * "stop[0]: NUL (U+0000) at byte 5 is not accepted in text".
 */
#ifndef CV_TEXT_FIELD_H
#define CV_TEXT_FIELD_H

#include <stddef.h>

/* 0 when s[0..n) is acceptable; otherwise -1 with the message in msg. */
int cv_text_field_check(const char *s, size_t n, const char *field, char *msg, size_t cap);

#endif
