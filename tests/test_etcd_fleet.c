/*
 * test_etcd_fleet.c - two pairs under one real etcd cluster (three members, plain http), each
 * under its own prefix, with the real etcd arbiters of their four sites on one wio loop; and
 * `walmirrorctl fleet` listing them from the liveness keys those arbiters write.
 *
 *   a. both pairs register: each records its own source as the holder of its epoch 1; fleet
 *      (table and JSON) shows two pairs with their nodes' roles, epochs, sync state and lag;
 *   b. a fail-over in pair 1 (its primary's agent gone, its lease expired): pair 1 at epoch 2,
 *      pair 2 untouched - same record, no news, its standby's promotion still denied - and an
 *      exposure in pair 2 tells pair 1 nothing; fleet shows both changes;
 *   c. pausing pair 2 in etcd (its "paused" key) denies its promotions, fleet says so;
 *   d. a third node under pair 1's prefix (a second pair configured with the same prefix) is
 *      named, and pair 1's requests are denied;
 *   e. fleet's errors: no pair under a root, no etcd answering, bad usage.
 */
#include <check.h>
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "arbiter.h"
#include "config.h"
#include "etcdrec.h"
#include "etcdtest.h"
#include "msg.h"
#include "state.h"
#include "testutil.h"
#include "wio.h"

#define CTL WM_BINARY_DIR "/tools/walmirrorctl"
#define HB_MS 200
#define FAILOVER_MS 2000
#define TTL_MS 2000
#define PREFIX2 "/walmirror/pair2/"

struct client {
    const char *name, *peer, *prefix; /* prefix NULL: the default, from the node names */
    struct wm_config cfg;
    struct arbiter *arb;
    int verdicts;
    bool granted;
    struct wm_state verdict;
    char why[1100];
    int told;
};

static struct et_cluster cluster;
static struct wio_loop *loop;
static char *dir;
static char prefix1[ETCDREC_PREFIX_MAX + 1];
static struct client A1 = {.name = "p1-a", .peer = "p1-b"}, B1 = {.name = "p1-b", .peer = "p1-a"};
static struct client A2 = {.name = "p2-a", .peer = "p2-b", .prefix = PREFIX2},
                     B2 = {.name = "p2-b", .peer = "p2-a", .prefix = PREFIX2};

static double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
on_verdict(void *ctx, const struct arbiter_request *req, bool granted, const struct wm_state *e,
           const char *why)
{
    struct client *c = ctx;

    (void)req;
    c->verdicts++;
    c->granted = granted;
    c->verdict = *e;
    snprintf(c->why, sizeof(c->why), "%s", why);
}

static void
on_epoch_news(void *ctx, const struct wm_state *e)
{
    struct client *c = ctx;

    (void)e;
    c->told++;
}

static const struct arbiter_cb client_cb = {.on_verdict = on_verdict,
                                            .on_epoch_news = on_epoch_news};

static void
report(struct client *c, uint8_t role, uint64_t epoch, uint64_t durable,
       const struct wm_state *mark)
{
    struct arbiter_report r = {.role = role,
                               .epoch = epoch,
                               .durable_lsn = durable,
                               .mark = mark,
                               .timeline = 1,
                               .flush_lag_bytes = role == MSG_ROLE_SOURCE ? 4096 : 0,
                               .flush_lag_s = role == MSG_ROLE_SOURCE ? 0.004 : -1,
                               .apply_lag_s = -1};

    snprintf(r.sync_state, sizeof(r.sync_state), "%s",
             role == MSG_ROLE_SOURCE ? (mark != NULL && state_exposed(mark) ? "exposed" : "sync")
                                     : "");
    arbiter_report(c->arb, &r);
}

static void
client_start(struct client *c, uint8_t role)
{
    char p[ETCDREC_PREFIX_MAX + 1];

    config_free(&c->cfg);
    memset(&c->cfg, 0, sizeof(c->cfg));
    c->verdicts = c->told = 0;
    snprintf(c->cfg.node_name, sizeof(c->cfg.node_name), "%s", c->name);
    snprintf(c->cfg.peer.name, sizeof(c->cfg.peer.name), "%s", c->peer);
    c->cfg.arbiter = CONFIG_ARBITER_ETCD;
    c->cfg.etcd_endpoints = strdup(cluster.endpoints);
    /* as config.c makes the default */
    etcdrec_default_prefix(p, sizeof(p), c->name, c->peer);
    c->cfg.etcd_prefix = strdup(c->prefix != NULL ? c->prefix : p);
    c->cfg.heartbeat_interval_ms = HB_MS;
    c->cfg.peer_timeout_ms = 2000;
    c->cfg.failover_timeout_ms = FAILOVER_MS;
    c->cfg.etcd_lease_ttl_ms = TTL_MS;
    tu_require(c->cfg.etcd_endpoints != NULL && c->cfg.etcd_prefix != NULL);
    ck_assert_int_eq(arbiter_new(&c->arb, loop, &c->cfg, &client_cb, c), 0);
    report(c, role, 1, 0x3000000, NULL);
}

