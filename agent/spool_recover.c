/*
 * spool_recover.c - the spool's recovery at open: from the files found, the segments held
 * and the durable end, made durable before spool_open reports them.
 *
 * Recovery (spool_open)
 *   Segment files are listed; the newest contiguous run is the spool (older files past a gap
 *   are left alone, with a warning).  Complete segments are durable by construction (renamed
 *   only after their fdatasync).  The partial ones are scanned with walfmt_scan from the start
 *   of the segment before the first of them when that one is held (so a record crossing into
 *   the partial segment has its CRC checked), else from the partial segment's start (its
 *   leading continuation skipped by xlp_rem_len).  The durable end E is the end of the last
 *   valid record, but never less than the end of the last complete segment.  Partial files
 *   wholly before E are fsynced and renamed; the one holding E is zeroed from E to its end
 *   (also re-extending a file cut short); partial files after it are removed.  Then every file
 *   and the directory are fsynced, and write_lsn = flush_lsn = E.
 */
#include "spool_int.h"

/* ---- recovery ---- */

struct found {
    char name[FILE_NAME_MAX];
    uint64_t segno;
    uint32_t tli;
    bool partial;
    off_t size;
};

static int
found_cmp(const void *a, const void *b)
{
    const struct found *x = a, *y = b;

    if (x->segno != y->segno)
        return x->segno < y->segno ? -1 : 1;
    if (x->tli != y->tli)
        return x->tli < y->tli ? -1 : 1;
    return (int)x->partial - (int)y->partial; /* complete first */
}

bool
spool_name_is_segment(const char *name)
{
    size_t len = strlen(name);

    if (len != WALFMT_NAME_LEN && (len != WALFMT_NAME_LEN + strlen(WALFMT_PARTIAL_SUFFIX) ||
                                   strcmp(name + WALFMT_NAME_LEN, WALFMT_PARTIAL_SUFFIX) != 0))
        return false;
    for (size_t i = 0; i < WALFMT_NAME_LEN; i++)
        if (!((name[i] >= '0' && name[i] <= '9') || (name[i] >= 'A' && name[i] <= 'F')))
            return false;
    return true;
}

/* Lists the directory's segment file names (unsorted). */
static int
list_names(struct spool *s, struct found **out, size_t *count, char *err, size_t errlen)
{
    int fd = dup(s->dirfd);
    struct found *v = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    DIR *d;

    if (fd < 0 || lseek(fd, 0, SEEK_SET) < 0 || (d = fdopendir(fd)) == NULL) {
        int ret = -errno;

        if (fd >= 0)
            spool_close_fd(fd, s->dir);
        snprintf(err, errlen, "cannot list %s: %s", s->dir, strerror(-ret));
        return ret;
    }
    errno = 0;
    while ((e = readdir(d)) != NULL) {
        if (!spool_name_is_segment(e->d_name))
            continue;
        if (n == cap) {
            struct found *p = realloc(v, (cap = cap ? cap * 2 : 64) * sizeof(*v));

            if (p == NULL) {
                free(v);
                closedir(d);
                snprintf(err, errlen, "out of memory listing %s", s->dir);
                return -ENOMEM;
            }
            v = p;
        }
        memset(&v[n], 0, sizeof(v[n]));
        memcpy(v[n].name, e->d_name, strlen(e->d_name) + 1); /* fits: spool_name_is_segment */
        n++;
        errno = 0;
    }
    if (errno != 0) {
        int ret = -errno;

        free(v);
        closedir(d);
        snprintf(err, errlen, "cannot list %s: %s", s->dir, strerror(-ret));
        return ret;
    }
    if (closedir(d) != 0)
        log_warning(SPOOL_COMPONENT, "closedir of %s failed: %s", s->dir, strerror(errno));
    *out = v;
    *count = n;
    return 0;
}

