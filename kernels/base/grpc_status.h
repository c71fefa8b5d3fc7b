/* grpc_status: the names of gRPC status codes, the one table that logs, metrics labels,
 * the server and the client all print ("RESOURCE_EXHAUSTED" for 8). Plain strings: this
 * layer does not link gRPC.
 */
#ifndef CV_GRPC_STATUS_H
#define CV_GRPC_STATUS_H

#define CV_GRPC_STATUS_CODES 17 /* OK (0) .. UNAUTHENTICATED (16) */

/* The canonical name; "UNKNOWN" for a number outside 0..16. */
const char *cv_grpc_status_name(int code);

#endif
