"""keeptimed's open-file limit: raised for itself, not for what it starts.

Every restored process keeptimed tracks holds one pidfd in the daemon, and
every client connection four descriptors, so the usual soft limit of 1024
would cap a node at a few hundred restored trees. keeptimed raises its own
soft limit to the hard one at start, and gives keeptime-helper (whose clones
become the restored processes) the limit keeptimed was started with, so
restored programs see the limit they would have seen anyway.

The top quarter of the descriptors is root's: callers other than root start
no process once only that quarter is left (check_user_headroom), so however
many processes they keep running, root's restores still get their pidfds.
"""
import logging
import os
import resource
from typing import Optional

from .limits import LimitExceeded

log = logging.getLogger("keeptimed")

_started_with: Optional[tuple[int, int]] = None


def raise_own_limit() -> None:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit, remembering the
    limit keeptimed was started with for the programs it starts."""
    global _started_with
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    _started_with = (soft, hard)
    if hard == resource.RLIM_INFINITY:   # the kernel caps it at fs.nr_open anyway
        with open("/proc/sys/fs/nr_open") as f:
            hard = int(f.read())
    if soft != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, _started_with[1]))
        log.info("open-file limit raised from %d to %d; programs keeptimed starts keep %d", soft, hard, soft)


def for_started_programs() -> Optional[tuple[int, int]]:
    """The RLIMIT_NOFILE programs keeptimed starts get: the one it was started
    with (None when raise_own_limit() was never called: nothing to restore)."""
    return _started_with


ROOT_SHARE = 4   # 1/ROOT_SHARE of the open-file limit is kept for root's restores


def check_user_headroom() -> None:
    """LimitExceeded (root_descriptors) when the descriptors still free are
    only the top quarter of keeptimed's open-file limit, kept for root.

    Open descriptors are counted, not inferred from the lowest free one:
    a restore opens a few for a moment before the pidfd it keeps, so the
    table has holes well below its highest descriptor in use."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return
    roots = soft // ROOT_SHARE
    in_use = len(os.listdir("/proc/self/fd")) - 1   # less the one listdir held
    if in_use >= soft - roots:
        raise LimitExceeded("root_descriptors", f"keeptimed has at most {soft - in_use} of its {soft} "
                                                f"descriptors free, and keeps the last {roots} for root: no "
                                                "process is started for other callers until some are released")
