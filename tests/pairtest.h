/*
 * pairtest.h - the two-site harness of the integration tests that run a walmirror pair.
 *
 * pt_stand_up_pair() stands the pair up the way docs/setup.md tells a DBA to: site A's
 * primary (pgbench -i -s 2); site B's standby made with `walmirror-agent init-standby` (slot
 * first, base backup, primary_conninfo pointing at B's WAL server); B's agent, B's PostgreSQL,
 * A's agent; then A's synchronous_standby_names names the source (B's too, for the day it is
 * promoted).  Agents and servers run as the postgres user on free loopback ports; the caller
 * stops the agents at exit (pt_stop_all_agents, registered with atexit by the test's main) and
 * destroys the clusters.  Every helper that can fail on the harness's side uses tu_require;
 * the pt_assert_* helpers use Check's assertions.
 */
#ifndef WALMIRROR_TESTS_PAIRTEST_H
#define WALMIRROR_TESTS_PAIRTEST_H

#include <check.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <sys/types.h>

#include "pgtest.h"
#include "testutil.h"

#define AGENT WM_BINARY_DIR "/agent/walmirror-agent"
#define CTL WM_BINARY_DIR "/tools/walmirrorctl"

struct pt_site {
    const char *name;
    struct pgt_cluster pg;
    char conf[4096];
    char log[4096];
    char spool[4096];
    int listen_port;
    int wal_port;
    int http_port;
    int peer_port; /* where this site's agent reaches its peer, if not the peer's listen port
                    * (a link emulator in between) */
    pid_t agent;
};

extern struct pt_site A, B;
extern char *certdir; /* copies of the test certificates, readable by postgres */
extern pid_t owner;   /* the test process: only it stops agents at exit */
/* Set before pt_stand_up to give each site's spool_dir a file system of its own: a tmpfs of
 * this size ("64m"), mounted by pt_prepare_site, unmounted by pt_tear_down (and at exit). */
extern const char *pt_spool_fs_size;
/* Fills s's spool file system (pt_spool_fs_size) with a file until less than half a WAL segment
 * is free; the file's path goes to path[cap].  Called again, it tops the same file up (the
 * spool's retention may have freed space meanwhile).  Returns its size. */
long long pt_fill_spool_fs(const struct pt_site *s, char *path, size_t cap);

double pt_now_s(void);

/* The agent configuration of s (peer: peer, certificate cert) at path; extra: more lines. */
void pt_write_conf(struct pt_site *s, const struct pt_site *peer, const char *cert,
                   const char *path, const char *extra);
void pt_prepare_site(struct pt_site *s);
void pt_start_agent(struct pt_site *s);
/* Sends sig (after SIGCONT), waits up to 5 s, then SIGKILL. */
void pt_stop_agent(struct pt_site *s, int sig);
void pt_stop_all_agents(void);

PGconn *pt_connect_to(struct pt_site *s);
/* One value (or "" for a command), NULL on error or when s cannot be reached (printed). */
char *pt_sql1(struct pt_site *s, const char *sql);
bool pt_sql_true(struct pt_site *s, const char *sql);
bool pt_wait_true(struct pt_site *s, const char *sql, double seconds);
/* primary lists walmirror as its streaming synchronous standby. */
bool pt_wait_sync(struct pt_site *primary, double seconds);
/* standby has replayed everything primary had written when called. */
bool pt_wait_replayed(struct pt_site *primary, struct pt_site *standby, double seconds);
char *pt_pgbench_digest(struct pt_site *s);
void pt_assert_tables_equal(struct pt_site *primary, struct pt_site *standby);
bool pt_log_contains(const char *path, const char *needle, double seconds);
/* Ends the primary's current WAL segment (pg_switch_wal) and commits a write in the next, at
 * synchronous_commit = on: the sink holds a completed segment and the next one's start. */
void pt_close_segment(struct pt_site *primary);
/* The sink's completed spool segments are byte-identical to the primary's pg_wal files of the
 * same name (where it still has them), and pg_waldump reads the whole spool to the normal end
 * of WAL.  Returns how many segments were compared. */
int pt_assert_spool_matches_wal(struct pt_site *primary, struct pt_site *sink);
/* GET path from site s's HTTP API: the HTTP code (0 if unreachable); the body in *out
 * (malloc'd, "" when none; the caller frees it).  The caller initialises libcurl. */
long pt_http_get(const struct pt_site *s, const char *path, char **out);
/* The value of the sample written exactly as key in site s's /metrics; -1 if absent. */
double pt_metric(const struct pt_site *s, const char *key);
/* Sends sql (no results wanted but success) on a new connection to s; the query is left in
 * flight: see pt_finished_within.  The caller PQfinish()es it. */
PGconn *pt_send(struct pt_site *s, const char *sql);
/* Waits up to seconds for the query in flight on pg; true if it finished, and succeeded. */
bool pt_finished_within(PGconn *pg, double seconds);

/* More configuration lines for site s (whose peer is peer), written into buf[cap]. */
typedef void (*pt_extra_fn)(const struct pt_site *s, const struct pt_site *peer, char *buf,
                            size_t cap);

/* Stands up the pair (see above); extra (or NULL) adds lines to each agent's configuration. */
int pt_stand_up_pair(pt_extra_fn extra);
/* The same as a test's main() wants it: this process owns the agents (stopped at exit, or
 * at once if the pair does not come up).  Returns 0 or -1. */
int pt_stand_up(pt_extra_fn extra);
/* Stops the agents, destroys both clusters, removes the certificates. */
void pt_tear_down(void);
/* Runs the suite's tests in order in this process (no fork, so that the agents' pids stay
 * known); returns how many failed. */
int pt_run_in_order(Suite *s);

#endif
