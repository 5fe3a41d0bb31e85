/*
 * test_walstream.c - real PostgreSQL 15 WAL through two processes over the walmirror wire.
 *
 * main() makes the WAL once: initdb, pgbench -i, pgbench, pg_switch_wal, as the postgres user,
 * until at least 64 MB of segments exist; then the cluster is stopped.  The tests run
 * bench/wm-walpipe as a receiver and a sender process:
 *  - over TLS 1.3 + LZ4, every segment must arrive byte-identical;
 *  - through a relay (a child of the test) that flips one bit in transit, the receiver must
 *    reject the frame (XXH3 checksum in plaintext, record MAC under TLS), drop the connection
 *    and exit with an error, and what it wrote must be a clean prefix of the original WAL.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>

#include "pgtest.h"
#include "testutil.h"

#define MIN_WAL_BYTES (64u * 1024 * 1024)

static char *wal_dir; /* the original segments */
static size_t wal_files;
static unsigned long long wal_bytes;

static const char *
walpipe(void)
{
    return WM_BINARY_DIR "/bench/wm-walpipe";
}

static int
make_wal(void)
{
    wal_dir = pgt_make_wal("walgen", 6, MIN_WAL_BYTES);
    if (wal_dir == NULL)
        return -1;
    {
        DIR *d = opendir(wal_dir);
        struct dirent *e;
        struct stat st;
        char path[4096];
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.')
                continue;
            snprintf(path, sizeof(path), "%s/%s", wal_dir, e->d_name);
            if (stat(path, &st) == 0) {
                wal_files++;
                wal_bytes += (unsigned long long)st.st_size;
            }
        }
        closedir(d);
    }
    fprintf(stderr, "generated %zu WAL segments, %llu bytes, in %s\n", wal_files, wal_bytes,
            wal_dir);
    return wal_bytes >= MIN_WAL_BYTES ? 0 : -1;
}

/* Starts argv[0] with stdout and stderr into log; returns the pid. */
static pid_t
spawn(char *const argv[], const char *log)
{
    pid_t pid = fork();

    ck_assert(pid >= 0);
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0)
            _exit(126);
        dup2(fd, 1);
        dup2(fd, 2);
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

