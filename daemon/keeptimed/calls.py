"""One gRPC call, start to end: identify the caller and apply the access
policy, refuse what the door does not take (a request that does not decode
or breaks a size limit), turn domain errors (KeeptimeError) into their status
and a bounded one-line message and hide internal ones, log one line per call
and count it in the metrics. Handlers add fields to their line with note()."""
import contextvars
import functools
import logging
import time
from typing import Optional

import grpc

from . import door
from .access import Caller, reset_current_caller, set_current_caller
from .errors import InvalidArgument, KeeptimeError
from .wire import POLICY_NAMES

log = logging.getLogger("keeptimed.rpc")

# Fields for the current call's log line; handlers add theirs with note().
_call_fields: contextvars.ContextVar[dict] = contextvars.ContextVar("keeptimed_call_fields")
# Statuses that mean keeptimed itself (or its store) failed, not the caller.
SERVER_FAULTS = ("INTERNAL", "DATA_LOSS", "UNKNOWN")
# A status message travels in the trailers, percent-encoded (up to 3 bytes a
# byte), and gRPC drops a call whose trailers pass 8 KiB ("Stream removed").
MAX_STATUS_MESSAGE_BYTES = 1024


def note(**fields) -> None:
    """Add fields (record id, child pid, ...) to the current call's log line."""
    current = _call_fields.get(None)
    if current is not None:
        current.update(fields)


def caller_fields(caller: Optional[Caller], context) -> dict:
    """Who is calling, for the log: on the unix socket the pid, uid and gid
    the kernel reported at connect time (SO_PEERCRED, through the relay),
    that process's name then and, when it is in another pid namespace than
    keeptimed, that namespace's inode; over TCP the transport and the certificate's
    name; the bare peer address of a call refused before it was identified."""
    if caller is None:
        return {"peer": context.peer()}
    if caller.transport != "unix":
        return {"transport": caller.transport, "caller": caller.name or "-"}
    fields = {"caller": caller.name or "?", "caller_pid": caller.pid, "caller_uid": caller.uid,
              "caller_gid": caller.gid}
    if caller.pidns is not None and caller.pidns.level:   # the call's pids are that namespace's
        fields["caller_pidns"] = caller.pidns.inode
    return fields


def request_fields(request) -> dict:
    """What a request is about, for the log: pid, record id, policy and the
    command's argv[0] and uid -- never its arguments or environment."""
    fields = {}
    if isinstance(request, door.Undecodable):
        return fields
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


def status_message(message: str) -> str:
    """message as a status may carry it: one line of at most
    MAX_STATUS_MESSAGE_BYTES bytes of UTF-8 (cut short with "...")."""
    line = " ".join(message.splitlines())
    data = line.encode()
    if len(data) <= MAX_STATUS_MESSAGE_BYTES:
        return line
    return data[:MAX_STATUS_MESSAGE_BYTES - 3].decode(errors="ignore") + "..."


def rpc(method):
    """Identify the caller and apply the access policy, map domain errors to
    statuses, hide internal ones; log one line per call with the caller, and
    count it in the metrics."""
    name = method.__name__

    @functools.wraps(method)
    def handler(self, request, context):
        started = time.monotonic()
        fields = request_fields(request)
        fields_token = _call_fields.set(fields)
        status = "OK"
        caller = caller_token = None
        try:
            caller = self.access.identify(context)
            self.access.check_rpc(caller, name)
            if isinstance(request, door.Undecodable):
                raise InvalidArgument(request.message)
            door.check(request)
            caller_token = set_current_caller(caller)
            return method(self, request, context)
        except KeeptimeError as exc:
            status = exc.status
            message = status_message(exc.message)
            fields["error"] = message
            if getattr(exc, "limit", None):
                self.metrics.refused(exc.limit)
            context.abort(grpc.StatusCode[exc.status], message)
        except Exception:
            status = "INTERNAL"
            log.exception("%s failed", name, extra={"fields": {"rpc": name}})
            context.abort(grpc.StatusCode.INTERNAL, f"internal error in keeptimed during {name}; see its log")
        finally:
            if caller_token is not None:
                reset_current_caller(caller_token)
            _call_fields.reset(fields_token)
            seconds = time.monotonic() - started
            line = {"rpc": name, **caller_fields(caller, context), **fields,
                    "status": status, "duration_ms": round(seconds * 1e3, 3)}
            self.metrics.observe_call(name, status, seconds)
            level = logging.ERROR if status in SERVER_FAULTS else logging.INFO
            log.log(level, "%s %s", name, status, extra={"fields": line})

    return handler
