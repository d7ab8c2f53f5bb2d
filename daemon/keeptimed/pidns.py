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
View: no /proc reads at all.
"""
import errno
import fcntl
import os
import signal
import socket
import struct
from dataclasses import dataclass
from typing import Iterator, Optional

from .errors import NotFound

PROC = "/proc"
SO_PEERPIDFD = 77          # Linux >= 6.5: a pidfd of the peer, fixed at connect time
NS_GET_PARENT = 0xB702     # _IO(0xb7, 0x2)


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
    for line in status.splitlines():
        if line.startswith("NSpid:"):
            return [int(value) for value in line.split()[1:]]
    raise ValueError("no NSpid line in /proc/PID/status (Linux < 4.1?)")


def of_peer(sock: socket.socket, pid: int, keeptimed: PidNamespace) -> Optional[PidNamespace]:
    """The pid namespace of the process that connected sock, whose SO_PEERCRED
    pid is pid; None when it cannot be known (pid 0: invisible to keeptimed,
    or the process is gone).

    The pidfd (SO_PEERPIDFD, else pidfd_open(pid)) is checked to still name a
    live process after /proc/PID/ns/pid was read: only then was that file the
    caller's and not that of a process that reused its pid.
    """
    if pid <= 0:
        return None
    try:
        pidfd = _peer_pidfd(sock, pid)
    except OSError:
        return None
    try:
        st = os.stat(f"{PROC}/{pid}/ns/pid")
        if _identity(st) == (keeptimed.dev, keeptimed.inode):
            namespace = keeptimed
        else:
            with open(f"{PROC}/{pid}/status", encoding="ascii", errors="replace") as f:
                namespace = PidNamespace(st.st_dev, st.st_ino, len(nspids(f.read())) - 1)
        return namespace if _alive(pidfd) else None
    except (OSError, ValueError):
        return None
    finally:
        os.close(pidfd)


def _peer_pidfd(sock: socket.socket, pid: int) -> int:
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD, struct.calcsize("i"))
        return struct.unpack("i", raw)[0]
    except OSError as exc:
        if exc.errno not in (errno.ENOPROTOOPT, errno.EINVAL):
            raise
    return os.pidfd_open(pid)   # before Linux 6.5: the pid may have been reused already


def _alive(pidfd: int) -> bool:
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

    def to_caller(self, host_pid: int) -> int:
        """The caller's pid for keeptimed's host_pid; 0 when the process is
        outside the caller's namespace. ProcessLookupError when it is gone."""
        if self.same:
            return host_pid
        try:
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
        namespace has no such process. Scans /proc: only callers in another
        namespace pay for it."""
        if self.same:
            return pid   # looked up by whoever uses it, as always
        for host_pid, dirfd in _processes():
            try:
                if self._pid_in(dirfd, wanted=pid) == pid:
                    return host_pid
            except (OSError, ValueError):
                continue   # exited meanwhile, or not ours to read
            finally:
                os.close(dirfd)
        raise NotFound(f"no process with pid {pid} in the caller's pid namespace")

    def _pid_in(self, dirfd: int, wanted: Optional[int] = None) -> int:
        """The caller's pid of the process whose /proc directory is dirfd (0:
        outside its namespace). With wanted, 0 early for any other pid, before
        the namespace is looked at."""
        fd = os.open("status", os.O_RDONLY | os.O_CLOEXEC, dir_fd=dirfd)
        try:
            status = os.read(fd, 16384).decode("ascii", "replace")
        finally:
            os.close(fd)
        pids = nspids(status)
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
