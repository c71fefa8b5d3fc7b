#include "grammar_match.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "grammar_util.h"
#include "timing.h"

/* ---- the vocabulary trie ---- */

typedef struct tnode {
    int32_t first_child, next_sibling;
    int32_t token;      /* first token whose bytes end here, -1 when none */
    uint8_t byte;       /* on the edge from the parent */
} tnode;

struct cv_gvocab {
    int32_t n_vocab, n_words;
    tnode *nodes;       /* nodes[0] is the root; children in byte order */
    int32_t n_nodes;
    int32_t *tok_next;  /* further tokens with the same bytes */
    int32_t *ends;      /* the end tokens */
    int32_t n_ends;
    char *bytes;        /* token i's bytes: bytes[off[i] .. off[i + 1]) */
    size_t *off;
    char *texts;        /* a token without bytes: its text, texts[toff[i] .. toff[i + 1]) */
    size_t *toff;
    int32_t max_len;    /* the longest token's bytes: the trie's depth */
};

static const char *const *sort_pieces;
static const size_t *sort_lens;

static int cmp_tokens(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    size_t lx = sort_lens[x], ly = sort_lens[y];
    int c = memcmp(sort_pieces[x], sort_pieces[y], lx < ly ? lx : ly);
    if (c) return c;
    return lx < ly ? -1 : lx > ly ? 1 : (x > y) - (x < y);
}

cv_status cv_gvocab_new(int32_t n_vocab, const char *const *pieces, const size_t *lens,
                        const uint8_t *is_end, const char *const *texts, const size_t *text_lens,
                        cv_gvocab **out, cv_error *err) {
    *out = NULL;
    if (n_vocab <= 0) return cv_errorf(err, CV_EINVAL, "grammar vocabulary: %d tokens", (int)n_vocab);
    cv_gvocab *v = calloc(1, sizeof *v);
    int32_t *order = malloc((size_t)n_vocab * sizeof *order);
    size_t total = 1;
    for (int32_t i = 0; i < n_vocab; i++) total += lens[i];
    if (!v || !order) goto oom;
    v->n_vocab = n_vocab;
    v->n_words = (n_vocab + 63) / 64;
    v->nodes = malloc(total * sizeof *v->nodes);
    v->tok_next = malloc((size_t)n_vocab * sizeof *v->tok_next);
    v->ends = malloc((size_t)n_vocab * sizeof *v->ends);
    v->bytes = malloc(total);
    v->off = malloc(((size_t)n_vocab + 1) * sizeof *v->off);
    if (!v->nodes || !v->tok_next || !v->ends || !v->bytes || !v->off) goto oom;
    size_t text_total = 1;
    for (int32_t i = 0; texts && i < n_vocab; i++) text_total += lens[i] ? 0 : text_lens[i];
    v->texts = malloc(text_total);
    v->toff = malloc(((size_t)n_vocab + 1) * sizeof *v->toff);
    if (!v->texts || !v->toff) goto oom;
    v->toff[0] = 0;
    for (int32_t i = 0; i < n_vocab; i++) {
        size_t tl = texts && !lens[i] ? text_lens[i] : 0;
        if (tl) memcpy(v->texts + v->toff[i], texts[i], tl);
        v->toff[i + 1] = v->toff[i] + tl;
    }
    v->off[0] = 0;
    for (int32_t i = 0; i < n_vocab; i++) {
        memcpy(v->bytes + v->off[i], pieces[i], lens[i]);
        if (lens[i] > (size_t)v->max_len) v->max_len = lens[i] > INT32_MAX / 2 ? INT32_MAX / 2 : (int32_t)lens[i];
        v->off[i + 1] = v->off[i] + lens[i];
        order[i] = i;
        v->tok_next[i] = -1;
        if (is_end[i]) v->ends[v->n_ends++] = i;
    }
    /* Sorted by bytes, the tokens build the trie in one pass along the previous
     * token's path: children are created in byte order. (qsort's comparator needs the
     * arrays through statics; building a vocabulary is not reentrant, and happens once
     * per model load.) */
    sort_pieces = pieces;
    sort_lens = lens;
    qsort(order, (size_t)n_vocab, sizeof *order, cmp_tokens);
    v->nodes[0] = (tnode){-1, -1, -1, 0};
    v->n_nodes = 1;
    int32_t *path = malloc(total * sizeof *path); /* path[d]: node at depth d of the last token */
    int32_t *last_child = malloc(total * sizeof *last_child);
    if (!path || !last_child) {
        free(path);
        free(last_child);
        goto oom;
    }
    path[0] = 0;
    last_child[0] = -1;
    size_t depth = 0; /* of the previous token's path */
    const char *prev = NULL;
    for (int32_t k = 0; k < n_vocab; k++) {
        int32_t t = order[k];
        size_t len = lens[t];
        if (len == 0) continue;
        size_t common = 0;
        while (prev && common < depth && common < len && pieces[t][common] == prev[common]) common++;
        for (size_t d = common; d < len; d++) {
            int32_t n = v->n_nodes++;
            v->nodes[n] = (tnode){-1, -1, -1, (uint8_t)pieces[t][d]};
            int32_t parent = path[d];
            if (last_child[d] < 0) v->nodes[parent].first_child = n;
            else v->nodes[last_child[d]].next_sibling = n;
            last_child[d] = n;
            path[d + 1] = n;
            last_child[d + 1] = -1;
        }
        tnode *end = &v->nodes[path[len]];
        if (end->token < 0) {
            end->token = t;
        } else {
            int32_t *p = &end->token;
            while (*p >= 0) p = &v->tok_next[*p];
            *p = t;
        }
        prev = pieces[t];
        depth = len;
    }
    free(path);
    free(last_child);
    free(order);
    *out = v;
    return CV_OK;
oom:
    free(order);
    cv_gvocab_free(v);
    return cv_errorf(err, CV_ENOMEM, "grammar vocabulary: out of memory for %d tokens", (int)n_vocab);
}

