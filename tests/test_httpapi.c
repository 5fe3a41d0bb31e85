/*
 * test_httpapi.c - Check suite for agent/httpapi.c (the agent's HTTP API) and for walmirrorctl
 * as a process against it.
 *
 * The API runs on 127.0.0.1 port 0 over a real status board; requests go through libcurl and
 * answers are parsed with jansson.  Covered: every snapshot field and its value, LSN text,
 * null for unknown lag, pause / resume reaching the board, 404 / 405 with Allow, JSON error
 * bodies, the loopback rule, bearer tokens (missing, wrong, right; bad token files), snapshots
 * published from another thread while requests read them (never torn), GET /metrics parsed
 * whole (syntax, HELP and TYPE for every family, histograms) with values set through the
 * board, the health checks /health, /primary, /standby?lag= (sizes, durations, bad
 * arguments), and walmirrorctl's table, JSON, unreachable agent, -c FILE, token and usage
 * errors.
 */
#include <check.h>
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "httpapi.h"
#include "status.h"
#include "testutil.h"

#define CTL WM_BINARY_DIR "/tools/walmirrorctl"

/* ---------------------------------------------------------------------------------------- */
/* Fixture: a board with a filled snapshot and the API on 127.0.0.1:0                         */

static struct status_board board;
static struct httpapi *api;
static char *dir;
static char base[64];

static void
fill_snapshot(struct status_snapshot *s)
{
    memset(s, 0, sizeof(*s));
    snprintf(s->node_name, sizeof(s->node_name), "site-a");
    snprintf(s->role, sizeof(s->role), "source");
    snprintf(s->pg_state, sizeof(s->pg_state), "primary");
    s->system_id = 7301234567890123456ULL;
    s->timeline = 3;
    s->epoch = 5;
    s->started_unix_us = 1700000000000000ULL;
    s->now_unix_us = 1700000012345678ULL;
    s->primary_lsn = 0x3000100;
    s->sent_lsn = 0x3000060;
    s->write_lsn = 0x10000002AULL;
    s->flush_lsn = 0x3000000;
    s->apply_lsn = 0;
    s->write_lag_bytes = 0xa0;
    s->flush_lag_bytes = 0x100;
    s->apply_lag_bytes = 0x3000100;
    s->write_lag_s = 0.25;
    s->flush_lag_s = -1;
    s->apply_lag_s = 1.5;
    snprintf(s->sync_state, sizeof(s->sync_state), "sync");
    snprintf(s->peer_name, sizeof(s->peer_name), "site-b");
    snprintf(s->peer_addr, sizeof(s->peer_addr), "127.0.0.1:7002");
    s->link_up = true;
    s->rtt_us = 420;
    s->wal_raw_bytes = 1000000;
    s->wal_wire_bytes = 400000;
    snprintf(s->wal_compression, sizeof(s->wal_compression), "lz4hc");
    s->failover_paused = false;
    snprintf(s->maintenance, sizeof(s->maintenance), "none");
    snprintf(s->last_error, sizeof(s->last_error), "link to site-b: reset");
    snprintf(s->operation, sizeof(s->operation), "switchover");
    snprintf(s->op_step, sizeof(s->op_step), "stopping the primary");
    s->op_id = 7;
    s->last_op_id = 6;
    snprintf(s->last_op, sizeof(s->last_op), "failover");
    s->last_op_ok = true;
    snprintf(s->last_op_result, sizeof(s->last_op_result), "site-a promoted");
    s->last_unavailability_us = 812345;
    s->switchovers = 3;
    s->scheduled_switchover_unix_us = 1800000000000000ULL;
    s->spool_free_bytes = 50LL << 30;
    s->cert_not_after_unix = 4102444800LL; /* 2100-01-01 */
    s->failovers = 1;
    snprintf(s->availability_mode, sizeof(s->availability_mode), "maximum_availability");
    s->exposed_since_unix_us = 1700000000500000ULL;
    s->exposed_lsn = 0x3000028;
    s->wal_at_risk_bytes = 123456;
    s->wal_at_risk_peak_bytes = 234567;
    s->exposed_seconds_total = 12.5;
    snprintf(s->arbiter, sizeof(s->arbiter), "witness");
    snprintf(s->arbiter_state, sizeof(s->arbiter_state), "up");
    snprintf(s->arbiter_desc, sizeof(s->arbiter_desc), "witness@127.0.0.1:7003 up, epoch 3");
}

static void
start_api(const char *token_file)
{
    struct status_snapshot s;
    char err[512];
    int rc;

    status_board_init(&board);
    fill_snapshot(&s);
    status_publish(&board, &s);
    rc = httpapi_start(&api, "127.0.0.1:0", token_file, &board, err, sizeof(err));
    ck_assert_msg(rc == 0, "httpapi_start: %d %s", rc, err);
    ck_assert_int_gt(httpapi_port(api), 0);
    snprintf(base, sizeof(base), "http://127.0.0.1:%d", httpapi_port(api));
}

static void
setup(void)
{
    dir = tu_tmpdir("httpapi");
    api = NULL;
    start_api(NULL);
}

static void
teardown(void)
{
    httpapi_stop(api);
    api = NULL;
    status_board_destroy(&board);
    tu_rmtree(dir);
    free(dir);
}

/* ---------------------------------------------------------------------------------------- */
/* An HTTP client                                                                            */

struct resp {
    long code;
    char body[65536];
    size_t len;
    char ctype[128];
    char allow[128];
    char www[128];
};

static size_t
on_body(char *data, size_t size, size_t nmemb, void *ud)
{
    struct resp *r = ud;
    size_t n = size * nmemb;

    if (r->len + n >= sizeof(r->body))
        return 0;
    memcpy(r->body + r->len, data, n);
    r->len += n;
    r->body[r->len] = '\0';
    return n;
}

static void
header_value(char *dst, size_t cap, const char *line, size_t n, const char *name)
{
    size_t k = strlen(name);

    if (n > k + 1 && strncasecmp(line, name, k) == 0 && line[k] == ':') {
        const char *v = line + k + 1;
        size_t vl = n - k - 1;
        while (vl > 0 && *v == ' ')
            v++, vl--;
        while (vl > 0 && (v[vl - 1] == '\r' || v[vl - 1] == '\n'))
            vl--;
        if (vl >= cap)
            vl = cap - 1;
        memcpy(dst, v, vl);
        dst[vl] = '\0';
    }
}

static size_t
on_header(char *data, size_t size, size_t nmemb, void *ud)
{
    struct resp *r = ud;
    size_t n = size * nmemb;

    header_value(r->ctype, sizeof(r->ctype), data, n, "Content-Type");
    header_value(r->allow, sizeof(r->allow), data, n, "Allow");
    header_value(r->www, sizeof(r->www), data, n, "WWW-Authenticate");
    return n;
}

/*
 * One request through libcurl.  method "GET", "POST" (no body and no Content-Type unless
 * headers give one; body: sent with it), or another sent as a custom method; src: the local
 * address to send from (NULL: any); headers: full header lines, NULL-terminated (NULL: none).
 */
static void
request_full(struct resp *r, const char *src, const char *method, const char *path,
             const char *body, const char *const *headers)
{
    char url[256], iface[64];
    struct curl_slist *h = NULL;
    CURL *c = curl_easy_init();
    CURLcode rc;

    memset(r, 0, sizeof(*r));
    ck_assert_ptr_nonnull(c);
    snprintf(url, sizeof(url), "%s%s", base, path);
    for (; headers != NULL && *headers != NULL; headers++) {
        h = curl_slist_append(h, *headers);
        ck_assert_ptr_nonnull(h);
    }
    if (strcmp(method, "POST") == 0 && body != NULL) {
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    } else if (strcmp(method, "GET") != 0) {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    }
    if (src != NULL) {
        snprintf(iface, sizeof(iface), "host!%s", src);
        curl_easy_setopt(c, CURLOPT_INTERFACE, iface);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    rc = curl_easy_perform(c);
    ck_assert_msg(rc == CURLE_OK, "%s %s: %s", method, url, curl_easy_strerror(rc));
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->code);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
}

/* method "GET" or "POST" (no body); auth: a full "Authorization: ..." header line, or NULL. */
static void
request(struct resp *r, const char *method, const char *path, const char *auth)
{
    const char *const headers[] = {auth, NULL};

    request_full(r, NULL, method, path, NULL, headers);
}

static json_t *
parse_object(const struct resp *r)
{
    json_error_t jerr;
    json_t *o = json_loadb(r->body, r->len, 0, &jerr);

    ck_assert_msg(o != NULL, "not JSON (%s): %s", jerr.text, r->body);
    ck_assert_msg(json_is_object(o), "not an object: %s", r->body);
    return o;
}

/* The "error" member of a JSON error body. */
static void
expect_json_error(const struct resp *r, const char *substr)
{
    json_t *o = parse_object(r);
    const char *msg = json_string_value(json_object_get(o, "error"));

    ck_assert_msg(msg != NULL, "no \"error\" in %s", r->body);
    ck_assert_msg(strstr(msg, substr) != NULL, "error \"%s\" lacks \"%s\"", msg, substr);
    ck_assert_str_eq(r->ctype, "application/json");
    json_decref(o);
}

static void
expect_int(const json_t *o, const char *key, long long v)
{
    const json_t *j = json_object_get(o, key);

    ck_assert_msg(json_is_integer(j), "%s is not an integer", key);
    ck_assert_msg(json_integer_value(j) == v, "%s = %lld, expected %lld", key,
                  (long long)json_integer_value(j), v);
}

static void
expect_str(const json_t *o, const char *key, const char *v)
{
    const char *s = json_string_value(json_object_get(o, key));

    ck_assert_msg(s != NULL, "%s is not a string", key);
    ck_assert_str_eq(s, v);
}

static void
expect_real(const json_t *o, const char *key, double v)
{
    const json_t *j = json_object_get(o, key);

    ck_assert_msg(json_is_number(j), "%s is not a number", key);
    ck_assert_double_eq_tol(json_number_value(j), v, 1e-9);
}

