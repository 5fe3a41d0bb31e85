/*
 * test_wio.c - the io_uring loop and socket transport over real sockets on 127.0.0.1: accept and
 * connect through the ring, stream integrity in both receive modes with SEND_ZC on and off,
 * send batching, peer close and refused connects, timers, and closing streams with operations
 * in flight or from inside their own callbacks.  Exits 77 where io_uring is unavailable.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "testutil.h"
#include "wio.h"

#define container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

#define MIB (1024 * 1024)

static double
now_ms(void)
{
    struct timespec ts;

    ck_assert(clock_gettime(CLOCK_MONOTONIC, &ts) == 0);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Runs the loop until cond holds; fails the test after max_ms. */
#define RUN_UNTIL(loop, cond, max_ms)                                                              \
    do {                                                                                           \
        double deadline_ = now_ms() + (max_ms);                                                    \
        while (!(cond)) {                                                                          \
            ck_assert_int_ge(wio_run_once((loop), 50), 0);                                         \
            ck_assert_msg(now_ms() < deadline_, "timed out waiting for %s", #cond);                \
        }                                                                                          \
    } while (0)

/* Runs the loop for about ms milliseconds. */
static void
run_for(struct wio_loop *loop, int ms)
{
    double end = now_ms() + ms;

    while (now_ms() < end)
        ck_assert_int_ge(wio_run_once(loop, 10), 0);
}

static struct wio_loop *
loop_new(void)
{
    struct wio_loop *loop;
    int ret = wio_loop_new(&loop, 256);

    ck_assert_msg(ret == 0, "wio_loop_new: %s", wire_strerror(ret));
    return loop;
}

/* Selects the receive path of the loops created next: bit 0 of mode = single-shot recv. */
static void
set_recv_mode(int mode)
{
    ck_assert_int_eq(setenv("WALMIRROR_URING_RECV", (mode & 1) ? "single" : "auto", 1), 0);
}

static bool
fd_is_closed(int fd)
{
    return fcntl(fd, F_GETFD) == -1 && errno == EBADF;
}

/* The byte at offset i of the test stream: pseudo-random, and checkable anywhere. */
static uint8_t
pat(uint64_t i)
{
    uint64_t x = (i >> 3) + 0x9E3779B97F4A7C15ull;

    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    x ^= x >> 31;
    return (uint8_t)(x >> ((i & 7) * 8));
}

static void
pat_fill(uint8_t *p, uint64_t off, size_t len)
{
    for (size_t i = 0; i < len; i++)
        p[i] = pat(off + i);
}

static uint64_t
xorshift(uint64_t *s)
{
    uint64_t x = *s;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* ---- a connected pair through the ring ---- */

struct pair {
    struct wio_acceptor acc;
    struct wio_connector con;
    int afd, cfd;
    bool accepted, connected;
};

static void
pair_on_accept(struct wio_acceptor *a, int fd)
{
    struct pair *p = container_of(a, struct pair, acc);

    ck_assert_msg(fd >= 0, "accept: %s", wire_strerror(fd));
    ck_assert(!p->accepted);
    p->afd = fd;
    p->accepted = true;
}

static void
pair_on_connect(struct wio_connector *c, int fd)
{
    struct pair *p = container_of(c, struct pair, con);

    ck_assert_msg(fd >= 0, "connect: %s", wire_strerror(fd));
    p->cfd = fd;
    p->connected = true;
}

/* Connects two TCP sockets on 127.0.0.1 through the ring: *a accepted, *b connected. */
static void
make_pair(struct wio_loop *loop, int *a, int *b)
{
    struct pair p;
    char addr[64];
    int lfd, port = -1;

    memset(&p, 0, sizeof(p));
    lfd = wio_listen_tcp("127.0.0.1:0", 16, &port);
    ck_assert_msg(lfd >= 0, "listen: %s", wire_strerror(lfd));
    ck_assert_int_gt(port, 0);
    ck_assert_int_eq(wio_accept_start(loop, &p.acc, lfd, pair_on_accept), 0);
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    ck_assert_int_eq(wio_connect_start(loop, &p.con, addr, pair_on_connect), 0);
    RUN_UNTIL(loop, p.accepted && p.connected, 5000);
    wio_accept_stop(&p.acc);
    RUN_UNTIL(loop, !wio_accept_busy(&p.acc), 5000);
    ck_assert_int_eq(close(lfd), 0);
    *a = p.afd;
    *b = p.cfd;
}

/* ---- stream endpoints ---- */

struct ep {
    struct wio_stream *s;
    uint64_t rx;
    uint64_t bad_at; /* first offset that did not match pat(), or UINT64_MAX */
    bool verify;
    unsigned data_calls;
    unsigned closed;
    int close_res;
    unsigned drained;
    bool close_in_data;  /* closes its own stream from on_data */
    bool close_in_close; /* closes its own stream (abort) from on_close */
    bool is_closed;      /* wio_stream_close() was called */
    unsigned calls_after_close;
    char head[64];
    size_t head_len;
    uint64_t pause_at; /* pauses its own receive once this much came (0: never) */
    bool paused;
    unsigned empty_calls; /* on_data with no bytes: after a resume */
};

static void
ep_data(void *ctx, const void *data, size_t len)
{
    struct ep *e = ctx;
    const uint8_t *d = data;

    if (len == 0) {
        ck_assert_msg(e->pause_at != 0, "on_data without bytes on a stream never paused");
        e->empty_calls++;
        return;
    }
    if (e->is_closed)
        e->calls_after_close++;
    e->data_calls++;
    if (e->verify && e->bad_at == UINT64_MAX) {
        for (size_t i = 0; i < len; i++)
            if (d[i] != pat(e->rx + i)) {
                e->bad_at = e->rx + i;
                break;
            }
    }
    if (e->head_len < sizeof(e->head)) {
        size_t n = sizeof(e->head) - e->head_len < len ? sizeof(e->head) - e->head_len : len;
        memcpy(e->head + e->head_len, data, n);
        e->head_len += n;
    }
    e->rx += len;
    if (e->pause_at != 0 && !e->paused && e->rx >= e->pause_at) {
        e->paused = true;
        wio_stream_pause_recv(e->s, true);
    }
    if (e->close_in_data && !e->is_closed) {
        e->is_closed = true;
        wio_stream_close(e->s, false);
    }
}

static void
ep_close(void *ctx, int res)
{
    struct ep *e = ctx;

    if (e->is_closed)
        e->calls_after_close++;
    e->closed++;
    e->close_res = res;
    if (e->close_in_close && !e->is_closed) {
        e->is_closed = true;
        wio_stream_close(e->s, true);
    }
}

static void
ep_drained(void *ctx)
{
    struct ep *e = ctx;

    if (e->is_closed)
        e->calls_after_close++;
    e->drained++;
}

static const struct wio_stream_ops ep_ops = {
    .on_data = ep_data,
    .on_close = ep_close,
    .on_drained = ep_drained,
};

static void
ep_init(struct ep *e, struct wio_loop *loop, int fd, bool verify)
{
    memset(e, 0, sizeof(*e));
    e->bad_at = UINT64_MAX;
    e->verify = verify;
    ck_assert_int_eq(wio_stream_new(&e->s, loop, fd, &ep_ops, e), 0);
    ck_assert_ptr_nonnull(e->s);
}

static void
ep_close_stream(struct ep *e, bool abort)
{
    ck_assert(!e->is_closed);
    e->is_closed = true;
    wio_stream_close(e->s, abort);
}

/* Queues [off, off + len) of the pattern through wio_stream_write. */
static void
write_pat(struct wio_stream *s, uint64_t off, size_t len)
{
    uint8_t *buf = malloc(len);

    ck_assert_ptr_nonnull(buf);
    pat_fill(buf, off, len);
    ck_assert_int_eq(wio_stream_write(s, buf, len), 0);
    free(buf);
}

/* ---- 1. accept and connect ---- */

START_TEST(test_accept_connect)
{
    struct wio_loop *loop = loop_new();
    const struct wio_features *f = wio_loop_features(loop);
    struct sockaddr_in peer, local;
    socklen_t len = sizeof(peer);
    int a, b, port = -1, lfd, one = 0;

    fprintf(stderr, "features: recv_multishot=%d send_zc=%d accept_multishot=%d\n",
            f->recv_multishot, f->send_zc, f->accept_multishot);

    /* A listener on port 0 reports the port it got. */
    lfd = wio_listen_tcp("127.0.0.1:0", 4, &port);
    ck_assert_int_ge(lfd, 0);
    ck_assert_int_gt(port, 0);
    ck_assert_int_eq(getsockname(lfd, (struct sockaddr *)&local, &len), 0);
    ck_assert_int_eq(ntohs(local.sin_port), port);
    ck_assert_int_ne(fcntl(lfd, F_GETFD) & FD_CLOEXEC, 0);
    ck_assert_int_ne(fcntl(lfd, F_GETFL) & O_NONBLOCK, 0);
    ck_assert_int_eq(close(lfd), 0);

    make_pair(loop, &a, &b);
    /* b is connected to the socket a was accepted from. */
    len = sizeof(peer);
    ck_assert_int_eq(getpeername(b, (struct sockaddr *)&peer, &len), 0);
    len = sizeof(local);
    ck_assert_int_eq(getsockname(a, (struct sockaddr *)&local, &len), 0);
    ck_assert_int_eq(peer.sin_port, local.sin_port);
    len = sizeof(one);
    ck_assert_int_eq(getsockopt(a, IPPROTO_TCP, TCP_NODELAY, &one, &len), 0);
    ck_assert_int_ne(one, 0);
    one = 0;
    len = sizeof(one);
    ck_assert_int_eq(getsockopt(b, IPPROTO_TCP, TCP_NODELAY, &one, &len), 0);
    ck_assert_int_ne(one, 0);
    ck_assert_int_ne(fcntl(a, F_GETFD) & FD_CLOEXEC, 0);
    ck_assert_int_ne(fcntl(b, F_GETFD) & FD_CLOEXEC, 0);
    ck_assert_int_eq(close(a), 0);
    ck_assert_int_eq(close(b), 0);
    wio_loop_free(loop);
}
END_TEST

struct multi_accept {
    struct wio_acceptor acc;
    int fds[3];
    int n;
};

static void
multi_on_accept(struct wio_acceptor *a, int fd)
{
    struct multi_accept *m = container_of(a, struct multi_accept, acc);

    ck_assert_int_ge(fd, 0);
    ck_assert_int_lt(m->n, 3);
    m->fds[m->n++] = fd;
}

struct conn_result {
    struct wio_connector con;
    int fd;
    bool done;
};

static void
conn_on_connect(struct wio_connector *c, int fd)
{
    struct conn_result *r = container_of(c, struct conn_result, con);

    r->fd = fd;
    r->done = true;
}

START_TEST(test_accept_many)
{
    struct wio_loop *loop = loop_new();
    struct multi_accept m;
    struct conn_result c[3];
    char addr[64];
    int port, lfd;

    memset(&m, 0, sizeof(m));
    memset(c, 0, sizeof(c));
    lfd = wio_listen_tcp("127.0.0.1:0", 8, &port);
    ck_assert_int_ge(lfd, 0);
    ck_assert_int_eq(wio_accept_start(loop, &m.acc, lfd, multi_on_accept), 0);
    ck_assert_int_eq(wio_accept_start(loop, &m.acc, lfd, multi_on_accept), -EBUSY);
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(wio_connect_start(loop, &c[i].con, addr, conn_on_connect), 0);
    RUN_UNTIL(loop, m.n == 3 && c[0].done && c[1].done && c[2].done, 5000);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_ge(c[i].fd, 0);
        ck_assert_int_eq(close(c[i].fd), 0);
        ck_assert_int_eq(close(m.fds[i]), 0);
    }
    wio_accept_stop(&m.acc);
    RUN_UNTIL(loop, !wio_accept_busy(&m.acc), 5000);
    /* After stop, a connection waits in the backlog and is not reported. */
    memset(&c[0], 0, sizeof(c[0]));
    ck_assert_int_eq(wio_connect_start(loop, &c[0].con, addr, conn_on_connect), 0);
    RUN_UNTIL(loop, c[0].done, 5000);
    ck_assert_int_ge(c[0].fd, 0);
    run_for(loop, 100);
    ck_assert_int_eq(m.n, 3);
    ck_assert_int_eq(close(c[0].fd), 0);
    ck_assert_int_eq(close(lfd), 0);
    wio_loop_free(loop);
}
END_TEST

START_TEST(test_parse_hostport)
{
    struct sockaddr_storage ss;
    socklen_t len;

    ck_assert_int_eq(wio_parse_hostport("127.0.0.1:5432", &ss, &len), 0);
    ck_assert_int_eq(ss.ss_family, AF_INET);
    ck_assert_int_eq(len, sizeof(struct sockaddr_in));
    ck_assert_int_eq(ntohs(((struct sockaddr_in *)&ss)->sin_port), 5432);
    ck_assert_uint_eq(ntohl(((struct sockaddr_in *)&ss)->sin_addr.s_addr), 0x7f000001);

    ck_assert_int_eq(wio_parse_hostport("[::1]:5433", &ss, &len), 0);
    ck_assert_int_eq(ss.ss_family, AF_INET6);
    ck_assert_int_eq(len, sizeof(struct sockaddr_in6));
    ck_assert_int_eq(ntohs(((struct sockaddr_in6 *)&ss)->sin6_port), 5433);
    ck_assert(IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)&ss)->sin6_addr));

    ck_assert_int_eq(wio_parse_hostport("localhost:0", &ss, &len), 0);
    ck_assert(ss.ss_family == AF_INET || ss.ss_family == AF_INET6);

    ck_assert_int_lt(wio_parse_hostport("127.0.0.1", &ss, &len), 0);
    ck_assert_int_lt(wio_parse_hostport("127.0.0.1:", &ss, &len), 0);
    ck_assert_int_lt(wio_parse_hostport("127.0.0.1:65536", &ss, &len), 0);
    ck_assert_int_lt(wio_parse_hostport("127.0.0.1:-1", &ss, &len), 0);
    ck_assert_int_lt(wio_parse_hostport("127.0.0.1:80x", &ss, &len), 0);
    ck_assert_int_lt(wio_parse_hostport(":80", &ss, &len), 0);
    ck_assert_int_lt(wio_parse_hostport("::1:80", &ss, &len), 0);
    ck_assert_int_lt(wio_parse_hostport("[::1:80", &ss, &len), 0);
    ck_assert_int_lt(wio_parse_hostport("[::1]80", &ss, &len), 0);
    ck_assert_int_lt(wio_parse_hostport("no-such-host.invalid:80", &ss, &len), 0);
}
END_TEST

