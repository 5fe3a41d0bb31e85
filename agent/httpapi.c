/*
 * httpapi.c - the agent's HTTP API (contract in httpapi.h): libmicrohttpd with its own polling
 * thread, JSON by jansson.
 *
 * Lifecycle: httpapi_start() parses "host:port" / "[v6]:port", decides on access control (a
 * loopback address may go without a token; any other address needs http_token_file), reads the
 * token, and starts one MHD daemon whose internal thread answers every request.  Handlers only
 * copy the snapshot out of the status board or set a request bit on it (status.h), both under
 * the board's mutex, so they never block the agent's loop for longer than a struct copy.
 * httpapi_stop() stops the thread and closes the socket; it returns once no handler runs.
 *
 * Every request is answered from the first call of the access handler, before any body is
 * read: no endpoint takes a body, and MHD closes the connection after the response when a body
 * was sent anyway, so a client cannot make the agent buffer anything.
 *
 * JSON numbers: jansson's integers are signed 64-bit.  A uint64_t above INT64_MAX (a
 * system_id made after 2038, an absurd LSN) is written as a decimal string instead.  LSNs are
 * also given as PostgreSQL's "X/X" text in "<name>_lsn_text"; a negative (unknown) lag in
 * seconds is null.  Strings that are not valid UTF-8 have their non-ASCII bytes replaced by '?'.
 *
 * Failure semantics: httpapi_start() returns a negative errno and one line in err, having
 * started nothing.  Once running, a failure to build a response (out of memory) makes MHD drop
 * that connection; nothing is fatal to the agent.
 */
#include "httpapi.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "maint.h"
#include "metrics.h"
#include "statuspage.h"

#define HTTPAPI_TOKEN_MAX 4096 /* bytes in a token file */
/* Admission (see "Connections" below): at most HTTPAPI_CONN_LIMIT connections at a time, at
 * most HTTPAPI_PER_ADDR_LIMIT of them from one client address, and the last HTTPAPI_RESERVE
 * slots only for addresses that hold fewer than HTTPAPI_RESERVE_HOLDS; a connection idle for
 * HTTPAPI_TIMEOUT_S seconds is closed. */
#define HTTPAPI_CONN_LIMIT 64
#define HTTPAPI_PER_ADDR_LIMIT 8
#define HTTPAPI_RESERVE 16
#define HTTPAPI_RESERVE_HOLDS 2
#define HTTPAPI_TIMEOUT_S 3
#define HTTPAPI_ADDR_MAX (INET6_ADDRSTRLEN + 16) /* a numeric address, with an IPv6 zone */

/* One client address that holds connections, and its current burst of refusals. */
struct admit_addr {
    char addr[HTTPAPI_ADDR_MAX]; /* "" = a free entry */
    unsigned held;
    uint64_t refused;       /* refused since its burst began (0: no burst) */
    uint64_t burst_mono_us; /* when the burst began */
};

/* Who holds the connections; guarded by lock (MHD's thread, and httpapi_stop's). */
struct admission {
    pthread_mutex_t lock;
    unsigned held;                               /* connections open, all addresses */
    struct admit_addr addrs[HTTPAPI_CONN_LIMIT]; /* no more addresses than connections */
    uint64_t full_refused;                       /* refused while every slot was taken */
    uint64_t full_mono_us;
};

struct httpapi {
    struct MHD_Daemon *daemon;
    struct status_board *board;
    int port;
    char listen[300]; /* hostport as given, for messages */
    bool has_token;
    unsigned char token_digest[32];    /* SHA-256 of the token: compared in constant time */
    atomic_bool starting;              /* MHD messages go to start_msg too while true */
    struct maint_store *_Atomic maint; /* maintenance windows; NULL: not on this agent */
    pthread_mutex_t th_lock;           /* guards th (set by the agent, read by requests) */
    struct statuspage_thresholds th;   /* the status page's lag thresholds */
    struct admission adm;
    char start_msg[256];
};

/* ---------------------------------------------------------------------------------------- */
/* Start-up helpers                                                                          */

/* Splits "host:port" or "[host]:port" into host[hostcap] and *port (0..65535). */
static int
split_hostport(const char *hp, char *host, size_t hostcap, unsigned *port)
{
    const char *colon, *end;
    size_t hlen;
    char *stop;
    unsigned long p;

    if (hp[0] == '[') {
        end = strchr(hp, ']');
        if (end == NULL || end[1] != ':')
            return -EINVAL;
        hp++;
        hlen = (size_t)(end - hp);
        colon = end + 1;
    } else {
        colon = strrchr(hp, ':');
        if (colon == NULL || memchr(hp, ':', (size_t)(colon - hp)) != NULL)
            return -EINVAL; /* no port, or an IPv6 address without brackets */
        hlen = (size_t)(colon - hp);
    }
    if (hlen == 0 || hlen >= hostcap || colon[1] < '0' || colon[1] > '9')
        return -EINVAL;
    errno = 0;
    p = strtoul(colon + 1, &stop, 10);
    if (errno != 0 || *stop != '\0' || p > 65535)
        return -EINVAL;
    memcpy(host, hp, hlen);
    host[hlen] = '\0';
    *port = (unsigned)p;
    return 0;
}

static bool
is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_LOOPBACK(a))
            return true;
        /* ::ffff:127.x.y.z */
        return IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127;
    }
    return false;
}

/*
 * Reads the token from path: the whole file less trailing whitespace, 1..HTTPAPI_TOKEN_MAX
 * printable ASCII bytes without spaces, in a file that other users cannot read or write.
 * Stores its SHA-256 in digest[32].
 */