/* Without spool.meta: the identity from the long page header of the oldest segment file. */
static int
derive_identity(struct spool *s, struct found *v, size_t n, char *err, size_t errlen)
{
    const struct found *oldest = &v[0];
    struct walfmt_page_header ph;
    struct spool_identity id;
    uint8_t buf[WALFMT_LONG_PHD_SIZE];
    uint64_t segno;
    bool partial;
    ssize_t r;
    int fd, ret;

    for (size_t i = 1; i < n; i++)
        if (strcmp(v[i].name, oldest->name) < 0)
            oldest = &v[i];
    fd = openat(s->dirfd, oldest->name, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        ret = -errno;
        snprintf(err, errlen, "cannot open %s/%s: %s", s->dir, oldest->name, strerror(-ret));
        return ret;
    }
    r = pread(fd, buf, sizeof(buf), 0);
    ret = r < 0 ? -errno : 0;
    spool_close_fd(fd, oldest->name);
    if (ret < 0) {
        snprintf(err, errlen, "cannot read %s/%s: %s", s->dir, oldest->name, strerror(-ret));
        return ret;
    }
    if (walfmt_page_header_parse(buf, (size_t)r, &ph) != (int)WALFMT_LONG_PHD_SIZE ||
        ph.magic != WALFMT_PAGE_MAGIC || ph.sysid == 0 || !walfmt_seg_size_valid(ph.seg_size) ||
        ph.xlog_blcksz != WALFMT_BLCKSZ ||
        walfmt_parse_seg_name(oldest->name, ph.seg_size, &id.timeline, &segno, &partial) != 0) {
        snprintf(err, errlen,
                 "%s has segment files but no %s, and %s does not start with a valid long page "
                 "header to take the identity from",
                 s->dir, META_NAME, oldest->name);
        return -EINVAL;
    }
    id.system_id = ph.sysid;
    id.seg_size = ph.seg_size;
    /* The newest timeline of any segment file: a switch writes its new file before the meta. */
    for (size_t i = 0; i < n; i++) {
        uint32_t tli;

        if (walfmt_parse_seg_name(v[i].name, ph.seg_size, &tli, &segno, &partial) == 0 &&
            tli > id.timeline)
            id.timeline = tli;
    }
    log_warning(SPOOL_COMPONENT,
                "%s/%s is missing: identity taken from %s (system %" PRIu64 ", segment size %u, "
                "timeline %u)",
                s->dir, META_NAME, oldest->name, id.system_id, (unsigned)id.seg_size,
                (unsigned)id.timeline);
    ret = spool_meta_write(s, &id);
    if (ret < 0) {
        snprintf(err, errlen, "cannot write %s/%s: %s", s->dir, META_NAME, strerror(-ret));
        return ret;
    }
    s->id = id;
    return 0;
}

static ssize_t
recovery_read(void *ctx, uint64_t lsn, void *buf, size_t len)
{
    struct spool *s = ctx;
    struct seg *g = seg_lookup(s, walfmt_segno(lsn, s->id.seg_size));
    uint64_t m;
    ssize_t r;
    int fd;

    if (g == NULL)
        return 0;
    fd = spool_read_fd(s, g);
    if (fd < 0)
        return fd;
    m = seg_end_lsn(s, g) - lsn;
    if (m > len)
        m = len;
    do {
        r = pread(fd, buf, (size_t)m, (off_t)walfmt_seg_offset(lsn, s->id.seg_size));
    } while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : r;
}

/* Zeroes [from_lsn, end of segment) of g's file, extending it if short; fsyncs it.  *torn is
 * the length from from_lsn to the last non-zero byte found there. */
