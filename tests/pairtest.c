/*
 * pairtest.c - the two-site harness shared by the integration tests that run a walmirror
 * pair: site A's primary, site B's standby made with `walmirror-agent init-standby` as
 * docs/setup.md says, both agents over TLS on loopback, everything run as the postgres user;
 * see pairtest.h.
 */
#include "pairtest.h"

#include <check.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct pt_site A = {.name = "site-a"}, B = {.name = "site-b"};
char *certdir;
pid_t owner;

double
pt_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- agents ---- */

void
pt_write_conf(struct pt_site *s, const struct pt_site *peer, const char *cert, const char *path,
              const char *extra)
{
    FILE *f = fopen(path, "w");

    tu_require(f != NULL, "cannot write %s", path);
    fprintf(f,
            "node_name = %s\n"
            "listen = 127.0.0.1:%d\n"
            "peer = %s@127.0.0.1:%d\n"
            "tls_ca = '%s/ca.crt'\n"
            "tls_cert = '%s/%s.crt'\n"
            "tls_key = '%s/%s.key'\n"
            "pg_conninfo = 'host=127.0.0.1 port=%d user=postgres dbname=postgres'\n"
            "pgdata = '%s'\n"
            "spool_dir = '%s'\n"
            "wal_listen = 127.0.0.1:%d\n"
            "http_listen = 127.0.0.1:%d\n"
            "heartbeat_interval = 500ms\n"
            "peer_timeout = 5s\n"
            "log_level = info\n"
            "%s",
            s->name, s->listen_port, peer->name,
            s->peer_port != 0 ? s->peer_port : peer->listen_port, certdir, certdir, cert, certdir,
            cert, s->pg.port, s->pg.pgdata, s->spool, s->wal_port, s->http_port,
            extra != NULL ? extra : "");
    tu_require(fclose(f) == 0);
    pgt_give_to_postgres(path);
}

void
pt_start_agent(struct pt_site *s)
{
    char *argv[] = {AGENT, "-c", s->conf, NULL};

    s->agent = pgt_spawn(argv, s->log);
}

void
pt_stop_agent(struct pt_site *s, int sig)
{
    int status;

    if (s->agent <= 0)
        return;
    kill(s->agent, SIGCONT);
    kill(s->agent, sig);
    for (int i = 0; i < 100; i++) {
        if (waitpid(s->agent, &status, WNOHANG) == s->agent) {
            s->agent = 0;
            return;
        }
        usleep(50000);
    }
    kill(s->agent, SIGKILL);
    waitpid(s->agent, &status, 0);
    s->agent = 0;
}

void
pt_stop_all_agents(void)
{
    if (getpid() != owner)
        return;
    pt_stop_agent(&A, SIGKILL);
    pt_stop_agent(&B, SIGKILL);
}

/* ---- SQL ---- */

static PGconn *
try_connect(struct pt_site *s)
{
    char ci[256];

    snprintf(ci, sizeof(ci), "host=127.0.0.1 port=%d user=postgres dbname=postgres", s->pg.port);
    return PQconnectdb(ci);
}

PGconn *
pt_connect_to(struct pt_site *s)
{
    PGconn *pg = try_connect(s);

    tu_require(PQstatus(pg) == CONNECTION_OK, "connect to %s: %s", s->name, PQerrorMessage(pg));
    return pg;
}

char *
pt_sql1(struct pt_site *s, const char *sql)
{
    PGconn *pg = try_connect(s);
    PGresult *res;
    char *v = NULL;

    if (PQstatus(pg) != CONNECTION_OK) {
        fprintf(stderr, "cannot connect to %s: %s", s->name, PQerrorMessage(pg));
        PQfinish(pg);
        return NULL;
    }
    res = PQexec(pg, sql);

    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
        v = strdup(PQgetvalue(res, 0, 0));
    else if (PQresultStatus(res) == PGRES_COMMAND_OK)
        v = strdup("");
    else
        fprintf(stderr, "%s on %s: %s", sql, s->name, PQerrorMessage(pg));
    PQclear(res);
    PQfinish(pg);
    return v;
}

