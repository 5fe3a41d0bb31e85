/*
 * config.c - the agent's configuration file; see config.h for the contract and
 * docs/configuration.md for the keys.
 *
 * Two passes.  The first reads the buffer line by line, without ever relying on NUL
 * termination: each line is bounded (CONFIG_LINE_MAX), split into key and value, the key looked
 * up (unknown and duplicate keys are errors) and the value converted into struct wm_config at
 * once, so that errors come out in file order.  The second pass, once the role is known, checks
 * which keys the role uses and requires, fills in defaults, resolves relative paths against the
 * file's directory, checks the TLS files are readable, and checks keys against one another.
 * The first error ends the parse; everything allocated so far is released.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "etcd.h"
#include "etcdrec.h"
#include "log.h"
#include "util.h"

#define KEY_MAX 63 /* longest key the parser reads */

#define ROLE_SITE 0x1u
#define ROLE_WITNESS 0x2u
#define ROLE_ALL (ROLE_SITE | ROLE_WITNESS)

#define MS_PER_S 1000ull
#define MS_PER_MIN (60 * MS_PER_S)
#define MS_PER_H (60 * MS_PER_MIN)
#define DURATION_MAX_MS (24 * MS_PER_H)

enum key_id {
    K_NODE_NAME,
    K_ROLE,
    K_LISTEN,
    K_PEER,
    K_WITNESS,
    K_SITES,
    K_TLS_CA,
    K_TLS_CERT,
    K_TLS_KEY,
    K_PG_CONNINFO,
    K_PGDATA,
    K_SPOOL_DIR,
    K_WAL_LISTEN,
    K_HTTP_LISTEN,
    K_HTTP_TOKEN_FILE,
    K_SLOT_NAME,
    K_APPLICATION_NAME,
    K_FAILOVER_TIMEOUT,
    K_HEARTBEAT_INTERVAL,
    K_PEER_TIMEOUT,
    K_AUTO_REJOIN,
    K_SPOOL_KEEP,
    K_COMPRESSION,
    K_LOG_LEVEL,
    K_WAL_SERVER_AUTH,
    K_STATE_DIR,
    K_PEER_PG_CONNINFO,
    K_STATUS_DEGRADED_LAG_SIZE,
    K_STATUS_DEGRADED_LAG_TIME,
    K_STATUS_PARTIAL_LAG_SIZE,
    K_STATUS_PARTIAL_LAG_TIME,
    K_ARBITER,
    K_ETCD_ENDPOINTS,
    K_ETCD_PREFIX,
    K_ETCD_CA,
    K_ETCD_CERT,
    K_ETCD_KEY,
    K_ETCD_LEASE_TTL,
    K_AVAILABILITY_MODE,
    K_STANDBY_LOSS_TIMEOUT,
    K_COUNT
};

static const struct key_def {
    const char *name;  /* lower case */
    unsigned roles;    /* the roles that use the key */
    unsigned required; /* the roles that must set it */
} keys[K_COUNT] = {
    [K_NODE_NAME] = {"node_name", ROLE_ALL, ROLE_ALL},
    [K_ROLE] = {"role", ROLE_ALL, 0},
    [K_LISTEN] = {"listen", ROLE_ALL, ROLE_ALL},
    [K_PEER] = {"peer", ROLE_SITE, ROLE_SITE},
    [K_WITNESS] = {"witness", ROLE_SITE, 0},
    [K_SITES] = {"sites", ROLE_WITNESS, ROLE_WITNESS},
    [K_TLS_CA] = {"tls_ca", ROLE_ALL, ROLE_ALL},
    [K_TLS_CERT] = {"tls_cert", ROLE_ALL, ROLE_ALL},
    [K_TLS_KEY] = {"tls_key", ROLE_ALL, ROLE_ALL},
    [K_PG_CONNINFO] = {"pg_conninfo", ROLE_SITE, ROLE_SITE},
    [K_PGDATA] = {"pgdata", ROLE_SITE, ROLE_SITE},
    [K_SPOOL_DIR] = {"spool_dir", ROLE_SITE, ROLE_SITE},
    [K_WAL_LISTEN] = {"wal_listen", ROLE_SITE, ROLE_SITE},
    [K_HTTP_LISTEN] = {"http_listen", ROLE_ALL, 0},
    [K_HTTP_TOKEN_FILE] = {"http_token_file", ROLE_ALL, 0},
    [K_SLOT_NAME] = {"slot_name", ROLE_SITE, 0},
    [K_APPLICATION_NAME] = {"application_name", ROLE_SITE, 0},
    [K_FAILOVER_TIMEOUT] = {"failover_timeout", ROLE_SITE, 0},
    [K_HEARTBEAT_INTERVAL] = {"heartbeat_interval", ROLE_ALL, 0},
    [K_PEER_TIMEOUT] = {"peer_timeout", ROLE_ALL, 0},
    [K_AUTO_REJOIN] = {"auto_rejoin", ROLE_SITE, 0},
    [K_SPOOL_KEEP] = {"spool_keep", ROLE_SITE, 0},
    [K_COMPRESSION] = {"compression", ROLE_SITE, 0},
    [K_LOG_LEVEL] = {"log_level", ROLE_ALL, 0},
    [K_WAL_SERVER_AUTH] = {"wal_server_auth", ROLE_SITE, 0},
    [K_STATE_DIR] = {"state_dir", ROLE_ALL, ROLE_WITNESS},
    [K_PEER_PG_CONNINFO] = {"peer_pg_conninfo", ROLE_SITE, 0},
    [K_STATUS_DEGRADED_LAG_SIZE] = {"status_degraded_lag_size", ROLE_SITE, 0},
    [K_STATUS_DEGRADED_LAG_TIME] = {"status_degraded_lag_time", ROLE_SITE, 0},
    [K_STATUS_PARTIAL_LAG_SIZE] = {"status_partial_lag_size", ROLE_SITE, 0},
    [K_STATUS_PARTIAL_LAG_TIME] = {"status_partial_lag_time", ROLE_SITE, 0},
    [K_ARBITER] = {"arbiter", ROLE_SITE, 0},
    [K_ETCD_ENDPOINTS] = {"etcd_endpoints", ROLE_SITE, 0},
    [K_ETCD_PREFIX] = {"etcd_prefix", ROLE_SITE, 0},
    [K_ETCD_CA] = {"etcd_ca", ROLE_SITE, 0},
    [K_ETCD_CERT] = {"etcd_cert", ROLE_SITE, 0},
    [K_ETCD_KEY] = {"etcd_key", ROLE_SITE, 0},
    [K_ETCD_LEASE_TTL] = {"etcd_lease_ttl", ROLE_SITE, 0},
    [K_AVAILABILITY_MODE] = {"availability_mode", ROLE_SITE, 0},
    [K_STANDBY_LOSS_TIMEOUT] = {"standby_loss_timeout", ROLE_SITE, 0},
};

struct parser {
    const char *name; /* file name for messages and relative paths */
    unsigned flags;
    char *err;
    size_t errlen;
    unsigned long line_of[K_COUNT]; /* line that set each key; 0 = not set */
    struct wm_config *cfg;
};

/* ---------------------------------------------------------------------------------------------
 * Messages
 */

