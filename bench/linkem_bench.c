/*
 * linkem_bench.c - wm-linkem-bench: measures a TCP path, direct or through wm-linkem: round-trip
 * latency of small messages, and throughput each way.
 *
 *   wm-linkem-bench server --listen HOST:PORT
 *   wm-linkem-bench ping --connect HOST:PORT [--count N] [--size BYTES] [--warmup N]
 *   wm-linkem-bench send --connect HOST:PORT --bytes N
 *   wm-linkem-bench recv --connect HOST:PORT [--seconds S]
 *
 * The server forks one child per connection; the client's first byte picks the child's job:
 *   'P' echo everything back (ping-pong), 'S' sink until EOF and answer with the byte count
 *   and the time from the first to the last byte, 'G' send without end.
 * ping prints the distribution of round trips of --size-byte messages (one in flight);
 * send measures client-to-server throughput at the server, recv server-to-client throughput
 * at the client.  Throughput is the bytes that arrived after the first read over the time
 * from the first read to the last, so neither the connection's start nor a link's delay
 * enters it.  Output is one line of key=value pairs; exit status 0 on success, 1 on a
 * failure, 2 for bad arguments.  Blocking sockets, TCP_NODELAY, no threads.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "wio.h" /* wio_parse_hostport, wio_listen_tcp */

#define LB_BUF (256 * 1024)
#define LB_MSG_MAX (1024 * 1024)

static uint64_t
now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int
set_nodelay(int fd)
{
    int one = 1;

    return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) == 0 ? 0 : -errno;
}

WM_MUSTCHECK static int
write_all(int fd, const void *buf, size_t len)
{
    const unsigned char *p = buf;

    while (len > 0) {
        ssize_t w = send(fd, p, len, MSG_NOSIGNAL);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w == 0 ? -EPIPE : -errno;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

/* Reads exactly len bytes; -EPIPE on an early EOF. */
WM_MUSTCHECK static int
read_all(int fd, void *buf, size_t len)
{
    unsigned char *p = buf;

    while (len > 0) {
        ssize_t r = recv(fd, p, len, 0);

        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return r == 0 ? -EPIPE : -errno;
        p += r;
        len -= (size_t)r;
    }
    return 0;
}

static int
connect_to(const char *hostport)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int fd, ret = wio_parse_hostport(hostport, &ss, &len);

    if (ret < 0) {
        fprintf(stderr, "wm-linkem-bench: bad address %s: %s\n", hostport, wire_strerror(ret));
        return -1;
    }
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP);
    if (fd < 0 || connect(fd, (struct sockaddr *)&ss, len) != 0) {
        fprintf(stderr, "wm-linkem-bench: connect %s: %s\n", hostport, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    if (set_nodelay(fd) < 0)
        fprintf(stderr, "wm-linkem-bench: TCP_NODELAY: %s\n", strerror(errno));
    return fd;
}

/* ---- server ---- */

static int
fcntl_clear_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);

    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
        fprintf(stderr, "wm-linkem-bench: fcntl: %s\n", strerror(errno));
        return -1;
    }
    return 0;
}

static void
serve_echo(int fd, unsigned char *buf)
{
    for (;;) {
        ssize_t r = recv(fd, buf, LB_BUF, 0);

        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0 || write_all(fd, buf, (size_t)r) < 0)
            return;
    }
}

static void
serve_sink(int fd, unsigned char *buf)
{
    uint64_t bytes = 0, after_first = 0, first = 0, last = 0;
    char reply[128];
    int n;

    for (;;) {
        ssize_t r = recv(fd, buf, LB_BUF, 0);

        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return;
        if (r == 0)
            break;
        last = now_ns();
        if (bytes == 0)
            first = last;
        else
            after_first += (uint64_t)r;
        bytes += (uint64_t)r;
    }
    n = snprintf(reply, sizeof(reply), "%" PRIu64 " %" PRIu64 " %" PRIu64 "\n", bytes, after_first,
                 last - first);
    if (write_all(fd, reply, (size_t)n) < 0)
        fprintf(stderr, "wm-linkem-bench: sink reply: %s\n", strerror(errno));
}

static void
serve_generate(int fd, unsigned char *buf)
{
    memset(buf, 0x5a, LB_BUF);
    while (write_all(fd, buf, LB_BUF) == 0)
        ;
}

