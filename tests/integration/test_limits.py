"""Denial of service by socket_group members, played for real.

Two members of the socket's group (nobody, and uid MEMBER who shares
nobody's group) attack a real keeptimed through its real socket with their
own credentials (helpers/impersonate.py); root, and the other member, must
still be served, and each refusal must be RESOURCE_EXHAUSTED naming its limit.
"""
import concurrent.futures
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import grpc
import pytest

from helpers.daemon import RunningDaemon
from helpers.impersonate import ConnectAs, as_user
from helpers.smalldisk import SmallDisk
from keeptime import Client, errors
from keeptime.criu import hookwire
from keeptime.v1 import keeptime_pb2 as pb
from keeptimed import recordfile
from keeptimed.store import RecordStore

pytestmark = pytest.mark.root

NOBODY = 65534
NOGROUP = 65534
MEMBER = 4242            # no passwd entry needed: its gid makes it a member
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"




class Member:
    """A socket_group member: its connections carry its own uid (SO_PEERCRED)."""

    def __init__(self, workdir: str, daemon: RunningDaemon, uid: int):
        self.uid = uid
        self.proxy = ConnectAs(workdir, daemon.socket, uid, NOGROUP)
        self.channel = grpc.insecure_channel(f"unix:{self.proxy.path}")

    def client(self, timeout: float = 20) -> Client:
        return Client(socket=self.proxy.path, timeout=timeout)

    def close(self) -> None:
        self.channel.close()
        self.proxy.close()


class Streams:
    """Calls opened on one channel that send nothing until released: idle
    reflection streams, or unary calls whose request message never comes."""

    def __init__(self, channel: grpc.Channel, count: int, method: str = REFLECTION):
        self.release = threading.Event()
        call = channel.stream_stream(method, request_serializer=bytes, response_deserializer=bytes)
        self.calls = [call(self._nothing()) for _ in range(count)]

    def _nothing(self):
        self.release.wait()
        return
        yield

    def settle(self, refused: int, timeout: float = 30) -> list:
        """Wait until `refused` calls have ended; the statuses of those that did."""
        deadline = time.monotonic() + timeout
        while sum(call.done() for call in self.calls) < refused and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)   # and no more than those
        return [call for call in self.calls if call.done()]

    def close(self) -> None:
        self.release.set()
        for call in self.calls:
            call.cancel()


def started(daemon: RunningDaemon, *flags: str) -> RunningDaemon:
    return daemon.start("--socket-group", str(NOGROUP), *flags)


def root_is_served(daemon: RunningDaemon) -> None:
    """What the review saw fail: root's CLI with a 10 s deadline."""
    health = daemon.cli("--timeout", "10", "health", timeout=30)
    assert (health.returncode, health.stdout) == (0, "SERVING\n"), health.stderr
    listed = daemon.cli("--timeout", "10", "list", timeout=30)
    assert listed.returncode == 0, listed.stderr


def eventually(call, timeout: float = 10):
    """call() once it is no longer refused by a limit (calls just ended take a moment to leave)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except errors.ResourceExhausted:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


# -- 1. streams and calls that hold workers ---------------------------------------


@pytest.mark.parametrize("method", [REFLECTION, "/keeptime.v1.Keeptime/ListRecords"],
                         ids=["idle-reflection-streams", "unary-calls-without-request"])
def test_members_holding_calls_open_cannot_starve_root_or_each_other(open_dir, method):
    """Each member opens 32 calls on one connection and sends nothing: each
    keeps user_calls (8) of them, the rest are refused at once naming
    user_calls. Root, and a third member, are served meanwhile, and the
    daemon's self-check stays SERVING because workers are free. (Unary
    calls run on the quick workers: as many as the workers for waits and
    streams here, so that members' shares of both are the same.)"""
    daemon = started(RunningDaemon(open_dir), "--quick-workers", "32")
    attackers = [Member(open_dir, daemon, uid) for uid in (NOBODY, MEMBER)]
    other = Member(open_dir, daemon, MEMBER + 1)
    held = []
    try:
        for attacker in attackers:
            streams = Streams(attacker.channel, 32, method)
            held.append(streams)
            refused = streams.settle(refused=24)
            assert len(refused) == 24
            for call in refused:
                assert call.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert f"uid {attacker.uid} already has 8 calls in progress, the most user_calls allows" \
                    in call.details()
        root_is_served(daemon)
        with other.client(timeout=10) as kt:
            assert kt.list() == []
        assert daemon.health() == "SERVING"
        assert "no worker thread took a call" not in daemon.log()
        for streams in held:
            streams.close()
        with attackers[0].client(timeout=10) as kt:   # its calls ended: it is served again
            assert eventually(kt.list) == []
    finally:
        for streams in held:
            streams.close()
        for member in (*attackers, other):
            member.close()
        assert daemon.stop() == 0, daemon.log()


