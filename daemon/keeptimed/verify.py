"""Verify a restore: does the restored tree read clocks at or above the dumped ones?

The tree's clocks are its namespace's offsets plus the host clocks now, read
the same way as a checkpoint reads them.
"""
from keeptime.timefmt import format_ns
from keeptime.v1 import keeptime_pb2 as pb

from . import checkpoint
from .errors import PermissionDenied
from .hostclock import HostClock
from .policies import Clocks


def verify(pid: int, record_id: str, dumped: Clocks, host: HostClock) -> pb.RestoreEvent:
    """A restore event (without id, policy or stage) for the restored root pid."""
    try:
        seen = checkpoint.clocks_of(pid, host)
    except PermissionError:
        raise PermissionDenied(f"cannot read the time namespace of pid {pid}") from None
    above = Clocks(seen.clocks.monotonic_ns, seen.clocks.boottime_ns) - dumped
    regressed = [(name, -delta) for name, delta in (("MONOTONIC", above.monotonic_ns), ("BOOTTIME", above.boottime_ns))
                 if delta < 0]
    if regressed:
        message = "clocks regressed: " + ", ".join(
            f"{name} is {format_ns(behind)} below the dumped value" for name, behind in regressed
        )
    else:
        message = (f"clocks continue: MONOTONIC {format_ns(above.monotonic_ns)} and BOOTTIME "
                   f"{format_ns(above.boottime_ns)} above the dumped values")
    return pb.RestoreEvent(
        record_id=record_id,
        pid=pid,
        ok=not regressed,
        dumped=pb.ClockValues(monotonic_ns=dumped.monotonic_ns, boottime_ns=dumped.boottime_ns),
        clocks=seen.clocks,
        offsets=seen.offsets,
        timens_inode=seen.timens_inode,
        realtime_ns=seen.realtime_ns,
        message=message,
    )
