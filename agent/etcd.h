/*
 * etcd.h - an asynchronous client of etcd's v3 API through its JSON gateway, on a wio loop.
 *
 * etcd 3.4 serves its gRPC API as JSON over HTTP/1.1 on the client port: POST
 * <endpoint>/v3/<service>/<method> with the request message as a JSON object (etcd 3.4.23
 * serves the same under /v3beta/, kept for older clients; this client speaks /v3/ only).
 * Keys and values are base64 in that JSON, and 64-bit integers are strings ("revision":"5");
 * proto3 leaves out fields at their zero value ("succeeded" of a failed txn, the "type" of a PUT
 * event, the TTL of an expired lease).  A server-streaming method (watch, lease keepalive)
 * answers one JSON object per message, each on its own line, wrapped as {"result": ...} or
 * {"error": {...}}.
 *
 * Transport: libcurl's multi interface driven from the loop, no thread and no blocking call.
 * libcurl tells (CURLMOPT_SOCKETFUNCTION) which sockets to wait for and in which direction;
 * each wait is a single-shot IORING_OP_POLL_ADD re-armed after libcurl has handled the event,
 * and libcurl's one timeout (CURLMOPT_TIMERFUNCTION) is a wio_timer.  The poll operations and
 * the timer live in small objects of their own that outlive the client until the ring has
 * returned them (a socket libcurl forgets has its polls removed with IORING_OP_POLL_REMOVE).
 * libcurl keeps connections to the endpoints open and reuses them.
 *
 * Every request carries the gRPC metadata "hasleader: true" (the gateway forwards the header
 * Grpc-Metadata-Hasleader): a member that has lost its raft leader - cut off from the quorum -
 * refuses it at once with "etcdserver: no leader" (HTTP 503) instead of serving stale reads or
 * letting a request hang, and ends a watch stream a few seconds after it loses the leader.
 *
 * Endpoints: the client keeps one current endpoint and sends everything there.  A request that
 * gets no answer from it - connect refused or not done within connect_timeout_ms, no complete
 * answer within request_timeout_ms, TLS failure, HTTP 5xx (no leader, request timed out) - marks
 * that endpoint failed with the reason and makes the next one current, and the call is sent
 * again there, until every endpoint has been tried once for it.  An answer from an endpoint
 * clears its failure.  A watch is not resent: it ends (its owner starts it again, on the
 * endpoint then current).
 *
 * Lifecycle: etcd_client_new -> etcd_call / etcd_watch as needed -> etcd_client_free, all on
 * the loop's thread.  Callbacks come only from the loop's completions, never from inside a
 * function of this module; a callback may start and cancel requests, but must not free the
 * client.  etcd_client_free drops every request without a callback.
 *
 * Failure semantics: functions return >= 0 or a negative errno; a request's outcome comes
 * through its callback exactly once (unless cancelled): 0 and the answer, or
 *   -ENOTCONN     no endpoint answered (why: each endpoint tried and its reason);
 *   -EREMOTEIO    etcd answered with an error (why: its message; the answer is passed too);
 *   -EPROTO       an answer that is not a JSON object, or larger than ETCD_ANSWER_MAX.
 */
#ifndef WALMIRROR_AGENT_ETCD_H
#define WALMIRROR_AGENT_ETCD_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "etcdrec.h" /* etcd_endpoints_parse, ETCD_URL_MAX */
#include "wio.h"

#define ETCD_ANSWER_MAX (16u << 20)  /* bytes of one answer */
#define ETCD_CONNECT_TIMEOUT_MS 500  /* default connect (TCP and TLS) timeout */
#define ETCD_REQUEST_TIMEOUT_MS 1000 /* default time for a whole unary request */
#define ETCD_WHY_MAX 640             /* the reasons etcd_client_why() gives */

struct etcd_client;
struct etcd_req;

struct etcd_client_config {
    const char *endpoints; /* "https://10.0.0.1:2379,https://10.0.0.2:2379": etcd_endpoints_parse */
    const char *ca;        /* CA file to verify the members with; NULL: the system's */
    const char *cert;      /* client certificate and key files; both or neither */
    const char *key;
    unsigned connect_timeout_ms; /* 0: ETCD_CONNECT_TIMEOUT_MS */
    unsigned request_timeout_ms; /* 0: ETCD_REQUEST_TIMEOUT_MS */
    const char *log_comp;        /* log component, e.g. "etcd[site-a]" */
};

