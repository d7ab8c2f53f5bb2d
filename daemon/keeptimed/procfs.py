"""Small readers of /proc: process identity, tree links and time namespaces.

Every function raises ProcessLookupError when the process is gone (or never
existed), so callers can tell a vanished process from other failures, and
PermissionDenied when keeptimed may not read it.
"""
import errno
import os
from dataclasses import dataclass

from .errors import PermissionDenied
from .policies import Clocks

PF_KTHREAD = 0x00200000  # include/linux/sched.h
PROC = "/proc"
# The initial time namespace has a fixed inode (PROC_TIME_INIT_INO).
INITIAL_TIMENS_INODE = 0xEFFFFFFA
CLOCK_IDS = {"monotonic": "monotonic", "1": "monotonic", "boottime": "boottime", "7": "boottime"}


@dataclass(frozen=True)
class ProcStat:
    pid: int
    comm: str
    state: str
    ppid: int
    flags: int
    start_time_ticks: int

    @property
    def is_kernel_thread(self) -> bool:
        return bool(self.flags & PF_KTHREAD)


def _gone(pid: int, exc: OSError) -> Exception:
    """ProcessLookupError for a vanished process; PermissionDenied (a gRPC
    status, not INTERNAL) when keeptimed may not look at it."""
    if exc.errno in (errno.ENOENT, errno.ESRCH):
        return ProcessLookupError(errno.ESRCH, f"no process with pid {pid}")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return PermissionDenied(
            f"keeptimed may not read {exc.filename or f'{PROC}/{pid}'}: {exc.strerror} (reading another "
            "process's /proc needs CAP_SYS_PTRACE, and no AppArmor or SELinux policy refusing it)"
        )
    return exc


def read_stat(pid: int) -> ProcStat:
    """Parse /proc/PID/stat (comm may hold spaces and parentheses)."""
    try:
        with open(f"{PROC}/{pid}/stat", "rb") as f:
            raw = f.read().decode("utf-8", "replace")
    except OSError as exc:
        raise _gone(pid, exc) from None
    open_paren, close_paren = raw.index("("), raw.rindex(")")
    rest = raw[close_paren + 2 :].split()
    return ProcStat(
        pid=pid,
        comm=raw[open_paren + 1 : close_paren],
        state=rest[0],
        ppid=int(rest[1]),
        flags=int(rest[6]),
        start_time_ticks=int(rest[19]),
    )


def owner_uid(pid: int) -> int:
    """The uid owning /proc/PID (the process's effective uid, as procfs shows it)."""
    try:
        return os.stat(f"{PROC}/{pid}").st_uid
    except OSError as exc:
        raise _gone(pid, exc) from None


def timens_inode(pid: int, for_children: bool = False) -> int:
    """Inode of the time namespace pid is in (or that its children are born in)."""
    name = "time_for_children" if for_children else "time"
    try:
        return os.stat(f"{PROC}/{pid}/ns/{name}").st_ino
    except OSError as exc:
        raise _gone(pid, exc) from None


def children(pid: int) -> list[int]:
    """Direct children of every thread of pid (needs CONFIG_PROC_CHILDREN).

    Raises FileNotFoundError (not ProcessLookupError) when the kernel lacks
    the children files, so callers can fall back to a full /proc scan.
    """
    found: list[int] = []
    try:
        tids = os.listdir(f"{PROC}/{pid}/task")
    except OSError as exc:
        raise _gone(pid, exc) from None
    for tid in tids:
        try:
            with open(f"{PROC}/{pid}/task/{tid}/children", "rb") as f:
                found.extend(int(c) for c in f.read().split())
        except FileNotFoundError:
            if os.path.exists(f"{PROC}/{pid}/task/{tid}"):
                raise  # the thread exists but the file does not: no CONFIG_PROC_CHILDREN
        except ProcessLookupError:
            continue  # the thread exited meanwhile
    return found


def read_timens_offsets_file(pid: int) -> str:
    """Raw /proc/PID/timens_offsets. Beware: it shows the namespace pid's
    *children* are born in, which differs from pid's own after an unshare."""
    try:
        with open(f"{PROC}/{pid}/timens_offsets", "rb") as f:
            return f.read().decode("ascii")
    except OSError as exc:
        raise _gone(pid, exc) from None


def parse_timens_offsets(text: str) -> Clocks:
    """Parse the timens_offsets format ("monotonic SEC NSEC" lines) into ns."""
    values = {"monotonic": 0, "boottime": 0}
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 3 or fields[0] not in CLOCK_IDS:
            raise ValueError(f"unexpected timens_offsets line: {line!r}")
        sec, nsec = int(fields[1]), int(fields[2])
        if not 0 <= nsec < 1_000_000_000:
            raise ValueError(f"nanoseconds out of range in timens_offsets line: {line!r}")
        values[CLOCK_IDS[fields[0]]] = sec * 1_000_000_000 + nsec
    return Clocks(values["monotonic"], values["boottime"])


def boot_id() -> str:
    with open(f"{PROC}/sys/kernel/random/boot_id", encoding="ascii") as f:
        return f.read().strip()


def has_time_namespaces() -> bool:
    return os.path.exists(f"{PROC}/self/ns/time")


def max_time_namespaces() -> int:
    """/proc/sys/user/max_time_namespaces (0: none may be created), -1 when unknown."""
    try:
        with open(f"{PROC}/sys/user/max_time_namespaces", encoding="ascii") as f:
            return int(f.read())
    except (OSError, ValueError):
        return -1


def pid_of_pidfd(pidfd: int) -> int:
    """The pid (in keeptimed's pid namespace) of the process pidfd names;
    ProcessLookupError once it has exited, ValueError when it is no pidfd."""
    try:
        with open(f"{PROC}/self/fdinfo/{pidfd}", "rb") as f:
            for line in f:
                if line.startswith(b"Pid:"):
                    pid = int(line.split()[1])
                    if pid <= 0:   # -1: exited; 0: not in our pid namespace
                        raise ProcessLookupError(errno.ESRCH, "the process has exited or is out of reach")
                    return pid
    except FileNotFoundError:
        raise ValueError(f"descriptor {pidfd} is not open") from None
    raise ValueError(f"descriptor {pidfd} is not a pidfd")
