import sqlite3

import pytest

from keeptime.v1 import keeptime_pb2 as pb
from keeptimed.errors import AlreadyExists, DataLoss, InvalidArgument, NotFound
from keeptimed.store import RecordStore


def record(record_id: str, realtime_ns: int = 1) -> pb.Record:
    r = pb.Record(id=record_id, root_pid=7, realtime_ns=realtime_ns, source="checkpoint")
    r.clocks.monotonic_ns, r.clocks.boottime_ns = 5, 6
    return r


@pytest.fixture
def store(tmp_path):
    s = RecordStore(str(tmp_path / "state" / "k.db"))
    yield s
    s.close()


def test_add_get_list_delete(store):
    a, b = record("aaaa" + "0" * 28, 2), record("bbbb" + "0" * 28, 1)
    store.add(a)
    store.add(b)
    assert store.get(a.id) == a
    assert [rid for (_, rid), _ in store.list()[0]] == [b.id, a.id]  # oldest first
    assert store.delete("aaaa") == a.id
    with pytest.raises(NotFound):
        store.get(a.id)


def test_prefixes_resolve_uniquely(store):
    store.add(record("abcd1" + "0" * 27))
    store.add(record("abcd2" + "0" * 27))
    assert store.resolve("abcd1").startswith("abcd1")
    with pytest.raises(InvalidArgument, match="ambiguous"):
        store.resolve("abcd")
    with pytest.raises(NotFound):
        store.resolve("ffff")


@pytest.mark.parametrize("bad", ["", "abc", "ABCD", "abcd-", "x" * 4, "a" * 33, "'; DROP TABLE records; --"])
def test_malformed_ids_are_invalid(store, bad):
    with pytest.raises(InvalidArgument, match="not a record id"):
        store.get(bad)


def test_same_record_twice_is_idempotent_but_different_content_conflicts(store):
    r = record("c" * 32)
    store.add(r)
    store.add(r)
    other = record("c" * 32)
    other.root_pid = 8
    with pytest.raises(AlreadyExists):
        store.add(other)


def test_records_survive_reopening(tmp_path):
    path = str(tmp_path / "k.db")
    s = RecordStore(path)
    s.add(record("d" * 32))
    s.close()
    s = RecordStore(path)
    assert s.get("d" * 32) == record("d" * 32)
    s.close()


def test_a_damaged_row_is_data_loss_and_listed_as_such(tmp_path):
    path = str(tmp_path / "k.db")
    s = RecordStore(path)
    s.add(record("e" * 32))
    s.add(record("f" * 32))
    db = sqlite3.connect(path)
    db.execute("UPDATE records SET data = substr(data, 1, 20) WHERE id = ?", ("e" * 32,))
    db.commit()
    db.close()
    with pytest.raises(DataLoss, match="e" * 32):
        s.get("e" * 32)
    listed = {rid: listed for (_, rid), listed in s.list()[0]}
    assert isinstance(listed["e" * 32], DataLoss)
    assert listed["f" * 32] == record("f" * 32)
    s.close()


def test_store_files_are_private(tmp_path):
    import os
    import stat

    s = RecordStore(str(tmp_path / "new" / "k.db"))
    s.add(record("1" * 32))
    assert stat.S_IMODE(os.stat(tmp_path / "new").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "new" / "k.db").st_mode) == 0o600
    s.close()


def test_a_schema_3_store_from_before_paging_gets_its_listing_index(tmp_path):
    path = str(tmp_path / "k.db")
    RecordStore(path).close()
    db = sqlite3.connect(path)
    db.execute("DROP INDEX records_by_time")   # as keeptime 0.1 left it
    db.close()
    RecordStore(path).close()
    db = sqlite3.connect(path)
    plan = db.execute("EXPLAIN QUERY PLAN SELECT id FROM records WHERE (created_realtime_ns, id) > (1, 'a')"
                      " ORDER BY created_realtime_ns, id LIMIT 5").fetchall()
    db.close()
    assert "USING INDEX records_by_time" in plan[0][-1] or "USING COVERING INDEX records_by_time" in plan[0][-1]