def test_one_member_holding_quick_calls_open_leaves_other_members_served(open_dir):
    """With the quick workers of a 2-CPU host (4: members may hold 3), one
    member's unary calls whose request never comes hold 2 of them, half the
    members' share, and the rest are refused naming quick_workers; another
    member's calls are served meanwhile, and root's."""
    daemon = started(RunningDaemon(open_dir), "--quick-workers", "4")
    attacker, other = Member(open_dir, daemon, NOBODY), Member(open_dir, daemon, MEMBER)
    held = None
    try:
        held = Streams(attacker.channel, 6, "/keeptime.v1.Keeptime/ListRecords")
        refused = held.settle(refused=4)
        assert len(refused) == 4
        for call in refused:
            assert call.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert (f"uid {NOBODY} already holds 2 of the 3 quick-call workers callers other than root may hold, "
                    "as many as one uid may (half, so that other users are served)") in call.details()
        with other.client(timeout=10) as kt:
            assert kt.list() == [] and kt.health() == "SERVING"
        root_is_served(daemon)
    finally:
        if held is not None:
            held.close()
        for member in (attacker, other):
            member.close()
        assert daemon.stop() == 0, daemon.log()


def test_a_call_refused_before_it_began_is_sent_again_by_the_client_for_a_moment(open_dir, member_sleeper):
    """A member at user_calls (1 here, held by a stalled call): its next
    call is refused before it begins, marked busy, so keeptime.Client sends
    it again, and it succeeds once the stalled call ends within 2 s; past
    2 s the refusal naming user_calls is reported. A refusal of work that
    began (user_records) is reported at once, never sent again."""
    daemon = started(RunningDaemon(open_dir), "--user-calls", "1", "--user-records", "1")
    member = Member(open_dir, daemon, MEMBER)
    held = None
    try:
        with member.client(timeout=20) as kt:
            kt.checkpoint(member_sleeper)
            held = Streams(member.channel, 1)
            assert held.settle(refused=0) == []
            threading.Timer(0.5, held.close).start()
            assert len(kt.list()) == 1   # refused until the stalled call ended, then served
            held = Streams(member.channel, 1)
            assert held.settle(refused=0) == []
            with pytest.raises(errors.ResourceExhausted) as caught:
                kt.list()
            assert_limit(caught.value, f"uid {MEMBER} already has 1 calls in progress, the most user_calls allows")
            refusals = daemon.log().count('"ListRecords RESOURCE_EXHAUSTED"')
            assert refusals >= 5   # sent again and again for 2 s
            held.close()
            with pytest.raises(errors.ResourceExhausted) as caught:
                eventually(kt.list)   # the stalled call's place is free again
                kt.checkpoint(member_sleeper)
            assert "the most user_records allows" in caught.value.message
            assert daemon.log().count('"Checkpoint RESOURCE_EXHAUSTED"') == 1
    finally:
        if held is not None:
            held.close()
        member.close()
        assert daemon.stop() == 0, daemon.log()


# Run by a member (stdlib only: the test's virtualenv may be root's alone):
# make a user namespace, wait for root to write its uid and gid maps, become
# uid argv[1] there (a host uid of the map's range, SUBUIDS + argv[1]), and
# exec argv[2:] (connect_as, as ConnectAs runs it).
SUBUIDS = 300000
ENTER_OWN_USER_NAMESPACE = """
import ctypes, os, sys, time
if ctypes.CDLL(None, use_errno=True).unshare(0x10000000) != 0:   # CLONE_NEWUSER
    sys.exit("unshare: " + os.strerror(ctypes.get_errno()))
while not open("/proc/self/uid_map").read():
    time.sleep(0.01)
inner_uid = int(sys.argv[1])
os.setresgid(0, 0, 0)
os.setresuid(inner_uid, inner_uid, inner_uid)
os.execv(sys.argv[2], sys.argv[2:])
"""


