/*
 * linkem.c - wm-linkem: a user-space TCP link emulator (delay, jitter, bandwidth cap, cuts),
 * for the WAN benchmarks and the partition tests of fail-over, on machines without netem.
 *
 *   wm-linkem --listen HOST:PORT --connect HOST:PORT [--delay DUR] [--jitter DUR]
 *             [--rate RATE] [--buffer DUR] [--queue BYTES] [--control PATH] [--seed N]
 *             [--log-level LEVEL]
 *   wm-linkem --control PATH --send COMMAND [WORDS...]
 *
 * Model
 *   Every connection accepted on --listen (side A) gets its own connection to --connect
 *   (side B); bytes are relayed both ways.  Each direction, a2b (A to B) and b2a, is one
 *   emulated link that all connections share, as they would share a WAN link between two
 *   sites; each connection keeps its own queue and its own order on it.  The bytes of one
 *   read(2) form a chunk (under a rate cap, packets of about 1 ms of link time, at least 1448
 *   bytes); a chunk of n bytes arriving at t is released to the other side at
 *       sent    = max(link_free, t) + n * 8 / rate   (link_free = sent: the link serializes
 *                                                      the chunks of all connections in turn)
 *       release = max(previous release on this connection, sent + delay + jitter)
 *   where jitter is uniform in [-jitter, +jitter] and the max() keeps bytes in order (so
 *   heavy jitter on a busy link raises the mean delay, as it does for netem with a rate).
 *   Without a rate, sent = t.  Without delay, jitter or rate, a read is written at once: no
 *   copy, no queue.  A peer's FIN crosses the link like data (after the bytes before it); a
 *   peer's RST, or an error on either socket, crosses it too and then resets the other side.
 *
 * Back-pressure: a connection stops reading from a source, as a closed TCP window would stop
 *   the sender, while it holds more than --queue bytes in that direction (default 64 MiB: a
 *   memory bound) or, under a rate cap, while the link holds more than --buffer of link time
 *   waiting to be serialized (default 100 ms: the bottleneck router's buffer, shared by all
 *   connections); it reads again below three quarters of that.
 *   Under a cap set at startup, linkem's sockets also take an Ethernet MSS and a receive
 *   buffer of about 2 ms of the link, so that the loopback legs do not hide megabytes of
 *   buffering: a saturating sender then sees the queueing delay of the emulated path.
 *
 * Cuts: `cut` (both directions, or `cut a2b` / `cut b2a`) forwards nothing and reads nothing
 *   on the cut direction: what a partition looks like to TCP, where every packet is lost and
 *   the endpoints only notice through their own timeouts.  Bytes already queued are held, not
 *   dropped.  `restore` treats everything held as retransmitted at that moment: it crosses the
 *   link again (serialization and delay) from the time of the restore.  A connection accepted
 *   during a cut is held: B is contacted only once the link works both ways again.
 *   (Connection setup costs no round trip: A's connect completes at once, on loopback, and B
 *   is connected when A is accepted; only the bytes and the FIN/RST cross the link.)
 *
 * Control: --control PATH is a unix stream socket taking one-line commands, each answered by
 *   one line, "ok ..." or "error: ...":
 *       cut [a2b|b2a|both]          restore [a2b|b2a|both]
 *       reset                       close every relayed connection with a RST, both sides
 *       set [a2b|b2a|both] delay=DUR jitter=DUR rate=RATE buffer=DUR
 *                                   (any subset; applies to the bytes that enter afterwards)
 *       corrupt [a2b|b2a|both] N    flip one random bit in each of the next N chunks that
 *                                   enter the direction (0 cancels what is pending)
 *       stats                       connections, bytes each way, queued bytes, settings,
 *                                   chunks corrupted and still to corrupt
 *   `wm-linkem --control PATH --send cut` is the client (exit 0 on "ok", 1 otherwise) for
 *   shells without socat.  Signals: SIGUSR1 = cut, SIGUSR2 = restore, SIGHUP = reset,
 *   SIGINT / SIGTERM = close everything and exit 0.
 *
 * Units: durations as a decimal number with us, ms or s ("0" alone is allowed); rates with
 *   kbit, mbit or gbit, decimal multiples as tc counts them (50mbit = 50,000,000 bit/s),
 *   "0" meaning no cap.  Bad arguments print a message and exit 2; runtime failures exit 1.
 *
 * Why not wire/wio: linkem must stop reading a socket for back-pressure and during a cut, and
 *   wio's streams keep a multishot recv armed until they close; its timers count in
 *   milliseconds, while a 1448-byte packet at 50 Mbit/s lasts 232 us.  So this file has its
 *   own level-triggered epoll loop, whose waits take a nanosecond deadline (epoll_pwait2) on
 *   CLOCK_MONOTONIC with the timer slack set to 1 ns, and whose only timer structure is a
 *   binary heap of the directions waiting for their next release.  No threads.
 *
 * Corruption: `corrupt` models bit errors that got past the link layer's and TCP's checksums,
 *   for tests of what sits above TCP (walmirror's TLS must catch them).  A chunk here is the
 *   bytes of one read(2) from the source, before it is split into packets; the bit is chosen
 *   uniformly among them with the --seed generator, and each corrupted chunk is logged at
 *   info level.  Chunks are counted over all connections, in the order they are read.
 *
 * Lifetime: a connection is HELD (accepted during a cut), CONNECTING (B's connect in flight),
 *   OPEN, then CLOSED; a closed
 *   connection's sockets are closed at once and its memory freed at the end of the loop turn,
 *   so that events already fetched for it are recognised and skipped.
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
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "log.h"
#include "util.h"
#include "wio.h" /* wio_parse_hostport and wio_listen_tcp only; see "Why not wire/wio" */

#define LK_COMPONENT "linkem"
#define LK_NS_PER_US UINT64_C(1000)
#define LK_NS_PER_MS UINT64_C(1000000)
#define LK_NS_PER_S UINT64_C(1000000000)
#define LK_READ_MAX (256 * 1024)       /* one read per readiness event, for fairness */
#define LK_QUEUE_DEFAULT (64ull << 20) /* per direction and connection */
#define LK_BUFFER_DEFAULT_NS (100 * LK_NS_PER_MS)
#define LK_MSS 1448                      /* the MSS of linkem's sockets under a rate cap */
#define LK_SOCKBUF_MIN (16 * 1024)       /* their receive buffer: 2 ms of the link, in... */
#define LK_SOCKBUF_MAX (4 * 1024 * 1024) /* ...these bounds */
#define LK_IOV_MAX 64                    /* chunks per sendmsg */
#define LK_PKT_MIN 1448                  /* packet size under a rate cap: an Ethernet MSS... */
#define LK_PKT_MAX (64 * 1024)           /* ...up to 1 ms of link time, at most 64 KiB */
#define LK_EVENTS 64
#define LK_ACCEPT_BURST 32
#define LK_ACCEPT_PAUSE_NS (100 * LK_NS_PER_MS) /* after EMFILE and the like */
#define LK_CTL_CLIENTS_MAX 16
#define LK_CTL_LINE_MAX 512
#define LK_CTL_TIMEOUT_S 10
#define LK_DURATION_MAX_NS (3600 * LK_NS_PER_S)
#define LK_RATE_MIN 1000ull          /* 1 kbit/s */
#define LK_RATE_MAX 1000000000000ull /* 1000 gbit/s */
#define LK_NOT_QUEUED SIZE_MAX

/* Sides and directions: side A (accepted) sends on direction LK_A2B, side B on LK_B2A; so side
 * s sends on direction s and receives from direction s ^ 1. */
enum lk_side_id { LK_A = 0, LK_B = 1 };
enum lk_dir_id { LK_A2B = 0, LK_B2A = 1 };
#define LK_DIR_MASK_A2B (1u << LK_A2B)
#define LK_DIR_MASK_B2A (1u << LK_B2A)
#define LK_DIR_MASK_BOTH (LK_DIR_MASK_A2B | LK_DIR_MASK_B2A)

static const char *const lk_dir_names[] = {"a2b", "b2a"};

/* What an epoll event's data.ptr points at. */
enum lk_handle_kind { LK_H_LISTEN, LK_H_CONTROL, LK_H_CTL_CLIENT, LK_H_SIGNAL, LK_H_SIDE };

struct lk_handle {
    enum lk_handle_kind kind;
};

struct lk_params {
    uint64_t delay_ns;
    uint64_t jitter_ns;
    uint64_t rate_bps;  /* bit/s; 0: no cap */
    uint64_t buffer_ns; /* with a cap: most link time queued ahead of the link; 0: no limit */
};

enum lk_chunk_kind { LK_CHUNK_DATA, LK_CHUNK_FIN, LK_CHUNK_RST };

struct lk_chunk {
    struct lk_chunk *next;
    uint64_t arrival_ns;
    uint64_t release_ns;
    uint32_t len; /* data bytes; 0 for FIN and RST */
    uint32_t off; /* bytes of data already written to the destination */
    enum lk_chunk_kind kind;
    unsigned char data[];
};

struct lk_side {
    struct lk_handle h;
    struct lk_conn *conn;
    int fd;          /* -1 once closed */
    unsigned id;     /* enum lk_side_id */
    uint32_t events; /* registered with epoll; 0: not registered */
};

struct lk_dir {
    struct lk_conn *conn;
    unsigned id; /* enum lk_dir_id */
    struct lk_chunk *head, *tail;
    size_t queued;            /* data bytes held */
    uint64_t last_release_ns; /* release time of the newest chunk: no reordering */
    size_t heap_idx;          /* position in the timer heap, or LK_NOT_QUEUED */
    bool src_done;            /* FIN or RST of the source queued: read it no more */
    bool closed;              /* nothing more will be written to the destination */
    bool blocked;             /* the destination's socket is full: waiting for EPOLLOUT */
    bool paused_queue;        /* over --queue: not reading the source */
    bool paused_link;         /* the link's buffer is full: not reading the source */
    uint64_t bytes;           /* delivered */
};

