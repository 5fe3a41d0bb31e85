/*
 * test_statuspage.c - Check suite for agent/statuspage.c (the status page, GET /, and
 * GET /api/v2/summary.json) and the lag history and incident log of agent/status.c.
 *
 * Suite "rules" (the default): the components' rule of statuspage.h case by case (with the
 * default thresholds and with thresholds from a configuration), the lag history's 10 s
 * intervals and ring, the incident log's ring, and summary.json's shape read over HTTP from an
 * httpapi whose board the test fills.
 *
 * Suite "chromium" (argument "chromium"): the same API serves the page to headless Chromium,
 * which takes a screenshot (a PNG must come out) and dumps the rendered DOM; the assertions
 * read that DOM: component names and states, the SVG chart and its lines, the incident history,
 * the maintenance text, the refresh.  Exits 77 (skipped) only when no chromium binary is
 * installed or it cannot render about:blank here; any other failure fails.
 */
#include <check.h>
#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "httpapi.h"
#include "maint.h"
#include "status.h"
#include "statuspage.h"
#include "testutil.h"

static uint64_t
unix_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* A healthy source, site-a, mirrored to site-b; fresh. */
static void
fill(struct status_snapshot *s)
{
    memset(s, 0, sizeof(*s));
    snprintf(s->node_name, sizeof(s->node_name), "site-a");
    snprintf(s->peer_name, sizeof(s->peer_name), "site-b");
    snprintf(s->role, sizeof(s->role), "source");
    snprintf(s->pg_state, sizeof(s->pg_state), "primary");
    snprintf(s->sync_state, sizeof(s->sync_state), "sync");
    snprintf(s->operation, sizeof(s->operation), "none");
    snprintf(s->maintenance, sizeof(s->maintenance), "none");
    s->epoch = 4;
    s->now_unix_us = unix_now_us();
    s->link_up = true;
    s->rtt_us = 1500;
    s->flush_lag_bytes = 4096;
    s->apply_lag_bytes = 8192;
    s->flush_lag_s = 0.002;
    s->apply_lag_s = 0.004;
    s->last_unavailability_us = -1;
}

static struct statuspage_component comps[STATUSPAGE_COMPONENTS];

static enum statuspage_state
eval(const struct status_snapshot *s)
{
    return statuspage_components(s, NULL, unix_now_us(), comps);
}

#define expect_state(i, st, why_part)                                                              \
    do {                                                                                           \
        ck_assert_msg(comps[i].state == (st), "%s: %s, expected %s (%s)", comps[i].name,           \
                      statuspage_state_name(comps[i].state), statuspage_state_name(st),            \
                      comps[i].why);                                                               \
        ck_assert_msg(strstr(comps[i].why, (why_part)) != NULL, "%s: \"%s\" lacks \"%s\"",         \
                      comps[i].name, comps[i].why, (why_part));                                    \
    } while (0)

/* ---------------------------------------------------------------------------------------- */
/* The rule                                                                                  */

START_TEST(rule_healthy_source)
{
    static struct status_snapshot s;

    fill(&s);
    ck_assert_int_eq(eval(&s), STATUSPAGE_OPERATIONAL);
    ck_assert_str_eq(comps[STATUSPAGE_DATABASE].name, "site-a database");
    ck_assert_str_eq(comps[STATUSPAGE_MIRROR].name, "site-b mirror");
    ck_assert_str_eq(comps[STATUSPAGE_LINK].name, "replication link");
    ck_assert_str_eq(comps[STATUSPAGE_DATABASE].id, "database");
    expect_state(STATUSPAGE_DATABASE, STATUSPAGE_OPERATIONAL, "taking writes");
    expect_state(STATUSPAGE_MIRROR, STATUSPAGE_OPERATIONAL, "in sync");
    expect_state(STATUSPAGE_LINK, STATUSPAGE_OPERATIONAL, "1.5 ms");
}
END_TEST

START_TEST(rule_lag_thresholds)
{
    static struct status_snapshot s;

    fill(&s);
    s.apply_lag_bytes = STATUSPAGE_DEGRADED_BYTES - 1;
    ck_assert_int_eq(eval(&s), STATUSPAGE_OPERATIONAL);
    s.apply_lag_bytes = STATUSPAGE_DEGRADED_BYTES;
    ck_assert_int_eq(eval(&s), STATUSPAGE_DEGRADED);
    expect_state(STATUSPAGE_MIRROR, STATUSPAGE_DEGRADED, "16 MB");
    s.apply_lag_bytes = 0;
    s.flush_lag_s = STATUSPAGE_DEGRADED_SECONDS;
    ck_assert_int_eq(eval(&s), STATUSPAGE_DEGRADED);
    s.flush_lag_bytes = STATUSPAGE_PARTIAL_BYTES;
    ck_assert_int_eq(eval(&s), STATUSPAGE_PARTIAL);
    expect_state(STATUSPAGE_MIRROR, STATUSPAGE_PARTIAL, "far behind: 1.0 GB");
    s.flush_lag_bytes = 0;
    s.apply_lag_s = STATUSPAGE_PARTIAL_SECONDS;
    ck_assert_int_eq(eval(&s), STATUSPAGE_PARTIAL);
    expect_state(STATUSPAGE_DATABASE, STATUSPAGE_OPERATIONAL, "taking writes");
    expect_state(STATUSPAGE_LINK, STATUSPAGE_OPERATIONAL, "synchronous");
    /* unknown seconds (negative) never count */
    s.flush_lag_s = s.apply_lag_s = -1;
    ck_assert_int_eq(eval(&s), STATUSPAGE_OPERATIONAL);
    snprintf(s.sync_state, sizeof(s.sync_state), "catchup");
    ck_assert_int_eq(eval(&s), STATUSPAGE_DEGRADED);
    expect_state(STATUSPAGE_LINK, STATUSPAGE_DEGRADED, "catching up");
}
END_TEST

