/*
 * test_etcdrec.c - the parts of the etcd arbiter that need no etcd: the endpoint list
 * (etcd_endpoints_parse), etcd's JSON helpers (base64, int64 strings, prefix ranges, key-values),
 * and a pair's records and keys (etcdrec.h).
 */
#include <check.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "etcd.h"
#include "etcdrec.h"
#include "msg.h"

static int
parse(const char *list, char urls[][ETCD_URL_MAX], char *err)
{
    return etcd_endpoints_parse(list, urls, ETCD_ENDPOINTS_MAX, err, 400);
}

START_TEST(endpoints)
{
    char urls[ETCD_ENDPOINTS_MAX][ETCD_URL_MAX], err[400];
    static const struct {
        const char *list, *why;
    } bad[] = {
        {"", "empty entry"},
        {"http://a:2379,", "empty entry"},
        {"127.0.0.1:2379", "not an http:// or https:// URL"},
        {"ftp://a:2379", "not an http:// or https:// URL"},
        {"http://a", "lacks a port"},
        {"http://:2379", "names no host"},
        {"http://a:0", "no port in 1..65535"},
        {"http://a:65536", "no port in 1..65535"},
        {"http://a:2379/v3", "unexpected '/' after the port"},
        {"http://user@a:2379", "unexpected '@' after the host"},
        {"http://[::1:2379", "'[' without ']'"},
        {"http://a:1,http://a:1", "listed twice"},
        {"http://a:1,http://a:2,http://a:3,http://a:4,http://a:5,http://a:6,http://a:7,"
         "http://a:8,http://a:9",
         "more than 8 endpoints"},
    };

    ck_assert_int_eq(
        parse(" https://10.0.0.1:2379/ ,HTTPS://etcd-2.example:2379,https://[::1]:2379", urls, err),
        3);
    ck_assert_str_eq(urls[0], "https://10.0.0.1:2379");
    ck_assert_str_eq(urls[1], "https://etcd-2.example:2379");
    ck_assert_str_eq(urls[2], "https://[::1]:2379");
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_msg(parse(bad[i].list, urls, err) == -EINVAL, "\"%s\" accepted", bad[i].list);
        ck_assert_msg(strstr(err, bad[i].why) != NULL, "\"%s\": \"%s\" lacks \"%s\"", bad[i].list,
                      err, bad[i].why);
    }
}
END_TEST

START_TEST(json_helpers)
{
    json_t *kv, *j = etcd_b64("site-a", 6), *end;
    char *back;
    size_t len;
    struct etcd_kv d;

    ck_assert_str_eq(json_string_value(j), "c2l0ZS1h");
    back = etcd_unb64(j, &len);
    ck_assert_uint_eq(len, 6);
    ck_assert_str_eq(back, "site-a");
    free(back);
    json_decref(j);
    for (size_t n = 0; n < 5; n++) { /* every padding */
        j = etcd_b64("abcd", n);
        back = etcd_unb64(j, &len);
        ck_assert_uint_eq(len, n);
        ck_assert(memcmp(back, "abcd", n) == 0);
        free(back);
        json_decref(j);
    }
    j = json_string("not base64!");
    ck_assert_ptr_null(etcd_unb64(j, &len));
    json_decref(j);
    back = etcd_unb64(NULL, &len); /* proto3 leaves an empty value out */
    ck_assert_uint_eq(len, 0);
    free(back);

    j = json_pack("{s:s, s:I, s:s, s:s}", "a", "12345678901234", "b", (json_int_t)7, "c", "x1", "d",
                  "");
    ck_assert_int_eq(etcd_int(j, "a"), 12345678901234LL);
    ck_assert_int_eq(etcd_int(j, "b"), 7);
    ck_assert_int_eq(etcd_int(j, "c"), -1);
    ck_assert_int_eq(etcd_int(j, "d"), -1);
    ck_assert_int_eq(etcd_int(j, "missing"), 0);
    json_decref(j);

    end = etcd_prefix_end("/walmirror/");
    back = etcd_unb64(end, &len);
    ck_assert_str_eq(back, "/walmirror0");
    free(back);
    json_decref(end);

    kv = json_pack("{s:s, s:s, s:s, s:s}", "key", "L3cvZXBvY2g=", "mod_revision", "9",
                   "create_revision", "3", "value", "e30=");
    ck_assert_int_eq(etcd_kv_decode(kv, &d), 0);
    ck_assert_str_eq(d.key, "/w/epoch");
    ck_assert_str_eq(d.value, "{}");
    ck_assert_int_eq(d.mod_revision, 9);
    ck_assert_int_eq(d.create_revision, 3);
    ck_assert_int_eq(d.lease, 0);
    etcd_kv_clear(&d);
    json_object_set_new(kv, "mod_revision", json_string("nine"));
    ck_assert_int_eq(etcd_kv_decode(kv, &d), -EPROTO);
    json_decref(kv);
}
END_TEST

