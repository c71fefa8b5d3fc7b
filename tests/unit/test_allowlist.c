#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "allowlist.h"
#include "../support/test_rng.h"

static cv_test_rng rng;

static cv_allowlist *list_of(const char *const *rules, size_t n) {
    cv_allowlist *a = NULL;
    cv_error e = {0};
    assert_int_equal(cv_allowlist_new(&a, &e), CV_OK);
    for (size_t i = 0; i < n; i++)
        if (cv_allowlist_add(a, rules[i], &e) != CV_OK) fail_msg("rule %s: %s", rules[i], e.msg);
    return a;
}

static int allows_peer(const cv_allowlist *a, const char *peer) {
    cv_ip ip;
    cv_error e = {0};
    if (cv_ip_parse_peer(peer, &ip, &e) != CV_OK) fail_msg("peer %s: %s", peer, e.msg);
    return cv_allowlist_allows(a, &ip);
}

static void test_peer_forms(void **state) {
    (void)state;
    struct { const char *peer; int family; const char *text; } ok[] = {
        {"ipv4:127.0.0.1:5000", 4, "127.0.0.1"},
        {"ipv4:10.20.30.40:1", 4, "10.20.30.40"},
        {"ipv6:[::1]:5000", 6, "::1"},
        {"ipv6:%5B::1%5D:42744", 6, "::1"}, /* as gRPC core 1.51 writes it */
        {"ipv6:%5b2001:db8::7%5d:443", 6, "2001:db8::7"},
        {"ipv6:%5Bfe80::1%25eth0%5D:80", 6, "fe80::1"},
        {"ipv6:[fe80::1%eth0]:80", 6, "fe80::1"},
        {"ipv6:[::ffff:192.168.1.9]:5000", 4, "192.168.1.9"},
        {"ipv6:%5B::ffff:10.0.0.1%5D:5000", 4, "10.0.0.1"},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        cv_ip ip;
        cv_error e = {0};
        if (cv_ip_parse_peer(ok[i].peer, &ip, &e) != CV_OK) fail_msg("%s: %s", ok[i].peer, e.msg);
        char buf[64];
        cv_ip_format(&ip, buf);
        assert_int_equal(ip.family, ok[i].family);
        assert_string_equal(buf, ok[i].text);
    }
    struct { const char *peer; cv_status st; const char *want; } bad[] = {
        {"unix:/tmp/sock", CV_EUNSUPPORTED, "is a unix socket"},
        {"unix-abstract:x", CV_EUNSUPPORTED, "is a unix socket"},
        {"127.0.0.1:5000", CV_EFORMAT, "is not ipv4:ADDR:PORT or ipv6:[ADDR]:PORT"},
        {"", CV_EFORMAT, "is not ipv4:ADDR:PORT or ipv6"},
        {"ipv4:127.0.0.1", CV_EFORMAT, "is not ipv4:ADDR:PORT"},
        {"ipv4:127.0.0.1:", CV_EFORMAT, "is not ipv4:ADDR:PORT"},
        {"ipv4:127.0.0.1:99999", CV_EFORMAT, "is not ipv4:ADDR:PORT"},
        {"ipv4:127.0.0.1:50x", CV_EFORMAT, "is not ipv4:ADDR:PORT"},
        {"ipv4:300.0.0.1:5", CV_EFORMAT, "'300.0.0.1' is not an IPv4 address"},
        {"ipv4:[::1]:5", CV_EFORMAT, "is not an IPv4 address"},
        {"ipv6:::1:5000", CV_EFORMAT, "is not ipv6:[ADDR]:PORT"},
        {"ipv6:[::1]", CV_EFORMAT, "is not ipv6:[ADDR]:PORT"},
        {"ipv6:%5B::1%5:80", CV_EFORMAT, "is not ipv6:[ADDR]:PORT"},
        {"ipv6:%5B::1%00%5D:80", CV_EFORMAT, "is not ipv6:[ADDR]:PORT"},
        {"ipv6:[1.2.3.4]:80", CV_EFORMAT, "'1.2.3.4' is not an IPv6 address"},
        {"ipv6:[gggg::1]:80", CV_EFORMAT, "is not an IPv6 address"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cv_ip ip;
        cv_error e = {0};
        cv_status st = cv_ip_parse_peer(bad[i].peer, &ip, &e);
        if (st != bad[i].st || !strstr(e.msg, bad[i].want))
            fail_msg("%s: got %s '%s'", bad[i].peer, cv_status_name(st), e.msg);
    }
    /* A hostile, very long peer is cut in the message. */
    char longp[600] = "ipv4:";
    memset(longp + 5, '9', 590);
    cv_ip ip;
    cv_error e = {0};
    assert_int_equal(cv_ip_parse_peer(longp, &ip, &e), CV_EFORMAT);
    assert_true(strlen(e.msg) < 200);
}

static void test_rules_v4_v6_mapped(void **state) {
    (void)state;
    const char *rules[] = {"10.0.0.0/8", "192.168.1.128/25", "::1/128", "2001:db8::/32",
                           "203.0.113.7", "::ffff:198.51.100.0/120"};
    cv_allowlist *a = list_of(rules, 6);
    assert_int_equal(cv_allowlist_count(a), 6);
    struct { const char *peer; int want; } cases[] = {
        {"ipv4:10.0.0.1:1", 1}, {"ipv4:10.255.255.255:1", 1}, {"ipv4:11.0.0.0:1", 0},
        {"ipv4:9.255.255.255:1", 0}, {"ipv4:192.168.1.128:1", 1}, {"ipv4:192.168.1.255:1", 1},
        {"ipv4:192.168.1.127:1", 0}, {"ipv4:203.0.113.7:1", 1}, {"ipv4:203.0.113.8:1", 0},
        {"ipv6:[::1]:1", 1}, {"ipv6:[::2]:1", 0}, {"ipv6:%5B2001:db8:ffff::1%5D:1", 1},
        {"ipv6:[2001:db9::1]:1", 0},
        /* v4-mapped peers match v4 rules; a mapped rule is a v4 rule. */
        {"ipv6:[::ffff:10.1.2.3]:1", 1}, {"ipv6:[::ffff:11.1.2.3]:1", 0},
        {"ipv4:198.51.100.42:1", 1}, {"ipv6:[::ffff:198.51.100.42]:1", 1},
        {"ipv4:198.51.101.1:1", 0},
        /* ::1 is not 127.0.0.1 and 0.0.0.1 is not ::1. */
        {"ipv4:127.0.0.1:1", 0}, {"ipv4:0.0.0.1:1", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (allows_peer(a, cases[i].peer) != cases[i].want)
            fail_msg("%s: expected %s", cases[i].peer, cases[i].want ? "allowed" : "denied");
    cv_allowlist_free(a);
}

static void test_empty_allows_all_and_zero_prefix(void **state) {
    (void)state;
    cv_allowlist *a = list_of(NULL, 0);
    assert_true(allows_peer(a, "ipv4:8.8.8.8:53"));
    assert_true(allows_peer(a, "ipv6:[2001:4860::8888]:53"));
    cv_allowlist_free(a);
    const char *any4[] = {"0.0.0.0/0"};
    a = list_of(any4, 1);
    assert_true(allows_peer(a, "ipv4:8.8.8.8:53"));
    assert_true(allows_peer(a, "ipv6:[::ffff:8.8.8.8]:53"));
    assert_false(allows_peer(a, "ipv6:[2001:4860::8888]:53"));
    cv_allowlist_free(a);
}

static void test_bad_rules(void **state) {
    (void)state;
    struct { const char *rule; const char *want; } bad[] = {
        {"10.0.0.1/8", "has host bits set beyond /8 (did you mean 10.0.0.0/8?)"},
        {"2001:db8::1/32", "did you mean 2001:db8::/32?"},
        {"10.0.0.0/33", "prefix must be 0..32"},
        {"::/129", "prefix must be 0..128"},
        {"10.0.0.0/", "prefix must be"},
        {"10.0.0.0/-1", "prefix must be"},
        {"10.0.0.0/8x", "prefix must be"},
        {"10.0.0.0/0008", "prefix must be"},
        {"localhost", "'localhost' is not an IPv4 or IPv6 address"},
        {"10.0.0/8", "is not an IPv4 or IPv6 address"},
        {"", "is not ADDR or ADDR/PREFIX"},
        {"/8", "is not ADDR or ADDR/PREFIX"},
    };
    cv_allowlist *a = list_of(NULL, 0);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cv_error e = {0};
        if (cv_allowlist_add(a, bad[i].rule, &e) != CV_EINVAL || !strstr(e.msg, bad[i].want))
            fail_msg("rule '%s': '%s'", bad[i].rule, e.msg);
    }
    assert_int_equal(cv_allowlist_count(a), 0);
    cv_allowlist_free(a);
}

/* Random networks and addresses against an independent bit-by-bit check. */
static void test_random_prefixes(void **state) {
    (void)state;
    for (int it = 0; it < 2000; it++) {
        int v6 = (int)(cv_test_rng_next(&rng) & 1), total = v6 ? 128 : 32;
        int prefix = (int)(cv_test_rng_next(&rng) % (unsigned)(total + 1));
        uint8_t net[16] = {0}, addr[16];
        for (int i = 0; i < 16; i++) addr[i] = (uint8_t)cv_test_rng_next(&rng);
        /* v4 in v6 (::ffff:0:0/96) is special: keep random v6 rules out of it. */
        if (v6) addr[0] |= 0x20;
        for (int b = 0; b < prefix; b++) net[b / 8] |= addr[b / 8] & (0x80 >> (b % 8));
        /* Half the time the address flips one bit: inside the prefix it leaves the net. */
        int flip = (int)(cv_test_rng_next(&rng) % (unsigned)total);
        if (cv_test_rng_next(&rng) & 1) addr[flip / 8] ^= (uint8_t)(0x80 >> (flip % 8));
        int inside = 1;
        for (int b = 0; b < prefix; b++)
            if ((net[b / 8] ^ addr[b / 8]) & (0x80 >> (b % 8))) inside = 0;
        char ntext[64], rule[80];
        cv_ip n = {v6 ? 6 : 4, {0}}, x = {v6 ? 6 : 4, {0}};
        memcpy(n.a, net, v6 ? 16 : 4);
        memcpy(x.a, addr, v6 ? 16 : 4);
        cv_ip_format(&n, ntext);
        snprintf(rule, sizeof rule, "%s/%d", ntext, prefix);
        cv_allowlist *a = list_of((const char *const[]){rule}, 1);
        if (cv_allowlist_allows(a, &x) != inside) fail_msg("rule %s, iteration %d", rule, it);
        cv_allowlist_free(a);
    }
}

int main(void) {
    rng = cv_test_rng_new(cv_test_seed("test_allowlist"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_peer_forms),
        cmocka_unit_test(test_rules_v4_v6_mapped),
        cmocka_unit_test(test_empty_allows_all_and_zero_prefix),
        cmocka_unit_test(test_bad_rules),
        cmocka_unit_test(test_random_prefixes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
