"""A user who can write a CRIU image directory attacks root's CRIU hook.

Image directories are often writable by the user whose tree was dumped,
while CRIU and its action script run as root. Each test prepares the
directory as that user (nobody), then runs the hook as root, as CRIU would,
and asserts the outcome: nothing it writes takes a mode or content the user
chose beyond the clock values, nothing blocks, and anything odd is a clear
error naming the file."""
import os
import stat
import subprocess

import pytest

from helpers.impersonate import as_user
from keeptime.criu.image import TimensClocks, encode_timens

pytestmark = pytest.mark.root

NOBODY = 65534
S = 10**9
HOOK_TIMEOUT = 20   # seconds: a hook that blocks fails the test instead of hanging it


@pytest.fixture
def users_dir(open_dir):
    """An image directory owned by nobody, in a directory every user may traverse."""
    images = os.path.join(open_dir, "images")
    os.mkdir(images)
    os.chown(images, NOBODY, NOBODY)
    return images


def as_nobody(*argv: str) -> None:
    subprocess.run(as_user(NOBODY, NOBODY, list(argv)), check=True, timeout=30)


def write_as_nobody(path: str, data: bytes, mode: int) -> None:
    subprocess.run(as_user(NOBODY, NOBODY, ["sh", "-c", f'cat > "$1" && chmod {mode:o} "$1"', "-", path]),
                   input=data, check=True, timeout=30)


@pytest.fixture
def run_hook(daemon, criu_hook_program, tmp_path):
    """Run the hook as root, as CRIU would; tmp_path/criu-hook.toml is its configuration (suspend)."""
    config = tmp_path / "criu-hook.toml"
    config.write_text('policy = "suspend"\n')

    def run(action: str, images: str, pid: int = None) -> subprocess.CompletedProcess:
        fd = os.open(images, os.O_RDONLY | os.O_DIRECTORY)
        env = {"CRTOOLS_SCRIPT_ACTION": action, "CRTOOLS_IMAGE_DIR": f"/proc/{os.getpid()}/fd/{fd}",
               "KEEPTIME_SOCKET": daemon.socket, "KEEPTIME_CRIU_HOOK_CONFIG": str(config)}
        if pid is not None:
            env["CRTOOLS_INIT_PID"] = str(pid)
        try:
            return subprocess.run([criu_hook_program], env=env, capture_output=True, text=True,
                                  timeout=HOOK_TIMEOUT, pass_fds=(fd,))
        finally:
            os.close(fd)

    return run


def test_files_root_writes_never_take_the_users_mode(client, users_dir, run_hook, far_process):
    """The escalation seen: a setuid, world-writable timens-0.img of the
    user's making came back as -rwsrwsrwx root root timens-0.img.orig."""
    inside, _ = far_process
    seen = client.clocks(inside).clocks
    write_as_nobody(os.path.join(users_dir, "timens-0.img"),
                    encode_timens(TimensClocks(seen.monotonic_ns, seen.boottime_ns)), 0o7777)
    assert run_hook("post-dump", users_dir, pid=inside).returncode == 0
    result = run_hook("pre-restore", users_dir)
    assert result.returncode == 0, result.stderr
    for name in ("timens-0.img", "timens-0.img.orig", "timens-0.img.orig.dump", "keeptime-record.bin"):
        st = os.stat(os.path.join(users_dir, name))
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o600), (name, oct(st.st_mode))


@pytest.mark.parametrize("name", ["timens-0.img", "keeptime-record.bin", "timens-0.img.orig"])
def test_a_fifo_is_a_clear_error_not_a_hang(client, users_dir, run_hook, name):
    write_as_nobody(os.path.join(users_dir, "timens-0.img"), encode_timens(TimensClocks(S, 2 * S)), 0o644)
    if name != "timens-0.img":
        record_id = client.checkpoint_criu_image(encode_timens(TimensClocks(S, 2 * S)))
        write_as_nobody(os.path.join(users_dir, "keeptime-record.bin"), client.export_record(record_id), 0o644)
    fifo = os.path.join(users_dir, name)
    if os.path.exists(fifo):
        as_nobody("rm", fifo)
    as_nobody("mkfifo", fifo)
    result = run_hook("pre-restore", users_dir)   # times out (fails) if anything opens the FIFO blocking
    assert f"{name} is a FIFO, not a regular file" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    if name.endswith(".orig"):   # keeptime's own file: one it did not write is dropped, and the restore goes on
        assert result.returncode == 0, result.stderr
        st = os.lstat(fifo)   # the original keeptime kept in its place
        assert stat.S_ISREG(st.st_mode) and (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o600)
    else:
        assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr


def test_a_symlink_to_a_root_file_is_not_followed(users_dir, run_hook):
    as_nobody("ln", "-s", "/etc/shadow", os.path.join(users_dir, "timens-0.img"))
    result = run_hook("pre-restore", users_dir)
    assert result.returncode == 1 and "timens-0.img is a symbolic link" in result.stderr, result.stderr


def test_a_symlink_named_like_a_file_root_writes_is_replaced_not_followed(client, users_dir, run_hook, far_process,
                                                                            tmp_path):
    """keeptime-record.bin pointing at a root-owned file: root's write replaces
    the link in the user's directory and leaves the target alone."""
    target = tmp_path / "precious"
    target.write_bytes(b"precious")
    inside, _ = far_process
    seen = client.clocks(inside).clocks
    write_as_nobody(os.path.join(users_dir, "timens-0.img"),
                    encode_timens(TimensClocks(seen.monotonic_ns, seen.boottime_ns)), 0o644)
    as_nobody("ln", "-s", str(target), os.path.join(users_dir, "keeptime-record.bin"))
    result = run_hook("post-dump", users_dir, pid=inside)
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == b"precious"
    assert not os.path.islink(os.path.join(users_dir, "keeptime-record.bin"))


def test_an_oversized_file_is_refused_by_size(users_dir, run_hook):
    write_as_nobody(os.path.join(users_dir, "timens-0.img"), b"\0" * 100_000, 0o644)
    result = run_hook("pre-restore", users_dir)
    assert result.returncode == 1 and "timens-0.img is 100000 bytes, more than the 4096 allowed" in result.stderr


@pytest.fixture
def shared_dir(open_dir):
    """A sticky, world-writable directory (like /tmp) holding root's dump."""
    images = os.path.join(open_dir, "images")
    os.mkdir(images)
    os.chmod(images, 0o1777)
    return images


def root_dump(client, images: str, pid: int) -> bytes:
    """As CRIU running as root leaves it: a readable timens-0.img and inventory.img."""
    from keeptime.criu import dump_pb2
    from keeptime.criu.image import INVENTORY_MAGIC, write_entries

    seen = client.clocks(pid).clocks
    image = encode_timens(TimensClocks(seen.monotonic_ns, seen.boottime_ns))
    inventory = write_entries(INVENTORY_MAGIC, [dump_pb2.inventory_entry(img_version=2, dump_uptime=7)
                                                .SerializeToString()], common=False)
    for name, data in (("timens-0.img", image), ("inventory.img", inventory)):
        with open(os.path.join(images, name), "wb") as f:
            f.write(data)
        os.chmod(os.path.join(images, name), 0o644)   # CRIU's image mode
    return image


@pytest.mark.parametrize("planted", ["orig", "legacy-digest"])
def test_an_original_planted_beside_roots_dump_is_never_used(client, shared_dir, run_hook, far_process, tmp_path,
                                                              planted):
    """Anyone who can create files in the directory could plant an 'original'
    with clocks far below the dump's: a freeze restore that put it back would
    send the restored tree's clocks back, and verification against it would
    call that continuous."""
    import hashlib

    inside, _ = far_process
    image = root_dump(client, shared_dir, inside)
    low = encode_timens(TimensClocks(5 * S, 5 * S))
    write_as_nobody(os.path.join(shared_dir, "timens-0.img.orig"), low, 0o600)
    if planted == "orig":
        with open(os.path.join(shared_dir, "inventory.img"), "rb") as f:
            dump_id = hashlib.sha256(f.read()).hexdigest()
        write_as_nobody(os.path.join(shared_dir, "timens-0.img.orig.dump"), dump_id.encode() + b"\n", 0o600)
    else:
        write_as_nobody(os.path.join(shared_dir, "timens-0.img.keeptime-sha256"),
                        hashlib.sha256(image).hexdigest().encode() + b"\n", 0o600)
    config = tmp_path / "criu-hook.toml"
    config.write_text('policy = "freeze"\n')
    result = run_hook("pre-restore", shared_dir)
    assert result.returncode == 0, result.stderr
    assert "removed a stale timens-0.img.orig: timens-0.img.orig was not written by keeptime here (uid 65534" \
        in result.stderr
    with open(os.path.join(shared_dir, "timens-0.img"), "rb") as f:
        assert f.read() == image   # CRIU's own values, not the planted ones
    assert not os.path.exists(os.path.join(shared_dir, "timens-0.img.orig"))
    # Verification holds the tree to the dump's values: the far process reads above them.
    verified = run_hook("post-restore", shared_dir, pid=inside)
    assert verified.returncode == 0 and "clocks continue" in verified.stderr, verified.stderr
