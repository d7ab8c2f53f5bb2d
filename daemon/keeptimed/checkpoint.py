"""Checkpoint: record the clocks a live process tree sees.

The tree is walked first and the clocks are read last, in one burst, so the
recorded values are as late as anything in the tree could have read.

/proc is read with keeptimed's pids; the record holds the pids the caller's
pid namespace gives the same processes (pidns.View), read during the walk.
"""
from collections import deque
from dataclasses import dataclass
from typing import Optional

import psutil

from keeptime.recordfile import new_record_id
from keeptime.v1 import keeptime_pb2 as pb

from . import pidns, procfs, timens
from .errors import InvalidArgument, NotFound
from .hostclock import HostClock
from .pidns import Target
from .policies import Clocks
from .wire import clock_values, offsets as wire_offsets

MAX_TREE_SIZE = 100_000


def _tree(root: int) -> list[tuple[int, int]]:
    """(pid, parent) pairs of the tree rooted at root, root first (parent 0)."""
    try:
        procfs.children(root)
    except FileNotFoundError:
        return _tree_by_scan(root)
    pairs = [(root, 0)]
    queue = deque([root])
    while queue:
        parent = queue.popleft()
        try:
            kids = procfs.children(parent)
        except ProcessLookupError:
            continue  # exited meanwhile: its subtree was reparented elsewhere
        for kid in kids:
            pairs.append((kid, parent))
            queue.append(kid)
        if len(pairs) > MAX_TREE_SIZE:
            raise InvalidArgument(f"process tree of pid {root} has more than {MAX_TREE_SIZE} processes")
    return pairs


def _tree_by_scan(root: int) -> list[tuple[int, int]]:
    """Fallback for kernels without /proc/PID/task/TID/children: scan all of /proc."""
    try:
        kids = psutil.Process(root).children(recursive=True)
    except psutil.NoSuchProcess:
        raise ProcessLookupError(root) from None
    pairs = [(root, 0)]
    for kid in kids:
        try:
            pairs.append((kid.pid, kid.ppid()))
        except psutil.NoSuchProcess:
            continue
    return pairs[: MAX_TREE_SIZE + 1]


def _validate_pid(target: Target) -> procfs.ProcStat:
    pid = target.pid
    if pid <= 0:
        raise InvalidArgument(f"pid must be a positive integer, got {pid}")
    try:
        stat = procfs.read_stat(target.host_pid)
    except ProcessLookupError:
        raise NotFound(f"no process with pid {pid}") from None
    if stat.is_kernel_thread:
        raise InvalidArgument(f"pid {pid} is a kernel thread ({stat.comm}); it has no clocks to keep")
    if stat.state in ("Z", "X"):
        raise NotFound(f"pid {pid} has exited (zombie)")
    return stat


@dataclass(frozen=True)
class Tree:
    """A checkpointed tree: the record, with the view's pids, and keeptimed's
    pids of record.processes in the same order (for access checks)."""

    record: pb.Record
    host_pids: list[int]


def checkpoint(target: Target, host: HostClock, labels: Optional[dict[str, str]] = None,
               view: Optional[pidns.View] = None) -> Tree:
    """Record the clocks of the process tree rooted at target, with pids as
    view shows them (keeptimed's own when None)."""
    pid = target.pid
    root_stat = _validate_pid(target)
    try:
        pairs = _tree(target.host_pid)
    except ProcessLookupError:
        raise NotFound(f"pid {pid} exited during the checkpoint") from None

    shown: dict[int, int] = {}  # keeptimed's pid -> the view's

    def shown_pid(member: int, descendant: bool = False) -> int:
        """The view's pid of member (0: outside the view's namespace, or gone).
        A descendant of the root is in the root's pid namespace or below."""
        if member not in shown:
            try:
                shown[member] = view.to_caller(member, inside=descendant) if view else member
            except ProcessLookupError:
                return 0
        return shown[member]

    processes: list[pb.ProcessInfo] = []
    host_pids: list[int] = []
    members: dict[int, list[int]] = {}  # namespace inode -> keeptimed's pids
    for member, parent in pairs:
        try:
            stat = procfs.read_stat(member)
            if parent and stat.ppid != parent:
                continue  # exited and its pid was reused
            if stat.state in ("Z", "X"):
                continue  # exited: nothing left to restore
            inode = procfs.timens_inode(member)
            uid = procfs.owner_uid(member)
        except ProcessLookupError:
            if member == target.host_pid:
                raise NotFound(f"pid {pid} exited during the checkpoint") from None
            continue
        if member == target.host_pid and shown_pid(member) != pid:
            # Exited after the caller's pid was looked up; another process took keeptimed's pid.
            raise NotFound(f"pid {pid} exited during the checkpoint")
        if not shown_pid(member, descendant=True):
            continue  # exited meanwhile
        processes.append(
            pb.ProcessInfo(
                pid=shown_pid(member), ppid=shown_pid(stat.ppid), start_time_ticks=stat.start_time_ticks,
                timens_inode=inode, comm=stat.comm, uid=uid,
            )
        )
        host_pids.append(member)
        members.setdefault(inode, []).append(member)

    offsets = {inode: _namespace_offsets(inode, pids) for inode, pids in members.items()}
    root_inode = processes[0].timens_inode
    if root_inode not in offsets or offsets[root_inode] is None:
        raise NotFound(f"pid {pid} exited during the checkpoint")
    try:
        if procfs.read_stat(target.host_pid).start_time_ticks != root_stat.start_time_ticks:
            raise ProcessLookupError(pid)
    except ProcessLookupError:
        raise NotFound(f"pid {pid} exited during the checkpoint") from None

    now = host.now()  # last: nothing in the tree read later than this
    record = pb.Record(
        id=new_record_id(),
        root_pid=pid,
        realtime_ns=now.realtime_ns,
        host_clocks=clock_values(now.clocks),
        boot_id=now.boot_id,
        hostname=now.hostname,
        root_timens_inode=root_inode,
        processes=processes,
        labels=labels or {},
        source="checkpoint",
    )
    record.clocks.CopyFrom(clock_values(now.clocks + offsets[root_inode]))
    for inode, pids in members.items():
        if offsets[inode] is None:
            continue
        record.namespaces.append(
            pb.TimeNamespace(
                inode=inode,
                offsets=wire_offsets(offsets[inode]),
                clocks=clock_values(now.clocks + offsets[inode]),
                pids=[shown[member] for member in pids],
            )
        )
    return Tree(record, host_pids)


def _namespace_offsets(inode: int, pids: list[int]) -> Optional[Clocks]:
    """Offsets of namespace inode, read through any of its still-living members."""
    for member in pids:
        try:
            ns = timens.namespace_of(member)
        except (ProcessLookupError, FileNotFoundError):
            continue
        if ns.inode == inode:
            return ns.offsets
    return None


def clocks_of(target: Target, host: HostClock) -> pb.ClocksResponse:
    """The clocks a live process sees now and its namespace's offsets."""
    _validate_pid(target)
    try:
        ns = timens.namespace_of(target.host_pid)
    except (ProcessLookupError, FileNotFoundError):
        raise NotFound(f"no process with pid {target.pid}") from None
    now = host.now()
    return pb.ClocksResponse(
        pid=target.pid,
        timens_inode=ns.inode,
        host_namespace=ns.inode == procfs.INITIAL_TIMENS_INODE,
        offsets=wire_offsets(ns.offsets),
        clocks=clock_values(now.clocks + ns.offsets),
        host_clocks=clock_values(now.clocks),
        realtime_ns=now.realtime_ns,
    )
