/*
 * test_mirror.c - synchronous mirroring end to end: two real PostgreSQL 15 servers, two
 * walmirror agents, TLS on loopback, everything run as the postgres user.
 *
 * main() stands the pair up the way docs/setup.md tells a DBA to: site A's primary; site B's
 * standby made with `walmirror-agent init-standby` (slot first, base backup, primary_conninfo
 * pointing at B's WAL server); B's agent, B's PostgreSQL, A's agent; then A's
 * synchronous_standby_names names the source.  The tests run in order on that one pair (no
 * fork, so that agent pids stay known):
 *   a. pgbench -c 8 -T 30 at synchronous_commit = on: the standby's pgbench tables equal the
 *      primary's (row count, sum, md5 over the ordered rows);
 *   d. completed spool segments are byte-identical to A's pg_wal; pg_waldump reads the spool
 *      to its end;
 *   b. remote_apply: 500 single-row commits, each visible on B the moment its commit returns;
 *   c. with B's agent stopped (SIGSTOP) a commit at synchronous_commit = on does not return
 *      within 5 s while one at local does; after SIGCONT it returns;
 *   e. kill -9 of A's agent, then of B's agent, during pgbench; restarted, the stream resumes
 *      with no gap and (a) holds again;
 *   f. a source of another cluster is refused by B's sink, and so is a peer presenting a
 *      certificate with the wrong name;
 *   g. walmirrorctl status reads both agents' HTTP APIs: roles, positions, sync state, link;
 *      pause and resume of automatic fail-over show in the status;
 *   h. B's standby stopped, B's agent restarted with spool_keep = 0, four segments of WAL
 *      committed: the restarted spool kept what the standby needs (its redo point on), so the
 *      standby, started again, replays everything.
 * Every server and agent started is stopped at exit, also on failure.
 */
#include <check.h>
#include <errno.h>
#include <jansson.h>
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

/* ---- the tests ---- */

START_TEST(a_pgbench_sync_on)
{
    ck_assert(pt_wait_sync(&A, 30));
    ck_assert_int_eq(pgt_sh(&A.pg,
                            "PGOPTIONS='-c synchronous_commit=on' pgbench -n -c 8 -j 2 "
                            "-T 30 postgres > '%s/pgbench-a.log' 2>&1",
                            A.pg.dir),
                     0);
    ck_assert(pt_wait_sync(&A, 10));
    pt_assert_tables_equal(&A, &B);
}
END_TEST

START_TEST(d_spool_matches_pg_wal)
{
    /* Close the current segment so that the spool has completed ones to compare. */
    pt_close_segment(&A);
    ck_assert(pt_wait_replayed(&A, &B, 30));
    ck_assert_int_ge(pt_assert_spool_matches_wal(&A, &B), 2);
}
END_TEST

START_TEST(b_remote_apply_visible)
{
    PGconn *pa = pt_connect_to(&A), *pb = pt_connect_to(&B);
    PGresult *r;

    r = PQexec(pa, "CREATE TABLE IF NOT EXISTS ledger(id int PRIMARY KEY)");
    ck_assert(PQresultStatus(r) == PGRES_COMMAND_OK);
    PQclear(r);
    r = PQexec(pa, "SET synchronous_commit = remote_apply");
    ck_assert(PQresultStatus(r) == PGRES_COMMAND_OK);
    PQclear(r);
    for (int i = 1; i <= 500; i++) {
        char sql[128];
        snprintf(sql, sizeof(sql), "INSERT INTO ledger VALUES (%d)", i);
        r = PQexec(pa, sql);
        ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK, "%s", PQerrorMessage(pa));
        PQclear(r);
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM ledger WHERE id = %d", i);
        r = PQexec(pb, sql);
        ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s", PQerrorMessage(pb));
        ck_assert_msg(strcmp(PQgetvalue(r, 0, 0), "1") == 0,
                      "commit %d returned on A but is not visible on B", i);
        PQclear(r);
    }
    PQfinish(pa);
    PQfinish(pb);
}
END_TEST

