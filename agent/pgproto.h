/*
 * pgproto.h - codec for the server (walsender) side of PostgreSQL 15's physical streaming
 * replication protocol, as spoken by walmirror's standby-side WAL server.
 *
 * The module is pure: it never reads or writes a socket, never allocates except inside a
 * struct pgp_buf, and keeps no global state.  The connection code owns the bytes; this module
 * turns them into parsed messages and turns answers back into bytes.
 *
 *   frontend bytes --pgp_parse_initial / pgp_parse_fe--> struct pgp_initial / pgp_fe_msg
 *   'Q' text       --pgp_parse_command------------------> struct pgp_cmd
 *   answers        --pgp_put_*--------------------------> appended to a struct pgp_buf
 *
 * Parsers are incremental.  They take whatever is buffered and return
 *   > 0  a complete message was parsed; the value is the number of bytes it occupies (the caller
 *        consumes exactly that many);
 *   0    the buffer holds a strict prefix of a message that is still acceptable so far: read
 *        more and call again with the same (longer) buffer;
 *   < 0  a negative errno (below); the struct pgp_err passed in holds an SQLSTATE and a
 *        one-line printable message fit to send in an ErrorResponse and to log.
 * Every declared length is bounded before the body is waited for, so a peer cannot make the
 * caller buffer more than PGP_MAX_QUERY_LEN (+1) bytes.  Parsers fill plain structs whose
 * pointers point INTO the caller's input buffer: they stay valid only while those bytes stay
 * where they are (until the caller consumes/moves them).  pgp_parse_command copies what it
 * keeps into fixed arrays, so a struct pgp_cmd outlives its input.
 *
 * Errors (returned negated):
 *   EPROTO    malformed framing or message layout (SQLSTATE 08P01);
 *   EMSGSIZE  declared length out of bounds (08P01); for builders, a message over the
 *             protocol's limits;
 *   ENOTSUP   well-formed but refused: the extended query protocol, fastpath, other protocol
 *             versions, BASE_BACKUP, logical replication, SQL (08P01 or 0A000);
 *   EINVAL    well-framed but invalid content: a syntax error in a replication command
 *             (42601), a bad parameter value (22023), no user name (28000); bad arguments to
 *             a builder;
 *   ENOMEM    a struct pgp_buf could not grow.
 * pgp_err.fatal tells the server whether PostgreSQL would end the session (start-up and
 * framing errors: send ErrorResponse with severity FATAL, then close) or only fail the command
 * (replication command errors: send ErrorResponse with severity ERROR, then ReadyForQuery).
 *
 * Builders append one or more complete backend messages to a struct pgp_buf and return the
 * number of bytes appended (>= 0) or a negative errno.  On failure nothing is appended: a
 * builder that emits several messages (the result-set helpers) is all or nothing.  Every byte
 * is written through struct wbuf (cursor.h) into space reserved beforehand; a builder whose
 * size computation disagreed with what it wrote fails with -EFAULT rather than emit a message
 * whose length word lies.  Result-set helpers emit RowDescription, DataRow and
 * CommandComplete; the caller adds ReadyForQuery ('Z'), as PostgresMain does.
 *
 * Wire layouts follow PostgreSQL 15.18: postmaster.c (start-up packet), postgres.c and
 * walsender.c (messages, result sets), printsimple.c (RowDescription/DataRow), repl_gram.y and
 * repl_scanner.l (commands).  Deliberate differences from repl_scanner.l are listed at
 * pgp_parse_command.
 */
#ifndef WALMIRROR_AGENT_PGPROTO_H
#define WALMIRROR_AGENT_PGPROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* ---------------------------------------------------------------------------------------- */
/* Limits and constants                                                                      */

