"""Fuzzing the parsers keeptime exposes: whatever arrives, a clear status or
usage error comes back, and nothing crashes. Besides record files and the
CLI's arguments: bytes sent as any request, requests whose every field is
drawn around its size limit, and records carrying any 64-bit values and
any text, put through every call that reads a record."""
import contextlib
import io
import subprocess

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from google.protobuf import message_factory

from keeptime import cli, limits
from keeptime.criu.image import TimensClocks, encode_timens
from keeptime.v1 import keeptime_pb2 as pb
from keeptime.v1 import keeptime_pb2_grpc as pb_grpc
from keeptimed import recordfile

CLEAR_IMPORT_STATUSES = {
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.DATA_LOSS, grpc.StatusCode.FAILED_PRECONDITION,
}


@pytest.fixture(scope="module")
def stub(daemon):
    with grpc.insecure_channel(f"unix:{daemon.socket}") as channel:
        yield pb_grpc.KeeptimeStub(channel), channel


def _import_is_refused_clearly(stub, data: bytes) -> None:
    try:
        stub.ImportRecord(pb.ImportRecordRequest(data=data), timeout=30)
    except grpc.RpcError as exc:
        assert exc.code() in CLEAR_IMPORT_STATUSES, (exc.code(), exc.details())
        assert exc.details() and "\n" not in exc.details()
    else:
        pytest.fail(f"keeptimed accepted {len(data)} bytes of noise as a record")


@pytest.mark.root
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=4096))
def test_import_of_arbitrary_bytes_is_refused_with_a_clear_status(stub, data):
    _import_is_refused_clearly(stub[0], data)


@pytest.mark.root
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=2048))
def test_import_of_bytes_with_the_right_magic_is_refused_with_a_clear_status(stub, body):
    _import_is_refused_clearly(stub[0], recordfile.MAGIC + body)


@pytest.mark.root
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.floats(min_value=0, max_value=1, exclude_max=True), byte=st.integers(1, 255),
       cut=st.booleans())
def test_import_of_a_damaged_real_record_is_refused(stub, sleeper_record, position, byte, cut):
    data = sleeper_record
    index = int(position * len(data))
    damaged = data[:index] if cut else data[:index] + bytes([data[index] ^ byte]) + data[index + 1:]
    _import_is_refused_clearly(stub[0], damaged)


@pytest.fixture(scope="module")
def sleeper_record(stub):
    sleeper = subprocess.Popen(["sleep", "600"])
    try:
        record = stub[0].Checkpoint(pb.CheckpointRequest(pid=sleeper.pid), timeout=30).record
        yield stub[0].ExportRecord(pb.ExportRecordRequest(record_id=record.id), timeout=30).data
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.root
def test_the_daemon_is_healthy_after_the_fuzzing(stub):
    status = health_pb2_grpc.HealthStub(stub[1]).Check(health_pb2.HealthCheckRequest(), timeout=10).status
    assert status == health_pb2.HealthCheckResponse.SERVING


WORDS = st.sampled_from([
    "checkpoint", "plan", "restore", "wait", "show", "list", "rm", "clocks", "exec", "--json", "--policy",
    "freeze", "bogus", "--env", "K=V", "--uid", "-1", "0", "99999999999999999999", "--", "--cwd", "--timeout",
    "nan", "--stdout", "", "\x00", "--env-from-caller", "-h",
])


@settings(max_examples=300, deadline=None)
@given(argv=st.lists(st.one_of(WORDS, st.text(max_size=12)), max_size=8))
def test_cli_never_crashes_on_any_arguments(argv):
    # A socket nobody serves: parsing is what is being fuzzed, not the daemon.
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = cli.main(["--socket", "/nonexistent/keeptime.sock", "--timeout", "0.5", *argv])
        except SystemExit as exc:   # argparse: usage errors and --help
            code = exc.code
    assert code in (0, 1, 2, 3), code
    assert "Traceback" not in err.getvalue()


