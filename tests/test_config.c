/*
 * test_config.c - Check suite for agent/config.c: valid site and witness files parse to the
 * expected values, every kind of mistake gives one message naming the file, the line and the
 * key, and no input, however broken, crashes the parser.
 *
 * Each test writes its configuration into a fresh directory from tu_tmpdir() holding dummy TLS
 * files (the config module only checks that they are readable).
 */
#include <check.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "testutil.h"

static char *dir;
static char conf_path[PATH_MAX];
static char err[1024];
static struct wm_config cfg;
static unsigned extra_line; /* line number of the first line of "extra" in site_conf() */

static void
write_file(const char *path, const char *data, size_t len)
{
    FILE *f = fopen(path, "wb");

    ck_assert_msg(f != NULL, "cannot create %s", path);
    ck_assert_uint_eq(fwrite(data, 1, len, f), len);
    ck_assert_int_eq(fclose(f), 0);
}

static const char *
in_dir(const char *file)
{
    static char path[PATH_MAX];

    snprintf(path, sizeof(path), "%s/%s", dir, file);
    return path;
}

static void
setup(void)
{
    dir = tu_tmpdir("config");
    write_file(in_dir("ca.crt"), "ca\n", 3);
    write_file(in_dir("site-a.crt"), "crt\n", 4);
    write_file(in_dir("site-a.key"), "key\n", 4);
    write_file(in_dir("token"), "secret\n", 7);
    memset(&cfg, 0, sizeof(cfg));
    err[0] = '\0';
}

static void
teardown(void)
{
    config_free(&cfg);
    tu_rmtree(dir);
    free(dir);
    dir = NULL;
}

/* Whether key is one of the space-separated words of omit. */
static int
omitted(const char *omit, const char *key)
{
    size_t klen = strlen(key);

    for (const char *p = omit; p != NULL && (p = strstr(p, key)) != NULL; p += klen) {
        if ((p == omit || p[-1] == ' ') && (p[klen] == '\0' || p[klen] == ' '))
            return 1;
    }
    return 0;
}

static void
emit(FILE *f, unsigned *lines, const char *omit, const char *key, const char *line)
{
    if (omitted(omit, key))
        return;
    fprintf(f, "%s\n", line);
    (*lines)++;
}

/*
 * Writes a valid site configuration, without the lines of the keys listed in omit (separated
 * by spaces; NULL for none), followed by extra, as site.conf; returns its path and sets
 * extra_line.
 */
static const char *
site_conf(const char *omit, const char *extra)
{
    char tls[3][PATH_MAX + 32];
    char *text = NULL;
    size_t len = 0;
    unsigned lines = 0;
    FILE *f = open_memstream(&text, &len);

    ck_assert_ptr_nonnull(f);
    snprintf(tls[0], sizeof(tls[0]), "tls_ca = '%s/ca.crt'", dir);
    snprintf(tls[1], sizeof(tls[1]), "tls_cert = '%s/site-a.crt'", dir);
    snprintf(tls[2], sizeof(tls[2]), "tls_key = '%s/site-a.key'", dir);
    emit(f, &lines, omit, "#", "# site A of the test pair");       /* 1 */
    emit(f, &lines, omit, "node_name", "node_name = site-a");      /* 2 */
    emit(f, &lines, omit, "listen", "listen = 127.0.0.1:7001");    /* 3 */
    emit(f, &lines, omit, "peer", "peer = site-b@127.0.0.1:7002"); /* 4 */
    emit(f, &lines, omit, "tls_ca", tls[0]);                       /* 5 */
    emit(f, &lines, omit, "tls_cert", tls[1]);                     /* 6 */
    emit(f, &lines, omit, "tls_key", tls[2]);                      /* 7 */
    emit(f, &lines, omit, "pg_conninfo",                           /* 8 */
         "pg_conninfo = 'host=/var/run/postgresql port=5432 user=walmirror'");
    emit(f, &lines, omit, "pgdata", "pgdata = /var/lib/postgresql/15/main");    /* 9 */
    emit(f, &lines, omit, "spool_dir", "spool_dir = /var/lib/walmirror/spool"); /* 10 */
    emit(f, &lines, omit, "wal_listen", "wal_listen = 127.0.0.1:7003");         /* 11 */
    extra_line = lines + 1;
    if (extra != NULL)
        fprintf(f, "%s\n", extra);
    ck_assert_int_eq(fclose(f), 0);
    snprintf(conf_path, sizeof(conf_path), "%s/site.conf", dir);
    write_file(conf_path, text, len);
    free(text);
    return conf_path;
}

static int
load_site(const char *omit, const char *extra)
{
    return config_load(site_conf(omit, extra), &cfg, err, sizeof(err));
}

static int
load_text(const char *name, const char *text, size_t len)
{
    snprintf(conf_path, sizeof(conf_path), "%s/%s", dir, name);
    write_file(conf_path, text, len);
    return config_load(conf_path, &cfg, err, sizeof(err));
}

/* The error must start with "PATH:LINE: key "KEY": " and contain what. */
static void
expect_key_err(int rc, unsigned line, const char *key, const char *what)
{
    char prefix[PATH_MAX + 128];

    ck_assert_msg(rc < 0, "expected an error about %s, got rc %d", key, rc);
    ck_assert_ptr_null(cfg.path);
    snprintf(prefix, sizeof(prefix), "%s:%u: key \"%s\": ", conf_path, line, key);
    ck_assert_msg(strncmp(err, prefix, strlen(prefix)) == 0,
                  "error \"%s\" does not start with \"%s\"", err, prefix);
    ck_assert_msg(strstr(err, what) != NULL, "error \"%s\" lacks \"%s\"", err, what);
}

static void
expect_syntax_err(int rc, unsigned line, const char *what)
{
    char prefix[PATH_MAX + 128];

    ck_assert_int_eq(rc, -EINVAL);
    snprintf(prefix, sizeof(prefix), "%s:%u: syntax error: ", conf_path, line);
    ck_assert_msg(strncmp(err, prefix, strlen(prefix)) == 0,
                  "error \"%s\" does not start with \"%s\"", err, prefix);
    ck_assert_msg(strstr(err, what) != NULL, "error \"%s\" lacks \"%s\"", err, what);
}

/* ---------------------------------------------------------------------------------------------
 * Valid files
 */

