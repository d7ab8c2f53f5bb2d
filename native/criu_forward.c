/*
 * keeptime-criu-forward: the native half of keeptime's CRIU action script.
 *
 * CRIU runs its action script at every step of a dump and a restore, and
 * the time a step takes is charged to the dump, to the restore and, between
 * CRIU creating the tree's time namespace and resuming it, to the restored
 * tree's CLOCK_MONOTONIC. The action script, keeptime-criu-hook (a shell
 * script of the keeptime distribution), ends the steps keeptime does not use
 * and execs this program for the others; deploy/install.sh names this
 * program itself as CRIU's action script, which saves the shell's start.
 * It is a small static program that only forwards: for the steps keeptime
 * uses it opens, with its own privileges and in CRIU's pid and mount
 * namespaces,
 *   - a pidfd of CRTOOLS_INIT_PID (so the pid means CRIU's process, whatever
 *     pid namespace CRIU runs in),
 *   - the image directory CRTOOLS_IMAGE_DIR (a /proc/<criu>/fd/N path),
 *   - its configuration file (KEEPTIME_CRIU_HOOK_CONFIG, or
 *     /etc/keeptime/criu-hook.toml),
 * and passes them to keeptimed over its socket (SCM_RIGHTS), which does the
 * work and answers with an exit status and the lines for CRIU's log. Every
 * other step costs only this program's start. At post-resume, which comes
 * after the tree runs again and whose failure CRIU ignores, keeptimed answers
 * as soon as it has the request and verifies after. The wire is described in
 * keeptime/criu/hookwire.py.
 *
 * When keeptimed cannot be reached it runs `keeptime criu-hook`, the Python
 * hook, which knows what to do without keeptimed (record from CRIU's image,
 * fail or warn as configured).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#define MAGIC "KTCRIU1\n"
#define MAGIC_LEN 8
#define MAX_BODY 65536
#define MAX_CONFIG 65536
#define REPLY_TIMEOUT_S 120
#define DEFAULT_SOCKET "/run/keeptime/keeptime.sock"
#define DEFAULT_CONFIG "/etc/keeptime/criu-hook.toml"

/* The steps keeptimed works at; keep in step with hookwire.ACTIONS. */
static const char *const forwarded[] = { "post-dump", "pre-restore", "post-restore", "post-resume", NULL };

struct request {
    char body[MAX_BODY];
    size_t len;
    int fds[3];
    char fd_names[64];
    int n_fds;
};

static void add_field(struct request *r, const char *key, const char *value)
{
    size_t need = strlen(key) + 1 + strlen(value) + 1;
    if (r->len + need > sizeof(r->body))
        return;   /* only the path fields can be long; keeptimed reports what is missing */
    r->len += (size_t)sprintf(r->body + r->len, "%s=%s", key, value) + 1;
}

static void add_errno(struct request *r, const char *name, int err)
{
    char key[32], value[16];
    snprintf(key, sizeof(key), "%s_errno", name);
    snprintf(value, sizeof(value), "%d", err);
    add_field(r, key, value);
}

static void add_fd(struct request *r, const char *name, int fd)
{
    size_t used = strlen(r->fd_names);
    snprintf(r->fd_names + used, sizeof(r->fd_names) - used, "%s%s", r->n_fds ? "," : "", name);
    r->fds[r->n_fds++] = fd;
}

static int parse_pid(const char *text)
{
    char *end;
    errno = 0;
    long pid = strtol(text, &end, 10);
    if (errno || end == text || *end || pid <= 0 || pid > INT_MAX)
        return -1;
    return (int)pid;
}

/* The value of a `socket = "PATH"` line in the configuration, if any. */
static int socket_from_config(int fd, char *out, size_t size)
{
    static char text[MAX_CONFIG + 1];
    ssize_t n = pread(fd, text, MAX_CONFIG, 0);
    if (n <= 0)
        return -1;
    text[n] = '\0';
    for (char *line = text, *next; line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        char *p = line + strspn(line, " \t");
        if (strncmp(p, "socket", 6) != 0)
            continue;
        p += 6;
        p += strspn(p, " \t");
        if (*p++ != '=')
            continue;
        p += strspn(p, " \t");
        if (*p++ != '"')
            continue;
        size_t len = strcspn(p, "\"");
        if (p[len] != '"' || len == 0 || len >= size)
            continue;
        memcpy(out, p, len);
        out[len] = '\0';
        return 0;
    }
    return -1;
}

static int connect_to(const char *path)
{
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof(addr));
    addr.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(addr.sun_path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(addr.sun_path, path);
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return -1;
    if (connect(s, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
        int err = errno;
        close(s);
        errno = err;
        return -1;
    }
    return s;
}

/* keeptimed is unreachable: the Python hook goes on without it. */
static int run_python_hook(const char *socket_path, int connect_err)
{
    char path[PATH_MAX];
    const char *cli = getenv("KEEPTIME_CLI");
    char *const argv[] = { "keeptime", "criu-hook", NULL };
    if (cli && *cli) {
        execv(cli, argv);
    } else {
        /* The keeptime installed beside this program, then the one on PATH. */
        ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - sizeof("keeptime"));
        if (n > 0) {
            path[n] = '\0';
            char *slash = strrchr(path, '/');
            if (slash) {
                strcpy(slash + 1, "keeptime");
                execv(path, argv);
            }
        }
        execvp("keeptime", argv);
    }
    fprintf(stderr, "keeptime criu-hook: %s: keeptimed is unreachable at %s (%s), and the keeptime CLI, "
            "which goes on without it, cannot be run (%s)\n", getenv("CRTOOLS_SCRIPT_ACTION"), socket_path,
            strerror(connect_err), strerror(errno));
    return 1;
}