void cv_gvocab_free(cv_gvocab *v) {
    if (!v) return;
    free(v->nodes);
    free(v->tok_next);
    free(v->ends);
    free(v->bytes);
    free(v->off);
    free(v->texts);
    free(v->toff);
    free(v);
}

int32_t cv_gvocab_n_vocab(const cv_gvocab *v) { return v->n_vocab; }

/* ---- stacks and configurations ---- */

/* A stack node: a position in the grammar's element stream and the node below it (the
 * return position); node 0 is the empty stack. Nodes are hash-consed, so a stack is
 * identified by the id of its top. A configuration is the sorted set of its stacks'
 * tops (every top at a byte set, or 0 for "the root is complete"). */
typedef struct cfg {
    int32_t start, len;  /* into the pool */
    int32_t *trans;      /* 256 transitions, -1 while unknown; NULL until first needed */
    uint64_t *mask;      /* NULL until first asked */
    bool accepting;
} cfg;

struct cv_gdfa {
    cv_grammar *g;
    const cv_gvocab *v;
    atomic_int refs;
    atomic_size_t bytes;   /* what the tables below hold, roughly */
    int32_t *npos, *nparent;
    uint32_t *stamp;       /* per node: the closure that last visited it */
    int32_t n_nodes, cap_nodes;
    int32_t *node_index;   /* open addressing: node id + 1 */
    size_t node_cap;
    cfg *cfgs;             /* cfgs[0]: the dead configuration (no stack) */
    int32_t n_cfgs, cap_cfgs;
    int32_t *cfg_index;    /* open addressing: config id + 1 */
    size_t cfg_index_cap;
    int32_t *pool;
    size_t pool_len, pool_cap;
    uint32_t cur_stamp;
    int32_t *work, *out;   /* closure scratch */
    size_t work_cap, out_cap;
    struct walk {
        int32_t node, cfg;
        const int32_t *tr;
    } *walk;               /* mask scratch: the trie DFS, one frame per depth */
    size_t walk_cap;
    int32_t *tok_id;       /* per token terminal of g: the token it names */
    int32_t start;         /* the configuration before any text */
    uint64_t *none;        /* the all-zero mask after the end */
    uint64_t masks_computed, masks_precomputed;
    int32_t *succ;         /* precompute scratch: configurations a mask walk reached */
    size_t n_succ, succ_cap;
    size_t walked;         /* trie nodes the last mask walk visited */
};

struct cv_gmatch {
    cv_gdfa *d;
    int32_t state;
    bool ended;
    uint64_t masks_asked;
};



static size_t node_hash(int32_t pos, int32_t parent) {
    return (size_t)cv_gu_mix(((uint64_t)(uint32_t)pos << 32) ^ (uint32_t)parent);
}

