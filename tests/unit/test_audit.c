#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "audit.h"
#include "../support/test_rng.h"
#include "../support/test_tmpdir.h"

static cv_test_rng rng;
static char dir[200];

static void path_in_dir(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", dir, name); }

/* Every line of the file, parsed; fails on a line that is not one JSON object. */
static json_t *read_lines(const char *path) {
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    json_t *arr = json_array();
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) > 0) {
        assert_int_equal(line[n - 1], '\n');
        json_error_t je;
        json_t *j = json_loadb(line, (size_t)n, JSON_REJECT_DUPLICATES, &je);
        if (!j || !json_is_object(j)) fail_msg("line is not a JSON object: %s (%s)", line, je.text);
        json_array_append_new(arr, j);
    }
    free(line);
    fclose(f);
    return arr;
}

static const char *field(json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }

static void test_fields_and_format(void **state) {
    (void)state;
    char path[320];
    path_in_dir(path, sizeof path, "a.log");
    cv_audit *a = NULL;
    cv_error e = {0};
    assert_int_equal(cv_audit_open(path, &a, &e), CV_OK);
    cv_audit_entry en = {CV_AUDIT_ADMIN_ACTION, "alice", "ipv4:10.0.0.7:5000",
                         "/corvid.v1.Admin/LoadModel", "ok", "version v2 from /models/x.gguf", NULL};
    assert_int_equal(cv_audit_write(a, &en, &e), CV_OK);
    cv_audit_entry sparse = {CV_AUDIT_MODEL_LOAD, NULL, NULL, NULL, "failed", "sha256 mismatch", NULL};
    assert_int_equal(cv_audit_write(a, &sparse, &e), CV_OK);
    cv_audit_close(a);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0640);

    json_t *lines = read_lines(path);
    assert_int_equal(json_array_size(lines), 2);
    json_t *l0 = json_array_get(lines, 0), *l1 = json_array_get(lines, 1);
    assert_string_equal(field(l0, "event"), "admin_action");
    assert_string_equal(field(l0, "subject"), "alice");
    assert_string_equal(field(l0, "peer"), "ipv4:10.0.0.7:5000");
    assert_string_equal(field(l0, "method"), "/corvid.v1.Admin/LoadModel");
    assert_string_equal(field(l0, "outcome"), "ok");
    assert_string_equal(field(l0, "detail"), "version v2 from /models/x.gguf");
    /* RFC 3339 UTC with milliseconds, and close to now. */
    const char *ts = field(l0, "ts");
    assert_int_equal(strlen(ts), 24);
    struct tm tm = {0};
    char *rest = strptime(ts, "%Y-%m-%dT%H:%M:%S", &tm);
    assert_non_null(rest);
    assert_true(rest[0] == '.' && rest[4] == 'Z');
    time_t t = timegm(&tm);
    assert_true(llabs((long long)(t - time(NULL))) < 60);
    assert_string_equal(field(l1, "event"), "model_load");
    assert_null(json_object_get(l1, "subject"));
    assert_null(json_object_get(l1, "peer"));
    assert_int_equal(json_object_size(l1), 4);
    json_decref(lines);
    assert_string_equal(cv_audit_event_name(CV_AUDIT_EXTERNAL_REQUEST), "external_request");
    assert_string_equal(cv_audit_event_name(CV_AUDIT_AUTH_FAILURE), "auth_failure");
}

static void random_b64(char *out, size_t n) {
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    for (size_t i = 0; i < n; i++) out[i] = a[cv_test_rng_next(&rng) % 64];
    out[n] = 0;
}

