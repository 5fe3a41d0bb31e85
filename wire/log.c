/*
 * log.c - stderr logging for log.h.  Each line is written with one write(2) so that lines of
 * concurrent processes sharing a log file do not interleave.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

int log_level = LOG_LEVEL_INFO;

static const char *const level_names[] = {"ERROR", "WARNING", "INFO", "DEBUG"};

void
log_write(int level, const char *component, const char *fmt, ...)
{
    char line[2048];
    struct timespec ts;
    struct tm tm;
    size_t n;
    int r;
    va_list ap;

    if (level < LOG_LEVEL_ERROR || level > LOG_LEVEL_DEBUG)
        level = LOG_LEVEL_ERROR;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = strftime(line, sizeof(line), "%Y-%m-%d %H:%M:%S", &tm);
    r = snprintf(line + n, sizeof(line) - n, ".%03ld UTC [%ld] %s %s: ", ts.tv_nsec / 1000000,
                 (long)getpid(), level_names[level], component);
    if (r > 0)
        n += (size_t)r < sizeof(line) - n ? (size_t)r : sizeof(line) - n - 1;
    va_start(ap, fmt);
    r = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
    va_end(ap);
    if (r > 0)
        n += (size_t)r < sizeof(line) - n ? (size_t)r : sizeof(line) - n - 1;
    if (n >= sizeof(line) - 1)
        n = sizeof(line) - 2;
    line[n++] = '\n';
    /* A failed log write has nowhere better to be reported. */
    if (write(STDERR_FILENO, line, n) < 0)
        return;
}

int
log_level_parse(const char *name)
{
    for (int i = 0; i < (int)(sizeof(level_names) / sizeof(level_names[0])); i++)
        if (strcasecmp(name, level_names[i]) == 0)
            return i;
    return -1;
}

const char *
log_one_line(char *dst, size_t cap, const char *src)
{
    size_t n = 0;

    if (cap == 0)
        return dst;
    if (src == NULL)
        src = "";
    for (; *src != '\0' && n + 1 < cap; src++) {
        if (*src == '\n' || *src == '\r') {
            if (src[1] == '\0' || src[1] == '\n')
                continue;
            if (n + 3 >= cap)
                break;
            dst[n++] = ';';
            dst[n++] = ' ';
            while (src[1] == ' ' || src[1] == '\t')
                src++;
            continue;
        }
        dst[n++] = *src == '\t' ? ' ' : *src;
    }
    dst[n] = '\0';
    return dst;
}
