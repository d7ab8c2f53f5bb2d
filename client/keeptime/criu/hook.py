"""keeptime's CRIU action script: ``keeptime criu-hook`` (installed as
/usr/libexec/keeptime/criu-hook, named by ``action-script`` in CRIU's config).

CRIU runs it at each step with CRTOOLS_SCRIPT_ACTION, CRTOOLS_IMAGE_DIR (a
/proc/<criu>/fd/N path) and, except at pre-restore, CRTOOLS_INIT_PID:

    post-dump      record the dumped tree's clocks (through keeptimed, or from
                   timens-0.img without it) into keeptime-record.bin
    pre-restore    rewrite timens-0.img so CRIU's own time namespace step
                   resumes the tree under the policy; the original is kept as
                   timens-0.img.orig and every later restore starts from it
                   (timens-0.img.keeptime-sha256 tells keeptime's rewrite from
                   an image CRIU wrote again since)
    post-restore,  have keeptimed verify that the restored tree's clocks are not
    post-resume    below the dumped ones, and store the verdict

Every other action is ignored. Exit status: 0 ok, 1 the step failed (CRIU
aborts a dump or restore on a failing post-dump, pre-restore or
post-restore), 2 not run by CRIU or misconfigured.
"""
import hashlib
import os
import socket as socket_mod
import sys
import time
from typing import Mapping, Optional

from .. import errors
from ..client import DEFAULT_TIMEOUT, Client
from ..recordfile import RecordFileError, new_record_id, parse
from ..recordfile import encode as encode_record
from ..timefmt import format_duration, format_ns
from ..v1 import keeptime_pb2 as pb
from . import hookconfig, image
from .imagedir import ImageDir

