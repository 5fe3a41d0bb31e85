/*
 * metrics.c - the snapshot as Prometheus text; contract in metrics.h.
 *
 * Written with stdio into a memory stream (open_memstream), one family at a time: HELP, TYPE,
 * then its samples.  Nothing here keeps state; the histograms and counters were computed by
 * the agent's loop and came in the snapshot.
 */
#include "metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The role and sync state values a gauge family lists, one sample each (1 for the current). */
static const char *const roles[] = {"source", "sink", "fenced", "witness", "starting"};
static const char *const sync_states[] = {"sync", "catchup", "waiting", "exposed", "down"};
static const char *const arbiter_states[] = {"up", "down", "fenced", "none"};
static const char *const stages[] = {"write", "flush", "apply"};

static void
family(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value with \, " and newline escaped; at most cap bytes of the fixed field s. */
static void
label_value(FILE *f, const char *s, size_t cap)
{
    size_t n = strnlen(s, cap);

    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '\\' || ch == '"')
            fprintf(f, "\\%c", ch);
        else if (ch == '\n')
            fputs("\\n", f);
        else if (ch < 0x20 || ch >= 0x80)
            fputc('?', f); /* keeps the output valid UTF-8 whatever the field holds */
        else
            fputc(ch, f);
    }
}

static void
double_value(FILE *f, double v)
{
    if (isinf(v))
        fputs(v > 0 ? "+Inf" : "-Inf", f);
    else if (isnan(v))
        fputs("NaN", f);
    else
        fprintf(f, "%.9g", v);
}

static void
gauge_u64(FILE *f, const char *name, const char *help, uint64_t v)
{
    family(f, name, "gauge", help);
    fprintf(f, "%s %" PRIu64 "\n", name, v);
}

static void
counter_u64(FILE *f, const char *name, const char *help, uint64_t v)
{
    family(f, name, "counter", help);
    fprintf(f, "%s %" PRIu64 "\n", name, v);
}

static void
gauge_double(FILE *f, const char *name, const char *help, double v)
{
    family(f, name, "gauge", help);
    fprintf(f, "%s ", name);
    double_value(f, v);
    fputc('\n', f);
}

static void
histogram(FILE *f, const char *name, const char *help, const struct status_hist *h,
          enum status_hist_kind k)
{
    const double *le = status_hist_bounds(k);