static void put_err(struct parser *ps, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
put_err(struct parser *ps, const char *fmt, ...)
{
    va_list ap;

    if (ps->err == NULL || ps->errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(ps->err, ps->errlen, fmt, ap);
    va_end(ap);
}

/* "FILE:LINE: key "KEY": WHAT"; returns rc for the caller to pass on. */
static int fail_key(struct parser *ps, int rc, unsigned long line, const char *key, const char *fmt,
                    ...) __attribute__((format(printf, 5, 6)));

static int
fail_key(struct parser *ps, int rc, unsigned long line, const char *key, const char *fmt, ...)
{
    char what[768];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    if (line > 0)
        put_err(ps, "%s:%lu: key \"%s\": %s", ps->name, line, key, what);
    else
        put_err(ps, "%s: key \"%s\": %s", ps->name, key, what);
    return rc;
}

static int fail_syntax(struct parser *ps, unsigned long line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
fail_syntax(struct parser *ps, unsigned long line, const char *fmt, ...)
{
    char what[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    put_err(ps, "%s:%lu: syntax error: %s", ps->name, line, what);
    return -EINVAL;
}

/*
 * Renders untrusted bytes for a message: printable ASCII as is, anything else as \xNN, at most
 * SHOW_MAX input bytes followed by "...".  out must hold SHOW_BUF bytes.
 */
#define SHOW_MAX 64
#define SHOW_BUF (SHOW_MAX * 4 + 4)

static const char *
show(char *out, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t i, o = 0;

    for (i = 0; i < len && i < SHOW_MAX; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c >= 0x20 && c < 0x7f) {
            out[o++] = (char)c;
        } else {
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 0xf];
        }
    }
    if (i < len) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
    return out;
}

/* ---------------------------------------------------------------------------------------------
 * Character classes (ASCII only, independent of the locale)
 */

static bool
is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool
is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static char
to_lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

static bool
eq_nocase(const char *a, const char *b)
{
    while (*a != '\0' && to_lower(*a) == to_lower(*b)) {
        a++;
        b++;
    }
    return to_lower(*a) == to_lower(*b);
}

/* ---------------------------------------------------------------------------------------------
 * Value converters.  Each takes a NUL-terminated value (the parser has rejected NUL bytes) and
 * returns 0, or -1 with the reason written into why (WHY_LEN bytes).
 */

#define WHY_LEN 512

static int why_set(char *why, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int
why_set(char *why, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, WHY_LEN, fmt, ap);
    va_end(ap);
    return -1;
}

/* node_name, peer and site names: [A-Za-z0-9_.-]{1,63}, the certificate name. */
static int
conv_node_name(const char *v, size_t len, char *out, char *why)
{
    char s[SHOW_BUF], s2[SHOW_BUF];

    if (len == 0)
        return why_set(why, "empty name; expected 1 to %d of A-Z a-z 0-9 _ . -", CONFIG_NAME_MAX);
    if (len > CONFIG_NAME_MAX)
        return why_set(why, "name \"%s\" is longer than %d characters", show(s, v, len),
                       CONFIG_NAME_MAX);
    for (size_t i = 0; i < len; i++) {
        char c = v[i];

        if (!is_alpha(c) && !is_digit(c) && c != '_' && c != '.' && c != '-')
            return why_set(why, "invalid character '%s' in name \"%s\"; use only A-Z a-z 0-9 _ . -",
                           show(s2, &v[i], 1), show(s, v, len));
    }
    memcpy(out, v, len);
    out[len] = '\0';
    return 0;
}

/* A replication slot name as PostgreSQL defines it: [a-z0-9_]{1,63}. */
static int
conv_slot_name(const char *v, size_t len, char *out, char *why)
{
    char s[SHOW_BUF];

    if (len == 0 || len > CONFIG_NAME_MAX)
        return why_set(why, "slot name must have 1 to %d characters", CONFIG_NAME_MAX);
    for (size_t i = 0; i < len; i++) {
        char c = v[i];

        if (!(c >= 'a' && c <= 'z') && !is_digit(c) && c != '_')
            return why_set(why,
                           "invalid slot name \"%s\": PostgreSQL allows only lower-case letters, "
                           "digits and underscores",
                           show(s, v, len));
    }
    memcpy(out, v, len);
    out[len] = '\0';
    return 0;
}

/* application_name: printable ASCII, 1..63 bytes (PostgreSQL's NAMEDATALEN - 1). */
static int
conv_application_name(const char *v, size_t len, char *out, char *why)
{
    if (len == 0 || len > CONFIG_NAME_MAX)
        return why_set(why, "application name must have 1 to %d characters", CONFIG_NAME_MAX);
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)v[i] < 0x20 || (unsigned char)v[i] >= 0x7f)
            return why_set(why, "application name must be printable ASCII");
    }
    memcpy(out, v, len);
    out[len] = '\0';
    return 0;
}

static bool
valid_hostname(const char *h, size_t len)
{
    if (len == 0 || len > 253)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = h[i];

        if (!is_alpha(c) && !is_digit(c) && c != '-' && c != '.' && c != '_')
            return false;
    }
    return true;
}

/* "host:port" or "[ipv6]:port", port 1..65535. */
static int
conv_hostport(const char *v, size_t len, struct config_hostport *hp, char *why)
{
    char s[SHOW_BUF];
    const char *host, *port, *colon;
    size_t hlen, plen;
    unsigned long pnum = 0;

    if (len == 0)
        return why_set(why, "empty address; expected host:port");
    if (len > CONFIG_HOSTPORT_MAX)
        return why_set(why, "address \"%s\" is too long", show(s, v, len));
    if (v[0] == '[') {
        const char *close = memchr(v, ']', len);

        if (close == NULL)
            return why_set(why, "address \"%s\" has '[' without ']'", show(s, v, len));
        host = v + 1;
        hlen = (size_t)(close - host);
        if (close + 1 == v + len || close[1] != ':')
            return why_set(why, "address \"%s\" lacks \":port\" after ']'", show(s, v, len));
        port = close + 2;
    } else {
        colon = memchr(v, ':', len);
        if (colon == NULL)
            return why_set(why, "address \"%s\" lacks a port; expected host:port", show(s, v, len));
        if (memchr(colon + 1, ':', len - (size_t)(colon + 1 - v)) != NULL)
            return why_set(why,
                           "address \"%s\" is ambiguous: write an IPv6 address in brackets, "
                           "as in [::1]:5433",
                           show(s, v, len));
        host = v;
        hlen = (size_t)(colon - v);
        port = colon + 1;
    }
    plen = len - (size_t)(port - v);

    if (hlen > CONFIG_HOST_MAX)
        return why_set(why, "address \"%s\" has a host longer than %d bytes", show(s, v, len),
                       CONFIG_HOST_MAX);
    if (hlen == 0)
        return why_set(why, "address \"%s\" has an empty host", show(s, v, len));
    if (plen == 0)
        return why_set(why, "address \"%s\" has an empty port", show(s, v, len));
    for (size_t i = 0; i < plen; i++) {
        if (!is_digit(port[i]))
            return why_set(why, "port \"%s\" is not a number", show(s, port, plen));
        if (pnum <= 65535)
            pnum = pnum * 10 + (unsigned long)(port[i] - '0');
    }
    if (pnum < 1 || pnum > 65535)
        return why_set(why, "port %s is out of range 1..65535", show(s, port, plen));

    if (v[0] == '[') {
        /* An IPv6 literal, optionally with a zone: fe80::1%eth0. */
        char addr[INET6_ADDRSTRLEN + 1];
        struct in6_addr in6;
        const char *pct = memchr(host, '%', hlen);
        size_t alen = pct != NULL ? (size_t)(pct - host) : hlen;

        if (alen >= sizeof(addr))
            return why_set(why, "\"%s\" is not an IPv6 address", show(s, host, hlen));
        memcpy(addr, host, alen);
        addr[alen] = '\0';
        if (inet_pton(AF_INET6, addr, &in6) != 1)
            return why_set(why, "\"%s\" is not an IPv6 address", show(s, host, hlen));
        if (pct != NULL && !valid_hostname(pct + 1, hlen - alen - 1))
            return why_set(why, "\"%s\" has an invalid zone", show(s, host, hlen));
    } else if (!valid_hostname(host, hlen)) {
        return why_set(why, "\"%s\" is not a valid host name or IPv4 address", show(s, host, hlen));
    }
    memcpy(hp->host, host, hlen);
    hp->host[hlen] = '\0';
    memcpy(hp->text, v, len);
    hp->text[len] = '\0';
    hp->port = (uint16_t)pnum;
    return 0;
}

/* "NAME@host:port" */
static int
conv_endpoint(const char *v, size_t len, struct config_endpoint *ep, char *why)
{
    char s[SHOW_BUF];
    const char *at = memchr(v, '@', len);
    char sub[WHY_LEN];

    if (at == NULL)
        return why_set(why, "\"%s\" is not of the form NAME@host:port", show(s, v, len));
    if (conv_node_name(v, (size_t)(at - v), ep->name, sub) < 0)
        return why_set(why, "%s", sub);
    if (conv_hostport(at + 1, len - (size_t)(at + 1 - v), &ep->addr, sub) < 0)
        return why_set(why, "%s", sub);
    return 0;
}

