"""The CRIU hook's wire on keeptimed's socket (keeptime.criu.hookwire), spoken
by hand: the relay tells it from gRPC by the first bytes, whatever the gRPC
server said meanwhile; bad requests get a clear answer; descriptors sent
where they do not belong are closed."""
import os
import select
import socket
import time

import pytest

from keeptime.criu import hookwire

pytestmark = pytest.mark.root


def connect(daemon) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(20)
    sock.connect(daemon.socket)
    return sock


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_a_hook_that_speaks_late_still_gets_the_hook_answer(daemon):
    """The gRPC server greets every connection at once (HTTP/2 SETTINGS): that
    greeting must never reach a connection that turns out to be the hook's."""
    with connect(daemon) as sock:
        time.sleep(0.3)   # long enough for the greeting to be there
        sock.sendall(hookwire.encode_request({"action": "pre-dump", "fds": ""}))
        code, message = hookwire.read_reply(sock)
    assert (code, message) == (0, "")


def test_a_request_without_criu_environment_is_a_usage_error(daemon):
    with connect(daemon) as sock:
        sock.sendall(hookwire.encode_request({"action": "post-dump", "fds": ""}))
        code, message = hookwire.read_reply(sock)
    assert code == 2 and "CRTOOLS_IMAGE_DIR is not set" in message


@pytest.mark.parametrize("request_bytes, words", [
    (hookwire.MAGIC + b"\xff\xff\xff\xff", "exceeds"),
    (hookwire.MAGIC + b"\x04\x00\x00\x00abcd", "does not end with NUL"),
    (b"KTCRIU0\n" + b"\x00" * 4, "not a keeptime CRIU hook request"),
])
def test_malformed_requests_get_a_usage_answer(daemon, request_bytes, words):
    with connect(daemon) as sock:
        sock.sendall(request_bytes)
        code, message = hookwire.read_reply(sock)
    assert code == 2 and words in message and message.count("\n") == 1
    assert daemon.health() == "SERVING"


def test_descriptors_must_be_the_ones_named(daemon, tmp_path):
    before = open_fds(daemon.proc.pid)
    with connect(daemon) as sock, open(tmp_path / "f", "w") as f:
        socket.send_fds(sock, [hookwire.encode_request({"action": "post-dump", "fds": "pidfd,config"})],
                        [f.fileno()])
        code, message = hookwire.read_reply(sock)
    assert code == 2 and "the hook sent 1 descriptors named ['pidfd', 'config']" in message
    time.sleep(0.2)
    assert open_fds(daemon.proc.pid) <= before


def test_descriptors_sent_on_a_grpc_connection_are_closed(daemon, tmp_path):
    before = open_fds(daemon.proc.pid)
    files = [open(tmp_path / f"f{i}", "w") for i in range(3)]
    try:
        for _ in range(5):
            with connect(daemon) as sock:
                socket.send_fds(sock, [b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"], [f.fileno() for f in files])
                sock.recv(100)   # the server's greeting: the connection went on as gRPC
    finally:
        for f in files:
            f.close()
    time.sleep(0.3)
    assert open_fds(daemon.proc.pid) <= before + 1


def test_a_hook_that_stalls_mid_request_is_cut_off(daemon):
    with connect(daemon) as sock:
        sock.sendall(hookwire.MAGIC + b"\x10\x00\x00\x00abc")   # 16 bytes announced, 3 sent
        started = time.monotonic()
        code, message = hookwire.read_reply(sock)
        assert code == 2 and "closed" not in message and "timed out" in message
        assert time.monotonic() - started < 10
    assert daemon.health() == "SERVING"


def test_a_file_sent_as_the_image_directory_is_refused_and_leaks_nothing(daemon, tmp_path):
    (tmp_path / "f").write_text("")
    before = open_fds(daemon.proc.pid)
    for _ in range(50):
        with connect(daemon) as sock, open(tmp_path / "f") as f:
            socket.send_fds(sock, [hookwire.encode_request(
                {"action": "post-dump", "image_dir": "x", "init_pid": "1", "fds": "image_dir"})], [f.fileno()])
            code, message = hookwire.read_reply(sock)
        assert code == 2 and "not an open directory" in message
    time.sleep(0.2)
    assert open_fds(daemon.proc.pid) <= before


@pytest.mark.parametrize("what", ["file-as-pidfd", "pid-not-a-number", "o-path-directory"])
def test_forged_descriptors_and_fields_are_usage_errors_not_internal_ones(daemon, tmp_path, what):
    (tmp_path / "f").write_text("")
    fields = {"action": "post-restore", "init_pid": str(os.getpid()), "image_dir": str(tmp_path)}
    fds = []
    try:
        if what == "file-as-pidfd":
            fds = [os.open(tmp_path / "f", os.O_RDONLY), os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)]
            words = "is not a pidfd"
        elif what == "pid-not-a-number":
            fields["init_pid"] = "abc"
            fds = [os.pidfd_open(os.getpid()), os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)]
            words = "CRTOOLS_INIT_PID must be the root pid"
        else:
            fds = [os.pidfd_open(os.getpid()), os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)]
            words = "not an open directory"
        fields["fds"] = "pidfd,image_dir"
        with connect(daemon) as sock:
            socket.send_fds(sock, [hookwire.encode_request(fields)], fds)
            code, message = hookwire.read_reply(sock)
    finally:
        for fd in fds:
            os.close(fd)
    assert code == 2 and words in message, message
    assert "internal error" not in message and "Traceback" not in daemon.log()


def test_a_hook_that_sends_a_byte_at_a_time_is_cut_off_by_one_deadline(daemon):
    """Each byte within the per-read wait would keep a worker for ever; the
    whole request has one deadline."""
    with connect(daemon) as sock:
        started = time.monotonic()
        request = hookwire.encode_request({"action": "post-dump", "fds": ""})
        for byte in request[:-1]:
            sock.send(bytes([byte]))
            if select.select([sock], [], [], 0.8)[0]:   # keeptimed has answered: stop sending
                break
        code, message = hookwire.read_reply(sock)
    assert code == 2 and "the whole request must come within" in message
    assert time.monotonic() - started < 15


def test_a_slow_hook_does_not_hold_up_keeptimeds_shutdown(fresh_daemon):
    with connect(fresh_daemon) as sock:
        sock.send(hookwire.MAGIC[:4])
        time.sleep(0.5)
        started = time.monotonic()
        assert fresh_daemon.stop() == 0
        assert time.monotonic() - started < 5