static void test_tokens_never_written(void **state) {
    (void)state;
    char path[320], h[40], p[120], s[60], tok[256], detail[600], hp[200];
    path_in_dir(path, sizeof path, "tok.log");
    random_b64(h + 3, 30);
    memcpy(h, "eyJ", 3);
    random_b64(p, 100);
    random_b64(s, 43);
    snprintf(tok, sizeof tok, "%s.%s.%s", h, p, s);
    snprintf(hp, sizeof hp, "%s.%s", h, p);
    cv_audit *a = NULL;
    cv_error e = {0};
    assert_int_equal(cv_audit_open(path, &a, &e), CV_OK);
    const char *templates[] = {"authorization: Bearer %s", "token %s expired", "bEaReR   %s",
                               "[%s]", "unsigned %s."};
    for (int i = 0; i < 5; i++) {
        snprintf(detail, sizeof detail, templates[i], i == 4 ? hp : tok);
        cv_audit_entry en = {CV_AUDIT_AUTH_FAILURE, tok, "ipv4:1.2.3.4:1", detail, detail, detail, NULL};
        assert_int_equal(cv_audit_write(a, &en, &e), CV_OK);
    }
    /* A bearer credential that is not a JWT is redacted too. */
    cv_audit_entry opaque = {CV_AUDIT_AUTH_FAILURE, NULL, NULL, NULL, NULL,
                             "Authorization: Bearer opaque-secret-123 rejected", NULL};
    assert_int_equal(cv_audit_write(a, &opaque, &e), CV_OK);
    cv_audit_close(a);

    FILE *f = fopen(path, "r");
    char all[16384];
    size_t n = fread(all, 1, sizeof all - 1, f);
    all[n] = 0;
    fclose(f);
    assert_null(strstr(all, p));
    assert_null(strstr(all, s));
    assert_null(strstr(all, "opaque-secret-123"));
    json_t *lines = read_lines(path);
    assert_int_equal(json_array_size(lines), 6);
    assert_string_equal(field(json_array_get(lines, 0), "detail"), "authorization: Bearer [REDACTED]");
    assert_string_equal(field(json_array_get(lines, 1), "detail"), "token [REDACTED] expired");
    assert_string_equal(field(json_array_get(lines, 1), "subject"), "[REDACTED]");
    assert_string_equal(field(json_array_get(lines, 3), "detail"), "[[REDACTED]]");
    /* "h.p." is an unsigned token: the empty signature part goes with it. */
    assert_string_equal(field(json_array_get(lines, 4), "detail"), "unsigned [REDACTED]");
    assert_string_equal(field(json_array_get(lines, 5), "detail"), "Authorization: Bearer [REDACTED] rejected");
    json_decref(lines);
}

/* An audit log at path masked with a new PII masker of style (*pii: free it). */
static cv_audit *open_masked(const char *path, cv_pii_style style, cv_pii **pii) {
    cv_audit *a = NULL;
    cv_error e = {0};
    assert_int_equal(cv_pii_create(style, pii, &e), CV_OK);
    assert_int_equal(cv_audit_open(path, &a, &e), CV_OK);
    cv_audit_set_pii(a, *pii);
    return a;
}

static void test_pii_utf8_and_length(void **state) {
    (void)state;
    char path[320];
    path_in_dir(path, sizeof path, "pii.log");
    cv_pii *pii = NULL;
    cv_audit *a = open_masked(path, CV_PII_PLACEHOLDER, &pii);
    cv_error e = {0};
    cv_audit_entry en = {CV_AUDIT_EXTERNAL_REQUEST, NULL, NULL, "https://api.test/q", "ok",
                         "query from bob@example.com about \xff\xfe caf\xc3\xa9", NULL};
    assert_int_equal(cv_audit_write(a, &en, &e), CV_OK);
    char *big = malloc(10000);
    memset(big, 'x', 9999);
    big[9999] = 0;
    en.detail = big;
    assert_int_equal(cv_audit_write(a, &en, &e), CV_OK);
    free(big);
    cv_audit_close(a);
    cv_pii_free(pii);
    json_t *lines = read_lines(path);
    const char *d = field(json_array_get(lines, 0), "detail");
    assert_non_null(d);
    assert_null(strstr(d, "bob@example.com"));
    assert_non_null(strstr(d, "[EMAIL]"));
    assert_non_null(strstr(d, "\xef\xbf\xbd")); /* invalid bytes became U+FFFD */
    assert_non_null(strstr(d, "caf\xc3\xa9"));
    assert_int_equal(strlen(field(json_array_get(lines, 1), "detail")), 2048);
    json_decref(lines);
}

