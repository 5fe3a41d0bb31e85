/*
 * syncrep.c - lifting and restoring the local primary's synchronous requirement; contract in
 * syncrep.h.
 *
 * Each operation is a chain of queries on the owner's pgconn, one step per answer:
 *   relax:    SHOW -> (save the value durably) -> FORMAT -> ALTER -> RELOAD -> done
 *   restore:  FORMAT -> ALTER -> RELOAD -> WALSENDER (repeated every 100 ms until the
 *             walsender counts as synchronous) -> the probe, until a commit is seen waiting
 *             for the standby: PROBE_PID (on the probe connection), then, the owner holding
 *             its reports, the probe transaction sent on the probe connection while WATCH
 *             looks at its backend in pg_stat_activity every 50 ms on the control connection;
 *             wait_event SyncRep is the proof -> CANCEL (pg_cancel_backend: the probe returns,
 *             committed, with the warning) -> (remove the saved file) -> done.  A probe that
 *             commits without waiting means the requirement is not in force yet (the
 *             checkpointer has not reloaded): PAUSE 200 ms and probe again.
 * A statement_timeout cannot cut the wait (PostgreSQL disables it before the commit), hence
 * the second connection and pg_cancel_backend.  The pauses are pg_sleep() on the server, so
 * that this module needs no timer of its own; the control connection is the agent's, used for
 * nothing urgent.  ALTER SYSTEM takes no parameters: format('... %L', $1) quotes the value.
 */
#include "syncrep.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "util.h"

#define SYNCREP_FILE "synchronous_standby_names.saved"
#define SYNCREP_QUERY_MS 10000u
#define SYNCREP_CONFIRM_MS 10000u /* walsender + probe tries, together */
#define SYNCREP_VALUE_MAX 1023

enum sr_step {
    SR_IDLE,
    SR_SHOW,
    SR_FORMAT,
    SR_ALTER,
    SR_RELOAD,
    SR_WALSENDER,
    SR_PAUSE,     /* before the next probe */
    SR_PROBE_PID, /* the probe connection's backend pid */
    SR_WATCH,     /* the probe runs; its backend is looked at */
    SR_CANCEL,    /* it waits for the standby: cancelled, its end awaited */
};

static const char *const step_names[] = {"idle",      "show",  "format",    "alter", "reload",
                                         "walsender", "pause", "probe-pid", "watch", "cancel"};

struct syncrep {
    struct pgconn *pg;
    struct pgconn *probe_pg; /* the probe transaction's own connection */
    char *state_dir;
    char app[64];
    const struct syncrep_hooks *hooks;
    void *hooks_ctx;
    char comp[96];

    enum sr_step step;
    bool restoring;
    bool held;
    bool have_saved;
    char saved[SYNCREP_VALUE_MAX + 1]; /* the value kept on disk */
    char target[SYNCREP_VALUE_MAX + 1]; /* what ALTER SYSTEM sets now */
    uint64_t confirm_until_ms;
    unsigned tries;
    char probe_pid[16];
    bool probe_running;      /* the probe transaction is in flight */
    bool probe_waited;       /* its backend was seen waiting for the standby */
    syncrep_done done;
    void *ctx;
};

static void on_answer(void *ctx, const PGresult *res, const char *err, const char *notice);

static void
release_hold(struct syncrep *s)
{
    if (s->held && s->hooks != NULL && s->hooks->release != NULL)
        s->hooks->release(s->hooks_ctx);
    s->held = false;
}

static void
finish(struct syncrep *s, int rc, const char *why)
{
    syncrep_done done = s->done;

    release_hold(s);
    log_debug(s->comp, "%s %s in step %s", s->restoring ? "restore" : "relax",
              rc == 0 ? "done" : "failed", step_names[s->step]);
    s->step = SR_IDLE;
    s->done = NULL;
    if (done != NULL)
        done(s->ctx, rc, why);
}

/* Queues the next step's query; a failure to queue it ends the operation (finish, whose
 * done is not set yet when this is the first step: the caller returns the error instead). */
static int
query(struct syncrep *s, enum sr_step step, const char *sql, int nparams,
      const char *const *params)
{
    int rc;

    s->step = step;
    rc = pgconn_query(s->pg, sql, nparams, params, SYNCREP_QUERY_MS, on_answer, s);
    if (rc < 0) {
        char why[160];
        snprintf(why, sizeof(why), "cannot query PostgreSQL (%s): %s", step_names[step],
                 wire_strerror(rc));
        finish(s, rc, why);
    }
    return rc;
}