bool
pt_sql_true(struct pt_site *s, const char *sql)
{
    char *v = pt_sql1(s, sql);
    bool t = v != NULL && strcmp(v, "t") == 0;
    free(v);
    return t;
}

bool
pt_wait_true(struct pt_site *s, const char *sql, double seconds)
{
    double end = pt_now_s() + seconds;

    while (pt_now_s() < end) {
        if (pt_sql_true(s, sql))
            return true;
        usleep(100000);
    }
    return false;
}

bool
pt_wait_sync(struct pt_site *primary, double seconds)
{
    return pt_wait_true(primary,
                     "SELECT count(*) = 1 FROM pg_stat_replication WHERE application_name = "
                     "'walmirror' AND sync_state = 'sync' AND state = 'streaming'",
                     seconds);
}

bool
pt_wait_replayed(struct pt_site *primary, struct pt_site *standby, double seconds)
{
    char *target = pt_sql1(primary, "SELECT pg_current_wal_lsn()");
    char sql[256];
    bool ok;

    tu_require(target != NULL);
    snprintf(sql, sizeof(sql), "SELECT pg_last_wal_replay_lsn() >= '%s'::pg_lsn", target);
    free(target);
    ok = pt_wait_true(standby, sql, seconds);
    return ok;
}

/* Row count, sum of the balance column, md5 over the ordered rows, of every pgbench table. */
char *
pt_pgbench_digest(struct pt_site *s)
{
    return pt_sql1(s, "SELECT string_agg(d, ' ' ORDER BY d) FROM ("
                   " SELECT 'a:' || count(*) || ':' || coalesce(sum(abalance), 0) || ':' ||"
                   "  md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) AS d"
                   "  FROM pgbench_accounts x"
                   " UNION ALL SELECT 'b:' || count(*) || ':' || coalesce(sum(bbalance), 0) ||"
                   "  ':' || md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), ''))"
                   "  FROM pgbench_branches x"
                   " UNION ALL SELECT 't:' || count(*) || ':' || coalesce(sum(tbalance), 0) ||"
                   "  ':' || md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), ''))"
                   "  FROM pgbench_tellers x"
                   " UNION ALL SELECT 'h:' || count(*) || ':' || coalesce(sum(delta), 0) || ':'"
                   "  || md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), ''))"
                   "  FROM pgbench_history x) s");
}

void
pt_assert_tables_equal(struct pt_site *primary, struct pt_site *standby)
{
    char *da, *db;

    ck_assert_msg(pt_wait_replayed(primary, standby, 60),
                  "%s did not replay %s's WAL within 60 s", standby->name, primary->name);
    da = pt_pgbench_digest(primary);
    db = pt_pgbench_digest(standby);
    ck_assert(da != NULL && db != NULL);
    ck_assert_msg(strstr(da, "h:0:") == NULL, "pgbench wrote no history: %s", da);
    ck_assert_msg(strcmp(da, db) == 0, "primary %s\nstandby %s", da, db);
    fprintf(stderr, "tables equal: %s\n", da);
    free(da);
    free(db);
}

bool
pt_log_contains(const char *path, const char *needle, double seconds)
{
    double end = pt_now_s() + seconds;

    /* Looked at once at least: seconds = 0 asks "is it there now?". */
    for (;;) {
        size_t len;
        char *s = tu_read_file(path, &len);
        bool found = s != NULL && strstr(s, needle) != NULL;
        free(s);
        if (found)
            return true;
        if (pt_now_s() >= end)
            return false;
        usleep(100000);
    }
}

PGconn *
pt_send(struct pt_site *s, const char *sql)
{
    PGconn *pg = pt_connect_to(s);

    tu_require(PQsendQuery(pg, sql) == 1, "cannot send \"%s\": %s", sql, PQerrorMessage(pg));
    return pg;
}

