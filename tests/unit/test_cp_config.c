#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cp_config.h"
#include "fleet.h"
#include "../support/test_rng.h"

static cv_test_rng rng;

static void test_full_config(void **state) {
    (void)state;
    int poll = 10 + (int)(cv_test_rng_next(&rng) % 5000);
    char text[1024];
    snprintf(text, sizeof text,
             "{\"etcd\":\"http://127.0.0.1:1,http://127.0.0.1:2\",\"prefix\":\"/x\",\"id\":\"cp-1\","
             "\"servers\":[\"127.0.0.1:5000\",\"[::1]:5001\"],\"poll_ms\":%d,\"keep_previous_s\":0,"
             "\"smoke_prompt\":\"Hi\",\"defaults\":{\"strategy\":\"canary\",\"steps\":[25,100],"
             "\"window_ms\":1500,\"min_requests\":7},\"metrics_listen\":\"0.0.0.0:9465\","
             "\"server_tls\":{\"ca\":\"/t/ca.crt\",\"cert\":\"/t/c.crt\",\"key\":\"/t/c.key\","
             "\"server_name\":\"corvid.ai.svc\"},\"server_token_env\":\"CORVID_TOKEN\"}",
             poll);
    cv_cp_config cfg;
    cv_error err;
    cv_cp_config_defaults(&cfg);
    assert_int_equal(cv_cp_config_parse(text, strlen(text), &cfg, &err), CV_OK);
    assert_string_equal(cfg.prefix, "/x");
    assert_int_equal(cfg.n_servers, 2);
    assert_string_equal(cfg.servers[1], "[::1]:5001");
    assert_int_equal(cfg.poll_ms, poll);
    assert_int_equal(cfg.keep_previous_s, 0);
    assert_int_equal(cfg.stage_deadline_s, 300); /* untouched default */
    assert_true(cfg.defaults.canary);
    assert_int_equal(cfg.defaults.n_steps, 2);
    assert_int_equal(cfg.defaults.min_requests, 7);
    assert_int_equal(cfg.defaults.failure_limit, 2);
    assert_string_equal(cfg.metrics_listen, "0.0.0.0:9465");
    assert_string_equal(cfg.tls_ca, "/t/ca.crt");
    assert_string_equal(cfg.tls_cert, "/t/c.crt");
    assert_string_equal(cfg.tls_key, "/t/c.key");
    assert_string_equal(cfg.tls_server_name, "corvid.ai.svc");
    assert_string_equal(cfg.token_env, "CORVID_TOKEN");
    assert_string_equal(cfg.token_file, "");
    cv_cp_config_free(&cfg);
}

