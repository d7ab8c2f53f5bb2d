"""keeptime's CRIU hook driven by the real programs: plain CRIU (the tree on
the host, in its own time namespace, and CRIU inside the tree's own pid and
time namespaces), runc and podman on runc. A static ticker writes its
MONOTONIC and BOOTTIME every 10 ms; the tests check what the restored ticker
reads against what it read before the dump, the records and verdicts
keeptimed kept, and the failure paths a user meets.

CRIU configuration lives only in the tests' own files (`--config`, runc's
org.criu.config annotation). Skipped with the reason where `criu check`
fails or runc/podman is absent."""
import os
import sys
import time

import pytest

from helpers import containers
from helpers.containers import HOST, OWN_PID_TIMENS, OWN_PIDNS, OWN_TIMENS
from helpers.probes import restore_events
from keeptime.v1 import keeptime_pb2 as pb
from keeptimed import recordfile

pytestmark = pytest.mark.root

S = 10**9
MS = 10**6
DAY_S = 86_400
DOWNTIME_S = 1.5
# The MONOTONIC step across a restore is CRIU's own restore time plus a tick;
# loose, for a busy 2-core VM (benchmarks/criu_bench.py measures it).
MAX_STEP_NS = 1 * S






class Hook:
    """A CRIU configuration naming keeptime's hook, through a small wrapper
    that points it at the test's keeptimed and hook configuration (runc and
    podman do not pass the test's environment on to CRIU)."""

    def __init__(self, directory, program: str, socket: str, policy: str = "suspend", **settings):
        self.directory = directory
        self.config = str(directory / "criu-hook.toml")
        lines = [f'policy = "{policy}"'] + [f"{key} = {_toml(value)}" for key, value in settings.items()]
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n")
        cli = os.path.join(os.path.dirname(sys.executable), "keeptime")
        self.script = containers.write_script(str(directory / "keeptime-hook.sh"), (
            "#!/bin/sh\n"
            f"export KEEPTIME_SOCKET='{socket}' KEEPTIME_CRIU_HOOK_CONFIG='{self.config}'\n"
            f"export KEEPTIME_CLI='{cli}'\n"
            f"exec '{program}'\n"))
        self.criu_config = containers.write_criu_config(str(directory / "criu.conf"), self.script)


def _toml(value) -> str:
    return str(value).lower() if isinstance(value, bool) else f'"{value}"'


@pytest.fixture
def hook_for(daemon, criu_hook_program, tmp_path):
    def make(policy: str = "suspend", socket: str = None, **settings) -> Hook:
        directory = tmp_path / f"hook-{len(list(tmp_path.glob('hook-*')))}"
        directory.mkdir()
        return Hook(directory, criu_hook_program, socket or daemon.socket, policy, **settings)

    return make


def steps(ticks: list[tuple[int, int]], before: int) -> tuple[int, int]:
    """(MONOTONIC step, BOOTTIME step) in ns from the last tick before the dump to the first after."""
    (mono_before, boot_before), (mono_after, boot_after) = ticks[before - 1], ticks[before]
    return mono_after - mono_before, boot_after - boot_before


def dump_wait_restore(subject, dump, restore, downtime_s: float = DOWNTIME_S) -> tuple[int, int, list]:
    """Dump, wait, restore; (MONOTONIC step, BOOTTIME step, ticks after) of the ticker."""
    dump()
    before = len(containers.read_ticks(subject.ticks))
    time.sleep(downtime_s)
    restore()
    ticks = containers.wait_for_ticks(subject.ticks, before + 3)
    assert all(b[0] >= a[0] and b[1] >= a[1] for a, b in zip(ticks[before - 1:], ticks[before:]))
    return (*steps(ticks, before), ticks[before:])


def record_in(images: str) -> pb.Record:
    with open(os.path.join(images, "keeptime-record.bin"), "rb") as f:
        return recordfile.decode(f.read())


