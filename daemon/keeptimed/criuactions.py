"""What keeptimed does at each CRIU step the hook forwards.

    post-dump      record the dumped tree's clocks (its own reading, or CRIU's
                   time namespace image when the tree cannot be read) into
                   keeptime-record.bin in the image directory
    pre-restore    rewrite the time namespace image so CRIU's own time
                   namespace step resumes the tree under the policy
    post-restore,  verify that no clock of the restored tree is below its
    post-resume    dumped value and store the verdict; post-resume (after CRIU
                   closed the image directory) continues from what
                   post-restore knew

The hook passed descriptors opened with its own privileges in CRIU's
namespaces: a pidfd of CRTOOLS_INIT_PID (so the pid means CRIU's process,
whatever pid namespace CRIU runs in), the image directory and the
configuration file. Every file in the image directory goes through
keeptime.criu.dumpdir, which trusts nothing the directory holds.
"""
import errno
import signal
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Optional

from keeptime.criu import dumpdir, hookconfig
from keeptime.criu.dumpdir import DumpDir, IMAGE_DIGEST_LABEL
from keeptime.criu.image import ImageError, decode_timens
from keeptime.criu.imagedir import ImageDir, ImageFileError
from keeptime.timefmt import format_duration, format_ns
from keeptime.v1 import keeptime_pb2 as pb

from . import checkpoint, criu, procfs, recordfile, verify
from .access import Access, Caller
from .errors import DataLoss, FailedPrecondition, InvalidArgument, KeeptimeError, NotFound
from .hostclock import HostClock
from .pidns import Target
from .policies import FREEZE, Clocks
from .restores import Restores
from .store import RecordStore
from .wire import checkpointed

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
POST_RESTORE, POST_RESUME = "post-restore", "post-resume"
RESUME_MEMORY = 1024          # post-restore verdicts kept for post-resume
RESUME_MEMORY_SECONDS = 600.0


class StepFailed(Exception):
    """The step cannot be done; code is the hook's exit status."""

    def __init__(self, message: str, code: int = EXIT_FAILED):
        super().__init__(message)
        self.code = code


@dataclass
class Step:
    """One forwarded CRIU step: what the hook sent, and what to say back."""

    action: str
    caller: Caller
    config: hookconfig.HookConfig
    init_pid: str = ""                      # CRTOOLS_INIT_PID as CRIU set it
    pidfd: Optional[int] = None
    pidfd_error: int = 0                    # errno of the hook's pidfd_open, when it failed
    images: Optional[ImageDir] = None
    image_dir: str = ""                     # CRTOOLS_IMAGE_DIR as CRIU set it
    image_dir_error: str = ""               # why the hook could not open it
    lines: list[str] = field(default_factory=list)

    def say(self, message: str) -> None:
        self.lines.append(message)

    def root(self) -> Target:
        """CRTOOLS_INIT_PID's process: the pid CRIU knows it by, and keeptimed's
        (the hook's pidfd names it, whatever pid namespace CRIU runs in)."""
        if self.pidfd is None and self.pidfd_error == errno.ESRCH:
            raise NotFound(f"no process with pid {self.init_pid}")
        if self.pidfd is None:
            raise StepFailed(f"CRTOOLS_INIT_PID must be the root pid CRIU sets at {self.action}, got "
                             f"{self.init_pid!r}", EXIT_USAGE)
        if not self.init_pid.isdigit() or not 0 < int(self.init_pid) < 2**31:
            raise StepFailed(f"CRTOOLS_INIT_PID must be the root pid CRIU sets at {self.action}, got "
                             f"{self.init_pid!r}", EXIT_USAGE)
        try:
            return Target(int(self.init_pid), procfs.pid_of_pidfd(self.pidfd))
        except ProcessLookupError:
            raise NotFound(f"pid {self.init_pid} has exited") from None
        except ValueError:
            raise StepFailed("the descriptor sent as the pidfd of CRTOOLS_INIT_PID is not a pidfd",
                             EXIT_USAGE) from None

    def still_alive(self) -> bool:
        """Whether the pidfd's process lives: then the pid read earlier was still its own."""
        try:
            signal.pidfd_send_signal(self.pidfd, 0)
        except ProcessLookupError:
            return False
        except PermissionError:   # alive, but not ours to signal
            return True
        return True

    def dump_dir(self) -> DumpDir:
        if self.images is None and not self.image_dir:
            raise StepFailed("CRTOOLS_IMAGE_DIR is not set; CRIU always sets it", EXIT_USAGE)
        if self.images is None:
            why = f": {self.image_dir_error}" if self.image_dir_error else ""
            raise StepFailed(f"cannot open the image directory {self.image_dir}{why}")
        return DumpDir(self.images, self.say)


