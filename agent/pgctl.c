/*
 * pgctl.c - the site's own PostgreSQL: child programs, control data, standby configuration;
 * contract in pgctl.h.
 */
#include "pgctl.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "util.h"

#define PGCTL_DEFAULT_BINDIR "/usr/lib/postgresql/15/bin"
#define PGCTL_WAIT_S "120" /* pg_ctl -t */

/* The block pgctl_write_standby_config() owns in postgresql.auto.conf. */
#define BLOCK_BEGIN "# walmirror: begin (this server streams from its site's walmirror agent)"
#define BLOCK_END "# walmirror: end"

static const char *const config_files[] = {"postgresql.conf", "postgresql.auto.conf",
                                           "pg_hba.conf", "pg_ident.conf"};

extern char **environ;

/* ---- child programs ---- */

const char *
pgctl_bindir(void)
{
    const char *d = getenv("WALMIRROR_PG_BINDIR");
    return d != NULL && d[0] != '\0' ? d : PGCTL_DEFAULT_BINDIR;
}

/* The agent's environment with LC_ALL=C (built before fork: the child may only exec). */
static char **
child_env(void)
{
    size_t n = 0, k = 0;
    char **env;

    while (environ[n] != NULL)
        n++;
    env = calloc(n + 2, sizeof(char *));
    if (env == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "LC_ALL=", 7) != 0)
            env[k++] = environ[i];
    env[k++] = "LC_ALL=C";
    env[k] = NULL;
    return env;
}

/* fork + exec of argv with stdin /dev/null and stdout (and stderr unless err_fd < 0, which
 * sends it to /dev/null) on out_fd.  Returns the pid or a negative errno. */
