#include "rollout.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const phase_names[] = {
    [CV_PHASE_NONE] = "none",           [CV_PHASE_STAGING] = "staging",
    [CV_PHASE_SHIFTING] = "shifting",   [CV_PHASE_OBSERVING] = "observing",
    [CV_PHASE_PROMOTED] = "promoted",   [CV_PHASE_ROLLING_BACK] = "rolling_back",
    [CV_PHASE_ROLLED_BACK] = "rolled_back", [CV_PHASE_PAUSED] = "paused",
    [CV_PHASE_FAILED] = "failed",
};

const char *cv_rollout_phase_name(cv_rollout_phase p) {
    return (unsigned)p < sizeof phase_names / sizeof phase_names[0] ? phase_names[p] : "?";
}

static int phase_from_name(const char *s) {
    for (size_t i = 0; i < sizeof phase_names / sizeof phase_names[0]; i++)
        if (strcmp(s, phase_names[i]) == 0) return (int)i;
    return -1;
}

bool cv_rollout_in_flight(cv_rollout_phase p) {
    return p == CV_PHASE_STAGING || p == CV_PHASE_SHIFTING || p == CV_PHASE_OBSERVING ||
           p == CV_PHASE_PAUSED || p == CV_PHASE_ROLLING_BACK;
}

/* ---- parsing (etcd values are untrusted: every field checked) ---- */

static cv_status get_str(json_t *o, const char *key, char *dst, size_t cap, bool required,
                         cv_error *err) {
    json_t *v = json_object_get(o, key);
    if (!v) return required ? cv_errorf(err, CV_EFORMAT, "\"%s\" is missing", key) : CV_OK;
    if (!json_is_string(v)) return cv_errorf(err, CV_EFORMAT, "\"%s\" must be a string", key);
    if (json_string_length(v) >= cap)
        return cv_errorf(err, CV_ERANGE, "\"%s\" is %zu bytes, limit %zu", key,
                         json_string_length(v), cap - 1);
    memcpy(dst, json_string_value(v), json_string_length(v) + 1);
    return CV_OK;
}

static cv_status get_num(json_t *o, const char *key, double lo, double hi, double *dst,
                         cv_error *err) {
    json_t *v = json_object_get(o, key);
    if (!v) return CV_OK;
    if (!json_is_number(v)) return cv_errorf(err, CV_EFORMAT, "\"%s\" must be a number", key);
    double d = json_number_value(v);
    if (!(d >= lo && d <= hi))
        return cv_errorf(err, CV_ERANGE, "\"%s\" is %g, allowed %g..%g", key, d, lo, hi);
    *dst = d;
    return CV_OK;
}

static cv_status get_int(json_t *o, const char *key, double lo, double hi, int64_t *dst,
                         cv_error *err) {
    double d = (double)*dst;
    cv_status s = get_num(o, key, lo, hi, &d, err);
    if (s == CV_OK) *dst = (int64_t)d;
    return s;
}

static cv_status get_bool(json_t *o, const char *key, bool *dst, cv_error *err) {
    json_t *v = json_object_get(o, key);
    if (!v) return CV_OK;
    if (!json_is_boolean(v)) return cv_errorf(err, CV_EFORMAT, "\"%s\" must be true or false", key);
    *dst = json_is_true(v);
    return CV_OK;
}

static cv_status check_steps(const int *steps, size_t n, cv_error *err) {
    if (n == 0) return cv_errorf(err, CV_EINVAL, "steps: none given");
    for (size_t i = 0; i < n; i++) {
        if (steps[i] < 1 || steps[i] > 100 || (i > 0 && steps[i] <= steps[i - 1]))
            return cv_errorf(err, CV_ERANGE,
                             "steps: %d at position %zu (each 1..100, increasing)", steps[i], i);
    }
    if (steps[n - 1] != 100)
        return cv_errorf(err, CV_EINVAL, "steps: the last step is %d, it must be 100", steps[n - 1]);
    return CV_OK;
}

