/*
 * test_maint_live.c - what the agents of a real pair do inside maintenance windows.
 *
 * The pair of test_ha (hatest.h: two PostgreSQL 15 servers, two site agents, a witness, TLS on
 * loopback, failover_timeout HA_FAILOVER_TIMEOUT_S, and the ledger client committing ids one by
 * one at synchronous_commit = on through a connection that follows the writable primary).
 * Windows are added with walmirrorctl maintenance add on both agents, as an operator would; a
 * one-off window starts at a whole minute (--at 'YYYY-MM-DD HH:MM'), its duration in seconds.
 * The tests run in order on the one pair:
 *   a. a window marked --switchover starting at the next whole minute at least
 *      MIN_LEAD_S away: both status pages show it upcoming and every component is not under
 *      maintenance; nothing switches before the start; at the start A's agent runs a
 *      switchover: B becomes the primary within SWITCHOVER_WITHIN_S, A its standby, the pair
 *      synchronous again, every acknowledged ledger id on B; meanwhile both pages show the
 *      window active (components under_maintenance, a scheduled maintenance in progress).
 *      The window is then removed.
 *   b. a window open now and closing WINDOW_LEFT_S from now; kill -9 of the primary site's
 *      (B's) agent and PostgreSQL: A does not promote while the window is open - for over
 *      five times failover_timeout -, its /status says fail-over is paused and its page that
 *      every component is under maintenance; once the window closes A asks the witness, is
 *      granted, and is writable within failover_timeout plus a few seconds; every
 *      acknowledged ledger id is on A.
 * Everything started is stopped at exit, also on failure.  Exits 77 without PostgreSQL 15.
 */
#include <check.h>
#include <curl/curl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hatest.h"
#include "pairtest.h"
#include "pgtest.h"
#include "testutil.h"

#define MIN_LEAD_S 8           /* a switchover window starts at least this far ahead */
#define SWITCHOVER_WITHIN_S 30 /* ... and its switchover is over this long after its start */
#define WINDOW_LEFT_S 24       /* the fail-over test's window closes this long after it is added */
#define PROMOTE_WITHIN_S (HA_FAILOVER_TIMEOUT_S + 15) /* after the window closes */

/* The wall clock, in seconds (windows are wall-clock times; pt_now_s() is monotonic). */
static double
unix_now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* "YYYY-MM-DD HH:MM" of a Unix time, in UTC. */
static void
utc_minute(char *buf, size_t cap, time_t t)
{
    struct tm tm;

    ck_assert_ptr_nonnull(gmtime_r(&t, &tm));
    ck_assert_uint_gt(strftime(buf, cap, "%Y-%m-%d %H:%M", &tm), 0);
}

/* Adds a one-off window in UTC on both agents; returns its id. */
static int
add_window(time_t start, long duration_s, const char *cls, bool switchover)
{
    char at[32], args[256], out[8192];
    const char *p;

    utc_minute(at, sizeof(at), start);
    snprintf(args, sizeof(args), "maintenance add --at '%s' --duration %lds --tz UTC --class %s%s",
             at, duration_s, cls, switchover ? " --switchover" : "");
    ck_assert_int_eq(ha_ctl(out, sizeof(out), args), 0);
    p = strstr(out, "site-a: window ");
    ck_assert_msg(p != NULL && strstr(out, "site-b: window ") != NULL, "%s", out);
    return atoi(p + strlen("site-a: window "));
}

/* The statuses of site s's summary.json components, as "database,mirror,link" states in buf,
 * and whether a scheduled maintenance is in progress; false if the agent did not answer. */
static bool
summary_of(const struct pt_site *s, char *buf, size_t cap, bool *in_progress)
{
    char *body;
    json_t *o, *comps, *m;
    size_t n = 0;

    buf[0] = '\0';
    *in_progress = false;
    if (pt_http_get(s, "/api/v2/summary.json", &body) != 200) {
        free(body);
        return false;
    }
    o = json_loads(body, 0, NULL);
    free(body);
    ck_assert_ptr_nonnull(o);
    comps = json_object_get(o, "components");
    ck_assert_uint_eq(json_array_size(comps), 3);
    for (size_t i = 0; i < 3; i++)
        n += (size_t)snprintf(
            buf + n, cap - n, "%s%s", i > 0 ? "," : "",
            json_string_value(json_object_get(json_array_get(comps, i), "status")));
    m = json_array_get(json_object_get(o, "scheduled_maintenances"), 0);
    *in_progress =
        m != NULL && strcmp(json_string_value(json_object_get(m, "status")), "in_progress") == 0;
    json_decref(o);
    return true;
}