/* ---- 2. stream integrity ---- */

#define INTEGRITY_TOTAL ((uint64_t)64 * MIB)

/* _i: bit 0 = single-shot recv, bit 1 = SEND_ZC off. */
START_TEST(test_stream_integrity)
{
    bool single = (_i & 1) != 0, zc_off = (_i & 2) != 0;
    struct wio_loop *loop;
    const struct wio_features *f;
    struct ep tx, rx;
    uint64_t queued = 0, rnd = 0x243F6A8885A308D3ull + (uint64_t)_i, writes = 0;
    double t0, ms, deadline;
    int a, b;

    set_recv_mode(single);
    ck_assert_int_eq(setenv("WALMIRROR_URING_SEND_ZC", zc_off ? "0" : "1", 1), 0);
    loop = loop_new();
    f = wio_loop_features(loop);
    if (single)
        ck_assert(!f->recv_multishot);
    if (zc_off)
        ck_assert(!f->send_zc);

    make_pair(loop, &a, &b);
    ep_init(&tx, loop, a, false);
    ep_init(&rx, loop, b, true);

    t0 = now_ms();
    deadline = t0 + 50000;
    while (rx.rx < INTEGRITY_TOTAL) {
        /* Keep a few MiB queued, in writes of 1 B .. 200 KiB through both write paths. */
        while (queued < INTEGRITY_TOTAL && wio_stream_pending(tx.s) < 4 * MIB) {
            uint64_t r = xorshift(&rnd);
            static const size_t max_len[] = {16, 1500, 64 * 1024, 200 * 1024};
            size_t len = 1 + (size_t)((r >> 8) % max_len[r & 3]);

            if (len > INTEGRITY_TOTAL - queued)
                len = (size_t)(INTEGRITY_TOTAL - queued);
            if (r & 4) {
                uint8_t *p = wio_stream_reserve(tx.s, len + (r & 8 ? 100 : 0));

                ck_assert_ptr_nonnull(p);
                pat_fill(p, queued, len);
                wio_stream_commit(tx.s, len);
            } else {
                write_pat(tx.s, queued, len);
            }
            queued += len;
            writes++;
        }
        ck_assert_int_ge(wio_run_once(loop, 100), 0);
        ck_assert_msg(rx.bad_at == UINT64_MAX, "byte %llu corrupted",
                      (unsigned long long)rx.bad_at);
        ck_assert_msg(tx.closed == 0 && rx.closed == 0, "stream closed: %s",
                      wire_strerror(tx.closed ? tx.close_res : rx.close_res));
        ck_assert_msg(now_ms() < deadline, "timed out at %llu of %llu bytes",
                      (unsigned long long)rx.rx, (unsigned long long)INTEGRITY_TOTAL);
    }
    ms = now_ms() - t0;
    RUN_UNTIL(loop, wio_stream_pending(tx.s) == 0 && tx.drained > 0, 5000);
    run_for(loop, 20);

    ck_assert_uint_eq(rx.rx, INTEGRITY_TOTAL);
    ck_assert_uint_eq(wio_stream_bytes_received(rx.s), INTEGRITY_TOTAL);
    ck_assert_uint_eq(wio_stream_bytes_sent(tx.s), INTEGRITY_TOTAL);
    ck_assert_uint_eq(wio_stream_bytes_received(tx.s), 0);
    ck_assert(rx.bad_at == UINT64_MAX);
    ck_assert_uint_gt(wio_stream_send_calls(tx.s), 0);
    ck_assert_uint_lt(wio_stream_send_calls(tx.s), writes);
    fprintf(stderr,
            "integrity[recv=%s send_zc=%s]: 64 MiB in %.0f ms = %.0f MiB/s, %llu writes, %llu "
            "send SQEs, %u recv callbacks\n",
            f->recv_multishot ? "multishot" : "single", f->send_zc ? "on" : "off", ms,
            64.0 / (ms / 1000.0), (unsigned long long)writes,
            (unsigned long long)wio_stream_send_calls(tx.s), rx.data_calls);

    ep_close_stream(&tx, false);
    ep_close_stream(&rx, false);
    run_for(loop, 20);
    ck_assert(fd_is_closed(a));
    ck_assert(fd_is_closed(b));
    ck_assert_uint_eq(tx.calls_after_close + rx.calls_after_close, 0);
    wio_loop_free(loop);
}
END_TEST

