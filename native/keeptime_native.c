/*
 * keeptimed's native module (cffi, API mode): hands requests to
 * keeptime-helper and collects its reports. Safe to call from any thread of
 * the daemon at once: each call has its own request memfd and report socket,
 * and the control socket carries each request as one atomic message.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "keeptime_native.h"
#include "kt_wire.h"

_Static_assert(KT_MAX_NAMESPACES == KT_WIRE_MAX_NAMESPACES && KT_MAX_CGROUP_PROCS == KT_WIRE_MAX_CGROUP_PROCS &&
                   KT_MAX_RLIMITS == KT_WIRE_MAX_RLIMITS, "the cffi header and the wire agree");
#define KT_LENGTH(member) (sizeof(((struct kt_spawn_request *)0)->member) / sizeof(((struct kt_spawn_request *)0)->member[0]))
_Static_assert(KT_LENGTH(ns_fds) == KT_MAX_NAMESPACES && KT_LENGTH(ns_types) == KT_MAX_NAMESPACES &&
                   KT_LENGTH(cgroup_procs_fds) == KT_MAX_CGROUP_PROCS && KT_LENGTH(rlimits) == KT_MAX_RLIMITS,
               "the arrays of struct kt_spawn_request have their declared sizes");

static int count(char **list)
{
    int n = 0;
    while (list && list[n])
        n++;
    return n;
}

static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Append a NUL-terminated string to *out. */
static void put_string(char **out, const char *s)
{
    size_t n = strlen(s) + 1;
    memcpy(*out, s, n);
    *out += n;
}

static void put_strings(char **out, char **list)
{
    for (int i = 0; list && list[i]; i++)
        put_string(out, list[i]);
}

static uint64_t strings_bytes(char **list)
{
    uint64_t n = 0;
    for (int i = 0; list && list[i]; i++)
        n += strlen(list[i]) + 1;
    return n;
}

/* Serialize req (see kt_wire.h for the layout) into a new buffer; NULL
 * with errno on failure. */
static char *encode_request(const struct kt_spawn_request *req, int mode, size_t *size)
{
    struct kt_wire_request h;
    memset(&h, 0, sizeof(h));
    if (req->n_namespaces < 0 || req->n_namespaces > KT_WIRE_MAX_NAMESPACES || req->n_cgroup_procs < 0 ||
        req->n_cgroup_procs > KT_WIRE_MAX_CGROUP_PROCS || req->n_rlimits < 0 ||
        req->n_rlimits > KT_WIRE_MAX_RLIMITS) {
        errno = EINVAL;
        return NULL;
    }
    h.magic = KT_WIRE_MAGIC;
    h.mode = mode;
    h.target_monotonic_ns = req->target_monotonic_ns;
    h.target_boottime_ns = req->target_boottime_ns;
    h.own_monotonic_offset_ns = req->own_monotonic_offset_ns;
    h.own_boottime_offset_ns = req->own_boottime_offset_ns;
    h.try_offset_abi = req->try_offset_abi;
    h.set_ids = req->set_ids;
    h.uid = req->uid;
    h.gid = req->gid;
    h.n_groups = req->set_ids ? req->n_groups : 0;
    h.no_new_privs = req->no_new_privs;
    h.umask = req->umask;
    h.enter_pidns = req->enter_pidns ? 1 : 0;
    h.n_namespaces = req->n_namespaces;
    for (int i = 0; i < req->n_namespaces; i++)
        h.ns_types[i] = req->ns_types[i];
    h.has_root = req->root_fd >= 0;
    h.has_cgroup = req->cgroup_fd >= 0;
    h.n_cgroup_procs = req->n_cgroup_procs;
    h.set_loginuid = req->set_loginuid;
    h.loginuid = req->loginuid;
    h.n_rlimits = req->n_rlimits;
    for (int i = 0; i < req->n_rlimits; i++) {
        h.rlimits[i].resource = req->rlimits[i].resource;
        h.rlimits[i].soft = req->rlimits[i].soft;
        h.rlimits[i].hard = req->rlimits[i].hard;
    }
    h.n_paths = count(req->exec_paths);
    h.n_argv = count(req->argv);
    h.n_env = count(req->envp);
    const char *fixed[4] = { req->cwd, req->stdin_path, req->stdout_path, req->stderr_path };
    int32_t *has[4] = { &h.has_cwd, &h.has_stdin, &h.has_stdout, &h.has_stderr };
    for (int i = 0; i < 4; i++) {
        *has[i] = fixed[i] != NULL;
        if (fixed[i])
            h.strings_len += strlen(fixed[i]) + 1;
    }
    h.strings_len += strings_bytes(req->exec_paths) + strings_bytes(req->argv) + strings_bytes(req->envp);

    size_t groups_bytes = h.n_groups > 0 ? sizeof(uint32_t) * (size_t)h.n_groups : 0;
    size_t total = sizeof(h) + groups_bytes + (size_t)h.strings_len;
    char *buf = malloc(total), *out = buf;
    if (!buf)
        return NULL;
    memcpy(out, &h, sizeof(h));
    out += sizeof(h);
    if (groups_bytes) {
        memcpy(out, req->groups, groups_bytes);
        out += groups_bytes;
    }
    for (int i = 0; i < 4; i++) {
        if (fixed[i])
            put_string(&out, fixed[i]);
    }
    put_strings(&out, req->exec_paths);
    put_strings(&out, req->argv);
    put_strings(&out, req->envp);
    *size = total;
    return buf;
}