# -- the door: bytes as any request, fields around their limits ------------------

SERVICE = pb.DESCRIPTOR.services_by_name["Keeptime"]
# Exec and Restore start programs: drawn requests name a pid and a record that do not exist.
STARTS_PROGRAMS = ("Exec", "Restore")
UNCLEAR = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNAVAILABLE}


def _is_clear(exc: grpc.RpcError) -> None:
    assert exc.code() not in UNCLEAR, (exc.code(), exc.details())
    message = exc.details() or ""
    assert message and "\n" not in message and len(message.encode()) <= 1024, message[:200]


def _call(channel, method: str, data: bytes) -> None:
    try:
        channel.unary_unary(f"/{SERVICE.full_name}/{method}")(data, timeout=30)
    except grpc.RpcError as exc:
        _is_clear(exc)


@pytest.mark.root
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from([m.name for m in SERVICE.methods if m.name not in STARTS_PROGRAMS]),
       data=st.binary(max_size=512))
def test_bytes_sent_as_any_request_get_a_clear_status(stub, method, data):
    _call(stub[1], method, data)


TEXT = st.characters(codec="utf-8")   # control characters and multi-byte ones included
_F = pb.Record.DESCRIPTOR.fields_by_name["realtime_ns"]
INTEGERS = {_F.CPPTYPE_INT32: (-2**31, 2**31 - 1), _F.CPPTYPE_UINT32: (0, 2**32 - 1),
            _F.CPPTYPE_INT64: (-2**63, 2**63 - 1), _F.CPPTYPE_UINT64: (0, 2**64 - 1)}


@st.composite
def _sized_text(draw, limit):
    """Text (or bytes) around a limit: empty, short, at it, just past it, far past it."""
    size = draw(st.sampled_from([0, 1, 5, limit - 1, limit, limit + 1, 3 * limit + 7]) if limit
                else st.integers(0, 64))
    return draw(TEXT) * max(size, 0)


def _fill(draw, message, depth=0):
    """Draw every field of message (nested ones too), sizes around their limits."""
    for field in message.DESCRIPTOR.fields:
        if not draw(st.booleans()):
            continue
        limit = limits.of(field)
        max_bytes = limit.max_bytes if limit else 0
        value_type = field.message_type
        if value_type is not None and value_type.GetOptions().map_entry:
            count = draw(st.sampled_from([1, 2, limit.max_items + 1]))
            getattr(message, field.name).update(
                {f"{n}{draw(_sized_text(limit.max_key_bytes))}": draw(_sized_text(max_bytes)) for n in range(count)})
        elif value_type is not None:
            if depth < 3 and not field.is_repeated:
                _fill(draw, getattr(message, field.name), depth + 1)
                getattr(message, field.name).SetInParent()
        elif field.type in (field.TYPE_STRING, field.TYPE_BYTES):
            values = [draw(_sized_text(max_bytes))]
            if field.is_repeated and draw(st.booleans()):
                values = [draw(TEXT)] * (limit.max_items + 1)   # many short items, not many long ones
            values = [v.encode() if field.type == field.TYPE_BYTES else v for v in values]
            if field.is_repeated:
                getattr(message, field.name).extend(values)
            else:
                setattr(message, field.name, values[0])
        elif field.type == field.TYPE_BOOL:
            setattr(message, field.name, draw(st.booleans()))
        elif field.enum_type is not None:
            setattr(message, field.name, draw(st.integers(-1, 5)))
        elif not field.is_repeated and field.cpp_type in INTEGERS:
            low, high = INTEGERS[field.cpp_type]
            setattr(message, field.name, draw(st.integers(low, high)))


@st.composite
def _requests(draw):
    method = draw(st.sampled_from(list(SERVICE.methods)))
    request = message_factory.GetMessageClass(method.input_type)()
    _fill(draw, request)
    if method.name in STARTS_PROGRAMS:
        request.ClearField("record_id" if method.name == "Restore" else "pid")
        if method.name == "Restore":
            request.record_id = "0" * 32
    return method.name, request


