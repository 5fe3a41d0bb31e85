/*
 * test_maint.c - Check suite for agent/maint.c (maintenance windows and their durable store),
 * the HTTP API's /maintenance endpoints, and walmirrorctl maintenance against two agents' APIs
 * (two boards, two stores, as the two sites): requests refused with the parameter named, the
 * store's round trip through maintenance.json, ids kept equal on both sites, a damaged file
 * refused, and the status text ("active ... until", "next ... at", "none").
 */
#include <check.h>
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "httpapi.h"
#include "maint.h"
#include "status.h"
#include "testutil.h"

#define CTL WM_BINARY_DIR "/tools/walmirrorctl"

static char *dir;
static char err[512];

/* Unix seconds of a UTC civil time. */
static int64_t
utc(int y, int mo, int d, int h, int mi)
{
    struct tm tm = {0};

    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    return (int64_t)timegm(&tm);
}

static void
setup_dir(void)
{
    dir = tu_tmpdir("maint");
    err[0] = '\0';
}

static void
teardown_dir(void)
{
    tu_rmtree(dir);
    free(dir);
}

/* ---- windows ---- */

static const struct maint_params monthly = {
    .rrule = "FREQ=MONTHLY;BYDAY=-1SA", .start = "22:00", .from = "2026-01-01",
    .duration = "4h", .tz = "America/Denver", .cls = "window", .switchover = "1"};

START_TEST(window_parse)
{
    struct maint_window w;
    struct rrule_span a, n;
    int64_t now = utc(2026, 3, 1, 0, 0);

    ck_assert_int_eq(maint_window_parse(&w, &monthly, now, err, sizeof(err)), 0);
    ck_assert_str_eq(w.rrule, "FREQ=MONTHLY;BYDAY=-1SA");
    ck_assert_int_eq(w.start_minute, 22 * 60);
    ck_assert_int_eq(w.duration_s, 4 * 3600);
    ck_assert_int_eq(w.cls, MAINT_WINDOW);
    ck_assert(w.switchover);
    ck_assert_int_eq(maint_window_eval(&w, now, &a, &n), 0);
    ck_assert_int_eq(n.start, utc(2026, 3, 1, 5, 0)); /* Feb 28 22:00 MST */
    ck_assert_int_eq(maint_window_eval(&w, utc(2026, 3, 29, 5, 0), &a, &n), 0);
    ck_assert_int_eq(a.start, utc(2026, 3, 29, 4, 0)); /* Mar 28 22:00 MDT */
    ck_assert_int_eq(a.end, utc(2026, 3, 29, 8, 0));

    /* a one-off; from defaults to today in the zone */
    struct maint_params p = {.at = "2026-05-01 02:00", .duration = "1h30m", .tz = "UTC",
                             .cls = "hotfix"};
    ck_assert_int_eq(maint_window_parse(&w, &p, now, err, sizeof(err)), 0);
    ck_assert_str_eq(w.rrule, "");
    ck_assert_int_eq(w.duration_s, 5400);
    ck_assert_int_eq(w.cls, MAINT_HOTFIX);
    p = (struct maint_params){.rrule = "FREQ=DAILY", .start = "03:00", .duration = "90m",
                              .tz = "Asia/Tokyo"};
    ck_assert_int_eq(maint_window_parse(&w, &p, utc(2026, 3, 1, 16, 0), err, sizeof(err)), 0);
    ck_assert_int_eq(w.day, 2); /* already March 2 in Tokyo */
    ck_assert_int_eq(w.cls, MAINT_WINDOW);
    ck_assert(!w.switchover);
}
END_TEST