static int
read_token(const char *path, unsigned char *digest, char *err, size_t errlen)
{
    char buf[HTTPAPI_TOKEN_MAX + 2];
    struct stat st;
    size_t n = 0;
    ssize_t r;
    unsigned mdlen = 0;
    int fd, rc = 0;

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        rc = -errno;
        snprintf(err, errlen, "http_token_file %s: cannot read: %s", path, strerror(-rc));
        return rc;
    }
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        snprintf(err, errlen, "http_token_file %s: %s", path, strerror(-rc));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = -EINVAL;
        snprintf(err, errlen, "http_token_file %s: not a regular file", path);
        goto out;
    }
    if ((st.st_mode & (S_IROTH | S_IWOTH)) != 0) {
        rc = -EPERM;
        snprintf(err, errlen,
                 "http_token_file %s: other users can read or write it (mode %04o): chmod o-rw",
                 path, (unsigned)(st.st_mode & 07777));
        goto out;
    }
    while (n < sizeof(buf)) {
        r = read(fd, buf + n, sizeof(buf) - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = -errno;
            snprintf(err, errlen, "http_token_file %s: cannot read: %s", path, strerror(-rc));
            goto out;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    /* A full buffer holds HTTPAPI_TOKEN_MAX + 2 bytes or more: too long, whatever follows. */
    while (n > 0 && n < sizeof(buf) &&
           (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' || buf[n - 1] == '\t'))
        n--;
    if (n > HTTPAPI_TOKEN_MAX) {
        rc = -EINVAL;
        snprintf(err, errlen, "http_token_file %s: longer than %d bytes", path, HTTPAPI_TOKEN_MAX);
        goto out;
    }
    if (n == 0) {
        rc = -EINVAL;
        snprintf(err, errlen, "http_token_file %s: the token is empty", path);
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)buf[i] <= 0x20 || (unsigned char)buf[i] >= 0x7f) {
            rc = -EINVAL;
            snprintf(err, errlen,
                     "http_token_file %s: the token must be printable ASCII without spaces", path);
            goto out;
        }
    if (EVP_Digest(buf, n, digest, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32) {
        rc = -ENOMEM;
        snprintf(err, errlen, "http_token_file %s: SHA-256 failed", path);
        goto out;
    }
out:
    OPENSSL_cleanse(buf, sizeof(buf));
    close(fd);
    return rc;
}

/*
 * Copies src into dst[cap] without its HTML markup: each tag is dropped, and text on either
 * side of tags is joined by ": " ("<title>Request malformed</title><body>Your request..."
 * becomes "Request malformed: Your request...").  libmicrohttpd puts the HTML body of its
 * error responses into its log messages.
 */
static void
strip_html(char *dst, size_t cap, const char *src)
{
    size_t n = 0;
    bool in_tag = false, after_tag = false;

    for (; *src != '\0' && n + 3 < cap; src++) {
        if (*src == '<') {
            in_tag = true;
            continue;
        }
        if (in_tag) {
            if (*src == '>') {
                in_tag = false;
                after_tag = true;
            }
            continue;
        }
        if (after_tag && n > 0 && dst[n - 1] != '(' && dst[n - 1] != '\'' && *src != '\'' &&
            *src != ')') {
            dst[n++] = ':';
            dst[n++] = ' ';
        }
        after_tag = false;
        dst[n++] = *src;
    }
    dst[n] = '\0';
}

/* MHD's error log: one plain line to log.h; during start-up, into start_msg for
 * httpapi_start() instead. */
static void
mhd_logger(void *cls, const char *fmt, va_list ap)
{
    struct httpapi *h = cls;
    char msg[512], text[512], line[512];

    if (vsnprintf(msg, sizeof(msg), fmt, ap) < 0)
        return;
    strip_html(text, sizeof(text), msg);
    log_one_line(line, sizeof(line), text);
    if (atomic_load(&h->starting)) {
        /* httpapi_start() reports it; a log line too would say the same thing twice */
        size_t n = strlen(line);
        if (n >= sizeof(h->start_msg))
            n = sizeof(h->start_msg) - 1;
        memcpy(h->start_msg, line, n);
        h->start_msg[n] = '\0';
        return;
    }
    log_warning("http", "%s", line);
}

/* ---------------------------------------------------------------------------------------- */
/* JSON                                                                                      */

/* A string of at most cap bytes (a fixed array that may lack its NUL), made valid UTF-8. */
static json_t *
json_fixed_string(const char *s, size_t cap)
{
    size_t n = strnlen(s, cap);
    json_t *j = json_stringn(s, n);
    char *copy;

    if (j != NULL)
        return j;
    copy = malloc(n + 1);
    if (copy == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++)
        copy[i] = (unsigned char)s[i] >= 0x80 ? '?' : s[i];
    copy[n] = '\0';
    j = json_stringn(copy, n);
    free(copy);
    return j;
}

static json_t *
json_u64(uint64_t v)
{
    char text[24];

    if (v <= (uint64_t)INT64_MAX)
        return json_integer((json_int_t)v);
    snprintf(text, sizeof(text), "%" PRIu64, v);
    return json_string(text);
}

/* Seconds, or null when negative (unknown) or not finite. */
static json_t *
json_seconds(double s)
{
    if (!isfinite(s) || s < 0)
        return json_null();
    return json_real(s);
}

static json_t *
json_lsn_text(uint64_t lsn)
{
    char text[24];

    snprintf(text, sizeof(text), "%" PRIX32 "/%" PRIX32, (uint32_t)(lsn >> 32), (uint32_t)lsn);
    return json_string(text);
}

/* Sets key to v (taking the reference); false if v is NULL or the set failed. */
static bool
put(json_t *o, const char *key, json_t *v)
{
    return v != NULL && json_object_set_new(o, key, v) == 0;
}

static bool
put_lsn(json_t *o, const char *key, uint64_t lsn)
{
    char textkey[64];
    int n = snprintf(textkey, sizeof(textkey), "%s_text", key);

    if (n < 0 || (size_t)n >= sizeof(textkey))
        return false;
    return put(o, key, json_u64(lsn)) && put(o, textkey, json_lsn_text(lsn));
}

#define PUT_STR(o, s, field) put((o), #field, json_fixed_string((s)->field, sizeof((s)->field)))

static bool
snap_is(const char *field, size_t cap, const char *v)
{
    return strnlen(field, cap) == strlen(v) && strncmp(field, v, cap) == 0;
}
#define SNAP_IS(s, field, v) snap_is((s)->field, sizeof((s)->field), (v))

/* The snapshot as a JSON object; NULL when out of memory. */
static json_t *
snapshot_json(const struct status_snapshot *s)
{
    json_t *o = json_object();
    bool ok;

    if (o == NULL)
        return NULL;
    ok = PUT_STR(o, s, node_name) && PUT_STR(o, s, role) && PUT_STR(o, s, pg_state) &&
         put(o, "system_id", json_u64(s->system_id)) &&
         put(o, "timeline", json_integer(s->timeline)) && put(o, "epoch", json_u64(s->epoch)) &&
         put(o, "started_unix_us", json_u64(s->started_unix_us)) &&
         put(o, "now_unix_us", json_u64(s->now_unix_us)) &&
         put_lsn(o, "primary_lsn", s->primary_lsn) && put_lsn(o, "sent_lsn", s->sent_lsn) &&
         put_lsn(o, "write_lsn", s->write_lsn) && put_lsn(o, "flush_lsn", s->flush_lsn) &&
         put_lsn(o, "apply_lsn", s->apply_lsn) &&
         put(o, "write_lag_bytes", json_u64(s->write_lag_bytes)) &&
         put(o, "flush_lag_bytes", json_u64(s->flush_lag_bytes)) &&
         put(o, "apply_lag_bytes", json_u64(s->apply_lag_bytes)) &&
         put(o, "write_lag_s", json_seconds(s->write_lag_s)) &&
         put(o, "flush_lag_s", json_seconds(s->flush_lag_s)) &&
         put(o, "apply_lag_s", json_seconds(s->apply_lag_s)) && PUT_STR(o, s, sync_state) &&
         PUT_STR(o, s, peer_name) && PUT_STR(o, s, peer_addr) &&
         put(o, "link_up", json_boolean(s->link_up)) && put(o, "rtt_us", json_u64(s->rtt_us)) &&
         put(o, "wal_raw_bytes", json_u64(s->wal_raw_bytes)) &&
         put(o, "wal_wire_bytes", json_u64(s->wal_wire_bytes)) &&
         PUT_STR(o, s, wal_compression) && PUT_STR(o, s, operation) &&
         PUT_STR(o, s, op_step) && put(o, "op_id", json_u64(s->op_id)) &&
         put(o, "last_op_id", json_u64(s->last_op_id)) && PUT_STR(o, s, last_op) &&
         put(o, "last_op_ok", json_boolean(s->last_op_ok)) && PUT_STR(o, s, last_op_result) &&
         put(o, "last_unavailability_us",
             s->last_unavailability_us < 0 ? json_null()
                                           : json_integer(s->last_unavailability_us)) &&
         put(o, "switchovers", json_u64(s->switchovers)) &&
         put(o, "failovers", json_u64(s->failovers)) &&
         put(o, "scheduled_switchover_unix_us", json_u64(s->scheduled_switchover_unix_us)) &&
         put(o, "spool_free_bytes",
             s->spool_free_bytes < 0 ? json_null() : json_integer(s->spool_free_bytes)) &&
         put(o, "cert_not_after_unix",
             s->cert_not_after_unix < 0 ? json_null() : json_integer(s->cert_not_after_unix)) &&
         put(o, "spool_stall",
             s->spool_stall[0] != '\0' ? json_fixed_string(s->spool_stall, sizeof(s->spool_stall))
                                        : json_null()) &&
         put(o, "spool_stalled_since_unix_us", json_u64(s->spool_stalled_since_unix_us)) &&
         put(o, "failover_paused", json_boolean(s->failover_paused)) &&
         PUT_STR(o, s, maintenance) && PUT_STR(o, s, last_error);
    /* availability and the arbiter */
    ok = ok && PUT_STR(o, s, availability_mode) && put(o, "exposed", json_boolean(s->exposed)) &&
         put(o, "stale", json_boolean(s->stale)) &&
         put(o, "exposed_since_unix_us", json_u64(s->exposed_since_unix_us)) &&
         put_lsn(o, "exposed_lsn", s->exposed_lsn) &&
         put(o, "wal_at_risk_bytes", json_u64(s->wal_at_risk_bytes)) &&
         put(o, "wal_at_risk_peak_bytes", json_u64(s->wal_at_risk_peak_bytes)) &&
         put(o, "exposed_seconds_total", json_real(s->exposed_seconds_total)) &&
         PUT_STR(o, s, arbiter) && PUT_STR(o, s, arbiter_state) && PUT_STR(o, s, arbiter_desc);
    if (!ok) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* ---------------------------------------------------------------------------------------- */
/* Responses                                                                                 */

/* Queues o (consumed) as the JSON response with this status; extra headers as name/value
 * pairs, NULL-terminated. */
static enum MHD_Result reply_json(struct MHD_Connection *c, unsigned code, json_t *o, ...)
    __attribute__((sentinel));

static enum MHD_Result
reply_json(struct MHD_Connection *c, unsigned code, json_t *o, ...)
{
    struct MHD_Response *resp;
    enum MHD_Result ret;
    const char *name, *value;
    char *text, *body;
    size_t len;
    va_list ap;

    if (o == NULL)
        return MHD_NO;
    text = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (text == NULL)
        return MHD_NO;
    /* A trailing newline, for the benefit of curl in a terminal. */
    len = strlen(text);
    body = realloc(text, len + 2);
    if (body == NULL) {
        free(text);
        return MHD_NO;
    }
    body[len++] = '\n';
    body[len] = '\0';
    resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (resp == NULL)
        free(body);
    if (resp == NULL)
        return MHD_NO;
    if (MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json") !=
            MHD_YES ||
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store") != MHD_YES) {
        MHD_destroy_response(resp);
        return MHD_NO;
    }
    va_start(ap, o);
    while ((name = va_arg(ap, const char *)) != NULL) {
        value = va_arg(ap, const char *);
        if (MHD_add_response_header(resp, name, value) != MHD_YES) {
            va_end(ap);
            MHD_destroy_response(resp);
            return MHD_NO;
        }
    }
    va_end(ap);
    ret = MHD_queue_response(c, code, resp);
    MHD_destroy_response(resp);
    return ret;
}

static json_t *
error_body(const char *msg)
{
    json_t *o = json_object();

    if (o != NULL && !put(o, "error", json_string(msg))) {
        json_decref(o);
        return NULL;
    }
    return o;
}

#define CLIENT_NAME_MAX (HTTPAPI_ADDR_MAX + 8)

/* The numeric host of sa ("127.0.0.1", "::1"; an IPv4-mapped IPv6 address as IPv4) into
 * host[HTTPAPI_ADDR_MAX] and its port into *port; false (host "?") for another family. */
static bool
addr_host(const struct sockaddr *sa, char *host, unsigned *port)
{
    bool ok = false;

    if (sa != NULL && sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        *port = ntohs(in->sin_port);
        ok = inet_ntop(AF_INET, &in->sin_addr, host, HTTPAPI_ADDR_MAX) != NULL;
    } else if (sa != NULL && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        *port = ntohs(in6->sin6_port);
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
            ok = inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], host, HTTPAPI_ADDR_MAX) != NULL;
        else
            ok = inet_ntop(AF_INET6, &in6->sin6_addr, host, HTTPAPI_ADDR_MAX) != NULL;
    }
    if (!ok)
        snprintf(host, HTTPAPI_ADDR_MAX, "?");
    return ok;
}

/* "ADDR:PORT" or "[ADDR]:PORT" of the client, for log lines; "?" if unknown. */
static void
client_name(struct MHD_Connection *c, char *buf, size_t cap)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    char host[HTTPAPI_ADDR_MAX];
    unsigned port = 0;

    if (ci == NULL || !addr_host(ci->client_addr, host, &port))
        snprintf(buf, cap, "?");
    else if (strchr(host, ':') != NULL)
        snprintf(buf, cap, "[%s]:%u", host, port);
    else
        snprintf(buf, cap, "%s:%u", host, port);
}

/* ---------------------------------------------------------------------------------------- */
/* Connections                                                                               */

/*
 * Which connections the API takes: decided in MHD's accept policy callback, before MHD
 * allocates anything for the connection, from the counts that the connection notifications
 * keep (MHD calls all three from its one thread, one accepted connection at a time).  A
 * connection is refused - closed at once - when HTTPAPI_CONN_LIMIT are open, when its
 * address holds HTTPAPI_PER_ADDR_LIMIT, or when fewer than HTTPAPI_RESERVE slots are free and
 * its address holds HTTPAPI_RESERVE_HOLDS or more: one client cannot take every slot, and
 * health checks from other addresses keep getting in.  Refusals are logged once per burst
 * (a warning naming the address when the first is refused; a line counting them when that
 * address has closed its last connection), never once per connection.
 */

/* The entry of addr; with create, a free one made for it; NULL if none. */
static struct admit_addr *
admit_find(struct admission *a, const char *addr, bool create)
{
    struct admit_addr *free_slot = NULL;

    for (int i = 0; i < HTTPAPI_CONN_LIMIT; i++) {
        if (strcmp(a->addrs[i].addr, addr) == 0)
            return &a->addrs[i];
        if (free_slot == NULL && a->addrs[i].addr[0] == '\0')
            free_slot = &a->addrs[i];
    }
    if (!create || free_slot == NULL)
        return NULL;
    memset(free_slot, 0, sizeof(*free_slot));
    snprintf(free_slot->addr, sizeof(free_slot->addr), "%s", addr);
    return free_slot;
}

static enum MHD_Result
on_accept_policy(void *cls, const struct sockaddr *sa, socklen_t len)
{
    struct httpapi *h = cls;
    struct admission *a = &h->adm;
    char addr[HTTPAPI_ADDR_MAX];
    struct admit_addr *e;
    unsigned port = 0, holds, free_slots;
    enum MHD_Result ret = MHD_YES;

    (void)len;
    (void)addr_host(sa, addr, &port);
    pthread_mutex_lock(&a->lock);
    e = admit_find(a, addr, false);
    holds = e != NULL ? e->held : 0;
    free_slots = a->held < HTTPAPI_CONN_LIMIT ? HTTPAPI_CONN_LIMIT - a->held : 0;
    if (free_slots == 0) {
        ret = MHD_NO;
        if (a->full_refused++ == 0) {
            a->full_mono_us = clock_mono_us();
            log_warning("http",
                        "refusing connections: all %d are taken (this one from %s); further "
                        "refusals are counted, not logged, until half are free",
                        HTTPAPI_CONN_LIMIT, addr);
        }
    } else if (holds >= HTTPAPI_PER_ADDR_LIMIT ||
               (free_slots <= HTTPAPI_RESERVE && holds >= HTTPAPI_RESERVE_HOLDS)) {
        ret = MHD_NO;
        if (e->refused++ == 0) {
            e->burst_mono_us = clock_mono_us();
            if (holds >= HTTPAPI_PER_ADDR_LIMIT)
                log_warning("http",
                            "refusing connections from %s: it holds %u, the most one address "
                            "may; further refusals are counted, not logged, until it has "
                            "closed them",
                            addr, holds);
            else
                log_warning("http",
                            "refusing connections from %s: it holds %u and only %u of %d are "
                            "free, kept for addresses that hold fewer than %d; further "
                            "refusals are counted, not logged, until it has closed them",
                            addr, holds, free_slots, HTTPAPI_CONN_LIMIT, HTTPAPI_RESERVE_HOLDS);
        }
    }
    pthread_mutex_unlock(&a->lock);
    return ret;
}

static void
on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
              enum MHD_ConnectionNotificationCode what)
{
    struct httpapi *h = cls;
    struct admission *a = &h->adm;
    const union MHD_ConnectionInfo *ci;
    char addr[HTTPAPI_ADDR_MAX];
    struct admit_addr *e;
    unsigned port = 0;

