/*
 * hatest.c - the harness of the tests that fail a pair over: a witness or an etcd cluster's
 * endpoints, link emulators on site A's paths to B and to the arbiter, a ledger client, and
 * the helpers the suites share; see hatest.h.
 */
#include "hatest.h"

#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"

struct ha_linkem L_ab, L_aw, L_ae[HA_ETCD_MAX];
struct ha_etcd ha_etcd;

struct ha_witness W;

static pid_t ledger_pid;
static char ledger_path[4200];

/* ---- the witness ---- */

void
ha_start_witness(void)
{
    char *argv[] = {AGENT, "-c", W.conf, NULL};

    W.pid = pgt_spawn(argv, W.log);
}

static void
ha_write_witness_conf(void)
{
    char *dir = tu_tmpdir("witness");
    FILE *f;

    snprintf(W.dir, sizeof(W.dir), "%s", dir);
    free(dir);
    tu_require(tu_run("chown postgres: '%s'", W.dir) == 0);
    snprintf(W.conf, sizeof(W.conf), "%s/witness.conf", W.dir);
    snprintf(W.log, sizeof(W.log), "%s/witness.log", W.dir);
    W.port = tu_free_port();
    W.http_port = tu_free_port();
    f = fopen(W.conf, "w");
    tu_require(f != NULL);
    fprintf(f,
            "node_name = witness\n"
            "role = witness\n"
            "listen = 127.0.0.1:%d\n"
            "sites = 'site-a@127.0.0.1:%d, site-b@127.0.0.1:%d'\n"
            "tls_ca = '%s/ca.crt'\n"
            "tls_cert = '%s/witness.crt'\n"
            "tls_key = '%s/witness.key'\n"
            "state_dir = '%s'\n"
            "http_listen = 127.0.0.1:%d\n"
            "heartbeat_interval = 500ms\n"
            "peer_timeout = 5s\n",
            W.port, A.listen_port, B.listen_port, certdir, certdir, certdir, W.dir, W.http_port);
    tu_require(fclose(f) == 0);
    pgt_give_to_postgres(W.conf);
}

static void
ha_start_linkem(struct ha_linkem *l, int to_port, const char *tag)
{
    char listen[64], connect[64];
    char *argv[] = {LINKEM,  "--listen",  listen,     "--connect",
                    connect, "--control", l->control, NULL};

    l->port = tu_free_port();
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", l->port);
    snprintf(connect, sizeof(connect), "127.0.0.1:%d", to_port);
    snprintf(l->control, sizeof(l->control), "%s/linkem-%s.sock", W.dir, tag);
    snprintf(l->log, sizeof(l->log), "%s/linkem-%s.log", W.dir, tag);
    l->pid = pgt_spawn(argv, l->log);
}

void
ha_linkem_send(struct ha_linkem *l, const char *command)
{
    tu_require(tu_run("'%s' --control '%s' --send %s >/dev/null", LINKEM, l->control, command) == 0,
               "linkem %s: %s", l->control, command);
}

void
ha_arbiter_links(const char *command)
{
    if (ha_etcd.members == 0)
        ha_linkem_send(&L_aw, command);
    for (int i = 0; i < ha_etcd.members; i++)
        ha_linkem_send(&L_ae[i], command);
}

const char *ha_availability_mode = "maximum_protection";
int ha_standby_loss_timeout_s = HA_STANDBY_LOSS_TIMEOUT_S;

/* The arbiter's lines of site s: the witness at witness_port, or the etcd members (site A's
 * through its link emulators). */
static void
ha_arbiter_lines(const struct pt_site *s, int witness_port, char *buf, size_t cap)
{
    size_t n = 0;

    if (ha_etcd.members == 0) {
        snprintf(buf, cap, "witness = witness@127.0.0.1:%d\n", witness_port);
        return;
    }
    n += (size_t)snprintf(buf + n, cap - n, "arbiter = etcd\netcd_endpoints = '");
    for (int i = 0; i < ha_etcd.members; i++) {
        int port = ha_etcd.client_port[i];

        if (s == &A) {
            char tag[16];

            snprintf(tag, sizeof(tag), "ae%d", i);
            ha_start_linkem(&L_ae[i], port, tag);
            port = L_ae[i].port;
        }
        n += (size_t)snprintf(buf + n, cap - n, "%s%s://127.0.0.1:%d", i > 0 ? ", " : "",
                              ha_etcd.tls ? "https" : "http", port);
    }
    n += (size_t)snprintf(buf + n, cap - n, "'\netcd_lease_ttl = %ds\n", ha_etcd.lease_ttl_s);
    if (ha_etcd.prefix != NULL)
        n += (size_t)snprintf(buf + n, cap - n, "etcd_prefix = '%s'\n", ha_etcd.prefix);
    if (ha_etcd.tls)
        snprintf(buf + n, cap - n,
                 "etcd_ca = '%s/ca.crt'\netcd_cert = '%s/%s.crt'\netcd_key = '%s/%s.key'\n",
                 certdir, certdir, s->name, certdir, s->name);
}