ACTION_ENV = "CRTOOLS_SCRIPT_ACTION"
IMAGE_DIR_ENV = "CRTOOLS_IMAGE_DIR"
INIT_PID_ENV = "CRTOOLS_INIT_PID"
RECORD_FILE = "keeptime-record.bin"
TIMENS_IMAGE = image.TIMENS_IMAGE
ORIGINAL_IMAGE = TIMENS_IMAGE + ".orig"
# The record's label naming the timens-0.img it was taken with (sha256, hex),
# so a restore never plans from an image of another dump.
IMAGE_DIGEST_LABEL = "criu-timens-sha256"
# The sha256 of the timens-0.img keeptime last wrote: any other content there
# was written by CRIU, so an original kept beside it is stale.
WRITTEN_DIGEST = TIMENS_IMAGE + ".keeptime-sha256"
# Every action CRIU knows; those without a handler below need nothing from keeptime.
CRIU_ACTIONS = (
    "pre-stream", "pre-dump", "post-dump", "pre-restore", "post-restore", "network-lock",
    "network-unlock", "setup-namespaces", "post-setup-namespaces", "pre-resume", "post-resume",
    "orphan-pts-master", "status-ready", "query-ext-files",
)
INITIAL_TIMENS_INODE = 0xEFFFFFFA  # the kernel's PROC_TIME_INIT_INO
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class HookError(Exception):
    """The step cannot be done; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_FAILED):
        super().__init__(message)
        self.code = code


class Run:
    """One invocation: the action, its environment and the configuration."""

    def __init__(self, action: str, environ: Mapping[str, str], config: hookconfig.HookConfig,
                 timeout: float = DEFAULT_TIMEOUT):
        self.action = action
        self.environ = environ
        self.config = config
        self.timeout = timeout

    def say(self, message: str) -> None:
        print(f"keeptime criu-hook: {self.action}: {message}", file=sys.stderr, flush=True)

    def image_dir(self) -> ImageDir:
        path = self.environ.get(IMAGE_DIR_ENV)
        if not path:
            raise HookError(f"{IMAGE_DIR_ENV} is not set; CRIU always sets it", EXIT_USAGE)
        try:
            return ImageDir(path)
        except OSError as exc:
            raise HookError(f"cannot open the image directory {path}: {exc.strerror}") from None

    def init_pid(self) -> int:
        text = self.environ.get(INIT_PID_ENV, "")
        if not text.isdigit() or int(text) <= 0:
            raise HookError(f"{INIT_PID_ENV} must be the root pid CRIU sets at {self.action}, got {text!r}",
                            EXIT_USAGE)
        return int(text)

    def client(self) -> Client:
        return Client(socket=self.config.socket, timeout=self.timeout)


# -- post-dump -------------------------------------------------------------------

def post_dump(run: Run) -> int:
    """Write keeptime-record.bin: the dumped tree's record, never lost."""
    pid = run.init_pid()
    labels = {"criu": "post-dump"}
    with run.image_dir() as images:
        timens = images.read(TIMENS_IMAGE)
        if timens is not None:
            labels[IMAGE_DIGEST_LABEL] = _digest(timens)
        # An original kept by a restore from an earlier dump in this directory
        # belongs to that dump, not to this one.
        images.remove(ORIGINAL_IMAGE)
        images.remove(WRITTEN_DIGEST)
        try:
            with run.client() as kt:
                try:
                    record = kt.checkpoint_record(pid, labels)
                    how = f"from pid {pid}'s tree"
                except errors.Unavailable:
                    raise
                except errors.KeeptimeError as exc:
                    # The tree is gone or unreadable: CRIU's own reading of its clocks will do.
                    record = kt.checkpoint_criu_image(_timens_image(images, f"{exc.message}, and"), pid, labels)
                    how = f"from {TIMENS_IMAGE} (pid {pid}: {exc.message})"
                data = kt.export_record(record.id)
        except errors.Unavailable as exc:
            data, record = _record_locally(images, pid, labels, str(exc))
            how = f"from {TIMENS_IMAGE}, without keeptimed (unreachable); it is imported at restore"
        images.write_atomic(RECORD_FILE, data)
    run.say(f"recorded {record.id} {how} into {RECORD_FILE}")
    return EXIT_OK


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _timens_image(images: ImageDir, why: str) -> bytes:
    data = images.read(TIMENS_IMAGE)
    if data is None:
        raise HookError(f"cannot record the dumped clocks: {why} the image directory has no {TIMENS_IMAGE}")
    return data


def _record_locally(images: ImageDir, pid: int, labels: dict, why: str) -> tuple[bytes, pb.Record]:
    """A record built here from timens-0.img, as keeptimed's CheckpointCriuImage would."""
    data = _timens_image(images, f"keeptimed is unreachable ({why}) and")
    try:
        clocks = image.decode_timens(data)
    except image.ImageError as exc:
        raise HookError(f"cannot record the dumped clocks without keeptimed: {exc}") from None
    if clocks.boottime_ns < clocks.monotonic_ns:
        raise HookError(f"cannot record the dumped clocks: {TIMENS_IMAGE} has BOOTTIME below MONOTONIC")
    host_mono = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    host_boot = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    realtime = time.clock_gettime_ns(time.CLOCK_REALTIME)
    record = pb.Record(
        id=new_record_id(), root_pid=pid, realtime_ns=realtime, hostname=socket_mod.gethostname(),
        labels=dict(labels, recorded_by="criu-hook"), source="criu-image",
    )
    record.clocks.monotonic_ns, record.clocks.boottime_ns = clocks.monotonic_ns, clocks.boottime_ns
    # Our clocks are the host's only in the initial time namespace. Elsewhere
    # leave boot_id empty, so a restore measures the downtime with CLOCK_REALTIME.
    if os.stat("/proc/self/ns/time").st_ino == INITIAL_TIMENS_INODE:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            record.boot_id = f.read().strip()
        record.host_clocks.monotonic_ns, record.host_clocks.boottime_ns = host_mono, host_boot
    return encode_record(record), record


# -- pre-restore -----------------------------------------------------------------

