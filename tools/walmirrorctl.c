/*
 * walmirrorctl.c - the operator CLI of walmirror.
 *
 *   walmirrorctl [-c FILE] [--url URL]... [--token-file FILE] COMMAND [ARGS]
 *
 * It talks to the agents' HTTP API (agent/httpapi.h) with libcurl:
 *
 *   status [--json] [--watch [SECONDS]]   GET /status from every agent named, one table row each
 *   pause | resume                        POST /pause or /resume to every agent named
 *   report --statuspage URL ...           push the state to a Statuspage-compatible service,
 *                                         every interval until stopped (report.h)
 *
 * Which agents: each --url (repeatable, "http://host:port" or "host:port") names one agent.
 * Without --url, -c FILE names the agent whose configuration it is (its http_listen; a wildcard
 * address means that agent on loopback); with neither, the default http_listen,
 * http://127.0.0.1:8008.  An agent's configuration does not hold its peer's HTTP address, so
 * the table has a row only for agents queried; below it, for each queried agent whose peer is
 * not in the table, a line gives what that agent knows of its peer (name, address, link state,
 * RTT).  Give one --url per site and one for the witness to see every row.
 *
 * The bearer token comes from --token-file, else from the configuration's http_token_file; it is
 * sent to every agent named.  The configuration is parsed without opening the files it names
 * (CONFIG_NO_FILE_CHECKS): the operator need not be able to read the agent's TLS key.
 *
 * Timeouts: 2 s to connect, 5 s per request.  status --watch runs until SIGINT or SIGTERM
 * (then exits 0), clearing the screen between refreshes only when stdout is a terminal, with
 * unreachable agents reported on the screen; with --json it prints one array per refresh, one
 * per line.
 *
 * Exit status: 0 success, 1 failure (an agent unreachable or refusing, for status even when
 * others answered), 2 bad usage, a bad configuration file, or a request refused as bad (an
 * agent's 400, or a maintenance window maint.h's rules refuse); check uses 3 for bad usage.
 */
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "fleet.h"
#include "maint.h"
#include "report.h"

#define CTL_MAX_AGENTS 8
#define CTL_URL_MAX 1024
#define CTL_BODY_MAX (1024 * 1024)
#define CTL_TOKEN_MAX 4096
#define CTL_CONNECT_TIMEOUT_MS 2000L
#define CTL_TIMEOUT_MS 5000L

static volatile sig_atomic_t interrupted;

struct ctl {
    char urls[CTL_MAX_AGENTS][CTL_URL_MAX]; /* base URLs, without a trailing '/' */
    int n_urls;
    char *token; /* NULL: none */
    bool json;
    bool watch;
    double watch_s;
};

/* One answer from an agent. */
struct reply {
    long code;  /* HTTP status, 0 when the agent could not be reached */
    char *body; /* NUL-terminated */
    size_t len;
    char why[CURL_ERROR_SIZE + 64]; /* why it could not be reached */
};

static void
usage(FILE *f)
{
    fprintf(f,
            "walmirrorctl - operate a walmirror pair\n"
            "\n"
            "usage: walmirrorctl [-c FILE] [--url URL]... [--token-file FILE] COMMAND [ARGS]\n"
            "       walmirrorctl --help | --version\n"
            "\n"
            "  -c, --config FILE     an agent's configuration: talk to its http_listen, with its\n"
            "                        http_token_file\n"
            "      --url URL         an agent's HTTP API, e.g. http://10.0.0.1:8008; repeat it\n"
            "                        for each site and the witness (overrides -c's address)\n"
            "      --token-file FILE the bearer token (overrides http_token_file)\n"
            "  -h, --help            this text\n"
            "  -V, --version         version\n"
            "\n"
            "commands:\n"
            "  status [--json] [--watch [SECONDS]]\n"
            "                        one row per agent queried: node, role, PostgreSQL state,\n"
            "                        timeline, epoch, LSNs, lag per stage, sync, link, RTT,\n"
            "                        maintenance, automatic fail-over; --json prints the agents'\n"
            "                        JSON as an array; --watch refreshes every SECONDS (2)\n"
            "  pause                 pause automatic fail-over\n"
            "  resume                resume automatic fail-over\n"
            "  switchover [--to NODE] [--max-lag BYTES] [--at TIME]\n"
            "                        planned switchover, asked of the primary's agent (the\n"
            "                        source among those given); prints each step and the\n"
            "                        measured write-unavailability; --at \"YYYY-MM-DD HH:MM\",\n"
            "                        \"HH:MM\" (local time) or @SECONDS schedules it instead\n"
            "  failover [--force [--accept-data-loss]]\n"
            "                        promote the standby now; without --force the arbiter (the\n"
            "                        witness, or etcd) must agree that the primary site is gone;\n"
            "                        a stale standby (its primary ran exposed) also needs\n"
            "                        --accept-data-loss\n"
            "  rejoin                make a fenced former primary a standby of the new primary\n"
            "                        (pg_rewind, or a fresh base backup)\n"
            "  check [--lag-warning X] [--lag-critical Y]\n"
            "                        readiness for monitoring (Nagios plugin conventions: exit\n"
            "                        0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN, one line with\n"
            "                        perfdata): link, sync state, apply lag (X, Y: sizes like\n"
            "                        16MB or durations like 5s; default 16MB and 1GB), running\n"
            "                        operations, fenced nodes, spool free space and stalls,\n"
            "                        certificate expiry; bad arguments exit 3\n"
            "  maintenance add (--rrule RULE --start HH:MM [--from YYYY-MM-DD] |\n"
            "                   --at 'YYYY-MM-DD HH:MM') --duration D --tz ZONE\n"
            "                  [--class routine|window|hotfix] [--switchover]\n"
            "                        add a maintenance window on every agent given (the same\n"
            "                        id on each); RULE: RRULE subset, e.g. 'FREQ=MONTHLY;\n"
            "                        BYDAY=-1SA'; times are local in ZONE (e.g. America/Denver);\n"
            "                        D like 4h, 90m, 1h30m; inside a window automatic fail-over\n"
            "                        pauses; --switchover: a switchover at each window's start\n"
            "  maintenance list [--json]\n"
            "                        each agent's windows, with the next (or open) one\n"
            "  maintenance remove ID remove window ID on every agent given\n"
            "  report --statuspage URL --page-id ID --component-id ID --api-key-file FILE\n"
            "         [--metric-id ID] [--interval 60s] [--component overall|database|\n"
            "          mirror|link] [--once]\n"
            "                        push the component's status (worst of the agents given)\n"
            "                        to a Statuspage-compatible API when it changes, and with\n"
            "                        --metric-id the lag in seconds every interval, until\n"
            "                        SIGINT or SIGTERM; --once: one round, exit 1 if a push\n"
            "                        failed (see docs/operations.md)\n"
            "  fleet --etcd ENDPOINTS [--etcd-ca F --etcd-cert F --etcd-key F] [--prefix ROOT]\n"
            "        [--json]        every pair whose etcd arbiter keeps its records under ROOT\n"
            "                        (default /walmirror/), read from etcd (not the agents):\n"
            "                        one row per pair with its epoch, holder, exposure, nodes'\n"
            "                        roles, sync state and lag\n"
            "\n"
            "Without --url and -c, the agent at http://127.0.0.1:8008.  With -c alone, the table\n"
            "shows that agent and, below it, what it knows of its peer; give one --url per agent\n"
            "for a row each.\n"
            "\n"
            "Exit status: 0 success, 1 failure (any agent unreachable), 2 bad usage or a\n"
            "request an agent refused as bad (400); check: 3 for bad usage.\n");
}

static void
on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

/* ---------------------------------------------------------------------------------------- */
/* Set-up: URLs, configuration, token                                                        */

/* Stores url (with "http://" added when it names no scheme) as agent number ctl->n_urls. */
static int
add_url(struct ctl *ctl, const char *url)
{
    char *dst;
    size_t n;
    int r;

    if (ctl->n_urls == CTL_MAX_AGENTS) {
        fprintf(stderr, "walmirrorctl: at most %d --url\n", CTL_MAX_AGENTS);
        return -EINVAL;
    }
    if (url[0] == '\0') {
        fprintf(stderr, "walmirrorctl: --url needs a URL\n");
        return -EINVAL;
    }
    dst = ctl->urls[ctl->n_urls];
    r = snprintf(dst, CTL_URL_MAX, "%s%s", strstr(url, "://") != NULL ? "" : "http://", url);
    if (r < 0 || r >= CTL_URL_MAX) {
        fprintf(stderr, "walmirrorctl: URL too long: %s\n", url);
        return -EINVAL;
    }
    n = (size_t)r;
    while (n > 0 && dst[n - 1] == '/')
        dst[--n] = '\0';
    ctl->n_urls++;
    return 0;
}

