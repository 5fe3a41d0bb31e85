/*
 * test_pgproto.c - Check suite for agent/pgproto: the walsender-side codec of PostgreSQL 15's
 * replication protocol.
 *
 * Builders are checked against hand-computed byte vectors (or, for the longer result sets,
 * against a tiny independent encoder in this file); parsers against the exact strings and
 * packets that the PG15 walreceiver, pg_receivewal and libpq send, against every strict prefix
 * of valid messages (each prefix copied into an exactly-sized heap block so that AddressSanitizer
 * sees any over-read), against oversized and malformed input, and against random bytes.
 */
#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgproto.h"

/* ---------------------------------------------------------------------------------------- */
/* Helpers                                                                                   */

/* Asserts that b holds exactly the n bytes of exp. */
static void
expect_buf(const struct pgp_buf *b, const void *exp, size_t n)
{
    ck_assert_uint_eq(b->len, n);
    ck_assert_mem_eq(b->data, exp, n);
}

/* Asserts e describes an error with this SQLSTATE and fatality, mentioning substr (if any),
 * as one printable line. */
static void
expect_err(const struct pgp_err *e, const char *sqlstate, bool fatal, const char *substr)
{
    ck_assert_str_eq(e->sqlstate, sqlstate);
    ck_assert_int_eq(e->fatal, fatal);
    ck_assert_uint_gt(strlen(e->msg), 10);
    for (const char *p = e->msg; *p != '\0'; p++)
        ck_assert_msg(*p >= 0x20 && *p < 0x7f, "non-printable byte 0x%02x in message \"%s\"",
                      (unsigned char)*p, e->msg);
    if (substr != NULL)
        ck_assert_msg(strstr(e->msg, substr) != NULL, "message \"%s\" lacks \"%s\"", e->msg,
                      substr);
}

/* A small independent big-endian encoder for expected byte vectors. */
struct enc {
    uint8_t b[4096];
    size_t n;
    size_t mstart;
};

static void
e_u8(struct enc *x, unsigned v)
{
    ck_assert_uint_lt(x->n, sizeof(x->b));
    x->b[x->n++] = (uint8_t)v;
}

static void
e_u16(struct enc *x, unsigned v)
{
    e_u8(x, (v >> 8) & 0xff);
    e_u8(x, v & 0xff);
}

static void
e_u32(struct enc *x, uint32_t v)
{
    e_u16(x, v >> 16);
    e_u16(x, v & 0xffff);
}

static void
e_raw(struct enc *x, const void *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        e_u8(x, ((const uint8_t *)p)[i]);
}

static void
e_str(struct enc *x, const char *s)
{
    e_raw(x, s, strlen(s) + 1);
}

static void
e_begin(struct enc *x, char type)
{
    e_u8(x, (uint8_t)type);
    x->mstart = x->n;
    e_u32(x, 0);
}

static void
e_end(struct enc *x)
{
    uint32_t len = (uint32_t)(x->n - x->mstart);

    x->b[x->mstart] = (uint8_t)(len >> 24);
    x->b[x->mstart + 1] = (uint8_t)(len >> 16);
    x->b[x->mstart + 2] = (uint8_t)(len >> 8);
    x->b[x->mstart + 3] = (uint8_t)len;
}

static void
e_field(struct enc *x, const char *name, uint32_t oid, int typlen, int32_t typmod)
{
    e_str(x, name);
    e_u32(x, 0);
    e_u16(x, 0);
    e_u32(x, oid);
    e_u16(x, (unsigned)(uint16_t)typlen);
    e_u32(x, (uint32_t)typmod);
    e_u16(x, 0);
}

static void
e_col(struct enc *x, const char *s)
{
    if (s == NULL) {
        e_u32(x, UINT32_MAX);
        return;
    }
    e_u32(x, (uint32_t)strlen(s));
    e_raw(x, s, strlen(s));
}

static void
e_cc(struct enc *x, const char *tag)
{
    e_begin(x, 'C');
    e_str(x, tag);
    e_end(x);
}

typedef int (*parse_fn)(const uint8_t *buf, size_t len, void *out, struct pgp_err *e);

static int
parse_fe_v(const uint8_t *buf, size_t len, void *out, struct pgp_err *e)
{
    return pgp_parse_fe(buf, len, out, e);
}

static int
parse_initial_v(const uint8_t *buf, size_t len, void *out, struct pgp_err *e)
{
    return pgp_parse_initial(buf, len, out, e);
}

/* Runs fn on a copy of buf[0..len) in a heap block of exactly len bytes. */
static int
run_exact(parse_fn fn, const uint8_t *buf, size_t len, void *out, struct pgp_err *e)
{
    uint8_t *copy = malloc(len > 0 ? len : 1);
    int rc;

    ck_assert_ptr_nonnull(copy);
    if (len > 0)
        memcpy(copy, buf, len);
    rc = fn(copy, len, out, e);
    free(copy);
    return rc;
}

/* Every strict prefix of the valid message must ask for more; the whole must parse. */
static void
check_prefixes(parse_fn fn, const uint8_t *msg, size_t len, void *out)
{
    struct pgp_err e;

    for (size_t i = 0; i < len; i++) {
        int rc = run_exact(fn, msg, i, out, &e);
        ck_assert_msg(rc == 0, "prefix of %zu/%zu bytes returned %d (%s)", i, len, rc, e.msg);
    }
    ck_assert_int_eq(run_exact(fn, msg, len, out, &e), (int)len);
}

/* Copies a message out of a builder buffer. */
static size_t
take(struct pgp_buf *b, uint8_t *dst, size_t cap)
{
    size_t n = b->len;

    ck_assert_uint_le(n, cap);
    memcpy(dst, b->data, n);
    pgp_buf_reset(b);
    return n;
}

/* ---------------------------------------------------------------------------------------- */
/* Growable buffer                                                                           */

START_TEST(test_buf_basics)
{
    struct pgp_buf b;
    uint8_t big[1000];

    pgp_buf_init(&b);
    ck_assert_ptr_null(b.data);
    ck_assert_int_eq(pgp_buf_append(&b, "abc", 3), 0);
    ck_assert_int_eq(pgp_buf_append(&b, NULL, 0), 0);
    expect_buf(&b, "abc", 3);
    memset(big, 0x5a, sizeof(big));
    ck_assert_int_eq(pgp_buf_append(&b, big, sizeof(big)), 0);
    ck_assert_uint_eq(b.len, 1003);
    ck_assert_uint_ge(b.cap, 1003);
    pgp_buf_consume(&b, 2);
    ck_assert_uint_eq(b.len, 1001);
    ck_assert_uint_eq(b.data[0], 'c');
    ck_assert_uint_eq(b.data[1], 0x5a);
    pgp_buf_consume(&b, 5000);
    ck_assert_uint_eq(b.len, 0);

    ck_assert_int_eq(pgp_buf_reserve(&b, 10), 0);
    memcpy(b.data + b.len, "0123456789", 10);
    ck_assert_int_eq(pgp_buf_commit(&b, 10), 0);
    expect_buf(&b, "0123456789", 10);
    ck_assert_int_eq(pgp_buf_commit(&b, b.cap - b.len + 1), -EINVAL);
    ck_assert_uint_eq(b.len, 10);
    ck_assert_int_eq(pgp_buf_reserve(&b, PGP_BUF_MAX), -EMSGSIZE);
    pgp_buf_reset(&b);
    ck_assert_uint_eq(b.len, 0);
    pgp_buf_free(&b);
    ck_assert_ptr_null(b.data);
    ck_assert_uint_eq(b.cap, 0);
}
END_TEST

/* ---------------------------------------------------------------------------------------- */
/* LSN, timeline, time, bool, slot names                                                     */

START_TEST(test_lsn)
{
    static const struct {
        const char *s;
        uint64_t v;
    } good[] = {
        {"0/0", 0},
        {"0/3000000", 0x3000000},
        {"1A/FF000000", UINT64_C(0x1AFF000000)},
        {"a/b", UINT64_C(0xA0000000B)},
        {"FFFFFFFF/FFFFFFFF", UINT64_MAX},
        {"00000000/00000001", 1},
    };
    static const char *const bad[] = {
        "",      "0/",   "/0",   "G/1",         "123456789/0", "0/123456789",
        "1/2/3", " 1/2", "1/2 ", "+1/2",        "1",           "0x1/0",
        "1/-2",  "/",    "1//2", "FFFFFFFFF/0", "0/FFFFFFFFF", "1/2;",
    };
    char buf[PGP_LSN_BUFSZ];
    uint64_t v;

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        v = 12345;
        ck_assert_msg(pgp_lsn_parse(good[i].s, strlen(good[i].s), &v) == 0, "%s", good[i].s);
        ck_assert_uint_eq(v, good[i].v);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(pgp_lsn_parse(bad[i], strlen(bad[i]), &v) == -EINVAL, "accepted \"%s\"",
                      bad[i]);
    /* the length bounds the parse: "0/1" inside a longer string */
    ck_assert_int_eq(pgp_lsn_parse("0/1FF", 3, &v), 0);
    ck_assert_uint_eq(v, 1);

    ck_assert_int_eq(pgp_lsn_format(0, buf), 3);
    ck_assert_str_eq(buf, "0/0");
    ck_assert_int_eq(pgp_lsn_format(UINT64_C(0x1AFF000000), buf), 11);
    ck_assert_str_eq(buf, "1A/FF000000");
    ck_assert_int_eq(pgp_lsn_format(UINT64_MAX, buf), 17);
    ck_assert_str_eq(buf, "FFFFFFFF/FFFFFFFF");
    for (uint64_t x = 1; x != 0; x *= 3) {
        pgp_lsn_format(x, buf);
        ck_assert_int_eq(pgp_lsn_parse(buf, strlen(buf), &v), 0);
        ck_assert_uint_eq(v, x);
        if (x > UINT64_MAX / 3)
            break;
    }
}
END_TEST

