/* cv_test_etcd: a throwaway single-member etcd for tests.
 *
 * Start picks free loopback ports (127.0.0.1 only), makes a temp data dir, runs
 * $CORVID_ETCD_BIN (default "etcd" on PATH) with its log in DIR/etcd.log and waits
 * until GET /health answers. The process is stopped by its PID only, and dies with
 * the thread that launched it (PR_SET_PDEATHSIG, which follows the launching
 * thread, not the process): launch from the main thread, so that a crashed test
 * leaves no etcd behind. Launch again on the same dir and ports to
 * simulate a restart. Besides the main client URL, etcd listens on a second one
 * (alt_url) so that a test can cut the main URL off while still reaching etcd.
 */
#ifndef CV_TEST_ETCD_H
#define CV_TEST_ETCD_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "cv_error.h"

typedef struct cv_test_etcd {
    pid_t pid; /* 0 when not running */
    char dir[256];
    int client_port, alt_port, peer_port;
    char url[64];     /* http://127.0.0.1:client_port */
    char alt_url[64]; /* http://127.0.0.1:alt_port */
} cv_test_etcd;

/* A fresh etcd: new temp dir, new ports, both client URLs served. */
cv_status cv_test_etcd_start(cv_test_etcd *e, cv_error *err);
/* (Re)starts on the existing dir and ports; main=false serves alt_url only. */
cv_status cv_test_etcd_launch(cv_test_etcd *e, bool main, cv_error *err);
/* Sends sig (SIGTERM, SIGKILL) and reaps the process. */
void cv_test_etcd_kill(cv_test_etcd *e, int sig);
/* SIGSTOP / SIGCONT: etcd keeps its sockets but answers nothing. Returns once
 * every thread of etcd has stopped (or runs again). */
void cv_test_etcd_pause(cv_test_etcd *e, bool paused);
/* Kills etcd (if running) and removes its data dir. */
void cv_test_etcd_destroy(cv_test_etcd *e);

/* A port that was free on 127.0.0.1 a moment ago. */
int cv_test_free_port(void);

/* cmocka group setup/teardown of an etcd test file: setup starts
 * cv_test_etcd_shared and seeds rand() from the clock, printing both (0 on
 * success, -1 with the reason on stderr); teardown destroys it. */
extern cv_test_etcd cv_test_etcd_shared;
int cv_test_etcd_group_setup(void **state);
int cv_test_etcd_group_teardown(void **state);

int64_t cv_test_now_ms(void);
void cv_test_sleep_ms(int ms);

#endif
