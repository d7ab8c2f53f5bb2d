"""The native module on the real kernel: namespaces, offsets, exec, errors."""
import errno
import os
import pathlib
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import pytest

from helpers.probes import read_probe
from keeptimed import native, procfs
from keeptimed.policies import Clocks

pytestmark = pytest.mark.root

DAY = 86_400 * 10**9
NO_OFFSETS = Clocks(0, 0)


def host_clocks() -> Clocks:
    return Clocks(time.clock_gettime_ns(time.CLOCK_MONOTONIC), time.clock_gettime_ns(time.CLOCK_BOOTTIME))


def spec(argv, **kw) -> native.ExecSpec:
    return native.ExecSpec(exec_paths=[argv[0]], argv=argv, env=[], **kw)


def reap(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_new_namespace_reads_the_targets_to_the_nanosecond(clockprobe, tmp_path):
    out = str(tmp_path / "probe.txt")
    targets = host_clocks() + Clocks(3 * DAY + 123_456_789, 4 * DAY + 987_654_321)
    started = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    spawned = native.spawn_in_new_timens(spec([clockprobe], stdout_path=out), targets, NO_OFFSETS)
    assert reap(spawned.pid) == 0
    mono, boot = read_probe(out)
    # The probe's own reading, mapped back to the host clock, bounds the latency.
    latency = (mono - spawned.offsets.monotonic_ns) - started
    assert 0 <= mono - targets.monotonic_ns <= latency
    assert 0 <= boot - targets.boottime_ns <= latency + 10**6
    assert spawned.mechanism == "unshare_proc_offsets"


def test_offsets_written_equal_what_the_kernel_shows(tmp_path):
    out = str(tmp_path / "offsets.txt")
    targets = host_clocks() + Clocks(-1_500_000_001, 7)  # negative with a nanosecond carry
    spawned = native.spawn_in_new_timens(
        spec(["/bin/cat", "/proc/self/timens_offsets"], stdout_path=out), targets, NO_OFFSETS)
    assert reap(spawned.pid) == 0
    with open(out) as f:
        assert procfs.parse_timens_offsets(f.read()) == spawned.offsets
    assert -1_500_000_001 - 10**9 < spawned.offsets.monotonic_ns < -1_500_000_001


def test_the_restored_process_is_the_callers_child_in_its_own_namespace(tmp_path):
    spawned = native.spawn_in_new_timens(spec(["/bin/sleep", "5"]), host_clocks(), NO_OFFSETS)
    try:
        assert procfs.read_stat(spawned.pid).ppid == os.getpid()  # CLONE_PARENT
        assert procfs.timens_inode(spawned.pid) == spawned.timens_inode != procfs.timens_inode(os.getpid())
        assert procfs.timens_inode(os.getpid(), for_children=True) == procfs.timens_inode(os.getpid())
        # The program made its namespace itself: the helper's never changes, not even for its children.
        helper = native.helper_pid()
        assert procfs.timens_inode(helper) == procfs.timens_inode(helper, for_children=True) == \
            procfs.timens_inode(os.getpid())
    finally:
        os.kill(spawned.pid, 9)
        reap(spawned.pid)


def test_offset_abi_is_detected_once_and_cached():
    spawned = native.spawn_in_new_timens(spec(["/bin/true"]), host_clocks(), NO_OFFSETS)
    reap(spawned.pid)
    # No released kernel carries the seed's clone3 fields: E2BIG, then the fallback.
    assert native.offset_abi_supported() is False
    assert spawned.mechanism == "unshare_proc_offsets"


def test_the_program_gets_a_clean_process_state(tmp_path):
    out = str(tmp_path / "status.txt")
    leaked_r, leaked_w = os.pipe()  # inheritable on purpose: must still not leak
    os.set_inheritable(leaked_r, True)
    try:
        script = "ls /proc/self/fd; grep -E '^(SigBlk|SigIgn)' /proc/self/status; umask; pwd; env"
        spawned = native.spawn_in_new_timens(
            spec(["/bin/sh", "-c", script], stdout_path=out, cwd="/tmp", umask=0o027),
            host_clocks(), NO_OFFSETS)
        assert reap(spawned.pid) == 0
    finally:
        os.close(leaked_r)
        os.close(leaked_w)
    lines = open(out).read().split()
    fds = sorted(int(x) for x in lines[: lines.index("SigBlk:")])
    assert fds == [0, 1, 2, 3]  # 3 is ls's own directory fd
    assert lines[lines.index("SigBlk:") + 1] == "0000000000000000"
    assert lines[lines.index("SigIgn:") + 1] == "0000000000000000"  # Python ignores SIGPIPE; the child must not
    assert "0027" in lines and "/tmp" in lines
    assert not any(line.startswith("PATH=") for line in lines)  # nothing inherited


def test_stdio_is_blocking_with_the_flags_it_was_opened_with(tmp_path):
    """stdio is opened O_NONBLOCK (a FIFO never blocks the spawn) and switched
    back before the exec: the program gets ordinary blocking descriptors,
    stdout and stderr appending."""
    out = str(tmp_path / "fdinfo.txt")
    spawned = native.spawn_in_new_timens(
        spec(["/bin/sh", "-c", "grep flags /proc/self/fdinfo/0 /proc/self/fdinfo/1 /proc/self/fdinfo/2"],
             stdout_path=out, stderr_path=str(tmp_path / "err.txt")), host_clocks(), NO_OFFSETS)
    assert reap(spawned.pid) == 0
    flags = [int(line.split()[-1], 8) for line in open(out).read().splitlines()]
    assert len(flags) == 3
    assert not any(f & os.O_NONBLOCK for f in flags), [oct(f) for f in flags]
    assert flags[0] & os.O_ACCMODE == os.O_RDONLY
    assert all(f & os.O_ACCMODE == os.O_WRONLY and f & os.O_APPEND for f in flags[1:]), [oct(f) for f in flags]


@pytest.mark.parametrize("size", [10, 100_000])
def test_small_and_large_requests_reach_the_program_whole(size, tmp_path):
    """A request travels in the control socket's message itself, or in a
    memfd when larger than that takes (64 KiB, kt_wire.h): either way the
    program gets its whole environment and argv."""
    out = str(tmp_path / "env.txt")
    spawned = native.spawn_in_new_timens(
        native.ExecSpec(exec_paths=["/bin/sh"], argv=["sh", "-c", 'printf "%s %s %s" "${#A}" "${#B}" "$0"', "argv0"],
                        env=[f"A={'a' * size}", f"B={'b' * size}"], stdout_path=out), host_clocks(), NO_OFFSETS)
    assert reap(spawned.pid) == 0
    assert open(out).read() == f"{size} {size} argv0"


def test_privileges_are_dropped_before_exec():
    shared = tempfile.mkdtemp(prefix="keeptime-test-")  # pytest's tmp_path is root-only
    os.chmod(shared, 0o777)
    out = pathlib.Path(shared) / "ids.txt"
    spawned = native.spawn_in_new_timens(
        spec(["/usr/bin/id"], stdout_path=str(out), uid=65534, gid=65534, groups=[65534]),
        host_clocks(), NO_OFFSETS)
    assert reap(spawned.pid) == 0
    assert out.read_text().startswith("uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)")
    assert out.stat().st_uid == 65534  # stdout opened after the drop
    shutil.rmtree(shared)


@pytest.mark.parametrize("paths, err", [
    (["/nonexistent/prog"], errno.ENOENT),
    (["/etc/passwd"], errno.EACCES),
    ([], errno.ENOENT),
])
def test_exec_failure_is_reported_and_nothing_is_left_behind(paths, err):
    def children():
        return sorted(set(procfs.children(os.getpid())) - {native.helper_pid()})

    before = children()
    with pytest.raises(native.NativeError) as raised:
        native.spawn_in_new_timens(
            native.ExecSpec(exec_paths=paths, argv=["prog"], env=[]), host_clocks(), NO_OFFSETS)
    assert (raised.value.errno, raised.value.step) == (err, "execve")
    assert children() == before  # the failed child was reaped


def test_candidates_are_tried_like_execvp():
    spawned = native.spawn_in_new_timens(
        native.ExecSpec(exec_paths=["/nonexistent/true", "/etc/passwd", "/bin/true"], argv=["true"], env=[]),
        host_clocks(), NO_OFFSETS)
    assert reap(spawned.pid) == 0


def test_targets_the_kernel_refuses_are_erange():
    with pytest.raises(native.NativeError) as raised:
        native.spawn_in_new_timens(spec(["/bin/true"]), Clocks(-DAY, 0), NO_OFFSETS)
    assert (raised.value.errno, raised.value.step) == (errno.ERANGE, "write /proc/self/timens_offsets")


def test_join_mode_enters_the_target_namespace(far_process, tmp_path):
    inside, _ = far_process
    out = str(tmp_path / "offsets.txt")
    pidfd = os.pidfd_open(inside)
    try:
        spawned = native.spawn_in_timens_of(spec(["/bin/cat", "/proc/self/timens_offsets"], stdout_path=out), pidfd)
    finally:
        os.close(pidfd)
    assert spawned.mechanism == "setns"
    assert reap(spawned.pid) == 0
    assert procfs.parse_timens_offsets(open(out).read()) == Clocks(10 * DAY, 10 * DAY)


def test_offsets_of_a_namespace_read_from_inside(far_process):
    inside, unshare_parent = far_process
    # util-linux unshare itself stays in the host namespace; only its child is inside.
    pidfd = os.pidfd_open(unshare_parent)
    try:
        assert procfs.parse_timens_offsets(native.read_timens_offsets(pidfd)) == NO_OFFSETS
    finally:
        os.close(pidfd)
    assert procfs.parse_timens_offsets(procfs.read_timens_offsets_file(unshare_parent)) == Clocks(10 * DAY, 10 * DAY)


def test_concurrent_spawns_from_many_threads(tmp_path):
    """The daemon calls in from many threads at once: every spawn must work
    and report its own result (no crossed pipes, no stolen children)."""
    results, failures = [], []

    def worker(n: int) -> None:
        try:
            for i in range(10):
                out = str(tmp_path / f"{n}-{i}.txt")
                target = host_clocks() + Clocks(n * DAY, n * DAY)
                s = native.spawn_in_new_timens(
                    spec(["/bin/cat", "/proc/self/timens_offsets"], stdout_path=out), target, NO_OFFSETS)
                results.append((n, out, s, reap(s.pid)))
        except Exception as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(1, 9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    assert len(results) == 80
    for n, out, spawned, status in results:
        assert status == 0
        shown = procfs.parse_timens_offsets(open(out).read())
        assert shown == spawned.offsets
        assert n * DAY - 10**9 < shown.monotonic_ns <= n * DAY


def _voluntary_switches() -> int:
    with open(f"/proc/self/task/{threading.get_native_id()}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("voluntary_ctxt_switches:"))


def test_the_caller_sleeps_until_the_exec_woken_by_no_report():
    """The reports (the helper's pid, the process's offsets) are left queued
    until the report socket hangs up at the exec: the calling thread blocks
    once per spawn, so nothing of keeptimed's wakes between the offsets and
    the program's exec."""
    native.spawn_in_new_timens(spec(["/bin/true"]), host_clocks(), NO_OFFSETS)   # the helper runs
    blocked = []
    for _ in range(5):
        before = _voluntary_switches()
        spawned = native.spawn_in_new_timens(spec(["/bin/true"]), host_clocks(), NO_OFFSETS)
        blocked.append(_voluntary_switches() - before)
        reap(spawned.pid)
    assert sorted(blocked)[2] <= 1, blocked   # one report at a time would make it 3


def test_the_exec_bound_runs_from_the_helpers_answer_when_that_comes_late():
    """The bound on the exec is armed with the request, which the helper
    answers at once; a helper that answers later (stopped here) still gives
    the process its whole bound, so it starts."""
    native.spawn_in_new_timens(spec(["/bin/true"]), host_clocks(), NO_OFFSETS)
    helper, bound = native.helper_pid(), native.exec_timeout()
    native.set_exec_timeout(0.3)
    os.kill(helper, signal.SIGSTOP)
    resume = threading.Timer(1.0, os.kill, (helper, signal.SIGCONT))
    resume.start()
    try:
        started = time.monotonic()
        spawned = native.spawn_in_new_timens(spec(["/bin/true"]), host_clocks(), NO_OFFSETS)
        assert time.monotonic() - started >= 0.9
        assert reap(spawned.pid) == 0
    finally:
        resume.join()
        native.set_exec_timeout(bound)


def test_a_dead_helper_is_replaced_transparently(tmp_path):
    spawned = native.spawn_in_new_timens(spec(["/bin/true"]), host_clocks(), NO_OFFSETS)
    reap(spawned.pid)
    old = native.helper_pid()
    os.kill(old, 9)
    time.sleep(0.05)
    spawned = native.spawn_in_new_timens(spec(["/bin/true"]), host_clocks(), NO_OFFSETS)
    assert reap(spawned.pid) == 0
    assert native.helper_pid() not in (0, old)
    assert procfs.read_stat(native.helper_pid()).ppid == os.getpid()


def test_the_helper_is_small_and_single_threaded():
    native.spawn_in_new_timens(spec(["/bin/true"]), host_clocks(), NO_OFFSETS)
    status = open(f"/proc/{native.helper_pid()}/status").read()
    fields = dict(line.split(":", 1) for line in status.splitlines())
    assert int(fields["Threads"]) == 1
    assert int(fields["VmRSS"].split()[0]) < 4096  # kB: copying it per restore is cheap
    assert fields["SigIgn"].strip() == "0000000000000000"
    assert sorted(os.listdir(f"/proc/{native.helper_pid()}/fd")) == ["0", "1", "2", "3", "4"]  # + own pid ns fd


# -- what the program takes from its caller instead of from keeptimed ---------

def _spawn_failure(**kw) -> native.NativeError:
    with pytest.raises(native.NativeError) as raised:
        native.spawn_in_new_timens(spec(["/bin/true"]), host_clocks(), NO_OFFSETS, **kw)
    return raised.value


@pytest.mark.parametrize("fd", [0, 1, 2, 3])
def test_the_program_holds_no_descriptor_of_keeptimeds_when_it_opens_its_paths(fd):
    """The helper's stdio is keeptimed's (its log), its fd 3 the control
    socket: before the program opens a path of the request it holds nothing
    but its report socket, so /proc/self/fd/N names nothing of keeptimed's."""
    with pytest.raises(native.NativeError) as raised:
        native.spawn_in_new_timens(spec(["/bin/cat"], stdin_path=f"/proc/self/fd/{fd}"), host_clocks(), NO_OFFSETS)
    assert (raised.value.errno, raised.value.step) == (errno.ENOENT, "open stdin")


@pytest.fixture
def private_mount(tmp_path):
    """A process in a mount namespace of its own, where a tmpfs covers a
    directory whose host copy holds another file: (its pid, the directory)."""
    covered = tmp_path / "covered"
    covered.mkdir()
    (covered / "host-only").write_text("the host's\n")
    holder = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         'mount -t tmpfs none "$0" && echo theirs > "$0/namespace-only" && echo ready && exec sleep 300',
         str(covered)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"ready\n"
        yield holder.pid, covered
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("mode", ["restore", "exec"])
def test_the_program_enters_the_namespaces_and_root_it_is_given(private_mount, mode, tmp_path):
    pid, covered = private_mount
    out = str(tmp_path / "seen.txt")
    mnt = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    root = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    inherited = native.Inherited(namespaces=[(mnt, native.NAMESPACE_FLAGS["mnt"])], root_fd=root)
    program = spec(["/bin/sh", "-c", f'ls "{covered}"; readlink /proc/self/ns/mnt'], stdout_path=out)
    try:
        if mode == "restore":
            spawned = native.spawn_in_new_timens(program, host_clocks(), NO_OFFSETS, inherited=inherited)
        else:
            pidfd = os.pidfd_open(os.getpid())
            try:
                spawned = native.spawn_in_timens_of(program, pidfd, inherited=inherited)
            finally:
                os.close(pidfd)
    finally:
        os.close(mnt)
        os.close(root)
    assert reap(spawned.pid) == 0
    listed, namespace = open(out).read().split()
    assert listed == "namespace-only"
    assert namespace == os.readlink(f"/proc/{pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")


def test_the_root_it_is_given_is_where_its_paths_resolve(tmp_path):
    """chroot into a directory: the program, its stdio and its cwd are found there."""
    jail = tmp_path / "jail"
    jail.mkdir()
    source = tmp_path / "hello.c"
    source.write_text('#include <unistd.h>\nint main(void){ return write(1, "inside\\n", 7) == 7 ? 0 : 1; }\n')
    built = subprocess.run(["gcc", "-static", "-O2", "-o", str(jail / "hello"), str(source)], capture_output=True)
    if built.returncode != 0:
        pytest.skip(f"cannot link a static program: {built.stderr.decode()[-200:]}")
    root = os.open(str(jail), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        spawned = native.spawn_in_new_timens(spec(["/hello"], stdin_path="/hello", stdout_path="/out.txt",
                                                  stderr_path="/out.txt", cwd="/"), host_clocks(),
                                             NO_OFFSETS, inherited=native.Inherited(root_fd=root))
    finally:
        os.close(root)
    assert reap(spawned.pid) == 0
    assert (jail / "out.txt").read_text() == "inside\n"


def test_the_program_gets_the_rlimits_it_is_given(tmp_path):
    out = str(tmp_path / "limits.txt")
    limits = [(native.RLIMITS["RLIMIT_NOFILE"], 64, 128), (native.RLIMITS["RLIMIT_CORE"], 0, 4096)]
    spawned = native.spawn_in_new_timens(
        spec(["/bin/sh", "-c", "ulimit -Sn; ulimit -Hn; ulimit -Sc; ulimit -Hc"], stdout_path=out),
        host_clocks(), NO_OFFSETS, inherited=native.Inherited(rlimits=limits))
    assert reap(spawned.pid) == 0
    assert open(out).read().split() == ["64", "128", "0", "8"]   # the shell counts cores in 512-byte blocks


def test_the_program_gets_the_loginuid_it_is_given(tmp_path):
    if not os.path.exists("/proc/self/loginuid"):
        pytest.skip("this kernel has no audit loginuid (CONFIG_AUDIT)")
    out = str(tmp_path / "loginuid.txt")
    spawned = native.spawn_in_new_timens(
        spec(["/bin/sh", "-c", "cat /proc/self/loginuid; echo; cat /proc/self/sessionid"], stdout_path=out),
        host_clocks(), NO_OFFSETS, inherited=native.Inherited(loginuid=4321))
    assert reap(spawned.pid) == 0
    loginuid, session = open(out).read().split()
    assert loginuid == "4321"
    assert session != "4294967295"   # setting a loginuid starts a new audit session


def _cgroup_mounts() -> dict:
    from keeptimed import cgroups

    with open("/proc/self/mountinfo") as f:
        return {h.key: h for h in cgroups.hierarchies(f.read())}


@pytest.fixture
def fresh_cgroups():
    """A new cgroup in the cgroup v2 hierarchy and in the v1 pids hierarchy,
    where mounted: {key: directory}; removed afterwards."""
    name = f"keeptime-test-{os.getpid()}-{time.monotonic_ns()}"
    made = {}
    for key, hierarchy in _cgroup_mounts().items():
        if key in ("", "pids"):
            made[key] = os.path.join(hierarchy.mountpoint, name)
            os.mkdir(made[key])
    if not made:
        pytest.skip("no cgroup v2 or v1 pids hierarchy is mounted")
    yield made
    for directory in made.values():
        for _ in range(100):   # until its processes are reaped
            try:
                os.rmdir(directory)
                break
            except OSError:
                time.sleep(0.05)


def test_the_program_is_born_in_the_cgroups_it_is_given(fresh_cgroups, tmp_path):
    out = str(tmp_path / "cgroup.txt")
    v2 = os.open(fresh_cgroups[""], os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC) if "" in fresh_cgroups else None
    procs = ([os.open(os.path.join(fresh_cgroups["pids"], "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)]
             if "pids" in fresh_cgroups else [])
    try:
        spawned = native.spawn_in_new_timens(spec(["/bin/cat", "/proc/self/cgroup"], stdout_path=out),
                                             host_clocks(), NO_OFFSETS,
                                             inherited=native.Inherited(cgroup_fd=v2, cgroup_procs_fds=procs))
    finally:
        for fd in [v2, *procs]:
            if fd is not None:
                os.close(fd)
    assert reap(spawned.pid) == 0
    lines = open(out).read().splitlines()
    for key, directory in fresh_cgroups.items():
        name = "/" + os.path.basename(directory)
        assert any(line.split(":", 2)[1:] == [key, name] for line in lines), (key, lines)


def test_each_inherited_step_that_fails_is_named_and_leaves_nothing_behind():
    def children():
        return sorted(set(procfs.children(os.getpid())) - {native.helper_pid()})

    before = children()
    net = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    readonly = os.open("/proc/self/cgroup", os.O_RDONLY | os.O_CLOEXEC)
    not_a_cgroup = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    with open("/proc/sys/fs/nr_open") as f:
        above_nr_open = int(f.read()) + 1
    try:
        cases = [
            (dict(namespaces=[(net, native.NAMESPACE_FLAGS["mnt"])]), errno.EINVAL, "setns(CLONE_NEWNS)"),
            (dict(rlimits=[(native.RLIMITS["RLIMIT_NOFILE"], 64, above_nr_open)]), errno.EPERM,
             "setrlimit(RLIMIT_NOFILE)"),
            (dict(cgroup_procs_fds=[readonly]), errno.EBADF, "write cgroup.procs"),
            (dict(cgroup_fd=not_a_cgroup), errno.EBADF, "clone3(CLONE_INTO_CGROUP)"),
        ]
        for given, err, step in cases:
            failure = _spawn_failure(inherited=native.Inherited(**given))
            assert (failure.errno, failure.step) == (err, step), given
    finally:
        for fd in (net, readonly, not_a_cgroup):
            os.close(fd)
    assert children() == before
