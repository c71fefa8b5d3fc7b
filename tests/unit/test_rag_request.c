/* rag_request: one request's retrieval step with a byte-counting model (one token per
 * byte), a real knowledge base and a live source that cannot be reached. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "rag_index.h"
#include "rag_request.h"
#include "../support/test_tmpdir.h"

static char dir[200], kb_path[256], sources_path[256], spec[300];

#define LONG_DOC                                                                                      \
    "The corvid project's mascot is a raven named Quill. Quill appears on every release poster, "    \
    "and every poster shows Quill holding a different tool: a wrench, a quill pen, a lantern, a "    \
    "compass, a map of the paged KV cache, a stack of tokens, a tiny tensor, a spyglass, a kettle, " \
    "an hourglass and, on the latest one, a small umbrella against the rain of the release night."

static void write_index(void) {
    static const char *const docs[] = {
        "mascot", "Project mascot", LONG_DOC,
        "tea", "龙井茶", "龙井茶产自杭州西湖。",
    };
    cv_rag_analyzer *a;
    cv_rag_builder *b;
    assert_int_equal(cv_rag_analyzer_create(NULL, 0, &a, NULL), CV_OK);
    assert_int_equal(cv_rag_builder_create(NULL, a, &b, NULL), CV_OK);
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i += 3)
        assert_int_equal(cv_rag_builder_add(b, docs[i], docs[i + 1], "", docs[i + 2], strlen(docs[i + 2]), NULL),
                         CV_OK);
    assert_int_equal(cv_rag_builder_write(b, kb_path, NULL), CV_OK);
    cv_rag_builder_free(b);
    cv_rag_analyzer_free(a);
}

static int setup(void **state) {
    (void)state;
    if (cv_test_tmpdir(dir, sizeof dir, "rag-request")) return -1;
    snprintf(kb_path, sizeof kb_path, "%s/docs.cvidx", dir);
    snprintf(sources_path, sizeof sources_path, "%s/sources.json", dir);
    snprintf(spec, sizeof spec, "docs=%s", kb_path);
    write_index();
    /* Port 1 on loopback: refused at once, no network needed. */
    FILE *f = fopen(sources_path, "w");
    if (!f) return -1;
    fputs("{\"budget_ms\":500,\"sources\":[{\"name\":\"down\",\"url\":\"http://127.0.0.1:1/s?q={query}\","
          "\"items\":\"/results\",\"text\":\"/snippet\"}]}",
          f);
    fclose(f);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    return cv_test_rmtree(dir);
}

/* ---- the model: one token per byte ---- */

static size_t count_bytes(void *user, const char *text, size_t len) {
    (void)user, (void)text;
    return len;
}

static cv_status bytes_to_ids(const char *text, int32_t **ids, size_t *n) {
    *n = strlen(text);
    *ids = malloc(sizeof **ids * (*n + 1));
    if (!*ids) return CV_ENOMEM;
    for (size_t i = 0; i < *n; i++) (*ids)[i] = (unsigned char)text[i];
    return CV_OK;
}

typedef struct model_log {
    int fail_encode;            /* encode_* fail with CV_EINVAL */
    char last_prompt[4096];     /* the last text encode_prompt saw */
    cv_rag_msg last_msgs[8];    /* the last messages encode_chat saw (strdup'd) */
    size_t n_last_msgs;
} model_log;

static void model_log_clear(model_log *m) {
    for (size_t i = 0; i < m->n_last_msgs; i++) {
        free((char *)m->last_msgs[i].role);
        free((char *)m->last_msgs[i].content);
    }
    m->n_last_msgs = 0;
}

static cv_status encode_prompt(void *user, const char *text, int32_t **ids, size_t *n, cv_error *err) {
    model_log *m = user;
    if (m->fail_encode) return cv_errorf(err, CV_EINVAL, "encode failed on purpose");
    snprintf(m->last_prompt, sizeof m->last_prompt, "%s", text);
    return bytes_to_ids(text, ids, n);
}

