/*
 * walpipe.c - wm-walpipe: streams PostgreSQL WAL segment files from one process to another
 * over the walmirror wire (io_uring, TLS 1.3 with mutual authentication, LZ4 streaming
 * frames, XXH3 checksums), and reports throughput and compression.
 *
 *   wm-walpipe recv --listen HOST:PORT --out DIR --name NAME --peer NAME TLS
 *   wm-walpipe send --connect HOST:PORT --in DIR --name NAME --peer NAME TLS
 *                   [--chunk BYTES] [--no-compress]
 *   TLS: --ca FILE --cert FILE --key FILE, or --plaintext (testing only)
 *
 * The sender reads the segment files of DIR (24-hex-digit names, in order) in chunks of
 * --chunk bytes (default 128 KiB, the walsender's) and sends each as a WAL frame at its LSN;
 * it takes the system identifier and timeline from the first page's long header.  The
 * receiver writes every frame at its place in a segment file of the same name, acknowledges
 * what it has written, and on the sender's BYE fsyncs and exits.  Exit status 0 means every
 * byte arrived; any wire error ends both sides with status 1 and a log line naming it.
 */
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "conn.h"
#include "cursor.h"
#include "frame.h"
#include "log.h"
#include "tls.h"
#include "wio.h"

#define WAL_SEG_DEFAULT (16u * 1024 * 1024)
#define SEND_BACKLOG_MAX (8u * 1024 * 1024)

struct options {
    bool send;
    const char *addr;
    const char *dir;
    const char *name;
    const char *peer;
    const char *ca, *cert, *key;
    bool plaintext;
    bool compress;
    size_t chunk;
    uint64_t segsize;
};

struct pipe_state {
    struct options opt;
    struct wio_loop *loop;
    struct conn *conn;
    bool established;
    bool done;
    int status;
    /* sender */
    char **files;
    size_t nfiles, file_idx;
    int in_fd;
    uint64_t in_off;
    uint64_t end_lsn;
    uint8_t *chunk;
    bool all_sent;
    /* receiver */
    int out_fd;
    uint64_t out_segno;
    uint32_t timeline;
    uint64_t written_lsn;
    uint64_t bytes;
    /* timing */
    struct timespec t0;
};

static double
elapsed(const struct timespec *t0)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

static int
cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool
is_segment_name(const char *n)
{
    if (strlen(n) != 24)
        return false;
    for (int i = 0; i < 24; i++)
        if (!((n[i] >= '0' && n[i] <= '9') || (n[i] >= 'A' && n[i] <= 'F')))
            return false;
    return true;
}

/* Segment file name -> timeline and first LSN. */
static void
segment_position(const char *name, uint64_t segsize, uint32_t *tli, uint64_t *lsn)
{
    unsigned t, hi, lo;

    sscanf(name, "%8X%8X%8X", &t, &hi, &lo);
    *tli = t;
    *lsn = ((uint64_t)hi * (0x100000000ull / segsize) + lo) * segsize;
}

static int
list_segments(struct pipe_state *ps)
{
    DIR *d = opendir(ps->opt.dir);
    struct dirent *e;

    if (d == NULL) {
        log_error("walpipe", "cannot open %s: %s", ps->opt.dir, strerror(errno));
        return -errno;
    }
    while ((e = readdir(d)) != NULL) {
        if (!is_segment_name(e->d_name))
            continue;
        ps->files = realloc(ps->files, (ps->nfiles + 1) * sizeof(char *));
        ps->files[ps->nfiles++] = strdup(e->d_name);
    }
    closedir(d);
    if (ps->nfiles == 0) {
        log_error("walpipe", "no WAL segment files in %s", ps->opt.dir);
        return -ENOENT;
    }
    qsort(ps->files, ps->nfiles, sizeof(char *), cmp_names);
    return 0;
}