/* "NAME@host:port, NAME@host:port": exactly two sites. */
static int
conv_sites(const char *v, size_t len, struct config_endpoint sites[2], char *why)
{
    const char *p = v, *end = v + len;
    int n = 0;

    while (p <= end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *e = comma != NULL ? comma : end;
        const char *b = p;
        char sub[WHY_LEN];

        while (b < e && wm_is_blank(*b))
            b++;
        while (e > b && wm_is_blank(e[-1]))
            e--;
        if (b == e)
            return why_set(why, "empty entry in the list; expected "
                                "'NAME@host:port, NAME@host:port'");
        if (n == 2)
            return why_set(why, "more than two sites; a witness serves exactly two");
        if (conv_endpoint(b, (size_t)(e - b), &sites[n], sub) < 0)
            return why_set(why, "site %d: %s", n + 1, sub);
        n++;
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    if (n != 2)
        return why_set(why, "one site given; a witness needs the two sites, as in "
                            "'a@host:port, b@host:port'");
    if (strcmp(sites[0].name, sites[1].name) == 0)
        return why_set(why, "both sites are named \"%s\"", sites[0].name);
    return 0;
}

/* Reads the leading digits of v into *n; returns the number of digits or -1 on overflow. */
static int
read_uint(const char *v, uint64_t *n)
{
    int i = 0;

    *n = 0;
    while (is_digit(v[i])) {
        uint64_t d = (uint64_t)(v[i] - '0');

        if (*n > (UINT64_MAX - d) / 10)
            return -1;
        *n = *n * 10 + d;
        i++;
    }
    return i;
}

struct unit {
    const char *name;
    uint64_t mult;
};

static const struct unit duration_units[] = {
    {"ms", 1}, {"s", MS_PER_S}, {"min", MS_PER_MIN}, {"h", MS_PER_H}, {NULL, 0}};

static const struct unit size_units[] = {{"B", 1},
                                         {"kB", 1024ull},
                                         {"MB", 1024ull * 1024},
                                         {"GB", 1024ull * 1024 * 1024},
                                         {"TB", 1024ull * 1024 * 1024 * 1024},
                                         {NULL, 0}};

/*
 * A whole number followed by a unit from units (case-sensitive as in PostgreSQL), blanks
 * allowed between them.  *has_unit tells whether a unit was given; without one, *out is the
 * bare number.
 */
static int
conv_number_unit(const char *v, size_t len, const struct unit *units, const char *kind,
                 const char *unit_list, uint64_t *out, bool *has_unit, char *why)
{
    char s[SHOW_BUF], s2[SHOW_BUF];
    uint64_t n;
    int nd = read_uint(v, &n);
    const char *u;

    if (nd < 0)
        return why_set(why, "%s \"%s\" is out of range", kind, show(s, v, len));
    if (nd == 0)
        return why_set(why, "\"%s\" is not a %s (a whole number and a unit: %s)", show(s, v, len),
                       kind, unit_list);
    u = v + nd;
    if (*u == '.' || *u == ',')
        return why_set(why, "%s \"%s\" must be a whole number; use a smaller unit (%s)", kind,
                       show(s, v, len), unit_list);
    while (wm_is_blank(*u))
        u++;
    *has_unit = *u != '\0';
    if (!*has_unit) {
        *out = n;
        return 0;
    }
    for (const struct unit *un = units; un->name != NULL; un++) {
        if (strcmp(u, un->name) == 0) {
            if (n > UINT64_MAX / un->mult)
                return why_set(why, "%s \"%s\" is out of range", kind, show(s, v, len));
            *out = n * un->mult;
            return 0;
        }
    }
    return why_set(why, "invalid unit \"%s\" in %s \"%s\"; valid units are %s",
                   show(s, u, strlen(u)), kind, show(s2, v, len), unit_list);
}

static int
conv_duration(const char *v, size_t len, uint64_t *ms, char *why)
{
    char s[SHOW_BUF], s2[SHOW_BUF];
    bool has_unit;

    if (conv_number_unit(v, len, duration_units, "duration", "ms, s, min, h", ms, &has_unit, why) <
        0)
        return -1;
    if (!has_unit)
        return why_set(why,
                       "duration \"%s\" needs a unit (ms, s, min or h), e.g. '%ss'; "
                       "a bare number is not accepted",
                       show(s, v, len), show(s2, v, len));
    if (*ms == 0 || *ms > DURATION_MAX_MS)
        return why_set(why, "duration \"%s\" is out of range 1ms..24h", show(s, v, len));
    return 0;
}

/* A size with a unit (a bare number is refused: bytes or segments?), at least 1 B. */
static int
conv_size(const char *v, size_t len, uint64_t *bytes, char *why)
{
    char s[SHOW_BUF], s2[SHOW_BUF];
    bool has_unit;

    if (conv_number_unit(v, len, size_units, "size", "B, kB, MB, GB, TB", bytes, &has_unit, why) <
        0)
        return -1;
    if (!has_unit)
        return why_set(why, "size \"%s\" needs a unit (B, kB, MB, GB or TB), e.g. '%sMB'",
                       show(s, v, len), show(s2, v, len));
    if (*bytes == 0)
        return why_set(why, "size \"%s\" must be at least 1B", show(s, v, len));
    return 0;
}

static int
conv_bool(const char *v, bool *b, char *why)
{
    static const char *const yes[] = {"on", "true", "yes", "1"};
    static const char *const no[] = {"off", "false", "no", "0"};
    char s[SHOW_BUF];

    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (eq_nocase(v, yes[i])) {
            *b = true;
            return 0;
        }
        if (eq_nocase(v, no[i])) {
            *b = false;
            return 0;
        }
    }
    return why_set(why, "\"%s\" is not a boolean (on/off, true/false, yes/no, 1/0)",
                   show(s, v, strlen(v)));
}

/* Matches v case-insensitively against names[]; returns the index or -1 with why set. */
static int
conv_enum(const char *v, const char *const *names, int count, const char *list, char *why)
{
    char s[SHOW_BUF];

    for (int i = 0; i < count; i++) {
        if (eq_nocase(v, names[i]))
            return i;
    }
    return why_set(why, "invalid value \"%s\"; valid values are %s", show(s, v, strlen(v)), list);
}

static const char *const role_names[] = {"auto", "witness"};
static const char *const compression_names[] = {"off", "lz4"};
static const char *const availability_names[] = {"maximum_availability", "maximum_protection"};
static const char *const log_level_names[] = {"error", "warning", "info", "debug"};

const char *
config_role_name(enum config_role role)
{
    return (unsigned)role < 2 ? role_names[role] : "?";
}

static const char *const arbiter_names[] = {"none", "witness", "etcd"};

const char *
config_arbiter_name(enum config_arbiter arbiter)
{
    return (unsigned)arbiter < 3 ? arbiter_names[arbiter] : "?";
}

/* Stores a copy of a path or string value that must not be empty. */
static int
conv_string(const char *v, size_t len, char **out, char *why)
{
    if (len == 0)
        return why_set(why, "must not be empty");
    *out = strndup(v, len);
    if (*out == NULL)
        return why_set(why, "out of memory");
    return 0;
}

/* etcd_endpoints: as etcd.h reads them; all http:// or all https://. */
static int
conv_etcd_endpoints(const char *v, size_t len, char **out, char *why)
{
    char urls[ETCD_ENDPOINTS_MAX][ETCD_URL_MAX];
    int n = etcd_endpoints_parse(v, urls, ETCD_ENDPOINTS_MAX, why, WHY_LEN);

    if (n < 0)
        return -1;
    for (int i = 1; i < n; i++)
        if ((strncmp(urls[i], "https:", 6) == 0) != (strncmp(urls[0], "https:", 6) == 0))
            return why_set(why, "mixes http:// and https:// endpoints (%s, %s)", urls[0], urls[i]);
    return conv_string(v, len, out, why);
}

/* Whether a valid etcd_endpoints list is of https:// endpoints (conv_etcd_endpoints: all or
 * none are). */
static bool
etcd_https(const char *list)
{
    char urls[ETCD_ENDPOINTS_MAX][ETCD_URL_MAX], why[WHY_LEN];

    return etcd_endpoints_parse(list, urls, ETCD_ENDPOINTS_MAX, why, sizeof(why)) > 0 &&
           strncmp(urls[0], "https:", 6) == 0;
}

/* etcd_prefix: "/" ... "/", printable ASCII without blanks or quotes. */
static int
conv_etcd_prefix(const char *v, size_t len, char **out, char *why)
{
    char s[SHOW_BUF];

    if (len < 2 || v[0] != '/' || v[len - 1] != '/')
        return why_set(why, "prefix \"%s\" must start and end with '/', as in '/walmirror/db1/'",
                       show(s, v, len));
    if (len > ETCDREC_PREFIX_MAX)
        return why_set(why, "prefix is longer than %d bytes", ETCDREC_PREFIX_MAX);
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)v[i] <= 0x20 || (unsigned char)v[i] >= 0x7f || v[i] == '\'' ||
            v[i] == '"' || v[i] == '\\')
            return why_set(why, "prefix \"%s\" may hold only printable ASCII without blanks, "
                                "quotes or backslashes",
                           show(s, v, len));
    return conv_string(v, len, out, why);
}

