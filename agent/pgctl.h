/*
 * pgctl.h - control of the site's own PostgreSQL: the programs an agent runs on it (pg_ctl,
 * pg_rewind, pg_basebackup, psql) without blocking its loop, what pg_controldata says, and the
 * configuration that makes the server a standby of the agent's WAL server.
 *
 * Programs run as child processes (struct pgctl_job): pgctl_spawn() starts one with its
 * output appended to a log file, pgctl_poll() reaps it from the agent's loop.  The agent runs
 * as the OS user owning PGDATA, so the children do too.  Everything else here is quick,
 * synchronous file work.  Functions return >= 0 or a negative errno, with a message for the
 * operator in err where they take one.
 */
#ifndef WALMIRROR_AGENT_PGCTL_H
#define WALMIRROR_AGENT_PGCTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "config.h"
#include "err.h"

struct pgctl_job {
    pid_t pid;          /* 0 when no child runs */
    char what[96];      /* for logs: "pg_ctl promote" */
    int exit_code;      /* once done: the exit status, or 128 + signal */
    uint64_t started_ms;
};

/*
 * Starts argv[0] (a full path) with stdin from /dev/null and stdout + stderr appended to
 * log_path.  what names the step in logs.  -EBUSY if j already runs a child.
 */
WM_MUSTCHECK int pgctl_spawn(struct pgctl_job *j, const char *what, const char *log_path,
                             char *const argv[]);
/* 0 while the child runs, 1 once it has ended (exit_code set, pid 0), or a negative errno. */
WM_MUSTCHECK int pgctl_poll(struct pgctl_job *j);
/* Kills a running child and reaps it. */
void pgctl_kill(struct pgctl_job *j);

/* What pg_controldata reports about a data directory (running or not). */
struct pgctl_control {
    uint64_t system_id;
    uint32_t seg_size;
    char state[40];        /* "shut down", "in production", "shut down in recovery", ... */
    uint64_t checkpoint_lsn;
    uint64_t redo_lsn;
    uint32_t checkpoint_tli; /* "Latest checkpoint's TimeLineID" */
    uint64_t min_recovery_lsn;
    uint32_t min_recovery_tli;
};

WM_MUSTCHECK int pgctl_controldata(const char *pgdata, struct pgctl_control *out, char *err,
                                   size_t errlen);

/*
 * Where a standby made from pgdata (stopped) starts reading WAL: the redo point of its latest
 * checkpoint, or the start of a backup_label (pg_rewind, pg_basebackup) if that is earlier,
 * with its timeline.  A spool that holds WAL from the segment of *lsn on serves it.
 */
WM_MUSTCHECK int pgctl_wal_start(const char *pgdata, uint64_t *lsn, uint32_t *tli, char *err,
                                 size_t errlen);

/*
 * Makes pgdata a standby of this site's WAL server: standby.signal, and in
 * postgresql.auto.conf one block (replacing the one written before, if any) with
 * primary_conninfo to wal_listen (application_name = node_name), hot_standby, wal_log_hints,
 * recovery_target_timeline = latest and the port of pg_conninfo.  Durable (fsync).
 */
WM_MUSTCHECK int pgctl_write_standby_config(const struct wm_config *cfg, char *err,
                                            size_t errlen);

/*
 * Keeps a copy of the site's own configuration files (postgresql.conf, postgresql.auto.conf,
 * pg_hba.conf, pg_ident.conf) in save_dir, and puts them back: pg_rewind and pg_basebackup
 * bring the other site's, whose port, paths and walmirror block are wrong here.
 */
WM_MUSTCHECK int pgctl_save_configs(const char *pgdata, const char *save_dir, char *err,
                                    size_t errlen);
WM_MUSTCHECK int pgctl_restore_configs(const char *pgdata, const char *save_dir, char *err,
                                       size_t errlen);

#endif
