/*
 * keeptime-helper: the small single-threaded process that creates keeptimed's
 * processes in time namespaces. keeptimed starts it once, with its control
 * socket on fd 3, and sends it one request per message (see kt_wire.h).
 *
 * Why a separate process: time namespaces may only be unshared, given
 * offsets and joined by a single-threaded task, and unsharing one of the
 * daemon's own threads would leak the namespace into every later fork of that
 * thread. A fork of the daemon itself would copy its whole address space
 * (tens of MB) just to exec right after, which costs milliseconds per
 * restore; copying this small static program costs microseconds.
 *
 * For each KT_MODE_NEW_TIMENS request the helper creates the process at
 * once, with clone3(CLONE_PARENT): keeptimed's own child, still in
 * keeptimed's time namespace. The process (become_restored_program):
 *   unshare(CLONE_NEWTIME), which makes a namespace for its children only,
 *   and opens that namespace and its /proc/self/timens_offsets; takes on
 *   what it inherits from its caller and closes every other descriptor;
 *   then reads the host clock, writes offsets = targets - host clock,
 *   enters the namespace with setns() (its first task: the offsets freeze
 *   then), checks its clocks, drops privileges, opens its stdio and execs.
 * The forward clock jump the program starts with is the time from that
 * clock read to its own first one: neither clone3 nor any set-up is in it.
 * The clone3 offset ABI proposed in "clone3: allow creation of time namespace
 * with offset" is tried first while not known to be missing (released kernels
 * answer E2BIG); with it the helper computes the offsets and the process is
 * born in the namespace, taking on the rest after. Joins and offset reads
 * use a CLONE_PARENT child that setns() into the target's namespace. No
 * CLONE_VM and no threads anywhere: before Linux 6.2 the kernel refuses them
 * while time_for_children differs from the caller's namespace.
 *
 * A request may carry a pid namespace: the program (or joined child) is then
 * born in it (setns(CLONE_NEWPID) before the clone, and back to our own pid
 * namespace right after, on every path), so that a caller in a container
 * sees it. It stays keeptimed's child either way.
 *
 * A request may also carry what the program takes from its caller rather
 * than from keeptimed (keeptimed decides what; see inherit_from_caller for
 * the order): a cgroup v2 directory it is born in (CLONE_INTO_CGROUP), cgroup
 * v1 cgroup.procs files it moves itself through, a loginuid, rlimits,
 * namespaces to setns() into and a root directory. Before it opens any path
 * of the request the child holds no descriptor but its report socket, so a
 * path such as /proc/self/fd/2 names nothing of keeptimed's.
 *
 * Reports: the helper sends the new pid; the process sends the offsets it
 * wrote, and (step, errno) if it fails; a successful exec closes the child's
 * copy of the report socket, so end-of-file means "done" (see kt_wire.h).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "keeptime_native.h"
#include "kt_wire.h"

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif
#ifndef CLONE_NEWPID
#define CLONE_NEWPID 0x20000000
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif

#define CONTROL_FD 3
#define NSEC_PER_SEC 1000000000LL

/* struct clone_args as of Linux 5.7 (88 bytes), followed by the two fields
 * of the never-merged proposal. */
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

/* The descriptors that came with a request (-1: none). */
struct request_fds {
    int pidfd, pidns, root, cgroup;
    int ns[KT_WIRE_MAX_NAMESPACES];
    int cgroup_procs[KT_WIRE_MAX_CGROUP_PROCS];
};

/* A decoded request; pointers point into the request buffer. */
struct request {
    struct kt_wire_request h;
    struct request_fds fds;
    uint32_t *groups;
    const char *cwd, *stdio[3];
    char **paths, **argv, **env;
};

/* ---- small helpers ---------------------------------------------------- */

static int send_msg(int fd, const struct kt_msg *m)
{
    ssize_t n;
    while ((n = send(fd, m, sizeof(*m), MSG_NOSIGNAL)) < 0 && errno == EINTR)
        ;
    return n == (ssize_t)sizeof(*m) ? 0 : -1;
}

static void send_failure_detail(int fd, int step, int err, int detail)
{
    struct kt_msg m;
    memset(&m, 0, sizeof(m));
    m.kind = KT_MSG_FAILED;
    m.step = step;
    m.error = err;
    m.detail = detail;
    send_msg(fd, &m);
}

