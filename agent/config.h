/*
 * config.h - the agent's configuration file: parsing, validation and dumping.
 *
 * The file is PostgreSQL-style (see docs/configuration.md for every key):
 *
 *     key = value        # comment
 *
 * one setting per line, the '=' optional, '#' starting a comment outside quotes, keys
 * case-insensitive.  A value is bare (a run of characters without spaces, quotes or '#') or a
 * single-quoted string in which '' stands for one quote; a backslash is an ordinary character
 * (unlike postgresql.conf, so that libpq conninfo strings pass through untouched).  Stricter than
 * PostgreSQL, as befits an HA tool: an unknown key, a key set twice, a key that the node's role
 * does not use, and a duration without a unit are all errors.
 *
 * Lifecycle: main() calls config_load() once, before anything else runs; the filled struct
 * wm_config is then immutable for the life of the process (the one global the style allows)
 * and released with config_free() at exit.  `walmirror-agent --check-config` prints it with
 * config_dump().
 *
 * Failure semantics: config_load() and config_parse_buffer() stop at the first problem, leave
 * *out zeroed (nothing to free), return a negative errno and write one line of text into err:
 *
 *     FILE:LINE: key "KEY": WHAT IS WRONG
 *     FILE:LINE: syntax error: WHAT IS WRONG          (no key could be read on that line)
 *     FILE: missing required key "KEY"
 *     FILE: cannot read: STRERROR                     (the configuration file itself)
 *
 * The caller prints that line to stderr and exits with status 2.  No function here logs,
 * exits or keeps state outside the struct it is given.
 */
#ifndef WALMIRROR_AGENT_CONFIG_H
#define WALMIRROR_AGENT_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "err.h"

/* Bounds of the file format.  Longer input is an error, never truncated. */
#define CONFIG_FILE_MAX (1024 * 1024)             /* bytes in one configuration file */
#define CONFIG_LINE_MAX 8192                      /* bytes in one line, without its newline */
#define CONFIG_VALUE_MAX 4095                     /* bytes in one value, after unquoting */
#define CONFIG_NAME_MAX 63                        /* node, slot and application names */
#define CONFIG_HOST_MAX 255                       /* host part of an address, without brackets */
#define CONFIG_HOSTPORT_MAX (CONFIG_HOST_MAX + 8) /* "[host]:65535" */

/* An address "host:port" or "[ipv6]:port" (a zone, "[fe80::1%eth0]:5433", is allowed). */
struct config_hostport {
    char text[CONFIG_HOSTPORT_MAX + 1]; /* as written in the file, e.g. "[::1]:5433" */
    char host[CONFIG_HOST_MAX + 1];     /* without the brackets, e.g. "::1" */
    uint16_t port;                      /* 1..65535 */
};

/* Another agent: "NAME@host:port", NAME being that agent's node_name (its certificate name). */
struct config_endpoint {
    char name[CONFIG_NAME_MAX + 1];
    struct config_hostport addr;
};

enum config_role {
    CONFIG_ROLE_AUTO = 0,    /* a site: source beside a primary, sink beside a standby */
    CONFIG_ROLE_WITNESS = 1, /* the arbiter at a third site */
};

/* Who decides fail-over and exposure (arbiter.h). */
enum config_arbiter {
    CONFIG_ARBITER_NONE = 0,    /* none: automatic fail-over is off */
    CONFIG_ARBITER_WITNESS = 1, /* the witness agent at `witness` */
    CONFIG_ARBITER_ETCD = 2,    /* an etcd cluster at `etcd_endpoints` */
};

enum config_compression {
    CONFIG_COMPRESSION_OFF = 0,
    CONFIG_COMPRESSION_LZ4 = 1,
};

/* What the primary does when its standby stops confirming (docs/configuration.md). */
enum config_availability {
    CONFIG_MAXIMUM_AVAILABILITY = 0, /* run exposed, arbitrated, after standby_loss_timeout */
    CONFIG_MAXIMUM_PROTECTION = 1,   /* commits wait for the standby, always */
};

enum config_wal_server_auth {
    CONFIG_WAL_SERVER_AUTH_TRUST = 0, /* the only method implemented */
};

/*
 * A loaded configuration.  Strings are NUL-terminated; the char * members are owned by the
 * struct (config_free() releases them) and are NULL only where noted.  Paths are absolute: a
 * relative path in the file is resolved against the directory of the configuration file.
 * Members a role does not use keep their zero value.
 */
struct wm_config {
    char *path; /* the file it was read from, as given to config_load() */

