/* tool_choice: a request's tools and tool_choice checked against a real chat format
 * (a synthetic GGUF whose Jinja template lists the tools it is given and writes Hermes
 * calls), and what the template then gets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "chat_format.h"
#include "gguf.h"
#include "grammar.h"
#include "grammar_match.h"
#include "tokenizer.h"
#include "tool_choice.h"
#include "../support/test_vocab.h"

#define TWO "[{\"type\": \"function\", \"function\": {\"name\": \"a\", \"parameters\": {\"type\": \"object\"}}}," \
            " {\"function\": {\"name\": \"b\"}}]"
/* get_weather(city: string, required; days: 1..3 optional) */
#define WEATHER "[{\"function\": {\"name\": \"get_weather\", \"parameters\": {\"type\": \"object\", \"properties\": " \
                "{\"city\": {\"type\": \"string\"}, \"days\": {\"enum\": [1, 2, 3]}}, \"required\": [\"city\"], " \
                "\"additionalProperties\": false}}}, {\"function\": {\"name\": \"ping\"}}]"

typedef struct fixture {
    uint8_t *buf;
    cv_gguf *g;
    cv_tok *tok;
    cv_chat_format *hermes;
} fixture;

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    size_t len;
    cv_error e = {0};
    assert_true(cv_test_chatml_gguf("{% if tools %}{% for t in tools %}{{ t.function.name }};{% endfor %}{% endif %}"
                                    "{% for m in messages %}{{ m.content }}{% endfor %}"
                                    "{# calls: <tool_call>{...}</tool_call> #}", &f->buf, &len));
    assert_int_equal(cv_gguf_open_memory(f->buf, len, &f->g, &e), CV_OK);
    assert_int_equal(cv_tok_load(f->g, &f->tok, &e), CV_OK);
    assert_int_equal(cv_chat_format_load(f->g, f->tok, &f->hermes, NULL, 0, &e), CV_OK);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    cv_chat_format_free(f->hermes);
    cv_tok_free(f->tok);
    cv_gguf_close(f->g);
    free(f->buf);
    free(f);
    return 0;
}

/* The text the template renders for one user message with the plan's tools. */
static void rendered(const fixture *f, const cv_tool_plan *p, const char *want) {
    const cv_chat_msg m = {.role = "user", .content = "hi"};
    const cv_chat_opts o = {.add_generation_prompt = true, .tools = p->template_tools};
    cv_chat_prompt out;
    cv_error e = {0};
    if (cv_chat_format_apply(f->hermes, &m, 1, &o, &out, &e) != CV_OK) fail_msg("%s", e.msg);
    assert_string_equal(out.text, want);
    cv_chat_prompt_free(&out);
}

static void test_choices(void **state) {
    const fixture *f = *state;
    cv_tool_plan p;
    cv_error e = {0};
    assert_int_equal(cv_chat_format_tool_syntax(f->hermes), CV_TOOL_SYNTAX_HERMES);
    /* auto: every tool, parsed, any number of calls */
    assert_int_equal(cv_tool_plan_make(f->hermes, TWO, "", NULL, 1, &p, &e), CV_OK);
    assert_int_equal(p.syntax, CV_TOOL_SYNTAX_HERMES);
    assert_int_equal(p.max_calls, 0);
    assert_false(p.required);
    rendered(f, &p, "a;b;hi");
    cv_tool_plan_free(&p);
    /* none: no tools, nothing parsed */
    assert_int_equal(cv_tool_plan_make(f->hermes, TWO, "none", NULL, 1, &p, &e), CV_OK);
    assert_null(p.template_tools);
    assert_int_equal(p.syntax, CV_TOOL_SYNTAX_NONE);
    rendered(f, &p, "hi");
    cv_tool_plan_free(&p);
    /* a function named: that tool only, required; one call without parallel calls */
    assert_int_equal(cv_tool_plan_make(f->hermes, TWO, "", "b", 0, &p, &e), CV_OK);
    assert_true(p.required);
    assert_string_equal(p.function, "b");
    assert_int_equal(p.max_calls, 1);
    rendered(f, &p, "b;hi");
    cv_tool_plan_free(&p);
    assert_int_equal(cv_tool_plan_make(f->hermes, TWO, "required", NULL, 1, &p, &e), CV_OK);
    assert_true(p.required);
    assert_null(p.function);
    cv_tool_plan_free(&p);
    /* no tools at all: nothing to do */
    assert_int_equal(cv_tool_plan_make(f->hermes, NULL, "auto", NULL, 1, &p, &e), CV_OK);
    assert_null(p.template_tools);
    cv_tool_plan_free(&p);
}

/* Each refusal names the field as OpenAI spells it. */
static void refused(const cv_chat_format *fmt, const char *tools, const char *choice, const char *fn,
                    const char *param, const char *needle) {
    cv_tool_plan p;
    cv_error e = {0};
    assert_int_equal(cv_tool_plan_make(fmt, tools, choice, fn, 1, &p, &e), CV_EINVAL);
    assert_string_equal(p.param, param);
    if (!strstr(e.msg, needle)) fail_msg("'%s' lacks '%s'", e.msg, needle);
    cv_tool_plan_free(&p);
}