    pthread_mutex_lock(&a->lock);
    if (what == MHD_CONNECTION_NOTIFY_STARTED) {
        ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        (void)addr_host(ci != NULL ? ci->client_addr : NULL, addr, &port);
        e = admit_find(a, addr, true);
        if (e != NULL)
            e->held++;
        *socket_context = e;
        a->held++;
    } else if (what == MHD_CONNECTION_NOTIFY_CLOSED) {
        e = *socket_context;
        *socket_context = NULL;
        if (a->held > 0)
            a->held--;
        if (e != NULL && e->held > 0 && --e->held == 0) {
            if (e->refused > 0)
                log_info("http",
                         "%s has closed its last connection: %" PRIu64
                         " connections from it were refused in %.1f s",
                         e->addr, e->refused, (double)(clock_mono_us() - e->burst_mono_us) / 1e6);
            e->addr[0] = '\0';
        }
        if (a->full_refused > 0 && a->held <= HTTPAPI_CONN_LIMIT / 2) {
            log_info("http",
                     "half the connections are free again: %" PRIu64
                     " connections were refused in %.1f s",
                     a->full_refused, (double)(clock_mono_us() - a->full_mono_us) / 1e6);
            a->full_refused = 0;
        }
    }
    pthread_mutex_unlock(&a->lock);
}

