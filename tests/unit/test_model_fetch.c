/* model_fetch's policy without a network: file:// parsing, model_sources prefixes,
 * model_dirs after symlinks and "..", and local files that are not regular or not GGUF
 * (refused without blocking and without echoing their bytes). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model_fetch.h"
#include "../support/test_tmpdir.h"

static char dir[PATH_MAX], outside[PATH_MAX];

static int setup(void **state) {
    (void)state;
    if (cv_test_tmpdir(dir, sizeof dir, "fetch") != 0 || cv_test_tmpdir(outside, sizeof outside, "fetch-out") != 0)
        return -1;
    return 0;
}

static int teardown(void **state) {
    (void)state;
    cv_test_rmtree(dir);
    cv_test_rmtree(outside);
    return 0;
}

static void write_file(const char *path, const char *bytes, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(bytes, 1, n, f), n);
    fclose(f);
}

static void test_file_uris(void **state) {
    (void)state;
    char p[256];
    cv_error e = {0};
    assert_int_equal(cv_fetch_local_path("file:///a/b.gguf", p, sizeof p, &e), CV_OK);
    assert_string_equal(p, "/a/b.gguf");
    assert_int_equal(cv_fetch_local_path("file://localhost/a/b%20c.gguf", p, sizeof p, &e), CV_OK);
    assert_string_equal(p, "/a/b c.gguf");
    assert_int_equal(cv_fetch_local_path("file://LOCALHOST/x", p, sizeof p, &e), CV_OK);
    assert_string_equal(p, "/x");
    assert_int_equal(cv_fetch_local_path("file://otherhost/etc/passwd", p, sizeof p, &e), CV_EINVAL);
    assert_non_null(strstr(e.msg, "otherhost"));
    assert_int_equal(cv_fetch_local_path("file://localhost.evil/x", p, sizeof p, &e), CV_EINVAL);
    assert_int_equal(cv_fetch_local_path("file://localhost", p, sizeof p, &e), CV_EINVAL);
    assert_int_equal(cv_fetch_local_path("file:///a%00b", p, sizeof p, &e), CV_EINVAL);
    assert_int_equal(cv_fetch_local_path("file:///a%2", p, sizeof p, &e), CV_EINVAL);
    assert_int_equal(cv_fetch_local_path("rel/x.gguf", p, sizeof p, &e), CV_OK);
    assert_string_equal(p, "rel/x.gguf");
    cv_fetch_opts o = {.model_dirs = dir};
    assert_int_equal(cv_model_fetch_check("file://otherhost/x", NULL, &o, &e), CV_EINVAL);
    assert_int_equal(cv_model_fetch_check("ftp://h/x", NULL, &o, &e), CV_EINVAL);
}

static void test_sources(void **state) {
    (void)state;
    const char *src = "https://models.example.com/corvid/, http://127.0.0.1:, https://cdn.example.org";
    assert_true(cv_fetch_source_allowed("https://models.example.com/corvid/a.gguf", src));
    assert_false(cv_fetch_source_allowed("https://models.example.com/other/a.gguf", src));
    assert_true(cv_fetch_source_allowed("http://127.0.0.1:8080/a.gguf", src));
    assert_false(cv_fetch_source_allowed("http://127.0.0.10/a.gguf", src));
    assert_true(cv_fetch_source_allowed("https://cdn.example.org/a.gguf", src));
    assert_true(cv_fetch_source_allowed("https://cdn.example.org", src));
    assert_false(cv_fetch_source_allowed("https://cdn.example.org.evil.net/a.gguf", src));
    assert_false(cv_fetch_source_allowed("https://cdn.example.org@evil.net/a.gguf", src));
    assert_false(cv_fetch_source_allowed("https://cdn.example.org:444/a.gguf", src));
    assert_false(cv_fetch_source_allowed("https://x/a.gguf", ""));
    assert_false(cv_fetch_source_allowed("https://x/a.gguf", NULL));

    const char *sha = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    cv_error e = {0};
    cv_fetch_opts none = {.cache_dir = dir};
    assert_int_equal(cv_model_fetch_check("https://cdn.example.org/a.gguf", sha, &none, &e), CV_EPERM);
    assert_non_null(strstr(e.msg, "model_sources"));
    cv_fetch_opts some = {.cache_dir = dir, .model_sources = src};
    assert_int_equal(cv_model_fetch_check("https://evil.net/a.gguf", sha, &some, &e), CV_EPERM);
    assert_non_null(strstr(e.msg, "model_sources"));
    assert_int_equal(cv_model_fetch_check("https://cdn.example.org/a.gguf", sha, &some, &e), CV_OK);
    assert_int_equal(cv_model_fetch_check("https://cdn.example.org/a.gguf", "", &some, &e), CV_EINVAL);
    assert_non_null(strstr(e.msg, "sha256"));
}

static void test_model_dirs(void **state) {
    (void)state;
    char gguf[PATH_MAX + 32], secret[PATH_MAX + 32], link[PATH_MAX + 32], fifo[PATH_MAX + 32],
        dotdot[PATH_MAX * 2], uri[PATH_MAX + 64], got[PATH_MAX], sub[PATH_MAX + 32];
    snprintf(gguf, sizeof gguf, "%s/m.gguf", dir);
    write_file(gguf, "GGUF\3\0\0\0", 8);
    snprintf(secret, sizeof secret, "%s/secret", outside);
    write_file(secret, "root:x:0:0", 10);
    cv_fetch_opts o = {.model_dirs = dir};
    cv_error e = {0};

    /* Inside: the resolved path comes back, by path or file:// URI. */
    assert_int_equal(cv_model_fetch(gguf, NULL, &o, got, sizeof got, &e), CV_OK);
    snprintf(uri, sizeof uri, "file://localhost%s", gguf);
    assert_int_equal(cv_model_fetch(uri, NULL, &o, got, sizeof got, &e), CV_OK);
    char real[PATH_MAX];
    assert_non_null(realpath(gguf, real));
    assert_string_equal(got, real);

    /* Outside, by "..", by symlink, or absent: the same answer, nothing about the file. */
    snprintf(dotdot, sizeof dotdot, "%s/../%s/secret", dir, strrchr(outside, '/') + 1);
    assert_int_equal(cv_model_fetch(dotdot, NULL, &o, got, sizeof got, &e), CV_EPERM);
    assert_non_null(strstr(e.msg, "outside model_dirs"));
    assert_null(strstr(e.msg, "root"));
    snprintf(link, sizeof link, "%s/link.gguf", dir);
    assert_int_equal(symlink(secret, link), 0);
    assert_int_equal(cv_model_fetch(link, NULL, &o, got, sizeof got, &e), CV_EPERM);
    assert_non_null(strstr(e.msg, "outside model_dirs"));
    assert_int_equal(cv_model_fetch("/etc/passwd", NULL, &o, got, sizeof got, &e), CV_EPERM);
    assert_non_null(strstr(e.msg, "outside model_dirs"));
    assert_int_equal(cv_model_fetch("/nonexistent/x.gguf", NULL, &o, got, sizeof got, &e), CV_EPERM);
    assert_non_null(strstr(e.msg, "outside model_dirs"));
    assert_int_equal(cv_model_fetch("/proc/self/environ", NULL, &o, got, sizeof got, &e), CV_EPERM);
    cv_fetch_opts nodirs = {0};
    assert_int_equal(cv_model_fetch(gguf, NULL, &nodirs, got, sizeof got, &e), CV_EPERM);

    /* Inside but absent, not regular, not GGUF. */
    snprintf(sub, sizeof sub, "%s/missing.gguf", dir);
    assert_int_equal(cv_model_fetch(sub, NULL, &o, got, sizeof got, &e), CV_ENOTFOUND);
    assert_non_null(strstr(e.msg, "not found"));
    snprintf(fifo, sizeof fifo, "%s/fifo.gguf", dir);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    assert_int_equal(cv_model_fetch(fifo, NULL, &o, got, sizeof got, &e), CV_EINVAL); /* does not block */
    assert_non_null(strstr(e.msg, "not a regular file"));
    assert_int_equal(cv_model_fetch(dir, NULL, &o, got, sizeof got, &e), CV_EINVAL);
    assert_non_null(strstr(e.msg, "not a regular file"));
    snprintf(sub, sizeof sub, "%s/text.gguf", dir);
    write_file(sub, "hunter2-secret", 14);
    assert_int_equal(cv_model_fetch(sub, NULL, &o, got, sizeof got, &e), CV_EFORMAT);
    assert_non_null(strstr(e.msg, "not a GGUF file"));
    assert_null(strstr(e.msg, "hunt"));
    assert_null(strstr(e.msg, "68 75"));
    snprintf(sub, sizeof sub, "%s/short.gguf", dir);
    write_file(sub, "GG", 2);
    assert_int_equal(cv_model_fetch(sub, NULL, &o, got, sizeof got, &e), CV_EFORMAT);

    /* A sha256, when given, must match. */
    assert_int_equal(cv_model_fetch(gguf, "0000000000000000000000000000000000000000000000000000000000000000", &o, got,
                                    sizeof got, &e), CV_EFORMAT);
    assert_non_null(strstr(e.msg, "sha256 is"));

    /* Several directories, a relative one among them. */
    char cwd[PATH_MAX];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(dir), 0);
    cv_fetch_opts rel = {.model_dirs = "/nonexistent-dir,."};
    assert_int_equal(cv_model_fetch("m.gguf", NULL, &rel, got, sizeof got, &e), CV_OK);
    assert_int_equal(chdir(cwd), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_file_uris),
        cmocka_unit_test(test_sources),
        cmocka_unit_test(test_model_dirs),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
