/*
 * test_witness.c - the witness end to end: the real walmirror-agent binary with role =
 * witness on loopback, real TLS certificates, driven by the real arbiter (arbiter.c) of two
 * sites in this process, on one wio loop.  No PostgreSQL is involved.
 *
 * In order, on one witness (no fork: the witness pid and the arbiters stay known):
 *   a. both sites connected and reporting (site-a source, site-b sink): site-b's request is
 *      denied naming site-a; site-a's own request is denied (it is the primary); one request
 *      at a time; /status shows the witness;
 *   b. site-a's arbiter freed (its link gone): at once still denied; after the silence
 *      threshold site-b is granted epoch 2, and the state file says epoch 2, primary site-b;
 *      site-b's link survives the grant;
 *      epoch 2 is recorded exposed (the new primary has no standby yet);
 *   c. site-a connecting at epoch 1 is refused and told on_epoch_news(2, "site-b"), its
 *      request is -ENOTCONN; once it has adopted epoch 2 (as a sink) it connects, is told the
 *      epoch's mark (exposed), and its requests for epoch 2 (taken) and 3 (stale) are denied;
 *   h. exposure and resync: only the primary may ask; RESYNC clears the mark (site-a becomes
 *      promotable), EXPOSE sets it and site-a's promotion is denied naming the exposure's
 *      start; the holder asking again gets the same grant; one grant per epoch when an
 *      exposure and a promotion race;
 *   d. the witness killed (SIGKILL) and restarted: still epoch 7, site-b reconnects at
 *      epoch 7, a site-a at epoch 1 is still fenced;
 *   f. certificates for another name, or from another CA, are refused by the witness;
 *   g. a primary whose PostgreSQL died (it reports role unknown) is taken over while its
 *      link is up: site-a gets epoch 8, and site-b's arbiter is told on_epoch_news(8,
 *      "site-a") through the live link;
 *   i. a switchover the witness did not see: site-a, the primary, learns epoch 9 held by
 *      site-b and reports it while it still says it is the source (its server stopping): the
 *      witness records site-b as the holder (the report's record), not the reporter, and a
 *      later promotion of site-a is denied because site-b is alive, not because site-a "holds
 *      epoch 9 already";
 *   e. a witness that does not answer (SIGSTOP): the request is denied; unreachable:
 *      -ENOTCONN; SIGTERM stops it cleanly (exit 0, which under ASan also means no leak);
 *      without a witness configured the "none" arbiter says -ENOTCONN.
 */
#include <check.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "arbiter.h"
#include "config.h"
#include "msg.h"
#include "state.h"
#include "testutil.h"
#include "wio.h"

#define AGENT WM_BINARY_DIR "/agent/walmirror-agent"
#define HB_MS 200
#define FAILOVER_MS 1000
/* The witness's silence threshold here: min(failover_timeout, 3 x heartbeat_interval). */
#define SILENCE_MS (3 * HB_MS)

struct client {
    const char *name;
    struct wm_config cfg;
    struct arbiter *arb;
    int verdicts;
    bool granted;
    uint64_t verdict_epoch;
    struct wm_state verdict; /* the record the last verdict carried */
    char why[1100];
    int fenced; /* on_epoch_news calls */
    uint64_t fenced_epoch;
    char holder[64];
    struct wm_state news; /* the record the last news carried */
};

static struct wio_loop *loop;
static char *dir;
static char conf[4200], log_path[4200], state_dir[4200];
static int witness_port, http_port;
static pid_t witness_pid;
static pid_t owner;
static struct client A = {.name = "site-a"}, B = {.name = "site-b"};

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- the witness process ---- */

static void
write_witness_conf(void)
{
    FILE *f = fopen(conf, "w");

    tu_require(f != NULL, "cannot write %s", conf);
    fprintf(f,
            "node_name = witness\n"
            "role = witness\n"
            "listen = 127.0.0.1:%d\n"
            "sites = 'site-a@127.0.0.1:1, site-b@127.0.0.1:2'\n"
            "tls_ca = '%s'\n",
            witness_port, tu_cert("ca.crt"));
    fprintf(f, "tls_cert = '%s'\n", tu_cert("witness.crt"));
    fprintf(f, "tls_key = '%s'\n", tu_cert("witness.key"));
    fprintf(f,
            "state_dir = '%s'\n"
            "http_listen = 127.0.0.1:%d\n"
            "heartbeat_interval = %dms\n"
            "peer_timeout = 2s\n"
            "log_level = info\n",
            state_dir, http_port, HB_MS);
    tu_require(fclose(f) == 0);
}

struct body {
    char text[16384];
    size_t len;
};

