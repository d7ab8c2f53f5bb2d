"""Python face of the native code (native/): keeptime-helper and the module
that talks to it.

Starts and restarts the helper, turns Python values into the C request, and
C failures into NativeError, an OSError carrying the errno and the step that
failed. No policy lives here.
"""
import errno as errno_mod
import os
import resource
import socket
import threading
from dataclasses import dataclass, field
from typing import Optional

from . import fdlimit
from ._native import ffi, lib
from .policies import Clocks

MECHANISMS = {
    lib.KT_MECH_CLONE3_OFFSETS: "clone3_timens_offset",
    lib.KT_MECH_UNSHARE_PROC: "unshare_proc_offsets",
    lib.KT_MECH_SETNS: "setns",
}

STEPS = {
    lib.KT_STEP_CHANNEL: "send request to keeptime-helper",
    lib.KT_STEP_UNSHARE: "unshare(CLONE_NEWTIME)",
    lib.KT_STEP_OPEN_OFFSETS: "open /proc/self/timens_offsets",
    lib.KT_STEP_WRITE_OFFSETS: "write /proc/self/timens_offsets",
    lib.KT_STEP_CLONE3: "clone3",
    lib.KT_STEP_SETNS: "setns(CLONE_NEWTIME)",
    lib.KT_STEP_VERIFY: "verify clocks",
    lib.KT_STEP_SETGROUPS: "setgroups",
    lib.KT_STEP_SETGID: "setresgid",
    lib.KT_STEP_SETUID: "setresuid",
    lib.KT_STEP_NO_NEW_PRIVS: "prctl(PR_SET_NO_NEW_PRIVS)",
    lib.KT_STEP_CHDIR: "chdir",
    lib.KT_STEP_STDIN: "open stdin",
    lib.KT_STEP_STDOUT: "open stdout",
    lib.KT_STEP_STDERR: "open stderr",
    lib.KT_STEP_EXEC: "execve",
    lib.KT_STEP_HELPER: "keeptime-helper",
    lib.KT_STEP_REPORT: "read report",
    lib.KT_STEP_READ_OFFSETS: "read timens_offsets",
    lib.KT_STEP_REQUEST: "decode request",
    lib.KT_STEP_SETNS_PID: "setns(CLONE_NEWPID)",
    lib.KT_STEP_SETNS_NS: "setns",              # named with its namespace type: setns(CLONE_NEWNS)
    lib.KT_STEP_CHROOT: "chroot",
    lib.KT_STEP_CGROUP_V1: "write cgroup.procs",
    lib.KT_STEP_LOGINUID: "write /proc/self/loginuid",
    lib.KT_STEP_RLIMIT: "setrlimit",            # named with its resource: setrlimit(RLIMIT_NOFILE)
    lib.KT_STEP_CLONE_CGROUP: "clone3(CLONE_INTO_CGROUP)",
    lib.KT_STEP_EXEC_WAIT: "wait for exec",
    lib.KT_STEP_OPEN_TIMENS: "open /proc/self/ns/time_for_children",
}
EXEC_WAIT = STEPS[lib.KT_STEP_EXEC_WAIT]
# setns() types by /proc/PID/ns/ name (include/uapi/linux/sched.h; os has them only from Python 3.12)
NAMESPACE_FLAGS = {"cgroup": 0x02000000, "ipc": 0x08000000, "uts": 0x04000000, "net": 0x40000000, "mnt": 0x00020000}
_FLAG_NAMES = {flag: "CLONE_NEW" + ("NS" if name == "mnt" else name.upper()) for name, flag in NAMESPACE_FLAGS.items()}
# Every rlimit, by number (Python's resource lacks RLIMIT_LOCKS: the generic number stands in).
RLIMIT_NAMES = {getattr(resource, name, number): name for number, name in enumerate((
    "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_DATA", "RLIMIT_STACK", "RLIMIT_CORE", "RLIMIT_RSS", "RLIMIT_NPROC",
    "RLIMIT_NOFILE", "RLIMIT_MEMLOCK", "RLIMIT_AS", "RLIMIT_LOCKS", "RLIMIT_SIGPENDING", "RLIMIT_MSGQUEUE",
    "RLIMIT_NICE", "RLIMIT_RTPRIO", "RLIMIT_RTTIME"))}
RLIMITS = {name: number for number, name in RLIMIT_NAMES.items()}
RLIM_INFINITY = 2**64 - 1   # as the kernel (and Inherited.rlimits) spell it; Python's resource says -1
HELPER_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "keeptime-helper")


