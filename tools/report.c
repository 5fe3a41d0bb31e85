/*
 * report.c - walmirrorctl report: the pair's state pushed to a Statuspage-compatible service
 * (contract, status rule and failure semantics in report.h).
 *
 * One context (struct report) and one loop with two deadlines: the next poll of the agents,
 * and the service's gate (not_before), before which no request goes to the service - the gate
 * is what Retry-After and the backoff after a failure set, for both kinds of request alike.
 * Each turn polls when the poll is due, then sends what is due (the status first, then the lag
 * point) while the gate is open, then sleeps until the nearer deadline that matters.
 *
 * What is due: the status when the one wanted differs from the one the service last accepted
 * (and was not refused with a 4xx); the lag point of the last poll until it is accepted or a
 * newer poll replaces it (a metric is a series of samples: a newer sample makes an older one
 * not worth a retry).  A PATCH whose answer was lost is sent again: PATCH is idempotent.
 *
 * It is a separate process from the agents and every request has a connect and a total
 * timeout, so a slow service or agent delays only the next report, never replication.
 */
#include "report.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h> /* isfinite: a macro, no libm */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define REPORT_MAX_AGENTS 16
#define REPORT_URL_MAX 1024
#define REPORT_ID_MAX 128
#define REPORT_KEY_MAX 4096
#define REPORT_BODY_MAX (1024 * 1024)
/* The agents: as walmirrorctl's other commands (CTL_*_TIMEOUT_MS). */
#define REPORT_AGENT_CONNECT_TIMEOUT_MS 2000L
#define REPORT_AGENT_TIMEOUT_MS 5000L
/* The service is across the Internet. */
#define REPORT_API_CONNECT_TIMEOUT_MS 5000L
#define REPORT_API_TIMEOUT_MS 15000L
#define REPORT_SLEEP_SLICE_S 0.25      /* the longest sleep between looks at *stop */
#define REPORT_RETRY_AFTER_MAX_S 86400 /* a longer Retry-After is taken as a day */

/* Statuspage's component statuses; the order is severity, maintenance aside (it wins). */
enum report_state {
    RS_OPERATIONAL,
    RS_DEGRADED,
    RS_PARTIAL,
    RS_MAJOR,
    RS_MAINTENANCE,
    RS_COUNT,
};

static const char *const state_names[RS_COUNT] = {
    [RS_OPERATIONAL] = "operational",       [RS_DEGRADED] = "degraded_performance",
    [RS_PARTIAL] = "partial_outage",        [RS_MAJOR] = "major_outage",
    [RS_MAINTENANCE] = "under_maintenance",
};

/* The agents' component ids (agent/statuspage.h), by enum report_component. */
static const char *const component_names[] = {
    [REPORT_OVERALL] = "overall",
    [REPORT_DATABASE] = "database",
    [REPORT_MIRROR] = "mirror",
    [REPORT_LINK] = "link",
};

/* What became of one request to the service. */
enum push_outcome {
    PUSH_OK,      /* accepted */
    PUSH_RETRY,   /* 429, 5xx, no answer: the gate is set, sent again once it opens */
    PUSH_DROPPED, /* another 4xx: not sent again */
    PUSH_FATAL,   /* 401, 403, 404: the configuration is wrong */
};

struct report {
    const struct report_args *args;
    const char *const *agents;
    int n_agents;
    char *agent_auth; /* "Authorization: Bearer ..." or NULL */
    char *api_auth;   /* "Authorization: OAuth ..." */
    char component_url[REPORT_URL_MAX];
    char metric_url[REPORT_URL_MAX];
    const volatile sig_atomic_t *stop;

    int agent_up[REPORT_MAX_AGENTS]; /* -1 unknown, 0, 1: to log changes only */
    int failed_polls;                /* consecutive polls that no agent answered */
    bool answered;                   /* the last poll heard an agent */

    int want;     /* the status wanted, -1 unknown yet */
    int accepted; /* the status the service last accepted, -1 none */
    bool refused; /* the service refused `want` with a 4xx: not due until it changes */

    bool point_due;
    long long point_unix; /* the lag point: when polled */
    double point_s;       /* the worst lag, seconds */

