/* tool_calls: each family's calls out of model output, whatever the pieces it arrives
 * in; malformed output comes back as content, byte for byte; the syntax of the real
 * templates under tests/data/templates. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_data.h"
#include "tool_calls.h"

typedef struct out {
    char content[2048];
    char calls[2048]; /* "name args|name args|" */
    size_t n_content;
    int in_call;
    size_t pieces;
} out;

static void on_content(void *ctx, const char *t, size_t n) {
    out *o = ctx;
    assert_true(n > 0);
    assert_true(o->n_content + n < sizeof o->content);
    memcpy(o->content + o->n_content, t, n);
    o->n_content += n;
    o->content[o->n_content] = 0;
}

/* A call: "name args|" when complete, "name args!|" when not; args pieces joined. */
static void on_begin(void *ctx, const char *name) {
    out *o = ctx;
    size_t l = strlen(o->calls);
    assert_int_equal(o->in_call, 0);
    o->in_call = 1;
    snprintf(o->calls + l, sizeof o->calls - l, "%s ", name);
}

static void on_args(void *ctx, const char *t, size_t n) {
    out *o = ctx;
    size_t l = strlen(o->calls);
    assert_true(o->in_call && n > 0);
    assert_true(l + n < sizeof o->calls);
    memcpy(o->calls + l, t, n);
    o->calls[l + n] = 0;
    o->pieces++;
}

static void on_end(void *ctx, int complete) {
    out *o = ctx;
    size_t l = strlen(o->calls);
    assert_int_equal(o->in_call, 1);
    o->in_call = 0;
    snprintf(o->calls + l, sizeof o->calls - l, "%s|", complete ? "" : "!");
}

/* Cut in two at every byte and fed byte by byte: the same content and calls. */
static void check_max(cv_tool_syntax syn, size_t max_calls, const char *text, const char *want_content,
                      const char *want_calls) {
    size_t n = strlen(text);
    for (size_t cut = 0; cut <= n + 1; cut++) {
        out o = {0};
        cv_tool_sink sink = {on_content, on_begin, on_args, on_end, &o};
        cv_tool_parser *p;
        cv_error err = {0};
        assert_int_equal(cv_tool_parser_new(syn, max_calls, 0, &sink, &p, &err), CV_OK);
        if (cut <= n) {
            assert_int_equal(cv_tool_parser_feed(p, text, cut), CV_OK);
            assert_int_equal(cv_tool_parser_feed(p, text + cut, n - cut), CV_OK);
        } else {
            for (size_t i = 0; i < n; i++) assert_int_equal(cv_tool_parser_feed(p, text + i, 1), CV_OK);
        }
        assert_int_equal(cv_tool_parser_finish(p), CV_OK);
        if (strcmp(o.content, want_content) != 0 || strcmp(o.calls, want_calls) != 0)
            fail_msg("cut %zu of \"%s\":\n content \"%s\" (want \"%s\")\n calls \"%s\" (want \"%s\")", cut, text,
                     o.content, want_content, o.calls, want_calls);
        size_t want_n = 0;
        for (const char *c = want_calls; (c = strchr(c, '|')); c++) want_n++;
        assert_int_equal(cv_tool_parser_calls(p), want_n);
        cv_tool_parser_free(p);
    }
}

static void check(cv_tool_syntax syn, const char *text, const char *want_content, const char *want_calls) {
    check_max(syn, 0, text, want_content, want_calls);
}

/* Output that holds no valid call: all of it is content. */
static void check_plain(cv_tool_syntax syn, const char *text) { check(syn, text, text, ""); }

