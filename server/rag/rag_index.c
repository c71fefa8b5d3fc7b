/* rag_index: opening (validation, mapping) and searching an index. Format and
 * contract: rag_index.h; records: rag_index_format.h. */
#include "rag_index.h"
#include "rag_index_format.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

struct cv_rag_index {
    void *map;       /* mmap'ed file, or NULL */
    void *copy;      /* malloc'ed copy (open_mem), or NULL */
    size_t size;
    const rag_meta *meta;
    uint32_t checksum;
    const rag_doc_rec *docs;
    const rag_chunk_rec *chunks;
    const rag_term_rec *terms;
    const uint8_t *post;
    const char *text, *strings;
    uint64_t post_size, text_size, strings_size;
    cv_rag_analyzer *an;
};

/* Decodes one LEB128 u32 from p[*i..end); -1 when truncated or too long. */
static int get_varint(const uint8_t *p, uint64_t *i, uint64_t end, uint32_t *v) {
    uint32_t r = 0;
    for (int shift = 0; shift < 35; shift += 7) {
        if (*i >= end) return -1;
        uint8_t byte = p[(*i)++];
        if (shift == 28 && byte > 0x0F) return -1; /* more than 32 bits */
        r |= (uint32_t)(byte & 0x7F) << shift;
        if (!(byte & 0x80)) {
            *v = r;
            return 0;
        }
    }
    return -1;
}

/* The search loop's decoder: one byte is the common case. */
static inline uint32_t read_varint(const uint8_t **p) {
    uint32_t v = *(*p)++;
    if (v < 0x80) return v;
    v &= 0x7F;
    for (int shift = 7;; shift += 7) {
        uint32_t b = *(*p)++;
        v |= (b & 0x7F) << shift;
        if (b < 0x80) return v;
    }
}

static int str_ok(const cv_rag_index *ix, uint32_t off, uint32_t len) {
    return (uint64_t)off + len <= ix->strings_size;
}

