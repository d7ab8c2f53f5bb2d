"""Acceptance: real processes checkpointed and restored through a real
keeptimed over its socket, the restored programs reading their own clocks."""
import os
import time

import grpc
import pytest

from helpers.probes import read_probe
from keeptime import errors
from keeptime.v1 import keeptime_pb2 as pb
from keeptime.v1 import keeptime_pb2_grpc as pb_grpc
from keeptimed import procfs, recordfile

pytestmark = pytest.mark.root

DAY_NS = 86_400 * 10**9
MS = 10**6


def host_mono() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def restore_probe(client, record_id, probe, out, policy, *args):
    """Restore the clock probe; returns (result, host monotonic before the call)."""
    started = host_mono()
    result = client.restore(record_id, [probe, *args], policy=policy, stdout=str(out))
    return result, started


def test_freeze_continues_a_far_ahead_process_within_50ms(client, far_process, clockprobe, tmp_path):
    inside, _ = far_process
    record = client.checkpoint_record(inside)
    ns = procfs.timens_inode(inside)
    assert record.root_timens_inode == ns
    # The recorded clocks are the process's own view: ten days ahead of the host.
    host_boot = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    assert 10 * DAY_NS - 1000 * MS < record.clocks.boottime_ns - host_boot < 10 * DAY_NS

    time.sleep(0.5)
    result, _ = restore_probe(client, record.id, clockprobe, tmp_path / "p", "freeze")
    assert client.wait(result.pid) == 0
    mono, boot = read_probe(str(tmp_path / "p"))
    assert 0 <= mono - record.clocks.monotonic_ns < 50 * MS
    assert 0 <= boot - record.clocks.boottime_ns < 50 * MS
    assert result.mechanism == "unshare-proc-offsets"
    assert result.plan.policy == pb.POLICY_FREEZE and result.plan.same_boot


def test_suspend_advances_boottime_by_the_downtime_but_not_monotonic(client, far_process, clockprobe, tmp_path):
    inside, _ = far_process
    record = client.checkpoint_record(inside)
    slept_from = host_mono()
    time.sleep(1.5)
    result, _ = restore_probe(client, record.id, clockprobe, tmp_path / "p", "suspend")
    assert client.wait(result.pid) == 0
    mono, boot = read_probe(str(tmp_path / "p"))
    slept = host_mono() - slept_from
    assert boot - record.clocks.boottime_ns >= 1_500 * MS
    assert boot - record.clocks.boottime_ns <= slept + 50 * MS
    assert 0 <= mono - record.clocks.monotonic_ns < 50 * MS


def test_elapsed_advances_both_clocks(client, far_process, clockprobe, tmp_path):
    inside, _ = far_process
    record = client.checkpoint_record(inside)
    time.sleep(0.5)
    result, _ = restore_probe(client, record.id, clockprobe, tmp_path / "p", "elapsed")
    assert client.wait(result.pid) == 0
    mono, boot = read_probe(str(tmp_path / "p"))
    assert mono - record.clocks.monotonic_ns >= 500 * MS
    assert boot - record.clocks.boottime_ns >= 500 * MS


def test_nanosecond_offsets_within_the_measured_exec_latency(client, clockprobe, tmp_path):
    """A record whose clocks end in ...123456789 ns restores exactly there, plus
    no more than the time from the Restore call to the probe's clock read."""
    record = pb.Record(id="5" * 32, root_pid=1, realtime_ns=time.time_ns(), boot_id=procfs.boot_id(),
                       hostname=os.uname().nodename, source="test")
    record.clocks.monotonic_ns = 5 * DAY_NS + 123_456_789
    record.clocks.boottime_ns = 6 * DAY_NS + 987_654_321
    record.host_clocks.boottime_ns = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    client.import_record(recordfile.encode(record))
    try:
        result, started = restore_probe(client, record.id, clockprobe, tmp_path / "p", "freeze")
        assert client.wait(result.pid) == 0
        mono, boot = read_probe(str(tmp_path / "p"))
        probe_read_on_host = mono - result.monotonic_offset_ns
        latency = probe_read_on_host - started
        assert 0 < latency < 1_000 * MS
        assert 0 <= mono - record.clocks.monotonic_ns <= latency
        assert 0 <= boot - record.clocks.boottime_ns <= latency
    finally:
        client.delete(record.id)


