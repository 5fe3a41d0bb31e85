/*
 * fuzz_pgproto.c - libFuzzer target for the WAL server's parsing of what a client sends.
 *
 * The input is the byte stream a client writes to walmirror's WAL server, parsed the way
 * walsrv.c's conn_process does it: in the STARTUP state one initial packet at a time
 * (pgp_parse_initial: SSLRequest and GSSENCRequest, each answered once, then CancelRequest
 * or StartupMessage), then regular messages (pgp_parse_fe): 'Q' text through the replication
 * command parser (pgp_parse_command), a successful START_REPLICATION entering COPY BOTH where
 * 'd' carries 'r'/'h' standby messages and 'c' leaves it, 'p' through pgp_parse_sasl_initial,
 * 'X' ending the session.  Every error is turned into an ErrorResponse as the server does.
 * Separately the whole input is given to pgp_parse_command as command text and to
 * pgp_parse_primary_copydata as a walsender's CopyData payload.
 *
 * Besides crashes and sanitizer reports, these break the codec's contract and abort:
 *   - a parser consuming more than it was given, or "need more" beyond the documented bounds
 *     (PGP_MAX_STARTUP_LEN + 4, PGP_MAX_QUERY_LEN);
 *   - a message accepted whole while one of its prefixes is refused (the parsers must be
 *     incremental: TCP may deliver any prefix first);
 *   - an error without a five-character SQLSTATE or with a message that is not one printable
 *     ASCII line, or one that pgp_put_error_from cannot turn into an ErrorResponse;
 *   - a parsed command whose names overflow their bounds, a 'Q' text that is not
 *     NUL-terminated, a standby message that does not survive re-encoding.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pgproto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum fz_state { FZ_STARTUP, FZ_IDLE, FZ_STREAMING, FZ_CLOSED };

static struct pgp_buf out;

static void
check_err(int rc, const struct pgp_err *e)
{
    size_t n;

    if (rc != -EPROTO && rc != -EMSGSIZE && rc != -ENOTSUP && rc != -EINVAL)
        abort();
    if (strlen(e->sqlstate) != 5)
        abort();
    n = strnlen(e->msg, sizeof(e->msg));
    if (n == 0 || n == sizeof(e->msg))
        abort();
    for (size_t i = 0; i < n; i++)
        if (e->msg[i] < 0x20 || e->msg[i] > 0x7e)
            abort();
    pgp_buf_reset(&out);
    if (pgp_put_error_from(&out, e) <= 0)
        abort();
}

/* A message of n bytes was accepted: each shorter prefix must mean "need more". */
static void
check_prefixes_initial(const uint8_t *buf, size_t n)
{
    size_t cuts[3] = {0, n < 5 ? 0 : 4, n - 1};
    struct pgp_initial ini;
    struct pgp_err e;

    for (int i = 0; i < 3; i++)
        if (pgp_parse_initial(buf, cuts[i], &ini, &e) != 0)
            abort();
}

static void
check_prefixes_fe(const uint8_t *buf, size_t n)
{
    size_t cuts[4] = {0, 1, n < 6 ? 1 : 5, n - 1};
    struct pgp_fe_msg m;
    struct pgp_err e;

    for (int i = 0; i < 4; i++)
        if (pgp_parse_fe(buf, cuts[i], &m, &e) != 0)
            abort();
}

static void
check_command(const struct pgp_cmd *cmd)
{
    if (cmd->tag == NULL || strnlen(cmd->slot, sizeof(cmd->slot)) == sizeof(cmd->slot) ||
        strnlen(cmd->name, sizeof(cmd->name)) == sizeof(cmd->name))
        abort();
    if (cmd->kind == PGP_CMD_TIMELINE_HISTORY && cmd->timeline == 0)
        abort();
}