/* The URL of the agent listening on hp: a wildcard address means that agent on loopback. */
static int
url_of_listen(struct ctl *ctl, const struct config_hostport *hp)
{
    char host[3 * CONFIG_HOST_MAX + 3], url[CTL_URL_MAX];
    const char *h = hp->host;
    size_t n = 0;
    int r;

    if (strcmp(h, "0.0.0.0") == 0 || h[0] == '\0')
        h = "127.0.0.1";
    else if (strcmp(h, "::") == 0 || strcmp(h, "::0") == 0)
        h = "::1";
    if (strchr(h, ':') != NULL) {
        /* IPv6 in brackets, a zone's '%' escaped as URLs want it */
        host[n++] = '[';
        for (const char *p = h; *p != '\0'; p++) {
            if (*p == '%') {
                memcpy(host + n, "%25", 3);
                n += 3;
            } else {
                host[n++] = *p;
            }
        }
        host[n++] = ']';
        host[n] = '\0';
    } else {
        r = snprintf(host, sizeof(host), "%s", h);
        if (r < 0 || (size_t)r >= sizeof(host))
            return -EINVAL;
    }
    r = snprintf(url, sizeof(url), "http://%s:%u", host, (unsigned)hp->port);
    if (r < 0 || (size_t)r >= sizeof(url))
        return -EINVAL;
    return add_url(ctl, url);
}

/* Reads at most max bytes of path into a malloc'd NUL-terminated buffer; -errno on failure,
 * -EFBIG when longer. */
static int
read_small_file(const char *path, size_t max, char **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    size_t n;
    int rc = 0;

    if (f == NULL)
        return -errno;
    buf = malloc(max + 2);
    if (buf == NULL) {
        fclose(f);
        return -ENOMEM;
    }
    n = fread(buf, 1, max + 1, f);
    if (ferror(f))
        rc = -EIO;
    else if (n > max)
        rc = -EFBIG;
    fclose(f);
    if (rc < 0) {
        free(buf);
        return rc;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

/* Loads the token from path: the file less trailing whitespace; not empty. */
static int
load_token(struct ctl *ctl, const char *path)
{
    size_t n;
    int rc = read_small_file(path, CTL_TOKEN_MAX + 64, &ctl->token, &n);

    if (rc < 0) {
        fprintf(stderr, "walmirrorctl: cannot read the token file %s: %s\n", path,
                rc == -EFBIG ? "too long" : strerror(-rc));
        return rc;
    }
    while (n > 0 && (ctl->token[n - 1] == '\n' || ctl->token[n - 1] == '\r' ||
                     ctl->token[n - 1] == ' ' || ctl->token[n - 1] == '\t'))
        ctl->token[--n] = '\0';
    if (n == 0 || strpbrk(ctl->token, "\r\n") != NULL) {
        fprintf(stderr, "walmirrorctl: the token file %s holds no single-line token\n", path);
        return -EINVAL;
    }
    return 0;
}

/*
 * Reads the configuration file at path for its http_listen and http_token_file.  Returns 0,
 * or -EINVAL with the message printed (the caller exits 2).
 */
static int
load_config(const char *path, struct wm_config *cfg)
{
    char err[1024], *buf;
    size_t len;
    int rc = read_small_file(path, CONFIG_FILE_MAX, &buf, &len);

    if (rc < 0) {
        fprintf(stderr, "walmirrorctl: %s: cannot read: %s\n", path,
                rc == -EFBIG ? "file too large" : strerror(-rc));
        return -EINVAL;
    }
    rc = config_parse_buffer(path, buf, len, CONFIG_NO_FILE_CHECKS, cfg, err, sizeof(err));
    free(buf);
    if (rc < 0) {
        fprintf(stderr, "walmirrorctl: %s\n", err);
        return -EINVAL;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* HTTP                                                                                      */

static size_t
on_body(char *data, size_t size, size_t nmemb, void *ud)
{
    struct reply *r = ud;
    size_t n = size * nmemb;
    char *p;

    if (r->len + n > CTL_BODY_MAX)
        return 0; /* makes curl fail with CURLE_WRITE_ERROR */
    p = realloc(r->body, r->len + n + 1);
    if (p == NULL)
        return 0;
    r->body = p;
    memcpy(r->body + r->len, data, n);
    r->len += n;
    r->body[r->len] = '\0';
    return n;
}

static int
on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
    (void)ud;
    (void)dltotal;
    (void)dlnow;
    (void)ultotal;
    (void)ulnow;
    return interrupted ? 1 : 0; /* non-zero aborts the transfer */
}

/*
 * Sends GET (post false) or POST with an empty body to url.  Returns 0 with the status and body
 * in *r when the agent answered (whatever the status), or -1 with r->why set when it could not
 * be reached.  The caller frees r->body.
 */
static int http_request(const struct ctl *ctl, const char *url, const char *method,
                        struct reply *r);

static int
http_call(const struct ctl *ctl, const char *url, bool post, struct reply *r)
{
    return http_request(ctl, url, post ? "POST" : "GET", r);
}

/* As http_call, with method "GET", "POST" (an empty body) or "DELETE". */
static int
http_request(const struct ctl *ctl, const char *url, const char *method, struct reply *r)
{
    bool post = strcmp(method, "POST") == 0;

    char errbuf[CURL_ERROR_SIZE] = "";
    struct curl_slist *headers = NULL, *more;
    char *auth = NULL;
    long oserr = 0;
    CURL *c;
    CURLcode rc;
    int ret = -1;

    memset(r, 0, sizeof(*r));
    c = curl_easy_init();
    if (c == NULL) {
        snprintf(r->why, sizeof(r->why), "cannot set up libcurl");
        return -1;
    }
    headers = curl_slist_append(NULL, "Accept: application/json");
    /* A POST carries no body and no Content-Type (libcurl would add a form's, which the API
     * refuses as a browser's cross-site request). */
    if (headers != NULL && post) {
        more = curl_slist_append(headers, "Content-Type:");
        if (more == NULL) {
            curl_slist_free_all(headers);
            headers = NULL;
        }
    }
    if (headers != NULL && ctl->token != NULL) {
        if (asprintf(&auth, "Authorization: Bearer %s", ctl->token) < 0) {
            auth = NULL;
        } else {
            more = curl_slist_append(headers, auth);
            if (more == NULL) {
                curl_slist_free_all(headers);
                headers = NULL;
            }
        }
    }
    if (headers == NULL || (ctl->token != NULL && auth == NULL)) {
        snprintf(r->why, sizeof(r->why), "out of memory");
        goto out;
    }
    if (curl_easy_setopt(c, CURLOPT_URL, url) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, CTL_CONNECT_TIMEOUT_MS) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, CTL_TIMEOUT_MS) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_WRITEDATA, r) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L) != CURLE_OK ||
        (post && (curl_easy_setopt(c, CURLOPT_POST, 1L) != CURLE_OK ||
                  curl_easy_setopt(c, CURLOPT_POSTFIELDS, "") != CURLE_OK ||
                  curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, 0L) != CURLE_OK)) ||
        (strcmp(method, "DELETE") == 0 &&
         curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "DELETE") != CURLE_OK)) {
        snprintf(r->why, sizeof(r->why), "cannot set up libcurl");
        goto out;
    }
    rc = curl_easy_perform(c);
    if (rc != CURLE_OK) {
        curl_easy_getinfo(c, CURLINFO_OS_ERRNO, &oserr);
        if (rc == CURLE_ABORTED_BY_CALLBACK)
            snprintf(r->why, sizeof(r->why), "interrupted");
        else if (oserr != 0 && rc == CURLE_COULDNT_CONNECT)
            snprintf(r->why, sizeof(r->why), "%s", strerror((int)oserr));
        else
            snprintf(r->why, sizeof(r->why), "%s",
                     errbuf[0] != '\0' ? errbuf : curl_easy_strerror(rc));
        free(r->body);
        r->body = NULL;
        r->len = 0;
        goto out;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->code);
    if (r->body == NULL) {
        r->body = strdup("");
        if (r->body == NULL) {
            snprintf(r->why, sizeof(r->why), "out of memory");
            goto out;
        }
    }
    ret = 0;
out:
    curl_slist_free_all(headers);
    if (auth != NULL) {
        memset(auth, 0, strlen(auth));
        free(auth);
    }
    curl_easy_cleanup(c);
    return ret;
}

