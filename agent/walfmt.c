/*
 * walfmt.c - PostgreSQL 15 WAL on-disk format helpers; see walfmt.h.
 *
 * Contract
 *   Pure functions over caller-supplied bytes.  Every header field is read through a struct
 *   cursor in little-endian order.  The only state is the CRC-32C implementation and tables,
 *   set up once (pthread_once) and immutable afterwards.
 *
 * CRC-32C
 *   SSE4.2's crc32 instruction (8 bytes at a time) when cpuid says the CPU has it, else a
 *   slicing-by-8 table; both produce the raw register of PostgreSQL's COMP_CRC32C, so INIT
 *   (0xFFFFFFFF) and FIN (xor 0xFFFFFFFF) are the caller's.  WALMIRROR_CRC32C=sw forces the
 *   table (to test it, or on a CPU that misreports).
 *
 * Scanner
 *   A reimplementation (not a copy) of what xlogreader's XLogFindNextRecord and
 *   XLogDecodeNextRecord check, minus record decoding: page headers (XLogReaderValidatePageHeader),
 *   the record header (ValidXLogRecordHeader), continuation pages (XLP_FIRST_IS_CONTRECORD with
 *   xlp_rem_len equal to what is left of the record), and the CRC (ValidXLogRecord).  The CRC is
 *   computed incrementally as the record's pieces go by, so a record of any size needs no
 *   buffer beyond the 64 KiB read window and its 24-byte header.
 */
#include "walfmt.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <nmmintrin.h>
#define WALFMT_HAVE_SSE42 1
#endif

#include "cursor.h"

_Static_assert(WALFMT_SHORT_PHD_SIZE % 8 == 0, "page header sizes are MAXALIGNed");
_Static_assert(WALFMT_LONG_PHD_SIZE % 8 == 0, "page header sizes are MAXALIGNed");
_Static_assert(WALFMT_RECORD_CRC_OFFSET + 4 == WALFMT_RECORD_HDR_SIZE,
               "xl_crc ends the record header");

#define SCAN_WINDOW (64u * 1024) /* bytes read at a time; a multiple of WALFMT_BLCKSZ */
_Static_assert(SCAN_WINDOW % WALFMT_BLCKSZ == 0, "the window holds whole pages");

/* ---- segments and positions ---- */

bool
walfmt_seg_size_valid(uint64_t seg_size)
{
    return seg_size >= WALFMT_MIN_SEG_SIZE && seg_size <= WALFMT_MAX_SEG_SIZE &&
           (seg_size & (seg_size - 1)) == 0;
}

static uint64_t
segs_per_xlogid(uint32_t seg_size)
{
    return UINT64_C(0x100000000) / seg_size;
}

void
walfmt_seg_name(char out[WALFMT_NAME_LEN + 1], uint32_t tli, uint64_t segno, uint32_t seg_size)
{
    uint64_t per = segs_per_xlogid(seg_size);

    snprintf(out, WALFMT_NAME_LEN + 1, "%08X%08X%08X", (unsigned)tli, (unsigned)(segno / per),
             (unsigned)(segno % per));
}

/* Parses 8 upper-case hex digits (as XLogFileName writes them). */
static bool
parse_hex8(const char *s, uint32_t *out)
{
    uint32_t v = 0;

    for (int i = 0; i < 8; i++) {
        char c = s[i];

        if (c >= '0' && c <= '9')
            v = (v << 4) | (uint32_t)(c - '0');
        else if (c >= 'A' && c <= 'F')
            v = (v << 4) | (uint32_t)(c - 'A' + 10);
        else
            return false;
    }
    *out = v;
    return true;
}

int
walfmt_parse_seg_name(const char *name, uint32_t seg_size, uint32_t *tli, uint64_t *segno,
                      bool *partial)
{
    uint32_t t, hi, lo;
    size_t len;

    if (name == NULL || !walfmt_seg_size_valid(seg_size))
        return -EINVAL;
    len = strlen(name);
    if (len == WALFMT_NAME_LEN) {
        if (partial != NULL)
            *partial = false;
    } else if (partial != NULL && len == WALFMT_NAME_LEN + strlen(WALFMT_PARTIAL_SUFFIX) &&
               strcmp(name + WALFMT_NAME_LEN, WALFMT_PARTIAL_SUFFIX) == 0) {
        *partial = true;
    } else {
        return -EINVAL;
    }
    if (!parse_hex8(name, &t) || !parse_hex8(name + 8, &hi) || !parse_hex8(name + 16, &lo))
        return -EINVAL;
    if (t == 0 || lo >= segs_per_xlogid(seg_size))
        return -EINVAL;
    *tli = t;
    *segno = (uint64_t)hi * segs_per_xlogid(seg_size) + lo;
    return 0;
}

