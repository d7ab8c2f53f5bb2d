/*
 * keeptime's only C: create a process in a time namespace with given clocks,
 * or inside an existing one, from a multi-threaded caller (keeptimed).
 *
 * Why C: the caller has many threads, and a time namespace may only be
 * unshared, have its offsets written and be joined by a single-threaded
 * task (setns refuses with EUSERS otherwise, and unsharing a daemon thread
 * would leak the namespace into every later fork of that thread). So every
 * namespace operation runs in a freshly cloned child, where only
 * async-signal-safe calls are allowed. Children are created with raw clone3
 * so no atfork handler of the caller runs, and uid/gid changes use raw
 * syscalls because glibc's wrappers would try to broadcast them to the
 * caller's threads, which do not exist in the child.
 *
 * Process shape for KT_MODE_NEW_TIMENS:
 *   caller --clone3--> helper: unshare(CLONE_NEWTIME), write offsets,
 *                      --clone3(CLONE_PARENT)--> child: exec
 * so the exec'd child is the caller's own child and the helper just exits.
 * For KT_MODE_JOIN_TIMENS the caller's direct child joins and execs.
 *
 * Results travel through a close-on-exec pipe as fixed-size messages: the
 * helper reports the new pid and the offsets it wrote, any process reports
 * the step that failed and its errno, and a successful exec closes the pipe.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "keeptime_native.h"

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif
#ifndef CLONE_PARENT
#define CLONE_PARENT 0x00008000
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

#define NSEC_PER_SEC 1000000000LL

/* struct clone_args as of Linux 5.7 (88 bytes), followed by the two fields
 * proposed in seeds/000 ("clone3: allow creation of time namespace with
 * offset"). That proposal was never merged: released kernels answer E2BIG. */
struct kt_clone_args {
    uint64_t flags;
    uint64_t pidfd;
    uint64_t child_tid;
    uint64_t parent_tid;
    uint64_t exit_signal;
    uint64_t stack;
    uint64_t stack_size;
    uint64_t tls;
    uint64_t set_tid;
    uint64_t set_tid_size;
    uint64_t cgroup;
    uint64_t timens_offset;       /* proposed: pointer to set_timens_offset[] */
    uint64_t timens_offset_size;  /* proposed: number of elements */
};
#define KT_CLONE_ARGS_SIZE_PLAIN 88

struct kt_set_timens_offset {     /* layout from the proposal */
    int clockid;
    struct timespec val;
};

enum { MSG_SPAWNED = 1, MSG_FAILED = 2, MSG_OFFSETS = 3 };

struct kt_msg {
    int32_t kind;
    int32_t step;
    int32_t error;
    int32_t pid;
    int32_t mechanism;
    int32_t offset_abi_lacking;
    int64_t monotonic_offset_ns;
    int64_t boottime_offset_ns;
    int32_t len;                  /* MSG_OFFSETS: bytes used in text */
    char text[196];
};

/* ---- async-signal-safe helpers ---------------------------------------- */

static long raw_clone3(struct kt_clone_args *args, size_t size)
{
    return syscall(SYS_clone3, args, size);
}

static void write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        p += n;
        len -= (size_t)n;
    }
}

static void send_failure(int fd, int step, int err)
{
    struct kt_msg m;
    memset(&m, 0, sizeof(m));
    m.kind = MSG_FAILED;
    m.step = step;
    m.error = err;
    write_all(fd, &m, sizeof(m));
}

static __attribute__((noreturn)) void fail_and_exit(int fd, int step, int err)
{
    send_failure(fd, step, err);
    _exit(127);
}

static int64_t clock_ns(clockid_t clk)
{
    struct timespec ts;
    clock_gettime(clk, &ts);
    return (int64_t)ts.tv_sec * NSEC_PER_SEC + ts.tv_nsec;
}

/* Split nanoseconds into a normalized timespec: tv_nsec always in [0, 1e9),
 * as the kernel requires, including for negative offsets. */
