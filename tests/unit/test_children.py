"""Children: tracking started processes through pidfds, what happens to one
whose pidfd cannot be opened because no descriptor is left, and the count of
processes running per uid."""
import os
import resource
import signal

import pytest

from keeptimed.children import Children
from keeptimed.limits import LimitExceeded


def start_sleep() -> int:
    return os.posix_spawn("/bin/sleep", ["sleep", "60"], {})


def test_an_adopted_child_is_reaped_and_its_status_kept():
    children = Children()
    try:
        pid = start_sleep()
        children.adopt(pid, owner_uid=1000)
        assert children.running() == [pid] and children.owner_of(pid) == 1000
        os.kill(pid, signal.SIGTERM)
        status = children.wait(pid, timeout=10)
        assert (status.signal, status.shell_status) == (signal.SIGTERM, 128 + signal.SIGTERM)
        assert children.running() == []
    finally:
        children.close()


def test_a_child_whose_pidfd_cannot_be_opened_is_still_tracked_and_reaped_never_killed():
    """The program runs, so its caller must get its pid: without a descriptor
    for its pidfd a thread of its own reaps it, and wait() still reports it."""
    children = Children()
    pid = start_sleep()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    filler = []
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 8, hard))
        with pytest.raises(OSError):
            while True:   # every descriptor taken: pidfd_open must fail
                filler.append(os.open("/dev/null", os.O_RDONLY))
        children.adopt(pid, owner_uid=1000)
        for fd in filler:
            os.close(fd)
        filler.clear()
        # Still alive: running (on a busy machine sleep may not have reached its sleep yet) or sleeping.
        assert _state(pid) in ("R", "S") and children.running() == [pid] and children.live(1000) == 1
        os.kill(pid, signal.SIGTERM)
        assert children.wait(pid, timeout=10).signal == signal.SIGTERM
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        children.close()
    with pytest.raises(ChildProcessError):   # already reaped
        os.waitpid(pid, os.WNOHANG)
    assert children.running() == [] and children.live(1000) == 0


def test_processes_started_for_a_uid_are_limited_while_they_run():
    children = Children()
    try:
        first = start_sleep()
        with children.starting(1000, limit=2):
            children.adopt(first, owner_uid=1000)
        with children.starting(1000, limit=2):
            with pytest.raises(LimitExceeded, match="uid 1000 already has 2 processes .* user_processes"):
                with children.starting(1000, limit=2):   # one running, one being started
                    pass
        with children.starting(2000, limit=2):   # another uid has its own count
            pass
        with children.starting(0, limit=None):
            pass
        os.kill(first, signal.SIGKILL)
        children.wait(first, timeout=10)
        assert children.live(1000) == 0
        with children.starting(1000, limit=1):
            pass
    finally:
        children.close()


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def test_a_child_started_for_another_pid_namespace_is_found_by_its_name_there_until_forgotten():
    children = Children(keep_statuses=1)
    try:
        first, second = start_sleep(), start_sleep()
        children.adopt(first, alias=("namespace", 2))
        assert children.started_as(("namespace", 2)) == first and children.started_as(("namespace", 3)) is None
        children.adopt(second, alias=("namespace", 2))   # pid 2 over there was reused
        assert children.started_as(("namespace", 2)) == second
        for pid in (first, second):
            os.kill(pid, signal.SIGKILL)
            children.wait(pid, timeout=10)
        # One status kept: the first process is forgotten, the second still known by its alias.
        assert children.started_as(("namespace", 2)) == second
    finally:
        children.close()