/* A copy of client-supplied text for a log line: at most cap - 1 bytes, each byte outside
 * printable ASCII replaced by '?', so that a request cannot forge log lines. */
static const char *
printable(char *dst, size_t cap, const char *src)
{
    size_t n = 0;

    for (; src[n] != '\0' && n + 1 < cap; n++)
        dst[n] = (unsigned char)src[n] < 0x20 || (unsigned char)src[n] >= 0x7f ? '?' : src[n];
    dst[n] = '\0';
    return dst;
}

/* True if the request carries "Authorization: Bearer <token>" with the right token. */
static bool
authorized(const struct httpapi *h, struct MHD_Connection *c)
{
    const char *auth;
    unsigned char digest[32];
    unsigned mdlen = 0;

    if (!h->has_token)
        return true;
    auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (auth == NULL || strncasecmp(auth, "Bearer ", 7) != 0)
        return false;
    auth += 7;
    while (*auth == ' ')
        auth++;
    /* Comparing digests keeps the time independent of where the tokens differ and of the
     * length of the token sent. */
    if (EVP_Digest(auth, strlen(auth), digest, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32)
        return false;
    return CRYPTO_memcmp(digest, h->token_digest, sizeof(digest)) == 0;
}

/* ---------------------------------------------------------------------------------------- */
/* The request handler                                                                       */

enum route {
    ROUTE_NONE = 0,
    ROUTE_STATUS,
    ROUTE_METRICS,
    ROUTE_HEALTH,
    ROUTE_PRIMARY,
    ROUTE_STANDBY,
    ROUTE_PAGE,
    ROUTE_SUMMARY,
    ROUTE_SP_STATUS,
    ROUTE_SP_INCIDENTS,
    /* from here on, the routes of requests that change something (see cross_site_refusal) */
    ROUTE_PAUSE,
    ROUTE_RESUME,
    ROUTE_SWITCHOVER,
    ROUTE_FAILOVER,
    ROUTE_REJOIN,
    ROUTE_MAINT,    /* /maintenance */
    ROUTE_MAINT_ID, /* /maintenance/ID */
};

static enum route
route_of(const char *url)
{
    if (strcmp(url, "/status") == 0)
        return ROUTE_STATUS;
    if (strcmp(url, "/metrics") == 0)
        return ROUTE_METRICS;
    if (strcmp(url, "/health") == 0)
        return ROUTE_HEALTH;
    if (strcmp(url, "/primary") == 0)
        return ROUTE_PRIMARY;
    if (strcmp(url, "/standby") == 0)
        return ROUTE_STANDBY;
    if (strcmp(url, "/") == 0 || strcmp(url, "/index.html") == 0)
        return ROUTE_PAGE;
    if (strcmp(url, "/api/v2/summary.json") == 0)
        return ROUTE_SUMMARY;
    if (strcmp(url, "/api/v2/status.json") == 0)
        return ROUTE_SP_STATUS;
    if (strcmp(url, "/api/v2/incidents.json") == 0)
        return ROUTE_SP_INCIDENTS;
    if (strcmp(url, "/pause") == 0)
        return ROUTE_PAUSE;
    if (strcmp(url, "/resume") == 0)
        return ROUTE_RESUME;
    if (strcmp(url, "/switchover") == 0)
        return ROUTE_SWITCHOVER;
    if (strcmp(url, "/failover") == 0)
        return ROUTE_FAILOVER;
    if (strcmp(url, "/rejoin") == 0)
        return ROUTE_REJOIN;
    if (strcmp(url, "/maintenance") == 0)
        return ROUTE_MAINT;
    if (strncmp(url, "/maintenance/", 13) == 0)
        return ROUTE_MAINT_ID;
    return ROUTE_NONE;
}

static enum MHD_Result
handle_action(struct httpapi *h, struct MHD_Connection *c, enum route r)
{
    struct status_snapshot snap;
    const char *what = r == ROUTE_PAUSE ? "pause" : "resume";
    char who[CLIENT_NAME_MAX];
    json_t *o;

    status_request(h->board, r == ROUTE_PAUSE ? STATUS_REQ_PAUSE : STATUS_REQ_RESUME);
    client_name(c, who, sizeof(who));
    log_info("http", "POST /%s from %s: automatic fail-over %s requested", what, who, what);
    status_read(h->board, &snap);
    o = json_object();
    if (o == NULL)
        return MHD_NO;
    if (!put(o, "requested", json_string(what)) || !PUT_STR(o, &snap, node_name)) {
        json_decref(o);
        return MHD_NO;
    }
    return reply_json(c, MHD_HTTP_ACCEPTED, o, NULL);
}

/*
 * A switchover's target, checked when it is asked for: one of the two sites' node names, as
 * the agent publishes them in its status (node_name, peer_name, from its configuration), and
 * not this node when it is already the primary.  Returns 0, or the status (400; 503 while the
 * agent has published nothing) with the reason in why.
 */
static unsigned
check_target(struct httpapi *h, const char *to, char *why, size_t cap)
{
    struct status_snapshot *s = malloc(sizeof(*s)); /* ~20 KB: not on MHD's stack */
    char name[STATUS_NAME_MAX + 1];
    unsigned code = 0;

    if (s == NULL) {
        snprintf(why, cap, "out of memory");
        return MHD_HTTP_INTERNAL_SERVER_ERROR;
    }
    status_read(h->board, s);
    printable(name, sizeof(name), to);
    if (s->node_name[0] == '\0') {
        snprintf(why, cap, "the agent is starting: it cannot check the target %s yet", name);
        code = MHD_HTTP_SERVICE_UNAVAILABLE;
    } else if (SNAP_IS(s, node_name, to) && SNAP_IS(s, role, "source")) {
        snprintf(why, cap,
                 "to: %s is this node, the primary already: a switchover moves the primary to "
                 "its peer, %.*s",
                 name, (int)strnlen(s->peer_name, sizeof(s->peer_name)), s->peer_name);
        code = MHD_HTTP_BAD_REQUEST;
    } else if (!SNAP_IS(s, node_name, to) && !SNAP_IS(s, peer_name, to)) {
        snprintf(why, cap, "to: unknown node \"%s\" (the nodes are %.*s, this one, and %.*s)", name,
                 (int)strnlen(s->node_name, sizeof(s->node_name)), s->node_name,
                 (int)strnlen(s->peer_name, sizeof(s->peer_name)), s->peer_name);
        code = MHD_HTTP_BAD_REQUEST;
    }
    free(s);
    return code;
}

/*
 * POST /switchover[?to=NODE&max_lag=BYTES], /failover[?force=1[&accept_data_loss=1]], /rejoin:
 * files the request
 * for the agent's loop and answers 202 with its id; the outcome shows in /status (op_id,
 * operation, op_step, then last_op_id, last_op_ok, last_op_result).
 */
static enum MHD_Result
handle_operation(struct httpapi *h, struct MHD_Connection *c, enum route r)
{
    struct status_op_request req = {0};
    struct status_snapshot snap;
    const char *v, *what;
    char who[CLIENT_NAME_MAX], why[300];
    json_t *o;

    switch (r) {
    case ROUTE_SWITCHOVER:
        what = "switchover";
        req.kind = STATUS_REQ_SWITCHOVER;
        v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "to");
        if (v != NULL && v[0] != '\0') {
            unsigned code = check_target(h, v, why, sizeof(why));
            if (code != 0)
                return reply_json(c, code, error_body(why), NULL);
            snprintf(req.target, sizeof(req.target), "%s", v);
        }
        v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "max_lag");
        if (v != NULL) {
            char *end;
            errno = 0;
            req.max_lag_bytes = strtoull(v, &end, 10);
            if (errno != 0 || end == v || *end != '\0')
                return reply_json(c, MHD_HTTP_BAD_REQUEST,
                                  error_body("max_lag: a number of bytes expected"), NULL);
        }
        v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "at");
        if (v != NULL) {
            char *end;
            unsigned long long at;
            errno = 0;
            at = strtoull(v, &end, 10);
            if (errno != 0 || end == v || *end != '\0' || at > UINT64_MAX / 1000000)
                return reply_json(c, MHD_HTTP_BAD_REQUEST,
                                  error_body("at: seconds since the Unix epoch expected"), NULL);
            req.at_unix_us = (uint64_t)at * 1000000;
        }
        break;
    case ROUTE_FAILOVER:
        what = "failover";
        req.kind = STATUS_REQ_FAILOVER;
        v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "force");
        req.force = v != NULL && (strcmp(v, "1") == 0 || strcmp(v, "true") == 0);
        v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "accept_data_loss");
        req.accept_data_loss = v != NULL && (strcmp(v, "1") == 0 || strcmp(v, "true") == 0);
        if (req.accept_data_loss && !req.force)
            return reply_json(c, MHD_HTTP_BAD_REQUEST,
                              error_body("accept_data_loss: only with force=1"), NULL);
        break;
    default:
        what = "rejoin";
        req.kind = STATUS_REQ_REJOIN;
        break;
    }
    status_request_op(h->board, &req);
    client_name(c, who, sizeof(who));
    log_info("http", "POST /%s from %s: %s requested (id %" PRIu64 "%s%s%s)", what, who, what,
             req.id, req.target[0] != '\0' ? ", to " : "", req.target,
             req.accept_data_loss ? ", forced, accepting data loss"
             : req.force          ? ", forced"
                                  : "");
    status_read(h->board, &snap);
    o = json_object();
    if (o == NULL)
        return MHD_NO;
    if (!put(o, "requested", json_string(what)) || !put(o, "id", json_u64(req.id)) ||
        !PUT_STR(o, &snap, node_name)) {
        json_decref(o);
        return MHD_NO;
    }
    return reply_json(c, MHD_HTTP_ACCEPTED, o, NULL);
}