/* ---------------------------------------------------------------------------------------- */
/* The API                                                                                   */

START_TEST(status_fields)
{
    struct status_snapshot s;
    struct resp r;
    json_t *o;

    fill_snapshot(&s);
    snprintf(s.spool_stall, sizeof(s.spool_stall), "no space for the spool in /spool");
    s.spool_stalled_since_unix_us = 1700000000000000ULL;
    s.exposed = true;
    status_publish(&board, &s);
    request(&r, "GET", "/status", NULL);
    ck_assert_int_eq(r.code, 200);
    ck_assert_str_eq(r.ctype, "application/json");
    o = parse_object(&r);
    expect_str(o, "node_name", "site-a");
    expect_str(o, "role", "source");
    expect_str(o, "pg_state", "primary");
    expect_int(o, "system_id", 7301234567890123456LL);
    expect_int(o, "timeline", 3);
    expect_int(o, "epoch", 5);
    expect_int(o, "started_unix_us", 1700000000000000LL);
    expect_int(o, "now_unix_us", 1700000012345678LL);
    expect_int(o, "primary_lsn", 0x3000100);
    expect_str(o, "primary_lsn_text", "0/3000100");
    expect_int(o, "sent_lsn", 0x3000060);
    expect_str(o, "sent_lsn_text", "0/3000060");
    expect_int(o, "write_lsn", 0x10000002ALL);
    expect_str(o, "write_lsn_text", "1/2A");
    expect_int(o, "flush_lsn", 0x3000000);
    expect_str(o, "flush_lsn_text", "0/3000000");
    expect_int(o, "apply_lsn", 0);
    expect_str(o, "apply_lsn_text", "0/0");
    expect_int(o, "write_lag_bytes", 0xa0);
    expect_int(o, "flush_lag_bytes", 0x100);
    expect_int(o, "apply_lag_bytes", 0x3000100);
    expect_real(o, "write_lag_s", 0.25);
    ck_assert_msg(json_is_null(json_object_get(o, "flush_lag_s")), "unknown lag is not null");
    expect_real(o, "apply_lag_s", 1.5);
    expect_str(o, "sync_state", "sync");
    expect_str(o, "peer_name", "site-b");
    expect_str(o, "peer_addr", "127.0.0.1:7002");
    ck_assert(json_is_true(json_object_get(o, "link_up")));
    expect_int(o, "rtt_us", 420);
    expect_int(o, "wal_raw_bytes", 1000000);
    expect_int(o, "wal_wire_bytes", 400000);
    expect_str(o, "wal_compression", "lz4hc");
    ck_assert(json_is_false(json_object_get(o, "failover_paused")));
    expect_str(o, "maintenance", "none");
    expect_str(o, "last_error", "link to site-b: reset");
    expect_str(o, "operation", "switchover");
    expect_str(o, "op_step", "stopping the primary");
    expect_int(o, "op_id", 7);
    expect_int(o, "last_op_id", 6);
    expect_str(o, "last_op", "failover");
    ck_assert(json_is_true(json_object_get(o, "last_op_ok")));
    expect_str(o, "last_op_result", "site-a promoted");
    expect_int(o, "last_unavailability_us", 812345);
    expect_int(o, "switchovers", 3);
    expect_int(o, "failovers", 1);
    expect_int(o, "scheduled_switchover_unix_us", 1800000000000000LL);
    expect_int(o, "spool_free_bytes", 50LL << 30);
    expect_int(o, "cert_not_after_unix", 4102444800LL);
    expect_str(o, "spool_stall", "no space for the spool in /spool");
    expect_int(o, "spool_stalled_since_unix_us", 1700000000000000LL);
    expect_str(o, "availability_mode", "maximum_availability");
    ck_assert(json_is_true(json_object_get(o, "exposed")));
    ck_assert(json_is_false(json_object_get(o, "stale")));
    expect_int(o, "exposed_since_unix_us", 1700000000500000LL);
    expect_int(o, "exposed_lsn", 0x3000028);
    expect_str(o, "exposed_lsn_text", "0/3000028");
    expect_int(o, "wal_at_risk_bytes", 123456);
    expect_int(o, "wal_at_risk_peak_bytes", 234567);
    expect_real(o, "exposed_seconds_total", 12.5);
    expect_str(o, "arbiter", "witness");
    expect_str(o, "arbiter_state", "up");
    expect_str(o, "arbiter_desc", "witness@127.0.0.1:7003 up, epoch 3");
    /* every field of the snapshot, nothing more: 56 fields and 6 LSN texts */
    ck_assert_uint_eq(json_object_size(o), 62);
    json_decref(o);
}
END_TEST

START_TEST(status_edge_values)
{
    struct status_snapshot s;
    struct resp r;
    json_t *o;

    fill_snapshot(&s);
    s.system_id = 0xF000000000000001ULL; /* above INT64_MAX: a decimal string */
    s.sent_lsn = 0xFFFFFFFF00000001ULL;
    s.write_lag_s = -0.5;
    s.apply_lag_s = 0;
    memcpy(s.node_name, "site-\xff", 7);             /* not UTF-8 */
    memset(s.last_error, 'x', sizeof(s.last_error)); /* no NUL */
    memset(s.spool_stall, 'y', sizeof(s.spool_stall)); /* no NUL */
    status_publish(&board, &s);
    request(&r, "GET", "/status", NULL);
    ck_assert_int_eq(r.code, 200);
    o = parse_object(&r);
    expect_str(o, "system_id", "17293822569102704641");
    expect_str(o, "sent_lsn", "18446744069414584321");
    expect_str(o, "sent_lsn_text", "FFFFFFFF/1");
    ck_assert(json_is_null(json_object_get(o, "write_lag_s")));
    expect_real(o, "apply_lag_s", 0);
    expect_str(o, "node_name", "site-?");
    ck_assert_uint_eq(strlen(json_string_value(json_object_get(o, "last_error"))),
                      sizeof(s.last_error));
    ck_assert_uint_eq(strlen(json_string_value(json_object_get(o, "spool_stall"))),
                      sizeof(s.spool_stall));
    json_decref(o);
}
END_TEST

START_TEST(pause_resume)
{
    struct resp r;
    json_t *o;

    ck_assert_uint_eq(status_take(&board), 0);
    request(&r, "POST", "/pause", NULL);
    ck_assert_int_eq(r.code, 202);
    o = parse_object(&r);
    expect_str(o, "requested", "pause");
    expect_str(o, "node_name", "site-a");
    json_decref(o);
    ck_assert_uint_eq(status_take(&board), 1u << STATUS_REQ_PAUSE);
    ck_assert_uint_eq(status_take(&board), 0);

    request(&r, "POST", "/resume", NULL);
    ck_assert_int_eq(r.code, 202);
    o = parse_object(&r);
    expect_str(o, "requested", "resume");
    json_decref(o);
    ck_assert_uint_eq(status_take(&board), 1u << STATUS_REQ_RESUME);
}
END_TEST

START_TEST(operation_requests)
{
    struct status_op_request req;
    struct resp r;
    json_t *o;
    json_int_t id;

    ck_assert(!status_take_op(&board, &req));
    request(&r, "POST", "/switchover?to=site-b&max_lag=1048576", NULL);
    ck_assert_int_eq(r.code, 202);
    o = parse_object(&r);
    expect_str(o, "requested", "switchover");
    id = json_integer_value(json_object_get(o, "id"));
    ck_assert_int_gt(id, 0);
    json_decref(o);
    ck_assert(status_take_op(&board, &req));
    ck_assert_int_eq(req.kind, STATUS_REQ_SWITCHOVER);
    ck_assert_uint_eq(req.id, (uint64_t)id);
    ck_assert_str_eq(req.target, "site-b");
    ck_assert_uint_eq(req.max_lag_bytes, 1048576);
    ck_assert_uint_eq(req.at_unix_us, 0);
    ck_assert(!status_take_op(&board, &req)); /* taken once */

    request(&r, "POST", "/failover?force=1", NULL);
    ck_assert_int_eq(r.code, 202);
    ck_assert(status_take_op(&board, &req));
    ck_assert_int_eq(req.kind, STATUS_REQ_FAILOVER);
    ck_assert(req.force);
    ck_assert_uint_gt(req.id, (uint64_t)id); /* ids only grow */

    request(&r, "POST", "/rejoin", NULL);
    ck_assert_int_eq(r.code, 202);
    ck_assert(status_take_op(&board, &req));
    ck_assert_int_eq(req.kind, STATUS_REQ_REJOIN);

    request(&r, "POST", "/switchover?at=1800000000", NULL);
    ck_assert_int_eq(r.code, 202);
    ck_assert(status_take_op(&board, &req));
    ck_assert_uint_eq(req.at_unix_us, 1800000000000000ULL);
    request(&r, "POST", "/switchover?at=tomorrow", NULL);
    ck_assert_int_eq(r.code, 400);
    expect_json_error(&r, "at: seconds");
    request(&r, "POST", "/switchover?max_lag=lots", NULL);
    ck_assert_int_eq(r.code, 400);
    expect_json_error(&r, "max_lag");
    /* the target is checked when asked: the two sites' names, not this primary itself */
    request(&r, "POST", "/switchover?to=nowhere", NULL);
    ck_assert_int_eq(r.code, 400);
    expect_json_error(&r, "to: unknown node \"nowhere\" (the nodes are site-a, this one, and "
                          "site-b)");
    request(&r, "POST", "/switchover?to=site-a", NULL);
    ck_assert_int_eq(r.code, 400);
    expect_json_error(&r, "to: site-a is this node, the primary already");
    request(&r, "GET", "/failover", NULL);
    ck_assert_int_eq(r.code, 405);
    ck_assert(!status_take_op(&board, &req));
}
END_TEST

/*
 * Requests that change something refuse what a web page could send: a foreign Origin (403), a
 * form or text Content-Type (415: the types a browser sends cross-site without a preflight).
 * Nothing reaches the board then.
 */
