/*
 * spool_timeline.c - the spool's identity (spool.meta), its timeline history files and the
 * timeline switch.
 *
 * Timeline switch (spool_set_timeline)
 *   Synchronous, in this order, each step durable before the next: (1) the history file
 *   (temporary file, fsync, rename, directory fsync); (2) the switch segment S in the new
 *   timeline's file, created as NAME.partial with its bytes below the switch point - those
 *   below write_lsn read from the old file (their writes completed), the rest copied from the
 *   queued writes' buffers (the FIFO covers [write_lsn, append_end) exactly) - and zeros after,
 *   then fsync of the file and the directory; (3) spool.meta with the new timeline; (4) removal
 *   of the old-timeline files of S and of any segment prepared ahead after it.  Their struct
 *   seg become orphans: out of segs[], so no later flush batch fdatasyncs them (their bytes are
 *   durable in the new file already), but their writes and preparation still in flight complete
 *   normally - the FIFO, and so write_lsn and flush_lsn, advance as before - and an orphan is
 *   freed when nothing of it is in flight.  Nothing turns the loop, so no callback runs inside
 *   spool_set_timeline.
 *   A switch is refused (-EAGAIN) while the spool is stalled for space: the owner gives it
 *   again once the WAL before it is written.
 *   Recovery handles a crash between the steps: segment files of a timeline newer than
 *   spool.meta's are removed (step 3 did not happen: the old timeline's files are intact); of
 *   two files of one segment the newer timeline's is used and the other removed (step 4 did
 *   not happen); and if the partial segment holding the durable end is of an older timeline
 *   and reaches past that timeline's switch point (its history says so, or is unknown), it is
 *   started again in the current timeline's file as in step 2, so that appends never go to an
 *   old timeline's file past its switch point.  A missing history file of the current timeline
 *   is only a warning (the history is then unknown); a damaged one fails spool_open.
 */
#include "spool_int.h"

/* ---- identity ---- */

/* Writes spool.meta atomically: temporary file, fsync, rename, directory fsync. */
int
spool_meta_write(struct spool *s, const struct spool_identity *id)
{
    char text[256];
    int fd, ret, n;

    n = snprintf(text, sizeof(text),
                 "# walmirror spool identity (written atomically; do not edit)\n"
                 "system_identifier = %" PRIu64 "\n"
                 "segment_size = %u\n"
                 "timeline = %u\n",
                 id->system_id, (unsigned)id->seg_size, (unsigned)id->timeline);
    if (n < 0 || (size_t)n >= sizeof(text))
        return -EOVERFLOW;
    fd = openat(s->dirfd, META_TMP_NAME, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        ret = -errno;
        log_error(SPOOL_COMPONENT, "cannot create %s/%s: %s", s->dir, META_TMP_NAME,
                  strerror(-ret));
        return ret;
    }
    ret = wm_write_all(fd, text, (size_t)n);
    if (ret == 0 && fsync(fd) != 0)
        ret = -errno;
    if (close(fd) != 0 && ret == 0)
        ret = -errno;
    if (ret == 0 && renameat(s->dirfd, META_TMP_NAME, s->dirfd, META_NAME) != 0)
        ret = -errno;
    if (ret < 0) {
        log_error(SPOOL_COMPONENT, "cannot write %s/%s: %s", s->dir, META_NAME, strerror(-ret));
        return ret;
    }
    return spool_fsync_dir(s);
}

