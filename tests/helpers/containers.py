"""Real CRIU, runc and podman for tests, each running a clock ticker (ticker.c)
and an action script of the test's choice.

A test builds the ticker once (build_ticker), writes a CRIU config file naming
its action script (write_criu_config), then drives one of:
- CriuTree: a ticker dumped and restored by plain `criu`, on the host, in its
  own time namespace, or with CRIU inside the tree's own pid (and time) namespace;
- RuncContainer: a hand-made OCI bundle run, checkpointed and restored by runc;
- PodmanContainer: an imported rootfs run by podman on runc, in private storage.
Each is a context manager that kills what it started. The CRIU config file
reaches runc and podman only through the `org.criu.config` annotation; nothing
here writes /etc/criu. `measure` times one dump and restore for benchmarks.

Anything missing on the machine raises Unavailable (or is reported by the
*_skip_reason functions) so that tests can skip with the reason.
"""
import dataclasses
import functools
import json
import os
import secrets
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time

from keeptime.criu import image
from keeptime.criu.dumpdir import DumpDir
from keeptime.criu.imagedir import ImageDir

HERE = os.path.dirname(os.path.abspath(__file__))
TICKER_SOURCE = os.path.join(HERE, "ticker.c")

# Where a CriuTree's ticker lives and where CRIU runs to dump and restore it.
HOST = "host"                  # ticker and CRIU in the host's namespaces
OWN_TIMENS = "timens"          # ticker in its own time namespace, CRIU on the host
OWN_PIDNS = "pidns"            # ticker and CRIU in a new pid namespace
OWN_PID_TIMENS = "pidns+timens"  # ticker and CRIU in a new pid and a new time namespace
WHERE = (HOST, OWN_TIMENS, OWN_PIDNS, OWN_PID_TIMENS)


class Unavailable(Exception):
    """A program or kernel feature a test needs is missing; str() is the reason."""


class Failed(Exception):
    """A real CRIU, runc or podman step failed; the message carries its output and log."""


# ---------------------------------------------------------------- availability

@functools.lru_cache(maxsize=None)
def criu_skip_reason(criu: str = "criu") -> str:
    """Why real CRIU cannot be used here ("" when `criu check` passes)."""
    path = shutil.which(criu)
    if path is None:
        return "criu is not installed"
    check = subprocess.run([path, "check"], capture_output=True, text=True, timeout=120)
    if check.returncode != 0:
        lines = [line for line in (check.stderr + check.stdout).splitlines() if line.strip()]
        return f"`criu check` fails on this machine: {lines[-1] if lines else check.returncode}"
    return ""


def _programs_missing(*names: str) -> str:
    missing = [name for name in names if shutil.which(name) is None]
    return f"not installed: {', '.join(missing)}" if missing else ""


def runc_skip_reason() -> str:
    """Why runc checkpoint/restore cannot be tested here ("" when it can)."""
    # CRIU's network lock for the container's network namespace runs iptables-restore.
    return _programs_missing("runc", "iptables-restore") or criu_skip_reason()


def podman_skip_reason() -> str:
    """Why podman checkpoint/restore (on runc) cannot be tested here ("" when it can)."""
    return _programs_missing("podman") or runc_skip_reason()


def _is_static(path: str) -> bool:
    if shutil.which("file") is None:
        return False
    out = subprocess.run(["file", "-L", path], capture_output=True, text=True).stdout
    return "statically linked" in out


# ---------------------------------------------------------------- files

def public_dir(prefix: str = "keeptime-") -> str:
    """A new temporary directory every user can read and enter (0755), for
    programs that run as another user or in a container; the caller removes it."""
    path = tempfile.mkdtemp(prefix=prefix)
    os.chmod(path, 0o755)
    return path


def build_ticker(directory: str) -> str:
    """Compile ticker.c statically into directory (made readable by everyone);
    return the program's path. Raises Unavailable without gcc or a static libc."""
    if shutil.which("gcc") is None:
        raise Unavailable("needs gcc to build the static clock ticker")
    os.chmod(directory, 0o755)
    out = os.path.join(directory, "ticker")
    built = subprocess.run(["gcc", "-O2", "-static", "-o", out, TICKER_SOURCE],
                           capture_output=True, text=True)
    if built.returncode != 0:
        raise Unavailable(f"cannot build a static ticker (libc6-dev?): {built.stderr.strip()[-300:]}")
    return out


