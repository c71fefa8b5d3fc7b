#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

int cv_cli_is_help(const char *arg) {
    return arg && (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0);
}

void cv_cli_help(cv_cli_usage_fn *usage) {
    usage(stdout);
    exit(fflush(stdout) == 0 ? 0 : 1);
}

void cv_cli_usage_error(const char *prog, cv_cli_usage_fn *usage, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", prog);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    usage(stderr);
    exit(CV_CLI_EXIT_USAGE);
}

void cv_cli_getopt_error(const char *prog, cv_cli_usage_fn *usage, int c, char **argv) {
    /* optind has moved past the offending word, except inside a group of short
     * options ("-xq"), where optopt names the letter. */
    const char *word = optind > 0 ? argv[optind - 1] : "?";
    char shortopt[3] = {'-', (char)optopt, 0};
    const char *name = optopt && strncmp(word, "--", 2) != 0 ? shortopt : word;
    if (c == ':') cv_cli_usage_error(prog, usage, "%s needs a value", name);
    cv_cli_usage_error(prog, usage, "unknown option %s", name);
}

int cv_cli_number(const char *prog, const char *flag, const char *value, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double d = strtod(value, &end);
    if (errno || end == value || *end || !(d >= lo && d <= hi)) {
        fprintf(stderr, "%s: %s wants a number in [%.15g, %.15g], got \"%s\"\n", prog, flag, lo, hi, value);
        return -1;
    }
    *out = d;
    return 0;
}

int cv_cli_int(const char *prog, const char *flag, const char *value, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(value, &end, 10);
    if (errno || end == value || *end || v < lo || v > hi) {
        fprintf(stderr, "%s: %s wants a whole number in [%ld, %ld], got \"%s\"\n", prog, flag, lo, hi, value);
        return -1;
    }
    *out = v;
    return 0;
}