/* A site's configuration with the given threshold lines, parsed; its thresholds in *th. */
static void
thresholds_of(const char *lines, struct statuspage_thresholds *th)
{
    char text[2048], err[512];
    struct wm_config cfg;
    int rc;

    snprintf(text, sizeof(text),
             "node_name = site-a\nlisten = 127.0.0.1:7001\npeer = site-b@127.0.0.1:7002\n"
             "tls_ca = ca.crt\ntls_cert = a.crt\ntls_key = a.key\npg_conninfo = 'host=x'\n"
             "pgdata = /pg\nspool_dir = /spool\nwal_listen = 127.0.0.1:7003\n%s",
             lines);
    rc = config_parse_buffer("site.conf", text, strlen(text), CONFIG_NO_FILE_CHECKS, &cfg, err,
                             sizeof(err));
    ck_assert_msg(rc == 0, "%s", err);
    statuspage_thresholds_from_config(th, &cfg);
    config_free(&cfg);
}

/* The thresholds come from the configuration: a configured threshold moves the mirror's state
 * where the default would not, and a configuration without the keys gives the defaults. */
START_TEST(rule_thresholds_from_config)
{
    static struct status_snapshot s;
    struct statuspage_thresholds th, def;

    statuspage_thresholds_default(&def);
    thresholds_of("", &th);
    ck_assert_uint_eq(th.degraded_bytes, STATUSPAGE_DEGRADED_BYTES);
    ck_assert(th.degraded_s == STATUSPAGE_DEGRADED_SECONDS);
    ck_assert_uint_eq(th.partial_bytes, STATUSPAGE_PARTIAL_BYTES);
    ck_assert(th.partial_s == STATUSPAGE_PARTIAL_SECONDS);
    ck_assert(memcmp(&th, &def, sizeof(th)) == 0);
    statuspage_thresholds_from_config(&th, NULL);
    ck_assert(memcmp(&th, &def, sizeof(th)) == 0);

    /* 2 MiB and 1.5 s behind: operational by the defaults */
    fill(&s);
    s.apply_lag_bytes = 2ULL << 20;
    s.apply_lag_s = 1.5;
    ck_assert_int_eq(statuspage_components(&s, &def, unix_now_us(), comps), STATUSPAGE_OPERATIONAL);

    thresholds_of("status_degraded_lag_size = 1MB\n", &th);
    ck_assert_uint_eq(th.degraded_bytes, 1ULL << 20);
    ck_assert_int_eq(statuspage_components(&s, &th, unix_now_us(), comps), STATUSPAGE_DEGRADED);
    expect_state(STATUSPAGE_MIRROR, STATUSPAGE_DEGRADED, "behind: 2.0 MB");

    thresholds_of("status_degraded_lag_size = 512kB\nstatus_partial_lag_size = 2MB\n", &th);
    ck_assert_int_eq(statuspage_components(&s, &th, unix_now_us(), comps), STATUSPAGE_PARTIAL);
    expect_state(STATUSPAGE_MIRROR, STATUSPAGE_PARTIAL, "far behind: 2.0 MB");

    thresholds_of("status_degraded_lag_time = 1s\n", &th);
    ck_assert(th.degraded_s == 1.0);
    ck_assert_int_eq(statuspage_components(&s, &th, unix_now_us(), comps), STATUSPAGE_DEGRADED);
    thresholds_of("status_degraded_lag_time = 500ms\nstatus_partial_lag_time = 1500ms\n", &th);
    ck_assert(th.partial_s == 1.5);
    ck_assert_int_eq(statuspage_components(&s, &th, unix_now_us(), comps), STATUSPAGE_PARTIAL);

    /* larger thresholds: what the defaults call degraded is operational */
    s.apply_lag_bytes = 40ULL << 20;
    ck_assert_int_eq(statuspage_components(&s, &def, unix_now_us(), comps), STATUSPAGE_DEGRADED);
    thresholds_of("status_degraded_lag_size = 64MB\n", &th);
    ck_assert_int_eq(statuspage_components(&s, &th, unix_now_us(), comps), STATUSPAGE_OPERATIONAL);
    expect_state(STATUSPAGE_MIRROR, STATUSPAGE_OPERATIONAL, "in sync");
}
END_TEST