/* A memfd holding a request too large to travel inline; -1 with errno. */
static int request_memfd(const char *buf, size_t size)
{
    int fd = memfd_create("keeptime-request", MFD_CLOEXEC);
    if (fd >= 0 && write_all(fd, buf, size) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

/* The descriptors a request passes after the memfd and the report socket,
 * in the order kt_wire.h gives; returns how many. */
static int request_fds(const struct kt_spawn_request *req, int pidfd, int *fds)
{
    int n = 0;
    if (pidfd >= 0)
        fds[n++] = pidfd;
    if (req->enter_pidns)
        fds[n++] = req->pidns_fd;
    for (int i = 0; i < req->n_namespaces; i++)
        fds[n++] = req->ns_fds[i];
    if (req->root_fd >= 0)
        fds[n++] = req->root_fd;
    if (req->cgroup_fd >= 0)
        fds[n++] = req->cgroup_fd;
    for (int i = 0; i < req->n_cgroup_procs; i++)
        fds[n++] = req->cgroup_procs_fds[i];
    return n;
}

/* Send one request to the helper with its descriptors: inline when it is
 * small enough, else in a memfd (see kt_wire.h). Returns our end of its
 * report socket. */
static int send_request(int helper_fd, const char *request, size_t size, const int *extra, int n_extra)
{
    int memfd = -1;
    if (size > KT_WIRE_INLINE_MAX && (memfd = request_memfd(request, size)) < 0)
        return -1;
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) {
        int saved = errno;
        if (memfd >= 0)
            close(memfd);
        errno = saved;
        return -1;
    }
    int fds[KT_WIRE_MAX_FDS], nfds = 0;
    if (memfd >= 0)
        fds[nfds++] = memfd;
    fds[nfds++] = pair[1];
    for (int i = 0; i < n_extra; i++)
        fds[nfds++] = extra[i];
    char byte = 'R';
    struct iovec iov = { memfd >= 0 ? &byte : (char *)request, memfd >= 0 ? 1 : size };
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(KT_WIRE_MAX_FDS * sizeof(int))];
    } control;
    memset(&control, 0, sizeof(control));
    struct msghdr msg;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.buf;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    ssize_t n;
    while ((n = sendmsg(helper_fd, &msg, MSG_NOSIGNAL)) < 0 && errno == EINTR)
        ;
    int saved = errno;
    close(pair[1]);
    if (memfd >= 0)
        close(memfd);
    if (n < 0) {
        close(pair[0]);
        errno = saved;
        return -1;
    }
    return pair[0];
}

