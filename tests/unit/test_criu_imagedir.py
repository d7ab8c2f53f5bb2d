"""Image directory access through a /proc/PID/fd/N path, and atomic writes
that never leave a half-written file behind."""
import os

import pytest

from keeptime.criu.imagedir import ImageDir


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
        d.write_atomic("a", b"new", mode=0o640)
        d.write_atomic("b", b"fresh")
        assert d.exists("b") and not d.exists("c")
        assert d.mode_of("a") == 0o640
    assert (path / "a").read_bytes() == b"new" and (path / "b").read_bytes() == b"fresh"
    assert oct(os.stat(path / "b").st_mode & 0o777) == oct(0o600)
    assert sorted(os.listdir(path)) == ["a", "b"]  # no temporary left


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
    with ImageDir(proc_path) as d, pytest.raises(OSError):
        d.read("link")


def test_not_a_directory_is_an_os_error(tmp_path):
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(NotADirectoryError):
        ImageDir(str(tmp_path / "f"))
