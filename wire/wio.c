/*
 * wio.c - the io_uring event loop and socket transport of walmirror; see wio.h.
 *
 * Contract
 *   One struct wio_loop per thread owns one io_uring.  Every SQE carries the address of a
 *   struct wio_op as user_data (0 for fire-and-forget SQEs such as cancellations); the loop
 *   dispatches each CQE to op->cb.  Nothing is submitted outside wio_run_once()/wio_submit()
 *   (except when the SQ is full), so every send, receive and timer prepared during one turn of
 *   the loop goes to the kernel in one io_uring_submit.
 *
 * Features (probed once per loop in wio_loop_new)
 *   - recv_multishot: a provided-buffer ring (WIO_RECV_BUFS x WIO_RECV_BUF_SIZE, buffer group
 *     WIO_BGID) registered by hand, as liburing 2.3 has no io_uring_setup_buf_ring.  A stream
 *     whose multishot recv fails with -EINVAL at run time falls back to single-shot recv.
 *     WALMIRROR_URING_RECV=single forces single-shot recv.
 *   - send_zc: IORING_OP_SEND_ZC per io_uring_get_probe_ring(), used for sends of at least
 *     WIO_SEND_ZC_MIN bytes, only when WALMIRROR_URING_SEND_ZC=1: off by default.  Measured,
 *     it is slower over loopback (its completion waits for the reader), and behind a slow
 *     link the pages it pins pile up until the kernel refuses more (-ENOMEM / -ENOBUFS); a
 *     stream that meets such a refusal falls back to plain sends for good.
 *   - accept_multishot: assumed where buffer rings exist (same kernel release), dropped at run
 *     time on -EINVAL.
 *
 * Streams
 *   Receive: multishot recv over the loop's buffer ring, re-armed when a CQE lacks
 *   IORING_CQE_F_MORE (also after -ENOBUFS), or single-shot recv into a per-stream buffer.
 *   Send: two buffers, one in flight and one accumulating.  Writes append to the accumulating
 *   one; at the start of each loop turn (and when a send completes) a stream with no send in
 *   flight swaps them and issues ONE send for all of it.  A short send resubmits the remainder.
 *   A SEND_ZC buffer is reused only after its notification CQE (IORING_CQE_F_NOTIF).
 *
 * Lifetime and failure
 *   on_close is called at most once: on EOF (WIRE_ECLOSED), a recv error or a send error.
 *   After it, pending output is dropped and writes fail with -EPIPE; the owner still calls
 *   wio_stream_close().  wio_stream_close() stops all callbacks at once; the stream is freed
 *   (fd closed) only when none of its SQEs is in flight and, for a graceful close, its output
 *   has been sent.  Callbacks may close their own stream: a busy counter defers the free to
 *   the end of the CQE handler.  wio_loop_free() aborts the streams still open, waits briefly
 *   for their SQEs, and frees everything.
 *
 *   Timers count their SQEs in flight; a re-arm removes the old timeout (IORING_OP_TIMEOUT_
 *   REMOVE) and queues a new one, and the completion of a superseded timeout is recognised by
 *   a "stale" count: timeout CQEs of one timer arrive in the order the timeouts were armed.
 */
#include "wio.h"

#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

/*
 * Memcheck cannot see the kernel write a completed recv into our buffers (io_uring fills them
 * asynchronously, not through a syscall it models), so it would take every received byte of
 * a single-shot recv buffer (malloc'd) for uninitialised.  Tell it; a no-op outside valgrind.
 */
#if defined(__has_include)
#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#define WIO_KERNEL_WROTE(p, n) ((void)VALGRIND_MAKE_MEM_DEFINED((p), (n)))
#endif
#endif
#ifndef WIO_KERNEL_WROTE
#define WIO_KERNEL_WROTE(p, n) ((void)0)
#endif

#define WIO_COMPONENT "wio"
#define WIO_DEFAULT_ENTRIES 256
#define WIO_BGID 0
#define WIO_RECV_BUFS 64               /* power of two, as the buffer ring requires */
#define WIO_RECV_BUF_SIZE (64 * 1024)  /* per provided buffer and per single-shot buffer */
#define WIO_SEND_MAX (1u << 30)        /* largest single send; res is an int */
#define WIO_BUF_KEEP (4 * 1024 * 1024) /* send buffers larger than this are freed when idle */
#define WIO_DRAIN_MS 2000              /* wio_loop_free: how long to wait for stream SQEs */

struct wio_loop {
    struct io_uring ring;
    struct wio_features feat;
    struct io_uring_buf_ring *br; /* provided-buffer ring, followed by its buffers */
    unsigned char *br_bufs;
    size_t br_map_len;
    struct wio_stream *streams; /* every stream not yet freed */
    bool draining;              /* wio_loop_free: dispatch stream and timer CQEs only */
    unsigned timers_inflight;   /* timeout SQEs of all timers, for wio_loop_free */
};

struct wio_buf {
    unsigned char *p;
    size_t len;
    size_t cap;
};

struct wio_stream {
    struct wio_loop *loop;
    struct wio_stream *prev, *next;
    int fd;
    const struct wio_stream_ops *ops;
    void *ctx;

    struct wio_op recv_op;
    struct wio_op send_op;

