#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pii.h"

static unsigned seed;

/* Independent reimplementations (the test's own arithmetic, not the module's). */
static char id_check_char(const char *d17) {
    const int w[17] = {7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2};
    int s = 0;
    for (int i = 0; i < 17; i++) s += (d17[i] - '0') * w[i];
    return "10X98765432"[s % 11];
}

static void make_id(char out[19]) {
    const int prov[] = {11, 31, 44, 51, 65, 81};
    int y = 1950 + rand() % 60, m = 1 + rand() % 12, d = 1 + rand() % 28;
    char tmp[64];
    snprintf(tmp, sizeof tmp, "%02d%04u%04d%02d%02d%03u", prov[rand() % 6],
             (unsigned)rand() % 10000u, y, m, d, (unsigned)rand() % 1000u);
    memcpy(out, tmp, 17);
    out[17] = id_check_char(out);
    out[18] = 0;
}

static char luhn_digit(const char *body, size_t n) { /* check digit appended to body */
    int s = 0;
    for (size_t k = 0; k < n; k++) {
        int dd = body[n - 1 - k] - '0';
        if (k % 2 == 0) dd = dd * 2 > 9 ? dd * 2 - 9 : dd * 2;
        s += dd;
    }
    return (char)('0' + (10 - s % 10) % 10);
}

static void make_card(char *out, size_t n) {
    out[0] = '6';
    for (size_t i = 1; i + 1 < n; i++) out[i] = (char)('0' + rand() % 10);
    out[n - 1] = luhn_digit(out, n - 1);
    out[n] = 0;
}

static void make_phone(char out[12]) {
    char tmp[32];
    snprintf(tmp, sizeof tmp, "1%d%09u", 3 + rand() % 7, (unsigned)rand() % 1000000000u);
    memcpy(out, tmp, 12);
}

static char *mask(const cv_pii *p, const char *in, size_t *n) {
    char *out = NULL;
    cv_error e = {0};
    assert_int_equal(cv_pii_mask(p, in, strlen(in), &out, n, &e), CV_OK);
    return out;
}

static void expect(const cv_pii *p, const char *in, const char *want, size_t want_n) {
    size_t n = 99;
    char *out = mask(p, in, &n);
    if (strcmp(out, want) != 0 || n != want_n)
        fail_msg("mask(\"%s\") = \"%s\" (%zu spans), want \"%s\" (%zu) [seed %u]", in, out, n,
                 want, want_n, seed);
    free(out);
}

static int setup(void **state) {
    cv_pii *p = NULL;
    assert_int_equal(cv_pii_create(CV_PII_PLACEHOLDER, &p, NULL), CV_OK);
    *state = p;
    return 0;
}

static int teardown(void **state) {
    cv_pii_free(*state);
    return 0;
}

static void test_cn_id_true_and_false_positives(void **state) {
    cv_pii *p = *state;
    char buf[256], id[19];
    for (int r = 0; r < 200; r++) {
        make_id(id);
        snprintf(buf, sizeof buf, "我的身份证号是%s，请核对。", id);
        expect(p, buf, "我的身份证号是[CN_ID]，请核对。", 1);
        /* wrong check character: not an ID (and 17 digits + char is no card/phone) */
        char bad[19];
        memcpy(bad, id, 19);
        bad[17] = bad[17] == '0' ? '1' : (bad[17] == 'X' ? '2' : (char)(bad[17] == '9' ? '0' : bad[17] + 1));
        if (bad[17] == id_check_char(bad)) continue;
        snprintf(buf, sizeof buf, "号码%s。", bad);
        size_t n = 9;
        char *out = mask(p, buf, &n);
        if (n == 1) assert_string_equal(out, "号码[CARD]。"); /* an 18-digit Luhn run */
        else assert_string_equal(out, buf);
        free(out);
    }
    /* a known-good ID with X check char, lower-case x accepted */
    expect(p, "ID 11010519491231002X end", "ID [CN_ID] end", 1);
    expect(p, "ID 11010519491231002x end", "ID [CN_ID] end", 1);
    /* bad province 99, impossible date 19490230, inside a longer digit run */
    expect(p, "99010519491231002X", "99010519491231002X", 0);
    char feb30[19] = "11010519490230001";
    feb30[17] = id_check_char(feb30);
    feb30[18] = 0;
    expect(p, feb30, feb30, 0);
    snprintf(buf, sizeof buf, "7%s", "11010519491231002X");
    expect(p, buf, buf, 0);
    expect(p, "11010519491231002X3", "11010519491231002X3", 0);
    assert_true(cv_pii_cn_id_ok("11010519491231002X"));
    assert_false(cv_pii_cn_id_ok("11010519491231002Y"));
}

static void test_mobile_numbers(void **state) {
    cv_pii *p = *state;
    char ph[12], buf[256];
    for (int r = 0; r < 100; r++) {
        make_phone(ph);
        snprintf(buf, sizeof buf, "请拨打%s联系", ph);
        expect(p, buf, "请拨打[PHONE]联系", 1);
        snprintf(buf, sizeof buf, "tel: +86 %.3s-%.4s-%.4s.", ph, ph + 3, ph + 7);
        expect(p, buf, "tel: [PHONE].", 1);
        snprintf(buf, sizeof buf, "(+86)%.3s %.4s %.4s", ph, ph + 3, ph + 7);
        expect(p, buf, "[PHONE]", 1);
        snprintf(buf, sizeof buf, "0086%s", ph);
        expect(p, buf, "[PHONE]", 1);
        /* embedded in a longer digit run, or mixed separators: left alone */
        snprintf(buf, sizeof buf, "9%s", ph);
        expect(p, buf, buf, 0);
        snprintf(buf, sizeof buf, "%s5", ph);
        expect(p, buf, buf, 0);
        snprintf(buf, sizeof buf, "%.3s-%.4s %.4s", ph, ph + 3, ph + 7);
        expect(p, buf, buf, 0);
    }
    expect(p, "12812345678", "12812345678", 0); /* second digit 2: not a mobile */
    expect(p, "1381234567", "1381234567", 0);   /* 10 digits */
}

