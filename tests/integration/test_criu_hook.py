"""The CRIU hook driven exactly as CRIU drives it: keeptime-criu-hook run as
a subprocess with CRTOOLS_SCRIPT_ACTION, CRTOOLS_IMAGE_DIR (a /proc/PID/fd/N
path of a directory fd this test holds open) and CRTOOLS_INIT_PID, against a
real keeptimed, with timens-0.img bytes in CRIU's format. Without keeptimed
it runs the Python hook (KEEPTIME_CLI), as it does on a host."""
import contextlib
import hashlib
import io
import os
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings

from helpers.criu_images import damaged_timens_images
from helpers.probes import restore_events
from keeptime.criu import hook as criu_hook
from keeptime.criu import dump_pb2
from keeptime.criu.image import INVENTORY_MAGIC, TimensClocks, decode_timens, encode_timens, write_entries
from keeptimed import recordfile

pytestmark = pytest.mark.root

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KEEPTIME_CLI = os.path.join(os.path.dirname(sys.executable), "keeptime")
S = 10**9
MS = 10**6


def host_boottime() -> int:
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


class Images:
    """A CRIU image directory reached the way CRIU passes it: /proc/<pid>/fd/<n>."""

    def __init__(self, path):
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        self.proc_path = f"/proc/{os.getpid()}/fd/{self.fd}"

    def read(self, name: str) -> bytes:
        return (self.path / name).read_bytes()

    def has(self, name: str) -> bool:
        return (self.path / name).exists()

    def write(self, name: str, data: bytes) -> None:
        (self.path / name).write_bytes(data)
        os.chmod(self.path / name, 0o600)


@pytest.fixture
def images(tmp_path):
    path = tmp_path / "images"
    path.mkdir()
    opened = Images(path)
    yield opened
    os.close(opened.fd)


@pytest.fixture
def hook(daemon, tmp_path, criu_hook_program):
    """Run the hook for an action; returns the CompletedProcess."""

    def run(action, images, pid=None, socket=None, image_dir=None, **config):
        config_path = tmp_path / f"hook-{len(os.listdir(tmp_path))}.toml"
        config.setdefault("policy", "suspend")
        config_path.write_text("".join(
            f"{key} = {str(value).lower() if isinstance(value, bool) else repr(value)}\n".replace("'", '"')
            for key, value in config.items()))
        env = {
            "PATH": "/usr/bin:/bin", "CRTOOLS_SCRIPT_ACTION": action,
            "CRTOOLS_IMAGE_DIR": image_dir or images.proc_path,
            "KEEPTIME_SOCKET": socket or daemon.socket, "KEEPTIME_CRIU_HOOK_CONFIG": str(config_path),
            "KEEPTIME_CLI": KEEPTIME_CLI,
        }
        if pid is not None:
            env["CRTOOLS_INIT_PID"] = str(pid)
        return subprocess.run([criu_hook_program], env=env, capture_output=True, text=True, timeout=60)

    return run


def ok(result):
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


def fails(result, code, words):
    assert result.returncode == code, (result.returncode, result.stderr)
    assert words in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr


def dump(client, images, pid) -> tuple[bytes, int]:
    """What CRIU leaves before post-dump: timens-0.img with the tree's clocks
    read inside its namespace, and an inventory.img of this dump. Returns
    (image bytes, host BOOTTIME then)."""
    seen = client.clocks(pid)
    image = encode_timens(TimensClocks(seen.clocks.monotonic_ns, seen.clocks.boottime_ns))
    images.write("timens-0.img", image)
    inventory = dump_pb2.inventory_entry(img_version=2, dump_uptime=time.clock_gettime_ns(time.CLOCK_BOOTTIME))
    images.write("inventory.img", write_entries(INVENTORY_MAGIC, [inventory.SerializeToString()], common=False))
    return image, seen.host_clocks.boottime_ns