    /* receive */
    bool multishot;
    bool recv_armed;
    bool recv_paused;    /* wio_stream_pause_recv: not re-armed */
    unsigned char *rbuf; /* single-shot receive buffer */
    /* Bytes received while paused (posted before the cancellation took effect), or after a
     * resume before the held ones were delivered: delivered in order by resume_op. */
    struct wio_buf held;
    size_t held_off; /* delivered so far */
    struct wio_op resume_op;
    bool resume_queued;

    /* send: out[acc] accumulates, out[acc ^ 1] is in flight while sending */
    struct wio_buf out[2];
    unsigned acc;
    size_t fly_off;     /* bytes of the in-flight buffer the kernel took */
    bool sending;       /* the in-flight buffer is owned by the kernel */
    bool send_armed;    /* a send SQE awaits its result CQE */
    bool last_zc;       /* the last send SQE was SEND_ZC */
    bool zc_ok;         /* SEND_ZC may be used on this stream */
    unsigned zc_notifs; /* SEND_ZC notifications still to come */
    bool reserved;      /* wio_stream_reserve() without commit yet */

    /* lifetime */
    unsigned inflight; /* SQEs whose final CQE has not been seen */
    unsigned busy;     /* nesting depth of this stream's CQE handlers */
    bool closing;      /* wio_stream_close() called: no more callbacks */
    bool dead;         /* aborted or failed: drop output, send nothing more */
    bool failed;       /* on_close was due (error or EOF) */

    uint64_t bytes_sent;
    uint64_t bytes_received;
    uint64_t send_calls;
};

static void stream_recv_cb(struct wio_op *op, int res, unsigned flags);
static void timer_cb(struct wio_op *op, int res, unsigned flags);
static void stream_send_cb(struct wio_op *op, int res, unsigned flags);

/* ---- loop ---- */

static bool
env_is(const char *name, const char *const *values)
{
    const char *v = getenv(name);

    if (v == NULL)
        return false;
    for (; *values != NULL; values++)
        if (strcasecmp(v, *values) == 0)
            return true;
    return false;
}

/* Registers the provided-buffer ring, as liburing's examples/io_uring-udp.c does. */
static int
loop_setup_buf_ring(struct wio_loop *loop)
{
    struct io_uring_buf_reg reg;
    size_t ring_len = WIO_RECV_BUFS * sizeof(struct io_uring_buf);
    void *mem;
    int ret;

    loop->br_map_len = ring_len + (size_t)WIO_RECV_BUFS * WIO_RECV_BUF_SIZE;
    mem = mmap(NULL, loop->br_map_len, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (mem == MAP_FAILED) {
        loop->br_map_len = 0;
        return -errno;
    }
    loop->br = mem;
    loop->br_bufs = (unsigned char *)mem + ring_len;
    io_uring_buf_ring_init(loop->br);

    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (unsigned long)(uintptr_t)loop->br;
    reg.ring_entries = WIO_RECV_BUFS;
    reg.bgid = WIO_BGID;
    ret = io_uring_register_buf_ring(&loop->ring, &reg, 0);
    if (ret < 0) {
        if (munmap(mem, loop->br_map_len) != 0)
            log_warning(WIO_COMPONENT, "munmap of the buffer ring failed: %s", strerror(errno));
        loop->br = NULL;
        loop->br_bufs = NULL;
        loop->br_map_len = 0;
        return ret;
    }
    for (unsigned i = 0; i < WIO_RECV_BUFS; i++)
        io_uring_buf_ring_add(loop->br, loop->br_bufs + (size_t)i * WIO_RECV_BUF_SIZE,
                              WIO_RECV_BUF_SIZE, (unsigned short)i,
                              io_uring_buf_ring_mask(WIO_RECV_BUFS), (int)i);
    io_uring_buf_ring_advance(loop->br, WIO_RECV_BUFS);
    return 0;
}

static void
loop_recycle_buf(struct wio_loop *loop, unsigned bid)
{
    if (loop->br == NULL || bid >= WIO_RECV_BUFS)
        return;
    io_uring_buf_ring_add(loop->br, loop->br_bufs + (size_t)bid * WIO_RECV_BUF_SIZE,
                          WIO_RECV_BUF_SIZE, (unsigned short)bid,
                          io_uring_buf_ring_mask(WIO_RECV_BUFS), 0);
    io_uring_buf_ring_advance(loop->br, 1);
}

int
wio_loop_new(struct wio_loop **out, unsigned entries)
{
    static const unsigned setup_flags[] = {
        IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SINGLE_ISSUER,
        IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN,
        0,
    };
    static const char *const single[] = {"single", "singleshot", "single-shot", NULL};
    static const char *const on[] = {"1", "on", "yes", "true", NULL};
    struct io_uring_probe *probe;
    struct wio_loop *loop;
    unsigned flags = 0;
    int ret = -EINVAL;

    *out = NULL;
    if (entries == 0)
        entries = WIO_DEFAULT_ENTRIES;
    loop = calloc(1, sizeof(*loop));
    if (loop == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < sizeof(setup_flags) / sizeof(setup_flags[0]); i++) {
        flags = setup_flags[i];
        ret = io_uring_queue_init(entries, &loop->ring, flags);
        if (ret != -EINVAL)
            break;
    }
    if (ret < 0) {
        log_error(WIO_COMPONENT, "io_uring_queue_init(%u) failed: %s", entries, wire_strerror(ret));
        free(loop);
        return ret;
    }

    probe = io_uring_get_probe_ring(&loop->ring);
    if (probe != NULL) {
        loop->feat.send_zc = io_uring_opcode_supported(probe, IORING_OP_SEND_ZC);
        io_uring_free_probe(probe);
    }
    if (!env_is("WALMIRROR_URING_SEND_ZC", on))
        loop->feat.send_zc = false; /* opt-in: see the header */

    ret = loop_setup_buf_ring(loop);
    if (ret < 0)
        log_info(WIO_COMPONENT, "no provided-buffer ring (%s): single-shot recv, single accept",
                 wire_strerror(ret));
    loop->feat.accept_multishot = ret == 0;
    loop->feat.recv_multishot = ret == 0 && !env_is("WALMIRROR_URING_RECV", single);

    log_debug(WIO_COMPONENT,
              "loop ready: %u entries, setup flags 0x%x, recv %s, send_zc %s, accept %s", entries,
              flags, loop->feat.recv_multishot ? "multishot" : "single-shot",
              loop->feat.send_zc ? "on" : "off",
              loop->feat.accept_multishot ? "multishot" : "single-shot");
    *out = loop;
    return 0;
}

const struct wio_features *
wio_loop_features(const struct wio_loop *loop)
{
    return &loop->feat;
}

struct io_uring_sqe *
wio_sqe(struct wio_loop *loop, struct wio_op *op)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&loop->ring);

    if (sqe == NULL) {
        int ret = io_uring_submit(&loop->ring);

        if (ret < 0) {
            log_error(WIO_COMPONENT, "io_uring_submit with a full SQ failed: %s",
                      wire_strerror(ret));
            return NULL;
        }
        sqe = io_uring_get_sqe(&loop->ring);
        if (sqe == NULL)
            return NULL;
    }
    memset(sqe, 0, sizeof(*sqe));
    io_uring_sqe_set_data(sqe, op);
    return sqe;
}

