/*
 * testutil.h - small helpers shared by the test suites: temporary directories, commands, free
 * loopback ports, and the test certificates.
 */
#ifndef WALMIRROR_TESTS_TESTUTIL_H
#define WALMIRROR_TESTS_TESTUTIL_H

#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>

/*
 * Like ck_assert, but usable outside a running test too (in main(), atexit handlers): prints
 * the failed condition and exits with status 3 (running the atexit handlers that stop servers),
 * which Check reports as an error inside a test.  The
 * optional message follows the condition (the format always starts with ": ").
 */
#define tu_require(cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond))                                                                               \
            tu_fail(__FILE__, __LINE__, #cond, ": " __VA_ARGS__);                                  \
    } while (0)

void tu_fail(const char *file, int line, const char *cond, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 4, 5)));

/* Creates a fresh directory under $TMPDIR (or /tmp), mode 0755; returns a malloc'd path.
 * Aborts the test on failure. */
char *tu_tmpdir(const char *tag);

/* rm -rf path (only paths under the temporary directory). */
void tu_rmtree(const char *path);

/* Runs a shell command built from fmt; returns its exit status (or -1 if it died). */
int tu_run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Runs the program prog with the arguments built from fmt (shell words), stdin from /dev/null,
 * its stdout and stderr captured in dir/out and dir/err and read back into *out and *err
 * (malloc'd; what they held before is freed).  Returns its exit status, as tu_run does.
 */
int tu_vcapture(const char *dir, char **out, char **err, const char *prog, const char *fmt,
                va_list ap) __attribute__((format(printf, 5, 0)));
/* tu_vcapture with the arguments in line. */
int tu_capture(const char *dir, char **out, char **err, const char *prog, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* A TCP port on 127.0.0.1 that was free a moment ago. */
int tu_free_port(void);

/*
 * A directory of test certificates made by tests/gen-test-certs.sh, generated once per process
 * (see that script for the files it holds: ca.crt, site-a.crt, site-b.crt, rogue CA, expired,
 * wrong name...).  Removed at exit.
 */
const char *tu_certs(void);

/* Path of a file in the test certificate directory (static buffer, overwritten by the next call).
 */
const char *tu_cert(const char *file);

/* Reads a whole file; returns malloc'd contents and sets *len, or NULL. */
void *tu_read_file(const char *path, size_t *len);

/*
 * The process's stderr (where log.h writes) captured into dir/log between tu_log_capture_start
 * and tu_log_capture_end; the latter restores stderr, echoes what was captured there (so the
 * test's output still shows it) and returns it (malloc'd).  One capture at a time.
 */
void tu_log_capture_start(const char *dir);
char *tu_log_capture_end(void);

/* How many lines of text contain every one of the NULL-terminated needles; the first such
 * line goes into first[cap] when first is not NULL. */
int tu_log_lines(const char *text, char *first, size_t cap, ...) __attribute__((sentinel));

/* A growing buffer, NUL-terminated, for what a libcurl transfer received: tu_buf_append is a
 * CURLOPT_WRITEFUNCTION with the tu_buf as its CURLOPT_WRITEDATA.  Start from {0}; free data. */
struct tu_buf {
    char *data;
    size_t len;
};
size_t tu_buf_append(char *p, size_t size, size_t n, void *ud);

#endif