bool
pt_finished_within(PGconn *pg, double seconds)
{
    double end = pt_now_s() + seconds;

    while (pt_now_s() < end) {
        tu_require(PQconsumeInput(pg) == 1, "%s", PQerrorMessage(pg));
        if (!PQisBusy(pg)) {
            PGresult *r;
            bool ok = true;
            while ((r = PQgetResult(pg)) != NULL) {
                if (PQresultStatus(r) != PGRES_COMMAND_OK &&
                    PQresultStatus(r) != PGRES_TUPLES_OK)
                    ok = false;
                PQclear(r);
            }
            return ok;
        }
        usleep(20000);
    }
    return false;
}

void
pt_close_segment(struct pt_site *primary)
{
    free(pt_sql1(primary, "SELECT pg_switch_wal()"));
    /* A commit that wrote WAL waits for the mirror (txid_current's would not: it is
     * asynchronous when the transaction wrote nothing else). */
    free(pt_sql1(primary, "CREATE TABLE IF NOT EXISTS wm_segment_probe(n int); "
                          "INSERT INTO wm_segment_probe VALUES (1)"));
}

int
pt_assert_spool_matches_wal(struct pt_site *primary, struct pt_site *sink)
{
    char cmd[8192], name[64], out[4096];
    int identical = 0;
    char *first = NULL, *dump;
    unsigned tli, hi, lo;
    size_t len;
    FILE *p;

    snprintf(cmd, sizeof(cmd), "ls '%s' | grep -E '^[0-9A-F]{24}$'", sink->spool);
    p = popen(cmd, "r");
    ck_assert(p != NULL);
    while (fgets(name, sizeof(name), p) != NULL) {
        name[strcspn(name, "\n")] = '\0';
        if (tu_run("test -f '%s/pg_wal/%s'", primary->pg.pgdata, name) != 0)
            continue; /* recycled on the primary */
        ck_assert_msg(tu_run("cmp -s '%s/%s' '%s/pg_wal/%s'", sink->spool, name,
                             primary->pg.pgdata, name) == 0,
                      "spool segment %s differs from the primary's", name);
        identical++;
    }
    pclose(p);
    fprintf(stderr, "%d completed spool segments byte-identical to pg_wal\n", identical);

    /* pg_waldump reads the whole spool: it must stop only at the normal end of WAL. */
    snprintf(cmd, sizeof(cmd), "ls '%s' | grep -E '^[0-9A-F]{24}' | head -1", sink->spool);
    p = popen(cmd, "r");
    ck_assert(p != NULL);
    if (fgets(name, sizeof(name), p) != NULL) {
        name[strcspn(name, "\n")] = '\0';
        first = name;
    }
    pclose(p);
    ck_assert_msg(first != NULL, "no segment in %s", sink->spool);
    /* From the first segment's start to the end of WAL (16 MiB segments here). */
    tu_require(sscanf(first, "%8X%8X%8X", &tli, &hi, &lo) == 3);
    /* The segment being written is NAME.partial: link every file under its plain name, so
     * that pg_waldump reads the partial segment too, to the real end.  A segment prepared
     * ahead holds no page header yet; pg_waldump takes the segment size from whichever file
     * it reads first, so such a file stays out. */
    tu_require(tu_run("rm -rf '%s/dump' && mkdir '%s/dump' && for f in '%s'/0*; do "
                      "cmp -s -n 24 \"$f\" /dev/zero && continue; "
                      "ln -s \"$f\" '%s/dump/'$(basename \"$f\" .partial); done",
                      primary->pg.dir, primary->pg.dir, sink->spool, primary->pg.dir) == 0);
    snprintf(out, sizeof(out), "%s/waldump.out", primary->pg.dir);
    tu_run("'%s/pg_waldump' -p '%s/dump' -t %u -s %X/%X > '%s' 2>&1", pgt_bindir(),
           primary->pg.dir, tli, hi, lo << 24, out);
    dump = tu_read_file(out, &len);
    ck_assert(dump != NULL);
    ck_assert_msg(strstr(dump, "rmgr: ") != NULL, "pg_waldump read no records");
    ck_assert_msg(strstr(dump, "invalid record length") != NULL && strstr(dump, "got 0") != NULL,
                  "pg_waldump did not end at the normal end of WAL: %s",
                  len > 400 ? dump + len - 400 : dump);
    free(dump);
    return identical;
}