/* Waits up to seconds for pid; returns its exit status, or -1 (and kills it) on timeout. */
static int
wait_for(pid_t pid, int seconds)
{
    int status;

    for (int i = 0; i < seconds * 20; i++) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        usleep(50000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
}

/* Waits until something listens on 127.0.0.1:port (read from /proc/net/tcp). */
static bool
wait_listening(int port)
{
    char want[32];

    snprintf(want, sizeof(want), ":%04X 00000000:0000 0A", port);
    for (int i = 0; i < 200; i++) {
        size_t len;
        char *tcp = tu_read_file("/proc/net/tcp", &len);
        bool found = tcp != NULL && strstr(tcp, want) != NULL;
        free(tcp);
        if (found)
            return true;
        usleep(25000);
    }
    return false;
}

struct run {
    char *dir; /* holds out/ and the logs */
    char out[4096];
    char recv_log[4096];
    char send_log[4096];
    int recv_status;
    int send_status;
};

static void
run_init(struct run *r, const char *tag)
{
    memset(r, 0, sizeof(*r));
    r->dir = tu_tmpdir(tag);
    snprintf(r->out, sizeof(r->out), "%s/out", r->dir);
    ck_assert(mkdir(r->out, 0755) == 0);
    snprintf(r->recv_log, sizeof(r->recv_log), "%s/recv.log", r->dir);
    snprintf(r->send_log, sizeof(r->send_log), "%s/send.log", r->dir);
}

/*
 * Runs receiver on recv_port and sender towards send_port (the same, or a relay's).
 * tls: use the test certificates; otherwise --plaintext.
 */
static void
run_pipe(struct run *r, int recv_port, int send_port, bool tls, pid_t relay)
{
    char listen[64], connect[64];
    char ca[4096], acrt[4096], akey[4096], bcrt[4096], bkey[4096];
    pid_t rp, sp;

    snprintf(listen, sizeof(listen), "127.0.0.1:%d", recv_port);
    snprintf(connect, sizeof(connect), "127.0.0.1:%d", send_port);
    snprintf(ca, sizeof(ca), "%s", tu_cert("ca.crt"));
    snprintf(acrt, sizeof(acrt), "%s", tu_cert("site-a.crt"));
    snprintf(akey, sizeof(akey), "%s", tu_cert("site-a.key"));
    snprintf(bcrt, sizeof(bcrt), "%s", tu_cert("site-b.crt"));
    snprintf(bkey, sizeof(bkey), "%s", tu_cert("site-b.key"));
    {
        char *recv_tls[] = {(char *)walpipe(), "recv",   "--listen", listen,   "--out", r->out,
                            "--name",          "site-b", "--peer",   "site-a", "--ca",  ca,
                            "--cert",          bcrt,     "--key",    bkey,     NULL};
        char *recv_plain[] = {(char *)walpipe(), "recv",   "--listen",    listen,
                              "--out",           r->out,   "--name",      "site-b",
                              "--peer",          "site-a", "--plaintext", NULL};
        rp = spawn(tls ? recv_tls : recv_plain, r->recv_log);
    }
    ck_assert_msg(wait_listening(recv_port), "receiver does not listen; see %s", r->recv_log);
    if (relay > 0)
        ck_assert(wait_listening(send_port));
    {
        char *send_tls[] = {(char *)walpipe(), "send",   "--connect", connect,  "--in", wal_dir,
                            "--name",          "site-a", "--peer",    "site-b", "--ca", ca,
                            "--cert",          acrt,     "--key",     akey,     NULL};
        char *send_plain[] = {(char *)walpipe(), "send",   "--connect", connect,  "--in",
                              wal_dir,           "--name", "site-a",    "--peer", "site-b",
                              "--plaintext",     NULL};
        sp = spawn(tls ? send_tls : send_plain, r->send_log);
    }
    r->send_status = wait_for(sp, 240);
    r->recv_status = wait_for(rp, 30);
    if (relay > 0)
        wait_for(relay, 10);
}

static char *
slurp(const char *path)
{
    size_t len;
    char *s = tu_read_file(path, &len);
    ck_assert_msg(s != NULL, "cannot read %s", path);
    return s;
}

/* Each output file must be a prefix of (or equal to) the original segment. */
static size_t
check_prefixes(const char *out, bool must_be_complete)
{
    DIR *d = opendir(out);
    struct dirent *e;
    size_t n = 0;

    ck_assert(d != NULL);
    while ((e = readdir(d)) != NULL) {
        struct stat st;
        char path[4096];
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", out, e->d_name);
        ck_assert(stat(path, &st) == 0);
        if (must_be_complete)
            ck_assert_int_eq(tu_run("cmp -s '%s/%s' '%s'", wal_dir, e->d_name, path), 0);
        else
            ck_assert_msg(tu_run("cmp -s -n %lld '%s/%s' '%s'", (long long)st.st_size, wal_dir,
                                 e->d_name, path) == 0,
                          "%s differs from the original within its %lld bytes", path,
                          (long long)st.st_size);
        n++;
    }
    closedir(d);
    return n;
}

START_TEST(test_tls_lz4_byte_identical)
{
    struct run r;
    int port = tu_free_port();
    char *slog, *rlog;
    const char *ratio;

    run_init(&r, "pipe-tls");
    run_pipe(&r, port, port, true, 0);
    ck_assert_msg(r.send_status == 0, "sender failed (%d): %s", r.send_status, slurp(r.send_log));
    ck_assert_msg(r.recv_status == 0, "receiver failed (%d): %s", r.recv_status, slurp(r.recv_log));
    ck_assert_uint_eq(check_prefixes(r.out, true), wal_files);
    slog = slurp(r.send_log);
    ratio = strstr(slog, "compression ");
    ck_assert_msg(ratio != NULL, "no compression figure in: %s", slog);
    ck_assert_msg(strtod(ratio + 12, NULL) > 1.3, "WAL compressed only %.2fx",
                  strtod(ratio + 12, NULL));
    rlog = slurp(r.recv_log);
    ck_assert(strstr(rlog, "TLS 1.3 established") != NULL);
    fprintf(stderr, "%s", slog);
    free(slog);
    free(rlog);
    tu_rmtree(r.dir);
    free(r.dir);
}
END_TEST

/*
 * The relay: accepts one connection on listen_fd, connects to 127.0.0.1:to, and copies both
 * ways; in the sender-to-receiver direction it flips bit 3 of the byte at offset flip_at.
 */
static pid_t
start_relay(int listen_fd, int to, long flip_at)
{
    pid_t pid = fork();

    ck_assert(pid >= 0);
    if (pid > 0) {
        close(listen_fd);
        return pid;
    }
    {
        struct sockaddr_in sin = {.sin_family = AF_INET,
                                  .sin_port = htons((uint16_t)to),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        int a = accept(listen_fd, NULL, NULL);
        int b = socket(AF_INET, SOCK_STREAM, 0);
        long forwarded = 0;
        static char buf[65536];

        if (a < 0 || b < 0 || connect(b, (struct sockaddr *)&sin, sizeof(sin)) < 0)
            _exit(3);
        for (;;) {
            struct pollfd p[2] = {{.fd = a, .events = POLLIN}, {.fd = b, .events = POLLIN}};
            if (poll(p, 2, 20000) <= 0)
                _exit(4);
            for (int i = 0; i < 2; i++) {
                ssize_t n;
                if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
                    continue;
                n = read(p[i].fd, buf, sizeof(buf));
                if (n <= 0)
                    _exit(0);
                if (i == 0 && forwarded <= flip_at && forwarded + n > flip_at)
                    buf[flip_at - forwarded] ^= 0x08;
                if (i == 0)
                    forwarded += n;
                if (write(i == 0 ? b : a, buf, (size_t)n) != n)
                    _exit(0);
            }
        }
    }
}

static int
relay_socket(int *port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    ck_assert(fd >= 0);
    ck_assert(bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0);
    ck_assert(listen(fd, 1) == 0);
    ck_assert(getsockname(fd, (struct sockaddr *)&sin, &len) == 0);
    *port = ntohs(sin.sin_port);
    return fd;
}

static void
corrupt_in_transit(bool tls, const char *expect)
{
    struct run r;
    int relay_port, lfd = relay_socket(&relay_port);
    int recv_port = tu_free_port(); /* after the relay's bind: never the same port */
    pid_t relay;
    char *rlog;

    run_init(&r, tls ? "corrupt-tls" : "corrupt-plain");
    /* Well into the stream: after several MB of WAL have gone through intact. */
    relay = start_relay(lfd, recv_port, 5L * 1024 * 1024 + 12345);
    run_pipe(&r, recv_port, relay_port, tls, relay);
    rlog = slurp(r.recv_log);
    ck_assert_msg(r.recv_status == 1, "receiver exit %d, log: %s", r.recv_status, rlog);
    ck_assert_msg(r.send_status == 1, "sender exit %d", r.send_status);
    ck_assert_msg(strstr(rlog, expect) != NULL, "receiver log lacks \"%s\": %s", expect, rlog);
    ck_assert_msg(strstr(rlog, "dropping connection") != NULL || strstr(rlog, "TLS failure"),
                  "receiver did not drop the connection: %s", rlog);
    /* Some WAL arrived before the flip, and all of it is intact. */
    ck_assert_uint_ge(check_prefixes(r.out, false), 1);
    free(rlog);
    tu_rmtree(r.dir);
    free(r.dir);
}

START_TEST(test_bit_flip_plaintext_checksum)
{
    corrupt_in_transit(false, "checksum mismatch");
}
END_TEST

START_TEST(test_bit_flip_tls_record)
{
    corrupt_in_transit(true, "TLS failure");
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("walstream");
    TCase *tc = tcase_create("walstream");
    SRunner *sr;
    int failed;

    if (!pgt_available()) {
        fprintf(stderr, "PostgreSQL 15 not available: skipping\n");
        return 77;
    }
    tu_certs();
    if (make_wal() != 0) {
        fprintf(stderr, "could not generate WAL\n");
        return 1;
    }
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_tls_lz4_byte_identical);
    tcase_add_test(tc, test_bit_flip_plaintext_checksum);
    tcase_add_test(tc, test_bit_flip_tls_record);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    tu_rmtree(wal_dir);
    return failed == 0 ? 0 : 1;
}