/* HELD: accepted during a cut, B not contacted yet (its SYN would be lost); CONNECTING: B's
 * connect in flight. */
enum lk_conn_state { LK_HELD, LK_CONNECTING, LK_OPEN, LK_CLOSED };

static const char *const lk_state_names[] = {"held", "connecting", "open", "closed"};

struct lk_conn {
    struct lk *lk;
    struct lk_conn *prev, *next; /* lk->conns, or lk->graveyard once closed */
    uint64_t id;
    enum lk_conn_state state;
    struct lk_side side[2];
    struct lk_dir dir[2];
};

struct lk_ctl {
    struct lk_handle h;
    struct lk_ctl *prev, *next;
    int fd;
    size_t len;
    char line[LK_CTL_LINE_MAX];
};

struct lk_options {
    const char *listen;
    const char *connect;
    const char *control;
    struct lk_params params;
    uint64_t queue_limit;
    uint64_t seed;
};

struct lk {
    int epfd;
    struct lk_handle listen_h;
    int listen_fd;
    int listen_port;
    bool accepting;
    uint64_t accept_resume_ns; /* 0: not paused */
    struct lk_handle ctl_h;
    int ctl_fd;
    const char *ctl_path;
    struct lk_ctl *ctl_clients;
    unsigned n_ctl;
    struct lk_handle sig_h;
    int sig_fd;

    struct sockaddr_storage dst;
    socklen_t dst_len;
    const char *dst_name;

    struct lk_params params[2]; /* per direction */
    uint64_t link_free_ns[2];   /* when each direction's link has serialized all it took */
    bool link_waiters[2];       /* some connection waits for room in the link's buffer */
    bool cut[2];
    uint64_t corrupt_pending[2]; /* chunks still to corrupt, per direction */
    uint64_t corrupted[2];       /* chunks corrupted so far */
    size_t queue_limit;
    int sockbuf; /* > 0: SO_RCVBUF and an MSS of LK_MSS for every relayed socket */
    uint64_t rng;

    struct lk_dir **heap; /* min-heap on head->release_ns */
    size_t heap_len, heap_cap;

    struct lk_conn *conns;
    struct lk_conn *graveyard;
    uint64_t next_id;
    uint64_t n_active, n_accepted, n_connect_failed, n_reset;
    uint64_t bytes[2]; /* delivered, per direction, over all connections */

    unsigned char *scratch;
    bool stop;
};

static uint64_t
mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * LK_NS_PER_S + (uint64_t)ts.tv_nsec;
}

/* xorshift64*: jitter needs no more. */
static uint64_t
lk_random(struct lk *lk)
{
    lk->rng ^= lk->rng >> 12;
    lk->rng ^= lk->rng << 25;
    lk->rng ^= lk->rng >> 27;
    return lk->rng * 0x2545F4914F6CDD1Dull;
}

/* ---- parsing ---- */

/*
 * Parses a decimal number ("12", "1.5") followed by one of units[] (NULL-terminated, with
 * scale[] their multipliers) into *out.  A bare "0" is allowed.  Returns 0, -EINVAL for bad
 * syntax or a missing unit, -ERANGE outside [0, max].
 */
static int
parse_scaled(const char *s, const char *const *units, const uint64_t *scale, uint64_t max,
             uint64_t *out)
{
    uint64_t ipart = 0, fnum = 0, fden = 1;
    const char *p = s;
    bool digits = false;

    while (*p >= '0' && *p <= '9') {
        if (ipart > UINT64_MAX / 10 - 9)
            return -ERANGE;
        ipart = ipart * 10 + (uint64_t)(*p++ - '0');
        digits = true;
    }
    if (*p == '.') {
        p++;
        while (*p >= '0' && *p <= '9') {
            if (fden <= UINT64_MAX / 100) {
                fnum = fnum * 10 + (uint64_t)(*p - '0');
                fden *= 10;
            }
            p++;
            digits = true;
        }
    }
    if (!digits)
        return -EINVAL;
    if (*p == '\0') {
        if (ipart != 0 || fnum != 0)
            return -EINVAL; /* a unit is required for anything but zero */
        *out = 0;
        return 0;
    }
    for (size_t i = 0; units[i] != NULL; i++) {
        long double v;

        if (strcmp(p, units[i]) != 0)
            continue;
        v = ((long double)ipart + (long double)fnum / (long double)fden) * (long double)scale[i];
        if (v > (long double)max)
            return -ERANGE;
        *out = (uint64_t)(v + 0.5L);
        return 0;
    }
    return -EINVAL;
}

/* "10ms", "500us", "1.5s", "0" -> nanoseconds (at most an hour). */
static int
parse_duration(const char *s, uint64_t *ns)
{
    static const char *const units[] = {"us", "ms", "s", NULL};
    static const uint64_t scale[] = {LK_NS_PER_US, LK_NS_PER_MS, LK_NS_PER_S};

    return parse_scaled(s, units, scale, LK_DURATION_MAX_NS, ns);
}

/* "50mbit", "1gbit", "0" -> bit/s, decimal multiples as tc counts them; 0 is no cap. */
static int
parse_rate(const char *s, uint64_t *bps)
{
    static const char *const units[] = {"bit", "kbit", "mbit", "gbit", NULL};
    static const uint64_t scale[] = {1, 1000, 1000000, 1000000000};
    int ret = parse_scaled(s, units, scale, LK_RATE_MAX, bps);

    if (ret == 0 && *bps != 0 && *bps < LK_RATE_MIN)
        return -ERANGE;
    return ret;
}

/* "65536", "512k", "64m", "1g" (binary multiples) -> bytes, at least 64 KiB. */
static int
parse_bytes(const char *s, uint64_t *out)
{
    uint64_t v = 0, mult = 1;
    const char *p = s;

    if (*p < '0' || *p > '9')
        return -EINVAL;
    while (*p >= '0' && *p <= '9') {
        if (v > (UINT64_MAX - 9) / 10)
            return -ERANGE;
        v = v * 10 + (uint64_t)(*p++ - '0');
    }
    if (*p == 'k' || *p == 'K')
        mult = 1ull << 10;
    else if (*p == 'm' || *p == 'M')
        mult = 1ull << 20;
    else if (*p == 'g' || *p == 'G')
        mult = 1ull << 30;
    else if (*p != '\0')
        return -EINVAL;
    if (*p != '\0' && p[1] != '\0' && strcmp(p + 1, "iB") != 0 && strcmp(p + 1, "B") != 0)
        return -EINVAL;
    if (v > (1ull << 40) / mult)
        return -ERANGE;
    v *= mult;
    if (v < 64 * 1024)
        return -ERANGE;
    *out = v;
    return 0;
}

/* Formats ns as "12.5ms" or "0". */
static const char *
fmt_duration(char *buf, size_t cap, uint64_t ns)
{
    if (ns == 0)
        snprintf(buf, cap, "0");
    else if (ns % LK_NS_PER_MS == 0)
        snprintf(buf, cap, "%" PRIu64 "ms", ns / LK_NS_PER_MS);
    else
        snprintf(buf, cap, "%.3fms", (double)ns / (double)LK_NS_PER_MS);
    return buf;
}

static const char *
fmt_rate(char *buf, size_t cap, uint64_t bps)
{
    if (bps == 0)
        snprintf(buf, cap, "unlimited");
    else if (bps % 1000000 == 0)
        snprintf(buf, cap, "%" PRIu64 "mbit", bps / 1000000);
    else
        snprintf(buf, cap, "%" PRIu64 "bit", bps);
    return buf;
}

/* ---- the timer heap: directions whose head chunk is due in the future ---- */

static bool
heap_before(const struct lk_dir *a, const struct lk_dir *b)
{
    return a->head->release_ns < b->head->release_ns;
}

static void
heap_set(struct lk *lk, size_t i, struct lk_dir *d)
{
    lk->heap[i] = d;
    d->heap_idx = i;
}

static void
heap_sift_up(struct lk *lk, size_t i)
{
    struct lk_dir *d = lk->heap[i];

    while (i > 0) {
        size_t parent = (i - 1) / 2;

        if (!heap_before(d, lk->heap[parent]))
            break;
        heap_set(lk, i, lk->heap[parent]);
        i = parent;
    }
    heap_set(lk, i, d);
}

static void
heap_sift_down(struct lk *lk, size_t i)
{
    struct lk_dir *d = lk->heap[i];

    for (;;) {
        size_t c = 2 * i + 1;

        if (c >= lk->heap_len)
            break;
        if (c + 1 < lk->heap_len && heap_before(lk->heap[c + 1], lk->heap[c]))
            c++;
        if (!heap_before(lk->heap[c], d))
            break;
        heap_set(lk, i, lk->heap[c]);
        i = c;
    }
    heap_set(lk, i, d);
}

/* Room for both directions of every connection, reserved when a connection opens so that
 * heap_push never fails. */
WM_MUSTCHECK static int
heap_reserve(struct lk *lk, size_t n)
{
    struct lk_dir **h;
    size_t cap;

    if (n <= lk->heap_cap)
        return 0;
    cap = lk->heap_cap < 64 ? 64 : lk->heap_cap;
    while (cap < n)
        cap *= 2;
    h = realloc(lk->heap, cap * sizeof(*h));
    if (h == NULL)
        return -ENOMEM;
    lk->heap = h;
    lk->heap_cap = cap;
    return 0;
}

static void
heap_push(struct lk *lk, struct lk_dir *d)
{
    heap_set(lk, lk->heap_len++, d);
    heap_sift_up(lk, d->heap_idx);
}