def assert_verified(client, record_id: str, stages=("post-restore", "post-resume")) -> list[pb.RestoreEvent]:
    events = restore_events(client, record_id, len(stages))
    assert [e.stage for e in events] == list(stages), events
    assert all(e.ok and e.verdict == pb.VERDICT_CONTINUOUS for e in events), events
    return events


# -- plain CRIU ----------------------------------------------------------------------

@pytest.mark.parametrize("where", [HOST, OWN_TIMENS, OWN_PIDNS, OWN_PID_TIMENS])
def test_suspend_wherever_the_tree_and_criu_live(criu_ready, ticker, hook_for, client, tmp_path, where):
    """MONOTONIC continues, BOOTTIME counts the downtime, and both restore
    steps are verified, with the tree in its own time namespace (CRIU writes
    timens-<id>.img) or CRIU inside the tree's pid (and time) namespace
    (CRTOOLS_INIT_PID is a pid there, colliding with a host pid)."""
    hook = hook_for("suspend")
    with containers.CriuTree(ticker, str(tmp_path / "tree"), where, monotonic_s=110 * DAY_S,
                             boottime_s=40 * DAY_S) as tree:
        mono_step, boot_step, _ = dump_wait_restore(
            tree, lambda: tree.dump(hook.criu_config), lambda: tree.restore(hook.criu_config))
        record = record_in(tree.images)
    assert 0 <= mono_step < MAX_STEP_NS
    assert DOWNTIME_S * S <= boot_step < DOWNTIME_S * S + MAX_STEP_NS
    # The record names the root as CRIU saw it, in CRIU's pid namespace.
    assert record.root_pid == tree.pid and record.source == "checkpoint"
    if where in (OWN_TIMENS, OWN_PID_TIMENS):   # BOOTTIME below MONOTONIC: a legal pair
        assert record.clocks.boottime_ns < record.clocks.monotonic_ns
    name = containers.timens_image_read_at_restore(tree.images)
    assert (name != "timens-0.img") == (where == OWN_TIMENS)
    assert os.path.exists(os.path.join(tree.images, name + ".orig"))
    events = assert_verified(client, record.id)
    assert all(e.pid == tree.restored and e.policy == pb.POLICY_SUSPEND for e in events)


@pytest.mark.parametrize("policy", ["freeze", "elapsed"])
def test_freeze_and_elapsed(criu_ready, ticker, hook_for, client, tmp_path, policy):
    hook = hook_for(policy)
    with containers.CriuTree(ticker, str(tmp_path / "tree")) as tree:
        mono_step, boot_step, _ = dump_wait_restore(
            tree, lambda: tree.dump(hook.criu_config), lambda: tree.restore(hook.criu_config))
        record = record_in(tree.images)
    if policy == "freeze":   # CRIU's own behaviour: the downtime is invisible to both clocks
        assert 0 <= mono_step < MAX_STEP_NS and 0 <= boot_step < MAX_STEP_NS
        assert not os.path.exists(os.path.join(tree.images, "timens-0.img.orig"))
    else:                    # both clocks count it, as if the tree had kept running
        for step in (mono_step, boot_step):
            assert DOWNTIME_S * S <= step < DOWNTIME_S * S + MAX_STEP_NS
    assert_verified(client, record.id)


def test_without_keeptimed_the_dump_keeps_its_record_and_a_restore_fails_or_freezes_as_configured(
        criu_ready, ticker, hook_for, client, tmp_path):
    nowhere = str(tmp_path / "no-keeptimed.sock")
    with containers.CriuTree(ticker, str(tmp_path / "tree")) as tree:
        tree.dump(hook_for(socket=nowhere).criu_config)
        record = record_in(tree.images)
        assert record.source == "criu-image" and record.labels["recorded_by"] == "criu-hook"
        before = len(containers.read_ticks(tree.ticks))
        # Still unreachable: the restore fails by default rather than go on without suspend ...
        with pytest.raises(containers.Failed, match="failing the restore rather than restoring without suspend"):
            tree.restore(hook_for(socket=nowhere).criu_config)
        # ... or, configured to, CRIU restores the dumped clocks, unverified and saying so.
        time.sleep(DOWNTIME_S)
        tree.restore(hook_for(socket=nowhere, on_daemon_unreachable="warn").criu_config)
        ticks = containers.wait_for_ticks(tree.ticks, before + 3)
        mono_step, boot_step = steps(ticks, before)
        assert 0 <= mono_step < MAX_STEP_NS + DOWNTIME_S * S and 0 <= boot_step < MAX_STEP_NS + DOWNTIME_S * S
        with open(os.path.join(tree.images, "restore.log")) as f:
            assert "UNVERIFIED restore" in f.read()
    assert client.restores(record.id) == []


