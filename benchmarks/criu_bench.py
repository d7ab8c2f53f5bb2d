#!/usr/bin/env python3
"""What keeptime's CRIU hook costs a real CRIU, side by side in one run.

    .venv/bin/python benchmarks/criu_bench.py [--runs 20] [--json-out FILE]     (as root)

One process (a static ticker writing MONOTONIC and BOOTTIME every 10 ms) is
dumped and restored by plain `criu` (as it is, and holding 64 MiB of written
memory, a small service's size) and by `runc`, alternately with no
action script, with keeptime's action script as shipped (keeptime-criu-hook,
the shell script that execs the native forwarder beside it; policy suspend, a
private keeptimed), with the native forwarder named directly (what
deploy/install.sh installs as /usr/libexec/keeptime/criu-hook) and with the
Python hook alone (`keeptime criu-hook` behind a shell script: all a client-only
installation has), and with /bin/true as the action script (what CRIU itself
pays for running any script at each step, the floor under every hook).
For each: the median wall time of the dump and of the restore command, and
of the MONOTONIC step the restored ticker sees (first tick after the restore
minus the last before the dump; it includes up to one 10 ms tick). Also the
start cost of one CRIU step keeptime does not use, and of one it uses.

bench.py runs this too and puts the tables in docs/benchmarks.md.
"""
import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from helpers import containers, hookbin  # noqa: E402  (tests/helpers, shared with the test suite)
from helpers.daemon import RunningDaemon  # noqa: E402

TARGET_RATIO = 1.3          # dump and restore with the hook vs without
TARGET_STEP_MS = 30.0       # extra MONOTONIC step across a hooked restore
SERVICE_MIB = 64            # memory of the second plain-CRIU process: a small service's


def median_ms(values: list[float]) -> float:
    return statistics.median(values)


def start_cost_ms(argv: list[str], env: dict, runs: int = 300) -> float:
    """Median wall time of starting argv and waiting for it (posix_spawn + exec + exit),
    its output discarded."""
    times = []
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        for _ in range(runs):
            started = time.perf_counter_ns()
            pid = os.posix_spawn(argv[0], argv, env, file_actions=[(os.POSIX_SPAWN_DUP2, null, 1),
                                                                     (os.POSIX_SPAWN_DUP2, null, 2)])
            os.waitpid(pid, 0)
            times.append((time.perf_counter_ns() - started) / 1e6)
    finally:
        os.close(null)
    return median_ms(times)


def run(runs: int, runtimes: list[str]) -> dict:
    work = containers.public_dir("keeptime-criu-bench-")
    daemon = RunningDaemon(tempfile.mkdtemp(prefix="keeptimed-bench-")).start()
    try:
        ticker = containers.build_ticker(work)
        config = os.path.join(work, "criu-hook.toml")
        with open(config, "w") as f:
            f.write('policy = "suspend"\n')
        # CRIU (and runc, which starts it) passes its environment to the action script.
        os.environ.update(KEEPTIME_SOCKET=daemon.socket, KEEPTIME_CRIU_HOOK_CONFIG=config,
                          KEEPTIME_CLI=hookbin.KEEPTIME_CLI)
        python_hook = containers.write_script(os.path.join(work, "python-hook.sh"), (
            f"#!/bin/sh\nexec '{hookbin.KEEPTIME_CLI}' criu-hook\n"))
        os.mkdir(os.path.join(work, "bin"))
        hook = hookbin.install_hook(os.path.join(work, "bin"))
        forwarder = os.path.join(work, "bin", "keeptime-criu-forward")
        # /bin/true: what CRIU pays for running any action script at each step, before keeptime.
        scripts = {"none": None, "/bin/true": "/bin/true", "keeptime-criu-hook": hook,
                   "keeptime-criu-forward": forwarder, "python hook": python_hook}
        cases = [(runtime, runtime, 0, scripts) for runtime in runtimes]
        if "criu" in runtimes:   # keeptime's cost is per restore, not per page: a process of a service's size
            cases.insert(1, (f"criu, {SERVICE_MIB} MiB", "criu", SERVICE_MIB,
                             {name: scripts[name] for name in ("none", "/bin/true", "keeptime-criu-hook")}))
        results = {"runs": runs, "runtimes": {}}
        for case, runtime, memory_mib, variants in cases:
            samples = {name: [] for name in variants}
            for i in range(runs):
                for name, script in variants.items():   # interleaved: drift hits every variant alike
                    workdir = os.path.join(work, f"{runtime}-{memory_mib}-{i}-{name.replace('/', '').replace(' ', '-')}")
                    m = containers.measure(ticker, workdir, runtime, script, memory_mib=memory_mib)
                    shutil.rmtree(workdir, ignore_errors=True)
                    samples[name].append((m.dump_s * 1e3, m.restore_s * 1e3, m.monotonic_step_ms))
            results["runtimes"][case] = {
                name: {"dump_ms": median_ms([s[0] for s in values]),
                       "restore_ms": median_ms([s[1] for s in values]),
                       "step_ms": median_ms([s[2] for s in values])}
                for name, values in samples.items()}
        unused = {"PATH": "/usr/bin:/bin", "CRTOOLS_SCRIPT_ACTION": "pre-resume"}
        by_hand = {"PATH": "/usr/bin:/bin"}   # the chain of a step keeptime uses, up to where work starts
        results["step_start_ms"] = {
            "keeptime-criu-hook, a step it does not use": start_cost_ms([hook], unused),
            "keeptime-criu-forward, a step it does not use": start_cost_ms([forwarder], unused),
            "keeptime-criu-hook execing the forwarder (run by hand: exits 2)": start_cost_ms([hook], by_hand),
            "keeptime-criu-forward (run by hand: exits 2)": start_cost_ms([forwarder], by_hand),
            "sh -c 'exit 0'": start_cost_ms(["/bin/sh", "-c", "exit 0"], unused),
            "python3 -c pass": start_cost_ms(["/usr/bin/python3", "-c", "pass"], unused, runs=50),
            "keeptime criu-hook, a step it does not use": start_cost_ms([hookbin.KEEPTIME_CLI, "criu-hook"],
                                                                        unused, runs=20),
        }
        return results
    finally:
        daemon.stop()
        shutil.rmtree(work, ignore_errors=True)