def pre_restore(run: Run) -> int:
    """Rewrite timens-0.img to the policy's targets (from the original, every time)."""
    policy = run.config.policy
    with run.image_dir() as images:
        original, current = _dumped_images(run, images)
        if policy == "freeze":
            if not _put_back_original(run, images, original, current):
                run.say(f"freeze: {TIMENS_IMAGE} left as CRIU wrote it")
            return EXIT_OK
        dumped = original if original is not None else current
        if dumped is None:
            raise HookError(
                f"the image directory has no {TIMENS_IMAGE}: CRIU will not give the restored tree a time "
                f"namespace of its own; restore it with `keeptime restore --criu-images DIR -- criu restore "
                f"--unprivileged ...` instead"
            )
        record_file = images.read(RECORD_FILE)
        if record_file is None:
            raise HookError(
                f"the image directory has no {RECORD_FILE} (dumped without the keeptime hook?), so {policy} "
                f"cannot be applied; to restore it as CRIU would, use policy = \"freeze\" in a file named by "
                f"{hookconfig.CONFIG_ENV}"
            )
        record = _parse_record(record_file)
        try:
            image.decode_timens(dumped)
        except image.ImageError as exc:
            raise HookError(f"DATA_LOSS: {exc}") from None
        expected = record.labels.get(IMAGE_DIGEST_LABEL)
        if expected and _digest(dumped) != expected:
            raise HookError(
                f"{TIMENS_IMAGE} is not the one record {record.id} was taken with (dumped again without the "
                f"keeptime hook?); refusing to plan {policy} from another dump's record"
            )
        try:
            with run.client() as kt:
                kt.import_record(record_file)
                planned = kt.plan_criu_restore(dumped, record_id=record.id, policy=policy)
        except errors.Unavailable as exc:
            if run.config.on_daemon_unreachable == hookconfig.WARN:
                run.say(f"WARNING: {exc.message}; letting CRIU restore the dumped clocks (freeze), "
                        f"so BOOTTIME does not count the downtime")
                _put_back_original(run, images, original, current)
                return EXIT_OK
            raise HookError(
                f"{exc.message}; failing the restore rather than restoring without {policy} "
                f"(on_daemon_unreachable = \"warn\" in {run.config.source} lets CRIU freeze instead)"
            ) from None
        mode = images.mode_of(TIMENS_IMAGE)
        if original is None:
            images.write_atomic(ORIGINAL_IMAGE, current, mode)
        if planned.timens_image != current:
            # The digest goes first: a crash in between can only make a later
            # restore take this image for CRIU's and plan from values that are
            # too high, never too low.
            images.write_atomic(WRITTEN_DIGEST, _digest(planned.timens_image).encode() + b"\n", mode)
            images.write_atomic(TIMENS_IMAGE, planned.timens_image, mode)
    plan = planned.plan
    run.say(
        f"{policy}: {TIMENS_IMAGE} now resumes MONOTONIC at {format_ns(plan.targets.monotonic_ns)} "
        f"(+{format_duration(plan.targets.monotonic_ns - plan.recorded.monotonic_ns)}) and BOOTTIME at "
        f"{format_ns(plan.targets.boottime_ns)} (+{format_duration(plan.targets.boottime_ns - plan.recorded.boottime_ns)}); "
        f"record {plan.record_id}, downtime {format_duration(plan.downtime_ns)}"
    )
    return EXIT_OK


def _parse_record(data: bytes) -> pb.Record:
    """The record in keeptime-record.bin; damage is a DATA_LOSS HookError."""
    try:
        return parse(data)
    except RecordFileError as exc:
        if exc.newer_version is not None:
            raise HookError(f"{RECORD_FILE}: {exc}; upgrade keeptime") from None
        raise HookError(f"DATA_LOSS: {RECORD_FILE}: {exc}") from None


