/*
 * codec.c - framing, sequence numbers and LZ4 for one direction; contract in codec.h.
 *
 * The decoder's input buffer holds at most one maximum frame beyond what has been consumed;
 * it is compacted before new bytes are accepted, so a valid stream never needs more than
 * 2 * FRAME_MAX_SIZE of memory however the bytes arrive.
 */
#include "codec.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "lz.h"

struct codec_enc {
    struct lz_enc *lz; /* NULL when compression is off */
    uint64_t seq;
    struct codec_stats stats;
};

struct codec_dec {
    struct lz_dec *lz;
    uint8_t *buf;
    size_t cap;
    size_t start; /* first unconsumed byte */
    size_t end;   /* end of received bytes */
    uint64_t seq; /* next expected sequence number */
    int error;    /* sticky: first error seen */
    struct codec_stats stats;
};

int
codec_enc_set_level(struct codec_enc *e, int level)
{
    return e->lz != NULL ? lz_enc_set_level(e->lz, level) : 0;
}

size_t
codec_frame_bound(size_t payload_len)
{
    return FRAME_OVERHEAD + lz_bound(payload_len);
}

int
codec_enc_new(struct codec_enc **out, bool compress, int acceleration)
{
    struct codec_enc *e = calloc(1, sizeof(*e));
    int rc;

    if (e == NULL)
        return -ENOMEM;
    if (compress) {
        rc = lz_enc_new(&e->lz, FRAME_MAX_RAW, acceleration);
        if (rc < 0) {
            free(e);
            return rc;
        }
    }
    e->seq = 1;
    *out = e;
    return 0;
}

void
codec_enc_free(struct codec_enc *e)
{
    if (e == NULL)
        return;
    lz_enc_free(e->lz);
    free(e);
}

void
codec_enc_reset(struct codec_enc *e)
{
    if (e->lz != NULL)
        lz_enc_reset(e->lz);
    e->seq = 1;
    memset(&e->stats, 0, sizeof(e->stats));
}

ssize_t
codec_enc_frame(struct codec_enc *e, uint8_t type, uint64_t lsn, uint64_t epoch,
                const void *payload, size_t len, uint8_t *out, size_t cap)
{
    struct frame_hdr h = {
        .version = FRAME_VERSION,
        .type = type,
        .seq = e->seq,
        .raw_len = (uint32_t)len,
        .wire_len = (uint32_t)len,
        .lsn = lsn,
        .epoch = epoch,
    };
    size_t total;

    if (len > FRAME_MAX_RAW)
        return WIRE_ETOOBIG;
    if (cap < codec_frame_bound(len))
        return -EINVAL;
    if (type == FRAME_WAL && e->lz != NULL && len > 0) {
        int n = lz_enc_block(e->lz, payload, len, out + FRAME_HDR_SIZE, cap - FRAME_OVERHEAD);
        if (n < 0)
            return n;
        if (n > 0) {
            h.flags = FRAME_F_LZ4;
            h.wire_len = (uint32_t)n;
            if (lz_enc_level(e->lz) != LZ_LEVEL_FAST)
                e->stats.wal_hc_frames++;
        }
    }
    if (!(h.flags & FRAME_F_LZ4) && len > 0)
        memcpy(out + FRAME_HDR_SIZE, payload, len);
    total = frame_seal(out, &h);
    e->seq++;
    e->stats.frames++;
    e->stats.raw_bytes += len;
    e->stats.wire_bytes += total;
    if (type == FRAME_WAL) {
        e->stats.wal_raw_bytes += len;
        e->stats.wal_wire_bytes += h.wire_len;
    }
    return (ssize_t)total;
}

const struct codec_stats *
codec_enc_stats(const struct codec_enc *e)
{
    return &e->stats;
}

int
codec_dec_new(struct codec_dec **out)
{
    struct codec_dec *d = calloc(1, sizeof(*d));
    int rc;

    if (d == NULL)
        return -ENOMEM;
    rc = lz_dec_new(&d->lz, FRAME_MAX_RAW);
    if (rc < 0) {
        free(d);
        return rc;
    }
    d->cap = 2 * (size_t)FRAME_MAX_SIZE;
    d->buf = malloc(d->cap);
    if (d->buf == NULL) {
        lz_dec_free(d->lz);
        free(d);
        return -ENOMEM;
    }
    d->seq = 1;
    *out = d;
    return 0;
}

void
codec_dec_free(struct codec_dec *d)
{
    if (d == NULL)
        return;
    lz_dec_free(d->lz);
    free(d->buf);
    free(d);
}

void
codec_dec_reset(struct codec_dec *d)
{
    lz_dec_reset(d->lz);
    d->start = d->end = 0;
    d->seq = 1;
    d->error = 0;
    memset(&d->stats, 0, sizeof(d->stats));
}

static void
compact(struct codec_dec *d)
{
    if (d->start == 0)
        return;
    if (d->end > d->start)
        memmove(d->buf, d->buf + d->start, d->end - d->start);
    d->end -= d->start;
    d->start = 0;
}

uint8_t *
codec_dec_space(struct codec_dec *d, size_t *avail)
{
    if (d->cap - d->end < FRAME_MAX_SIZE)
        compact(d);
    *avail = d->cap - d->end;
    return d->buf + d->end;
}

void
codec_dec_commit(struct codec_dec *d, size_t len)
{
    d->end += len;
}

int
codec_dec_feed(struct codec_dec *d, const void *buf, size_t len)
{
    /* All or nothing: a caller that gets -ENOBUFS still owns every byte it offered. */
    if (d->cap - d->end < len)
        compact(d);
    if (d->cap - d->end < len)
        return -ENOBUFS;
    if (len > 0)
        memcpy(d->buf + d->end, buf, len);
    d->end += len;
    return 0;
}

int
codec_dec_next(struct codec_dec *d, struct codec_frame *f)
{
    const uint8_t *wire;
    ssize_t n;
    int rc;

    if (d->error < 0)
        return d->error;
    n = frame_decode(d->buf + d->start, d->end - d->start, &f->hdr, &wire);
    if (n == 0)
        return 0;
    if (n < 0)
        return d->error = (int)n;
    if (f->hdr.seq != d->seq)
        return d->error = WIRE_ESEQUENCE;
    if (f->hdr.type == FRAME_WAL) {
        rc = lz_dec_block(d->lz, wire, f->hdr.wire_len, f->hdr.raw_len,
                          (f->hdr.flags & FRAME_F_LZ4) != 0, &f->payload);
        if (rc < 0)
            return d->error = rc;
        d->stats.wal_raw_bytes += f->hdr.raw_len;
        d->stats.wal_wire_bytes += f->hdr.wire_len;
    } else {
        f->payload = wire;
    }
    d->start += (size_t)n;
    if (d->start == d->end)
        d->start = d->end = 0;
    d->seq++;
    d->stats.frames++;
    d->stats.raw_bytes += f->hdr.raw_len;
    d->stats.wire_bytes += (size_t)n;
    return 1;
}

size_t
codec_dec_buffered(const struct codec_dec *d)
{
    return d->end - d->start;
}

const struct codec_stats *
codec_dec_stats(const struct codec_dec *d)
{
    return &d->stats;
}
