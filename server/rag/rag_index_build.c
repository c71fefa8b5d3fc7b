/* rag_index_build: the index builder (chunking, analysis, postings) and its atomic
 * writer. Format: rag_index.h / rag_index_format.h. */
#include "rag_index.h"
#include "rag_index_format.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <utf8proc.h>
#include <zlib.h>

typedef struct bdoc {
    char *id, *title, *url;
    size_t first, n; /* chunk range in the builder's chunk array */
    int dead;        /* replaced by a later document with the same id */
} bdoc;

typedef struct bchunk {
    size_t off, len; /* in the text arena */
} bchunk;

struct cv_rag_builder {
    cv_rag_build_opts o;
    const cv_rag_analyzer *an;
    bdoc *docs;
    size_t n_docs, cap_docs, live_docs;
    bchunk *chunks;
    size_t n_chunks, cap_chunks, live_chunks;
    char *text;
    size_t text_len, text_cap;
    uint32_t *ids; /* hash of doc ids: doc index + 1, 0 = empty */
    size_t ids_mask;
};

void cv_rag_build_opts_default(cv_rag_build_opts *o) {
    o->chunk_chars = 800;
    o->overlap_chars = 100;
    o->k1 = 1.2;
    o->b = 0.75;
    o->measure = NULL;
    o->measure_user = NULL;
    o->max_units = 0;
}

static uint64_t fnv(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

/* Grows *v (elements of size sz) to hold at least need elements. */
static int grow(void **v, size_t *cap, size_t need, size_t sz) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    void *p = realloc(*v, c * sz);
    if (!p) return -1;
    *v = p;
    *cap = c;
    return 0;
}

cv_status cv_rag_builder_create(const cv_rag_build_opts *opts, const cv_rag_analyzer *a,
                                cv_rag_builder **out, cv_error *err) {
    cv_rag_build_opts o;
    cv_rag_build_opts_default(&o);
    if (opts) o = *opts;
    if (o.chunk_chars < 16 || o.chunk_chars > 1000000)
        return cv_errorf(err, CV_ERANGE, "chunk size %u characters: must be 16..1000000",
                         o.chunk_chars);
    if (o.overlap_chars >= o.chunk_chars / 2)
        return cv_errorf(err, CV_ERANGE, "overlap %u characters: must be below half the chunk size (%u)",
                         o.overlap_chars, o.chunk_chars);
    if (o.measure && (o.max_units < 8 || o.max_units > 1000000))
        return cv_errorf(err, CV_ERANGE, "chunk size %u tokens: must be 8..1000000", o.max_units);
    if (!(o.k1 >= 0 && o.k1 <= 10) || !(o.b >= 0 && o.b <= 1))
        return cv_errorf(err, CV_ERANGE, "BM25 k1=%g b=%g: need 0 <= k1 <= 10, 0 <= b <= 1",
                         o.k1, o.b);
    cv_rag_builder *b = calloc(1, sizeof *b);
    if (!b || !(b->ids = calloc(64, sizeof *b->ids))) {
        free(b);
        return cv_errorf(err, CV_ENOMEM, "index builder: out of memory");
    }
    b->ids_mask = 63;
    b->o = o;
    b->an = a;
    *out = b;
    return CV_OK;
}

void cv_rag_builder_free(cv_rag_builder *b) {
    if (!b) return;
    for (size_t i = 0; i < b->n_docs; i++) {
        free(b->docs[i].id);
        free(b->docs[i].title);
        free(b->docs[i].url);
    }
    free(b->docs);
    free(b->chunks);
    free(b->text);
    free(b->ids);
    free(b);
}

size_t cv_rag_builder_n_docs(const cv_rag_builder *b) { return b->live_docs; }
size_t cv_rag_builder_n_chunks(const cv_rag_builder *b) { return b->live_chunks; }

