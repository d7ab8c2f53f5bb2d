"""What a non-root caller's restored or exec'd program gets, played for real.

keeptimed runs as root; a program it starts for a group member must get
nothing from keeptime but the new time namespace. Each test confines the
process that connects to keeptimed's socket as nobody (a mount namespace of
its own, rlimits, seccomp, a loginuid, a cgroup, a user namespace; see
helpers/impersonate.py), asks for a program, and reads what the program
itself saw from the file it wrote.
"""
import contextlib
import json
import os
import signal
import subprocess
import tempfile
import time

import pytest

from helpers.daemon import RunningDaemon
from helpers.impersonate import ConnectAs, compiled
from keeptime import Client, errors
from keeptimed import caps, cgroups

pytestmark = pytest.mark.root

NOBODY = NOGROUP = 65534
UNSET = "4294967295"


@pytest.fixture
def open_dir(world_writable_dir):
    """Here the programs write in it as nobody."""
    return world_writable_dir


@pytest.fixture
def start_daemon(open_dir):
    """start_daemon(*flags, prefix=()): a keeptimed whose socket nobody's group may use."""
    started = []

    def start(*flags, prefix=()):
        workdir = tempfile.mkdtemp(dir=open_dir)
        os.chmod(workdir, 0o755)
        daemon = RunningDaemon(workdir, command_prefix=prefix).start("--socket-group", str(NOGROUP), *flags)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stop()
        assert "Traceback" not in daemon.log()


@contextlib.contextmanager
def calling(daemon, uid=NOBODY, prefix=(), inner=(), connector=None):
    """A client whose calls come from a process running as uid (through
    prefix as root before the switch, inner after it); connector, a list,
    receives that process's pid."""
    workdir = tempfile.mkdtemp(dir=os.path.dirname(daemon.workdir))
    proxy = ConnectAs(workdir, daemon.socket, uid, NOGROUP if uid else 0, prefix=prefix, inner=inner)
    if connector is not None:
        connector.append(proxy.process.pid)
    try:
        with Client(socket=proxy.path, timeout=30) as kt:
            yield kt
    finally:
        proxy.close()


def programs_see(kt, sleeper: int, script: str, out: str, **stdio) -> list[str]:
    """What a restored program, then one exec'd into sleeper, printed running script."""
    record_id = kt.checkpoint(sleeper)
    seen = []
    for start in (lambda argv: kt.restore(record_id, argv, policy="freeze", stdout=out, **stdio),
                  lambda argv: kt.exec(sleeper, argv, stdout=out, **stdio)):
        started = start(["/bin/sh", "-c", script])
        assert kt.wait(started.pid, timeout=30) == 0, open(out).read()
        with open(out) as f:
            seen.append(f.read())
    return seen


def log_lines(daemon, rpc: str) -> list[dict]:
    return [line for line in map(json.loads, daemon.log().splitlines()) if line.get("rpc") == rpc]


# -- the mount namespace ---------------------------------------------------------

def test_a_callers_mount_namespace_is_the_programs(start_daemon, open_dir, nobody_sleeper, root_sleeper):
    """The caller mounts a tmpfs over a directory: its programs see what is
    in the tmpfs, never the host's file beneath it, and open their stdio
    there too. Root's programs keep keeptimed's view (documented)."""
    covered = os.path.join(open_dir, "covered")
    os.mkdir(covered, 0o755)
    with open(os.path.join(covered, "host-only"), "w") as f:
        f.write("the host's\n")
    os.chmod(os.path.join(covered, "host-only"), 0o644)   # nobody could read it, were it not hidden
    prefix = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
              'mount -t tmpfs -o mode=0755 none "$0" && echo theirs > "$0/theirs" && exec "$@"', covered]
    out = os.path.join(open_dir, "seen.txt")
    daemon = start_daemon()
    with calling(daemon, prefix=prefix) as kt:
        seen = programs_see(kt, nobody_sleeper, f'ls -a "{covered}" && cat', out, stdin=f"{covered}/theirs")
    assert [s.split() for s in seen] == [[".", "..", "theirs", "theirs"]] * 2
    with calling(daemon, uid=0, prefix=prefix) as kt:
        seen = programs_see(kt, root_sleeper, f'ls "{covered}"', out)
    assert [s.split() for s in seen] == [["host-only"]] * 2