    /* every role */
    char node_name[CONFIG_NAME_MAX + 1];
    enum config_role role;
    struct config_hostport listen; /* the peer link */
    char *tls_ca;
    char *tls_cert;
    char *tls_key;
    struct config_hostport http_listen; /* default 127.0.0.1:8008 */
    char *http_token_file;              /* NULL when not set */
    uint64_t heartbeat_interval_ms;     /* default 1 s */
    uint64_t peer_timeout_ms;           /* default 10 s; always > heartbeat_interval_ms */
    int log_level;                      /* a LOG_LEVEL_* of log.h; default info */
    char *state_dir; /* where agent.state lives (state.h); a site's default is spool_dir */

    /* sites (role = auto) */
    struct config_endpoint peer;
    bool has_witness;
    struct config_endpoint witness; /* valid when has_witness */
    char *pg_conninfo;
    char *peer_pg_conninfo; /* the other site's PostgreSQL (rejoin); NULL when not set */
    char *pgdata;
    char *spool_dir;
    struct config_hostport wal_listen;
    char slot_name[CONFIG_NAME_MAX + 1];        /* default "walmirror" */
    char application_name[CONFIG_NAME_MAX + 1]; /* default "walmirror" */
    uint64_t failover_timeout_ms;               /* default 5 s */
    bool auto_rejoin;                           /* default off */
    /* spool_keep: a size in bytes, or (when spool_keep_segments is true) a segment count */
    bool spool_keep_segments;
    uint64_t spool_keep;                         /* default 1 GB = 1073741824 bytes */
    enum config_compression compression;         /* default lz4 */
    enum config_wal_server_auth wal_server_auth; /* default trust */
    /* the status page's mirror lag thresholds (statuspage.h); degraded <= partial */
    uint64_t status_degraded_lag_bytes; /* default 16 MB */
    uint64_t status_degraded_lag_ms;    /* default 5 s */
    uint64_t status_partial_lag_bytes;  /* default 1 GB */
    uint64_t status_partial_lag_ms;     /* default 60 s */
    enum config_availability availability_mode; /* default maximum_availability */
    uint64_t standby_loss_timeout_ms;           /* default 10 s */

    /* the arbiter (sites): witness when `witness` is set, else none, unless `arbiter` says */
    enum config_arbiter arbiter;
    /* arbiter = etcd (NULL / 0 otherwise) */
    char *etcd_endpoints;        /* comma-separated http(s) URLs, as etcd_endpoints_parse reads */
    char *etcd_prefix;           /* "/.../": default "/walmirror/<a>+<b>/", a b the node names */
    char *etcd_ca;               /* TLS to etcd: all three files or none */
    char *etcd_cert;
    char *etcd_key;
    uint64_t etcd_lease_ttl_ms;  /* whole seconds, 2 s..failover_timeout; default min(3 s, that) */

    /* the witness (role = witness) */
    struct config_endpoint sites[2];
};

/* config_parse_buffer() flags */
#define CONFIG_NO_FILE_CHECKS 0x1u /* do not open tls_* or http_token_file (fuzzing, tools) */

/*
 * Reads, parses and validates the configuration file at path into *out, checking that the TLS
 * files and http_token_file exist and are readable.  Returns 0, or a negative errno with the
 * message in err (truncated to errlen, always NUL-terminated if errlen > 0): -EINVAL for any
 * mistake in the content, -EFBIG for a file over CONFIG_FILE_MAX, -ENOMEM, or the -errno of a
 * file that could not be read.  On success the caller owns *out and releases it with
 * config_free().  The caller prints err and exits 2.
 */
int config_load(const char *path, struct wm_config *out, char *err, size_t errlen) WM_MUSTCHECK;

/*
 * The parser behind config_load(), on a memory buffer of len bytes that need not be
 * NUL-terminated and may hold any bytes at all (the libFuzzer entry point).  name is the file
 * name used in messages and as the base of relative paths.  flags: 0 or CONFIG_NO_FILE_CHECKS.
 * Returns and fills *out and err as config_load() does.
 */
int config_parse_buffer(const char *name, const char *buf, size_t len, unsigned flags,
                        struct wm_config *out, char *err, size_t errlen) WM_MUSTCHECK;

/* Releases what *cfg owns and zeroes it.  Safe on a zeroed struct and when called twice. */
void config_free(struct wm_config *cfg);

/*
 * Writes the effective configuration, defaults included, as a configuration file that
 * config_parse_buffer() reads back to the same values (the output of --check-config).
 * Returns 0, or -EIO if writing to f failed.
 */
int config_dump(FILE *f, const struct wm_config *cfg) WM_MUSTCHECK;

/* "auto" or "witness". */
const char *config_role_name(enum config_role role);
/* "none", "witness" or "etcd". */
const char *config_arbiter_name(enum config_arbiter arbiter);

/*
 * A byte count for people, in the units sizes take in the file (B, kB, MB, GB, TB: powers of
 * 1024, as PostgreSQL's): "512 B", "31 kB", "1.5 MB" (one decimal below 10 of a unit).
 * Returns buf.
 */
const char *config_size_text(uint64_t bytes, char *buf, size_t cap);

#endif
