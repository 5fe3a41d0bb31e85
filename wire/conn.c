/*
 * conn.c - an agent-to-agent connection; states and contract in conn.h.
 *
 * The byte transport below the frames is a const ops table, plaintext or TLS: input() takes
 * what the socket received and feeds the frame decoder, frame_buf()/frame_done() give the
 * encoder room for one frame and send it.  Plaintext encodes straight into the socket's send
 * queue; TLS encodes into a scratch frame, encrypts it, and moves the ciphertext to the queue.
 */
#include "conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "codec.h"
#include "frame.h"
#include "log.h"
#include "lz.h"
#include "lzctl.h"

struct conn;

struct xport_ops {
    const char *name;
    int (*start)(struct conn *c);
    int (*input)(struct conn *c, const uint8_t *data, size_t len);
    uint8_t *(*frame_buf)(struct conn *c, size_t bound);
    int (*frame_done)(struct conn *c, uint8_t *buf, size_t len);
};

/* The heartbeat timer lives apart from the conn: its cancellation may still be in flight
 * after conn_free, and it frees itself when the loop releases it. */
struct conn_timer {
    struct wio_timer t;
    struct conn *c;
};

struct conn {
    const struct xport_ops *xport;
    struct wio_loop *loop;
    struct wio_stream *stream;
    struct tls_session *tls;
    struct codec_enc *enc;
    struct codec_dec *dec;
    struct lzctl *lzctl; /* fast / HC for WAL frames; NULL: no compression, or fast only */
    uint8_t *scratch;    /* one encoded frame, TLS only */
    size_t scratch_cap;
    enum conn_state state;
    bool acceptor;
    bool hello_sent;
    bool peer_hello_ok; /* we accepted the peer's HELLO (and sent READY) */
    bool peer_ready;    /* the peer accepted ours */
    bool closed_reported;
    struct conn_config cfg;
    struct msg_hello hello; /* ours */
    struct msg_hello peer;
    char peer_name[2 * (MSG_NAME_MAX + 1)]; /* a name, or a comma-separated list (witness) */
    char prefix[2 * (MSG_NAME_MAX + 1) + 8];
    /* "ADDR:PORT" of the other end ("?" if unknown); an accepted connection's log lines name
     * it until the peer is verified, since anyone may connect to the port */
    char remote[INET6_ADDRSTRLEN + 16];
    uint64_t peer_epoch; /* highest epoch seen in the peer's frames */
    const struct conn_ops *ops;
    void *ctx;
    struct conn_timer *hb;
    uint64_t last_rx_us;
    bool input_paused; /* conn_pause_input: no frame is dispatched */
    /* plaintext only: received bytes not yet given to the decoder when the input was paused
     * (TLS keeps them as ciphertext in its session) */
    uint8_t *pending;
    size_t pending_len, pending_cap;
    uint64_t last_hb_rx_send_us; /* peer's send time of the last heartbeat received */
    uint64_t last_hb_rx_at_us;   /* when we received it */
    uint64_t rtt_us;
};

static void report_closed(struct conn *c, int reason, const char *message);

/*
 * Ends the connection after a failure detected here: logs it, tells the peer why when the
 * session protocol allows (an ERROR frame once past the handshake), and closes the socket.
 */
static void __attribute__((format(printf, 3, 4)))
conn_fail(struct conn *c, int reason, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    if (c->state == CONN_CLOSED)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    log_error(c->prefix, "%s", msg);
    if (c->state != CONN_TLS_HANDSHAKE && reason != WIRE_ECLOSED && reason != WIRE_EPEER) {
        struct msg_error e = {.code = (uint32_t)(reason < 0 ? -reason : reason)};
        uint8_t body[MSG_MAX_BODY];
        ssize_t n;

        snprintf(e.text, sizeof(e.text), "%s", msg);
        n = msg_encode_error(&e, body, sizeof(body));
        if (n > 0) {
            size_t bound = codec_frame_bound((size_t)n);
            uint8_t *buf = c->xport->frame_buf(c, bound);
            if (buf != NULL) {
                ssize_t f = codec_enc_frame(c->enc, FRAME_ERROR, 0, c->cfg.epoch, body, (size_t)n,
                                            buf, bound);
                if (f > 0 && c->xport->frame_done(c, buf, (size_t)f) < 0)
                    log_debug(c->prefix, "could not send ERROR to peer");
            }
        }
    }
    report_closed(c, reason, msg);
}

