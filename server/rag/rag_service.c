#include "rag_service.h"

#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rag_coverage.h"
#include "rag_index.h"
#include "timing.h"

typedef struct kb {
    char name[64];
    char source[68]; /* "kb:<name>" */
    cv_rag_index *ix;
    uint32_t checksum;  /* cv_rag_index_info's: the response cache's identity of it */
} kb;

/* Sources configs for the subsets requests have named (rag.sources), built on first
 * use so that a request waits only for the sources it asked for. */
#define MAX_SUBSETS 16

typedef struct subset {
    uint64_t mask;
    cv_rag_sources *sources;
} subset;

struct cv_rag_service {
    kb kbs[CV_RAG_MAX_KBS];
    size_t n_kbs;
    cv_rag_sources *sources;     /* all of them */
    json_t *sources_json;        /* the config, for building subsets */
    char **source_names;
    size_t n_source_names;
    pthread_mutex_t mu;          /* guards subsets */
    subset subsets[MAX_SUBSETS];
    size_t n_subsets;
    cv_pii *pii;
    uint32_t top_k;
    float min_score;
    int answer_policy;
    char *default_answer, *default_answer_zh;
    size_t max_context_tokens;
    int guard, check_answers;
    double min_coverage;
    cv_rag_audit_fn audit;
    void *audit_user;
};

static cv_status parse_policy(const char *p, const char *field, int *answer, cv_error *err) {
    if (!strcmp(p, "refuse")) *answer = 0;
    else if (!strcmp(p, "answer")) *answer = 1;
    else return cv_errorf(err, CV_EINVAL, "%s: \"%.64s\" is neither \"refuse\" nor \"answer\"", field, p);
    return CV_OK;
}

static int valid_name(const char *s, size_t n) {
    if (n == 0 || n >= sizeof ((kb *)0)->name) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '-' || s[i] == '.'))
            return 0;
    return 1;
}

/* "NAME=PATH[,NAME=PATH...]": every index opened and checked (CRCs included). */
static cv_status open_kbs(cv_rag_service *s, const char *spec, cv_error *err) {
    const char *p = spec;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', n);
        if (!eq || !valid_name(p, (size_t)(eq - p)) || eq + 1 == p + n)
            return cv_errorf(err, CV_EINVAL,
                             "rag_knowledge_bases: \"%.*s\" is not NAME=PATH (NAME: 1..63 of "
                             "[A-Za-z0-9_.-])", (int)(n > 200 ? 200 : n), p);
        if (s->n_kbs == CV_RAG_MAX_KBS)
            return cv_errorf(err, CV_ERANGE, "rag_knowledge_bases: more than %d entries", CV_RAG_MAX_KBS);
        kb *k = &s->kbs[s->n_kbs];
        snprintf(k->name, sizeof k->name, "%.*s", (int)(eq - p), p);
        memcpy(k->source, "kb:", 3);
        memcpy(k->source + 3, k->name, strlen(k->name) + 1);
        for (size_t i = 0; i < s->n_kbs; i++)
            if (!strcmp(s->kbs[i].name, k->name))
                return cv_errorf(err, CV_EINVAL, "rag_knowledge_bases: \"%s\" is named twice", k->name);
        char *path = strndup(eq + 1, (size_t)(p + n - eq - 1));
        if (!path) return cv_errorf(err, CV_ENOMEM, "rag_knowledge_bases: out of memory");
        cv_error e = {0};
        cv_status st = cv_rag_index_open_verified(path, &k->ix, &e);
        if (st != CV_OK) {
            cv_errorf(err, st, "rag_knowledge_bases: knowledge base \"%s\" (%s): %s", k->name, path, e.msg);
            free(path);
            return st;
        }
        free(path);
        cv_rag_index_info info;
        cv_rag_index_info_get(k->ix, &info);
        k->checksum = info.checksum;
        s->n_kbs++;
        p += n;
        if (*p == ',') p++;
    }
    return CV_OK;
}