static void test_hermes(void **state) {
    (void)state;
    cv_tool_syntax h = CV_TOOL_SYNTAX_HERMES;
    check(h, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>", "",
          "get_weather {\"city\": \"Paris\"}|");
    check(h, "Let me look.\n\n<tool_call>\n{\"name\": \"a\", \"arguments\": {}}\n</tool_call>\n<tool_call>\n"
             "{\"name\": \"b\", \"arguments\": {\"x\": [1, 2.5e-3, -0], \"s\": \"\\u00e9t\xc3\xa9\"}}\n</tool_call>",
          "Let me look.", "a {}|b {\"x\": [1, 2.5e-3, -0], \"s\": \"\\u00e9t\xc3\xa9\"}|");
    /* parallel_tool_calls false: the first call only */
    check_max(h, 1, "<tool_call>{\"name\": \"a\", \"arguments\": {}}</tool_call><tool_call>{\"name\": \"b\", "
                    "\"arguments\": {}}</tool_call>", "", "a {}|");
    /* arguments as a JSON string holding the object, or before the name: held whole,
     * compact; "parameters" for "arguments"; other members after the arguments */
    check(h, "<tool_call>{\"name\": \"f\", \"arguments\": \"{\\\"k\\\": 1}\"}</tool_call>", "", "f {\"k\":1}|");
    check(h, "<tool_call>{\"arguments\": {\"k\": [1, 2]}, \"name\": \"f\"}</tool_call>", "", "f {\"k\":[1,2]}|");
    check(h, "<tool_call>{\"name\": \"f\", \"parameters\": {\"k\": true}}</tool_call>", "", "f {\"k\": true}|");
    check(h, "<tool_call>{\"name\": \"f\", \"arguments\": {\"k\": null}, \"id\": \"x\"}</tool_call>", "",
          "f {\"k\": null}|");
    /* the model stopped after the object without the end marker */
    check(h, "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n", "", "f {}|");
    /* text after a call is content; text and a marker-like "<" */
    check(h, "a < b <tool_cal", "a < b <tool_cal", "");
    check(h, "<tool_call>{\"name\":\"f\",\"arguments\":{}}</tool_call> done", " done", "f {}|");
    check(h, "<tool_call>{\"name\": \"f\", \"arguments\": {}} trailing</tool_call>", " trailing</tool_call>", "f {}|");
    /* the answer opens with a call without the markers, bare or fenced */
    check(h, " {\"name\": \"f\", \"arguments\": {\"a\": 1}}\n", "", "f {\"a\": 1}|");
    check(h, "```json\n{\n  \"name\": \"f\",\n  \"arguments\": {}\n}\n```", "", "f {}|");
    check(h, "{\"name\": \"f\", \"arguments\": {}} is how a call looks", " is how a call looks", "f {}|");
    /* an answer that only starts like one */
    check_plain(h, "```python\nprint(1)\n```");
    check_plain(h, "```json\n{\"city\": \"Paris\"}\n```");
    check_plain(h, "The call {\"name\": \"f\", \"arguments\": {}}");
    check_plain(h, "``");
}

static void test_hermes_malformed(void **state) {
    (void)state;
    cv_tool_syntax h = CV_TOOL_SYNTAX_HERMES;
    check_plain(h, "<tool_call>\n{\"name\": get_weather}\n</tool_call>");
    check_plain(h, "<tool_call>{\"arguments\": {}}</tool_call>");
    check_plain(h, "<tool_call>{\"name\": \"\", \"arguments\": {}}</tool_call>");
    check_plain(h, "<tool_call>{\"name\": 3, \"arguments\": {}}</tool_call>");
    check_plain(h, "<tool_call>{\"name\": \"f\", \"arguments\": [1]}</tool_call>");
    check_plain(h, "<tool_call>{\"name\": \"f\", \"arguments\": \"not json\"}</tool_call>");
    check_plain(h, "<tool_call>{\"name\": \"f\", \"arguments\": 1, \"x\"}</tool_call>");
    check_plain(h, "<tool_call>{\"name\": \"f\"</tool_call>");
    check_plain(h, "<tool_call></tool_call>");
    check_plain(h, "<tool_call>");
    /* a bad call, then a good one: each decided on its own */
    check(h, "<tool_call>{oops}</tool_call>\n<tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call>",
          "<tool_call>{oops}</tool_call>", "f {}|");
    /* once begun, a call stays one: cut off (max_tokens), or its JSON broken */
    check(h, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Par", "",
          "get_weather {\"city\": \"Par!|");
    check(h, "<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": tru}}</tool_call>", "}}</tool_call>",
          "f {\"a\": tru!|");
    check(h, "<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": 01}}</tool_call>", "1}}</tool_call>",
          "f {\"a\": 0!|");
}