static void
report_closed(struct conn *c, int reason, const char *message)
{
    c->state = CONN_CLOSED;
    if (c->stream != NULL) {
        /* Flush what is queued (a TLS alert, an ERROR or BYE frame), then close. */
        wio_stream_close(c->stream, false);
        c->stream = NULL;
    }
    if (!c->closed_reported) {
        c->closed_reported = true;
        if (c->ops->on_closed != NULL)
            c->ops->on_closed(c->ctx, reason, message);
    }
}

/* ---- sending ---- */

static int
send_frame(struct conn *c, uint8_t type, uint64_t lsn, const void *payload, size_t len)
{
    size_t bound = codec_frame_bound(len);
    uint8_t *buf;
    ssize_t n;

    if (c->state == CONN_CLOSED)
        return -EPIPE;
    buf = c->xport->frame_buf(c, bound);
    if (buf == NULL)
        return -ENOMEM;
    n = codec_enc_frame(c->enc, type, lsn, c->cfg.epoch, payload, len, buf, bound);
    if (n < 0)
        return (int)n;
    return c->xport->frame_done(c, buf, (size_t)n);
}

static int
send_hello(struct conn *c)
{
    uint8_t body[MSG_MAX_BODY];
    ssize_t n = msg_encode_hello(&c->hello, body, sizeof(body));

    if (n < 0)
        return (int)n;
    c->hello_sent = true;
    log_debug(c->prefix, "sending HELLO as %s", c->hello.node_name);
    return send_frame(c, FRAME_HELLO, 0, body, (size_t)n);
}

static int
send_heartbeat(struct conn *c)
{
    struct msg_heartbeat hb = {.send_time_us = clock_unix_us()};
    uint8_t body[MSG_MAX_BODY];
    ssize_t n;

    if (c->last_hb_rx_send_us != 0) {
        hb.echo_time_us = c->last_hb_rx_send_us;
        hb.echo_hold_us = clock_mono_us() - c->last_hb_rx_at_us;
    }
    n = msg_encode_heartbeat(&hb, body, sizeof(body));
    if (n < 0)
        return (int)n;
    return send_frame(c, FRAME_HEARTBEAT, 0, body, (size_t)n);
}

/* The frame's LZ4 level from the controller; a switch is logged (they are seconds apart). */
static void
choose_level(struct conn *c, uint64_t now, size_t backlog)
{
    uint64_t switches = lzctl_switches(c->lzctl);
    int level = lzctl_level(c->lzctl, now, backlog);
    int rc;

    if (lzctl_switches(c->lzctl) == switches)
        return;
    rc = codec_enc_set_level(c->enc, level);
    if (rc < 0) {
        log_warning(c->prefix, "cannot switch WAL compression to LZ4 level %d: %s", level,
                    wire_strerror(rc));
        return;
    }
    log_info(c->prefix, "WAL compression %s (%s): send queue %zu KiB, encoding busy %u%%",
             level == LZ_LEVEL_FAST ? "lz4" : "lz4hc", lzctl_why_name(lzctl_why(c->lzctl)),
             backlog / 1024, lzctl_busy_pct(c->lzctl));
}

int
conn_send_wal(struct conn *c, uint64_t lsn, const void *data, size_t len)
{
    uint64_t t0, t1;
    int rc;

    if (c->state != CONN_ESTABLISHED)
        return -ENOTCONN;
    if (c->lzctl == NULL)
        return send_frame(c, FRAME_WAL, lsn, data, len);
    t0 = clock_mono_us();
    choose_level(c, t0, conn_backlog(c));
    rc = send_frame(c, FRAME_WAL, lsn, data, len);
    t1 = clock_mono_us();
    lzctl_busy(c->lzctl, t1, t1 - t0);
    return rc;
}

int
conn_send_ack(struct conn *c, const struct msg_ack *ack)
{
    uint8_t body[MSG_MAX_BODY];
    ssize_t n;

    if (c->state != CONN_ESTABLISHED)
        return -ENOTCONN;
    n = msg_encode_ack(ack, body, sizeof(body));
    if (n < 0)
        return (int)n;
    return send_frame(c, FRAME_ACK, 0, body, (size_t)n);
}