/* Reads spool.meta; 0 with s->id filled (or left empty if there is none), or an error. */
int
spool_meta_load(struct spool *s, char *err, size_t errlen)
{
    char text[META_MAX + 1];
    struct spool_identity id = {0, 0, 0};
    size_t len = 0;
    int fd = openat(s->dirfd, META_NAME, O_RDONLY | O_CLOEXEC);
    char *line, *save = NULL;
    unsigned lineno = 0;

    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errlen, "cannot open %s/%s: %s", s->dir, META_NAME, strerror(errno));
        return -errno;
    }
    for (;;) {
        ssize_t n = read(fd, text + len, META_MAX - len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = -errno;

            snprintf(err, errlen, "cannot read %s/%s: %s", s->dir, META_NAME, strerror(-e));
            spool_close_fd(fd, META_NAME);
            return e;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len == META_MAX) {
            snprintf(err, errlen, "%s/%s is larger than %d bytes", s->dir, META_NAME, META_MAX);
            spool_close_fd(fd, META_NAME);
            return -EINVAL;
        }
    }
    spool_close_fd(fd, META_NAME);
    text[len] = '\0';
    for (line = strtok_r(text, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
        char key[64];
        unsigned long long v;
        char extra;

        lineno++;
        while (*line == ' ' || *line == '\t')
            line++;
        if (*line == '\0' || *line == '#')
            continue;
        if (sscanf(line, "%63[a-z_] = %llu %c", key, &v, &extra) != 2) {
            snprintf(err, errlen, "%s/%s line %u is damaged: \"%.60s\"", s->dir, META_NAME, lineno,
                     line);
            return -EINVAL;
        }
        if (strcmp(key, "system_identifier") == 0)
            id.system_id = v;
        else if (strcmp(key, "segment_size") == 0 && v <= UINT32_MAX)
            id.seg_size = (uint32_t)v;
        else if (strcmp(key, "timeline") == 0 && v <= UINT32_MAX)
            id.timeline = (uint32_t)v;
        else
            log_warning(SPOOL_COMPONENT, "%s/%s line %u: ignoring \"%s\"", s->dir, META_NAME,
                        lineno, key);
    }
    if (id.system_id == 0 || !walfmt_seg_size_valid(id.seg_size) || id.timeline == 0) {
        snprintf(err, errlen,
                 "%s/%s is damaged: system_identifier %" PRIu64 ", segment_size %u, timeline %u",
                 s->dir, META_NAME, id.system_id, (unsigned)id.seg_size, (unsigned)id.timeline);
        return -EINVAL;
    }
    s->id = id;
    return 0;
}

const struct spool_identity *
spool_identity(const struct spool *s)
{
    return &s->id;
}

int
spool_set_identity(struct spool *s, const struct spool_identity *id)
{
    int ret;

    if (id == NULL || id->system_id == 0 || !walfmt_seg_size_valid(id->seg_size) ||
        id->timeline == 0)
        return -EINVAL;
    if (s->failed)
        return s->fail_err;
    if (s->id.system_id == 0) {
        char err[256];

        ret = spool_meta_write(s, id);
        if (ret < 0)
            return ret;
        s->id = *id;
        log_info(SPOOL_COMPONENT,
                 "spool in %s belongs to system %" PRIu64 " (segment size %u, timeline %u)", s->dir,
                 id->system_id, (unsigned)id->seg_size, (unsigned)id->timeline);
        if (spool_history_load(s, err, sizeof(err)) < 0)
            log_warning(SPOOL_COMPONENT, "%s; the history of timeline %u is unknown", err,
                        (unsigned)id->timeline);
        return 0;
    }
    if (id->system_id != s->id.system_id || id->seg_size != s->id.seg_size) {
        log_error(SPOOL_COMPONENT,
                  "spool in %s holds WAL of system %" PRIu64 " (segment size %u); refusing "
                  "system %" PRIu64 " (segment size %u)",
                  s->dir, s->id.system_id, (unsigned)s->id.seg_size, id->system_id,
                  (unsigned)id->seg_size);
        return -EEXIST;
    }
    if (id->timeline != s->id.timeline && s->positioned) {
        log_info(SPOOL_COMPONENT,
                 "spool in %s holds WAL of timeline %u (offered %u): its timeline changes only "
                 "with a timeline switch",
                 s->dir, (unsigned)s->id.timeline, (unsigned)id->timeline);
    } else if (id->timeline > s->id.timeline) {
        struct spool_identity next = s->id;
        char err[256];

        next.timeline = id->timeline;
        ret = spool_meta_write(s, &next);
        if (ret < 0)
            return ret;
        log_info(SPOOL_COMPONENT, "empty spool in %s: timeline %u -> %u", s->dir,
                 (unsigned)s->id.timeline, (unsigned)next.timeline);
        s->id = next;
        if (spool_history_load(s, err, sizeof(err)) < 0)
            log_warning(SPOOL_COMPONENT, "%s; the history of timeline %u is unknown", err,
                        (unsigned)next.timeline);
    } else if (id->timeline < s->id.timeline) {
        log_warning(SPOOL_COMPONENT, "spool in %s is on timeline %u; keeping it (offered %u)",
                    s->dir, (unsigned)s->id.timeline, (unsigned)id->timeline);
    }
    return 0;
}

