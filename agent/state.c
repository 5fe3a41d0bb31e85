/*
 * state.c - the agent's durable state file; contract and format in state.h.
 *
 * Loading reads the whole (small) file, parses it line by line - each line bounded, each key
 * known and set once, each value checked - and then verifies the checksum of the last line
 * over every byte before it.  Saving formats the file into memory, then tmp file, write,
 * fsync, close, rename, directory fsync: the classic sequence, each step checked, none
 * retried.
 */
#include "state.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "pgproto.h"
#include "util.h"

#define STATE_VERSION 2     /* written; 1 (no exposure keys) is read too */
#define STATE_FILE_MAX 65536 /* bytes: ours are ~150 */
#define STATE_LINE_MAX 255
#define STATE_TMP_SUFFIX ".tmp"

static void __attribute__((format(printf, 3, 4)))
put_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

void
state_init(struct wm_state *st)
{
    memset(st, 0, sizeof(*st));
    st->epoch = 1;
}

static bool
name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '.' || c == '-';
}

static bool
valid_name(const char *s, size_t len)
{
    if (len > STATE_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!name_char(s[i]))
            return false;
    return true;
}

/* A decimal uint64 filling all of v[len]; false on anything else or overflow. */
static bool
parse_u64(const char *v, size_t len, uint64_t *out)
{
    uint64_t n = 0;

    if (len == 0 || len > 20)
        return false;
    for (size_t i = 0; i < len; i++) {
        uint64_t d;

        if (v[i] < '0' || v[i] > '9')
            return false;
        d = (uint64_t)(v[i] - '0');
        if (n > (UINT64_MAX - d) / 10)
            return false;
        n = n * 10 + d;
    }
    *out = n;
    return true;
}

/* Exactly 16 lower-case hex digits. */
static bool
parse_hex64(const char *v, size_t len, uint64_t *out)
{
    uint64_t n = 0;

    if (len != 16)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = v[i];
        unsigned d;

        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a' + 10);
        else
            return false;
        n = n << 4 | d;
    }
    *out = n;
    return true;
}

enum state_key {
    SK_VERSION,
    SK_EPOCH,
    SK_PRIMARY,
    SK_CHANGED,
    SK_EXPOSED_LSN,
    SK_EXPOSED_AT,
    SK_CHECKSUM,
    SK_COUNT
};

static const char *const key_names[SK_COUNT] = {
    [SK_VERSION] = "version",
    [SK_EPOCH] = "epoch",
    [SK_PRIMARY] = "primary",
    [SK_CHANGED] = "changed_unix_us",
    [SK_EXPOSED_LSN] = "exposed_lsn",
    [SK_EXPOSED_AT] = "exposed_unix_us",
    [SK_CHECKSUM] = "checksum",
};

/*
 * Parses buf[len] (the whole file) into *st.  path names the file in messages.  Returns 0 or
 * -EINVAL with err set.
 */
