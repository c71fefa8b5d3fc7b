/* tool_choice: a request's tools and tool_choice checked against a real chat format
 * (a synthetic GGUF whose Jinja template lists the tools it is given and writes Hermes
 * calls), and what the template then gets; a required call's constraint, also for the
 * real Mistral and DeepSeek templates, whose markers are control tokens: random walks
 * through the mask over a synthetic vocabulary always parse as calls. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "chat_format.h"
#include "gguf.h"
#include "grammar.h"
#include "grammar_match.h"
#include "test_data.h"
#include "tokenizer.h"
#include "tool_calls.h"
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
    assert_int_equal(cv_gvocab_new(129, pieces, lens, end, NULL, NULL, &v, &e), CV_OK);
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

/* ---- control-token markers: Mistral and DeepSeek ---- */

#define DSB "<\xef\xbd\x9ctool\xe2\x96\x81" "calls\xe2\x96\x81" "begin\xef\xbd\x9c>"
#define DSE "<\xef\xbd\x9ctool\xe2\x96\x81" "calls\xe2\x96\x81" "end\xef\xbd\x9c>"
#define DCB "<\xef\xbd\x9ctool\xe2\x96\x81" "call\xe2\x96\x81" "begin\xef\xbd\x9c>"
#define DCE "<\xef\xbd\x9ctool\xe2\x96\x81" "call\xe2\x96\x81" "end\xef\xbd\x9c>"
#define DSEP "<\xef\xbd\x9ctool\xe2\x96\x81sep\xef\xbd\x9c>"

/* A synthetic vocabulary: the 128 ASCII bytes, a few longer pieces, the markers as
 * control tokens (no bytes; their text for the grammar) and an end token. */
static const char *const words[] = {"{\"", "\": \"", "\"}", "name", "get_weather", "city", "ping", "arguments",
                                    "\", \"", "```json\n", "\n```", "function"};
static const char *const markers[] = {"[TOOL_CALLS]", "[ARGS]", DSB, DSE, DCB, DCE, DSEP};
#define N_WORDS (sizeof words / sizeof *words)
#define N_MARKERS (sizeof markers / sizeof *markers)
#define N_SYN (128 + N_WORDS + N_MARKERS + 1)

typedef struct synvocab {
    const char *pieces[N_SYN], *texts[N_SYN];
    size_t lens[N_SYN], text_lens[N_SYN];
    uint8_t end[N_SYN];
    char bytes[128];
    cv_gvocab *v;
} synvocab;

static void synvocab_init(synvocab *s) {
    memset(s, 0, sizeof *s);
    size_t k = 0;
    for (int c = 0; c < 128; c++, k++) {
        s->bytes[c] = (char)c;
        s->pieces[k] = s->texts[k] = &s->bytes[c];
        s->lens[k] = s->text_lens[k] = 1;
    }
    for (size_t i = 0; i < N_WORDS; i++, k++) {
        s->pieces[k] = s->texts[k] = words[i];
        s->lens[k] = s->text_lens[k] = strlen(words[i]);
    }
    for (size_t i = 0; i < N_MARKERS; i++, k++) {
        s->pieces[k] = "";
        s->texts[k] = markers[i];
        s->text_lens[k] = strlen(markers[i]);
    }
    s->pieces[k] = s->texts[k] = "";
    s->text_lens[k] = 0;
    s->end[k] = 1;
    cv_error e = {0};
    assert_int_equal(cv_gvocab_new((int32_t)N_SYN, s->pieces, s->lens, s->end, s->texts, s->text_lens, &s->v, &e),
                     CV_OK);
}

typedef struct parsed {
    char content[4096];
    size_t n_content;
    char names[256], cur[64];
    char args[4096];
    size_t args_len;
    int calls, complete, bad_args;
} parsed;

static void p_content(void *ctx, const char *t, size_t n) {
    parsed *o = ctx;
    if (o->n_content + n < sizeof o->content) memcpy(o->content + o->n_content, t, n), o->n_content += n;
}
static void p_begin(void *ctx, const char *name) {
    parsed *o = ctx;
    o->calls++;
    o->args_len = 0;
    snprintf(o->cur, sizeof o->cur, "%s", name);
    strncat(o->names, name, sizeof o->names - strlen(o->names) - 2);
    strcat(o->names, ",");
}
static void p_args(void *ctx, const char *t, size_t n) {
    parsed *o = ctx;
    assert_true(o->args_len + n < sizeof o->args);
    memcpy(o->args + o->args_len, t, n);
    o->args_len += n;
}
static void p_end(void *ctx, int complete) {
    parsed *o = ctx;
    o->complete += complete;
    json_t *a = json_loadb(o->args, o->args_len, 0, NULL);
    if (!json_is_object(a) || (json_is_string(json_object_get(a, "city")) != !strcmp(o->cur, "get_weather")) ||
        (strcmp(o->cur, "get_weather") && strcmp(o->cur, "ping")))
        o->bad_args++;
    json_decref(a);
}