/* Start-up packet body after the length word (PostgreSQL's MAX_STARTUP_PACKET_LENGTH). */
#define PGP_MAX_STARTUP_LEN 10000u
/* Maximum declared length (length word included) of a 'Q' message. */
#define PGP_MAX_QUERY_LEN (1u << 20)
/* Maximum declared length (length word included) of any other frontend message. */
#define PGP_MAX_MSG_LEN (1u << 16)
/* At most this many start-up parameters are kept (libpq sends about eight). */
#define PGP_MAX_STARTUP_PARAMS 64
/* Identifier length limit (NAMEDATALEN - 1); also the slot-name limit. */
#define PGP_NAME_MAX 63
/* SHOW variable names may be dotted (a.b.c); their total length is bounded by this. */
#define PGP_VARNAME_MAX 127
/* Backend messages other than T, D, d, V, E, N, A must stay at or below this length (length
 * word included): libpq drops the connection on longer ones (fe-protocol3.c). */
#define PGP_LIBPQ_SHORT_MSG_MAX 30000u
/* Upper bound for any backend message this module builds (length word included). */
#define PGP_MAX_BACKEND_MSG 0x3fffffffu
/* Upper bound of a struct pgp_buf. */
#define PGP_BUF_MAX ((size_t)1 << 31)

/* Request codes of the initial packet. */
#define PGP_PROTOCOL_3_0 196608u     /* 3 << 16 */
#define PGP_CANCEL_REQUEST 80877102u /* 1234 << 16 | 5678 */
#define PGP_SSL_REQUEST 80877103u    /* 1234 << 16 | 5679 */
#define PGP_GSSENC_REQUEST 80877104u /* 1234 << 16 | 5680 */

/* Type OIDs and lengths used by the replication result sets. */
#define PGP_OID_INT8 20u
#define PGP_OID_INT4 23u
#define PGP_OID_TEXT 25u

/* SQLSTATEs this module produces (and the server may reuse). */
#define PGP_SQLSTATE_PROTOCOL_VIOLATION "08P01"
#define PGP_SQLSTATE_FEATURE_NOT_SUPPORTED "0A000"
#define PGP_SQLSTATE_INVALID_PARAMETER_VALUE "22023"
#define PGP_SQLSTATE_INVALID_AUTHORIZATION "28000"
#define PGP_SQLSTATE_SYNTAX_ERROR "42601"
#define PGP_SQLSTATE_INVALID_NAME "42602"
#define PGP_SQLSTATE_NAME_TOO_LONG "42622"
#define PGP_SQLSTATE_UNDEFINED_OBJECT "42704"
#define PGP_SQLSTATE_DUPLICATE_OBJECT "42710"
#define PGP_SQLSTATE_OBJECT_IN_USE "55006"
#define PGP_SQLSTATE_PROGRAM_LIMIT_EXCEEDED "54000"
#define PGP_SQLSTATE_OUT_OF_MEMORY "53200"
#define PGP_SQLSTATE_ADMIN_SHUTDOWN "57P01"
#define PGP_SQLSTATE_INTERNAL_ERROR "XX000"

/* Inner CopyData sizes, type byte included (static-asserted in pgproto.c). */
#define PGP_STANDBY_STATUS_LEN 34 /* 'r' write flush apply sendTime replyRequested */
#define PGP_HS_FEEDBACK_LEN 25    /* 'h' sendTime xmin xmin_epoch catalog_xmin catalog_epoch */
#define PGP_KEEPALIVE_LEN 18      /* 'k' walEnd sendTime replyRequested */
#define PGP_XLOGDATA_INNER_HDR 25 /* 'w' dataStart walEnd sendTime */
/* A whole CopyData-wrapped XLogData header: 'd' Int32 len, then the 25 inner bytes. */
#define PGP_XLOGDATA_HDR_LEN 30

/* "%X/%X" of a 64-bit LSN: at most 8 + 1 + 8 characters and the NUL. */
#define PGP_LSN_BUFSZ 18
/* "%08X.history" and the NUL. */
#define PGP_HISTFILE_BUFSZ 17

/* Microseconds between the Unix epoch and the PostgreSQL epoch (2000-01-01 00:00 UTC). */
#define PGP_EPOCH_DIFF_US INT64_C(946684800000000)

