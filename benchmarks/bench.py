#!/usr/bin/env python3
"""keeptime benchmarks: restore latency, clock jump and checkpoint cost,
side by side with the kernel-level floor measured in the same run.

As root:

    .venv/bin/python benchmarks/bench.py             # full run, a few minutes
    .venv/bin/python benchmarks/bench.py --quick     # small counts, a smoke run

Starts its own keeptimed (temporary socket and store) and talks to it through
the public keeptime.Client API and the keeptime CLI, as a user would. Prints a
table, writes the results as JSON (--json-out) and regenerates
docs/benchmarks.md (--markdown-out) with the machine description.
"""
import argparse
import json
import math
import multiprocessing
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import criu_bench  # noqa: E402  (benchmarks/criu_bench.py: CRIU with and without keeptime's hook)
from helpers import containers  # noqa: E402
from helpers.daemon import RunningDaemon  # noqa: E402  (tests/helpers, shared with the test suite)
from helpers.procstat import cpu_seconds, rss_kb  # noqa: E402
from keeptime import Client  # noqa: E402

NS_PER_S = 1_000_000_000
DAY_NS = 86_400 * NS_PER_S
TARGETS = {
    "restore_over_get_record_floors": 2.0,       # Restore ≤ GetRecord + this many C floors
    "checkpoint_1_over_get_record_ms": 1.0,      # Checkpoint of one process ≤ GetRecord + this
    "jump_over_floor_jump_us": 50.0,             # restored clock jump ≤ the floor's own + this
    "cli_list_ratio_to_bare_call": 1.3,          # keeptime list ≤ this × a bare Python gRPC call
    "checkpoint_1000_median_ms": 100.0,
    "idle_rss_mb": 60.0,
}


# -- statistics -----------------------------------------------------------------

def summary(values_ns: list[int]) -> dict:
    """min / median / p99 / max in microseconds, and the count."""
    ordered = sorted(values_ns)
    p99 = ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]
    return {
        "n": len(ordered),
        "min_us": ordered[0] / 1e3,
        "median_us": statistics.median(ordered) / 1e3,
        "p99_us": p99 / 1e3,
        "max_us": ordered[-1] / 1e3,
    }


def timed(call, n: int, warmup: int = 5) -> list[int]:
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(n):
        started = time.perf_counter_ns()
        call()
        samples.append(time.perf_counter_ns() - started)
    return samples


def host_clock() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


# -- building blocks ------------------------------------------------------------

def compile_c(work: str, source: str, name: str, static: bool = False) -> str:
    """Compile a bench C program; static where asked and the C library allows."""
    out = os.path.join(work, name)
    command = ["gcc", "-O2", "-Wall", "-o", out, source]
    if static and subprocess.run(command + ["-static"], stderr=subprocess.DEVNULL).returncode == 0:
        return out
    subprocess.run(command, check=True)
    return out


def work_directory() -> str:
    """Scratch space on tmpfs where there is one.

    Probes write their first clock reading to a file the restore opened with
    O_TRUNC; on ext4 that truncate alone costs ~150 µs, which would be
    charged to the clock jump although it is the file system's, not keeptime's.
    """
    shm = "/dev/shm"
    base = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None
    return tempfile.mkdtemp(prefix="keeptime-bench-", dir=base)


def read_probe(path: str) -> int:
    with open(path) as f:
        return int(f.read().split()[0])


def machine() -> dict:
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "grpcio": version("grpcio"),
        "protobuf": version("protobuf"),
        "keeptime": version("keeptime"),
    }


class Tree:
    """A test process tree of n processes (benchmarks/tree.c)."""

    def __init__(self, binary: str, n: int):
        self.proc = subprocess.Popen([binary, str(n)], stdout=subprocess.PIPE, text=True)
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("test tree did not start")
        self.pid = self.proc.pid

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


# -- measurements -----------------------------------------------------------------

def measure_floor(floor: str, program: str, n: int) -> tuple[list[int], list[int]]:
    out = subprocess.run([floor, str(n), program], capture_output=True, text=True, check=True).stdout
    rows = [tuple(int(x) for x in line.split()) for line in out.splitlines()]
    return [r[0] for r in rows], [r[1] for r in rows]


