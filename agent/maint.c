/*
 * maint.c - maintenance windows and their store (maint.h).
 */
#include "maint.h"
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *const class_names[] = {"routine", "window", "hotfix"};

const char *
maint_class_name(enum maint_class c)
{
    return (unsigned)c < 3 ? class_names[c] : "window";
}

/* "HH:MM" -> minutes after midnight, or -1. */
static int
parse_hhmm(const char *s)
{
    if (strlen(s) != 5 || !isdigit((unsigned char)s[0]) || !isdigit((unsigned char)s[1]) ||
        s[2] != ':' || !isdigit((unsigned char)s[3]) || !isdigit((unsigned char)s[4]))
        return -1;
    int h = (s[0] - '0') * 10 + (s[1] - '0'), m = (s[3] - '0') * 10 + (s[4] - '0');
    return h < 24 && m < 60 ? h * 60 + m : -1;
}

/* "YYYY-MM-DD" (exactly 10 characters at s) -> its parts; false if malformed. */
static bool
parse_date(const char *s, int *y, int *m, int *d)
{
    for (int i = 0; i < 10; i++)
        if (i == 4 || i == 7 ? s[i] != '-' : !isdigit((unsigned char)s[i]))
            return false;
    *y = atoi(s);
    *m = (s[5] - '0') * 10 + (s[6] - '0');
    *d = (s[8] - '0') * 10 + (s[9] - '0');
    return *y >= 1970 && *m >= 1 && *m <= 12 && *d >= 1 && *d <= 31;
}

/*
 * "4h", "90m", "1h30m", "3600s", "2d" -> *out seconds (1 .. MAINT_MAX_DURATION_S).  Every
 * number needs its unit: a bare "4" could mean hours as well as seconds, so it is refused as
 * the configuration file refuses a duration without a unit.  Returns 0 or -EINVAL with the
 * message in err.
 */
static int
parse_duration(const char *text, int64_t *out, char *err, size_t errlen)
{
    const char *s = text;
    int64_t total = 0;

    while (*s != '\0') {
        int64_t v = 0;
        int digits = 0;
        while (isdigit((unsigned char)*s) && digits < 9) {
            v = v * 10 + (*s++ - '0');
            digits++;
        }
        if (digits == 0 || isdigit((unsigned char)*s))
            break;
        switch (*s) {
        case 'd':
            v *= 86400;
            break;
        case 'h':
            v *= 3600;
            break;
        case 'm':
            v *= 60;
            break;
        case 's':
            break;
        case '\0':
            if (s - digits == text)
                return wm_einval(err, errlen,
                                 "duration: %.9s has no unit (write %.9sh, %.9sm, %.9ss or %.9sd)",
                                 text, text, text, text, text);
            return wm_einval(err, errlen,
                             "duration: '%.40s': %.9s has no unit (write %.9sm or %.9ss)", text,
                             s - digits, s - digits, s - digits);
        default:
            return wm_einval(err, errlen,
                             "duration: bad value '%.40s' (e.g. 4h, 90m, 1h30m; at most 31d)",
                             text);
        }
        s++;
        total += v;
        if (total > MAINT_MAX_DURATION_S)
            return wm_einval(err, errlen, "duration: bad value '%.40s' (longer than 31d)", text);
    }
    if (*s != '\0' || total <= 0)
        return wm_einval(err, errlen,
                         "duration: bad value '%.40s' (e.g. 4h, 90m, 1h30m; at most 31d)", text);
    *out = total;
    return 0;
}