static void stream_kick(struct wio_stream *s);

/* Issues a send for every stream whose accumulated output waits: the batching point. */
static void
loop_flush_streams(struct wio_loop *loop)
{
    struct wio_stream *s, *next;

    for (s = loop->streams; s != NULL; s = next) {
        next = s->next;
        stream_kick(s);
    }
}

int
wio_submit(struct wio_loop *loop)
{
    int ret;

    loop_flush_streams(loop);
    ret = io_uring_submit(&loop->ring);
    if (ret == -EINTR || ret == -EAGAIN || ret == -EBUSY)
        return 0;
    return ret;
}

int
wio_run_once(struct wio_loop *loop, int timeout_ms)
{
    struct io_uring_cqe *cqe;
    unsigned head, n = 0;
    int ret;

    loop_flush_streams(loop);
    if (timeout_ms == 0) {
        ret = io_uring_submit_and_get_events(&loop->ring);
    } else if (timeout_ms < 0) {
        ret = io_uring_submit_and_wait(&loop->ring, 1);
    } else {
        struct __kernel_timespec ts = {
            .tv_sec = timeout_ms / 1000,
            .tv_nsec = (long long)(timeout_ms % 1000) * 1000000,
        };

        ret = io_uring_submit_and_wait_timeout(&loop->ring, &cqe, 1, &ts, NULL);
    }
    /* -EBUSY: the CQ overflowed and the kernel wants it drained before taking more SQEs. */
    if (ret < 0 && ret != -EINTR && ret != -ETIME && ret != -EAGAIN && ret != -EBUSY) {
        log_error(WIO_COMPONENT, "io_uring submit/wait failed: %s", wire_strerror(ret));
        return ret;
    }

    io_uring_for_each_cqe(&loop->ring, head, cqe)
    {
        struct wio_op *op = io_uring_cqe_get_data(cqe);

        n++;
        if (op == NULL || op->cb == NULL)
            continue;
        if (loop->draining && op->cb != stream_recv_cb && op->cb != stream_send_cb &&
            op->cb != timer_cb)
            continue;
        op->cb(op, cqe->res, cqe->flags);
    }
    io_uring_cq_advance(&loop->ring, n);
    return (int)n;
}

static void stream_free(struct wio_stream *s);

void
wio_loop_free(struct wio_loop *loop)
{
    struct timespec start, now;

    if (loop == NULL)
        return;
    for (struct wio_stream *s = loop->streams, *next; s != NULL; s = next) {
        next = s->next; /* wio_stream_close() may free s, and only s */
        if (!s->closing)
            wio_stream_close(s, true);
    }
    /* Wait a little for the SQEs of the streams still in the kernel's hands. */
    loop->draining = true;
    clock_gettime(CLOCK_MONOTONIC, &start);
    while (loop->streams != NULL || loop->timers_inflight > 0) {
        long elapsed;

        if (wio_run_once(loop, 50) < 0)
            break;
        clock_gettime(CLOCK_MONOTONIC, &now);
        elapsed = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
        if (elapsed > WIO_DRAIN_MS) {
            log_warning(WIO_COMPONENT, "streams or timers still busy after %d ms; freeing anyway",
                        WIO_DRAIN_MS);
            break;
        }
    }
    io_uring_queue_exit(&loop->ring);
    while (loop->streams != NULL)
        stream_free(loop->streams);
    if (loop->br != NULL && munmap(loop->br, loop->br_map_len) != 0)
        log_warning(WIO_COMPONENT, "munmap of the buffer ring failed: %s", strerror(errno));
    free(loop);
}

/* ---- timers ---- */