static size_t
on_body(char *data, size_t size, size_t nmemb, void *ud)
{
    struct body *b = ud;
    size_t n = size * nmemb;

    if (b->len + n >= sizeof(b->text))
        return 0;
    memcpy(b->text + b->len, data, n);
    b->len += n;
    b->text[b->len] = '\0';
    return n;
}

/* GET /status of the witness; NULL when it does not answer. */
static json_t *
witness_status(void)
{
    static struct body b;
    char url[64];
    CURL *c = curl_easy_init();
    CURLcode rc;
    long code = 0;

    tu_require(c != NULL);
    b.len = 0;
    b.text[0] = '\0';
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/status", http_port);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 2000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    rc = curl_easy_perform(c);
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(c);
    if (rc != CURLE_OK || code != 200)
        return NULL;
    return json_loads(b.text, 0, NULL);
}

static void
start_witness(void)
{
    double end = now_s() + 15;
    json_t *st = NULL;
    pid_t pid = fork();

    tu_require(pid >= 0);
    if (pid == 0) {
        char *argv[] = {AGENT, "-c", conf, NULL};
        int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);

        if (fd < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
            _exit(126);
        execv(argv[0], argv);
        _exit(127);
    }
    witness_pid = pid;
    /* Ready once its HTTP API answers (it starts listening for sites just before). */
    while (now_s() < end && (st = witness_status()) == NULL) {
        int status;
        tu_require(waitpid(pid, &status, WNOHANG) == 0, "the witness exited; see %s", log_path);
        usleep(50000);
    }
    tu_require(st != NULL, "the witness did not come up; see %s", log_path);
    json_decref(st);
}

/* Stops the witness with sig; returns its wait status. */
static int
stop_witness(int sig)
{
    int status = -1;

    if (witness_pid <= 0)
        return -1;
    kill(witness_pid, SIGCONT);
    kill(witness_pid, sig);
    for (int i = 0; i < 200; i++) {
        if (waitpid(witness_pid, &status, WNOHANG) == witness_pid) {
            witness_pid = 0;
            return status;
        }
        usleep(25000);
    }
    kill(witness_pid, SIGKILL);
    waitpid(witness_pid, &status, 0);
    witness_pid = 0;
    return -1;
}

static void
kill_witness_at_exit(void)
{
    if (getpid() == owner && witness_pid > 0)
        stop_witness(SIGKILL);
}

static bool
log_has(const char *what)
{
    size_t len;
    char *text = tu_read_file(log_path, &len);
    bool found = text != NULL && strstr(text, what) != NULL;

    free(text);
    return found;
}

/* ---- site clients: the real arbiter ---- */

static void
on_verdict(void *ctx, const struct arbiter_request *req, bool granted, const struct wm_state *e,
           const char *why)
{
    struct client *c = ctx;

    (void)req;
    c->verdicts++;
    c->granted = granted;
    c->verdict_epoch = e->epoch;
    c->verdict = *e;
    snprintf(c->why, sizeof(c->why), "%s", why);
}

static void
on_epoch_news(void *ctx, const struct wm_state *e)
{
    struct client *c = ctx;

    c->fenced++;
    c->fenced_epoch = e->epoch;
    c->news = *e;
    snprintf(c->holder, sizeof(c->holder), "%s", e->primary);
}

static const struct arbiter_cb client_cb = {.on_verdict = on_verdict,
                                            .on_epoch_news = on_epoch_news};

/* What a site says of itself; mark: its record of the epoch (NULL: none). */
static void
report(struct client *c, uint8_t role, uint64_t epoch, uint64_t durable,
       const struct wm_state *mark)
{
    struct arbiter_report r = {.role = role, .epoch = epoch, .durable_lsn = durable, .mark = mark};

    arbiter_report(c->arb, &r);
}

static int
request(struct client *c, enum arbiter_ask ask, uint64_t epoch, uint64_t durable,
        uint64_t standby)
{
    struct arbiter_request req = {.ask = ask,
                                  .epoch = epoch,
                                  .durable_lsn = durable,
                                  .standby_lsn = standby,
                                  .failover_timeout_ms = FAILOVER_MS};

    return arbiter_request(c->arb, &req);
}

