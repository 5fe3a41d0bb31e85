/*
 * hatest.h - the harness of the tests that fail a walmirror pair over (test_ha, test_avail,
 * test_ha_etcd, test_faults).
 *
 * ha_stand_up() stands the pair up with pairtest.h and adds: the arbiter both sites use - a
 * witness agent (role = witness), or, when the test fills ha_etcd first, arbiter = etcd on an
 * etcd cluster the test runs (etcdtest.h) -, failover_timeout HA_FAILOVER_TIMEOUT_S,
 * auto_rejoin, peer_pg_conninfo, availability_mode ha_availability_mode;
 * site A's paths to B (L_ab) and to the arbiter (L_aw to the witness, or L_ae[i] to each etcd
 * member) through wm-linkem, which the tests cut and restore; and the ledger client: a child
 * process that commits ids one by one at synchronous_commit = on through a connection that follows
 * the writable primary (target_session_attrs = read-write) and records each id whose commit
 * returned, with the time.  An id whose commit failed or whose connection broke is never reused and
 * never counted as acknowledged.  Everything started is stopped at exit (atexit), also on failure.
 */
#ifndef WALMIRROR_TESTS_HATEST_H
#define WALMIRROR_TESTS_HATEST_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
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

#define HA_ETCD_MAX 3

/* arbiter = etcd instead of the witness: filled by the test before ha_stand_up (members == 0:
 * the witness).  Site B reaches the members directly, site A through L_ae[i]; with tls, both
 * present their own certificates (etcd_ca, etcd_cert, etcd_key). */
struct ha_etcd {
    int members;
    int client_port[HA_ETCD_MAX];
    bool tls;
    int lease_ttl_s;
    const char *prefix; /* NULL: the default, from the node names */
};

extern struct ha_linkem L_ab, L_aw, L_ae[HA_ETCD_MAX];
extern struct ha_etcd ha_etcd;
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
/* Cuts (or restores) site A's path to its arbiter: L_aw, or every L_ae. */
void ha_arbiter_links(const char *command);

void ha_start_ledger(void);
void ha_stop_ledger(void);
/* Check-asserts that every acknowledged id is on primary; returns how many were acknowledged
 * and the longest gap between two acknowledgements in *gap_us. */
int ha_check_ledger(struct pt_site *primary, long long *gap_us);
/* ha_check_ledger on a standby: a commit is acknowledged once the standby has flushed it, not
 * replayed it, so the ledger pauses while standby replays all primary has written (asserted,
 * 30 s at most) and is checked; then it goes on. */
int ha_check_ledger_on_standby(struct pt_site *primary, struct pt_site *standby, long long *gap_us);
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

/* kill -9 of a site's agent and PostgreSQL (its postmaster.pid removed). */
void ha_kill_site(struct pt_site *s);
/* A killed standby site back: its PostgreSQL (a standby) and its agent. */
void ha_restart_standby_site(struct pt_site *s);
/* Waits for the ledger to acknowledge an id after t_unix_us; returns when (0: not within). */
long long ha_wait_ack_after(long long t_unix_us, double seconds);
/*
 * The availability issue's case a, with either arbiter: A synchronous under the ledger, B's
 * site killed; A's commits resume without B within standby_loss_timeout + 2 s, and A runs
 * exposed (since after the loss, sync_state "exposed", walmirror_exposed 1, walmirrorctl
 * status says so) with its WAL at risk growing.  Returns the seconds from the loss to A's
 * first commit (printed); *lost_at: the loss's time; *risk1, *risk2: the WAL at risk 2 s
 * apart.
 */
double ha_lose_standby_site(long long *lost_at, uint64_t *risk1, uint64_t *risk2);
/* After a fail-over that accepted data loss: the ledger forgets the acknowledged ids the new
 * primary lacks (declared lost), so that later checks hold it to everything else. */
void ha_forget_lost_ids(struct pt_site *primary);
/* The acknowledged ids primary lacks: how many were acknowledged before t_unix_us, how many at
 * or after it (into *missing_before, *missing_after); returns how many were acknowledged after
 * it in all. */
int ha_missing_ids(struct pt_site *primary, long long t_unix_us, int *missing_before,
                   int *missing_after);
/* stale, a standby whose primary ran exposed since exposed_at (Unix us) and was then lost,
 * promoted by hand: `failover --force` is refused naming --accept-data-loss, `failover --force
 * --accept-data-loss` promotes it; no id acknowledged before the exposure is missing on it
 * (those after were at risk: they are printed, and the ledger forgets them). */
void ha_force_failover_of_stale(struct pt_site *stale, long long exposed_at);

/* A site's GET /status as JSON (NULL when the agent does not answer); the caller initialises
 * libcurl (curl_global_init). */
json_t *ha_status_of(const struct pt_site *s);
bool ha_status_true(const struct pt_site *s, const char *key);
uint64_t ha_status_u64(const struct pt_site *s, const char *key);
/* The status's string key into buf ("" when absent). */
const char *ha_status_str(const struct pt_site *s, const char *key, char *buf, size_t cap);
/* Waits up to seconds for the status's key to be want. */
bool ha_wait_status_true(const struct pt_site *s, const char *key, bool want, double seconds);
long ha_http_code(const struct pt_site *s, const char *path);
/* Check-asserts that GET path answers code; the body and the status are printed when not. */
void ha_expect_code(const struct pt_site *s, const char *path, long code);

/* The size of a log now: what is written after it is what a test looks at. */
size_t ha_log_size(const char *path);
/* Whether needle appears in path after offset from, waiting up to seconds for it. */
bool ha_log_has_after(const char *path, size_t from, const char *needle, double seconds);

#endif