def from_own_user_namespace(workdir: str, daemon: RunningDaemon, inner_uid: int) -> ConnectAs:
    """A proxy whose connections reach keeptimed from host uid SUBUIDS +
    inner_uid, in a user namespace MEMBER made (root maps the range, as
    newuidmap does for the ranges of /etc/subuid)."""
    directory = os.path.join(workdir, f"userns-{inner_uid}")
    os.mkdir(directory)
    proxy = ConnectAs(directory, daemon.socket, MEMBER, NOGROUP,
                      inner=["/usr/bin/python3", "-c", ENTER_OWN_USER_NAMESPACE, str(inner_uid)])
    ours = os.stat("/proc/self/ns/user").st_ino
    deadline = time.monotonic() + 10
    while os.stat(f"/proc/{proxy.process.pid}/ns/user").st_ino == ours:
        assert time.monotonic() < deadline, "the member made no user namespace"
        time.sleep(0.01)
    with open(f"/proc/{proxy.process.pid}/uid_map", "w") as f:
        f.write(f"0 {SUBUIDS} 100\n")
    with open(f"/proc/{proxy.process.pid}/gid_map", "w") as f:
        f.write(f"0 {NOGROUP} 1\n")
    return proxy


def test_a_member_calling_from_uids_of_its_own_user_namespace_is_charged_for_them(open_dir):
    """A member with subordinate uids calls from two host uids of user
    namespaces it made: both are charged to the member, so together they
    hold half the members' quick workers (2 of 3), and another member and
    root are still served."""
    daemon = started(RunningDaemon(open_dir), "--quick-workers", "4")
    other = Member(open_dir, daemon, MEMBER + 1)
    proxies, channels, held = [], [], []
    try:
        for inner_uid in (5, 6):
            proxies.append(from_own_user_namespace(open_dir, daemon, inner_uid))
            channels.append(grpc.insecure_channel(f"unix:{proxies[-1].path}"))
            held.append(Streams(channels[-1], 2, "/keeptime.v1.Keeptime/ListRecords"))
        assert held[0].settle(refused=0) == []
        refused = held[1].settle(refused=2)
        assert len(refused) == 2
        for call in refused:
            assert call.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert (f"uid {MEMBER} (which made the user namespace uid {SUBUIDS + 6} calls from) already holds 2 of "
                    "the 3 quick-call workers callers other than root may hold") in call.details()
        with other.client(timeout=10) as kt:
            assert kt.list() == []
        root_is_served(daemon)
        assert f'"caller_uid": {SUBUIDS + 6}' in daemon.log()   # logged, and owning records, as its own uid
    finally:
        for streams in held:
            streams.close()
        for channel in channels:
            channel.close()
        for proxy in (*proxies, other):
            proxy.close()
        assert daemon.stop() == 0, daemon.log()


def test_members_together_never_take_roots_workers(open_dir):
    """However many members there are, they hold at most workers -
    root_workers workers together (each at most half of those); the next
    member call is refused naming root_workers, and root is served."""
    daemon = started(RunningDaemon(open_dir), "--workers", "6", "--root-workers", "2", "--user-calls", "3")
    members = [Member(open_dir, daemon, uid) for uid in (NOBODY, MEMBER, MEMBER + 1)]
    held = []
    try:
        for member in members[:2]:
            held.append(Streams(member.channel, 2))
            assert held[-1].settle(refused=0) == []
        held.append(Streams(members[2].channel, 2))
        refused = held[-1].settle(refused=2)
        assert len(refused) == 2
        for call in refused:
            assert call.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "workers callers other than root may hold are all busy" in call.details()
            assert "root_workers" in call.details()
        root_is_served(daemon)
    finally:
        for streams in held:
            streams.close()
        for member in members:
            member.close()
        assert daemon.stop() == 0, daemon.log()