/* Each site: the arbiter, a short failover_timeout, rejoin on its own, the peer's server.
 * Site A reaches B and the arbiter through link emulators. */
static void
ha_site_extra(const struct pt_site *s, const struct pt_site *peer, char *buf, size_t cap)
{
    int witness_port;
    size_t n;

    if (W.port == 0)
        ha_write_witness_conf(); /* its directory holds the link emulators' sockets too */
    witness_port = W.port;
    if (s == &A) {
        ha_start_linkem(&L_ab, B.listen_port, "ab");
        if (ha_etcd.members == 0) {
            ha_start_linkem(&L_aw, W.port, "aw");
            witness_port = L_aw.port;
        }
        A.peer_port = L_ab.port;
    }
    ha_arbiter_lines(s, witness_port, buf, cap);
    n = strlen(buf);
    snprintf(buf + n, cap - n,
             "failover_timeout = %ds\n"
             "auto_rejoin = on\n"
             "peer_pg_conninfo = 'host=127.0.0.1 port=%d user=postgres dbname=postgres'\n"
             "availability_mode = %s\n"
             "standby_loss_timeout = %ds\n",
             HA_FAILOVER_TIMEOUT_S, peer->pg.port, ha_availability_mode, ha_standby_loss_timeout_s);
    /* A spool on a small file system of its own (pt_spool_fs_size) keeps little. */
    if (pt_spool_fs_size != NULL)
        snprintf(buf + strlen(buf), cap - strlen(buf), "spool_keep = 32MB\n");
}

/* ---- the ledger client ---- */

/* A commit whose wait for the standby was cancelled returns success with this warning:
 * committed locally only, so not acknowledged by the mirror. */
static void
ledger_notice(void *arg, const char *message)
{
    if (strstr(message, "synchronous replication") != NULL)
        *(bool *)arg = true;
}

/* A restarted ledger goes on after the ids it used before (the ids it tried and did not get
 * acknowledged may be in the table): from the largest acknowledged one plus a margin. */
static int first_id = 1;

static void
ha_ledger_main(void)
{
    bool local_only = false;
    char conninfo[512];
    PGconn *pg = NULL;
    FILE *out = fopen(ledger_path, "a");
    int id = first_id;

    if (out == NULL)
        _exit(2);
    snprintf(conninfo, sizeof(conninfo),
             "host=127.0.0.1,127.0.0.1 port=%d,%d user=postgres dbname=postgres "
             "target_session_attrs=read-write connect_timeout=2 "
             "options='-c synchronous_commit=on'",
             A.pg.port, B.pg.port);
    for (;;) {
        char param[16];
        const char *params[1] = {param};
        PGresult *res;

        if (pg == NULL || PQstatus(pg) != CONNECTION_OK) {
            PQfinish(pg);
            pg = PQconnectdb(conninfo);
            if (PQstatus(pg) != CONNECTION_OK) {
                usleep(50000);
                continue;
            }
            PQsetNoticeProcessor(pg, ledger_notice, &local_only);
        }
        local_only = false;
        snprintf(param, sizeof(param), "%d", id);
        res = PQexecParams(pg, "INSERT INTO ledger VALUES ($1::int, now())", 1, NULL, params, NULL,
                           NULL, 0);
        if (PQresultStatus(res) == PGRES_COMMAND_OK && !local_only) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            fprintf(out, "%d %lld\n", id, (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000);
            fflush(out);
        } else {
            PQfinish(pg); /* the outcome of id is unknown: it is never reused */
            pg = NULL;
        }
        PQclear(res);
        id++;
    }
}