START_TEST(test_site_full)
{
    char extra[4096];

    snprintf(extra, sizeof(extra),
             "witness = wit@[::1]:7010\n"
             "http_listen = '[::1]:8080'\n"
             "http_token_file = '%s/token'\n"
             "slot_name = walmirror_a\n"
             "application_name = site_a\n"
             "failover_timeout = 1500ms\n"
             "heartbeat_interval = 200ms\n"
             "peer_timeout = '3 s'\n"
             "auto_rejoin = yes\n"
             "spool_keep = 2GB\n"
             "compression = off\n"
             "log_level = debug\n"
             "wal_server_auth = trust\n"
             "role = auto\n",
             dir);
    ck_assert_int_eq(load_site(NULL, extra), 0);
    ck_assert_str_eq(err, "");
    ck_assert_str_eq(cfg.path, conf_path);
    ck_assert_str_eq(cfg.node_name, "site-a");
    ck_assert_int_eq(cfg.role, CONFIG_ROLE_AUTO);
    ck_assert_str_eq(cfg.listen.text, "127.0.0.1:7001");
    ck_assert_str_eq(cfg.listen.host, "127.0.0.1");
    ck_assert_uint_eq(cfg.listen.port, 7001);
    ck_assert_str_eq(cfg.peer.name, "site-b");
    ck_assert_str_eq(cfg.peer.addr.host, "127.0.0.1");
    ck_assert_uint_eq(cfg.peer.addr.port, 7002);
    ck_assert(cfg.has_witness);
    ck_assert_str_eq(cfg.witness.name, "wit");
    ck_assert_str_eq(cfg.witness.addr.host, "::1");
    ck_assert_str_eq(cfg.witness.addr.text, "[::1]:7010");
    ck_assert_uint_eq(cfg.witness.addr.port, 7010);
    ck_assert_str_eq(cfg.tls_ca, in_dir("ca.crt"));
    ck_assert_str_eq(cfg.tls_cert, in_dir("site-a.crt"));
    ck_assert_str_eq(cfg.tls_key, in_dir("site-a.key"));
    ck_assert_str_eq(cfg.pg_conninfo, "host=/var/run/postgresql port=5432 user=walmirror");
    ck_assert_str_eq(cfg.pgdata, "/var/lib/postgresql/15/main");
    ck_assert_str_eq(cfg.spool_dir, "/var/lib/walmirror/spool");
    ck_assert_str_eq(cfg.wal_listen.host, "127.0.0.1");
    ck_assert_uint_eq(cfg.wal_listen.port, 7003);
    ck_assert_str_eq(cfg.http_listen.host, "::1");
    ck_assert_uint_eq(cfg.http_listen.port, 8080);
    ck_assert_str_eq(cfg.http_token_file, in_dir("token"));
    ck_assert_str_eq(cfg.slot_name, "walmirror_a");
    ck_assert_str_eq(cfg.application_name, "site_a");
    ck_assert_uint_eq(cfg.failover_timeout_ms, 1500);
    ck_assert_uint_eq(cfg.heartbeat_interval_ms, 200);
    ck_assert_uint_eq(cfg.peer_timeout_ms, 3000);
    ck_assert(cfg.auto_rejoin);
    ck_assert(!cfg.spool_keep_segments);
    ck_assert_uint_eq(cfg.spool_keep, 2ull * 1024 * 1024 * 1024);
    ck_assert_int_eq(cfg.compression, CONFIG_COMPRESSION_OFF);
    ck_assert_int_eq(cfg.log_level, LOG_LEVEL_DEBUG);
    ck_assert_int_eq(cfg.wal_server_auth, CONFIG_WAL_SERVER_AUTH_TRUST);
}
END_TEST

START_TEST(test_site_defaults)
{
    ck_assert_int_eq(load_site(NULL, NULL), 0);
    ck_assert(!cfg.has_witness);
    ck_assert_str_eq(cfg.http_listen.text, "127.0.0.1:8008");
    ck_assert_str_eq(cfg.http_listen.host, "127.0.0.1");
    ck_assert_uint_eq(cfg.http_listen.port, 8008);
    ck_assert_ptr_null(cfg.http_token_file);
    ck_assert_str_eq(cfg.slot_name, "walmirror");
    ck_assert_str_eq(cfg.application_name, "walmirror");
    ck_assert_uint_eq(cfg.failover_timeout_ms, 5000);
    ck_assert_uint_eq(cfg.heartbeat_interval_ms, 1000);
    ck_assert_uint_eq(cfg.peer_timeout_ms, 10000);
    ck_assert(!cfg.auto_rejoin);
    ck_assert(!cfg.spool_keep_segments);
    ck_assert_uint_eq(cfg.spool_keep, 1024ull * 1024 * 1024);
    ck_assert_int_eq(cfg.compression, CONFIG_COMPRESSION_LZ4);
    ck_assert_int_eq(cfg.log_level, LOG_LEVEL_INFO);
    ck_assert_int_eq(cfg.role, CONFIG_ROLE_AUTO);
    /* statuspage.h's STATUSPAGE_DEGRADED_* and STATUSPAGE_PARTIAL_* */
    ck_assert_uint_eq(cfg.status_degraded_lag_bytes, 16ull << 20);
    ck_assert_uint_eq(cfg.status_degraded_lag_ms, 5000);
    ck_assert_uint_eq(cfg.status_partial_lag_bytes, 1ull << 30);
    ck_assert_uint_eq(cfg.status_partial_lag_ms, 60000);
}
END_TEST

/* The status page's thresholds: sizes and durations with units, dumped and read back. */
START_TEST(test_status_thresholds)
{
    struct wm_config again;
    char *out = NULL;
    size_t len = 0;
    FILE *f;

    ck_assert_msg(load_site(NULL, "status_degraded_lag_size = 4MB\n"
                                  "STATUS_DEGRADED_LAG_TIME = 1500ms\n"
                                  "status_partial_lag_size = '256 MB'\n"
                                  "status_partial_lag_time = 2min\n") == 0,
                  "%s", err);
    ck_assert_uint_eq(cfg.status_degraded_lag_bytes, 4ull << 20);
    ck_assert_uint_eq(cfg.status_degraded_lag_ms, 1500);
    ck_assert_uint_eq(cfg.status_partial_lag_bytes, 256ull << 20);
    ck_assert_uint_eq(cfg.status_partial_lag_ms, 120000);
    f = open_memstream(&out, &len);
    ck_assert_int_eq(config_dump(f, &cfg), 0);
    ck_assert_int_eq(fclose(f), 0);
    ck_assert_msg(strstr(out, "status_degraded_lag_size = 4MB\n") != NULL, "%s", out);
    ck_assert_msg(strstr(out, "status_degraded_lag_time = 1500ms\n") != NULL, "%s", out);
    ck_assert_msg(strstr(out, "status_partial_lag_size = 256MB\n") != NULL, "%s", out);
    ck_assert_msg(strstr(out, "status_partial_lag_time = 2min\n") != NULL, "%s", out);
    ck_assert_msg(config_parse_buffer("dump", out, len, 0, &again, err, sizeof(err)) == 0, "%s",
                  err);
    ck_assert_uint_eq(again.status_degraded_lag_bytes, cfg.status_degraded_lag_bytes);
    ck_assert_uint_eq(again.status_degraded_lag_ms, cfg.status_degraded_lag_ms);
    ck_assert_uint_eq(again.status_partial_lag_bytes, cfg.status_partial_lag_bytes);
    ck_assert_uint_eq(again.status_partial_lag_ms, cfg.status_partial_lag_ms);
    config_free(&again);
    free(out);
    config_free(&cfg);

    /* equal thresholds are allowed: the mirror goes straight to partial_outage */
    ck_assert_msg(load_site(NULL, "status_degraded_lag_size = 1GB\n"
                                  "status_partial_lag_time = 5s\n") == 0,
                  "%s", err);
    ck_assert_uint_eq(cfg.status_degraded_lag_bytes, cfg.status_partial_lag_bytes);
    ck_assert_uint_eq(cfg.status_degraded_lag_ms, cfg.status_partial_lag_ms);
}
END_TEST