/* ---- page and record headers ---- */

int
walfmt_page_header_parse(const void *buf, size_t len, struct walfmt_page_header *ph)
{
    struct cursor c = cur_init(buf, len);

    memset(ph, 0, sizeof(*ph));
    if (!cur_get_u16le(&c, &ph->magic) || !cur_get_u16le(&c, &ph->info) ||
        !cur_get_u32le(&c, &ph->tli) || !cur_get_u64le(&c, &ph->pageaddr) ||
        !cur_get_u32le(&c, &ph->rem_len) || !cur_skip(&c, 4 /* padding to MAXALIGN */))
        return -EINVAL;
    if (!(ph->info & WALFMT_XLP_LONG_HEADER))
        return (int)WALFMT_SHORT_PHD_SIZE;
    if (!cur_get_u64le(&c, &ph->sysid) || !cur_get_u32le(&c, &ph->seg_size) ||
        !cur_get_u32le(&c, &ph->xlog_blcksz))
        return -EINVAL;
    return (int)WALFMT_LONG_PHD_SIZE;
}

bool
walfmt_page_header_check(const struct walfmt_page_header *ph, uint64_t page_lsn, uint32_t seg_size,
                         uint64_t sysid, char *why, size_t whylen)
{
    uint32_t offset = walfmt_seg_offset(page_lsn, seg_size);

    if (ph->magic != WALFMT_PAGE_MAGIC) {
        snprintf(why, whylen, "invalid magic number %04X in page at " LSN_FMT,
                 (unsigned)ph->magic, LSN_ARGS(page_lsn));
        return false;
    }
    if ((ph->info & ~WALFMT_XLP_ALL_FLAGS) != 0) {
        snprintf(why, whylen, "invalid info bits %04X in page at " LSN_FMT,
                 (unsigned)ph->info, LSN_ARGS(page_lsn));
        return false;
    }
    if (ph->info & WALFMT_XLP_LONG_HEADER) {
        if (sysid != 0 && ph->sysid != sysid) {
            snprintf(why, whylen,
                     "WAL at " LSN_FMT " is from a different database system: "
                     "system identifier %" PRIu64 ", expected %" PRIu64,
                     LSN_ARGS(page_lsn), ph->sysid, sysid);
            return false;
        }
        if (ph->seg_size != seg_size) {
            snprintf(why, whylen,
                     "WAL at " LSN_FMT " has segment size %u in its page header, "
                     "expected %u",
                     LSN_ARGS(page_lsn), (unsigned)ph->seg_size, (unsigned)seg_size);
            return false;
        }
        if (ph->xlog_blcksz != WALFMT_BLCKSZ) {
            snprintf(why, whylen,
                     "WAL at " LSN_FMT " has page size %u in its page header, "
                     "expected %u",
                     LSN_ARGS(page_lsn), (unsigned)ph->xlog_blcksz, WALFMT_BLCKSZ);
            return false;
        }
    } else if (offset == 0) {
        snprintf(why, whylen,
                 "invalid info bits %04X in page at " LSN_FMT
                 " (a segment's first page has a long header)",
                 (unsigned)ph->info, LSN_ARGS(page_lsn));
        return false;
    }
    if (ph->pageaddr != page_lsn) {
        snprintf(why, whylen, "unexpected pageaddr " LSN_FMT " in page at " LSN_FMT,
                 LSN_ARGS(ph->pageaddr), LSN_ARGS(page_lsn));
        return false;
    }
    return true;
}

