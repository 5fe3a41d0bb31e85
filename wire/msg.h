/*
 * msg.h - bodies of the walmirror messages (the payload of each frame type).
 *
 *   HELLO      node name, role, cluster system identifier, timeline, durable LSN, applied
 *              LSN, capabilities.  The first frame each way; see conn.h for the exchange.
 *   WAL        raw WAL bytes; the frame header's LSN says where they start.  No body here.
 *   ACK        write, flush, apply LSNs of the sink, and the sender's clock.
 *   HEARTBEAT  timestamps for round-trip time and clock offset.
 *   ERROR      a code and a message: the sender is about to close the connection.
 *   BYE        orderly close, with a reason.
 *   READY      empty: the sender has accepted the peer's HELLO.
 *   TIMELINE   source to sink, before the WAL it announces: the WAL that follows belongs to
 *              timeline tli; when that timeline branches off an older one, switch_lsn is the
 *              switch point and history the new timeline's history file as PostgreSQL wrote
 *              it (empty for timeline 1).
 *   CONTROL    a kind (enum msg_ctl), an LSN, two values, a text: switchover steps, fencing,
 *              and the witness's votes; what each kind carries is listed with the enum.
 *
 * The epoch (fencing token) is not in any body: every frame header carries the sender's.
 * conn.c copies the HELLO frame's epoch into struct msg_hello.epoch for the receiver.
 *
 * Encoding is little-endian through struct wbuf; decoding only through struct cursor.  A
 * decoder rejects a body shorter than its fields (WIRE_EMESSAGE) but ignores trailing bytes:
 * later minor versions may append fields.  Strings are a u16 length then bytes (no NUL);
 * decoded strings are copied into the caller's struct, NUL-terminated, and bounded.
 */
#ifndef WALMIRROR_WIRE_MSG_H
#define WALMIRROR_WIRE_MSG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "err.h"

#define MSG_NAME_MAX 63
#define MSG_TEXT_MAX 1023

enum msg_role {
    MSG_ROLE_UNKNOWN = 0,
    MSG_ROLE_SOURCE = 1,  /* beside a primary: sends WAL */
    MSG_ROLE_SINK = 2,    /* beside a standby: receives WAL */
    MSG_ROLE_WITNESS = 3, /* third site: arbitrates fail-over */
};

/* Capability bits advertised in HELLO. */
#define MSG_CAP_LZ4 0x1u

struct msg_hello {
    char node_name[MSG_NAME_MAX + 1];
    uint8_t role;
    uint64_t system_id;
    uint32_t timeline;
    uint64_t durable_lsn;
    uint64_t applied_lsn;
    uint64_t capabilities;
    uint64_t epoch; /* not encoded: the receiving conn fills it from the frame header */
};

struct msg_ack {
    uint64_t write_lsn;
    uint64_t flush_lsn;
    uint64_t apply_lsn;
    uint64_t send_time_us; /* sender's CLOCK_REALTIME, microseconds since the Unix epoch */
};

struct msg_heartbeat {
    uint64_t send_time_us; /* when this heartbeat left */
    uint64_t echo_time_us; /* send_time_us of the last heartbeat received from the peer */
    uint64_t echo_hold_us; /* how long that one was held here before this one left */
    uint8_t reply_requested;
};

struct msg_error {
    uint32_t code; /* a WIRE_E* code, negated to be positive, or 0 */
    char text[MSG_TEXT_MAX + 1];
};

/* A timeline history file larger than this is refused (a line is ~40 bytes: ~6,000 switches). */
#define MSG_HISTORY_MAX (256u * 1024)

struct msg_timeline {
    uint32_t tli;
    uint64_t switch_lsn;    /* 0 on timeline 1 */
    const char *history;    /* decoded: points into the frame payload, valid during the call */
    size_t history_len;
};