static cv_status check_sections(cv_rag_index *ix, const uint8_t *base, unsigned flags,
                                cv_error *err) {
    if (ix->size < sizeof(rag_header))
        return cv_errorf(err, CV_EFORMAT, "index: file is %zu bytes, smaller than the %zu-byte header",
                         ix->size, sizeof(rag_header));
    const rag_header *h = (const rag_header *)base;
    if (memcmp(h->magic, RAG_MAGIC, 8) != 0)
        return cv_errorf(err, CV_EFORMAT, "index: bad magic (not a corvid RAG index)");
    if (h->version != CV_RAG_INDEX_VERSION)
        return cv_errorf(err, CV_EUNSUPPORTED, "index: format version %u, this build reads %u",
                         h->version, CV_RAG_INDEX_VERSION);
    static const uint8_t zeros[sizeof h->pad] = {0};
    if ((h->flags & ~RAG_FLAG_CRC) || memcmp(h->pad, zeros, sizeof zeros) != 0)
        return cv_errorf(err, CV_EFORMAT, "index: unknown header flags 0x%x or non-zero padding",
                         h->flags);
    if (h->file_size != ix->size)
        return cv_errorf(err, CV_EFORMAT, "index: header file_size %llu, file is %zu bytes (truncated?)",
                         (unsigned long long)h->file_size, ix->size);
    if (h->n_sections > RAG_MAX_SECTIONS)
        return cv_errorf(err, CV_EFORMAT, "index: %u sections, limit %u", h->n_sections, RAG_MAX_SECTIONS);
    uint64_t table_end = sizeof(rag_header) + (uint64_t)h->n_sections * sizeof(rag_section);
    if (table_end > ix->size)
        return cv_errorf(err, CV_EFORMAT, "index: section table (%u entries) runs past the end",
                         h->n_sections);
    const rag_section *sec = (const rag_section *)(base + sizeof(rag_header));
    ix->checksum = (uint32_t)crc32(crc32(0, Z_NULL, 0), base, (uInt)table_end);
    const rag_section *known[RAG_SEC_COUNT + 1] = {0};
    for (uint32_t i = 0; i < h->n_sections; i++) {
        const rag_section *s = &sec[i];
        if (s->offset < table_end || s->offset % 8 || s->size > ix->size ||
            s->offset > ix->size - s->size)
            return cv_errorf(err, CV_EFORMAT,
                             "index: section %u (id %u) offset %llu size %llu: outside the file "
                             "(%zu bytes), inside the table, or not 8-byte aligned",
                             i, s->id, (unsigned long long)s->offset, (unsigned long long)s->size,
                             ix->size);
        for (uint32_t j = 0; j < i; j++) {
            const rag_section *o = &sec[j];
            if (s->size && o->size && s->offset < o->offset + o->size && o->offset < s->offset + s->size)
                return cv_errorf(err, CV_EFORMAT, "index: sections %u and %u overlap", j, i);
        }
        if (s->id == 0 || s->id > RAG_SEC_COUNT) continue; /* unknown: skipped */
        if (known[s->id])
            return cv_errorf(err, CV_EFORMAT, "index: section id %u appears twice", s->id);
        known[s->id] = s;
        if ((flags & CV_RAG_VERIFY_CRC) && (h->flags & RAG_FLAG_CRC)) {
            uLong crc = crc32(0, Z_NULL, 0);
            for (uint64_t done = 0; done < s->size;) {
                uint64_t k = s->size - done > (1u << 30) ? (1u << 30) : s->size - done;
                crc = crc32(crc, base + s->offset + done, (uInt)k);
                done += k;
            }
            if ((uint32_t)crc != s->crc)
                return cv_errorf(err, CV_EFORMAT, "index: section id %u CRC-32 %08x, expected %08x",
                                 s->id, (unsigned)crc, s->crc);
        }
    }
    for (uint32_t id = 1; id <= RAG_SEC_COUNT; id++)
        if (!known[id]) return cv_errorf(err, CV_EFORMAT, "index: required section id %u missing", id);

    if (known[RAG_SEC_META]->size != sizeof(rag_meta))
        return cv_errorf(err, CV_EFORMAT, "index: META is %llu bytes, expected %zu",
                         (unsigned long long)known[RAG_SEC_META]->size, sizeof(rag_meta));
    const rag_meta *m = (const rag_meta *)(base + known[RAG_SEC_META]->offset);
    struct { int id; uint64_t count; size_t rec; const char *name; } arrays[] = {
        {RAG_SEC_DOCS, m->n_docs, sizeof(rag_doc_rec), "DOCS"},
        {RAG_SEC_CHUNKS, m->n_chunks, sizeof(rag_chunk_rec), "CHUNKS"},
        {RAG_SEC_TERMS, m->n_terms, sizeof(rag_term_rec), "TERMS"},
        {RAG_SEC_STOPWORDS, m->n_stop, sizeof(rag_str_ref), "STOPWORDS"},
    };
    for (size_t i = 0; i < sizeof arrays / sizeof arrays[0]; i++)
        if (known[arrays[i].id]->size != arrays[i].count * arrays[i].rec)
            return cv_errorf(err, CV_EFORMAT, "index: %s is %llu bytes, expected %llu records x %zu",
                             arrays[i].name, (unsigned long long)known[arrays[i].id]->size,
                             (unsigned long long)arrays[i].count, arrays[i].rec);
    ix->meta = m;
    ix->docs = (const rag_doc_rec *)(base + known[RAG_SEC_DOCS]->offset);
    ix->chunks = (const rag_chunk_rec *)(base + known[RAG_SEC_CHUNKS]->offset);
    ix->terms = (const rag_term_rec *)(base + known[RAG_SEC_TERMS]->offset);
    ix->post = base + known[RAG_SEC_POSTINGS]->offset;
    ix->post_size = known[RAG_SEC_POSTINGS]->size;
    ix->text = (const char *)base + known[RAG_SEC_TEXT]->offset;
    ix->text_size = known[RAG_SEC_TEXT]->size;
    ix->strings = (const char *)base + known[RAG_SEC_STRINGS]->offset;
    ix->strings_size = known[RAG_SEC_STRINGS]->size;
    return CV_OK;
}