def test_dump_restore_cycle_under_suspend(client, far_process, images, hook, root_sleeper):
    inside, _ = far_process
    original, dumped_at = dump(client, images, inside)

    # post-dump: the record is written into the image directory and stored.
    said = ok(hook("post-dump", images, pid=inside))
    record = recordfile.decode(images.read("keeptime-record.bin"))
    assert f"recorded {record.id} from pid {inside}'s tree" in said
    assert record.root_pid == inside and record.source == "checkpoint" and record.labels["criu"] == "post-dump"
    dumped = decode_timens(original)
    assert record.clocks.monotonic_ns >= dumped.monotonic_ns and record.clocks.boottime_ns >= dumped.boottime_ns
    assert client.get(record.id) == record
    assert images.read("timens-0.img") == original  # post-dump leaves CRIU's image alone

    slept_from = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    time.sleep(1.5)

    # pre-restore (no CRTOOLS_INIT_PID, as with CRIU): the image now carries suspend's targets.
    slept = time.clock_gettime_ns(time.CLOCK_MONOTONIC) - slept_from
    said = ok(hook("pre-restore", images))
    assert "suspend: timens-0.img now resumes MONOTONIC" in said
    assert images.read("timens-0.img.orig") == original
    first = decode_timens(images.read("timens-0.img"))
    assert first.monotonic_ns == dumped.monotonic_ns
    assert slept <= first.boottime_ns - dumped.boottime_ns <= host_boottime() - dumped_at
    assert oct(os.stat(images.path / "timens-0.img").st_mode & 0o777) == oct(0o600)

    # A second pre-restore from the same images starts again from the original.
    time.sleep(0.3)
    ok(hook("pre-restore", images))
    assert images.read("timens-0.img.orig") == original
    second = decode_timens(images.read("timens-0.img"))
    assert second.monotonic_ns == dumped.monotonic_ns
    since_dump = host_boottime() - dumped_at
    assert first.boottime_ns + 300 * MS <= second.boottime_ns <= dumped.boottime_ns + since_dump
    assert sorted(os.listdir(images.path)) == [
        "inventory.img", "keeptime-record.bin", "timens-0.img", "timens-0.img.orig", "timens-0.img.orig.dump"]

    # post-restore on a tree that resumed where it should: verified and stored.
    restored = client.restore(record.id, ["/bin/sleep", "30"], policy="suspend")
    try:
        said = ok(hook("post-restore", images, pid=restored.pid))
        assert f"pid {restored.pid}: clocks continue" in said
    finally:
        os.kill(restored.pid, 9)
        client.wait(restored.pid)

    # post-restore on a tree whose clocks went back ten days: loud, and fails the restore.
    fails(hook("post-restore", images, pid=root_sleeper), 1, f"CLOCK REGRESSION in restored pid {root_sleeper}")
    # post-resume is too late to abort: the hook does not even wait for the verdict, which is kept all the same.
    assert f"keeptimed verifies pid {root_sleeper}" in ok(hook("post-resume", images, pid=root_sleeper))
    assert len(restore_events(client, record.id, 3)) == 3
    # fail_on_regression = false never fails.
    assert "CLOCK REGRESSION" in ok(hook("post-restore", images, pid=root_sleeper, fail_on_regression=False))

    events = client.restores(record.id)
    assert [(e.pid, e.stage, e.ok) for e in events] == [
        (restored.pid, "post-restore", True), (root_sleeper, "post-restore", False),
        (root_sleeper, "post-resume", False), (root_sleeper, "post-restore", False)]
    assert all(e.dumped.monotonic_ns == dumped.monotonic_ns for e in events)
    assert all(e.policy == 2 for e in events)  # POLICY_SUSPEND: pre-restore rewrote the image


def test_freeze_leaves_criu_its_own_image(client, far_process, images, hook):
    inside, _ = far_process
    original, _ = dump(client, images, inside)
    ok(hook("post-dump", images, pid=inside))
    said = ok(hook("pre-restore", images, policy="freeze"))
    assert "left as CRIU wrote it" in said
    assert images.read("timens-0.img") == original and not images.has("timens-0.img.orig")

    ok(hook("pre-restore", images, policy="elapsed"))
    assert images.read("timens-0.img") != original
    said = ok(hook("pre-restore", images, policy="freeze"))
    assert "put CRIU's original timens-0.img back" in said
    assert images.read("timens-0.img") == original == images.read("timens-0.img.orig")


