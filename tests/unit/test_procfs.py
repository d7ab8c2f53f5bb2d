import os
import subprocess

import pytest

from keeptimed import procfs
from keeptimed.policies import Clocks


def test_parse_timens_offsets_by_name_and_number_with_negative_values():
    text = "monotonic         -27 155598798\nboottime           864000 0\n"
    assert procfs.parse_timens_offsets(text) == Clocks(-27 * 10**9 + 155_598_798, 864_000 * 10**9)
    assert procfs.parse_timens_offsets("1 5 1\n7 0 2\n") == Clocks(5_000_000_001, 2)


@pytest.mark.parametrize("bad", ["realtime 1 0", "monotonic 1", "monotonic 1 1000000000", "monotonic x 0"])
def test_parse_timens_offsets_rejects_garbage(bad):
    with pytest.raises(ValueError):
        procfs.parse_timens_offsets(bad)


def test_read_stat_handles_odd_comm_and_reports_identity(tmp_path):
    script = tmp_path / "we ird) (name"
    script.write_text("#!/bin/sh\nsleep 30\n")
    script.chmod(0o755)
    proc = subprocess.Popen([str(script)])
    try:
        for _ in range(100):
            stat = procfs.read_stat(proc.pid)
            if stat.comm != "python" and "ird" in stat.comm:
                break
        assert stat.comm == "we ird) (name"[:15]
        assert stat.ppid == os.getpid()
        assert stat.start_time_ticks > 0 and not stat.is_kernel_thread
    finally:
        proc.kill()
        proc.wait()


def test_gone_processes_raise_process_lookup_error():
    proc = subprocess.Popen(["true"])
    proc.wait()
    with pytest.raises(ProcessLookupError):
        procfs.read_stat(proc.pid)
    with pytest.raises(ProcessLookupError):
        procfs.timens_inode(proc.pid)


def test_children_lists_direct_children():
    proc = subprocess.Popen(["sleep", "30"])
    try:
        assert proc.pid in procfs.children(os.getpid())
    finally:
        proc.kill()
        proc.wait()


def test_kernel_thread_is_recognised():
    assert procfs.read_stat(2).is_kernel_thread  # kthreadd
    assert not procfs.read_stat(os.getpid()).is_kernel_thread