START_TEST(rule_outages)
{
    static struct status_snapshot s;

    fill(&s);
    s.link_up = false;
    snprintf(s.sync_state, sizeof(s.sync_state), "down");
    ck_assert_int_eq(eval(&s), STATUSPAGE_MAJOR);
    expect_state(STATUSPAGE_DATABASE, STATUSPAGE_OPERATIONAL, "taking writes");
    expect_state(STATUSPAGE_MIRROR, STATUSPAGE_MAJOR, "link is down");
    expect_state(STATUSPAGE_LINK, STATUSPAGE_MAJOR, "down");

    fill(&s);
    snprintf(s.sync_state, sizeof(s.sync_state), "down"); /* connected, not streaming */
    ck_assert_int_eq(eval(&s), STATUSPAGE_PARTIAL);
    expect_state(STATUSPAGE_LINK, STATUSPAGE_PARTIAL, "does not flow");

    fill(&s);
    snprintf(s.pg_state, sizeof(s.pg_state), "unknown");
    ck_assert_int_eq(eval(&s), STATUSPAGE_MAJOR);
    expect_state(STATUSPAGE_DATABASE, STATUSPAGE_MAJOR, "does not stream");

    fill(&s);
    snprintf(s.operation, sizeof(s.operation), "switchover");
    snprintf(s.op_step, sizeof(s.op_step), "stopping the primary");
    ck_assert_int_eq(eval(&s), STATUSPAGE_MAJOR);
    expect_state(STATUSPAGE_DATABASE, STATUSPAGE_MAJOR, "stopping the primary");

    /* the sink's view: the primary is the peer */
    fill(&s);
    snprintf(s.node_name, sizeof(s.node_name), "site-b");
    snprintf(s.peer_name, sizeof(s.peer_name), "site-a");
    snprintf(s.role, sizeof(s.role), "sink");
    snprintf(s.pg_state, sizeof(s.pg_state), "standby");
    ck_assert_int_eq(eval(&s), STATUSPAGE_OPERATIONAL);
    ck_assert_str_eq(comps[STATUSPAGE_DATABASE].name, "site-a database");
    ck_assert_str_eq(comps[STATUSPAGE_MIRROR].name, "site-b mirror");
    snprintf(s.pg_state, sizeof(s.pg_state), "unknown");
    ck_assert_int_eq(eval(&s), STATUSPAGE_DEGRADED);
    expect_state(STATUSPAGE_MIRROR, STATUSPAGE_DEGRADED, "standby does not stream");
    snprintf(s.pg_state, sizeof(s.pg_state), "standby");
    snprintf(s.spool_stall, sizeof(s.spool_stall), "no space for the spool in /spool");
    ck_assert_int_eq(eval(&s), STATUSPAGE_MAJOR);
    expect_state(STATUSPAGE_MIRROR, STATUSPAGE_MAJOR, "spool has no space");
    expect_state(STATUSPAGE_DATABASE, STATUSPAGE_OPERATIONAL, "");
    s.spool_stall[0] = '\0';
    s.link_up = false;
    ck_assert_int_eq(eval(&s), STATUSPAGE_MAJOR);
    expect_state(STATUSPAGE_DATABASE, STATUSPAGE_PARTIAL, "not seen from this site");
    expect_state(STATUSPAGE_MIRROR, STATUSPAGE_MAJOR, "link is down");

    /* fenced */
    fill(&s);
    snprintf(s.role, sizeof(s.role), "fenced");
    s.link_up = false;
    ck_assert_int_eq(eval(&s), STATUSPAGE_MAJOR);
    ck_assert_str_eq(comps[STATUSPAGE_DATABASE].name, "site-b database");
    expect_state(STATUSPAGE_DATABASE, STATUSPAGE_PARTIAL, "not observed");
    expect_state(STATUSPAGE_MIRROR, STATUSPAGE_MAJOR, "must rejoin");
}
END_TEST

START_TEST(rule_witness)
{
    static struct status_snapshot s;

    fill(&s);
    snprintf(s.node_name, sizeof(s.node_name), "witness");
    snprintf(s.role, sizeof(s.role), "witness");
    snprintf(s.pg_state, sizeof(s.pg_state), "unknown");
    ck_assert_int_eq(eval(&s), STATUSPAGE_OPERATIONAL);
    ck_assert_str_eq(comps[STATUSPAGE_DATABASE].name, "site-b database"); /* the primary */
    expect_state(STATUSPAGE_DATABASE, STATUSPAGE_OPERATIONAL, "heard by the witness");
    expect_state(STATUSPAGE_MIRROR, STATUSPAGE_OPERATIONAL, "both sites");
    snprintf(s.sync_state, sizeof(s.sync_state), "down");
    ck_assert_int_eq(eval(&s), STATUSPAGE_PARTIAL);
    expect_state(STATUSPAGE_LINK, STATUSPAGE_PARTIAL, "does not hear both");
    s.link_up = false;
    expect_state(STATUSPAGE_DATABASE, STATUSPAGE_OPERATIONAL, "heard"); /* not re-evaluated */
    eval(&s);
    expect_state(STATUSPAGE_DATABASE, STATUSPAGE_PARTIAL, "not heard by the witness");
}
END_TEST

START_TEST(rule_maintenance_and_stale)
{
    static struct status_snapshot s;

    fill(&s);
    s.link_up = false;
    snprintf(s.maintenance, sizeof(s.maintenance), "active: monthly window");
    ck_assert_int_eq(eval(&s), STATUSPAGE_MAINTENANCE);
    for (int i = 0; i < STATUSPAGE_COMPONENTS; i++)
        expect_state(i, STATUSPAGE_MAINTENANCE, "monthly window");
    /* anything else in maintenance is only shown */
    snprintf(s.maintenance, sizeof(s.maintenance), "next: Sat 22:00");
    ck_assert_int_eq(eval(&s), STATUSPAGE_MAJOR);

    fill(&s);
    s.now_unix_us -= STATUSPAGE_STALE_US + 1000000;
    ck_assert(statuspage_stale(&s, unix_now_us()));
    ck_assert_int_eq(eval(&s), STATUSPAGE_PARTIAL);
    expect_state(STATUSPAGE_MIRROR, STATUSPAGE_PARTIAL, "not updated");
    memset(&s, 0, sizeof(s));
    ck_assert(statuspage_stale(&s, unix_now_us()));
}
END_TEST