/* ---- 2b. back-pressure: a paused receive ---- */

/*
 * The receiver pauses itself from on_data: afterwards at most what the kernel had already
 * completed arrives (the ring's buffers, or one single-shot buffer), then nothing while paused,
 * and the sender's queue stays full.  Resumed, every byte arrives, in order.
 */
START_TEST(test_pause_resume)
{
    bool single = (_i & 1) != 0;
    const uint64_t total = 24 * MIB;
    struct wio_loop *loop;
    struct ep tx, rx;
    uint64_t at_pause, later;
    int a, b;

    set_recv_mode(single);
    loop = loop_new();
    make_pair(loop, &a, &b);
    ep_init(&tx, loop, a, false);
    ep_init(&rx, loop, b, true);
    rx.pause_at = 256 * 1024;
    for (uint64_t off = 0; off < total; off += MIB)
        write_pat(tx.s, off, MIB);
    RUN_UNTIL(loop, rx.paused, 5000);
    at_pause = rx.rx;
    run_for(loop, 300);
    later = rx.rx;
    ck_assert_msg(later - at_pause <= 64u * 64 * 1024, "%llu bytes came after the pause",
                  (unsigned long long)(later - at_pause));
    run_for(loop, 300);
    ck_assert_uint_eq(rx.rx, later);                /* nothing while paused */
    ck_assert_uint_gt(wio_stream_pending(tx.s), 0); /* the sender is held back */
    fprintf(stderr, "pause[recv=%s]: paused at %llu, %llu more came, %zu left queued\n",
            single ? "single" : "multishot", (unsigned long long)at_pause,
            (unsigned long long)(later - at_pause), wio_stream_pending(tx.s));

    wio_stream_pause_recv(rx.s, false);
    RUN_UNTIL(loop, rx.rx == total, 20000);
    ck_assert(rx.bad_at == UINT64_MAX);
    ck_assert_uint_eq(rx.closed + tx.closed, 0);

    ep_close_stream(&tx, false);
    ep_close_stream(&rx, false);
    run_for(loop, 20);
    ck_assert_uint_eq(tx.calls_after_close + rx.calls_after_close, 0);
    wio_loop_free(loop);
}
END_TEST

