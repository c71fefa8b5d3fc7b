/* libFuzzer target for the tool-call parser (tool_calls.h): model output is untrusted.
 * Input: a byte choosing the syntax and max_calls, a byte seeding the piece sizes, then
 * the output, fed in pieces. Checks: with no call found the content is the output byte
 * for byte; calls begin and end in turn, each with a name; a complete call's argument
 * pieces joined parse as a JSON object, an incomplete one's start with '{'; no more
 * calls than max_calls. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tool_calls.h"

typedef struct seen {
    char *content;
    size_t len, cap;
    size_t calls;
    int in_call;
    char *args;
    size_t args_len, args_cap;
} seen;

static void put(char **b, size_t *len, size_t *cap, const char *t, size_t n) {
    if (*len + n + 1 > *cap) {
        *cap = (*len + n + 1) * 2;
        *b = realloc(*b, *cap);
        if (!*b) abort();
    }
    memcpy(*b + *len, t, n);
    *len += n;
    (*b)[*len] = 0;
}

static void on_content(void *ctx, const char *t, size_t n) {
    seen *s = ctx;
    if (s->in_call || n == 0) abort();
    put(&s->content, &s->len, &s->cap, t, n);
}

static void on_begin(void *ctx, const char *name) {
    seen *s = ctx;
    if (s->in_call || !name[0]) abort();
    s->in_call = 1;
    s->args_len = 0;
    s->calls++;
}

static void on_args(void *ctx, const char *t, size_t n) {
    seen *s = ctx;
    if (!s->in_call || n == 0) abort();
    put(&s->args, &s->args_len, &s->args_cap, t, n);
}

static void on_end(void *ctx, int complete) {
    seen *s = ctx;
    if (!s->in_call) abort();
    s->in_call = 0;
    if (complete) {
        json_t *a = json_loadb(s->args, s->args_len, 0, NULL);
        if (!json_is_object(a)) abort();
        json_decref(a);
    } else if (s->args_len && s->args[0] != '{') {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    cv_tool_syntax syn = (cv_tool_syntax)(data[0] % 5);
    size_t max_calls = (data[0] >> 3) & 3;
    unsigned seed = data[1];
    const char *text = (const char *)data + 2;
    size_t n = size - 2;
    seen s = {0};
    cv_tool_sink sink = {on_content, on_begin, on_args, on_end, &s};
    cv_tool_parser *p;
    if (cv_tool_parser_new(syn, max_calls, 4096, &sink, &p, NULL) != CV_OK) return 0;
    for (size_t at = 0; at < n;) {
        seed = seed * 1103515245u + 12345u;
        size_t k = 1 + (seed >> 16) % 17;
        if (k > n - at) k = n - at;
        if (cv_tool_parser_feed(p, text + at, k) != CV_OK) abort();
        at += k;
    }
    if (cv_tool_parser_finish(p) != CV_OK) abort();
    if (cv_tool_parser_calls(p) != s.calls) abort();
    if (max_calls && s.calls > max_calls) abort();
    if (s.in_call) abort();
    if (s.calls == 0 && (s.len != n || (n && memcmp(s.content, text, n) != 0))) abort();
    cv_tool_parser_free(p);
    free(s.content);
    free(s.args);
    return 0;
}