/* degraded > partial: the message names the key of the pair set later in the file, its line,
 * and both values. */
START_TEST(test_status_thresholds_order)
{
    int rc = load_site(NULL, "status_partial_lag_size = 1MB\n"
                             "status_degraded_lag_size = 2MB");

    expect_key_err(rc, extra_line + 1, "status_degraded_lag_size",
                   "status_degraded_lag_size (2MB) must not be above status_partial_lag_size "
                   "(1MB)");
    rc = load_site(NULL, "status_degraded_lag_time = 2min\n"
                         "status_partial_lag_time = 90s");
    expect_key_err(rc, extra_line + 1, "status_partial_lag_time",
                   "status_degraded_lag_time (2min) must not be above status_partial_lag_time "
                   "(90s)");
}
END_TEST

START_TEST(test_spool_keep_segments)
{
    ck_assert_int_eq(load_site(NULL, "spool_keep = 64  # segments"), 0);
    ck_assert(cfg.spool_keep_segments);
    ck_assert_uint_eq(cfg.spool_keep, 64);
}
END_TEST

/* A witness configuration with the given sites (NULL: the usual two) and extra lines. */
static const char *
witness_text(const char *sites, const char *extra)
{
    static char text[8192];

    snprintf(text, sizeof(text),
             "node_name = wit\n"
             "role = witness\n"
             "listen = '[::1]:7010'\n"
             "sites = '%s'\n"
             "tls_ca = '%s/ca.crt'\n"
             "tls_cert = '%s/site-a.crt'\n"
             "tls_key = '%s/site-a.key'\n"
             "%s\n"
             "state_dir = '%s/state'\n",
             sites != NULL ? sites : "site-a@127.0.0.1:7001,  site-b@[::1]:7002", dir, dir, dir,
             extra != NULL ? extra : "", dir);
    return text;
}

START_TEST(test_witness)
{
    const char *text = witness_text(NULL, "peer_timeout = 4s");

    ck_assert_int_eq(load_text("witness.conf", text, strlen(text)), 0);
    ck_assert_int_eq(cfg.role, CONFIG_ROLE_WITNESS);
    ck_assert_str_eq(cfg.node_name, "wit");
    ck_assert_str_eq(cfg.listen.host, "::1");
    ck_assert_uint_eq(cfg.listen.port, 7010);
    ck_assert_str_eq(cfg.sites[0].name, "site-a");
    ck_assert_str_eq(cfg.sites[0].addr.host, "127.0.0.1");
    ck_assert_uint_eq(cfg.sites[0].addr.port, 7001);
    ck_assert_str_eq(cfg.sites[1].name, "site-b");
    ck_assert_str_eq(cfg.sites[1].addr.host, "::1");
    ck_assert_uint_eq(cfg.sites[1].addr.port, 7002);
    ck_assert_uint_eq(cfg.peer_timeout_ms, 4000);
    ck_assert_uint_eq(cfg.heartbeat_interval_ms, 1000);
    ck_assert_str_eq(cfg.http_listen.text, "127.0.0.1:8008");
    ck_assert_ptr_null(cfg.pgdata);
    ck_assert_ptr_null(cfg.pg_conninfo);
    ck_assert_str_eq(cfg.slot_name, "");
}
END_TEST

START_TEST(test_witness_errors)
{
    const char *text = witness_text(NULL, "pgdata = /srv/pg");

    expect_key_err(load_text("w1.conf", text, strlen(text)), 8, "pgdata", "not used by a witness");
    text = witness_text(NULL, "peer = b@h:1");
    expect_key_err(load_text("w2.conf", text, strlen(text)), 8, "peer", "not used by a witness");
    text = witness_text("a@h:1", NULL);
    expect_key_err(load_text("w3.conf", text, strlen(text)), 4, "sites", "needs the two sites");
    text = witness_text("a@h:1, b@h:2, c@h:3", NULL);
    expect_key_err(load_text("w4.conf", text, strlen(text)), 4, "sites", "more than two");
    text = witness_text("a@h:1, a@h:2", NULL);
    expect_key_err(load_text("w5.conf", text, strlen(text)), 4, "sites", "both sites are named");
    text = witness_text("a@h:1, wit@h:2", NULL);
    expect_key_err(load_text("w6.conf", text, strlen(text)), 4, "sites", "like this witness");
    text = witness_text("a@h:1, b@h:2:3", NULL);
    expect_key_err(load_text("w7.conf", text, strlen(text)), 4, "sites", "site 2:");
    text = witness_text("a@h:1,", NULL);
    expect_key_err(load_text("w8.conf", text, strlen(text)), 4, "sites", "empty entry");
    text = witness_text(NULL, "status_partial_lag_size = 1GB");
    expect_key_err(load_text("w10.conf", text, strlen(text)), 8, "status_partial_lag_size",
                   "not used by a witness");
    text = witness_text(NULL, "http_listen = '[::1]:7010'");
    expect_key_err(load_text("w9.conf", text, strlen(text)), 8, "http_listen",
                   "clashes with listen");
}
END_TEST

START_TEST(test_witness_missing_sites)
{
    char path[PATH_MAX + 64];
    const char *text = witness_text(NULL, NULL);
    char *copy = strdup(text);
    char *sites = strstr(copy, "sites");

    ck_assert_ptr_nonnull(sites);
    sites[0] = '#'; /* comment the line out */
    ck_assert_int_eq(load_text("w.conf", copy, strlen(copy)), -EINVAL);
    snprintf(path, sizeof(path), "%s: missing required key \"sites\" (role = witness)", conf_path);
    ck_assert_str_eq(err, path);
    free(copy);
}
END_TEST

/* state_dir: a site's defaults to spool_dir; peer_pg_conninfo is optional and kept verbatim. */
START_TEST(test_state_dir_and_peer_pg_conninfo)
{
    ck_assert_msg(load_site(NULL, NULL) == 0, "%s", err);
    ck_assert_str_eq(cfg.state_dir, "/var/lib/walmirror/spool");
    ck_assert_ptr_null(cfg.peer_pg_conninfo);
    config_free(&cfg);

    ck_assert_msg(load_site("spool_dir",
                            "spool_dir = spool\nstate_dir = state\n"
                            "peer_pg_conninfo = 'host=10.0.2.10 port=5432 user=walmirror "
                            "password=''a\\b'''\n") == 0,
                  "%s", err);
    ck_assert_str_eq(cfg.spool_dir, in_dir("spool"));
    ck_assert_str_eq(cfg.state_dir, in_dir("state"));
    ck_assert_str_eq(cfg.peer_pg_conninfo,
                     "host=10.0.2.10 port=5432 user=walmirror password='a\\b'");
    config_free(&cfg);

    /* a relative spool_dir: the default state_dir is the resolved one */
    ck_assert_msg(load_site("spool_dir", "spool_dir = spool\n") == 0, "%s", err);
    ck_assert_str_eq(cfg.state_dir, in_dir("spool"));
}
END_TEST

