/*
 * testutil.c - helpers for the test suites; see testutil.h.
 */
#include "testutil.h"

#include <check.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

void
tu_fail(const char *file, int line, const char *cond, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "%s:%d: requirement failed: %s", file, line, cond);
    if (strcmp(fmt, ": ") != 0) {
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
    }
    fputc('\n', stderr);
    fflush(NULL);
    /* exit, not abort: atexit handlers stop the servers and agents the test started. */
    exit(3);
}

char *
tu_tmpdir(const char *tag)
{
    const char *base = getenv("TMPDIR");
    char *path;

    if (base == NULL || base[0] == '\0')
        base = "/tmp";
    tu_require(asprintf(&path, "%s/walmirror-%s-XXXXXX", base, tag) > 0);
    tu_require(mkdtemp(path) != NULL, "mkdtemp %s failed", path);
    tu_require(chmod(path, 0755) == 0);
    return path;
}

void
tu_rmtree(const char *path)
{
    if (path == NULL || strstr(path, "/walmirror-") == NULL)
        return;
    if (getenv("WALMIRROR_KEEP_TMP") != NULL) {
        fprintf(stderr, "kept %s (WALMIRROR_KEEP_TMP)\n", path);
        return;
    }
    if (tu_run("rm -rf '%s'", path) != 0)
        fprintf(stderr, "warning: could not remove %s\n", path);
}

int
tu_run(const char *fmt, ...)
{
    char *cmd;
    int rc;
    va_list ap;

    va_start(ap, fmt);
    rc = vasprintf(&cmd, fmt, ap);
    va_end(ap);
    tu_require(rc > 0);
    rc = system(cmd);
    free(cmd);
    if (rc == -1 || !WIFEXITED(rc))
        return -1;
    return WEXITSTATUS(rc);
}

int
tu_vcapture(const char *dir, char **out, char **err, const char *prog, const char *fmt,
            va_list ap)
{
    char args[2048], out_path[4300], err_path[4300];
    size_t len;
    int rc;

    rc = vsnprintf(args, sizeof(args), fmt, ap);
    ck_assert(rc >= 0 && (size_t)rc < sizeof(args));
    snprintf(out_path, sizeof(out_path), "%s/out", dir);
    snprintf(err_path, sizeof(err_path), "%s/err", dir);
    rc = tu_run("'%s' %s >'%s' 2>'%s' </dev/null", prog, args, out_path, err_path);
    free(*out);
    free(*err);
    *out = tu_read_file(out_path, &len);
    *err = tu_read_file(err_path, &len);
    ck_assert_ptr_nonnull(*out);
    ck_assert_ptr_nonnull(*err);
    return rc;
}

int
tu_capture(const char *dir, char **out, char **err, const char *prog, const char *fmt, ...)
{
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = tu_vcapture(dir, out, err, prog, fmt, ap);
    va_end(ap);
    return rc;
}

int
tu_free_port(void)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    tu_require(fd >= 0);
    tu_require(bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0);
    tu_require(getsockname(fd, (struct sockaddr *)&sin, &len) == 0);
    close(fd);
    return ntohs(sin.sin_port);
}

static char *cert_dir;
static pid_t cert_owner;

static void
remove_cert_dir(void)
{
    /* Check forks each test; only the process that made the directory removes it. */
    if (cert_dir != NULL && getpid() == cert_owner)
        tu_rmtree(cert_dir);
}

const char *
tu_certs(void)
{
    if (cert_dir != NULL)
        return cert_dir;
    cert_dir = tu_tmpdir("certs");
    cert_owner = getpid();
    tu_require(tu_run("sh '%s/tests/gen-test-certs.sh' '%s' >'%s/gen.log' 2>&1", WM_SOURCE_DIR,
                      cert_dir, cert_dir) == 0,
               "tests/gen-test-certs.sh failed; see %s/gen.log", cert_dir);
    atexit(remove_cert_dir);
    return cert_dir;
}

const char *
tu_cert(const char *file)
{
    static char path[4096];

    snprintf(path, sizeof(path), "%s/%s", tu_certs(), file);
    return path;
}

void *
tu_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    size_t cap = 65536, n = 0, got;
    char *buf;

    if (f == NULL)
        return NULL;
    /* Read to EOF: files under /proc report a size of 0. */
    buf = malloc(cap + 1);
    while (buf != NULL && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            char *p = realloc(buf, 2 * cap + 1);
            if (p == NULL) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = p;
            cap *= 2;
        }
    }
    if (buf != NULL && ferror(f)) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf != NULL) {
        buf[n] = '\0';
        *len = n;
    }
    return buf;
}

size_t
tu_buf_append(char *p, size_t size, size_t n, void *ud)
{
    struct tu_buf *b = ud;
    char *more = realloc(b->data, b->len + size * n + 1);

    if (more == NULL)
        return 0;
    b->data = more;
    memcpy(b->data + b->len, p, size * n);
    b->len += size * n;
    b->data[b->len] = '\0';
    return size * n;
}

static int log_saved_stderr = -1;
static char log_capture_path[4200];

void
tu_log_capture_start(const char *dir)
{
    int fd;

    tu_require(log_saved_stderr < 0, "a log capture is already running");
    snprintf(log_capture_path, sizeof(log_capture_path), "%s/log", dir);
    fd = open(log_capture_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    tu_require(fd >= 0, "cannot create %s", log_capture_path);
    fflush(stderr);
    log_saved_stderr = dup(STDERR_FILENO);
    tu_require(log_saved_stderr >= 0);
    tu_require(dup2(fd, STDERR_FILENO) == STDERR_FILENO);
    close(fd);
}

char *
tu_log_capture_end(void)
{
    size_t len;
    char *text;

    tu_require(log_saved_stderr >= 0, "no log capture is running");
    fflush(stderr);
    tu_require(dup2(log_saved_stderr, STDERR_FILENO) == STDERR_FILENO);
    close(log_saved_stderr);
    log_saved_stderr = -1;
    text = tu_read_file(log_capture_path, &len);
    tu_require(text != NULL, "cannot read %s", log_capture_path);
    fprintf(stderr, "%s", text);
    return text;
}

int
tu_log_lines(const char *text, char *first, size_t cap, ...)
{
    int n = 0;

    if (first != NULL && cap > 0)
        first[0] = '\0';
    for (const char *line = text; *line != '\0';) {
        const char *end = strchr(line, '\n');
        size_t len = end != NULL ? (size_t)(end - line) : strlen(line);
        bool all = true;
        const char *needle;
        va_list ap;

        va_start(ap, cap);
        while (all && (needle = va_arg(ap, const char *)) != NULL)
            all = memmem(line, len, needle, strlen(needle)) != NULL;
        va_end(ap);
        if (all && n++ == 0 && first != NULL && cap > 0)
            snprintf(first, cap, "%.*s", (int)len, line);
        line += len + (end != NULL);
    }
    return n;
}
