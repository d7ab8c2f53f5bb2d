#!/usr/bin/env python3
"""keeptime load test: restores and checkpoints from concurrent clients, then
a check that keeptimed leaked nothing.

As root:

    .venv/bin/python benchmarks/load.py          # 1000 restores, 10,000 checkpoints, 16 clients
    .venv/bin/python benchmarks/load.py --restores 5000 --checkpoints 50000 --clients 32
    .venv/bin/python benchmarks/load.py --socket /run/keeptime/keeptime.sock   # a running daemon

Each client is its own process (multiprocessing 'spawn') with one
keeptime.Client, and interleaves its share of restores (Restore of /bin/true
in a new time namespace, then Wait) and checkpoints (of a sleeping process).
Every call has a deadline (--timeout).

The daemon's open fds, threads and RSS are read from /proc after a warm-up
(the "before" column), sampled during the run ("peak") and read again once
the clients are gone ("after", allowing --settle seconds for connections to
close). The run passes when there were no errors, no zombie children are
left, fds and threads did not grow, RSS is within --rss-tolerance of the
start, and every acknowledged checkpoint is stored. Prints a table; exits 1
when any check fails. Needs root (to read the daemon's /proc and restore).
"""
import argparse
import json
import math
import multiprocessing
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

from helpers.daemon import RunningDaemon  # noqa: E402  (tests/helpers, shared with the test suite)
from helpers.procstat import open_fds, rss_kb, thread_count, zombie_children  # noqa: E402
from keeptime import Client  # noqa: E402
from keeptime.errors import KeeptimeError  # noqa: E402

RUN_LABEL = "keeptime-load"
MAX_ERROR_SAMPLES = 10


# -- the clients ----------------------------------------------------------------------

def interleaved(restores: int, checkpoints: int) -> list[str]:
    """'r' and 'c' operations spread evenly through one sequence."""
    ops = [((i + 0.5) / restores, "r") for i in range(restores)]
    ops += [((i + 0.5) / checkpoints, "c") for i in range(checkpoints)]
    return [op for _, op in sorted(ops)]


def client_worker(job: dict) -> dict:
    """One client: its restores and checkpoints; latencies and errors back."""
    latencies = {"r": [], "c": []}
    errors, samples, ids = 0, [], []
    with Client(socket=job["socket"], timeout=job["timeout"]) as kt:
        for seq, op in enumerate(interleaved(job["restores"], job["checkpoints"])):
            started = time.perf_counter_ns()
            try:
                if op == "r":
                    restored = kt.restore(job["record_id"], ["/bin/true"], policy="freeze")
                    status = kt.wait(restored.pid, timeout=job["timeout"])
                    if status != 0:
                        raise RuntimeError(f"/bin/true exited with status {status}")
                else:
                    ids.append(kt.checkpoint(job["target"], labels={RUN_LABEL: job["run"], "seq": str(seq)}))
            except (KeeptimeError, RuntimeError) as exc:
                errors += 1
                if len(samples) < MAX_ERROR_SAMPLES:
                    samples.append(f"client {job['index']} {'restore' if op == 'r' else 'checkpoint'}: {exc}")
                continue
            latencies[op].append(time.perf_counter_ns() - started)
    return {"latencies": latencies, "errors": errors, "error_samples": samples, "ids": ids}


def stored_worker(job: dict) -> list[str]:
    """GetRecord (or DeleteRecord, to clean up) each id; the ones that failed, with why."""
    failed = []
    with Client(socket=job["socket"], timeout=job["timeout"]) as kt:
        for record_id in job["ids"]:
            try:
                kt.delete(record_id) if job["delete"] else kt.get(record_id)
            except KeeptimeError as exc:
                failed.append(f"record {record_id}: {exc}")
    return failed


def share(total: int, parts: int, i: int) -> int:
    return total // parts + (i < total % parts)


def in_parallel(worker, jobs: list[dict]) -> list:
    with multiprocessing.get_context("spawn").Pool(len(jobs)) as pool:
        return pool.map(worker, jobs)


def run_clients(socket_path: str, clients: int, restores: int, checkpoints: int, **common) -> list[dict]:
    """restores and checkpoints split across `clients` processes; their results."""
    return in_parallel(client_worker, [
        dict(common, socket=socket_path, index=i,
             restores=share(restores, clients, i), checkpoints=share(checkpoints, clients, i))
        for i in range(clients)
    ])