static int read_all(int s, void *buf, size_t len)
{
    char *p = buf;
    while (len > 0) {
        ssize_t n = recv(s, p, len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int send_request(int s, struct request *r)
{
    char header[MAGIC_LEN + 4];
    uint32_t len = (uint32_t)r->len;
    memcpy(header, MAGIC, MAGIC_LEN);
    memcpy(header + MAGIC_LEN, &len, 4);   /* little-endian: the only byte order keeptime runs on */
    struct iovec iov[2] = { { header, sizeof(header) }, { r->body, r->len } };
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * 3)];
    } control;
    struct msghdr msg;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = iov;
    msg.msg_iovlen = 2;
    if (r->n_fds) {
        msg.msg_control = control.buf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)r->n_fds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)r->n_fds);
        memcpy(CMSG_DATA(c), r->fds, sizeof(int) * (size_t)r->n_fds);
    }
    ssize_t n;
    while ((n = sendmsg(s, &msg, MSG_NOSIGNAL)) < 0 && errno == EINTR)
        ;
    return n == (ssize_t)(sizeof(header) + r->len) ? 0 : -1;
}

int main(void)
{
    const char *action = getenv("CRTOOLS_SCRIPT_ACTION");
    if (!action || !*action) {
        fputs("keeptime criu-hook: CRTOOLS_SCRIPT_ACTION is not set: this is a CRIU action script, run by "
              "CRIU (action-script in /etc/criu/default.conf), not by hand\n", stderr);
        return 2;
    }
    int wanted = 0;
    for (int i = 0; forwarded[i]; i++)
        wanted |= strcmp(action, forwarded[i]) == 0;
    if (!wanted)
        return 0;

    static struct request r;
    add_field(&r, "action", action);
    const char *text = getenv("CRTOOLS_INIT_PID");
    if (text) {
        add_field(&r, "init_pid", text);
        int pid = parse_pid(text);
        int fd = pid > 0 ? (int)syscall(SYS_pidfd_open, pid, 0) : -1;
        if (fd >= 0)
            add_fd(&r, "pidfd", fd);
        else
            add_errno(&r, "pidfd", pid > 0 ? errno : EINVAL);
    }
    text = getenv("CRTOOLS_IMAGE_DIR");
    if (text) {
        add_field(&r, "image_dir", text);
        int fd = open(text, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd >= 0)
            add_fd(&r, "image_dir", fd);
        else
            add_errno(&r, "image_dir", errno);   /* CRIU 4.x closes it before post-resume */
    }
    const char *config = getenv("KEEPTIME_CRIU_HOOK_CONFIG");
    int config_named = config && *config;
    if (!config_named)
        config = DEFAULT_CONFIG;
    add_field(&r, "config", config);
    if (config_named)
        add_field(&r, "config_named", "1");
    int config_fd = open(config, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (config_fd >= 0)
        add_fd(&r, "config", config_fd);
    else
        add_errno(&r, "config", errno);
    add_field(&r, "fds", r.fd_names);
    if (strcmp(action, "post-resume") == 0)
        add_field(&r, "answer", "early");

    static char socket_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    const char *env_socket = getenv("KEEPTIME_SOCKET");
    if (env_socket && *env_socket)
        snprintf(socket_path, sizeof(socket_path), "%s", env_socket);
    else if (config_fd < 0 || socket_from_config(config_fd, socket_path, sizeof(socket_path)) != 0)
        strcpy(socket_path, DEFAULT_SOCKET);

    int s = connect_to(socket_path);
    if (s < 0)
        return run_python_hook(socket_path, errno);
    struct timeval timeout = { REPLY_TIMEOUT_S, 0 };
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    if (send_request(s, &r) != 0) {
        fprintf(stderr, "keeptime criu-hook: %s: cannot send the step to keeptimed at %s: %s\n", action,
                socket_path, strerror(errno));
        return 1;
    }
    char header[MAGIC_LEN + 8];
    errno = 0;
    if (read_all(s, header, sizeof(header)) != 0 || memcmp(header, MAGIC, MAGIC_LEN) != 0) {
        fprintf(stderr, "keeptime criu-hook: %s: no answer from keeptimed at %s%s%s\n", action, socket_path,
                errno ? ": " : "", errno ? strerror(errno) : "");
        return 1;
    }
    uint32_t code, len;
    memcpy(&code, header + MAGIC_LEN, 4);
    memcpy(&len, header + MAGIC_LEN + 4, 4);
    static char message[65536];
    if (len > sizeof(message) || read_all(s, message, len) != 0) {
        fprintf(stderr, "keeptime criu-hook: %s: keeptimed's answer was cut short\n", action);
        return 1;
    }
    fwrite(message, 1, len, stderr);
    return code > 255 ? 1 : (int)code;
}