static cv_audit *shared;
static void *writer(void *arg) {
    char detail[3000];
    int id = (int)(intptr_t)arg;
    for (int i = 0; i < 200; i++) {
        size_t len = 1 + (size_t)(i * 37 + id * 11) % 2000;
        memset(detail, 'a' + id, len);
        detail[len] = 0;
        cv_audit_entry en = {CV_AUDIT_ADMIN_ACTION, "w", NULL, NULL, "ok", detail, NULL};
        if (cv_audit_write(shared, &en, NULL) != CV_OK) return (void *)1;
    }
    return NULL;
}

/* Four threads writing long lines: every line is whole (no interleaving). */
static void test_threads_lines_whole(void **state) {
    (void)state;
    char path[320];
    path_in_dir(path, sizeof path, "mt.log");
    cv_error e = {0};
    assert_int_equal(cv_audit_open(path, &shared, &e), CV_OK);
    pthread_t th[4];
    for (int i = 0; i < 4; i++) pthread_create(&th[i], NULL, writer, (void *)(intptr_t)i);
    for (int i = 0; i < 4; i++) {
        void *rc;
        pthread_join(th[i], &rc);
        assert_null(rc);
    }
    cv_audit_close(shared);
    json_t *lines = read_lines(path);
    assert_int_equal(json_array_size(lines), 800);
    size_t i;
    json_t *l;
    json_array_foreach(lines, i, l) {
        const char *d = field(l, "detail");
        for (const char *c = d; *c; c++) assert_int_equal(*c, d[0]);
    }
    json_decref(lines);
}

static void test_reopen_stderr_and_errors(void **state) {
    (void)state;
    char path[320], moved[320];
    path_in_dir(path, sizeof path, "rot.log");
    path_in_dir(moved, sizeof moved, "rot.log.1");
    cv_audit *a = NULL;
    cv_error e = {0};
    cv_audit_entry en = {CV_AUDIT_ADMIN_ACTION, NULL, NULL, NULL, "ok", "one", NULL};
    assert_int_equal(cv_audit_open(path, &a, &e), CV_OK);
    assert_int_equal(cv_audit_write(a, &en, &e), CV_OK);
    assert_int_equal(rename(path, moved), 0);
    assert_int_equal(cv_audit_reopen(a, &e), CV_OK);
    en.detail = "two";
    assert_int_equal(cv_audit_write(a, &en, &e), CV_OK);
    cv_audit_close(a);
    json_t *l1 = read_lines(moved), *l2 = read_lines(path);
    assert_int_equal(json_array_size(l1), 1);
    assert_int_equal(json_array_size(l2), 1);
    assert_string_equal(field(json_array_get(l2, 0), "detail"), "two");
    json_decref(l1);
    json_decref(l2);

    /* "-" is stderr: capture it in a file for the duration. */
    char cap[320];
    path_in_dir(cap, sizeof cap, "stderr.log");
    fflush(stderr);
    int saved = dup(2);
    FILE *f = fopen(cap, "w");
    dup2(fileno(f), 2);
    assert_int_equal(cv_audit_open("-", &a, &e), CV_OK);
    assert_int_equal(cv_audit_reopen(a, &e), CV_OK);
    en.detail = "to stderr";
    assert_int_equal(cv_audit_write(a, &en, &e), CV_OK);
    cv_audit_close(a);
    dup2(saved, 2);
    close(saved);
    fclose(f);
    json_t *l3 = read_lines(cap);
    assert_int_equal(json_array_size(l3), 1);
    assert_string_equal(field(json_array_get(l3, 0), "detail"), "to stderr");
    json_decref(l3);

    char bad[320];
    path_in_dir(bad, sizeof bad, "missing/dir/x.log");
    assert_int_equal(cv_audit_open(bad, &a, &e), CV_EIO);
    assert_non_null(strstr(e.msg, bad));
    assert_non_null(strstr(e.msg, "No such file"));
}