int
conn_send_timeline(struct conn *c, const struct msg_timeline *tl)
{
    uint8_t *body;
    ssize_t n;
    int rc;

    if (c->state != CONN_ESTABLISHED)
        return -ENOTCONN;
    body = malloc(tl->history_len + 64);
    if (body == NULL)
        return -ENOMEM;
    n = msg_encode_timeline(tl, body, tl->history_len + 64);
    rc = n < 0 ? (int)n : send_frame(c, FRAME_TIMELINE, 0, body, (size_t)n);
    free(body);
    return rc;
}

int
conn_send_control(struct conn *c, const struct msg_control *ctl)
{
    uint8_t body[MSG_MAX_BODY];
    ssize_t n;

    if (c->state != CONN_ESTABLISHED)
        return -ENOTCONN;
    n = msg_encode_control(ctl, body, sizeof(body));
    if (n < 0)
        return (int)n;
    log_debug(c->prefix, "sending %s", msg_ctl_name(ctl->kind));
    return send_frame(c, FRAME_CONTROL, ctl->lsn, body, (size_t)n);
}

void
conn_set_epoch(struct conn *c, uint64_t epoch)
{
    if (epoch > c->cfg.epoch)
        c->cfg.epoch = epoch;
}

uint64_t
conn_peer_epoch(const struct conn *c)
{
    return c->peer_epoch;
}

void
conn_pause_input(struct conn *c, bool pause)
{
    if (c->input_paused == pause)
        return;
    c->input_paused = pause;
    if (!pause)
        c->last_rx_us = clock_mono_us(); /* the silence while paused was ours */
    if (c->stream != NULL)
        wio_stream_pause_recv(c->stream, pause);
}

size_t
conn_backlog(const struct conn *c)
{
    size_t n = c->stream != NULL ? wio_stream_pending(c->stream) : 0;

    if (c->tls != NULL)
        n += tls_out_pending(c->tls);
    return n;
}

void
conn_close(struct conn *c, int reason, const char *message)
{
    struct msg_error e = {.code = (uint32_t)(reason < 0 ? -reason : reason)};
    uint8_t body[MSG_MAX_BODY];
    ssize_t n;

    if (c->state == CONN_CLOSED)
        return;
    if (c->state == CONN_ESTABLISHED || (c->state == CONN_HELLO && c->hello_sent)) {
        snprintf(e.text, sizeof(e.text), "%s", message != NULL ? message : "");
        n = msg_encode_error(&e, body, sizeof(body));
        if (n > 0 && send_frame(c, reason == 0 ? FRAME_BYE : FRAME_ERROR, 0, body, (size_t)n) < 0)
            log_debug(c->prefix, "could not send %s", reason == 0 ? "BYE" : "ERROR");
    }
    if (c->tls != NULL && c->stream != NULL) {
        uint8_t out[256];
        size_t k;
        tls_shutdown(c->tls);
        while ((k = tls_take_out(c->tls, out, sizeof(out))) > 0)
            if (wio_stream_write(c->stream, out, k) < 0)
                break;
    }
    log_info(c->prefix, "closing: %s", message != NULL ? message : "bye");
    report_closed(c, reason == 0 ? WIRE_ECLOSED : reason, message != NULL ? message : "closed");
}

/* ---- receiving ---- */

/* ESTABLISHED once both HELLOs are accepted: ours (the peer's READY) and the peer's. */
static int
check_established(struct conn *c, uint64_t epoch)
{
    if (!c->peer_hello_ok || !c->peer_ready || c->state != CONN_HELLO)
        return 0;
    c->state = CONN_ESTABLISHED;
    log_info(c->prefix, "established with %s (%s, timeline %u, durable %X/%X, epoch %llu)",
             c->peer.node_name, msg_role_name(c->peer.role), c->peer.timeline,
             (unsigned)(c->peer.durable_lsn >> 32), (unsigned)c->peer.durable_lsn,
             (unsigned long long)epoch);
    if (c->ops->on_established != NULL)
        c->ops->on_established(c->ctx);
    return 0;
}

/*
 * Whether a HELLO's node name is the one expected (or one of the list).  Under TLS it must
 * also be the name the verified certificate carries: a certificate for one site cannot
 * introduce itself as the other.
 */