START_TEST(records)
{
    struct etcdrec_member m = {.role = MSG_ROLE_SOURCE,
                               .epoch = 4,
                               .durable_lsn = 0x16B374D848ull,
                               .timeline = 2,
                               .flush_lag_bytes = 8192,
                               .apply_lag_bytes = 1,
                               .flush_lag_s = 0.25,
                               .apply_lag_s = -1,
                               .wal_at_risk_bytes = 3,
                               .updated_unix_us = 1700000000000001ull},
                          back;
    struct wm_state st = {.epoch = 7,
                          .changed_unix_us = 1700000000000002ull,
                          .exposed_lsn = 0x4100000,
                          .exposed_unix_us = 1700000000000003ull},
                    st2;
    char *text, err[300];

    strcpy(m.node, "site-a");
    strcpy(m.sync_state, "exposed");
    text = etcdrec_member_json(&m);
    ck_assert_ptr_nonnull(text);
    ck_assert_msg(strstr(text, "\"durable_lsn\":\"16/B374D848\"") != NULL, "%s", text);
    ck_assert_msg(strstr(text, "\"apply_lag_s\":null") != NULL, "%s", text);
    ck_assert_int_eq(etcdrec_member_parse(text, strlen(text), &back, err, sizeof(err)), 0);
    free(text);
    ck_assert_str_eq(back.node, "site-a");
    ck_assert_int_eq(back.role, MSG_ROLE_SOURCE);
    ck_assert_uint_eq(back.epoch, 4);
    ck_assert_uint_eq(back.durable_lsn, 0x16B374D848ull);
    ck_assert_uint_eq(back.timeline, 2);
    ck_assert_str_eq(back.sync_state, "exposed");
    ck_assert_uint_eq(back.flush_lag_bytes, 8192);
    ck_assert_double_eq(back.flush_lag_s, 0.25);
    ck_assert(back.apply_lag_s < 0);
    ck_assert_uint_eq(back.wal_at_risk_bytes, 3);
    ck_assert_uint_eq(back.updated_unix_us, 1700000000000001ull);

    strcpy(st.primary, "site-b");
    text = etcdrec_epoch_json(&st);
    ck_assert_int_eq(etcdrec_epoch_parse(text, strlen(text), &st2, err, sizeof(err)), 0);
    free(text);
    ck_assert_mem_eq(&st, &st2, sizeof(st));

    /* what a reader refuses, naming it; a newer writer's extra fields are fine */
    {
        static const struct {
            const char *text, *why;
        } bad[] = {
            {"{\"epoch\":", "not JSON"},
            {"[1]", "not a JSON object"},
            {"{\"holder\":\"a\"}", "\"epoch\" is missing"},
            {"{\"epoch\":0,\"holder\":\"a\"}", "\"epoch\" is not a valid whole number"},
            {"{\"epoch\":2,\"holder\":\"a b\"}", "\"holder\" is not a node name"},
            {"{\"epoch\":2,\"holder\":\"a\",\"exposed_lsn\":\"0/\"}", "not an LSN"},
        };

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            ck_assert_int_eq(
                etcdrec_epoch_parse(bad[i].text, strlen(bad[i].text), &st2, err, sizeof(err)),
                -EINVAL);
            ck_assert_msg(strstr(err, bad[i].why) != NULL, "%s: %s", bad[i].text, err);
            ck_assert_uint_eq(st2.epoch, 1); /* left at the defaults */
        }
        text = "{\"epoch\":3,\"holder\":\"\",\"future\":[1,2]}";
        ck_assert_int_eq(etcdrec_epoch_parse(text, strlen(text), &st2, err, sizeof(err)), 0);
        ck_assert_uint_eq(st2.epoch, 3);
        ck_assert_str_eq(st2.primary, "");
        text = "{\"node\":\"a\",\"role\":\"primary\",\"epoch\":1}";
        ck_assert_int_eq(etcdrec_member_parse(text, strlen(text), &back, err, sizeof(err)),
                         -EINVAL);
        ck_assert_msg(strstr(err, "\"role\" is missing or unknown") != NULL, "%s", err);
    }
}
END_TEST

