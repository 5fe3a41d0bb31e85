/*
 * etcd.c - the client of etcd's v3 JSON gateway; contract in etcd.h.
 *
 * Why libcurl's multi interface on the ring rather than a thread of its own: the arbiter's
 * state lives on the loop, and every answer changes it; with a thread, each answer would cross
 * a mailbox back to the loop anyway, and cancelling a request on the loop (a vote's deadline)
 * would race with the thread finishing it.  Driving libcurl from the loop keeps one thread,
 * one owner of every field, and cancellation that is final the moment it returns.  What it
 * costs is the socket bookkeeping below.
 *
 * Sockets (struct etcd_sock): libcurl's socket callback says, per socket, IN, OUT, INOUT or
 * REMOVE.  Each socket has an fdwatch (fdwatch.h): a wanted direction gets a single-shot poll;
 * when it completes, curl_multi_socket_action() is told, then the poll is re-armed if libcurl
 * still wants that direction.  REMOVE releases the watch (its polls in flight are removed,
 * which also lets the kernel release a socket libcurl has closed; the watch frees itself once
 * they are back) and frees the socket's record - after the socket_action in progress for it,
 * if any.  libcurl's one timeout is the timer of one more fdwatch, which watches no fd.
 *
 * Requests (struct etcd_req): one easy handle each, on the client's list until freed.  libcurl
 * appends what arrives to the request's buffer (its write callback does nothing else); after
 * each socket_action the pump delivers: a watch's complete lines as messages, and the finished
 * transfers (unary answers, resends to the next endpoint, watch ends).  No owner callback runs
 * inside a libcurl callback, so owners may add and remove transfers freely; a request
 * cancelled during a pump is freed at the pump's end (the pump may still hold it).
 */
#include "etcd.h"

#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fdwatch.h"
#include "log.h"
#include "util.h"

#define ETCD_WATCH_BUF_MAX (4u << 20) /* unparsed bytes a watch may hold */

struct etcd_endpoint {
    char url[ETCD_URL_MAX];
    char why[200]; /* why it failed last; "" once it answered */
    int kind;      /* of that failure (enum fail_kind); 0 once it answered */
};

/* Kinds of failure, so that a failure is logged once, not at each retry with new timings. */
enum fail_kind {
    FAIL_HTTP = 1000,    /* + the HTTP status */
    FAIL_MESSAGE = 2000, /* etcd's error message on a watch */
    FAIL_GARBLED,        /* a watch line that is not a message */
    FAIL_CLOSED,         /* the member ended a watch */
};

struct etcd_sock;

struct etcd_client {
    struct wio_loop *loop;
    CURLM *multi;
    struct fdwatch *timer; /* libcurl's timeout; watches no fd */
    struct curl_slist *headers;
    struct etcd_endpoint ep[ETCD_ENDPOINTS_MAX];
    int n_ep;
    int current;
    char *ca, *cert, *key;
    unsigned connect_ms, request_ms;
    char comp[96];
    struct etcd_sock *socks; /* the sockets libcurl has asked us to watch */
    struct etcd_req *reqs;   /* every request not yet freed */
    int depth;               /* inside a pump: frees are deferred */
    char why[ETCD_WHY_MAX];
};

struct etcd_sock {
    struct etcd_client *c;
    struct etcd_sock *next;
    struct fdwatch *w;
    curl_socket_t fd;
    int want;    /* CURL_POLL_IN | CURL_POLL_OUT bits */
    bool acting; /* inside curl_multi_socket_action for this socket: free it after */
    bool gone;   /* libcurl is done with it (REMOVE) */
};

enum req_kind {
    REQ_CALL,
    REQ_WATCH,
};

struct etcd_req {
    struct etcd_client *c;
    struct etcd_req *prev, *next;
    enum req_kind kind;
    char method[48];
    char *body; /* the request's JSON text */
    CURL *easy;
    bool in_multi;
    int endpoint; /* where the current attempt goes */
    int tried;    /* endpoints tried for it */
    char *buf;    /* what arrived, NUL-terminated */
    size_t len, cap;
    size_t parsed; /* watch: bytes of buf already delivered */
    bool overflow;
    char errbuf[CURL_ERROR_SIZE];
    bool finished; /* the transfer is over: the pump delivers */
    CURLcode result;
    bool cancelled; /* no callback; freed at the pump's end */
    bool ended;     /* a watch whose end has been told */
    etcd_done_fn done;
    etcd_msg_fn on_msg;
    void *ctx;
};