void
ha_start_ledger(void)
{
    snprintf(ledger_path, sizeof(ledger_path), "%s/ledger.acked", A.pg.dir);
    {
        size_t len;
        char *text = tu_read_file(ledger_path, &len);

        for (char *line = text != NULL ? strtok(text, "\n") : NULL; line != NULL;
             line = strtok(NULL, "\n")) {
            int id;
            if (sscanf(line, "%d", &id) == 1 && id + 100000 > first_id)
                first_id = id + 100000;
        }
        free(text);
    }
    if (ledger_pid == 0 && first_id == 1)
        free(pt_sql1(&A, "CREATE TABLE IF NOT EXISTS ledger (id int PRIMARY KEY, at timestamptz)"));
    ledger_pid = fork();
    tu_require(ledger_pid >= 0);
    if (ledger_pid == 0) {
        ha_ledger_main();
        _exit(0);
    }
}

void
ha_stop_ledger(void)
{
    if (ledger_pid > 0 && getpid() == owner) {
        kill(ledger_pid, SIGKILL);
        waitpid(ledger_pid, NULL, 0);
        ledger_pid = 0;
    }
}

/*
 * Every id the ledger saw acknowledged is on primary.  Returns how many were acknowledged and
 * the longest gap between two acknowledgements (microseconds) in *gap_us.
 */
int
ha_check_ledger(struct pt_site *primary, long long *gap_us)
{
    size_t len;
    char *text = tu_read_file(ledger_path, &len), *sql, *p, *missing;
    long long prev = 0;
    int n = 0;
    size_t cap;

    ck_assert(text != NULL);
    cap = len * 2 + 256;
    sql = malloc(cap);
    ck_assert(sql != NULL);
    p = sql + snprintf(sql, cap, "SELECT count(*) FROM unnest('{");
    *gap_us = 0;
    for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        int id;
        long long at;
        if (sscanf(line, "%d %lld", &id, &at) != 2)
            continue;
        p += snprintf(p, cap - (size_t)(p - sql), "%s%d", n > 0 ? "," : "", id);
        if (prev != 0 && at - prev > *gap_us)
            *gap_us = at - prev;
        prev = at;
        n++;
    }
    snprintf(p, cap - (size_t)(p - sql),
             "}'::int[]) i WHERE NOT EXISTS (SELECT 1 FROM ledger l WHERE l.id = i)");
    missing = pt_sql1(primary, sql);
    ck_assert(missing != NULL);
    ck_assert_msg(strcmp(missing, "0") == 0, "%s acknowledged ids missing on %s", missing,
                  primary->name);
    ck_assert_int_gt(n, 0);
    free(missing);
    free(sql);
    free(text);
    return n;
}

int
ha_check_ledger_on_standby(struct pt_site *primary, struct pt_site *standby, long long *gap_us)
{
    int n;

    ha_stop_ledger();
    ck_assert_msg(pt_wait_replayed(primary, standby, 30), "%s did not replay what %s wrote",
                  standby->name, primary->name);
    n = ha_check_ledger(standby, gap_us);
    ha_start_ledger();
    return n;
}

/* Acknowledged ids so far. */
int
ha_ledger_count(void)
{
    size_t len;
    char *text = tu_read_file(ledger_path, &len);
    int n = 0;

    for (size_t i = 0; text != NULL && i < len; i++)
        n += text[i] == '\n';
    free(text);
    return n;
}

long long
ha_first_ack_after(long long t_us)
{
    size_t len;
    char *text = tu_read_file(ledger_path, &len);
    long long found = 0;

    for (char *line = text != NULL ? strtok(text, "\n") : NULL; line != NULL;
         line = strtok(NULL, "\n")) {
        int id;
        long long at;
        if (sscanf(line, "%d %lld", &id, &at) == 2 && at > t_us) {
            found = at;
            break;
        }
    }
    free(text);
    return found;
}

/* ---- helpers ---- */