/* Converts the value of key k (NUL-terminated, len bytes) into ps->cfg. */
static int
set_value(struct parser *ps, enum key_id k, unsigned long line, const char *v, size_t len)
{
    struct wm_config *c = ps->cfg;
    char why[WHY_LEN];
    int rc = 0, i;

    switch (k) {
    case K_NODE_NAME:
        rc = conv_node_name(v, len, c->node_name, why);
        break;
    case K_ROLE:
        if ((i = conv_enum(v, role_names, 2, "auto, witness", why)) >= 0)
            c->role = (enum config_role)i;
        rc = i < 0 ? -1 : 0;
        break;
    case K_LISTEN:
        rc = conv_hostport(v, len, &c->listen, why);
        break;
    case K_PEER:
        rc = conv_endpoint(v, len, &c->peer, why);
        break;
    case K_WITNESS:
        rc = conv_endpoint(v, len, &c->witness, why);
        c->has_witness = rc == 0;
        break;
    case K_SITES:
        rc = conv_sites(v, len, c->sites, why);
        break;
    case K_TLS_CA:
        rc = conv_string(v, len, &c->tls_ca, why);
        break;
    case K_TLS_CERT:
        rc = conv_string(v, len, &c->tls_cert, why);
        break;
    case K_TLS_KEY:
        rc = conv_string(v, len, &c->tls_key, why);
        break;
    case K_PG_CONNINFO:
        rc = conv_string(v, len, &c->pg_conninfo, why);
        break;
    case K_PGDATA:
        rc = conv_string(v, len, &c->pgdata, why);
        break;
    case K_SPOOL_DIR:
        rc = conv_string(v, len, &c->spool_dir, why);
        break;
    case K_WAL_LISTEN:
        rc = conv_hostport(v, len, &c->wal_listen, why);
        break;
    case K_HTTP_LISTEN:
        rc = conv_hostport(v, len, &c->http_listen, why);
        break;
    case K_HTTP_TOKEN_FILE:
        rc = conv_string(v, len, &c->http_token_file, why);
        break;
    case K_SLOT_NAME:
        rc = conv_slot_name(v, len, c->slot_name, why);
        break;
    case K_APPLICATION_NAME:
        rc = conv_application_name(v, len, c->application_name, why);
        break;
    case K_FAILOVER_TIMEOUT:
        rc = conv_duration(v, len, &c->failover_timeout_ms, why);
        break;
    case K_HEARTBEAT_INTERVAL:
        rc = conv_duration(v, len, &c->heartbeat_interval_ms, why);
        break;
    case K_PEER_TIMEOUT:
        rc = conv_duration(v, len, &c->peer_timeout_ms, why);
        break;
    case K_AUTO_REJOIN:
        rc = conv_bool(v, &c->auto_rejoin, why);
        break;
    case K_SPOOL_KEEP: {
        bool has_unit;

        rc = conv_number_unit(v, len, size_units, "size", "B, kB, MB, GB, TB", &c->spool_keep,
                              &has_unit, why);
        c->spool_keep_segments = rc == 0 && !has_unit;
        break;
    }
    case K_COMPRESSION:
        if ((i = conv_enum(v, compression_names, 2, "lz4, off", why)) >= 0)
            c->compression = (enum config_compression)i;
        rc = i < 0 ? -1 : 0;
        break;
    case K_LOG_LEVEL:
        if ((i = conv_enum(v, log_level_names, 4, "error, warning, info, debug", why)) >= 0)
            c->log_level = LOG_LEVEL_ERROR + i;
        rc = i < 0 ? -1 : 0;
        break;
    case K_WAL_SERVER_AUTH:
        if (eq_nocase(v, "trust")) {
            c->wal_server_auth = CONFIG_WAL_SERVER_AUTH_TRUST;
        } else {
            char s[SHOW_BUF];

            rc = why_set(why,
                         "\"%s\" is not available: only trust is implemented (the standby "
                         "connects over a local socket or loopback)",
                         show(s, v, len));
        }
        break;
    case K_STATE_DIR:
        rc = conv_string(v, len, &c->state_dir, why);
        break;
    case K_PEER_PG_CONNINFO:
        rc = conv_string(v, len, &c->peer_pg_conninfo, why);
        break;
    case K_STATUS_DEGRADED_LAG_SIZE:
        rc = conv_size(v, len, &c->status_degraded_lag_bytes, why);
        break;
    case K_STATUS_DEGRADED_LAG_TIME:
        rc = conv_duration(v, len, &c->status_degraded_lag_ms, why);
        break;
    case K_STATUS_PARTIAL_LAG_SIZE:
        rc = conv_size(v, len, &c->status_partial_lag_bytes, why);
        break;
    case K_STATUS_PARTIAL_LAG_TIME:
        rc = conv_duration(v, len, &c->status_partial_lag_ms, why);
        break;
    case K_ARBITER:
        if ((i = conv_enum(v, arbiter_names, 3, "witness, etcd, none", why)) >= 0)
            c->arbiter = (enum config_arbiter)i;
        rc = i < 0 ? -1 : 0;
        break;
    case K_ETCD_ENDPOINTS:
        rc = conv_etcd_endpoints(v, len, &c->etcd_endpoints, why);
        break;
    case K_ETCD_PREFIX:
        rc = conv_etcd_prefix(v, len, &c->etcd_prefix, why);
        break;
    case K_ETCD_CA:
        rc = conv_string(v, len, &c->etcd_ca, why);
        break;
    case K_ETCD_CERT:
        rc = conv_string(v, len, &c->etcd_cert, why);
        break;
    case K_ETCD_KEY:
        rc = conv_string(v, len, &c->etcd_key, why);
        break;
    case K_ETCD_LEASE_TTL:
        rc = conv_duration(v, len, &c->etcd_lease_ttl_ms, why);
        if (rc == 0 && c->etcd_lease_ttl_ms % MS_PER_S != 0)
            rc = why_set(why, "etcd grants leases in whole seconds, e.g. '3s'");
        break;
    case K_AVAILABILITY_MODE:
        if ((i = conv_enum(v, availability_names, 2, "maximum_availability, maximum_protection",
                           why)) >= 0)
            c->availability_mode = (enum config_availability)i;
        rc = i < 0 ? -1 : 0;
        break;
    case K_STANDBY_LOSS_TIMEOUT:
        rc = conv_duration(v, len, &c->standby_loss_timeout_ms, why);
        if (rc == 0 && c->standby_loss_timeout_ms == 0)
            rc = why_set(why, "must be more than 0 (maximum_protection never runs exposed)");
        break;
    case K_COUNT:
        break;
    }
    if (rc < 0)
        return fail_key(ps, -EINVAL, line, keys[k].name, "%s", why);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * First pass: lines, keys and values
 */

static size_t
edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    size_t row[KEY_MAX + 2];

    if (la > KEY_MAX || lb > KEY_MAX)
        return SIZE_MAX;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];

        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);

            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

static int
unknown_key(struct parser *ps, unsigned long line, const char *key)
{
    size_t best = SIZE_MAX;
    int best_k = -1;

    if (strcmp(key, "include") == 0 || strcmp(key, "include_dir") == 0 ||
        strcmp(key, "include_if_exists") == 0)
        return fail_key(ps, -EINVAL, line, key,
                        "include directives are not supported; walmirror reads one file");
    for (int k = 0; k < K_COUNT; k++) {
        size_t d = edit_distance(key, keys[k].name);

        if (d < best) {
            best = d;
            best_k = k;
        }
    }
    if (best <= 2)
        return fail_key(ps, -EINVAL, line, key, "unknown key (did you mean \"%s\"?)",
                        keys[best_k].name);
    return fail_key(ps, -EINVAL, line, key, "unknown key");
}

/* Describes the byte at p for a syntax error. */
static const char *
describe_byte(char *buf, char c)
{
    if (c == '\0')
        return "a NUL byte";
    if ((unsigned char)c >= 0x20 && (unsigned char)c < 0x7f)
        snprintf(buf, 16, "'%c'", c);
    else
        snprintf(buf, 16, "byte 0x%02x", (unsigned char)c);
    return buf;
}

/*
 * Reads the value starting at p (before end) into val (CONFIG_LINE_MAX + 1 bytes); returns the
 * number of bytes, or -EINVAL with the error set.  *next is set past the value.
 */
static int
scan_value(struct parser *ps, unsigned long line, const char *key, const char *p, const char *end,
           char *val, const char **next)
{
    size_t n = 0;
    bool quoted = *p == '\'';

    if (*p == '"')
        return fail_key(ps, -EINVAL, line, key,
                        "double quotes do not delimit values; use single quotes");
    if (quoted)
        p++;
    for (;;) {
        char c;

        if (p == end) {
            if (quoted)
                return fail_key(ps, -EINVAL, line, key,
                                "unterminated quoted string (a quote inside a value is "
                                "written '')");
            break;
        }
        c = *p;
        if (quoted && c == '\'') {
            if (p + 1 < end && p[1] == '\'') {
                p += 2;
                val[n++] = '\'';
                continue;
            }
            p++;
            break;
        }
        if (!quoted && (wm_is_blank(c) || c == '#'))
            break;
        if (c == '\0')
            return fail_key(ps, -EINVAL, line, key, "value contains a NUL byte");
        if ((unsigned char)c < 0x20 && c != '\t')
            return fail_key(ps, -EINVAL, line, key, "value contains control character 0x%02x",
                            (unsigned char)c);
        if (c == 0x7f)
            return fail_key(ps, -EINVAL, line, key, "value contains control character 0x7f");
        if (!quoted && (c == '\'' || c == '"'))
            return fail_key(ps, -EINVAL, line, key,
                            "quote in the middle of an unquoted value; quote the whole value");
        if (n == CONFIG_VALUE_MAX)
            return fail_key(ps, -EINVAL, line, key, "value longer than %d bytes", CONFIG_VALUE_MAX);
        val[n++] = c;
        p++;
    }
    val[n] = '\0';
    *next = p;
    return (int)n;
}