def test_post_dump_of_a_gone_tree_records_from_the_image(client, images, hook):
    gone = subprocess.Popen(["true"])
    gone.wait()
    original = encode_timens(TimensClocks(777 * S + 1, 888 * S + 2))
    images.write("timens-0.img", original)
    said = ok(hook("post-dump", images, pid=gone.pid))
    assert "from timens-0.img" in said
    record = recordfile.decode(images.read("keeptime-record.bin"))
    assert record.source == "criu-image" and record.root_pid == gone.pid
    assert (record.clocks.monotonic_ns, record.clocks.boottime_ns) == (777 * S + 1, 888 * S + 2)
    assert client.get(record.id) == record


def kernel_thread() -> int:
    from keeptimed import procfs

    for entry in os.listdir("/proc"):
        if entry.isdigit() and procfs.read_stat(int(entry)).is_kernel_thread:
            return int(entry)
    pytest.skip("no kernel thread visible in /proc")


def test_post_dump_of_a_tree_keeptimed_refuses_records_from_the_image(client, images, hook):
    kthread = kernel_thread()  # Checkpoint refuses it (INVALID_ARGUMENT), like an unreadable tree
    images.write("timens-0.img", encode_timens(TimensClocks(3 * S, 4 * S)))
    said = ok(hook("post-dump", images, pid=kthread))
    assert "kernel thread" in said and "from timens-0.img" in said
    record = recordfile.decode(images.read("keeptime-record.bin"))
    assert record.source == "criu-image" and record.clocks.boottime_ns == 4 * S


def test_post_dump_of_a_gone_tree_without_an_image_fails(images, hook):
    gone = subprocess.Popen(["true"])
    gone.wait()
    fails(hook("post-dump", images, pid=gone.pid), 1, "the image directory has no timens-0.img")
    assert not images.has("keeptime-record.bin")


def test_without_keeptimed_the_record_is_kept_locally_and_used_at_restore(client, images, hook, tmp_path):
    nowhere = str(tmp_path / "no-daemon.sock")
    original = encode_timens(TimensClocks(5_000 * S + 3, 6_000 * S + 4))
    images.write("timens-0.img", original)
    said = ok(hook("post-dump", images, pid=os.getpid(), socket=nowhere))
    assert "without keeptimed (keeptimed is unreachable at" in said
    record = recordfile.decode(images.read("keeptime-record.bin"))
    assert record.source == "criu-image" and record.labels["recorded_by"] == "criu-hook"
    assert (record.clocks.monotonic_ns, record.clocks.boottime_ns) == (5_000 * S + 3, 6_000 * S + 4)
    assert record.boot_id == open("/proc/sys/kernel/random/boot_id").read().strip()
    assert 0 <= host_boottime() - record.host_clocks.boottime_ns < 10 * S

    # pre-restore without keeptimed: fails by default, leaving everything as it was ...
    fails(hook("pre-restore", images, socket=nowhere), 1, "on_daemon_unreachable")
    assert images.read("timens-0.img") == original and not images.has("timens-0.img.orig")
    # ... or, configured to, warns and lets CRIU freeze.
    said = ok(hook("pre-restore", images, socket=nowhere, on_daemon_unreachable="warn"))
    assert "WARNING" in said and images.read("timens-0.img") == original
    # With keeptimed back, the locally made record drives the restore.
    time.sleep(0.2)
    ok(hook("pre-restore", images))
    rewritten = decode_timens(images.read("timens-0.img"))
    assert rewritten.monotonic_ns == 5_000 * S + 3 and rewritten.boottime_ns >= 6_000 * S + 4 + 200 * MS
    assert client.get(record.id).source == "criu-image"
    # Without keeptimed a warn-mode restore puts the original back, and goes on unverified, saying so.
    ok(hook("pre-restore", images, socket=nowhere, on_daemon_unreachable="warn"))
    assert images.read("timens-0.img") == original
    said = ok(hook("post-restore", images, pid=os.getpid(), socket=nowhere, on_daemon_unreachable="warn"))
    assert "WARNING: UNVERIFIED restore" in said
    # By default a restore nothing could verify fails, as a regression does.
    fails(hook("post-restore", images, pid=os.getpid(), socket=nowhere), 1, "UNVERIFIED restore")