/* A site's configuration as the arbiter reads it; cert names the certificate's file stem. */
static void
client_config(struct client *c, const char *cert)
{
    char file[64];

    config_free(&c->cfg);
    memset(&c->cfg, 0, sizeof(c->cfg));
    snprintf(c->cfg.node_name, sizeof(c->cfg.node_name), "%s", c->name);
    c->cfg.has_witness = true;
    snprintf(c->cfg.witness.name, sizeof(c->cfg.witness.name), "witness");
    snprintf(c->cfg.witness.addr.text, sizeof(c->cfg.witness.addr.text), "127.0.0.1:%d",
             witness_port);
    snprintf(c->cfg.witness.addr.host, sizeof(c->cfg.witness.addr.host), "127.0.0.1");
    c->cfg.witness.addr.port = (uint16_t)witness_port;
    c->cfg.tls_ca = strdup(tu_cert("ca.crt"));
    snprintf(file, sizeof(file), "%s.crt", cert);
    c->cfg.tls_cert = strdup(tu_cert(file));
    snprintf(file, sizeof(file), "%s.key", cert);
    c->cfg.tls_key = strdup(tu_cert(file));
    c->cfg.heartbeat_interval_ms = HB_MS;
    c->cfg.peer_timeout_ms = 2000;
    c->cfg.failover_timeout_ms = FAILOVER_MS;
    tu_require(c->cfg.tls_ca != NULL && c->cfg.tls_cert != NULL && c->cfg.tls_key != NULL);
}

static void
client_start(struct client *c, const char *cert, uint8_t role, uint64_t epoch)
{
    c->verdicts = c->fenced = 0;
    c->fenced_epoch = 0;
    c->holder[0] = c->why[0] = '\0';
    client_config(c, cert);
    ck_assert_int_eq(arbiter_new(&c->arb, loop, &c->cfg, &client_cb, c), 0);
    report(c, role, epoch, 0x3000000, NULL);
}

static void
client_stop(struct client *c)
{
    arbiter_free(c->arb);
    c->arb = NULL;
}

static void
run_for(double seconds)
{
    double end = now_s() + seconds;

    while (now_s() < end)
        ck_assert_int_ge(wio_run_once(loop, 20), 0);
}

/* Runs the loop until cond(c) holds or seconds pass; returns whether it held. */
static bool
run_until(bool (*cond)(const struct client *), const struct client *c, double seconds)
{
    double end = now_s() + seconds;

    while (!cond(c) && now_s() < end)
        ck_assert_int_ge(wio_run_once(loop, 20), 0);
    return cond(c);
}

static bool
reachable(const struct client *c)
{
    return arbiter_reachable(c->arb);
}

static bool
unreachable(const struct client *c)
{
    return !arbiter_reachable(c->arb);
}

static bool
has_verdict(const struct client *c)
{
    return c->verdicts > 0;
}

static bool
is_fenced(const struct client *c)
{
    return c->fenced > 0;
}

/* Asks for epoch + 1 and waits for the verdict. */
static void
ask_for(struct client *c, enum arbiter_ask what, uint64_t epoch, uint64_t standby)
{
    int rc;

    c->verdicts = 0;
    rc = request(c, what, epoch, 0x3000000, standby);
    ck_assert_msg(rc == 0, "%s: request failed: %s", c->name, strerror(-rc));
    ck_assert_msg(run_until(has_verdict, c, 5), "%s: no verdict", c->name);
    ck_assert_int_eq(c->verdicts, 1);
}

/* A promotion: epoch + 1, and waits for the verdict. */
static void
ask(struct client *c, uint64_t epoch)
{
    ask_for(c, ARBITER_PROMOTE, epoch, 0);
}

/*
 * Asks until granted (a loaded machine may stretch the reports' cadence, and with it the
 * silence the witness wants); the grant must not come before SILENCE_MS after since.
 */
static void
ask_until_granted(struct client *c, uint64_t epoch, double since)
{
    double end = now_s() + 5;

    while (now_s() < since + SILENCE_MS / 1000.0 + 0.1)
        ck_assert_int_ge(wio_run_once(loop, 20), 0);
    for (;;) {
        ask(c, epoch);
        if (c->granted || now_s() > end)
            break;
        run_for(0.2);
    }
    ck_assert_msg(c->granted, "%s not granted: %s", c->name, c->why);
    ck_assert_uint_eq(c->verdict_epoch, epoch + 1);
}

static void
expect_denied(struct client *c, const char *what)
{
    ck_assert_msg(!c->granted, "%s was granted: %s", c->name, c->why);
    ck_assert_msg(strstr(c->why, what) != NULL, "%s: denial \"%s\" lacks \"%s\"", c->name,
                  c->why, what);
}

/* The witness's state file: epoch, holder, and exposed since exposed_lsn (0: not exposed). */
static void
expect_record(uint64_t epoch, const char *primary, uint64_t exposed_lsn)
{
    struct wm_state st;
    char err[512];

    ck_assert_msg(state_load(state_dir, &st, err, sizeof(err)) == 1, "%s", err);
    ck_assert_uint_eq(st.epoch, epoch);
    ck_assert_str_eq(st.primary, primary);
    ck_assert_msg(state_exposed(&st) == (exposed_lsn != 0), "epoch %" PRIu64 " is%s exposed",
                  st.epoch, state_exposed(&st) ? "" : " not");
    ck_assert_uint_eq(st.exposed_lsn, exposed_lsn);
}

