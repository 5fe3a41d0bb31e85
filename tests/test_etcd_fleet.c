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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "arbiter.h"
#include "arbtest.h"
#include "config.h"
#include "etcdrec.h"
#include "etcdtest.h"
#include "msg.h"
#include "pairtest.h"
#include "state.h"
#include "testutil.h"
#include "wio.h"

#define CTL WM_BINARY_DIR "/tools/walmirrorctl"
#define HB_MS 200
#define FAILOVER_MS 2000
#define TTL_MS 2000
#define PREFIX2 "/walmirror/pair2/"

static struct et_cluster cluster;
static struct wio_loop *loop;
static char *dir;
static char prefix1[ETCDREC_PREFIX_MAX + 1];
static struct at_site A1 = {.name = "p1-a"}, B1 = {.name = "p1-b"};
static struct at_site A2 = {.name = "p2-a"}, B2 = {.name = "p2-b"};

/* Starts a site's arbiter: peer its pair's other node, under prefix (NULL: the default, from the
 * node names, as config.c makes it); it reports role at epoch 1. */
static void
client_start(struct at_site *c, const char *peer, const char *prefix, uint8_t role)
{
    char p[ETCDREC_PREFIX_MAX + 1];

    config_free(&c->cfg);
    memset(&c->cfg, 0, sizeof(c->cfg));
    snprintf(c->cfg.node_name, sizeof(c->cfg.node_name), "%s", c->name);
    snprintf(c->cfg.peer.name, sizeof(c->cfg.peer.name), "%s", peer);
    c->cfg.arbiter = CONFIG_ARBITER_ETCD;
    c->cfg.etcd_endpoints = strdup(cluster.endpoints);
    etcdrec_default_prefix(p, sizeof(p), c->name, peer);
    c->cfg.etcd_prefix = strdup(prefix != NULL ? prefix : p);
    c->cfg.heartbeat_interval_ms = HB_MS;
    c->cfg.peer_timeout_ms = 2000;
    c->cfg.failover_timeout_ms = FAILOVER_MS;
    c->cfg.etcd_lease_ttl_ms = TTL_MS;
    tu_require(c->cfg.etcd_endpoints != NULL && c->cfg.etcd_prefix != NULL);
    at_start(c);
    at_report(c, role, 1, 0x3000000, NULL);
}

static void
wait_reachable(struct at_site *c)
{
    ck_assert_msg(at_run_until(at_reachable, c, 10), "%s: %s", c->name, arbiter_describe(c->arb));
}

/* walmirrorctl fleet --json: the pair with that name (a new reference), which must be there. */
static json_t *
fleet_pair(const char *name, size_t expect_pairs)
{
    char *out = NULL, *err = NULL;
    int rc = tu_capture(dir, &out, &err, CTL, "--etcd '%s' fleet --json", cluster.endpoints);
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

    client_start(&A1, "p1-b", NULL, MSG_ROLE_SOURCE);
    client_start(&B1, "p1-a", NULL, MSG_ROLE_SINK);
    client_start(&A2, "p2-b", PREFIX2, MSG_ROLE_SOURCE);
    client_start(&B2, "p2-a", PREFIX2, MSG_ROLE_SINK);
    wait_reachable(&A1);
    wait_reachable(&B1);
    wait_reachable(&A2);
    wait_reachable(&B2);
    at_run_for(0.5);
    r1 = et_epoch_record(&cluster, prefix1);
    r2 = et_epoch_record(&cluster, PREFIX2);
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
    ck_assert_str_eq(json_string_value(json_object_get(fleet_member(p, "p1-a"), "role")), "source");
    ck_assert_str_eq(json_string_value(json_object_get(fleet_member(p, "p1-a"), "sync_state")),
                     "sync");
    ck_assert_int_eq(
        json_integer_value(json_object_get(fleet_member(p, "p1-a"), "flush_lag_bytes")), 4096);
    ck_assert_str_eq(json_string_value(json_object_get(fleet_member(p, "p1-b"), "role")), "sink");
    json_decref(p);
    p = fleet_pair("pair2", 2);
    ck_assert_str_eq(json_string_value(json_object_get(p, "holder")), "p2-a");
    json_decref(p);

    rc = tu_capture(dir, &out, &err, CTL, "--etcd=%s fleet", cluster.endpoints);
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

    at_stop(&A1);
    snprintf(key, sizeof(key), "%smembers/p1-a", prefix1);
    end = pt_now_s() + TTL_MS / 1000.0 + 3;
    while ((v = et_get(&cluster, key)) != NULL && pt_now_s() < end) {
        free(v);
        at_run_for(0.1);
    }
    ck_assert_msg(v == NULL, "p1-a's key outlived its lease");
    at_run_for(0.2);
    at_ask(&B1, ARBITER_PROMOTE, 1, 0x3000000, 0);
    at_expect(&B1, true, "epoch 2 granted to p1-b");
    at_report(&B1, MSG_ROLE_SOURCE, 2, 0x3000000, &B1.verdict);

    /* pair 2 untouched */
    at_run_for(0.5);
    r2 = et_epoch_record(&cluster, PREFIX2);
    ck_assert_uint_eq(r2.epoch, 1);
    ck_assert_str_eq(r2.primary, "p2-a");
    ck_assert_int_eq(A2.told + B2.told, 0);
    at_ask(&B2, ARBITER_PROMOTE, 1, 0x3000000, 0);
    at_expect(&B2, false, "the primary p2-a was heard");
    /* and pair 2's exposure tells pair 1 nothing */
    at_ask(&A2, ARBITER_EXPOSE, 1, 0x3000000, 0x2800000);
    at_expect(&A2, true, "epoch 2 granted to p2-a: it runs exposed");
    at_report(&A2, MSG_ROLE_SOURCE, 2, 0x3000000, &A2.verdict);
    at_run_for(0.5);
    ck_assert_int_eq(B1.told, 0);
    ck_assert_int_eq(B2.told, 1);
    ck_assert_uint_eq(et_epoch_record(&cluster, prefix1).epoch, 2);

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
    at_run_for(0.3);
    at_ask(&B2, ARBITER_PROMOTE, 2, 0x3000000, 0);
    at_expect(&B2, false, "automatic fail-over is paused in etcd (" PREFIX2 "paused exists");
    p = fleet_pair("pair2", 2);
    ck_assert(json_is_true(json_object_get(p, "paused")));
    json_decref(p);
    ck_assert_msg(strstr(arbiter_describe(B2.arb), "automatic fail-over paused") != NULL, "%s",
                  arbiter_describe(B2.arb));
    et_del(&cluster, PREFIX2 "paused");
    at_run_for(0.3);
    ck_assert_msg(strstr(arbiter_describe(B2.arb), "paused") == NULL, "%s",
                  arbiter_describe(B2.arb));
}
END_TEST

