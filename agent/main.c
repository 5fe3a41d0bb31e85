/*
 * main.c - walmirror-agent: the per-site daemon, and its set-up commands.
 *
 *   walmirror-agent -c FILE                 run (role follows the local PostgreSQL, or
 *                                           the witness with role = witness: witness.h)
 *   walmirror-agent -c FILE --check-config  validate FILE and print the effective settings
 *   walmirror-agent -c FILE init-standby --primary CONNINFO
 *                                           make this site's standby from the primary
 *
 * Exit status: 0 success, 1 failure, 2 bad usage or bad configuration.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "agent.h"
#include "config.h"
#include "log.h"
#include "setup.h"
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
               "       walmirror-agent -c FILE init-standby --primary CONNINFO\n"
               "       walmirror-agent --help | --version\n"
               "\n"
               "  -c, --config FILE     configuration file (docs/configuration.md)\n"
               "      --check-config    validate FILE, print the effective settings, and exit\n"
               "  init-standby          make this site's standby from a base backup of the\n"
               "                        primary named by --primary (docs/setup.md)\n"
               "  -h, --help            this text\n"
               "  -V, --version         version\n"
               "\n"
               "Without a command the agent runs until SIGTERM or SIGINT: the source beside a\n"
               "primary, the sink beside a standby; with role = witness, the witness.\n");
}

int
main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},  {"check-config", no_argument, NULL, 'k'},
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
    if (optind < argc)
        command = argv[optind++];
    if (path == NULL || optind != argc ||
        (command != NULL && strcmp(command, "init-standby") != 0) ||
        ((command != NULL) != (primary != NULL))) {
        usage(stderr);
        return 2;
    }
    if (config_load(path, &cfg, err, sizeof(err)) < 0) {
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