/* ---------------------------------------------------------------------------------------- */
/* Errors                                                                                    */

#define PGP_ERRMSG_LEN 256

/*
 * What went wrong, in the shape of an ErrorResponse.  Every function taking a struct pgp_err *
 * accepts NULL (then only the return code reports the failure) and, on failure, fills all
 * three fields; on success it leaves the struct untouched.
 */
struct pgp_err {
    char sqlstate[6];         /* five characters and a NUL, e.g. "08P01" */
    bool fatal;               /* true: PostgreSQL would end the session */
    char msg[PGP_ERRMSG_LEN]; /* one printable ASCII line, no trailing newline */
};

/* Fills e (if not NULL); the message is truncated to fit.  For use by the server as well. */
void pgp_err_set(struct pgp_err *e, bool fatal, const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---------------------------------------------------------------------------------------- */
/* Growable output buffer                                                                    */

/*
 * A byte buffer that grows by doubling up to PGP_BUF_MAX.  Fields are public for reading:
 * data[0..len) is what has been built; the caller sends it and then pgp_buf_consume()s what
 * was sent.  Zero-initialised (or pgp_buf_init) it is empty and owns no memory; pgp_buf_free
 * releases the memory.  Not thread-safe.
 */
struct pgp_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
};

void pgp_buf_init(struct pgp_buf *b);
void pgp_buf_free(struct pgp_buf *b);
/* Forgets the contents, keeps the memory. */
void pgp_buf_reset(struct pgp_buf *b);
/*
 * Makes room for n more bytes: afterwards data + len is writable for n bytes (until the next
 * call that may grow the buffer).  Returns 0, -EMSGSIZE (would exceed PGP_BUF_MAX) or -ENOMEM.
 */
WM_MUSTCHECK int pgp_buf_reserve(struct pgp_buf *b, size_t n);
/* Marks n bytes written into reserved space as content.  Returns 0, or -EINVAL if n exceeds
 * the reserved space (nothing changes then). */
WM_MUSTCHECK int pgp_buf_commit(struct pgp_buf *b, size_t n);
/* Appends n bytes (p may be NULL when n == 0).  Returns 0 or as pgp_buf_reserve. */
WM_MUSTCHECK int pgp_buf_append(struct pgp_buf *b, const void *p, size_t n);
/* Drops the first n bytes (all of them if n >= len). */
void pgp_buf_consume(struct pgp_buf *b, size_t n);

/* ---------------------------------------------------------------------------------------- */
/* LSNs, timelines, timestamps                                                               */

/*
 * Parses "%X/%X": 1 to 8 hex digits (either case), '/', 1 to 8 hex digits, and nothing else in
 * s[0..len).  Returns 0 and sets *lsn, or -EINVAL.
 */
WM_MUSTCHECK int pgp_lsn_parse(const char *s, size_t len, uint64_t *lsn);
/* Formats lsn as PostgreSQL does ("%X/%X", upper case, no padding) into buf; returns the
 * length (3..17). */
int pgp_lsn_format(uint64_t lsn, char buf[PGP_LSN_BUFSZ]);
/* Formats "%08X.history" into buf; returns the length (16). */
int pgp_histfile_name(uint32_t tli, char buf[PGP_HISTFILE_BUFSZ]);

/* Unix microseconds <-> PostgreSQL TimestampTz microseconds; both saturate at INT64 limits. */
int64_t pgp_time_from_unix_us(int64_t unix_us);
int64_t pgp_time_to_unix_us(int64_t pg_us);
/* Now, as a PostgreSQL TimestampTz (microseconds since 2000-01-01 UTC). */
int64_t pgp_now(void);

/*
 * PostgreSQL's parse_bool(): case-insensitive unique prefixes of true/false/yes/no, "on",
 * "of(f)", "1", "0".  Returns true and sets *out when s[0..len) is one of them.
 */
bool pgp_parse_bool(const char *s, size_t len, bool *out);

/*
 * ReplicationSlotValidateName(): 1 to PGP_NAME_MAX characters of [a-z0-9_].  Returns 0, or
 * -EINVAL with e filled (SQLSTATE 42602 or 42622, fatal = false).
 */
