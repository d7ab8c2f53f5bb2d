"""Children: tracking started processes through pidfds, and what happens to
one that cannot be tracked because no descriptor is left for its pidfd."""
import os
import resource
import signal
import subprocess
import sys

import pytest

from keeptimed.children import Children
from keeptimed.errors import ResourceExhausted


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


def test_a_child_that_cannot_be_tracked_is_killed_and_reaped_not_left_a_zombie():
    children = Children()
    pid = start_sleep()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    filler = []
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 8, hard))
        with pytest.raises(OSError):
            while True:   # every descriptor taken: pidfd_open must fail
                filler.append(os.open("/dev/null", os.O_RDONLY))
        with pytest.raises(ResourceExhausted, match=f"cannot track pid {pid}.*killed"):
            children.adopt(pid)
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        children.close()
    with pytest.raises(ChildProcessError):   # already reaped
        os.waitpid(pid, os.WNOHANG)
    assert children.running() == []



UNTRACKED_WITHOUT_CAP_KILL = r"""
import os, resource, subprocess, sys, time
from keeptimed.children import Children
from keeptimed.errors import ResourceExhausted
children = Children()
pid = os.posix_spawn("/usr/bin/setpriv", ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                          "sleep", "60"], {})
time.sleep(0.3)   # setpriv has become nobody's sleep
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 8, hard))
filler = []
try:
    while True:
        filler.append(os.open("/dev/null", os.O_RDONLY))
except OSError:
    pass
try:
    children.adopt(pid)
except ResourceExhausted as exc:
    print(exc, flush=True)
for fd in filler:
    os.close(fd)
print(pid, flush=True)
sys.stdin.readline()   # the test killed it: it must be reaped, not a zombie
for _ in range(100):
    if not os.path.exists(f"/proc/{pid}"):
        print("reaped", flush=True)
        break
    time.sleep(0.05)
"""


@pytest.mark.root
def test_a_child_keeptimed_may_not_kill_runs_on_and_is_reaped_when_it_ends():
    # Root without CAP_KILL (as in the DaemonSet) cannot kill another user's process.
    proc = subprocess.Popen(
        ["setpriv", "--bounding-set=-kill", "--inh-caps=-kill", sys.executable, "-c", UNTRACKED_WITHOUT_CAP_KILL],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        message = proc.stdout.readline()
        assert "runs on untracked (killing it needs CAP_KILL)" in message
        pid = int(proc.stdout.readline())
        assert _state(pid) == "S"   # still running
        os.kill(pid, signal.SIGKILL)
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "reaped"
    finally:
        proc.kill()
        proc.wait()


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