/*
 * GET /maintenance: the windows with their next and active instants; POST /maintenance?rrule=
 * &start=&from=&at=&duration=&tz=&class=&switchover=&id= adds one (201 with it; 400 with the
 * validation message; 409 if id is taken); DELETE /maintenance/ID removes one (200; 404 if there is none).
 */
static enum MHD_Result
handle_maint(struct httpapi *h, struct MHD_Connection *c, enum route r, const char *url,
             const char *method)
{
    struct maint_store *m = atomic_load(&h->maint);
    struct status_snapshot snap;
    int64_t now = (int64_t)(clock_unix_us() / 1000000);
    char who[CLIENT_NAME_MAX], err[512];
    json_t *o, *list;
    int rc;

    if (m == NULL)
        return reply_json(c, MHD_HTTP_SERVICE_UNAVAILABLE,
                          error_body("this agent keeps no maintenance windows"), NULL);
    client_name(c, who, sizeof(who));
    status_read(h->board, &snap);
    if (r == ROUTE_MAINT && (strcmp(method, MHD_HTTP_METHOD_GET) == 0 ||
                             strcmp(method, MHD_HTTP_METHOD_HEAD) == 0)) {
        struct maint_window *w = calloc(MAINT_MAX, sizeof(*w));
        int n = w != NULL ? maint_store_list(m, w, MAINT_MAX, true) : -ENOMEM;
        bool ok;

        o = json_object();
        list = json_array();
        ok = n >= 0 && o != NULL && list != NULL;
        for (int i = 0; ok && i < n; i++)
            ok = json_array_append_new(list, maint_window_json(&w[i], now)) == 0;
        free(w);
        if (!ok || !PUT_STR(o, &snap, node_name) || !put(o, "now", json_integer(now)) ||
            !PUT_STR(o, &snap, maintenance) || !put(o, "windows", list)) {
            if (!ok)
                json_decref(list);
            json_decref(o);
            return MHD_NO;
        }
        return reply_json(c, MHD_HTTP_OK, o, NULL);
    }
    if (r == ROUTE_MAINT && strcmp(method, MHD_HTTP_METHOD_POST) == 0) {
        struct maint_params p = {
            .rrule = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "rrule"),
            .start = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "start"),
            .from = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "from"),
            .at = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "at"),
            .duration = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "duration"),
            .tz = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "tz"),
            .cls = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "class"),
            .switchover = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "switchover"),
        };
        struct maint_window w;

        const char *idv = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "id");

        rc = maint_window_parse(&w, &p, now, err, sizeof(err));
        if (rc == 0 && idv != NULL) {
            char *end;
            errno = 0;
            w.id = strtoull(idv, &end, 10);
            if (errno != 0 || end == idv || *end != '\0' || !isdigit((unsigned char)idv[0]) ||
                w.id == 0 || w.id > (1ULL << 53)) {
                snprintf(err, sizeof(err), "id: a window number (1 or more) expected");
                rc = -EINVAL;
            }
        }
        if (rc == 0)
            rc = maint_store_add(m, &w, err, sizeof(err));
        if (rc < 0) {
            log_warning("http", "POST /maintenance from %s refused: %s", who, err);
            return reply_json(c, rc == -EINVAL   ? MHD_HTTP_BAD_REQUEST
                                 : rc == -ENOSPC || rc == -EEXIST ? MHD_HTTP_CONFLICT
                                                 : MHD_HTTP_INTERNAL_SERVER_ERROR,
                              error_body(err), NULL);
        }
        log_info("http", "POST /maintenance from %s: window %" PRIu64 " added (%s %s%s)", who,
                 w.id, maint_class_name(w.cls), w.rrule[0] != '\0' ? w.rrule : "one-off",
                 w.switchover ? ", switchover" : "");
        o = json_object();
        if (o == NULL || !PUT_STR(o, &snap, node_name) ||
            !put(o, "added", maint_window_json(&w, now))) {
            json_decref(o);
            return MHD_NO;
        }
        return reply_json(c, MHD_HTTP_CREATED, o, NULL);
    }
    if (r == ROUTE_MAINT_ID && strcmp(method, MHD_HTTP_METHOD_DELETE) == 0) {
        const char *v = url + 13;
        char *end;
        unsigned long long id;

        errno = 0;
        id = strtoull(v, &end, 10);
        if (errno != 0 || end == v || *end != '\0' || !isdigit((unsigned char)v[0]) || id == 0)
            return reply_json(c, MHD_HTTP_BAD_REQUEST,
                              error_body("DELETE /maintenance/ID: ID is a window's number"), NULL);
        rc = maint_store_remove(m, id, err, sizeof(err));
        if (rc < 0)
            return reply_json(c, rc == -ENOENT ? MHD_HTTP_NOT_FOUND
                                               : MHD_HTTP_INTERNAL_SERVER_ERROR,
                              error_body(err), NULL);
        log_info("http", "DELETE /maintenance/%llu from %s: removed", id, who);
        o = json_object();
        if (o == NULL || !PUT_STR(o, &snap, node_name) ||
            !put(o, "removed", json_integer((json_int_t)id))) {
            json_decref(o);
            return MHD_NO;
        }
        return reply_json(c, MHD_HTTP_OK, o, NULL);
    }
    return reply_json(c, MHD_HTTP_METHOD_NOT_ALLOWED,
                      error_body(r == ROUTE_MAINT
                                     ? "method not allowed: /maintenance takes GET or POST"
                                     : "method not allowed: /maintenance/ID takes DELETE"),
                      MHD_HTTP_HEADER_ALLOW, r == ROUTE_MAINT ? "GET, HEAD, POST" : "DELETE",
                      NULL);
}

