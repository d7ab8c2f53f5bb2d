"""The keeptime.v1.Keeptime gRPC service: requests in, domain calls, statuses out.

Handlers stay thin: validation and work live in the domain modules, which
raise KeeptimeError subclasses; the wrapper here turns those into gRPC
status codes with their one-line message and logs one line per call.
"""
import functools
import logging
import os
import threading
import time

import grpc

from keeptime.v1 import keeptime_pb2 as pb
from keeptime.v1 import keeptime_pb2_grpc as pb_grpc

from . import checkpoint, commands, criu, native, procfs, recordfile, timens, verify
from .access import Access, current_caller, reset_current_caller, set_current_caller
from .children import Children
from .errors import InvalidArgument, KeeptimeError, NotFound, ResourceExhausted
from .hostclock import HostClock
from .policies import Checkpointed, Clocks, RestorePlan, plan_restore
from .store import RecordStore

log = logging.getLogger("keeptimed.rpc")

POLICY_NAMES = {pb.POLICY_FREEZE: "freeze", pb.POLICY_SUSPEND: "suspend", pb.POLICY_ELAPSED: "elapsed"}
POLICY_ENUMS = {name: value for value, name in POLICY_NAMES.items()}
MECHANISM_ENUMS = {
    "clone3_timens_offset": pb.MECHANISM_CLONE3_TIMENS_OFFSET,
    "unshare_proc_offsets": pb.MECHANISM_UNSHARE_PROC_OFFSETS,
    "setns": pb.MECHANISM_SETNS,
}
MAX_STAGE_LENGTH = 64
DOWNTIME_SOURCES = {
    "same_boot": pb.DOWNTIME_SOURCE_SAME_BOOT,
    "realtime": pb.DOWNTIME_SOURCE_REALTIME,
    "realtime_clamped": pb.DOWNTIME_SOURCE_REALTIME_CLAMPED,
}


def rpc(method):
    """Identify the caller and apply the access policy, map domain errors to
    statuses, hide internal ones, log one line per call with the caller."""
    name = method.__name__

    @functools.wraps(method)
    def handler(self, request, context):
        started = time.monotonic()
        status = "OK"
        caller = token = None
        try:
            caller = self.access.identify(context)
            self.access.check_rpc(caller, name)
            token = set_current_caller(caller)
            return method(self, request, context)
        except KeeptimeError as exc:
            status = exc.status
            context.abort(grpc.StatusCode[exc.status], exc.message)
        except Exception:
            status = "INTERNAL"
            log.exception("%s failed", method.__name__)
            context.abort(grpc.StatusCode.INTERNAL, f"internal error in keeptimed during {method.__name__}; see its log")
        finally:
            if token is not None:
                reset_current_caller(token)
            log.info(
                "rpc=%s status=%s duration_ms=%.3f caller=%s",
                name, status, (time.monotonic() - started) * 1e3,
                caller.describe() if caller else f"unidentified peer={context.peer()}",
            )

    return handler


def _clock_values(clocks: Clocks) -> pb.ClockValues:
    return pb.ClockValues(monotonic_ns=clocks.monotonic_ns, boottime_ns=clocks.boottime_ns)


def _offsets(clocks: Clocks) -> pb.Offsets:
    return pb.Offsets(monotonic_ns=clocks.monotonic_ns, boottime_ns=clocks.boottime_ns)


def _positive_pid(pid: int) -> int:
    if pid <= 0:
        raise InvalidArgument(f"pid must be a positive integer, got {pid}")
    return pid