/* ---- 3. batching ---- */

START_TEST(test_batching)
{
    struct wio_loop *loop = loop_new();
    struct ep tx, rx;
    enum { N = 10000, LEN = 100 };
    uint8_t buf[LEN];
    int a, b;

    make_pair(loop, &a, &b);
    ep_init(&tx, loop, a, false);
    ep_init(&rx, loop, b, true);
    run_for(loop, 10);
    ck_assert_uint_eq(wio_stream_send_calls(tx.s), 0);

    /* One loop turn: 10,000 frames queued. */
    for (uint64_t i = 0; i < N; i++) {
        pat_fill(buf, i * LEN, LEN);
        ck_assert_int_eq(wio_stream_write(tx.s, buf, LEN), 0);
    }
    ck_assert_uint_eq(wio_stream_pending(tx.s), (size_t)N * LEN);
    RUN_UNTIL(loop, rx.rx == (uint64_t)N * LEN, 10000);
    ck_assert(rx.bad_at == UINT64_MAX);
    ck_assert_uint_eq(wio_stream_bytes_sent(tx.s), (uint64_t)N * LEN);
    fprintf(stderr, "batching: %d writes -> %llu send SQEs\n", N,
            (unsigned long long)wio_stream_send_calls(tx.s));
    ck_assert_uint_ge(wio_stream_send_calls(tx.s), 1);
    ck_assert_uint_le(wio_stream_send_calls(tx.s), 10);
    RUN_UNTIL(loop, tx.drained == 1, 5000);
    ck_assert_uint_eq(wio_stream_pending(tx.s), 0);

    /* Writes while a send is in flight go out together in the next one. */
    ck_assert_int_eq(wio_stream_write(tx.s, "x", 1), 0);
    ck_assert_int_ge(wio_run_once(loop, 0), 0); /* the send of "x" is now in flight */
    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(wio_stream_write(tx.s, "y", 1), 0);
    RUN_UNTIL(loop, rx.rx == (uint64_t)N * LEN + 101, 5000);
    ck_assert_uint_le(wio_stream_send_calls(tx.s), 10 + 2);

    /* A reservation stays valid across loop turns until its commit. */
    rx.verify = false;
    rx.head_len = 0;
    RUN_UNTIL(loop, wio_stream_pending(tx.s) == 0, 5000);
    ck_assert_int_eq(wio_stream_write(tx.s, "a", 1), 0);
    {
        char *p = wio_stream_reserve(tx.s, 1000);

        ck_assert_ptr_nonnull(p);
        run_for(loop, 20);
        memcpy(p, "bcd", 3);
        wio_stream_commit(tx.s, 3);
    }
    RUN_UNTIL(loop, rx.rx == (uint64_t)N * LEN + 105, 5000);
    ck_assert_mem_eq(rx.head, "abcd", 4);

    ep_close_stream(&tx, false);
    ep_close_stream(&rx, true);
    wio_loop_free(loop);
}
END_TEST

