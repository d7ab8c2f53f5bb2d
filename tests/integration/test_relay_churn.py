"""The caller relay under many short connections, as the CLI makes them: a
client that exits with bytes of keeptimed's still unread resets its end
(ECONNRESET) just as keeptimed's gRPC server answers on the other, so both
ends of the pair are ready in one select(). Closing the pair for the first
must not leave the second to be read on a closed descriptor (EBADF)."""
import socket
import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

pytestmark = pytest.mark.root

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"            # empty SETTINGS frame
PING = b"\x00\x00\x08\x06\x00\x00\x00\x00\x00" + b"keeptime"    # PING, answered at once
THREADS = 4
CONNECTIONS_PER_THREAD = 250


def _hang_up_with_unread_bytes(path: str) -> None:
    """One connection: HTTP/2 start, wait for keeptimed's SETTINGS, PING,
    and close without reading: the relay gets ECONNRESET while the PING's
    answer arrives from the gRPC server."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(10)
        conn.connect(path)
        conn.sendall(PREFACE + SETTINGS)
        conn.recv(1, socket.MSG_PEEK)   # keeptimed's bytes are here, unread
        conn.sendall(PING)


def _churn(path: str, errors: list) -> None:
    for _ in range(CONNECTIONS_PER_THREAD):
        try:
            _hang_up_with_unread_bytes(path)
        except OSError as exc:
            errors.append(exc)


def test_many_short_connections_never_meet_a_closed_descriptor(fresh_daemon):
    errors: list = []
    threads = [threading.Thread(target=_churn, args=(fresh_daemon.socket, errors)) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    log = fresh_daemon.log()
    assert "Bad file descriptor" not in log, [line for line in log.splitlines() if "Bad file" in line][:3]
    with grpc.insecure_channel(f"unix:{fresh_daemon.socket}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