def measure_util_linux(probe: str, n: int, work: str) -> tuple[list[int], list[int]]:
    """util-linux unshare per call, given the best whole-second offset that
    never goes below the target (it takes whole seconds only)."""
    totals, jumps = [], []
    out = os.path.join(work, "unshare-probe.txt")
    for _ in range(n):
        host = host_clock()
        target = host + DAY_NS + 123_456_789
        seconds = math.ceil((target - host) / NS_PER_S)  # rounding down would regress
        started = time.perf_counter_ns()
        with open(out, "w") as f:
            subprocess.run(["unshare", "--time", "--fork", "--monotonic", str(seconds),
                            "--boottime", str(seconds), probe], stdout=f, check=True)
        totals.append(time.perf_counter_ns() - started)
        jumps.append(read_probe(out) - target)
    return totals, jumps


def measure_keeptime_restores(kt: Client, record_id: str, n: int) -> list[int]:
    def restore_and_wait():
        kt.wait(kt.restore(record_id, ["/bin/true"], policy="freeze").pid)

    return timed(restore_and_wait, n)


def measure_native(n: int) -> list[int]:
    """The native spawn alone, in this process: no RPC."""
    from keeptimed import native
    from keeptimed.policies import Clocks

    spec = native.ExecSpec(exec_paths=["/bin/true"], argv=["true"], env=[], cwd="/", umask=0o022,
                           stdin_path="/dev/null", stdout_path="/dev/null", stderr_path="/dev/null")

    def spawn_and_wait():
        targets = Clocks(host_clock() + DAY_NS, time.clock_gettime_ns(time.CLOCK_BOOTTIME) + DAY_NS)
        os.waitpid(native.spawn_in_new_timens(spec, targets, Clocks(0, 0)).pid, 0)

    try:
        return timed(spawn_and_wait, n)
    finally:
        native.shutdown()


def measure_jumps(kt: Client, record, probe: str, n: int, work: str) -> list[int]:
    jumps = []
    for i in range(n):
        out = os.path.join(work, f"jump-{i % 8}.txt")
        restored = kt.restore(record.id, [probe], policy="freeze", stdout=out)
        kt.wait(restored.pid)
        jumps.append(read_probe(out) - record.clocks.monotonic_ns)
    return jumps


class OwnCgroups:
    """A new cgroup below this process's own in every cgroup v1 hierarchy
    mounted, to put this process (the caller) in, as a caller in another
    service's cgroup than keeptimed's is: each program keeptimed starts for
    it then moves itself into them (a cgroup migration per hierarchy) before
    its exec. Removed on exit."""

    def __init__(self):
        from keeptimed import cgroups

        with open("/proc/self/mountinfo") as f:
            mounts = [h for h in cgroups.hierarchies(f.read()) if h.key != cgroups.V2]
        with open("/proc/self/cgroup") as f:
            own = cgroups.memberships(f.read())
        self.made = []   # (parent directory, new directory)
        try:
            for hierarchy in mounts:
                parent = hierarchy.directory(own.get(hierarchy.key, ""))
                if parent is None:
                    continue
                directory = os.path.join(parent, f"keeptime-bench-{os.getpid()}")
                os.mkdir(directory)
                self.made.append((parent, directory))
                for name in ("cpuset.cpus", "cpuset.mems"):   # an empty cpuset takes no process
                    if os.path.exists(os.path.join(directory, name)):
                        with open(os.path.join(parent, name)) as src, open(os.path.join(directory, name), "w") as dst:
                            dst.write(src.read())
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _move(directories) -> None:
        for directory in directories:
            with open(os.path.join(directory, "cgroup.procs"), "w") as f:
                f.write("0")

    def join(self) -> None:
        self._move(d for _, d in self.made)

    def leave(self) -> None:
        self._move(p for p, _ in self.made)

    def close(self) -> None:
        self.leave()
        for _, directory in self.made:
            for _ in range(100):   # until the last programs are reaped
                try:
                    os.rmdir(directory)
                    break
                except OSError:
                    time.sleep(0.05)