/* Copies text into the builder's arena, replacing invalid UTF-8 bytes with U+FFFD. */
static int arena_append_utf8(cv_rag_builder *b, const char *t, size_t n) {
    if (grow((void **)&b->text, &b->text_cap, b->text_len + n + 1, 1)) return -1;
    for (;;) {
        size_t ok = cv_rag_utf8_check(t, n);
        memcpy(b->text + b->text_len, t, ok);
        b->text_len += ok;
        if (ok == n) return 0;
        static const char fffd[3] = {'\xEF', '\xBF', '\xBD'};
        if (grow((void **)&b->text, &b->text_cap, b->text_len + 3 + (n - ok), 1)) return -1;
        memcpy(b->text + b->text_len, fffd, 3);
        b->text_len += 3;
        t += ok + 1;
        n -= ok + 1;
    }
}

static size_t cp_forward(const char *t, size_t n, size_t i, size_t count) {
    while (count-- && i < n) {
        i++;
        while (i < n && ((uint8_t)t[i] & 0xC0) == 0x80) i++;
    }
    return i;
}

static size_t cp_back(const char *t, size_t lo, size_t i, size_t count) {
    while (count-- && i > lo) {
        i--;
        while (i > lo && ((uint8_t)t[i] & 0xC0) == 0x80) i--;
    }
    return i;
}

/* A good place to cut: just after whitespace or CJK sentence punctuation. */
static int is_break(const char *t, size_t p) {
    char c = t[p - 1];
    if (c == ' ' || c == '\n' || c == '\t' || c == '\r') return 1;
    static const char *const cjk_punct[] = {"。", "！", "？", "；", "，", "、"};
    for (size_t k = 0; p >= 3 && k < sizeof cjk_punct / sizeof cjk_punct[0]; k++)
        if (memcmp(t + p - 3, cjk_punct[k], 3) == 0) return 1;
    return 0;
}

static int push_chunk(cv_rag_builder *b, size_t off, size_t len) {
    if (grow((void **)&b->chunks, &b->cap_chunks, b->n_chunks + 1, sizeof *b->chunks)) return -1;
    b->chunks[b->n_chunks++] = (bchunk){off, len};
    return 0;
}

/* End of a chunk of at most `window` code points from start, moved back to a break
 * in the window's last fifth when there is one. */
static size_t cut_end(const char *t, size_t n, size_t start, size_t window) {
    size_t end = cp_forward(t, n, start, window);
    if (end >= n) return end;
    size_t floor = cp_forward(t, n, start, window - window / 5);
    for (size_t p = end; p > floor; p--)
        if (is_break(t, p) && ((uint8_t)t[p] & 0xC0) != 0x80) return p;
    return end;
}

/* Cuts arena[base..base+n) into chunks of at most chunk_chars code points (and
 * max_units when measured), preferring to end at a break in the last fifth of the
 * window, each starting overlap_chars before the previous end (moved forward to a
 * break when one is close). */
static int cut_chunks(cv_rag_builder *b, size_t base, size_t n) {
    const char *t = b->text + base;
    size_t cs = b->o.chunk_chars, ov = b->o.overlap_chars, start = 0;
    if (n == 0) return push_chunk(b, base, 0);
    for (;;) {
        size_t window = cs, end;
        for (;;) {
            end = cut_end(t, n, start, window);
            size_t units = b->o.measure ? b->o.measure(b->o.measure_user, t + start, end - start) : 0;
            if (units <= b->o.max_units || window <= 1) break;
            /* shrink in proportion to the excess (and a little more), then re-cut */
            size_t cps = 0;
            for (size_t p = start; p < end; p++) cps += ((uint8_t)t[p] & 0xC0) != 0x80;
            size_t w = (size_t)((double)cps * b->o.max_units / (double)units * 0.95);
            window = w < 1 ? 1 : w < window ? w : window - 1;
        }
        if (push_chunk(b, base + start, end - start)) return -1;
        if (end >= n) return 0;
        size_t next = cp_back(t, start, end, ov), snap = cp_forward(t, n, next, ov / 2);
        for (size_t p = next; p < snap; p++)
            if (p > 0 && is_break(t, p) && ((uint8_t)t[p] & 0xC0) != 0x80) {
                next = p;
                break;
            }
        start = next > start ? next : end;
    }
}