/* Creates a client; cfg is copied.  Returns 0, -EINVAL (bad endpoints: err says why), or
 * -ENOMEM. */
WM_MUSTCHECK int etcd_client_new(struct etcd_client **out, struct wio_loop *loop,
                                 const struct etcd_client_config *cfg, char *err, size_t errlen);
/* Drops every request (no callback follows) and frees.  NULL is fine. */
void etcd_client_free(struct etcd_client *c);

/* The endpoint requests go to now, and the number of endpoints. */
int etcd_client_current(const struct etcd_client *c);
int etcd_client_endpoints(const struct etcd_client *c);
const char *etcd_client_url(const struct etcd_client *c, int i);
/* The endpoints that failed last and why, "http://a:2379: connection refused; http://b:2379:
 * etcdserver: no leader", or "" when none has failed since it last answered. */
const char *etcd_client_why(const struct etcd_client *c);

/*
 * A unary call: method is the path under /v3/ ("kv/range", "kv/txn", "lease/grant",
 * "lease/keepalive"...), body the request (the reference is taken, even on failure).  The
 * answer of a streaming method asked once (lease/keepalive) is its first message's "result".
 * done(ctx, rc, answer, why) follows once; answer is borrowed for the call (NULL when none).
 * *out (may be NULL) is a handle for etcd_cancel, valid until done is called.
 */
typedef void (*etcd_done_fn)(void *ctx, int rc, json_t *answer, const char *why);
WM_MUSTCHECK int etcd_call(struct etcd_client *c, const char *method, json_t *body,
                           etcd_done_fn done, void *ctx, struct etcd_req **out);

/*
 * A watch: create_request is the WatchCreateRequest object ({"key": ..., "range_end": ...,
 * "start_revision": ...}; the reference is taken).  Each message of the stream comes to
 * on_msg(ctx, result) ("created", "events", "compact_revision", "canceled" ...; result
 * borrowed); the stream's end to on_end(ctx, rc, why), once: rc 0 when the member closed it,
 * else as above.  Runs on the endpoint current when started (etcd_watch_endpoint).
 */
typedef void (*etcd_msg_fn)(void *ctx, json_t *result);
WM_MUSTCHECK int etcd_watch(struct etcd_client *c, json_t *create_request, etcd_msg_fn on_msg,
                            etcd_done_fn on_end, void *ctx, struct etcd_req **out);
int etcd_watch_endpoint(const struct etcd_req *w);

/* Ends a request without a callback.  NULL is fine. */
void etcd_cancel(struct etcd_req *r);

/* ---- JSON helpers for etcd's messages ---- */

/* Base64 of data[0..len) as a new JSON string (NULL: out of memory). */
json_t *etcd_b64(const void *data, size_t len);
/* Decodes the base64 string j into a malloc'd NUL-terminated buffer (*len without the NUL);
 * NULL when j is not a valid base64 string.  A missing field (j NULL) is the empty value. */
char *etcd_unb64(const json_t *j, size_t *len);
/* An int64 field as etcd writes them (a string of digits, or a number); 0 when absent;
 * -1 when malformed. */
int64_t etcd_int(const json_t *obj, const char *field);
/* One key-value of a range answer or a watch event, decoded: key and value malloc'd and
 * NUL-terminated (etcd_kv_clear frees them). */
struct etcd_kv {
    char *key;
    size_t key_len;
    char *value;
    size_t value_len;
    int64_t create_revision, mod_revision, lease;
};
/* Decodes kv (a KeyValue object).  Returns 0, -EPROTO for a malformed one, -ENOMEM. */
WM_MUSTCHECK int etcd_kv_decode(const json_t *kv, struct etcd_kv *out);
void etcd_kv_clear(struct etcd_kv *kv);
/* The end of the range of every key starting with prefix (prefix with its last byte + 1), as
 * base64: the range_end of a prefix range. */
json_t *etcd_prefix_end(const char *prefix);

#endif
