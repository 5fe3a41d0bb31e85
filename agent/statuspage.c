/*
 * statuspage.c - the status page and the Statuspage-shaped summary; contract and the
 * components' rule in statuspage.h.
 *
 * Everything is made from one snapshot copied off the board: the HTML with stdio into a
 * memory stream, the summary with jansson.  Text from the snapshot is HTML-escaped (and made
 * valid UTF-8) before it reaches the page.  The lag chart is inline SVG: the flush and apply
 * lag of the last hour (struct status_lag_history), scaled to the largest value shown.
 */
#include "statuspage.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"

/* A fixed-size snapshot field that may lack its NUL, for "%.*s". */
#define FIELD(f) (int)strnlen((f), sizeof(f)), (f)

static void utc_text(char *buf, size_t cap, uint64_t unix_us, bool iso);

static const char *const state_names[] = {
    [STATUSPAGE_OPERATIONAL] = "operational",       [STATUSPAGE_DEGRADED] = "degraded_performance",
    [STATUSPAGE_PARTIAL] = "partial_outage",        [STATUSPAGE_MAJOR] = "major_outage",
    [STATUSPAGE_MAINTENANCE] = "under_maintenance",
};

static const char *const state_titles[] = {
    [STATUSPAGE_OPERATIONAL] = "Operational",       [STATUSPAGE_DEGRADED] = "Degraded performance",
    [STATUSPAGE_PARTIAL] = "Partial outage",        [STATUSPAGE_MAJOR] = "Major outage",
    [STATUSPAGE_MAINTENANCE] = "Under maintenance",
};

static const char *const state_colors[] = {
    [STATUSPAGE_OPERATIONAL] = "#2e8540", [STATUSPAGE_DEGRADED] = "#c9a400",
    [STATUSPAGE_PARTIAL] = "#e06c00",     [STATUSPAGE_MAJOR] = "#c0262d",
    [STATUSPAGE_MAINTENANCE] = "#1f6fb2",
};

const char *
statuspage_state_name(enum statuspage_state st)
{
    return state_names[st];
}

static bool
field_eq(const char *field, size_t cap, const char *v)
{
    return strnlen(field, cap) == strlen(v) && strncmp(field, v, cap) == 0;
}
#define IS(s, field, v) field_eq((s)->field, sizeof((s)->field), (v))

bool
statuspage_stale(const struct status_snapshot *s, uint64_t now_unix_us)
{
    if (s->role[0] == '\0' || s->now_unix_us == 0)
        return true;
    return now_unix_us > s->now_unix_us && now_unix_us - s->now_unix_us > STATUSPAGE_STALE_US;
}

void
statuspage_thresholds_default(struct statuspage_thresholds *t)
{
    t->degraded_bytes = STATUSPAGE_DEGRADED_BYTES;
    t->degraded_s = STATUSPAGE_DEGRADED_SECONDS;
    t->partial_bytes = STATUSPAGE_PARTIAL_BYTES;
    t->partial_s = STATUSPAGE_PARTIAL_SECONDS;
}

void
statuspage_thresholds_from_config(struct statuspage_thresholds *t, const struct wm_config *cfg)
{
    statuspage_thresholds_default(t);
    if (cfg == NULL || cfg->status_partial_lag_bytes == 0)
        return; /* a witness's: the keys are a site's */
    t->degraded_bytes = cfg->status_degraded_lag_bytes;
    t->degraded_s = (double)cfg->status_degraded_lag_ms / 1000.0;
    t->partial_bytes = cfg->status_partial_lag_bytes;
    t->partial_s = (double)cfg->status_partial_lag_ms / 1000.0;
}

/* th, or the defaults in *buf when th is NULL. */
static const struct statuspage_thresholds *
thresholds_or_default(const struct statuspage_thresholds *th, struct statuspage_thresholds *buf)
{
    if (th != NULL)
        return th;
    statuspage_thresholds_default(buf);
    return buf;
}

