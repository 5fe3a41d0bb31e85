/*
 * test_report.c - Check suite for walmirrorctl report (tools/report.c), run as the real
 * walmirrorctl binary against real in-process agent APIs (agent/httpapi.c over status boards
 * whose snapshots the test sets, republished fresh every 100 ms by a thread) and the one fake
 * allowed: a local stand-in for the Statuspage SaaS (statuspage_fake.h), which records every
 * request with its arrival time.
 *
 * Covered: the first PATCH (path, OAuth header, content type, status), none while the status
 * stays, one per change (lag over the partial threshold, link down); a metric point each
 * interval with a current timestamp and the lag set; the component choice and the fold over
 * several agents (worst wins, under_maintenance wins over all); 429 with Retry-After in both
 * forms (the next request waits); 500s (gaps that grow, the newest status pushed once); the
 * service unreachable at first; a wrong key, page or metric (a clear error, exit 1); no agent
 * answering (major_outage after three polls); bad arguments (exit 2); the fake's own contract.
 * Waits are for events with deadlines; the only fixed waits check that nothing more happens.
 */
#include <check.h>
#include <curl/curl.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "httpapi.h"
#include "status.h"
#include "statuspage_fake.h"
#include "testutil.h"

#define CTL WM_BINARY_DIR "/tools/walmirrorctl"
#define KEY "sp-key-1234567890"
#define PAGE "pg1"
#define COMPONENT "cmp1"
#define METRIC "met1"
#define AGENTS 2

/* ---------------------------------------------------------------------------------------- */
/* Fixture: two agent APIs (A, a source, and B, a sink), the fake service, a key file         */

static struct status_board boards[AGENTS];
static struct httpapi *apis[AGENTS];
static char bases[AGENTS][64];
static struct status_snapshot snaps[AGENTS]; /* what the publisher publishes, under snap_lock */
static pthread_mutex_t snap_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_t publisher;
static atomic_bool publishing;
static struct spfake *fake;
static char *dir;
static char keyfile[4200], fake_url[64];
static pid_t reporter = -1;
static char *out_text, *err_text;

static uint64_t
unix_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static double
mono_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A healthy pair: site-a's source (lag 0.5 s flush, 2.5 s apply), site-b's sink. */
static void
fill(struct status_snapshot *s, bool source)
{
    memset(s, 0, sizeof(*s));
    snprintf(s->node_name, sizeof(s->node_name), source ? "site-a" : "site-b");
    snprintf(s->peer_name, sizeof(s->peer_name), source ? "site-b" : "site-a");
    snprintf(s->role, sizeof(s->role), source ? "source" : "sink");
    snprintf(s->pg_state, sizeof(s->pg_state), source ? "primary" : "standby");
    snprintf(s->sync_state, sizeof(s->sync_state), "sync");
    snprintf(s->operation, sizeof(s->operation), "none");
    snprintf(s->maintenance, sizeof(s->maintenance), "none");
    s->link_up = true;
    s->rtt_us = 900;
    s->flush_lag_bytes = 4096;
    s->apply_lag_bytes = 8192;
    s->flush_lag_s = source ? 0.5 : 0.001;
    s->apply_lag_s = source ? 2.5 : 0.002;
    s->last_unavailability_us = -1;
    s->spool_free_bytes = -1;
    s->cert_not_after_unix = -1;
}

static void *
publish_loop(void *arg)
{
    (void)arg;
    while (atomic_load(&publishing)) {
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 100 * 1000 * 1000};

        pthread_mutex_lock(&snap_lock);
        for (int i = 0; i < AGENTS; i++) {
            snaps[i].now_unix_us = unix_now_us();
            status_publish(&boards[i], &snaps[i]);
        }
        pthread_mutex_unlock(&snap_lock);
        nanosleep(&ts, NULL);
    }
    return NULL;
}

/* Changes agent i's snapshot and publishes it: lag in seconds (negative: leave), link,
 * maintenance text. */
static void
set_agent(int i, double apply_lag_s, bool link_up, const char *maintenance)
{
    pthread_mutex_lock(&snap_lock);
    if (apply_lag_s >= 0)
        snaps[i].apply_lag_s = apply_lag_s;
    snaps[i].link_up = link_up;
    snprintf(snaps[i].maintenance, sizeof(snaps[i].maintenance), "%s", maintenance);
    snaps[i].now_unix_us = unix_now_us();
    status_publish(&boards[i], &snaps[i]); /* now, not at the publisher's next turn */
    pthread_mutex_unlock(&snap_lock);
}

