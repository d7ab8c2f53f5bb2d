"""Prometheus metrics without a dependency: counters, histograms and gauges
rendered in the text exposition format (version 0.0.4), and the set of
metrics keeptimed keeps. Every metric is safe to update from any thread.
"""
import math
import threading
import time
from typing import Callable, Iterable, Optional

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds. RPCs range from sub-millisecond record reads to restores (a few ms)
# and Waits that last as long as the waited process.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# Seconds. A restored program's first clock read is normally 0.1-2 ms above
# its target (the exec latency); anything near a second means trouble.
CLOCK_JUMP_BUCKETS = (1e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    if isinstance(value, int) or float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def _labels(names: tuple, values: tuple, extra: str = "") -> str:
    pairs = [f'{n}="{_escape(str(v))}"' for n, v in zip(names, values)]
    if extra:
        pairs.append(extra)
    return "{" + ",".join(pairs) + "}" if pairs else ""


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, help_text: str, labels: Iterable[str] = ()):
        self.name = name
        self.help = help_text
        self.label_names = tuple(labels)
        self._lock = threading.Lock()

    def _key(self, labels: dict) -> tuple:
        if set(labels) != set(self.label_names):
            raise ValueError(f"{self.name} takes labels {self.label_names}, got {tuple(labels)}")
        return tuple(str(labels[n]) for n in self.label_names)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def samples(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    """A value that only goes up, per label combination."""

    kind = "counter"

    def __init__(self, name, help_text, labels=()):
        super().__init__(name, help_text, labels)
        self._values: dict[tuple, float] = {}

    def inc(self, amount: float = 1, **labels) -> None:
        if amount < 0:
            raise ValueError("a counter cannot go down")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0) + amount

    def value(self, **labels) -> float:
        with self._lock:
            return self._values.get(self._key(labels), 0)

    def samples(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return [f"{self.name}{_labels(self.label_names, key)} {_number(v)}" for key, v in items]


class Histogram(_Metric):
    """Observations counted into fixed buckets, with their sum and count."""

    kind = "histogram"

    def __init__(self, name, help_text, buckets: Iterable[float], labels=()):
        super().__init__(name, help_text, labels)
        self.bounds = tuple(sorted(buckets)) + (math.inf,)
        self._series: dict[tuple, list] = {}  # key -> [per-bucket counts, sum, count]

    def observe(self, value: float, **labels) -> None:
        key = self._key(labels)
        index = next(i for i, bound in enumerate(self.bounds) if value <= bound)
        with self._lock:
            series = self._series.setdefault(key, [[0] * len(self.bounds), 0.0, 0])
            series[0][index] += 1
            series[1] += value
            series[2] += 1

    def samples(self) -> list[str]:
        with self._lock:
            items = sorted((key, (list(s[0]), s[1], s[2])) for key, s in self._series.items())
        lines = []
        for key, (counts, total, count) in items:
            cumulative = 0
            for bound, n in zip(self.bounds, counts):
                cumulative += n
                le = f'le="{_number(bound) if bound == math.inf else repr(float(bound))}"'
                lines.append(f"{self.name}_bucket{_labels(self.label_names, key, le)} {cumulative}")
            lines.append(f"{self.name}_sum{_labels(self.label_names, key)} {_number(total)}")
            lines.append(f"{self.name}_count{_labels(self.label_names, key)} {count}")
        return lines


class Gauge(_Metric):
    """A value read at scrape time from a function (None: no sample)."""

    kind = "gauge"

    def __init__(self, name, help_text, read: Callable[[], Optional[float]], labels: dict = None):
        super().__init__(name, help_text, tuple(labels or ()))
        self._read = read
        self._label_values = tuple((labels or {}).values())

    def samples(self) -> list[str]:
        try:
            value = self._read()
        except Exception:  # a failing reader costs its sample, never the scrape
            return []
        if value is None:
            return []
        return [f"{self.name}{_labels(self.label_names, self._label_values)} {_number(value)}"]


class Registry:
    """The metrics one endpoint serves, in registration order."""

    def __init__(self) -> None:
        self._metrics: list[_Metric] = []

    def add(self, metric: _Metric) -> _Metric:
        self._metrics.append(metric)
        return metric

    def names(self) -> list[str]:
        """The names of the metrics registered, in order."""
        return [metric.name for metric in self._metrics]

    def render(self) -> str:
        lines: list[str] = []
        for metric in self._metrics:
            lines += metric.header() + metric.samples()
        return "\n".join(lines) + "\n"


CLOCKS = ("monotonic", "boottime")


class KeeptimeMetrics:
    """Everything keeptimed measures. Names are prefixed keeptime_."""

    def __init__(self, version: str):
        r = self.registry = Registry()
        started = time.time()
        r.add(Gauge("keeptime_build_info", "Always 1; the version label says which keeptimed runs.",
                    lambda: 1, {"version": version}))
        r.add(Gauge("keeptime_start_time_seconds", "When this keeptimed started, in Unix time.", lambda: started))
        self.requests = r.add(Counter(
            "keeptime_requests_total", "keeptime.v1 RPCs handled, by method and gRPC status.", ("rpc", "status")))
        self.latency = r.add(Histogram(
            "keeptime_request_duration_seconds", "Time to handle keeptime.v1 RPCs, by method and gRPC status.",
            LATENCY_BUCKETS, ("rpc", "status")))
        self.restores = r.add(Counter(
            "keeptime_restores_total",
            "Processes started in a new time namespace, by policy and mechanism; mechanism=criu counts CRIU "
            "restores verified (at post-restore, or any stage but post-resume).",
            ("policy", "mechanism")))
        self.clock_jump = r.add(Histogram(
            "keeptime_restore_clock_jump_seconds",
            "How far the restored namespace's clock had moved past its target when keeptimed saw the "
            "exec succeed (host clock then + offset written - target): the exec latency the restored "
            "program's clocks start with.",
            CLOCK_JUMP_BUCKETS, ("clock",)))
        self.regressions = r.add(Counter(
            "keeptime_clock_regressions_total",
            "Restores (keeptimed's own, and CRIU restores root's VerifyRestore checked) where a clock was seen "
            "below its recorded or target value. Must stay 0.", ("clock",)))
        self.user_regressions = r.add(Counter(
            "keeptime_clock_regressions_unprivileged_total",
            "Regressions in verdicts a caller other than root asked for (rootless CRIU), on its own record and "
            "processes: its records and images may carry any clock values, so they are its word, not keeptime's.",
            ("clock",)))
        for clock in CLOCKS + ("unknown",):
            self.regressions.inc(0, clock=clock)
        for clock in CLOCKS:
            self.user_regressions.inc(0, clock=clock)
        self.unverified = r.add(Counter(
            "keeptime_restores_unverified_total",
            "CRIU restores keeptime could not verify (the tree was gone or unreadable, nothing to verify "
            "against), by stage. Never counted as verified.", ("stage",)))
        for stage in ("post-restore", "post-resume"):
            self.unverified.inc(0, stage=stage)
        self.hook_steps = r.add(Counter(
            "keeptime_criu_hook_steps_total", "CRIU steps the hook forwarded to keeptimed, by action and result "
            "(OK, FAILED: the step failed, USAGE: a bad request or configuration).", ("action", "result")))
        self.hook_latency = r.add(Histogram(
            "keeptime_criu_hook_duration_seconds", "Time keeptimed spent on a forwarded CRIU step, by action.",
            LATENCY_BUCKETS, ("action",)))
        self.refusals = r.add(Counter(
            "keeptime_limit_refusals_total", "Calls and CRIU hook steps refused by a limit on callers other "
            "than root, by the limit (a configuration key, or root_descriptors).", ("limit",)))

    def add_gauge(self, name: str, help_text: str, read: Callable[[], Optional[float]]) -> None:
        """A gauge read from the daemon's state at scrape time."""
        self.registry.add(Gauge(name, help_text, read))

    def observe_call(self, rpc: str, status: str, seconds: float) -> None:
        self.requests.inc(rpc=rpc, status=status)
        self.latency.observe(seconds, rpc=rpc, status=status)

    def observe_restore(self, policy: str, mechanism: str) -> None:
        self.restores.inc(policy=policy, mechanism=mechanism)

    def observe_clock_jump(self, clock: str, seconds: float) -> None:
        self.clock_jump.observe(seconds, clock=clock)

    def regression(self, clock: str) -> None:
        self.regressions.inc(clock=clock)

    def unprivileged_regression(self, clock: str) -> None:
        self.user_regressions.inc(clock=clock)

    def observe_hook(self, action: str, result: str, seconds: float) -> None:
        self.hook_steps.inc(action=action, result=result)
        self.hook_latency.observe(seconds, action=action)

    def refused(self, limit: str) -> None:
        self.refusals.inc(limit=limit)

    def unverified_restore(self, stage: str) -> None:
        self.unverified.inc(stage=stage)

    def render(self) -> str:
        return self.registry.render()