/* ---- timelines ---- */

static void
history_file_name(char out[HISTORY_NAME_MAX], uint32_t tli, bool tmp)
{
    snprintf(out, HISTORY_NAME_MAX, "%08X%s", (unsigned)tli,
             tmp ? HISTORY_TMP_SUFFIX : HISTORY_SUFFIX);
}

/* Parses an unsigned number in base 10 or 16 at *p; false if there is none or it overflows. */
static bool
parse_num(const char **p, const char *end, unsigned base, uint64_t max, uint64_t *out)
{
    const char *q = *p;
    uint64_t v = 0;

    while (q < end) {
        unsigned d;

        if (*q >= '0' && *q <= '9')
            d = (unsigned)(*q - '0');
        else if (base == 16 && *q >= 'A' && *q <= 'F')
            d = (unsigned)(*q - 'A' + 10);
        else if (base == 16 && *q >= 'a' && *q <= 'f')
            d = (unsigned)(*q - 'a' + 10);
        else
            break;
        if (v > (max - d) / base)
            return false;
        v = v * base + d;
        q++;
    }
    if (q == *p)
        return false;
    *p = q;
    *out = v;
    return true;
}

/*
 * Parses the history file of timeline tli as readTimeLineHistory does: per line, leading
 * whitespace skipped, blank and '#' lines ignored, then "parentTLI<whitespace>X/X" and a
 * free-form reason.  Parent timelines must increase and stay below tli; switch points must not
 * go backwards.  *out (malloc'd) gets the entries, oldest first, then tli itself with end
 * UINT64_MAX.  Returns 0, -EINVAL (with the reason in why) or -ENOMEM.
 */
static int
history_parse(const char *text, size_t len, uint32_t tli, struct spool_timeline **out, size_t *n,
              char *why, size_t whylen)
{
    struct spool_timeline *v = NULL;
    size_t cnt = 0, cap = 0;
    const char *p = text, *end = text + len;
    unsigned lineno = 0;

    *out = NULL;
    *n = 0;
    if (len > 0 && memchr(text, '\0', len) != NULL) {
        snprintf(why, whylen, "it contains a NUL byte");
        return -EINVAL;
    }
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *q = p;
        uint64_t t, hi, lo;

        if (eol == NULL)
            eol = end;
        lineno++;
        while (q < eol && wm_is_space(*q))
            q++;
        if (q == eol || *q == '#') {
            p = eol < end ? eol + 1 : end;
            continue;
        }
        if (!parse_num(&q, eol, 10, UINT32_MAX, &t) || q == eol || !wm_is_space(*q)) {
            snprintf(why, whylen, "line %u is not \"parentTLI<TAB>X/X<TAB>reason\": \"%.*s\"",
                     lineno, (int)(eol - p > 80 ? 80 : eol - p), p);
            free(v);
            return -EINVAL;
        }
        while (q < eol && wm_is_space(*q))
            q++;
        if (!parse_num(&q, eol, 16, UINT32_MAX, &hi) || q == eol || *q != '/' ||
            (q++, !parse_num(&q, eol, 16, UINT32_MAX, &lo)) || (q < eol && !wm_is_space(*q))) {
            snprintf(why, whylen, "line %u has no switch point X/X: \"%.*s\"", lineno,
                     (int)(eol - p > 80 ? 80 : eol - p), p);
            free(v);
            return -EINVAL;
        }
        if (t == 0 || t >= tli || (cnt > 0 && t <= v[cnt - 1].tli)) {
            snprintf(why, whylen,
                     "line %u names timeline %" PRIu64 ": timelines must increase and stay "
                     "below %u",
                     lineno, t, (unsigned)tli);
            free(v);
            return -EINVAL;
        }
        if (cnt > 0 && (hi << 32 | lo) < v[cnt - 1].end) {
            snprintf(why, whylen, "line %u: switch point %X/%X is before the previous one", lineno,
                     (unsigned)hi, (unsigned)lo);
            free(v);
            return -EINVAL;
        }
        if (cnt + 1 >= cap) {
            struct spool_timeline *nv;

            if (cnt >= HISTORY_MAX_ENTRIES) {
                snprintf(why, whylen, "more than %u lines of history", HISTORY_MAX_ENTRIES);
                free(v);
                return -EINVAL;
            }
            cap = cap == 0 ? 8 : cap * 2;
            nv = realloc(v, cap * sizeof(*v));
            if (nv == NULL) {
                free(v);
                return -ENOMEM;
            }
            v = nv;
        }
        v[cnt].tli = (uint32_t)t;
        v[cnt].end = hi << 32 | lo;
        cnt++;
        p = eol < end ? eol + 1 : end;
    }
    if (cnt + 1 > cap) {
        struct spool_timeline *nv = realloc(v, (cnt + 1) * sizeof(*v));

        if (nv == NULL) {
            free(v);
            return -ENOMEM;
        }
        v = nv;
    }
    v[cnt].tli = tli;
    v[cnt].end = UINT64_MAX;
    *out = v;
    *n = cnt + 1;
    return 0;
}