static void test_refusals_name_the_key(void **state) {
    (void)state;
    struct {
        const char *text, *needle;
    } bad[] = {
        {"{\"etcd\":\"http://e\"}", "exactly one of"},
        {"{\"servers\":[\"a:1\"],\"dns\":{\"name\":\"x\",\"port\":1}}", "exactly one of"},
        {"{\"servers\":[\"nocolon\"]}", "\"servers\"[0]"},
        {"{\"servers\":[]}", "\"servers\" must be"},
        {"{\"servers\":[\"a:1\"],\"poll_ms\":0}", "\"poll_ms\" is 0, allowed 10..600000"},
        {"{\"servers\":[\"a:1\"],\"poll_ms\":\"fast\"}", "\"poll_ms\" must be an integer"},
        {"{\"servers\":[\"a:1\"],\"pol_ms\":5}", "unknown key \"pol_ms\""},
        {"{\"dns\":{\"name\":\"x\"}}", "needs \"name\" and \"port\""},
        {"{\"dns\":{\"name\":\"x\",\"port\":1,\"ttl\":3}}", "dns.ttl"},
        {"{\"servers\":[\"a:1\"],\"defaults\":{\"steps\":[10]}}", "defaults: steps"},
        {"{\"servers\":[\"a:1\"],\"defaults\":{\"id\":\"x\"}}", "cannot hold \"id\""},
        {"{\"servers\":[\"a:1\"],\"prefix\":\"\"}", "\"prefix\" is 0 bytes"},
        {"{\"servers\":[\"a:1\"],\"server_tls\":{\"cert\":\"c\",\"key\":\"k\"}}", "needs \"ca\""},
        {"{\"servers\":[\"a:1\"],\"server_tls\":{\"ca\":\"a\",\"cert\":\"c\"}}", "go together"},
        {"{\"servers\":[\"a:1\"],\"server_tls\":{\"ca\":\"a\",\"crt\":\"c\"}}", "\"server_tls.crt\""},
        {"{\"servers\":[\"a:1\"],\"server_tls\":{\"ca\":7}}", "\"server_tls.ca\" must be a string"},
        {"{\"servers\":[\"a:1\"],\"server_tls\":\"on\"}", "\"server_tls\" must be an object"},
        {"{\"servers\":[\"a:1\"],\"server_token_file\":\"f\",\"server_token_env\":\"E\"}", "choose one"},
        {"{\"servers\":[\"a:1\"],\"metrics_listen\":\"\"}", "\"metrics_listen\" is 0 bytes"},
        {"[1]", "not a JSON object"},
        {"{\"servers\":", "config: line 1"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cv_cp_config cfg;
        cv_error err;
        cv_cp_config_defaults(&cfg);
        assert_int_not_equal(cv_cp_config_parse(bad[i].text, strlen(bad[i].text), &cfg, &err), CV_OK);
        if (!strstr(err.msg, bad[i].needle)) fail_msg("%s: got \"%s\"", bad[i].text, err.msg);
        cv_cp_config_free(&cfg);
    }
}

static void test_resolve_localhost(void **state) {
    (void)state;
    int port = 1 + (int)(cv_test_rng_next(&rng) % 65535);
    char **addrs, want[32];
    size_t n;
    cv_error err;
    assert_int_equal(cv_fleet_resolve("localhost", port, &addrs, &n, &err), CV_OK);
    snprintf(want, sizeof want, "127.0.0.1:%d", port);
    bool found = false;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(addrs[i], want) == 0) found = true;
        if (i) assert_true(strcmp(addrs[i - 1], addrs[i]) < 0); /* sorted, no duplicates */
    }
    assert_true(found);
    cv_fleet_addrs_free(addrs, n);
    assert_int_equal(cv_fleet_resolve("no-such-host.invalid", port, &addrs, &n, &err), CV_ENOTFOUND);
    assert_non_null(strstr(err.msg, "no-such-host.invalid"));
}

static void test_fleet_from_dns_and_unreachable_probe(void **state) {
    (void)state;
    cv_cp_config cfg;
    cv_error err;
    const char *text = "{\"dns\":{\"name\":\"localhost\",\"port\":9,\"refresh_ms\":100},\"admin_timeout_ms\":500}";
    cv_cp_config_defaults(&cfg);
    assert_int_equal(cv_cp_config_parse(text, strlen(text), &cfg, &err), CV_OK);
    cv_fleet *f;
    cv_server_creds none = {0};
    assert_int_equal(cv_fleet_open(&cfg, &none, &f, &err), CV_OK);
    assert_int_equal(cv_fleet_count(f), 0); /* resolved on the first refresh */
    bool changed = false;
    assert_int_equal(cv_fleet_refresh(f, 1000000, &changed, &err), CV_OK);
    assert_true(changed);
    assert_true(cv_fleet_count(f) >= 1);
    cv_fleet_server *first = cv_fleet_at(f, 0);
    assert_int_equal(cv_fleet_refresh(f, 1000050, &changed, &err), CV_OK);
    assert_false(changed); /* not due yet */
    assert_int_equal(cv_fleet_refresh(f, 1000100, &changed, &err), CV_OK);
    assert_false(changed); /* same records: the same servers, kept */
    assert_ptr_equal(cv_fleet_at(f, 0), first);
    /* Records that change replace the membership (the name is read at each refresh). */
    snprintf(cfg.dns_name, sizeof cfg.dns_name, "127.0.0.2");
    assert_int_equal(cv_fleet_refresh(f, 1000200, &changed, &err), CV_OK);
    assert_true(changed);
    assert_int_equal(cv_fleet_count(f), 1);
    assert_string_equal(cv_fleet_at(f, 0)->addr, "127.0.0.2:9");
    cv_fleet_probe(f, 1);
    for (size_t i = 0; i < cv_fleet_count(f); i++) {
        assert_false(cv_fleet_at(f, i)->reachable); /* nothing listens on port 9 */
        assert_true(strlen(cv_fleet_at(f, i)->error) > 0);
        assert_null(cv_fleet_slot(cv_fleet_at(f, i), "v1"));
    }
    cv_fleet_close(f);
    cv_cp_config_free(&cfg);
}

int main(void) {
    rng = cv_test_rng_new(cv_test_seed("test_cp_config"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_config),
        cmocka_unit_test(test_refusals_name_the_key),
        cmocka_unit_test(test_resolve_localhost),
        cmocka_unit_test(test_fleet_from_dns_and_unreachable_probe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