static void
update_why(struct etcd_client *c)
{
    size_t used = 0;

    c->why[0] = '\0';
    for (int i = 0; i < c->n_ep; i++) {
        int n;

        if (c->ep[i].why[0] == '\0')
            continue;
        n = snprintf(c->why + used, sizeof(c->why) - used, "%s%s: %s", used > 0 ? "; " : "",
                     c->ep[i].url, c->ep[i].why);
        if (n < 0 || (size_t)n >= sizeof(c->why) - used)
            break;
        used += (size_t)n;
    }
}

/*
 * Endpoint i did not answer (kind: a CURLcode or an enum fail_kind): remember why, and move on
 * from it if it is the current one.  Logged when the kind of failure changes.
 */
static void
endpoint_failed(struct etcd_client *c, int i, int kind, const char *why)
{
    if (c->ep[i].kind != kind)
        log_warning(c->comp, "%s: %s", c->ep[i].url, why);
    c->ep[i].kind = kind;
    snprintf(c->ep[i].why, sizeof(c->ep[i].why), "%s", why);
    if (c->current == i && c->n_ep > 1) {
        c->current = (i + 1) % c->n_ep;
        log_info(c->comp, "trying %s next", c->ep[c->current].url);
    }
    update_why(c);
}

static void
endpoint_ok(struct etcd_client *c, int i)
{
    if (c->ep[i].why[0] == '\0')
        return;
    log_info(c->comp, "%s answers again", c->ep[i].url);
    c->ep[i].why[0] = '\0';
    c->ep[i].kind = 0;
    update_why(c);
}

int
etcd_client_current(const struct etcd_client *c)
{
    return c->current;
}

int
etcd_client_endpoints(const struct etcd_client *c)
{
    return c->n_ep;
}

const char *
etcd_client_url(const struct etcd_client *c, int i)
{
    return i >= 0 && i < c->n_ep ? c->ep[i].url : "?";
}

const char *
etcd_client_why(const struct etcd_client *c)
{
    return c->why;
}

/* ---- sockets ---- */

static void sock_io(void *ctx, bool write, int res);
static void tmr_fire(void *ctx);

static const struct fdwatch_ops sock_ops = {.on_io = sock_io};
static const struct fdwatch_ops tmr_ops = {.on_timer = tmr_fire};

/* Waits for each direction libcurl wants (a direction already waited for is not doubled). */
static void
sock_arm(struct etcd_sock *sk)
{
    for (int dir = 0; dir < 2; dir++) {
        if (!(sk->want & (dir == 0 ? CURL_POLL_IN : CURL_POLL_OUT)))
            continue;
        if (fdwatch_wait(sk->w, sk->fd, dir == 1) < 0)
            /* libcurl's next timeout tries again (tmr_fire), or the transfer's own ends it. */
            log_error(sk->c->comp, "no io_uring SQE to poll an etcd connection");
    }
}

/* libcurl is done with the socket, or the client goes. */
static void
sock_detach(struct etcd_client *c, struct etcd_sock *sk)
{
    for (struct etcd_sock **pp = &c->socks; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == sk) {
            *pp = sk->next;
            break;
        }
    }
    fdwatch_release(sk->w);
    sk->w = NULL;
    sk->gone = true;
    if (!sk->acting)
        free(sk);
}

static int
on_curl_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    struct etcd_client *c = userp;
    struct etcd_sock *sk = socketp;

    (void)easy;
    if (what == CURL_POLL_REMOVE) {
        if (sk != NULL)
            sock_detach(c, sk);
        return 0;
    }
    if (sk == NULL) {
        sk = calloc(1, sizeof(*sk));
        if (sk == NULL || fdwatch_new(&sk->w, c->loop, &sock_ops, sk) < 0) {
            free(sk);
            return -1;
        }
        sk->c = c;
        sk->fd = s;
        sk->next = c->socks;
        c->socks = sk;
        curl_multi_assign(c->multi, s, sk);
    }
    sk->want = what & (CURL_POLL_IN | CURL_POLL_OUT);
    sock_arm(sk);
    return 0;
}