def test_exec_joins_the_restored_namespace(client, far_process, clockprobe, tmp_path):
    inside, _ = far_process
    record_id = client.checkpoint(inside)
    restored = client.restore(record_id, ["/bin/sleep", "30"], policy="freeze")
    try:
        restored_offsets = procfs.parse_timens_offsets(procfs.read_timens_offsets_file(restored.pid))
        assert (restored.monotonic_offset_ns, restored.boottime_offset_ns) == (
            restored_offsets.monotonic_ns, restored_offsets.boottime_ns)

        joined = client.exec(restored.pid, ["/bin/cat", "/proc/self/timens_offsets"], stdout=str(tmp_path / "o"))
        assert client.wait(joined.pid) == 0
        assert procfs.parse_timens_offsets((tmp_path / "o").read_text()) == restored_offsets
        assert joined.timens_inode == restored.timens_inode == procfs.timens_inode(restored.pid)
        assert (joined.monotonic_offset_ns, joined.boottime_offset_ns) == (
            restored.monotonic_offset_ns, restored.boottime_offset_ns)

        # A probe exec'd later reads the restored clocks, continuing from the record.
        probe = client.exec(restored.pid, [clockprobe], stdout=str(tmp_path / "p"))
        assert client.wait(probe.pid) == 0
        mono, _ = read_probe(str(tmp_path / "p"))
        clocks = client.clocks(restored.pid)
        assert record_id and mono >= client.get(record_id).clocks.monotonic_ns
        assert clocks.timens_inode == restored.timens_inode and not clocks.host_namespace
    finally:
        os.kill(restored.pid, 9)
        client.wait(restored.pid)


def test_wait_reports_exit_codes_and_signals(client, daemon):
    record_id = client.checkpoint(os.getpid())
    done = client.restore(record_id, ["/bin/sh", "-c", "exit 7"])
    killed = client.restore(record_id, ["/bin/sh", "-c", "kill -TERM $$"])
    assert client.wait_status(done.pid).exit_code == 7 and client.wait(done.pid) == 7
    status = client.wait_status(killed.pid)
    assert (status.signal, status.status) == (15, 143)
    assert daemon.zombies() == []


def test_command_options_env_cwd_stdio(client, tmp_path):
    record_id = client.checkpoint(os.getpid())
    (tmp_path / "in").write_text("from stdin\n")
    result = client.restore(
        record_id, ["sh", "-c", "cat; pwd; echo $GREETING; echo oops >&2"],
        env={"GREETING": "hello", "PATH": "/usr/bin:/bin"}, cwd=str(tmp_path),
        stdin=str(tmp_path / "in"), stdout=str(tmp_path / "out"), stderr=str(tmp_path / "err"),
    )
    assert client.wait(result.pid) == 0
    assert (tmp_path / "out").read_text() == f"from stdin\n{tmp_path}\nhello\n"
    assert (tmp_path / "err").read_text() == "oops\n"


def test_plan_spawns_nothing_and_explains(client, daemon, far_process):
    inside, _ = far_process
    record_id = client.checkpoint(inside)
    before = procfs.children(daemon.proc.pid)
    plan = client.plan(record_id, policy="suspend")
    assert procfs.children(daemon.proc.pid) == before
    assert plan.same_boot and plan.downtime_source == pb.DOWNTIME_SOURCE_SAME_BOOT
    assert plan.targets.monotonic_ns == plan.recorded.monotonic_ns
    assert plan.targets.boottime_ns == plan.recorded.boottime_ns + plan.downtime_ns
    assert plan.offsets.monotonic_ns == plan.targets.monotonic_ns - plan.host_clocks.monotonic_ns
    assert "suspend" in plan.explanation and "same boot" in plan.explanation


def test_a_tree_across_namespaces_is_recorded_per_namespace(client, far_process):
    inside, unshare_parent = far_process
    record = client.checkpoint_record(unshare_parent)
    by_inode = {ns.inode: ns for ns in record.namespaces}
    host_ns = by_inode[record.root_timens_inode]
    far_ns = by_inode[procfs.timens_inode(inside)]
    assert record.root_timens_inode == procfs.INITIAL_TIMENS_INODE
    assert host_ns.pids == [unshare_parent] and far_ns.pids == [inside]
    assert (host_ns.offsets.monotonic_ns, far_ns.offsets.monotonic_ns) == (0, 10 * DAY_NS)
    assert far_ns.clocks.monotonic_ns - host_ns.clocks.monotonic_ns == 10 * DAY_NS
    assert record.clocks == host_ns.clocks  # restore continues the root's namespace
    assert [p.pid for p in record.processes] == [unshare_parent, inside]