START_TEST(test_witness_state_dir)
{
    char want[PATH_MAX + 96];
    const char *text = witness_text(NULL, NULL);
    char *copy;

    ck_assert_msg(load_text("w.conf", text, strlen(text)) == 0, "%s", err);
    ck_assert_str_eq(cfg.state_dir, in_dir("state"));
    config_free(&cfg);

    copy = strdup(text);
    ck_assert_ptr_nonnull(copy);
    strstr(copy, "state_dir")[0] = '#'; /* comment the line out */
    ck_assert_int_eq(load_text("w2.conf", copy, strlen(copy)), -EINVAL);
    snprintf(want, sizeof(want), "%s: missing required key \"state_dir\" (role = witness)",
             conf_path);
    ck_assert_str_eq(err, want);
    free(copy);

    text = witness_text(NULL, "peer_pg_conninfo = 'host=x'");
    expect_key_err(load_text("w3.conf", text, strlen(text)), 8, "peer_pg_conninfo",
                   "not used by a witness");
}
END_TEST

START_TEST(test_dump_new_keys_round_trip)
{
    struct wm_config again;
    char *out = NULL;
    size_t len = 0;
    FILE *f;

    ck_assert_msg(load_site(NULL, "state_dir = /srv/wm/state\npeer_pg_conninfo = 'host=b "
                                  "user=''x'''\n") == 0,
                  "%s", err);
    f = open_memstream(&out, &len);
    ck_assert_int_eq(config_dump(f, &cfg), 0);
    ck_assert_int_eq(fclose(f), 0);
    ck_assert_msg(config_parse_buffer("dump", out, len, 0, &again, err, sizeof(err)) == 0, "%s",
                  err);
    ck_assert_str_eq(again.state_dir, "/srv/wm/state");
    ck_assert_str_eq(again.peer_pg_conninfo, "host=b user='x'");
    config_free(&again);
    free(out);
    config_free(&cfg);

    /* the default state_dir is dumped as the effective value; no peer_pg_conninfo line */
    ck_assert_msg(load_site(NULL, NULL) == 0, "%s", err);
    out = NULL;
    f = open_memstream(&out, &len);
    ck_assert_int_eq(config_dump(f, &cfg), 0);
    ck_assert_int_eq(fclose(f), 0);
    ck_assert_msg(strstr(out, "state_dir = '/var/lib/walmirror/spool'") != NULL, "%s", out);
    ck_assert_msg(strstr(out, "peer_pg_conninfo") == NULL, "%s", out);
    free(out);
}
END_TEST

/* ---------------------------------------------------------------------------------------------
 * Errors naming a key: one table, one loop test
 */

#define N64 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