static struct timespec ns_to_timespec(int64_t ns)
{
    struct timespec ts;
    int64_t sec = ns / NSEC_PER_SEC;
    int64_t rem = ns % NSEC_PER_SEC;
    if (rem < 0) {
        rem += NSEC_PER_SEC;
        sec -= 1;
    }
    ts.tv_sec = (time_t)sec;
    ts.tv_nsec = (long)rem;
    return ts;
}

/* Append the decimal form of v to buf at *pos. */
static void put_int(char *buf, int *pos, int64_t v)
{
    char tmp[24];
    int n = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        buf[(*pos)++] = '-';
    while (n)
        buf[(*pos)++] = tmp[--n];
}

static void put_str(char *buf, int *pos, const char *s)
{
    while (*s)
        buf[(*pos)++] = *s++;
}

static void put_offset_line(char *buf, int *pos, const char *clock, int64_t ns)
{
    struct timespec ts = ns_to_timespec(ns);
    put_str(buf, pos, clock);
    buf[(*pos)++] = ' ';
    put_int(buf, pos, ts.tv_sec);
    buf[(*pos)++] = ' ';
    put_int(buf, pos, ts.tv_nsec);
    buf[(*pos)++] = '\n';
}

/* Close every fd >= 3 except keep_a and keep_b (-1 for none). */
static void close_all_except(int keep_a, int keep_b)
{
    int keep[2] = { keep_a < keep_b ? keep_a : keep_b,
                    keep_a < keep_b ? keep_b : keep_a };
    unsigned int lo = 3;
    for (int i = 0; i < 2; i++) {
        if (keep[i] < (int)lo)
            continue;
        if ((unsigned int)keep[i] > lo)
            syscall(SYS_close_range, lo, (unsigned int)keep[i] - 1, 0);
        lo = (unsigned int)keep[i] + 1;
    }
    if (syscall(SYS_close_range, lo, ~0U, 0) != 0) {
        for (int fd = (int)lo; fd < 65536; fd++)
            close(fd);
    }
}

/* Move fd above the standard streams, keeping it close-on-exec. */
static int lift_fd(int fd)
{
    if (fd < 0 || fd > 2)
        return fd;
    int lifted = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    close(fd);
    return lifted;
}

/* Reset every signal disposition to default, then unblock all signals: the
 * caller's handlers (Python's) must not run here, and ignored signals would
 * otherwise stay ignored across exec. */
static void reset_signals(void)
{
    struct sigaction dfl, old;
    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < _NSIG; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP)
            continue;
        if (sigaction(sig, NULL, &old) == 0 && old.sa_handler != SIG_DFL)
            sigaction(sig, &dfl, NULL);
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

static int open_stdio(const char *path, int flags)
{
    /* O_NONBLOCK so that a FIFO never blocks the spawn; cleared right after. */
    int fd = open(path, flags | O_CLOEXEC | O_NONBLOCK | O_NOCTTY, 0666);
    if (fd < 0)
        return -1;
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    return lift_fd(fd);
}