static void
write_key(const char *key, mode_t mode)
{
    FILE *f = fopen(keyfile, "w");

    ck_assert_ptr_nonnull(f);
    fprintf(f, "%s\n", key);
    ck_assert_int_eq(fclose(f), 0);
    ck_assert_int_eq(chmod(keyfile, mode), 0);
}

static void
setup(void)
{
    char err[512];

    dir = tu_tmpdir("report");
    snprintf(keyfile, sizeof(keyfile), "%s/statuspage.key", dir);
    write_key(KEY, 0600);
    for (int i = 0; i < AGENTS; i++) {
        status_board_init(&boards[i]);
        fill(&snaps[i], i == 0);
        snaps[i].now_unix_us = unix_now_us();
        status_publish(&boards[i], &snaps[i]);
        ck_assert_msg(httpapi_start(&apis[i], "127.0.0.1:0", NULL, &boards[i], err, sizeof(err)) ==
                          0,
                      "httpapi_start: %s", err);
        snprintf(bases[i], sizeof(bases[i]), "http://127.0.0.1:%d", httpapi_port(apis[i]));
    }
    atomic_store(&publishing, true);
    ck_assert_int_eq(pthread_create(&publisher, NULL, publish_loop, NULL), 0);
    ck_assert_int_eq(spfake_start(&fake, 0, KEY, PAGE, COMPONENT, METRIC), 0);
    snprintf(fake_url, sizeof(fake_url), "http://127.0.0.1:%d", spfake_port(fake));
    reporter = -1;
}

static void
teardown(void)
{
    if (reporter > 0) {
        kill(reporter, SIGKILL);
        waitpid(reporter, NULL, 0);
        reporter = -1;
    }
    atomic_store(&publishing, false);
    pthread_join(publisher, NULL);
    spfake_stop(fake);
    for (int i = 0; i < AGENTS; i++) {
        httpapi_stop(apis[i]);
        status_board_destroy(&boards[i]);
    }
    tu_rmtree(dir);
    free(dir);
}

/* ---------------------------------------------------------------------------------------- */
/* walmirrorctl report as a process                                                          */

#define STD_ARGS                                                                                   \
    "--statuspage %s --page-id " PAGE " --component-id " COMPONENT " --api-key-file '%s'"

