"""Restored trees outlive keeptimed: stopping or killing the daemon leaves
them running in their time namespaces, and a restarted daemon still answers
Clocks and Exec for them."""
import os
import select
import signal
import time

import psutil
import pytest

from helpers.probes import read_probe
from keeptime import errors

pytestmark = pytest.mark.root


def helper_children(pid: int) -> list[int]:
    """keeptime-helper processes whose parent is pid."""
    return [kid.pid for kid in psutil.Process(pid).children() if kid.name() == "keeptime-helper"]


def gone_within(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(os.path.exists(f"/proc/{pid}") for pid in pids):
            return True
        time.sleep(0.05)
    return False


def is_running(pidfd: int) -> bool:
    """A pidfd turns readable when its process exits."""
    readable, _, _ = select.select([pidfd], [], [], 0)
    return not readable


def host_clocks() -> tuple[int, int]:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC), time.clock_gettime_ns(time.CLOCK_BOOTTIME)


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_restored_process_outlives_the_daemon_and_stays_reachable(
        fresh_daemon, far_process, clockprobe, tmp_path, stop_signal):
    inside, _ = far_process
    with fresh_daemon.client() as client:
        record = client.checkpoint_record(inside)
        restored = client.restore(record.id, [clockprobe, "600"], policy="freeze", stdout=str(tmp_path / "restored"))
        before = client.clocks(restored.pid)
    read_probe(str(tmp_path / "restored"))   # it runs, and has read its clocks
    pidfd = os.pidfd_open(restored.pid)
    try:
        helpers = helper_children(fresh_daemon.proc.pid)
        assert helpers, "keeptimed has no keeptime-helper after a restore"
        status = fresh_daemon.stop(stop_signal)
        assert status == (0 if stop_signal == signal.SIGTERM else -signal.SIGKILL), fresh_daemon.log()
        # The daemon's own helper goes with it; the restored process stays.
        assert gone_within(helpers, timeout=10), "keeptime-helper outlived keeptimed"
        assert is_running(pidfd)

        fresh_daemon.start()
        with fresh_daemon.client() as client:
            after = client.clocks(restored.pid)
            assert after.timens_inode == before.timens_inode == restored.timens_inode
            assert after.offsets == before.offsets
            assert not after.host_namespace

            host_from = host_clocks()
            execed = client.exec(restored.pid, [clockprobe], stdout=str(tmp_path / "execed"))
            assert client.wait(execed.pid, timeout=30) == 0
            host_to = host_clocks()
            assert execed.timens_inode == before.timens_inode
            assert (execed.monotonic_offset_ns, execed.boottime_offset_ns) == (
                before.offsets.monotonic_ns, before.offsets.boottime_ns)
            # The exec'd program reads host clock + the restored namespace's offsets.
            mono, boot = read_probe(str(tmp_path / "execed"))
            assert host_from[0] + before.offsets.monotonic_ns <= mono <= host_to[0] + before.offsets.monotonic_ns
            assert host_from[1] + before.offsets.boottime_ns <= boot <= host_to[1] + before.offsets.boottime_ns

            # The new daemon did not start it and cannot reap it: a clear NOT_FOUND, at once.
            with pytest.raises(errors.NotFound, match=f"pid {restored.pid} was not started by this keeptimed"):
                client.wait(restored.pid, timeout=30)
        assert is_running(pidfd)
    finally:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        os.close(pidfd)
    assert fresh_daemon.stop() == 0
