"""Restore events in the store: round trip, filtering by record and owner,
and the migration of schema 1, 2 and 3 stores to 4."""
import sqlite3

import pytest

from keeptime.v1 import keeptime_pb2 as pb
from keeptimed.errors import InvalidArgument
from keeptimed.store import SCHEMA_VERSION, RecordStore


def event(record_id: str, ok: bool = True) -> pb.RestoreEvent:
    return pb.RestoreEvent(
        record_id=record_id, pid=99, policy=pb.POLICY_SUSPEND, stage="post-restore", ok=ok,
        dumped=pb.ClockValues(monotonic_ns=5, boottime_ns=2**62),
        clocks=pb.ClockValues(monotonic_ns=-7, boottime_ns=2**62 + 1),
        offsets=pb.Offsets(monotonic_ns=-(2**40), boottime_ns=3),
        timens_inode=0xEFFFFFFA, realtime_ns=1_700_000_000_000_000_001, message="clocks regressed: x",
        verdict=pb.VERDICT_CONTINUOUS if ok else pb.VERDICT_REGRESSED,
    )


def test_events_round_trip_in_order_and_filter_by_record(tmp_path):
    store = RecordStore(str(tmp_path / "k.db"))
    a, b = "a" * 32, "b" * 32
    ids = [store.add_restore(event(a)), store.add_restore(event(b, ok=False)), store.add_restore(event(a))]
    assert ids == sorted(ids) and len(set(ids)) == 3
    everything = store.list_restores()
    expected = [event(a), event(b, ok=False), event(a)]
    for e, event_id in zip(expected, ids):
        e.id = event_id
    assert everything == expected
    assert [e.id for e in store.list_restores("aaaa")] == [ids[0], ids[2]]
    assert store.list_restores("cccc") == []
    with pytest.raises(InvalidArgument):
        store.list_restores("a'; DROP TABLE restores; --")
    store.close()


def test_events_are_filtered_by_owner(tmp_path):
    store = RecordStore(str(tmp_path / "k.db"))
    admins, users = store.add_restore(event("a" * 32)), store.add_restore(event("a" * 32), owner_uid=1000)
    assert [e.id for e in store.list_restores()] == [admins, users]
    assert [e.id for e in store.list_restores("aaaa", owner_uid=1000)] == [users]
    assert [e.id for e in store.list_restores(owner_uid=0)] == [admins]
    assert store.list_restores(owner_uid=1001) == []
    store.close()


OLD_SCHEMAS = {
    1: "CREATE TABLE records (id TEXT PRIMARY KEY, created_realtime_ns INTEGER NOT NULL, data BLOB NOT NULL)",
    2: "CREATE TABLE records (id TEXT PRIMARY KEY, created_realtime_ns INTEGER NOT NULL, data BLOB NOT NULL,"
       " owner_uid INTEGER NOT NULL DEFAULT 0)",
}
RESTORES_3 = (
    "CREATE TABLE restores (id INTEGER PRIMARY KEY AUTOINCREMENT, record_id TEXT NOT NULL, pid INTEGER NOT NULL,"
    " policy TEXT NOT NULL, stage TEXT NOT NULL, ok INTEGER NOT NULL, dumped_monotonic_ns INTEGER NOT NULL,"
    " dumped_boottime_ns INTEGER NOT NULL, monotonic_ns INTEGER NOT NULL, boottime_ns INTEGER NOT NULL,"
    " monotonic_offset_ns INTEGER NOT NULL, boottime_offset_ns INTEGER NOT NULL, timens_inode INTEGER NOT NULL,"
    " realtime_ns INTEGER NOT NULL, message TEXT NOT NULL, owner_uid INTEGER NOT NULL DEFAULT 0)"
)


@pytest.mark.parametrize("version", sorted(OLD_SCHEMAS))
def test_an_older_database_gains_owners_and_restores_and_keeps_its_records(tmp_path, version):
    path = str(tmp_path / "old.db")
    db = sqlite3.connect(path)
    db.execute(OLD_SCHEMAS[version])
    db.execute("INSERT INTO records (id, created_realtime_ns, data) VALUES ('x', 1, x'00')")
    if version == 2:
        db.execute("UPDATE records SET owner_uid = 1000")
    db.execute(f"PRAGMA user_version={version}")
    db.commit()
    db.close()
    store = RecordStore(path)
    assert store.add_restore(event("c" * 32), owner_uid=1000) == 1
    store.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    assert db.execute("SELECT id, owner_uid FROM records").fetchall() == [("x", 1000 if version == 2 else 0)]
    assert db.execute("SELECT record_id, ok, policy, owner_uid FROM restores").fetchall() == [
        ("c" * 32, 1, "suspend", 1000)]
    db.close()


def test_a_schema_3_store_keeps_its_verdicts_and_gains_unverified_ones(tmp_path):
    path = str(tmp_path / "v3.db")
    db = sqlite3.connect(path)
    db.execute(OLD_SCHEMAS[2])
    db.execute(RESTORES_3)
    for ok in (1, 0):
        db.execute("INSERT INTO restores (record_id, pid, policy, stage, ok, dumped_monotonic_ns,"
                   " dumped_boottime_ns, monotonic_ns, boottime_ns, monotonic_offset_ns, boottime_offset_ns,"
                   " timens_inode, realtime_ns, message) VALUES (?, 1, 'freeze', 'post-restore', ?, 0, 0, 0, 0,"
                   " 0, 0, 0, 0, 'm')", ("d" * 32, ok))
    db.execute("PRAGMA user_version=3")
    db.commit()
    db.close()
    store = RecordStore(path)
    unverified = pb.RestoreEvent(record_id="", pid=7, stage="post-restore", verdict=pb.VERDICT_UNVERIFIED,
                                 message="unverified: gone", dumped={}, clocks={}, offsets={})
    unverified.id = store.add_restore(unverified)
    assert [(e.ok, e.verdict) for e in store.list_restores()] == [
        (True, pb.VERDICT_CONTINUOUS), (False, pb.VERDICT_REGRESSED), (False, pb.VERDICT_UNVERIFIED)]
    assert store.list_restores()[-1] == unverified
    store.close()