static void send_failure(int fd, int step, int err)
{
    send_failure_detail(fd, step, err, 0);
}

static __attribute__((noreturn)) void fail_detail_and_exit(int fd, int step, int err, int detail)
{
    send_failure_detail(fd, step, err, detail);
    _exit(127);
}

static __attribute__((noreturn)) void fail_and_exit(int fd, int step, int err)
{
    fail_detail_and_exit(fd, step, err, 0);
}

static int64_t clock_ns(clockid_t clk)
{
    struct timespec ts;
    clock_gettime(clk, &ts);
    return (int64_t)ts.tv_sec * NSEC_PER_SEC + ts.tv_nsec;
}

/* Nanoseconds as a normalized timespec: tv_nsec in [0, 1e9), as the kernel
 * requires, also for negative offsets. */
static struct timespec ns_to_timespec(int64_t ns)
{
    struct timespec ts;
    int64_t sec = ns / NSEC_PER_SEC, rem = ns % NSEC_PER_SEC;
    if (rem < 0) {
        rem += NSEC_PER_SEC;
        sec -= 1;
    }
    ts.tv_sec = (time_t)sec;
    ts.tv_nsec = (long)rem;
    return ts;
}

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

static void put_offset_line(char *buf, int *pos, const char *clock, int64_t ns)
{
    struct timespec ts = ns_to_timespec(ns);
    while (*clock)
        buf[(*pos)++] = *clock++;
    buf[(*pos)++] = ' ';
    put_int(buf, pos, ts.tv_sec);
    buf[(*pos)++] = ' ';
    put_int(buf, pos, ts.tv_nsec);
    buf[(*pos)++] = '\n';
}

/* Close every fd, 0 to 2 included, except the n (at most 3) in keep. */
static void close_all_but(const int *keep, int n)
{
    int sorted[3];
    for (int i = 0; i < n; i++) {
        int j = i;
        for (; j > 0 && sorted[j - 1] > keep[i]; j--)
            sorted[j] = sorted[j - 1];
        sorted[j] = keep[i];
    }
    unsigned int from = 0;
    for (int i = 0; i < n; i++) {
        if ((unsigned int)sorted[i] > from)
            syscall(SYS_close_range, from, (unsigned int)sorted[i] - 1, 0);
        from = (unsigned int)sorted[i] + 1;
    }
    syscall(SYS_close_range, from, ~0U, 0);
}

static long raw_clone3(struct kt_clone_args *args, size_t size)
{
    return syscall(SYS_clone3, args, size);
}

/* A child of keeptimed (CLONE_PARENT: our parent becomes its parent; its exit
 * signal is our own, SIGCHLD), born in cgroup_fd's cgroup v2 directory
 * unless that is -1. */
static long clone_parent(int cgroup_fd)
{
    struct kt_clone_args args;
    memset(&args, 0, sizeof(args));
    args.flags = CLONE_PARENT;
    if (cgroup_fd >= 0) {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = (uint64_t)cgroup_fd;
    }
    return raw_clone3(&args, KT_CLONE_ARGS_SIZE_PLAIN);
}

static int clone_step(int cgroup_fd)
{
    return cgroup_fd >= 0 ? KT_STEP_CLONE_CGROUP : KT_STEP_CLONE3;
}

/* ---- request decoding --------------------------------------------------- */

static int take_strings(char **cursor, char *end, char **out, int n)
{
    for (int i = 0; i < n; i++) {
        char *nul = memchr(*cursor, '\0', (size_t)(end - *cursor));
        if (!nul)
            return -1;
        out[i] = *cursor;
        *cursor = nul + 1;
    }
    out[n] = NULL;
    return 0;
}

/* Read a request too large to come inline from its memfd into a new buffer
 * (*buffer, freed by the caller); its size, or -1. */
static ssize_t load_request(int memfd, char **buffer)
{
    struct stat st;
    if (fstat(memfd, &st) != 0 || st.st_size < 0 || (uint64_t)st.st_size > KT_MAX_REQUEST_BYTES)
        return -1;
    char *buf = malloc((size_t)st.st_size + 1);
    if (!buf)
        return -1;
    *buffer = buf;
    for (off_t got = 0; got < st.st_size;) {
        ssize_t n = pread(memfd, buf + got, (size_t)(st.st_size - got), got);
        if (n <= 0)
            return -1;
        got += n;
    }
    return (ssize_t)st.st_size;
}

