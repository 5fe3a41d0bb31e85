/*
 * walfmt.h - PostgreSQL 15 WAL as it lies on disk: segment file names and positions, page
 * headers, record headers, CRC-32C, and a record scanner that finds where the valid WAL ends.
 *
 * Layouts follow PostgreSQL 15.18 (src/include/access/xlog_internal.h, xlogrecord.h and
 * src/backend/access/transam/xlogreader.c).  WAL is in native byte order, which is
 * little-endian on every platform walmirror runs on; every field is read through a bounds-
 * checked struct cursor (cursor.h), never by casting a struct onto a buffer.
 *
 *   segment   seg_size bytes (a power of two, 1 MiB .. 1 GiB), segno = lsn / seg_size, named
 *             TTTTTTTTXXXXXXXXYYYYYYYY: timeline, segno / (2^32 / seg_size), segno % (2^32 /
 *             seg_size), upper-case hex; ".partial" while incomplete.
 *   page      WALFMT_BLCKSZ bytes, each starting with a page header: 24 bytes, or 40 (the long
 *             header, with system identifier and sizes) on the first page of a segment.
 *   record    a 24-byte XLogRecord header and its data, MAXALIGNed (8); a record may be split
 *             anywhere across pages (the pages after the first carry XLP_FIRST_IS_CONTRECORD and
 *             xlp_rem_len), even inside its header; xl_crc is a CRC-32C over the data after the
 *             header followed by the header up to xl_crc.
 *
 * The module is pure: no global state except the CRC-32C implementation chosen once (SSE4.2
 * where the CPU has it, a table otherwise; WALMIRROR_CRC32C=sw forces the table), no logging,
 * no I/O of its own (the scanner reads through a callback).
 */
#ifndef WALMIRROR_AGENT_WALFMT_H
#define WALMIRROR_AGENT_WALFMT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "err.h"
#include "util.h" /* LSN_FMT, LSN_ARGS for printing positions */

#define WALFMT_BLCKSZ 8192u
#define WALFMT_PAGE_MAGIC 0xD110u         /* XLOG_PAGE_MAGIC of PostgreSQL 15 */
#define WALFMT_SHORT_PHD_SIZE 24u         /* SizeOfXLogShortPHD */
#define WALFMT_LONG_PHD_SIZE 40u          /* SizeOfXLogLongPHD */
#define WALFMT_RECORD_HDR_SIZE 24u        /* SizeOfXLogRecord */
#define WALFMT_RECORD_CRC_OFFSET 20u      /* offsetof(XLogRecord, xl_crc) */
#define WALFMT_MAX_RECORD_LEN 0x3fffffffu /* MaxAllocSize: xlogreader refuses longer records */

#define WALFMT_XLP_FIRST_IS_CONTRECORD 0x0001u
#define WALFMT_XLP_LONG_HEADER 0x0002u
#define WALFMT_XLP_BKP_REMOVABLE 0x0004u
#define WALFMT_XLP_FIRST_IS_OVERWRITE_CONTRECORD 0x0008u
#define WALFMT_XLP_ALL_FLAGS 0x000Fu

#define WALFMT_RM_XLOG_ID 0
#define WALFMT_RM_MAX_BUILTIN_ID 21 /* RM_LOGICALMSG_ID in PostgreSQL 15 */
#define WALFMT_RM_MIN_CUSTOM_ID 128
#define WALFMT_XLOG_SWITCH 0x40u
#define WALFMT_XLR_INFO_MASK 0x0Fu

#define WALFMT_MIN_SEG_SIZE (1u << 20)
#define WALFMT_MAX_SEG_SIZE (1u << 30)
#define WALFMT_NAME_LEN 24 /* a segment file name without ".partial" */
#define WALFMT_PARTIAL_SUFFIX ".partial"

#define WALFMT_MAXALIGN(x) (((uint64_t)(x) + 7) & ~(uint64_t)7)

/* ---- segments and positions ---- */

/* True for a power of two between WALFMT_MIN_SEG_SIZE and WALFMT_MAX_SEG_SIZE. */
bool walfmt_seg_size_valid(uint64_t seg_size);

static inline uint64_t
walfmt_segno(uint64_t lsn, uint32_t seg_size)
{
    return lsn / seg_size;
}

static inline uint64_t
walfmt_seg_start(uint64_t segno, uint32_t seg_size)
{
    return segno * seg_size;
}

static inline uint32_t
walfmt_seg_offset(uint64_t lsn, uint32_t seg_size)
{
    return (uint32_t)(lsn & ((uint64_t)seg_size - 1));
}

/* Writes the 24-character file name of (tli, segno) and a NUL into out.  seg_size must be
 * valid (walfmt_seg_size_valid). */
void walfmt_seg_name(char out[WALFMT_NAME_LEN + 1], uint32_t tli, uint64_t segno,
                     uint32_t seg_size);

/*
 * Parses a segment file name: exactly 24 upper-case hex digits, optionally followed by
 * ".partial" (then *partial is set; partial may be NULL to refuse the suffix).  Returns 0, or
 * -EINVAL for anything else (history files, other suffixes, a segment number out of range for
 * seg_size, timeline 0).
 */
WM_MUSTCHECK int walfmt_parse_seg_name(const char *name, uint32_t seg_size, uint32_t *tli,
                                       uint64_t *segno, bool *partial);

/* ---- page and record headers ---- */

struct walfmt_page_header {
    uint16_t magic;
    uint16_t info;
    uint32_t tli;
    uint64_t pageaddr;
    uint32_t rem_len;
    /* long header only (info & WALFMT_XLP_LONG_HEADER) */
    uint64_t sysid;
    uint32_t seg_size;
    uint32_t xlog_blcksz;
};

