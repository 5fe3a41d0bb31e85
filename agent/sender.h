/*
 * sender.h - the source role's session: beside a primary, the agent reads its WAL (source.h),
 * gathers what arrives together into frames for the peer link, and reports the sink's
 * acknowledgements back to the primary as standby status updates - so that the primary's
 * synchronous_commit waits for site B.
 *
 * One sender is one session: sender_new() connects to the primary (a physical replication
 * client, slot cfg->slot_name, application_name cfg->application_name); once identified the
 * owner makes the link, and sender_stream() starts streaming at the segment boundary of what
 * the sink holds durably.  A failed send, the link lost, the primary lost: the session is over
 * (events.ended) and the owner frees it and starts a new one - the stream always restarts from
 * what the sink holds, so nothing is ever skipped.  A primary that shut down cleanly ends the
 * session with err 0 once everything it wrote was received and acknowledged (a switchover's
 * old primary).
 *
 * Positions (monotonic; a late or reordered ACK never moves one back): primary = end of the
 * WAL the primary sent us; sent = end of what went to the sink; write / flush / apply = what
 * the sink confirmed.  The lag tracker (lag.h) times each stage; sender_waiting_us() says how
 * long the oldest WAL has waited for a stage's confirmation - the measure of "commits are
 * waiting for the standby".  sender_hold() keeps the reports to the primary at or below the
 * primary's position at that moment, until sender_release(): the synchronous-requirement probe
 * (syncrep.h) relies on it.
 */
#ifndef WALMIRROR_AGENT_SENDER_H
#define WALMIRROR_AGENT_SENDER_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "conn.h"
#include "err.h"
#include "lag.h"
#include "source.h"
#include "status.h"
#include "wio.h"

struct sender;

struct sender_events {
    /* The primary answered: the link to the sink may be made now. */
    void (*identified)(void *ctx, const struct source_identity *id);
    /* The session is over (err 0: the primary shut down cleanly and all it wrote was sent and
     * acknowledged; otherwise lost or failed, why says how; by_link: a send to the sink
     * failed, the primary itself did not).  Free the sender. */
    void (*ended)(void *ctx, int err, const char *why, bool by_link);
    /* The sink confirmed more (the positions moved). */
    void (*acked)(void *ctx);
};

struct sender_positions {
    uint64_t primary, sent;
    uint64_t write, flush, apply;
};

/* Starts the session with the primary.  metrics: where ACKs and their round trips are counted
 * (the owner's).  Returns 0 or a negative errno (logged). */
WM_MUSTCHECK int sender_new(struct sender **out, struct wio_loop *loop, const struct wm_config *cfg,
                            struct status_metrics *metrics, const struct sender_events *ev,
                            void *ctx);
void sender_free(struct sender *s);

/* NULL until identified. */
const struct source_identity *sender_identity(const struct sender *s);
/* Fills our HELLO: role source, the primary's system id, timeline and flush position. */
void sender_hello(const struct sender *s, struct msg_hello *hello);
/* A sink's HELLO: it must mirror this primary's cluster.  0 or WIRE_EPROTO with why. */
int sender_check_hello(const struct sender *s, const struct msg_hello *peer, char *why,
                       size_t whylen);
/* The link c is up with peer (a sink): stream from its durable position, on its timeline. */
WM_MUSTCHECK int sender_stream(struct sender *s, struct conn *c, const struct msg_hello *peer);
bool sender_streaming(const struct sender *s);
/* From the link: an ACK; the send queue drained. */
void sender_ack(struct sender *s, const struct msg_ack *ack);
void sender_drained(struct sender *s);

void sender_hold(struct sender *s);
void sender_release(struct sender *s);

void sender_positions(const struct sender *s, struct sender_positions *p);
/* How long (µs) the oldest WAL sent has waited for stage's confirmation; 0: none waits. */
uint64_t sender_waiting_us(const struct sender *s, enum lag_stage stage);
/* Fills the snapshot's source fields: positions, lags (behind the primary), timeline. */
void sender_status(const struct sender *s, struct status_snapshot *st);

#endif