/* The value file: tmp, fsync, rename, directory fsync.  Returns 0 or -errno. */
static int
save_value(struct syncrep *s, const char *value, char *why, size_t whylen)
{
    char path[4200], tmp[4300];
    int fd, dfd, rc = 0;

    snprintf(path, sizeof(path), "%s/%s", s->state_dir, SYNCREP_FILE);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = -errno;
        snprintf(why, whylen, "cannot create %s: %s", tmp, strerror(-rc));
        return rc;
    }
    rc = wm_write_all(fd, value, strlen(value));
    if (rc == 0)
        rc = wm_write_all(fd, "\n", 1);
    if (rc == 0 && fsync(fd) != 0)
        rc = -errno;
    if (close(fd) != 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, path) != 0)
        rc = -errno;
    if (rc == 0) {
        dfd = open(s->state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0 || fsync(dfd) != 0)
            rc = -errno;
        if (dfd >= 0)
            close(dfd);
    }
    if (rc < 0) {
        unlink(tmp);
        snprintf(why, whylen, "cannot save synchronous_standby_names in %s: %s", path,
                 strerror(-rc));
    }
    return rc;
}

static int
remove_value(struct syncrep *s)
{
    char path[4200];
    int dfd, rc = 0;

    snprintf(path, sizeof(path), "%s/%s", s->state_dir, SYNCREP_FILE);
    if (unlink(path) != 0 && errno != ENOENT)
        return -errno;
    dfd = open(s->state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) != 0)
        rc = -errno;
    if (dfd >= 0)
        close(dfd);
    return rc;
}

static void
load_value(struct syncrep *s)
{
    char path[4200];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", s->state_dir, SYNCREP_FILE);
    s->saved[0] = '\0';
    s->have_saved = false;
    f = fopen(path, "r");
    if (f == NULL)
        return;
    if (fgets(s->saved, sizeof(s->saved), f) != NULL) {
        s->saved[strcspn(s->saved, "\n")] = '\0';
        s->have_saved = true;
    }
    fclose(f);
}

static int
format_alter(struct syncrep *s)
{
    const char *params[1] = {s->target};

    return query(s, SR_FORMAT,
          "SELECT format('ALTER SYSTEM SET synchronous_standby_names = %L', $1::text)", 1,
          params);
}

static int
ask_walsender(struct syncrep *s, bool pause)
{
    const char *params[2] = {s->app, pause ? "0.1" : "0"};

    return query(s, SR_WALSENDER,
          "SELECT (SELECT string_agg(sync_state, ',') FROM pg_stat_replication "
          "WHERE application_name = $1) FROM pg_sleep($2::float8)",
          2, params);
}

static void on_probe_answer(void *ctx, const PGresult *res, const char *err,
                            const char *notice);

/* On the probe connection: its backend's pid first, then (PROBE_PID's answer) the probe. */
static void
probe(struct syncrep *s)
{
    int rc;

    s->tries++;
    s->step = SR_PROBE_PID;
    rc = pgconn_query(s->probe_pg, "SELECT pg_backend_pid()", 0, NULL, SYNCREP_QUERY_MS,
                      on_probe_answer, s);
    if (rc < 0) {
        char why[160];
        snprintf(why, sizeof(why), "cannot query PostgreSQL (probe): %s", wire_strerror(rc));
        finish(s, rc, why);
    }
}

static void
watch(struct syncrep *s, bool pause)
{
    const char *params[2] = {s->probe_pid, pause ? "0.05" : "0"};

    (void)query(s, SR_WATCH,
                "SELECT (SELECT wait_event FROM pg_stat_activity WHERE pid = $1::int) "
                "FROM pg_sleep($2::float8)",
                2, params);
}

static void
confirmed(struct syncrep *s)
{
    char why[4600];
    int rc = remove_value(s);

    if (rc < 0) {
        snprintf(why, sizeof(why), "cannot remove %s/%s: %s", s->state_dir, SYNCREP_FILE,
                 strerror(-rc));
        finish(s, rc, why);
        return;
    }
    s->have_saved = false;
    log_info(s->comp, "synchronous_standby_names = '%s' is in force: a commit waited for the "
                      "standby (probe %u)", s->target, s->tries);
    finish(s, 0, "restored");
}