/* The "error" member of a JSON error body, else a short excerpt of the body. */
static void
describe_refusal(const struct reply *r, char *buf, size_t cap)
{
    json_t *o = json_loadb(r->body, r->len, 0, NULL);
    const char *msg = json_string_value(json_object_get(o, "error"));

    if (msg != NULL)
        snprintf(buf, cap, "%ld %s", r->code, msg);
    else
        snprintf(buf, cap, "%ld %.80s", r->code, r->body);
    json_decref(o);
    for (char *p = buf; *p != '\0'; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
}

/*
 * GET url/status: the agent's JSON object in *out, or NULL with the reason in why.
 * Returns 0 or -1.
 */
static int
fetch_status(const struct ctl *ctl, const char *base, json_t **out, char *why, size_t cap)
{
    char url[CTL_URL_MAX + 16], msg[512];
    struct reply r;
    json_error_t jerr;
    json_t *o;
    int n;

    *out = NULL;
    n = snprintf(url, sizeof(url), "%s/status", base);
    if (n < 0 || (size_t)n >= sizeof(url)) {
        snprintf(why, cap, "walmirrorctl: URL too long: %s", base);
        return -1;
    }
    if (http_call(ctl, url, false, &r) < 0) {
        snprintf(why, cap, "walmirrorctl: cannot reach the agent at %s: %s", url, r.why);
        return -1;
    }
    if (r.code != 200) {
        describe_refusal(&r, msg, sizeof(msg));
        snprintf(why, cap, "walmirrorctl: the agent at %s answered %s", url, msg);
        free(r.body);
        return -1;
    }
    o = json_loadb(r.body, r.len, 0, &jerr);
    free(r.body);
    if (!json_is_object(o)) {
        snprintf(why, cap, "walmirrorctl: the agent at %s sent no JSON object: %s", url,
                 o == NULL ? jerr.text : "not an object");
        json_decref(o);
        return -1;
    }
    *out = o;
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* The status table                                                                          */

enum col {
    COL_NODE,
    COL_ROLE,
    COL_PG,
    COL_TL,
    COL_EPOCH,
    COL_SENT,
    COL_WRITE,
    COL_FLUSH,
    COL_REPLAY,
    COL_WLAG,
    COL_FLAG,
    COL_RLAG,
    COL_SYNC,
    COL_LINK,
    COL_MAINT,
    COL_FAILOVER,
    COL_N,
};

static const char *const col_titles[COL_N] = {
    "NODE",   "ROLE",      "PG",        "TL",         "EPOCH", "SENT", "WRITE", "FLUSH",
    "REPLAY", "WRITE LAG", "FLUSH LAG", "REPLAY LAG", "SYNC",  "LINK", "MAINT", "FAILOVER"};

#define CELL_MAX 80

typedef char row_t[COL_N][CELL_MAX];

static const char *
jstr(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));

    return s != NULL && s[0] != '\0' ? s : "-";
}

/* An unsigned integer member: a JSON integer, or a decimal string (values above INT64_MAX). */
static bool
ju64(const json_t *o, const char *key, uint64_t *v)
{
    const json_t *j = json_object_get(o, key);
    const char *s;
    char *end;

    if (json_is_integer(j) && json_integer_value(j) >= 0) {
        *v = (uint64_t)json_integer_value(j);
        return true;
    }
    s = json_string_value(j);
    if (s == NULL || s[0] < '0' || s[0] > '9')
        return false;
    errno = 0;
    *v = strtoull(s, &end, 10);
    return errno == 0 && *end == '\0';
}

static void
cell_u64(char *cell, const json_t *o, const char *key, bool zero_unknown)
{
    uint64_t v;

    if (!ju64(o, key, &v) || (zero_unknown && v == 0))
        snprintf(cell, CELL_MAX, "-");
    else
        snprintf(cell, CELL_MAX, "%" PRIu64, v);
}

static void
cell_lsn(char *cell, const json_t *o, const char *key)
{
    char textkey[64];
    uint64_t v;

    snprintf(textkey, sizeof(textkey), "%s_text", key);
    if (!ju64(o, key, &v) || v == 0)
        snprintf(cell, CELL_MAX, "-");
    else
        snprintf(cell, CELL_MAX, "%.24s", jstr(o, textkey));
}

/* "31 kB 0.004s" (config_size_text's units); "-" for unknown seconds. */
static void
cell_lag(char *cell, const json_t *o, const char *stage)
{
    char kb[32], ks[32], secs[32], size[32];
    const json_t *js;
    uint64_t bytes;

    snprintf(kb, sizeof(kb), "%s_lag_bytes", stage);
    snprintf(ks, sizeof(ks), "%s_lag_s", stage);
    js = json_object_get(o, ks);
    if (json_is_number(js))
        snprintf(secs, sizeof(secs), "%.3fs", json_number_value(js));
    else
        snprintf(secs, sizeof(secs), "-");
    if (ju64(o, kb, &bytes))
        snprintf(cell, CELL_MAX, "%s %s", config_size_text(bytes, size, sizeof(size)), secs);
    else
        snprintf(cell, CELL_MAX, "- %s", secs);
}

/* A site's role as the operator thinks of it: the source sits beside the primary. */
static const char *
role_name(const char *agent_role)
{
    if (strcmp(agent_role, "source") == 0)
        return "primary";
    if (strcmp(agent_role, "sink") == 0)
        return "standby";
    return agent_role;
}

static void
fill_row(row_t row, const json_t *o)
{
    uint64_t rtt;

    snprintf(row[COL_NODE], CELL_MAX, "%.63s", jstr(o, "node_name"));
    snprintf(row[COL_ROLE], CELL_MAX, "%.20s", role_name(jstr(o, "role")));
    snprintf(row[COL_PG], CELL_MAX, "%.20s", jstr(o, "pg_state"));
    cell_u64(row[COL_TL], o, "timeline", true);
    cell_u64(row[COL_EPOCH], o, "epoch", false);
    cell_lsn(row[COL_SENT], o, "sent_lsn");
    cell_lsn(row[COL_WRITE], o, "write_lsn");
    cell_lsn(row[COL_FLUSH], o, "flush_lsn");
    cell_lsn(row[COL_REPLAY], o, "apply_lsn");
    cell_lag(row[COL_WLAG], o, "write");
    cell_lag(row[COL_FLAG], o, "flush");
    cell_lag(row[COL_RLAG], o, "apply");
    snprintf(row[COL_SYNC], CELL_MAX, "%.20s", jstr(o, "sync_state"));
    if (json_is_true(json_object_get(o, "link_up")) && ju64(o, "rtt_us", &rtt))
        snprintf(row[COL_LINK], CELL_MAX, "up %.2fms", (double)rtt / 1000.0);
    else if (json_is_true(json_object_get(o, "link_up")))
        snprintf(row[COL_LINK], CELL_MAX, "up");
    else
        snprintf(row[COL_LINK], CELL_MAX, "down");
    snprintf(row[COL_MAINT], CELL_MAX, "%.47s", jstr(o, "maintenance"));
    snprintf(row[COL_FAILOVER], CELL_MAX, "%s",
             json_is_true(json_object_get(o, "failover_paused")) ? "paused" : "auto");
}

static void
print_row(FILE *f, const char *const *cells, const size_t *width)
{
    for (int c = 0; c < COL_N; c++) {
        if (c == COL_N - 1)
            fprintf(f, "%s\n", cells[c]);
        else
            fprintf(f, "%-*s  ", (int)width[c], cells[c]);
    }
}

/* The table of the agents that answered (objs[i] != NULL), then notes on peers and errors. */
static void
print_table(FILE *f, json_t *const *objs, int n)
{
    row_t *rows = calloc((size_t)(n > 0 ? n : 1), sizeof(row_t));
    size_t width[COL_N];
    const char *cells[COL_N];
    int shown = 0;

    if (rows == NULL) {
        fprintf(f, "walmirrorctl: out of memory\n");
        return;
    }
    for (int c = 0; c < COL_N; c++)
        width[c] = strlen(col_titles[c]);
    for (int i = 0; i < n; i++) {
        if (objs[i] == NULL)
            continue;
        fill_row(rows[i], objs[i]);
        for (int c = 0; c < COL_N; c++)
            if (strlen(rows[i][c]) > width[c])
                width[c] = strlen(rows[i][c]);
    }
    print_row(f, col_titles, width);
    for (int i = 0; i < n; i++) {
        if (objs[i] == NULL)
            continue;
        for (int c = 0; c < COL_N; c++)
            cells[c] = rows[i][c];
        print_row(f, cells, width);
        shown++;
    }
    if (shown == 0)
        fprintf(f, "(no agent answered)\n");

    /* What each agent knows of a peer that has no row of its own. */
    for (int i = 0; i < n; i++) {
        const char *peer;
        bool listed = false;
        uint64_t rtt = 0;

        if (objs[i] == NULL)
            continue;
        peer = jstr(objs[i], "peer_name");
        if (strcmp(peer, "-") == 0)
            continue;
        for (int k = 0; k < n; k++)
            if (objs[k] != NULL && strcmp(jstr(objs[k], "node_name"), peer) == 0)
                listed = true;
        if (listed)
            continue;
        (void)ju64(objs[i], "rtt_us", &rtt);
        if (json_is_true(json_object_get(objs[i], "link_up")))
            fprintf(f, "peer of %s: %s at %s, link up, RTT %.2f ms (not queried: add --url)\n",
                    jstr(objs[i], "node_name"), peer, jstr(objs[i], "peer_addr"),
                    (double)rtt / 1000.0);
        else
            fprintf(f, "peer of %s: %s at %s, link down (not queried: add --url)\n",
                    jstr(objs[i], "node_name"), peer, jstr(objs[i], "peer_addr"));
    }
    /* Running exposed, or stale: what is at risk. */
    for (int i = 0; i < n; i++) {
        uint64_t since = 0, risk = 0, peak = 0;
        char when[64] = "?";

        if (objs[i] == NULL || (!json_is_true(json_object_get(objs[i], "exposed")) &&
                                !json_is_true(json_object_get(objs[i], "stale"))))
            continue;
        if (ju64(objs[i], "exposed_since_unix_us", &since) && since > 0) {
            time_t t = (time_t)(since / 1000000);
            struct tm tm;
            if (localtime_r(&t, &tm) != NULL)
                strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S %Z", &tm);
        }
        (void)ju64(objs[i], "wal_at_risk_bytes", &risk);
        (void)ju64(objs[i], "wal_at_risk_peak_bytes", &peak);
        if (json_is_true(json_object_get(objs[i], "exposed")))
            fprintf(f, "%s: running exposed since %s (%s): %" PRIu64 " bytes of acknowledged "
                    "WAL at risk (peak %" PRIu64 "), for %.0f s\n", jstr(objs[i], "node_name"),
                    jstr(objs[i], "exposed_lsn_text"), when, risk, peak,
                    since > 0 ? (double)time(NULL) - (double)since / 1e6 : 0);
        else
            fprintf(f, "%s: stale: its primary runs exposed since %s (%s); it is not promoted "
                    "(failover --force --accept-data-loss overrides)\n",
                    jstr(objs[i], "node_name"), jstr(objs[i], "exposed_lsn_text"), when);
    }
    for (int i = 0; i < n; i++)
        if (objs[i] != NULL && strcmp(jstr(objs[i], "last_error"), "-") != 0)
            fprintf(f, "%s: last error: %s\n", jstr(objs[i], "node_name"),
                    jstr(objs[i], "last_error"));
    free(rows);
}