/* Sends an INSERT at the given level; returns the connection with the query in flight. */
static PGconn *
send_insert(const char *level, int id)
{
    char sql[160];

    snprintf(sql, sizeof(sql), "SET synchronous_commit = %s; INSERT INTO ledger VALUES (%d)", level,
             id);
    return pt_send(&A, sql);
}

START_TEST(c_stopped_sink_blocks_commits)
{
    PGconn *on, *local;

    ck_assert(pt_wait_sync(&A, 30));
    ck_assert_int_eq(kill(B.agent, SIGSTOP), 0);
    on = send_insert("on", 100001);
    local = send_insert("local", 100002);
    ck_assert_msg(pt_finished_within(local, 5), "a commit at synchronous_commit=local blocked");
    ck_assert_msg(!pt_finished_within(on, 5), "a commit at synchronous_commit=on returned while "
                                           "the sink was stopped");
    ck_assert_int_eq(kill(B.agent, SIGCONT), 0);
    ck_assert_msg(pt_finished_within(on, 30), "the blocked commit did not return after SIGCONT");
    PQfinish(on);
    PQfinish(local);
    ck_assert(pt_wait_true(&B, "SELECT count(*) = 2 FROM ledger WHERE id IN (100001, 100002)", 30));
}
END_TEST

START_TEST(e_kill_agents_during_load)
{
    pid_t bench;
    char *argv[] = {"/bin/sh", "-c", NULL, NULL};
    char cmd[1024];
    int status;

    ck_assert(pt_wait_sync(&A, 30));
    snprintf(cmd, sizeof(cmd),
             "PATH='%s':$PATH PGHOST=127.0.0.1 PGPORT=%d PGUSER=postgres pgbench -n -c 4 -j 2 "
             "-T 24 postgres",
             pgt_bindir(), A.pg.port);
    argv[2] = cmd;
    bench = pgt_spawn(argv, "/dev/null");
    sleep(4);
    pt_stop_agent(&A, SIGKILL);
    sleep(1);
    pt_start_agent(&A);
    ck_assert_msg(pt_wait_sync(&A, 30), "no synchronous stream after restarting A's agent");
    sleep(4);
    pt_stop_agent(&B, SIGKILL);
    sleep(1);
    pt_start_agent(&B);
    ck_assert_msg(pt_wait_sync(&A, 30), "no synchronous stream after restarting B's agent");
    ck_assert(waitpid(bench, &status, 0) == bench);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "pgbench failed");
    ck_assert(pt_wait_sync(&A, 30));
    pt_assert_tables_equal(&A, &B);
}
END_TEST

START_TEST(f_wrong_cluster_and_wrong_name_refused)
{
    struct pt_site C = {.name = "site-a"};
    char *bad_conf, *bad_log;

    /* A primary of another cluster, whose agent claims to be site-a with a valid certificate. */
    ck_assert_int_eq(pgt_init(&C.pg, "site-c", NULL), 0);
    ck_assert_int_eq(pgt_start(&C.pg), 0);
    snprintf(C.conf, sizeof(C.conf), "%s/agent.conf", C.pg.dir);
    snprintf(C.log, sizeof(C.log), "%s/agent.log", C.pg.dir);
    snprintf(C.spool, sizeof(C.spool), "%s/spool", C.pg.dir);
    C.listen_port = tu_free_port();
    C.wal_port = tu_free_port();
    C.http_port = tu_free_port();
    pt_write_conf(&C, &B, "site-a", C.conf, NULL);
    pt_start_agent(&C);
    ck_assert_msg(pt_log_contains(C.log, "system identifier mismatch", 20),
                  "the other cluster's source was not told why it was refused (see %s)", C.log);
    ck_assert(pt_log_contains(B.log, "system identifier mismatch", 5));
    pt_stop_agent(&C, SIGTERM);
    /* Still mirroring A. */
    ck_assert(pt_wait_sync(&A, 30));

    /* A peer presenting a certificate for another name (site-z, signed by our CA). */
    ck_assert(asprintf(&bad_conf, "%s/agent-z.conf", C.pg.dir) > 0);
    ck_assert(asprintf(&bad_log, "%s/agent-z.log", C.pg.dir) > 0);
    pt_write_conf(&C, &B, "wrongname", bad_conf, NULL);
    snprintf(C.log, sizeof(C.log), "%s", bad_log);
    snprintf(C.conf, sizeof(C.conf), "%s", bad_conf);
    pt_start_agent(&C);
    ck_assert_msg(pt_log_contains(B.log, "expected site-a, certificate is for site-z", 20),
                  "B did not name the wrong certificate (see %s)", B.log);
    pt_stop_agent(&C, SIGTERM);
    ck_assert(pt_wait_sync(&A, 30));
    pgt_destroy(&C.pg);
    free(bad_conf);
    free(bad_log);
}
END_TEST

