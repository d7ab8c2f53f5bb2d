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
    assert [rid for (_, rid, _), _ in store.list()[0]] == [b.id, a.id]  # oldest first
    assert store.delete("aaaa") == a.id
    with pytest.raises(NotFound):
        store.get(a.id)


def test_prefixes_resolve_uniquely(store):
    store.add(record("abcd1" + "0" * 27))
    store.add(record("abcd2" + "0" * 27))
    assert store.resolve("abcd1") == (0, "abcd1" + "0" * 27)
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
    listed = {rid: listed for (_, rid, _), listed in s.list()[0]}
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
    db.execute("DROP INDEX records_by_owner_time")   # as keeptime 0.1 left it
    db.close()
    RecordStore(path).close()
    db = sqlite3.connect(path)
    plan = db.execute("EXPLAIN QUERY PLAN SELECT id FROM records WHERE (created_realtime_ns, id, owner_uid) >"
                      " (1, 'a', 0) ORDER BY created_realtime_ns, id, owner_uid LIMIT 5").fetchall()
    db.close()
    assert "INDEX records_by_owner_time" in plan[0][-1]


# -- every owner has its own ids ------------------------------------------------

def test_two_owners_may_hold_the_same_id_and_each_sees_only_its_own(store):
    mine, theirs = record("a" * 32), record("a" * 32)
    theirs.root_pid = 99
    store.add(theirs, owner_uid=1000)         # first: takes nothing from anyone
    store.add(mine, owner_uid=1001)           # no conflict, no AlreadyExists
    assert store.get("a" * 32, owner_uid=1001) == mine
    assert store.get("aaaa", owner_uid=1000) == theirs
    with pytest.raises(NotFound):
        store.get("a" * 32, owner_uid=1002)
    store.add(mine, 0)
    assert store.get("a" * 32) == mine        # root: its own first
    assert store.delete("a" * 32, owner_uid=1000) == "a" * 32
    assert store.get("a" * 32, owner_uid=1001) == mine
    listed = [(rid, owner) for (_, rid, owner), _ in store.list()[0]]
    assert sorted(listed) == [("a" * 32, 0), ("a" * 32, 1001)]


def test_already_exists_concerns_the_callers_own_ids_only(store):
    store.add(record("b" * 32), owner_uid=1000)
    other = record("b" * 32)
    other.root_pid = 8
    store.add(other, owner_uid=1001)          # another owner's id says nothing
    with pytest.raises(AlreadyExists, match="you already have"):
        store.add(other, owner_uid=1000)


def test_root_is_told_when_an_id_it_does_not_hold_is_held_by_several_users(store):
    store.add(record("c" * 32), owner_uid=1000)
    store.add(record("c" * 32), owner_uid=1001)
    with pytest.raises(InvalidArgument, match="held by several users"):
        store.get("c" * 32)
    assert store.get("c" * 32, owner_uid=1001) == record("c" * 32)


def test_a_record_over_a_size_limit_is_never_stored(store):
    r = record("d" * 32)
    r.labels["k"] = "v" * 257
    with pytest.raises(InvalidArgument, match=r"record.labels\['k'\] is 257 bytes, more than the 256 allowed"):
        store.add(r)
    assert store.list() == ([], False)


def test_a_version_4_store_is_keyed_by_owner_and_id_and_keeps_its_records(tmp_path):
    path = str(tmp_path / "v4.db")
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE records (id TEXT PRIMARY KEY, created_realtime_ns INTEGER NOT NULL,"
               " data BLOB NOT NULL, owner_uid INTEGER NOT NULL DEFAULT 0)")
    from keeptimed import recordfile
    db.execute("INSERT INTO records VALUES (?, 1, ?, 1000)", ("e" * 32, recordfile.encode(record("e" * 32))))
    db.execute("PRAGMA user_version=4")
    db.commit()
    db.close()
    store = RecordStore(path)
    assert store.get("e" * 32, owner_uid=1000) == record("e" * 32)
    store.add(record("e" * 32), owner_uid=1001)
    store.close()


def test_the_same_record_of_two_owners_pages_one_after_the_other(store):
    store.add(record("f" * 32), owner_uid=1000)
    store.add(record("f" * 32), owner_uid=1001)
    (first_key, _), = store.list(limit=1)[0]
    (second_key, _), = store.list(after=first_key, limit=1)[0]
    assert (first_key[2], second_key[2]) == (1000, 1001)
    assert store.list(after=second_key) == ([], False)
