#include "chat_page.h"

#include <string.h>

#include "chat_page_assets.inc"

/* The page's own origin only: app.js, style.css, the icon and the API calls. */
const char *const cv_chat_page_headers[][2] = {
    {"Content-Security-Policy",
     "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
     "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"},
    {"X-Content-Type-Options", "nosniff"},
    {"Referrer-Policy", "no-referrer"},
    {"Cache-Control", "no-cache"},
    {NULL, NULL},
};

#define N_ASSETS (sizeof assets / sizeof assets[0])
#define ASSET_PREFIX "/chat/"

const cv_chat_asset *cv_chat_page_lookup(const char *path) {
    const char *name = NULL;
    if (strcmp(path, "/") == 0) name = "index.html";
    else if (strncmp(path, ASSET_PREFIX, strlen(ASSET_PREFIX)) == 0) name = path + strlen(ASSET_PREFIX);
    if (!name) return NULL;
    for (size_t i = 0; i < N_ASSETS; i++)
        if (strcmp(assets[i].name, name) == 0) return &assets[i];
    return NULL;
}

const cv_chat_asset *cv_chat_page_assets(size_t *n) {
    *n = N_ASSETS;
    return assets;
}

static void on_page(void *ctx, cv_hs_req *req) {
    (void)ctx;
    const cv_chat_asset *a = cv_chat_page_lookup(cv_hs_path(req));
    if (a) cv_hs_reply_static(req, 200, a->content_type, a->data, a->len, cv_chat_page_headers);
    else cv_hs_reply_error(req, 404, "no such file of the chat page", NULL, "not_found", 0);
}

cv_status cv_chat_page_register(cv_hs *hs, cv_error *err) {
    cv_status st = cv_hs_route(hs, "GET", "/", 0, 0, on_page, NULL, err);
    return st != CV_OK ? st : cv_hs_route(hs, "GET", ASSET_PREFIX, 1, 0, on_page, NULL, err);
}