/* Queues buf (malloc'd, consumed) as a response of this content type. */
static enum MHD_Result
reply_buffer(struct MHD_Connection *c, unsigned code, const char *ctype, char *buf, size_t len)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, buf, MHD_RESPMEM_MUST_FREE);
    enum MHD_Result ret;

    if (resp == NULL) {
        free(buf);
        return MHD_NO;
    }
    if (MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype) != MHD_YES ||
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store") != MHD_YES) {
        MHD_destroy_response(resp);
        return MHD_NO;
    }
    ret = MHD_queue_response(c, code, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* A health check's answer: 200 or 503 with {"ok": bool, "reason": ..., role, ...}. */
static enum MHD_Result
reply_check(struct MHD_Connection *c, const struct status_snapshot *s, bool ok, const char *reason)
{
    json_t *o = json_object();

    if (o == NULL)
        return MHD_NO;
    if (!put(o, "ok", json_boolean(ok)) || !put(o, "reason", json_string(reason)) ||
        !PUT_STR(o, s, node_name) || !PUT_STR(o, s, role) || !PUT_STR(o, s, pg_state) ||
        !put(o, "link_up", json_boolean(s->link_up)) ||
        !put(o, "apply_lag_bytes", json_u64(s->apply_lag_bytes)) ||
        !put(o, "apply_lag_s", json_seconds(s->apply_lag_s))) {
        json_decref(o);
        return MHD_NO;
    }
    return reply_json(c, ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, o, NULL);
}

/* GET /health: the agent's loop publishes its status (it runs and has not stopped). */
static enum MHD_Result
handle_health(struct MHD_Connection *c, const struct status_snapshot *s)
{
    if (s->role[0] == '\0' || s->now_unix_us == 0)
        return reply_check(c, s, false, "starting: no status published yet");
    if (statuspage_stale(s, clock_unix_us()))
        return reply_check(c, s, false,
                           "the agent's loop has not published its status for "
                           "over 5 s");
    return reply_check(c, s, true, "running");
}

/* GET /primary: 200 only where a commit can succeed now: the source beside a primary that
 * streams to it, with no switchover or fail-over under way (but a switchover's first step, the
 * WAL switch and CHECKPOINT before the stop, during which commits go on), whose standby
 * confirms in time (sync_state sync or catchup) or which runs exposed (docs/operations.md,
 * "Health checks"). */
static enum MHD_Result
handle_primary(struct MHD_Connection *c, const struct status_snapshot *s)
{
    if (statuspage_stale(s, clock_unix_us()))
        return reply_check(c, s, false, "status unknown: the agent is starting or stuck");
    if (SNAP_IS(s, role, "fenced"))
        return reply_check(c, s, false, "fenced: a newer epoch is held by the other site");
    if (!SNAP_IS(s, role, "source"))
        return reply_check(c, s, false, "not the primary site");
    if (!SNAP_IS(s, pg_state, "primary"))
        return reply_check(c, s, false, "the local primary does not stream to its agent");
    if ((SNAP_IS(s, operation, "switchover") && !s->op_takes_commits) ||
        SNAP_IS(s, operation, "failover"))
        return reply_check(c, s, false, "a switchover or fail-over is under way");
    /* A commit at the configured level can be acknowledged now: the standby confirms in time
     * (sync, or catching up while confirming), or the primary runs exposed. */
    if (SNAP_IS(s, sync_state, "waiting"))
        return reply_check(c, s, false, "commits wait: the standby has not confirmed in time");
    if (SNAP_IS(s, sync_state, "down"))
        return reply_check(c, s, false,
                           "commits wait: no stream to the standby, and not running exposed");
    if (SNAP_IS(s, sync_state, "exposed"))
        return reply_check(c, s, true, "writable primary, running exposed");
    if (SNAP_IS(s, operation, "switchover"))
        return reply_check(c, s, true,
                           "writable primary until the switchover stops it (WAL switch and "
                           "CHECKPOINT first)");
    return reply_check(c, s, true, "writable primary");
}

/*
 * Parses a lag bound: a size ("16MB", "1GB", "512kB", "4096" = bytes; units B, kB, MB, GB, TB
 * as 1024 multiples, also KiB..TiB) or a duration ("500ms", "10s", "2min", "1h", "250us").
 * Case of the unit does not matter.  Returns 0, setting *is_time and *bytes or *seconds, or
 * -EINVAL with a message in err.
 */
static int
parse_lag(const char *text, bool *is_time, uint64_t *bytes, double *seconds, char *err,
          size_t errlen)
{
    static const struct {
        const char *unit;
        bool time;
        double mult;
    } units[] = {
        {"", false, 1},
        {"b", false, 1},
        {"kb", false, 1024.0},
        {"kib", false, 1024.0},
        {"mb", false, 1048576.0},
        {"mib", false, 1048576.0},
        {"gb", false, 1073741824.0},
        {"gib", false, 1073741824.0},
        {"tb", false, 1099511627776.0},
        {"tib", false, 1099511627776.0},
        {"us", true, 1e-6},
        {"ms", true, 1e-3},
        {"s", true, 1},
        {"min", true, 60},
        {"h", true, 3600},
    };
    char *end;
    double v;

    if (text[0] < '0' || text[0] > '9') {
        snprintf(err, errlen, "lag: expected a size (16MB, 1GB) or a duration (500ms, 10s)");
        return -EINVAL;
    }
    errno = 0;
    v = strtod(text, &end);
    if (errno != 0 || !isfinite(v) || v < 0) {
        snprintf(err, errlen, "lag: the number is out of range");
        return -EINVAL;
    }
    while (*end == ' ')
        end++;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcasecmp(end, units[i].unit) != 0)
            continue;
        *is_time = units[i].time;
        if (units[i].time) {
            *seconds = v * units[i].mult;
            return 0;
        }
        if (v * units[i].mult >= 18446744073709551615.0) {
            snprintf(err, errlen, "lag: the size is out of range");
            return -EINVAL;
        }
        *bytes = (uint64_t)(v * units[i].mult);
        return 0;
    }
    snprintf(err, errlen,
             "lag: unknown unit \"%.16s\" (sizes: B, kB, MB, GB, TB; durations: "
             "us, ms, s, min, h)",
             end);
    return -EINVAL;
}

/* GET /standby[?lag=SIZE|DURATION]: 200 on a sink that receives WAL, whose standby streams
 * from it and whose apply lag is within the bound. */
static enum MHD_Result
handle_standby(struct MHD_Connection *c, const struct status_snapshot *s)
{
    const char *arg = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "lag");
    bool is_time = false, bounded = arg != NULL;
    uint64_t max_bytes = 0;
    double max_s = 0;
    char err[160], why[200];

    if (arg != NULL && parse_lag(arg, &is_time, &max_bytes, &max_s, err, sizeof(err)) < 0)
        return reply_json(c, MHD_HTTP_BAD_REQUEST, error_body(err), NULL);
    if (statuspage_stale(s, clock_unix_us()))
        return reply_check(c, s, false, "status unknown: the agent is starting or stuck");
    if (!SNAP_IS(s, role, "sink"))
        return reply_check(c, s, false, "not a standby site");
    if (!s->link_up)
        return reply_check(c, s, false, "not receiving WAL: the link to the primary site is down");
    if (!SNAP_IS(s, pg_state, "standby"))
        return reply_check(c, s, false, "the standby does not stream from the WAL server");
    if (bounded && !is_time && s->apply_lag_bytes > max_bytes) {
        snprintf(why, sizeof(why), "apply lag %" PRIu64 " bytes is over %" PRIu64,
                 s->apply_lag_bytes, max_bytes);
        return reply_check(c, s, false, why);
    }
    if (bounded && is_time && !(s->apply_lag_s >= 0 && s->apply_lag_s <= max_s)) {
        if (s->apply_lag_s < 0 || !isfinite(s->apply_lag_s))
            snprintf(why, sizeof(why), "apply lag in seconds is not known yet");
        else
            snprintf(why, sizeof(why), "apply lag %.3f s is over %.3f s", s->apply_lag_s, max_s);
        return reply_check(c, s, false, why);
    }
    return reply_check(c, s, true, bounded ? "standby within the lag asked" : "standby");
}

