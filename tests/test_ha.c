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
 *   d. stray plain connections to both agents' peer-link and WAL-server ports (a port scan,
 *      a probe) leave the established link alone.
 *   e. walmirrorctl switchover --at: scheduled, nothing happens before its time, then it runs.
 *   f. a capped link (10 Mbit/s, 20 ms RTT) under pgbench load: the link holds.
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

#include "hatest.h"
#include "pairtest.h"
#include "pgtest.h"
#include "testutil.h"

/* ---- the tests ---- */

/* Whether the agents' link dropped (or a source restarted) in s's log after `from`. */
static bool
peer_link_dropped(const struct pt_site *s, size_t from)
{
    return ha_log_has_after(s->log, from, "link to site-a down", 0) ||
           ha_log_has_after(s->log, from, "link to site-b down", 0) ||
           ha_log_has_after(s->log, from, "source restarting", 0);
}

/* Sends garbage to 127.0.0.1:port on a plain TCP connection and closes it. */
static void
stray_connection(int port)
{
    char cmd[256];

    snprintf(cmd, sizeof(cmd),
             "exec 3<>/dev/tcp/127.0.0.1/%d && printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3 && "
             "sleep 0.2; exec 3>&-",
             port);
    tu_run("bash -c \"%s\" 2>/dev/null", cmd);
}

/* Port scanners, load balancers' probes, a curl to the wrong port: the pair does not care. */
START_TEST(d_stray_connections_keep_the_link)
{
    size_t la, lb;

    ck_assert(pt_wait_sync(&B, 60));
    la = ha_log_size(A.log);
    lb = ha_log_size(B.log);
    for (int i = 0; i < 3; i++) {
        stray_connection(A.listen_port);
        stray_connection(B.listen_port);
        stray_connection(A.wal_port);
        stray_connection(B.wal_port);
    }
    sleep(1);
    ck_assert(pt_wait_sync(&B, 5));
    ck_assert_msg(!peer_link_dropped(&A, la), "A's link went down after stray connections");
    ck_assert_msg(!peer_link_dropped(&B, lb), "B's link went down after stray connections");
}
END_TEST

/* switchover --at: scheduled, shown in the status, run at its time. */
START_TEST(e_scheduled_switchover)
{
    char out[8192], args[64], *v;
    long long at = (long long)time(NULL) + 4;
    size_t la = ha_log_size(A.log), lb = ha_log_size(B.log);

    ck_assert(pt_wait_sync(&B, 60));
    ck_assert(pt_wait_true(&A,
                           "SELECT count(*) = 1 FROM pg_stat_wal_receiver "
                           "WHERE status = 'streaming'",
                           30));
    snprintf(args, sizeof(args), "switchover --at @%lld", at);
    ck_assert_int_eq(ha_ctl(out, sizeof(out), args), 0);
    ck_assert_msg(strstr(out, "switchover scheduled for") != NULL, "%s", out);
    v = pt_sql1(&B, "SELECT NOT pg_is_in_recovery()");
    ck_assert_msg(v != NULL && strcmp(v, "t") == 0, "B stopped being the primary before the time");
    free(v);
    ck_assert_msg(pt_wait_true(&A, "SELECT NOT pg_is_in_recovery()", 40),
                  "the scheduled switchover did not make A the primary");
    ck_assert_msg((long long)time(NULL) >= at, "the switchover ran before its time");
    ck_assert_msg(pt_wait_sync(&A, 60), "not synchronous after the scheduled switchover");
    /* Over on both sides: each agent has ended its part. */
    ck_assert(ha_log_has_after(A.log, la, "switchover done", 60));
    ck_assert(ha_log_has_after(B.log, lb, "switchover done", 60));
}
END_TEST

/*
 * A WAN-like link, 10 Mbit/s with 20 ms round trips, under pgbench load: the link between the
 * agents holds (it used to drop every few seconds when io_uring's zero-copy sends piled up
 * pinned pages behind the slow link) and commits go on.
 */
START_TEST(f_capped_link_under_load)
{
    size_t from;
    int before;
    pid_t bench;

    /* After the scheduled switchover A is the primary: its agent reaches B through L_ab. */
    ck_assert(pt_wait_sync(&A, 60));
    from = ha_log_size(A.log);
    ha_linkem_send(&L_ab, "set delay=10ms rate=10mbit");
    before = ha_ledger_count();
    bench = ha_pgbench_in_background(&A, 8);
    waitpid(bench, NULL, 0);
    ck_assert_msg(pt_wait_sync(&A, 5), "not synchronous over the capped link");
    ck_assert_int_gt(ha_ledger_count(), before + 20);
    ck_assert_msg(!peer_link_dropped(&A, from), "the link dropped over the capped link; see %s",
                  A.log);
    ha_linkem_send(&L_ab, "set delay=0 rate=0");
}
END_TEST