/* Reads history file name of dirfd into a malloc'd NUL-terminated buffer. */
static int
history_read_at(int dirfd, uint32_t tli, char **out, size_t *len)
{
    char name[HISTORY_NAME_MAX];
    struct stat st;
    char *buf;
    int fd, ret;

    *out = NULL;
    *len = 0;
    history_file_name(name, tli, false);
    fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) != 0) {
        ret = -errno;
        spool_close_fd(fd, name);
        return ret;
    }
    if (!S_ISREG(st.st_mode) || st.st_size > (off_t)HISTORY_MAX) {
        spool_close_fd(fd, name);
        return -EINVAL;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (buf == NULL) {
        spool_close_fd(fd, name);
        return -ENOMEM;
    }
    ret = st.st_size > 0 ? spool_pread_full(fd, buf, (size_t)st.st_size, 0) : 0;
    spool_close_fd(fd, name);
    if (ret < 0) {
        free(buf);
        return ret;
    }
    buf[st.st_size] = '\0';
    *out = buf;
    *len = (size_t)st.st_size;
    return 0;
}

/* A history of the current timeline alone (its history file is unknown). */
static int
history_set_bare(struct spool *s)
{
    struct spool_timeline *v = malloc(sizeof(*v));

    if (v == NULL)
        return -ENOMEM;
    v->tli = s->id.timeline;
    v->end = UINT64_MAX;
    free(s->tls);
    s->tls = v;
    s->ntls = 1;
    return 0;
}

/*
 * Loads the history of the current timeline from its history file.  Missing: a warning, and the
 * history holds the current timeline alone.  Damaged: -EINVAL with err filled (the history is
 * then the current timeline alone too).
 */
int
spool_history_load(struct spool *s, char *err, size_t errlen)
{
    struct spool_timeline *v;
    char name[HISTORY_NAME_MAX], why[192];
    size_t n, len;
    char *text;
    int ret;

    if (s->id.system_id == 0)
        return 0;
    ret = history_set_bare(s);
    if (ret < 0 || s->id.timeline <= 1)
        return ret;
    history_file_name(name, s->id.timeline, false);
    ret = history_read_at(s->dirfd, s->id.timeline, &text, &len);
    if (ret == -ENOENT) {
        log_warning(SPOOL_COMPONENT,
                    "%s: no %s: the history of timeline %u is unknown (older timelines are not "
                    "served)",
                    s->dir, name, (unsigned)s->id.timeline);
        return 0;
    }
    if (ret < 0) {
        snprintf(err, errlen, "cannot read %s/%s: %s", s->dir, name, strerror(-ret));
        return ret;
    }
    ret = history_parse(text, len, s->id.timeline, &v, &n, why, sizeof(why));
    free(text);
    if (ret < 0) {
        if (ret == -EINVAL)
            snprintf(err, errlen, "%s/%s is damaged: %s", s->dir, name, why);
        else
            snprintf(err, errlen, "cannot parse %s/%s: %s", s->dir, name, strerror(-ret));
        return ret;
    }
    free(s->tls);
    s->tls = v;
    s->ntls = n;
    return 0;
}