#define ALL_MAINT "under_maintenance,under_maintenance,under_maintenance"

/* Waits up to seconds for every component of s's summary to be under maintenance, with the
 * window listed in progress. */
static bool
wait_under_maintenance(const struct pt_site *s, double seconds)
{
    double until = pt_now_s() + seconds;
    char states[256];
    bool in_progress;

    do {
        if (summary_of(s, states, sizeof(states), &in_progress) && strcmp(states, ALL_MAINT) == 0 &&
            in_progress)
            return true;
        usleep(200000);
    } while (pt_now_s() < until);
    fprintf(stderr, "%s's components: %s\n", s->name, states);
    return false;
}

/* Whether s's status page (GET /) contains needle, waiting up to seconds for it. */
static bool
page_has(const struct pt_site *s, const char *needle, double seconds)
{
    double until = pt_now_s() + seconds;
    char *body = NULL;
    bool found;

    for (;;) {
        free(body);
        found = pt_http_get(s, "/", &body) == 200 && strstr(body, needle) != NULL;
        if (found || pt_now_s() >= until)
            break;
        usleep(200000);
    }
    if (!found)
        fprintf(stderr, "%s's page lacks \"%s\"\n", s->name, needle);
    free(body);
    return found;
}

/* The value of a JSON boolean of s's /status; -1 if the agent did not answer. */
static int
status_bool(const struct pt_site *s, const char *key)
{
    char *body;
    json_t *o;
    int v = -1;

    if (pt_http_get(s, "/status", &body) == 200 && (o = json_loads(body, 0, NULL)) != NULL) {
        v = json_is_true(json_object_get(o, key));
        json_decref(o);
    }
    free(body);
    return v;
}

START_TEST(a_switchover_at_window_start)
{
    time_t now, start;
    char text[128], states[256];
    bool in_progress;
    long long gap;
    double took;
    int id;

    ck_assert(pt_wait_sync(&A, 60));
    /* The preflight wants the standby replaying what its WAL server serves. */
    ck_assert(pt_wait_true(&B,
                           "SELECT count(*) = 1 FROM pg_stat_wal_receiver "
                           "WHERE status = 'streaming'",
                           30));
    now = time(NULL);
    start = (now / 60 + 1) * 60;
    if (start - now < MIN_LEAD_S)
        start += 60;
    fprintf(stderr, "switchover window at %lld, %lld s from now\n", (long long)start,
            (long long)(start - now));
    id = add_window(start, 40, "routine", true);

    /* Upcoming: on both pages (a window in UTC: its time once, with its weekday), nothing
     * under maintenance yet. */
    {
        struct tm tm;

        ck_assert_ptr_nonnull(gmtime_r(&start, &tm));
        ck_assert_uint_gt(strftime(text, sizeof(text), "%a %Y-%m-%d %H:%M UTC", &tm), 0);
    }
    {
        char needle[160];

        snprintf(needle, sizeof(needle), "next routine at %s", text);
        ck_assert(page_has(&A, needle, 5));
        ck_assert(page_has(&B, needle, 5));
    }
    ck_assert(summary_of(&A, states, sizeof(states), &in_progress));
    ck_assert_msg(strstr(states, "under_maintenance") == NULL && !in_progress, "%s", states);

    /* Nothing before the start. */
    while (time(NULL) < start - 1) {
        ck_assert_msg(pt_sql_true(&A, "SELECT NOT pg_is_in_recovery()"),
                      "A stopped being the primary before the window's start");
        ck_assert(pt_sql_true(&B, "SELECT pg_is_in_recovery()"));
        usleep(500000);
    }
    /* At the start: the switchover, and the window active on both pages. */
    ck_assert_msg(pt_wait_true(&B, "SELECT NOT pg_is_in_recovery()", SWITCHOVER_WITHIN_S + 2),
                  "no switchover at the window's start; see %s", A.log);
    took = unix_now_s() - (double)start;
    ck_assert_msg(took >= 0, "the switchover ran %.1f s before the window's start", -took);
    fprintf(stderr, "B is the primary %.1f s after the window's start\n", took);
    ck_assert(wait_under_maintenance(&A, 5));
    ck_assert(wait_under_maintenance(&B, 5));
    ck_assert(page_has(&A, "active routine until", 2));
    ck_assert(page_has(&B, "active routine until", 2));
    ck_assert_msg(pt_wait_true(&A, "SELECT pg_is_in_recovery()", 30),
                  "A did not come back as a standby");
    ck_assert_msg(pt_wait_sync(&B, 60), "not synchronous after the window's switchover");
    ck_assert(pt_log_contains(A.log, "switchover requested", 1));
    ck_assert(pt_log_contains(A.log, "switchover done", 30));
    ck_assert(pt_log_contains(B.log, "switchover done", 30));
    fprintf(stderr, "%d acknowledged ids all on B\n", ha_check_ledger(&B, &gap));
    ck_assert_msg(pt_wait_replayed(&B, &A, 30), "A does not replay what B writes");
    /* Still B: the new primary does not switch back for the same window. */
    sleep(2);
    ck_assert(pt_sql_true(&B, "SELECT NOT pg_is_in_recovery()"));

    snprintf(text, sizeof(text), "maintenance remove %d", id);
    ck_assert_int_eq(ha_ctl(states, sizeof(states), text), 0);
}
END_TEST

