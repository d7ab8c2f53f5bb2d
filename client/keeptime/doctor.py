"""`keeptime doctor`: is this host ready to checkpoint and restore clocks?

Each check reports ok, warn (works, but worth knowing), fail (a blocking
problem: restore or the daemon cannot work) or skip (could not be checked).
The checks run from the caller's side: the kernel and CRIU of this host, the
socket as this user can reach it, then what keeptimed itself reports
(GetInfo), whether its configuration file would load at the next start, and
whether CRIU runs keeptime's hook.
"""
import ctypes
import errno
import os
import shutil
import socket
import stat
import subprocess
import sys
from dataclasses import asdict, dataclass
from typing import Mapping, Optional

from . import __version__, errors
from .client import Client
from .defaults import CONFIG_ENV, DEFAULT_CONFIG
from .v1 import keeptime_pb2 as pb

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
RECOMMENDED_KERNEL = (6, 2)


@dataclass
class Check:
    name: str
    status: str
    summary: str

    def as_dict(self) -> dict:
        return asdict(self)


def _kernel_version(release: str) -> tuple[int, int]:
    parts = release.split(".")
    try:
        return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)
    except (IndexError, ValueError):
        return 0, 0


def check_kernel() -> Check:
    release = os.uname().release
    if not os.path.exists("/proc/self/ns/time"):
        return Check("kernel", FAIL, f"Linux {release} has no time namespaces (needs >= 5.6 with CONFIG_TIME_NS)")
    if _kernel_version(release) < RECOMMENDED_KERNEL:
        return Check("kernel", WARN, f"Linux {release} has time namespaces; >= 6.2 is recommended")
    return Check("kernel", OK, f"Linux {release} has time namespaces")


def check_namespace_limit() -> Check:
    try:
        with open("/proc/sys/user/max_time_namespaces", encoding="ascii") as f:
            limit = int(f.read())
    except (OSError, ValueError):
        return Check("namespace limit", SKIP, "cannot read /proc/sys/user/max_time_namespaces")
    if limit == 0:
        return Check("namespace limit", FAIL, "user.max_time_namespaces is 0: no restore can create one (sysctl)")
    return Check("namespace limit", OK, f"up to {limit} time namespaces per user namespace")


def check_socket(path: str) -> Check:
    """Whether this user can connect to the socket at all (before any RPC)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return Check("socket", FAIL, f"no socket at {path}: is keeptimed running (systemctl status keeptimed)?")
    except PermissionError:
        return Check("socket", FAIL, f"cannot look up {path} as uid {os.geteuid()}: permission denied on its "
                                     "directory")
    if not stat.S_ISSOCK(mode):
        return Check("socket", FAIL, f"{path} is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(5)
    try:
        probe.connect(path)
    except PermissionError:
        return Check("socket", FAIL, f"{path} (mode {stat.S_IMODE(mode):04o}) refuses uid {os.geteuid()}: "
                                     "run as root")
    except OSError as exc:
        return Check("socket", FAIL, f"cannot connect to {path}: {exc.strerror}: is keeptimed running?")
    finally:
        probe.close()
    return Check("socket", OK, f"{path} accepts connections from uid {os.geteuid()}")


def check_daemon(client: Client) -> tuple[Check, Optional[pb.GetInfoResponse]]:
    try:
        health = client.health()
        info = client.info()
    except errors.Unimplemented:
        return Check("daemon", WARN, f"keeptimed is {health} but older than this keeptime {__version__} "
                                     "(no GetInfo): restart it to run the installed version"), None
    except errors.PermissionDenied:
        # A socket_group member: served, but confined, and the details are root's.
        status = OK if health == "SERVING" else FAIL
        return Check("daemon", status, f"keeptimed is {health}; uid {os.geteuid()} may call it for its own "
                                       "processes, and only root may see its details"), None
    except errors.KeeptimeError as exc:
        return Check("daemon", FAIL, f"keeptimed does not answer: {exc.message}"), None
    if health != "SERVING":
        return Check("daemon", FAIL, f"keeptimed {info.version} ({_where(info)}) is {health}"), info
    return Check("daemon", OK, f"keeptimed {info.version} ({_where(info)}) is SERVING, "
                               f"{info.record_count} record(s), {info.children_running} running child(ren)"), info


def _where(info: pb.GetInfoResponse) -> str:
    """keeptimed's pid, which is 0 when it runs outside the caller's pid namespace."""
    return f"pid {info.pid}" if info.pid else "outside this pid namespace"


def check_privileges(info: pb.GetInfoResponse) -> Check:
    blocking = [m for m in info.missing_capabilities if m.blocking]
    others = [m for m in info.missing_capabilities if not m.blocking]
    if blocking:
        return Check("privileges", FAIL, "keeptimed lacks " + "; ".join(f"{m.name} ({m.needed_for})" for m in blocking))
    if others:
        return Check("privileges", WARN, "keeptimed lacks " + "; ".join(f"{m.name} ({m.needed_for})" for m in others))
    return Check("privileges", OK, "keeptimed has every capability it needs")


# clone3's number is the same on every architecture but alpha (new syscalls share one table).
SYS_CLONE3 = 435
CLONE_NEWTIME = 0x80
CLONE_THREAD = 0x10000
SIGCHLD = 17
CLOCK_MONOTONIC, CLOCK_BOOTTIME = 1, 7
# struct clone_args of Linux 5.7 (11 u64) plus the proposal's timens_offset
# (pointer) and timens_offset_size.
CLONE_ARGS_WITH_OFFSETS = 13


def probe_clone3_offset_abi() -> tuple[Optional[bool], str]:
    """Whether clone3() takes the proposed timens_offset fields, asked without
    creating anything: the arguments carry the fields but are invalid
    (CLONE_THREAD with an exit signal), so a kernel that knows the fields
    answers EINVAL, one that does not answers E2BIG before looking further.
    Returns (supported, errno name); None when the answer says neither."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    offsets = (ctypes.c_int64 * 6)(CLOCK_MONOTONIC, 0, 0, CLOCK_BOOTTIME, 0, 0)
    args = (ctypes.c_uint64 * CLONE_ARGS_WITH_OFFSETS)()
    args[0] = CLONE_NEWTIME | CLONE_THREAD
    args[4] = SIGCHLD
    args[11] = ctypes.addressof(offsets)
    args[12] = 2
    if libc.syscall(ctypes.c_long(SYS_CLONE3), ctypes.byref(args), ctypes.c_size_t(ctypes.sizeof(args))) >= 0:
        return None, "no error"  # cannot happen: the arguments are invalid
    err = ctypes.get_errno()
    name = errno.errorcode.get(err, str(err))
    return {errno.E2BIG: False, errno.ENOSYS: False, errno.EINVAL: True}.get(err), name