/*
 * One round of status: queries every agent and prints the table (or JSON) to f.  Errors go to
 * err (stderr, or f itself in --watch mode so that they stay on the screen).  Returns the
 * number of agents that did not answer.
 */
static int
status_round(const struct ctl *ctl, FILE *f, FILE *err)
{
    json_t *objs[CTL_MAX_AGENTS] = {NULL};
    char why[CTL_URL_MAX + 1024];
    json_t *arr;
    char *text;
    int failed = 0;

    for (int i = 0; i < ctl->n_urls; i++)
        if (fetch_status(ctl, ctl->urls[i], &objs[i], why, sizeof(why)) < 0) {
            fprintf(err, "%s\n", why);
            failed++;
        }
    if (ctl->json) {
        arr = json_array();
        for (int i = 0; i < ctl->n_urls && arr != NULL; i++)
            if (objs[i] != NULL && json_array_append(arr, objs[i]) < 0) {
                json_decref(arr);
                arr = NULL;
            }
        text = arr != NULL ? json_dumps(arr, (ctl->watch ? JSON_COMPACT : JSON_INDENT(2)) |
                                                 JSON_PRESERVE_ORDER)
                           : NULL;
        if (text != NULL)
            fprintf(f, "%s\n", text);
        else
            fprintf(err, "walmirrorctl: out of memory\n");
        free(text);
        json_decref(arr);
    } else {
        print_table(f, objs, ctl->n_urls);
    }
    for (int i = 0; i < ctl->n_urls; i++)
        json_decref(objs[i]);
    return failed;
}

static int
cmd_status(const struct ctl *ctl)
{
    bool tty = isatty(STDOUT_FILENO) == 1;
    struct timespec ts;
    char *frame = NULL, stamp[64];
    size_t len = 0;
    struct tm tm;
    time_t now;
    FILE *f;

    if (!ctl->watch)
        return status_round(ctl, stdout, stderr) == 0 ? 0 : 1;

    while (!interrupted) {
        if (ctl->json) {
            (void)status_round(ctl, stdout, stderr);
        } else {
            f = open_memstream(&frame, &len);
            if (f == NULL) {
                fprintf(stderr, "walmirrorctl: out of memory\n");
                return 1;
            }
            now = time(NULL);
            localtime_r(&now, &tm);
            if (strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", &tm) == 0)
                stamp[0] = '\0';
            fprintf(f, "walmirrorctl status, every %gs, %s (Ctrl-C to stop)\n\n", ctl->watch_s,
                    stamp);
            (void)status_round(ctl, f, f);
            if (fclose(f) != 0) {
                free(frame);
                fprintf(stderr, "walmirrorctl: out of memory\n");
                return 1;
            }
            if (interrupted) {
                free(frame);
                break;
            }
            if (tty)
                fputs("\033[H\033[2J", stdout);
            fwrite(frame, 1, len, stdout);
            if (!tty)
                fputc('\n', stdout);
            free(frame);
            frame = NULL;
        }
        if (fflush(stdout) != 0)
            return 1;
        ts.tv_sec = (time_t)ctl->watch_s;
        ts.tv_nsec = (long)((ctl->watch_s - (double)ts.tv_sec) * 1e9);
        /* Returns early, with EINTR, on SIGINT or SIGTERM. */
        while (!interrupted && nanosleep(&ts, &ts) < 0 && errno == EINTR)
            ;
    }
    return 0;
}

/* POST /pause or /resume to every agent; prints one line each. */
static int
cmd_action(const struct ctl *ctl, const char *action)
{
    char url[CTL_URL_MAX + 16], msg[512];
    const char *node;
    struct reply r;
    json_t *o;
    int failed = 0, n;

    for (int i = 0; i < ctl->n_urls; i++) {
        n = snprintf(url, sizeof(url), "%s/%s", ctl->urls[i], action);
        if (n < 0 || (size_t)n >= sizeof(url)) {
            fprintf(stderr, "walmirrorctl: URL too long: %s\n", ctl->urls[i]);
            failed++;
            continue;
        }
        if (http_call(ctl, url, true, &r) < 0) {
            fprintf(stderr, "walmirrorctl: cannot reach the agent at %s: %s\n", url, r.why);
            failed++;
            continue;
        }
        if (r.code != 202 && r.code != 200) {
            describe_refusal(&r, msg, sizeof(msg));
            fprintf(stderr, "walmirrorctl: the agent at %s answered %s\n", url, msg);
            free(r.body);
            failed++;
            continue;
        }
        o = json_loadb(r.body, r.len, 0, NULL);
        node = json_string_value(json_object_get(o, "node_name"));
        printf("%s: automatic fail-over %s requested (at %s); status shows it once the agent "
               "has taken the request\n",
               node != NULL && node[0] != '\0' ? node : ctl->urls[i], action, url);
        json_decref(o);
        free(r.body);
    }
    return failed == 0 ? 0 : 1;
}

/* ---------------------------------------------------------------------------------------- */
/* Operations: switchover, failover, rejoin                                                  */

struct op_args {
    const char *to;      /* switchover --to */
    const char *max_lag; /* switchover --max-lag BYTES */
    long long at;        /* switchover --at: Unix seconds, 0 for now */
    bool force;          /* failover --force */
    bool accept_loss;    /* failover --force --accept-data-loss */
};

/*
 * Parses --at: "YYYY-MM-DD HH:MM[:SS]" (or with a 'T'), "HH:MM" (the next such time), both in
 * the local time zone (TZ), or "@SECONDS" since the Unix epoch.  Returns the Unix time, or -1.
 */
static long long
parse_at(const char *v)
{
    struct tm tm;
    const char *end;
    time_t now = time(NULL), t;

    if (v[0] == '@') {
        char *e;
        long long s;
        errno = 0;
        s = strtoll(v + 1, &e, 10);
        return errno == 0 && e != v + 1 && *e == '\0' && s > 0 ? s : -1;
    }
    memset(&tm, 0, sizeof(tm));
    if ((end = strptime(v, "%Y-%m-%d %H:%M", &tm)) != NULL ||
        (end = strptime(v, "%Y-%m-%dT%H:%M", &tm)) != NULL) {
        if (*end == ':' && (end = strptime(end, ":%S", &tm)) == NULL)
            return -1;
        if (*end != '\0')
            return -1;
        tm.tm_isdst = -1;
        t = mktime(&tm);
        return t == (time_t)-1 ? -1 : (long long)t;
    }
    memset(&tm, 0, sizeof(tm));
    if ((end = strptime(v, "%H:%M", &tm)) != NULL && *end == '\0') {
        int hour = tm.tm_hour, min = tm.tm_min;
        localtime_r(&now, &tm);
        tm.tm_hour = hour;
        tm.tm_min = min;
        tm.tm_sec = 0;
        tm.tm_isdst = -1;
        t = mktime(&tm);
        if (t != (time_t)-1 && t <= now) {
            tm.tm_mday++; /* tomorrow, at that local time */
            tm.tm_isdst = -1;
            t = mktime(&tm);
        }
        return t == (time_t)-1 ? -1 : (long long)t;
    }
    return -1;
}

/*
 * The agent that must run the operation: the one whose role is want_role among those given
 * (any of several roles, '|'-separated); with a single agent, that one.  Returns its index or
 * -1 with a message.
 */
static int
pick_agent(const struct ctl *ctl, const char *want_role, const char *what)
{
    char why[512];
    int found = -1;

    if (ctl->n_urls == 1)
        return 0;
    for (int i = 0; i < ctl->n_urls && found < 0; i++) {
        json_t *o;
        const char *role;

        if (fetch_status(ctl, ctl->urls[i], &o, why, sizeof(why)) < 0) {
            fprintf(stderr, "walmirrorctl: %s\n", why);
            continue;
        }
        role = json_string_value(json_object_get(o, "role"));
        if (role != NULL && strstr(want_role, role) != NULL)
            found = i;
        json_decref(o);
    }
    if (found < 0)
        fprintf(stderr, "walmirrorctl: no agent given is the %s that a %s needs\n", want_role,
                what);
    return found;
}

/*
 * POSTs the operation to the agent at base, then follows its /status until the operation with
 * that id has ended, printing each step.  Returns 0 when it succeeded, 1 otherwise.
 */
static int
run_operation(const struct ctl *ctl, const char *base, const char *op, const char *query,
              long long at)
{
    char url[CTL_URL_MAX + 300], msg[512], why[512], last_step[256] = "";
    struct reply r;
    json_t *o;
    uint64_t id;
    time_t deadline = time(NULL) + 600;
    int n;

    n = snprintf(url, sizeof(url), "%s/%s%s", base, op, query);
    if (n < 0 || (size_t)n >= sizeof(url)) {
        fprintf(stderr, "walmirrorctl: URL too long\n");
        return 1;
    }
    if (http_call(ctl, url, true, &r) < 0) {
        fprintf(stderr, "walmirrorctl: cannot reach the agent at %s: %s\n", url, r.why);
        return 1;
    }
    if (r.code != 202) {
        describe_refusal(&r, msg, sizeof(msg));
        fprintf(stderr, "walmirrorctl: the agent at %s answered %s\n", url, msg);
        free(r.body);
        return r.code == 400 ? 2 : 1; /* 400: a bad argument, refused as it was made */
    }
    o = json_loadb(r.body, r.len, 0, NULL);
    id = (uint64_t)json_integer_value(json_object_get(o, "id"));
    printf("%s requested from %s (request %" PRIu64 ")\n", op,
           json_string_value(json_object_get(o, "node_name")) != NULL
               ? json_string_value(json_object_get(o, "node_name"))
               : base,
           id);
    json_decref(o);
    free(r.body);
    fflush(stdout);
    if (at > 0) {
        /* Scheduled: confirmed once the agent shows it. */
        for (int i = 0; i < 50 && !interrupted; i++) {
            struct timespec ts = {.tv_sec = 0, .tv_nsec = 100 * 1000 * 1000};
            bool shown;

            nanosleep(&ts, NULL);
            if (fetch_status(ctl, base, &o, why, sizeof(why)) < 0)
                continue;
            shown = (long long)json_integer_value(
                        json_object_get(o, "scheduled_switchover_unix_us")) == at * 1000000;
            json_decref(o);
            if (shown) {
                char when[64];
                time_t t = (time_t)at;
                struct tm tm;
                localtime_r(&t, &tm);
                strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S %Z", &tm);
                printf("switchover scheduled for %s; walmirrorctl status shows it, and its "
                       "outcome once it has run\n",
                       when);
                return 0;
            }
        }
        fprintf(stderr, "walmirrorctl: the agent did not confirm the schedule\n");
        return 1;
    }
    while (!interrupted && time(NULL) < deadline) {
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 200 * 1000 * 1000};
        const char *step, *result;
        json_t *unavail;
        bool ok;

        nanosleep(&ts, NULL);
        if (fetch_status(ctl, base, &o, why, sizeof(why)) < 0)
            continue; /* the agent may be changing roles: ask again */
        step = json_string_value(json_object_get(o, "op_step"));
        if ((uint64_t)json_integer_value(json_object_get(o, "op_id")) == id && step != NULL &&
            step[0] != '\0' && strcmp(step, last_step) != 0) {
            printf("  %s\n", step);
            fflush(stdout);
            snprintf(last_step, sizeof(last_step), "%s", step);
        }
        if ((uint64_t)json_integer_value(json_object_get(o, "last_op_id")) != id) {
            json_decref(o);
            continue;
        }
        ok = json_is_true(json_object_get(o, "last_op_ok"));
        result = json_string_value(json_object_get(o, "last_op_result"));
        unavail = json_object_get(o, "last_unavailability_us");
        printf("%s %s: %s\n", op, ok ? "done" : "FAILED", result != NULL ? result : "");
        if (ok && json_is_integer(unavail) && strcmp(op, "rejoin") != 0)
            printf("write-unavailability: %.3f s\n", (double)json_integer_value(unavail) / 1e6);
        json_decref(o);
        return ok ? 0 : 1;
    }
    fprintf(stderr, "walmirrorctl: %s: no outcome yet; follow it with walmirrorctl status\n",
            op);
    return 1;
}