START_TEST(b_failover_paused_inside_window)
{
    struct pt_site *old = &B, *new = &A; /* after the window's switchover */
    time_t opened, end;
    double t_kill, promoted;
    long long gap;
    char *v;

    ck_assert(pt_wait_sync(old, 60));
    ck_assert(pt_wait_true(new,
                           "SELECT count(*) = 1 FROM pg_stat_wal_receiver "
                           "WHERE status = 'streaming'",
                           30));
    /* Open now: from the start of this minute until WINDOW_LEFT_S from now. */
    opened = time(NULL);
    end = opened + WINDOW_LEFT_S;
    add_window(opened / 60 * 60, (long)(end - opened / 60 * 60), "hotfix", false);
    ck_assert(wait_under_maintenance(new, 5));
    ck_assert(wait_under_maintenance(old, 5));
    ck_assert_int_eq(status_bool(new, "failover_paused"), 1);

    sleep(1);
    pt_stop_agent(old, SIGKILL);
    kill(ha_postmaster_pid(old), SIGKILL);
    t_kill = pt_now_s();
    /* While the window is open: no vote asked, no promotion, the page says maintenance. */
    while (time(NULL) < end - 1) {
        ck_assert_msg(pt_sql_true(new, "SELECT pg_is_in_recovery()"),
                      "%s promoted %.1f s after the kill, inside the window; see %s", new->name,
                      pt_now_s() - t_kill, new->log);
        ck_assert(wait_under_maintenance(new, 0));
        ck_assert_int_eq(status_bool(new, "failover_paused"), 1);
        usleep(500000);
    }
    ck_assert(!pt_log_contains(new->log, "asking the witness", 0.1));
    fprintf(stderr, "%s still a standby %.1f s after the kill (failover_timeout %d s)\n", new->name,
            pt_now_s() - t_kill, HA_FAILOVER_TIMEOUT_S);
    ck_assert(pt_now_s() - t_kill > 5 * HA_FAILOVER_TIMEOUT_S);

    /* The window closes: fail-over proceeds, the witness granting. */
    ck_assert_msg(pt_wait_true(new, "SELECT NOT pg_is_in_recovery()", PROMOTE_WITHIN_S + 2),
                  "%s was not promoted after the window closed; see %s", new->name, new->log);
    promoted = unix_now_s() - (double)end;
    fprintf(stderr, "%s promoted %.1f s after the window closed\n", new->name, promoted);
    ck_assert(promoted < PROMOTE_WITHIN_S);
    ck_assert_msg(pt_log_contains(new->log, "granted", 1), "the witness granted nothing; see %s",
                  new->log);
    v = pt_sql1(new, "INSERT INTO ledger VALUES (-1, now())");
    ck_assert_msg(v != NULL, "no commit on the new primary");
    free(v);
    fprintf(stderr, "%d acknowledged ids all on %s\n", ha_check_ledger(new, &gap), new->name);
    ck_assert_int_eq(status_bool(new, "failover_paused"), 0);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("maint_live");
    TCase *tc = tcase_create("maint_live");
    int failed;

    if (!pgt_available()) {
        fprintf(stderr, "PostgreSQL 15 not available: skipping\n");
        return 77;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (ha_stand_up() != 0)
        return 1;
    tcase_add_test(tc, a_switchover_at_window_start);
    tcase_add_test(tc, b_failover_paused_inside_window);
    suite_add_tcase(s, tc);
    failed = pt_run_in_order(s);
    ha_tear_down();
    curl_global_cleanup();
    return failed == 0 ? 0 : 1;
}