START_TEST(lag_history)
{
    static struct status_lag_history h;
    struct status_lag_sample v = {
        .flush_bytes = 10, .apply_bytes = 20, .flush_s = -1, .apply_s = 0.5};
    uint64_t t0 = 1000000000000ULL;

    memset(&h, 0, sizeof(h));
    status_lag_note(&h, t0, &v);
    v.flush_bytes = 30; /* the worst of the interval wins */
    v.flush_s = 0.25;
    status_lag_note(&h, t0 + 5000000, &v);
    v.flush_bytes = 1;
    v.apply_s = 0.1;
    status_lag_note(&h, t0 + 9000000, &v);
    ck_assert_uint_eq(h.n, 0);
    status_lag_note(&h, t0 + STATUS_LAG_EVERY_US, &v);
    ck_assert_uint_eq(h.n, 1);
    ck_assert_uint_eq(status_lag_at(&h, 0)->flush_bytes, 30);
    ck_assert_uint_eq(status_lag_at(&h, 0)->apply_bytes, 20);
    ck_assert_double_eq(status_lag_at(&h, 0)->flush_s, 0.25);
    ck_assert_double_eq(status_lag_at(&h, 0)->apply_s, 0.5);
    ck_assert_uint_eq(status_lag_at(&h, 0)->unix_us, t0 + STATUS_LAG_EVERY_US);
    /* two hours of samples: the ring keeps the last hour, oldest first */
    for (unsigned i = 0; i < 2 * STATUS_LAG_SAMPLES; i++) {
        v.flush_bytes = i;
        status_lag_note(&h, t0 + (2 + 2 * (uint64_t)i) * STATUS_LAG_EVERY_US, &v);
        status_lag_note(&h, t0 + (3 + 2 * (uint64_t)i) * STATUS_LAG_EVERY_US, &v);
    }
    ck_assert_uint_eq(h.n, STATUS_LAG_SAMPLES);
    for (unsigned i = 1; i < h.n; i++)
        ck_assert_uint_gt(status_lag_at(&h, i)->unix_us, status_lag_at(&h, i - 1)->unix_us);
    ck_assert_uint_eq(status_lag_at(&h, h.n - 1)->flush_bytes, 2 * STATUS_LAG_SAMPLES - 1);
}
END_TEST

START_TEST(incident_log)
{
    static struct status_incidents l;

    memset(&l, 0, sizeof(l));
    for (int i = 0; i < STATUS_INCIDENTS_MAX + 5; i++) {
        struct status_incident e = {.at_unix_us = (uint64_t)i, .unavailability_us = i * 1000};
        snprintf(e.kind, sizeof(e.kind), "switchover");
        status_incident_add(&l, &e);
    }
    ck_assert_uint_eq(l.n, STATUS_INCIDENTS_MAX);
    ck_assert_uint_eq(status_incident_at(&l, 0)->at_unix_us, 5);
    ck_assert_uint_eq(status_incident_at(&l, l.n - 1)->at_unix_us, STATUS_INCIDENTS_MAX + 4);
}
END_TEST

/* ---------------------------------------------------------------------------------------- */
/* Over HTTP                                                                                 */

static struct status_board board;
static struct httpapi *api;
static char base[64];
static char *dir;

/* A pair with history: site-a's view, the mirror degraded by its lag, two incidents. */
static void
publish_pair(void)
{
    static struct status_snapshot s;
    uint64_t now = unix_now_us();

    fill(&s);
    s.apply_lag_bytes = 40ULL << 20; /* degraded */
    s.apply_lag_s = 2.5;
    s.switchovers = 1;
    s.failovers = 1;
    snprintf(s.maintenance, sizeof(s.maintenance), "next: 2026-11-28 22:00 America/Denver");
    for (unsigned i = 0; i < 400; i++) {
        struct status_lag_sample v = {.flush_bytes = (i % 40) * 100000ULL,
                                      .apply_bytes = (i % 25) * 300000ULL,
                                      .flush_s = 0.002,
                                      .apply_s = 0.01};
        /* the history's clock: 10 s apart, ending now */
        status_lag_note(&s.metrics.lag, now - (400 - (uint64_t)i) * STATUS_LAG_EVERY_US, &v);
    }
    {
        struct status_incident e = {.at_unix_us = now - 1800000000ULL, .unavailability_us = 452000};
        snprintf(e.kind, sizeof(e.kind), "switchover");
        snprintf(e.text, sizeof(e.text), "site-b is the primary <and> site-a its standby");
        status_incident_add(&s.metrics.incidents, &e);
        e.at_unix_us = now - 600000000ULL;
        e.unavailability_us = 3210000;
        snprintf(e.kind, sizeof(e.kind), "failover");
        snprintf(e.text, sizeof(e.text), "site-a promoted (epoch 4)");
        status_incident_add(&s.metrics.incidents, &e);
    }
    status_publish(&board, &s);
}

static void
setup(void)
{
    char err[256];

    dir = tu_tmpdir("statuspage");
    status_board_init(&board);
    publish_pair();
    ck_assert_int_eq(httpapi_start(&api, "127.0.0.1:0", NULL, &board, err, sizeof(err)), 0);
    snprintf(base, sizeof(base), "http://127.0.0.1:%d", httpapi_port(api));
}

static void
teardown(void)
{
    httpapi_stop(api);
    status_board_destroy(&board);
    tu_rmtree(dir);
    free(dir);
}

