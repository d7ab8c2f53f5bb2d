"""The keeptime.v1.Keeptime gRPC service: requests in, domain calls, statuses out.

Handlers stay thin: validation and work live in the domain modules, which
raise KeeptimeError subclasses; the wrapper here turns those into gRPC
status codes with their one-line message and logs one line per call.
"""
import contextvars
import functools
import logging
import os
import re
import socket
import time
from dataclasses import dataclass

import grpc

from keeptime.defaults import CALLER_METADATA
from keeptime.v1 import keeptime_pb2 as pb
from keeptime.v1 import keeptime_pb2_grpc as pb_grpc

from . import __version__, caps, checkpoint, commands, native, procfs, recordfile, timens
from .children import Children
from .errors import Cancelled, DeadlineExceeded, InvalidArgument, KeeptimeError, NotFound
from .hostclock import HostClock
from .metrics import KeeptimeMetrics
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
OFFSET_ABI_ENUMS = {None: pb.OFFSET_ABI_UNTRIED, True: pb.OFFSET_ABI_SUPPORTED, False: pb.OFFSET_ABI_UNSUPPORTED}
DOWNTIME_SOURCES = {
    "same_boot": pb.DOWNTIME_SOURCE_SAME_BOOT,
    "realtime": pb.DOWNTIME_SOURCE_REALTIME,
    "realtime_clamped": pb.DOWNTIME_SOURCE_REALTIME_CLAMPED,
}


# Fields for the current call's log line; handlers add theirs with note().
_call_fields: contextvars.ContextVar[dict] = contextvars.ContextVar("keeptimed_call_fields")
# Statuses that mean keeptimed itself (or its store) failed, not the caller.
SERVER_FAULTS = ("INTERNAL", "DATA_LOSS", "UNKNOWN")


def note(**fields) -> None:
    """Add fields (record id, child pid, ...) to the current call's log line."""
    current = _call_fields.get(None)
    if current is not None:
        current.update(fields)


_CALLER_PART = re.compile(r"(pid|uid|program)=([\w.+@:-]{1,64})$")


def caller_of(context) -> dict:
    """Who is calling, for the log: the gRPC peer address (just "unix:" on the
    socket: gRPC hands a server no peer credentials), the caller's pid, uid
    and program as its keeptime client states them, else the product in its
    user agent (e.g. grpcurl's)."""
    metadata = dict(context.invocation_metadata() or ())
    stated = dict(m.groups() for m in map(_CALLER_PART.match, metadata.get(CALLER_METADATA, "").split()) if m)
    fields = {"peer": context.peer()}
    if "program" in stated:
        fields["caller"] = stated["program"]
    elif metadata.get("user-agent"):
        fields["caller"] = metadata["user-agent"].split()[0][:64]
    for key in ("pid", "uid"):
        if stated.get(key, "").isdigit():
            fields[f"caller_{key}"] = int(stated[key])
    return fields


def request_fields(request) -> dict:
    """What a request is about, for the log: pid, record id, policy and the
    command's argv[0] and uid -- never its arguments or environment."""
    fields = {}
    names = request.DESCRIPTOR.fields_by_name
    if "pid" in names:
        fields["pid"] = request.pid
    if "record_id" in names:
        fields["record"] = request.record_id
    if "policy" in names:
        fields["policy"] = POLICY_NAMES.get(request.policy, "default")
    if "command" in names and request.HasField("command"):
        if request.command.argv:
            fields["argv0"] = request.command.argv[0]
        if request.command.HasField("uid"):
            fields["uid"] = request.command.uid
    return fields


def rpc(method):
    """Map domain errors to statuses, hide internal ones; log one line per
    call and count it in the metrics."""
    name = method.__name__

    @functools.wraps(method)
    def handler(self, request, context):
        started = time.monotonic()
        fields = {"rpc": name, **caller_of(context), **request_fields(request)}
        token = _call_fields.set(fields)
        status = "OK"
        try:
            return method(self, request, context)
        except KeeptimeError as exc:
            status = exc.status
            fields["error"] = exc.message
            context.abort(grpc.StatusCode[exc.status], exc.message)
        except Exception:
            status = "INTERNAL"
            log.exception("%s failed", name, extra={"fields": {"rpc": name}})
            context.abort(grpc.StatusCode.INTERNAL, f"internal error in keeptimed during {name}; see its log")
        finally:
            _call_fields.reset(token)
            seconds = time.monotonic() - started
            fields["status"] = status
            fields["duration_ms"] = round(seconds * 1e3, 3)
            self.metrics.observe_call(name, status, seconds)
            level = logging.ERROR if status in SERVER_FAULTS else logging.INFO
            log.log(level, "%s %s", name, status, extra={"fields": fields})

    return handler


