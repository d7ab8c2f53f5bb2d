"""What a uid other than root may keep in the store (quota), and pages of
records bounded in bytes as well as in count."""
import pytest

from keeptime.v1 import keeptime_pb2 as pb
from keeptimed import recordfile
from keeptimed.limits import LimitExceeded, Limits
from keeptimed.store import RecordStore

USER = 1000


def record(n: int, label_bytes: int = 0) -> pb.Record:
    """Record n, about label_bytes larger than a bare one (in process names:
    the door bounds each label, not how many processes a tree has)."""
    processes = [pb.ProcessInfo(pid=i + 1, comm="x" * 60) for i in range(label_bytes // 64)]
    return pb.Record(id=f"{n:032x}", root_pid=7, realtime_ns=1_000 + n, source="checkpoint", processes=processes,
                     clocks=pb.ClockValues(monotonic_ns=5, boottime_ns=6))


def size(r: pb.Record) -> int:
    return len(recordfile.encode(r))


def open_store(tmp_path, **limits) -> RecordStore:
    return RecordStore(str(tmp_path / "k.db"), Limits.defaults(root_store_reserve=0, **limits))


def test_records_per_uid_are_limited_root_is_not_and_a_deletion_makes_room(tmp_path):
    store = open_store(tmp_path, user_records=2)
    store.add(record(1), USER)
    store.add(record(2), USER)
    with pytest.raises(LimitExceeded, match="uid 1000 keeps 2 records, the most user_records allows") as caught:
        store.add(record(3), USER)
    assert caught.value.limit == "user_records" and caught.value.status == "RESOURCE_EXHAUSTED"
    store.add(record(3), USER + 1)   # each uid its own
    for n in range(4, 10):
        store.add(record(n), 0)      # root: no limit
    store.add(record(1), USER)       # the same record again: nothing to do, nothing refused
    store.delete(record(1).id, USER)
    store.add(record(10), USER)
    store.close()


def test_bytes_per_uid_are_limited_and_counted_again_at_open(tmp_path):
    big = record(1, label_bytes=4000)
    store = open_store(tmp_path, user_store_bytes=2 * size(big) + 200)
    store.add(big, USER)
    store.add(record(2, label_bytes=4000), USER)
    with pytest.raises(LimitExceeded, match=f"uid 1000 keeps {2 * size(big)} bytes of records and this one has") as \
            caught:
        store.add(record(3, label_bytes=4000), USER)
    assert caught.value.limit == "user_store_bytes"
    store.add(record(4), USER)   # a small one still fits
    store.close()
    reopened = open_store(tmp_path, user_store_bytes=2 * size(big) + 200)
    assert reopened.quota.usage(USER) == (3, 2 * size(big) + size(record(4)))
    with pytest.raises(LimitExceeded):
        reopened.add(record(5, label_bytes=4000), USER)
    reopened.close()


def test_the_last_free_bytes_of_the_disk_are_roots(tmp_path):
    store = RecordStore(str(tmp_path / "k.db"), Limits.defaults(root_store_reserve=2**62))   # more than any disk
    with pytest.raises(LimitExceeded, match="keeps the last .* \\(root_store_reserve\\) for root's writes") as caught:
        store.add(record(1), USER)
    assert caught.value.limit == "root_store_reserve"
    with pytest.raises(LimitExceeded, match="root_store_reserve"):
        store.add_restore(pb.RestoreEvent(record_id=record(1).id, pid=1, ok=True, message="m"), USER)
    store.add(record(1), 0)
    store.add_restore(pb.RestoreEvent(record_id=record(1).id, pid=1, ok=True, message="m"), 0)
    store.close()


def test_a_uids_restore_verdicts_are_a_log_its_oldest_dropped(tmp_path):
    store = open_store(tmp_path, user_restores=3)
    ids = [store.add_restore(pb.RestoreEvent(record_id="a" * 32, pid=n, ok=True, message=f"{n}"), USER)
           for n in range(5)]
    roots = [store.add_restore(pb.RestoreEvent(record_id="a" * 32, pid=n, ok=True), 0) for n in range(5)]
    assert [e.id for e in store.list_restores(owner_uid=USER)] == ids[2:]
    assert [e.id for e in store.list_restores(owner_uid=0)] == roots
    store.close()
    reopened = open_store(tmp_path, user_restores=3)
    newest = reopened.add_restore(pb.RestoreEvent(record_id="a" * 32, pid=9, ok=True), USER)
    assert [e.id for e in reopened.list_restores(owner_uid=USER)] == ids[3:] + [newest]
    reopened.close()


def test_a_page_of_records_ends_at_its_byte_budget_but_holds_at_least_one(tmp_path):
    store = RecordStore(str(tmp_path / "k.db"))
    records = [record(n, label_bytes=1000 * (n % 3)) for n in range(20)]
    for r in records:
        store.add(r)
    budget = 3000
    listed, after = [], None
    while True:
        page, more = store.list(after=after, limit=10, max_bytes=budget)
        assert page and (len(page) == 1 or sum(size(r) for _, r in page) <= budget)
        listed += [r for _, r in page]
        if not more:
            break
        after = page[-1][0]
    assert listed == records
    page, more = store.list(limit=10, max_bytes=1)   # one record is larger than the budget: still one
    assert [r for _, r in page] == records[:1] and more
    page, more = store.list(limit=5)
    assert [r for _, r in page] == records[:5] and more
    page, more = store.list(after=page[-1][0])
    assert [r for _, r in page] == records[5:] and not more
    store.close()
