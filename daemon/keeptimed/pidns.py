"""Pids as a caller in another pid namespace names them.

keeptimed reads /proc in its own pid namespace; a caller in a container names
processes by the pids of its own namespace. A namespace's pids are the entries
of the NSpid line of /proc/PID/status: the first is keeptimed's pid for the
process, the one at index `level` is its pid in the namespace `level` steps
below keeptimed's. An entry at that index belongs to the caller's namespace
only if the process's namespace at that depth *is* the caller's (a sibling at
the same depth has its own pid 3), which the namespace's identity (device and
inode of /proc/PID/ns/pid, walked up with NS_GET_PARENT) settles.

A caller in keeptimed's own namespace (the common case) gets the identity
View: no /proc reads at all. For the others, finding keeptimed's pid for one
of theirs scans /proc; what a scan found is remembered and checked again
before it is used (one /proc read), so asking again about a pid is cheap.
"""
import errno
import fcntl
import os
import signal
import socket
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterator, Optional

from .errors import NotFound

PROC = "/proc"
SO_PEERPIDFD = 77          # Linux >= 6.5: a pidfd of the peer, fixed at connect time
NS_GET_PARENT = 0xB702     # _IO(0xb7, 0x2)
REMEMBERED = 4096          # (namespace, pid) -> keeptimed's pid, last found

_found: "OrderedDict[tuple[int, int, int], int]" = OrderedDict()
_found_lock = threading.Lock()


@dataclass(frozen=True)
class PidNamespace:
    """A pid namespace: its identity (nsfs device and inode) and its depth
    below keeptimed's own pid namespace (0: keeptimed's)."""

    dev: int
    inode: int
    level: int


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def own() -> PidNamespace:
    """keeptimed's own pid namespace."""
    st = os.stat(f"{PROC}/self/ns/pid")
    return PidNamespace(st.st_dev, st.st_ino, 0)


def nspids(status: str) -> list[int]:
    """The NSpid line of a /proc/PID/status text: the process's pid in
    keeptimed's namespace, then in each namespace below, down to its own."""
    start = status.find("\nNSpid:")
    if start < 0:
        raise ValueError("no NSpid line in /proc/PID/status (Linux < 4.1?)")
    end = status.find("\n", start + 1)
    return [int(value) for value in status[start + len("\nNSpid:"):end if end > 0 else None].split()]


def _read_status(path: str, dir_fd: Optional[int] = None) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        return os.read(fd, 16384).decode("ascii", "replace")
    finally:
        os.close(fd)


def of_peer(sock: socket.socket, pid: int, keeptimed: PidNamespace,
            pidfd: Optional[int] = None) -> Optional[PidNamespace]:
    """The pid namespace of the process that connected sock, whose SO_PEERCRED
    pid is pid; None when it cannot be known (pid 0: invisible to keeptimed;
    the process is gone; or its namespace is not keeptimed's and keeptimed
    may not read /proc/PID/ns/pid, which needs CAP_SYS_PTRACE).

    The pidfd (given, else peer_pidfd()'s, closed after) is checked to still
    name a live process after /proc/PID was read: only then was it the
    caller's and not that of a process that reused its pid.
    """
    if pid <= 0:
        return None
    own_pidfd = pidfd is None
    if own_pidfd:
        pidfd = peer_pidfd(sock, pid)
        if pidfd is None:
            return None
    try:
        # NSpid starts in keeptimed's namespace (that of its /proc), so a single
        # entry means the caller is in it; status needs no ptrace access.
        levels = len(nspids(_read_status(f"{PROC}/{pid}/status")))
        if levels == 1:
            namespace = keeptimed
        else:
            st = os.stat(f"{PROC}/{pid}/ns/pid")
            namespace = PidNamespace(st.st_dev, st.st_ino, levels - 1)
        return namespace if alive(pidfd) else None
    except (OSError, ValueError):
        return None
    finally:
        if own_pidfd:
            os.close(pidfd)


def peer_pidfd(sock: socket.socket, pid: int) -> Optional[int]:
    """A pidfd of the process that connected sock (SO_PEERCRED pid pid):
    SO_PEERPIDFD, fixed at connect time; before Linux 6.5 pidfd_open(pid),
    whose pid may have been reused already. None when there is none."""
    if pid <= 0:
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD, struct.calcsize("i"))
        return struct.unpack("i", raw)[0]
    except OSError as exc:
        if exc.errno not in (errno.ENOPROTOOPT, errno.EINVAL):
            return None
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None


