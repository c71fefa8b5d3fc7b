/* think_split: reasoning and answer apart, whatever the pieces the text arrives in. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "think_split.h"

typedef struct out {
    char r[256], c[256];
    size_t nr, nc;
} out;

static void emit(void *ctx, int reasoning, const char *t, size_t n) {
    out *o = ctx;
    char *dst = reasoning ? o->r : o->c;
    size_t *len = reasoning ? &o->nr : &o->nc;
    assert_true(*len + n < sizeof o->r);
    memcpy(dst + *len, t, n);
    *len += n;
    dst[*len] = 0;
}

/* Every way of cutting text in two and in single bytes gives the same split. */
static void check(const char *text, int inside, const char *want_r, const char *want_c) {
    size_t n = strlen(text);
    for (size_t cut = 0; cut <= n + 1; cut++) {
        out o = {0};
        cv_think_split s;
        cv_think_init(&s, inside);
        if (cut <= n) {
            cv_think_feed(&s, text, cut, emit, &o);
            cv_think_feed(&s, text + cut, n - cut, emit, &o);
        } else {
            for (size_t i = 0; i < n; i++) cv_think_feed(&s, text + i, 1, emit, &o);
        }
        cv_think_flush(&s, emit, &o);
        assert_string_equal(o.r, want_r);
        assert_string_equal(o.c, want_c);
    }
}

static void test_split(void **state) {
    (void)state;
    check("<think>Let me see: 2+2.</think>\n\nIt is 4.", 0, "Let me see: 2+2.", "It is 4.");
    check("Let me see.\n</think>\n\nFour.", 1, "Let me see.\n", "Four.");
    check("no markers at all, a < b and <thin", 0, "", "no markers at all, a < b and <thin");
    check("a <think> b </think> c <think> d", 0, " b  d", "a c ");
    check("\xe4\xb8\xad<think>\xe6\x96\x87</think>\xe5\xad\x97", 0, "\xe6\x96\x87", "\xe4\xb8\xad\xe5\xad\x97");
    check("</think>only answer", 0, "", "</think>only answer");
    check("", 1, "", "");
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_split)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