START_TEST(cross_site_refused)
{
    struct status_op_request req;
    char same[128], host[128], rebound[128], rebound_host[128];
    struct resp r;

    snprintf(same, sizeof(same), "Origin: http://127.0.0.1:%d", httpapi_port(api));
    snprintf(host, sizeof(host), "Host: 127.0.0.1:%d", httpapi_port(api));
    snprintf(rebound, sizeof(rebound), "Origin: http://evil.example:%d", httpapi_port(api));
    snprintf(rebound_host, sizeof(rebound_host), "Host: evil.example:%d", httpapi_port(api));
    {
        /* the request: curl -X POST -H 'Origin: http://evil.example'
         * -H 'Content-Type: text/plain' .../pause */
        const char *const hd[] = {"Origin: http://evil.example", "Content-Type: text/plain", NULL};
        request_full(&r, NULL, "POST", "/pause", "", hd);
        ck_assert_int_eq(r.code, 403);
        expect_json_error(&r, "cross-site request refused: Origin http://evil.example");
    }
    {
        const char *const hd[] = {"Origin: null", NULL};
        request_full(&r, NULL, "POST", "/resume", NULL, hd);
        ck_assert_int_eq(r.code, 403);
    }
    {
        /* DNS rebinding: the page's origin and Host agree, but name no address */
        const char *const hd[] = {rebound, rebound_host, NULL};
        request_full(&r, NULL, "POST", "/pause", NULL, hd);
        ck_assert_int_eq(r.code, 403);
    }
    {
        static const char *const types[] = {"Content-Type: text/plain",
                                            "Content-Type: application/x-www-form-urlencoded",
                                            "Content-Type: multipart/form-data; boundary=x",
                                            "Content-Type: TEXT/PLAIN;charset=UTF-8"};
        for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
            const char *const hd[] = {types[i], NULL};
            request_full(&r, NULL, "POST", "/switchover?to=site-b", "", hd);
            ck_assert_msg(r.code == 415, "%s: %ld", types[i], r.code);
            expect_json_error(&r, "is not accepted: this request takes no body");
        }
    }
    {
        const char *const hd[] = {"Origin: http://evil.example", NULL};
        request_full(&r, NULL, "DELETE", "/maintenance/1", NULL, hd);
        ck_assert_int_eq(r.code, 403);
        request_full(&r, NULL, "POST", "/maintenance?at=2099-01-01%2002:00&duration=1h&tz=UTC",
                     NULL, hd);
        ck_assert_int_eq(r.code, 403);
    }
    ck_assert_uint_eq(status_take(&board), 0);
    ck_assert(!status_take_op(&board, &req));

    /* what walmirrorctl and curl send: no body, or JSON; the API's own origin by address */
    {
        const char *const hd[] = {"Content-Type: application/json; charset=utf-8", NULL};
        request_full(&r, NULL, "POST", "/pause", "", hd);
        ck_assert_int_eq(r.code, 202);
    }
    {
        const char *const hd[] = {same, host, NULL};
        request_full(&r, NULL, "POST", "/resume", NULL, hd);
        ck_assert_int_eq(r.code, 202);
    }
    request(&r, "POST", "/rejoin", NULL);
    ck_assert_int_eq(r.code, 202);
    ck_assert_uint_eq(status_take(&board), (1u << STATUS_REQ_PAUSE) | (1u << STATUS_REQ_RESUME));
    ck_assert(status_take_op(&board, &req));
    /* reads stay open to any page, as before: they change nothing */
    {
        const char *const hd[] = {"Origin: http://evil.example", NULL};
        request_full(&r, NULL, "GET", "/status", NULL, hd);
        ck_assert_int_eq(r.code, 200);
    }
}
END_TEST

START_TEST(wrong_method_and_path)
{
    struct resp r;

    request(&r, "GET", "/pause", NULL);
    ck_assert_int_eq(r.code, 405);
    ck_assert_str_eq(r.allow, "POST");
    expect_json_error(&r, "POST");
    request(&r, "GET", "/resume", NULL);
    ck_assert_int_eq(r.code, 405);
    ck_assert_str_eq(r.allow, "POST");
    request(&r, "POST", "/status", NULL);
    ck_assert_int_eq(r.code, 405);
    ck_assert_str_eq(r.allow, "GET, HEAD");
    expect_json_error(&r, "GET");
    request(&r, "DELETE", "/status", NULL);
    ck_assert_int_eq(r.code, 405);
    ck_assert_uint_eq(status_take(&board), 0); /* nothing was requested */

    request(&r, "GET", "/nope", NULL);
    ck_assert_int_eq(r.code, 404);
    expect_json_error(&r, "no such endpoint");
    request(&r, "POST", "/pause/", NULL);
    ck_assert_int_eq(r.code, 404);
    request(&r, "GET", "/status?x=1", NULL); /* the query string is not part of the path */
    ck_assert_int_eq(r.code, 200);
    ck_assert_uint_eq(status_take(&board), 0);
}
END_TEST

START_TEST(loopback_rule)
{
    static const char *const open_addrs[] = {"0.0.0.0:0", "192.0.2.1:0", "[::]:0"};
    struct httpapi *h = (struct httpapi *)1;
    char err[512], want[256];
    int rc;

    for (size_t i = 0; i < sizeof(open_addrs) / sizeof(open_addrs[0]); i++) {
        err[0] = '\0';
        rc = httpapi_start(&h, open_addrs[i], NULL, &board, err, sizeof(err));
        ck_assert_int_lt(rc, 0);
        ck_assert_ptr_null(h);
        snprintf(want, sizeof(want),
                 "http_listen %s is not a loopback address: set http_token_file", open_addrs[i]);
        ck_assert_str_eq(err, want);
    }
    /* malformed addresses */
    rc = httpapi_start(&h, "localhost", NULL, &board, err, sizeof(err));
    ck_assert_int_eq(rc, -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "host:port"));
    rc = httpapi_start(&h, "::1:80", NULL, &board, err, sizeof(err));
    ck_assert_int_eq(rc, -EINVAL);
    rc = httpapi_start(&h, "127.0.0.1:65536", NULL, &board, err, sizeof(err));
    ck_assert_int_eq(rc, -EINVAL);
    /* the port is taken: a clear failure */
    snprintf(want, sizeof(want), "127.0.0.1:%d", httpapi_port(api));
    rc = httpapi_start(&h, want, NULL, &board, err, sizeof(err));
    ck_assert_int_eq(rc, -EADDRINUSE);
    ck_assert_ptr_nonnull(strstr(err, want));
    ck_assert_ptr_nonnull(strstr(err, "Address already in use"));
}
END_TEST

START_TEST(ipv6_loopback)
{
    struct httpapi *h;
    struct resp r;
    char err[512];
    int rc = httpapi_start(&h, "[::1]:0", NULL, &board, err, sizeof(err));

    if (rc == -EAFNOSUPPORT || rc == -EADDRNOTAVAIL) {
        fprintf(stderr, "ipv6_loopback: no IPv6 loopback here (%s), skipped\n", err);
        return;
    }
    ck_assert_msg(rc == 0, "%d %s", rc, err);
    snprintf(base, sizeof(base), "http://[::1]:%d", httpapi_port(h));
    request(&r, "GET", "/status", NULL);
    ck_assert_int_eq(r.code, 200);
    httpapi_stop(h);
}
END_TEST

static const char *
write_token(const char *name, const char *text, mode_t mode)
{
    static char path[4096];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_ge(fputs(text, f), 0);
    ck_assert_int_eq(fclose(f), 0);
    ck_assert_int_eq(chmod(path, mode), 0);
    return path;
}

START_TEST(token_required)
{
    struct resp r;
    json_t *o;

    httpapi_stop(api);
    start_api(write_token("token", "s3cret-Token_1\n", 0600));

    request(&r, "GET", "/status", NULL);
    ck_assert_int_eq(r.code, 401);
    ck_assert_ptr_nonnull(strstr(r.www, "Bearer"));
    expect_json_error(&r, "token");
    request(&r, "GET", "/status", "Authorization: Bearer s3cret-Token_2");
    ck_assert_int_eq(r.code, 401);
    request(&r, "GET", "/status", "Authorization: Bearer s3cret-Token_1x");
    ck_assert_int_eq(r.code, 401);
    request(&r, "GET", "/status", "Authorization: Basic czNjcmV0LVRva2VuXzE=");
    ck_assert_int_eq(r.code, 401);
    request(&r, "GET", "/nope", NULL); /* no token: no hint about which paths exist */
    ck_assert_int_eq(r.code, 401);
    request(&r, "POST", "/pause", "Authorization: Bearer wrong");
    ck_assert_int_eq(r.code, 401);
    ck_assert_uint_eq(status_take(&board), 0);

    request(&r, "GET", "/status", "Authorization: Bearer s3cret-Token_1");
    ck_assert_int_eq(r.code, 200);
    o = parse_object(&r);
    expect_str(o, "node_name", "site-a");
    json_decref(o);
    request(&r, "POST", "/pause", "Authorization: Bearer s3cret-Token_1");
    ck_assert_int_eq(r.code, 202);
    ck_assert_uint_eq(status_take(&board), 1u << STATUS_REQ_PAUSE);
}
END_TEST

