"""Admission: how many calls a caller other than root may have in progress.

keeptimed serves gRPC on a fixed pool of worker threads, and a call holds
its worker for as long as it lasts: a blocked Wait, an idle reflection or
health stream, even a unary call whose request message never arrives. So
every call of a non-root caller is counted before it may hold a worker, and
refused at once with RESOURCE_EXHAUSTED naming the limit when
  * its uid already has user_calls gRPC calls in progress (streams
    included), user_waits Wait calls blocked, or USER_HOOK_STEPS CRIU hook
    steps (a CRIU run makes one at a time), or
  * the non-root callers together already hold the workers they may hold
    (workers - root_workers for gRPC, all but ROOT_HOOK_WORKERS of the CRIU
    hook's),
so root always finds workers free. Root and TLS clients are not counted;
root's blocked Waits are capped at half the workers, so its own waits never
take them all.

AdmissionInterceptor applies this to every RPC the server has (keeptime.v1,
health, reflection). It serves each one as request-streaming, so that the
count is taken before the worker waits for a request message: grpcio reads a
unary request in the worker before the handler runs.
"""
import collections
import contextlib
import logging
import threading
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import grpc

from .access import Access, Caller
from .calls import caller_fields
from .errors import KeeptimeError
from .limits import LimitExceeded, Limits

log = logging.getLogger("keeptimed.rpc")

USER_HOOK_STEPS = 2      # CRIU hook steps one non-root uid may have in progress
ROOT_HOOK_WORKERS = 2    # CRIU hook workers only root may use


@dataclass(frozen=True)
class Pool:
    """Workers that calls hold, and what callers other than root may hold of them."""

    name: str
    share: int           # all non-root callers together
    share_limit: str     # the limit that sets the share, as refusals name it
    per_uid: int         # one uid
    per_uid_limit: str   # the limit that sets it
    what: str            # what a uid holds, for messages


class Admission:
    """Counts the calls of callers other than root, per uid and per pool."""

    def __init__(self, limits: Limits, hook_workers: int = 8):
        self.limits = limits
        self.rpc = Pool("gRPC", limits.user_workers, "root_workers", limits.user_calls, "user_calls",
                        "calls in progress")
        self.hook = Pool("CRIU hook", max(1, hook_workers - ROOT_HOOK_WORKERS), "root_hook_workers",
                         USER_HOOK_STEPS, "user_hook_steps", "CRIU hook steps in progress")
        self._lock = threading.Lock()
        self._held: collections.Counter = collections.Counter()    # (pool, uid) and pool -> calls held
        self._waits: collections.Counter = collections.Counter()   # uid -> blocked Waits
        self._root_waits = threading.BoundedSemaphore(limits.root_waits)

    def enter(self, caller: Caller, pool: Optional[Pool] = None) -> Optional[tuple[Pool, int]]:
        """Count a call of caller in pool (default: gRPC's); LimitExceeded
        when it is one too many. Returns the ticket to give leave() when the
        call ends."""
        pool = pool or self.rpc
        if caller.privileged:
            return None
        uid = caller.uid
        with self._lock:
            if self._held[pool, uid] >= pool.per_uid:
                raise LimitExceeded(pool.per_uid_limit, f"uid {uid} already has {self._held[pool, uid]} {pool.what}, "
                                                        f"the most {pool.per_uid_limit} allows; retry once one has ended")
            if self._held[pool] >= pool.share:
                raise LimitExceeded(pool.share_limit, f"the {pool.share} {pool.name} workers callers other than root "
                                                      f"may hold are all busy (the rest are root's: "
                                                      f"{pool.share_limit}); retry")
            self._held[pool, uid] += 1
            self._held[pool] += 1
        return pool, uid

    def leave(self, ticket: Optional[tuple[Pool, int]]) -> None:
        """The call enter() returned ticket for has ended."""
        if ticket is None:
            return
        pool, uid = ticket
        with self._lock:
            _decrement(self._held, (pool, uid))
            _decrement(self._held, pool)

    @contextlib.contextmanager
    def waiting(self, caller: Caller) -> Iterator[None]:
        """Hold a blocked-Wait slot of caller's for the duration; LimitExceeded when none is free."""
        if caller.privileged:
            if not self._root_waits.acquire(blocking=False):
                raise LimitExceeded("workers", f"{self.limits.root_waits} Wait calls are already blocked in "
                                               "keeptimed (half its workers); retry")
            try:
                yield
            finally:
                self._root_waits.release()
            return
        uid = caller.uid
        with self._lock:
            if self._waits[uid] >= self.limits.user_waits:
                raise LimitExceeded("user_waits", f"uid {uid} already has {self._waits[uid]} Wait calls blocked, "
                                                  "the most user_waits allows; retry once one has returned")
            self._waits[uid] += 1
        try:
            yield
        finally:
            with self._lock:
                _decrement(self._waits, uid)


def _decrement(counter: collections.Counter, key) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]


class AdmissionInterceptor(grpc.ServerInterceptor):
    """Admits every RPC through Admission before it may hold a worker.

    on_refused(limit) is told of each refusal by a limit (for the metrics);
    each refused call is logged like any other call."""

    def __init__(self, admission: Admission, access: Access, on_refused: Callable[[str], None] = lambda _: None):
        self.admission = admission
        self.access = access
        self.on_refused = on_refused

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        name = handler_call_details.method.rsplit("/", 1)[-1]
        return _request_streaming(handler, lambda context: self._admitted(name, context))

    @contextlib.contextmanager
    def _admitted(self, name: str, context) -> Iterator[None]:
        caller = None
        try:
            caller = self.access.identify(context)
            ticket = self.admission.enter(caller)
        except KeeptimeError as exc:
            self._refused(name, caller, context, exc)
            context.abort(grpc.StatusCode[exc.status], exc.message)
        try:
            yield
        finally:
            self.admission.leave(ticket)

    def _refused(self, name: str, caller: Optional[Caller], context, exc: KeeptimeError) -> None:
        limit = getattr(exc, "limit", None)
        if limit:
            self.on_refused(limit)
        fields = {"rpc": name, **caller_fields(caller, context), "status": exc.status, "error": exc.message}
        log.warning("%s %s", name, exc.status, extra={"fields": fields})


def _request_streaming(handler: grpc.RpcMethodHandler, admitted) -> grpc.RpcMethodHandler:
    """handler served as request-streaming, each call inside admitted(context).

    A unary request is read from the stream only once admitted; a streaming
    response keeps the call admitted until the stream ends."""
    codecs = {"request_deserializer": handler.request_deserializer,
              "response_serializer": handler.response_serializer}
    if handler.request_streaming and handler.response_streaming:
        def stream_stream(requests, context):
            with admitted(context):
                yield from handler.stream_stream(requests, context)
        return grpc.stream_stream_rpc_method_handler(stream_stream, **codecs)
    if handler.request_streaming:
        def stream_unary(requests, context):
            with admitted(context):
                return handler.stream_unary(requests, context)
        return grpc.stream_unary_rpc_method_handler(stream_unary, **codecs)
    if handler.response_streaming:
        def unary_stream(requests, context):
            with admitted(context):
                yield from handler.unary_stream(_one(requests, context), context)
        return grpc.stream_stream_rpc_method_handler(unary_stream, **codecs)

    def unary_unary(requests, context):
        with admitted(context):
            return handler.unary_unary(_one(requests, context), context)
    return grpc.stream_unary_rpc_method_handler(unary_unary, **codecs)


def _one(requests, context):
    """The single request message of a unary call."""
    try:
        return next(requests)
    except StopIteration:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the call ended without its request message")
