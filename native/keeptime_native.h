/*
 * The C surface that keeptimed calls through cffi. Declarations only: this
 * file is read verbatim by cffi's cdef, so it holds no include guards, no
 * includes and no macros other than integer constants.
 *
 * Everything here is mechanism. Which clock values to aim at, which
 * executable candidates to try and which ids to run as are decided in Python.
 * The work itself happens in keeptime-helper (keeptime_helper.c), a small
 * single-threaded process keeptimed starts once; helper_fd is its control
 * socket.
 */

/* kt_spawn modes */
#define KT_MODE_NEW_TIMENS 1   /* new time namespace whose clocks start at the targets */
#define KT_MODE_JOIN_TIMENS 2  /* join the time namespace of join_pidfd's process */

/* how the process was placed in its time namespace */
#define KT_MECH_NONE 0
#define KT_MECH_CLONE3_OFFSETS 1   /* clone3(CLONE_NEWTIME) with the seed's timens_offset array */
#define KT_MECH_UNSHARE_PROC 2     /* unshare(CLONE_NEWTIME) + /proc/self/timens_offsets */
#define KT_MECH_SETNS 3            /* setns(pidfd, CLONE_NEWTIME) */

/* the step that failed, reported with its errno */
#define KT_STEP_NONE 0
#define KT_STEP_CHANNEL 1   /* passing the request to keeptime-helper */
#define KT_STEP_UNSHARE 3
#define KT_STEP_OPEN_OFFSETS 4
#define KT_STEP_WRITE_OFFSETS 5
#define KT_STEP_CLONE3 6
#define KT_STEP_SETNS 7
#define KT_STEP_VERIFY 8
#define KT_STEP_SETGROUPS 9
#define KT_STEP_SETGID 10
#define KT_STEP_SETUID 11
#define KT_STEP_NO_NEW_PRIVS 12
#define KT_STEP_CHDIR 13
#define KT_STEP_STDIN 14
#define KT_STEP_STDOUT 15
#define KT_STEP_STDERR 16
#define KT_STEP_EXEC 17
#define KT_STEP_HELPER 18   /* keeptime-helper ended the request without a report */
#define KT_STEP_REPORT 19   /* reading the report failed */
#define KT_STEP_READ_OFFSETS 20
#define KT_STEP_REQUEST 21  /* keeptime-helper could not read the request */
#define KT_STEP_SETNS_PID 22
#define KT_STEP_SETNS_NS 23       /* failed_detail: the CLONE_NEW* type */
#define KT_STEP_CHROOT 24
#define KT_STEP_CGROUP_V1 25      /* failed_detail: the index in cgroup_procs_fds */
#define KT_STEP_LOGINUID 26
#define KT_STEP_RLIMIT 27         /* failed_detail: the resource */
#define KT_STEP_CLONE_CGROUP 28   /* clone3 with CLONE_INTO_CGROUP */
#define KT_STEP_EXEC_WAIT 29      /* the new process did not exec in time (or keeptimed stopped): killed */
#define KT_STEP_OPEN_TIMENS 30    /* open /proc/self/ns/time_for_children (the new process's own namespace) */

/* array sizes below (cdef needs them literal) */
#define KT_MAX_NAMESPACES 8
#define KT_MAX_CGROUP_PROCS 16
#define KT_MAX_RLIMITS 16

struct kt_rlimit {
    int resource;
    uint64_t soft;
    uint64_t hard;
};

struct kt_spawn_request {
    int mode;
    int join_pidfd;                 /* KT_MODE_JOIN_TIMENS only */
    int64_t target_monotonic_ns;    /* KT_MODE_NEW_TIMENS: clock values the */
    int64_t target_boottime_ns;     /*   new namespace shows at offset-write time */
    int64_t own_monotonic_offset_ns; /* offsets of the caller's own time namespace, */
    int64_t own_boottime_offset_ns;  /*   to turn its clock reads into host clock */
    int try_offset_abi;             /* try clone3 with the seed's timens_offset first */
    char **exec_paths;              /* NULL-terminated candidates, tried in order */
    char **argv;                    /* NULL-terminated */
    char **envp;                    /* NULL-terminated */
    const char *cwd;                /* NULL: inherit */
    int set_ids;                    /* 1: apply groups, gid and uid below */
    uint32_t uid;
    uint32_t gid;
    uint32_t *groups;
    int n_groups;
    int no_new_privs;
    int umask;                      /* -1: inherit */
    const char *stdin_path;         /* NULL: inherit */
    const char *stdout_path;
    const char *stderr_path;
    int enter_pidns;                /* 0: the process is born in the caller's pid namespace; */
    int pidns_fd;                   /*   1: in pidns_fd's (an open /proc/PID/ns/pid) */
    /* What the program takes from whoever asked for it instead of from
     * keeptimed, applied by the child in this order before it drops
     * privileges: cgroups, loginuid, rlimits, namespaces, root. */
    int cgroup_fd;                  /* -1, or a cgroup v2 directory the child is born in */
    int n_cgroup_procs;
    int cgroup_procs_fds[16];       /* cgroup v1 cgroup.procs files: the child writes "0" */
    int set_loginuid;               /* 1: write loginuid to /proc/self/loginuid */
    uint32_t loginuid;
    int n_rlimits;
    struct kt_rlimit rlimits[16];
    int n_namespaces;
    int ns_fds[8];                  /* setns(ns_fds[i], ns_types[i]), in order */
    int ns_types[8];
    int root_fd;                    /* -1, or a directory: fchdir + chroot(".") */
    int exec_timeout_ms;            /* > 0: how long the new process has from its creation to its */
                                    /*   exec; one that has not exec'd by then is killed */
    int cancel_fd;                  /* -1, or an fd that turns readable to stop that wait at once */
};

struct kt_spawn_result {
    int pid;                        /* the new process, a child of the caller */
    int mechanism;
    int failed_step;                /* KT_STEP_NONE on success */
    int error;                      /* errno of failed_step */
    int failed_detail;              /* which namespace, resource or cgroup (see the steps) */
    int offset_abi_lacking;         /* clone3 refused the seed's fields (E2BIG/EINVAL) */
    int64_t monotonic_offset_ns;    /* offsets actually written (reported by the new process) */
    int64_t boottime_offset_ns;
    uint64_t timens_inode;          /* KT_MODE_NEW_TIMENS: the namespace created */
};

/* Start a process as described by req, through the helper behind
 * helper_fd. Returns 0 and fills res->pid, or -1 with res->failed_step and
 * res->error. The process is the caller's child; on failure it has already
 * been reaped. Success means it exec'd; a process that had not exec'd within
 * req->exec_timeout_ms of its creation (or when cancel_fd turned readable)
 * was killed first: KT_STEP_EXEC_WAIT with ETIMEDOUT (ECANCELED). */
int kt_spawn(int helper_fd, const struct kt_spawn_request *req, struct kt_spawn_result *res);

/* Read /proc/self/timens_offsets from inside the time namespace of pidfd's
 * process (a short-lived child of the caller joins it). Returns the number of
 * bytes placed in buf, or -1 with *failed_step and *error set. */
int kt_read_timens_offsets(int helper_fd, int pidfd, char *buf, int len, int *failed_step, int *error);
