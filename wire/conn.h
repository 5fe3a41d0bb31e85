/*
 * conn.h - one agent-to-agent connection: a socket on the io_uring loop, TLS (or, for tests
 * and benchmarks only, plaintext), the two codecs, the HELLO exchange, heartbeats.
 *
 * States: TLS_HANDSHAKE -> HELLO -> ESTABLISHED -> CLOSED.
 *  - TLS_HANDSHAKE: only handshake records cross.  Both certificates are verified against the
 *    CA and the expected peer name (tls.h).
 *  - HELLO: each side sends its HELLO, and answers the peer's HELLO with READY once it has
 *    accepted it; a side is ESTABLISHED when it has accepted the peer's HELLO and received
 *    the peer's READY, so neither sends WAL to a peer that has not accepted it.  Under TLS the
 *    acceptor speaks first - it has verified the connector's certificate when its handshake
 *    completes, while a TLS 1.3 connector finishes before the acceptor has checked it - and
 *    the connector answers only after it has heard the acceptor, so nothing but the
 *    handshake ever reaches a peer that has not been verified.  In plaintext (tests only)
 *    both speak at once, so a plaintext agent facing a TLS one is named at once on both
 *    sides instead of both waiting.  A HELLO whose node name is not the expected peer name,
 *    or that the owner's on_hello refuses (say, another cluster's system identifier), is
 *    answered with an ERROR frame and the connection is closed.
 *  - ESTABLISHED: WAL, ACK, HEARTBEAT, TIMELINE, CONTROL flow; a HEARTBEAT goes out every heartbeat
 * interval and the connection fails when nothing has been received for the timeout.
 *  - CLOSED: after any failure, a peer's ERROR or BYE, or conn_close().  on_closed is called
 *    exactly once with the reason (a WIRE_E* code or negative errno) and a message for the
 *    log; the conn must then be freed with conn_free() (not from inside a callback).
 *
 * Both codecs start afresh with every connection, so a reconnect resets the LZ4 streams and
 * sequence numbers at both ends.
 *
 * WAL frames are compressed with fast LZ4 while the link keeps up, and with LZ4HC while the
 * send queue shows the link is the bottleneck; lzctl.h decides before each WAL frame, from the
 * queue's depth and the time spent encoding.  The peer decodes both alike.
 */
#ifndef WALMIRROR_WIRE_CONN_H
#define WALMIRROR_WIRE_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "err.h"
#include "msg.h"
#include "tls.h"
#include "wio.h"

struct conn;

enum conn_state {
    CONN_TLS_HANDSHAKE,
    CONN_HELLO,
    CONN_ESTABLISHED,
    CONN_CLOSED,
};

struct conn_config {
    struct tls_config *tls;        /* NULL: plaintext, for tests and benchmarks only */
    const char *peer_name;         /* expected certificate name and HELLO node name, or a
                                    * comma-separated list of names (a witness's sites) */
    const struct msg_hello *hello; /* ours; copied */
    uint64_t epoch;                /* carried in every frame; see conn_set_epoch() */
    bool compress;                 /* LZ4 for WAL frames */
    int lz4_acceleration;          /* of the fast compressor: 1 = best ratio */
    int lz4_hc_level;              /* LZ4HC level when the link is the bottleneck (lzctl.h):
                                    * 0 = LZCTL_HC_LEVEL, < 0 = never, fast LZ4 only */
    unsigned heartbeat_ms;         /* 0: no heartbeats */
    unsigned timeout_ms;           /* 0: no receive timeout */
};

struct conn_ops {
    /* The peer's HELLO arrived.  Return 0 to accept, or a negative code with a reason in
     * why[whylen] to refuse (the peer is told the reason). */
    int (*on_hello)(void *ctx, const struct msg_hello *peer, char *why, size_t whylen);
    /* Both HELLOs exchanged: WAL and ACK may now be sent. */
    void (*on_established)(void *ctx);
    /* A WAL frame: data is valid only during the call. */
    void (*on_wal)(void *ctx, uint64_t lsn, const uint8_t *data, size_t len);
    void (*on_ack)(void *ctx, const struct msg_ack *ack);
    /* Optional: the send queue is empty (for producers that pause on back-pressure). */
    void (*on_drained)(void *ctx);
    /* Optional: TIMELINE and CONTROL frames; without a handler either ends the connection.
     * Pointers in the message are valid during the call only. */
    void (*on_timeline)(void *ctx, const struct msg_timeline *tl);
    void (*on_control)(void *ctx, const struct msg_control *ctl);
    /* Optional: a frame carried an epoch newer than ours (called once per rise): we are
     * fenced.  May conn_close(). */
    void (*on_epoch)(void *ctx, uint64_t epoch);
    void (*on_closed)(void *ctx, int reason, const char *message);
};

/*
 * Takes over a connected socket (fd is owned from here on, even on failure).  acceptor: this
 * side accepted the TCP connection (TLS server, speaks first).  The log prefix is
 * "peer[<peer_name>]".
 */
WM_MUSTCHECK int conn_new(struct conn **out, struct wio_loop *loop, int fd, bool acceptor,
                          const struct conn_config *cfg, const struct conn_ops *ops, void *ctx);
void conn_free(struct conn *c);

enum conn_state conn_state(const struct conn *c);

/* Sends WAL bytes starting at lsn (len <= FRAME_MAX_RAW).  Only when ESTABLISHED. */
WM_MUSTCHECK int conn_send_wal(struct conn *c, uint64_t lsn, const void *data, size_t len);
WM_MUSTCHECK int conn_send_ack(struct conn *c, const struct msg_ack *ack);
WM_MUSTCHECK int conn_send_timeline(struct conn *c, const struct msg_timeline *tl);
WM_MUSTCHECK int conn_send_control(struct conn *c, const struct msg_control *ctl);

/*
 * Epochs (fencing tokens).  Every frame carries ours.  Once ESTABLISHED, a frame whose epoch
 * is older than ours ends the connection ("fenced"); one newer than ours is reported through
 * on_epoch.  During the HELLO exchange the owner's on_hello sees the peer's epoch in
 * msg_hello.epoch and decides.  conn_set_epoch raises ours (never lowers it).
 */
void conn_set_epoch(struct conn *c, uint64_t epoch);
/* The highest epoch seen in the peer's frames (an ERROR refusing us included). */
uint64_t conn_peer_epoch(const struct conn *c);

/* Bytes queued for the peer and not yet taken by the kernel. */
size_t conn_backlog(const struct conn *c);
/* Back-pressure on input (wio_stream_pause_recv): paused, the connection reads nothing more
 * from its socket, so the peer's sends wait in TCP; the receive timeout does not count the
 * time paused.  For a consumer whose own queue is full. */
void conn_pause_input(struct conn *c, bool pause);

/* Sends BYE (reason 0) or ERROR with the message, flushes, and closes.  on_closed follows. */
void conn_close(struct conn *c, int reason, const char *message);

/* The peer's HELLO (valid once ESTABLISHED). */
const struct msg_hello *conn_peer_hello(const struct conn *c);

/* Last measured round-trip time in microseconds (0 until a heartbeat has been echoed). */
uint64_t conn_rtt_us(const struct conn *c);

/* How WAL frames are compressed now: "off", "lz4" (fast) or "lz4hc" (the link is behind). */
const char *conn_compression(const struct conn *c);

/* Frame statistics of each direction. */
const struct codec_stats *conn_tx_stats(const struct conn *c);
const struct codec_stats *conn_rx_stats(const struct conn *c);

#endif
