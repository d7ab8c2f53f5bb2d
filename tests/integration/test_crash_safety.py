"""Crash safety of the record store: keeptimed killed (SIGKILL) or stopped
(SIGTERM) in the middle of a stream of Checkpoint calls from several threads.

An acknowledged record must survive intact; nothing half-written may ever be
visible; the store must open cleanly and pass SQLite's integrity check.
"""
import os
import signal
import sqlite3
import subprocess
import threading
import time
from dataclasses import dataclass, field

import grpc
import pytest

from helpers.daemon import RunningDaemon
from keeptime import errors
from keeptimed import recordfile

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


def stored_rows(db: str) -> dict:
    """Every row of the store, decoded straight from SQLite: id -> pb.Record.
    Raises if any row does not decode (a half-written or damaged record)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        rows = conn.execute("SELECT id, data FROM records").fetchall()
    decoded = {}
    for record_id, data in rows:
        record = recordfile.decode(bytes(data))
        assert record.id == record_id
        decoded[record_id] = record
    return decoded


def assert_store_intact(daemon: RunningDaemon, acknowledged: dict) -> dict:
    """The restarted daemon serves every acknowledged record unchanged and
    lists no damaged one; returns every stored record."""
    with daemon.client() as client:
        listed = client.list()
        assert [entry.id for entry in listed if entry.error] == []
        for record_id, record in acknowledged.items():
            assert client.get(record_id) == record
    stored = stored_rows(daemon.db)
    assert {entry.id for entry in listed} == set(stored)
    return stored


@pytest.fixture
def sleeper():
    """A process to checkpoint that does not change while the stream runs."""
    proc = subprocess.Popen(["sleep", "600"])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_sigkill_mid_stream_loses_no_acknowledged_record(fresh_daemon, sleeper):
    with CheckpointStream(fresh_daemon, sleeper, stop_after_failure=True) as stream:
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
        assert stored[record_id].root_pid == sleeper and set(stored[record_id].labels) == {"thread", "seq"}
    assert fresh_daemon.stop() == 0


def test_sigterm_mid_stream_finishes_or_refuses_each_call(fresh_daemon, sleeper):
    signalled_at = None
    with CheckpointStream(fresh_daemon, sleeper, stop_after_failure=False) as stream:
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


def test_a_restarted_store_accepts_new_records(fresh_daemon, sleeper):
    """The store a killed daemon left behind is not only readable but writable."""
    with fresh_daemon.client() as client:
        first = client.checkpoint_record(sleeper)
    fresh_daemon.stop(signal.SIGKILL)
    fresh_daemon.start()
    with fresh_daemon.client() as client:
        second = client.checkpoint_record(sleeper)
        assert [entry.id for entry in client.list()] == [first.id, second.id]
        assert client.get(second.id) == second