static bool node_rehash(cv_gdfa *m, size_t cap) {
    int32_t *t = calloc(cap, sizeof *t);
    if (!t) return false;
    for (int32_t i = 1; i < m->n_nodes; i++) {
        size_t h = node_hash(m->npos[i], m->nparent[i]) & (cap - 1);
        while (t[h]) h = (h + 1) & (cap - 1);
        t[h] = i + 1;
    }
    free(m->node_index);
    m->node_index = t;
    m->node_cap = cap;
    return true;
}

/* The node (pos, parent); -1 when out of memory or over CV_GMATCH_MAX_NODES. */
static int32_t node(cv_gdfa *m, int32_t pos, int32_t parent) {
    if ((size_t)(m->n_nodes + 1) * 2 > m->node_cap && !node_rehash(m, m->node_cap * 2)) return -1;
    size_t h = node_hash(pos, parent) & (m->node_cap - 1);
    for (; m->node_index[h]; h = (h + 1) & (m->node_cap - 1)) {
        int32_t n = m->node_index[h] - 1;
        if (m->npos[n] == pos && m->nparent[n] == parent) return n;
    }
    if (m->n_nodes >= CV_GMATCH_MAX_NODES) return -1;
    if (m->n_nodes == m->cap_nodes) {
        size_t c = (size_t)m->cap_nodes * 2;
        int32_t *a = realloc(m->npos, c * sizeof *a);
        if (a) m->npos = a;
        int32_t *b = realloc(m->nparent, c * sizeof *b);
        if (b) m->nparent = b;
        uint32_t *s = realloc(m->stamp, c * sizeof *s);
        if (s) m->stamp = s;
        if (!a || !b || !s) return -1;
        memset(m->stamp + m->cap_nodes, 0, (c - (size_t)m->cap_nodes) * sizeof *s);
        m->cap_nodes = (int32_t)c;
    }
    int32_t n = m->n_nodes++;
    m->npos[n] = pos;
    m->nparent[n] = parent;
    m->node_index[h] = n + 1;
    atomic_fetch_add(&m->bytes, 3 * sizeof(int32_t));
    return n;
}

static size_t set_hash(const int32_t *v, int32_t n) {
    uint64_t h = (uint64_t)n;
    for (int32_t i = 0; i < n; i++) h = cv_gu_mix(h ^ (uint32_t)v[i]) + 0x9e3779b97f4a7c15ULL;
    return (size_t)h;
}