START_TEST(window_refusals)
{
    static const struct {
        struct maint_params p;
        const char *needle;
    } bad[] = {
        {{.rrule = "FREQ=DAILY", .start = "22:00", .duration = "4h"}, "tz: required"},
        {{.rrule = "FREQ=DAILY", .start = "22:00", .duration = "4h", .tz = "Mars/Base"},
         "tz: unknown time zone 'Mars/Base'"},
        {{.rrule = "FREQ=DAILY", .start = "22:00", .tz = "UTC"}, "duration: required"},
        {{.rrule = "FREQ=DAILY", .start = "22:00", .duration = "4x", .tz = "UTC"},
         "duration: bad value '4x'"},
        {{.rrule = "FREQ=DAILY", .start = "22:00", .duration = "4", .tz = "UTC"},
         "duration: 4 has no unit (write 4h, 4m, 4s or 4d)"},
        {{.rrule = "FREQ=DAILY", .start = "22:00", .duration = "3600", .tz = "UTC"},
         "duration: 3600 has no unit"},
        {{.rrule = "FREQ=DAILY", .start = "22:00", .duration = "1h30", .tz = "UTC"},
         "duration: '1h30': 30 has no unit (write 30m or 30s)"},
        {{.rrule = "FREQ=DAILY", .start = "22:00", .duration = "32d", .tz = "UTC"},
         "duration: bad value"},
        {{.rrule = "FREQ=DAILY", .start = "22:00", .duration = "0m", .tz = "UTC"},
         "duration: bad value"},
        {{.rrule = "FREQ=DAILY", .start = "22:00", .duration = "4h", .tz = "UTC", .cls = "big"},
         "class: bad value 'big'"},
        {{.rrule = "FREQ=DAILY",
          .start = "22:00",
          .duration = "4h",
          .tz = "UTC",
          .switchover = "yes"},
         "switchover: bad value"},
        {{.duration = "4h", .tz = "UTC"}, "either rrule (with start) or at, not neither"},
        {{.rrule = "FREQ=DAILY", .at = "2026-05-01 02:00", .duration = "4h", .tz = "UTC"},
         "not both"},
        {{.rrule = "FREQ=MONTHLY;BYSETPOS=-1", .start = "22:00", .duration = "4h", .tz = "UTC"},
         "rrule: BYSETPOS is not supported"},
        {{.rrule = "FREQ=DAILY", .duration = "4h", .tz = "UTC"}, "start: required"},
        {{.rrule = "FREQ=DAILY", .start = "24:00", .duration = "4h", .tz = "UTC"},
         "start: bad value '24:00'"},
        {{.rrule = "FREQ=DAILY",
          .start = "22:00",
          .from = "2026-13-01",
          .duration = "4h",
          .tz = "UTC"},
         "from: bad value"},
        {{.rrule = "FREQ=DAILY",
          .start = "22:00",
          .from = "2026-02-30",
          .duration = "4h",
          .tz = "UTC"},
         "from: no such local date"},
        {{.at = "2026-05-01", .duration = "4h", .tz = "UTC"}, "at: bad value '2026-05-01'"},
        {{.at = "2026-05-01 02:00", .start = "02:00", .duration = "4h", .tz = "UTC"},
         "at: start and from are only for a recurring window"},
        {{.at = "2026-02-01 02:00", .duration = "4h", .tz = "UTC"}, "the window is over"},
        {{.rrule = "FREQ=DAILY;COUNT=2",
          .start = "22:00",
          .from = "2026-01-01",
          .duration = "1h",
          .tz = "UTC"},
         "the window is over: rrule"},
    };
    int64_t now = utc(2026, 3, 1, 0, 0);

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct maint_window w;
        int rc = maint_window_parse(&w, &bad[i].p, now, err, sizeof(err));
        ck_assert_msg(rc == -EINVAL, "case %zu accepted", i);
        ck_assert_msg(strstr(err, bad[i].needle) != NULL, "case %zu: '%s' lacks '%s'", i, err,
                      bad[i].needle);
    }
}
END_TEST