/* A format from a real template file (over the test vocabulary). */
static cv_chat_format *format_of(const char *file, cv_gguf **g, cv_tok **tok, uint8_t **buf) {
    char path[512], rel[256];
    snprintf(rel, sizeof rel, "templates/%s", file);
    FILE *fp = fopen(cv_test_data(path, sizeof path, rel), "rb");
    if (!fp) fail_msg("cannot open %s", path);
    static char text[1 << 17];
    size_t n = fread(text, 1, sizeof text - 1, fp);
    fclose(fp);
    text[n] = 0;
    size_t len;
    cv_error e = {0};
    cv_chat_format *f;
    assert_true(cv_test_chatml_gguf(text, buf, &len));
    assert_int_equal(cv_gguf_open_memory(*buf, len, g, &e), CV_OK);
    assert_int_equal(cv_tok_load(*g, tok, &e), CV_OK);
    if (cv_chat_format_load(*g, *tok, &f, NULL, 0, &e) != CV_OK) fail_msg("%s: %s", file, e.msg);
    return f;
}

/* Random walks through the constraint of a required call (each step a token the mask
 * allows, the end when allowed half the time): every output, its control tokens
 * rendered as text, parses as calls of the tools, with nothing else. */
static void walks(const synvocab *sv, const cv_tool_plan *p, cv_tool_syntax syn, int parallel) {
    cv_grammar *g;
    cv_gdfa *d;
    cv_error e = {0};
    if (cv_grammar_parse(p->grammar, strlen(p->grammar), &g, &e) != CV_OK) fail_msg("%s\n%s", e.msg, p->grammar);
    if (cv_gdfa_new(g, sv->v, &d, &e) != CV_OK) fail_msg("%s\n%s", e.msg, p->grammar);
    uint32_t seed = 12345;
    int multi = 0;
    for (int w = 0; w < 40; w++) {
        cv_gmatch *m;
        assert_int_equal(cv_gmatch_start(d, &m, &e), CV_OK);
        char out[8192];
        size_t n = 0;
        for (int stepn = 0; !cv_gmatch_ended(m); stepn++) {
            const uint64_t *mask;
            assert_int_equal(cv_gmatch_mask(m, &mask, &e), CV_OK);
            int32_t allowed[N_SYN], k = 0;
            for (int32_t t = 0; t < (int32_t)N_SYN; t++)
                if (mask[t >> 6] >> (t & 63) & 1) allowed[k++] = t;
            assert_true(k > 0 && stepn < 4000);
            seed = seed * 1103515245u + 12345u;
            int32_t t = allowed[(seed >> 8) % (uint32_t)k];
            if (mask[(N_SYN - 1) >> 6] >> ((N_SYN - 1) & 63) & 1 && (seed >> 4) % 2) t = N_SYN - 1;
            /* prefer a string's end to more of it: walks stay short */
            for (int32_t i = 0; i < k && (seed >> 20) % 4; i++)
                if (allowed[i] == '"') t = '"';
            if (w == 0 && stepn == 0 && syn == CV_TOOL_SYNTAX_MISTRAL) {
                /* the marker only as its control token, never spelt out in text */
                assert_false(mask['[' >> 6] >> ('[' & 63) & 1);
            }
            if (cv_gmatch_accept_token(m, t, &e) != CV_OK) fail_msg("token %d: %s", t, e.msg);
            const char *txt = sv->texts[t];
            size_t tl = sv->text_lens[t];
            assert_true(n + tl < sizeof out);
            memcpy(out + n, txt, tl);
            n += tl;
        }
        cv_gmatch_free(m);
        parsed o = {0};
        cv_tool_sink sink = {p_content, p_begin, p_args, p_end, &o};
        cv_tool_parser *tp;
        assert_int_equal(cv_tool_parser_new(syn, 0, 0, &sink, &tp, &e), CV_OK);
        for (size_t i = 0; i < n; i++) assert_int_equal(cv_tool_parser_feed(tp, out + i, 1), CV_OK);
        assert_int_equal(cv_tool_parser_finish(tp), CV_OK);
        cv_tool_parser_free(tp);
        if (o.calls < 1 || o.complete != o.calls || o.bad_args || o.n_content || (!parallel && o.calls != 1))
            fail_msg("walk %d: %d calls (%d complete, %d bad) '%s', content '%.*s' of\n%.*s", w, o.calls, o.complete,
                     o.bad_args, o.names, (int)o.n_content, o.content, (int)n, out);
        multi += o.calls > 1;
    }
    if (parallel) assert_true(multi > 0);
    cv_gdfa_unref(d);
}

