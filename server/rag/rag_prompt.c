#include "rag_prompt.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "utf8.h"

int cv_rag_is_cjk_cp(uint32_t cp) {
    return (cp >= 0x3040 && cp <= 0x30FF) ||   /* kana */
           (cp >= 0x3400 && cp <= 0x4DBF) ||   /* Han extension A */
           (cp >= 0x4E00 && cp <= 0x9FFF) ||   /* Han */
           (cp >= 0xAC00 && cp <= 0xD7AF) ||   /* Hangul syllables */
           (cp >= 0xF900 && cp <= 0xFAFF) ||   /* Han compatibility */
           (cp >= 0x20000 && cp <= 0x3FFFF);   /* Han extensions B.. */
}

int cv_rag_is_cjk_text(const char *text, size_t len) {
    const uint8_t *p = (const uint8_t *)text;
    size_t i = 0;
    while (i < len) {
        uint32_t cp;
        int n = cv_utf8_decode(p + i, len - i, &cp);
        if (n == 0) {
            i++;
            continue;
        }
        if (cv_rag_is_cjk_cp(cp)) return 1;
        i += (size_t)n;
    }
    return 0;
}

/* The frame in the question's language (rag_prompt.h shows it). Short on purpose:
 * small models have little room. The "not in the documents" reply is spelled out so
 * the model has a sentence to give instead of a guess. No request to cite: asked to
 * cite "like [1]", the 0.5B Qwen answered "[1]" alone or "[1]. [2]. [3]" (measured
 * with bench-rag-qa's questions); the client has the citations in the Context message.
 * "States the answer": asked only to "answer in one short sentence", it replied the
 * not-in-the-documents sentence to questions its one passage answered. "原话" (the
 * documents' own words): asked in Chinese it rewrote the passage's Chinese numerals in
 * digits and dropped some (二百五十公里 -> "25公里", 二十四层 -> "2层"). */
typedef struct frame {
    const char *documents, *question, *answer, *instruction;
} frame;

static const frame frames[2] = {
    {"Documents:\n", "Question: ", "Answer:",
     "Answer the question using only the documents. Reply with one short sentence that states the answer. "
     "If the documents do not contain the answer, reply exactly: " CV_RAG_NOT_IN_DOCS_EN},
    {"资料:\n", "问题: ", "回答:",
     "只根据资料回答问题。用资料中的原话，以一句简短的话说出答案。如果资料中没有答案，请只回答："
     CV_RAG_NOT_IN_DOCS_ZH},
};

static const frame *frame_for(const char *question) {
    return &frames[cv_rag_is_cjk_text(question, strlen(question))];
}

typedef struct sbuf {
    char *p;
    size_t len, cap;
} sbuf;

static int sb_add(sbuf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t c = b->cap ? b->cap : 256;
        while (c < b->len + n + 1) c *= 2;
        char *q = realloc(b->p, c);
        if (!q) return -1;
        b->p = q;
        b->cap = c;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
    return 0;
}

static int sb_str(sbuf *b, const char *s) { return sb_add(b, s, strlen(s)); }

/* "[i] TITLE: " (no title and no id: "[i] ") */
static int add_header(sbuf *b, size_t number, const cv_rag_passage *p) {
    char num[32];
    snprintf(num, sizeof num, "[%zu] ", number);
    const char *title = p->title && *p->title ? p->title : p->doc_id;
    return sb_str(b, num) || (title && *title && (sb_str(b, title) || sb_str(b, ": ")));
}

/* Largest prefix of text (a whole number of UTF-8 characters) whose block fits in
 * `left` tokens together with its header: binary search over character boundaries.
 * SIZE_MAX when memory runs out. */
static size_t fit_prefix(const char *hdr, size_t hdr_len, const char *text, size_t len, size_t left,
                         cv_rag_measure_fn measure, void *user, sbuf *scratch) {
    size_t *bd = malloc(sizeof *bd * (len + 1)), nb = 0;
    if (!bd) return SIZE_MAX;
    for (size_t i = 0; i <= len; i++)
        if (i == len || ((unsigned char)text[i] & 0xC0) != 0x80) bd[nb++] = i;
    size_t lo = 0, hi = nb - 1, r;
    while (lo < hi) {
        size_t mid = lo + (hi - lo + 1) / 2;
        scratch->len = 0;
        if (sb_add(scratch, hdr, hdr_len) || sb_add(scratch, text, bd[mid])) {
            free(bd);
            return SIZE_MAX;
        }
        if (measure(user, scratch->p, scratch->len) <= left) lo = mid;
        else hi = mid - 1;
    }
    r = bd[lo];
    free(bd);
    return r;
}

