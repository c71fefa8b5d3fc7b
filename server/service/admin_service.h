/* admin_service: corvid.v1.Admin over rpc_server and the router.
 *
 * LoadModel and UnloadModel start background operations and answer at once with the
 * slot's state, or, with `wait`, once the operation ended (from a helper thread: the
 * completion-queue thread never blocks). Router refusals map to gRPC codes:
 * CV_EBUSY -> ABORTED (another operation runs), CV_ENOTFOUND -> NOT_FOUND,
 * CV_EINVAL/CV_ERANGE -> INVALID_ARGUMENT / FAILED_PRECONDITION.
 * SetFaultInjection works only in builds with CORVID_TESTING.
 */
#ifndef CV_ADMIN_SERVICE_H
#define CV_ADMIN_SERVICE_H

#include "audit.h"
#include "router.h"
#include "rpc_server.h"

typedef struct cv_admin cv_admin;

/* audit (may be NULL) receives one admin_action line per call: who, what, outcome. */
cv_status cv_admin_new(cv_router *router, const char *server_id, cv_audit *audit, cv_admin **out,
                       cv_error *err);
cv_status cv_admin_register(cv_admin *a, cv_rpc_server *srv, cv_error *err);
/* GetStatus reports this response cache's counters and hit rate (response_cache.h). */
typedef struct cv_rc cv_rc;
void cv_admin_set_response_cache(cv_admin *a, cv_rc *rc);
/* After the rpc server is freed (waiting replies hold references). */
void cv_admin_free(cv_admin *a);

#endif