int
maint_window_parse(struct maint_window *w, const struct maint_params *p, int64_t now, char *err,
                   size_t errlen)
{
    struct rrule_span act, next;
    int rc;

    memset(w, 0, sizeof(*w));
    err[0] = '\0';
    if (p->tz == NULL)
        return wm_einval(err, errlen, "tz: required (an IANA zone, e.g. America/Denver or UTC)");
    if (strlen(p->tz) >= sizeof(w->tz) || !rrule_tz_valid(p->tz))
        return wm_einval(err, errlen, "tz: unknown time zone '%.64s'", p->tz);
    snprintf(w->tz, sizeof(w->tz), "%s", p->tz);
    if (p->duration == NULL)
        return wm_einval(err, errlen, "duration: required (e.g. 4h, 90m)");
    rc = parse_duration(p->duration, &w->duration_s, err, errlen);
    if (rc < 0)
        return rc;
    w->cls = MAINT_WINDOW;
    if (p->cls != NULL) {
        int c = -1;
        for (int i = 0; i < 3; i++)
            if (strcmp(p->cls, class_names[i]) == 0)
                c = i;
        if (c < 0)
            return wm_einval(err, errlen, "class: bad value '%.40s' (routine, window or hotfix)",
                        p->cls);
        w->cls = (enum maint_class)c;
    }
    if (p->switchover != NULL) {
        if (strcmp(p->switchover, "1") == 0 || strcmp(p->switchover, "true") == 0)
            w->switchover = true;
        else if (strcmp(p->switchover, "0") != 0 && strcmp(p->switchover, "false") != 0)
            return wm_einval(err, errlen, "switchover: bad value '%.40s' (1 or 0)", p->switchover);
    }
    if ((p->rrule == NULL) == (p->at == NULL))
        return wm_einval(err, errlen, "give either rrule (with start) or at, not %s",
                    p->rrule == NULL ? "neither" : "both");
    if (p->at != NULL) {
        if (p->start != NULL || p->from != NULL)
            return wm_einval(err, errlen, "at: start and from are only for a recurring window");
        if (strlen(p->at) != 16 || (p->at[10] != ' ' && p->at[10] != 'T') ||
            !parse_date(p->at, &w->year, &w->month, &w->day) ||
            (w->start_minute = parse_hhmm(p->at + 11)) < 0)
            return wm_einval(err, errlen, "at: bad value '%.40s' (expected 'YYYY-MM-DD HH:MM')",
                        p->at);
    } else {
        struct rrule *r;
        rc = rrule_parse(p->rrule, &r, err, errlen);
        if (rc == -EINVAL) {
            char msg[256];
            snprintf(msg, sizeof(msg), "%s", err);
            return wm_einval(err, errlen, "rrule: %s", msg);
        }
        if (rc < 0)
            return rc;
        rc = rrule_format(r, w->rrule, sizeof(w->rrule));
        rrule_free(r);
        if (rc < 0 || (size_t)rc >= sizeof(w->rrule))
            return wm_einval(err, errlen, "rrule: too long");
        if (p->start == NULL || (w->start_minute = parse_hhmm(p->start)) < 0)
            return wm_einval(err, errlen, "start: %s '%.40s' (expected HH:MM, local time in tz)",
                        p->start == NULL ? "required" : "bad value",
                        p->start == NULL ? "" : p->start);
        if (p->from != NULL) {
            if (strlen(p->from) != 10 || !parse_date(p->from, &w->year, &w->month, &w->day))
                return wm_einval(err, errlen, "from: bad value '%.40s' (expected YYYY-MM-DD)",
                            p->from);
        } else if (rrule_unix_to_local_date(w->tz, now, &w->year, &w->month, &w->day) < 0) {
            return wm_einval(err, errlen, "tz: cannot convert the current time");
        }
    }
    rc = maint_window_eval(w, now, &act, &next);
    if (rc < 0)
        return wm_einval(err, errlen, "%s: no such local date or time in %s",
                    p->at != NULL ? "at" : "from", w->tz);
    if (act.start < 0 && next.start < 0)
        return wm_einval(err, errlen, "the window is over: %s has no occurrence now or later",
                    p->at != NULL ? "at" : "rrule");
    return 0;
}

int
maint_window_eval(const struct maint_window *w, int64_t now, struct rrule_span *active,
                  struct rrule_span *next)
{
    struct rrule *r = NULL;
    char err[256];
    int rc;

    if (w->rrule[0] != '\0') {
        rc = rrule_parse(w->rrule, &r, err, sizeof(err));
        if (rc < 0) {
            active->start = active->end = next->start = next->end = -1;
            return rc;
        }
    }
    rc = rrule_windows(r, w->tz, w->year, w->month, w->day, w->start_minute, w->duration_s, now,
                       active, next);
    rrule_free(r);
    return rc;
}

static void
utc_text(int64_t t, char *buf, size_t len)
{
    time_t tt = (time_t)t;
    struct tm tm;

    if (gmtime_r(&tt, &tm) == NULL || strftime(buf, len, "%Y-%m-%d %H:%M UTC", &tm) == 0)
        snprintf(buf, len, "%" PRId64, t);
}

