"""Smoke tests of the real-program scaffolding (helpers/containers.py): plain
CRIU (on the host, with the tree in its own time namespace, with CRIU inside
the tree's own pid namespace, and inside its own pid and time namespaces),
runc and podman each dump and restore the ticker with a logging action script.
Each test checks that both steps succeed, that the restored ticker ticks on
with a continuous MONOTONIC, and which actions CRIU ran, in which order, with
which environment.

Skipped with the reason where `criu check` fails or runc/podman is absent."""
import os
import re

import pytest

from helpers import containers
from helpers.containers import HOST, OWN_PID_TIMENS, OWN_PIDNS, OWN_TIMENS

pytestmark = pytest.mark.root

DUMP = ["pre-dump", "post-dump"]
RESTORE = ["pre-restore", "post-restore", "pre-resume", "post-resume"]
# CRIU sets up namespaces only for those the tree does not share with CRIU.
RESTORE_WITH_NS = ["pre-restore", "setup-namespaces", "post-setup-namespaces", "post-restore",
                   "pre-resume", "post-resume"]
# A container has its own network namespace, so CRIU locks and unlocks its network.
CONTAINER_DUMP = ["pre-dump", "network-lock", "post-dump"]
CONTAINER_RESTORE = ["pre-restore", "setup-namespaces", "post-setup-namespaces", "post-restore",
                     "network-unlock", "pre-resume", "post-resume"]
DAY_S = 86_400
MAX_STEP_MS = 2000  # loose: the step is tens of ms idle, more on a busy 2-core VM








class Logged:
    """A CRIU config file whose action script logs every action to log."""

    def __init__(self, directory):
        self.log = str(directory / "actions.log")
        script = containers.write_logging_script(str(directory / "log-actions.sh"), self.log)
        self.config = containers.write_criu_config(str(directory / "criu.conf"), script)

    def actions(self) -> list[dict[str, str]]:
        return containers.read_action_log(self.log)

    def since(self, count: int) -> list[dict[str, str]]:
        return self.actions()[count:]


@pytest.fixture
def logged(tmp_path) -> Logged:
    return Logged(tmp_path)


def own_pidns() -> str:
    return os.readlink("/proc/self/ns/pid")


def assert_env(lines: list[dict[str, str]], init_pid: int) -> None:
    """Every action got an image dir /proc/<criu>/fd/<n> that opens, except at
    post-resume (CRIU has closed it), and CRTOOLS_INIT_PID (except at
    pre-restore) naming the tree's root in CRIU's pid namespace."""
    for line in lines:
        assert re.fullmatch(r"/proc/\d+/fd/\d+", line["image_dir"]), line
        assert line["image_dir_open"] == ("no" if line["action"] == "post-resume" else "yes"), line
        if line["action"] == "pre-restore":
            assert line["init_pid"] == "-", line
        else:
            assert line["init_pid"] == str(init_pid), line
            # NSpid starts with the pid in the namespace of the script's /proc: CRIU's.
            assert line["init_nspid"].split(",")[0] == line["init_pid"], line


def assert_ticks_on(ticks_path: str, before: int) -> float:
    """The restored ticker ticks again, MONOTONIC continuous; the step in ms."""
    ticks = containers.wait_for_ticks(ticks_path, before + 3)
    step = containers.monotonic_step_ms(ticks, before)
    assert 0 <= step < MAX_STEP_MS, (ticks[before - 1], ticks[before])
    assert all(b[0] >= a[0] for a, b in zip(ticks[before:], ticks[before + 1:]))
    return step


@pytest.mark.parametrize("where, restore_actions", [
    (HOST, RESTORE), (OWN_TIMENS, RESTORE_WITH_NS), (OWN_PIDNS, RESTORE), (OWN_PID_TIMENS, RESTORE),
])
def test_plain_criu(criu_ready, ticker, logged, tmp_path, where, restore_actions):
    with containers.CriuTree(ticker, str(tmp_path), where, monotonic_s=DAY_S, boottime_s=2 * DAY_S) as tree:
        tree.dump(logged.config)
        dumped = logged.actions()
        before = len(containers.read_ticks(tree.ticks))
        tree.restore(logged.config)
        restored = logged.since(len(dumped))
        assert_ticks_on(tree.ticks, before)

    assert [line["action"] for line in dumped] == DUMP
    assert [line["action"] for line in restored] == restore_actions
    assert_env(dumped, tree.pid)
    assert_env(restored, tree.restored)
    assert all(line["init_pidns"] == line["script_pidns"] for line in dumped + restored if line["init_pid"] != "-")
    if where in (OWN_PIDNS, OWN_PID_TIMENS):
        # CRIU ran in the tree's pid namespace: CRTOOLS_INIT_PID is a pid there.
        assert tree.pid == tree.restored == 2
        assert all(line["script_pidns"] != own_pidns() for line in dumped + restored)
    else:
        assert all(line["script_pidns"] == own_pidns() for line in dumped + restored)
    # The restored tree always runs in a time namespace CRIU made for it.
    assert restored[-1]["init_timens"] != restored[-1]["script_timens"]