START_TEST(test_misc_helpers)
{
    char h[PGP_HISTFILE_BUFSZ];
    bool b = false;
    struct pgp_err e;

    ck_assert_int_eq(pgp_histfile_name(2, h), 16);
    ck_assert_str_eq(h, "00000002.history");
    pgp_histfile_name(0x1A, h);
    ck_assert_str_eq(h, "0000001A.history");
    pgp_histfile_name(UINT32_MAX, h);
    ck_assert_str_eq(h, "FFFFFFFF.history");

    ck_assert_int_eq(pgp_time_from_unix_us(INT64_C(946684800000000)), 0);
    ck_assert_int_eq(pgp_time_to_unix_us(0), INT64_C(946684800000000));
    ck_assert_int_eq(pgp_time_from_unix_us(INT64_C(1700000000123456)),
                     INT64_C(1700000000123456) - INT64_C(946684800000000));
    ck_assert_int_eq(pgp_time_to_unix_us(pgp_time_from_unix_us(INT64_C(1234567890123456))),
                     INT64_C(1234567890123456));
    ck_assert_int_eq(pgp_time_from_unix_us(INT64_MIN), INT64_MIN);
    ck_assert_int_eq(pgp_time_to_unix_us(INT64_MAX), INT64_MAX);

    static const struct {
        const char *s;
        bool ok, v;
    } bools[] = {
        {"true", true, true},  {"T", true, true},          {"tRu", true, true},
        {"yes", true, true},   {"y", true, true},          {"on", true, true},
        {"ON", true, true},    {"1", true, true},          {"false", true, false},
        {"f", true, false},    {"no", true, false},        {"n", true, false},
        {"off", true, false},  {"of", true, false},        {"0", true, false},
        {"o", false, false},   {"", false, false},         {"truex", false, false},
        {"10", false, false},  {"database", false, false}, {"2", false, false},
        {"onn", false, false},
    };
    for (size_t i = 0; i < sizeof(bools) / sizeof(bools[0]); i++) {
        b = !bools[i].v;
        ck_assert_msg(pgp_parse_bool(bools[i].s, strlen(bools[i].s), &b) == bools[i].ok, "%s",
                      bools[i].s);
        if (bools[i].ok)
            ck_assert_msg(b == bools[i].v, "%s", bools[i].s);
    }

    ck_assert_int_eq(pgp_slot_name_check("walmirror_1", &e), 0);
    ck_assert_int_eq(pgp_slot_name_check("", &e), -EINVAL);
    expect_err(&e, "42602", false, "too short");
    ck_assert_int_eq(pgp_slot_name_check("WalMirror", &e), -EINVAL);
    expect_err(&e, "42602", false, "invalid character");
    ck_assert_int_eq(
        pgp_slot_name_check("a123456789012345678901234567890123456789012345678901234567890123", &e),
        -EINVAL);
    expect_err(&e, "42622", false, "too long");
    ck_assert_int_eq(
        pgp_slot_name_check("a12345678901234567890123456789012345678901234567890123456789012", &e),
        0);
    ck_assert_int_eq(pgp_slot_name_check("bad\x01name", NULL), -EINVAL);
}
END_TEST

/* ---------------------------------------------------------------------------------------- */
/* Builders: byte-exact                                                                      */

START_TEST(test_put_simple_messages)
{
    struct pgp_buf b;

    pgp_buf_init(&b);

    static const uint8_t auth_ok[] = {'R', 0, 0, 0, 8, 0, 0, 0, 0};
    ck_assert_int_eq(pgp_put_auth_ok(&b), 9);
    expect_buf(&b, auth_ok, sizeof(auth_ok));
    pgp_buf_reset(&b);

    static const uint8_t sasl[] = {'R', 0,   0,   0,   23,  0,   0,   0,   10,  'S', 'C', 'R',
                                   'A', 'M', '-', 'S', 'H', 'A', '-', '2', '5', '6', 0,   0};
    ck_assert_int_eq(pgp_put_auth(&b, 10, "SCRAM-SHA-256\0", 15), 24);
    expect_buf(&b, sasl, sizeof(sasl));
    pgp_buf_reset(&b);
    ck_assert_int_eq(pgp_put_auth(&b, 10, NULL, 3), -EINVAL);
    ck_assert_uint_eq(b.len, 0);

    static const uint8_t ps[] = {'S', 0,   0,   0,   24,  's', 'e', 'r', 'v', 'e', 'r', '_', 'v',
                                 'e', 'r', 's', 'i', 'o', 'n', 0,   '1', '5', '.', '8', 0};
    ck_assert_int_eq(pgp_put_parameter_status(&b, "server_version", "15.8"), 25);
    expect_buf(&b, ps, sizeof(ps));
    pgp_buf_reset(&b);
    ck_assert_int_eq(pgp_put_parameter_status(&b, "", "x"), -EINVAL);

    static const uint8_t key[] = {'K', 0, 0, 0, 12, 1, 2, 3, 4, 0xA0, 0xB0, 0xC0, 0xD0};
    ck_assert_int_eq(pgp_put_backend_key(&b, 0x01020304, 0xA0B0C0D0), 13);
    expect_buf(&b, key, sizeof(key));
    pgp_buf_reset(&b);

    static const uint8_t rfq[] = {'Z', 0, 0, 0, 5, 'I'};
    ck_assert_int_eq(pgp_put_ready(&b, 'I'), 6);
    expect_buf(&b, rfq, sizeof(rfq));
    ck_assert_int_eq(pgp_put_ready(&b, 'X'), -EINVAL);
    ck_assert_uint_eq(b.len, 6); /* failure appends nothing */
    pgp_buf_reset(&b);

    static const uint8_t w[] = {'W', 0, 0, 0, 7, 0, 0, 0};
    ck_assert_int_eq(pgp_put_copy_both(&b), 8);
    expect_buf(&b, w, sizeof(w));
    pgp_buf_reset(&b);

    static const uint8_t cd[] = {'c', 0, 0, 0, 4};
    ck_assert_int_eq(pgp_put_copy_done(&b), 5);
    expect_buf(&b, cd, sizeof(cd));
    pgp_buf_reset(&b);

    static const uint8_t cc[] = {'C', 0, 0, 0, 9, 'S', 'H', 'O', 'W', 0};
    ck_assert_int_eq(pgp_put_command_complete(&b, "SHOW"), 10);
    expect_buf(&b, cc, sizeof(cc));
    pgp_buf_reset(&b);

    ck_assert_int_eq(pgp_put_ssl_response(&b, true), 1);
    ck_assert_int_eq(pgp_put_ssl_response(&b, false), 1);
    ck_assert_int_eq(pgp_put_gssenc_response(&b), 1);
    expect_buf(&b, "SNN", 3);

    pgp_buf_free(&b);
}
END_TEST

START_TEST(test_put_rows_and_errors)
{
    struct pgp_buf b;
    pgp_buf_init(&b);

    /* DataRow with a NULL and a 2-byte value: 'D' len 16, Int16 2, -1, 2 "ab" */
    static const uint8_t dr[] = {'D',  0,    0, 0, 16, 0, 2,   0xFF, 0xFF,
                                 0xFF, 0xFF, 0, 0, 0,  2, 'a', 'b'};
    struct pgp_value cols[2] = {{NULL, 0}, {"ab", 2}};
    ck_assert_int_eq(pgp_put_data_row(&b, cols, 2), 17);
    expect_buf(&b, dr, sizeof(dr));
    pgp_buf_reset(&b);

    /* an empty string is not NULL */
    static const uint8_t dr0[] = {'D', 0, 0, 0, 10, 0, 1, 0, 0, 0, 0};
    struct pgp_value empty = {"", 0};
    ck_assert_int_eq(pgp_put_data_row(&b, &empty, 1), 11);
    expect_buf(&b, dr0, sizeof(dr0));
    pgp_buf_reset(&b);

    /* RowDescription: 'T' len, Int16 1, name\0, Int32 0, Int16 0, Int32 23, Int16 4,
     * Int32 -1, Int16 0 */
    static const uint8_t rd[] = {'T',  0,    0,    0,    28, /* type, length */
                                 0,    1,                    /* one field */
                                 't',  'l',  'i',  0,        /* name */
                                 0,    0,    0,    0,        /* table OID */
                                 0,    0,                    /* attnum */
                                 0,    0,    0,    23,       /* type OID int4 */
                                 0,    4,                    /* typlen */
                                 0xFF, 0xFF, 0xFF, 0xFF,     /* typmod -1 */
                                 0,    0};                   /* format text */
    struct pgp_field f = {"tli", PGP_OID_INT4, 4, -1};
    ck_assert_int_eq(pgp_put_row_description(&b, &f, 1), (int)sizeof(rd));
    expect_buf(&b, rd, sizeof(rd));
    pgp_buf_reset(&b);
    ck_assert_int_eq(pgp_put_row_description(&b, NULL, 1), -EINVAL);
    ck_assert_int_eq(pgp_put_data_row(&b, cols, 1665), -EINVAL);

    /* ErrorResponse S V C M \0: 'E' len 31 */
    static const uint8_t er[] = {'E', 0,   0,   0,   31,  'S', 'E', 'R', 'R', 'O', 'R',
                                 0,   'V', 'E', 'R', 'R', 'O', 'R', 0,   'C', '4', '2',
                                 '6', '0', '1', 0,   'M', 'b', 'a', 'd', 0,   0};
    ck_assert_int_eq(pgp_put_error(&b, "ERROR", "42601", "bad", NULL, NULL), 32);
    expect_buf(&b, er, sizeof(er));
    pgp_buf_reset(&b);

    /* NoticeResponse with detail and hint: same layout, type 'N', then D and H */
    static const uint8_t nr[] = {'N', 0,   0,   0,   33,  'S', 'N', 'O', 'T', 'E', 0,   'V',
                                 'N', 'O', 'T', 'E', 0,   'C', '0', '0', '0', '0', '0', 0,
                                 'M', 'm', 0,   'D', 'd', 0,   'H', 'h', 0,   0};
    ck_assert_int_eq(pgp_put_notice(&b, "NOTE", "00000", "m", "d", "h"), (int)sizeof(nr));
    expect_buf(&b, nr, sizeof(nr));
    pgp_buf_reset(&b);

    ck_assert_int_eq(pgp_put_error(&b, "ERROR", "4260", "x", NULL, NULL), -EINVAL);
    ck_assert_int_eq(pgp_put_error(&b, "ERROR", "42a01", "x", NULL, NULL), -EINVAL);
    ck_assert_int_eq(pgp_put_error(&b, "", "42601", "x", NULL, NULL), -EINVAL);
    ck_assert_int_eq(pgp_put_error(&b, "ERROR", "42601", NULL, NULL, NULL), -EINVAL);
    ck_assert_uint_eq(b.len, 0);

    struct pgp_err e;
    pgp_err_set(&e, true, "08P01", "boom %d", 42);
    struct enc x = {.n = 0};
    e_begin(&x, 'E');
    e_u8(&x, 'S');
    e_str(&x, "FATAL");
    e_u8(&x, 'V');
    e_str(&x, "FATAL");
    e_u8(&x, 'C');
    e_str(&x, "08P01");
    e_u8(&x, 'M');
    e_str(&x, "boom 42");
    e_u8(&x, 0);
    e_end(&x);
    ck_assert_int_eq(pgp_put_error_from(&b, &e), (int)x.n);
    expect_buf(&b, x.b, x.n);
    pgp_buf_reset(&b);

    /* a short-type message over libpq's 30000-byte limit is refused, nothing appended */
    char *tag = malloc(30001);
    ck_assert_ptr_nonnull(tag);
    memset(tag, 'x', 30000);
    tag[29996] = '\0'; /* length word 4 + 29996 + 1 = 30001: over */
    ck_assert_int_eq(pgp_put_command_complete(&b, tag), -EMSGSIZE);
    ck_assert_uint_eq(b.len, 0);
    tag[29995] = '\0'; /* length word exactly 30000: accepted */
    ck_assert_int_eq(pgp_put_command_complete(&b, tag), 30001);
    ck_assert_uint_eq(b.data[1], 0x00);
    ck_assert_uint_eq(b.data[2], 0x00);
    ck_assert_uint_eq(b.data[3], 0x75); /* 30000 = 0x7530 */
    ck_assert_uint_eq(b.data[4], 0x30);
    free(tag);

    pgp_buf_free(&b);
}
END_TEST