static char *dup_opt(const char *s) {
    return strdup(s ? s : "");
}

/* Registers a new document (chunks appended by the caller afterwards). */
static cv_status new_doc(cv_rag_builder *b, const char *id, const char *title, const char *url,
                         cv_error *err) {
    const char *fields[3] = {id, title, url};
    static const char *const names[3] = {"id", "title", "url"};
    if (!id || !*id) return cv_errorf(err, CV_EINVAL, "document id is empty");
    for (int k = 0; k < 3; k++) {
        size_t l = fields[k] ? strlen(fields[k]) : 0;
        if (l > 65535)
            return cv_errorf(err, CV_ERANGE, "document '%.64s': %s is %zu bytes, limit 65535",
                             id, names[k], l);
        if (l && cv_rag_utf8_check(fields[k], l) != l)
            return cv_errorf(err, CV_EINVAL, "document '%.64s': %s is not valid UTF-8 (byte %zu)",
                             id, names[k], cv_rag_utf8_check(fields[k], l));
    }
    if (grow((void **)&b->docs, &b->cap_docs, b->n_docs + 1, sizeof *b->docs))
        return cv_errorf(err, CV_ENOMEM, "index builder: out of memory");
    if (b->n_docs + 1 > (b->ids_mask + 1) / 2) { /* keep the id hash at most half full */
        size_t cap = (b->ids_mask + 1) * 2;
        uint32_t *t = calloc(cap, sizeof *t);
        if (!t) return cv_errorf(err, CV_ENOMEM, "index builder: out of memory");
        for (size_t i = 0; i <= b->ids_mask; i++) {
            if (!b->ids[i]) continue;
            const char *k = b->docs[b->ids[i] - 1].id;
            size_t h = fnv(k, strlen(k)) & (cap - 1);
            while (t[h]) h = (h + 1) & (cap - 1);
            t[h] = b->ids[i];
        }
        free(b->ids);
        b->ids = t;
        b->ids_mask = cap - 1;
    }
    bdoc *d = &b->docs[b->n_docs];
    *d = (bdoc){.id = strdup(id), .title = dup_opt(title), .url = dup_opt(url), .first = b->n_chunks};
    if (!d->id || !d->title || !d->url) {
        free(d->id), free(d->title), free(d->url);
        return cv_errorf(err, CV_ENOMEM, "index builder: out of memory");
    }
    size_t h = fnv(id, strlen(id)) & b->ids_mask;
    while (b->ids[h] && strcmp(b->docs[b->ids[h] - 1].id, id) != 0) h = (h + 1) & b->ids_mask;
    if (b->ids[h]) { /* same id: the new document replaces the old one */
        bdoc *old = &b->docs[b->ids[h] - 1];
        old->dead = 1;
        b->live_docs--;
        b->live_chunks -= old->n;
    }
    b->ids[h] = (uint32_t)(++b->n_docs);
    b->live_docs++;
    return CV_OK;
}

static void doc_done(cv_rag_builder *b) {
    bdoc *d = &b->docs[b->n_docs - 1];
    d->n = b->n_chunks - d->first;
    b->live_chunks += d->n;
}

cv_status cv_rag_builder_add(cv_rag_builder *b, const char *id, const char *title,
                             const char *url, const char *text, size_t len, cv_error *err) {
    cv_status st = new_doc(b, id, title, url, err);
    if (st) return st;
    size_t base = b->text_len;
    if (arena_append_utf8(b, text, len) || cut_chunks(b, base, b->text_len - base)) {
        doc_done(b);
        return cv_errorf(err, CV_ENOMEM, "index builder: out of memory adding '%.64s'", id);
    }
    doc_done(b);
    return CV_OK;
}

