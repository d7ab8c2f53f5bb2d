"""keeptimed's CRIU RPCs over its real socket: records from timens-0.img, the
image rewritten per policy, restores verified and stored."""
import os
import struct
import subprocess
import time

import grpc
import pytest
from hypothesis import HealthCheck, given, settings

from helpers.criu_images import damaged_timens_images

from keeptime import errors
from keeptime.criu.image import TimensClocks, decode_timens, encode_timens
from keeptime.recordfile import encode as encode_record
from keeptime.v1 import keeptime_pb2 as pb
from keeptimed import procfs

pytestmark = pytest.mark.root

S = 10**9
MS = 10**6


def host_boottime() -> int:
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def synthetic_record(record_id: str, clocks: tuple[int, int], host_boottime_ns: int, **fields) -> pb.Record:
    """A record taken on this boot, host_boottime_ns being the host's BOOTTIME then."""
    record = pb.Record(id=record_id, root_pid=4242, realtime_ns=time.time_ns(), boot_id=procfs.boot_id(),
                       hostname=os.uname().nodename, source="test", **fields)
    record.clocks.monotonic_ns, record.clocks.boottime_ns = clocks
    record.host_clocks.boottime_ns = host_boottime_ns
    return record


def test_checkpoint_from_an_image_records_its_clocks_and_now(client):
    data = encode_timens(TimensClocks(864_000 * S + 123, 900_000 * S + 456))
    before = time.time_ns()
    record = client.get(client.checkpoint_criu_image(data, root_pid=777, labels={"via": "test"}))
    assert (record.clocks.monotonic_ns, record.clocks.boottime_ns) == (864_000 * S + 123, 900_000 * S + 456)
    assert record.source == "criu-image" and record.root_pid == 777 and record.labels["via"] == "test"
    assert record.boot_id == procfs.boot_id() and before <= record.realtime_ns <= time.time_ns()
    assert 0 <= host_boottime() - record.host_clocks.boottime_ns < 5 * S
    assert client.get(record.id) == record


@pytest.mark.parametrize("data, error, words", [
    (b"", errors.InvalidArgument, "no timens-0.img"),
    (b"\x19\x43\x56\x54\x33\x44\x11", errors.DataLoss, "truncated"),
])
def test_checkpoint_from_a_bad_image_is_refused(client, data, error, words):
    with pytest.raises(error, match=words):
        client.checkpoint_criu_image(data)


def test_an_image_with_boottime_below_monotonic_is_a_record_like_any_other(client):
    """Inside a time namespace the kernel accepts any offsets: MONOTONIC 110
    days and BOOTTIME 40 days is a pair a tree may read, and the
    no-regression invariant holds per clock."""
    image = encode_timens(TimensClocks(110 * 86_400 * S, 40 * 86_400 * S))
    record = client.get(client.checkpoint_criu_image(image))
    assert (record.clocks.monotonic_ns, record.clocks.boottime_ns) == (110 * 86_400 * S, 40 * 86_400 * S)
    for policy in ("freeze", "suspend", "elapsed"):
        plan = client.plan_criu_restore(image, record_id=record.id, policy=policy).plan
        assert plan.targets.monotonic_ns >= plan.recorded.monotonic_ns
        assert plan.targets.boottime_ns >= plan.recorded.boottime_ns
    assert client.import_record(client.export_record(record.id)) == record.id


@pytest.fixture
def dumped(client):
    """(record id, timens-0.img bytes): a dump 2 s ago whose image clocks are
    1 ms below the record's, as at post-dump."""
    record = synthetic_record(os.urandom(16).hex(), (1_000 * S + 5, 3_000 * S + 7), host_boottime() - 2 * S)
    client.import_record(encode_record(record))
    image = encode_timens(TimensClocks(1_000 * S + 5 - MS, 3_000 * S + 7 - MS))
    return record, image


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=damaged_timens_images())
def test_any_damaged_image_is_one_line_data_loss_in_every_rpc(client, dumped, data):
    record, _ = dumped
    calls = (
        lambda: client.checkpoint_criu_image(data),
        lambda: client.plan_criu_restore(data, record_id=record.id),
        lambda: client.verify_restore(os.getpid(), record_id=record.id, timens_image=data),
    )
    for call in calls:
        with pytest.raises(errors.DataLoss, match="timens-0.img") as caught:
            call()
        assert "\n" not in caught.value.message


def with_unknown_field(image: bytes) -> bytes:
    """The same image with a field a newer CRIU might add (3: varint 1) in its entry."""
    header, (size,), entry = image[:8], struct.unpack_from("<I", image, 8), image[12:]
    return header + struct.pack("<I", size + 2) + entry + b"\x18\x01"