static void
timer_cb(struct wio_op *op, int res, unsigned flags)
{
    struct wio_timer *t = container_of(op, struct wio_timer, op);

    (void)flags;
    t->pending--;
    t->loop->timers_inflight--;
    if (t->stale > 0) {
        /* A timeout removed by wio_timer_cancel() or superseded by a re-arm. */
        t->stale--;
        if (t->pending == 0 && !t->armed && t->release != NULL)
            t->release(t); /* may free t */
        return;
    }
    t->armed = false;
    if (t->loop->draining) {
        /* The loop is going away: no more callbacks, only the owner's release. */
        if (t->pending == 0 && t->release != NULL)
            t->release(t);
        return;
    }
    if (res == -ETIME) {
        t->fire(t); /* may re-arm or release t */
        return;
    }
    log_debug(WIO_COMPONENT, "timer completed with %s", wire_strerror(res));
}

int
wio_timer_arm(struct wio_loop *loop, struct wio_timer *t, uint64_t ms,
              void (*fire)(struct wio_timer *t))
{
    struct io_uring_sqe *sqe;

    if (fire == NULL)
        return -EINVAL;
    if (t->armed)
        wio_timer_cancel(t);
    sqe = wio_sqe(loop, &t->op);
    if (sqe == NULL)
        return -EBUSY;
    t->loop = loop;
    t->fire = fire;
    t->op.cb = timer_cb;
    /* The kernel reads ts when the SQE is submitted; t outlives that by contract. */
    t->ts.tv_sec = (long long)(ms / 1000);
    t->ts.tv_nsec = (long long)(ms % 1000) * 1000000;
    io_uring_prep_timeout(sqe, &t->ts, 0, 0);
    t->pending++;
    loop->timers_inflight++;
    t->armed = true;
    return 0;
}

void
wio_timer_cancel(struct wio_timer *t)
{
    struct io_uring_sqe *sqe;

    if (!t->armed)
        return;
    t->armed = false;
    /* Even if no SQE is left for the removal, the timeout's completion is now ignored. */
    t->stale++;
    sqe = wio_sqe(t->loop, NULL);
    if (sqe != NULL)
        io_uring_prep_timeout_remove(sqe, (__u64)(uintptr_t)&t->op, 0);
}

bool
wio_timer_busy(const struct wio_timer *t)
{
    return t->pending > 0;
}

/* ---- streams ---- */

static void
stream_free(struct wio_stream *s)
{
    struct wio_loop *loop = s->loop;

    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        loop->streams = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    if (s->fd >= 0 && close(s->fd) != 0)
        log_debug(WIO_COMPONENT, "close(%d) failed: %s", s->fd, strerror(errno));
    free(s->rbuf);
    free(s->held.p);
    free(s->out[0].p);
    free(s->out[1].p);
    free(s);
}

/* Frees a closed stream once nothing of it is in flight and nothing is left to send. */
static void
stream_maybe_free(struct wio_stream *s)
{
    if (!s->closing || s->busy > 0)
        return;
    if (s->dead && s->fd >= 0 && s->inflight > 0 && s->inflight == s->zc_notifs) {
        /*
         * Only SEND_ZC notifications are outstanding: no SQE uses the fd any more, so close it
         * now.  That releases the socket, whose queued skbs hold our pages; waiting for the
         * notifications with the socket open could take forever (a loopback peer that never
         * reads keeps them in its receive queue).
         */
        struct linger lg = {.l_onoff = 1, .l_linger = 0};

        /* Reset rather than let an orphaned socket keep sending from our pages. */
        if (setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) != 0)
            log_debug(WIO_COMPONENT, "SO_LINGER on fd %d: %s", s->fd, strerror(errno));
        if (close(s->fd) != 0)
            log_debug(WIO_COMPONENT, "close(%d) failed: %s", s->fd, strerror(errno));
        s->fd = -1;
    }
    if (s->inflight > 0)
        return;
    if (!s->dead && (s->sending || s->out[s->acc].len > 0))
        return;
    stream_free(s);
}

static int
stream_arm_recv(struct wio_stream *s)
{
    struct io_uring_sqe *sqe = wio_sqe(s->loop, &s->recv_op);

    if (sqe == NULL)
        return -EBUSY;
    if (s->multishot) {
        io_uring_prep_recv_multishot(sqe, s->fd, NULL, 0, 0);
        sqe->flags |= IOSQE_BUFFER_SELECT;
        sqe->buf_group = WIO_BGID;
    } else {
        if (s->rbuf == NULL) {
            s->rbuf = malloc(WIO_RECV_BUF_SIZE);
            if (s->rbuf == NULL) {
                /* The SQE is already taken: turn it into a no-op whose completion is ignored. */
                io_uring_prep_nop(sqe);
                io_uring_sqe_set_data(sqe, NULL);
                return -ENOMEM;
            }
        }
        io_uring_prep_recv(sqe, s->fd, s->rbuf, WIO_RECV_BUF_SIZE, 0);
    }
    s->recv_armed = true;
    s->inflight++;
    return 0;
}

/* Queues the cancellation of op's SQE; its completion (-ECANCELED) still reaches op->cb. */
static void
loop_cancel(struct wio_loop *loop, struct wio_op *op)
{
    struct io_uring_sqe *sqe = wio_sqe(loop, NULL);

    if (sqe != NULL)
        io_uring_prep_cancel(sqe, op, 0);
}