class NativeError(OSError):
    """A failed native operation: ``errno`` and ``step`` (a name from STEPS,
    with its namespace type or resource where it has one); ``detail`` is
    the index of the cgroup.procs descriptor that failed, for that step.
    Nothing was started: a process that failed before its exec was reaped."""

    def __init__(self, err: int, step: str, detail: int = 0):
        super().__init__(err, f"{step}: {os.strerror(err)} ({errno_mod.errorcode.get(err, err)})")
        self.step = step
        self.detail = detail


def _step_name(step: int, detail: int) -> str:
    name = STEPS.get(step, f"step {step}")
    if step == lib.KT_STEP_SETNS_NS:
        return f"{name}({_FLAG_NAMES.get(detail, hex(detail))})"
    if step == lib.KT_STEP_RLIMIT:
        return f"{name}({RLIMIT_NAMES.get(detail, detail)})"
    return name


@dataclass
class ExecSpec:
    """A fully resolved program start: what the child does after its namespace step."""

    exec_paths: list[str]               # candidates tried in order
    argv: list[str]
    env: list[str]                      # "KEY=VALUE"
    cwd: Optional[str] = None
    uid: Optional[int] = None           # set together with gid and groups
    gid: Optional[int] = None
    groups: list[int] = field(default_factory=list)
    no_new_privs: bool = False
    umask: Optional[int] = None
    # Opened by the program itself, after it dropped privileges and entered
    # its namespaces, holding no descriptor of keeptimed's.
    stdin_path: str = "/dev/null"
    stdout_path: str = "/dev/null"
    stderr_path: str = "/dev/null"


@dataclass
class Inherited:
    """What a program takes from its caller rather than from keeptimed. The
    descriptors belong to whoever built this; they only need to stay open
    until the spawn returns."""

    cgroup_fd: Optional[int] = None         # a cgroup v2 directory the program is born in
    cgroup_procs_fds: list[int] = field(default_factory=list)   # cgroup v1 cgroup.procs it moves itself to
    loginuid: Optional[int] = None           # written to its /proc/self/loginuid
    rlimits: list[tuple[int, int, int]] = field(default_factory=list)  # (resource, soft, hard); RLIM_INFINITY
    namespaces: list[tuple[int, int]] = field(default_factory=list)    # (fd, CLONE_NEW*), entered in order
    root_fd: Optional[int] = None           # its root directory (chroot), after the namespaces

    def fds(self) -> list[int]:
        """Every descriptor held, to close."""
        held = [self.cgroup_fd, self.root_fd, *self.cgroup_procs_fds, *(fd for fd, _ in self.namespaces)]
        return [fd for fd in held if fd is not None]


@dataclass(frozen=True)
class Spawned:
    pid: int
    mechanism: str
    offsets: Clocks                     # as written (zero for setns)
    timens_inode: int                   # the namespace created (0 for setns)


# Whether clone3 accepts the seed's timens_offset fields: None until tried.
# Detected once per process, then cached; released kernels say E2BIG.
_offset_abi_supported: Optional[bool] = None

DEFAULT_EXEC_TIMEOUT = 10.0
_exec_timeout = DEFAULT_EXEC_TIMEOUT


def set_exec_timeout(seconds: float) -> None:
    """How long a started process has from its creation to its exec: one
    that has not exec'd by then (stopped by its owner, blocked opening its
    stdio) is killed, and the spawn fails at step EXEC_WAIT with ETIMEDOUT."""
    global _exec_timeout
    _exec_timeout = seconds


def exec_timeout() -> float:
    return _exec_timeout


class _Cancel:
    """A pipe that turns readable to end every wait for an exec at once
    (shutdown), killing the processes that had not exec'd yet."""

    def __init__(self):
        self.fd, self._w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)

    def set(self) -> None:
        try:
            os.write(self._w, b"x")
        except BlockingIOError:
            pass

    def clear(self) -> None:
        try:
            while os.read(self.fd, 4096):
                pass
        except BlockingIOError:
            pass


_cancel = _Cancel()