int
maint_window_next(const struct maint_window *w, int64_t now, struct rrule_span *out, int max)
{
    struct rrule_span act, next;
    int n = 0;

    if (max <= 0 || maint_window_eval(w, now, &act, &next) < 0)
        return 0;
    if (act.start >= 0)
        out[n++] = act;
    /* At an occurrence's start it is the open one, and the next is the one after it. */
    while (n < max && next.start >= 0) {
        out[n++] = next;
        if (maint_window_eval(w, next.start, &act, &next) < 0)
            break;
    }
    return n;
}

/* "Sat 2026-11-28 22:00" and, when the end falls on another date, its date: the moment t as
 * local time in tz (UTC when tz is NULL); false if tz cannot be read. */
static bool
moment_text(const char *tz, int64_t t, bool with_date, char *buf, size_t cap)
{
    static const char *const wdays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    struct tm tm = {0};
    int y, m, d, minute;

    if (tz == NULL) {
        time_t tt = (time_t)t;
        if (gmtime_r(&tt, &tm) == NULL)
            return false;
        y = tm.tm_year + 1900, m = tm.tm_mon + 1, d = tm.tm_mday;
        minute = tm.tm_hour * 60 + tm.tm_min;
    } else if (rrule_unix_to_local(tz, t, &y, &m, &d, &minute) < 0) {
        return false;
    }
    tm = (struct tm){.tm_year = y - 1900, .tm_mon = m - 1, .tm_mday = d, .tm_hour = 12};
    if (timegm(&tm) == (time_t)-1)
        return false;
    if (with_date)
        snprintf(buf, cap, "%s %04d-%02d-%02d %02d:%02d", wdays[tm.tm_wday % 7], y % 10000, m, d,
                 minute / 60, minute % 60);
    else
        snprintf(buf, cap, "%02d:%02d", minute / 60, minute % 60);
    return true;
}

void
maint_span_text(const struct maint_window *w, const struct rrule_span *sp, bool utc, char *buf,
                size_t cap)
{
    const char *tz = utc ? NULL : w->tz;
    char from[48], to[48];

    if (!moment_text(tz, sp->start, true, from, sizeof(from)) ||
        !moment_text(tz, sp->end, true, to, sizeof(to))) {
        snprintf(buf, cap, "?");
        return;
    }
    /* the end's date only when it differs from the start's: both begin "Www YYYY-MM-DD" */
    if (strncmp(from, to, 14) == 0)
        (void)moment_text(tz, sp->end, false, to, sizeof(to));
    snprintf(buf, cap, "%s - %s %s", from, to, utc ? "UTC" : w->tz);
}

/* Adds key: v to o, consuming v; false on failure. */
static bool
put(json_t *o, const char *key, json_t *v)
{
    return v != NULL && json_object_set_new(o, key, v) == 0;
}

static bool
put_time(json_t *o, const char *key, const char *key_utc, int64_t t)
{
    char buf[64];

    if (t < 0)
        return put(o, key, json_null()) && put(o, key_utc, json_null());
    utc_text(t, buf, sizeof(buf));
    return put(o, key, json_integer(t)) && put(o, key_utc, json_string(buf));
}