int
ha_ctl(char *out, size_t cap, const char *args)
{
    char cmd[8192], path[4200];
    size_t len;
    char *text;
    int rc;

    snprintf(path, sizeof(path), "%s/ha_ctl.out", A.pg.dir);
    snprintf(cmd, sizeof(cmd),
             "'%s' --url http://127.0.0.1:%d --url http://127.0.0.1:%d %s > '%s' 2>&1", CTL,
             A.http_port, B.http_port, args, path);
    rc = system(cmd);
    text = tu_read_file(path, &len);
    snprintf(out, cap, "%s", text != NULL ? text : "");
    free(text);
    fprintf(stderr, "walmirrorctl %s -> %d\n%s", args, WEXITSTATUS(rc), out);
    return WEXITSTATUS(rc);
}

pid_t
ha_pgbench_in_background(struct pt_site *primary, int seconds)
{
    char cmd[1024];
    pid_t pid;

    snprintf(cmd, sizeof(cmd),
             "PGOPTIONS='-c synchronous_commit=on' pgbench -n -c 4 -j 2 -T %d postgres "
             ">> '%s/pgbench.log' 2>&1",
             seconds, primary->pg.dir);
    pid = fork();
    tu_require(pid >= 0);
    if (pid == 0) {
        pgt_sh(&primary->pg, "%s", cmd);
        _exit(0);
    }
    return pid;
}

pid_t
ha_postmaster_pid(struct pt_site *s)
{
    char path[4200];
    FILE *f;
    long pid = 0;

    snprintf(path, sizeof(path), "%s/postmaster.pid", s->pg.pgdata);
    f = fopen(path, "r");
    if (f != NULL) {
        if (fscanf(f, "%ld", &pid) != 1)
            pid = 0;
        fclose(f);
    }
    return (pid_t)pid;
}

/* ---- sites, the ledger's verdicts, status and logs (the suites' shared helpers) ---- */

void
ha_kill_site(struct pt_site *s)
{
    pid_t pm = ha_postmaster_pid(s);

    pt_stop_agent(s, SIGKILL);
    if (pm > 0)
        kill(pm, SIGKILL);
    for (int i = 0; i < 50 && pm > 0 && kill(pm, 0) == 0; i++)
        usleep(100000);
    tu_run("rm -f '%s/postmaster.pid'", s->pg.pgdata);
    s->pg.running = false;
}

void
ha_restart_standby_site(struct pt_site *s)
{
    ck_assert_int_eq(pgt_start(&s->pg), 0);
    pt_start_agent(s);
}

long long
ha_wait_ack_after(long long t_unix_us, double seconds)
{
    double end = pt_now_s() + seconds;
    long long at;

    while ((at = ha_first_ack_after(t_unix_us)) == 0 && pt_now_s() < end)
        usleep(50000);
    return at;
}

double
ha_lose_standby_site(long long *lost_at, uint64_t *risk1, uint64_t *risk2)
{
    char out[8192], buf[64];
    long long t0, at;
    double s;

    ck_assert(pt_wait_sync(&A, 60));
    ck_assert(ha_wait_ack_after((long long)clock_unix_us(), 10) != 0);
    t0 = (long long)clock_unix_us();
    ha_kill_site(&B);
    /* Commits stop, then resume without B within standby_loss_timeout + 2 s. */
    at = ha_wait_ack_after(t0 + 500000, HA_STANDBY_LOSS_TIMEOUT_S + 15);
    ck_assert_msg(at != 0, "no commit on A after B was lost; see %s", A.log);
    s = (double)(at - t0) / 1e6;
    fprintf(stderr, "B lost: A's first commit %.2f s later (standby_loss_timeout %d s)\n", s,
            HA_STANDBY_LOSS_TIMEOUT_S);
    ck_assert_msg(s <= HA_STANDBY_LOSS_TIMEOUT_S + 2.0, "commits resumed %.2f s after B's loss", s);
    ck_assert(ha_wait_status_true(&A, "exposed", true, 5));
    ck_assert_str_eq(ha_status_str(&A, "sync_state", buf, sizeof(buf)), "exposed");
    ck_assert_uint_gt(ha_status_u64(&A, "exposed_since_unix_us"), (uint64_t)t0);
    /* The WAL at risk grows while commits go on. */
    for (int i = 0; i < 30 && (*risk1 = ha_status_u64(&A, "wal_at_risk_bytes")) == 0; i++)
        usleep(100000);
    sleep(2);
    *risk2 = ha_status_u64(&A, "wal_at_risk_bytes");
    ck_assert_msg(*risk2 > *risk1 && *risk1 > 0, "WAL at risk %" PRIu64 " then %" PRIu64, *risk1,
                  *risk2);
    ck_assert(pt_metric(&A, "walmirror_exposed") == 1);
    ck_assert_int_eq(ha_ctl(out, sizeof(out), "status"), 1); /* B does not answer */
    ck_assert_msg(strstr(out, "site-a: running exposed since") != NULL, "%s", out);
    *lost_at = t0;
    return s;
}

