/*
 * pgtest.c - PostgreSQL 15 clusters for integration tests; see pgtest.h.
 */
#include "pgtest.h"

#include <check.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

#define PGT_MAX_CLUSTERS 16

static struct pgt_cluster *registered[PGT_MAX_CLUSTERS];
static pid_t registered_by;

const char *
pgt_bindir(void)
{
    static const char *dir = "/usr/lib/postgresql/15/bin";
    return access("/usr/lib/postgresql/15/bin/postgres", X_OK) == 0 ? dir : NULL;
}

static bool
as_root(void)
{
    return geteuid() == 0;
}

bool
pgt_available(void)
{
    if (pgt_bindir() == NULL)
        return false;
    if (as_root())
        return getpwnam("postgres") != NULL && access("/usr/sbin/runuser", X_OK) == 0;
    return true;
}

void
pgt_give_to_postgres(const char *path)
{
    struct passwd *pw;

    if (!as_root())
        return;
    pw = getpwnam("postgres");
    tu_require(pw != NULL, "no postgres user");
    tu_require(chown(path, pw->pw_uid, pw->pw_gid) == 0, "chown %s failed", path);
}

static void
stop_all(void)
{
    if (getpid() != registered_by)
        return;
    for (int i = 0; i < PGT_MAX_CLUSTERS; i++)
        if (registered[i] != NULL && registered[i]->running)
            pgt_stop(registered[i], "immediate");
}

static void
register_cluster(struct pgt_cluster *c)
{
    if (registered_by != getpid()) {
        memset(registered, 0, sizeof(registered));
        registered_by = getpid();
        atexit(stop_all);
    }
    for (int i = 0; i < PGT_MAX_CLUSTERS; i++)
        if (registered[i] == NULL || registered[i] == c) {
            registered[i] = c;
            return;
        }
}

static void
unregister_cluster(struct pgt_cluster *c)
{
    for (int i = 0; i < PGT_MAX_CLUSTERS; i++)
        if (registered[i] == c)
            registered[i] = NULL;
}

int
pgt_sh(struct pgt_cluster *c, const char *fmt, ...)
{
    static unsigned counter;
    char *cmd, *path;
    va_list ap;
    FILE *f;
    int rc;

    va_start(ap, fmt);
    rc = vasprintf(&cmd, fmt, ap);
    va_end(ap);
    tu_require(rc > 0);
    /* A script file, so that the command may hold any quoting. */
    tu_require(asprintf(&path, "%s/cmd-%d-%u.sh", c->dir, (int)getpid(), counter++) > 0);
    f = fopen(path, "w");
    tu_require(f != NULL, "cannot write %s", path);
    fprintf(f,
            "cd '%s' || exit 1\n"
            "export PATH='%s':\"$PATH\" PGHOST='%s' PGPORT=%d PGDATABASE=postgres "
            "PGUSER=postgres PGDATA='%s'\n"
            "set -x\n"
            "%s\n",
            c->dir, pgt_bindir(), c->dir, c->port, c->pgdata, cmd);
    tu_require(fclose(f) == 0);
    tu_require(chmod(path, 0755) == 0);
    if (as_root())
        rc = tu_run("runuser -u postgres -- sh '%s' >>'%s/cmd.log' 2>&1", path, c->dir);
    else
        rc = tu_run("sh '%s' >>'%s/cmd.log' 2>&1", path, c->dir);
    unlink(path);
    free(path);
    free(cmd);
    return rc;
}

void
pgt_prepare(struct pgt_cluster *c, const char *tag)
{
    memset(c, 0, sizeof(*c));
    c->dir = tu_tmpdir(tag);
    pgt_give_to_postgres(c->dir);
    tu_require(asprintf(&c->pgdata, "%s/data", c->dir) > 0);
    c->port = tu_free_port();
}

