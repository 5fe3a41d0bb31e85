/*
 * main.c - walmirror-agent: the per-site daemon, and its set-up commands.
 *
 *   walmirror-agent -c FILE                 run (role follows the local PostgreSQL, or
 *                                           the witness with role = witness: witness.h)
 *   walmirror-agent --check-config FILE     validate FILE as starting would, and print the
 *   walmirror-agent -c FILE --check-config  effective settings
 *   walmirror-agent -c FILE init-standby --primary CONNINFO
 *                                           make this site's standby from the primary
 *
 * Running and --check-config check the configuration alike (load_checked): the file's own
 * rules (config.h), then what the agent's start-up would refuse about it: the HTTP API's
 * address and token file (httpapi_check) and the TLS files (tls_config_new).
 *
 * Exit status: 0 success, 1 failure, 2 bad usage or bad configuration.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "agent.h"
#include "config.h"
#include "httpapi.h"
#include "log.h"
#include "setup.h"
#include "tls.h"
#include "witness.h"

static volatile sig_atomic_t stop_requested;

static void
on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void
usage(FILE *f)
{
    fprintf(f, "walmirror-agent - synchronous PostgreSQL WAL mirroring between two sites\n"
               "\n"
               "usage: walmirror-agent -c FILE [--check-config]\n"
               "       walmirror-agent --check-config FILE\n"
               "       walmirror-agent -c FILE init-standby --primary CONNINFO\n"
               "       walmirror-agent --help | --version\n"
               "\n"
               "  -c, --config FILE     configuration file (docs/configuration.md)\n"
               "      --check-config    check FILE as starting would (its keys, the HTTP API's\n"
               "                        address and token file, the TLS files), print the\n"
               "                        effective settings, and exit: 0 if good, 2 if not\n"
               "  init-standby          make this site's standby from a base backup of the\n"
               "                        primary named by --primary (docs/setup.md)\n"
               "  -h, --help            this text\n"
               "  -V, --version         version\n"
               "\n"
               "Without a command the agent runs until SIGTERM or SIGINT: the source beside a\n"
               "primary, the sink beside a standby; with role = witness, the witness.\n");
}

/*
 * Loads the configuration at path and checks it as starting needs it: config_load's rules,
 * then what the HTTP API and the TLS set-up refuse at start.  Returns 0 with *cfg filled, or
 * a negative errno with one line in err and nothing to free.
 */
static int
load_checked(const char *path, struct wm_config *cfg, char *err, size_t errlen)
{
    struct tls_config *tls = NULL;
    char why[768];
    int rc = config_load(path, cfg, err, errlen);

    if (rc < 0)
        return rc;
    rc = httpapi_check(cfg->http_listen.text, cfg->http_token_file, why, sizeof(why));
    if (rc == 0) {
        rc = tls_config_new(&tls, cfg->tls_ca, cfg->tls_cert, cfg->tls_key, true, why, sizeof(why));
        tls_config_free(tls);
    }
    if (rc < 0) {
        snprintf(err, errlen, "%s: %s", path, why);
        config_free(cfg);
    }
    return rc;
}

int
main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},  {"check-config", optional_argument, NULL, 'k'},
        {"primary", required_argument, NULL, 'p'}, {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},       {NULL, 0, NULL, 0}};
    const char *path = NULL, *primary = NULL, *command = NULL;
    bool check = false;
    struct wm_config cfg;
    struct sigaction sa;
    char err[1024];
    int opt, rc;

    while ((opt = getopt_long(argc, argv, "c:hV", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            path = optarg;
            break;
        case 'k':
            /* --check-config=FILE; --check-config FILE is taken below */
            if (optarg != NULL && path != NULL) {
                usage(stderr);
                return 2;
            }
            if (optarg != NULL)
                path = optarg;
            check = true;
            break;
        case 'p':
            primary = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("walmirror-agent %s\n", WALMIRROR_VERSION);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (check && path == NULL && optind < argc)
        path = argv[optind++]; /* the documented form: --check-config FILE */
    if (optind < argc)
        command = argv[optind++];
    if (path == NULL || optind != argc || (check && command != NULL) ||
        (command != NULL && strcmp(command, "init-standby") != 0) ||
        ((command != NULL) != (primary != NULL))) {
        usage(stderr);
        return 2;
    }
    /* init-standby needs the file's own rules only: the agent does not run. */
    rc = command != NULL ? config_load(path, &cfg, err, sizeof(err))
                         : load_checked(path, &cfg, err, sizeof(err));
    if (rc < 0) {
        fprintf(stderr, "walmirror-agent: %s\n", err);
        return 2;
    }
    log_level = cfg.log_level;
    if (check) {
        rc = config_dump(stdout, &cfg) < 0 ? 1 : 0;
    } else if (cfg.role == CONFIG_ROLE_WITNESS && command != NULL) {
        fprintf(stderr, "walmirror-agent: %s is for a site; %s is a witness (role = witness)\n",
                command, path);
        rc = 2;
    } else if (cfg.role == CONFIG_ROLE_WITNESS) {
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        signal(SIGPIPE, SIG_IGN);
        rc = witness_run(&cfg, &stop_requested);
    } else if (command != NULL) {
        rc = setup_init_standby(&cfg, primary);
    } else {
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        signal(SIGPIPE, SIG_IGN);
        rc = agent_run(&cfg, &stop_requested);
    }
    config_free(&cfg);
    return rc;
}
