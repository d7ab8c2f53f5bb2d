"""``keeptime criu-hook``: the CRIU hook in Python.

CRIU's action script is keeptime-criu-hook, a shell script that ends the
steps keeptime does not use and execs keeptime-criu-forward
(native/criu_forward.c, installed by the keeptimed distribution), a small
program that forwards the steps keeptime uses to keeptimed, which does the
work (keeptimed.criuactions). This module is the same hook for where that
program is not installed (the script runs it then), and what that program
runs when keeptimed cannot be reached:

    keeptimed reachable   the step is forwarded exactly as the native hook
                          forwards it (keeptime.criu.hookwire)
    unreachable           post-dump     records the dumped clocks from CRIU's
                                        time namespace image into
                                        keeptime-record.bin (imported at restore)
                          pre-restore   fails, or with on_daemon_unreachable =
                                        "warn" lets CRIU restore the dumped
                                        clocks (freeze); freeze needs nothing
                          post-restore  the restore cannot be verified: it fails
                                        (fail_on_unverified) unless
                                        on_daemon_unreachable = "warn"
                          post-resume   a warning

Exit status: 0 ok, 1 the step failed (CRIU aborts a dump or restore on a
failing post-dump, pre-restore or post-restore), 2 not run by CRIU or
misconfigured.
"""
import errno
import os
import socket as socket_mod
import sys
import time
from typing import Mapping, Optional

from ..recordfile import new_record_id
from ..recordfile import encode as encode_record
from ..v1 import keeptime_pb2 as pb
from . import hookconfig, hookwire, image
from .dumpdir import IMAGE_DIGEST_LABEL, RECORD_FILE, DumpDir, digest
from .imagedir import ImageDir, ImageFileError

ACTION_ENV = "CRTOOLS_SCRIPT_ACTION"
IMAGE_DIR_ENV = "CRTOOLS_IMAGE_DIR"
INIT_PID_ENV = "CRTOOLS_INIT_PID"
INITIAL_TIMENS_INODE = 0xEFFFFFFA  # the kernel's PROC_TIME_INIT_INO
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_TIMEOUT = 120.0            # keeptimed bounds every step well below this