/* A call held past max_bytes is content; a streaming one is not held. */
static void test_max_bytes(void **state) {
    (void)state;
    out o = {0};
    cv_tool_sink sink = {on_content, on_begin, on_args, on_end, &o};
    cv_tool_parser *p;
    cv_error err = {0};
    assert_int_equal(cv_tool_parser_new(CV_TOOL_SYNTAX_HERMES, 0, 32, &sink, &p, &err), CV_OK);
    const char *t = "<tool_call>{\"arguments\": {\"long\": \"xxxxxxxxxxxxxxxx\"}, \"name\": \"f\"}</tool_call>";
    assert_int_equal(cv_tool_parser_feed(p, t, strlen(t)), CV_OK);
    assert_int_equal(cv_tool_parser_finish(p), CV_OK);
    assert_string_equal(o.content, t);
    assert_string_equal(o.calls, "");
    cv_tool_parser_free(p);
    memset(&o, 0, sizeof o);
    assert_int_equal(cv_tool_parser_new(CV_TOOL_SYNTAX_HERMES, 0, 32, &sink, &p, &err), CV_OK);
    t = "<tool_call>{\"name\": \"f\", \"arguments\": {\"long\": \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}}</tool_call>";
    assert_int_equal(cv_tool_parser_feed(p, t, strlen(t)), CV_OK);
    assert_int_equal(cv_tool_parser_finish(p), CV_OK);
    assert_string_equal(o.content, "");
    assert_string_equal(o.calls, "f {\"long\": \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}|");
    cv_tool_parser_free(p);
}

/* Arguments go on as they come: a piece per feed, none held back. */
static void test_streaming(void **state) {
    (void)state;
    out o = {0};
    cv_tool_sink sink = {on_content, on_begin, on_args, on_end, &o};
    cv_tool_parser *p;
    cv_error err = {0};
    assert_int_equal(cv_tool_parser_new(CV_TOOL_SYNTAX_HERMES, 0, 0, &sink, &p, &err), CV_OK);
    static const char *const pieces[] = {"<tool_call>\n{\"name\": \"get_", "weather\", \"arguments\": ", "{\"ci",
                                         "ty\": \"Pa", "ris\"", "}}\n</tool_call>"};
    static const char *const calls_after[] = {"", "", "get_weather {\"ci", "get_weather {\"city\": \"Pa",
                                              "get_weather {\"city\": \"Paris\"",
                                              "get_weather {\"city\": \"Paris\"}|"};
    for (size_t i = 0; i < 6; i++) {
        assert_int_equal(cv_tool_parser_feed(p, pieces[i], strlen(pieces[i])), CV_OK);
        assert_string_equal(o.calls, calls_after[i]);
        assert_int_equal(o.in_call, i >= 2 && i < 5);
    }
    assert_int_equal(o.pieces, 4);
    assert_int_equal(cv_tool_parser_finish(p), CV_OK);
    assert_string_equal(o.content, "");
    cv_tool_parser_free(p);
}

