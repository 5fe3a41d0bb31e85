/*
 * test_linkem.c - wm-linkem, the real binary, between sockets of this test on 127.0.0.1: bytes
 * relayed intact both ways with and without delay, jitter and a rate cap; FIN and RST carried
 * across; the delay seen in round trips, also after `set` at run time and for one direction;
 * a rate cap bounding throughput in each direction, shared by the connections; cuts (both ways, one
 * way, by signal) holding everything, a FIN and new connections until restore; reset; back-pressure
 * bounding the queue in bytes and, under a cap, in link time; many connections; a refused connect;
 * the control client; bad arguments exiting 2.
 *
 * Timing asserts are loose (CI machines are busy): they check the mechanism, not a speed.
 * Each test starts its own wm-linkem, which dies with the test process (PR_SET_PDEATHSIG) and
 * must exit 0 on SIGTERM (under ASan: no leak).
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

#define LINKEM WM_BINARY_DIR "/bench/wm-linkem"
#define MIB (1024 * 1024)

static double
now_ms(void)
{
    struct timespec ts;

    ck_assert(clock_gettime(CLOCK_MONOTONIC, &ts) == 0);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* ---- a wm-linkem process ---- */

struct lkproc {
    pid_t pid;
    char *dir;
    char ctl[256];
    char log[256];
    int port; /* where it listens */
};

static int
ctl_connect(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    ck_assert_int_ge(fd, 0);
    ck_assert(strlen(path) < sizeof(sa.sun_path));
    strcpy(sa.sun_path, path);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Sends one control command and returns its reply line (static buffer, no newline). */
static const char *
ctl(struct lkproc *p, const char *fmt, ...)
{
    static char reply[2048];
    char cmd[512];
    size_t len = 0;
    int fd = ctl_connect(p->ctl), n;
    va_list ap;

    ck_assert_msg(fd >= 0, "control socket %s: %s", p->ctl, strerror(errno));
    va_start(ap, fmt);
    n = vsnprintf(cmd, sizeof(cmd) - 1, fmt, ap);
    va_end(ap);
    ck_assert(n > 0 && (size_t)n < sizeof(cmd) - 1);
    cmd[n++] = '\n';
    ck_assert_int_eq(send(fd, cmd, (size_t)n, MSG_NOSIGNAL), n);
    while (memchr(reply, '\n', len) == NULL) {
        ssize_t r;

        ck_assert_uint_lt(len, sizeof(reply) - 1);
        r = recv(fd, reply + len, sizeof(reply) - 1 - len, 0);
        ck_assert_msg(r > 0, "no control reply to '%s'", cmd);
        len += (size_t)r;
    }
    close(fd);
    reply[len] = '\0';
    *strchr(reply, '\n') = '\0';
    return reply;
}

/* The value of key=NUMBER in a stats reply. */
static uint64_t
stat_u64(const char *reply, const char *key)
{
    char pat[64];
    const char *at;

    snprintf(pat, sizeof(pat), " %s=", key);
    at = strstr(reply, pat);
    ck_assert_msg(at != NULL, "no %s in '%s'", key, reply);
    return strtoull(at + strlen(pat), NULL, 10);
}

static uint64_t
stat_now(struct lkproc *p, const char *key)
{
    return stat_u64(ctl(p, "stats"), key);
}

/* Starts wm-linkem relaying to 127.0.0.1:server_port with extra arguments (NULL-terminated);
 * returns once its control socket answers. */
static void
lk_start(struct lkproc *p, int server_port, ...)
{
    char connect_to[64];
    const char *argv[32];
    int argc = 0;
    const char *a;
    va_list ap;
    double deadline;

    memset(p, 0, sizeof(*p));
    p->dir = tu_tmpdir("linkem");
    snprintf(p->ctl, sizeof(p->ctl), "%s/ctl", p->dir);
    snprintf(p->log, sizeof(p->log), "%s/linkem.log", p->dir);
    snprintf(connect_to, sizeof(connect_to), "127.0.0.1:%d", server_port);
    argv[argc++] = LINKEM;
    argv[argc++] = "--listen";
    argv[argc++] = "127.0.0.1:0";
    argv[argc++] = "--connect";
    argv[argc++] = connect_to;
    argv[argc++] = "--control";
    argv[argc++] = p->ctl;
    va_start(ap, server_port);
    while ((a = va_arg(ap, const char *)) != NULL) {
        ck_assert_int_lt(argc, 30);
        argv[argc++] = a;
    }
    va_end(ap);
    argv[argc] = NULL;

    p->pid = fork();
    ck_assert_int_ge(p->pid, 0);
    if (p->pid == 0) {
        int fd = open(p->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

        if (fd < 0 || dup2(fd, STDERR_FILENO) < 0)
            _exit(120);
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        execv(LINKEM, (char *const *)argv);
        _exit(121);
    }
    deadline = now_ms() + 10000;
    for (;;) {
        int fd = ctl_connect(p->ctl), status;

        if (fd >= 0) {
            close(fd);
            break;
        }
        ck_assert_msg(waitpid(p->pid, &status, WNOHANG) == 0, "wm-linkem exited; see %s", p->log);
        ck_assert_msg(now_ms() < deadline, "wm-linkem did not start; see %s", p->log);
        usleep(10000);
    }
    p->port = (int)stat_now(p, "listen_port");
    ck_assert_int_gt(p->port, 0);
}

/* Stops it with SIGTERM; it must exit 0 (a leak under ASan would not). */
static void
lk_stop(struct lkproc *p)
{
    double deadline = now_ms() + 10000;
    int status = 0;

    ck_assert_int_eq(kill(p->pid, SIGTERM), 0);
    while (waitpid(p->pid, &status, WNOHANG) == 0) {
        ck_assert_msg(now_ms() < deadline, "wm-linkem ignores SIGTERM");
        usleep(5000);
    }
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "wm-linkem exit status 0x%x; see %s", status, p->log);
    tu_rmtree(p->dir);
    free(p->dir);
}

/* ---- sockets ---- */

static int
listen_any(int *port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    ck_assert_int_eq(listen(fd, 64), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    *port = ntohs(sin.sin_port);
    return fd;
}

static int
connect_port(int port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                              .sin_port = htons((uint16_t)port)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

    ck_assert_int_ge(fd, 0);
    ck_assert_msg(connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0, "connect: %s",
                  strerror(errno));
    ck_assert_int_eq(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)), 0);
    return fd;
}