static enum MHD_Result
handle_read(struct httpapi *h, struct MHD_Connection *c, enum route r)
{
    struct status_snapshot *snap = malloc(sizeof(*snap)); /* ~20 KB: not on MHD's stack */
    struct maint_store *m = atomic_load(&h->maint);
    struct maint_window *w = NULL; /* the page and summary list the windows */
    enum MHD_Result ret = MHD_NO;
    struct statuspage_thresholds th;
    char *buf = NULL;
    size_t len = 0;
    int n = 0;

    if (snap == NULL)
        return MHD_NO;
    if (m != NULL && (r == ROUTE_PAGE || r == ROUTE_SUMMARY)) {
        w = calloc(MAINT_MAX, sizeof(*w));
        n = w != NULL ? maint_store_list(m, w, MAINT_MAX, true) : -ENOMEM;
        if (n < 0) {
            free(snap);
            free(w);
            return MHD_NO;
        }
    }
    status_read(h->board, snap);
    pthread_mutex_lock(&h->th_lock);
    th = h->th;
    pthread_mutex_unlock(&h->th_lock);
    switch (r) {
    case ROUTE_STATUS:
        ret = reply_json(c, MHD_HTTP_OK, snapshot_json(snap), NULL);
        break;
    case ROUTE_METRICS:
        if (metrics_render(snap, &buf, &len) == 0)
            ret = reply_buffer(c, MHD_HTTP_OK, METRICS_CONTENT_TYPE, buf, len);
        break;
    case ROUTE_HEALTH:
        ret = handle_health(c, snap);
        break;
    case ROUTE_PRIMARY:
        ret = handle_primary(c, snap);
        break;
    case ROUTE_STANDBY:
        ret = handle_standby(c, snap);
        break;
    case ROUTE_PAGE:
        if (statuspage_html(snap, &th, w, (unsigned)n, clock_unix_us(), &buf, &len) == 0)
            ret = reply_buffer(c, MHD_HTTP_OK, "text/html; charset=utf-8", buf, len);
        break;
    case ROUTE_SUMMARY:
        ret = reply_json(c, MHD_HTTP_OK,
                         statuspage_summary(snap, &th, w, (unsigned)n, clock_unix_us()), NULL);
        break;
    case ROUTE_SP_STATUS:
        ret = reply_json(c, MHD_HTTP_OK, statuspage_status(snap, &th, clock_unix_us()), NULL);
        break;
    case ROUTE_SP_INCIDENTS:
        ret = reply_json(c, MHD_HTTP_OK, statuspage_incidents(snap, &th, clock_unix_us()), NULL);
        break;
    default:
        break;
    }
    free(snap);
    free(w);
    return ret;
}

/* True if host ("HOST" or "HOST:PORT", "[V6]:PORT") names an IP address or localhost: a name
 * that no DNS answer can point elsewhere. */
static bool
host_is_literal(const char *host)
{
    char name[HTTPAPI_ADDR_MAX];
    struct in6_addr a6;
    const char *end;
    size_t n;

    if (host[0] == '[') {
        end = strchr(host, ']');
        host++;
    } else {
        end = strchr(host, ':');
        if (end == NULL)
            end = host + strlen(host);
    }
    if (end == NULL || (size_t)(end - host) >= sizeof(name))
        return false;
    n = (size_t)(end - host);
    memcpy(name, host, n);
    name[n] = '\0';
    return strcasecmp(name, "localhost") == 0 || inet_pton(AF_INET, name, &a6) == 1 ||
           inet_pton(AF_INET6, name, &a6) == 1;
}

/*
 * The requests that change something (every method but GET and HEAD) come from walmirrorctl,
 * curl and scripts, never from a web page: a browser sends a page's form posts and "simple"
 * cross-site requests without asking the server first, and the harm is done whether or not
 * the page can read the answer.  So such a request is refused when
 *   - it has an Origin header other than this API's own: "http://" + its Host header, that
 *     Host being an IP address or localhost (a DNS name could be rebound by a hostile page to
 *     the agent's address, making its requests look same-origin): 403;
 *   - its Content-Type is anything but application/json (the endpoints take no body; the
 *     form and text types are those a browser sends without a CORS preflight): 415.
 * Returns 0 when the request may go on, else the status with the reason in why.
 */
static unsigned
cross_site_refusal(struct MHD_Connection *c, char *why, size_t cap)
{
    const char *origin = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin");
    const char *host = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
    const char *ctype =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    char text[128];
    size_t n;

    if (origin != NULL &&
        (host == NULL || !host_is_literal(host) || strncasecmp(origin, "http://", 7) != 0 ||
         strcasecmp(origin + 7, host) != 0)) {
        snprintf(why, cap,
                 "cross-site request refused: Origin %s is not this API's own; requests that "
                 "change something come from walmirrorctl or curl, not from web pages",
                 printable(text, sizeof(text), origin));
        return MHD_HTTP_FORBIDDEN;
    }
    if (ctype != NULL) {
        while (*ctype == ' ' || *ctype == '\t')
            ctype++;
        n = strcspn(ctype, "; \t");
        if (n != 16 || strncasecmp(ctype, "application/json", 16) != 0) {
            snprintf(why, cap,
                     "Content-Type %s is not accepted: this request takes no body (send none, "
                     "or application/json)",
                     printable(text, sizeof(text), ctype));
            return MHD_HTTP_UNSUPPORTED_MEDIA_TYPE;
        }
    }
    return 0;
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
           const char *version, const char *upload_data, size_t *upload_data_size, void **req)
{
    struct httpapi *h = cls;
    enum route r = route_of(url);
    bool get =
        strcmp(method, MHD_HTTP_METHOD_GET) == 0 || strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
    bool post = strcmp(method, MHD_HTTP_METHOD_POST) == 0;
    char who[CLIENT_NAME_MAX], m[16], path[128];

    /* Answered at the first call, before any body: see the header comment. */
    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    (void)req;

    if (!authorized(h, c)) {
        client_name(c, who, sizeof(who));
        log_warning("http", "%s %s from %s: missing or wrong bearer token",
                    printable(m, sizeof(m), method), printable(path, sizeof(path), url), who);
        return reply_json(c, MHD_HTTP_UNAUTHORIZED, error_body("missing or wrong bearer token"),
                          MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"walmirror\"", NULL);
    }
    if (!get && r >= ROUTE_PAUSE) {
        char why[300];
        unsigned code = cross_site_refusal(c, why, sizeof(why));

        if (code != 0) {
            client_name(c, who, sizeof(who));
            log_warning("http", "%s %s from %s refused: %s", printable(m, sizeof(m), method),
                        printable(path, sizeof(path), url), who, why);
            return reply_json(c, code, error_body(why), NULL);
        }
    }
    switch (r) {
    case ROUTE_STATUS:
    case ROUTE_METRICS:
    case ROUTE_HEALTH:
    case ROUTE_PRIMARY:
    case ROUTE_STANDBY:
    case ROUTE_PAGE:
    case ROUTE_SUMMARY:
    case ROUTE_SP_STATUS:
    case ROUTE_SP_INCIDENTS:
        if (!get) {
            char msg[sizeof(path) + 40];
            snprintf(msg, sizeof(msg), "method not allowed: %s takes GET",
                     printable(path, sizeof(path), url));
            return reply_json(c, MHD_HTTP_METHOD_NOT_ALLOWED, error_body(msg),
                              MHD_HTTP_HEADER_ALLOW, "GET, HEAD", NULL);
        }
        return handle_read(h, c, r);
    case ROUTE_PAUSE:
    case ROUTE_RESUME:
        if (!post)
            return reply_json(c, MHD_HTTP_METHOD_NOT_ALLOWED,
                              error_body(r == ROUTE_PAUSE
                                             ? "method not allowed: /pause takes POST"
                                             : "method not allowed: /resume takes POST"),
                              MHD_HTTP_HEADER_ALLOW, "POST", NULL);
        return handle_action(h, c, r);
    case ROUTE_SWITCHOVER:
    case ROUTE_FAILOVER:
    case ROUTE_REJOIN:
        if (!post)
            return reply_json(c, MHD_HTTP_METHOD_NOT_ALLOWED,
                              error_body("method not allowed: operations take POST"),
                              MHD_HTTP_HEADER_ALLOW, "POST", NULL);
        return handle_operation(h, c, r);
    case ROUTE_MAINT:
    case ROUTE_MAINT_ID:
        return handle_maint(h, c, r, url, method);
    case ROUTE_NONE:
        break;
    }
    return reply_json(c, MHD_HTTP_NOT_FOUND,
                      error_body("no such endpoint (try GET /, /status, /metrics, /health, "
                                 "/primary, /standby, /api/v2/summary.json; POST /pause, "
                                 "/resume, /switchover, /failover, /rejoin; GET, POST /maintenance)"),
                      NULL);
}