/* ---- requests ---- */

static void pump(struct etcd_client *c);

static size_t
on_curl_data(char *data, size_t size, size_t n, void *ud)
{
    struct etcd_req *r = ud;
    size_t len = size * n;
    size_t limit = r->kind == REQ_WATCH ? ETCD_WATCH_BUF_MAX : ETCD_ANSWER_MAX;

    if (r->len + len > limit) {
        r->overflow = true;
        return 0; /* ends the transfer (CURLE_WRITE_ERROR) */
    }
    if (r->len + len + 1 > r->cap) {
        size_t cap = r->cap > 0 ? r->cap : 4096;
        char *p;

        while (cap < r->len + len + 1)
            cap *= 2;
        p = realloc(r->buf, cap);
        if (p == NULL) {
            r->overflow = true;
            return 0;
        }
        r->buf = p;
        r->cap = cap;
    }
    memcpy(r->buf + r->len, data, len);
    r->len += len;
    r->buf[r->len] = '\0';
    return len;
}

static void
req_unlink(struct etcd_req *r)
{
    struct etcd_client *c = r->c;

    if (r->in_multi) {
        curl_multi_remove_handle(c->multi, r->easy);
        r->in_multi = false;
    }
    if (r->prev != NULL)
        r->prev->next = r->next;
    else if (c->reqs == r)
        c->reqs = r->next;
    if (r->next != NULL)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
}

static void
req_free(struct etcd_req *r)
{
    req_unlink(r);
    if (r->easy != NULL)
        curl_easy_cleanup(r->easy);
    free(r->body);
    free(r->buf);
    free(r);
}

/* Starts (or restarts) r's transfer on the current endpoint. */
static int
req_send(struct etcd_req *r)
{
    struct etcd_client *c = r->c;
    char url[ETCD_URL_MAX + 64];
    CURL *e;

    if (r->in_multi) {
        curl_multi_remove_handle(c->multi, r->easy);
        r->in_multi = false;
    }
    if (r->easy == NULL && (r->easy = curl_easy_init()) == NULL)
        return -ENOMEM;
    e = r->easy;
    curl_easy_reset(e);
    r->endpoint = c->current;
    r->tried++;
    r->len = r->parsed = 0;
    r->overflow = r->finished = false;
    r->errbuf[0] = '\0';
    snprintf(url, sizeof(url), "%s/v3/%s", c->ep[r->endpoint].url, r->method);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(r->body));
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->headers);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_curl_data);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)c->connect_ms);
    /* A watch lasts as long as the member serves it; a call has request_ms. */
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, r->kind == REQ_CALL ? (long)c->request_ms : 0L);
    /* A member whose host vanished (no RST) is noticed by the keepalive calls failing; TCP
     * keepalive closes the idle watch connection to it as well. */
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPIDLE, 5L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPINTVL, 2L);
    if (c->ca != NULL)
        curl_easy_setopt(e, CURLOPT_CAINFO, c->ca);
    if (c->cert != NULL) {
        curl_easy_setopt(e, CURLOPT_SSLCERT, c->cert);
        curl_easy_setopt(e, CURLOPT_SSLKEY, c->key);
    }
    if (curl_multi_add_handle(c->multi, e) != CURLM_OK)
        return -ENOMEM;
    r->in_multi = true;
    return 0;
}

static int
req_new(struct etcd_client *c, enum req_kind kind, const char *method, json_t *body,
        struct etcd_req **out)
{
    struct etcd_req *r = calloc(1, sizeof(*r));
    int rc;

    if (r == NULL) {
        json_decref(body);
        return -ENOMEM;
    }
    r->c = c;
    r->kind = kind;
    snprintf(r->method, sizeof(r->method), "%s", method);
    r->body = body != NULL ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (r->body == NULL) {
        free(r);
        return -ENOMEM;
    }
    r->next = c->reqs;
    if (c->reqs != NULL)
        c->reqs->prev = r;
    c->reqs = r;
    rc = req_send(r);
    if (rc < 0) {
        req_free(r);
        return rc;
    }
    *out = r;
    return 0;
}