/* META's parameters, then documents and their chunks: contiguous, in order, text in
 * bounds, doc strings in bounds and valid UTF-8. */
static cv_status check_docs(const cv_rag_index *ix, cv_error *err) {
    const rag_meta *m = ix->meta;
    if (!(m->k1 >= 0 && m->k1 <= 10) || !(m->b >= 0 && m->b <= 1) ||
        !(m->avg_len > 0 && m->avg_len < 1e12))
        return cv_errorf(err, CV_EFORMAT, "index: META k1=%g b=%g avg_len=%g out of range",
                         m->k1, m->b, m->avg_len);
    uint32_t next_chunk = 0;
    for (uint32_t d = 0; d < m->n_docs; d++) {
        const rag_doc_rec *r = &ix->docs[d];
        uint32_t offs[3] = {r->id_off, r->title_off, r->url_off};
        uint32_t lens[3] = {r->id_len, r->title_len, r->url_len};
        for (int k = 0; k < 3; k++) {
            if (!str_ok(ix, offs[k], lens[k]))
                return cv_errorf(err, CV_EFORMAT, "index: doc %u string %d (offset %u, %u bytes) "
                                 "outside STRINGS (%llu bytes)", d, k, offs[k], lens[k],
                                 (unsigned long long)ix->strings_size);
            if (cv_rag_utf8_check(ix->strings + offs[k], lens[k]) != lens[k])
                return cv_errorf(err, CV_EFORMAT, "index: doc %u string %d is not valid UTF-8", d, k);
        }
        if (r->id_len == 0) return cv_errorf(err, CV_EFORMAT, "index: doc %u has an empty id", d);
        if (r->first_chunk != next_chunk || r->n_chunks > m->n_chunks - next_chunk)
            return cv_errorf(err, CV_EFORMAT, "index: doc %u chunks [%u, +%u) do not follow chunk %u "
                             "within %u chunks", d, r->first_chunk, r->n_chunks, next_chunk, m->n_chunks);
        for (uint32_t c = r->first_chunk; c < r->first_chunk + r->n_chunks; c++) {
            const rag_chunk_rec *cr = &ix->chunks[c];
            if (cr->doc != d || cr->ordinal != c - r->first_chunk)
                return cv_errorf(err, CV_EFORMAT, "index: chunk %u says doc %u ordinal %u, "
                                 "expected doc %u ordinal %u", c, cr->doc, cr->ordinal, d,
                                 c - r->first_chunk);
            if (cr->text_off > ix->text_size || cr->text_len > ix->text_size - cr->text_off)
                return cv_errorf(err, CV_EFORMAT, "index: chunk %u text (offset %llu, %u bytes) "
                                 "outside TEXT (%llu bytes)", c, (unsigned long long)cr->text_off,
                                 cr->text_len, (unsigned long long)ix->text_size);
        }
        next_chunk += r->n_chunks;
    }
    if (next_chunk != m->n_chunks)
        return cv_errorf(err, CV_EFORMAT, "index: documents cover %u chunks, META says %u",
                         next_chunk, m->n_chunks);
    return CV_OK;
}

