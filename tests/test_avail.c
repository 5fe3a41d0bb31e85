/*
 * test_avail.c - availability_mode on a real pair with a witness: running exposed when site B
 * is lost, the automatic return to synchronous, a stale standby barred from promotion, the
 * isolated primary that never runs exposed, a crashed primary site that comes back without
 * taking a write, and maximum_protection.
 *
 * Two PostgreSQL 15 servers, two site agents and a witness, TLS on loopback, as the postgres
 * user (hatest.h); site A reaches B and the witness through wm-linkem.  The ledger client
 * commits ids one by one at synchronous_commit = on through a connection that follows the
 * writable primary and records each acknowledged id with its time.  availability_mode =
 * maximum_availability, standby_loss_timeout HA_STANDBY_LOSS_TIMEOUT_S, failover_timeout
 * HA_FAILOVER_TIMEOUT_S.  In order, on one pair:
 *   a. kill -9 of B's agent and PostgreSQL: A's commits resume within standby_loss_timeout +
 *      2 s; A shows exposed (status, /metrics, /primary 200, check CRITICAL) and the WAL at
 *      risk grows; the witness's record is exposed;
 *   b. B restarted: it catches up and A is synchronous again without a command; the witness's
 *      record is clean; every acknowledged id is on B;
 *   c. only the A-B link cut (the witness hears both): /primary on A says 503 while commits
 *      wait, A runs exposed, B is refused promotion; the link back: synchronous again, nothing
 *      lost;
 *   d. while exposed (A-B cut), kill -9 of A: B is not promoted (5 x failover_timeout), its
 *      status says it is stale and why; failover --force is refused, --force
 *      --accept-data-loss promotes it and names the range at risk; the ids missing on B are
 *      all among those acknowledged after the exposure began.  A's agent alone restarted
 *      (PostgreSQL left down): fenced, rewound, a standby; its PostgreSQL never ran as a
 *      primary;
 *   e. (after a switchover back to A) A isolated from B and from the witness: A never runs
 *      exposed, B is promoted, no id acknowledged by A after B's promotion;
 *   f. kill -9 of the primary site (B) and a fail-over to A; B's agent restarted first, a
 *      client writing to B at synchronous_commit = local the whole time: nothing is
 *      acknowledged by B after A's promotion (issue 16's crashed site);
 *   g. maximum_protection: the standby site lost, the primary's commits wait (as before
 *      exposure existed), and resume when it is back.
 * The measured times (loss to first commit, return to synchronous) are printed.
 */
#include <check.h>
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "hatest.h"
#include "pairtest.h"
#include "pgtest.h"
#include "state.h"
#include "testutil.h"

/* ---- helpers ---- */

/* The witness's durable record. */
static struct wm_state
witness_record(void)
{
    struct wm_state st;
    char err[512];

    ck_assert_msg(state_load(W.dir, &st, err, sizeof(err)) >= 0, "%s", err);
    return st;
}

/* ---- the tests ---- */

static double loss_to_commit_s, return_to_sync_s;

/* Each test starts with its links whole, whatever the one before it left cut. */
static void
links_whole(void)
{
    ha_linkem_send(&L_ab, "restore");
    ha_linkem_send(&L_aw, "restore");
}

START_TEST(a_standby_lost_primary_runs_exposed)
{
    char out[8192];
    long long t0;
    uint64_t risk1, risk2;
    struct wm_state rec;

    /* Commits stop, then resume without B; A runs exposed, its WAL at risk growing from B's
     * last durable LSN, not from 0. */
    loss_to_commit_s = ha_lose_standby_site(&t0, &risk1, &risk2);
    ck_assert_msg(risk2 < 16u << 20, "WAL at risk %" PRIu64 " after 2 s of single-row commits",
                  risk2);
    ck_assert_uint_gt(ha_status_u64(&A, "exposed_lsn"), 0);
    ck_assert(pt_metric(&A, "walmirror_wal_at_risk_bytes") > 0);
    ck_assert(pt_metric(&A, "walmirror_exposed_seconds_total") > 0);
    ha_expect_code(&A, "/primary", 200);
    ck_assert_int_eq(ha_ctl(out, sizeof(out), "check"), 2);
    ck_assert_msg(strstr(out, "running exposed") != NULL, "%s", out);
    rec = witness_record();
    ck_assert_msg(state_exposed(&rec) && strcmp(rec.primary, "site-a") == 0,
                  "the witness's record: epoch %" PRIu64 " held by %s, %s", rec.epoch, rec.primary,
                  state_exposed(&rec) ? "exposed" : "not exposed");
}
END_TEST