START_TEST(describe)
{
    struct maint_window w[2];
    struct maint_params once = {.at = "2026-03-10 12:00", .duration = "1h", .tz = "UTC",
                                .cls = "hotfix"};
    char text[128];

    ck_assert_int_eq(maint_window_parse(&w[0], &monthly, utc(2026, 3, 1, 0, 0), err,
                                        sizeof(err)), 0);
    ck_assert_int_eq(maint_window_parse(&w[1], &once, utc(2026, 3, 1, 0, 0), err, sizeof(err)),
                     0);
    ck_assert(!maint_describe(w, 0, utc(2026, 3, 1, 0, 0), text, sizeof(text)));
    ck_assert_str_eq(text, "none");
    ck_assert(!maint_describe(w, 2, utc(2026, 3, 1, 0, 0), text, sizeof(text)));
    ck_assert_str_eq(text,
                     "next window at Sat 2026-02-28 22:00 America/Denver (2026-03-01 05:00 UTC)");
    ck_assert(maint_describe(w, 2, utc(2026, 3, 1, 6, 0), text, sizeof(text)));
    ck_assert_str_eq(
        text, "active window until Sun 2026-03-01 02:00 America/Denver (2026-03-01 09:00 UTC)");
    ck_assert(!maint_describe(w, 2, utc(2026, 3, 2, 0, 0), text, sizeof(text)));
    ck_assert_str_eq(text, "next hotfix at Tue 2026-03-10 12:00 UTC");
    ck_assert(maint_describe(w, 2, utc(2026, 3, 10, 12, 30), text, sizeof(text)));
    ck_assert_str_eq(text, "active hotfix until Tue 2026-03-10 13:00 UTC");
}
END_TEST

/* The next three occurrences, in the window's zone and in UTC, across a DST change: the
 * last Saturday at 22:00 in Denver is 05:00 UTC in February (MST), 04:00 UTC from March (MDT). */
START_TEST(next_occurrences)
{
    struct maint_window w;
    struct rrule_span occ[MAINT_NEXT];
    char text[160];
    json_t *o, *list;

    ck_assert_int_eq(maint_window_parse(&w, &monthly, utc(2026, 2, 1, 0, 0), err, sizeof(err)), 0);
    /* inside February's window: it counts, as open */
    ck_assert_int_eq(maint_window_next(&w, utc(2026, 3, 1, 6, 0), occ, MAINT_NEXT), 3);
    ck_assert_int_eq(occ[0].start, utc(2026, 3, 1, 5, 0));
    ck_assert_int_eq(occ[1].start, utc(2026, 3, 29, 4, 0));
    ck_assert_int_eq(occ[2].start, utc(2026, 4, 26, 4, 0));
    ck_assert_int_eq(occ[2].end, utc(2026, 4, 26, 8, 0));
    maint_span_text(&w, &occ[0], false, text, sizeof(text));
    ck_assert_str_eq(text, "Sat 2026-02-28 22:00 - Sun 2026-03-01 02:00 America/Denver");
    maint_span_text(&w, &occ[0], true, text, sizeof(text));
    ck_assert_str_eq(text, "Sun 2026-03-01 05:00 - 09:00 UTC");
    maint_span_text(&w, &occ[1], false, text, sizeof(text));
    ck_assert_str_eq(text, "Sat 2026-03-28 22:00 - Sun 2026-03-29 02:00 America/Denver");
    maint_span_text(&w, &occ[1], true, text, sizeof(text));
    ck_assert_str_eq(text, "Sun 2026-03-29 04:00 - 08:00 UTC");
    /* after it: the next three */
    ck_assert_int_eq(maint_window_next(&w, utc(2026, 3, 1, 9, 0), occ, MAINT_NEXT), 3);
    ck_assert_int_eq(occ[0].start, utc(2026, 3, 29, 4, 0));
    ck_assert_int_eq(occ[2].start, utc(2026, 5, 31, 4, 0));
    /* in the JSON of GET /maintenance */
    o = maint_window_json(&w, utc(2026, 3, 1, 6, 0));
    ck_assert_ptr_nonnull(o);
    list = json_object_get(o, "occurrences");
    ck_assert_uint_eq(json_array_size(list), 3);
    ck_assert(json_is_true(json_object_get(json_array_get(list, 0), "active")));
    ck_assert(json_is_false(json_object_get(json_array_get(list, 1), "active")));
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(list, 1), "local")),
                     "Sat 2026-03-28 22:00 - Sun 2026-03-29 02:00 America/Denver");
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(list, 1), "utc")),
                     "Sun 2026-03-29 04:00 - 08:00 UTC");
    ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(list, 2), "start")),
                     utc(2026, 4, 26, 4, 0));
    json_decref(o);
    /* a one-off has one, then none */
    {
        struct maint_params once = {.at = "2026-03-10 12:00", .duration = "90m", .tz = "UTC"};
        ck_assert_int_eq(maint_window_parse(&w, &once, utc(2026, 3, 1, 0, 0), err, sizeof(err)), 0);
        ck_assert_int_eq(maint_window_next(&w, utc(2026, 3, 1, 0, 0), occ, MAINT_NEXT), 1);
        maint_span_text(&w, &occ[0], false, text, sizeof(text));
        ck_assert_str_eq(text, "Tue 2026-03-10 12:00 - 13:30 UTC");
        ck_assert_int_eq(maint_window_next(&w, utc(2026, 3, 11, 0, 0), occ, MAINT_NEXT), 0);
    }
}
END_TEST

