"""Children: tracking started processes through pidfds, what happens to one
whose pidfd cannot be opened because no descriptor is left, and the count of
processes running per uid."""
import concurrent.futures
import os
import resource
import signal
import time

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
    # Opened before descriptors run out: gRPC's C threads, left by earlier
    # tests in this process, may take the ones freed below at any moment.
    stat = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
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
        assert _state_of(stat) in ("R", "S") and children.running() == [pid] and children.live(1000) == 1
        os.kill(pid, signal.SIGTERM)
        assert children.wait(pid, timeout=10).signal == signal.SIGTERM
    finally:
        for fd in filler:
            os.close(fd)
        os.close(stat)
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


def _state_of(stat_fd: int) -> str:
    """The process state letter from an open /proc/PID/stat."""
    return os.pread(stat_fd, 4096, 0).decode().rsplit(")", 1)[1].split()[0]


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


def test_blocked_waits_each_get_their_own_process_end_and_close_ends_the_rest():
    """Waits blocked on different processes, and two on the same one, each
    return the status of the process they wait for as it ends; close() ends
    the waits still blocked, which then return None."""
    children = Children()
    pids = [start_sleep() for _ in range(3)]
    closed = False
    try:
        for pid in pids:
            children.adopt(pid)
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            waits = [pool.submit(children.wait, pid, 30) for pid in (pids[0], pids[0], pids[1], pids[2])]
            time.sleep(0.2)   # all four blocked
            os.kill(pids[1], signal.SIGTERM)
            assert waits[2].result(10).signal == signal.SIGTERM
            assert not any(wait.done() for wait in (waits[0], waits[1], waits[3]))
            os.kill(pids[0], signal.SIGKILL)
            assert [waits[0].result(10).signal, waits[1].result(10).signal] == [signal.SIGKILL] * 2
            assert not waits[3].done()
            children.close()
            closed = True
            assert waits[3].result(10) is None
            assert children.wait(pids[2], timeout=0) is None
    finally:
        os.kill(pids[2], signal.SIGKILL)
        os.waitpid(pids[2], 0)
        if not closed:
            children.close()
