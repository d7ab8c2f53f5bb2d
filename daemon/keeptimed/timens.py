"""Time namespaces of live processes: which one a process is in and its offsets."""
import os
import time
from dataclasses import dataclass

from . import native, procfs
from .policies import Clocks


@dataclass(frozen=True)
class Namespace:
    inode: int
    offsets: Clocks


def namespace_of(pid: int) -> Namespace:
    """The time namespace pid is in, with its offsets.

    /proc/PID/timens_offsets describes the namespace pid's children are born
    in. For a process that unshared a time namespace without entering it that
    is not its own, so then the offsets are read from inside pid's namespace
    by a short-lived child that joins it.
    """
    inode = procfs.timens_inode(pid)
    if procfs.timens_inode(pid, for_children=True) == inode:
        text = procfs.read_timens_offsets_file(pid)
        if procfs.timens_inode(pid) != inode:  # pid exited and was reused meanwhile
            raise ProcessLookupError(f"pid {pid} changed while reading its namespace")
        return Namespace(inode, procfs.parse_timens_offsets(text))
    pidfd = os.pidfd_open(pid)
    try:
        return Namespace(inode, procfs.parse_timens_offsets(native.read_timens_offsets(pidfd)))
    finally:
        os.close(pidfd)


def read_clock_pair() -> tuple[Clocks, int]:
    """This process's CLOCK_MONOTONIC/CLOCK_BOOTTIME, then CLOCK_REALTIME, back to back."""
    mono = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    boot = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    real = time.clock_gettime_ns(time.CLOCK_REALTIME)
    return Clocks(mono, boot), real
