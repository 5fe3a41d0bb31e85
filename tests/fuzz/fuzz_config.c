/*
 * fuzz_config.c - libFuzzer target for the configuration parser (config_parse_buffer).
 *
 * The input is a configuration file's content, parsed with CONFIG_NO_FILE_CHECKS so that no
 * TLS or token file is opened.  Besides crashes, sanitizer reports and leaks, these break
 * config.h's contract and abort:
 *   - a failure that leaves *out not zeroed or err empty or not NUL-terminated;
 *   - a failure other than -EINVAL, -EFBIG or -ENOMEM;
 *   - an accepted file whose config_dump() output does not parse back, or parses back to a
 *     configuration that dumps differently (the --check-config round trip);
 *   - config_free() not leaving the struct zeroed, or not being safe to call twice.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Relative paths in the file resolve against this file's directory. */
#define FZ_NAME "/etc/walmirror/fuzz.conf"

static const struct wm_config zero;

static void
check_failed(int rc, const struct wm_config *cfg, const char *err, size_t errlen)
{
    size_t n = strnlen(err, errlen);

    if (rc != -EINVAL && rc != -EFBIG && rc != -ENOMEM)
        abort();
    if (n == 0 || n == errlen || memcmp(cfg, &zero, sizeof(zero)) != 0)
        abort();
}

/* config_dump() into a malloc'ed string; aborts if it fails. */
static char *
dump(const struct wm_config *cfg, size_t *len)
{
    char *text = NULL;
    FILE *f = open_memstream(&text, len);

    if (f == NULL)
        abort();
    if (config_dump(f, cfg) < 0)
        abort();
    if (fclose(f) != 0)
        abort();
    return text;
}

static void
release(struct wm_config *cfg)
{
    config_free(cfg);
    if (memcmp(cfg, &zero, sizeof(zero)) != 0)
        abort();
    config_free(cfg);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct wm_config cfg, again;
    char err[512], err2[512];
    char *text, *text2;
    size_t len, len2;
    int rc;

    memset(err, 0x55, sizeof(err));
    rc = config_parse_buffer(FZ_NAME, (const char *)data, size, CONFIG_NO_FILE_CHECKS, &cfg, err,
                             sizeof(err));
    if (rc < 0) {
        check_failed(rc, &cfg, err, sizeof(err));
        return 0;
    }
    if (rc != 0)
        abort();

    /* What --check-config prints must read back to the same configuration. */
    text = dump(&cfg, &len);
    rc = config_parse_buffer(FZ_NAME, text, len, CONFIG_NO_FILE_CHECKS, &again, err2, sizeof(err2));
    if (rc < 0) {
        fprintf(stderr, "fuzz_config: the dump does not parse back: %s\n--- dump:\n%s", err2, text);
        abort();
    }
    text2 = dump(&again, &len2);
    if (len != len2 || memcmp(text, text2, len) != 0) {
        fprintf(stderr,
                "fuzz_config: the dump changes on a round trip\n--- first:\n%s--- "
                "second:\n%s",
                text, text2);
        abort();
    }
    free(text);
    free(text2);
    release(&again);
    release(&cfg);
    return 0;
}