static bool cfg_rehash(cv_gdfa *m, size_t cap) {
    int32_t *t = calloc(cap, sizeof *t);
    if (!t) return false;
    for (int32_t i = 1; i < m->n_cfgs; i++) {
        size_t h = set_hash(m->pool + m->cfgs[i].start, m->cfgs[i].len) & (cap - 1);
        while (t[h]) h = (h + 1) & (cap - 1);
        t[h] = i + 1;
    }
    free(m->cfg_index);
    m->cfg_index = t;
    m->cfg_index_cap = cap;
    return true;
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* The configuration of the stack tops in m->out[0..n) (sorted here); 0 when n == 0,
 * -1 when out of memory. */
static int32_t intern_cfg(cv_gdfa *m, size_t n) {
    if (n == 0) return 0;
    qsort(m->out, n, sizeof *m->out, cmp_i32);
    if ((size_t)(m->n_cfgs + 1) * 2 > m->cfg_index_cap && !cfg_rehash(m, m->cfg_index_cap * 2)) return -1;
    size_t h = set_hash(m->out, (int32_t)n) & (m->cfg_index_cap - 1);
    for (; m->cfg_index[h]; h = (h + 1) & (m->cfg_index_cap - 1)) {
        const cfg *c = &m->cfgs[m->cfg_index[h] - 1];
        if ((size_t)c->len == n && !memcmp(m->pool + c->start, m->out, n * sizeof *m->out))
            return m->cfg_index[h] - 1;
    }
    size_t cc = (size_t)m->cap_cfgs;
    if (!cv_gu_grow((void **)&m->cfgs, &cc, (size_t)m->n_cfgs + 1, sizeof *m->cfgs)) return -1;
    m->cap_cfgs = (int32_t)cc;
    if (!cv_gu_grow((void **)&m->pool, &m->pool_cap, m->pool_len + n, sizeof *m->pool)) return -1;
    memcpy(m->pool + m->pool_len, m->out, n * sizeof *m->out);
    int32_t id = m->n_cfgs++;
    m->cfgs[id] = (cfg){(int32_t)m->pool_len, (int32_t)n, NULL, NULL, m->out[0] == 0};
    m->pool_len += n;
    m->cfg_index[h] = id + 1;
    atomic_fetch_add(&m->bytes, sizeof(cfg) + n * sizeof(int32_t));
    return id;
}

static bool push_work(cv_gdfa *m, size_t *n, int32_t node) {
    if (node < 0 || !cv_gu_grow((void **)&m->work, &m->work_cap, *n + 1, sizeof *m->work)) return false;
    m->work[(*n)++] = node;
    return true;
}

/* Expands the nodes in m->work[0..n_work) until every stack's top is at a byte set (or
 * the stack is empty), appending the distinct tops to m->out; returns their number,
 * -1 when out of memory, -2 over CV_GMATCH_MAX_STACKS. */
static long closure(cv_gdfa *m, size_t n_work) {
    const cv_grammar *g = m->g;
    size_t n_out = 0;
    if (++m->cur_stamp == 0) { /* wrapped: forget every stamp */
        memset(m->stamp, 0, (size_t)m->cap_nodes * sizeof *m->stamp);
        m->cur_stamp = 1;
    }
    while (n_work) {
        int32_t n = m->work[--n_work];
        if (m->stamp[n] == m->cur_stamp) continue;
        m->stamp[n] = m->cur_stamp;
        int32_t e = n == 0 ? CV_GEL_END : g->el[m->npos[n]];
        if (n == 0 || e >= 0 || CV_GEL_IS_TOKEN(e)) {
            if (n_out == CV_GMATCH_MAX_STACKS) return -2;
            if (!cv_gu_grow((void **)&m->out, &m->out_cap, n_out + 1, sizeof *m->out)) return -1;
            m->out[n_out++] = n;
        } else if (e == CV_GEL_END) {
            /* The parent's position is where the rule returns to. */
            if (!push_work(m, &n_work, m->nparent[n])) return -1;
        } else {
            int32_t r = CV_GEL_RULE(e), pos = m->npos[n];
            /* A reference last in its alternative returns straight to the caller's
             * caller: right recursion runs in constant depth. */
            int32_t base = g->el[pos + 1] == CV_GEL_END ? m->nparent[n] : node(m, pos + 1, m->nparent[n]);
            if (base < 0) return -1;
            for (int32_t a = g->rule_alt[r]; a < g->rule_alt[r + 1]; a++)
                if (!push_work(m, &n_work, node(m, g->alt[a], base))) return -1;
        }
    }
    return (long)n_out;
}

static cv_status closure_err(long r, cv_error *err) {
    if (r == -2)
        return cv_errorf(err, CV_ERANGE, "grammar: more than %d ways to continue the text at once "
                         "(the grammar is too ambiguous)", CV_GMATCH_MAX_STACKS);
    return cv_errorf(err, CV_ENOMEM, "grammar: out of memory (or over %d stack nodes)", CV_GMATCH_MAX_NODES);
}

/* The configuration after byte b (b >= 0) or control token t (b < 0) from configuration
 * c: each live node whose element takes it moves one on, then the closure is interned.
 * A token no terminal names leads nowhere (0) without interning; -1 (err set) on failure. */
static int32_t successor(cv_gdfa *m, int32_t c, int b, int32_t t, cv_error *err) {
    size_t n_work = 0;
    const int32_t start = m->cfgs[c].start, len = m->cfgs[c].len;
    for (int32_t i = 0; i < len; i++) {
        int32_t n = m->pool[start + i];
        if (n == 0) continue;
        int32_t pos = m->npos[n], e = m->g->el[pos];
        int takes = b >= 0 ? e >= 0 && cv_grammar_set_has(m->g, e, (uint8_t)b)
                           : CV_GEL_IS_TOKEN(e) && m->tok_id[CV_GEL_TOKEN_INDEX(e)] == t;
        if (takes && !push_work(m, &n_work, node(m, pos + 1, m->nparent[n]))) return closure_err(-1, err), -1;
    }
    if (!n_work && b < 0) return 0;
    long k = closure(m, n_work);
    if (k < 0) return closure_err(k, err), -1;
    int32_t next = intern_cfg(m, (size_t)k);
    if (next < 0) return closure_err(-1, err), -1;
    return next;
}

/* The configuration after byte b from configuration c; -1 (err set) on failure. */
static int32_t step(cv_gdfa *m, int32_t c, uint8_t b, cv_error *err) {
    if (c == 0) return 0;
    if (!m->cfgs[c].trans) {
        int32_t *t = malloc(256 * sizeof *t);
        if (!t) return closure_err(-1, err), -1;
        memset(t, 0xff, 256 * sizeof *t);
        m->cfgs[c].trans = t;
        atomic_fetch_add(&m->bytes, 256 * sizeof *t);
    }
    int32_t known = m->cfgs[c].trans[b];
    if (known >= 0) return known;
    int32_t next = successor(m, c, b, -1, err);
    if (next >= 0) m->cfgs[c].trans[b] = next; /* cfgs may have moved: index again */
    return next;
}

/* The configuration after token t from configuration c by the token terminals that
 * name it: 0 when none does, -1 (err set) on failure. Not cached: only control tokens
 * come this way, and rarely. */
static int32_t token_step(cv_gdfa *m, int32_t c, int32_t t, cv_error *err) {
    return successor(m, c, -1, t, err);
}

/* The token each terminal of g names in v. */
static cv_status resolve_tokens(cv_gdfa *m, cv_error *err) {
    const cv_grammar *g = m->g;
    const cv_gvocab *v = m->v;
    if (!g->n_toks) return CV_OK;
    if (!(m->tok_id = malloc((size_t)g->n_toks * sizeof *m->tok_id))) return closure_err(-1, err);
    for (int32_t k = 0; k < g->n_toks; k++) {
        const cv_gtoken *t = &g->toks[k];
        int32_t id = t->id, found = 0;
        if (id >= v->n_vocab)
            return cv_errorf(err, CV_EINVAL, "grammar: token <[%d]> is outside the vocabulary (%d tokens)", (int)id,
                             (int)v->n_vocab);
        for (int32_t i = 0; id < 0 && i < v->n_vocab; i++) {
            /* a control token by the text it has in templates; another by its bytes */
            size_t bl = v->off[i + 1] - v->off[i], tl = v->toff[i + 1] - v->toff[i];
            const char *b = bl ? v->bytes + v->off[i] : v->texts + v->toff[i];
            size_t l = bl ? bl : tl;
            if (l == t->len && memcmp(b, t->text, l) == 0) m->tok_id[k] = i, found++;
        }
        if (id < 0 && found != 1)
            return cv_errorf(err, CV_EINVAL, "grammar: the token terminal <%.*s> names %s", (int)t->len, t->text,
                             found ? "several tokens" : "no token of this model");
        if (id >= 0) m->tok_id[k] = id;
        for (int32_t i = 0; i < v->n_ends; i++)
            if (v->ends[i] == m->tok_id[k])
                return cv_errorf(err, CV_EINVAL, "grammar: token %d is an end-of-generation token; a grammar ends "
                                 "where it is complete, not with a terminal", (int)m->tok_id[k]);
    }
    return CV_OK;
}

cv_status cv_gdfa_new(cv_grammar *g, const cv_gvocab *v, cv_gdfa **out, cv_error *err) {
    *out = NULL;
    cv_gdfa *m = calloc(1, sizeof *m);
    if (!m) {
        cv_grammar_free(g);
        return closure_err(-1, err);
    }
    m->g = g;
    m->v = v;
    atomic_init(&m->refs, 1);
    m->cap_nodes = 1024;
    m->npos = malloc((size_t)m->cap_nodes * sizeof *m->npos);
    m->nparent = malloc((size_t)m->cap_nodes * sizeof *m->nparent);
    m->stamp = calloc((size_t)m->cap_nodes, sizeof *m->stamp);
    m->none = calloc((size_t)v->n_words, sizeof *m->none);
    m->cap_cfgs = 64;
    m->cfgs = calloc((size_t)m->cap_cfgs, sizeof *m->cfgs);
    if (!m->npos || !m->nparent || !m->stamp || !m->none || !m->cfgs || !node_rehash(m, 2048) ||
        !cfg_rehash(m, 128))
        goto oom;
    m->npos[0] = -1;
    m->nparent[0] = 0;
    m->n_nodes = 1;
    m->n_cfgs = 1; /* the dead configuration */
    cv_status rst = resolve_tokens(m, err);
    if (rst != CV_OK) {
        cv_gdfa_unref(m);
        return rst;
    }
    size_t n_work = 0;
    for (int32_t a = g->rule_alt[g->root]; a < g->rule_alt[g->root + 1]; a++)
        if (!push_work(m, &n_work, node(m, g->alt[a], 0))) goto oom;
    long k = closure(m, n_work);
    if (k < 0) {
        cv_status st = closure_err(k, err);
        cv_gdfa_unref(m);
        return st;
    }
    if ((m->start = intern_cfg(m, (size_t)k)) < 0) goto oom;
    *out = m;
    return CV_OK;
oom:
    cv_gdfa_unref(m);
    return closure_err(-1, err);
}

cv_gdfa *cv_gdfa_ref(cv_gdfa *d) {
    atomic_fetch_add(&d->refs, 1);
    return d;
}

void cv_gdfa_unref(cv_gdfa *m) {
    if (!m || atomic_fetch_sub(&m->refs, 1) != 1) return;
    for (int32_t i = 0; i < m->n_cfgs; i++) {
        free(m->cfgs[i].trans);
        free(m->cfgs[i].mask);
    }
    free(m->cfgs);
    free(m->cfg_index);
    free(m->pool);
    free(m->npos);
    free(m->nparent);
    free(m->stamp);
    free(m->node_index);
    free(m->work);
    free(m->out);
    free(m->walk);
    free(m->none);
    free(m->tok_id);
    cv_grammar_free(m->g);
    free(m);
}

size_t cv_gdfa_bytes(const cv_gdfa *d) { return atomic_load(&((cv_gdfa *)d)->bytes); }

cv_status cv_gmatch_start(cv_gdfa *d, cv_gmatch **out, cv_error *err) {
    *out = calloc(1, sizeof **out);
    if (!*out) return closure_err(-1, err);
    (*out)->d = cv_gdfa_ref(d);
    (*out)->state = d->start;
    return CV_OK;
}

void cv_gmatch_free(cv_gmatch *m) {
    if (!m) return;
    cv_gdfa_unref(m->d);
    free(m);
}

/* Walks the token trie from configuration c, one cached transition per edge; a
 * subtree is skipped as soon as the grammar rejects its prefix. */
static cv_status compute_mask(cv_gdfa *m, int32_t c, uint64_t *mask, bool want_succ, cv_error *err) {
    const cv_gvocab *v = m->v;
    const tnode *nodes = v->nodes;
    /* One frame per depth (a token's length bounds it): the next child to visit and
     * the configuration with its transition table after the path so far. */
    if (!cv_gu_grow((void **)&m->walk, &m->walk_cap, (size_t)v->max_len + 1, sizeof *m->walk))
        return closure_err(-1, err);
    struct walk *f = m->walk;
    int depth = 0;
    m->walked = 0;
    f[0] = (struct walk){nodes[0].first_child, c, m->cfgs[c].trans};
    while (depth >= 0) {
        struct walk *w = &f[depth];
        int32_t ch = w->node;
        if (ch < 0) {
            depth--;
            continue;
        }
        const tnode *t = &nodes[ch];
        w->node = t->next_sibling;
        m->walked++;
        int32_t next;
        if (w->tr && w->tr[t->byte] >= 0) {
            next = w->tr[t->byte];
        } else {
            if ((next = step(m, w->cfg, t->byte, err)) < 0) return err ? err->code : CV_ENOMEM;
            w->tr = m->cfgs[w->cfg].trans; /* allocated by step, stable from now on */
        }
        if (next == 0) continue;
        for (int32_t tok = t->token; tok >= 0; tok = v->tok_next[tok]) mask[tok >> 6] |= 1ULL << (tok & 63);
        if (want_succ && t->token >= 0) {
            if (!cv_gu_grow((void **)&m->succ, &m->succ_cap, m->n_succ + 1, sizeof *m->succ))
                return closure_err(-1, err);
            m->succ[m->n_succ++] = next;
        }
        if (t->first_child >= 0) f[++depth] = (struct walk){t->first_child, next, m->cfgs[next].trans};
    }
    if (m->cfgs[c].accepting)
        for (int32_t i = 0; i < v->n_ends; i++) mask[v->ends[i] >> 6] |= 1ULL << (v->ends[i] & 63);
    for (int32_t i = 0; i < m->cfgs[c].len; i++) {
        int32_t n = m->pool[m->cfgs[c].start + i], e = n ? m->g->el[m->npos[n]] : 0;
        if (CV_GEL_IS_TOKEN(e)) {
            int32_t t = m->tok_id[CV_GEL_TOKEN_INDEX(e)];
            mask[t >> 6] |= 1ULL << (t & 63);
            int32_t next = want_succ ? token_step(m, c, t, err) : 0;
            if (next < 0) return err ? err->code : CV_ENOMEM;
            if (next > 0) {
                if (!cv_gu_grow((void **)&m->succ, &m->succ_cap, m->n_succ + 1, sizeof *m->succ))
                    return closure_err(-1, err);
                m->succ[m->n_succ++] = next;
            }
        }
    }
    return CV_OK;
}

/* Configuration c's mask, computed when it has none (its successors into d->succ when
 * want_succ). */
static cv_status ensure_mask(cv_gdfa *d, int32_t c, bool want_succ, cv_error *err) {
    if (d->cfgs[c].mask) return CV_OK;
    uint64_t *bits = calloc((size_t)d->v->n_words, sizeof *bits);
    if (!bits) return closure_err(-1, err);
    cv_status st = compute_mask(d, c, bits, want_succ, err);
    if (st != CV_OK) {
        free(bits);
        return st;
    }
    d->cfgs[c].mask = bits;
    d->masks_computed++;
    atomic_fetch_add(&d->bytes, (size_t)d->v->n_words * sizeof *bits);
    return CV_OK;
}

cv_status cv_gmatch_mask(cv_gmatch *m, const uint64_t **mask, cv_error *err) {
    cv_gdfa *d = m->d;
    m->masks_asked++;
    if (m->ended) {
        *mask = d->none;
        return CV_OK;
    }
    cv_status st = ensure_mask(d, m->state, false, err);
    if (st != CV_OK) return st;
    *mask = d->cfgs[m->state].mask;
    return CV_OK;
}

/* The precompute's frontier: a binary heap of configurations by the cost of the
 * cheapest path found to them. */
typedef struct pq {
    struct pq_item {
        float cost;
        int32_t cfg;
    } *v;
    size_t n, cap;
} pq;

static bool pq_push(pq *q, float cost, int32_t cfg) {
    if (!cv_gu_grow((void **)&q->v, &q->cap, q->n + 1, sizeof *q->v)) return false;
    size_t i = q->n++;
    for (; i && q->v[(i - 1) / 2].cost > cost; i = (i - 1) / 2) q->v[i] = q->v[(i - 1) / 2];
    q->v[i] = (struct pq_item){cost, cfg};
    return true;
}

static struct pq_item pq_pop(pq *q) {
    struct pq_item top = q->v[0], last = q->v[--q->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= q->n) break;
        if (c + 1 < q->n && q->v[c + 1].cost < q->v[c].cost) c++;
        if (q->v[c].cost >= last.cost) break;
        q->v[i] = q->v[c];
        i = c;
    }
    if (q->n) q->v[i] = last;
    return top;
}

