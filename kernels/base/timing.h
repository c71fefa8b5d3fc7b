/* timing: the monotonic clock every timed path reads, and the median that every
 * benchmark and bandwidth probe reports (single timings on a shared machine lie).
 */
#ifndef CV_TIMING_H
#define CV_TIMING_H

/* CLOCK_MONOTONIC in seconds. */
double cv_seconds(void);

/* Median of v[0..n) (sorts v); n >= 1. */
double cv_median(double *v, int n);

#endif