def test_members_stalling_criu_hook_steps_leave_root_its_hook_workers(open_dir):
    """CRIU hook steps have workers of their own, and a step that sends its
    first bytes and then nothing holds one for up to 5 s. Each member holds
    two such steps at most, members together all but root's two workers;
    the rest are refused at once, and root's step is answered meanwhile."""
    daemon = started(RunningDaemon(open_dir))
    members = [Member(open_dir, daemon, uid) for uid in (NOBODY, MEMBER, MEMBER + 1, MEMBER + 2)]
    stalled = []
    try:
        for member in members:
            for _ in range(3):
                sock = member.proxy.connection()
                sock.sendall(hookwire.MAGIC)   # a hook's first bytes, and nothing more
                stalled.append(sock)
            time.sleep(0.3)   # in order: the first members take the places
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(30)
            sock.connect(daemon.socket)
            sock.sendall(hookwire.encode_request({"action": "pre-dump", "fds": ""}))
            assert hookwire.read_reply(sock) == (0, "")
        answers = []
        for sock in stalled:   # the held ones answer once their 5 s are up
            sock.settimeout(30)
            answers.append(hookwire.read_reply(sock)[1])
        refused = [message for message in answers if "keeptimed refused the step" in message]
        # The first three members hold two each, their third refused; the fourth finds none left.
        assert sum("already has 2 CRIU hook steps in progress, the most user_hook_steps allows" in m
                   for m in refused) == 3
        assert sum("the 6 CRIU hook workers callers other than root may hold are all busy" in m
                   for m in refused) == 3
        assert len(refused) == 6, answers
    finally:
        for sock in stalled:
            sock.close()
        for member in members:
            member.close()
        assert daemon.stop() == 0, daemon.log()


class NotifyListener:
    """A datagram socket standing in for systemd's notification socket."""

    def __init__(self, path: str):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.address = path

    def next(self, timeout: float) -> dict:
        self.sock.settimeout(timeout)
        data = self.sock.recv(4096).decode()
        return dict(line.split("=", 1) for line in data.splitlines())

    def quiet_for(self, seconds: float, within: float = 60) -> bool:
        """Whether the watchdog pings stop for that long (pings sent before
        they stopped are read first), within that many seconds."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                self.next(seconds)
            except socket.timeout:
                return True
        return False

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("flags, method, what", [
    (("--workers", "4"), REFLECTION, "4 workers for waits and streams (workers)"),
    (("--quick-workers", "4"), "/keeptime.v1.Keeptime/ListRecords", "4 quick workers (quick_workers)"),
], ids=["streams-hold-the-workers-for-waits-and-streams", "unary-calls-hold-the-quick-workers"])
def test_a_starved_worker_pool_turns_health_not_serving_and_stops_the_watchdog(open_dir, flags, method, what):
    """Root is not limited: its own idle streams can hold every worker for
    waits and streams, its unary calls whose request never comes every quick
    worker. The self-check then fails, so the systemd watchdog (and the
    Kubernetes probes, which get NOT_SERVING or no answer) restart keeptimed
    instead of leaving it wedged; once workers are free it is healthy again."""
    listener = NotifyListener(os.path.join(open_dir, "notify.sock"))
    daemon = RunningDaemon(open_dir)
    daemon.start(*flags, env={"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "1000000"}, wait=False)
    streams = None
    try:
        assert listener.next(20)["READY"] == "1"
        assert listener.next(5) == {"WATCHDOG": "1"}
        with grpc.insecure_channel(f"unix:{daemon.socket}") as channel:
            streams = Streams(channel, 4, method)
            assert streams.settle(refused=0, timeout=1) == []
            assert listener.quiet_for(6), "the watchdog is still pinged with every worker held"
            assert f"no worker thread took a call within 2 s: all {what} are held" in daemon.log()
            streams.close()
            assert listener.next(10) == {"WATCHDOG": "1"}
        deadline = time.monotonic() + 15
        while daemon.health() != "SERVING":
            assert time.monotonic() < deadline, "did not report SERVING again"
            time.sleep(0.2)
    finally:
        if streams:
            streams.close()
        listener.close()
        assert daemon.stop() == 0, daemon.log()


def test_root_is_served_while_members_hold_their_shares_of_both_pools(open_dir, member_sleeper, root_sleeper):
    """Quick calls (every unary call but Wait) and calls that may block
    (Wait, streams) run on workers of their own, counted apart. MEMBER holds
    its whole user_calls in blocked Waits (user_waits) and idle streams,
    nobody and a third member the members' whole share of the quick workers
    in unary calls whose request never comes (nobody half of it, as much as
    one uid may): root's quick calls are served, and so are more of root's
    Waits at once than there are quick workers."""
    daemon = started(RunningDaemon(open_dir), "--quick-workers", "4")   # members may hold 3 of them
    member, nobody = Member(open_dir, daemon, MEMBER), Member(open_dir, daemon, NOBODY)
    third = Member(open_dir, daemon, MEMBER + 1)
    held, running = [], []
    try:
        with member.client(timeout=60) as kt, concurrent.futures.ThreadPoolExecutor(4) as pool:
            record_id = kt.checkpoint(member_sleeper)
            running = [kt.restore(record_id, ["sleep", "600"]).pid for _ in range(4)]
            waits = [pool.submit(kt._call, "Wait", pb.WaitRequest(pid=pid), 60) for pid in running]
            held.append(Streams(member.channel, 4))
            assert held[-1].settle(refused=0) == [] and not any(wait.done() for wait in waits)
            with pytest.raises(errors.ResourceExhausted) as caught:
                kt.list()
            assert_limit(caught.value, f"uid {MEMBER} already has 8 calls in progress, the most user_calls allows")

            held.append(Streams(nobody.channel, 4, "/keeptime.v1.Keeptime/ListRecords"))
            refused = held[-1].settle(refused=2)
            assert len(refused) == 2 and all(call.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for call in refused)
            assert f"uid {NOBODY} already holds 2 of the 3 quick-call workers" in refused[0].details()
            held.append(Streams(third.channel, 2, "/keeptime.v1.Keeptime/ListRecords"))
            refused = held[-1].settle(refused=1)
            assert len(refused) == 1 and refused[0].code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert ("the 3 quick-call workers callers other than root may hold are all busy (the rest are root's: "
                    "a quarter of quick_workers)") in refused[0].details()

            root_is_served(daemon)
            with daemon.client() as root, concurrent.futures.ThreadPoolExecutor(6) as roots_pool:
                roots = [root.restore(root.checkpoint(root_sleeper), ["sleep", "600"]).pid for _ in range(6)]
                running += roots
                roots_waits = [roots_pool.submit(root.wait, pid, 60) for pid in roots]
                time.sleep(1)
                assert not any(wait.done() for wait in roots_waits)
                assert root.list()   # six Waits blocked, on more workers than the four quick ones
                for pid in roots:
                    os.kill(pid, signal.SIGKILL)
                assert [wait.result(timeout=30) for wait in roots_waits] == [128 + signal.SIGKILL] * 6
            assert daemon.health() == "SERVING"
            for pid in running[:4]:
                os.kill(pid, signal.SIGKILL)
            assert [wait.result(timeout=30).signal for wait in waits] == [signal.SIGKILL] * 4
            running = []
    finally:
        for streams in held:
            streams.close()
        for pid in running:
            os.kill(pid, signal.SIGKILL)
        for each in (member, nobody, third):
            each.close()
        assert daemon.stop() == 0, daemon.log()


# -- 2. a restored process stopped before its exec --------------------------------

# Run as the member: SIGSTOP every process of its own that is still
# keeptime-helper's clone (its name until the exec), i.e. a restored
# process past its switch to the member's uid but short of its exec; print
# each pid stopped. kill() fails with EPERM while the clone is still root's.
STOPPER = """
import os, signal, sys, time
wanted, stopped, deadline = int(sys.argv[1]), set(), time.monotonic() + 120
while len(stopped) < wanted and time.monotonic() < deadline:
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in stopped:
            continue
        try:
            with open(f"/proc/{name}/comm") as f:
                if f.read().strip() != "keeptime-helper":
                    continue
            os.kill(int(name), signal.SIGSTOP)
        except OSError:
            continue
        stopped.add(int(name))
        print(name, flush=True)