/* ---------------------------------------------------------------------------------------- */
/* Start and stop                                                                            */

/*
 * Everything httpapi_start checks before it binds: hostport parses and resolves to an IPv4 or
 * IPv6 address (into *addr), a non-loopback address has a token file, and the token file is
 * good (its SHA-256 into digest[32] when there is one).  Returns 0 or a negative errno with
 * the message in err.
 */
static int
prepare(const char *hostport, const char *token_file, struct sockaddr_storage *addr,
        unsigned char *digest, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV | AI_ADDRCONFIG};
    struct addrinfo *ai = NULL;
    char host[300], portstr[8];
    unsigned port;
    int rc, n;

    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (split_hostport(hostport, host, sizeof(host), &port) < 0) {
        snprintf(err, errlen, "http_listen %s: expected host:port or [ipv6]:port", hostport);
        return -EINVAL;
    }
    n = snprintf(portstr, sizeof(portstr), "%u", port);
    if (n < 0 || (size_t)n >= sizeof(portstr))
        return -EINVAL;
    rc = getaddrinfo(host, portstr, &hints, &ai);
    if (rc == EAI_ADDRFAMILY || rc == EAI_NONAME) {
        /* AI_ADDRCONFIG hides ::1 on a host with only loopback configured: try without. */
        hints.ai_flags &= ~AI_ADDRCONFIG;
        rc = getaddrinfo(host, portstr, &hints, &ai);
    }
    if (rc != 0) {
        snprintf(err, errlen, "http_listen %s: cannot resolve \"%s\": %s", hostport, host,
                 gai_strerror(rc));
        return rc == EAI_MEMORY ? -ENOMEM : -EADDRNOTAVAIL;
    }
    if (ai->ai_addrlen > sizeof(*addr) || (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)) {
        freeaddrinfo(ai);
        snprintf(err, errlen, "http_listen %s: not an IPv4 or IPv6 address", hostport);
        return -EAFNOSUPPORT;
    }
    memset(addr, 0, sizeof(*addr));
    memcpy(addr, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);

    if (!is_loopback((struct sockaddr *)addr) && token_file == NULL) {
        snprintf(err, errlen, "http_listen %s is not a loopback address: set http_token_file",
                 hostport);
        return -EPERM;
    }
    return token_file != NULL ? read_token(token_file, digest, err, errlen) : 0;
}

int
httpapi_check(const char *hostport, const char *token_file, char *err, size_t errlen)
{
    struct sockaddr_storage addr;
    unsigned char digest[32];
    int rc = prepare(hostport, token_file, &addr, digest, err, errlen);

    OPENSSL_cleanse(digest, sizeof(digest));
    return rc;
}

/* Releases h, made by httpapi_start, whose daemon is stopped or was never started. */
static void
destroy(struct httpapi *h)
{
    pthread_mutex_destroy(&h->th_lock);
    pthread_mutex_destroy(&h->adm.lock);
    OPENSSL_cleanse(h, sizeof(*h));
    free(h);
}

int
httpapi_start(struct httpapi **out, const char *hostport, const char *token_file,
              struct status_board *board, char *err, size_t errlen)
{
    struct sockaddr_storage addr;
    const union MHD_DaemonInfo *info;
    struct httpapi *h;
    unsigned flags;
    int rc;

    *out = NULL;
    h = calloc(1, sizeof(*h));
    if (h == NULL) {
        snprintf(err, errlen, "http_listen %s: out of memory", hostport);
        return -ENOMEM;
    }
    rc = prepare(hostport, token_file, &addr, h->token_digest, err, errlen);
    if (rc < 0) {
        OPENSSL_cleanse(h, sizeof(*h));
        free(h);
        return rc;
    }
    h->has_token = token_file != NULL;
    h->board = board;
    pthread_mutex_init(&h->th_lock, NULL);
    pthread_mutex_init(&h->adm.lock, NULL);
    statuspage_thresholds_default(&h->th);
    snprintf(h->listen, sizeof(h->listen), "%s", hostport);

    flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG;
    if (addr.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    atomic_store(&h->starting, true);
    errno = 0;
    /* The logger first, so that MHD sends every message through it.  MHD's own connection
     * limit sits above the admission's, which decides (see "Connections"). */
    h->daemon = MHD_start_daemon(
        flags, 0, on_accept_policy, h, on_request, h, MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, h,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr, MHD_OPTION_NOTIFY_CONNECTION, on_connection,
        h, MHD_OPTION_CONNECTION_LIMIT, (unsigned)(2 * HTTPAPI_CONN_LIMIT),
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)HTTPAPI_TIMEOUT_S,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)32768, MHD_OPTION_END);
    rc = errno;
    atomic_store(&h->starting, false);
    if (h->daemon == NULL) {
        /* MHD leaves the errno of the call that failed (EADDRINUSE from bind, say); its own
         * message names port 0, since the address came in MHD_OPTION_SOCK_ADDR. */
        snprintf(err, errlen, "http_listen %s: cannot start the HTTP server: %s", hostport,
                 rc != 0                   ? strerror(rc)
                 : h->start_msg[0] != '\0' ? h->start_msg
                                           : "libmicrohttpd failed");
        destroy(h);
        return rc > 0 ? -rc : -EIO;
    }
    info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    if (info == NULL || info->port == 0) {
        snprintf(err, errlen, "http_listen %s: cannot read the bound port", hostport);
        MHD_stop_daemon(h->daemon);
        destroy(h);
        return -EIO;
    }
    h->port = info->port;
    log_info("http", "HTTP API on %s (port %d)%s", hostport, h->port,
             h->has_token ? ", bearer token required" : "");
    *out = h;
    return 0;
}

void
httpapi_set_maint(struct httpapi *h, struct maint_store *m)
{
    atomic_store(&h->maint, m);
}

void
httpapi_set_thresholds(struct httpapi *h, const struct statuspage_thresholds *th)
{
    pthread_mutex_lock(&h->th_lock);
    if (th != NULL)
        h->th = *th;
    else
        statuspage_thresholds_default(&h->th);
    pthread_mutex_unlock(&h->th_lock);
}

int
httpapi_port(const struct httpapi *h)
{
    return h->port;
}

void
httpapi_stop(struct httpapi *h)
{
    if (h == NULL)
        return;
    MHD_stop_daemon(h->daemon);
    destroy(h);
}