WM_MUSTCHECK int pgp_slot_name_check(const char *name, struct pgp_err *e);

/* ---------------------------------------------------------------------------------------- */
/* Frontend: the initial packet                                                              */

enum pgp_initial_kind {
    PGP_INITIAL_SSL = 1, /* SSLRequest: answer pgp_put_ssl_response */
    PGP_INITIAL_GSSENC,  /* GSSENCRequest: answer pgp_put_gssenc_response */
    PGP_INITIAL_CANCEL,  /* CancelRequest: no answer, close */
    PGP_INITIAL_STARTUP, /* StartupMessage v3.0 */
};

enum pgp_replication {
    PGP_REPL_NONE = 0, /* no "replication" parameter, or a false boolean */
    PGP_REPL_PHYSICAL, /* a true boolean: physical walsender */
    PGP_REPL_DATABASE, /* "database": logical walsender (walmirror refuses it) */
};

struct pgp_param {
    const char *name;  /* NUL-terminated, inside the input buffer */
    const char *value; /* NUL-terminated, inside the input buffer */
};

struct pgp_initial {
    enum pgp_initial_kind kind;
    uint32_t code;       /* the request code or protocol version word */
    uint32_t cancel_pid; /* CancelRequest only */
    uint32_t cancel_key; /* CancelRequest only */
    /* StartupMessage only; every pointer points into the input buffer, NULL when absent.  When
     * a key repeats, the named fields hold its last value (as postmaster.c); params[] keeps
     * all, in packet order, including keys beginning with "_pq_." (protocol options, which
     * walmirror does not implement). */
    size_t nparams;
    struct pgp_param params[PGP_MAX_STARTUP_PARAMS];
    const char *user;     /* never NULL or empty on success */
    const char *database; /* NULL if absent: PostgreSQL then uses the user name */
    const char *options;
    const char *application_name;
    const char *replication_raw;
    enum pgp_replication replication;
};

/*
 * Parses the first packet of a connection, or the packet after an SSL/GSS answer.
 * Accepts: SSLRequest and GSSENCRequest (length exactly 8), CancelRequest (exactly 16),
 * StartupMessage with protocol 3.0 whose key\0value\0 pairs end with a \0 that is the last
 * byte of the packet, with a non-empty "user" and a valid "replication" value.
 * Returns > 0 (bytes consumed), 0 (need more), or -EMSGSIZE (length word outside 8..10004),
 * -EPROTO (bad layout, too many parameters), -ENOTSUP (other protocol version or request
 * code), -EINVAL (no user, bad "replication" value); e->fatal is always true.
 * *out is overwritten in every case; its pointers point into buf.
 */
WM_MUSTCHECK int pgp_parse_initial(const uint8_t *buf, size_t len, struct pgp_initial *out,
                                   struct pgp_err *e);

/* Value of start-up parameter name (last occurrence), or NULL. */
const char *pgp_initial_param(const struct pgp_initial *in, const char *name);

/* ---------------------------------------------------------------------------------------- */
/* Frontend: regular messages                                                                */

/* 'r': standby status update.  Positions are raw LSNs (0 = not reported). */
struct pgp_standby_status {
    uint64_t write;
    uint64_t flush;
    uint64_t apply;
    int64_t send_time; /* PostgreSQL epoch microseconds */
    bool reply_requested;
};

/* 'h': hot standby feedback, fields in wire order. */
struct pgp_hs_feedback {
    int64_t send_time;
    uint32_t xmin;
    uint32_t xmin_epoch;
    uint32_t catalog_xmin;
    uint32_t catalog_epoch;
};

/* A CopyData payload sent by the standby (client) during streaming. */
struct pgp_standby_msg {
    char kind;                        /* 'r' or 'h' */
    struct pgp_standby_status status; /* kind 'r' */
    struct pgp_hs_feedback hs;        /* kind 'h' */
};

