/*
 * test_state.c - Check suite for agent/state.c, the agent's durable state file: round trip,
 * a missing file or directory, torn and damaged files refused with a clear error (every cut
 * and every flipped byte), unknown and duplicate keys named with their line, and atomic
 * replacement: a save that fails (a file size limit, a full tmpfs, a tmp name that is a
 * directory, a directory path that is a file) leaves the old file as it was.
 */
#include <check.h>
#include <sched.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "state.h"
#include "testutil.h"

static char *base; /* the test's temporary directory */
static const char *dir; /* where the state file is: base, or a mount inside it */
static char path[4400];
static char err[1024];

static void
setup(void)
{
    base = tu_tmpdir("state");
    dir = base;
    snprintf(path, sizeof(path), "%s/%s", dir, STATE_FILE);
    err[0] = '\0';
}

static void
teardown(void)
{
    tu_rmtree(base);
    free(base);
    base = NULL;
    dir = NULL;
}

static void
write_file(const char *p, const void *data, size_t len)
{
    FILE *f = fopen(p, "wb");

    ck_assert_msg(f != NULL, "cannot create %s", p);
    ck_assert_uint_eq(fwrite(data, 1, len, f), len);
    ck_assert_int_eq(fclose(f), 0);
}

static struct wm_state
sample(void)
{
    struct wm_state st;

    state_init(&st);
    st.epoch = 7;
    snprintf(st.primary, sizeof(st.primary), "site-b");
    st.changed_unix_us = 1700000000123456ull;
    return st;
}

/* Saves sample() and returns the file's bytes (malloc'd) and length. */
static char *
saved_sample(size_t *len)
{
    struct wm_state st = sample();
    char *text;

    ck_assert_msg(state_save(dir, &st, err, sizeof(err)) == 0, "%s", err);
    text = tu_read_file(path, len);
    ck_assert_ptr_nonnull(text);
    return text;
}

/* A file with the given body and a correct checksum line after it. */
static void
write_with_checksum(const char *body)
{
    char text[2048];
    int n = snprintf(text, sizeof(text), "%s", body);

    snprintf(text + n, sizeof(text) - (size_t)n, "checksum = %016" PRIx64 "\n",
             (uint64_t)XXH3_64bits(text, (size_t)n));
    write_file(path, text, strlen(text));
}

static void
expect_load_error(int want_rc, const char *what)
{
    struct wm_state st;
    int rc = state_load(dir, &st, err, sizeof(err));

    ck_assert_msg(rc == want_rc, "rc %d, want %d (%s)", rc, want_rc, err);
    ck_assert_msg(strstr(err, what) != NULL, "error \"%s\" lacks \"%s\"", err, what);
    ck_assert_uint_eq(st.epoch, 1); /* defaults on failure */
    ck_assert_str_eq(st.primary, "");
}

/* The file holds sample(). */
static void
expect_sample_intact(void)
{
    struct wm_state st;

    ck_assert_msg(state_load(dir, &st, err, sizeof(err)) == 1, "%s", err);
    ck_assert_uint_eq(st.epoch, 7);
    ck_assert_str_eq(st.primary, "site-b");
}

