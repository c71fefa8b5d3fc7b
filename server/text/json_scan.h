/* json_scan: a JSON value checked one byte at a time, for text that streams (a tool
 * call's arguments go out as the model writes them; each byte is known valid or not
 * when it comes).
 *
 * cv_jscan_feed says whether the byte may come next, and when the value is complete.
 * The grammar is RFC 8259's, except that bytes >= 0x80 inside strings are taken as
 * they come (UTF-8 is the consumer's to check). A number is complete only at the byte
 * after it, so a bare top-level number never completes: the scanner is for objects and
 * arrays. Nesting past CV_JSCAN_DEPTH is refused. Plain data: copy it to fork a scan.
 */
#ifndef CV_JSON_SCAN_H
#define CV_JSON_SCAN_H

#include <stdint.h>

#define CV_JSCAN_DEPTH 64

typedef struct cv_jscan {
    uint8_t st, sub, key, depth;
    uint8_t stack[CV_JSCAN_DEPTH]; /* '{' or '[' per open container */
    const char *lit;               /* the rest of true / false / null being read */
} cv_jscan;

typedef enum cv_jscan_r {
    CV_JSCAN_MORE, /* the byte fits; the value goes on */
    CV_JSCAN_DONE, /* the byte closed the value */
    CV_JSCAN_BAD,  /* the byte cannot come here (state unchanged) */
} cv_jscan_r;

/* At the start of a value. */
void cv_jscan_init(cv_jscan *s);
/* Inside an object at depth 1, just after a member's value (what follows a call's
 * arguments in {"name": ..., "arguments": {...}...}). */
void cv_jscan_init_after_member(cv_jscan *s);
cv_jscan_r cv_jscan_feed(cv_jscan *s, uint8_t c);

#endif