static void
expect_state(uint64_t epoch, const char *primary)
{
    struct wm_state st;
    char err[512];

    ck_assert_msg(state_load(state_dir, &st, err, sizeof(err)) == 1, "%s", err);
    ck_assert_uint_eq(st.epoch, epoch);
    ck_assert_str_eq(st.primary, primary);
}

static bool
news_of_epoch(const struct client *c, uint64_t epoch)
{
    return c->fenced > 0 && c->fenced_epoch == epoch;
}

/* Runs until c has been told of epoch (held by holder, exposed since lsn or 0 for not). */
static void
expect_news(struct client *c, uint64_t epoch, const char *holder, uint64_t exposed_lsn)
{
    double end = now_s() + 5;

    while (!(news_of_epoch(c, epoch) && state_exposed(&c->news) == (exposed_lsn != 0)) &&
           now_s() < end)
        ck_assert_int_ge(wio_run_once(loop, 20), 0);
    ck_assert_msg(news_of_epoch(c, epoch), "%s was not told of epoch %" PRIu64 " (last: %" PRIu64
                  ")", c->name, epoch, c->fenced_epoch);
    ck_assert_str_eq(c->news.primary, holder);
    ck_assert_msg(state_exposed(&c->news) == (exposed_lsn != 0), "%s: epoch %" PRIu64 " %s",
                  c->name, epoch, state_exposed(&c->news) ? "exposed" : "not exposed");
    ck_assert_uint_eq(c->news.exposed_lsn, exposed_lsn);
}

static void
expect_status(uint64_t epoch, const char *primary, bool link_up)
{
    json_t *st = witness_status();

    ck_assert_msg(st != NULL, "no /status from the witness");
    ck_assert_str_eq(json_string_value(json_object_get(st, "role")), "witness");
    ck_assert_str_eq(json_string_value(json_object_get(st, "node_name")), "witness");
    ck_assert_int_eq(json_integer_value(json_object_get(st, "epoch")), (json_int_t)epoch);
    ck_assert_str_eq(json_string_value(json_object_get(st, "peer_name")), primary);
    ck_assert(json_is_true(json_object_get(st, "link_up")) == link_up);
    /* No spool to fill (an alert on its free space would be false), a certificate to renew. */
    ck_assert(json_is_null(json_object_get(st, "spool_free_bytes")));
    ck_assert_int_gt(json_integer_value(json_object_get(st, "cert_not_after_unix")), time(NULL));
    json_decref(st);
}

/* ---- the tests, in order ---- */

START_TEST(a_primary_alive_denies)
{
    client_start(&A, "site-a", MSG_ROLE_SOURCE, 1);
    client_start(&B, "site-b", MSG_ROLE_SINK, 1);
    ck_assert_msg(run_until(reachable, &A, 5), "site-a: %s", arbiter_describe(A.arb));
    ck_assert_msg(run_until(reachable, &B, 5), "site-b: %s", arbiter_describe(B.arb));
    run_for(0.5); /* a few STATE reports */

    ask(&B, 1);
    expect_denied(&B, "the primary site-a was heard");
    ck_assert_uint_eq(B.verdict_epoch, 1); /* a denial carries the witness's epoch */
    ask(&A, 1);
    expect_denied(&A, "site-a is the primary");

    /* one request at a time */
    B.verdicts = 0;
    ck_assert_int_eq(request(&B, ARBITER_PROMOTE, 1, 0, 0), 0);
    ck_assert_int_eq(request(&B, ARBITER_PROMOTE, 1, 0, 0), -EBUSY);
    ck_assert(run_until(has_verdict, &B, 5));

    {
        char want[96];
        snprintf(want, sizeof(want), "witness@127.0.0.1:%d up, epoch 1", witness_port);
        ck_assert_str_eq(arbiter_describe(A.arb), want);
    }
    expect_status(1, "site-a", true);
    expect_state(1, "site-a"); /* the source of epoch 1, recorded on its first report */
    ck_assert_int_eq(A.fenced + B.fenced, 0);
}
END_TEST