START_TEST(b_standby_returns_synchronous_again)
{
    double t0 = pt_now_s();
    long long gap;
    struct wm_state rec;
    int acked;

    ha_restart_standby_site(&B);
    ck_assert_msg(ha_wait_status_true(&A, "exposed", false, 90), "A still exposed; see %s", A.log);
    ck_assert(pt_wait_sync(&A, 30));
    return_to_sync_s = pt_now_s() - t0;
    fprintf(stderr, "B back: A synchronous again %.2f s after B was restarted\n", return_to_sync_s);
    rec = witness_record();
    ck_assert_msg(!state_exposed(&rec) && strcmp(rec.primary, "site-a") == 0,
                  "the witness still holds B stale");
    /* B learns the resync's epoch a moment after A (from A's next frame or the arbiter's
     * news): stale until then. */
    ck_assert_msg(ha_wait_status_true(&B, "stale", false, 10), "B still stale; see %s", B.log);
    ck_assert(pt_log_contains(A.log, "is in force: a commit waited for the standby", 1));
    acked = ha_check_ledger_on_standby(&A, &B, &gap);
    fprintf(stderr, "%d acknowledged ids, all on B\n", acked);
    ck_assert(pt_metric(&A, "walmirror_exposed") == 0);
    ck_assert(pt_metric(&A, "walmirror_exposed_seconds_total") > 0);
    {
        /* The incident closed with the exposure's duration and its peak WAL at risk. */
        char *body = NULL;
        ck_assert_int_eq(pt_http_get(&A, "/api/v2/incidents.json", &body), 200);
        ck_assert_msg(strstr(body, "ran exposed for") != NULL, "%s", body);
        free(body);
    }
}
END_TEST

START_TEST(c_link_cut_only)
{
    char buf[64];
    long long t0, gap;

    ck_assert(pt_wait_sync(&A, 60));
    t0 = (long long)clock_unix_us();
    ha_linkem_send(&L_ab, "cut");
    /* Commits wait: a load balancer must not send writes here meanwhile. */
    {
        double end = pt_now_s() + HA_STANDBY_LOSS_TIMEOUT_S;
        bool refused = false;
        while (!refused && pt_now_s() < end) {
            refused = ha_http_code(&A, "/primary") == 503;
            usleep(100000);
        }
        ck_assert_msg(refused, "/primary answered 200 while commits waited");
    }
    ck_assert(ha_wait_status_true(&A, "exposed", true, HA_STANDBY_LOSS_TIMEOUT_S + 10));
    ck_assert(ha_wait_ack_after(t0 + (long long)HA_STANDBY_LOSS_TIMEOUT_S * 1000000, 10) != 0);
    /* Writable, and /primary says so all along, through the link's reconnects. */
    for (int i = 0; i < 30; i++) {
        ha_expect_code(&A, "/primary", 200);
        usleep(200000);
    }
    /* B asks and is refused: stale, and A is heard anyway. */
    ck_assert_msg(pt_log_contains(B.log, "the witness says no", 30), "see %s", B.log);
    ck_assert(ha_wait_status_true(&B, "stale", true, 10));
    ck_assert(pt_sql_true(&B, "SELECT pg_is_in_recovery()"));
    ha_linkem_send(&L_ab, "restore");
    ck_assert_msg(ha_wait_status_true(&A, "exposed", false, 60), "see %s", A.log);
    ck_assert(pt_wait_sync(&A, 30));
    ck_assert_str_eq(ha_status_str(&A, "sync_state", buf, sizeof(buf)), "sync");
    ck_assert(ha_wait_status_true(&B, "stale", false, 10));
    ha_check_ledger_on_standby(&A, &B, &gap);
}
END_TEST

START_TEST(d_stale_standby_not_promoted)
{
    long long exposed_at, gap;
    double t0;

    ck_assert(pt_wait_sync(&A, 60));
    ha_linkem_send(&L_ab, "cut");
    ck_assert(ha_wait_status_true(&A, "exposed", true, HA_STANDBY_LOSS_TIMEOUT_S + 10));
    exposed_at = (long long)ha_status_u64(&A, "exposed_since_unix_us");
    ck_assert(ha_wait_ack_after(exposed_at + 1000000, 10) != 0); /* commits made while exposed */
    ha_kill_site(&A);
    ha_stop_ledger();
    ha_linkem_send(&L_ab, "restore");
    t0 = pt_now_s();
    /* B is not promoted by itself, and says why. */
    while (pt_now_s() < t0 + 5 * HA_FAILOVER_TIMEOUT_S) {
        ck_assert_msg(pt_sql_true(&B, "SELECT pg_is_in_recovery()"), "a stale B was promoted");
        usleep(500000);
    }
    ck_assert(ha_status_true(&B, "stale"));
    ck_assert_msg(pt_log_contains(B.log, "site-b is stale: site-a runs exposed since", 1), "see %s",
                  B.log);
    /* --force alone is refused; --accept-data-loss promotes and names the range. */
    ha_force_failover_of_stale(&B, exposed_at);
    /* A's agent alone: a stale primary, fenced and rewound; never started as a primary. */
    tu_run("cp '%s/postgresql.log' '%s/postgresql.log.before' 2>/dev/null", A.spool, A.spool);
    pt_start_agent(&A);
    ck_assert_msg(pt_log_contains(A.log, "fenced", 30), "see %s", A.log);
    ck_assert_msg(pt_wait_true(&A, "SELECT pg_is_in_recovery()", 120), "see %s", A.log);
    ck_assert(pt_wait_sync(&B, 90));
    ck_assert_msg(!pt_log_contains(A.log, "starting the local PostgreSQL as the primary", 0),
                  "A's agent started its stale primary");
    ha_start_ledger();
    ha_check_ledger(&B, &gap);
}
END_TEST