static int
zero_tail(struct spool *s, struct seg *g, uint64_t from_lsn, uint64_t *torn)
{
    uint64_t off = from_lsn - seg_start_lsn(s, g);
    uint64_t torn_end = off;
    uint8_t *buf = malloc(ZERO_BUF_SIZE);
    int ret = 0;

    if (buf == NULL)
        return -ENOMEM;
    while (off < s->id.seg_size && ret == 0) {
        size_t blk =
            s->id.seg_size - off < ZERO_BUF_SIZE ? (size_t)(s->id.seg_size - off) : ZERO_BUF_SIZE;
        size_t got = 0;
        bool dirty = false;

        while (got < blk) {
            ssize_t r = pread(g->fd, buf + got, blk - got, (off_t)(off + got));

            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0) {
                ret = -errno;
                break;
            }
            if (r == 0)
                break;
            got += (size_t)r;
        }
        if (ret < 0)
            break;
        for (size_t i = got; i > 0; i--)
            if (buf[i - 1] != 0) {
                dirty = true;
                if (off + i > torn_end)
                    torn_end = off + i;
                break;
            }
        if (dirty || got < blk) {
            size_t put = 0;

            while (put < blk) {
                ssize_t w = pwrite(g->fd, s->zeros, blk - put, (off_t)(off + put));

                if (w < 0 && errno == EINTR)
                    continue;
                if (w <= 0) {
                    ret = w < 0 ? -errno : -EIO;
                    break;
                }
                put += (size_t)w;
            }
        }
        off += blk;
    }
    free(buf);
    if (ret == 0 && fsync(g->fd) != 0)
        ret = -errno;
    *torn = torn_end - (from_lsn - seg_start_lsn(s, g));
    return ret;
}

/*
 * The phases of recovery, in order.  Each establishes what its comment says for the next; on
 * failure each returns a negative errno with err filled, and spool_recover stops.
 */

/* Phase 1: every name is a segment of the spool's size, a regular file, no longer than a
 * segment, and a complete one exactly a segment long. */
static int
check_files(struct spool *s, struct found *v, size_t n, char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        struct stat st;

        if (walfmt_parse_seg_name(v[i].name, s->id.seg_size, &v[i].tli, &v[i].segno,
                                  &v[i].partial) != 0) {
            snprintf(err, errlen, "%s/%s is not a segment name for segment size %u", s->dir,
                     v[i].name, (unsigned)s->id.seg_size);
            return -EINVAL;
        }
        if (fstatat(s->dirfd, v[i].name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
            int ret = -errno;

            snprintf(err, errlen, "cannot stat %s/%s: %s", s->dir, v[i].name, strerror(-ret));
            return ret;
        }
        v[i].size = st.st_size;
        if (!S_ISREG(st.st_mode) || (!v[i].partial && st.st_size != (off_t)s->id.seg_size) ||
            st.st_size > (off_t)s->id.seg_size) {
            snprintf(err, errlen, "%s/%s is %s of %lld bytes; segments are %u bytes", s->dir,
                     v[i].name, S_ISREG(st.st_mode) ? "a file" : "not a regular file",
                     (long long)st.st_size, (unsigned)s->id.seg_size);
            return -EINVAL;
        }
    }
    return 0;
}

/* Phase 2: no file of a timeline newer than spool.meta's is left (a timeline switch that did
 * not complete: its spool.meta was not written, its old-timeline files are still in place). */
static int
drop_newer_timelines(struct spool *s, struct found *v, size_t *n, char *err, size_t errlen)
{
    size_t k = 0;

    for (size_t i = 0; i < *n; i++) {
        if (v[i].tli <= s->id.timeline) {
            v[k++] = v[i];
            continue;
        }
        if (unlinkat(s->dirfd, v[i].name, 0) != 0) {
            int ret = -errno;

            snprintf(err, errlen, "cannot remove %s/%s: %s", s->dir, v[i].name, strerror(-ret));
            return ret;
        }
        log_warning(SPOOL_COMPONENT,
                    "removed %s/%s: its timeline %u is newer than the spool's (%u), a "
                    "timeline switch did not complete",
                    s->dir, v[i].name, (unsigned)v[i].tli, (unsigned)s->id.timeline);
    }
    *n = k;
    return 0;
}

/* Phase 3: v (sorted) holds one file per segment: a complete one wins over a stale partial of
 * the same timeline (left in place), a higher timeline over a lower one, whose file is removed:
 * after a timeline switch the old timeline's file of the switch segment is stale. */