    double next_poll;  /* monotonic seconds */
    double not_before; /* the gate */
    double backoff_s;  /* the last wait after a failure; 0 after a success */
};

/* One answer. */
struct reply {
    long code; /* HTTP status; 0 when there was none */
    char *body;
    size_t len;
    char retry_after[64]; /* the Retry-After header, "" if none */
    char why[CURL_ERROR_SIZE + 64];
};

static double
mono_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double
min_s(double a, double b)
{
    return a < b ? a : b;
}

/* ---------------------------------------------------------------------------------------- */
/* Options                                                                                   */

void
report_args_init(struct report_args *a)
{
    memset(a, 0, sizeof(*a));
    a->interval_s = 60;
    a->component = REPORT_OVERALL;
}

/* A duration: a number with ms, s, m, min or h (bare: seconds), in [1 s, 1 day]. */
static bool
parse_interval(const char *v, double *out)
{
    static const struct {
        const char *unit;
        double mult;
    } units[] = {{"", 1}, {"ms", 0.001}, {"s", 1}, {"m", 60}, {"min", 60}, {"h", 3600}};
    char *end;
    double n;

    if (v[0] < '0' || v[0] > '9')
        return false;
    errno = 0;
    n = strtod(v, &end);
    if (errno != 0 || !isfinite(n))
        return false;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
        if (strcmp(end, units[i].unit) == 0) {
            n *= units[i].mult;
            if (n < 1 || n > 86400)
                return false;
            *out = n;
            return true;
        }
    return false;
}