int
walfmt_record_header_parse(const void *buf, size_t len, struct walfmt_record_header *rh)
{
    struct cursor c = cur_init(buf, len);

    memset(rh, 0, sizeof(*rh));
    if (!cur_get_u32le(&c, &rh->tot_len) || !cur_get_u32le(&c, &rh->xid) ||
        !cur_get_u64le(&c, &rh->prev) || !cur_get_u8(&c, &rh->info) || !cur_get_u8(&c, &rh->rmid) ||
        !cur_skip(&c, 2 /* padding */) || !cur_get_u32le(&c, &rh->crc))
        return -EINVAL;
    return 0;
}

bool
walfmt_record_is_switch(const struct walfmt_record_header *rh)
{
    return rh->rmid == WALFMT_RM_XLOG_ID &&
           (rh->info & (uint8_t)~WALFMT_XLR_INFO_MASK) == WALFMT_XLOG_SWITCH;
}

/* ---- CRC-32C ---- */

#define CRC32C_POLY 0x82F63B78u /* Castagnoli, reflected */

static uint32_t crc_table[8][256];
static bool crc_use_sse42;
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

#ifdef WALFMT_HAVE_SSE42
__attribute__((target("sse4.2"))) static uint32_t
crc32c_sse42(uint32_t crc, const uint8_t *p, size_t len)
{
    while (len > 0 && ((uintptr_t)p & 7) != 0) {
        crc = _mm_crc32_u8(crc, *p++);
        len--;
    }
#ifdef __x86_64__
    while (len >= 8) {
        uint64_t v;

        memcpy(&v, p, 8);
        crc = (uint32_t)_mm_crc32_u64(crc, v);
        p += 8;
        len -= 8;
    }
#endif
    while (len >= 4) {
        uint32_t v;

        memcpy(&v, p, 4);
        crc = _mm_crc32_u32(crc, v);
        p += 4;
        len -= 4;
    }
    while (len > 0) {
        crc = _mm_crc32_u8(crc, *p++);
        len--;
    }
    return crc;
}

static bool
cpu_has_sse42(void)
{
    unsigned a, b, c, d;

    if (!__get_cpuid(1, &a, &b, &c, &d))
        return false;
    return (c & bit_SSE4_2) != 0;
}
#endif

static void
crc_setup(void)
{
    const char *env = getenv("WALMIRROR_CRC32C");

    for (uint32_t i = 0; i < 256; i++) {
        uint32_t v = i;

        for (int k = 0; k < 8; k++)
            v = (v & 1) ? (v >> 1) ^ CRC32C_POLY : v >> 1;
        crc_table[0][i] = v;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xFF];
#ifdef WALFMT_HAVE_SSE42
    crc_use_sse42 = cpu_has_sse42();
#endif
    if (env != NULL && (strcmp(env, "sw") == 0 || strcmp(env, "table") == 0))
        crc_use_sse42 = false;
}

static void
crc_init_once(void)
{
    /* pthread_once fails only with invalid arguments; these are static. */
    (void)pthread_once(&crc_once, crc_setup);
}

uint32_t
walfmt_crc32c_update_sw(uint32_t crc, const void *data, size_t len)
{
    const uint8_t *p = data;

    crc_init_once();
    while (len > 0 && ((uintptr_t)p & 7) != 0) {
        crc = (crc >> 8) ^ crc_table[0][(crc ^ *p++) & 0xFF];
        len--;
    }
    while (len >= 8) {
        uint32_t lo = crc ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                             (uint32_t)p[3] << 24);
        uint32_t hi =
            (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 | (uint32_t)p[7] << 24;

        crc = crc_table[7][lo & 0xFF] ^ crc_table[6][(lo >> 8) & 0xFF] ^
              crc_table[5][(lo >> 16) & 0xFF] ^ crc_table[4][lo >> 24] ^ crc_table[3][hi & 0xFF] ^
              crc_table[2][(hi >> 8) & 0xFF] ^ crc_table[1][(hi >> 16) & 0xFF] ^
              crc_table[0][hi >> 24];
        p += 8;
        len -= 8;
    }
    while (len > 0) {
        crc = (crc >> 8) ^ crc_table[0][(crc ^ *p++) & 0xFF];
        len--;
    }
    return crc;
}