void
ha_forget_lost_ids(struct pt_site *primary)
{
    char kept[4300];
    size_t len;
    char *text, *ids, *present;
    FILE *out;
    size_t cap, n = 0;

    text = tu_read_file(ledger_path, &len);
    ck_assert(text != NULL);
    cap = len + 256;
    ids = malloc(cap);
    ck_assert(ids != NULL);
    n += (size_t)snprintf(ids, cap,
                          "SELECT ','||string_agg(id::text, ',')||',' FROM ledger "
                          "WHERE id = ANY('{");
    for (size_t i = 0, start = 0; i <= len; i++) {
        if (i < len && text[i] != '\n')
            continue;
        if (i > start) {
            int id;
            if (sscanf(text + start, "%d", &id) == 1)
                n += (size_t)snprintf(ids + n, cap - n, "%s%d", ids[n - 1] == '{' ? "" : ",", id);
        }
        start = i + 1;
    }
    snprintf(ids + n, cap - n, "}'::int[])");
    present = pt_sql1(primary, ids);
    ck_assert(present != NULL);
    snprintf(kept, sizeof(kept), "%s.kept", ledger_path);
    out = fopen(kept, "w");
    ck_assert(out != NULL);
    for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        char key[24];
        int id;
        if (sscanf(line, "%d", &id) != 1)
            continue;
        snprintf(key, sizeof(key), ",%d,", id);
        if (strstr(present, key) != NULL)
            fprintf(out, "%s\n", line);
    }
    ck_assert_int_eq(fclose(out), 0);
    ck_assert_int_eq(rename(kept, ledger_path), 0);
    free(present);
    free(ids);
    free(text);
}

int
ha_missing_ids(struct pt_site *primary, long long t_unix_us, int *missing_before,
               int *missing_after)
{
    size_t len, cap, n;
    char *text = tu_read_file(ledger_path, &len), *sql, *v;
    int before = 0, after = 0;

    ck_assert(text != NULL);
    cap = len * 2 + 512;
    sql = malloc(cap);
    ck_assert(sql != NULL);
    /* One query: (id, acknowledged at or after t) for every acknowledged id, counting those
     * primary lacks on each side of t. */
    n = (size_t)snprintf(sql, cap,
                         "SELECT count(*) FILTER (WHERE NOT late) || ' ' || "
                         "count(*) FILTER (WHERE late) FROM (VALUES ");
    for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        int id;
        long long at;
        if (sscanf(line, "%d %lld", &id, &at) != 2)
            continue;
        n += (size_t)snprintf(sql + n, cap - n, "%s(%d,%s)", before + after > 0 ? "," : "", id,
                              at >= t_unix_us ? "true" : "false");
        if (at >= t_unix_us)
            after++;
        else
            before++;
    }
    ck_assert_int_gt(before + after, 0);
    snprintf(sql + n, cap - n,
             ") v(id, late) WHERE NOT EXISTS (SELECT 1 FROM ledger l "
             "WHERE l.id = v.id)");
    v = pt_sql1(primary, sql);
    ck_assert(v != NULL);
    ck_assert_int_eq(sscanf(v, "%d %d", missing_before, missing_after), 2);
    free(v);
    free(sql);
    free(text);
    return after;
}

void
ha_force_failover_of_stale(struct pt_site *stale, long long exposed_at)
{
    char out[8192];
    int lost_before, lost_after, late;

    ck_assert_int_ne(ha_ctl(out, sizeof(out), "failover --force"), 0);
    ck_assert_msg(strstr(out, "--accept-data-loss") != NULL, "%s", out);
    ck_assert_int_eq(ha_ctl(out, sizeof(out), "failover --force --accept-data-loss"), 0);
    ck_assert(pt_wait_true(stale, "SELECT NOT pg_is_in_recovery()", 30));
    ck_assert_msg(strstr(out, "with --accept-data-loss") != NULL || strstr(out, "promoted") != NULL,
                  "%s", out);
    /* Every id missing on the new primary was acknowledged after the exposure began. */
    late = ha_missing_ids(stale, exposed_at, &lost_before, &lost_after);
    fprintf(stderr,
            "forced fail-over of a stale %s: %d ids acknowledged after the exposure began; "
            "missing on it: %d acknowledged before it, %d after\n",
            stale->name, late, lost_before, lost_after);
    ck_assert_msg(lost_before == 0, "%d ids acknowledged before the exposure are missing on %s",
                  lost_before, stale->name);
    ha_forget_lost_ids(stale);
}