/* Reads the long page header of the first segment: system identifier and segment size. */
static int
read_long_header(struct pipe_state *ps, struct msg_hello *hello)
{
    char path[4096];
    uint8_t page[40];
    struct cursor c;
    uint16_t magic, info;
    uint32_t tli, rem, segsize, blcksz;
    uint64_t addr, sysid;
    int fd;

    snprintf(path, sizeof(path), "%s/%s", ps->opt.dir, ps->files[0]);
    fd = open(path, O_RDONLY);
    if (fd < 0 || pread(fd, page, sizeof(page), 0) != (ssize_t)sizeof(page)) {
        log_error("walpipe", "cannot read %s", path);
        if (fd >= 0)
            close(fd);
        return -EIO;
    }
    close(fd);
    c = cur_init(page, sizeof(page));
    if (!cur_get_u16le(&c, &magic) || !cur_get_u16le(&c, &info) || !cur_get_u32le(&c, &tli) ||
        !cur_get_u64le(&c, &addr) || !cur_get_u32le(&c, &rem) || !cur_skip(&c, 4) ||
        !cur_get_u64le(&c, &sysid) || !cur_get_u32le(&c, &segsize) || !cur_get_u32le(&c, &blcksz) ||
        !(info & 0x2)) {
        log_error("walpipe", "%s does not start with a WAL long page header", path);
        return -EINVAL;
    }
    hello->system_id = sysid;
    hello->timeline = tli;
    ps->opt.segsize = segsize;
    log_info("walpipe", "WAL of system %" PRIu64 ", timeline %u, %u-byte segments, %zu files",
             sysid, tli, segsize, ps->nfiles);
    return 0;
}

/* ---- sender ---- */

static void
send_more(struct pipe_state *ps)
{
    while (!ps->all_sent && ps->established && conn_backlog(ps->conn) < SEND_BACKLOG_MAX) {
        ssize_t n;
        uint32_t tli;
        uint64_t lsn;

        if (ps->in_fd < 0) {
            char path[4096];
            if (ps->file_idx == ps->nfiles) {
                ps->all_sent = true;
                log_info("walpipe", "all WAL queued, up to %X/%X", (unsigned)(ps->end_lsn >> 32),
                         (unsigned)ps->end_lsn);
                return;
            }
            snprintf(path, sizeof(path), "%s/%s", ps->opt.dir, ps->files[ps->file_idx]);
            ps->in_fd = open(path, O_RDONLY);
            if (ps->in_fd < 0) {
                log_error("walpipe", "cannot open %s: %s", path, strerror(errno));
                ps->status = 1;
                ps->done = true;
                return;
            }
            ps->in_off = 0;
        }
        segment_position(ps->files[ps->file_idx], ps->opt.segsize, &tli, &lsn);
        n = pread(ps->in_fd, ps->chunk, ps->opt.chunk, (off_t)ps->in_off);
        if (n < 0) {
            log_error("walpipe", "read failed: %s", strerror(errno));
            ps->status = 1;
            ps->done = true;
            return;
        }
        if (n == 0) {
            close(ps->in_fd);
            ps->in_fd = -1;
            ps->file_idx++;
            continue;
        }
        if (conn_send_wal(ps->conn, lsn + ps->in_off, ps->chunk, (size_t)n) < 0) {
            log_error("walpipe", "cannot send WAL");
            ps->status = 1;
            ps->done = true;
            return;
        }
        ps->in_off += (uint64_t)n;
        ps->bytes += (uint64_t)n;
        ps->end_lsn = lsn + ps->in_off;
    }
}

static void
on_ack(void *ctx, const struct msg_ack *ack)
{
    struct pipe_state *ps = ctx;

    if (ps->all_sent && ack->flush_lsn >= ps->end_lsn && !ps->done) {
        double t = elapsed(&ps->t0);
        const struct codec_stats *st = conn_tx_stats(ps->conn);
        printf("walpipe: sent %" PRIu64 " bytes of WAL in %.2f s (%.1f MB/s), %" PRIu64
               " frames, %" PRIu64 " bytes on the wire, compression %.2fx\n",
               ps->bytes, t, (double)ps->bytes / 1e6 / t, st->frames, st->wire_bytes,
               st->wal_wire_bytes ? (double)st->wal_raw_bytes / (double)st->wal_wire_bytes : 0.0);
        fflush(stdout);
        ps->done = true; /* before conn_close: on_closed runs inside it */
        conn_close(ps->conn, 0, "all WAL sent and acknowledged");
    }
}