int
etcd_call(struct etcd_client *c, const char *method, json_t *body, etcd_done_fn done, void *ctx,
          struct etcd_req **out)
{
    struct etcd_req *r;
    int rc = req_new(c, REQ_CALL, method, body, &r);

    if (rc < 0)
        return rc;
    r->done = done;
    r->ctx = ctx;
    if (out != NULL)
        *out = r;
    return 0;
}

int
etcd_watch(struct etcd_client *c, json_t *create_request, etcd_msg_fn on_msg, etcd_done_fn on_end,
           void *ctx, struct etcd_req **out)
{
    json_t *body = json_pack("{s:o}", "create_request", create_request);
    struct etcd_req *r;
    int rc;

    if (body == NULL)
        return -ENOMEM;
    rc = req_new(c, REQ_WATCH, "watch", body, &r);
    if (rc < 0)
        return rc;
    r->on_msg = on_msg;
    r->done = on_end;
    r->ctx = ctx;
    if (out != NULL)
        *out = r;
    return 0;
}

int
etcd_watch_endpoint(const struct etcd_req *w)
{
    return w->endpoint;
}

void
etcd_cancel(struct etcd_req *r)
{
    if (r == NULL || r->cancelled)
        return;
    r->cancelled = true;
    if (r->in_multi) {
        curl_multi_remove_handle(r->c->multi, r->easy);
        r->in_multi = false;
    }
    if (r->c->depth == 0)
        req_free(r);
}

/* etcd's message in an error answer: {"error": "...", "message": "..."} from a unary method,
 * {"error": {"message": "...", "http_code": 503}} from a streaming one. */
static const char *
error_message(json_t *answer)
{
    json_t *e = json_object_get(answer, "error");
    const char *m = json_string_value(json_object_get(answer, "message"));

    if (m == NULL && json_is_object(e))
        m = json_string_value(json_object_get(e, "message"));
    if (m == NULL)
        m = json_string_value(e);
    return m;
}

/* Tells r's owner the outcome (unless cancelled meanwhile) and marks r ended. */
static void
req_tell(struct etcd_req *r, int rc, json_t *answer, const char *why)
{
    if (r->cancelled || r->ended)
        return;
    r->ended = true;
    if (r->done != NULL)
        r->done(r->ctx, rc, answer, why);
}

/* A call's attempt found no answer at its endpoint: the next one, or the end. */
static void
call_unanswered(struct etcd_req *r, int kind, const char *why)
{
    struct etcd_client *c = r->c;

    endpoint_failed(c, r->endpoint, kind, why);
    if (r->tried < c->n_ep && !r->cancelled) {
        log_debug(c->comp, "%s: sending it to %s", r->method, c->ep[c->current].url);
        if (req_send(r) == 0)
            return;
    }
    req_tell(r, -ENOTCONN, NULL, c->why);
}

/* A unary transfer is over: its answer, a resend, or a failure. */
static void
call_finished(struct etcd_req *r)
{
    struct etcd_client *c = r->c;
    long code = 0;
    json_t *answer, *inner;
    json_error_t jerr;
    char why[320];

    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &code);
    if (r->overflow) {
        snprintf(why, sizeof(why), "%s: an answer larger than %u bytes", r->method,
                 ETCD_ANSWER_MAX);
        req_tell(r, -EPROTO, NULL, why);
        return;
    }
    if (r->result != CURLE_OK) {
        snprintf(why, sizeof(why), "%s",
                 r->errbuf[0] != '\0' ? r->errbuf : curl_easy_strerror(r->result));
        call_unanswered(r, (int)r->result, why);
        return;
    }
    answer = json_loadb(r->buf != NULL ? r->buf : "", r->len, 0, &jerr);
    if (code >= 500 || code == 0) {
        const char *m = answer != NULL ? error_message(answer) : NULL;

        if (m != NULL)
            snprintf(why, sizeof(why), "%s", m);
        else
            snprintf(why, sizeof(why), "HTTP %ld", code);
        json_decref(answer);
        call_unanswered(r, FAIL_HTTP + (int)code, why);
        return;
    }
    endpoint_ok(c, r->endpoint);
    if (!json_is_object(answer)) {
        snprintf(why, sizeof(why), "%s: HTTP %ld with an answer that is not a JSON object (%s)",
                 r->method, code, answer == NULL ? jerr.text : "another JSON value");
        json_decref(answer);
        req_tell(r, -EPROTO, NULL, why);
        return;
    }
    /* A streaming method asked once answers its first message. */
    inner = json_object_get(answer, "result");
    if (code >= 300 || json_object_get(answer, "error") != NULL) {
        const char *m = error_message(answer);

        snprintf(why, sizeof(why), "%s", m != NULL ? m : "an error without a message");
        req_tell(r, -EREMOTEIO, answer, why);
    } else {
        req_tell(r, 0, json_is_object(inner) ? inner : answer, "");
    }
    json_decref(answer);
}

