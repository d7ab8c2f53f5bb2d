"""keeptimed runs with exactly the capabilities the Kubernetes DaemonSet
grants (read from deploy/kubernetes/daemonset.yaml) and the systemd
hardening drop-in bounds it to (with its NoNewPrivileges), as root in the
host's PID namespace like the pod, and each of them is needed: without it the
operation it exists for fails with PERMISSION_DENIED, never INTERNAL."""
import configparser
import os
import shutil
import subprocess
import sys
import tempfile

import pytest
import yaml

from helpers.daemon import RunningDaemon
from helpers.impersonate import ConnectAs
from keeptime import Client, errors
from keeptime.defaults import DEFAULT_SOCKET
from keeptimed import caps

pytestmark = pytest.mark.root

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOBODY = 65534


def daemonset_container() -> dict:
    with open(os.path.join(ROOT, "deploy", "kubernetes", "daemonset.yaml"), encoding="utf-8") as f:
        (daemonset,) = [doc for doc in yaml.safe_load_all(f) if doc]
    (container,) = daemonset["spec"]["template"]["spec"]["containers"]
    return container


def hardening_drop_in() -> dict:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(os.path.join(ROOT, "deploy", "systemd", "keeptimed.service.d", "hardening.conf.example"))
    return dict(parser["Service"])


GRANTED = tuple(daemonset_container()["securityContext"]["capabilities"]["add"])
SANDBOXES = {
    "daemonset": (GRANTED, False),
    "systemd-hardening": (tuple(name.removeprefix("CAP_") for name in
                                hardening_drop_in()["CapabilityBoundingSet"].split()),
                          hardening_drop_in()["NoNewPrivileges"] == "yes"),
}


def capped(workdir, granted, no_new_privs: bool = False, flags: tuple = (), wait: bool = True) -> RunningDaemon:
    """A keeptimed whose bounding set (hence every capability) is granted, as in the pod."""
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux)")
    bounding = ",".join(["-all"] + [f"+{name.lower()}" for name in granted])
    wrapper = ("setpriv", "--inh-caps=-all", f"--bounding-set={bounding}",
               *(["--no-new-privs"] if no_new_privs else []), "--")
    return RunningDaemon(workdir).start(*flags, wrapper=wrapper, wait=wait)


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_the_deployed_capabilities_are_all_keeptimed_needs(sandbox, tmp_path, nobody_sleeper):
    granted, no_new_privs = SANDBOXES[sandbox]
    daemon = capped(tmp_path, granted, no_new_privs)
    try:
        with daemon.client() as c:
            info = c.info()
            assert sorted(info.capabilities) == sorted("CAP_" + name for name in granted)
            assert not info.missing_capabilities
            # Other users' processes, and this one, which has every capability.
            assert c.clocks(nobody_sleeper).host_namespace
            record_id = c.checkpoint(nobody_sleeper)
            c.checkpoint(os.getpid())
            restored = c.restore(record_id, ["/bin/sleep", "30"], uid=NOBODY, gid=NOBODY)
            joined = c.exec(restored.pid, ["/bin/true"], uid=NOBODY)
            assert c.wait(joined.pid) == 0
            assert c.clocks(restored.pid).timens_inode == restored.timens_inode
            os.kill(restored.pid, 9)
            assert c.wait(restored.pid) == 128 + 9
        # The pod's probe, pointed at this daemon's socket.
        program, *argv = daemonset_container()["livenessProbe"]["exec"]["command"]
        argv = [daemon.socket if arg == DEFAULT_SOCKET else arg for arg in argv]
        assert program == "keeptime" and daemon.socket in argv
        probe = subprocess.run([sys.executable, "-m", "keeptime.cli", *argv], capture_output=True, text=True,
                               timeout=60)
        assert (probe.returncode, probe.stdout) == (0, "SERVING\n")
        doctor = daemon.cli("doctor", "--no-criu")
        assert "ok    privileges       keeptimed has every capability it needs" in doctor.stdout
    finally:
        assert daemon.stop() == 0, daemon.log()
    assert "Traceback" not in daemon.log()


