"""The native module on the real kernel: namespaces, offsets, exec, errors."""
import errno
import os
import pathlib
import shutil
import tempfile
import threading
import time

import pytest

from helpers.probes import read_probe
from keeptimed import native, procfs
from keeptimed.policies import Clocks

pytestmark = pytest.mark.root

DAY = 86_400 * 10**9
NO_OFFSETS = Clocks(0, 0)


def host_clocks() -> Clocks:
    return Clocks(time.clock_gettime_ns(time.CLOCK_MONOTONIC), time.clock_gettime_ns(time.CLOCK_BOOTTIME))


def spec(argv, **kw) -> native.ExecSpec:
    return native.ExecSpec(exec_paths=[argv[0]], argv=argv, env=[], **kw)


def reap(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_new_namespace_reads_the_targets_to_the_nanosecond(clockprobe, tmp_path):
    out = str(tmp_path / "probe.txt")
    targets = host_clocks() + Clocks(3 * DAY + 123_456_789, 4 * DAY + 987_654_321)
    started = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    spawned = native.spawn_in_new_timens(spec([clockprobe], stdout_path=out), targets, NO_OFFSETS)
    assert reap(spawned.pid) == 0
    mono, boot = read_probe(out)
    # The probe's own reading, mapped back to the host clock, bounds the latency.
    latency = (mono - spawned.offsets.monotonic_ns) - started
    assert 0 <= mono - targets.monotonic_ns <= latency
    assert 0 <= boot - targets.boottime_ns <= latency + 10**6
    assert spawned.mechanism == "unshare_proc_offsets"


def test_offsets_written_equal_what_the_kernel_shows(tmp_path):
    out = str(tmp_path / "offsets.txt")
    targets = host_clocks() + Clocks(-1_500_000_001, 7)  # negative with a nanosecond carry
    spawned = native.spawn_in_new_timens(
        spec(["/bin/cat", "/proc/self/timens_offsets"], stdout_path=out), targets, NO_OFFSETS)
    assert reap(spawned.pid) == 0
    with open(out) as f:
        assert procfs.parse_timens_offsets(f.read()) == spawned.offsets
    assert -1_500_000_001 - 10**9 < spawned.offsets.monotonic_ns < -1_500_000_001


def test_the_restored_process_is_the_callers_child_in_its_own_namespace(tmp_path):
    spawned = native.spawn_in_new_timens(spec(["/bin/sleep", "5"]), host_clocks(), NO_OFFSETS)
    try:
        assert procfs.read_stat(spawned.pid).ppid == os.getpid()  # CLONE_PARENT
        assert procfs.timens_inode(spawned.pid) == spawned.timens_inode != procfs.timens_inode(os.getpid())
        assert procfs.timens_inode(os.getpid(), for_children=True) == procfs.timens_inode(os.getpid())
    finally:
        os.kill(spawned.pid, 9)
        reap(spawned.pid)


def test_offset_abi_is_detected_once_and_cached():
    spawned = native.spawn_in_new_timens(spec(["/bin/true"]), host_clocks(), NO_OFFSETS)
    reap(spawned.pid)
    # No released kernel carries the seed's clone3 fields: E2BIG, then the fallback.
    assert native.offset_abi_supported() is False
    assert spawned.mechanism == "unshare_proc_offsets"


def test_the_program_gets_a_clean_process_state(tmp_path):
    out = str(tmp_path / "status.txt")
    leaked_r, leaked_w = os.pipe()  # inheritable on purpose: must still not leak
    os.set_inheritable(leaked_r, True)
    try:
        script = "ls /proc/self/fd; grep -E '^(SigBlk|SigIgn)' /proc/self/status; umask; pwd; env"
        spawned = native.spawn_in_new_timens(
            spec(["/bin/sh", "-c", script], stdout_path=out, cwd="/tmp", umask=0o027),
            host_clocks(), NO_OFFSETS)
        assert reap(spawned.pid) == 0
    finally:
        os.close(leaked_r)
        os.close(leaked_w)
    lines = open(out).read().split()
    fds = sorted(int(x) for x in lines[: lines.index("SigBlk:")])
    assert fds == [0, 1, 2, 3]  # 3 is ls's own directory fd
    assert lines[lines.index("SigBlk:") + 1] == "0000000000000000"
    assert lines[lines.index("SigIgn:") + 1] == "0000000000000000"  # Python ignores SIGPIPE; the child must not
    assert "0027" in lines and "/tmp" in lines
    assert not any(line.startswith("PATH=") for line in lines)  # nothing inherited


def test_privileges_are_dropped_before_exec():
    shared = tempfile.mkdtemp(prefix="keeptime-test-")  # pytest's tmp_path is root-only
    os.chmod(shared, 0o777)
    out = pathlib.Path(shared) / "ids.txt"
    spawned = native.spawn_in_new_timens(
        spec(["/usr/bin/id"], stdout_path=str(out), uid=65534, gid=65534, groups=[65534]),
        host_clocks(), NO_OFFSETS)
    assert reap(spawned.pid) == 0
    assert out.read_text().startswith("uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)")
    assert out.stat().st_uid == 65534  # stdout opened after the drop
    shutil.rmtree(shared)


@pytest.mark.parametrize("paths, err", [
    (["/nonexistent/prog"], errno.ENOENT),
    (["/etc/passwd"], errno.EACCES),
    ([], errno.ENOENT),
])
def test_exec_failure_is_reported_and_nothing_is_left_behind(paths, err):
    def children():
        return sorted(set(procfs.children(os.getpid())) - {native.helper_pid()})

    before = children()
    with pytest.raises(native.NativeError) as raised:
        native.spawn_in_new_timens(
            native.ExecSpec(exec_paths=paths, argv=["prog"], env=[]), host_clocks(), NO_OFFSETS)
    assert (raised.value.errno, raised.value.step) == (err, "execve")
    assert children() == before  # the failed child was reaped


def test_candidates_are_tried_like_execvp():
    spawned = native.spawn_in_new_timens(
        native.ExecSpec(exec_paths=["/nonexistent/true", "/etc/passwd", "/bin/true"], argv=["true"], env=[]),
        host_clocks(), NO_OFFSETS)
    assert reap(spawned.pid) == 0


def test_targets_the_kernel_refuses_are_erange():
    with pytest.raises(native.NativeError) as raised:
        native.spawn_in_new_timens(spec(["/bin/true"]), Clocks(-DAY, 0), NO_OFFSETS)
    assert (raised.value.errno, raised.value.step) == (errno.ERANGE, "write /proc/self/timens_offsets")


def test_join_mode_enters_the_target_namespace(far_process, tmp_path):
    inside, _ = far_process
    out = str(tmp_path / "offsets.txt")
    pidfd = os.pidfd_open(inside)
    try:
        spawned = native.spawn_in_timens_of(spec(["/bin/cat", "/proc/self/timens_offsets"], stdout_path=out), pidfd)
    finally:
        os.close(pidfd)
    assert spawned.mechanism == "setns"
    assert reap(spawned.pid) == 0
    assert procfs.parse_timens_offsets(open(out).read()) == Clocks(10 * DAY, 10 * DAY)


def test_offsets_of_a_namespace_read_from_inside(far_process):
    inside, unshare_parent = far_process
    # util-linux unshare itself stays in the host namespace; only its child is inside.
    pidfd = os.pidfd_open(unshare_parent)
    try:
        assert procfs.parse_timens_offsets(native.read_timens_offsets(pidfd)) == NO_OFFSETS
    finally:
        os.close(pidfd)
    assert procfs.parse_timens_offsets(procfs.read_timens_offsets_file(unshare_parent)) == Clocks(10 * DAY, 10 * DAY)


def test_concurrent_spawns_from_many_threads(tmp_path):
    """The daemon calls in from many threads at once: every spawn must work
    and report its own result (no crossed pipes, no stolen children)."""
    results, failures = [], []

    def worker(n: int) -> None:
        try:
            for i in range(10):
                out = str(tmp_path / f"{n}-{i}.txt")
                target = host_clocks() + Clocks(n * DAY, n * DAY)
                s = native.spawn_in_new_timens(
                    spec(["/bin/cat", "/proc/self/timens_offsets"], stdout_path=out), target, NO_OFFSETS)
                results.append((n, out, s, reap(s.pid)))
        except Exception as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(1, 9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    assert len(results) == 80
    for n, out, spawned, status in results:
        assert status == 0
        shown = procfs.parse_timens_offsets(open(out).read())
        assert shown == spawned.offsets
        assert n * DAY - 10**9 < shown.monotonic_ns <= n * DAY


def test_a_dead_helper_is_replaced_transparently(tmp_path):
    spawned = native.spawn_in_new_timens(spec(["/bin/true"]), host_clocks(), NO_OFFSETS)
    reap(spawned.pid)
    old = native.helper_pid()
    os.kill(old, 9)
    time.sleep(0.05)
    spawned = native.spawn_in_new_timens(spec(["/bin/true"]), host_clocks(), NO_OFFSETS)
    assert reap(spawned.pid) == 0
    assert native.helper_pid() not in (0, old)
    assert procfs.read_stat(native.helper_pid()).ppid == os.getpid()


def test_the_helper_is_small_and_single_threaded():
    native.spawn_in_new_timens(spec(["/bin/true"]), host_clocks(), NO_OFFSETS)
    status = open(f"/proc/{native.helper_pid()}/status").read()
    fields = dict(line.split(":", 1) for line in status.splitlines())
    assert int(fields["Threads"]) == 1
    assert int(fields["VmRSS"].split()[0]) < 4096  # kB: copying it per restore is cheap
    assert fields["SigIgn"].strip() == "0000000000000000"
    assert sorted(os.listdir(f"/proc/{native.helper_pid()}/fd")) == ["0", "1", "2", "3", "4", "5"]  # + own time and pid ns fds