cv_status cv_rollout_steps_parse(const char *text, int *steps, size_t *n, cv_error *err) {
    *n = 0;
    const char *p = text;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || (*end && *end != ','))
            return cv_errorf(err, CV_EINVAL, "steps: \"%s\" is not a list such as 10,50,100", text);
        if (*n == CV_ROLLOUT_MAX_STEPS)
            return cv_errorf(err, CV_ERANGE, "steps: more than %d", CV_ROLLOUT_MAX_STEPS);
        steps[(*n)++] = v < 0 || v > 1000 ? -1 : (int)v;
        p = *end ? end + 1 : end;
    }
    return check_steps(steps, *n, err);
}

static cv_status parse_object(const char *text, size_t len, json_t **out, cv_error *err) {
    json_error_t je;
    *out = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!*out) return cv_errorf(err, CV_EFORMAT, "line %d: %s", je.line, je.text);
    if (!json_is_object(*out)) {
        json_decref(*out);
        return cv_errorf(err, CV_EFORMAT, "not a JSON object");
    }
    return CV_OK;
}

static cv_status spec_fields(json_t *o, cv_rollout_spec *s, cv_error *err) {
    static const char *const known[] = {"id", "target", "strategy", "steps", "max_error_rate",
                                        "max_p99_ttft_ms", "window_ms", "min_requests",
                                        "failure_limit", "paused", "abort", "promote", NULL};
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v) {
        size_t i = 0;
        while (known[i] && strcmp(known[i], key) != 0) i++;
        if (!known[i]) return cv_errorf(err, CV_EFORMAT, "unknown key \"%s\"", key);
    }
    cv_status st;
    char strategy[16] = "";
    if ((st = get_str(o, "id", s->id, sizeof s->id, false, err)) ||
        (st = get_str(o, "target", s->target, sizeof s->target, false, err)) ||
        (st = get_str(o, "strategy", strategy, sizeof strategy, false, err)))
        return st;
    if (strategy[0]) {
        if (strcmp(strategy, "bluegreen") != 0 && strcmp(strategy, "canary") != 0)
            return cv_errorf(err, CV_EINVAL, "\"strategy\" is \"%s\": bluegreen or canary", strategy);
        s->canary = strategy[0] == 'c';
    }
    json_t *steps = json_object_get(o, "steps");
    if (steps) {
        if (!json_is_array(steps) || json_array_size(steps) > CV_ROLLOUT_MAX_STEPS)
            return cv_errorf(err, CV_EFORMAT, "\"steps\" must be an array of at most %d numbers",
                             CV_ROLLOUT_MAX_STEPS);
        s->n_steps = json_array_size(steps);
        for (size_t i = 0; i < s->n_steps; i++) {
            json_t *e = json_array_get(steps, i);
            if (!json_is_integer(e)) return cv_errorf(err, CV_EFORMAT, "\"steps\"[%zu] must be an integer", i);
            json_int_t k = json_integer_value(e);
            s->steps[i] = k < 0 || k > 1000 ? -1 : (int)k;
        }
        if ((st = check_steps(s->steps, s->n_steps, err))) return st;
    }
    int64_t window = s->window_ms, minreq = s->min_requests, limit = s->failure_limit;
    if ((st = get_num(o, "max_error_rate", 0, 1, &s->max_error_rate, err)) ||
        (st = get_num(o, "max_p99_ttft_ms", 0, 3.6e6, &s->max_p99_ttft_ms, err)) ||
        (st = get_int(o, "window_ms", 100, 86400e3, &window, err)) ||
        (st = get_int(o, "min_requests", 0, 1e9, &minreq, err)) ||
        (st = get_int(o, "failure_limit", 1, 1000, &limit, err)) ||
        (st = get_bool(o, "paused", &s->paused, err)) ||
        (st = get_bool(o, "abort", &s->abort, err)) ||
        (st = get_bool(o, "promote", &s->promote, err)))
        return st;
    s->window_ms = (int)window;
    s->min_requests = (int)minreq;
    s->failure_limit = (int)limit;
    return CV_OK;
}

cv_status cv_rollout_spec_parse(const char *text, size_t len, const cv_rollout_spec *defaults,
                                cv_rollout_spec *out, cv_error *err) {
    json_t *o;
    cv_status st = parse_object(text, len, &o, err);
    if (st) return cv_error_wrap(err, "rollout");
    *out = *defaults;
    st = spec_fields(o, out, err);
    json_decref(o);
    if (!st && !out->canary) {
        out->steps[0] = 100;
        out->n_steps = 1;
    }
    if (!st && (!out->id[0] || !out->target[0]))
        st = cv_errorf(err, CV_EFORMAT, "\"id\" and \"target\" are required");
    return st ? cv_error_wrap(err, "rollout") : CV_OK;
}