/* Become the requested program. Runs in the final child; never returns. */
static __attribute__((noreturn)) void become_program(const struct kt_spawn_request *req, int report_fd)
{
    if (req->mode == KT_MODE_NEW_TIMENS) {
        /* The child is already in the new namespace: check that no clock
         * reads below its target before anything else runs here. */
        if (clock_ns(CLOCK_MONOTONIC) < req->target_monotonic_ns ||
            clock_ns(CLOCK_BOOTTIME) < req->target_boottime_ns)
            fail_and_exit(report_fd, KT_STEP_VERIFY, ERANGE);
    }
    if (req->set_ids) {
        if (req->n_groups >= 0 &&
            syscall(SYS_setgroups, (size_t)req->n_groups, req->groups) != 0)
            fail_and_exit(report_fd, KT_STEP_SETGROUPS, errno);
        if (syscall(SYS_setresgid, req->gid, req->gid, req->gid) != 0)
            fail_and_exit(report_fd, KT_STEP_SETGID, errno);
        if (syscall(SYS_setresuid, req->uid, req->uid, req->uid) != 0)
            fail_and_exit(report_fd, KT_STEP_SETUID, errno);
    }
    if (req->no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        fail_and_exit(report_fd, KT_STEP_NO_NEW_PRIVS, errno);
    if (req->umask >= 0)
        umask((mode_t)req->umask);
    if (req->cwd && chdir(req->cwd) != 0)
        fail_and_exit(report_fd, KT_STEP_CHDIR, errno);

    const char *paths[3] = { req->stdin_path, req->stdout_path, req->stderr_path };
    const int flags[3] = { O_RDONLY, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND,
                           O_WRONLY | O_CREAT | O_TRUNC | O_APPEND };
    const int steps[3] = { KT_STEP_STDIN, KT_STEP_STDOUT, KT_STEP_STDERR };
    int fds[3] = { -1, -1, -1 };
    for (int i = 0; i < 3; i++) {
        if (paths[i] && (fds[i] = open_stdio(paths[i], flags[i])) < 0)
            fail_and_exit(report_fd, steps[i], errno);
    }
    for (int i = 0; i < 3; i++) {
        if (fds[i] >= 0 && dup2(fds[i], i) < 0)
            fail_and_exit(report_fd, steps[i], errno);
    }
    /* Nothing of the caller's may leak into the program. */
    syscall(SYS_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC);
    reset_signals();

    /* Try candidates like execvp: remember EACCES, stop on errors that say
     * the file exists but cannot run. */
    int err = ENOENT, saw_eacces = 0;
    for (char **p = req->exec_paths; *p; p++) {
        execve(*p, req->argv, req->envp);
        err = errno;
        if (err == EACCES) {
            saw_eacces = 1;
            continue;
        }
        if (err != ENOENT && err != ENOTDIR && err != ESTALE && err != ENODEV &&
            err != ETIMEDOUT)
            break;
    }
    if (saw_eacces && (err == ENOENT || err == ENOTDIR))
        err = EACCES;
    /* Signals are unblocked now; re-block so the report is not cut short. */
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    fail_and_exit(report_fd, KT_STEP_EXEC, err);
}

/* Try the seed's clone3 ABI: one call that creates the child in a new time
 * namespace carrying the offsets. Returns the child pid, or -1 with errno. */
static long clone_with_offset_abi(const struct kt_spawn_request *req, struct kt_msg *report)
{
    int64_t host_mono = clock_ns(CLOCK_MONOTONIC) - req->own_monotonic_offset_ns;
    int64_t host_boot = clock_ns(CLOCK_BOOTTIME) - req->own_boottime_offset_ns;
    report->monotonic_offset_ns = req->target_monotonic_ns - host_mono;
    report->boottime_offset_ns = req->target_boottime_ns - host_boot;

    struct kt_set_timens_offset offsets[2];
    memset(offsets, 0, sizeof(offsets));
    offsets[0].clockid = CLOCK_MONOTONIC;
    offsets[0].val = ns_to_timespec(report->monotonic_offset_ns);
    offsets[1].clockid = CLOCK_BOOTTIME;
    offsets[1].val = ns_to_timespec(report->boottime_offset_ns);

    struct kt_clone_args args;
    memset(&args, 0, sizeof(args));
    args.flags = CLONE_NEWTIME | CLONE_PARENT;
    args.timens_offset = (uint64_t)(uintptr_t)offsets;
    args.timens_offset_size = 2;
    return raw_clone3(&args, sizeof(args));
}

/* The helper of KT_MODE_NEW_TIMENS. Never returns. */
static __attribute__((noreturn)) void run_helper(const struct kt_spawn_request *req, int report_fd)
{
    struct kt_msg report;
    memset(&report, 0, sizeof(report));
    report.kind = MSG_SPAWNED;
    long pid = -1;

    if (req->try_offset_abi) {
        pid = clone_with_offset_abi(req, &report);
        if (pid == 0)
            become_program(req, report_fd);
        if (pid > 0)
            report.mechanism = KT_MECH_CLONE3_OFFSETS;
        else if (errno == E2BIG || errno == EINVAL)
            report.offset_abi_lacking = 1;
        else
            fail_and_exit(report_fd, KT_STEP_CLONE3, errno);
    }

    if (pid < 0) {
        if (unshare(CLONE_NEWTIME) != 0)
            fail_and_exit(report_fd, KT_STEP_UNSHARE, errno);
        int fd = open("/proc/self/timens_offsets", O_WRONLY | O_CLOEXEC);
        if (fd < 0)
            fail_and_exit(report_fd, KT_STEP_OPEN_OFFSETS, errno);

        /* Targets become offsets at the last moment: the forward jump the
         * program sees is only the time from here to its own clock read. */
        char line[128];
        int n = 0;
        int64_t host_mono = clock_ns(CLOCK_MONOTONIC) - req->own_monotonic_offset_ns;
        int64_t host_boot = clock_ns(CLOCK_BOOTTIME) - req->own_boottime_offset_ns;
        report.monotonic_offset_ns = req->target_monotonic_ns - host_mono;
        report.boottime_offset_ns = req->target_boottime_ns - host_boot;
        put_offset_line(line, &n, "monotonic", report.monotonic_offset_ns);
        put_offset_line(line, &n, "boottime", report.boottime_offset_ns);
        ssize_t w = write(fd, line, (size_t)n);
        if (w != n)
            fail_and_exit(report_fd, KT_STEP_WRITE_OFFSETS, w < 0 ? errno : EIO);
        close(fd);

        struct kt_clone_args args;
        memset(&args, 0, sizeof(args));
        args.flags = CLONE_PARENT;   /* exit signal comes from the helper: SIGCHLD */
        pid = raw_clone3(&args, KT_CLONE_ARGS_SIZE_PLAIN);
        if (pid < 0)
            fail_and_exit(report_fd, KT_STEP_CLONE3, errno);
        if (pid == 0)
            become_program(req, report_fd);
        report.mechanism = KT_MECH_UNSHARE_PROC;
    }

    report.pid = (int32_t)pid;
    write_all(report_fd, &report, sizeof(report));
    _exit(0);
}

/* Clone a single-threaded child of the caller with every signal blocked in
 * it. Returns the pid in the parent, 0 in the child, -1 on error. */
static long clone_blocked(sigset_t *saved)
{
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, saved);
    struct kt_clone_args args;
    memset(&args, 0, sizeof(args));
    args.exit_signal = SIGCHLD;
    long pid = raw_clone3(&args, KT_CLONE_ARGS_SIZE_PLAIN);
    if (pid != 0) {
        int saved_errno = errno;
        pthread_sigmask(SIG_SETMASK, saved, NULL);
        errno = saved_errno;
    }
    return pid;
}