/* Configurations are taken cheapest path first, a path's cost the sum over its tokens
 * of log2(tokens allowed / tokens leading where it went): a step most tokens take (more
 * of a string) costs little, one few take (closing it) more, one forced nothing. So the
 * budget goes where generations are likely to go, deep into strings and along the
 * structure alike, rather than breadth first through every prefix of every field. */
cv_status cv_gdfa_precompute(cv_gdfa *d, int32_t max_masks, double max_seconds, size_t cheap_nodes,
                             cv_error *err) {
    double t0 = cv_seconds();
    pq q = {0};
    float *best = NULL;
    size_t best_cap = 0;
    cv_status st = CV_OK;
    int32_t done = 0;
    if (!pq_push(&q, 0, d->start)) goto oom;
    while (q.n && done < max_masks && cv_seconds() - t0 < max_seconds) {
        struct pq_item it = pq_pop(&q);
        int32_t c = it.cfg;
        if (d->cfgs[c].mask || (c < (int32_t)best_cap && best[c] < it.cost)) continue;
        d->n_succ = 0;
        if ((st = ensure_mask(d, c, true, err)) != CV_OK) goto out;
        size_t old = best_cap;
        if (!cv_gu_grow((void **)&best, &best_cap, (size_t)d->n_cfgs, sizeof *best)) goto oom;
        for (size_t i = old; i < best_cap; i++) best[i] = INFINITY;
        if (d->walked < cheap_nodes) {
            /* a mask that costs microseconds is left to the step that needs it (the
             * budget's memory goes to the walks through most of the vocabulary) */
            free(d->cfgs[c].mask);
            d->cfgs[c].mask = NULL;
            d->masks_computed--;
            atomic_fetch_sub(&d->bytes, (size_t)d->v->n_words * sizeof(uint64_t));
            best[c] = -INFINITY; /* explored */
        } else {
            d->masks_precomputed++;
            done++;
        }
        qsort(d->succ, d->n_succ, sizeof *d->succ, cmp_i32);
        for (size_t i = 0, j; i < d->n_succ; i = j) {
            for (j = i; j < d->n_succ && d->succ[j] == d->succ[i]; j++) {}
            int32_t s = d->succ[i];
            float cost = it.cost + (float)log2((double)d->n_succ / (double)(j - i));
            if (d->cfgs[s].mask || best[s] <= cost) continue;
            best[s] = cost;
            if (!pq_push(&q, cost, s)) goto oom;
        }
    }
    goto out;
oom:
    st = closure_err(-1, err);
out:
    free(q.v);
    free(best);
    free(d->succ);
    d->succ = NULL;
    d->n_succ = d->succ_cap = 0;
    return st;
}