def _restore(c, uid=None):
    record_id = c.checkpoint(os.getpid())
    return c.wait(c.restore(record_id, ["/bin/true"], uid=uid).pid)


# What each capability is for, as an operation that fails without it.
WITHOUT = {
    "CAP_SYS_ADMIN": (lambda c, other: _restore(c), "unshare(CLONE_NEWTIME)"),
    "CAP_SYS_TIME": (lambda c, other: _restore(c), "/proc/self/timens_offsets"),
    "CAP_SYS_PTRACE": (lambda c, other: c.checkpoint(other), "needs CAP_SYS_PTRACE"),
    "CAP_SETUID": (lambda c, other: _restore(c, uid=NOBODY), "setresuid"),
    "CAP_SETGID": (lambda c, other: _restore(c, uid=NOBODY), "setgroups"),
}


@pytest.mark.parametrize("missing", [need.name for need in caps.NEEDS])
def test_each_capability_is_needed_and_its_absence_is_reported(missing, tmp_path, nobody_sleeper):
    operation, message = WITHOUT[missing]
    daemon = capped(tmp_path, [name for name in GRANTED if "CAP_" + name != missing])
    try:
        with daemon.client() as c:
            assert [m.name for m in c.info().missing_capabilities] == [missing]
            with pytest.raises(errors.PermissionDenied) as denied:
                operation(c, nobody_sleeper)
            assert message in denied.value.message
        doctor = daemon.cli("doctor", "--no-criu")
        assert missing in doctor.stdout
    finally:
        daemon.stop()
    assert f"running without {missing}" in daemon.log() and "Traceback" not in daemon.log()


def test_socket_group_also_needs_chown_and_says_so(tmp_path):
    """Giving the socket to a group is the one option that needs more (CAP_CHOWN)."""
    group = ("--socket-group", str(NOBODY))
    (tmp_path / "without").mkdir()
    refused = capped(tmp_path / "without", GRANTED, flags=group, wait=False)
    assert refused.proc.wait(30) == 1
    assert refused.log().splitlines()[-1].endswith("(giving it to socket_group needs CAP_CHOWN)")
    assert "Traceback" not in refused.log()
    (tmp_path / "with").mkdir()
    daemon = capped(tmp_path / "with", GRANTED + ("CHOWN",), flags=group)
    assert os.stat(daemon.socket).st_gid == NOBODY
    assert daemon.stop() == 0


def test_socket_group_callers_in_another_mount_namespace_also_need_sys_chroot(nobody_sleeper):
    """A group member's program enters the caller's mount namespace, which
    needs CAP_SYS_CHROOT besides CAP_SYS_ADMIN (setns(CLONE_NEWNS) resets the
    root, and the caller's root is set again with chroot)."""
    shared = tempfile.mkdtemp(prefix="keeptime-caps-")
    os.chmod(shared, 0o755)
    sandboxed = ["unshare", "--mount", "--propagation", "private", "--"]
    try:
        for granted, works in ((GRANTED + ("CHOWN",), False), (GRANTED + ("CHOWN", "SYS_CHROOT"), True)):
            workdir = tempfile.mkdtemp(dir=shared)
            os.chmod(workdir, 0o755)
            daemon = capped(workdir, granted, flags=("--socket-group", str(NOBODY)))
            proxy = ConnectAs(workdir, daemon.socket, NOBODY, NOBODY, prefix=sandboxed)
            try:
                with Client(socket=proxy.path, timeout=30) as c:
                    record_id = c.checkpoint(nobody_sleeper)
                    if works:
                        assert c.wait(c.restore(record_id, ["/bin/true"]).pid) == 0
                    else:
                        with pytest.raises(errors.PermissionDenied, match=r"setns\(CLONE_NEWNS\): Operation not "
                                                                          "permitted.*needs CAP_SYS_ADMIN and "
                                                                          "CAP_SYS_CHROOT, and no seccomp"):
                            c.restore(record_id, ["/bin/true"])
            finally:
                proxy.close()
                assert daemon.stop() == 0, daemon.log()
    finally:
        shutil.rmtree(shared, ignore_errors=True)