static int
accept_within(int lfd, int ms)
{
    struct pollfd pfd = {.fd = lfd, .events = POLLIN};
    int fd, one = 1;

    ck_assert_msg(poll(&pfd, 1, ms) == 1, "nothing to accept within %d ms", ms);
    fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)), 0);
    return fd;
}

/* A connection through linkem: *a is the client end, *b the server end. */
static void
pair_up(struct lkproc *p, int lfd, int *a, int *b)
{
    *a = connect_port(p->port);
    *b = accept_within(lfd, 5000);
}

/* Reads up to len bytes arriving within ms; returns how many came. */
static size_t
recv_within(int fd, void *buf, size_t len, int ms)
{
    double deadline = now_ms() + ms;
    size_t got = 0;

    while (got < len) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int left = (int)(deadline - now_ms());
        ssize_t r;

        if (left <= 0 || poll(&pfd, 1, left) != 1)
            break;
        r = recv(fd, (char *)buf + got, len - got, MSG_DONTWAIT);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    return got;
}

static void
send_all(int fd, const void *buf, size_t len)
{
    ck_assert_int_eq(send(fd, buf, len, MSG_NOSIGNAL), (ssize_t)len);
}

/* How fd ends within ms: 0 for EOF, -ECONNRESET etc., or -ETIMEDOUT if it does not. */
static int
end_within(int fd, int ms)
{
    double deadline = now_ms() + ms;
    char buf[4096];

    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int left = (int)(deadline - now_ms());
        ssize_t r;

        if (left <= 0 || poll(&pfd, 1, left) != 1)
            return -ETIMEDOUT;
        r = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (r == 0)
            return 0;
        if (r < 0 && errno != EAGAIN)
            return -errno;
    }
}

/* One round trip of a 64-byte message from a to b and back; returns milliseconds. */
static double
round_trip(int a, int b)
{
    char msg[64], got[64];
    double t0 = now_ms();

    memset(msg, 'r', sizeof(msg));
    send_all(a, msg, sizeof(msg));
    ck_assert_uint_eq(recv_within(b, got, sizeof(got), 5000), sizeof(got));
    send_all(b, got, sizeof(got));
    ck_assert_uint_eq(recv_within(a, got, sizeof(got), 5000), sizeof(got));
    ck_assert(memcmp(msg, got, sizeof(got)) == 0);
    return now_ms() - t0;
}

static int
cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;

    return a < b ? -1 : a > b;
}

/* n round trips: *min and the median, in ms. */
static void
round_trips(int a, int b, int n, double *min, double *median)
{
    double v[64];

    ck_assert_int_le(n, 64);
    for (int i = 0; i < n; i++)
        v[i] = round_trip(a, b);
    qsort(v, (size_t)n, sizeof(v[0]), cmp_double);
    *min = v[0];
    *median = v[n / 2];
}

/* ---- checked streams ---- */

/* A pseudo-random byte stream that the receiver regenerates to compare. */
struct gen {
    uint64_t s, word;
    unsigned left;
};

static unsigned char
gen_byte(struct gen *g)
{
    if (g->left == 0) {
        g->s ^= g->s << 13;
        g->s ^= g->s >> 7;
        g->s ^= g->s << 17;
        g->word = g->s;
        g->left = 8;
    }
    g->left--;
    return (unsigned char)(g->word >> (8 * g->left));
}

struct flow {
    struct gen wg, rg;
    uint64_t total, sent, recvd;
    unsigned char pend[65536];
    size_t pend_len, pend_off;
    bool shut, eof;
    double t_first, t_last;
    uint64_t after_first; /* bytes received after the first read */
};

static void
flow_init(struct flow *f, uint64_t total, uint64_t seed)
{
    memset(f, 0, sizeof(*f));
    f->wg.s = f->rg.s = seed | 1;
    f->total = total;
}

