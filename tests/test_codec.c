/*
 * test_codec.c - the per-direction codec: LZ4 streaming across many small frames, the raw
 * fallback, ring wrap-around, LZ4HC frames and switches between fast and HC compression
 * mid-stream (decoded by the same decoder), sequence checks, sticky errors and resets.
 */
#include <check.h>
#include <errno.h>
#include <lz4.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "frame.h"
#include "lz.h"

/*
 * WAL-like data: records with a fixed-layout header, slowly changing counters, a small set of
 * repeated tuple images, and some noise - compressible the way WAL is, not trivially.
 */
static uint8_t *
walish(size_t len, uint32_t seed)
{
    uint8_t *p = malloc(len);
    uint32_t x = seed * 2654435761u + 1;
    size_t i = 0;

    while (i < len) {
        uint8_t rec[96];
        x = x * 1103515245u + 12345u;
        memset(rec, 0, sizeof(rec));
        memcpy(rec, &i, sizeof(i) < 8 ? sizeof(i) : 8);
        rec[8] = 0x0a;
        rec[9] = (uint8_t)(x >> 24) & 0x3;
        memcpy(rec + 16, "pgbench_accounts", 16);
        rec[40] = (uint8_t)(x >> 16);
        rec[41] = (uint8_t)(x >> 8);
        for (int k = 48; k < 96; k += 4)
            rec[k] = (uint8_t)((x >> (k % 24)) & 0x7);
        for (size_t k = 0; k < sizeof(rec) && i < len; k++)
            p[i++] = rec[k];
    }
    return p;
}

static uint8_t *
noise(size_t len, uint32_t seed)
{
    uint8_t *p = malloc(len);
    uint64_t x = seed;
    for (size_t i = 0; i < len; i++) {
        /* splitmix64: full-entropy output from the first byte, whatever the seed */
        uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        p[i] = (uint8_t)(z ^ (z >> 31));
    }
    return p;
}

struct pair {
    struct codec_enc *enc;
    struct codec_dec *dec;
    uint8_t *frame;
    size_t cap;
};

static void
pair_init(struct pair *p, bool compress)
{
    ck_assert_int_eq(codec_enc_new(&p->enc, compress, 1), 0);
    ck_assert_int_eq(codec_dec_new(&p->dec), 0);
    p->cap = codec_frame_bound(FRAME_MAX_RAW);
    p->frame = malloc(p->cap);
}

static void
pair_free(struct pair *p)
{
    codec_enc_free(p->enc);
    codec_dec_free(p->dec);
    free(p->frame);
}

/* Sends one WAL payload through encoder and decoder and checks it arrives identical. */
static bool
through(struct pair *p, const uint8_t *data, size_t len, uint64_t lsn, uint16_t *flags)
{
    struct codec_frame f;
    ssize_t n = codec_enc_frame(p->enc, FRAME_WAL, lsn, 1, data, len, p->frame, p->cap);

    ck_assert_int_gt(n, 0);
    ck_assert_int_eq(codec_dec_feed(p->dec, p->frame, (size_t)n), 0);
    ck_assert_int_eq(codec_dec_next(p->dec, &f), 1);
    ck_assert_uint_eq(f.hdr.lsn, lsn);
    ck_assert_uint_eq(f.hdr.raw_len, len);
    if (flags != NULL)
        *flags = f.hdr.flags;
    return len == 0 || memcmp(f.payload, data, len) == 0;
}

START_TEST(test_stream_keeps_ratio)
{
    const size_t chunk = 512, frames = 2000, total = chunk * frames;
    uint8_t *data = walish(total, 1);
    uint8_t *blk = malloc((size_t)LZ4_compressBound(65536));
    size_t block_wire = 0;
    struct pair p;
    double stream_ratio, block_ratio;

    pair_init(&p, true);
    for (size_t i = 0; i < frames; i++)
        ck_assert(through(&p, data + i * chunk, chunk, i * chunk, NULL));
    /* Reference: the same bytes as independent 64 KiB blocks. */
    for (size_t off = 0; off < total; off += 65536) {
        int n = LZ4_compress_default((const char *)data + off, (char *)blk,
                                     (int)(total - off < 65536 ? total - off : 65536),
                                     LZ4_compressBound(65536));
        ck_assert_int_gt(n, 0);
        block_wire += (size_t)n;
    }
    stream_ratio = (double)codec_enc_stats(p.enc)->wal_raw_bytes /
                   (double)codec_enc_stats(p.enc)->wal_wire_bytes;
    block_ratio = (double)total / (double)block_wire;
    /* Small frames of one stream compress about as well as 64 KiB blocks. */
    ck_assert_msg(stream_ratio >= 0.9 * block_ratio, "stream ratio %.2f vs 64 KiB blocks %.2f",
                  stream_ratio, block_ratio);
    ck_assert_msg(stream_ratio > 2.0, "stream ratio %.2f", stream_ratio);
    ck_assert_uint_eq(codec_dec_stats(p.dec)->wal_raw_bytes, total);
    pair_free(&p);
    free(data);
    free(blk);
}
END_TEST