static cv_status load_sources(cv_rag_service *s, const char *path, cv_error *err) {
    json_error_t jerr;
    cv_status st = CV_OK;
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    json_t *root = NULL;
    if (!f) return cv_errorf(err, CV_EIO, "rag_sources: cannot open %s", path);
    size_t cap = 4096, len = 0, n;
    buf = malloc(cap);
    while (buf && (n = fread(buf + len, 1, cap - len, f)) > 0) {
        len += n;
        if (len == cap) {
            char *q = cap < (16u << 20) ? realloc(buf, cap * 2) : NULL;
            if (!q) {
                st = cv_errorf(err, CV_ERANGE, "rag_sources: %s is larger than 16 MiB or memory ran out", path);
                goto out;
            }
            buf = q;
            cap *= 2;
        }
    }
    if (!buf) {
        st = cv_errorf(err, CV_ENOMEM, "rag_sources: out of memory reading %s", path);
        goto out;
    }
    cv_error e = {0};
    if ((st = cv_rag_sources_parse(buf, len, &s->sources, &e)) != CV_OK) {
        cv_errorf(err, st, "rag_sources: %s: %s", path, e.msg);
        goto out;
    }
    /* The names, for checking a request's choice (the parse above validated them). */
    root = json_loadb(buf, len, 0, &jerr);
    json_t *list = root ? json_object_get(root, "sources") : NULL;
    s->n_source_names = json_array_size(list);
    if (s->n_source_names > 64) {
        st = cv_errorf(err, CV_ERANGE, "rag_sources: %s has %zu sources, the limit is 64", path, s->n_source_names);
        goto out;
    }
    s->source_names = calloc(s->n_source_names ? s->n_source_names : 1, sizeof *s->source_names);
    if (!s->source_names) {
        st = cv_errorf(err, CV_ENOMEM, "rag_sources: out of memory");
        goto out;
    }
    for (size_t i = 0; i < s->n_source_names; i++) {
        const char *name = json_string_value(json_object_get(json_array_get(list, i), "name"));
        if (!(s->source_names[i] = strdup(name ? name : ""))) {
            st = cv_errorf(err, CV_ENOMEM, "rag_sources: out of memory");
            goto out;
        }
    }
    s->sources_json = root;
    root = NULL;
out:
    json_decref(root);
    free(buf);
    fclose(f);
    return st;
}

cv_status cv_rag_service_new(const cv_rag_settings *set, cv_rag_service **out, cv_error *err) {
    cv_rag_service *s = calloc(1, sizeof *s);
    if (!s) return cv_errorf(err, CV_ENOMEM, "rag: out of memory");
    pthread_mutex_init(&s->mu, NULL);
    cv_status st;
    if (set->top_k < 1 || set->top_k > CV_RAG_MAX_TOP_K) {
        st = cv_errorf(err, CV_ERANGE, "rag_top_k: %u is outside [1, %d]", set->top_k, CV_RAG_MAX_TOP_K);
        goto err;
    }
    if ((st = parse_policy(set->policy, "rag_policy", &s->answer_policy, err)) != CV_OK) goto err;
    s->top_k = set->top_k;
    s->min_score = set->min_score;
    s->max_context_tokens = set->max_context_tokens;
    s->guard = set->guard;
    s->check_answers = set->check_answers;
    s->min_coverage = set->min_coverage;
    s->audit = set->audit;
    s->audit_user = set->audit_user;
    s->default_answer = strdup(set->default_answer ? set->default_answer : "");
    s->default_answer_zh = strdup(set->default_answer_zh ? set->default_answer_zh : "");
    if (!s->default_answer || !s->default_answer_zh) {
        st = cv_errorf(err, CV_ENOMEM, "rag: out of memory");
        goto err;
    }
    if (!s->default_answer[0] && !s->default_answer_zh[0]) {
        st = cv_errorf(err, CV_EINVAL, "rag_default_answer: empty (and so is rag_default_answer_zh)");
        goto err;
    }
    if ((st = cv_pii_create(CV_PII_PLACEHOLDER, &s->pii, err)) != CV_OK) goto err;
    if (set->knowledge_bases && (st = open_kbs(s, set->knowledge_bases, err)) != CV_OK) goto err;
    if (set->sources_path && set->sources_path[0] && (st = load_sources(s, set->sources_path, err)) != CV_OK)
        goto err;
    if (!s->n_kbs && !s->sources) {
        st = cv_errorf(err, CV_EINVAL, "rag: neither rag_knowledge_bases nor rag_sources is set");
        goto err;
    }
    *out = s;
    return CV_OK;
err:
    cv_rag_service_free(s);
    return st;
}

void cv_rag_service_free(cv_rag_service *s) {
    if (!s) return;
    for (size_t i = 0; i < s->n_kbs; i++) cv_rag_index_close(s->kbs[i].ix);
    cv_rag_sources_free(s->sources);
    for (size_t i = 0; i < s->n_subsets; i++) cv_rag_sources_free(s->subsets[i].sources);
    json_decref(s->sources_json);
    pthread_mutex_destroy(&s->mu);
    for (size_t i = 0; i < s->n_source_names; i++) free(s->source_names[i]);
    free(s->source_names);
    cv_pii_free(s->pii);
    free(s->default_answer);
    free(s->default_answer_zh);
    free(s);
}

static char *own(cv_rag_outcome *o, const char *s, size_t n) {
    char *c = strndup(n ? s : "", n);
    if (c) o->owned[o->n_owned++] = c;
    return c;
}