static bool
valid_id(const char *v)
{
    size_t n = strlen(v);

    return n > 0 && n <= REPORT_ID_MAX &&
           v[strspn(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")] == '\0';
}

/* The value of option name at argv[*i] ("--name VALUE" or "--name=VALUE"); *matched says
 * whether argv[*i] is that option; NULL when its value is missing. */
static const char *
opt_value(int argc, char **argv, int *i, const char *name, bool *matched)
{
    const char *a = argv[*i];
    size_t n = strlen(name);

    *matched = false;
    if (strncmp(a, name, n) == 0 && a[n] == '=') {
        *matched = true;
        return a + n + 1;
    }
    if (strcmp(a, name) != 0)
        return NULL;
    *matched = true;
    if (*i + 1 >= argc)
        return NULL;
    return argv[++*i];
}

int
report_option(struct report_args *a, int argc, char **argv, int *i)
{
    static const char *const names[] = {"--statuspage", "--page-id", "--component-id",
                                        "--metric-id", "--api-key-file"};
    const char **slots[] = {&a->statuspage, &a->page_id, &a->component_id, &a->metric_id,
                            &a->api_key_file};
    const char *v;
    bool matched;

    if (strcmp(argv[*i], "--once") == 0) {
        a->once = a->given = true;
        return 1;
    }
    for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
        v = opt_value(argc, argv, i, names[k], &matched);
        if (!matched)
            continue;
        if (v == NULL || v[0] == '\0' || *slots[k] != NULL) {
            fprintf(stderr, "walmirrorctl: report: %s needs one value\n", names[k]);
            return -EINVAL;
        }
        if (k >= 1 && k <= 3 && !valid_id(v)) {
            fprintf(stderr,
                    "walmirrorctl: report: %s \"%s\": letters, digits, '_' and '-' "
                    "expected\n",
                    names[k], v);
            return -EINVAL;
        }
        *slots[k] = v;
        a->given = true;
        return 1;
    }
    v = opt_value(argc, argv, i, "--interval", &matched);
    if (matched) {
        if (v == NULL || !parse_interval(v, &a->interval_s)) {
            fprintf(stderr, "walmirrorctl: report: --interval: a duration from 1s to 24h "
                            "expected (e.g. 60s, 5m)\n");
            return -EINVAL;
        }
        a->given = true;
        return 1;
    }
    v = opt_value(argc, argv, i, "--component", &matched);
    if (matched) {
        for (int c = REPORT_OVERALL; v != NULL && c <= REPORT_LINK; c++)
            if (strcmp(v, component_names[c]) == 0) {
                a->component = (enum report_component)c;
                a->given = true;
                return 1;
            }
        fprintf(stderr, "walmirrorctl: report: --component: overall, database, mirror or "
                        "link expected\n");
        return -EINVAL;
    }
    return 0;
}

int
report_args_check(const struct report_args *a)
{
    if (a->statuspage == NULL || a->page_id == NULL || a->component_id == NULL ||
        a->api_key_file == NULL) {
        fprintf(stderr, "walmirrorctl: report needs --statuspage, --page-id, --component-id "
                        "and --api-key-file\n");
        return -EINVAL;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Set-up: the key, the URLs                                                                 */

/*
 * Reads the API key from path: the file less trailing whitespace, one line, not empty.
 * Warns when other users may read it.  Returns 0 with a malloc'd key in *out, or a negative
 * errno with the reason logged.
 */
static int
load_key(const char *path, char **out)
{
    char *buf;
    struct stat st;
    ssize_t got;
    size_t n = 0;
    int fd, rc = 0;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        log_error("report", "cannot open the API key file %s: %s", path, strerror(-rc));
        return rc;
    }
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        log_error("report", "cannot read the API key file %s: %s", path, strerror(-rc));
        close(fd);
        return rc;
    }
    if (!S_ISREG(st.st_mode)) {
        log_error("report", "the API key file %s is not a regular file", path);
        close(fd);
        return -EINVAL;
    }
    if ((st.st_mode & S_IROTH) != 0)
        log_warning("report",
                    "the API key file %s is readable by every user (mode %04o): "
                    "chmod o-r it",
                    path, (unsigned)(st.st_mode & 07777));
    buf = malloc(REPORT_KEY_MAX + 2);
    if (buf == NULL) {
        close(fd);
        return -ENOMEM;
    }
    while (n <= REPORT_KEY_MAX) {
        got = read(fd, buf + n, REPORT_KEY_MAX + 1 - n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            rc = -errno;
            break;
        }
        if (got == 0)
            break;
        n += (size_t)got;
    }
    close(fd);
    if (rc == 0 && n > REPORT_KEY_MAX)
        rc = -EFBIG;
    if (rc < 0) {
        log_error("report", "cannot read the API key file %s: %s", path,
                  rc == -EFBIG ? "too long" : strerror(-rc));
        free(buf);
        return rc;
    }
    while (n > 0 &&
           (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' || buf[n - 1] == '\t'))
        n--;
    buf[n] = '\0';
    for (size_t k = 0; k < n && rc == 0; k++)
        if ((unsigned char)buf[k] < 0x20 || (unsigned char)buf[k] == 0x7f)
            rc = -EINVAL;
    if (n == 0 || rc < 0) {
        log_error("report", "the API key file %s holds no single-line key", path);
        memset(buf, 0, REPORT_KEY_MAX + 2);
        free(buf);
        return -EINVAL;
    }
    *out = buf;
    return 0;
}

/* The service's URLs from --statuspage and the ids; -ENAMETOOLONG when they do not fit. */
static int
build_urls(struct report *r)
{
    const struct report_args *a = r->args;
    const char *scheme = strstr(a->statuspage, "://") != NULL ? "" : "https://";
    size_t n = strlen(a->statuspage);
    int k;

    while (n > 0 && a->statuspage[n - 1] == '/')
        n--;
    if (n > REPORT_URL_MAX / 2)
        return -ENAMETOOLONG;
    k = snprintf(r->component_url, sizeof(r->component_url), "%s%.*s/v1/pages/%s/components/%s",
                 scheme, (int)n, a->statuspage, a->page_id, a->component_id);
    if (k < 0 || (size_t)k >= sizeof(r->component_url))
        return -ENAMETOOLONG;
    if (a->metric_id == NULL)
        return 0;
    k = snprintf(r->metric_url, sizeof(r->metric_url), "%s%.*s/v1/pages/%s/metrics/%s/data", scheme,
                 (int)n, a->statuspage, a->page_id, a->metric_id);
    if (k < 0 || (size_t)k >= sizeof(r->metric_url))
        return -ENAMETOOLONG;
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* HTTP                                                                                      */

static size_t
on_body(char *data, size_t size, size_t nmemb, void *ud)
{
    struct reply *h = ud;
    size_t n = size * nmemb;
    char *p;

    if (h->len + n > REPORT_BODY_MAX)
        return 0; /* makes curl fail with CURLE_WRITE_ERROR */
    p = realloc(h->body, h->len + n + 1);
    if (p == NULL)
        return 0;
    h->body = p;
    memcpy(h->body + h->len, data, n);
    h->len += n;
    h->body[h->len] = '\0';
    return n;
}

/* Keeps the Retry-After header of the final answer. */
static size_t
on_header(char *data, size_t size, size_t nmemb, void *ud)
{
    struct reply *h = ud;
    size_t n = size * nmemb, k = 12;

    if (n >= 5 && strncmp(data, "HTTP/", 5) == 0) {
        h->retry_after[0] = '\0'; /* a new answer (after a 100 Continue) */
    } else if (n > k && strncasecmp(data, "Retry-After:", k) == 0) {
        while (k < n && (data[k] == ' ' || data[k] == '\t'))
            k++;
        while (n > k && (data[n - 1] == '\r' || data[n - 1] == '\n' || data[n - 1] == ' '))
            n--;
        snprintf(h->retry_after, sizeof(h->retry_after), "%.*s", (int)(n - k), data + k);
    }
    return size * nmemb;
}

static int
on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
    const volatile sig_atomic_t *stop = ud;

    (void)dltotal;
    (void)dlnow;
    (void)ultotal;
    (void)ulnow;
    return *stop ? 1 : 0; /* non-zero aborts the transfer */
}

/*
 * Sends method ("GET", "PATCH", "POST") to url with the header auth (may be NULL) and the JSON
 * body json (NULL: none).  Returns 0 when an answer came (whatever its status; h->body is then
 * malloc'd, the caller frees it), -EIO with h->why set when none did, -ENOMEM.
 */
static WM_MUSTCHECK int
http_send(const struct report *r, const char *method, const char *url, const char *auth,
          const char *json, bool to_api, struct reply *h)
{
    char errbuf[CURL_ERROR_SIZE] = "";
    struct curl_slist *headers = NULL, *more;
    const char *lines[4] = {"Accept: application/json", "Expect:", auth,
                            json != NULL ? "Content-Type: application/json" : NULL};
    long oserr = 0;
    CURL *c;
    CURLcode rc;
    int ret = -EIO;

    memset(h, 0, sizeof(*h));
    c = curl_easy_init();
    if (c == NULL) {
        snprintf(h->why, sizeof(h->why), "cannot set up libcurl");
        return -ENOMEM;
    }
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        if (lines[i] == NULL)
            continue;
        more = curl_slist_append(headers, lines[i]);
        if (more == NULL) {
            snprintf(h->why, sizeof(h->why), "out of memory");
            ret = -ENOMEM;
            goto out;
        }
        headers = more;
    }
    if (curl_easy_setopt(c, CURLOPT_URL, url) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
                         to_api ? REPORT_API_CONNECT_TIMEOUT_MS
                                : REPORT_AGENT_CONNECT_TIMEOUT_MS) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS,
                         to_api ? REPORT_API_TIMEOUT_MS : REPORT_AGENT_TIMEOUT_MS) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_WRITEDATA, h) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_HEADERDATA, h) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_XFERINFODATA, (void *)r->stop) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L) != CURLE_OK ||
        (json != NULL &&
         (curl_easy_setopt(c, CURLOPT_POSTFIELDS, json) != CURLE_OK ||
          curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(json)) != CURLE_OK)) ||
        (strcmp(method, "GET") != 0 &&
         curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method) != CURLE_OK)) {
        snprintf(h->why, sizeof(h->why), "cannot set up libcurl");
        goto out;
    }
    rc = curl_easy_perform(c);
    if (rc != CURLE_OK) {
        curl_easy_getinfo(c, CURLINFO_OS_ERRNO, &oserr);
        if (rc == CURLE_ABORTED_BY_CALLBACK)
            snprintf(h->why, sizeof(h->why), "interrupted");
        else if (oserr != 0 && rc == CURLE_COULDNT_CONNECT)
            snprintf(h->why, sizeof(h->why), "%s", strerror((int)oserr));
        else
            snprintf(h->why, sizeof(h->why), "%s",
                     errbuf[0] != '\0' ? errbuf : curl_easy_strerror(rc));
        free(h->body);
        h->body = NULL;
        h->len = 0;
        goto out;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &h->code);
    if (h->body == NULL && (h->body = strdup("")) == NULL) {
        snprintf(h->why, sizeof(h->why), "out of memory");
        ret = -ENOMEM;
        goto out;
    }
    ret = 0;
