/*
 * main.c - walmirror-agent: the per-site daemon.
 *
 * This build answers --help and --version only: the replication daemon (source, durable
 * spool, WAL server) is not in it yet, and the agent says so and exits 1 rather than pretend
 * to run.
 */
#include <stdio.h>
#include <string.h>

int
main(int argc, char **argv)
{
    if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("walmirror-agent - synchronous PostgreSQL WAL mirroring between two sites\n"
               "\n"
               "usage: walmirror-agent --help | --version\n"
               "\n"
               "This build does not run the replication daemon yet.\n");
        return 0;
    }
    if (argc == 2 && (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0)) {
        printf("walmirror-agent %s\n", WALMIRROR_VERSION);
        return 0;
    }
    fprintf(stderr, "walmirror-agent: this build does not run the replication daemon yet "
                    "(only --help and --version)\n");
    return argc == 1 ? 2 : 1;
}