START_TEST(token_file_checks)
{
    struct httpapi *h = NULL;
    char err[512], path[4096];
    int rc;

    /* a token makes a non-loopback address acceptable (192.0.2.1 cannot be bound: the failure
     * comes from binding, not from the loopback rule) */
    rc = httpapi_start(&h, "192.0.2.1:0", write_token("t0", "abc\n", 0600), &board, err,
                       sizeof(err));
    ck_assert_int_lt(rc, 0);
    ck_assert_ptr_null(strstr(err, "loopback"));

    rc = httpapi_start(&h, "127.0.0.1:0", write_token("t1", "\n \n", 0600), &board, err,
                       sizeof(err));
    ck_assert_int_eq(rc, -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "empty"));
    rc = httpapi_start(&h, "127.0.0.1:0", write_token("t2", "abc\n", 0644), &board, err,
                       sizeof(err));
    ck_assert_int_lt(rc, 0);
    ck_assert_ptr_nonnull(strstr(err, "other users"));
    rc = httpapi_start(&h, "127.0.0.1:0", write_token("t3", "a b\n", 0600), &board, err,
                       sizeof(err));
    ck_assert_int_eq(rc, -EINVAL);
    {
        char long_token[5001];
        memset(long_token, 'k', 5000);
        long_token[5000] = '\0';
        rc = httpapi_start(&h, "127.0.0.1:0", write_token("t4", long_token, 0600), &board, err,
                           sizeof(err));
        ck_assert_int_eq(rc, -EINVAL);
        ck_assert_ptr_nonnull(strstr(err, "longer than"));
    }
    snprintf(path, sizeof(path), "%s/missing", dir);
    rc = httpapi_start(&h, "127.0.0.1:0", path, &board, err, sizeof(err));
    ck_assert_int_eq(rc, -ENOENT);
    ck_assert_ptr_nonnull(strstr(err, "missing"));
    ck_assert_ptr_null(h);
}
END_TEST

/* Snapshots whose every field holds the same counter, published as fast as possible. */
static atomic_bool publishing;

static void *
publisher(void *arg)
{
    struct status_snapshot s;

    (void)arg;
    for (uint64_t k = 1000; atomic_load(&publishing); k++) {
        memset(&s, 0, sizeof(s));
        snprintf(s.node_name, sizeof(s.node_name), "n%" PRIu64, k);
        snprintf(s.last_error, sizeof(s.last_error), "e%" PRIu64, k);
        s.system_id = s.epoch = s.started_unix_us = s.now_unix_us = k;
        s.timeline = (uint32_t)k;
        s.primary_lsn = s.sent_lsn = s.write_lsn = s.flush_lsn = s.apply_lsn = k;
        s.write_lag_bytes = s.flush_lag_bytes = s.apply_lag_bytes = k;
        s.write_lag_s = s.flush_lag_s = s.apply_lag_s = (double)k;
        s.rtt_us = s.wal_raw_bytes = s.wal_wire_bytes = k;
        s.link_up = s.failover_paused = (k & 1) != 0;
        status_publish(&board, &s);
    }
    return NULL;
}

START_TEST(no_torn_snapshot)
{
    static const char *const ints[] = {
        "system_id",       "epoch",       "started_unix_us", "now_unix_us",
        "timeline",        "primary_lsn", "sent_lsn",        "write_lsn",
        "flush_lsn",       "apply_lsn",   "write_lag_bytes", "flush_lag_bytes",
        "apply_lag_bytes", "rtt_us",      "wal_raw_bytes",   "wal_wire_bytes"};
    static const char *const reals[] = {"write_lag_s", "flush_lag_s", "apply_lag_s"};
    pthread_t t;
    struct resp r;
    long long first = 0, last = 0;
    char want[64];

    atomic_store(&publishing, true);
    ck_assert_int_eq(pthread_create(&t, NULL, publisher, NULL), 0);
    for (int i = 0; i < 200; i++) {
        json_t *o;
        long long k;

        request(&r, "GET", "/status", NULL);
        ck_assert_int_eq(r.code, 200);
        o = parse_object(&r);
        k = json_integer_value(json_object_get(o, "epoch"));
        if (first == 0)
            first = k;
        last = k;
        if (k == 5) { /* the fixture's snapshot, before the first publication */
            json_decref(o);
            continue;
        }
        for (size_t f = 0; f < sizeof(ints) / sizeof(ints[0]); f++)
            expect_int(o, ints[f], k);
        for (size_t f = 0; f < sizeof(reals) / sizeof(reals[0]); f++)
            expect_real(o, reals[f], (double)k);
        snprintf(want, sizeof(want), "n%lld", k);
        expect_str(o, "node_name", want);
        snprintf(want, sizeof(want), "e%lld", k);
        expect_str(o, "last_error", want);
        ck_assert_int_eq(json_is_true(json_object_get(o, "link_up")), (k & 1) != 0);
        ck_assert_int_eq(json_is_true(json_object_get(o, "failover_paused")), (k & 1) != 0);
        json_decref(o);
    }
    atomic_store(&publishing, false);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    /* the reads did see a moving board */
    ck_assert_msg(last > first, "the snapshot never changed (%lld..%lld)", first, last);
}
END_TEST

/* ---------------------------------------------------------------------------------------- */
/* GET /metrics: the whole exposition parsed                                                  */

#define MAX_FAMILIES 64
#define MAX_SAMPLES 256

struct family_t {
    char name[128];
    char type[16];
    bool help;
};

struct sample_t {
    char key[256]; /* name{labels} exactly as written */
    char name[128];
    char le[32]; /* the le label of a histogram bucket, "" otherwise */
    double value;
};

struct exposition {
    struct family_t fam[MAX_FAMILIES];
    int nfam;
    struct sample_t smp[MAX_SAMPLES];
    int nsmp;
};

static struct family_t *
find_family(struct exposition *e, const char *name)
{
    for (int i = 0; i < e->nfam; i++)
        if (strcmp(e->fam[i].name, name) == 0)
            return &e->fam[i];
    return NULL;
}

static struct family_t *
add_family(struct exposition *e, const char *name)
{
    struct family_t *f = find_family(e, name);

    if (f != NULL)
        return f;
    ck_assert_int_lt(e->nfam, MAX_FAMILIES);
    f = &e->fam[e->nfam++];
    ck_assert_uint_lt(strlen(name), sizeof(f->name));
    memcpy(f->name, name, strlen(name) + 1);
    return f;
}

static bool
name_char(char ch, bool first)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_' || ch == ':' ||
           (!first && ch >= '0' && ch <= '9');
}

/* Parses one sample line "name{labels} value" strictly; fails the test otherwise. */
static void
parse_sample(struct exposition *e, const char *line)
{
    struct sample_t *sm;
    const char *p = line, *vstart;
    char *end;

    ck_assert_int_lt(e->nsmp, MAX_SAMPLES);
    sm = &e->smp[e->nsmp++];
    memset(sm, 0, sizeof(*sm));
    ck_assert_msg(name_char(*p, true), "bad metric name: %s", line);
    while (name_char(*p, false))
        p++;
    ck_assert_uint_lt((size_t)(p - line), sizeof(sm->name));
    memcpy(sm->name, line, (size_t)(p - line));
    if (*p == '{') {
        p++;
        while (*p != '}') {
            const char *ln = p;
            char lname[64], val[128];
            size_t vn = 0;

            ck_assert_msg(name_char(*p, true), "bad label name: %s", line);
            while (name_char(*p, false))
                p++;
            ck_assert_uint_lt((size_t)(p - ln), sizeof(lname));
            memcpy(lname, ln, (size_t)(p - ln));
            lname[p - ln] = '\0';
            ck_assert_msg(p[0] == '=' && p[1] == '"', "bad label: %s", line);
            p += 2;
            while (*p != '"') {
                ck_assert_msg(*p != '\0' && *p != '\n', "unterminated label value: %s", line);
                if (*p == '\\') {
                    p++;
                    ck_assert_msg(*p == '\\' || *p == '"' || *p == 'n', "bad escape: %s", line);
                }
                ck_assert_uint_lt(vn, sizeof(val) - 1);
                val[vn++] = *p++;
            }
            val[vn] = '\0';
            p++;
            if (strcmp(lname, "le") == 0) {
                ck_assert_uint_lt(vn, sizeof(sm->le));
                memcpy(sm->le, val, vn + 1);
            }
            if (*p == ',')
                p++;
            else
                ck_assert_msg(*p == '}', "bad label list: %s", line);
        }
        p++;
    }
    ck_assert_uint_lt((size_t)(p - line), sizeof(sm->key));
    memcpy(sm->key, line, (size_t)(p - line));
    ck_assert_msg(*p == ' ', "no value: %s", line);
    vstart = ++p;
    if (strcmp(vstart, "+Inf") == 0)
        sm->value = INFINITY;
    else if (strcmp(vstart, "-Inf") == 0)
        sm->value = -INFINITY;
    else {
        sm->value = strtod(vstart, &end);
        ck_assert_msg(end != vstart && *end == '\0', "bad value: %s", line);
    }
}

/* Parses the whole text: every line a # HELP / # TYPE / comment or a sample; every sample's
 * family has a TYPE; histogram buckets grow and end with +Inf = _count. */
