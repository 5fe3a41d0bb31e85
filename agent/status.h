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
 */
#ifndef WALMIRROR_AGENT_STATUS_H
#define WALMIRROR_AGENT_STATUS_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define STATUS_NAME_MAX 63

struct status_snapshot {
    char node_name[STATUS_NAME_MAX + 1];
    char role[16];     /* "source", "sink", "witness", "starting" */
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
    char sync_state[16]; /* "sync" (link up and confirming), "catchup", "down" */

    /* the peer link */
    char peer_name[STATUS_NAME_MAX + 1];
    char peer_addr[272];
    bool link_up;
    uint64_t rtt_us;
    uint64_t wal_raw_bytes;  /* WAL bytes through the link since start */
    uint64_t wal_wire_bytes; /* the same after compression */

    /* operations: the one running (operation "none" when idle) and the last one finished */
    char operation[16];   /* "none", "switchover", "failover", "fencing", "rejoin" */
    char op_step[160];    /* what it is doing now, for people */
    uint64_t op_id;       /* the request id it serves (0: started by the agent itself) */
    uint64_t last_op_id;
    char last_op[16];
    bool last_op_ok;
    char last_op_result[256];
    int64_t last_unavailability_us; /* of the last switchover or fail-over; -1 if none */
    uint64_t switchovers, failovers; /* completed since the agent started */
    bool failover_paused;
    char maintenance[32]; /* "none" until maintenance windows exist */
    char last_error[256]; /* the last error worth an operator's eye, "" if none */
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
};

struct status_board {
    pthread_mutex_t lock;
    struct status_snapshot snap;
    unsigned requests; /* bit set of 1 << enum status_request */
    struct status_op_request op;   /* pending operation request (op.id != 0) */
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

#endif