static int teardown_dir(void **state) {
    (void)state;
    return cv_test_rmtree(dir);
}

static long file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* Writes lines "n=<i>" padded to about 200 bytes, i from lo to hi - 1. */
static void write_numbered(cv_audit *a, int lo, int hi) {
    char detail[200];
    for (int i = lo; i < hi; i++) {
        int k = snprintf(detail, sizeof detail, "n=%d ", i);
        memset(detail + k, 'p', sizeof detail - 1 - (size_t)k);
        detail[sizeof detail - 1] = 0;
        cv_audit_entry en = {CV_AUDIT_ADMIN_ACTION, NULL, NULL, NULL, "ok", detail, NULL};
        cv_error e = {0};
        assert_int_equal(cv_audit_write(a, &en, &e), CV_OK);
    }
}

/* The n= numbers of a file's lines, in order, appended to nums. */
static void numbers_of(const char *path, int *nums, int *n) {
    json_t *lines = read_lines(path);
    size_t i;
    json_t *l;
    json_array_foreach(lines, i, l) nums[(*n)++] = atoi(field(l, "detail") + 2);
    json_decref(lines);
}

/* Size bound: PATH never passes max_bytes, PATH.1..PATH.keep hold the lines before,
 * oldest in the highest number, PATH.keep+1 never exists, no line is lost or doubled
 * among the files kept. */
static void test_rotation_by_size(void **state) {
    (void)state;
    char path[320], p1[330], p2[330], p3[330];
    path_in_dir(path, sizeof path, "size.log");
    snprintf(p1, sizeof p1, "%s.1", path);
    snprintf(p2, sizeof p2, "%s.2", path);
    snprintf(p3, sizeof p3, "%s.3", path);
    cv_audit *a = NULL;
    cv_error e = {0};
    assert_int_equal(cv_audit_open(path, &a, &e), CV_OK);
    cv_audit_set_rotation(a, 2000, 2);
    write_numbered(a, 0, 60); /* ~16 KB: 8 files' worth */
    cv_audit_close(a);
    assert_true(file_size(path) > 0 && file_size(path) <= 2000);
    assert_true(file_size(p1) > 1500 && file_size(p1) <= 2000);
    assert_true(file_size(p2) > 1500 && file_size(p2) <= 2000);
    assert_int_equal(file_size(p3), -1);
    int nums[64], n = 0;
    numbers_of(p2, nums, &n);
    numbers_of(p1, nums, &n);
    numbers_of(path, nums, &n);
    assert_true(n >= 15);
    for (int i = 0; i < n; i++) assert_int_equal(nums[i], 60 - n + i);

    /* Reopened on a file that is already near the bound: its size counts. */
    assert_int_equal(cv_audit_open(path, &a, &e), CV_OK);
    cv_audit_set_rotation(a, 2000, 2);
    long before = file_size(path);
    int room = (int)((2000 - before) / 250);
    write_numbered(a, 60, 60 + room + 1);
    assert_true(file_size(path) <= 2000);
    assert_true(file_size(path) < before); /* it rotated once */
    cv_audit_close(a);

    /* keep 0: the file starts anew. */
    char p0[320], p01[330];
    path_in_dir(p0, sizeof p0, "zero.log");
    snprintf(p01, sizeof p01, "%s.1", p0);
    assert_int_equal(cv_audit_open(p0, &a, &e), CV_OK);
    cv_audit_set_rotation(a, 1000, 0);
    write_numbered(a, 0, 20);
    cv_audit_close(a);
    assert_true(file_size(p0) <= 1000);
    assert_int_equal(file_size(p01), -1);
    n = 0;
    numbers_of(p0, nums, &n);
    assert_true(n >= 1 && n <= 4 && nums[n - 1] == 19);
}

/* A rotation that cannot rename (PATH.1 is a directory with something in it): the
 * write fails with the reason and the file does not grow past the bound. */
