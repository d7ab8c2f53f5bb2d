"""The processes keeptimed started: reaped through pidfds, statuses kept.

Restored roots are keeptimed's own children (the native helper creates them
with CLONE_PARENT), so keeptimed must reap them or they stay zombies. One
thread waits on all their pidfds with epoll and reaps each by its pidfd
(never waitpid(-1), which would steal the native helpers' exits); a child
whose pidfd cannot be opened is reaped by a thread of its own instead. The
processes running for each uid are counted, so user_processes can bound them.
"""
import collections
import contextlib
import logging
import os
import select
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Hashable, Iterator, Optional

from .errors import NotFound
from .limits import LimitExceeded

log = logging.getLogger("keeptimed")

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


class _Ending:
    """How one process ended, once it has: for the Waits blocked on it."""

    __slots__ = ("done", "status")

    def __init__(self):
        self.done = threading.Event()
        self.status: Optional[ExitStatus] = None


class Children:
    """Tracks started processes until they exit and remembers how they ended."""

    def __init__(self, keep_statuses: int = KEEP_STATUSES):
        self._epoll = select.epoll()
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._epoll.register(self._wake_r, select.EPOLLIN)
        self._running: dict[int, int] = {}  # pidfd -> pid
        self._threaded: set[int] = set()     # pids reaped by a thread of their own (no pidfd to be had)
        self._live: collections.Counter = collections.Counter()      # owner uid -> processes running
        self._starting: collections.Counter = collections.Counter()  # owner uid -> being started
        self._exited: "OrderedDict[int, ExitStatus]" = OrderedDict()
        self._owners: dict[int, int] = {}    # pid -> uid it was started for
        # (pid namespace, pid there) -> pid, for processes started in another pid namespace
        self._aliases: dict[Hashable, int] = {}
        self._alias_of: dict[int, Hashable] = {}
        self._keep = keep_statuses
        self._lock = threading.Lock()
        self._endings: dict[int, _Ending] = {}   # pid -> its end, for the Waits blocked on it
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="keeptimed-reaper", daemon=True)
        self._thread.start()

    @contextlib.contextmanager
    def starting(self, owner_uid: int, limit: Optional[int]) -> Iterator[None]:
        """Hold a place for one process about to be started for owner_uid
        (and adopted within); LimitExceeded when owner_uid already has limit
        running or being started (None: no limit)."""
        with self._lock:
            held = self._live[owner_uid] + self._starting[owner_uid]
            if limit is not None and held >= limit:
                raise LimitExceeded("user_processes", f"uid {owner_uid} already has {held} processes started by "
                                                      "keeptimed running, the most user_processes allows")
            self._starting[owner_uid] += 1
        try:
            yield
        finally:
            with self._lock:
                self._starting[owner_uid] -= 1

    def live(self, owner_uid: int) -> int:
        """Processes started for owner_uid that still run."""
        with self._lock:
            return self._live[owner_uid]

    def adopt(self, pid: int, owner_uid: int = 0, alias: Optional[Hashable] = None) -> None:
        """Start tracking pid, a child of this process that has not been reaped,
        started on behalf of owner_uid; alias is how the caller that started it
        names it (its pid namespace and pid there) when that is not pid itself.

        Never fails: the program runs, so its caller must learn its pid. A
        child whose pidfd cannot be opened (no descriptor left) is reaped by
        a thread of its own, which needs none."""
        try:
            pidfd = os.pidfd_open(pid)
        except OSError as exc:
            pidfd = None
            log.warning("cannot open a pidfd for pid %d (%s) with %d started processes running: a thread reaps it; "
                        "raise keeptimed's open-file limit (LimitNOFILE)", pid, exc.strerror, len(self._running))
        with self._lock:
            if pidfd is not None:
                self._running[pidfd] = pid
            else:
                self._threaded.add(pid)
            self._live[owner_uid] += 1
            self._exited.pop(pid, None)  # a reused pid: forget the older process
            self._owners[pid] = owner_uid
            self._forget_alias(pid)
            if alias is not None:
                self._forget_alias(self._aliases.get(alias))   # a reused pid over there
                self._aliases[alias] = pid
                self._alias_of[pid] = alias
        if pidfd is not None:
            self._epoll.register(pidfd, select.EPOLLIN)
        else:
            threading.Thread(target=self._reap_by_pid, args=(pid,), name=f"keeptimed-reap-{pid}", daemon=True).start()

    def alive(self) -> bool:
        """Whether the reaper still runs (it only stops at close())."""
        return self._thread.is_alive()

    def owner_of(self, pid: int) -> Optional[int]:
        """The uid pid was started for, while its status is still known."""
        with self._lock:
            return self._owners.get(pid)

    def started_as(self, alias: Hashable) -> Optional[int]:
        """keeptimed's pid of the process adopted with alias, while its status is still known."""
        with self._lock:
            return self._aliases.get(alias)

    def _forget_alias(self, pid: Optional[int]) -> None:
        alias = self._alias_of.pop(pid, None)
        if alias is not None:
            del self._aliases[alias]

    def running(self) -> list[int]:
        with self._lock:
            return sorted([*self._running.values(), *self._threaded])

    def wait(self, pid: int, timeout: Optional[float] = None,
             still_wanted: Callable[[], bool] = lambda: True) -> Optional[ExitStatus]:
        """The exit status of pid, blocking until it exits. None on timeout or
        when still_wanted() turns false (a cancelled call)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            if pid in self._exited:
                return self._exited[pid]
            if pid not in self._threaded and pid not in self._running.values():
                raise NotFound(f"pid {pid} was not started by this keeptimed, or it exited too long ago")
            if self._closed:
                return None
            # Woken by pid's end alone: a shared condition would wake every
            # blocked Wait at each exit.
            ending = self._endings.setdefault(pid, _Ending())
        while True:
            remaining = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            if remaining <= 0 or not still_wanted():
                return None
            if ending.done.wait(remaining):
                return ending.status

    def close(self) -> None:
        """Stop reaping; processes still running keep running."""
        with self._lock:
            self._closed = True
            endings, self._endings = list(self._endings.values()), {}
        for ending in endings:   # their Waits return None
            ending.done.set()
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
        with self._lock:
            self._ended(self._running.pop(pidfd), info)
        os.close(pidfd)

    def _reap_by_pid(self, pid: int) -> None:
        """Reap pid, a child tracked without a pidfd (our own child: safe to wait for by pid)."""
        try:
            info = os.waitid(os.P_PID, pid, os.WEXITED)
        except ChildProcessError:
            info = None
        with self._lock:
            self._threaded.discard(pid)
            self._ended(pid, info)

    def _ended(self, pid: int, info) -> None:
        """Record how pid ended (info from waitid; None: unknown). Holds _lock."""
        if info is None:
            status = ExitStatus(pid, exit_code=-1, signal=0)
        elif info.si_code == os.CLD_EXITED:
            status = ExitStatus(pid, exit_code=info.si_status, signal=0)
        else:
            status = ExitStatus(pid, exit_code=-1, signal=info.si_status)
        self._exited[pid] = status
        owner = self._owners.get(pid)
        if owner is not None:
            self._live[owner] -= 1
            if self._live[owner] <= 0:
                del self._live[owner]
        while len(self._exited) > self._keep:
            forgotten, _ = self._exited.popitem(last=False)
            self._owners.pop(forgotten, None)
            self._forget_alias(forgotten)
        ending = self._endings.pop(pid, None)
        if ending is not None:
            ending.status = status
            ending.done.set()