static int
one_file_per_segment(struct spool *s, struct found *v, size_t *n, char *err, size_t errlen)
{
    size_t k = 0;

    for (size_t i = 0; i < *n; i++) {
        if (k > 0 && v[k - 1].segno == v[i].segno) {
            struct found *keep = &v[k - 1];
            const struct found *drop =
                v[i].tli > keep->tli || (v[i].tli == keep->tli && keep->partial) ? keep : &v[i];

            log_warning(SPOOL_COMPONENT, "%s/%s and %s hold the same segment: using %s", s->dir,
                        keep->name, v[i].name, drop == keep ? v[i].name : keep->name);
            if (v[i].tli != keep->tli) {
                if (unlinkat(s->dirfd, drop->name, 0) != 0) {
                    int ret = -errno;

                    snprintf(err, errlen, "cannot remove %s/%s: %s", s->dir, drop->name,
                             strerror(-ret));
                    return ret;
                }
                log_info(SPOOL_COMPONENT, "removed %s/%s: replaced by a newer timeline's file",
                         s->dir, drop->name);
            }
            if (drop == keep)
                *keep = v[i];
            continue;
        }
        v[k++] = v[i];
    }
    *n = k;
    return 0;
}

/* Phase 4: segs[] holds the newest contiguous run of v (n > 0), partial files open;
 * *last_complete_end is the end of its last complete segment (0 if none). */
static int
take_newest_run(struct spool *s, const struct found *v, size_t n, uint64_t *last_complete_end,
                char *err, size_t errlen)
{
    size_t first = n - 1;

    while (first > 0 && v[first - 1].segno + 1 == v[first].segno)
        first--;
    if (first > 0)
        log_warning(SPOOL_COMPONENT,
                    "%s: %zu segment files before the gap at %s are not part of the spool "
                    "(left in place)",
                    s->dir, first, v[first].name);
    *last_complete_end = 0;
    for (size_t i = first; i < n; i++) {
        struct seg *g = calloc(1, sizeof(*g));

        if (g == NULL || spool_segs_push(s, g) < 0) {
            free(g);
            snprintf(err, errlen, "out of memory");
            return -ENOMEM;
        }
        g->segno = v[i].segno;
        g->tli = v[i].tli;
        g->fd = -1;
        g->state = v[i].partial ? SEG_OPEN : SEG_COMPLETE;
        if (v[i].partial) {
            g->fd = openat(s->dirfd, v[i].name, O_RDWR | O_CLOEXEC);
            if (g->fd < 0) {
                int ret = -errno;

                snprintf(err, errlen, "cannot open %s/%s: %s", s->dir, v[i].name, strerror(-ret));
                return ret;
            }
        } else {
            *last_complete_end = seg_end_lsn(s, g);
        }
    }
    return 0;
}

/* Phase 5: *end is the durable end E: the end of the last valid record in the partial files
 * (scanned from the segment before the first of them when held), never less than the end of
 * the last complete segment; *fp is the index of the first partial segment (nsegs if none). */
static int
find_durable_end(struct spool *s, uint64_t last_complete_end, uint64_t *end, size_t *fp, char *err,
                 size_t errlen)
{
    struct walfmt_scan sc;
    size_t i;

    for (i = 0; i < s->nsegs && s->segs[i]->state == SEG_COMPLETE; i++)
        ;
    *fp = i;
    if (i == s->nsegs) {
        *end = seg_end_lsn(s, s->segs[s->nsegs - 1]);
    } else {
        struct walfmt_scan_params sp = {
            .seg_size = s->id.seg_size,
            .sysid = s->id.system_id,
            .start = seg_start_lsn(s, s->segs[i > 0 ? i - 1 : i]),
            .limit = seg_end_lsn(s, s->segs[s->nsegs - 1]),
            .read = recovery_read,
            .ctx = s,
        };
        int ret = walfmt_scan(&sp, &sc);

        if (ret < 0) {
            snprintf(err, errlen, "reading the WAL in %s failed: %s", s->dir, strerror(-ret));
            return ret;
        }
        *end = sc.end_lsn;
        if (*end < seg_start_lsn(s, s->segs[i]))
            *end = seg_start_lsn(s, s->segs[i]);
        if (*end < last_complete_end)
            *end = last_complete_end;
        log_info(SPOOL_COMPONENT,
                 "%s: %" PRIu64 " valid records from " LSN_FMT ", valid WAL ends at " LSN_FMT
                 " (%s: %s)",
                 s->dir, sc.records, LSN_ARGS(sp.start), LSN_ARGS(sc.end_lsn),
                 walfmt_stop_name(sc.stop), sc.why);
    }
    spool_rd_cache_drop(s);
    return 0;
}