static void reap(pid_t pid)
{
    while (waitpid(pid, NULL, __WALL) < 0 && errno == EINTR)
        ;
}

int kt_spawn(const struct kt_spawn_request *req, struct kt_spawn_result *res)
{
    memset(res, 0, sizeof(*res));
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0) {
        res->failed_step = KT_STEP_PIPE;
        res->error = errno;
        return -1;
    }

    sigset_t saved;
    long first = clone_blocked(&saved);
    if (first == 0) {
        close(pipefd[0]);
        int report_fd = lift_fd(pipefd[1]);
        int keep = req->mode == KT_MODE_JOIN_TIMENS ? req->join_pidfd : -1;
        close_all_except(report_fd, keep);
        if (req->mode == KT_MODE_JOIN_TIMENS) {
            if (setns(req->join_pidfd, CLONE_NEWTIME) != 0)
                fail_and_exit(report_fd, KT_STEP_SETNS, errno);
            close(req->join_pidfd);
            become_program(req, report_fd);
        }
        run_helper(req, report_fd);
    }
    close(pipefd[1]);
    if (first < 0) {
        res->failed_step = KT_STEP_FORK;
        res->error = errno;
        close(pipefd[0]);
        return -1;
    }

    /* Read reports until every writer is gone: the helper exits, and the
     * program's exec closes its copy. */
    int spawned = 0;
    struct kt_msg m;
    size_t have = 0;
    for (;;) {
        ssize_t n = read(pipefd[0], (char *)&m + have, sizeof(m) - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            if (!res->failed_step) {
                res->failed_step = KT_STEP_REPORT;
                res->error = errno;
            }
            break;
        }
        if (n == 0)
            break;
        have += (size_t)n;
        if (have < sizeof(m))
            continue;
        have = 0;
        if (m.kind == MSG_SPAWNED) {
            spawned = 1;
            res->pid = m.pid;
            res->mechanism = m.mechanism;
            res->offset_abi_lacking = m.offset_abi_lacking;
            res->monotonic_offset_ns = m.monotonic_offset_ns;
            res->boottime_offset_ns = m.boottime_offset_ns;
        } else if (m.kind == MSG_FAILED && !res->failed_step) {
            res->failed_step = m.step;
            res->error = m.error;
        }
    }
    close(pipefd[0]);

    if (req->mode == KT_MODE_JOIN_TIMENS) {
        spawned = 1;
        res->pid = (int)first;
        res->mechanism = KT_MECH_SETNS;
    } else {
        int status = 0;
        while (waitpid((pid_t)first, &status, __WALL) < 0 && errno == EINTR)
            ;
        if (!spawned && !res->failed_step) {
            res->failed_step = KT_STEP_HELPER;
            res->error = ECHILD;
        }
    }
    if (res->failed_step) {
        if (spawned && res->pid > 0)
            reap(res->pid);
        res->pid = 0;
        return -1;
    }
    return 0;
}

