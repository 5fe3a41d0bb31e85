/*
 * test_frame.c - frame encoding and every decoder rejection path; message bodies.
 */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "cursor.h"
#include "frame.h"
#include "msg.h"

static uint8_t *
pattern(size_t len, unsigned seed)
{
    uint8_t *p = malloc(len + 1);
    for (size_t i = 0; i < len; i++)
        p[i] = (uint8_t)((i * 31 + seed) ^ (i >> 7));
    return p;
}

/* Recomputes the trailer so that a test can alter the header and reach the later checks. */
static void
reseal(uint8_t *f, size_t wire_len)
{
    struct wbuf w = wbuf_init(f + FRAME_HDR_SIZE + wire_len, FRAME_TRAILER_SIZE);
    ck_assert(wbuf_put_u64le(&w, XXH3_64bits(f, FRAME_HDR_SIZE + wire_len)));
}

static void
put_u32_at(uint8_t *f, size_t off, uint32_t v)
{
    struct wbuf w = wbuf_init(f + off, 4);
    ck_assert(wbuf_put_u32le(&w, v));
}

static void
roundtrip(size_t len)
{
    uint8_t *payload = pattern(len, (unsigned)len);
    uint8_t *buf = malloc(FRAME_OVERHEAD + len);
    struct frame_hdr h;
    const uint8_t *p;
    ssize_t n =
        frame_encode(buf, FRAME_OVERHEAD + len, FRAME_WAL, 42, 0x1234567890ULL, 7, payload, len);

    ck_assert_int_eq(n, (ssize_t)(FRAME_OVERHEAD + len));
    ck_assert_int_eq(frame_decode_exact(buf, (size_t)n, &h, &p), 0);
    ck_assert_uint_eq(h.version, FRAME_VERSION);
    ck_assert_uint_eq(h.type, FRAME_WAL);
    ck_assert_uint_eq(h.seq, 42);
    ck_assert_uint_eq(h.raw_len, len);
    ck_assert_uint_eq(h.wire_len, len);
    ck_assert_uint_eq(h.lsn, 0x1234567890ULL);
    ck_assert_uint_eq(h.epoch, 7);
    ck_assert(len == 0 || memcmp(p, payload, len) == 0);
    free(payload);
    free(buf);
}

START_TEST(test_roundtrip_sizes)
{
    roundtrip(0);
    roundtrip(1);
    roundtrip(8192);
    roundtrip(FRAME_MAX_RAW);
}
END_TEST

START_TEST(test_encode_rejects_oversized)
{
    static uint8_t buf[16];
    ck_assert_int_eq(frame_encode(buf, sizeof(buf), FRAME_WAL, 1, 0, 0, buf, FRAME_MAX_RAW + 1),
                     WIRE_ETOOBIG);
}
END_TEST

/* A valid 100-byte WAL frame to mutilate. */
static size_t
sample(uint8_t *buf, size_t cap)
{
    uint8_t *payload = pattern(100, 3);
    ssize_t n = frame_encode(buf, cap, FRAME_WAL, 1, 4096, 1, payload, 100);
    free(payload);
    ck_assert_int_gt(n, 0);
    return (size_t)n;
}

