"""Crash safety of the record store: keeptimed killed (SIGKILL) or stopped
(SIGTERM) in the middle of a stream of Checkpoint calls from several threads.

An acknowledged record must survive intact; nothing half-written may ever be
visible; the store must open cleanly and pass SQLite's integrity check.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import grpc
import pytest

from helpers.daemon import RunningDaemon
from helpers.smalldisk import SmallDisk
from keeptime import errors
from keeptime.recordfile import encode as encode_record
from keeptime.recordfile import parse as parse_record
from keeptime.v1 import keeptime_pb2 as pb

pytestmark = pytest.mark.root

THREADS = 6


@dataclass
class Outcomes:
    """What every Checkpoint call of a stream ended with."""

    acknowledged: dict = field(default_factory=dict)    # record id -> pb.Record
    failures: list = field(default_factory=list)        # grpc.StatusCode of each failed call
    in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class CheckpointStream:
    """THREADS threads checkpointing `pid` back to back through their own
    clients until stop(); each call's outcome lands in `outcomes`."""

    def __init__(self, daemon: RunningDaemon, pid: int, stop_after_failure: bool):
        self.daemon, self.pid = daemon, pid
        self.stop_after_failure = stop_after_failure
        self.outcomes = Outcomes()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(THREADS)]

    def __enter__(self) -> "CheckpointStream":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)
        assert not any(thread.is_alive() for thread in self._threads), "a checkpoint call hung"

    def _run(self, index: int) -> None:
        out = self.outcomes
        with self.daemon.client() as client:
            seq = 0
            while not self._stop.is_set():
                with out.lock:
                    out.in_flight += 1
                try:
                    record = client.checkpoint_record(self.pid, labels={"thread": str(index), "seq": str(seq)})
                except errors.KeeptimeError as exc:
                    with out.lock:
                        out.failures.append(exc.code)
                    if self.stop_after_failure:
                        return
                    time.sleep(0.01)  # the daemon is gone: do not spin
                else:
                    with out.lock:
                        out.acknowledged[record.id] = record
                finally:
                    with out.lock:
                        out.in_flight -= 1
                seq += 1

    def wait_until(self, acknowledged: int, in_flight: int, timeout: float = 60.0) -> None:
        """Block until this many records are acknowledged and this many calls are in flight."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.outcomes.lock:
                if len(self.outcomes.acknowledged) >= acknowledged and self.outcomes.in_flight >= in_flight:
                    return
            time.sleep(0.001)
        raise AssertionError(f"the stream did not reach {acknowledged} acknowledged records")


# Reads the store the way a fresh process would, in whatever mount namespace
# it runs in (a store on a private tmpfs is only reachable from inside).
READ_STORE = """
import json, sqlite3, sys
from keeptimed import recordfile
with sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True) as conn:
    check = conn.execute("PRAGMA integrity_check").fetchall()
    rows = conn.execute("SELECT id, data FROM records").fetchall()
