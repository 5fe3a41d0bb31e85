/*
 * setup.c - init-standby: site B's standby from a base backup of site A; see setup.h.
 */
#include "setup.h"

#include <dirent.h>
#include <errno.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pgctl.h"

/* One-value query; returns a malloc'd string or NULL (message printed). */
static char *
query1(PGconn *pg, const char *sql, int nparams, const char *const *params)
{
    PGresult *res = PQexecParams(pg, sql, nparams, NULL, params, NULL, NULL, 0);
    char *v = NULL;

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fprintf(stderr, "init-standby: on the primary, %s failed: %s", sql, PQerrorMessage(pg));
    } else if (PQntuples(res) == 1 && !PQgetisnull(res, 0, 0)) {
        v = strdup(PQgetvalue(res, 0, 0));
    } else {
        v = strdup("");
    }
    PQclear(res);
    return v;
}

static bool
dir_is_empty_or_missing(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *e;
    bool empty = true;

    if (d == NULL)
        return errno == ENOENT;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            empty = false;
    closedir(d);
    return empty;
}

static int
check_primary(const struct wm_config *cfg, PGconn *pg)
{
    const char *slot[1] = {cfg->slot_name};
    char *v;
    int rc = 0;

    if (PQserverVersion(pg) < 150000 || PQserverVersion(pg) >= 160000) {
        fprintf(stderr, "init-standby: the primary runs PostgreSQL %d; walmirror needs 15\n",
                PQserverVersion(pg) / 10000);
        return -1;
    }
    v = query1(pg, "SELECT pg_is_in_recovery()::text", 0, NULL);
    if (v == NULL || strcmp(v, "false") != 0) {
        fprintf(stderr, "init-standby: the server named by --primary is not a primary\n");
        free(v);
        return -1;
    }
    free(v);
    v = query1(pg, "SELECT current_setting('wal_level')", 0, NULL);
    if (v == NULL || (strcmp(v, "replica") != 0 && strcmp(v, "logical") != 0)) {
        fprintf(stderr, "init-standby: the primary's wal_level is %s; it must be replica\n",
                v != NULL ? v : "?");
        free(v);
        return -1;
    }
    free(v);
    v = query1(pg,
               "SELECT (current_setting('wal_log_hints')::bool OR "
               "current_setting('data_checksums')::bool)::text",
               0, NULL);
    if (v != NULL && strcmp(v, "true") != 0)
        fprintf(stderr,
                "init-standby: WARNING: the primary has neither wal_log_hints nor data "
                "checksums; after a fail-over it could only rejoin with a new base backup, not "
                "pg_rewind.  Fix: ALTER SYSTEM SET wal_log_hints = on; then restart it.\n");
    free(v);
    v = query1(pg, "SELECT count(*)::text FROM pg_replication_slots WHERE slot_name = $1", 1, slot);
    if (v == NULL)
        return -1;
    if (strcmp(v, "0") == 0) {
        char *made = query1(pg,
                            "SELECT slot_name::text FROM "
                            "pg_create_physical_replication_slot($1, true)",
                            1, slot);
        if (made == NULL)
            rc = -1;
        else
            printf("init-standby: created physical slot \"%s\" on the primary\n", made);
        free(made);
    } else {
        printf("init-standby: the primary already has slot \"%s\"\n", cfg->slot_name);
    }
    free(v);
    return rc;
}

static int
run_basebackup(const struct wm_config *cfg, const char *primary_conninfo)
{
    char prog[4200];
    pid_t pid;
    int status;

    snprintf(prog, sizeof(prog), "%s/pg_basebackup", pgctl_bindir());
    printf("init-standby: pg_basebackup into %s\n", cfg->pgdata);
    fflush(stdout);
    pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        char *argv[] = {prog,
                        "--dbname",
                        (char *)primary_conninfo,
                        "--pgdata",
                        cfg->pgdata,
                        "--wal-method=stream",
                        "--checkpoint=fast",
                        "--progress",
                        "--no-password",
                        NULL};
        execv(prog, argv);
        fprintf(stderr, "init-standby: cannot run %s: %s\n", prog, strerror(errno));
        _exit(127);
    }
    if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "init-standby: pg_basebackup failed\n");
        return -1;
    }
    return 0;
}

static int
write_standby_config(const struct wm_config *cfg)
{
    char err[512];

    if (pgctl_write_standby_config(cfg, NULL, err, sizeof(err)) < 0) {
        fprintf(stderr, "init-standby: %s\n", err);
        return -1;
    }
    return 0;
}

int
setup_init_standby(const struct wm_config *cfg, const char *primary_conninfo)
{
    PGconn *pg;
    int rc;

    if (!dir_is_empty_or_missing(cfg->pgdata)) {
        fprintf(stderr, "init-standby: %s exists and is not empty; refusing to overwrite it\n",
                cfg->pgdata);
        return 1;
    }
    pg = PQconnectdb(primary_conninfo);
    if (PQstatus(pg) != CONNECTION_OK) {
        fprintf(stderr, "init-standby: cannot connect to the primary: %s", PQerrorMessage(pg));
        PQfinish(pg);
        return 1;
    }
    rc = check_primary(cfg, pg);
    PQfinish(pg);
    if (rc < 0 || run_basebackup(cfg, primary_conninfo) < 0 || write_standby_config(cfg) < 0)
        return 1;
    printf("init-standby: %s is a standby of this site's WAL server (%s).\n"
           "Next: start walmirror-agent -c %s, then start PostgreSQL on %s.\n",
           cfg->pgdata, cfg->wal_listen.text, cfg->path, cfg->pgdata);
    return 0;
}
