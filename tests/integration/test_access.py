"""Who may call keeptimed and what they may do, proven with real credentials.

A non-root caller is simulated with real SO_PEERCRED: a process running as
nobody connects to keeptimed's socket (see helpers/impersonate.py).
"""
import json
import os
import shutil
import socket
import stat
import subprocess
import tempfile
import time

import grpc
import pytest

from helpers.daemon import RunningDaemon
from helpers.impersonate import ConnectAs, as_user, connect_as
from helpers.probes import restore_events
from keeptime import Client, errors
from keeptime.criu.image import TimensClocks, encode_timens
from keeptime.recordfile import parse as parse_record
from keeptime.v1 import keeptime_pb2 as pb
from keeptime.v1 import keeptime_pb2_grpc as pb_grpc

pytestmark = pytest.mark.root

NOBODY = 65534
NOGROUP = 65534
S = 10**9


def test_default_socket_is_root_only_and_the_private_listener_hides_in_a_0700_directory(fresh_daemon):
    st = os.stat(fresh_daemon.socket)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0
    private = fresh_daemon.socket + ".private"
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o700
    assert connect_as(NOBODY, NOGROUP, fresh_daemon.socket).returncode != 0


def test_socket_group_opens_the_socket_to_that_group_only(group_daemon):
    st = os.stat(group_daemon.socket)
    assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == NOGROUP and st.st_uid == 0
    assert connect_as(NOBODY, NOGROUP, group_daemon.socket).returncode == 0
    assert connect_as(NOBODY, 1, group_daemon.socket).returncode != 0   # another group: the kernel refuses