static void __attribute__((format(printf, 3, 4)))
set(struct statuspage_component *c, enum statuspage_state st, const char *fmt, ...)
{
    va_list ap;

    c->state = st;
    va_start(ap, fmt);
    vsnprintf(c->why, sizeof(c->why), fmt, ap);
    va_end(ap);
}

static void
human_bytes(char *buf, size_t cap, uint64_t v)
{
    if (v >= (1ULL << 30))
        snprintf(buf, cap, "%.1f GiB", (double)v / (double)(1ULL << 30));
    else if (v >= (1ULL << 20))
        snprintf(buf, cap, "%.1f MiB", (double)v / (double)(1ULL << 20));
    else if (v >= 1024)
        snprintf(buf, cap, "%.1f KiB", (double)v / 1024.0);
    else
        snprintf(buf, cap, "%" PRIu64 " B", v);
}

enum statuspage_state
statuspage_components(const struct status_snapshot *s, const struct statuspage_thresholds *th,
                      uint64_t now_unix_us, struct statuspage_component *out)
{
    struct statuspage_thresholds defaults;
    const struct statuspage_thresholds *t = thresholds_or_default(th, &defaults);
    struct statuspage_component *db = &out[STATUSPAGE_DATABASE], *mi = &out[STATUSPAGE_MIRROR],
                                *li = &out[STATUSPAGE_LINK];
    bool source = IS(s, role, "source"), sink = IS(s, role, "sink");
    bool writes_paused = IS(s, operation, "switchover") || IS(s, operation, "failover");
    uint64_t lag_b =
        s->flush_lag_bytes > s->apply_lag_bytes ? s->flush_lag_bytes : s->apply_lag_bytes;
    double lag_s = s->flush_lag_s > s->apply_lag_s ? s->flush_lag_s : s->apply_lag_s;
    enum statuspage_state worst = STATUSPAGE_OPERATIONAL;
    char lagtext[64];

    memset(out, 0, sizeof(*out) * STATUSPAGE_COMPONENTS);
    db->id = "database";
    mi->id = "mirror";
    li->id = "link";
    /* The primary is this site on a source; the peer otherwise. */
    if (source) {
        snprintf(db->name, sizeof(db->name), "%.*s database", FIELD(s->node_name));
        snprintf(mi->name, sizeof(mi->name), "%.*s mirror", FIELD(s->peer_name));
    } else {
        snprintf(db->name, sizeof(db->name), "%.*s database", FIELD(s->peer_name));
        snprintf(mi->name, sizeof(mi->name), "%.*s mirror", FIELD(s->node_name));
    }
    snprintf(li->name, sizeof(li->name), "replication link");
    human_bytes(lagtext, sizeof(lagtext), lag_b);

    if (strncmp(s->maintenance, "active", 6) == 0) {
        for (int i = 0; i < STATUSPAGE_COMPONENTS; i++)
            set(&out[i], STATUSPAGE_MAINTENANCE, "maintenance window: %.*s", FIELD(s->maintenance));
        return STATUSPAGE_MAINTENANCE;
    }
    if (statuspage_stale(s, now_unix_us)) {
        for (int i = 0; i < STATUSPAGE_COMPONENTS; i++)
            set(&out[i], STATUSPAGE_PARTIAL, "unknown: the agent has not updated its status");
        return STATUSPAGE_PARTIAL;
    }

    if (IS(s, role, "witness")) {
        /* A witness sees only whom it hears: peer_name is the primary site, link_up whether it
         * hears it, sync_state "sync" whether it hears both sites. */
        bool both = IS(s, sync_state, "sync");
        if (s->link_up)
            set(db, STATUSPAGE_OPERATIONAL, "heard by the witness");
        else
            set(db, STATUSPAGE_PARTIAL, "not heard by the witness");
        snprintf(mi->name, sizeof(mi->name), "standby site mirror");
        for (int i = STATUSPAGE_MIRROR; i <= STATUSPAGE_LINK; i++)
            if (both)
                set(&out[i], STATUSPAGE_OPERATIONAL,
                    "both sites heard by the witness (lag is on the sites' pages)");
            else
                set(&out[i], STATUSPAGE_PARTIAL, "the witness does not hear both sites");
        for (int i = 0; i < STATUSPAGE_COMPONENTS; i++)
            if (out[i].state > worst)
                worst = out[i].state;
        return worst;
    }
    if (writes_paused)
        set(db, STATUSPAGE_MAJOR, "writes paused: %.*s in progress (%.*s)", FIELD(s->operation),
            FIELD(s->op_step));
    else if (source && IS(s, pg_state, "primary"))
        set(db, STATUSPAGE_OPERATIONAL, "primary, taking writes");
    else if (source)
        set(db, STATUSPAGE_MAJOR, "the primary does not stream to its agent");
    else if (sink && s->link_up)
        set(db, STATUSPAGE_OPERATIONAL, "primary, streaming to this site");
    else if (sink)
        set(db, STATUSPAGE_PARTIAL, "not seen from this site: the link is down");
    else
        set(db, STATUSPAGE_PARTIAL, "not observed from this site (%.*s)", FIELD(s->role));

    if (!source && !sink)
        set(mi, STATUSPAGE_MAJOR, "%.*s: must rejoin before it mirrors again", FIELD(s->role));
    else if (IS(s, operation, "rejoin"))
        set(mi, STATUSPAGE_MAJOR, "rejoining: %.*s", FIELD(s->op_step));
    else if (s->exposed) {
        char since[40];

        utc_text(since, sizeof(since), s->exposed_since_unix_us, false);
        set(mi, STATUSPAGE_MAJOR,
            "running exposed since %s: commits are acknowledged without the standby; "
            "%" PRIu64 " bytes of WAL at risk", since, s->wal_at_risk_bytes);
    } else if (s->stale)
        set(mi, STATUSPAGE_MAJOR,
            "stale: the primary runs exposed; this standby is not promoted by itself");
    else if (!s->link_up)
        set(mi, STATUSPAGE_MAJOR, "not receiving WAL: the link is down");
    else if (s->spool_stall[0] != '\0')
        set(mi, STATUSPAGE_MAJOR, "the spool has no space: synchronous commits wait");
    else if (lag_b >= t->partial_bytes || lag_s >= t->partial_s)
        set(mi, STATUSPAGE_PARTIAL, "far behind: %s, %.1f s", lagtext, lag_s < 0 ? 0 : lag_s);
    else if (lag_b >= t->degraded_bytes || lag_s >= t->degraded_s)
        set(mi, STATUSPAGE_DEGRADED, "behind: %s, %.1f s", lagtext, lag_s < 0 ? 0 : lag_s);
    else if (sink && !IS(s, pg_state, "standby"))
        set(mi, STATUSPAGE_DEGRADED,
            "WAL is durable here, but the standby does not stream from the WAL server");
    else
        set(mi, STATUSPAGE_OPERATIONAL, "in sync, %s behind", lagtext);

    if (!s->link_up)
        set(li, STATUSPAGE_MAJOR, "down");
    else if (IS(s, sync_state, "down"))
        set(li, STATUSPAGE_PARTIAL, "connected, but WAL does not flow");
    else if (IS(s, sync_state, "catchup"))
        set(li, STATUSPAGE_DEGRADED, "catching up");
    else
        set(li, STATUSPAGE_OPERATIONAL, "synchronous, round trip %.1f ms",
            (double)s->rtt_us / 1000.0);

    for (int i = 0; i < STATUSPAGE_COMPONENTS; i++)
        if (out[i].state > worst)
            worst = out[i].state;
    return worst;
}