json_t *
ha_status_of(const struct pt_site *s)
{
    char *body = NULL;
    json_t *o = NULL;

    if (pt_http_get(s, "/status", &body) == 200)
        o = json_loads(body, 0, NULL);
    free(body);
    return o;
}

bool
ha_status_true(const struct pt_site *s, const char *key)
{
    json_t *o = ha_status_of(s);
    bool v = o != NULL && json_is_true(json_object_get(o, key));

    json_decref(o);
    return v;
}

uint64_t
ha_status_u64(const struct pt_site *s, const char *key)
{
    json_t *o = ha_status_of(s);
    uint64_t v = o != NULL ? (uint64_t)json_integer_value(json_object_get(o, key)) : 0;

    json_decref(o);
    return v;
}

const char *
ha_status_str(const struct pt_site *s, const char *key, char *buf, size_t cap)
{
    json_t *o = ha_status_of(s);
    const char *v = o != NULL ? json_string_value(json_object_get(o, key)) : NULL;

    snprintf(buf, cap, "%s", v != NULL ? v : "");
    json_decref(o);
    return buf;
}

bool
ha_wait_status_true(const struct pt_site *s, const char *key, bool want, double seconds)
{
    double end = pt_now_s() + seconds;

    do {
        if (ha_status_true(s, key) == want)
            return true;
        usleep(100000);
    } while (pt_now_s() < end);
    return false;
}

long
ha_http_code(const struct pt_site *s, const char *path)
{
    char *body = NULL;
    long code = pt_http_get(s, path, &body);

    free(body);
    return code;
}

void
ha_expect_code(const struct pt_site *s, const char *path, long code)
{
    char *body = NULL;
    long got = pt_http_get(s, path, &body);

    if (got != code) {
        char *status = NULL;

        pt_http_get(s, "/status", &status);
        ck_abort_msg("GET %s on %s: %ld, not %ld: %s\nstatus: %s", path, s->name, got, code,
                     body != NULL ? body : "", status != NULL ? status : "(none)");
    }
    free(body);
}

size_t
ha_log_size(const char *path)
{
    size_t len = 0;

    free(tu_read_file(path, &len));
    return len;
}

bool
ha_log_has_after(const char *path, size_t from, const char *needle, double seconds)
{
    double end = pt_now_s() + seconds;

    do {
        size_t len;
        char *t = tu_read_file(path, &len);
        bool found = t != NULL && len > from && strstr(t + from, needle) != NULL;

        free(t);
        if (found)
            return true;
        if (seconds > 0)
            usleep(100000);
    } while (pt_now_s() < end);
    return false;
}

static void
ha_stop_linkem(struct ha_linkem *l)
{
    if (l->pid > 0) {
        kill(l->pid, SIGTERM);
        waitpid(l->pid, NULL, 0);
        l->pid = 0;
    }
}

void
ha_stop_everything(void)
{
    if (getpid() != owner)
        return;
    ha_stop_ledger();
    pt_stop_all_agents();
    ha_stop_linkem(&L_ab);
    ha_stop_linkem(&L_aw);
    for (int i = 0; i < HA_ETCD_MAX; i++)
        ha_stop_linkem(&L_ae[i]);
    if (W.pid > 0) {
        kill(W.pid, SIGKILL);
        waitpid(W.pid, NULL, 0);
        W.pid = 0;
    }
}

int
ha_stand_up(void)
{
    owner = getpid();
    atexit(ha_stop_everything);
    if (pt_stand_up_pair(ha_site_extra) != 0)
        return -1;
    if (ha_etcd.members == 0)
        ha_start_witness();
    ha_start_ledger();
    return 0;
}

void
ha_tear_down(void)
{
    ha_stop_everything();
    tu_rmtree(W.dir);
    pt_tear_down();
}