/* ---- 4. peer close, refused connect ---- */

START_TEST(test_peer_close)
{
    struct wio_loop *loop = loop_new();
    struct ep x, y;
    int a, b;

    make_pair(loop, &a, &b);
    ep_init(&x, loop, a, false);
    ep_init(&y, loop, b, false);
    ck_assert_int_eq(wio_stream_write(x.s, "bye", 3), 0);
    ep_close_stream(&x, false);
    RUN_UNTIL(loop, y.closed > 0, 5000);
    ck_assert_int_eq(y.close_res, WIRE_ECLOSED);
    ck_assert_uint_eq(y.rx, 3);
    ck_assert_mem_eq(y.head, "bye", 3);
    ck_assert(fd_is_closed(a));
    /* After on_close, writes fail. */
    ck_assert_int_eq(wio_stream_write(y.s, "z", 1), -EPIPE);
    run_for(loop, 50);
    ck_assert_uint_eq(y.closed, 1);
    ck_assert_uint_eq(x.closed + x.data_calls + x.calls_after_close, 0);
    ep_close_stream(&y, false);
    run_for(loop, 10);
    ck_assert(fd_is_closed(b));
    wio_loop_free(loop);
}
END_TEST

START_TEST(test_connect_refused)
{
    struct wio_loop *loop = loop_new();
    struct conn_result r;
    char addr[64];
    int port, lfd;

    /* A port that was just bound and released: nothing listens there. */
    lfd = wio_listen_tcp("127.0.0.1:0", 1, &port);
    ck_assert_int_ge(lfd, 0);
    ck_assert_int_eq(close(lfd), 0);
    memset(&r, 0, sizeof(r));
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    ck_assert_int_eq(wio_connect_start(loop, &r.con, addr, conn_on_connect), 0);
    RUN_UNTIL(loop, r.done, 5000);
    ck_assert_int_eq(r.fd, -ECONNREFUSED);
    ck_assert_int_lt(wio_connect_start(loop, &r.con, "bad", conn_on_connect), 0);
    wio_loop_free(loop);
}
END_TEST

