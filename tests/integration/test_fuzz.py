"""Fuzzing the parsers keeptime exposes: whatever arrives, a clear status or
usage error comes back, and nothing crashes."""
import contextlib
import io

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keeptime import cli
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
    import subprocess

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