def _dumped_images(run: Run, images: ImageDir) -> tuple[Optional[bytes], Optional[bytes]]:
    """(timens-0.img.orig, timens-0.img). When CRIU wrote timens-0.img after
    keeptime last rewrote it (a new dump without the hook), the original
    belongs to the old dump: it is deleted and comes back as None."""
    original = images.read(ORIGINAL_IMAGE)
    current = images.read(TIMENS_IMAGE)
    if original is None or current == original:
        return original, current
    written = (images.read(WRITTEN_DIGEST) or b"").decode("ascii", "replace").strip()
    if current is not None and _digest(current) == written:
        return original, current
    images.remove(ORIGINAL_IMAGE)
    images.remove(WRITTEN_DIGEST)
    run.say(f"removed a stale {ORIGINAL_IMAGE}: CRIU wrote {TIMENS_IMAGE} again since keeptime rewrote it")
    return None, current


def _put_back_original(run: Run, images: ImageDir, original: Optional[bytes], current: Optional[bytes]) -> bool:
    """Leave CRIU its own image: the original, if an earlier restore rewrote it."""
    if original is None or original == current:
        return False
    images.write_atomic(TIMENS_IMAGE, original, images.mode_of(TIMENS_IMAGE))
    run.say(f"put CRIU's original {TIMENS_IMAGE} back: the dumped clocks resume as they were")
    return True


# -- post-restore, post-resume -----------------------------------------------------

def verify(run: Run) -> int:
    """Have keeptimed verify the restored root's clocks; loud on regression."""
    pid = run.init_pid()
    with run.image_dir() as images:
        record_file = images.read(RECORD_FILE)
        if record_file is None:
            run.say(f"no {RECORD_FILE} in the image directory: nothing to verify against")
            return EXIT_OK
        original, current = _dumped_images(run, images)
    dumped = original if original is not None else current
    # What the restore did: the configured policy if pre-restore rewrote the image.
    policy = run.config.policy if original is not None and original != current else "freeze"
    try:
        with run.client() as kt:
            event = kt.verify_restore(pid, record_file=record_file, policy=policy, timens_image=dumped,
                                      stage=run.action)
    except errors.KeeptimeError as exc:
        # Only a confirmed regression may fail the restore; anything else is reported.
        run.say(f"WARNING: could not verify restored pid {pid}: {exc}")
        return EXIT_OK
    if event.ok:
        run.say(f"pid {pid}: {event.message}")
        return EXIT_OK
    run.say(f"CLOCK REGRESSION in restored pid {pid} (record {event.record_id}): {event.message}")
    if run.action == "post-restore" and run.config.fail_on_regression:
        return EXIT_FAILED
    return EXIT_OK


HANDLERS = {"post-dump": post_dump, "pre-restore": pre_restore, "post-restore": verify, "post-resume": verify}


def main(environ: Optional[Mapping[str, str]] = None, socket: Optional[str] = None,
         timeout: float = DEFAULT_TIMEOUT) -> int:
    """Run the action CRIU asks for; returns the exit status."""
    environ = os.environ if environ is None else environ
    action = environ.get(ACTION_ENV, "")
    if not action:
        print(f"keeptime criu-hook: {ACTION_ENV} is not set: this is a CRIU action script, run by CRIU "
              f"(action-script in /etc/criu/default.conf), not by hand", file=sys.stderr)
        return EXIT_USAGE
    if action not in CRIU_ACTIONS:
        print(f"keeptime criu-hook: unknown CRIU action {action!r}", file=sys.stderr)
        return EXIT_USAGE
    if action not in HANDLERS:
        return EXIT_OK
    run = Run(action, environ, hookconfig.HookConfig(), timeout)
    try:
        run.config = hookconfig.load(environ, socket)
        return HANDLERS[action](run)
    except hookconfig.ConfigError as exc:
        run.say(str(exc))
        return EXIT_USAGE
    except HookError as exc:
        run.say(str(exc))
        return exc.code
    except errors.KeeptimeError as exc:
        run.say(str(exc))
        return EXIT_FAILED
    except OSError as exc:
        run.say(f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}")
        return EXIT_FAILED