"""


def slow_path(workdir: str, depth: int = 1000) -> str:
    """A PATH whose every entry takes a millisecond or two to find missing:
    symbolic links that walk a directory chain 1000 deep, 16 times over. A
    program looked up through 2000 of them spends seconds in its exec
    attempts, after switching to the caller's uid: the window in which its
    owner can stop it, made wide enough to hit every time."""
    maze = os.path.join(workdir, "maze")
    os.mkdir(maze, 0o755)
    fd = os.open(maze, os.O_RDONLY)
    for _ in range(depth):
        os.mkdir("a", 0o755, dir_fd=fd)
        deeper = os.open("a", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = deeper
    os.close(fd)
    os.symlink("/".join(["a"] * depth), os.path.join(maze, "s0"))
    for k in range(1, 5):
        os.symlink(f"s{k - 1}/" + "../" * depth + f"s{k - 1}", os.path.join(maze, f"s{k}"))
    return ":".join([os.path.join(maze, "s4")] * 2000)


@pytest.fixture
def member_sleeper():
    """A process of MEMBER's, to checkpoint as MEMBER."""
    proc = subprocess.Popen(as_user(MEMBER, NOGROUP, ["sleep", "600"]))
    yield proc.pid
    proc.kill()
    proc.wait()


def stopper(count: int) -> subprocess.Popen:
    return subprocess.Popen(as_user(MEMBER, NOGROUP, [sys.executable, "-c", STOPPER, str(count)]),
                            stdout=subprocess.PIPE, text=True)


