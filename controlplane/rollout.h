/* cv_rollout: the rollout state machine of one model, without I/O.
 *
 * The controller observes the fleet (per server: reachable, the candidate's slot
 * state, the smoke prompt's result, whether the server's weights are the desired
 * ones) and the analysis verdict, then calls cv_rollout_step, which moves the status
 * (kept in etcd at models/<model>/status, so a new leader resumes half-way) and
 * cv_rollout_desired, which says what every server must hold: the versions loaded,
 * the traffic weights and the versions to unload. The controller makes it so.
 *
 * Phases: staging (candidate loaded everywhere, sha256 checked by the server, smoke
 * prompt pinned to it) -> shifting (weights of the current step being applied) ->
 * observing (the step's window; analysis each tick) -> next step or promoted; any
 * failure -> rolling_back (weights back to the active version, candidate unloaded)
 * -> rolled_back. paused holds the weights until resumed; failed means nothing could
 * start (version not registered, no serving version found).
 *
 * Every phase has a deadline measured on the wall clock stored in the status.
 * A server that cannot be reached holds the rollout (nothing is judged on half the
 * fleet) until limits.unmeasurable_ms, then the rollout is rolled back. An observing
 * step that has not reached min_requests by limits.observe_ms is rolled back as
 * inconclusive: a rollout never waits forever.
 */
#ifndef CV_ROLLOUT_H
#define CV_ROLLOUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "analysis.h"
#include "cv_error.h"

#define CV_ROLLOUT_MAX_STEPS 16
#define CV_ROLLOUT_NAME 128
#define CV_ROLLOUT_HISTORY 12

/* models/<model>/rollout, written by the operator (the CLI). */
typedef struct cv_rollout_spec {
    char id[64];                  /* a new id starts a new rollout */
    char target[CV_ROLLOUT_NAME]; /* the candidate version */
    bool canary;                  /* false: blue-green (steps = {100}) */
    int steps[CV_ROLLOUT_MAX_STEPS]; /* candidate share per step, increasing, last 100 */
    size_t n_steps;
    double max_error_rate;  /* share of server-fault answers, 0..1 */
    double max_p99_ttft_ms; /* 0: not judged */
    int window_ms;          /* observation per step */
    int min_requests;       /* answered requests before any judgement */
    int failure_limit;      /* consecutive failing judgements that roll back */
    bool paused, abort, promote; /* operator commands */
} cv_rollout_spec;

typedef enum cv_rollout_phase {
    CV_PHASE_NONE = 0,
    CV_PHASE_STAGING,
    CV_PHASE_SHIFTING,
    CV_PHASE_OBSERVING,
    CV_PHASE_PROMOTED,
    CV_PHASE_ROLLING_BACK,
    CV_PHASE_ROLLED_BACK,
    CV_PHASE_PAUSED,
    CV_PHASE_FAILED,
} cv_rollout_phase;

typedef struct cv_rollout_event {
    int64_t at_ms;
    cv_rollout_phase phase;
    char message[256];
} cv_rollout_event;

/* models/<model>/status, written by the leader. */
typedef struct cv_rollout_status {
    char id[64];
    cv_rollout_phase phase, paused_from;
    char active[CV_ROLLOUT_NAME];    /* the version serving outside a rollout */
    char candidate[CV_ROLLOUT_NAME]; /* the version being rolled out (or rolled back) */
    char previous[CV_ROLLOUT_NAME];  /* after promotion: the old one, kept keep_previous */
    int traffic;                     /* candidate share now, percent */
    int step;
    int consecutive_failures;
    int64_t phase_since_ms, step_since_ms, unmeasurable_since_ms;
    int64_t judged_ms; /* when the last judgement counted */
    char message[512]; /* why the last decision was taken */
    cv_rollout_event history[CV_ROLLOUT_HISTORY]; /* oldest first */
    size_t n_history;
} cv_rollout_status;

typedef enum cv_slot_state {
    CV_SLOT_ABSENT = 0,
    CV_SLOT_LOADING,
    CV_SLOT_READY,
    CV_SLOT_FAILED,
    CV_SLOT_DRAINING,
} cv_slot_state;

typedef struct cv_rollout_server_obs {
    const char *addr;
    bool reachable;
    cv_slot_state candidate;
    const char *candidate_message; /* the server's words when FAILED */
    int smoke;                     /* 0: not run, 1: passed, -1: failed */
    const char *smoke_message;
    bool weights_applied;
} cv_rollout_server_obs;

typedef struct cv_rollout_obs {
    int64_t now_ms;
    const char *serving;  /* the version the fleet serves most ("" if none): the active
                             version when no status names one */
    bool target_registered;
    const cv_rollout_server_obs *servers;
    size_t n_servers;
    const cv_analysis_result *analysis; /* observing only; NULL otherwise */
} cv_rollout_obs;

typedef struct cv_rollout_limits {
    int64_t stage_ms, shift_ms, observe_ms, unmeasurable_ms;
    int64_t keep_previous_ms;
    /* Judgements closer than this count once: reconciles also run on every etcd
     * event, and a failure limit must span that many poll intervals, not a burst. */
    int64_t judge_ms;
} cv_rollout_limits;

typedef struct cv_rollout_desired {
    const char *load[2];   /* versions that must be loaded */
    size_t n_load;
    const char *weight_versions[2];
    uint32_t weights[2];
    size_t n_weights;      /* 0: leave the weights alone */
    const char *unload;    /* NULL or a version to unload */
} cv_rollout_desired;

const char *cv_rollout_phase_name(cv_rollout_phase p);
bool cv_rollout_in_flight(cv_rollout_phase p);

/* Parses a rollout spec over `defaults` (fields absent keep the default). */
cv_status cv_rollout_spec_parse(const char *text, size_t len, const cv_rollout_spec *defaults,
                                cv_rollout_spec *out, cv_error *err);
/* The same fields from a parsed JSON object over *s, without the required ones
 * (the config's "defaults" section). */
struct json_t;
cv_status cv_rollout_spec_fields(struct json_t *o, cv_rollout_spec *s, cv_error *err);
/* Parses steps such as "10,50,100" (increasing, 1..100, ending at 100). */
cv_status cv_rollout_steps_parse(const char *text, int *steps, size_t *n, cv_error *err);
cv_status cv_rollout_status_parse(const char *text, size_t len, cv_rollout_status *out,
                                  cv_error *err);
/* A malloc'd JSON string, NULL when out of memory. */
char *cv_rollout_status_json(const cv_rollout_status *st);

/* Moves the status; true when it changed in a way worth writing. */
bool cv_rollout_step(const cv_rollout_spec *spec, const cv_rollout_limits *lim,
                     const cv_rollout_obs *obs, cv_rollout_status *st);
/* What every server must hold now (pointers into st and spec). */
void cv_rollout_desired_state(const cv_rollout_spec *spec, const cv_rollout_limits *lim,
                              const cv_rollout_status *st, int64_t now_ms,
                              cv_rollout_desired *out);

#endif
