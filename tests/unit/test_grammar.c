/* The grammar engine: GBNF compilation and refusals, byte-level matching, token masks
 * over a small hand-made vocabulary (tokens that span several grammar symbols, tokens
 * that cut a UTF-8 character), the JSON-schema compiler (refusals name the keyword),
 * and random walks through the masks that must always end in JSON that jansson parses
 * and that has the schema's shape. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../support/test_rng.h"
#include "grammar.h"
#include "grammar_match.h"
#include "json_schema.h"

static cv_grammar *compile(const char *text) {
    cv_grammar *g = NULL;
    cv_error e = {0};
    if (cv_grammar_parse(text, strlen(text), &g, &e) != CV_OK) fail_msg("grammar: %s\n%s", e.msg, text);
    return g;
}

static void refused(const char *text, cv_status code, const char *needle) {
    cv_grammar *g = NULL;
    cv_error e = {0};
    cv_status st = cv_grammar_parse(text, strlen(text), &g, &e);
    if (st != code || !strstr(e.msg, needle))
        fail_msg("%s: got %s \"%s\", wanted %s with \"%s\"", text, cv_status_name(st), e.msg, cv_status_name(code), needle);
    assert_null(g);
}

/* A vocabulary of single bytes (every printable ASCII byte and \n), some multi-symbol
 * tokens, the two halves of "é" (C3 A9) and of "€" cut 1+2, and an end token. */
static const char *const extra_tokens[] = {"{\"", "\":", "\",\"", "\"}", "true", "null", "},{", "\xC3", "\xA9", "\xE2",
                                           "\x82\xAC", "é", " \"", "12", "\"a\"", "ab"};
#define N_EXTRA (sizeof extra_tokens / sizeof *extra_tokens)

typedef struct vocab {
    char pieces[128 + N_EXTRA + 1][8];
    const char *ptr[128 + N_EXTRA + 1];
    size_t lens[128 + N_EXTRA + 1];
    uint8_t end[128 + N_EXTRA + 1];
    int32_t n, eos;
    cv_gvocab *v;
} vocab;

static vocab *make_vocab(void) {
    vocab *w = calloc(1, sizeof *w);
    for (int c = 0; c < 128; c++) {
        w->pieces[w->n][0] = (char)c;
        w->lens[w->n] = (c >= 0x20 && c < 0x7f) || c == '\n' ? 1 : 0; /* other controls: no bytes */
        w->n++;
    }
    for (size_t i = 0; i < N_EXTRA; i++) {
        strcpy(w->pieces[w->n], extra_tokens[i]);
        w->lens[w->n++] = strlen(extra_tokens[i]);
    }
    w->eos = w->n++; /* no bytes, an end token */
    w->end[w->eos] = 1;
    for (int32_t i = 0; i < w->n; i++) w->ptr[i] = w->pieces[i];
    cv_error e = {0};
    if (cv_gvocab_new(w->n, w->ptr, w->lens, w->end, NULL, NULL, &w->v, &e) != CV_OK) fail_msg("%s", e.msg);
    return w;
}

static void free_vocab(vocab *w) {
    cv_gvocab_free(w->v);
    free(w);
}

static int32_t tok(const vocab *w, const char *s) {
    for (int32_t i = 0; i < w->n; i++)
        if (w->lens[i] == strlen(s) && !memcmp(w->pieces[i], s, w->lens[i])) return i;
    fail_msg("no token %s", s);
    return -1;
}

static int allowed(cv_gmatch *m, int32_t t) {
    const uint64_t *mask;
    cv_error e = {0};
    if (cv_gmatch_mask(m, &mask, &e) != CV_OK) fail_msg("%s", e.msg);
    return (int)(mask[t >> 6] >> (t & 63) & 1);
}

/* The automaton of grammar text over the vocabulary. */
static cv_gdfa *automaton(const vocab *w, const char *text) {
    cv_gdfa *d = NULL;
    cv_error e = {0};
    if (cv_gdfa_new(compile(text), w->v, &d, &e) != CV_OK) fail_msg("%s", e.msg);
    return d;
}

static cv_gmatch *start(cv_gdfa *d) {
    cv_gmatch *m = NULL;
    cv_error e = {0};
    if (cv_gmatch_start(d, &m, &e) != CV_OK) fail_msg("%s", e.msg);
    return m;
}