json_t *
maint_window_json(const struct maint_window *w, int64_t now)
{
    json_t *o = json_object();
    char date[16], start[8];
    bool ok;

    if (o == NULL)
        return NULL;
    snprintf(date, sizeof(date), "%04d-%02d-%02d", w->year % 10000, w->month % 100,
             w->day % 100);
    snprintf(start, sizeof(start), "%02d:%02d", w->start_minute / 60 % 100,
             w->start_minute % 60);
    ok = put(o, "id", json_integer((json_int_t)w->id)) &&
         put(o, "class", json_string(maint_class_name(w->cls))) &&
         (w->rrule[0] == '\0' || put(o, "rrule", json_string(w->rrule))) &&
         put(o, "date", json_string(date)) && put(o, "start", json_string(start)) &&
         put(o, "duration_s", json_integer(w->duration_s)) && put(o, "tz", json_string(w->tz)) &&
         put(o, "switchover", json_boolean(w->switchover));
    if (ok && now >= 0) {
        struct rrule_span act, next, occ[MAINT_NEXT];
        int n = maint_window_next(w, now, occ, MAINT_NEXT);
        json_t *list = NULL;

        if (maint_window_eval(w, now, &act, &next) < 0)
            act.start = act.end = next.start = next.end = -1;
        ok = put(o, "active", json_boolean(act.start >= 0)) &&
             put_time(o, "active_start", "active_start_utc", act.start) &&
             put_time(o, "active_end", "active_end_utc", act.end) &&
             put_time(o, "next_start", "next_start_utc", next.start) &&
             put_time(o, "next_end", "next_end_utc", next.end) &&
             put(o, "occurrences", list = json_array());
        for (int i = 0; ok && i < n; i++) {
            char local[160], utc[160];
            json_t *e = json_object();

            maint_span_text(w, &occ[i], false, local, sizeof(local));
            maint_span_text(w, &occ[i], true, utc, sizeof(utc));
            ok = e != NULL && json_array_append_new(list, e) == 0 &&
                 put(e, "start", json_integer(occ[i].start)) &&
                 put(e, "end", json_integer(occ[i].end)) &&
                 put(e, "active", json_boolean(occ[i].start <= now && now < occ[i].end)) &&
                 put(e, "local", json_string(local)) && put(e, "utc", json_string(utc));
        }
    }
    if (!ok) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* The moment t of window w for the status text: its local time in w's zone, and the same in
 * UTC unless the zone is at UTC then ("Sat 2026-02-28 22:00 America/Denver (2026-03-01 05:00
 * UTC)", "Tue 2026-03-10 12:00 UTC"). */
static void
describe_moment(const struct maint_window *w, int64_t t, char *buf, size_t len)
{
    char local[48], utc[48];

    utc_text(t, utc, sizeof(utc));
    if (!moment_text(w->tz, t, true, local, sizeof(local)))
        snprintf(buf, len, "%s", utc);
    else if (strncmp(local + 4, utc, 16) == 0) /* "YYYY-MM-DD HH:MM": the zone is at UTC */
        snprintf(buf, len, "%s UTC", local);
    else
        snprintf(buf, len, "%s %s (%s)", local, w->tz, utc);
}

bool
maint_describe(const struct maint_window *w, unsigned n, int64_t now, char *buf, size_t len)
{
    const struct maint_window *act_w = NULL, *next_w = NULL;
    int64_t act_end = -1, next_start = -1;
    char when[48 + sizeof(w->tz) + 48 + 8]; /* describe_moment: local, zone, UTC */

    for (unsigned i = 0; i < n; i++) {
        struct rrule_span a, nx;
        if (maint_window_eval(&w[i], now, &a, &nx) < 0)
            continue;
        if (a.start >= 0 && a.end > act_end) {
            act_end = a.end;
            act_w = &w[i];
        }
        if (nx.start >= 0 && (next_start < 0 || nx.start < next_start)) {
            next_start = nx.start;
            next_w = &w[i];
        }
    }
    if (act_w != NULL) {
        describe_moment(act_w, act_end, when, sizeof(when));
        snprintf(buf, len, "active %s until %s", maint_class_name(act_w->cls), when);
        return true;
    }
    if (next_w != NULL) {
        describe_moment(next_w, next_start, when, sizeof(when));
        snprintf(buf, len, "next %s at %s", maint_class_name(next_w->cls), when);
    } else {
        snprintf(buf, len, "none");
    }
    return false;
}

/* ---- the store ---- */

struct maint_store {
    pthread_mutex_t lock;
    char dir[4096];
    uint64_t next_id;
    unsigned n;
    struct maint_window w[MAINT_MAX];
};

/* One window from the file's object; false if anything is missing or wrong. */
static bool
window_from_json(json_t *o, struct maint_window *w)
{
    json_t *id = json_object_get(o, "id"), *cls = json_object_get(o, "class");
    json_t *rr = json_object_get(o, "rrule"), *date = json_object_get(o, "date");
    json_t *start = json_object_get(o, "start"), *dur = json_object_get(o, "duration_s");
    json_t *tz = json_object_get(o, "tz"), *sw = json_object_get(o, "switchover");
    struct maint_params p = {0};
    struct maint_window check;
    char err[256];

    memset(w, 0, sizeof(*w));
    if (!json_is_integer(id) || json_integer_value(id) < 1 || !json_is_string(cls) ||
        (rr != NULL && !json_is_string(rr)) || !json_is_string(date) ||
        json_string_length(date) != 10 || !json_is_string(start) || !json_is_integer(dur) ||
        !json_is_string(tz) || !json_is_boolean(sw))
        return false;
    if (!parse_date(json_string_value(date), &w->year, &w->month, &w->day) ||
        (w->start_minute = parse_hhmm(json_string_value(start))) < 0)
        return false;
    w->duration_s = json_integer_value(dur);
    if (w->duration_s <= 0 || w->duration_s > MAINT_MAX_DURATION_S ||
        json_string_length(tz) >= sizeof(w->tz) ||
        (rr != NULL && json_string_length(rr) >= sizeof(w->rrule)))
        return false;
    /* the class and rule through the same checks as a request */
    p.rrule = rr != NULL ? json_string_value(rr) : NULL;
    p.at = rr != NULL ? NULL : "2000-01-01 00:00";
    p.start = rr != NULL ? json_string_value(start) : NULL;
    p.from = rr != NULL ? "2000-01-01" : NULL;
    p.duration = "1m";
    p.tz = json_string_value(tz);
    p.cls = json_string_value(cls);
    if (maint_window_parse(&check, &p, 0, err, sizeof(err)) < 0)
        return false;
    w->id = (uint64_t)json_integer_value(id);
    w->cls = check.cls;
    snprintf(w->rrule, sizeof(w->rrule), "%s", check.rrule);
    snprintf(w->tz, sizeof(w->tz), "%s", check.tz);
    w->switchover = json_is_true(sw);
    return true;
}

static int
store_load(struct maint_store *s, char *err, size_t errlen)
{
    char path[4200];
    json_error_t jerr;
    json_t *root, *ws, *v;
    size_t i;

    snprintf(path, sizeof(path), "%s/%s", s->dir, MAINT_FILE);
    if (access(path, F_OK) != 0) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -errno;
    }
    root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        snprintf(err, errlen, "%s:%d: %s", path, jerr.line, jerr.text);
        return -EINVAL;
    }
    v = json_object_get(root, "version");
    ws = json_object_get(root, "windows");
    if (!json_is_integer(v) || json_integer_value(v) != 1 || !json_is_array(ws) ||
        json_array_size(ws) > MAINT_MAX || !json_is_integer(json_object_get(root, "next_id"))) {
        json_decref(root);
        snprintf(err, errlen, "%s: not a walmirror maintenance file of version 1", path);
        return -EINVAL;
    }
    s->next_id = (uint64_t)json_integer_value(json_object_get(root, "next_id"));
    json_array_foreach(ws, i, v) {
        if (!window_from_json(v, &s->w[s->n])) {
            json_decref(root);
            s->n = 0;
            snprintf(err, errlen, "%s: window %zu is damaged", path, i + 1);
            return -EINVAL;
        }
        if (s->w[s->n].id >= s->next_id)
            s->next_id = s->w[s->n].id + 1;
        s->n++;
    }
    json_decref(root);
    return 0;
}

