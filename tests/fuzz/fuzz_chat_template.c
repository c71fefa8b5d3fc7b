/* libFuzzer target for chat templates: the template text comes from a GGUF file and
 * the messages from clients, both untrusted.
 * Input: template \0 architecture \0 name \0 then messages as (role byte, content \0).
 * Checks: detection never reads outside its strings; every family renders or
 * refuses without memory errors; ChatML keeps every content verbatim. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chat_template.h"

#define MAX_MSGS 16

static const char *next_field(const uint8_t **p, const uint8_t *end, size_t *len) {
    const uint8_t *start = *p, *z = memchr(start, 0, (size_t)(end - start));
    if (!z) z = end;
    *len = (size_t)(z - start);
    *p = z < end ? z + 1 : end;
    return (const char *)start;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* A private NUL-terminated copy: message contents are C strings. */
    uint8_t *buf = malloc(size + 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    buf[size] = 0;
    const uint8_t *p = buf, *end = buf + size;
    cv_str f[3];
    for (int i = 0; i < 3; i++) {
        size_t len;
        f[i].ptr = next_field(&p, end, &len);
        f[i].len = len;
    }
    cv_chat_family fam;
    cv_error err;
    if (cv_chat_detect(f[0], f[1], f[2], &fam, &err) == CV_OK && strlen(cv_chat_family_name(fam)) == 0)
        abort();

    static const char *const roles[] = {"system", "user", "assistant", "tool"};
    cv_chat_msg msgs[MAX_MSGS];
    size_t n = 0;
    while (p < end && n < MAX_MSGS) {
        msgs[n].role = roles[*p++ & 3];
        size_t len;
        msgs[n].content = next_field(&p, end, &len);
        n++;
    }
    for (int fi = CV_CHAT_LLAMA2; fi <= CV_CHAT_GEMMA; fi++) {
        for (int gen = 0; gen < 2; gen++) {
            char *out = NULL;
            if (cv_chat_apply((cv_chat_family)fi, msgs, n, gen, &out, &err) != CV_OK) {
                if (out) abort();
                continue;
            }
            if (fi == CV_CHAT_CHATML)
                for (size_t i = 0; i < n; i++)
                    if (!strstr(out, msgs[i].content)) abort();
            free(out);
        }
    }
    free(buf);
    return 0;
}