/* ---- HTTP ---- */

long
pt_http_get(const struct pt_site *s, const char *path, char **out)
{
    CURL *c = curl_easy_init();
    struct tu_buf b = {0};
    char url[256];
    long code = 0;

    ck_assert_ptr_nonnull(c);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", s->http_port, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, tu_buf_append);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(c);
    *out = b.data != NULL ? b.data : strdup("");
    ck_assert_ptr_nonnull(*out);
    return code;
}

double
pt_metric(const struct pt_site *s, const char *key)
{
    char *text, *line, *save = NULL;
    double v = -1;
    size_t kl = strlen(key);

    ck_assert_int_eq(pt_http_get(s, "/metrics", &text), 200);
    for (line = strtok_r(text, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save))
        if (strncmp(line, key, kl) == 0 && line[kl] == ' ')
            v = strtod(line + kl + 1, NULL);
    free(text);
    return v;
}

const char *pt_spool_fs_size;

long long
pt_fill_spool_fs(const struct pt_site *s, char *path, size_t cap)
{
    struct statvfs fs;
    struct stat st;
    long long free_bytes, n;
    int fd, ret;

    tu_require(snprintf(path, cap, "%s/filler", s->spool) < (int)cap);
    /* Never truncated: a second call extends the file, so that the space it holds is not free,
     * not even for a moment, while the spool looks for some. */
    fd = open(path, O_WRONLY | O_CREAT, 0600);
    tu_require(fd >= 0, "%s: %s", path, strerror(errno));
    tu_require(fstat(fd, &st) == 0, "fstat %s: %s", path, strerror(errno));
    tu_require(statvfs(s->spool, &fs) == 0, "statvfs %s: %s", s->spool, strerror(errno));
    free_bytes = (long long)fs.f_bavail * (long long)fs.f_frsize;
    n = free_bytes - (8ll << 20); /* less than half a 16 MB segment left */
    tu_require(n > 0 || st.st_size > 0, "only %lld bytes free in %s", free_bytes, s->spool);
    if (n > 0) {
        ret = posix_fallocate(fd, st.st_size, n);
        tu_require(ret == 0, "fallocate %s: %s", path, strerror(ret));
    }
    tu_require(close(fd) == 0);
    return (long long)st.st_size + (n > 0 ? n : 0);
}

static void
unmount_spools(void)
{
    if (owner != getpid())
        return;
    pt_stop_all_agents(); /* they hold the spools open */
    /* A killed agent's io_uring may hold its files a moment after it is gone: retry, then
     * detach the mount (the kernel frees it when the last file is closed). */
    for (int i = 0; i < 2; i++) {
        const char *dir = i == 0 ? A.spool : B.spool;

        if (dir[0] != '\0' && tu_run("mountpoint -q '%s'", dir) == 0 &&
            tu_run("for i in $(seq 50); do umount '%s' 2>/dev/null && exit 0; sleep 0.1; done; "
                   "umount -l '%s'",
                   dir, dir) != 0)
            fprintf(stderr, "cannot unmount %s\n", dir);
    }
}

void
pt_prepare_site(struct pt_site *s)
{
    snprintf(s->conf, sizeof(s->conf), "%s/agent.conf", s->pg.dir);
    snprintf(s->log, sizeof(s->log), "%s/agent.log", s->pg.dir);
    snprintf(s->spool, sizeof(s->spool), "%s/spool", s->pg.dir);
    if (pt_spool_fs_size != NULL) {
        static bool registered;

        tu_require(tu_run("mkdir -p '%s' && mount -t tmpfs -o size=%s,mode=0700 tmpfs '%s' && "
                          "chown postgres: '%s'",
                          s->spool, pt_spool_fs_size, s->spool, s->spool) == 0,
                   "cannot mount a tmpfs of %s on %s", pt_spool_fs_size, s->spool);
        if (!registered) {
            registered = true;
            atexit(unmount_spools);
        }
    }
    s->listen_port = tu_free_port();
    s->wal_port = tu_free_port();
    s->http_port = tu_free_port();
}

