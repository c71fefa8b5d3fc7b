#include "rag_request.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A started job: the request (copied) and whom to tell. */
typedef struct job {
    cv_rag_runner *runner;
    cv_rag_request req;
    cv_rag_done_fn done;
    void *user;
} job;

void cv_rag_runner_init(cv_rag_runner *r, const cv_rag_runner_config *cfg) {
    r->cfg = *cfg;
    if (r->cfg.max_jobs <= 0) r->cfg.max_jobs = CV_RAG_MAX_JOBS;
    atomic_init(&r->jobs, 0);
}

int cv_rag_runner_jobs(cv_rag_runner *r) { return atomic_load(&r->jobs); }

size_t cv_rag_context_budget(size_t n_ctx, size_t n_bare, size_t max_tokens) {
    size_t room = n_ctx / 4;
    if (max_tokens && max_tokens < room) room = max_tokens;
    return n_bare + room < n_ctx ? n_ctx - n_bare - room : 1;
}

/* A Generate's prompt; else the last "user" message (none: "", which retrieval refuses). */
static const char *question_of(const cv_rag_request *r) {
    if (r->prompt) return r->prompt;
    const char *q = "";
    for (size_t i = 0; i < r->n_messages; i++)
        if (!strcmp(r->messages[i].role, "user")) q = r->messages[i].content;
    return q;
}

/* The prompt ids with the context framed (rag_prompt.h has the frames and why the
 * chat's last user turn carries them), or, when framed is 0, the request's own prompt
 * or messages. */
static cv_status prompt_ids(const cv_rag_request *r, const cv_rag_context *ctx, const char *question, int framed,
                            int compact, int32_t **ids, size_t *n_ids, cv_error *err) {
    const cv_rag_model *m = &r->model;
    cv_status st = CV_ENOMEM;
    if (r->prompt) {
        char *text = framed ? cv_rag_prompt_generate(ctx, question, compact) : NULL;
        if (framed && !text) return cv_errorf(err, CV_ENOMEM, "out of memory");
        st = m->encode_prompt(m->user, framed ? text : r->prompt, ids, n_ids, err);
        free(text);
        return st;
    }
    if (!framed) return m->encode_chat(m->user, r->messages, r->n_messages, ids, n_ids, err);
    char *user = NULL;
    cv_rag_msg *msgs = malloc(sizeof *msgs * (r->n_messages ? r->n_messages : 1));
    if (!msgs || !(user = cv_rag_prompt_user(ctx, question, compact))) goto out;
    memcpy(msgs, r->messages, sizeof *msgs * r->n_messages);
    for (size_t i = r->n_messages; i-- > 0;)
        if (!strcmp(msgs[i].role, "user")) {
            msgs[i].content = user;
            break;
        }
    st = m->encode_chat(m->user, msgs, r->n_messages, ids, n_ids, err);
out:
    if (st == CV_ENOMEM) cv_errorf(err, st, "out of memory");
    free(user);
    free(msgs);
    return st;
}

/* One structured line per retrieval (the request id is the client's: escaped). */
static void log_rag(const cv_rag_runner *rn, const char *request_id, const cv_rag_outcome *o) {
    json_t *l = json_pack("{s:s,s:s,s:f,s:f,s:f,s:I,s:I,s:I,s:f,s:b}", "msg", "rag", "request_id",
                          request_id ? request_id : "", "index_ms", o->index_ms, "sources_ms", o->sources_ms,
                          "prompt_ms", o->prompt_ms, "passages", (json_int_t)o->n_passages, "cited",
                          (json_int_t)o->ctx.n_kept, "context_tokens", (json_int_t)o->ctx.tokens, "coverage",
                          o->coverage, "default_answer", o->default_answer != NULL);
    char *line = l ? json_dumps(l, JSON_COMPACT | JSON_REAL_PRECISION(6)) : NULL;
    if (line && rn->cfg.log) rn->cfg.log(rn->cfg.log_user, line);
    else if (line) fprintf(stderr, "%s\n", line);
    free(line);
    json_decref(l);
}

