/*
 * pgproto.c - codec for the walsender side of PostgreSQL 15's physical replication protocol.
 *
 * Contract and failure semantics are in pgproto.h.  Implementation notes:
 *  - every read of peer bytes goes through struct cursor (cursor.h); every write goes through a
 *    struct wbuf laid over space reserved in a struct pgp_buf for the exact size computed
 *    first (msg_begin/msg_end), so a length word never disagrees with the bytes behind it;
 *  - the replication command parser is a small hand-written recursive-descent parser over the
 *    token rules of repl_scanner.l, driven by what repl_gram.y expects at each point, so its
 *    error messages can say what was expected and what was found.
 */
#include "pgproto.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "clock.h"
#include "cursor.h"

_Static_assert(1 + 8 + 8 + 8 + 8 + 1 == PGP_STANDBY_STATUS_LEN, "'r' is 34 bytes");
_Static_assert(1 + 8 + 4 + 4 + 4 + 4 == PGP_HS_FEEDBACK_LEN, "'h' is 25 bytes");
_Static_assert(1 + 8 + 8 + 1 == PGP_KEEPALIVE_LEN, "'k' is 18 bytes");
_Static_assert(1 + 8 + 8 + 8 == PGP_XLOGDATA_INNER_HDR, "'w' header is 25 bytes");
_Static_assert(1 + 4 + PGP_XLOGDATA_INNER_HDR == PGP_XLOGDATA_HDR_LEN, "'d'+len+'w' header");
_Static_assert(PGP_PROTOCOL_3_0 == (3u << 16), "protocol 3.0");
_Static_assert(PGP_CANCEL_REQUEST == ((1234u << 16) | 5678u), "cancel request code");
_Static_assert(PGP_SSL_REQUEST == ((1234u << 16) | 5679u), "SSL request code");
_Static_assert(PGP_GSSENC_REQUEST == ((1234u << 16) | 5680u), "GSSENC request code");
_Static_assert(PGP_MAX_QUERY_LEN < (unsigned)INT32_MAX, "parse results fit an int");
_Static_assert(PGP_MAX_BACKEND_MSG < (unsigned)INT32_MAX, "builder results fit an int");

/* Largest column count of a RowDescription/DataRow (MaxTupleAttributeNumber). */
#define PGP_MAX_COLUMNS 1664

/* ---------------------------------------------------------------------------------------- */
/* Errors                                                                                    */

void
pgp_err_set(struct pgp_err *e, bool fatal, const char *sqlstate, const char *fmt, ...)
{
    va_list ap;

    if (e == NULL)
        return;
    snprintf(e->sqlstate, sizeof(e->sqlstate), "%s", sqlstate);
    e->fatal = fatal;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    va_end(ap);
}

/*
 * Copies up to max bytes of peer text into dst as printable ASCII (anything else becomes '?'),
 * adding "..." when cut, so that it can be quoted in an error message.
 */
static void
excerpt(char *dst, size_t dstsz, const void *src, size_t n, size_t max)
{
    const unsigned char *s = src;
    size_t i, o = 0;

    if (dstsz == 0)
        return;
    for (i = 0; i < n && i < max && o + 1 < dstsz; i++)
        dst[o++] = (s[i] >= 0x20 && s[i] < 0x7f) ? (char)s[i] : '?';
    if (i < n) {
        for (int k = 0; k < 3 && o + 1 < dstsz; k++)
            dst[o++] = '.';
    }
    dst[o] = '\0';
}

/* A fatal protocol violation with a fixed message. */
static int
err_proto(struct pgp_err *e, const char *msg)
{
    pgp_err_set(e, true, PGP_SQLSTATE_PROTOCOL_VIOLATION, "%s", msg);
    return -EPROTO;
}

/* ---------------------------------------------------------------------------------------- */
/* Growable buffer                                                                           */