static void reap(pid_t pid)
{
    while (waitpid(pid, NULL, __WALL) < 0 && errno == EINTR)
        ;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait until every sender has closed the report socket (1: it hung up; the
 * reports queued stay readable), or until deadline_ms on CLOCK_MONOTONIC
 * passes (0, ETIMEDOUT) or cancel_fd turns readable (0, ECANCELED). Reports
 * arriving meanwhile wake nobody: poll() asks for POLLRDHUP only, and the
 * kernel wakes a poller only for the events it asked for (and POLLHUP,
 * POLLERR): nothing of keeptimed's runs because of the new process's
 * report, which it sends between its offsets and its exec. */
static int wait_hangup(int fd, int64_t deadline_ms, int cancel_fd, int *why)
{
    for (;;) {
        struct pollfd p[2] = { { fd, POLLRDHUP, 0 }, { cancel_fd, POLLIN, 0 } };
        int64_t left = deadline_ms - now_ms();
        if (left <= 0) {
            *why = ETIMEDOUT;
            return 0;
        }
        int n = poll(p, cancel_fd >= 0 ? 2 : 1, left > INT_MAX ? INT_MAX : (int)left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 || p[0].revents)
            return 1;   /* hung up, or let recv() report the error */
        if (n > 0) {
            *why = ECANCELED;
            return 0;
        }
    }
}

static int hung_up(int fd)
{
    struct pollfd p = { fd, POLLRDHUP, 0 };
    return poll(&p, 1, 0) > 0;
}

/* What the reports of one request said so far. */
struct reports {
    int spawned;                  /* the helper reported the pid */
    int written;                  /* the offsets written are known */
};

static void take_report(const struct kt_msg *m, struct kt_spawn_result *res, struct reports *seen,
                        struct kt_msg *offsets)
{
    if (m->kind == KT_MSG_SPAWNED) {
        seen->spawned = 1;
        res->pid = m->pid;
        res->mechanism = m->mechanism;
        res->offset_abi_lacking = m->offset_abi_lacking;
        if (m->mechanism == KT_MECH_CLONE3_OFFSETS) {   /* the helper wrote them, in clone3 */
            seen->written = 1;
            res->monotonic_offset_ns = m->monotonic_offset_ns;
            res->boottime_offset_ns = m->boottime_offset_ns;
        }
    } else if (m->kind == KT_MSG_WRITTEN) {   /* may come before KT_MSG_SPAWNED */
        seen->written = 1;
        res->monotonic_offset_ns = m->monotonic_offset_ns;
        res->boottime_offset_ns = m->boottime_offset_ns;
        res->timens_inode = m->timens_inode;
    } else if (m->kind == KT_MSG_FAILED && !res->failed_step) {
        res->failed_step = m->step;
        res->error = m->error;
        res->failed_detail = m->detail;
    } else if (m->kind == KT_MSG_OFFSETS && offsets) {
        *offsets = *m;
    }
}

/* Take every report queued, without waiting. Returns 1 at end-of-file (the
 * socket hung up meanwhile), else 0. */
static int take_queued(int fd, struct kt_spawn_result *res, struct reports *seen, struct kt_msg *offsets)
{
    struct kt_msg m;
    for (;;) {
        ssize_t n = recv(fd, &m, sizeof(m), MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0)
            return 1;
        if (n < 0)
            return 0;   /* EAGAIN: nothing more; other errors show in the blocking recv */
        if (n == (ssize_t)sizeof(m))
            take_report(&m, res, seen, offsets);
    }
}

/* Run one request and collect every report until the helper and the new
 * process are done with the report socket. On success *offsets (if given)
 * receives an offsets report. */
static int run_request(int helper_fd, const struct kt_spawn_request *req, int mode, int pidfd,
                       struct kt_spawn_result *res, struct kt_msg *offsets)
{
    memset(res, 0, sizeof(*res));
    size_t size = 0;
    char *request = encode_request(req, mode, &size);
    int extra[KT_WIRE_MAX_FDS];
    int n_extra = request_fds(req, pidfd, extra);
    int report_fd = request ? send_request(helper_fd, request, size, extra, n_extra) : -1;
    int saved = errno;
    free(request);
    if (report_fd < 0) {
        res->failed_step = KT_STEP_CHANNEL;
        res->error = saved;
        return -1;
    }

    /* Waiting for the helper's report is waiting for keeptimed's own helper.
     * Once the new process exists, waiting for its exec is waiting for a
     * process the caller may stop (it runs as the caller from setresuid on):
     * that wait is bounded, and a process still short of exec at the bound
     * is killed, so it never runs. One that execs in the instant between the
     * last look at the socket and the kill is killed too, and reported as
     * not started: it can only be one stopped or blocked for the whole bound.
     * The bound runs from the request, which the helper answers with the pid
     * within microseconds; if that answer came later than the bound, the
     * process gets a whole bound from the answer. Until the socket hangs up
     * the reports are left queued: see wait_hangup. */
    struct reports seen = { 0, 0 };
    int bounded = req->exec_timeout_ms > 0, hungup = 0, killed = 0, awaiting = 0, why = 0;
    int64_t deadline_ms = bounded ? now_ms() + req->exec_timeout_ms : -1;
    struct kt_msg m;
    for (;;) {
        if (bounded && !hungup && !killed && !awaiting) {
            if (wait_hangup(report_fd, deadline_ms, req->cancel_fd, &why) || hung_up(report_fd)) {
                hungup = 1;   /* every report is queued: recv() below never blocks */
            } else if (take_queued(report_fd, res, &seen, offsets)) {
                break;        /* it exec'd or ended just now */
            } else if (seen.spawned) {
                kill(res->pid, SIGKILL);   /* short of its exec at the bound */
                killed = 1;
            } else {
                awaiting = 1;   /* no pid yet: wait below for the helper's answer */
            }
        }
        ssize_t n = recv(report_fd, &m, sizeof(m), 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && !res->failed_step) {
            res->failed_step = KT_STEP_REPORT;
            res->error = errno;
        }
        if (n <= 0)
            break;
        if (n != (ssize_t)sizeof(m))
            continue;
        take_report(&m, res, &seen, offsets);
        if (awaiting && seen.spawned) {
            awaiting = 0;   /* the helper answered after the bound: a whole bound from now */
            deadline_ms = now_ms() + req->exec_timeout_ms;
        }
    }
    close(report_fd);
    if (!seen.spawned && !res->failed_step) {
        res->failed_step = KT_STEP_HELPER;
        res->error = EPIPE;
    }
    if (killed && !res->failed_step) {
        res->failed_step = KT_STEP_EXEC_WAIT;
        res->error = why;
    }
    if (!res->failed_step && mode == KT_MODE_NEW_TIMENS && !seen.written) {
        res->failed_step = KT_STEP_REPORT;   /* it ended before reporting its offsets: it never ran */
        res->error = EPIPE;
    }
    if (res->failed_step) {
        if (seen.spawned && res->pid > 0)
            reap(res->pid);   /* the failed process is our child: leave no zombie */
        res->pid = 0;
        return -1;
    }
    return 0;
}

int kt_spawn(int helper_fd, const struct kt_spawn_request *req, struct kt_spawn_result *res)
{
    int pidfd = req->mode == KT_MODE_JOIN_TIMENS ? req->join_pidfd : -1;
    return run_request(helper_fd, req, req->mode, pidfd, res, NULL);
}

int kt_read_timens_offsets(int helper_fd, int pidfd, char *buf, int len, int *failed_step, int *error)
{
    static char *const empty[] = { NULL };
    struct kt_spawn_request req;
    memset(&req, 0, sizeof(req));
    req.exec_paths = req.argv = req.envp = (char **)empty;
    req.umask = -1;
    req.cgroup_fd = req.root_fd = -1;
    req.cancel_fd = -1;   /* the reader runs as root, reads and exits: no bound needed */
    struct kt_spawn_result res;
    struct kt_msg offsets;
    memset(&offsets, 0, sizeof(offsets));
    int rc = run_request(helper_fd, &req, KT_MODE_READ_OFFSETS, pidfd, &res, &offsets);
    if (rc == 0)
        reap(res.pid);   /* the reader exited after reporting */
    if (rc == 0 && offsets.kind != KT_MSG_OFFSETS) {
        rc = -1;
        res.failed_step = KT_STEP_READ_OFFSETS;
        res.error = EIO;
    }
    *failed_step = res.failed_step;
    *error = res.error;
    if (rc != 0)
        return -1;
    int used = offsets.len < len ? offsets.len : len;
    memcpy(buf, offsets.text, (size_t)used);
    return used;
}