/* Writes tli's history file durably: temporary file, fsync, rename, directory fsync. */
static int
history_store(struct spool *s, uint32_t tli, const char *text, size_t len)
{
    char name[HISTORY_NAME_MAX], tmp[HISTORY_NAME_MAX];
    int fd, ret;

    history_file_name(name, tli, false);
    history_file_name(tmp, tli, true);
    fd = openat(s->dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        ret = -errno;
        spool_fail(s, ret, "cannot create %s/%s: %s", s->dir, tmp, strerror(-ret));
        return ret;
    }
    ret = wm_write_all(fd, text, len);
    if (ret == 0 && fsync(fd) != 0)
        ret = -errno;
    if (close(fd) != 0 && ret == 0)
        ret = -errno;
    if (ret == 0 && renameat(s->dirfd, tmp, s->dirfd, name) != 0)
        ret = -errno;
    if (ret == 0 && fsync(s->dirfd) != 0)
        ret = -errno;
    if (ret < 0) {
        spool_fail(s, ret, "cannot write %s/%s durably: %s", s->dir, name, strerror(-ret));
        return ret;
    }
    log_info(SPOOL_COMPONENT, "%s/%s written (%zu bytes)", s->dir, name, len);
    return 0;
}

/*
 * Fills buf with the WAL [lsn, lsn + n) of one segment: the bytes below file_upto from src_fd
 * (the segment's old file, at the segment offset), the others from the queued writes.
 */
static int
prefix_fill(struct spool *s, int src_fd, uint64_t lsn, uint8_t *buf, size_t n, uint64_t file_upto)
{
    uint64_t end = lsn + n, from = lsn;
    size_t copied = 0;

    if (file_upto > lsn) {
        size_t m = file_upto >= end ? n : (size_t)(file_upto - lsn);
        int ret;

        if (src_fd < 0)
            return -EIO;
        ret = spool_pread_full(src_fd, buf, m, walfmt_seg_offset(lsn, s->id.seg_size));
        if (ret < 0)
            return ret;
        from = lsn + m;
    }
    if (from >= end)
        return 0;
    for (const struct wreq *w = s->fifo_head; w != NULL; w = w->next) {
        uint64_t a = w->lsn > from ? w->lsn : from;
        uint64_t b = w->lsn + w->len < end ? w->lsn + w->len : end;

        if (a >= b)
            continue;
        memcpy(buf + (a - lsn), w->data + (a - w->lsn), (size_t)(b - a));
        copied += (size_t)(b - a);
    }
    /* The FIFO covers [write_lsn, append_end) exactly, each byte once. */
    return copied == end - from ? 0 : -EIO;
}

/*
 * Creates NAME.partial of segment segno on timeline tli holding the segment's first len bytes
 * (from src_fd below file_upto, from the queued writes above) and zeros after, then fsyncs it
 * and the directory.  Returns the open descriptor, or a negative errno (the file removed and
 * the reason in the log).
 */
