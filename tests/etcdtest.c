/*
 * etcdtest.c - a real etcd cluster for the tests; see etcdtest.h.
 *
 * The harness talks to the members with blocking libcurl requests (a test's own assertions,
 * outside the loop under test) and etcd.h's JSON helpers.  Members are children of the test
 * process with PR_SET_PDEATHSIG, so that even a test killed outright (a CTest timeout) leaves
 * no etcd behind.
 */
#include "etcdtest.h"

#include <check.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "etcd.h"
#include "etcdrec.h"
#include "testutil.h"

static struct et_cluster *live; /* the cluster the atexit handler stops */
static pid_t live_owner;
static bool keep_logs;

static double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The etcd binary on PATH (Debian: /usr/bin/etcd), or NULL. */
static const char *
find_etcd(void)
{
    static char found[4200];
    const char *path = getenv("PATH");
    char *copy, *save = NULL;

    if (access("/usr/bin/etcd", X_OK) == 0)
        return "/usr/bin/etcd";
    if (path == NULL || (copy = strdup(path)) == NULL)
        return NULL;
    for (char *dir = strtok_r(copy, ":", &save); dir != NULL; dir = strtok_r(NULL, ":", &save)) {
        snprintf(found, sizeof(found), "%s/etcd", dir);
        if (access(found, X_OK) == 0) {
            free(copy);
            return found;
        }
    }
    free(copy);
    return NULL;
}

const char *
et_ca(const struct et_cluster *c)
{
    return c->tls ? tu_cert("ca.crt") : NULL;
}

const char *
et_client_cert(const struct et_cluster *c)
{
    static char path[4200];

    if (!c->tls)
        return NULL;
    snprintf(path, sizeof(path), "%s", tu_cert("witness.crt"));
    return path;
}

const char *
et_client_key(const struct et_cluster *c)
{
    static char path[4200];

    if (!c->tls)
        return NULL;
    snprintf(path, sizeof(path), "%s", tu_cert("witness.key"));
    return path;
}

/* POST member i's /v3/<method> with body (taken); the answer, or NULL when none came. */
static json_t *
et_post(struct et_cluster *c, int i, const char *method, json_t *body, long timeout_ms)
{
    struct tu_buf b = {0};
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    char url[160], ca[4200] = "", cert[4200] = "", key[4200] = "";
    char *text = json_dumps(body, JSON_COMPACT);
    CURL *e = curl_easy_init();
    json_t *answer = NULL;
    long code = 0;

    json_decref(body);
    tu_require(e != NULL && text != NULL && h != NULL);
    if (c->tls) {
        snprintf(ca, sizeof(ca), "%s", et_ca(c));
        snprintf(cert, sizeof(cert), "%s", et_client_cert(c));
        snprintf(key, sizeof(key), "%s", et_client_key(c));
        curl_easy_setopt(e, CURLOPT_CAINFO, ca);
        curl_easy_setopt(e, CURLOPT_SSLCERT, cert);
        curl_easy_setopt(e, CURLOPT_SSLKEY, key);
    }
    snprintf(url, sizeof(url), "%s/v3/%s", c->m[i].url, method);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, text);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 500L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, tu_buf_append);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &b);
    if (curl_easy_perform(e) == CURLE_OK)
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
    if (code == 200 && b.data != NULL)
        answer = json_loads(b.data, 0, NULL);
    curl_easy_cleanup(e);
    curl_slist_free_all(h);
    free(text);
    free(b.data);
    return answer;
}

static bool
answering(const struct et_member *m)
{
    return m->pid > 0 && !m->paused;
}

/* Member ids are unsigned 64-bit numbers, beyond int64: kept as etcd writes them, in text. */
#define ET_ID_MAX 24

/* A member's id and the leader it knows, from its maintenance status; false when none. */
static bool
member_status(struct et_cluster *c, int i, char id[ET_ID_MAX], char leader[ET_ID_MAX])
{
    json_t *st;
    const char *m, *l;
    bool ok;

    if (!answering(&c->m[i]))
        return false;
    st = et_post(c, i, "maintenance/status", json_object(), 2000);
    m = json_string_value(json_object_get(json_object_get(st, "header"), "member_id"));
    l = json_string_value(json_object_get(st, "leader"));
    ok = m != NULL && strlen(m) < ET_ID_MAX;
    if (ok) {
        snprintf(id, ET_ID_MAX, "%s", m);
        snprintf(leader, ET_ID_MAX, "%s", l != NULL && strlen(l) < ET_ID_MAX ? l : "");
    }
    json_decref(st);
    return ok;
}

