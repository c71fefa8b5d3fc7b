/* libFuzzer target for the grammar engine: GBNF text and JSON schemas come from
 * requests, untrusted.
 * Input: a mode byte ('s': a JSON schema, compiled to GBNF first; anything else: GBNF),
 * the text, \0, then probe bytes.
 * Checks: compilation succeeds or fails with a message and no memory error or leak; a
 * schema that compiles gives GBNF that the grammar compiler accepts; on a compiled grammar
 * the probe bytes are fed one at a time over a 256-token byte vocabulary plus an end
 * token, and at every step the mask agrees with feeding that byte's token (allowed
 * exactly when the matcher takes it; a token terminal <[N]> names one of them), and the
 * end token is allowed exactly when accepting. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grammar.h"
#include "grammar_match.h"
#include "json_schema.h"

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "check failed: %s\n", #c); __builtin_trap(); } } while (0)

static cv_gvocab *byte_vocab(void) {
    static char bytes[256];
    static const char *pieces[257];
    static size_t lens[257];
    static uint8_t ends[257];
    for (int i = 0; i < 256; i++) {
        bytes[i] = (char)i;
        pieces[i] = &bytes[i];
        lens[i] = 1;
    }
    pieces[256] = "";
    ends[256] = 1;
    cv_gvocab *v = NULL;
    cv_error e;
    CHECK(cv_gvocab_new(257, pieces, lens, ends, NULL, NULL, &v, &e) == CV_OK);
    return v;
}

/* Takes g. */
static void probe(cv_grammar *g, const uint8_t *p, size_t n) {
    static cv_gvocab *v;
    if (!v) v = byte_vocab();
    cv_gdfa *d = NULL;
    cv_gmatch *m = NULL;
    cv_error e;
    int toks = g->n_toks > 0;
    if (cv_gdfa_new(g, v, &d, &e) != CV_OK) {
        /* a token terminal may name no token of the vocabulary, or its end token */
        CHECK(e.code == CV_ERANGE || e.code == CV_ENOMEM || (toks && e.code == CV_EINVAL));
        return;
    }
    CHECK(cv_gmatch_start(d, &m, &e) == CV_OK);
    cv_gdfa_unref(d);
    for (size_t i = 0; i < n && i < 64; i++) {
        const uint64_t *mask;
        if (cv_gmatch_mask(m, &mask, &e) != CV_OK) {
            CHECK(e.code == CV_ERANGE || e.code == CV_ENOMEM);
            break;
        }
        CHECK((int)(mask[4] & 1) == (int)cv_gmatch_accepting(m));
        int allowed = (int)(mask[p[i] >> 6] >> (p[i] & 63) & 1);
        cv_status st = cv_gmatch_accept_token(m, p[i], &e);
        if (st == CV_ERANGE || st == CV_ENOMEM) break;
        CHECK(allowed == (st == CV_OK));
        if (st != CV_OK) break;
    }
    cv_gmatch_free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const char *text = (const char *)data + 1;
    const uint8_t *z = memchr(text, 0, size - 1);
    size_t len = z ? (size_t)(z - (const uint8_t *)text) : size - 1;
    const uint8_t *bytes = z ? z + 1 : data + size;
    size_t n_bytes = (size_t)(data + size - bytes);
    cv_error e;
    char *gbnf = NULL;
    if (data[0] == 's') {
        if (cv_json_schema_gbnf_text(text, len, NULL, &gbnf, &e) != CV_OK) {
            CHECK(gbnf == NULL && e.msg[0]);
            return 0;
        }
        text = gbnf;
        len = strlen(gbnf);
    }
    cv_grammar *g = NULL;
    cv_status st = cv_grammar_parse(text, len, &g, &e);
    if (st != CV_OK) {
        CHECK(g == NULL && e.msg[0]);
        /* The schema compiler's output always compiles. */
        if (gbnf) {
            fprintf(stderr, "%s\n%s\n", e.msg, gbnf);
            __builtin_trap();
        }
    } else {
        probe(g, bytes, n_bytes);
    }
    free(gbnf);
    return 0;
}
