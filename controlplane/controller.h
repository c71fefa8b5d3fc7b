/* cv_controller: the control plane's loop (corvid-controlplane run).
 *
 * It campaigns for leadership (cv_election) and, as leader, reconciles every model
 * with a rollout key on every etcd event under <prefix>/models/ and every poll_ms:
 * probe the fleet (GetStatus), read the model's keys, run the smoke prompt and the
 * analysis the phase needs, move the state machine (cv_rollout_step), write the
 * status fenced on leadership, then drive each server to the desired state (loads
 * with wait=false, so staging runs on all servers in parallel; traffic weights once
 * the weighted versions are ready there; unloads). Followers only watch.
 * The status is written before servers are touched, so a new leader acts on the
 * same intent. A failed etcd or server call is retried on the next tick.
 * Server calls cannot carry the etcd fence: a leader whose lease is lost keeps acting
 * until the election notices (at most 2/3 of the TTL after its last renewal), and
 * its status writes are refused by etcd from the moment the key is gone.
 * Probes ask GetStatus for the longest rollout window, rounded up to whole seconds.
 * Every replica reads the models' keys each tick: that read makes it ready (metrics),
 * and the phases it reports come from it. Server calls present the credentials of
 * server_creds.h, loaded at start; every replica looks at their files once a second, and
 * a set that changed and loads replaces every server's client (connections made with
 * the old token or certificate close), while one that does not load is logged once and
 * the last good set stays in use. A refused call is logged (once per change for probes)
 * with what to check, and counted.
 */
#ifndef CV_CONTROLLER_H
#define CV_CONTROLLER_H

#include <signal.h>

#include "cp_config.h"
#include "cp_metrics.h"

/* Runs until *stop turns non-zero; resigns leadership on the way out. Fails at once
 * when the server credentials cannot be loaded. */
cv_status cv_controller_run(const cv_cp_config *cfg, cv_cp_metrics *metrics,
                            volatile sig_atomic_t *stop, cv_error *err);

#endif