out:
    curl_slist_free_all(headers);
    curl_easy_cleanup(c);
    return ret;
}

/* "STATUS excerpt": the answer in one short line, for people. */
static void
describe(const struct reply *h, char *buf, size_t cap)
{
    json_t *o = json_loadb(h->body != NULL ? h->body : "", h->len, 0, NULL);
    const char *msg = json_string_value(json_object_get(o, "error"));
    char one[160];

    if (msg == NULL)
        msg = json_string_value(json_object_get(o, "message"));
    log_one_line(one, sizeof(one), msg != NULL ? msg : h->body != NULL ? h->body : "");
    snprintf(buf, cap, "%ld%s%s", h->code, one[0] != '\0' ? " " : "", one);
    json_decref(o);
}

/*
 * Seconds to wait from a Retry-After value: delta-seconds, or an HTTP date (counted from the
 * start of the current second, so the wait is never short); from 1 s to a day.  False if
 * neither.
 */
static bool
retry_after_s(const char *v, double *out)
{
    time_t when;
    double d;

    if (v[0] == '\0')
        return false;
    if (v[strspn(v, "0123456789")] == '\0') {
        d = strlen(v) > 6 ? REPORT_RETRY_AFTER_MAX_S : strtod(v, NULL);
    } else {
        when = curl_getdate(v, NULL);
        if (when == (time_t)-1)
            return false;
        d = difftime(when, time(NULL));
    }
    /* At least a second: a service answering 429 with "0" or a past date is not hammered. */
    *out = d < 1 ? 1 : d > REPORT_RETRY_AFTER_MAX_S ? REPORT_RETRY_AFTER_MAX_S : d;
    return true;
}