struct pgp_fe_msg {
    char type;           /* 'Q', 'd', 'c', 'X', 'p'; on -ENOTSUP/-EPROTO the offending type */
    size_t msg_len;      /* whole message size (type byte included); 0 if not yet known */
    const uint8_t *body; /* payload after the length word, inside the input buffer */
    size_t body_len;
    const char *query;           /* 'Q': the query text, NUL-terminated (== body) */
    size_t query_len;            /* 'Q': strlen(query) */
    struct pgp_standby_msg copy; /* 'd': the decoded standby message */
};

/*
 * Parses one regular frontend message: Byte1 type, Int32 length (counting itself), payload.
 * Accepted types and rules:
 *   'Q' Query: length 5..PGP_MAX_QUERY_LEN, the text's only NUL is its last byte;
 *   'd' CopyData: length 5..PGP_MAX_MSG_LEN, the payload must be a standby message that
 *       pgp_parse_standby_copydata accepts (it is decoded into out->copy);
 *   'c' CopyDone, 'X' Terminate: length exactly 4;
 *   'p' PasswordMessage / SASL(Initial)Response: length 4..PGP_MAX_MSG_LEN, bytes exposed in
 *       body/body_len (see pgp_parse_sasl_initial).
 * Refused with -ENOTSUP as soon as the type byte is seen: the extended query protocol ('P',
 * 'B', 'E', 'D', 'C', 'H', 'S') and fastpath calls ('F') - PostgreSQL's "extended query
 * protocol not supported in a replication connection" (08P01).  Any other type: -EPROTO.
 * Lengths: declared < 4 or below the type's minimum -> -EPROTO; above its maximum ->
 * -EMSGSIZE; both are detected from the first 5 bytes, before the body arrives.
 * Which messages are legal in which session state (e.g. 'd' only while streaming) is the
 * caller's business.  Returns > 0 (bytes consumed), 0 (need more) or a negative errno with
 * e->fatal = true.  out is overwritten in every case; its pointers point into buf.
 */
WM_MUSTCHECK int pgp_parse_fe(const uint8_t *buf, size_t len, struct pgp_fe_msg *out,
                              struct pgp_err *e);

/*
 * Decodes a CopyData payload from the standby: 'r' (exactly PGP_STANDBY_STATUS_LEN bytes) or
 * 'h' (exactly PGP_HS_FEEDBACK_LEN bytes).  PostgreSQL tolerates trailing bytes; walmirror
 * does not, since no PG15 client sends any.  Returns 0, or -EPROTO (fatal).
 */
WM_MUSTCHECK int pgp_parse_standby_copydata(const uint8_t *p, size_t len,
                                            struct pgp_standby_msg *out, struct pgp_err *e);

/*
 * Splits a SASLInitialResponse ('p' body): mechanism\0, Int32 length (-1: no data), data.
 * *mech and *data point into p; *data_len is -1 when absent.  Returns 0 or -EPROTO (fatal).
 */
WM_MUSTCHECK int pgp_parse_sasl_initial(const uint8_t *p, size_t len, const char **mech,
                                        const uint8_t **data, int32_t *data_len, struct pgp_err *e);

/* A CopyData payload sent by a walsender: what the primary-side client receives. */
struct pgp_primary_msg {
    char kind;            /* 'w' XLogData or 'k' keepalive */
    uint64_t data_start;  /* 'w' */
    uint64_t wal_end;     /* 'w' and 'k' */
    int64_t send_time;    /* 'w' and 'k' */
    bool reply_requested; /* 'k' */
    const uint8_t *data;  /* 'w': the WAL bytes, inside p */
    size_t data_len;      /* 'w' */
};

/*
 * Decodes a walsender CopyData payload: 'w' (at least PGP_XLOGDATA_INNER_HDR bytes) or 'k'
 * (exactly PGP_KEEPALIVE_LEN bytes), as walreceiver.c checks them.  Returns 0 or -EPROTO.
 */
WM_MUSTCHECK int pgp_parse_primary_copydata(const uint8_t *p, size_t len,
                                            struct pgp_primary_msg *out, struct pgp_err *e);