static int
cmd_server(const char *listen_addr)
{
    struct sigaction sa = {.sa_handler = SIG_IGN, .sa_flags = SA_NOCLDWAIT};
    int lfd, port;

    if (sigaction(SIGCHLD, &sa, NULL) != 0)
        return 1;
    lfd = wio_listen_tcp(listen_addr, 64, &port);
    if (lfd < 0) {
        fprintf(stderr, "wm-linkem-bench: listen %s: %s\n", listen_addr, wire_strerror(lfd));
        return 1;
    }
    /* wio_listen_tcp makes it non-blocking; this server blocks. */
    if (fcntl_clear_nonblock(lfd) < 0)
        return 1;
    fprintf(stderr, "wm-linkem-bench: serving on port %d\n", port);
    for (;;) {
        int fd = accept(lfd, NULL, NULL);
        pid_t pid;

        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            fprintf(stderr, "wm-linkem-bench: accept: %s\n", strerror(errno));
            return 1;
        }
        pid = fork();
        if (pid == 0) {
            unsigned char *buf = malloc(LB_BUF);
            unsigned char mode;

            close(lfd);
            if (set_nodelay(fd) < 0 || buf == NULL || read_all(fd, &mode, 1) < 0)
                _exit(1);
            if (mode == 'P')
                serve_echo(fd, buf);
            else if (mode == 'S')
                serve_sink(fd, buf);
            else if (mode == 'G')
                serve_generate(fd, buf);
            free(buf);
            close(fd);
            _exit(0);
        }
        if (pid < 0)
            fprintf(stderr, "wm-linkem-bench: fork: %s\n", strerror(errno));
        close(fd);
    }
}

/* ---- clients ---- */

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

static double
pct_us(const uint64_t *sorted, size_t n, double p)
{
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);

    return (double)sorted[i] / 1e3;
}

static int
cmd_ping(const char *addr, size_t count, size_t size, size_t warmup)
{
    unsigned char *msg = malloc(size), *back = malloc(size);
    uint64_t *rtt = calloc(count, sizeof(*rtt)), sum = 0;
    int fd = connect_to(addr), ret = 1;

    if (fd < 0 || msg == NULL || back == NULL || rtt == NULL)
        goto out;
    memset(msg, 'p', size);
    if (write_all(fd, "P", 1) < 0)
        goto io;
    for (size_t i = 0; i < warmup + count; i++) {
        uint64_t t0 = now_ns();

        if (write_all(fd, msg, size) < 0 || read_all(fd, back, size) < 0)
            goto io;
        if (i >= warmup)
            rtt[i - warmup] = now_ns() - t0;
    }
    for (size_t i = 0; i < count; i++)
        sum += rtt[i];
    qsort(rtt, count, sizeof(*rtt), cmp_u64);
    printf("ping: n=%zu size=%zu min_us=%.1f p50_us=%.1f p90_us=%.1f p99_us=%.1f max_us=%.1f "
           "mean_us=%.1f\n",
           count, size, (double)rtt[0] / 1e3, pct_us(rtt, count, 0.50), pct_us(rtt, count, 0.90),
           pct_us(rtt, count, 0.99), (double)rtt[count - 1] / 1e3,
           (double)sum / (double)count / 1e3);
    ret = 0;
    goto out;
io:
    fprintf(stderr, "wm-linkem-bench: ping: %s\n", strerror(errno));
out:
    if (fd >= 0)
        close(fd);
    free(msg);
    free(back);
    free(rtt);
    return ret;
}

static void
print_rate(const char *what, uint64_t bytes, uint64_t after_first, uint64_t span_ns)
{
    double s = (double)span_ns / 1e9;
    double bps = s > 0 ? (double)after_first * 8 / s : 0;

    printf("%s: bytes=%" PRIu64 " seconds=%.3f mbit_s=%.2f mbyte_s=%.2f\n", what, bytes, s,
           bps / 1e6, bps / 8e6);
}

static int
cmd_send(const char *addr, uint64_t total)
{
    unsigned char *buf = malloc(LB_BUF);
    char reply[128];
    uint64_t bytes, after_first, span;
    size_t len = 0;
    int fd = connect_to(addr), ret = 1;

    if (fd < 0 || buf == NULL)
        goto out;
    memset(buf, 0xa5, LB_BUF);
    if (write_all(fd, "S", 1) < 0)
        goto io;
    for (uint64_t sent = 0; sent < total;) {
        size_t n = total - sent < LB_BUF ? (size_t)(total - sent) : LB_BUF;

        if (write_all(fd, buf, n) < 0)
            goto io;
        sent += n;
    }
    if (shutdown(fd, SHUT_WR) != 0)
        goto io;
    while (len < sizeof(reply) - 1) {
        ssize_t r = recv(fd, reply + len, sizeof(reply) - 1 - len, 0);

        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            goto io;
        if (r == 0)
            break;
        len += (size_t)r;
    }
    reply[len] = '\0';
    if (sscanf(reply, "%" SCNu64 " %" SCNu64 " %" SCNu64, &bytes, &after_first, &span) != 3 ||
        bytes != total) {
        fprintf(stderr, "wm-linkem-bench: send: the server reports '%s' for %" PRIu64 " bytes\n",
                reply, total);
        goto out;
    }
    print_rate("send", bytes, after_first, span);
    ret = 0;
    goto out;
io:
    fprintf(stderr, "wm-linkem-bench: send: %s\n", strerror(errno));
out:
    if (fd >= 0)
        close(fd);
    free(buf);
    return ret;
}