static cv_status advance(cv_gmatch *m, const char *s, size_t n, int32_t *out, cv_error *err) {
    int32_t c = m->state;
    for (size_t i = 0; i < n && c > 0; i++)
        if ((c = step(m->d, c, (uint8_t)s[i], err)) < 0) return err ? err->code : CV_ENOMEM;
    *out = c;
    return CV_OK;
}

cv_status cv_gmatch_accept_bytes(cv_gmatch *m, const char *s, size_t n, cv_error *err) {
    int32_t c = 0;
    if (m->ended) return cv_errorf(err, CV_EINVAL, "grammar: text after the end");
    cv_status st = advance(m, s, n, &c, err);
    if (st != CV_OK) return st;
    if (c == 0) return cv_errorf(err, CV_EINVAL, "grammar: the text is not allowed here");
    m->state = c;
    return CV_OK;
}

cv_status cv_gmatch_accept_token(cv_gmatch *m, int32_t token, cv_error *err) {
    const cv_gvocab *v = m->d->v;
    if (token < 0 || token >= v->n_vocab)
        return cv_errorf(err, CV_EINVAL, "grammar: token %d is outside the vocabulary", (int)token);
    if (m->ended) return cv_errorf(err, CV_EINVAL, "grammar: token %d after the end", (int)token);
    for (int32_t i = 0; i < v->n_ends; i++) {
        if (v->ends[i] != token) continue;
        if (!m->d->cfgs[m->state].accepting)
            return cv_errorf(err, CV_EINVAL, "grammar: end token %d before the grammar is complete", (int)token);
        m->ended = true;
        return CV_OK;
    }
    size_t len = v->off[token + 1] - v->off[token];
    int32_t c = m->d->tok_id ? token_step(m->d, m->state, token, err) : 0;
    if (c < 0) return err ? err->code : CV_ENOMEM;
    cv_status st = len && !c ? advance(m, v->bytes + v->off[token], len, &c, err) : CV_OK;
    if (st != CV_OK) return st;
    if (c == 0) return cv_errorf(err, CV_EINVAL, "grammar: token %d is not allowed here", (int)token);
    m->state = c;
    return CV_OK;
}

bool cv_gmatch_accepting(const cv_gmatch *m) { return !m->ended && m->d->cfgs[m->state].accepting; }
bool cv_gmatch_ended(const cv_gmatch *m) { return m->ended; }

void cv_gmatch_get_stats(const cv_gmatch *m, cv_gmatch_stats *st) {
    st->masks_asked = m->masks_asked;
    st->masks_computed = m->d->masks_computed;
    st->masks_precomputed = m->d->masks_precomputed;
    st->configs = (uint64_t)m->d->n_cfgs;
    st->nodes = (uint64_t)m->d->n_nodes;
}