def alive(pidfd: int) -> bool:
    """Whether pidfd's process has not exited."""
    try:
        signal.pidfd_send_signal(pidfd, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass   # alive, only not ours to signal
    return True


@dataclass(frozen=True)
class Target:
    """A process a call names: its pid in the caller's namespace, and in
    keeptimed's (for /proc and syscalls)."""

    pid: int
    host_pid: int


class View:
    """Pids as seen from one pid namespace (the caller's)."""

    def __init__(self, namespace: PidNamespace, keeptimed: PidNamespace):
        self.namespace = namespace
        self.same = (namespace.dev, namespace.inode) == (keeptimed.dev, keeptimed.inode)

    def resolve(self, pid: int) -> Target:
        """The process the caller calls pid; NotFound when its namespace has none."""
        return Target(pid, self.to_host(pid))

    def to_caller(self, host_pid: int, inside: bool = False) -> int:
        """The caller's pid for keeptimed's host_pid; 0 when the process is
        outside the caller's namespace. ProcessLookupError when it is gone.

        inside: the process is known to be in the caller's namespace or one
        below it, as every descendant of a process that is (a child is born
        in its parent's pid namespace or one below), so only its NSpid is read.
        """
        if self.same:
            return host_pid
        try:
            if inside:
                pids = nspids(_read_status(f"{PROC}/{host_pid}/status"))
                return pids[self.namespace.level] if len(pids) > self.namespace.level else 0
            dirfd = os.open(f"{PROC}/{host_pid}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (FileNotFoundError, ProcessLookupError):
            raise ProcessLookupError(errno.ESRCH, f"no process with pid {host_pid}") from None
        try:
            return self._pid_in(dirfd)
        except (FileNotFoundError, ProcessLookupError):   # exited meanwhile
            raise ProcessLookupError(errno.ESRCH, f"no process with pid {host_pid}") from None
        finally:
            os.close(dirfd)

    def to_host(self, pid: int) -> int:
        """keeptimed's pid for the caller's pid; NotFound when the caller's
        namespace has no such process. Scans /proc unless an earlier answer
        still holds: only callers in another namespace pay for it."""
        if self.same:
            return pid   # looked up by whoever uses it, as always
        key = (self.namespace.dev, self.namespace.inode, pid)
        with _found_lock:
            host_pid = _found.get(key)
        if host_pid is not None and self._is(host_pid, pid):
            return host_pid
        for host_pid, dirfd in _processes():
            try:
                if self._pid_in(dirfd, wanted=pid) == pid:
                    self.remember(pid, host_pid)
                    return host_pid
            except (OSError, ValueError):
                continue   # exited meanwhile, or not ours to read
            finally:
                os.close(dirfd)
        raise NotFound(f"no process with pid {pid} in the caller's pid namespace")

    def remember(self, pid: int, host_pid: int) -> None:
        """Note that the caller's pid is keeptimed's host_pid (checked again before use)."""
        if self.same:
            return
        with _found_lock:
            _found[(self.namespace.dev, self.namespace.inode, pid)] = host_pid
            _found.move_to_end((self.namespace.dev, self.namespace.inode, pid))
            while len(_found) > REMEMBERED:
                _found.popitem(last=False)

    def _is(self, host_pid: int, pid: int) -> bool:
        """Whether keeptimed's host_pid is the caller's pid (a pid names one
        process of a namespace at a time, so this is exact)."""
        try:
            return self.to_caller(host_pid) == pid
        except (OSError, ValueError):
            return False

    def _pid_in(self, dirfd: int, wanted: Optional[int] = None) -> int:
        """The caller's pid of the process whose /proc directory is dirfd (0:
        outside its namespace). With wanted, 0 early for any other pid, before
        the namespace is looked at."""
        pids = nspids(_read_status("status", dir_fd=dirfd))
        level = self.namespace.level
        if len(pids) <= level or (wanted is not None and pids[level] != wanted):
            return 0
        if not self._contains(dirfd, depth=len(pids) - 1):
            return 0
        return pids[level]

    def _contains(self, dirfd: int, depth: int) -> bool:
        """Whether the caller's namespace is the process's own or an ancestor of it."""
        want = (self.namespace.dev, self.namespace.inode)
        if depth == self.namespace.level:
            return _identity(os.stat("ns/pid", dir_fd=dirfd)) == want
        fd = os.open("ns/pid", os.O_RDONLY | os.O_CLOEXEC, dir_fd=dirfd)
        try:
            for _ in range(depth - self.namespace.level):
                parent = fcntl.ioctl(fd, NS_GET_PARENT)
                os.close(fd)
                fd = parent
            return _identity(os.fstat(fd)) == want
        finally:
            os.close(fd)


def _processes() -> Iterator[tuple[int, int]]:
    """(pid, open /proc/PID directory) of every process keeptimed sees; the
    consumer closes each descriptor."""
    for name in os.listdir(PROC):
        if not name.isdigit():
            continue
        try:
            yield int(name), os.open(f"{PROC}/{name}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            continue
