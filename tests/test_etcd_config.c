/*
 * test_etcd_config.c - the arbiter's configuration keys (agent/config.c): arbiter, etcd_endpoints,
 * etcd_prefix, etcd_ca / etcd_cert / etcd_key, etcd_lease_ttl.  Their values and defaults,
 * --check-config's dump read back to the same values, and each mistake's one line naming the
 * file, the line and the key.
 *
 * Each case writes a site file: a valid base (lines 1-10) followed by the case's lines, in a
 * fresh directory holding dummy TLS files (config.c only checks that they are readable).
 */
#include <check.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "testutil.h"

#define BASE_LINES 10

static char *dir;
static char path[PATH_MAX];
static char err[1024];
static struct wm_config cfg;

static void
write_text(const char *file, const char *text)
{
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, file);
    f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_ge(fputs(text, f), 0);
    ck_assert_int_eq(fclose(f), 0);
}

static void
setup(void)
{
    dir = tu_tmpdir("etcd-config");
    write_text("ca.crt", "ca\n");
    write_text("site-a.crt", "crt\n");
    write_text("site-a.key", "key\n");
    write_text("etcd-ca.crt", "ca\n");
    write_text("etcd-client.crt", "crt\n");
    write_text("etcd-client.key", "key\n");
    memset(&cfg, 0, sizeof(cfg));
}

static void
teardown(void)
{
    config_free(&cfg);
    tu_rmtree(dir);
    free(dir);
}

/* Loads the base site file followed by extra (lines BASE_LINES + 1 ...). */
static int
load(const char *extra)
{
    char *text;
    int rc;

    ck_assert_int_gt(asprintf(&text,
                              "node_name = site-a\n"
                              "listen = 127.0.0.1:7001\n"
                              "peer = site-b@127.0.0.1:7002\n"
                              "tls_ca = ca.crt\n"
                              "tls_cert = site-a.crt\n"
                              "tls_key = site-a.key\n"
                              "pg_conninfo = 'host=/run/postgresql'\n"
                              "pgdata = /var/lib/postgresql/15/main\n"
                              "spool_dir = /var/lib/walmirror/spool\n"
                              "wal_listen = 127.0.0.1:7003\n"
                              "%s",
                              extra),
                     0);
    write_text("site.conf", text);
    free(text);
    config_free(&cfg);
    rc = config_load(path, &cfg, err, sizeof(err));
    return rc;
}

/* The file fails to load with "site.conf:LINE: key "KEY": what..." (line 0: no line). */
static void
expect_error(const char *extra, unsigned line, const char *key, const char *what)
{
    char want[512];

    ck_assert_msg(load(extra) < 0, "accepted: %s", extra);
    if (line > 0)
        snprintf(want, sizeof(want), "site.conf:%u: key \"%s\": %s", line, key, what);
    else
        snprintf(want, sizeof(want), "site.conf: %s", what);
    ck_assert_msg(strstr(err, want) != NULL, "\"%s\" lacks \"%s\"", err, want);
}

START_TEST(values_and_defaults)
{
    char ca[PATH_MAX + 16];

    ck_assert_int_eq(load(""), 0);
    ck_assert_int_eq(cfg.arbiter, CONFIG_ARBITER_NONE);
    ck_assert_ptr_null(cfg.etcd_endpoints);
    ck_assert_int_eq(load("witness = w@127.0.0.1:7005\n"), 0);
    ck_assert_int_eq(cfg.arbiter, CONFIG_ARBITER_WITNESS);
    ck_assert_int_eq(load("arbiter = Witness\nwitness = w@127.0.0.1:7005\n"), 0);
    ck_assert_int_eq(cfg.arbiter, CONFIG_ARBITER_WITNESS);
    ck_assert_str_eq(config_arbiter_name(cfg.arbiter), "witness");

    ck_assert_msg(load("arbiter = etcd\n"
                       "etcd_endpoints = 'https://10.0.0.1:2379, https://10.0.0.2:2379'\n"
                       "etcd_ca = etcd-ca.crt\n"
                       "etcd_cert = etcd-client.crt\n"
                       "etcd_key = etcd-client.key\n") == 0,
                  "%s", err);
    ck_assert_int_eq(cfg.arbiter, CONFIG_ARBITER_ETCD);
    ck_assert_str_eq(cfg.etcd_endpoints, "https://10.0.0.1:2379, https://10.0.0.2:2379");
    /* the default prefix: the two node names in byte order */
    ck_assert_str_eq(cfg.etcd_prefix, "/walmirror/site-a+site-b/");
    snprintf(ca, sizeof(ca), "%s/etcd-ca.crt", dir);
    ck_assert_str_eq(cfg.etcd_ca, ca); /* resolved against the file's directory */
    ck_assert_uint_eq(cfg.etcd_lease_ttl_ms, 3000);
    ck_assert(!cfg.has_witness);

    ck_assert_int_eq(load("arbiter = etcd\netcd_endpoints = http://e:2379\n"
                          "failover_timeout = 2500ms\n"),
                     0);
    ck_assert_uint_eq(cfg.etcd_lease_ttl_ms, 2000); /* not above failover_timeout */
    ck_assert_int_eq(load("arbiter = etcd\netcd_endpoints = http://e:2379\n"
                          "failover_timeout = 30s\netcd_lease_ttl = 10s\n"
                          "etcd_prefix = /db/prod/orders/\n"),
                     0);
    ck_assert_uint_eq(cfg.etcd_lease_ttl_ms, 10000);
    ck_assert_str_eq(cfg.etcd_prefix, "/db/prod/orders/");
    ck_assert_ptr_null(cfg.etcd_ca);
}
END_TEST