/* Delivers the complete lines a watch has received; at its end, also the last one. */
static void
watch_deliver(struct etcd_req *r, bool at_end)
{
    struct etcd_client *c = r->c;

    while (!r->cancelled && !r->ended && r->parsed < r->len) {
        char *line = r->buf + r->parsed;
        char *nl = memchr(line, '\n', r->len - r->parsed);
        size_t n;
        json_t *msg, *result;
        json_error_t jerr;

        if (nl == NULL && !at_end)
            break;
        n = nl != NULL ? (size_t)(nl - line) : r->len - r->parsed;
        r->parsed += n + (nl != NULL ? 1 : 0);
        while (n > 0 && wm_is_space(line[n - 1]))
            n--;
        if (n == 0)
            continue;
        msg = json_loadb(line, n, 0, &jerr);
        result = json_object_get(msg, "result");
        if (json_is_object(result)) {
            r->on_msg(r->ctx, result);
        } else {
            char why[320];
            const char *m = msg != NULL ? error_message(msg) : NULL;

            if (m != NULL)
                snprintf(why, sizeof(why), "%s", m);
            else
                snprintf(why, sizeof(why), "the watch sent something that is not a message: %s",
                         msg == NULL ? jerr.text : "no result");
            endpoint_failed(c, r->endpoint, m != NULL ? FAIL_MESSAGE : FAIL_GARBLED, why);
            if (r->in_multi) {
                curl_multi_remove_handle(c->multi, r->easy);
                r->in_multi = false;
            }
            req_tell(r, m != NULL ? -EREMOTEIO : -EPROTO, msg, why);
        }
        json_decref(msg);
    }
    if (r->parsed > 0 && r->parsed <= r->len) {
        memmove(r->buf, r->buf + r->parsed, r->len - r->parsed);
        r->len -= r->parsed;
        r->parsed = 0;
        if (r->buf != NULL)
            r->buf[r->len] = '\0';
    }
}

static void
watch_finished(struct etcd_req *r)
{
    struct etcd_client *c = r->c;
    char why[320];
    long code = 0;

    watch_deliver(r, true);
    if (r->cancelled || r->ended)
        return;
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &code);
    if (r->overflow)
        snprintf(why, sizeof(why), "the watch sent more than %u bytes in one message",
                 ETCD_WATCH_BUF_MAX);
    else if (r->result != CURLE_OK)
        snprintf(why, sizeof(why), "%s",
                 r->errbuf[0] != '\0' ? r->errbuf : curl_easy_strerror(r->result));
    else
        snprintf(why, sizeof(why), "the member ended the watch (HTTP %ld)", code);
    endpoint_failed(c, r->endpoint, r->result != CURLE_OK ? (int)r->result : FAIL_CLOSED, why);
    req_tell(r, r->result == CURLE_OK && !r->overflow ? 0 : -ENOTCONN, NULL, why);
}