static cv_status retrieve(cv_rag_runner *rn, const cv_rag_query *q, const cv_rag_model *m,
                          cv_rag_outcome *o, cv_error *err) {
    if (rn->cfg.retrieve) return rn->cfg.retrieve(rn->cfg.retrieve_user, q, m->count_tokens, m->user, o, err);
    return cv_rag_service_run(rn->cfg.service, q, m->count_tokens, m->user, o, err);
}

void cv_rag_request_run(cv_rag_runner *rn, const cv_rag_request *r, cv_rag_done_fn done, void *user) {
    cv_error err = {0};
    cv_rag_result res = {.question = question_of(r)};
    cv_rag_outcome o = {0};
    int have_outcome = 0;
    int32_t *ids = NULL;
    size_t n_bare = 0;
    const char *question = res.question;
    /* The frame without passages sets the budget (rag_prompt.h: the compact frame for
     * a small window). */
    cv_span *span = NULL;
    cv_rag_context empty = {.text = ""};
    int compact = 0;
    size_t budget = 0;
    cv_status st;
    for (;; compact = 1) {
        if ((st = prompt_ids(r, &empty, question, 1, compact, &ids, &n_bare, &err)) != CV_OK) goto out;
        free(ids);
        ids = NULL;
        budget = cv_rag_context_budget(r->model.n_ctx, n_bare, r->max_tokens);
        if (compact || budget >= CV_RAG_COMPACT_BELOW) break;
    }
    cv_rag_query q = r->options;
    q.question = question;
    q.max_context_tokens = budget;
    cv_trace_ctx in_retrieval;
    if (r->trace) {
        span = cv_span_start(r->trace, "rag.retrieve", CV_SPAN_INTERNAL, 0, &in_retrieval);
        q.trace = &in_retrieval;
    }
    if ((st = retrieve(rn, &q, &r->model, &o, &err)) != CV_OK) goto out;
    have_outcome = 1;
    cv_span_set_int(span, "corvid.rag.passages", (int64_t)o.n_passages);
    cv_span_set_int(span, "corvid.rag.cited", (int64_t)o.ctx.n_kept);
    cv_span_set_int(span, "corvid.rag.default_answer", o.default_answer != NULL);
    log_rag(rn, r->request_id, &o);
    res.outcome = &o;
    if (o.default_answer) {
        res.default_answer = o.default_answer;
    } else if ((st = prompt_ids(r, &o.ctx, question, o.ctx.n_kept > 0, compact, &ids, &res.n_ids, &err)) == CV_OK) {
        res.ids = ids;
        /* A base model answering the Generate frame goes on with the next
         * "Question:": the frame's own structure ends the answer. */
        res.extra_stop = r->prompt && o.ctx.n_kept ? CV_RAG_GENERATE_STOP : NULL;
    }
out:
    res.status = st;
    if (st != CV_OK) {
        res.error = err.msg;
        res.outcome = NULL;
        cv_span_set_error(span, err.msg);
    }
    cv_span_end(span, 0); /* before done(), which may end the request's own span */
    done(user, &res);
    free(ids);
    if (have_outcome) cv_rag_outcome_free(&o);
}

static void *job_thread(void *arg) {
    job *j = arg;
    cv_rag_runner *rn = j->runner;
    cv_rag_request_run(rn, &j->req, j->done, j->user);
    free(j);
    atomic_fetch_sub(&rn->jobs, 1);
    return NULL;
}

cv_status cv_rag_request_start(cv_rag_runner *rn, const cv_rag_request *req, cv_rag_done_fn done,
                               void *user, cv_error *err) {
    if (atomic_fetch_add(&rn->jobs, 1) >= rn->cfg.max_jobs) {
        atomic_fetch_sub(&rn->jobs, 1);
        return cv_errorf(err, CV_EBUSY, "rag: %d retrievals are running already", rn->cfg.max_jobs);
    }
    job *j = malloc(sizeof *j);
    if (!j) {
        atomic_fetch_sub(&rn->jobs, 1);
        return cv_errorf(err, CV_ENOMEM, "out of memory");
    }
    *j = (job){rn, *req, done, user};
    pthread_attr_t attr;
    pthread_t th;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&th, &attr, job_thread, j);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        free(j);
        atomic_fetch_sub(&rn->jobs, 1);
        return cv_errorf(err, CV_EBUSY, "rag: cannot start a retrieval thread");
    }
    return CV_OK;
}