START_TEST(test_round_trip)
{
    struct wm_state st = sample(), back;
    struct stat sb;
    char tmp[4500];

    ck_assert_msg(state_save(dir, &st, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(state_load(dir, &back, err, sizeof(err)), 1);
    ck_assert_uint_eq(back.epoch, 7);
    ck_assert_str_eq(back.primary, "site-b");
    ck_assert_uint_eq(back.changed_unix_us, 1700000000123456ull);
    ck_assert(!state_exposed(&back));
    ck_assert_int_eq(stat(path, &sb), 0);
    ck_assert_int_eq(sb.st_mode & 0777, 0600);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    ck_assert_int_eq(access(tmp, F_OK), -1); /* no tmp file left behind */

    /* an empty primary, and the largest epoch */
    st.primary[0] = '\0';
    st.epoch = UINT64_MAX;
    st.changed_unix_us = 0;
    ck_assert_msg(state_save(dir, &st, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(state_load(dir, &back, err, sizeof(err)), 1);
    ck_assert_uint_eq(back.epoch, UINT64_MAX);
    ck_assert_str_eq(back.primary, "");
    ck_assert_uint_eq(back.changed_unix_us, 0);

    /* the exposure mark: the holder runs without its standby since (LSN, time) */
    st = sample();
    st.exposed_lsn = 0x1600000000ull | 0xB374D848u;
    st.exposed_unix_us = 1700000000999999ull;
    ck_assert_msg(state_save(dir, &st, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(state_load(dir, &back, err, sizeof(err)), 1);
    ck_assert(state_exposed(&back));
    ck_assert_uint_eq(back.exposed_lsn, st.exposed_lsn);
    ck_assert_uint_eq(back.exposed_unix_us, 1700000000999999ull);
    {
        size_t n;
        char *text = tu_read_file(path, &n);
        ck_assert_ptr_nonnull(text);
        ck_assert_msg(strstr(text, "exposed_lsn = 16/B374D848\n") != NULL, "%s", text);
        free(text);
    }
}
END_TEST

/* A file written before exposure existed (version 1) reads as not exposed. */
START_TEST(test_version_1_read)
{
    struct wm_state st;

    write_with_checksum("version = 1\nepoch = 5\nprimary = site-a\nchanged_unix_us = 7\n");
    ck_assert_msg(state_load(dir, &st, err, sizeof(err)) == 1, "%s", err);
    ck_assert_uint_eq(st.epoch, 5);
    ck_assert_str_eq(st.primary, "site-a");
    ck_assert(!state_exposed(&st));
    ck_assert_uint_eq(st.exposed_lsn, 0);
}
END_TEST

/* Monotonic epochs are the caller's business: state stores what it is given. */
START_TEST(test_stores_what_it_is_given)
{
    struct wm_state st = sample(), back;

    ck_assert_int_eq(state_save(dir, &st, err, sizeof(err)), 0);
    st.epoch = 3;
    ck_assert_int_eq(state_save(dir, &st, err, sizeof(err)), 0);
    ck_assert_int_eq(state_load(dir, &back, err, sizeof(err)), 1);
    ck_assert_uint_eq(back.epoch, 3);
}
END_TEST

START_TEST(test_missing_file_and_directory)
{
    struct wm_state st;
    char sub[4500];

    memset(&st, 0x5a, sizeof(st));
    ck_assert_int_eq(state_load(dir, &st, err, sizeof(err)), 0);
    ck_assert_uint_eq(st.epoch, 1);
    ck_assert_str_eq(st.primary, "");
    ck_assert_uint_eq(st.changed_unix_us, 0);

    snprintf(sub, sizeof(sub), "%s/absent", dir);
    ck_assert_int_eq(state_load(sub, &st, err, sizeof(err)), -ENOENT);
    ck_assert_msg(strstr(err, "absent: does not exist") != NULL, "%s", err);
    ck_assert_int_lt(state_save(sub, &st, err, sizeof(err)), 0);

    /* a directory path that is a file */
    snprintf(sub, sizeof(sub), "%s/file", dir);
    write_file(sub, "x", 1);
    ck_assert_int_eq(state_load(sub, &st, err, sizeof(err)), -ENOTDIR);
    ck_assert_msg(strstr(err, "is not a directory") != NULL, "%s", err);
    st = sample();
    ck_assert_int_eq(state_save(sub, &st, err, sizeof(err)), -ENOTDIR);
    ck_assert_msg(strstr(err, "cannot create") != NULL, "%s", err);
}
END_TEST

/* A file cut anywhere is refused (but for its final newline alone). */
START_TEST(test_torn_file_refused)
{
    size_t len;
    char *text = saved_sample(&len);

    for (size_t cut = 0; cut < len - 1; cut++) {
        struct wm_state st;
        int rc;

        write_file(path, text, cut);
        rc = state_load(dir, &st, err, sizeof(err));
        ck_assert_msg(rc == -EINVAL, "a file cut at %zu of %zu bytes was read (rc %d)", cut, len,
                      rc);
        ck_assert_msg(strncmp(err, path, strlen(path)) == 0, "error names no file: %s", err);
        ck_assert_uint_eq(st.epoch, 1);
    }
    write_file(path, text, len - 5);
    expect_load_error(-EINVAL, "is not 16 hex digits: the file is damaged");
    write_file(path, text, 0);
    expect_load_error(-EINVAL, "no checksum line at the end: the file is incomplete");
    write_file(path, text, len - 1);
    expect_sample_intact();
    free(text);
}
END_TEST

/* Every single flipped byte is refused; and garbage of every kind. */
START_TEST(test_damaged_file_refused)
{
    size_t len;
    char *text = saved_sample(&len);
    static const char junk[] = "\x7f" "ELF\x02\x01\x01\0\0\0garbage";

    for (size_t at = 0; at < len; at++) {
        struct wm_state st;
        int rc;

        text[at] ^= 0x01;
        write_file(path, text, len);
        rc = state_load(dir, &st, err, sizeof(err));
        text[at] ^= 0x01;
        ck_assert_msg(rc == -EINVAL, "a file with byte %zu flipped was read (rc %d)", at, rc);
    }
    /* the epoch digit changed: the checksum names the damage */
    {
        char *e = strstr(text, "epoch = 7");
        ck_assert_ptr_nonnull(e);
        e[8] = '8';
        write_file(path, text, len);
        expect_load_error(-EINVAL, ":8: checksum mismatch"); /* the last of 8 lines */
        e[8] = '7';
    }
    write_file(path, junk, sizeof(junk) - 1);
    expect_load_error(-EINVAL, "contains NUL bytes");
    write_file(path, "hello\n", 6);
    expect_load_error(-EINVAL, ":1: syntax error");
    {
        char *big = malloc(70000);
        ck_assert_ptr_nonnull(big);
        memset(big, '#', 70000);
        write_file(path, big, 70000);
        expect_load_error(-EFBIG, "larger than");
        free(big);
    }
    free(text);
}
END_TEST

/* Well-formed files with a valid checksum, wrong in one way each: named with file and line. */
START_TEST(test_bad_keys_named)
{
    char want[4500];

    write_with_checksum("version = 1\nepoch = 2\nlease = 5\n");
    snprintf(want, sizeof(want), "%s:3: unknown key \"lease\"", path);
    expect_load_error(-EINVAL, want);

    write_with_checksum("version = 1\nepoch = 2\nepoch = 3\n");
    expect_load_error(-EINVAL, ":3: key \"epoch\" set twice, on lines 2 and 3");

    write_with_checksum("version = 3\nepoch = 2\n");
    expect_load_error(-EINVAL, ":1: version \"3\" is not one this build reads (1 to 2)");

    write_with_checksum("version = 2\nepoch = 2\nexposed_unix_us = 5\n");
    expect_load_error(-EINVAL, "missing key \"exposed_lsn\"");

    write_with_checksum("version = 2\nepoch = 2\nexposed_lsn = 0/0\n");
    expect_load_error(-EINVAL, "missing key \"exposed_unix_us\"");

    write_with_checksum("version = 2\nepoch = 2\nexposed_lsn = 0/30G\nexposed_unix_us = 5\n");
    expect_load_error(-EINVAL, ":3: exposed_lsn \"0/30G\" is not an LSN (X/X)");

    write_with_checksum("version = 1\nepoch = 2\nexposed_lsn = 0/3000000\n");
    expect_load_error(-EINVAL, ":3: key \"exposed_lsn\" is not part of a version 1 file");

    write_with_checksum("version = 1\nepoch = 0\n");
    expect_load_error(-EINVAL, ":2: epoch \"0\" is not a number >= 1");

    write_with_checksum("version = 1\nepoch = 18446744073709551616\n");
    expect_load_error(-EINVAL, "is not a number >= 1");

    write_with_checksum("version = 1\nepoch = 2\nprimary = site b\n");
    expect_load_error(-EINVAL, ":3: primary \"site b\" is not a node name");

    write_with_checksum("version = 1\n");
    expect_load_error(-EINVAL, "missing key \"epoch\"");

    write_with_checksum("epoch = 4\n");
    expect_load_error(-EINVAL, "missing key \"version\"");

    write_file(path, "version = 1\nepoch = 2\nchecksum = 0000000000000000\nepoch = 3\n", 60);
    expect_load_error(-EINVAL, ":4: text after the checksum line");

    /* comments, blank lines, CRLF and blanks are fine when the checksum covers them */
    write_with_checksum("# hand-made\r\n\r\n  version=1\r\n\tepoch =  9 \r\nprimary =\r\n");
    {
        struct wm_state st;
        ck_assert_msg(state_load(dir, &st, err, sizeof(err)) == 1, "%s", err);
        ck_assert_uint_eq(st.epoch, 9);
        ck_assert_str_eq(st.primary, "");
    }
}
END_TEST

START_TEST(test_invalid_state_not_written)
{
    struct wm_state st = sample();

    st.epoch = 0;
    ck_assert_int_eq(state_save(dir, &st, err, sizeof(err)), -EINVAL);
    st = sample();
    snprintf(st.primary, sizeof(st.primary), "site b");
    ck_assert_int_eq(state_save(dir, &st, err, sizeof(err)), -EINVAL);
    ck_assert_int_eq(access(path, F_OK), -1);
}
END_TEST

/* A write that fails half-way (a file size limit: root is not exempt) keeps the old file. */
START_TEST(test_failed_write_keeps_old_file)
{
    struct wm_state st = sample();
    struct rlimit rl = {.rlim_cur = 40, .rlim_max = RLIM_INFINITY};
    char tmp[4500];
    size_t len;
    char *text = saved_sample(&len);
    int rc;

    free(text);
    signal(SIGXFSZ, SIG_IGN);
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
    st.epoch = 8;
    snprintf(st.primary, sizeof(st.primary), "site-a");
    rc = state_save(dir, &st, err, sizeof(err));
    rl.rlim_cur = RLIM_INFINITY;
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
    ck_assert_msg(rc == -EFBIG, "rc %d: %s", rc, err);
    ck_assert_msg(strstr(err, "agent.state.tmp: cannot write") != NULL, "%s", err);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    ck_assert_int_eq(access(tmp, F_OK), -1); /* the partial tmp file was removed */
    expect_sample_intact();
}
END_TEST

/* The tmp name taken by a directory: the save fails before touching the file. */
START_TEST(test_blocked_tmp_keeps_old_file)
{
    struct wm_state st = sample();
    char tmp[4500];
    size_t len;
    char *text = saved_sample(&len);

    free(text);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    ck_assert_int_eq(mkdir(tmp, 0700), 0);
    st.epoch = 8;
    ck_assert_int_eq(state_save(dir, &st, err, sizeof(err)), -EISDIR);
    ck_assert_msg(strstr(err, "cannot create") != NULL, "%s", err);
    expect_sample_intact();
    ck_assert_int_eq(rmdir(tmp), 0);
}
END_TEST

/* A full file system (a small tmpfs, where we may mount one). */
START_TEST(test_full_filesystem_keeps_old_file)
{
    struct wm_state st = sample();
    static char mnt[4200];
    char fill[4300];
    const char *saved = dir;
    FILE *f;
    char block[4096];

    snprintf(mnt, sizeof(mnt), "%s/mnt", saved);
    ck_assert_int_eq(mkdir(mnt, 0755), 0);
    /* In a mount namespace of this test's own (Check forks each test): nothing leaks out.
     * The propagation change ignores source and type; "none" rather than NULL keeps valgrind,
     * which reads them as strings, quiet. */
    if (unshare(CLONE_NEWNS) != 0 || mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) != 0 ||
        mount("tmpfs", mnt, "tmpfs", 0, "size=64k") != 0) {
        fprintf(stderr, "test_full_filesystem_keeps_old_file: cannot mount a tmpfs (%s): "
                        "covered by the size-limit test only\n",
                strerror(errno));
        return;
    }
    dir = mnt;
    snprintf(path, sizeof(path), "%s/%s", dir, STATE_FILE);
    ck_assert_msg(state_save(dir, &st, err, sizeof(err)) == 0, "%s", err);
    snprintf(fill, sizeof(fill), "%s/fill", mnt);
    f = fopen(fill, "w");
    ck_assert_ptr_nonnull(f);
    memset(block, 'f', sizeof(block));
    while (fwrite(block, 1, sizeof(block), f) == sizeof(block) && fflush(f) == 0)
        ;
    fclose(f);
    st.epoch = 8;
    {
        int rc = state_save(dir, &st, err, sizeof(err));
        ck_assert_msg(rc == -ENOSPC, "rc %d: %s", rc, err);
    }
    expect_sample_intact();
    dir = saved;
    ck_assert_int_eq(umount2(mnt, MNT_DETACH), 0);
}
END_TEST

START_TEST(test_null_error_buffer)
{
    struct wm_state st;

    write_file(path, "junk\n", 5);
    ck_assert_int_eq(state_load(dir, &st, NULL, 0), -EINVAL);
    st = sample();
    st.epoch = 0;
    ck_assert_int_eq(state_save(dir, &st, NULL, 0), -EINVAL);
}
END_TEST

static Suite *
state_suite(void)
{
    Suite *s = suite_create("state");
    TCase *tc = tcase_create("state");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_round_trip);
    tcase_add_test(tc, test_version_1_read);
    tcase_add_test(tc, test_stores_what_it_is_given);
    tcase_add_test(tc, test_missing_file_and_directory);
    tcase_add_test(tc, test_torn_file_refused);
    tcase_add_test(tc, test_damaged_file_refused);
    tcase_add_test(tc, test_bad_keys_named);
    tcase_add_test(tc, test_invalid_state_not_written);
    tcase_add_test(tc, test_failed_write_keeps_old_file);
    tcase_add_test(tc, test_blocked_tmp_keeps_old_file);
    tcase_add_test(tc, test_full_filesystem_keeps_old_file);
    tcase_add_test(tc, test_null_error_buffer);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(state_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
