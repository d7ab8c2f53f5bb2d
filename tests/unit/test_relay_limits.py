"""The relay out of file descriptors: it pauses accepting instead of spinning
on a listener that stays readable, and accepts again once descriptors free up.

The relay runs in a child process whose descriptor limit the test can
exhaust without touching its own.
"""
import socket
import subprocess
import sys
import time

from helpers.procstat import cpu_seconds

RELAY_OUT_OF_FDS = """
import logging, os, resource, sys
from keeptimed.relay import CallerRelay
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
relay = CallerRelay(sys.argv[1])
relay.start()
fillers = []
try:
    while True:
        fillers.append(os.open("/dev/null", os.O_RDONLY))
except OSError:
    pass
print("full", flush=True)
sys.stdin.readline()
for fd in fillers:
    os.close(fd)
print("freed", flush=True)
sys.stdin.readline()
relay.stop()
"""


def test_out_of_descriptors_the_relay_pauses_instead_of_spinning(tmp_path):
    path = str(tmp_path / "public.sock")
    log_path = tmp_path / "relay.log"
    with open(log_path, "w") as log_file:   # a file, not a pipe: a flood of lines must not block it
        child = subprocess.Popen([sys.executable, "-c", RELAY_OUT_OF_FDS, path], text=True,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_file)
    try:
        assert child.stdout.readline() == "full\n"
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(path)   # waits in the backlog: the relay has no descriptor to accept it with
        busy_from = cpu_seconds(child.pid)
        time.sleep(2)
        assert cpu_seconds(child.pid) - busy_from < 0.5, "the relay spins on a listener it cannot accept from"

        child.stdin.write("\n")
        child.stdin.flush()
        assert child.stdout.readline() == "freed\n"
        # Accepted now; no gRPC server listens behind this relay, so once the
        # client speaks gRPC the relay closes the connection.
        client.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        client.settimeout(10)
        assert client.recv(1) == b""
        client.close()
        child.stdin.write("\n")
        child.stdin.flush()
        child.communicate(timeout=30)
    finally:
        child.kill()
    log = log_path.read_text()
    assert child.returncode == 0, log
    pauses = log.count("pausing new connections")
    assert 1 <= pauses <= 10, log   # one line per pause, about two a second: no flood
    assert "accept failed" not in log and "cannot reach the gRPC server" in log