def test_without_keeptimed_and_without_an_image_post_dump_fails(images, hook, tmp_path):
    fails(hook("post-dump", images, pid=os.getpid(), socket=str(tmp_path / "none.sock")), 1,
          "keeptimed is unreachable")
    assert os.listdir(images.path) == []


def test_pre_restore_refuses_what_it_cannot_apply(images, hook):
    fails(hook("pre-restore", images), 1, "no timens-0.img")
    fails(hook("post-restore", images, pid=os.getpid()), 1, "nothing to verify against")
    images.write("timens-0.img", encode_timens(TimensClocks(S, 2 * S)))
    fails(hook("pre-restore", images), 1, "no keeptime-record.bin")
    assert "left as CRIU wrote it" in ok(hook("pre-restore", images, policy="freeze"))
    # Without a record, verification holds the restored tree to the image alone.
    assert "clocks continue" in ok(hook("post-restore", images, pid=os.getpid()))


def test_a_damaged_image_fails_pre_restore_and_is_left_alone(client, far_process, images, hook):
    inside, _ = far_process
    original, _ = dump(client, images, inside)
    ok(hook("post-dump", images, pid=inside))
    images.write("timens-0.img", original[:-2])
    fails(hook("pre-restore", images), 1, "DATA_LOSS: timens-0.img is truncated")
    assert images.read("timens-0.img") == original[:-2] and not images.has("timens-0.img.orig")
    garbage = b"\x19\x43\x56\x54\x33\x44\x11\x43" + b"\x02\x00\x00\x00\xff\xff"
    images.write("timens-0.img", garbage)
    fails(hook("pre-restore", images), 1, "DATA_LOSS: timens-0.img: the timens entry does not parse")
    assert images.read("timens-0.img") == garbage and not images.has("timens-0.img.orig")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(damage=damaged_timens_images())
def test_any_damaged_image_fails_pre_restore_with_data_loss_and_is_left_alone(daemon, client, images, tmp_path,
                                                                               damage):
    if not images.has("keeptime-record.bin"):  # once: hypothesis reuses the fixtures across examples
        record_id = client.checkpoint_criu_image(encode_timens(TimensClocks(S, 2 * S)))
        images.write("keeptime-record.bin", client.export_record(record_id))
        (tmp_path / "hook.toml").write_text('policy = "suspend"\n')
    images.write("timens-0.img", damage)
    environ = {"CRTOOLS_SCRIPT_ACTION": "pre-restore", "CRTOOLS_IMAGE_DIR": images.proc_path,
               "KEEPTIME_SOCKET": daemon.socket, "KEEPTIME_CRIU_HOOK_CONFIG": str(tmp_path / "hook.toml")}
    with contextlib.redirect_stderr(io.StringIO()) as said:
        status = criu_hook.main(environ)
    assert status == 1 and "DATA_LOSS: timens-0.img" in said.getvalue(), said.getvalue()
    assert said.getvalue().count("\n") == 1
    assert sorted(os.listdir(images.path)) == ["keeptime-record.bin", "timens-0.img"]
    assert images.read("timens-0.img") == damage


def test_a_damaged_record_file_fails_pre_restore_but_not_freeze_or_verification(client, far_process, images,
                                                                                 hook):
    inside, _ = far_process
    original, _ = dump(client, images, inside)
    ok(hook("post-dump", images, pid=inside))
    sound = images.read("keeptime-record.bin")
    images.write("keeptime-record.bin", sound[:-3] + bytes([sound[-3] ^ 0xFF]) + sound[-2:])
    fails(hook("pre-restore", images), 1, "DATA_LOSS: keeptime-record.bin: corrupt keeptime record")
    assert images.read("timens-0.img") == original and not images.has("timens-0.img.orig")
    assert "left as CRIU wrote it" in ok(hook("pre-restore", images, policy="freeze"))
    # The image is enough to verify against: a damaged record is only reported.
    said = ok(hook("post-restore", images, pid=inside))
    assert "corrupt keeptime record" in said and "verifying against timens-0.img alone" in said
    assert "clocks continue" in said