uint32_t
walfmt_crc32c_update(uint32_t crc, const void *data, size_t len)
{
    crc_init_once();
#ifdef WALFMT_HAVE_SSE42
    if (crc_use_sse42)
        return crc32c_sse42(crc, data, len);
#endif
    return walfmt_crc32c_update_sw(crc, data, len);
}

uint32_t
walfmt_crc32c(const void *data, size_t len)
{
    return walfmt_crc32c_final(walfmt_crc32c_update(walfmt_crc32c_init(), data, len));
}

const char *
walfmt_crc32c_impl(void)
{
    crc_init_once();
    return crc_use_sse42 ? "sse4.2" : "table";
}

/* ---- record scanner ---- */

const char *
walfmt_stop_name(enum walfmt_stop stop)
{
    switch (stop) {
    case WALFMT_STOP_END_OF_DATA:
        return "end of data";
    case WALFMT_STOP_ZERO:
        return "zeroed space";
    case WALFMT_STOP_PAGE:
        return "invalid page header";
    case WALFMT_STOP_RECORD:
        return "invalid record";
    case WALFMT_STOP_CRC:
        return "record checksum mismatch";
    }
    return "unknown";
}

struct scanner {
    const struct walfmt_scan_params *p;
    struct walfmt_scan *out;
    uint64_t limit;   /* effective: UINT64_MAX when params->limit is 0 */
    uint8_t *win;     /* SCAN_WINDOW bytes read from win_lsn */
    uint64_t win_lsn; /* page-aligned */
    size_t win_len;   /* valid bytes in win */
    bool win_valid;
    uint64_t latest_page; /* the newest page whose header was checked, and its timeline */
    uint32_t latest_tli;
};

/* Result of loading a page: > 0 the page header size, 0 the scan stopped (reason in out), < 0
 * a read error. */
enum { PAGE_STOPPED = 0 };

/*
 * Points *page at the bytes of the page at page_lsn and returns how many of them are held
 * (0 .. WALFMT_BLCKSZ), or a negative errno.
 */
static ssize_t
scan_get_page(struct scanner *sc, uint64_t page_lsn, const uint8_t **page)
{
    if (!sc->win_valid || page_lsn < sc->win_lsn || page_lsn >= sc->win_lsn + SCAN_WINDOW) {
        uint64_t base = page_lsn - page_lsn % SCAN_WINDOW;
        size_t want = SCAN_WINDOW;
        size_t got = 0;

        if (base >= sc->limit)
            want = 0;
        else if (sc->limit - base < want)
            want = (size_t)(sc->limit - base);
        while (got < want) {
            ssize_t n = sc->p->read(sc->p->ctx, base + got, sc->win + got, want - got);

            if (n < 0)
                return n;
            if (n == 0)
                break;
            got += (size_t)n;
        }
        sc->win_lsn = base;
        sc->win_len = got;
        sc->win_valid = true;
    }
    *page = sc->win + (page_lsn - sc->win_lsn);
    if (sc->win_len <= page_lsn - sc->win_lsn)
        return 0;
    if (sc->win_len - (page_lsn - sc->win_lsn) >= WALFMT_BLCKSZ)
        return WALFMT_BLCKSZ;
    return (ssize_t)(sc->win_len - (page_lsn - sc->win_lsn));
}