int
spool_seg_copy_start(struct spool *s, uint32_t tli, uint64_t segno, int src_fd, uint32_t len,
                     uint64_t file_upto)
{
    uint32_t seg_size = s->id.seg_size;
    uint64_t base = walfmt_seg_start(segno, seg_size);
    char name[FILE_NAME_MAX];
    uint8_t *buf = NULL;
    const char *what = "write";
    int fd, ret = 0;

    walfmt_seg_name(name, tli, segno, seg_size);
    strcat(name, WALFMT_PARTIAL_SUFFIX);
    if (len > 0 && (buf = malloc(ZERO_BUF_SIZE)) == NULL)
        return -ENOMEM;
    fd = openat(s->dirfd, name, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        ret = -errno;
        log_error(SPOOL_COMPONENT, "cannot create %s/%s: %s", s->dir, name, strerror(-ret));
        free(buf);
        return ret;
    }
    for (uint32_t off = 0; off < seg_size && ret == 0;) {
        uint32_t blk = seg_size - off < ZERO_BUF_SIZE ? seg_size - off : ZERO_BUF_SIZE;
        const uint8_t *src = s->zeros;

        if (off < len) {
            uint32_t m = len - off < blk ? len - off : blk;

            ret = prefix_fill(s, src_fd, base + off, buf, m, file_upto);
            if (ret < 0) {
                what = "copy of the WAL below the switch point into";
                break;
            }
            memset(buf + m, 0, blk - m);
            src = buf;
        }
        ret = spool_pwrite_full(fd, src, blk, off);
        off += blk;
    }
    if (ret == 0 && fsync(fd) != 0) {
        ret = -errno;
        what = "fsync of";
    }
    if (ret == 0 && fsync(s->dirfd) != 0) {
        ret = -errno;
        what = "fsync of the directory after creating";
    }
    free(buf);
    if (ret < 0) {
        log_error(SPOOL_COMPONENT, "%s %s/%s failed: %s", what, s->dir, name, strerror(-ret));
        spool_close_fd(fd, name);
        if (unlinkat(s->dirfd, name, 0) != 0 && errno != ENOENT)
            log_warning(SPOOL_COMPONENT, "cannot remove %s/%s: %s", s->dir, name, strerror(errno));
        return ret;
    }
    log_info(SPOOL_COMPONENT, "%s/%s started with %u bytes of WAL (up to " LSN_FMT ")", s->dir,
             name, (unsigned)len, LSN_ARGS(base + len));
    return fd;
}

/*
 * Frees the orphans of which nothing is in flight or waiting.  Called where no handler of the
 * spool is running (or at the end of the outermost one), so that no caller still holds one.
 */
void
spool_orphans_settle(struct spool *s)
{
    struct seg **pp = &s->orphans;

    while (*pp != NULL) {
        struct seg *g = *pp;

        if (g->inflight > 0 || g->wait_head != NULL || g->state == SEG_PREPARING) {
            pp = &g->orphan_next;
            continue;
        }
        *pp = g->orphan_next;
        if (g->fd >= 0)
            spool_close_fd(g->fd, "a replaced spool segment");
        free(g);
    }
}

/* The switch itself: see "Timeline switch" in the header.  The arguments are validated. */
static int
timeline_switch(struct spool *s, uint32_t tli, uint64_t switch_lsn, const char *history, size_t len,
                struct spool_timeline *tls, size_t ntls)
{
    uint32_t seg_size = s->id.seg_size, old_tli = s->id.timeline;
    uint64_t segno = walfmt_segno(switch_lsn, seg_size);
    uint32_t off = walfmt_seg_offset(switch_lsn, seg_size);
    struct seg *old = seg_lookup(s, segno), *g;
    struct spool_identity next = s->id;
    char name[FILE_NAME_MAX];
    size_t first;
    int fd, ret;

    if (off > 0 && (old == NULL || old->fd < 0)) {
        spool_fail(s, -EIO, "timeline switch at " LSN_FMT ": the segment holding it is not open",
                   LSN_ARGS(switch_lsn));
        return s->fail_err;
    }
    /* Memory first, so that nothing fails for want of it once the files changed. */
    g = calloc(1, sizeof(*g));
    if (g == NULL)
        return -ENOMEM;
    if (s->nsegs == s->cap) {
        ret = spool_segs_push(s, g); /* grows the array; undone below */
        if (ret < 0) {
            free(g);
            return ret;
        }
        s->nsegs--;
    }

    ret = history_store(s, tli, history, len);
    if (ret < 0) {
        free(g);
        return ret;
    }
    fd = spool_seg_copy_start(s, tli, segno, old != NULL ? old->fd : -1, off, s->write_lsn);
    if (fd < 0) {
        free(g);
        walfmt_seg_name(name, tli, segno, seg_size);
        spool_fail(s, fd, "starting %s for the timeline switch at " LSN_FMT " failed: %s", name,
                   LSN_ARGS(switch_lsn), strerror(-fd));
        return s->fail_err;
    }
    next.timeline = tli;
    ret = spool_meta_write(s, &next);
    if (ret < 0) {
        spool_close_fd(fd, "the new timeline's segment");
        free(g);
        spool_fail(s, ret, "recording timeline %u in %s/%s failed: %s", (unsigned)tli, s->dir,
                   META_NAME, strerror(-ret));
        return s->fail_err;
    }