/* GET path: returns the HTTP code; the body in *b (malloc'd). */
static long
get(const char *path, struct tu_buf *b, char *ctype, size_t ctcap)
{
    CURL *c = curl_easy_init();
    char url[256];
    long code = 0;
    char *ct = NULL;

    memset(b, 0, sizeof(*b));
    ck_assert_ptr_nonnull(c);
    snprintf(url, sizeof(url), "%s%s", base, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, tu_buf_append);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, b);
    ck_assert_int_eq(curl_easy_perform(c), CURLE_OK);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct);
    snprintf(ctype, ctcap, "%s", ct != NULL ? ct : "");
    curl_easy_cleanup(c);
    ck_assert_ptr_nonnull(b->data);
    return code;
}

START_TEST(summary_json)
{
    struct tu_buf b;
    char ctype[128];
    json_error_t jerr;
    json_t *o, *comps_j, *st;
    static const char *const names[] = {"site-a database", "site-b mirror", "replication link"};
    static const char *const states[] = {"operational", "degraded_performance", "operational"};

    ck_assert_int_eq(get("/api/v2/summary.json", &b, ctype, sizeof(ctype)), 200);
    ck_assert_str_eq(ctype, "application/json");
    o = json_loadb(b.data, b.len, 0, &jerr);
    ck_assert_msg(o != NULL, "not JSON: %s", jerr.text);
    ck_assert(json_is_object(json_object_get(o, "page")));
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(o, "page"), "id")),
                     "site-a");
    ck_assert(json_is_string(json_object_get(json_object_get(o, "page"), "updated_at")));
    comps_j = json_object_get(o, "components");
    ck_assert(json_is_array(comps_j));
    ck_assert_uint_eq(json_array_size(comps_j), 3);
    for (size_t i = 0; i < 3; i++) {
        json_t *c = json_array_get(comps_j, i);
        ck_assert(json_is_string(json_object_get(c, "id")));
        ck_assert_str_eq(json_string_value(json_object_get(c, "name")), names[i]);
        ck_assert_str_eq(json_string_value(json_object_get(c, "status")), states[i]);
    }
    ck_assert(json_is_array(json_object_get(o, "incidents")));
    ck_assert_uint_eq(json_array_size(json_object_get(o, "incidents")), 0);
    ck_assert(json_is_array(json_object_get(o, "scheduled_maintenances")));
    st = json_object_get(o, "status");
    ck_assert_str_eq(json_string_value(json_object_get(st, "indicator")), "minor");
    ck_assert(json_is_string(json_object_get(st, "description")));
    json_decref(o);
    free(b.data);

    /* a running switchover is an unresolved incident; a window in progress is listed */
    {
        static struct status_snapshot s;
        status_read(&board, &s);
        snprintf(s.operation, sizeof(s.operation), "switchover");
        snprintf(s.op_step, sizeof(s.op_step), "stopping the primary");
        s.op_id = 77;
        status_publish(&board, &s);
    }
    ck_assert_int_eq(get("/api/v2/summary.json", &b, ctype, sizeof(ctype)), 200);
    o = json_loadb(b.data, b.len, 0, &jerr);
    ck_assert_ptr_nonnull(o);
    ck_assert_uint_eq(json_array_size(json_object_get(o, "incidents")), 1);
    ck_assert_str_eq(json_string_value(
                         json_object_get(json_array_get(json_object_get(o, "incidents"), 0), "id")),
                     "op-77");
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(o, "status"), "indicator")),
                     "critical");
    json_decref(o);
    free(b.data);
    {
        static struct status_snapshot s;
        status_read(&board, &s);
        snprintf(s.maintenance, sizeof(s.maintenance), "active: hot fix");
        status_publish(&board, &s);
    }
    ck_assert_int_eq(get("/api/v2/summary.json", &b, ctype, sizeof(ctype)), 200);
    o = json_loadb(b.data, b.len, 0, &jerr);
    ck_assert_ptr_nonnull(o);
    ck_assert_uint_eq(json_array_size(json_object_get(o, "scheduled_maintenances")), 1);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(o, "status"), "indicator")),
                     "maintenance");
    ck_assert_str_eq(json_string_value(json_object_get(
                         json_array_get(json_object_get(o, "components"), 1), "status")),
                     "under_maintenance");
    json_decref(o);
    free(b.data);
}
END_TEST

START_TEST(status_and_incidents_json)
{
    struct tu_buf b;
    char ctype[128];
    json_error_t jerr;
    json_t *o, *list, *e;

    ck_assert_int_eq(get("/api/v2/status.json", &b, ctype, sizeof(ctype)), 200);
    o = json_loadb(b.data, b.len, 0, &jerr);
    ck_assert_msg(o != NULL, "not JSON: %s", jerr.text);
    ck_assert_uint_eq(json_object_size(o), 2);
    ck_assert(json_is_object(json_object_get(o, "page")));
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(o, "status"), "indicator")),
                     "minor");
    json_decref(o);
    free(b.data);

    ck_assert_int_eq(get("/api/v2/incidents.json", &b, ctype, sizeof(ctype)), 200);
    o = json_loadb(b.data, b.len, 0, &jerr);
    ck_assert_msg(o != NULL, "not JSON: %s", jerr.text);
    ck_assert_uint_eq(json_object_size(o), 2);
    list = json_object_get(o, "incidents");
    ck_assert_uint_eq(json_array_size(list), 2);
    e = json_array_get(list, 0); /* newest first */
    ck_assert_str_eq(json_string_value(json_object_get(e, "name")), "failover");
    ck_assert_str_eq(json_string_value(json_object_get(e, "status")), "resolved");
    ck_assert_double_eq_tol(json_real_value(json_object_get(e, "write_unavailability_s")), 3.21,
                            1e-9);
    ck_assert(json_is_string(json_object_get(e, "created_at")));
    ck_assert(json_is_string(json_object_get(e, "resolved_at")));
    ck_assert_str_eq(json_string_value(json_object_get(
                         json_array_get(json_object_get(e, "incident_updates"), 0), "body")),
                     "site-a promoted (epoch 4)");
    e = json_array_get(list, 1);
    ck_assert_str_eq(json_string_value(json_object_get(e, "name")), "switchover");
    ck_assert_double_eq_tol(json_real_value(json_object_get(e, "write_unavailability_s")), 0.452,
                            1e-9);
    json_decref(o);
    free(b.data);
}
END_TEST