/*
 * CONTROL kinds.  lsn / value / value2 / text as listed; unused fields are 0 or empty.
 * Switchover (source = S, sink = K): S sends SWITCHOVER_BEGIN (value: the operator's request
 * id) and stops its primary cleanly; once the primary's last WAL is durable at K, S sends
 * SWITCHOVER_PROMOTE (lsn: end of the old primary's WAL; value: unix us of its last accepted
 * commit as S measured it, or 0).  K replays to lsn, promotes, raises the epoch and answers
 * SWITCHOVER_DONE (lsn: where its new timeline begins; value: the new timeline; value2: the
 * new epoch), then both swap roles.  Once the new source has its first synchronous
 * acknowledgement from the new sink it sends SWITCHOVER_SYNCED (value: the write-unavailability
 * it measured, in microseconds, from PROMOTE's commit time to that acknowledgement).  Either side may send SWITCHOVER_ABORT (text: why) before
 * PROMOTE; after PROMOTE there is no way back but forward.
 * FENCE (value: the sender's epoch; text: the node that holds it; mark: that epoch's): news of
 * an epoch newer than the receiver's.  A receiver acting as the source must stop and keep its
 * PostgreSQL from taking writes; a sink adopts it, with its mark.
 * Witness: a site sends STATE (value: its epoch; value2: its role, enum msg_role; lsn: its
 * durable / flushed position; text and mark: its epoch's holder and mark, as it knows them)
 * whenever it changes and with each heartbeat interval.  It asks for the next epoch (value: its current + 1) with
 *   VOTE_REQUEST    a sink, to promote (lsn: its durable end; value2: its failover_timeout ms);
 *   EXPOSE_REQUEST  the source, to run without its standby (lsn: the primary's flush position;
 *                   value2: the standby's last durable LSN, where the WAL at risk begins);
 *   RESYNC_REQUEST  the source, whose standby is synchronous again (lsn: the primary's flush);
 * and the witness answers VOTE_GRANT (value: the epoch granted, recorded durably before it is
 * sent; mark: the one recorded with it) or VOTE_DENY (text: why, e.g. "the primary site-a was
 * heard 0.4 s ago"; value: the witness's epoch).
 *
 * The mark (mark_lsn, mark_unix_us) of an epoch says whether its holder runs exposed: with
 * mark_unix_us != 0 it acknowledges commits without the other site since that time, the other
 * site holding durably what it held at mark_lsn: that site is stale.  It is appended after the
 * text; a body without it decodes as "not exposed".
 */
enum msg_ctl {
    MSG_CTL_SWITCHOVER_BEGIN = 1,
    MSG_CTL_SWITCHOVER_PROMOTE = 2,
    MSG_CTL_SWITCHOVER_DONE = 3,
    MSG_CTL_SWITCHOVER_ABORT = 4,
    MSG_CTL_FENCE = 5,
    MSG_CTL_STATE = 6,
    MSG_CTL_VOTE_REQUEST = 7,
    MSG_CTL_VOTE_GRANT = 8,
    MSG_CTL_VOTE_DENY = 9,
    MSG_CTL_SWITCHOVER_SYNCED = 10,
    MSG_CTL_EXPOSE_REQUEST = 11,
    MSG_CTL_RESYNC_REQUEST = 12,
};
#define MSG_CTL_LAST MSG_CTL_RESYNC_REQUEST

struct msg_control {
    uint8_t kind; /* enum msg_ctl */
    uint64_t lsn;
    uint64_t value;
    uint64_t value2;
    char text[MSG_TEXT_MAX + 1];
    uint64_t mark_lsn;     /* FENCE, STATE, VOTE_GRANT: the epoch's mark (see above) */
    uint64_t mark_unix_us; /* 0: not exposed */
};

/* Largest encoded body of any of these messages but TIMELINE (MSG_HISTORY_MAX + 32). */
#define MSG_MAX_BODY 2048

/* Each encoder writes into out[cap] and returns the body length, or -EMSGSIZE. */
WM_MUSTCHECK ssize_t msg_encode_hello(const struct msg_hello *m, uint8_t *out, size_t cap);
WM_MUSTCHECK ssize_t msg_encode_ack(const struct msg_ack *m, uint8_t *out, size_t cap);
WM_MUSTCHECK ssize_t msg_encode_heartbeat(const struct msg_heartbeat *m, uint8_t *out, size_t cap);
/* ERROR and BYE share a body. */
WM_MUSTCHECK ssize_t msg_encode_error(const struct msg_error *m, uint8_t *out, size_t cap);
WM_MUSTCHECK ssize_t msg_encode_timeline(const struct msg_timeline *m, uint8_t *out, size_t cap);
WM_MUSTCHECK ssize_t msg_encode_control(const struct msg_control *m, uint8_t *out, size_t cap);

/* Each decoder returns 0 or WIRE_EMESSAGE. */
WM_MUSTCHECK int msg_decode_hello(const void *body, size_t len, struct msg_hello *m);
WM_MUSTCHECK int msg_decode_ack(const void *body, size_t len, struct msg_ack *m);
WM_MUSTCHECK int msg_decode_heartbeat(const void *body, size_t len, struct msg_heartbeat *m);
WM_MUSTCHECK int msg_decode_error(const void *body, size_t len, struct msg_error *m);
/* tli 0, a history longer than MSG_HISTORY_MAX or the body, or tli > 1 with no history, are
 * malformed. */
WM_MUSTCHECK int msg_decode_timeline(const void *body, size_t len, struct msg_timeline *m);
/* An unknown kind is malformed. */
WM_MUSTCHECK int msg_decode_control(const void *body, size_t len, struct msg_control *m);

/* "SWITCHOVER_BEGIN", ...; "unknown" otherwise. */
const char *msg_ctl_name(uint8_t kind);

const char *msg_role_name(uint8_t role);

#endif
