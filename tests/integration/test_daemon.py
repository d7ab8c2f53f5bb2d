"""keeptimed as a process: its socket, persistence, shutdown and services."""
import concurrent.futures
import os
import signal
import stat
import subprocess
import sys
import threading
import time

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from helpers.daemon import RunningDaemon
from keeptime import errors
from keeptime.v1 import keeptime_pb2 as pb

pytestmark = pytest.mark.root


def test_socket_is_owner_only_from_the_start(fresh_daemon):
    mode = os.stat(fresh_daemon.socket).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert os.stat(fresh_daemon.socket).st_uid == 0


def test_records_survive_a_restart(fresh_daemon):
    with fresh_daemon.client() as c:
        record = c.checkpoint_record(os.getpid(), labels={"app": "test"})
    assert fresh_daemon.stop() == 0
    fresh_daemon.start()
    with fresh_daemon.client() as c:
        assert c.get(record.id) == record
        assert [r.id for r in c.list()] == [record.id]


def test_sigterm_drains_in_flight_calls_and_exits_zero(fresh_daemon):
    with fresh_daemon.client() as c:
        record_id = c.checkpoint(os.getpid())
        sleeper = c.restore(record_id, ["/bin/sleep", "1"])
        outcome = {}

        def waiter():
            try:
                outcome["status"] = c.wait(sleeper.pid)
            except errors.KeeptimeError as exc:
                outcome["error"] = exc

        thread = threading.Thread(target=waiter)
        thread.start()
        time.sleep(0.2)
        assert fresh_daemon.stop() == 0
        thread.join(10)
    assert outcome == {"status": 0}
    assert not os.path.exists(fresh_daemon.socket)
    assert "keeptimed stopped" in fresh_daemon.log()


def test_the_pid_file_names_the_serving_daemon_and_goes_with_a_clean_stop(tmp_path):
    """What deploy/install.sh starts without systemd: --pid-file, then SIGTERM."""
    pid_file = tmp_path / "run" / "keeptimed.pid"
    daemon = RunningDaemon(tmp_path).start("--pid-file", str(pid_file))
    try:
        assert pid_file.read_text() == f"{daemon.proc.pid}\n"
        assert stat.S_IMODE(pid_file.stat().st_mode) == 0o644
    finally:
        assert daemon.stop() == 0
    assert not pid_file.exists()
    # A pid file a successor has taken over is left alone.
    daemon.start("--pid-file", str(pid_file))
    pid_file.write_text("1\n")
    assert daemon.stop() == 0 and pid_file.read_text() == "1\n"


def test_a_stale_socket_is_replaced_but_a_live_one_is_not(tmp_path):
    first = RunningDaemon(tmp_path).start()
    try:
        refused = subprocess.run(
            [sys.executable, "-m", "keeptimed", "--socket", first.socket, "--db", str(tmp_path / "other.db")],
            capture_output=True, text=True, timeout=60,
        )
        assert refused.returncode == 1
        assert "another process is serving" in refused.stderr
        assert first.health() == "SERVING"
    finally:
        first.stop(signal.SIGKILL)  # leaves the socket file behind
    assert os.path.exists(first.socket)
    restarted = RunningDaemon(tmp_path).start()
    assert restarted.health() == "SERVING"
    assert restarted.stop() == 0


def test_health_and_reflection_are_served(daemon):
    assert daemon.health() == "SERVING"
    with grpc.insecure_channel(f"unix:{daemon.socket}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {s.name for reply in replies for s in reply.list_services_response.service}
    assert {"keeptime.v1.Keeptime", "grpc.health.v1.Health"} <= names


def test_export_then_import_moves_a_record_to_another_daemon(daemon, tmp_path):
    other = RunningDaemon(tmp_path).start()
    try:
        with daemon.client() as source, other.client() as target:
            record = source.checkpoint_record(os.getpid())
            data = source.export_record(record.id[:8])
            assert target.import_record(data) == record.id
            assert target.import_record(data) == record.id  # retried import: idempotent
            assert target.get(record.id) == record
            assert target.plan(record.id, policy="freeze").recorded == record.clocks
            truncated = data[: len(data) // 2]
            with pytest.raises(errors.DataLoss):
                target.import_record(truncated)
    finally:
        assert other.stop() == 0


def test_delete_removes_and_list_orders(client):
    first = client.checkpoint(os.getpid())
    second = client.checkpoint(os.getpid())
    ids = [r.id for r in client.list()]
    assert ids.index(first) < ids.index(second)
    assert client.delete(first[:10]) == first
    with pytest.raises(errors.NotFound):
        client.get(first)
    assert second in [r.id for r in client.list()]


@pytest.mark.root
def test_blocked_waits_are_capped_so_other_callers_keep_their_workers(tmp_path, clockprobe):
    daemon = RunningDaemon(tmp_path).start("--workers", "4")   # at most 2 blocked Waits
    sleeper = subprocess.Popen(["sleep", "600"])
    try:
        with daemon.client() as kt:
            record_id = kt.checkpoint(sleeper.pid)
            pids = [kt.restore(record_id, [clockprobe, "30"]).pid for _ in range(3)]
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                blocked = [pool.submit(kt.wait, pid, 60) for pid in pids[:2]]
                time.sleep(1.0)
                with pytest.raises(errors.ResourceExhausted, match="Wait calls are already blocked"):
                    kt._call("Wait", pb.WaitRequest(pid=pids[2]), timeout=5)
                assert kt.list()   # other calls are still served
                for pid in pids:
                    os.kill(pid, signal.SIGKILL)
                assert [f.result(timeout=30) for f in blocked] == [128 + 9, 128 + 9]
            assert kt.wait(pids[2], timeout=30) == 128 + 9   # an exited pid needs no slot
    finally:
        sleeper.kill()
        sleeper.wait()
        daemon.stop()