/* ---- receiver ---- */

static int
open_segment(struct pipe_state *ps, uint64_t segno)
{
    char path[4096];
    uint64_t per = 0x100000000ull / ps->opt.segsize;

    if (ps->out_fd >= 0) {
        if (fdatasync(ps->out_fd) < 0 || close(ps->out_fd) < 0)
            return -errno;
    }
    snprintf(path, sizeof(path), "%s/%08X%08X%08X", ps->opt.dir, ps->timeline,
             (unsigned)(segno / per), (unsigned)(segno % per));
    ps->out_fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (ps->out_fd < 0)
        return -errno;
    ps->out_segno = segno;
    return 0;
}

static int
on_hello(void *ctx, const struct msg_hello *peer, char *why, size_t whylen)
{
    struct pipe_state *ps = ctx;

    if (!ps->opt.send) {
        if (peer->role != MSG_ROLE_SOURCE) {
            snprintf(why, whylen, "expected a source, %s is a %s", peer->node_name,
                     msg_role_name(peer->role));
            return WIRE_EPROTO;
        }
        ps->timeline = peer->timeline;
        log_info("walpipe", "receiving WAL of system %" PRIu64 " timeline %u from %s",
                 peer->system_id, peer->timeline, peer->node_name);
    }
    return 0;
}

static void
on_wal(void *ctx, uint64_t lsn, const uint8_t *data, size_t len)
{
    struct pipe_state *ps = ctx;
    uint64_t segno = lsn / ps->opt.segsize;
    struct msg_ack ack;
    int rc = 0;

    if (ps->out_fd < 0 || segno != ps->out_segno)
        rc = open_segment(ps, segno);
    if (rc == 0 && (lsn % ps->opt.segsize) + len > ps->opt.segsize)
        rc = -EINVAL; /* a frame never spans segments in this tool */
    if (rc == 0 && pwrite(ps->out_fd, data, len, (off_t)(lsn % ps->opt.segsize)) != (ssize_t)len)
        rc = -EIO;
    if (rc < 0) {
        log_error("walpipe", "cannot write WAL at %X/%X: %s", (unsigned)(lsn >> 32), (unsigned)lsn,
                  strerror(-rc));
        conn_close(ps->conn, rc, "receiver cannot write WAL");
        ps->status = 1;
        ps->done = true;
        return;
    }
    ps->bytes += len;
    ps->written_lsn = lsn + len;
    ack = (struct msg_ack){.write_lsn = ps->written_lsn,
                           .flush_lsn = ps->written_lsn,
                           .apply_lsn = 0,
                           .send_time_us = clock_unix_us()};
    if (conn_send_ack(ps->conn, &ack) < 0)
        log_warning("walpipe", "cannot queue ACK");
}

/* ---- common ---- */

static void
on_established(void *ctx)
{
    struct pipe_state *ps = ctx;

    ps->established = true;
    clock_gettime(CLOCK_MONOTONIC, &ps->t0);
    if (ps->opt.send)
        send_more(ps);
}

static void
on_drained(void *ctx)
{
    struct pipe_state *ps = ctx;

    if (ps->opt.send)
        send_more(ps);
}

static void
on_closed(void *ctx, int reason, const char *message)
{
    struct pipe_state *ps = ctx;

    if (!ps->opt.send && reason == WIRE_ECLOSED && ps->established) {
        double t = elapsed(&ps->t0);
        const struct codec_stats *st = conn_rx_stats(ps->conn);
        if (ps->out_fd >= 0 && fdatasync(ps->out_fd) < 0) {
            log_error("walpipe", "fdatasync failed: %s", strerror(errno));
            ps->status = 1;
        }
        printf("walpipe: received %" PRIu64 " bytes of WAL through %X/%X in %.2f s (%.1f MB/s),"
               " compression %.2fx\n",
               ps->bytes, (unsigned)(ps->written_lsn >> 32), (unsigned)ps->written_lsn, t,
               (double)ps->bytes / 1e6 / t,
               st->wal_wire_bytes ? (double)st->wal_raw_bytes / (double)st->wal_wire_bytes : 0.0);
        fflush(stdout);
    } else if (!(ps->opt.send && ps->done && ps->status == 0)) {
        log_error("walpipe", "connection ended: %s", message);
        ps->status = 1;
    }
    ps->done = true;
}

