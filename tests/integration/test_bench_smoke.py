"""The benchmark harness runs end to end (small counts) and reports sane results.

No timing is asserted: benchmarks measure, tests check behaviour. What is
checked is that every measurement produced numbers and that no restore ever
saw its clock regress.
"""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = pytest.mark.root


def test_bench_quick_run_writes_consistent_json_and_markdown(tmp_path):
    out_json, out_md = tmp_path / "bench.json", tmp_path / "bench.md"
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "bench.py"), "--quick",
         "--json-out", str(out_json), "--markdown-out", str(out_md)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(out_json.read_text())
    for key in ("floor", "floor_jump", "native_spawn", "util_linux", "restore_wait_rpc", "jump", "grpc_round_trip"):
        assert results[key]["n"] > 0 and 0 < results[key]["min_us"] <= results[key]["median_us"] <= results[key]["max_us"], key
    assert results["regressions"] == 0
    assert results["floor_regressions"] == 0
    assert set(results["checkpoint"]) == {"1", "100", "1000"}
    assert all(point["errors"] == 0 for kind in results["throughput"].values() for point in kind)
    assert 0 < results["daemon_rss_idle_kb"]
    markdown = out_md.read_text()
    assert "| target | goal | measured |" in markdown and "Machine:" in markdown
    assert "clock jump, keeptime freeze" in result.stdout