@pytest.mark.root
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(call=_requests())
def test_any_request_with_fields_around_their_limits_gets_a_clear_status(stub, gone_pid, call):
    method, request = call
    if "pid" in request.DESCRIPTOR.fields_by_name:
        request.pid = gone_pid
    data = request.SerializeToString()
    if len(data) > limits.MAX_MESSAGE_BYTES:
        return   # refused by gRPC itself (RESOURCE_EXHAUSTED), not keeptimed's door
    _call(stub[1], method, data)


@pytest.fixture(scope="module")
def gone_pid():
    gone = subprocess.Popen(["true"])
    gone.wait()
    return gone.pid


# -- records carrying anything ----------------------------------------------------

INT64 = st.integers(min_value=-2**63, max_value=2**63 - 1)
EXTREMES = st.sampled_from([-2**63, -1, 0, 1, 2**62, 2**63 - 1])
CLOCK = st.one_of(st.integers(0, 10**18), INT64)           # mostly plausible, so the record gets in
HOST_CLOCK = st.one_of(EXTREMES, INT64)                    # what the downtime is measured from


@st.composite
def _records(draw, boot_id: str, base: pb.Record):
    record = pb.Record()
    record.CopyFrom(base)
    record.id = draw(st.from_regex(r"[0-9a-f]{32}", fullmatch=True))
    record.clocks.monotonic_ns, record.clocks.boottime_ns = draw(CLOCK), draw(CLOCK)
    record.host_clocks.monotonic_ns, record.host_clocks.boottime_ns = draw(HOST_CLOCK), draw(HOST_CLOCK)
    record.realtime_ns = draw(st.one_of(CLOCK, EXTREMES))
    record.boot_id = draw(st.sampled_from([boot_id, boot_id, "", "another-boot"]))   # this boot: host clocks count
    for name in ("hostname", "source"):
        setattr(record, name, draw(_sized_text(limits.of(pb.Record.DESCRIPTOR.fields_by_name[name]).max_bytes)))
    record.labels[draw(st.text(max_size=8))] = draw(st.text(max_size=300))
    return record


@pytest.mark.root
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_record_with_any_values_is_refused_or_served_by_every_call_clearly(stub, sleeper_record, data):
    kt = stub[0]
    base = recordfile.decode(sleeper_record)
    record = data.draw(_records(kt.GetInfo(pb.GetInfoRequest(), timeout=30).boot_id, base))
    record_file = recordfile.encode(record)
    try:
        kt.ImportRecord(pb.ImportRecordRequest(data=record_file), timeout=30)
    except grpc.RpcError as exc:
        _is_clear(exc)
        return
    image = encode_timens(TimensClocks(max(record.clocks.monotonic_ns, 0), max(record.clocks.boottime_ns, 0)))
    calls = [
        *(lambda p=p: kt.Plan(pb.PlanRequest(record_id=record.id, policy=p), timeout=30) for p in (1, 2, 3)),
        lambda: kt.GetRecord(pb.GetRecordRequest(record_id=record.id), timeout=30),
        lambda: kt.ListRecords(pb.ListRecordsRequest(), timeout=30),
        lambda: kt.ExportRecord(pb.ExportRecordRequest(record_id=record.id), timeout=30),
        lambda: kt.PlanCriuRestore(pb.PlanCriuRestoreRequest(
            record=pb.RecordRef(record_file=record_file), timens_image=image, policy=pb.POLICY_ELAPSED), timeout=30),
        lambda: kt.VerifyRestore(pb.VerifyRestoreRequest(
            record=pb.RecordRef(record_id=record.id), pid=base.root_pid, stage="fuzz"), timeout=30),
    ]
    try:
        for call in calls:
            try:
                call()
            except grpc.RpcError as exc:
                _is_clear(exc)
    finally:
        kt.DeleteRecord(pb.DeleteRecordRequest(record_id=record.id), timeout=30)