static void
parse_exposition(struct exposition *e, char *text)
{
    char *save = NULL;

    memset(e, 0, sizeof(*e));
    ck_assert_msg(text[0] != '\0' && text[strlen(text) - 1] == '\n', "no final newline");
    for (char *line = strtok_r(text, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        char name[128], rest[512];

        if (line[0] == '#') {
            if (sscanf(line, "# TYPE %127s %511s", name, rest) == 2) {
                struct family_t *f = add_family(e, name);
                ck_assert_msg(f->type[0] == '\0', "two TYPE lines for %s", name);
                ck_assert_msg(strcmp(rest, "counter") == 0 || strcmp(rest, "gauge") == 0 ||
                                  strcmp(rest, "histogram") == 0,
                              "type %s", rest);
                ck_assert_uint_lt(strlen(rest), sizeof(f->type));
                memcpy(f->type, rest, strlen(rest) + 1);
            } else if (sscanf(line, "# HELP %127s %511[^\n]", name, rest) == 2) {
                add_family(e, name)->help = true;
            }
            continue;
        }
        parse_sample(e, line);
    }
    for (int i = 0; i < e->nsmp; i++) {
        struct sample_t *sm = &e->smp[i];
        struct family_t *f = find_family(e, sm->name);
        char stem[128];
        size_t n = strlen(sm->name);

        ck_assert_msg(strncmp(sm->name, "walmirror_", 10) == 0, "%s lacks the prefix", sm->name);
        if (f == NULL || f->type[0] == '\0') {
            static const char *const sfx[] = {"_bucket", "_sum", "_count"};
            for (size_t k = 0; k < 3 && f == NULL; k++) {
                size_t sl = strlen(sfx[k]);
                if (n > sl && strcmp(sm->name + n - sl, sfx[k]) == 0) {
                    snprintf(stem, sizeof(stem), "%.*s", (int)(n - sl), sm->name);
                    f = find_family(e, stem);
                }
            }
            ck_assert_msg(f != NULL && strcmp(f->type, "histogram") == 0, "%s has no TYPE",
                          sm->name);
        }
        ck_assert_msg(f->help, "%s has no HELP", f->name);
        if (strcmp(f->type, "counter") == 0)
            ck_assert_msg(n > 6 && strcmp(sm->name + n - 6, "_total") == 0,
                          "counter %s without _total", sm->name);
    }
    /* histograms */
    for (int i = 0; i < e->nfam; i++) {
        char bucket[160], count[160];
        double last_le = -INFINITY, last_v = 0, count_v = -1;
        bool ended = false;
        int nb = 0;

        if (strcmp(e->fam[i].type, "histogram") != 0)
            continue;
        snprintf(bucket, sizeof(bucket), "%s_bucket", e->fam[i].name);
        snprintf(count, sizeof(count), "%s_count", e->fam[i].name);
        for (int k = 0; k < e->nsmp; k++) {
            struct sample_t *sm = &e->smp[k];
            if (strcmp(sm->name, count) == 0)
                count_v = sm->value;
            if (strcmp(sm->name, bucket) != 0)
                continue;
            double le = strcmp(sm->le, "+Inf") == 0 ? INFINITY : strtod(sm->le, NULL);
            ck_assert_msg(!ended, "%s: a bucket after +Inf", bucket);
            ck_assert_msg(le > last_le, "%s: le not increasing at %s", bucket, sm->le);
            ck_assert_msg(sm->value >= last_v, "%s: counts not monotonic at %s", bucket, sm->le);
            last_le = le;
            last_v = sm->value;
            ended = isinf(le);
            nb++;
        }
        ck_assert_msg(nb > 1 && ended, "%s: no +Inf bucket", bucket);
        ck_assert_msg(count_v == last_v, "%s: +Inf %g != _count %g", bucket, last_v, count_v);
    }
}

/* The value of the sample written exactly as key; fails if absent. */
static double
sample(struct exposition *e, const char *key)
{
    for (int i = 0; i < e->nsmp; i++)
        if (strcmp(e->smp[i].key, key) == 0)
            return e->smp[i].value;
    ck_abort_msg("no sample %s", key);
    return 0;
}

static bool
has_sample(struct exposition *e, const char *key)
{
    for (int i = 0; i < e->nsmp; i++)
        if (strcmp(e->smp[i].key, key) == 0)
            return true;
    return false;
}

START_TEST(metrics_exposition)
{
    static struct exposition e;
    struct status_snapshot *s = calloc(1, sizeof(*s));
    struct status_metrics *m;
    struct resp r;

    ck_assert_ptr_nonnull(s);
    fill_snapshot(s);
    m = &s->metrics;
    s->started_unix_us = 1700000000123456ULL;
    snprintf(s->peer_name, sizeof(s->peer_name), "site-\"b\"\\");
    /* fsync: 0.7 ms, 3 ms, 2 s and 5 s (beyond the last bound) */
    status_hist_observe(&m->hist[STATUS_HIST_FSYNC], STATUS_HIST_FSYNC, 0.0007);
    status_hist_observe(&m->hist[STATUS_HIST_FSYNC], STATUS_HIST_FSYNC, 0.003);
    status_hist_observe(&m->hist[STATUS_HIST_FSYNC], STATUS_HIST_FSYNC, 2);
    status_hist_observe(&m->hist[STATUS_HIST_FSYNC], STATUS_HIST_FSYNC, 5);
    status_hist_observe(&m->hist[STATUS_HIST_FSYNC], STATUS_HIST_FSYNC, -1); /* ignored */
    status_hist_observe(&m->hist[STATUS_HIST_ACK_RTT], STATUS_HIST_ACK_RTT, 0.0004);
    status_hist_observe(&m->hist[STATUS_HIST_UNAVAIL], STATUS_HIST_UNAVAIL, 0.45);
    status_hist_observe(&m->hist[STATUS_HIST_UNAVAIL], STATUS_HIST_UNAVAIL, 3.2);
    m->acks = 1234;
    m->wal_raw_total = 5000000; /* all links; the snapshot's 1000000 is the current one */
    m->wal_wire_total = 2000000;
    status_publish(&board, s);

    request(&r, "GET", "/metrics", NULL);
    ck_assert_int_eq(r.code, 200);
    ck_assert_str_eq(r.ctype, "text/plain; version=0.0.4; charset=utf-8");
    /* the start time to the microsecond, as text (before parsing cuts the body up) */
    ck_assert_msg(strstr(r.body, "\nwalmirror_start_time_seconds 1700000000.123456\n") != NULL,
                  "no exact start time: %.80s",
                  strstr(r.body, "\nwalmirror_start_time_seconds ") != NULL
                      ? strstr(r.body, "\nwalmirror_start_time_seconds ") + 1
                      : "(none)");
    parse_exposition(&e, r.body);

    ck_assert(has_sample(&e, "walmirror_info{node=\"site-a\",peer=\"site-\\\"b\\\"\\\\\"}"));
    ck_assert_double_eq(sample(&e, "walmirror_role{role=\"source\"}"), 1);
    ck_assert_double_eq(sample(&e, "walmirror_role{role=\"sink\"}"), 0);
    ck_assert_double_eq(sample(&e, "walmirror_role{role=\"fenced\"}"), 0);
    ck_assert_double_eq(sample(&e, "walmirror_epoch"), 5);
    ck_assert_double_eq(sample(&e, "walmirror_timeline"), 3);
    ck_assert_double_eq(sample(&e, "walmirror_lsn_bytes{position=\"primary\"}"), 0x3000100);
    ck_assert_double_eq(sample(&e, "walmirror_lsn_bytes{position=\"write\"}"), 0x10000002AULL);
    ck_assert_double_eq(sample(&e, "walmirror_lsn_bytes{position=\"apply\"}"), 0);
    ck_assert_double_eq(sample(&e, "walmirror_lag_bytes{stage=\"flush\"}"), 0x100);
    ck_assert_double_eq(sample(&e, "walmirror_lag_bytes{stage=\"apply\"}"), 0x3000100);
    ck_assert_double_eq_tol(sample(&e, "walmirror_lag_seconds{stage=\"write\"}"), 0.25, 1e-9);
    ck_assert(!has_sample(&e, "walmirror_lag_seconds{stage=\"flush\"}")); /* unknown */
    ck_assert_double_eq_tol(sample(&e, "walmirror_lag_seconds{stage=\"apply\"}"), 1.5, 1e-9);
    ck_assert_double_eq(sample(&e, "walmirror_sync_state{state=\"sync\"}"), 1);
    ck_assert_double_eq(sample(&e, "walmirror_sync_state{state=\"down\"}"), 0);
    ck_assert_double_eq(sample(&e, "walmirror_link_up"), 1);
    ck_assert_double_eq_tol(sample(&e, "walmirror_link_rtt_seconds"), 0.00042, 1e-12);
    ck_assert_double_eq(sample(&e, "walmirror_wal_raw_bytes_total"), 5000000);
    ck_assert_double_eq(sample(&e, "walmirror_wal_wire_bytes_total"), 2000000);
    ck_assert_double_eq(sample(&e, "walmirror_wal_compression_hc"), 1);
    ck_assert_double_eq(sample(&e, "walmirror_acks_total"), 1234);
    ck_assert_double_eq(sample(&e, "walmirror_switchovers_total"), 3);
    ck_assert_double_eq(sample(&e, "walmirror_failovers_total"), 1);
    ck_assert_double_eq_tol(sample(&e, "walmirror_last_write_unavailability_seconds"), 0.812345,
                            1e-9);
    ck_assert_double_eq(sample(&e, "walmirror_operation_running"), 1);
    ck_assert_double_eq(sample(&e, "walmirror_failover_paused"), 0);
    ck_assert_double_eq(sample(&e, "walmirror_maintenance"), 0);
    /* what /status shows of the spool's space and the certificate, here too */
    ck_assert_double_eq(sample(&e, "walmirror_spool_free_bytes"), 50.0 * (1 << 30));
    ck_assert_double_eq(sample(&e, "walmirror_cert_expiry_timestamp_seconds"), 4102444800.0);
    /* the fsync histogram: cumulative, the 5 s observation only in +Inf */
    ck_assert_double_eq(sample(&e, "walmirror_spool_fsync_duration_seconds_bucket{le=\"0.0005\"}"),
                        0);
    ck_assert_double_eq(sample(&e, "walmirror_spool_fsync_duration_seconds_bucket{le=\"0.001\"}"),
                        1);
    ck_assert_double_eq(sample(&e, "walmirror_spool_fsync_duration_seconds_bucket{le=\"0.005\"}"),
                        2);
    ck_assert_double_eq(sample(&e, "walmirror_spool_fsync_duration_seconds_bucket{le=\"2.5\"}"), 3);
    ck_assert_double_eq(sample(&e, "walmirror_spool_fsync_duration_seconds_bucket{le=\"+Inf\"}"),
                        4);
    ck_assert_double_eq(sample(&e, "walmirror_spool_fsync_duration_seconds_count"), 4);
    ck_assert_double_eq_tol(sample(&e, "walmirror_spool_fsync_duration_seconds_sum"), 7.0037, 1e-9);
    ck_assert_double_eq(sample(&e, "walmirror_ack_round_trip_seconds_bucket{le=\"0.0005\"}"), 1);
    ck_assert_double_eq(sample(&e, "walmirror_write_unavailability_seconds_bucket{le=\"0.5\"}"), 1);
    ck_assert_double_eq(sample(&e, "walmirror_write_unavailability_seconds_bucket{le=\"5\"}"), 2);
    ck_assert_double_eq(sample(&e, "walmirror_write_unavailability_seconds_count"), 2);

    /* a sink with a maintenance window open, no unavailability yet */
    snprintf(s->role, sizeof(s->role), "sink");
    snprintf(s->maintenance, sizeof(s->maintenance), "active: monthly window");
    s->last_unavailability_us = -1;
    status_publish(&board, s);
    request(&r, "GET", "/metrics", NULL);
    ck_assert_int_eq(r.code, 200);
    parse_exposition(&e, r.body);
    ck_assert_double_eq(sample(&e, "walmirror_role{role=\"sink\"}"), 1);
    ck_assert_double_eq(sample(&e, "walmirror_role{role=\"source\"}"), 0);
    ck_assert_double_eq(sample(&e, "walmirror_maintenance"), 1);
    ck_assert(!has_sample(&e, "walmirror_last_write_unavailability_seconds"));
    /* unknown space and certificate: absent, as an unknown lag in seconds */
    s->spool_free_bytes = -1;
    s->cert_not_after_unix = -1;
    status_publish(&board, s);
    request(&r, "GET", "/metrics", NULL);
    parse_exposition(&e, r.body);
    ck_assert(!has_sample(&e, "walmirror_spool_free_bytes"));
    ck_assert(!has_sample(&e, "walmirror_cert_expiry_timestamp_seconds"));

    request(&r, "POST", "/metrics", NULL);
    ck_assert_int_eq(r.code, 405);
    ck_assert_str_eq(r.allow, "GET, HEAD");
    free(s);
}
END_TEST

/* ---------------------------------------------------------------------------------------- */
/* Health checks                                                                             */

static uint64_t
unix_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* Publishes the fixture's snapshot, fresh, changed by the caller's role / pg / op (takes:
 * the step of op still takes commits). */
static void
publish_health_step(const char *role, const char *pg, const char *op, bool takes, bool link_up,
                    const char *sync)
{
    struct status_snapshot *s = calloc(1, sizeof(*s));

    ck_assert_ptr_nonnull(s);
    fill_snapshot(s);
    s->now_unix_us = unix_now_us();
    snprintf(s->role, sizeof(s->role), "%s", role);
    snprintf(s->pg_state, sizeof(s->pg_state), "%s", pg);
    snprintf(s->operation, sizeof(s->operation), "%s", op);
    snprintf(s->sync_state, sizeof(s->sync_state), "%s", sync);
    s->op_takes_commits = takes;
    s->link_up = link_up;
    status_publish(&board, s);
    free(s);
}

static void
publish_health_sync(const char *role, const char *pg, const char *op, bool link_up,
                    const char *sync)
{
    publish_health_step(role, pg, op, false, link_up, sync);
}

static void
publish_health(const char *role, const char *pg, const char *op, bool link_up)
{
    publish_health_sync(role, pg, op, link_up, "sync");
}

/* A check's answer: code, and a JSON body whose "reason" contains reason. */
static void
expect_check(const char *path, long code, const char *reason)
{
    struct resp r;
    json_t *o;
    const char *why;

    request(&r, "GET", path, NULL);
    ck_assert_msg(r.code == code, "GET %s: %ld, expected %ld: %s", path, r.code, code, r.body);
    o = parse_object(&r);
    why = json_string_value(json_object_get(o, code == 400 ? "error" : "reason"));
    ck_assert_msg(why != NULL && strstr(why, reason) != NULL, "GET %s: \"%s\" lacks \"%s\"", path,
                  why != NULL ? why : "(none)", reason);
    if (code != 400)
        ck_assert(json_is_boolean(json_object_get(o, "ok")) &&
                  json_is_true(json_object_get(o, "ok")) == (code == 200));
    json_decref(o);
}

START_TEST(health_check)
{
    struct status_board empty;
    struct httpapi *h;
    char err[256], saved[64];

    /* the fixture's snapshot is from 2023: the loop is not publishing */
    expect_check("/health", 503, "has not published");
    publish_health("source", "primary", "none", true);
    expect_check("/health", 200, "running");
    publish_health("fenced", "stale", "none", false);
    expect_check("/health", 200, "running");

    /* a board nobody published on: starting */
    status_board_init(&empty);
    ck_assert_int_eq(httpapi_start(&h, "127.0.0.1:0", NULL, &empty, err, sizeof(err)), 0);
    snprintf(saved, sizeof(saved), "%s", base);
    snprintf(base, sizeof(base), "http://127.0.0.1:%d", httpapi_port(h));
    expect_check("/health", 503, "starting");
    expect_check("/primary", 503, "unknown");
    httpapi_stop(h);
    status_board_destroy(&empty);
    snprintf(base, sizeof(base), "%s", saved);
}
END_TEST

START_TEST(primary_check)
{
    expect_check("/primary", 503, "unknown"); /* stale */
    publish_health("source", "primary", "none", true);
    expect_check("/primary", 200, "writable primary");
    publish_health("source", "primary", "none", false); /* the link does not matter */
    expect_check("/primary", 200, "writable primary");
    publish_health("source", "unknown", "none", true);
    expect_check("/primary", 503, "does not stream");
    publish_health("source", "primary", "switchover", true);
    expect_check("/primary", 503, "switchover");
    /* The switchover's WAL switch and CHECKPOINT: commits go on until the stop. */
    publish_health_step("source", "primary", "switchover", true, true, "sync");
    expect_check("/primary", 200, "until the switchover stops it");
    publish_health_step("source", "primary", "switchover", true, true, "waiting");
    expect_check("/primary", 503, "commits wait");
    publish_health("sink", "standby", "none", true);
    expect_check("/primary", 503, "not the primary");
    publish_health("fenced", "stale", "none", false);
    expect_check("/primary", 503, "fenced");
    /* Only where a commit can succeed now: not while commits wait for the standby. */
    publish_health_sync("source", "primary", "none", true, "waiting");
    expect_check("/primary", 503, "commits wait: the standby has not confirmed in time");
    publish_health_sync("source", "primary", "none", false, "down");
    expect_check("/primary", 503, "no stream to the standby");
    publish_health_sync("source", "primary", "exposure", false, "exposed");
    expect_check("/primary", 200, "running exposed");
    publish_health_sync("source", "primary", "none", true, "catchup");
    expect_check("/primary", 200, "writable primary");
}
END_TEST

START_TEST(standby_check)
{
    /* the fixture's lags: apply 0x3000100 bytes (48 MiB + 256), 1.5 s */
    publish_health("sink", "standby", "none", true);
    expect_check("/standby", 200, "standby");
    expect_check("/standby?lag=64MB", 200, "within");
    expect_check("/standby?lag=1GB", 200, "within");
    expect_check("/standby?lag=50331904", 200, "within"); /* exactly the lag, in bytes */
    expect_check("/standby?lag=50331903", 503, "over");
    expect_check("/standby?lag=16MB", 503, "over 16777216");
    expect_check("/standby?lag=16mib", 503, "over 16777216");
    expect_check("/standby?lag=10s", 200, "within");
    expect_check("/standby?lag=2min", 200, "within");
    expect_check("/standby?lag=1500ms", 200, "within");
    expect_check("/standby?lag=500ms", 503, "over 0.500 s");
    expect_check("/standby?lag=1.2s", 503, "over 1.200 s");

    expect_check("/standby?lag=abc", 400, "lag:");
    expect_check("/standby?lag=10parsecs", 400, "unknown unit");
    expect_check("/standby?lag=-1", 400, "lag:");
    expect_check("/standby?lag=", 400, "lag:");
    expect_check("/standby?lag=99999999999TB", 400, "out of range");

    publish_health("sink", "standby", "none", false);
    expect_check("/standby?lag=1GB", 503, "link");
    publish_health("sink", "unknown", "none", true);
    expect_check("/standby", 503, "does not stream");
    publish_health("source", "primary", "none", true);
    expect_check("/standby?lag=1GB", 503, "not a standby");
    publish_health("fenced", "stale", "none", false);
    expect_check("/standby", 503, "not a standby");
}
END_TEST

/* ---------------------------------------------------------------------------------------- */
/* Connection abuse                                                                          */

static double
mono_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#define ABUSE_SOCKETS 200

/*
 * 200 idle connections from 127.0.0.1 (any local user can open them): /health still answers
 * at once from another address (127.0.0.2: all of 127/8 is loopback), the log names the
 * abusing address in one line (not one per connection refused), the connections beyond its
 * share are closed at once, and the ones it holds are closed as idle within a few seconds.
 */
START_TEST(connection_abuse)
{
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)httpapi_port(api)),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fds[ABUSE_SOCKETS], open_left = 0, held;
    char first[512], *log;
    struct resp r;
    double t0, took, idle_closed_after;

    publish_health("source", "primary", "none", true);
    tu_log_capture_start(dir);
    for (int i = 0; i < ABUSE_SOCKETS; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(fds[i], 0);
        ck_assert_int_eq(connect(fds[i], (struct sockaddr *)&sin, sizeof(sin)), 0);
    }
    /* MHD accepts them in its own thread: give it a moment to go through the backlog. */
    usleep(300 * 1000);

    t0 = mono_s();
    request_full(&r, "127.0.0.2", "GET", "/health", NULL, NULL);
    took = mono_s() - t0;
    ck_assert_msg(r.code == 200, "/health from 127.0.0.2: %ld %s", r.code, r.body);
    ck_assert_msg(took < 1.0, "/health took %.3f s", took);

    /* Which sockets did the API keep?  The others were closed at once (EOF, or a reset). */
    for (int i = 0; i < ABUSE_SOCKETS; i++) {
        char b;
        ssize_t n = recv(fds[i], &b, 1, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            open_left++;
            continue;
        }
        close(fds[i]);
        fds[i] = -1;
    }
    held = open_left;
    ck_assert_msg(held > 0 && held <= 16, "127.0.0.1 holds %d connections", held);

    /* Idle: closed by the API within a few seconds (never sent a byte). */
    t0 = mono_s();
    while (open_left > 0 && mono_s() - t0 < 8) {
        for (int i = 0; i < ABUSE_SOCKETS; i++) {
            char b;
            ssize_t n;

            if (fds[i] < 0)
                continue;
            n = recv(fds[i], &b, 1, MSG_DONTWAIT);
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                continue;
            close(fds[i]);
            fds[i] = -1;
            open_left--;
        }
        usleep(50 * 1000);
    }
    idle_closed_after = mono_s() - t0;
    for (int i = 0; i < ABUSE_SOCKETS; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    /* and the address may connect again */
    request(&r, "GET", "/health", NULL);
    ck_assert_int_eq(r.code, 200);
    usleep(100 * 1000); /* the summary line comes from the API's thread */
    log = tu_log_capture_end();
    fprintf(stderr,
            "connection_abuse: 127.0.0.1 held %d; idle ones closed after %.1f s; "
            "/health from 127.0.0.2 in %.3f s\n",
            held, idle_closed_after, took);
    ck_assert_msg(open_left == 0, "%d idle connections still open after 8 s", open_left);
    ck_assert_msg(idle_closed_after < 5.0, "idle connections closed after %.1f s",
                  idle_closed_after);
    ck_assert_int_eq(tu_log_lines(log, NULL, 0, "Server reached connection limit", NULL), 0);
    ck_assert_msg(tu_log_lines(log, first, sizeof(first), "refusing", "127.0.0.1", NULL) == 1,
                  "not one line naming 127.0.0.1:\n%s", log);
    ck_assert_msg(strstr(first, "WARNING") != NULL, "%s", first);
    /* and one at the end of the burst, counting the refusals: two lines in all */
    ck_assert_msg(tu_log_lines(log, NULL, 0, "127.0.0.1", NULL) == 2,
                  "not two lines naming 127.0.0.1:\n%s", log);
    {
        char want[64];
        snprintf(want, sizeof(want), "%d connections", ABUSE_SOCKETS - held);
        ck_assert_msg(tu_log_lines(log, NULL, 0, "127.0.0.1", want, "refused", NULL) == 1,
                      "no line counting %s refused:\n%s", want, log);
    }
    free(log);
}
END_TEST