int
et_leader(struct et_cluster *c)
{
    char ids[ET_MEMBERS_MAX][ET_ID_MAX] = {""}, leaders[ET_MEMBERS_MAX][ET_ID_MAX] = {""};

    for (int i = 0; i < c->n; i++)
        if (!member_status(c, i, ids[i], leaders[i]))
            ids[i][0] = '\0';
    for (int i = 0; i < c->n; i++) {
        if (ids[i][0] == '\0' || strcmp(leaders[i], ids[i]) != 0)
            continue;
        /* i says it leads; every other member that answers must agree */
        for (int j = 0; j < c->n; j++)
            if (ids[j][0] != '\0' && strcmp(leaders[j], ids[i]) != 0)
                return -1;
        return i;
    }
    return -1;
}

bool
et_wait_leader(struct et_cluster *c, double seconds)
{
    double end = now_s() + seconds;

    while (now_s() < end) {
        if (et_leader(c) >= 0)
            return true;
        usleep(100000);
    }
    return false;
}

bool
et_move_leader(struct et_cluster *c, int i)
{
    char id[ET_ID_MAX], leader[ET_ID_MAX];
    int l = et_leader(c);
    json_t *r;
    double end = now_s() + 10;

    if (l == i)
        return true;
    if (l < 0 || !member_status(c, i, id, leader))
        return false;
    r = et_post(c, l, "maintenance/transfer-leadership", json_pack("{s:s}", "targetID", id), 5000);
    json_decref(r);
    while (now_s() < end) {
        if (et_leader(c) == i)
            return true;
        usleep(100000);
    }
    return false;
}

static void
spawn(struct et_cluster *c, int i, const char *etcd)
{
    struct et_member *m = &c->m[i];
    char peer_url[64], cluster[ET_MEMBERS_MAX * 80] = "", token[64];
    char *argv[40];
    int n = 0;
    pid_t pid;

    for (int j = 0; j < c->n; j++) {
        size_t used = strlen(cluster);

        snprintf(cluster + used, sizeof(cluster) - used, "%s%s=http://127.0.0.1:%d",
                 j > 0 ? "," : "", c->m[j].name, c->m[j].peer_port);
    }
    snprintf(peer_url, sizeof(peer_url), "http://127.0.0.1:%d", m->peer_port);
    snprintf(token, sizeof(token), "walmirror-%d-%d", (int)getpid(), c->m[0].client_port);
    argv[n++] = (char *)etcd;
    argv[n++] = "--name";
    argv[n++] = m->name;
    argv[n++] = "--data-dir";
    argv[n++] = m->data;
    argv[n++] = "--listen-client-urls";
    argv[n++] = m->url;
    argv[n++] = "--advertise-client-urls";
    argv[n++] = m->url;
    argv[n++] = "--listen-peer-urls";
    argv[n++] = peer_url;
    argv[n++] = "--initial-advertise-peer-urls";
    argv[n++] = peer_url;
    argv[n++] = "--initial-cluster";
    argv[n++] = cluster;
    argv[n++] = "--initial-cluster-state";
    argv[n++] = "new";
    argv[n++] = "--initial-cluster-token";
    argv[n++] = token;
    argv[n++] = "--heartbeat-interval";
    argv[n++] = "50";
    argv[n++] = "--election-timeout";
    argv[n++] = "500";
    argv[n++] = "--logger";
    argv[n++] = "zap";
    argv[n++] = "--log-outputs";
    argv[n++] = "stderr";
    if (c->tls) {
        static char cert[4200], key[4200], ca[4200];

        snprintf(cert, sizeof(cert), "%s", tu_cert("etcd.crt"));
        snprintf(key, sizeof(key), "%s", tu_cert("etcd.key"));
        snprintf(ca, sizeof(ca), "%s", tu_cert("ca.crt"));
        argv[n++] = "--cert-file";
        argv[n++] = cert;
        argv[n++] = "--key-file";
        argv[n++] = key;
        argv[n++] = "--trusted-ca-file";
        argv[n++] = ca;
        argv[n++] = "--client-cert-auth";
    }
    argv[n] = NULL;
    fflush(NULL);
    pid = fork();
    tu_require(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        int fd = open(m->log, O_WRONLY | O_CREAT | O_APPEND, 0644);

        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (fd < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
            _exit(126);
        execv(etcd, argv);
        _exit(127);
    }
    m->pid = pid;
    m->paused = false;
}

static void
reap(struct et_member *m)
{
    int status;

    if (m->pid <= 0)
        return;
    kill(m->pid, SIGKILL);
    kill(m->pid, SIGCONT);
    waitpid(m->pid, &status, 0);
    m->pid = 0;
    m->paused = false;
}

static void
stop_at_exit(void)
{
    if (live != NULL && getpid() == live_owner) {
        if (keep_logs)
            fprintf(stderr, "etcd logs kept in %s\n", live->dir);
        et_stop(live);
    }
}

void
et_keep_logs(struct et_cluster *c)
{
    (void)c;
    keep_logs = true;
}

void
et_start(struct et_cluster *c, int n, bool tls)
{
    const char *etcd = find_etcd();
    struct stat st;

    tu_require(etcd != NULL, "no etcd binary on PATH: tools/install-deps.sh installs etcd-server");
    tu_require(n >= 1 && n <= ET_MEMBERS_MAX);
    memset(c, 0, sizeof(*c));
    c->n = n;
    c->tls = tls;
    if (tls)
        (void)tu_certs();
    if (stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode)) {
        snprintf(c->dir, sizeof(c->dir), "/dev/shm/walmirror-etcd-XXXXXX");
        tu_require(mkdtemp(c->dir) != NULL, "mkdtemp %s: %s", c->dir, strerror(errno));
    } else {
        char *d = tu_tmpdir("etcd");

        snprintf(c->dir, sizeof(c->dir), "%s", d);
        free(d);
    }
    for (int i = 0; i < n; i++) {
        struct et_member *m = &c->m[i];

        snprintf(m->name, sizeof(m->name), "m%d", i);
        m->client_port = tu_free_port();
        m->peer_port = tu_free_port();
        snprintf(m->url, sizeof(m->url), "%s://127.0.0.1:%d", tls ? "https" : "http",
                 m->client_port);
        snprintf(m->data, sizeof(m->data), "%s/m%d.data", c->dir, i);
        snprintf(m->log, sizeof(m->log), "%s/m%d.log", c->dir, i);
        snprintf(c->endpoints + strlen(c->endpoints), sizeof(c->endpoints) - strlen(c->endpoints),
                 "%s%s", i > 0 ? "," : "", m->url);
    }
    live = c;
    live_owner = getpid();
    atexit(stop_at_exit);
    for (int i = 0; i < n; i++)
        spawn(c, i, etcd);
    if (!et_wait_leader(c, 20)) {
        et_keep_logs(c);
        tu_require(false, "the etcd cluster in %s did not elect a leader", c->dir);
    }
}