class Helper:
    """The keeptime-helper process: started on first use, restarted if it died.

    It is our child and exits when its control socket (fd 3) closes.
    """

    def __init__(self, path: str = HELPER_PATH):
        self.path = path
        self._lock = threading.Lock()
        self._socket: Optional[socket.socket] = None
        self.pid = 0

    def fd(self) -> int:
        """The control socket, starting the helper when there is none."""
        with self._lock:
            if self._socket is None:
                self._start()
            return self._socket.fileno()

    def _start(self) -> None:
        _cancel.clear()   # a helper started after a shutdown (tests run several daemons in one process)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            # The helper resets every signal disposition itself; the mask must
            # be empty from the start, not inherited from this thread.
            self.pid = os.posix_spawn(
                self.path, [self.path], {},
                file_actions=[(os.POSIX_SPAWN_DUP2, theirs.fileno(), 3)],
                setsigmask=(),
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        started_limit = fdlimit.for_started_programs()
        if started_limit is not None:   # before any request: its clones inherit it
            resource.prlimit(self.pid, resource.RLIMIT_NOFILE, started_limit)
        self._socket = ours

    def restart_if_dead(self) -> bool:
        """Reap a helper that exited; True when it had (the next call starts a new one)."""
        with self._lock:
            if self._socket is None:
                return False
            try:
                pid, _ = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                pid = self.pid
            if pid == 0:
                return False
            self._socket.close()
            self._socket = None
            return True

    def close(self) -> None:
        """Stop the helper: closing its socket ends it; then reap it."""
        with self._lock:
            if self._socket is None:
                return
            self._socket.close()
            self._socket = None
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass


_helper = Helper()


def helper_pid() -> int:
    """pid of the running keeptime-helper (0 before first use)."""
    return _helper.pid


def cancel_exec_waits() -> None:
    """End every wait for an exec at once, killing the processes that had
    not exec'd (shutdown: those spawns fail at EXEC_WAIT with ECANCELED)."""
    _cancel.set()


def shutdown() -> None:
    """Stop keeptime-helper (keeptimed does this on exit)."""
    _cancel.set()
    _helper.close()


def offset_abi_supported() -> Optional[bool]:
    """What the last spawn learned about the clone3 offset ABI (None: untried)."""
    return _offset_abi_supported


def _cstrings(values: list[str], keep: list) -> "ffi.CData":
    items = [ffi.new("char[]", os.fsencode(v)) for v in values]
    keep.extend(items)
    array = ffi.new("char *[]", items + [ffi.NULL])
    keep.append(array)
    return array


def _cstring_or_null(value: Optional[str], keep: list):
    if value is None:
        return ffi.NULL
    s = ffi.new("char[]", os.fsencode(value))
    keep.append(s)
    return s


def _fill_pidns(req, pidns_fd: Optional[int]) -> None:
    if pidns_fd is not None:
        req.enter_pidns = 1
        req.pidns_fd = pidns_fd


def _fill_inherited(req, inherited: Optional[Inherited]) -> None:
    req.cgroup_fd = req.root_fd = -1
    if inherited is None:
        return
    if (len(inherited.namespaces) > lib.KT_MAX_NAMESPACES or len(inherited.rlimits) > lib.KT_MAX_RLIMITS
            or len(inherited.cgroup_procs_fds) > lib.KT_MAX_CGROUP_PROCS):
        raise ValueError("more namespaces, rlimits or cgroups than keeptime-helper takes")
    if inherited.cgroup_fd is not None:
        req.cgroup_fd = inherited.cgroup_fd
    req.n_cgroup_procs = len(inherited.cgroup_procs_fds)
    for i, fd in enumerate(inherited.cgroup_procs_fds):
        req.cgroup_procs_fds[i] = fd
    if inherited.loginuid is not None:
        req.set_loginuid = 1
        req.loginuid = inherited.loginuid
    req.n_rlimits = len(inherited.rlimits)
    for i, (which, soft, hard) in enumerate(inherited.rlimits):
        req.rlimits[i].resource = which
        req.rlimits[i].soft = soft
        req.rlimits[i].hard = hard
    req.n_namespaces = len(inherited.namespaces)
    for i, (fd, flag) in enumerate(inherited.namespaces):
        req.ns_fds[i] = fd
        req.ns_types[i] = flag
    if inherited.root_fd is not None:
        req.root_fd = inherited.root_fd


def _fill_exec_wait(req) -> None:
    req.exec_timeout_ms = max(1, round(_exec_timeout * 1000))
    req.cancel_fd = _cancel.fd


def _fill_exec(req, spec: ExecSpec, keep: list) -> None:
    req.exec_paths = _cstrings(spec.exec_paths, keep)
    req.argv = _cstrings(spec.argv, keep)
    req.envp = _cstrings(spec.env, keep)
    req.cwd = _cstring_or_null(spec.cwd, keep)
    if spec.uid is not None:
        req.set_ids = 1
        req.uid = spec.uid
        req.gid = spec.gid if spec.gid is not None else spec.uid
        groups = ffi.new("uint32_t[]", spec.groups or [req.gid])
        keep.append(groups)
        req.groups = groups
        req.n_groups = len(spec.groups or [req.gid])
    req.no_new_privs = int(spec.no_new_privs)
    req.umask = -1 if spec.umask is None else spec.umask
    req.stdin_path = _cstring_or_null(spec.stdin_path, keep)
    req.stdout_path = _cstring_or_null(spec.stdout_path, keep)
    req.stderr_path = _cstring_or_null(spec.stderr_path, keep)


def _call_helper(call):
    """call(helper_fd). A helper found dead is replaced; the call is retried
    only when the request never reached it, so nothing can run twice."""
    try:
        return call(_helper.fd())
    except NativeError as exc:
        if exc.step not in (STEPS[lib.KT_STEP_CHANNEL], STEPS[lib.KT_STEP_HELPER]):
            raise
        if _helper.restart_if_dead() and exc.step == STEPS[lib.KT_STEP_CHANNEL]:
            return call(_helper.fd())
        raise


def _spawn(req) -> Spawned:
    return _call_helper(lambda fd: _run(fd, req))


def _run(helper_fd: int, req) -> Spawned:
    global _offset_abi_supported
    res = ffi.new("struct kt_spawn_result *")
    rc = lib.kt_spawn(helper_fd, req, res)
    if res.offset_abi_lacking:
        _offset_abi_supported = False
    elif rc == 0 and res.mechanism == lib.KT_MECH_CLONE3_OFFSETS:
        _offset_abi_supported = True
    if rc != 0:
        raise NativeError(res.error, _step_name(res.failed_step, res.failed_detail), res.failed_detail)
    return Spawned(
        pid=res.pid,
        mechanism=MECHANISMS[res.mechanism],
        offsets=Clocks(res.monotonic_offset_ns, res.boottime_offset_ns),
        timens_inode=res.timens_inode,
    )


def spawn_in_new_timens(spec: ExecSpec, targets: Clocks, own_offsets: Clocks,
                        pidns_fd: Optional[int] = None, inherited: Optional[Inherited] = None) -> Spawned:
    """Start spec in a new time namespace whose clocks read targets at the
    moment the offsets are written. own_offsets are the caller's namespace
    offsets, so its clock reads can be turned into host clock values.
    pidns_fd: the pid namespace to start it in (an open /proc/PID/ns/pid);
    None for this process's. inherited: what it takes from its caller
    instead of from this process. The pid returned is this process's pid for it."""
    keep: list = []
    req = ffi.new("struct kt_spawn_request *")
    req.mode = lib.KT_MODE_NEW_TIMENS
    req.join_pidfd = -1
    req.target_monotonic_ns = targets.monotonic_ns
    req.target_boottime_ns = targets.boottime_ns
    req.own_monotonic_offset_ns = own_offsets.monotonic_ns
    req.own_boottime_offset_ns = own_offsets.boottime_ns
    req.try_offset_abi = int(_offset_abi_supported is not False)
    _fill_exec(req, spec, keep)
    _fill_pidns(req, pidns_fd)
    _fill_inherited(req, inherited)
    _fill_exec_wait(req)
    return _spawn(req)


def spawn_in_timens_of(spec: ExecSpec, pidfd: int, pidns_fd: Optional[int] = None,
                       inherited: Optional[Inherited] = None) -> Spawned:
    """Start spec inside the time namespace of pidfd's process (and in
    pidns_fd's pid namespace, with what it inherits, as in spawn_in_new_timens)."""
    keep: list = []
    req = ffi.new("struct kt_spawn_request *")
    req.mode = lib.KT_MODE_JOIN_TIMENS
    req.join_pidfd = pidfd
    _fill_exec(req, spec, keep)
    _fill_pidns(req, pidns_fd)
    _fill_inherited(req, inherited)
    _fill_exec_wait(req)
    return _spawn(req)


def read_timens_offsets(pidfd: int) -> str:
    """/proc/self/timens_offsets as seen from inside pidfd's time namespace."""

    def read(helper_fd: int) -> str:
        buf = ffi.new("char[]", 256)
        step = ffi.new("int *")
        err = ffi.new("int *")
        n = lib.kt_read_timens_offsets(helper_fd, pidfd, buf, 256, step, err)
        if n < 0:
            raise NativeError(err[0], _step_name(step[0], 0))
        return ffi.unpack(buf, n).decode("ascii")

    return _call_helper(read)
