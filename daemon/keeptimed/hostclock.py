"""The host's clocks as the kernel sees them, wherever keeptimed itself runs.

Time namespace offsets are absolute against the host (root namespace) clock.
keeptimed may itself run inside a time namespace (a container), so its own
clock reads are corrected by its own namespace's offsets.
"""
import os
import socket

from . import procfs, timens
from .policies import Clocks, HostNow


class HostClock:
    """Reads host clocks; own-namespace offsets and boot_id are read once."""

    def __init__(self) -> None:
        own = timens.namespace_of(os.getpid())
        self.own_timens_inode = own.inode
        self.own_offsets = own.offsets
        self.boot_id = procfs.boot_id()

    def now(self) -> HostNow:
        """Host CLOCK_MONOTONIC, CLOCK_BOOTTIME and CLOCK_REALTIME, read together."""
        clocks, realtime = timens.read_clock_pair()
        return HostNow(clocks - self.own_offsets, realtime, self.boot_id, socket.gethostname())
