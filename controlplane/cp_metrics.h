/* cv_cp_metrics: the control plane's figures, for /metrics and /readyz.
 *
 * The controller records what it learns as it goes (every function is thread-safe:
 * the HTTP endpoint renders on its own thread); cv_cp_metrics_render writes the
 * Prometheus text exposition. Every replica reports the rollout phases it reads from
 * etcd (the leader writes them), so a dashboard sees them whichever replica it scrapes;
 * the fleet's health and the rollout counters come from the leader's own work, so a
 * follower reports no servers_healthy gauge and counts no rollouts or server errors.
 * Every replica keeps its server credentials fresh and reports their reloads. Metric
 * names and labels are a contract with the chart's dashboard and alert rules
 * (charts/corvid).
 *
 * Ready: etcd answered this replica's last read (the config was read before start).
 * At most CV_CP_METRICS_MODELS models are tracked; others are left out of the text.
 */
#ifndef CV_CP_METRICS_H
#define CV_CP_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cv_error.h"
#include "rollout.h"

#define CV_CP_METRICS_MODELS 256

typedef enum cv_cp_rollout_event {
    CV_CP_ROLLOUT_STARTED,     /* a new rollout began staging */
    CV_CP_ROLLOUT_COMPLETED,   /* promoted */
    CV_CP_ROLLOUT_ROLLED_BACK, /* back on the previous version */
    CV_CP_ROLLOUT_EVENTS
} cv_cp_rollout_event;

typedef struct cv_cp_metrics cv_cp_metrics;

cv_status cv_cp_metrics_new(cv_cp_metrics **out, cv_error *err);
void cv_cp_metrics_free(cv_cp_metrics *m);

void cv_cp_metrics_set_leader(cv_cp_metrics *m, bool leader);
/* Whether etcd answered the last read, and the etcd client's failed calls so far. */
void cv_cp_metrics_set_etcd(cv_cp_metrics *m, bool reached, uint64_t failed_calls);
/* The models that have a rollout key now, with their phases (replaces the last set). */
void cv_cp_metrics_set_phases(cv_cp_metrics *m, const char *const *models,
                              const cv_rollout_phase *phases, size_t n);
void cv_cp_metrics_count_rollout(cv_cp_metrics *m, const char *model, cv_cp_rollout_event ev);
/* healthy < 0: this replica did not probe the fleet (a follower). */
void cv_cp_metrics_set_fleet(cv_cp_metrics *m, size_t discovered, long healthy);
/* One failed Admin call to a server, by its gRPC status code (corvid/client.h). */
void cv_cp_metrics_count_server_error(cv_cp_metrics *m, int code);
/* The server credentials' reload figures so far (server_creds.h: cv_server_creds_stats). */
void cv_cp_metrics_set_creds(cv_cp_metrics *m, uint64_t reloads, uint64_t errors,
                             int64_t loaded_unix_ms, bool last_ok);

bool cv_cp_metrics_ready(cv_cp_metrics *m);
/* The exposition as a malloc'd NUL-terminated string; NULL when out of memory. */
char *cv_cp_metrics_render(cv_cp_metrics *m);

#endif
