#include "analysis.h"

#include <stdio.h>
#include <string.h>

bool cv_analysis_is_server_fault(int code) {
    switch (code) {
    case CORVID_UNKNOWN:
    case CORVID_DEADLINE_EXCEEDED:
    case CORVID_RESOURCE_EXHAUSTED:
    case CORVID_INTERNAL:
    case CORVID_UNAVAILABLE:
    case 15: /* DATA_LOSS */
        return true;
    default:
        return false;
    }
}

const char *cv_verdict_name(cv_verdict v) {
    switch (v) {
    case CV_VERDICT_PASS: return "pass";
    case CV_VERDICT_FAIL: return "fail";
    case CV_VERDICT_INCONCLUSIVE: return "inconclusive";
    case CV_VERDICT_UNMEASURABLE: return "unmeasurable";
    }
    return "?";
}

static bool same_bounds(const corvid_histogram *a, const corvid_histogram *b) {
    return a->n_bounds == b->n_bounds &&
           memcmp(a->bounds, b->bounds, a->n_bounds * sizeof a->bounds[0]) == 0;
}

/* p99 of the merged histograms, or the worst server's when bounds differ. */
static double p99_ms(const corvid_slot_status *const *slots, size_t n) {
    corvid_histogram merged;
    const corvid_histogram *first = NULL;
    bool mergeable = true;
    double worst = 0;
    memset(&merged, 0, sizeof merged);
    for (size_t i = 0; i < n; i++) {
        if (!slots[i] || slots[i]->ttft_seconds.count == 0) continue;
        const corvid_histogram *h = &slots[i]->ttft_seconds;
        double q = corvid_histogram_quantile(h, 0.99);
        if (q > worst) worst = q;
        if (!first) {
            first = h;
            merged = *h;
            continue;
        }
        if (!same_bounds(first, h)) {
            mergeable = false;
            continue;
        }
        for (size_t b = 0; b <= h->n_bounds; b++) merged.counts[b] += h->counts[b];
        merged.count += h->count;
        merged.sum += h->sum;
    }
    if (!first) return 0;
    return 1e3 * (mergeable ? corvid_histogram_quantile(&merged, 0.99) : worst);
}

void cv_analysis_judge(const corvid_slot_status *const *slots, const char *const *names,
                       const bool *reachable, size_t n, const cv_analysis_thresholds *th,
                       cv_analysis_result *out) {
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < n; i++) {
        if (!reachable[i]) {
            out->verdict = CV_VERDICT_UNMEASURABLE;
            snprintf(out->message, sizeof out->message, "cannot measure: server %s gave no status",
                     names[i]);
            return;
        }
        if (!slots[i]) continue;
        for (int c = 0; c < CORVID_CODES; c++) {
            uint64_t k = slots[i]->requests_window[c];
            if (c == CORVID_CANCELLED) continue;
            out->requests += k;
            if (cv_analysis_is_server_fault(c)) out->errors += k;
        }
    }
    out->error_rate = out->requests ? (double)out->errors / (double)out->requests : 0;
    out->p99_ttft_ms = p99_ms(slots, n);
    if (out->requests < th->min_requests) {
        out->verdict = CV_VERDICT_INCONCLUSIVE;
        snprintf(out->message, sizeof out->message,
                 "inconclusive: %llu answered requests in the window, %llu needed",
                 (unsigned long long)out->requests, (unsigned long long)th->min_requests);
    } else if (out->error_rate > th->max_error_rate) {
        out->verdict = CV_VERDICT_FAIL;
        snprintf(out->message, sizeof out->message,
                 "error rate %.4f (%llu of %llu) above max_error_rate %.4f",
                 out->error_rate, (unsigned long long)out->errors,
                 (unsigned long long)out->requests, th->max_error_rate);
    } else if (th->max_p99_ttft_ms > 0 && out->p99_ttft_ms > th->max_p99_ttft_ms) {
        out->verdict = CV_VERDICT_FAIL;
        snprintf(out->message, sizeof out->message,
                 "p99 TTFT %.1f ms above max_p99_ttft_ms %.1f (%llu requests)", out->p99_ttft_ms,
                 th->max_p99_ttft_ms, (unsigned long long)out->requests);
    } else {
        out->verdict = CV_VERDICT_PASS;
        snprintf(out->message, sizeof out->message,
                 "healthy: error rate %.4f (%llu of %llu), p99 TTFT %.1f ms", out->error_rate,
                 (unsigned long long)out->errors, (unsigned long long)out->requests,
                 out->p99_ttft_ms);
    }
}
