/*
 * lz.h - LZ4 block streaming, one compressor or decompressor per direction of a connection.
 *
 * Each block is compressed against the history of the blocks before it
 * (LZ4_compress_fast_continue / LZ4_decompress_safe_continue), which keeps small WAL frames
 * compressing almost as well as large ones.  LZ4 references that history in place, so both
 * ends keep their blocks in a ring buffer: the compressor copies each block in before
 * compressing it, the decompressor decodes into its ring.
 *
 * When a block does not shrink, the caller sends it raw.  Both ends then restart the history
 * from that raw block (LZ4_loadDict on one side, LZ4_setStreamDecode on the other), so they
 * never disagree about what a back-reference points at.
 *
 * The compressor has two speeds that produce the same block format: LZ4's fast compressor
 * (LZ4_compress_fast_continue) and its high-compression one (LZ4_compress_HC_continue, a
 * slower, better match search).  lz_enc_set_level() switches between them between blocks; the
 * stream that takes over is first given the last 64 KiB of the history (LZ4_loadDict /
 * LZ4_loadDictHC), so its back-references stay inside what the decompressor holds and the
 * decompressor neither knows nor cares which compressor made a block.
 *
 * Both ends must be reset together, at the start of every connection.
 */
#ifndef WALMIRROR_WIRE_LZ_H
#define WALMIRROR_WIRE_LZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

struct lz_enc;
struct lz_dec;

/* max_block: the largest block ever passed; acceleration: LZ4's (1 = best ratio, default). */
WM_MUSTCHECK int lz_enc_new(struct lz_enc **out, size_t max_block, int acceleration);
void lz_enc_free(struct lz_enc *e);
/* Starts a new stream (empty history); the level stays as it was. */
void lz_enc_reset(struct lz_enc *e);

/* Compression levels: LZ_LEVEL_FAST, or LZ4HC's levels LZ_LEVEL_HC_MIN..LZ_LEVEL_HC_MAX. */
#define LZ_LEVEL_FAST 0
#define LZ_LEVEL_HC_MIN 1
#define LZ_LEVEL_HC_MAX 12

/*
 * Compresses the blocks from the next one on at level (clamped to LZ_LEVEL_FAST..
 * LZ_LEVEL_HC_MAX).  The history carries over.  Returns 0, or -ENOMEM when the HC stream
 * (256 KiB, made at the first switch to HC) cannot be allocated: the level is then unchanged.
 */
WM_MUSTCHECK int lz_enc_set_level(struct lz_enc *e, int level);
int lz_enc_level(const struct lz_enc *e);

/*
 * Compresses len (<= max_block) bytes of src into dst (cap >= lz_bound(len)).  Returns the
 * compressed length when it is smaller than len, or 0 when the block does not pay: then the
 * caller sends src raw, and the history continues from src.
 */
WM_MUSTCHECK int lz_enc_block(struct lz_enc *e, const void *src, size_t len, void *dst, size_t cap);

/* LZ4_COMPRESSBOUND. */
size_t lz_bound(size_t len);

WM_MUSTCHECK int lz_dec_new(struct lz_dec **out, size_t max_block);
void lz_dec_free(struct lz_dec *d);
void lz_dec_reset(struct lz_dec *d);

/*
 * Takes the next block of the stream: an LZ4 block of src_len bytes that must decode to
 * exactly raw_len bytes (compressed), or raw_len raw bytes (!compressed).  On success returns
 * raw_len and points *out at the block's bytes inside the ring, valid until the next call.
 * Returns WIRE_EDECOMPRESS if the block is malformed or decodes to another length, or
 * WIRE_ETOOBIG if raw_len exceeds max_block.  After an error the stream is unusable until
 * lz_dec_reset().
 */
WM_MUSTCHECK int lz_dec_block(struct lz_dec *d, const void *src, size_t src_len, size_t raw_len,
                              bool compressed, const uint8_t **out);

#endif