START_TEST(b_primary_gone_grants)
{
    double gone;

    client_stop(&A);
    gone = now_s();
    ask(&B, 1);
    expect_denied(&B, "the primary site-a was heard");

    ask_until_granted(&B, 1, gone);
    ck_assert_msg(strstr(B.why, "epoch 2 granted to site-b") != NULL, "%s", B.why);
    /* the new primary has no standby yet: exposed since what it held */
    expect_record(2, "site-b", 0x3000000);
    ck_assert(state_exposed(&B.verdict));
    ck_assert_uint_eq(B.verdict.exposed_lsn, 0x3000000);
    ck_assert_str_eq(B.verdict.primary, "site-b");
    ck_assert(log_has("epoch 2 granted to site-b"));
    /* asked again by its holder: the same grant, not a new epoch */
    ask(&B, 1);
    ck_assert_msg(B.granted && B.verdict_epoch == 2, "%s", B.why);
    ck_assert_msg(strstr(B.why, "epoch 2 is site-b's already") != NULL, "%s", B.why);
    expect_state(2, "site-b");

    /* the agent promotes and says so; its link survives the grant (no self-fencing) */
    report(&B, MSG_ROLE_SOURCE, 2, 0x4000000, &B.verdict);
    run_for(0.6);
    ck_assert(arbiter_reachable(B.arb));
    ck_assert_int_eq(B.fenced, 0);
    expect_status(2, "site-b", true);
}
END_TEST

START_TEST(c_old_primary_fenced)
{
    char want[128];

    client_start(&A, "site-a", MSG_ROLE_SOURCE, 1);
    ck_assert_msg(run_until(is_fenced, &A, 5), "site-a not fenced: %s", arbiter_describe(A.arb));
    ck_assert_int_eq(A.fenced, 1);
    ck_assert_uint_eq(A.fenced_epoch, 2);
    ck_assert_str_eq(A.holder, "site-b");
    ck_assert(!arbiter_reachable(A.arb));
    ck_assert_int_eq(request(&A, ARBITER_PROMOTE, 1, 0, 0), -ENOTCONN);
    ck_assert_int_eq(arbiter_state(A.arb), ARBITER_STATE_FENCED);
    snprintf(want, sizeof(want), "witness@127.0.0.1:%d fenced: epoch 2 is held by site-b",
             witness_port);
    ck_assert_str_eq(arbiter_describe(A.arb), want);
    ck_assert(log_has("fenced: epoch 2 is held by site-b since"));

    /* rejoined as a sink at epoch 2 (the refusal did not say the mark): accepted again, and
     * told the record: site-b runs exposed, site-a is stale */
    report(&A, MSG_ROLE_SINK, 2, 0x3000000, NULL);
    ck_assert_msg(run_until(reachable, &A, 5), "%s", arbiter_describe(A.arb));
    ck_assert_int_eq(arbiter_state(A.arb), ARBITER_STATE_UP);
    expect_news(&A, 2, "site-b", 0x3000000);
    ck_assert_int_eq(A.fenced, 2);
    report(&A, MSG_ROLE_SINK, 2, 0x3000000, &A.news);
    /* epoch 2 is not granted twice; a stale standby is not promoted */
    ask(&A, 1);
    expect_denied(&A, "epoch 2 is already taken: the witness is at epoch 2, held by site-b");
    ask(&A, 2);
    expect_denied(&A, "site-a is stale: site-b runs exposed since 0/3000000");
    expect_denied(&A, "may be missing");
    run_for(0.5);
    ck_assert_int_eq(A.fenced, 2); /* told once */
}
END_TEST

/* Exposure and resync, with site-b the primary (epoch 2, exposed since its promotion) and
 * site-a its standby (a sink at epoch 2, told the mark in c). */