/* ---- the store ---- */

static struct maint_window
window(const struct maint_params *p)
{
    struct maint_window w;

    ck_assert_msg(maint_window_parse(&w, p, utc(2026, 3, 1, 0, 0), err, sizeof(err)) == 0, "%s",
                  err);
    return w;
}

START_TEST(store_round_trip)
{
    struct maint_store *s;
    struct maint_window w = window(&monthly), got[MAINT_MAX];
    struct maint_params once = {.at = "2026-05-01 02:00", .duration = "2h", .tz = "UTC",
                                .cls = "routine"};
    char path[4200];

    ck_assert_int_eq(maint_store_open(&s, dir, err, sizeof(err)), 0);
    ck_assert_int_eq(maint_store_list(s, got, MAINT_MAX, true), 0);
    ck_assert_int_eq(maint_store_add(s, &w, err, sizeof(err)), 0);
    ck_assert_int_eq(w.id, 1);
    w = window(&once);
    w.id = 7; /* as walmirrorctl gives it */
    ck_assert_int_eq(maint_store_add(s, &w, err, sizeof(err)), 0);
    ck_assert_int_eq(w.id, 7);
    ck_assert_int_eq(maint_store_add(s, &w, err, sizeof(err)), -EEXIST);
    ck_assert_ptr_nonnull(strstr(err, "window 7 exists already"));
    w.id = 0;
    ck_assert_int_eq(maint_store_add(s, &w, err, sizeof(err)), 0);
    ck_assert_int_eq(w.id, 8);
    ck_assert_int_eq(maint_store_remove(s, 8, err, sizeof(err)), 0);
    ck_assert_int_eq(maint_store_remove(s, 8, err, sizeof(err)), -ENOENT);
    ck_assert_ptr_nonnull(strstr(err, "no maintenance window 8"));
    maint_store_close(s);

    /* what was saved comes back */
    ck_assert_int_eq(maint_store_open(&s, dir, err, sizeof(err)), 0);
    ck_assert_int_eq(maint_store_list(s, got, MAINT_MAX, false), 2);
    ck_assert_int_eq(got[0].id, 1);
    ck_assert_str_eq(got[0].rrule, "FREQ=MONTHLY;BYDAY=-1SA");
    ck_assert_str_eq(got[0].tz, "America/Denver");
    ck_assert_int_eq(got[0].year, 2026);
    ck_assert_int_eq(got[0].start_minute, 22 * 60);
    ck_assert_int_eq(got[0].duration_s, 4 * 3600);
    ck_assert(got[0].switchover);
    ck_assert_int_eq(got[1].id, 7);
    ck_assert_str_eq(got[1].rrule, "");
    ck_assert_int_eq(got[1].cls, MAINT_ROUTINE);
    ck_assert_int_eq(got[1].month, 5);
    ck_assert_int_eq(got[1].start_minute, 120);
    /* removed ids are not given again */
    w = window(&once);
    ck_assert_int_eq(maint_store_add(s, &w, err, sizeof(err)), 0);
    ck_assert_int_eq(w.id, 9);
    maint_store_close(s);
    snprintf(path, sizeof(path), "%s/%s.tmp", dir, MAINT_FILE);
    ck_assert_int_ne(access(path, F_OK), 0);
}
END_TEST

