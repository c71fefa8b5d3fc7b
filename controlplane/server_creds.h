/* cv_server_creds: what the control plane presents to the corvid-servers it drives:
 * the CA that verifies them (TLS), an optional client certificate (mTLS) and a bearer
 * token with the admin scope, read once at start from the files and the environment
 * variable the config names (cp_config.h: server_tls, server_token_file/_env).
 *
 * Loading checks what would otherwise surface as every Admin call failing: each file
 * is readable and holds PEM of the right kind, the token is one non-empty line of
 * printable characters (a trailing newline, as Secrets often carry, is dropped).
 * Messages name the file or the variable, never the token; the token and the key are
 * wiped when freed. A new token or certificate needs a restart (a rolling one).
 */
#ifndef CV_SERVER_CREDS_H
#define CV_SERVER_CREDS_H

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

#endif