int
pt_stand_up_pair(pt_extra_fn extra)
{
    FILE *f;
    char path[4200], extra_a[4096] = "", extra_b[4096] = "";

    certdir = tu_tmpdir("mirror-certs");
    tu_require(tu_run("cp '%s'/*.crt '%s'/*.key '%s'/ && chown -R postgres: '%s' 2>/dev/null; "
                      "chmod 600 '%s'/*.key",
                      tu_certs(), tu_certs(), certdir, certdir, certdir) == 0);
    if (pgt_init(&A.pg, "site-a", "wal_keep_size = 2GB\nmax_wal_size = 2GB") != 0 ||
        pgt_start(&A.pg) != 0)
        return -1;
    tu_require(pgt_sh(&A.pg, "pgbench -i -q -s 2 postgres") == 0);
    pgt_prepare(&B.pg, "site-b");
    pt_prepare_site(&A);
    pt_prepare_site(&B);
    if (extra != NULL) {
        extra(&A, &B, extra_a, sizeof(extra_a));
        extra(&B, &A, extra_b, sizeof(extra_b));
    }
    pt_write_conf(&A, &B, "site-a", A.conf, extra_a);
    pt_write_conf(&B, &A, "site-b", B.conf, extra_b);
    /* Site B's standby, as docs/setup.md says. */
    if (pgt_sh(&B.pg,
               "'%s' -c '%s' init-standby --primary 'host=127.0.0.1 port=%d "
               "user=postgres dbname=postgres'",
               AGENT, B.conf, A.pg.port) != 0) {
        fprintf(stderr, "init-standby failed; see %s/cmd.log\n", B.pg.dir);
        return -1;
    }
    snprintf(path, sizeof(path), "%s/postgresql.auto.conf", B.pg.pgdata);
    f = fopen(path, "a");
    tu_require(f != NULL);
    fprintf(f, "unix_socket_directories = '%s'\n", B.pg.dir);
    /* The standby has what a promoted primary needs too: synchronous towards walmirror. */
    fprintf(f, "synchronous_standby_names = 'walmirror'\n");
    tu_require(fclose(f) == 0);
    pt_start_agent(&B);
    if (pgt_start(&B.pg) != 0) {
        fprintf(stderr, "site B's standby did not start; see %s/server.log\n", B.pg.dir);
        return -1;
    }
    pt_start_agent(&A);
    if (!pt_wait_true(&A,
                   "SELECT count(*) = 1 FROM pg_stat_replication WHERE application_name = "
                   "'walmirror' AND state = 'streaming'",
                   60)) {
        fprintf(stderr, "A's agent is not streaming; see %s and %s\n", A.log, B.log);
        return -1;
    }
    free(pt_sql1(&A, "ALTER SYSTEM SET synchronous_standby_names = 'walmirror'"));
    free(pt_sql1(&A, "SELECT pg_reload_conf()"));
    if (!pt_wait_sync(&A, 30)) {
        fprintf(stderr, "the pair did not become synchronous\n");
        return -1;
    }
    fprintf(stderr, "pair up: A port %d, B port %d, agents %d and %d\n", A.pg.port, B.pg.port,
            (int)A.agent, (int)B.agent);
    return 0;
}


int
pt_stand_up(pt_extra_fn extra)
{
    owner = getpid();
    atexit(pt_stop_all_agents);
    if (pt_stand_up_pair(extra) != 0) {
        pt_stop_all_agents();
        return -1;
    }
    return 0;
}

void
pt_tear_down(void)
{
    pt_stop_all_agents();
    if (pt_spool_fs_size != NULL) {
        /* A server its agent started logs into state_dir, which is the spool: stop it first
         * (whoever started it last: the test or the agent). */
        A.pg.running = B.pg.running = true;
        pgt_stop(&A.pg, "immediate");
        pgt_stop(&B.pg, "immediate");
        unmount_spools();
    }
    pgt_destroy(&A.pg);
    pgt_destroy(&B.pg);
    tu_rmtree(certdir);
}

int
pt_run_in_order(Suite *s)
{
    SRunner *sr = srunner_create(s);
    int failed;

    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed;
}