START_TEST(a_switchover_round_trip_under_load)
{
    struct pt_site *from = &A, *to = &B;
    char out[8192];

    ck_assert(pt_wait_sync(&A, 30));
    for (int round = 0; round < 3; round++) {
        pid_t bench = ha_pgbench_in_background(from, 6);
        int before = ha_ledger_count();
        long long gap = 0;
        struct pt_site *t;
        int acked;

        /* The preflight wants the standby replaying what its WAL server serves. */
        ck_assert(pt_wait_true(to,
                               "SELECT count(*) = 1 FROM pg_stat_wal_receiver "
                               "WHERE status = 'streaming'",
                               30));
        sleep(2);
        ck_assert_int_eq(ha_ctl(out, sizeof(out), "switchover"), 0);
        ck_assert_msg(strstr(out, "write-unavailability:") != NULL, "%s", out);
        waitpid(bench, NULL, 0);
        ck_assert_msg(pt_wait_true(to, "SELECT NOT pg_is_in_recovery()", 10),
                      "%s is not the primary", to->name);
        ck_assert_msg(pt_wait_true(from, "SELECT pg_is_in_recovery()", 30),
                      "%s did not come back as a standby", from->name);
        ck_assert_msg(pt_wait_sync(to, 60), "%s is not synchronous again", to->name);
        /* The ledger goes on committing on the new primary. */
        for (int i = 0; i < 100 && ha_ledger_count() < before + 50; i++)
            usleep(100000);
        ck_assert_int_ge(ha_ledger_count(), before + 50);
        acked = ha_check_ledger(to, &gap);
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
    kill(ha_postmaster_pid(old), SIGKILL);
    t0 = pt_now_s();
    ck_assert_msg(pt_wait_true(new, "SELECT NOT pg_is_in_recovery()", HA_FAILOVER_TIMEOUT_S + 20),
                  "%s was not promoted; see %s", new->name, new->log);
    promoted = pt_now_s() - t0;
    /* Writable: a commit at synchronous_commit = on returns. */
    v = pt_sql1(new, "INSERT INTO ledger VALUES (-1, now())");
    ck_assert_msg(v != NULL, "no commit on the new primary");
    free(v);
    fprintf(stderr, "%s writable %.1f s after the kill (failover_timeout %d s)\n", new->name,
            pt_now_s() - t0, HA_FAILOVER_TIMEOUT_S);
    ck_assert(promoted < HA_FAILOVER_TIMEOUT_S + 15);
    acked = ha_check_ledger(new, &gap);
    fprintf(stderr, "%d acknowledged ids all on %s\n", acked, new->name);

    /* The old primary comes back as it was: its agent fences it before any commit is
     * acknowledged, rewinds it and makes it the standby. */
    for (int i = 0; i < 50 && ha_postmaster_pid(old) > 0 && kill(ha_postmaster_pid(old), 0) == 0;
         i++)
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
    ck_assert_msg(pt_wait_sync(new, 60), "mirroring towards %s is not synchronous", old->name);
    v = pt_sql1(old, "SELECT count(*) FROM ledger WHERE id = -2");
    ck_assert_msg(v != NULL && strcmp(v, "0") == 0, "the stale commit survived the rejoin");
    free(v);
    ha_check_ledger(new, &gap);
    pt_assert_tables_equal(new, old);
}
END_TEST

START_TEST(c_partitions)
{
    long long gap;
    char *v;

    /* After the fail-over A is the primary and B its standby; A's links go through linkem. */
    ck_assert(pt_wait_sync(&A, 60));
    ck_assert(pt_wait_true(&B,
                           "SELECT count(*) = 1 FROM pg_stat_wal_receiver "
                           "WHERE status = 'streaming'",
                           30));

    /* 1. A <-> B cut, the witness still hears A: no promotion. */
    ha_linkem_send(&L_ab, "cut");
    ck_assert_msg(pt_log_contains(B.log, "the witness says no", 30),
                  "B did not ask the witness, or was not denied; see %s", B.log);
    ck_assert_msg(pt_sql_true(&B, "SELECT pg_is_in_recovery()"), "B promoted while A lived");
    ha_linkem_send(&L_ab, "restore");
    ck_assert_msg(pt_wait_sync(&A, 60), "A is not synchronous again after the cut");
    ck_assert(pt_sql_true(&B, "SELECT pg_is_in_recovery()"));
    fprintf(stderr, "partition A|B with the witness hearing A: no promotion; synchronous again\n");

    /* 2. A cut from B and from the witness: B promotes; A gets nothing acknowledged. */
    ha_linkem_send(&L_ab, "cut");
    ha_linkem_send(&L_aw, "cut");
    ck_assert_msg(pt_wait_true(&B, "SELECT NOT pg_is_in_recovery()", 60),
                  "B did not promote; see %s", B.log);
    v = pt_sql1(&B, "INSERT INTO ledger VALUES (-3, now())");
    ck_assert_msg(v != NULL, "B takes no commit after its promotion");
    free(v);
    fprintf(stderr, "A cut off: B promoted; %d acknowledged ids, all on B\n",
            ha_check_ledger(&B, &gap));
    /* The links return: A learns the epoch, is fenced, rewinds and follows B. */
    ha_linkem_send(&L_ab, "restore");
    ha_linkem_send(&L_aw, "restore");
    ck_assert_msg(pt_log_contains(A.log, "fenced: site-b holds epoch", 60),
                  "A's agent was not fenced; see %s", A.log);
    ck_assert_msg(pt_wait_true(&A, "SELECT pg_is_in_recovery()", 120),
                  "A did not rejoin as a standby; see %s", A.log);
    ck_assert_msg(pt_wait_sync(&B, 90), "mirroring towards A is not synchronous");
    ha_check_ledger(&B, &gap);
    pt_assert_tables_equal(&B, &A);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("ha");
    TCase *tc = tcase_create("ha");
    int failed;

    if (!pgt_available()) {
        fprintf(stderr, "PostgreSQL 15 not available: skipping\n");
        return 77;
    }
    if (ha_stand_up() != 0)
        return 1;
    tcase_add_test(tc, a_switchover_round_trip_under_load);
    tcase_add_test(tc, b_failover_fencing_rejoin);
    tcase_add_test(tc, c_partitions);
    tcase_add_test(tc, d_stray_connections_keep_the_link);
    tcase_add_test(tc, e_scheduled_switchover);
    tcase_add_test(tc, f_capped_link_under_load);
    suite_add_tcase(s, tc);
    failed = pt_run_in_order(s);
    ha_tear_down();
    return failed == 0 ? 0 : 1;
}