def assert_gone(pid: int) -> None:
    assert not os.path.exists(f"/proc/{pid}"), f"pid {pid} was left behind"


def test_restores_stopped_before_exec_are_killed_at_exec_timeout_and_fail_clearly(open_dir, member_sleeper):
    """The member stops its restored processes between their switch to its
    uid and their exec. Each Restore ends after exec_timeout with ABORTED:
    the process was killed and reaped, the program never ran, so a retry
    runs it once. Meanwhile root is served, and nothing is left behind."""
    daemon = started(RunningDaemon(open_dir), "--exec-timeout", "2", "--quick-workers", "8")   # 3 restores of one uid at once
    attacker = Member(open_dir, daemon, MEMBER)
    path = slow_path(open_dir)
    try:
        with attacker.client(timeout=60) as kt:
            record_id = kt.checkpoint(member_sleeper)
            stopping = stopper(3)
            with concurrent.futures.ThreadPoolExecutor(3) as pool:
                restores = [pool.submit(kt.restore, record_id, ["no-such-program"], env={"PATH": path})
                            for _ in range(3)]
                stopped = [int(stopping.stdout.readline()) for _ in range(3)]
                root_is_served(daemon)
                started_at = time.monotonic()
                for restore in restores:
                    with pytest.raises(errors.KeeptimeError) as caught:
                        restore.result(timeout=60)
                    assert caught.value.code == grpc.StatusCode.ABORTED, caught.value
                    message = caught.value.message
                    assert "did not reach its exec within 2 s (exec_timeout)" in message
                    assert "keeptimed killed it, so the program never ran" in message and "\n" not in message
                assert time.monotonic() - started_at < 10
            stopping.wait(timeout=30)
        for pid in stopped:
            assert_gone(pid)
        assert daemon.zombies() == []
        assert daemon.health() == "SERVING"
    finally:
        attacker.close()
        assert daemon.stop() == 0, daemon.log()


def test_shutdown_completes_while_a_restore_waits_for_a_stopped_process(open_dir, member_sleeper):
    """With a long exec_timeout, SIGTERM still stops keeptimed within its
    grace period: the waits for an exec end at once and their processes are
    killed, never left stopped behind."""
    daemon = started(RunningDaemon(open_dir), "--exec-timeout", "300", "--grace", "2")
    attacker = Member(open_dir, daemon, MEMBER)
    path = slow_path(open_dir)
    try:
        with attacker.client(timeout=60) as kt:
            record_id = kt.checkpoint(member_sleeper)
            stopping = stopper(1)
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                restore = pool.submit(kt.restore, record_id, ["no-such-program"], env={"PATH": path})
                stopped = int(stopping.stdout.readline())
                signalled_at = time.monotonic()
                assert daemon.stop(signal.SIGTERM, timeout=60) == 0, daemon.log()
                assert time.monotonic() - signalled_at < 15
                with pytest.raises(errors.KeeptimeError):   # cut off by the stop, whatever the status
                    restore.result(timeout=60)
            stopping.wait(timeout=30)
        assert_gone(stopped)
        assert "had not reached its exec when keeptimed stopped" in daemon.log()
    finally:
        attacker.close()
        daemon.stop()


# -- 3. quotas: the store, processes, waits, memory --------------------------------

TREE = 200   # processes in a member's tree: records of about 12 KiB, as a real tree makes