def test_a_connection_that_bypasses_the_relay_is_refused(fresh_daemon):
    with grpc.insecure_channel(f"unix:{fresh_daemon.socket}.private/grpc.sock") as channel:
        with pytest.raises(grpc.RpcError) as caught:
            pb_grpc.KeeptimeStub(channel).ListRecords(pb.ListRecordsRequest(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "did not come through" in caught.value.details()
    with fresh_daemon.client() as kt:   # and the daemon keeps serving
        kt.list()


def test_every_call_is_logged_with_the_callers_pid_and_uid(group_daemon, as_nobody, root_sleeper):
    with group_daemon.client() as root:
        root.checkpoint(root_sleeper)
    as_nobody.list()
    lines = [json.loads(line) for line in group_daemon.log().splitlines() if '"logger": "keeptimed.rpc"' in line]
    calls = {(line["rpc"], line["status"]): line for line in lines}
    assert calls["Checkpoint", "OK"]["caller_pid"] == os.getpid() and calls["Checkpoint", "OK"]["caller_uid"] == 0
    listed = calls["ListRecords", "OK"]
    assert (listed["caller_uid"], listed["caller_gid"]) == (NOBODY, NOGROUP)


def test_non_root_checkpoints_its_own_processes_only(as_nobody, nobody_sleeper, root_sleeper):
    record_id = as_nobody.checkpoint(nobody_sleeper)
    assert as_nobody.get(record_id).root_pid == nobody_sleeper
    with pytest.raises(errors.PermissionDenied, match=f"pid {root_sleeper} does not belong to uid {NOBODY}"):
        as_nobody.checkpoint(root_sleeper)
    with pytest.raises(errors.PermissionDenied):
        as_nobody.clocks(root_sleeper)
    assert as_nobody.clocks(nobody_sleeper).pid == nobody_sleeper


def test_non_root_sees_and_uses_only_its_own_records(group_daemon, as_nobody, nobody_sleeper, root_sleeper):
    with group_daemon.client() as root:
        roots_record = root.checkpoint(root_sleeper)
        own_record = as_nobody.checkpoint(nobody_sleeper)
        assert {r.id for r in root.list()} >= {roots_record, own_record}   # root sees everything
    assert [r.id for r in as_nobody.list()] == [own_record]
    for call in (as_nobody.get, as_nobody.plan, as_nobody.delete, as_nobody.export_record):
        with pytest.raises(errors.NotFound):
            call(roots_record)
    with pytest.raises(errors.NotFound):
        as_nobody.restore(roots_record, ["/bin/true"])


def test_non_root_restores_run_as_the_caller_with_no_new_privs(as_nobody, nobody_sleeper, open_dir):
    record_id = as_nobody.checkpoint(nobody_sleeper)
    out = os.path.join(open_dir, "identity.txt")
    os.chmod(open_dir, 0o777)
    restored = as_nobody.restore(
        record_id, ["/bin/sh", "-c", "id -u; id -g; id -G; grep NoNewPrivs /proc/self/status"],
        policy="freeze", stdout=out,
    )
    assert as_nobody.wait(restored.pid, timeout=30) == 0
    uid, gid, groups, no_new_privs = open(out).read().splitlines()
    assert (int(uid), int(gid)) == (NOBODY, NOGROUP)
    assert set(groups.split()) <= {str(NOGROUP)}
    assert no_new_privs.split() == ["NoNewPrivs:", "1"]
    assert os.stat(out).st_uid == NOBODY   # stdio was opened after the privileges were dropped


def test_non_root_cannot_restore_or_exec_as_anyone_else(as_nobody, nobody_sleeper, root_sleeper):
    record_id = as_nobody.checkpoint(nobody_sleeper)
    with pytest.raises(errors.PermissionDenied, match="only run programs as itself"):
        as_nobody.restore(record_id, ["/bin/true"], uid=0)
    with pytest.raises(errors.PermissionDenied, match="only run programs as itself"):
        as_nobody.restore(record_id, ["/bin/true"], gid=0)
    with pytest.raises(errors.PermissionDenied):
        as_nobody.exec(root_sleeper, ["/bin/true"])


def test_non_root_waits_only_for_what_it_started(group_daemon, as_nobody, nobody_sleeper, root_sleeper):
    with group_daemon.client() as root:
        record_id = root.checkpoint(root_sleeper)
        restored = root.restore(record_id, ["/bin/sleep", "30"])
        try:
            with pytest.raises(errors.NotFound, match="not started by keeptimed for uid"):
                as_nobody.wait(restored.pid, timeout=5)
        finally:
            os.kill(restored.pid, 9)
            assert root.wait(restored.pid, timeout=30) == 128 + 9


def test_unprivileged_connect_attempt_is_refused_by_the_kernel_without_socket_group(fresh_daemon):
    result = connect_as(NOBODY, NOGROUP, fresh_daemon.socket)
    assert result.returncode == 1 and "Permission denied" in result.stdout


def test_a_record_owned_by_a_user_survives_a_restart_with_its_owner(open_dir, nobody_sleeper):
    daemon = RunningDaemon(open_dir).start("--socket-group", str(NOGROUP))
    proxy = ConnectAs(open_dir, daemon.socket, NOBODY, NOGROUP)
    try:
        with Client(socket=proxy.path, timeout=20) as kt:
            record_id = kt.checkpoint(nobody_sleeper)
    finally:
        proxy.close()
        daemon.stop()
    os.unlink(proxy.path)
    daemon = RunningDaemon(open_dir).start("--socket-group", str(NOGROUP))
    proxy = ConnectAs(open_dir, daemon.socket, NOBODY, NOGROUP)
    try:
        with Client(socket=proxy.path, timeout=20) as kt:
            assert [r.id for r in kt.list()] == [record_id]
    finally:
        proxy.close()
        daemon.stop()


def test_peer_credentials_are_read_from_the_kernel():
    from keeptimed.relay import peer_credentials

    a, b = socket.socketpair(socket.AF_UNIX)
    with a, b:
        creds = peer_credentials(a)
    assert (creds.pid, creds.uid, creds.gid) == (os.getpid(), os.getuid(), os.getgid())


# -- the CRIU RPCs: rootless CRIU runs its action script as the user ----------

IMAGE = encode_timens(TimensClocks(S, 2 * S))


def test_non_root_records_from_criu_images_and_plans_from_its_own_records(group_daemon, as_nobody):
    own = as_nobody.get(as_nobody.checkpoint_criu_image(IMAGE, 1))
    with group_daemon.client() as root:
        assert root.get(own.id) == own
        roots = root.checkpoint_criu_image(IMAGE, 1)
        roots_file = root.export_record(roots)
    assert [r.id for r in as_nobody.list()] == [own.id]
    assert as_nobody.plan_criu_restore(IMAGE, record_id=own.id, policy="freeze").timens_image == IMAGE
    with pytest.raises(errors.NotFound):
        as_nobody.plan_criu_restore(IMAGE, record_id=roots)
    # Record bytes are the caller's to plan from: they prove nothing about anyone's processes.
    assert as_nobody.plan_criu_restore(IMAGE, record_file=roots_file).plan.record_id == roots


def test_non_root_verifies_its_own_processes_and_sees_its_own_verdicts(group_daemon, as_nobody, nobody_sleeper,
                                                                        root_sleeper):
    record_id = as_nobody.checkpoint_criu_image(IMAGE)
    assert as_nobody.verify_restore(nobody_sleeper, record_id=record_id, stage="post-restore").ok
    with pytest.raises(errors.PermissionDenied, match=f"pid {root_sleeper} does not belong to uid {NOBODY}"):
        as_nobody.verify_restore(root_sleeper, record_id=record_id)
    with group_daemon.client() as root:
        root.verify_restore(root_sleeper, record_id=record_id, stage="post-restore")
        assert [e.pid for e in root.restores(record_id)] == [nobody_sleeper, root_sleeper]
    assert [e.pid for e in as_nobody.restores(record_id)] == [nobody_sleeper]


def test_the_criu_hook_is_served_for_the_users_own_tree(group_daemon, open_dir, nobody_sleeper, criu_forward_program):
    """Rootless CRIU: the hook runs as the user, in a directory of the user's."""
    images = tempfile.mkdtemp(dir=open_dir)
    with group_daemon.client() as root:
        seen = root.clocks(nobody_sleeper).clocks  # what CRIU writes before post-dump: the tree's clocks
    with open(os.path.join(images, "timens-0.img"), "wb") as f:
        f.write(encode_timens(TimensClocks(seen.monotonic_ns, seen.boottime_ns)))
    os.chown(images, NOBODY, NOGROUP)
    os.chown(os.path.join(images, "timens-0.img"), NOBODY, NOGROUP)
    config = os.path.join(open_dir, "criu-hook.toml")
    with open(config, "w") as f:
        f.write('policy = "suspend"\n')
    os.chmod(config, 0o644)
    program = shutil.copy(criu_forward_program, open_dir)   # the tests' tree may be root-only

    def run_hook(action: str) -> str:
        environ = {"CRTOOLS_SCRIPT_ACTION": action, "CRTOOLS_IMAGE_DIR": images,
                   "CRTOOLS_INIT_PID": str(nobody_sleeper), "KEEPTIME_CRIU_HOOK_CONFIG": config,
                   "KEEPTIME_SOCKET": group_daemon.socket}
        result = subprocess.run(as_user(NOBODY, NOGROUP, [program]), env=environ, capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stderr

    assert f"from pid {nobody_sleeper}'s tree" in run_hook("post-dump")
    with open(os.path.join(images, "keeptime-record.bin"), "rb") as f:
        record = parse_record(f.read())
    proxy = ConnectAs(open_dir, group_daemon.socket, NOBODY, NOGROUP)
    try:
        with Client(socket=proxy.path, timeout=20) as kt:
            assert [r.id for r in kt.list()] == [record.id]  # the user's own record
        assert "suspend: timens-0.img now resumes" in run_hook("pre-restore")
        # What keeptimed wrote there is the user's, as if the user had written it.
        for name in os.listdir(images):
            st = os.stat(os.path.join(images, name))
            assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (NOBODY, NOGROUP, 0o600), name
        assert f"pid {nobody_sleeper}: clocks continue" in run_hook("post-restore")
        with Client(socket=proxy.path, timeout=20) as kt:
            assert [(e.pid, e.ok) for e in kt.restores(record.id)] == [(nobody_sleeper, True)]
    finally:
        proxy.close()


def test_the_criu_hook_works_for_a_user_only_in_a_directory_of_the_users(group_daemon, open_dir, nobody_sleeper,
                                                                          criu_forward_program):
    """A directory nobody may merely read (here /etc) is not one keeptimed
    writes into on nobody's behalf."""
    program = shutil.copy(criu_forward_program, open_dir)
    config = os.path.join(open_dir, "criu-hook.toml")
    with open(config, "w") as f:
        f.write('policy = "suspend"\n')
    os.chmod(config, 0o644)
    environ = {"CRTOOLS_SCRIPT_ACTION": "post-dump", "CRTOOLS_IMAGE_DIR": "/etc",
               "CRTOOLS_INIT_PID": str(nobody_sleeper), "KEEPTIME_SOCKET": group_daemon.socket,
               "KEEPTIME_CRIU_HOOK_CONFIG": config}
    result = subprocess.run(as_user(NOBODY, NOGROUP, [program]), env=environ, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2, result.stderr
    assert "the image directory belongs to uid 0: keeptimed works for uid 65534 only in a directory of its own" \
        in result.stderr
    assert not os.path.exists("/etc/keeptime-record.bin")


def test_one_user_cannot_take_every_connection(open_dir):
    """With 336 descriptors keeptimed holds 20 connections (4 descriptors
    each); a non-root uid may hold a quarter of them. Its next one is closed
    at once, while root (the CRIU action script, operators) is still served."""
    daemon = RunningDaemon(open_dir, command_prefix=["prlimit", "--nofile=336:336", "--"]).start(
        "--socket-group", str(NOGROUP))
    proxy = ConnectAs(open_dir, daemon.socket, NOBODY, NOGROUP)
    held = []
    try:
        held = [proxy.connection() for _ in range(5)]
        for conn in held:
            conn.sendall(b"PRI")   # a stalled HTTP/2 start: the relay keeps holding it
        refused = proxy.connection()
        refused.settimeout(10)
        assert refused.recv(1) == b""   # closed by keeptimed, no HTTP/2 from it
        refused.close()
        assert "refusing a connection from uid 65534" in daemon.log()
        with daemon.client() as client:
            assert client.list() == []
        held.pop().close()
        time.sleep(0.5)   # the relay notices the close and frees the slot
        with Client(socket=proxy.path, timeout=20) as client:
            assert client.list() == []
    finally:
        for conn in held:
            conn.close()
        proxy.close()
        assert daemon.stop() == 0, daemon.log()


def test_a_member_cannot_replace_the_post_restore_basis_of_roots_post_resume(group_daemon, open_dir,
                                                                              nobody_sleeper, criu_hook_program):
    """post-resume goes on from post-restore's basis: root's from root's, never
    from a post-restore the process's owner sent for the same pid meanwhile."""
    program = shutil.copy(criu_hook_program, open_dir)
    with group_daemon.client() as root:
        seen = root.clocks(nobody_sleeper).clocks

    def images(owner: int, ahead_s: int) -> str:
        path = tempfile.mkdtemp(dir=open_dir)
        with open(os.path.join(path, "timens-0.img"), "wb") as f:
            f.write(encode_timens(TimensClocks(seen.monotonic_ns + ahead_s * S, seen.boottime_ns + ahead_s * S)))
        os.chown(path, owner, owner)
        os.chown(os.path.join(path, "timens-0.img"), owner, owner)
        return path

    def hook(action: str, image_dir: str, as_nobody: bool) -> subprocess.CompletedProcess:
        env = {"CRTOOLS_SCRIPT_ACTION": action, "CRTOOLS_IMAGE_DIR": image_dir, "KEEPTIME_SOCKET": group_daemon.socket,
               "CRTOOLS_INIT_PID": str(nobody_sleeper), "KEEPTIME_CRIU_HOOK_CONFIG": config}
        argv = as_user(NOBODY, NOGROUP, [program]) if as_nobody else [program]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)

    config = os.path.join(open_dir, "criu-hook.toml")
    with open(config, "w") as f:
        f.write('policy = "freeze"\n')
    os.chmod(config, 0o644)

    roots, members = images(0, 100_000), images(NOBODY, -100)
    assert "CLOCK REGRESSION" in hook("post-restore", roots, as_nobody=False).stderr
    assert "clocks continue" in hook("post-restore", members, as_nobody=True).stderr
    closed = f"/proc/{os.getpid()}/fd/999999"   # CRIU has closed the image directory by post-resume
    hook("post-resume", closed, as_nobody=False)
    with group_daemon.client() as root:
        events = restore_events(root, "", 3)
    resumed = [e for e in events if e.stage == "post-resume"]
    assert resumed and resumed[-1].verdict == pb.VERDICT_REGRESSED, events