static int
parse(const char *path, const char *buf, size_t len, struct wm_state *st, char *err,
      size_t errlen)
{
    unsigned line_of[SK_COUNT] = {0};
    const char *p = buf, *end = buf + len;
    size_t checksum_at = 0; /* offset of the checksum line */
    uint64_t version = 0, checksum = 0, sum;
    unsigned line = 0;

    if (memchr(buf, '\0', len) != NULL) {
        put_err(err, errlen, "%s: contains NUL bytes: not a walmirror state file (damaged?)",
                path);
        return -EINVAL;
    }
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl != NULL ? nl : end;
        const char *k, *v, *ke, *ve;
        int key;

        line++;
        if (line_of[SK_CHECKSUM] != 0) {
            put_err(err, errlen,
                    "%s:%u: text after the checksum line: the file is damaged or was edited",
                    path, line);
            return -EINVAL;
        }
        if (le - p > STATE_LINE_MAX) {
            put_err(err, errlen, "%s:%u: line longer than %d bytes: not a walmirror state file",
                    path, line, STATE_LINE_MAX);
            return -EINVAL;
        }
        if (le > p && le[-1] == '\r')
            le--; /* CRLF line ends */
        k = p;
        while (k < le && (*k == ' ' || *k == '\t'))
            k++;
        if (k == le || *k == '#') {
            p = nl != NULL ? nl + 1 : end;
            continue;
        }
        ke = k;
        while (ke < le && ((*ke >= 'a' && *ke <= 'z') || *ke == '_'))
            ke++;
        v = ke;
        while (v < le && (*v == ' ' || *v == '\t'))
            v++;
        if (ke == k || v == le || *v != '=') {
            put_err(err, errlen, "%s:%u: syntax error: expected \"key = value\"", path, line);
            return -EINVAL;
        }
        v++;
        while (v < le && (*v == ' ' || *v == '\t'))
            v++;
        ve = le;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        for (key = 0; key < SK_COUNT; key++)
            if (strlen(key_names[key]) == (size_t)(ke - k) &&
                memcmp(key_names[key], k, (size_t)(ke - k)) == 0)
                break;
        if (key == SK_COUNT) {
            put_err(err, errlen, "%s:%u: unknown key \"%.*s\" (written by a newer walmirror?)",
                    path, line, (int)(ke - k), k);
            return -EINVAL;
        }
        if (line_of[key] != 0) {
            put_err(err, errlen, "%s:%u: key \"%s\" set twice, on lines %u and %u", path, line,
                    key_names[key], line_of[key], line);
            return -EINVAL;
        }
        line_of[key] = line;
        switch ((enum state_key)key) {
        case SK_VERSION:
            if (!parse_u64(v, (size_t)(ve - v), &version) || version < 1 ||
                version > STATE_VERSION) {
                put_err(err, errlen,
                        "%s:%u: version \"%.*s\" is not one this build reads (1 to %d)", path,
                        line, (int)(ve - v), v, STATE_VERSION);
                return -EINVAL;
            }
            break;
        case SK_EPOCH:
            if (!parse_u64(v, (size_t)(ve - v), &st->epoch) || st->epoch == 0) {
                put_err(err, errlen, "%s:%u: epoch \"%.*s\" is not a number >= 1", path, line,
                        (int)(ve - v), v);
                return -EINVAL;
            }
            break;
        case SK_PRIMARY:
            if (!valid_name(v, (size_t)(ve - v))) {
                put_err(err, errlen, "%s:%u: primary \"%.*s\" is not a node name", path, line,
                        (int)(ve - v), v);
                return -EINVAL;
            }
            memcpy(st->primary, v, (size_t)(ve - v));
            st->primary[ve - v] = '\0';
            break;
        case SK_CHANGED:
            if (!parse_u64(v, (size_t)(ve - v), &st->changed_unix_us)) {
                put_err(err, errlen, "%s:%u: changed_unix_us \"%.*s\" is not a number", path,
                        line, (int)(ve - v), v);
                return -EINVAL;
            }
            break;
        case SK_EXPOSED_LSN:
            if (pgp_lsn_parse(v, (size_t)(ve - v), &st->exposed_lsn) < 0) {
                put_err(err, errlen, "%s:%u: exposed_lsn \"%.*s\" is not an LSN (X/X)", path,
                        line, (int)(ve - v), v);
                return -EINVAL;
            }
            break;
        case SK_EXPOSED_AT:
            if (!parse_u64(v, (size_t)(ve - v), &st->exposed_unix_us)) {
                put_err(err, errlen, "%s:%u: exposed_unix_us \"%.*s\" is not a number", path,
                        line, (int)(ve - v), v);
                return -EINVAL;
            }
            break;
        case SK_CHECKSUM:
            if (!parse_hex64(v, (size_t)(ve - v), &checksum)) {
                put_err(err, errlen,
                        "%s:%u: checksum \"%.*s\" is not 16 hex digits: the file is damaged",
                        path, line, (int)(ve - v), v);
                return -EINVAL;
            }
            checksum_at = (size_t)(p - buf);
            break;
        case SK_COUNT:
            break;
        }
        p = nl != NULL ? nl + 1 : end;
    }
    if (line_of[SK_CHECKSUM] == 0) {
        put_err(err, errlen,
                "%s: no checksum line at the end: the file is incomplete (a torn write?) or "
                "was not written by walmirror-agent",
                path);
        return -EINVAL;
    }
    sum = XXH3_64bits(buf, checksum_at);
    if (sum != checksum) {
        put_err(err, errlen,
                "%s:%u: checksum mismatch (file says %016" PRIx64 ", content gives %016" PRIx64
                "): the file is damaged or was edited by hand",
                path, line_of[SK_CHECKSUM], checksum, sum);
        return -EINVAL;
    }
    if (line_of[SK_VERSION] == 0 || line_of[SK_EPOCH] == 0) {
        put_err(err, errlen, "%s: missing key \"%s\"", path,
                line_of[SK_VERSION] == 0 ? "version" : "epoch");
        return -EINVAL;
    }
    /* Version 2 says whether the epoch's holder runs exposed; version 1 predates exposure. */
    if (version >= 2 && (line_of[SK_EXPOSED_LSN] == 0 || line_of[SK_EXPOSED_AT] == 0)) {
        put_err(err, errlen, "%s: missing key \"%s\"", path,
                line_of[SK_EXPOSED_LSN] == 0 ? "exposed_lsn" : "exposed_unix_us");
        return -EINVAL;
    }
    if (version < 2 && (line_of[SK_EXPOSED_LSN] != 0 || line_of[SK_EXPOSED_AT] != 0)) {
        put_err(err, errlen, "%s:%u: key \"%s\" is not part of a version 1 file", path,
                line_of[SK_EXPOSED_LSN] != 0 ? line_of[SK_EXPOSED_LSN] : line_of[SK_EXPOSED_AT],
                line_of[SK_EXPOSED_LSN] != 0 ? "exposed_lsn" : "exposed_unix_us");
        return -EINVAL;
    }
    return 0;
}