static void test_email(void **state) {
    cv_pii *p = *state;
    expect(p, "联系 zhang.san+rag@example.com.cn 谢谢", "联系 [EMAIL] 谢谢", 1);
    expect(p, "mail a_b@mail-1.example.org.", "mail [EMAIL].", 1);
    expect(p, "<x@y.io>", "<[EMAIL]>", 1);
    expect(p, "user@localhost and @example.com and a@b.c", "user@localhost and @example.com and a@b.c", 0);
    expect(p, "price 5@3.50", "price 5@3.50", 0);
}

static void test_bank_cards_luhn(void **state) {
    cv_pii *p = *state;
    char card[20], buf[256];
    for (int r = 0; r < 200; r++) {
        size_t n = 13 + (size_t)(rand() % 7);
        make_card(card, n);
        if (n == 18 && cv_pii_cn_id_ok(card)) continue; /* would be an ID, masked as such */
        snprintf(buf, sizeof buf, "卡号%s。", card);
        expect(p, buf, "卡号[CARD]。", 1);
        char bad[20];
        memcpy(bad, card, n + 1);
        bad[n - 1] = (char)('0' + (bad[n - 1] - '0' + 1) % 10);
        snprintf(buf, sizeof buf, "卡号%s。", bad);
        if (!(n == 18 && cv_pii_cn_id_ok(bad))) expect(p, buf, buf, 0);
        /* inside a longer run (20+ digits): never masked */
        snprintf(buf, sizeof buf, "%s0000000", card);
        expect(p, buf, buf, 0);
    }
    make_card(card, 16);
    snprintf(buf, sizeof buf, "card %.4s %.4s %.4s %.4s ok", card, card + 4, card + 8, card + 12);
    expect(p, buf, "card [CARD] ok", 1);
    snprintf(buf, sizeof buf, "card %.4s-%.4s-%.4s-%.4s", card, card + 4, card + 8, card + 12);
    expect(p, buf, "card [CARD]", 1);
    expect(p, "4111111111111111", "[CARD]", 1);
    expect(p, "4111111111111112", "4111111111111112", 0);
    expect(p, "order 2024 1234 ok", "order 2024 1234 ok", 0);
    assert_true(cv_pii_luhn_ok("79927398713", 11));
    assert_false(cv_pii_luhn_ok("79927398710", 11));
}

static void test_partial_masks(void **state) {
    (void)state;
    cv_pii *p = NULL;
    assert_int_equal(cv_pii_create(CV_PII_PARTIAL, &p, NULL), CV_OK);
    expect(p, "身份证11010519491231002X", "身份证110***********002X", 1);
    expect(p, "手机13812345678", "手机138****5678", 1);
    expect(p, "+86 138-1234-5678", "+86 138-****-5678", 1);
    expect(p, "4111 1111 1111 1111", "**** **** **** 1111", 1);
    expect(p, "bob@example.com", "b**@example.com", 1);
    cv_pii_free(p);
}

static void test_extra_patterns(void **state) {
    (void)state;
    cv_pii *p = NULL;
    cv_error e = {0};
    assert_int_equal(cv_pii_create(CV_PII_PLACEHOLDER, &p, NULL), CV_OK);
    assert_int_equal(cv_pii_add_pattern(p, "EMPLOYEE", "EMP-[0-9]{6}", &e), CV_OK);
    expect(p, "员工EMP-123456和EMP-654321，电话13812345678",
           "员工[EMPLOYEE]和[EMPLOYEE]，电话[PHONE]", 3);
    assert_int_equal(cv_pii_add_pattern(p, "BAD", "([0-9]", &e), CV_EINVAL);
    assert_non_null(strstr(e.msg, "bad regex"));
    assert_int_equal(cv_pii_add_pattern(p, "lower", "x", &e), CV_EINVAL);
    assert_non_null(strstr(e.msg, "[A-Z0-9_]"));
    cv_pii_free(p);
}

static void test_random_text_is_preserved_outside_matches(void **state) {
    cv_pii *p = *state;
    /* Text with no digits and no '@' must come back byte for byte (including bad UTF-8). */
    char buf[512];
    for (int r = 0; r < 200; r++) {
        size_t n = (size_t)(rand() % 500);
        for (size_t i = 0; i < n; i++) {
            char c;
            do c = (char)(rand() % 256);
            while (c == 0 || (c >= '0' && c <= '9') || c == '@');
            buf[i] = c;
        }
        buf[n] = 0;
        size_t k = 9;
        char *out = mask(p, buf, &k);
        assert_int_equal(k, 0);
        assert_memory_equal(out, buf, n + 1);
        free(out);
    }
}

int main(void) {
    seed = (unsigned)time(NULL);
    printf("test_pii seed %u\n", seed);
    srand(seed);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_cn_id_true_and_false_positives, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mobile_numbers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_email, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bank_cards_luhn, setup, teardown),
        cmocka_unit_test(test_partial_masks),
        cmocka_unit_test(test_extra_patterns),
        cmocka_unit_test_setup_teardown(test_random_text_is_preserved_outside_matches, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