static void test_llama3(void **state) {
    (void)state;
    cv_tool_syntax l = CV_TOOL_SYNTAX_LLAMA3;
    check(l, "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}", "", "get_weather {\"city\": \"Oslo\"}|");
    check(l, "\n {\"name\": \"a\", \"parameters\": {}}; {\"name\": \"b\", \"arguments\": {\"n\": 2}}", "", "a {}|b {\"n\": 2}|");
    check(l, "<|python_tag|>{\"name\": \"a\", \"parameters\": {\"q\": \"x\"}}", "", "a {\"q\": \"x\"}|");
    check(l, "Calling it: <|python_tag|>{\"name\": \"a\", \"parameters\": {}}", "Calling it:", "a {}|");
    check(l, "```json\n{\"name\": \"a\", \"parameters\": {}}\n```\n", "", "a {}|");
    check(l, "{\"name\": \"a\", \"parameters\": {}", "", "a {}|");
    /* built-in tools: Python keyword arguments */
    check(l, "<|python_tag|>brave_search.call(query=\"x \\\"y\\\" (z)\")", "", "brave_search {\"query\":\"x \\\"y\\\" (z)\"}|");
    check(l, "<|python_tag|>wolfram_alpha.call(query='2+2', n=3, exact=True, unit=None, x=-1.5)", "",
          "wolfram_alpha {\"query\":\"2+2\",\"n\":3,\"exact\":true,\"unit\":null,\"x\":-1.5}|");
    check(l, "<|python_tag|>f.call()", "", "f {}|");
    check_plain(l, "<|python_tag|>f.call(query=x)");
    check_plain(l, "<|python_tag|>import math\nprint(math.pi)");
    check_plain(l, "<|python_tag|>f.call(q=\"unterminated)");
    /* JSON that is no call, or not at the start, is the answer */
    check_plain(l, "{\"city\": \"Oslo\"}");
    check_plain(l, "The JSON is {\"name\": \"a\", \"parameters\": {}}");
    check_plain(l, "  plain answer  ");
}

static void test_mistral(void **state) {
    (void)state;
    cv_tool_syntax m = CV_TOOL_SYNTAX_MISTRAL;
    check(m, "[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {\"x\": 1}, \"id\": \"abc123xyz\"}, {\"name\": \"b\", "
             "\"arguments\": {}}]", "", "a {\"x\": 1}|b {}|");
    check(m, "[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Rome\"}[TOOL_CALLS]b[CALL_ID]k9[ARGS]{}", "",
          "get_weather {\"city\": \"Rome\"}|b {}|");
    check(m, "Sure. [TOOL_CALLS] [{\"name\": \"a\", \"arguments\": {}}]", "Sure.", "a {}|");
    check(m, "[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {}}", "", "a {}|");
    check(m, "[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {}}] and more", " and more", "a {}|");
    check(m, "[TOOL_CALLS]a[ARGS]{\"x\": }", "}", "a {\"x\": !|");
    check_plain(m, "[TOOL_CALLS][]");
    check_plain(m, "[TOOL_CALLS]a{\"x\": 1}");
    check_plain(m, "[TOOL_CALL");
}

#define DSB "<\xef\xbd\x9ctool\xe2\x96\x81" "calls\xe2\x96\x81" "begin\xef\xbd\x9c>"
#define DSE "<\xef\xbd\x9ctool\xe2\x96\x81" "calls\xe2\x96\x81" "end\xef\xbd\x9c>"
#define DCB "<\xef\xbd\x9ctool\xe2\x96\x81" "call\xe2\x96\x81" "begin\xef\xbd\x9c>"
#define DCE "<\xef\xbd\x9ctool\xe2\x96\x81" "call\xe2\x96\x81" "end\xef\xbd\x9c>"
#define DSEP "<\xef\xbd\x9ctool\xe2\x96\x81sep\xef\xbd\x9c>"