void
pgp_buf_init(struct pgp_buf *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void
pgp_buf_free(struct pgp_buf *b)
{
    free(b->data);
    pgp_buf_init(b);
}

void
pgp_buf_reset(struct pgp_buf *b)
{
    b->len = 0;
}

int
pgp_buf_reserve(struct pgp_buf *b, size_t n)
{
    size_t want, cap;
    uint8_t *p;

    if (b->cap - b->len >= n)
        return 0;
    if (n > PGP_BUF_MAX - b->len)
        return -EMSGSIZE;
    want = b->len + n;
    cap = b->cap < 256 ? 256 : b->cap;
    while (cap < want)
        cap = cap > PGP_BUF_MAX / 2 ? PGP_BUF_MAX : cap * 2;
    p = realloc(b->data, cap);
    if (p == NULL)
        return -ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int
pgp_buf_commit(struct pgp_buf *b, size_t n)
{
    if (n > b->cap - b->len)
        return -EINVAL;
    b->len += n;
    return 0;
}

int
pgp_buf_append(struct pgp_buf *b, const void *p, size_t n)
{
    struct wbuf w;
    int rc;

    if (n == 0)
        return 0;
    rc = pgp_buf_reserve(b, n);
    if (rc < 0)
        return rc;
    w = wbuf_init(b->data + b->len, n);
    if (!wbuf_put_bytes(&w, p, n))
        return -EFAULT;
    b->len += n;
    return 0;
}

void
pgp_buf_consume(struct pgp_buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

/* ---------------------------------------------------------------------------------------- */
/* LSNs, timelines, timestamps, booleans, slot names                                         */

static int
hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* 1 to 8 hex digits; returns the number consumed (0 on none or more than 8). */
static size_t
hex32(const char *s, size_t len, uint32_t *out)
{
    size_t i = 0;
    uint32_t v = 0;

    while (i < len && hexval((unsigned char)s[i]) >= 0) {
        if (i == 8)
            return 0;
        v = (v << 4) | (uint32_t)hexval((unsigned char)s[i]);
        i++;
    }
    *out = v;
    return i;
}

int
pgp_lsn_parse(const char *s, size_t len, uint64_t *lsn)
{
    uint32_t hi, lo;
    size_t n, m;

    n = hex32(s, len, &hi);
    if (n == 0 || n >= len || s[n] != '/')
        return -EINVAL;
    m = hex32(s + n + 1, len - n - 1, &lo);
    if (m == 0 || n + 1 + m != len)
        return -EINVAL;
    *lsn = ((uint64_t)hi << 32) | lo;
    return 0;
}

int
pgp_lsn_format(uint64_t lsn, char buf[PGP_LSN_BUFSZ])
{
    return snprintf(buf, PGP_LSN_BUFSZ, "%" PRIX32 "/%" PRIX32, (uint32_t)(lsn >> 32),
                    (uint32_t)lsn);
}

int
pgp_histfile_name(uint32_t tli, char buf[PGP_HISTFILE_BUFSZ])
{
    return snprintf(buf, PGP_HISTFILE_BUFSZ, "%08" PRIX32 ".history", tli);
}

int64_t
pgp_time_from_unix_us(int64_t unix_us)
{
    if (unix_us < INT64_MIN + PGP_EPOCH_DIFF_US)
        return INT64_MIN;
    return unix_us - PGP_EPOCH_DIFF_US;
}

int64_t
pgp_time_to_unix_us(int64_t pg_us)
{
    if (pg_us > INT64_MAX - PGP_EPOCH_DIFF_US)
        return INT64_MAX;
    return pg_us + PGP_EPOCH_DIFF_US;
}

int64_t
pgp_now(void)
{
    return pgp_time_from_unix_us((int64_t)clock_unix_us());
}

/* Case-insensitive: is s[0..len) a non-empty prefix of word, of at least min bytes? */
static bool
prefix_of(const char *s, size_t len, const char *word, size_t min)
{
    size_t wl = strlen(word);

    if (len < min || len > wl)
        return false;
    return strncasecmp(s, word, len) == 0;
}

bool
pgp_parse_bool(const char *s, size_t len, bool *out)
{
    if (len == 0)
        return false;
    switch (s[0]) {
    case 't':
    case 'T':
        if (prefix_of(s, len, "true", 1)) {
            *out = true;
            return true;
        }
        break;
    case 'f':
    case 'F':
        if (prefix_of(s, len, "false", 1)) {
            *out = false;
            return true;
        }
        break;
    case 'y':
    case 'Y':
        if (prefix_of(s, len, "yes", 1)) {
            *out = true;
            return true;
        }
        break;
    case 'n':
    case 'N':
        if (prefix_of(s, len, "no", 1)) {
            *out = false;
            return true;
        }
        break;
    case 'o':
    case 'O':
        /* "o" alone is ambiguous */
        if (prefix_of(s, len, "on", 2)) {
            *out = true;
            return true;
        }
        if (prefix_of(s, len, "off", 2)) {
            *out = false;
            return true;
        }
        break;
    case '1':
    case '0':
        if (len == 1) {
            *out = s[0] == '1';
            return true;
        }
        break;
    default:
        break;
    }
    return false;
}

int
pgp_slot_name_check(const char *name, struct pgp_err *e)
{
    char ex[72];
    size_t n = strlen(name);

    excerpt(ex, sizeof(ex), name, n, 64);
    if (n == 0) {
        pgp_err_set(e, false, PGP_SQLSTATE_INVALID_NAME, "replication slot name \"\" is too short");
        return -EINVAL;
    }
    if (n > PGP_NAME_MAX) {
        pgp_err_set(e, false, PGP_SQLSTATE_NAME_TOO_LONG,
                    "replication slot name \"%s\" is too long", ex);
        return -EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) {
            pgp_err_set(e, false, PGP_SQLSTATE_INVALID_NAME,
                        "replication slot name \"%s\" contains invalid character (only lower "
                        "case letters, numbers, and the underscore character are allowed)",
                        ex);
            return -EINVAL;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Frontend: the initial packet                                                              */

static int
startup_params(struct cursor *c, struct pgp_initial *out, struct pgp_err *e)
{
    for (;;) {
        const char *name, *value;
        char ex[48];

        if (!cur_get_cstr(c, &name))
            return err_proto(e, "invalid startup packet layout: expected terminator as last byte");
        if (name[0] == '\0') {
            if (cur_left(c) != 0)
                return err_proto(e,
                                 "invalid startup packet layout: expected terminator as last byte");
            return 0;
        }
        if (!cur_get_cstr(c, &value)) {
            excerpt(ex, sizeof(ex), name, strlen(name), 40);
            pgp_err_set(e, true, PGP_SQLSTATE_PROTOCOL_VIOLATION,
                        "invalid startup packet layout: parameter \"%s\" has no value", ex);
            return -EPROTO;
        }
        if (out->nparams == PGP_MAX_STARTUP_PARAMS) {
            pgp_err_set(e, true, PGP_SQLSTATE_PROTOCOL_VIOLATION,
                        "too many parameters in startup packet (at most %d)",
                        PGP_MAX_STARTUP_PARAMS);
            return -EPROTO;
        }
        out->params[out->nparams].name = name;
        out->params[out->nparams].value = value;
        out->nparams++;
        if (strcmp(name, "user") == 0)
            out->user = value;
        else if (strcmp(name, "database") == 0)
            out->database = value;
        else if (strcmp(name, "options") == 0)
            out->options = value;
        else if (strcmp(name, "application_name") == 0)
            out->application_name = value;
        else if (strcmp(name, "replication") == 0)
            out->replication_raw = value;
    }
}

int
pgp_parse_initial(const uint8_t *buf, size_t len, struct pgp_initial *out, struct pgp_err *e)
{
    struct cursor c = cur_init(buf, len);
    struct cursor body;
    const uint8_t *p;
    uint32_t plen, code;
    int rc;

    memset(out, 0, sizeof(*out));
    if (!cur_get_u32be(&c, &plen))
        return 0;
    if (plen < 8 || plen - 4 > PGP_MAX_STARTUP_LEN) {
        pgp_err_set(e, true, PGP_SQLSTATE_PROTOCOL_VIOLATION,
                    "invalid length of startup packet: %" PRIu32 " (must be 8 to %u)", plen,
                    PGP_MAX_STARTUP_LEN + 4);
        return -EMSGSIZE;
    }
    if (!cur_get_bytes(&c, plen - 4, &p))
        return 0;
    body = cur_init(p, plen - 4);
    if (!cur_get_u32be(&body, &code))
        return err_proto(e, "startup packet too short");
    out->code = code;

    switch (code) {
    case PGP_SSL_REQUEST:
    case PGP_GSSENC_REQUEST:
        if (plen != 8) {
            pgp_err_set(e, true, PGP_SQLSTATE_PROTOCOL_VIOLATION,
                        "invalid length of %s: %" PRIu32 " (must be 8)",
                        code == PGP_SSL_REQUEST ? "SSLRequest" : "GSSENCRequest", plen);
            return -EPROTO;
        }
        out->kind = code == PGP_SSL_REQUEST ? PGP_INITIAL_SSL : PGP_INITIAL_GSSENC;
        return (int)plen;
    case PGP_CANCEL_REQUEST:
        if (plen != 16 || !cur_get_u32be(&body, &out->cancel_pid) ||
            !cur_get_u32be(&body, &out->cancel_key)) {
            pgp_err_set(e, true, PGP_SQLSTATE_PROTOCOL_VIOLATION,
                        "invalid length of CancelRequest: %" PRIu32 " (must be 16)", plen);
            return -EPROTO;
        }
        out->kind = PGP_INITIAL_CANCEL;
        return (int)plen;
    case PGP_PROTOCOL_3_0:
        break;
    default:
        if ((code >> 16) == 1234)
            pgp_err_set(e, true, PGP_SQLSTATE_PROTOCOL_VIOLATION,
                        "unsupported startup request code 1234/%" PRIu32, code & 0xffff);
        else
            pgp_err_set(e, true, PGP_SQLSTATE_FEATURE_NOT_SUPPORTED,
                        "unsupported frontend protocol %" PRIu32 ".%" PRIu32
                        ": server supports 3.0 to 3.0",
                        code >> 16, code & 0xffff);
        return -ENOTSUP;
    }

    out->kind = PGP_INITIAL_STARTUP;
    rc = startup_params(&body, out, e);
    if (rc < 0)
        return rc;
    if (out->user == NULL || out->user[0] == '\0') {
        pgp_err_set(e, true, PGP_SQLSTATE_INVALID_AUTHORIZATION,
                    "no PostgreSQL user name specified in startup packet");
        return -EINVAL;
    }
    if (out->replication_raw != NULL) {
        bool on;

        if (strcmp(out->replication_raw, "database") == 0) {
            out->replication = PGP_REPL_DATABASE;
        } else if (pgp_parse_bool(out->replication_raw, strlen(out->replication_raw), &on)) {
            out->replication = on ? PGP_REPL_PHYSICAL : PGP_REPL_NONE;
        } else {
            char ex[48];

            excerpt(ex, sizeof(ex), out->replication_raw, strlen(out->replication_raw), 40);
            pgp_err_set(e, true, PGP_SQLSTATE_INVALID_PARAMETER_VALUE,
                        "invalid value for parameter \"replication\": \"%s\" (valid values are "
                        "\"false\", 0, \"true\", 1, \"database\")",
                        ex);
            return -EINVAL;
        }
    }
    return (int)plen;
}

const char *
pgp_initial_param(const struct pgp_initial *in, const char *name)
{
    const char *v = NULL;

    for (size_t i = 0; i < in->nparams; i++) {
        if (strcmp(in->params[i].name, name) == 0)
            v = in->params[i].value;
    }
    return v;
}

/* ---------------------------------------------------------------------------------------- */
/* Frontend: regular messages                                                                */

static int
standby_status(struct cursor *c, struct pgp_standby_status *st)
{
    uint64_t t;
    uint8_t rr;

    if (!cur_get_u64be(c, &st->write) || !cur_get_u64be(c, &st->flush) ||
        !cur_get_u64be(c, &st->apply) || !cur_get_u64be(c, &t) || !cur_get_u8(c, &rr))
        return -EPROTO;
    st->send_time = (int64_t)t;
    st->reply_requested = rr != 0;
    return 0;
}

static int
hs_feedback(struct cursor *c, struct pgp_hs_feedback *hs)
{
    uint64_t t;

    if (!cur_get_u64be(c, &t) || !cur_get_u32be(c, &hs->xmin) ||
        !cur_get_u32be(c, &hs->xmin_epoch) || !cur_get_u32be(c, &hs->catalog_xmin) ||
        !cur_get_u32be(c, &hs->catalog_epoch))
        return -EPROTO;
    hs->send_time = (int64_t)t;
    return 0;
}

static const char *
printable_type(uint8_t t, char buf[8])
{
    if (t >= 0x20 && t < 0x7f)
        snprintf(buf, 8, "'%c'", t);
    else
        snprintf(buf, 8, "0x%02X", t);
    return buf;
}

int
pgp_parse_standby_copydata(const uint8_t *p, size_t len, struct pgp_standby_msg *out,
                           struct pgp_err *e)
{
    struct cursor c = cur_init(p, len);
    uint8_t kind;
    char tb[8];
    int rc;

    memset(out, 0, sizeof(*out));
    if (!cur_get_u8(&c, &kind))
        return err_proto(e, "empty CopyData message from standby");
    switch (kind) {
    case 'r':
        if (len != PGP_STANDBY_STATUS_LEN) {
            pgp_err_set(e, true, PGP_SQLSTATE_PROTOCOL_VIOLATION,
                        "invalid standby status update ('r'): %zu bytes, expected %d", len,
                        PGP_STANDBY_STATUS_LEN);
            return -EPROTO;
        }
        rc = standby_status(&c, &out->status);
        break;
    case 'h':
        if (len != PGP_HS_FEEDBACK_LEN) {
            pgp_err_set(e, true, PGP_SQLSTATE_PROTOCOL_VIOLATION,
                        "invalid hot standby feedback ('h'): %zu bytes, expected %d", len,
                        PGP_HS_FEEDBACK_LEN);
            return -EPROTO;
        }
        rc = hs_feedback(&c, &out->hs);
        break;
    default:
        pgp_err_set(e, true, PGP_SQLSTATE_PROTOCOL_VIOLATION,
                    "unexpected standby message type %s in CopyData", printable_type(kind, tb));
        return -EPROTO;
    }
    if (rc < 0 || cur_left(&c) != 0)
        return err_proto(e, "internal error decoding a standby message");
    out->kind = (char)kind;
    return 0;
}

int
pgp_parse_sasl_initial(const uint8_t *p, size_t len, const char **mech, const uint8_t **data,
                       int32_t *data_len, struct pgp_err *e)
{
    struct cursor c = cur_init(p, len);
    uint32_t n;

    if (!cur_get_cstr(&c, mech) || !cur_get_u32be(&c, &n))
        return err_proto(e, "malformed SASLInitialResponse: truncated");
    if (n == UINT32_MAX) {
        *data = NULL;
        *data_len = -1;
    } else if (n > INT32_MAX || !cur_get_bytes(&c, n, data)) {
        return err_proto(e, "malformed SASLInitialResponse: data longer than message");
    } else {
        *data_len = (int32_t)n;
    }
    if (cur_left(&c) != 0)
        return err_proto(e, "malformed SASLInitialResponse: trailing bytes");
    return 0;
}

int
pgp_parse_primary_copydata(const uint8_t *p, size_t len, struct pgp_primary_msg *out,
                           struct pgp_err *e)
{
    struct cursor c = cur_init(p, len);
    uint64_t t;
    uint8_t kind, rr;
    char tb[8];

    memset(out, 0, sizeof(*out));
    if (!cur_get_u8(&c, &kind))
        return err_proto(e, "empty CopyData message from walsender");
    switch (kind) {
    case 'w':
        if (!cur_get_u64be(&c, &out->data_start) || !cur_get_u64be(&c, &out->wal_end) ||
            !cur_get_u64be(&c, &t)) {
            pgp_err_set(e, true, PGP_SQLSTATE_PROTOCOL_VIOLATION,
                        "invalid XLogData ('w'): %zu bytes, header needs %d", len,
                        PGP_XLOGDATA_INNER_HDR);
            return -EPROTO;
        }
        out->send_time = (int64_t)t;
        out->data_len = cur_left(&c);
        if (!cur_get_bytes(&c, out->data_len, &out->data))
            return err_proto(e, "internal error decoding XLogData");
        break;
    case 'k':
        if (len != PGP_KEEPALIVE_LEN || !cur_get_u64be(&c, &out->wal_end) ||
            !cur_get_u64be(&c, &t) || !cur_get_u8(&c, &rr)) {
            pgp_err_set(e, true, PGP_SQLSTATE_PROTOCOL_VIOLATION,
                        "invalid keepalive ('k'): %zu bytes, expected %d", len, PGP_KEEPALIVE_LEN);
            return -EPROTO;
        }
        out->send_time = (int64_t)t;
        out->reply_requested = rr != 0;
        break;
    default:
        pgp_err_set(e, true, PGP_SQLSTATE_PROTOCOL_VIOLATION,
                    "unexpected walsender message type %s in CopyData", printable_type(kind, tb));
        return -EPROTO;
    }
    out->kind = (char)kind;
    return 0;
}

int
pgp_parse_fe(const uint8_t *buf, size_t len, struct pgp_fe_msg *out, struct pgp_err *e)
{
    struct cursor c = cur_init(buf, len);
    uint8_t type;
    uint32_t mlen, min, max;
    const uint8_t *body;
    char tb[8];
    int rc;

    memset(out, 0, sizeof(*out));
    if (!cur_get_u8(&c, &type))
        return 0;
    out->type = (char)type;
    switch (type) {
    case 'Q':
        min = 5;
        max = PGP_MAX_QUERY_LEN;
        break;
    case 'd':
        min = 5;
        max = PGP_MAX_MSG_LEN;
        break;
    case 'c':
    case 'X':
        min = 4;
        max = 4;
        break;
    case 'p':
        min = 4;
        max = PGP_MAX_MSG_LEN;
        break;
    case 'P':
    case 'B':
    case 'E':
    case 'D':
    case 'C':
    case 'H':
    case 'S':
        if (cur_get_u32be(&c, &mlen) && mlen >= 4)
            out->msg_len = (size_t)mlen + 1;
        pgp_err_set(e, true, PGP_SQLSTATE_PROTOCOL_VIOLATION,
                    "extended query protocol not supported in a replication connection "
                    "(message type %s)",
                    printable_type(type, tb));
        return -ENOTSUP;
    case 'F':
        if (cur_get_u32be(&c, &mlen) && mlen >= 4)
            out->msg_len = (size_t)mlen + 1;
        pgp_err_set(e, true, PGP_SQLSTATE_PROTOCOL_VIOLATION,
                    "fastpath function calls not supported in a replication connection");
        return -ENOTSUP;
    default:
        pgp_err_set(e, true, PGP_SQLSTATE_PROTOCOL_VIOLATION, "invalid frontend message type %s",
                    printable_type(type, tb));
        return -EPROTO;
    }

    if (!cur_get_u32be(&c, &mlen))
        return 0;
    if (mlen < 4) {
        pgp_err_set(e, true, PGP_SQLSTATE_PROTOCOL_VIOLATION,
                    "invalid message length %" PRIu32 " for message type %s (less than 4)", mlen,
                    printable_type(type, tb));
        return -EPROTO;
    }
    if (mlen > max) {
        pgp_err_set(e, true, PGP_SQLSTATE_PROTOCOL_VIOLATION,
                    "message type %s declares length %" PRIu32 ", over the limit of %" PRIu32,
                    printable_type(type, tb), mlen, max);
        return -EMSGSIZE;
    }
    if (mlen < min) {
        pgp_err_set(e, true, PGP_SQLSTATE_PROTOCOL_VIOLATION,
                    "invalid message length %" PRIu32 " for message type %s (minimum %" PRIu32 ")",
                    mlen, printable_type(type, tb), min);
        return -EPROTO;
    }
    out->msg_len = (size_t)mlen + 1;
    if (!cur_get_bytes(&c, mlen - 4, &body))
        return 0;
    out->body = body;
    out->body_len = mlen - 4;

    switch (type) {
    case 'Q': {
        const uint8_t *nul = memchr(body, '\0', out->body_len);

        if (nul == NULL || (size_t)(nul - body) != out->body_len - 1)
            return err_proto(e, "invalid Query message: the text must end with its only NUL byte");
        out->query = (const char *)body;
        out->query_len = out->body_len - 1;
        break;
    }
    case 'd':
        rc = pgp_parse_standby_copydata(body, out->body_len, &out->copy, e);
        if (rc < 0)
            return rc;
        break;
    default:
        break;
    }
    return (int)out->msg_len;
}

/* ---------------------------------------------------------------------------------------- */
/* Replication commands                                                                      */

struct lex {
    const char *s;
    size_t len;
    size_t pos;
    const char *cmd; /* command keyword, for messages */
    struct pgp_err *e;
};

/* The replication command scanner's whitespace (repl_scanner.l: [ \t\n\r\f], no \v, so not
 * wm_is_space): what PostgreSQL would skip, and nothing more. */
static bool
repl_is_space(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f';
}

static bool
is_ident_start(char ch)
{
    unsigned char u = (unsigned char)ch;

    return (u >= 'A' && u <= 'Z') || (u >= 'a' && u <= 'z') || u == '_' || u >= 0x80;
}

static bool
is_ident_cont(char ch)
{
    return is_ident_start(ch) || (ch >= '0' && ch <= '9') || ch == '$';
}

static void
skip_ws(struct lex *lx)
{
    while (lx->pos < lx->len && repl_is_space(lx->s[lx->pos]))
        lx->pos++;
}

/* Length of the unquoted word at the current position (after whitespace), 0 if none. */
static size_t
peek_word(struct lex *lx)
{
    size_t n = 0;

    skip_ws(lx);
    if (lx->pos < lx->len && is_ident_start(lx->s[lx->pos])) {
        n = 1;
        while (lx->pos + n < lx->len && is_ident_cont(lx->s[lx->pos + n]))
            n++;
    }
    return n;
}

/* Consumes the keyword kw (case-insensitive, whole word) if it is next. */
static bool
accept_kw(struct lex *lx, const char *kw)
{
    size_t n = peek_word(lx);

    if (n == 0 || n != strlen(kw) || strncasecmp(lx->s + lx->pos, kw, n) != 0)
        return false;
    lx->pos += n;
    return true;
}

static bool
accept_char(struct lex *lx, char ch)
{
    skip_ws(lx);
    if (lx->pos < lx->len && lx->s[lx->pos] == ch) {
        lx->pos++;
        return true;
    }
    return false;
}

/* Describes what is at the current position: "\"excerpt\"" or "end of command". */
static const char *
found(struct lex *lx, char *buf, size_t bufsz)
{
    size_t n = 0;
    char ex[48];

    skip_ws(lx);
    if (lx->pos >= lx->len)
        return "end of command";
    while (lx->pos + n < lx->len && !repl_is_space(lx->s[lx->pos + n]))
        n++;
    excerpt(ex, sizeof(ex), lx->s + lx->pos, n, 32);
    snprintf(buf, bufsz, "\"%s\"", ex);
    return buf;
}

static int
syntax_error(struct lex *lx, const char *expected)
{
    char fb[64];

    pgp_err_set(lx->e, false, PGP_SQLSTATE_SYNTAX_ERROR,
                "syntax error in %s: expected %s, found %s", lx->cmd, expected,
                found(lx, fb, sizeof(fb)));
    return -EINVAL;
}

/*
 * An identifier: a "quoted" one verbatim (PG15's scanner has no "" escape inside), or an
 * unquoted word folded to lower case.  At most PGP_NAME_MAX bytes.
 */
static int
scan_ident(struct lex *lx, char *out, size_t outsz, const char *what)
{
    const char *start;
    size_t n;
    bool quoted = false;
    char ex[48];

    skip_ws(lx);
    if (lx->pos < lx->len && lx->s[lx->pos] == '"') {
        quoted = true;
        const char *q = memchr(lx->s + lx->pos + 1, '"', lx->len - lx->pos - 1);

        if (q == NULL) {
            pgp_err_set(lx->e, false, PGP_SQLSTATE_SYNTAX_ERROR,
                        "syntax error in %s: unterminated quoted identifier", lx->cmd);
            return -EINVAL;
        }
        start = lx->s + lx->pos + 1;
        n = (size_t)(q - start);
        if (n == 0) {
            pgp_err_set(lx->e, false, PGP_SQLSTATE_SYNTAX_ERROR,
                        "syntax error in %s: zero-length delimited identifier", lx->cmd);
            return -EINVAL;
        }
        lx->pos += n + 2;
    } else {
        n = peek_word(lx);
        if (n == 0)
            return syntax_error(lx, what);
        start = lx->s + lx->pos;
        lx->pos += n;
    }
    if (n > PGP_NAME_MAX || n >= outsz) {
        excerpt(ex, sizeof(ex), start, n, 32);
        pgp_err_set(lx->e, false, PGP_SQLSTATE_SYNTAX_ERROR,
                    "syntax error in %s: %s \"%s\" is longer than %d bytes", lx->cmd, what, ex,
                    PGP_NAME_MAX);
        return -EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        char ch = start[i];

        if (!quoted && ch >= 'A' && ch <= 'Z')
            ch = (char)(ch - 'A' + 'a');
        out[i] = ch;
    }
    out[n] = '\0';
    return 0;
}

/* An unsigned decimal constant (repl_scanner.l's UCONST); *overflow when above UINT32_MAX. */
static bool
scan_uconst(struct lex *lx, uint32_t *v, bool *overflow)
{
    uint64_t x = 0;
    size_t n = 0;

    skip_ws(lx);
    *overflow = false;
    while (lx->pos + n < lx->len && lx->s[lx->pos + n] >= '0' && lx->s[lx->pos + n] <= '9') {
        x = x * 10 + (uint64_t)(lx->s[lx->pos + n] - '0');
        if (x > UINT32_MAX) {
            *overflow = true;
            x = UINT32_MAX;
        }
        n++;
    }
    if (n == 0)
        return false;
    /* digits glued to letters (e.g. "2abc") are not a number */
    if (lx->pos + n < lx->len && is_ident_cont(lx->s[lx->pos + n]))
        return false;
    lx->pos += n;
    *v = (uint32_t)x;
    return true;
}

static int
scan_timeline(struct lex *lx, uint32_t *tli)
{
    bool overflow;

    if (!scan_uconst(lx, tli, &overflow))
        return syntax_error(lx, "a timeline ID (decimal number)");
    if (overflow) {
        pgp_err_set(lx->e, false, PGP_SQLSTATE_SYNTAX_ERROR,
                    "invalid timeline in %s: out of range (maximum 4294967295)", lx->cmd);
        return -EINVAL;
    }
    if (*tli == 0) {
        pgp_err_set(lx->e, false, PGP_SQLSTATE_SYNTAX_ERROR, "invalid timeline 0 in %s", lx->cmd);
        return -EINVAL;
    }
    return 0;
}

/* A WAL location: the whole next word (up to whitespace or ';') must be X/X. */
static int
scan_lsn(struct lex *lx, uint64_t *lsn)
{
    size_t n = 0;
    char ex[48];

    skip_ws(lx);
    while (lx->pos + n < lx->len && !repl_is_space(lx->s[lx->pos + n]) &&
           lx->s[lx->pos + n] != ';')
        n++;
    if (n == 0)
        return syntax_error(lx, "a WAL location (X/X)");
    if (pgp_lsn_parse(lx->s + lx->pos, n, lsn) < 0) {
        excerpt(ex, sizeof(ex), lx->s + lx->pos, n, 32);
        pgp_err_set(lx->e, false, PGP_SQLSTATE_SYNTAX_ERROR,
                    "invalid WAL location \"%s\" in %s: expected X/X with 1 to 8 hexadecimal "
                    "digits on each side",
                    ex, lx->cmd);
        return -EINVAL;
    }
    lx->pos += n;
    return 0;
}

/* Optional ';', then nothing but whitespace. */
static int
expect_end(struct lex *lx)
{
    (void)accept_char(lx, ';');
    skip_ws(lx);
    if (lx->pos != lx->len)
        return syntax_error(lx, "end of command");
    return 0;
}

/* SHOW's var_name: IDENT ('.' IDENT)*. */
static int
scan_varname(struct lex *lx, char *out, size_t outsz)
{
    size_t used = 0;
    char part[PGP_NAME_MAX + 1];
    int rc;

    for (;;) {
        size_t n;

        rc = scan_ident(lx, part, sizeof(part), "a variable name");
        if (rc < 0)
            return rc;
        n = strlen(part);
        if (used + n + 1 > outsz) {
            pgp_err_set(lx->e, false, PGP_SQLSTATE_SYNTAX_ERROR,
                        "syntax error in %s: variable name longer than %d bytes", lx->cmd,
                        PGP_VARNAME_MAX);
            return -EINVAL;
        }
        memcpy(out + used, part, n + 1);
        used += n;
        if (!accept_char(lx, '.'))
            return 0;
        if (used + 1 >= outsz)
            return syntax_error(lx, "a shorter variable name");
        out[used++] = '.';
        out[used] = '\0';
    }
}

/* One value of a generic option: none, IDENT, 'SCONST' or UCONST (repl_gram.y). */
struct optval {
    enum { OV_NONE, OV_STRING, OV_INT } kind;
    char str[PGP_NAME_MAX + 1];
    uint32_t num;
};

static int
scan_sconst(struct lex *lx, char *out, size_t outsz)
{
    size_t o = 0;

    lx->pos++; /* opening quote */
    for (;;) {
        char ch;

        if (lx->pos >= lx->len) {
            pgp_err_set(lx->e, false, PGP_SQLSTATE_SYNTAX_ERROR,
                        "syntax error in %s: unterminated quoted string", lx->cmd);
            return -EINVAL;
        }
        ch = lx->s[lx->pos++];
        if (ch == '\'') {
            if (lx->pos < lx->len && lx->s[lx->pos] == '\'')
                lx->pos++; /* '' is a quote */
            else
                break;
        }
        if (o + 1 >= outsz) {
            pgp_err_set(lx->e, false, PGP_SQLSTATE_SYNTAX_ERROR,
                        "syntax error in %s: option value longer than %d bytes", lx->cmd,
                        PGP_NAME_MAX);
            return -EINVAL;
        }
        out[o++] = ch;
    }
    out[o] = '\0';
    return 0;
}

static int
scan_optval(struct lex *lx, struct optval *v)
{
    bool overflow;

    v->kind = OV_NONE;
    skip_ws(lx);
    if (lx->pos >= lx->len || lx->s[lx->pos] == ',' || lx->s[lx->pos] == ')')
        return 0;
    if (lx->s[lx->pos] == '\'') {
        v->kind = OV_STRING;
        return scan_sconst(lx, v->str, sizeof(v->str));
    }
    if (lx->s[lx->pos] >= '0' && lx->s[lx->pos] <= '9') {
        if (!scan_uconst(lx, &v->num, &overflow))
            return syntax_error(lx, "an option value");
        v->kind = OV_INT;
        if (overflow)
            v->num = UINT32_MAX;
        return 0;
    }
    v->kind = OV_STRING;
    return scan_ident(lx, v->str, sizeof(v->str), "an option value");
}

/* defGetBoolean(): no value, 0/1, or true/false/on/off (case-insensitive, exact). */
static int
option_bool(struct lex *lx, const char *opt, const struct optval *v, bool *out)
{
    if (v->kind == OV_NONE) {
        *out = true;
        return 0;
    }
    if (v->kind == OV_INT && v->num <= 1) {
        *out = v->num == 1;
        return 0;
    }
    if (v->kind == OV_STRING) {
        if (strcasecmp(v->str, "true") == 0 || strcasecmp(v->str, "on") == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(v->str, "false") == 0 || strcasecmp(v->str, "off") == 0) {
            *out = false;
            return 0;
        }
    }
    pgp_err_set(lx->e, false, PGP_SQLSTATE_SYNTAX_ERROR, "%s requires a Boolean value", opt);
    return -EINVAL;
}

static int
logical_only_option(struct lex *lx, const char *opt)
{
    pgp_err_set(lx->e, false, PGP_SQLSTATE_SYNTAX_ERROR,
                "%s option \"%s\" is only valid for logical replication slots", lx->cmd, opt);
    return -EINVAL;
}

static int
create_slot_options(struct lex *lx, struct pgp_cmd *out)
{
    bool reserve_given = false;
    int rc;

    if (accept_char(lx, '(')) {
        /* generic_option_list: at least one option */
        do {
            char opt[PGP_NAME_MAX + 1];
            struct optval v;

            rc = scan_ident(lx, opt, sizeof(opt), "an option name");
            if (rc < 0)
                return rc;
            rc = scan_optval(lx, &v);
            if (rc < 0)
                return rc;
            if (strcmp(opt, "reserve_wal") == 0) {
                if (reserve_given) {
                    pgp_err_set(lx->e, false, PGP_SQLSTATE_SYNTAX_ERROR,
                                "conflicting or redundant options in %s: reserve_wal", lx->cmd);
                    return -EINVAL;
                }
                reserve_given = true;
                rc = option_bool(lx, opt, &v, &out->reserve_wal);
                if (rc < 0)
                    return rc;
            } else if (strcmp(opt, "snapshot") == 0 || strcmp(opt, "two_phase") == 0) {
                return logical_only_option(lx, opt);
            } else {
                char ex[48];

                excerpt(ex, sizeof(ex), opt, strlen(opt), 32);
                pgp_err_set(lx->e, false, PGP_SQLSTATE_SYNTAX_ERROR,
                            "unrecognized option \"%s\" in %s", ex, lx->cmd);
                return -EINVAL;
            }
        } while (accept_char(lx, ','));
        if (!accept_char(lx, ')'))
            return syntax_error(lx, "',' or ')'");
        return 0;
    }

    /* create_slot_legacy_opt_list */
    for (;;) {
        if (accept_kw(lx, "RESERVE_WAL")) {
            if (reserve_given) {
                pgp_err_set(lx->e, false, PGP_SQLSTATE_SYNTAX_ERROR,
                            "conflicting or redundant options in %s: RESERVE_WAL", lx->cmd);
                return -EINVAL;
            }
            reserve_given = true;
            out->reserve_wal = true;
        } else if (accept_kw(lx, "EXPORT_SNAPSHOT") || accept_kw(lx, "NOEXPORT_SNAPSHOT") ||
                   accept_kw(lx, "USE_SNAPSHOT")) {
            return logical_only_option(lx, "snapshot");
        } else if (accept_kw(lx, "TWO_PHASE")) {
            return logical_only_option(lx, "two_phase");
        } else {
            return 0;
        }
    }
}

static int
logical_refused(struct lex *lx)
{
    pgp_err_set(lx->e, false, PGP_SQLSTATE_FEATURE_NOT_SUPPORTED,
                "logical replication is not supported by walmirror (%s ... LOGICAL)", lx->cmd);
    return -ENOTSUP;
}

static int
parse_create_slot(struct lex *lx, struct pgp_cmd *out)
{
    int rc;

    rc = scan_ident(lx, out->slot, sizeof(out->slot), "a slot name");
    if (rc < 0)
        return rc;
    out->has_slot = true;
    out->temporary = accept_kw(lx, "TEMPORARY");
    if (accept_kw(lx, "LOGICAL"))
        return logical_refused(lx);
    if (!accept_kw(lx, "PHYSICAL"))
        return syntax_error(lx, "TEMPORARY, PHYSICAL or LOGICAL");
    rc = create_slot_options(lx, out);
    if (rc < 0)
        return rc;
    return expect_end(lx);
}

static int
parse_start_replication(struct lex *lx, struct pgp_cmd *out)
{
    int rc;

    if (accept_kw(lx, "SLOT")) {
        rc = scan_ident(lx, out->slot, sizeof(out->slot), "a slot name");
        if (rc < 0)
            return rc;
        out->has_slot = true;
    }
    if (accept_kw(lx, "LOGICAL"))
        return logical_refused(lx);
    out->physical = accept_kw(lx, "PHYSICAL");
    rc = scan_lsn(lx, &out->lsn);
    if (rc < 0)
        return rc;
    if (accept_kw(lx, "TIMELINE")) {
        rc = scan_timeline(lx, &out->timeline);
        if (rc < 0)
            return rc;
    }
    return expect_end(lx);
}

int
pgp_parse_command(const char *s, size_t len, struct pgp_cmd *out, struct pgp_err *e)
{
    struct lex lx = {.s = s, .len = len, .pos = 0, .cmd = "replication command", .e = e};
    char ex[48];
    size_t n;
    int rc;

    memset(out, 0, sizeof(*out));
    if (memchr(s, '\0', len) != NULL) {
        pgp_err_set(e, false, PGP_SQLSTATE_SYNTAX_ERROR, "replication command contains a NUL byte");
        return -EINVAL;
    }

    if (accept_kw(&lx, "IDENTIFY_SYSTEM")) {
        out->kind = PGP_CMD_IDENTIFY_SYSTEM;
        out->tag = lx.cmd = "IDENTIFY_SYSTEM";
        return expect_end(&lx);
    }
    if (accept_kw(&lx, "TIMELINE_HISTORY")) {
        out->kind = PGP_CMD_TIMELINE_HISTORY;
        out->tag = lx.cmd = "TIMELINE_HISTORY";
        rc = scan_timeline(&lx, &out->timeline);
        return rc < 0 ? rc : expect_end(&lx);
    }
    if (accept_kw(&lx, "SHOW")) {
        out->kind = PGP_CMD_SHOW;
        out->tag = lx.cmd = "SHOW";
        rc = scan_varname(&lx, out->name, sizeof(out->name));
        return rc < 0 ? rc : expect_end(&lx);
    }
    if (accept_kw(&lx, "READ_REPLICATION_SLOT")) {
        out->kind = PGP_CMD_READ_REPLICATION_SLOT;
        out->tag = lx.cmd = "READ_REPLICATION_SLOT";
        out->has_slot = true;
        rc = scan_ident(&lx, out->slot, sizeof(out->slot), "a slot name");
        return rc < 0 ? rc : expect_end(&lx);
    }
    if (accept_kw(&lx, "CREATE_REPLICATION_SLOT")) {
        out->kind = PGP_CMD_CREATE_REPLICATION_SLOT;
        out->tag = lx.cmd = "CREATE_REPLICATION_SLOT";
        return parse_create_slot(&lx, out);
    }
    if (accept_kw(&lx, "DROP_REPLICATION_SLOT")) {
        out->kind = PGP_CMD_DROP_REPLICATION_SLOT;
        out->tag = lx.cmd = "DROP_REPLICATION_SLOT";
        out->has_slot = true;
        rc = scan_ident(&lx, out->slot, sizeof(out->slot), "a slot name");
        if (rc < 0)
            return rc;
        out->wait = accept_kw(&lx, "WAIT");
        return expect_end(&lx);
    }
    if (accept_kw(&lx, "START_REPLICATION")) {
        out->kind = PGP_CMD_START_REPLICATION;
        out->tag = lx.cmd = "START_REPLICATION";
        return parse_start_replication(&lx, out);
    }
    if (accept_kw(&lx, "BASE_BACKUP")) {
        pgp_err_set(e, false, PGP_SQLSTATE_FEATURE_NOT_SUPPORTED,
                    "replication command BASE_BACKUP is not supported by walmirror (take base "
                    "backups from the primary)");
        return -ENOTSUP;
    }

    skip_ws(&lx);
    if (lx.pos == lx.len) {
        pgp_err_set(e, false, PGP_SQLSTATE_FEATURE_NOT_SUPPORTED,
                    "empty query: walmirror accepts only replication commands");
        return -ENOTSUP;
    }
    n = peek_word(&lx);
    if (n == 0)
        n = 1;
    excerpt(ex, sizeof(ex), lx.s + lx.pos, n, 32);
    pgp_err_set(e, false, PGP_SQLSTATE_FEATURE_NOT_SUPPORTED,
                "\"%s\" is not a supported replication command: cannot execute SQL commands in "
                "WAL sender for physical replication",
                ex);
    return -ENOTSUP;
}

/* ---------------------------------------------------------------------------------------- */
/* Backend message builders                                                                  */

/* A message under construction: a wbuf over exactly the reserved space. */
struct msgw {
    struct wbuf w;
    bool ok;
};

static bool
long_type(char type)
{
    return type == 'T' || type == 'D' || type == 'd' || type == 'V' || type == 'E' || type == 'N' ||
           type == 'A';
}

/* Reserves 1 + 4 + body bytes and writes the type and length word. */
static int
msg_begin(struct pgp_buf *b, char type, size_t body, struct msgw *m)
{
    size_t limit = long_type(type) ? PGP_MAX_BACKEND_MSG : PGP_LIBPQ_SHORT_MSG_MAX;
    int rc;

    if (body > limit - 4)
        return -EMSGSIZE;
    rc = pgp_buf_reserve(b, 1 + 4 + body);
    if (rc < 0)
        return rc;
    m->w = wbuf_init(b->data + b->len, 1 + 4 + body);
    m->ok = wbuf_put_u8(&m->w, (uint8_t)type) && wbuf_put_u32be(&m->w, (uint32_t)(4 + body));
    return 0;
}

/* Commits the message if every write succeeded and filled the reservation exactly. */
static int
msg_end(struct pgp_buf *b, struct msgw *m)
{
    if (!m->ok || m->w.len != m->w.cap)
        return -EFAULT;
    b->len += m->w.len;
    return (int)m->w.len;
}

static void
m_u8(struct msgw *m, uint8_t v)
{
    m->ok = m->ok && wbuf_put_u8(&m->w, v);
}

static void
m_u16(struct msgw *m, uint16_t v)
{
    m->ok = m->ok && wbuf_put_u16be(&m->w, v);
}

static void
m_u32(struct msgw *m, uint32_t v)
{
    m->ok = m->ok && wbuf_put_u32be(&m->w, v);
}

static void
m_u64(struct msgw *m, uint64_t v)
{
    m->ok = m->ok && wbuf_put_u64be(&m->w, v);
}

static void
m_bytes(struct msgw *m, const void *p, size_t n)
{
    m->ok = m->ok && wbuf_put_bytes(&m->w, p, n);
}

static void
m_cstr(struct msgw *m, const char *s)
{
    m->ok = m->ok && wbuf_put_cstr(&m->w, s);
}

/* A message with no body. */
static int
put_empty(struct pgp_buf *b, char type)
{
    struct msgw m;
    int rc = msg_begin(b, type, 0, &m);

    return rc < 0 ? rc : msg_end(b, &m);
}

int
pgp_put_auth(struct pgp_buf *b, uint32_t code, const void *data, size_t len)
{
    struct msgw m;
    int rc;

    if (data == NULL && len != 0)
        return -EINVAL;
    if (len > PGP_LIBPQ_SHORT_MSG_MAX)
        return -EMSGSIZE;
    rc = msg_begin(b, 'R', 4 + len, &m);
    if (rc < 0)
        return rc;
    m_u32(&m, code);
    if (len > 0)
        m_bytes(&m, data, len);
    return msg_end(b, &m);
}

int
pgp_put_auth_ok(struct pgp_buf *b)
{
    return pgp_put_auth(b, 0, NULL, 0);
}

int
pgp_put_parameter_status(struct pgp_buf *b, const char *name, const char *value)
{
    struct msgw m;
    size_t nl, vl;
    int rc;

    if (name == NULL || value == NULL || name[0] == '\0')
        return -EINVAL;
    nl = strlen(name);
    vl = strlen(value);
    if (nl > PGP_LIBPQ_SHORT_MSG_MAX || vl > PGP_LIBPQ_SHORT_MSG_MAX)
        return -EMSGSIZE;
    rc = msg_begin(b, 'S', nl + 1 + vl + 1, &m);
    if (rc < 0)
        return rc;
    m_cstr(&m, name);
    m_cstr(&m, value);
    return msg_end(b, &m);
}

int
pgp_put_backend_key(struct pgp_buf *b, uint32_t pid, uint32_t key)
{
    struct msgw m;
    int rc = msg_begin(b, 'K', 8, &m);

    if (rc < 0)
        return rc;
    m_u32(&m, pid);
    m_u32(&m, key);
    return msg_end(b, &m);
}

int
pgp_put_ready(struct pgp_buf *b, char status)
{
    struct msgw m;
    int rc;

    if (status != 'I' && status != 'T' && status != 'E')
        return -EINVAL;
    rc = msg_begin(b, 'Z', 1, &m);
    if (rc < 0)
        return rc;
    m_u8(&m, (uint8_t)status);
    return msg_end(b, &m);
}

int
pgp_put_row_description(struct pgp_buf *b, const struct pgp_field *fields, size_t nfields)
{
    struct msgw m;
    size_t body = 2;
    int rc;

    if (nfields > PGP_MAX_COLUMNS || (fields == NULL && nfields != 0))
        return -EINVAL;
    for (size_t i = 0; i < nfields; i++) {
        size_t nl;

        if (fields[i].name == NULL)
            return -EINVAL;
        nl = strlen(fields[i].name);
        if (nl > PGP_MAX_BACKEND_MSG)
            return -EMSGSIZE;
        body += nl + 1 + 4 + 2 + 4 + 2 + 4 + 2;
        if (body > PGP_MAX_BACKEND_MSG)
            return -EMSGSIZE;
    }
    rc = msg_begin(b, 'T', body, &m);
    if (rc < 0)
        return rc;
    m_u16(&m, (uint16_t)nfields);
    for (size_t i = 0; i < nfields; i++) {
        m_cstr(&m, fields[i].name);
        m_u32(&m, 0); /* table OID */
        m_u16(&m, 0); /* attnum */
        m_u32(&m, fields[i].type_oid);
        m_u16(&m, (uint16_t)fields[i].typlen);
        m_u32(&m, (uint32_t)fields[i].typmod);
        m_u16(&m, 0); /* format: text */
    }
    return msg_end(b, &m);
}

int
pgp_put_data_row(struct pgp_buf *b, const struct pgp_value *cols, size_t ncols)
{
    struct msgw m;
    size_t body = 2;
    int rc;

    if (ncols > PGP_MAX_COLUMNS || (cols == NULL && ncols != 0))
        return -EINVAL;
    for (size_t i = 0; i < ncols; i++) {
        if (cols[i].data != NULL && cols[i].len > PGP_MAX_BACKEND_MSG)
            return -EMSGSIZE;
        body += 4 + (cols[i].data != NULL ? cols[i].len : 0);
        if (body > PGP_MAX_BACKEND_MSG)
            return -EMSGSIZE;
    }
    rc = msg_begin(b, 'D', body, &m);
    if (rc < 0)
        return rc;
    m_u16(&m, (uint16_t)ncols);
    for (size_t i = 0; i < ncols; i++) {
        if (cols[i].data == NULL) {
            m_u32(&m, UINT32_MAX); /* -1: NULL */
        } else {
            m_u32(&m, (uint32_t)cols[i].len);
            m_bytes(&m, cols[i].data, cols[i].len);
        }
    }
    return msg_end(b, &m);
}

int
pgp_put_command_complete(struct pgp_buf *b, const char *tag)
{
    struct msgw m;
    size_t tl;
    int rc;

    if (tag == NULL)
        return -EINVAL;
    tl = strlen(tag);
    if (tl > PGP_LIBPQ_SHORT_MSG_MAX)
        return -EMSGSIZE;
    rc = msg_begin(b, 'C', tl + 1, &m);
    if (rc < 0)
        return rc;
    m_cstr(&m, tag);
    return msg_end(b, &m);
}

static bool
sqlstate_ok(const char *s)
{
    if (s == NULL || strlen(s) != 5)
        return false;
    for (int i = 0; i < 5; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'Z')))
            return false;
    }
    return true;
}

static int
put_error_notice(struct pgp_buf *b, char type, const char *severity, const char *sqlstate,
                 const char *message, const char *detail, const char *hint)
{
    struct msgw m;
    size_t body;
    int rc;

    if (severity == NULL || severity[0] == '\0' || message == NULL || !sqlstate_ok(sqlstate))
        return -EINVAL;
    if (strlen(severity) > 64 || strlen(message) > PGP_MAX_BACKEND_MSG / 4 ||
        (detail != NULL && strlen(detail) > PGP_MAX_BACKEND_MSG / 4) ||
        (hint != NULL && strlen(hint) > PGP_MAX_BACKEND_MSG / 4))
        return -EMSGSIZE;
    body = 2 * (1 + strlen(severity) + 1) + 1 + 6 + 1 + strlen(message) + 1 + 1;
    if (detail != NULL)
        body += 1 + strlen(detail) + 1;
    if (hint != NULL)
        body += 1 + strlen(hint) + 1;
    rc = msg_begin(b, type, body, &m);
    if (rc < 0)
        return rc;
    m_u8(&m, 'S');
    m_cstr(&m, severity);
    m_u8(&m, 'V');
    m_cstr(&m, severity);
    m_u8(&m, 'C');
    m_cstr(&m, sqlstate);
    m_u8(&m, 'M');
    m_cstr(&m, message);
    if (detail != NULL) {
        m_u8(&m, 'D');
        m_cstr(&m, detail);
    }
    if (hint != NULL) {
        m_u8(&m, 'H');
        m_cstr(&m, hint);
    }
    m_u8(&m, 0);
    return msg_end(b, &m);
}

int
pgp_put_error(struct pgp_buf *b, const char *severity, const char *sqlstate, const char *message,
              const char *detail, const char *hint)
{
    return put_error_notice(b, 'E', severity, sqlstate, message, detail, hint);
}

int
pgp_put_notice(struct pgp_buf *b, const char *severity, const char *sqlstate, const char *message,
               const char *detail, const char *hint)
{
    return put_error_notice(b, 'N', severity, sqlstate, message, detail, hint);
}

int
pgp_put_error_from(struct pgp_buf *b, const struct pgp_err *e)
{
    if (e == NULL)
        return -EINVAL;
    return pgp_put_error(b, e->fatal ? "FATAL" : "ERROR", e->sqlstate, e->msg, NULL, NULL);
}

int
pgp_put_copy_both(struct pgp_buf *b)
{
    struct msgw m;
    int rc = msg_begin(b, 'W', 3, &m);

    if (rc < 0)
        return rc;
    m_u8(&m, 0);  /* overall format: text */
    m_u16(&m, 0); /* no columns */
    return msg_end(b, &m);
}

int
pgp_put_copy_done(struct pgp_buf *b)
{
    return put_empty(b, 'c');
}

int
pgp_put_ssl_response(struct pgp_buf *b, bool accept)
{
    uint8_t ch = accept ? 'S' : 'N';
    int rc = pgp_buf_append(b, &ch, 1);

    return rc < 0 ? rc : 1;
}

int
pgp_put_gssenc_response(struct pgp_buf *b)
{
    uint8_t ch = 'N';
    int rc = pgp_buf_append(b, &ch, 1);

    return rc < 0 ? rc : 1;
}

int
pgp_xlogdata_header(uint8_t out[PGP_XLOGDATA_HDR_LEN], uint64_t data_start, uint64_t wal_end,
                    int64_t send_time, size_t wal_len)
{
    struct wbuf w = wbuf_init(out, PGP_XLOGDATA_HDR_LEN);

    if (wal_len > PGP_MAX_BACKEND_MSG - 4 - PGP_XLOGDATA_INNER_HDR)
        return -EMSGSIZE;
    if (!wbuf_put_u8(&w, 'd') ||
        !wbuf_put_u32be(&w, (uint32_t)(4 + PGP_XLOGDATA_INNER_HDR + wal_len)) ||
        !wbuf_put_u8(&w, 'w') || !wbuf_put_u64be(&w, data_start) || !wbuf_put_u64be(&w, wal_end) ||
        !wbuf_put_u64be(&w, (uint64_t)send_time) || w.len != PGP_XLOGDATA_HDR_LEN)
        return -EFAULT;
    return PGP_XLOGDATA_HDR_LEN;
}

int
pgp_put_xlogdata_header(struct pgp_buf *b, uint64_t data_start, uint64_t wal_end, int64_t send_time,
                        size_t wal_len)
{
    uint8_t hdr[PGP_XLOGDATA_HDR_LEN];
    int rc = pgp_xlogdata_header(hdr, data_start, wal_end, send_time, wal_len);

    if (rc < 0)
        return rc;
    rc = pgp_buf_append(b, hdr, sizeof(hdr));
    return rc < 0 ? rc : PGP_XLOGDATA_HDR_LEN;
}

int
pgp_put_xlogdata(struct pgp_buf *b, uint64_t data_start, uint64_t wal_end, int64_t send_time,
                 const void *wal, size_t wal_len)
{
    uint8_t hdr[PGP_XLOGDATA_HDR_LEN];
    struct wbuf w;
    int rc;

    if (wal == NULL && wal_len != 0)
        return -EINVAL;
    rc = pgp_xlogdata_header(hdr, data_start, wal_end, send_time, wal_len);
    if (rc < 0)
        return rc;
    rc = pgp_buf_reserve(b, sizeof(hdr) + wal_len);
    if (rc < 0)
        return rc;
    w = wbuf_init(b->data + b->len, sizeof(hdr) + wal_len);
    if (!wbuf_put_bytes(&w, hdr, sizeof(hdr)) || !wbuf_put_bytes(&w, wal, wal_len))
        return -EFAULT;
    b->len += w.len;
    return (int)w.len;
}

int
pgp_put_keepalive(struct pgp_buf *b, uint64_t wal_end, int64_t send_time, bool reply_requested)
{
    struct msgw m;
    int rc = msg_begin(b, 'd', PGP_KEEPALIVE_LEN, &m);

    if (rc < 0)
        return rc;
    m_u8(&m, 'k');
    m_u64(&m, wal_end);
    m_u64(&m, (uint64_t)send_time);
    m_u8(&m, reply_requested ? 1 : 0);
    return msg_end(b, &m);
}

int
pgp_put_standby_status(struct pgp_buf *b, const struct pgp_standby_status *st)
{
    struct msgw m;
    int rc;

    if (st == NULL)
        return -EINVAL;
    rc = msg_begin(b, 'd', PGP_STANDBY_STATUS_LEN, &m);
    if (rc < 0)
        return rc;
    m_u8(&m, 'r');
    m_u64(&m, st->write);
    m_u64(&m, st->flush);
    m_u64(&m, st->apply);
    m_u64(&m, (uint64_t)st->send_time);
    m_u8(&m, st->reply_requested ? 1 : 0);
    return msg_end(b, &m);
}

int
pgp_put_hs_feedback(struct pgp_buf *b, const struct pgp_hs_feedback *hs)
{
    struct msgw m;
    int rc;

    if (hs == NULL)
        return -EINVAL;
    rc = msg_begin(b, 'd', PGP_HS_FEEDBACK_LEN, &m);
    if (rc < 0)
        return rc;
    m_u8(&m, 'h');
    m_u64(&m, (uint64_t)hs->send_time);
    m_u32(&m, hs->xmin);
    m_u32(&m, hs->xmin_epoch);
    m_u32(&m, hs->catalog_xmin);
    m_u32(&m, hs->catalog_epoch);
    return msg_end(b, &m);
}

/* ---------------------------------------------------------------------------------------- */
/* Replication result sets                                                                   */

/* Text value helper. */
static struct pgp_value
tv(const char *s)
{
    struct pgp_value v = {.data = s, .len = s != NULL ? strlen(s) : 0};
    return v;
}

/*
 * RowDescription + one DataRow + the given CommandComplete tags, all or nothing.  Returns the
 * bytes appended or a negative errno with b unchanged.
 */
static int
put_result(struct pgp_buf *b, const struct pgp_field *fields, const struct pgp_value *row,
           size_t ncols, const char *tag1, const char *tag2)
{
    size_t mark = b->len;
    int rc;

    rc = pgp_put_row_description(b, fields, ncols);
    if (rc >= 0)
        rc = pgp_put_data_row(b, row, ncols);
    if (rc >= 0)
        rc = pgp_put_command_complete(b, tag1);
    if (rc >= 0 && tag2 != NULL)
        rc = pgp_put_command_complete(b, tag2);
    if (rc < 0) {
        b->len = mark;
        return rc;
    }
    return (int)(b->len - mark);
}

int
pgp_put_identify_system(struct pgp_buf *b, uint64_t sysid, uint32_t tli, uint64_t xlogpos,
                        const char *dbname)
{
    static const struct pgp_field f[4] = {
        {"systemid", PGP_OID_TEXT, -1, -1},
        {"timeline", PGP_OID_INT4, 4, -1},
        {"xlogpos", PGP_OID_TEXT, -1, -1},
        {"dbname", PGP_OID_TEXT, -1, -1},
    };
    char sys[24], t[16], lsn[PGP_LSN_BUFSZ];
    struct pgp_value row[4];

    snprintf(sys, sizeof(sys), "%" PRIu64, sysid);
    /* walsender sends Int32GetDatum(currTLI) through pg_ltoa: a signed rendering */
    snprintf(t, sizeof(t), "%" PRId32, (int32_t)tli);
    pgp_lsn_format(xlogpos, lsn);
    row[0] = tv(sys);
    row[1] = tv(t);
    row[2] = tv(lsn);
    row[3] = tv(dbname);
    return put_result(b, f, row, 4, "IDENTIFY_SYSTEM", NULL);
}

int
pgp_put_timeline_history(struct pgp_buf *b, uint32_t tli, const void *content, size_t len)
{
    /* SendTimeLineHistory builds this RowDescription by hand, with typmod 0 */
    static const struct pgp_field f[2] = {
        {"filename", PGP_OID_TEXT, -1, 0},
        {"content", PGP_OID_TEXT, -1, 0},
    };
    char name[PGP_HISTFILE_BUFSZ];
    struct pgp_value row[2];

    if (content == NULL && len != 0)
        return -EINVAL;
    pgp_histfile_name(tli, name);
    row[0] = tv(name);
    row[1].data = content != NULL ? content : "";
    row[1].len = len;
    return put_result(b, f, row, 2, "TIMELINE_HISTORY", NULL);
}

int
pgp_put_show(struct pgp_buf *b, const char *name, const char *value)
{
    struct pgp_field f[1];
    struct pgp_value row[1];

    if (name == NULL || value == NULL)
        return -EINVAL;
    f[0].name = name;
    f[0].type_oid = PGP_OID_TEXT;
    f[0].typlen = -1;
    f[0].typmod = -1;
    row[0] = tv(value);
    return put_result(b, f, row, 1, "SHOW", NULL);
}

int
pgp_put_read_replication_slot(struct pgp_buf *b, const struct pgp_slot_info *slot)
{
    static const struct pgp_field f[3] = {
        {"slot_type", PGP_OID_TEXT, -1, -1},
        {"restart_lsn", PGP_OID_TEXT, -1, -1},
        {"restart_tli", PGP_OID_INT8, 8, -1},
    };
    char lsn[PGP_LSN_BUFSZ], t[24];
    struct pgp_value row[3] = {{NULL, 0}, {NULL, 0}, {NULL, 0}};

    if (slot != NULL) {
        row[0] = tv("physical");
        if (slot->restart_lsn != 0) {
            pgp_lsn_format(slot->restart_lsn, lsn);
            snprintf(t, sizeof(t), "%" PRIu32, slot->restart_tli);
            row[1] = tv(lsn);
            row[2] = tv(t);
        }
    }
    return put_result(b, f, row, 3, "READ_REPLICATION_SLOT", NULL);
}

int
pgp_put_create_slot(struct pgp_buf *b, const char *slot_name, uint64_t consistent_point)
{
    static const struct pgp_field f[4] = {
        {"slot_name", PGP_OID_TEXT, -1, -1},
        {"consistent_point", PGP_OID_TEXT, -1, -1},
        {"snapshot_name", PGP_OID_TEXT, -1, -1},
        {"output_plugin", PGP_OID_TEXT, -1, -1},
    };
    char lsn[PGP_LSN_BUFSZ];
    struct pgp_value row[4];

    if (slot_name == NULL)
        return -EINVAL;
    pgp_lsn_format(consistent_point, lsn);
    row[0] = tv(slot_name);
    row[1] = tv(lsn);
    row[2] = tv(NULL);
    row[3] = tv(NULL);
    return put_result(b, f, row, 4, "CREATE_REPLICATION_SLOT", NULL);
}

int
pgp_put_end_of_timeline(struct pgp_buf *b, uint32_t next_tli, uint64_t next_startpos)
{
    static const struct pgp_field f[2] = {
        {"next_tli", PGP_OID_INT8, 8, -1},
        {"next_tli_startpos", PGP_OID_TEXT, -1, -1},
    };
    char t[16], lsn[PGP_LSN_BUFSZ];
    struct pgp_value row[2];

    snprintf(t, sizeof(t), "%" PRIu32, next_tli);
    pgp_lsn_format(next_startpos, lsn);
    row[0] = tv(t);
    row[1] = tv(lsn);
    return put_result(b, f, row, 2, "START_STREAMING", "START_REPLICATION");
}
