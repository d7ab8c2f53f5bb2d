"""The threads that serve gRPC calls: two pools, by how long a call may last.

grpcio serves each call on a thread of a pool, held until the call ends. A
quick call (every unary call but Wait) works on keeptimed's own things and
returns: a few threads, about two per CPU, serve them best, since every
further thread only adds switches between threads contending for the GIL
(measured: many workers cost more CPU per call than the calls themselves
and lowered throughput as clients were added). A call that may wait on
something outside keeptimed (a Wait for a process, a stream such as a
health Watch or reflection, which lasts as long as its client wants) gets a
thread of the other pool, sized for how many such calls may be in progress.
Admission counts the calls in each pool separately (admission.py), and the
self-check asks each pool for a free thread (server.py).

grpcio runs a method's handler in the pool its behaviour names as
``experimental_thread_pool`` (grpc/_server.py, _select_thread_pool_for_behavior).
"""
import os
import threading
from concurrent import futures
from typing import Optional

import grpc

# Unary methods whose calls may wait on something outside keeptimed.
BLOCKING_UNARY_METHODS = frozenset({"/keeptime.v1.Keeptime/Wait"})
QUICK_WORKERS_PER_CPU = 2
MIN_QUICK_WORKERS = 4
MAX_QUICK_WORKERS = 32


def default_quick_workers(cpus: Optional[int] = None) -> int:
    """Threads for quick calls when the configuration says 0 (auto): two per
    CPU keeptimed may run on, at least MIN_QUICK_WORKERS and at most
    MAX_QUICK_WORKERS (past that the GIL, not CPUs, bounds a Python server)."""
    if cpus is None:
        cpus = len(os.sched_getaffinity(0))
    return max(MIN_QUICK_WORKERS, min(MAX_QUICK_WORKERS, QUICK_WORKERS_PER_CPU * cpus))


def blocks(method: str, handler: grpc.RpcMethodHandler) -> bool:
    """Whether calls of method may wait on something outside keeptimed:
    streams (either way) and the unary methods that wait."""
    return handler.request_streaming or handler.response_streaming or method in BLOCKING_UNARY_METHODS


def started_thread_pool(workers: int, name: str) -> futures.ThreadPoolExecutor:
    """A pool of `workers` threads, all already running.

    A pool left to grow on demand never shrinks, and it starts a thread
    whenever a call arrives just before a finished one marks its thread idle,
    so under load it creeps up to `workers` threads: started up front, the
    daemon's thread count is fixed from the start and cannot grow.
    """
    pool = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
    all_running = threading.Barrier(workers + 1)
    for _ in range(workers):
        pool.submit(all_running.wait)   # no thread is idle until all exist
    all_running.wait()
    return pool


class Pools:
    """keeptimed's two gRPC worker pools: `quick` and `blocking`."""

    def __init__(self, quick_workers: int, blocking_workers: int):
        self.sizes = {"quick": quick_workers, "blocking": blocking_workers}
        self.quick = started_thread_pool(quick_workers, "keeptimed-rpc-quick")
        self.blocking = started_thread_pool(blocking_workers, "keeptimed-rpc")

    def for_call(self, blocking: bool) -> futures.ThreadPoolExecutor:
        return self.blocking if blocking else self.quick

    def starved(self, timeout: float) -> list[str]:
        """The pools ("quick", "blocking") that ran no no-op within timeout
        (together, not each): a new call there would wait as long."""
        probes = {}
        for name, pool in (("quick", self.quick), ("blocking", self.blocking)):
            try:
                probes[name] = pool.submit(lambda: None)
            except RuntimeError:   # shut down
                probes[name] = None
        done, _ = futures.wait([probe for probe in probes.values() if probe is not None], timeout)
        return [name for name, probe in probes.items() if probe not in done]