static void
heap_remove(struct lk *lk, struct lk_dir *d)
{
    size_t i = d->heap_idx;
    struct lk_dir *last;

    if (i == LK_NOT_QUEUED)
        return;
    d->heap_idx = LK_NOT_QUEUED;
    last = lk->heap[--lk->heap_len];
    if (last == d)
        return;
    heap_set(lk, i, last);
    if (i > 0 && heap_before(last, lk->heap[(i - 1) / 2]))
        heap_sift_up(lk, i);
    else
        heap_sift_down(lk, i);
}

/* ---- connections ---- */

static void dir_service(struct lk *lk, struct lk_dir *d, uint64_t now);

static bool
side_wants_read(const struct lk *lk, const struct lk_conn *c, unsigned s)
{
    const struct lk_dir *out = &c->dir[s];

    if (c->state == LK_CLOSED || c->side[s].fd < 0)
        return false;
    if (c->state != LK_OPEN && s == LK_B)
        return false;
    return !out->src_done && !out->paused_queue && !out->paused_link && !lk->cut[s];
}

static void lk_conn_close(struct lk *lk, struct lk_conn *c, bool abort, const char *why);

/* Registers with epoll what each side of c waits for now; nothing at all when it waits for
 * nothing, so that a hang-up we are not ready to handle does not wake the loop in vain. */
static void
conn_update_events(struct lk *lk, struct lk_conn *c)
{
    for (unsigned s = 0; s < 2 && c->state != LK_CLOSED; s++) {
        struct lk_side *sd = &c->side[s];
        struct epoll_event ev = {.data.ptr = &sd->h};
        uint32_t want = 0;
        int op, ret;

        if (sd->fd < 0)
            continue;
        if (side_wants_read(lk, c, s))
            want |= EPOLLIN | EPOLLRDHUP;
        if (c->state == LK_CONNECTING ? s == LK_B : c->dir[s ^ 1].blocked)
            want |= EPOLLOUT;
        if (want == sd->events)
            continue;
        op = want == 0 ? EPOLL_CTL_DEL : sd->events == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
        ev.events = want;
        ret = epoll_ctl(lk->epfd, op, sd->fd, &ev);
        if (ret != 0) {
            log_error(LK_COMPONENT, "conn %" PRIu64 ": epoll_ctl: %s", c->id, strerror(errno));
            lk_conn_close(lk, c, true, "epoll_ctl failed");
            return;
        }
        sd->events = want;
    }
}

static void
chunks_free(struct lk_chunk *ch)
{
    while (ch != NULL) {
        struct lk_chunk *next = ch->next;

        free(ch);
        ch = next;
    }
}

/* Drops everything d holds and ends it: used when its destination has failed. */
static void
dir_drop(struct lk *lk, struct lk_dir *d)
{
    heap_remove(lk, d);
    chunks_free(d->head);
    d->head = d->tail = NULL;
    d->queued = 0;
    d->src_done = true;
    d->closed = true;
    d->blocked = false;
    d->paused_queue = false;
    d->paused_link = false;
}

static void
side_close_fd(struct lk_side *sd, bool abort)
{
    if (sd->fd < 0)
        return;
    if (abort) {
        /* SO_LINGER 0: close sends a RST, as a crashed host's kernel would. */
        struct linger lg = {.l_onoff = 1, .l_linger = 0};

        if (setsockopt(sd->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) != 0)
            log_debug(LK_COMPONENT, "SO_LINGER on fd %d: %s", sd->fd, strerror(errno));
    }
    /* close() also takes the fd out of the epoll set. */
    if (close(sd->fd) != 0)
        log_debug(LK_COMPONENT, "close(%d): %s", sd->fd, strerror(errno));
    sd->fd = -1;
    sd->events = 0;
}

static void
conn_set_state(struct lk_conn *c, enum lk_conn_state state, const char *why)
{
    log_debug(LK_COMPONENT, "conn %" PRIu64 ": %s -> %s (%s)", c->id, lk_state_names[c->state],
              lk_state_names[state], why);
    c->state = state;
}

/* Closes both sides (with a RST if abort) and retires c; idempotent.  c stays allocated until
 * the end of the loop turn. */
static void
lk_conn_close(struct lk *lk, struct lk_conn *c, bool abort, const char *why)
{
    if (c->state == LK_CLOSED)
        return;
    conn_set_state(c, LK_CLOSED, why);
    log_info(LK_COMPONENT,
             "conn %" PRIu64 " closed (%s): a2b %" PRIu64 " bytes, b2a %" PRIu64 " bytes", c->id,
             why, c->dir[LK_A2B].bytes, c->dir[LK_B2A].bytes);
    for (unsigned i = 0; i < 2; i++) {
        dir_drop(lk, &c->dir[i]);
        side_close_fd(&c->side[i], abort);
    }
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        lk->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    c->prev = NULL;
    c->next = lk->graveyard;
    lk->graveyard = c;
    lk->n_active--;
}

/* Both directions delivered their FIN: a graceful end. */
static void
conn_check_done(struct lk *lk, struct lk_conn *c)
{
    if (c->state == LK_OPEN && c->dir[0].closed && c->dir[1].closed && c->dir[0].head == NULL &&
        c->dir[1].head == NULL)
        lk_conn_close(lk, c, false, "both sides closed");
}

/*
 * Returns the release time of a chunk of n bytes entering d at t, and advances d's link:
 * serialization behind what the link already carries, then delay and jitter, never before
 * the previous chunk.
 */
static uint64_t
dir_schedule(struct lk *lk, struct lk_dir *d, uint64_t t, size_t n)
{
    const struct lk_params *p = &lk->params[d->id];
    uint64_t sent = t, release;

    if (p->rate_bps > 0) {
        uint64_t *link_free = &lk->link_free_ns[d->id];
        uint64_t start = *link_free > t ? *link_free : t;

        *link_free = start + (uint64_t)n * 8u * LK_NS_PER_S / p->rate_bps;
        sent = *link_free;
    }
    release = sent + p->delay_ns;
    if (p->jitter_ns > 0) {
        uint64_t span = 2 * p->jitter_ns + 1;
        int64_t j = (int64_t)(lk_random(lk) % span) - (int64_t)p->jitter_ns;

        if (j >= 0)
            release += (uint64_t)j;
        else
            release = release - sent > (uint64_t)-j ? release - (uint64_t)-j : sent;
    }
    if (release < d->last_release_ns)
        release = d->last_release_ns;
    d->last_release_ns = release;
    return release;
}

static void
dir_append(struct lk_dir *d, struct lk_chunk *ch)
{
    ch->next = NULL;
    if (d->tail != NULL)
        d->tail->next = ch;
    else
        d->head = ch;
    d->tail = ch;
    d->queued += ch->len;
}

static void dir_mark(struct lk *lk, struct lk_dir *d, enum lk_chunk_kind kind, uint64_t now);

/* Side s failed (reset, or a socket error): forget what was going to it, stop reading the
 * other side, and send the RST across the link behind the bytes s sent before. */
static void
side_failed(struct lk *lk, struct lk_conn *c, unsigned s, int err, uint64_t now)
{
    struct lk_side *sd = &c->side[s];

    if (c->state == LK_CLOSED || sd->fd < 0)
        return;
    log_info(LK_COMPONENT, "conn %" PRIu64 ": side %c failed: %s", c->id, "AB"[s],
             wire_strerror(err));
    if (c->state != LK_OPEN || c->side[s ^ 1].fd < 0) {
        lk_conn_close(lk, c, true, "side failed");
        return;
    }
    side_close_fd(sd, true);
    dir_drop(lk, &c->dir[s ^ 1]);
    dir_mark(lk, &c->dir[s], LK_CHUNK_RST, now);
    conn_update_events(lk, c);
}

/* Queues a FIN or RST from d's source; it crosses the link like a zero-length chunk. */
static void
dir_mark(struct lk *lk, struct lk_dir *d, enum lk_chunk_kind kind, uint64_t now)
{
    struct lk_chunk *ch = malloc(sizeof(*ch));
    bool was_empty = d->head == NULL;

    d->src_done = true;
    if (ch == NULL) {
        lk_conn_close(lk, d->conn, true, "out of memory");
        return;
    }
    *ch = (struct lk_chunk){.arrival_ns = now, .kind = kind};
    ch->release_ns = dir_schedule(lk, d, now, 0);
    dir_append(d, ch);
    if (was_empty)
        dir_service(lk, d, now);
    conn_update_events(lk, d->conn);
}

/* A direction's backlog: the link time needed for what entered its link (from any
 * connection) and is not serialized yet. */
static uint64_t
link_backlog_ns(const struct lk *lk, unsigned dir, uint64_t now)
{
    return lk->link_free_ns[dir] > now ? lk->link_free_ns[dir] - now : 0;
}

/* Whether the link's buffer holds more than num/den of --buffer (1/1 to pause the sources,
 * 3/4 to resume them, so that they do not flap). */
static bool
link_full(const struct lk *lk, unsigned dir, uint64_t now, unsigned num, unsigned den)
{
    const struct lk_params *p = &lk->params[dir];

    return p->rate_bps > 0 && p->buffer_ns > 0 &&
           link_backlog_ns(lk, dir, now) > p->buffer_ns / den * num;
}

/* When the sources waiting for room in dir's link buffer may read again; UINT64_MAX if none
 * waits. */
static uint64_t
link_resume_at(const struct lk *lk, unsigned dir)
{
    const struct lk_params *p = &lk->params[dir];
    uint64_t keep;

    if (!lk->link_waiters[dir])
        return UINT64_MAX;
    if (p->rate_bps == 0 || p->buffer_ns == 0)
        return 0; /* the limit was lifted at run time */
    keep = p->buffer_ns / 4 * 3;
    return lk->link_free_ns[dir] > keep ? lk->link_free_ns[dir] - keep : 0;
}

