/*
 * lz.c - LZ4 block streaming with history kept in place; contract in lz.h.
 *
 * Ring sizes: the decompressor's ring is LZ4_decoderRingBufferSize(max_block), the size lz4.h
 * documents as safe whatever the compressor does.  The compressor's ring is 64 KiB + 2 *
 * max_block: a block that does not fit before the end wraps to offset 0, and must not
 * overwrite the 64 KiB of history that precede the end of the previous block.
 *
 * Levels: the fast stream and the HC stream each keep their own view of the history, and only
 * the one of the current level is fed.  A switch hands the new one the history both ends
 * share - hist bytes ending at pos: the blocks since the ring last wrapped lie end to end
 * there, and since the last raw block, from which both ends restarted, at most - so that it
 * never points at bytes the decompressor does not hold.
 */
#include "lz.h"

#include <errno.h>
#include <lz4.h>
#include <lz4hc.h>
#include <stdlib.h>
#include <string.h>

#define LZ_HISTORY (64 * 1024)

struct lz_enc {
    LZ4_stream_t *stream;
    LZ4_streamHC_t *hc; /* NULL until the first switch to an HC level */
    int level;          /* LZ_LEVEL_FAST or an HC level */
    uint8_t *ring;
    size_t ring_size;
    size_t pos;
    size_t hist; /* history both ends share, ending at ring + pos (<= LZ_HISTORY) */
    size_t max_block;
    int acceleration;
};

struct lz_dec {
    LZ4_streamDecode_t *stream;
    uint8_t *ring;
    size_t ring_size;
    size_t pos;
    size_t max_block;
};

size_t
lz_bound(size_t len)
{
    return len + len / 255 + 16;
}

int
lz_enc_new(struct lz_enc **out, size_t max_block, int acceleration)
{
    struct lz_enc *e;

    if (max_block == 0 || max_block > LZ4_MAX_INPUT_SIZE)
        return -EINVAL;
    e = calloc(1, sizeof(*e));
    if (e == NULL)
        return -ENOMEM;
    e->ring_size = LZ_HISTORY + 2 * max_block;
    e->ring = malloc(e->ring_size);
    e->stream = LZ4_createStream();
    if (e->ring == NULL || e->stream == NULL) {
        lz_enc_free(e);
        return -ENOMEM;
    }
    e->max_block = max_block;
    e->acceleration = acceleration > 0 ? acceleration : 1;
    *out = e;
    return 0;
}

void
lz_enc_free(struct lz_enc *e)
{
    if (e == NULL)
        return;
    if (e->stream != NULL)
        LZ4_freeStream(e->stream);
    if (e->hc != NULL)
        LZ4_freeStreamHC(e->hc);
    free(e->ring);
    free(e);
}

void
lz_enc_reset(struct lz_enc *e)
{
    LZ4_resetStream_fast(e->stream);
    if (e->hc != NULL)
        LZ4_resetStreamHC_fast(e->hc, e->level > LZ_LEVEL_FAST ? e->level : LZ_LEVEL_HC_MIN);
    e->pos = 0;
    e->hist = 0;
}

int
lz_enc_set_level(struct lz_enc *e, int level)
{
    const char *dict;

    if (level < LZ_LEVEL_FAST)
        level = LZ_LEVEL_FAST;
    if (level > LZ_LEVEL_HC_MAX)
        level = LZ_LEVEL_HC_MAX;
    if (level == e->level)
        return 0;
    if (level > LZ_LEVEL_FAST && e->hc == NULL) {
        e->hc = LZ4_createStreamHC();
        if (e->hc == NULL)
            return -ENOMEM;
    }
    dict = (const char *)e->ring + e->pos - e->hist;
    if (level == LZ_LEVEL_FAST) {
        LZ4_loadDict(e->stream, dict, (int)e->hist);
    } else {
        LZ4_resetStreamHC_fast(e->hc, level);
        LZ4_loadDictHC(e->hc, dict, (int)e->hist);
    }
    e->level = level;
    return 0;
}