/* Writes what fd takes of f; shuts fd's write side once everything is sent. */
static void
flow_write(struct flow *f, int fd, uint64_t *rng)
{
    while (f->sent < f->total) {
        ssize_t w;

        if (f->pend_off == f->pend_len) {
            size_t n;

            *rng = *rng * 6364136223846793005ull + 1442695040888963407ull;
            n = 1 + (size_t)((*rng >> 33) % sizeof(f->pend));
            if (n > f->total - f->sent)
                n = (size_t)(f->total - f->sent);
            for (size_t i = 0; i < n; i++)
                f->pend[i] = gen_byte(&f->wg);
            f->pend_len = n;
            f->pend_off = 0;
        }
        w = send(fd, f->pend + f->pend_off, f->pend_len - f->pend_off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            ck_assert_msg(errno == EAGAIN, "send: %s", strerror(errno));
            return;
        }
        f->pend_off += (size_t)w;
        f->sent += (uint64_t)w;
    }
    if (!f->shut) {
        ck_assert_int_eq(shutdown(fd, SHUT_WR), 0);
        f->shut = true;
    }
}

static void
flow_read(struct flow *f, int fd)
{
    unsigned char buf[65536];

    for (;;) {
        ssize_t r = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);

        if (r < 0) {
            ck_assert_msg(errno == EAGAIN, "recv: %s", strerror(errno));
            return;
        }
        if (r == 0) {
            ck_assert_msg(f->recvd == f->total, "EOF after %" PRIu64 " of %" PRIu64 " bytes",
                          f->recvd, f->total);
            f->eof = true;
            return;
        }
        f->t_last = now_ms();
        if (f->recvd == 0)
            f->t_first = f->t_last;
        else
            f->after_first += (uint64_t)r;
        /* Not ck_assert per byte: every passing assert costs Check a message to its parent. */
        for (ssize_t i = 0; i < r; i++)
            if (buf[i] != gen_byte(&f->rg))
                ck_abort_msg("byte %" PRIu64 " differs", f->recvd + (uint64_t)i);
        f->recvd += (uint64_t)r;
    }
}

/* Sends f[0] from a to b and f[1] from b to a at once, each ending with a FIN; checks every
 * byte and the EOF at each end. */
static void
pump(int a, int b, struct flow f[2], int max_ms)
{
    double deadline = now_ms() + max_ms;
    uint64_t rng = 42;

    while (!f[0].eof || !f[1].eof) {
        struct pollfd pfd[2] = {{.fd = a}, {.fd = b}};

        for (int i = 0; i < 2; i++) {
            if (f[i].sent < f[i].total || !f[i].shut)
                pfd[i].events |= POLLOUT;
            if (!f[i ^ 1].eof)
                pfd[i].events |= POLLIN;
        }
        ck_assert_msg(now_ms() < deadline,
                      "transfer incomplete after %d ms: a2b %" PRIu64 "/%" PRIu64 ", b2a %" PRIu64
                      "/%" PRIu64,
                      max_ms, f[0].recvd, f[0].total, f[1].recvd, f[1].total);
        ck_assert_int_ge(poll(pfd, 2, 100), 0);
        for (int i = 0; i < 2; i++) {
            if (pfd[i].revents & POLLOUT)
                flow_write(&f[i], pfd[i].fd, &rng);
            if (pfd[i].revents & (POLLIN | POLLHUP | POLLERR))
                flow_read(&f[i ^ 1], pfd[i].fd);
        }
    }
}

/* Mbit/s seen by f's receiver, from its first read to its last. */
static double
flow_mbit(const struct flow *f)
{
    return (double)f->after_first * 8 / ((f->t_last - f->t_first) * 1e3);
}

/* Waits until linkem has no connection left (they close after both FINs). */
static void
wait_no_conns(struct lkproc *p)
{
    double deadline = now_ms() + 5000;

    while (stat_now(p, "conns") != 0) {
        ck_assert_msg(now_ms() < deadline, "connections linger: %s", ctl(p, "stats"));
        usleep(10000);
    }
}

/* ---- tests ---- */

static void
relay_intact(const char *delay, const char *jitter, const char *rate, uint64_t bytes)
{
    struct lkproc p;
    struct flow *f = calloc(2, sizeof(*f));
    int port, lfd = listen_any(&port), a, b;
    const char *r;

    ck_assert_ptr_nonnull(f);
    lk_start(&p, port, "--delay", delay, "--jitter", jitter, "--rate", rate, NULL);
    pair_up(&p, lfd, &a, &b);
    flow_init(&f[0], bytes, 0x1234567);
    flow_init(&f[1], bytes, 0x7654321);
    pump(a, b, f, 15000);
    r = ctl(&p, "stats");
    ck_assert_uint_eq(stat_u64(r, "a2b_bytes"), bytes);
    ck_assert_uint_eq(stat_u64(r, "b2a_bytes"), bytes);
    wait_no_conns(&p);
    close(a);
    close(b);
    close(lfd);
    lk_stop(&p);
    free(f);
}

START_TEST(test_relay_intact)
{
    relay_intact("0", "0", "0", 8 * MIB);
}
END_TEST

START_TEST(test_relay_intact_shaped)
{
    /* Packets, jitter that must not reorder, and a cap, at once. */
    relay_intact("3ms", "2ms", "400mbit", 4 * MIB);
}
END_TEST