START_TEST(e_isolated_primary_never_exposed)
{
    char out[8192];
    long long promoted_at = 0, gap;
    double end;

    /* A is the primary again. */
    ck_assert(pt_wait_sync(&B, 60));
    ck_assert(ha_wait_status_true(&B, "exposed", false, 60));
    /* A's standby replays what B's agent sends: switchover refuses a standby that does not
     * (right after its rejoin, A's standby may still wait to retry its WAL server). */
    ck_assert(pt_wait_true(&A,
                           "SELECT count(*) = 1 FROM pg_stat_wal_receiver "
                           "WHERE status = 'streaming'",
                           60));
    end = pt_now_s() + 30;
    while (ha_status_u64(&B, "apply_lsn") == 0 && pt_now_s() < end)
        usleep(100000);
    ck_assert_int_eq(ha_ctl(out, sizeof(out), "switchover"), 0);
    ck_assert(pt_wait_sync(&A, 60));
    ck_assert(ha_wait_ack_after((long long)clock_unix_us(), 15) != 0);

    ha_linkem_send(&L_ab, "cut");
    ha_linkem_send(&L_aw, "cut");
    end = pt_now_s() + 60;
    while (pt_now_s() < end) {
        ck_assert_msg(!ha_status_true(&A, "exposed"), "an isolated A ran exposed");
        if (promoted_at == 0 && pt_sql_true(&B, "SELECT NOT pg_is_in_recovery()"))
            promoted_at = (long long)clock_unix_us();
        if (promoted_at != 0 && pt_now_s() > end - 50)
            break;
        usleep(200000);
    }
    ck_assert_msg(promoted_at != 0, "B was not promoted; see %s", B.log);
    /* A says why it did not go on alone: the witness was unreachable when it asked, or the
     * link to it was lost before it answered. */
    ck_assert_msg(pt_log_contains(A.log, "the arbiter cannot be reached: not running exposed", 0) ||
                      pt_log_contains(A.log,
                                      "exposure failed: the witness says no: the link to "
                                      "the witness was lost",
                                      0),
                  "see %s", A.log);
    /* Nothing acknowledged by A after B's promotion: every acknowledged id is on B. */
    ha_linkem_send(&L_ab, "restore");
    ha_linkem_send(&L_aw, "restore");
    ck_assert_msg(pt_log_contains(A.log, "fenced: site-b holds epoch", 60), "see %s", A.log);
    ck_assert(pt_wait_true(&A, "SELECT pg_is_in_recovery()", 120));
    ck_assert(pt_wait_sync(&B, 90));
    ha_check_ledger(&B, &gap);
}
END_TEST

/* A client writing to one site at synchronous_commit = local: the ids it got acknowledged. */
static pid_t local_writer;
static char local_path[4200];

static void
start_local_writer(struct pt_site *s)
{
    snprintf(local_path, sizeof(local_path), "%s/local.acked", s->pg.dir);
    local_writer = fork();
    tu_require(local_writer >= 0);
    if (local_writer == 0) {
        char conninfo[256];
        FILE *out = fopen(local_path, "a");
        int id = 1000000;

        snprintf(conninfo, sizeof(conninfo),
                 "host=127.0.0.1 port=%d user=postgres dbname=postgres connect_timeout=1 "
                 "options='-c synchronous_commit=local'",
                 s->pg.port);
        for (;;) {
            PGconn *pg = PQconnectdb(conninfo);
            while (PQstatus(pg) == CONNECTION_OK) {
                char param[16];
                const char *params[1] = {param};
                PGresult *res;

                snprintf(param, sizeof(param), "%d", id++);
                res = PQexecParams(pg, "INSERT INTO ledger VALUES ($1::int, now())", 1, NULL,
                                   params, NULL, NULL, 0);
                if (PQresultStatus(res) == PGRES_COMMAND_OK && out != NULL) {
                    fprintf(out, "%s %lld\n", param, (long long)clock_unix_us());
                    fflush(out);
                }
                PQclear(res);
                usleep(20000);
            }
            PQfinish(pg);
            usleep(50000);
        }
    }
}