/* The link's buffer has room again: every connection waiting for it reads again. */
static void
link_resume(struct lk *lk, unsigned dir)
{
    lk->link_waiters[dir] = false;
    for (struct lk_conn *c = lk->conns, *next; c != NULL; c = next) {
        next = c->next; /* conn_update_events may close c */
        if (!c->dir[dir].paused_link)
            continue;
        c->dir[dir].paused_link = false;
        conn_update_events(lk, c);
    }
}

/* Writes out of d what it can, n bytes at most, straight from buf: the path of a link without
 * delay or cap.  Returns the bytes written, or -1 after the destination failed. */
static ssize_t
dir_send_now(struct lk *lk, struct lk_dir *d, const void *buf, size_t n, uint64_t now)
{
    struct lk_conn *c = d->conn;
    ssize_t w;

    do
        w = send(c->side[d->id ^ 1].fd, buf, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (w < 0 && errno == EINTR);
    if (w < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        side_failed(lk, c, d->id ^ 1, -errno, now);
        return -1;
    }
    d->bytes += (uint64_t)w;
    lk->bytes[d->id] += (uint64_t)w;
    return w;
}

/* n bytes read from d's source at now: schedule them, in packets under a rate cap. */
static void
dir_input(struct lk *lk, struct lk_dir *d, const unsigned char *buf, size_t n, uint64_t now)
{
    struct lk_conn *c = d->conn;
    uint64_t rate = lk->params[d->id].rate_bps;
    size_t pkt = n, off = 0;
    bool was_empty = d->head == NULL;

    if (rate > 0) {
        pkt = (size_t)(rate / 8000); /* 1 ms of link time */
        pkt = pkt < LK_PKT_MIN ? LK_PKT_MIN : pkt > LK_PKT_MAX ? LK_PKT_MAX : pkt;
    }
    while (off < n) {
        size_t len = n - off < pkt ? n - off : pkt;
        uint64_t release = dir_schedule(lk, d, now, len);
        struct lk_chunk *ch;

        if (d->head == NULL && release <= now && c->state == LK_OPEN && !lk->cut[d->id] &&
            !d->blocked) {
            ssize_t w = dir_send_now(lk, d, buf + off, len, now);

            if (w < 0)
                return;
            off += (size_t)w;
            len -= (size_t)w;
            if (len == 0)
                continue;
            d->blocked = true; /* the socket took less than offered */
        }
        ch = malloc(sizeof(*ch) + len);
        if (ch == NULL) {
            lk_conn_close(lk, c, true, "out of memory");
            return;
        }
        *ch = (struct lk_chunk){
            .arrival_ns = now, .release_ns = release, .len = (uint32_t)len, .kind = LK_CHUNK_DATA};
        memcpy(ch->data, buf + off, len);
        dir_append(d, ch);
        off += len;
    }
    if (d->queued >= lk->queue_limit)
        d->paused_queue = true;
    if (link_full(lk, d->id, now, 1, 1)) {
        d->paused_link = true;
        lk->link_waiters[d->id] = true;
    }
    if (was_empty && d->head != NULL && !d->blocked)
        dir_service(lk, d, now);
    conn_update_events(lk, c);
}

/* Takes n written bytes off the head of d. */
static void
dir_consume(struct lk *lk, struct lk_dir *d, size_t n)
{
    d->bytes += n;
    lk->bytes[d->id] += n;
    d->queued -= n;
    while (n > 0) {
        struct lk_chunk *ch = d->head;
        size_t left = ch->len - ch->off;

        if (n < left) {
            ch->off += (uint32_t)n;
            return;
        }
        n -= left;
        d->head = ch->next;
        if (d->head == NULL)
            d->tail = NULL;
        free(ch);
    }
}

/*
 * The one handler of a direction: delivers every chunk that is due, in order, until the
 * destination's socket is full (then waits for EPOLLOUT) or the next chunk lies in the future
 * (then waits in the heap).  Does nothing while the direction is cut or B is connecting.
 */
static void
dir_service(struct lk *lk, struct lk_dir *d, uint64_t now)
{
    struct lk_conn *c = d->conn;
    struct lk_side *dst = &c->side[d->id ^ 1];

    heap_remove(lk, d);
    if (c->state != LK_OPEN || lk->cut[d->id] || d->blocked || dst->fd < 0)
        return;
    while (d->head != NULL && d->head->release_ns <= now) {
        struct iovec iov[LK_IOV_MAX];
        struct msghdr mh = {.msg_iov = iov};
        struct lk_chunk *ch = d->head;
        size_t total = 0;
        ssize_t w;

        if (ch->kind == LK_CHUNK_FIN) {
            if (shutdown(dst->fd, SHUT_WR) != 0 && errno != ENOTCONN)
                log_debug(LK_COMPONENT, "conn %" PRIu64 ": shutdown: %s", c->id, strerror(errno));
            d->head = ch->next;
            if (d->head == NULL)
                d->tail = NULL;
            free(ch);
            d->closed = true;
            log_debug(LK_COMPONENT, "conn %" PRIu64 ": %s FIN delivered", c->id,
                      lk_dir_names[d->id]);
            continue;
        }
        if (ch->kind == LK_CHUNK_RST) {
            lk_conn_close(lk, c, true, "reset by the other side");
            return;
        }
        for (; ch != NULL && ch->kind == LK_CHUNK_DATA && ch->release_ns <= now &&
               mh.msg_iovlen < LK_IOV_MAX;
             ch = ch->next) {
            iov[mh.msg_iovlen].iov_base = ch->data + ch->off;
            iov[mh.msg_iovlen].iov_len = ch->len - ch->off;
            total += ch->len - ch->off;
            mh.msg_iovlen++;
        }
        w = sendmsg(dst->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                d->blocked = true;
                break;
            }
            side_failed(lk, c, dst->id, -errno, now);
            return;
        }
        dir_consume(lk, d, (size_t)w);
        if ((size_t)w < total) {
            d->blocked = true;
            break;
        }
    }
    if (d->paused_queue && d->queued <= lk->queue_limit / 4 * 3)
        d->paused_queue = false;
    if (d->head != NULL && !d->blocked)
        heap_push(lk, d);
    conn_check_done(lk, c);
    conn_update_events(lk, c);
}

/* Re-times everything d holds as if it entered the link at now or later: after a cut, the
 * held bytes are retransmissions.  The caller restarts the link's clock first. */
static void
dir_reschedule(struct lk *lk, struct lk_dir *d, uint64_t now)
{
    heap_remove(lk, d);
    d->last_release_ns = 0;
    for (struct lk_chunk *ch = d->head; ch != NULL; ch = ch->next)
        ch->release_ns =
            dir_schedule(lk, d, ch->arrival_ns > now ? ch->arrival_ns : now, ch->len - ch->off);
}

/* Flips one random bit of the chunk buf[n] that entered direction s (see "Corruption"). */
static void
corrupt_chunk(struct lk *lk, struct lk_conn *c, unsigned s, unsigned char *buf, size_t n)
{
    uint64_t r = lk_random(lk);
    size_t at = (size_t)(r % n);
    unsigned bit = (unsigned)((r / n) % 8);

    buf[at] ^= (unsigned char)(1u << bit);
    lk->corrupt_pending[s]--;
    lk->corrupted[s]++;
    log_info(LK_COMPONENT,
             "conn %" PRIu64 ": %s chunk of %zu bytes corrupted: bit %u of byte %zu flipped "
             "(%" PRIu64 " more to corrupt)",
             c->id, lk_dir_names[s], n, bit, at, lk->corrupt_pending[s]);
}

static void
side_read(struct lk *lk, struct lk_conn *c, unsigned s)
{
    const struct lk_params *p = &lk->params[s];
    struct lk_side *sd = &c->side[s];
    size_t max = LK_READ_MAX;
    ssize_t n;

    if (p->rate_bps > 0 && p->buffer_ns > 0) {
        /* Take no more than the buffer has room for: one read must not overfill it. */
        uint64_t backlog = link_backlog_ns(lk, s, mono_ns());
        double room = backlog < p->buffer_ns
                          ? (double)(p->buffer_ns - backlog) * (double)p->rate_bps / 8e9
                          : 0;

        max = room < LK_PKT_MIN ? LK_PKT_MIN : room < LK_READ_MAX ? (size_t)room : LK_READ_MAX;
    }
    do
        n = recv(sd->fd, lk->scratch, max, MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n > 0) {
        if (lk->corrupt_pending[s] > 0)
            corrupt_chunk(lk, c, s, lk->scratch, (size_t)n);
        dir_input(lk, &c->dir[s], lk->scratch, (size_t)n, mono_ns());
    } else if (n == 0) {
        log_debug(LK_COMPONENT, "conn %" PRIu64 ": side %c sent FIN", c->id, "AB"[s]);
        dir_mark(lk, &c->dir[s], LK_CHUNK_FIN, mono_ns());
    } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
        side_failed(lk, c, s, -errno, mono_ns());
    }
}

