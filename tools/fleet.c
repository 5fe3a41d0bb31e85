/*
 * fleet.c - walmirrorctl fleet; contract in fleet.h.
 *
 * The range request goes through the agent's own etcd client (agent/etcd.h) on a wio loop of
 * its own, run until the answer; the keys are sorted into pairs with etcdrec_split() and read
 * with etcdrec's parsers, so that the CLI reads exactly what the arbiters write.
 */
#include "fleet.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "etcd.h"
#include "etcdrec.h"
#include "log.h"
#include "msg.h"
#include "util.h"
#include "wio.h"

#define FLEET_PAIRS_MAX 1024
#define FLEET_MEMBERS_MAX 4 /* a pair has two; room for a misconfigured third */
#define FLEET_WAIT_MS 15000

struct fleet_member {
    struct etcdrec_member m;
    json_t *raw; /* the record as etcd holds it */
};

struct fleet_pair {
    char prefix[ETCDREC_PREFIX_MAX + 1];
    bool have_epoch;
    struct wm_state rec;
    bool paused;
    char bad[256]; /* a record that could not be read */
    struct fleet_member members[FLEET_MEMBERS_MAX];
    int n_members;
};

struct fleet_args {
    const char *endpoints, *ca, *cert, *key;
    const char *root;
    bool json;
};

struct fleet_call {
    bool done;
    int rc;
    json_t *answer;
    char why[ETCD_WHY_MAX];
};

static void
usage(FILE *f)
{
    fprintf(f, "usage: walmirrorctl fleet --etcd ENDPOINTS [--etcd-ca FILE --etcd-cert FILE "
               "--etcd-key FILE]\n"
               "                          [--prefix ROOT] [--json]\n"
               "  ENDPOINTS: the etcd members' client URLs, e.g. "
               "https://10.0.0.1:2379,https://10.0.0.2:2379\n"
               "  ROOT: where the pairs' prefixes lie (default " ETCDREC_ROOT ")\n");
}

bool
fleet_wanted(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "fleet") == 0 || strncmp(argv[i], "--etcd", 6) == 0)
            return true;
    return false;
}

/* "--name VALUE" or "--name=VALUE" at argv[*i]: the value, advancing *i; NULL otherwise. */
static const char *
option(int argc, char **argv, int *i, const char *name, bool *bad)
{
    size_t n = strlen(name);
    const char *a = argv[*i];

    if (strncmp(a, name, n) != 0)
        return NULL;
    if (a[n] == '=')
        return a + n + 1;
    if (a[n] != '\0')
        return NULL;
    if (*i + 1 >= argc) {
        *bad = true;
        return NULL;
    }
    return argv[++*i];
}

static int
parse_args(int argc, char **argv, struct fleet_args *fa)
{
    static const char *const names[] = {"--etcd-ca", "--etcd-cert", "--etcd-key", "--etcd",
                                        "--prefix"};
    const char **slots[] = {&fa->ca, &fa->cert, &fa->key, &fa->endpoints, &fa->root};
    bool command = false, bad = false;

    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        size_t k;

        for (k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
            v = option(argc, argv, &i, names[k], &bad);
            if (v != NULL || bad)
                break;
        }
        if (bad)
            return -1;
        if (v != NULL) {
            if (*slots[k] != NULL) {
                fprintf(stderr, "walmirrorctl: %s given twice\n", names[k]);
                return -1;
            }
            *slots[k] = v;
        } else if (strcmp(argv[i], "--json") == 0) {
            fa->json = true;
        } else if (strcmp(argv[i], "fleet") == 0 && !command) {
            command = true;
        } else {
            fprintf(stderr, "walmirrorctl: fleet: unexpected \"%s\"\n", argv[i]);
            return -1;
        }
    }
    if (!command || fa->endpoints == NULL) {
        fprintf(stderr, "walmirrorctl: fleet needs --etcd ENDPOINTS\n");
        return -1;
    }
    if ((fa->cert == NULL) != (fa->key == NULL)) {
        fprintf(stderr, "walmirrorctl: --etcd-cert and --etcd-key go together\n");
        return -1;
    }
    if (fa->root == NULL)
        fa->root = ETCDREC_ROOT;
    if (fa->root[0] != '/' || fa->root[strlen(fa->root) - 1] != '/' ||
        strlen(fa->root) > ETCDREC_PREFIX_MAX) {
        fprintf(stderr, "walmirrorctl: --prefix \"%s\" must start and end with '/'\n", fa->root);
        return -1;
    }
    return 0;
}