def read_ticks(path: str) -> list[tuple[int, int]]:
    """The (MONOTONIC, BOOTTIME) ns pairs the ticker wrote so far (whole lines)."""
    try:
        with open(path) as f:
            return [tuple(map(int, line.split())) for line in f if line.endswith("\n")]
    except FileNotFoundError:
        return []


def wait_for_ticks(path: str, more_than: int, timeout: float = 10.0) -> list[tuple[int, int]]:
    """All ticks once there are more than `more_than`; AssertionError after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        seen = read_ticks(path)
        if len(seen) > more_than:
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"the ticker wrote no more than {more_than} lines to {path} in {timeout} s")
        time.sleep(0.01)


def monotonic_step_ms(ticks: list[tuple[int, int]], before: int) -> float:
    """MONOTONIC step in ms between the last of the first `before` ticks (the last
    tick before the dump) and the next one (the first after the restore)."""
    return (ticks[before][0] - ticks[before - 1][0]) / 1e6


# ---------------------------------------------------------------- action scripts

LOGGING_SCRIPT = """#!/bin/sh
# Appends one line per CRIU action: which action, CRIU's environment, whether
# the image directory can be opened, and how the script and the process behind
# CRTOOLS_INIT_PID look from the script's own pid namespace.
if ls "$CRTOOLS_IMAGE_DIR" >/dev/null 2>&1; then open=yes; else open=no; fi
pid=$CRTOOLS_INIT_PID
if [ -n "$pid" ]; then
    init_pidns=$(readlink /proc/$pid/ns/pid 2>/dev/null)
    init_timens=$(readlink /proc/$pid/ns/time 2>/dev/null)
    init_nspid=$(sed -n 's/^NSpid:[[:space:]]*//p' /proc/$pid/status 2>/dev/null | tr -s ' \\t' ',')
    init_comm=$(cat /proc/$pid/comm 2>/dev/null)
fi
echo "action=$CRTOOLS_SCRIPT_ACTION init_pid=${pid:--} image_dir=${CRTOOLS_IMAGE_DIR:--}" \\
     "image_dir_open=$open script_pidns=$(readlink /proc/self/ns/pid)" \\
     "script_timens=$(readlink /proc/self/ns/time) init_pidns=${init_pidns:--}" \\
     "init_timens=${init_timens:--} init_nspid=${init_nspid:--} init_comm=${init_comm:--}" >> "%(log)s"
"""


def write_script(path: str, text: str) -> str:
    """Write an executable (0755) action script; return its path."""
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o755)
    return path


def write_logging_script(path: str, log: str) -> str:
    """Write an action script that appends one key=value line per CRIU action
    to log (see read_action_log); return the script's path."""
    return write_script(path, LOGGING_SCRIPT % {"log": log})


def read_action_log(log: str) -> list[dict[str, str]]:
    """The logging script's lines as dicts: action, init_pid, image_dir,
    image_dir_open (yes/no), script_pidns, script_timens, init_pidns,
    init_timens, init_nspid (pids from outermost to innermost namespace,
    comma-separated), init_comm; "-" where there is none."""
    try:
        with open(log) as f:
            return [dict(field.split("=", 1) for field in line.split()) for line in f]
    except FileNotFoundError:
        return []


def write_criu_config(path: str, action_script: str | None = None) -> str:
    """Write a CRIU config file naming action_script (or nothing); return its path."""
    with open(path, "w") as f:
        if action_script:
            f.write(f"action-script {action_script}\n")
    os.chmod(path, 0o644)
    return path


# ---------------------------------------------------------------- processes