cv_status cv_rollout_spec_fields(json_t *o, cv_rollout_spec *s, cv_error *err) {
    return spec_fields(o, s, err);
}

static cv_status get_phase(json_t *o, const char *key, cv_rollout_phase *dst, cv_error *err) {
    char name[32] = "none";
    cv_status st = get_str(o, key, name, sizeof name, false, err);
    if (st) return st;
    int p = phase_from_name(name);
    if (p < 0) return cv_errorf(err, CV_EFORMAT, "\"%s\" is \"%s\": not a phase", key, name);
    *dst = (cv_rollout_phase)p;
    return CV_OK;
}

cv_status cv_rollout_status_parse(const char *text, size_t len, cv_rollout_status *out,
                                  cv_error *err) {
    json_t *o;
    cv_status st = parse_object(text, len, &o, err);
    if (st) return cv_error_wrap(err, "status");
    memset(out, 0, sizeof *out);
    int64_t traffic = 0, step = 0, fails = 0;
    if ((st = get_str(o, "id", out->id, sizeof out->id, false, err)) ||
        (st = get_phase(o, "phase", &out->phase, err)) ||
        (st = get_phase(o, "paused_from", &out->paused_from, err)) ||
        (st = get_str(o, "active", out->active, sizeof out->active, false, err)) ||
        (st = get_str(o, "candidate", out->candidate, sizeof out->candidate, false, err)) ||
        (st = get_str(o, "previous", out->previous, sizeof out->previous, false, err)) ||
        (st = get_str(o, "message", out->message, sizeof out->message, false, err)) ||
        (st = get_int(o, "traffic", 0, 100, &traffic, err)) ||
        (st = get_int(o, "step", 0, CV_ROLLOUT_MAX_STEPS - 1, &step, err)) ||
        (st = get_int(o, "consecutive_failures", 0, 1e6, &fails, err)) ||
        (st = get_int(o, "phase_since_ms", 0, 9e15, &out->phase_since_ms, err)) ||
        (st = get_int(o, "step_since_ms", 0, 9e15, &out->step_since_ms, err)) ||
        (st = get_int(o, "unmeasurable_since_ms", 0, 9e15, &out->unmeasurable_since_ms, err)) ||
        (st = get_int(o, "judged_ms", 0, 9e15, &out->judged_ms, err)))
        goto done;
    out->traffic = (int)traffic;
    out->step = (int)step;
    out->consecutive_failures = (int)fails;
    json_t *h = json_object_get(o, "history");
    if (h && !json_is_array(h)) {
        st = cv_errorf(err, CV_EFORMAT, "\"history\" must be an array");
        goto done;
    }
    size_t n = json_array_size(h), skip = n > CV_ROLLOUT_HISTORY ? n - CV_ROLLOUT_HISTORY : 0;
    for (size_t i = skip; i < n; i++) {
        json_t *e = json_array_get(h, i);
        cv_rollout_event *ev = &out->history[out->n_history];
        if (!json_is_object(e)) {
            st = cv_errorf(err, CV_EFORMAT, "\"history\"[%zu] must be an object", i);
            goto done;
        }
        if ((st = get_int(e, "at_ms", 0, 9e15, &ev->at_ms, err)) ||
            (st = get_phase(e, "phase", &ev->phase, err)) ||
            (st = get_str(e, "message", ev->message, sizeof ev->message, false, err)))
            goto done;
        out->n_history++;
    }
done:
    json_decref(o);
    return st ? cv_error_wrap(err, "status") : CV_OK;
}

char *cv_rollout_status_json(const cv_rollout_status *st) {
    json_t *h = json_array();
    for (size_t i = 0; h && i < st->n_history; i++)
        json_array_append_new(h, json_pack("{sIssss}", "at_ms", (json_int_t)st->history[i].at_ms,
                                           "phase", cv_rollout_phase_name(st->history[i].phase),
                                           "message", st->history[i].message));
    json_t *o = json_pack(
        "{sssssssssssssisisisIsIsIsIssso}", "id", st->id, "phase", cv_rollout_phase_name(st->phase),
        "paused_from", cv_rollout_phase_name(st->paused_from), "active", st->active, "candidate",
        st->candidate, "previous", st->previous, "traffic", st->traffic, "step", st->step,
        "consecutive_failures", st->consecutive_failures, "phase_since_ms",
        (json_int_t)st->phase_since_ms, "step_since_ms", (json_int_t)st->step_since_ms,
        "unmeasurable_since_ms", (json_int_t)st->unmeasurable_since_ms, "judged_ms",
        (json_int_t)st->judged_ms, "message", st->message,
        "history", h);
    if (!o) return NULL;
    char *s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    return s;
}