/* The stream failed: drop output, stop receiving and tell the owner (once, unless closed). */
static void
stream_fail(struct wio_stream *s, int err)
{
    if (s->failed)
        return;
    s->failed = true;
    s->dead = true;
    s->out[s->acc].len = 0;
    if (s->recv_armed)
        loop_cancel(s->loop, &s->recv_op);
    if (s->closing)
        return;
    log_debug(WIO_COMPONENT, "stream fd %d: %s", s->fd, wire_strerror(err));
    s->ops->on_close(s->ctx, err);
}

static int
stream_issue_send(struct wio_stream *s)
{
    struct wio_buf *b = &s->out[s->acc ^ 1];
    size_t len = b->len - s->fly_off;
    struct io_uring_sqe *sqe;

    if (len > WIO_SEND_MAX)
        len = WIO_SEND_MAX;
    sqe = wio_sqe(s->loop, &s->send_op);
    if (sqe == NULL)
        return -EBUSY;
    s->last_zc = s->zc_ok && len >= WIO_SEND_ZC_MIN;
    if (s->last_zc)
        io_uring_prep_send_zc(sqe, s->fd, b->p + s->fly_off, len, MSG_NOSIGNAL, 0);
    else
        io_uring_prep_send(sqe, s->fd, b->p + s->fly_off, len, MSG_NOSIGNAL);
    s->send_armed = true;
    s->inflight++;
    s->send_calls++;
    return 0;
}

/*
 * Starts sending the accumulated output if no send is in flight.  Calls no callback and frees
 * nothing (loop_flush_streams relies on that): without an SQE it leaves the output queued for
 * the next turn, when wio_run_once() will have reported the ring's failure.
 */
static void
stream_kick(struct wio_stream *s)
{
    if (s->sending || s->dead || s->reserved || s->out[s->acc].len == 0)
        return;
    s->acc ^= 1;
    s->fly_off = 0;
    s->sending = true;
    if (stream_issue_send(s) < 0) {
        s->acc ^= 1;
        s->sending = false;
    }
}

/* Keeps bytes received while paused, for stream_resume_cb. */
static int
stream_hold(struct wio_stream *s, const void *data, size_t len)
{
    struct wio_buf *b = &s->held;

    if (len > b->cap - b->len) {
        size_t cap = b->cap < WIO_RECV_BUF_SIZE ? WIO_RECV_BUF_SIZE : b->cap;
        unsigned char *p;

        while (cap < b->len + len)
            cap *= 2;
        p = realloc(b->p, cap);
        if (p == NULL)
            return -ENOMEM;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, len);
    b->len += len;
    return 0;
}

/*
 * After a resume, from the loop (not from the owner's call): the held bytes go to on_data in
 * pieces of at most a receive buffer, each only while the stream is not paused again; then the
 * receive is armed again.
 */
static void
stream_resume_cb(struct wio_op *op, int res, unsigned flags)
{
    struct wio_stream *s = container_of(op, struct wio_stream, resume_op);

    (void)res;
    (void)flags;
    s->busy++;
    s->inflight--;
    s->resume_queued = false;
    if (!s->recv_paused && !s->closing && !s->failed && s->held.len == 0)
        s->ops->on_data(s->ctx, NULL, 0); /* what the owner kept while paused */
    while (!s->recv_paused && !s->closing && !s->failed && s->held_off < s->held.len) {
        size_t n = s->held.len - s->held_off;

        if (n > WIO_RECV_BUF_SIZE)
            n = WIO_RECV_BUF_SIZE;
        s->held_off += n;
        s->ops->on_data(s->ctx, s->held.p + s->held_off - n, n);
    }
    if (s->held_off == s->held.len || s->closing || s->failed) {
        free(s->held.p);
        memset(&s->held, 0, sizeof(s->held));
        s->held_off = 0;
    }
    if (!s->recv_paused && !s->recv_armed && !s->closing && !s->failed && stream_arm_recv(s) < 0)
        stream_fail(s, -EBUSY);
    s->busy--;
    stream_maybe_free(s);
}

static void
stream_recv_cb(struct wio_op *op, int res, unsigned flags)
{
    struct wio_stream *s = container_of(op, struct wio_stream, recv_op);
    bool has_buf = (flags & IORING_CQE_F_BUFFER) != 0;
    unsigned bid = flags >> IORING_CQE_BUFFER_SHIFT;
    int ret;

    s->busy++;
    if (!(flags & IORING_CQE_F_MORE)) {
        s->recv_armed = false;
        s->inflight--;
    }
    if (res > 0) {
        const unsigned char *data =
            has_buf ? s->loop->br_bufs + (size_t)bid * WIO_RECV_BUF_SIZE : s->rbuf;

        WIO_KERNEL_WROTE(data, (size_t)res);
        s->bytes_received += (uint64_t)res;
        if (!s->closing && !s->failed && (s->recv_paused || s->held.len > 0)) {
            if (stream_hold(s, data, (size_t)res) < 0)
                stream_fail(s, -ENOMEM);
        } else if (!s->closing && !s->failed) {
            s->ops->on_data(s->ctx, data, (size_t)res);
        }
    } else if (res == 0) {
        stream_fail(s, WIRE_ECLOSED);
    } else if (res == -ENOBUFS) {
        log_debug(WIO_COMPONENT, "stream fd %d: provided buffers exhausted, re-arming", s->fd);
    } else if (res == -EINVAL && s->multishot) {
        log_info(WIO_COMPONENT, "stream fd %d: multishot recv refused, using single-shot recv",
                 s->fd);
        s->multishot = false;
    } else if (res == -EINTR || res == -EAGAIN) {
        /* transient: re-arm below */
    } else if (!(res == -ECANCELED && (s->closing || s->failed || s->recv_paused))) {
        stream_fail(s, res);
    }
    if (has_buf)
        loop_recycle_buf(s->loop, bid);
    if (!s->recv_armed && !s->recv_paused && !s->closing && !s->failed) {
        ret = stream_arm_recv(s);
        if (ret < 0)
            stream_fail(s, ret);
    }
    s->busy--;
    stream_maybe_free(s);
}