START_TEST(store_damaged)
{
    static const char *const texts[] = {
        "{",
        "[]",
        "{\"version\": 2, \"next_id\": 1, \"windows\": []}",
        "{\"version\": 1, \"next_id\": 1, \"windows\": [{\"id\": 1}]}",
        "{\"version\": 1, \"next_id\": 2, \"windows\": [{\"id\": 1, \"class\": \"window\", "
        "\"rrule\": \"FREQ=YEARLY\", \"date\": \"2026-01-01\", \"start\": \"22:00\", "
        "\"duration_s\": 60, \"tz\": \"UTC\", \"switchover\": false}]}",
        "{\"version\": 1, \"next_id\": 2, \"windows\": [{\"id\": 1, \"class\": \"window\", "
        "\"date\": \"2026-01-01\", \"start\": \"22:00\", \"duration_s\": 60, "
        "\"tz\": \"Nowhere/Zone\", \"switchover\": false}]}",
        "{\"version\": 1, \"version\": 1, \"next_id\": 1, \"windows\": []}",
    };
    char path[4200];

    snprintf(path, sizeof(path), "%s/%s", dir, MAINT_FILE);
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        struct maint_store *s = (struct maint_store *)1;
        FILE *f = fopen(path, "w");
        ck_assert_ptr_nonnull(f);
        fputs(texts[i], f);
        fclose(f);
        ck_assert_msg(maint_store_open(&s, dir, err, sizeof(err)) == -EINVAL, "case %zu", i);
        ck_assert_ptr_null(s);
        ck_assert_msg(strstr(err, MAINT_FILE) != NULL, "case %zu: %s", i, err);
    }
    /* a directory that is not there */
    char missing[4200];
    struct maint_store *s;
    snprintf(missing, sizeof(missing), "%s/none", dir);
    ck_assert_int_eq(maint_store_open(&s, missing, err, sizeof(err)), 0); /* no file: empty */
    struct maint_window w = window(&monthly);
    ck_assert_int_lt(maint_store_add(s, &w, err, sizeof(err)), 0);
    ck_assert_ptr_nonnull(strstr(err, "cannot create"));
    ck_assert_int_eq(maint_store_list(s, &w, 1, true), 0); /* nothing changed */
    maint_store_close(s);
}
END_TEST

/* ---- the HTTP API and walmirrorctl: two agents ---- */

struct site {
    struct status_board board;
    struct httpapi *api;
    struct maint_store *store;
    char dir[4200];
    char base[64];
};

static struct site sites[2];

static void
setup_sites(void)
{
    setup_dir();
    for (int i = 0; i < 2; i++) {
        struct site *st = &sites[i];
        struct status_snapshot snap = {0};

        snprintf(st->dir, sizeof(st->dir), "%s/site%d", dir, i);
        ck_assert_int_eq(mkdir(st->dir, 0700), 0);
        status_board_init(&st->board);
        snprintf(snap.node_name, sizeof(snap.node_name), "site-%c", 'a' + i);
        snprintf(snap.maintenance, sizeof(snap.maintenance), "none");
        status_publish(&st->board, &snap);
        ck_assert_int_eq(maint_store_open(&st->store, st->dir, err, sizeof(err)), 0);
        ck_assert_int_eq(httpapi_start(&st->api, "127.0.0.1:0", NULL, &st->board, err,
                                       sizeof(err)), 0);
        httpapi_set_maint(st->api, st->store);
        snprintf(st->base, sizeof(st->base), "http://127.0.0.1:%d", httpapi_port(st->api));
    }
}

static void
teardown_sites(void)
{
    for (int i = 0; i < 2; i++) {
        httpapi_stop(sites[i].api);
        maint_store_close(sites[i].store);
        status_board_destroy(&sites[i].board);
    }
    teardown_dir();
}