static const struct key_case {
    const char *omit;  /* base line left out, or NULL */
    const char *extra; /* lines appended */
    const char *key;   /* key the message must name, on the first extra line */
    const char *what;  /* text the message must contain */
} key_cases[] = {
    /* unknown and duplicate keys */
    {NULL, "peeer = x", "peeer", "unknown key (did you mean \"peer\"?)"},
    {NULL, "tls_crt = x", "tls_crt", "unknown key (did you mean \"tls_cert\"?)"},
    {NULL, "Spool_Keeps = 1GB", "spool_keeps", "did you mean \"spool_keep\"?"},
    {NULL, "include = 'other.conf'", "include", "include directives are not supported"},
    {NULL, "listen = 127.0.0.1:7005", "listen", "set twice, on lines 3 and 12"},
    {NULL, "LISTEN = 127.0.0.1:7005", "listen", "set twice, on lines 3 and 12"},
    /* addresses */
    {"listen", "listen = localhost", "listen", "lacks a port"},
    {"listen", "listen = ::1:7001", "listen", "IPv6 address in brackets"},
    {"listen", "listen = '[::1:7001'", "listen", "'[' without ']'"},
    {"listen", "listen = '[::1]7001'", "listen", "lacks \":port\" after ']'"},
    {"listen", "listen = '[nothex]:7001'", "listen", "is not an IPv6 address"},
    {"listen", "listen = host:abc", "listen", "port \"abc\" is not a number"},
    {"listen", "listen = ho$t:7001", "listen", "not a valid host name"},
    {"listen", "listen = :7001", "listen", "empty host"},
    {"listen", "listen = host:", "listen", "empty port"},
    {"listen", "listen = 127.0.0.1:0", "listen", "port 0 is out of range 1..65535"},
    {"listen", "listen = 127.0.0.1:65536", "listen", "port 65536 is out of range 1..65535"},
    {"listen", "listen = h:99999999999999999999999", "listen", "out of range 1..65535"},
    {"listen", "listen = 127.0.0.1:7003", "listen", "clashes with wal_listen = 127.0.0.1:7003"},
    {NULL, "http_listen = 0.0.0.0:7001", "http_listen", "clashes with listen"},
    {"wal_listen", "wal_listen = h:-1", "wal_listen", "is not a number"},
    {"peer", "peer = 127.0.0.1:7002", "peer", "not of the form NAME@host:port"},
    {"peer", "peer = 'site b@127.0.0.1:7002'", "peer", "invalid character ' '"},
    {"peer", "peer = site-b@127.0.0.1", "peer", "lacks a port"},
    {"peer", "peer = site-a@127.0.0.1:7002", "peer", "like this node"},
    /* the peer at this node's own address: it would talk to itself */
    {"peer", "peer = site-b@127.0.0.1:7001", "peer",
     "site-b at 127.0.0.1:7001 is this node's own address (listen = 127.0.0.1:7001): the peer "
     "runs elsewhere"},
    {"peer", "peer = site-b@localhost:7001", "peer", "(listen = 127.0.0.1:7001)"},
    {"peer", "peer = site-b@127.0.0.1:7003", "peer", "(wal_listen = 127.0.0.1:7003)"},
    {"peer", "peer = site-b@127.0.0.1:8008", "peer", "(http_listen = 127.0.0.1:8008)"},
    {"listen", "listen = 0.0.0.0:7002", "listen",
     "address 0.0.0.0:7002 is where the peer site-b is said to be (peer = "
     "site-b@127.0.0.1:7002)"},
    {NULL, "witness = witness@127.0.0.1:7001", "witness", "witness at 127.0.0.1:7001 is this"},
    {NULL, "witness = site-b@h:9", "witness", "like the peer"},
    /* durations */
    {NULL, "failover_timeout = 5sec", "failover_timeout", "invalid unit \"sec\""},
    {NULL, "failover_timeout = 5S", "failover_timeout", "valid units are ms, s, min, h"},
    {NULL, "failover_timeout = 5", "failover_timeout", "needs a unit"},
    {NULL, "failover_timeout = 1.5s", "failover_timeout", "must be a whole number"},
    {NULL, "failover_timeout = 0s", "failover_timeout", "out of range 1ms..24h"},
    {NULL, "failover_timeout = 25h", "failover_timeout", "out of range 1ms..24h"},
    {NULL, "failover_timeout = -5s", "failover_timeout", "is not a duration"},
    {NULL, "failover_timeout = 99999999999999999999h", "failover_timeout", "out of range"},
    {NULL, "failover_timeout = 9999999999999999h", "failover_timeout", "out of range"},
    {NULL, "heartbeat_interval = 10s", "heartbeat_interval", "must be shorter than peer_timeout"},
    {NULL, "peer_timeout = 500ms", "peer_timeout", "must be shorter than peer_timeout"},
    /* booleans, enums, sizes */
    {NULL, "auto_rejoin = maybe", "auto_rejoin", "\"maybe\" is not a boolean"},
    {NULL, "auto_rejoin = ", "auto_rejoin", "missing value"},
    {NULL, "auto_rejoin # nothing", "auto_rejoin", "missing value"},
    {NULL, "role = source", "role", "valid values are auto, witness"},
    {NULL, "compression = zstd", "compression", "valid values are lz4, off"},
    {NULL, "log_level = verbose", "log_level", "valid values are error, warning, info, debug"},
    {NULL, "wal_server_auth = md5", "wal_server_auth", "only trust is implemented"},
    {NULL, "spool_keep = 1XB", "spool_keep", "invalid unit \"XB\""},
    {NULL, "spool_keep = lots", "spool_keep", "is not a size"},
    {NULL, "spool_keep = 99999999999TB", "spool_keep", "out of range"},
    {NULL, "sites = 'a@h:1, b@h:2'", "sites", "used only by a witness"},
    /* quoting */
    {"pg_conninfo", "pg_conninfo = 'host=x", "pg_conninfo", "unterminated quoted string"},
    {"pg_conninfo", "pg_conninfo = 'it''s", "pg_conninfo", "unterminated quoted string"},
    {"pg_conninfo", "pg_conninfo = host=x port=5", "pg_conninfo",
     "unexpected 'p' after the value (quote values that contain spaces)"},
    {"pg_conninfo", "pg_conninfo = 'a' 'b'", "pg_conninfo", "unexpected"},
    {"pg_conninfo", "pg_conninfo = ''", "pg_conninfo", "must not be empty"},
    {"pg_conninfo", "pg_conninfo = 'a\x01'", "pg_conninfo", "control character 0x01"},
    {"node_name", "node_name = \"site-a\"", "node_name", "use single quotes"},
    {"node_name", "node_name = site'a'", "node_name", "quote in the middle"},
    /* names */
    {"node_name", "node_name = 'site a'", "node_name", "invalid character ' '"},
    {"node_name", "node_name = site/a", "node_name", "invalid character '/'"},
    {"node_name", "node_name = ''", "node_name", "empty name"},
    {"node_name", "node_name = " N64, "node_name", "longer than 63 characters"},
    {NULL, "slot_name = Walmirror", "slot_name", "invalid slot name \"Walmirror\""},
    {NULL, "slot_name = wal-mirror", "slot_name", "only lower-case letters, digits"},
    {NULL, "slot_name = " N64, "slot_name", "1 to 63 characters"},
    {NULL, "application_name = ''", "application_name", "1 to 63 characters"},
    {NULL, "application_name = 'caf\xc3\xa9'", "application_name", "printable ASCII"},
    /* files */
    {"tls_key", "tls_key = '/nonexistent/walmirror/site-a.key'", "tls_key",
     "cannot read \"/nonexistent/walmirror/site-a.key\": No such file or directory"},
    {"tls_ca", "tls_ca = '/'", "tls_ca", "\"/\" is not a regular file"},
    {"tls_cert", "tls_cert = ''", "tls_cert", "must not be empty"},
    {NULL, "http_token_file = /nonexistent/token", "http_token_file", "cannot read"},
    /* the durable state and the peer's PostgreSQL */
    {NULL, "state_dir = ''", "state_dir", "must not be empty"},
    {NULL, "statedir = /x", "statedir", "did you mean \"state_dir\"?"},
    {NULL, "peer_pg_conninfo = ''", "peer_pg_conninfo", "must not be empty"},
    {NULL, "peer_pg_connifo = 'host=x'", "peer_pg_connifo", "did you mean \"peer_pg_conninfo\"?"},
    /* the status page's thresholds */
    {NULL, "status_degraded_lag_size = 16", "status_degraded_lag_size", "needs a unit"},
    {NULL, "status_degraded_lag_size = 0MB", "status_degraded_lag_size", "at least 1B"},
    {NULL, "status_degraded_lag_size = 16Mb", "status_degraded_lag_size", "invalid unit \"Mb\""},
    {NULL, "status_partial_lag_size = 1.5GB", "status_partial_lag_size", "whole number"},
    {NULL, "status_partial_lag_size = -1GB", "status_partial_lag_size", "is not a size"},
    {NULL, "status_degraded_lag_time = 5", "status_degraded_lag_time", "needs a unit"},
    {NULL, "status_partial_lag_time = 0s", "status_partial_lag_time", "out of range 1ms..24h"},
    {NULL, "status_partial_lag_time = 5 sec", "status_partial_lag_time", "unexpected"},
    {NULL, "status_degraded_lag_siz = 16MB", "status_degraded_lag_siz",
     "did you mean \"status_degraded_lag_size\"?"},
    {NULL, "status_degraded_lag_size = 2GB", "status_degraded_lag_size",
     "status_degraded_lag_size (2GB) must not be above status_partial_lag_size (1GB, the "
     "default)"},
    {NULL, "status_partial_lag_time = 2s", "status_partial_lag_time",
     "status_degraded_lag_time (5s, the default) must not be above status_partial_lag_time "
     "(2s)"},
};

START_TEST(test_key_errors)
{
    const struct key_case *c = &key_cases[_i];
    int rc = load_site(c->omit, c->extra);

    expect_key_err(rc, extra_line, c->key, c->what);
}
END_TEST

START_TEST(test_unknown_key_without_suggestion)
{
    expect_key_err(load_site(NULL, "completely_unknown = 1"), 12, "completely_unknown",
                   "unknown key");
    ck_assert_msg(strstr(err, "did you mean") == NULL, "%s", err);
}
END_TEST

static const struct syntax_case {
    const char *extra;
    const char *what;
} syntax_cases[] = {
    {"= value", "expected a key at column 1, found '='"},
    {"  9lives = 1", "expected a key at column 3, found '9'"},
    {"peer.name = x", "'.' in key \"peer\" at column 5"},
    {"\x01key = 1", "byte 0x01"},
    {"'quoted' = 1", "found '''"},
    {N64 "b = 1", "key longer than 63 characters"},
};