/* Runs walmirrorctl with args; returns its stdout parsed as JSON (status --json), or NULL. */
static json_t *
ctl_json(const char *args)
{
    char out[4200];
    size_t len;
    char *text;
    json_t *j;
    json_error_t err;

    snprintf(out, sizeof(out), "%s/ctl.json", A.pg.dir);
    if (tu_run("'%s' %s > '%s' 2>/dev/null", CTL, args, out) != 0)
        return NULL;
    text = tu_read_file(out, &len);
    j = text != NULL ? json_loads(text, 0, &err) : NULL;
    free(text);
    return j;
}

/* The agent named node in a status array. */
static json_t *
agent_in(json_t *arr, const char *node)
{
    size_t i;
    json_t *v;

    json_array_foreach(arr, i, v)
    {
        json_t *name = json_object_get(v, "node_name");
        if (json_is_string(name) && strcmp(json_string_value(name), node) == 0)
            return v;
    }
    return NULL;
}

/* Waits up to 5 s until site-a's status (at url) shows failover_paused == paused. */
static bool
wait_paused(const char *url, bool paused)
{
    double end = pt_now_s() + 5;
    char args[256];

    snprintf(args, sizeof(args), "--url %s status --json", url);
    while (pt_now_s() < end) {
        json_t *st = ctl_json(args);
        json_t *v = json_object_get(agent_in(st, "site-a"), "failover_paused");
        bool match = json_is_boolean(v) && json_is_true(v) == paused;

        json_decref(st);
        if (match)
            return true;
        usleep(100000);
    }
    return false;
}

START_TEST(g_status_through_the_http_api)
{
    char args[8400], ha[64], hb[64];
    json_t *st, *a, *b;

    snprintf(ha, sizeof(ha), "http://127.0.0.1:%d", A.http_port);
    snprintf(hb, sizeof(hb), "http://127.0.0.1:%d", B.http_port);
    ck_assert(pt_wait_sync(&A, 30));
    snprintf(args, sizeof(args), "--url %s --url %s status --json", ha, hb);
    st = ctl_json(args);
    ck_assert_msg(json_is_array(st), "walmirrorctl status --json gave no array");
    a = agent_in(st, "site-a");
    b = agent_in(st, "site-b");
    ck_assert(a != NULL && b != NULL);
    ck_assert_str_eq(json_string_value(json_object_get(a, "role")), "source");
    ck_assert_str_eq(json_string_value(json_object_get(b, "role")), "sink");
    ck_assert_str_eq(json_string_value(json_object_get(a, "pg_state")), "primary");
    ck_assert_str_eq(json_string_value(json_object_get(b, "pg_state")), "standby");
    ck_assert_str_eq(json_string_value(json_object_get(a, "sync_state")), "sync");
    ck_assert(json_is_true(json_object_get(a, "link_up")));
    ck_assert(json_is_true(json_object_get(b, "link_up")));
    ck_assert_int_gt(json_integer_value(json_object_get(a, "flush_lsn")), 0);
    ck_assert_int_ge(json_integer_value(json_object_get(a, "write_lsn")),
                     json_integer_value(json_object_get(a, "flush_lsn")));
    ck_assert_int_ge(json_integer_value(json_object_get(b, "flush_lsn")),
                     json_integer_value(json_object_get(b, "apply_lsn")));
    ck_assert(json_is_false(json_object_get(a, "failover_paused")));
    json_decref(st);

    /* pause and resume through site-a's agent, as a DBA would with -c site-a.conf */
    snprintf(args, sizeof(args), "-c '%s' pause", A.conf);
    ck_assert_int_eq(tu_run("'%s' %s > /dev/null", CTL, args), 0);
    ck_assert_msg(wait_paused(ha, true), "pause did not show in the status");
    snprintf(args, sizeof(args), "-c '%s' resume", A.conf);
    ck_assert_int_eq(tu_run("'%s' %s > /dev/null", CTL, args), 0);
    ck_assert_msg(wait_paused(ha, false), "resume did not show in the status");
}
END_TEST

