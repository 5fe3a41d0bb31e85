/*
 * pgtest.h - real PostgreSQL 15 clusters for the integration tests.
 *
 * A cluster lives in a fresh temporary directory, listens on 127.0.0.1 on a free port and a
 * socket in its own directory, and runs as the postgres user (PostgreSQL refuses root): when
 * the tests run as root every server command goes through `runuser -u postgres --`.  Every
 * cluster started is registered and stopped (immediate mode) at process exit, so a failing
 * test does not leave servers behind.
 */
#ifndef WALMIRROR_TESTS_PGTEST_H
#define WALMIRROR_TESTS_PGTEST_H

#include <stdbool.h>
#include <stddef.h>

struct pgt_cluster {
    char *dir;    /* temporary directory holding everything */
    char *pgdata; /* dir/data */
    int port;
    bool running;
};

/* Directory of the PostgreSQL 15 binaries, or NULL when not installed. */
const char *pgt_bindir(void);

/* True when PostgreSQL 15 is installed and we can run it (as postgres, or as ourselves when
 * not root).  Tests skip (exit 77) otherwise. */
bool pgt_available(void);

/* initdb (with data checksums off, wal_log_hints on) and a postgresql.conf suited to tests
 * plus extra_conf lines.  Returns 0 or -1 (with the log in dir). */
int pgt_init(struct pgt_cluster *c, const char *tag, const char *extra_conf);
/* A cluster directory and port, without initdb: for a standby made by pg_basebackup. */
void pgt_prepare(struct pgt_cluster *c, const char *tag);
int pgt_start(struct pgt_cluster *c);
/* mode: "fast" or "immediate". */
int pgt_stop(struct pgt_cluster *c, const char *mode);
/* Stops if running and removes the directory. */
void pgt_destroy(struct pgt_cluster *c);

/*
 * Runs a shell command as the cluster's OS user with PGHOST/PGPORT/PGDATABASE set and the
 * PostgreSQL binaries first on PATH.  Output goes to dir/cmd.log.  Returns the exit status.
 */
int pgt_sh(struct pgt_cluster *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Runs one SQL statement with psql -AtX and returns its trimmed output (malloc'd), or NULL. */
char *pgt_query(struct pgt_cluster *c, const char *sql);

/*
 * Starts argv[0] as the postgres user (setuid in the child when running as root, so the pid
 * returned is the program itself: signals reach it directly), stdout and stderr appended to
 * log.  Returns the pid.
 */
int pgt_spawn(char *const argv[], const char *log);

/*
 * Makes real WAL for tests that need segments: a scratch cluster that keeps its WAL,
 * pgbench -i -s scale, then pgbench runs until at least min_bytes of WAL exist;
 * pg_switch_wal closes the last segment, the cluster stops, and every complete segment up to
 * the switched one is copied into a fresh directory.  Returns that directory (malloc'd), or
 * NULL with the reason on stderr.
 */
char *pgt_make_wal(const char *tag, unsigned scale, unsigned long long min_bytes);

/* Makes path (and its parents' traversal) usable by the postgres user. */
void pgt_give_to_postgres(const char *path);

#endif