static pid_t
start_child(char *const argv[], int out_fd, int err_fd)
{
    char **env = child_env();
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    pid_t pid;

    if (env == NULL || null < 0) {
        int e = env == NULL ? ENOMEM : errno;
        free(env);
        if (null >= 0)
            close(null);
        return -e;
    }
    pid = fork();
    if (pid == 0) {
        if (dup2(null, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(err_fd >= 0 ? err_fd : null, 2) < 0)
            _exit(127);
        /* Its own process group: a terminal's ^C aimed at the agent does not reach it. */
        setpgid(0, 0);
        execve(argv[0], argv, env);
        dprintf(2, "walmirror: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    free(env);
    close(null);
    return pid < 0 ? -errno : pid;
}

int
pgctl_spawn(struct pgctl_job *j, const char *what, const char *log_path, bool truncate,
            char *const argv[])
{
    pid_t pid;
    int fd;

    if (j->pid > 0)
        return -EBUSY;
    fd = open(log_path, O_WRONLY | O_CREAT | (truncate ? O_TRUNC : O_APPEND) | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    pid = start_child(argv, fd, fd);
    if (pid < 0) {
        close(fd);
        return (int)pid;
    }
    close(fd);
    j->pid = pid;
#ifdef SYS_pidfd_open
    j->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
#else
    j->pidfd = -1;
#endif
    j->exit_code = -1;
    j->started_ms = clock_mono_ms();
    snprintf(j->what, sizeof(j->what), "%s", what);
    return 0;
}

int
pgctl_poll(struct pgctl_job *j)
{
    int status;
    pid_t r;

    if (j->pid <= 0)
        return 1;
    r = waitpid(j->pid, &status, WNOHANG);
    if (r == 0)
        return 0;
    if (r < 0)
        return -errno;
    j->pid = 0;
    if (j->pidfd >= 0)
        close(j->pidfd);
    j->pidfd = -1;
    j->exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return 1;
}

void
pgctl_job_init(struct pgctl_job *j)
{
    memset(j, 0, sizeof(*j));
    j->pidfd = -1;
}

void
pgctl_kill(struct pgctl_job *j)
{
    if (j->pid <= 0)
        return;
    kill(j->pid, SIGKILL);
    while (waitpid(j->pid, NULL, 0) < 0 && errno == EINTR)
        ;
    j->pid = 0;
    if (j->pidfd >= 0)
        close(j->pidfd);
    j->pidfd = -1;
    j->exit_code = 128 + SIGKILL;
}

/* Starts prog (a PostgreSQL program) with args (NULL-terminated, at most 12). */
static int
run_pg(struct pgctl_job *j, const char *what, const char *log_path, bool truncate,
       const char *prog, const char *const *args)
{
    char path[4200];
    char *argv[16];
    int n = 0;

    snprintf(path, sizeof(path), "%s/%s", pgctl_bindir(), prog);
    argv[n++] = path;
    for (; *args != NULL && n < 15; args++)
        argv[n++] = (char *)*args;
    argv[n] = NULL;
    return pgctl_spawn(j, what, log_path, truncate, argv);
}

int
pgctl_run_pg_ctl(struct pgctl_job *j, enum pgctl_action action, const char *pgdata,
                 const char *server_log, const char *log_path)
{
    static const char *const names[] = {"pg_ctl stop", "pg_ctl start", "pg_ctl promote"};
    const char *args[12];
    int n = 0;

    args[n++] = action == PGCTL_STOP ? "stop" : action == PGCTL_START ? "start" : "promote";
    if (action == PGCTL_STOP) {
        args[n++] = "-m";
        args[n++] = "fast";
    }
    args[n++] = "-w";
    args[n++] = "-t";
    args[n++] = PGCTL_WAIT_S;
    args[n++] = "-D";
    args[n++] = pgdata;
    if (action == PGCTL_START) {
        args[n++] = "-l";
        args[n++] = server_log;
    }
    args[n] = NULL;
    return run_pg(j, names[action], log_path, false, "pg_ctl", args);
}

int
pgctl_run_checkpoint(struct pgctl_job *j, const char *conninfo, const char *log_path)
{
    /* Refused while the server is still in recovery: pg_rewind against a server whose
     * control file still says the old timeline (a standby, or a primary before its first
     * checkpoint) finds "no rewind required". */
    const char *args[] = {"-X", "-v", "ON_ERROR_STOP=1", "-d", conninfo, "-c",
                          "DO $$BEGIN IF pg_is_in_recovery() THEN RAISE EXCEPTION "
                          "'still in recovery: not promoted yet'; END IF; END$$",
                          "-c", "CHECKPOINT", NULL};

    return run_pg(j, "CHECKPOINT on the new primary", log_path, false, "psql", args);
}

int
pgctl_run_local_checkpoint(struct pgctl_job *j, const char *conninfo, const char *log_path)
{
    /* The switch first: the padding of the segment it ends streams while CHECKPOINT runs. */
    const char *args[] = {"-X",         "-v", "ON_ERROR_STOP=1",        "-d",
                          conninfo,     "-c", "SELECT pg_switch_wal()", "-c",
                          "CHECKPOINT", NULL};

    return run_pg(j, "WAL switch and CHECKPOINT before the switchover's stop", log_path, false,
                  "psql", args);
}

int
pgctl_run_rewind(struct pgctl_job *j, const char *pgdata, const char *conninfo,
                 const char *log_path)
{
    char target[4300], source[4300];
    const char *args[] = {target, source, "--progress", NULL};

    snprintf(target, sizeof(target), "--target-pgdata=%s", pgdata);
    snprintf(source, sizeof(source), "--source-server=%s", conninfo);
    return run_pg(j, "pg_rewind", log_path, false, "pg_rewind", args);
}

int
pgctl_run_basebackup(struct pgctl_job *j, const char *pgdata, const char *conninfo,
                     const char *log_path)
{
    const char *args[] = {"-D",       pgdata, "-d", conninfo, "--wal-method=stream",
                          "--checkpoint=fast", "--no-password", NULL};

    return run_pg(j, "pg_basebackup", log_path, false, "pg_basebackup", args);
}

int
pgctl_run_empty(struct pgctl_job *j, const char *pgdata, const char *log_path)
{
    char *argv[] = {"/usr/bin/find", (char *)pgdata, "-mindepth", "1", "-delete", NULL};

    return pgctl_spawn(j, "emptying pgdata", log_path, false, argv);
}

int
pgctl_run_controldata(struct pgctl_job *j, const char *pgdata, const char *out_path)
{
    const char *args[] = {"-D", pgdata, NULL};

    return run_pg(j, "pg_controldata", out_path, true, "pg_controldata", args);
}

bool
pgctl_running(const char *pgdata)
{
    char path[4200];
    FILE *f;
    long pid = 0;

    snprintf(path, sizeof(path), "%s/postmaster.pid", pgdata);
    f = fopen(path, "r");
    if (f == NULL)
        return false;
    if (fscanf(f, "%ld", &pid) != 1)
        pid = 0;
    fclose(f);
    return pid > 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM);
}

/* ---- control data ---- */

static bool
parse_lsn(const char *s, uint64_t *lsn)
{
    unsigned hi, lo;

    if (sscanf(s, "%X/%X", &hi, &lo) != 2)
        return false;
    *lsn = (uint64_t)hi << 32 | lo;
    return true;
}

/* The value after "Label:" in a pg_controldata or backup_label line, or NULL. */
static const char *
value_of(const char *line, const char *label)
{
    size_t n = strlen(label);

    if (strncmp(line, label, n) != 0)
        return NULL;
    line += n;
    while (*line == ' ')
        line++;
    return line;
}

/* Parses pg_controldata's output from f. */
static int
parse_controldata(FILE *f, const char *pgdata, struct pgctl_control *out, char *err,
                  size_t errlen)
{
    char line[512];
    const char *v;

    memset(out, 0, sizeof(*out));
    while (fgets(line, sizeof(line), f) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        if ((v = value_of(line, "Database system identifier:")) != NULL)
            out->system_id = strtoull(v, NULL, 10);
        else if ((v = value_of(line, "Bytes per WAL segment:")) != NULL)
            out->seg_size = (uint32_t)strtoul(v, NULL, 10);
        else if ((v = value_of(line, "Database cluster state:")) != NULL)
            snprintf(out->state, sizeof(out->state), "%.39s", v);
        else if ((v = value_of(line, "Latest checkpoint location:")) != NULL)
            parse_lsn(v, &out->checkpoint_lsn);
        else if ((v = value_of(line, "Latest checkpoint's REDO location:")) != NULL)
            parse_lsn(v, &out->redo_lsn);
        else if ((v = value_of(line, "Latest checkpoint's TimeLineID:")) != NULL)
            out->checkpoint_tli = (uint32_t)strtoul(v, NULL, 10);
        else if ((v = value_of(line, "Minimum recovery ending location:")) != NULL)
            parse_lsn(v, &out->min_recovery_lsn);
        else if ((v = value_of(line, "Min recovery ending loc's timeline:")) != NULL)
            out->min_recovery_tli = (uint32_t)strtoul(v, NULL, 10);
    }
    if (out->system_id == 0 || out->seg_size == 0 || out->checkpoint_tli == 0) {
        snprintf(err, errlen,
                 "cannot read the control data of %s with pg_controldata (is pgdata right, "
                 "and readable by this user?)",
                 pgdata);
        return -EINVAL;
    }
    return 0;
}

int
pgctl_controldata_read(const char *out_path, const char *pgdata, struct pgctl_control *out,
                       char *err, size_t errlen)
{
    FILE *f = fopen(out_path, "r");
    int rc;

    if (f == NULL) {
        snprintf(err, errlen, "cannot read pg_controldata's output %s: %s", out_path,
                 strerror(errno));
        return -errno;
    }
    rc = parse_controldata(f, pgdata, out, err, errlen);
    fclose(f);
    return rc;
}

int
pgctl_controldata(const char *pgdata, struct pgctl_control *out, char *err, size_t errlen)
{
    char prog[4200], dir[4200];
    char *argv[] = {prog, "-D", dir, NULL};
    int pipefd[2], status = 0, rc;
    pid_t pid;
    FILE *f;

    snprintf(prog, sizeof(prog), "%s/pg_controldata", pgctl_bindir());
    snprintf(dir, sizeof(dir), "%s", pgdata);
    if (pipe2(pipefd, O_CLOEXEC) != 0) {
        snprintf(err, errlen, "cannot run pg_controldata: %s", strerror(errno));
        return -errno;
    }
    pid = start_child(argv, pipefd[1], -1);
    close(pipefd[1]);
    if (pid < 0) {
        close(pipefd[0]);
        snprintf(err, errlen, "cannot run %s: %s", prog, strerror((int)-pid));
        return (int)pid;
    }
    f = fdopen(pipefd[0], "r");
    if (f == NULL) {
        close(pipefd[0]);
        rc = -errno;
    } else {
        rc = parse_controldata(f, pgdata, out, err, errlen);
        fclose(f);
    }
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (rc == 0 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
        snprintf(err, errlen, "pg_controldata -D %s failed (status %d)", pgdata, status);
        rc = -EIO;
    }
    return rc;
}

int
pgctl_wal_start(const char *pgdata, const struct pgctl_control *ctl, uint64_t *lsn, uint32_t *tli,
                char *err, size_t errlen)
{
    char path[4200], line[512];
    const char *v;
    FILE *f;

    *lsn = ctl->redo_lsn;
    *tli = ctl->checkpoint_tli;
    snprintf(path, sizeof(path), "%s/backup_label", pgdata);
    f = fopen(path, "r");
    if (f == NULL) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        return -errno;
    }
    {
        uint64_t start = 0;
        uint32_t start_tli = 0;

        while (fgets(line, sizeof(line), f) != NULL) {
            if ((v = value_of(line, "START WAL LOCATION:")) != NULL) {
                const char *file = strstr(v, "(file ");
                parse_lsn(v, &start);
                /* pg_rewind writes no START TIMELINE line: the file name's first 8 digits. */
                if (file != NULL && start_tli == 0 && sscanf(file, "(file %8X", &start_tli) != 1)
                    start_tli = 0;
            }
            else if ((v = value_of(line, "START TIMELINE:")) != NULL)
                start_tli = (uint32_t)strtoul(v, NULL, 10);
        }
        fclose(f);
        if (start == 0 || start_tli == 0) {
            snprintf(err, errlen, "%s has no START WAL LOCATION with its timeline", path);
            return -EINVAL;
        }
        if (start < *lsn) {
            *lsn = start;
            *tli = start_tli;
        }
    }
    return 0;
}

/* ---- configuration files ---- */

static int
fsync_path(const char *path, int flags)
{
    int fd = open(path, flags | O_CLOEXEC);
    int rc = 0;

    if (fd < 0)
        return -errno;
    if (fsync(fd) != 0)
        rc = -errno;
    close(fd);
    return rc;
}

/* Replaces path with content, durably: a temporary file, fsync, rename, fsync the directory. */
static int
write_durably(const char *dir, const char *path, const char *content, size_t len)
{
    char tmp[4300];
    FILE *f;
    int rc;

    snprintf(tmp, sizeof(tmp), "%s.walmirror-tmp", path);
    f = fopen(tmp, "w");
    if (f == NULL)
        return -errno;
    if (fwrite(content, 1, len, f) != len || fflush(f) != 0 || fsync(fileno(f)) != 0) {
        rc = -errno;
        fclose(f);
        unlink(tmp);
        return rc != 0 ? rc : -EIO;
    }
    if (fclose(f) != 0 || rename(tmp, path) != 0) {
        rc = -errno;
        unlink(tmp);
        return rc;
    }
    return fsync_path(dir, O_RDONLY | O_DIRECTORY);
}

/* Reads a whole (small) file into a malloc'd, NUL-terminated buffer; missing = empty. */
static int
read_all(const char *path, char **out, size_t *len)
{
    FILE *f = fopen(path, "r");
    size_t cap = 4096, n = 0, k;
    char *buf;

    *out = NULL;
    *len = 0;
    buf = malloc(cap + 1);
    if (buf == NULL) {
        if (f != NULL)
            fclose(f);
        return -ENOMEM;
    }
    if (f == NULL) {
        if (errno != ENOENT) {
            free(buf);
            return -errno;
        }
        buf[0] = '\0';
        *out = buf;
        return 0;
    }
    while ((k = fread(buf + n, 1, cap - n, f)) > 0) {
        n += k;
        if (n == cap) {
            char *b = realloc(buf, cap * 2 + 1);
            if (b == NULL) {
                free(buf);
                fclose(f);
                return -ENOMEM;
            }
            buf = b;
            cap *= 2;
        }
    }
    if (ferror(f)) {
        free(buf);
        fclose(f);
        return -EIO;
    }
    fclose(f);
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

/* Whether line[len] sets one of the keys of our block ("key = value", any spacing). */
static bool
sets_block_key(const char *line, size_t len, bool sync_names)
{
    static const char *const keys[] = {"primary_conninfo", "primary_slot_name", "hot_standby",
                                       "wal_log_hints", "recovery_target_timeline", "port",
                                       "synchronous_standby_names"};
    size_t nkeys = sizeof(keys) / sizeof(keys[0]) - (sync_names ? 0 : 1);

    while (len > 0 && (*line == ' ' || *line == '\t')) {
        line++;
        len--;
    }
    for (size_t i = 0; i < nkeys; i++) {
        size_t k = strlen(keys[i]);
        if (len > k && strncmp(line, keys[i], k) == 0 &&
            (line[k] == ' ' || line[k] == '\t' || line[k] == '='))
            return true;
    }
    return false;
}

/* The port of the site's pg_conninfo: the one its PostgreSQL must listen on. */
static void
local_port(const struct wm_config *cfg, char *port, size_t cap)
{
    PQconninfoOption *opts = PQconninfoParse(cfg->pg_conninfo, NULL);

    snprintf(port, cap, "5432");
    for (PQconninfoOption *o = opts; o != NULL && o->keyword != NULL; o++)
        if (strcmp(o->keyword, "port") == 0 && o->val != NULL && o->val[0] != '\0')
            snprintf(port, cap, "%s", o->val);
    PQconninfoFree(opts);
}

int
pgctl_write_standby_config(const struct wm_config *cfg, const char *sync_names, char *err,
                           size_t errlen)
{
    char path[4200], port[16];
    char *old, *out, *p;
    size_t len, cap, n = 0;
    bool in_block = false;
    int rc;

    snprintf(path, sizeof(path), "%s/standby.signal", cfg->pgdata);
    rc = write_durably(cfg->pgdata, path, "", 0);
    if (rc < 0) {
        snprintf(err, errlen, "cannot create %s: %s", path, strerror(-rc));
        return rc;
    }
    snprintf(path, sizeof(path), "%s/postgresql.auto.conf", cfg->pgdata);
    rc = read_all(path, &old, &len);
    if (rc < 0) {
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(-rc));
        return rc;
    }
    cap = len + 1024 + 2 * sizeof(cfg->wal_listen.host) +
          (sync_names != NULL ? 2 * strlen(sync_names) + 64 : 0);
    out = malloc(cap);
    if (out == NULL) {
        free(old);
        return -ENOMEM;
    }
    /* Keep every line but our previous block, and any other setting of the keys it sets
     * (ALTER SYSTEM rewrites the file without comments, so the block may have lost its
     * markers). */
    for (p = old; *p != '\0';) {
        size_t l = strcspn(p, "\n");
        bool nl = p[l] == '\n';

        if (l == strlen(BLOCK_BEGIN) && strncmp(p, BLOCK_BEGIN, l) == 0)
            in_block = true;
        else if (in_block && l == strlen(BLOCK_END) && strncmp(p, BLOCK_END, l) == 0)
            in_block = false;
        else if (!in_block && !sets_block_key(p, l, sync_names != NULL)) {
            memcpy(out + n, p, l + nl);
            n += l + nl;
        }
        p += l + nl;
    }
    if (n > 0 && out[n - 1] != '\n')
        out[n++] = '\n';
    if (sync_names != NULL) {
        /* Outside the block: it stays when the block is written again. */
        n += (size_t)snprintf(out + n, cap - n, "synchronous_standby_names = '");
        for (const char *q = sync_names; *q != '\0' && n + 4 < cap; q++) {
            if (*q == '\'')
                out[n++] = '\'';
            out[n++] = *q;
        }
        n += (size_t)snprintf(out + n, cap - n, "'\n");
    }
    local_port(cfg, port, sizeof(port));
    n += (size_t)snprintf(out + n, cap - n,
                          "%s\n"
                          "primary_conninfo = 'host=''%s'' port=%u user=postgres "
                          "application_name=%s sslmode=disable gssencmode=disable'\n"
                          "primary_slot_name = ''\n"
                          "hot_standby = on\n"
                          "wal_log_hints = on\n"
                          "recovery_target_timeline = 'latest'\n"
                          "port = %s\n"
                          "%s\n",
                          BLOCK_BEGIN, cfg->wal_listen.host, cfg->wal_listen.port,
                          cfg->node_name, port, BLOCK_END);
    free(old);
    if (n >= cap) {
        free(out);
        return -EOVERFLOW;
    }
    rc = write_durably(cfg->pgdata, path, out, n);
    free(out);
    if (rc < 0)
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(-rc));
    return rc;
}

static int
copy_file(const char *from_dir, const char *to_dir, const char *name, char *err, size_t errlen)
{
    char from[4200], to[4200];
    char *data;
    size_t len;
    int rc;

    snprintf(from, sizeof(from), "%s/%s", from_dir, name);
    snprintf(to, sizeof(to), "%s/%s", to_dir, name);
    rc = read_all(from, &data, &len);
    if (rc == 0)
        rc = write_durably(to_dir, to, data, len);
    free(data);
    if (rc < 0)
        snprintf(err, errlen, "cannot copy %s to %s: %s", from, to, strerror(-rc));
    return rc;
}

int
pgctl_save_configs(const char *pgdata, const char *save_dir, char *err, size_t errlen)
{
    if (mkdir(save_dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %s: %s", save_dir, strerror(errno));
        return -errno;
    }
    for (size_t i = 0; i < sizeof(config_files) / sizeof(config_files[0]); i++) {
        int rc = copy_file(pgdata, save_dir, config_files[i], err, errlen);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int
pgctl_restore_configs(const char *pgdata, const char *save_dir, char *err, size_t errlen)
{
    for (size_t i = 0; i < sizeof(config_files) / sizeof(config_files[0]); i++) {
        int rc = copy_file(save_dir, pgdata, config_files[i], err, errlen);
        if (rc < 0)
            return rc;
    }
    return 0;
}