/* After libcurl has run: deliver what arrived and what finished; then free what ended. */
static void
pump(struct etcd_client *c)
{
    struct etcd_req *r, *next;
    CURLMsg *m;
    int left;

    c->depth++;
    while ((m = curl_multi_info_read(c->multi, &left)) != NULL) {
        if (m->msg != CURLMSG_DONE)
            continue;
        r = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        if (r != NULL) {
            r->finished = true;
            r->result = m->data.result;
        }
    }
    /* New requests go to the head of the list: this walk does not meet them.  A request
     * cancelled by a callback stays on the list (depth > 0) until the sweep below. */
    for (r = c->reqs; r != NULL; r = r->next) {
        if (r->cancelled || r->ended)
            continue;
        if (r->kind == REQ_WATCH && !r->finished)
            watch_deliver(r, false);
        else if (r->finished && r->kind == REQ_WATCH)
            watch_finished(r);
        else if (r->finished) {
            r->finished = false;
            call_finished(r); /* may resend r */
        }
    }
    c->depth--;
    if (c->depth > 0)
        return;
    for (r = c->reqs; r != NULL; r = next) {
        next = r->next;
        if (r->cancelled || r->ended)
            req_free(r);
    }
}

/* ---- libcurl's clock and the loop ---- */

static void
sock_io(void *ctx, bool write, int res)
{
    struct etcd_sock *sk = ctx;
    struct etcd_client *c = sk->c;
    int running, ev = write ? CURL_CSELECT_OUT : CURL_CSELECT_IN;

    if (res < 0 || (res & POLLERR))
        ev |= CURL_CSELECT_ERR;
    sk->acting = true;
    curl_multi_socket_action(c->multi, sk->fd, ev, &running);
    sk->acting = false;
    if (sk->gone)
        free(sk);
    else
        sock_arm(sk);
    pump(c);
}

static void
tmr_fire(void *ctx)
{
    struct etcd_client *c = ctx;
    int running;

    for (struct etcd_sock *sk = c->socks; sk != NULL; sk = sk->next)
        sock_arm(sk); /* a poll that found no SQE */
    curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    pump(c);
}

static int
on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    struct etcd_client *c = userp;

    (void)multi;
    if (timeout_ms < 0) {
        fdwatch_timer_stop(c->timer);
        return 0;
    }
    if (fdwatch_timer(c->timer, (uint64_t)timeout_ms) < 0) {
        log_error(c->comp, "cannot arm libcurl's timer");
        return -1;
    }
    return 0;
}

/* ---- lifecycle ---- */

static char *
dup_or_null(const char *s, bool *oom)
{
    char *d;

    if (s == NULL)
        return NULL;
    d = strdup(s);
    if (d == NULL)
        *oom = true;
    return d;
}

int
etcd_client_new(struct etcd_client **out, struct wio_loop *loop,
                const struct etcd_client_config *cfg, char *err, size_t errlen)
{
    char urls[ETCD_ENDPOINTS_MAX][ETCD_URL_MAX];
    struct etcd_client *c;
    bool oom = false;
    int n = etcd_endpoints_parse(cfg->endpoints, urls, ETCD_ENDPOINTS_MAX, err, errlen);

    if (n < 0)
        return n;
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return -ENOMEM;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        free(c);
        snprintf(err, errlen, "cannot initialise libcurl");
        return -ENOMEM;
    }
    c->loop = loop;
    c->n_ep = n;
    for (int i = 0; i < n; i++)
        memcpy(c->ep[i].url, urls[i], sizeof(urls[i]));
    c->connect_ms =
        cfg->connect_timeout_ms != 0 ? cfg->connect_timeout_ms : ETCD_CONNECT_TIMEOUT_MS;
    c->request_ms =
        cfg->request_timeout_ms != 0 ? cfg->request_timeout_ms : ETCD_REQUEST_TIMEOUT_MS;
    snprintf(c->comp, sizeof(c->comp), "%s", cfg->log_comp != NULL ? cfg->log_comp : "etcd");
    c->ca = dup_or_null(cfg->ca, &oom);
    c->cert = dup_or_null(cfg->cert, &oom);
    c->key = dup_or_null(cfg->key, &oom);
    if (fdwatch_new(&c->timer, loop, &tmr_ops, c) < 0)
        c->timer = NULL;
    c->multi = curl_multi_init();
    c->headers = curl_slist_append(NULL, "Content-Type: application/json");
    if (c->headers != NULL) {
        struct curl_slist *h = curl_slist_append(c->headers, "Grpc-Metadata-Hasleader: true");

        if (h != NULL)
            h = curl_slist_append(h, "Expect:");
        if (h == NULL)
            oom = true;
    }
    if (oom || c->timer == NULL || c->multi == NULL || c->headers == NULL) {
        snprintf(err, errlen, "out of memory");
        etcd_client_free(c);
        return -ENOMEM;
    }
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    *out = c;
    return 0;
}

