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

/* Largest encoded body of any of these messages. */
#define MSG_MAX_BODY 2048

/* Each encoder writes into out[cap] and returns the body length, or -EMSGSIZE. */
WM_MUSTCHECK ssize_t msg_encode_hello(const struct msg_hello *m, uint8_t *out, size_t cap);
WM_MUSTCHECK ssize_t msg_encode_ack(const struct msg_ack *m, uint8_t *out, size_t cap);
WM_MUSTCHECK ssize_t msg_encode_heartbeat(const struct msg_heartbeat *m, uint8_t *out, size_t cap);
/* ERROR and BYE share a body. */
WM_MUSTCHECK ssize_t msg_encode_error(const struct msg_error *m, uint8_t *out, size_t cap);

/* Each decoder returns 0 or WIRE_EMESSAGE. */
WM_MUSTCHECK int msg_decode_hello(const void *body, size_t len, struct msg_hello *m);
WM_MUSTCHECK int msg_decode_ack(const void *body, size_t len, struct msg_ack *m);
WM_MUSTCHECK int msg_decode_heartbeat(const void *body, size_t len, struct msg_heartbeat *m);
WM_MUSTCHECK int msg_decode_error(const void *body, size_t len, struct msg_error *m);

const char *msg_role_name(uint8_t role);

#endif