def test_freeze_returns_the_image_unchanged(client, dumped):
    record, image = dumped
    image = with_unknown_field(image)
    assert decode_timens(image) == decode_timens(dumped[1]) and encode_timens(decode_timens(image)) != image
    planned = client.plan_criu_restore(image, record_id=record.id, policy="freeze")
    assert planned.timens_image == image
    assert planned.plan.policy == pb.POLICY_FREEZE and planned.plan.downtime_ns >= 2 * S
    assert planned.plan.recorded == planned.plan.targets
    assert planned.plan.recorded.monotonic_ns == 1_000 * S + 5 - MS  # the image's, not the record's


def test_suspend_advances_boottime_by_the_downtime_only(client, dumped):
    record, image = dumped
    planned = client.plan_criu_restore(image, record_id=record.id, policy="suspend")
    new = decode_timens(planned.timens_image)
    old = decode_timens(image)
    assert new.monotonic_ns == old.monotonic_ns
    assert 2 * S <= new.boottime_ns - old.boottime_ns == planned.plan.downtime_ns < 7 * S
    assert planned.plan.same_boot and "timens-0.img" in planned.plan.explanation
    assert (planned.plan.targets.monotonic_ns, planned.plan.targets.boottime_ns) == (new.monotonic_ns, new.boottime_ns)


def test_elapsed_advances_both_and_the_default_is_suspend(client, dumped):
    record, image = dumped
    old = decode_timens(image)
    elapsed = decode_timens(client.plan_criu_restore(image, record_id=record.id, policy="elapsed").timens_image)
    assert elapsed.monotonic_ns - old.monotonic_ns >= 2 * S and elapsed.boottime_ns - old.boottime_ns >= 2 * S
    default = client.plan_criu_restore(image, record_id=record.id)
    assert default.plan.policy == pb.POLICY_SUSPEND


def test_a_record_given_as_bytes_is_used_without_being_stored(client):
    record = synthetic_record(os.urandom(16).hex(), (10 * S, 20 * S), host_boottime() - S)
    image = encode_timens(TimensClocks(10 * S, 20 * S))
    planned = client.plan_criu_restore(image, record_file=encode_record(record), policy="suspend")
    assert planned.plan.record_id == record.id and decode_timens(planned.timens_image).boottime_ns >= 21 * S
    with pytest.raises(errors.NotFound):
        client.get(record.id)


def test_a_record_older_than_the_image_is_refused(client, dumped):
    record, _ = dumped
    later = encode_timens(TimensClocks(record.clocks.monotonic_ns + S, record.clocks.boottime_ns + S))
    with pytest.raises(errors.FailedPrecondition, match="stale"):
        client.plan_criu_restore(later, record_id=record.id)


def test_plan_errors_have_the_right_status(client, dumped):
    record, image = dumped
    with pytest.raises(errors.NotFound):
        client.plan_criu_restore(image, record_id="f" * 32)
    with pytest.raises(errors.DataLoss, match="bad magic"):
        client.plan_criu_restore(image, record_file=b"nonsense")
    with pytest.raises(errors.DataLoss, match="not a CRIU image"):
        client.plan_criu_restore(b"\x00" * 30, record_id=record.id)
    with pytest.raises(errors.InvalidArgument, match="no timens-0.img"):
        client.plan_criu_restore(b"", record_id=record.id)
    with pytest.raises(errors.InvalidArgument, match="no record given"):
        client._call("PlanCriuRestore", pb.PlanCriuRestoreRequest(timens_image=image))
    with pytest.raises(errors.InvalidArgument, match="unknown policy"):
        client._call("PlanCriuRestore", pb.PlanCriuRestoreRequest(
            record=pb.RecordRef(record_id=record.id), timens_image=image, policy=42))


