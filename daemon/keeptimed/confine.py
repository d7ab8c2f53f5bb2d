"""What a program keeptimed starts takes from the process that asked for it.

keeptimed runs as root, and whatever the program does not take from its
caller it takes from keeptimed: keeptimed's mount namespace (files the
caller's sandbox hides), its rlimits, its cgroup (stopped with keeptimed's
unit or pod), its loginuid (the audit trail). For a caller other than root
keeptime grants nothing but the new time namespace, so the program takes
from the calling process (besides its uid, gid, groups and no_new_privs, see
access.py, and its pid namespace):

  * its mount, network, IPC, UTS and cgroup namespaces, and its root
    directory: every path of the request resolves as the caller sees it;
  * its cgroup in every hierarchy keeptimed has mounted (v2: born there with
    CLONE_INTO_CGROUP; v1: it moves itself before exec);
  * its rlimits, never above keeptimed's own hard limits where keeptimed
    lacks CAP_SYS_RESOURCE to raise them (it gets less, never more);
  * its loginuid; the kernel gives it a new audit session id (a session id
    cannot be set, only a loginuid, which starts a new session).

What keeptime cannot give the program -- the caller's seccomp filter, a user
namespace or LSM label other than keeptimed's, and where the host prevents
it the loginuid or the cgroup -- is refused with PERMISSION_DENIED naming
it, unless the operator lists it in allow_lost_confinement; the program then
runs without it (and the call's log line says what was lost).

Root's programs (and TLS clients') keep keeptimed's namespaces, rlimits and
loginuid, and go into root_programs_cgroup: the caller's cgroup (default;
keeptimed's where it cannot reach it, and for TLS clients, which have no
process), keeptimed's own, or a named cgroup.

The calling process is the one that connected to the socket, pinned by the
pidfd the relay took then: its /proc directory is opened, and used only if
that pidfd still names a live process afterwards, so a process that reused
its pid cannot stand in for it. All of it is read at call time.
"""
import contextlib
import errno
import logging
import os
import resource
import select
import threading
from dataclasses import dataclass
from typing import Iterator, Optional

from . import caps, cgroups, pidns
from .errors import FailedPrecondition, PermissionDenied
from .native import NAMESPACE_FLAGS, RLIM_INFINITY, RLIMIT_NAMES, RLIMITS, Inherited

log = logging.getLogger("keeptimed")

# What allow_lost_confinement may list.
LOSABLE = ("seccomp", "user-namespace", "lsm", "loginuid", "cgroup")
CALLER, KEEPTIMED = "caller", "keeptimed"       # root_programs_cgroup's words
LOGINUID_UNSET = 2**32 - 1
# Entered in this order: the mount namespace last, then the root.
NAMESPACES = ("net", "ipc", "uts", "cgroup", "mnt")
MAX_CGROUP_V1 = 16
# /proc/PID/limits rows (fs/proc/base.c)
LIMIT_ROWS = {
    "Max cpu time": RLIMITS["RLIMIT_CPU"], "Max file size": RLIMITS["RLIMIT_FSIZE"],
    "Max data size": RLIMITS["RLIMIT_DATA"], "Max stack size": RLIMITS["RLIMIT_STACK"],
    "Max core file size": RLIMITS["RLIMIT_CORE"], "Max resident set": RLIMITS["RLIMIT_RSS"],
    "Max processes": RLIMITS["RLIMIT_NPROC"], "Max open files": RLIMITS["RLIMIT_NOFILE"],
    "Max locked memory": RLIMITS["RLIMIT_MEMLOCK"], "Max address space": RLIMITS["RLIMIT_AS"],
    "Max file locks": RLIMITS["RLIMIT_LOCKS"], "Max pending signals": RLIMITS["RLIMIT_SIGPENDING"],
    "Max msgqueue size": RLIMITS["RLIMIT_MSGQUEUE"], "Max nice priority": RLIMITS["RLIMIT_NICE"],
    "Max realtime priority": RLIMITS["RLIMIT_RTPRIO"], "Max realtime timeout": RLIMITS["RLIMIT_RTTIME"],
}


@dataclass(frozen=True)
class Settings:
    """The operator's choices (allow_lost_confinement, root_programs_cgroup)."""

    allow_lost: frozenset = frozenset()
    root_cgroup: str = CALLER