/* Sends raw bytes on a fresh connection from 127.0.0.1 and returns what came back (at most
 * cap - 1 bytes, NUL-terminated) once the API closed the connection or 2 s passed. */
static size_t
raw_exchange(const char *bytes, size_t len, char *got, size_t cap)
{
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)httpapi_port(api)),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct timeval tv = {.tv_sec = 2};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    size_t n = 0;

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
    ck_assert_int_eq(send(fd, bytes, len, MSG_NOSIGNAL), (ssize_t)len);
    while (n + 1 < cap) {
        ssize_t r = recv(fd, got + n, cap - 1 - n, 0);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    got[n] = '\0';
    close(fd);
    return n;
}

/* A request MHD cannot parse: a 400 for the client, one plain line in the log. */
START_TEST(parse_error_log)
{
    static const char *const bad[] = {
        "GET /status HTTP/1.1\r\nHost: x\r\nBad header without colon\r\n\r\n",
        "GET /status HTTP/7.2\r\n\r\n",
    };
    char got[4096], *log, line[512];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        tu_log_capture_start(dir);
        raw_exchange(bad[i], strlen(bad[i]), got, sizeof(got));
        usleep(50 * 1000);
        log = tu_log_capture_end();
        ck_assert_msg(strncmp(got, "HTTP/1.1 400", 12) == 0 ||
                          strncmp(got, "HTTP/1.1 505", 12) == 0,
                      "case %zu: %s", i, got);
        ck_assert_msg(strchr(log, '<') == NULL, "HTML in the log:\n%s", log);
        ck_assert_msg(tu_log_lines(log, line, sizeof(line), " http: ", NULL) == 1, "%s", log);
        ck_assert_msg(strstr(line, "WARNING") != NULL &&
                          strstr(line, "HTTP response code is") != NULL,
                      "%s", line);
        free(log);
    }
}
END_TEST

