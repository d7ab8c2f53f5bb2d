"""What a hostile member of --socket-group tried (issue 11), played for real:
the calls come from uid 65534 (or 4242) through keeptimed's socket, with the
kernel's SO_PEERCRED, and root looks through the CLI as an operator would."""
import json
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
import urllib.request

import pytest

from helpers.daemon import RunningDaemon
from helpers.impersonate import ConnectAs, as_user
from keeptime import Client, errors
from keeptime.criu.image import TimensClocks, encode_timens
from keeptime.recordfile import encode
from keeptime.v1 import keeptime_pb2 as pb

pytestmark = pytest.mark.root

NOBODY = NOGROUP = 65534
OTHER_USER = 4242
TERMINAL_TRICKS = "\x1b]0;owned\x07\x1b[2J\r\nkeeptime: all records verified\x9b31m\u202e"


def _forged(base: pb.Record, record_id: str, **changes) -> pb.Record:
    """base under another id, with fields changed: what anyone can write into a record file."""
    record = pb.Record()
    record.CopyFrom(base)
    record.id = record_id
    for name, value in changes.items():
        if name == "labels":
            record.labels.update(value)
        elif name == "clocks":
            record.clocks.monotonic_ns, record.clocks.boottime_ns = value
        else:
            setattr(record, name, value)
    return record


def _metric(daemon: RunningDaemon, name: str) -> float:
    with daemon.client() as root:
        address = root.info().metrics_address
    text = urllib.request.urlopen(f"http://{address}/metrics", timeout=10).read().decode()
    return sum(float(value) for value in re.findall(rf"^{name}{{[^}}]*}} (\S+)$", text, re.MULTILINE))


# -- sizes --------------------------------------------------------------------

def test_a_members_megabytes_of_labels_are_refused_and_roots_list_works(group_daemon, as_nobody, nobody_sleeper):
    own = as_nobody.checkpoint_record(nobody_sleeper)
    five_mb = _forged(own, "1" * 32, labels={f"k{n}": "v" * 1_000_000 for n in range(5)})
    with pytest.raises(errors.InvalidArgument, match="more than the 4194304 allowed"):
        as_nobody.import_record(encode(five_mb))
    three_mb = _forged(own, "2" * 32, labels={"k": "v" * 3_000_000})
    with pytest.raises(errors.InvalidArgument, match=r"record.labels\['k'\] is 3000000 bytes, more than the 256"):
        as_nobody.import_record(encode(three_mb))
    with pytest.raises(errors.InvalidArgument, match="labels has 17 entries"):
        as_nobody.checkpoint(nobody_sleeper, {f"k{n}": "v" for n in range(17)})
    listed = group_daemon.cli("list")
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()[1:]] == [own.id]


def test_a_record_stored_before_the_limits_is_listed_and_shown_whatever_its_size(group_daemon):
    """Records a keeptimed without limits stored stay readable: the summary
    leaves out what breaks a limit, and GetRecord's 5 MB fit the message limit
    the client and keeptimed share."""
    old = pb.Record(id="3" * 32, root_pid=7, realtime_ns=1, source="checkpoint", hostname="old-host",
                    labels={f"k{n}": "v" * 1_000_000 for n in range(5)})
    old.clocks.monotonic_ns = old.clocks.boottime_ns = 10**9
    with sqlite3.connect(group_daemon.db) as db:
        db.execute("INSERT INTO records (owner_uid, id, created_realtime_ns, data) VALUES (?, ?, 1, ?)",
                   (NOBODY, old.id, encode(old)))
    db.close()
    listed = group_daemon.cli("list")
    assert listed.returncode == 0, listed.stderr
    assert "breaks a size limit (record.labels['k0'] is 1000000 bytes" in listed.stdout
    assert len(listed.stdout) < 2000
    as_json = group_daemon.cli("--json", "list")
    assert as_json.returncode == 0 and json.loads(as_json.stdout)[0]["labels"] == {}
    shown = group_daemon.cli("--json", "show", old.id)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["labels"]["k4"] == "v" * 1_000_000


