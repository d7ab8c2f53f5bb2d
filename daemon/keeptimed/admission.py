"""Admission: how many calls a caller other than root may have in progress.

keeptimed serves gRPC on two fixed pools of worker threads (pools.py), and a
call holds its worker for as long as it lasts: a blocked Wait, an idle
reflection or health stream, a Restore whose program its owner stopped
before exec, even a unary call whose request message never arrives. So
every call of a non-root caller is counted, in the pool it runs in, before
it may hold a worker, and refused at once with RESOURCE_EXHAUSTED naming the
limit when
  * its uid already has user_calls gRPC calls in progress (in both pools,
    streams included), user_waits Wait calls blocked, or USER_HOOK_STEPS
    CRIU hook steps (a CRIU run makes one at a time), or
  * its uid already holds half (rounded up) of what non-root callers may
    hold in that pool, so that one uid never leaves other users nothing, or
  * the non-root callers together already hold the workers they may hold
    in that pool: workers - root_workers of those for waits and streams,
    three quarters of the quick_workers, all but ROOT_HOOK_WORKERS of the
    CRIU hook's,
so root always finds workers free in every pool, and another user does
unless several uids together take them. Root and TLS clients are
not counted; root's blocked Waits are capped at half the workers for waits
and streams, so its own waits never take them all.

AdmissionInterceptor applies this to every RPC the server has (keeptime.v1,
health, reflection), and has each served by its pool. It serves each one as
request-streaming, so that the count is taken before the worker waits for a
request message: grpcio reads a unary request in the worker before the
handler runs.
"""
import collections
import contextlib
import logging
import threading
from concurrent import futures
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import grpc
from keeptime.limits import BUSY_TRAILER

from . import pools
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
    roots: str           # what root keeps, for messages
    uid_group: str       # pools whose calls count together per uid
    per_uid: int         # one uid, in all pools of its uid_group
    per_uid_limit: str   # the limit that sets it
    what: str            # what a uid holds, for messages
    grows: str           # the setting that makes the share larger

    @property
    def one_uid(self) -> int:
        """Workers of this pool one non-root uid may hold: half the share, rounded up."""
        return (self.share + 1) // 2


class Admission:
    """Counts the calls of callers other than root, per uid and per pool."""

    def __init__(self, limits: Limits, hook_workers: int = 8):
        self.limits = limits
        self.quick = Pool("quick-call", limits.user_quick_workers, "quick_workers", "a quarter of quick_workers",
                          "gRPC", limits.user_calls, "user_calls", "calls in progress", "quick_workers")
        self.blocking = Pool("wait-and-stream", limits.user_workers, "root_workers", "root_workers",
                             "gRPC", limits.user_calls, "user_calls", "calls in progress", "workers")
        self.hook = Pool("CRIU hook", max(1, hook_workers - ROOT_HOOK_WORKERS), "root_hook_workers",
                         "root_hook_workers", "CRIU hook", USER_HOOK_STEPS, "user_hook_steps",
                         "CRIU hook steps in progress", "root_hook_workers")
        self._lock = threading.Lock()
        # pool -> calls held there; (pool, uid) -> those of uid; (uid group, uid) -> calls that uid
        # holds in the group's pools
        self._held: collections.Counter = collections.Counter()
        self._waits: collections.Counter = collections.Counter()   # uid -> blocked Waits
        self._root_waits = threading.BoundedSemaphore(limits.root_waits)

    def enter(self, caller: Caller, pool: Pool) -> Optional[tuple[Pool, int]]:
        """Count a call of caller in pool; LimitExceeded when it is one too
        many. Returns the ticket to give leave() when the call ends."""
        if caller.privileged:
            return None
        uid = caller.account
        mine, mine_here = (pool.uid_group, uid), (pool, uid)
        with self._lock:
            if self._held[mine] >= pool.per_uid:
                raise LimitExceeded(pool.per_uid_limit, f"{_who(caller)} already has {self._held[mine]} "
                                                        f"{pool.what}, the most {pool.per_uid_limit} allows; retry "
                                                        "once one has ended")
            if self._held[mine_here] >= pool.one_uid:
                raise LimitExceeded(pool.grows, f"{_who(caller)} already holds {self._held[mine_here]} of the "
                                                f"{pool.share} {pool.name} workers callers other than root may "
                                                "hold, as many as one uid may (half, so that other users are "
                                                f"served); retry once one has ended (more {pool.grows}: more of them)")
            if self._held[pool] >= pool.share:
                raise LimitExceeded(pool.share_limit, f"the {pool.share} {pool.name} workers callers other than root "
                                                      f"may hold are all busy (the rest are root's: {pool.roots}); "
                                                      "retry")
            self._held[mine] += 1
            self._held[mine_here] += 1
            self._held[pool] += 1
        return pool, uid

    def leave(self, ticket: Optional[tuple[Pool, int]]) -> None:
        """The call enter() returned ticket for has ended."""
        if ticket is None:
            return
        pool, uid = ticket
        with self._lock:
            _decrement(self._held, (pool.uid_group, uid))
            _decrement(self._held, (pool, uid))
            _decrement(self._held, pool)

    @contextlib.contextmanager
    def waiting(self, caller: Caller) -> Iterator[None]:
        """Hold a blocked-Wait slot of caller's for the duration; LimitExceeded when none is free."""
        if caller.privileged:
            if not self._root_waits.acquire(blocking=False):
                raise LimitExceeded("workers", f"{self.limits.root_waits} Wait calls are already blocked in "
                                               "keeptimed (half its workers for waits and streams); retry")
            try:
                yield
            finally:
                self._root_waits.release()
            return
        uid = caller.account
        with self._lock:
            if self._waits[uid] >= self.limits.user_waits:
                raise LimitExceeded("user_waits", f"{_who(caller)} already has {self._waits[uid]} Wait calls blocked, "
                                                  "the most user_waits allows; retry once one has returned")
            self._waits[uid] += 1
        try:
            yield
        finally:
            with self._lock:
                _decrement(self._waits, uid)