static void
conn_connected(struct lk *lk, struct lk_conn *c, uint64_t now)
{
    int err = 0;
    socklen_t len = sizeof(err);

    if (getsockopt(c->side[LK_B].fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        err = errno;
    if (err == EINPROGRESS || err == EALREADY)
        return;
    if (err != 0) {
        lk->n_connect_failed++;
        log_warning(LK_COMPONENT, "conn %" PRIu64 ": connect to %s failed: %s", c->id, lk->dst_name,
                    strerror(err));
        lk_conn_close(lk, c, true, "connect failed");
        return;
    }
    conn_set_state(c, LK_OPEN, "connected");
    dir_service(lk, &c->dir[LK_A2B], now);
    conn_update_events(lk, c);
}

static void
side_event(struct lk *lk, struct lk_side *sd, uint32_t ev)
{
    struct lk_conn *c = sd->conn;
    unsigned s = sd->id;

    if (c->state == LK_CLOSED || sd->fd < 0)
        return;
    if (c->state == LK_CONNECTING && s == LK_B) {
        conn_connected(lk, c, mono_ns());
        return;
    }
    if (c->dir[s ^ 1].blocked && (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
        c->dir[s ^ 1].blocked = false;
        dir_service(lk, &c->dir[s ^ 1], mono_ns());
    }
    if (side_wants_read(lk, c, s) && (ev & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)))
        side_read(lk, c, s);
}

/* Under a rate cap, linkem's sockets take an Ethernet MSS and a small receive buffer: else the
 * loopback legs (64 KiB segments, autotuned buffers) would hold megabytes in front of the link
 * that no real path holds, and a saturating sender's queueing delay would be theirs. */
static void
sock_tune(const struct lk *lk, int fd)
{
    int mss = LK_MSS;

    if (lk->sockbuf <= 0)
        return;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &lk->sockbuf, sizeof(lk->sockbuf)) != 0)
        log_debug(LK_COMPONENT, "SO_RCVBUF: %s", strerror(errno));
    if (setsockopt(fd, IPPROTO_TCP, TCP_MAXSEG, &mss, sizeof(mss)) != 0)
        log_debug(LK_COMPONENT, "TCP_MAXSEG: %s", strerror(errno));
}

