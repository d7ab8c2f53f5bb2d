/*
 * The wire between keeptimed's native module and keeptime-helper: one
 * request per SOCK_SEQPACKET message on the control socket. A request of at
 * most KT_WIRE_INLINE_MAX bytes is the message itself; a larger one is in a
 * memfd and the message is a single byte. Descriptors come as SCM_RIGHTS in
 * this order: the request memfd (only then), the report socket, for joins a
 * pidfd, a pid namespace fd when enter_pidns is set, n_namespaces namespace
 * fds, a root directory fd when has_root, a cgroup v2 directory fd when
 * has_cgroup, then n_cgroup_procs cgroup v1 cgroup.procs fds. Reports are
 * fixed-size messages on the per-request report socket. Both ends are built
 * from this one header.
 *
 * Reports, in the order they may come: KT_MSG_SPAWNED from the helper (the
 * new pid), then from the new process KT_MSG_WRITTEN (the offsets it wrote
 * to its own new time namespace, which it then entered) or KT_MSG_FAILED.
 * A successful exec closes the process's copy of the report socket; once
 * the helper closed its own, keeptimed sees the socket hang up. keeptimed
 * waits for that hang-up, not for each report, so no report wakes it while
 * the process is between its offsets and its exec.
 */
#ifndef KT_WIRE_H
#define KT_WIRE_H

#include <stdint.h>

#define KT_WIRE_MAGIC 0x3552544bu          /* "KTR5" */
#define KT_MODE_READ_OFFSETS 3           /* internal: read a namespace's offsets */
#define KT_MAX_REQUEST_BYTES (64u << 20)
#define KT_WIRE_INLINE_MAX (64u << 10)     /* larger requests travel in a memfd */
#define KT_WIRE_MAX_NAMESPACES 8
#define KT_WIRE_MAX_CGROUP_PROCS 16
#define KT_WIRE_MAX_RLIMITS 16
/* memfd, report socket, pidfd, pid namespace, namespaces, root, cgroup, cgroup.procs */
#define KT_WIRE_MAX_FDS (4 + KT_WIRE_MAX_NAMESPACES + 2 + KT_WIRE_MAX_CGROUP_PROCS)

struct kt_wire_rlimit {
    int32_t resource;
    int32_t unused;
    uint64_t soft;
    uint64_t hard;
};

/* A request: this header, n_groups uint32_t, then strings_len bytes of
 * NUL-terminated strings in this order: cwd, stdin, stdout, stderr (each
 * only when its has_ flag is set), the exec paths, argv, env. */
struct kt_wire_request {
    uint32_t magic;
    int32_t mode;
    int64_t target_monotonic_ns;
    int64_t target_boottime_ns;
    int64_t own_monotonic_offset_ns;
    int64_t own_boottime_offset_ns;
    int32_t try_offset_abi;
    int32_t set_ids;
    uint32_t uid;
    uint32_t gid;
    int32_t n_groups;
    int32_t no_new_privs;
    int32_t umask;
    int32_t n_paths;
    int32_t n_argv;
    int32_t n_env;
    int32_t has_cwd;
    int32_t has_stdin;
    int32_t has_stdout;
    int32_t has_stderr;
    int32_t enter_pidns;          /* create the process in the passed pid namespace */
    /* What the program takes from its caller rather than from keeptimed: */
    int32_t n_namespaces;         /* namespace fds to setns() into, in order */
    int32_t ns_types[KT_WIRE_MAX_NAMESPACES];   /* the CLONE_NEW* type of each */
    int32_t has_root;             /* a directory fd to chroot() into after them */
    int32_t has_cgroup;           /* a cgroup v2 directory fd: born there (CLONE_INTO_CGROUP) */
    int32_t n_cgroup_procs;       /* cgroup v1 cgroup.procs fds: the child moves itself there */
    int32_t set_loginuid;
    uint32_t loginuid;
    int32_t n_rlimits;
    struct kt_wire_rlimit rlimits[KT_WIRE_MAX_RLIMITS];
    uint64_t strings_len;
};

enum { KT_MSG_SPAWNED = 1, KT_MSG_FAILED = 2, KT_MSG_OFFSETS = 3, KT_MSG_WRITTEN = 4 };

struct kt_msg {
    int32_t kind;
    int32_t step;
    int32_t error;
    int32_t detail;               /* KT_MSG_FAILED: which namespace, resource or cgroup */
    int32_t pid;
    int32_t mechanism;
    int32_t offset_abi_lacking;
    int64_t monotonic_offset_ns;  /* KT_MSG_WRITTEN (KT_MSG_SPAWNED with the clone3 offset ABI): */
    int64_t boottime_offset_ns;   /*   the offsets written */
    uint64_t timens_inode;        /* KT_MSG_WRITTEN: the new namespace */
    int32_t len;                  /* KT_MSG_OFFSETS: bytes used in text */
    char text[184];
};

#endif