START_TEST(test_raw_fallback_keeps_history_in_step)
{
    uint8_t *text = walish(64 * 1024, 2);
    struct pair p;
    uint16_t flags;
    uint64_t lsn = 0;

    pair_init(&p, true);
    /* Compressible, incompressible, compressible again, at various sizes, many times. */
    for (int round = 0; round < 40; round++) {
        size_t a = 100 + (size_t)round * 1500, b = 1 + (size_t)round * 977;
        ck_assert(through(&p, text, a, lsn, &flags));
        ck_assert_uint_eq(flags & FRAME_F_LZ4, FRAME_F_LZ4);
        lsn += a;
        /* Fresh noise each round: repeated noise would match history and compress. */
        uint8_t *fresh = noise(b, 100 + (uint32_t)round);
        ck_assert(through(&p, fresh, b, lsn, &flags));
        ck_assert_uint_eq(flags & FRAME_F_LZ4, 0);
        free(fresh);
        lsn += b;
        ck_assert(through(&p, text + 7, a, lsn, &flags));
        lsn += a;
    }
    pair_free(&p);
    free(text);
}
END_TEST

START_TEST(test_large_frames_wrap_rings)
{
    uint8_t *data = walish(FRAME_MAX_RAW, 4);
    uint8_t *rnd = noise(FRAME_MAX_RAW, 5);
    struct pair p;
    size_t sizes[] = {FRAME_MAX_RAW, 700000, 65536, FRAME_MAX_RAW - 1, 300001, 1};

    pair_init(&p, true);
    for (int i = 0; i < 60; i++) {
        size_t len = sizes[i % 6];
        const uint8_t *src = (i % 7 == 3) ? rnd : data;
        ck_assert(through(&p, src, len, (uint64_t)i << 20, NULL));
    }
    pair_free(&p);
    free(data);
    free(rnd);
}
END_TEST

/* Encodes n frames of data (sizes cycling through sizes[]) at one level; returns wire bytes. */
static size_t
stream_at_level(int level, const uint8_t *data, size_t dlen, const size_t *sizes, int nsizes, int n,
                uint64_t *hc_frames)
{
    struct pair p;
    size_t off = 0, wire = 0;
    uint64_t lsn = 0;

    pair_init(&p, true);
    ck_assert_int_eq(codec_enc_set_level(p.enc, level), 0);
    for (int i = 0; i < n; i++) {
        size_t len = sizes[i % nsizes];
        if (off + len > dlen)
            off = 0;
        ck_assert(through(&p, data + off, len, lsn, NULL));
        off += len;
        lsn += len;
    }
    wire = codec_enc_stats(p.enc)->wal_wire_bytes;
    *hc_frames = codec_enc_stats(p.enc)->wal_hc_frames;
    /* The decoder saw the same bytes the encoder made. */
    ck_assert_uint_eq(codec_dec_stats(p.dec)->wal_wire_bytes, wire);
    pair_free(&p);
    return wire;
}

START_TEST(test_hc_frames_decode_and_are_smaller)
{
    const size_t dlen = 4 * 1024 * 1024;
    uint8_t *data = walish(dlen, 11);
    const size_t sizes[] = {512, 8192, 131072, 1000, 65536, FRAME_MAX_RAW, 3000};
    uint64_t hc_fast, hc4, hc9;
    size_t fast = stream_at_level(LZ_LEVEL_FAST, data, dlen, sizes, 7, 140, &hc_fast);
    size_t l4 = stream_at_level(4, data, dlen, sizes, 7, 140, &hc4);
    size_t l9 = stream_at_level(9, data, dlen, sizes, 7, 140, &hc9);

    /* Every frame went through LZ4HC (none was sent raw), and decoded: see through(). */
    ck_assert_uint_eq(hc_fast, 0);
    ck_assert_uint_eq(hc4, 140);
    ck_assert_uint_eq(hc9, 140);
    /* The slower search pays: fewer bytes on the wire for the same WAL. */
    ck_assert_uint_lt(l4, fast - fast / 20);
    ck_assert_uint_le(l9, l4);
    free(data);
}
END_TEST

