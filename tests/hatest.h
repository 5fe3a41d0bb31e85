/*
 * hatest.h - the harness of the tests that fail a walmirror pair over (test_ha, test_faults).
 *
 * ha_stand_up() stands the pair up with pairtest.h and adds: a witness agent (role = witness)
 * that both sites use, failover_timeout HA_FAILOVER_TIMEOUT_S, auto_rejoin, peer_pg_conninfo,
 * availability_mode ha_availability_mode;
 * site A's paths to B (L_ab) and to the witness (L_aw) through wm-linkem, which the tests cut
 * and restore; and the ledger client: a child process that commits ids one by one at
 * synchronous_commit = on through a connection that follows the writable primary
 * (target_session_attrs = read-write) and records each id whose commit returned, with the
 * time.  An id whose commit failed or whose connection broke is never reused and never
 * counted as acknowledged.  Everything started is stopped at exit (atexit), also on failure.
 */
#ifndef WALMIRROR_TESTS_HATEST_H
#define WALMIRROR_TESTS_HATEST_H

#include <sys/types.h>

#include "pairtest.h"

#define HA_FAILOVER_TIMEOUT_S 3
#define HA_STANDBY_LOSS_TIMEOUT_S 4
#define LINKEM WM_BINARY_DIR "/bench/wm-linkem"

struct ha_linkem {
    int port;
    char control[4200];
    char log[4200];
    pid_t pid;
};

struct ha_witness {
    char dir[4096];
    char conf[4200];
    char log[4200];
    int port;
    int http_port;
    pid_t pid;
};

extern struct ha_linkem L_ab, L_aw;
/* Both sites' availability_mode ("maximum_protection", the behaviour the older tests assert,
 * unless a test sets it before ha_stand_up) and standby_loss_timeout in seconds. */
extern const char *ha_availability_mode;
extern int ha_standby_loss_timeout_s;
extern struct ha_witness W;

/* Stands up pair, witness, link emulators and ledger; 0 or -1 (printed). */
int ha_stand_up(void);
/* Stops everything and removes the temporary directories. */
void ha_tear_down(void);
void ha_stop_everything(void);

void ha_start_witness(void);
/* Sends a control command ("cut", "restore", "set delay=50ms") to a link emulator. */
void ha_linkem_send(struct ha_linkem *l, const char *command);

void ha_start_ledger(void);
void ha_stop_ledger(void);
/* Check-asserts that every acknowledged id is on primary; returns how many were acknowledged
 * and the longest gap between two acknowledgements in *gap_us. */
int ha_check_ledger(struct pt_site *primary, long long *gap_us);
/* Acknowledged ids so far. */
int ha_ledger_count(void);
/* When (microseconds since the Unix epoch) the ledger got its first acknowledgement after
 * t_us; 0: none yet. */
long long ha_first_ack_after(long long t_us);

/* walmirrorctl with both sites' URLs; its output (also printed) in out; returns its exit. */
int ha_ctl(char *out, size_t cap, const char *args);
pid_t ha_pgbench_in_background(struct pt_site *primary, int seconds);
/* The postmaster's pid from postmaster.pid, 0 if none. */
pid_t ha_postmaster_pid(struct pt_site *s);

#endif