static int
cmd_operation(const struct ctl *ctl, const char *op, const struct op_args *args)
{
    char query[300] = "";
    int i;

    if (strcmp(op, "switchover") == 0) {
        i = pick_agent(ctl, "source", "switchover (the primary's agent)");
        snprintf(query, sizeof(query), "?to=%s&max_lag=%s&at=%lld",
                 args->to != NULL ? args->to : "", args->max_lag != NULL ? args->max_lag : "0",
                 args->at);
    } else if (strcmp(op, "failover") == 0) {
        i = pick_agent(ctl, "sink", "failover (the standby's agent)");
        snprintf(query, sizeof(query), "%s",
                 args->accept_loss ? "?force=1&accept_data_loss=1"
                 : args->force     ? "?force=1"
                                   : "");
    } else {
        i = pick_agent(ctl, "fenced", "rejoin (the former primary's agent)");
    }
    if (i < 0)
        return 1;
    return run_operation(ctl, ctl->urls[i], op, query, args->at);
}

/* ---------------------------------------------------------------------------------------- */
/* maintenance: add, list, remove                                                            */

static const char *opt_value(int argc, char **argv, int *i, const char *name,
                             const char *shortname, bool *matched);

struct maint_args {
    const char *sub; /* "add", "list", "remove" */
    const char *id;  /* remove ID */
    const char *rrule, *start, *from, *at, *duration, *tz, *cls;
    bool switchover;
};

/* Appends "&key=value" (value percent-encoded) to q; false if it does not fit. */
static bool
query_add(char *q, size_t cap, const char *key, const char *value)
{
    size_t n = strlen(q);
    int k;

    if (value == NULL)
        return true;
    k = snprintf(q + n, cap - n, "%c%s=", n == 0 ? '?' : '&', key);
    if (k < 0 || (size_t)k >= cap - n)
        return false;
    n += (size_t)k;
    for (const unsigned char *p = (const unsigned char *)value; *p != '\0'; p++) {
        if (n + 4 >= cap)
            return false;
        if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
            strchr("-_.~", *p) != NULL)
            q[n++] = (char)*p;
        else
            n += (size_t)snprintf(q + n, cap - n, "%%%02X", *p);
    }
    q[n] = '\0';
    return true;
}

/* GET base/maintenance: the agent's JSON object in *out, or NULL with the reason printed. */
static int
fetch_maint(const struct ctl *ctl, const char *base, json_t **out)
{
    char url[CTL_URL_MAX + 16], msg[512];
    struct reply r;

    *out = NULL;
    snprintf(url, sizeof(url), "%s/maintenance", base);
    if (http_call(ctl, url, false, &r) < 0) {
        fprintf(stderr, "walmirrorctl: cannot reach the agent at %s: %s\n", url, r.why);
        return -1;
    }
    if (r.code != 200) {
        describe_refusal(&r, msg, sizeof(msg));
        fprintf(stderr, "walmirrorctl: the agent at %s answered %s\n", url, msg);
        free(r.body);
        return -1;
    }
    *out = json_loadb(r.body, r.len, 0, NULL);
    free(r.body);
    if (!json_is_object(*out) || !json_is_array(json_object_get(*out, "windows"))) {
        fprintf(stderr, "walmirrorctl: the agent at %s sent no list of windows\n", url);
        json_decref(*out);
        *out = NULL;
        return -1;
    }
    return 0;
}

/*
 * One window: its id, class, rule or date, zone, duration; then its next occurrences (the open
 * one first), each in the window's own zone and in UTC, as the agent wrote them.  An agent
 * that sends no "occurrences" gets the next start in UTC on the first line.
 */
static void
print_window(const json_t *w)
{
    const char *rule = json_string_value(json_object_get(w, "rrule"));
    json_int_t dur = json_integer_value(json_object_get(w, "duration_s"));
    bool active = json_is_true(json_object_get(w, "active"));
    const json_t *occ = json_object_get(w, "occurrences"), *e;
    const char *when = json_string_value(
        json_object_get(w, active ? "active_end_utc" : "next_start_utc"));
    char spec[400];
    size_t i;
    bool first_next = true;

    if (when == NULL)
        when = "";
    if (rule != NULL)
        snprintf(spec, sizeof(spec), "%s at %s from %s", rule, jstr(w, "start"), jstr(w, "date"));
    else
        snprintf(spec, sizeof(spec), "once at %s %s", jstr(w, "date"), jstr(w, "start"));
    printf("  %-4" JSON_INTEGER_FORMAT " %-8s %s %s, %" JSON_INTEGER_FORMAT
           "h%02" JSON_INTEGER_FORMAT "m%s",
           json_integer_value(json_object_get(w, "id")), jstr(w, "class"), spec, jstr(w, "tz"),
           dur / 3600, dur / 60 % 60,
           json_is_true(json_object_get(w, "switchover")) ? ", switchover" : "");
    if (!json_is_array(occ)) {
        printf(": %s%s\n",
               active            ? "ACTIVE until "
               : when[0] != '\0' ? "next "
                                 : "",
               when[0] != '\0' ? when : "over");
        return;
    }
    printf("%s\n", json_array_size(occ) == 0 ? ": over" : "");
    json_array_foreach(occ, i, e)
    {
        bool open = json_is_true(json_object_get(e, "active"));
        printf("       %-5s %s (%s)\n",
               open         ? "NOW"
               : first_next ? "next"
                            : "then",
               jstr(e, "local"), jstr(e, "utc"));
        if (!open)
            first_next = false;
    }
}