START_TEST(test_level_switches_keep_history_in_step)
{
    const size_t dlen = 3 * 1024 * 1024;
    uint8_t *data = walish(dlen, 12);
    uint8_t *rnd = noise(FRAME_MAX_RAW, 13);
    uint32_t x = 12345;
    uint64_t lsn = 0, hc_frames = 0;
    struct pair p;
    int switches = 0, level = LZ_LEVEL_FAST;

    pair_init(&p, true);
    for (int i = 0; i < 2000; i++) {
        size_t len, off;
        const uint8_t *src;

        x = x * 1103515245u + 12345u;
        /* A new level every few frames: fast, or an HC level from the lowest to the highest. */
        if ((x >> 8) % 3 == 0) {
            static const int levels[] = {LZ_LEVEL_FAST, LZ_LEVEL_HC_MIN, 4, 9, LZ_LEVEL_HC_MAX};
            int next = levels[(x >> 12) % 5];
            switches += next != level;
            level = next;
            ck_assert_int_eq(codec_enc_set_level(p.enc, level), 0);
        }
        /* Mostly small frames; now and then a large one that wraps the rings, or noise that
         * goes raw and restarts the history.  Repeats of recent data make back-references
         * that reach across the switches. */
        switch ((x >> 20) % 32) {
        case 0:
            /* (the slowest levels run at a few MB/s: keep the test short) */
            len = level > 9 ? 100000 : FRAME_MAX_RAW - ((x >> 4) % 4096);
            break;
        case 1:
            len = 1 + (x >> 5) % 70000;
            src = rnd + (x >> 3) % (FRAME_MAX_RAW - len);
            ck_assert(through(&p, src, len, lsn, NULL));
            lsn += len;
            continue;
        default:
            len = 1 + (x >> 6) % 20000;
            break;
        }
        off = (lsn * 7) % (dlen - len);
        ck_assert(through(&p, data + off, len, lsn, NULL));
        lsn += len;
        if (i % 500 == 499) {
            /* A reconnect: both ends start afresh, the level stays. */
            hc_frames += codec_enc_stats(p.enc)->wal_hc_frames;
            codec_enc_reset(p.enc);
            codec_dec_reset(p.dec);
        }
    }
    ck_assert_int_gt(switches, 300);
    ck_assert_uint_gt(hc_frames, 600);
    pair_free(&p);
    free(data);
    free(rnd);
}
END_TEST

START_TEST(test_uncompressed_mode_and_control_frames)
{
    uint8_t *data = walish(8192, 6);
    struct pair p;
    uint16_t flags;
    struct codec_frame f;
    ssize_t n;

    pair_init(&p, false);
    ck_assert(through(&p, data, 8192, 0, &flags));
    ck_assert_uint_eq(flags, 0);
    n = codec_enc_frame(p.enc, FRAME_ACK, 0, 1, data, 32, p.frame, p.cap);
    ck_assert_int_eq(codec_dec_feed(p.dec, p.frame, (size_t)n), 0);
    ck_assert_int_eq(codec_dec_next(p.dec, &f), 1);
    ck_assert_uint_eq(f.hdr.type, FRAME_ACK);
    ck_assert_uint_eq(f.hdr.flags, 0);
    ck_assert_mem_eq(f.payload, data, 32);
    pair_free(&p);
    free(data);
}
END_TEST

START_TEST(test_byte_by_byte_feed)
{
    uint8_t *data = walish(5000, 7);
    struct pair p;
    struct codec_frame f;
    ssize_t n;

    pair_init(&p, true);
    n = codec_enc_frame(p.enc, FRAME_WAL, 99, 1, data, 5000, p.frame, p.cap);
    for (ssize_t i = 0; i < n; i++) {
        ck_assert_int_eq(codec_dec_next(p.dec, &f), 0);
        ck_assert_int_eq(codec_dec_feed(p.dec, p.frame + i, 1), 0);
    }
    ck_assert_int_eq(codec_dec_next(p.dec, &f), 1);
    ck_assert_mem_eq(f.payload, data, 5000);
    ck_assert_uint_eq(codec_dec_buffered(p.dec), 0);
    pair_free(&p);
    free(data);
}
END_TEST

START_TEST(test_feed_all_or_nothing)
{
    struct pair p;
    size_t big = 3 * (size_t)FRAME_MAX_SIZE;
    uint8_t *junk = calloc(1, big);
    uint8_t *data = walish(1000, 11);
    struct codec_frame f;
    ssize_t n;

    pair_init(&p, true);
    /* More than the decoder can hold: refused whole, nothing buffered. */
    ck_assert_int_eq(codec_dec_feed(p.dec, junk, big), -ENOBUFS);
    ck_assert_uint_eq(codec_dec_buffered(p.dec), 0);
    /* The stream is intact: a frame fed afterwards decodes. */
    n = codec_enc_frame(p.enc, FRAME_WAL, 0, 1, data, 1000, p.frame, p.cap);
    ck_assert_int_eq(codec_dec_feed(p.dec, p.frame, (size_t)n), 0);
    ck_assert_int_eq(codec_dec_next(p.dec, &f), 1);
    ck_assert_mem_eq(f.payload, data, 1000);
    pair_free(&p);
    free(junk);
    free(data);
}
END_TEST