START_TEST(test_delay)
{
    struct lkproc p;
    int port, lfd = listen_any(&port), a, b;
    double min, med;

    lk_start(&p, port, "--delay", "20ms", NULL);
    pair_up(&p, lfd, &a, &b);
    round_trips(a, b, 10, &min, &med);
    ck_assert_msg(min >= 40.0 && med < 40.0 + 30.0, "20 ms each way: rtt min %.2f median %.2f", min,
                  med);

    /* At run time, and for one direction only. */
    ck_assert_str_eq(ctl(&p, "set delay=5ms"), "ok");
    round_trips(a, b, 10, &min, &med);
    ck_assert_msg(min >= 10.0 && med < 10.0 + 30.0, "5 ms each way: rtt min %.2f median %.2f", min,
                  med);
    ck_assert_str_eq(ctl(&p, "set a2b delay=30ms"), "ok");
    round_trips(a, b, 6, &min, &med);
    ck_assert_msg(min >= 35.0 && med < 35.0 + 30.0, "30 + 5 ms: rtt min %.2f median %.2f", min,
                  med);
    close(a);
    close(b);
    close(lfd);
    lk_stop(&p);
}
END_TEST

START_TEST(test_rate)
{
    struct lkproc p;
    struct flow *f = calloc(2, sizeof(*f));
    int port, lfd = listen_any(&port), a, b;

    ck_assert_ptr_nonnull(f);
    /* 8 Mbit/s = 1 MB/s: 2 MB take about 2 s, both ways at once (independent links). */
    lk_start(&p, port, "--rate", "8mbit", NULL);
    pair_up(&p, lfd, &a, &b);
    flow_init(&f[0], 2000000, 11);
    flow_init(&f[1], 2000000, 12);
    pump(a, b, f, 10000);
    for (int i = 0; i < 2; i++)
        ck_assert_msg(flow_mbit(&f[i]) > 0.6 * 8 && flow_mbit(&f[i]) < 1.1 * 8,
                      "%s at 8mbit: %.2f Mbit/s", i == 0 ? "a2b" : "b2a", flow_mbit(&f[i]));
    close(a);
    close(b);
    close(lfd);
    lk_stop(&p);
    free(f);
}
END_TEST

START_TEST(test_rate_shared)
{
    struct lkproc p;
    struct flow *f = calloc(2, sizeof(*f));
    int port, lfd = listen_any(&port), a[2], b[2];
    double deadline, first, last, mbit;
    uint64_t rng = 7;

    ck_assert_ptr_nonnull(f);
    /* Two connections share one 8 Mbit/s link: 2 x 1 MB take about 2 s, not 1. */
    lk_start(&p, port, "--rate", "8mbit", NULL);
    for (int i = 0; i < 2; i++) {
        pair_up(&p, lfd, &a[i], &b[i]);
        flow_init(&f[i], 1000000, 100 + (uint64_t)i);
    }
    deadline = now_ms() + 10000;
    while (!f[0].eof || !f[1].eof) {
        struct pollfd pfd[4];

        for (int i = 0; i < 2; i++) {
            pfd[2 * i] = (struct pollfd){.fd = a[i], .events = f[i].shut ? 0 : POLLOUT};
            pfd[2 * i + 1] = (struct pollfd){.fd = b[i], .events = POLLIN};
        }
        ck_assert_msg(now_ms() < deadline, "transfers incomplete: %" PRIu64 ", %" PRIu64,
                      f[0].recvd, f[1].recvd);
        ck_assert_int_ge(poll(pfd, 4, 100), 0);
        for (int i = 0; i < 2; i++) {
            if (pfd[2 * i].revents & POLLOUT)
                flow_write(&f[i], a[i], &rng);
            if (pfd[2 * i + 1].revents & (POLLIN | POLLHUP))
                flow_read(&f[i], b[i]);
        }
    }
    first = f[0].t_first < f[1].t_first ? f[0].t_first : f[1].t_first;
    last = f[0].t_last > f[1].t_last ? f[0].t_last : f[1].t_last;
    mbit = (double)(f[0].recvd + f[1].recvd) * 8 / ((last - first) * 1e3);
    ck_assert_msg(mbit > 0.6 * 8 && mbit < 1.1 * 8, "two connections at 8mbit: %.2f Mbit/s", mbit);
    for (int i = 0; i < 2; i++) {
        close(a[i]);
        close(b[i]);
    }
    close(lfd);
    lk_stop(&p);
    free(f);
}
END_TEST

/* Nothing crosses a cut direction within 500 ms; everything does after restore. */
static void
check_cut(int from, int to, const char *what)
{
    char msg[100], got[100];

    memset(msg, 'c', sizeof(msg));
    send_all(from, msg, sizeof(msg));
    ck_assert_msg(recv_within(to, got, sizeof(got), 500) == 0, "%s: bytes crossed a cut", what);
}

static void
check_delivered(int to, size_t len, int ms, const char *what)
{
    char got[100];

    ck_assert_msg(recv_within(to, got, len, ms) == len, "%s: not delivered", what);
}