static const struct conn_ops pipe_ops = {
    .on_hello = on_hello,
    .on_established = on_established,
    .on_wal = on_wal,
    .on_ack = on_ack,
    .on_drained = on_drained,
    .on_closed = on_closed,
};

static int accepted_fd = -1;

static void
on_accept(struct wio_acceptor *a, int fd)
{
    (void)a;
    if (accepted_fd < 0)
        accepted_fd = fd;
    else if (fd >= 0)
        close(fd);
}

static void
on_connect(struct wio_connector *c, int fd)
{
    (void)c;
    accepted_fd = fd;
}

static void
usage(FILE *f)
{
    fprintf(f, "usage: wm-walpipe recv --listen HOST:PORT --out DIR --name NAME --peer NAME TLS\n"
               "       wm-walpipe send --connect HOST:PORT --in DIR --name NAME --peer NAME TLS\n"
               "                       [--chunk BYTES] [--no-compress]\n"
               "TLS:   --ca FILE --cert FILE --key FILE | --plaintext (testing only)\n");
}

int
main(int argc, char **argv)
{
    static const struct option longopts[] = {{"listen", required_argument, NULL, 'l'},
                                             {"connect", required_argument, NULL, 'c'},
                                             {"out", required_argument, NULL, 'o'},
                                             {"in", required_argument, NULL, 'i'},
                                             {"name", required_argument, NULL, 'n'},
                                             {"peer", required_argument, NULL, 'p'},
                                             {"ca", required_argument, NULL, 'A'},
                                             {"cert", required_argument, NULL, 'C'},
                                             {"key", required_argument, NULL, 'K'},
                                             {"plaintext", no_argument, NULL, 'P'},
                                             {"chunk", required_argument, NULL, 'k'},
                                             {"no-compress", no_argument, NULL, 'z'},
                                             {"log-level", required_argument, NULL, 'v'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    struct pipe_state ps = {.in_fd = -1, .out_fd = -1};
    struct msg_hello hello = {.capabilities = MSG_CAP_LZ4};
    struct tls_config *tls = NULL;
    struct conn_config cc;
    struct wio_acceptor acc = {0};
    struct wio_connector con = {0};
    char err[512];
    int opt, rc, listen_fd = -1;

    ps.opt.compress = true;
    ps.opt.chunk = 128 * 1024;
    ps.opt.segsize = WAL_SEG_DEFAULT;
    if (argc < 2 || (strcmp(argv[1], "send") != 0 && strcmp(argv[1], "recv") != 0)) {
        usage(argc >= 2 && strcmp(argv[1], "--help") == 0 ? stdout : stderr);
        return argc >= 2 && strcmp(argv[1], "--help") == 0 ? 0 : 2;
    }
    ps.opt.send = strcmp(argv[1], "send") == 0;
    optind = 2;
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (opt) {
        case 'l':
        case 'c':
            ps.opt.addr = optarg;
            break;
        case 'o':
        case 'i':
            ps.opt.dir = optarg;
            break;
        case 'n':
            ps.opt.name = optarg;
            break;
        case 'p':
            ps.opt.peer = optarg;
            break;
        case 'A':
            ps.opt.ca = optarg;
            break;
        case 'C':
            ps.opt.cert = optarg;
            break;
        case 'K':
            ps.opt.key = optarg;
            break;
        case 'P':
            ps.opt.plaintext = true;
            break;
        case 'k':
            ps.opt.chunk = strtoul(optarg, NULL, 10);
            break;
        case 'z':
            ps.opt.compress = false;
            break;
        case 'v':
            if ((log_level = log_level_parse(optarg)) < 0) {
                fprintf(stderr, "wm-walpipe: unknown log level \"%s\"\n", optarg);
                return 2;
            }
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (ps.opt.addr == NULL || ps.opt.dir == NULL || ps.opt.name == NULL || ps.opt.peer == NULL ||
        (!ps.opt.plaintext && (ps.opt.ca == NULL || ps.opt.cert == NULL || ps.opt.key == NULL)) ||
        ps.opt.chunk == 0 || ps.opt.chunk > FRAME_MAX_RAW) {
        usage(stderr);
        return 2;
    }
    snprintf(hello.node_name, sizeof(hello.node_name), "%s", ps.opt.name);
    hello.role = ps.opt.send ? MSG_ROLE_SOURCE : MSG_ROLE_SINK;
    if (ps.opt.send) {
        if (list_segments(&ps) < 0 || read_long_header(&ps, &hello) < 0)
            return 1;
        ps.chunk = malloc(ps.opt.chunk);
    }
    if (!ps.opt.plaintext) {
        rc = tls_config_new(&tls, ps.opt.ca, ps.opt.cert, ps.opt.key, !ps.opt.send, err,
                            sizeof(err));
        if (rc < 0) {
            log_error("walpipe", "%s", err);
            return 1;
        }
    }
    rc = wio_loop_new(&ps.loop, 256);
    if (rc < 0) {
        log_error("walpipe", "io_uring unavailable: %s", strerror(-rc));
        return 1;
    }
    if (ps.opt.send) {
        rc = wio_connect_start(ps.loop, &con, ps.opt.addr, on_connect);
    } else {
        int port;
        listen_fd = wio_listen_tcp(ps.opt.addr, 4, &port);
        rc = listen_fd < 0 ? listen_fd : wio_accept_start(ps.loop, &acc, listen_fd, on_accept);
    }
    if (rc < 0) {
        log_error("walpipe", "%s %s: %s", ps.opt.send ? "connect" : "listen", ps.opt.addr,
                  strerror(-rc));
        return 1;
    }
    while (accepted_fd == -1)
        if (wio_run_once(ps.loop, 1000) < 0)
            return 1;
    if (accepted_fd < 0) {
        log_error("walpipe", "%s %s failed: %s", ps.opt.send ? "connect to" : "accept on",
                  ps.opt.addr, strerror(-accepted_fd));
        return 1;
    }
    if (!ps.opt.send)
        wio_accept_stop(&acc);
    cc = (struct conn_config){.tls = tls,
                              .peer_name = ps.opt.peer,
                              .hello = &hello,
                              .epoch = 1,
                              .compress = ps.opt.compress,
                              .lz4_acceleration = 1,
                              .heartbeat_ms = 1000,
                              .timeout_ms = 10000};
    rc = conn_new(&ps.conn, ps.loop, accepted_fd, !ps.opt.send, &cc, &pipe_ops, &ps);
    if (rc < 0) {
        log_error("walpipe", "cannot set up the connection: %s", wire_strerror(rc));
        return 1;
    }
    while (!ps.done)
        if ((rc = wio_run_once(ps.loop, 1000)) < 0) {
            log_error("walpipe", "event loop failed: %s", strerror(-rc));
            return 1;
        }
    /* Let the last frames (BYE, ERROR, alerts) reach the peer. */
    for (int i = 0; i < 20 && wio_run_once(ps.loop, 50) > 0; i++)
        ;
    conn_free(ps.conn);
    for (int i = 0; i < 5 && wio_run_once(ps.loop, 10) > 0; i++)
        ;
    if (listen_fd >= 0)
        close(listen_fd);
    wio_loop_free(ps.loop);
    tls_config_free(tls);
    for (size_t i = 0; i < ps.nfiles; i++)
        free(ps.files[i]);
    free(ps.files);
    free(ps.chunk);
    return ps.status;
}