def _run(argv: list[str], what: str, log: str | None = None, timeout: float = 120,
         **kwargs) -> float:
    """Run argv; return its wall time in seconds; Failed with output and log on failure."""
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, **kwargs)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        tail = ""
        if log and os.path.exists(log):
            with open(log, errors="replace") as f:
                tail = "".join(f.readlines()[-30:])
        raise Failed(f"{what} failed ({done.returncode}): {' '.join(argv)}\n"
                     f"{done.stdout}{done.stderr}\n{tail}")
    return seconds


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _wait_for_child(pid: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = _children(pid)
        if kids:
            return kids[0]
        time.sleep(0.005)
    raise Failed(f"pid {pid} started no child in {timeout} s")


def _wait_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.005)


def _nspid(pid: int) -> list[int]:
    """pid's numbers from the host's pid namespace down to its own."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("NSpid:"):
                return [int(p) for p in line.split()[1:]]
    raise Failed(f"no NSpid for {pid}")


def _kill(pid: int | None) -> None:
    if pid:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.kill()
    if proc is not None:
        proc.wait(timeout=10)


# ---------------------------------------------------------------- plain CRIU

class CriuTree:
    """A ticker dumped and restored by plain CRIU, with `--no-default-config
    --config <file>` so only the test's config (and action script) applies.

    `where` is one of:
    - HOST: the ticker in the host's namespaces, CRIU on the host;
    - OWN_TIMENS: `unshare --time --monotonic M --boottime B --fork ticker`,
      dumped and restored by CRIU on the host (CRIU writes timens-<id>.img);
    - OWN_PIDNS / OWN_PID_TIMENS: `unshare --pid [--time] --fork --mount-proc`
      runs a holder shell (pid 1 there) that starts the ticker; CRIU runs inside
      the same pid (and time) and mount namespaces through nsenter, so
      CRTOOLS_INIT_PID and the pid file are pids of that namespace.
    """

    def __init__(self, ticker: str, workdir: str, where: str = HOST, criu: str = "criu",
                 monotonic_s: int = 0, boottime_s: int = 0, memory_mib: int = 0):
        if where not in WHERE:
            raise ValueError(f"where must be one of {WHERE}")
        if memory_mib and where != HOST:
            raise ValueError("memory_mib is for a ticker on the host")
        self.ticker, self.where, self.criu = ticker, where, criu
        self.memory = [str(memory_mib)] if memory_mib else []
        self.monotonic_s, self.boottime_s = monotonic_s, boottime_s
        self.ticks = os.path.join(workdir, "ticks")
        self.images = os.path.join(workdir, "images")
        self.pidfile = os.path.join(workdir, "restored.pid")
        os.makedirs(self.images, exist_ok=True)
        self._launcher: subprocess.Popen | None = None
        self.holder: int | None = None   # host pid of pid 1 of the tree's own pid namespace
        self.pid: int | None = None      # the ticker's pid as CRIU sees it
        self.restored: int | None = None  # the restored ticker's pid as CRIU sees it

    def __enter__(self) -> "CriuTree":
        try:
            return self.start()
        except BaseException:
            self.stop()  # __exit__ does not run when __enter__ fails
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

    def _offsets(self) -> list[str]:
        return ["--monotonic", str(self.monotonic_s), "--boottime", str(self.boottime_s)]

    def start(self) -> "CriuTree":
        """Start the ticker and wait for its first ticks."""
        quiet = dict(stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if self.where == HOST:
            self._launcher = subprocess.Popen([self.ticker, self.ticks, *self.memory], **quiet)
            self.pid = self._launcher.pid
        elif self.where == OWN_TIMENS:
            self._launcher = subprocess.Popen(
                ["unshare", "--time", *self._offsets(), "--fork", self.ticker, self.ticks], **quiet)
            self.pid = _wait_for_child(self._launcher.pid)
        else:
            # pid 1 reaps the dumped ticker at once (`wait $!`) so that its pid is
            # free for the restore, then stays as the namespace's reaper.
            holder = f'"{self.ticker}" "{self.ticks}" & wait $!; while :; do sleep 1; done'
            time_ns = ["--time", *self._offsets()] if self.where == OWN_PID_TIMENS else []
            self._launcher = subprocess.Popen(
                ["unshare", "--pid", *time_ns, "--fork", "--mount-proc", "sh", "-c", holder], **quiet)
            self.holder = _wait_for_child(self._launcher.pid)
            self.pid = _nspid(_wait_for_child(self.holder))[-1]
        wait_for_ticks(self.ticks, 2)
        return self

    def _criu(self) -> list[str]:
        if self.holder is None:
            return [self.criu]
        time_ns = ["--time"] if self.where == OWN_PID_TIMENS else []
        return ["nsenter", "--target", str(self.holder), "--pid", "--mount", *time_ns, self.criu]

    def dump(self, config: str) -> float:
        """`criu dump` the ticker (CRIU kills it); return the seconds it took."""
        seconds = _run([*self._criu(), "dump", "-v4", "-t", str(self.pid), "-D", self.images,
                        "-o", "dump.log", "--no-default-config", "--config", config],
                       "criu dump", os.path.join(self.images, "dump.log"))
        if self._launcher is not None and self.where in (HOST, OWN_TIMENS):
            self._launcher.wait(timeout=10)
        return seconds

    def restore(self, config: str) -> float:
        """`criu restore -d` the ticker; return the seconds it took."""
        if os.path.exists(self.pidfile):
            os.unlink(self.pidfile)  # CRIU refuses to overwrite a pid file
        if self.holder is None:
            # After a failed restore the killed task waits for the host's init to
            # reap it, and CRIU cannot take its pid until then.
            _wait_gone(self.pid)
        seconds = _run([*self._criu(), "restore", "-v4", "-d", "-D", self.images,
                        "-o", "restore.log", "--pidfile", self.pidfile,
                        "--no-default-config", "--config", config],
                       "criu restore", os.path.join(self.images, "restore.log"))
        with open(self.pidfile) as f:
            self.restored = int(f.read())
        return seconds

    def stop(self) -> None:
        """Kill the ticker (original or restored) and any namespace holder."""
        if self.holder is not None:
            _kill(self.holder)  # pid 1 of the namespace: the kernel kills the rest
        elif self.restored is not None:
            _kill(self.restored)
        _stop(self._launcher)


# ---------------------------------------------------------------- containers

def make_rootfs(rootfs: str, ticker: str) -> str:
    """Fill rootfs with the static ticker (/ticker), static busybox (/bin/sh and
    friends, when the host has a static one) and the mount points a container
    needs; /out is where the host's ticks directory is bind-mounted."""
    for sub in ("bin", "dev", "proc", "sys", "tmp", "out", "etc"):
        os.makedirs(os.path.join(rootfs, sub), exist_ok=True)
    shutil.copy2(ticker, os.path.join(rootfs, "ticker"))
    busybox = shutil.which("busybox")
    if busybox and _is_static(busybox):
        shutil.copy2(busybox, os.path.join(rootfs, "bin", "busybox"))
        for applet in ("sh", "ls", "cat", "sleep"):
            os.symlink("busybox", os.path.join(rootfs, "bin", applet))
    return rootfs