print(json.dumps({"integrity": check, "records": {i: recordfile.decode(bytes(d)).SerializeToString().hex() for i, d in rows}}))
"""


def stored_rows(db: str, command_prefix=()) -> dict:
    """Every row of the store, decoded straight from SQLite by a separate
    process: id -> pb.Record. Fails on a failed integrity check or a row that
    does not decode (half-written or damaged)."""
    result = subprocess.run([*command_prefix, sys.executable, "-c", READ_STORE, db],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["integrity"] == [["ok"]]
    records = {record_id: pb.Record.FromString(bytes.fromhex(data)) for record_id, data in found["records"].items()}
    assert all(record.id == record_id for record_id, record in records.items())
    return records


def assert_store_intact(daemon: RunningDaemon, acknowledged: dict) -> dict:
    """The restarted daemon serves every acknowledged record unchanged and
    lists no damaged one; returns every stored record."""
    with daemon.client() as client:
        listed = client.list()
        assert [entry.id for entry in listed if entry.error] == []
        for record_id, record in acknowledged.items():
            assert client.get(record_id) == record
    stored = stored_rows(daemon.db, daemon.command_prefix)
    assert {entry.id for entry in listed} == set(stored)
    return stored


def test_sigkill_mid_stream_loses_no_acknowledged_record(fresh_daemon, root_sleeper):
    with CheckpointStream(fresh_daemon, root_sleeper, stop_after_failure=True) as stream:
        stream.wait_until(acknowledged=60, in_flight=THREADS // 2)
        fresh_daemon.stop(signal.SIGKILL)
    out = stream.outcomes
    assert set(out.failures) <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}, out.failures

    fresh_daemon.start()
    stored = assert_store_intact(fresh_daemon, out.acknowledged)
    # Beyond the acknowledged records, at most the one call each thread had
    # in flight may have committed; every stored record is whole and one of ours.
    unacknowledged = set(stored) - set(out.acknowledged)
    assert len(unacknowledged) <= THREADS
    for record_id in unacknowledged:
        assert stored[record_id].root_pid == root_sleeper and set(stored[record_id].labels) == {"thread", "seq"}
    assert fresh_daemon.stop() == 0


def test_sigterm_mid_stream_finishes_or_refuses_each_call(fresh_daemon, root_sleeper):
    signalled_at = None
    with CheckpointStream(fresh_daemon, root_sleeper, stop_after_failure=False) as stream:
        stream.wait_until(acknowledged=30, in_flight=THREADS // 2)
        signalled_at = time.monotonic()
        assert fresh_daemon.stop(signal.SIGTERM) == 0, fresh_daemon.log()
        # Keep calling the stopped daemon for a moment: refused, never anything else.
        time.sleep(0.2)
    out = stream.outcomes
    assert out.failures, "no call was refused after SIGTERM"
    assert set(out.failures) <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}, out.failures
    assert time.monotonic() - signalled_at < 30

    fresh_daemon.start()
    stored = assert_store_intact(fresh_daemon, out.acknowledged)
    # A graceful stop answers every call it accepted: nothing is stored that
    # its caller was told failed.
    assert set(stored) == set(out.acknowledged)
    assert fresh_daemon.stop() == 0


def test_a_restarted_store_accepts_new_records(fresh_daemon, root_sleeper):
    """The store a killed daemon left behind is not only readable but writable."""
    with fresh_daemon.client() as client:
        first = client.checkpoint_record(root_sleeper)
    fresh_daemon.stop(signal.SIGKILL)
    fresh_daemon.start()
    with fresh_daemon.client() as client:
        second = client.checkpoint_record(root_sleeper)
        assert [entry.id for entry in client.list()] == [first.id, second.id]
        assert client.get(second.id) == second


# -- a full disk ------------------------------------------------------------------

DISK_BYTES = 1024 * 1024
BIG_RECORD_BYTES = 48 * 1024   # each record spans a dozen SQLite pages


@pytest.fixture
def small_disk(tmp_path):
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        pytest.skip("needs util-linux unshare and nsenter for a private tmpfs")
    disk = SmallDisk(str(tmp_path / "store"), DISK_BYTES)
    yield disk
    disk.close()


@pytest.fixture
def daemon_on_small_disk(tmp_path, small_disk):
    running = RunningDaemon(tmp_path, db=os.path.join(small_disk.path, "keeptime.db"),
                            command_prefix=small_disk.prefix)
    yield running
    running.stop(signal.SIGKILL)


def _big(record: pb.Record, i: int) -> bytes:
    """A record file of about BIG_RECORD_BYTES: record's tree, its root repeated
    (labels could not make it that large: they are limited to a few KiB)."""
    big = pb.Record()
    big.CopyFrom(record)
    big.id = f"{i:032x}"
    big.labels["i"] = str(i)
    big.processes.extend([record.processes[0]] * (BIG_RECORD_BYTES // record.processes[0].ByteSize()))
    return encode_record(big)


def fill_the_store(client, pid: int) -> tuple[dict, list]:
    """Store big records (imported, from a checkpoint of pid) until the store
    refuses a few in a row. Returns (acknowledged id -> record, the errors)."""
    acknowledged, refused = {}, []
    base = client.checkpoint_record(pid)
    client.delete(base.id)
    for i in range(4 * DISK_BYTES // BIG_RECORD_BYTES):
        data = _big(base, i)
        try:
            record_id = client.import_record(data)
        except errors.KeeptimeError as exc:
            refused.append(exc)
            if len(refused) == 5:
                break
        else:
            acknowledged[record_id] = parse_record(data)
    return acknowledged, refused


def test_a_full_disk_gives_resource_exhausted_and_loses_nothing(daemon_on_small_disk, small_disk, root_sleeper):
    daemon = daemon_on_small_disk.start()
    ballast = os.path.join(small_disk.view, "ballast")
    with open(ballast, "wb") as f:
        f.write(b"\0" * (128 * 1024))
    with daemon.client() as client:
        early = {r.id: r for r in (client.checkpoint_record(root_sleeper, labels={"n": str(n)}) for n in range(3))}
        acknowledged, refused = fill_the_store(client, root_sleeper)
        assert acknowledged and len(refused) == 5, "the disk never filled up"
        assert small_disk.free_bytes() < BIG_RECORD_BYTES   # a real ENOSPC, not a quota of ours
        for exc in refused:
            assert exc.code == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
            assert "is full" in exc.message and daemon.db in exc.message

        # Still healthy on a full disk: reads and restores need no space.
        assert daemon.health() == "SERVING"
        acknowledged.update(early)
        for record_id, record in acknowledged.items():
            assert client.get(record_id) == record
        assert {entry.id for entry in client.list()} == set(acknowledged)
        restored = client.restore(next(iter(early)), ["/bin/true"])
        assert client.wait(restored.pid, timeout=30) == 0

        # Space freed by the operator: writes work again, no restart needed.
        os.unlink(ballast)
        again = client.checkpoint_record(root_sleeper)
        acknowledged[again.id] = again
    assert daemon.stop() == 0, daemon.log()
    # The disk is full again (stop could not fold the WAL into the database):
    # a store with nothing to migrate still opens, to be read.
    daemon.start()
    assert set(assert_store_intact(daemon, acknowledged)) == set(acknowledged)
    assert daemon.stop() == 0


def test_keeptimed_on_a_full_disk_refuses_to_start_with_one_clear_line(tmp_path, small_disk):
    small_disk.fill("ballast")
    db = os.path.join(small_disk.path, "keeptime.db")
    refused = subprocess.run(
        [*small_disk.prefix, sys.executable, "-m", "keeptimed", "--config", os.devnull,
         "--socket", str(tmp_path / "k.sock"), "--db", db],
        capture_output=True, text=True, timeout=60,
    )
    assert refused.returncode == 1
    assert "Traceback" not in refused.stderr
    assert f"keeptimed: cannot open the record store {db}" in refused.stderr
    assert "disk full" in refused.stderr