static int
cmd_recv(const char *addr, double seconds)
{
    unsigned char *buf = malloc(LB_BUF);
    uint64_t bytes = 0, after_first = 0, first = 0, last = 0, end = 0;
    int fd = connect_to(addr), ret = 1;

    if (fd < 0 || buf == NULL)
        goto out;
    if (write_all(fd, "G", 1) < 0)
        goto io;
    for (;;) {
        ssize_t r = recv(fd, buf, LB_BUF, 0);

        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            goto io;
        last = now_ns();
        if (bytes == 0) {
            first = last;
            end = first + (uint64_t)(seconds * 1e9);
        } else {
            after_first += (uint64_t)r;
        }
        bytes += (uint64_t)r;
        if (last >= end)
            break;
    }
    print_rate("recv", bytes, after_first, last - first);
    ret = 0;
    goto out;
io:
    fprintf(stderr, "wm-linkem-bench: recv: %s\n", errno != 0 ? strerror(errno) : "EOF");
out:
    if (fd >= 0)
        close(fd);
    free(buf);
    return ret;
}

static void
usage(FILE *f)
{
    fprintf(f, "usage: wm-linkem-bench server --listen HOST:PORT\n"
               "       wm-linkem-bench ping --connect HOST:PORT [--count N] [--size BYTES] "
               "[--warmup N]\n"
               "       wm-linkem-bench send --connect HOST:PORT --bytes N\n"
               "       wm-linkem-bench recv --connect HOST:PORT [--seconds S]\n");
}

static bool
parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;

    errno = 0;
    if (s[0] < '0' || s[0] > '9')
        return false;
    *out = strtoull(s, &end, 10);
    return errno == 0 && *end == '\0' && *out >= min && *out <= max;
}

int
main(int argc, char **argv)
{
    static const struct option longopts[] = {{"listen", required_argument, NULL, 'l'},
                                             {"connect", required_argument, NULL, 'c'},
                                             {"count", required_argument, NULL, 'n'},
                                             {"size", required_argument, NULL, 's'},
                                             {"warmup", required_argument, NULL, 'w'},
                                             {"bytes", required_argument, NULL, 'b'},
                                             {"seconds", required_argument, NULL, 't'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    const char *addr = NULL, *cmd;
    uint64_t count = 20000, size = 64, warmup = 1000, bytes = 0, secs_ms = 3000;
    int opt;

    if (argc < 2 || strcmp(argv[1], "--help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    cmd = argv[1];
    optind = 2;
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        bool ok = true;

        switch (opt) {
        case 'l':
        case 'c':
            addr = optarg;
            break;
        case 'n':
            ok = parse_u64(optarg, 1, 100000000, &count);
            break;
        case 's':
            ok = parse_u64(optarg, 1, LB_MSG_MAX, &size);
            break;
        case 'w':
            ok = parse_u64(optarg, 0, 100000000, &warmup);
            break;
        case 'b':
            ok = parse_u64(optarg, 1, UINT64_MAX / 2, &bytes);
            break;
        case 't': {
            char *end;
            double s = strtod(optarg, &end);

            ok = *end == '\0' && s > 0 && s <= 3600;
            secs_ms = (uint64_t)(s * 1000);
            break;
        }
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "wm-linkem-bench: bad value '%s'\n", optarg);
            return 2;
        }
    }
    if (addr == NULL || optind != argc) {
        usage(stderr);
        return 2;
    }
    if (strcmp(cmd, "server") == 0)
        return cmd_server(addr);
    if (strcmp(cmd, "ping") == 0)
        return cmd_ping(addr, (size_t)count, (size_t)size, (size_t)warmup);
    if (strcmp(cmd, "send") == 0 && bytes > 0)
        return cmd_send(addr, bytes);
    if (strcmp(cmd, "recv") == 0)
        return cmd_recv(addr, (double)secs_ms / 1000);
    usage(stderr);
    return 2;
}