START_TEST(test_put_copy_messages)
{
    struct pgp_buf b;
    pgp_buf_init(&b);

    /* keepalive: 'd' Int32 22 'k' walEnd sendTime replyRequested = 23 bytes */
    static const uint8_t ka[] = {'d', 0, 0,    0,    22,   'k',  0,    0,    0,    1,    3, 0,
                                 0,   0, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 1};
    ck_assert_int_eq(
        pgp_put_keepalive(&b, UINT64_C(0x103000000), INT64_C(0x0102030405060708), true), 23);
    expect_buf(&b, ka, sizeof(ka));
    pgp_buf_reset(&b);

    /* XLogData with 3 WAL bytes: 'd' Int32 32 'w' start end time + WAL = 33 bytes */
    static const uint8_t xd[] = {'d',  0,    0,    0,    32,   'w',  0,    0,    0,    0,    3,
                                 0,    0,    0,    0,    0,    0,    0,    3,    0,    0x20, 0,
                                 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE, 0xAA, 0xBB, 0xCC};
    ck_assert_int_eq(pgp_put_xlogdata(&b, 0x3000000, 0x3002000, -2, "\xAA\xBB\xCC", 3), 33);
    expect_buf(&b, xd, sizeof(xd));
    pgp_buf_reset(&b);

    /* the separate header: same first 30 bytes, then the caller's bytes without a copy */
    uint8_t hdr[PGP_XLOGDATA_HDR_LEN];
    ck_assert_int_eq(pgp_xlogdata_header(hdr, 0x3000000, 0x3002000, -2, 3), 30);
    ck_assert_mem_eq(hdr, xd, 30);
    ck_assert_int_eq(pgp_put_xlogdata_header(&b, 0x3000000, 0x3002000, -2, 3), 30);
    ck_assert_int_eq(pgp_buf_reserve(&b, 3), 0);
    memcpy(b.data + b.len, "\xAA\xBB\xCC", 3);
    ck_assert_int_eq(pgp_buf_commit(&b, 3), 0);
    expect_buf(&b, xd, sizeof(xd));
    pgp_buf_reset(&b);

    /* 128 KiB chunk: length word 4 + 25 + 131072 = 0x0002001D */
    ck_assert_int_eq(pgp_xlogdata_header(hdr, 0, 0, 0, 131072), 30);
    ck_assert_uint_eq(hdr[1], 0x00);
    ck_assert_uint_eq(hdr[2], 0x02);
    ck_assert_uint_eq(hdr[3], 0x00);
    ck_assert_uint_eq(hdr[4], 0x1D);
    ck_assert_int_eq(pgp_xlogdata_header(hdr, 0, 0, 0, (size_t)PGP_MAX_BACKEND_MSG), -EMSGSIZE);
    ck_assert_int_eq(pgp_put_xlogdata(&b, 0, 0, 0, NULL, 5), -EINVAL);
    ck_assert_int_eq(pgp_put_xlogdata(&b, 7, 7, 0, NULL, 0), 30);
    pgp_buf_reset(&b);

    /* standby status update: 'd' Int32 38 'r' w f a t rr = 39 bytes */
    static const uint8_t r[] = {'d', 0, 0, 0, 38, 'r', 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0,
                                0,   2, 0, 0, 0,  0,   0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 4, 0};
    struct pgp_standby_status st = {.write = 1, .flush = 2, .apply = 3, .send_time = 4};
    ck_assert_int_eq(pgp_put_standby_status(&b, &st), 39);
    expect_buf(&b, r, sizeof(r));
    pgp_buf_reset(&b);

    /* hot standby feedback: 'd' Int32 29 'h' time xmin xmin_epoch catalog_xmin epoch */
    static const uint8_t h[] = {'d', 0, 0, 0, 29, 'h', 0, 0, 0, 0, 0, 0, 0, 9, 0,
                                0,   0, 5, 0, 0,  0,   6, 0, 0, 0, 7, 0, 0, 0, 8};
    struct pgp_hs_feedback hs = {9, 5, 6, 7, 8};
    ck_assert_int_eq(pgp_put_hs_feedback(&b, &hs), 30);
    expect_buf(&b, h, sizeof(h));

    pgp_buf_free(&b);
}
END_TEST

START_TEST(test_result_show_literal)
{
    static const uint8_t exp[] = {
        /* T: len 41, 1 field "wal_segment_size", table 0, attnum 0, oid 25, typlen -1,
         * typmod -1, format 0 */
        'T', 0, 0, 0, 41, 0, 1, 'w', 'a', 'l', '_', 's', 'e', 'g', 'm', 'e', 'n', 't', '_', 's',
        'i', 'z', 'e', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 25, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0,
        /* D: len 14, 1 column, length 4, "16MB" */
        'D', 0, 0, 0, 14, 0, 1, 0, 0, 0, 4, '1', '6', 'M', 'B',
        /* C: len 9, "SHOW" */
        'C', 0, 0, 0, 9, 'S', 'H', 'O', 'W', 0};
    struct pgp_buf b;

    pgp_buf_init(&b);
    ck_assert_int_eq(pgp_put_show(&b, "wal_segment_size", "16MB"), (int)sizeof(exp));
    expect_buf(&b, exp, sizeof(exp));
    pgp_buf_free(&b);
}
END_TEST

START_TEST(test_result_sets)
{
    struct pgp_buf b;
    struct enc x;

    pgp_buf_init(&b);

    /* IDENTIFY_SYSTEM */
    x.n = 0;
    e_begin(&x, 'T');
    e_u16(&x, 4);
    e_field(&x, "systemid", 25, -1, -1);
    e_field(&x, "timeline", 23, 4, -1);
    e_field(&x, "xlogpos", 25, -1, -1);
    e_field(&x, "dbname", 25, -1, -1);
    e_end(&x);
    e_begin(&x, 'D');
    e_u16(&x, 4);
    e_col(&x, "7321987654321098765");
    e_col(&x, "3");
    e_col(&x, "0/3000148");
    e_col(&x, NULL);
    e_end(&x);
    e_cc(&x, "IDENTIFY_SYSTEM");
    ck_assert_int_eq(pgp_put_identify_system(&b, UINT64_C(7321987654321098765), 3, 0x3000148, NULL),
                     (int)x.n);
    expect_buf(&b, x.b, x.n);
    pgp_buf_reset(&b);

    /* TIMELINE_HISTORY: hand-built RowDescription with typmod 0 */
    static const char hist[] = "1\t0/3000000\tno recovery target specified\n";
    x.n = 0;
    e_begin(&x, 'T');
    e_u16(&x, 2);
    e_field(&x, "filename", 25, -1, 0);
    e_field(&x, "content", 25, -1, 0);
    e_end(&x);
    e_begin(&x, 'D');
    e_u16(&x, 2);
    e_col(&x, "00000002.history");
    e_col(&x, hist);
    e_end(&x);
    e_cc(&x, "TIMELINE_HISTORY");
    ck_assert_int_eq(pgp_put_timeline_history(&b, 2, hist, strlen(hist)), (int)x.n);
    expect_buf(&b, x.b, x.n);
    pgp_buf_reset(&b);

    /* READ_REPLICATION_SLOT, missing slot: all NULL */
    x.n = 0;
    e_begin(&x, 'T');
    e_u16(&x, 3);
    e_field(&x, "slot_type", 25, -1, -1);
    e_field(&x, "restart_lsn", 25, -1, -1);
    e_field(&x, "restart_tli", 20, 8, -1);
    e_end(&x);
    size_t tlen = x.n;
    e_begin(&x, 'D');
    e_u16(&x, 3);
    e_col(&x, NULL);
    e_col(&x, NULL);
    e_col(&x, NULL);
    e_end(&x);
    e_cc(&x, "READ_REPLICATION_SLOT");
    ck_assert_int_eq(pgp_put_read_replication_slot(&b, NULL), (int)x.n);
    expect_buf(&b, x.b, x.n);
    pgp_buf_reset(&b);

    /* ... existing slot */
    x.n = tlen;
    e_begin(&x, 'D');
    e_u16(&x, 3);
    e_col(&x, "physical");
    e_col(&x, "1/2000000");
    e_col(&x, "2");
    e_end(&x);
    e_cc(&x, "READ_REPLICATION_SLOT");
    struct pgp_slot_info si = {UINT64_C(0x102000000), 2};
    ck_assert_int_eq(pgp_put_read_replication_slot(&b, &si), (int)x.n);
    expect_buf(&b, x.b, x.n);
    pgp_buf_reset(&b);

    /* ... existing slot that never reserved WAL */
    x.n = tlen;
    e_begin(&x, 'D');
    e_u16(&x, 3);
    e_col(&x, "physical");
    e_col(&x, NULL);
    e_col(&x, NULL);
    e_end(&x);
    e_cc(&x, "READ_REPLICATION_SLOT");
    struct pgp_slot_info si0 = {0, 0};
    ck_assert_int_eq(pgp_put_read_replication_slot(&b, &si0), (int)x.n);
    expect_buf(&b, x.b, x.n);
    pgp_buf_reset(&b);

    /* CREATE_REPLICATION_SLOT */
    x.n = 0;
    e_begin(&x, 'T');
    e_u16(&x, 4);
    e_field(&x, "slot_name", 25, -1, -1);
    e_field(&x, "consistent_point", 25, -1, -1);
    e_field(&x, "snapshot_name", 25, -1, -1);
    e_field(&x, "output_plugin", 25, -1, -1);
    e_end(&x);
    e_begin(&x, 'D');
    e_u16(&x, 4);
    e_col(&x, "walmirror");
    e_col(&x, "0/0");
    e_col(&x, NULL);
    e_col(&x, NULL);
    e_end(&x);
    e_cc(&x, "CREATE_REPLICATION_SLOT");
    ck_assert_int_eq(pgp_put_create_slot(&b, "walmirror", 0), (int)x.n);
    expect_buf(&b, x.b, x.n);
    pgp_buf_reset(&b);

    /* end of a historic timeline: T, D, C START_STREAMING, C START_REPLICATION */
    x.n = 0;
    e_begin(&x, 'T');
    e_u16(&x, 2);
    e_field(&x, "next_tli", 20, 8, -1);
    e_field(&x, "next_tli_startpos", 25, -1, -1);
    e_end(&x);
    e_begin(&x, 'D');
    e_u16(&x, 2);
    e_col(&x, "2");
    e_col(&x, "0/3000100");
    e_end(&x);
    e_cc(&x, "START_STREAMING");
    e_cc(&x, "START_REPLICATION");
    ck_assert_int_eq(pgp_put_end_of_timeline(&b, 2, 0x3000100), (int)x.n);
    expect_buf(&b, x.b, x.n);
    pgp_buf_reset(&b);

    /* all or nothing: an impossible content length fails after 'T' was built, and the 'T' is
     * rolled back (the content pointer is never read: the size check comes first) */
    ck_assert_int_eq(pgp_put_command_complete(&b, "X"), 7);
    ck_assert_int_eq(pgp_put_timeline_history(&b, 2, "x", (size_t)PGP_MAX_BACKEND_MSG), -EMSGSIZE);
    static const uint8_t only_c[] = {'C', 0, 0, 0, 6, 'X', 0};
    expect_buf(&b, only_c, sizeof(only_c));

    pgp_buf_free(&b);
}
END_TEST