/* Phase 6: partial files wholly before end are complete (fsynced, renamed), the one holding end
 * is zeroed after it, and later ones are removed; segs[] holds what is left. */
static int
settle_partials(struct spool *s, size_t fp, uint64_t end, char *err, size_t errlen)
{
    int ret;

    for (size_t i = fp; i < s->nsegs;) {
        struct seg *g = s->segs[i];
        char pname[FILE_NAME_MAX], cname[FILE_NAME_MAX];

        seg_file_name(s, g, true, pname);
        seg_file_name(s, g, false, cname);
        if (g->state == SEG_COMPLETE) {
            i++;
            continue;
        }
        if (seg_end_lsn(s, g) <= end) {
            if (fsync(g->fd) != 0 || renameat(s->dirfd, pname, s->dirfd, cname) != 0) {
                ret = -errno;
                snprintf(err, errlen, "cannot complete %s/%s: %s", s->dir, pname, strerror(-ret));
                return ret;
            }
            spool_close_fd(g->fd, cname);
            g->fd = -1;
            g->state = SEG_COMPLETE;
            log_info(SPOOL_COMPONENT, "recovered %s: complete, renamed to %s", pname, cname);
            i++;
        } else if (seg_start_lsn(s, g) <= end) {
            uint64_t torn = 0;

            ret = zero_tail(s, g, end, &torn);
            if (ret < 0) {
                snprintf(err, errlen, "cannot zero the tail of %s/%s after " LSN_FMT ": %s", s->dir,
                         pname, LSN_ARGS(end), strerror(-ret));
                return ret;
            }
            log_info(SPOOL_COMPONENT,
                     "recovered %s up to " LSN_FMT ", %" PRIu64 " bytes of torn tail discarded",
                     pname, LSN_ARGS(end), torn);
            i++;
        } else {
            spool_close_fd(g->fd, pname);
            g->fd = -1;
            if (unlinkat(s->dirfd, pname, 0) != 0) {
                ret = -errno;
                snprintf(err, errlen, "cannot remove %s/%s: %s", s->dir, pname, strerror(-ret));
                return ret;
            }
            log_info(SPOOL_COMPONENT, "removed %s: nothing in it precedes the durable end " LSN_FMT,
                     pname, LSN_ARGS(end));
            free(g);
            memmove(s->segs + i, s->segs + i + 1, (s->nsegs - i - 1) * sizeof(*s->segs));
            s->nsegs--;
        }
    }
    return 0;
}

/* Phase 7: appends never go to an older timeline's file past that timeline's switch point: a
 * partial segment holding end that does is started again in the current timeline's file. */