def check_root_cgroup(value: str) -> Optional[str]:
    """The problem with a root_programs_cgroup value, if any."""
    if value in (CALLER, KEEPTIMED):
        return None
    if not value.startswith("/") or ".." in value.split("/") or "\n" in value:
        return f"must be {CALLER!r}, {KEEPTIMED!r} or an absolute cgroup path such as /keeptime.slice, got {value!r}"
    return None


def check_allow_lost(values: list) -> Optional[str]:
    """The problem with an allow_lost_confinement value, if any."""
    unknown = [v for v in values if v not in LOSABLE]
    if unknown:
        return f"unknown {', '.join(map(repr, unknown))}; known: {', '.join(LOSABLE)}"
    return None


def parse_limits(text: str) -> dict[int, tuple[int, int]]:
    """A /proc/PID/limits text as {resource: (soft, hard)}, RLIM_INFINITY for unlimited."""
    limits = {}
    for line in text.splitlines()[1:]:
        name = line[:26].rstrip()
        values = line[26:].split()
        if name in LIMIT_ROWS and len(values) >= 2:
            soft, hard = (RLIM_INFINITY if v == "unlimited" else int(v) for v in values[:2])
            limits[LIMIT_ROWS[name]] = (soft, hard)
    return limits


def status_field(status: str, name: str) -> Optional[str]:
    """The value of one "Name:\\tvalue" line of a /proc/PID/status text."""
    for line in status.splitlines():
        key, sep, value = line.partition(":")
        if sep and key == name:
            return value.strip()
    return None


def _read(path: str) -> Optional[str]:
    """One of keeptimed's own /proc files as text; None when it does not
    exist or the kernel has nothing there (an LSM attribute without an
    LSM). _of_caller() reads the calling process's."""
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return None
        raise