START_TEST(h_exposure_and_resync)
{
    /* only the primary may ask */
    ask_for(&A, ARBITER_EXPOSE, 2, 0x3000000);
    expect_denied(&A, "site-a is not the primary: epoch 2 is held by site-b");
    ask_for(&A, ARBITER_RESYNC, 2, 0);
    expect_denied(&A, "site-a is not the primary");
    expect_record(2, "site-b", 0x3000000);
    /* a primary that is down does not run exposed: its standby stays promotable */
    report(&B, MSG_ROLE_UNKNOWN, 2, 0x4000000, &B.verdict);
    run_for(0.3);
    ask_for(&B, ARBITER_EXPOSE, 2, 0x3000000);
    expect_denied(&B, "site-b does not report a running primary (unknown)");
    report(&B, MSG_ROLE_SOURCE, 2, 0x4000000, &B.verdict);
    run_for(0.3);

    /* site-a caught up: site-b is synchronous again, site-a promotable */
    ask_for(&B, ARBITER_RESYNC, 2, 0);
    ck_assert_msg(B.granted, "%s", B.why);
    ck_assert_uint_eq(B.verdict_epoch, 3);
    ck_assert(!state_exposed(&B.verdict));
    ck_assert_msg(strstr(B.why, "its standby site-a is synchronous again") != NULL, "%s", B.why);
    expect_record(3, "site-b", 0);
    expect_news(&A, 3, "site-b", 0);
    report(&A, MSG_ROLE_SINK, 3, 0x4000000, &A.news);
    report(&B, MSG_ROLE_SOURCE, 3, 0x4200000, &B.verdict);
    run_for(0.3);
    ask(&A, 3);
    expect_denied(&A, "the primary site-b was heard"); /* not stale: only alive */

    /* site-a lost for standby_loss_timeout: site-b runs exposed since site-a's 0/4100000 */
    ask_for(&B, ARBITER_EXPOSE, 3, 0x4100000);
    ck_assert_msg(B.granted, "%s", B.why);
    ck_assert_uint_eq(B.verdict_epoch, 4);
    ck_assert(state_exposed(&B.verdict));
    ck_assert_uint_eq(B.verdict.exposed_lsn, 0x4100000);
    ck_assert_msg(strstr(B.why, "the standby site-a is stale below 0/4100000") != NULL, "%s",
                  B.why);
    expect_record(4, "site-b", 0x4100000);
    ck_assert(log_has("epoch 4 granted to site-b: it runs exposed"));
    expect_news(&A, 4, "site-b", 0x4100000);
    report(&A, MSG_ROLE_SINK, 4, 0x4100000, &A.news);
    report(&B, MSG_ROLE_SOURCE, 4, 0x4800000, &B.verdict);
    run_for(0.3);
    /* a stale standby is never promoted: the denial says what may be lost */
    ask(&A, 4);
    expect_denied(&A, "site-a is stale: site-b runs exposed since 0/4100000");
    expect_denied(&A, "site-b last reported 0/4800000");
    ck_assert(arbiter_reachable(A.arb)); /* a standby's link survives the news */
    /* the holder asking again gets the same grant */
    ask_for(&B, ARBITER_EXPOSE, 3, 0x4100000);
    ck_assert_msg(B.granted && B.verdict_epoch == 4, "%s", B.why);
    ck_assert_msg(strstr(B.why, "epoch 4 is site-b's already") != NULL, "%s", B.why);
    expect_record(4, "site-b", 0x4100000);

    /* back to synchronous */
    ask_for(&B, ARBITER_RESYNC, 4, 0);
    ck_assert_msg(B.granted && B.verdict_epoch == 5, "%s", B.why);
    expect_record(5, "site-b", 0);
    expect_news(&A, 5, "site-b", 0);
    report(&A, MSG_ROLE_SINK, 5, 0x4900000, &A.news);
    report(&B, MSG_ROLE_SOURCE, 5, 0x4900000, &B.verdict);

    /* one grant per epoch: an exposure and a promotion race for epoch 6 */
    ask_for(&B, ARBITER_EXPOSE, 5, 0x4900000);
    ck_assert_msg(B.granted && B.verdict_epoch == 6, "%s", B.why);
    ask(&A, 5);
    expect_denied(&A, "epoch 6 is already taken: the witness is at epoch 6, held by site-b");
    expect_denied(&A, "running exposed");
    expect_news(&A, 6, "site-b", 0x4900000);
    report(&A, MSG_ROLE_SINK, 6, 0x4900000, &A.news);
    report(&B, MSG_ROLE_SOURCE, 6, 0x4900000, &B.verdict);
    ask_for(&B, ARBITER_RESYNC, 6, 0);
    ck_assert_msg(B.granted && B.verdict_epoch == 7, "%s", B.why);
    expect_record(7, "site-b", 0);
    expect_news(&A, 7, "site-b", 0);
    report(&A, MSG_ROLE_SINK, 7, 0x4900000, &A.news);
    report(&B, MSG_ROLE_SOURCE, 7, 0x4900000, &B.verdict);
    run_for(0.5);
    ck_assert(arbiter_reachable(A.arb) && arbiter_reachable(B.arb));
}
END_TEST

START_TEST(d_restart_keeps_epoch)
{
    struct client A1 = {.name = "site-a"};

    ck_assert_int_eq(stop_witness(SIGKILL) != -1, 1);
    ck_assert(run_until(unreachable, &B, 5));
    ck_assert(run_until(unreachable, &A, 5));
    start_witness();
    expect_status(7, "site-b", false);
    ck_assert_msg(run_until(reachable, &B, 5), "site-b: %s", arbiter_describe(B.arb));
    ck_assert_msg(run_until(reachable, &A, 5), "site-a: %s", arbiter_describe(A.arb));
    ck_assert_int_eq(B.fenced, 0);
    run_for(0.3);
    expect_status(7, "site-b", true);

    client_start(&A1, "site-a", MSG_ROLE_SOURCE, 1);
    ck_assert(run_until(is_fenced, &A1, 5));
    ck_assert_uint_eq(A1.fenced_epoch, 7);
    ck_assert_str_eq(A1.holder, "site-b");
    client_stop(&A1);
    config_free(&A1.cfg);
    expect_record(7, "site-b", 0);
}
END_TEST