static void
on_answer(void *ctx, int rc, json_t *answer, const char *why)
{
    struct fleet_call *fc = ctx;

    fc->done = true;
    fc->rc = rc;
    fc->answer = json_incref(answer);
    snprintf(fc->why, sizeof(fc->why), "%s", why);
}

/* The range of root, through the endpoints in turn.  Returns 0 with fc->answer, -2 for bad
 * endpoints, or -1 (said on stderr). */
static int
read_root(const struct fleet_args *fa, struct fleet_call *fc)
{
    struct etcd_client_config ec = {.endpoints = fa->endpoints,
                                    .ca = fa->ca,
                                    .cert = fa->cert,
                                    .key = fa->key,
                                    .request_timeout_ms = 3000,
                                    .log_comp = "etcd"};
    struct etcd_client *c = NULL;
    struct wio_loop *loop = NULL;
    char err[512];
    uint64_t end = clock_mono_ms() + FLEET_WAIT_MS;
    json_t *body;
    int rc;

    rc = wio_loop_new(&loop, 64);
    if (rc < 0) {
        fprintf(stderr, "walmirrorctl: cannot set up io_uring: %s\n", strerror(-rc));
        return -1;
    }
    rc = etcd_client_new(&c, loop, &ec, err, sizeof(err));
    if (rc < 0) {
        fprintf(stderr, "walmirrorctl: --etcd: %s\n", err);
        wio_loop_free(loop);
        return rc == -EINVAL ? -2 : -1;
    }
    body = json_pack("{s:o, s:o}", "key", etcd_b64(fa->root, strlen(fa->root)), "range_end",
                     etcd_prefix_end(fa->root));
    rc = etcd_call(c, "kv/range", body, on_answer, fc, NULL);
    while (rc == 0 && !fc->done && clock_mono_ms() < end)
        rc = wio_run_once(loop, 100) < 0 ? -1 : 0;
    etcd_client_free(c);
    for (int i = 0; i < 20; i++) /* cancelled polls and the timer come back */
        if (wio_run_once(loop, 5) <= 0)
            break;
    wio_loop_free(loop);
    if (!fc->done || fc->rc < 0) {
        fprintf(stderr, "walmirrorctl: etcd: %s\n", fc->done ? fc->why : "no answer within 15 s");
        return -1;
    }
    return 0;
}

static struct fleet_pair *
pair_of(struct fleet_pair *pairs, int *n, const char *key, size_t len)
{
    for (int i = 0; i < *n; i++)
        if (strlen(pairs[i].prefix) == len && memcmp(pairs[i].prefix, key, len) == 0)
            return &pairs[i];
    if (*n == FLEET_PAIRS_MAX || len > ETCDREC_PREFIX_MAX)
        return NULL;
    memset(&pairs[*n], 0, sizeof(pairs[*n]));
    memcpy(pairs[*n].prefix, key, len);
    pairs[*n].prefix[len] = '\0';
    state_init(&pairs[*n].rec);
    return &pairs[(*n)++];
}