static void
client_stop(struct client *c)
{
    arbiter_free(c->arb);
    c->arb = NULL;
}

static void
run_for(double seconds)
{
    double end = now_s() + seconds;

    while (now_s() < end)
        ck_assert_int_ge(wio_run_once(loop, 20), 0);
}

static void
wait_reachable(struct client *c)
{
    double end = now_s() + 10;

    while (!arbiter_reachable(c->arb) && now_s() < end)
        ck_assert_int_ge(wio_run_once(loop, 20), 0);
    ck_assert_msg(arbiter_reachable(c->arb), "%s: %s", c->name, arbiter_describe(c->arb));
}

static void
ask_for(struct client *c, enum arbiter_ask what, uint64_t epoch, uint64_t standby)
{
    struct arbiter_request req = {.ask = what,
                                  .epoch = epoch,
                                  .durable_lsn = 0x3000000,
                                  .standby_lsn = standby,
                                  .failover_timeout_ms = FAILOVER_MS};
    double end = now_s() + ARBITER_VOTE_TIMEOUT_MS / 1000.0 + 2;

    c->verdicts = 0;
    ck_assert_int_eq(arbiter_request(c->arb, &req), 0);
    while (c->verdicts == 0 && now_s() < end)
        ck_assert_int_ge(wio_run_once(loop, 20), 0);
    ck_assert_int_eq(c->verdicts, 1);
}

static void
expect(struct client *c, bool granted, const char *what)
{
    ck_assert_msg(c->granted == granted, "%s %s: %s", c->name, c->granted ? "granted" : "denied",
                  c->why);
    ck_assert_msg(strstr(c->why, what) != NULL, "%s: \"%s\" lacks \"%s\"", c->name, c->why, what);
}

static struct wm_state
record(const char *prefix)
{
    char key[256], err[256], *text;
    struct wm_state st;

    snprintf(key, sizeof(key), "%sepoch", prefix);
    text = et_get(&cluster, key);
    ck_assert_msg(text != NULL, "no record under %s", prefix);
    ck_assert_msg(etcdrec_epoch_parse(text, strlen(text), &st, err, sizeof(err)) == 0, "%s", err);
    free(text);
    return st;
}

static int __attribute__((format(printf, 3, 4)))
ctl(char **out, char **err, const char *fmt, ...)
{
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = tu_vcapture(dir, out, err, CTL, fmt, ap);
    va_end(ap);
    return rc;
}

/* walmirrorctl fleet --json: the pair with that name (a new reference), which must be there. */
static json_t *
fleet_pair(const char *name, size_t expect_pairs)
{
    char *out = NULL, *err = NULL;
    int rc = ctl(&out, &err, "--etcd '%s' fleet --json", cluster.endpoints);
    json_t *all, *p, *found = NULL;
    size_t i;

    ck_assert_msg(rc == 0, "fleet: exit %d: %s", rc, err);
    all = json_loads(out, 0, NULL);
    ck_assert_msg(json_is_array(all) && json_array_size(all) == expect_pairs, "%s", out);
    json_array_foreach(all, i, p)
    {
        if (strcmp(json_string_value(json_object_get(p, "pair")), name) == 0)
            found = json_incref(p);
    }
    ck_assert_msg(found != NULL, "no pair %s in %s", name, out);
    json_decref(all);
    free(out);
    free(err);
    return found;
}

/* The member record of node in a fleet pair object (borrowed), or NULL. */
static json_t *
fleet_member(json_t *pair, const char *node)
{
    json_t *m;
    size_t i;

    json_array_foreach(json_object_get(pair, "members"), i, m)
    {
        if (strcmp(json_string_value(json_object_get(m, "node")), node) == 0)
            return m;
    }
    return NULL;
}

/* ---- the tests ---- */