START_TEST(dump_round_trip)
{
    static const char *const files[] = {
        "",
        "witness = w@127.0.0.1:7005\n",
        "arbiter = etcd\netcd_endpoints = http://e1:2379,http://e2:2379\n",
        "arbiter = etcd\netcd_endpoints = 'https://[::1]:2379'\netcd_prefix = '/p/q/'\n",
        "arbiter = etcd\netcd_endpoints = https://e:2379\netcd_ca = etcd-ca.crt\n"
        "etcd_cert = etcd-client.crt\netcd_key = etcd-client.key\netcd_lease_ttl = 4s\n",
    };

    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        struct wm_config again = {0};
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);

        ck_assert_msg(load(files[i]) == 0, "%s", err);
        ck_assert_int_eq(config_dump(f, &cfg), 0);
        ck_assert_int_eq(fclose(f), 0);
        ck_assert_msg(config_parse_buffer("dump", text, len, 0, &again, err, sizeof(err)) == 0,
                      "%s\n%s", err, text);
        ck_assert_int_eq(again.arbiter, cfg.arbiter);
        ck_assert_msg(strstr(text, "arbiter = ") != NULL, "%s", text);
        if (cfg.arbiter == CONFIG_ARBITER_ETCD) {
            ck_assert_str_eq(again.etcd_endpoints, cfg.etcd_endpoints);
            ck_assert_str_eq(again.etcd_prefix, cfg.etcd_prefix);
            ck_assert_uint_eq(again.etcd_lease_ttl_ms, cfg.etcd_lease_ttl_ms);
            ck_assert_int_eq(again.etcd_ca == NULL, cfg.etcd_ca == NULL);
            if (cfg.etcd_ca != NULL) {
                ck_assert_str_eq(again.etcd_ca, cfg.etcd_ca);
                ck_assert_str_eq(again.etcd_cert, cfg.etcd_cert);
                ck_assert_str_eq(again.etcd_key, cfg.etcd_key);
            }
        }
        config_free(&again);
        free(text);
    }
}
END_TEST