/* ---------------------------------------------------------------------------------------- */
/* walmirrorctl as a process                                                                 */

static char *out_text, *err_text;

/* Runs walmirrorctl with args; its stdout and stderr land in out_text and err_text. */
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

#define assert_has(text, s)                                                                        \
    ck_assert_msg(strstr((text), (s)) != NULL, "\"%s\" not in:\n%s", (s), (text))

START_TEST(ctl_status_table)
{
    int rc = ctl("status --url %s", base);

    ck_assert_msg(rc == 0, "exit %d: %s", rc, err_text);
    assert_has(out_text, "NODE");
    assert_has(out_text, "REPLAY LAG");
    /* the row */
    assert_has(out_text, "site-a");
    assert_has(out_text, "primary");
    assert_has(out_text, "0/3000060");
    assert_has(out_text, "1/2A");
    /* lags in bytes as a DBA reads them: the configuration's units, 1024-based */
    assert_has(out_text, "160 B 0.250s"); /* write lag */
    assert_has(out_text, "256 B -");      /* flush lag, seconds unknown */
    assert_has(out_text, "48 MB 1.500s"); /* apply lag: 50331904 bytes */
    assert_has(out_text, "up 0.42ms");
    assert_has(out_text, "auto");
    /* the peer, not queried */
    assert_has(out_text, "peer of site-a: site-b at 127.0.0.1:7002, link up");
    assert_has(out_text, "site-a: last error: link to site-b: reset");

    /* a second --url for the same agent: two rows */
    rc = ctl("--url %s status --url %s/", base, base);
    ck_assert_int_eq(rc, 0);
    ck_assert_ptr_nonnull(strstr(strstr(out_text, "site-a") + 1, "site-a"));
}
END_TEST

START_TEST(ctl_status_json)
{
    json_error_t jerr;
    json_t *arr;
    int rc = ctl("status --json --url %s", base);

    ck_assert_msg(rc == 0, "exit %d: %s", rc, err_text);
    arr = json_loads(out_text, 0, &jerr);
    ck_assert_msg(arr != NULL, "%s: %s", jerr.text, out_text);
    ck_assert(json_is_array(arr));
    ck_assert_uint_eq(json_array_size(arr), 1);
    expect_str(json_array_get(arr, 0), "node_name", "site-a");
    expect_str(json_array_get(arr, 0), "sent_lsn_text", "0/3000060");
    json_decref(arr);
}
END_TEST

START_TEST(ctl_unreachable)
{
    int port = tu_free_port();
    char want[256];
    int rc;

    rc = ctl("status --url http://127.0.0.1:%d", port);
    ck_assert_int_eq(rc, 1);
    snprintf(want, sizeof(want),
             "walmirrorctl: cannot reach the agent at http://127.0.0.1:%d/status: "
             "Connection refused",
             port);
    assert_has(err_text, want);

    /* one of two unreachable: the other is still shown, exit 1 */
    rc = ctl("status --url http://127.0.0.1:%d --url %s", port, base);
    ck_assert_int_eq(rc, 1);
    assert_has(out_text, "site-a");
    assert_has(err_text, "cannot reach");

    rc = ctl("pause --url 127.0.0.1:%d", port);
    ck_assert_int_eq(rc, 1);
    assert_has(err_text, "cannot reach the agent at http://127.0.0.1:");
}
END_TEST

START_TEST(ctl_pause_resume)
{
    int rc = ctl("--url %s pause", base);

    ck_assert_msg(rc == 0, "exit %d: %s", rc, err_text);
    assert_has(out_text, "site-a: automatic fail-over pause requested");
    ck_assert_uint_eq(status_take(&board), 1u << STATUS_REQ_PAUSE);
    rc = ctl("--url %s resume", base);
    ck_assert_int_eq(rc, 0);
    ck_assert_uint_eq(status_take(&board), 1u << STATUS_REQ_RESUME);
}
END_TEST