START_TEST(test_reject_each_field)
{
    uint8_t f[256];
    struct frame_hdr h;
    const uint8_t *p;
    size_t n;

    n = sample(f, sizeof(f));
    f[0] ^= 0x20;
    ck_assert_int_eq(frame_decode_exact(f, n, &h, &p), WIRE_EMAGIC);

    n = sample(f, sizeof(f));
    f[4] = FRAME_VERSION + 1;
    reseal(f, 100);
    ck_assert_int_eq(frame_decode_exact(f, n, &h, &p), WIRE_EVERSION);

    n = sample(f, sizeof(f));
    f[5] = 0x7f;
    reseal(f, 100);
    ck_assert_int_eq(frame_decode_exact(f, n, &h, &p), WIRE_ETYPE);
    f[5] = 0x11; /* reserved for control messages: not yet known */
    reseal(f, 100);
    ck_assert_int_eq(frame_decode_exact(f, n, &h, &p), WIRE_ETYPE);
    f[5] = 0x09; /* the first session type not yet known */
    reseal(f, 100);
    ck_assert_int_eq(frame_decode_exact(f, n, &h, &p), WIRE_ETYPE);
    f[5] = FRAME_CONTROL;
    reseal(f, 100);
    ck_assert_int_eq(frame_decode_exact(f, n, &h, &p), 0);

    n = sample(f, sizeof(f));
    f[7] = 0x80;
    reseal(f, 100);
    ck_assert_int_eq(frame_decode_exact(f, n, &h, &p), WIRE_EFLAGS);

    n = sample(f, sizeof(f));
    f[5] = FRAME_ACK;
    f[6] = FRAME_F_LZ4;
    reseal(f, 100);
    ck_assert_int_eq(frame_decode_exact(f, n, &h, &p), WIRE_EFLAGS);

    n = sample(f, sizeof(f));
    put_u32_at(f, 16, FRAME_MAX_RAW + 1);
    ck_assert_int_eq(frame_decode_exact(f, n, &h, &p), WIRE_ETOOBIG);

    n = sample(f, sizeof(f));
    put_u32_at(f, 20, FRAME_MAX_WIRE + 1);
    ck_assert_int_eq(frame_decode_exact(f, n, &h, &p), WIRE_ETOOBIG);

    /* Uncompressed with raw != wire. */
    n = sample(f, sizeof(f));
    put_u32_at(f, 16, 99);
    reseal(f, 100);
    ck_assert_int_eq(frame_decode_exact(f, n, &h, &p), WIRE_ELENGTH);

    /* Compressed with a wire length beyond LZ4's bound for the raw length. */
    n = sample(f, sizeof(f));
    f[6] = FRAME_F_LZ4;
    put_u32_at(f, 16, 10);
    reseal(f, 100);
    ck_assert_int_eq(frame_decode_exact(f, n, &h, &p), WIRE_ELENGTH);

    n = sample(f, sizeof(f));
    f[FRAME_HDR_SIZE + 50] ^= 1;
    ck_assert_int_eq(frame_decode_exact(f, n, &h, &p), WIRE_ECHECKSUM);

    n = sample(f, sizeof(f));
    f[n - 1] ^= 0x80;
    ck_assert_int_eq(frame_decode_exact(f, n, &h, &p), WIRE_ECHECKSUM);

    n = sample(f, sizeof(f));
    ck_assert_int_eq(frame_decode_exact(f, n + 1, &h, &p), WIRE_ELENGTH);
}
END_TEST

START_TEST(test_truncated_every_prefix)
{
    uint8_t f[256];
    struct frame_hdr h;
    const uint8_t *p;
    size_t n = sample(f, sizeof(f));

    for (size_t len = 0; len < n; len++) {
        ck_assert_int_eq(frame_decode(f, len, &h, &p), 0);
        ck_assert_int_eq(frame_decode_exact(f, len, &h, &p), WIRE_ETRUNC);
    }
    ck_assert_int_eq(frame_decode(f, n, &h, &p), (ssize_t)n);
}
END_TEST