/* ---------------------------------------------------------------------------------------- */
/* Initial packet                                                                            */

/* Builds a start-up packet from NUL-separated "k\0v\0..." (pairs_len bytes, no terminator). */
static size_t
startup_packet(uint8_t *out, size_t cap, uint32_t proto, const char *pairs, size_t pairs_len)
{
    size_t n = 4 + 4 + pairs_len + 1;

    ck_assert_uint_le(n, cap);
    out[0] = (uint8_t)(n >> 24);
    out[1] = (uint8_t)(n >> 16);
    out[2] = (uint8_t)(n >> 8);
    out[3] = (uint8_t)n;
    out[4] = (uint8_t)(proto >> 24);
    out[5] = (uint8_t)(proto >> 16);
    out[6] = (uint8_t)(proto >> 8);
    out[7] = (uint8_t)proto;
    memcpy(out + 8, pairs, pairs_len);
    out[8 + pairs_len] = 0;
    return n;
}

/* What libpq 15 sends for a walreceiver connection. */
static const char libpq_pairs[] = "user\0replicator\0database\0replication\0replication\0true\0"
                                  "application_name\0walreceiver\0client_encoding\0UTF8\0"
                                  "options\0-c datestyle=ISO\0";

START_TEST(test_initial_requests)
{
    static const uint8_t ssl[] = {0, 0, 0, 8, 0x04, 0xD2, 0x16, 0x2F};
    static const uint8_t gss[] = {0, 0, 0, 8, 0x04, 0xD2, 0x16, 0x30};
    static const uint8_t cancel[] = {0, 0, 0,    16,   0x04, 0xD2, 0x16, 0x2E,
                                     0, 0, 0x30, 0x39, 0xDE, 0xAD, 0xBE, 0xEF};
    struct pgp_initial in;
    struct pgp_err e;

    check_prefixes(parse_initial_v, ssl, sizeof(ssl), &in);
    ck_assert_int_eq(in.kind, PGP_INITIAL_SSL);
    ck_assert_uint_eq(in.code, PGP_SSL_REQUEST);
    check_prefixes(parse_initial_v, gss, sizeof(gss), &in);
    ck_assert_int_eq(in.kind, PGP_INITIAL_GSSENC);
    check_prefixes(parse_initial_v, cancel, sizeof(cancel), &in);
    ck_assert_int_eq(in.kind, PGP_INITIAL_CANCEL);
    ck_assert_uint_eq(in.cancel_pid, 12345);
    ck_assert_uint_eq(in.cancel_key, 0xDEADBEEF);

    /* SSLRequest followed by the start of the next packet: only 8 bytes consumed */
    uint8_t two[12];
    memcpy(two, ssl, 8);
    memcpy(two + 8, "\0\0\0\x50", 4);
    ck_assert_int_eq(pgp_parse_initial(two, sizeof(two), &in, &e), 8);

    /* wrong lengths for the fixed-size requests */
    static const uint8_t ssl12[] = {0, 0, 0, 12, 0x04, 0xD2, 0x16, 0x2F, 0, 0, 0, 0};
    ck_assert_int_eq(run_exact(parse_initial_v, ssl12, sizeof(ssl12), &in, &e), -EPROTO);
    expect_err(&e, "08P01", true, "SSLRequest");
    static const uint8_t cancel12[] = {0, 0, 0, 12, 0x04, 0xD2, 0x16, 0x2E, 0, 0, 0, 1};
    ck_assert_int_eq(run_exact(parse_initial_v, cancel12, sizeof(cancel12), &in, &e), -EPROTO);
    expect_err(&e, "08P01", true, "CancelRequest");

    /* declared length out of bounds: detected from the length word alone */
    static const uint8_t short7[] = {0, 0, 0, 7};
    ck_assert_int_eq(run_exact(parse_initial_v, short7, 4, &in, &e), -EMSGSIZE);
    expect_err(&e, "08P01", true, "invalid length of startup packet");
    static const uint8_t zero[] = {0, 0, 0, 0};
    ck_assert_int_eq(run_exact(parse_initial_v, zero, 4, &in, &e), -EMSGSIZE);
    static const uint8_t huge[] = {0, 0, 0x27, 0x15}; /* 10005 */
    ck_assert_int_eq(run_exact(parse_initial_v, huge, 4, &in, &e), -EMSGSIZE);
    static const uint8_t neg[] = {0xFF, 0xFF, 0xFF, 0xFF};
    ck_assert_int_eq(run_exact(parse_initial_v, neg, 4, &in, &e), -EMSGSIZE);
    static const uint8_t max[] = {0, 0, 0x27, 0x14}; /* 10004: allowed, needs more */
    ck_assert_int_eq(run_exact(parse_initial_v, max, 4, &in, &e), 0);

    /* unknown 1234/x request code */
    static const uint8_t unk[] = {0, 0, 0, 8, 0x04, 0xD2, 0x16, 0x31};
    ck_assert_int_eq(run_exact(parse_initial_v, unk, sizeof(unk), &in, &e), -ENOTSUP);
    expect_err(&e, "08P01", true, "1234/5681");
}
END_TEST

START_TEST(test_initial_startup)
{
    uint8_t pkt[512];
    struct pgp_initial in;
    struct pgp_err e;
    size_t n =
        startup_packet(pkt, sizeof(pkt), PGP_PROTOCOL_3_0, libpq_pairs, sizeof(libpq_pairs) - 1);

    check_prefixes(parse_initial_v, pkt, n, &in);
    ck_assert_int_eq(run_exact(parse_initial_v, pkt, n, &in, &e), (int)n);
    /* pointers into a live buffer for the field checks */
    ck_assert_int_eq(pgp_parse_initial(pkt, n, &in, &e), (int)n);
    ck_assert_int_eq(in.kind, PGP_INITIAL_STARTUP);
    ck_assert_uint_eq(in.code, PGP_PROTOCOL_3_0);
    ck_assert_uint_eq(in.nparams, 6);
    ck_assert_str_eq(in.user, "replicator");
    ck_assert_str_eq(in.database, "replication");
    ck_assert_str_eq(in.replication_raw, "true");
    ck_assert_int_eq(in.replication, PGP_REPL_PHYSICAL);
    ck_assert_str_eq(in.application_name, "walreceiver");
    ck_assert_str_eq(in.options, "-c datestyle=ISO");
    ck_assert_str_eq(in.params[4].name, "client_encoding");
    ck_assert_str_eq(in.params[4].value, "UTF8");
    ck_assert_str_eq(pgp_initial_param(&in, "client_encoding"), "UTF8");
    ck_assert_ptr_null(pgp_initial_param(&in, "nope"));

    /* with bytes of the next message behind it */
    memcpy(pkt + n, "Q\0\0\0\x05", 5);
    ck_assert_int_eq(pgp_parse_initial(pkt, n + 5, &in, &e), (int)n);

    /* replication values */
    static const struct {
        const char *pairs;
        size_t len;
        int rc;
        enum pgp_replication r;
    } rv[] = {
        {"user\0u\0replication\0on\0", 22, 0, PGP_REPL_PHYSICAL},
        {"user\0u\0replication\0yes\0", 23, 0, PGP_REPL_PHYSICAL},
        {"user\0u\0replication\0"
         "1\0",
         21, 0, PGP_REPL_PHYSICAL},
        {"user\0u\0replication\0off\0", 23, 0, PGP_REPL_NONE},
        {"user\0u\0replication\0"
         "0\0",
         21, 0, PGP_REPL_NONE},
        {"user\0u\0replication\0database\0", 28, 0, PGP_REPL_DATABASE},
        {"user\0u\0", 7, 0, PGP_REPL_NONE},
        {"user\0u\0replication\0maybe\0", 25, -EINVAL, PGP_REPL_NONE},
        {"user\0u\0replication\0Database\0", 28, -EINVAL, PGP_REPL_NONE},
    };
    for (size_t i = 0; i < sizeof(rv) / sizeof(rv[0]); i++) {
        n = startup_packet(pkt, sizeof(pkt), PGP_PROTOCOL_3_0, rv[i].pairs, rv[i].len);
        int rc = run_exact(parse_initial_v, pkt, n, &in, &e);
        if (rv[i].rc == 0) {
            ck_assert_msg(rc == (int)n, "case %zu: %d %s", i, rc, e.msg);
            ck_assert_int_eq(in.replication, rv[i].r);
        } else {
            ck_assert_int_eq(rc, rv[i].rc);
            expect_err(&e, "22023", true, "replication");
        }
    }

    /* a repeated key: the last one wins, both are kept */
    static const char dup[] = "user\0a\0user\0b\0";
    n = startup_packet(pkt, sizeof(pkt), PGP_PROTOCOL_3_0, dup, sizeof(dup) - 1);
    ck_assert_int_eq(pgp_parse_initial(pkt, n, &in, &e), (int)n);
    ck_assert_str_eq(in.user, "b");
    ck_assert_uint_eq(in.nparams, 2);
}
END_TEST