int
state_load(const char *dir, struct wm_state *st, char *err, size_t errlen)
{
    char path[4096];
    char *buf = NULL;
    size_t len = 0;
    int fd, rc;

    state_init(st);
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (snprintf(path, sizeof(path), "%s/%s", dir, STATE_FILE) >= (int)sizeof(path)) {
        put_err(err, errlen, "%s: path too long", dir);
        return -ENAMETOOLONG;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        struct stat sb;

        rc = -errno;
        if (rc == -ENOENT && stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode))
            return 0; /* never saved: the defaults */
        if (rc == -ENOENT || rc == -ENOTDIR) {
            put_err(err, errlen, "state directory %s: %s", dir,
                    rc == -ENOENT ? "does not exist" : "is not a directory");
            return rc;
        }
        put_err(err, errlen, "%s: cannot open: %s", path, strerror(-rc));
        return rc;
    }
    buf = malloc(STATE_FILE_MAX + 1);
    if (buf == NULL) {
        close(fd);
        put_err(err, errlen, "%s: out of memory", path);
        return -ENOMEM;
    }
    for (;;) {
        ssize_t n = read(fd, buf + len, STATE_FILE_MAX + 1 - len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -errno;
            put_err(err, errlen, "%s: cannot read: %s", path, strerror(-rc));
            goto out;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len > STATE_FILE_MAX) {
            rc = -EFBIG;
            put_err(err, errlen, "%s: larger than %d bytes: not a walmirror state file", path,
                    STATE_FILE_MAX);
            goto out;
        }
    }
    rc = parse(path, buf, len, st, err, errlen);
    rc = rc < 0 ? rc : 1;
out:
    free(buf);
    close(fd);
    if (rc < 0)
        state_init(st);
    return rc;
}

int
state_save(const char *dir, const struct wm_state *st, char *err, size_t errlen)
{
    char path[4096], tmp[4096 + sizeof(STATE_TMP_SUFFIX)];
    char text[512];
    int n, m, fd, dfd, rc;

    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (st->epoch == 0 || !valid_name(st->primary, strnlen(st->primary, sizeof(st->primary)))) {
        put_err(err, errlen, "%s/%s: refusing to write an invalid state (epoch %" PRIu64 ")",
                dir, STATE_FILE, st->epoch);
        return -EINVAL;
    }
    if (snprintf(path, sizeof(path), "%s/%s", dir, STATE_FILE) >= (int)sizeof(path)) {
        put_err(err, errlen, "%s: path too long", dir);
        return -ENAMETOOLONG;
    }
    snprintf(tmp, sizeof(tmp), "%s%s", path, STATE_TMP_SUFFIX);
    n = snprintf(text, sizeof(text),
                 "# walmirror agent state: written by walmirror-agent, do not edit\n"
                 "version = %d\n"
                 "epoch = %" PRIu64 "\n"
                 "primary = %s\n"
                 "changed_unix_us = %" PRIu64 "\n"
                 "exposed_lsn = " LSN_FMT "\n"
                 "exposed_unix_us = %" PRIu64 "\n",
                 STATE_VERSION, st->epoch, st->primary, st->changed_unix_us,
                 LSN_ARGS(st->exposed_lsn), st->exposed_unix_us);
    m = snprintf(text + n, sizeof(text) - (size_t)n, "checksum = %016" PRIx64 "\n",
                 (uint64_t)XXH3_64bits(text, (size_t)n));
    n += m;

    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, 0600);
    if (fd < 0) {
        rc = -errno;
        put_err(err, errlen, "%s: cannot create: %s", tmp, strerror(-rc));
        return rc;
    }
    rc = wm_write_all(fd, text, (size_t)n);
    if (rc < 0) {
        put_err(err, errlen, "%s: cannot write: %s", tmp, strerror(-rc));
        goto fail_open;
    }
    if (fsync(fd) != 0) {
        rc = -errno;
        put_err(err, errlen, "%s: fsync failed: %s", tmp, strerror(-rc));
        goto fail_open;
    }
    if (close(fd) != 0) {
        rc = -errno;
        put_err(err, errlen, "%s: close failed: %s", tmp, strerror(-rc));
        unlink(tmp);
        return rc;
    }
    if (rename(tmp, path) != 0) {
        rc = -errno;
        put_err(err, errlen, "cannot rename %s to %s: %s", tmp, path, strerror(-rc));
        unlink(tmp);
        return rc;
    }
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        rc = -errno;
        put_err(err, errlen, "%s: cannot open the directory to fsync it: %s", dir, strerror(-rc));
        return rc;
    }
    if (fsync(dfd) != 0) {
        rc = -errno;
        put_err(err, errlen, "%s: directory fsync failed: %s", dir, strerror(-rc));
        close(dfd);
        return rc;
    }
    close(dfd);
    return 0;

fail_open:
    close(fd);
    unlink(tmp);
    return rc;
}
