/*
 * main.c - walmirror-agent: the per-site daemon.
 *
 * This version validates a configuration file (--check-config) and reports its version; the
 * replication daemon itself (source, spool, WAL server) is not in this build yet, and the
 * agent says so and exits 1 rather than pretend to run.
 *
 * Exit status: 0 success, 1 failure, 2 bad usage or bad configuration.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "log.h"

static void
usage(FILE *f)
{
    fprintf(f, "walmirror-agent - synchronous PostgreSQL WAL mirroring between two sites\n"
               "\n"
               "usage: walmirror-agent -c FILE [--check-config]\n"
               "       walmirror-agent --help | --version\n"
               "\n"
               "  -c, --config FILE   configuration file (docs/configuration.md)\n"
               "      --check-config  validate FILE, print the effective settings, and exit\n"
               "  -h, --help          this text\n"
               "  -V, --version       version\n"
               "\n"
               "This build checks configurations only: the replication daemon (source, durable\n"
               "spool, WAL server) is not implemented in it yet.\n");
}

int
main(int argc, char **argv)
{
    static const struct option longopts[] = {{"config", required_argument, NULL, 'c'},
                                             {"check-config", no_argument, NULL, 'k'},
                                             {"help", no_argument, NULL, 'h'},
                                             {"version", no_argument, NULL, 'V'},
                                             {NULL, 0, NULL, 0}};
    const char *path = NULL;
    bool check = false;
    struct wm_config cfg;
    char err[1024];
    int opt;

    while ((opt = getopt_long(argc, argv, "c:hV", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            path = optarg;
            break;
        case 'k':
            check = true;
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
    if (path == NULL || optind != argc) {
        usage(stderr);
        return 2;
    }
    if (config_load(path, &cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "walmirror-agent: %s\n", err);
        return 2;
    }
    if (check) {
        int rc = config_dump(stdout, &cfg);
        config_free(&cfg);
        return rc < 0 ? 1 : 0;
    }
    config_free(&cfg);
    fprintf(stderr,
            "walmirror-agent: configuration %s is valid, but this build does not run the "
            "replication daemon yet (only --check-config)\n",
            path);
    return 1;
}
