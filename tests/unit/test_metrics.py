"""The Prometheus text exposition keeptimed writes itself."""
import threading

import pytest

from keeptimed.metrics import Counter, Gauge, Histogram, KeeptimeMetrics, Registry


def test_counter_and_label_escaping():
    r = Registry()
    c = r.add(Counter("keeptime_x_total", "Things.", ("rpc",)))
    c.inc(rpc='a"b\\c\nd')
    c.inc(2, rpc="plain")
    assert r.render() == (
        "# HELP keeptime_x_total Things.\n"
        "# TYPE keeptime_x_total counter\n"
        'keeptime_x_total{rpc="a\\"b\\\\c\\nd"} 1\n'
        'keeptime_x_total{rpc="plain"} 2\n'
    )
    with pytest.raises(ValueError):
        c.inc(-1, rpc="plain")
    with pytest.raises(ValueError):
        c.inc(rpc="x", status="y")


def test_histogram_buckets_are_cumulative_with_sum_and_count():
    h = Histogram("keeptime_h_seconds", "H.", (0.1, 1), ("clock",))
    for v in (0.05, 0.1, 0.5, 7):
        h.observe(v, clock="monotonic")
    assert h.samples() == [
        'keeptime_h_seconds_bucket{clock="monotonic",le="0.1"} 2',
        'keeptime_h_seconds_bucket{clock="monotonic",le="1.0"} 3',
        'keeptime_h_seconds_bucket{clock="monotonic",le="+Inf"} 4',
        'keeptime_h_seconds_sum{clock="monotonic"} 7.65',
        'keeptime_h_seconds_count{clock="monotonic"} 4',
    ]


def test_a_failing_gauge_costs_its_sample_not_the_scrape():
    r = Registry()
    r.add(Gauge("keeptime_bad", "Fails.", lambda: 1 / 0))
    r.add(Gauge("keeptime_good", "Works.", lambda: 3))
    assert r.render().splitlines()[-1] == "keeptime_good 3"


def test_updates_from_many_threads_are_all_counted():
    m = KeeptimeMetrics("test")

    def work():
        for _ in range(2000):
            m.observe_call("Checkpoint", "OK", 0.001)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert m.requests.value(rpc="Checkpoint", status="OK") == 16000
    assert 'keeptime_request_duration_seconds_count{rpc="Checkpoint",status="OK"} 16000' in m.render()
    assert 'keeptime_clock_regressions_total{clock="monotonic"} 0' in m.render()