static int matches(cv_gdfa *d, const char *s) {
    cv_gmatch *m = start(d);
    cv_error e = {0};
    int ok = cv_gmatch_accept_bytes(m, s, strlen(s), &e) == CV_OK && cv_gmatch_accepting(m);
    cv_gmatch_free(m);
    return ok;
}

static void test_gbnf_matching(void **state) {
    (void)state;
    vocab *w = make_vocab();
    cv_gdfa *g = automaton(w, "# a comment\n"
                            "root ::= greeting (\", \" name){1,2} punct?\n"
                            "greeting ::= \"hi\" | \"hello\"\n"
                            "name ::= [A-Z] [a-z]* | \"\\u00e9\\u20AC\"   # a tail comment\n"
                            "punct ::= (\n  \"!\" |\n  \".\"\n)\n");
    assert_true(matches(g, "hi, Bob"));
    assert_true(matches(g, "hello, Al, Zed!"));
    assert_true(matches(g, "hi, \xC3\xA9\xE2\x82\xAC."));
    assert_false(matches(g, "hi"));              /* {1,2}: at least one */
    assert_false(matches(g, "hi, A, B, C"));     /* at most two */
    assert_false(matches(g, "hi, bob"));
    assert_false(matches(g, "hi, Bob!!"));
    cv_gdfa_unref(g);

    /* Negated classes and . take any character, encoded as UTF-8 byte sequences. */
    g = automaton(w, "root ::= [^a-c\\n]+ \"|\" .\n");
    assert_true(matches(g, "xyz\xC3\xA9|\xE2\x82\xAC"));
    assert_false(matches(g, "xbz|d"));
    assert_false(matches(g, "x|\xC3"));           /* half a character is not one */
    assert_false(matches(g, "x\xED\xA0\x80|d"));  /* a surrogate is not UTF-8 */
    cv_gdfa_unref(g);
    free_vocab(w);
}

static void test_gbnf_refusals(void **state) {
    (void)state;
    refused("root ::= foo\n", CV_EINVAL, "rule 'foo' is used but not defined");
    refused("foo ::= \"x\"\n", CV_EINVAL, "no rule named root");
    refused("root ::= a\na ::= a \"x\" | \"y\"\n", CV_EINVAL, "left recursion in rule 'a'");
    refused("root ::= b \"x\"\nb ::= \"\" | root\n", CV_EINVAL, "left recursion");
    refused("root ::= \"x\"*\nroot ::= \"y\"\n", CV_EINVAL, "line 2 column 1: rule defined twice");
    refused("root ::= [ab\n", CV_EINVAL, "unterminated character class");
    refused("root ::= [z-a]\n", CV_EINVAL, "reversed");
    refused("root ::= \"abc\n", CV_EINVAL, "line 1 column 10: unterminated string literal");
    refused("root ::= \"a\"{3,2}\n", CV_EINVAL, "n < m");
    refused("root ::= \"a\"{2000}\n", CV_ERANGE, "over 1024");
    refused("root ::= * \"a\"\n", CV_EINVAL, "needs something before it");
    refused("root ::= \"\\q\"\n", CV_EINVAL, "unknown escape");
    refused("root ::= \"\\uD800\"\n", CV_EINVAL, "not a Unicode scalar value");
    refused("root ::= \"\xC3\"\n", CV_EINVAL, "invalid UTF-8");
    refused("root ::= (\"a\" | \"b\"\n", CV_EINVAL, "unclosed (");
    refused("root ::= (\"a\")* \"b\" ) \n", CV_EINVAL, "unexpected character");
    /* token terminals */
    refused("root ::= <[x]>\n", CV_EINVAL, "needs a token id");
    refused("root ::= <[99999999999]>\n", CV_EINVAL, "needs a token id");
    refused("root ::= <[5]\n", CV_EINVAL, "expected ]> after the token id");
    refused("root ::= <\"[A]\n", CV_EINVAL, "expected \"> after the token text");
    refused("root ::= <think\n>\n", CV_EINVAL, "unterminated token");
    refused("root ::= <\"\">\n", CV_EINVAL, "empty token text");
    /* Size bound: a 1100-byte literal repeated 1000 times is over the element limit. */
    char big[1200] = "root ::= \"";
    memset(big + strlen(big), 'x', 1100);
    strcpy(big + 10 + 1100, "\"{1000}\n");
    refused(big, CV_ERANGE, "more than 1048576 elements");
}