static int
continue_in_current_timeline(struct spool *s, uint64_t end, char *err, size_t errlen)
{
    struct seg *g = s->segs[s->nsegs - 1];
    char oname[FILE_NAME_MAX];
    uint32_t old_tli = g->tli;
    int fd;

    if (g->state == SEG_COMPLETE || g->tli >= s->id.timeline ||
        spool_timeline_end(s, g->tli) >= seg_end_lsn(s, g))
        return 0;
    seg_file_name(s, g, true, oname);
    fd = spool_seg_copy_start(s, s->id.timeline, g->segno, g->fd,
                              (uint32_t)(end - seg_start_lsn(s, g)), end);
    if (fd < 0) {
        snprintf(err, errlen, "cannot start segment %" PRIu64 " of %s in timeline %u: %s", g->segno,
                 s->dir, (unsigned)s->id.timeline, strerror(-fd));
        return fd;
    }
    spool_close_fd(g->fd, oname);
    g->fd = fd;
    g->tli = s->id.timeline;
    if (unlinkat(s->dirfd, oname, 0) != 0 && errno != ENOENT) {
        int ret = -errno;

        snprintf(err, errlen, "cannot remove %s/%s: %s", s->dir, oname, strerror(-ret));
        return ret;
    }
    log_info(SPOOL_COMPONENT,
             "recovered %s: timeline %u ends at " LSN_FMT
             " in it, so the spool's timeline %u goes on in a file of its own",
             oname, (unsigned)old_tli, LSN_ARGS(spool_timeline_end(s, old_tli)),
             (unsigned)s->id.timeline);
    return 0;
}

/* Phase 8: what recovery found is durable before it is reported: every file held and the
 * directory are fsynced. */
static int
make_durable(struct spool *s, char *err, size_t errlen)
{
    int ret;

    for (size_t i = 0; i < s->nsegs; i++) {
        struct seg *g = s->segs[i];
        char name[FILE_NAME_MAX];
        int fd = g->fd;

        seg_file_name(s, g, seg_is_partial(g), name);
        if (fd < 0)
            fd = openat(s->dirfd, name, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || fsync(fd) != 0) {
            ret = -errno;
            snprintf(err, errlen, "cannot fsync %s/%s: %s", s->dir, name, strerror(-ret));
            if (fd >= 0 && fd != g->fd)
                spool_close_fd(fd, name);
            return ret;
        }
        if (fd != g->fd)
            spool_close_fd(fd, name);
    }
    ret = spool_fsync_dir(s);
    if (ret < 0)
        snprintf(err, errlen, "cannot fsync %s: %s", s->dir, strerror(-ret));
    return ret;
}

int
spool_recover(struct spool *s, char *err, size_t errlen)
{
    struct found *v = NULL;
    size_t n = 0, fp;
    uint64_t end = 0, last_complete_end;
    int ret;

    ret = list_names(s, &v, &n, err, errlen);
    if (ret < 0)
        return ret;
    if (n == 0)
        goto out;
    if (s->id.system_id == 0) {
        ret = derive_identity(s, v, n, err, errlen);
        if (ret < 0)
            goto out;
    }
    ret = spool_history_load(s, err, errlen);
    if (ret < 0)
        goto out;
    ret = check_files(s, v, n, err, errlen);
    if (ret < 0)
        goto out;
    ret = drop_newer_timelines(s, v, &n, err, errlen);
    if (ret < 0 || n == 0)
        goto out;
    qsort(v, n, sizeof(*v), found_cmp);
    ret = one_file_per_segment(s, v, &n, err, errlen);
    if (ret < 0)
        goto out;
    ret = take_newest_run(s, v, n, &last_complete_end, err, errlen);
    if (ret < 0)
        goto out;
    ret = find_durable_end(s, last_complete_end, &end, &fp, err, errlen);
    if (ret < 0)
        goto out;
    ret = settle_partials(s, fp, end, err, errlen);
    if (ret < 0)
        goto out;
    if (s->nsegs > 0) {
        ret = continue_in_current_timeline(s, end, err, errlen);
        if (ret < 0)
            goto out;
    }
    ret = make_durable(s, err, errlen);
    if (ret < 0)
        goto out;
    if (s->nsegs > 0) {
        s->positioned = true;
        s->start_lsn = seg_start_lsn(s, s->segs[0]);
        s->append_end = s->write_lsn = s->flush_lsn = s->flush_req = end;
    }
out:
    free(v);
    return ret;
}
