#include "text_field.h"

#include <stdio.h>

#include "utf8.h"

int cv_text_field_check(const char *s, size_t n, const char *field, char *msg, size_t cap) {
    size_t off;
    switch (cv_utf8_check(s, n, &off)) {
    case CV_UTF8_OK: return 0;
    case CV_UTF8_INVALID:
        snprintf(msg, cap, "%s: not valid UTF-8 at byte %zu", field, off);
        return -1;
    case CV_UTF8_NUL:
        snprintf(msg, cap, "%s: NUL (U+0000) at byte %zu is not accepted in text", field, off);
        return -1;
    }
    return -1;
}
