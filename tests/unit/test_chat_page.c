/* chat_page: the embedded page (server/service/chat_page/ through embed_assets.py):
 * every file is served at its path with its Content-Type, the HTML refers only to
 * embedded files, nothing in it needs what the CSP forbids (inline code, remote
 * loads), and paths outside the page find nothing. The page in a real browser against
 * a real server is tests/integration/test_chat_page.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_page.h"

/* The asset's bytes as a NUL-terminated string (the assets are text). */
static char *text_of(const cv_chat_asset *a) {
    char *s = malloc(a->len + 1);
    assert_non_null(s);
    memcpy(s, a->data, a->len);
    s[a->len] = 0;
    return s;
}

static void test_every_file_served_with_its_type(void **state) {
    (void)state;
    static const struct {
        const char *path, *name, *type, *starts;
    } want[] = {
        {"/", "index.html", "text/html; charset=utf-8", "<!doctype html>"},
        {"/chat/app.js", "app.js", "text/javascript; charset=utf-8", "//"},
        {"/chat/style.css", "style.css", "text/css; charset=utf-8", "/*"},
        {"/chat/icon.svg", "icon.svg", "image/svg+xml", "<svg"},
    };
    size_t n;
    const cv_chat_asset *all = cv_chat_page_assets(&n);
    assert_int_equal(n, sizeof want / sizeof want[0]);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const cv_chat_asset *a = cv_chat_page_lookup(want[i].path);
        if (!a) fail_msg("%s: not found", want[i].path);
        assert_string_equal(a->name, want[i].name);
        assert_string_equal(a->content_type, want[i].type);
        assert_true(a->len > strlen(want[i].starts));
        if (memcmp(a->data, want[i].starts, strlen(want[i].starts)) != 0)
            fail_msg("%s does not start with %s", want[i].name, want[i].starts);
    }
    /* Every asset also answers at /chat/NAME, the same bytes. */
    for (size_t i = 0; i < n; i++) {
        char path[128];
        snprintf(path, sizeof path, "/chat/%s", all[i].name);
        assert_ptr_equal(cv_chat_page_lookup(path), &all[i]);
    }
}

static void test_other_paths_find_nothing(void **state) {
    (void)state;
    const char *paths[] = {"", "/chat/", "/chat", "/index.html", "/app.js", "/chat/APP.JS", "/chat/../chat/app.js",
                           "/chat/app.js/", "/chat//app.js", "/chat/app.js?v=1", "/chat/app", "/v1/models", "//"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++)
        if (cv_chat_page_lookup(paths[i])) fail_msg("%s: found, want nothing", paths[i]);
}

/* Each src="..." and href="..." of index.html names an embedded asset by its path. */
static void test_html_refers_to_embedded_files_only(void **state) {
    (void)state;
    char *html = text_of(cv_chat_page_lookup("/"));
    int refs = 0;
    for (const char *p = html; (p = strstr(p, "=\"")) != NULL; p += 2) {
        int is_src = p >= html + 3 && strncmp(p - 3, "src", 3) == 0;
        int is_href = p >= html + 4 && strncmp(p - 4, "href", 4) == 0;
        if (!is_src && !is_href) continue;
        const char *end = strchr(p + 2, '"');
        assert_non_null(end);
        char ref[128];
        snprintf(ref, sizeof ref, "%.*s", (int)(end - p - 2), p + 2);
        if (!cv_chat_page_lookup(ref)) fail_msg("index.html refers to %s, which is not embedded", ref);
        refs++;
    }
    assert_int_equal(refs, 4); /* icon (twice), style.css, app.js */
    free(html);
}

/* The CSP forbids inline scripts and styles and every other origin: the page must not
 * need them (a violation would leave the page without its script in the browser). */
static void test_page_needs_nothing_the_csp_forbids(void **state) {
    (void)state;
    const char *csp = NULL;
    for (size_t i = 0; cv_chat_page_headers[i][0]; i++)
        if (strcmp(cv_chat_page_headers[i][0], "Content-Security-Policy") == 0) csp = cv_chat_page_headers[i][1];
    assert_non_null(csp);
    const char *must[] = {"default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'",
                          "frame-ancestors 'none'"};
    for (size_t i = 0; i < sizeof must / sizeof must[0]; i++)
        if (!strstr(csp, must[i])) fail_msg("CSP lacks %s: %s", must[i], csp);
    assert_null(strstr(csp, "unsafe"));
    assert_null(strstr(csp, "*"));

    char *html = text_of(cv_chat_page_lookup("/"));
    for (const char *p = html; (p = strstr(p, "<script")) != NULL; p++)
        if (strncmp(p, "<script src=", 12) != 0) fail_msg("inline <script> in index.html");
    assert_null(strstr(html, "<style"));
    assert_null(strstr(html, " style="));
    /* No inline handlers (onclick= ...): an attribute " on" + letters + "=". */
    for (const char *p = html; (p = strstr(p, " on")) != NULL; p++) {
        const char *q = p + 3;
        while (*q >= 'a' && *q <= 'z') q++;
        if (q > p + 3 && *q == '=') fail_msg("inline handler in index.html: %.20s", p + 1);
    }
    free(html);
    /* The script calls the API by path, on the page's own origin. */
    char *js = text_of(cv_chat_page_lookup("/chat/app.js"));
    assert_non_null(strstr(js, "fetch(\"/v1/chat/completions\""));
    assert_non_null(strstr(js, "fetch(\"/v1/models\""));
    assert_null(strstr(js, "http://"));
    assert_null(strstr(js, "https://"));
    assert_null(strstr(js, "innerHTML")); /* model output goes in as text */
    free(js);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_file_served_with_its_type),
        cmocka_unit_test(test_other_paths_find_nothing),
        cmocka_unit_test(test_html_refers_to_embedded_files_only),
        cmocka_unit_test(test_page_needs_nothing_the_csp_forbids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