/* Appends passage blocks in rank order while they fit; returns how many went in. */
static cv_status fill(const cv_rag_passage *p, size_t n, size_t limit, size_t budget,
                      cv_rag_measure_fn measure, void *user, cv_rag_context *out, cv_error *err) {
    sbuf b = {0}, blk = {0}, scratch = {0};
    size_t used = 0, seam = measure(user, "\n\n", 2);
    out->n_kept = 0;
    for (size_t i = 0; i < n && i < limit; i++) {
        blk.len = 0;
        if (add_header(&blk, out->n_kept + 1, &p[i])) goto oom;
        size_t hdr_len = blk.len;
        if (sb_add(&blk, p[i].text, p[i].len)) goto oom;
        size_t sep = out->n_kept ? seam : 0;
        size_t cost = measure(user, blk.p, blk.len) + sep;
        if (used + cost > budget) {
            if (used + sep >= budget || budget - used - sep < CV_RAG_PROMPT_MIN_CUT) break;
            size_t left = budget - used - sep;
            char *hdr = strndup(blk.p, hdr_len);
            if (!hdr) goto oom;
            size_t keep = fit_prefix(hdr, hdr_len, p[i].text, p[i].len, left, measure, user, &scratch);
            free(hdr);
            if (keep == SIZE_MAX) goto oom;
            if (!keep) break;
            blk.len = hdr_len;
            if (sb_add(&blk, p[i].text, keep)) goto oom;
            cost = left + sep;
            limit = i + 1; /* nothing after a cut passage */
        }
        if ((out->n_kept && sb_str(&b, "\n\n")) || sb_add(&b, blk.p, blk.len)) goto oom;
        out->kept[out->n_kept++] = i;
        used += cost;
    }
    if (!b.p && sb_add(&b, "", 0)) goto oom;
    free(out->text);
    out->text = b.p;
    out->tokens = measure(user, b.p, b.len);
    free(blk.p);
    free(scratch.p);
    return CV_OK;
oom:
    free(b.p);
    free(blk.p);
    free(scratch.p);
    return cv_errorf(err, CV_ENOMEM, "rag prompt: out of memory assembling %zu passages", n);
}

cv_status cv_rag_context_build(const cv_rag_passage *p, size_t n, size_t budget,
                               cv_rag_measure_fn measure, void *user, cv_rag_context *out,
                               cv_error *err) {
    memset(out, 0, sizeof *out);
    out->kept = calloc(n ? n : 1, sizeof *out->kept);
    if (!out->kept) return cv_errorf(err, CV_ENOMEM, "rag prompt: out of memory for %zu passages", n);
    /* Blocks are counted one by one; joined, a tokenizer may count a token more or less
     * at a seam. Whatever the seams cost, the result must be within budget: drop from
     * the end until it is. */
    size_t limit = n;
    for (;;) {
        cv_status st = fill(p, n, limit, budget, measure, user, out, err);
        if (st != CV_OK) {
            cv_rag_context_free(out);
            return st;
        }
        if (out->tokens <= budget || out->n_kept == 0) break;
        limit = out->n_kept - 1;
    }
    return CV_OK;
}

void cv_rag_context_free(cv_rag_context *c) {
    free(c->text);
    free(c->kept);
    memset(c, 0, sizeof *c);
}

/* Chat: instruction (unless compact), documents, question. Generate: documents,
 * instruction, question, answer label. */
static char *framed(const cv_rag_context *c, const char *question, int generate, int compact) {
    const frame *f = frame_for(question);
    sbuf b = {0};
    int bad = (!generate && !compact && (sb_str(&b, f->instruction) || sb_str(&b, "\n\n"))) ||
              sb_str(&b, f->documents) || sb_str(&b, c->text) || sb_str(&b, "\n\n") ||
              (generate && !compact && (sb_str(&b, f->instruction) || sb_str(&b, "\n\n"))) ||
              sb_str(&b, f->question) || sb_str(&b, question) ||
              (generate && (sb_str(&b, "\n") || sb_str(&b, f->answer)));
    if (bad) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

char *cv_rag_prompt_user(const cv_rag_context *c, const char *question, int compact) {
    return framed(c, question, 0, compact);
}

char *cv_rag_prompt_generate(const cv_rag_context *c, const char *question, int compact) {
    return framed(c, question, 1, compact);
}