/* Decode the request in buf into r; r points into buf (the lists are
 * allocated, and freed per request). */
static int parse_request(char *buf, size_t size, struct request *r)
{
    if (size < sizeof(r->h))
        return -1;
    memcpy(&r->h, buf, sizeof(r->h));
    struct kt_wire_request *h = &r->h;
    if (h->magic != KT_WIRE_MAGIC || h->n_groups < 0 || h->n_groups > 65536 || h->n_paths < 0 ||
        h->n_argv < 0 || h->n_env < 0 || h->n_paths > 4096 || h->n_argv + h->n_env > 1 << 20 ||
        h->n_namespaces < 0 || h->n_namespaces > KT_WIRE_MAX_NAMESPACES || h->n_cgroup_procs < 0 ||
        h->n_cgroup_procs > KT_WIRE_MAX_CGROUP_PROCS || h->n_rlimits < 0 || h->n_rlimits > KT_WIRE_MAX_RLIMITS)
        return -1;
    size_t groups_bytes = (size_t)h->n_groups * sizeof(uint32_t);
    if (sizeof(*h) + groups_bytes + h->strings_len != (uint64_t)size)
        return -1;
    r->groups = (uint32_t *)(buf + sizeof(*h));
    char *cursor = buf + sizeof(*h) + groups_bytes, *end = buf + size;
    if (h->strings_len && end[-1] != '\0')
        return -1;

    char *fixed[5];
    int n_fixed = !!h->has_cwd + !!h->has_stdin + !!h->has_stdout + !!h->has_stderr;
    if (take_strings(&cursor, end, fixed, n_fixed) != 0)
        return -1;
    int k = 0;
    r->cwd = h->has_cwd ? fixed[k++] : NULL;
    r->stdio[0] = h->has_stdin ? fixed[k++] : NULL;
    r->stdio[1] = h->has_stdout ? fixed[k++] : NULL;
    r->stdio[2] = h->has_stderr ? fixed[k++] : NULL;
    r->paths = malloc(sizeof(char *) * ((size_t)h->n_paths + 1));
    r->argv = malloc(sizeof(char *) * ((size_t)h->n_argv + 1));
    r->env = malloc(sizeof(char *) * ((size_t)h->n_env + 1));
    if (!r->paths || !r->argv || !r->env)
        return -1;
    if (take_strings(&cursor, end, r->paths, h->n_paths) != 0 ||
        take_strings(&cursor, end, r->argv, h->n_argv) != 0 ||
        take_strings(&cursor, end, r->env, h->n_env) != 0)
        return -1;
    return cursor == end ? 0 : -1;
}

/* ---- the new process ---------------------------------------------------- */

/* Offsets turning our host clock reading into the targets, computed as late
 * as possible: the forward jump the program sees starts here. */
static void offsets_now(const struct kt_wire_request *h, struct kt_msg *report)
{
    int64_t host_mono = clock_ns(CLOCK_MONOTONIC) - h->own_monotonic_offset_ns;
    int64_t host_boot = clock_ns(CLOCK_BOOTTIME) - h->own_boottime_offset_ns;
    report->monotonic_offset_ns = h->target_monotonic_ns - host_mono;
    report->boottime_offset_ns = h->target_boottime_ns - host_boot;
}

static int open_stdio(const char *path, int flags)
{
    /* O_NONBLOCK so that a FIFO never blocks the spawn; cleared right after. */
    int fd = open(path, flags | O_CLOEXEC | O_NONBLOCK | O_NOCTTY, 0666);
    if (fd < 0)
        return -1;
    fcntl(fd, F_SETFL, flags);   /* of what F_SETFL changes, flags holds all but O_NONBLOCK */
    if (fd <= 2) {   /* keep it clear of the slots it is about to be dup'd into */
        int lifted = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        close(fd);
        fd = lifted;
    }
    return fd;
}

static int write_decimal(const char *path, int64_t value)
{
    char text[24];
    int n = 0;
    put_int(text, &n, value);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t w = write(fd, text, (size_t)n);
    int err = errno;
    close(fd);
    if (w != n) {
        errno = w < 0 ? err : EIO;
        return -1;
    }
    return 0;
}