def test_an_8_mb_record_id_makes_a_short_refusal_and_a_short_log_line(group_daemon, as_nobody):
    with pytest.raises(errors.InvalidArgument) as caught:
        as_nobody.get("a" * 8_000_000)
    assert caught.value.message == "record_id is 8000000 bytes, more than the 32 allowed"
    assert max(len(line) for line in group_daemon.log().splitlines()) < 8192


# -- verdicts and record ids ----------------------------------------------------

@pytest.fixture
def watched_daemon(open_dir):
    """A group daemon that serves metrics."""
    running = RunningDaemon(open_dir).start("--socket-group", str(NOGROUP), "--metrics-address", "127.0.0.1:0")
    yield running
    running.stop()


def test_a_member_leaves_no_verdict_under_roots_record_and_cannot_raise_the_regression_alarm(
        watched_daemon, open_dir, nobody_sleeper, root_sleeper):
    with watched_daemon.client() as root:
        roots = root.checkpoint_record(root_sleeper)
    proxy = ConnectAs(open_dir, watched_daemon.socket, NOBODY, NOGROUP)
    try:
        with Client(socket=proxy.path, timeout=20) as member:
            # Root's id, clocks far above anything nobody's sleeper reads: a certain "regression".
            forged = encode(_forged(member.checkpoint_record(nobody_sleeper), roots.id, clocks=(2**60, 2**60)))
            with pytest.raises(errors.NotFound, match=f"no record {roots.id}"):
                member.verify_restore(nobody_sleeper, record_file=forged, stage="post-restore")
            with watched_daemon.client() as root:
                assert root.restores(roots.id) == []
            # Its own copy of those bytes is its to verify against, and the verdict is its own.
            member.import_record(forged)
            event = member.verify_restore(nobody_sleeper, record_file=forged, stage="post-restore")
            assert event.verdict == pb.VERDICT_REGRESSED and event.owner_uid == NOBODY
    finally:
        proxy.close()
    assert _metric(watched_daemon, "keeptime_clock_regressions_total") == 0
    assert _metric(watched_daemon, "keeptime_clock_regressions_unprivileged_total") >= 1
    with watched_daemon.client() as root:
        assert [(e.owner_uid, e.verdict) for e in root.restores(roots.id)] == [(NOBODY, pb.VERDICT_REGRESSED)]
        assert root.get(roots.id) == roots   # root's own record, untouched


