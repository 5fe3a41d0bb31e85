/*
 * wio.h - the io_uring event loop and socket transport of walmirror ("wio": walmirror I/O).
 *
 * One struct wio_loop per thread owns one io_uring.  Everything asynchronous is an operation:
 * a struct wio_op embedded in the caller's object, whose address is the SQE's user_data and
 * whose callback receives the CQE's res and flags.  SQEs taken with wio_sqe() accumulate and
 * are submitted together by wio_run_once() - one io_uring_submit for all the sends, receives,
 * writes and timers prepared since the last turn of the loop.
 *
 * On top of that:
 *  - struct wio_stream: a connected socket.  Receives never block: a multishot recv over a
 *    provided-buffer ring where the kernel has them, else a single-shot recv re-armed after
 *    each completion (probed at run time; WALMIRROR_URING_RECV=single forces the fallback).
 *    Sends are batched: wio_stream_write() appends to a queue, at most one send is in flight
 *    per stream, and everything queued while it flies goes out in the next one.  Payloads of
 *    at least WIO_SEND_ZC_MIN bytes use SEND_ZC where the kernel has it (WALMIRROR_URING_SEND_ZC=0
 *    turns it off).  A short send resubmits the remainder.
 *  - struct wio_timer: a one-shot timeout (IORING_OP_TIMEOUT), re-armed by its owner.
 *  - wio_accept / wio_connect: TCP listen, accept and connect through the ring.
 *
 * liburing here is 2.3: provided-buffer rings are registered by hand.
 * All functions return >= 0 on success or a negative errno.
 */
#ifndef WALMIRROR_WIRE_WIO_H
#define WALMIRROR_WIRE_WIO_H

#include <liburing.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "err.h"

#define WIO_SEND_ZC_MIN (16 * 1024)

struct wio_loop;
struct wio_op;

typedef void (*wio_cb)(struct wio_op *op, int res, unsigned cqe_flags);

/* Embed in the object that owns an SQE; container_of() back from the callback. */
struct wio_op {
    wio_cb cb;
};

struct wio_features {
    bool recv_multishot; /* multishot recv over a provided-buffer ring */
    bool send_zc;        /* IORING_OP_SEND_ZC */
    bool accept_multishot;
};

WM_MUSTCHECK int wio_loop_new(struct wio_loop **out, unsigned entries);
void wio_loop_free(struct wio_loop *loop);
const struct wio_features *wio_loop_features(const struct wio_loop *loop);

/*
 * Returns a zeroed SQE whose user_data is op (op may be NULL for a fire-and-forget SQE whose
 * completion is ignored).  When the submission queue is full it submits what is queued first;
 * returns NULL only if even that fails.
 */
struct io_uring_sqe *wio_sqe(struct wio_loop *loop, struct wio_op *op);

/*
 * Submits everything prepared, waits up to timeout_ms (-1: forever, 0: no wait) for at least
 * one completion, and dispatches every completion available.  Returns the number dispatched,
 * or a negative errno (-EINTR is not an error: it returns 0).
 */
WM_MUSTCHECK int wio_run_once(struct wio_loop *loop, int timeout_ms);

/* Submits what is prepared without waiting. */
WM_MUSTCHECK int wio_submit(struct wio_loop *loop);

/* ---- timers ---- */

struct wio_timer {
    struct wio_op op;            /* private */
    struct __kernel_timespec ts; /* private */
    struct wio_loop *loop;       /* private */
    bool armed;                  /* private */
    unsigned pending;            /* private: timeout SQEs in flight */
    unsigned stale;              /* private: removed or superseded ones among them */
    void (*fire)(struct wio_timer *t);
    /* Optional: called once a cancelled timer has nothing in flight any more (also while
     * wio_loop_free drains), so that an owner that is going away may free t then. */
    void (*release)(struct wio_timer *t);
};

/* Arms t to call fire(t) once after ms milliseconds; re-arming an armed timer moves it.
 * t must be zero-initialised before its first use and stay in place while wio_timer_busy(). */
WM_MUSTCHECK int wio_timer_arm(struct wio_loop *loop, struct wio_timer *t, uint64_t ms,
                               void (*fire)(struct wio_timer *t));
/* Disarms t; fire is not called afterwards.  t must stay valid until the loop has seen the
 * cancellation complete: wio_timer_busy() tells. */
void wio_timer_cancel(struct wio_timer *t);
bool wio_timer_busy(const struct wio_timer *t);

/* ---- streams ---- */

struct wio_stream;