int kt_read_timens_offsets(int pidfd, char *buf, int len, int *failed_step, int *error)
{
    *failed_step = KT_STEP_NONE;
    *error = 0;
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0) {
        *failed_step = KT_STEP_PIPE;
        *error = errno;
        return -1;
    }
    sigset_t saved;
    long pid = clone_blocked(&saved);
    if (pid == 0) {
        close(pipefd[0]);
        int report_fd = lift_fd(pipefd[1]);
        close_all_except(report_fd, pidfd);
        if (setns(pidfd, CLONE_NEWTIME) != 0)
            fail_and_exit(report_fd, KT_STEP_SETNS, errno);
        /* After setns both our namespace and time_for_children are the
         * target's, so this file now shows the target's offsets. */
        int fd = open("/proc/self/timens_offsets", O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            fail_and_exit(report_fd, KT_STEP_READ_OFFSETS, errno);
        struct kt_msg m;
        memset(&m, 0, sizeof(m));
        m.kind = MSG_OFFSETS;
        ssize_t n;
        while ((n = read(fd, m.text + m.len, sizeof(m.text) - (size_t)m.len)) > 0)
            m.len += (int32_t)n;
        if (n < 0)
            fail_and_exit(report_fd, KT_STEP_READ_OFFSETS, errno);
        write_all(report_fd, &m, sizeof(m));
        _exit(0);
    }
    close(pipefd[1]);
    if (pid < 0) {
        *failed_step = KT_STEP_FORK;
        *error = errno;
        close(pipefd[0]);
        return -1;
    }
    struct kt_msg m;
    size_t have = 0;
    ssize_t n;
    while (have < sizeof(m)) {
        n = read(pipefd[0], (char *)&m + have, sizeof(m) - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        have += (size_t)n;
    }
    close(pipefd[0]);
    reap((pid_t)pid);
    if (have < sizeof(m)) {
        *failed_step = KT_STEP_HELPER;
        *error = ECHILD;
        return -1;
    }
    if (m.kind != MSG_OFFSETS) {
        *failed_step = m.step;
        *error = m.error;
        return -1;
    }
    int used = m.len < len ? m.len : len;
    memcpy(buf, m.text, (size_t)used);
    return used;
}
