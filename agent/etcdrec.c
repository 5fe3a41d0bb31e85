/*
 * etcdrec.c - a walmirror pair's keys in etcd and their JSON; contract in etcdrec.h.
 */
#include "etcdrec.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "msg.h"
#include "pgproto.h"
#include "util.h"

#define ETCDREC_VERSION 1

static const char *const role_names[] = {"unknown", "source", "sink", "witness"};

int
etcdrec_role_parse(const char *name)
{
    for (int i = 0; i < (int)(sizeof(role_names) / sizeof(role_names[0])); i++)
        if (strcmp(name, role_names[i]) == 0)
            return i;
    return -1;
}

static json_t *
lsn_json(uint64_t lsn)
{
    char buf[PGP_LSN_BUFSZ];

    pgp_lsn_format(lsn, buf);
    return json_string(buf);
}

static json_t *
seconds_json(double s)
{
    return s >= 0 && isfinite(s) ? json_real(s) : json_null();
}

static char *
dump(json_t *j)
{
    char *text = j != NULL ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;

    json_decref(j);
    return text;
}

char *
etcdrec_member_json(const struct etcdrec_member *m)
{
    return dump(json_pack(
        "{s:i, s:s, s:s, s:I, s:o, s:I, s:s, s:I, s:I, s:o, s:o, s:I, s:I}", "version",
        ETCDREC_VERSION, "node", m->node, "role", msg_role_name(m->role), "epoch",
        (json_int_t)m->epoch, "durable_lsn", lsn_json(m->durable_lsn), "timeline",
        (json_int_t)m->timeline, "sync_state", m->sync_state, "flush_lag_bytes",
        (json_int_t)m->flush_lag_bytes, "apply_lag_bytes", (json_int_t)m->apply_lag_bytes,
        "flush_lag_s", seconds_json(m->flush_lag_s), "apply_lag_s", seconds_json(m->apply_lag_s),
        "wal_at_risk_bytes", (json_int_t)m->wal_at_risk_bytes, "updated_unix_us",
        (json_int_t)m->updated_unix_us));
}

char *
etcdrec_epoch_json(const struct wm_state *st)
{
    return dump(json_pack("{s:i, s:I, s:s, s:I, s:o, s:I}", "version", ETCDREC_VERSION, "epoch",
                          (json_int_t)st->epoch, "holder", st->primary, "changed_unix_us",
                          (json_int_t)st->changed_unix_us, "exposed_lsn", lsn_json(st->exposed_lsn),
                          "exposed_unix_us", (json_int_t)st->exposed_unix_us));
}

/* ---- reading ---- */

struct reader {
    json_t *root;
    const char *what; /* "liveness record", "epoch record" */
    char *err;
    size_t errlen;
};

static int
open_record(struct reader *rd, const char *text, size_t len)
{
    json_error_t jerr;

    rd->root = json_loadb(text, len, 0, &jerr);
    if (rd->root == NULL)
        return wm_einval(rd->err, rd->errlen, "%s is not JSON: %s", rd->what, jerr.text);
    if (!json_is_object(rd->root))
        return wm_einval(rd->err, rd->errlen, "%s is not a JSON object", rd->what);
    return 0;
}

/* A whole number >= min; absent: *out = dflt, or an error if required. */
static int
get_uint(struct reader *rd, const char *field, bool required, uint64_t min, uint64_t dflt,
         uint64_t *out)
{
    json_t *v = json_object_get(rd->root, field);

    if (v == NULL && !required) {
        *out = dflt;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) < min)
        return wm_einval(rd->err, rd->errlen, "%s: \"%s\" is %s", rd->what, field,
                         v == NULL ? "missing" : "not a valid whole number");
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

static int
get_lsn(struct reader *rd, const char *field, uint64_t *out)
{
    const char *s = json_string_value(json_object_get(rd->root, field));

    *out = 0;
    if (s == NULL && json_object_get(rd->root, field) == NULL)
        return 0;
    if (s == NULL || pgp_lsn_parse(s, strlen(s), out) < 0)
        return wm_einval(rd->err, rd->errlen, "%s: \"%s\" is not an LSN (X/X)", rd->what, field);
    return 0;
}