START_TEST(test_syntax_errors)
{
    expect_syntax_err(load_site(NULL, syntax_cases[_i].extra), 12, syntax_cases[_i].what);
}
END_TEST

START_TEST(test_missing_required)
{
    static const char *const required[] = {"node_name", "listen",    "peer",        "tls_ca",
                                           "tls_cert",  "tls_key",   "pg_conninfo", "pgdata",
                                           "spool_dir", "wal_listen"};
    char want[PATH_MAX + 64];

    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
        config_free(&cfg);
        ck_assert_int_eq(load_site(required[i], NULL), -EINVAL);
        snprintf(want, sizeof(want), "%s: missing required key \"%s\"", conf_path, required[i]);
        ck_assert_str_eq(err, want);
        ck_assert_ptr_null(cfg.path);
    }
}
END_TEST

START_TEST(test_unreadable_file)
{
    char path[PATH_MAX];
    char want[PATH_MAX + 128];

    snprintf(path, sizeof(path), "%s/absent.conf", dir);
    ck_assert_int_eq(config_load(path, &cfg, err, sizeof(err)), -ENOENT);
    snprintf(want, sizeof(want), "%s: cannot open: %s", path, strerror(ENOENT));
    ck_assert_str_eq(err, want);

    /* a directory opens but does not read */
    ck_assert_int_eq(config_load(dir, &cfg, err, sizeof(err)), -EISDIR);
    ck_assert_msg(strstr(err, strerror(EISDIR)) != NULL, "%s", err);
}
END_TEST

/* ---------------------------------------------------------------------------------------------
 * Bytes that are not text
 */

START_TEST(test_nul_bytes)
{
    static const char quoted[] = "pgdata = '/var/lib\0/x'\n";
    static const char bare[] = "pgdata = /var/lib\0/x\n";
    static const char at_start[] = "\0pgdata = /x\n";
    char *text;
    size_t base_len;

    site_conf("pgdata", NULL);
    text = tu_read_file(conf_path, &base_len);
    ck_assert_ptr_nonnull(text);
    text = realloc(text, base_len + 64);
    ck_assert_ptr_nonnull(text);

    memcpy(text + base_len, quoted, sizeof(quoted) - 1);
    expect_key_err(load_text("nul1.conf", text, base_len + sizeof(quoted) - 1), 11, "pgdata",
                   "value contains a NUL byte");
    memcpy(text + base_len, bare, sizeof(bare) - 1);
    expect_key_err(load_text("nul2.conf", text, base_len + sizeof(bare) - 1), 11, "pgdata",
                   "value contains a NUL byte");
    memcpy(text + base_len, at_start, sizeof(at_start) - 1);
    expect_syntax_err(load_text("nul3.conf", text, base_len + sizeof(at_start) - 1), 11,
                      "found a NUL byte");
    free(text);
}
END_TEST

START_TEST(test_huge_input)
{
    size_t big = 10u * 1024 * 1024;
    char *text = malloc(big + 32);
    char value[CONFIG_VALUE_MAX + 64];
    char line[CONFIG_VALUE_MAX + 128];

    ck_assert_ptr_nonnull(text);
    memcpy(text, "node_name = site-a\npgdata = '", 29);
    memset(text + 29, 'x', big);
    text[29 + big] = '\'';

    /* a 10 MB line given in memory: a line error */
    snprintf(conf_path, sizeof(conf_path), "mem.conf");
    ck_assert_int_eq(config_parse_buffer("mem.conf", text, big + 30, CONFIG_NO_FILE_CHECKS, &cfg,
                                         err, sizeof(err)),
                     -EINVAL);
    expect_syntax_err(-EINVAL, 2, "line longer than 8192 bytes");

    /* the same as a file: too large to be a configuration file */
    ck_assert_int_eq(load_text("big.conf", text, big + 30), -EFBIG);
    ck_assert_msg(strstr(err, "big.conf: file larger than") != NULL, "%s", err);
    free(text);

    /* a value just over the limit on a line within it */
    memset(value, 'v', CONFIG_VALUE_MAX + 1);
    value[CONFIG_VALUE_MAX + 1] = '\0';
    snprintf(line, sizeof(line), "pgdata = '/%s'", value);
    expect_key_err(load_site("pgdata", line), 11, "pgdata", "value longer than 4095 bytes");

    /* an address too long for its buffers */
    memset(value, 'h', 300);
    snprintf(line, sizeof(line), "listen = '[%.300s]:1'", value);
    expect_key_err(load_site("listen", line), 11, "listen", "too long");
}
END_TEST

/* ---------------------------------------------------------------------------------------------
 * Comments, quoting, case
 */

START_TEST(test_comments_and_quoting)
{
    const char *extra = "\n"
                        "   # an indented comment\n"
                        "\t\n"
                        "application_name = 'it''s'   # a trailing comment\n"
                        "pgdata '/data/#not a comment'\r\n"
                        "pg_conninfo='host=x password=''a\\b#c'''#comment right after\n"
                        "log_level=warning#no blank before the comment\n";

    ck_assert_msg(load_site("pgdata pg_conninfo", extra) == 0, "%s", err);
    ck_assert_str_eq(cfg.application_name, "it's");
    ck_assert_str_eq(cfg.pgdata, "/data/#not a comment");
    ck_assert_str_eq(cfg.pg_conninfo, "host=x password='a\\b#c'");
    ck_assert_int_eq(cfg.log_level, LOG_LEVEL_WARNING);
}
END_TEST

START_TEST(test_case_insensitive_keys)
{
    const char *extra = "NODE_NAME = site-a\n"
                        "Log_Level = DEBUG\n"
                        "AUTO_REJOIN = On\n"
                        "Compression = LZ4\n"
                        "ROLE = Auto\n";

    ck_assert_msg(load_site("node_name", extra) == 0, "%s", err);
    ck_assert_str_eq(cfg.node_name, "site-a");
    ck_assert_int_eq(cfg.log_level, LOG_LEVEL_DEBUG);
    ck_assert(cfg.auto_rejoin);
    ck_assert_int_eq(cfg.compression, CONFIG_COMPRESSION_LZ4);
    ck_assert_int_eq(cfg.role, CONFIG_ROLE_AUTO);
}
END_TEST

START_TEST(test_relative_paths)
{
    const char *extra = "tls_ca = ca.crt\ntls_cert = ./site-a.crt\ntls_key = 'site-a.key'\n"
                        "spool_dir = spool\n";

    ck_assert_msg(load_site("tls_ca tls_cert tls_key spool_dir", extra) == 0, "%s", err);
    ck_assert_str_eq(cfg.tls_ca, in_dir("ca.crt"));
    ck_assert_str_eq(cfg.tls_cert, in_dir("./site-a.crt"));
    ck_assert_str_eq(cfg.tls_key, in_dir("site-a.key"));
    ck_assert_str_eq(cfg.spool_dir, in_dir("spool"));
}
END_TEST