def test_a_record_made_without_keeptimed_drives_the_restore_once_it_is_back(criu_ready, ticker, hook_for, client,
                                                                              tmp_path):
    with containers.CriuTree(ticker, str(tmp_path / "tree")) as tree:
        mono_step, boot_step, _ = dump_wait_restore(
            tree, lambda: tree.dump(hook_for(socket=str(tmp_path / "none.sock")).criu_config),
            lambda: tree.restore(hook_for().criu_config))
        record = record_in(tree.images)
    assert record.source == "criu-image"
    assert 0 <= mono_step < MAX_STEP_NS and DOWNTIME_S * S <= boot_step
    assert_verified(client, record.id)


def test_a_tree_that_cannot_be_verified_fails_the_restore(criu_ready, ticker, hook_for, client, tmp_path):
    """A restore keeptime cannot check is never reported as verified: here the
    dump's time namespace image is gone, so there is nothing to verify against."""
    with containers.CriuTree(ticker, str(tmp_path / "tree")) as tree:
        tree.dump(hook_for("freeze").criu_config)
        os.unlink(os.path.join(tree.images, "keeptime-record.bin"))
        os.rename(os.path.join(tree.images, "timens-0.img"), str(tmp_path / "timens-0.img"))
        # CRIU itself restores without an image (no time namespace); keeptime cannot verify.
        with pytest.raises(containers.Failed, match="UNVERIFIED restore"):
            tree.restore(hook_for("freeze").criu_config)
        events = [e for e in client.restores() if e.verdict == pb.VERDICT_UNVERIFIED]
        assert events and events[-1].stage == "post-restore" and not events[-1].ok
        assert "nothing to verify against" in events[-1].message
        tree.restore(hook_for("freeze", fail_on_unverified=False).criu_config)
        containers.wait_for_ticks(tree.ticks, len(containers.read_ticks(tree.ticks)) + 2)


# -- runc and podman ---------------------------------------------------------------------





def test_runc_under_suspend(runc_ready, ticker, hook_for, client, tmp_path):
    hook = hook_for("suspend")
    with containers.RuncContainer(ticker, str(tmp_path / "runc"), hook.criu_config) as container:
        pid = container.pid()
        mono_step, boot_step, _ = dump_wait_restore(container, container.checkpoint, container.restore)
        record = record_in(container.images)
        restored = container.pid()
    assert 0 <= mono_step < MAX_STEP_NS
    assert DOWNTIME_S * S <= boot_step < DOWNTIME_S * S + MAX_STEP_NS
    assert record.root_pid == pid   # runc runs CRIU in the host's pid namespace
    assert all(e.pid == restored for e in assert_verified(client, record.id))


def test_podman_under_suspend(podman_ready, ticker, hook_for, client, tmp_path):
    hook = hook_for("suspend")
    with containers.PodmanContainer(ticker, str(tmp_path / "podman"), hook.criu_config) as container:
        mono_step, boot_step, _ = dump_wait_restore(container, container.checkpoint, container.restore)
        record = record_in(container.images)
    assert 0 <= mono_step < MAX_STEP_NS
    assert DOWNTIME_S * S <= boot_step < DOWNTIME_S * S + MAX_STEP_NS
    assert_verified(client, record.id)
