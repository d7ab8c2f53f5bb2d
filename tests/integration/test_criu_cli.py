"""`keeptime restore --criu-images DIR -- CMD` and `keeptime restores` against a real keeptimed."""
import json
import os
import subprocess

import pytest

from helpers.probes import read_probe
from keeptime.criu.image import TimensClocks, encode_timens
from keeptime.recordfile import encode as encode_record

pytestmark = pytest.mark.root

MS = 10**6


def test_restore_from_a_criu_image_directory(daemon, client, far_process, clockprobe, tmp_path):
    inside, _ = far_process
    record = client.checkpoint_record(inside)
    images = tmp_path / "images"
    images.mkdir()
    # As on another host: the record exists only in the image directory.
    record.id = os.urandom(16).hex()
    (images / "keeptime-record.bin").write_bytes(encode_record(record))

    out = tmp_path / "probe"
    result = daemon.cli("restore", "--criu-images", str(images), "--policy", "freeze", "--stdout", str(out),
                        "--", clockprobe, "--unprivileged")
    assert result.returncode == 0, result.stderr
    pid = int(result.stdout)
    assert f"restored {record.id}" in result.stderr and "warning" not in result.stderr
    assert client.wait(pid) == 0
    mono, boot = read_probe(str(out))
    assert 0 <= mono - record.clocks.monotonic_ns < 50 * MS
    assert 0 <= boot - record.clocks.boottime_ns < 50 * MS
    assert client.get(record.id) == record  # imported

    # With timens-0.img present and no --unprivileged, CRIU would apply its image itself: say so.
    (images / "timens-0.img").write_bytes(encode_timens(TimensClocks(1, 2)))
    result = daemon.cli("restore", "--criu-images", str(images), "--", "/bin/true")
    assert result.returncode == 0, result.stderr
    assert "unless CMD is criu restore --unprivileged" in result.stderr
    assert client.wait(int(result.stdout)) == 0


def test_a_damaged_record_file_is_one_line_data_loss(daemon, tmp_path):
    (tmp_path / "keeptime-record.bin").write_bytes(b"keeptime-record\ngarbage")
    result = daemon.cli("restore", "--criu-images", str(tmp_path), "--", "/bin/true")
    assert result.returncode == 1 and "DATA_LOSS" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_restores_lists_verdicts(daemon, client, far_process):
    inside, _ = far_process
    record = client.checkpoint_record(inside)
    host = subprocess.Popen(["sleep", "30"])
    try:
        client.verify_restore(host.pid, record_id=record.id, stage="post-restore")
    finally:
        host.kill()
        host.wait()
    text = daemon.cli("restores", record.id[:6])
    assert text.returncode == 0 and "REGRESSED" in text.stdout and record.id in text.stdout
    events = json.loads(daemon.cli("--json", "restores", record.id).stdout)
    assert [(e["record_id"], e["ok"], e["stage"]) for e in events] == [(record.id, False, "post-restore")]
    assert isinstance(events[0]["dumped"]["monotonic_ns"], int)