struct resp {
    long code;
    char body[65536];
    size_t len;
};

static size_t
on_body(char *data, size_t size, size_t nmemb, void *ud)
{
    struct resp *r = ud;
    size_t n = size * nmemb;

    if (r->len + n >= sizeof(r->body))
        return 0;
    memcpy(r->body + r->len, data, n);
    r->len += n;
    r->body[r->len] = '\0';
    return n;
}

static void
request(struct resp *r, const char *method, const char *url)
{
    CURL *c = curl_easy_init();

    memset(r, 0, sizeof(*r));
    ck_assert_ptr_nonnull(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    ck_assert_int_eq(curl_easy_perform(c), CURLE_OK);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->code);
    curl_easy_cleanup(c);
}

#define assert_has(text, s)                                                                    \
    ck_assert_msg(strstr((text), (s)) != NULL, "\"%s\" not in:\n%s", (s), (text))

START_TEST(http_endpoints)
{
    struct resp r;
    char url[512];
    json_t *o, *w;

    snprintf(url, sizeof(url), "%s/maintenance", sites[0].base);
    request(&r, "GET", url);
    ck_assert_int_eq(r.code, 200);
    o = json_loads(r.body, 0, NULL);
    ck_assert_int_eq(json_array_size(json_object_get(o, "windows")), 0);
    ck_assert_str_eq(json_string_value(json_object_get(o, "node_name")), "site-a");
    json_decref(o);

    /* refusals name the parameter */
    snprintf(url, sizeof(url),
             "%s/maintenance?rrule=FREQ%%3DMONTHLY%%3BBYSETPOS%%3D-1&start=22:00&duration=4h"
             "&tz=UTC", sites[0].base);
    request(&r, "POST", url);
    ck_assert_int_eq(r.code, 400);
    assert_has(r.body, "rrule: BYSETPOS is not supported");
    snprintf(url, sizeof(url), "%s/maintenance?at=2099-01-01%%2002:00&duration=4h",
             sites[0].base);
    request(&r, "POST", url);
    ck_assert_int_eq(r.code, 400);
    assert_has(r.body, "tz: required");
    snprintf(url, sizeof(url),
             "%s/maintenance?at=2099-01-01%%2002:00&duration=4h&tz=UTC&id=x", sites[0].base);
    request(&r, "POST", url);
    ck_assert_int_eq(r.code, 400);
    assert_has(r.body, "id:");

    /* added */
    snprintf(url, sizeof(url),
             "%s/maintenance?rrule=FREQ%%3DMONTHLY%%3BBYDAY%%3D-1SA&start=22:00&duration=4h"
             "&tz=America/Denver&class=window&switchover=1", sites[0].base);
    request(&r, "POST", url);
    ck_assert_msg(r.code == 201, "%ld %s", r.code, r.body);
    o = json_loads(r.body, 0, NULL);
    w = json_object_get(o, "added");
    ck_assert_int_eq(json_integer_value(json_object_get(w, "id")), 1);
    ck_assert_str_eq(json_string_value(json_object_get(w, "rrule")), "FREQ=MONTHLY;BYDAY=-1SA");
    ck_assert(json_is_true(json_object_get(w, "switchover")));
    ck_assert(json_is_integer(json_object_get(w, "next_start")));
    json_decref(o);
    snprintf(url, sizeof(url), "%s/maintenance?at=2099-01-01%%2002:00&duration=2h&tz=UTC"
             "&class=hotfix&id=1", sites[0].base);
    request(&r, "POST", url);
    ck_assert_int_eq(r.code, 409);
    assert_has(r.body, "window 1 exists already");

    snprintf(url, sizeof(url), "%s/maintenance", sites[0].base);
    request(&r, "GET", url);
    ck_assert_int_eq(r.code, 200);
    o = json_loads(r.body, 0, NULL);
    ck_assert_int_eq(json_array_size(json_object_get(o, "windows")), 1);
    w = json_array_get(json_object_get(o, "windows"), 0);
    ck_assert(json_is_boolean(json_object_get(w, "active")));
    ck_assert(json_is_string(json_object_get(w, "next_start_utc")) ||
              json_is_true(json_object_get(w, "active")));
    json_decref(o);

    /* wrong methods, bad ids, removal */
    request(&r, "PUT", url);
    ck_assert_int_eq(r.code, 405);
    snprintf(url, sizeof(url), "%s/maintenance/abc", sites[0].base);
    request(&r, "DELETE", url);
    ck_assert_int_eq(r.code, 400);
    snprintf(url, sizeof(url), "%s/maintenance/2", sites[0].base);
    request(&r, "DELETE", url);
    ck_assert_int_eq(r.code, 404);
    snprintf(url, sizeof(url), "%s/maintenance/1", sites[0].base);
    request(&r, "GET", url);
    ck_assert_int_eq(r.code, 405);
    request(&r, "DELETE", url);
    ck_assert_int_eq(r.code, 200);
    assert_has(r.body, "\"removed\": 1");
    request(&r, "DELETE", url);
    ck_assert_int_eq(r.code, 404);

    /* an agent without a store */
    httpapi_set_maint(sites[1].api, NULL);
    snprintf(url, sizeof(url), "%s/maintenance", sites[1].base);
    request(&r, "GET", url);
    ck_assert_int_eq(r.code, 503);
    httpapi_set_maint(sites[1].api, sites[1].store);
}
END_TEST