/* Opens c's connection to B; c was HELD or is new. */
static void
conn_connect(struct lk *lk, struct lk_conn *c)
{
    int one = 1, bfd, ret;

    conn_set_state(c, LK_CONNECTING, "connecting to B");
    bfd = socket(lk->dst.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
    if (bfd < 0) {
        log_error(LK_COMPONENT, "conn %" PRIu64 ": socket: %s", c->id, strerror(errno));
        lk_conn_close(lk, c, true, "no socket");
        return;
    }
    c->side[LK_B].fd = bfd;
    if (setsockopt(bfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0)
        log_debug(LK_COMPONENT, "TCP_NODELAY: %s", strerror(errno));
    sock_tune(lk, bfd);
    ret = connect(bfd, (struct sockaddr *)&lk->dst, lk->dst_len);
    if (ret != 0 && errno != EINPROGRESS) {
        lk->n_connect_failed++;
        log_warning(LK_COMPONENT, "conn %" PRIu64 ": connect to %s failed: %s", c->id, lk->dst_name,
                    strerror(errno));
        lk_conn_close(lk, c, true, "connect failed");
        return;
    }
    if (ret == 0) {
        conn_set_state(c, LK_OPEN, "connected at once");
        dir_service(lk, &c->dir[LK_A2B], mono_ns());
    }
    conn_update_events(lk, c);
}

static void
conn_open(struct lk *lk, int afd)
{
    struct lk_conn *c;
    int one = 1;

    if (setsockopt(afd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0)
        log_debug(LK_COMPONENT, "TCP_NODELAY: %s", strerror(errno));
    c = calloc(1, sizeof(*c));
    if (c == NULL || heap_reserve(lk, 2 * (lk->n_active + 1)) < 0) {
        log_error(LK_COMPONENT, "out of memory for a new connection");
        free(c);
        close(afd);
        return;
    }
    c->lk = lk;
    c->id = ++lk->next_id;
    c->state = LK_HELD;
    for (unsigned i = 0; i < 2; i++) {
        c->side[i] = (struct lk_side){.h.kind = LK_H_SIDE, .conn = c, .fd = -1, .id = i};
        c->dir[i] = (struct lk_dir){.conn = c, .id = i, .heap_idx = LK_NOT_QUEUED};
    }
    c->side[LK_A].fd = afd;
    c->next = lk->conns;
    if (c->next != NULL)
        c->next->prev = c;
    lk->conns = c;
    lk->n_active++;
    lk->n_accepted++;
    if (lk->cut[LK_A2B] || lk->cut[LK_B2A]) {
        log_info(LK_COMPONENT, "conn %" PRIu64 " accepted during a cut: held", c->id);
        conn_update_events(lk, c);
        return;
    }
    log_info(LK_COMPONENT, "conn %" PRIu64 " accepted, connecting to %s", c->id, lk->dst_name);
    conn_connect(lk, c);
}

static void
listener_event(struct lk *lk)
{
    for (int i = 0; i < LK_ACCEPT_BURST; i++) {
        int fd = accept4(lk->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

        if (fd >= 0) {
            conn_open(lk, fd);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return;
        /* EMFILE, ENFILE, ENOBUFS, ENOMEM: stop accepting for a moment rather than spin. */
        log_warning(LK_COMPONENT, "accept: %s; pausing for 100 ms", strerror(errno));
        if (epoll_ctl(lk->epfd, EPOLL_CTL_DEL, lk->listen_fd, NULL) != 0)
            log_error(LK_COMPONENT, "epoll_ctl(listen): %s", strerror(errno));
        lk->accepting = false;
        lk->accept_resume_ns = mono_ns() + LK_ACCEPT_PAUSE_NS;
        return;
    }
}

WM_MUSTCHECK static int
listener_arm(struct lk *lk)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &lk->listen_h};

    if (epoll_ctl(lk->epfd, EPOLL_CTL_ADD, lk->listen_fd, &ev) != 0)
        return -errno;
    lk->accepting = true;
    lk->accept_resume_ns = 0;
    return 0;
}

/* ---- cut, restore, reset, settings ---- */

static void
lk_cut(struct lk *lk, unsigned mask)
{
    for (unsigned i = 0; i < 2; i++) {
        if (!(mask & (1u << i)) || lk->cut[i])
            continue;
        lk->cut[i] = true;
        /* conn_update_events may close c (epoll failure): take next first. */
        for (struct lk_conn *c = lk->conns, *next; c != NULL; c = next) {
            next = c->next;
            heap_remove(lk, &c->dir[i]);
            c->dir[i].blocked = false; /* retried on restore */
            conn_update_events(lk, c);
        }
    }
    log_info(LK_COMPONENT, "cut: a2b %s, b2a %s", lk->cut[0] ? "cut" : "open",
             lk->cut[1] ? "cut" : "open");
}

static void
lk_restore(struct lk *lk, unsigned mask)
{
    uint64_t now = mono_ns();

    for (unsigned i = 0; i < 2; i++) {
        struct lk_conn *c, *next;

        if (!(mask & (1u << i)) || !lk->cut[i])
            continue;
        lk->cut[i] = false;
        lk->link_free_ns[i] = now;
        for (c = lk->conns; c != NULL; c = c->next)
            dir_reschedule(lk, &c->dir[i], now);
        /* dir_service may close c (a held RST): take next first. */
        for (c = lk->conns; c != NULL; c = next) {
            next = c->next;
            dir_service(lk, &c->dir[i], now);
            conn_update_events(lk, c);
        }
    }
    /* Connections accepted during the cut reach B once the link works both ways. */
    for (struct lk_conn *c = lk->conns, *next; c != NULL && !lk->cut[0] && !lk->cut[1]; c = next) {
        next = c->next;
        if (c->state == LK_HELD)
            conn_connect(lk, c);
    }
    log_info(LK_COMPONENT, "restore: a2b %s, b2a %s", lk->cut[0] ? "cut" : "open",
             lk->cut[1] ? "cut" : "open");
}

static uint64_t
lk_reset(struct lk *lk)
{
    uint64_t n = 0;

    while (lk->conns != NULL) {
        lk_conn_close(lk, lk->conns, true, "reset");
        n++;
    }
    lk->n_reset += n;
    log_info(LK_COMPONENT, "reset: %" PRIu64 " connections closed", n);
    return n;
}

static void
lk_log_params(const struct lk *lk)
{
    for (unsigned i = 0; i < 2; i++) {
        char d[32], j[32], r[32], b[32];

        log_info(LK_COMPONENT, "%s: delay %s, jitter %s, rate %s, buffer %s", lk_dir_names[i],
                 fmt_duration(d, sizeof(d), lk->params[i].delay_ns),
                 fmt_duration(j, sizeof(j), lk->params[i].jitter_ns),
                 fmt_rate(r, sizeof(r), lk->params[i].rate_bps),
                 fmt_duration(b, sizeof(b), lk->params[i].buffer_ns));
    }
}

/* ---- control ---- */

static int
parse_dir_word(const char *w, unsigned *mask)
{
    if (strcmp(w, "a2b") == 0)
        *mask = LK_DIR_MASK_A2B;
    else if (strcmp(w, "b2a") == 0)
        *mask = LK_DIR_MASK_B2A;
    else if (strcmp(w, "both") == 0)
        *mask = LK_DIR_MASK_BOTH;
    else
        return -EINVAL;
    return 0;
}

static void
ctl_stats(struct lk *lk, char *out, size_t cap)
{
    uint64_t queued[2] = {0, 0};
    const char *cut = lk->cut[0] ? (lk->cut[1] ? "both" : "a2b") : (lk->cut[1] ? "b2a" : "none");
    size_t n;

    for (struct lk_conn *c = lk->conns; c != NULL; c = c->next)
        for (unsigned i = 0; i < 2; i++)
            queued[i] += c->dir[i].queued;
    n = (size_t)snprintf(out, cap,
                         "ok conns=%" PRIu64 " accepted=%" PRIu64 " connect_failed=%" PRIu64
                         " reset=%" PRIu64 " listen_port=%d cut=%s",
                         lk->n_active, lk->n_accepted, lk->n_connect_failed, lk->n_reset,
                         lk->listen_port, cut);
    for (unsigned i = 0; i < 2 && n < cap; i++)
        n += (size_t)snprintf(
            out + n, cap - n,
            " %s_bytes=%" PRIu64 " %s_queued=%" PRIu64 " %s_delay_us=%" PRIu64
            " %s_jitter_us=%" PRIu64 " %s_rate_bit=%" PRIu64 " %s_buffer_us=%" PRIu64,
            lk_dir_names[i], lk->bytes[i], lk_dir_names[i], queued[i], lk_dir_names[i],
            lk->params[i].delay_ns / LK_NS_PER_US, lk_dir_names[i],
            lk->params[i].jitter_ns / LK_NS_PER_US, lk_dir_names[i], lk->params[i].rate_bps,
            lk_dir_names[i], lk->params[i].buffer_ns / LK_NS_PER_US);
    for (unsigned i = 0; i < 2 && n < cap; i++)
        n += (size_t)snprintf(
            out + n, cap - n, " %s_corrupted=%" PRIu64 " %s_corrupt_pending=%" PRIu64,
            lk_dir_names[i], lk->corrupted[i], lk_dir_names[i], lk->corrupt_pending[i]);
}

/* `corrupt [DIR] N`: one flipped bit in each of the next N chunks of the direction(s). */
static void
ctl_corrupt(struct lk *lk, char **words, int n, char *out, size_t cap)
{
    unsigned mask = LK_DIR_MASK_BOTH;
    char *end;
    unsigned long long count;

    if (n == 2 && parse_dir_word(words[0], &mask) == 0) {
        words++;
        n--;
    }
    if (n != 1 || words[0][0] < '0' || words[0][0] > '9') {
        snprintf(out, cap, "error: usage: corrupt [a2b|b2a|both] N");
        return;
    }
    errno = 0;
    count = strtoull(words[0], &end, 10);
    if (*end != '\0' || errno != 0 || count > 1000000000ull) {
        snprintf(out, cap, "error: corrupt: '%s' is not a count of chunks (0 to 1000000000)",
                 words[0]);
        return;
    }
    for (unsigned d = 0; d < 2; d++)
        if (mask & (1u << d))
            lk->corrupt_pending[d] = count;
    log_info(LK_COMPONENT, "corrupt: a2b %" PRIu64 " chunks, b2a %" PRIu64 " chunks",
             lk->corrupt_pending[LK_A2B], lk->corrupt_pending[LK_B2A]);
    snprintf(out, cap, "ok a2b_corrupt_pending=%" PRIu64 " b2a_corrupt_pending=%" PRIu64,
             lk->corrupt_pending[LK_A2B], lk->corrupt_pending[LK_B2A]);
}

/* `set [DIR] key=value...`: all settings are checked before any is applied. */
static void
ctl_set(struct lk *lk, char **words, int n, char *out, size_t cap)
{
    struct lk_params p[2] = {lk->params[0], lk->params[1]};
    unsigned mask = LK_DIR_MASK_BOTH;
    int i = 0;

    if (n > 0 && parse_dir_word(words[0], &mask) == 0)
        i++;
    if (i == n) {
        snprintf(out, cap, "error: set needs key=value (delay, jitter, rate, buffer)");
        return;
    }
    for (; i < n; i++) {
        char *eq = strchr(words[i], '=');
        uint64_t v;
        int ret;

        if (eq == NULL) {
            snprintf(out, cap, "error: '%s' is not key=value", words[i]);
            return;
        }
        *eq = '\0';
        if (strcmp(words[i], "delay") == 0 || strcmp(words[i], "jitter") == 0 ||
            strcmp(words[i], "buffer") == 0)
            ret = parse_duration(eq + 1, &v);
        else if (strcmp(words[i], "rate") == 0)
            ret = parse_rate(eq + 1, &v);
        else {
            snprintf(out, cap, "error: unknown setting '%s' (delay, jitter, rate, buffer)",
                     words[i]);
            return;
        }
        if (ret < 0) {
            snprintf(out, cap, "error: %s: '%s' is not a %s", words[i], eq + 1,
                     words[i][0] == 'r' ? "rate (0, or a number with bit, kbit, mbit or gbit)"
                                        : "duration (0, or a number with us, ms or s; max 3600s)");
            return;
        }
        for (unsigned d = 0; d < 2; d++) {
            if (!(mask & (1u << d)))
                continue;
            if (words[i][0] == 'd')
                p[d].delay_ns = v;
            else if (words[i][0] == 'j')
                p[d].jitter_ns = v;
            else if (words[i][0] == 'b')
                p[d].buffer_ns = v;
            else
                p[d].rate_bps = v;
        }
    }
    lk->params[0] = p[0];
    lk->params[1] = p[1];
    lk_log_params(lk);
    snprintf(out, cap, "ok");
}

/* Executes one command line; writes the one-line reply (without newline) to out. */
static void
ctl_execute(struct lk *lk, char *line, char *out, size_t cap)
{
    char *words[16], *save = NULL, *w;
    unsigned mask = LK_DIR_MASK_BOTH;
    int n = 0;

    for (w = strtok_r(line, " \t\r", &save); w != NULL; w = strtok_r(NULL, " \t\r", &save)) {
        if (n == (int)(sizeof(words) / sizeof(words[0]))) {
            snprintf(out, cap, "error: too many words");
            return;
        }
        words[n++] = w;
    }
    if (n == 0) {
        snprintf(out, cap, "error: empty command (try help)");
        return;
    }
    if (strcmp(words[0], "cut") == 0 || strcmp(words[0], "restore") == 0) {
        if (n > 2 || (n == 2 && parse_dir_word(words[1], &mask) < 0)) {
            snprintf(out, cap, "error: usage: %s [a2b|b2a|both]", words[0]);
            return;
        }
        if (words[0][0] == 'c')
            lk_cut(lk, mask);
        else
            lk_restore(lk, mask);
        snprintf(out, cap, "ok cut=%s",
                 lk->cut[0] ? (lk->cut[1] ? "both" : "a2b") : (lk->cut[1] ? "b2a" : "none"));
    } else if (strcmp(words[0], "reset") == 0 && n == 1) {
        snprintf(out, cap, "ok closed=%" PRIu64, lk_reset(lk));
    } else if (strcmp(words[0], "set") == 0) {
        ctl_set(lk, words + 1, n - 1, out, cap);
    } else if (strcmp(words[0], "corrupt") == 0) {
        ctl_corrupt(lk, words + 1, n - 1, out, cap);
    } else if (strcmp(words[0], "stats") == 0 && n == 1) {
        ctl_stats(lk, out, cap);
    } else if (strcmp(words[0], "help") == 0 && n == 1) {
        snprintf(out, cap,
                 "ok commands: cut [a2b|b2a|both]; restore [a2b|b2a|both]; reset; "
                 "set [a2b|b2a|both] delay=DUR jitter=DUR rate=RATE buffer=DUR; "
                 "corrupt [a2b|b2a|both] N; stats; help");
    } else {
        snprintf(out, cap, "error: unknown command '%s' (try help)", words[0]);
    }
}

static void
ctl_client_free(struct lk *lk, struct lk_ctl *cl)
{
    if (cl->prev != NULL)
        cl->prev->next = cl->next;
    else
        lk->ctl_clients = cl->next;
    if (cl->next != NULL)
        cl->next->prev = cl->prev;
    if (close(cl->fd) != 0)
        log_debug(LK_COMPONENT, "close(control client): %s", strerror(errno));
    lk->n_ctl--;
    free(cl);
}

static void
ctl_client_event(struct lk *lk, struct lk_ctl *cl)
{
    ssize_t n = recv(cl->fd, cl->line + cl->len, sizeof(cl->line) - 1 - cl->len, MSG_DONTWAIT);
    char *nl;

    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0) {
        ctl_client_free(lk, cl);
        return;
    }
    cl->len += (size_t)n;
    cl->line[cl->len] = '\0';
    while ((nl = strchr(cl->line, '\n')) != NULL) {
        char reply[1024];
        size_t rlen;

        *nl = '\0';
        log_debug(LK_COMPONENT, "control: %s", cl->line);
        ctl_execute(lk, cl->line, reply, sizeof(reply) - 1);
        rlen = strlen(reply);
        reply[rlen++] = '\n';
        /* A reply is one short line; a client that cannot take it is dropped. */
        if (send(cl->fd, reply, rlen, MSG_NOSIGNAL | MSG_DONTWAIT) != (ssize_t)rlen) {
            ctl_client_free(lk, cl);
            return;
        }
        cl->len -= (size_t)(nl + 1 - cl->line);
        memmove(cl->line, nl + 1, cl->len + 1);
    }
    if (cl->len == sizeof(cl->line) - 1) {
        static const char msg[] = "error: line too long\n";

        if (send(cl->fd, msg, sizeof(msg) - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
            log_debug(LK_COMPONENT, "control reply: %s", strerror(errno));
        ctl_client_free(lk, cl);
    }
}

static void
ctl_accept(struct lk *lk)
{
    for (;;) {
        struct epoll_event ev = {.events = EPOLLIN};
        struct lk_ctl *cl;
        int fd = accept4(lk->ctl_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                log_warning(LK_COMPONENT, "control accept: %s", strerror(errno));
            return;
        }
        cl = lk->n_ctl < LK_CTL_CLIENTS_MAX ? calloc(1, sizeof(*cl)) : NULL;
        if (cl == NULL) {
            log_warning(LK_COMPONENT, "control: too many clients");
            close(fd);
            continue;
        }
        cl->h.kind = LK_H_CTL_CLIENT;
        cl->fd = fd;
        ev.data.ptr = &cl->h;
        if (epoll_ctl(lk->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
            log_warning(LK_COMPONENT, "control: epoll_ctl: %s", strerror(errno));
            close(fd);
            free(cl);
            continue;
        }
        cl->next = lk->ctl_clients;
        if (cl->next != NULL)
            cl->next->prev = cl;
        lk->ctl_clients = cl;
        lk->n_ctl++;
    }
}

/* Creates the control socket at path; an existing socket nobody listens on is replaced. */
WM_MUSTCHECK static int
ctl_listen(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct stat st;
    int fd, ret;

    if (strlen(path) >= sizeof(sa.sun_path))
        return -ENAMETOOLONG;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (lstat(path, &st) == 0) {
        int probe;

        if (!S_ISSOCK(st.st_mode)) {
            close(fd);
            return -EEXIST;
        }
        probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ret = probe >= 0 ? connect(probe, (struct sockaddr *)&sa, sizeof(sa)) : -1;
        if (probe >= 0)
            close(probe);
        if (ret == 0) {
            close(fd);
            return -EADDRINUSE; /* another wm-linkem answers there */
        }
        if (unlink(path) != 0) {
            ret = -errno;
            close(fd);
            return ret;
        }
    }
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 16) != 0) {
        ret = -errno;
        close(fd);
        return ret;
    }
    return fd;
}

/* The client: sends one command, prints the reply line.  Exit status 0 for "ok". */
static int
ctl_client(const char *path, const char *cmd)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct timeval tv = {.tv_sec = LK_CTL_TIMEOUT_S};
    char reply[2048];
    size_t len = 0, clen = strlen(cmd);
    char *line;
    int fd;

    if (strlen(path) >= sizeof(sa.sun_path)) {
        fprintf(stderr, "wm-linkem: control path too long: %s\n", path);
        return 2;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        fprintf(stderr, "wm-linkem: cannot reach the control socket %s: %s\n", path,
                strerror(errno));
        if (fd >= 0)
            close(fd);
        return 1;
    }
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0)
        fprintf(stderr, "wm-linkem: SO_RCVTIMEO: %s\n", strerror(errno));
    line = malloc(clen + 2);
    if (line == NULL) {
        close(fd);
        return 1;
    }
    memcpy(line, cmd, clen);
    line[clen] = '\n';
    line[clen + 1] = '\0';
    for (size_t off = 0; off < clen + 1;) {
        ssize_t w = send(fd, line + off, clen + 1 - off, MSG_NOSIGNAL);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            fprintf(stderr, "wm-linkem: control send: %s\n", strerror(errno));
            free(line);
            close(fd);
            return 1;
        }
        off += (size_t)w;
    }
    free(line);
    while (len < sizeof(reply) - 1 && memchr(reply, '\n', len) == NULL) {
        ssize_t r = recv(fd, reply + len, sizeof(reply) - 1 - len, 0);

        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            fprintf(stderr, "wm-linkem: no reply from %s: %s\n", path,
                    r == 0 ? "connection closed" : strerror(errno));
            close(fd);
            return 1;
        }
        len += (size_t)r;
    }
    close(fd);
    reply[len] = '\0';
    fputs(reply, stdout);
    if (len > 0 && reply[len - 1] != '\n')
        fputc('\n', stdout);
    return strncmp(reply, "ok", 2) == 0 ? 0 : 1;
}