class Tree:
    """A process tree of uid's: a shell and TREE sleeping children."""

    def __init__(self, uid: int):
        self.proc = subprocess.Popen(
            as_user(uid, NOGROUP, ["sh", "-c", f"for i in $(seq {TREE}); do sleep 600 & done; wait"]),
            start_new_session=True)
        deadline = time.monotonic() + 30
        while len(self.children()) < TREE:
            assert time.monotonic() < deadline, "the tree did not grow"
            time.sleep(0.05)
        self.pid = self.proc.pid

    def children(self) -> list[str]:
        try:
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                return f.read().split()
        except OSError:
            return []

    def close(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def checkpoint_until_refused(kt: Client, pid: int, most: int = 2000) -> tuple[list[str], errors.KeeptimeError]:
    """Checkpoint pid until a checkpoint is refused; the ids stored and the refusal."""
    stored = []
    for _ in range(most):
        try:
            stored.append(kt.checkpoint(pid))
        except errors.KeeptimeError as exc:
            return stored, exc
    raise AssertionError(f"{most} checkpoints and no refusal")


def assert_limit(exc: errors.KeeptimeError, limit: str) -> None:
    assert exc.code == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
    assert limit in exc.message and "\n" not in exc.message, exc.message


def test_a_member_filling_the_stores_disk_leaves_root_its_reserve(open_dir):
    """keeptimed writes as root, so no disk quota stops a member: the last
    root_store_reserve bytes of the store's file system are refused to it,
    and root's checkpoints still fit."""
    disk = SmallDisk(os.path.join(open_dir, "store"), 8 * 1024 * 1024)
    daemon = RunningDaemon(open_dir, db=os.path.join(disk.path, "keeptime.db"), command_prefix=disk.prefix)
    started(daemon, "--root-store-reserve", str(2 * 1024 * 1024))
    attacker = Member(open_dir, daemon, MEMBER)
    trees = [Tree(MEMBER), Tree(0)]
    try:
        with attacker.client() as kt:
            stored, refusal = checkpoint_until_refused(kt, trees[0].pid)
        assert_limit(refusal, "(root_store_reserve) for root's writes")
        assert len(stored) > 100, "refused long before the disk was near full"
        assert disk.free_bytes() > 1024 * 1024
        with daemon.client() as root:
            for _ in range(20):
                root.checkpoint(trees[1].pid)
        with attacker.client() as kt:   # what the member stored is intact, and its own to delete
            assert len(kt.list()) == len(stored)
            kt.delete(stored[0])
    finally:
        for tree in trees:
            tree.close()
        attacker.close()
        daemon.stop()
        disk.close()


def test_records_and_bytes_per_member_are_limited_and_others_unaffected(open_dir, member_sleeper):
    daemon = started(RunningDaemon(open_dir), "--user-store-bytes", "100000", "--user-records", "20")
    members = [Member(open_dir, daemon, uid) for uid in (NOBODY, MEMBER)]
    tree = Tree(NOBODY)
    try:
        with members[0].client() as kt:
            stored, refusal = checkpoint_until_refused(kt, tree.pid)
            assert_limit(refusal, "bytes of records")
            assert_limit(refusal, "more than user_store_bytes (100000)")
            assert 1 < len(stored) < 20   # the bytes ran out before the count
            kt.delete(stored[0])   # a deletion makes room again
            kt.checkpoint(tree.pid)
        with members[1].client() as kt:
            stored, refusal = checkpoint_until_refused(kt, member_sleeper)
            assert_limit(refusal, f"uid {MEMBER} keeps 20 records, the most user_records allows")
            assert len(stored) == 20
        with daemon.client() as root:
            for _ in range(25):
                root.checkpoint(tree.pid)
    finally:
        tree.close()
        for member in members:
            member.close()
        assert daemon.stop() == 0, daemon.log()


def test_processes_per_member_are_limited(open_dir, member_sleeper, root_sleeper):
    daemon = started(RunningDaemon(open_dir), "--user-processes", "5")
    attacker = Member(open_dir, daemon, MEMBER)
    running = []
    try:
        with attacker.client() as kt:
            record_id = kt.checkpoint(member_sleeper)
            running = [kt.restore(record_id, ["sleep", "600"]).pid for _ in range(5)]
            with pytest.raises(errors.ResourceExhausted) as caught:
                kt.restore(record_id, ["sleep", "600"])
            assert_limit(caught.value, f"uid {MEMBER} already has 5 processes started by keeptimed running, the most "
                                       "user_processes allows")
            os.kill(running.pop(), signal.SIGKILL)   # one ends: room for one more
            running.append(eventually(lambda: kt.restore(record_id, ["sleep", "600"])).pid)
        with daemon.client() as root:
            record_id = root.checkpoint(root_sleeper)
            assert root.wait(root.restore(record_id, ["/bin/true"]).pid, timeout=30) == 0
    finally:
        for pid in running:
            os.kill(pid, signal.SIGKILL)
        attacker.close()
        assert daemon.stop() == 0, daemon.log()


def test_a_member_cannot_take_the_descriptors_roots_restores_need(open_dir, member_sleeper, root_sleeper):
    """Each running process costs keeptimed a descriptor. With 400 of them,
    a member's restores stop at the top quarter, kept for root, before
    anyone runs out (the review saw root's Restore fail with EMFILE)."""
    daemon = RunningDaemon(open_dir, command_prefix=["prlimit", "--nofile=400:400", "--"])
    started(daemon)
    attacker = Member(open_dir, daemon, MEMBER)
    running = []
    try:
        with attacker.client() as kt:
            record_id = kt.checkpoint(member_sleeper)
            with pytest.raises(errors.ResourceExhausted) as caught:
                for _ in range(400):
                    running.append(kt.restore(record_id, ["sleep", "600"]).pid)
            assert_limit(caught.value, "keeps the last 100 for root")
            assert len(running) > 150
        with daemon.client() as root:
            record_id = root.checkpoint(root_sleeper)
            for _ in range(30):
                running.append(root.restore(record_id, ["sleep", "600"]).pid)
        assert daemon.zombies() == []
    finally:
        for pid in running:
            os.kill(pid, signal.SIGKILL)
        attacker.close()
        assert daemon.stop() == 0, daemon.log()


def test_a_member_cannot_hold_every_wait_slot(open_dir, member_sleeper, root_sleeper):
    """The review saw one member hold all of keeptimed's Wait slots. Now it
    holds user_waits (4) of its own; root's Wait blocks as ever."""
    daemon = started(RunningDaemon(open_dir))
    attacker = Member(open_dir, daemon, MEMBER)
    running = []
    try:
        with attacker.client() as kt, concurrent.futures.ThreadPoolExecutor(6) as pool:
            record_id = kt.checkpoint(member_sleeper)
            running = [kt.restore(record_id, ["sleep", "600"]).pid for _ in range(6)]
            waits = [pool.submit(kt._call, "Wait", pb.WaitRequest(pid=pid), 60) for pid in running]
            deadline = time.monotonic() + 30
            while sum(wait.done() for wait in waits) < 2:
                assert time.monotonic() < deadline, "no Wait was refused"
                time.sleep(0.05)
            time.sleep(0.5)
            refused = [wait.exception() for wait in waits if wait.done()]
            assert len(refused) == 2
            for exc in refused:
                assert_limit(exc, f"uid {MEMBER} already has 4 Wait calls blocked, the most user_waits allows")
            with daemon.client() as root:
                roots = root.restore(root.checkpoint(root_sleeper), ["sleep", "1"]).pid
                assert root._call("Wait", pb.WaitRequest(pid=roots), timeout=30).status == 0
            for pid in running:
                os.kill(pid, signal.SIGKILL)
            running = []
            assert [wait.result().signal for wait in waits if not wait.exception()] == [signal.SIGKILL] * 4
    finally:
        for pid in running:
            os.kill(pid, signal.SIGKILL)
        attacker.close()
        assert daemon.stop() == 0, daemon.log()


def test_listing_large_records_loads_a_page_at_a_time(tmp_path):
    """60 records of 400 KiB: a page holds what fits in 1 MiB (two), so a
    ListRecords costs keeptimed a few MiB, not their 24 MiB (the review saw
    one ListRecords of large records near 1 GB), and the listing completes
    (24 MiB in one message was refused anyway, beyond the 8 MiB limit)."""
    db_path = str(tmp_path / "keeptime.db")
    RecordStore(db_path).close()
    db = sqlite3.connect(db_path)
    with db:   # stored earlier, whatever limits the door puts on new records now
        for n in range(60):
            r = pb.Record(id=f"{n:032x}", root_pid=1, realtime_ns=1_700_000_000_000_000_000 + n, boot_id="big",
                          source="checkpoint", labels={"blob": chr(65 + n % 26) * (400 * 1024)})
            db.execute("INSERT INTO records (id, created_realtime_ns, data, owner_uid) VALUES (?, ?, ?, ?)",
                       (r.id, r.realtime_ns, recordfile.encode(r), NOBODY))
    db.close()
    daemon = RunningDaemon(tmp_path, db=db_path).start()
    try:
        peak_before = peak_rss_kb(daemon.proc.pid)
        with daemon.client() as client:
            for _ in range(3):   # what loaded them all took +68 MiB, then +124 MiB
                first = client._call("ListRecords", pb.ListRecordsRequest(page_size=1000))
                assert len(first.records) == 2 and first.next_page_token
            grown_mib = (peak_rss_kb(daemon.proc.pid) - peak_before) / 1024
            assert grown_mib < 24, f"three pages grew keeptimed's peak RSS by {grown_mib:.0f} MiB"
            assert [summary.id for summary in client.list()] == [f"{n:032x}" for n in range(60)]
    finally:
        assert daemon.stop() == 0, daemon.log()


def peak_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