/* The commented examples in conf/ stay valid (their TLS files live on real hosts only). */
START_TEST(test_example_configs)
{
    static const char *const files[] = {"site-a.conf", "site-b.conf", "witness.conf"};

    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char path[PATH_MAX];
        size_t len;
        char *text;

        snprintf(path, sizeof(path), "%s/conf/%s", WM_SOURCE_DIR, files[i]);
        text = tu_read_file(path, &len);
        ck_assert_msg(text != NULL, "cannot read %s", path);
        ck_assert_msg(config_parse_buffer(path, text, len, CONFIG_NO_FILE_CHECKS, &cfg, err,
                                          sizeof(err)) == 0,
                      "%s", err);
        ck_assert_str_eq(cfg.tls_ca, "/etc/walmirror/ca.crt");
        if (i < 2) {
            ck_assert_int_eq(cfg.role, CONFIG_ROLE_AUTO);
            ck_assert_str_eq(cfg.peer.name, i == 0 ? "site-b" : "site-a");
            ck_assert(cfg.has_witness);
        } else {
            ck_assert_int_eq(cfg.role, CONFIG_ROLE_WITNESS);
            ck_assert_str_eq(cfg.sites[1].name, "site-b");
        }
        config_free(&cfg);
        free(text);
    }
}
END_TEST

/* ---------------------------------------------------------------------------------------------
 * Dump, robustness, small error buffers
 */

