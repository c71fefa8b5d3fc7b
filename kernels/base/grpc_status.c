#include "grpc_status.h"

static const char *const names[CV_GRPC_STATUS_CODES] = {
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
    "UNAUTHENTICATED",
};

const char *cv_grpc_status_name(int code) {
    return code >= 0 && code < CV_GRPC_STATUS_CODES ? names[code] : "UNKNOWN";
}