/* What walsrv.c's conn_command does with a query, minus the answers that need a server. */
static bool
run_command(const char *q, size_t len)
{
    struct pgp_cmd cmd;
    struct pgp_err e;
    char lsn[PGP_LSN_BUFSZ];
    uint64_t back;
    int rc;

    rc = pgp_parse_command(q, len, &cmd, &e);
    if (rc < 0) {
        check_err(rc, &e);
        if (e.fatal)
            abort();
        return false;
    }
    check_command(&cmd);
    pgp_buf_reset(&out);
    switch (cmd.kind) {
    case PGP_CMD_SHOW:
        if (pgp_put_show(&out, cmd.name, "16MB") <= 0)
            abort();
        break;
    case PGP_CMD_READ_REPLICATION_SLOT:
    case PGP_CMD_CREATE_REPLICATION_SLOT:
    case PGP_CMD_DROP_REPLICATION_SLOT:
        if (pgp_slot_name_check(cmd.slot, &e) < 0) {
            check_err(-EINVAL, &e);
            break;
        }
        if (cmd.kind == PGP_CMD_CREATE_REPLICATION_SLOT &&
            pgp_put_create_slot(&out, cmd.slot, 0) <= 0)
            abort();
        break;
    case PGP_CMD_START_REPLICATION:
        if (cmd.has_slot && pgp_slot_name_check(cmd.slot, &e) < 0) {
            check_err(-EINVAL, &e);
            return false;
        }
        /* The LSN must read back as it was written. */
        rc = pgp_lsn_format(cmd.lsn, lsn);
        if (rc < 3 || rc > 17 || pgp_lsn_parse(lsn, (size_t)rc, &back) < 0 || back != cmd.lsn)
            abort();
        return true;
    default:
        break;
    }
    if (pgp_put_command_complete(&out, cmd.tag) <= 0 || pgp_put_ready(&out, 'I') <= 0)
        abort();
    return false;
}

static void
run_standby_msg(const struct pgp_standby_msg *sm)
{
    struct pgp_fe_msg m;
    struct pgp_err e;
    int n;

    pgp_buf_reset(&out);
    if (sm->kind == 'r')
        n = pgp_put_standby_status(&out, &sm->status);
    else if (sm->kind == 'h')
        n = pgp_put_hs_feedback(&out, &sm->hs);
    else
        abort();
    if (n <= 0 || pgp_parse_fe(out.data, out.len, &m, &e) != n || m.type != 'd' ||
        memcmp(&m.copy, sm, sizeof(*sm)) != 0)
        abort();
}

/* One message in IDLE or STREAMING; returns bytes consumed or <= 0 to stop. */
static int
run_message(enum fz_state *st, const uint8_t *buf, size_t len)
{
    struct pgp_fe_msg m;
    struct pgp_err e;
    const char *mech;
    const uint8_t *sdata;
    enum fz_state before = *st;
    int32_t slen;
    int n;

    n = pgp_parse_fe(buf, len, &m, &e);
    if (n < 0) {
        check_err(n, &e);
        if (!e.fatal)
            abort();
        return n;
    }
    if (n == 0) {
        if (len > PGP_MAX_QUERY_LEN)
            abort();
        return 0;
    }
    if ((size_t)n > len || m.msg_len != (size_t)n || m.body + m.body_len != buf + n)
        abort();
    check_prefixes_fe(buf, (size_t)n);
    switch (m.type) {
    case 'X':
        *st = FZ_CLOSED;
        break;
    case 'Q':
        if (m.query_len != strlen(m.query) || m.query_len + 1 != m.body_len)
            abort();
        if (before == FZ_IDLE && run_command(m.query, m.query_len))
            *st = FZ_STREAMING;
        break;
    case 'd':
        run_standby_msg(&m.copy);
        break;
    case 'c':
        if (before == FZ_STREAMING) {
            *st = FZ_IDLE;
            pgp_buf_reset(&out);
            if (pgp_put_copy_done(&out) <= 0 || pgp_put_end_of_timeline(&out, 2, 0x3000000) <= 0)
                abort();
        }
        break;
    case 'p':
        if (pgp_parse_sasl_initial(m.body, m.body_len, &mech, &sdata, &slen, &e) < 0) {
            check_err(-EPROTO, &e);
        } else if (slen > 0 && (sdata < m.body || sdata + slen > m.body + m.body_len)) {
            abort();
        }
        break;
    default:
        abort();
    }
    /* The server refuses 'p' in either state and 'Q' while streaming: the session ends. */
    if (m.type == 'p' || (before == FZ_STREAMING && m.type == 'Q'))
        *st = FZ_CLOSED;
    return n;
}

