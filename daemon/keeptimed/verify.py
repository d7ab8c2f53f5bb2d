"""Verify a restore: does every process of the restored tree read clocks at
or above the dumped ones?

The tree is read as a checkpoint reads it (walked first, clocks last, per
time namespace). Each restored namespace is held to the dumped values of the
namespace its processes were in at dump (CRIU restores the same pids); one
without a match, and the root's, to the dumped root values.
"""
from typing import Optional

from keeptime.timefmt import format_ns
from keeptime.v1 import keeptime_pb2 as pb

from . import checkpoint, pidns
from .errors import NotFound, PermissionDenied
from .hostclock import HostClock
from .policies import Clocks
from .wire import clock_values


def restored_tree(target: pidns.Target, host: HostClock, view: pidns.View) -> checkpoint.Tree:
    """The restored tree rooted at target as a checkpoint sees it (its pids
    as view shows them, time namespaces and their clocks now)."""
    try:
        return checkpoint.checkpoint(target, host, view=view)
    except PermissionError:
        raise PermissionDenied(f"cannot read the time namespaces of the tree of pid {target.pid}") from None
    except NotFound:
        raise NotFound(f"no process with pid {target.pid} (or it exited while being verified)") from None


SHOWN_NAMESPACES = 8   # regressed namespaces a verdict's message names


def verify(tree: pb.Record, record_id: str, dumped: Clocks, dumped_record: Optional[pb.Record] = None
           ) -> pb.RestoreEvent:
    """A restore event (without id, policy or stage) for the restored tree.

    dumped is what the root's namespace must not read below; dumped_record,
    when given, supplies the values for namespaces other than the root's.
    The event carries the root namespace's clocks, or those of the namespace
    that regressed furthest."""
    verdicts = []   # (namespace, the dumped values it is held to, how far above them it reads)
    for ns in tree.namespaces:
        expected = _dumped_for(ns, tree, dumped, dumped_record)
        verdicts.append((ns, expected, Clocks(ns.clocks.monotonic_ns, ns.clocks.boottime_ns) - expected))
    regressed = [v for v in verdicts if _lowest(v[2]) < 0]
    if regressed:
        shown, expected, _ = min(regressed, key=lambda v: _lowest(v[2]))
        named = [_regression(ns, above, tree) for ns, _, above in regressed[:SHOWN_NAMESPACES]]
        if len(regressed) > SHOWN_NAMESPACES:   # the message is stored: bounded, however large the tree
            named.append(f"and {len(regressed) - SHOWN_NAMESPACES} more time namespaces")
        message = "clocks regressed: " + "; ".join(named)
    else:
        shown, expected, above = next(v for v in verdicts if v[0].inode == tree.root_timens_inode)
        message = (f"clocks continue: MONOTONIC {format_ns(above.monotonic_ns)} and BOOTTIME "
                   f"{format_ns(above.boottime_ns)} above the dumped values{_extent(tree)}")
    return pb.RestoreEvent(
        record_id=record_id,
        pid=tree.root_pid,
        ok=not regressed,
        dumped=clock_values(expected),
        clocks=shown.clocks,
        offsets=shown.offsets,
        timens_inode=shown.inode,
        realtime_ns=tree.realtime_ns,
        message=message,
    )


def _lowest(above: Clocks) -> int:
    return min(above.monotonic_ns, above.boottime_ns)


def _dumped_for(ns: pb.TimeNamespace, tree: pb.Record, dumped: Clocks,
                dumped_record: Optional[pb.Record]) -> Clocks:
    """The dumped values a restored namespace must not read below."""
    if ns.inode == tree.root_timens_inode or dumped_record is None:
        return dumped
    pids = set(ns.pids)
    for before in dumped_record.namespaces:
        if before.inode != dumped_record.root_timens_inode and pids.intersection(before.pids):
            return Clocks(before.clocks.monotonic_ns, before.clocks.boottime_ns)
    return dumped


def _regression(ns: pb.TimeNamespace, above: Clocks, tree: pb.Record) -> str:
    behind = [f"{name} is {format_ns(-delta)} below the dumped value"
              for name, delta in (("MONOTONIC", above.monotonic_ns), ("BOOTTIME", above.boottime_ns)) if delta < 0]
    where = "" if len(tree.namespaces) == 1 else f" in time namespace {ns.inode} (pids {_pids(ns)})"
    return ", ".join(behind) + where


def _pids(ns: pb.TimeNamespace, shown: int = 5) -> str:
    listed = ", ".join(str(pid) for pid in ns.pids[:shown])
    return listed + (f" and {len(ns.pids) - shown} more" if len(ns.pids) > shown else "")


def _extent(tree: pb.Record) -> str:
    if len(tree.processes) == 1:
        return ""
    spaces = len(tree.namespaces)
    return f" ({len(tree.processes)} processes in {spaces} time namespace{'s' if spaces > 1 else ''})"