cv_status cv_rag_builder_add_chunks(cv_rag_builder *b, const char *id, const char *title,
                                    const char *url, const char *const *chunks,
                                    const size_t *lens, size_t n, cv_error *err) {
    cv_status st = new_doc(b, id, title, url, err);
    if (st) return st;
    for (size_t i = 0; i < n; i++) {
        size_t base = b->text_len;
        if (arena_append_utf8(b, chunks[i], lens[i]) ||
            push_chunk(b, base, b->text_len - base)) {
            doc_done(b);
            return cv_errorf(err, CV_ENOMEM, "index builder: out of memory adding '%.64s'", id);
        }
    }
    doc_done(b);
    return CV_OK;
}

/* ---- writing ---- */

typedef struct bterm {
    uint32_t off, len, df, last;
    uint8_t *post;
    size_t plen, pcap;
} bterm;

typedef struct dict {
    char *str;
    size_t str_len, str_cap;
    bterm *t;
    size_t n, cap;
    uint32_t *table;
    size_t mask;
    uint32_t *tf;      /* per term: count in the current chunk */
    size_t tf_cap;
    uint32_t *touched; /* terms seen in the current chunk */
    size_t n_touched, touched_cap;
    uint64_t chunk_terms;
    int oom;
} dict;

static int dict_rehash(dict *d) {
    size_t cap = (d->mask + 1) * 2;
    uint32_t *t = calloc(cap, sizeof *t);
    if (!t) return -1;
    for (size_t i = 0; i < d->n; i++) {
        size_t h = fnv(d->str + d->t[i].off, d->t[i].len) & (cap - 1);
        while (t[h]) h = (h + 1) & (cap - 1);
        t[h] = (uint32_t)i + 1;
    }
    free(d->table);
    d->table = t;
    d->mask = cap - 1;
    return 0;
}

static long dict_intern(dict *d, const char *s, size_t n) {
    size_t h = fnv(s, n) & d->mask;
    for (;; h = (h + 1) & d->mask) {
        uint32_t k = d->table[h];
        if (!k) break;
        const bterm *t = &d->t[k - 1];
        if (t->len == n && memcmp(d->str + t->off, s, n) == 0) return k - 1;
    }
    if (grow((void **)&d->t, &d->cap, d->n + 1, sizeof *d->t) ||
        grow((void **)&d->str, &d->str_cap, d->str_len + n, 1) ||
        grow((void **)&d->tf, &d->tf_cap, d->n + 1, sizeof *d->tf))
        return -1;
    memcpy(d->str + d->str_len, s, n);
    d->t[d->n] = (bterm){.off = (uint32_t)d->str_len, .len = (uint32_t)n};
    d->tf[d->n] = 0;
    d->str_len += n;
    d->table[h] = (uint32_t)++d->n;
    if (d->n * 2 > d->mask && dict_rehash(d)) return -1;
    return (long)d->n - 1;
}

static void on_term(void *user, const char *term, size_t len) {
    dict *d = user;
    if (d->oom) return;
    long id = dict_intern(d, term, len);
    if (id < 0 || grow((void **)&d->touched, &d->touched_cap, d->n_touched + 1, sizeof *d->touched)) {
        d->oom = 1;
        return;
    }
    if (d->tf[id]++ == 0) d->touched[d->n_touched++] = (uint32_t)id;
    d->chunk_terms++;
}