START_TEST(test_initial_startup_errors)
{
    uint8_t pkt[2048];
    struct pgp_initial in;
    struct pgp_err e;
    size_t n;

    /* other protocol versions */
    n = startup_packet(pkt, sizeof(pkt), 0x00020000, "user\0u\0", 7);
    ck_assert_int_eq(run_exact(parse_initial_v, pkt, n, &in, &e), -ENOTSUP);
    expect_err(&e, "0A000", true, "unsupported frontend protocol 2.0");
    n = startup_packet(pkt, sizeof(pkt), 0x00030001, "user\0u\0", 7);
    ck_assert_int_eq(run_exact(parse_initial_v, pkt, n, &in, &e), -ENOTSUP);
    expect_err(&e, "0A000", true, "3.1");

    /* no user, empty user */
    n = startup_packet(pkt, sizeof(pkt), PGP_PROTOCOL_3_0, "database\0d\0", 11);
    ck_assert_int_eq(run_exact(parse_initial_v, pkt, n, &in, &e), -EINVAL);
    expect_err(&e, "28000", true, "user name");
    n = startup_packet(pkt, sizeof(pkt), PGP_PROTOCOL_3_0, "user\0\0", 6);
    ck_assert_int_eq(run_exact(parse_initial_v, pkt, n, &in, &e), -EINVAL);

    /* no parameters at all: just the terminator -> no user */
    n = startup_packet(pkt, sizeof(pkt), PGP_PROTOCOL_3_0, "", 0);
    ck_assert_int_eq(run_exact(parse_initial_v, pkt, n, &in, &e), -EINVAL);

    /* layout: missing terminator (protocol only), key without value, bytes after the
     * terminator */
    static const uint8_t noterm[] = {0, 0, 0, 8, 0, 3, 0, 0};
    ck_assert_int_eq(run_exact(parse_initial_v, noterm, sizeof(noterm), &in, &e), -EPROTO);
    expect_err(&e, "08P01", true, "terminator");
    static const uint8_t novalue[] = {0, 0, 0, 13, 0, 3, 0, 0, 'u', 's', 'e', 'r', 0};
    ck_assert_int_eq(run_exact(parse_initial_v, novalue, sizeof(novalue), &in, &e), -EPROTO);
    expect_err(&e, "08P01", true, "user");
    static const uint8_t after[] = {0, 0, 0, 18, 0, 3, 0, 0, 'u', 0, 'v', 0, 0, 'x', 0, 'y', 0, 0};
    ck_assert_int_eq(run_exact(parse_initial_v, after, sizeof(after), &in, &e), -EPROTO);
    static const uint8_t unterminated[] = {0, 0, 0, 11, 0, 3, 0, 0, 'u', 0, 'v'};
    ck_assert_int_eq(run_exact(parse_initial_v, unterminated, sizeof(unterminated), &in, &e),
                     -EPROTO);

    /* too many parameters */
    char pairs[1024];
    size_t pl = 0;
    pl += (size_t)snprintf(pairs, sizeof(pairs), "user%cu%c", 0, 0);
    for (int i = 0; i < PGP_MAX_STARTUP_PARAMS; i++) {
        pairs[pl++] = 'k';
        pairs[pl++] = (char)('A' + i % 26);
        pairs[pl++] = (char)('A' + i / 26);
        pairs[pl++] = 0;
        pairs[pl++] = 'v';
        pairs[pl++] = 0;
    }
    n = startup_packet(pkt, sizeof(pkt), PGP_PROTOCOL_3_0, pairs, pl);
    ck_assert_int_eq(run_exact(parse_initial_v, pkt, n, &in, &e), -EPROTO);
    expect_err(&e, "08P01", true, "too many");
}
END_TEST

/* ---------------------------------------------------------------------------------------- */
/* Regular frontend messages                                                                 */

static size_t
query_msg(uint8_t *out, size_t cap, const char *q)
{
    size_t ql = strlen(q), n = 1 + 4 + ql + 1;

    ck_assert_uint_le(n, cap);
    out[0] = 'Q';
    out[1] = (uint8_t)((n - 1) >> 24);
    out[2] = (uint8_t)((n - 1) >> 16);
    out[3] = (uint8_t)((n - 1) >> 8);
    out[4] = (uint8_t)(n - 1);
    memcpy(out + 5, q, ql + 1);
    return n;
}

START_TEST(test_fe_query)
{
    uint8_t m[256];
    struct pgp_fe_msg msg;
    struct pgp_err e;
    size_t n = query_msg(m, sizeof(m), "IDENTIFY_SYSTEM");

    check_prefixes(parse_fe_v, m, n, &msg);
    ck_assert_int_eq(pgp_parse_fe(m, n, &msg, &e), (int)n);
    ck_assert_int_eq(msg.type, 'Q');
    ck_assert_uint_eq(msg.msg_len, n);
    ck_assert_uint_eq(msg.query_len, 15);
    ck_assert_str_eq(msg.query, "IDENTIFY_SYSTEM");

    /* two messages back to back: one at a time */
    size_t n2 = query_msg(m + n, sizeof(m) - n, "SHOW wal_segment_size");
    ck_assert_int_eq(pgp_parse_fe(m, n + n2, &msg, &e), (int)n);
    ck_assert_int_eq(pgp_parse_fe(m + n, n2, &msg, &e), (int)n2);
    ck_assert_str_eq(msg.query, "SHOW wal_segment_size");

    /* empty query string is well-formed */
    static const uint8_t empty[] = {'Q', 0, 0, 0, 5, 0};
    ck_assert_int_eq(run_exact(parse_fe_v, empty, sizeof(empty), &msg, &e), 6);

    /* no NUL, NUL in the middle */
    static const uint8_t nonul[] = {'Q', 0, 0, 0, 6, 'a', 'b'};
    ck_assert_int_eq(run_exact(parse_fe_v, nonul, sizeof(nonul), &msg, &e), -EPROTO);
    expect_err(&e, "08P01", true, "NUL");
    static const uint8_t mid[] = {'Q', 0, 0, 0, 7, 'a', 0, 'b'};
    ck_assert_int_eq(run_exact(parse_fe_v, mid, sizeof(mid), &msg, &e), -EPROTO);

    /* lengths: < 4, == 4 (below 'Q' minimum), above the limit (detected from 5 bytes) */
    static const uint8_t l3[] = {'Q', 0, 0, 0, 3};
    ck_assert_int_eq(run_exact(parse_fe_v, l3, sizeof(l3), &msg, &e), -EPROTO);
    expect_err(&e, "08P01", true, "less than 4");
    static const uint8_t l4[] = {'Q', 0, 0, 0, 4};
    ck_assert_int_eq(run_exact(parse_fe_v, l4, sizeof(l4), &msg, &e), -EPROTO);
    static const uint8_t big[] = {'Q', 0, 0x10, 0, 1}; /* 1 MiB + 1 */
    ck_assert_int_eq(run_exact(parse_fe_v, big, sizeof(big), &msg, &e), -EMSGSIZE);
    expect_err(&e, "08P01", true, "limit");
    static const uint8_t maxq[] = {'Q', 0, 0x10, 0, 0}; /* exactly 1 MiB: waits for it */
    ck_assert_int_eq(run_exact(parse_fe_v, maxq, sizeof(maxq), &msg, &e), 0);
    static const uint8_t negq[] = {'Q', 0x80, 0, 0, 0};
    ck_assert_int_eq(run_exact(parse_fe_v, negq, sizeof(negq), &msg, &e), -EMSGSIZE);
}
END_TEST

START_TEST(test_fe_copy)
{
    struct pgp_buf b;
    uint8_t m[128];
    struct pgp_fe_msg msg;
    struct pgp_err e;
    size_t n;

    pgp_buf_init(&b);

    /* 'r' round trip through the client-side builder */
    struct pgp_standby_status st = {.write = UINT64_C(0x103000100),
                                    .flush = UINT64_C(0x103000000),
                                    .apply = UINT64_C(0x102FFFF00),
                                    .send_time = INT64_C(757000000123456),
                                    .reply_requested = true};
    ck_assert_int_eq(pgp_put_standby_status(&b, &st), 39);
    n = take(&b, m, sizeof(m));
    check_prefixes(parse_fe_v, m, n, &msg);
    ck_assert_int_eq(pgp_parse_fe(m, n, &msg, &e), 39);
    ck_assert_int_eq(msg.type, 'd');
    ck_assert_int_eq(msg.copy.kind, 'r');
    ck_assert_uint_eq(msg.copy.status.write, st.write);
    ck_assert_uint_eq(msg.copy.status.flush, st.flush);
    ck_assert_uint_eq(msg.copy.status.apply, st.apply);
    ck_assert_int_eq(msg.copy.status.send_time, st.send_time);
    ck_assert(msg.copy.status.reply_requested);

    /* 'h' with distinct values so an order swap cannot pass */
    struct pgp_hs_feedback hs = {INT64_C(-5), 0x11111111, 0x22222222, 0x33333333, 0x44444444};
    ck_assert_int_eq(pgp_put_hs_feedback(&b, &hs), 30);
    n = take(&b, m, sizeof(m));
    check_prefixes(parse_fe_v, m, n, &msg);
    ck_assert_int_eq(pgp_parse_fe(m, n, &msg, &e), 30);
    ck_assert_int_eq(msg.copy.kind, 'h');
    ck_assert_int_eq(msg.copy.hs.send_time, -5);
    ck_assert_uint_eq(msg.copy.hs.xmin, 0x11111111);
    ck_assert_uint_eq(msg.copy.hs.xmin_epoch, 0x22222222);
    ck_assert_uint_eq(msg.copy.hs.catalog_xmin, 0x33333333);
    ck_assert_uint_eq(msg.copy.hs.catalog_epoch, 0x44444444);

    /* a hand-made 'h' in wire order, checked field by field */
    static const uint8_t hraw[] = {'d', 0, 0, 0, 29, 'h', 0, 0, 0, 0, 0, 0, 1, 0, 0,
                                   0,   0, 7, 0, 0,  0,   1, 0, 0, 0, 9, 0, 0, 0, 2};
    ck_assert_int_eq(run_exact(parse_fe_v, hraw, sizeof(hraw), &msg, &e), 30);
    ck_assert_int_eq(msg.copy.hs.send_time, 256);
    ck_assert_uint_eq(msg.copy.hs.xmin, 7);
    ck_assert_uint_eq(msg.copy.hs.xmin_epoch, 1);
    ck_assert_uint_eq(msg.copy.hs.catalog_xmin, 9);
    ck_assert_uint_eq(msg.copy.hs.catalog_epoch, 2);

    /* 'r' one byte short and one byte long */
    uint8_t r[64];
    ck_assert_int_eq(pgp_put_standby_status(&b, &st), 39);
    n = take(&b, r, sizeof(r));
    r[4] = 37;
    ck_assert_int_eq(run_exact(parse_fe_v, r, 38, &msg, &e), -EPROTO);
    expect_err(&e, "08P01", true, "34");
    r[4] = 39;
    r[39] = 0;
    ck_assert_int_eq(run_exact(parse_fe_v, r, 40, &msg, &e), -EPROTO);
    expect_err(&e, "08P01", true, "34");
    /* 'h' short */
    static const uint8_t hshort[] = {'d', 0, 0, 0, 6, 'h', 0};
    ck_assert_int_eq(run_exact(parse_fe_v, hshort, sizeof(hshort), &msg, &e), -EPROTO);
    /* unknown inner type, empty CopyData */
    static const uint8_t z[] = {'d', 0, 0, 0, 5, 'z'};
    ck_assert_int_eq(run_exact(parse_fe_v, z, sizeof(z), &msg, &e), -EPROTO);
    expect_err(&e, "08P01", true, "'z'");
    static const uint8_t d4[] = {'d', 0, 0, 0, 4};
    ck_assert_int_eq(run_exact(parse_fe_v, d4, sizeof(d4), &msg, &e), -EPROTO);
    /* oversized CopyData */
    static const uint8_t dbig[] = {'d', 0, 1, 0, 1};
    ck_assert_int_eq(run_exact(parse_fe_v, dbig, sizeof(dbig), &msg, &e), -EMSGSIZE);

    /* CopyDone, Terminate: exactly 4 */
    static const uint8_t c[] = {'c', 0, 0, 0, 4};
    check_prefixes(parse_fe_v, c, sizeof(c), &msg);
    ck_assert_int_eq(msg.type, 'c');
    static const uint8_t x[] = {'X', 0, 0, 0, 4};
    check_prefixes(parse_fe_v, x, sizeof(x), &msg);
    ck_assert_int_eq(msg.type, 'X');
    static const uint8_t c5[] = {'c', 0, 0, 0, 5, 0};
    ck_assert_int_eq(run_exact(parse_fe_v, c5, sizeof(c5), &msg, &e), -EMSGSIZE);

    pgp_buf_free(&b);
}
END_TEST

