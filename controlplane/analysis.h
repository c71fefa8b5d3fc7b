/* cv_analysis: judges a candidate version from its slots' GetStatus window figures.
 *
 * Error rate = server-fault answers / answered requests, over the window, summed over
 * servers. Server faults are UNKNOWN, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED (the
 * server shed the request: overload a slower version causes counts against it),
 * INTERNAL, UNAVAILABLE and DATA_LOSS. CANCELLED (the client went away) is neither an
 * answer nor an error; INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED,
 * UNAUTHENTICATED, FAILED_PRECONDITION, ABORTED, OUT_OF_RANGE and UNIMPLEMENTED are
 * the client's doing and count as answered, not failed.
 *
 * p99 TTFT comes from the servers' ttft histograms merged (when their bounds agree;
 * otherwise the worst server's p99). Verdicts: UNMEASURABLE when a server gave no
 * status (nothing is judged on part of the fleet), INCONCLUSIVE below min_requests,
 * FAIL when a threshold is passed, PASS otherwise. The message says which figure
 * against which limit.
 */
#ifndef CV_ANALYSIS_H
#define CV_ANALYSIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "corvid/client.h"

typedef enum cv_verdict {
    CV_VERDICT_PASS,
    CV_VERDICT_FAIL,
    CV_VERDICT_INCONCLUSIVE,
    CV_VERDICT_UNMEASURABLE,
} cv_verdict;

typedef struct cv_analysis_thresholds {
    double max_error_rate;
    double max_p99_ttft_ms; /* 0: not judged */
    uint64_t min_requests;
} cv_analysis_thresholds;

typedef struct cv_analysis_result {
    cv_verdict verdict;
    uint64_t requests, errors;
    double error_rate, p99_ttft_ms;
    char message[384];
} cv_analysis_result;

bool cv_analysis_is_server_fault(int grpc_code);
const char *cv_verdict_name(cv_verdict v);
/* slots[i]: the candidate's slot on server i, NULL when server i gave no status;
 * names[i] names server i in messages. A server without the slot counts as zero. */
void cv_analysis_judge(const corvid_slot_status *const *slots, const char *const *names,
                       const bool *reachable, size_t n, const cv_analysis_thresholds *th,
                       cv_analysis_result *out);

#endif
