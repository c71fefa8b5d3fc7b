/* libFuzzer target for the Jinja interpreter: the template comes from a GGUF file and
 * the messages from clients, both untrusted.
 * Input: template \0 messages-JSON (when the second part is not JSON, a fixed chat
 * with tools is used), rendered with small limits so that every input ends quickly.
 * Checks: parse and render succeed or fail without memory errors or leaks (on
 * failure the output is empty); the output length is exact; the data spans are
 * sorted, disjoint, non-empty and inside the text; with no string in the data, no
 * byte is marked as data; the same input renders the same bytes twice. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jinja.h"

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "check failed: %s\n", #c); __builtin_trap(); } } while (0)

static const char DEFAULT_MESSAGES[] =
    "[{\"role\":\"system\",\"content\":\"sys <|im_end|>\"},{\"role\":\"user\",\"content\":\"hi\"},"
    "{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"type\":\"function\",\"function\":"
    "{\"name\":\"f\",\"arguments\":{\"a\":1}}}]},{\"role\":\"tool\",\"content\":\"42\"}]";
static const char TOOLS[] =
    "[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{\"type\":\"object\"}}}]";

static void check_out(const cv_jinja_out *o, bool data_has_strings) {
    CHECK(o->text != NULL && o->text[o->len] == 0);
    size_t end = 0;
    for (size_t i = 0; i < o->n_data; i++) {
        cv_tok_span s = o->data[i];
        CHECK(s.len > 0 && s.start >= end && s.start + s.len <= o->len);
        CHECK(i == 0 || s.start > end); /* adjacent runs are one span */
        end = s.start + s.len;
    }
    if (!data_has_strings) CHECK(o->n_data == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *z = memchr(data, 0, size);
    size_t tlen = z ? (size_t)(z - data) : size;
    char *msgs = NULL;
    if (z) {
        size_t mlen = size - tlen - 1;
        if (!(msgs = malloc(mlen + 1))) return 0;
        memcpy(msgs, z + 1, mlen);
        msgs[mlen] = 0;
    }
    cv_jinja *t;
    cv_error err;
    if (cv_jinja_parse((const char *)data, tlen, &t, &err) != CV_OK) {
        CHECK(t == NULL && err.msg[0]);
        free(msgs);
        return 0;
    }
    cv_jinja_limits lim = {.max_output = 1 << 16, .max_memory = 8 << 20, .max_steps = 20000, .max_depth = 8, .now = 1};
    for (int pass = 0; pass < 2; pass++) {
        bool custom = pass == 0 && msgs;
        const char *m = custom ? msgs : DEFAULT_MESSAGES;
        cv_jinja_var vars[] = {
            {"messages", m, true},
            {"tools", pass == 0 ? "null" : TOOLS, true},
            {"add_generation_prompt", pass ? "true" : "false", false},
            {"bos_token", "\"<s>\"", false},
            {"eos_token", "\"</s>\"", false},
        };
        cv_jinja_out o1, o2;
        cv_status s1 = cv_jinja_render(t, vars, 5, &lim, &o1, &err);
        if (s1 != CV_OK) {
            CHECK(o1.text == NULL && o1.data == NULL && o1.len == 0);
            if (custom) continue; /* bad JSON or a template error: try the fixed chat */
            break;
        }
        check_out(&o1, !custom || strchr(m, '"') != NULL || pass == 1);
        CHECK(cv_jinja_render(t, vars, 5, &lim, &o2, &err) == CV_OK);
        CHECK(o1.len == o2.len && memcmp(o1.text, o2.text, o1.len) == 0 && o1.n_data == o2.n_data);
        cv_jinja_out_free(&o1);
        cv_jinja_out_free(&o2);
    }
    cv_jinja_free(t);
    free(msgs);
    return 0;
}
