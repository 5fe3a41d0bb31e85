/*
 * pgctl.h - control of the site's own PostgreSQL: the programs an agent runs on it (pg_ctl,
 * pg_rewind, pg_basebackup, psql, pg_controldata) without blocking its loop, what
 * pg_controldata says, and the configuration that makes the server a standby of the agent's
 * WAL server.
 *
 * Programs run as child processes (struct pgctl_job) from an argument vector, never through a
 * shell, with LC_ALL=C (their messages are parsed or logged as they are): pgctl_spawn()
 * starts one with its output appended to a log file, pgctl_poll() reaps it from the agent's
 * loop (SIGCHLD-free: the loop polls a job while it runs).  The pgctl_run_* helpers build the
 * argument vectors of the steps the agent takes.  The agent runs as the OS user owning PGDATA,
 * so the children do too.  Everything else here is quick, synchronous work on small files.
 * Functions return >= 0 or a negative errno, with a message for the operator in err where they
 * take one.
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
    int pidfd;          /* readable once the child exits (pidfd_open); -1: none, poll instead */
    char what[96];      /* for logs: "pg_ctl promote" */
    int exit_code;      /* once done: the exit status, or 128 + signal */
    uint64_t started_ms;
};

/* Directory of the PostgreSQL 15 programs: $WALMIRROR_PG_BINDIR, else
 * /usr/lib/postgresql/15/bin. */
const char *pgctl_bindir(void);

/*
 * Starts argv[0] (a full path) with stdin from /dev/null and stdout + stderr appended to
 * log_path (truncated first when truncate).  what names the step in logs.  -EBUSY if j
 * already runs a child.
 */
WM_MUSTCHECK int pgctl_spawn(struct pgctl_job *j, const char *what, const char *log_path,
                             bool truncate, char *const argv[]);
/* 0 while the child runs, 1 once it has ended (exit_code set, pid 0, pidfd closed), or a
 * negative errno.  A caller waiting on pidfd must stop waiting on it before this closes it. */
WM_MUSTCHECK int pgctl_poll(struct pgctl_job *j);
/* Kills a running child and reaps it. */
void pgctl_kill(struct pgctl_job *j);
/* A job that has never run (pid 0, no pidfd). */
void pgctl_job_init(struct pgctl_job *j);

/* The steps, each a job logging to log_path:
 *   pg_ctl stop -m fast | start (server log: server_log) | promote, -w -t 120, on pgdata;
 *   CHECKPOINT on the server of conninfo, refused there while it is still in recovery;
 *   pg_switch_wal() and CHECKPOINT on the local primary (conninfo) before a switchover stops it;
 *   pg_rewind --target-pgdata pgdata --source-server conninfo;
 *   pg_basebackup -D pgdata -d conninfo --wal-method=stream --checkpoint=fast;
 *   emptying pgdata (find pgdata -mindepth 1 -delete: pgdata itself stays, with its mode);
 *   pg_controldata -D pgdata, its output (only) into log_path, for pgctl_controldata_read. */
enum pgctl_action {
    PGCTL_STOP,
    PGCTL_START,
    PGCTL_PROMOTE,
};
WM_MUSTCHECK int pgctl_run_pg_ctl(struct pgctl_job *j, enum pgctl_action action,
                                  const char *pgdata, const char *server_log,
                                  const char *log_path);
WM_MUSTCHECK int pgctl_run_checkpoint(struct pgctl_job *j, const char *conninfo,
                                      const char *log_path);
WM_MUSTCHECK int pgctl_run_local_checkpoint(struct pgctl_job *j, const char *conninfo,
                                            const char *log_path);
WM_MUSTCHECK int pgctl_run_rewind(struct pgctl_job *j, const char *pgdata, const char *conninfo,
                                  const char *log_path);
WM_MUSTCHECK int pgctl_run_basebackup(struct pgctl_job *j, const char *pgdata,
                                      const char *conninfo, const char *log_path);
WM_MUSTCHECK int pgctl_run_empty(struct pgctl_job *j, const char *pgdata, const char *log_path);
WM_MUSTCHECK int pgctl_run_controldata(struct pgctl_job *j, const char *pgdata,
                                       const char *out_path);

/* Whether the postmaster of pgdata runs (postmaster.pid present and its process alive). */
bool pgctl_running(const char *pgdata);

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

/* Runs pg_controldata and waits for it: for start-up and tools, not for the agent's loop
 * (which runs pgctl_run_controldata as a job and reads its output with the next function). */
WM_MUSTCHECK int pgctl_controldata(const char *pgdata, struct pgctl_control *out, char *err,
                                   size_t errlen);
/* Reads what pg_controldata of pgdata wrote into out_path. */
WM_MUSTCHECK int pgctl_controldata_read(const char *out_path, const char *pgdata,
                                        struct pgctl_control *out, char *err, size_t errlen);

/*
 * Where a standby made from pgdata (stopped) starts reading WAL: the redo point of its latest
 * checkpoint (ctl, read from the same pgdata), or the start of a backup_label (pg_rewind,
 * pg_basebackup) if that is earlier, with its timeline.  A spool that holds WAL from the
 * segment of *lsn on serves it.
 */
WM_MUSTCHECK int pgctl_wal_start(const char *pgdata, const struct pgctl_control *ctl,
                                 uint64_t *lsn, uint32_t *tli, char *err, size_t errlen);

/*
 * Makes pgdata a standby of this site's WAL server: standby.signal, and in
 * postgresql.auto.conf one block (replacing the one written before, if any) with
 * primary_conninfo to wal_listen (application_name = node_name), hot_standby, wal_log_hints,
 * recovery_target_timeline = latest and the port of pg_conninfo.  sync_names, when not NULL,
 * also replaces any synchronous_standby_names setting of the file: the requirement this site
 * had lifted as a primary (syncrep.h) is in force again the day it is promoted.  Durable
 * (fsync).
 */
WM_MUSTCHECK int pgctl_write_standby_config(const struct wm_config *cfg, const char *sync_names,
                                            char *err, size_t errlen);

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
