"""The limits keeptime.proto declares, and keeptimed's door that applies them."""
import pytest
from google.protobuf.descriptor import FieldDescriptor

from keeptime import limits
from keeptime.v1 import keeptime_pb2 as pb
from keeptimed import door, paging
from keeptimed.errors import InvalidArgument

TEXT = (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES)


def _reachable(descriptor, seen=None):
    """descriptor and every message type its fields lead to (map entries included)."""
    seen = {} if seen is None else seen
    if descriptor.full_name not in seen:
        seen[descriptor.full_name] = descriptor
        for field in descriptor.fields:
            if field.message_type is not None:
                _reachable(field.message_type, seen)
    return seen


def _at_the_door():
    """Every message type a caller sends: requests, and the records they carry as bytes."""
    seen = {}
    for method in door.SERVICE.methods:
        _reachable(method.input_type, seen)
    _reachable(pb.Record.DESCRIPTOR, seen)
    return seen.values()


def _unlimited():
    for message in _at_the_door():
        if message.GetOptions().map_entry:
            continue   # its map field carries the limit
        for field in message.fields:
            limit = limits.of(field)
            is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
            if field.type in TEXT and not (limit and limit.max_bytes):
                yield f"{message.name}.{field.name}: no max_bytes"
            if (is_map or (field.is_repeated and field.type in TEXT)) and not (limit and limit.max_items):
                yield f"{message.name}.{field.name}: no max_items"
            if is_map and not limit.max_key_bytes:
                yield f"{message.name}.{field.name}: no max_key_bytes"


def test_every_text_list_and_map_a_caller_sends_has_a_limit():
    assert list(_unlimited()) == []


def test_the_message_limit_is_the_same_for_keeptimed_and_its_clients():
    assert limits.MAX_MESSAGE_BYTES == 8 << 20
    assert dict(limits.CHANNEL_OPTIONS) == {"grpc.max_receive_message_length": 8 << 20,
                                            "grpc.max_send_message_length": 8 << 20}
    assert limits.RECORD_FILE_BYTES < limits.MAX_MESSAGE_BYTES


def _largest_summary() -> pb.RecordSummary:
    """A summary of a record with every field the door lets through at its largest."""
    record_limit = {f.name: limits.of(f) for f in pb.Record.DESCRIPTOR.fields if limits.of(f)}
    labels = record_limit["labels"]
    summary = pb.RecordSummary(
        id="f" * 32, root_pid=-2**31, clocks=pb.ClockValues(monotonic_ns=-1, boottime_ns=-1), realtime_ns=-1,
        boot_id="b" * record_limit["boot_id"].max_bytes, hostname="h" * record_limit["hostname"].max_bytes,
        process_count=2**32 - 1, namespace_count=2**32 - 1, source="s" * record_limit["source"].max_bytes,
        owner_uid=2**32 - 1,
    )
    for n in range(labels.max_items):
        summary.labels[f"{n:0{labels.max_key_bytes}d}"] = "v" * labels.max_bytes
    return summary


def test_a_full_page_of_the_largest_summaries_fits_one_message():
    page = pb.ListRecordsResponse(next_page_token="9" * 19 + "." + "f" * 32 + ".4294967295")
    for _ in range(paging.MAX_PAGE_SIZE):
        page.records.append(_largest_summary())
    assert page.ByteSize() < limits.MAX_MESSAGE_BYTES


def test_a_value_over_its_limit_is_refused_naming_the_field_not_the_value():
    request = pb.RestoreRequest(record_id="a" * 32, command=pb.Command(argv=["/bin/true"], cwd="/" + "x" * 5000))
    with pytest.raises(InvalidArgument) as caught:
        door.check(request)
    assert caught.value.message == "command.cwd is 5001 bytes, more than the 4095 allowed"
    labels = pb.CheckpointRequest(pid=1, labels={f"k{n}": "v" for n in range(17)})
    with pytest.raises(InvalidArgument, match="labels has 17 entries, more than the 16 allowed"):
        door.check(labels)
    with pytest.raises(InvalidArgument, match="a key of labels is 129 bytes"):
        door.check(pb.CheckpointRequest(labels={"k" * 129: "v"}))
    with pytest.raises(InvalidArgument, match=r"^command.env\[1\] is 131074 bytes"):
        door.check(pb.ExecRequest(command=pb.Command(argv=["x"], env=["A=1", "B=" + "é" * 65536])))
    door.check(pb.RestoreRequest(record_id="a" * 32, command=pb.Command(argv=["/bin/true"], cwd="/" * 4095)))


def test_an_undecodable_request_is_recognised():
    decode = door._decoder(pb.GetRecordRequest)
    assert isinstance(decode(b"\x0a\x02\xff\xfe"), door.Undecodable)   # a string that is not UTF-8
    assert decode(b"\x0a\x04abcd").record_id == "abcd"