/* ---- 5. timers ---- */

struct ttimer {
    struct wio_timer t;
    int fired;
    double at;
    int rearm; /* re-arms itself this many times from fire() */
    uint64_t rearm_ms;
};

static void
ttimer_fire(struct wio_timer *t)
{
    struct ttimer *tt = container_of(t, struct ttimer, t);

    tt->fired++;
    tt->at = now_ms();
    if (tt->rearm > 0) {
        tt->rearm--;
        ck_assert_int_eq(wio_timer_arm(t->loop, t, tt->rearm_ms, ttimer_fire), 0);
    }
}

START_TEST(test_timer_fires)
{
    struct wio_loop *loop = loop_new();
    struct ttimer tt;
    double t0;

    memset(&tt, 0, sizeof(tt));
    ck_assert(!wio_timer_busy(&tt.t));
    t0 = now_ms();
    ck_assert_int_eq(wio_timer_arm(loop, &tt.t, 100, ttimer_fire), 0);
    ck_assert(wio_timer_busy(&tt.t));
    RUN_UNTIL(loop, tt.fired > 0, 5000);
    ck_assert_double_ge(tt.at - t0, 100.0 - 0.5);
    ck_assert_double_lt(tt.at - t0, 3000.0);
    ck_assert(!wio_timer_busy(&tt.t));
    run_for(loop, 150);
    ck_assert_int_eq(tt.fired, 1);

    /* Re-armed from its own fire(): periodic. */
    memset(&tt, 0, sizeof(tt));
    tt.rearm = 2;
    tt.rearm_ms = 20;
    t0 = now_ms();
    ck_assert_int_eq(wio_timer_arm(loop, &tt.t, 20, ttimer_fire), 0);
    RUN_UNTIL(loop, tt.fired == 3, 5000);
    ck_assert_double_ge(tt.at - t0, 60.0 - 0.5);
    run_for(loop, 60);
    ck_assert_int_eq(tt.fired, 3);
    ck_assert(!wio_timer_busy(&tt.t));
    wio_loop_free(loop);
}
END_TEST

START_TEST(test_timer_cancel)
{
    struct wio_loop *loop = loop_new();
    struct ttimer tt;

    /* Cancelled after submission. */
    memset(&tt, 0, sizeof(tt));
    ck_assert_int_eq(wio_timer_arm(loop, &tt.t, 50, ttimer_fire), 0);
    ck_assert_int_ge(wio_run_once(loop, 0), 0);
    wio_timer_cancel(&tt.t);
    ck_assert(wio_timer_busy(&tt.t));
    run_for(loop, 200);
    ck_assert_int_eq(tt.fired, 0);
    ck_assert(!wio_timer_busy(&tt.t));

    /* Cancelled in the same turn it was armed in. */
    ck_assert_int_eq(wio_timer_arm(loop, &tt.t, 30, ttimer_fire), 0);
    wio_timer_cancel(&tt.t);
    run_for(loop, 150);
    ck_assert_int_eq(tt.fired, 0);
    ck_assert(!wio_timer_busy(&tt.t));

    /* Cancel of a timer that is not armed is harmless; so is a cancel after it fired. */
    wio_timer_cancel(&tt.t);
    ck_assert_int_eq(wio_timer_arm(loop, &tt.t, 1, ttimer_fire), 0);
    RUN_UNTIL(loop, tt.fired == 1, 5000);
    wio_timer_cancel(&tt.t);
    run_for(loop, 50);
    ck_assert_int_eq(tt.fired, 1);
    ck_assert(!wio_timer_busy(&tt.t));
    wio_loop_free(loop);
}
END_TEST