    family(f, name, "histogram", help);
    for (int i = 0; i < STATUS_HIST_BUCKETS; i++) {
        fprintf(f, "%s_bucket{le=\"", name);
        double_value(f, le[i]);
        fprintf(f, "\"} %" PRIu64 "\n", h->le[i]);
    }
    fprintf(f, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", name, h->count);
    fprintf(f, "%s_sum ", name);
    double_value(f, h->sum);
    fprintf(f, "\n%s_count %" PRIu64 "\n", name, h->count);
}

static bool
field_is(const char *field, size_t cap, const char *v)
{
    return strnlen(field, cap) == strlen(v) && strncmp(field, v, cap) == 0;
}

int
metrics_render(const struct status_snapshot *s, char **out, size_t *len)
{
    const struct status_metrics *m = &s->metrics;
    const uint64_t lsns[] = {s->primary_lsn, s->sent_lsn, s->write_lsn, s->flush_lsn, s->apply_lsn};
    const char *const lsn_names[] = {"primary", "sent", "write", "flush", "apply"};
    const uint64_t lag_bytes[] = {s->write_lag_bytes, s->flush_lag_bytes, s->apply_lag_bytes};
    const double lag_s[] = {s->write_lag_s, s->flush_lag_s, s->apply_lag_s};
    char *buf = NULL;
    size_t size = 0;
    FILE *f;

    *out = NULL;
    *len = 0;
    f = open_memstream(&buf, &size);
    if (f == NULL)
        return -ENOMEM;

    family(f, "walmirror_info", "gauge",
           "Constant 1, labelled with this agent's node name and its peer's.");
    fputs("walmirror_info{node=\"", f);
    label_value(f, s->node_name, sizeof(s->node_name));
    fputs("\",peer=\"", f);
    label_value(f, s->peer_name, sizeof(s->peer_name));
    fputs("\"} 1\n", f);

    family(f, "walmirror_role", "gauge",
           "1 for the role this agent has now (source: beside the primary; sink: beside the "
           "standby; fenced: a stale primary waiting to rejoin), 0 for the others.");
    for (size_t i = 0; i < sizeof(roles) / sizeof(roles[0]); i++)
        fprintf(f, "walmirror_role{role=\"%s\"} %d\n", roles[i],
                field_is(s->role, sizeof(s->role), roles[i]) ? 1 : 0);

    gauge_u64(f, "walmirror_epoch",
              "The fencing epoch this agent knows; it rises at each promotion.", s->epoch);
    gauge_u64(f, "walmirror_timeline", "The PostgreSQL timeline of the WAL mirrored.", s->timeline);
    /* exact to the microsecond: a double printed with %g would round to a second or more */
    family(f, "walmirror_start_time_seconds", "gauge", "When the agent started, in Unix seconds.");
    fprintf(f, "walmirror_start_time_seconds %" PRIu64 ".%06" PRIu64 "\n",
            s->started_unix_us / 1000000, s->started_unix_us % 1000000);

    family(f, "walmirror_lsn_bytes", "gauge",
           "WAL positions as byte offsets: primary = what the primary has given the source, "
           "sent = sent to (or received by) the sink, write / flush = written / fdatasynced in "
           "the sink's spool, apply = replayed by the standby.");
    for (size_t i = 0; i < sizeof(lsns) / sizeof(lsns[0]); i++)
        fprintf(f, "walmirror_lsn_bytes{position=\"%s\"} %" PRIu64 "\n", lsn_names[i], lsns[i]);

    family(f, "walmirror_lag_bytes", "gauge",
           "Bytes by which each stage at the mirror site is behind the primary (source) or "
           "behind what was received (sink).");
    for (size_t i = 0; i < 3; i++)
        fprintf(f, "walmirror_lag_bytes{stage=\"%s\"} %" PRIu64 "\n", stages[i], lag_bytes[i]);
    family(f, "walmirror_lag_seconds", "gauge",
           "Seconds from WAL being sent (source) or received (sink) to each stage confirming "
           "it; absent while unknown.");
    for (size_t i = 0; i < 3; i++)
        if (isfinite(lag_s[i]) && lag_s[i] >= 0) {
            fprintf(f, "walmirror_lag_seconds{stage=\"%s\"} ", stages[i]);
            double_value(f, lag_s[i]);
            fputc('\n', f);
        }

    family(f, "walmirror_sync_state", "gauge",
           "1 for the synchronous state now (sync: the standby confirms in time; catchup: "
           "more than 16 MB behind; waiting: commits wait for overdue confirmations; exposed: "
           "commits go on without the standby; down), 0 for the others.");
    for (size_t i = 0; i < sizeof(sync_states) / sizeof(sync_states[0]); i++)
        fprintf(f, "walmirror_sync_state{state=\"%s\"} %d\n", sync_states[i],
                field_is(s->sync_state, sizeof(s->sync_state), sync_states[i]) ? 1 : 0);

    gauge_u64(f, "walmirror_link_up", "1 while the link to the peer agent is established.",
              s->link_up ? 1 : 0);
    gauge_double(f, "walmirror_link_rtt_seconds",
                 "Round-trip time of the peer link, from heartbeats.", (double)s->rtt_us / 1e6);
    counter_u64(f, "walmirror_wal_raw_bytes_total",
                "WAL bytes through the peer links since the agent started, before compression.",
                m->wal_raw_total);
    counter_u64(f, "walmirror_wal_wire_bytes_total",
                "The same WAL as it crossed the wire, after compression; raw / wire is the "
                "compression ratio.",
                m->wal_wire_total);
    gauge_u64(f, "walmirror_wal_compression_hc",
              "Source: 1 while the link's WAL is compressed with LZ4HC (the link, not the CPU, is "
              "the bottleneck), 0 with fast LZ4 or none.",
              field_is(s->wal_compression, sizeof(s->wal_compression), "lz4hc") ? 1 : 0);
    counter_u64(f, "walmirror_acks_total",
                "Acknowledgements received from the sink (source) or sent to the source (sink).",
                m->acks);

    histogram(f, "walmirror_spool_fsync_duration_seconds",
              "Sink: from a group flush request to the spool's fdatasync completing.",
              &m->hist[STATUS_HIST_FSYNC], STATUS_HIST_FSYNC);
    histogram(f, "walmirror_ack_round_trip_seconds",
              "Source: from sending WAL to the sink's acknowledgement that it is flushed.",
              &m->hist[STATUS_HIST_ACK_RTT], STATUS_HIST_ACK_RTT);
    histogram(f, "walmirror_write_unavailability_seconds",
              "Measured write-unavailability of each switchover and fail-over this agent "
              "completed.",
              &m->hist[STATUS_HIST_UNAVAIL], STATUS_HIST_UNAVAIL);
    if (s->last_unavailability_us >= 0)
        gauge_double(f, "walmirror_last_write_unavailability_seconds",
                     "Write-unavailability of the last switchover or fail-over.",
                     (double)s->last_unavailability_us / 1e6);

    counter_u64(f, "walmirror_switchovers_total", "Switchovers completed since the agent started.",
                s->switchovers);
    counter_u64(f, "walmirror_failovers_total", "Fail-overs completed since the agent started.",
                s->failovers);
    gauge_u64(f, "walmirror_operation_running",
              "1 while a switchover, fail-over, fencing or rejoin runs.",
              field_is(s->operation, sizeof(s->operation), "none") ||
                      strnlen(s->operation, sizeof(s->operation)) == 0
                  ? 0
                  : 1);
    gauge_u64(f, "walmirror_failover_paused", "1 while automatic fail-over is paused.",
              s->failover_paused ? 1 : 0);
    gauge_u64(f, "walmirror_spool_stalled",
              "1 while WAL waits for space in the spool (commits are not acknowledged).",
              s->spool_stall[0] != '\0' ? 1 : 0);
    if (s->spool_free_bytes >= 0)
        gauge_u64(f, "walmirror_spool_free_bytes",
                  "Bytes free for unprivileged users on the file system of the spool; absent "
                  "while unknown.",
                  (uint64_t)s->spool_free_bytes);
    /* 0 (1970) is no certificate's expiry: a snapshot that never set the field */
    if (s->cert_not_after_unix > 0)
        gauge_u64(f, "walmirror_cert_expiry_timestamp_seconds",
                  "When this agent's TLS certificate expires (its notAfter), in Unix seconds; "
                  "absent while unknown.",
                  (uint64_t)s->cert_not_after_unix);
    gauge_u64(f, "walmirror_maintenance",
              "1 while a maintenance window is open (automatic fail-over is paused).",
              strncmp(s->maintenance, "active", 6) == 0 ? 1 : 0);

    gauge_u64(f, "walmirror_exposed",
              "1 while the primary runs exposed: commits are acknowledged without the standby.",
              s->exposed ? 1 : 0);
    gauge_u64(f, "walmirror_wal_at_risk_bytes",
              "Acknowledged WAL the standby does not hold while the primary runs exposed.",
              s->wal_at_risk_bytes);
    family(f, "walmirror_exposed_seconds_total", "counter",
           "Seconds the primary has run exposed since the agent started.");
    fputs("walmirror_exposed_seconds_total ", f);
    double_value(f, s->exposed_seconds_total);
    fputc('\n', f);
    gauge_u64(f, "walmirror_standby_stale",
              "1 on a standby whose primary runs exposed: it may not be promoted by itself.",
              s->stale ? 1 : 0);
    family(f, "walmirror_arbiter_state", "gauge",
           "1 for the arbiter's state now (up: reachable; down; fenced: it refuses us; none: "
           "no arbiter configured), 0 for the others.");
    for (size_t i = 0; i < sizeof(arbiter_states) / sizeof(arbiter_states[0]); i++) {
        fputs("walmirror_arbiter_state{arbiter=\"", f);
        label_value(f, s->arbiter, sizeof(s->arbiter));
        fprintf(f, "\",state=\"%s\"} %d\n", arbiter_states[i],
                field_is(s->arbiter_state, sizeof(s->arbiter_state), arbiter_states[i]) ? 1 : 0);
    }

    if (fclose(f) != 0 || buf == NULL) {
        free(buf);
        return -ENOMEM;
    }
    *out = buf;
    *len = size;
    return 0;
}