static int
parse_line(struct parser *ps, unsigned long line, const char *p, const char *end)
{
    char key[KEY_MAX + 1];
    char val[CONFIG_LINE_MAX + 1];
    char cb[16];
    size_t klen = 0;
    const char *start = p;
    int k, vlen;

    while (p < end && wm_is_blank(*p))
        p++;
    if (p == end || *p == '#')
        return 0;
    if (!is_alpha(*p) && *p != '_')
        return fail_syntax(ps, line, "expected a key at column %zu, found %s",
                           (size_t)(p - start) + 1, describe_byte(cb, *p));
    while (p < end && (is_alpha(*p) || is_digit(*p) || *p == '_')) {
        if (klen == KEY_MAX)
            return fail_syntax(ps, line, "key longer than %d characters", KEY_MAX);
        key[klen++] = to_lower(*p++);
    }
    key[klen] = '\0';
    if (p < end && !wm_is_blank(*p) && *p != '=' && *p != '#' && *p != '\'' && *p != '"')
        return fail_syntax(ps, line, "%s in key \"%s\" at column %zu", describe_byte(cb, *p), key,
                           (size_t)(p - start) + 1);

    for (k = 0; k < K_COUNT; k++) {
        if (strcmp(key, keys[k].name) == 0)
            break;
    }
    if (k == K_COUNT)
        return unknown_key(ps, line, key);
    if (ps->line_of[k] != 0)
        return fail_key(ps, -EINVAL, line, key,
                        "set twice, on lines %lu and %lu; a key may be set only once",
                        ps->line_of[k], line);

    while (p < end && wm_is_blank(*p))
        p++;
    if (p < end && *p == '=')
        p++;
    while (p < end && wm_is_blank(*p))
        p++;
    if (p == end || *p == '#')
        return fail_key(ps, -EINVAL, line, key, "missing value");
    vlen = scan_value(ps, line, key, p, end, val, &p);
    if (vlen < 0)
        return vlen;
    while (p < end && wm_is_blank(*p))
        p++;
    if (p < end && *p != '#')
        return fail_key(ps, -EINVAL, line, key,
                        "unexpected %s after the value (quote values that contain spaces)",
                        describe_byte(cb, *p));
    ps->line_of[k] = line;
    return set_value(ps, (enum key_id)k, line, val, (size_t)vlen);
}

/* ---------------------------------------------------------------------------------------------
 * Second pass: roles, requirements, defaults, paths, files, cross-checks
 */

/* Makes *path absolute, relative to the directory of the configuration file. */
static int
resolve_path(struct parser *ps, enum key_id k, char **path)
{
    const char *slash;
    char cwd[PATH_MAX];
    char *abs;
    int n;

    if (*path == NULL || (*path)[0] == '/')
        return 0;
    slash = strrchr(ps->name, '/');
    if (slash != NULL && ps->name[0] == '/') {
        n = asprintf(&abs, "%.*s/%s", (int)(slash - ps->name), ps->name, *path);
    } else {
        if (getcwd(cwd, sizeof(cwd)) == NULL)
            return fail_key(ps, -errno, ps->line_of[k], keys[k].name,
                            "cannot resolve relative path: getcwd: %s", strerror(errno));
        if (slash != NULL)
            n = asprintf(&abs, "%s/%.*s/%s", cwd, (int)(slash - ps->name), ps->name, *path);
        else
            n = asprintf(&abs, "%s/%s", cwd, *path);
    }
    if (n < 0)
        return fail_key(ps, -ENOMEM, ps->line_of[k], keys[k].name, "out of memory");
    if (n >= PATH_MAX) {
        free(abs);
        return fail_key(ps, -ENAMETOOLONG, ps->line_of[k], keys[k].name,
                        "path longer than %d bytes once made absolute", PATH_MAX - 1);
    }
    free(*path);
    *path = abs;
    return 0;
}

/* Checks that path names a readable regular file. */
static int
check_readable(struct parser *ps, enum key_id k, const char *path)
{
    struct stat st;
    int fd, rc = 0;

    if (path == NULL)
        return 0;
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        rc = -errno;
        return fail_key(ps, rc, ps->line_of[k], keys[k].name, "cannot read \"%s\": %s", path,
                        strerror(-rc));
    }
    if (fstat(fd, &st) != 0)
        rc = -errno;
    else if (!S_ISREG(st.st_mode))
        rc = -EINVAL;
    close(fd);
    if (rc == -EINVAL)
        return fail_key(ps, rc, ps->line_of[k], keys[k].name, "\"%s\" is not a regular file", path);
    if (rc < 0)
        return fail_key(ps, rc, ps->line_of[k], keys[k].name, "cannot stat \"%s\": %s", path,
                        strerror(-rc));
    return 0;
}

static bool
is_wildcard(const char *host)
{
    return strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0 || strcmp(host, "*") == 0;
}

static bool
same_listener(const struct config_hostport *a, const struct config_hostport *b)
{
    return a->port == b->port &&
           (strcmp(a->host, b->host) == 0 || is_wildcard(a->host) || is_wildcard(b->host));
}

struct listener {
    enum key_id k;
    const struct config_hostport *hp;
};

/* The addresses this node listens on must differ; reports the one set later in the file. */
static int
check_listeners(struct parser *ps)
{
    struct wm_config *c = ps->cfg;
    struct listener l[3];
    int n = 0;

    l[n++] = (struct listener){K_LISTEN, &c->listen};
    if (c->role != CONFIG_ROLE_WITNESS)
        l[n++] = (struct listener){K_WAL_LISTEN, &c->wal_listen};
    l[n++] = (struct listener){K_HTTP_LISTEN, &c->http_listen};
    for (int i = 1; i < n; i++) {
        for (int j = 0; j < i; j++) {
            const struct listener *a = &l[i], *b = &l[j];

            if (!same_listener(a->hp, b->hp))
                continue;
            if (ps->line_of[a->k] < ps->line_of[b->k]) {
                a = &l[j];
                b = &l[i];
            }
            return fail_key(ps, -EINVAL, ps->line_of[a->k], keys[a->k].name,
                            "address %s clashes with %s = %s", a->hp->text, keys[b->k].name,
                            b->hp->text);
        }
    }
    return 0;
}

/* True for "localhost", an IPv4 address in 127/8 and ::1. */
static bool
is_loopback_host(const char *host)
{
    unsigned char a[16];

    if (strcasecmp(host, "localhost") == 0)
        return true;
    if (inet_pton(AF_INET, host, a) == 1)
        return a[0] == 127;
    return inet_pton(AF_INET6, host, a) == 1 && memcmp(a, &in6addr_loopback, 16) == 0;
}

