/*
 * test_diskfull.c - a full spool disk on a real pair (pairtest.h).  Each site's spool_dir is a
 * 128 MB tmpfs of its own (pt_spool_fs_size), spool_keep 16MB.
 *
 *   a. With the pair synchronous, a file fills site B's spool file system until less than a
 *      segment is free.  Commits at synchronous_commit = on that move the WAL into new
 *      segments (pg_switch_wal) soon reach one the spool cannot prepare: that commit does not
 *      return, and is not on B's standby; B's agent says why in its log, in /status
 *      (spool_stall) and in /metrics (walmirror_spool_stalled 1); the link stays up (nothing
 *      for a fail-over to act on).  The file is removed: the commit returns (after the
 *      removal, never before), the stall clears, mirroring is synchronous again, pgbench's
 *      tables are equal on both sites.
 *   b. No corruption: B's agent is restarted (spool recovery), commits are mirrored again,
 *      completed spool segments are byte-identical to A's pg_wal, and pg_waldump reads the
 *      whole spool to the normal end of WAL.
 *
 * Needs root (mount) and PostgreSQL 15; exits 77 without them.
 */
#include <check.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "pairtest.h"

static char filler[4200];

/* s's /status as JSON (the caller decrefs it). */
static json_t *
status_of(const struct pt_site *s)
{
    char *text;
    json_error_t err;
    json_t *o;

    ck_assert_msg(pt_http_get(s, "/status", &text) == 200, "no /status from %s", s->name);
    o = json_loads(text, 0, &err);
    ck_assert_msg(o != NULL, "bad /status from %s: %s", s->name, err.text);
    free(text);
    return o;
}

START_TEST(a_full_spool_disk_stalls_commits_then_resumes)
{
    PGconn *stalled = NULL;
    int stalled_id = 0;
    double t_freed, t_returned;
    json_t *st;
    const char *msg;
    char sql[256];

    ck_assert(pt_wait_sync(&A, 30));
    /* B's standby streams from the WAL server first: until it does, nothing tells the spool
     * what the standby still needs, and with the disk full, retention would remove it.  (Its
     * first try can come before any WAL reached the spool; it tries again after 5 s.) */
    ck_assert(pt_wait_true(
        &B, "SELECT count(*) = 1 FROM pg_stat_wal_receiver WHERE status = 'streaming'", 30));
    free(pt_sql1(&A, "CREATE TABLE ledger(id int PRIMARY KEY)"));
    /* Each round commits one id and moves the WAL into a new segment. */
    for (int id = 1; id <= 8 && stalled == NULL; id++) {
        PGconn *pg;

        /* Retention frees a segment as the standby replays: fill again each round. */
        fprintf(stderr, "filled %lld bytes of %s\n", pt_fill_spool_fs(&B, filler, sizeof(filler)),
                B.spool);

        snprintf(sql, sizeof(sql),
                 "SET synchronous_commit = on; INSERT INTO ledger VALUES (%d); "
                 "SELECT pg_switch_wal()",
                 id);
        pg = pt_send(&A, sql);
        if (pt_finished_within(pg, 10)) {
            PQfinish(pg);
            continue;
        }
        stalled = pg;
        stalled_id = id;
    }
    ck_assert_msg(stalled != NULL, "no commit stalled with the spool's disk full");
    fprintf(stderr, "commit %d stalled\n", stalled_id);

    /* Why, where people look: the log, /status, /metrics; the link is up. */
    ck_assert(pt_log_contains(B.log, "no space for the spool", 5));
    st = status_of(&B);
    msg = json_string_value(json_object_get(st, "spool_stall"));
    ck_assert_msg(msg != NULL, "B's /status has no spool_stall");
    ck_assert_msg(strstr(msg, "No space left on device") != NULL && strstr(msg, B.spool) != NULL,
                  "spool_stall does not say what and where: %s", msg);
    ck_assert(json_integer_value(json_object_get(st, "spool_stalled_since_unix_us")) > 0);
    ck_assert(json_is_true(json_object_get(st, "link_up")));
    ck_assert_msg(strstr(json_string_value(json_object_get(st, "last_error")), "spool") != NULL,
                  "last_error: %s", json_string_value(json_object_get(st, "last_error")));
    json_decref(st);
    ck_assert_double_eq(pt_metric(&B, "walmirror_spool_stalled"), 1);
    st = status_of(&A);
    ck_assert(json_is_true(json_object_get(st, "link_up")));
    json_decref(st);

    /* Not acknowledged, so not on the standby, and still waiting a while later. */
    snprintf(sql, sizeof(sql), "SELECT count(*) = 0 FROM ledger WHERE id = %d", stalled_id);
    ck_assert_msg(pt_sql_true(&B, sql), "the stalled commit is on B's standby");
    ck_assert_msg(!pt_finished_within(stalled, 3), "the stalled commit returned");

    /* Space returns: the commit returns, after that and not before. */
    ck_assert_int_eq(unlink(filler), 0);
    t_freed = pt_now_s();
    ck_assert_msg(pt_finished_within(stalled, 60),
                  "the stalled commit did not return once the disk had space");
    t_returned = pt_now_s();
    fprintf(stderr, "commit %d returned %.2f s after the space returned\n", stalled_id,
            t_returned - t_freed);
    PQfinish(stalled);
    snprintf(sql, sizeof(sql), "SELECT count(*) = 1 FROM ledger WHERE id = %d", stalled_id);
    ck_assert(pt_wait_true(&B, sql, 30));
    ck_assert(pt_log_contains(B.log, "has space again", 5));
    /* The status is a snapshot published every 0.1 s: give it a moment. */
    for (int i = 0;; i++) {
        bool cleared;

        st = status_of(&B);
        cleared = json_is_null(json_object_get(st, "spool_stall"));
        json_decref(st);
        if (cleared)
            break;
        ck_assert_msg(i < 100, "spool_stall not cleared 10 s after the stall ended");
        usleep(100000);
    }
    ck_assert_double_eq(pt_metric(&B, "walmirror_spool_stalled"), 0);
    ck_assert(pt_wait_sync(&A, 30));
    ck_assert_int_eq(pgt_sh(&A.pg,
                            "PGOPTIONS='-c synchronous_commit=on' pgbench -n -c 4 -j 2 -T 5 "
                            "postgres > '%s/pgbench-a.log' 2>&1",
                            A.pg.dir),
                     0);
    ck_assert(pt_wait_replayed(&A, &B, 30));
    pt_assert_tables_equal(&A, &B);
}
END_TEST