START_TEST(test_dump_round_trip)
{
    struct wm_config again;
    char extra[1024];
    char dump_path[PATH_MAX];
    FILE *f;

    snprintf(extra, sizeof(extra),
             "witness = 'wit@[fe80::1%%eth0]:7010'\nhttp_token_file = token\n"
             "application_name = 'it''s'\nfailover_timeout = 90s\nheartbeat_interval = 1500ms\n"
             "peer_timeout = 2min\nspool_keep = '512 MB'\nauto_rejoin = true\n");
    ck_assert_msg(load_site(NULL, extra) == 0, "%s", err);
    snprintf(dump_path, sizeof(dump_path), "%s/dump.conf", dir);
    f = fopen(dump_path, "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(config_dump(f, &cfg), 0);
    ck_assert_int_eq(fclose(f), 0);

    ck_assert_msg(config_load(dump_path, &again, err, sizeof(err)) == 0, "%s", err);
    ck_assert_str_eq(again.node_name, cfg.node_name);
    ck_assert_str_eq(again.listen.text, cfg.listen.text);
    ck_assert_str_eq(again.peer.name, cfg.peer.name);
    ck_assert_str_eq(again.peer.addr.text, cfg.peer.addr.text);
    ck_assert(again.has_witness);
    ck_assert_str_eq(again.witness.addr.host, "fe80::1%eth0");
    ck_assert_str_eq(again.tls_key, cfg.tls_key);
    ck_assert_str_eq(again.pg_conninfo, cfg.pg_conninfo);
    ck_assert_str_eq(again.http_token_file, in_dir("token"));
    ck_assert_str_eq(again.application_name, "it's");
    ck_assert_str_eq(again.http_listen.text, cfg.http_listen.text);
    ck_assert_uint_eq(again.failover_timeout_ms, 90000);
    ck_assert_uint_eq(again.heartbeat_interval_ms, 1500);
    ck_assert_uint_eq(again.peer_timeout_ms, 120000);
    ck_assert_uint_eq(again.spool_keep, 512ull * 1024 * 1024);
    ck_assert(again.auto_rejoin);
    ck_assert_int_eq(again.compression, cfg.compression);
    ck_assert_int_eq(again.log_level, cfg.log_level);
    config_free(&again);
    config_free(&again); /* twice is harmless */
}
END_TEST

START_TEST(test_dump_witness_round_trip)
{
    const char *text = witness_text(NULL, NULL);
    struct wm_config again;
    char *out = NULL;
    size_t len = 0;
    FILE *f;

    ck_assert_msg(load_text("witness.conf", text, strlen(text)) == 0, "%s", err);
    f = open_memstream(&out, &len);
    ck_assert_int_eq(config_dump(f, &cfg), 0);
    ck_assert_int_eq(fclose(f), 0);
    ck_assert_msg(strstr(out, "pgdata") == NULL, "%s", out);
    ck_assert_msg(config_parse_buffer("dump", out, len, 0, &again, err, sizeof(err)) == 0, "%s",
                  err);
    ck_assert_int_eq(again.role, CONFIG_ROLE_WITNESS);
    ck_assert_str_eq(again.sites[1].addr.text, "[::1]:7002");
    config_free(&again);
    free(out);
}
END_TEST

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t
next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

START_TEST(test_mutations_never_crash)
{
    static const char alphabet[] = "'#=@:[] \t\n\r\0\x01,.x9aZ\"\\";
    char *base;
    size_t base_len;
    char buf[4096];
    int ok = 0;

    site_conf(NULL, "witness = w@[::1]:9\nspool_keep = 1GB\nfailover_timeout = 5s\n");
    base = tu_read_file(conf_path, &base_len);
    ck_assert_ptr_nonnull(base);
    ck_assert_uint_lt(base_len, sizeof(buf));
    for (int iter = 0; iter < 20000; iter++) {
        size_t len = base_len;
        int edits = 1 + (int)(next_rand() % 4);

        memcpy(buf, base, base_len);
        for (int e = 0; e < edits; e++) {
            size_t at = (size_t)(next_rand() % len);

            switch (next_rand() % 4) {
            case 0: /* replace a byte */
                buf[at] = alphabet[next_rand() % (sizeof(alphabet) - 1)];
                break;
            case 1: /* any byte */
                buf[at] = (char)next_rand();
                break;
            case 2: /* truncate */
                len = at + 1;
                break;
            case 3: /* delete a byte */
                memmove(buf + at, buf + at + 1, len - at - 1);
                len--;
                break;
            }
            if (len == 0)
                break;
        }
        err[0] = 'X';
        int rc = config_parse_buffer("fuzz.conf", buf, len, CONFIG_NO_FILE_CHECKS, &cfg, err,
                                     sizeof(err));
        if (rc == 0) {
            ok++;
            ck_assert_ptr_nonnull(cfg.path);
            config_free(&cfg);
        } else {
            ck_assert_int_lt(rc, 0);
            ck_assert_msg(strncmp(err, "fuzz.conf", 9) == 0, "bad message: %s", err);
            ck_assert_ptr_null(cfg.path);
        }
    }
    ck_assert_int_gt(ok, 0); /* some edits (in comments, say) leave the file valid */
    free(base);
}
END_TEST

START_TEST(test_small_error_buffer)
{
    char small[8];

    site_conf(NULL, "peeer = x");
    memset(small, 'X', sizeof(small));
    ck_assert_int_eq(config_load(conf_path, &cfg, small, sizeof(small)), -EINVAL);
    ck_assert_uint_eq(strlen(small), sizeof(small) - 1);
    ck_assert_int_eq(config_load(conf_path, &cfg, NULL, 0), -EINVAL);
    ck_assert_int_eq(config_parse_buffer("x", NULL, 0, 0, &cfg, NULL, 0), -EINVAL);
}
END_TEST

/* ---------------------------------------------------------------------------------------------
 * walmirror-agent --check-config: what starting would refuse, refused by the check too
 */

#define AGENT WM_BINARY_DIR "/agent/walmirror-agent"

static char *agent_out, *agent_err;

static int agent(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Runs walmirror-agent with args (shell words); its output lands in agent_out / agent_err. */
static int
agent(const char *fmt, ...)
{
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = tu_vcapture(dir, &agent_out, &agent_err, AGENT, fmt, ap);
    va_end(ap);
    return rc;
}

/* The fixture with real certificates (tls_config_new loads them) and a good token. */
static void
setup_real_certs(void)
{
    setup();
    ck_assert_int_eq(tu_run("cp '%s/ca.crt' '%s/site-a.crt' '%s/site-a.key' '%s/'", tu_certs(),
                            tu_certs(), tu_certs(), dir),
                     0);
    ck_assert_int_eq(chmod(in_dir("site-a.key"), 0600), 0);
    ck_assert_int_eq(chmod(in_dir("token"), 0600), 0);
}

static void
teardown_agent_output(void)
{
    free(agent_out);
    free(agent_err);
    agent_out = agent_err = NULL;
    teardown();
}

#define assert_has(text, s)                                                                        \
    ck_assert_msg(strstr((text), (s)) != NULL, "\"%s\" not in:\n%s", (s), (text))

START_TEST(test_check_config_forms)
{
    const char *path = site_conf(NULL, NULL);

    /* the documented form, and the other two */
    ck_assert_msg(agent("--check-config '%s'", path) == 0, "%s", agent_err);
    assert_has(agent_out, "node_name = 'site-a'");
    ck_assert_msg(agent("-c '%s' --check-config", path) == 0, "%s", agent_err);
    assert_has(agent_out, "node_name = 'site-a'");
    ck_assert_msg(agent("--check-config='%s'", path) == 0, "%s", agent_err);
    ck_assert_int_eq(agent("--check-config '%s' extra", path), 2);
    ck_assert_int_eq(agent("--check-config"), 2);
}
END_TEST

/* Each configuration that starting refuses: --check-config refuses it too, with the same
 * message and status 2, and so does starting, before it touches anything. */
static const struct start_case {
    const char *omit, *extra;
    mode_t token_mode; /* 0: no token file */
    const char *token;
    const char *what;
} start_cases[] = {
    {NULL, "http_listen = 0.0.0.0:8010", 0, NULL,
     "http_listen 0.0.0.0:8010 is not a loopback address: set http_token_file"},
    {NULL, "http_listen = 0.0.0.0:8010\nhttp_token_file = token", 0644, "secret\n",
     "other users can read or write it (mode 0644)"},
    {NULL, "http_token_file = token", 0600, "\n", "the token is empty"},
    {NULL, "http_token_file = token", 0600, "two words\n", "printable ASCII without spaces"},
    {"peer", "peer = site-b@127.0.0.1:7001", 0, NULL, "is this node's own address"},
    {"tls_key", "tls_key = key-of-b", 0, NULL, "key-of-b does not match certificate file"},
};

START_TEST(test_check_config_as_start)
{
    const struct start_case *c = &start_cases[_i];
    const char *path;
    char first[2048];

    if (c->token_mode != 0) {
        write_file(in_dir("token"), c->token, strlen(c->token));
        ck_assert_int_eq(chmod(in_dir("token"), c->token_mode), 0);
    }
    ck_assert_int_eq(
        tu_run("cp '%s/site-b.key' '%s/key-of-b' && chmod 600 '%s/key-of-b'", tu_certs(), dir, dir),
        0);
    path = site_conf(c->omit, c->extra);
    ck_assert_int_eq(agent("--check-config '%s'", path), 2);
    assert_has(agent_err, c->what);
    ck_assert_msg(strncmp(agent_err, "walmirror-agent: ", 17) == 0, "%s", agent_err);
    ck_assert_msg(strchr(agent_err, '\n') == agent_err + strlen(agent_err) - 1, "not one line: %s",
                  agent_err);
    snprintf(first, sizeof(first), "%s", agent_err);
    ck_assert_int_eq(agent("-c '%s' --check-config", path), 2);
    ck_assert_str_eq(agent_err, first);
    /* starting: the same refusal, status 2, before anything runs (no PostgreSQL here) */
    ck_assert_int_eq(agent("-c '%s'", path), 2);
    ck_assert_str_eq(agent_err, first);
}
END_TEST

static Suite *
config_suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc;

    tc = tcase_create("valid");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_site_full);
    tcase_add_test(tc, test_site_defaults);
    tcase_add_test(tc, test_spool_keep_segments);
    tcase_add_test(tc, test_witness);
    tcase_add_test(tc, test_comments_and_quoting);
    tcase_add_test(tc, test_case_insensitive_keys);
    tcase_add_test(tc, test_relative_paths);
    tcase_add_test(tc, test_dump_round_trip);
    tcase_add_test(tc, test_dump_witness_round_trip);
    tcase_add_test(tc, test_example_configs);
    tcase_add_test(tc, test_state_dir_and_peer_pg_conninfo);
    tcase_add_test(tc, test_witness_state_dir);
    tcase_add_test(tc, test_dump_new_keys_round_trip);
    tcase_add_test(tc, test_status_thresholds);
    suite_add_tcase(s, tc);

    tc = tcase_create("errors");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, test_key_errors, 0, (int)(sizeof(key_cases) / sizeof(key_cases[0])));
    tcase_add_loop_test(tc, test_syntax_errors, 0,
                        (int)(sizeof(syntax_cases) / sizeof(syntax_cases[0])));
    tcase_add_test(tc, test_unknown_key_without_suggestion);
    tcase_add_test(tc, test_witness_errors);
    tcase_add_test(tc, test_status_thresholds_order);
    tcase_add_test(tc, test_witness_missing_sites);
    tcase_add_test(tc, test_missing_required);
    tcase_add_test(tc, test_unreadable_file);
    tcase_add_test(tc, test_nul_bytes);
    tcase_add_test(tc, test_huge_input);
    tcase_add_test(tc, test_small_error_buffer);
    suite_add_tcase(s, tc);

    tc = tcase_create("check_config");
    tcase_add_checked_fixture(tc, setup_real_certs, teardown_agent_output);
    tcase_add_test(tc, test_check_config_forms);
    tcase_add_loop_test(tc, test_check_config_as_start, 0,
                        (int)(sizeof(start_cases) / sizeof(start_cases[0])));
    suite_add_tcase(s, tc);

    tc = tcase_create("robustness");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_mutations_never_crash);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(config_suite());
    int failed;

    tu_certs(); /* once, in the parent, before Check forks the tests */

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