static bool
name_expected(const struct conn *c, const char *name)
{
    const char *p = c->peer_name;
    size_t n = strlen(name);

    if (c->tls != NULL &&
        strcmp(tls_peer_name(c->tls) != NULL ? tls_peer_name(c->tls) : "", name) != 0)
        return false;
    while (*p != '\0') {
        size_t len = strcspn(p, ",");
        if (len == n && strncmp(p, name, n) == 0)
            return true;
        p += len;
        if (*p == ',')
            p++;
    }
    return false;
}

static int
on_peer_hello(struct conn *c, const struct codec_frame *f)
{
    char why[256] = "";
    int rc;

    rc = msg_decode_hello(f->payload, f->hdr.raw_len, &c->peer);
    if (rc < 0) {
        conn_fail(c, rc, "malformed HELLO from peer");
        return rc;
    }
    c->peer.epoch = f->hdr.epoch;
    if (!name_expected(c, c->peer.node_name)) {
        conn_fail(c, WIRE_EPROTO, "peer introduced itself as \"%s\", expected \"%s\"",
                  c->peer.node_name, c->peer_name);
        return WIRE_EPROTO;
    }
    /* one of several, or an accepted connection: name it from now on */
    snprintf(c->prefix, sizeof(c->prefix), "peer[%s]", c->peer.node_name);
    if (c->ops->on_hello != NULL) {
        rc = c->ops->on_hello(c->ctx, &c->peer, why, sizeof(why));
        if (rc < 0) {
            conn_fail(c, rc, "refusing peer %s: %s", c->peer.node_name,
                      why[0] != '\0' ? why : wire_strerror(rc));
            return rc;
        }
    }
    if (!c->hello_sent) {
        rc = send_hello(c);
        if (rc < 0) {
            conn_fail(c, rc, "cannot send HELLO: %s", wire_strerror(rc));
            return rc;
        }
    }
    rc = send_frame(c, FRAME_READY, 0, NULL, 0);
    if (rc < 0) {
        conn_fail(c, rc, "cannot send READY: %s", wire_strerror(rc));
        return rc;
    }
    c->peer_hello_ok = true;
    return check_established(c, f->hdr.epoch);
}