START_TEST(keys)
{
    const char *name = NULL;
    size_t n = 0, plen = 0;
    char prefix[ETCDREC_PREFIX_MAX + 1];
    static const char k1[] = "/walmirror/p/epoch", k2[] = "/walmirror/p/members/site-a",
                      k3[] = "/walmirror/p/paused", k4[] = "/walmirror/p/members/a/b",
                      k5[] = "/walmirror/p/other", k6[] = "/walmirror/p/sub/members/x";

    ck_assert_int_eq(etcdrec_classify("/walmirror/p/", k1, strlen(k1), &name, &n),
                     ETCDREC_KEY_EPOCH);
    ck_assert_int_eq(etcdrec_classify("/walmirror/p/", k2, strlen(k2), &name, &n),
                     ETCDREC_KEY_MEMBER);
    ck_assert_uint_eq(n, 6);
    ck_assert(memcmp(name, "site-a", 6) == 0);
    ck_assert_int_eq(etcdrec_classify("/walmirror/p/", k3, strlen(k3), &name, &n),
                     ETCDREC_KEY_PAUSED);
    ck_assert_int_eq(etcdrec_classify("/walmirror/p/", k4, strlen(k4), &name, &n),
                     ETCDREC_KEY_OTHER);
    ck_assert_int_eq(etcdrec_classify("/walmirror/q/", k1, strlen(k1), &name, &n),
                     ETCDREC_KEY_OTHER);

    ck_assert_int_eq(etcdrec_split(k1, strlen(k1), &plen), ETCDREC_KEY_EPOCH);
    ck_assert_uint_eq(plen, strlen("/walmirror/p/"));
    ck_assert_int_eq(etcdrec_split(k2, strlen(k2), &plen), ETCDREC_KEY_MEMBER);
    ck_assert_uint_eq(plen, strlen("/walmirror/p/"));
    ck_assert_int_eq(etcdrec_split(k3, strlen(k3), &plen), ETCDREC_KEY_PAUSED);
    ck_assert_int_eq(etcdrec_split(k5, strlen(k5), &plen), ETCDREC_KEY_OTHER);
    ck_assert_int_eq(etcdrec_split(k6, strlen(k6), &plen), ETCDREC_KEY_MEMBER);
    ck_assert_uint_eq(plen, strlen("/walmirror/p/sub/"));

    etcdrec_default_prefix(prefix, sizeof(prefix), "site-b", "site-a");
    ck_assert_str_eq(prefix, "/walmirror/site-a+site-b/");
    etcdrec_default_prefix(prefix, sizeof(prefix), "site-a", "site-b");
    ck_assert_str_eq(prefix, "/walmirror/site-a+site-b/");
    ck_assert_int_eq(etcdrec_role_parse("sink"), MSG_ROLE_SINK);
    ck_assert_int_eq(etcdrec_role_parse("Sink"), -1);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("etcdrec");
    TCase *tc = tcase_create("etcdrec");
    SRunner *sr;
    int failed;

    tcase_add_test(tc, endpoints);
    tcase_add_test(tc, json_helpers);
    tcase_add_test(tc, records);
    tcase_add_test(tc, keys);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