/* Chat "template": ROLE: CONTENT lines. */
static cv_status encode_chat(void *user, const cv_rag_msg *msgs, size_t n, int32_t **ids, size_t *n_ids,
                             cv_error *err) {
    model_log *m = user;
    if (m->fail_encode) return cv_errorf(err, CV_EINVAL, "encode failed on purpose");
    model_log_clear(m);
    size_t len = 1;
    for (size_t i = 0; i < n; i++) len += strlen(msgs[i].role) + strlen(msgs[i].content) + 3;
    char *text = calloc(len, 1);
    for (size_t i = 0; i < n; i++) {
        strcat(strcat(strcat(strcat(text, msgs[i].role), ": "), msgs[i].content), "\n");
        if (i < 8) m->last_msgs[m->n_last_msgs++] = (cv_rag_msg){strdup(msgs[i].role), strdup(msgs[i].content)};
    }
    cv_status st = bytes_to_ids(text, ids, n_ids);
    free(text);
    return st;
}

/* ---- what done saw (copied: the result lives only during the call) ---- */

typedef struct seen {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int calls;
    pthread_t thread;
    cv_status status;
    char error[256];
    char default_answer[128];
    int has_outcome;
    size_t n_passages, n_kept, context_tokens;
    char first_source[64];
    size_t n_ids;
    const char *extra_stop;
} seen;

static void seen_init(seen *s) {
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
}

static void seen_destroy(seen *s) {
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
}