/* Take on what the request says the program takes from its caller. The
 * order matters: cgroup.procs fds and /proc/self/loginuid work from where
 * the helper stands, before the namespaces change the view; the namespaces
 * come before the root (entering a mount namespace resets root and cwd),
 * and all of it comes before privileges are dropped. */
static void inherit_from_caller(const struct request *r, int report_fd)
{
    const struct kt_wire_request *h = &r->h;
    for (int i = 0; i < h->n_cgroup_procs; i++) {
        if (write(r->fds.cgroup_procs[i], "0", 1) != 1)   /* "0": the writer itself */
            fail_detail_and_exit(report_fd, KT_STEP_CGROUP_V1, errno, i);
    }
    if (h->set_loginuid && write_decimal("/proc/self/loginuid", h->loginuid) != 0)
        fail_and_exit(report_fd, KT_STEP_LOGINUID, errno);
    for (int i = 0; i < h->n_rlimits; i++) {
        const struct kt_wire_rlimit *l = &h->rlimits[i];
        uint64_t limit[2] = { l->soft, l->hard };
        if (syscall(SYS_prlimit64, 0, l->resource, limit, NULL) != 0)
            fail_detail_and_exit(report_fd, KT_STEP_RLIMIT, errno, l->resource);
    }
    for (int i = 0; i < h->n_namespaces; i++) {
        if (setns(r->fds.ns[i], h->ns_types[i]) != 0)
            fail_detail_and_exit(report_fd, KT_STEP_SETNS_NS, errno, h->ns_types[i]);
    }
    if (h->has_root && (fchdir(r->fds.root) != 0 || chroot(".") != 0))
        fail_and_exit(report_fd, KT_STEP_CHROOT, errno);
}

/* Never start a restored program with a clock below its target. */
static void verify_clocks(const struct kt_wire_request *h, int report_fd)
{
    if (clock_ns(CLOCK_MONOTONIC) < h->target_monotonic_ns || clock_ns(CLOCK_BOOTTIME) < h->target_boottime_ns)
        fail_and_exit(report_fd, KT_STEP_VERIFY, ERANGE);
}

/* The last steps of every new process, once it is in its time namespace,
 * has taken on what it inherits and holds nothing but its report socket:
 * the caller's ids, its stdio, exec. Never returns. */