def test_a_dump_again_with_the_hook_starts_afresh(client, far_process, images, hook):
    inside, _ = far_process
    dump(client, images, inside)
    ok(hook("post-dump", images, pid=inside))
    ok(hook("pre-restore", images))
    assert images.has("timens-0.img.orig")
    time.sleep(0.1)
    second, _ = dump(client, images, inside)  # the same directory, dumped again later
    ok(hook("post-dump", images, pid=inside))
    assert not images.has("timens-0.img.orig")  # it belonged to the first dump
    assert not images.has("timens-0.img.orig.dump")
    record = recordfile.decode(images.read("keeptime-record.bin"))
    assert record.labels["criu-timens-sha256"] == hashlib.sha256(second).hexdigest()
    ok(hook("pre-restore", images))
    assert images.read("timens-0.img.orig") == second
    assert decode_timens(images.read("timens-0.img")).monotonic_ns == decode_timens(second).monotonic_ns


def test_a_dump_again_without_the_hook_is_not_planned_from_the_old_record(client, far_process, images, hook):
    inside, _ = far_process
    dump(client, images, inside)
    ok(hook("post-dump", images, pid=inside))
    ok(hook("pre-restore", images))
    time.sleep(0.1)
    second, _ = dump(client, images, inside)  # CRIU ran again without the hook: old record, old .orig
    # freeze needs no record: it leaves CRIU's new image and drops the old original.
    said = ok(hook("pre-restore", images, policy="freeze"))
    assert "removed a stale timens-0.img.orig: it belongs to an earlier dump" in said
    assert "left as CRIU wrote it" in said
    assert images.read("timens-0.img") == second and not images.has("timens-0.img.orig")
    # suspend would need a record of this dump: the one there is the old dump's.
    fails(hook("pre-restore", images), 1, "is not the one record")
    assert images.read("timens-0.img") == second and not images.has("timens-0.img.orig")


def test_a_record_older_than_the_image_without_a_digest_is_refused_by_keeptimed(client, far_process, images, hook):
    inside, _ = far_process
    # A record made by hand before the dump, put into the image directory.
    images.write("keeptime-record.bin", client.export_record(client.checkpoint(inside)))
    time.sleep(0.05)
    dump(client, images, inside)
    fails(hook("pre-restore", images), 1, "stale")


@pytest.mark.parametrize("action, code, words", [
    ("network-lock", 0, ""), ("setup-namespaces", 0, ""), ("orphan-pts-master", 0, ""),
    ("an-action-of-a-future-criu", 0, ""),
    ("", 2, "CRTOOLS_SCRIPT_ACTION is not set: this is a CRIU action script"),
])
def test_other_actions(images, hook, action, code, words):
    result = hook(action, images)
    assert result.returncode == code and "Traceback" not in result.stderr
    assert words in result.stderr and (result.stderr == "") == (code == 0)


def test_a_rewritten_image_lost_in_a_crash_is_made_again_from_the_original(client, far_process, images, hook):
    """The rewritten image is not fsync'd: a crash may leave garbage there,
    and the next restore plans from the original all the same."""
    inside, _ = far_process
    original, _ = dump(client, images, inside)
    ok(hook("post-dump", images, pid=inside))
    ok(hook("pre-restore", images))
    images.write("timens-0.img", b"\0" * 5)
    ok(hook("pre-restore", images))
    assert images.read("timens-0.img.orig") == original
    assert decode_timens(images.read("timens-0.img")).monotonic_ns == decode_timens(original).monotonic_ns


def test_an_original_kept_by_keeptime_0_1_is_taken_over(client, far_process, images, hook):
    """keeptime 0.1 named the image it wrote in timens-0.img.keeptime-sha256."""
    inside, _ = far_process
    original, _ = dump(client, images, inside)
    ok(hook("post-dump", images, pid=inside))
    rewritten = encode_timens(TimensClocks(decode_timens(original).monotonic_ns, decode_timens(original).boottime_ns + S))
    images.write("timens-0.img.orig", original)
    images.write("timens-0.img", rewritten)
    images.write("timens-0.img.keeptime-sha256", hashlib.sha256(rewritten).hexdigest().encode() + b"\n")
    ok(hook("pre-restore", images))
    assert images.read("timens-0.img.orig") == original and images.has("timens-0.img.orig.dump")
    assert not images.has("timens-0.img.keeptime-sha256")
    assert decode_timens(images.read("timens-0.img")).monotonic_ns == decode_timens(original).monotonic_ns
