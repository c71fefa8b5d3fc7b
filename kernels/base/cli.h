/* cli: the command-line conventions every corvid binary follows.
 *
 *   PROG --help, PROG -h       the whole usage on stdout, exit status 0
 *   a usage error              one line "PROG: what is wrong", then the usage, on
 *                              stderr, exit status 2: an unknown option, an option
 *                              without its value, a missing or an extra argument
 *
 * Each binary keeps its own usage text and hands these functions the function that
 * prints it. Values that parse but are refused (a number out of range, a file that
 * does not open) are the binary's own errors, reported in one line.
 */
#ifndef CV_CLI_H
#define CV_CLI_H

#include <stdio.h>

#define CV_CLI_EXIT_USAGE 2

typedef void cv_cli_usage_fn(FILE *out);

/* 1 when arg is "--help" or "-h". */
int cv_cli_is_help(const char *arg);

/* The usage on stdout; exits 0. */
_Noreturn void cv_cli_help(cv_cli_usage_fn *usage);

/* "prog: MESSAGE" and the usage on stderr; exits 2. */
_Noreturn void cv_cli_usage_error(const char *prog, cv_cli_usage_fn *usage, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The usage error for what getopt_long returned in a loop whose optstring starts
 * with ':' (so that a missing value comes back as ':', not '?'), with opterr = 0:
 * names the unknown option or the option without its value. */
_Noreturn void cv_cli_getopt_error(const char *prog, cv_cli_usage_fn *usage, int c, char **argv);

/* A number in [lo, hi]: 0, or -1 after "prog: FLAG wants a number in [lo, hi], got
 * "VALUE"" on stderr (the caller picks the exit status). */
int cv_cli_number(const char *prog, const char *flag, const char *value, double lo, double hi, double *out);
/* The same for a whole number. */
int cv_cli_int(const char *prog, const char *flag, const char *value, long lo, long hi, long *out);

#endif