START_TEST(test_timer_rearm)
{
    struct wio_loop *loop = loop_new();
    struct ttimer tt;
    double t0;

    /* Moved earlier: 2 s -> 50 ms. */
    memset(&tt, 0, sizeof(tt));
    t0 = now_ms();
    ck_assert_int_eq(wio_timer_arm(loop, &tt.t, 2000, ttimer_fire), 0);
    ck_assert_int_ge(wio_run_once(loop, 0), 0);
    ck_assert_int_eq(wio_timer_arm(loop, &tt.t, 50, ttimer_fire), 0);
    RUN_UNTIL(loop, tt.fired > 0, 5000);
    ck_assert_double_ge(tt.at - t0, 50.0 - 0.5);
    ck_assert_double_lt(tt.at - t0, 1500.0);
    run_for(loop, 100);
    ck_assert_int_eq(tt.fired, 1);
    ck_assert(!wio_timer_busy(&tt.t));

    /* Moved later: 50 ms -> 300 ms. */
    memset(&tt, 0, sizeof(tt));
    t0 = now_ms();
    ck_assert_int_eq(wio_timer_arm(loop, &tt.t, 50, ttimer_fire), 0);
    ck_assert_int_ge(wio_run_once(loop, 0), 0);
    ck_assert_int_eq(wio_timer_arm(loop, &tt.t, 300, ttimer_fire), 0);
    run_for(loop, 200);
    ck_assert_int_eq(tt.fired, 0);
    RUN_UNTIL(loop, tt.fired > 0, 5000);
    ck_assert_double_ge(tt.at - t0, 300.0 - 0.5);
    run_for(loop, 50);
    ck_assert_int_eq(tt.fired, 1);

    /* Re-armed several times in one turn: fires once, at the last deadline. */
    memset(&tt, 0, sizeof(tt));
    t0 = now_ms();
    ck_assert_int_eq(wio_timer_arm(loop, &tt.t, 10, ttimer_fire), 0);
    ck_assert_int_eq(wio_timer_arm(loop, &tt.t, 20, ttimer_fire), 0);
    ck_assert_int_eq(wio_timer_arm(loop, &tt.t, 120, ttimer_fire), 0);
    RUN_UNTIL(loop, tt.fired > 0, 5000);
    ck_assert_double_ge(tt.at - t0, 120.0 - 0.5);
    run_for(loop, 50);
    ck_assert_int_eq(tt.fired, 1);
    ck_assert(!wio_timer_busy(&tt.t));

    /* Re-armed just as it expires: never fires twice for one arming.  (On a slow machine -
     * under valgrind - the first timeout can complete inside wio_run_once() already: it has
     * fired then before the re-arm, and the re-armed one fires once more.) */
    for (int i = 0; i < 20; i++) {
        int before;

        memset(&tt, 0, sizeof(tt));
        ck_assert_int_eq(wio_timer_arm(loop, &tt.t, 1, ttimer_fire), 0);
        ck_assert_int_ge(wio_run_once(loop, 0), 0);
        usleep(2000); /* the first timeout has expired, its CQE may be waiting */
        before = tt.fired;
        ck_assert_int_eq(wio_timer_arm(loop, &tt.t, 5, ttimer_fire), 0);
        RUN_UNTIL(loop, !wio_timer_busy(&tt.t), 5000);
        ck_assert_int_le(tt.fired - before, 1);
        run_for(loop, 10);
        ck_assert_int_le(tt.fired - before, 1);
    }
    wio_loop_free(loop);
}
END_TEST

/* ---- 6. closing with operations in flight ---- */

START_TEST(test_close_abort_inflight)
{
    struct wio_loop *loop = loop_new();
    struct ep x;
    double t0;
    int a, b;

    /* x sends 16 MiB to a socket nobody reads: the send blocks in the kernel. */
    make_pair(loop, &a, &b);
    ep_init(&x, loop, a, false);
    write_pat(x.s, 0, 16 * MIB);
    run_for(loop, 100);
    ck_assert_uint_gt(wio_stream_pending(x.s), 0);
    ck_assert_uint_gt(wio_stream_send_calls(x.s), 0);
    ep_close_stream(&x, true);
    /* The socket closes once the kernel let go of the send and the recv (with SEND_ZC, even
     * while the notification waits for the peer to drop our pages). */
    run_for(loop, 200);
    ck_assert(fd_is_closed(a));
    ck_assert_uint_eq(x.closed + x.calls_after_close, 0);
    ck_assert_int_eq(close(b), 0);
    /* Nothing of x is left in flight, so freeing the loop does not wait for it. */
    run_for(loop, 100);
    t0 = now_ms();
    wio_loop_free(loop);
    ck_assert_double_lt(now_ms() - t0, 1000.0);
}
END_TEST

START_TEST(test_close_graceful_flushes)
{
    struct wio_loop *loop = loop_new();
    struct ep x, y;
    int a, b;

    /* Queued and closed in the same turn: everything still arrives, then EOF. */
    make_pair(loop, &a, &b);
    ep_init(&x, loop, a, false);
    ep_init(&y, loop, b, true);
    write_pat(x.s, 0, 4 * MIB);
    ep_close_stream(&x, false);
    RUN_UNTIL(loop, y.closed > 0, 10000);
    ck_assert_int_eq(y.close_res, WIRE_ECLOSED);
    ck_assert_uint_eq(y.rx, 4 * MIB);
    ck_assert(y.bad_at == UINT64_MAX);
    ck_assert(fd_is_closed(a));
    ck_assert_uint_eq(x.drained + x.calls_after_close, 0);
    ep_close_stream(&y, false);
    wio_loop_free(loop);
}
END_TEST

/* _i: bit 0 = single-shot recv. */
START_TEST(test_close_in_on_data)
{
    struct wio_loop *loop;
    struct ep x, y;
    int a, b;

    set_recv_mode(_i);
    loop = loop_new();

    make_pair(loop, &a, &b);
    ep_init(&x, loop, a, false);
    ep_init(&y, loop, b, false);
    y.close_in_data = true;
    write_pat(x.s, 0, 8 * MIB);
    /* y closes itself on its first data; its socket closes with data unread, so x fails. */
    RUN_UNTIL(loop, x.closed > 0, 10000);
    ck_assert_uint_eq(y.data_calls, 1);
    ck_assert_uint_eq(y.calls_after_close + y.closed, 0);
    ck_assert(fd_is_closed(b));
    ck_assert_int_lt(x.close_res, 0);
    ck_assert_int_eq(wio_stream_write(x.s, "z", 1), -EPIPE);
    ep_close_stream(&x, false);
    run_for(loop, 50);
    ck_assert(fd_is_closed(a));
    wio_loop_free(loop);
}
END_TEST