static void test_refusals(void **state) {
    const fixture *f = *state;
    refused(f->hermes, TWO, "sometimes", NULL, "tool_choice", "'sometimes' is none of auto, none, required");
    refused(f->hermes, TWO, "", "c", "tool_choice", "no tool named 'c'");
    refused(f->hermes, TWO, "none", "a", "tool_choice", "none with a function named");
    refused(f->hermes, NULL, "required", NULL, "tool_choice", "there are no tools");
    refused(f->hermes, "{\"a\": 1}", "", NULL, "tools", "expected an array");
    refused(f->hermes, "[1", "", NULL, "tools", "not JSON");
    refused(f->hermes, "[{\"type\": \"function\"}]", "", NULL, "tools[0].function", "required");
    refused(f->hermes, "[{\"type\": \"code\", \"function\": {\"name\": \"a\"}}]", "", NULL, "tools[0]",
            "only \"function\" tools");
    refused(f->hermes, "[{\"function\": {\"name\": \"a\"}}, {\"function\": {\"name\": \"\"}}]", "", NULL,
            "tools[1].function.name", "non-empty string");
    refused(f->hermes, "[{\"function\": {\"name\": \"a\", \"parameters\": [1]}}]", "", NULL,
            "tools[0].function.parameters", "an object");
    /* a built-in family writes no calls corvid parses: a required call cannot be had */
    refused(cv_chat_format_family(CV_CHAT_CHATML), TWO, "required", NULL, "tool_choice", "no syntax corvid parses");
}

/* Whether the plan's grammar takes text whole, over a vocabulary of single bytes. */
static int takes(const cv_tool_plan *p, const char *text) {
    static const char *pieces[129];
    static char bytes[128];
    static size_t lens[129];
    static uint8_t end[129];
    for (int c = 0; c < 128; c++) {
        bytes[c] = (char)c;
        pieces[c] = &bytes[c];
        lens[c] = 1;
    }
    pieces[128] = "";
    end[128] = 1;
    cv_gvocab *v;
    cv_grammar *g;
    cv_gdfa *d;
    cv_gmatch *m;
    cv_error e = {0};
    assert_int_equal(cv_gvocab_new(129, pieces, lens, end, &v, &e), CV_OK);
    if (cv_grammar_parse(p->grammar, strlen(p->grammar), &g, &e) != CV_OK) fail_msg("%s\n%s", e.msg, p->grammar);
    assert_int_equal(cv_gdfa_new(g, v, &d, &e), CV_OK);
    assert_int_equal(cv_gmatch_start(d, &m, &e), CV_OK);
    int ok = cv_gmatch_accept_bytes(m, text, strlen(text), &e) == CV_OK && cv_gmatch_accepting(m);
    cv_gmatch_free(m);
    cv_gdfa_unref(d);
    cv_gvocab_free(v);
    return ok;
}

/* A required call: the output is held to the template's call syntax and each tool's
 * parameters; every text the grammar takes, the parser takes as calls. */
static void test_required_grammar(void **state) {
    const fixture *f = *state;
    cv_tool_plan p;
    cv_error e = {0};
    if (cv_tool_plan_make(f->hermes, WEATHER, "required", NULL, 1, &p, &e) != CV_OK) fail_msg("%s", e.msg);
    assert_non_null(p.grammar);
    assert_true(takes(&p, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>"));
    assert_true(takes(&p, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\":\"Oslo\",\"days\":2}}"
                          "\n</tool_call>\n<tool_call>\n{\"name\": \"ping\", \"arguments\": {}}\n</tool_call>"));
    assert_false(takes(&p, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {}}\n</tool_call>"));
    assert_false(takes(&p, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"a\", \"days\": 4}}"
                           "\n</tool_call>"));
    assert_false(takes(&p, "<tool_call>\n{\"name\": \"nope\", \"arguments\": {}}\n</tool_call>"));
    assert_false(takes(&p, "Sure!"));
    cv_tool_plan_free(&p);
    /* a named function, one call: that function only, once */
    assert_int_equal(cv_tool_plan_make(f->hermes, WEATHER, "", "ping", 0, &p, &e), CV_OK);
    assert_true(takes(&p, "<tool_call>\n{\"name\": \"ping\", \"arguments\": {}}\n</tool_call>"));
    assert_false(takes(&p, "<tool_call>\n{\"name\": \"ping\", \"arguments\": {}}\n</tool_call>\n<tool_call>\n"
                           "{\"name\": \"ping\", \"arguments\": {}}\n</tool_call>"));
    assert_false(takes(&p, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>"));
    cv_tool_plan_free(&p);
    /* auto: no constraint */
    assert_int_equal(cv_tool_plan_make(f->hermes, WEATHER, "auto", NULL, 1, &p, &e), CV_OK);
    assert_null(p.grammar);
    cv_tool_plan_free(&p);
    /* a schema outside the subset is refused only when it would constrain */
    const char *odd = "[{\"function\": {\"name\": \"a\", \"parameters\": {\"type\": \"object\", \"properties\": "
                      "{\"n\": {\"type\": \"integer\", \"multipleOf\": 3}}}}}]";
    assert_int_equal(cv_tool_plan_make(f->hermes, odd, "auto", NULL, 1, &p, &e), CV_OK);
    cv_tool_plan_free(&p);
    refused(f->hermes, odd, "required", NULL, "tools[0].function.parameters", "multipleOf");
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_choices), cmocka_unit_test(test_refusals),
                                       cmocka_unit_test(test_required_grammar)};
    return cmocka_run_group_tests(tests, setup, teardown);
}
