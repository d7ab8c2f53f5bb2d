/*
 * The wire between keeptimed's native module and keeptime-helper: one
 * request per SOCK_SEQPACKET message on the control socket (a single byte,
 * with the request memfd, the report socket, for joins a pidfd and, when
 * enter_pidns is set, a pid namespace fd last, passed as SCM_RIGHTS), and
 * fixed-size reports on the per-request report socket.
 * Both ends are built from this one header.
 */
#ifndef KT_WIRE_H
#define KT_WIRE_H

#include <stdint.h>

#define KT_WIRE_MAGIC 0x3252544bu          /* "KTR2" */
#define KT_MODE_READ_OFFSETS 3           /* internal: read a namespace's offsets */
#define KT_MAX_REQUEST_BYTES (64u << 20)

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
    uint64_t strings_len;
};

enum { KT_MSG_SPAWNED = 1, KT_MSG_FAILED = 2, KT_MSG_OFFSETS = 3 };

struct kt_msg {
    int32_t kind;
    int32_t step;
    int32_t error;
    int32_t pid;
    int32_t mechanism;
    int32_t offset_abi_lacking;
    int64_t monotonic_offset_ns;
    int64_t boottime_offset_ns;
    uint64_t timens_inode;        /* KT_MSG_SPAWNED: the new namespace */
    int32_t len;                  /* KT_MSG_OFFSETS: bytes used in text */
    char text[188];
};

#endif