/* Writes the store's windows (the first n of w) to the file, durably. */
static int
store_save(const struct maint_store *s, const struct maint_window *w, unsigned n,
           uint64_t next_id, char *err, size_t errlen)
{
    char path[4200], tmp[4210];
    json_t *root = json_object(), *ws = json_array();
    char *text = NULL;
    int fd, dfd, rc = 0;
    size_t len, off = 0;

    if (root == NULL || ws == NULL || json_object_set_new(root, "version", json_integer(1)) != 0 ||
        json_object_set_new(root, "next_id", json_integer((json_int_t)next_id)) != 0) {
        json_decref(root);
        json_decref(ws);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    for (unsigned i = 0; i < n; i++)
        if (json_array_append_new(ws, maint_window_json(&w[i], -1)) != 0)
            rc = -ENOMEM;
    if (json_object_set_new(root, "windows", ws) != 0)
        rc = -ENOMEM;
    if (rc == 0)
        text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (text == NULL) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    snprintf(path, sizeof(path), "%s/%s", s->dir, MAINT_FILE);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, 0600);
    if (fd < 0) {
        rc = -errno;
        snprintf(err, errlen, "cannot create %s: %s", tmp, strerror(-rc));
        free(text);
        return rc;
    }
    len = strlen(text);
    text[len++] = '\n'; /* the terminating NUL's byte becomes the final newline */
    while (off < len) {
        ssize_t k = write(fd, text + off, len - off);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            break;
        }
        off += (size_t)k;
    }
    free(text);
    if (rc < 0) {
        snprintf(err, errlen, "%s: write failed: %s", tmp, strerror(-rc));
        close(fd);
        unlink(tmp);
        return rc;
    }
    if (fsync(fd) != 0) {
        rc = -errno;
        snprintf(err, errlen, "%s: fsync failed: %s", tmp, strerror(-rc));
        close(fd);
        unlink(tmp);
        return rc;
    }
    if (close(fd) != 0) {
        rc = -errno;
        snprintf(err, errlen, "%s: close failed: %s", tmp, strerror(-rc));
        unlink(tmp);
        return rc;
    }
    if (rename(tmp, path) != 0) {
        rc = -errno;
        snprintf(err, errlen, "cannot rename %s to %s: %s", tmp, path, strerror(-rc));
        unlink(tmp);
        return rc;
    }
    dfd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        rc = -errno;
        snprintf(err, errlen, "%s: cannot open the directory to fsync it: %s", s->dir,
                 strerror(-rc));
        return rc;
    }
    if (fsync(dfd) != 0) {
        rc = -errno;
        snprintf(err, errlen, "%s: directory fsync failed: %s", s->dir, strerror(-rc));
    }
    close(dfd);
    return rc;
}

