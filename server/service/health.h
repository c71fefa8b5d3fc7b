/* health: the standard grpc.health.v1.Health service (Check and Watch).
 *
 * Status is kept per service name ("" = the whole server, "corvid.v1.Inference",
 * "corvid.v1.Admin", ...), as Kubernetes' gRPC probes ask for it. Check on a name
 * never set answers NOT_FOUND; Watch on it streams SERVICE_UNKNOWN, then every change,
 * as the protocol says. cv_health_set is thread-safe and never blocks on a client.
 */
#ifndef CV_HEALTH_H
#define CV_HEALTH_H

#include "cv_error.h"
#include "rpc_server.h"

typedef enum cv_health_status {
    CV_HEALTH_UNKNOWN = 0,
    CV_HEALTH_SERVING = 1,
    CV_HEALTH_NOT_SERVING = 2,
    CV_HEALTH_SERVICE_UNKNOWN = 3
} cv_health_status;

typedef struct cv_health cv_health;

cv_status cv_health_new(cv_health **out, cv_error *err);
/* Adds Check and Watch to the server (before it starts). */
cv_status cv_health_register(cv_health *h, cv_rpc_server *srv, cv_error *err);
cv_status cv_health_set(cv_health *h, const char *service, cv_health_status st, cv_error *err);
/* CV_HEALTH_SERVICE_UNKNOWN for a name never set. */
cv_health_status cv_health_get(cv_health *h, const char *service);
/* Ends every Watch stream after its latest status went out (status UNAVAILABLE), waiting
 * at most timeout_s for them; call after the final cv_health_set of a shutdown. */
void cv_health_shutdown(cv_health *h, double timeout_s);
/* Open Watch streams (they never end by themselves, so draining does not wait on them). */
int cv_health_watchers(cv_health *h);
/* Only after the rpc server is freed (Watch streams hold references). */
void cv_health_free(cv_health *h);

#endif
