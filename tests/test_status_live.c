/*
 * test_status_live.c - integration test of the status system on a real pair (pairtest.h):
 * site A's primary mirrored to site B, commits at synchronous_commit = on, then each agent's
 * GET /metrics, /health, /primary, /standby?lag=, / and /api/v2/summary.json as the agents
 * themselves fill them: the spool fsync histogram counts at B, the ACK round-trip histogram at
 * A, the lag in seconds known on both sides, the load-balancer checks pointing at the right
 * site, every component operational.  Exits 77 without PostgreSQL 15.
 */
#include <check.h>
#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pairtest.h"

/* Waits up to seconds for GET path on s to answer code. */
static bool
wait_code(const struct pt_site *s, const char *path, long code, double seconds)
{
    double until = pt_now_s() + seconds;
    char *body = NULL;
    long got = 0;

    do {
        free(body);
        got = pt_http_get(s, path, &body);
        if (got == code) {
            free(body);
            return true;
        }
        usleep(200000);
    } while (pt_now_s() < until);
    fprintf(stderr, "GET %s on %s: %ld, expected %ld: %s\n", path, s->name, got, code, body);
    free(body);
    return false;
}

START_TEST(a_metrics_and_checks_on_a_live_pair)
{
    char *body;

    ck_assert(pt_wait_sync(&A, 60));
    /* 200 small commits, each waiting for B's flush: fsyncs at B, ACKs at A */
    body = pt_sql1(&A, "CREATE TABLE status_live (i int)");
    ck_assert_ptr_nonnull(body);
    free(body);
    for (int i = 0; i < 200; i++) {
        char sql[96], *r;
        snprintf(sql, sizeof(sql), "INSERT INTO status_live VALUES (%d)", i);
        r = pt_sql1(&A, sql);
        ck_assert_ptr_nonnull(r);
        free(r);
    }
    ck_assert(pt_wait_replayed(&A, &B, 30));
    usleep(300000); /* a status tick or three */

    ck_assert_double_eq(pt_metric(&A, "walmirror_role{role=\"source\"}"), 1);
    ck_assert_double_eq(pt_metric(&B, "walmirror_role{role=\"sink\"}"), 1);
    ck_assert_double_eq(pt_metric(&A, "walmirror_link_up"), 1);
    ck_assert_double_ge(pt_metric(&B, "walmirror_spool_fsync_duration_seconds_count"), 200);
    ck_assert_double_gt(pt_metric(&B, "walmirror_spool_fsync_duration_seconds_sum"), 0);
    ck_assert_double_ge(pt_metric(&A, "walmirror_ack_round_trip_seconds_count"), 200);
    ck_assert_double_gt(pt_metric(&A, "walmirror_ack_round_trip_seconds_sum"), 0);
    ck_assert_double_eq(pt_metric(&A, "walmirror_spool_fsync_duration_seconds_count"), 0);
    ck_assert_double_ge(pt_metric(&A, "walmirror_acks_total"), 200);
    ck_assert_double_ge(pt_metric(&B, "walmirror_acks_total"), 200);
    ck_assert_double_gt(pt_metric(&A, "walmirror_wal_raw_bytes_total"), 0);
    ck_assert_double_gt(pt_metric(&B, "walmirror_lsn_bytes{position=\"flush\"}"), 0);
    /* lag in seconds is known on both sides, and small on an idle pair */
    ck_assert_double_ge(pt_metric(&A, "walmirror_lag_seconds{stage=\"flush\"}"), 0);
    ck_assert_double_lt(pt_metric(&A, "walmirror_lag_seconds{stage=\"flush\"}"), 5);
    ck_assert_double_ge(pt_metric(&B, "walmirror_lag_seconds{stage=\"apply\"}"), 0);
    ck_assert_double_lt(pt_metric(&B, "walmirror_lag_seconds{stage=\"apply\"}"), 5);
    ck_assert_double_eq(pt_metric(&A, "walmirror_switchovers_total"), 0);

    /* the load balancers' view */
    ck_assert(wait_code(&A, "/health", 200, 5));
    ck_assert(wait_code(&B, "/health", 200, 5));
    ck_assert(wait_code(&A, "/primary", 200, 5));
    ck_assert(wait_code(&B, "/primary", 503, 5));
    ck_assert(wait_code(&B, "/standby?lag=1GB", 200, 15));
    ck_assert(wait_code(&B, "/standby?lag=10s", 200, 15));
    ck_assert(wait_code(&A, "/standby", 503, 5));
    ck_assert(wait_code(&B, "/standby?lag=fast", 400, 5));

    /* people's view: all operational, from both sites */
    ck_assert(wait_code(&A, "/", 200, 5));
    ck_assert_int_eq(pt_http_get(&A, "/", &body), 200);
    ck_assert_msg(strstr(body, "id=\"component-database\" data-status=\"operational\"") &&
                      strstr(body, "id=\"component-mirror\" data-status=\"operational\"") &&
                      strstr(body, "id=\"component-link\" data-status=\"operational\""),
                  "not all operational:\n%s", body);
    ck_assert_ptr_nonnull(strstr(body, "site-a database"));
    ck_assert_ptr_nonnull(strstr(body, "site-b mirror"));
    free(body);
    ck_assert_int_eq(pt_http_get(&B, "/api/v2/summary.json", &body), 200);
    ck_assert_msg(strstr(body, "\"indicator\": \"none\"") != NULL, "B's summary: %s", body);
    ck_assert_ptr_nonnull(strstr(body, "site-a database"));
    free(body);

    /* B's agent stopped: A's mirror and link are down; A's commits wait for B, so /primary
     * sends no writes there, until A runs exposed (maximum_availability, the default, after
     * standby_loss_timeout = 10 s) and takes them again. */
    pt_stop_agent(&B, SIGTERM);
    ck_assert(wait_code(&A, "/primary", 503, 5));
    ck_assert(wait_code(&A, "/primary", 200, 30));
    ck_assert_int_eq(pt_http_get(&A, "/status", &body), 200);
    ck_assert_msg(strstr(body, "\"exposed\": true") != NULL, "A is not exposed: %s", body);
    free(body);
    {
        double until = pt_now_s() + 15;
        bool down = false;
        while (!down && pt_now_s() < until) {
            ck_assert_int_eq(pt_http_get(&A, "/", &body), 200);
            down = strstr(body, "id=\"component-mirror\" data-status=\"major_outage\"") != NULL &&
                   strstr(body, "id=\"component-link\" data-status=\"major_outage\"") != NULL;
            free(body);
            if (!down)
                usleep(200000);
        }
        ck_assert_msg(down, "A's page does not show the mirror down");
    }
    ck_assert_double_eq(pt_metric(&A, "walmirror_link_up"), 0);
    pt_start_agent(&B);
    ck_assert(pt_wait_sync(&A, 60));
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("status_live");
    TCase *tc = tcase_create("status_live");
    int failed;

    if (!pgt_available()) {
        fprintf(stderr, "PostgreSQL 15 not available: skipping\n");
        return 77;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return 1;
    if (pt_stand_up(NULL) != 0)
        return 1;
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, a_metrics_and_checks_on_a_live_pair);
    suite_add_tcase(s, tc);
    failed = pt_run_in_order(s);
    pt_tear_down();
    curl_global_cleanup();
    return failed == 0 ? 0 : 1;
}
