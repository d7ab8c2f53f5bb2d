"""Every row of docs/failure-modes.md, run against a real keeptimed.

Each case must give the documented status with a one-line message, write
nothing, and leave the daemon healthy.
"""
import os
import re
import sqlite3
import subprocess

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from keeptime.criu.image import TimensClocks, encode_timens
from keeptime.v1 import keeptime_pb2 as pb
from keeptime.v1 import keeptime_pb2_grpc as pb_grpc
from keeptimed import policies, recordfile

pytestmark = pytest.mark.root

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TABLE = os.path.join(ROOT, "docs", "failure-modes.md")
ROW = re.compile(r"^\| ([a-z0-9-]+) \| (\w+) \| (.+?) \| ([A-Z_]+) \|$")


def documented_cases() -> dict[str, tuple[str, str]]:
    """case id -> (RPC, status) from the first table of docs/failure-modes.md."""
    cases = {}
    with open(TABLE, encoding="utf-8") as f:
        for line in f:
            match = ROW.match(line.strip())
            if match:
                cases[match.group(1)] = (match.group(2), match.group(4))
    return cases


@pytest.fixture(scope="module")
def world(daemon, tmp_path_factory):
    """A stub, a live process, its record, and pids in interesting states."""
    channel = grpc.insecure_channel(f"unix:{daemon.socket}")
    stub = pb_grpc.KeeptimeStub(channel)
    sleeper = subprocess.Popen(["sleep", "600"])
    gone = subprocess.Popen(["true"])
    gone.wait()
    zombie = subprocess.Popen(["true"])
    for _ in range(200):   # exited, not reaped
        with open(f"/proc/{zombie.pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        subprocess.run(["sleep", "0.01"])
    record = stub.Checkpoint(pb.CheckpointRequest(pid=sleeper.pid), timeout=30).record
    exported = stub.ExportRecord(pb.ExportRecordRequest(record_id=record.id), timeout=30).data
    huge = pb.Record()
    huge.CopyFrom(record)
    huge.id = "f" * 32
    huge.clocks.monotonic_ns = huge.clocks.boottime_ns = policies.MAX_TARGET_NS - 1
    stub.ImportRecord(pb.ImportRecordRequest(data=recordfile.encode(huge)), timeout=30)
    # Stored as a keeptimed that did not check host clocks would have stored it.
    negative = _negative_host_clock(record, "e" * 32)
    with sqlite3.connect(daemon.db) as db:
        db.execute("INSERT INTO records (owner_uid, id, created_realtime_ns, data) VALUES (0, ?, ?, ?)",
                   (negative.id, negative.realtime_ns, recordfile.encode(negative)))
    db.close()
    not_a_program = tmp_path_factory.mktemp("exe") / "not-a-program"
    not_a_program.write_bytes(b"\x00\x01 neither ELF nor a script\n")
    not_a_program.chmod(0o755)
    yield {
        "clocks": (record.clocks.monotonic_ns, record.clocks.boottime_ns),
        "image": _image(record.clocks.monotonic_ns, record.clocks.boottime_ns),
        "huge_image": _image(huge.clocks.monotonic_ns, huge.clocks.boottime_ns),
        "not_a_program": str(not_a_program),
        "stub": stub, "channel": channel, "sleeper": sleeper.pid, "gone": gone.pid, "zombie": zombie.pid,
        "record": record.id, "exported": exported, "huge": huge.id, "negative": negative.id,
        "negative_file": recordfile.encode(_negative_host_clock(record, "d" * 32)),
        "big_file": recordfile.encode(_with_processes(record, 250_000)),
        "labelled_file": recordfile.encode(_with_label(record, "v" * 3_000_000)),
    }
    sleeper.kill()
    sleeper.wait()
    zombie.wait()
    channel.close()


def _negative_host_clock(record: pb.Record, record_id: str) -> pb.Record:
    """record (of this boot) under another id, its host CLOCK_BOOTTIME -2^63."""
    bad = pb.Record()
    bad.CopyFrom(record)
    bad.id = record_id
    bad.host_clocks.boottime_ns = -2**63
    return bad


def _with_processes(record: pb.Record, count: int) -> pb.Record:
    big = pb.Record()
    big.CopyFrom(record)
    big.id = "c" * 32
    template = record.processes[0]
    big.processes.extend([template] * count)
    return big


def _with_label(record: pb.Record, value: str) -> pb.Record:
    labelled = pb.Record()
    labelled.CopyFrom(record)
    labelled.id = "b" * 32
    labelled.labels["big"] = value
    return labelled


def _restore(w, **command):
    return w["stub"].Restore(pb.RestoreRequest(record_id=w["record"], policy=pb.POLICY_FREEZE,
                                               command=pb.Command(**command)), timeout=30)


def _image(monotonic_ns: int, boottime_ns: int) -> bytes:
    return encode_timens(TimensClocks(monotonic_ns, boottime_ns))


def _plan_criu(w, image: bytes, policy=pb.POLICY_SUSPEND, **ref):
    ref = ref or {"record_id": w["record"]}
    return w["stub"].PlanCriuRestore(pb.PlanCriuRestoreRequest(
        record=pb.RecordRef(**ref), timens_image=image, policy=policy), timeout=30)


def _verify(w, pid: int, stage: str = "post-restore"):
    return w["stub"].VerifyRestore(pb.VerifyRestoreRequest(
        record=pb.RecordRef(record_id=w["record"]), pid=pid, stage=stage), timeout=30)


def _checkpoint_criu(w, image: bytes):
    return w["stub"].CheckpointCriuImage(pb.CheckpointCriuImageRequest(timens_image=image), timeout=30)


def _future_version(data: bytes) -> bytes:
    envelope = pb.RecordEnvelope()
    envelope.ParseFromString(data[len(recordfile.MAGIC):])
    envelope.format_version = 99
    return recordfile.MAGIC + envelope.SerializeToString()


def _flip(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]


CASES = {
    "request-undecodable": lambda w: w["channel"].unary_unary("/keeptime.v1.Keeptime/GetRecord")(
        b"\x0a\x02\xff\xfe", timeout=30),
    "record-id-huge": lambda w: w["stub"].GetRecord(pb.GetRecordRequest(record_id="a" * 8_000_000), timeout=30),
    "labels-too-many": lambda w: w["stub"].Checkpoint(
        pb.CheckpointRequest(pid=w["sleeper"], labels={f"k{n}": "v" for n in range(17)}), timeout=30),
    "label-value-too-long": lambda w: w["stub"].Checkpoint(
        pb.CheckpointRequest(pid=w["sleeper"], labels={"k": "v" * 257}), timeout=30),
    "plan-negative-host-clock": lambda w: w["stub"].Plan(
        pb.PlanRequest(record_id=w["negative"], policy=pb.POLICY_FREEZE), timeout=30),
    "import-record-too-large": lambda w: w["stub"].ImportRecord(pb.ImportRecordRequest(data=w["big_file"]),
                                                                timeout=30),
    "import-labels-too-large": lambda w: w["stub"].ImportRecord(
        pb.ImportRecordRequest(data=w["labelled_file"]), timeout=30),
    "import-negative-host-clock": lambda w: w["stub"].ImportRecord(
        pb.ImportRecordRequest(data=w["negative_file"]), timeout=30),
    "cwd-huge": lambda w: _restore(w, argv=["/bin/true"], cwd="/" + "d" * 1_000_000),
    "path-too-many-directories": lambda w: _restore(
        w, argv=["true"], env=["PATH=" + ":".join(f"/d{n}" for n in range(5000))]),
    "stdout-path-too-long": lambda w: _restore(w, argv=["/bin/true"], stdout_path="/tmp/" + "x" * 65536),
    "stdout-name-too-long": lambda w: _restore(w, argv=["/bin/true"], stdout_path="/tmp/" + "x" * 3995),
    "exec-argv-too-long": lambda w: w["stub"].Exec(
        pb.ExecRequest(pid=w["sleeper"], command=pb.Command(argv=["/bin/true", "a" * 200 * 1024])), timeout=30),
    "criu-image-too-large": lambda w: _checkpoint_criu(w, b"\0" * 5000),
    "verify-stage-multibyte": lambda w: _verify(w, w["sleeper"], stage="\u00e9" * 33),
    "list-page-token-huge": lambda w: w["stub"].ListRecords(pb.ListRecordsRequest(page_token="1" * 1_000_000),
                                                            timeout=30),
    "pid-zero": lambda w: w["stub"].Checkpoint(pb.CheckpointRequest(pid=0), timeout=30),
    "pid-negative": lambda w: w["stub"].Checkpoint(pb.CheckpointRequest(pid=-5), timeout=30),
    "pid-huge": lambda w: w["stub"].Checkpoint(pb.CheckpointRequest(pid=2**31 - 1), timeout=30),
    "pid-gone": lambda w: w["stub"].Checkpoint(pb.CheckpointRequest(pid=w["gone"]), timeout=30),
    "pid-zombie": lambda w: w["stub"].Checkpoint(pb.CheckpointRequest(pid=w["zombie"]), timeout=30),
    "pid-kernel-thread": lambda w: w["stub"].Checkpoint(pb.CheckpointRequest(pid=2), timeout=30),
    "clocks-kernel-thread": lambda w: w["stub"].Clocks(pb.ClocksRequest(pid=2), timeout=30),
    "clocks-gone": lambda w: w["stub"].Clocks(pb.ClocksRequest(pid=w["gone"]), timeout=30),
    "exec-kernel-thread": lambda w: w["stub"].Exec(
        pb.ExecRequest(pid=2, command=pb.Command(argv=["/bin/true"])), timeout=30),
    "wait-not-ours": lambda w: w["stub"].Wait(pb.WaitRequest(pid=1), timeout=30),
    "record-id-invalid": lambda w: w["stub"].GetRecord(pb.GetRecordRequest(record_id="not-an-id!"), timeout=30),
    "record-id-short": lambda w: w["stub"].GetRecord(pb.GetRecordRequest(record_id="abc"), timeout=30),
    "record-unknown": lambda w: w["stub"].GetRecord(pb.GetRecordRequest(record_id="deadbeef"), timeout=30),
    "delete-unknown": lambda w: w["stub"].DeleteRecord(pb.DeleteRecordRequest(record_id="deadbeef"), timeout=30),
    "plan-unknown": lambda w: w["stub"].Plan(pb.PlanRequest(record_id="deadbeef"), timeout=30),
    "plan-policy-unknown": lambda w: w["stub"].Plan(pb.PlanRequest(record_id=w["record"], policy=99), timeout=30),
    "plan-out-of-range": lambda w: w["stub"].Plan(
        pb.PlanRequest(record_id=w["huge"], policy=pb.POLICY_ELAPSED), timeout=30),
    "restore-out-of-range": lambda w: w["stub"].Restore(pb.RestoreRequest(
        record_id=w["huge"], policy=pb.POLICY_ELAPSED, command=pb.Command(argv=["/bin/true"])), timeout=30),
    "import-empty": lambda w: w["stub"].ImportRecord(pb.ImportRecordRequest(data=b""), timeout=30),
    "import-truncated": lambda w: w["stub"].ImportRecord(
        pb.ImportRecordRequest(data=w["exported"][: len(w["exported"]) // 2]), timeout=30),
    "import-corrupt": lambda w: w["stub"].ImportRecord(pb.ImportRecordRequest(data=_flip(w["exported"])), timeout=30),
    "import-wrong-magic": lambda w: w["stub"].ImportRecord(pb.ImportRecordRequest(data=b"GIF89a" * 20), timeout=30),
    "import-future-version": lambda w: w["stub"].ImportRecord(
        pb.ImportRecordRequest(data=_future_version(w["exported"])), timeout=30),
    "import-too-large": lambda w: w["stub"].ImportRecord(
        pb.ImportRecordRequest(data=b"x" * (9 * 1024 * 1024)), timeout=30),
    "argv-empty": lambda w: _restore(w, argv=[]),
    "argv-nul": lambda w: _restore(w, argv=["/bin/true", "a\0b"]),
    "env-no-equals": lambda w: _restore(w, argv=["/bin/true"], env=["JUSTAKEY"]),
    "env-nul": lambda w: _restore(w, argv=["/bin/true"], env=["K=a\0b"]),
    "cwd-missing": lambda w: _restore(w, argv=["/bin/true"], cwd="/nonexistent/dir"),
    "cwd-relative": lambda w: _restore(w, argv=["/bin/true"], cwd="relative/dir"),
    "uid-missing": lambda w: _restore(w, argv=["/bin/true"], uid=4242424),
    "gid-missing": lambda w: _restore(w, argv=["/bin/true"], gid=4242424),
    "exe-missing": lambda w: _restore(w, argv=["/nonexistent/program"]),
    "exe-not-on-path": lambda w: _restore(w, argv=["no-such-program-anywhere"]),
    "exe-not-executable": lambda w: _restore(w, argv=["/dev/null"]),
    "exe-bad-format": lambda w: _restore(w, argv=[w["not_a_program"]]),
    "stdout-dir-missing": lambda w: _restore(w, argv=["/bin/true"], stdout_path="/nonexistent/out.txt"),
    "stdin-keeptimeds-log": lambda w: _restore(w, argv=["/bin/cat"], stdin_path="/proc/self/fd/2"),
    "exec-stdin-keeptimeds-fd": lambda w: w["stub"].Exec(pb.ExecRequest(
        pid=w["sleeper"], command=pb.Command(argv=["/bin/cat"], stdin_path="/proc/self/fd/3")), timeout=30),
    "exec-argv-empty": lambda w: w["stub"].Exec(
        pb.ExecRequest(pid=w["sleeper"], command=pb.Command(argv=[])), timeout=30),
    "exec-gone": lambda w: w["stub"].Exec(
        pb.ExecRequest(pid=w["gone"], command=pb.Command(argv=["/bin/true"])), timeout=30),
    "criu-image-empty": lambda w: _checkpoint_criu(w, b""),
    "criu-image-truncated": lambda w: _checkpoint_criu(w, w["image"][:-3]),
    "criu-image-wrong-magic": lambda w: _checkpoint_criu(w, b"\0" * 30),
    "criu-plan-no-record": lambda w: w["stub"].PlanCriuRestore(
        pb.PlanCriuRestoreRequest(timens_image=w["image"]), timeout=30),
    "criu-plan-unknown": lambda w: _plan_criu(w, w["image"], record_id="deadbeef"),
    "criu-plan-corrupt-record": lambda w: _plan_criu(w, w["image"], record_file=_flip(w["exported"])),
    "criu-plan-garbage-image": lambda w: _plan_criu(w, b"junk"),
    "criu-plan-stale-record": lambda w: _plan_criu(w, _image(*(clock + 10**9 for clock in w["clocks"]))),
    "criu-plan-out-of-range": lambda w: _plan_criu(w, w["huge_image"], pb.POLICY_ELAPSED, record_id=w["huge"]),
    "verify-gone": lambda w: _verify(w, w["gone"]),
    "verify-stage-too-long": lambda w: _verify(w, w["sleeper"], stage="x" * 65),
    "restores-id-invalid": lambda w: w["stub"].ListRestores(
        pb.ListRestoresRequest(record_id="not-an-id!"), timeout=30),
    "list-page-token-invalid": lambda w: w["stub"].ListRecords(
        pb.ListRecordsRequest(page_token="page-2"), timeout=30),
    "list-page-token-overflow": lambda w: w["stub"].ListRecords(
        pb.ListRecordsRequest(page_token=f"{2**63}.{'a' * 32}.0"), timeout=30),
    "restores-page-token-invalid": lambda w: w["stub"].ListRestores(
        pb.ListRestoresRequest(page_token="-1"), timeout=30),
}


def test_every_documented_case_has_a_test_and_every_test_a_row():
    assert set(documented_cases()) == set(CASES)


FAULT_ROW = re.compile(r"^\|.*\| (test_\w+\.py)(?:::(test_\w+))? \|$")


def documented_fault_tests() -> set[tuple[str, str]]:
    """(test file, test function or "") named by the rows of the fault and attack tables."""
    with open(TABLE, encoding="utf-8") as f:
        return {match.groups("") for line in f if (match := FAULT_ROW.match(line.strip()))}


def test_every_fault_row_names_a_test_that_exists_and_every_attack_test_has_a_row():
    here = os.path.dirname(os.path.abspath(__file__))
    named = documented_fault_tests()
    assert named
    for filename, function in named:
        with open(os.path.join(here, filename), encoding="utf-8") as f:
            assert not function or f"def {function}(" in f.read(), f"{filename}::{function} does not exist"
    with open(os.path.join(here, "test_limits.py"), encoding="utf-8") as f:
        attacks = set(re.findall(r"^def (test_\w+)\(", f.read(), re.MULTILINE))
    assert attacks == {function for filename, function in named if filename == "test_limits.py"}


@pytest.mark.parametrize("case", sorted(CASES))
def test_failure_mode(case, world, daemon):
    rpc, status = documented_cases()[case]
    stub = world["stub"]
    records_before = {r.id for r in stub.ListRecords(pb.ListRecordsRequest(), timeout=30).records}
    with pytest.raises(grpc.RpcError) as caught:
        CASES[case](world)
    error = caught.value
    assert error.code() == grpc.StatusCode[status], f"{rpc} {case}: {error.code()} {error.details()}"
    message = error.details() or ""
    assert message and "\n" not in message and "Traceback" not in message
    assert len(message.encode()) <= 1024, f"{case}: a message of {len(message.encode())} bytes"
    records_after = {r.id for r in stub.ListRecords(pb.ListRecordsRequest(), timeout=30).records}
    assert records_after == records_before, "a failed call wrote a record"
    health = health_pb2_grpc.HealthStub(world["channel"]).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
