/*
 * gen_pgproto_seeds.c - writes client byte streams as fuzz_pgproto's seed corpus: what a
 * PostgreSQL 15 walreceiver and pg_receivewal send to a walsender (start-up packets after
 * GSSENCRequest/SSLRequest, the replication commands, standby status updates, hot standby
 * feedback, CopyDone, Terminate), a CancelRequest, every other command form of
 * pgp_parse_command, valid or not, and two walsender CopyData payloads ('w', 'k').  Run by
 * tests/fuzz/run.sh before fuzzing; the seeds are regenerated, not committed.  Needs only libc.
 *   gen_pgproto_seeds DIR
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct stream {
    uint8_t b[8192];
    size_t n;
};

static void
put_u8(struct stream *s, uint8_t v)
{
    if (s->n >= sizeof(s->b)) {
        fprintf(stderr, "gen_pgproto_seeds: stream too long\n");
        exit(1);
    }
    s->b[s->n++] = v;
}

static void
put_u32(struct stream *s, uint32_t v)
{
    for (int i = 3; i >= 0; i--)
        put_u8(s, (uint8_t)(v >> (8 * i)));
}

static void
put_u64(struct stream *s, uint64_t v)
{
    put_u32(s, (uint32_t)(v >> 32));
    put_u32(s, (uint32_t)v);
}

static void
put_str(struct stream *s, const char *str)
{
    do
        put_u8(s, (uint8_t)*str);
    while (*str++ != '\0');
}

static void
set_u32(struct stream *s, size_t at, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        s->b[at + (size_t)i] = (uint8_t)(v >> (8 * (3 - i)));
}

/* An 8-byte request (SSLRequest, GSSENCRequest). */
static void
request(struct stream *s, uint32_t code)
{
    put_u32(s, 8);
    put_u32(s, code);
}

/* StartupMessage, protocol 3.0, from a NULL-terminated list of key, value pairs. */
static void
startup(struct stream *s, const char *const *kv)
{
    size_t at = s->n;

    put_u32(s, 0);
    put_u32(s, 3u << 16);
    for (; *kv != NULL; kv += 2) {
        put_str(s, kv[0]);
        put_str(s, kv[1]);
    }
    put_u8(s, 0);
    set_u32(s, at, (uint32_t)(s->n - at));
}

static void
query(struct stream *s, const char *q)
{
    put_u8(s, 'Q');
    put_u32(s, (uint32_t)(4 + strlen(q) + 1));
    put_str(s, q);
}

/* 'd' wrapping 'r': a standby status update. */
static void
status(struct stream *s, uint64_t write, uint64_t flush, uint64_t apply, uint8_t reply)
{
    put_u8(s, 'd');
    put_u32(s, 4 + 34);
    put_u8(s, 'r');
    put_u64(s, write);
    put_u64(s, flush);
    put_u64(s, apply);
    put_u64(s, UINT64_C(848000000000000)); /* 2026, PostgreSQL epoch */
    put_u8(s, reply);
}

/* 'd' wrapping 'h': hot standby feedback. */
static void
feedback(struct stream *s, uint32_t xmin, uint32_t catalog_xmin)
{
    put_u8(s, 'd');
    put_u32(s, 4 + 25);
    put_u8(s, 'h');
    put_u64(s, UINT64_C(848000000000000));
    put_u32(s, xmin);
    put_u32(s, 0);
    put_u32(s, catalog_xmin);
    put_u32(s, 0);
}

static void
bare(struct stream *s, uint8_t type)
{
    put_u8(s, type);
    put_u32(s, 4);
}