static void test_rotation_failure_keeps_the_bound(void **state) {
    (void)state;
    char path[320], p1[330], inner[340];
    path_in_dir(path, sizeof path, "stuck.log");
    snprintf(p1, sizeof p1, "%s.1", path);
    snprintf(inner, sizeof inner, "%s/x", p1);
    assert_int_equal(mkdir(p1, 0700), 0);
    assert_int_equal(mkdir(inner, 0700), 0);
    cv_audit *a = NULL;
    cv_error e = {0};
    assert_int_equal(cv_audit_open(path, &a, &e), CV_OK);
    cv_audit_set_rotation(a, 1000, 1);
    write_numbered(a, 0, 3);
    char big[400];
    memset(big, 'b', sizeof big - 1);
    big[sizeof big - 1] = 0;
    cv_audit_entry en = {CV_AUDIT_ADMIN_ACTION, NULL, NULL, NULL, "ok", big, NULL};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(cv_audit_write(a, &en, &e), CV_EIO);
        assert_non_null(strstr(e.msg, "cannot rotate it to"));
    }
    cv_audit_close(a);
    assert_true(file_size(path) <= 1000);
    rmdir(inner);
    rmdir(p1);
}

/* The subject is masked like the detail (an e-mail subject would otherwise be in the
 * clear); a count line carries reason, count, first and last. */
static void test_subject_masked_and_counts(void **state) {
    (void)state;
    char path[320];
    path_in_dir(path, sizeof path, "subj.log");
    cv_pii *pii = NULL;
    cv_audit *a = open_masked(path, CV_PII_PARTIAL, &pii);
    cv_error e = {0};
    cv_audit_entry en = {CV_AUDIT_AUTH_FAILURE, "alice.smith@example.com", "10.0.0.7",
                         "/corvid.v1.Admin/GetStatus", "PERMISSION_DENIED",
                         "the token of 'alice.smith@example.com' has inference", NULL};
    cv_audit_count c = {"missing_scope", 412, 1767225600.25, 1767225609.5};
    assert_int_equal(cv_audit_write_count(a, &en, &c, &e), CV_OK);
    cv_audit_entry svc = {CV_AUDIT_ADMIN_ACTION, "ci-deploy", NULL, NULL, "ok", "x", NULL};
    assert_int_equal(cv_audit_write(a, &svc, &e), CV_OK);
    cv_audit_close(a);
    cv_pii_free(pii);
    FILE *f = fopen(path, "r");
    char all[4096];
    size_t n = fread(all, 1, sizeof all - 1, f);
    all[n] = 0;
    fclose(f);
    assert_null(strstr(all, "alice.smith"));
    json_t *lines = read_lines(path);
    json_t *l0 = json_array_get(lines, 0);
    assert_string_equal(field(l0, "subject"), "a**********@example.com");
    assert_non_null(strstr(field(l0, "detail"), "a**********@example.com"));
    assert_string_equal(field(l0, "reason"), "missing_scope");
    assert_int_equal(json_integer_value(json_object_get(l0, "count")), 412);
    assert_string_equal(field(l0, "first"), "2026-01-01T00:00:00.250Z");
    assert_string_equal(field(l0, "last"), "2026-01-01T00:00:09.500Z");
    json_t *l1 = json_array_get(lines, 1);
    assert_string_equal(field(l1, "subject"), "ci-deploy");
    assert_null(json_object_get(l1, "count"));
    assert_null(json_object_get(l1, "reason"));
    json_decref(lines);
}

int main(void) {
    rng = cv_test_rng_new(cv_test_seed("test_audit"));
    if (cv_test_tmpdir(dir, sizeof dir, "audit") != 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fields_and_format),
        cmocka_unit_test(test_tokens_never_written),
        cmocka_unit_test(test_pii_utf8_and_length),
        cmocka_unit_test(test_threads_lines_whole),
        cmocka_unit_test(test_reopen_stderr_and_errors),
        cmocka_unit_test(test_rotation_by_size),
        cmocka_unit_test(test_rotation_failure_keeps_the_bound),
        cmocka_unit_test(test_subject_masked_and_counts),
    };
    return cmocka_run_group_tests(tests, NULL, teardown_dir);
}
