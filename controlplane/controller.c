#include "controller.h"

#include <jansson.h>
#include <stdarg.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "election.h"
#include "etcd.h"
#include "etcd_watch.h"
#include "fleet.h"
#include "rollout.h"
#include "server_creds.h"
#include "trace.h"

#define SMOKE_MEMO 64
/* How often the credential files are stat()ed. Kubernetes takes up to a minute or so to
 * bring a changed Secret into the pod, so a second adds little to that, and costs a
 * few stat() calls; a reload only follows a real change (a new connection per server). */
#define CREDS_CHECK_MS 1000

typedef struct controller {
    const cv_cp_config *cfg;
    cv_cp_metrics *metrics;
    cv_etcd *etcd;
    cv_election *election;
    cv_fleet *fleet;
    cv_server_creds_store *creds;
    const cv_server_creds *fleet_creds; /* the snapshot the fleet's clients were made from */
    cv_rollout_limits limits;
    /* Smoke prompts already passed: "rollout id/version@addr" (leader-local memory). */
    char smoked[SMOKE_MEMO][384];
    size_t n_smoked, next_smoked; /* entries held; the ring slot written next */
} controller;

/* The keys of one model within a range of <prefix>/models/. */
typedef struct model_keys {
    char name[CV_ROLLOUT_NAME];
    const cv_etcd_kv *rollout, *status;
    const cv_etcd_kv *all;
    size_t n_all;
    size_t prefix_len; /* strlen("<prefix>/models/<name>/") */
} model_keys;

typedef struct version_rec {
    char uri[1024], sha256[65];
    bool found;
} version_rec;