static void
stream_send_cb(struct wio_op *op, int res, unsigned flags)
{
    struct wio_stream *s = container_of(op, struct wio_stream, send_op);
    struct wio_buf *fly = &s->out[s->acc ^ 1];
    int ret;

    s->busy++;
    if (flags & IORING_CQE_F_NOTIF) {
        /* SEND_ZC: the kernel no longer references the buffer of one send. */
        s->zc_notifs--;
        s->inflight--;
    } else {
        s->send_armed = false;
        if (flags & IORING_CQE_F_MORE)
            s->zc_notifs++; /* the notification will end this SQE */
        else
            s->inflight--;
        if (res == 0 && s->fly_off < fly->len) {
            stream_fail(s, -EPIPE); /* no progress: never spin on resubmits */
            s->dead = true;
        } else if (res >= 0) {
            s->bytes_sent += (uint64_t)res;
            s->fly_off += (size_t)res;
        } else if (s->last_zc &&
                   (res == -EOPNOTSUPP || res == -EINVAL || res == -ENOMEM || res == -ENOBUFS)) {
            log_info(WIO_COMPONENT, "stream fd %d: SEND_ZC refused (%s), using plain send", s->fd,
                     wire_strerror(res));
            s->zc_ok = false;
        } else if (res != -EINTR && res != -EAGAIN) {
            if (!(res == -ECANCELED && s->closing))
                stream_fail(s, res);
            s->dead = true;
        }
        if (!s->dead && s->fly_off < fly->len) {
            /* Short send (or a retry): resubmit the remainder. */
            ret = stream_issue_send(s);
            if (ret < 0) {
                stream_fail(s, ret);
                s->dead = true;
            }
        }
    }
    if (s->sending && !s->send_armed && s->zc_notifs == 0) {
        s->sending = false;
        fly->len = 0;
        s->fly_off = 0;
        if (fly->cap > WIO_BUF_KEEP) {
            free(fly->p);
            fly->p = NULL;
            fly->cap = 0;
        }
        if (s->out[s->acc].len > 0)
            stream_kick(s);
        else if (!s->closing && !s->failed && s->ops->on_drained != NULL)
            s->ops->on_drained(s->ctx);
    }
    s->busy--;
    stream_maybe_free(s);
}

int
wio_stream_new(struct wio_stream **out, struct wio_loop *loop, int fd,
               const struct wio_stream_ops *ops, void *ctx)
{
    struct wio_stream *s;
    int ret;

    *out = NULL;
    if (fd < 0 || ops == NULL || ops->on_data == NULL || ops->on_close == NULL)
        return -EINVAL;
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return -ENOMEM;
    s->loop = loop;
    s->fd = fd;
    s->ops = ops;
    s->ctx = ctx;
    s->recv_op.cb = stream_recv_cb;
    s->resume_op.cb = stream_resume_cb;
    s->send_op.cb = stream_send_cb;
    s->multishot = loop->feat.recv_multishot;
    s->zc_ok = loop->feat.send_zc;
    ret = stream_arm_recv(s);
    if (ret < 0) {
        free(s->rbuf);
        free(s);
        return ret;
    }
    s->next = loop->streams;
    if (s->next != NULL)
        s->next->prev = s;
    loop->streams = s;
    *out = s;
    return 0;
}

/* Makes room for need more bytes in the accumulating buffer. */
static int
stream_grow(struct wio_stream *s, size_t need)
{
    struct wio_buf *b = &s->out[s->acc];
    size_t cap;
    unsigned char *p;

    if (need <= b->cap - b->len)
        return 0;
    if (need > SIZE_MAX / 2 - b->len)
        return -ENOMEM;
    cap = b->cap < 64 * 1024 ? 64 * 1024 : b->cap;
    while (cap < b->len + need)
        cap *= 2;
    p = realloc(b->p, cap);
    if (p == NULL)
        return -ENOMEM;
    b->p = p;
    b->cap = cap;
    return 0;
}

void
wio_stream_pause_recv(struct wio_stream *s, bool pause)
{
    if (s->recv_paused == pause || s->closing || s->failed)
        return;
    s->recv_paused = pause;
    if (pause) {
        if (s->recv_armed) {
            int ret;

            /* Submitted at once: a multishot receive goes on posting data until the kernel
             * sees the cancellation, and this may be in the middle of a turn's CQEs. */
            loop_cancel(s->loop, &s->recv_op); /* its final CQE is not re-armed */
            ret = io_uring_submit(&s->loop->ring);
            if (ret < 0)
                log_warning(WIO_COMPONENT, "stream fd %d: submitting the pause failed: %s", s->fd,
                            wire_strerror(ret));
        }
    } else {
        /* From the loop, not from the owner's call: the owner's kept input (on_data with no
         * bytes) or the held bytes first; the receive is armed after them. */
        struct io_uring_sqe *sqe = s->resume_queued ? NULL : wio_sqe(s->loop, &s->resume_op);

        if (sqe != NULL) {
            io_uring_prep_nop(sqe);
            s->resume_queued = true;
            s->inflight++;
        } else if (!s->resume_queued) {
            stream_fail(s, -EBUSY);
        }
    }
}