@dataclass(frozen=True)
class _Basis:
    """What a restore is verified against."""

    record_id: str
    dumped: Clocks
    record: Optional[pb.Record]
    policy: str


class CriuActions:
    """The work behind each forwarded step."""

    def __init__(self, store: RecordStore, host: HostClock, access: Access, restores: Restores):
        self.store = store
        self.host = host
        self.access = access
        self.restores = restores
        # post-restore's basis, for post-resume: (caller's uid and pid namespace,
        # keeptimed's pid and start time of the restored root) -> basis
        self._resume: "OrderedDict[tuple, tuple[float, _Basis]]" = OrderedDict()
        self._lock = threading.Lock()

    def run(self, step: Step) -> int:
        """Do step; returns the exit status (messages are in step.lines)."""
        handler = {"post-dump": self.post_dump, "pre-restore": self.pre_restore,
                   POST_RESTORE: self.verify, POST_RESUME: self.verify}.get(step.action)
        if handler is None:
            return EXIT_OK   # a step keeptime does not use
        try:
            return handler(step)
        except StepFailed as exc:
            step.say(str(exc))
            return exc.code
        except (ImageFileError, KeeptimeError) as exc:
            step.say(exc.message if isinstance(exc, KeeptimeError) else str(exc))
            return EXIT_FAILED
        except OSError as exc:   # the image directory refused a write (EACCES, ENOSPC, ...)
            step.say(f"{str(exc.filename) + ': ' if exc.filename else ''}{exc.strerror or exc}")
            return EXIT_FAILED

    # -- post-dump -------------------------------------------------------------------

    def post_dump(self, step: Step) -> int:
        """Write keeptime-record.bin: the dumped tree's record."""
        try:
            return self._post_dump(step)
        except (StepFailed, ImageFileError, KeeptimeError) as exc:
            if step.config.policy != FREEZE:
                raise
            # freeze restores what CRIU dumped and needs no record: never fail the dump for it.
            message = exc.message if isinstance(exc, KeeptimeError) else str(exc)
            step.say(f"WARNING: no keeptime record for this dump ({message}); policy freeze does not need one")
            return EXIT_OK

    def _post_dump(self, step: Step) -> int:
        dump = step.dump_dir()
        name = dump.timens_name()
        timens = dump.read_timens()
        labels = {"criu": "post-dump"}
        if timens is not None:
            labels[IMAGE_DIGEST_LABEL] = dumpdir.digest(timens)
        # An original kept by a restore from an earlier dump here belongs to that dump.
        dump.forget_original()
        try:
            record = self._checkpoint(step, step.root(), labels)
            how = f"from pid {step.init_pid}'s tree"
        except KeeptimeError as exc:   # the tree is gone or unreadable: CRIU's own reading will do
            if timens is None:
                raise StepFailed(f"cannot record the dumped clocks: {exc.message}, and the image directory "
                                 f"has no {name}") from None
            record = criu.record_from_image(timens, int(step.init_pid), self.host, labels)
            self.store.add(record, step.caller.owner_uid)
            how = f"from {name} (pid {step.init_pid}: {exc.message})"
        dump.write_record(recordfile.encode(record))
        step.say(f"recorded {record.id} {how} into {dumpdir.RECORD_FILE}")
        return EXIT_OK

    def _checkpoint(self, step: Step, root: Target, labels: dict) -> pb.Record:
        """A checkpoint of the tree, its pids as CRIU knows them, stored for the caller."""
        self.access.check_owns(step.caller, {root.host_pid: root.pid})
        tree = checkpoint.checkpoint(root, self.host, labels, self.access.pids(step.caller))
        if not step.still_alive():
            raise NotFound(f"pid {step.init_pid} exited during the checkpoint")
        self.access.check_owns(step.caller, dict(zip(tree.host_pids, (p.pid for p in tree.record.processes))))
        self.store.add(tree.record, step.caller.owner_uid)
        return tree.record

    # -- pre-restore -----------------------------------------------------------------

    def pre_restore(self, step: Step) -> int:
        """Rewrite the time namespace image to the policy's targets (from CRIU's original, every time)."""
        policy = step.config.policy
        dump = step.dump_dir()
        dumped = dump.dumped()
        if policy == FREEZE:
            if not dump.put_back_original(dumped):
                step.say(f"freeze: {dumped.name} left as CRIU wrote it")
            return EXIT_OK
        if dumped.as_dumped is None:
            raise StepFailed(
                f"the image directory has no {dumped.name}: this dump carries no clocks for CRIU to restore "
                f"(a kernel without time namespaces, or CRIU before 3.14), so {policy} cannot be applied; "
                f"restore it with `keeptime restore --criu-images DIR -- criu restore --unprivileged ...` instead"
            )
        record_file = dump.read_record()
        if record_file is None:
            raise StepFailed(
                f"the image directory has no {dumpdir.RECORD_FILE} (dumped without the keeptime hook?), so "
                f"{policy} cannot be applied; to restore it as CRIU would, use policy = \"freeze\" in a file "
                f"named by {hookconfig.CONFIG_ENV}"
            )
        record = _parse_record(record_file)
        try:
            decode_timens(dumped.as_dumped, dumped.name)
        except ImageError as exc:
            raise StepFailed(f"DATA_LOSS: {exc}") from None
        expected = record.labels.get(IMAGE_DIGEST_LABEL)
        if expected and dumpdir.digest(dumped.as_dumped) != expected:
            raise StepFailed(
                f"{dumped.name} is not the one record {record.id} was taken with (dumped again without the "
                f"keeptime hook?); refusing to plan {policy} from another dump's record"
            )
        self.store.add(record, step.caller.owner_uid)
        planned, plan = criu.plan_image(checkpointed(record), dumped.as_dumped, policy, self.host.now(),
                                        dumped.name)
        dump.rewrite(dumped, planned)
        step.say(
            f"{policy}: {dumped.name} now resumes MONOTONIC at {format_ns(plan.targets.monotonic_ns)} "
            f"(+{format_duration(plan.targets.monotonic_ns - plan.recorded.monotonic_ns)}) and BOOTTIME at "
            f"{format_ns(plan.targets.boottime_ns)} "
            f"(+{format_duration(plan.targets.boottime_ns - plan.recorded.boottime_ns)}); record {record.id}, "
            f"downtime {format_duration(plan.downtime_ns)}"
        )
        return EXIT_OK

    # -- post-restore, post-resume -----------------------------------------------------

    def verify(self, step: Step) -> int:
        """Verify the restored tree's clocks against the dump; store the verdict."""
        owner = step.caller.owner_uid
        basis = None
        try:
            root = step.root()
            # A post-resume goes on only from its own caller's post-restore.
            identity = (step.caller.uid, step.caller.pidns, root.host_pid,
                        procfs.read_stat(root.host_pid).start_time_ticks)
            basis = self._basis(step, identity)
            tree = verify.restored_tree(root, self.host, self.access.pids(step.caller))
            if not step.still_alive():
                raise NotFound(f"pid {step.init_pid} exited while being verified")
            self.access.check_owns(step.caller, dict(zip(tree.host_pids, (p.pid for p in tree.record.processes))))
        except (StepFailed, ImageFileError, KeeptimeError, ProcessLookupError) as exc:
            why = exc.message if isinstance(exc, KeeptimeError) else str(exc) or f"pid {step.init_pid} has exited"
            if isinstance(exc, StepFailed) and exc.code == EXIT_USAGE:
                raise
            self.restores.unverified(basis.record_id if basis else "", _int_or_zero(step.init_pid),
                                     basis.policy if basis else None, step.action, why, owner)
            return self._unverified(step, why)
        if step.action == POST_RESTORE:
            self._remember(identity, basis)
        event = self.restores.verified(tree.record, basis.record_id, basis.dumped, basis.record, basis.policy,
                                       step.action, owner)
        if event.ok:
            step.say(f"pid {step.init_pid}: {event.message}")
            return EXIT_OK
        step.say(f"CLOCK REGRESSION in restored pid {step.init_pid} (record {basis.record_id or '(none)'}): "
                 f"{event.message}")
        return EXIT_FAILED if step.action == POST_RESTORE and step.config.fail_on_regression else EXIT_OK

    def _unverified(self, step: Step, why: str) -> int:
        if step.action == POST_RESTORE and step.config.fail_on_unverified:
            step.say(f"UNVERIFIED restore of pid {step.init_pid}: {why}; failing it (fail_on_unverified = "
                     f"false in {step.config.source} lets such restores go on)")
            return EXIT_FAILED
        step.say(f"WARNING: UNVERIFIED restore of pid {step.init_pid}: {why}")
        return EXIT_OK

    def _basis(self, step: Step, identity: tuple) -> _Basis:
        """What to verify against: the image directory's dump, or (at
        post-resume, once CRIU has closed the directory) what post-restore used."""
        if step.images is None and step.action == POST_RESUME:
            basis = self._remembered(identity)
            if basis is None:
                raise StepFailed(f"the image directory is closed at post-resume and keeptimed has no "
                                 f"post-restore verdict for pid {step.init_pid} to continue from")
            return basis
        dump = step.dump_dir()
        dumped = dump.dumped()
        record = self._own(step, self._record_for(step, dump.read_record(), dumped))
        if dumped.as_dumped is not None:
            clocks = criu.timens_clocks(dumped.as_dumped, dumped.name)
        elif record is not None:
            clocks = Clocks(record.clocks.monotonic_ns, record.clocks.boottime_ns)
        else:
            raise StepFailed(f"the image directory has neither {dumped.name} nor {dumpdir.RECORD_FILE}: "
                             f"nothing to verify against")
        # What the restore did: the configured policy if pre-restore rewrote the image.
        policy = step.config.policy if dumped.rewritten else FREEZE
        return _Basis(record.id if record else "", clocks, record, policy)

    @staticmethod
    def _record_for(step: Step, record_file: Optional[bytes], dumped: dumpdir.Dumped) -> Optional[pb.Record]:
        """The dump's record, if the directory holds a sound one of this dump.
        The image alone is enough to verify against, so a record that is
        damaged or of another dump is only reported."""
        if record_file is None:
            return None
        try:
            record = _parse_record(record_file)
        except StepFailed as exc:
            if dumped.as_dumped is None:
                raise
            step.say(f"{exc}: verifying against {dumped.name} alone")
            return None
        expected = record.labels.get(IMAGE_DIGEST_LABEL)
        if dumped.as_dumped is not None and expected and dumpdir.digest(dumped.as_dumped) != expected:
            step.say(f"{dumpdir.RECORD_FILE} belongs to another dump: verifying against {dumped.name} alone")
            return None
        return record

    def _own(self, step: Step, record: Optional[pb.Record]) -> Optional[pb.Record]:
        """record, if the caller may have a verdict kept under its id: root
        always; another caller only for a record it holds (pre-restore stored
        it). Otherwise the image alone is verified against, under no record id."""
        if record is None or step.caller.privileged:
            return record
        try:
            self.store.get(record.id, step.caller.uid)
        except NotFound:
            step.say(f"{dumpdir.RECORD_FILE} names record {record.id}, which uid {step.caller.uid} does not "
                     f"hold (no pre-restore?): verifying against the image alone")
            return None
        return record

    def _remember(self, identity: tuple, basis: _Basis) -> None:
        with self._lock:
            self._resume[identity] = (time.monotonic() + RESUME_MEMORY_SECONDS, basis)
            self._resume.move_to_end(identity)
            while len(self._resume) > RESUME_MEMORY:
                self._resume.popitem(last=False)

    def _remembered(self, identity: tuple) -> Optional[_Basis]:
        with self._lock:
            expires, basis = self._resume.get(identity, (0.0, None))
        return basis if expires > time.monotonic() else None


def _parse_record(data: bytes) -> pb.Record:
    """The record in keeptime-record.bin; damage fails the step as DATA_LOSS."""
    try:
        return recordfile.accept(data)
    except DataLoss as exc:
        raise StepFailed(f"DATA_LOSS: {dumpdir.RECORD_FILE}: {exc.message}") from None
    except (FailedPrecondition, InvalidArgument) as exc:
        raise StepFailed(f"{dumpdir.RECORD_FILE}: {exc.message}") from None


def _int_or_zero(text: str) -> int:
    return int(text) if text.isdigit() and len(text) < 10 else 0