START_TEST(test_cut)
{
    struct lkproc p;
    int port, lfd = listen_any(&port), a, b;
    char got[100];

    lk_start(&p, port, "--delay", "2ms", NULL);
    pair_up(&p, lfd, &a, &b);
    round_trip(a, b);

    ck_assert_str_eq(ctl(&p, "cut"), "ok cut=both");
    ck_assert(strstr(ctl(&p, "stats"), " cut=both ") != NULL);
    send_all(a, "x", 1);
    send_all(b, "y", 1);
    ck_assert_uint_eq(recv_within(b, got, 1, 500), 0);
    ck_assert_uint_eq(recv_within(a, got, 1, 10), 0);
    ck_assert_str_eq(ctl(&p, "restore"), "ok cut=none");
    ck_assert_uint_eq(recv_within(b, got, 1, 2000), 1);
    ck_assert_int_eq(got[0], 'x');
    ck_assert_uint_eq(recv_within(a, got, 1, 2000), 1);
    ck_assert_int_eq(got[0], 'y');

    /* One way: a2b cut, b2a still flows. */
    ck_assert_str_eq(ctl(&p, "cut a2b"), "ok cut=a2b");
    check_cut(a, b, "cut a2b");
    send_all(b, "z", 1);
    check_delivered(a, 1, 2000, "b2a during cut a2b");
    ck_assert_str_eq(ctl(&p, "restore a2b"), "ok cut=none");
    check_delivered(b, 100, 2000, "a2b after restore");
    ck_assert_str_eq(ctl(&p, "cut b2a"), "ok cut=b2a");
    check_cut(b, a, "cut b2a");
    ck_assert_str_eq(ctl(&p, "restore"), "ok cut=none");
    check_delivered(a, 100, 2000, "b2a after restore");

    /* By signal. */
    ck_assert_int_eq(kill(p.pid, SIGUSR1), 0);
    usleep(100000);
    check_cut(a, b, "SIGUSR1");
    ck_assert_int_eq(kill(p.pid, SIGUSR2), 0);
    check_delivered(b, 100, 2000, "after SIGUSR2");
    round_trip(a, b);
    close(a);
    close(b);
    close(lfd);
    lk_stop(&p);
}
END_TEST

START_TEST(test_cut_holds_fin)
{
    struct lkproc p;
    int port, lfd = listen_any(&port), a, b;
    char got[8];

    /* A peer's close does not cross a partition either. */
    lk_start(&p, port, NULL);
    pair_up(&p, lfd, &a, &b);
    ck_assert_str_eq(ctl(&p, "cut"), "ok cut=both");
    send_all(a, "bye", 3);
    ck_assert_int_eq(shutdown(a, SHUT_WR), 0);
    ck_assert_int_eq(end_within(b, 500), -ETIMEDOUT);
    ck_assert_str_eq(ctl(&p, "restore"), "ok cut=none");
    ck_assert_uint_eq(recv_within(b, got, 3, 2000), 3);
    ck_assert(memcmp(got, "bye", 3) == 0);
    ck_assert_int_eq(end_within(b, 2000), 0);
    close(a);
    close(b);
    close(lfd);
    lk_stop(&p);
}
END_TEST

START_TEST(test_connect_during_cut)
{
    struct lkproc p;
    struct pollfd pfd;
    int port, lfd = listen_any(&port), a, b;
    char got[2];

    /* The SYN would be lost: B sees no connection until the link is restored. */
    lk_start(&p, port, NULL);
    ck_assert_str_eq(ctl(&p, "cut a2b"), "ok cut=a2b");
    a = connect_port(p.port);
    send_all(a, "hi", 2);
    pfd = (struct pollfd){.fd = lfd, .events = POLLIN};
    ck_assert_int_eq(poll(&pfd, 1, 500), 0);
    ck_assert_uint_eq(stat_now(&p, "conns"), 1);
    ck_assert_str_eq(ctl(&p, "restore"), "ok cut=none");
    b = accept_within(lfd, 2000);
    ck_assert_uint_eq(recv_within(b, got, 2, 2000), 2);
    ck_assert(memcmp(got, "hi", 2) == 0);
    round_trip(a, b);
    close(a);
    close(b);
    close(lfd);
    lk_stop(&p);
}
END_TEST

START_TEST(test_reset)
{
    struct lkproc p;
    int port, lfd = listen_any(&port), a[2], b[2];

    lk_start(&p, port, NULL);
    for (int i = 0; i < 2; i++) {
        pair_up(&p, lfd, &a[i], &b[i]);
        round_trip(a[i], b[i]);
    }
    ck_assert_uint_eq(stat_now(&p, "conns"), 2);
    ck_assert_str_eq(ctl(&p, "reset"), "ok closed=2");
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(end_within(a[i], 1000), -ECONNRESET);
        ck_assert_int_eq(end_within(b[i], 1000), -ECONNRESET);
        close(a[i]);
        close(b[i]);
    }
    ck_assert_uint_eq(stat_now(&p, "conns"), 0);

    /* New connections still work; SIGHUP resets too. */
    pair_up(&p, lfd, &a[0], &b[0]);
    round_trip(a[0], b[0]);
    ck_assert_int_eq(kill(p.pid, SIGHUP), 0);
    ck_assert_int_eq(end_within(a[0], 1000), -ECONNRESET);
    ck_assert_int_eq(end_within(b[0], 1000), -ECONNRESET);
    close(a[0]);
    close(b[0]);
    ck_assert_uint_eq(stat_now(&p, "reset"), 3);
    close(lfd);
    lk_stop(&p);
}
END_TEST