/* True if host is an address of one of this machine's interfaces. */
static bool
is_local_address(const char *host)
{
    unsigned char want[16], have[16];
    struct ifaddrs *ifs, *i;
    int family = inet_pton(AF_INET, host, want) == 1    ? AF_INET
                 : inet_pton(AF_INET6, host, want) == 1 ? AF_INET6
                                                        : AF_UNSPEC;
    bool found = false;

    if (family == AF_UNSPEC || getifaddrs(&ifs) != 0)
        return false;
    for (i = ifs; i != NULL && !found; i = i->ifa_next) {
        if (i->ifa_addr == NULL || i->ifa_addr->sa_family != family)
            continue;
        if (family == AF_INET)
            memcpy(have, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, 4);
        else
            memcpy(have, &((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr, 16);
        found = memcmp(want, have, family == AF_INET ? 4 : 16) == 0;
    }
    freeifaddrs(ifs);
    return found;
}

/*
 * True if a connection to remote would reach the listener mine of this node: the same port,
 * and the same host, or a loopback name for a loopback or wildcard listener, or (with
 * machine, when the checks may look at this machine) any of this machine's addresses for a
 * wildcard listener.
 */
static bool
reaches_listener(const struct config_hostport *remote, const struct config_hostport *mine,
                 bool machine)
{
    if (remote->port != mine->port)
        return false;
    if (strcasecmp(remote->host, mine->host) == 0)
        return true;
    if (is_wildcard(mine->host))
        return is_loopback_host(remote->host) || (machine && is_local_address(remote->host));
    /* "localhost" reaches a listener on 127.0.0.1 or ::1 */
    return strcasecmp(remote->host, "localhost") == 0 && is_loopback_host(mine->host) &&
           (strcmp(mine->host, "127.0.0.1") == 0 || strcmp(mine->host, "::1") == 0);
}

/* The other agents this node connects to (its peer and witness; a witness's sites) must not
 * be this node itself: an address that reaches one of its own listeners is refused, naming
 * whichever of the two keys is set later in the file. */
static int
check_not_self(struct parser *ps)
{
    struct wm_config *c = ps->cfg;
    const struct listener mine[3] = {
        {K_LISTEN, &c->listen},
        {K_HTTP_LISTEN, &c->http_listen},
        {K_WAL_LISTEN, c->role != CONFIG_ROLE_WITNESS ? &c->wal_listen : NULL}};
    struct {
        enum key_id k;
        const struct config_endpoint *ep;
    } remote[2];
    bool machine = !(ps->flags & CONFIG_NO_FILE_CHECKS);
    int n = 0;

    if (c->role == CONFIG_ROLE_WITNESS) {
        remote[n].k = K_SITES, remote[n++].ep = &c->sites[0];
        remote[n].k = K_SITES, remote[n++].ep = &c->sites[1];
    } else {
        remote[n].k = K_PEER, remote[n++].ep = &c->peer;
        if (c->has_witness)
            remote[n].k = K_WITNESS, remote[n++].ep = &c->witness;
    }
    for (int i = 0; i < n; i++) {
        const char *what = remote[i].k == K_PEER      ? "the peer"
                           : remote[i].k == K_WITNESS ? "the witness"
                                                      : "a site";
        for (int j = 0; j < 3; j++) {
            const struct listener *l = &mine[j];

            if (l->hp == NULL || !reaches_listener(&remote[i].ep->addr, l->hp, machine))
                continue;
            if (ps->line_of[l->k] > ps->line_of[remote[i].k])
                return fail_key(ps, -EINVAL, ps->line_of[l->k], keys[l->k].name,
                                "address %s is where %s %s is said to be (%s = %s@%s): %s runs "
                                "elsewhere, with its own address",
                                l->hp->text, what, remote[i].ep->name, keys[remote[i].k].name,
                                remote[i].ep->name, remote[i].ep->addr.text, what);
            return fail_key(ps, -EINVAL, ps->line_of[remote[i].k], keys[remote[i].k].name,
                            "%s at %s is this node's own address (%s = %s): %s runs elsewhere, "
                            "with its own address",
                            remote[i].ep->name, remote[i].ep->addr.text, keys[l->k].name,
                            l->hp->text, what);
        }
    }
    return 0;
}

/* n in the largest of units that divides it, as config_dump() writes it ("16MB", "1min"). */
static const char *
units_text(char *buf, size_t cap, uint64_t n, const struct unit *units)
{
    const struct unit *best = &units[0];

    for (const struct unit *u = units; u->name != NULL; u++) {
        if (n != 0 && n % u->mult == 0)
            best = u;
    }
    snprintf(buf, cap, "%llu%s", (unsigned long long)(n / best->mult), best->name);
    return buf;
}

/*
 * A degraded threshold must not be above its partial one: names the key of the pair set later
 * in the file (the one that made the pair wrong), or the one set when the other is a default.
 */
static int
check_threshold_pair(struct parser *ps, enum key_id kd, uint64_t deg, enum key_id kp, uint64_t part,
                     const struct unit *units)
{
    char d[48], p[48];
    enum key_id k;

    if (deg <= part)
        return 0;
    k = ps->line_of[kd] > ps->line_of[kp] ? kd : kp;
    units_text(d, sizeof(d), deg, units);
    units_text(p, sizeof(p), part, units);
    return fail_key(ps, -EINVAL, ps->line_of[k], keys[k].name,
                    "%s (%s%s) must not be above %s (%s%s): the mirror is degraded before it is "
                    "in partial outage",
                    keys[kd].name, d, ps->line_of[kd] == 0 ? ", the default" : "", keys[kp].name, p,
                    ps->line_of[kp] == 0 ? ", the default" : "");
}

/* The later in the file of two keys that were both set. */
static enum key_id
later_key(const struct parser *ps, enum key_id a, enum key_id b)
{
    return ps->line_of[a] > ps->line_of[b] ? a : b;
}

/*
 * A site's arbiter: `arbiter` defaults to witness when `witness` is set, else none; the etcd_*
 * keys belong to arbiter = etcd, which needs etcd_endpoints.  TLS to etcd takes its three files
 * together, over https://.  etcd_lease_ttl lies between etcd's shortest lease (2 s) and
 * failover_timeout, so that a dead primary's liveness key is gone by the time its standby asks.
 */
static int
check_arbiter(struct parser *ps)
{
    static const enum key_id etcd_keys[] = {K_ETCD_ENDPOINTS, K_ETCD_PREFIX, K_ETCD_CA,
                                            K_ETCD_CERT,      K_ETCD_KEY,    K_ETCD_LEASE_TTL};
    static const enum key_id tls_keys[] = {K_ETCD_CA, K_ETCD_CERT, K_ETCD_KEY};
    struct wm_config *c = ps->cfg;
    const char *name;
    char prefix[ETCDREC_PREFIX_MAX + 1];
    int first = -1, missing = -1;

    if (ps->line_of[K_ARBITER] == 0)
        c->arbiter = c->has_witness ? CONFIG_ARBITER_WITNESS : CONFIG_ARBITER_NONE;
    name = config_arbiter_name(c->arbiter);
    if (c->arbiter == CONFIG_ARBITER_WITNESS && !c->has_witness)
        return fail_key(ps, -EINVAL, ps->line_of[K_ARBITER], keys[K_ARBITER].name,
                        "arbiter = witness needs the witness key (NAME@host:port)");
    if (c->arbiter != CONFIG_ARBITER_WITNESS && c->has_witness) {
        enum key_id k = later_key(ps, K_ARBITER, K_WITNESS);

        return fail_key(ps, -EINVAL, ps->line_of[k], keys[k].name,
                        "witness is set but arbiter = %s: set one arbiter", name);
    }
    for (size_t i = 0; i < sizeof(etcd_keys) / sizeof(etcd_keys[0]); i++) {
        enum key_id k = etcd_keys[i];

        if (ps->line_of[k] != 0 && (first < 0 || ps->line_of[k] < ps->line_of[first]))
            first = (int)k;
    }
    if (c->arbiter != CONFIG_ARBITER_ETCD) {
        if (first >= 0)
            return fail_key(ps, -EINVAL, ps->line_of[first], keys[first].name,
                            "used only with arbiter = etcd (arbiter is %s)", name);
        return 0;
    }
    if (ps->line_of[K_ETCD_ENDPOINTS] == 0) {
        put_err(ps, "%s: missing required key \"etcd_endpoints\" (arbiter = etcd)", ps->name);
        return -EINVAL;
    }
    first = -1;
    for (size_t i = 0; i < 3; i++) {
        if (ps->line_of[tls_keys[i]] == 0)
            missing = missing < 0 ? (int)tls_keys[i] : missing;
        else if (first < 0 || ps->line_of[tls_keys[i]] < ps->line_of[first])
            first = (int)tls_keys[i];
    }
    if (first >= 0 && missing >= 0)
        return fail_key(ps, -EINVAL, ps->line_of[first], keys[first].name,
                        "etcd_ca, etcd_cert and etcd_key go together: %s is not set",
                        keys[missing].name);
    if (first >= 0 && !etcd_https(c->etcd_endpoints))
        return fail_key(ps, -EINVAL, ps->line_of[first], keys[first].name,
                        "TLS to etcd needs https:// endpoints; etcd_endpoints are http://");
    if (c->etcd_prefix == NULL) {
        etcdrec_default_prefix(prefix, sizeof(prefix), c->node_name, c->peer.name);
        c->etcd_prefix = strdup(prefix);
        if (c->etcd_prefix == NULL)
            return fail_key(ps, -ENOMEM, 0, keys[K_ETCD_PREFIX].name, "out of memory");
    }
    if (c->failover_timeout_ms < 2 * MS_PER_S)
        return fail_key(ps, -EINVAL, ps->line_of[K_FAILOVER_TIMEOUT], keys[K_FAILOVER_TIMEOUT].name,
                        "with arbiter = etcd, failover_timeout (%llu ms) must be at least 2s, "
                        "etcd's shortest lease",
                        (unsigned long long)c->failover_timeout_ms);
    if (ps->line_of[K_ETCD_LEASE_TTL] == 0) {
        c->etcd_lease_ttl_ms = c->failover_timeout_ms / MS_PER_S * MS_PER_S;
        if (c->etcd_lease_ttl_ms > 3 * MS_PER_S)
            c->etcd_lease_ttl_ms = 3 * MS_PER_S;
    } else if (c->etcd_lease_ttl_ms < 2 * MS_PER_S) {
        return fail_key(ps, -EINVAL, ps->line_of[K_ETCD_LEASE_TTL], keys[K_ETCD_LEASE_TTL].name,
                        "etcd_lease_ttl (%llus) is shorter than etcd's shortest lease, 2s",
                        (unsigned long long)(c->etcd_lease_ttl_ms / MS_PER_S));
    } else if (c->etcd_lease_ttl_ms > c->failover_timeout_ms) {
        enum key_id k = later_key(ps, K_ETCD_LEASE_TTL, K_FAILOVER_TIMEOUT);

        return fail_key(ps, -EINVAL, ps->line_of[k], keys[k].name,
                        "etcd_lease_ttl (%llus) must not be longer than failover_timeout (%llu "
                        "ms%s): a dead primary's liveness key would outlive the fail-over timeout",
                        (unsigned long long)(c->etcd_lease_ttl_ms / MS_PER_S),
                        (unsigned long long)c->failover_timeout_ms,
                        ps->line_of[K_FAILOVER_TIMEOUT] == 0 ? ", the default" : "");
    }
    return 0;
}

static int
finish(struct parser *ps)
{
    struct wm_config *c = ps->cfg;
    unsigned role = c->role == CONFIG_ROLE_WITNESS ? ROLE_WITNESS : ROLE_SITE;
    enum key_id path_keys[] = {K_TLS_CA,    K_TLS_CERT,        K_TLS_KEY,  K_PGDATA,
                               K_SPOOL_DIR, K_HTTP_TOKEN_FILE, K_STATE_DIR,
                               K_ETCD_CA,   K_ETCD_CERT,       K_ETCD_KEY};
    char **path_vals[] = {&c->tls_ca,    &c->tls_cert,        &c->tls_key,  &c->pgdata,
                          &c->spool_dir, &c->http_token_file, &c->state_dir,
                          &c->etcd_ca,   &c->etcd_cert,       &c->etcd_key};
    unsigned long first = 0;
    int bad = -1, rc;

    /* Keys the role does not use: report the first in the file. */
    for (int k = 0; k < K_COUNT; k++) {
        if (ps->line_of[k] != 0 && !(keys[k].roles & role) &&
            (first == 0 || ps->line_of[k] < first)) {
            first = ps->line_of[k];
            bad = k;
        }
    }
    if (bad >= 0)
        return fail_key(ps, -EINVAL, first, keys[bad].name,
                        role == ROLE_WITNESS ? "not used by a witness (role = witness)"
                                             : "used only by a witness (role = witness)");
    for (int k = 0; k < K_COUNT; k++) {
        if ((keys[k].required & role) && ps->line_of[k] == 0) {
            put_err(ps, "%s: missing required key \"%s\"%s", ps->name, keys[k].name,
                    role == ROLE_WITNESS ? " (role = witness)" : "");
            return -EINVAL;
        }
    }

    /* Defaults. */
    if (ps->line_of[K_HTTP_LISTEN] == 0) {
        char why[WHY_LEN];

        if (conv_hostport("127.0.0.1:8008", 14, &c->http_listen, why) < 0)
            return fail_key(ps, -EINVAL, 0, "http_listen", "%s", why);
    }
    if (ps->line_of[K_HEARTBEAT_INTERVAL] == 0)
        c->heartbeat_interval_ms = 1 * MS_PER_S;
    if (ps->line_of[K_PEER_TIMEOUT] == 0)
        c->peer_timeout_ms = 10 * MS_PER_S;
    if (ps->line_of[K_LOG_LEVEL] == 0)
        c->log_level = LOG_LEVEL_INFO;
    if (role == ROLE_SITE) {
        if (ps->line_of[K_SLOT_NAME] == 0)
            strcpy(c->slot_name, "walmirror");
        if (ps->line_of[K_APPLICATION_NAME] == 0)
            strcpy(c->application_name, "walmirror");
        if (ps->line_of[K_FAILOVER_TIMEOUT] == 0)
            c->failover_timeout_ms = 5 * MS_PER_S;
        if (ps->line_of[K_SPOOL_KEEP] == 0) {
            c->spool_keep = 1024ull * 1024 * 1024;
            c->spool_keep_segments = false;
        }
        if (ps->line_of[K_COMPRESSION] == 0)
            c->compression = CONFIG_COMPRESSION_LZ4;
        if (ps->line_of[K_AVAILABILITY_MODE] == 0)
            c->availability_mode = CONFIG_MAXIMUM_AVAILABILITY;
        if (ps->line_of[K_STANDBY_LOSS_TIMEOUT] == 0)
            c->standby_loss_timeout_ms = 10 * MS_PER_S;
        /* statuspage.h's STATUSPAGE_DEGRADED_* and STATUSPAGE_PARTIAL_* */
        if (ps->line_of[K_STATUS_DEGRADED_LAG_SIZE] == 0)
            c->status_degraded_lag_bytes = 16ull * 1024 * 1024;
        if (ps->line_of[K_STATUS_DEGRADED_LAG_TIME] == 0)
            c->status_degraded_lag_ms = 5 * MS_PER_S;
        if (ps->line_of[K_STATUS_PARTIAL_LAG_SIZE] == 0)
            c->status_partial_lag_bytes = 1024ull * 1024 * 1024;
        if (ps->line_of[K_STATUS_PARTIAL_LAG_TIME] == 0)
            c->status_partial_lag_ms = 60 * MS_PER_S;
        rc = check_threshold_pair(ps, K_STATUS_DEGRADED_LAG_SIZE, c->status_degraded_lag_bytes,
                                  K_STATUS_PARTIAL_LAG_SIZE, c->status_partial_lag_bytes,
                                  size_units);
        if (rc == 0)
            rc = check_threshold_pair(ps, K_STATUS_DEGRADED_LAG_TIME, c->status_degraded_lag_ms,
                                      K_STATUS_PARTIAL_LAG_TIME, c->status_partial_lag_ms,
                                      duration_units);
        if (rc < 0)
            return rc;
    }

    /* Names must tell the nodes apart: they are the certificate names. */
    if (role == ROLE_SITE) {
        if (strcmp(c->peer.name, c->node_name) == 0)
            return fail_key(ps, -EINVAL, ps->line_of[K_PEER], "peer",
                            "the peer is named \"%s\" like this node (node_name)", c->node_name);
        if (c->has_witness && strcmp(c->witness.name, c->node_name) == 0)
            return fail_key(ps, -EINVAL, ps->line_of[K_WITNESS], "witness",
                            "the witness is named \"%s\" like this node (node_name)", c->node_name);
        if (c->has_witness && strcmp(c->witness.name, c->peer.name) == 0)
            return fail_key(ps, -EINVAL, ps->line_of[K_WITNESS], "witness",
                            "the witness is named \"%s\" like the peer", c->peer.name);
        rc = check_arbiter(ps);
        if (rc < 0)
            return rc;
    } else {
        for (int i = 0; i < 2; i++) {
            if (strcmp(c->sites[i].name, c->node_name) == 0)
                return fail_key(ps, -EINVAL, ps->line_of[K_SITES], "sites",
                                "site %d is named \"%s\" like this witness (node_name)", i + 1,
                                c->node_name);
        }
    }

    if (c->heartbeat_interval_ms >= c->peer_timeout_ms) {
        enum key_id k =
            ps->line_of[K_HEARTBEAT_INTERVAL] != 0 ? K_HEARTBEAT_INTERVAL : K_PEER_TIMEOUT;

        return fail_key(ps, -EINVAL, ps->line_of[k], keys[k].name,
                        "heartbeat_interval (%llu ms) must be shorter than peer_timeout (%llu ms)",
                        (unsigned long long)c->heartbeat_interval_ms,
                        (unsigned long long)c->peer_timeout_ms);
    }
    rc = check_listeners(ps);
    if (rc == 0)
        rc = check_not_self(ps);
    if (rc < 0)
        return rc;

    for (size_t i = 0; i < sizeof(path_keys) / sizeof(path_keys[0]); i++) {
        rc = resolve_path(ps, path_keys[i], path_vals[i]);
        if (rc < 0)
            return rc;
    }
    if (role == ROLE_SITE && c->state_dir == NULL) {
        /* agent.state beside the spool's files: no name there collides with it */
        c->state_dir = strdup(c->spool_dir);
        if (c->state_dir == NULL)
            return fail_key(ps, -ENOMEM, 0, keys[K_STATE_DIR].name, "out of memory");
    }
    if (!(ps->flags & CONFIG_NO_FILE_CHECKS)) {
        for (size_t i = 0; i < sizeof(path_keys) / sizeof(path_keys[0]); i++) {
            if (path_keys[i] == K_PGDATA || path_keys[i] == K_SPOOL_DIR ||
                path_keys[i] == K_STATE_DIR)
                continue; /* checked by the modules that use them, at start-up */
            rc = check_readable(ps, path_keys[i], *path_vals[i]);
            if (rc < 0)
                return rc;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Entry points
 */

int
config_parse_buffer(const char *name, const char *buf, size_t len, unsigned flags,
                    struct wm_config *out, char *err, size_t errlen)
{
    struct wm_config cfg;
    struct parser ps = {.name = name != NULL ? name : "(config)",
                        .flags = flags,
                        .err = err,
                        .errlen = errlen,
                        .cfg = &cfg};
    const char *p = buf, *end = buf + len;
    unsigned long line = 0;
    int rc = 0;

    memset(&cfg, 0, sizeof(cfg));
    memset(out, 0, sizeof(*out));
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (buf == NULL) {
        p = "";
        end = p;
        len = 0;
    }
    if (len >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0)
        p += 3; /* a UTF-8 byte order mark, as some editors write */
    while (p < end && rc == 0) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl != NULL ? nl : end;

        line++;
        if (le - p > CONFIG_LINE_MAX) {
            rc = fail_syntax(&ps, line, "line longer than %d bytes", CONFIG_LINE_MAX);
            break;
        }
        if (le > p && le[-1] == '\r')
            le--; /* CRLF line ends */
        rc = parse_line(&ps, line, p, le);
        p = nl != NULL ? nl + 1 : end;
    }
    if (rc == 0)
        rc = finish(&ps);
    if (rc == 0) {
        cfg.path = strdup(ps.name);
        if (cfg.path == NULL) {
            put_err(&ps, "%s: out of memory", ps.name);
            rc = -ENOMEM;
        }
    }
    if (rc < 0) {
        config_free(&cfg);
        return rc;
    }
    *out = cfg;
    return 0;
}

int
config_load(const char *path, struct wm_config *out, char *err, size_t errlen)
{
    struct parser ps = {.name = path, .err = err, .errlen = errlen};
    char *buf;
    size_t len = 0;
    int fd, rc;

    memset(out, 0, sizeof(*out));
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        rc = -errno;
        put_err(&ps, "%s: cannot open: %s", path, strerror(-rc));
        return rc;
    }
    buf = malloc(CONFIG_FILE_MAX + 1);
    if (buf == NULL) {
        close(fd);
        put_err(&ps, "%s: out of memory", path);
        return -ENOMEM;
    }
    for (;;) {
        ssize_t n = read(fd, buf + len, CONFIG_FILE_MAX + 1 - len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -errno;
            put_err(&ps, "%s: cannot read: %s", path, strerror(-rc));
            goto out;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len > CONFIG_FILE_MAX) {
            rc = -EFBIG;
            put_err(&ps, "%s: file larger than %d bytes; is this a configuration file?", path,
                    CONFIG_FILE_MAX);
            goto out;
        }
    }
    rc = config_parse_buffer(path, buf, len, 0, out, err, errlen);
out:
    free(buf);
    close(fd);
    return rc;
}

void
config_free(struct wm_config *cfg)
{
    if (cfg == NULL)
        return;
    free(cfg->path);
    free(cfg->tls_ca);
    free(cfg->tls_cert);
    free(cfg->tls_key);
    free(cfg->http_token_file);
    free(cfg->pg_conninfo);
    free(cfg->pgdata);
    free(cfg->spool_dir);
    free(cfg->state_dir);
    free(cfg->peer_pg_conninfo);
    free(cfg->etcd_endpoints);
    free(cfg->etcd_prefix);
    free(cfg->etcd_ca);
    free(cfg->etcd_cert);
    free(cfg->etcd_key);
    memset(cfg, 0, sizeof(*cfg));
}

/* ---------------------------------------------------------------------------------------------
 * Dumping
 */

static void
dump_string(FILE *f, const char *key, const char *v)
{
    fprintf(f, "%s = '", key);
    for (; *v != '\0'; v++) {
        if (*v == '\'')
            fputc('\'', f);
        fputc(*v, f);
    }
    fputs("'\n", f);
}

static void
dump_units(FILE *f, const char *key, uint64_t n, const struct unit *units)
{
    char buf[48];

    fprintf(f, "%s = %s\n", key, units_text(buf, sizeof(buf), n, units));
}

int
config_dump(FILE *f, const struct wm_config *c)
{
    bool site = c->role != CONFIG_ROLE_WITNESS;

    fprintf(f, "# walmirror agent configuration, as loaded from %s\n", c->path ? c->path : "?");
    dump_string(f, "node_name", c->node_name);
    fprintf(f, "role = %s\n", config_role_name(c->role));
    dump_string(f, "listen", c->listen.text);
    if (site) {
        fprintf(f, "peer = '%s@%s'\n", c->peer.name, c->peer.addr.text);
        if (c->has_witness)
            fprintf(f, "witness = '%s@%s'\n", c->witness.name, c->witness.addr.text);
    } else {
        fprintf(f, "sites = '%s@%s, %s@%s'\n", c->sites[0].name, c->sites[0].addr.text,
                c->sites[1].name, c->sites[1].addr.text);
    }
    dump_string(f, "tls_ca", c->tls_ca ? c->tls_ca : "");
    dump_string(f, "tls_cert", c->tls_cert ? c->tls_cert : "");
    dump_string(f, "tls_key", c->tls_key ? c->tls_key : "");
    if (site) {
        dump_string(f, "pg_conninfo", c->pg_conninfo ? c->pg_conninfo : "");
        if (c->peer_pg_conninfo != NULL)
            dump_string(f, "peer_pg_conninfo", c->peer_pg_conninfo);
        dump_string(f, "pgdata", c->pgdata ? c->pgdata : "");
        dump_string(f, "spool_dir", c->spool_dir ? c->spool_dir : "");
        dump_string(f, "wal_listen", c->wal_listen.text);
    }
    dump_string(f, "state_dir", c->state_dir ? c->state_dir : "");
    dump_string(f, "http_listen", c->http_listen.text);
    if (c->http_token_file != NULL)
        dump_string(f, "http_token_file", c->http_token_file);
    if (site) {
        dump_string(f, "slot_name", c->slot_name);
        dump_string(f, "application_name", c->application_name);
        dump_units(f, "failover_timeout", c->failover_timeout_ms, duration_units);
    }
    dump_units(f, "heartbeat_interval", c->heartbeat_interval_ms, duration_units);
    dump_units(f, "peer_timeout", c->peer_timeout_ms, duration_units);
    if (site) {
        fprintf(f, "auto_rejoin = %s\n", c->auto_rejoin ? "on" : "off");
        if (c->spool_keep_segments)
            fprintf(f, "spool_keep = %llu # segments\n", (unsigned long long)c->spool_keep);
        else
            dump_units(f, "spool_keep", c->spool_keep, size_units);
        fprintf(f, "compression = %s\n",
                (unsigned)c->compression < 2 ? compression_names[c->compression] : "?");
        fputs("wal_server_auth = trust\n", f);
        fprintf(f, "availability_mode = %s\n",
                (unsigned)c->availability_mode < 2 ? availability_names[c->availability_mode]
                                                   : "?");
        dump_units(f, "standby_loss_timeout", c->standby_loss_timeout_ms, duration_units);
        dump_units(f, "status_degraded_lag_size", c->status_degraded_lag_bytes, size_units);
        dump_units(f, "status_degraded_lag_time", c->status_degraded_lag_ms, duration_units);
        dump_units(f, "status_partial_lag_size", c->status_partial_lag_bytes, size_units);
        dump_units(f, "status_partial_lag_time", c->status_partial_lag_ms, duration_units);
        fprintf(f, "arbiter = %s\n", config_arbiter_name(c->arbiter));
        if (c->arbiter == CONFIG_ARBITER_ETCD) {
            dump_string(f, "etcd_endpoints", c->etcd_endpoints ? c->etcd_endpoints : "");
            dump_string(f, "etcd_prefix", c->etcd_prefix ? c->etcd_prefix : "");
            if (c->etcd_ca != NULL) {
                dump_string(f, "etcd_ca", c->etcd_ca);
                dump_string(f, "etcd_cert", c->etcd_cert ? c->etcd_cert : "");
                dump_string(f, "etcd_key", c->etcd_key ? c->etcd_key : "");
            }
            dump_units(f, "etcd_lease_ttl", c->etcd_lease_ttl_ms, duration_units);
        }
    }
    fprintf(f, "log_level = %s\n",
            c->log_level >= LOG_LEVEL_ERROR && c->log_level <= LOG_LEVEL_DEBUG
                ? log_level_names[c->log_level - LOG_LEVEL_ERROR]
                : "?");
    if (fflush(f) != 0 || ferror(f))
        return -EIO;
    return 0;
}

const char *
config_size_text(uint64_t bytes, char *buf, size_t cap)
{
    const struct unit *u = &size_units[0];
    double v;

    while (u[1].name != NULL && bytes >= u[1].mult)
        u++;
    v = (double)bytes / (double)u->mult;
    if (u->mult == 1)
        snprintf(buf, cap, "%llu B", (unsigned long long)bytes);
    else
        snprintf(buf, cap, v < 9.95 ? "%.1f %s" : "%.0f %s", v, u->name);
    return buf;
}