static cv_status search_kb(const kb *k, const char *q, uint32_t top_k,
                           float min_score, cv_rag_outcome *o, cv_error *err) {
    cv_rag_searcher *sr = NULL;
    cv_rag_hit hits[CV_RAG_MAX_TOP_K];
    size_t n = 0;
    cv_status st = cv_rag_searcher_create(k->ix, &sr, err);
    if (st != CV_OK) return st;
    cv_rag_search_opts so = {.k1 = -1, .b = -1};
    st = cv_rag_search(sr, &so, q, strlen(q), hits, top_k, &n, err);
    cv_rag_searcher_free(sr);
    if (st != CV_OK) return st;
    for (size_t i = 0; i < n && hits[i].score >= min_score; i++) {
        cv_rag_doc d;
        cv_rag_chunk c;
        cv_rag_index_doc(k->ix, hits[i].doc, &d);
        cv_rag_index_chunk(k->ix, hits[i].chunk, &c);
        cv_rag_passage *p = &o->passages[o->n_passages];
        p->source = k->source;
        p->doc_id = own(o, d.id.ptr, d.id.len);
        p->title = own(o, d.title.ptr, d.title.len);
        p->url = own(o, d.url.ptr, d.url.len);
        if (!p->doc_id || !p->title || !p->url) return cv_errorf(err, CV_ENOMEM, "rag: out of memory");
        p->text = c.text.ptr;
        p->len = c.text.len;
        p->score = hits[i].score;
        p->kb_checksum = k->checksum;
        p->chunk = hits[i].chunk;
        o->n_passages++;
    }
    return CV_OK;
}

/* The sources config for the names in q (all of them when none); *owned when the
 * caller must free it (the subset cache is full). Names were checked by resolve. */
static cv_status sources_for(cv_rag_service *s, const cv_rag_query *q, cv_rag_sources **out, int *owned,
                             cv_error *err) {
    *owned = 0;
    uint64_t mask = 0, all = s->n_source_names == 64 ? ~0ull : (1ull << s->n_source_names) - 1;
    for (size_t i = 0; i < q->n_sources; i++)
        for (size_t j = 0; j < s->n_source_names; j++)
            if (!strcmp(s->source_names[j], q->sources[i])) mask |= 1ull << j;
    if (!q->n_sources || mask == all) {
        *out = s->sources;
        return CV_OK;
    }
    cv_status st = CV_OK;
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->n_subsets; i++)
        if (s->subsets[i].mask == mask) {
            *out = s->subsets[i].sources;
            goto out;
        }
    json_t *cfg = json_deep_copy(s->sources_json), *list = json_array();
    char *text = NULL;
    const json_t *src = json_object_get(s->sources_json, "sources");
    for (size_t j = 0; cfg && list && j < s->n_source_names; j++)
        if (mask >> j & 1) json_array_append(list, json_array_get(src, j));
    if (!cfg || !list || json_object_set(cfg, "sources", list) ||
        !(text = json_dumps(cfg, JSON_COMPACT))) {
        st = cv_errorf(err, CV_ENOMEM, "rag: out of memory selecting sources");
    } else if ((st = cv_rag_sources_parse(text, strlen(text), out, err)) == CV_OK) {
        if (s->n_subsets < MAX_SUBSETS) s->subsets[s->n_subsets++] = (subset){mask, *out};
        else *owned = 1;
    }
    free(text);
    json_decref(list);
    json_decref(cfg);
out:
    pthread_mutex_unlock(&s->mu);
    return st;
}

/* The options after defaults and limits; kb NULL when no knowledge base is configured. */
static cv_status resolve(const cv_rag_service *s, const cv_rag_query *q, const kb **k, uint32_t *top_k,
                         float *min_score, int *answer, cv_error *err) {
    *k = s->n_kbs ? &s->kbs[0] : NULL;
    if (q->knowledge_base && q->knowledge_base[0]) {
        *k = NULL;
        for (size_t i = 0; i < s->n_kbs; i++)
            if (!strcmp(s->kbs[i].name, q->knowledge_base)) *k = &s->kbs[i];
        if (!*k) return cv_errorf(err, CV_EINVAL, "rag.knowledge_base: \"%.64s\" is not configured here", q->knowledge_base);
    }
    *top_k = q->top_k ? q->top_k : s->top_k;
    if (*top_k > CV_RAG_MAX_TOP_K)
        return cv_errorf(err, CV_EINVAL, "rag.top_k: %u is above the limit %d", *top_k, CV_RAG_MAX_TOP_K);
    *min_score = q->min_score != 0 ? q->min_score : s->min_score;
    if (!isfinite(*min_score))
        return cv_errorf(err, CV_EINVAL, "rag.min_score: %g is not a number: NaN and infinities are refused",
                         (double)*min_score);
    if (*min_score < 0) return cv_errorf(err, CV_EINVAL, "rag.min_score: %g is negative", (double)*min_score);
    *answer = s->answer_policy;
    cv_status st;
    if (q->policy && q->policy[0] && (st = parse_policy(q->policy, "rag.policy", answer, err)) != CV_OK) return st;
    for (size_t i = 0; i < q->n_sources; i++) {
        size_t j = 0;
        while (j < s->n_source_names && strcmp(s->source_names[j], q->sources[i])) j++;
        if (j == s->n_source_names)
            return cv_errorf(err, CV_EINVAL, "rag.sources: \"%.64s\" is not a configured source", q->sources[i]);
    }
    if (!q->question || !q->question[0]) return cv_errorf(err, CV_EINVAL, "rag: the question is empty");
    return CV_OK;
}