/*
 * Parses the page header at the start of buf (len bytes available).  Returns its size (24 or
 * 40, per XLP_LONG_HEADER), or -EINVAL if buf is too short for it.  Nothing is validated.
 */
WM_MUSTCHECK int walfmt_page_header_parse(const void *buf, size_t len,
                                          struct walfmt_page_header *ph);

/*
 * Validates a parsed header as that of the page at page_lsn, as xlogreader does: magic, info
 * bits, a long header exactly on the first page of a segment with matching segment size, page
 * size and (when sysid != 0) system identifier, and xlp_pageaddr == page_lsn.  On failure
 * returns false and writes the reason into why.
 */
bool walfmt_page_header_check(const struct walfmt_page_header *ph, uint64_t page_lsn,
                              uint32_t seg_size, uint64_t sysid, char *why, size_t whylen);

struct walfmt_record_header {
    uint32_t tot_len;
    uint32_t xid;
    uint64_t prev;
    uint8_t info;
    uint8_t rmid;
    uint32_t crc;
};

/* Parses a 24-byte XLogRecord header; returns 0 or -EINVAL if len is too short. */
WM_MUSTCHECK int walfmt_record_header_parse(const void *buf, size_t len,
                                            struct walfmt_record_header *rh);

/* True for an XLOG_SWITCH record: the rest of its segment holds no records. */
bool walfmt_record_is_switch(const struct walfmt_record_header *rh);

/* ---- CRC-32C (Castagnoli), as PostgreSQL's INIT/COMP/FIN_CRC32C ---- */

static inline uint32_t
walfmt_crc32c_init(void)
{
    return 0xFFFFFFFFu;
}

/* Feeds len bytes into a running CRC (the COMP_CRC32C step). */
uint32_t walfmt_crc32c_update(uint32_t crc, const void *data, size_t len);

static inline uint32_t
walfmt_crc32c_final(uint32_t crc)
{
    return crc ^ 0xFFFFFFFFu;
}

/* The whole computation over one buffer: walfmt_crc32c("123456789", 9) == 0xE3069283. */
uint32_t walfmt_crc32c(const void *data, size_t len);

/* "sse4.2" or "table": the implementation in use (for logs and tests). */
const char *walfmt_crc32c_impl(void);

/* Software CRC-32C update, whatever the CPU offers (to test one against the other). */
uint32_t walfmt_crc32c_update_sw(uint32_t crc, const void *data, size_t len);

/* ---- record scanner ---- */

/*
 * Reads the WAL bytes [lsn, lsn + len) into buf.  Returns the number of bytes read: fewer than
 * len (down to 0) where the data held ends; or a negative errno, which ends the scan.
 */
typedef ssize_t (*walfmt_read_fn)(void *ctx, uint64_t lsn, void *buf, size_t len);

enum walfmt_stop {
    WALFMT_STOP_END_OF_DATA, /* the data held ended (between records or inside one) */
    WALFMT_STOP_ZERO,        /* xl_tot_len 0: zeroed space, the usual end of the WAL written */
    WALFMT_STOP_PAGE,        /* invalid page header (magic, flags, address, timeline) */
    WALFMT_STOP_RECORD,      /* invalid record header, length or continuation */
    WALFMT_STOP_CRC,         /* record CRC-32C mismatch */
};

struct walfmt_scan_params {
    uint32_t seg_size;
    uint64_t sysid; /* checked against long page headers; 0: not checked */
    uint64_t start; /* page-aligned: the first record at or after it (a continuation of a
                     * record begun before is skipped by xlp_rem_len, unchecked), as
                     * XLogFindNextRecord; otherwise a record start (its prev-link is only
                     * checked to point backwards) */
    uint64_t limit; /* no byte at or after limit is read; 0: read until read() runs dry */
    walfmt_read_fn read;
    void *ctx;
};

struct walfmt_scan {
    uint64_t records;   /* valid records found */
    uint64_t first_lsn; /* start of the first valid record (0: none) */
    uint64_t last_lsn;  /* start of the last valid record (0: none); pg_waldump's "error in WAL
                         * record at" */
    uint64_t end_lsn;   /* one past the last byte of the last valid record: where the valid WAL
                         * ends (params.start if no record was valid) */
    uint64_t next_lsn;  /* where the next record was looked for when the scan stopped (after a
                         * page header, MAXALIGNed; the next segment after an XLOG_SWITCH);
                         * pg_waldump's "invalid record length at" */
    bool switched;      /* the last valid record is an XLOG_SWITCH */
    bool skipped_cont;  /* a continuation at params.start was skipped */
    enum walfmt_stop stop;
    char why[224]; /* the reason the scan stopped, naming the LSN */
};

/*
 * Walks the records from params->start, page header by page header and record by record,
 * checking lengths, prev-links, resource manager ids and each record's CRC-32C, across page
 * and segment boundaries, until the WAL stops being valid or the data ends.  An
 * XLOG_SWITCH record makes the scan continue at the next segment; a page flagged
 * XLP_FIRST_IS_OVERWRITE_CONTRECORD abandons the record it interrupts, as xlogreader does.
 * Memory: one 64 KiB read window.  Returns 0 with *out filled (any stop reason), or a negative
 * errno from read() or -ENOMEM (then *out holds what was found up to there) or -EINVAL for bad
 * params.
 */
WM_MUSTCHECK int walfmt_scan(const struct walfmt_scan_params *params, struct walfmt_scan *out);

/* Names a stop reason ("end of data", "zeroed space", ...). */
const char *walfmt_stop_name(enum walfmt_stop stop);

#endif