class KeeptimeService(pb_grpc.KeeptimeServicer):
    """The daemon's API; one instance serves every connection."""

    def __init__(self, store: RecordStore, host: HostClock, children: Children, access: Access,
                 default_policy: str = "suspend", max_waits: int = 16):
        self.store = store
        self.max_waits = max_waits
        self._wait_slots = threading.BoundedSemaphore(max_waits)
        self.host = host
        self.children = children
        self.access = access
        self.default_policy = default_policy

    # -- helpers -----------------------------------------------------------

    def _policy(self, value: int) -> str:
        if value == pb.POLICY_UNSPECIFIED:
            return self.default_policy
        if value not in POLICY_NAMES:
            raise InvalidArgument(f"unknown policy {value}; expected one of freeze, suspend, elapsed")
        return POLICY_NAMES[value]

    @staticmethod
    def _checkpointed(record: pb.Record) -> Checkpointed:
        return Checkpointed(
            clocks=Clocks(record.clocks.monotonic_ns, record.clocks.boottime_ns),
            realtime_ns=record.realtime_ns,
            host_boottime_ns=record.host_clocks.boottime_ns,
            boot_id=record.boot_id,
            hostname=record.hostname,
        )

    def _plan(self, record: pb.Record, policy_value: int) -> RestorePlan:
        return plan_restore(self._policy(policy_value), self._checkpointed(record), self.host.now())

    def _record(self, ref: pb.RecordRef) -> pb.Record:
        """The record a RecordRef names: from the store, or decoded from its bytes."""
        which = ref.WhichOneof("ref")
        if which == "record_id":
            return self.store.get(ref.record_id, self._owner())
        if which == "record_file":
            return recordfile.decode(ref.record_file)
        raise InvalidArgument("no record given: set record_id or record_file")

    @staticmethod
    def _plan_message(record_id: str, plan: RestorePlan) -> pb.Plan:
        return pb.Plan(
            record_id=record_id,
            policy=POLICY_ENUMS[plan.policy],
            recorded=_clock_values(plan.recorded),
            targets=_clock_values(plan.targets),
            offsets=_offsets(plan.offsets),
            host_clocks=_clock_values(plan.host.clocks),
            realtime_ns=plan.host.realtime_ns,
            downtime_ns=plan.downtime_ns,
            downtime_source=DOWNTIME_SOURCES[plan.downtime_source],
            same_boot=plan.same_boot,
            same_host=plan.same_host,
            explanation=plan.explanation,
        )

    # -- RPCs ----------------------------------------------------------------

    def _owner(self):
        """Whose records this call may see (None: all of them)."""
        return self.access.record_owner(current_caller())

    def _command_spec(self, command: pb.Command) -> "native.ExecSpec":
        """The validated program, confined to the caller's own identity where the policy says so."""
        return self.access.confine(
            current_caller(), commands.exec_spec(command),
            command.uid if command.HasField("uid") else None,
            command.gid if command.HasField("gid") else None,
        )

    @rpc
    def Checkpoint(self, request, context):
        caller = current_caller()
        pid = _positive_pid(request.pid)
        self.access.check_owns(caller, [pid])
        record = checkpoint.checkpoint(pid, self.host, dict(request.labels))
        self.access.check_owns(caller, [process.pid for process in record.processes])
        self.store.add(record, caller.owner_uid)
        log.info("checkpoint pid=%d record=%s processes=%d", request.pid, record.id, len(record.processes))
        return pb.CheckpointResponse(record=record)

    @rpc
    def Plan(self, request, context):
        record = self.store.get(request.record_id, self._owner())
        return pb.PlanResponse(plan=self._plan_message(record.id, self._plan(record, request.policy)))

    @rpc
    def Restore(self, request, context):
        record = self.store.get(request.record_id, self._owner())
        plan = self._plan(record, request.policy)
        spec = self._command_spec(request.command)
        try:
            spawned = native.spawn_in_new_timens(spec, plan.targets, self.host.own_offsets)
        except native.NativeError as exc:
            raise commands.spawn_error(exc, spec) from None
        self.children.adopt(spawned.pid, current_caller().owner_uid)
        log.info(
            "restore record=%s policy=%s pid=%d mechanism=%s offsets=%d,%d",
            record.id, plan.policy, spawned.pid, spawned.mechanism,
            spawned.offsets.monotonic_ns, spawned.offsets.boottime_ns,
        )
        return pb.RestoreResponse(
            pid=spawned.pid,
            offsets=_offsets(spawned.offsets),
            mechanism=MECHANISM_ENUMS[spawned.mechanism],
            timens_inode=spawned.timens_inode,
            plan=self._plan_message(record.id, plan),
        )

    @rpc
    def Wait(self, request, context):
        pid = _positive_pid(request.pid)
        caller = current_caller()
        if not caller.privileged and self.children.owner_of(pid) != caller.uid:
            raise NotFound(f"pid {pid} was not started by keeptimed for uid {caller.uid}")
        status = self.children.wait(pid, timeout=0)
        if status is None:
            # A blocked Wait holds a worker thread: cap them, so waiting
            # callers can never starve everyone else of workers.
            if not self._wait_slots.acquire(blocking=False):
                raise ResourceExhausted(f"{self.max_waits} Wait calls are already blocked in keeptimed; retry")
            try:
                status = self.children.wait(pid, timeout=context.time_remaining(), still_wanted=context.is_active)
            finally:
                self._wait_slots.release()
        if status is None:
            if not context.is_active():
                context.abort(grpc.StatusCode.CANCELLED, "the call was cancelled")
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, f"pid {pid} is still running")
        return pb.WaitResponse(
            pid=pid, exit_code=status.exit_code, signal=status.signal, status=status.shell_status
        )

    @rpc
    def GetRecord(self, request, context):
        return self.store.get(request.record_id, self._owner())

    @rpc
    def ListRecords(self, request, context):
        response = pb.ListRecordsResponse()
        for record_id, record in self.store.list(self._owner()):
            if isinstance(record, KeeptimeError):
                response.records.add(id=record_id, error=record.message)
                continue
            response.records.add(
                id=record.id,
                root_pid=record.root_pid,
                clocks=record.clocks,
                realtime_ns=record.realtime_ns,
                boot_id=record.boot_id,
                hostname=record.hostname,
                process_count=len(record.processes),
                namespace_count=len(record.namespaces),
                labels=record.labels,
                source=record.source,
            )
        return response

    @rpc
    def DeleteRecord(self, request, context):
        return pb.DeleteRecordResponse(record_id=self.store.delete(request.record_id, self._owner()))

    @rpc
    def Clocks(self, request, context):
        pid = _positive_pid(request.pid)
        self.access.check_owns(current_caller(), [pid])
        return checkpoint.clocks_of(pid, self.host)

    @rpc
    def Exec(self, request, context):
        pid = _positive_pid(request.pid)
        self.access.check_owns(current_caller(), [pid])
        spec = self._command_spec(request.command)
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            raise NotFound(f"no process with pid {pid}") from None
        try:
            if procfs.read_stat(pid).is_kernel_thread:
                raise InvalidArgument(f"pid {pid} is a kernel thread")
            namespace = timens.namespace_of(pid)
            spawned = native.spawn_in_timens_of(spec, pidfd)
        except ProcessLookupError:
            raise NotFound(f"no process with pid {pid}") from None
        except native.NativeError as exc:
            raise commands.spawn_error(exc, spec) from None
        finally:
            os.close(pidfd)
        self.children.adopt(spawned.pid, current_caller().owner_uid)
        log.info("exec target=%d pid=%d timens=%d", pid, spawned.pid, namespace.inode)
        return pb.ExecResponse(
            pid=spawned.pid,
            timens_inode=namespace.inode,
            offsets=_offsets(namespace.offsets),
            mechanism=MECHANISM_ENUMS[spawned.mechanism],
        )

    @rpc
    def ExportRecord(self, request, context):
        record_id, data = self.store.export(request.record_id, self._owner())
        return pb.ExportRecordResponse(record_id=record_id, data=data)

    @rpc
    def ImportRecord(self, request, context):
        if not request.data:
            raise InvalidArgument("no record data given")
        record = recordfile.decode(request.data)
        self.store.add(record, current_caller().owner_uid)
        log.info("import record=%s", record.id)
        return pb.ImportRecordResponse(record=record)

    @rpc
    def CheckpointCriuImage(self, request, context):
        record = criu.record_from_image(request.timens_image, request.root_pid, self.host, dict(request.labels))
        self.store.add(record, current_caller().owner_uid)
        log.info("checkpoint from criu image root_pid=%d record=%s", request.root_pid, record.id)
        return pb.CheckpointResponse(record=record)

    @rpc
    def PlanCriuRestore(self, request, context):
        record = self._record(request.record)
        data, plan = criu.plan_image(
            self._checkpointed(record), request.timens_image, self._policy(request.policy), self.host.now()
        )
        log.info("criu plan record=%s policy=%s targets=%d,%d", record.id, plan.policy,
                 plan.targets.monotonic_ns, plan.targets.boottime_ns)
        return pb.PlanCriuRestoreResponse(timens_image=data, plan=self._plan_message(record.id, plan))

    @rpc
    def VerifyRestore(self, request, context):
        record = self._record(request.record)
        pid = _positive_pid(request.pid)
        caller = current_caller()
        self.access.check_owns(caller, [pid])
        if len(request.stage) > MAX_STAGE_LENGTH:
            raise InvalidArgument(f"stage is longer than {MAX_STAGE_LENGTH} characters")
        policy = self._policy(request.policy)
        if request.timens_image:
            dumped = criu.timens_clocks(request.timens_image)
        else:
            dumped = Clocks(record.clocks.monotonic_ns, record.clocks.boottime_ns)
        event = verify.verify(pid, record.id, dumped, self.host)
        event.policy = POLICY_ENUMS[policy]
        event.stage = request.stage
        event.id = self.store.add_restore(event, caller.owner_uid)
        if event.ok:
            log.info("verify record=%s pid=%d stage=%s: %s", record.id, pid, request.stage, event.message)
        else:
            log.error("CLOCK REGRESSION record=%s pid=%d stage=%s: %s", record.id, pid, request.stage, event.message)
        return pb.VerifyRestoreResponse(event=event)

    @rpc
    def ListRestores(self, request, context):
        return pb.ListRestoresResponse(events=self.store.list_restores(request.record_id, self._owner()))