static void test_masks_multi_symbol_and_utf8(void **state) {
    (void)state;
    vocab *w = make_vocab();
    cv_gdfa *g = automaton(w, "root ::= \"{\\\"\" [a-z]+ \"\\\":\" (\"true\" | \"null\" | \"12\") \"}\"\n");
    cv_gmatch *m = start(g);
    cv_error e = {0};
    /* One token covering two symbols ({ and "), and its prefix alone. */
    assert_true(allowed(m, tok(w, "{\"")));
    assert_true(allowed(m, tok(w, "{")));
    assert_false(allowed(m, tok(w, "\"")));
    assert_false(allowed(m, w->eos));
    assert_int_equal(cv_gmatch_accept_token(m, tok(w, "{\""), &e), CV_OK);
    assert_true(allowed(m, tok(w, "ab")));
    assert_false(allowed(m, tok(w, "\":"))); /* [a-z]+ needs a letter first */
    assert_int_equal(cv_gmatch_accept_token(m, tok(w, "ab"), &e), CV_OK);
    assert_true(allowed(m, tok(w, "\":")));
    assert_false(allowed(m, tok(w, "\"}")));
    assert_int_equal(cv_gmatch_accept_token(m, tok(w, "\":"), &e), CV_OK);
    assert_true(allowed(m, tok(w, "true")));
    assert_true(allowed(m, tok(w, "12")));
    assert_true(allowed(m, tok(w, "1")));
    assert_false(allowed(m, tok(w, "2")));
    /* A token the mask excludes is refused and leaves the state as it was. */
    assert_int_equal(cv_gmatch_accept_token(m, tok(w, "2"), &e), CV_EINVAL);
    assert_int_equal(cv_gmatch_accept_token(m, tok(w, "null"), &e), CV_OK);
    assert_false(cv_gmatch_accepting(m));
    assert_int_equal(cv_gmatch_accept_token(m, tok(w, "}"), &e), CV_OK);
    /* Complete: only the end token. */
    assert_true(cv_gmatch_accepting(m));
    assert_true(allowed(m, w->eos));
    assert_false(allowed(m, tok(w, "}")));
    assert_int_equal(cv_gmatch_accept_token(m, w->eos, &e), CV_OK);
    assert_true(cv_gmatch_ended(m));
    assert_false(allowed(m, w->eos));
    cv_gmatch_free(m);
    cv_gdfa_unref(g);

    /* Multi-byte characters: a token holding the first byte of é is allowed where é
     * is, its continuation only after it; € (3 bytes) cut 1 + 2. */
    g = automaton(w, "root ::= [\\u00e0-\\u00ff] \"\\u20ac\" | \"x\"\n");
    m = start(g);
    assert_true(allowed(m, tok(w, "\xC3")));
    assert_true(allowed(m, tok(w, "é")));
    assert_false(allowed(m, tok(w, "\xA9")));
    assert_false(allowed(m, tok(w, "\xE2")));
    assert_int_equal(cv_gmatch_accept_token(m, tok(w, "\xC3"), &e), CV_OK);
    assert_true(allowed(m, tok(w, "\xA9")));
    assert_false(allowed(m, tok(w, "x")));
    assert_int_equal(cv_gmatch_accept_token(m, tok(w, "\xA9"), &e), CV_OK);
    assert_true(allowed(m, tok(w, "\xE2")));
    assert_false(allowed(m, tok(w, "\x82\xAC")));
    assert_int_equal(cv_gmatch_accept_token(m, tok(w, "\xE2"), &e), CV_OK);
    assert_true(allowed(m, tok(w, "\x82\xAC")));
    assert_int_equal(cv_gmatch_accept_token(m, tok(w, "\x82\xAC"), &e), CV_OK);
    assert_true(cv_gmatch_accepting(m));
    cv_gmatch_free(m);
    cv_gdfa_unref(g);
    free_vocab(w);
}

static cv_gdfa *schema_grammar(const vocab *w, const char *schema) {
    char *gbnf = NULL;
    cv_error e = {0};
    if (cv_json_schema_gbnf_text(schema, strlen(schema), NULL, &gbnf, &e) != CV_OK) fail_msg("%s: %s", schema, e.msg);
    cv_gdfa *g = automaton(w, gbnf);
    free(gbnf);
    return g;
}

