/*
 * log.h - the one logging macro family of walmirror.
 *
 * One line per event on stderr: timestamp, pid, level, component, message.  The component is
 * the module name, or a per-connection prefix such as "peer[site-b]".  The level is the only
 * mutable global of the program; main() sets it once.  Per-frame paths log at debug level
 * only.
 */
#ifndef WALMIRROR_WIRE_LOG_H
#define WALMIRROR_WIRE_LOG_H

#include <stddef.h>

enum log_level {
    LOG_LEVEL_ERROR = 0,
    LOG_LEVEL_WARNING = 1,
    LOG_LEVEL_INFO = 2,
    LOG_LEVEL_DEBUG = 3,
};

extern int log_level;

void log_write(int level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Copies a message that may span lines (libpq's do) into dst[cap] as one line: line breaks
 * become "; ", tabs spaces, trailing breaks go.  Returns dst.
 */
const char *log_one_line(char *dst, size_t cap, const char *src);

/* Parses "error", "warning", "info", "debug"; returns the level or -1. */
int log_level_parse(const char *name);

#define log_at(level, component, ...)                                                              \
    do {                                                                                           \
        if (log_level >= (level))                                                                  \
            log_write((level), (component), __VA_ARGS__);                                          \
    } while (0)

#define log_error(component, ...) log_at(LOG_LEVEL_ERROR, component, __VA_ARGS__)
#define log_warning(component, ...) log_at(LOG_LEVEL_WARNING, component, __VA_ARGS__)
#define log_info(component, ...) log_at(LOG_LEVEL_INFO, component, __VA_ARGS__)
#define log_debug(component, ...) log_at(LOG_LEVEL_DEBUG, component, __VA_ARGS__)

#endif