START_TEST(test_fe_password_and_sasl)
{
    /* SASLInitialResponse: 'p' len, "SCRAM-SHA-256\0", Int32 8, "n,,n=,r=" */
    static const uint8_t p[] = {'p', 0,   0,   0,   30,  'S', 'C', 'R', 'A', 'M', '-',
                                'S', 'H', 'A', '-', '2', '5', '6', 0,   0,   0,   0,
                                8,   'n', ',', ',', 'n', '=', ',', 'r', '='};
    struct pgp_fe_msg msg;
    struct pgp_err e;
    const char *mech;
    const uint8_t *data;
    int32_t dl;

    check_prefixes(parse_fe_v, p, sizeof(p), &msg);
    ck_assert_int_eq(pgp_parse_fe(p, sizeof(p), &msg, &e), (int)sizeof(p));
    ck_assert_int_eq(msg.type, 'p');
    ck_assert_uint_eq(msg.body_len, 26);
    ck_assert_ptr_eq(msg.body, p + 5);
    ck_assert_int_eq(pgp_parse_sasl_initial(msg.body, msg.body_len, &mech, &data, &dl, &e), 0);
    ck_assert_str_eq(mech, "SCRAM-SHA-256");
    ck_assert_int_eq(dl, 8);
    ck_assert_mem_eq(data, "n,,n=,r=", 8);

    /* data length -1: none */
    static const uint8_t none[] = {'M', 0, 0xFF, 0xFF, 0xFF, 0xFF};
    ck_assert_int_eq(pgp_parse_sasl_initial(none, sizeof(none), &mech, &data, &dl, &e), 0);
    ck_assert_int_eq(dl, -1);
    ck_assert_ptr_null(data);
    /* declared data longer than the message, trailing bytes, truncated */
    static const uint8_t longer[] = {'M', 0, 0, 0, 0, 9, 'x'};
    ck_assert_int_eq(pgp_parse_sasl_initial(longer, sizeof(longer), &mech, &data, &dl, &e),
                     -EPROTO);
    static const uint8_t trailing[] = {'M', 0, 0, 0, 0, 1, 'x', 'y'};
    ck_assert_int_eq(pgp_parse_sasl_initial(trailing, sizeof(trailing), &mech, &data, &dl, &e),
                     -EPROTO);
    expect_err(&e, "08P01", true, "trailing");
    ck_assert_int_eq(pgp_parse_sasl_initial(trailing, 3, &mech, &data, &dl, &e), -EPROTO);
    ck_assert_int_eq(pgp_parse_sasl_initial(trailing, 1, &mech, &data, &dl, &e), -EPROTO);
}
END_TEST

START_TEST(test_fe_refused)
{
    static const char ext[] = "PBEDCHS";
    struct pgp_fe_msg msg;
    struct pgp_err e;

    for (size_t i = 0; i < strlen(ext); i++) {
        uint8_t m[] = {(uint8_t)ext[i], 0, 0, 0, 4};

        /* refused from the type byte alone */
        ck_assert_int_eq(run_exact(parse_fe_v, m, 1, &msg, &e), -ENOTSUP);
        expect_err(&e, "08P01", true, "extended query protocol");
        ck_assert_int_eq(msg.type, ext[i]);
        ck_assert_uint_eq(msg.msg_len, 0);
        ck_assert_int_eq(run_exact(parse_fe_v, m, sizeof(m), &msg, &e), -ENOTSUP);
        ck_assert_uint_eq(msg.msg_len, 5);
    }
    static const uint8_t f[] = {'F'};
    ck_assert_int_eq(run_exact(parse_fe_v, f, 1, &msg, &e), -ENOTSUP);
    expect_err(&e, "08P01", true, "fastpath");

    static const uint8_t other[] = {'z', 'f', 'A', 0, 0x80, 0xFF, 'w', 'k'};
    for (size_t i = 0; i < sizeof(other); i++) {
        ck_assert_int_eq(run_exact(parse_fe_v, other + i, 1, &msg, &e), -EPROTO);
        expect_err(&e, "08P01", true, "invalid frontend message type");
    }
    /* nothing buffered */
    ck_assert_int_eq(run_exact(parse_fe_v, other, 0, &msg, &e), 0);
}
END_TEST

START_TEST(test_primary_copydata)
{
    struct pgp_buf b;
    struct pgp_primary_msg pm;
    struct pgp_err e;

    pgp_buf_init(&b);
    ck_assert_int_eq(pgp_put_keepalive(&b, UINT64_C(0x5000028), INT64_C(123456789), true), 23);
    ck_assert_int_eq(pgp_parse_primary_copydata(b.data + 5, b.len - 5, &pm, &e), 0);
    ck_assert_int_eq(pm.kind, 'k');
    ck_assert_uint_eq(pm.wal_end, 0x5000028);
    ck_assert_int_eq(pm.send_time, 123456789);
    ck_assert(pm.reply_requested);
    ck_assert_int_eq(pgp_parse_primary_copydata(b.data + 5, b.len - 6, &pm, &e), -EPROTO);
    expect_err(&e, "08P01", true, "18");
    pgp_buf_reset(&b);

    ck_assert_int_eq(pgp_put_xlogdata(&b, 0x1000000, 0x1002000, -7, "WALWAL", 6), 36);
    ck_assert_int_eq(pgp_parse_primary_copydata(b.data + 5, b.len - 5, &pm, &e), 0);
    ck_assert_int_eq(pm.kind, 'w');
    ck_assert_uint_eq(pm.data_start, 0x1000000);
    ck_assert_uint_eq(pm.wal_end, 0x1002000);
    ck_assert_int_eq(pm.send_time, -7);
    ck_assert_uint_eq(pm.data_len, 6);
    ck_assert_mem_eq(pm.data, "WALWAL", 6);
    ck_assert_int_eq(pgp_parse_primary_copydata(b.data + 5, 24, &pm, &e), -EPROTO);
    ck_assert_int_eq(pgp_parse_primary_copydata(b.data + 5, 25, &pm, &e), 0);
    ck_assert_uint_eq(pm.data_len, 0);
    ck_assert_int_eq(pgp_parse_primary_copydata(b.data, 0, &pm, &e), -EPROTO);
    ck_assert_int_eq(pgp_parse_primary_copydata((const uint8_t *)"r", 1, &pm, &e), -EPROTO);
    pgp_buf_free(&b);
}
END_TEST

/* ---------------------------------------------------------------------------------------- */
/* Replication commands                                                                      */

static struct pgp_cmd
cmd_ok(const char *s)
{
    struct pgp_cmd c;
    struct pgp_err e = {.msg = ""};
    char *copy = malloc(strlen(s) + 1); /* exact size: catch over-reads */
    int rc;

    ck_assert_ptr_nonnull(copy);
    memcpy(copy, s, strlen(s) + 1);
    rc = pgp_parse_command(copy, strlen(s), &c, &e);
    free(copy);
    ck_assert_msg(rc == 0, "\"%s\" -> %d (%s)", s, rc, e.msg);
    return c;
}

static void
cmd_bad(const char *s, int rc_expected, const char *sqlstate, const char *sub1, const char *sub2)
{
    struct pgp_cmd c;
    struct pgp_err e;
    char *copy = malloc(strlen(s) + 1);
    int rc;

    ck_assert_ptr_nonnull(copy);
    memcpy(copy, s, strlen(s) + 1);
    rc = pgp_parse_command(copy, strlen(s), &c, &e);
    free(copy);
    ck_assert_msg(rc == rc_expected, "\"%s\" -> %d, expected %d", s, rc, rc_expected);
    expect_err(&e, sqlstate, false, sub1);
    if (sub2 != NULL)
        ck_assert_msg(strstr(e.msg, sub2) != NULL, "\"%s\": message \"%s\" lacks \"%s\"", s, e.msg,
                      sub2);
}

START_TEST(test_cmd_walreceiver)
{
    struct pgp_cmd c;

    c = cmd_ok("IDENTIFY_SYSTEM");
    ck_assert_int_eq(c.kind, PGP_CMD_IDENTIFY_SYSTEM);
    ck_assert_str_eq(c.tag, "IDENTIFY_SYSTEM");

    c = cmd_ok("TIMELINE_HISTORY 2");
    ck_assert_int_eq(c.kind, PGP_CMD_TIMELINE_HISTORY);
    ck_assert_uint_eq(c.timeline, 2);
    ck_assert_str_eq(c.tag, "TIMELINE_HISTORY");

    c = cmd_ok("START_REPLICATION SLOT \"walmirror\" 0/3000000 TIMELINE 1");
    ck_assert_int_eq(c.kind, PGP_CMD_START_REPLICATION);
    ck_assert(c.has_slot);
    ck_assert_str_eq(c.slot, "walmirror");
    ck_assert(!c.physical);
    ck_assert_uint_eq(c.lsn, 0x3000000);
    ck_assert_uint_eq(c.timeline, 1);
    ck_assert_str_eq(c.tag, "START_REPLICATION");

    c = cmd_ok("START_REPLICATION 0/3000000 TIMELINE 1");
    ck_assert(!c.has_slot);
    ck_assert_str_eq(c.slot, "");
    ck_assert_uint_eq(c.lsn, 0x3000000);
    ck_assert_uint_eq(c.timeline, 1);

    c = cmd_ok("CREATE_REPLICATION_SLOT \"pg_walreceiver_4242\" TEMPORARY PHYSICAL (RESERVE_WAL)");
    ck_assert_int_eq(c.kind, PGP_CMD_CREATE_REPLICATION_SLOT);
    ck_assert_str_eq(c.slot, "pg_walreceiver_4242");
    ck_assert(c.temporary);
    ck_assert(c.reserve_wal);
    ck_assert_str_eq(c.tag, "CREATE_REPLICATION_SLOT");
}
END_TEST