static void schema_refused(const char *schema, const char *needle) {
    char *gbnf = NULL;
    cv_error e = {0};
    cv_status st = cv_json_schema_gbnf_text(schema, strlen(schema), NULL, &gbnf, &e);
    if (st == CV_OK || !strstr(e.msg, needle)) fail_msg("%s: got \"%s\", wanted \"%s\"", schema, e.msg, needle);
    assert_null(gbnf);
}

static const char person[] =
    "{\"type\":\"object\",\"properties\":{"
    "\"name\":{\"type\":\"string\",\"maxLength\":8},"
    "\"age\":{\"type\":\"integer\"},"
    "\"color\":{\"enum\":[\"red\",\"green\",null]},"
    "\"tags\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/tag\"},\"minItems\":1,\"maxItems\":3},"
    "\"id\":{\"type\":\"string\",\"pattern\":\"^[A-Z]{2}-\\\\d{3}$\"},"
    "\"home\":{\"anyOf\":[{\"type\":\"null\"},{\"type\":\"object\",\"properties\":{\"zip\":{\"type\":\"number\"}},"
    "\"required\":[\"zip\"],\"additionalProperties\":false}]}},"
    "\"required\":[\"name\",\"tags\",\"id\"],\"additionalProperties\":false,"
    "\"$defs\":{\"tag\":{\"type\":\"string\",\"const\":\"t\\\"1\"}}}";

static void test_schema_accepts_and_rejects(void **state) {
    (void)state;
    vocab *w = make_vocab();
    cv_gdfa *g = schema_grammar(w, person);
    assert_true(matches(g, "{\"name\":\"Al\",\"tags\":[\"t\\\"1\"],\"id\":\"AB-123\"}"));
    assert_true(matches(g, "{\n  \"name\": \"\\u00e9t\\u00e9\",\n  \"age\": -40,\n  \"color\": null,\n"
                                 "  \"tags\": [\"t\\\"1\", \"t\\\"1\"],\n  \"id\": \"ZZ-000\",\n  \"home\": {\"zip\": 1.5e3}\n}"));
    assert_false(matches(g, "{\"name\":\"Al\",\"id\":\"AB-123\"}"));                            /* tags required */
    assert_false(matches(g, "{\"name\":\"Al\",\"tags\":[],\"id\":\"AB-123\"}"));                 /* minItems */
    assert_false(matches(g, "{\"name\":\"Al\",\"tags\":[\"t\\\"1\"],\"id\":\"AB-12\"}"));       /* pattern */
    assert_false(matches(g, "{\"name\":\"Al\",\"tags\":[\"t\\\"1\"],\"id\":\"AB-123\",\"x\":1}")); /* additional */
    assert_false(matches(g, "{\"name\":\"123456789\",\"tags\":[\"t\\\"1\"],\"id\":\"AB-123\"}")); /* maxLength */
    assert_false(matches(g, "{\"name\":\"Al\",\"color\":\"blue\",\"tags\":[\"t\\\"1\"],\"id\":\"AB-123\"}"));
    assert_false(matches(g, "{\"name\":\"Al\",\"age\":01,\"tags\":[\"t\\\"1\"],\"id\":\"AB-123\"}"));
    cv_gdfa_unref(g);

    g = schema_grammar(w, "{\"type\":\"object\"}");
    assert_true(matches(g, "{}"));
    assert_true(matches(g, "{\"a\": [1, {\"b\": null}, \"x\"], \"c\": {}}"));
    assert_false(matches(g, "[]"));
    assert_false(matches(g, "{\"a\" 1}"));
    cv_gdfa_unref(g);

    /* A recursive definition. */
    g = schema_grammar(w, "{\"$ref\":\"#/definitions/node\",\"definitions\":{\"node\":{\"type\":\"object\","
                       "\"properties\":{\"kids\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/definitions/node\"}}},"
                       "\"additionalProperties\":false}}}");
    assert_true(matches(g, "{\"kids\":[{},{\"kids\":[{\"kids\":[]}]}]}"));
    assert_false(matches(g, "{\"kids\":[1]}"));
    cv_gdfa_unref(g);
    free_vocab(w);
}

