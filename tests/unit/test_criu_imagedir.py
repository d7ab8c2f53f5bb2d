"""Image directory access through a /proc/PID/fd/N path: atomic writes that
never leave a half-written file behind, a fixed mode, and reads that refuse
anything but a regular file of bounded size."""
import os
import stat

import pytest

from keeptime.criu.imagedir import FILE_MODE, ImageDir, ImageFileError


@pytest.fixture
def held_dir(tmp_path):
    """(directory, /proc/self/fd/N path of an fd this test holds on it), as CRIU passes it."""
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    yield tmp_path, f"/proc/{os.getpid()}/fd/{fd}"
    os.close(fd)


def test_reads_and_writes_through_the_fd_path(held_dir):
    path, proc_path = held_dir
    (path / "a").write_bytes(b"old")
    with ImageDir(proc_path) as d:
        assert d.read("a") == b"old" and d.read("missing") is None
        d.write_atomic("a", b"new")
        d.write_atomic("b", b"fresh")
        assert sorted(d.names()) == ["a", "b"]
    assert (path / "a").read_bytes() == b"new" and (path / "b").read_bytes() == b"fresh"
    assert sorted(os.listdir(path)) == ["a", "b"]  # no temporary left


def test_written_files_get_a_fixed_mode_never_the_one_they_replace(held_dir):
    path, proc_path = held_dir
    (path / "timens-0.img").write_bytes(b"theirs")
    os.chmod(path / "timens-0.img", 0o7777)   # setuid, setgid, sticky, world-writable
    old_umask = os.umask(0)
    try:
        with ImageDir(proc_path) as d:
            d.write_atomic("timens-0.img", b"ours")
            d.write_atomic("new", b"ours")
    finally:
        os.umask(old_umask)
    for name in ("timens-0.img", "new"):
        assert stat.S_IMODE(os.stat(path / name).st_mode) == FILE_MODE == 0o600


def test_a_hard_link_is_replaced_not_written_through(held_dir, tmp_path_factory):
    path, proc_path = held_dir
    outside = tmp_path_factory.mktemp("outside") / "precious"
    outside.write_bytes(b"precious")
    os.link(outside, path / "timens-0.img")
    with ImageDir(proc_path) as d:
        d.write_atomic("timens-0.img", b"rewritten")
    assert outside.read_bytes() == b"precious"
    assert (path / "timens-0.img").read_bytes() == b"rewritten"


def test_remove_deletes_through_the_fd_path_and_says_whether_it_did(held_dir):
    path, proc_path = held_dir
    (path / "timens-0.img.orig").write_bytes(b"old")
    with ImageDir(proc_path) as d:
        assert d.remove("timens-0.img.orig") is True
        assert d.remove("timens-0.img.orig") is False
    assert os.listdir(path) == []


@pytest.mark.parametrize("failing", ["write", "fsync", "rename"])
def test_a_failed_write_leaves_the_old_file_and_no_temporary(held_dir, monkeypatch, failing):
    path, proc_path = held_dir
    (path / "timens-0.img").write_bytes(b"original")
    real = getattr(os, failing)
    calls = []

    def broken(*args, **kwargs):
        if failing == "write" and not calls:
            calls.append(1)
            return real(args[0], bytes(args[1][:3]))  # a short write first, then the failure
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, failing, broken)
    with ImageDir(proc_path) as d, pytest.raises(OSError, match="No space"):
        d.write_atomic("timens-0.img", b"replacement bytes")
    monkeypatch.undo()
    assert (path / "timens-0.img").read_bytes() == b"original"
    assert os.listdir(path) == ["timens-0.img"]


def test_symlinks_are_not_followed(held_dir, tmp_path_factory):
    path, proc_path = held_dir
    outside = tmp_path_factory.mktemp("outside") / "secret"
    outside.write_bytes(b"secret")
    (path / "link").symlink_to(outside)
    with ImageDir(proc_path) as d, pytest.raises(ImageFileError, match="link is a symbolic link"):
        d.read("link")


def test_a_fifo_is_an_error_naming_it_not_a_hang(held_dir):
    path, proc_path = held_dir
    os.mkfifo(path / "keeptime-record.bin")
    with ImageDir(proc_path) as d, pytest.raises(ImageFileError, match="keeptime-record.bin is a FIFO"):
        d.read("keeptime-record.bin")


def test_a_directory_is_not_read_as_a_file(held_dir):
    path, proc_path = held_dir
    (path / "timens-0.img").mkdir()
    with ImageDir(proc_path) as d, pytest.raises(ImageFileError, match="timens-0.img is a directory"):
        d.read("timens-0.img")


def test_files_above_the_limit_are_refused(held_dir):
    path, proc_path = held_dir
    (path / "timens-0.img").write_bytes(b"x" * 5000)
    with ImageDir(proc_path) as d:
        with pytest.raises(ImageFileError, match="timens-0.img is 5000 bytes, more than the 4096 allowed"):
            d.read("timens-0.img", max_bytes=4096)
        assert d.read("timens-0.img", max_bytes=5000) == b"x" * 5000


def test_a_required_owner_is_checked(held_dir):
    path, proc_path = held_dir
    (path / "timens-0.img").write_bytes(b"x")
    with ImageDir(proc_path, require_owner=os.getuid() + 1) as d, pytest.raises(ImageFileError, match="belongs to"):
        d.read("timens-0.img")


def test_not_a_directory_is_an_os_error(tmp_path):
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(NotADirectoryError):
        ImageDir(str(tmp_path / "f"))