START_TEST(a_two_pairs_register)
{
    struct wm_state r1, r2;
    json_t *p;
    char *out = NULL, *err = NULL;
    int rc;

    client_start(&A1, MSG_ROLE_SOURCE);
    client_start(&B1, MSG_ROLE_SINK);
    client_start(&A2, MSG_ROLE_SOURCE);
    client_start(&B2, MSG_ROLE_SINK);
    wait_reachable(&A1);
    wait_reachable(&B1);
    wait_reachable(&A2);
    wait_reachable(&B2);
    run_for(0.5);
    r1 = record(prefix1);
    r2 = record(PREFIX2);
    ck_assert_uint_eq(r1.epoch, 1);
    ck_assert_str_eq(r1.primary, "p1-a");
    ck_assert_uint_eq(r2.epoch, 1);
    ck_assert_str_eq(r2.primary, "p2-a");

    p = fleet_pair("p1-a+p1-b", 2);
    ck_assert_str_eq(json_string_value(json_object_get(p, "prefix")), prefix1);
    ck_assert_int_eq(json_integer_value(json_object_get(p, "epoch")), 1);
    ck_assert_str_eq(json_string_value(json_object_get(p, "holder")), "p1-a");
    ck_assert(json_is_false(json_object_get(p, "exposed")));
    ck_assert_int_eq(json_array_size(json_object_get(p, "members")), 2);
    ck_assert_str_eq(json_string_value(json_object_get(fleet_member(p, "p1-a"), "role")),
                     "source");
    ck_assert_str_eq(json_string_value(json_object_get(fleet_member(p, "p1-a"), "sync_state")),
                     "sync");
    ck_assert_int_eq(json_integer_value(json_object_get(fleet_member(p, "p1-a"),
                                                        "flush_lag_bytes")),
                     4096);
    ck_assert_str_eq(json_string_value(json_object_get(fleet_member(p, "p1-b"), "role")), "sink");
    json_decref(p);
    p = fleet_pair("pair2", 2);
    ck_assert_str_eq(json_string_value(json_object_get(p, "holder")), "p2-a");
    json_decref(p);

    rc = ctl(&out, &err, "--etcd=%s fleet", cluster.endpoints);
    ck_assert_msg(rc == 0, "%s", err);
    ck_assert_msg(strstr(out, "PAIR") != NULL && strstr(out, "p1-a+p1-b") != NULL &&
                      strstr(out, "pair2") != NULL,
                  "%s", out);
    ck_assert_msg(strstr(out, "p1-a source@1, p1-b sink@1") != NULL, "%s", out);
    ck_assert_msg(strstr(out, "4.0 kB 0.004 s") != NULL, "%s", out);
    free(out);
    free(err);
}
END_TEST

START_TEST(b_failover_in_one_pair)
{
    struct wm_state r2;
    json_t *p;
    double end;
    char key[256], *v;

    client_stop(&A1);
    snprintf(key, sizeof(key), "%smembers/p1-a", prefix1);
    end = now_s() + TTL_MS / 1000.0 + 3;
    while ((v = et_get(&cluster, key)) != NULL && now_s() < end) {
        free(v);
        run_for(0.1);
    }
    ck_assert_msg(v == NULL, "p1-a's key outlived its lease");
    run_for(0.2);
    ask_for(&B1, ARBITER_PROMOTE, 1, 0);
    expect(&B1, true, "epoch 2 granted to p1-b");
    report(&B1, MSG_ROLE_SOURCE, 2, 0x3000000, &B1.verdict);

    /* pair 2 untouched */
    run_for(0.5);
    r2 = record(PREFIX2);
    ck_assert_uint_eq(r2.epoch, 1);
    ck_assert_str_eq(r2.primary, "p2-a");
    ck_assert_int_eq(A2.told + B2.told, 0);
    ask_for(&B2, ARBITER_PROMOTE, 1, 0);
    expect(&B2, false, "the primary p2-a was heard");
    /* and pair 2's exposure tells pair 1 nothing */
    ask_for(&A2, ARBITER_EXPOSE, 1, 0x2800000);
    expect(&A2, true, "epoch 2 granted to p2-a: it runs exposed");
    report(&A2, MSG_ROLE_SOURCE, 2, 0x3000000, &A2.verdict);
    run_for(0.5);
    ck_assert_int_eq(B1.told, 0);
    ck_assert_int_eq(B2.told, 1);
    ck_assert_uint_eq(record(prefix1).epoch, 2);

    p = fleet_pair("p1-a+p1-b", 2);
    ck_assert_int_eq(json_integer_value(json_object_get(p, "epoch")), 2);
    ck_assert_str_eq(json_string_value(json_object_get(p, "holder")), "p1-b");
    ck_assert(json_is_true(json_object_get(p, "exposed")));
    ck_assert_int_eq(json_array_size(json_object_get(p, "members")), 1);
    ck_assert_ptr_null(fleet_member(p, "p1-a"));
    json_decref(p);
    p = fleet_pair("pair2", 2);
    ck_assert_int_eq(json_integer_value(json_object_get(p, "epoch")), 2);
    ck_assert_str_eq(json_string_value(json_object_get(p, "exposed_lsn")), "0/2800000");
    ck_assert_str_eq(json_string_value(json_object_get(fleet_member(p, "p2-a"), "sync_state")),
                     "exposed");
    json_decref(p);
}
END_TEST

