#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "cuda_backend.h"
#include "../support/test_tmpdir.h"

static char path[4096];

static void write_config(const char *text) {
    int fd = cv_test_tmpfile(path, sizeof path, "config");
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

static cv_status load(const char *text, cv_config *c, cv_error *e) {
    write_config(text);
    cv_config_defaults(c);
    cv_status st = cv_config_load_file(c, path, e);
    unlink(path);
    return st;
}

static void test_file_values_are_applied(void **state) {
    (void)state;
    cv_config c;
    cv_error e = {0};
    assert_int_equal(load("{\"listen\":\"0.0.0.0:9000\",\"max_running\":8,\"drain_timeout_s\":2.5}", &c, &e), CV_OK);
    assert_string_equal(c.listen, "0.0.0.0:9000");
    assert_int_equal(c.max_running, 8);
    assert_true(c.drain_timeout_s == 2.5);
    assert_int_equal(c.max_waiting, 256); /* untouched default */
}

static void test_bad_files_name_the_key(void **state) {
    (void)state;
    cv_config c;
    cv_error e = {0};
    assert_int_equal(load("{\"max_runing\":8}", &c, &e), CV_EINVAL);
    assert_non_null(strstr(e.msg, "\"max_runing\" is not a known setting"));
    assert_int_equal(load("{\"max_running\":\"8\"}", &c, &e), CV_EINVAL);
    assert_non_null(strstr(e.msg, "must be a number"));
    assert_int_equal(load("{\"max_running\":0}", &c, &e), CV_ERANGE);
    assert_non_null(strstr(e.msg, "outside [1, 4096]"));
    assert_int_equal(load("{\"threads\":1.5}", &c, &e), CV_EINVAL);
    assert_non_null(strstr(e.msg, "not a whole number"));
    assert_int_equal(load("{\"threads\":2,\"threads\":3}", &c, &e), CV_EFORMAT);
    assert_non_null(strstr(e.msg, "duplicate"));
    assert_int_equal(load("[1,2]", &c, &e), CV_EFORMAT);
    assert_int_equal(load("{\"listen\":", &c, &e), CV_EFORMAT);
    assert_non_null(strstr(e.msg, "line 1"));
    /* A secret file given as the config by mistake: the position, never its bytes. */
    const char *secrets[] = {"root:$6$s3cr3t:19000:0:99999:7:::\n", "{\"a\": tru_s3cr3t}", "{\"k\": \"s3cr3t",
                             "\xffs3cr3t"};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(load(secrets[i], &c, &e), CV_EFORMAT);
        if (strstr(e.msg, "s3cr3t") || strstr(e.msg, "root") || strstr(e.msg, "0xff") || !strstr(e.msg, "line 1 column"))
            fail_msg("config error echoes the file or lost its position: %s", e.msg);
    }
}

static void test_flags_override_file_wherever_they_stand(void **state) {
    (void)state;
    write_config("{\"max_running\":8,\"listen\":\"127.0.0.1:1\"}");
    char *argv[] = {"corvid-server", "--max-running", "4", "--config", path, "--check-config", NULL};
    cv_config c;
    cv_error e = {0};
    cv_config_cmdline cl;
    cv_config_defaults(&c);
    assert_int_equal(cv_config_parse_args(&c, 6, argv, &cl, &e), CV_OK);
    unlink(path);
    assert_int_equal(c.max_running, 4);
    assert_string_equal(c.listen, "127.0.0.1:1");
    assert_int_equal(cl.check_only, 1);
    assert_int_equal(cl.usage_error, 0);
    assert_int_equal(cv_config_validate(&c, &e), CV_OK);
    strcpy(c.listen, "localhost");
    assert_int_equal(cv_config_validate(&c, &e), CV_EINVAL);
    assert_non_null(strstr(e.msg, "has no port"));
}

/* device and tp: defaults, limits, and cuda only where the build has it. */
static void test_device_and_tp(void **state) {
    (void)state;
    cv_config c;
    cv_error e = {0};
    cv_config_defaults(&c);
    assert_string_equal(c.device, "cpu");
    assert_int_equal(c.tp, 1);
    assert_int_equal(load("{\"device\":\"cpu\",\"tp\":4}", &c, &e), CV_OK);
    assert_int_equal(c.tp, 4);
    assert_int_equal(cv_config_validate(&c, &e), CV_OK);
    assert_int_equal(load("{\"tp\":9}", &c, &e), CV_ERANGE);
    assert_non_null(strstr(e.msg, "\"tp\": 9 is outside [1, 8]"));
    assert_int_equal(load("{\"device\":\"gpu\"}", &c, &e), CV_OK);
    assert_int_equal(cv_config_validate(&c, &e), CV_EINVAL);
    assert_non_null(strstr(e.msg, "device: \"gpu\" is neither cpu nor cuda"));
    assert_int_equal(load("{\"device\":\"cuda\",\"tp\":2}", &c, &e), CV_OK);
    if (cv_cuda_compiled()) {
        assert_int_equal(cv_config_validate(&c, &e), CV_OK);
    } else {
        assert_int_equal(cv_config_validate(&c, &e), CV_EUNSUPPORTED);
        assert_non_null(strstr(e.msg, "this corvid-server was built without CUDA (make CUDA=1)"));
    }
}

/* The command line's shape (unknown flags, flags without a value, --help) is told apart
 * from a refused value, and is found before --config's file is read. */