/* A name of the node-name alphabet into out[cap] ("" allowed when empty_ok). */
static int
get_name(struct reader *rd, const char *field, bool empty_ok, char *out, size_t cap)
{
    const char *s = json_string_value(json_object_get(rd->root, field));
    size_t n = s != NULL ? strlen(s) : 0;

    if (s == NULL || n >= cap || (n == 0 && !empty_ok))
        return wm_einval(rd->err, rd->errlen, "%s: \"%s\" is missing or not a node name", rd->what,
                         field);
    for (size_t i = 0; i < n; i++) {
        char c = s[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-'))
            return wm_einval(rd->err, rd->errlen, "%s: \"%s\" is not a node name", rd->what, field);
    }
    memcpy(out, s, n + 1);
    return 0;
}

static double
get_seconds(struct reader *rd, const char *field)
{
    json_t *v = json_object_get(rd->root, field);

    return json_is_number(v) && json_number_value(v) >= 0 ? json_number_value(v) : -1;
}

int
etcdrec_member_parse(const char *text, size_t len, struct etcdrec_member *m, char *err,
                     size_t errlen)
{
    struct reader rd = {.what = "liveness record", .err = err, .errlen = errlen};
    const char *role, *sync;
    uint64_t tli = 0;
    int r, rc;

    memset(m, 0, sizeof(*m));
    rc = open_record(&rd, text, len);
    if (rc == 0)
        rc = get_name(&rd, "node", false, m->node, sizeof(m->node));
    if (rc == 0) {
        role = json_string_value(json_object_get(rd.root, "role"));
        r = role != NULL ? etcdrec_role_parse(role) : -1;
        if (r < 0)
            rc = wm_einval(err, errlen, "liveness record of %s: \"role\" is missing or unknown",
                           m->node);
        else
            m->role = (uint8_t)r;
    }
    if (rc == 0)
        rc = get_uint(&rd, "epoch", true, 1, 0, &m->epoch);
    if (rc == 0)
        rc = get_lsn(&rd, "durable_lsn", &m->durable_lsn);
    if (rc == 0)
        rc = get_uint(&rd, "timeline", false, 0, 0, &tli);
    if (rc == 0 && tli > UINT32_MAX)
        rc = wm_einval(err, errlen, "liveness record of %s: \"timeline\" is out of range", m->node);
    m->timeline = (uint32_t)tli;
    if (rc == 0)
        rc = get_uint(&rd, "flush_lag_bytes", false, 0, 0, &m->flush_lag_bytes);
    if (rc == 0)
        rc = get_uint(&rd, "apply_lag_bytes", false, 0, 0, &m->apply_lag_bytes);
    if (rc == 0)
        rc = get_uint(&rd, "wal_at_risk_bytes", false, 0, 0, &m->wal_at_risk_bytes);
    if (rc == 0)
        rc = get_uint(&rd, "updated_unix_us", false, 0, 0, &m->updated_unix_us);
    if (rc == 0) {
        m->flush_lag_s = get_seconds(&rd, "flush_lag_s");
        m->apply_lag_s = get_seconds(&rd, "apply_lag_s");
        sync = json_string_value(json_object_get(rd.root, "sync_state"));
        snprintf(m->sync_state, sizeof(m->sync_state), "%s", sync != NULL ? sync : "");
    }
    json_decref(rd.root);
    if (rc < 0)
        memset(m, 0, sizeof(*m));
    return rc;
}

int
etcdrec_epoch_parse(const char *text, size_t len, struct wm_state *st, char *err, size_t errlen)
{
    struct reader rd = {.what = "epoch record", .err = err, .errlen = errlen};
    int rc;

    state_init(st);
    rc = open_record(&rd, text, len);
    if (rc == 0)
        rc = get_uint(&rd, "epoch", true, 1, 0, &st->epoch);
    if (rc == 0)
        rc = get_name(&rd, "holder", true, st->primary, sizeof(st->primary));
    if (rc == 0)
        rc = get_uint(&rd, "changed_unix_us", false, 0, 0, &st->changed_unix_us);
    if (rc == 0)
        rc = get_lsn(&rd, "exposed_lsn", &st->exposed_lsn);
    if (rc == 0)
        rc = get_uint(&rd, "exposed_unix_us", false, 0, 0, &st->exposed_unix_us);
    json_decref(rd.root);
    if (rc < 0)
        state_init(st);
    return rc;
}

/* ---- keys ---- */

static bool
has_suffix(const char *key, size_t len, const char *suffix, size_t *at)
{
    size_t n = strlen(suffix);

    if (len < n || memcmp(key + len - n, suffix, n) != 0)
        return false;
    *at = len - n;
    return true;
}

enum etcdrec_key
etcdrec_classify(const char *prefix, const char *key, size_t len, const char **name,
                 size_t *name_len)
{
    size_t p = strlen(prefix), m = strlen(ETCDREC_MEMBERS);
    const char *rest;
    size_t n;

    if (len <= p || memcmp(key, prefix, p) != 0)
        return ETCDREC_KEY_OTHER;
    rest = key + p;
    n = len - p;
    if (n == strlen(ETCDREC_EPOCH) && memcmp(rest, ETCDREC_EPOCH, n) == 0)
        return ETCDREC_KEY_EPOCH;
    if (n == strlen(ETCDREC_PAUSED) && memcmp(rest, ETCDREC_PAUSED, n) == 0)
        return ETCDREC_KEY_PAUSED;
    if (n > m && memcmp(rest, ETCDREC_MEMBERS, m) == 0 && memchr(rest + m, '/', n - m) == NULL) {
        *name = rest + m;
        *name_len = n - m;
        return ETCDREC_KEY_MEMBER;
    }
    return ETCDREC_KEY_OTHER;
}

enum etcdrec_key
etcdrec_split(const char *key, size_t len, size_t *pair_len)
{
    size_t at;

    if (has_suffix(key, len, "/" ETCDREC_EPOCH, &at)) {
        *pair_len = at + 1;
        return ETCDREC_KEY_EPOCH;
    }
    if (has_suffix(key, len, "/" ETCDREC_PAUSED, &at)) {
        *pair_len = at + 1;
        return ETCDREC_KEY_PAUSED;
    }
    /* ".../members/NODE": the last "/members/" with a name after it and no '/' in the name */
    for (size_t i = len; i-- > 0;) {
        if (key[i] == '/') {
            size_t m = strlen("/" ETCDREC_MEMBERS);

            if (i + 1 == len || i + 1 < m)
                return ETCDREC_KEY_OTHER;
            if (memcmp(key + i + 1 - m, "/" ETCDREC_MEMBERS, m) != 0)
                return ETCDREC_KEY_OTHER;
            *pair_len = i + 2 - m;
            return ETCDREC_KEY_MEMBER;
        }
    }
    return ETCDREC_KEY_OTHER;
}

void
etcdrec_default_prefix(char *out, size_t cap, const char *a, const char *b)
{
    if (strcmp(a, b) > 0) {
        const char *t = a;

        a = b;
        b = t;
    }
    snprintf(out, cap, ETCDREC_ROOT "%s+%s/", a, b);
}

/* ---- etcd_endpoints: the list of URLs (config.c checks it, etcd.c connects to it) ---- */

static bool
host_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '-' || ch == '.' || ch == '_';
}

