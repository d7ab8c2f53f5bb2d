"""Pids mean the caller's pid namespace, played for real.

The keeptime CLI runs inside `unshare --pid --fork --mount-proc` (bash is
pid 1 there, its first child pid 2) against a keeptimed in the host's pid
namespace. A pid inside collides with a live host process (pid 2 is the
host's kthreadd; ns_last_pid arranges a collision with any host pid), so a
daemon that read the pid in its own namespace would record the wrong process.
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import TEN_DAYS_S, _wait_for_child
from helpers.daemon import RunningDaemon
from helpers.impersonate import ConnectAs
from keeptime import Client, errors
from keeptimed import pidns
from keeptimed.errors import NotFound as DaemonNotFound

pytestmark = pytest.mark.root

S = 10**9
NOBODY = 65534


def in_pidns(daemon: RunningDaemon, script: str, *unshare_args: str, timeout: float = 90) -> dict:
    """Run a bash script as pid 1 of a new pid namespace with its own /proc.

    $KT is the keeptime CLI against daemon; each `out NAME VALUE` line the
    script prints becomes result[NAME] (later ones win); the script fails
    the test when it fails."""
    kt = f"{sys.executable} -m keeptime.cli --socket {daemon.socket}"
    prelude = "set -eu\nout() { echo \"@@ $1 $2\"; }\n"
    with tempfile.TemporaryDirectory(prefix="keeptime-pidns-") as scratch:
        done = subprocess.run(
            ["unshare", "--pid", "--fork", "--mount-proc", *unshare_args, "bash", "-c", prelude + script],
            env={**os.environ, "KT": kt}, cwd=scratch, capture_output=True, text=True, timeout=timeout,
        )
    assert done.returncode == 0, f"script failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    result = {}
    for line in done.stdout.splitlines():
        if line.startswith("@@ "):
            name, _, value = line[3:].partition(" ")
            result[name] = value
    return result


def host_monotonic_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def test_checkpoint_records_the_namespaces_pid_2_not_the_hosts_kthreadd(daemon):
    result = in_pidns(daemon, """
        sleep 300 &
        out sleeper $!
        out record "$($KT --json checkpoint 2 | tr -d '\\n')"
    """)
    assert result["sleeper"] == "2"
    record = json.loads(result["record"])
    assert record["root_pid"] == 2
    [process] = record["processes"]
    assert (process["pid"], process["ppid"], process["comm"]) == (2, 1, "sleep")
    assert [ns["pids"] for ns in record["namespaces"]] == [[2]]
    # keeptimed's own pid 2 is a kernel thread: what a host caller is told.
    host = daemon.cli("checkpoint", "2")
    assert host.returncode == 2 and "INVALID_ARGUMENT: pid 2 is a kernel thread (kthreadd)" in host.stderr


def test_a_pid_that_collides_with_a_live_host_process_names_the_namespaces_process(daemon, root_sleeper):
    """In a time namespace 10 days ahead, ns_last_pid gives the namespace's
    sleeper the pid of a live host process; its clocks tell the two apart."""
    pid = root_sleeper
    before = host_monotonic_ns()
    result = in_pidns(daemon, f"""
        echo {pid - 1} > /proc/sys/kernel/ns_last_pid
        sleep 300 &
        out sleeper $!
        out record "$($KT --json checkpoint {pid} | tr -d '\\n')"
        out clocks "$($KT --json clocks {pid} | tr -d '\\n')"
    """, "--time", "--monotonic", str(TEN_DAYS_S), "--boottime", str(TEN_DAYS_S))
    assert result["sleeper"] == str(pid)
    record, clocks = json.loads(result["record"]), json.loads(result["clocks"])
    assert record["root_pid"] == pid
    [process] = record["processes"]
    assert (process["pid"], process["ppid"], process["comm"]) == (pid, 1, "sleep")
    assert record["clocks"]["monotonic_ns"] >= before + TEN_DAYS_S * S   # the namespace's, not the host's
    assert clocks["pid"] == pid and not clocks["host_namespace"]
    assert clocks["clocks"]["monotonic_ns"] >= before + TEN_DAYS_S * S
    # The host's process of that pid is another one, in the host's time namespace.
    with daemon.client() as kt:
        hosts = kt.checkpoint_record(pid)
    assert hosts.processes[0].ppid == os.getpid() and hosts.clocks.monotonic_ns < before + TEN_DAYS_S * S


def test_a_pid_absent_from_the_namespace_is_not_found_though_it_exists_on_the_host(daemon):
    host_pid = daemon.proc.pid   # keeptimed itself: alive, and not in the new namespace
    result = in_pidns(daemon, f"""
        for call in checkpoint clocks wait; do
            set +e; $KT $call {host_pid} 2> err; rc=$?; set -e
            out "$call" "$rc $(cat err)"
        done
        set +e; $KT exec {host_pid} -- /bin/true 2> err; rc=$?; set -e
        out exec "$rc $(cat err)"
        out info "$($KT --json info | tr -d '\n')"
    """)
    for call in ("checkpoint", "clocks", "exec"):
        assert result[call] == f"1 keeptime: NOT_FOUND: no process with pid {host_pid} in the caller's pid namespace"
    assert result["wait"].startswith(f"1 keeptime: NOT_FOUND: pid {host_pid} was not started by this keeptimed")
    assert json.loads(result["info"]).get("pid", 0) == 0   # keeptimed itself is outside the namespace


def test_exec_starts_a_process_the_caller_sees_in_its_namespace(daemon, tmp_path):
    out = tmp_path / "exec.out"
    result = in_pidns(daemon, f"""
        sleep 300 &
        child=$($KT exec 2 --stdout {out} -- /bin/sh -c 'echo $$; exec sleep 300')
        out child "$child"
        for _ in $(seq 100); do [ "$(cat /proc/$child/comm)" = sleep ] && break; sleep 0.05; done
        out comm "$(cat /proc/$child/comm)"
        out ppid "$(awk '/^PPid:/ {{print $2}}' /proc/$child/status)"
        kill $child
        set +e; $KT wait $child; rc=$?; set -e
        out status "$rc"
    """)
    child = result["child"]
    assert int(child) > 2 and out.read_text().split() == [child]   # its own getpid() says the same
    assert result["comm"] == "sleep"
    assert result["ppid"] == "0"        # its parent, keeptimed, is outside the namespace
    assert result["status"] == str(128 + signal.SIGTERM)


def test_restore_starts_a_process_the_caller_sees_and_waits_for(daemon, tmp_path):
    out = tmp_path / "restore.out"
    result = in_pidns(daemon, f"""
        sleep 300 &
        record=$($KT checkpoint 2)
        restored=$($KT restore "$record" --policy freeze --stdout {out} -- /bin/sh -c 'echo $$; exec sleep 300')
        out restored "$restored"
        for _ in $(seq 100); do [ "$(cat /proc/$restored/comm)" = sleep ] && break; sleep 0.05; done
        out comm "$(cat /proc/$restored/comm)"
        out tree "$($KT --json checkpoint $restored | tr -d '\\n')"
        kill $restored
        set +e; $KT wait $restored; rc=$?; set -e
        out status "$rc"
        quick=$($KT restore "$record" -- /bin/true)
        set +e; $KT wait "$quick"; rc=$?; set -e
        out quick "$quick $rc"
    """)
    restored = int(result["restored"])
    assert out.read_text().split() == [str(restored)]
    assert result["comm"] == "sleep"
    tree = json.loads(result["tree"])
    assert tree["root_pid"] == restored and tree["processes"][0]["ppid"] == 0   # keeptimed is outside
    assert result["status"] == str(128 + signal.SIGTERM)
    quick, status = result["quick"].split()
    assert int(quick) > restored and status == "0"   # exited before it was adopted, still found by its pid


def test_verify_restore_takes_and_returns_the_callers_pids(daemon, tmp_path):
    script = tmp_path / "verify.py"
    script.write_text(
        "from keeptime import Client\n"
        f"with Client(socket={daemon.socket!r}) as kt:\n"
        "    record = kt.checkpoint(2)\n"
        "    restored = kt.restore(record, ['/bin/sleep', '300'], policy='freeze')\n"
        "    event = kt.verify_restore(restored.pid, record_id=record, stage='post-restore')\n"
        "    print('@@ restored', restored.pid)\n"
        "    print('@@ event', event.pid, event.ok)\n"
    )
    result = in_pidns(daemon, f"""
        sleep 300 &
        {sys.executable} {script}
    """)
    restored = result["restored"]
    assert result["event"] == f"{restored} True"
    with daemon.client() as kt:
        [event] = [e for e in kt.restores() if e.stage == "post-restore" and e.pid == int(restored)]
    assert event.ok


def test_a_caller_in_a_nested_namespace_and_one_in_a_sibling_see_only_their_own(daemon):
    """Namespace A holds a sleeper and a child namespace C; namespace B, a
    sibling of A at the same depth, has a sleeper of the same pid."""
    outer = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "bash", "-c",
                              "sleep 300 & unshare --pid --fork --mount-proc sleep 300 & wait"])
    sibling = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "bash", "-c", "sleep 300 & wait"])
    try:
        a_init, b_init = _wait_for_child(outer.pid), _wait_for_child(sibling.pid)
        a_sleeper, c_unshare = _wait_for_kids(a_init, 2)
        c_sleeper = _wait_for_child(c_unshare)
        [b_sleeper] = _wait_for_kids(b_init, 1)
        own = pidns.own()
        a = pidns.View(_namespace_of(a_init), own)
        assert not a.same and a.namespace.level == 1
        assert _nspid(a_sleeper)[-1] == _nspid(b_sleeper)[-1] == 2
        assert a.to_host(2) == a_sleeper
        assert a.to_caller(a_sleeper) == 2 and a.to_caller(b_sleeper) == 0 and a.to_caller(os.getpid()) == 0
        in_a = _nspid(c_sleeper)[1]    # the nested namespace's sleeper as A sees it
        assert a.to_host(in_a) == c_sleeper and a.to_caller(c_sleeper) == in_a
        with pytest.raises(DaemonNotFound):
            a.to_host(999_999)
        c = pidns.View(_namespace_of(c_sleeper), own)
        assert c.namespace.level == 2 and c.to_caller(c_sleeper) == 1 and c.to_caller(a_sleeper) == 0
    finally:
        for proc in (outer, sibling):
            subprocess.run(["pkill", "-KILL", "-P", str(proc.pid)], check=False)
            proc.wait()


def _nspid(pid: int) -> list[int]:
    with open(f"/proc/{pid}/status") as f:
        return pidns.nspids(f.read())


def _namespace_of(pid: int) -> pidns.PidNamespace:
    st = os.stat(f"/proc/{pid}/ns/pid")
    return pidns.PidNamespace(st.st_dev, st.st_ino, len(_nspid(pid)) - 1)


def _wait_for_kids(parent: int, count: int, timeout: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/{parent}/task/{parent}/children") as f:
            kids = [int(k) for k in f.read().split()]
        if len(kids) >= count:
            return sorted(kids)
        time.sleep(0.01)
    raise RuntimeError(f"pid {parent} has fewer than {count} children")


# -- a non-root caller in a pid namespace of its own -----------------------------

@pytest.fixture
def open_dir(world_writable_dir):
    """Here the programs write in it as nobody."""
    return world_writable_dir


def test_a_non_root_caller_in_its_own_pid_namespace(open_dir):
    """The connecting process (as nobody) is pid 1 of a new pid namespace:
    `unshare --pid` needs root, so the namespace is made as root and the
    connector drops to nobody inside it. nsenter puts a sleeper of nobody's
    (pid 2 there) and one of root's (pid 3) into the namespace."""
    daemon = RunningDaemon(open_dir).start("--socket-group", str(NOBODY))
    proxy = ConnectAs(open_dir, daemon.socket, NOBODY, NOBODY,
                      prefix=["unshare", "--pid", "--fork", "--mount-proc"])
    connector = _wait_for_child(proxy.process.pid)
    enter = ["nsenter", "--target", str(connector), "--pid", "--"]
    sleepers, inside = [], []
    try:
        for argv in (["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "sleep", "300"],
                     ["sleep", "300"]):   # one after the other: pids 2 and 3 in there
            sleepers.append(subprocess.Popen(enter + argv))
            inside.append(_wait_for_child(sleepers[-1].pid))
        nobodys, roots = inside
        assert (_nspid(nobodys)[-1], _nspid(roots)[-1]) == (2, 3)
        out = os.path.join(open_dir, "restored.out")
        with Client(socket=proxy.path, timeout=30) as kt:
            record = kt.checkpoint_record(2)
            assert record.root_pid == 2 and [p.pid for p in record.processes] == [2]
            assert kt.clocks(2).pid == 2
            with pytest.raises(errors.PermissionDenied, match=f"PERMISSION_DENIED: pid 3 does not belong to uid {NOBODY}$"):
                kt.checkpoint(3)
            with pytest.raises(errors.NotFound, match="in the caller's pid namespace"):
                kt.checkpoint(nobodys)    # its pid on the host
            restored = kt.restore(record.id, ["/bin/sh", "-c", "echo $$"], policy="freeze", stdout=out)
            assert kt.wait(restored.pid, timeout=30) == 0
            assert open(out).read().split() == [str(restored.pid)]
            execed = kt.exec(2, ["/bin/sh", "-c", "echo $$"], stdout=out)
            assert kt.wait(execed.pid, timeout=30) == 0
            assert open(out).read().split() == [str(execed.pid)]
    finally:
        for sleeper in sleepers:
            subprocess.run(["pkill", "-KILL", "-P", str(sleeper.pid)], check=False)
            sleeper.wait()
        proxy.close()
        daemon.stop()


# -- a caller keeptimed cannot see -------------------------------------------------

def test_a_caller_whose_pid_keeptimed_cannot_see_gets_failed_precondition(tmp_path, root_sleeper):
    """keeptimed in a pid namespace of its own (as pid 1) cannot see its
    host callers: SO_PEERCRED says pid 0, so their pids mean nothing."""
    daemon = RunningDaemon(tmp_path, command_prefix=["unshare", "--pid", "--fork", "--mount-proc"]).start()
    try:
        result = daemon.cli("checkpoint", str(root_sleeper))
        assert result.returncode == 1
        assert "FAILED_PRECONDITION: keeptimed cannot tell the pid namespace of the calling process" in result.stderr
        with daemon.client() as kt:
            assert kt.list() == []        # calls without pids still work
            with pytest.raises(errors.FailedPrecondition):
                kt.wait(1)
    finally:
        # unshare --fork ignores SIGTERM: end keeptimed (pid 1 in there, SIGTERM handled) directly.
        os.kill(_wait_for_child(daemon.proc.pid), signal.SIGTERM)
        assert daemon.stop() == 0, daemon.log()