# -- errors: the right status, one line, and the daemon keeps serving ---------

def _status_of(call) -> errors.KeeptimeError:
    with pytest.raises(errors.KeeptimeError) as raised:
        call()
    assert "\n" not in raised.value.message
    return raised.value


@pytest.mark.parametrize("call, code, words", [
    (lambda c: c.checkpoint(4_000_000), grpc.StatusCode.NOT_FOUND, "no process with pid 4000000"),
    (lambda c: c.checkpoint(0), grpc.StatusCode.INVALID_ARGUMENT, "positive"),
    (lambda c: c.checkpoint(2), grpc.StatusCode.INVALID_ARGUMENT, "kernel thread"),
    (lambda c: c.plan("0123" * 8), grpc.StatusCode.NOT_FOUND, "no record"),
    (lambda c: c.get("not-an-id"), grpc.StatusCode.INVALID_ARGUMENT, "not a record id"),
    (lambda c: c.restore("0123" * 8, ["/bin/true"]), grpc.StatusCode.NOT_FOUND, "no record"),
    (lambda c: c.restore(c.checkpoint(os.getpid()), []), grpc.StatusCode.INVALID_ARGUMENT, "argv is empty"),
    (lambda c: c.restore(c.checkpoint(os.getpid()), ["/nonexistent/prog"]), grpc.StatusCode.NOT_FOUND,
     "No such file or directory"),
    (lambda c: c.restore(c.checkpoint(os.getpid()), ["no-such-program-anywhere"]), grpc.StatusCode.NOT_FOUND,
     "searched PATH"),
    (lambda c: c.restore(c.checkpoint(os.getpid()), ["/bin/true"], cwd="/nonexistent"),
     grpc.StatusCode.NOT_FOUND, "chdir"),
    (lambda c: c.wait(4_000_000), grpc.StatusCode.NOT_FOUND, "not started by this keeptimed"),
    (lambda c: c.exec(4_000_000, ["/bin/true"]), grpc.StatusCode.NOT_FOUND, "no process"),
    (lambda c: c.import_record(b"garbage"), grpc.StatusCode.DATA_LOSS, "bad magic"),
])
def test_bad_requests_get_the_right_status(client, daemon, call, code, words):
    error = _status_of(lambda: call(client))
    assert error.code == code and words in error.message
    assert daemon.health() == "SERVING" and daemon.zombies() == []


def test_unknown_policy_value_is_invalid_argument(daemon, client):
    record_id = client.checkpoint(os.getpid())
    with grpc.insecure_channel(f"unix:{daemon.socket}") as channel:
        stub = pb_grpc.KeeptimeStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.Restore(pb.RestoreRequest(record_id=record_id, policy=42,
                                           command=pb.Command(argv=["/bin/true"])), timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown policy 42" in raised.value.details()
    with pytest.raises(errors.InvalidArgument, match="unknown policy 'thaw'"):
        client.plan(record_id, policy="thaw")
    assert daemon.health() == "SERVING"


def test_targets_beyond_the_kernel_limit_are_out_of_range(client, daemon):
    record = pb.Record(id="7" * 32, root_pid=1, realtime_ns=time.time_ns(), boot_id="elsewhere")
    record.clocks.monotonic_ns = record.clocks.boottime_ns = 4_611_686_018 * 10**9
    client.import_record(recordfile.encode(record))
    assert client.plan(record.id, policy="freeze")  # exactly at the limit: fine
    record.id = "8" * 32
    record.clocks.boottime_ns += 10**9
    client.import_record(recordfile.encode(record))
    before = procfs.children(daemon.proc.pid)
    with pytest.raises(errors.OutOfRange, match="exceeds the kernel's limit"):
        client.restore(record.id, ["/bin/true"], policy="freeze")
    assert procfs.children(daemon.proc.pid) == before