int
pgt_spawn(char *const argv[], const char *log)
{
    pid_t pid = fork();

    tu_require(pid >= 0);
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        struct passwd *pw = getpwnam("postgres");

        if (fd < 0)
            _exit(126);
        if (dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
            _exit(126);
        if (as_root() && (pw == NULL || initgroups("postgres", pw->pw_gid) != 0 ||
                          setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0))
            _exit(126);
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

int
pgt_init(struct pgt_cluster *c, const char *tag, const char *extra_conf)
{
    char *conf;
    FILE *f;

    pgt_prepare(c, tag);
    if (pgt_sh(c, "initdb -D \"$PGDATA\" -U postgres -A trust --no-sync -E UTF8 --locale=C") != 0)
        return -1;
    tu_require(asprintf(&conf, "%s/postgresql.auto.conf", c->pgdata) > 0);
    f = fopen(conf, "a");
    tu_require(f != NULL, "cannot open %s", conf);
    fprintf(f,
            "listen_addresses = '127.0.0.1'\n"
            "port = %d\n"
            "unix_socket_directories = '%s'\n"
            "wal_level = replica\n"
            "wal_log_hints = on\n"
            "max_wal_senders = 10\n"
            "max_replication_slots = 10\n"
            "fsync = on\n"
            "logging_collector = off\n"
            "%s\n",
            c->port, c->dir, extra_conf != NULL ? extra_conf : "");
    tu_require(fclose(f) == 0);
    free(conf);
    return 0;
}

int
pgt_start(struct pgt_cluster *c)
{
    register_cluster(c);
    if (pgt_sh(c, "pg_ctl -D \"$PGDATA\" -l \"%s/server.log\" -w -t 60 start", c->dir) != 0)
        return -1;
    c->running = true;
    return 0;
}

int
pgt_stop(struct pgt_cluster *c, const char *mode)
{
    int rc;

    if (!c->running)
        return 0;
    rc = pgt_sh(c, "pg_ctl -D \"$PGDATA\" -m %s -w -t 60 stop", mode);
    if (rc == 0)
        c->running = false;
    return rc == 0 ? 0 : -1;
}

void
pgt_destroy(struct pgt_cluster *c)
{
    if (c->dir == NULL)
        return;
    pgt_stop(c, "immediate");
    unregister_cluster(c);
    if (getenv("WALMIRROR_KEEP_TMP") == NULL)
        tu_rmtree(c->dir);
    free(c->dir);
    free(c->pgdata);
    memset(c, 0, sizeof(*c));
}

char *
pgt_query(struct pgt_cluster *c, const char *sql)
{
    char *out_path, *sql_path, *res;
    size_t len;
    FILE *f;

    tu_require(asprintf(&out_path, "%s/query.out", c->dir) > 0);
    tu_require(asprintf(&sql_path, "%s/query.sql", c->dir) > 0);
    f = fopen(sql_path, "w");
    tu_require(f != NULL);
    fputs(sql, f);
    tu_require(fclose(f) == 0);
    chmod(sql_path, 0644);
    unlink(out_path);
    if (pgt_sh(c, "psql -AtX -v ON_ERROR_STOP=1 -f \"%s\" -o \"%s\"", sql_path, out_path) != 0) {
        free(out_path);
        free(sql_path);
        return NULL;
    }
    res = tu_read_file(out_path, &len);
    while (res != NULL && len > 0 && (res[len - 1] == '\n' || res[len - 1] == ' '))
        res[--len] = '\0';
    free(out_path);
    free(sql_path);
    return res;
}

char *
pgt_make_wal(const char *tag, unsigned scale, unsigned long long min_bytes)
{
    struct pgt_cluster pg;
    char *last = NULL, *dir = NULL;
    char walin[64];

    if (pgt_init(&pg, tag,
                 "max_wal_size = 4GB\nmin_wal_size = 1GB\ncheckpoint_timeout = 1h\n"
                 "wal_keep_size = 4GB\nsynchronous_commit = off") != 0 ||
        pgt_start(&pg) != 0) {
        fprintf(stderr, "cannot start PostgreSQL (see %s)\n", pg.dir);
        goto out;
    }
    if (pgt_sh(&pg, "pgbench -i -q -s %u postgres && pgbench -n -c 2 -j 2 -t 500 postgres",
               scale) != 0)
        goto out;
    /* A segment beyond min_bytes, so that the switched one leaves min_bytes complete. */
    for (int round = 0; round < 40; round++) {
        char *lsn = pgt_query(&pg, "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn");
        unsigned long long used = lsn != NULL ? strtoull(lsn, NULL, 10) : 0;

        free(lsn);
        if (used >= min_bytes + 16u * 1024 * 1024)
            break;
        if (pgt_sh(&pg, "pgbench -n -c 2 -j 2 -t 2000 postgres") != 0)
            goto out;
    }
    last = pgt_query(&pg, "SELECT pg_walfile_name(pg_switch_wal())");
    if (last == NULL || pgt_stop(&pg, "fast") != 0)
        goto out;
    snprintf(walin, sizeof(walin), "%.40s-in", tag);
    dir = tu_tmpdir(walin);
    if (tu_run("cd '%s/pg_wal' && for f in $(ls | grep -E '^[0-9A-F]{24}$'); do "
               "[ \"$f\" \\> '%s' ] || cp \"$f\" '%s/' || exit 1; done",
               pg.pgdata, last, dir) != 0) {
        tu_rmtree(dir);
        free(dir);
        dir = NULL;
    }
out:
    free(last);
    pgt_destroy(&pg);
    return dir;
}