START_TEST(test_every_bit_flip_detected)
{
    uint8_t f[256], g[256];
    struct frame_hdr h;
    const uint8_t *p;
    size_t n = sample(f, sizeof(f));

    for (size_t bit = 0; bit < n * 8; bit++) {
        memcpy(g, f, n);
        g[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        ck_assert_msg(frame_decode_exact(g, n, &h, &p) < 0, "bit %zu flip accepted", bit);
    }
}
END_TEST

START_TEST(test_plaintext_rejected_early)
{
    const char *http = "GET / HTTP/1.1\r\n";
    struct frame_hdr h;
    const uint8_t *p;

    /* Four bytes are enough to tell a foreign peer; no need to wait for a full header. */
    ck_assert_int_eq(frame_decode(http, 4, &h, &p), WIRE_EMAGIC);
    ck_assert_int_eq(frame_decode(http, strlen(http), &h, &p), WIRE_EMAGIC);
}
END_TEST

START_TEST(test_error_names_distinct)
{
    int codes[] = {WIRE_EMAGIC,    WIRE_EVERSION, WIRE_ETYPE,       WIRE_ETOOBIG,   WIRE_ETRUNC,
                   WIRE_ECHECKSUM, WIRE_ELENGTH,  WIRE_EDECOMPRESS, WIRE_ESEQUENCE, WIRE_EFLAGS};
    size_t k = sizeof(codes) / sizeof(codes[0]);

    for (size_t i = 0; i < k; i++)
        for (size_t j = i + 1; j < k; j++)
            ck_assert_str_ne(wire_strerror(codes[i]), wire_strerror(codes[j]));
    ck_assert_str_eq(wire_strerror(-2), "No such file or directory");
}
END_TEST

START_TEST(test_msg_roundtrip)
{
    uint8_t buf[MSG_MAX_BODY];
    struct msg_hello h = {.role = MSG_ROLE_SINK,
                          .system_id = 7300000000000000001ULL,
                          .timeline = 3,
                          .durable_lsn = 0x3000000,
                          .applied_lsn = 0x2FFF000,
                          .capabilities = MSG_CAP_LZ4};
    struct msg_hello h2;
    struct msg_ack a = {.write_lsn = 300, .flush_lsn = 200, .apply_lsn = 100, .send_time_us = 9};
    struct msg_ack a2;
    struct msg_heartbeat b = {
        .send_time_us = 11, .echo_time_us = 12, .echo_hold_us = 13, .reply_requested = 1};
    struct msg_heartbeat b2;
    struct msg_error e = {.code = 10006}, e2;
    ssize_t n;

    strcpy(h.node_name, "site-b");
    n = msg_encode_hello(&h, buf, sizeof(buf));
    ck_assert_int_gt(n, 0);
    ck_assert_int_eq(msg_decode_hello(buf, (size_t)n, &h2), 0);
    ck_assert_str_eq(h2.node_name, "site-b");
    ck_assert_uint_eq(h2.role, MSG_ROLE_SINK);
    ck_assert_uint_eq(h2.system_id, h.system_id);
    ck_assert_uint_eq(h2.timeline, 3);
    ck_assert_uint_eq(h2.durable_lsn, 0x3000000);
    ck_assert_uint_eq(h2.applied_lsn, 0x2FFF000);
    ck_assert_uint_eq(h2.capabilities, MSG_CAP_LZ4);
    for (ssize_t cut = 0; cut < n; cut++)
        ck_assert_int_eq(msg_decode_hello(buf, (size_t)cut, &h2), WIRE_EMESSAGE);

    n = msg_encode_ack(&a, buf, sizeof(buf));
    ck_assert_int_eq(n, 32);
    ck_assert_int_eq(msg_decode_ack(buf, (size_t)n, &a2), 0);
    ck_assert_uint_eq(a2.write_lsn, 300);
    ck_assert_uint_eq(a2.flush_lsn, 200);
    ck_assert_uint_eq(a2.apply_lsn, 100);
    ck_assert_int_eq(msg_decode_ack(buf, 31, &a2), WIRE_EMESSAGE);
    a.flush_lsn = 301; /* flushed beyond written: a lie */
    n = msg_encode_ack(&a, buf, sizeof(buf));
    ck_assert_int_eq(msg_decode_ack(buf, (size_t)n, &a2), WIRE_EMESSAGE);

    n = msg_encode_heartbeat(&b, buf, sizeof(buf));
    ck_assert_int_eq(msg_decode_heartbeat(buf, (size_t)n, &b2), 0);
    ck_assert_uint_eq(b2.echo_hold_us, 13);
    ck_assert_uint_eq(b2.reply_requested, 1);

    strcpy(e.text, "system identifier mismatch");
    n = msg_encode_error(&e, buf, sizeof(buf));
    ck_assert_int_eq(msg_decode_error(buf, (size_t)n, &e2), 0);
    ck_assert_uint_eq(e2.code, 10006);
    ck_assert_str_eq(e2.text, "system identifier mismatch");

    /* A hello whose name is longer than allowed, or empty, or holds a NUL, is malformed. */
    {
        struct wbuf w = wbuf_init(buf, sizeof(buf));
        ck_assert(wbuf_put_u16le(&w, MSG_NAME_MAX + 1));
        memset(buf + 2, 'x', MSG_NAME_MAX + 1);
        ck_assert_int_eq(msg_decode_hello(buf, sizeof(buf), &h2), WIRE_EMESSAGE);
        buf[0] = 0;
        buf[1] = 0;
        ck_assert_int_eq(msg_decode_hello(buf, sizeof(buf), &h2), WIRE_EMESSAGE);
        buf[0] = 3;
        memcpy(buf + 2, "a\0b", 3);
        ck_assert_int_eq(msg_decode_hello(buf, sizeof(buf), &h2), WIRE_EMESSAGE);
    }
}
END_TEST

START_TEST(test_msg_timeline_and_control)
{
    static const char hist[] = "1\t0/3000148\tno recovery target specified\n";
    uint8_t buf[MSG_MAX_BODY];
    struct msg_timeline t = {.tli = 2, .switch_lsn = 0x3000148, .history = hist,
                             .history_len = sizeof(hist) - 1};
    struct msg_timeline t2;
    struct msg_control c = {.kind = MSG_CTL_SWITCHOVER_PROMOTE, .lsn = 0x5000028,
                            .value = 1234567, .value2 = 9, .mark_lsn = 0x2F00000,
                            .mark_unix_us = 1700000000000001ull};
    struct msg_control c2;
    ssize_t n;

    n = msg_encode_timeline(&t, buf, sizeof(buf));
    ck_assert_int_eq(n, 16 + (ssize_t)sizeof(hist) - 1);
    ck_assert_int_eq(msg_decode_timeline(buf, (size_t)n, &t2), 0);
    ck_assert_uint_eq(t2.tli, 2);
    ck_assert_uint_eq(t2.switch_lsn, 0x3000148);
    ck_assert_uint_eq(t2.history_len, sizeof(hist) - 1);
    ck_assert(memcmp(t2.history, hist, t2.history_len) == 0);
    for (ssize_t cut = 0; cut < n; cut++)
        ck_assert_int_eq(msg_decode_timeline(buf, (size_t)cut, &t2), WIRE_EMESSAGE);
    /* Timeline 0, or a later timeline without its history or switch point, is malformed. */
    t.tli = 0;
    n = msg_encode_timeline(&t, buf, sizeof(buf));
    ck_assert_int_eq(msg_decode_timeline(buf, (size_t)n, &t2), WIRE_EMESSAGE);
    t.tli = 3;
    t.history_len = 0;
    n = msg_encode_timeline(&t, buf, sizeof(buf));
    ck_assert_int_eq(msg_decode_timeline(buf, (size_t)n, &t2), WIRE_EMESSAGE);
    t.tli = 1;
    t.switch_lsn = 0;
    n = msg_encode_timeline(&t, buf, sizeof(buf));
    ck_assert_int_eq(msg_decode_timeline(buf, (size_t)n, &t2), 0);
    ck_assert_uint_eq(t2.history_len, 0);
    t.history_len = MSG_HISTORY_MAX + 1;
    ck_assert_int_eq(msg_encode_timeline(&t, buf, sizeof(buf)), -EMSGSIZE);

    strcpy(c.text, "switchover requested by walmirrorctl");
    n = msg_encode_control(&c, buf, sizeof(buf));
    ck_assert_int_gt(n, 0);
    ck_assert_int_eq(msg_decode_control(buf, (size_t)n, &c2), 0);
    ck_assert_uint_eq(c2.kind, MSG_CTL_SWITCHOVER_PROMOTE);
    ck_assert_uint_eq(c2.lsn, 0x5000028);
    ck_assert_uint_eq(c2.value, 1234567);
    ck_assert_uint_eq(c2.value2, 9);
    ck_assert_str_eq(c2.text, c.text);
    ck_assert_str_eq(msg_ctl_name(c2.kind), "SWITCHOVER_PROMOTE");
    ck_assert_uint_eq(c2.mark_lsn, 0x2F00000);
    ck_assert_uint_eq(c2.mark_unix_us, 1700000000000001ull);
    /* Every cut is malformed but one: the body as it was before the mark was appended, which
     * decodes with no mark. */
    for (ssize_t cut = 0; cut < n; cut++)
        if (cut != n - 16)
            ck_assert_int_eq(msg_decode_control(buf, (size_t)cut, &c2), WIRE_EMESSAGE);
    ck_assert_int_eq(msg_decode_control(buf, (size_t)n - 16, &c2), 0);
    ck_assert_str_eq(c2.text, c.text);
    ck_assert_uint_eq(c2.mark_lsn, 0);
    ck_assert_uint_eq(c2.mark_unix_us, 0);
    ck_assert_str_eq(msg_ctl_name(MSG_CTL_EXPOSE_REQUEST), "EXPOSE_REQUEST");
    ck_assert_str_eq(msg_ctl_name(MSG_CTL_RESYNC_REQUEST), "RESYNC_REQUEST");
    c.kind = 0;
    n = msg_encode_control(&c, buf, sizeof(buf));
    ck_assert_int_eq(msg_decode_control(buf, (size_t)n, &c2), WIRE_EMESSAGE);
    c.kind = MSG_CTL_LAST + 1;
    n = msg_encode_control(&c, buf, sizeof(buf));
    ck_assert_int_eq(msg_decode_control(buf, (size_t)n, &c2), WIRE_EMESSAGE);
    ck_assert_str_eq(msg_ctl_name(MSG_CTL_LAST + 1), "unknown");
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("frame");
    TCase *tc = tcase_create("frame");
    SRunner *sr;
    int failed;

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_roundtrip_sizes);
    tcase_add_test(tc, test_encode_rejects_oversized);
    tcase_add_test(tc, test_reject_each_field);
    tcase_add_test(tc, test_truncated_every_prefix);
    tcase_add_test(tc, test_every_bit_flip_detected);
    tcase_add_test(tc, test_plaintext_rejected_early);
    tcase_add_test(tc, test_error_names_distinct);
    tcase_add_test(tc, test_msg_roundtrip);
    tcase_add_test(tc, test_msg_timeline_and_control);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
