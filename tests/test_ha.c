/*
 * test_ha.c - switchover, fail-over, fencing and rejoin of a real pair, with a witness.
 *
 * Two PostgreSQL 15 servers, two site agents and a witness agent, TLS on loopback, all as the
 * postgres user (pairtest.h stands the pair up as docs/setup.md says).  A ledger client
 * commits ids one by one at synchronous_commit = on through a libpq connection that follows
 * the writable primary (target_session_attrs = read-write) and records each id whose commit
 * returned, with the time it returned.  The tests run in order on the one pair:
 *   a. switchover A -> B -> A -> B under pgbench load: each walmirrorctl switchover succeeds
 *      and prints the write-unavailability it measured; every acknowledged id is on the new
 *      primary; the pair is synchronous again, the old primary a standby, the tables equal.
 *   b. fail-over: kill -9 of the primary site's agent and PostgreSQL; the standby site is
 *      writable within failover_timeout plus a few seconds (the witness agrees: the primary
 *      site is silent); every acknowledged id is on it.  The old primary, restarted as it
 *      was, gets no commit acknowledged: its agent learns the newer epoch, fences it (stops
 *      it), rewinds it (auto_rejoin) and it comes back as the standby; synchronous mirroring
 *      resumes towards it.
 *   c. partitions, with site A's links to B and to the witness through wm-linkem (a user-space
 *      link emulator that can cut them): A <-> B cut while the witness still hears A: B does
 *      not promote, and mirroring resumes when the link returns.  A cut from both B and the
 *      witness: B promotes, every acknowledged id is on B (so no commit on A was acknowledged
 *      after B's promotion: A's WAL after the cut never reached B), and once the links return
 *      A is fenced and rejoins.
 * Every server and agent started is stopped at exit, also on failure.
 */
#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pairtest.h"
#include "pgtest.h"
#include "testutil.h"

#define FAILOVER_TIMEOUT_S 3
#define LINKEM WM_BINARY_DIR "/bench/wm-linkem"

/* A link emulator on A's path to B (ab) and to the witness (aw). */
struct linkem {
    int port;
    char control[4200];
    char log[4200];
    pid_t pid;
};
static struct linkem L_ab, L_aw;

static struct {
    char dir[4096];
    char conf[4200];
    char log[4200];
    int port;
    int http_port;
    pid_t pid;
} W;

static pid_t ledger_pid;
static char ledger_path[4200];

/* ---- the witness ---- */

static void
start_witness(void)
{
    char *argv[] = {AGENT, "-c", W.conf, NULL};

    W.pid = pgt_spawn(argv, W.log);
}

static void
write_witness_conf(void)
{
    FILE *f;

    snprintf(W.dir, sizeof(W.dir), "%s", tu_tmpdir("witness"));
    tu_require(tu_run("chown postgres: '%s'", W.dir) == 0);
    snprintf(W.conf, sizeof(W.conf), "%s/witness.conf", W.dir);
    snprintf(W.log, sizeof(W.log), "%s/witness.log", W.dir);
    W.port = tu_free_port();
    W.http_port = tu_free_port();
    f = fopen(W.conf, "w");
    tu_require(f != NULL);
    fprintf(f,
            "node_name = witness\n"
            "role = witness\n"
            "listen = 127.0.0.1:%d\n"
            "sites = 'site-a@127.0.0.1:%d, site-b@127.0.0.1:%d'\n"
            "tls_ca = '%s/ca.crt'\n"
            "tls_cert = '%s/witness.crt'\n"
            "tls_key = '%s/witness.key'\n"
            "state_dir = '%s'\n"
            "http_listen = 127.0.0.1:%d\n"
            "heartbeat_interval = 500ms\n"
            "peer_timeout = 5s\n",
            W.port, A.listen_port, B.listen_port, certdir, certdir, certdir, W.dir, W.http_port);
    tu_require(fclose(f) == 0);
    pgt_give_to_postgres(W.conf);
}