class HookError(Exception):
    """The step cannot be done; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_FAILED):
        super().__init__(message)
        self.code = code


class Unreachable(Exception):
    """keeptimed cannot be reached on its socket."""


def say(action: str, message: str) -> None:
    print(f"keeptime criu-hook: {action}: {message}", file=sys.stderr, flush=True)


# -- forwarding to keeptimed -------------------------------------------------------

def forward(action: str, environ: Mapping[str, str], config: hookconfig.HookConfig,
            timeout: float = DEFAULT_TIMEOUT) -> tuple[int, str]:
    """Send the step to keeptimed as the native hook does; (exit status, its lines)."""
    fields, fds = {"action": action}, []
    names = []

    def attach(name: str, opener) -> None:
        try:
            fds.append(opener())
            names.append(name)
        except OSError as exc:
            fields[f"{name}_errno"] = str(exc.errno or errno.EINVAL)

    try:
        if INIT_PID_ENV in environ:
            fields["init_pid"] = text = environ[INIT_PID_ENV]
            attach("pidfd", lambda: os.pidfd_open(_pid(text)))
        if IMAGE_DIR_ENV in environ:
            fields["image_dir"] = path = environ[IMAGE_DIR_ENV]
            attach("image_dir", lambda: os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
        path, named = hookconfig.config_path(environ)
        fields["config"] = path
        if named:
            fields["config_named"] = "1"
        attach("config", lambda: os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY))
        fields["fds"] = ",".join(names)
        if action == hookwire.ANSWERED_EARLY:
            fields["answer"] = "early"
        with socket_mod.socket(socket_mod.AF_UNIX, socket_mod.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            try:
                sock.connect(config.socket)
            except OSError as exc:
                raise Unreachable(f"keeptimed is unreachable at {config.socket}: {exc.strerror}") from None
            socket_mod.send_fds(sock, [hookwire.encode_request(fields)], fds)
            try:
                return hookwire.read_reply(sock)
            except (OSError, hookwire.WireError) as exc:
                raise HookError(f"no answer from keeptimed at {config.socket}: {exc}") from None
    finally:
        for fd in fds:
            os.close(fd)


def _check_environment(action: str, environ: Mapping[str, str]) -> None:
    """What CRIU always sets must be there: otherwise this is not CRIU calling."""
    if not environ.get(IMAGE_DIR_ENV):
        raise HookError(f"{IMAGE_DIR_ENV} is not set; CRIU always sets it", EXIT_USAGE)
    text = environ.get(INIT_PID_ENV, "")
    if action != "pre-restore" and not (text.isdigit() and 0 < int(text) < 2**31):
        raise HookError(f"{INIT_PID_ENV} must be the root pid CRIU sets at {action}, got {text!r}", EXIT_USAGE)


def _pid(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 2**31:
        raise OSError(errno.EINVAL, "not a pid")
    return int(text)


# -- without keeptimed ----------------------------------------------------------------

def unreachable(action: str, environ: Mapping[str, str], config: hookconfig.HookConfig, why: str) -> int:
    """What a step does when keeptimed cannot be reached."""
    if action == "post-dump":
        return _record_locally(action, environ, why)
    if action == "pre-restore":
        if config.policy == "freeze":
            with _dump_dir(action, environ) as dump:
                if not dump.put_back_original(dump.dumped()):
                    say(action, f"freeze: {dump.timens_name()} left as CRIU wrote it")
            return EXIT_OK
        if config.on_daemon_unreachable == hookconfig.WARN:
            say(action, f"WARNING: {why}; letting CRIU restore the dumped clocks (freeze), so BOOTTIME does not "
                        f"count the downtime")
            with _dump_dir(action, environ) as dump:
                dump.put_back_original(dump.dumped())
            return EXIT_OK
        raise HookError(f"{why}; failing the restore rather than restoring without {config.policy} "
                        f"(on_daemon_unreachable = \"warn\" in {config.source} lets CRIU freeze instead)")
    # post-restore, post-resume: nothing can verify the restored clocks
    if action == "post-restore" and config.on_daemon_unreachable == hookconfig.FAIL and config.fail_on_unverified:
        raise HookError(f"UNVERIFIED restore: {why}; failing it (on_daemon_unreachable = \"warn\" or "
                        f"fail_on_unverified = false in {config.source} lets it go on unverified)")
    say(action, f"WARNING: UNVERIFIED restore: {why}")
    return EXIT_OK


def _dump_dir(action: str, environ: Mapping[str, str]) -> DumpDir:
    """The image directory CRIU named, closed when used as a context manager."""
    path = environ.get(IMAGE_DIR_ENV)
    if not path:
        raise HookError(f"{IMAGE_DIR_ENV} is not set; CRIU always sets it", EXIT_USAGE)
    try:
        return DumpDir(ImageDir(path), lambda message: say(action, message))
    except OSError as exc:
        raise HookError(f"cannot open the image directory {path}: {exc.strerror}") from None


def _record_locally(action: str, environ: Mapping[str, str], why: str) -> int:
    """Write keeptime-record.bin from the time namespace image, as keeptimed's
    CheckpointCriuImage would; keeptimed imports it at restore."""
    pid = int(environ[INIT_PID_ENV])
    with _dump_dir(action, environ) as dump:
        name = dump.timens_name()
        data = dump.read_timens()
        if data is None:
            raise HookError(f"cannot record the dumped clocks: {why}, and the image directory has no {name}")
        try:
            clocks = image.decode_timens(data, name)
        except image.ImageError as exc:
            raise HookError(f"cannot record the dumped clocks without keeptimed: {exc}") from None
        dump.forget_original()
        host_mono = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        host_boot = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        realtime = time.clock_gettime_ns(time.CLOCK_REALTIME)
        labels = {"criu": "post-dump", IMAGE_DIGEST_LABEL: digest(data), "recorded_by": "criu-hook"}
        record = pb.Record(id=new_record_id(), root_pid=pid, realtime_ns=realtime,
                           hostname=socket_mod.gethostname(), labels=labels, source="criu-image")
        record.clocks.monotonic_ns, record.clocks.boottime_ns = clocks.monotonic_ns, clocks.boottime_ns
        # Our clocks are the host's only in the initial time namespace. Elsewhere
        # leave boot_id empty, so a restore measures the downtime with CLOCK_REALTIME.
        if os.stat("/proc/self/ns/time").st_ino == INITIAL_TIMENS_INODE:
            with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
                record.boot_id = f.read().strip()
            record.host_clocks.monotonic_ns, record.host_clocks.boottime_ns = host_mono, host_boot
        dump.write_record(encode_record(record))
    say(action, f"recorded {record.id} from {name}, without keeptimed ({why}) into {RECORD_FILE}; "
                f"it is imported at restore")
    return EXIT_OK


# -- the entry point ---------------------------------------------------------------

def main(environ: Optional[Mapping[str, str]] = None, socket: Optional[str] = None,
         timeout: float = DEFAULT_TIMEOUT) -> int:
    """Run the step CRIU asks for; returns the exit status."""
    environ = os.environ if environ is None else environ
    action = environ.get(ACTION_ENV, "")
    if not action:
        print(f"keeptime criu-hook: {ACTION_ENV} is not set: this is a CRIU action script, run by CRIU "
              f"(action-script in /etc/criu/default.conf), not by hand", file=sys.stderr)
        return EXIT_USAGE
    if action not in hookwire.ACTIONS:
        return EXIT_OK   # a step keeptime does not use (CRIU adds new ones now and then)
    config = hookconfig.HookConfig()
    try:
        config = hookconfig.load(environ, socket)
        _check_environment(action, environ)
        try:
            code, message = forward(action, environ, config, timeout)
        except Unreachable as exc:
            return unreachable(action, environ, config, str(exc))
        sys.stderr.write(message)
        return code
    except hookconfig.ConfigError as exc:
        say(action, str(exc))
        return EXIT_USAGE
    except HookError as exc:
        if action == "post-dump" and config.policy == "freeze":
            say(action, f"WARNING: no keeptime record for this dump ({exc}); policy freeze does not need one")
            return EXIT_OK
        say(action, str(exc))
        return exc.code
    except (ImageFileError, OSError) as exc:
        say(action, str(exc) if isinstance(exc, ImageFileError) else
            f"{str(exc.filename) + ': ' if exc.filename else ''}{exc.strerror or exc}")
        return EXIT_FAILED
