"""The TCP listener: mutual TLS or nothing (except explicit insecure loopback)."""
import os
import socket
import subprocess
import sys

import grpc
import pytest

from helpers.daemon import RunningDaemon
from keeptime import Client, errors
from keeptime.v1 import keeptime_pb2 as pb
from keeptime.v1 import keeptime_pb2_grpc as pb_grpc

pytestmark = pytest.mark.root


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _issue(pki, ca: str, name: str, extensions: str = "", common_name: str = ""):
    """A key and certificate for name, signed by ca (files <name>.key, <name>.crt)."""
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={common_name or name}", cwd=pki)
    ext = []
    if extensions:
        with open(os.path.join(pki, f"{name}.ext"), "w") as f:
            f.write(extensions + "\n")
        ext = ["-extfile", f"{name}.ext"]
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", *ext, cwd=pki)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1, clients of that CA (migrator, allowed by its DNS name;
    intruder; impostors whose email address, URI or common name, not DNS name, is "migrator") and one
    client of another CA."""
    if subprocess.run(["openssl", "version"], capture_output=True).returncode != 0:
        pytest.skip("needs the openssl command to make test certificates")
    pki = str(tmp_path_factory.mktemp("pki"))
    for ca in ("ca", "rogue-ca"):
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-subj", f"/CN={ca}", "-days", "2", cwd=pki)
    _issue(pki, "ca", "server", "subjectAltName=IP:127.0.0.1,DNS:localhost")
    _issue(pki, "ca", "migrator", "subjectAltName=DNS:migrator")
    _issue(pki, "ca", "intruder", "subjectAltName=DNS:intruder")
    _issue(pki, "ca", "impostor-email", "subjectAltName=email:migrator,DNS:impostor")
    _issue(pki, "ca", "impostor-uri", "subjectAltName=URI:migrator")
    _issue(pki, "ca", "impostor-cn", common_name="migrator")
    _issue(pki, "rogue-ca", "stranger")
    return pki


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tls_flags(pki, *extra):
    return ("--tls-cert", f"{pki}/server.crt", "--tls-key", f"{pki}/server.key",
            "--tls-client-ca", f"{pki}/ca.crt", *extra)


def _client(pki, port, name, ca="ca"):
    return Client(address=f"127.0.0.1:{port}", tls_ca=f"{pki}/{ca}.crt",
                  tls_cert=f"{pki}/{name}.crt", tls_key=f"{pki}/{name}.key", timeout=10)


@pytest.fixture
def tls_daemon(tmp_path, pki):
    port = _free_port()
    running = RunningDaemon(str(tmp_path)).start("--tcp", f"127.0.0.1:{port}",
                                                 *_tls_flags(pki, "--tls-allow-name", "migrator"))
    yield running, port
    running.stop()


def test_a_client_with_an_allowed_certificate_has_the_full_api(tls_daemon, pki):
    daemon, port = tls_daemon
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        with _client(pki, port, "migrator") as kt:
            record_id = kt.checkpoint(sleeper.pid)
            data = kt.export_record(record_id)
            assert kt.get(record_id).root_pid == sleeper.pid and data
    finally:
        sleeper.kill()
        sleeper.wait()
    assert '"transport": "tls", "caller": "migrator"' in daemon.log()


def test_a_certificate_of_the_ca_but_not_in_the_allow_list_is_refused(tls_daemon, pki):
    _, port = tls_daemon
    with _client(pki, port, "intruder") as kt:
        with pytest.raises(errors.PermissionDenied, match="not in the allow-list"):
            kt.list()


@pytest.mark.parametrize("impostor", ["impostor-email", "impostor-uri", "impostor-cn"])
def test_only_a_dns_name_matches_the_allow_list(tls_daemon, pki, impostor):
    """An email address, a URI or a common name equal to an allowed name is
    not that name: a CA that signs them for people vouches for no host."""
    daemon, port = tls_daemon
    with _client(pki, port, impostor) as kt:
        with pytest.raises(errors.PermissionDenied, match="DNS subject alternative names only"):
            kt.list()
    assert '"caller": "migrator"' not in daemon.log()


def test_without_an_allow_list_the_caller_is_named_by_its_dns_name_else_its_common_name(tmp_path, pki):
    port = _free_port()
    daemon = RunningDaemon(str(tmp_path)).start("--tcp", f"127.0.0.1:{port}", *_tls_flags(pki))
    try:
        for name, logged in (("impostor-email", "impostor"), ("impostor-cn", "migrator")):
            with _client(pki, port, name) as kt:
                kt.list()
            assert f'"transport": "tls", "caller": "{logged}"' in daemon.log()
    finally:
        daemon.stop()


def test_a_certificate_of_another_ca_or_none_never_gets_through(tls_daemon, pki):
    _, port = tls_daemon
    with _client(pki, port, "stranger") as kt:
        with pytest.raises(errors.Unavailable):
            kt.list()
    with grpc.secure_channel(f"127.0.0.1:{port}",
                             grpc.ssl_channel_credentials(open(f"{pki}/ca.crt", "rb").read())) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            pb_grpc.KeeptimeStub(channel).ListRecords(pb.ListRecordsRequest(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:   # plaintext to a TLS port
        with pytest.raises(grpc.RpcError):
            pb_grpc.KeeptimeStub(channel).ListRecords(pb.ListRecordsRequest(), timeout=10)


def _start_fails(tmp_path, *flags) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "keeptimed", "--socket", str(tmp_path / "k.sock"), "--db", str(tmp_path / "k.db"),
         *flags], capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    return result.stderr


def test_tcp_without_tls_is_refused_at_start(tmp_path, pki):
    port = _free_port()
    assert "without mutual TLS" in _start_fails(tmp_path, "--tcp", f"127.0.0.1:{port}")
    assert "needs all of" in _start_fails(tmp_path, "--tcp", f"127.0.0.1:{port}",
                                          "--tls-cert", f"{pki}/server.crt")
    assert "loopback" in _start_fails(tmp_path, "--tcp", f"0.0.0.0:{port}", "--insecure-loopback")
    assert "cannot read" in _start_fails(tmp_path, "--tcp", f"127.0.0.1:{port}", "--tls-cert", "/nonexistent",
                                         "--tls-key", f"{pki}/server.key", "--tls-client-ca", f"{pki}/ca.crt")


def test_insecure_loopback_serves_plaintext_on_loopback_only(tmp_path):
    port = _free_port()
    daemon = RunningDaemon(str(tmp_path)).start("--tcp", f"127.0.0.1:{port}", "--insecure-loopback")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            pb_grpc.KeeptimeStub(channel).ListRecords(pb.ListRecordsRequest(), timeout=10)
        assert "INSECURE loopback TCP" in daemon.log()
    finally:
        daemon.stop()