static void on_done(void *user, const cv_rag_result *r) {
    seen *s = user;
    pthread_mutex_lock(&s->mu);
    s->calls++;
    s->thread = pthread_self();
    s->status = r->status;
    snprintf(s->error, sizeof s->error, "%s", r->error ? r->error : "");
    snprintf(s->default_answer, sizeof s->default_answer, "%s", r->default_answer ? r->default_answer : "");
    s->has_outcome = r->outcome != NULL;
    if (r->outcome) {
        s->n_passages = r->outcome->n_passages;
        s->n_kept = r->outcome->ctx.n_kept;
        s->context_tokens = r->outcome->ctx.tokens;
        if (r->outcome->n_passages)
            snprintf(s->first_source, sizeof s->first_source, "%s", r->outcome->passages[0].source);
    }
    s->n_ids = r->ids ? r->n_ids : 0;
    s->extra_stop = r->extra_stop;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void wait_calls(seen *s, int n) {
    pthread_mutex_lock(&s->mu);
    while (s->calls < n) pthread_cond_wait(&s->cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
}

static void wait_no_jobs(cv_rag_runner *r) {
    for (int i = 0; i < 5000 && cv_rag_runner_jobs(r); i++) nanosleep(&(struct timespec){0, 1000000}, NULL);
    assert_int_equal(cv_rag_runner_jobs(r), 0);
}

/* ---- fixtures ---- */

static char log_lines[8192];
static char audit_lines[8192];
static pthread_mutex_t lines_mu = PTHREAD_MUTEX_INITIALIZER;

static void append_line(void *user, const char *line) {
    pthread_mutex_lock(&lines_mu);
    char *buf = user;
    size_t n = strlen(buf);
    snprintf(buf + n, 8192 - n, "%s\n", line);
    pthread_mutex_unlock(&lines_mu);
}

static cv_rag_service *service(const char *sources) {
    cv_rag_settings s = {spec, sources, 4, 0.5f, "refuse", "No relevant data found.", "未找到相关数据。", 1000,
                         append_line, audit_lines, 1, 0, 0};
    cv_rag_service *svc = NULL;
    cv_error e = {0};
    if (cv_rag_service_new(&s, &svc, &e) != CV_OK) fail_msg("service: %s", e.msg);
    return svc;
}

static void runner_init(cv_rag_runner *r, cv_rag_service *svc) {
    log_lines[0] = audit_lines[0] = 0;
    cv_rag_runner_init(r, &(cv_rag_runner_config){.service = svc, .log = append_line, .log_user = log_lines});
}

/* A service, its runner, the model and what done saw. */
typedef struct fixture {
    cv_rag_service *svc;
    cv_rag_runner r;
    model_log m;
    seen s;
} fixture;

static fixture *fx_open(const char *sources) {
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->svc = service(sources);
    runner_init(&f->r, f->svc);
    seen_init(&f->s);
    return f;
}

static void fx_close(fixture *f) {
    model_log_clear(&f->m);
    seen_destroy(&f->s);
    cv_rag_service_free(f->svc);
    free(f);
}

static cv_rag_request generate(const char *prompt, size_t n_ctx, size_t max_tokens, model_log *m) {
    return (cv_rag_request){.request_id = "req-1", .prompt = prompt, .max_tokens = max_tokens,
                            .model = {count_bytes, encode_prompt, encode_chat, m, n_ctx}};
}

/* ---- tests ---- */

static void test_budget(void **state) {
    (void)state;
    /* The answer's room is max_tokens, at most a quarter of the window. */
    assert_int_equal(cv_rag_context_budget(128, 20, 8), 100);
    assert_int_equal(cv_rag_context_budget(128, 20, 0), 128 - 20 - 32);
    assert_int_equal(cv_rag_context_budget(128, 20, 1000), 128 - 20 - 32);
    /* Nothing left: 1, never 0 (0 would mean "no limit"). */
    assert_int_equal(cv_rag_context_budget(128, 120, 8), 1);
    assert_int_equal(cv_rag_context_budget(100, 75, 0), 1);
}

/* The window cuts the context: prompt + context + answer room fit in n_ctx. */
static void test_budget_cuts_context(void **state) {
    (void)state;
    fixture *f = fx_open(NULL);
    model_log *m = &f->m;
    seen *s = &f->s;
    const char *q = "Who is the corvid mascot?";
    cv_rag_context empty = {.text = ""};
    char *bare = cv_rag_prompt_generate(&empty, q, 0);
    size_t n_bare = strlen(bare), n_ctx = n_bare + 200, max_tokens = 10;
    free(bare);
    cv_rag_request req = generate(q, n_ctx, max_tokens, m);
    cv_rag_request_run(&f->r, &req, on_done, s);
    assert_int_equal(s->calls, 1);
    assert_int_equal(s->status, CV_OK);
    assert_string_equal(s->default_answer, "");
    assert_int_equal(s->n_kept, 1);
    assert_true(s->context_tokens <= 200 - max_tokens);
    assert_true(s->context_tokens > CV_RAG_PROMPT_MIN_CUT);
    /* The passage is longer than the budget: cut, and the ids are the whole prompt. */
    assert_true(strlen(LONG_DOC) > 200);
    assert_int_equal(s->n_ids, n_bare + s->context_tokens);
    assert_true(s->n_ids + max_tokens <= n_ctx);
    assert_non_null(strstr(m->last_prompt, "[1] Project mascot: The corvid project's mascot"));
    assert_null(strstr(m->last_prompt, "small umbrella"));
    assert_non_null(strstr(m->last_prompt, "Question: Who is the corvid mascot?\nAnswer:"));
    assert_string_equal(s->extra_stop, CV_RAG_GENERATE_STOP);
    /* One log line, with the client's request id. */
    assert_non_null(strstr(log_lines, "{\"msg\":\"rag\",\"request_id\":\"req-1\""));
    assert_non_null(strstr(log_lines, "\"cited\":1"));
    assert_non_null(strstr(log_lines, "\"default_answer\":false"));
    fx_close(f);
}

/* Nothing retrieved under "refuse": the default answer by the question's script, no ids. */
static void test_empty_retrieval_default_answer(void **state) {
    (void)state;
    fixture *f = fx_open(NULL);
    model_log *m = &f->m;
    seen *s = &f->s;
    cv_rag_request req = generate("xyzzy plugh frobnicate", 4096, 0, m);
    cv_rag_request_run(&f->r, &req, on_done, s);
    assert_int_equal(s->status, CV_OK);
    assert_string_equal(s->default_answer, "No relevant data found.");
    assert_true(s->has_outcome);
    assert_int_equal(s->n_passages, 0);
    assert_int_equal(s->n_ids, 0);
    assert_non_null(strstr(log_lines, "\"default_answer\":true"));
    req.prompt = "量子色动力学是什么？";
    cv_rag_request_run(&f->r, &req, on_done, s);
    assert_string_equal(s->default_answer, "未找到相关数据。");
    /* Policy "answer": the model runs on the plain prompt, without a frame that asks
     * for an answer from an empty context (issue 21), and without the frame's stop. */
    req.prompt = "xyzzy plugh frobnicate";
    req.options.policy = "answer";
    cv_rag_request_run(&f->r, &req, on_done, s);
    assert_int_equal(s->status, CV_OK);
    assert_string_equal(s->default_answer, "");
    assert_int_equal(s->n_kept, 0);
    assert_int_equal(s->n_ids, strlen("xyzzy plugh frobnicate"));
    assert_string_equal(m->last_prompt, "xyzzy plugh frobnicate");
    assert_null(s->extra_stop);
    assert_int_equal(s->calls, 3);
    fx_close(f);
}

/* A live source that fails contributes nothing (audited); the knowledge base still
 * answers. Options outside the limits and a failing model are errors through done. */
static void test_failing_source_and_errors(void **state) {
    (void)state;
    fixture *f = fx_open(sources_path);
    model_log *m = &f->m;
    seen *s = &f->s;
    cv_rag_request req = generate("Who is the corvid mascot?", 4096, 0, m);
    cv_rag_request_run(&f->r, &req, on_done, s);
    assert_int_equal(s->status, CV_OK);
    assert_string_equal(s->first_source, "kb:docs");
    assert_int_equal(s->n_passages, 1);
    assert_true(s->n_ids > 0);
    assert_non_null(strstr(audit_lines, "\"source\":\"down\""));
    assert_non_null(strstr(audit_lines, "\"outcome\":\"error\""));
    /* Only the failing source and nothing in the knowledge base: the default answer. */
    const char *down[] = {"down"};
    req.prompt = "xyzzy plugh frobnicate";
    req.options.sources = down;
    req.options.n_sources = 1;
    cv_rag_request_run(&f->r, &req, on_done, s);
    assert_int_equal(s->status, CV_OK);
    assert_string_equal(s->default_answer, "No relevant data found.");
    /* A source that is not configured: CV_EINVAL naming the field, no outcome. */
    const char *unknown[] = {"nope"};
    req.options.sources = unknown;
    cv_rag_request_run(&f->r, &req, on_done, s);
    assert_int_equal(s->status, CV_EINVAL);
    assert_non_null(strstr(s->error, "rag.sources"));
    assert_false(s->has_outcome);
    assert_int_equal(s->n_ids, 0);
    /* The model's encoder fails: its status and message. */
    req.options.sources = NULL;
    req.options.n_sources = 0;
    m->fail_encode = 1;
    cv_rag_request_run(&f->r, &req, on_done, s);
    assert_int_equal(s->status, CV_EINVAL);
    assert_string_equal(s->error, "encode failed on purpose");
    assert_int_equal(s->calls, 4);
    fx_close(f);
}

/* Chat: the question is the last user message, which becomes the framed user turn
 * (documents, question, instruction); the other messages stay as they are. */
static void test_chat_assembly(void **state) {
    (void)state;
    fixture *f = fx_open(NULL);
    model_log *m = &f->m;
    seen *s = &f->s;
    cv_rag_msg chat[] = {{"system", "Be brief."}, {"user", "tea?"}, {"assistant", "Which tea?"},
                         {"user", "Who is the corvid mascot?"}};
    cv_rag_request req = {.request_id = "chat-1", .messages = chat, .n_messages = 4,
                          .model = {count_bytes, encode_prompt, encode_chat, m, 4096}};
    cv_rag_request_run(&f->r, &req, on_done, s);
    assert_int_equal(s->status, CV_OK);
    assert_int_equal(s->n_kept, 1);
    assert_null(s->extra_stop);
    assert_int_equal(m->n_last_msgs, 4);
    assert_string_equal(m->last_msgs[0].content, "Be brief.");
    assert_string_equal(m->last_msgs[1].content, "tea?");
    assert_string_equal(m->last_msgs[3].role, "user");
    assert_true(!strncmp(m->last_msgs[3].content, "Answer the question", 19));
    assert_non_null(strstr(m->last_msgs[3].content, "\n\nDocuments:\n[1] Project mascot: "));
    const char *tail = "\n\nQuestion: Who is the corvid mascot?";
    assert_non_null(strstr(m->last_msgs[3].content, tail));
    assert_int_equal(strlen(strstr(m->last_msgs[3].content, tail)), strlen(tail));
    /* Without a system message none is added. */
    req.messages = chat + 3;
    req.n_messages = 1;
    cv_rag_request_run(&f->r, &req, on_done, s);
    assert_int_equal(m->n_last_msgs, 1);
    assert_string_equal(m->last_msgs[0].role, "user");
    assert_true(!strncmp(m->last_msgs[0].content, "Answer the question", 19));
    /* No user message: no question. */
    req.messages = chat;
    req.n_messages = 1;
    cv_rag_request_run(&f->r, &req, on_done, s);
    assert_int_equal(s->status, CV_EINVAL);
    assert_non_null(strstr(s->error, "question is empty"));
    fx_close(f);
}

/* A retrieval that waits at a gate, then runs the real service. */
typedef struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int open;
    cv_rag_service *svc;
} gate;

static cv_status gated_retrieve(void *user, const cv_rag_query *q, cv_rag_measure_fn measure, void *mu,
                                cv_rag_outcome *out, cv_error *err) {
    gate *g = user;
    pthread_mutex_lock(&g->mu);
    while (!g->open) pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
    return cv_rag_service_run(g->svc, q, measure, mu, out, err);
}

static void test_job_limit(void **state) {
    (void)state;
    gate g = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, service(NULL)};
    cv_rag_runner r;
    cv_rag_runner_init(&r, &(cv_rag_runner_config){.retrieve = gated_retrieve, .retrieve_user = &g,
                                                   .max_jobs = 3, .log = append_line, .log_user = log_lines});
    model_log m[4] = {0}; /* one a job: the jobs run at once */
    seen s;
    seen_init(&s);
    cv_rag_request req[4];
    for (int i = 0; i < 4; i++) req[i] = generate("Who is the corvid mascot?", 4096, 0, &m[i]);
    cv_error e = {0};
    for (int i = 0; i < 3; i++) assert_int_equal(cv_rag_request_start(&r, &req[i], on_done, &s, &e), CV_OK);
    assert_int_equal(cv_rag_runner_jobs(&r), 3);
    assert_int_equal(cv_rag_request_start(&r, &req[3], on_done, &s, &e), CV_EBUSY);
    assert_string_equal(e.msg, "rag: 3 retrievals are running already");
    assert_int_equal(cv_rag_runner_jobs(&r), 3);
    pthread_mutex_lock(&g.mu);
    g.open = 1;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    wait_calls(&s, 3);
    wait_no_jobs(&r);
    assert_int_equal(s.calls, 3); /* the refused one never calls back */
    assert_int_equal(s.status, CV_OK);
    /* Room again. */
    assert_int_equal(cv_rag_request_start(&r, &req[3], on_done, &s, &e), CV_OK);
    wait_calls(&s, 4);
    wait_no_jobs(&r);
    seen_destroy(&s);
    cv_rag_service_free(g.svc);
}