static void
start_linkem(struct linkem *l, int to_port, const char *tag)
{
    char listen[64], connect[64];
    char *argv[] = {LINKEM, "--listen", listen, "--connect", connect, "--control", l->control,
                    NULL};

    l->port = tu_free_port();
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", l->port);
    snprintf(connect, sizeof(connect), "127.0.0.1:%d", to_port);
    snprintf(l->control, sizeof(l->control), "%s/linkem-%s.sock", W.dir, tag);
    snprintf(l->log, sizeof(l->log), "%s/linkem-%s.log", W.dir, tag);
    l->pid = pgt_spawn(argv, l->log);
}

static void
linkem_send(struct linkem *l, const char *command)
{
    tu_require(tu_run("'%s' --control '%s' --send %s >/dev/null", LINKEM, l->control, command) ==
                   0,
               "linkem %s: %s", l->control, command);
}

/* Each site: the witness, a short failover_timeout, rejoin on its own, the peer's server.
 * Site A reaches B and the witness through link emulators. */
static void
site_extra(const struct pt_site *s, const struct pt_site *peer, char *buf, size_t cap)
{
    int witness_port;

    if (W.port == 0)
        write_witness_conf();
    witness_port = W.port;
    if (s == &A) {
        start_linkem(&L_ab, B.listen_port, "ab");
        start_linkem(&L_aw, W.port, "aw");
        A.peer_port = L_ab.port;
        witness_port = L_aw.port;
    }
    snprintf(buf, cap,
             "witness = witness@127.0.0.1:%d\n"
             "failover_timeout = %ds\n"
             "auto_rejoin = on\n"
             "peer_pg_conninfo = 'host=127.0.0.1 port=%d user=postgres dbname=postgres'\n",
             witness_port, FAILOVER_TIMEOUT_S, peer->pg.port);
}

/* ---- the ledger client ---- */

static void
ledger_main(void)
{
    char conninfo[512];
    PGconn *pg = NULL;
    FILE *out = fopen(ledger_path, "a");
    int id = 1;

    if (out == NULL)
        _exit(2);
    snprintf(conninfo, sizeof(conninfo),
             "host=127.0.0.1,127.0.0.1 port=%d,%d user=postgres dbname=postgres "
             "target_session_attrs=read-write connect_timeout=2 "
             "options='-c synchronous_commit=on'",
             A.pg.port, B.pg.port);
    for (;;) {
        char param[16];
        const char *params[1] = {param};
        PGresult *res;

        if (pg == NULL || PQstatus(pg) != CONNECTION_OK) {
            PQfinish(pg);
            pg = PQconnectdb(conninfo);
            if (PQstatus(pg) != CONNECTION_OK) {
                usleep(50000);
                continue;
            }
        }
        snprintf(param, sizeof(param), "%d", id);
        res = PQexecParams(pg, "INSERT INTO ledger VALUES ($1::int, now())", 1, NULL, params,
                           NULL, NULL, 0);
        if (PQresultStatus(res) == PGRES_COMMAND_OK) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            fprintf(out, "%d %lld\n", id,
                    (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000);
            fflush(out);
        } else {
            PQfinish(pg); /* the outcome of id is unknown: it is never reused */
            pg = NULL;
        }
        PQclear(res);
        id++;
    }
}

static void
start_ledger(void)
{
    snprintf(ledger_path, sizeof(ledger_path), "%s/ledger.acked", A.pg.dir);
    free(pt_sql1(&A, "CREATE TABLE IF NOT EXISTS ledger (id int PRIMARY KEY, at timestamptz)"));
    ledger_pid = fork();
    tu_require(ledger_pid >= 0);
    if (ledger_pid == 0) {
        ledger_main();
        _exit(0);
    }
}

static void
stop_ledger(void)
{
    if (ledger_pid > 0 && getpid() == owner) {
        kill(ledger_pid, SIGKILL);
        waitpid(ledger_pid, NULL, 0);
        ledger_pid = 0;
    }
}

/*
 * Every id the ledger saw acknowledged is on primary.  Returns how many were acknowledged and
 * the longest gap between two acknowledgements (microseconds) in *gap_us.
 */