static void test_deepseek(void **state) {
    (void)state;
    cv_tool_syntax d = CV_TOOL_SYNTAX_DEEPSEEK;
    /* V3 / R1 */
    check(d, DSB DCB "function" DSEP "get_weather\n```json\n{\"city\": \"Lima\"}\n```" DCE "\n" DCB "function" DSEP
             "b\n```json\n{}\n```" DCE DSE,
          "", "get_weather {\"city\": \"Lima\"}|b {}|");
    /* V3.1 */
    check(d, "Checking." DSB DCB "get_weather" DSEP "{\"city\": \"Lima\"}" DCE DSE " Done.", "Checking. Done.",
          "get_weather {\"city\": \"Lima\"}|");
    check(d, DSB DCB "function" DSEP "get_weather\n```json\n{\"city\": \"Li" DCE DSE, "",
          "get_weather {\"city\": \"Li" DCE DSE "!|");
    check(d, DSB DCB "get_weather" DSEP "{\"city\": \"Lima\"}" DSE, "", "get_weather {\"city\": \"Lima\"}|");
    check_plain(d, DSB DSE);
    /* stopped after a whole call without the closing marker */
    check(d, DSB DCB "get_weather" DSEP "{\"city\": \"Lima\"}" DCE, "", "get_weather {\"city\": \"Lima\"}|");
    check_plain(d, DSB "garbage" DSE);
    check_plain(d, DSB DCB "get_weather" DSEP "[1]" DCE DSE);
}

static void test_none(void **state) {
    (void)state;
    check_plain(CV_TOOL_SYNTAX_NONE, "<tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call>");
}

static cv_tool_syntax syntax_of(const char *file) {
    char path[512], rel[256];
    snprintf(rel, sizeof rel, "templates/%s", file);
    FILE *f = fopen(cv_test_data(path, sizeof path, rel), "rb");
    if (!f) fail_msg("cannot open %s", path);
    static char buf[1 << 17];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    return cv_tool_syntax_of_template(buf, n);
}

static void test_template_syntax(void **state) {
    (void)state;
    static const struct {
        const char *file;
        cv_tool_syntax want;
    } cases[] = {
        {"Qwen-Qwen2.5-7B-Instruct.jinja", CV_TOOL_SYNTAX_HERMES},
        {"Qwen-Qwen3-0.6B.jinja", CV_TOOL_SYNTAX_HERMES},
        {"NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja", CV_TOOL_SYNTAX_HERMES},
        {"meta-llama-Llama-3.1-8B-Instruct.jinja", CV_TOOL_SYNTAX_LLAMA3},
        {"meta-llama-Llama-3.2-3B-Instruct.jinja", CV_TOOL_SYNTAX_LLAMA3},
        {"meta-llama-Llama-3.3-70B-Instruct.jinja", CV_TOOL_SYNTAX_LLAMA3},
        {"mistralai-Mistral-Nemo-Instruct-2407.jinja", CV_TOOL_SYNTAX_MISTRAL},
        {"Mistral-Small-3.2-24B-Instruct-2506.jinja", CV_TOOL_SYNTAX_MISTRAL},
        {"deepseek-ai-DeepSeek-V3.1.jinja", CV_TOOL_SYNTAX_DEEPSEEK},
        {"google-gemma-2-2b-it.jinja", CV_TOOL_SYNTAX_NONE},
        {"microsoft-Phi-3.5-mini-instruct.jinja", CV_TOOL_SYNTAX_NONE},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        cv_tool_syntax got = syntax_of(cases[i].file);
        if (got != cases[i].want)
            fail_msg("%s: %s, want %s", cases[i].file, cv_tool_syntax_name(got), cv_tool_syntax_name(cases[i].want));
    }
    assert_int_equal(cv_tool_syntax_of_template(NULL, 0), CV_TOOL_SYNTAX_NONE);
    assert_true(cv_tool_syntax_needs_markers(CV_TOOL_SYNTAX_MISTRAL));
    assert_false(cv_tool_syntax_needs_markers(CV_TOOL_SYNTAX_HERMES));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hermes),   cmocka_unit_test(test_hermes_malformed), cmocka_unit_test(test_max_bytes), cmocka_unit_test(test_streaming),
        cmocka_unit_test(test_llama3),   cmocka_unit_test(test_mistral),          cmocka_unit_test(test_deepseek),
        cmocka_unit_test(test_none),     cmocka_unit_test(test_template_syntax),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
