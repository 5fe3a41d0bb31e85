/*
 * hatest.c - the harness of the tests that fail a pair over: a witness, link emulators on site
 * A's paths to B and to the witness, and a ledger client; see hatest.h.
 */
#include "hatest.h"

#include <check.h>
#include <errno.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct ha_linkem L_ab, L_aw;

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
    char *argv[] = {LINKEM, "--listen", listen, "--connect", connect, "--control", l->control,
                    NULL};

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
    tu_require(tu_run("'%s' --control '%s' --send %s >/dev/null", LINKEM, l->control, command) ==
                   0,
               "linkem %s: %s", l->control, command);
}

const char *ha_availability_mode = "maximum_protection";
int ha_standby_loss_timeout_s = HA_STANDBY_LOSS_TIMEOUT_S;

/* Each site: the witness, a short failover_timeout, rejoin on its own, the peer's server.
 * Site A reaches B and the witness through link emulators. */
static void
ha_site_extra(const struct pt_site *s, const struct pt_site *peer, char *buf, size_t cap)
{
    int witness_port;

    if (W.port == 0)
        ha_write_witness_conf();
    witness_port = W.port;
    if (s == &A) {
        ha_start_linkem(&L_ab, B.listen_port, "ab");
        ha_start_linkem(&L_aw, W.port, "aw");
        A.peer_port = L_ab.port;
        witness_port = L_aw.port;
    }
    snprintf(buf, cap,
             "witness = witness@127.0.0.1:%d\n"
             "failover_timeout = %ds\n"
             "auto_rejoin = on\n"
             "peer_pg_conninfo = 'host=127.0.0.1 port=%d user=postgres dbname=postgres'\n"
             "availability_mode = %s\n"
             "standby_loss_timeout = %ds\n",
             witness_port, HA_FAILOVER_TIMEOUT_S, peer->pg.port, ha_availability_mode,
             ha_standby_loss_timeout_s);
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
        res = PQexecParams(pg, "INSERT INTO ledger VALUES ($1::int, now())", 1, NULL, params,
                           NULL, NULL, 0);
        if (PQresultStatus(res) == PGRES_COMMAND_OK && !local_only) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            fprintf(out, "%d %lld\n", id,
                    (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000);
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