/* One initial packet in STARTUP; returns bytes consumed or <= 0 to stop. */
static int
run_initial(enum fz_state *st, bool *ssl_done, bool *gss_done, const uint8_t *buf, size_t len)
{
    struct pgp_initial ini;
    struct pgp_err e;
    const char *app;
    int n;

    n = pgp_parse_initial(buf, len, &ini, &e);
    if (n < 0) {
        check_err(n, &e);
        if (!e.fatal)
            abort();
        return n;
    }
    if (n == 0) {
        if (len >= PGP_MAX_STARTUP_LEN + 4)
            abort();
        return 0;
    }
    if ((size_t)n > len)
        abort();
    check_prefixes_initial(buf, (size_t)n);
    pgp_buf_reset(&out);
    switch (ini.kind) {
    case PGP_INITIAL_SSL:
    case PGP_INITIAL_GSSENC: {
        bool *done = ini.kind == PGP_INITIAL_SSL ? ssl_done : gss_done;

        if (*done)
            return -1;
        *done = true;
        if ((ini.kind == PGP_INITIAL_SSL ? pgp_put_ssl_response(&out, false)
                                         : pgp_put_gssenc_response(&out)) != 1)
            abort();
        break;
    }
    case PGP_INITIAL_CANCEL:
        return -1;
    case PGP_INITIAL_STARTUP:
        if (ini.user == NULL || ini.user[0] == '\0' || ini.nparams > PGP_MAX_STARTUP_PARAMS)
            abort();
        for (size_t i = 0; i < ini.nparams; i++) {
            const char *nm = ini.params[i].name, *v = ini.params[i].value;

            if ((const uint8_t *)nm < buf || (const uint8_t *)v + strlen(v) >= buf + n)
                abort();
        }
        if (pgp_initial_param(&ini, "user") != ini.user)
            abort();
        (void)pgp_initial_param(&ini, "client_encoding");
        app = ini.application_name != NULL ? ini.application_name : "";
        if (pgp_put_auth_ok(&out) <= 0 ||
            pgp_put_parameter_status(&out, "application_name", app) <= 0 ||
            pgp_put_backend_key(&out, 1, 2) <= 0 || pgp_put_ready(&out, 'I') <= 0)
            abort();
        *st = FZ_IDLE;
        break;
    default:
        abort();
    }
    return n;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    enum fz_state st = FZ_STARTUP;
    bool ssl_done = false, gss_done = false;
    size_t off = 0;
    struct pgp_cmd cmd;
    struct pgp_primary_msg pm;
    struct pgp_err e;
    int n;

    /* The command parser on its own, as if the input were a query's text (NULs included:
     * pgp_parse_command refuses them itself). */
    n = pgp_parse_command((const char *)data, size, &cmd, &e);
    if (n < 0)
        check_err(n, &e);
    else
        check_command(&cmd);

    /* The walsender's CopyData parser (the primary-side agent's), on the same bytes. */
    if (pgp_parse_primary_copydata(data, size, &pm, &e) < 0)
        check_err(-EPROTO, &e);
    else if (pm.kind == 'w' && (pm.data != data + PGP_XLOGDATA_INNER_HDR ||
                                pm.data_len != size - PGP_XLOGDATA_INNER_HDR))
        abort();

    /* The stream, as conn_process parses it. */
    while (off < size && st != FZ_CLOSED) {
        if (st == FZ_STARTUP)
            n = run_initial(&st, &ssl_done, &gss_done, data + off, size - off);
        else
            n = run_message(&st, data + off, size - off);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    return 0;
}
