/*
 * status.h - what an agent tells the world about itself: a snapshot the agent's loop fills
 * once per turn, read by the HTTP API (httpapi.h) from its own thread, and the requests the
 * API hands back to the loop.
 *
 * The agent owns one struct status_board; status_publish() copies a snapshot in and
 * status_read() copies it out, both under the board's mutex, so readers never see a torn
 * snapshot.  Requests (pause / resume of automatic fail-over, and later actions) go the other
 * way: the API sets them with status_request(), the loop takes them with status_take().
 *
 * LSNs are bytes (0 = unknown); lags are bytes and seconds (a negative second count = unknown).
 *
 * Metrics (struct status_metrics) are computed in the agent's loop - histograms observed where
 * the events happen, the lag history and the incident log in its status tick - and travel in
 * the snapshot, so the API's thread renders them without any lock but the board's.
 */
#ifndef WALMIRROR_AGENT_STATUS_H
#define WALMIRROR_AGENT_STATUS_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define STATUS_NAME_MAX 63

/* Histograms, Prometheus style: fixed upper bounds per kind (status_hist_bounds), cumulative
 * counts per bound; observations above the last bound count only in count (the +Inf bucket). */
#define STATUS_HIST_BUCKETS 12

enum status_hist_kind {
    STATUS_HIST_FSYNC,   /* sink: spool_flush() to on_flushed (the group fdatasync), seconds */
    STATUS_HIST_ACK_RTT, /* source: WAL sent to the ACK that confirms it flushed, seconds */
    STATUS_HIST_UNAVAIL, /* write-unavailability of switchovers and fail-overs, seconds */
    STATUS_HIST_COUNT,
};

struct status_hist {
    uint64_t le[STATUS_HIST_BUCKETS]; /* observations <= bound i */
    uint64_t count;
    double sum;
};

/* One point of the lag history: the worst seen during its interval. */
struct status_lag_sample {
    uint64_t unix_us;                  /* end of the interval */
    uint64_t flush_bytes, apply_bytes; /* lag of the flush and apply stages */
    double flush_s, apply_s;           /* the same in seconds; negative = unknown */
};

#define STATUS_LAG_SAMPLES 360          /* one hour ... */
#define STATUS_LAG_EVERY_US 10000000ULL /* ... of one sample per 10 s */

struct status_lag_history {
    unsigned head, n; /* s[head] is the oldest of n */
    struct status_lag_sample s[STATUS_LAG_SAMPLES];
    struct status_lag_sample cur; /* the interval being gathered (cur.unix_us: its start) */
    bool cur_any;
};

/* A switchover or fail-over this agent saw complete. */
struct status_incident {
    uint64_t at_unix_us;       /* when it completed */
    int64_t unavailability_us; /* measured write-unavailability; -1 if unknown */
    char kind[16];             /* "switchover", "failover" */
    char text[256];            /* the operation's result, for people */
};

#define STATUS_INCIDENTS_MAX 16

struct status_incidents {
    unsigned head, n; /* e[head] is the oldest of n */
    struct status_incident e[STATUS_INCIDENTS_MAX];
};

struct status_metrics {
    struct status_hist hist[STATUS_HIST_COUNT];
    uint64_t spool_flushes; /* completed spool flushes (the fsync histogram's count) */
    uint64_t acks;          /* ACKs received (source) or sent (sink) */
    /* WAL through all links since the agent started, before and after compression (the
     * snapshot's wal_*_bytes count the current link only); *_link: the current link's count
     * when last added */
    uint64_t wal_raw_total, wal_wire_total, wal_raw_link, wal_wire_link;
    struct status_lag_history lag;
    struct status_incidents incidents;
};

struct status_snapshot {
    char node_name[STATUS_NAME_MAX + 1];
    char role[16];     /* "source", "sink", "fenced", "witness", "starting" */
    char pg_state[16]; /* "primary", "standby", "down", "unknown" */
    uint64_t system_id;
    uint32_t timeline;
    uint64_t epoch;
    uint64_t started_unix_us;
    uint64_t now_unix_us;

    /* positions: on a source, primary = what the primary has sent us, sent = what we sent to
     * the sink, write/flush/apply = what the sink confirmed; on a sink, write/flush = the
     * spool's, apply = the standby's replay */
    uint64_t primary_lsn;
    uint64_t sent_lsn;
    uint64_t write_lsn;
    uint64_t flush_lsn;
    uint64_t apply_lsn;
    /* lag per stage behind primary_lsn (source) or behind what the source sent (sink) */
    uint64_t write_lag_bytes, flush_lag_bytes, apply_lag_bytes;
    double write_lag_s, flush_lag_s, apply_lag_s;
    /* source: "sync" (the sink confirms what commits wait for, in time), "catchup" (it
     * confirms, more than 16 MB behind), "waiting" (confirmations overdue: commits wait),
     * "exposed" (commits go on without it), "down" (no stream); sink: "sync" or "down" */
    char sync_state[16];

    /* the peer link */
    char peer_name[STATUS_NAME_MAX + 1];
    char peer_addr[272];
    bool link_up;
    uint64_t rtt_us;
    uint64_t wal_raw_bytes;  /* WAL bytes through the link since start */
    uint64_t wal_wire_bytes; /* the same after compression */
    /* source: how the link's WAL is compressed now, "off", "lz4" or "lz4hc" (the link is the
     * bottleneck: wire/lzctl.h); "" otherwise */
    char wal_compression[8];