static void test_command_line_shape(void **state) {
    (void)state;
    cv_config c;
    cv_error e = {0};
    cv_config_cmdline cl;
    char *unknown[] = {"corvid-server", "--max-runing", "4", NULL};
    cv_config_defaults(&c);
    assert_int_equal(cv_config_parse_args(&c, 3, unknown, &cl, &e), CV_EINVAL);
    assert_int_equal(cl.usage_error, 1);
    assert_non_null(strstr(e.msg, "unknown option --max-runing"));
    char *missing[] = {"corvid-server", "--config", "/nonexistent.json", "--listen", NULL};
    assert_int_equal(cv_config_parse_args(&c, 4, missing, &cl, &e), CV_EINVAL);
    assert_int_equal(cl.usage_error, 1);
    assert_non_null(strstr(e.msg, "--listen needs a value"));
    char *help[] = {"corvid-server", "--config", "/nonexistent.json", "--rag-policy", "-h", "--help", NULL};
    assert_int_equal(cv_config_parse_args(&c, 6, help, &cl, &e), CV_OK);
    assert_int_equal(cl.help, 1);
    assert_string_equal(c.rag_policy, "refuse"); /* nothing applied; "-h" there was a value */
    char *range[] = {"corvid-server", "--max-running", "0", NULL};
    assert_int_equal(cv_config_parse_args(&c, 3, range, &cl, &e), CV_ERANGE);
    assert_int_equal(cl.usage_error, 0);
}

/* --check-config's file checks name the key and the path. */
static void test_files_must_be_readable(void **state) {
    (void)state;
    cv_config c;
    cv_error e = {0};
    cv_config_defaults(&c);
    assert_int_equal(cv_config_check_files(&c, &e), CV_OK);
    strcpy(c.model, "/nonexistent/m.gguf");
    assert_int_equal(cv_config_check_files(&c, &e), CV_ENOTFOUND);
    assert_non_null(strstr(e.msg, "model: cannot read /nonexistent/m.gguf"));
    write_config("{}");
    assert_true(strlen(path) < 900);
    strcpy(c.model, "file://");
    strcat(c.model, path);
    assert_int_equal(cv_config_check_files(&c, &e), CV_OK);
    strcpy(c.model, "https://example.invalid/m.gguf"); /* the load decides about URLs */
    assert_int_equal(cv_config_check_files(&c, &e), CV_OK);
    strcpy(c.tls_cert, path);
    strcpy(c.tls_key, "/nonexistent/key.pem");
    assert_int_equal(cv_config_check_files(&c, &e), CV_ENOTFOUND);
    assert_non_null(strstr(e.msg, "tls_key: cannot read /nonexistent/key.pem"));
    strcpy(c.tls_key, "/");
    assert_int_equal(cv_config_check_files(&c, &e), CV_EINVAL);
    assert_non_null(strstr(e.msg, "tls_key: / is not a regular file"));
    strcpy(c.tls_key, path);
    strcpy(c.auth_config, "/nonexistent/auth.json");
    assert_int_equal(cv_config_check_files(&c, &e), CV_ENOTFOUND);
    assert_non_null(strstr(e.msg, "auth_config: cannot read /nonexistent/auth.json"));
    unlink(path);
}

static void test_model_dirs_and_sources(void **state) {
    (void)state;
    cv_config c;
    cv_error e = {0};
    char dirs[4096];
    cv_config_defaults(&c);
    cv_config_model_dirs(&c, dirs, sizeof dirs);
    assert_string_equal(dirs, "");
    strcpy(c.model_cache_dir, "/var/cache/corvid");
    strcpy(c.model, "/");
    cv_config_model_dirs(&c, dirs, sizeof dirs);
    assert_string_equal(dirs, "/var/cache/corvid,/");
    strcpy(c.model, "/etc/hostname");
    cv_config_model_dirs(&c, dirs, sizeof dirs);
    assert_string_equal(dirs, "/var/cache/corvid,/etc");
    strcpy(c.model_dirs, "/models,/more");
    cv_config_model_dirs(&c, dirs, sizeof dirs);
    assert_string_equal(dirs, "/models,/more");

    assert_int_equal(load("{\"model_sources\": \"https://models.example.com/corvid/,http://127.0.0.1:\"}", &c, &e),
                     CV_OK);
    assert_int_equal(cv_config_validate(&c, &e), CV_OK);
    const char *bad[] = {"models.example.com", "http://", "https:///x", "http://:80/", "https://ok.com,ftp://x"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        cv_config_defaults(&c);
        strcpy(c.model_sources, bad[i]);
        assert_int_equal(cv_config_validate(&c, &e), CV_EINVAL);
        assert_non_null(strstr(e.msg, "model_sources"));
    }
    char *argv[] = {"corvid-server", "--model-dirs", "/a,/b", "--model-sources", "https://h/"};
    cv_config_cmdline cl;
    cv_config_defaults(&c);
    assert_int_equal(cv_config_parse_args(&c, 5, argv, &cl, &e), CV_OK);
    assert_string_equal(c.model_dirs, "/a,/b");
    assert_string_equal(c.model_sources, "https://h/");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_dirs_and_sources),
        cmocka_unit_test(test_file_values_are_applied),
        cmocka_unit_test(test_bad_files_name_the_key),
        cmocka_unit_test(test_flags_override_file_wherever_they_stand),
        cmocka_unit_test(test_device_and_tp),
        cmocka_unit_test(test_command_line_shape),
        cmocka_unit_test(test_files_must_be_readable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
