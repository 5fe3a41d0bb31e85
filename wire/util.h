/*
 * util.h - the few helpers every walmirror module may want, in one place instead of a copy per
 * file: LSN and time formatting, container_of, a write that finishes, ASCII character classes and the
 * "message into err[errlen]" idiom of the parsers.  Header only; nothing here keeps state.
 */
#ifndef WALMIRROR_WIRE_UTIL_H
#define WALMIRROR_WIRE_UTIL_H

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

/* An LSN as PostgreSQL prints it: printf(LSN_FMT, LSN_ARGS(lsn)) gives "16/B374D848". */
#define LSN_FMT "%X/%X"
#define LSN_ARGS(lsn) (unsigned)((uint64_t)(lsn) >> 32), (unsigned)(uint32_t)(lsn)

/* A time in microseconds since the Unix epoch as "2024-05-01 12:00:00 UTC" into buf[cap] (32
 * bytes hold it); "an unknown time" for 0.  Returns buf. */
static inline const char *
wm_format_utc(char *buf, size_t cap, uint64_t unix_us)
{
    time_t t = (time_t)(unix_us / 1000000u);
    struct tm tm;

    if (unix_us == 0 || gmtime_r(&t, &tm) == NULL)
        snprintf(buf, cap, "an unknown time");
    else
        strftime(buf, cap, "%Y-%m-%d %H:%M:%S UTC", &tm);
    return buf;
}

/* The struct that embeds member, from a pointer to that member. */
#define container_of(ptr, type, member)                                                            \
    ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/*
 * Writes all of buf[len] to fd, resuming after short writes and EINTR.  Returns 0, the -errno
 * of the write that failed, or -EIO for a write that made no progress.  Never retries after
 * an error: a caller that must not lose a write (the spool) treats any failure as final.
 */
static inline int
wm_write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len > 0) {
        ssize_t n = write(fd, p, len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return -EIO;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Space or tab: what separates words on a configuration line. */
static inline bool
wm_is_blank(char c)
{
    return c == ' ' || c == '\t';
}

/* isspace() of the C locale, whatever the process's locale is. */
static inline bool
wm_is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* Formats a one-line message into err[errlen] and returns -EINVAL: `return wm_einval(err, ...)`
 * in a parser that reports what was wrong with its input. */
static inline int __attribute__((format(printf, 3, 4)))
wm_einval(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

#endif