START_TEST(f_wrong_certificates_refused)
{
    static const char *const certs[] = {"wrongname", "rogue-site-b"};
    static const char *const logged[] = {"name mismatch", "verif"};

    for (int i = 0; i < 2; i++) {
        struct client C = {.name = i == 0 ? "site-a" : "site-b"};

        client_start(&C, certs[i], MSG_ROLE_SINK, 7);
        run_for(1.2);
        ck_assert_msg(!arbiter_reachable(C.arb), "%s accepted", certs[i]);
        ck_assert_int_eq(request(&C, ARBITER_PROMOTE, 2, 0, 0), -ENOTCONN);
        ck_assert_msg(strstr(arbiter_describe(C.arb), " down (") != NULL, "%s",
                      arbiter_describe(C.arb));
        ck_assert_int_eq(C.fenced, 0);
        client_stop(&C);
        config_free(&C.cfg);
        ck_assert_msg(log_has(logged[i]), "the witness log does not say \"%s\"", logged[i]);
    }
    /* the genuine sites are unaffected */
    ck_assert(arbiter_reachable(A.arb) && arbiter_reachable(B.arb));
}
END_TEST

START_TEST(g_dead_primary_fenced_on_live_link)
{
    double lost;

    int a_told = A.fenced, b_told = B.fenced;

    /* site-b's PostgreSQL died: its agent says so, its link stays up */
    report(&B, MSG_ROLE_UNKNOWN, 7, 0x4000000, NULL);
    lost = now_s();
    run_for(0.1);
    ask(&A, 7);
    expect_denied(&A, "the primary site-b reported itself the source");
    ask_until_granted(&A, 7, lost);
    expect_record(8, "site-a", 0x3000000);

    ck_assert_msg(run_until(is_fenced, &B, 3), "site-b not told");
    ck_assert_uint_eq(B.fenced_epoch, 8);
    ck_assert_str_eq(B.holder, "site-a");
    ck_assert(run_until(unreachable, &B, 3)); /* its next STATE, at epoch 7, was refused */

    report(&A, MSG_ROLE_SOURCE, 8, 0x5000000, &A.verdict);
    run_for(0.6);
    ck_assert(arbiter_reachable(A.arb));
    ck_assert_int_eq(A.fenced, a_told);
    ck_assert_int_eq(B.fenced, b_told + 1);
}
END_TEST

START_TEST(i_switchover_reported_by_the_old_primary)
{
    struct wm_state rec;

    /* site-b, fenced in g, comes back as site-a's standby */
    report(&B, MSG_ROLE_SINK, 8, 0x5000000, NULL);
    ck_assert_msg(run_until(reachable, &B, 5), "%s", arbiter_describe(B.arb));
    /* the switchover: site-b promoted itself at epoch 9 and told site-a, whose agent reports
     * the new epoch before its role changes */
    state_init(&rec);
    rec.epoch = 9;
    snprintf(rec.primary, sizeof(rec.primary), "site-b");
    report(&A, MSG_ROLE_SOURCE, 9, 0x6000000, &rec);
    run_for(0.6);
    expect_state(9, "site-b");
    ck_assert(log_has("site-a reports epoch 9, newer than the witness's: adopted, held by site-b"));
    report(&B, MSG_ROLE_SOURCE, 9, 0x6000100, &rec);
    report(&A, MSG_ROLE_SINK, 9, 0x6000000, &rec);
    run_for(0.6);
    ck_assert(arbiter_reachable(A.arb));
    ck_assert(arbiter_reachable(B.arb));
    /* site-a, the standby now, may not be promoted while site-b is heard: for that reason */
    ask(&A, 9);
    expect_denied(&A, "the primary site-b");
    expect_state(9, "site-b");
}
END_TEST