int
maint_store_open(struct maint_store **out, const char *dir, char *err, size_t errlen)
{
    struct maint_store *s;
    int rc;

    *out = NULL;
    err[0] = '\0';
    if (strlen(dir) >= sizeof(s->dir)) {
        snprintf(err, errlen, "%s: path too long", dir);
        return -ENAMETOOLONG;
    }
    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    snprintf(s->dir, sizeof(s->dir), "%s", dir);
    s->next_id = 1;
    rc = store_load(s, err, errlen);
    if (rc < 0) {
        free(s);
        return rc;
    }
    pthread_mutex_init(&s->lock, NULL);
    *out = s;
    return 0;
}

void
maint_store_close(struct maint_store *s)
{
    if (s == NULL)
        return;
    pthread_mutex_destroy(&s->lock);
    free(s);
}

int
maint_store_add(struct maint_store *s, struct maint_window *w, char *err, size_t errlen)
{
    uint64_t id;
    int rc;

    pthread_mutex_lock(&s->lock);
    if (s->n == MAINT_MAX) {
        pthread_mutex_unlock(&s->lock);
        snprintf(err, errlen, "too many maintenance windows (at most %d)", MAINT_MAX);
        return -ENOSPC;
    }
    for (unsigned i = 0; i < s->n && w->id != 0; i++)
        if (s->w[i].id == w->id) {
            pthread_mutex_unlock(&s->lock);
            snprintf(err, errlen, "maintenance window %" PRIu64 " exists already", w->id);
            return -EEXIST;
        }
    id = w->id != 0 ? w->id : s->next_id;
    s->w[s->n] = *w;
    s->w[s->n].id = id;
    rc = store_save(s, s->w, s->n + 1, id >= s->next_id ? id + 1 : s->next_id, err, errlen);
    if (rc == 0) {
        s->n++;
        if (id >= s->next_id)
            s->next_id = id + 1;
        w->id = id;
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int
maint_store_remove(struct maint_store *s, uint64_t id, char *err, size_t errlen)
{
    struct maint_window rest[MAINT_MAX];
    unsigned n = 0;
    int rc;

    pthread_mutex_lock(&s->lock);
    for (unsigned i = 0; i < s->n; i++)
        if (s->w[i].id != id)
            rest[n++] = s->w[i];
    if (n == s->n) {
        pthread_mutex_unlock(&s->lock);
        snprintf(err, errlen, "no maintenance window %" PRIu64, id);
        return -ENOENT;
    }
    rc = store_save(s, rest, n, s->next_id, err, errlen);
    if (rc == 0) {
        memcpy(s->w, rest, sizeof(rest[0]) * n);
        s->n = n;
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int
maint_store_list(struct maint_store *s, struct maint_window *out, unsigned max, bool wait)
{
    unsigned n;

    if (wait)
        pthread_mutex_lock(&s->lock);
    else if (pthread_mutex_trylock(&s->lock) != 0)
        return -EBUSY;
    n = s->n < max ? s->n : max;
    memcpy(out, s->w, sizeof(out[0]) * n);
    pthread_mutex_unlock(&s->lock);
    return (int)n;
}
