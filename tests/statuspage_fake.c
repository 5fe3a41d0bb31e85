/*
 * statuspage_fake.c - the local stand-in for Statuspage's REST API (contract in
 * statuspage_fake.h).
 *
 * libmicrohttpd with its own thread: the access handler is called once when the headers have
 * arrived (the arrival time is taken then), once per piece of body, and once at the end, when
 * the request is recorded and answered.  One mutex guards the log, the script and the
 * component's status.
 */
#include "statuspage_fake.h"

#include <errno.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SPFAKE_LOG_MAX 4096

struct spfake {
    struct MHD_Daemon *daemon;
    int port;
    char key[256], page[128], component[128], metric[128];
    pthread_mutex_t lock;
    struct spfake_request *log;
    size_t n;
    int script_n, script_status;
    char script_retry_after[128];
    char status[32]; /* the component's, "" before any PATCH */
};

/* One request while its body arrives. */
struct pending {
    struct spfake_request r;
    size_t len;
};

static const char *const valid_statuses[] = {"operational", "degraded_performance",
                                             "partial_outage", "major_outage", "under_maintenance"};

static double
clock_s(clockid_t id)
{
    struct timespec ts;

    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static enum MHD_Result
answer(struct MHD_Connection *c, int status, json_t *body, const char *retry_after)
{
    char *text = body != NULL ? json_dumps(body, JSON_COMPACT) : NULL;
    struct MHD_Response *resp;
    enum MHD_Result ret;

    json_decref(body);
    if (text == NULL)
        text = strdup("{}");
    if (text == NULL)
        return MHD_NO;
    resp = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    if (resp == NULL) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (retry_after != NULL)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, retry_after);
    ret = MHD_queue_response(c, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static json_t *
error_body(const char *msg)
{
    return json_pack("{s:s}", "error", msg);
}

/* Splits path into the page and what follows "/v1/pages/{page}/": kind "components" or
 * "metrics", its id, and for metrics the tail ("data").  False if path is not of that form. */
static bool
split_path(const char *path, char *page, char *kind, char *id, char *tail)
{
    char extra;
    int n;

    page[0] = kind[0] = id[0] = tail[0] = '\0';
    n = sscanf(path, "/v1/pages/%127[^/]/%31[^/]/%127[^/]/%31[^/]%c", page, kind, id, tail, &extra);
    return n == 3 || n == 4;
}

/* Judges and answers one complete request; f->lock held.  Returns the status sent. */
static int
respond(struct spfake *f, struct MHD_Connection *c, struct spfake_request *r, enum MHD_Result *ret)
{
    char page[128], kind[32], id[128], tail[32], want_auth[300];
    json_t *o, *inner, *v;
    bool component;

    if (f->script_n > 0) {
        int status = f->script_status;
        f->script_n--;
        *ret = answer(c, status, error_body("scripted answer"),
                      f->script_retry_after[0] != '\0' ? f->script_retry_after : NULL);
        return status;
    }
    snprintf(want_auth, sizeof(want_auth), "OAuth %s", f->key);
    if (strcmp(r->auth, want_auth) != 0) {
        *ret = answer(c, 401, error_body("Could not authenticate"), NULL);
        return 401;
    }
    if (!split_path(r->path, page, kind, id, tail) || strcmp(page, f->page) != 0) {
        *ret = answer(c, 404, error_body("The requested resource could not be found."), NULL);
        return 404;
    }
    component = strcmp(kind, "components") == 0 && tail[0] == '\0' && strcmp(id, f->component) == 0;
    if (!component && !(strcmp(kind, "metrics") == 0 && strcmp(tail, "data") == 0 &&
                        strcmp(id, f->metric) == 0)) {
        *ret = answer(c, 404, error_body("The requested resource could not be found."), NULL);
        return 404;
    }
    if (strcmp(r->method, component ? "PATCH" : "POST") != 0) {
        *ret = answer(c, 405, error_body("method not allowed"), NULL);
        return 405;
    }
    o = json_loads(r->body, 0, NULL);
    inner = json_object_get(o, component ? "component" : "data");
    if (component) {
        const char *st = json_string_value(json_object_get(inner, "status"));
        bool valid = false;
        if (st == NULL) {
            json_decref(o);
            *ret = answer(c, 400, error_body("component[status] is missing"), NULL);
            return 400;
        }
        for (size_t i = 0; i < sizeof(valid_statuses) / sizeof(valid_statuses[0]); i++)
            valid = valid || strcmp(st, valid_statuses[i]) == 0;
        if (!valid) {
            json_decref(o);
            *ret = answer(c, 422, error_body("Status is not included in the list"), NULL);
            return 422;
        }
        snprintf(f->status, sizeof(f->status), "%s", st);
        *ret = answer(c, 200,
                      json_pack("{s:s,s:s,s:s,s:s,s:s}", "id", f->component, "page_id", f->page,
                                "name", "walmirror", "status", st, "updated_at",
                                "2026-01-01T00:00:00Z"),
                      NULL);
        json_decref(o);
        return 200;
    }
    v = json_object_get(inner, "value");
    if (!json_is_integer(json_object_get(inner, "timestamp")) || !json_is_number(v)) {
        json_decref(o);
        *ret = answer(c, 400, error_body("data[timestamp] and data[value] are required"), NULL);
        return 400;
    }
    *ret = answer(c, 201, json_pack("{s:O}", "data", inner), NULL);
    json_decref(o);
    return 201;
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
           const char *version, const char *upload_data, size_t *upload_data_size, void **req)
{
    struct spfake *f = cls;
    struct pending *p = *req;
    const char *h;
    enum MHD_Result ret = MHD_NO;

    (void)version;
    if (p == NULL) {
        p = calloc(1, sizeof(*p));
        if (p == NULL)
            return MHD_NO;
        p->r.mono_s = clock_s(CLOCK_MONOTONIC);
        p->r.real_s = clock_s(CLOCK_REALTIME);
        snprintf(p->r.method, sizeof(p->r.method), "%s", method);
        snprintf(p->r.path, sizeof(p->r.path), "%s", url);
        h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
        snprintf(p->r.auth, sizeof(p->r.auth), "%s", h != NULL ? h : "");
        h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
        snprintf(p->r.ctype, sizeof(p->r.ctype), "%s", h != NULL ? h : "");
        *req = p;
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        size_t room = sizeof(p->r.body) - 1 - p->len;
        size_t take = *upload_data_size < room ? *upload_data_size : room;
        memcpy(p->r.body + p->len, upload_data, take);
        p->len += take;
        p->r.body[p->len] = '\0';
        *upload_data_size = 0;
        return MHD_YES;
    }
    pthread_mutex_lock(&f->lock);
    p->r.answered = respond(f, c, &p->r, &ret);
    if (f->n < SPFAKE_LOG_MAX)
        f->log[f->n++] = p->r;
    pthread_mutex_unlock(&f->lock);
    return ret;
}

static void
on_completed(void *cls, struct MHD_Connection *c, void **req, enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    free(*req);
    *req = NULL;
}

int
spfake_start(struct spfake **out, int port, const char *key, const char *page_id,
             const char *component_id, const char *metric_id)
{
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    const union MHD_DaemonInfo *info;
    struct spfake *f = calloc(1, sizeof(*f));

    *out = NULL;
    if (f == NULL)
        return -ENOMEM;
    f->log = calloc(SPFAKE_LOG_MAX, sizeof(*f->log));
    if (f->log == NULL) {
        free(f);
        return -ENOMEM;
    }
    snprintf(f->key, sizeof(f->key), "%s", key);
    snprintf(f->page, sizeof(f->page), "%s", page_id);
    snprintf(f->component, sizeof(f->component), "%s", component_id);
    snprintf(f->metric, sizeof(f->metric), "%s", metric_id);
    pthread_mutex_init(&f->lock, NULL);
    f->daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL,
                                 on_request, f, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sin,
                                 MHD_OPTION_NOTIFY_COMPLETED, on_completed, f, MHD_OPTION_END);
    if (f->daemon == NULL) {
        pthread_mutex_destroy(&f->lock);
        free(f->log);
        free(f);
        return -EADDRINUSE;
    }
    info = MHD_get_daemon_info(f->daemon, MHD_DAEMON_INFO_BIND_PORT);
    f->port = info != NULL ? info->port : 0;
    if (f->port == 0) {
        spfake_stop(f);
        return -EIO;
    }
    *out = f;
    return 0;
}

int
spfake_port(const struct spfake *f)
{
    return f->port;
}

void
spfake_script(struct spfake *f, int n, int status, const char *retry_after)
{
    pthread_mutex_lock(&f->lock);
    f->script_n = n;
    f->script_status = status;
    snprintf(f->script_retry_after, sizeof(f->script_retry_after), "%s",
             retry_after != NULL ? retry_after : "");
    pthread_mutex_unlock(&f->lock);
}

size_t
spfake_count(struct spfake *f)
{
    size_t n;

    pthread_mutex_lock(&f->lock);
    n = f->n;
    pthread_mutex_unlock(&f->lock);
    return n;
}

bool
spfake_get(struct spfake *f, size_t i, struct spfake_request *out)
{
    bool ok;

    pthread_mutex_lock(&f->lock);
    ok = i < f->n;
    if (ok)
        *out = f->log[i];
    pthread_mutex_unlock(&f->lock);
    return ok;
}

void
spfake_component_status(struct spfake *f, char *buf, size_t cap)
{
    pthread_mutex_lock(&f->lock);
    snprintf(buf, cap, "%s", f->status);
    pthread_mutex_unlock(&f->lock);
}

void
spfake_stop(struct spfake *f)
{
    if (f == NULL)
        return;
    if (f->daemon != NULL)
        MHD_stop_daemon(f->daemon);
    pthread_mutex_destroy(&f->lock);
    free(f->log);
    free(f);
}