/*
 * Sorts the service's answer to what (a status push or a lag point) into an outcome, setting
 * the gate for a retry and logging what was wrong.  notfound names what a 404 means.
 */
static enum push_outcome
judge(struct report *r, int sent, const struct reply *h, const char *what, const char *notfound)
{
    char text[CURL_ERROR_SIZE + 160];
    double wait;

    if (sent == 0 && h->code >= 200 && h->code < 300) {
        r->backoff_s = 0;
        return PUSH_OK;
    }
    if (sent == 0)
        describe(h, text, sizeof(text));
    else
        snprintf(text, sizeof(text), "no answer: %s", h->why);
    if (sent == 0 && h->code == 429 && retry_after_s(h->retry_after, &wait)) {
        r->not_before = mono_s() + wait;
        log_warning("report", "%s: rate limited (%s): nothing sent for %.0f s (Retry-After: %s)",
                    what, text, wait, h->retry_after);
        return PUSH_RETRY;
    }
    if (sent < 0 || h->code == 429 || h->code >= 500) {
        r->backoff_s = r->backoff_s == 0 ? 1 : min_s(r->backoff_s * 2, REPORT_BACKOFF_MAX_S);
        r->not_before = mono_s() + r->backoff_s;
        log_warning("report", "%s: %s: retrying in %.0f s", what, text, r->backoff_s);
        return PUSH_RETRY;
    }
    if (h->code == 401 || h->code == 403) {
        log_error("report",
                  "%s: the service refused the API key from %s (%s): check "
                  "--api-key-file",
                  what, r->args->api_key_file, text);
        return PUSH_FATAL;
    }
    if (h->code == 404) {
        log_error("report", "%s: %s (%s)", what, notfound, text);
        return PUSH_FATAL;
    }
    log_error("report", "%s: refused (%s): not sent again", what, text);
    return PUSH_DROPPED;
}