static char *out_text, *err_text;

static int ctl(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int
ctl(const char *fmt, ...)
{
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = tu_vcapture(dir, &out_text, &err_text, CTL, fmt, ap);
    va_end(ap);
    return rc;
}

START_TEST(ctl_maintenance)
{
    struct maint_window got[MAINT_MAX];
    const char *a = sites[0].base, *b = sites[1].base;
    int rc;

    rc = ctl("--url %s maintenance add --url %s --rrule 'FREQ=MONTHLY;BYDAY=-1SA' --start 22:00 "
             "--duration 4h --tz America/Denver --class window --switchover", a, b);
    ck_assert_msg(rc == 0, "exit %d: %s", rc, err_text);
    assert_has(out_text, "site-a: window 1 added");
    assert_has(out_text, "site-b: window 1 added");
    assert_has(out_text, "FREQ=MONTHLY;BYDAY=-1SA at 22:00");
    ck_assert_int_eq(maint_store_list(sites[0].store, got, MAINT_MAX, true), 1);
    ck_assert(got[0].switchover);
    ck_assert_int_eq(maint_store_list(sites[1].store, got, MAINT_MAX, true), 1);
    ck_assert_int_eq(got[0].id, 1);

    /* one site has an extra window: the next id is past both */
    struct maint_params once = {.at = "2099-06-01 02:00", .duration = "1h", .tz = "UTC"};
    struct maint_window w;
    ck_assert_int_eq(maint_window_parse(&w, &once, time(NULL), err, sizeof(err)), 0);
    w.id = 4;
    ck_assert_int_eq(maint_store_add(sites[1].store, &w, err, sizeof(err)), 0);
    rc = ctl("maintenance add --url %s --url %s --at '2099-01-01 02:00' --duration 2h "
             "--tz Europe/Berlin --class hotfix", a, b);
    ck_assert_msg(rc == 0, "exit %d: %s", rc, err_text);
    assert_has(out_text, "site-a: window 5 added");
    assert_has(out_text, "site-b: window 5 added");
    /* the next occurrence in the window's own zone, and in UTC */
    assert_has(out_text, "once at 2099-01-01 02:00 Europe/Berlin, 2h00m\n"
                         "       next  Thu 2099-01-01 02:00 - 04:00 Europe/Berlin "
                         "(Thu 2099-01-01 01:00 - 03:00 UTC)\n");

    rc = ctl("maintenance list --url %s --url %s", a, b);
    ck_assert_msg(rc == 0, "exit %d: %s", rc, err_text);
    assert_has(out_text, "site-a (http://127.0.0.1:");
    assert_has(out_text, "hotfix");
    assert_has(out_text, "switchover");
    /* the monthly window: its next three, each in Denver's time and in UTC */
    {
        const char *p = strstr(out_text, "FREQ=MONTHLY;BYDAY=-1SA at 22:00");
        ck_assert_ptr_nonnull(p);
        ck_assert_msg(strncmp(strchr(p, '\n'), "\n       next  Sat ", 18) == 0, "%s", out_text);
        p = strstr(p, "\n       then  Sat ");
        ck_assert_msg(p != NULL && strncmp(strchr(p + 1, '\n'), "\n       then  Sat ", 18) == 0,
                      "%s", out_text);
        ck_assert_msg(strstr(p, " 22:00 - Sun ") != NULL &&
                          strstr(p, " America/Denver (Sun ") != NULL,
                      "%s", out_text);
    }
    rc = ctl("maintenance list --json --url %s", a);
    ck_assert_int_eq(rc, 0);
    json_t *arr = json_loads(out_text, 0, NULL);
    ck_assert(json_is_array(arr));
    ck_assert_int_eq(json_array_size(json_object_get(json_array_get(arr, 0), "windows")), 2);
    json_decref(arr);

    rc = ctl("maintenance remove 5 --url %s --url %s", a, b);
    ck_assert_msg(rc == 0, "exit %d: %s", rc, err_text);
    assert_has(out_text, "site-b: window 5 removed");
    ck_assert_int_eq(maint_store_list(sites[0].store, got, MAINT_MAX, true), 1);
    rc = ctl("maintenance remove 5 --url %s", a);
    ck_assert_int_eq(rc, 1);
    assert_has(err_text, "404 no maintenance window 5");

    /* refused by the agents' rules before any agent is asked: the message, exit 2, and no
     * agent changed */
    rc = ctl("maintenance add --url %s --url %s --rrule 'FREQ=YEARLY' --start 22:00 "
             "--duration 4h --tz UTC", a, b);
    ck_assert_int_eq(rc, 2);
    assert_has(err_text, "maintenance add: rrule: FREQ=YEARLY is not supported");
    ck_assert_int_eq(maint_store_list(sites[1].store, got, MAINT_MAX, true), 2);
    rc = ctl("maintenance add --url %s --url %s --at '2099-01-01 02:00' --duration 4 --tz UTC", a,
             b);
    ck_assert_int_eq(rc, 2);
    assert_has(err_text, "maintenance add: duration: 4 has no unit");
    ck_assert_int_eq(maint_store_list(sites[0].store, got, MAINT_MAX, true), 1);
    ck_assert_int_eq(maint_store_list(sites[1].store, got, MAINT_MAX, true), 2);

    /* bad usage */
    ck_assert_int_eq(ctl("maintenance --url %s", a), 2);
    ck_assert_int_eq(ctl("maintenance add --url %s --rrule FREQ=DAILY --duration 1h --tz UTC", a),
                     2);
    assert_has(err_text, "--rrule with --start");
    ck_assert_int_eq(ctl("maintenance remove x --url %s", a), 2);
    ck_assert_int_eq(ctl("maintenance list --tz UTC --url %s", a), 2);
    ck_assert_int_eq(ctl("maintenance add --url %s --bogus", a), 2);
}
END_TEST

static Suite *
maint_suite(void)
{
    Suite *s = suite_create("maint");
    TCase *tc = tcase_create("windows");

    tcase_add_checked_fixture(tc, setup_dir, teardown_dir);
    tcase_add_test(tc, window_parse);
    tcase_add_test(tc, window_refusals);
    tcase_add_test(tc, describe);
    tcase_add_test(tc, next_occurrences);
    tcase_add_test(tc, store_round_trip);
    tcase_add_test(tc, store_damaged);
    suite_add_tcase(s, tc);

    tc = tcase_create("http");
    tcase_add_checked_fixture(tc, setup_sites, teardown_sites);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, http_endpoints);
    tcase_add_test(tc, ctl_maintenance);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr;
    int failed;

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return 1;
    sr = srunner_create(maint_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    curl_global_cleanup();
    return failed == 0 ? 0 : 1;
}