def test_targets_the_kernel_refuses_are_out_of_range(client):
    huge = (2**62 // S) * S  # above KTIME_SEC_MAX / 2 seconds
    record = synthetic_record(os.urandom(16).hex(), (huge, huge), host_boottime() - S)
    client.import_record(encode_record(record))
    with pytest.raises(errors.OutOfRange):
        client.plan_criu_restore(encode_timens(TimensClocks(huge, huge)), record_id=record.id, policy="suspend")


def test_verify_a_good_restore_and_a_regressing_one(client, far_process):
    inside, _ = far_process
    record = client.checkpoint_record(inside)  # ten days ahead of the host
    image = encode_timens(TimensClocks(record.clocks.monotonic_ns - MS, record.clocks.boottime_ns - MS))
    restored = client.restore(record.id, ["/bin/sleep", "30"], policy="freeze")
    try:
        good = client.verify_restore(restored.pid, record_id=record.id, policy="freeze", timens_image=image,
                                     stage="post-restore")
        assert good.ok and good.id > 0 and "clocks continue" in good.message
        assert good.pid == restored.pid and good.timens_inode == restored.timens_inode
        assert good.clocks.monotonic_ns >= good.dumped.monotonic_ns == record.clocks.monotonic_ns - MS
        assert good.policy == pb.POLICY_FREEZE and good.stage == "post-restore"
    finally:
        os.kill(restored.pid, 9)
        client.wait(restored.pid)

    on_host = subprocess.Popen(["sleep", "30"])  # the host's clocks: ten days behind the record
    try:
        bad = client.verify_restore(on_host.pid, record_file=client.export_record(record.id), policy="suspend",
                                    stage="post-resume")
    finally:
        on_host.kill()
        on_host.wait()
    assert not bad.ok and bad.dumped == record.clocks
    assert "MONOTONIC is" in bad.message and "below the dumped value" in bad.message
    assert bad.offsets.monotonic_ns == 0 and bad.timens_inode == procfs.INITIAL_TIMENS_INODE

    events = client.restores(record.id[:8])
    assert [(e.id, e.ok, e.stage) for e in events] == [(good.id, True, "post-restore"), (bad.id, False, "post-resume")]
    assert events[0] == good and events[1] == bad
    assert {e.id for e in client.restores()} >= {good.id, bad.id}


def test_verify_errors(client, dumped):
    record, image = dumped
    with pytest.raises(errors.NotFound, match="no process"):
        client.verify_restore(2**22 + 1, record_id=record.id)
    with pytest.raises(errors.InvalidArgument, match="pid"):
        client.verify_restore(0, record_id=record.id)
    with pytest.raises(errors.DataLoss):
        client.verify_restore(os.getpid(), record_id=record.id, timens_image=image[:-1])
    with pytest.raises(errors.InvalidArgument, match="stage"):
        client.verify_restore(os.getpid(), record_id=record.id, stage="x" * 65)
    with pytest.raises(errors.InvalidArgument, match="record id"):
        client.restores("XYZ")


def test_restore_events_survive_a_daemon_restart(fresh_daemon):
    with fresh_daemon.client() as c:
        record = c.checkpoint_record(os.getpid())
        event = c.verify_restore(os.getpid(), record_id=record.id, stage="test")
        assert event.ok
    fresh_daemon.stop()
    fresh_daemon.start()
    with fresh_daemon.client() as c:
        assert c.restores(record.id) == [event]


def test_grpc_status_codes_are_exact(daemon, dumped):
    """The raw statuses, as a non-Python caller sees them."""
    from keeptime.v1 import keeptime_pb2_grpc as pb_grpc

    record, _ = dumped
    with grpc.insecure_channel(f"unix:{daemon.socket}") as channel:
        stub = pb_grpc.KeeptimeStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.PlanCriuRestore(pb.PlanCriuRestoreRequest(record=pb.RecordRef(record_id=record.id),
                                                           timens_image=b"junk"), timeout=10)
        assert caught.value.code() == grpc.StatusCode.DATA_LOSS
        assert "\n" not in caught.value.details()


def _tree(pid: int) -> list[int]:
    pids, queue = [], [pid]
    while queue:
        current = queue.pop()
        pids.append(current)
        try:
            queue.extend(procfs.children(current))
        except ProcessLookupError:
            pass
    return pids


def _kill_tree(pid: int) -> None:
    for member in _tree(pid):   # gathered first: killed children are reparented away
        try:
            os.kill(member, 9)
        except ProcessLookupError:
            pass


def test_verify_holds_every_time_namespace_of_the_tree_to_the_dumped_values(client, far_process):
    inside, _ = far_process
    record = client.checkpoint_record(inside)  # ten days ahead of the host
    # sh and one sleep stay in the restored namespace; the other sleep gets a
    # namespace of its own at the host's clocks: ten days behind the record.
    script = "sleep 30 & unshare --time --fork --monotonic 0 --boottime 0 sleep 30 & wait"
    restored = client.restore(record.id, ["/bin/sh", "-c", script], policy="freeze")
    try:
        deadline = time.monotonic() + 10
        while len(_tree(restored.pid)) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        event = client.verify_restore(restored.pid, record_id=record.id, policy="freeze", stage="post-restore")
        assert not event.ok
        assert event.pid == restored.pid and event.timens_inode != restored.timens_inode
        assert event.offsets.monotonic_ns == 0 and event.dumped == record.clocks
        assert f"in time namespace {event.timens_inode} (pids " in event.message
        assert event.message.startswith("clocks regressed: MONOTONIC is 86399")   # ten days, almost
    finally:
        _kill_tree(restored.pid)
        client.wait(restored.pid)

    restored = client.restore(record.id, ["/bin/sh", "-c", "sleep 30 & sleep 30 & wait"], policy="freeze")
    try:
        deadline = time.monotonic() + 10
        while len(_tree(restored.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        event = client.verify_restore(restored.pid, record_id=record.id, policy="freeze")
        assert event.ok and event.timens_inode == restored.timens_inode
        assert event.message.endswith("above the dumped values (3 processes in 1 time namespace)")
    finally:
        _kill_tree(restored.pid)
        client.wait(restored.pid)