static void test_required_control_tokens(void **state) {
    (void)state;
    static const struct {
        const char *file;
        cv_tool_syntax syn;
        const char *sample; /* text the constraint takes */
    } cases[] = {
        {"mistralai-Mistral-Nemo-Instruct-2407.jinja", CV_TOOL_SYNTAX_MISTRAL,
         "[TOOL_CALLS][{\"name\": \"ping\", \"arguments\": {}}]"},
        {"Mistral-Small-3.2-24B-Instruct-2506.jinja", CV_TOOL_SYNTAX_MISTRAL, "[TOOL_CALLS]ping[ARGS]{}"},
        {"deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", CV_TOOL_SYNTAX_DEEPSEEK,
         DSB DCB "function" DSEP "ping\n```json\n{}\n```" DCE DSE},
        {"deepseek-ai-DeepSeek-V3.1.jinja", CV_TOOL_SYNTAX_DEEPSEEK, DSB DCB "ping" DSEP "{}" DCE DSE},
    };
    synvocab *sv = calloc(1, sizeof *sv);
    synvocab_init(sv);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        cv_gguf *g;
        cv_tok *tok;
        uint8_t *buf;
        cv_chat_format *f = format_of(cases[i].file, &g, &tok, &buf);
        assert_int_equal(cv_chat_format_tool_syntax(f), cases[i].syn);
        for (int parallel = 0; parallel < 2; parallel++) {
            cv_tool_plan p;
            cv_error e = {0};
            if (cv_tool_plan_make(f, WEATHER, "required", NULL, parallel, &p, &e) != CV_OK) fail_msg("%s", e.msg);
            assert_non_null(p.grammar);
            walks(sv, &p, cases[i].syn, parallel);
            /* the markers spelt out as text are not the control tokens */
            cv_grammar *g;
            cv_gdfa *d;
            cv_gmatch *m;
            assert_int_equal(cv_grammar_parse(p.grammar, strlen(p.grammar), &g, &e), CV_OK);
            assert_int_equal(cv_gdfa_new(g, sv->v, &d, &e), CV_OK);
            assert_int_equal(cv_gmatch_start(d, &m, &e), CV_OK);
            assert_int_equal(cv_gmatch_accept_bytes(m, cases[i].sample, strlen(cases[i].sample), &e), CV_EINVAL);
            cv_gmatch_free(m);
            cv_gdfa_unref(d);
            cv_tool_plan_free(&p);
        }
        cv_chat_format_free(f);
        cv_tok_free(tok);
        cv_gguf_close(g);
        free(buf);
    }
    cv_gvocab_free(sv->v);
    free(sv);
}

/* A token terminal must name one token of the model, and not an end token. */
static void test_token_terminal_refusals(void **state) {
    (void)state;
    synvocab *sv = calloc(1, sizeof *sv);
    synvocab_init(sv);
    static const struct {
        const char *gbnf, *want;
    } cases[] = {
        {"root ::= <\"[NOPE]\">", "names no token"},
        {"root ::= <[100000]>", "outside the vocabulary"},
        {"root ::= \"a\" <[147]>", "end-of-generation"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        cv_grammar *g;
        cv_gdfa *d;
        cv_error e = {0};
        assert_int_equal(cv_grammar_parse(cases[i].gbnf, strlen(cases[i].gbnf), &g, &e), CV_OK);
        assert_int_equal(cv_gdfa_new(g, sv->v, &d, &e), CV_EINVAL);
        if (!strstr(e.msg, cases[i].want)) fail_msg("%s: '%s'", cases[i].gbnf, e.msg);
    }
    /* by id, by text in llama.cpp's <...> and corvid's <"..."> forms: the same token */
    const char *gbnf = "root ::= <[140]> \"x\" <\"[TOOL_CALLS]\"> " DSB;
    cv_grammar *g;
    cv_gdfa *d;
    cv_gmatch *m;
    cv_error e = {0};
    assert_int_equal(cv_grammar_parse(gbnf, strlen(gbnf), &g, &e), CV_OK);
    if (cv_gdfa_new(g, sv->v, &d, &e) != CV_OK) fail_msg("%s", e.msg);
    assert_int_equal(cv_gmatch_start(d, &m, &e), CV_OK);
    assert_int_equal(cv_gmatch_accept_token(m, 'x', &e), CV_EINVAL);
    assert_int_equal(cv_gmatch_accept_token(m, 140, &e), CV_OK);
    assert_int_equal(cv_gmatch_accept_token(m, 'x', &e), CV_OK);
    assert_int_equal(cv_gmatch_accept_token(m, 141, &e), CV_EINVAL); /* [ARGS] */
    assert_int_equal(cv_gmatch_accept_token(m, 140, &e), CV_OK);
    assert_int_equal(cv_gmatch_accept_token(m, 142, &e), CV_OK);
    assert_true(cv_gmatch_accepting(m));
    cv_gmatch_free(m);
    cv_gdfa_unref(d);
    cv_gvocab_free(sv->v);
    free(sv);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_choices), cmocka_unit_test(test_refusals),
                                       cmocka_unit_test(test_required_grammar),
                                       cmocka_unit_test(test_required_control_tokens),
                                       cmocka_unit_test(test_token_terminal_refusals)};
    return cmocka_run_group_tests(tests, setup, teardown);
}