static int put_varint(bterm *t, uint32_t v) {
    if (grow((void **)&t->post, &t->pcap, t->plen + 5, 1)) return -1;
    while (v >= 0x80) {
        t->post[t->plen++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    t->post[t->plen++] = (uint8_t)v;
    return 0;
}

/* Adds the current chunk's terms to the postings; returns the chunk's length. */
static int flush_chunk(dict *d, uint32_t chunk) {
    for (size_t i = 0; i < d->n_touched; i++) {
        bterm *t = &d->t[d->touched[i]];
        uint32_t delta = t->df ? chunk - t->last : chunk;
        if (put_varint(t, delta) || put_varint(t, d->tf[d->touched[i]])) return -1;
        t->df++;
        t->last = chunk;
        d->tf[d->touched[i]] = 0;
    }
    d->n_touched = 0;
    return 0;
}

static void dict_free(dict *d) {
    for (size_t i = 0; i < d->n; i++) free(d->t[i].post);
    free(d->t);
    free(d->str);
    free(d->table);
    free(d->tf);
    free(d->touched);
}

typedef struct sorted_term {
    const char *s;
    uint32_t len, id;
} sorted_term;

static int term_cmp(const void *a, const void *b) {
    const sorted_term *x = a, *y = b;
    int c = memcmp(x->s, y->s, x->len < y->len ? x->len : y->len);
    if (c) return c;
    return x->len < y->len ? -1 : x->len > y->len;
}

typedef struct out {
    FILE *f;
    uint64_t pos;
    uLong crc;
    int failed;
} out;

static void put(out *o, const void *p, size_t n) {
    if (!n || o->failed) return;
    if (fwrite(p, 1, n, o->f) != n) o->failed = 1;
    o->crc = crc32(o->crc, p, (uInt)n);
    o->pos += n;
}

static void put_big(out *o, const void *p, size_t n) { /* crc32 takes uInt lengths */
    const char *c = p;
    while (n) {
        size_t k = n > (1u << 30) ? (1u << 30) : n;
        put(o, c, k);
        c += k;
        n -= k;
    }
}

static void section_begin(out *o, rag_section *s, uint32_t id) {
    static const char zeros[8] = {0};
    put(o, zeros, (size_t)((8 - o->pos % 8) % 8));
    s->id = id;
    s->offset = o->pos;
    o->crc = crc32(0, Z_NULL, 0);
}

static void section_end(out *o, rag_section *s) {
    s->size = o->pos - s->offset;
    s->crc = (uint32_t)o->crc;
}

typedef struct strpool {
    char *p;
    size_t n, cap;
} strpool;

static int pool_add(strpool *sp, const char *s, size_t n, uint32_t *off) {
    if (grow((void **)&sp->p, &sp->cap, sp->n + n + 1, 1)) return -1;
    memcpy(sp->p + sp->n, s, n);
    *off = (uint32_t)sp->n;
    sp->n += n;
    return 0;
}

/* Everything an index file holds, computed before the file is written. */
typedef struct plan {
    dict d;
    strpool sp;
    rag_doc_rec *docs;
    rag_chunk_rec *chunks;
    rag_term_rec *terms;
    sorted_term *order; /* term ids in file order */
    rag_str_ref *stops;
    rag_meta meta;
} plan;

static void plan_free(plan *p) {
    dict_free(&p->d);
    free(p->sp.p);
    free(p->docs);
    free(p->chunks);
    free(p->terms);
    free(p->order);
    free(p->stops);
}

/* Documents, chunks and postings; chunk ids follow document order, skipping replaced
 * documents. -1 when memory runs out. */
static int plan_analyze(const cv_rag_builder *b, plan *p) {
    dict *d = &p->d;
    d->mask = 1023;
    p->docs = calloc(b->live_docs + 1, sizeof *p->docs);
    p->chunks = calloc(b->live_chunks + 1, sizeof *p->chunks);
    if (!p->docs || !p->chunks || !(d->table = calloc(d->mask + 1, sizeof *d->table))) return -1;
    uint32_t nd = 0, nc = 0;
    uint64_t text_off = 0, total_terms = 0;
    for (size_t i = 0; i < b->n_docs; i++) {
        const bdoc *bd = &b->docs[i];
        if (bd->dead) continue;
        rag_doc_rec *dr = &p->docs[nd];
        dr->first_chunk = nc;
        dr->n_chunks = (uint32_t)bd->n;
        dr->id_len = (uint32_t)strlen(bd->id);
        dr->title_len = (uint32_t)strlen(bd->title);
        dr->url_len = (uint32_t)strlen(bd->url);
        if (pool_add(&p->sp, bd->id, dr->id_len, &dr->id_off) ||
            pool_add(&p->sp, bd->title, dr->title_len, &dr->title_off) ||
            pool_add(&p->sp, bd->url, dr->url_len, &dr->url_off))
            return -1;
        for (size_t k = 0; k < bd->n; k++) {
            const bchunk *bc = &b->chunks[bd->first + k];
            d->chunk_terms = 0;
            cv_rag_analyze(b->an, bd->title, dr->title_len, on_term, d);
            cv_rag_analyze(b->an, b->text + bc->off, bc->len, on_term, d);
            if (d->oom || flush_chunk(d, nc)) return -1;
            p->chunks[nc] = (rag_chunk_rec){.doc = nd, .n_terms = (uint32_t)d->chunk_terms,
                                            .ordinal = (uint32_t)k, .text_len = (uint32_t)bc->len,
                                            .text_off = text_off};
            text_off += bc->len;
            total_terms += d->chunk_terms;
            nc++;
        }
        nd++;
    }
    p->meta = (rag_meta){.n_docs = nd, .n_chunks = nc, .n_terms = (uint32_t)d->n,
                         .k1 = b->o.k1, .b = b->o.b,
                         .avg_len = nc && total_terms ? (double)total_terms / nc : 1.0,
                         .chunk_chars = b->o.chunk_chars, .overlap_chars = b->o.overlap_chars,
                         .total_terms = total_terms};
    return 0;
}

/* The sorted term dictionary and the stopwords. -1 when memory runs out. */
static int plan_terms(const cv_rag_builder *b, plan *p) {
    const dict *d = &p->d;
    p->order = malloc((d->n + 1) * sizeof *p->order);
    p->terms = calloc(d->n + 1, sizeof *p->terms);
    if (!p->order || !p->terms) return -1;
    for (size_t i = 0; i < d->n; i++)
        p->order[i] = (sorted_term){d->str + d->t[i].off, d->t[i].len, (uint32_t)i};
    qsort(p->order, d->n, sizeof *p->order, term_cmp);
    uint64_t post_off = 0;
    for (size_t i = 0; i < d->n; i++) {
        const bterm *t = &d->t[p->order[i].id];
        p->terms[i] = (rag_term_rec){.str_len = t->len, .df = t->df, .post_off = post_off,
                                     .post_len = t->plen};
        if (pool_add(&p->sp, p->order[i].s, t->len, &p->terms[i].str_off)) return -1;
        post_off += t->plen;
    }
    size_t n_stop;
    const char *const *sw = cv_rag_analyzer_stopwords(b->an, &n_stop);
    if (!(p->stops = calloc(n_stop + 1, sizeof *p->stops))) return -1;
    for (size_t i = 0; i < n_stop; i++) {
        p->stops[i].len = (uint32_t)strlen(sw[i]);
        if (pool_add(&p->sp, sw[i], p->stops[i].len, &p->stops[i].off)) return -1;
    }
    p->meta.n_stop = (uint32_t)n_stop;
    return 0;
}

/* Writes the sections, then the header and table with their final offsets and CRCs. */
static cv_status plan_write(const cv_rag_builder *b, const plan *p, FILE *f, const char *tmp,
                            cv_error *err) {
    const rag_meta *m = &p->meta;
    out o = {.f = f};
    rag_header h = {.version = CV_RAG_INDEX_VERSION, .n_sections = RAG_SEC_COUNT,
                    .flags = RAG_FLAG_CRC};
    memcpy(h.magic, RAG_MAGIC, 8);
    rag_section sec[RAG_SEC_COUNT] = {{0}}, *s = sec;
    put(&o, &h, sizeof h);
    put(&o, sec, sizeof sec);
    section_begin(&o, s, RAG_SEC_META), put(&o, m, sizeof *m), section_end(&o, s++);
    section_begin(&o, s, RAG_SEC_DOCS), put_big(&o, p->docs, m->n_docs * sizeof *p->docs),
        section_end(&o, s++);
    section_begin(&o, s, RAG_SEC_CHUNKS), put_big(&o, p->chunks, m->n_chunks * sizeof *p->chunks),
        section_end(&o, s++);
    section_begin(&o, s, RAG_SEC_TERMS), put_big(&o, p->terms, m->n_terms * sizeof *p->terms),
        section_end(&o, s++);
    section_begin(&o, s, RAG_SEC_POSTINGS);
    for (size_t i = 0; i < p->d.n; i++) put(&o, p->d.t[p->order[i].id].post, p->d.t[p->order[i].id].plen);
    section_end(&o, s++);
    section_begin(&o, s, RAG_SEC_TEXT);
    for (size_t i = 0; i < b->n_docs; i++)
        for (size_t k = 0; !b->docs[i].dead && k < b->docs[i].n; k++) {
            const bchunk *bc = &b->chunks[b->docs[i].first + k];
            put_big(&o, b->text + bc->off, bc->len);
        }
    section_end(&o, s++);
    section_begin(&o, s, RAG_SEC_STRINGS), put_big(&o, p->sp.p, p->sp.n), section_end(&o, s++);
    section_begin(&o, s, RAG_SEC_STOPWORDS), put(&o, p->stops, m->n_stop * sizeof *p->stops),
        section_end(&o, s++);
    h.file_size = o.pos;
    if (o.failed || fseek(f, 0, SEEK_SET) != 0 || fwrite(&h, sizeof h, 1, f) != 1 ||
        fwrite(sec, sizeof sec, 1, f) != 1 || fflush(f) != 0 || fsync(fileno(f)) != 0)
        return cv_errorf(err, CV_EIO, "writing %s: %s", tmp, strerror(errno));
    return CV_OK;
}

cv_status cv_rag_builder_write(cv_rag_builder *b, const char *path, cv_error *err) {
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return cv_errorf(err, CV_EINVAL, "index path is too long (%zu bytes)", strlen(path));
    if (b->live_chunks > UINT32_MAX - 1 || b->live_docs > UINT32_MAX - 1)
        return cv_errorf(err, CV_ERANGE, "%zu chunks in %zu documents: limit %u", b->live_chunks,
                         b->live_docs, UINT32_MAX - 1);
    plan p = {0};
    FILE *f = NULL;
    cv_status st = CV_OK;
    if (plan_analyze(b, &p)) goto oom;
    if (p.sp.n + p.d.str_len > UINT32_MAX) {
        st = cv_errorf(err, CV_ERANGE, "index strings total %zu bytes: limit 4 GiB",
                       p.sp.n + p.d.str_len);
        goto done;
    }
    if (plan_terms(b, &p)) goto oom;
    if (!(f = fopen(tmp, "wb"))) {
        st = cv_errorf(err, CV_EIO, "creating %s: %s", tmp, strerror(errno));
        goto done;
    }
    if ((st = plan_write(b, &p, f, tmp, err))) goto done;
    int rc = fclose(f);
    f = NULL;
    if (rc != 0 || rename(tmp, path) != 0)
        st = cv_errorf(err, CV_EIO, "replacing %s: %s", path, strerror(errno));
    goto done;
oom:
    st = cv_errorf(err, CV_ENOMEM, "index builder: out of memory writing %s", path);
done:
    if (f) fclose(f);
    if (st) unlink(tmp);
    plan_free(&p);
    return st;
}
