"""verify(): which dumped values each namespace of a restored tree is held to."""
from keeptime.v1 import keeptime_pb2 as pb
from keeptimed.policies import Clocks
from keeptimed.verify import verify

S = 10**9


def namespace(inode: int, seconds: int, pids: list[int]) -> pb.TimeNamespace:
    return pb.TimeNamespace(inode=inode, clocks=pb.ClockValues(monotonic_ns=seconds * S, boottime_ns=seconds * S),
                            pids=pids)


def tree(root_inode: int, *namespaces: pb.TimeNamespace) -> pb.Record:
    record = pb.Record(root_pid=namespaces[0].pids[0], root_timens_inode=root_inode, namespaces=namespaces)
    record.processes.extend(pb.ProcessInfo(pid=pid, timens_inode=ns.inode) for ns in namespaces for pid in ns.pids)
    return record


# At dump: the root's namespace read 1000 s, an inner one (pid 20) 100 s.
DUMPED = tree(1, namespace(1, 1000, [10, 11]), namespace(2, 100, [20]))


def test_an_inner_namespace_is_held_to_what_its_pids_read_at_dump():
    restored = tree(7, namespace(7, 1001, [10, 11]), namespace(8, 101, [20]))
    event = verify(restored, "r", Clocks(1000 * S, 1000 * S), DUMPED)
    assert event.ok, event.message
    assert event.timens_inode == 7 and event.dumped.monotonic_ns == 1000 * S
    assert event.message.endswith("(3 processes in 2 time namespaces)")


def test_a_namespace_no_dumped_pid_was_in_is_held_to_the_root_values():
    restored = tree(7, namespace(7, 1001, [10]), namespace(8, 101, [30]))
    event = verify(restored, "r", Clocks(1000 * S, 1000 * S), DUMPED)
    assert not event.ok and event.timens_inode == 8 and event.dumped.monotonic_ns == 1000 * S
    assert event.message == ("clocks regressed: MONOTONIC is 899.000000000 s below the dumped value, BOOTTIME is 899.000000000 s "
                             "below the dumped value in time namespace 8 (pids 30)")


def test_the_event_shows_the_namespace_that_regressed_furthest():
    restored = tree(7, namespace(7, 999, [10]), namespace(8, 50, [20]))
    event = verify(restored, "r", Clocks(1000 * S, 1000 * S), DUMPED)
    assert not event.ok and event.timens_inode == 8 and event.dumped.monotonic_ns == 100 * S
    assert len(event.message.split("; ")) == 2
    assert "in time namespace 7 (pids 10)" in event.message and "in time namespace 8 (pids 20)" in event.message


def test_the_message_names_a_bounded_number_of_regressed_namespaces():
    """The verdict is stored: a tree of a thousand regressed namespaces gives a message of a few lines' worth."""
    restored = tree(7, *(namespace(100 + n, 1, [1000 + n]) for n in range(1000)))
    event = verify(restored, "r", Clocks(1000 * S, 1000 * S))
    assert not event.ok and len(event.message) < 2000
    assert event.message.endswith("; and 992 more time namespaces")