static void test_schema_refusals(void **state) {
    (void)state;
    schema_refused("{\"type\":\"integer\",\"minimum\":0}", "minimum is not supported at /");
    schema_refused("{\"properties\":{\"a\":{\"oneOf\":[{\"type\":\"string\"}]}}}", "oneOf is not supported at /properties/a");
    schema_refused("{\"$ref\":\"https://example.com/s.json\"}", "is not local");
    schema_refused("{\"$ref\":\"#/$defs/missing\"}", "points at nothing");
    schema_refused("{\"type\":\"strin\"}", "type \"strin\" is not a JSON schema type");
    schema_refused("{\"type\":\"object\",\"required\":[\"a\"]}", "required names \"a\", which is not in properties");
    schema_refused("{\"type\":\"string\",\"pattern\":\"(?=a)b\"}", "lookaround");
    schema_refused("{\"type\":\"string\",\"pattern\":\"a\\\\1\"}", "escape \\1 is not supported");
    schema_refused("{\"type\":\"string\",\"format\":\"email\"}", "format \"email\" is not supported");
    schema_refused("{\"type\":\"array\",\"maxItems\":100000}", "over the limit");
    schema_refused("{\"type\":\"array\",\"items\":[{}]}", "items as an array");
    schema_refused("{\"enum\":[]}", "enum must be a non-empty array");
    schema_refused("{\"a\":", "not valid JSON");
    schema_refused("false", "matches nothing");
    /* Self-reference without consuming anything: the grammar would never terminate. */
    schema_refused("{\"$ref\":\"#/$defs/a\",\"$defs\":{\"a\":{\"$ref\":\"#/$defs/a\"}}}", "left recursion");
    /* Deep nesting is bounded. */
    char deep[2000] = "";
    for (int i = 0; i < 100; i++) strcat(deep, "{\"items\":");
    strcat(deep, "{}");
    for (int i = 0; i < 100; i++) strcat(deep, "}");
    schema_refused(deep, "nested deeper than 64");
}

/* Random walks: draw uniformly among the allowed tokens until the end token; the text
 * must parse as JSON and have the schema's shape. Every mask must allow something. */
static void test_random_walks_always_valid(void **state) {
    (void)state;
    vocab *w = make_vocab();
    cv_gdfa *g = schema_grammar(w, person);
    cv_test_rng rng = cv_test_rng_new(42);
    for (int walk = 0; walk < 200; walk++) {
        cv_gmatch *m = NULL;
        cv_error e = {0};
        m = start(g);
        char text[8192];
        size_t len = 0;
        int32_t ids[256];
        for (int steps = 0; !cv_gmatch_ended(m); steps++) {
            const uint64_t *mask;
            assert_int_equal(cv_gmatch_mask(m, &mask, &e), CV_OK);
            int n = 0;
            for (int32_t t = 0; t < w->n; t++)
                if (mask[t >> 6] >> (t & 63) & 1) ids[n++] = t;
            assert_true(n > 0);
            /* Past 300 steps, end as soon as possible: prefer closing tokens. */
            int32_t t = ids[cv_test_rng_next(&rng) % (uint64_t)n];
            if (steps > 300)
                for (int i = 0; i < n; i++)
                    if (ids[i] == w->eos || (w->lens[ids[i]] == 1 && strchr("\"]}", w->pieces[ids[i]][0]))) t = ids[i];
            assert_true(steps < 2000);
            assert_int_equal(cv_gmatch_accept_token(m, t, &e), CV_OK);
            assert_true(len + w->lens[t] < sizeof text);
            memcpy(text + len, w->pieces[t], w->lens[t]);
            len += w->lens[t];
        }
        json_error_t je;
        json_t *doc = json_loadb(text, len, 0, &je);
        if (!doc) fail_msg("walk %d produced invalid JSON (%s): %.*s", walk, je.text, (int)len, text);
        assert_true(json_is_string(json_object_get(doc, "name")));
        assert_true(json_array_size(json_object_get(doc, "tags")) >= 1);
        const char *id = json_string_value(json_object_get(doc, "id"));
        assert_non_null(id);
        assert_int_equal(strlen(id), 6);
        json_t *color = json_object_get(doc, "color");
        assert_true(!color || json_is_null(color) || !strcmp(json_string_value(color), "red") ||
                    !strcmp(json_string_value(color), "green"));
        json_decref(doc);
        cv_gmatch_free(m);
    }
    cv_gdfa_unref(g);
    free_vocab(w);
}