def test_a_callers_other_namespaces_are_the_programs(start_daemon, open_dir, nobody_sleeper):
    """A caller without a network (unshare --net), with a hostname, IPC and
    cgroup namespace of its own: so are its programs."""
    prefix = ["unshare", "--net", "--uts", "--ipc", "--cgroup", "--", "sh", "-c",
              'hostname keeptime-sandbox && exec "$@"', "sh"]
    out = os.path.join(open_dir, "namespaces.txt")
    connector = []
    with calling(start_daemon(), prefix=prefix, connector=connector) as kt:
        seen = programs_see(kt, nobody_sleeper, "hostname; for ns in net ipc uts cgroup; do readlink "
                                                "/proc/self/ns/$ns; done; tail -n +3 /proc/self/net/dev | cut -d: -f1", out)
        expected = ["keeptime-sandbox", *(os.readlink(f"/proc/{connector[0]}/ns/{ns}")
                                          for ns in ("net", "ipc", "uts", "cgroup")), "lo"]
    assert [s.split() for s in seen] == [expected] * 2


# -- rlimits ---------------------------------------------------------------------

def test_a_callers_rlimits_are_the_programs(start_daemon, open_dir, nobody_sleeper):
    out = os.path.join(open_dir, "limits.txt")
    with calling(start_daemon(), prefix=["prlimit", "--nofile=64:64", "--core=0:0", "--"]) as kt:
        seen = programs_see(kt, nobody_sleeper, "ulimit -Sn; ulimit -Hn; ulimit -Hc", out)
    assert [s.split() for s in seen] == [["64", "64", "0"]] * 2


def test_a_hard_limit_above_keeptimeds_own_is_capped_without_cap_sys_resource(start_daemon, open_dir,
                                                                              nobody_sleeper):
    """keeptimed (hard limit 4096 open files) cannot raise the program's hard
    limit above its own without CAP_SYS_RESOURCE: the program gets less than
    the caller (8000), never more, and the log says so."""
    daemon = start_daemon(prefix=["prlimit", "--nofile=1024:4096", "--"])
    out = os.path.join(open_dir, "limits.txt")
    with calling(daemon, prefix=["prlimit", "--nofile=100:8000", "--"]) as kt:
        seen = programs_see(kt, nobody_sleeper, "ulimit -Sn; ulimit -Hn", out)
    if "CAP_SYS_RESOURCE" in caps.effective():
        assert [s.split() for s in seen] == [["100", "8000"]] * 2
    else:
        assert [s.split() for s in seen] == [["100", "4096"]] * 2
        assert all(line["rlimits_capped"] == "RLIMIT_NOFILE" for line in log_lines(daemon, "Restore"))


# -- seccomp and other confinement keeptime cannot give ---------------------------

def test_a_caller_under_seccomp_is_refused_unless_the_operator_allows_it(start_daemon, open_dir, nobody_sleeper):
    seccomp = [compiled("seccomp_allow")]
    with calling(start_daemon(), prefix=seccomp) as kt:
        record_id = kt.checkpoint(nobody_sleeper)
        refusal = r"runs under seccomp \(Seccomp: 2 .*allow_lost_confinement does not list 'seccomp'\)$"
        with pytest.raises(errors.PermissionDenied, match=refusal):
            kt.restore(record_id, ["/bin/true"])
        with pytest.raises(errors.PermissionDenied, match=refusal):
            kt.exec(nobody_sleeper, ["/bin/true"])
    allowing = start_daemon("--allow-lost-confinement", "seccomp")
    out = os.path.join(open_dir, "seccomp.txt")
    with calling(allowing, prefix=seccomp) as kt:
        seen = programs_see(kt, nobody_sleeper, "grep '^Seccomp:' /proc/self/status", out)
    assert [s.split() for s in seen] == [["Seccomp:", "0"]] * 2   # lost, as allowed
    assert [line["lost_confinement"] for line in log_lines(allowing, "Restore") + log_lines(allowing, "Exec")] \
        == ["seccomp", "seccomp"]


def test_a_caller_in_another_user_namespace_is_refused_unless_allowed(start_daemon, open_dir, nobody_sleeper):
    own = os.readlink("/proc/self/ns/user")
    with calling(start_daemon(), inner=["unshare", "--user", "--"]) as kt:
        record_id = kt.checkpoint(nobody_sleeper)
        with pytest.raises(errors.PermissionDenied, match="is in another user namespace than keeptimed"):
            kt.restore(record_id, ["/bin/true"])
    out = os.path.join(open_dir, "userns.txt")
    with calling(start_daemon("--allow-lost-confinement", "user-namespace"), inner=["unshare", "--user", "--"]) as kt:
        seen = programs_see(kt, nobody_sleeper, "readlink /proc/self/ns/user", out)
    assert [s.split() for s in seen] == [[own]] * 2