static int
maint_list(const struct ctl *ctl)
{
    json_t *all = json_array();
    int failed = 0;

    for (int i = 0; i < ctl->n_urls; i++) {
        json_t *o, *w;
        size_t k;

        if (fetch_maint(ctl, ctl->urls[i], &o) < 0) {
            failed++;
            continue;
        }
        if (ctl->json) {
            json_object_set_new(o, "url", json_string(ctl->urls[i]));
            json_array_append_new(all, o);
            continue;
        }
        printf("%s (%s): %s\n", jstr(o, "node_name"), ctl->urls[i], jstr(o, "maintenance"));
        if (json_array_size(json_object_get(o, "windows")) == 0)
            printf("  no maintenance windows\n");
        json_array_foreach(json_object_get(o, "windows"), k, w)
            print_window(w);
        json_decref(o);
    }
    if (ctl->json) {
        char *text = json_dumps(all, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        if (text != NULL)
            printf("%s\n", text);
        free(text);
    }
    json_decref(all);
    return failed == 0 ? 0 : 1;
}

/* The id for a new window: one past the highest on any agent, so every agent stores it under
 * the same id; 0 if an agent cannot be asked. */
static unsigned long long
maint_next_id(const struct ctl *ctl)
{
    unsigned long long next = 1;

    for (int i = 0; i < ctl->n_urls; i++) {
        json_t *o, *w;
        size_t k;

        if (fetch_maint(ctl, ctl->urls[i], &o) < 0)
            return 0;
        json_array_foreach(json_object_get(o, "windows"), k, w) {
            json_int_t id = json_integer_value(json_object_get(w, "id"));
            if (id >= 0 && (unsigned long long)id >= next)
                next = (unsigned long long)id + 1;
        }
        json_decref(o);
    }
    return next;
}

static int
maint_change(const struct ctl *ctl, const struct maint_args *m)
{
    char query[2048] = "", url[CTL_URL_MAX + sizeof(query) + 32], msg[512], idtext[32];
    bool add = strcmp(m->sub, "add") == 0;
    int failed = 0;

    if (add) {
        unsigned long long id = maint_next_id(ctl);
        if (id == 0)
            return 1;
        snprintf(idtext, sizeof(idtext), "%llu", id);
        if (!query_add(query, sizeof(query), "rrule", m->rrule) ||
            !query_add(query, sizeof(query), "start", m->start) ||
            !query_add(query, sizeof(query), "from", m->from) ||
            !query_add(query, sizeof(query), "at", m->at) ||
            !query_add(query, sizeof(query), "duration", m->duration) ||
            !query_add(query, sizeof(query), "tz", m->tz) ||
            !query_add(query, sizeof(query), "class", m->cls) ||
            !query_add(query, sizeof(query), "switchover", m->switchover ? "1" : NULL) ||
            !query_add(query, sizeof(query), "id", idtext)) {
            fprintf(stderr, "walmirrorctl: maintenance add: arguments too long\n");
            return 2;
        }
    }
    for (int i = 0; i < ctl->n_urls; i++) {
        struct reply r;
        json_t *o;
        const char *node;

        if (add)
            snprintf(url, sizeof(url), "%s/maintenance%s", ctl->urls[i], query);
        else
            snprintf(url, sizeof(url), "%s/maintenance/%s", ctl->urls[i], m->id);
        if (http_request(ctl, url, add ? "POST" : "DELETE", &r) < 0) {
            fprintf(stderr, "walmirrorctl: cannot reach the agent at %s: %s\n", ctl->urls[i],
                    r.why);
            failed++;
            continue;
        }
        if (r.code != (add ? 201 : 200)) {
            describe_refusal(&r, msg, sizeof(msg));
            fprintf(stderr, "walmirrorctl: the agent at %s answered %s\n", ctl->urls[i], msg);
            free(r.body);
            failed++;
            /* a refused window is refused by every agent alike: stop at the first */
            if (add && r.code == 400)
                return 2;
            continue;
        }
        o = json_loadb(r.body, r.len, 0, NULL);
        free(r.body);
        node = json_string_value(json_object_get(o, "node_name"));
        if (node == NULL || node[0] == '\0')
            node = ctl->urls[i];
        if (add) {
            printf("%s: window %s added\n", node, idtext);
            print_window(json_object_get(o, "added"));
        } else {
            printf("%s: window %s removed\n", node, m->id);
        }
        json_decref(o);
    }
    if (failed > 0 && failed < ctl->n_urls)
        fprintf(stderr, "walmirrorctl: the agents now disagree: repeat the command once all are "
                        "reachable (walmirrorctl maintenance list shows each)\n");
    return failed == 0 ? 0 : 1;
}

static int
cmd_maintenance(const struct ctl *ctl, const struct maint_args *m)
{
    if (strcmp(m->sub, "list") == 0)
        return maint_list(ctl);
    return maint_change(ctl, m);
}

/*
 * Parses the arguments after "maintenance" (argv[*i] is the word "maintenance"), up to the
 * end; --url may come among them.  Returns 0, -1 with a message for bad usage, or -2 with a
 * message for a window that maint_window_parse refuses.
 */
static int
parse_maint_args(int argc, char **argv, int *i, struct ctl *ctl, struct maint_args *m,
                 bool *want_json)
{
    static const char *const names[] = {"--rrule", "--start", "--from", "--at",
                                        "--duration", "--tz", "--class"};
    const char **slots[] = {&m->rrule, &m->start, &m->from, &m->at, &m->duration, &m->tz,
                            &m->cls};
    bool matched;

    for (++*i; *i < argc; ++*i) {
        const char *a = argv[*i], *v;
        bool done = false;

        for (size_t k = 0; k < sizeof(names) / sizeof(names[0]) && !done; k++) {
            v = opt_value(argc, argv, i, names[k], NULL, &matched);
            if (!matched)
                continue;
            if (v == NULL || *slots[k] != NULL) {
                fprintf(stderr, "walmirrorctl: maintenance: %s needs one value\n", names[k]);
                return -1;
            }
            *slots[k] = v;
            done = true;
        }
        if (done)
            continue;
        v = opt_value(argc, argv, i, "--url", NULL, &matched);
        if (matched) {
            if (v == NULL || add_url(ctl, v) < 0)
                return -1;
            continue;
        }
        if (strcmp(a, "--switchover") == 0) {
            m->switchover = true;
        } else if (strcmp(a, "--json") == 0) {
            *want_json = true;
        } else if (a[0] == '-') {
            fprintf(stderr, "walmirrorctl: maintenance: unknown option \"%s\"\n", a);
            return -1;
        } else if (m->sub == NULL) {
            m->sub = a;
        } else if (m->id == NULL && strcmp(m->sub, "remove") == 0) {
            m->id = a;
        } else {
            fprintf(stderr, "walmirrorctl: maintenance: unexpected \"%s\"\n", a);
            return -1;
        }
    }
    if (m->sub == NULL || (strcmp(m->sub, "add") != 0 && strcmp(m->sub, "list") != 0 &&
                           strcmp(m->sub, "remove") != 0)) {
        fprintf(stderr, "walmirrorctl: maintenance: add, list or remove expected\n");
        return -1;
    }
    if (strcmp(m->sub, "add") != 0 &&
        (m->rrule || m->start || m->from || m->at || m->duration || m->tz || m->cls ||
         m->switchover)) {
        fprintf(stderr, "walmirrorctl: maintenance %s takes no window options\n", m->sub);
        return -1;
    }
    if (*want_json && strcmp(m->sub, "list") != 0) {
        fprintf(stderr, "walmirrorctl: --json is for maintenance list\n");
        return -1;
    }
    if (strcmp(m->sub, "remove") == 0 &&
        (m->id == NULL || m->id[0] == '\0' || m->id[strspn(m->id, "0123456789")] != '\0')) {
        fprintf(stderr, "walmirrorctl: maintenance remove: a window's ID expected\n");
        return -1;
    }
    if (strcmp(m->sub, "add") == 0 &&
        (m->duration == NULL || m->tz == NULL || (m->rrule == NULL) == (m->at == NULL) ||
         (m->rrule != NULL && m->start == NULL))) {
        fprintf(stderr, "walmirrorctl: maintenance add: --rrule with --start, or --at; and "
                        "--duration and --tz\n");
        return -1;
    }
    if (strcmp(m->sub, "add") == 0) {
        /* The agents' own rules (maint.h), applied here first: a bad window is refused before
         * any agent is asked, with the same message. */
        struct maint_params p = {.rrule = m->rrule,
                                 .start = m->start,
                                 .from = m->from,
                                 .at = m->at,
                                 .duration = m->duration,
                                 .tz = m->tz,
                                 .cls = m->cls,
                                 .switchover = m->switchover ? "1" : NULL};
        struct maint_window w;
        char err[512];

        if (maint_window_parse(&w, &p, (int64_t)time(NULL), err, sizeof(err)) < 0) {
            fprintf(stderr, "walmirrorctl: maintenance add: %s\n", err);
            return -2;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* check: readiness for monitoring systems, Nagios plugin conventions                        */

enum check_state { CHECK_OK = 0, CHECK_WARNING = 1, CHECK_CRITICAL = 2, CHECK_UNKNOWN = 3 };

static const char *const check_names[] = {"OK", "WARNING", "CRITICAL", "UNKNOWN"};

/* A lag threshold: bytes ("16MB") or seconds ("5s"); which one, in *is_time. */
static bool
parse_lag(const char *v, double *out, bool *is_time)
{
    static const struct {
        const char *unit;
        double mult;
        bool time;
    } units[] = {{"B", 1, false},        {"kB", 1024, false}, {"MB", 1048576, false},
                 {"GB", 1073741824, false}, {"ms", 0.001, true}, {"s", 1, true},
                 {"min", 60, true},       {"h", 3600, true}};
    char *end;
    double n;

    if (v == NULL || v[0] < '0' || v[0] > '9')
        return false;
    errno = 0;
    n = strtod(v, &end);
    if (errno != 0 || !(n >= 0))
        return false;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
        if (strcmp(end, units[i].unit) == 0) {
            *out = n * units[i].mult;
            *is_time = units[i].time;
            return true;
        }
    return false;
}

struct check_args {
    double warn, crit;
    bool warn_time, crit_time;
    const char *warn_text, *crit_text; /* as given; NULL: the default */
};

/* A warning threshold above its critical one (both sizes or both durations) is refused: the
 * lag would be critical before it is warned about.  Returns 0, or -1 with the message. */
static int
check_thresholds(const struct check_args *ca, bool have_warn, bool have_crit)
{
    if (ca->warn_time != ca->crit_time || ca->warn <= ca->crit || (!have_warn && !have_crit))
        return 0;
    fprintf(stderr,
            "walmirrorctl: --lag-warning %s%s is above --lag-critical %s%s: the lag would be "
            "critical before it is warned about\n",
            ca->warn_text != NULL ? ca->warn_text : "16MB", have_warn ? "" : " (the default)",
            ca->crit_text != NULL ? ca->crit_text : "1GB", have_crit ? "" : " (the default)");
    return -1;
}

static void
worsen(enum check_state *s, enum check_state to, char *msg, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Raises *s to `to` and appends a problem to msg. */
static void
worsen(enum check_state *s, enum check_state to, char *msg, size_t cap, const char *fmt, ...)
{
    size_t n = strlen(msg);
    va_list ap;

    if (to > *s)
        *s = to;
    if (n + 3 >= cap)
        return;
    if (n > 0)
        n += (size_t)snprintf(msg + n, cap - n, "; ");
    va_start(ap, fmt);
    vsnprintf(msg + n, cap - n, fmt, ap);
    va_end(ap);
}

static double
json_num(json_t *o, const char *key, double dflt)
{
    json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : dflt;
}

static int
cmd_check(const struct ctl *ctl, const struct check_args *ca)
{
    enum check_state state = CHECK_OK;
    char problems[2048] = "", summary[1024] = "", perf[4096] = "", why[512];
    size_t sn = 0, pn = 0;

    for (int i = 0; i < ctl->n_urls; i++) {
        json_t *o;
        const char *node, *role, *sync, *op;
        double lag_s, lag_b, free_b, cert;

        if (fetch_status(ctl, ctl->urls[i], &o, why, sizeof(why)) < 0) {
            worsen(&state, CHECK_CRITICAL, problems, sizeof(problems), "%s", why);
            continue;
        }
        node = json_string_value(json_object_get(o, "node_name"));
        role = json_string_value(json_object_get(o, "role"));
        sync = json_string_value(json_object_get(o, "sync_state"));
        op = json_string_value(json_object_get(o, "operation"));
        node = node != NULL ? node : ctl->urls[i];
        role = role != NULL ? role : "?";
        lag_s = json_num(o, "apply_lag_s", -1);
        lag_b = json_num(o, "apply_lag_bytes", 0);
        free_b = json_num(o, "spool_free_bytes", -1);
        cert = json_num(o, "cert_not_after_unix", -1);
        if (sn < sizeof(summary))
            sn += (size_t)snprintf(summary + sn, sizeof(summary) - sn, "%s%s %s %s",
                                   sn > 0 ? ", " : "", node, role, sync != NULL ? sync : "?");
        if (strcmp(role, "fenced") == 0)
            worsen(&state, CHECK_CRITICAL, problems, sizeof(problems),
                   "%s is fenced (a former primary that must rejoin)", node);
        else if (strcmp(role, "witness") != 0) {
            if (!json_is_true(json_object_get(o, "link_up")))
                worsen(&state, CHECK_CRITICAL, problems, sizeof(problems),
                       "%s: link to its peer down", node);
            else if (json_is_true(json_object_get(o, "exposed")))
                worsen(&state, CHECK_CRITICAL, problems, sizeof(problems),
                       "%s: running exposed (commits acknowledged without the standby), %.0f "
                       "bytes at risk", node, json_num(o, "wal_at_risk_bytes", 0));
            else if (sync != NULL && strcmp(sync, "sync") != 0)
                worsen(&state,
                       strcmp(sync, "down") == 0 || strcmp(sync, "waiting") == 0
                           ? CHECK_CRITICAL
                           : CHECK_WARNING,
                       problems, sizeof(problems), "%s: %s", node,
                       strcmp(sync, "waiting") == 0 ? "waiting (commits wait for the standby)"
                                                    : sync);
            if (json_is_true(json_object_get(o, "stale")))
                worsen(&state, CHECK_CRITICAL, problems, sizeof(problems),
                       "%s: stale (its primary runs exposed: it may not be promoted)", node);
            /* The lag checked is the apply lag, in bytes or seconds as the thresholds say. */
            for (int k = 0; k < 2; k++) {
                double limit = k == 0 ? ca->crit : ca->warn;
                bool is_time = k == 0 ? ca->crit_time : ca->warn_time;
                double v = is_time ? lag_s : lag_b;
                if (v >= 0 && v > limit) {
                    char vt[32], lt[32];

                    if (is_time) {
                        snprintf(vt, sizeof(vt), "%.0fms", v * 1000);
                        snprintf(lt, sizeof(lt), "%.0fms", limit * 1000);
                    } else {
                        config_size_text((uint64_t)v, vt, sizeof(vt));
                        config_size_text((uint64_t)limit, lt, sizeof(lt));
                    }
                    worsen(&state, k == 0 ? CHECK_CRITICAL : CHECK_WARNING, problems,
                           sizeof(problems), "%s: apply lag %s over %s", node, vt, lt);
                    break;
                }
            }
        }
        if (op != NULL && strcmp(op, "none") != 0)
            worsen(&state, CHECK_WARNING, problems, sizeof(problems), "%s: %s running (%s)",
                   node, op, json_string_value(json_object_get(o, "op_step")));
        if (json_is_string(json_object_get(o, "spool_stall")))
            worsen(&state, CHECK_CRITICAL, problems, sizeof(problems),
                   "%s: spool stalled, commits wait (%s)", node,
                   json_string_value(json_object_get(o, "spool_stall")));
        /* a witness keeps no spool; an expiry of 0 (1970) is a field its agent never set */
        if (strcmp(role, "witness") != 0 && free_b >= 0 && free_b < 1073741824.0)
            worsen(&state, free_b < 268435456.0 ? CHECK_CRITICAL : CHECK_WARNING, problems,
                   sizeof(problems), "%s: %.0f MB free for the spool", node, free_b / 1048576);
        if (cert > 0) {
            double days = (cert - (double)time(NULL)) / 86400;
            if (days < 30)
                worsen(&state, days < 7 ? CHECK_CRITICAL : CHECK_WARNING, problems,
                       sizeof(problems), "%s: TLS certificate %s %.0f days", node,
                       days < 0 ? "expired" : "expires in", days < 0 ? -days : days);
        }
        if (pn < sizeof(perf)) {
            char wb[32] = "", cb[32] = "", ws[32] = "", cs[32] = "";
            /* Each threshold goes with the figure of its unit. */
            snprintf(ca->warn_time ? ws : wb, 32, "%.15g", ca->warn);
            snprintf(ca->crit_time ? cs : cb, 32, "%.15g", ca->crit);
            pn += (size_t)snprintf(perf + pn, sizeof(perf) - pn,
                                   "%s'%s_apply_lag_bytes'=%.0fB;%s;%s "
                                   "'%s_apply_lag_seconds'=%.3fs;%s;%s '%s_rtt_seconds'=%.6fs "
                                   "'%s_spool_free_bytes'=%.0fB",
                                   pn > 0 ? " " : "", node, lag_b, wb, cb, node,
                                   lag_s < 0 ? 0 : lag_s, ws, cs, node,
                                   json_num(o, "rtt_us", 0) / 1e6, node, free_b < 0 ? 0 : free_b);
        }
        json_decref(o);
    }
    if (problems[0] != '\0')
        printf("WALMIRROR %s - %s (%s) | %s\n", check_names[state], problems,
               summary[0] != '\0' ? summary : "no agent", perf);
    else
        printf("WALMIRROR %s - %s | %s\n", check_names[state],
               summary[0] != '\0' ? summary : "no agent", perf);
    return (int)state;
}

/* ---------------------------------------------------------------------------------------- */
/* report: tools/report.c                                                                    */

static int
cmd_report(const struct ctl *ctl, const struct report_args *a)
{
    const char *urls[CTL_MAX_AGENTS];

    for (int i = 0; i < ctl->n_urls; i++)
        urls[i] = ctl->urls[i];
    return report_run(a, urls, ctl->n_urls, ctl->token, &interrupted);
}

/* ---------------------------------------------------------------------------------------- */
/* main                                                                                      */

/* Parses a --watch interval: a number of seconds in (0, 86400]. */
static bool
parse_seconds(const char *s, double *out)
{
    char *end;
    double v;

    if (s == NULL || s[0] < '0' || s[0] > '9')
        return false;
    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || *end != '\0' || !(v > 0) || v > 86400)
        return false;
    *out = v;
    return true;
}

/* The value of option name at argv[*i] ("--name VALUE" or "--name=VALUE"), or NULL. */
static const char *
opt_value(int argc, char **argv, int *i, const char *name, const char *shortname, bool *matched)
{
    const char *a = argv[*i];
    size_t n = strlen(name);

    *matched = false;
    if (strncmp(a, name, n) == 0 && a[n] == '=') {
        *matched = true;
        return a + n + 1;
    }
    if (strcmp(a, name) == 0 || (shortname != NULL && strcmp(a, shortname) == 0)) {
        *matched = true;
        if (*i + 1 >= argc)
            return NULL;
        return argv[++*i];
    }
    return NULL;
}

int
main(int argc, char **argv)
{
    static struct ctl ctl;
    struct wm_config cfg;
    const char *config = NULL, *token_file = NULL, *command = NULL, *v;
    bool have_cfg = false, matched, want_json = false, want_watch = false, extra = false;
    struct op_args args = {0};
    struct maint_args maint = {0};
    struct check_args check = {.warn = 16 * 1048576.0, .crit = 1073741824.0};
    struct report_args report;
    bool have_warn = false, have_crit = false;
    struct sigaction sa;
    int rc = 1, taken;

    if (fleet_wanted(argc, argv))
        return fleet_main(argc, argv); /* its own options: fleet.h */
    memset(&cfg, 0, sizeof(cfg));
    report_args_init(&report);
    ctl.watch_s = 2;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];

        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(a, "--version") == 0 || strcmp(a, "-V") == 0) {
            printf("walmirrorctl %s\n", WALMIRROR_VERSION);
            return 0;
        }
        v = opt_value(argc, argv, &i, "--config", "-c", &matched);
        if (matched) {
            if (v == NULL || config != NULL)
                goto bad_usage;
            config = v;
            continue;
        }
        v = opt_value(argc, argv, &i, "--url", NULL, &matched);
        if (matched) {
            if (v == NULL || add_url(&ctl, v) < 0)
                goto bad_usage;
            continue;
        }
        v = opt_value(argc, argv, &i, "--token-file", NULL, &matched);
        if (matched) {
            if (v == NULL || token_file != NULL)
                goto bad_usage;
            token_file = v;
            continue;
        }
        if (strcmp(a, "--json") == 0) {
            want_json = true;
            continue;
        }
        v = opt_value(argc, argv, &i, "--to", NULL, &matched);
        if (matched) {
            if (v == NULL || args.to != NULL || v[strspn(v, "abcdefghijklmnopqrstuvwxyz"
                                                           "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")] != '\0')
                goto bad_usage;
            args.to = v;
            continue;
        }
        v = opt_value(argc, argv, &i, "--max-lag", NULL, &matched);
        if (matched) {
            if (v == NULL || args.max_lag != NULL || v[0] == '\0' ||
                v[strspn(v, "0123456789")] != '\0')
                goto bad_usage;
            args.max_lag = v;
            continue;
        }
        v = opt_value(argc, argv, &i, "--at", NULL, &matched);
        if (matched) {
            if (v == NULL || args.at != 0 || (args.at = parse_at(v)) < 0) {
                fprintf(stderr, "walmirrorctl: --at: \"%s\" is not YYYY-MM-DD HH:MM[:SS], "
                                "HH:MM or @SECONDS\n", v != NULL ? v : "");
                goto bad_usage;
            }
            continue;
        }
        v = opt_value(argc, argv, &i, "--lag-warning", NULL, &matched);
        if (matched) {
            if (v == NULL || have_warn || !parse_lag(v, &check.warn, &check.warn_time)) {
                fprintf(stderr, "walmirrorctl: --lag-warning: a size (16MB) or a duration "
                                "(5s) expected\n");
                return 3;
            }
            have_warn = true;
            check.warn_text = v;
            continue;
        }
        v = opt_value(argc, argv, &i, "--lag-critical", NULL, &matched);
        if (matched) {
            if (v == NULL || have_crit || !parse_lag(v, &check.crit, &check.crit_time)) {
                fprintf(stderr, "walmirrorctl: --lag-critical: a size (1GB) or a duration "
                                "(60s) expected\n");
                return 3;
            }
            have_crit = true;
            check.crit_text = v;
            continue;
        }
        if (strcmp(a, "--force") == 0) {
            args.force = true;
            continue;
        }
        if (strcmp(a, "--accept-data-loss") == 0) {
            args.accept_loss = true;
            continue;
        }
        if (strncmp(a, "--watch=", 8) == 0) {
            if (!parse_seconds(a + 8, &ctl.watch_s))
                goto bad_usage;
            want_watch = true;
            continue;
        }
        if (strcmp(a, "--watch") == 0) {
            want_watch = true;
            if (i + 1 < argc && parse_seconds(argv[i + 1], &ctl.watch_s))
                i++;
            continue;
        }
        taken = report_option(&report, argc, argv, &i);
        if (taken < 0)
            goto bad_usage;
        if (taken > 0)
            continue;
        if (a[0] == '-') {
            fprintf(stderr, "walmirrorctl: unknown option \"%s\"\n", a);
            goto bad_usage;
        }
        if (command == NULL && strcmp(a, "maintenance") == 0) {
            /* its own options (--at, --json, --url among them) up to the end */
            command = a;
            taken = parse_maint_args(argc, argv, &i, &ctl, &maint, &want_json);
            if (taken == -2)
                return 2; /* a bad window: its message is enough, without the usage */
            if (taken < 0)
                goto bad_usage;
            break;
        }
        if (command == NULL)
            command = a;
        else
            extra = true;
    }
    if (command == NULL)
        goto bad_usage;
    if (check_thresholds(&check, have_warn, have_crit) < 0)
        return 3;
    if (strcmp(command, "status") != 0 && strcmp(command, "pause") != 0 &&
        strcmp(command, "resume") != 0 && strcmp(command, "switchover") != 0 &&
        strcmp(command, "failover") != 0 && strcmp(command, "rejoin") != 0 &&
        strcmp(command, "check") != 0 && strcmp(command, "maintenance") != 0 &&
        strcmp(command, "report") != 0) {
        fprintf(stderr, "walmirrorctl: unknown command \"%s\"\n", command);
        goto bad_usage;
    }
    if (extra ||
        ((want_json || want_watch) && strcmp(command, "status") != 0 &&
         strcmp(command, "maintenance") != 0) ||
        (want_watch && strcmp(command, "maintenance") == 0) ||
        ((args.to != NULL || args.max_lag != NULL || args.at != 0) &&
         strcmp(command, "switchover") != 0) ||
        (args.force && strcmp(command, "failover") != 0) ||
        (args.accept_loss && (!args.force || strcmp(command, "failover") != 0)) ||
        ((have_warn || have_crit) && strcmp(command, "check") != 0) ||
        (report.given && strcmp(command, "report") != 0) ||
        (strcmp(command, "report") == 0 && report_args_check(&report) < 0))
        goto bad_usage;
    ctl.json = want_json;
    ctl.watch = want_watch;

    if (config != NULL) {
        if (load_config(config, &cfg) < 0)
            return 2;
        have_cfg = true;
        if (ctl.n_urls == 0 && url_of_listen(&ctl, &cfg.http_listen) < 0) {
            fprintf(stderr, "walmirrorctl: %s: http_listen too long for a URL\n", config);
            rc = 2;
            goto out;
        }
        if (token_file == NULL)
            token_file = cfg.http_token_file;
    }
    if (ctl.n_urls == 0 && add_url(&ctl, "http://127.0.0.1:8008") < 0)
        goto out;
    if (token_file != NULL && load_token(&ctl, token_file) < 0)
        goto out;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal; /* no SA_RESTART: the --watch sleep ends at once */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "walmirrorctl: cannot initialise libcurl\n");
        goto out;
    }
    if (strcmp(command, "status") == 0)
        rc = cmd_status(&ctl);
    else if (strcmp(command, "check") == 0)
        rc = cmd_check(&ctl, &check);
    else if (strcmp(command, "pause") == 0 || strcmp(command, "resume") == 0)
        rc = cmd_action(&ctl, command);
    else if (strcmp(command, "maintenance") == 0)
        rc = cmd_maintenance(&ctl, &maint);
    else if (strcmp(command, "report") == 0)
        rc = cmd_report(&ctl, &report);
    else
        rc = cmd_operation(&ctl, command, &args);
    curl_global_cleanup();
out:
    if (ctl.token != NULL) {
        memset(ctl.token, 0, strlen(ctl.token));
        free(ctl.token);
    }
    if (have_cfg)
        config_free(&cfg);
    return rc;

bad_usage:
    usage(stderr);
    /* A monitoring plugin's bad usage is UNKNOWN (3), as Nagios expects. */
    return command != NULL && strcmp(command, "check") == 0 ? 3 : 2;
}
