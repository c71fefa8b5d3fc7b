/* grammar: a context-free grammar over bytes, compiled from GBNF text.
 *
 * The text is llama.cpp's GBNF dialect: `name ::= alternatives` rules (one per line;
 * newlines are allowed inside parentheses and after `|`), `#` comments, string
 * literals "..." with \n \r \t \\ \" \xHH \uHHHH \UHHHHHHHH escapes, character classes
 * [a-z0-9_] and [^...], `.` (any character), rule names, ( groups ), and the postfix
 * operators * + ? {m} {m,} {m,n}, and llama.cpp's token terminals: <[N]> is the token
 * with id N, <TEXT> (from '<' to the first '>', both included, as <|python_tag|>) the
 * token whose text that is; corvid adds <"TEXT"> (a string literal, for a token whose
 * text is not in angle brackets, as Mistral's [TOOL_CALLS]). A token terminal matches
 * that one token, never the same text written with other tokens: the way to put a
 * control token where the grammar allows it and nowhere else. Which token a text names
 * is settled against a vocabulary (grammar_match.h). The start rule is `root`.
 * Characters are Unicode code
 * points written as UTF-8: classes and `.` are compiled to byte sequences here, so the
 * matcher (grammar_match.h) works on bytes and a token that ends inside a character
 * is handled like any other prefix.
 *
 * Refused, with the line and column: syntax errors, undefined rules, left recursion
 * (it would never terminate), invalid UTF-8, text over CV_GRAMMAR_MAX_TEXT bytes,
 * repetition bounds over CV_GRAMMAR_MAX_REPEAT and a compiled size over
 * CV_GRAMMAR_MAX_ELEMENTS (the text is untrusted: compile work stays bounded).
 *
 * The compiled form is read-only and may be shared between threads.
 */
#ifndef CV_GRAMMAR_H
#define CV_GRAMMAR_H

#include <stddef.h>
#include <stdint.h>

#include "cv_error.h"

#define CV_GRAMMAR_MAX_TEXT (1u << 20)
#define CV_GRAMMAR_MAX_REPEAT 1024
#define CV_GRAMMAR_MAX_ELEMENTS (1 << 20)

/* Element codes in cv_grammar.el: a value >= 0 is the index of a byte set that
 * matches one byte; CV_GEL_END ends an alternative; a rule reference r is
 * CV_GEL_REF(r); token terminal k (cv_grammar.toks[k]) is CV_GEL_TOKEN(k). */
#define CV_GEL_END (-1)
#define CV_GEL_REF(r) (-2 - (int32_t)(r))
#define CV_GEL_RULE(e) (-2 - (int32_t)(e))
#define CV_GEL_TOKEN(k) (INT32_MIN + (int32_t)(k))
#define CV_GEL_IS_TOKEN(e) ((e) < -(1 << 30))
#define CV_GEL_IS_REF(e) ((e) <= -2 && !CV_GEL_IS_TOKEN(e))
#define CV_GEL_TOKEN_INDEX(e) ((int32_t)((e) - INT32_MIN))

#define CV_GRAMMAR_MAX_TOKEN_TEXT 256

/* A token terminal: an id, or the text of the token meant. */
typedef struct cv_gtoken {
    int32_t id;   /* -1: named by text */
    char *text;   /* NUL-terminated; NULL for an id */
    size_t len;
} cv_gtoken;

typedef struct cv_grammar {
    int32_t *el;          /* every alternative's elements, each followed by CV_GEL_END */
    int32_t n_el;
    int32_t *alt;         /* start index in el of each alternative, grouped by rule */
    int32_t *rule_alt;    /* rule r's alternatives: alt[rule_alt[r] .. rule_alt[r + 1]) */
    int32_t n_rules;
    int32_t root;
    uint64_t (*sets)[4];  /* 256-bit byte sets */
    int32_t n_sets;
    cv_gtoken *toks;      /* the token terminals, each once */
    int32_t n_toks;
} cv_grammar;

/* Compiles text[0..len). CV_EINVAL (syntax, undefined rule, left recursion, UTF-8)
 * or CV_ERANGE (size limits), the message naming line:column. */
cv_status cv_grammar_parse(const char *text, size_t len, cv_grammar **out, cv_error *err);
void cv_grammar_free(cv_grammar *g);
/* cv_grammar_parse's verdict alone (a request checked before any work). */
cv_status cv_grammar_check(const char *text, size_t len, cv_error *err);

static inline int cv_grammar_set_has(const cv_grammar *g, int32_t set, uint8_t b) {
    return (int)((g->sets[set][b >> 6] >> (b & 63)) & 1u);
}

#endif