    /* The files of segment S and after on the old timeline are replaced. */
    for (first = 0; first < s->nsegs && s->segs[first]->segno < segno; first++)
        ;
    for (size_t i = first; i < s->nsegs; i++) {
        struct seg *o = s->segs[i];

        seg_file_name(s, o, seg_is_partial(o), name);
        if (unlinkat(s->dirfd, name, 0) != 0 && errno != ENOENT)
            log_warning(SPOOL_COMPONENT, "cannot remove %s/%s: %s", s->dir, name, strerror(errno));
        else
            log_info(SPOOL_COMPONENT, "removed %s: replaced by timeline %u's file", name,
                     (unsigned)tli);
        o->orphan_next = s->orphans;
        s->orphans = o;
    }
    s->nsegs = first;
    if (fsync(s->dirfd) != 0)
        log_warning(SPOOL_COMPONENT,
                    "fsync of %s after removing the old timeline's files failed: %s (recovery "
                    "removes them if they come back)",
                    s->dir, strerror(errno));
    g->segno = segno;
    g->tli = tli;
    g->state = SEG_OPEN;
    g->fd = fd;
    s->segs[s->nsegs++] = g;
    if (s->in_cb == 0)
        spool_orphans_settle(s); /* else at the end of the running handler */
    spool_rd_cache_drop(s);
    s->id = next;
    free(s->tls);
    s->tls = tls;
    s->ntls = ntls;
    log_info(SPOOL_COMPONENT,
             "spool in %s: timeline %u -> %u at " LSN_FMT " (written " LSN_FMT ", durable " LSN_FMT
             ")",
             s->dir, (unsigned)old_tli, (unsigned)tli, LSN_ARGS(switch_lsn), LSN_ARGS(s->write_lsn),
             LSN_ARGS(s->flush_lsn));
    return 0;
}