/* ---- the state machine ---- */

static void set_phase(cv_rollout_status *st, cv_rollout_phase p, int64_t now, const char *fmt,
                      ...) __attribute__((format(printf, 4, 5)));
static void set_phase(cv_rollout_status *st, cv_rollout_phase p, int64_t now, const char *fmt,
                      ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st->message, sizeof st->message, fmt, ap);
    va_end(ap);
    st->phase = p;
    st->phase_since_ms = now;
    st->unmeasurable_since_ms = 0;
    if (st->n_history == CV_ROLLOUT_HISTORY) {
        memmove(st->history, st->history + 1, (CV_ROLLOUT_HISTORY - 1) * sizeof st->history[0]);
        st->n_history--;
    }
    cv_rollout_event *ev = &st->history[st->n_history++];
    ev->at_ms = now;
    ev->phase = p;
    snprintf(ev->message, sizeof ev->message, "%.255s", st->message);
}

static void roll_back(cv_rollout_status *st, int64_t now, const char *why) {
    st->traffic = 0;
    set_phase(st, CV_PHASE_ROLLING_BACK, now, "rolling back %s: %s", st->candidate, why);
}

static void start(const cv_rollout_spec *spec, const cv_rollout_obs *obs, cv_rollout_status *st) {
    int64_t now = obs->now_ms;
    snprintf(st->id, sizeof st->id, "%s", spec->id);
    if (!st->active[0]) snprintf(st->active, sizeof st->active, "%s", obs->serving);
    snprintf(st->candidate, sizeof st->candidate, "%s", spec->target);
    st->previous[0] = 0;
    st->traffic = st->step = st->consecutive_failures = 0;
    if (!obs->target_registered)
        set_phase(st, CV_PHASE_FAILED, now, "version %s is not registered (version add first)",
                  spec->target);
    else if (!st->active[0])
        set_phase(st, CV_PHASE_FAILED, now, "no server serves a version to roll back to");
    else if (strcmp(st->active, spec->target) == 0)
        set_phase(st, CV_PHASE_PROMOTED, now, "%s is already the active version", spec->target);
    else
        set_phase(st, CV_PHASE_STAGING, now, "staging %s next to %s on %zu servers", spec->target,
                  st->active, obs->n_servers);
}

/* The first unreachable server, or NULL. */
static const cv_rollout_server_obs *unreachable(const cv_rollout_obs *obs) {
    for (size_t i = 0; i < obs->n_servers; i++)
        if (!obs->servers[i].reachable) return &obs->servers[i];
    return NULL;
}

/* Holds while a server is unreachable; true (and rolled back) once that lasted too long. */
static bool hold_or_abort(const cv_rollout_limits *lim, const cv_rollout_obs *obs,
                          cv_rollout_status *st, bool *changed) {
    const cv_rollout_server_obs *down = unreachable(obs);
    if (!down) {
        if (st->unmeasurable_since_ms) *changed = true;
        st->unmeasurable_since_ms = 0;
        return false;
    }
    if (!st->unmeasurable_since_ms) {
        st->unmeasurable_since_ms = obs->now_ms;
        snprintf(st->message, sizeof st->message, "holding: server %s unreachable", down->addr);
        *changed = true;
    }
    if (obs->now_ms - st->unmeasurable_since_ms >= lim->unmeasurable_ms) {
        char why[256];
        snprintf(why, sizeof why, "server %s unreachable for %lld ms (limit %lld)", down->addr,
                 (long long)(obs->now_ms - st->unmeasurable_since_ms), (long long)lim->unmeasurable_ms);
        roll_back(st, obs->now_ms, why);
        *changed = true;
    }
    return true;
}