static void
stop_local_writer(void)
{
    if (local_writer > 0) {
        kill(local_writer, SIGKILL);
        waitpid(local_writer, NULL, 0);
        local_writer = 0;
    }
}

START_TEST(f_crashed_primary_site_returns)
{
    long long promoted_at, gap;
    size_t len;
    char *text;
    int late = 0;

    /* B is the primary (after e), A its standby, synchronous, B promotable again. */
    ck_assert(pt_wait_sync(&B, 90));
    ck_assert(ha_wait_status_true(&B, "exposed", false, 60));
    ck_assert(ha_wait_status_true(&A, "stale", false, 10));
    ha_kill_site(&B);
    start_local_writer(&B);
    ck_assert_msg(pt_wait_true(&A, "SELECT NOT pg_is_in_recovery()", HA_FAILOVER_TIMEOUT_S + 20),
                  "A was not promoted; see %s", A.log);
    promoted_at = (long long)clock_unix_us();
    sleep(1);
    /* B's agent first, as a DBA would before walmirrorctl rejoin. */
    pt_start_agent(&B);
    ck_assert_msg(pt_log_contains(B.log, "fenced", 30), "see %s", B.log);
    ck_assert_msg(pt_wait_true(&B, "SELECT pg_is_in_recovery()", 120), "see %s", B.log);
    ck_assert(pt_wait_sync(&A, 90));
    sleep(1);
    stop_local_writer();
    text = tu_read_file(local_path, &len);
    for (char *line = text != NULL ? strtok(text, "\n") : NULL; line != NULL;
         line = strtok(NULL, "\n")) {
        int id;
        long long at;
        if (sscanf(line, "%d %lld", &id, &at) == 2 && at >= promoted_at - 1000000)
            late++;
    }
    free(text);
    ck_assert_msg(late == 0,
                  "B acknowledged %d commits at synchronous_commit = local after A's "
                  "promotion",
                  late);
    ck_assert(pt_wait_replayed(&A, &B, 30));
    ha_check_ledger(&A, &gap);
}
END_TEST

START_TEST(g_maximum_protection_waits)
{
    int before;
    double t0;

    /* Both sites in maximum_protection now (A is the primary after f). */
    tu_run("sed -i 's/^availability_mode = .*/availability_mode = maximum_protection/' '%s' '%s'",
           A.conf, B.conf);
    pt_stop_agent(&A, SIGTERM);
    pt_stop_agent(&B, SIGTERM);
    pt_start_agent(&B);
    pt_start_agent(&A);
    ck_assert(pt_wait_sync(&A, 60));
    ck_assert(ha_wait_ack_after((long long)clock_unix_us(), 15) != 0);
    ha_kill_site(&B);
    t0 = pt_now_s();
    sleep(2);
    before = ha_ledger_count();
    sleep(HA_STANDBY_LOSS_TIMEOUT_S + 3);
    ck_assert_msg(ha_ledger_count() == before, "A acknowledged %d commits without B",
                  ha_ledger_count() - before);
    ck_assert(!ha_status_true(&A, "exposed"));
    ha_expect_code(&A, "/primary", 503);
    fprintf(stderr, "maximum_protection: no commit for %.1f s without B\n", pt_now_s() - t0);
    ha_restart_standby_site(&B);
    ck_assert(ha_wait_ack_after((long long)clock_unix_us(), 60) != 0);
    ck_assert(pt_wait_sync(&A, 60));
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("avail");
    TCase *tc = tcase_create("avail");
    int failed;

    if (!pgt_available()) {
        fprintf(stderr, "PostgreSQL 15 not available: skipping\n");
        return 77;
    }
    tu_require(curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK);
    ha_availability_mode = "maximum_availability";
    if (ha_stand_up() != 0)
        return 1;
    atexit(stop_local_writer);
    tcase_add_checked_fixture(tc, links_whole, NULL);
    tcase_add_test(tc, a_standby_lost_primary_runs_exposed);
    tcase_add_test(tc, b_standby_returns_synchronous_again);
    tcase_add_test(tc, c_link_cut_only);
    tcase_add_test(tc, d_stale_standby_not_promoted);
    tcase_add_test(tc, e_isolated_primary_never_exposed);
    tcase_add_test(tc, f_crashed_primary_site_returns);
    tcase_add_test(tc, g_maximum_protection_waits);
    suite_add_tcase(s, tc);
    failed = pt_run_in_order(s);
    fprintf(stderr,
            "measured: B's loss to A's first commit %.2f s; B's return to synchronous "
            "%.2f s\n",
            loss_to_commit_s, return_to_sync_s);
    ha_tear_down();
    curl_global_cleanup();
    return failed == 0 ? 0 : 1;
}