/* The probe connection's answers: its pid, then the probe transaction's end. */
static void
on_probe_answer(void *ctx, const PGresult *res, const char *err, const char *notice)
{
    struct syncrep *s = ctx;
    char why[4600];

    (void)notice;
    if (s->step == SR_PROBE_PID) {
        if (err != NULL || PQntuples(res) != 1) {
            snprintf(why, sizeof(why), "the probe connection failed: %s",
                     err != NULL ? err : "no pid");
            finish(s, -EIO, why);
            return;
        }
        snprintf(s->probe_pid, sizeof(s->probe_pid), "%s", PQgetvalue(res, 0, 0));
        /* Held from here: the probe's commit record lies past anything reported meanwhile,
         * so only a requirement not in force lets it return by itself. */
        if (!s->held && s->hooks != NULL && s->hooks->hold != NULL) {
            s->hooks->hold(s->hooks_ctx);
            s->held = true;
        }
        s->probe_waited = false;
        /* It must write WAL: a transaction that only took an xid commits without waiting
         * (RecordTransactionCommit waits only when the transaction wrote WAL before its commit
         * record).  A transactional logical message is WAL without a table. */
        if (pgconn_query(s->probe_pg,
                         "BEGIN; SET LOCAL synchronous_commit = remote_write; "
                         "SELECT pg_logical_emit_message(true, 'walmirror', "
                         "'synchronous requirement probe'); COMMIT",
                         0, NULL, SYNCREP_QUERY_MS, on_probe_answer, s) < 0) {
            finish(s, -EIO, "cannot send the probe transaction");
            return;
        }
        s->probe_running = true;
        watch(s, false);
        return;
    }
    /* The probe transaction ended (committed either way). */
    s->probe_running = false;
    release_hold(s);
    if (s->step == SR_IDLE)
        return;
    if (s->probe_waited) {
        if (s->step != SR_CANCEL || pgconn_pending(s->pg) == 0)
            confirmed(s);
        return; /* CANCEL's answer confirms */
    }
    if (err != NULL) {
        snprintf(why, sizeof(why), "the probe transaction failed: %s", err);
        finish(s, -EIO, why);
        return;
    }
    if (clock_mono_ms() >= s->confirm_until_ms) {
        snprintf(why, sizeof(why),
                 "synchronous_standby_names is '%s' again, but a probe commit did not wait "
                 "for the standby in %u tries (%.0f s)", s->target, s->tries,
                 SYNCREP_CONFIRM_MS / 1000.0);
        finish(s, -ETIMEDOUT, why);
        return;
    }
    /* Not in force yet (the checkpointer has not reloaded): again in a moment. */
    if (s->step == SR_WATCH)
        return; /* the watch's answer pauses */
    (void)query(s, SR_PAUSE, "SELECT pg_sleep(0.2)", 0, NULL);
}

static void
on_answer(void *ctx, const PGresult *res, const char *err, const char *notice)
{
    struct syncrep *s = ctx;
    char why[4600];

    if (err != NULL) {
        snprintf(why, sizeof(why), "%s of synchronous_standby_names failed (%s): %s",
                 s->restoring ? "restoring" : "lifting", step_names[s->step], err);
        finish(s, -EIO, why);
        return;
    }
    switch (s->step) {
    case SR_SHOW:
        snprintf(s->target, sizeof(s->target), "%s",
                 PQntuples(res) == 1 ? PQgetvalue(res, 0, 0) : "");
        if (s->target[0] == '\0') {
            finish(s, 0, "synchronous_standby_names is empty: nothing to lift");
            return;
        }
        if (save_value(s, s->target, why, sizeof(why)) < 0) {
            finish(s, -EIO, why);
            return;
        }
        snprintf(s->saved, sizeof(s->saved), "%s", s->target);
        s->have_saved = true;
        s->target[0] = '\0';
        (void)format_alter(s);
        return;
    case SR_FORMAT:
        if (PQntuples(res) != 1) {
            finish(s, -EIO, "format() returned no row");
            return;
        }
        (void)query(s, SR_ALTER, PQgetvalue(res, 0, 0), 0, NULL);
        return;
    case SR_ALTER:
        (void)query(s, SR_RELOAD, "SELECT pg_reload_conf()", 0, NULL);
        return;
    case SR_RELOAD:
        if (!s->restoring) {
            log_warning(s->comp, "synchronous_standby_names emptied (was '%s'): commits no "
                                 "longer wait for the standby", s->saved);
            finish(s, 0, "lifted");
            return;
        }
        s->confirm_until_ms = clock_mono_ms() + SYNCREP_CONFIRM_MS;
        (void)ask_walsender(s, false);
        return;
    case SR_WALSENDER: {
        const char *v = PQntuples(res) == 1 && !PQgetisnull(res, 0, 0) ? PQgetvalue(res, 0, 0)
                                                                         : "";
        if (strstr(v, "sync") != NULL || strstr(v, "quorum") != NULL) {
            s->tries = 0;
            probe(s);
            return;
        }
        if (clock_mono_ms() >= s->confirm_until_ms) {
            snprintf(why, sizeof(why),
                     "synchronous_standby_names is '%s' again, but the walsender of %s is "
                     "not counted as synchronous (sync_state '%s') after %.0f s",
                     s->target, s->app, v, SYNCREP_CONFIRM_MS / 1000.0);
            finish(s, -ETIMEDOUT, why);
            return;
        }
        (void)ask_walsender(s, true);
        return;
    }
    case SR_PAUSE:
        probe(s);
        return;
    case SR_WATCH: {
        const char *v = PQntuples(res) == 1 && !PQgetisnull(res, 0, 0) ? PQgetvalue(res, 0, 0)
                                                                         : "";
        const char *params[1] = {s->probe_pid};

        if (strcmp(v, "SyncRep") == 0) {
            /* The proof: a commit waits for the standby.  Let it go (committed locally). */
            s->probe_waited = true;
            (void)query(s, SR_CANCEL, "SELECT pg_cancel_backend($1::int)", 1, params);
            return;
        }
        if (s->probe_running && clock_mono_ms() < s->confirm_until_ms) {
            watch(s, true);
            return;
        }
        if (s->probe_running) {
            /* Neither waiting for the standby nor done: something else holds it. */
            s->probe_waited = false;
            (void)query(s, SR_CANCEL, "SELECT pg_cancel_backend($1::int)", 1, params);
            return;
        }
        /* The probe ended without waiting: not in force yet. */
        (void)query(s, SR_PAUSE, "SELECT pg_sleep(0.2)", 0, NULL);
        return;
    }
    case SR_CANCEL:
        if (s->probe_running)
            return; /* its end follows on the probe connection */
        if (s->probe_waited) {
            confirmed(s);
            return;
        }
        snprintf(why, sizeof(why),
                 "synchronous_standby_names is '%s' again, but a probe commit neither waited "
                 "for the standby nor ended in %.0f s", s->target, SYNCREP_CONFIRM_MS / 1000.0);
        finish(s, -ETIMEDOUT, why);
        return;
    case SR_PROBE_PID:
    case SR_IDLE:
        return;
    }
}