def _clock_values(clocks: Clocks) -> pb.ClockValues:
    return pb.ClockValues(monotonic_ns=clocks.monotonic_ns, boottime_ns=clocks.boottime_ns)


def _offsets(clocks: Clocks) -> pb.Offsets:
    return pb.Offsets(monotonic_ns=clocks.monotonic_ns, boottime_ns=clocks.boottime_ns)


def _positive_pid(pid: int) -> int:
    if pid <= 0:
        raise InvalidArgument(f"pid must be a positive integer, got {pid}")
    return pid


@dataclass(frozen=True)
class About:
    """What GetInfo reports about the daemon itself, fixed at startup."""

    config_path: str = ""
    config_file_loaded: bool = False
    socket_path: str = ""
    db_path: str = ""
    metrics_address: str = ""       # as bound; empty when off
    started_realtime_ns: int = 0


class KeeptimeService(pb_grpc.KeeptimeServicer):
    """The daemon's API; one instance serves every connection."""

    def __init__(self, store: RecordStore, host: HostClock, children: Children, metrics: KeeptimeMetrics,
                 default_policy: str = "suspend", about: About = About()):
        self.store = store
        self.host = host
        self.children = children
        self.metrics = metrics
        self.default_policy = default_policy
        self.about = about

    # -- helpers -----------------------------------------------------------

    def _policy(self, value: int) -> str:
        if value == pb.POLICY_UNSPECIFIED:
            return self.default_policy
        if value not in POLICY_NAMES:
            raise InvalidArgument(f"unknown policy {value}; expected one of freeze, suspend, elapsed")
        return POLICY_NAMES[value]

    def _plan(self, record: pb.Record, policy_value: int) -> RestorePlan:
        checkpointed = Checkpointed(
            clocks=Clocks(record.clocks.monotonic_ns, record.clocks.boottime_ns),
            realtime_ns=record.realtime_ns,
            host_boottime_ns=record.host_clocks.boottime_ns,
            boot_id=record.boot_id,
            hostname=record.hostname,
        )
        return plan_restore(self._policy(policy_value), checkpointed, self.host.now())

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

    @rpc
    def Checkpoint(self, request, context):
        record = checkpoint.checkpoint(_positive_pid(request.pid), self.host, dict(request.labels))
        self.store.add(record)
        note(record=record.id, processes=len(record.processes))
        return pb.CheckpointResponse(record=record)

    @rpc
    def Plan(self, request, context):
        record = self.store.get(request.record_id)
        note(record=record.id)
        return pb.PlanResponse(plan=self._plan_message(record.id, self._plan(record, request.policy)))

    @rpc
    def Restore(self, request, context):
        record = self.store.get(request.record_id)
        plan = self._plan(record, request.policy)
        note(record=record.id, policy=plan.policy)
        spec = commands.exec_spec(request.command)
        try:
            spawned = native.spawn_in_new_timens(spec, plan.targets, self.host.own_offsets)
        except native.NativeError as exc:
            if exc.step == "verify clocks":
                self._regression("unknown", "the restored program read a clock below its target before exec")
            raise commands.spawn_error(exc, spec) from None
        host_after_exec = self.host.now().clocks  # first thing: the measured step grows with every delay
        self.children.adopt(spawned.pid)
        self._check_restored_clocks(plan, spawned, host_after_exec)
        note(child_pid=spawned.pid, mechanism=spawned.mechanism)
        return pb.RestoreResponse(
            pid=spawned.pid,
            offsets=_offsets(spawned.offsets),
            mechanism=MECHANISM_ENUMS[spawned.mechanism],
            timens_inode=spawned.timens_inode,
            plan=self._plan_message(record.id, plan),
        )

    def _check_restored_clocks(self, plan: RestorePlan, spawned: native.Spawned, host_after_exec: Clocks) -> None:
        """Measure how far above its targets the restored namespace's clocks
        were when keeptimed saw the exec succeed (host clock then + offsets
        written), and count a regression if a target is below the record or a
        clock below its target -- neither can happen while the policies hold."""
        self.metrics.observe_restore(plan.policy, spawned.mechanism)
        seen = host_after_exec + spawned.offsets
        jumps = {}
        for clock, recorded, target, value in (
            ("monotonic", plan.recorded.monotonic_ns, plan.targets.monotonic_ns, seen.monotonic_ns),
            ("boottime", plan.recorded.boottime_ns, plan.targets.boottime_ns, seen.boottime_ns),
        ):
            if target < recorded or value < target:
                self._regression(clock, f"recorded {recorded} ns, target {target} ns, restored clock read {value} ns")
                continue
            self.metrics.observe_clock_jump(clock, (value - target) / 1e9)
            jumps[f"{clock}_jump_us"] = round((value - target) / 1e3, 1)
        note(**jumps)

    def _regression(self, clock: str, detail: str) -> None:
        self.metrics.regression(clock)
        log.error("clock regression on restore: %s", detail, extra={"fields": {"clock": clock}})

    @rpc
    def Wait(self, request, context):
        pid = _positive_pid(request.pid)
        status = self.children.wait(pid, timeout=context.time_remaining(), still_wanted=context.is_active)
        if status is None:
            if not context.is_active():
                raise Cancelled("the call was cancelled")
            raise DeadlineExceeded(f"pid {pid} is still running")
        return pb.WaitResponse(
            pid=pid, exit_code=status.exit_code, signal=status.signal, status=status.shell_status
        )

    @rpc
    def GetRecord(self, request, context):
        record = self.store.get(request.record_id)
        note(record=record.id)
        return record

    @rpc
    def ListRecords(self, request, context):
        response = pb.ListRecordsResponse()
        for record_id, record in self.store.list():
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
        record_id = self.store.delete(request.record_id)
        note(record=record_id)
        return pb.DeleteRecordResponse(record_id=record_id)

    @rpc
    def Clocks(self, request, context):
        return checkpoint.clocks_of(_positive_pid(request.pid), self.host)

    @rpc
    def Exec(self, request, context):
        pid = _positive_pid(request.pid)
        spec = commands.exec_spec(request.command)
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
        self.children.adopt(spawned.pid)
        note(child_pid=spawned.pid, timens=namespace.inode)
        return pb.ExecResponse(
            pid=spawned.pid,
            timens_inode=namespace.inode,
            offsets=_offsets(namespace.offsets),
            mechanism=MECHANISM_ENUMS[spawned.mechanism],
        )

    @rpc
    def ExportRecord(self, request, context):
        record_id, data = self.store.export(request.record_id)
        note(record=record_id)
        return pb.ExportRecordResponse(record_id=record_id, data=data)

    @rpc
    def ImportRecord(self, request, context):
        if not request.data:
            raise InvalidArgument("no record data given")
        record = recordfile.decode(request.data)
        self.store.add(record)
        note(record=record.id)
        return pb.ImportRecordResponse(record=record)

    @rpc
    def GetInfo(self, request, context):
        a = self.about
        return pb.GetInfoResponse(
            version=__version__,
            pid=os.getpid(),
            started_realtime_ns=a.started_realtime_ns,
            kernel_release=os.uname().release,
            time_namespaces=procfs.has_time_namespaces(),
            max_time_namespaces=procfs.max_time_namespaces(),
            offset_abi=OFFSET_ABI_ENUMS[native.offset_abi_supported()],
            capabilities=caps.effective(),
            missing_capabilities=[
                pb.MissingCapability(name=n.name, needed_for=n.needed_for, blocking=n.blocking)
                for n in caps.missing()
            ],
            record_count=self.store.count(),
            children_running=len(self.children.running()),
            config_path=a.config_path,
            config_file_loaded=a.config_file_loaded,
            socket_path=a.socket_path,
            db_path=a.db_path,
            metrics_address=a.metrics_address,
            default_policy=POLICY_ENUMS[self.default_policy],
            timens_inode=self.host.own_timens_inode,
            host_time_namespace=self.host.own_timens_inode == procfs.INITIAL_TIMENS_INODE,
            hostname=socket.gethostname(),
            boot_id=self.host.boot_id,
        )
