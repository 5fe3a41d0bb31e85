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

    /* operations */
    bool failover_paused;
    char maintenance[32]; /* "none" until maintenance windows exist */
    char last_error[256]; /* the last error worth an operator's eye, "" if none */
};

enum status_request {
    STATUS_REQ_NONE = 0,
    STATUS_REQ_PAUSE = 1,  /* pause automatic fail-over */
    STATUS_REQ_RESUME = 2, /* resume it */
};

struct status_board {
    pthread_mutex_t lock;
    struct status_snapshot snap;
    unsigned requests; /* bit set of 1 << enum status_request */
};

void status_board_init(struct status_board *b);
void status_board_destroy(struct status_board *b);
void status_publish(struct status_board *b, const struct status_snapshot *s);
void status_read(struct status_board *b, struct status_snapshot *out);
void status_request(struct status_board *b, enum status_request r);
/* Takes (and clears) the pending requests: a bit set of 1 << enum status_request. */
unsigned status_take(struct status_board *b);

#endif
