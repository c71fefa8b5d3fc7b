/* chat_page: the built-in chat page served by the HTTP API at GET / (issue 14.5).
 *
 * The files of server/service/chat_page/ (HTML, JavaScript, CSS, an icon) are compiled
 * into the binary by server/tools/embed_assets.py (the Makefile writes
 * $(BUILD)/gen/chat_page_assets.inc): the page loads nothing from anywhere else.
 * Paths: "/" is index.html, "/chat/NAME" every file by its name; nothing else (no
 * directories, no "..", no query-string lookups: the path is compared as is).
 *
 * Every answer carries cv_chat_page_headers: a Content-Security-Policy that allows
 * scripts, styles, images and fetches from the page's own origin only (no inline code,
 * no remote loads, no framing), nosniff, no referrer, and no-cache so that an upgraded
 * server's page is not mixed with a cached older one.
 *
 * cv_chat_page_register adds the routes to the HTTP API (corvid-server does when
 * http_listen is set). They skip the auth policy: the page is public static code and
 * holds no data; its API calls carry the bearer token the user types into it and are
 * checked like any other client's.
 */
#ifndef CV_CHAT_PAGE_H
#define CV_CHAT_PAGE_H

#include <stddef.h>

#include "http_server.h"

typedef struct cv_chat_asset {
    const char *name;          /* the file's name: "index.html", "app.js", ... */
    const char *content_type;  /* from its extension, with charset=utf-8 for text */
    const unsigned char *data;
    size_t len;
} cv_chat_asset;

/* The asset served at path, or NULL. */
const cv_chat_asset *cv_chat_page_lookup(const char *path);
/* Every asset (sorted by name), for tests and listings. */
const cv_chat_asset *cv_chat_page_assets(size_t *n);

/* GET (and HEAD) "/" and "/chat/NAME"; an unknown NAME is a 404 error object. */
cv_status cv_chat_page_register(cv_hs *hs, cv_error *err);

/* Response headers for every asset: {name, value} pairs ending with {NULL, NULL}. */
extern const char *const cv_chat_page_headers[][2];

#endif