def check_offset_abi(info: Optional[pb.GetInfoResponse]) -> Check:
    """What keeptimed learned from its restores, else what this kernel answers now."""
    fallback = "restores use unshare + /proc/self/timens_offsets + clone3"
    supported = {pb.OFFSET_ABI_SUPPORTED: True, pb.OFFSET_ABI_UNSUPPORTED: False}.get(info.offset_abi) if info else None
    how = "keeptimed's restores found"
    if supported is None:
        supported, answer = probe_clone3_offset_abi()
        how = f"clone3() answered {answer}:"
    if supported is None:
        return Check("clone3 offsets", SKIP, f"{how} cannot tell; {fallback} unless the offset ABI works")
    if supported:
        return Check("clone3 offsets", OK, f"{how} clone3() takes time namespace offsets: restores are one syscall")
    return Check("clone3 offsets", OK, f"{how} this kernel lacks the clone3 offset ABI (no released kernel has "
                                       f"it); {fallback}")


def find_keeptimed() -> Optional[str]:
    """The keeptimed of this installation (next to this Python), else on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "keeptimed")
    return beside if os.access(beside, os.X_OK) else shutil.which("keeptimed")


def check_config(path: str, explicit: bool) -> Check:
    """Whether keeptimed would accept its configuration file at its next start."""
    if not os.path.exists(path):
        if explicit:
            return Check("configuration", FAIL, f"{path} does not exist")
        return Check("configuration", OK, f"no {path}: keeptimed uses its embedded defaults")
    program = find_keeptimed()
    if program is None:
        return Check("configuration", SKIP, f"keeptimed is not installed here to check {path}")
    # Only the file is judged: this shell's KEEPTIME_* variables are not the daemon's.
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEPTIME_")}
    try:
        result = subprocess.run([program, "--config", path, "--print-config"], capture_output=True, text=True,
                                env=env, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:   # e.g. an interpreter this user may not run
        return Check("configuration", SKIP, f"cannot run {program} to check {path}: {exc}")
    if result.returncode != 0:
        return Check("configuration", FAIL, result.stderr.strip().removeprefix("keeptimed: "))
    return Check("configuration", OK, f"{path} is valid")


def _criu_error(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    useful = [line for line in lines if line.startswith("Error") and not line.endswith("exited, status=1")]
    return (useful or lines or ["no output"])[0]


def check_criu() -> Check:
    program = shutil.which("criu")
    if program is None:
        return Check("criu", WARN, "criu is not installed (needed only to checkpoint and restore with CRIU)")
    try:
        version = subprocess.run([program, "--version"], capture_output=True, text=True, timeout=30)
        name = version.stdout.split("\n", 1)[0].replace("Version:", "criu").strip() or "criu"
        if os.geteuid() != 0:
            return Check("criu", SKIP, f"{name} found; `criu check` needs root")
        checked = subprocess.run([program, "check"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check("criu", WARN, f"cannot run {program}: {exc}")
    if checked.returncode != 0:
        return Check("criu", WARN, f"{name}: `criu check` fails on this kernel: "
                                   f"{_criu_error(checked.stderr + checked.stdout)}")
    return Check("criu", OK, f"{name}: `criu check` passes")


CRIU_CONFIG_DIR = "/etc/criu"
# The files CRIU reads by default, and who reads each (README: Using keeptime with CRIU).
CRIU_CONFIGS = (("default.conf", "criu, CRaC"), ("runc.conf", "runc, podman on runc"), ("crun.conf", "crun"))
KEEPTIME_HOOKS = ("keeptime-criu-forward", "keeptime-criu-hook")
INSTALLED_HOOK = "/usr/libexec/keeptime/criu-hook"


def _action_scripts(path: str) -> list[str]:
    """The action scripts a CRIU configuration file names (`action-script PATH` lines)."""
    scripts = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            words = line.split("#", 1)[0].split(None, 1)
            if len(words) == 2 and words[0].lstrip("-") == "action-script":
                scripts.append(words[1].strip().strip("\"'"))
    return scripts


def _is_keeptime_hook(path: str) -> bool:
    """keeptime's hook: the forwarder or keeptime-criu-hook, through any links,
    or a script that runs keeptime-criu-hook (deploy/criu/criu-hook copied)."""
    if os.path.basename(os.path.realpath(path)) in KEEPTIME_HOOKS:
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(64 * 1024)
    except OSError:
        return False
    return head.startswith(b"#!") and b"keeptime-criu-hook" in head


def _hook_config_problem(environ: Mapping[str, str]) -> Optional[str]:
    from .criu import hookconfig

    path, _ = hookconfig.config_path(environ)
    if os.path.exists(path) and not os.access(path, os.R_OK):
        return None   # CRIU's user (root) reads it, not necessarily this one
    try:
        hookconfig.load(environ)
    except hookconfig.ConfigError as exc:
        return str(exc)
    return None


def check_criu_hook(config_dir: str = CRIU_CONFIG_DIR, environ: Mapping[str, str] = os.environ) -> Check:
    """Whether CRIU runs keeptime's hook: a CRIU configuration file names it,
    it can run, and its own configuration (criu-hook.toml) is valid."""
    problem = _hook_config_problem(environ)
    if problem:
        return Check("criu hook", FAIL, f"every CRIU step through keeptime's hook would fail: {problem}")
    named, broken = [], []
    for name, readers in CRIU_CONFIGS:
        path = os.path.join(config_dir, name)
        try:
            scripts = _action_scripts(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            return Check("criu hook", SKIP, f"cannot read {path}: {exc.strerror}")
        for script in filter(_is_keeptime_hook, scripts):
            if os.path.isfile(script) and os.access(script, os.X_OK):
                named.append(f"{name} ({readers})")
            else:
                why = "is not executable" if os.path.exists(script) else "does not exist"
                broken.append(f"{path} names {script}, which {why}")
    if broken:
        return Check("criu hook", FAIL, f"{'; '.join(broken)}: every CRIU dump and restore that reads it fails")
    if named:
        return Check("criu hook", OK, f"keeptime's hook runs for {', '.join(named)} in {config_dir}")
    if shutil.which("criu") is None:
        return Check("criu hook", SKIP, "criu is not installed")
    return Check("criu hook", WARN, (
        f"no CRIU configuration in {config_dir} names keeptime's hook, so CRIU's dumps and restores keep no "
        f"clocks continuous: add `action-script {INSTALLED_HOOK}` to the ones your tools read ("
        f"{'; '.join(f'{name}: {readers}' for name, readers in CRIU_CONFIGS)}), or pass --action-script"))


def run(socket_path: str, timeout: float, config_path: Optional[str] = None, criu: bool = True) -> dict:
    """Every check, in order; returns {"ok", "checks", "daemon"} ("ok": no blocking problem)."""
    checks = [check_kernel(), check_namespace_limit(), check_socket(socket_path)]
    with Client(socket=socket_path, timeout=timeout) as client:
        daemon_check, info = check_daemon(client)
    checks.append(daemon_check)
    if info is not None:
        checks.append(check_privileges(info))
    checks.append(check_offset_abi(info))
    if config_path:
        path, explicit = config_path, True
    elif info is not None and info.config_path:
        path, explicit = info.config_path, info.config_file_loaded
    elif os.environ.get(CONFIG_ENV):
        path, explicit = os.environ[CONFIG_ENV], True
    else:
        path, explicit = DEFAULT_CONFIG, False
    checks.append(check_config(path, explicit))
    checks.append(check_criu() if criu else Check("criu", SKIP, "not checked (--no-criu)"))
    checks.append(check_criu_hook() if criu else Check("criu hook", SKIP, "not checked (--no-criu)"))
    return {
        "ok": not any(c.status == FAIL for c in checks),
        "checks": [c.as_dict() for c in checks],
        "daemon": info,
    }