START_TEST(e_witness_unreachable)
{
    struct client N = {.name = "site-b"};
    int status;

    /* stopped: no answer */
    ck_assert_int_eq(kill(witness_pid, SIGSTOP), 0);
    A.verdicts = 0;
    ck_assert_int_eq(request(&A, ARBITER_EXPOSE, 8, 0x5000000, 0x4000000), 0);
    ck_assert(run_until(has_verdict, &A, ARBITER_VOTE_TIMEOUT_MS / 1000.0 + 2));
    ck_assert(!A.granted);
    ck_assert(run_until(unreachable, &A, 3));
    /* an isolated primary never gets to run exposed */
    ck_assert_int_eq(request(&A, ARBITER_EXPOSE, 8, 0x5000000, 0x4000000), -ENOTCONN);
    ck_assert_int_eq(arbiter_state(A.arb), ARBITER_STATE_DOWN);
    ck_assert_msg(strstr(arbiter_describe(A.arb), " down (") != NULL, "%s",
                  arbiter_describe(A.arb));

    /* a clean stop */
    ck_assert_int_eq(kill(witness_pid, SIGCONT), 0);
    status = stop_witness(SIGTERM);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "the witness did not stop cleanly (status %d); see %s", status, log_path);
    run_for(1.2);
    ck_assert(!arbiter_reachable(A.arb));
    ck_assert_int_eq(request(&A, ARBITER_PROMOTE, 8, 0, 0), -ENOTCONN);

    /* no witness configured */
    memset(&N.cfg, 0, sizeof(N.cfg));
    ck_assert_int_eq(arbiter_new(&N.arb, loop, &N.cfg, &client_cb, &N), 0);
    report(&N, MSG_ROLE_SINK, 1, 0, NULL);
    ck_assert(!arbiter_reachable(N.arb));
    ck_assert_int_eq(request(&N, ARBITER_PROMOTE, 1, 0, 0), -ENOTCONN);
    ck_assert_int_eq(request(&N, ARBITER_EXPOSE, 1, 0, 0), -ENOTCONN);
    ck_assert_int_eq(arbiter_state(N.arb), ARBITER_STATE_NONE);
    ck_assert_str_eq(arbiter_kind(N.arb), "none");
    ck_assert_msg(strncmp(arbiter_describe(N.arb), "none", 4) == 0, "%s",
                  arbiter_describe(N.arb));
    arbiter_free(N.arb);
    /* NULL behaves as none */
    {
        struct arbiter_report r = {.role = MSG_ROLE_SINK, .epoch = 1};
        struct arbiter_request q = {.ask = ARBITER_PROMOTE, .epoch = 1};

        arbiter_report(NULL, &r);
        ck_assert_int_eq(arbiter_request(NULL, &q), -ENOTCONN);
    }
    ck_assert(!arbiter_reachable(NULL));
    ck_assert_int_eq(arbiter_state(NULL), ARBITER_STATE_NONE);
    ck_assert_msg(strncmp(arbiter_describe(NULL), "none", 4) == 0, "%s", arbiter_describe(NULL));
    arbiter_free(NULL);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("witness");
    TCase *tc = tcase_create("witness");
    SRunner *sr;
    int failed;

    if (access(AGENT, X_OK) != 0) {
        fprintf(stderr, "%s is missing: build the walmirror-agent target\n", AGENT);
        return 1;
    }
    tu_require(curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK);
    signal(SIGPIPE, SIG_IGN);
    owner = getpid();
    atexit(kill_witness_at_exit);
    dir = tu_tmpdir("witness");
    snprintf(conf, sizeof(conf), "%s/witness.conf", dir);
    snprintf(log_path, sizeof(log_path), "%s/witness.log", dir);
    snprintf(state_dir, sizeof(state_dir), "%s/state", dir);
    tu_require(mkdir(state_dir, 0700) == 0);
    (void)tu_certs();
    witness_port = tu_free_port();
    http_port = tu_free_port();
    write_witness_conf();
    tu_require(wio_loop_new(&loop, 256) == 0);
    start_witness();

    tcase_add_test(tc, a_primary_alive_denies);
    tcase_add_test(tc, b_primary_gone_grants);
    tcase_add_test(tc, c_old_primary_fenced);
    tcase_add_test(tc, h_exposure_and_resync);
    tcase_add_test(tc, d_restart_keeps_epoch);
    tcase_add_test(tc, f_wrong_certificates_refused);
    tcase_add_test(tc, g_dead_primary_fenced_on_live_link);
    tcase_add_test(tc, i_switchover_reported_by_the_old_primary);
    tcase_add_test(tc, e_witness_unreachable);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    /* One witness for all the tests, in order: its pid and the arbiters must stay known. */
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);

    stop_witness(SIGTERM);
    client_stop(&A);
    client_stop(&B);
    /* Let BYEs leave and cancelled timers and connects complete before the loop goes. */
    for (int i = 0; i < 30; i++)
        if (wio_run_once(loop, 10) < 0)
            break;
    wio_loop_free(loop);
    config_free(&A.cfg);
    config_free(&B.cfg);
    if (failed != 0)
        fprintf(stderr, "witness log: %s (kept)\n", log_path);
    else
        tu_rmtree(dir);
    free(dir);
    curl_global_cleanup();
    return failed == 0 ? 0 : 1;
}