START_TEST(ctl_token_and_config)
{
    const char *tok;
    char conf[4096], text[2048];
    FILE *f;
    int rc;

    httpapi_stop(api);
    tok = write_token("token", "tok-123\n", 0600);
    start_api(tok);

    rc = ctl("status --url %s", base);
    ck_assert_int_eq(rc, 1);
    assert_has(err_text, "answered 401");
    rc = ctl("status --url %s --token-file '%s'", base, tok);
    ck_assert_msg(rc == 0, "exit %d: %s", rc, err_text);
    assert_has(out_text, "site-a");

    /* -c FILE: the agent's http_listen and http_token_file; the TLS files need not exist */
    snprintf(text, sizeof(text),
             "node_name = site-a\nlisten = 127.0.0.1:7001\npeer = site-b@127.0.0.1:7002\n"
             "tls_ca = /nonexistent/ca.crt\ntls_cert = /nonexistent/a.crt\n"
             "tls_key = /nonexistent/a.key\npg_conninfo = 'host=/tmp'\npgdata = /tmp/pgdata\n"
             "spool_dir = /tmp/spool\nwal_listen = 127.0.0.1:7003\n"
             "http_listen = 127.0.0.1:%d\nhttp_token_file = token\n",
             httpapi_port(api));
    snprintf(conf, sizeof(conf), "%s/site.conf", dir);
    f = fopen(conf, "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_ge(fputs(text, f), 0);
    ck_assert_int_eq(fclose(f), 0);
    rc = ctl("-c '%s' status", conf);
    ck_assert_msg(rc == 0, "exit %d: %s", rc, err_text);
    assert_has(out_text, "site-a");
    assert_has(out_text, "peer of site-a: site-b");
    rc = ctl("-c '%s' pause", conf);
    ck_assert_int_eq(rc, 0);
    ck_assert_uint_eq(status_take(&board), 1u << STATUS_REQ_PAUSE);

    /* a broken configuration: exit 2 with the parser's message */
    rc = ctl("-c '%s/missing.conf' status", dir);
    ck_assert_int_eq(rc, 2);
    assert_has(err_text, "cannot read");
}
END_TEST

/* walmirrorctl check: Nagios states and perfdata from what the agent publishes. */
START_TEST(ctl_check)
{
    struct status_snapshot s;
    int rc;

    /* As published: a switchover running and 48 MB of apply lag: WARNING. */
    rc = ctl("check --url %s", base);
    ck_assert_msg(rc == 1, "exit %d: %s%s", rc, out_text, err_text);
    assert_has(out_text, "WALMIRROR WARNING - ");
    assert_has(out_text, "site-a: switchover running (stopping the primary)");
    assert_has(out_text, "site-a: apply lag 48 MB over 16 MB");
    assert_has(out_text, "| 'site-a_apply_lag_bytes'=50331904B;16777216;1073741824 ");
    assert_has(out_text, "'site-a_apply_lag_seconds'=1.500s;; ");

    fill_snapshot(&s);
    snprintf(s.operation, sizeof(s.operation), "none");
    status_publish(&board, &s);
    rc = ctl("check --url %s --lag-warning 100MB --lag-critical 1GB", base);
    ck_assert_msg(rc == 0, "exit %d: %s%s", rc, out_text, err_text);
    assert_has(out_text, "WALMIRROR OK - site-a source sync |");

    /* Thresholds in seconds: 1.5 s of apply lag is over 1 s. */
    rc = ctl("check --url %s --lag-warning 500ms --lag-critical 1s", base);
    ck_assert_int_eq(rc, 2);
    assert_has(out_text, "WALMIRROR CRITICAL - site-a: apply lag 1500ms over 1000ms");
    assert_has(out_text, "'site-a_apply_lag_seconds'=1.500s;0.5;1 ");

    s.link_up = false;
    s.spool_free_bytes = 100LL << 20;
    s.cert_not_after_unix = (int64_t)time(NULL) + 10 * 86400;
    status_publish(&board, &s);
    rc = ctl("check --url %s --lag-warning 100MB", base);
    ck_assert_int_eq(rc, 2);
    assert_has(out_text, "site-a: link to its peer down");
    assert_has(out_text, "site-a: 100 MB free for the spool");
    assert_has(out_text, "site-a: TLS certificate expires in 10 days");

    snprintf(s.role, sizeof(s.role), "fenced");
    status_publish(&board, &s);
    ck_assert_int_eq(ctl("check --url %s", base), 2);
    assert_has(out_text, "site-a is fenced");

    fill_snapshot(&s);
    snprintf(s.operation, sizeof(s.operation), "none");
    snprintf(s.spool_stall, sizeof(s.spool_stall), "no space for the spool in /spool");
    status_publish(&board, &s);
    ck_assert_int_eq(ctl("check --url %s --lag-warning 100MB", base), 2);
    assert_has(out_text, "site-a: spool stalled, commits wait (no space for the spool in /spool)");

    /* Running exposed, waiting for the standby, or a stale standby: CRITICAL, each named. */
    fill_snapshot(&s);
    snprintf(s.operation, sizeof(s.operation), "none");
    s.exposed = true;
    snprintf(s.sync_state, sizeof(s.sync_state), "exposed");
    status_publish(&board, &s);
    ck_assert_int_eq(ctl("check --url %s --lag-warning 100MB", base), 2);
    assert_has(out_text, "site-a: running exposed (commits acknowledged without the standby), "
                         "123456 bytes at risk");
    s.exposed = false;
    snprintf(s.sync_state, sizeof(s.sync_state), "waiting");
    status_publish(&board, &s);
    ck_assert_int_eq(ctl("check --url %s --lag-warning 100MB", base), 2);
    assert_has(out_text, "site-a: waiting (commits wait for the standby)");
    snprintf(s.role, sizeof(s.role), "sink");
    snprintf(s.sync_state, sizeof(s.sync_state), "sync");
    s.stale = true;
    status_publish(&board, &s);
    ck_assert_int_eq(ctl("check --url %s --lag-warning 100MB", base), 2);
    assert_has(out_text, "site-a: stale (its primary runs exposed: it may not be promoted)");

    /* The witness keeps no spool, and publishes 0 for the fields it does not know: no
     * "0 MB free for the spool", no certificate "expired" in 1970. */
    fill_snapshot(&s);
    snprintf(s.role, sizeof(s.role), "witness");
    snprintf(s.operation, sizeof(s.operation), "none");
    s.spool_free_bytes = 0;
    s.cert_not_after_unix = 0;
    status_publish(&board, &s);
    rc = ctl("check --url %s", base);
    ck_assert_msg(rc == 0, "exit %d: %s%s", rc, out_text, err_text);
    assert_has(out_text, "WALMIRROR OK - site-a witness sync");

    /* An agent that cannot be reached is CRITICAL; bad arguments are UNKNOWN. */
    ck_assert_int_eq(ctl("check --url http://127.0.0.1:1"), 2);
    assert_has(out_text, "WALMIRROR CRITICAL - ");
    ck_assert_int_eq(ctl("check --url %s --lag-warning lots", base), 3);
    ck_assert_int_eq(ctl("check --url %s extra", base), 3);
}
END_TEST

/* Bad requests are refused when made, each with a clear error and the usage exit status. */
START_TEST(ctl_refuses_bad_requests)
{
    ck_assert_int_eq(ctl("--url %s switchover --to nowhere", base), 2);
    assert_has(err_text, "unknown node \"nowhere\"");
    assert_has(err_text, "site-b");
    /* a bare number is no duration, as in the configuration file */
    ck_assert_int_eq(
        ctl("--url %s maintenance add --at '2099-01-01 02:00' --duration 4 --tz UTC", base), 2);
    assert_has(err_text, "duration: 4 has no unit");
    ck_assert_int_eq(ctl("--url %s check --lag-warning 5s --lag-critical 1s", base), 3);
    assert_has(err_text, "--lag-warning 5s is above --lag-critical 1s");
    ck_assert_int_eq(ctl("--url %s check --lag-warning 2GB", base), 3);
    assert_has(err_text, "--lag-warning 2GB is above --lag-critical 1GB (the default)");
    /* a size and a duration are not compared */
    ck_assert_int_ne(ctl("--url %s check --lag-warning 5s --lag-critical 1MB", base), 3);
}
END_TEST

START_TEST(ctl_usage)
{
    ck_assert_int_eq(ctl("%s", ""), 2);
    assert_has(err_text, "usage:");
    ck_assert_int_eq(ctl("--bogus status"), 2);
    ck_assert_int_eq(ctl("frobnicate"), 2);
    ck_assert_int_eq(ctl("status extra"), 2);
    ck_assert_int_eq(ctl("pause --json"), 2);
    ck_assert_int_eq(ctl("status --url"), 2);
    ck_assert_int_eq(ctl("status --watch=0"), 2);
    ck_assert_int_eq(ctl("-c"), 2);
    ck_assert_int_eq(ctl("report"), 2);
    assert_has(err_text, "report needs --statuspage");
    ck_assert_int_eq(ctl("status --force"), 2);
    ck_assert_int_eq(ctl("failover --to site-b"), 2);
    ck_assert_int_eq(ctl("switchover --max-lag 12x"), 2);
    ck_assert_int_eq(ctl("switchover --at tomorrow"), 2);
    assert_has(err_text, "--at: \"tomorrow\" is not");
    ck_assert_int_eq(ctl("failover --at 12:00"), 2);
    ck_assert_int_eq(ctl("--help"), 0);
    assert_has(out_text, "status [--json] [--watch [SECONDS]]");
    ck_assert_int_eq(ctl("--version"), 0);
    assert_has(out_text, "walmirrorctl " WALMIRROR_VERSION);
}
END_TEST

START_TEST(ctl_watch)
{
    /* not a tty: no escape codes; two refreshes within 1.5 s, stopped by SIGINT (a
     * walmirrorctl that ignored it is killed 10 s later, and the exit status says so) */
    int rc = tu_run("timeout --preserve-status -k 10 -s INT 1.5 '%s' status --watch 0.5 --url %s "
                    ">'%s/out' 2>&1",
                    CTL, base, dir);
    size_t len;
    char *text, *second, path[4200];

    ck_assert_int_eq(rc, 0);
    snprintf(path, sizeof(path), "%s/out", dir);
    text = tu_read_file(path, &len);
    ck_assert_ptr_nonnull(text);
    ck_assert_ptr_null(strchr(text, '\033'));
    second = strstr(text, "site-a");
    ck_assert_ptr_nonnull(second);
    ck_assert_msg(strstr(second + 1, "walmirrorctl status, every 0.5s") != NULL,
                  "fewer than two refreshes:\n%s", text);
    free(text);
}
END_TEST

static Suite *
httpapi_suite(void)
{
    Suite *s = suite_create("httpapi");
    TCase *tc = tcase_create("api");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, status_fields);
    tcase_add_test(tc, status_edge_values);
    tcase_add_test(tc, pause_resume);
    tcase_add_test(tc, operation_requests);
    tcase_add_test(tc, cross_site_refused);
    tcase_add_test(tc, wrong_method_and_path);
    tcase_add_test(tc, loopback_rule);
    tcase_add_test(tc, ipv6_loopback);
    tcase_add_test(tc, token_required);
    tcase_add_test(tc, token_file_checks);
    tcase_add_test(tc, no_torn_snapshot);
    tcase_add_test(tc, metrics_exposition);
    tcase_add_test(tc, health_check);
    tcase_add_test(tc, primary_check);
    tcase_add_test(tc, standby_check);
    tcase_add_test(tc, connection_abuse);
    tcase_add_test(tc, parse_error_log);
    suite_add_tcase(s, tc);

    tc = tcase_create("walmirrorctl");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, ctl_status_table);
    tcase_add_test(tc, ctl_status_json);
    tcase_add_test(tc, ctl_unreachable);
    tcase_add_test(tc, ctl_pause_resume);
    tcase_add_test(tc, ctl_token_and_config);
    tcase_add_test(tc, ctl_check);
    tcase_add_test(tc, ctl_refuses_bad_requests);
    tcase_add_test(tc, ctl_usage);
    tcase_add_test(tc, ctl_watch);
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
    sr = srunner_create(httpapi_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    curl_global_cleanup();
    return failed == 0 ? 0 : 1;
}