START_TEST(test_cmd_pg_receivewal)
{
    struct pgp_cmd c;

    c = cmd_ok("SHOW data_directory_mode");
    ck_assert_int_eq(c.kind, PGP_CMD_SHOW);
    ck_assert_str_eq(c.name, "data_directory_mode");
    ck_assert_str_eq(c.tag, "SHOW");
    c = cmd_ok("SHOW wal_segment_size");
    ck_assert_str_eq(c.name, "wal_segment_size");

    c = cmd_ok("READ_REPLICATION_SLOT walmirror");
    ck_assert_int_eq(c.kind, PGP_CMD_READ_REPLICATION_SLOT);
    ck_assert_str_eq(c.slot, "walmirror");
    ck_assert_str_eq(c.tag, "READ_REPLICATION_SLOT");

    c = cmd_ok("START_REPLICATION 0/1000000 TIMELINE 1");
    ck_assert_uint_eq(c.lsn, 0x1000000);
    ck_assert_uint_eq(c.timeline, 1);
    c = cmd_ok("START_REPLICATION SLOT \"walmirror\" 0/1000000 TIMELINE 1");
    ck_assert_str_eq(c.slot, "walmirror");

    /* pg_receivewal 15 against a PG15 server: new syntax, with its odd spacing */
    c = cmd_ok("CREATE_REPLICATION_SLOT \"x\" PHYSICAL ( RESERVE_WAL)");
    ck_assert_str_eq(c.slot, "x");
    ck_assert(!c.temporary);
    ck_assert(c.reserve_wal);
    c = cmd_ok("CREATE_REPLICATION_SLOT \"x\" PHYSICAL (RESERVE_WAL)");
    ck_assert(c.reserve_wal);
    /* legacy syntax (and pg_receivewal's double space) */
    c = cmd_ok("CREATE_REPLICATION_SLOT \"x\" PHYSICAL RESERVE_WAL");
    ck_assert(c.reserve_wal);
    c = cmd_ok("CREATE_REPLICATION_SLOT \"x\" PHYSICAL  RESERVE_WAL");
    ck_assert(c.reserve_wal);
    c = cmd_ok("CREATE_REPLICATION_SLOT \"x\" PHYSICAL");
    ck_assert(!c.reserve_wal);

    c = cmd_ok("DROP_REPLICATION_SLOT \"x\"");
    ck_assert_int_eq(c.kind, PGP_CMD_DROP_REPLICATION_SLOT);
    ck_assert_str_eq(c.slot, "x");
    ck_assert(!c.wait);
    ck_assert_str_eq(c.tag, "DROP_REPLICATION_SLOT");
    c = cmd_ok("DROP_REPLICATION_SLOT \"x\" WAIT");
    ck_assert(c.wait);
}
END_TEST

START_TEST(test_cmd_variants)
{
    struct pgp_cmd c;

    /* case-insensitive keywords; unquoted names fold to lower case, quoted ones do not */
    c = cmd_ok("identify_system");
    ck_assert_int_eq(c.kind, PGP_CMD_IDENTIFY_SYSTEM);
    c = cmd_ok("Start_Replication slot WalMirror physical 1a/ff000000 timeline 2");
    ck_assert_str_eq(c.slot, "walmirror");
    ck_assert(c.physical);
    ck_assert_uint_eq(c.lsn, UINT64_C(0x1AFF000000));
    ck_assert_uint_eq(c.timeline, 2);
    c = cmd_ok("START_REPLICATION SLOT \"WalMirror\" 0/0");
    ck_assert_str_eq(c.slot, "WalMirror");
    ck_assert_uint_eq(c.timeline, 0);
    c = cmd_ok("show Wal_Segment_Size");
    ck_assert_str_eq(c.name, "wal_segment_size");
    c = cmd_ok("SHOW \"DateStyle\"");
    ck_assert_str_eq(c.name, "DateStyle");
    c = cmd_ok("SHOW ext.some_setting");
    ck_assert_str_eq(c.name, "ext.some_setting");
    c = cmd_ok("create_replication_slot s temporary physical reserve_wal");
    ck_assert(c.temporary && c.reserve_wal);

    /* whitespace and the optional semicolon */
    c = cmd_ok("  \tIDENTIFY_SYSTEM ; \n");
    ck_assert_int_eq(c.kind, PGP_CMD_IDENTIFY_SYSTEM);
    c = cmd_ok("IDENTIFY_SYSTEM;");
    c = cmd_ok("START_REPLICATION\n0/3000000\nTIMELINE\t1;");
    ck_assert_uint_eq(c.timeline, 1);
    c = cmd_ok("START_REPLICATION 0/3000000;");
    ck_assert_uint_eq(c.lsn, 0x3000000);
    c = cmd_ok("START_REPLICATION PHYSICAL 0/3000000");
    ck_assert(c.physical);
    c = cmd_ok("TIMELINE_HISTORY 4294967295");
    ck_assert_uint_eq(c.timeline, UINT32_MAX);

    /* generic options */
    c = cmd_ok("CREATE_REPLICATION_SLOT s PHYSICAL (RESERVE_WAL false)");
    ck_assert(!c.reserve_wal);
    c = cmd_ok("CREATE_REPLICATION_SLOT s PHYSICAL (reserve_wal 'on')");
    ck_assert(c.reserve_wal);
    c = cmd_ok("CREATE_REPLICATION_SLOT s PHYSICAL (RESERVE_WAL 0)");
    ck_assert(!c.reserve_wal);
    c = cmd_ok("CREATE_REPLICATION_SLOT s PHYSICAL (RESERVE_WAL TRUE)");
    ck_assert(c.reserve_wal);
    c = cmd_ok("CREATE_REPLICATION_SLOT s PHYSICAL (\"reserve_wal\" 'Off')");
    ck_assert(!c.reserve_wal);

    /* 63-byte names are fine */
    c = cmd_ok(
        "READ_REPLICATION_SLOT a12345678901234567890123456789012345678901234567890123456789012");
    ck_assert_uint_eq(strlen(c.slot), 63);
}
END_TEST