START_TEST(c_paused_pair)
{
    json_t *p;

    et_put(&cluster, PREFIX2 "paused", "maintenance");
    run_for(0.3);
    ask_for(&B2, ARBITER_PROMOTE, 2, 0);
    expect(&B2, false, "automatic fail-over is paused in etcd (" PREFIX2 "paused exists");
    p = fleet_pair("pair2", 2);
    ck_assert(json_is_true(json_object_get(p, "paused")));
    json_decref(p);
    ck_assert_msg(strstr(arbiter_describe(B2.arb), "automatic fail-over paused") != NULL, "%s",
                  arbiter_describe(B2.arb));
    et_del(&cluster, PREFIX2 "paused");
    run_for(0.3);
    ck_assert_msg(strstr(arbiter_describe(B2.arb), "paused") == NULL, "%s",
                  arbiter_describe(B2.arb));
}
END_TEST

START_TEST(d_shared_prefix_named)
{
    static struct client C = {.name = "p1-c", .peer = "p1-b"};

    C.prefix = prefix1; /* a second pair configured with pair 1's prefix */

    client_start(&C, MSG_ROLE_SINK);
    wait_reachable(&C);
    run_for(0.5);
    ask_for(&B1, ARBITER_EXPOSE, 2, 0x3000000);
    expect(&B1, false, "also holds a liveness key of p1-c");
    ck_assert_msg(strstr(arbiter_describe(B1.arb), "p1-c") != NULL, "%s",
                  arbiter_describe(B1.arb));
    client_stop(&C);
    config_free(&C.cfg);
}
END_TEST

START_TEST(e_fleet_errors)
{
    char *out = NULL, *err = NULL;
    int rc;

    rc = ctl(&out, &err, "--etcd '%s' fleet --prefix /nothing/", cluster.endpoints);
    ck_assert_int_eq(rc, 0);
    ck_assert_msg(strstr(out, "(no pair under /nothing/)") != NULL, "%s", out);
    rc = ctl(&out, &err, "--etcd '%s' fleet --prefix /nothing/ --json", cluster.endpoints);
    ck_assert_int_eq(rc, 0);
    ck_assert_msg(strcmp(out, "[]\n") == 0, "%s", out);

    rc = ctl(&out, &err, "--etcd http://127.0.0.1:1 fleet");
    ck_assert_int_eq(rc, 1);
    ck_assert_msg(strstr(err, "http://127.0.0.1:1: ") != NULL, "%s", err);

    rc = ctl(&out, &err, "fleet");
    ck_assert_int_eq(rc, 2);
    ck_assert_msg(strstr(err, "fleet needs --etcd ENDPOINTS") != NULL, "%s", err);
    rc = ctl(&out, &err, "--etcd 127.0.0.1:2379 fleet");
    ck_assert_int_eq(rc, 2);
    ck_assert_msg(strstr(err, "not an http:// or https:// URL") != NULL, "%s", err);
    rc = ctl(&out, &err, "--etcd '%s' fleet --prefix walmirror", cluster.endpoints);
    ck_assert_int_eq(rc, 2);
    rc = ctl(&out, &err, "--etcd '%s' fleet --etcd-cert x", cluster.endpoints);
    ck_assert_int_eq(rc, 2);
    free(out);
    free(err);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("etcd_fleet");
    TCase *tc = tcase_create("etcd_fleet");
    SRunner *sr;
    int failed;

    tu_require(curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK);
    signal(SIGPIPE, SIG_IGN);
    dir = tu_tmpdir("etcd-fleet");
    etcdrec_default_prefix(prefix1, sizeof(prefix1), "p1-a", "p1-b");
    et_start(&cluster, 3, false);
    tu_require(wio_loop_new(&loop, 256) == 0);

    tcase_add_test(tc, a_two_pairs_register);
    tcase_add_test(tc, b_failover_in_one_pair);
    tcase_add_test(tc, c_paused_pair);
    tcase_add_test(tc, d_shared_prefix_named);
    tcase_add_test(tc, e_fleet_errors);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);

    client_stop(&A1);
    client_stop(&B1);
    client_stop(&A2);
    client_stop(&B2);
    for (int i = 0; i < 30; i++)
        if (wio_run_once(loop, 10) < 0)
            break;
    wio_loop_free(loop);
    config_free(&A1.cfg);
    config_free(&B1.cfg);
    config_free(&A2.cfg);
    config_free(&B2.cfg);
    if (failed != 0)
        et_keep_logs(&cluster);
    et_stop(&cluster);
    tu_rmtree(dir);
    free(dir);
    curl_global_cleanup();
    return failed == 0 ? 0 : 1;
}