/* The agent hands the API its configured thresholds: the page and the summary use them. */
START_TEST(summary_uses_configured_thresholds)
{
    struct statuspage_thresholds th;
    struct tu_buf b;
    char ctype[128];
    json_error_t jerr;
    json_t *o;

    /* publish_pair's 40 MiB of apply lag is degraded by the defaults; not from 64 MB up */
    statuspage_thresholds_default(&th);
    th.degraded_bytes = 64ULL << 20;
    httpapi_set_thresholds(api, &th);
    ck_assert_int_eq(get("/api/v2/summary.json", &b, ctype, sizeof(ctype)), 200);
    o = json_loadb(b.data, b.len, 0, &jerr);
    ck_assert_msg(o != NULL, "not JSON: %s", jerr.text);
    ck_assert_str_eq(json_string_value(json_object_get(
                         json_array_get(json_object_get(o, "components"), 1), "status")),
                     "operational");
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(o, "status"), "indicator")),
                     "none");
    json_decref(o);
    free(b.data);
    ck_assert_int_eq(get("/", &b, ctype, sizeof(ctype)), 200);
    ck_assert_msg(strstr(b.data, "degraded from 64 MB or 5 s of lag, in partial outage from "
                                 "1.0 GB or 60 s") != NULL,
                  "%.300s", strstr(b.data, "<footer>") != NULL ? strstr(b.data, "<footer>") : "");
    free(b.data);

    /* and a partial threshold below the lag makes it a partial outage */
    th.degraded_bytes = 8ULL << 20;
    th.partial_bytes = 32ULL << 20;
    httpapi_set_thresholds(api, &th);
    ck_assert_int_eq(get("/api/v2/summary.json", &b, ctype, sizeof(ctype)), 200);
    o = json_loadb(b.data, b.len, 0, &jerr);
    ck_assert_ptr_nonnull(o);
    ck_assert_str_eq(json_string_value(json_object_get(
                         json_array_get(json_object_get(o, "components"), 1), "status")),
                     "partial_outage");
    json_decref(o);
    free(b.data);

    /* NULL: the defaults again */
    httpapi_set_thresholds(api, NULL);
    ck_assert_int_eq(get("/api/v2/summary.json", &b, ctype, sizeof(ctype)), 200);
    ck_assert_ptr_nonnull(strstr(b.data, "degraded_performance"));
    free(b.data);
}
END_TEST

START_TEST(page_served)
{
    struct tu_buf b;
    char ctype[128];

    ck_assert_int_eq(get("/", &b, ctype, sizeof(ctype)), 200);
    ck_assert_str_eq(ctype, "text/html; charset=utf-8");
    ck_assert_ptr_nonnull(strstr(b.data, "<meta http-equiv=\"refresh\""));
    ck_assert_ptr_nonnull(strstr(b.data, "<svg id=\"lag-chart\""));
    /* text from the snapshot is escaped */
    ck_assert_ptr_nonnull(strstr(b.data, "site-b is the primary &lt;and&gt; site-a"));
    ck_assert_ptr_null(strstr(b.data, "<and>"));
    /* no external assets, no scripts */
    ck_assert_ptr_null(strstr(b.data, "<script"));
    ck_assert_ptr_null(strstr(b.data, "src="));
    ck_assert_ptr_null(strstr(b.data, "<link"));
    free(b.data);
}
END_TEST