@pytest.mark.parametrize("where", [HOST, OWN_TIMENS, OWN_PIDNS, OWN_PID_TIMENS])
def test_timens_image_is_named_after_the_trees_own_namespace(criu_ready, ticker, tmp_path, where):
    config = containers.write_criu_config(str(tmp_path / "criu.conf"))
    with containers.CriuTree(ticker, str(tmp_path), where, monotonic_s=DAY_S, boottime_s=DAY_S) as tree:
        tree.dump(config)
    tree_ns, criu_ns = containers.time_namespace_ids(tree.images)
    images = sorted(name for name in os.listdir(tree.images) if name.startswith("timens-"))
    if where == OWN_TIMENS:
        assert tree_ns != criu_ns and images == [f"timens-{tree_ns}.img"]
    else:  # the tree shares CRIU's time namespace
        assert tree_ns == criu_ns and images == ["timens-0.img"]
    assert containers.timens_image_read_at_restore(tree.images) == images[0]


def test_restore_reads_the_image_named_after_the_trees_time_namespace(criu_ready, ticker, tmp_path):
    config = containers.write_criu_config(str(tmp_path / "criu.conf"))
    with containers.CriuTree(ticker, str(tmp_path), OWN_TIMENS, monotonic_s=DAY_S, boottime_s=DAY_S) as tree:
        tree.dump(config)
        name = containers.timens_image_read_at_restore(tree.images)
        assert name != "timens-0.img"
        image = os.path.join(tree.images, name)
        os.rename(image, os.path.join(tree.images, "timens-0.img"))
        with pytest.raises(containers.Failed, match=f"No {re.escape(name)} image"):
            tree.restore(config)
        os.rename(os.path.join(tree.images, "timens-0.img"), image)
        before = len(containers.read_ticks(tree.ticks))
        tree.restore(config)
        assert_ticks_on(tree.ticks, before)


def assert_container_env(dumped, restored, pid_before: int, pid_after: int) -> None:
    """runc runs CRIU in the host's pid namespace: CRTOOLS_INIT_PID is the host
    pid of the container's init, which is pid 1 in the container's namespace."""
    assert_env(dumped, pid_before)
    assert_env(restored, pid_after)
    for line in dumped + restored:
        assert line["script_pidns"] == own_pidns(), line
        if line["init_pid"] != "-":
            assert line["init_pidns"] != own_pidns() and line["init_nspid"] == f"{line['init_pid']},1", line


def test_runc(runc_ready, ticker, logged, tmp_path):
    with containers.RuncContainer(ticker, str(tmp_path / "runc"), logged.config) as container:
        pid_before = container.pid()
        container.checkpoint()
        dumped = logged.actions()
        before = len(containers.read_ticks(container.ticks))
        container.restore()
        restored = logged.since(len(dumped))
        pid_after = container.pid()
        assert_ticks_on(container.ticks, before)

    assert [line["action"] for line in dumped] == CONTAINER_DUMP
    assert [line["action"] for line in restored] == CONTAINER_RESTORE
    assert_container_env(dumped, restored, pid_before, pid_after)


def test_runc_without_config_file(runc_ready, ticker, tmp_path):
    """An empty org.criu.config annotation: CRIU parses no config file at all."""
    with containers.RuncContainer(ticker, str(tmp_path / "runc")) as container:
        container.checkpoint()
        with open(os.path.join(container.criu_work, "dump.log")) as f:
            assert "Parsing config file" not in f.read()


def test_podman(podman_ready, ticker, logged, tmp_path):
    with containers.PodmanContainer(ticker, str(tmp_path / "podman"), logged.config) as container:
        pid_before = container.pid()
        container.checkpoint()
        dumped = logged.actions()
        before = len(containers.read_ticks(container.ticks))
        container.restore()
        restored = logged.since(len(dumped))
        pid_after = container.pid()
        assert_ticks_on(container.ticks, before)

    assert [line["action"] for line in dumped] == CONTAINER_DUMP
    assert [line["action"] for line in restored] == CONTAINER_RESTORE
    assert_container_env(dumped, restored, pid_before, pid_after)


@pytest.mark.parametrize("runtime", ["criu", "runc"])
def test_measure(criu_ready, ticker, tmp_path, runtime):
    if runtime == "runc" and containers.runc_skip_reason():
        pytest.skip(containers.runc_skip_reason())
    script = containers.write_script(str(tmp_path / "exit0.sh"), "#!/bin/sh\nexit 0\n")
    for hook in (None, script):
        result = containers.measure(ticker, str(tmp_path / f"run-{bool(hook)}"), runtime, hook)
        assert result.dump_s > 0 and result.restore_s > 0
        assert 0 <= result.monotonic_step_ms < MAX_STEP_MS