def _of_caller(name: str, proc: int, optional: bool = False) -> Optional[str]:
    """A file of the calling process's /proc directory. A process that
    exited meanwhile, or one keeptimed may not read, never passes for one
    with nothing to give: FailedPrecondition or PermissionDenied, unless
    optional (an LSM attribute without an LSM), then None."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=proc)
        try:
            text = os.read(fd, 65536).decode("utf-8", "replace")
        finally:
            os.close(fd)
    except PermissionError:
        raise PermissionDenied(f"keeptimed may not read the calling process's /proc/PID/{name} (needs "
                               "CAP_SYS_PTRACE), so it cannot start a program as that process would") from None
    except OSError as exc:
        if optional and exc.errno == errno.EINVAL:
            return None
        raise _exited(name, exc) from None
    if not text and not optional:
        raise _exited(name, OSError(errno.ESRCH, "empty"))
    return text


def _exited(name: str, exc: OSError) -> FailedPrecondition:
    return FailedPrecondition(f"the calling process exited while keeptimed read its /proc/PID/{name} "
                              f"({exc.strerror}), so keeptimed cannot start a program as it would")


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _lsm_label(text: Optional[str]) -> Optional[str]:
    return text.rstrip("\x00\n") if text is not None else None


def _limit(value: int) -> int:
    return RLIM_INFINITY if value == resource.RLIM_INFINITY else value


@contextlib.contextmanager
def calling_process(pid: Optional[int], pidfd: Optional[int], required: bool) -> Iterator[Optional[int]]:
    """An open /proc/PID directory of the calling process (pid, pinned by
    pidfd, which this closes), checked to be it; None when there is none
    and it is not required, else FailedPrecondition."""
    dirfd = None
    try:
        if pid and pidfd is not None:
            try:
                dirfd = os.open(f"{pidns.PROC}/{pid}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError:
                dirfd = None
            if dirfd is not None and not pidns.alive(pidfd):   # a process that reused the pid
                os.close(dirfd)
                dirfd = None
        if dirfd is None and required:
            raise FailedPrecondition(
                f"the calling process (pid {pid or 0} to keeptimed) has exited or keeptimed cannot see it, so "
                "keeptimed cannot start a program with what that process has (its namespaces, cgroup, limits)"
            )
        yield dirfd
    finally:
        if dirfd is not None:
            os.close(dirfd)
        if pidfd is not None:
            os.close(pidfd)


class _CgroupMounts:
    """The cgroup hierarchies mounted in keeptimed's mount namespace, parsed
    from /proc/self/mountinfo again only after the kernel said (POLLPRI on
    the open file) that the mount table changed: large hosts have thousands
    of mounts, and restores are frequent."""

    def __init__(self):
        self._lock = threading.Lock()
        self._file = open("/proc/self/mountinfo", "rb")
        self._poll = select.poll()
        self._poll.register(self._file, select.POLLPRI)
        self._hierarchies: Optional[list[cgroups.Hierarchy]] = None

    def hierarchies(self) -> list[cgroups.Hierarchy]:
        with self._lock:
            if self._hierarchies is None or self._poll.poll(0):   # polling also clears the change
                self._file.seek(0)
                self._hierarchies = cgroups.hierarchies(self._file.read().decode("utf-8", "replace"))
            return self._hierarchies


class Inheritance:
    """Builds what a program takes from its caller (see the module)."""

    def __init__(self, settings: Settings = Settings()):
        self.settings = settings
        self._mounts = _CgroupMounts()
        self._own_namespaces = {name: _identity(os.stat(f"/proc/self/ns/{name}"))
                                for name in (*NAMESPACES, "user")}
        self._own_root = _identity(os.stat("/proc/self/root"))
        self._own_label = _lsm_label(_read("/proc/self/attr/current"))

    @contextlib.contextmanager
    def for_program(self, privileged: bool, proc: Optional[int],
                    pid: Optional[int]) -> Iterator[tuple[Inherited, dict]]:
        """What the program of a caller takes from its process (proc: its
        open /proc directory, pid: its pid to keeptimed, for messages), and
        remarks for the call's log line (what was lost or capped). The
        descriptors are closed on the way out."""
        inherited, remarks = Inherited(), {}
        try:
            if privileged:
                self._root_cgroup(proc, inherited)
            else:
                self._confined(proc, pid, inherited, remarks)
            yield inherited, remarks
        finally:
            for fd in inherited.fds():
                os.close(fd)

    # -- a non-root caller ------------------------------------------------------

    def _confined(self, proc: int, pid: int, inherited: Inherited, remarks: dict) -> None:
        lost = []

        def losing(what: str, problem: str) -> None:
            if what not in self.settings.allow_lost:
                raise PermissionDenied(f"{problem}; keeptimed refuses to start a program without it "
                                       f"(allow_lost_confinement does not list {what!r})")
            lost.append(what)
            remarks["lost_confinement"] = ",".join(lost)

        seccomp = status_field(_of_caller("status", proc), "Seccomp")
        if seccomp not in (None, "0"):
            losing("seccomp", f"the calling process (pid {pid} to keeptimed) runs under seccomp (Seccomp: {seccomp} "
                              "in /proc/PID/status), a filter keeptime cannot give the program it starts")
        user = self._namespace(proc, "user")
        if user is not None:
            os.close(user)
            losing("user-namespace", f"the calling process (pid {pid} to keeptimed) is in another user namespace "
                                     "than keeptimed, which keeptime cannot give the program it starts")
        label = _lsm_label(_of_caller("attr/current", proc, optional=True))
        if label != self._own_label:
            losing("lsm", f"the calling process (pid {pid} to keeptimed) runs under the LSM label {label!r} and "
                          f"keeptimed under {self._own_label!r}, which keeptime cannot give the program it starts")
        self._caller_cgroup(proc, inherited, lambda problem: losing("cgroup", problem))
        inherited.rlimits = self._rlimits(proc, remarks)
        inherited.loginuid = self._loginuid(proc, lambda problem: losing("loginuid", problem))
        for name in NAMESPACES:
            fd = self._namespace(proc, name)
            if fd is not None:
                inherited.namespaces.append((fd, NAMESPACE_FLAGS[name]))
        root = self._open_of_caller("root", proc, os.O_PATH | os.O_DIRECTORY)
        entered_mnt = any(flag == NAMESPACE_FLAGS["mnt"] for _, flag in inherited.namespaces)
        if entered_mnt or _identity(os.fstat(root)) != self._own_root:
            inherited.root_fd = root   # entering a mount namespace resets the root: set it again
        else:
            os.close(root)

    def _namespace(self, proc: int, name: str) -> Optional[int]:
        """An open ns/NAME of the calling process when it is not keeptimed's; None when it is."""
        fd = self._open_of_caller(f"ns/{name}", proc, os.O_RDONLY)
        if _identity(os.fstat(fd)) == self._own_namespaces[name]:
            os.close(fd)
            return None
        return fd

    @staticmethod
    def _open_of_caller(name: str, proc: int, flags: int) -> int:
        """An open /proc/PID/NAME (a namespace, the root) of the calling process."""
        try:
            return os.open(name, flags | os.O_CLOEXEC, dir_fd=proc)
        except PermissionError:
            raise PermissionDenied(f"keeptimed may not read the calling process's /proc/PID/{name} (needs "
                                   "CAP_SYS_PTRACE), so it cannot start a program in the caller's view") from None
        except OSError as exc:
            raise _exited(name, exc) from None

    def _rlimits(self, proc: int, remarks: dict) -> list[tuple[int, int, int]]:
        """The caller's rlimits; hard limits above keeptimed's own capped to
        them when keeptimed cannot raise a hard limit."""
        may_raise = "CAP_SYS_RESOURCE" in caps.effective()
        limits, capped = [], []
        for which, (soft, hard) in sorted(parse_limits(_of_caller("limits", proc)).items()):
            own_hard = _limit(resource.getrlimit(which)[1])
            if hard > own_hard and not may_raise:
                hard = own_hard
                capped.append(RLIMIT_NAMES.get(which, str(which)))
            limits.append((which, min(soft, hard), hard))
        if capped:
            remarks["rlimits_capped"] = ",".join(capped)
        return limits

    def _loginuid(self, proc: int, losing) -> Optional[int]:
        """The caller's loginuid when the program's must change to it."""
        own_text = _read("/proc/self/loginuid")
        if own_text is None:   # no audit support
            return None
        own, theirs = int(own_text), int(_of_caller("loginuid", proc))
        if own == theirs:
            return None
        # An unset loginuid may be set by anyone; a set one changed only with CAP_AUDIT_CONTROL.
        if own != LOGINUID_UNSET and "CAP_AUDIT_CONTROL" not in caps.effective():
            losing(f"the calling process's loginuid is {theirs} and keeptimed's {own}: changing a set "
                   "loginuid needs CAP_AUDIT_CONTROL")
            return None
        return theirs

    # -- cgroups -------------------------------------------------------------

    def _caller_cgroup(self, proc: int, inherited: Inherited, unreachable) -> None:
        """The caller's cgroup in each hierarchy where it is not keeptimed's;
        unreachable(problem) for one keeptimed cannot open."""
        theirs = cgroups.memberships(_of_caller("cgroup", proc))
        own = cgroups.memberships(_read("/proc/self/cgroup") or "")
        for hierarchy in self._mounts.hierarchies():
            path = theirs.get(hierarchy.key)
            # v1: a move costs a cgroup migration, skipped where there is nothing to move; v2: born there anyway.
            if path is None or (hierarchy.key != cgroups.V2 and path == own.get(hierarchy.key)):
                continue
            directory = hierarchy.directory(path)
            try:
                if directory is None:
                    raise OSError(errno.ENOENT, "outside what keeptimed's cgroup mount and namespace show")
                self._place(hierarchy, directory, inherited)
            except OSError as exc:
                unreachable(f"the calling process's {hierarchy.name} cgroup {path} is not one keeptimed can "
                            f"put a program in ({exc.strerror})")

    def _root_cgroup(self, proc: Optional[int], inherited: Inherited) -> None:
        """root_programs_cgroup, for root's and TLS clients' programs."""
        setting = self.settings.root_cgroup
        if setting == KEEPTIMED or (setting == CALLER and proc is None):
            return
        if setting == CALLER:
            self._caller_cgroup(proc, inherited, lambda problem: log.info("%s; it stays in keeptimed's", problem))
            return
        own = cgroups.memberships(_read("/proc/self/cgroup") or "")
        placed = False
        for hierarchy in self._mounts.hierarchies():
            directory = hierarchy.directory(setting)
            if directory is None:
                continue
            if own.get(hierarchy.key) == setting:   # already there
                placed = True
                continue
            try:
                self._place(hierarchy, directory, inherited)
                placed = True
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise FailedPrecondition(f"root_programs_cgroup {setting}: cannot open it in the {hierarchy.name} "
                                         f"hierarchy ({exc.strerror})") from None
        if not placed:
            raise FailedPrecondition(f"root_programs_cgroup {setting} exists in no cgroup hierarchy keeptimed has "
                                     "mounted: create it, or set root_programs_cgroup to \"caller\" or \"keeptimed\"")

    @staticmethod
    def _place(hierarchy: cgroups.Hierarchy, directory: str, inherited: Inherited) -> None:
        """Open what puts the program in directory of hierarchy."""
        if hierarchy.key == cgroups.V2:
            inherited.cgroup_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            return
        if len(inherited.cgroup_procs_fds) >= MAX_CGROUP_V1:
            raise OSError(errno.E2BIG, f"more than {MAX_CGROUP_V1} cgroup v1 hierarchies")
        inherited.cgroup_procs_fds.append(
            os.open(os.path.join(directory, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC))