static void scan_stop(struct scanner *sc, enum walfmt_stop stop, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
scan_stop(struct scanner *sc, enum walfmt_stop stop, const char *fmt, ...)
{
    va_list ap;

    sc->out->stop = stop;
    va_start(ap, fmt);
    vsnprintf(sc->out->why, sizeof(sc->out->why), fmt, ap);
    va_end(ap);
}

/*
 * Loads and validates the header of the page at page_lsn.  Returns the header size, or
 * PAGE_STOPPED (data ended or header invalid; the reason is recorded), or a negative errno.
 * *avail receives the bytes of the page held.
 */
static int
scan_page(struct scanner *sc, uint64_t page_lsn, const uint8_t **page, size_t *avail,
          struct walfmt_page_header *ph)
{
    char why[sizeof(sc->out->why)];
    ssize_t n = scan_get_page(sc, page_lsn, page);
    int hdr;

    if (n < 0)
        return (int)n;
    *avail = (size_t)n;
    hdr = walfmt_page_header_parse(*page, *avail, ph);
    if (hdr < 0 || (size_t)hdr > *avail) {
        scan_stop(sc, WALFMT_STOP_END_OF_DATA, "end of data at " LSN_FMT,
                  LSN_ARGS(page_lsn + *avail));
        return PAGE_STOPPED;
    }
    if (!walfmt_page_header_check(ph, page_lsn, sc->p->seg_size, sc->p->sysid, why, sizeof(why))) {
        scan_stop(sc, WALFMT_STOP_PAGE, "%s", why);
        return PAGE_STOPPED;
    }
    if (page_lsn > sc->latest_page) {
        if (ph->tli < sc->latest_tli) {
            scan_stop(sc, WALFMT_STOP_PAGE,
                      "out-of-sequence timeline ID %u (after %u) in page at " LSN_FMT,
                      (unsigned)ph->tli, (unsigned)sc->latest_tli, LSN_ARGS(page_lsn));
            return PAGE_STOPPED;
        }
        sc->latest_page = page_lsn;
        sc->latest_tli = ph->tli;
    }
    return hdr;
}

/*
 * At a page-aligned start: skips the rest of a record that began before it, as
 * XLogFindNextRecord does.  Returns 0 with *pos at the first record's position, 1 when the
 * scan stopped (the reason is recorded), or a negative errno.
 */
static int
scan_skip_continuation(struct scanner *sc, uint64_t *pos)
{
    uint64_t page_lsn = *pos;
    uint32_t expect = 0; /* remaining length the next page must announce (0: none) */

    for (;;) {
        struct walfmt_page_header ph;
        const uint8_t *page;
        size_t avail;
        int hdr = scan_page(sc, page_lsn, &page, &avail, &ph);

        if (hdr < 0)
            return hdr;
        if (hdr == PAGE_STOPPED)
            return 1;
        if (!(ph.info & WALFMT_XLP_FIRST_IS_CONTRECORD)) {
            if (expect != 0) {
                scan_stop(sc, WALFMT_STOP_RECORD,
                          "there is no contrecord flag at " LSN_FMT
                          " (%u bytes of a record expected)",
                          LSN_ARGS(page_lsn), (unsigned)expect);
                return 1;
            }
            *pos = page_lsn + (uint64_t)hdr;
            return 0;
        }
        if (ph.rem_len == 0 || (expect != 0 && ph.rem_len != expect)) {
            scan_stop(sc, WALFMT_STOP_RECORD,
                      "invalid contrecord length %u (expected %u) at " LSN_FMT,
                      (unsigned)ph.rem_len, (unsigned)expect, LSN_ARGS(page_lsn));
            return 1;
        }
        sc->out->skipped_cont = true;
        if (WALFMT_MAXALIGN(ph.rem_len) < WALFMT_BLCKSZ - (uint32_t)hdr) {
            *pos = page_lsn + (uint64_t)hdr + WALFMT_MAXALIGN(ph.rem_len);
            return 0;
        }
        /* The continuation fills this page (perhaps exactly) and maybe more. */
        expect = ph.rem_len > WALFMT_BLCKSZ - (uint32_t)hdr
                     ? ph.rem_len - (WALFMT_BLCKSZ - (uint32_t)hdr)
                     : 0;
        page_lsn += WALFMT_BLCKSZ;
    }
}

/* Outcome of reading one record. */
enum rec_result {
    REC_VALID,
    REC_STOPPED,
    REC_RESTART, /* an overwrite-contrecord page interrupted it: read again from *restart */
};

/*
 * Reads and checks the record at *pos (a position that may be a page start).  prev: the
 * previous record's start, or 0 when unknown.  On REC_VALID, *pos is moved to the record's
 * end (one past its last byte) and *rh holds its header.  Returns an enum rec_result or a
 * negative errno.
 */
static int
scan_record(struct scanner *sc, uint64_t *pos, uint64_t prev, uint64_t *rec_start,
            struct walfmt_record_header *rh)
{
    struct walfmt_page_header ph;
    uint8_t hbuf[WALFMT_RECORD_HDR_SIZE];
    const uint8_t *page;
    size_t avail;
    uint64_t rec = *pos;
    uint64_t page_lsn = rec - rec % WALFMT_BLCKSZ;
    uint32_t off = (uint32_t)(rec - page_lsn);
    uint32_t tot_len, got = 0, crc = walfmt_crc32c_init();
    int hdr = scan_page(sc, page_lsn, &page, &avail, &ph);

    if (hdr < 0)
        return hdr;
    if (hdr == PAGE_STOPPED) {
        sc->out->next_lsn = rec;
        return REC_STOPPED;
    }
    if (off == 0) {
        rec += (uint64_t)hdr;
        off = (uint32_t)hdr;
    } else if (off < (uint32_t)hdr) {
        scan_stop(sc, WALFMT_STOP_RECORD, "invalid record offset at " LSN_FMT,
                  LSN_ARGS(rec));
        sc->out->next_lsn = rec;
        return REC_STOPPED;
    }
    sc->out->next_lsn = rec;
    *rec_start = rec;
    if ((ph.info & WALFMT_XLP_FIRST_IS_CONTRECORD) && off == (uint32_t)hdr) {
        scan_stop(sc, WALFMT_STOP_RECORD, "contrecord is requested by " LSN_FMT,
                  LSN_ARGS(rec));
        return REC_STOPPED;
    }
    if (avail < off + 4) {
        scan_stop(sc, WALFMT_STOP_END_OF_DATA, "end of data at " LSN_FMT,
                  LSN_ARGS(page_lsn + avail));
        return REC_STOPPED;
    }
    {
        struct cursor c = cur_init(page + off, 4);

        if (!cur_get_u32le(&c, &tot_len))
            return -EFAULT; /* four bytes were checked to be there */
    }
    if (tot_len < WALFMT_RECORD_HDR_SIZE) {
        scan_stop(sc, tot_len == 0 ? WALFMT_STOP_ZERO : WALFMT_STOP_RECORD,
                  "invalid record length at " LSN_FMT ": wanted %u, got %u",
                  LSN_ARGS(rec), WALFMT_RECORD_HDR_SIZE, (unsigned)tot_len);
        return REC_STOPPED;
    }
    if (tot_len > WALFMT_MAX_RECORD_LEN) {
        scan_stop(sc, WALFMT_STOP_RECORD, "record length %u at " LSN_FMT " too long",
                  (unsigned)tot_len, LSN_ARGS(rec));
        return REC_STOPPED;
    }

    for (;;) {
        uint32_t n = tot_len - got;

        if (n > WALFMT_BLCKSZ - off)
            n = WALFMT_BLCKSZ - off;
        if (avail < off + n) {
            scan_stop(sc, WALFMT_STOP_END_OF_DATA,
                      "record at " LSN_FMT
                      " is incomplete: the data ends at " LSN_FMT,
                      LSN_ARGS(rec), LSN_ARGS(page_lsn + avail));
            return REC_STOPPED;
        }
        {
            const uint8_t *b = page + off;
            uint32_t h = 0;

            if (got < WALFMT_RECORD_HDR_SIZE) {
                h = WALFMT_RECORD_HDR_SIZE - got < n ? WALFMT_RECORD_HDR_SIZE - got : n;
                memcpy(hbuf + got, b, h);
                if (got + h == WALFMT_RECORD_HDR_SIZE) {
                    if (walfmt_record_header_parse(hbuf, sizeof(hbuf), rh) != 0)
                        return -EFAULT;
                    if (rh->rmid > WALFMT_RM_MAX_BUILTIN_ID && rh->rmid < WALFMT_RM_MIN_CUSTOM_ID) {
                        scan_stop(sc, WALFMT_STOP_RECORD,
                                  "invalid resource manager ID %u at " LSN_FMT,
                                  (unsigned)rh->rmid, LSN_ARGS(rec));
                        return REC_STOPPED;
                    }
                    if (prev != 0 ? rh->prev != prev : !(rh->prev < rec)) {
                        scan_stop(sc, WALFMT_STOP_RECORD,
                                  "record with incorrect prev-link " LSN_FMT
                                  " at " LSN_FMT,
                                  LSN_ARGS(rh->prev), LSN_ARGS(rec));
                        return REC_STOPPED;
                    }
                }
            }
            crc = walfmt_crc32c_update(crc, b + h, n - h);
        }
        got += n;
        off += n;
        if (got == tot_len)
            break;

        /* The record goes on after the next page's header. */
        page_lsn += WALFMT_BLCKSZ;
        hdr = scan_page(sc, page_lsn, &page, &avail, &ph);
        if (hdr < 0)
            return hdr;
        if (hdr == PAGE_STOPPED) {
            if (sc->out->stop == WALFMT_STOP_END_OF_DATA)
                scan_stop(sc, WALFMT_STOP_END_OF_DATA,
                          "record at " LSN_FMT
                          " is incomplete: the data ends at " LSN_FMT,
                          LSN_ARGS(rec), LSN_ARGS(page_lsn + avail));
            return REC_STOPPED;
        }
        if (ph.info & WALFMT_XLP_FIRST_IS_OVERWRITE_CONTRECORD) {
            /* The rest of this record was never written: a new one begins on this page. */
            *pos = page_lsn;
            return REC_RESTART;
        }
        if (!(ph.info & WALFMT_XLP_FIRST_IS_CONTRECORD)) {
            scan_stop(sc, WALFMT_STOP_RECORD,
                      "there is no contrecord flag at " LSN_FMT " (record at " LSN_FMT
                      ")",
                      LSN_ARGS(page_lsn), LSN_ARGS(rec));
            return REC_STOPPED;
        }
        if (ph.rem_len == 0 || ph.rem_len != tot_len - got) {
            scan_stop(sc, WALFMT_STOP_RECORD,
                      "invalid contrecord length %u (expected %u) at " LSN_FMT,
                      (unsigned)ph.rem_len, (unsigned)(tot_len - got), LSN_ARGS(page_lsn));
            return REC_STOPPED;
        }
        off = (uint32_t)hdr;
    }

    crc = walfmt_crc32c_final(walfmt_crc32c_update(crc, hbuf, WALFMT_RECORD_CRC_OFFSET));
    if (crc != rh->crc) {
        scan_stop(sc, WALFMT_STOP_CRC,
                  "incorrect resource manager data checksum in record at " LSN_FMT,
                  LSN_ARGS(rec));
        return REC_STOPPED;
    }
    *pos = page_lsn + off;
    return REC_VALID;
}

int
walfmt_scan(const struct walfmt_scan_params *params, struct walfmt_scan *out)
{
    struct scanner sc;
    uint64_t pos, prev = 0;
    int ret = 0;

    memset(out, 0, sizeof(*out));
    if (params == NULL || params->read == NULL || !walfmt_seg_size_valid(params->seg_size))
        return -EINVAL;
    memset(&sc, 0, sizeof(sc));
    sc.p = params;
    sc.out = out;
    sc.limit = params->limit != 0 ? params->limit : UINT64_MAX;
    out->end_lsn = params->start;
    out->next_lsn = params->start;
    sc.win = malloc(SCAN_WINDOW);
    if (sc.win == NULL)
        return -ENOMEM;

    pos = params->start;
    if (pos % WALFMT_BLCKSZ == 0) {
        ret = scan_skip_continuation(&sc, &pos);
        if (ret < 0)
            goto done;
        if (ret > 0) {
            out->next_lsn = pos;
            ret = 0;
            goto done;
        }
    }
    for (;;) {
        struct walfmt_record_header rh;
        uint64_t rec = 0;

        out->next_lsn = pos;
        if (pos >= sc.limit) {
            scan_stop(&sc, WALFMT_STOP_END_OF_DATA, "end of data at " LSN_FMT,
                      LSN_ARGS(pos));
            break;
        }
        ret = scan_record(&sc, &pos, prev, &rec, &rh);
        if (ret < 0)
            goto done;
        if (ret == REC_STOPPED)
            break;
        if (ret == REC_RESTART)
            continue;
        out->records++;
        if (out->first_lsn == 0)
            out->first_lsn = rec;
        out->last_lsn = rec;
        out->end_lsn = pos;
        out->switched = walfmt_record_is_switch(&rh);
        prev = rec;
        pos = WALFMT_MAXALIGN(pos);
        if (out->switched && walfmt_seg_offset(pos, params->seg_size) != 0)
            pos += params->seg_size - walfmt_seg_offset(pos, params->seg_size);
    }
    ret = 0;
done:
    free(sc.win);
    return ret;
}