    /* operations: the one running (operation "none" when idle) and the last one finished */
    char operation[16]; /* "none", "switchover", "failover", "fencing", "rejoin" */
    char op_step[160];  /* what it is doing now, for people */
    bool op_takes_commits; /* the primary still takes commits in this step (a switchover's
                            * WAL switch and CHECKPOINT, before the stop) */
    uint64_t op_id;     /* the request id it serves (0: started by the agent itself) */
    uint64_t last_op_id;
    char last_op[16];
    bool last_op_ok;
    char last_op_result[256];
    int64_t last_unavailability_us;  /* of the last switchover or fail-over; -1 if none */
    uint64_t switchovers, failovers; /* completed since the agent started */
    uint64_t scheduled_switchover_unix_us; /* switchover --at: when it will start; 0: none */
    int64_t spool_free_bytes;   /* free space where the spool (or state) lives; -1: unknown */
    int64_t cert_not_after_unix; /* this agent's TLS certificate expires then; -1: unknown */
    /* SINK: why WAL waits for space in the spool (commits are not acknowledged); "" if it
     * does not, and since when (unix us; 0 if unknown) */
    char spool_stall[384];
    uint64_t spool_stalled_since_unix_us;
    bool failover_paused;
    /* "none"; a value starting with "active" means a maintenance window is open now (the
     * status page shows under_maintenance); any other text is shown as it is */
    char maintenance[128];
    char last_error[256]; /* the last error worth an operator's eye, "" if none */

    /* availability (docs/operations.md, "Running exposed") */
    char availability_mode[24];     /* "maximum_availability", "maximum_protection" */
    bool exposed;                   /* source: commits are acknowledged without the standby */
    bool stale;                     /* sink: its primary runs exposed: it may not promote */
    uint64_t exposed_since_unix_us; /* the exposure's start (0: not exposed) */
    uint64_t exposed_lsn;           /* where the WAL at risk begins: the standby's durable end */
    uint64_t wal_at_risk_bytes;     /* source, exposed: acknowledged WAL the standby lacks */
    uint64_t wal_at_risk_peak_bytes; /* the most of it during the current (or last) exposure */
    double exposed_seconds_total;   /* all exposures since the agent started, seconds */
    /* the arbiter (arbiter.h) */
    char arbiter[16];        /* "witness", "etcd", "none" */
    char arbiter_state[16];  /* "up", "down", "fenced", "none" */
    char arbiter_desc[256];  /* one line for people */

    struct status_metrics metrics; /* not in /status: /metrics and the status page show it */
};

enum status_request {
    STATUS_REQ_NONE = 0,
    STATUS_REQ_PAUSE = 1,  /* pause automatic fail-over */
    STATUS_REQ_RESUME = 2, /* resume it */
    STATUS_REQ_SWITCHOVER = 3,
    STATUS_REQ_FAILOVER = 4,
    STATUS_REQ_REJOIN = 5,
};

/* The arguments of the last operation requested (switchover, failover, rejoin). */
struct status_op_request {
    uint64_t id; /* increasing, from the board's creation time in µs; 0: none */
    enum status_request kind;
    char target[STATUS_NAME_MAX + 1]; /* switchover --to; "" for any */
    uint64_t max_lag_bytes;           /* switchover preflight */
    bool force;                       /* failover --force: without the arbiter */
    bool accept_data_loss;            /* failover --force --accept-data-loss: even stale */
    uint64_t at_unix_us;              /* switchover --at: not before this time (0: now) */
};

struct status_board {
    pthread_mutex_t lock;
    struct status_snapshot snap;
    unsigned requests;           /* bit set of 1 << enum status_request */
    struct status_op_request op; /* pending operation request (op.id != 0) */
    uint64_t next_op_id;
};

void status_board_init(struct status_board *b);
void status_board_destroy(struct status_board *b);
void status_publish(struct status_board *b, const struct status_snapshot *s);
void status_read(struct status_board *b, struct status_snapshot *out);
void status_request(struct status_board *b, enum status_request r);
/* Takes (and clears) the pending requests: a bit set of 1 << enum status_request. */
unsigned status_take(struct status_board *b);
/* Files an operation request (its id is set here and returned); a newer one replaces one
 * not yet taken. */
uint64_t status_request_op(struct status_board *b, struct status_op_request *r);
/* Takes the pending operation request; false if none. */
bool status_take_op(struct status_board *b, struct status_op_request *out);

/* The upper bounds (seconds, increasing, STATUS_HIST_BUCKETS of them) of a histogram kind. */
const double *status_hist_bounds(enum status_hist_kind k);
/* Counts one observation v (seconds; a negative or non-finite v is ignored). */
void status_hist_observe(struct status_hist *h, enum status_hist_kind k, double v);

/* Notes the lag at now_us into the history: the worst value of each STATUS_LAG_EVERY_US
 * interval becomes one sample; the oldest samples go when the ring is full. */
void status_lag_note(struct status_lag_history *h, uint64_t now_us,
                     const struct status_lag_sample *v);
/* The i-th sample, oldest first (i < h->n). */
const struct status_lag_sample *status_lag_at(const struct status_lag_history *h, unsigned i);

/* Appends an incident; the oldest goes when the log is full. */
void status_incident_add(struct status_incidents *l, const struct status_incident *e);
/* The i-th incident, oldest first (i < l->n). */
const struct status_incident *status_incident_at(const struct status_incidents *l, unsigned i);

#endif