int
wio_stream_write(struct wio_stream *s, const void *buf, size_t len)
{
    struct wio_buf *b;
    int ret;

    if (s->dead || s->closing)
        return -EPIPE;
    if (len == 0)
        return 0;
    ret = stream_grow(s, len);
    if (ret < 0)
        return ret;
    b = &s->out[s->acc];
    memcpy(b->p + b->len, buf, len);
    b->len += len;
    return 0;
}

void *
wio_stream_reserve(struct wio_stream *s, size_t len)
{
    struct wio_buf *b;
    int ret;

    if (s->dead || s->closing) {
        errno = EPIPE;
        return NULL;
    }
    ret = stream_grow(s, len == 0 ? 1 : len);
    if (ret < 0) {
        errno = -ret;
        return NULL;
    }
    b = &s->out[s->acc];
    s->reserved = true;
    return b->p + b->len;
}

void
wio_stream_commit(struct wio_stream *s, size_t len)
{
    struct wio_buf *b = &s->out[s->acc];

    s->reserved = false;
    if (s->dead)
        return;
    if (len > b->cap - b->len)
        len = b->cap - b->len; /* a caller bug; never run past the buffer */
    b->len += len;
}

size_t
wio_stream_pending(const struct wio_stream *s)
{
    size_t n = s->out[s->acc].len;

    if (s->sending)
        n += s->out[s->acc ^ 1].len - s->fly_off;
    return n;
}

void
wio_stream_close(struct wio_stream *s, bool abort)
{
    if (s == NULL || s->closing)
        return;
    s->closing = true;
    s->reserved = false;
    if (s->recv_armed)
        loop_cancel(s->loop, &s->recv_op);
    if (abort || s->failed) {
        s->dead = true;
        s->out[s->acc].len = 0;
        if (s->send_armed)
            loop_cancel(s->loop, &s->send_op);
        /* Makes any SQE of this socket that the cancellation misses complete promptly. */
        if (abort && shutdown(s->fd, SHUT_RDWR) != 0 && errno != ENOTCONN)
            log_debug(WIO_COMPONENT, "shutdown(%d) failed: %s", s->fd, strerror(errno));
    }
    stream_maybe_free(s);
}

uint64_t
wio_stream_bytes_sent(const struct wio_stream *s)
{
    return s->bytes_sent;
}

uint64_t
wio_stream_bytes_received(const struct wio_stream *s)
{
    return s->bytes_received;
}

uint64_t
wio_stream_send_calls(const struct wio_stream *s)
{
    return s->send_calls;
}

/* ---- TCP ---- */

static int
set_nodelay(int fd)
{
    int one = 1;

    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0)
        return -errno;
    return 0;
}

static socklen_t
sockaddr_len(const struct sockaddr_storage *ss)
{
    return ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

int
wio_parse_hostport(const char *hostport, struct sockaddr_storage *ss, socklen_t *sslen)
{
    struct addrinfo hints, *res = NULL;
    char host[256];
    const char *colon, *port_str;
    size_t hlen;
    char *end;
    long port;
    int ret;

    if (hostport == NULL)
        return -EINVAL;
    if (hostport[0] == '[') {
        const char *close_br = strchr(hostport, ']');

        if (close_br == NULL || close_br[1] != ':')
            return -EINVAL;
        hlen = (size_t)(close_br - hostport - 1);
        memcpy(host, hostport + 1, hlen < sizeof(host) ? hlen : 0);
        colon = close_br + 1;
    } else {
        colon = strrchr(hostport, ':');
        if (colon == NULL)
            return -EINVAL;
        hlen = (size_t)(colon - hostport);
        if (memchr(hostport, ':', hlen) != NULL)
            return -EINVAL; /* a bare IPv6 address needs brackets */
        memcpy(host, hostport, hlen < sizeof(host) ? hlen : 0);
    }
    if (hlen == 0 || hlen >= sizeof(host))
        return -EINVAL;
    host[hlen] = '\0';
    port_str = colon + 1;
    if (*port_str < '0' || *port_str > '9')
        return -EINVAL;
    errno = 0;
    port = strtol(port_str, &end, 10);
    if (errno != 0 || *end != '\0' || port < 0 || port > 65535)
        return -EINVAL;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    ret = getaddrinfo(host, NULL, &hints, &res);
    if (ret != 0) {
        if (ret == EAI_SYSTEM)
            return errno != 0 ? -errno : -EIO;
        if (ret == EAI_MEMORY)
            return -ENOMEM;
        return ret == EAI_AGAIN ? -EAGAIN : -EHOSTUNREACH;
    }
    if (res == NULL || res->ai_addrlen > sizeof(*ss)) {
        freeaddrinfo(res);
        return -EHOSTUNREACH;
    }
    memset(ss, 0, sizeof(*ss));
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *sslen = res->ai_addrlen;
    freeaddrinfo(res);
    if (ss->ss_family == AF_INET)
        ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
    else if (ss->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
    else
        return -EAFNOSUPPORT;
    return 0;
}

int
wio_listen_tcp(const char *hostport, int backlog, int *bound_port)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int fd, one = 1, ret;

    ret = wio_parse_hostport(hostport, &ss, &len);
    if (ret < 0)
        return ret;
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
    if (fd < 0)
        return -errno;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0)
        goto fail;
    if (bind(fd, (struct sockaddr *)&ss, len) != 0)
        goto fail;
    if (listen(fd, backlog > 0 ? backlog : SOMAXCONN) != 0)
        goto fail;
    len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
        goto fail;
    if (bound_port != NULL)
        *bound_port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                     : ((struct sockaddr_in *)&ss)->sin_port);
    log_debug(WIO_COMPONENT, "listening on %s (fd %d)", hostport, fd);
    return fd;