static void
write_seed(const char *dir, const char *name, const struct stream *s)
{
    char path[4096];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "wb");
    if (f == NULL || fwrite(s->b, 1, s->n, f) != s->n || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

/* clang-format off */
/* What PG15's libpqwalreceiver puts in the start-up packet of a physical walreceiver. */
static const char *const walreceiver_kv[] = {
    "user", "replicator", "database", "replication", "replication", "true",
    "application_name", "walreceiver", "client_encoding", "UTF8", NULL,
};
/* pg_receivewal: libpq with replication=true and its fallback application name. */
static const char *const receivewal_kv[] = {
    "user", "postgres", "replication", "true", "application_name", "pg_receivewal", NULL,
};
/* clang-format on */

int
main(int argc, char **argv)
{
    /* Command texts, for seeds that are a start-up packet and one query. */
    static const char *const commands[] = {
        "IDENTIFY_SYSTEM",
        "identify_system;",
        "TIMELINE_HISTORY 2",
        "TIMELINE_HISTORY 4294967295",
        "TIMELINE_HISTORY 0",
        "SHOW wal_segment_size",
        "SHOW data_directory_mode",
        "SHOW \"a\".b.c",
        "READ_REPLICATION_SLOT \"walmirror\"",
        "CREATE_REPLICATION_SLOT \"walmirror\" PHYSICAL RESERVE_WAL",
        "CREATE_REPLICATION_SLOT walmirror TEMPORARY PHYSICAL (RESERVE_WAL true)",
        "CREATE_REPLICATION_SLOT s PHYSICAL (reserve_wal, reserve_wal off)",
        "CREATE_REPLICATION_SLOT s LOGICAL pgoutput",
        "DROP_REPLICATION_SLOT \"walmirror\" WAIT",
        "START_REPLICATION SLOT \"walmirror\" 0/3000000 TIMELINE 1",
        "START_REPLICATION PHYSICAL FFFFFFFF/FFFFFFFF",
        "START_REPLICATION 0/1000000",
        "START_REPLICATION SLOT s LOGICAL 0/0",
        "BASE_BACKUP (LABEL 'x')",
        "SELECT pg_catalog.set_config('search_path', '', false);",
        "START_REPLICATION SLOT \"unterminated 0/0",
        "CREATE_REPLICATION_SLOT s PHYSICAL (RESERVE_WAL 1, SNAPSHOT 'nothing', TWO_PHASE)",
        "CREATE_REPLICATION_SLOT s PHYSICAL (reserve_wal 'it''s')",
        "CREATE_REPLICATION_SLOT \"s\"\"q\" PHYSICAL (reserve_wal 0)",
        "CREATE_REPLICATION_SLOT s PHYSICAL (reserve_wal false, reserve_wal)",
        "SHOW a12345678.a12345678.a12345678.a12345678.a12345678.a12345678.a12345678."
        "a12345678.a12345678.a12345678.a12345678.a12345678.a12345678.a12345678",
        "CREATE_REPLICATION_SLOT s PHYSICAL (reserve_wal "
        "'on345678901234567890123456789012345678901234567890123456789012345')",
        "READ_REPLICATION_SLOT a123456789a123456789a123456789a123456789a123456789a123456789abcd",
        "  \t\nIDENTIFY_SYSTEM ;  \n",
        "",
    };
    struct stream s;
    char name[64];

    if (argc != 2)
        return 2;

    /* PG15 walreceiver: GSSENCRequest and SSLRequest refused, then a whole session. */
    memset(&s, 0, sizeof(s));
    request(&s, 80877104u);
    request(&s, 80877103u);
    startup(&s, walreceiver_kv);
    query(&s, "IDENTIFY_SYSTEM");
    query(&s, "TIMELINE_HISTORY 2");
    query(&s, "START_REPLICATION SLOT \"walmirror\" 0/3000000 TIMELINE 2");
    status(&s, 0x3000000, 0x3000000, 0x2FFFF00, 0);
    feedback(&s, 750, 0);
    status(&s, 0x3001000, 0x3001000, 0x3000000, 1);
    bare(&s, 'c');
    query(&s, "START_REPLICATION SLOT \"walmirror\" 0/3002000 TIMELINE 3");
    status(&s, 0x3002000, 0x3002000, 0x3002000, 0);
    bare(&s, 'X');
    write_seed(argv[1], "walreceiver", &s);

    /* pg_receivewal --slot --create-slot, then streaming, then Ctrl-C. */
    memset(&s, 0, sizeof(s));
    request(&s, 80877103u);
    startup(&s, receivewal_kv);
    query(&s, "SHOW wal_segment_size");
    query(&s, "IDENTIFY_SYSTEM");
    query(&s, "CREATE_REPLICATION_SLOT \"archiver\" PHYSICAL (RESERVE_WAL)");
    query(&s, "READ_REPLICATION_SLOT archiver");
    query(&s, "START_REPLICATION SLOT \"archiver\" 0/1000000 TIMELINE 1");
    status(&s, 0x1000000, 0x1000000, 0, 0);
    status(&s, 0x1800000, 0x1000000, 0, 1);
    bare(&s, 'c');
    query(&s, "DROP_REPLICATION_SLOT \"archiver\"");
    bare(&s, 'X');
    write_seed(argv[1], "pg_receivewal", &s);

    /* pg_receivewal --no-slot with a password-authenticating libpq. */
    memset(&s, 0, sizeof(s));
    startup(&s, receivewal_kv);
    put_u8(&s, 'p');
    put_u32(&s, 4 + 14 + 4 + 7);
    put_str(&s, "SCRAM-SHA-256");
    put_u32(&s, 7);
    memcpy(s.b + s.n, "n,,n=,r", 7);
    s.n += 7;
    write_seed(argv[1], "sasl", &s);

    memset(&s, 0, sizeof(s));
    startup(&s, receivewal_kv);
    query(&s, "START_REPLICATION 0/1000000 TIMELINE 1");
    status(&s, 0x1000000, 0x1000000, 0, 0);
    query(&s, "IDENTIFY_SYSTEM");
    write_seed(argv[1], "query-in-copy", &s);

    /* CancelRequest. */
    memset(&s, 0, sizeof(s));
    put_u32(&s, 16);
    put_u32(&s, 80877102u);
    put_u32(&s, 4242);
    put_u32(&s, 0xdeadbeef);
    write_seed(argv[1], "cancel", &s);

    /* Other protocols and refused start-ups. */
    memset(&s, 0, sizeof(s));
    put_u32(&s, 8);
    put_u32(&s, 2u << 16);
    write_seed(argv[1], "protocol2", &s);
    memset(&s, 0, sizeof(s));
    startup(&s, (const char *const[]){"user", "u", "replication", "database", "database", "db",
                                      "_pq_.x", "1", "options", "-c wal_sender_timeout=0", NULL});
    write_seed(argv[1], "logical", &s);
    memset(&s, 0, sizeof(s));
    startup(&s, (const char *const[]){"database", "postgres", NULL});
    write_seed(argv[1], "no-user", &s);

    /* More start-up parameters than PGP_MAX_STARTUP_PARAMS (64). */
    memset(&s, 0, sizeof(s));
    {
        size_t at = s.n;

        put_u32(&s, 0);
        put_u32(&s, 3u << 16);
        put_str(&s, "user");
        put_str(&s, "u");
        for (int i = 0; i < 64; i++) {
            snprintf(name, sizeof(name), "p%d", i);
            put_str(&s, name);
            put_str(&s, "v");
        }
        put_u8(&s, 0);
        set_u32(&s, at, (uint32_t)(s.n - at));
    }
    write_seed(argv[1], "many-params", &s);

    /* The extended protocol, fastpath, unknown types, bad lengths. */
    memset(&s, 0, sizeof(s));
    startup(&s, walreceiver_kv);
    put_u8(&s, 'P');
    put_u32(&s, 4 + 3 + 2);
    put_str(&s, "");
    put_str(&s, "x");
    put_u8(&s, 0);
    put_u8(&s, 0);
    write_seed(argv[1], "parse", &s);
    memset(&s, 0, sizeof(s));
    startup(&s, walreceiver_kv);
    put_u8(&s, 'Z');
    put_u32(&s, 5);
    put_u8(&s, 'I');
    write_seed(argv[1], "unknown-type", &s);
    memset(&s, 0, sizeof(s));
    startup(&s, walreceiver_kv);
    put_u8(&s, 'Q');
    put_u32(&s, 0x7fffffff);
    write_seed(argv[1], "huge-query", &s);

    /* Bare walsender CopyData payloads, for pgp_parse_primary_copydata. */
    memset(&s, 0, sizeof(s));
    put_u8(&s, 'w');
    put_u64(&s, 0x3000000);
    put_u64(&s, 0x3000100);
    put_u64(&s, UINT64_C(848000000000000));
    for (int i = 0; i < 256; i++)
        put_u8(&s, (uint8_t)i);
    write_seed(argv[1], "xlogdata", &s);
    memset(&s, 0, sizeof(s));
    put_u8(&s, 'k');
    put_u64(&s, 0x3000100);
    put_u64(&s, UINT64_C(848000000000000));
    put_u8(&s, 1);
    write_seed(argv[1], "keepalive", &s);

    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        memset(&s, 0, sizeof(s));
        startup(&s, receivewal_kv);
        query(&s, commands[i]);
        snprintf(name, sizeof(name), "command-%02zu", i);
        write_seed(argv[1], name, &s);
    }
    return 0;
}