int
lz_enc_level(const struct lz_enc *e)
{
    return e->level;
}

int
lz_enc_block(struct lz_enc *e, const void *src, size_t len, void *dst, size_t cap)
{
    uint8_t *block;
    size_t dict;
    int n;

    if (len == 0)
        return 0;
    if (len > e->max_block || cap < lz_bound(len))
        return -EINVAL;
    if (e->pos + len > e->ring_size) {
        e->pos = 0;
        e->hist = 0; /* what precedes the block is no longer end to end with it */
    }
    block = e->ring + e->pos;
    memcpy(block, src, len);
    if (e->level == LZ_LEVEL_FAST)
        n = LZ4_compress_fast_continue(e->stream, (const char *)block, dst, (int)len, (int)cap,
                                       e->acceleration);
    else
        n = LZ4_compress_HC_continue(e->hc, (const char *)block, dst, (int)len, (int)cap);
    e->pos += len;
    if (n > 0 && (size_t)n < len) {
        e->hist = e->hist + len < LZ_HISTORY ? e->hist + len : LZ_HISTORY;
        return n;
    }
    /* Does not pay: the peer receives the block raw, and both restart history from it. */
    dict = len < LZ_HISTORY ? len : LZ_HISTORY;
    if (e->level == LZ_LEVEL_FAST)
        LZ4_loadDict(e->stream, (const char *)block + len - dict, (int)dict);
    else
        LZ4_loadDictHC(e->hc, (const char *)block + len - dict, (int)dict);
    e->hist = dict;
    return 0;
}

int
lz_dec_new(struct lz_dec **out, size_t max_block)
{
    struct lz_dec *d;

    if (max_block == 0 || max_block > LZ4_MAX_INPUT_SIZE)
        return -EINVAL;
    d = calloc(1, sizeof(*d));
    if (d == NULL)
        return -ENOMEM;
    d->ring_size = (size_t)LZ4_decoderRingBufferSize((int)max_block);
    d->ring = malloc(d->ring_size);
    d->stream = LZ4_createStreamDecode();
    if (d->ring == NULL || d->stream == NULL) {
        lz_dec_free(d);
        return -ENOMEM;
    }
    d->max_block = max_block;
    *out = d;
    return 0;
}

void
lz_dec_free(struct lz_dec *d)
{
    if (d == NULL)
        return;
    if (d->stream != NULL)
        LZ4_freeStreamDecode(d->stream);
    free(d->ring);
    free(d);
}

void
lz_dec_reset(struct lz_dec *d)
{
    LZ4_setStreamDecode(d->stream, NULL, 0);
    d->pos = 0;
}

int
lz_dec_block(struct lz_dec *d, const void *src, size_t src_len, size_t raw_len, bool compressed,
             const uint8_t **out)
{
    uint8_t *block;

    if (raw_len > d->max_block)
        return WIRE_ETOOBIG;
    if (raw_len == 0) {
        /* The compressor never sees empty blocks: they leave the history alone. */
        if (src_len != 0)
            return WIRE_EDECOMPRESS;
        *out = d->ring;
        return 0;
    }
    if (d->pos + raw_len > d->ring_size)
        d->pos = 0;
    block = d->ring + d->pos;
    if (compressed) {
        int n =
            LZ4_decompress_safe_continue(d->stream, src, (char *)block, (int)src_len, (int)raw_len);
        if (n < 0 || (size_t)n != raw_len)
            return WIRE_EDECOMPRESS;
    } else {
        size_t dict = raw_len < LZ_HISTORY ? raw_len : LZ_HISTORY;
        if (src_len != raw_len)
            return WIRE_EDECOMPRESS;
        memcpy(block, src, raw_len);
        LZ4_setStreamDecode(d->stream, (const char *)block + raw_len - dict, (int)dict);
    }
    d->pos += raw_len;
    *out = block;
    return (int)raw_len;
}