static int
check_ledger(struct pt_site *primary, long long *gap_us)
{
    size_t len;
    char *text = tu_read_file(ledger_path, &len), *sql, *p, *missing;
    long long prev = 0;
    int n = 0;
    size_t cap;

    ck_assert(text != NULL);
    cap = len * 2 + 256;
    sql = malloc(cap);
    ck_assert(sql != NULL);
    p = sql + snprintf(sql, cap, "SELECT count(*) FROM unnest('{");
    *gap_us = 0;
    for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        int id;
        long long at;
        if (sscanf(line, "%d %lld", &id, &at) != 2)
            continue;
        p += snprintf(p, cap - (size_t)(p - sql), "%s%d", n > 0 ? "," : "", id);
        if (prev != 0 && at - prev > *gap_us)
            *gap_us = at - prev;
        prev = at;
        n++;
    }
    snprintf(p, cap - (size_t)(p - sql),
             "}'::int[]) i WHERE NOT EXISTS (SELECT 1 FROM ledger l WHERE l.id = i)");
    missing = pt_sql1(primary, sql);
    ck_assert(missing != NULL);
    ck_assert_msg(strcmp(missing, "0") == 0, "%s acknowledged ids missing on %s", missing,
                  primary->name);
    ck_assert_int_gt(n, 0);
    free(missing);
    free(sql);
    free(text);
    return n;
}

/* Acknowledged ids so far. */
static int
ledger_count(void)
{
    size_t len;
    char *text = tu_read_file(ledger_path, &len);
    int n = 0;

    for (size_t i = 0; text != NULL && i < len; i++)
        n += text[i] == '\n';
    free(text);
    return n;
}

/* ---- helpers ---- */

static int
ctl(char *out, size_t cap, const char *args)
{
    char cmd[8192], path[4200];
    size_t len;
    char *text;
    int rc;

    snprintf(path, sizeof(path), "%s/ctl.out", A.pg.dir);
    snprintf(cmd, sizeof(cmd),
             "'%s' --url http://127.0.0.1:%d --url http://127.0.0.1:%d %s > '%s' 2>&1", CTL,
             A.http_port, B.http_port, args, path);
    rc = system(cmd);
    text = tu_read_file(path, &len);
    snprintf(out, cap, "%s", text != NULL ? text : "");
    free(text);
    fprintf(stderr, "walmirrorctl %s -> %d\n%s", args, WEXITSTATUS(rc), out);
    return WEXITSTATUS(rc);
}

static pid_t
pgbench_in_background(struct pt_site *primary, int seconds)
{
    char cmd[1024];
    pid_t pid;

    snprintf(cmd, sizeof(cmd),
             "PGOPTIONS='-c synchronous_commit=on' pgbench -n -c 4 -j 2 -T %d postgres "
             ">> '%s/pgbench.log' 2>&1",
             seconds, primary->pg.dir);
    pid = fork();
    tu_require(pid >= 0);
    if (pid == 0) {
        pgt_sh(&primary->pg, "%s", cmd);
        _exit(0);
    }
    return pid;
}

static pid_t
postmaster_pid(struct pt_site *s)
{
    char path[4200];
    FILE *f;
    long pid = 0;

    snprintf(path, sizeof(path), "%s/postmaster.pid", s->pg.pgdata);
    f = fopen(path, "r");
    if (f != NULL) {
        if (fscanf(f, "%ld", &pid) != 1)
            pid = 0;
        fclose(f);
    }
    return (pid_t)pid;
}

/* ---- the tests ---- */