START_TEST(d_shared_prefix_named)
{
    static struct at_site C = {.name = "p1-c"};

    /* a second pair configured with pair 1's prefix */
    client_start(&C, "p1-b", prefix1, MSG_ROLE_SINK);
    wait_reachable(&C);
    at_run_for(0.5);
    at_ask(&B1, ARBITER_EXPOSE, 2, 0x3000000, 0x3000000);
    at_expect(&B1, false, "also holds a liveness key of p1-c");
    ck_assert_msg(strstr(arbiter_describe(B1.arb), "p1-c") != NULL, "%s", arbiter_describe(B1.arb));
    at_stop(&C);
    config_free(&C.cfg);
}
END_TEST

START_TEST(e_fleet_errors)
{
    char *out = NULL, *err = NULL;
    int rc;

    rc =
        tu_capture(dir, &out, &err, CTL, "--etcd '%s' fleet --prefix /nothing/", cluster.endpoints);
    ck_assert_int_eq(rc, 0);
    ck_assert_msg(strstr(out, "(no pair under /nothing/)") != NULL, "%s", out);
    rc = tu_capture(dir, &out, &err, CTL, "--etcd '%s' fleet --prefix /nothing/ --json",
                    cluster.endpoints);
    ck_assert_int_eq(rc, 0);
    ck_assert_msg(strcmp(out, "[]\n") == 0, "%s", out);

    rc = tu_capture(dir, &out, &err, CTL, "--etcd http://127.0.0.1:1 fleet");
    ck_assert_int_eq(rc, 1);
    ck_assert_msg(strstr(err, "http://127.0.0.1:1: ") != NULL, "%s", err);

    rc = tu_capture(dir, &out, &err, CTL, "fleet");
    ck_assert_int_eq(rc, 2);
    ck_assert_msg(strstr(err, "fleet needs --etcd ENDPOINTS") != NULL, "%s", err);
    rc = tu_capture(dir, &out, &err, CTL, "--etcd 127.0.0.1:2379 fleet");
    ck_assert_int_eq(rc, 2);
    ck_assert_msg(strstr(err, "not an http:// or https:// URL") != NULL, "%s", err);
    rc =
        tu_capture(dir, &out, &err, CTL, "--etcd '%s' fleet --prefix walmirror", cluster.endpoints);
    ck_assert_int_eq(rc, 2);
    rc = tu_capture(dir, &out, &err, CTL, "--etcd '%s' fleet --etcd-cert x", cluster.endpoints);
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
    int failed;

    etcdrec_default_prefix(prefix1, sizeof(prefix1), "p1-a", "p1-b");
    et_start(&cluster, 3, false);
    loop = at_init();
    dir = tu_tmpdir("etcd-fleet");

    tcase_add_test(tc, a_two_pairs_register);
    tcase_add_test(tc, b_failover_in_one_pair);
    tcase_add_test(tc, c_paused_pair);
    tcase_add_test(tc, d_shared_prefix_named);
    tcase_add_test(tc, e_fleet_errors);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    failed = pt_run_in_order(s);
    at_close((struct at_site *const[]){&A1, &B1, &A2, &B2}, 4);
    if (failed != 0)
        et_keep_logs(&cluster);
    et_stop(&cluster);
    tu_rmtree(dir);
    free(dir);
    return failed == 0 ? 0 : 1;
}
