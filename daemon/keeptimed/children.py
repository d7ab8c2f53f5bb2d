"""The processes keeptimed started: reaped through pidfds, statuses kept.

Restored roots are keeptimed's own children (the native helper creates them
with CLONE_PARENT), so keeptimed must reap them or they stay zombies. One
thread waits on all their pidfds with epoll and reaps each by its pidfd
(never waitpid(-1), which would steal the native helpers' exits).
"""
import os
import select
import signal
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Hashable, Optional

from .errors import NotFound, ResourceExhausted

KEEP_STATUSES = 10_000


@dataclass(frozen=True)
class ExitStatus:
    pid: int
    exit_code: int   # meaningful when signal == 0
    signal: int

    @property
    def shell_status(self) -> int:
        """$? as a shell reports it: the exit code, or 128 + the signal."""
        return 128 + self.signal if self.signal else self.exit_code


class Children:
    """Tracks started processes until they exit and remembers how they ended."""

    def __init__(self, keep_statuses: int = KEEP_STATUSES):
        self._epoll = select.epoll()
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._epoll.register(self._wake_r, select.EPOLLIN)
        self._running: dict[int, int] = {}  # pidfd -> pid
        self._exited: "OrderedDict[int, ExitStatus]" = OrderedDict()
        self._owners: dict[int, int] = {}    # pid -> uid it was started for
        # (pid namespace, pid there) -> pid, for processes started in another pid namespace
        self._aliases: dict[Hashable, int] = {}
        self._alias_of: dict[int, Hashable] = {}
        self._keep = keep_statuses
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="keeptimed-reaper", daemon=True)
        self._thread.start()

    def adopt(self, pid: int, owner_uid: int = 0, alias: Optional[Hashable] = None) -> None:
        """Start tracking pid, a child of this process that has not been reaped,
        started on behalf of owner_uid; alias is how the caller that started it
        names it (its pid namespace and pid there) when that is not pid itself.

        A child that cannot be tracked (no descriptor left for its pidfd) is
        killed and reaped, so it is neither a zombie nor a process no one
        answers for, and ResourceExhausted is raised."""
        try:
            pidfd = os.pidfd_open(pid)
        except OSError as exc:
            raise ResourceExhausted(
                f"cannot track pid {pid} ({exc.strerror}) with {len(self._running)} started processes "
                f"still running, so it {_end_untracked(pid)}; raise keeptimed's open-file limit (LimitNOFILE)"
            ) from None
        with self._cond:
            self._running[pidfd] = pid
            self._exited.pop(pid, None)  # a reused pid: forget the older process
            self._owners[pid] = owner_uid
            self._forget_alias(pid)
            if alias is not None:
                self._forget_alias(self._aliases.get(alias))   # a reused pid over there
                self._aliases[alias] = pid
                self._alias_of[pid] = alias
        self._epoll.register(pidfd, select.EPOLLIN)

    def alive(self) -> bool:
        """Whether the reaper still runs (it only stops at close())."""
        return self._thread.is_alive()

    def owner_of(self, pid: int) -> Optional[int]:
        """The uid pid was started for, while its status is still known."""
        with self._cond:
            return self._owners.get(pid)

    def started_as(self, alias: Hashable) -> Optional[int]:
        """keeptimed's pid of the process adopted with alias, while its status is still known."""
        with self._cond:
            return self._aliases.get(alias)

    def _forget_alias(self, pid: Optional[int]) -> None:
        alias = self._alias_of.pop(pid, None)
        if alias is not None:
            del self._aliases[alias]

    def running(self) -> list[int]:
        with self._cond:
            return sorted(self._running.values())

    def wait(self, pid: int, timeout: Optional[float] = None,
             still_wanted: Callable[[], bool] = lambda: True) -> Optional[ExitStatus]:
        """The exit status of pid, blocking until it exits. None on timeout or
        when still_wanted() turns false (a cancelled call)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if pid in self._exited:
                    return self._exited[pid]
                if pid not in self._running.values():
                    raise NotFound(
                        f"pid {pid} was not started by this keeptimed, or it exited too long ago"
                    )
                remaining = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
                if remaining <= 0 or self._closed or not still_wanted():
                    return None
                self._cond.wait(remaining)

    def close(self) -> None:
        """Stop reaping; processes still running keep running."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        os.write(self._wake_w, b"x")
        self._thread.join()
        for pidfd in list(self._running):
            os.close(pidfd)
        self._epoll.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _loop(self) -> None:
        while not self._closed:
            for fd, _ in self._epoll.poll():
                if fd != self._wake_r:
                    self._reap(fd)

    def _reap(self, pidfd: int) -> None:
        try:
            info = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
        except ChildProcessError:
            info = None  # reaped by someone else: its status is lost, its end is not
        else:
            if info is None:
                return  # not exited after all
        self._epoll.unregister(pidfd)
        with self._cond:
            pid = self._running.pop(pidfd)
            if info is None:
                status = ExitStatus(pid, exit_code=-1, signal=0)
            elif info.si_code == os.CLD_EXITED:
                status = ExitStatus(pid, exit_code=info.si_status, signal=0)
            else:
                status = ExitStatus(pid, exit_code=-1, signal=info.si_status)
            self._exited[pid] = status
            while len(self._exited) > self._keep:
                forgotten, _ = self._exited.popitem(last=False)
                self._owners.pop(forgotten, None)
                self._forget_alias(forgotten)
            self._cond.notify_all()
        os.close(pidfd)


def _end_untracked(pid: int) -> str:
    """End a child that cannot be tracked; says what became of it."""
    try:
        os.kill(pid, signal.SIGKILL)
    except PermissionError:
        # Started as another user and no CAP_KILL: let it run, but a thread
        # (which needs no descriptor) reaps it when it ends: never a zombie.
        threading.Thread(target=os.waitpid, args=(pid, 0), name=f"reap-{pid}", daemon=True).start()
        return "runs on untracked (killing it needs CAP_KILL)"
    os.waitpid(pid, 0)   # our own child: safe to reap by pid
    return "was killed"