/* The default limit is CV_RAG_MAX_JOBS; a started job runs on its own thread and calls
 * back once. */
static void test_thread_completes_and_calls_back(void **state) {
    (void)state;
    fixture *f = fx_open(NULL);
    seen *s = &f->s;
    assert_int_equal(f->r.cfg.max_jobs, CV_RAG_MAX_JOBS);
    cv_rag_request req = generate("Who is the corvid mascot?", 4096, 0, &f->m);
    assert_int_equal(cv_rag_request_start(&f->r, &req, on_done, s, NULL), CV_OK);
    wait_calls(s, 1);
    wait_no_jobs(&f->r);
    assert_int_equal(s->calls, 1);
    assert_false(pthread_equal(s->thread, pthread_self()));
    assert_int_equal(s->status, CV_OK);
    assert_int_equal(s->n_kept, 1);
    assert_true(s->n_ids > 0);
    assert_non_null(strstr(log_lines, "\"request_id\":\"req-1\""));
    fx_close(f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_budget),
        cmocka_unit_test(test_budget_cuts_context),
        cmocka_unit_test(test_empty_retrieval_default_answer),
        cmocka_unit_test(test_failing_source_and_errors),
        cmocka_unit_test(test_chat_assembly),
        cmocka_unit_test(test_job_limit),
        cmocka_unit_test(test_thread_completes_and_calls_back),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