static int
dispatch(struct conn *c, const struct codec_frame *f)
{
    union {
        struct msg_ack ack;
        struct msg_heartbeat hb;
        struct msg_error err;
        struct msg_timeline tl;
        struct msg_control ctl;
    } m;
    int rc;

    if (f->hdr.epoch > c->peer_epoch) {
        c->peer_epoch = f->hdr.epoch;
        if (f->hdr.epoch > c->cfg.epoch && c->ops->on_epoch != NULL)
            c->ops->on_epoch(c->ctx, f->hdr.epoch);
        if (c->state == CONN_CLOSED)
            return WIRE_ECLOSED;
    }

    if (c->state == CONN_HELLO) {
        if (f->hdr.type == FRAME_ERROR &&
            msg_decode_error(f->payload, f->hdr.raw_len, &m.err) == 0) {
            log_error(c->prefix, "peer refused us: %s", m.err.text);
            report_closed(c, WIRE_EPEER, m.err.text);
            return WIRE_EPEER;
        }
        if (f->hdr.type == FRAME_HELLO && !c->peer_hello_ok)
            return on_peer_hello(c, f);
        if (f->hdr.type == FRAME_READY && c->peer_hello_ok && !c->peer_ready) {
            c->peer_ready = true;
            return check_established(c, f->hdr.epoch);
        }
        if (f->hdr.type != FRAME_HEARTBEAT) {
            conn_fail(c, WIRE_EPROTO, "unexpected %s during the HELLO exchange",
                      frame_type_name(f->hdr.type));
            return WIRE_EPROTO;
        }
        return 0;
    }
    if (f->hdr.epoch < c->cfg.epoch) {
        /* The peer acts on an older epoch: it is fenced, and nothing it says counts. */
        conn_fail(c, WIRE_EPROTO, "%s is fenced: its epoch %llu is older than %llu",
                  c->peer.node_name, (unsigned long long)f->hdr.epoch,
                  (unsigned long long)c->cfg.epoch);
        return WIRE_EPROTO;
    }
    switch (f->hdr.type) {
    case FRAME_WAL:
        if (c->ops->on_wal != NULL)
            c->ops->on_wal(c->ctx, f->hdr.lsn, f->payload, f->hdr.raw_len);
        return 0;
    case FRAME_ACK:
        rc = msg_decode_ack(f->payload, f->hdr.raw_len, &m.ack);
        if (rc < 0) {
            conn_fail(c, rc, "malformed ACK from peer");
            return rc;
        }
        if (c->ops->on_ack != NULL)
            c->ops->on_ack(c->ctx, &m.ack);
        return 0;
    case FRAME_TIMELINE:
        rc = msg_decode_timeline(f->payload, f->hdr.raw_len, &m.tl);
        if (rc < 0 || c->ops->on_timeline == NULL) {
            conn_fail(c, rc < 0 ? rc : WIRE_EPROTO, "%s TIMELINE from peer",
                      rc < 0 ? "malformed" : "unexpected");
            return rc < 0 ? rc : WIRE_EPROTO;
        }
        c->ops->on_timeline(c->ctx, &m.tl);
        return 0;
    case FRAME_CONTROL:
        rc = msg_decode_control(f->payload, f->hdr.raw_len, &m.ctl);
        if (rc < 0 || c->ops->on_control == NULL) {
            conn_fail(c, rc < 0 ? rc : WIRE_EPROTO, "%s CONTROL from peer",
                      rc < 0 ? "malformed" : "unexpected");
            return rc < 0 ? rc : WIRE_EPROTO;
        }
        c->ops->on_control(c->ctx, &m.ctl);
        return 0;
    case FRAME_HEARTBEAT:
        rc = msg_decode_heartbeat(f->payload, f->hdr.raw_len, &m.hb);
        if (rc < 0) {
            conn_fail(c, rc, "malformed HEARTBEAT from peer");
            return rc;
        }
        c->last_hb_rx_send_us = m.hb.send_time_us;
        c->last_hb_rx_at_us = clock_mono_us();
        if (m.hb.echo_time_us != 0) {
            uint64_t now = clock_unix_us();
            uint64_t elapsed = now > m.hb.echo_time_us ? now - m.hb.echo_time_us : 0;
            c->rtt_us = elapsed > m.hb.echo_hold_us ? elapsed - m.hb.echo_hold_us : 0;
        }
        return 0;
    case FRAME_ERROR:
    case FRAME_BYE:
        rc = msg_decode_error(f->payload, f->hdr.raw_len, &m.err);
        if (rc < 0)
            snprintf(m.err.text, sizeof(m.err.text), "(malformed %s)",
                     frame_type_name(f->hdr.type));
        if (f->hdr.type == FRAME_ERROR)
            log_error(c->prefix, "peer reported an error: %s", m.err.text);
        else
            log_info(c->prefix, "peer closed the session: %s", m.err.text);
        report_closed(c, f->hdr.type == FRAME_ERROR ? WIRE_EPEER : WIRE_ECLOSED, m.err.text);
        return WIRE_EPEER;
    case FRAME_HELLO:
    case FRAME_READY:
    default:
        conn_fail(c, WIRE_EPROTO, "unexpected %s from peer", frame_type_name(f->hdr.type));
        return WIRE_EPROTO;
    }
}