class RuncContainer:
    """The ticker as the only process of a runc container: a bundle made by
    hand (make_rootfs, then `runc spec` edited: no terminal, the ticker writing
    to /out/ticks, /out bind-mounted from the host), run detached, checkpointed
    with `runc checkpoint` and brought back with `runc restore -d`.

    The CRIU config file (and so the action script) reaches CRIU only through
    the `org.criu.config` annotation; with criu_config=None the annotation is
    empty, which tells runc to give CRIU no config file at all (not even
    /etc/criu/runc.conf). runc keeps its state under workdir (`runc --root`).
    """

    def __init__(self, ticker: str, workdir: str, criu_config: str | None = None,
                 name: str | None = None, runc: str = "runc"):
        # runc names the container's cgroups after it: unique, for parallel runs.
        self.name = name or f"keeptime-{secrets.token_hex(4)}"
        self.ticker, self.runc = ticker, runc
        self.criu_config = criu_config
        workdir = os.path.abspath(workdir)
        self.bundle = os.path.join(workdir, "bundle")
        self.shared = os.path.join(workdir, "shared")
        self.ticks = os.path.join(self.shared, "ticks")
        self.state = os.path.join(workdir, "runc-state")
        self.images = os.path.join(workdir, "images")
        self.criu_work = os.path.join(workdir, "criu-work")  # CRIU's dump.log and restore.log
        self.runc_log = os.path.join(workdir, "runc.log")
        for path in (self.bundle, self.shared, self.state, self.images, self.criu_work):
            os.makedirs(path, exist_ok=True)
        self.started = False

    def __enter__(self) -> "RuncContainer":
        try:
            return self.start()
        except BaseException:
            self.stop()  # __exit__ does not run when __enter__ fails
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

    def _runc(self, *args: str) -> list[str]:
        return [self.runc, "--root", self.state, "--log", self.runc_log, *args]

    def _write_config(self) -> None:
        _run([self.runc, "spec"], "runc spec", cwd=self.bundle)
        path = os.path.join(self.bundle, "config.json")
        with open(path) as f:
            config = json.load(f)
        config["process"]["terminal"] = False
        config["process"]["args"] = ["/ticker", "/out/ticks"]
        config["mounts"].append({"destination": "/out", "type": "bind", "source": self.shared,
                                 "options": ["rbind", "rw"]})
        config.setdefault("annotations", {})["org.criu.config"] = self.criu_config or ""
        with open(path, "w") as f:
            json.dump(config, f, indent=1)

    def _criu_log(self, name: str) -> str:
        return os.path.join(self.criu_work, name)

    def start(self) -> "RuncContainer":
        """Build the bundle, `runc run -d` it and wait for the first ticks."""
        make_rootfs(os.path.join(self.bundle, "rootfs"), self.ticker)
        self._write_config()
        # runc's own stdio must not be kept by the container: the ticker swaps its
        # stdio for the container's /dev/null, so /dev/null here is never dumped.
        _run(self._runc("run", "-d", "--bundle", self.bundle, self.name), "runc run", self.runc_log)
        self.started = True
        wait_for_ticks(self.ticks, 2)
        return self

    def pid(self) -> int:
        """Host pid of the container's init (the ticker), from `runc state`."""
        state = subprocess.run(self._runc("state", self.name), capture_output=True, text=True, check=True)
        return json.loads(state.stdout)["pid"]

    def checkpoint(self) -> float:
        """`runc checkpoint` (the container stops); return the seconds it took."""
        return _run(self._runc("checkpoint", "--image-path", self.images, "--work-path", self.criu_work,
                               self.name), "runc checkpoint", self._criu_log("dump.log"))

    def restore(self) -> float:
        """`runc restore -d` from the checkpoint; return the seconds it took."""
        return _run(self._runc("restore", "-d", "--image-path", self.images, "--work-path", self.criu_work,
                               "--bundle", self.bundle, self.name), "runc restore",
                    self._criu_log("restore.log"))

    def stop(self) -> None:
        """`runc delete -f` the container, whatever state it is in."""
        if self.started:
            subprocess.run(self._runc("delete", "-f", self.name), capture_output=True, timeout=60)