START_TEST(test_peer_reset_propagates)
{
    struct lkproc p;
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    int port, lfd = listen_any(&port), a, b;

    lk_start(&p, port, "--delay", "1ms", NULL);
    pair_up(&p, lfd, &a, &b);
    round_trip(a, b);
    ck_assert_int_eq(setsockopt(a, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
    close(a);
    ck_assert_int_eq(end_within(b, 2000), -ECONNRESET);
    close(b);
    wait_no_conns(&p);
    close(lfd);
    lk_stop(&p);
}
END_TEST

START_TEST(test_backpressure)
{
    struct lkproc p;
    int port, lfd = listen_any(&port), a, b, fl;
    static char buf[65536];
    uint64_t written = 0, queued;
    double end;

    /* 1 Mbit/s and a 256 KiB queue (no buffer limit): a fast writer is held back, memory
     * stays bounded. */
    lk_start(&p, port, "--rate", "1mbit", "--queue", "256k", "--buffer", "0", NULL);
    pair_up(&p, lfd, &a, &b);
    fl = fcntl(a, F_GETFL);
    ck_assert_int_eq(fcntl(a, F_SETFL, fl | O_NONBLOCK), 0);
    end = now_ms() + 1000;
    while (now_ms() < end) {
        ssize_t w = send(a, buf, sizeof(buf), MSG_NOSIGNAL);

        if (w > 0)
            written += (uint64_t)w;
        else
            usleep(1000);
    }
    queued = stat_now(&p, "a2b_queued");
    ck_assert_msg(queued <= 512 * 1024, "a2b queue %" PRIu64 " bytes", queued);
    /* Kernel buffers hold a few MB at most; at memory speed it would have been GBs. */
    ck_assert_msg(written < 64ull * MIB, "the writer was not held back: %" PRIu64, written);
    close(a);
    close(b);
    close(lfd);
    lk_stop(&p);
}
END_TEST

START_TEST(test_buffer)
{
    struct lkproc p;
    int port, lfd = listen_any(&port), a, b, fl;
    static char buf[65536];
    uint64_t got = 0, after_first = 0, queued, max_queued = 0;
    double t_first = 0, t_last = 0, end, next_stat;

    /* A saturating sender at 8 Mbit/s: linkem holds about 100 ms of the link (100 KB), not
     * megabytes, and the link stays busy. */
    lk_start(&p, port, "--rate", "8mbit", NULL);
    pair_up(&p, lfd, &a, &b);
    fl = fcntl(a, F_GETFL);
    ck_assert_int_eq(fcntl(a, F_SETFL, fl | O_NONBLOCK), 0);
    end = now_ms() + 2000;
    next_stat = now_ms() + 500;
    while (now_ms() < end) {
        struct pollfd pfd[2] = {{.fd = a, .events = POLLOUT}, {.fd = b, .events = POLLIN}};

        ck_assert_int_ge(poll(pfd, 2, 10), 0);
        if (pfd[0].revents & POLLOUT)
            ck_assert_int_gt(send(a, buf, sizeof(buf), MSG_NOSIGNAL), 0);
        if (pfd[1].revents & POLLIN) {
            ssize_t r = recv(b, buf, sizeof(buf), MSG_DONTWAIT);

            ck_assert_int_gt(r, 0);
            t_last = now_ms();
            if (got == 0)
                t_first = t_last;
            else
                after_first += (uint64_t)r;
            got += (uint64_t)r;
        }
        if (now_ms() >= next_stat) {
            queued = stat_now(&p, "a2b_queued");
            max_queued = queued > max_queued ? queued : max_queued;
            next_stat += 250;
        }
    }
    ck_assert_msg(max_queued <= 200 * 1000, "a2b queue reached %" PRIu64 " bytes", max_queued);
    ck_assert_msg(after_first * 8 / ((t_last - t_first) * 1e3) > 0.6 * 8,
                  "saturated 8mbit link carried only %.2f Mbit/s",
                  (double)after_first * 8 / ((t_last - t_first) * 1e3));
    close(a);
    close(b);
    close(lfd);
    lk_stop(&p);
}
END_TEST

START_TEST(test_many_connections)
{
    enum { N = 20, LEN = 65536 };
    struct lkproc p;
    int port, lfd = listen_any(&port), a[N], b[N];
    static unsigned char out[LEN], in[LEN];

    lk_start(&p, port, "--delay", "2ms", NULL);
    for (int i = 0; i < N; i++)
        pair_up(&p, lfd, &a[i], &b[i]);
    ck_assert_uint_eq(stat_now(&p, "conns"), N);
    for (int i = 0; i < N; i++) {
        memset(out, 'A' + i, LEN);
        send_all(a[i], out, LEN);
        memset(out, 'a' + i, LEN);
        send_all(b[i], out, LEN);
    }
    for (int i = 0; i < N; i++) {
        ck_assert_uint_eq(recv_within(b[i], in, LEN, 5000), LEN);
        memset(out, 'A' + i, LEN);
        ck_assert(memcmp(in, out, LEN) == 0);
        ck_assert_uint_eq(recv_within(a[i], in, LEN, 5000), LEN);
        memset(out, 'a' + i, LEN);
        ck_assert(memcmp(in, out, LEN) == 0);
        close(a[i]);
        close(b[i]);
    }
    wait_no_conns(&p);
    close(lfd);
    lk_stop(&p);
}
END_TEST

START_TEST(test_connect_refused)
{
    struct lkproc p;
    int port, lfd = listen_any(&port), a;

    close(lfd); /* nobody listens there now */
    lk_start(&p, port, NULL);
    a = connect_port(p.port);
    ck_assert_int_ne(end_within(a, 2000), -ETIMEDOUT);
    close(a);
    ck_assert_uint_eq(stat_now(&p, "connect_failed"), 1);
    ck_assert_uint_eq(stat_now(&p, "conns"), 0);
    lk_stop(&p);
}
END_TEST

START_TEST(test_control_client)
{
    struct lkproc p;
    int port, lfd = listen_any(&port);
    char out[512];
    const char *r;
    size_t len;
    char *text;

    lk_start(&p, port, NULL);
    snprintf(out, sizeof(out), "%s/out", p.dir);
    ck_assert_int_eq(tu_run("'%s' --control '%s' --send stats >'%s'", LINKEM, p.ctl, out), 0);
    text = tu_read_file(out, &len);
    ck_assert_ptr_nonnull(text);
    ck_assert_msg(strncmp(text, "ok conns=0 ", 11) == 0, "%s", text);
    free(text);
    /* Words after --send form the command. */
    ck_assert_int_eq(
        tu_run("'%s' --control '%s' --send set jitter=1.5ms rate=25mbit >/dev/null", LINKEM, p.ctl),
        0);
    r = ctl(&p, "stats");
    ck_assert_uint_eq(stat_u64(r, "a2b_jitter_us"), 1500);
    ck_assert_uint_eq(stat_u64(r, "b2a_rate_bit"), 25000000);
    ck_assert_uint_eq(stat_u64(r, "a2b_delay_us"), 0);
    ck_assert_uint_eq(stat_u64(r, "b2a_buffer_us"), 100000);
    ck_assert_str_eq(ctl(&p, "set b2a buffer=20ms"), "ok");
    r = ctl(&p, "stats");
    ck_assert_uint_eq(stat_u64(r, "b2a_buffer_us"), 20000);
    ck_assert_uint_eq(stat_u64(r, "a2b_buffer_us"), 100000);
    ck_assert_int_eq(tu_run("'%s' --control '%s' --send 'set delay=abc' >'%s'", LINKEM, p.ctl, out),
                     1);
    text = tu_read_file(out, &len);
    ck_assert_ptr_nonnull(text);
    ck_assert_msg(strncmp(text, "error: delay: 'abc'", 19) == 0, "%s", text);
    free(text);
    /* A bad setting changes nothing, even next to a good one. */
    ck_assert_int_eq(
        tu_run("'%s' --control '%s' --send set delay=1ms rate=9 >/dev/null", LINKEM, p.ctl), 1);
    ck_assert_uint_eq(stat_now(&p, "a2b_delay_us"), 0);
    ck_assert_int_eq(tu_run("'%s' --control '%s' --send frobnicate >/dev/null", LINKEM, p.ctl), 1);
    ck_assert_int_eq(tu_run("'%s' --control '%s' --send cut sideways >/dev/null", LINKEM, p.ctl),
                     1);
    ck_assert_int_eq(
        tu_run("'%s' --control '%s/nothing' --send stats >/dev/null 2>&1", LINKEM, p.dir), 1);
    ck_assert(strncmp(ctl(&p, "help"), "ok commands:", 12) == 0);
    close(lfd);
    lk_stop(&p);
}
END_TEST

START_TEST(test_bad_arguments)
{
    static const char *const bad[] = {
        "",
        "--listen 127.0.0.1:0",
        "--connect 127.0.0.1:1",
        "--listen 127.0.0.1:0 --connect 127.0.0.1:1 --delay 10",
        "--listen 127.0.0.1:0 --connect 127.0.0.1:1 --delay -5ms",
        "--listen 127.0.0.1:0 --connect 127.0.0.1:1 --delay 2h",
        "--listen 127.0.0.1:0 --connect 127.0.0.1:1 --jitter 1.2.3ms",
        "--listen 127.0.0.1:0 --connect 127.0.0.1:1 --rate 50mbps",
        "--listen 127.0.0.1:0 --connect 127.0.0.1:1 --rate 50",
        "--listen 127.0.0.1:0 --connect 127.0.0.1:1 --rate 10bit",
        "--listen 127.0.0.1:0 --connect 127.0.0.1:1 --queue 1k",
        "--listen 127.0.0.1:0 --connect 127.0.0.1:1 --buffer 5",
        "--listen nonsense --connect 127.0.0.1:1",
        "--listen 127.0.0.1:0 --connect 127.0.0.1:0",
        "--listen 127.0.0.1:0 --connect 127.0.0.1:1 --frobnicate",
        "--listen 127.0.0.1:0 --connect 127.0.0.1:1 extra",
        "--listen 127.0.0.1:0 --connect 127.0.0.1:1 --delay",
        "--send stats",
        "--listen 127.0.0.1:0 --control /tmp/x --send stats",
    };
    char *dir = tu_tmpdir("linkem-args"), out[512];

    snprintf(out, sizeof(out), "%s/out", dir);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        size_t len;
        char *text;
        int rc = tu_run("'%s' %s >'%s' 2>&1", LINKEM, bad[i], out);

        text = tu_read_file(out, &len);
        ck_assert_ptr_nonnull(text);
        ck_assert_msg(rc == 2, "'%s' exited %d: %s", bad[i], rc, text);
        ck_assert_msg(strstr(text, "wm-linkem") != NULL, "'%s': no message: %s", bad[i], text);
        free(text);
    }
    ck_assert_int_eq(tu_run("'%s' --help >/dev/null", LINKEM), 0);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(test_listen_in_use)
{
    int port, lfd = listen_any(&port);

    /* A runtime failure, not a usage error: exit 1. */
    ck_assert_int_eq(
        tu_run("'%s' --listen 127.0.0.1:%d --connect 127.0.0.1:1 2>/dev/null", LINKEM, port), 1);
    close(lfd);
}
END_TEST

static int
bits_differing(const unsigned char *x, const unsigned char *y, size_t len)
{
    int bits = 0;

    for (size_t i = 0; i < len; i++)
        bits += __builtin_popcount((unsigned)(x[i] ^ y[i]));
    return bits;
}

/* `corrupt a2b 3`: exactly one bit flipped in each of the next three chunks, then none; b2a is
 * left alone; the counters say so. */
START_TEST(test_corrupt)
{
    struct lkproc p;
    int port, lfd = listen_any(&port), a, b, bits = 0;
    unsigned char msg[1000], got[1000];
    const char *r;

    for (size_t i = 0; i < sizeof(msg); i++)
        msg[i] = (unsigned char)(i * 31 + 7);
    lk_start(&p, port, "--seed", "7", NULL);
    pair_up(&p, lfd, &a, &b);
    round_trip(a, b);

    ck_assert_str_eq(ctl(&p, "corrupt"), "error: usage: corrupt [a2b|b2a|both] N");
    ck_assert_str_eq(ctl(&p, "corrupt a2b"), "error: usage: corrupt [a2b|b2a|both] N");
    ck_assert(strncmp(ctl(&p, "corrupt a2b 3x"), "error: corrupt: '3x'", 20) == 0);
    ck_assert_str_eq(ctl(&p, "corrupt a2b 3"), "ok a2b_corrupt_pending=3 b2a_corrupt_pending=0");
    /* Five messages, each read by linkem as one chunk or more: three bits in all, and the
     * last two messages intact whatever the split. */
    for (int m = 0; m < 5; m++) {
        int k;

        send_all(a, msg, sizeof(msg));
        ck_assert_uint_eq(recv_within(b, got, sizeof(got), 5000), sizeof(got));
        k = bits_differing(msg, got, sizeof(msg));
        bits += k;
        if (m >= 3)
            ck_assert_msg(k == 0, "message %d: %d bits flipped after the corruption ended", m, k);
        /* the other direction is not corrupted */
        send_all(b, msg, sizeof(msg));
        ck_assert_uint_eq(recv_within(a, got, sizeof(got), 5000), sizeof(got));
        ck_assert_int_eq(bits_differing(msg, got, sizeof(msg)), 0);
    }
    ck_assert_int_eq(bits, 3);
    r = ctl(&p, "stats");
    ck_assert_uint_eq(stat_u64(r, "a2b_corrupted"), 3);
    ck_assert_uint_eq(stat_u64(r, "a2b_corrupt_pending"), 0);
    ck_assert_uint_eq(stat_u64(r, "b2a_corrupted"), 0);

    /* Pending corruption can be cancelled. */
    ck_assert_str_eq(ctl(&p, "corrupt both 5"), "ok a2b_corrupt_pending=5 b2a_corrupt_pending=5");
    ck_assert_str_eq(ctl(&p, "corrupt 0"), "ok a2b_corrupt_pending=0 b2a_corrupt_pending=0");
    round_trip(a, b);
    close(a);
    close(b);
    close(lfd);
    lk_stop(&p);
}
END_TEST

static Suite *
linkem_suite(void)
{
    Suite *s = suite_create("linkem");
    TCase *tc;

    tc = tcase_create("relay");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_relay_intact);
    tcase_add_test(tc, test_relay_intact_shaped);
    tcase_add_test(tc, test_peer_reset_propagates);
    tcase_add_test(tc, test_many_connections);
    tcase_add_test(tc, test_connect_refused);
    suite_add_tcase(s, tc);

    tc = tcase_create("shaping");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_delay);
    tcase_add_test(tc, test_rate);
    tcase_add_test(tc, test_rate_shared);
    tcase_add_test(tc, test_backpressure);
    tcase_add_test(tc, test_buffer);
    suite_add_tcase(s, tc);

    tc = tcase_create("control");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_cut);
    tcase_add_test(tc, test_cut_holds_fin);
    tcase_add_test(tc, test_connect_during_cut);
    tcase_add_test(tc, test_reset);
    tcase_add_test(tc, test_corrupt);
    tcase_add_test(tc, test_control_client);
    tcase_add_test(tc, test_bad_arguments);
    tcase_add_test(tc, test_listen_in_use);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr;
    int failed;

    if (access(LINKEM, X_OK) != 0) {
        fprintf(stderr, "%s is not built\n", LINKEM);
        return EXIT_FAILURE;
    }
    sr = srunner_create(linkem_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