int
spool_set_timeline(struct spool *s, uint32_t tli, uint64_t switch_lsn, const char *history,
                   size_t len)
{
    struct spool_timeline *tls = NULL;
    size_t ntls = 0;
    char why[192];
    int ret;

    if (s->failed)
        return s->fail_err;
    if (s->stall_err != 0) {
        log_warning(SPOOL_COMPONENT, "timeline %u not taken while the spool waits for space",
                    (unsigned)tli);
        return -EAGAIN;
    }
    if (s->id.system_id == 0) {
        log_error(SPOOL_COMPONENT, "timeline %u given to the spool in %s before its identity",
                  (unsigned)tli, s->dir);
        return -EINVAL;
    }
    if (tli == 0 || (history == NULL && len != 0) || (tli == 1) != (len == 0) ||
        len > HISTORY_MAX) {
        log_error(SPOOL_COMPONENT,
                  "spool in %s: timeline %u with a history of %zu bytes refused (only timeline "
                  "1 has none; at most %u bytes)",
                  s->dir, (unsigned)tli, len, HISTORY_MAX);
        return -EINVAL;
    }
    ret = history_parse(history, len, tli, &tls, &ntls, why, sizeof(why));
    if (ret < 0) {
        if (ret == -EINVAL)
            log_error(SPOOL_COMPONENT, "spool in %s: the history of timeline %u is invalid: %s",
                      s->dir, (unsigned)tli, why);
        return ret;
    }

    if (!s->positioned) {
        /* Empty: record the timeline and its history, nothing to switch. */
        struct spool_identity next = s->id;

        next.timeline = tli;
        if (tli > 1)
            ret = history_store(s, tli, history, len);
        if (ret == 0 && tli != s->id.timeline) {
            ret = spool_meta_write(s, &next);
            if (ret < 0)
                spool_fail(s, ret, "recording timeline %u in %s/%s failed: %s", (unsigned)tli,
                           s->dir, META_NAME, strerror(-ret));
        }
        if (ret < 0) {
            free(tls);
            return s->failed ? s->fail_err : ret;
        }
        if (tli != s->id.timeline)
            log_info(SPOOL_COMPONENT, "empty spool in %s: timeline %u -> %u", s->dir,
                     (unsigned)s->id.timeline, (unsigned)tli);
        s->id = next;
        free(s->tls);
        s->tls = tls;
        s->ntls = ntls;
        return 0;
    }
    if (tli == s->id.timeline) {
        /* Nothing changes; but a history the spool lacks (its timeline came from
         * spool_set_identity) is worth keeping. */
        if (tli > 1 && s->ntls == 1) {
            ret = history_store(s, tli, history, len);
            if (ret < 0) {
                free(tls);
                return ret;
            }
            free(s->tls);
            s->tls = tls;
            s->ntls = ntls;
            return 0;
        }
        free(tls);
        return 0;
    }
    if (tli < s->id.timeline) {
        log_error(SPOOL_COMPONENT, "spool in %s is on timeline %u: timeline %u is older", s->dir,
                  (unsigned)s->id.timeline, (unsigned)tli);
        free(tls);
        return -EINVAL;
    }
    if (switch_lsn != s->append_end) {
        log_error(SPOOL_COMPONENT,
                  "timeline %u starts at " LSN_FMT " but the spool in %s holds timeline %u "
                  "up to " LSN_FMT ": a switch must be at the end of the WAL held",
                  (unsigned)tli, LSN_ARGS(switch_lsn), s->dir, (unsigned)s->id.timeline,
                  LSN_ARGS(s->append_end));
        free(tls);
        return -EINVAL;
    }
    /* tls[ntls - 2] is the history's last line: the parent and the switch point. */
    if (ntls < 2 || tls[ntls - 2].tli != s->id.timeline || tls[ntls - 2].end != switch_lsn) {
        log_error(SPOOL_COMPONENT,
                  "the history of timeline %u ends with %s%u at " LSN_FMT
                  ", not with the switch from the spool's timeline %u at " LSN_FMT " (spool in %s)",
                  (unsigned)tli, ntls < 2 ? "no parent: " : "timeline ",
                  ntls < 2 ? 0u : (unsigned)tls[ntls - 2].tli,
                  LSN_ARGS(ntls < 2 ? 0 : tls[ntls - 2].end), (unsigned)s->id.timeline,
                  LSN_ARGS(switch_lsn), s->dir);
        free(tls);
        return -EINVAL;
    }
    /* What the spool knows of its own history must be the new history's beginning. */
    if (s->ntls > 1) {
        bool same = s->ntls == ntls - 1;

        for (size_t i = 0; same && i + 1 < s->ntls; i++)
            same = s->tls[i].tli == tls[i].tli && s->tls[i].end == tls[i].end;
        if (!same) {
            log_error(SPOOL_COMPONENT,
                      "the history of timeline %u does not continue the history of the spool's "
                      "timeline %u (spool in %s)",
                      (unsigned)tli, (unsigned)s->id.timeline, s->dir);
            free(tls);
            return -EINVAL;
        }
    }
    ret = timeline_switch(s, tli, switch_lsn, history, len, tls, ntls);
    if (ret < 0)
        free(tls);
    return ret;
}

const struct spool_timeline *
spool_timelines(const struct spool *s, size_t *n)
{
    *n = s->id.system_id != 0 ? s->ntls : 0;
    return s->tls;
}

uint64_t
spool_timeline_end(const struct spool *s, uint32_t tli)
{
    if (s->id.system_id == 0 || tli == 0)
        return 0;
    for (size_t i = 0; i < s->ntls; i++)
        if (s->tls[i].tli == tli)
            return s->tls[i].end;
    return 0;
}

int
spool_read_history(const struct spool *s, uint32_t tli, char **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    if (s->id.system_id == 0 || tli < 2 || tli > s->id.timeline)
        return -ENOENT;
    return history_read_at(s->dirfd, tli, out, len);
}

bool
spool_name_is_history(const char *name, bool *tmp)
{
    size_t len = strlen(name);

    if (len < 8 + strlen(HISTORY_SUFFIX))
        return false;
    for (size_t i = 0; i < 8; i++)
        if (!((name[i] >= '0' && name[i] <= '9') || (name[i] >= 'A' && name[i] <= 'F')))
            return false;
    *tmp = strcmp(name + 8, HISTORY_TMP_SUFFIX) == 0;
    return *tmp || strcmp(name + 8, HISTORY_SUFFIX) == 0;
}