/* One entry s[0..len): "http(s)://host:port[/]". */
static int
parse_endpoint(const char *s, size_t len, char *url, char *err, size_t errlen)
{
    size_t skip, i, port_start;
    unsigned long port = 0;

    if (len > 0 && s[len - 1] == '/')
        len--;
    if (len >= 7 && strncasecmp(s, "http://", 7) == 0)
        skip = 7;
    else if (len >= 8 && strncasecmp(s, "https://", 8) == 0)
        skip = 8;
    else
        return wm_einval(err, errlen, "\"%.*s\" is not an http:// or https:// URL", (int)len, s);
    if (len >= ETCD_URL_MAX)
        return wm_einval(err, errlen, "\"%.*s...\" is longer than %d characters", 40, s,
                         ETCD_URL_MAX - 1);
    i = skip;
    if (i < len && s[i] == '[') {
        while (i < len && s[i] != ']')
            i++;
        if (i == len)
            return wm_einval(err, errlen, "\"%.*s\" has '[' without ']'", (int)len, s);
        i++;
    } else {
        while (i < len && host_char(s[i]))
            i++;
    }
    if (i == skip || (s[skip] == '[' && i == skip + 2))
        return wm_einval(err, errlen, "\"%.*s\" names no host", (int)len, s);
    if (i == len)
        return wm_einval(err, errlen, "\"%.*s\" lacks a port (etcd's client port is usually 2379)",
                         (int)len, s);
    if (s[i] != ':')
        return wm_einval(err, errlen,
                         "\"%.*s\": unexpected '%c' after the host (a URL of a member: "
                         "scheme, host and port only)",
                         (int)len, s, s[i]);
    port_start = ++i;
    while (i < len && s[i] >= '0' && s[i] <= '9') {
        if (port <= 65535)
            port = port * 10 + (unsigned long)(s[i] - '0');
        i++;
    }
    if (i < len)
        return wm_einval(err, errlen,
                         "\"%.*s\": unexpected '%c' after the port (no path, query or user)",
                         (int)len, s, s[i]);
    if (i == port_start || port < 1 || port > 65535)
        return wm_einval(err, errlen, "\"%.*s\" has no port in 1..65535", (int)len, s);
    memcpy(url, s, len);
    url[len] = '\0';
    for (i = 0; i < skip; i++) /* the scheme in lower case, as libcurl wants it */
        url[i] = (char)(url[i] >= 'A' && url[i] <= 'Z' ? url[i] - 'A' + 'a' : url[i]);
    return 0;
}

int
etcd_endpoints_parse(const char *list, char urls[][ETCD_URL_MAX], int max, char *err, size_t errlen)
{
    const char *p = list, *end = list + strlen(list);
    int n = 0;

    for (;;) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *e = comma != NULL ? comma : end, *b = p;
        char sub[400];

        while (b < e && wm_is_space(*b))
            b++;
        while (e > b && wm_is_space(e[-1]))
            e--;
        if (b == e)
            return wm_einval(err, errlen,
                             "empty entry in the list; expected 'https://host:2379, ...'");
        if (n == max)
            return wm_einval(err, errlen, "more than %d endpoints", max);
        if (parse_endpoint(b, (size_t)(e - b), urls[n], sub, sizeof(sub)) < 0)
            return wm_einval(err, errlen, "endpoint %d: %s", n + 1, sub);
        for (int i = 0; i < n; i++)
            if (strcmp(urls[i], urls[n]) == 0)
                return wm_einval(err, errlen, "endpoint %s is listed twice", urls[n]);
        n++;
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    return n;
}