def measure_jumps_both_ways(kt: Client, record, probe: str, n: int, work: str) -> tuple[list[int], list[int], int]:
    """The clock jump with the caller in keeptimed's cgroups and in cgroups
    of its own (OwnCgroups), interleaved in blocks so that both see the same
    load: (jumps, jumps with cgroup moves, cgroup v1 hierarchies moved in)."""
    same, moved = [], []
    cgroups = OwnCgroups()
    try:
        for done in range(0, n, 20):
            block = min(20, n - done)
            same += measure_jumps(kt, record, probe, block, work)
            if cgroups.made:
                cgroups.join()
                try:
                    moved += measure_jumps(kt, record, probe, block, work)
                finally:
                    cgroups.leave()
    finally:
        cgroups.close()
    return same, moved, len(cgroups.made)


def measure_cli_start(socket_path: str, n: int) -> dict:
    """What starting the CLI costs: whether --version and --help import gRPC,
    and `keeptime list` against a bare Python process that imports grpc and
    the generated API and makes one ListRecords call (the floor for any
    Python command that talks to keeptimed)."""
    keeptime = os.path.join(os.path.dirname(sys.executable), "keeptime")
    probe = ("import sys, runpy; sys.argv = ['keeptime', '{flag}']\n"
             "try:\n    runpy.run_module('keeptime.cli', run_name='__main__')\n"
             "except SystemExit:\n    pass\n"
             "sys.stderr.write('GRPC' if 'grpc' in sys.modules else 'NO-GRPC')")
    imports = {}
    for flag in ("--version", "--help"):
        done = subprocess.run([sys.executable, "-c", probe.format(flag=flag)], capture_output=True, text=True)
        imports[flag] = done.stderr.endswith("NO-GRPC") is False
    bare = ("import grpc\nfrom keeptime.v1 import keeptime_pb2 as pb, keeptime_pb2_grpc as api\n"
            f"with grpc.insecure_channel('unix:{socket_path}') as channel:\n"
            "    api.KeeptimeStub(channel).ListRecords(pb.ListRecordsRequest(page_size=1), timeout=30)\n")

    def run(argv):
        return lambda: subprocess.run(argv, stdout=subprocess.DEVNULL, check=True)

    return {
        "version_imports_grpc": imports["--version"],
        "help_imports_grpc": imports["--help"],
        "list": summary(timed(run([keeptime, "--socket", socket_path, "list"]), n, warmup=2)),
        "bare_call": summary(timed(run([sys.executable, "-c", bare]), n, warmup=2)),
    }


def measure_checkpoints(kt: Client, pid: int, n: int) -> list[int]:
    """Checkpoint RPC round trips for pid's tree (each record deleted, untimed)."""
    samples = []
    for i in range(n + 3):
        started = time.perf_counter_ns()
        record_id = kt.checkpoint(pid)
        if i >= 3:  # warm-up
            samples.append(time.perf_counter_ns() - started)
        kt.delete(record_id)
    return samples


def measure_cli(daemon: RunningDaemon, record_id: str, n: int) -> list[int]:
    def restore_and_wait():
        pid = daemon.cli("restore", record_id, "--policy", "freeze", "--", "/bin/true").stdout.strip()
        daemon.cli("wait", pid)

    return timed(restore_and_wait, n, warmup=1)


def _client_worker(args) -> tuple[int, int, float]:
    """One client: connect and warm up, wait for every client to be ready,
    then call for `seconds`; (calls done, errors, its CPU seconds meanwhile)."""
    socket_path, kind, target, seconds, ready = args
    done = errors = 0

    def one(kt: Client) -> None:
        if kind == "restore":
            kt.wait(kt.restore(target, ["/bin/true"], policy="freeze").pid)
        else:
            kt.delete(kt.checkpoint(target))

    with Client(socket=socket_path) as kt:
        one(kt)
        ready.wait()   # process starts and imports are not part of the measurement
        cpu_before = time.process_time()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                one(kt)
                done += 1
            except Exception:
                errors += 1
        cpu = time.process_time() - cpu_before
    return done, errors, cpu