/* ---------------------------------------------------------------------------------------- */
/* Replication commands                                                                      */

enum pgp_cmd_kind {
    PGP_CMD_IDENTIFY_SYSTEM = 1,
    PGP_CMD_TIMELINE_HISTORY,
    PGP_CMD_SHOW,
    PGP_CMD_READ_REPLICATION_SLOT,
    PGP_CMD_CREATE_REPLICATION_SLOT,
    PGP_CMD_DROP_REPLICATION_SLOT,
    PGP_CMD_START_REPLICATION,
};

struct pgp_cmd {
    enum pgp_cmd_kind kind;
    const char *tag;                /* CommandComplete tag, e.g. "IDENTIFY_SYSTEM" (static) */
    char slot[PGP_NAME_MAX + 1];    /* slot name ("" when none); not validated, see
                                       pgp_slot_name_check */
    bool has_slot;                  /* START_REPLICATION: SLOT given; slot commands: true */
    char name[PGP_VARNAME_MAX + 1]; /* SHOW: variable name, e.g. "wal_segment_size" */
    uint32_t timeline;              /* TIMELINE_HISTORY: > 0; START_REPLICATION: 0 = omitted */
    uint64_t lsn;                   /* START_REPLICATION: start point */
    bool physical;                  /* START_REPLICATION: PHYSICAL keyword present */
    bool temporary;                 /* CREATE_REPLICATION_SLOT */
    bool reserve_wal;               /* CREATE_REPLICATION_SLOT */
    bool wait;                      /* DROP_REPLICATION_SLOT */
};

/*
 * Parses the text of a 'Q' message (s[0..len), NUL not included) as one replication command of
 * PostgreSQL 15's repl_gram.y, optionally followed by ';' and whitespace:
 *   IDENTIFY_SYSTEM
 *   TIMELINE_HISTORY tli                   decimal, 1..4294967295
 *   SHOW name[.name...]
 *   READ_REPLICATION_SLOT slot
 *   CREATE_REPLICATION_SLOT slot [TEMPORARY] PHYSICAL [RESERVE_WAL]
 *   CREATE_REPLICATION_SLOT slot [TEMPORARY] PHYSICAL (option [value] [, ...])
 *                                          option reserve_wal, value true/false/on/off/0/1
 *   DROP_REPLICATION_SLOT slot [WAIT]
 *   START_REPLICATION [SLOT slot] [PHYSICAL] X/X [TIMELINE tli]
 * Names are identifiers: unquoted ones are folded to lower case, "double-quoted" ones are
 * taken verbatim; at most PGP_NAME_MAX bytes.
 * Differences from PG15's scanner, all deliberate: keywords match case-insensitively (PG15's
 * are case-sensitive, so lower-case commands there fall through to "cannot execute SQL
 * commands in WAL sender for physical replication"); in a name position any word is a name
 * (PG15 rejects an unquoted upper-case keyword there); over-long identifiers are rejected
 * instead of truncated; an LSN must be a whole word of 1-8 + 1-8 hex digits (PG's sscanf
 * silently keeps the low 32 bits of longer halves); empty quoted identifiers are rejected.
 * Returns 0 with *out filled, or (e->fatal = false):
 *   -ENOTSUP  BASE_BACKUP, the LOGICAL forms, anything whose first word is not a replication
 *             command (SQL) - SQLSTATE 0A000, the message names the command;
 *   -EINVAL   syntax errors, bad LSN, timeline 0 or out of range, unknown or repeated slot
 *             options - 42601, the message names the command and what was found.
 */
WM_MUSTCHECK int pgp_parse_command(const char *s, size_t len, struct pgp_cmd *out,
                                   struct pgp_err *e);

/* ---------------------------------------------------------------------------------------- */
/* Backend message builders                                                                  */