def _who(caller: Caller) -> str:
    """The uid a caller's calls are counted against, for messages."""
    if caller.charged_uid is None:
        return f"uid {caller.uid}"
    return f"uid {caller.charged_uid} (which made the user namespace uid {caller.uid} calls from)"


def _decrement(counter: collections.Counter, key) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]


class AdmissionInterceptor(grpc.ServerInterceptor):
    """Has every RPC served by its pool, admitted through Admission before
    it may hold a worker there.

    on_refused(limit) is told of each refusal by a limit (for the metrics);
    each refused call is logged like any other call."""

    def __init__(self, admission: Admission, access: Access, workers: pools.Pools,
                 on_refused: Callable[[str], None] = lambda _: None):
        self.admission = admission
        self.access = access
        self.workers = workers
        self.on_refused = on_refused
        # method -> (its handler, that handler as served here): built once per method, not per call
        self._served: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        served = self._served.get(method)
        if served is None or served[0] is not handler:
            blocking = pools.blocks(method, handler)
            pool = self.admission.blocking if blocking else self.admission.quick
            name = method.rsplit("/", 1)[-1]
            served = handler, _request_streaming(handler, lambda context: self._admitted(name, pool, context),
                                                 self.workers.for_call(blocking))
            self._served[method] = served
        return served[1]

    @contextlib.contextmanager
    def _admitted(self, name: str, pool: Pool, context) -> Iterator[None]:
        caller = None
        try:
            caller = self.access.identify(context)
            ticket = self.admission.enter(caller, pool)
        except KeeptimeError as exc:
            self._refused(name, caller, context, exc)
            if isinstance(exc, LimitExceeded):   # refused before it began: the client may retry it
                context.set_trailing_metadata(((BUSY_TRAILER, exc.limit),))
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


def _request_streaming(handler: grpc.RpcMethodHandler, admitted,
                       pool: futures.ThreadPoolExecutor) -> grpc.RpcMethodHandler:
    """handler served as request-streaming by pool's threads, each call
    inside admitted(context).

    A unary request is read from the stream only once admitted; a streaming
    response keeps the call admitted until the stream ends."""
    codecs = {"request_deserializer": handler.request_deserializer,
              "response_serializer": handler.response_serializer}
    if handler.request_streaming and handler.response_streaming:
        def stream_stream(requests, context):
            with admitted(context):
                yield from handler.stream_stream(requests, context)
        behaviour, make = stream_stream, grpc.stream_stream_rpc_method_handler
    elif handler.request_streaming:
        def stream_unary(requests, context):
            with admitted(context):
                return handler.stream_unary(requests, context)
        behaviour, make = stream_unary, grpc.stream_unary_rpc_method_handler
    elif handler.response_streaming:
        def unary_stream(requests, context):
            with admitted(context):
                yield from handler.unary_stream(_one(requests, context), context)
        behaviour, make = unary_stream, grpc.stream_stream_rpc_method_handler
    else:
        def unary_unary(requests, context):
            with admitted(context):
                return handler.unary_unary(_one(requests, context), context)
        behaviour, make = unary_unary, grpc.stream_unary_rpc_method_handler
    behaviour.experimental_thread_pool = pool   # see pools.py
    return make(behaviour, **codecs)


def _one(requests, context):
    """The single request message of a unary call."""
    try:
        return next(requests)
    except StopIteration:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the call ended without its request message")