def test_a_caller_under_another_lsm_label_is_refused():
    try:
        with open("/proc/self/attr/current") as f:
            f.read()
    except OSError:
        pytest.skip("no LSM labels processes on this host (/proc/self/attr/current: EINVAL); "
                    "the comparison is the same as for seccomp")
    pytest.skip("needs a way to run the caller under another AppArmor or SELinux label (aa-exec, runcon)")


# -- loginuid --------------------------------------------------------------------

def _set_loginuid(value: int) -> list[str]:
    """A prefix that runs a command with that loginuid (skips where this host cannot)."""
    if not os.path.exists("/proc/self/loginuid"):
        pytest.skip("this kernel keeps no loginuid (CONFIG_AUDIT)")
    prefix = ["sh", "-c", f'echo {value} > /proc/self/loginuid && exec "$@"', "sh"]
    if subprocess.run([*prefix, "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot set a loginuid here (set and immutable, or no CAP_AUDIT_CONTROL)")
    return prefix


def test_a_callers_loginuid_is_the_programs(start_daemon, open_dir, nobody_sleeper):
    """The audit trail follows the caller; the kernel starts a new audit
    session for the program (a session id cannot be carried over)."""
    out = os.path.join(open_dir, "loginuid.txt")
    with calling(start_daemon(), prefix=_set_loginuid(4321)) as kt:
        seen = programs_see(kt, nobody_sleeper, "cat /proc/self/loginuid; echo; cat /proc/self/sessionid", out)
    for loginuid, session in (s.split() for s in seen):
        assert loginuid == "4321" and session != UNSET


def test_a_keeptimed_with_a_loginuid_of_its_own_gives_the_program_the_callers(start_daemon, open_dir,
                                                                              nobody_sleeper):
    """keeptimed started from a login session (loginuid 77): a caller with
    another loginuid (here none) still gets its own; without
    CAP_AUDIT_CONTROL keeptimed cannot change a set loginuid and refuses,
    unless the operator allows the program to keep keeptimed's."""
    daemon_prefix = _set_loginuid(77)
    caller_prefix = _set_loginuid(4321)
    out = os.path.join(open_dir, "loginuid.txt")
    with calling(start_daemon(prefix=daemon_prefix), prefix=caller_prefix) as kt:
        assert [s.split() for s in programs_see(kt, nobody_sleeper, "cat /proc/self/loginuid", out)] == [["4321"]] * 2
    without_audit_control = [*daemon_prefix, "setpriv", "--inh-caps=-all", "--bounding-set=-audit_control", "--"]
    with calling(start_daemon(prefix=without_audit_control), prefix=caller_prefix) as kt:
        with pytest.raises(errors.PermissionDenied, match="loginuid is 4321 and keeptimed's 77: changing a set "
                                                          "loginuid needs CAP_AUDIT_CONTROL"):
            kt.restore(kt.checkpoint(nobody_sleeper), ["/bin/true"])
    allowing = start_daemon("--allow-lost-confinement", "loginuid", prefix=without_audit_control)
    with calling(allowing, prefix=caller_prefix) as kt:
        assert [s.split() for s in programs_see(kt, nobody_sleeper, "cat /proc/self/loginuid", out)] == [["77"]] * 2


# -- cgroups ---------------------------------------------------------------------

@pytest.fixture
def make_cgroup():
    """make_cgroup() -> {hierarchy key: directory} of a new cgroup in the
    cgroup v2 hierarchy and the v1 pids hierarchy (where mounted), removed
    afterwards. Skips without a cgroup v2 hierarchy."""
    with open("/proc/self/mountinfo") as f:
        mounted = {h.key: h for h in cgroups.hierarchies(f.read()) if h.key in (cgroups.V2, "pids")}
    if cgroups.V2 not in mounted:
        pytest.skip("no cgroup v2 hierarchy is mounted here")
    made = []

    def make() -> dict:
        name = f"keeptime-test-{os.getpid()}-{len(made)}-{time.monotonic_ns()}"
        dirs = {key: os.path.join(h.mountpoint, name) for key, h in mounted.items()}
        for directory in dirs.values():
            os.mkdir(directory)
        made.append(dirs)
        return dirs

    yield make
    for dirs in made:
        for directory in dirs.values():
            _remove_cgroup(directory)


def _remove_cgroup(directory: str) -> None:
    for _ in range(200):
        try:
            os.rmdir(directory)
            return
        except FileNotFoundError:
            return
        except OSError:   # still populated: kill what is left, wait for it to be reaped
            try:
                with open(os.path.join(directory, "cgroup.procs")) as f:
                    for pid in f.read().split():
                        os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass
            time.sleep(0.05)


def into(cgroup: dict) -> list[str]:
    """A prefix that runs a command in cgroup (every hierarchy of it)."""
    moves = " && ".join(f'echo $$ > "{d}/cgroup.procs"' for d in cgroup.values())
    return ["sh", "-c", f'{moves} && exec "$@"', "sh"]


def cgroup_of(pid: int) -> dict:
    with open(f"/proc/{pid}/cgroup") as f:
        return cgroups.memberships(f.read())


def _wait_for(path: str) -> str:
    for _ in range(400):
        if os.path.exists(path) and open(path).read().endswith("\n"):
            return open(path).read()
        time.sleep(0.025)
    raise AssertionError(f"nothing written to {path}")


def test_a_callers_program_lives_in_the_callers_cgroup_and_outlives_keeptimeds(start_daemon, make_cgroup, open_dir,
                                                                               nobody_sleeper):
    """Stopping keeptimed's cgroup (systemd stopping its unit, a pod going
    away: cgroup.kill) must not take the programs it started with it."""
    keeptimeds, callers = make_cgroup(), make_cgroup()
    daemon = start_daemon(prefix=into(keeptimeds))
    with calling(daemon, prefix=into(callers)) as kt:
        record_id = kt.checkpoint(nobody_sleeper)
        restored = kt.restore(record_id, ["/bin/sleep", "300"], policy="freeze")
        execed = kt.exec(nobody_sleeper, ["/bin/sleep", "300"])
    programs = [restored.pid, execed.pid]
    try:
        for pid in programs:
            assert {key: cgroup_of(pid)[key] for key in callers} == \
                {key: "/" + os.path.basename(d) for key, d in callers.items()}
        kill = os.path.join(keeptimeds[cgroups.V2], "cgroup.kill")
        if not os.path.exists(kill):
            pytest.skip("cgroup.kill needs Linux >= 5.14")
        with open(kill, "w") as f:
            f.write("1")
        daemon.proc.wait(timeout=30)
        for pid in programs:
            with open(f"/proc/{pid}/stat") as f:
                assert f.read().rsplit(")", 1)[1].split()[0] == "S"   # sleeping on, not killed
    finally:
        for pid in programs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("setting", ["caller", "keeptimed", "path"])
def test_root_programs_go_where_root_programs_cgroup_says(setting, start_daemon, make_cgroup, root_sleeper):
    keeptimeds, callers, named = make_cgroup(), make_cgroup(), make_cgroup()
    value = "/" + os.path.basename(named[cgroups.V2]) if setting == "path" else setting
    daemon = start_daemon("--root-programs-cgroup", value, prefix=into(keeptimeds))
    with calling(daemon, uid=0, prefix=into(callers)) as kt:
        restored = kt.restore(kt.checkpoint(root_sleeper), ["/bin/sleep", "300"], policy="freeze")
        try:
            expected = {"caller": callers, "keeptimed": keeptimeds, "path": named}[setting]
            assert {key: cgroup_of(restored.pid)[key] for key in expected} == \
                {key: "/" + os.path.basename(d) for key, d in expected.items()}
        finally:
            os.kill(restored.pid, signal.SIGKILL)
            assert kt.wait(restored.pid, timeout=30) == 128 + signal.SIGKILL


def test_a_root_programs_cgroup_that_does_not_exist_is_failed_precondition(start_daemon, root_sleeper):
    daemon = start_daemon("--root-programs-cgroup", "/keeptime-test-no-such-cgroup")
    with daemon.client() as kt:
        with pytest.raises(errors.FailedPrecondition, match="root_programs_cgroup /keeptime-test-no-such-cgroup "
                                                            "exists in no cgroup hierarchy"):
            kt.restore(kt.checkpoint(root_sleeper), ["/bin/true"])


def test_a_callers_cgroup_keeptimed_cannot_reach_is_refused_unless_allowed(start_daemon, make_cgroup, open_dir,
                                                                           nobody_sleeper):
    """keeptimed in a cgroup namespace of its own with its own cgroup v2
    mount (as in a pod): the caller's cgroup is outside what it can see."""
    keeptimeds, callers = make_cgroup(), make_cgroup()
    mountpoint = os.path.dirname(keeptimeds[cgroups.V2])
    own_view = [*into(keeptimeds), "unshare", "--cgroup", "--mount", "--propagation", "private", "--",
                "sh", "-c", f'umount -l "{mountpoint}" && mount -t cgroup2 none "{mountpoint}" && exec "$@"', "sh"]
    with calling(start_daemon(prefix=own_view), prefix=into(callers)) as kt:
        with pytest.raises(errors.PermissionDenied, match=r"cgroup v2 cgroup /\.\./keeptime-test-\S+ is not one "
                                                          r"keeptimed can put a program in"):
            kt.restore(kt.checkpoint(nobody_sleeper), ["/bin/true"])
    with calling(start_daemon("--allow-lost-confinement", "cgroup", prefix=own_view), prefix=into(callers)) as kt:
        restored = kt.restore(kt.checkpoint(nobody_sleeper), ["/bin/sleep", "300"], policy="freeze")
        try:
            assert cgroup_of(restored.pid)[cgroups.V2] == "/" + os.path.basename(keeptimeds[cgroups.V2])
            if "pids" in callers:   # the v1 mounts show the whole tree
                assert cgroup_of(restored.pid)["pids"] == "/" + os.path.basename(callers["pids"])
        finally:
            os.kill(restored.pid, signal.SIGKILL)
            kt.wait(restored.pid, timeout=30)


# -- descriptors and the calling process ------------------------------------------

@pytest.mark.parametrize("fd", [0, 1, 2])
def test_a_program_cannot_open_keeptimeds_descriptors(fd, start_daemon, open_dir, nobody_sleeper):
    """`keeptime restore --stdin /proc/self/fd/2` read keeptimed's stderr (its log)."""
    out = os.path.join(open_dir, "stolen.txt")
    daemon = start_daemon()
    with calling(daemon) as kt:
        record_id = kt.checkpoint(nobody_sleeper)
        with pytest.raises(errors.NotFound, match=f"stdin '/proc/self/fd/{fd}' as uid {NOBODY}: No such file"):
            kt.restore(record_id, ["/bin/cat"], stdin=f"/proc/self/fd/{fd}", stdout=out)
        with pytest.raises(errors.NotFound, match=f"stdin '/proc/self/fd/{fd}'"):
            kt.exec(nobody_sleeper, ["/bin/cat"], stdin=f"/proc/self/fd/{fd}", stdout=out)
    assert not os.path.exists(out) or "keeptimed" not in open(out).read()


def test_restore_stdin_proc_self_fd_2_no_longer_reads_keeptimeds_log(start_daemon, open_dir, root_sleeper):
    """The CLI as root, the report's own words: not even root reads the log that way."""
    daemon = start_daemon()
    out = os.path.join(open_dir, "stolen.txt")
    record_id = daemon.cli("checkpoint", str(root_sleeper)).stdout.strip()
    result = daemon.cli("restore", record_id, "--stdin", "/proc/self/fd/2", "--stdout", out, "--", "/bin/cat")
    assert result.returncode == 1
    assert "NOT_FOUND: stdin '/proc/self/fd/2': No such file or directory (ENOENT)" in result.stderr
    assert not os.path.exists(out)


def test_a_caller_that_exited_gets_failed_precondition(start_daemon, open_dir, nobody_sleeper):
    """Its connection outlives it (another process holds the socket), but
    there is no process left to take a view, limits or cgroup from."""
    daemon = start_daemon()
    workdir = tempfile.mkdtemp(dir=open_dir)
    proxy = ConnectAs(workdir, daemon.socket, NOBODY, NOGROUP)
    try:
        with Client(socket=proxy.path, timeout=30) as kt:
            record_id = kt.checkpoint(nobody_sleeper)    # the connection is made: SO_PEERCRED names the connector
            proxy.process.kill()
            proxy.process.wait()
            with pytest.raises(errors.FailedPrecondition, match="the calling process .* has exited"):
                kt.restore(record_id, ["/bin/true"])
            assert kt.list()   # calls that need no process still work
    finally:
        proxy._listener.close()
        proxy._control.close()