/* No body could be made: tried again in a second, like a failed request. */
static enum push_outcome
out_of_memory(struct report *r)
{
    log_error("report", "out of memory");
    r->not_before = mono_s() + 1;
    return PUSH_RETRY;
}

/* ---------------------------------------------------------------------------------------- */
/* Polling the agents                                                                        */

/* GET base+path as a JSON object; -1 with the reason in why. */
static int
agent_get(const struct report *r, const char *base, const char *path, json_t **out, char *why,
          size_t cap)
{
    char url[REPORT_URL_MAX + 64], text[256];
    struct reply h;
    json_t *o;
    int n;

    *out = NULL;
    n = snprintf(url, sizeof(url), "%s%s", base, path);
    if (n < 0 || (size_t)n >= sizeof(url)) {
        snprintf(why, cap, "URL too long");
        return -1;
    }
    if (http_send(r, "GET", url, r->agent_auth, NULL, false, &h) < 0) {
        snprintf(why, cap, "cannot reach %s: %s", url, h.why);
        return -1;
    }
    if (h.code != 200) {
        describe(&h, text, sizeof(text));
        snprintf(why, cap, "%s answered %s", url, text);
        free(h.body);
        return -1;
    }
    o = json_loadb(h.body, h.len, 0, NULL);
    free(h.body);
    if (!json_is_object(o)) {
        snprintf(why, cap, "%s sent no JSON object", url);
        json_decref(o);
        return -1;
    }
    *out = o;
    return 0;
}

/* Folds state st into *acc (-1: nothing yet): under_maintenance wins, else the worse. */
static void
fold(int *acc, int st)
{
    if (*acc == RS_MAINTENANCE)
        return;
    if (st == RS_MAINTENANCE || st > *acc)
        *acc = st;
}

/* The agent's view from its summary folded into *acc; -1 if the summary has no component of
 * ours. */
static int
fold_summary(const struct report *r, const json_t *summary, int *acc)
{
    const json_t *c;
    size_t i;
    int seen = 0;

    json_array_foreach(json_object_get(summary, "components"), i, c)
    {
        const char *id = json_string_value(json_object_get(c, "id"));
        const char *status = json_string_value(json_object_get(c, "status"));
        int k, st = -1;

        if (id == NULL || status == NULL)
            continue;
        for (k = REPORT_DATABASE; k <= REPORT_LINK; k++)
            if (strcmp(id, component_names[k]) == 0)
                break;
        if (k > REPORT_LINK ||
            (r->args->component != REPORT_OVERALL && k != (int)r->args->component))
            continue;
        for (int s = 0; s < RS_COUNT; s++)
            if (strcmp(status, state_names[s]) == 0)
                st = s;
        if (st < 0)
            continue;
        fold(acc, st);
        seen++;
    }
    return seen > 0 ? 0 : -1;
}

/* The worse of the flush and apply lag in seconds in an agent's /status; -1 if unknown. */
static double
status_lag_s(const json_t *status)
{
    static const char *const keys[] = {"flush_lag_s", "apply_lag_s"};
    double worst = -1;

    for (size_t k = 0; k < 2; k++) {
        const json_t *v = json_object_get(status, keys[k]);
        if (json_is_number(v) && json_number_value(v) >= 0 && json_number_value(v) > worst)
            worst = json_number_value(v);
    }
    return worst;
}

static void
set_want(struct report *r, int st)
{
    if (st != r->want) {
        r->want = st;
        r->refused = false;
    }
}