/* Runs walmirrorctl to its end; stdout and stderr land in out_text and err_text. */
static int ctl(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int
ctl(const char *fmt, ...)
{
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = tu_vcapture(dir, &out_text, &err_text, CTL, fmt, ap);
    va_end(ap);
    return rc;
}

/* Starts walmirrorctl with the arguments made from fmt, in the background, its stderr in
 * dir/rep.err; it gets SIGTERM should the test die first. */
static void start_ctl(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
start_ctl(const char *fmt, ...)
{
    char args[2048], *cmd;
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(args, sizeof(args), fmt, ap);
    va_end(ap);
    ck_assert(n > 0 && (size_t)n < sizeof(args));
    ck_assert(asprintf(&cmd, "exec '%s' %s </dev/null >'%s/rep.out' 2>'%s/rep.err'", CTL, args, dir,
                       dir) > 0);
    reporter = fork();
    ck_assert_int_ge(reporter, 0);
    if (reporter == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    free(cmd);
}

/* Waits up to timeout_s for the reporter to exit by itself; its exit status, or -1. */
static int
wait_ctl(double timeout_s)
{
    double deadline = mono_s() + timeout_s;
    int st;

    while (mono_s() < deadline) {
        pid_t p = waitpid(reporter, &st, WNOHANG);
        if (p == reporter) {
            reporter = -1;
            return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        }
        usleep(20000);
    }
    return -1;
}

/* SIGTERM, then its exit status. */
static int
stop_ctl(void)
{
    int rc;

    ck_assert_int_gt(reporter, 0);
    ck_assert_int_eq(kill(reporter, SIGTERM), 0);
    rc = wait_ctl(10);
    ck_assert_msg(rc >= 0, "walmirrorctl report did not stop on SIGTERM");
    return rc;
}

/* The reporter's stderr so far (static buffer, replaced at each call). */
static const char *
ctl_log(void)
{
    static char *text;
    char path[4300];
    size_t len;

    free(text);
    snprintf(path, sizeof(path), "%s/rep.err", dir);
    text = tu_read_file(path, &len);
    return text != NULL ? text : "";
}

#define assert_has(text, s)                                                                        \
    ck_assert_msg(strstr((text), (s)) != NULL, "\"%s\" not in:\n%s", (s), (text))

/* ---------------------------------------------------------------------------------------- */
/* The fake's log                                                                            */

/* How many requests with this method (and answered this status; 0: any) arrived. */
static size_t
count(const char *method, int answered)
{
    struct spfake_request r;
    size_t n = 0;

    for (size_t i = 0; spfake_get(fake, i, &r); i++)
        if (strcmp(r.method, method) == 0 && (answered == 0 || r.answered == answered))
            n++;
    return n;
}

/* The k-th request (0 = first) with this method; fails the test if there is none. */
static struct spfake_request
nth(const char *method, size_t k)
{
    struct spfake_request r;
    size_t left = k;

    for (size_t i = 0; spfake_get(fake, i, &r); i++)
        if (strcmp(r.method, method) == 0 && left-- == 0)
            return r;
    ck_abort_msg("no %s request number %zu", method, k);
    return r;
}

/* Waits up to timeout_s until at least n requests of method answered `answered` (0: any)
 * arrived. */
static void
await(const char *method, int answered, size_t n, double timeout_s)
{
    double deadline = mono_s() + timeout_s;

    while (count(method, answered) < n) {
        ck_assert_msg(mono_s() < deadline,
                      "%zu %s request(s) answered %d within %.0f s: only %zu; log:\n%s", n, method,
                      answered, timeout_s, count(method, answered), ctl_log());
        usleep(20000);
    }
}

/* Waits up to timeout_s until the reporter's log holds text. */
static void
await_log(const char *text, double timeout_s)
{
    double deadline = mono_s() + timeout_s;

    while (strstr(ctl_log(), text) == NULL) {
        ck_assert_msg(mono_s() < deadline, "\"%s\" not logged within %.0f s:\n%s", text, timeout_s,
                      ctl_log());
        usleep(20000);
    }
}

/* The status a PATCH carried. */
static const char *
patched(const struct spfake_request *r)
{
    static char st[64];
    json_t *o = json_loads(r->body, 0, NULL);
    const char *v = json_string_value(json_object_get(json_object_get(o, "component"), "status"));

    snprintf(st, sizeof(st), "%s", v != NULL ? v : "(none)");
    json_decref(o);
    return st;
}

/* Checks a metric POST: path, key, timestamp near its arrival, value. */
static void
assert_point(const struct spfake_request *r, double value)
{
    json_t *o = json_loads(r->body, 0, NULL), *d = json_object_get(o, "data");
    double ts;

    ck_assert_str_eq(r->path, "/v1/pages/" PAGE "/metrics/" METRIC "/data");
    ck_assert_str_eq(r->auth, "OAuth " KEY);
    ck_assert_str_eq(r->ctype, "application/json");
    ck_assert_msg(json_is_integer(json_object_get(d, "timestamp")), "body %s", r->body);
    ts = (double)json_integer_value(json_object_get(d, "timestamp"));
    ck_assert_msg(fabs(ts - r->real_s) < 3, "timestamp %.0f, arrived at %.3f", ts, r->real_s);
    ck_assert_msg(json_is_number(json_object_get(d, "value")) &&
                      fabs(json_number_value(json_object_get(d, "value")) - value) < 1e-6,
                  "value in %s, expected %g", r->body, value);
    ck_assert_int_eq(r->answered, 201);
    json_decref(o);
}

/* ---------------------------------------------------------------------------------------- */
/* Tests                                                                                     */

START_TEST(pushes_on_change)
{
    struct spfake_request r, prev;
    size_t posts, first_posts;
    char st[64];

    start_ctl("--url %s report " STD_ARGS " --metric-id " METRIC " --interval 1s", bases[0],
              fake_url, keyfile);
    await("PATCH", 0, 1, 5);
    r = nth("PATCH", 0);
    ck_assert_str_eq(r.path, "/v1/pages/" PAGE "/components/" COMPONENT);
    ck_assert_str_eq(r.auth, "OAuth " KEY);
    ck_assert_str_eq(r.ctype, "application/json");
    ck_assert_str_eq(patched(&r), "operational");
    ck_assert_int_eq(r.answered, 200);

    /* four intervals with the status unchanged: a point each, no other PATCH */
    first_posts = count("POST", 0);
    await("POST", 0, first_posts + 4, 8);
    ck_assert_uint_eq(count("PATCH", 0), 1);
    posts = count("POST", 0);
    for (size_t i = 0; i < posts; i++) {
        r = nth("POST", i);
        assert_point(&r, 2.5); /* the worse of flush 0.5 s and apply 2.5 s */
        if (i > 0) {
            double gap = r.mono_s - prev.mono_s;
            ck_assert_msg(gap > 0.5 && gap < 2.0, "points %zu and %zu %.3f s apart", i - 1, i, gap);
        }
        prev = r;
    }

    /* lag over the partial threshold (60 s) */
    set_agent(0, 90, true, "none");
    await("PATCH", 0, 2, 5);
    r = nth("PATCH", 1);
    ck_assert_str_eq(patched(&r), "partial_outage");
    posts = count("POST", 0);
    await("POST", 0, posts + 1, 5);
    r = nth("POST", posts);
    assert_point(&r, 90);

    /* the link down: the mirror and the link in major outage */
    set_agent(0, -1, false, "none");
    await("PATCH", 0, 3, 5);
    r = nth("PATCH", 2);
    ck_assert_str_eq(patched(&r), "major_outage");
    spfake_component_status(fake, st, sizeof(st));
    ck_assert_str_eq(st, "major_outage");

    ck_assert_int_eq(stop_ctl(), 0);
    ck_assert_uint_eq(count("PATCH", 0), 3);
    assert_has(ctl_log(), "component " COMPONENT ": operational pushed (first push)");
    assert_has(ctl_log(), "component " COMPONENT ": partial_outage pushed (was operational)");
    assert_has(ctl_log(), "component " COMPONENT ": major_outage pushed (was partial_outage)");
    assert_has(ctl_log(), "metric " METRIC ": 90.000 s at ");
}
END_TEST

START_TEST(component_and_agents)
{
    struct spfake_request r;

    /* --component: the link is fine when only the lag is over */
    set_agent(0, 90, true, "none");
    ck_assert_int_eq(
        ctl("--url %s report " STD_ARGS " --once --component link", bases[0], fake_url, keyfile),
        0);
    r = nth("PATCH", 0);
    ck_assert_str_eq(patched(&r), "operational");
    ck_assert_ptr_null(strstr(err_text, "readable by every user"));
    ck_assert_int_eq(
        ctl("--url %s report " STD_ARGS " --once --component mirror", bases[0], fake_url, keyfile),
        0);
    r = nth("PATCH", 1);
    ck_assert_msg(strcmp(patched(&r), "partial_outage") == 0, "%s:\n%s", patched(&r), err_text);
    ck_assert_uint_eq(count("POST", 0), 0); /* no --metric-id: no point */

    /* two agents: the worst of both; one in maintenance: under_maintenance wins */
    set_agent(0, 2.5, true, "none");
    set_agent(1, -1, false, "none"); /* the sink: link down, database not seen */
    ck_assert_int_eq(
        ctl("report --url %s --url %s " STD_ARGS " --once", bases[0], bases[1], fake_url, keyfile),
        0);
    r = nth("PATCH", 2);
    ck_assert_str_eq(patched(&r), "major_outage");
    set_agent(1, -1, false, "active window until 2026-03-01 09:00 UTC");
    ck_assert_int_eq(
        ctl("report --url %s --url %s " STD_ARGS " --once", bases[0], bases[1], fake_url, keyfile),
        0);
    r = nth("PATCH", 3);
    ck_assert_str_eq(patched(&r), "under_maintenance");

    /* a key file others can read: a warning, and it still works */
    write_key(KEY, 0644);
    ck_assert_int_eq(
        ctl("--url %s report " STD_ARGS " --once --metric-id " METRIC, bases[0], fake_url, keyfile),
        0);
    assert_has(err_text, "readable by every user (mode 0644)");
    r = nth("POST", 0);
    assert_point(&r, 2.5);
}
END_TEST

START_TEST(rate_limited)
{
    struct spfake_request r0, r1;
    char date[64];
    time_t at;
    struct tm tm;

    /* delta-seconds */
    spfake_script(fake, 1, 429, "2");
    start_ctl("--url %s report " STD_ARGS " --interval 1s", bases[0], fake_url, keyfile);
    await("PATCH", 200, 1, 8);
    ck_assert_uint_eq(count("PATCH", 0), 2);
    r0 = nth("PATCH", 0);
    r1 = nth("PATCH", 1);
    ck_assert_int_eq(r0.answered, 429);
    ck_assert_str_eq(patched(&r1), "operational");
    ck_assert_msg(r1.mono_s - r0.mono_s >= 2.0, "sent again %.3f s after a Retry-After: 2",
                  r1.mono_s - r0.mono_s);
    assert_has(ctl_log(), "rate limited (429 scripted answer): nothing sent for 2 s");

    /* an HTTP date, 3 s ahead: nothing before it */
    at = time(NULL) + 3;
    gmtime_r(&at, &tm);
    ck_assert(strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm) > 0);
    spfake_script(fake, 1, 429, date);
    set_agent(0, 90, true, "none");
    await("PATCH", 200, 2, 10);
    ck_assert_uint_eq(count("PATCH", 0), 4);
    r0 = nth("PATCH", 2);
    r1 = nth("PATCH", 3);
    ck_assert_int_eq(r0.answered, 429);
    ck_assert_str_eq(patched(&r1), "partial_outage");
    ck_assert_msg(r1.real_s >= (double)at, "sent at %.3f, before the Retry-After date %lld",
                  r1.real_s, (long long)at);
    ck_assert_int_eq(stop_ctl(), 0);
}
END_TEST

START_TEST(server_errors)
{
    struct spfake_request r[4];
    double gap[3];

    spfake_script(fake, 3, 500, NULL);
    start_ctl("--url %s report " STD_ARGS " --interval 1s", bases[0], fake_url, keyfile);
    await("PATCH", 500, 1, 5);
    /* changed while the service fails: the newest status is the one that lands */
    set_agent(0, -1, false, "none");
    await("PATCH", 200, 1, 15);
    for (size_t i = 0; i < 4; i++)
        r[i] = nth("PATCH", i);
    for (size_t i = 0; i < 3; i++) {
        ck_assert_int_eq(r[i].answered, 500);
        gap[i] = r[i + 1].mono_s - r[i].mono_s;
    }
    ck_assert_msg(gap[0] >= 0.95 && gap[1] >= 1.95 && gap[2] >= 3.95 && gap[0] < gap[1] &&
                      gap[1] < gap[2],
                  "gaps %.3f %.3f %.3f s: 1, 2, 4 expected", gap[0], gap[1], gap[2]);
    ck_assert_str_eq(patched(&r[3]), "major_outage");
    assert_has(ctl_log(), "component " COMPONENT ": 500 scripted answer: retrying in 4 s");

    /* accepted once, not sent again */
    sleep(2);
    ck_assert_uint_eq(count("PATCH", 0), 4);
    ck_assert_int_eq(stop_ctl(), 0);
}
END_TEST

START_TEST(service_unreachable_at_first)
{
    struct spfake *late;
    struct spfake_request r;
    int port = tu_free_port();
    char url[64];

    snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
    start_ctl("--url %s report " STD_ARGS " --interval 1s", bases[0], url, keyfile);
    await_log("retrying in 2 s", 8);
    ck_assert_int_eq(spfake_start(&late, port, KEY, PAGE, COMPONENT, METRIC), 0);
    {
        double deadline = mono_s() + 10;
        while (!spfake_get(late, 0, &r)) {
            ck_assert_msg(mono_s() < deadline, "no PATCH once the service is up:\n%s", ctl_log());
            usleep(20000);
        }
    }
    ck_assert_str_eq(r.method, "PATCH");
    ck_assert_str_eq(patched(&r), "operational");
    ck_assert_int_eq(r.answered, 200);
    ck_assert_int_eq(stop_ctl(), 0);
    ck_assert(!spfake_get(late, 1, &r));
    spfake_stop(late);
}
END_TEST

START_TEST(wrong_key_page_metric)
{
    struct spfake_request r;

    write_key("not-the-key", 0600);
    ck_assert_int_eq(ctl("--url %s report " STD_ARGS " --once", bases[0], fake_url, keyfile), 1);
    assert_has(err_text, "the service refused the API key from");
    assert_has(err_text, "(401 Could not authenticate): check --api-key-file");
    r = nth("PATCH", 0);
    ck_assert_str_eq(r.auth, "OAuth not-the-key");
    ck_assert_int_eq(r.answered, 401);

    /* running: exits 1 by itself, not retrying */
    start_ctl("--url %s report " STD_ARGS " --interval 1s", bases[0], fake_url, keyfile);
    ck_assert_int_eq(wait_ctl(8), 1);
    ck_assert_uint_eq(count("PATCH", 0), 2);

    write_key(KEY, 0600);
    ck_assert_int_eq(ctl("--url %s report --statuspage %s --page-id nope --component-id " COMPONENT
                         " --api-key-file '%s' --once",
                         bases[0], fake_url, keyfile),
                     1);
    assert_has(err_text, "no page nope or no component " COMPONENT
                         " on it: check --page-id and --component-id (404");
    ck_assert_int_eq(
        ctl("--url %s report " STD_ARGS " --once --metric-id nope", bases[0], fake_url, keyfile),
        1);
    assert_has(err_text, "no page " PAGE " or no metric nope on it");
    ck_assert_int_eq(ctl("--url %s report " STD_ARGS " --once", bases[0], fake_url, "/nonexistent"),
                     1);
    assert_has(err_text, "cannot open the API key file /nonexistent");
}
END_TEST

START_TEST(no_agent_answers)
{
    struct spfake_request r;
    char dead[64];
    double start;

    snprintf(dead, sizeof(dead), "http://127.0.0.1:%d", tu_free_port());
    ck_assert_int_eq(ctl("--url %s report " STD_ARGS " --once", dead, fake_url, keyfile), 1);
    assert_has(err_text, "no agent answered: nothing pushed");
    ck_assert_uint_eq(spfake_count(fake), 0);

    start = mono_s();
    start_ctl("--url %s report " STD_ARGS " --interval 1s", dead, fake_url, keyfile);
    await("PATCH", 200, 1, 8);
    r = nth("PATCH", 0);
    ck_assert_str_eq(patched(&r), "major_outage");
    ck_assert_msg(r.mono_s - start >= 1.8, "pushed %.3f s after start, before three polls",
                  r.mono_s - start);
    assert_has(ctl_log(), "no agent answered 3 polls in a row: reporting major_outage");
    ck_assert_int_eq(stop_ctl(), 0);
}
END_TEST

START_TEST(bad_arguments)
{
    static const char *const bad[] = {
        "report",
        "report --page-id " PAGE " --component-id " COMPONENT " --api-key-file k",
        "report --statuspage http://x --component-id " COMPONENT " --api-key-file k",
        "report --statuspage http://x --page-id " PAGE " --api-key-file k",
        "report --statuspage http://x --page-id " PAGE " --component-id " COMPONENT,
        "report --statuspage http://x --page-id " PAGE " --component-id " COMPONENT
        " --api-key-file k --interval 0.5s",
        "report --statuspage http://x --page-id " PAGE " --component-id " COMPONENT
        " --api-key-file k --interval soon",
        "report --statuspage http://x --page-id " PAGE " --component-id " COMPONENT
        " --api-key-file k --interval 2d",
        "report --statuspage http://x --page-id " PAGE " --component-id " COMPONENT
        " --api-key-file k --component disk",
        "report --statuspage http://x --page-id a/b --component-id " COMPONENT " --api-key-file k",
        "report --statuspage http://x --page-id " PAGE " --page-id " PAGE
        " --component-id " COMPONENT " --api-key-file k",
        "report --statuspage http://x --page-id " PAGE " --component-id " COMPONENT
        " --api-key-file k --json",
        "report --statuspage http://x --page-id " PAGE " --component-id " COMPONENT
        " --api-key-file k extra",
        "status --once",
        "status --statuspage http://x",
    };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = ctl("%s", bad[i]);
        ck_assert_msg(rc == 2, "\"%s\": exit %d", bad[i], rc);
        assert_has(err_text, "usage:");
    }
    ck_assert_int_eq(ctl("--help"), 0);
    assert_has(out_text, "report --statuspage URL --page-id ID --component-id ID");
    ck_assert_uint_eq(spfake_count(fake), 0);
}
END_TEST

/* The fake's own contract, so that what the tests above rely on is checked. */
static long
fake_call(const char *method, const char *path, const char *auth, const char *body)
{
    char url[256], hdr[300];
    struct curl_slist *h = NULL;
    CURL *c = curl_easy_init();
    long code = 0;
    FILE *sink = fopen("/dev/null", "w");

    ck_assert_ptr_nonnull(c);
    ck_assert_ptr_nonnull(sink);
    snprintf(url, sizeof(url), "%s%s", fake_url, path);
    h = curl_slist_append(h, "Content-Type: application/json");
    if (auth != NULL) {
        snprintf(hdr, sizeof(hdr), "Authorization: %s", auth);
        h = curl_slist_append(h, hdr);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, sink);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
    ck_assert_int_eq(curl_easy_perform(c), CURLE_OK);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    fclose(sink);
    return code;
}

START_TEST(fake_contract)
{
    const char *comp = "/v1/pages/" PAGE "/components/" COMPONENT;
    const char *ok = "{\"component\":{\"status\":\"degraded_performance\"}}";
    char st[64];

    ck_assert_int_eq(fake_call("PATCH", comp, NULL, ok), 401);
    ck_assert_int_eq(fake_call("PATCH", comp, "OAuth wrong", ok), 401);
    ck_assert_int_eq(fake_call("PATCH", "/v1/pages/other/components/" COMPONENT, "OAuth " KEY, ok),
                     404);
    ck_assert_int_eq(fake_call("PATCH", "/v1/pages/" PAGE "/components/other", "OAuth " KEY, ok),
                     404);
    ck_assert_int_eq(
        fake_call("PATCH", comp, "OAuth " KEY, "{\"component\":{\"status\":\"on_fire\"}}"), 422);
    ck_assert_int_eq(fake_call("PATCH", comp, "OAuth " KEY, "{}"), 400);
    spfake_component_status(fake, st, sizeof(st));
    ck_assert_str_eq(st, "");
    ck_assert_int_eq(fake_call("PATCH", comp, "OAuth " KEY, ok), 200);
    spfake_component_status(fake, st, sizeof(st));
    ck_assert_str_eq(st, "degraded_performance");
    ck_assert_int_eq(fake_call("POST", "/v1/pages/" PAGE "/metrics/" METRIC "/data", "OAuth " KEY,
                               "{\"data\":{\"timestamp\":1700000000,\"value\":1.5}}"),
                     201);
    ck_assert_int_eq(fake_call("POST", "/v1/pages/" PAGE "/metrics/other/data", "OAuth " KEY,
                               "{\"data\":{\"timestamp\":1700000000,\"value\":1.5}}"),
                     404);
    spfake_script(fake, 2, 429, "7");
    ck_assert_int_eq(fake_call("PATCH", comp, "OAuth " KEY, ok), 429);
    ck_assert_int_eq(fake_call("PATCH", comp, NULL, ok), 429); /* before the key is checked */
    ck_assert_int_eq(fake_call("PATCH", comp, "OAuth " KEY, ok), 200);
    ck_assert_uint_eq(spfake_count(fake), 12);
}
END_TEST

static Suite *
report_suite(void)
{
    Suite *s = suite_create("report");
    TCase *tc = tcase_create("report");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, fake_contract);
    tcase_add_test(tc, bad_arguments);
    tcase_add_test(tc, pushes_on_change);
    tcase_add_test(tc, component_and_agents);
    tcase_add_test(tc, rate_limited);
    tcase_add_test(tc, server_errors);
    tcase_add_test(tc, service_unreachable_at_first);
    tcase_add_test(tc, wrong_key_page_metric);
    tcase_add_test(tc, no_agent_answers);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr;
    int failed;

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return 1;
    if (access(CTL, X_OK) != 0)
        fprintf(stderr, "warning: %s is missing: build the walmirrorctl target\n", CTL);
    sr = srunner_create(report_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    curl_global_cleanup();
    return failed == 0 ? 0 : 1;
}