START_TEST(test_sequence_gap_is_fatal_until_reset)
{
    uint8_t *data = walish(4096, 8);
    struct pair p;
    struct codec_frame f;
    ssize_t n;

    pair_init(&p, true);
    ck_assert(through(&p, data, 4096, 0, NULL));
    /* A frame lost in transit: the next one arrives with sequence 3. */
    n = codec_enc_frame(p.enc, FRAME_WAL, 4096, 1, data, 4096, p.frame, p.cap);
    ck_assert_int_gt(n, 0);
    n = codec_enc_frame(p.enc, FRAME_WAL, 8192, 1, data, 4096, p.frame, p.cap);
    ck_assert_int_eq(codec_dec_feed(p.dec, p.frame, (size_t)n), 0);
    ck_assert_int_eq(codec_dec_next(p.dec, &f), WIRE_ESEQUENCE);
    /* Sticky: even good input is refused now. */
    ck_assert_int_eq(codec_dec_next(p.dec, &f), WIRE_ESEQUENCE);
    /* Reconnect: both ends reset, and the stream works again. */
    codec_enc_reset(p.enc);
    codec_dec_reset(p.dec);
    ck_assert(through(&p, data, 4096, 0, NULL));
    /* Only one end reset: the decoder expects 2 and sees 1. */
    codec_enc_reset(p.enc);
    n = codec_enc_frame(p.enc, FRAME_WAL, 0, 1, data, 4096, p.frame, p.cap);
    ck_assert_int_eq(codec_dec_feed(p.dec, p.frame, (size_t)n), 0);
    ck_assert_int_eq(codec_dec_next(p.dec, &f), WIRE_ESEQUENCE);
    pair_free(&p);
    free(data);
}
END_TEST

START_TEST(test_bad_lz4_block_with_good_checksum)
{
    uint8_t *data = walish(20000, 9);
    struct pair p;
    struct codec_frame f;
    struct frame_hdr h;
    const uint8_t *pl;
    ssize_t n;

    pair_init(&p, true);
    n = codec_enc_frame(p.enc, FRAME_WAL, 0, 1, data, 20000, p.frame, p.cap);
    ck_assert_int_eq(frame_decode_exact(p.frame, (size_t)n, &h, &pl), 0);
    ck_assert_uint_eq(h.flags, FRAME_F_LZ4);
    /* A buggy or hostile sender: the block is garbage but the frame is sealed properly. */
    memset(p.frame + FRAME_HDR_SIZE, 0xff, h.wire_len);
    frame_seal(p.frame, &h);
    ck_assert_int_eq(codec_dec_feed(p.dec, p.frame, (size_t)n), 0);
    ck_assert_int_eq(codec_dec_next(p.dec, &f), WIRE_EDECOMPRESS);
    pair_free(&p);
    free(data);
}
END_TEST

START_TEST(test_corrupt_frame_in_stream)
{
    uint8_t *data = walish(3000, 10);
    struct pair p;
    struct codec_frame f;
    ssize_t n;

    pair_init(&p, true);
    n = codec_enc_frame(p.enc, FRAME_WAL, 0, 1, data, 3000, p.frame, p.cap);
    p.frame[FRAME_HDR_SIZE + 10] ^= 0x04;
    ck_assert_int_eq(codec_dec_feed(p.dec, p.frame, (size_t)n), 0);
    ck_assert_int_eq(codec_dec_next(p.dec, &f), WIRE_ECHECKSUM);
    pair_free(&p);
    free(data);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("codec");
    TCase *tc = tcase_create("codec");
    SRunner *sr;
    int failed;

    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_stream_keeps_ratio);
    tcase_add_test(tc, test_raw_fallback_keeps_history_in_step);
    tcase_add_test(tc, test_large_frames_wrap_rings);
    tcase_add_test(tc, test_hc_frames_decode_and_are_smaller);
    tcase_add_test(tc, test_level_switches_keep_history_in_step);
    tcase_add_test(tc, test_uncompressed_mode_and_control_frames);
    tcase_add_test(tc, test_byte_by_byte_feed);
    tcase_add_test(tc, test_feed_all_or_nothing);
    tcase_add_test(tc, test_sequence_gap_is_fatal_until_reset);
    tcase_add_test(tc, test_bad_lz4_block_with_good_checksum);
    tcase_add_test(tc, test_corrupt_frame_in_stream);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