/* RowDescription field: text format, table OID 0, attnum 0 (as printsimple.c). */
struct pgp_field {
    const char *name;
    uint32_t type_oid;
    int16_t typlen; /* -1 text, 4 int4, 8 int8 */
    int32_t typmod; /* -1 for walsender result sets, 0 for TIMELINE_HISTORY */
};

/* DataRow column: data == NULL is SQL NULL; otherwise len bytes (text format, no NUL). */
struct pgp_value {
    const void *data;
    size_t len;
};

/* All return the number of bytes appended, or -EINVAL / -EMSGSIZE / -ENOMEM / -EFAULT with
 * nothing appended. */

/* 'R': authentication request code with optional data (10 SASL, 11 SASL continue, 12 SASL
 * final; data may be NULL when len is 0). */
WM_MUSTCHECK int pgp_put_auth(struct pgp_buf *b, uint32_t code, const void *data, size_t len);
/* 'R' Int32 0: AuthenticationOk (9 bytes). */
WM_MUSTCHECK int pgp_put_auth_ok(struct pgp_buf *b);
/* 'S' name\0 value\0. */
WM_MUSTCHECK int pgp_put_parameter_status(struct pgp_buf *b, const char *name, const char *value);
/* 'K' Int32 pid, Int32 key. */
WM_MUSTCHECK int pgp_put_backend_key(struct pgp_buf *b, uint32_t pid, uint32_t key);
/* 'Z' status: 'I' idle, 'T' in transaction, 'E' failed transaction; else -EINVAL. */
WM_MUSTCHECK int pgp_put_ready(struct pgp_buf *b, char status);
/* 'T': nfields (0..1664) fields. */
WM_MUSTCHECK int pgp_put_row_description(struct pgp_buf *b, const struct pgp_field *fields,
                                         size_t nfields);
/* 'D': ncols (0..1664) values, each Int32 length (-1 for NULL) and bytes. */
WM_MUSTCHECK int pgp_put_data_row(struct pgp_buf *b, const struct pgp_value *cols, size_t ncols);
/* 'C' tag\0. */
WM_MUSTCHECK int pgp_put_command_complete(struct pgp_buf *b, const char *tag);
/*
 * 'E' ErrorResponse / 'N' NoticeResponse: fields S and V (severity, e.g. "ERROR", "FATAL",
 * "WARNING", "NOTICE"), C (sqlstate: five characters of [0-9A-Z]), M (message), then D (detail)
 * and H (hint) when not NULL, then the terminating \0.
 */
WM_MUSTCHECK int pgp_put_error(struct pgp_buf *b, const char *severity, const char *sqlstate,
                               const char *message, const char *detail, const char *hint);
WM_MUSTCHECK int pgp_put_notice(struct pgp_buf *b, const char *severity, const char *sqlstate,
                                const char *message, const char *detail, const char *hint);
/* ErrorResponse from a struct pgp_err: severity FATAL if e->fatal, else ERROR. */
WM_MUSTCHECK int pgp_put_error_from(struct pgp_buf *b, const struct pgp_err *e);
/* 'W' Int8 0 (text), Int16 0 columns: CopyBothResponse (8 bytes). */
WM_MUSTCHECK int pgp_put_copy_both(struct pgp_buf *b);
/* 'c' CopyDone (5 bytes). */
WM_MUSTCHECK int pgp_put_copy_done(struct pgp_buf *b);
/* The single byte answering SSLRequest: 'S' (accept = true, TLS follows) or 'N'. */
WM_MUSTCHECK int pgp_put_ssl_response(struct pgp_buf *b, bool accept);
/* The single byte answering GSSENCRequest: always 'N' (walmirror has no GSS encryption). */
WM_MUSTCHECK int pgp_put_gssenc_response(struct pgp_buf *b);

/*
 * XLogData header for wal_len bytes of WAL: 'd', Int32 4 + 25 + wal_len, 'w', Int64
 * data_start, Int64 wal_end, Int64 send_time - PGP_XLOGDATA_HDR_LEN bytes written to out, to
 * be followed on the wire by exactly wal_len WAL bytes (e.g. with writev or a second send).
 * Returns PGP_XLOGDATA_HDR_LEN, or -EMSGSIZE if the message would exceed PGP_MAX_BACKEND_MSG.
 */