START_TEST(errors)
{
    const unsigned l = BASE_LINES + 1; /* the first line after the base */

    expect_error("arbiter = zookeeper\n", l, "arbiter",
                 "invalid value \"zookeeper\"; valid values are witness, etcd, none");
    expect_error("arbiter = witness\n", l, "arbiter",
                 "arbiter = witness needs the witness key (NAME@host:port)");
    expect_error("arbiter = etcd\netcd_endpoints = http://e:2379\nwitness = w@127.0.0.1:7005\n",
                 l + 2, "witness", "witness is set but arbiter = etcd: set one arbiter");
    expect_error("witness = w@127.0.0.1:7005\narbiter = none\n", l + 1, "arbiter",
                 "witness is set but arbiter = none");
    expect_error("arbiter = etcd\n", 0, "",
                 "missing required key \"etcd_endpoints\" (arbiter = etcd)");
    expect_error("etcd_lease_ttl = 3s\netcd_prefix = /x/\n", l, "etcd_lease_ttl",
                 "used only with arbiter = etcd (arbiter is none)");
    expect_error("arbiter = etcd\netcd_endpoints = 'http://e:2379, 10.0.0.2:2379'\n", l + 1,
                 "etcd_endpoints",
                 "endpoint 2: \"10.0.0.2:2379\" is not an http:// or https:// URL");
    expect_error("arbiter = etcd\netcd_endpoints = http://e:2379/v3\n", l + 1, "etcd_endpoints",
                 "endpoint 1: \"http://e:2379/v3\": unexpected '/' after the port");
    expect_error("arbiter = etcd\netcd_endpoints = 'http://a:2379,https://b:2379'\n", l + 1,
                 "etcd_endpoints", "mixes http:// and https:// endpoints");
    expect_error("arbiter = etcd\netcd_endpoints = http://e:2379\netcd_prefix = walmirror/x\n",
                 l + 2, "etcd_prefix", "prefix \"walmirror/x\" must start and end with '/'");
    expect_error("arbiter = etcd\netcd_endpoints = http://e:2379\netcd_prefix = '/a b/'\n", l + 2,
                 "etcd_prefix", "prefix \"/a b/\" may hold only printable ASCII without blanks");
    expect_error("arbiter = etcd\netcd_endpoints = https://e:2379\netcd_key = etcd-client.key\n"
                 "etcd_ca = etcd-ca.crt\n",
                 l + 2, "etcd_key",
                 "etcd_ca, etcd_cert and etcd_key go together: etcd_cert is not set");
    expect_error("arbiter = etcd\netcd_endpoints = http://e:2379\netcd_ca = etcd-ca.crt\n"
                 "etcd_cert = etcd-client.crt\netcd_key = etcd-client.key\n",
                 l + 2, "etcd_ca",
                 "TLS to etcd needs https:// endpoints; etcd_endpoints are http://");
    expect_error("arbiter = etcd\netcd_endpoints = https://e:2379\netcd_ca = missing.crt\n"
                 "etcd_cert = etcd-client.crt\netcd_key = etcd-client.key\n",
                 l + 2, "etcd_ca", "cannot read \"");
    expect_error("arbiter = etcd\netcd_endpoints = http://e:2379\netcd_lease_ttl = 2500ms\n", l + 2,
                 "etcd_lease_ttl", "etcd grants leases in whole seconds, e.g. '3s'");
    expect_error("arbiter = etcd\netcd_endpoints = http://e:2379\netcd_lease_ttl = 1s\n", l + 2,
                 "etcd_lease_ttl", "etcd_lease_ttl (1s) is shorter than etcd's shortest lease, 2s");
    expect_error("arbiter = etcd\netcd_endpoints = http://e:2379\netcd_lease_ttl = 10s\n", l + 2,
                 "etcd_lease_ttl",
                 "etcd_lease_ttl (10s) must not be longer than failover_timeout (5000 ms, the "
                 "default)");
    expect_error("etcd_lease_ttl = 4s\narbiter = etcd\netcd_endpoints = http://e:2379\n"
                 "failover_timeout = 3s\n",
                 l + 3, "failover_timeout",
                 "etcd_lease_ttl (4s) must not be longer than failover_timeout (3000 ms)");
    expect_error("arbiter = etcd\netcd_endpoints = http://e:2379\nfailover_timeout = 1500ms\n",
                 l + 2, "failover_timeout",
                 "with arbiter = etcd, failover_timeout (1500 ms) must be at least 2s");
}
END_TEST

START_TEST(witness_file)
{
    write_text("ca.crt", "ca\n");
    write_text("w.conf", "node_name = w\nrole = witness\nlisten = 127.0.0.1:7005\n"
                         "sites = 'site-a@127.0.0.1:7001, site-b@127.0.0.1:7002'\n"
                         "tls_ca = ca.crt\ntls_cert = site-a.crt\ntls_key = site-a.key\n"
                         "state_dir = /tmp\netcd_endpoints = http://e:2379\n");
    ck_assert_int_lt(config_load(path, &cfg, err, sizeof(err)), 0);
    ck_assert_msg(strstr(err, "w.conf:9: key \"etcd_endpoints\": not used by a witness") != NULL,
                  "%s", err);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("etcd_config");
    TCase *tc = tcase_create("etcd_config");
    SRunner *sr;
    int failed;

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, values_and_defaults);
    tcase_add_test(tc, dump_round_trip);
    tcase_add_test(tc, errors);
    tcase_add_test(tc, witness_file);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