/* Terms in strictly increasing byte order, each posting list decoded in full. */
static cv_status check_terms(const cv_rag_index *ix, cv_error *err) {
    const rag_meta *m = ix->meta;
    const rag_term_rec *prev = NULL;
    for (uint32_t t = 0; t < m->n_terms; t++) {
        const rag_term_rec *r = &ix->terms[t];
        if (r->str_len == 0 || r->str_len > CV_RAG_MAX_TERM || !str_ok(ix, r->str_off, r->str_len))
            return cv_errorf(err, CV_EFORMAT, "index: term %u string (offset %u, %u bytes) invalid",
                             t, r->str_off, r->str_len);
        if (prev) {
            uint32_t n = prev->str_len < r->str_len ? prev->str_len : r->str_len;
            int c = memcmp(ix->strings + prev->str_off, ix->strings + r->str_off, n);
            if (c > 0 || (c == 0 && prev->str_len >= r->str_len))
                return cv_errorf(err, CV_EFORMAT, "index: term %u is not after term %u", t, t - 1);
        }
        prev = r;
        if (r->df == 0 || r->df > m->n_chunks || r->post_off > ix->post_size ||
            r->post_len > ix->post_size - r->post_off)
            return cv_errorf(err, CV_EFORMAT, "index: term %u df %u postings (offset %llu, %llu "
                             "bytes) invalid for %u chunks, %llu posting bytes", t, r->df,
                             (unsigned long long)r->post_off, (unsigned long long)r->post_len,
                             m->n_chunks, (unsigned long long)ix->post_size);
        uint64_t i = r->post_off, end = r->post_off + r->post_len;
        uint64_t chunk = 0;
        for (uint32_t k = 0; k < r->df; k++) {
            uint32_t delta, tf;
            if (get_varint(ix->post, &i, end, &delta) || get_varint(ix->post, &i, end, &tf) ||
                (k > 0 && delta == 0) || tf == 0 || (chunk += delta) >= m->n_chunks)
                return cv_errorf(err, CV_EFORMAT, "index: term %u posting %u of %u is truncated, "
                                 "out of order, out of range or has tf 0", t, k, r->df);
        }
        if (i != end)
            return cv_errorf(err, CV_EFORMAT, "index: term %u postings have %llu trailing bytes", t,
                             (unsigned long long)(end - i));
    }
    return CV_OK;
}

static cv_status load_analyzer(cv_rag_index *ix, const uint8_t *base, cv_error *err) {
    const rag_header *h = (const rag_header *)base;
    const rag_section *sec = (const rag_section *)(base + sizeof(rag_header));
    const rag_str_ref *refs = NULL;
    for (uint32_t i = 0; i < h->n_sections; i++)
        if (sec[i].id == RAG_SEC_STOPWORDS) refs = (const rag_str_ref *)(base + sec[i].offset);
    uint32_t n = ix->meta->n_stop;
    char **words = calloc(n + 1, sizeof *words);
    cv_status st = CV_OK;
    if (!words) return cv_errorf(err, CV_ENOMEM, "index: out of memory for %u stopwords", n);
    for (uint32_t i = 0; i < n && !st; i++) {
        if (!str_ok(ix, refs[i].off, refs[i].len) || refs[i].len == 0 ||
            refs[i].len > CV_RAG_MAX_TERM ||
            cv_rag_utf8_check(ix->strings + refs[i].off, refs[i].len) != refs[i].len)
            st = cv_errorf(err, CV_EFORMAT, "index: stopword %u (offset %u, %u bytes) invalid", i,
                           refs[i].off, refs[i].len);
        else if (!(words[i] = strndup(ix->strings + refs[i].off, refs[i].len)))
            st = cv_errorf(err, CV_ENOMEM, "index: out of memory for stopwords");
    }
    if (!st) st = cv_rag_analyzer_create((const char *const *)words, n, &ix->an, err);
    for (uint32_t i = 0; i < n; i++) free(words[i]);
    free(words);
    return st;
}

static cv_status validate(cv_rag_index *ix, const uint8_t *base, unsigned flags, cv_error *err) {
    cv_status st = check_sections(ix, base, flags, err);
    if (!st) st = check_docs(ix, err);
    if (!st) st = check_terms(ix, err);
    if (!st) st = load_analyzer(ix, base, err);
    return st;
}