START_TEST(a_switchover_round_trip_under_load)
{
    struct pt_site *from = &A, *to = &B;
    char out[8192];

    ck_assert(pt_wait_sync(&A, 30));
    for (int round = 0; round < 3; round++) {
        pid_t bench = pgbench_in_background(from, 6);
        int before = ledger_count();
        long long gap = 0;
        struct pt_site *t;
        int acked;

        /* The preflight wants the standby replaying what its WAL server serves. */
        ck_assert(pt_wait_true(to, "SELECT count(*) = 1 FROM pg_stat_wal_receiver "
                                   "WHERE status = 'streaming'", 30));
        sleep(2);
        ck_assert_int_eq(ctl(out, sizeof(out), "switchover"), 0);
        ck_assert_msg(strstr(out, "write-unavailability:") != NULL, "%s", out);
        waitpid(bench, NULL, 0);
        ck_assert_msg(pt_wait_true(to, "SELECT NOT pg_is_in_recovery()", 10),
                      "%s is not the primary", to->name);
        ck_assert_msg(pt_wait_true(from, "SELECT pg_is_in_recovery()", 30),
                      "%s did not come back as a standby", from->name);
        ck_assert_msg(pt_wait_sync(to, 60), "%s is not synchronous again", to->name);
        /* The ledger goes on committing on the new primary. */
        for (int i = 0; i < 100 && ledger_count() < before + 50; i++)
            usleep(100000);
        ck_assert_int_ge(ledger_count(), before + 50);
        acked = check_ledger(to, &gap);
        fprintf(stderr, "round %d: %s -> %s, %d ids acknowledged, longest gap %.3f s\n", round,
                from->name, to->name, acked, (double)gap / 1e6);
        pt_assert_tables_equal(to, from);
        t = from;
        from = to;
        to = t;
    }
}
END_TEST

START_TEST(b_failover_fencing_rejoin)
{
    /* After three switchovers B is the primary. */
    struct pt_site *old = &B, *new = &A;
    char *v;
    double t0, promoted;
    long long gap;
    PGconn *stale;
    int acked;

    ck_assert(pt_wait_sync(old, 30));
    sleep(1);
    pt_stop_agent(old, SIGKILL);
    kill(postmaster_pid(old), SIGKILL);
    t0 = pt_now_s();
    ck_assert_msg(pt_wait_true(new, "SELECT NOT pg_is_in_recovery()", FAILOVER_TIMEOUT_S + 20),
                  "%s was not promoted; see %s", new->name, new->log);
    promoted = pt_now_s() - t0;
    /* Writable: a commit at synchronous_commit = on returns. */
    v = pt_sql1(new, "INSERT INTO ledger VALUES (-1, now())");
    ck_assert_msg(v != NULL, "no commit on the new primary");
    free(v);
    fprintf(stderr, "%s writable %.1f s after the kill (failover_timeout %d s)\n", new->name,
            pt_now_s() - t0, FAILOVER_TIMEOUT_S);
    ck_assert(promoted < FAILOVER_TIMEOUT_S + 15);
    acked = check_ledger(new, &gap);
    fprintf(stderr, "%d acknowledged ids all on %s\n", acked, new->name);

    /* The old primary comes back as it was: its agent fences it before any commit is
     * acknowledged, rewinds it and makes it the standby. */
    for (int i = 0; i < 50 && postmaster_pid(old) > 0 && kill(postmaster_pid(old), 0) == 0; i++)
        usleep(100000);
    tu_run("rm -f '%s/postmaster.pid'", old->pg.pgdata);
    ck_assert_int_eq(pgt_start(&old->pg), 0);
    stale = pt_connect_to(old);
    ck_assert_int_eq(PQsendQuery(stale, "SET synchronous_commit = on; "
                                        "INSERT INTO ledger VALUES (-2, now())"),
                     1);
    pt_start_agent(old);
    {
        /* The stale commit never returns success: it waits, then the fenced server ends. */
        PGresult *res;
        bool ok = false;
        while ((res = PQgetResult(stale)) != NULL) {
            if (PQresultStatus(res) == PGRES_COMMAND_OK && strstr(PQcmdStatus(res), "INSERT"))
                ok = true;
            PQclear(res);
        }
        ck_assert_msg(!ok, "a commit on the fenced old primary was acknowledged");
        PQfinish(stale);
    }
    ck_assert_msg(pt_log_contains(old->log, "fenced", 30), "%s's agent did not fence it",
                  old->name);
    ck_assert_msg(pt_wait_true(old, "SELECT pg_is_in_recovery()", 120),
                  "%s did not rejoin as a standby; see %s", old->name, old->log);
    ck_assert_msg(pt_wait_sync(new, 60), "mirroring towards %s is not synchronous",
                  old->name);
    v = pt_sql1(old, "SELECT count(*) FROM ledger WHERE id = -2");
    ck_assert_msg(v != NULL && strcmp(v, "0") == 0, "the stale commit survived the rejoin");
    free(v);
    check_ledger(new, &gap);
    pt_assert_tables_equal(new, old);
}
END_TEST