def _unmount_under(path: str) -> None:
    """Lazily unmount whatever is still mounted below path (deepest first)."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in sorted((p for p in points if p.startswith(path.rstrip("/") + "/")), reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


def _remove_cgroup(relative: str, timeout: float = 5.0) -> None:
    """rmdir the cgroup `relative` (and its children) in every mounted hierarchy,
    retrying while a process that is exiting (conmon) still keeps one busy."""
    with open("/proc/self/mountinfo") as f:
        roots = [line.split()[4] for line in f if " - cgroup" in line]
    deadline = time.monotonic() + timeout
    while True:
        busy = False
        for root in roots:
            top = os.path.join(root, relative.lstrip("/"))
            for path, _dirs, _files in sorted(os.walk(top), key=lambda walked: -len(walked[0])):
                try:
                    os.rmdir(path)
                except OSError:
                    busy = True
        if not busy or time.monotonic() > deadline:
            return
        time.sleep(0.05)


class PodmanContainer:
    """The ticker in a podman (on runc) container, with private storage: an
    imported rootfs tarball (no registry needed), `podman run -d` with the
    options this kind of host needs (cgroupfs, file events, no network, explicit
    ulimits for a root without CAP_SYS_RESOURCE), `podman container checkpoint`
    and `podman container restore`. The CRIU config file reaches CRIU only
    through `--annotation org.criu.config=<file>` (empty: no config file).

    Storage (--root), libpod's tmpdir and locks, TMPDIR and containers.conf
    (CONTAINERS_CONF, so the host's is not read) live under workdir, state
    (--runroot) in a short-named temporary directory, the container's cgroups
    under a cgroup of its own; stop() removes the directory and the
    cgroups. podman itself still creates /run/containers/networks (empty) and
    /var/lib/containers/cache (its blob-info cache) on the host.
    """

    def __init__(self, ticker: str, workdir: str, criu_config: str | None = None,
                 name: str = "keeptime-ticker", podman: str = "podman"):
        self.ticker, self.name, self.podman = ticker, name, podman
        self.criu_config = criu_config
        self.workdir = os.path.abspath(workdir)
        self.shared = os.path.join(self.workdir, "shared")
        self.ticks = os.path.join(self.shared, "ticks")
        self.image = f"localhost/{name}:test"
        self.cgroup_parent = f"/keeptime-test-{secrets.token_hex(4)}"
        self.tmpdir = os.path.join(self.workdir, "tmp")
        for path in (self.shared, self.tmpdir):
            os.makedirs(path, exist_ok=True)
        # podman refuses a runroot path longer than 50 characters.
        self.runroot = tempfile.mkdtemp(prefix="keeptime-podman-")
        # Our own containers.conf, read instead of the host's: file locks in the
        # private tmpdir rather than the host-wide /dev/shm/libpod_lock.
        conf = os.path.join(self.workdir, "containers.conf")
        with open(conf, "w") as f:
            f.write(f'[engine]\nlock_type = "file"\n[network]\n'
                    f'network_config_dir = "{os.path.join(self.workdir, "networks")}"\n')
        self.env = dict(os.environ, CONTAINERS_CONF=conf, TMPDIR=self.tmpdir)
        self.started = False

    def __enter__(self) -> "PodmanContainer":
        try:
            return self.start()
        except BaseException:
            self.stop()  # __exit__ does not run when __enter__ fails
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

    def _podman(self, *args: str) -> list[str]:
        return [self.podman, "--root", os.path.join(self.workdir, "storage"),
                "--runroot", self.runroot, "--tmpdir", os.path.join(self.workdir, "libpod"),
                "--storage-driver", "vfs", "--cgroup-manager=cgroupfs", "--events-backend=file",
                "--runtime=runc", *args]

    def _call(self, what: str, *args: str) -> float:
        log = self.userdata_log("dump.log" if "checkpoint" in args else "restore.log") if self.started else None
        return _run(self._podman(*args), what, log, env=self.env)

    def userdata_log(self, name: str) -> str | None:
        """Path of CRIU's log `name` (dump.log, restore.log) in podman's
        per-container directory, where podman runs CRIU."""
        found = subprocess.run(self._podman("container", "inspect", "--format", "{{.StaticDir}}", self.name),
                               capture_output=True, text=True, env=self.env)
        return os.path.join(found.stdout.strip(), name) if found.returncode == 0 else None

    @property
    def images(self) -> str:
        """CRIU's image directory of the last checkpoint (podman keeps it with --keep)."""
        return os.path.join(os.path.dirname(self.userdata_log("dump.log")), "checkpoint")

    def start(self) -> "PodmanContainer":
        """Import the rootfs as an image and `podman run -d` the ticker."""
        rootfs = make_rootfs(os.path.join(self.workdir, "rootfs"), self.ticker)
        tarball = os.path.join(self.workdir, "rootfs.tar")
        with tarfile.open(tarball, "w") as tar:
            tar.add(rootfs, arcname=".")
        self._call("podman import", "import", tarball, self.image)
        self._call("podman run", "run", "-d", "--name", self.name, "--network", "none",
                   "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096",
                   "--cgroup-parent", self.cgroup_parent,
                   "--annotation", f"org.criu.config={self.criu_config or ''}",
                   "-v", f"{self.shared}:/out", self.image, "/ticker", "/out/ticks")
        self.started = True
        wait_for_ticks(self.ticks, 2)
        return self

    def pid(self) -> int:
        """Host pid of the container's init (the ticker)."""
        out = subprocess.run(self._podman("container", "inspect", "--format", "{{.State.Pid}}", self.name),
                             capture_output=True, text=True, check=True, env=self.env).stdout
        return int(out)

    def checkpoint(self) -> float:
        """`podman container checkpoint` (the container stops); return its seconds."""
        # --keep leaves CRIU's dump.log in place for a failing test to show.
        return self._call("podman container checkpoint", "container", "checkpoint", "--keep", self.name)

    def restore(self) -> float:
        """`podman container restore` the checkpointed container; return its seconds."""
        return self._call("podman container restore", "container", "restore", "--keep", self.name)

    def stop(self) -> None:
        """Remove the container and the image, unmount what podman left under
        workdir and remove the container's cgroups."""
        for args in (("rm", "-f", "-t", "0", self.name), ("rmi", "-f", self.image)):
            subprocess.run(self._podman(*args), capture_output=True, env=self.env, timeout=60)
        _unmount_under(self.workdir)
        _unmount_under(self.runroot)
        shutil.rmtree(self.runroot, ignore_errors=True)
        _remove_cgroup(self.cgroup_parent)


# ---------------------------------------------------------------- CRIU images
# keeptime's own readers: the tests that use these check them against what
# CRIU really writes and reads.

def time_namespace_ids(images: str) -> tuple[int, int]:
    """(time_ns_id of the dumped tree's root task from ids-<root>.img, time_ns_id
    of CRIU's own root from inventory.img's root_ids)."""
    def read(name: str) -> bytes:
        with open(os.path.join(images, name), "rb") as f:
            return f.read()

    ids_name = image.ids_image(image.root_pid(read(image.PSTREE_IMAGE)))
    return image.time_ns_id(read(ids_name), ids_name), image.criu_time_ns_id(read(image.INVENTORY_IMAGE))


def timens_image_read_at_restore(images: str) -> str:
    """Name of the time namespace image CRIU reads when it restores the dump
    in images, as keeptime's hook finds it."""
    with DumpDir(ImageDir(images)) as dump:
        return dump.timens_name()


# ---------------------------------------------------------------- benchmarks

@dataclasses.dataclass(frozen=True)
class Measurement:
    """One dump and restore: wall seconds of each command, and the MONOTONIC
    step the restored ticker saw (first tick after minus last tick before, ms;
    it includes up to one 10 ms tick period)."""

    dump_s: float
    restore_s: float
    monotonic_step_ms: float


def measure(ticker: str, workdir: str, runtime: str = "criu", action_script: str | None = None,
            where: str = HOST, memory_mib: int = 0) -> Measurement:
    """Start a fresh ticker (holding memory_mib MiB of written memory: plain
    CRIU on the host only), dump and restore it once with plain CRIU
    (runtime="criu", in the namespaces `where` names) or runc (runtime="runc"),
    with action_script as CRIU's action script or none, and return the timings.
    Everything started is stopped before returning."""
    os.makedirs(workdir, exist_ok=True)
    config = write_criu_config(os.path.join(workdir, "criu.conf"), action_script)
    if runtime == "criu":
        subject = CriuTree(ticker, workdir, where, memory_mib=memory_mib)
        dump, restore = (lambda: subject.dump(config)), (lambda: subject.restore(config))
    elif runtime == "runc":
        subject = RuncContainer(ticker, workdir, config if action_script else None)
        dump, restore = subject.checkpoint, subject.restore
    else:
        raise ValueError(f"runtime must be criu or runc, not {runtime!r}")
    with subject:
        dump_s = dump()
        before = len(read_ticks(subject.ticks))
        restore_s = restore()
        ticks = wait_for_ticks(subject.ticks, before)
    return Measurement(dump_s, restore_s, monotonic_step_ms(ticks, before))