/* Decodes and dispatches every whole frame buffered. */
static int
drain_frames(struct conn *c)
{
    struct codec_frame f;
    int rc;

    while (c->state != CONN_CLOSED && !c->input_paused && (rc = codec_dec_next(c->dec, &f)) != 0) {
        if (rc < 0) {
            conn_fail(c, rc, "dropping connection: %s", wire_strerror(rc));
            return rc;
        }
        rc = dispatch(c, &f);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* ---- plaintext transport ---- */

static int
plain_start(struct conn *c)
{
    /* Nothing to verify first: both sides speak at once (see conn.h). */
    c->state = CONN_HELLO;
    return send_hello(c);
}

/* Keeps what a paused input could not take, for the resume (data may lie in c->pending). */
static int
plain_keep(struct conn *c, const uint8_t *data, size_t len)
{
    if (len > c->pending_cap - c->pending_len) {
        size_t cap = c->pending_cap < 65536 ? 65536 : c->pending_cap;
        uint8_t *p;

        while (cap < c->pending_len + len)
            cap *= 2;
        p = realloc(c->pending, cap);
        if (p == NULL)
            return -ENOMEM;
        c->pending = p;
        c->pending_cap = cap;
    }
    memmove(c->pending + c->pending_len, data, len);
    c->pending_len += len;
    return 0;
}

static int
plain_input(struct conn *c, const uint8_t *data, size_t len)
{
    int rc;

    if (c->pending_len > 0) {
        /* The bytes kept while paused come first. */
        rc = len > 0 ? plain_keep(c, data, len) : 0;
        if (rc < 0)
            return rc;
        data = c->pending;
        len = c->pending_len;
        c->pending_len = 0;
    }
    rc = drain_frames(c); /* frames decoded before a pause */
    if (rc < 0 || c->state == CONN_CLOSED)
        return rc;
    /* In pieces the decoder can hold, draining whole frames after each. */
    while (len > 0) {
        size_t avail, n;
        uint8_t *dst;

        if (c->input_paused)
            return plain_keep(c, data, len);
        dst = codec_dec_space(c->dec, &avail);
        n = len < avail ? len : avail;
        memcpy(dst, data, n);
        codec_dec_commit(c->dec, n);
        data += n;
        len -= n;
        rc = drain_frames(c);
        if (rc < 0 || c->state == CONN_CLOSED)
            return rc;
    }
    return 0;
}

static uint8_t *
plain_frame_buf(struct conn *c, size_t bound)
{
    return c->stream != NULL ? wio_stream_reserve(c->stream, bound) : NULL;
}

static int
plain_frame_done(struct conn *c, uint8_t *buf, size_t len)
{
    (void)buf;
    wio_stream_commit(c->stream, len);
    return 0;
}

static const struct xport_ops plain_ops = {
    .name = "plaintext",
    .start = plain_start,
    .input = plain_input,
    .frame_buf = plain_frame_buf,
    .frame_done = plain_frame_done,
};

/* ---- TLS transport ---- */

/* Moves every pending ciphertext byte to the socket queue. */
static int
tls_flush(struct conn *c)
{
    size_t pending;

    while (c->stream != NULL && (pending = tls_out_pending(c->tls)) > 0) {
        uint8_t *dst = wio_stream_reserve(c->stream, pending);
        size_t n;

        if (dst == NULL)
            return -ENOMEM;
        n = tls_take_out(c->tls, dst, pending);
        wio_stream_commit(c->stream, n);
        if (n == 0)
            break;
    }
    return 0;
}

static int
tls_start(struct conn *c)
{
    int rc;

    if (c->acceptor)
        return 0;
    rc = tls_handshake(c->tls); /* produces the ClientHello */
    if (rc < 0)
        return rc;
    return tls_flush(c);
}

static int
tls_input(struct conn *c, const uint8_t *data, size_t len)
{
    int rc = len > 0 ? tls_feed(c->tls, data, len) : 0;

    if (rc < 0)
        return rc;
    if (!tls_established(c->tls)) {
        rc = tls_handshake(c->tls);
        /* Flush first: on failure this carries the alert that tells the peer why. */
        if (tls_flush(c) < 0)
            return -ENOMEM;
        if (rc < 0) {
            if (c->acceptor)
                conn_fail(c, rc,
                          "TLS handshake with %s failed (an incoming connection, not verified "
                          "as %s): %s",
                          c->remote, c->peer_name, tls_session_error(c->tls));
            else
                conn_fail(c, rc, "TLS handshake with %s at %s failed: %s", c->peer_name, c->remote,
                          tls_session_error(c->tls));
            return rc;
        }
        if (rc == 0)
            return 0;
        log_info(c->prefix, "TLS 1.3 established with %s, peer certificate \"%s\" verified",
                 c->remote, tls_peer_name(c->tls));
        snprintf(c->prefix, sizeof(c->prefix), "peer[%s]", tls_peer_name(c->tls));
        c->state = CONN_HELLO;
        if (c->acceptor) {
            rc = send_hello(c);
            if (rc < 0)
                return rc;
        }
    }
    rc = drain_frames(c); /* frames decoded before a pause */
    if (rc < 0 || c->state == CONN_CLOSED)
        return rc;
    for (;;) {
        size_t avail;
        uint8_t *dst;
        ssize_t n;

        if (c->input_paused)
            return 0; /* the rest stays in the TLS session until the resume */
        dst = codec_dec_space(c->dec, &avail);
        n = tls_read(c->tls, dst, avail);

        if (tls_flush(c) < 0)
            return -ENOMEM;
        if (n == 0)
            return 0;
        if (n < 0) {
            if (n == WIRE_ECLOSED)
                report_closed(c, WIRE_ECLOSED, "peer closed the TLS session");
            else
                conn_fail(c, (int)n, "TLS failure: %s", tls_session_error(c->tls));
            return (int)n;
        }
        codec_dec_commit(c->dec, (size_t)n);
        rc = drain_frames(c);
        if (rc < 0 || c->state == CONN_CLOSED)
            return rc;
    }
}

static uint8_t *
tls_frame_buf(struct conn *c, size_t bound)
{
    if (bound > c->scratch_cap) {
        uint8_t *p = realloc(c->scratch, bound);
        if (p == NULL)
            return NULL;
        c->scratch = p;
        c->scratch_cap = bound;
    }
    return c->scratch;
}

static int
tls_frame_done(struct conn *c, uint8_t *buf, size_t len)
{
    int rc = tls_write(c->tls, buf, len);

    if (rc < 0)
        return rc;
    return tls_flush(c);
}

static const struct xport_ops tls_ops = {
    .name = "TLS",
    .start = tls_start,
    .input = tls_input,
    .frame_buf = tls_frame_buf,
    .frame_done = tls_frame_done,
};

/* ---- stream callbacks, timers ---- */

static void
stream_data(void *ctx, const void *data, size_t len)
{
    struct conn *c = ctx;
    int rc;

    if (c->state == CONN_CLOSED)
        return;
    c->last_rx_us = clock_mono_us();
    rc = c->xport->input(c, data, len);
    if (rc < 0 && c->state != CONN_CLOSED)
        conn_fail(c, rc, "dropping connection: %s", wire_strerror(rc));
}

static void
stream_closed(void *ctx, int res)
{
    struct conn *c = ctx;

    if (c->state == CONN_CLOSED)
        return;
    if (res == WIRE_ECLOSED && codec_dec_buffered(c->dec) > 0)
        res = WIRE_ETRUNC;
    if (c->acceptor && c->state == CONN_TLS_HANDSHAKE)
        log_warning(c->prefix,
                    "connection from %s lost before its TLS handshake (an incoming connection, "
                    "not verified as %s): %s",
                    c->remote, c->peer_name, wire_strerror(res));
    else
        log_error(c->prefix, "connection lost: %s", wire_strerror(res));
    report_closed(c, res, wire_strerror(res));
}

static void
stream_drained(void *ctx)
{
    struct conn *c = ctx;

    if (c->state == CONN_ESTABLISHED && c->ops->on_drained != NULL)
        c->ops->on_drained(c->ctx);
}

static const struct wio_stream_ops stream_ops = {
    .on_data = stream_data,
    .on_close = stream_closed,
    .on_drained = stream_drained,
};

static void
heartbeat_fire(struct wio_timer *t)
{
    struct conn_timer *ct = (struct conn_timer *)t;
    struct conn *c = ct->c;

    if (c == NULL || c->state == CONN_CLOSED)
        return; /* the connection is over: the timer ends here */
    if (c->cfg.timeout_ms != 0 && !c->input_paused &&
        clock_mono_us() - c->last_rx_us > (uint64_t)c->cfg.timeout_ms * 1000u) {
        conn_fail(c, WIRE_ETIMEDOUT, "nothing heard from %s for %u ms", c->peer_name,
                  c->cfg.timeout_ms);
        return;
    }
    if (c->state == CONN_ESTABLISHED && send_heartbeat(c) < 0) {
        conn_fail(c, -ENOMEM, "cannot queue a heartbeat");
        return;
    }
    if (wio_timer_arm(c->loop, t, c->cfg.heartbeat_ms, heartbeat_fire) < 0)
        log_warning(c->prefix, "cannot re-arm the heartbeat timer");
}

static void
heartbeat_release(struct wio_timer *t)
{
    free((struct conn_timer *)t);
}

/* ---- lifecycle ---- */

/* "ADDR:PORT" or "[ADDR]:PORT" of the socket's other end, or "?". */
static void
remote_name(int fd, char *buf, size_t cap)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char host[INET6_ADDRSTRLEN + 8], serv[8];

    snprintf(buf, cap, "?");
    if (getpeername(fd, (struct sockaddr *)&ss, &len) != 0 ||
        getnameinfo((struct sockaddr *)&ss, len, host, sizeof(host), serv, sizeof(serv),
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0)
        return;
    snprintf(buf, cap, ss.ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, serv);
}

int
conn_new(struct conn **out, struct wio_loop *loop, int fd, bool acceptor,
         const struct conn_config *cfg, const struct conn_ops *ops, void *ctx)
{
    struct conn *c = calloc(1, sizeof(*c));
    int rc;

    if (c == NULL) {
        close(fd);
        return -ENOMEM;
    }
    c->loop = loop;
    c->acceptor = acceptor;
    c->cfg = *cfg;
    c->hello = *cfg->hello;
    c->ops = ops;
    c->ctx = ctx;
    c->state = CONN_TLS_HANDSHAKE;
    snprintf(c->peer_name, sizeof(c->peer_name), "%s", cfg->peer_name);
    c->cfg.peer_name = c->peer_name;
    c->cfg.hello = &c->hello;
    remote_name(fd, c->remote, sizeof(c->remote));
    /* An accepted connection is known by its address until its peer is verified. */
    snprintf(c->prefix, sizeof(c->prefix), "peer[%s]", acceptor ? c->remote : c->peer_name);
    c->last_rx_us = clock_mono_us();
    c->xport = cfg->tls != NULL ? &tls_ops : &plain_ops;

    rc = codec_enc_new(&c->enc, cfg->compress, cfg->lz4_acceleration);
    if (rc == 0)
        rc = codec_dec_new(&c->dec);
    if (rc == 0 && cfg->compress && cfg->lz4_hc_level >= 0) {
        struct lzctl_params p;

        lzctl_defaults(&p);
        if (cfg->lz4_hc_level > 0)
            p.hc_level = cfg->lz4_hc_level;
        rc = lzctl_new(&c->lzctl, &p, clock_mono_us());
    }
    if (rc == 0 && cfg->tls != NULL)
        rc = tls_session_new(&c->tls, cfg->tls, c->peer_name);
    if (rc < 0) {
        close(fd);
        c->state = CONN_CLOSED;
        c->closed_reported = true;
        conn_free(c);
        return rc;
    }
    rc = wio_stream_new(&c->stream, loop, fd, &stream_ops, c);
    if (rc < 0) {
        c->stream = NULL;
        c->state = CONN_CLOSED;
        c->closed_reported = true;
        conn_free(c);
        return rc;
    }
    if (cfg->heartbeat_ms != 0) {
        c->hb = calloc(1, sizeof(*c->hb));
        if (c->hb == NULL ||
            wio_timer_arm(loop, &c->hb->t, cfg->heartbeat_ms, heartbeat_fire) < 0) {
            free(c->hb);
            c->hb = NULL;
            c->state = CONN_CLOSED;
            c->closed_reported = true;
            conn_free(c);
            return -ENOMEM;
        }
        c->hb->c = c;
    }
    log_debug(c->prefix, "%s connection (%s)", acceptor ? "accepted" : "outgoing", c->xport->name);
    rc = c->xport->start(c);
    if (rc < 0) {
        c->closed_reported = true;
        report_closed(c, rc, wire_strerror(rc));
        conn_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

void
conn_free(struct conn *c)
{
    if (c == NULL)
        return;
    if (c->stream != NULL) {
        wio_stream_close(c->stream, true);
        c->stream = NULL;
    }
    if (c->hb != NULL) {
        c->hb->c = NULL;
        wio_timer_cancel(&c->hb->t);
        if (wio_timer_busy(&c->hb->t))
            c->hb->t.release = heartbeat_release;
        else
            free(c->hb);
    }
    tls_session_free(c->tls);
    codec_enc_free(c->enc);
    codec_dec_free(c->dec);
    lzctl_free(c->lzctl);
    free(c->scratch);
    free(c->pending);
    free(c);
}

enum conn_state
conn_state(const struct conn *c)
{
    return c->state;
}

const struct msg_hello *
conn_peer_hello(const struct conn *c)
{
    return &c->peer;
}

uint64_t
conn_rtt_us(const struct conn *c)
{
    return c->rtt_us;
}

const char *
conn_compression(const struct conn *c)
{
    if (!c->cfg.compress)
        return "off";
    return c->lzctl != NULL && lzctl_mode(c->lzctl) == LZCTL_HC ? "lz4hc" : "lz4";
}

const struct codec_stats *
conn_tx_stats(const struct conn *c)
{
    return codec_enc_stats(c->enc);
}

const struct codec_stats *
conn_rx_stats(const struct conn *c)
{
    return codec_dec_stats(c->dec);
}