START_TEST(b_spool_intact_after_restart)
{
    pt_stop_agent(&B, SIGTERM);
    pt_start_agent(&B);
    ck_assert_msg(pt_wait_sync(&A, 30), "no synchronous stream after restarting B's agent");
    free(pt_sql1(&A, "INSERT INTO ledger VALUES (1000)"));
    ck_assert(pt_wait_true(&B, "SELECT count(*) = 1 FROM ledger WHERE id = 1000", 30));
    pt_close_segment(&A);
    ck_assert(pt_wait_replayed(&A, &B, 30));
    /* Held still, so that retention (spool_keep 16MB) removes nothing while we read. */
    ck_assert_int_eq(kill(B.agent, SIGSTOP), 0);
    ck_assert_int_ge(pt_assert_spool_matches_wal(&A, &B), 1);
    ck_assert_int_eq(kill(B.agent, SIGCONT), 0);
    ck_assert(pt_wait_sync(&A, 30));
}
END_TEST

static void
small_spool(const struct pt_site *s, const struct pt_site *peer, char *buf, size_t cap)
{
    (void)s;
    (void)peer;
    /* Commits wait for the stalled standby as long as it takes (in maximum_availability the
     * primary would go on without it after standby_loss_timeout: test_faults covers that). */
    snprintf(buf, cap, "spool_keep = 16MB\navailability_mode = maximum_protection\n");
}

int
main(void)
{
    Suite *s = suite_create("diskfull");
    TCase *tc = tcase_create("diskfull");
    int failed;

    if (!pgt_available()) {
        fprintf(stderr, "PostgreSQL 15 not available: skipping\n");
        return 77;
    }
    if (geteuid() != 0) {
        fprintf(stderr, "not root (a tmpfs is mounted for each spool): skipping\n");
        return 77;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return 1;
    pt_spool_fs_size = "128m";
    if (pt_stand_up(small_spool) != 0)
        return 1;
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, a_full_spool_disk_stalls_commits_then_resumes);
    tcase_add_test(tc, b_spool_intact_after_restart);
    suite_add_tcase(s, tc);
    failed = pt_run_in_order(s);
    pt_tear_down();
    curl_global_cleanup();
    return failed == 0 ? 0 : 1;
}