/* ---- HTML ---- */

/* Text with <, >, &, " escaped; bytes outside printable ASCII become '?'. */
static void
html_text(FILE *f, const char *s, size_t cap)
{
    for (size_t i = 0; i < cap && s[i] != '\0'; i++) {
        unsigned char ch = (unsigned char)s[i];
        switch (ch) {
        case '<':
            fputs("&lt;", f);
            break;
        case '>':
            fputs("&gt;", f);
            break;
        case '&':
            fputs("&amp;", f);
            break;
        case '"':
            fputs("&quot;", f);
            break;
        default:
            fputc(ch < 0x20 || ch >= 0x7f ? '?' : ch, f);
        }
    }
}
#define HTML(f, s) html_text((f), (s), sizeof(s))

static void
utc_text(char *buf, size_t cap, uint64_t unix_us, bool iso)
{
    time_t t = (time_t)(unix_us / 1000000);
    struct tm tm;

    if (gmtime_r(&t, &tm) == NULL ||
        strftime(buf, cap, iso ? "%Y-%m-%dT%H:%M:%SZ" : "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
        snprintf(buf, cap, "?");
}

#define CHART_W 720
#define CHART_H 180
#define CHART_PAD 44

static void
chart_line(FILE *f, const struct status_lag_history *h, uint64_t from_us, double ymax, bool apply,
           const char *color)
{
    unsigned drawn = 0;

    for (unsigned i = 0; i < h->n; i++) {
        const struct status_lag_sample *p = status_lag_at(h, i);
        double x, y, v = (double)(apply ? p->apply_bytes : p->flush_bytes);

        if (p->unix_us < from_us || p->unix_us > from_us + 3600000000ULL)
            continue;
        x = CHART_PAD + (double)(p->unix_us - from_us) / 3600e6 * (CHART_W - CHART_PAD - 8);
        y = 8 + (CHART_H - 28) * (1.0 - (v > ymax ? 1.0 : v / ymax));
        if (drawn++ == 0)
            fprintf(f,
                    "<polyline class=\"lag-%s\" fill=\"none\" stroke=\"%s\" "
                    "stroke-width=\"2\" points=\"",
                    apply ? "apply" : "flush", color);
        fprintf(f, "%.1f,%.1f ", x, y);
    }
    if (drawn > 0)
        fputs("\"/>\n", f);
}

static void
chart(FILE *f, const struct status_snapshot *s, uint64_t now_us)
{
    const struct status_lag_history *h = &s->metrics.lag;
    uint64_t from = now_us > 3600000000ULL ? now_us - 3600000000ULL : 0;
    uint64_t max = 0;
    unsigned shown = 0;
    char top[32];

    for (unsigned i = 0; i < h->n; i++) {
        const struct status_lag_sample *p = status_lag_at(h, i);
        if (p->unix_us < from)
            continue;
        shown++;
        if (p->flush_bytes > max)
            max = p->flush_bytes;
        if (p->apply_bytes > max)
            max = p->apply_bytes;
    }
    if (max < 1024 * 1024)
        max = 1024 * 1024; /* at least 1 MiB high: a quiet pair shows a flat line at 0 */
    human_bytes(top, sizeof(top), max);
    fprintf(f,
            "<svg id=\"lag-chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" "
            "height=\"%d\" viewBox=\"0 0 %d %d\" role=\"img\">\n"
            "<title>Replication lag, last hour (bytes)</title>\n"
            "<rect x=\"%d\" y=\"8\" width=\"%d\" height=\"%d\" fill=\"#fafafa\" "
            "stroke=\"#ccc\"/>\n"
            "<text x=\"2\" y=\"16\" font-size=\"11\">%s</text>\n"
            "<text x=\"2\" y=\"%d\" font-size=\"11\">0</text>\n"
            "<text x=\"%d\" y=\"%d\" font-size=\"11\">-60 min</text>\n"
            "<text x=\"%d\" y=\"%d\" font-size=\"11\">-30 min</text>\n"
            "<text x=\"%d\" y=\"%d\" font-size=\"11\">now</text>\n",
            CHART_W, CHART_H, CHART_W, CHART_H, CHART_PAD, CHART_W - CHART_PAD - 8, CHART_H - 28,
            top, CHART_H - 20, CHART_PAD, CHART_H - 4,
            CHART_PAD + (CHART_W - CHART_PAD - 8) / 2 - 20, CHART_H - 4, CHART_W - 30, CHART_H - 4);
    chart_line(f, h, from, (double)max, false, "#1f6fb2");
    chart_line(f, h, from, (double)max, true, "#e06c00");
    if (shown == 0)
        fprintf(f,
                "<text x=\"%d\" y=\"%d\" font-size=\"13\" fill=\"#777\">no samples yet "
                "(one every %llu s)</text>\n",
                CHART_PAD + 20, CHART_H / 2, (unsigned long long)(STATUS_LAG_EVERY_US / 1000000));
    fputs("</svg>\n<p class=\"legend\"><span style=\"color:#1f6fb2\">&#9632; flush lag</span> "
          "<span style=\"color:#e06c00\">&#9632; apply lag</span> (worst of each 10 s)</p>\n",
          f);
}

int
statuspage_html(const struct status_snapshot *s, const struct statuspage_thresholds *th,
                uint64_t now_unix_us, char **out, size_t *len)
{
    struct statuspage_thresholds defaults;
    const struct statuspage_thresholds *t = thresholds_or_default(th, &defaults);
    struct statuspage_component comps[STATUSPAGE_COMPONENTS];
    enum statuspage_state overall = statuspage_components(s, t, now_unix_us, comps);
    const struct status_incidents *inc = &s->metrics.incidents;
    char when[40], lagb[32], deg[32], part[32];
    char *buf = NULL;
    size_t size = 0;
    FILE *f;

    *out = NULL;
    *len = 0;
    f = open_memstream(&buf, &size);
    if (f == NULL)
        return -ENOMEM;
    fprintf(f,
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
            "<meta http-equiv=\"refresh\" content=\"%d\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            "<title>walmirror status: ",
            STATUSPAGE_REFRESH_S);
    HTML(f, s->node_name);
    fputs("</title>\n<style>\n"
          "body{font-family:sans-serif;max-width:780px;margin:2em auto;color:#222}\n"
          "h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}\n"
          ".banner{padding:.8em 1em;color:#fff;border-radius:4px;font-weight:bold}\n"
          "table{border-collapse:collapse;width:100%}td,th{padding:.4em;border-bottom:1px solid "
          "#ddd;text-align:left;vertical-align:top}\n"
          ".state{font-weight:bold}.why{color:#555;font-size:.9em}.legend{font-size:.9em}\n"
          "footer{margin-top:2em;color:#777;font-size:.8em}\n"
          "</style></head><body>\n<h1>walmirror: ",
          f);
    HTML(f, s->node_name);
    fputs(" &harr; ", f);
    HTML(f, s->peer_name);
    fprintf(f, "</h1>\n<div id=\"overall\" class=\"banner state-%s\" style=\"background:%s\">",
            state_names[overall], state_colors[overall]);
    fputs(overall == STATUSPAGE_OPERATIONAL   ? "All systems operational"
          : overall == STATUSPAGE_MAINTENANCE ? "Under maintenance"
          : overall == STATUSPAGE_DEGRADED    ? "Degraded performance"
          : overall == STATUSPAGE_PARTIAL     ? "Partial outage"
                                              : "Major outage",
          f);
    fputs("</div>\n<h2>Components</h2>\n<table id=\"components\">\n", f);
    for (int i = 0; i < STATUSPAGE_COMPONENTS; i++) {
        fprintf(f, "<tr class=\"component\" id=\"component-%s\" data-status=\"%s\"><td>",
                comps[i].id, state_names[comps[i].state]);
        HTML(f, comps[i].name);
        fprintf(f,
                "</td><td class=\"state\" style=\"color:%s\">%s <small>(%s)</small></td>"
                "<td class=\"why\">",
                state_colors[comps[i].state], state_titles[comps[i].state],
                state_names[comps[i].state]);
        HTML(f, comps[i].why);
        fputs("</td></tr>\n", f);
    }
    fputs("</table>\n<h2>Replication lag, last hour</h2>\n", f);
    chart(f, s, now_unix_us);
    human_bytes(lagb, sizeof(lagb), s->flush_lag_bytes);
    fprintf(f, "<p id=\"lag-now\">Now: flush lag %s", lagb);
    if (s->flush_lag_s >= 0)
        fprintf(f, " (%.3f s)", s->flush_lag_s);
    human_bytes(lagb, sizeof(lagb), s->apply_lag_bytes);
    fprintf(f, ", apply lag %s", lagb);
    if (s->apply_lag_s >= 0)
        fprintf(f, " (%.3f s)", s->apply_lag_s);
    fputs("; synchronous state ", f);
    HTML(f, s->sync_state);
    fputs(".</p>\n<h2>Maintenance</h2>\n<p id=\"maintenance\">", f);
    if (s->maintenance[0] == '\0' || IS(s, maintenance, "none"))
        fputs("No maintenance window is open or scheduled.", f);
    else
        HTML(f, s->maintenance);
    fprintf(f, "<br>Automatic fail-over: %s.</p>\n", s->failover_paused ? "paused" : "on");
    fputs("<h2>Incident history</h2>\n<table id=\"incidents\">\n"
          "<tr><th>completed</th><th>what</th><th>write-unavailability</th><th>result</th></tr>\n",
          f);
    for (unsigned i = inc->n; i-- > 0;) { /* newest first */
        const struct status_incident *e = status_incident_at(inc, i);
        utc_text(when, sizeof(when), e->at_unix_us, false);
        fprintf(f, "<tr class=\"incident\"><td>%s</td><td>", when);
        HTML(f, e->kind);
        if (e->unavailability_us >= 0)
            fprintf(f, "</td><td>%.3f s</td><td>", (double)e->unavailability_us / 1e6);
        else
            fputs("</td><td>unknown</td><td>", f);
        HTML(f, e->text);
        fputs("</td></tr>\n", f);
    }
    if (inc->n == 0)
        fputs("<tr><td colspan=\"4\">No switchover or fail-over since the agent started.</td>"
              "</tr>\n",
              f);
    utc_text(when, sizeof(when), s->now_unix_us, false);
    fprintf(f, "</table>\n<footer>As seen by the agent on ");
    HTML(f, s->node_name);
    human_bytes(deg, sizeof(deg), t->degraded_bytes);
    human_bytes(part, sizeof(part), t->partial_bytes);
    fprintf(f,
            " (role %.*s, epoch %" PRIu64 ") at %s; this page reloads every %d s. "
            "<span id=\"rules\">Rules: the mirror is degraded from %s or %g s of lag, in partial "
            "outage from %s or %g s</span>; see docs/operations.md.</footer>\n</body></html>\n",
            FIELD(s->role), s->epoch, when, STATUSPAGE_REFRESH_S, deg, t->degraded_s, part,
            t->partial_s);
    if (fclose(f) != 0 || buf == NULL) {
        free(buf);
        return -ENOMEM;
    }
    *out = buf;
    *len = size;
    return 0;
}

/* ---- summary.json ---- */

static bool
put(json_t *o, const char *key, json_t *v)
{
    return v != NULL && json_object_set_new(o, key, v) == 0;
}

/* A JSON string of a fixed field, with bytes outside printable ASCII replaced by '?'. */
static json_t *
jfield(const char *s, size_t cap)
{
    char buf[512];
    size_t n = 0;

    for (; n < cap && n + 1 < sizeof(buf) && s[n] != '\0'; n++)
        buf[n] = (unsigned char)s[n] < 0x20 || (unsigned char)s[n] >= 0x7f ? '?' : s[n];
    buf[n] = '\0';
    return json_string(buf);
}
#define JFIELD(s) jfield((s), sizeof(s))

/* The summary; with history, the incident log too (resolved, newest first) after any incident
 * under way. */
static json_t *
build(const struct status_snapshot *s, const struct statuspage_thresholds *th, uint64_t now_unix_us,
      bool history)
{
    static const char *const indicators[] = {
        [STATUSPAGE_OPERATIONAL] = "none",        [STATUSPAGE_DEGRADED] = "minor",
        [STATUSPAGE_PARTIAL] = "major",           [STATUSPAGE_MAJOR] = "critical",
        [STATUSPAGE_MAINTENANCE] = "maintenance",
    };
    static const char *const descriptions[] = {
        [STATUSPAGE_OPERATIONAL] = "All Systems Operational",
        [STATUSPAGE_DEGRADED] = "Minor Service Outage",
        [STATUSPAGE_PARTIAL] = "Partial System Outage",
        [STATUSPAGE_MAJOR] = "Major System Outage",
        [STATUSPAGE_MAINTENANCE] = "Service Under Maintenance",
    };
    struct statuspage_component comps[STATUSPAGE_COMPONENTS];
    enum statuspage_state overall = statuspage_components(s, th, now_unix_us, comps);
    json_t *o = json_object(), *page, *list, *incidents, *maint, *status;
    char updated[40], name[160];
    bool ok;

    if (o == NULL)
        return NULL;
    /* Each container is in o before it is filled: o owns them whatever fails later. */
    page = json_object();
    list = json_array();
    incidents = json_array();
    maint = json_array();
    status = json_object();
    ok = put(o, "page", page) && put(o, "components", list) && put(o, "incidents", incidents) &&
         put(o, "scheduled_maintenances", maint) && put(o, "status", status);
    utc_text(updated, sizeof(updated), s->now_unix_us != 0 ? s->now_unix_us : now_unix_us, true);
    snprintf(name, sizeof(name), "walmirror %.*s / %.*s", FIELD(s->node_name), FIELD(s->peer_name));
    ok = ok && put(page, "id", JFIELD(s->node_name)) &&
         put(page, "name", jfield(name, sizeof(name))) && put(page, "url", json_string("/")) &&
         put(page, "time_zone", json_string("Etc/UTC")) &&
         put(page, "updated_at", json_string(updated));
    for (int i = 0; ok && i < STATUSPAGE_COMPONENTS; i++) {
        json_t *c = json_object();
        ok = c != NULL && json_array_append_new(list, c) == 0 &&
             put(c, "id", json_string(comps[i].id)) &&
             put(c, "name", jfield(comps[i].name, sizeof(comps[i].name))) &&
             put(c, "status", json_string(state_names[comps[i].state])) &&
             put(c, "description", jfield(comps[i].why, sizeof(comps[i].why))) &&
             put(c, "position", json_integer(i + 1)) &&
             put(c, "updated_at", json_string(updated)) &&
             put(c, "page_id", JFIELD(s->node_name)) && put(c, "group_id", json_null()) &&
             put(c, "group", json_false()) && put(c, "only_show_if_degraded", json_false()) &&
             put(c, "showcase", json_true());
    }
    /* Unresolved incidents: an operation running now; an exposure is named for its start. */
    if (ok && !IS(s, operation, "none") && s->operation[0] != '\0') {
        json_t *e = json_object();
        char since[40];

        utc_text(since, sizeof(since), s->exposed_since_unix_us, false);
        ok = e != NULL && json_array_append_new(incidents, e) == 0 &&
             put(e, "id", json_sprintf("op-%" PRIu64, s->op_id)) &&
             put(e, "name", s->exposed ? json_sprintf("running exposed since %s", since)
                                       : JFIELD(s->operation)) &&
             put(e, "status", json_string("identified")) &&
             put(e, "impact",
                 json_string(indicators[overall == STATUSPAGE_MAINTENANCE ? STATUSPAGE_OPERATIONAL
                                                                          : overall])) &&
             put(e, "updated_at", json_string(updated)) && put(e, "incident_updates", json_array());
        if (ok) {
            json_t *u = json_object(), *ups = json_object_get(e, "incident_updates");
            ok = u != NULL && json_array_append_new(ups, u) == 0 &&
                 put(u, "status", json_string("identified")) &&
                 put(u, "body", JFIELD(s->op_step)) && put(u, "updated_at", json_string(updated));
        }
    }
    for (unsigned i = s->metrics.incidents.n; ok && history && i-- > 0;) {
        const struct status_incident *e = status_incident_at(&s->metrics.incidents, i);
        uint64_t began = e->unavailability_us > 0 && (uint64_t)e->unavailability_us < e->at_unix_us
                             ? e->at_unix_us - (uint64_t)e->unavailability_us
                             : e->at_unix_us;
        char created[40], resolved[40];
        json_t *j = json_object(), *ups = NULL, *u = NULL;

        utc_text(created, sizeof(created), began, true);
        utc_text(resolved, sizeof(resolved), e->at_unix_us, true);
        /* Each container goes into its parent before it is filled (see above). */
        ok = j != NULL && json_array_append_new(incidents, j) == 0;
        if (ok) {
            ups = json_array();
            ok = put(j, "incident_updates", ups);
        }
        if (ok) {
            u = json_object();
            ok = u != NULL && json_array_append_new(ups, u) == 0;
        }
        ok = ok && put(j, "id", json_sprintf("%.16s-%" PRIu64, e->kind, e->at_unix_us)) &&
             put(j, "name", JFIELD(e->kind)) && put(j, "status", json_string("resolved")) &&
             put(j, "impact", json_string("minor")) && put(j, "created_at", json_string(created)) &&
             put(j, "resolved_at", json_string(resolved)) &&
             put(j, "updated_at", json_string(resolved)) &&
             put(j, "write_unavailability_s",
                 e->unavailability_us >= 0 ? json_real((double)e->unavailability_us / 1e6)
                                           : json_null()) &&
             put(u, "status", json_string("resolved")) && put(u, "body", JFIELD(e->text)) &&
             put(u, "created_at", json_string(resolved));
    }
    if (ok && strncmp(s->maintenance, "active", 6) == 0) {
        json_t *w = json_object();
        ok = w != NULL && json_array_append_new(maint, w) == 0 &&
             put(w, "id", json_string("maintenance")) && put(w, "name", JFIELD(s->maintenance)) &&
             put(w, "status", json_string("in_progress")) &&
             put(w, "impact", json_string("maintenance"));
    }
    ok = ok && put(status, "indicator", json_string(indicators[overall])) &&
         put(status, "description", json_string(descriptions[overall]));
    if (!ok) {
        json_decref(o);
        return NULL;
    }
    return o;
}

json_t *
statuspage_summary(const struct status_snapshot *s, const struct statuspage_thresholds *th,
                   uint64_t now_unix_us)
{
    return build(s, th, now_unix_us, false);
}

json_t *
statuspage_status(const struct status_snapshot *s, const struct statuspage_thresholds *th,
                  uint64_t now_unix_us)
{
    json_t *o = build(s, th, now_unix_us, false);

    if (o != NULL) {
        json_object_del(o, "components");
        json_object_del(o, "incidents");
        json_object_del(o, "scheduled_maintenances");
    }
    return o;
}

json_t *
statuspage_incidents(const struct status_snapshot *s, const struct statuspage_thresholds *th,
                     uint64_t now_unix_us)
{
    json_t *o = build(s, th, now_unix_us, true);

    if (o != NULL) {
        json_object_del(o, "components");
        json_object_del(o, "scheduled_maintenances");
        json_object_del(o, "status");
    }
    return o;
}