static void step_staging(const cv_rollout_limits *lim, const cv_rollout_obs *obs,
                         cv_rollout_status *st, bool *changed) {
    bool all = obs->n_servers > 0;
    for (size_t i = 0; i < obs->n_servers; i++) {
        const cv_rollout_server_obs *s = &obs->servers[i];
        char why[512];
        if (s->reachable && s->candidate == CV_SLOT_FAILED) {
            snprintf(why, sizeof why, "load failed on %s: %s", s->addr,
                     s->candidate_message ? s->candidate_message : "");
            roll_back(st, obs->now_ms, why);
            *changed = true;
            return;
        }
        if (s->smoke < 0) {
            snprintf(why, sizeof why, "smoke prompt failed on %s: %s", s->addr,
                     s->smoke_message ? s->smoke_message : "");
            roll_back(st, obs->now_ms, why);
            *changed = true;
            return;
        }
        if (!s->reachable || s->candidate != CV_SLOT_READY || s->smoke != 1) all = false;
    }
    if (all) {
        st->step = 0;
        set_phase(st, CV_PHASE_SHIFTING, obs->now_ms, "%s loaded and answered on every server",
                  st->candidate);
        *changed = true;
    } else if (obs->now_ms - st->phase_since_ms >= lim->stage_ms) {
        char why[128];
        snprintf(why, sizeof why, "staging not finished within %lld ms", (long long)lim->stage_ms);
        roll_back(st, obs->now_ms, why);
        *changed = true;
    }
}

static bool all_applied(const cv_rollout_obs *obs) {
    for (size_t i = 0; i < obs->n_servers; i++)
        if (obs->servers[i].reachable && !obs->servers[i].weights_applied) return false;
    return true;
}

static void promote(cv_rollout_status *st, int64_t now, const char *why) {
    snprintf(st->previous, sizeof st->previous, "%s", st->active);
    snprintf(st->active, sizeof st->active, "%s", st->candidate);
    st->candidate[0] = 0;
    st->traffic = 100;
    set_phase(st, CV_PHASE_PROMOTED, now, "%s promoted: %s", st->active, why);
}

static void step_observing(const cv_rollout_spec *spec, const cv_rollout_limits *lim,
                           const cv_rollout_obs *obs, cv_rollout_status *st, bool *changed) {
    const cv_analysis_result *a = obs->analysis;
    int64_t now = obs->now_ms, in_step = now - st->step_since_ms;
    bool last = (size_t)st->step + 1 >= spec->n_steps;
    if (spec->promote) {
        promote(st, now, "by the operator");
        *changed = true;
        return;
    }
    if (!a) return;
    bool counts = now - st->judged_ms >= lim->judge_ms;
    if (counts && (a->verdict == CV_VERDICT_FAIL || a->verdict == CV_VERDICT_PASS))
        st->judged_ms = now;
    if (a->verdict == CV_VERDICT_FAIL) {
        if (!counts) return;
        st->consecutive_failures++;
        snprintf(st->message, sizeof st->message, "%s (%d of %d)", a->message,
                 st->consecutive_failures, spec->failure_limit);
        *changed = true;
        if (st->consecutive_failures >= spec->failure_limit) roll_back(st, now, a->message);
        return;
    }
    if (a->verdict == CV_VERDICT_PASS) {
        if (st->consecutive_failures) *changed = true;
        st->consecutive_failures = 0;
        if (in_step >= spec->window_ms) {
            char why[512];
            snprintf(why, sizeof why, "step %d%% held for %lld ms, %s", st->traffic,
                     (long long)in_step, a->message);
            if (last) {
                promote(st, now, why);
            } else {
                st->step++;
                set_phase(st, CV_PHASE_SHIFTING, now, "%s", why);
            }
            *changed = true;
        }
        return;
    }
    if (in_step >= lim->observe_ms) {
        char why[512];
        snprintf(why, sizeof why, "no judgement within %lld ms: %s", (long long)lim->observe_ms,
                 a->message);
        roll_back(st, now, why);
        *changed = true;
    }
}