static __attribute__((noreturn)) void finish_and_exec(const struct request *r, int report_fd)
{
    const struct kt_wire_request *h = &r->h;
    if (h->set_ids) {
        if (h->n_groups >= 0 && syscall(SYS_setgroups, (size_t)h->n_groups, r->groups) != 0)
            fail_and_exit(report_fd, KT_STEP_SETGROUPS, errno);
        if (syscall(SYS_setresgid, h->gid, h->gid, h->gid) != 0)
            fail_and_exit(report_fd, KT_STEP_SETGID, errno);
        if (syscall(SYS_setresuid, h->uid, h->uid, h->uid) != 0)
            fail_and_exit(report_fd, KT_STEP_SETUID, errno);
    }
    if (h->no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        fail_and_exit(report_fd, KT_STEP_NO_NEW_PRIVS, errno);
    if (h->umask >= 0)
        umask((mode_t)h->umask);
    if (r->cwd && chdir(r->cwd) != 0)
        fail_and_exit(report_fd, KT_STEP_CHDIR, errno);

    static const int flags[3] = { O_RDONLY, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND,
                                  O_WRONLY | O_CREAT | O_TRUNC | O_APPEND };
    static const int steps[3] = { KT_STEP_STDIN, KT_STEP_STDOUT, KT_STEP_STDERR };
    int fds[3] = { -1, -1, -1 };
    for (int i = 0; i < 3; i++) {
        if (r->stdio[i] && (fds[i] = open_stdio(r->stdio[i], flags[i])) < 0)
            fail_and_exit(report_fd, steps[i], errno);
    }
    for (int i = 0; i < 3; i++) {
        if (fds[i] >= 0 && dup2(fds[i], i) < 0)
            fail_and_exit(report_fd, steps[i], errno);
    }
    syscall(SYS_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC);   /* the report socket too, at exec */

    /* Try candidates like execvp: remember EACCES, stop on errors that say
     * the file exists but cannot run. */
    int err = ENOENT, saw_eacces = 0;
    for (char **p = r->paths; *p; p++) {
        execve(*p, r->argv, r->env);
        err = errno;
        if (err == EACCES) {
            saw_eacces = 1;
            continue;
        }
        if (err != ENOENT && err != ENOTDIR && err != ESTALE && err != ENODEV && err != ETIMEDOUT)
            break;
    }
    if (saw_eacces && (err == ENOENT || err == ENOTDIR))
        err = EACCES;
    fail_and_exit(report_fd, KT_STEP_EXEC, err);
}

/* Become the requested program in the time namespace it was born in or
 * joined. Runs in the new child; never returns. */
static __attribute__((noreturn)) void become_program(const struct request *r, int report_fd)
{
    if (r->h.mode == KT_MODE_NEW_TIMENS)
        verify_clocks(&r->h, report_fd);
    inherit_from_caller(r, report_fd);
    close_all_but(&report_fd, 1);
    finish_and_exec(r, report_fd);
}

/* Become the requested program in a new time namespace of its own, all
 * set-up done before the offsets are computed (see the top of this file).
 * Runs in the new child, still in keeptimed's time namespace; never returns. */
static __attribute__((noreturn)) void become_restored_program(const struct request *r, int report_fd)
{
    const struct kt_wire_request *h = &r->h;
    if (unshare(CLONE_NEWTIME) != 0)
        fail_and_exit(report_fd, KT_STEP_UNSHARE, errno);
    /* Both opened now, while /proc is keeptimed's: the caller's mount
     * namespace, entered below, may have another one or none. */
    int offsets_fd = open("/proc/self/timens_offsets", O_WRONLY | O_CLOEXEC);
    if (offsets_fd < 0)
        fail_and_exit(report_fd, KT_STEP_OPEN_OFFSETS, errno);
    struct stat ns;
    int timens_fd = open("/proc/self/ns/time_for_children", O_RDONLY | O_CLOEXEC);
    if (timens_fd < 0 || fstat(timens_fd, &ns) != 0)
        fail_and_exit(report_fd, KT_STEP_OPEN_TIMENS, errno);
    inherit_from_caller(r, report_fd);
    const int keep[3] = { report_fd, offsets_fd, timens_fd };
    close_all_but(keep, 3);

    /* From the clock read in offsets_now on, every step counts in the jump. */
    struct kt_msg written;
    memset(&written, 0, sizeof(written));
    written.kind = KT_MSG_WRITTEN;
    written.timens_inode = (uint64_t)ns.st_ino;
    char line[128];
    int n = 0;
    offsets_now(h, &written);
    put_offset_line(line, &n, "monotonic", written.monotonic_offset_ns);
    put_offset_line(line, &n, "boottime", written.boottime_offset_ns);
    ssize_t w = write(offsets_fd, line, (size_t)n);
    if (w != n)
        fail_and_exit(report_fd, KT_STEP_WRITE_OFFSETS, w < 0 ? errno : EIO);
    if (setns(timens_fd, CLONE_NEWTIME) != 0)
        fail_and_exit(report_fd, KT_STEP_SETNS, errno);
    /* keeptimed learns the offsets from here (its wait is for the hang-up:
     * this wakes nobody); a program it cannot account for never starts. */
    if (send_msg(report_fd, &written) != 0)
        _exit(127);
    close(offsets_fd);
    close(timens_fd);
    verify_clocks(h, report_fd);
    finish_and_exec(r, report_fd);
}

/* ---- request handlers ------------------------------------------------------ */

static long clone_with_offset_abi(const struct kt_wire_request *h, int cgroup_fd, struct kt_msg *report)
{
    offsets_now(h, report);
    struct kt_set_timens_offset offsets[2];
    memset(offsets, 0, sizeof(offsets));
    offsets[0].clockid = CLOCK_MONOTONIC;
    offsets[0].val = ns_to_timespec(report->monotonic_offset_ns);
    offsets[1].clockid = CLOCK_BOOTTIME;
    offsets[1].val = ns_to_timespec(report->boottime_offset_ns);
    struct kt_clone_args args;
    memset(&args, 0, sizeof(args));
    args.flags = CLONE_NEWTIME | CLONE_PARENT;
    if (cgroup_fd >= 0) {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = (uint64_t)cgroup_fd;
    }
    args.timens_offset = (uint64_t)(uintptr_t)offsets;
    args.timens_offset_size = 2;
    return raw_clone3(&args, sizeof(args));
}

/* Returns the pid of the new program, or -1 after reporting the failure. */
static long spawn_in_new_timens(const struct request *r, int report_fd, struct kt_msg *report)
{
    const struct kt_wire_request *h = &r->h;
    long pid;
    if (h->try_offset_abi) {
        pid = clone_with_offset_abi(h, r->fds.cgroup, report);
        if (pid == 0)
            become_program(r, report_fd);
        if (pid > 0) {
            report->mechanism = KT_MECH_CLONE3_OFFSETS;
            return pid;
        }
        if (errno != E2BIG && errno != EINVAL) {
            send_failure(report_fd, clone_step(r->fds.cgroup), errno);
            return -1;
        }
        report->offset_abi_lacking = 1;
        report->monotonic_offset_ns = report->boottime_offset_ns = 0;   /* none written */
    }

    /* The new process makes its own namespace (become_restored_program). */
    pid = clone_parent(r->fds.cgroup);
    if (pid == 0)
        become_restored_program(r, report_fd);
    if (pid < 0) {
        send_failure(report_fd, clone_step(r->fds.cgroup), errno);
        return -1;
    }
    report->mechanism = KT_MECH_UNSHARE_PROC;
    return pid;
}

/* A child that joins pidfd's time namespace, then runs the program or reads
 * the namespace's offsets. */
static long spawn_joined(const struct request *r, int report_fd, struct kt_msg *report)
{
    int pidfd = r->fds.pidfd;
    long pid = clone_parent(r->fds.cgroup);
    if (pid < 0) {
        send_failure(report_fd, clone_step(r->fds.cgroup), errno);
        return -1;
    }
    if (pid > 0) {
        report->mechanism = KT_MECH_SETNS;
        return pid;
    }
    if (setns(pidfd, CLONE_NEWTIME) != 0)
        fail_and_exit(report_fd, KT_STEP_SETNS, errno);
    if (r->h.mode == KT_MODE_JOIN_TIMENS)
        become_program(r, report_fd);
    close_all_but(&report_fd, 1);

    /* After setns both our namespace and time_for_children are the target's,
     * so this file now shows the target's offsets. */
    struct kt_msg m;
    memset(&m, 0, sizeof(m));
    m.kind = KT_MSG_OFFSETS;
    int fd = open("/proc/self/timens_offsets", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        fail_and_exit(report_fd, KT_STEP_READ_OFFSETS, errno);
    ssize_t n;
    while ((n = read(fd, m.text + m.len, sizeof(m.text) - (size_t)m.len)) > 0)
        m.len += (int32_t)n;
    if (n < 0)
        fail_and_exit(report_fd, KT_STEP_READ_OFFSETS, errno);
    send_msg(report_fd, &m);
    _exit(0);
}

/* Assign the descriptors of a request in the order kt_wire.h gives, those
 * after the report socket from fds[next] on. -1 when they do not match the
 * request. */
static int request_fds(const struct kt_wire_request *h, const int *fds, int nfds, int next, struct request_fds *out)
{
#define TAKE() (next < nfds ? fds[next++] : (next++, -1))
    out->pidfd = out->pidns = out->root = out->cgroup = -1;
    if (h->mode == KT_MODE_JOIN_TIMENS || h->mode == KT_MODE_READ_OFFSETS)
        out->pidfd = TAKE();
    if (h->enter_pidns)
        out->pidns = TAKE();
    for (int i = 0; i < h->n_namespaces; i++)
        out->ns[i] = TAKE();
    if (h->has_root)
        out->root = TAKE();
    if (h->has_cgroup)
        out->cgroup = TAKE();
    for (int i = 0; i < h->n_cgroup_procs; i++)
        out->cgroup_procs[i] = TAKE();
#undef TAKE
    return next == nfds ? 0 : -1;   /* every one taken, none missing */
}

/* Runs one request: the message (len bytes of message, the request itself
 * unless a single byte) and its descriptors. Returns -1 when the helper
 * could not return to its own pid namespace: it must then serve no other
 * request. */
static int handle(char *message, size_t len, const int *fds, int nfds, int own_pidns_fd)
{
    int in_memfd = len == 1, report_fd = fds[in_memfd];
    struct request r;
    char *buffer = NULL;
    ssize_t size = in_memfd ? load_request(fds[0], &buffer) : (ssize_t)len;
    memset(&r, 0, sizeof(r));
    struct kt_msg report;
    memset(&report, 0, sizeof(report));
    report.kind = KT_MSG_SPAWNED;

    long pid = -1;
    int lost = 0;
    if (size < 0 || parse_request(in_memfd ? buffer : message, (size_t)size, &r) != 0 ||
        request_fds(&r.h, fds, nfds, in_memfd + 1, &r.fds) != 0 ||
        (r.h.mode != KT_MODE_NEW_TIMENS && r.h.mode != KT_MODE_JOIN_TIMENS && r.h.mode != KT_MODE_READ_OFFSETS))
        send_failure(report_fd, KT_STEP_REQUEST, EINVAL);
    else if (r.fds.pidns >= 0 && setns(r.fds.pidns, CLONE_NEWPID) != 0)
        send_failure(report_fd, KT_STEP_SETNS_PID, errno);
    else {
        /* pid_ns_for_children is now the requested one: only the clone below sees it. */
        if (r.h.mode == KT_MODE_NEW_TIMENS)
            pid = spawn_in_new_timens(&r, report_fd, &report);
        else
            pid = spawn_joined(&r, report_fd, &report);
        if (r.fds.pidns >= 0 && setns(own_pidns_fd, CLONE_NEWPID) != 0)
            lost = -1;
    }
    if (pid > 0) {
        report.pid = (int32_t)pid;
        send_msg(report_fd, &report);
    }
    free(r.paths);
    free(r.argv);
    free(r.env);
    free(buffer);
    return lost;
}

/* Every signal to its default disposition, including the two the C library
 * reserves (32, 33): posix_spawn leaves those ignored, and an ignored signal
 * would stay ignored in every program we exec. Raw syscall: the C library's
 * sigaction() refuses its reserved signals. */
static void default_signal_dispositions(void)
{
    struct {
        void (*handler)(int);
        unsigned long flags;
        void (*restorer)(void);
        uint64_t mask;
    } dfl = { SIG_DFL, 0, NULL, 0 };
    for (int sig = 1; sig <= 64; sig++) {
        if (sig != SIGKILL && sig != SIGSTOP)
            syscall(SYS_rt_sigaction, sig, &dfl, NULL, sizeof(dfl.mask));
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

int main(void)
{
    default_signal_dispositions();
    /* Only the control socket is ours to keep; make sure of it. */
    syscall(SYS_close_range, CONTROL_FD + 1, ~0U, 0);
    fcntl(CONTROL_FD, F_SETFD, FD_CLOEXEC);
    int own_pidns_fd = open("/proc/self/ns/pid", O_RDONLY | O_CLOEXEC);
    if (own_pidns_fd < 0)
        return 1;

    static char message[KT_WIRE_INLINE_MAX];
    for (;;) {
        struct iovec iov = { message, sizeof(message) };
        union {
            struct cmsghdr align;
            char buf[CMSG_SPACE(KT_WIRE_MAX_FDS * sizeof(int))];
        } control;
        struct msghdr msg;
        memset(&msg, 0, sizeof(msg));
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.buf;
        msg.msg_controllen = sizeof(control.buf);
        ssize_t n = recvmsg(CONTROL_FD, &msg, MSG_CMSG_CLOEXEC);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return 0;   /* keeptimed closed the socket: we are done */

        int fds[KT_WIRE_MAX_FDS], nfds = 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
                nfds = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
                if (nfds > KT_WIRE_MAX_FDS)
                    nfds = KT_WIRE_MAX_FDS;
                memcpy(fds, CMSG_DATA(c), sizeof(int) * (size_t)nfds);
            }
        }
        int lost = 0;
        if (nfds >= (n == 1 ? 2 : 1) && !(msg.msg_flags & (MSG_CTRUNC | MSG_TRUNC)))
            lost = handle(message, (size_t)n, fds, nfds, own_pidns_fd);
        for (int i = 0; i < nfds; i++)
            close(fds[i]);
        if (lost)
            return 1;   /* keeptimed starts another helper for the next request */
    }
}