def test_a_members_criu_hook_keeps_no_verdict_under_a_record_it_does_not_hold(
        group_daemon, open_dir, nobody_sleeper, root_sleeper, criu_hook_program):
    """Rootless CRIU's post-restore with a keeptime-record.bin that carries
    root's record id (and no pre-restore that would have stored it for the
    user): the image alone is verified against, under no record id."""
    with group_daemon.client() as root:
        roots = root.checkpoint_record(root_sleeper)
        seen = root.clocks(nobody_sleeper).clocks
    images = tempfile.mkdtemp(dir=open_dir)
    files = {"timens-0.img": encode_timens(TimensClocks(seen.monotonic_ns, seen.boottime_ns)),
             "keeptime-record.bin": encode(_forged(roots, roots.id, clocks=(2**60, 2**60)))}
    for name, data in files.items():
        with open(os.path.join(images, name), "wb") as f:
            f.write(data)
        os.chown(os.path.join(images, name), NOBODY, NOGROUP)
    os.chown(images, NOBODY, NOGROUP)
    config = os.path.join(open_dir, "criu-hook.toml")
    with open(config, "w") as f:
        f.write('policy = "freeze"\nfail_on_regression = true\n')
    os.chmod(config, 0o644)
    program = shutil.copy(criu_hook_program, open_dir)
    environ = {"CRTOOLS_SCRIPT_ACTION": "post-restore", "CRTOOLS_IMAGE_DIR": images,
               "CRTOOLS_INIT_PID": str(nobody_sleeper), "KEEPTIME_CRIU_HOOK_CONFIG": config,
               "KEEPTIME_SOCKET": group_daemon.socket}
    result = subprocess.run(as_user(NOBODY, NOGROUP, [program]), env=environ, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"names record {roots.id}, which uid {NOBODY} does not hold" in result.stderr
    with group_daemon.client() as root:
        assert root.restores(roots.id) == []
        assert [(e.record_id, e.owner_uid, e.ok) for e in root.restores()] == [("", NOBODY, True)]


def test_importing_another_users_record_first_takes_nothing_from_its_owner(group_daemon, as_nobody, open_dir):
    owner_sleeper = subprocess.Popen(as_user(OTHER_USER, NOGROUP, ["sleep", "300"]))
    owner_proxy = ConnectAs(open_dir, group_daemon.socket, OTHER_USER, NOGROUP)
    try:
        with Client(socket=owner_proxy.path, timeout=20) as owner:
            record = owner.checkpoint_record(owner_sleeper.pid)
            data = owner.export_record(record.id)
            owner.delete(record.id)              # on its way from another host, say
            assert as_nobody.import_record(data) == record.id   # nobody is first
            assert owner.import_record(data) == record.id
            assert owner.plan(record.id, "freeze").record_id == record.id
            restored = owner.restore(record.id, ["/bin/true"], policy="freeze")
            assert owner.wait(restored.pid, timeout=30) == 0
            as_nobody.delete(record.id)          # nobody's copy, not the owner's
            assert owner.get(record.id) == record
    finally:
        owner_proxy.close()
        owner_sleeper.kill()
        owner_sleeper.wait()


def test_no_answer_tells_a_member_which_ids_other_users_hold(group_daemon, as_nobody, nobody_sleeper, root_sleeper):
    with group_daemon.client() as root:
        roots = root.checkpoint_record(root_sleeper)
    own = as_nobody.checkpoint_record(nobody_sleeper)
    probe = _forged(own, roots.id, root_pid=1)
    assert as_nobody.import_record(encode(probe)) == roots.id   # not ALREADY_EXISTS: nothing learnt
    with pytest.raises(errors.AlreadyExists, match="you already have a different record"):
        as_nobody.import_record(encode(_forged(own, roots.id, root_pid=2)))
    with group_daemon.client() as root:
        assert root.get(roots.id) == roots
        assert root.plan(roots.id, "freeze").recorded.monotonic_ns == roots.clocks.monotonic_ns


# -- what reaches root's terminal -------------------------------------------------

def test_a_members_record_text_reaches_roots_terminal_escaped_and_json_exact(group_daemon, as_nobody,
                                                                            nobody_sleeper):
    own = as_nobody.checkpoint_record(nobody_sleeper)
    hostile = _forged(own, "4" * 32, hostname=TERMINAL_TRICKS, source=TERMINAL_TRICKS,
                      labels={TERMINAL_TRICKS: TERMINAL_TRICKS})
    hostile.processes[0].comm = TERMINAL_TRICKS[:60]
    as_nobody.import_record(encode(hostile))
    as_nobody.verify_restore(nobody_sleeper, record_id=hostile.id, stage=TERMINAL_TRICKS[:40])
    for args in (("list",), ("show", hostile.id), ("restores",)):
        result = group_daemon.cli(*args)
        assert result.returncode == 0, result.stderr
        assert all(line.isprintable() for line in result.stdout.splitlines()), args
        assert "\\x1b]0;owned\\x07" in result.stdout, args
        assert not any(line.startswith("keeptime: all records") for line in result.stdout.splitlines())
    shown = json.loads(group_daemon.cli("--json", "show", hostile.id).stdout)
    assert shown["hostname"] == TERMINAL_TRICKS and shown["labels"] == {TERMINAL_TRICKS: TERMINAL_TRICKS}