/* Sorts the range's keys into pairs.  Returns the number of pairs, or -1. */
static int
collect(json_t *answer, struct fleet_pair *pairs)
{
    json_t *kvs = json_object_get(answer, "kvs"), *kv;
    size_t i;
    int n = 0;

    json_array_foreach(kvs, i, kv)
    {
        struct etcd_kv d;
        struct fleet_pair *p;
        size_t plen;
        enum etcdrec_key kind;
        char err[200];

        if (etcd_kv_decode(kv, &d) < 0) {
            fprintf(stderr, "walmirrorctl: etcd's answer holds a malformed key\n");
            return -1;
        }
        kind = etcdrec_split(d.key, d.key_len, &plen);
        p = kind != ETCDREC_KEY_OTHER ? pair_of(pairs, &n, d.key, plen) : NULL;
        if (p == NULL) {
            etcd_kv_clear(&d);
            continue;
        }
        if (kind == ETCDREC_KEY_EPOCH) {
            p->have_epoch =
                etcdrec_epoch_parse(d.value, d.value_len, &p->rec, err, sizeof(err)) == 0;
            if (!p->have_epoch)
                snprintf(p->bad, sizeof(p->bad), "%s", err);
        } else if (kind == ETCDREC_KEY_PAUSED) {
            p->paused = true;
        } else if (p->n_members < FLEET_MEMBERS_MAX) {
            struct fleet_member *m = &p->members[p->n_members];

            if (etcdrec_member_parse(d.value, d.value_len, &m->m, err, sizeof(err)) == 0) {
                m->raw = json_loadb(d.value, d.value_len, 0, NULL);
                p->n_members++;
            } else {
                snprintf(p->bad, sizeof(p->bad), "%s", err);
            }
        }
        etcd_kv_clear(&d);
    }
    return n;
}

/* The member whose report speaks for the pair: the holder if it is the source, else any
 * source. */
static const struct etcdrec_member *
speaker(const struct fleet_pair *p)
{
    const struct etcdrec_member *any = NULL;

    for (int i = 0; i < p->n_members; i++) {
        const struct etcdrec_member *m = &p->members[i].m;

        if (m->role != MSG_ROLE_SOURCE)
            continue;
        if (strcmp(m->node, p->rec.primary) == 0)
            return m;
        if (any == NULL)
            any = m;
    }
    return any;
}

static const char *
bytes_text(char *buf, size_t cap, uint64_t n)
{
    static const char *const units[] = {"B", "kB", "MB", "GB", "TB"};
    double v = (double)n;
    int u = 0;

    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(buf, cap, "%" PRIu64 " B", n);
    else
        snprintf(buf, cap, "%.1f %s", v, units[u]);
    return buf;
}

static const char *
lag_text(char *buf, size_t cap, uint64_t bytes, double s)
{
    char b[32];

    if (s < 0)
        snprintf(buf, cap, "%s", bytes_text(b, sizeof(b), bytes));
    else
        snprintf(buf, cap, "%s %.3f s", bytes_text(b, sizeof(b), bytes), s);
    return buf;
}

static const char *
pair_name(const struct fleet_pair *p, const char *root)
{
    static char name[ETCDREC_PREFIX_MAX + 1];
    size_t r = strlen(root), n = strlen(p->prefix);

    if (n > r + 1 && strncmp(p->prefix, root, r) == 0)
        snprintf(name, sizeof(name), "%.*s", (int)(n - r - 1), p->prefix + r);
    else
        snprintf(name, sizeof(name), "%s", p->prefix);
    return name;
}