/* One poll of every agent: the status wanted, the lag point. */
static void
poll_agents(struct report *r)
{
    int want = -1, answered = 0;
    double lag = -1;
    char why[REPORT_URL_MAX + 512];

    for (int i = 0; i < r->n_agents && !*r->stop; i++) {
        json_t *o;
        int up = agent_get(r, r->agents[i], "/api/v2/summary.json", &o, why, sizeof(why)) == 0;

        if (up && fold_summary(r, o, &want) < 0) {
            snprintf(why, sizeof(why), "%s/api/v2/summary.json has no %s component", r->agents[i],
                     component_names[r->args->component]);
            up = 0;
        }
        json_decref(o);
        if (up != r->agent_up[i]) {
            if (up)
                log_info("report", "the agent at %s answers", r->agents[i]);
            else
                log_warning("report", "the agent at %s: %s", r->agents[i], why);
            r->agent_up[i] = up;
        }
        if (!up)
            continue;
        answered++;
        if (r->args->metric_id != NULL &&
            agent_get(r, r->agents[i], "/status", &o, why, sizeof(why)) == 0) {
            double v = status_lag_s(o);
            if (v > lag)
                lag = v;
            json_decref(o);
        }
    }
    if (*r->stop)
        return;
    r->answered = answered > 0;
    if (answered == 0) {
        r->failed_polls++;
        if (r->failed_polls == REPORT_UNREACHABLE_POLLS)
            log_warning("report", "no agent answered %d polls in a row: reporting %s",
                        REPORT_UNREACHABLE_POLLS, state_names[RS_MAJOR]);
        if (r->failed_polls >= REPORT_UNREACHABLE_POLLS)
            set_want(r, RS_MAJOR);
    } else {
        r->failed_polls = 0;
        set_want(r, want);
    }
    if (r->args->metric_id != NULL && lag >= 0) {
        r->point_due = true;
        r->point_unix = (long long)time(NULL);
        r->point_s = lag;
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Pushing                                                                                   */

static bool
status_due(const struct report *r)
{
    return r->want >= 0 && r->want != r->accepted && !r->refused;
}

static enum push_outcome
push_status(struct report *r)
{
    json_t *o = json_pack("{s:{s:s}}", "component", "status", state_names[r->want]);
    char *body = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
    char what[REPORT_ID_MAX + 64], notfound[2 * REPORT_ID_MAX + 160];
    enum push_outcome res;
    struct reply h;
    int sent;

    json_decref(o);
    if (body == NULL)
        return out_of_memory(r);
    snprintf(what, sizeof(what), "component %s", r->args->component_id);
    snprintf(notfound, sizeof(notfound),
             "no page %s or no component %s on it: check --page-id and --component-id",
             r->args->page_id, r->args->component_id);
    sent = http_send(r, "PATCH", r->component_url, r->api_auth, body, true, &h);
    free(body);
    res = judge(r, sent, &h, what, notfound);
    if (res == PUSH_OK) {
        log_info("report", "component %s: %s pushed (%s%s)", r->args->component_id,
                 state_names[r->want], r->accepted < 0 ? "first push" : "was ",
                 r->accepted < 0 ? "" : state_names[r->accepted]);
        r->accepted = r->want;
    } else if (res == PUSH_DROPPED) {
        r->refused = true;
    }
    free(h.body);
    return res;
}

static enum push_outcome
push_point(struct report *r)
{
    json_t *o = json_pack("{s:{s:I,s:f}}", "data", "timestamp", (json_int_t)r->point_unix, "value",
                          r->point_s);
    char *body = o != NULL ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(6)) : NULL;
    char what[REPORT_ID_MAX + 64], notfound[2 * REPORT_ID_MAX + 160];
    enum push_outcome res;
    struct reply h;
    int sent;

    json_decref(o);
    if (body == NULL)
        return out_of_memory(r);
    snprintf(what, sizeof(what), "metric %s", r->args->metric_id);
    snprintf(notfound, sizeof(notfound),
             "no page %s or no metric %s on it: check --page-id and --metric-id", r->args->page_id,
             r->args->metric_id);
    sent = http_send(r, "POST", r->metric_url, r->api_auth, body, true, &h);
    free(body);
    res = judge(r, sent, &h, what, notfound);
    if (res == PUSH_OK)
        log_info("report", "metric %s: %.3f s at %lld pushed", r->args->metric_id, r->point_s,
                 r->point_unix);
    if (res == PUSH_OK || res == PUSH_DROPPED)
        r->point_due = false;
    free(h.body);
    return res;
}

/* Sends what is due while the gate is open: the status, then the lag point.  Returns the first
 * outcome that is not PUSH_OK, else PUSH_OK. */
static enum push_outcome
push_due(struct report *r)
{
    enum push_outcome res;

    if (status_due(r) && mono_s() >= r->not_before && !*r->stop) {
        res = push_status(r);
        if (res != PUSH_OK)
            return res;
    }
    if (r->point_due && mono_s() >= r->not_before && !*r->stop) {
        res = push_point(r);
        if (res != PUSH_OK)
            return res;
    }
    return PUSH_OK;
}

/* Sleeps until deadline (monotonic seconds) or *stop, in slices so that a signal that lands
 * just before the sleep is seen within REPORT_SLEEP_SLICE_S. */
static void
sleep_until(const struct report *r, double deadline)
{
    double now, d;
    struct timespec ts;

    while (!*r->stop && (now = mono_s()) < deadline) {
        d = min_s(deadline - now, REPORT_SLEEP_SLICE_S);
        ts.tv_sec = (time_t)d;
        ts.tv_nsec = (long)((d - (double)ts.tv_sec) * 1e9);
        nanosleep(&ts, NULL); /* EINTR: the loop looks at *stop */
    }
}

static void
free_secret(char *s)
{
    if (s != NULL) {
        memset(s, 0, strlen(s));
        free(s);
    }
}

int
report_run(const struct report_args *a, const char *const *agents, int n_agents,
           const char *agent_token, const volatile sig_atomic_t *stop)
{
    struct report r;
    enum push_outcome res = PUSH_OK;
    char *key = NULL;
    double wake;
    int rc = 1;

    memset(&r, 0, sizeof(r));
    r.args = a;
    r.agents = agents;
    r.n_agents = n_agents;
    r.stop = stop;
    r.want = r.accepted = -1;
    for (int i = 0; i < REPORT_MAX_AGENTS; i++)
        r.agent_up[i] = -1;
    if (n_agents < 1 || n_agents > REPORT_MAX_AGENTS) {
        log_error("report", "from 1 to %d agents, not %d", REPORT_MAX_AGENTS, n_agents);
        return 1;
    }
    if (build_urls(&r) < 0) {
        log_error("report", "--statuspage URL too long");
        return 1;
    }
    if (load_key(a->api_key_file, &key) < 0 || key == NULL)
        return 1;
    if (asprintf(&r.api_auth, "Authorization: OAuth %s", key) < 0)
        r.api_auth = NULL;
    free_secret(key);
    if (agent_token != NULL && asprintf(&r.agent_auth, "Authorization: Bearer %s", agent_token) < 0)
        r.agent_auth = NULL;
    if (r.api_auth == NULL || (agent_token != NULL && r.agent_auth == NULL)) {
        log_error("report", "out of memory");
        goto out;
    }
    log_info("report", "reporting %s of %d agent%s to %s every %g s%s%s",
             component_names[a->component], n_agents, n_agents == 1 ? "" : "s", r.component_url,
             a->interval_s, a->metric_id != NULL ? ", lag to " : "",
             a->metric_id != NULL ? r.metric_url : "");

    if (a->once) {
        poll_agents(&r);
        if (*stop)
            goto out;
        if (!r.answered) {
            log_error("report", "no agent answered: nothing pushed");
            goto out;
        }
        if (a->metric_id != NULL && !r.point_due)
            log_warning("report", "no agent knows its lag in seconds: no data point");
        res = push_status(&r);
        if (res == PUSH_OK && r.point_due)
            res = push_point(&r);
        rc = res == PUSH_OK ? 0 : 1;
        goto out;
    }

    r.next_poll = mono_s();
    while (!*stop) {
        if (mono_s() >= r.next_poll) {
            poll_agents(&r);
            r.next_poll += a->interval_s;
            if (r.next_poll <= mono_s())
                r.next_poll = mono_s() + a->interval_s; /* the poll took longer than a turn */
        }
        res = push_due(&r);
        if (res == PUSH_FATAL)
            goto out;
        wake = r.next_poll;
        if ((status_due(&r) || r.point_due) && r.not_before < wake)
            wake = r.not_before;
        sleep_until(&r, wake);
    }
    log_info("report", "stopped");
    rc = 0;
out:
    free_secret(r.api_auth);
    free_secret(r.agent_auth);
    return rc;
}