/* Counts the occurrences of needle in hay. */
static int
count_of(const char *hay, const char *needle)
{
    int n = 0;

    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

/*
 * With the agent's maintenance windows: summary.json lists each window's next three
 * occurrences (the open one in_progress, the others scheduled, with scheduled_for and
 * scheduled_until), soonest first, as Statuspage's summary lists upcoming maintenances; the
 * page lists them in each window's own zone and in UTC.  Each component's state shows once.
 */
START_TEST(maintenance_windows_listed)
{
    struct maint_store *store;
    struct maint_window w;
    struct tu_buf b;
    char ctype[128], err[512], at[32];
    json_error_t jerr;
    json_t *o, *list, *e;
    time_t now = time(NULL), start = now - 600;
    struct tm tm;
    const struct maint_params monthly = {.rrule = "FREQ=MONTHLY;BYDAY=-1SA",
                                         .start = "22:00",
                                         .duration = "4h",
                                         .tz = "America/Denver",
                                         .switchover = "1"};
    const struct maint_params hotfix = {
        .at = "2099-01-01 02:00", .duration = "2h", .tz = "Europe/Berlin", .cls = "hotfix"};
    struct maint_params open = {.duration = "1h", .tz = "UTC", .cls = "routine"};
    const char *prev = "";

    ck_assert_int_eq(maint_store_open(&store, dir, err, sizeof(err)), 0);
    ck_assert_int_eq(maint_window_parse(&w, &monthly, now, err, sizeof(err)), 0);
    ck_assert_int_eq(maint_store_add(store, &w, err, sizeof(err)), 0);
    ck_assert_int_eq(maint_window_parse(&w, &hotfix, now, err, sizeof(err)), 0);
    ck_assert_int_eq(maint_store_add(store, &w, err, sizeof(err)), 0);
    gmtime_r(&start, &tm);
    strftime(at, sizeof(at), "%Y-%m-%d %H:%M", &tm);
    open.at = at;
    ck_assert_msg(maint_window_parse(&w, &open, now, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(maint_store_add(store, &w, err, sizeof(err)), 0);
    httpapi_set_maint(api, store);

    ck_assert_int_eq(get("/api/v2/summary.json", &b, ctype, sizeof(ctype)), 200);
    o = json_loadb(b.data, b.len, 0, &jerr);
    ck_assert_msg(o != NULL, "not JSON: %s", jerr.text);
    list = json_object_get(o, "scheduled_maintenances");
    ck_assert_uint_eq(json_array_size(list), 5); /* 3 monthly, the hot fix, the open one */
    for (size_t i = 0; i < json_array_size(list); i++) {
        const char *from, *until;

        e = json_array_get(list, i);
        from = json_string_value(json_object_get(e, "scheduled_for"));
        until = json_string_value(json_object_get(e, "scheduled_until"));
        ck_assert_msg(from != NULL && until != NULL && strlen(from) == 20 && from[19] == 'Z',
                      "%zu: %s", i, b.data);
        ck_assert_msg(strcmp(from, until) < 0 && strcmp(prev, from) <= 0, "%zu: %s", i, b.data);
        prev = from;
        ck_assert_str_eq(json_string_value(json_object_get(e, "impact")), "maintenance");
        ck_assert_str_eq(json_string_value(json_object_get(e, "status")),
                         i == 0 ? "in_progress" : "scheduled");
        ck_assert_uint_eq(json_array_size(json_object_get(e, "components")), 3);
    }
    e = json_array_get(list, 0);
    ck_assert_str_eq(json_string_value(json_object_get(e, "name")),
                     "routine maintenance (window 3)");
    e = json_array_get(list, 1);
    ck_assert_str_eq(json_string_value(json_object_get(e, "name")), "maintenance window 1");
    ck_assert_msg(strstr(json_string_value(json_object_get(
                             json_array_get(json_object_get(e, "incident_updates"), 0), "body")),
                         " 22:00 - Sun ") != NULL,
                  "%s", b.data);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(list, 4), "scheduled_for")),
                     "2099-01-01T01:00:00Z");
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(list, 4), "name")),
                     "hotfix (window 2)");
    json_decref(o);
    free(b.data);

    ck_assert_int_eq(get("/", &b, ctype, sizeof(ctype)), 200);
    ck_assert_ptr_nonnull(strstr(b.data, "<ul id=\"windows\">"));
    ck_assert_int_eq(count_of(b.data, "<li class=\"occurrence"), 5);
    ck_assert_int_eq(count_of(b.data, "<li class=\"occurrence open\">now: "), 1);
    /* Denver's windows in Denver's time, and in UTC */
    ck_assert_int_eq(count_of(b.data, " America/Denver (Sun "), 3);
    ck_assert_ptr_nonnull(strstr(b.data, "Thu 2099-01-01 02:00 - 04:00 Europe/Berlin (Thu "
                                         "2099-01-01 01:00 - 03:00 UTC)"));
    ck_assert_ptr_nonnull(strstr(b.data, "with a switchover at its start"));
    /* a state once, as people read it */
    ck_assert_ptr_nonnull(strstr(b.data, ">Operational</td>"));
    ck_assert_ptr_nonnull(strstr(b.data, ">Degraded performance</td>"));
    ck_assert_ptr_null(strstr(b.data, "(operational)"));
    ck_assert_ptr_null(strstr(b.data, "(degraded_performance)"));
    free(b.data);

    httpapi_set_maint(api, NULL);
    maint_store_close(store);
}
END_TEST

/* ---------------------------------------------------------------------------------------- */
/* Headless Chromium                                                                         */

static char chromium[64];

/* Finds a chromium that renders about:blank here; false if none. */
static bool
find_chromium(void)
{
    static const char *const names[] = {"chromium", "chromium-browser", "google-chrome"};
    char *tmp = tu_tmpdir("chromium-probe");
    bool ok = false;

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]) && !ok; i++) {
        if (tu_run("command -v %s >/dev/null 2>&1", names[i]) != 0)
            continue;
        snprintf(chromium, sizeof(chromium), "%s", names[i]);
        ok = tu_run("timeout 60 %s --headless --no-sandbox --disable-gpu --disable-dev-shm-usage "
                    "--no-first-run --user-data-dir='%s/profile' --dump-dom about:blank "
                    ">'%s/blank.html' 2>'%s/blank.err'",
                    chromium, tmp, tmp, tmp) == 0;
        if (!ok)
            fprintf(stderr, "%s cannot render about:blank here (see its stderr below)\n", names[i]);
    }
    tu_rmtree(tmp);
    free(tmp);
    return ok;
}

/* While chromium runs, the snapshot is published afresh every 0.5 s, as the agent's loop
 * does: a browser that starts slowly on a loaded machine must not find it stale. */
static atomic_bool refreshing;

static void *
refresh_main(void *arg)
{
    static struct status_snapshot s;

    (void)arg;
    while (atomic_load(&refreshing)) {
        status_read(&board, &s);
        s.now_unix_us = unix_now_us();
        status_publish(&board, &s);
        usleep(500 * 1000);
    }
    return NULL;
}