fail:
    ret = -errno;
    close(fd);
    return ret;
}

static int
accept_arm(struct wio_acceptor *a)
{
    struct io_uring_sqe *sqe = wio_sqe(a->loop, &a->op);

    if (sqe == NULL)
        return -EBUSY;
    if (a->multishot)
        io_uring_prep_multishot_accept(sqe, a->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    else
        io_uring_prep_accept(sqe, a->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    a->armed = true;
    return 0;
}

static void
accept_cb(struct wio_op *op, int res, unsigned flags)
{
    struct wio_acceptor *a = container_of(op, struct wio_acceptor, op);
    int ret;

    if (!(flags & IORING_CQE_F_MORE))
        a->armed = false;
    if (res >= 0 && !a->active) {
        if (close(res) != 0)
            log_debug(WIO_COMPONENT, "close(%d) failed: %s", res, strerror(errno));
        return;
    }
    if (res >= 0) {
        ret = set_nodelay(res);
        if (ret < 0)
            log_debug(WIO_COMPONENT, "TCP_NODELAY on fd %d: %s", res, wire_strerror(ret));
    } else if (!a->active) {
        return; /* -ECANCELED after wio_accept_stop() */
    } else if (res == -EINVAL && a->multishot) {
        log_info(WIO_COMPONENT, "multishot accept refused, using single accept");
        a->multishot = false;
    } else if (res != -ECONNABORTED && res != -EINTR && res != -EAGAIN) {
        /* Report and stop; the owner may start again. */
        a->active = false;
        if (a->armed)
            loop_cancel(a->loop, &a->op);
        a->on_accept(a, res);
        return;
    }
    /* Re-arm before the callback: afterwards a may be gone (it is not busy while armed). */
    if (!a->armed) {
        ret = accept_arm(a);
        if (ret < 0) {
            a->active = false;
            if (res >= 0 && close(res) != 0)
                log_debug(WIO_COMPONENT, "close(%d) failed: %s", res, strerror(errno));
            a->on_accept(a, ret);
            return;
        }
    }
    if (res >= 0)
        a->on_accept(a, res);
}

int
wio_accept_start(struct wio_loop *loop, struct wio_acceptor *a, int listen_fd,
                 void (*on_accept)(struct wio_acceptor *a, int fd))
{
    int ret;

    if (listen_fd < 0 || on_accept == NULL)
        return -EINVAL;
    if (a->active || a->armed)
        return -EBUSY;
    a->op.cb = accept_cb;
    a->loop = loop;
    a->listen_fd = listen_fd;
    a->on_accept = on_accept;
    a->multishot = loop->feat.accept_multishot;
    ret = accept_arm(a);
    if (ret < 0)
        return ret;
    a->active = true;
    return 0;
}

void
wio_accept_stop(struct wio_acceptor *a)
{
    if (!a->active)
        return;
    a->active = false;
    if (a->armed)
        loop_cancel(a->loop, &a->op);
}

bool
wio_accept_busy(const struct wio_acceptor *a)
{
    return a->armed;
}

static void
connect_cb(struct wio_op *op, int res, unsigned flags)
{
    struct wio_connector *c = container_of(op, struct wio_connector, op);
    int fd = c->fd;

    (void)flags;
    c->fd = -1;
    if (res < 0) {
        if (close(fd) != 0)
            log_debug(WIO_COMPONENT, "close(%d) failed: %s", fd, strerror(errno));
        c->on_connect(c, res);
        return;
    }
    c->on_connect(c, fd);
}

int
wio_connect_start(struct wio_loop *loop, struct wio_connector *c, const char *hostport,
                  void (*on_connect)(struct wio_connector *c, int fd))
{
    struct io_uring_sqe *sqe;
    socklen_t len;
    int fd, ret;

    if (on_connect == NULL)
        return -EINVAL;
    ret = wio_parse_hostport(hostport, &c->addr, &len);
    if (ret < 0)
        return ret;
    fd = socket(c->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP);
    if (fd < 0)
        return -errno;
    ret = set_nodelay(fd);
    if (ret < 0) {
        close(fd);
        return ret;
    }
    sqe = wio_sqe(loop, &c->op);
    if (sqe == NULL) {
        close(fd);
        return -EBUSY;
    }
    /* The kernel copies the address when the SQE is submitted; c outlives that by contract. */
    io_uring_prep_connect(sqe, fd, (struct sockaddr *)&c->addr, sockaddr_len(&c->addr));
    c->op.cb = connect_cb;
    c->fd = fd;
    c->on_connect = on_connect;
    return 0;
}