void
etcd_client_free(struct etcd_client *c)
{
    if (c == NULL)
        return;
    while (c->reqs != NULL)
        req_free(c->reqs);
    if (c->multi != NULL)
        curl_multi_cleanup(c->multi); /* closes the connections: REMOVE for their sockets */
    while (c->socks != NULL)
        sock_detach(c, c->socks);
    fdwatch_release(c->timer);
    curl_slist_free_all(c->headers);
    free(c->ca);
    free(c->cert);
    free(c->key);
    free(c);
    curl_global_cleanup();
}

/* ---- JSON helpers ---- */

json_t *
etcd_b64(const void *data, size_t len)
{
    size_t cap = 4 * ((len + 2) / 3) + 1;
    unsigned char *out = malloc(cap);
    json_t *j;

    if (out == NULL)
        return NULL;
    EVP_EncodeBlock(out, data, (int)len);
    j = json_string((const char *)out);
    free(out);
    return j;
}

char *
etcd_unb64(const json_t *j, size_t *len)
{
    const char *s = json_string_value(j);
    size_t n = s != NULL ? strlen(s) : 0;
    unsigned char *out;
    int got;

    if (j == NULL) {
        *len = 0;
        return calloc(1, 1);
    }
    if (s == NULL || n % 4 != 0)
        return NULL;
    out = malloc(n / 4 * 3 + 1);
    if (out == NULL)
        return NULL;
    got = EVP_DecodeBlock(out, (const unsigned char *)s, (int)n);
    if (got < 0) {
        free(out);
        return NULL;
    }
    /* EVP_DecodeBlock counts the padding as zero bytes. */
    if (n >= 1 && s[n - 1] == '=')
        got--;
    if (n >= 2 && s[n - 2] == '=')
        got--;
    out[got] = '\0';
    *len = (size_t)got;
    return (char *)out;
}

int64_t
etcd_int(const json_t *obj, const char *field)
{
    const json_t *v = json_object_get(obj, field);
    const char *s;
    char *end;
    long long n;

    if (v == NULL)
        return 0;
    if (json_is_integer(v))
        return (int64_t)json_integer_value(v);
    s = json_string_value(v);
    if (s == NULL || s[0] == '\0')
        return -1;
    errno = 0;
    n = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return -1;
    return (int64_t)n;
}

json_t *
etcd_prefix_end(const char *prefix)
{
    size_t n = strlen(prefix);
    char *end = strdup(prefix);
    json_t *j;

    if (end == NULL)
        return NULL;
    while (n > 0 && (unsigned char)end[n - 1] == 0xff)
        n--;
    if (n == 0) {
        free(end);
        return etcd_b64("\0", 1); /* every key */
    }
    end[n - 1] = (char)((unsigned char)end[n - 1] + 1);
    j = etcd_b64(end, n);
    free(end);
    return j;
}

int
etcd_kv_decode(const json_t *kv, struct etcd_kv *out)
{
    memset(out, 0, sizeof(*out));
    if (!json_is_object(kv))
        return -EPROTO;
    out->key = etcd_unb64(json_object_get(kv, "key"), &out->key_len);
    out->value = etcd_unb64(json_object_get(kv, "value"), &out->value_len);
    out->create_revision = etcd_int(kv, "create_revision");
    out->mod_revision = etcd_int(kv, "mod_revision");
    out->lease = etcd_int(kv, "lease");
    if (out->key == NULL || out->value == NULL || out->create_revision < 0 ||
        out->mod_revision < 0 || out->lease < 0) {
        etcd_kv_clear(out);
        return -EPROTO;
    }
    return 0;
}

void
etcd_kv_clear(struct etcd_kv *kv)
{
    free(kv->key);
    free(kv->value);
    memset(kv, 0, sizeof(*kv));
}