/* ---- the loop ---- */

static void
signal_event(struct lk *lk)
{
    struct signalfd_siginfo si;

    while (read(lk->sig_fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        switch (si.ssi_signo) {
        case SIGUSR1:
            lk_cut(lk, LK_DIR_MASK_BOTH);
            break;
        case SIGUSR2:
            lk_restore(lk, LK_DIR_MASK_BOTH);
            break;
        case SIGHUP:
            lk_reset(lk);
            break;
        default:
            log_info(LK_COMPONENT, "signal %u: exiting", si.ssi_signo);
            lk->stop = true;
            break;
        }
    }
}

static void
graveyard_free(struct lk *lk)
{
    while (lk->graveyard != NULL) {
        struct lk_conn *c = lk->graveyard;

        lk->graveyard = c->next;
        free(c);
    }
}

/* What the loop waits for besides events, each with its deadline (UINT64_MAX: nothing). */
enum lk_wakeup { LK_WAKE_RELEASE, LK_WAKE_LINK_A2B, LK_WAKE_LINK_B2A, LK_WAKE_ACCEPT, LK_WAKES };

static void
wakeup_deadlines(const struct lk *lk, uint64_t at[LK_WAKES])
{
    /* The next chunk due anywhere; room in a link's buffer; the end of an accept pause. */
    at[LK_WAKE_RELEASE] = lk->heap_len > 0 ? lk->heap[0]->head->release_ns : UINT64_MAX;
    at[LK_WAKE_LINK_A2B] = link_resume_at(lk, LK_A2B);
    at[LK_WAKE_LINK_B2A] = link_resume_at(lk, LK_B2A);
    at[LK_WAKE_ACCEPT] =
        !lk->accepting && lk->accept_resume_ns != 0 ? lk->accept_resume_ns : UINT64_MAX;
}

static uint64_t
next_deadline(const struct lk *lk)
{
    uint64_t at[LK_WAKES], t = UINT64_MAX;

    wakeup_deadlines(lk, at);
    for (int i = 0; i < LK_WAKES; i++)
        t = at[i] < t ? at[i] : t;
    return t;
}

WM_MUSTCHECK static int
lk_run(struct lk *lk)
{
    struct epoll_event events[LK_EVENTS];
    bool have_pwait2 = true;

    while (!lk->stop) {
        uint64_t deadline = next_deadline(lk), now;
        int n;

        if (deadline == UINT64_MAX) {
            n = epoll_wait(lk->epfd, events, LK_EVENTS, -1);
        } else {
            now = mono_ns();
            uint64_t wait = deadline > now ? deadline - now : 0;

            if (have_pwait2) {
                struct timespec ts = {.tv_sec = (time_t)(wait / LK_NS_PER_S),
                                      .tv_nsec = (long)(wait % LK_NS_PER_S)};

                n = epoll_pwait2(lk->epfd, events, LK_EVENTS, &ts, NULL);
                if (n < 0 && errno == ENOSYS) {
                    log_info(LK_COMPONENT, "no epoll_pwait2: timers in milliseconds");
                    have_pwait2 = false;
                    continue;
                }
            } else {
                n = epoll_wait(lk->epfd, events, LK_EVENTS,
                               (int)((wait + LK_NS_PER_MS - 1) / LK_NS_PER_MS));
            }
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            log_error(LK_COMPONENT, "epoll_wait: %s", strerror(errno));
            return -errno;
        }
        for (int i = 0; i < n; i++) {
            struct lk_handle *h = events[i].data.ptr;

            switch (h->kind) {
            case LK_H_LISTEN:
                if (lk->accepting)
                    listener_event(lk);
                break;
            case LK_H_CONTROL:
                ctl_accept(lk);
                break;
            case LK_H_CTL_CLIENT:
                ctl_client_event(lk, container_of(h, struct lk_ctl, h));
                break;
            case LK_H_SIGNAL:
                signal_event(lk);
                break;
            case LK_H_SIDE:
                side_event(lk, container_of(h, struct lk_side, h), events[i].events);
                break;
            }
        }
        now = mono_ns();
        while (lk->heap_len > 0 && lk->heap[0]->head->release_ns <= now)
            dir_service(lk, lk->heap[0], now);
        if (link_resume_at(lk, LK_A2B) <= now)
            link_resume(lk, LK_A2B);
        if (link_resume_at(lk, LK_B2A) <= now)
            link_resume(lk, LK_B2A);
        if (!lk->accepting && lk->accept_resume_ns != 0 && lk->accept_resume_ns <= now) {
            int ret = listener_arm(lk);

            if (ret < 0) {
                log_error(LK_COMPONENT, "epoll_ctl(listen): %s", wire_strerror(ret));
                return ret;
            }
        }
        graveyard_free(lk);
    }
    return 0;
}

/* ---- main ---- */

static void
usage(FILE *f)
{
    fprintf(f,
            "usage: wm-linkem --listen HOST:PORT --connect HOST:PORT [--delay DUR] [--jitter DUR]\n"
            "                 [--rate RATE] [--buffer DUR] [--queue BYTES] [--control PATH]\n"
            "                 [--seed N] [--log-level error|warning|info|debug]\n"
            "       wm-linkem --control PATH --send COMMAND [WORDS...]\n"
            "DUR:   0, or a number with us, ms or s (one way; e.g. 10ms, 1.5ms)\n"
            "RATE:  0 (no cap), or a number with bit, kbit, mbit or gbit (decimal: 50mbit)\n"
            "--buffer: under a rate cap, the link time queued ahead of the link at most\n"
            "       (the bottleneck's buffer; default 100ms; 0: only --queue limits)\n"
            "--queue: bytes held per direction and connection at most, with k, m or g\n"
            "       (default 64m)\n"
            "COMMAND: cut [a2b|b2a|both], restore [a2b|b2a|both], reset, stats, help,\n"
            "         set [a2b|b2a|both] delay=DUR jitter=DUR rate=RATE buffer=DUR,\n"
            "         corrupt [a2b|b2a|both] N (one flipped bit in each of the next N chunks)\n"
            "Signals: SIGUSR1 cut, SIGUSR2 restore, SIGHUP reset, SIGTERM/SIGINT exit.\n");
}

static int
bad_arg(const char *opt, const char *val, const char *what)
{
    fprintf(stderr, "wm-linkem: %s: '%s' is not %s\n", opt, val, what);
    fprintf(stderr, "try 'wm-linkem --help'\n");
    return 2;
}

/* Blocks the control signals and returns a signalfd for them. */
WM_MUSTCHECK static int
signals_setup(void)
{
    sigset_t set;
    int fd;

    if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
        return -errno;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGUSR2);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    if (sigprocmask(SIG_BLOCK, &set, NULL) != 0)
        return -errno;
    fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

static void
lk_free(struct lk *lk)
{
    while (lk->conns != NULL)
        lk_conn_close(lk, lk->conns, true, "exiting");
    graveyard_free(lk);
    while (lk->ctl_clients != NULL)
        ctl_client_free(lk, lk->ctl_clients);
    if (lk->ctl_fd >= 0) {
        close(lk->ctl_fd);
        if (unlink(lk->ctl_path) != 0 && errno != ENOENT)
            log_warning(LK_COMPONENT, "unlink %s: %s", lk->ctl_path, strerror(errno));
    }
    if (lk->listen_fd >= 0)
        close(lk->listen_fd);
    if (lk->sig_fd >= 0)
        close(lk->sig_fd);
    if (lk->epfd >= 0)
        close(lk->epfd);
    free(lk->heap);
    free(lk->scratch);
}

/* Sets everything up from validated options; returns 0 or a negative errno (logged). */
WM_MUSTCHECK static int
lk_init(struct lk *lk, const struct lk_options *o)
{
    struct epoll_event ev;
    struct rlimit rl;
    int ret;

    lk->params[0] = lk->params[1] = o->params;
    lk->queue_limit = (size_t)o->queue_limit;
    if (o->params.rate_bps > 0) {
        /* 2 ms of the link. */
        uint64_t b = o->params.rate_bps / 8 / 500;

        lk->sockbuf = (int)(b < LK_SOCKBUF_MIN   ? LK_SOCKBUF_MIN
                            : b > LK_SOCKBUF_MAX ? LK_SOCKBUF_MAX
                                                 : b);
    }
    lk->rng = o->seed != 0 ? o->seed : (mono_ns() ^ ((uint64_t)getpid() << 32)) | 1;
    lk->dst_name = o->connect;
    lk->ctl_path = o->control;
    lk->scratch = malloc(LK_READ_MAX);
    if (lk->scratch == NULL)
        return -ENOMEM;

    /* Timers to the microsecond: the default slack of 50 us would blur short packets. */
    if (prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL) != 0)
        log_debug(LK_COMPONENT, "PR_SET_TIMERSLACK: %s", strerror(errno));
    /* Two descriptors per connection: take what the hard limit allows. */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            log_debug(LK_COMPONENT, "RLIMIT_NOFILE: %s", strerror(errno));
    }

    lk->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (lk->epfd < 0) {
        ret = -errno;
        log_error(LK_COMPONENT, "epoll_create1: %s", wire_strerror(ret));
        return ret;
    }
    ret = signals_setup();
    if (ret < 0) {
        log_error(LK_COMPONENT, "signals: %s", wire_strerror(ret));
        return ret;
    }
    lk->sig_fd = ret;
    lk->sig_h.kind = LK_H_SIGNAL;
    ev = (struct epoll_event){.events = EPOLLIN, .data.ptr = &lk->sig_h};
    if (epoll_ctl(lk->epfd, EPOLL_CTL_ADD, lk->sig_fd, &ev) != 0)
        return -errno;

    ret = wio_listen_tcp(o->listen, SOMAXCONN, &lk->listen_port);
    if (ret < 0) {
        log_error(LK_COMPONENT, "cannot listen on %s: %s", o->listen, wire_strerror(ret));
        return ret;
    }
    lk->listen_fd = ret;
    lk->listen_h.kind = LK_H_LISTEN;
    sock_tune(lk, lk->listen_fd); /* accepted sockets inherit it */
    ret = listener_arm(lk);
    if (ret < 0)
        return ret;

    if (o->control != NULL) {
        ret = ctl_listen(o->control);
        if (ret < 0) {
            log_error(LK_COMPONENT, "cannot create the control socket %s: %s", o->control,
                      wire_strerror(ret));
            return ret;
        }
        lk->ctl_fd = ret;
        lk->ctl_h.kind = LK_H_CONTROL;
        ev = (struct epoll_event){.events = EPOLLIN, .data.ptr = &lk->ctl_h};
        if (epoll_ctl(lk->epfd, EPOLL_CTL_ADD, lk->ctl_fd, &ev) != 0)
            return -errno;
    }
    log_info(LK_COMPONENT, "relaying %s (port %d) -> %s; control %s", o->listen, lk->listen_port,
             o->connect, o->control != NULL ? o->control : "none (signals only)");
    lk_log_params(lk);
    return 0;
}

