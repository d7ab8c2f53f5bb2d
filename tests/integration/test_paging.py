"""ListRecords and ListRestores come in pages, so a store of any size lists
completely: more summaries than one gRPC message may carry (the client's
limit is 4 MiB) come back whole, in order, through Client and the CLI."""
import json
import sqlite3

import grpc
import pytest

from helpers.daemon import RunningDaemon
from keeptime.v1 import keeptime_pb2 as pb
from keeptimed import paging, recordfile
from keeptimed.store import RecordStore

pytestmark = pytest.mark.root

RECORDS = 20_000          # with a 256-byte label each: about 6 MiB of summaries
EVENTS = 2_500


def record(n: int) -> pb.Record:
    # Two records share each realtime_ns, so the token must also order by id.
    return pb.Record(
        id=f"{n:032x}", root_pid=1 + n, realtime_ns=1_700_000_000_000_000_000 + n // 2,
        boot_id="paging", source="checkpoint", labels={"note": "x" * 256},
        clocks=pb.ClockValues(monotonic_ns=n, boottime_ns=n),
    )


@pytest.fixture(scope="module")
def big_daemon(tmp_path_factory):
    """A daemon whose store already holds RECORDS records (written in reverse,
    so insertion order is not the listing order) and EVENTS restore events."""
    workdir = tmp_path_factory.mktemp("paging")
    db_path = str(workdir / "keeptime.db")
    RecordStore(db_path).close()   # the schema, as the daemon makes it
    db = sqlite3.connect(db_path)
    with db:   # one transaction: a test fixture need not fsync each row
        db.executemany(
            "INSERT INTO records (id, created_realtime_ns, data) VALUES (?, ?, ?)",
            ((r.id, r.realtime_ns, recordfile.encode(r)) for r in map(record, reversed(range(RECORDS)))),
        )
    db.close()
    store = RecordStore(db_path)
    for n in range(EVENTS):
        store.add_restore(pb.RestoreEvent(record_id=f"{n % 3:032x}", pid=n + 1, policy=pb.POLICY_FREEZE,
                                          stage="post-restore", ok=True, message=f"event {n}"))
    store.close()
    running = RunningDaemon(workdir, db=db_path).start()
    yield running
    assert running.stop() == 0, running.log()


def test_more_records_than_one_message_carries_list_completely_and_in_order(big_daemon):
    with big_daemon.client() as client:
        listed = [summary.id for summary in client.list()]
    assert listed == [f"{n:032x}" for n in range(RECORDS)]


def test_one_page_holds_what_was_asked_and_a_token_to_the_next(big_daemon):
    with grpc.insecure_channel(f"unix://{big_daemon.socket}") as channel:
        list_records = channel.unary_unary(
            "/keeptime.v1.Keeptime/ListRecords",
            request_serializer=pb.ListRecordsRequest.SerializeToString,
            response_deserializer=pb.ListRecordsResponse.FromString,
        )
        first = list_records(pb.ListRecordsRequest(page_size=3), timeout=30)
        assert [s.id for s in first.records] == [f"{n:032x}" for n in range(3)]
        second = list_records(pb.ListRecordsRequest(page_size=3, page_token=first.next_page_token), timeout=30)
        assert [s.id for s in second.records] == [f"{n:032x}" for n in range(3, 6)]
        default = list_records(pb.ListRecordsRequest(), timeout=30)
        assert len(default.records) == paging.DEFAULT_PAGE_SIZE
        capped = list_records(pb.ListRecordsRequest(page_size=10**6), timeout=30)
        assert len(capped.records) == paging.MAX_PAGE_SIZE
        last_start = f"{(RECORDS - 2) // 2 + 1_700_000_000_000_000_000 - 1}.{RECORDS - 3:032x}.0"
        last = list_records(pb.ListRecordsRequest(page_size=5, page_token=last_start), timeout=30)
        assert [s.id for s in last.records] == [f"{n:032x}" for n in (RECORDS - 2, RECORDS - 1)]
        assert last.next_page_token == ""


def test_restore_events_list_completely_and_by_record(big_daemon):
    with big_daemon.client() as client:
        events = client.restores()
        assert [e.message for e in events] == [f"event {n}" for n in range(EVENTS)]
        assert [e.pid for e in client.restores(f"{1:032x}")] == [n + 1 for n in range(EVENTS) if n % 3 == 1]


def test_the_cli_lists_every_record(big_daemon):
    result = big_daemon.cli("--json", "list", timeout=120)
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)) == RECORDS