cv_status cv_rag_index_open_mem(const void *data, size_t size, unsigned flags,
                                cv_rag_index **out, cv_error *err) {
    cv_rag_index *ix = calloc(1, sizeof *ix);
    if (!ix || !(ix->copy = malloc(size ? size : 1))) {
        free(ix);
        return cv_errorf(err, CV_ENOMEM, "index: out of memory for %zu bytes", size);
    }
    memcpy(ix->copy, data, size); /* an aligned copy: records are read in place */
    ix->size = size;
    cv_status st = validate(ix, ix->copy, flags, err);
    if (st) {
        cv_rag_index_close(ix);
        return st;
    }
    *out = ix;
    return CV_OK;
}

cv_status cv_rag_index_open(const char *path, unsigned flags, cv_rag_index **out, cv_error *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return cv_errorf(err, errno == ENOENT ? CV_ENOTFOUND : CV_EIO, "opening index %s: %s",
                                 path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        close(fd);
        return cv_errorf(err, CV_EIO, "stat %s: %s", path, strerror(errno));
    }
    if ((size_t)sb.st_size < sizeof(rag_header)) {
        close(fd);
        return cv_errorf(err, CV_EFORMAT, "index %s: %lld bytes, smaller than the header", path,
                         (long long)sb.st_size);
    }
    cv_rag_index *ix = calloc(1, sizeof *ix);
    if (!ix) {
        close(fd);
        return cv_errorf(err, CV_ENOMEM, "index: out of memory");
    }
    ix->size = (size_t)sb.st_size;
    ix->map = mmap(NULL, ix->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (ix->map == MAP_FAILED) {
        ix->map = NULL;
        cv_rag_index_close(ix);
        return cv_errorf(err, CV_EIO, "mapping index %s: %s", path, strerror(errno));
    }
    cv_status st = validate(ix, ix->map, flags, err);
    if (st) {
        cv_error_wrap(err, "index %s", path);
        cv_rag_index_close(ix);
        return st;
    }
    *out = ix;
    return CV_OK;
}

cv_status cv_rag_index_open_verified(const char *path, cv_rag_index **out, cv_error *err) {
    return cv_rag_index_open(path, CV_RAG_VERIFY_CRC, out, err);
}

void cv_rag_index_close(cv_rag_index *ix) {
    if (!ix) return;
    if (ix->map) munmap(ix->map, ix->size);
    free(ix->copy);
    cv_rag_analyzer_free(ix->an);
    free(ix);
}

void cv_rag_index_info_get(const cv_rag_index *ix, cv_rag_index_info *info) {
    const rag_meta *m = ix->meta;
    *info = (cv_rag_index_info){m->n_docs, m->n_chunks, m->n_terms, m->chunk_chars,
                                m->overlap_chars, m->k1, m->b, m->avg_len, ix->checksum};
}

const cv_rag_analyzer *cv_rag_index_analyzer(const cv_rag_index *ix) { return ix->an; }

void cv_rag_index_doc(const cv_rag_index *ix, uint32_t doc, cv_rag_doc *out) {
    const rag_doc_rec *r = &ix->docs[doc];
    *out = (cv_rag_doc){{ix->strings + r->id_off, r->id_len},
                        {ix->strings + r->title_off, r->title_len},
                        {ix->strings + r->url_off, r->url_len},
                        r->first_chunk, r->n_chunks};
}

void cv_rag_index_chunk(const cv_rag_index *ix, uint32_t chunk, cv_rag_chunk *out) {
    const rag_chunk_rec *r = &ix->chunks[chunk];
    *out = (cv_rag_chunk){r->doc, r->ordinal, {ix->text + r->text_off, r->text_len}};
}

cv_status cv_rag_index_copy_into(const cv_rag_index *ix, cv_rag_builder *b, cv_error *err) {
    cv_status st = CV_OK;
    for (uint32_t d = 0; d < ix->meta->n_docs && !st; d++) {
        cv_rag_doc doc;
        cv_rag_index_doc(ix, d, &doc);
        char *id = strndup(doc.id.ptr, doc.id.len), *title = strndup(doc.title.ptr, doc.title.len),
             *url = strndup(doc.url.ptr, doc.url.len);
        const char **texts = malloc((doc.n_chunks + 1) * sizeof *texts);
        size_t *lens = malloc((doc.n_chunks + 1) * sizeof *lens);
        if (!id || !title || !url || !texts || !lens) {
            st = cv_errorf(err, CV_ENOMEM, "index: out of memory copying documents");
        } else {
            for (uint32_t k = 0; k < doc.n_chunks; k++) {
                cv_rag_chunk c;
                cv_rag_index_chunk(ix, doc.first_chunk + k, &c);
                texts[k] = c.text.ptr;
                lens[k] = c.text.len;
            }
            st = cv_rag_builder_add_chunks(b, id, title, url, texts, lens, doc.n_chunks, err);
        }
        free(id), free(title), free(url), free(texts), free(lens);
    }
    return st;
}

/* ---- search ---- */

struct cv_rag_searcher {
    const cv_rag_index *ix;
    float *score;      /* per chunk; 0 = untouched (every contribution is > 0) */
    uint32_t *touched;
    size_t n_touched;
    float *norm;       /* per chunk: k1 * (1 - b + b * len / avg_len) */
    double norm_k1, norm_b;
    cv_rag_hit *cand;  /* top-candidate heap */
};

cv_status cv_rag_searcher_create(const cv_rag_index *ix, cv_rag_searcher **out, cv_error *err) {
    size_t n = ix->meta->n_chunks + 1;
    cv_rag_searcher *s = calloc(1, sizeof *s);
    if (!s || !(s->score = calloc(n, sizeof *s->score)) ||
        !(s->touched = malloc(n * sizeof *s->touched)) || !(s->norm = malloc(n * sizeof *s->norm)) ||
        !(s->cand = malloc(n * sizeof *s->cand))) {
        cv_rag_searcher_free(s);
        return cv_errorf(err, CV_ENOMEM, "searcher: out of memory for %zu chunks", n);
    }
    s->ix = ix;
    s->norm_k1 = -1;
    *out = s;
    return CV_OK;
}

void cv_rag_searcher_free(cv_rag_searcher *s) {
    if (!s) return;
    free(s->score);
    free(s->touched);
    free(s->norm);
    free(s->cand);
    free(s);
}

typedef struct qterms {
    const cv_rag_index *ix;
    uint32_t id[256];
    uint32_t qtf[256];
    size_t n;
} qterms;

static long find_term(const cv_rag_index *ix, const char *t, size_t n) {
    size_t lo = 0, hi = ix->meta->n_terms;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const rag_term_rec *r = &ix->terms[mid];
        int c = memcmp(ix->strings + r->str_off, t, r->str_len < n ? r->str_len : n);
        if (c == 0) c = r->str_len < n ? -1 : r->str_len > n;
        if (c == 0) return (long)mid;
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return -1;
}

static void on_query_term(void *user, const char *t, size_t n) {
    qterms *q = user;
    long id = find_term(q->ix, t, n);
    if (id < 0) return;
    for (size_t i = 0; i < q->n; i++)
        if (q->id[i] == (uint32_t)id) {
            q->qtf[i]++;
            return;
        }
    if (q->n < sizeof q->id / sizeof q->id[0]) {
        q->id[q->n] = (uint32_t)id;
        q->qtf[q->n++] = 1;
    }
}

static int hit_better(const cv_rag_hit *a, const cv_rag_hit *b) {
    return a->score > b->score || (a->score == b->score && a->chunk < b->chunk);
}

/* Min-heap on "better": the root is the worst kept candidate. */
static void sift_down(cv_rag_hit *h, size_t n, size_t i) {
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && hit_better(&h[w], &h[l])) w = l;
        if (r < n && hit_better(&h[w], &h[r])) w = r;
        if (w == i) return;
        cv_rag_hit t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

static int hit_cmp(const void *a, const void *b) {
    return hit_better(a, b) ? -1 : hit_better(b, a);
}

/* The best m touched chunks, sorted best first, into s->cand. */
static size_t top_m(cv_rag_searcher *s, size_t m) {
    size_t n = 0;
    for (size_t i = 0; i < s->n_touched; i++) {
        uint32_t c = s->touched[i];
        cv_rag_hit h = {c, 0, s->score[c]};
        /* Most chunks lose against the heap's root: decide on the score before touching
         * the chunk record (a cache miss per chunk on large indexes). */
        if (n == m && !hit_better(&h, &s->cand[0])) continue;
        h.doc = s->ix->chunks[c].doc;
        if (n < m) {
            s->cand[n++] = h;
            if (n == m)
                for (size_t k = m / 2 + 1; k-- > 0;) sift_down(s->cand, n, k);
        } else {
            s->cand[0] = h;
            sift_down(s->cand, n, 0);
        }
    }
    qsort(s->cand, n, sizeof *s->cand, hit_cmp);
    return n;
}

cv_status cv_rag_search(cv_rag_searcher *s, const cv_rag_search_opts *opts, const char *query,
                        size_t len, cv_rag_hit *hits, size_t k, size_t *n_hits, cv_error *err) {
    const cv_rag_index *ix = s->ix;
    const rag_meta *m = ix->meta;
    double k1 = opts && opts->k1 >= 0 ? opts->k1 : m->k1, b = opts && opts->b >= 0 ? opts->b : m->b;
    uint32_t per_doc = opts ? opts->max_per_doc : 0;
    *n_hits = 0;
    if (k == 0) return CV_OK;
    if (k1 > 10 || b > 1)
        return cv_errorf(err, CV_ERANGE, "search: k1=%g b=%g, need k1 <= 10 and b <= 1", k1, b);
    if (k1 != s->norm_k1 || b != s->norm_b) {
        for (uint32_t c = 0; c < m->n_chunks; c++)
            s->norm[c] = (float)(k1 * (1 - b + b * ix->chunks[c].n_terms / m->avg_len));
        s->norm_k1 = k1;
        s->norm_b = b;
    }
    qterms q = {.ix = ix};
    cv_rag_analyze(ix->an, query, len, on_query_term, &q);
    /* Locals, so that the compiler keeps them in registers across the score stores. */
    float *restrict score = s->score;
    const float *restrict norm = s->norm;
    uint32_t *restrict touched = s->touched;
    size_t n_touched = 0;
    for (size_t t = 0; t < q.n; t++) {
        const rag_term_rec *r = &ix->terms[q.id[t]];
        float w = (float)(q.qtf[t] * log(1 + (m->n_chunks - r->df + 0.5) / (r->df + 0.5)) * (k1 + 1));
        const uint8_t *p = ix->post + r->post_off; /* validated on open: no bounds checks */
        uint32_t chunk = 0;
        for (uint32_t k = 0; k < r->df; k++) {
            uint32_t delta = read_varint(&p), tf = read_varint(&p);
            chunk += delta;
            float old = score[chunk];
            if (old == 0) touched[n_touched++] = chunk;
            score[chunk] = old + w * (float)tf / ((float)tf + norm[chunk]);
        }
    }
    s->n_touched = n_touched;
    size_t want = per_doc ? k * 4 : k;
    for (;;) {
        size_t n = top_m(s, want), got = 0;
        for (size_t i = 0; i < n && got < k; i++) {
            size_t same = 0;
            for (size_t j = 0; per_doc && j < got; j++) same += hits[j].doc == s->cand[i].doc;
            if (!per_doc || same < per_doc) hits[got++] = s->cand[i];
        }
        *n_hits = got;
        if (got == k || n == s->n_touched) break;
        want *= 4;
    }
    for (size_t i = 0; i < s->n_touched; i++) s->score[s->touched[i]] = 0;
    s->n_touched = 0;
    return CV_OK;
}