static int64_t clock_ms(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t wall_ms(void) { return clock_ms(CLOCK_REALTIME); }

static void logf_(const char *model, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_(const char *model, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "corvid-controlplane: %s: ", model);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void version_lookup(const model_keys *mk, const char *version, version_rec *out) {
    memset(out, 0, sizeof *out);
    char suffix[CV_ROLLOUT_NAME + 16];
    snprintf(suffix, sizeof suffix, "versions/%s", version);
    for (size_t i = 0; i < mk->n_all; i++) {
        const cv_etcd_kv *kv = &mk->all[i];
        if (kv->key_len <= mk->prefix_len || strcmp(kv->key + mk->prefix_len, suffix) != 0) continue;
        json_t *o = json_loadb(kv->value, kv->value_len, 0, NULL);
        json_t *uri = json_object_get(o, "uri"), *sha = json_object_get(o, "sha256");
        if (json_is_string(uri) && json_string_length(uri) < sizeof out->uri) {
            snprintf(out->uri, sizeof out->uri, "%s", json_string_value(uri));
            if (json_is_string(sha))
                snprintf(out->sha256, sizeof out->sha256, "%s", json_string_value(sha));
            out->found = true;
        }
        json_decref(o);
        return;
    }
}

static cv_slot_state slot_state(const corvid_slot_status *s) {
    if (!s) return CV_SLOT_ABSENT;
    if (strcmp(s->state, "ready") == 0) return CV_SLOT_READY;
    if (strcmp(s->state, "loading") == 0) return CV_SLOT_LOADING;
    if (strcmp(s->state, "failed") == 0) return CV_SLOT_FAILED;
    return CV_SLOT_DRAINING;
}

/* Whether the server's weights are the desired ones (versions not named: 0). */
static bool weights_match(const cv_fleet_server *s, const cv_rollout_desired *d) {
    for (size_t i = 0; i < s->status.n_slots; i++) {
        const corvid_slot_status *slot = &s->status.slots[i];
        uint32_t want = 0;
        for (size_t k = 0; k < d->n_weights; k++)
            if (strcmp(d->weight_versions[k], slot->version) == 0) want = d->weights[k];
        if (slot->weight != want) return false;
    }
    for (size_t k = 0; k < d->n_weights; k++)
        if (d->weights[k] > 0 && !cv_fleet_slot(s, d->weight_versions[k])) return false;
    return true;
}

/* The version with the most weight over the fleet: the active one when no status says. */
static const char *serving_version(cv_fleet *f) {
    const char *best = "";
    uint64_t best_w = 0;
    for (size_t i = 0; i < cv_fleet_count(f); i++) {
        cv_fleet_server *s = cv_fleet_at(f, i);
        for (size_t k = 0; s->reachable && k < s->status.n_slots; k++) {
            const char *v = s->status.slots[k].version;
            uint64_t w = 0;
            for (size_t j = 0; j < cv_fleet_count(f); j++) {
                const corvid_slot_status *o = cv_fleet_slot(cv_fleet_at(f, j), v);
                if (o) w += o->weight;
            }
            if (w > best_w) best = v, best_w = w;
        }
    }
    return best;
}

static bool smoke_passed_before(controller *c, const char *key) {
    for (size_t i = 0; i < c->n_smoked; i++)
        if (strcmp(c->smoked[i], key) == 0) return true;
    return false;
}

/* One short generation pinned to the candidate: 1 passed, -1 failed (message in why). */
static int smoke(controller *c, cv_fleet_server *s, const cv_rollout_status *st, char *why,
                 size_t cap) {
    char key[384];
    snprintf(key, sizeof key, "%.60s/%.127s@%.180s", st->id, st->candidate, s->addr);
    if (smoke_passed_before(c, key)) return 1;
    corvid_generate_params p = {.prompt = c->cfg->smoke_prompt, .model_version = st->candidate};
    p.sampling.max_tokens = (uint32_t)c->cfg->smoke_tokens;
    corvid_stream *stream;
    corvid_error ce;
    corvid_event ev;
    int rc = corvid_generate(s->client, &p, &stream, &ce), tokens = 0;
    if (rc == 0) {
        while ((rc = corvid_stream_next(stream, &ev, &ce)) == 1)
            if (ev.kind == CORVID_EVENT_CHUNK) tokens += (int)ev.n_token_ids;
        corvid_stream_free(stream);
    }
    if (rc < 0) cv_cp_metrics_count_server_error(c->metrics, ce.code);
    if (rc < 0 || tokens == 0) {
        snprintf(why, cap, "%s: %.200s", rc < 0 ? corvid_code_name(ce.code) : "no tokens",
                 rc < 0 ? ce.message : "the stream ended empty");
        return -1;
    }
    snprintf(c->smoked[c->next_smoked], sizeof c->smoked[0], "%s", key);
    c->next_smoked = (c->next_smoked + 1) % SMOKE_MEMO;
    if (c->n_smoked < SMOKE_MEMO) c->n_smoked++;
    return 1;
}

/* What to look at when a server refuses the control plane. */
static const char *hint(const cv_cp_config *cfg, int code) {
    if (code == CORVID_UNAUTHENTICATED)
        return cfg->token_file[0] || cfg->token_env[0]
                   ? " (the server refused the token of server_token_file/server_token_env)"
                   : " (the server wants a token: set server_token_file or server_token_env)";
    if (code == CORVID_PERMISSION_DENIED) return " (the token needs the admin scope)";
    if (code == CORVID_UNAVAILABLE)
        return cfg->tls_ca[0] ? " (down, unreachable, or TLS refused: check server_tls)"
                              : " (down, unreachable, or it wants TLS: see server_tls)";
    return "";
}

/* A failed call to a server: logged and counted. `what` names the call and its version. */
static void server_failed(controller *c, const char *model, const cv_fleet_server *s,
                          const char *what, const char *version, const corvid_error *ce) {
    cv_cp_metrics_count_server_error(c->metrics, ce->code);
    logf_(model, "server %s: %s%s%s: %s: %s%s", s->addr, what, version ? " " : "", version ? version : "",
          corvid_code_name(ce->code), ce->message, hint(c->cfg, ce->code));
}

/* Drives one server towards the desired state; failures wait for the next tick. */
static void apply(controller *c, const model_keys *mk, cv_fleet_server *s,
                  const cv_rollout_desired *d) {
    corvid_error ce;
    for (size_t i = 0; i < d->n_load; i++) {
        if (cv_fleet_slot(s, d->load[i])) continue;
        version_rec v;
        version_lookup(mk, d->load[i], &v);
        if (!v.found) {
            logf_(mk->name, "server %s lacks %s, which is not registered: cannot load it", s->addr,
                  d->load[i]);
            continue;
        }
        if (corvid_admin_load(s->client, d->load[i], v.uri, v.sha256[0] ? v.sha256 : NULL, 0, NULL,
                              &ce) != 0)
            server_failed(c, mk->name, s, "loading", d->load[i], &ce);
    }
    /* Weights only onto ready versions; a server still loading the candidate (one that
     * joined mid-rollout) stays on the active version until it is ready. */
    cv_rollout_desired eff = *d;
    for (size_t k = 0; k < d->n_weights; k++) {
        if (d->weights[k] > 0 && slot_state(cv_fleet_slot(s, d->weight_versions[k])) != CV_SLOT_READY) {
            eff.n_weights = 1;
            eff.weights[0] = 100;
            break;
        }
    }
    if (eff.n_weights && slot_state(cv_fleet_slot(s, eff.weight_versions[0])) == CV_SLOT_READY &&
        !weights_match(s, &eff)) {
        if (corvid_admin_set_traffic(s->client, eff.weight_versions, eff.weights, eff.n_weights,
                                     &ce) != 0)
            server_failed(c, mk->name, s, "set traffic", NULL, &ce);
    }
    const corvid_slot_status *old = d->unload ? cv_fleet_slot(s, d->unload) : NULL;
    if (old && slot_state(old) != CV_SLOT_DRAINING && slot_state(old) != CV_SLOT_LOADING &&
        corvid_admin_unload(s->client, d->unload, 0, NULL, &ce) != 0)
        server_failed(c, mk->name, s, "unloading", d->unload, &ce);
}

static cv_status put_fenced(controller *c, const char *key, const char *value, cv_error *err) {
    return cv_election_put(c->election, key, value, strlen(value), NULL, err);
}

static void mark_failed(controller *c, const model_keys *mk, const char *version,
                        const char *reason) {
    char key[512];
    snprintf(key, sizeof key, "%.*sversions/%s", (int)mk->prefix_len, mk->rollout->key, version);
    for (size_t i = 0; i < mk->n_all; i++) {
        if (strcmp(mk->all[i].key, key) != 0) continue;
        json_t *o = json_loadb(mk->all[i].value, mk->all[i].value_len, 0, NULL);
        if (!json_is_object(o)) break;
        json_object_set_new(o, "failed", json_string(reason));
        char *text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
        cv_error err;
        if (text && put_fenced(c, key, text, &err) != CV_OK)
            logf_(mk->name, "marking %s failed: %s", version, err.msg);
        free(text);
        json_decref(o);
        break;
    }
}

/* The phase etcd holds for the model: none without a readable status. */
static cv_rollout_phase status_phase(const model_keys *mk) {
    cv_rollout_status st;
    if (!mk->status ||
        cv_rollout_status_parse(mk->status->value, mk->status->value_len, &st, NULL) != CV_OK)
        return CV_PHASE_NONE;
    return st.phase;
}

/* What a status write that moved the rollout means for the counters. */
static void count_events(controller *c, const char *model, const char *was_id,
                         cv_rollout_phase was, const cv_rollout_status *st) {
    if (strcmp(was_id, st->id) != 0 && st->phase == CV_PHASE_STAGING)
        cv_cp_metrics_count_rollout(c->metrics, model, CV_CP_ROLLOUT_STARTED);
    if (st->phase == was) return;
    if (st->phase == CV_PHASE_PROMOTED)
        cv_cp_metrics_count_rollout(c->metrics, model, CV_CP_ROLLOUT_COMPLETED);
    if (st->phase == CV_PHASE_ROLLED_BACK)
        cv_cp_metrics_count_rollout(c->metrics, model, CV_CP_ROLLOUT_ROLLED_BACK);
}

/* ---- tracing: one trace per rollout (trace.h) ----
 * Its ids come from the model and the rollout id, so that every leader, including one
 * that takes over half-way, adds its phases to the same trace, under the same root. */
static void rollout_trace(const char *model, const char *id, cv_trace_ctx *out) {
    uint64_t h[3] = {0xcbf29ce484222325ull, 0x84222325cbf29ce4ull, 0x9e3779b97f4a7c15ull};
    for (int k = 0; k < 3; k++) {
        for (const char *p = model; *p; p++) h[k] = (h[k] ^ (uint8_t)*p) * 0x100000001b3ull;
        h[k] = (h[k] ^ 0xff) * 0x100000001b3ull; /* keeps "ab"+"c" apart from "a"+"bc" */
        for (const char *p = id; *p; p++) h[k] = (h[k] ^ (uint8_t)*p) * 0x100000001b3ull;
    }
    memset(out, 0, sizeof *out);
    for (int i = 0; i < 8; i++) {
        out->trace_id[i] = (uint8_t)(h[0] >> (8 * i));
        out->trace_id[8 + i] = (uint8_t)(h[1] >> (8 * i));
        out->span_id[i] = (uint8_t)(h[2] >> (8 * i)) | (i == 0); /* never all zero */
    }
    out->sampled = 1;
}

static void rollout_attrs(cv_span *sp, const char *model, const cv_rollout_status *st) {
    cv_span_set_str(sp, "corvid.rollout.model", model);
    cv_span_set_str(sp, "corvid.rollout.id", st->id);
    /* Promotion makes the candidate the active version (and clears candidate). */
    cv_span_set_str(sp, "corvid.rollout.candidate", st->phase == CV_PHASE_PROMOTED ? st->active : st->candidate);
    cv_span_set_int(sp, "corvid.rollout.step", st->step);
    cv_span_set_int(sp, "corvid.rollout.traffic_percent", st->traffic);
}

/* The phase that just ended (was, since since_ms) as a span under the rollout's root;
 * when the rollout is over, the root itself, from the start of its staging. */
static void trace_phase(const char *model, const cv_rollout_status *st, cv_rollout_phase was, int64_t since_ms,
                        int64_t now_ms) {
    if (!st->id[0] || was == CV_PHASE_NONE) return;
    cv_trace_ctx root;
    rollout_trace(model, st->id, &root);
    char name[64];
    snprintf(name, sizeof name, "rollout.%s", cv_rollout_phase_name(was));
    cv_span *sp = cv_span_start(&root, name, CV_SPAN_INTERNAL, (uint64_t)since_ms * 1000000u, NULL);
    rollout_attrs(sp, model, st);
    cv_span_set_str(sp, "corvid.rollout.decision", st->message);
    if (st->phase == CV_PHASE_ROLLING_BACK || st->phase == CV_PHASE_FAILED) cv_span_set_error(sp, st->message);
    cv_span_end(sp, (uint64_t)now_ms * 1000000u);
    if (st->phase != CV_PHASE_PROMOTED && st->phase != CV_PHASE_ROLLED_BACK && st->phase != CV_PHASE_FAILED) return;
    int64_t start = since_ms;
    for (size_t i = 0; i < st->n_history; i++)
        if (st->history[i].phase == CV_PHASE_STAGING) start = st->history[i].at_ms;
    char root_name[64 + CV_ROLLOUT_NAME];
    snprintf(root_name, sizeof root_name, "rollout %s", model);
    cv_span *r = cv_span_start_as(&root, root_name, CV_SPAN_INTERNAL, (uint64_t)start * 1000000u);
    rollout_attrs(r, model, st);
    cv_span_set_str(r, "corvid.rollout.outcome", cv_rollout_phase_name(st->phase));
    if (st->phase != CV_PHASE_PROMOTED) cv_span_set_error(r, st->message);
    cv_span_end(r, (uint64_t)now_ms * 1000000u);
}

/* One reconcile of one model; returns the phase etcd holds for it afterwards. */
static cv_rollout_phase reconcile_model(controller *c, const model_keys *mk) {
    cv_error err;
    cv_rollout_spec spec;
    cv_rollout_status st;
    memset(&st, 0, sizeof st);
    if (cv_rollout_spec_parse(mk->rollout->value, mk->rollout->value_len, &c->cfg->defaults, &spec,
                              &err) != CV_OK) {
        logf_(mk->name, "%s", err.msg);
        return status_phase(mk);
    }
    if (mk->status &&
        cv_rollout_status_parse(mk->status->value, mk->status->value_len, &st, &err) != CV_OK) {
        logf_(mk->name, "%s; starting from an empty status", err.msg);
        memset(&st, 0, sizeof st);
    }
    cv_rollout_phase held = st.phase;
    int64_t now = wall_ms();
    size_t n = cv_fleet_count(c->fleet);
    cv_rollout_server_obs *obs_s = calloc(n ? n : 1, sizeof *obs_s);
    const corvid_slot_status **slots = calloc(n ? n : 1, sizeof *slots);
    const char **names = calloc(n ? n : 1, sizeof *names);
    bool *up = calloc(n ? n : 1, sizeof *up);
    char(*smoke_why)[256] = calloc(n ? n : 1, sizeof *smoke_why);
    if (!obs_s || !slots || !names || !up || !smoke_why) {
        logf_(mk->name, "out of memory");
        goto out;
    }
    cv_rollout_desired before;
    cv_rollout_desired_state(&spec, &c->limits, &st, now, &before);
    for (size_t i = 0; i < n; i++) {
        cv_fleet_server *s = cv_fleet_at(c->fleet, i);
        const corvid_slot_status *cand = st.candidate[0] ? cv_fleet_slot(s, st.candidate) : NULL;
        obs_s[i] = (cv_rollout_server_obs){.addr = s->addr, .reachable = s->reachable,
                                           .candidate = slot_state(cand),
                                           .candidate_message = cand ? cand->message : NULL,
                                           .weights_applied = s->reachable && weights_match(s, &before)};
        if (st.phase == CV_PHASE_STAGING && obs_s[i].candidate == CV_SLOT_READY) {
            obs_s[i].smoke = smoke(c, s, &st, smoke_why[i], sizeof smoke_why[i]);
            obs_s[i].smoke_message = smoke_why[i];
        }
        slots[i] = cand;
        names[i] = s->addr;
        up[i] = s->reachable;
    }
    version_rec target;
    version_lookup(mk, spec.target, &target);
    cv_analysis_result analysis;
    cv_rollout_obs obs = {.now_ms = now, .serving = serving_version(c->fleet),
                          .target_registered = target.found, .servers = obs_s, .n_servers = n};
    if (st.phase == CV_PHASE_OBSERVING) {
        cv_analysis_thresholds th = {spec.max_error_rate, spec.max_p99_ttft_ms,
                                     (uint64_t)spec.min_requests};
        cv_analysis_judge(slots, names, up, n, &th, &analysis);
        obs.analysis = &analysis;
    }
    cv_rollout_phase was = st.phase;
    int64_t was_since = st.phase_since_ms;
    char was_id[sizeof st.id];
    memcpy(was_id, st.id, sizeof was_id);
    if (cv_rollout_step(&spec, &c->limits, &obs, &st)) {
        char *json = cv_rollout_status_json(&st);
        char key[512];
        snprintf(key, sizeof key, "%.*sstatus", (int)mk->prefix_len, mk->rollout->key);
        cv_status rc = json ? put_fenced(c, key, json, &err) : cv_errorf(&err, CV_ENOMEM, "out of memory");
        free(json);
        if (rc != CV_OK) {
            logf_(mk->name, "writing the status: %s (servers left alone)", err.msg);
            goto out;
        }
        held = st.phase;
        count_events(c, mk->name, was_id, was, &st);
        if (st.phase != was) {
            logf_(mk->name, "%s -> %s: %s", cv_rollout_phase_name(was),
                  cv_rollout_phase_name(st.phase), st.message);
            if (!strcmp(was_id, st.id)) trace_phase(mk->name, &st, was, was_since, wall_ms());
        }
        if (st.phase == CV_PHASE_ROLLING_BACK && was != CV_PHASE_ROLLING_BACK && st.candidate[0])
            mark_failed(c, mk, st.candidate, st.message);
    }
    cv_rollout_desired want;
    cv_rollout_desired_state(&spec, &c->limits, &st, now, &want);
    /* The Admin calls that carry the rollout out join its trace on the servers. */
    char tp[CV_TRACEPARENT_LEN + 1] = "";
    if (st.id[0]) {
        cv_trace_ctx root;
        rollout_trace(mk->name, st.id, &root);
        cv_traceparent_format(&root, tp);
    }
    corvid_trace_context(tp);
    for (size_t i = 0; i < n; i++) {
        cv_fleet_server *s = cv_fleet_at(c->fleet, i);
        if (s->reachable) apply(c, mk, s, &want);
    }
    corvid_trace_context(NULL);
out:
    free(obs_s);
    free(slots);
    free(names);
    free(up);
    free(smoke_why);
    return held;
}

/* The observation window the probes ask for: the longest of the rollouts' windows. */
static uint32_t probe_window(controller *c, const cv_etcd_range_result *r) {
    uint32_t w = 1;
    for (size_t i = 0; i < r->n_kvs; i++) {
        const char *slash = strrchr(r->kvs[i].key, '/');
        cv_rollout_spec spec;
        if (!slash || strcmp(slash, "/rollout") != 0 ||
            cv_rollout_spec_parse(r->kvs[i].value, r->kvs[i].value_len, &c->cfg->defaults, &spec,
                                  NULL) != CV_OK)
            continue;
        uint32_t s = (uint32_t)((spec.window_ms + 999) / 1000);
        if (s > w) w = s;
    }
    return w;
}

/* Probes the fleet; a server whose answer changed is logged, every failure counted. */
static size_t probe(controller *c, uint32_t window_s) {
    cv_fleet_probe(c->fleet, window_s);
    size_t healthy = 0;
    for (size_t i = 0; i < cv_fleet_count(c->fleet); i++) {
        cv_fleet_server *s = cv_fleet_at(c->fleet, i);
        if (s->reachable) {
            healthy++;
            if (s->changed) logf_("fleet", "server %s answers", s->addr);
            continue;
        }
        cv_cp_metrics_count_server_error(c->metrics, s->error_code);
        if (s->changed)
            logf_("fleet", "server %s: GetStatus: %s%s", s->addr, s->error, hint(c->cfg, s->error_code));
    }
    return healthy;
}

/* Every replica reads the models' keys (readiness, the phases it reports); the leader
 * then probes the fleet and reconciles each model. */
static void tick(controller *c, const char *models_prefix, bool leader) {
    cv_error err;
    cv_etcd_range_result r;
    cv_etcd_range_req req = {.key = models_prefix, .prefix = true};
    cv_status got = cv_etcd_range(c->etcd, &req, &r, &err);
    cv_cp_metrics_set_etcd(c->metrics, got == CV_OK, cv_etcd_failed_calls(c->etcd));
    if (got != CV_OK) {
        logf_("etcd", "%s", err.msg);
        return;
    }
    long healthy = leader ? (long)probe(c, probe_window(c, &r)) : -1;
    cv_cp_metrics_set_fleet(c->metrics, cv_fleet_count(c->fleet), healthy);
    const char *names[CV_CP_METRICS_MODELS];
    cv_rollout_phase phases[CV_CP_METRICS_MODELS];
    model_keys *mks = calloc(CV_CP_METRICS_MODELS, sizeof *mks);
    size_t n_models = 0, plen = strlen(models_prefix);
    for (size_t i = 0; i < r.n_kvs; i++) {
        const cv_etcd_kv *kv = &r.kvs[i];
        const char *rest = kv->key + plen, *slash = strchr(rest, '/');
        if (kv->key_len <= plen || !slash || strcmp(slash, "/rollout") != 0 ||
            (size_t)(slash - rest) >= CV_ROLLOUT_NAME)
            continue;
        model_keys mk = {.rollout = kv, .all = r.kvs, .n_all = r.n_kvs,
                         .prefix_len = (size_t)(slash - kv->key) + 1};
        memcpy(mk.name, rest, (size_t)(slash - rest));
        for (size_t k = 0; k < r.n_kvs; k++)
            if (r.kvs[k].key_len == mk.prefix_len + 6 &&
                strncmp(r.kvs[k].key, kv->key, mk.prefix_len) == 0 &&
                strcmp(r.kvs[k].key + mk.prefix_len, "status") == 0)
                mk.status = &r.kvs[k];
        cv_rollout_phase phase = leader ? reconcile_model(c, &mk) : status_phase(&mk);
        if (!mks || n_models == CV_CP_METRICS_MODELS) continue; /* not reported, still run */
        mks[n_models] = mk;
        names[n_models] = mks[n_models].name;
        phases[n_models++] = phase;
    }
    if (mks) cv_cp_metrics_set_phases(c->metrics, names, phases, n_models);
    free(mks);
    cv_etcd_range_result_free(&r);
}

static void publish_creds_stats(controller *c) {
    cv_server_creds_stats cs;
    cv_server_creds_store_stats(c->creds, &cs);
    cv_cp_metrics_set_creds(c->metrics, cs.reloads, cs.errors, cs.loaded_unix_ms, cs.last_ok);
}

/* Looks at the credential files when due and moves the fleet onto the set in use: every
 * server gets a new client, so connections made with a revoked token or certificate
 * close. A refused version is logged once (the store tries each version once). */
static void refresh_creds(controller *c) {
    cv_error err;
    char moved[128];
    cv_server_creds_change ch = cv_server_creds_store_refresh(c->creds, clock_ms(CLOCK_MONOTONIC),
                                                              CREDS_CHECK_MS, moved, sizeof moved, &err);
    if (ch != CV_CREDS_UNCHANGED) publish_creds_stats(c);
    if (ch == CV_CREDS_REFUSED)
        logf_("credentials", "%s: still presenting the last good credentials; tried again when a "
              "file changes", err.msg);
    else if (ch == CV_CREDS_RELOADED)
        logf_("credentials", "reloaded (%s changed): new clients for %zu servers", moved,
              cv_fleet_count(c->fleet));
    const cv_server_creds *now = cv_server_creds_store_get(c->creds);
    if (now == c->fleet_creds) { /* the same while we hold it: it cannot be freed and reused */
        cv_server_creds_release(now);
        return;
    }
    if (cv_fleet_set_creds(c->fleet, now, &err) != CV_OK) {
        logf_("credentials", "remaking the servers' clients: %s (tried again on the next tick)", err.msg);
        cv_server_creds_release(now);
        return;
    }
    cv_server_creds_release(c->fleet_creds);
    c->fleet_creds = now;
}

cv_status cv_controller_run(const cv_cp_config *cfg, cv_cp_metrics *metrics,
                            volatile sig_atomic_t *stop, cv_error *err) {
    controller c = {.cfg = cfg,
                    .metrics = metrics,
                    .limits = {.stage_ms = cfg->stage_deadline_s * 1000LL,
                               .shift_ms = cfg->shift_deadline_s * 1000LL,
                               .observe_ms = cfg->observe_deadline_s * 1000LL,
                               .unmeasurable_ms = cfg->unmeasurable_deadline_s * 1000LL,
                               .keep_previous_ms = cfg->keep_previous_s * 1000LL,
                               .judge_ms = cfg->poll_ms}};
    cv_etcd_watch *watch = NULL;
    char models_prefix[160];
    snprintf(models_prefix, sizeof models_prefix, "%s/models/", cfg->prefix);
    cv_etcd_config ec = {.endpoints = cfg->etcd, .timeout_ms = 3000, .attempt_timeout_ms = 1000};
    cv_election_config el = {.prefix = cfg->prefix, .id = cfg->id, .ttl_s = cfg->election_ttl_s};
    cv_etcd_watch_config wc = {.prefix = models_prefix, .idle_timeout_ms = 30000};
    cv_status st = cv_server_creds_store_open(cfg, &c.creds, err);
    if (st) return st;
    publish_creds_stats(&c);
    c.fleet_creds = cv_server_creds_store_get(c.creds);
    if ((st = cv_etcd_open(&ec, &c.etcd, err)) ||
        (st = cv_fleet_open(cfg, c.fleet_creds, &c.fleet, err)) ||
        (st = cv_election_start(c.etcd, &el, &c.election, err)) ||
        (st = cv_etcd_watch_start(c.etcd, &wc, &watch, err)))
        goto done;
    bool was_leader = false;
    while (!*stop) {
        struct pollfd pfd = {.fd = cv_etcd_watch_fd(watch), .events = POLLIN};
        poll(&pfd, 1, cfg->poll_ms);
        cv_etcd_watch_event ev;
        while (cv_etcd_watch_next(watch, 0, &ev, NULL) == CV_OK) cv_etcd_watch_event_free(&ev);
        refresh_creds(&c); /* before the fleet makes clients for servers that join */
        bool changed;
        cv_error ferr;
        if (cv_fleet_refresh(c.fleet, wall_ms(), &changed, &ferr) != CV_OK)
            logf_("fleet", "%s (keeping %zu servers)", ferr.msg, cv_fleet_count(c.fleet));
        else if (changed)
            logf_("fleet", "%zu servers now", cv_fleet_count(c.fleet));
        cv_election_status es;
        cv_election_get_status(c.election, &es);
        if (es.leader != was_leader)
            logf_("election", "%s %s", cfg->id, es.leader ? "is the leader" : "is a follower");
        was_leader = es.leader;
        cv_cp_metrics_set_leader(metrics, es.leader);
        tick(&c, models_prefix, es.leader);
    }
done:
    if (watch) cv_etcd_watch_stop(watch);
    if (c.election) cv_election_stop(c.election);
    cv_fleet_close(c.fleet);
    cv_etcd_close(c.etcd);
    cv_server_creds_release(c.fleet_creds);
    cv_server_creds_store_close(c.creds);
    cv_cp_metrics_set_leader(metrics, false);
    return st;
}