int
main(int argc, char **argv)
{
    static const struct option longopts[] = {{"listen", required_argument, NULL, 'l'},
                                             {"connect", required_argument, NULL, 'c'},
                                             {"delay", required_argument, NULL, 'd'},
                                             {"jitter", required_argument, NULL, 'j'},
                                             {"rate", required_argument, NULL, 'r'},
                                             {"queue", required_argument, NULL, 'q'},
                                             {"buffer", required_argument, NULL, 'B'},
                                             {"control", required_argument, NULL, 'C'},
                                             {"send", required_argument, NULL, 's'},
                                             {"seed", required_argument, NULL, 'S'},
                                             {"log-level", required_argument, NULL, 'v'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    static const char dur_what[] = "a duration (0, or a number with us, ms or s; max 3600s)";
    struct lk_options o = {.queue_limit = LK_QUEUE_DEFAULT,
                           .params.buffer_ns = LK_BUFFER_DEFAULT_NS};
    struct lk lk = {.epfd = -1, .listen_fd = -1, .ctl_fd = -1, .sig_fd = -1};
    struct sockaddr_storage ss;
    socklen_t sslen;
    const char *send_cmd = NULL;
    int opt, ret;

    opterr = 0;
    while ((opt = getopt_long(argc, argv, "+", longopts, NULL)) != -1) {
        switch (opt) {
        case 'l':
            o.listen = optarg;
            break;
        case 'c':
            o.connect = optarg;
            break;
        case 'd':
            if (parse_duration(optarg, &o.params.delay_ns) < 0)
                return bad_arg("--delay", optarg, dur_what);
            break;
        case 'j':
            if (parse_duration(optarg, &o.params.jitter_ns) < 0)
                return bad_arg("--jitter", optarg, dur_what);
            break;
        case 'r':
            if (parse_rate(optarg, &o.params.rate_bps) < 0)
                return bad_arg("--rate", optarg,
                               "a rate (0, or a number with bit, kbit, mbit or gbit; "
                               "at least 1kbit)");
            break;
        case 'B':
            if (parse_duration(optarg, &o.params.buffer_ns) < 0)
                return bad_arg("--buffer", optarg, dur_what);
            break;
        case 'q':
            if (parse_bytes(optarg, &o.queue_limit) < 0)
                return bad_arg("--queue", optarg,
                               "a size (bytes, or with k, m or g; at least 64k)");
            break;
        case 'C':
            o.control = optarg;
            break;
        case 's':
            send_cmd = optarg;
            break;
        case 'S': {
            char *end;

            errno = 0;
            o.seed = strtoull(optarg, &end, 0);
            if (errno != 0 || *end != '\0' || optarg[0] == '\0' || optarg[0] == '-')
                return bad_arg("--seed", optarg, "a number");
            break;
        }
        case 'v':
            ret = log_level_parse(optarg);
            if (ret < 0)
                return bad_arg("--log-level", optarg, "error, warning, info or debug");
            log_level = ret;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            if (optopt != 0 && strchr("ldjrBqCsSv", optopt) != NULL)
                fprintf(stderr, "wm-linkem: %s needs a value\n", argv[optind - 1]);
            else
                fprintf(stderr, "wm-linkem: unknown option %s\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        }
    }

    if (send_cmd != NULL) {
        /* Client mode: the command is --send's value and any words after the options. */
        size_t len = strlen(send_cmd) + 1;
        char *cmd;

        if (o.control == NULL || o.listen != NULL || o.connect != NULL) {
            fprintf(stderr, "wm-linkem: --send needs --control PATH and no --listen/--connect\n");
            usage(stderr);
            return 2;
        }
        for (int i = optind; i < argc; i++)
            len += strlen(argv[i]) + 1;
        cmd = malloc(len);
        if (cmd == NULL)
            return 1;
        strcpy(cmd, send_cmd);
        for (int i = optind; i < argc; i++) {
            strcat(cmd, " ");
            strcat(cmd, argv[i]);
        }
        if (strchr(cmd, '\n') != NULL) {
            fprintf(stderr, "wm-linkem: a command is one line\n");
            free(cmd);
            return 2;
        }
        ret = ctl_client(o.control, cmd);
        free(cmd);
        return ret;
    }
    if (optind < argc) {
        fprintf(stderr, "wm-linkem: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (o.listen == NULL || o.connect == NULL) {
        fprintf(stderr, "wm-linkem: --listen and --connect are required\n");
        usage(stderr);
        return 2;
    }
    if (wio_parse_hostport(o.listen, &ss, &sslen) < 0)
        return bad_arg("--listen", o.listen, "HOST:PORT");
    ret = wio_parse_hostport(o.connect, &lk.dst, &lk.dst_len);
    if (ret < 0 ||
        (lk.dst.ss_family == AF_INET && ((struct sockaddr_in *)&lk.dst)->sin_port == 0) ||
        (lk.dst.ss_family == AF_INET6 && ((struct sockaddr_in6 *)&lk.dst)->sin6_port == 0))
        return bad_arg("--connect", o.connect, "HOST:PORT (with a port other than 0)");
    if (o.control != NULL && strlen(o.control) >= sizeof(((struct sockaddr_un *)0)->sun_path))
        return bad_arg("--control", o.control, "a path shorter than 108 bytes");

    ret = lk_init(&lk, &o);
    if (ret == 0)
        ret = lk_run(&lk);
    lk_free(&lk);
    return ret == 0 ? 0 : 1;
}