bool cv_rollout_step(const cv_rollout_spec *spec, const cv_rollout_limits *lim,
                     const cv_rollout_obs *obs, cv_rollout_status *st) {
    bool changed = false;
    int64_t now = obs->now_ms;
    if (!spec) return false;
    if (strcmp(st->id, spec->id) != 0) {
        if (cv_rollout_in_flight(st->phase) && st->phase != CV_PHASE_ROLLING_BACK) {
            char why[256];
            snprintf(why, sizeof why, "superseded by rollout %s of %s", spec->id, spec->target);
            roll_back(st, now, why);
            return true;
        }
        if (st->phase != CV_PHASE_ROLLING_BACK) {
            start(spec, obs, st);
            return true;
        }
    }
    if (spec->abort && cv_rollout_in_flight(st->phase) && st->phase != CV_PHASE_ROLLING_BACK) {
        roll_back(st, now, "aborted by the operator");
        return true;
    }
    if (spec->paused && (st->phase == CV_PHASE_STAGING || st->phase == CV_PHASE_SHIFTING ||
                         st->phase == CV_PHASE_OBSERVING)) {
        st->paused_from = st->phase;
        set_phase(st, CV_PHASE_PAUSED, now, "paused by the operator at %d%%", st->traffic);
        return true;
    }
    if (!spec->paused && st->phase == CV_PHASE_PAUSED) {
        cv_rollout_phase back = st->paused_from;
        st->step_since_ms = now;
        st->consecutive_failures = 0;
        set_phase(st, back == CV_PHASE_STAGING ? back : CV_PHASE_SHIFTING, now,
                  "resumed by the operator");
        return true;
    }
    switch (st->phase) {
    case CV_PHASE_STAGING:
        if (!hold_or_abort(lim, obs, st, &changed)) step_staging(lim, obs, st, &changed);
        break;
    case CV_PHASE_SHIFTING:
        if (hold_or_abort(lim, obs, st, &changed)) break;
        st->traffic = spec->steps[st->step];
        if (all_applied(obs)) {
            st->step_since_ms = now;
            st->consecutive_failures = 0;
            set_phase(st, CV_PHASE_OBSERVING, now, "%s at %d%% on every server, observing %d ms",
                      st->candidate, st->traffic, spec->window_ms);
            changed = true;
        } else if (now - st->phase_since_ms >= lim->shift_ms) {
            roll_back(st, now, "traffic weights not applied in time");
            changed = true;
        }
        break;
    case CV_PHASE_OBSERVING:
        if (!hold_or_abort(lim, obs, st, &changed)) step_observing(spec, lim, obs, st, &changed);
        break;
    case CV_PHASE_ROLLING_BACK:
        if (all_applied(obs)) {
            char why[384];
            snprintf(why, sizeof why, "%.383s", st->message);
            set_phase(st, CV_PHASE_ROLLED_BACK, now, "%.127s serves all traffic again; %s",
                      st->active, why);
            changed = true;
        }
        break;
    default:
        break;
    }
    return changed;
}

void cv_rollout_desired_state(const cv_rollout_spec *spec, const cv_rollout_limits *lim,
                              const cv_rollout_status *st, int64_t now_ms,
                              cv_rollout_desired *out) {
    memset(out, 0, sizeof *out);
    if (!st->active[0]) return;
    out->load[out->n_load++] = st->active;
    out->weight_versions[0] = st->active;
    out->weights[0] = 100;
    out->n_weights = 1;
    cv_rollout_phase p = st->phase == CV_PHASE_PAUSED ? st->paused_from : st->phase;
    switch (p) {
    case CV_PHASE_STAGING:
        out->load[out->n_load++] = st->candidate;
        break;
    case CV_PHASE_SHIFTING:
    case CV_PHASE_OBSERVING: {
        int t = p == CV_PHASE_SHIFTING && spec && (size_t)st->step < spec->n_steps
                    ? spec->steps[st->step] : st->traffic;
        out->load[out->n_load++] = st->candidate;
        out->weights[0] = (uint32_t)(100 - t);
        out->weight_versions[1] = st->candidate;
        out->weights[1] = (uint32_t)t;
        out->n_weights = 2;
        break;
    }
    case CV_PHASE_PROMOTED:
        if (st->previous[0] && now_ms - st->phase_since_ms >= lim->keep_previous_ms)
            out->unload = st->previous;
        break;
    case CV_PHASE_ROLLING_BACK:
    case CV_PHASE_ROLLED_BACK:
        if (st->candidate[0]) out->unload = st->candidate;
        break;
    default:
        break;
    }
}
