/*
 * walmirrorctl.c - the operator CLI of walmirror.
 *
 * Status, lag, switchover, fail-over, rejoin and maintenance windows talk to the agents' HTTP
 * API, which is not in this build yet: this version answers --help and --version only, and
 * says so for every other command (exit 1).
 *
 * Exit status: 0 success, 1 failure, 2 bad usage.
 */
#include <stdio.h>
#include <string.h>

static const char *const commands[] = {"status", "switchover",  "failover", "rejoin", "pause",
                                       "resume", "maintenance", "check",    "report"};

static void
usage(FILE *f)
{
    fprintf(f, "walmirrorctl - operate a walmirror pair\n"
               "\n"
               "usage: walmirrorctl [-c FILE] COMMAND [ARGS]\n"
               "       walmirrorctl --help | --version\n"
               "\n"
               "commands (not implemented in this build): status, switchover, failover,\n"
               "rejoin, pause, resume, maintenance, check, report\n");
}

int
main(int argc, char **argv)
{
    int i = 1;

    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0) {
        printf("walmirrorctl %s\n", WALMIRROR_VERSION);
        return 0;
    }
    if (strcmp(argv[1], "-c") == 0)
        i = 3;
    if (i >= argc) {
        usage(stderr);
        return 2;
    }
    for (size_t k = 0; k < sizeof(commands) / sizeof(commands[0]); k++)
        if (strcmp(argv[i], commands[k]) == 0) {
            fprintf(stderr, "walmirrorctl: \"%s\" is not implemented in this build\n", argv[i]);
            return 1;
        }
    fprintf(stderr, "walmirrorctl: unknown command \"%s\"\n", argv[i]);
    usage(stderr);
    return 2;
}