/* Masks are cached per configuration: inside a string the configuration repeats. */
static void test_mask_cache(void **state) {
    (void)state;
    vocab *w = make_vocab();
    cv_gdfa *g = schema_grammar(w, "{\"type\":\"string\"}");
    cv_gmatch *m = start(g);
    cv_error e = {0};
    assert_int_equal(cv_gmatch_accept_token(m, tok(w, "\""), &e), CV_OK);
    for (int i = 0; i < 50; i++) {
        assert_true(allowed(m, tok(w, "ab")));
        assert_int_equal(cv_gmatch_accept_token(m, tok(w, "ab"), &e), CV_OK);
    }
    cv_gmatch_stats st;
    cv_gmatch_get_stats(m, &st);
    assert_int_equal(st.masks_asked, 50);
    assert_true(st.masks_computed <= 2);
    cv_gmatch_free(m);
    cv_gdfa_unref(g);
    free_vocab(w);
}

/* After cv_gdfa_precompute over a finite grammar (every configuration within the
 * budget), random walks through the masks compute none; with a budget of one mask,
 * only the start's is there; masks under the cheap bound are explored, not kept. */
static void test_precompute(void **state) {
    (void)state;
    vocab *w = make_vocab();
    const char *schema = "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\",\"maxLength\":6},"
                         "\"b\":{\"enum\":[\"x\",12,true]}},\"required\":[\"a\",\"b\"],"
                         "\"additionalProperties\":false}";
    cv_gdfa *g = schema_grammar(w, schema);
    cv_error e = {0};
    assert_int_equal(cv_gdfa_precompute(g, 1 << 20, 60.0, 0, &e), CV_OK);
    cv_gmatch *m = start(g);
    cv_gmatch_stats before, after;
    cv_gmatch_get_stats(m, &before);
    assert_true(before.masks_precomputed > 20 && before.masks_precomputed == before.masks_computed);
    cv_gmatch_free(m);
    uint32_t seed = 7;
    for (int walk = 0; walk < 50; walk++) {
        m = start(g);
        while (!cv_gmatch_ended(m)) {
            const uint64_t *mask;
            assert_int_equal(cv_gmatch_mask(m, &mask, &e), CV_OK);
            int32_t ok[256], k = 0;
            for (int32_t t = 0; t < w->n; t++)
                if (mask[t >> 6] >> (t & 63) & 1) ok[k++] = t;
            assert_true(k > 0);
            seed = seed * 1103515245u + 12345u;
            assert_int_equal(cv_gmatch_accept_token(m, ok[(seed >> 8) % (uint32_t)k], &e), CV_OK);
        }
        cv_gmatch_free(m);
    }
    m = start(g);
    cv_gmatch_get_stats(m, &after);
    assert_int_equal(after.masks_computed, before.masks_computed);
    cv_gmatch_free(m);
    cv_gdfa_unref(g);
    g = schema_grammar(w, schema);
    assert_int_equal(cv_gdfa_precompute(g, 1, 60.0, 0, &e), CV_OK);
    m = start(g);
    cv_gmatch_get_stats(m, &after);
    assert_int_equal(after.masks_precomputed, 1);
    cv_gmatch_free(m);
    cv_gdfa_unref(g);
    /* only the walks through most of the trie kept: inside the string (over 110 of this
     * vocabulary's trie nodes; elsewhere a walk stops at the root's ~100 children) */
    g = schema_grammar(w, schema);
    assert_int_equal(cv_gdfa_precompute(g, 1 << 20, 60.0, 110, &e), CV_OK);
    m = start(g);
    cv_gmatch_get_stats(m, &after);
    if (!(after.masks_precomputed > 0 && after.masks_precomputed < before.masks_precomputed / 2))
        fail_msg("%llu masks kept of %llu", (unsigned long long)after.masks_precomputed,
                 (unsigned long long)before.masks_precomputed);
    assert_int_equal(after.masks_computed, after.masks_precomputed);
    cv_gmatch_free(m);
    cv_gdfa_unref(g);
    free_vocab(w);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_precompute),
        cmocka_unit_test(test_gbnf_matching),
        cmocka_unit_test(test_gbnf_refusals),
        cmocka_unit_test(test_masks_multi_symbol_and_utf8),
        cmocka_unit_test(test_schema_accepts_and_rejects),
        cmocka_unit_test(test_schema_refusals),
        cmocka_unit_test(test_random_walks_always_valid),
        cmocka_unit_test(test_mask_cache),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