void
et_stop(struct et_cluster *c)
{
    for (int i = 0; i < c->n; i++)
        reap(&c->m[i]);
    if (!keep_logs && c->dir[0] != '\0')
        tu_rmtree(c->dir);
    if (live == c)
        live = NULL;
}

void
et_kill(struct et_cluster *c, int i)
{
    reap(&c->m[i]);
}

void
et_restart(struct et_cluster *c, int i)
{
    const char *etcd = find_etcd();

    tu_require(etcd != NULL && c->m[i].pid == 0);
    spawn(c, i, etcd);
}

void
et_pause(struct et_cluster *c, int i)
{
    tu_require(c->m[i].pid > 0 && kill(c->m[i].pid, SIGSTOP) == 0);
    c->m[i].paused = true;
}

void
et_resume(struct et_cluster *c, int i)
{
    tu_require(c->m[i].pid > 0 && kill(c->m[i].pid, SIGCONT) == 0);
    c->m[i].paused = false;
}

/* method on any answering member; the answer (the test fails when none answers). */
static json_t *
et_any(struct et_cluster *c, const char *method, json_t *body)
{
    for (int attempt = 0; attempt < 3 * ET_MEMBERS_MAX; attempt++) {
        int i = attempt % c->n;
        json_t *r;

        if (!answering(&c->m[i]))
            continue;
        r = et_post(c, i, method, json_incref(body), 2000);
        if (r != NULL) {
            json_decref(body);
            return r;
        }
        if (i == c->n - 1)
            usleep(200000);
    }
    json_decref(body);
    tu_require(false, "no etcd member answers %s", method);
    return NULL;
}

char *
et_get(struct et_cluster *c, const char *key)
{
    json_t *r = et_any(c, "kv/range", json_pack("{s:o}", "key", etcd_b64(key, strlen(key))));
    json_t *kv = json_array_get(json_object_get(r, "kvs"), 0);
    size_t len;
    char *value = kv != NULL ? etcd_unb64(json_object_get(kv, "value"), &len) : NULL;

    json_decref(r);
    return value;
}

void
et_put(struct et_cluster *c, const char *key, const char *value)
{
    json_decref(et_any(c, "kv/put",
                       json_pack("{s:o, s:o}", "key", etcd_b64(key, strlen(key)), "value",
                                 etcd_b64(value, strlen(value)))));
}

void
et_del(struct et_cluster *c, const char *key)
{
    json_decref(et_any(c, "kv/deleterange", json_pack("{s:o}", "key", etcd_b64(key, strlen(key)))));
}

struct wm_state
et_epoch_record(struct et_cluster *c, const char *prefix)
{
    char key[256], err[256], *text;
    struct wm_state st;

    snprintf(key, sizeof(key), "%sepoch", prefix);
    text = et_get(c, key);
    ck_assert_msg(text != NULL, "no epoch record under %s", prefix);
    ck_assert_msg(etcdrec_epoch_parse(text, strlen(text), &st, err, sizeof(err)) == 0, "%s", err);
    free(text);
    return st;
}