/* _i: bit 0 = single-shot recv, bit 1 = y has a send in flight when its peer goes away. */
START_TEST(test_close_in_on_close)
{
    struct wio_loop *loop;
    struct ep x, y;
    int a, b;

    set_recv_mode(_i);
    loop = loop_new();
    make_pair(loop, &a, &b);
    ep_init(&x, loop, a, false);
    ep_init(&y, loop, b, false);
    y.close_in_close = true;
    if (_i & 2)
        write_pat(y.s, 0, 4 * MIB);
    ck_assert_int_ge(wio_run_once(loop, 0), 0);
    ep_close_stream(&x, true);
    RUN_UNTIL(loop, y.closed > 0, 5000);
    run_for(loop, 100);
    ck_assert_uint_eq(y.closed, 1);
    ck_assert_uint_eq(y.calls_after_close, 0);
    ck_assert(fd_is_closed(a));
    ck_assert(fd_is_closed(b));
    wio_loop_free(loop);
}
END_TEST

/* _i: bit 0 = single-shot recv. */
START_TEST(test_close_both_sides_same_turn)
{
    struct wio_loop *loop;
    struct ep x, y;
    int a, b;

    set_recv_mode(_i);
    loop = loop_new();

    for (int round = 0; round < 20; round++) {
        make_pair(loop, &a, &b);
        ep_init(&x, loop, a, false);
        ep_init(&y, loop, b, false);
        write_pat(x.s, 0, 2 * MIB);
        write_pat(y.s, 0, 2 * MIB);
        for (int i = 0; i < round % 4; i++)
            ck_assert_int_ge(wio_run_once(loop, 0), 0);
        ep_close_stream(&x, round & 1);
        ep_close_stream(&y, true);
        RUN_UNTIL(loop, fd_is_closed(a) && fd_is_closed(b), 5000);
        ck_assert_uint_eq(x.calls_after_close + y.calls_after_close, 0);
    }
    /* Closed before anything was ever submitted. */
    make_pair(loop, &a, &b);
    ep_init(&x, loop, a, false);
    ep_init(&y, loop, b, false);
    ep_close_stream(&x, false);
    ep_close_stream(&y, true);
    RUN_UNTIL(loop, fd_is_closed(a) && fd_is_closed(b), 5000);
    wio_loop_free(loop);
}
END_TEST

START_TEST(test_loop_free_with_open_streams)
{
    struct wio_loop *loop = loop_new();
    struct ep x, y;
    struct ttimer tt;
    int a, b;

    make_pair(loop, &a, &b);
    ep_init(&x, loop, a, false);
    ep_init(&y, loop, b, false);
    memset(&tt, 0, sizeof(tt));
    ck_assert_int_eq(wio_timer_arm(loop, &tt.t, 10000, ttimer_fire), 0);
    write_pat(x.s, 0, 8 * MIB);
    run_for(loop, 20);
    /* Never closed by their owner: the loop aborts and frees them, with no callbacks. */
    wio_loop_free(loop);
    ck_assert(fd_is_closed(a));
    ck_assert(fd_is_closed(b));
    ck_assert_uint_eq(x.closed + y.closed, 0);
    ck_assert_int_eq(tt.fired, 0);
}
END_TEST

static Suite *
wio_suite(void)
{
    Suite *s = suite_create("wio");
    TCase *tc;

    tc = tcase_create("tcp");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_parse_hostport);
    tcase_add_test(tc, test_accept_connect);
    tcase_add_test(tc, test_accept_many);
    tcase_add_test(tc, test_connect_refused);
    suite_add_tcase(s, tc);

    tc = tcase_create("stream");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_stream_integrity, 0, 4);
    tcase_add_loop_test(tc, test_pause_resume, 0, 2);
    tcase_add_test(tc, test_batching);
    tcase_add_test(tc, test_peer_close);
    suite_add_tcase(s, tc);

    tc = tcase_create("timer");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_timer_fires);
    tcase_add_test(tc, test_timer_cancel);
    tcase_add_test(tc, test_timer_rearm);
    suite_add_tcase(s, tc);

    tc = tcase_create("close");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_close_abort_inflight);
    tcase_add_test(tc, test_close_graceful_flushes);
    tcase_add_loop_test(tc, test_close_in_on_data, 0, 2);
    tcase_add_loop_test(tc, test_close_in_on_close, 0, 4);
    tcase_add_loop_test(tc, test_close_both_sides_same_turn, 0, 2);
    tcase_add_test(tc, test_loop_free_with_open_streams);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    struct wio_loop *probe;
    SRunner *sr;
    int ret, failed;

    ret = wio_loop_new(&probe, 8);
    if (ret == -ENOSYS || ret == -EPERM) {
        fprintf(stderr, "io_uring unavailable (%s): skipping\n", wire_strerror(ret));
        return 77;
    }
    if (ret == 0)
        wio_loop_free(probe);
    sr = srunner_create(wio_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
