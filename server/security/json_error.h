/* json_error: a jansson parse error as text without the bytes of the input.
 *
 * jansson ends most messages with " near '<text at the error>'" and reports an invalid
 * byte as "unable to decode byte 0xNN". Both copy the input into the message, and from
 * there into logs and replies: the start of a token, of a secret file named as a
 * config file by mistake, of a password. cv_json_error_text cuts the quote (keeping
 * " near end of file") and turns the byte into "invalid UTF-8"; the caller reports the
 * position (line, column or byte), which is enough to find the mistake.
 */
#ifndef CV_JSON_ERROR_H
#define CV_JSON_ERROR_H

#include <jansson.h>

/* Edits je->text in place and returns it. */
const char *cv_json_error_text(json_error_t *je);

#endif