START_TEST(h_restarted_sink_keeps_what_its_standby_needs)
{
    struct stat st;
    char *target;
    char sql[256];
    FILE *f;

    ck_assert(pt_wait_sync(&A, 30));
    ck_assert_int_eq(pgt_stop(&B.pg, "fast"), 0);
    /* A restarted agent knows nothing of its standby until the standby streams; with nothing
     * kept beyond what the standby needs, retention would otherwise remove the WAL the stopped
     * standby has not received. */
    pt_stop_agent(&B, SIGTERM);
    ck_assert_int_eq(stat(B.conf, &st), 0);
    f = fopen(B.conf, "a");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "spool_keep = 0\n");
    ck_assert_int_eq(fclose(f), 0);
    pt_start_agent(&B);
    ck_assert_msg(pt_wait_sync(&A, 30), "no synchronous stream after restarting B's agent");
    for (int i = 0; i < 4; i++) {
        snprintf(sql, sizeof(sql),
                 "SET synchronous_commit = on; CREATE TABLE IF NOT EXISTS kept(n int); "
                 "INSERT INTO kept SELECT g FROM generate_series(%d, %d) g",
                 i * 1000 + 1, (i + 1) * 1000);
        free(pt_sql1(&A, sql));
        pt_close_segment(&A);
    }
    target = pt_sql1(&A, "SELECT pg_current_wal_lsn()");
    ck_assert_ptr_nonnull(target);
    ck_assert_int_eq(pgt_start(&B.pg), 0);
    snprintf(sql, sizeof(sql), "SELECT pg_last_wal_replay_lsn() >= '%s'::pg_lsn", target);
    free(target);
    ck_assert_msg(pt_wait_true(&B, sql, 60),
                  "the standby did not catch up: the restarted spool removed WAL it needed");
    ck_assert(pt_wait_true(&B, "SELECT count(*) = 4000 FROM kept", 30));
    /* The pair as it was: B's configuration without the line, its agent restarted. */
    ck_assert_int_eq(truncate(B.conf, st.st_size), 0);
    pt_stop_agent(&B, SIGTERM);
    pt_start_agent(&B);
    ck_assert(pt_wait_sync(&A, 30));
}
END_TEST

/* ---- set-up ---- */

int
main(void)
{
    Suite *s = suite_create("mirror");
    TCase *tc = tcase_create("mirror");
    int failed;

    if (!pgt_available()) {
        fprintf(stderr, "PostgreSQL 15 not available: skipping\n");
        return 77;
    }
    if (pt_stand_up(NULL) != 0)
        return 1;
    tcase_add_test(tc, a_pgbench_sync_on);
    tcase_add_test(tc, d_spool_matches_pg_wal);
    tcase_add_test(tc, b_remote_apply_visible);
    tcase_add_test(tc, c_stopped_sink_blocks_commits);
    tcase_add_test(tc, e_kill_agents_during_load);
    tcase_add_test(tc, f_wrong_cluster_and_wrong_name_refused);
    tcase_add_test(tc, g_status_through_the_http_api);
    tcase_add_test(tc, h_restarted_sink_keeps_what_its_standby_needs);
    suite_add_tcase(s, tc);
    /* One pair for all the tests, in order. */
    failed = pt_run_in_order(s);
    pt_tear_down();
    return failed == 0 ? 0 : 1;
}