/* Runs chromium with args on the page; returns its exit status. */
static int
run_chromium(const char *args, const char *out)
{
    pthread_t th;
    int rc;

    atomic_store(&refreshing, true);
    ck_assert_int_eq(pthread_create(&th, NULL, refresh_main, NULL), 0);
    rc = tu_run("timeout 90 %s --headless --no-sandbox --disable-gpu --disable-dev-shm-usage "
                "--no-first-run --hide-scrollbars --user-data-dir='%s/profile' %s '%s/' "
                ">'%s' 2>>'%s/chromium.err'",
                chromium, dir, args, base, out, dir);
    atomic_store(&refreshing, false);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    return rc;
}

#define assert_in(text, s) ck_assert_msg(strstr((text), (s)) != NULL, "\"%s\" not in the DOM", (s))

START_TEST(chromium_renders_page)
{
    char shot[4096], domfile[4096], arg[4200];
    unsigned char *png;
    char *dom;
    size_t len;
    const char *chart, *end;

    snprintf(shot, sizeof(shot), "%s/status.png", dir);
    snprintf(arg, sizeof(arg), "--window-size=900,1200 --screenshot='%s'", shot);
    snprintf(domfile, sizeof(domfile), "%s/screenshot.out", dir);
    ck_assert_int_eq(run_chromium(arg, domfile), 0);
    png = tu_read_file(shot, &len);
    ck_assert_msg(png != NULL, "no screenshot");
    ck_assert_uint_gt(len, 1000);
    ck_assert(memcmp(png, "\x89PNG\r\n\x1a\n", 8) == 0);
    free(png);
    if (getenv("WM_KEEP_SCREENSHOT") != NULL)
        tu_run("cp '%s' '%s'", shot, getenv("WM_KEEP_SCREENSHOT"));

    snprintf(domfile, sizeof(domfile), "%s/dom.html", dir);
    ck_assert_int_eq(run_chromium("--dump-dom", domfile), 0);
    dom = tu_read_file(domfile, &len);
    ck_assert_ptr_nonnull(dom);
    /* the components, their names and states as rendered */
    assert_in(dom, "id=\"component-database\" data-status=\"operational\"");
    assert_in(dom, "id=\"component-mirror\" data-status=\"degraded_performance\"");
    assert_in(dom, "id=\"component-link\" data-status=\"operational\"");
    assert_in(dom, "site-a database");
    assert_in(dom, "site-b mirror");
    assert_in(dom, "replication link");
    assert_in(dom, "Degraded performance");
    ck_assert_msg(strstr(dom, "(degraded_performance)") == NULL, "a state shown twice");
    assert_in(dom, "behind: 40 MB");
    assert_in(dom, "class=\"banner state-degraded_performance\"");
    /* the chart: an SVG element with both lines, in the rendered DOM */
    chart = strstr(dom, "<svg id=\"lag-chart\"");
    ck_assert_msg(chart != NULL, "no lag chart");
    end = strstr(chart, "</svg>");
    ck_assert_ptr_nonnull(end);
    ck_assert_msg(strstr(chart, "class=\"lag-flush\"") != NULL &&
                      strstr(chart, "class=\"lag-flush\"") < end,
                  "no flush line in the chart");
    ck_assert_msg(strstr(chart, "class=\"lag-apply\"") != NULL &&
                      strstr(chart, "class=\"lag-apply\"") < end,
                  "no apply line in the chart");
    /* incident history, newest first, with the unavailability */
    assert_in(dom, "failover</td><td>3.210 s");
    assert_in(dom, "switchover</td><td>0.452 s");
    ck_assert(strstr(dom, "failover</td>") < strstr(dom, "switchover</td>"));
    assert_in(dom, "site-b is the primary &lt;and&gt; site-a its standby");
    /* maintenance as the snapshot says it, and the refresh */
    assert_in(dom, "next: 2026-11-28 22:00 America/Denver");
    assert_in(dom, "http-equiv=\"refresh\"");
    free(dom);
}
END_TEST

static Suite *
rules_suite(void)
{
    Suite *s = suite_create("statuspage");
    TCase *tc = tcase_create("rules");

    tcase_add_test(tc, rule_healthy_source);
    tcase_add_test(tc, rule_lag_thresholds);
    tcase_add_test(tc, rule_thresholds_from_config);
    tcase_add_test(tc, rule_outages);
    tcase_add_test(tc, rule_witness);
    tcase_add_test(tc, rule_maintenance_and_stale);
    tcase_add_test(tc, lag_history);
    tcase_add_test(tc, incident_log);
    suite_add_tcase(s, tc);
    tc = tcase_create("http");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, summary_json);
    tcase_add_test(tc, status_and_incidents_json);
    tcase_add_test(tc, summary_uses_configured_thresholds);
    tcase_add_test(tc, page_served);
    tcase_add_test(tc, maintenance_windows_listed);
    suite_add_tcase(s, tc);
    return s;
}

static Suite *
chromium_suite(void)
{
    Suite *s = suite_create("statuspage-chromium");
    TCase *tc = tcase_create("chromium");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, chromium_renders_page);
    suite_add_tcase(s, tc);
    return s;
}

int
main(int argc, char **argv)
{
    bool browser = argc > 1 && strcmp(argv[1], "chromium") == 0;
    SRunner *sr;
    int failed;

    if (browser && !find_chromium()) {
        fprintf(stderr, "skipped: no chromium that runs here (tools/install-deps.sh installs "
                        "Debian's chromium)\n");
        return 77;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return 1;
    sr = srunner_create(browser ? chromium_suite() : rules_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    curl_global_cleanup();
    return failed == 0 ? 0 : 1;
}