def measure_throughput(socket_path: str, kind: str, target, clients: int, seconds: float,
                       daemon_pid: int) -> dict:
    """Calls per second with `clients` concurrent clients (each its own
    process), over the same `seconds` for all, and keeptimed's CPU time per
    call meanwhile, and the clients' (they share the machine's CPUs)."""
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(clients) as pool:
        ready = manager.Barrier(clients + 1)
        pending = pool.map_async(_client_worker, [(socket_path, kind, target, seconds, ready)] * clients)
        ready.wait()
        cpu_before = cpu_seconds(daemon_pid)
        results = pending.get()
        cpu = cpu_seconds(daemon_pid) - cpu_before
    done = sum(r[0] for r in results)
    return {"clients": clients, "per_second": done / seconds, "errors": sum(r[1] for r in results),
            "daemon_cpu_us_per_call": cpu / done * 1e6 if done else None,
            "clients_cpu_us_per_call": sum(r[2] for r in results) / done * 1e6 if done else None}


def run(args) -> dict:
    work = work_directory()
    probe = compile_c(work, os.path.join(ROOT, "tests", "helpers", "clockprobe.c"), "clockprobe", static=True)
    floor = compile_c(work, os.path.join(HERE, "floor.c"), "floor")
    tree_bin = compile_c(work, os.path.join(HERE, "tree.c"), "tree")
    n = args.n
    results = {"machine": machine(), "counts": {"restores": n, "jumps": args.jumps}, "targets": TARGETS}

    results["floor"] = summary(measure_floor(floor, "/bin/true", n)[0])
    floor_jump_total, floor_jumps = measure_floor(floor, probe, args.jumps)
    results["floor_jump"] = summary(floor_jumps)
    results["native_spawn"] = summary(measure_native(n))
    ul_totals, ul_jumps = measure_util_linux(probe, max(50, n // 4), work)
    results["util_linux"] = summary(ul_totals)
    results["util_linux_jump"] = summary(ul_jumps)

    # The store stays on the disk a real install uses: its fsyncs are part of the cost.
    store_dir = tempfile.mkdtemp(prefix="keeptime-bench-store-")
    daemon = RunningDaemon(store_dir).start("--log-level", "WARNING")
    try:
        time.sleep(0.5)
        results["daemon_rss_idle_kb"] = rss_kb(daemon.proc.pid)
        sleeper = subprocess.Popen(["sleep", "3600"])
        try:
            with daemon.client() as kt:
                results["grpc_round_trip"] = summary(timed(kt.list, n))  # the store is still empty
                record = kt.checkpoint_record(sleeper.pid)
                results["get_record"] = summary(timed(lambda: kt.get(record.id), n))
                results["restore_rpc"] = summary(timed(
                    lambda: kt.restore(record.id, ["/bin/true"], policy="freeze"), n))   # keeptimed reaps them
                results["restore_wait_rpc"] = summary(measure_keeptime_restores(kt, record.id, n))
                jumps, moved, hierarchies = measure_jumps_both_ways(kt, record, probe, args.jumps, work)
                results["jump"] = summary(jumps)
                if moved:
                    results["jump_caller_cgroups"] = dict(summary(moved), hierarchies=hierarchies)
                jumps += moved
                results["regressions"] = sum(1 for j in jumps if j < 0)
                results["floor_regressions"] = sum(1 for j in floor_jumps if j < 0)
                results["cli_restore_wait"] = summary(measure_cli(daemon, record.id, max(5, n // 40)))
                results["cli_start"] = measure_cli_start(daemon.socket, max(5, n // 40))

                results["checkpoint"] = {}
                for size in (1, 100, 1000):
                    tree = Tree(tree_bin, size)
                    try:
                        results["checkpoint"][str(size)] = summary(measure_checkpoints(kt, tree.pid, args.checkpoints))
                    finally:
                        tree.close()

                results["throughput"] = {"restore": [], "checkpoint": []}
                for clients in args.clients:
                    results["throughput"]["restore"].append(measure_throughput(
                        daemon.socket, "restore", record.id, clients, args.seconds, daemon.proc.pid))
                    results["throughput"]["checkpoint"].append(measure_throughput(
                        daemon.socket, "checkpoint", sleeper.pid, clients, args.seconds, daemon.proc.pid))
            results["daemon_rss_after_kb"] = rss_kb(daemon.proc.pid)
        finally:
            sleeper.kill()
    finally:
        daemon.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(store_dir, ignore_errors=True)
    results["verdicts"] = verdicts(results)
    results["criu_skipped"] = containers.criu_skip_reason() if args.criu_runs else "--criu-runs 0"
    if not results["criu_skipped"]:
        runtimes = ["criu"] + ([] if containers.runc_skip_reason() else ["runc"])
        results["criu"] = criu_bench.run(args.criu_runs, runtimes)
    return results


def verdicts(r: dict) -> dict:
    """Each target's measured value, from one run's results."""
    throughput = {kind: {t["clients"]: t for t in points} for kind, points in r["throughput"].items()}
    return {
        "restore_us": r["restore_rpc"]["median_us"],
        "restore_goal_us": r["get_record"]["median_us"] + TARGETS["restore_over_get_record_floors"]
        * r["floor"]["median_us"],
        "checkpoint_1_us": r["checkpoint"]["1"]["median_us"],
        "checkpoint_1_goal_us": r["get_record"]["median_us"] + TARGETS["checkpoint_1_over_get_record_ms"] * 1e3,
        "throughput": {kind: {"4": points[4]["per_second"], "16": points[16]["per_second"]}
                       for kind, points in throughput.items() if 4 in points and 16 in points},
        "jump_median_us": r["jump"]["median_us"],
        "jump_median_above_floor_jump_us": r["jump"]["median_us"] - r["floor_jump"]["median_us"],
        "cli_imports_grpc": r["cli_start"]["version_imports_grpc"] or r["cli_start"]["help_imports_grpc"],
        "cli_list_ratio": r["cli_start"]["list"]["median_us"] / r["cli_start"]["bare_call"]["median_us"],
        "regressions": r["regressions"],
        "checkpoint_1000_median_ms": r["checkpoint"]["1000"]["median_us"] / 1e3,
        "idle_rss_mb": r["daemon_rss_idle_kb"] / 1024,
    }


# -- output ---------------------------------------------------------------------------

def table(r: dict) -> str:
    lines = []
    m = r["machine"]
    lines.append(f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux {m['kernel']}, "
                 f"Python {m['python']}, grpcio {m['grpcio']}, keeptime {m['keeptime']}")
    lines.append("")
    lines.append("| measurement | n | min µs | median µs | p99 µs | max µs |")
    lines.append("|---|---:|---:|---:|---:|---:|")

    def row(name, s):
        lines.append(f"| {name} | {s['n']} | {s['min_us']:.1f} | {s['median_us']:.1f} | {s['p99_us']:.1f} | {s['max_us']:.1f} |")

    row("floor: C loop unshare → offsets → clone3 → exec /bin/true → wait", r["floor"])
    row("util-linux `unshare --time --fork ... /bin/true` per call", r["util_linux"])
    row("keeptime native spawn alone, in-process (+ waitpid)", r["native_spawn"])
    row("keeptime Restore RPC + Wait RPC, /bin/true", r["restore_wait_rpc"])
    row("gRPC round trip of an empty call (ListRecords on an empty store)", r["grpc_round_trip"])
    row("GetRecord RPC", r["get_record"])
    row("Restore RPC alone, /bin/true (until its exec is confirmed)", r["restore_rpc"])
    row("keeptime CLI restore + CLI wait (two Python process starts)", r["cli_restore_wait"])
    row("clock jump, floor (C loop, offsets written → probe's first read)", r["floor_jump"])
    row("clock jump, keeptime freeze (restored − recorded MONOTONIC)", r["jump"])
    if "jump_caller_cgroups" in r:
        row(f"clock jump, the same, caller in other cgroups than keeptimed's "
            f"({r['jump_caller_cgroups']['hierarchies']} cgroup v1 moves before exec)", r["jump_caller_cgroups"])
    row("clock jump, util-linux unshare with best whole-second offset", r["util_linux_jump"])
    for size, s in r["checkpoint"].items():
        row(f"Checkpoint RPC, tree of {size} process(es)", s)
    lines.append("")
    checked = r["jump"]["n"] + r.get("jump_caller_cgroups", {}).get("n", 0)
    lines.append(f"Clock regressions: keeptime {r['regressions']} of {checked}, floor {r['floor_regressions']} "
                 f"of {r['floor_jump']['n']}.")
    lines.append("")
    lines.append("| throughput | " + " | ".join(f"{t['clients']} client(s)" for t in r["throughput"]["restore"]) + " |")
    lines.append("|---|" + "---:|" * len(r["throughput"]["restore"]))
    for kind, label in (("restore", "restores/s (Restore + Wait, /bin/true)"), ("checkpoint", "checkpoints/s (1 process, + delete)")):
        cells = [f"{t['per_second']:.0f}" + (f" ({t['errors']} errors)" if t["errors"] else "") for t in r["throughput"][kind]]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
        for side, key in (("keeptimed", "daemon_cpu_us_per_call"), ("the clients'", "clients_cpu_us_per_call")):
            cpu = [f"{t[key]:.0f}" if t.get(key) else "-" for t in r["throughput"][kind]]
            lines.append(f"| {side} CPU µs per {kind} | " + " | ".join(cpu) + " |")
    lines.append("")
    cli = r["cli_start"]
    lines.append(f"CLI start: `keeptime list` {cli['list']['median_us'] / 1e3:.1f} ms against a bare Python process "
                 f"importing grpc and the API for one call {cli['bare_call']['median_us'] / 1e3:.1f} ms (medians of "
                 f"{cli['list']['n']}); `--version` imports gRPC: {'yes' if cli['version_imports_grpc'] else 'no'}, "
                 f"`--help`: {'yes' if cli['help_imports_grpc'] else 'no'}.")
    lines.append("")
    lines.append(f"Daemon RSS: idle {r['daemon_rss_idle_kb'] / 1024:.1f} MiB, after the run {r['daemon_rss_after_kb'] / 1024:.1f} MiB.")
    lines.append("")
    v, t = r["verdicts"], r["targets"]
    lines.append("| target | goal | measured | |")
    lines.append("|---|---|---|---|")

    def verdict(name, goal, value, ok):
        lines.append(f"| {name} | {goal} | {value} | {'met' if ok else 'MISSED'} |")

    verdict("Restore (until exec confirmed) vs GetRecord + 2 C floors (medians)",
            f"≤ GetRecord + {t['restore_over_get_record_floors']:.0f} × floor",
            f"{v['restore_us']:.0f} µs vs {v['restore_goal_us']:.0f} µs", v["restore_us"] <= v["restore_goal_us"])
    verdict("Checkpoint of 1 process vs GetRecord + 1 ms (medians)",
            f"≤ GetRecord + {t['checkpoint_1_over_get_record_ms']:.0f} ms",
            f"{v['checkpoint_1_us']:.0f} µs vs {v['checkpoint_1_goal_us']:.0f} µs",
            v["checkpoint_1_us"] <= v["checkpoint_1_goal_us"])
    for kind, points in v["throughput"].items():
        verdict(f"{kind}s/s with 16 clients vs 4", "≥ the 4-client figure",
                f"{points['16']:.0f} vs {points['4']:.0f}", points["16"] >= points["4"])
    verdict("clock jump under freeze vs the floor's own (medians)", f"≤ +{t['jump_over_floor_jump_us']:.0f} µs",
            f"{v['jump_median_us']:.1f} µs ({v['jump_median_above_floor_jump_us']:+.1f} µs)",
            v["jump_median_above_floor_jump_us"] <= t["jump_over_floor_jump_us"])
    verdict("`keeptime --version` and `--help` import gRPC", "no", "yes" if v["cli_imports_grpc"] else "no",
            not v["cli_imports_grpc"])
    verdict("`keeptime list` vs a bare Python gRPC call (medians)", f"≤ {t['cli_list_ratio_to_bare_call']}×",
            f"{v['cli_list_ratio']:.2f}×", v["cli_list_ratio"] <= t["cli_list_ratio_to_bare_call"])
    verdict("regressions", "0", str(v["regressions"]), v["regressions"] == 0)
    verdict("checkpoint, 1000 processes (median)", f"≤ {t['checkpoint_1000_median_ms']:.0f} ms",
            f"{v['checkpoint_1000_median_ms']:.1f} ms", v["checkpoint_1000_median_ms"] <= t["checkpoint_1000_median_ms"])
    verdict("daemon RSS idle", f"≤ {t['idle_rss_mb']:.0f} MB", f"{v['idle_rss_mb']:.1f} MiB",
            v["idle_rss_mb"] <= t["idle_rss_mb"])
    return "\n".join(lines)


MARKDOWN_HEAD = """# keeptime benchmarks

Generated by `benchmarks/bench.py` (do not edit by hand; rerun it). Every
number below comes from one run on the machine described, so ratios are
meaningful even where absolute times are not. Latencies are wall-clock on the
host's CLOCK_MONOTONIC; clock jumps are what a restored C probe
(tests/helpers/clockprobe.c, linked statically so the dynamic loader is not
counted) reads as its very first action minus the value it should continue
from; probe output goes to tmpfs.

"""


MARKDOWN_LIMITS = """
## Where the time goes, and what limits the targets missed

Profiled on the 2-core VM these numbers come from (py-spy of keeptimed under
load, ftrace of the spawn path, the native spawn and gRPC measured alone).

- **Restore ≤ GetRecord + 2 floors** and **Checkpoint of one process ≤
  GetRecord + 1 ms** compare what keeptimed adds with an empty round trip
  through the same socket and relay: a GetRecord costs the client about
  0.6 ms of which keeptimed's handler is under 0.1 ms, the rest being
  Python grpcio on both ends and the relay. Restore adds the native spawn
  (the helper hop, and the program's own set-up and exec, confirmed when
  its report socket hangs up) and the caller's confinement; Checkpoint adds
  reading /proc and an fsync'd SQLite commit (WAL, synchronous=FULL: an
  acknowledged record survives a power cut).
- **Clock jump.** The restored program makes its time namespace itself: it
  unshares one, takes on its caller's cgroups, namespaces and limits and
  closes every other descriptor while still in keeptimed's namespace, and
  only then reads the host clock, writes the offsets and enters the
  namespace with setns. Its jump holds setns, the privilege drop, opening
  its stdio and the exec; the floor's also holds a clone3 and the new
  child's first scheduling. Profiled with ftrace, the old order (offsets,
  then clone3 with CLONE_INTO_CGROUP, then the child's set-up) spent ~65 µs
  in clone3, 10-50 µs before the child first ran and ~30 µs in its set-up,
  plus a cgroup migration per v1 hierarchy when the caller's cgroups were
  not keeptimed's (the row with 9 moves now matches the one without). What
  is left above the kernel's minimum, under load: keeptimed's threads wake
  when the program execs and share the two cores with the program's first
  instructions. Aiming the targets below the recorded values by an expected
  exec latency would hide the jump, but any exec slower than the guess
  would read a clock that went backwards, so keeptime does not.
- **Throughput with 16 clients ≥ 4 clients.** The clients are Python
  processes on the same two cores as keeptimed, and with 16 of them each
  one's CPU per call grows by about half (row "the clients' CPU"):
  preemption, not keeptimed. keeptimed's own CPU per call grows by a few per
  cent (+1 to +7 % in the medians of interleaved runs), since quick calls
  run on `quick_workers` (two threads per CPU) and waits and streams on
  `workers`; with 32 threads for every call it grew by 4 to 16 % (GIL
  hand-offs: its voluntary context switches per restore rose by 40 to 50 %
  from 4 to 16 clients, now by 15 to 20 %) and 16 clients lost 10 to 15 %
  against 4 in every run. Across runs on a quiet VM, 16 clients reached 85 to 101 %
  of the 4-client restores/s and 95 to 103 % of its checkpoints/s, so
  each is met in some runs and missed in others; keeptimed's own CPU per
  restore moved by -1 to +15 % between the two (GIL hand-offs among its
  threads with 16 calls in flight), the clients' by +20 to +65 %. What would close the rest: clients that do not share
  keeptimed's cores, as on a host whose CRIU runs call it now and then.
- **Every call crosses the caller relay.** To know who calls (SO_PEERCRED,
  which grpcio hides), keeptimed accepts on its public socket and relays
  each connection to the gRPC server's private socket from one Python
  thread: 0.1 to 0.3 ms per round trip on this VM. Moving the byte pump out
  of the GIL (a C loop in the native module) is the known next step; the
  latency targets above are met without it.
- **CLI start.** `keeptime --help`, `--version` and usage errors import
  neither gRPC nor protobuf (the version is a constant: importlib.metadata
  alone cost 60 ms), and a command loads only what it uses.
- **CRIU with the hook.** CRIU forks and waits for its action script at
  every step (six on a dump and restore of a host tree here), so any
  script costs something: row */bin/true* is that floor, 1.04 to 1.23× of
  a plain restore in our runs. Steps keeptime does not use cost the
  forwarder's start (0.4 ms, less than a shell's). The three it uses on a
  restore each cost a round trip to keeptimed (about 0.7 ms: connect,
  descriptors sent, answer) and keeptimed's work: pre-restore about 1.7 ms
  (importing the record, planning, rewriting the time namespace image;
  only the first restore of a dump makes anything durable: CRIU's original
  and the dump it belongs to), post-restore about 1.3 ms (reading the
  restored tree, storing the verdict with an fsync'd SQLite commit);
  post-resume is answered before it is verified. That is 7 to 14 ms on the
  bare ticker, whose plain restore takes 31 to 37 ms: 1.25 to 1.45× across
  runs, so the 1.3× restore target is missed there more often than met.
  It is a cost per restore, not per page: the same process holding 64 MiB
  (row *criu, 64 MiB*) restores within it, as runc does. The restored
  tree's MONOTONIC step, what the hook must not spoil, stays within a few
  ms of CRIU's own.
- **Variance.** This is a 2-vCPU VM on a shared host: the C floor itself
  moved between 0.57 and 0.87 ms median across runs of the same day, so
  compare the ratios within one run, not absolute times across runs.
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run, not a measurement")
    parser.add_argument("-n", type=int, default=None, help="restores per latency measurement (default 1000)")
    parser.add_argument("--jumps", type=int, default=None, help="restores for the clock jump (default 1000)")
    parser.add_argument("--checkpoints", type=int, default=None, help="checkpoints per tree size (default 200)")
    parser.add_argument("--seconds", type=float, default=None, help="per throughput point (default 3)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--criu-runs", type=int, default=None,
                        help="dumps and restores per CRIU variant (default 20; 0 skips the CRIU section)")
    parser.add_argument("--json-out", default=None, help="write the results as JSON here")
    parser.add_argument("--markdown-out", default=None, help="write the table as Markdown here (docs/benchmarks.md)")
    parser.add_argument("--from-json", default=None, help="do not measure: render the results of an earlier --json-out")
    args = parser.parse_args()
    quick = args.quick
    args.n = args.n or (20 if quick else 1000)
    args.jumps = args.jumps or (20 if quick else 1000)
    args.checkpoints = args.checkpoints or (8 if quick else 200)
    args.seconds = args.seconds or (0.5 if quick else 3.0)
    args.criu_runs = (2 if quick else 20) if args.criu_runs is None else args.criu_runs
    if args.from_json:
        with open(args.from_json) as f:
            results = json.load(f)
    elif os.geteuid() != 0:
        print("bench.py: run as root (time namespaces need CAP_SYS_ADMIN and CAP_SYS_TIME)", file=sys.stderr)
        return 2
    else:
        results = run(args)
    text = table(results)
    if "criu" in results:
        text += "\n\n" + criu_bench.markdown(results["criu"])
    else:
        text += f"\nCRIU section not measured: {results.get('criu_skipped') or 'an older run'}.\n"
    print(text)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(results, f, indent=2)
    if args.markdown_out:
        with open(args.markdown_out, "w") as f:
            f.write(MARKDOWN_HEAD + text + "\n" + MARKDOWN_LIMITS)
    return 1 if results["regressions"] else 0


if __name__ == "__main__":
    sys.exit(main())