WM_MUSTCHECK int pgp_xlogdata_header(uint8_t out[PGP_XLOGDATA_HDR_LEN], uint64_t data_start,
                                     uint64_t wal_end, int64_t send_time, size_t wal_len);
/*
 * The same header appended to b.  The caller must then append exactly wal_len bytes, e.g. by
 * pgp_buf_reserve + pread into b->data + b->len + pgp_buf_commit (no intermediate copy).
 */
WM_MUSTCHECK int pgp_put_xlogdata_header(struct pgp_buf *b, uint64_t data_start, uint64_t wal_end,
                                         int64_t send_time, size_t wal_len);
/* Header and WAL bytes in one go (wal may be NULL when wal_len is 0). */
WM_MUSTCHECK int pgp_put_xlogdata(struct pgp_buf *b, uint64_t data_start, uint64_t wal_end,
                                  int64_t send_time, const void *wal, size_t wal_len);
/* 'd' Int32 22, 'k' Int64 wal_end, Int64 send_time, Byte1 reply_requested (23 bytes). */
WM_MUSTCHECK int pgp_put_keepalive(struct pgp_buf *b, uint64_t wal_end, int64_t send_time,
                                   bool reply_requested);
/* Client side (the primary-side agent, tests): 'd'-wrapped 'r' (39 bytes) and 'h' (30). */
WM_MUSTCHECK int pgp_put_standby_status(struct pgp_buf *b, const struct pgp_standby_status *st);
WM_MUSTCHECK int pgp_put_hs_feedback(struct pgp_buf *b, const struct pgp_hs_feedback *hs);

/* ---------------------------------------------------------------------------------------- */
/* Replication result sets: 'T', 'D', 'C' (the caller then sends 'Z')                       */

/* IDENTIFY_SYSTEM: systemid text (decimal), timeline int4, xlogpos text (X/X), dbname text
 * (NULL when dbname is NULL, as on a physical connection). */
WM_MUSTCHECK int pgp_put_identify_system(struct pgp_buf *b, uint64_t sysid, uint32_t tli,
                                         uint64_t xlogpos, const char *dbname);
/* TIMELINE_HISTORY tli: filename text "%08X.history", content text (the file's bytes). */
WM_MUSTCHECK int pgp_put_timeline_history(struct pgp_buf *b, uint32_t tli, const void *content,
                                          size_t len);
/* SHOW: one text column named name holding value; tag "SHOW". */
WM_MUSTCHECK int pgp_put_show(struct pgp_buf *b, const char *name, const char *value);

/* What READ_REPLICATION_SLOT reports about an existing physical slot. */
struct pgp_slot_info {
    uint64_t restart_lsn; /* 0: never reserved -> restart_lsn and restart_tli NULL */
    uint32_t restart_tli; /* timeline of restart_lsn in the server's history */
};
/* READ_REPLICATION_SLOT: slot_type text "physical", restart_lsn text, restart_tli int8; all
 * three NULL when slot is NULL (no such slot). */
WM_MUSTCHECK int pgp_put_read_replication_slot(struct pgp_buf *b, const struct pgp_slot_info *slot);
/* CREATE_REPLICATION_SLOT: slot_name, consistent_point (X/X; 0/0 for a physical slot),
 * snapshot_name NULL, output_plugin NULL. */
WM_MUSTCHECK int pgp_put_create_slot(struct pgp_buf *b, const char *slot_name,
                                     uint64_t consistent_point);
/*
 * End of a historic timeline, after both sides' CopyDone: next_tli int8, next_tli_startpos
 * text, then CommandComplete "START_STREAMING" and CommandComplete "START_REPLICATION"
 * (libpqrcv_endstreaming needs both).
 */
WM_MUSTCHECK int pgp_put_end_of_timeline(struct pgp_buf *b, uint32_t next_tli,
                                         uint64_t next_startpos);

#endif
