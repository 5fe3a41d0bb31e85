/*
 * ledger.c - wm-ledger: a client that commits ids one by one through a libpq connection string
 * (a multi-host one with target_session_attrs=read-write finds the primary after a
 * switchover), reconnecting after any error, and records each acknowledged commit.
 *
 *   wm-ledger --conninfo CONNINFO --out FILE [--first-id N] [--table NAME]
 *
 * Each commit is `INSERT INTO TABLE VALUES (id, now())` at synchronous_commit = on (the
 * connection string's options may ask for another level).  An acknowledged commit is one that
 * returned success without PostgreSQL's warning that the wait for the synchronous standby was
 * cancelled (then it committed locally only).  For each, one line goes to FILE, flushed at
 * once:
 *
 *   ID MICROSECONDS_SINCE_EPOCH HOST:PORT
 *
 * HOST:PORT is the server that acknowledged it, so that a reader sees where the primary
 * changed.  An id whose outcome is unknown (an error, a lost connection) is never reused.  The
 * table (default `ledger`: id int primary key, at timestamptz) must exist.  The tool runs until
 * SIGTERM or SIGINT, then exits 0.  Bad arguments exit 2.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

static volatile sig_atomic_t stop_requested;

static void
on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* A commit whose wait for the standby was cancelled returns success with a warning naming
 * synchronous replication: it was not acknowledged by the standby. */
static void
ledger_notice(void *arg, const char *message)
{
    if (strstr(message, "synchronous replication") != NULL)
        *(bool *)arg = true;
}

static long long
now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void
usage(void)
{
    fprintf(stderr, "usage: wm-ledger --conninfo CONNINFO --out FILE [--first-id N] "
                    "[--table NAME]\n");
    exit(2);
}

int
main(int argc, char **argv)
{
    static const struct option opts[] = {{"conninfo", required_argument, NULL, 'c'},
                                         {"out", required_argument, NULL, 'o'},
                                         {"first-id", required_argument, NULL, 'f'},
                                         {"table", required_argument, NULL, 't'},
                                         {NULL, 0, NULL, 0}};
    const char *conninfo = NULL, *path = NULL, *table = "ledger";
    char sql[256], *end;
    long long id = 1;
    bool local_only = false;
    PGconn *pg = NULL;
    FILE *out;
    int c;

    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            conninfo = optarg;
            break;
        case 'o':
            path = optarg;
            break;
        case 'f':
            errno = 0;
            id = strtoll(optarg, &end, 10);
            if (errno != 0 || *end != '\0' || id < 1 || id > 2000000000) {
                fprintf(stderr, "wm-ledger: --first-id %s: not an id from 1 to 2000000000\n",
                        optarg);
                return 2;
            }
            break;
        case 't':
            table = optarg;
            break;
        default:
            usage();
        }
    }
    if (conninfo == NULL || path == NULL || optind != argc)
        usage();
    if (strspn(table, "abcdefghijklmnopqrstuvwxyz_0123456789") != strlen(table) ||
        strlen(table) > 63 || table[0] == '\0') {
        fprintf(stderr, "wm-ledger: --table %s: a lower-case SQL identifier, please\n", table);
        return 2;
    }
    snprintf(sql, sizeof(sql), "INSERT INTO %s VALUES ($1::int, now())", table);
    out = fopen(path, "a");
    if (out == NULL) {
        fprintf(stderr, "wm-ledger: %s: %s\n", path, strerror(errno));
        return 1;
    }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGPIPE, SIG_IGN);
    while (!stop_requested) {
        char param[24];
        const char *params[1] = {param};
        PGresult *res;

        if (pg == NULL || PQstatus(pg) != CONNECTION_OK) {
            PQfinish(pg);
            pg = PQconnectdb(conninfo);
            if (PQstatus(pg) != CONNECTION_OK) {
                /* Neither site takes writes yet: try again soon, the gap is what is measured. */
                usleep(10000);
                continue;
            }
            PQsetNoticeProcessor(pg, ledger_notice, &local_only);
        }
        local_only = false;
        snprintf(param, sizeof(param), "%lld", id);
        res = PQexecParams(pg, sql, 1, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(res) == PGRES_COMMAND_OK && !local_only) {
            fprintf(out, "%lld %lld %s:%s\n", id, now_us(), PQhost(pg), PQport(pg));
            fflush(out);
        } else {
            PQfinish(pg); /* the outcome of id is unknown: it is never reused */
            pg = NULL;
        }
        PQclear(res);
        id++;
    }
    PQfinish(pg);
    return fclose(out) == 0 ? 0 : 1;
}