START_TEST(test_cmd_errors)
{
    const char *SE = PGP_SQLSTATE_SYNTAX_ERROR, *NS = PGP_SQLSTATE_FEATURE_NOT_SUPPORTED;

    /* bad LSNs: the message names the command and the offending text */
    cmd_bad("START_REPLICATION 0/", -EINVAL, SE, "START_REPLICATION", "\"0/\"");
    cmd_bad("START_REPLICATION G/1", -EINVAL, SE, "START_REPLICATION", "\"G/1\"");
    cmd_bad("START_REPLICATION 123456789/0", -EINVAL, SE, "START_REPLICATION", "123456789/0");
    cmd_bad("START_REPLICATION 0/123456789 TIMELINE 1", -EINVAL, SE, "WAL location", NULL);
    cmd_bad("START_REPLICATION /1", -EINVAL, SE, "WAL location", NULL);
    cmd_bad("START_REPLICATION 0x1/0", -EINVAL, SE, "WAL location", NULL);
    cmd_bad("START_REPLICATION 0/0TIMELINE 1", -EINVAL, SE, "WAL location", NULL);
    cmd_bad("START_REPLICATION", -EINVAL, SE, "START_REPLICATION", "end of command");
    cmd_bad("START_REPLICATION SLOT \"s\"", -EINVAL, SE, "WAL location", "end of command");
    cmd_bad("START_REPLICATION SLOT 0/0", -EINVAL, SE, "slot name", NULL);

    /* timelines */
    cmd_bad("TIMELINE_HISTORY 0", -EINVAL, SE, "invalid timeline 0", "TIMELINE_HISTORY");
    cmd_bad("START_REPLICATION 0/3000000 TIMELINE 0", -EINVAL, SE, "invalid timeline 0",
            "START_REPLICATION");
    cmd_bad("TIMELINE_HISTORY 4294967296", -EINVAL, SE, "out of range", NULL);
    cmd_bad("TIMELINE_HISTORY 99999999999999999999999", -EINVAL, SE, "out of range", NULL);
    cmd_bad("TIMELINE_HISTORY -1", -EINVAL, SE, "timeline ID", "\"-1\"");
    cmd_bad("TIMELINE_HISTORY", -EINVAL, SE, "timeline ID", "end of command");
    cmd_bad("TIMELINE_HISTORY 2abc", -EINVAL, SE, "timeline ID", NULL);
    cmd_bad("TIMELINE_HISTORY 2 3", -EINVAL, SE, "end of command", "\"3\"");
    cmd_bad("START_REPLICATION 0/0 TIMELINE", -EINVAL, SE, "timeline ID", NULL);

    /* trailing garbage, missing names, quoting */
    cmd_bad("IDENTIFY_SYSTEM foo", -EINVAL, SE, "IDENTIFY_SYSTEM", "\"foo\"");
    cmd_bad("IDENTIFY_SYSTEM;;", -EINVAL, SE, "IDENTIFY_SYSTEM", NULL);
    cmd_bad("READ_REPLICATION_SLOT", -EINVAL, SE, "READ_REPLICATION_SLOT", "slot name");
    cmd_bad("READ_REPLICATION_SLOT 'x'", -EINVAL, SE, "slot name", NULL);
    cmd_bad("SHOW", -EINVAL, SE, "variable name", NULL);
    cmd_bad("SHOW a.", -EINVAL, SE, "variable name", NULL);
    cmd_bad("START_REPLICATION SLOT \"abc 0/0", -EINVAL, SE, "unterminated quoted identifier",
            NULL);
    cmd_bad("DROP_REPLICATION_SLOT \"\"", -EINVAL, SE, "zero-length", NULL);
    cmd_bad(
        "READ_REPLICATION_SLOT a123456789012345678901234567890123456789012345678901234567890123",
        -EINVAL, SE, "longer than 63", NULL);
    cmd_bad("DROP_REPLICATION_SLOT x NOWAIT", -EINVAL, SE, "DROP_REPLICATION_SLOT", "NOWAIT");

    /* CREATE_REPLICATION_SLOT shapes and options */
    cmd_bad("CREATE_REPLICATION_SLOT x", -EINVAL, SE, "PHYSICAL", "end of command");
    cmd_bad("CREATE_REPLICATION_SLOT x TEMPORARY", -EINVAL, SE, "PHYSICAL", NULL);
    cmd_bad("CREATE_REPLICATION_SLOT x PHYSICAL ()", -EINVAL, SE, "option name", NULL);
    cmd_bad("CREATE_REPLICATION_SLOT x PHYSICAL (RESERVE_WAL", -EINVAL, SE, "')'", NULL);
    cmd_bad("CREATE_REPLICATION_SLOT x PHYSICAL (RESERVE_WAL 2)", -EINVAL, SE,
            "requires a Boolean value", NULL);
    cmd_bad("CREATE_REPLICATION_SLOT x PHYSICAL (RESERVE_WAL 'maybe')", -EINVAL, SE,
            "requires a Boolean value", NULL);
    cmd_bad("CREATE_REPLICATION_SLOT x PHYSICAL (RESERVE_WAL 'unterminated)", -EINVAL, SE,
            "unterminated quoted string", NULL);
    cmd_bad("CREATE_REPLICATION_SLOT x PHYSICAL (RESERVE_WAL, RESERVE_WAL)", -EINVAL, SE,
            "conflicting or redundant", NULL);
    cmd_bad("CREATE_REPLICATION_SLOT x PHYSICAL RESERVE_WAL RESERVE_WAL", -EINVAL, SE,
            "conflicting or redundant", NULL);
    cmd_bad("CREATE_REPLICATION_SLOT x PHYSICAL (FOO)", -EINVAL, SE, "unrecognized option", "foo");
    cmd_bad("CREATE_REPLICATION_SLOT x PHYSICAL (SNAPSHOT 'export')", -EINVAL, SE, "logical",
            "snapshot");
    cmd_bad("CREATE_REPLICATION_SLOT x PHYSICAL EXPORT_SNAPSHOT", -EINVAL, SE, "logical", NULL);
    cmd_bad("CREATE_REPLICATION_SLOT x PHYSICAL TWO_PHASE", -EINVAL, SE, "logical", "two_phase");
    cmd_bad("CREATE_REPLICATION_SLOT x PHYSICAL RESERVE_WAL junk", -EINVAL, SE, "end of command",
            "junk");

    /* refused: logical, BASE_BACKUP, SQL, empty */
    cmd_bad("CREATE_REPLICATION_SLOT \"x\" LOGICAL pgoutput (SNAPSHOT 'nothing')", -ENOTSUP, NS,
            "logical replication is not supported", "CREATE_REPLICATION_SLOT");
    cmd_bad("CREATE_REPLICATION_SLOT \"x\" TEMPORARY LOGICAL test_decoding", -ENOTSUP, NS,
            "logical", NULL);
    cmd_bad("START_REPLICATION SLOT \"x\" LOGICAL 0/0 (proto_version '1')", -ENOTSUP, NS, "logical",
            "START_REPLICATION");
    cmd_bad("BASE_BACKUP (LABEL 'x', PROGRESS)", -ENOTSUP, NS, "BASE_BACKUP", NULL);
    cmd_bad("base_backup", -ENOTSUP, NS, "BASE_BACKUP", NULL);
    cmd_bad("SELECT 1", -ENOTSUP, NS, "\"SELECT\"", "SQL");
    cmd_bad("ALTER_REPLICATION_SLOT x (FAILOVER)", -ENOTSUP, NS, "ALTER_REPLICATION_SLOT", NULL);
    cmd_bad("IDENTIFY_SYSTEMS", -ENOTSUP, NS, "IDENTIFY_SYSTEMS", NULL);
    cmd_bad("", -ENOTSUP, NS, "empty", NULL);
    cmd_bad("  ; ", -ENOTSUP, NS, NULL, NULL);
    cmd_bad("\x01\x02\xff garbage", -ENOTSUP, NS, "\"?\"", NULL);

    /* embedded NUL (length-delimited input) */
    struct pgp_cmd c;
    struct pgp_err e;
    ck_assert_int_eq(pgp_parse_command("IDENTIFY_SYSTEM\0x", 17, &c, &e), -EINVAL);
    expect_err(&e, SE, false, "NUL");
    /* the length bounds the text */
    ck_assert_int_eq(pgp_parse_command("IDENTIFY_SYSTEM garbage", 15, &c, &e), 0);
}
END_TEST

/* The query of a 'Q' message goes straight into the command parser. */
START_TEST(test_query_to_command)
{
    uint8_t m[128];
    struct pgp_fe_msg msg;
    struct pgp_cmd c;
    struct pgp_err e;
    size_t n = query_msg(m, sizeof(m), "START_REPLICATION SLOT \"walmirror\" 0/3000000 TIMELINE 1");

    ck_assert_int_eq(pgp_parse_fe(m, n, &msg, &e), (int)n);
    ck_assert_int_eq(pgp_parse_command(msg.query, msg.query_len, &c, &e), 0);
    ck_assert_str_eq(c.slot, "walmirror");
    ck_assert_uint_eq(c.lsn, 0x3000000);

    /* and an error turns into a well-formed ErrorResponse */
    struct pgp_buf b;
    pgp_buf_init(&b);
    ck_assert_int_eq(pgp_parse_command("START_REPLICATION G/1", 21, &c, &e), -EINVAL);
    ck_assert_int_gt(pgp_put_error_from(&b, &e), 0);
    ck_assert_uint_eq(b.data[0], 'E');
    ck_assert_uint_eq(
        ((size_t)b.data[1] << 24 | (size_t)b.data[2] << 16 | (size_t)b.data[3] << 8 | b.data[4]) +
            1,
        b.len);
    ck_assert_ptr_nonnull(memmem(b.data, b.len, "SERROR", 7)); /* NUL included */
    ck_assert_ptr_nonnull(memmem(b.data, b.len, "VERROR", 7));
    ck_assert_ptr_nonnull(memmem(b.data, b.len, "C42601", 7));
    ck_assert_ptr_nonnull(memmem(b.data, b.len, "\"G/1\"", 5));
    ck_assert_uint_eq(b.data[b.len - 1], 0);
    pgp_buf_free(&b);
}
END_TEST

/* ---------------------------------------------------------------------------------------- */
/* Random input: no crash, no over-read (ASan), only documented results                       */

static uint64_t rng_state = UINT64_C(0x9E3779B97F4A7C15);

static uint32_t
rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

START_TEST(test_random_input)
{
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcxyz0123456789/ ;()',.\"\t-";
    uint8_t src[96];
    struct pgp_fe_msg msg;
    struct pgp_initial in;
    struct pgp_cmd c;
    struct pgp_err e;
    struct pgp_standby_msg sm;
    struct pgp_primary_msg pm;

    for (int iter = 0; iter < 20000; iter++) {
        size_t n = rng() % sizeof(src);
        uint8_t *p;
        int rc;

        for (size_t i = 0; i < n; i++)
            src[i] = (uint8_t)rng();
        /* bias towards plausible headers */
        if (n >= 5 && (iter & 1)) {
            src[0] = "QdcXp"[rng() % 5];
            src[1] = src[2] = 0;
            src[3] = 0;
            src[4] = (uint8_t)(rng() % 100);
        }
        p = malloc(n > 0 ? n : 1);
        ck_assert_ptr_nonnull(p);
        memcpy(p, src, n);

        rc = pgp_parse_fe(p, n, &msg, &e);
        ck_assert(rc == 0 || (rc > 0 && (size_t)rc <= n) || rc == -EPROTO || rc == -EMSGSIZE ||
                  rc == -ENOTSUP);
        rc = pgp_parse_initial(p, n, &in, &e);
        ck_assert(rc == 0 || (rc > 0 && (size_t)rc <= n) || rc == -EPROTO || rc == -EMSGSIZE ||
                  rc == -ENOTSUP || rc == -EINVAL);
        rc = pgp_parse_standby_copydata(p, n, &sm, &e);
        ck_assert(rc == 0 || rc == -EPROTO);
        rc = pgp_parse_primary_copydata(p, n, &pm, &e);
        ck_assert(rc == 0 || rc == -EPROTO);
        free(p);

        /* command text from a grammar-ish alphabet, prefixed by a real keyword half the time */
        static const char *const kws[] = {"START_REPLICATION ", "CREATE_REPLICATION_SLOT x ",
                                          "SHOW ", "TIMELINE_HISTORY ", "DROP_REPLICATION_SLOT "};
        char text[128];
        size_t tl = 0;
        if (iter & 2) {
            const char *k = kws[rng() % 5];
            tl = strlen(k);
            memcpy(text, k, tl);
        }
        size_t extra = rng() % 40;
        for (size_t i = 0; i < extra; i++)
            text[tl++] = alphabet[rng() % (sizeof(alphabet) - 1)];
        char *t = malloc(tl > 0 ? tl : 1);
        ck_assert_ptr_nonnull(t);
        memcpy(t, text, tl);
        rc = pgp_parse_command(t, tl, &c, &e);
        ck_assert(rc == 0 || rc == -EINVAL || rc == -ENOTSUP);
        if (rc < 0)
            ck_assert_uint_gt(strlen(e.msg), 0);
        free(t);
    }
}
END_TEST

static Suite *
pgproto_suite(void)
{
    Suite *s = suite_create("pgproto");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_buf_basics);
    tcase_add_test(tc, test_lsn);
    tcase_add_test(tc, test_misc_helpers);
    tcase_add_test(tc, test_put_simple_messages);
    tcase_add_test(tc, test_put_rows_and_errors);
    tcase_add_test(tc, test_put_copy_messages);
    tcase_add_test(tc, test_result_show_literal);
    tcase_add_test(tc, test_result_sets);
    tcase_add_test(tc, test_initial_requests);
    tcase_add_test(tc, test_initial_startup);
    tcase_add_test(tc, test_initial_startup_errors);
    tcase_add_test(tc, test_fe_query);
    tcase_add_test(tc, test_fe_copy);
    tcase_add_test(tc, test_fe_password_and_sasl);
    tcase_add_test(tc, test_fe_refused);
    tcase_add_test(tc, test_primary_copydata);
    tcase_add_test(tc, test_cmd_walreceiver);
    tcase_add_test(tc, test_cmd_pg_receivewal);
    tcase_add_test(tc, test_cmd_variants);
    tcase_add_test(tc, test_cmd_errors);
    tcase_add_test(tc, test_query_to_command);
    tcase_add_test(tc, test_random_input);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(pgproto_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