START_TEST(c_partitions)
{
    long long gap;
    char *v;

    /* After the fail-over A is the primary and B its standby; A's links go through linkem. */
    ck_assert(pt_wait_sync(&A, 60));
    ck_assert(pt_wait_true(&B, "SELECT count(*) = 1 FROM pg_stat_wal_receiver "
                               "WHERE status = 'streaming'", 30));

    /* 1. A <-> B cut, the witness still hears A: no promotion. */
    linkem_send(&L_ab, "cut");
    ck_assert_msg(pt_log_contains(B.log, "the witness says no", 30),
                  "B did not ask the witness, or was not denied; see %s", B.log);
    ck_assert_msg(pt_sql_true(&B, "SELECT pg_is_in_recovery()"), "B promoted while A lived");
    linkem_send(&L_ab, "restore");
    ck_assert_msg(pt_wait_sync(&A, 60), "A is not synchronous again after the cut");
    ck_assert(pt_sql_true(&B, "SELECT pg_is_in_recovery()"));
    fprintf(stderr, "partition A|B with the witness hearing A: no promotion; synchronous again\n");

    /* 2. A cut from B and from the witness: B promotes; A gets nothing acknowledged. */
    linkem_send(&L_ab, "cut");
    linkem_send(&L_aw, "cut");
    ck_assert_msg(pt_wait_true(&B, "SELECT NOT pg_is_in_recovery()", 60),
                  "B did not promote; see %s", B.log);
    v = pt_sql1(&B, "INSERT INTO ledger VALUES (-3, now())");
    ck_assert_msg(v != NULL, "B takes no commit after its promotion");
    free(v);
    fprintf(stderr, "A cut off: B promoted; %d acknowledged ids, all on B\n",
            check_ledger(&B, &gap));
    /* The links return: A learns the epoch, is fenced, rewinds and follows B. */
    linkem_send(&L_ab, "restore");
    linkem_send(&L_aw, "restore");
    ck_assert_msg(pt_log_contains(A.log, "fenced: site-b holds epoch", 60),
                  "A's agent was not fenced; see %s", A.log);
    ck_assert_msg(pt_wait_true(&A, "SELECT pg_is_in_recovery()", 120),
                  "A did not rejoin as a standby; see %s", A.log);
    ck_assert_msg(pt_wait_sync(&B, 90), "mirroring towards A is not synchronous");
    check_ledger(&B, &gap);
    pt_assert_tables_equal(&B, &A);
}
END_TEST

static void
stop_linkem(struct linkem *l)
{
    if (l->pid > 0) {
        kill(l->pid, SIGTERM);
        waitpid(l->pid, NULL, 0);
        l->pid = 0;
    }
}

static void
stop_everything(void)
{
    if (getpid() != owner)
        return;
    stop_ledger();
    pt_stop_all_agents();
    stop_linkem(&L_ab);
    stop_linkem(&L_aw);
    if (W.pid > 0) {
        kill(W.pid, SIGKILL);
        waitpid(W.pid, NULL, 0);
        W.pid = 0;
    }
}

int
main(void)
{
    Suite *s = suite_create("ha");
    TCase *tc = tcase_create("ha");
    SRunner *sr;
    int failed;

    if (!pgt_available()) {
        fprintf(stderr, "PostgreSQL 15 not available: skipping\n");
        return 77;
    }
    owner = getpid();
    atexit(stop_everything);
    certdir = NULL;
    if (pt_stand_up_pair(site_extra) != 0)
        return 1;
    start_witness();
    start_ledger();
    tcase_add_test(tc, a_switchover_round_trip_under_load);
    tcase_add_test(tc, b_failover_fencing_rejoin);
    tcase_add_test(tc, c_partitions);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    stop_everything();
    pgt_destroy(&A.pg);
    pgt_destroy(&B.pg);
    tu_rmtree(W.dir);
    tu_rmtree(certdir);
    return failed == 0 ? 0 : 1;
}