int
syncrep_new(struct syncrep **out, struct pgconn *pg, struct wio_loop *loop, const char *conninfo,
            const char *state_dir, const char *application_name,
            const struct syncrep_hooks *hooks, void *hooks_ctx, const char *comp)
{
    struct syncrep *s = calloc(1, sizeof(*s));
    int rc;

    if (s == NULL)
        return -ENOMEM;
    s->state_dir = strdup(state_dir);
    if (s->state_dir == NULL) {
        free(s);
        return -ENOMEM;
    }
    rc = pgconn_new(&s->probe_pg, loop, conninfo, comp);
    if (rc < 0) {
        free(s->state_dir);
        free(s);
        return rc;
    }
    s->pg = pg;
    s->hooks = hooks;
    s->hooks_ctx = hooks_ctx;
    snprintf(s->app, sizeof(s->app), "%s", application_name);
    snprintf(s->comp, sizeof(s->comp), "%s", comp);
    load_value(s);
    *out = s;
    return 0;
}

void
syncrep_free(struct syncrep *s)
{
    if (s == NULL)
        return;
    pgconn_forget(s->pg, s);
    pgconn_free(s->probe_pg);
    release_hold(s);
    free(s->state_dir);
    free(s);
}

bool
syncrep_relaxed(const struct syncrep *s)
{
    return s != NULL && s->have_saved;
}

int
syncrep_forget(struct syncrep *s)
{
    int rc;

    if (s == NULL || !s->have_saved)
        return 0;
    rc = remove_value(s);
    if (rc == 0)
        s->have_saved = false;
    return rc;
}

const char *
syncrep_saved(const struct syncrep *s)
{
    return s != NULL && s->have_saved ? s->saved : "";
}

/* Starts an operation with its first query; done only once that is queued. */
static int
start(struct syncrep *s, int rc, syncrep_done done, void *ctx)
{
    if (rc < 0)
        return rc;
    s->done = done;
    s->ctx = ctx;
    return 0;
}

int
syncrep_relax(struct syncrep *s, syncrep_done done, void *ctx)
{
    if (s->step != SR_IDLE)
        return -EBUSY;
    s->restoring = false;
    s->done = NULL;
    if (s->have_saved) {
        /* Lifted before (the agent restarted meanwhile): empty it again, keep the file. */
        s->target[0] = '\0';
        return start(s, format_alter(s), done, ctx);
    }
    return start(s, query(s, SR_SHOW, "SHOW synchronous_standby_names", 0, NULL), done,
                 ctx);
}

int
syncrep_restore(struct syncrep *s, syncrep_done done, void *ctx)
{
    if (s->step != SR_IDLE)
        return -EBUSY;
    s->restoring = true;
    s->done = NULL;
    s->confirm_until_ms = clock_mono_ms() + SYNCREP_CONFIRM_MS;
    if (!s->have_saved) {
        /* Nothing was lifted: still prove it is in force, from the walsender step on. */
        snprintf(s->target, sizeof(s->target), "(as configured)");
        return start(s, ask_walsender(s, false), done, ctx);
    }
    snprintf(s->target, sizeof(s->target), "%s", s->saved);
    return start(s, format_alter(s), done, ctx);
}
