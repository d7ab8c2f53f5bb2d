"""keeptimed's open-file limit: it raises its own soft limit to the hard one
(every restored process it tracks costs it a pidfd), restored programs keep
the limit keeptimed was started with, and when descriptors do run out a
restore fails with RESOURCE_EXHAUSTED, leaving no zombie and no process that
keeptimed does not track."""
import os
import signal
import time

import pytest

from helpers.daemon import RunningDaemon
from helpers.procstat import zombie_children
from keeptime import errors
from keeptimed import native

pytestmark = pytest.mark.root


def nofile_limits(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return int(soft), int(hard)
    raise AssertionError(f"no open-file limit in /proc/{pid}/limits")


def children_of(pid: int) -> set[int]:
    """Every child of pid, whichever of its threads started it."""
    found = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            found.update(int(child) for child in f.read().split())
    return found


def test_keeptimed_raises_its_own_limit_and_restored_programs_keep_the_old_one(tmp_path, root_sleeper):
    daemon = RunningDaemon(tmp_path, command_prefix=["prlimit", "--nofile=256:4096", "--"]).start()
    try:
        assert nofile_limits(daemon.proc.pid) == (4096, 4096)
        with daemon.client() as client:
            record_id = client.checkpoint(root_sleeper)
            restored = client.restore(record_id, ["sleep", "30"])
            try:
                assert nofile_limits(restored.pid) == (256, 4096)
                executed = client.exec(restored.pid, ["sleep", "30"])
                assert nofile_limits(executed.pid) == (256, 4096)
            finally:
                os.kill(restored.pid, signal.SIGKILL)
                os.kill(executed.pid, signal.SIGKILL)
                assert client.wait(restored.pid, timeout=30) == 128 + signal.SIGKILL
                assert client.wait(executed.pid, timeout=30) == 128 + signal.SIGKILL
    finally:
        assert daemon.stop() == 0, daemon.log()


def test_out_of_descriptors_a_restore_fails_cleanly_and_leaves_nothing_behind(tmp_path, root_sleeper):
    # soft == hard: nothing to raise, so 320 descriptors it is.
    daemon = RunningDaemon(tmp_path, command_prefix=["prlimit", "--nofile=320:320", "--"]).start()
    pid = daemon.proc.pid
    running = []
    try:
        with daemon.client() as client:
            record_id = client.checkpoint(root_sleeper)
            with pytest.raises(errors.ResourceExhausted) as caught:
                for _ in range(400):   # each running one holds a pidfd in keeptimed
                    running.append(client.restore(record_id, ["sleep", "600"]).pid)
            assert "\n" not in str(caught.value)
            assert len(running) > 100, "keeptimed ran out of descriptors far too early"
            # The one that could not be tracked was killed and reaped; the others run on.
            time.sleep(0.5)
            assert zombie_children(pid) == []
            assert children_of(pid) - {native_helper_pid(pid)} == set(running)
            for child in running:
                os.kill(child, signal.SIGKILL)
            for child in running:
                assert client.wait(child, timeout=30) == 128 + signal.SIGKILL
            running.clear()
            # Descriptors are back: restores work again.
            assert client.wait(client.restore(record_id, ["/bin/true"]).pid, timeout=30) == 0
        assert daemon.health() == "SERVING"
    finally:
        for child in running:
            os.kill(child, signal.SIGKILL)
        assert daemon.stop() == 0, daemon.log()
    assert "Traceback" not in daemon.log()


def native_helper_pid(daemon_pid: int) -> int:
    """keeptime-helper among the daemon's children (by its executable's name)."""
    for child in children_of(daemon_pid):
        if os.path.basename(os.readlink(f"/proc/{child}/exe")) == os.path.basename(native.HELPER_PATH):
            return child
    return 0