def verdicts(results: dict) -> list[tuple[str, str, str, bool]]:
    """(target, goal, measured, met) rows."""
    rows = []
    for runtime, variants in results["runtimes"].items():
        base, hook = variants["none"], variants["keeptime-criu-hook"]
        floor = variants.get("/bin/true")
        for what in ("dump", "restore"):
            ratio = hook[f"{what}_ms"] / base[f"{what}_ms"]
            any_script = f"; /bin/true {floor[f'{what}_ms'] / base[f'{what}_ms']:.2f}×" if floor else ""
            rows.append((f"{runtime} {what} with the hook vs without", f"≤ {TARGET_RATIO}×",
                         f"{ratio:.2f}× ({hook[f'{what}_ms']:.0f} vs {base[f'{what}_ms']:.0f} ms{any_script})",
                         ratio <= TARGET_RATIO))
        extra = hook["step_ms"] - base["step_ms"]
        rows.append((f"{runtime} restored MONOTONIC step, hook vs none", f"≤ +{TARGET_STEP_MS:.0f} ms",
                     f"{extra:+.1f} ms ({hook['step_ms']:.1f} vs {base['step_ms']:.1f} ms)",
                     extra <= TARGET_STEP_MS))
    return rows


def markdown(results: dict) -> str:
    """The CRIU section of docs/benchmarks.md."""
    out = ["## CRIU with keeptime's hook", "",
           f"One static ticker process, dumped and restored {results['runs']} times per variant, variants "
           f"interleaved; medians. *criu, {SERVICE_MIB} MiB* is the same process holding {SERVICE_MIB} MiB of "
           "written memory (a small service's size). *keeptime-criu-hook* is the action script as shipped (a shell script "
           "that execs the native forwarder beside it), *keeptime-criu-forward* the forwarder named "
           "directly (as deploy/install.sh installs /usr/libexec/keeptime/criu-hook), *python hook* "
           "`keeptime criu-hook` behind a shell script (a client-only installation's hook), */bin/true* an "
           "action script that does nothing (what CRIU pays for running any script at each step). Policy "
           "suspend, a private keeptimed.", ""]
    for runtime, variants in results["runtimes"].items():
        out += [f"| {runtime} | dump ms | restore ms | MONOTONIC step ms |", "|---|---:|---:|---:|"]
        out += [f"| {name} | {v['dump_ms']:.1f} | {v['restore_ms']:.1f} | {v['step_ms']:.1f} |"
                for name, v in variants.items()]
        out.append("")
    out += ["| one CRIU step's start | median ms |", "|---|---:|"]
    out += [f"| {name} | {ms:.2f} |" for name, ms in results["step_start_ms"].items()]
    out += ["", "| target | goal | measured | |", "|---|---|---|---|"]
    out += [f"| {t} | {g} | {m} | {'met' if ok else 'MISSED'} |" for t, g, m, ok in verdicts(results)]
    return "\n".join(out) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="dumps and restores per variant (default 20)")
    parser.add_argument("--json-out", help="write the results as JSON here")
    args = parser.parse_args()
    reason = containers.criu_skip_reason()
    if reason:
        raise SystemExit(f"cannot benchmark CRIU here: {reason}")
    runtimes = ["criu"] + ([] if containers.runc_skip_reason() else ["runc"])
    results = run(args.runs, runtimes)
    print(markdown(results))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
