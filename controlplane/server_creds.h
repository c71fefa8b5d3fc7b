/* cv_server_creds: what the control plane presents to the corvid-servers it drives:
 * the CA that verifies them (TLS), an optional client certificate (mTLS) and a bearer
 * token with the admin scope, from the files and the environment variable the config
 * names (cp_config.h: server_tls, server_token_file/_env).
 *
 * Loading checks what would otherwise surface as every Admin call failing: each file
 * is readable and holds PEM of the right kind, the token is one non-empty line of
 * printable characters (a trailing newline, as Secrets often carry, is dropped).
 * Messages name the file or the variable, never the token; the token and the key are
 * wiped when freed.
 *
 * Rotation without a restart (cv_server_creds_store): the store holds the last good
 * set as an immutable, reference-counted snapshot. cv_server_creds_store_refresh
 * stat()s the files (following symlinks, so the Kubernetes `..data` swap of a mounted
 * Secret is seen as a new inode) at most once per min_interval_ms, and re-reads them
 * all when any one's device, inode, size, mtime or ctime moved. A set that loads
 * replaces the snapshot; one that does not (unreadable, wrong PEM kind, empty token)
 * is refused once per version on disk and the last good set stays in use until a
 * file moves again. The files are stat()ed before they are read, so a write that
 * races a reload moves them again and is re-read on the next look. A rewrite in place
 * that keeps size and timestamps (within the filesystem's granularity) is not seen:
 * rotate by rename or symlink swap, as Kubernetes and cert-manager do. The
 * environment variable is read once: a process's environment does not change.
 * Every store function is thread-safe; a snapshot stays valid until released, even
 * after a reload swapped another in.
 */
#ifndef CV_SERVER_CREDS_H
#define CV_SERVER_CREDS_H

#include <stdbool.h>
#include <stdint.h>

#include "corvid/client.h"
#include "cp_config.h"

typedef struct cv_server_creds {
    char *ca_pem, *cert_pem, *key_pem; /* NULL: plaintext / no client certificate */
    char *token;                       /* NULL: none */
    const char *server_name;           /* into cfg; NULL: the address's host */
} cv_server_creds;

/* cfg must outlive the creds. */
cv_status cv_server_creds_load(const cv_cp_config *cfg, cv_server_creds *out, cv_error *err);
/* Fills the TLS and token fields of a client's options (pointers into c). */
void cv_server_creds_apply(const cv_server_creds *c, corvid_client_options *opt);
void cv_server_creds_free(cv_server_creds *c);

typedef struct cv_server_creds_store cv_server_creds_store;

typedef enum cv_server_creds_change {
    CV_CREDS_UNCHANGED, /* not due, nothing moved, or no file to watch */
    CV_CREDS_RELOADED,  /* a new snapshot is in place */
    CV_CREDS_REFUSED,   /* files moved but do not load: err names the file; the old set stays */
} cv_server_creds_change;

typedef struct cv_server_creds_stats {
    uint64_t reloads;       /* new sets swapped in after the first load */
    uint64_t errors;        /* versions on disk refused */
    int64_t loaded_unix_ms; /* when the set in use was read (wall clock) */
    bool last_ok;           /* false while the newest version on disk is a refused one */
} cv_server_creds_stats;

/* Loads the first set; fails as cv_server_creds_load does. cfg must outlive the store. */
cv_status cv_server_creds_store_open(const cv_cp_config *cfg, cv_server_creds_store **out,
                                     cv_error *err);
/* Snapshots still held stay valid: the last release frees them. */
void cv_server_creds_store_close(cv_server_creds_store *s);
/* now_ms: a monotonic clock. On CV_CREDS_RELOADED, `moved` lists the config keys of
 * the files that moved ("server_token_file, server_tls.ca"). */
cv_server_creds_change cv_server_creds_store_refresh(cv_server_creds_store *s, int64_t now_ms,
                                                     int64_t min_interval_ms, char *moved,
                                                     size_t moved_cap, cv_error *err);
/* The snapshot in use, with a reference taken: give it back with cv_server_creds_release.
 * Two calls return the same pointer until a reload. */
const cv_server_creds *cv_server_creds_store_get(cv_server_creds_store *s);
/* Only for snapshots from cv_server_creds_store_get. */
void cv_server_creds_release(const cv_server_creds *c);
void cv_server_creds_store_stats(cv_server_creds_store *s, cv_server_creds_stats *out);

#endif