struct wio_stream_ops {
    /* Received bytes; valid only during the call (copy what must outlive it).  After
     * wio_stream_pause_recv(s, false) it is called once from the loop with len 0 (data NULL)
     * when nothing was held, so that the owner takes up what it kept while paused. */
    void (*on_data)(void *ctx, const void *data, size_t len);
    /* The stream failed or the peer closed (res = WIRE_ECLOSED or a negative errno).  Called
     * at most once, never after wio_stream_close(). */
    void (*on_close)(void *ctx, int res);
    /* Optional: the send queue drained completely. */
    void (*on_drained)(void *ctx);
};

/* Wraps a connected socket; takes ownership of fd (on failure the caller still owns it).
 * Receiving starts at once. */
WM_MUSTCHECK int wio_stream_new(struct wio_stream **out, struct wio_loop *loop, int fd,
                                const struct wio_stream_ops *ops, void *ctx);

/* Queues len bytes (copied) for sending.  Returns 0 or -ENOMEM / -EPIPE after failure. */
WM_MUSTCHECK int wio_stream_write(struct wio_stream *s, const void *buf, size_t len);

/*
 * Zero-copy variant for producers that write straight into the queue: reserve at least len
 * bytes, fill some of them, commit what was filled.  The pointer stays valid until the commit
 * (no other write in between).  Returns NULL with errno ENOMEM, or EPIPE after failure.
 */
void *wio_stream_reserve(struct wio_stream *s, size_t len);
void wio_stream_commit(struct wio_stream *s, size_t len);

/*
 * Back-pressure on input: paused, the stream stops receiving (its receive SQE is cancelled and
 * not re-armed), so the socket's buffer fills and TCP holds the sender back.  Bytes the kernel
 * completed before the cancellation are still delivered to on_data.  Resumed, it receives
 * again.  Pausing a paused stream, or resuming a running one, does nothing.
 */
void wio_stream_pause_recv(struct wio_stream *s, bool pause);

/* Bytes queued or in flight, not yet acknowledged by the kernel; for back-pressure. */
size_t wio_stream_pending(const struct wio_stream *s);

/* Stops receiving, and once the pending sends are done (or at once if abort) closes the
 * socket and frees the stream.  No callback is called after this. */
void wio_stream_close(struct wio_stream *s, bool abort);

/* Totals for statistics. */
uint64_t wio_stream_bytes_sent(const struct wio_stream *s);
uint64_t wio_stream_bytes_received(const struct wio_stream *s);
/* Send SQEs issued so far (many writes share one send: the batching shows here). */
uint64_t wio_stream_send_calls(const struct wio_stream *s);

/* ---- TCP ---- */

/* Parses "host:port" ("[v6]:port" too) into a sockaddr; port 0 is allowed for listening. */
WM_MUSTCHECK int wio_parse_hostport(const char *hostport, struct sockaddr_storage *ss,
                                    socklen_t *sslen);

/* Creates a listening TCP socket (SO_REUSEADDR, non-blocking, CLOEXEC).  Returns the fd or a
 * negative errno; *bound_port receives the port actually bound (useful with port 0). */
WM_MUSTCHECK int wio_listen_tcp(const char *hostport, int backlog, int *bound_port);

struct wio_acceptor {
    struct wio_op op;      /* private */
    struct wio_loop *loop; /* private */
    int listen_fd;
    /* fd >= 0: a new connection (TCP_NODELAY set); fd < 0: a negative errno. */
    void (*on_accept)(struct wio_acceptor *a, int fd);
    bool multishot; /* private */
    bool active;    /* private */
    bool armed;     /* private: an accept SQE is in flight */
};

/* Starts accepting on listen_fd (multishot where supported); a must be zero-initialised.
 * After an error reported through on_accept, accepting has stopped (start again if wanted). */
WM_MUSTCHECK int wio_accept_start(struct wio_loop *loop, struct wio_acceptor *a, int listen_fd,
                                  void (*on_accept)(struct wio_acceptor *a, int fd));
/* Stops accepting; on_accept is not called afterwards.  The listening fd stays open (the
 * caller's).  a must stay in place while wio_accept_busy(). */
void wio_accept_stop(struct wio_acceptor *a);
bool wio_accept_busy(const struct wio_acceptor *a);

struct wio_connector {
    struct wio_op op;             /* private */
    struct sockaddr_storage addr; /* private */
    int fd;                       /* private */
    /* fd >= 0: connected (TCP_NODELAY set); fd < 0: a negative errno. */
    void (*on_connect)(struct wio_connector *c, int fd);
};

/* Starts a TCP connect to hostport through the ring.  on_connect is called exactly once (unless
 * the loop is freed first); c must stay in place until then. */
WM_MUSTCHECK int wio_connect_start(struct wio_loop *loop, struct wio_connector *c,
                                   const char *hostport,
                                   void (*on_connect)(struct wio_connector *c, int fd));

#endif