static void audit_line(void *user, const char *line) {
    const cv_rag_service *s = user;
    if (s->audit) s->audit(s->audit_user, line);
}

cv_status cv_rag_service_run(cv_rag_service *s, const cv_rag_query *q, cv_rag_measure_fn measure,
                             void *measure_user, cv_rag_outcome *o, cv_error *err) {
    memset(o, 0, sizeof *o);
    const kb *k = NULL;
    uint32_t top_k = 0;
    float min_score = 0;
    int answer = 0;
    cv_status st = resolve(s, q, &k, &top_k, &min_score, &answer, err);
    if (st != CV_OK) return st;
    double t0 = cv_seconds();
    if (s->sources) {
        cv_rag_sources *src;
        int owned;
        if ((st = sources_for(s, q, &src, &owned, err)) != CV_OK) goto fail;
        st = cv_rag_sources_fetch(src, s->pii, q->question, 0, audit_line, s, q->trace, &o->hits, err);
        if (owned) cv_rag_sources_free(src);
        if (st != CV_OK) goto fail;
    }
    o->sources_ms = (cv_seconds() - t0) * 1e3;
    o->passages = calloc(top_k + o->hits.n + 1, sizeof *o->passages);
    o->owned = calloc(3 * (size_t)top_k + 1, sizeof *o->owned);
    if (!o->passages || !o->owned) {
        st = cv_errorf(err, CV_ENOMEM, "rag: out of memory");
        goto fail;
    }
    t0 = cv_seconds();
    cv_span *search = k && q->trace ? cv_span_start(q->trace, "rag.search", CV_SPAN_INTERNAL, 0, NULL) : NULL;
    if (k && (st = search_kb(k, q->question, top_k, min_score, o, err)) != CV_OK) {
        cv_span_set_error(search, err ? err->msg : "search failed");
        cv_span_end(search, 0);
        goto fail;
    }
    o->index_ms = (cv_seconds() - t0) * 1e3;
    cv_span_set_str(search, "gen_ai.data_source.id", k ? k->name : "");
    cv_span_set_int(search, "corvid.rag.top_k", top_k);
    cv_span_set_int(search, "corvid.rag.passages", (int64_t)o->n_passages);
    cv_span_end(search, 0);
    o->coverage = 1;
    if (k && s->min_coverage > 0 && o->n_passages) {
        o->coverage = cv_rag_coverage(cv_rag_index_analyzer(k->ix), q->question, o->passages, o->n_passages);
        if (o->coverage < s->min_coverage) o->n_passages = 0;
    }
    for (size_t i = 0; i < o->hits.n; i++) {
        const cv_rag_source_hit *h = &o->hits.v[i];
        o->passages[o->n_passages++] = (cv_rag_passage){h->source, "", h->title ? h->title : "",
                                                        h->link ? h->link : "", h->text, strlen(h->text), 0, 0, 0};
    }
    if (!o->n_passages && !answer) {
        int zh = s->default_answer_zh[0] && (cv_rag_is_cjk_text(q->question, strlen(q->question)) ||
                                              !s->default_answer[0]);
        o->default_answer = zh ? s->default_answer_zh : s->default_answer;
        return CV_OK;
    }
    size_t budget = s->max_context_tokens;
    if (q->max_context_tokens && q->max_context_tokens < budget) budget = q->max_context_tokens;
    t0 = cv_seconds();
    st = cv_rag_context_build(o->passages, o->n_passages, budget, measure, measure_user, &o->ctx, err);
    if (st != CV_OK) goto fail;
    o->prompt_ms = (cv_seconds() - t0) * 1e3;
    return CV_OK;
fail:
    cv_rag_outcome_free(o);
    return st;
}

int cv_rag_service_guard(const cv_rag_service *s) { return s->guard; }

int cv_rag_service_check_answers(const cv_rag_service *s) { return s->guard && s->check_answers; }

void cv_rag_outcome_free(cv_rag_outcome *o) {
    for (size_t i = 0; i < o->n_owned; i++) free(o->owned[i]);
    free(o->owned);
    free(o->passages);
    cv_rag_context_free(&o->ctx);
    cv_rag_source_hits_free(&o->hits);
    memset(o, 0, sizeof *o);
}