static void
print_table(const struct fleet_pair *pairs, int n, const char *root)
{
    printf("%-24s %5s  %-12s %-40s %-36s %-9s %-16s %s\n", "PAIR", "EPOCH", "HOLDER", "EXPOSED",
           "NODES", "SYNC", "FLUSH LAG", "APPLY LAG");
    for (int i = 0; i < n; i++) {
        const struct fleet_pair *p = &pairs[i];
        const struct etcdrec_member *s = speaker(p);
        char exposed[96], nodes[320] = "", when[32], flush[48], apply[48], risk[32];

        if (state_exposed(&p->rec)) {
            snprintf(exposed, sizeof(exposed), "since " LSN_FMT " %s", LSN_ARGS(p->rec.exposed_lsn),
                     wm_format_utc(when, sizeof(when), p->rec.exposed_unix_us));
        } else {
            snprintf(exposed, sizeof(exposed), "%s", p->have_epoch ? "no" : "-");
        }
        for (int j = 0; j < p->n_members; j++) {
            size_t used = strlen(nodes);

            snprintf(nodes + used, sizeof(nodes) - used, "%s%s %s@%" PRIu64, j > 0 ? ", " : "",
                     p->members[j].m.node, msg_role_name(p->members[j].m.role),
                     p->members[j].m.epoch);
        }
        if (s != NULL) {
            lag_text(flush, sizeof(flush), s->flush_lag_bytes, s->flush_lag_s);
            lag_text(apply, sizeof(apply), s->apply_lag_bytes, s->apply_lag_s);
        }
        printf("%-24s %5" PRIu64 "  %-12s %-40s %-36s %-9s %-16s %s\n", pair_name(p, root),
               p->rec.epoch, p->rec.primary[0] != '\0' ? p->rec.primary : "-", exposed,
               nodes[0] != '\0' ? nodes : "-",
               s != NULL && s->sync_state[0] != '\0' ? s->sync_state : "-", s != NULL ? flush : "-",
               s != NULL ? apply : "-");
        if (s != NULL && s->wal_at_risk_bytes > 0)
            printf("%-24s WAL at risk: %s\n", "",
                   bytes_text(risk, sizeof(risk), s->wal_at_risk_bytes));
        if (p->paused)
            printf("%-24s automatic fail-over paused (%spaused)\n", "", p->prefix);
        if (p->bad[0] != '\0')
            printf("%-24s unreadable record: %s\n", "", p->bad);
    }
    if (n == 0)
        printf("(no pair under %s)\n", root);
}

static int
print_json(const struct fleet_pair *pairs, int n, const char *root)
{
    json_t *out = json_array();
    char *text;

    for (int i = 0; i < n && out != NULL; i++) {
        const struct fleet_pair *p = &pairs[i];
        json_t *members = json_array();
        char lsn[24];

        snprintf(lsn, sizeof(lsn), LSN_FMT, LSN_ARGS(p->rec.exposed_lsn));
        for (int j = 0; j < p->n_members && members != NULL; j++)
            json_array_append(members, p->members[j].raw != NULL ? p->members[j].raw : json_null());
        json_array_append_new(
            out,
            json_pack("{s:s, s:s, s:I, s:s, s:b, s:s, s:I, s:b, s:o}", "pair", pair_name(p, root),
                      "prefix", p->prefix, "epoch", (json_int_t)p->rec.epoch, "holder",
                      p->rec.primary, "exposed", state_exposed(&p->rec), "exposed_lsn", lsn,
                      "exposed_since_unix_us", (json_int_t)p->rec.exposed_unix_us, "paused",
                      p->paused, "members", members != NULL ? members : json_array()));
    }
    text = out != NULL ? json_dumps(out, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(out);
    if (text == NULL) {
        fprintf(stderr, "walmirrorctl: out of memory\n");
        return 1;
    }
    printf("%s\n", text);
    free(text);
    return 0;
}

int
fleet_main(int argc, char **argv)
{
    struct fleet_args fa = {0};
    struct fleet_call fc = {0};
    struct fleet_pair *pairs;
    int n, rc;

    if (parse_args(argc, argv, &fa) < 0) {
        usage(stderr);
        return 2;
    }
    log_level = LOG_LEVEL_ERROR; /* the client's per-endpoint lines: the error below says it */
    rc = read_root(&fa, &fc);
    if (rc < 0) {
        json_decref(fc.answer);
        return rc == -2 ? 2 : 1;
    }
    pairs = calloc(FLEET_PAIRS_MAX, sizeof(*pairs));
    if (pairs == NULL) {
        json_decref(fc.answer);
        fprintf(stderr, "walmirrorctl: out of memory\n");
        return 1;
    }
    n = collect(fc.answer, pairs);
    json_decref(fc.answer);
    rc = 1;
    if (n >= 0) {
        if (fa.json) {
            rc = print_json(pairs, n, fa.root);
        } else {
            print_table(pairs, n, fa.root);
            rc = 0;
        }
    }
    for (int i = 0; i < (n > 0 ? n : 0); i++)
        for (int j = 0; j < pairs[i].n_members; j++)
            json_decref(pairs[i].members[j].raw);
    free(pairs);
    return rc;
}