def missing_records(socket_path: str, clients: int, ids: list[str], delete: bool, timeout: float) -> list[str]:
    """Which of ids the daemon cannot serve (or delete), checked by `clients` processes."""
    return [failure for failed in in_parallel(stored_worker, [
        dict(socket=socket_path, ids=ids[i::clients], delete=delete, timeout=timeout) for i in range(clients)
    ]) for failure in failed]


# -- the daemon, seen from /proc ------------------------------------------------------------

@dataclass
class Sample:
    fds: int
    threads: int
    rss_kb: int
    zombies: int


def sample(pid: int) -> Sample:
    return Sample(open_fds(pid), thread_count(pid), rss_kb(pid), len(zombie_children(pid)))


class PeakSampler:
    """Samples the daemon in the background; keeps the highest of each value."""

    def __init__(self, pid: int, interval: float = 0.2):
        self.pid, self.interval = pid, interval
        self.peak = sample(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "PeakSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            now = sample(self.pid)
            self.peak = Sample(*(max(a, b) for a, b in zip(asdict(self.peak).values(), asdict(now).values())))


def settled(pid: int, before: Sample, rss_limit_kb: float, seconds: float) -> Sample:
    """The daemon after the run: sampled until it is back within the limits,
    or for `seconds` at most (closing connections takes the relay a moment)."""
    deadline = time.monotonic() + seconds
    while True:
        now = sample(pid)
        if (now.fds <= before.fds and now.threads <= before.threads and now.zombies == 0
                and now.rss_kb <= rss_limit_kb) or time.monotonic() >= deadline:
            return now
        time.sleep(0.1)


def server_pid(socket_path: str) -> int:
    """The pid of the process listening on a unix socket (SO_PEERCRED)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.connect(socket_path)
        raw = probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", raw)[0]


# -- the run ----------------------------------------------------------------------------------

def latency_summary(values_ns: list[int], seconds: float) -> dict:
    ordered = sorted(values_ns)
    if not ordered:
        return {"n": 0, "per_second": 0.0, "p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
    return {
        "n": len(ordered),
        "per_second": len(ordered) / seconds,
        "p50_ms": ordered[len(ordered) // 2] / 1e6,
        "p99_ms": ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)] / 1e6,
        "max_ms": ordered[-1] / 1e6,
    }


def load(args, socket_path: str, pid: int) -> dict:
    """Warm up, measure, run the load, measure again; the results and checks."""
    run_id = uuid.uuid4().hex[:12]   # labels the run's records on a shared daemon
    target = subprocess.Popen(["sleep", "3600"])
    try:
        with Client(socket=socket_path, timeout=args.timeout) as kt:
            record_id = kt.checkpoint(target.pid, labels={RUN_LABEL: run_id, "role": "restore-source"})
        common = dict(record_id=record_id, target=target.pid, timeout=args.timeout, run=run_id)

        # Same number of clients as the run, so the daemon's thread pool is as
        # large before as it will be after.
        warm = run_clients(socket_path, args.clients, args.clients * args.warmup, args.clients * args.warmup, **common)
        time.sleep(1.0)
        before = sample(pid)

        with PeakSampler(pid) as sampler:
            started = time.monotonic()
            results = run_clients(socket_path, args.clients, args.restores, args.checkpoints, **common)
            elapsed = time.monotonic() - started
        rss_limit_kb = before.rss_kb * (1 + args.rss_tolerance)
        after = settled(pid, before, rss_limit_kb, args.settle)

        # Every acknowledged checkpoint is stored and intact (GetRecord verifies
        # its checksum); on a daemon of someone else's, the run's records go.
        acknowledged = [record_id] + [i for r in warm + results for i in r["ids"]]
        missing = missing_records(socket_path, args.clients, acknowledged,
                                  delete=bool(args.socket and not args.keep_records), timeout=args.timeout)
    finally:
        target.kill()
        target.wait()

    errors = sum(r["errors"] for r in warm + results)
    checks = [
        ("errors", None, None, errors, 0, errors == 0),
        ("zombie children", before.zombies, sampler.peak.zombies, after.zombies, 0, after.zombies == 0),
        ("open fds", before.fds, sampler.peak.fds, after.fds, before.fds, after.fds <= before.fds),
        ("threads", before.threads, sampler.peak.threads, after.threads, before.threads,
         after.threads <= before.threads),
        ("RSS KiB", before.rss_kb, sampler.peak.rss_kb, after.rss_kb, round(rss_limit_kb),
         after.rss_kb <= rss_limit_kb),
        ("acknowledged records stored", None, None, len(acknowledged) - len(missing), len(acknowledged),
         not missing),
    ]
    return {
        "counts": {"restores": args.restores, "checkpoints": args.checkpoints, "clients": args.clients,
                   "warmup_per_client": args.warmup, "timeout_s": args.timeout},
        "elapsed_s": elapsed,
        "restore": latency_summary([v for r in results for v in r["latencies"]["r"]], elapsed),
        "checkpoint": latency_summary([v for r in results for v in r["latencies"]["c"]], elapsed),
        "checks": [dict(zip(("check", "before", "peak", "after", "limit", "ok"), row)) for row in checks],
        "error_samples": ([s for r in warm + results for s in r["error_samples"]] + missing)[:MAX_ERROR_SAMPLES],
        "passed": all(row[-1] for row in checks),
    }


def table(r: dict) -> str:
    c = r["counts"]
    lines = [f"keeptime load: {c['restores']} restores (Restore + Wait of /bin/true) and {c['checkpoints']} "
             f"checkpoints from {c['clients']} clients in {r['elapsed_s']:.1f} s (every call's deadline "
             f"{c['timeout_s']:g} s)", ""]
    lines.append("| operation | done | per second | p50 ms | p99 ms | max ms |")
    lines.append("|---|---:|---:|---:|---:|---:|")
    for name in ("restore", "checkpoint"):
        s = r[name]
        lines.append(f"| {name} | {s['n']} | {s['per_second']:.0f} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | "
                     f"{s['max_ms']:.1f} |")
    lines += ["", "| check | before | peak | after | limit | |", "|---|---:|---:|---:|---:|---|"]
    for row in r["checks"]:
        cells = ["" if row[key] is None else str(row[key]) for key in ("before", "peak", "after", "limit")]
        lines.append(f"| {row['check']} | " + " | ".join(cells) + f" | {'ok' if row['ok'] else 'FAILED'} |")
    if r["error_samples"]:
        lines += ["", "First errors:"] + [f"  {s}" for s in r["error_samples"]]
    lines += ["", "PASSED" if r["passed"] else "FAILED"]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--restores", type=int, default=1000, help="Restore + Wait calls (default 1000)")
    parser.add_argument("--checkpoints", type=int, default=10_000, help="Checkpoint calls (default 10000)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent client processes (default 16)")
    parser.add_argument("--warmup", type=int, default=10,
                        help="restores and checkpoints per client before the 'before' reading (default 10)")
    parser.add_argument("--timeout", type=float, default=30.0, help="deadline of every call, seconds (default 30)")
    parser.add_argument("--rss-tolerance", type=float, default=0.10,
                        help="allowed RSS growth as a fraction of the start (default 0.10)")
    parser.add_argument("--settle", type=float, default=10.0,
                        help="seconds the daemon gets after the run to get back to its limits (default 10)")
    parser.add_argument("--socket", default=None,
                        help="load this running keeptimed instead of starting one (its records of the run are "
                             "deleted afterwards unless --keep-records)")
    parser.add_argument("--keep-records", action="store_true", help="with --socket: leave the run's records")
    parser.add_argument("--json-out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    if args.clients < 1 or min(args.restores, args.checkpoints, args.warmup) < 0:
        parser.error("--clients must be at least 1, counts must not be negative")

    if args.socket:
        results = load(args, args.socket, server_pid(args.socket))
    else:
        store_dir = tempfile.mkdtemp(prefix="keeptime-load-")
        daemon = RunningDaemon(store_dir).start("--log-level", "WARNING")
        try:
            results = load(args, daemon.socket, daemon.proc.pid)
            results["daemon_exit_status"] = daemon.stop()
            if results["daemon_exit_status"] != 0:
                results["passed"] = False
        finally:
            daemon.stop()
            shutil.rmtree(store_dir, ignore_errors=True)
    print(table(results))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(results, f, indent=2)
    return 0 if results["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
