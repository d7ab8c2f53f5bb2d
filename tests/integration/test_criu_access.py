"""The CRIU RPCs and the hook for a caller that is not root (rootless CRIU runs
its action script as the user): allowed, but confined to the caller's own
processes, records and restore events, like every other RPC."""
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import pytest

from helpers.daemon import RunningDaemon
from keeptime.criu.image import TimensClocks, encode_timens
from keeptimed import recordfile

pytestmark = pytest.mark.root

NOBODY = 65534
S = 10**9
IMAGE = encode_timens(TimensClocks(1_000 * S, 2_000 * S))


@pytest.fixture(scope="module")
def workdir():
    """A directory nobody can reach (pytest's own are root's alone)."""
    path = tempfile.mkdtemp(prefix="keeptime-access-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


@pytest.fixture(scope="module")
def daemon(workdir):
    """keeptimed with its socket open to nobody's group."""
    running = RunningDaemon(workdir).start("--socket-group", str(NOBODY))
    yield running
    assert running.stop() == 0, running.log()


@pytest.fixture
def client(daemon):
    with daemon.client() as c:
        yield c


def as_nobody(daemon, code: str, **values) -> str:
    """Run code as uid/gid nobody with a keeptime Client ``kt`` and the
    CRIU hook module ``hook``; its stdout, or the error's class and message.

    The interpreter may live where nobody cannot read (a pyenv under /root),
    so a root python imports everything first, then drops to nobody before
    it connects: keeptimed sees nobody's credentials.
    """
    script = textwrap.dedent("""
        import os
        from keeptime import errors
        from keeptime.client import Client
        from keeptime.criu import hook
        os.setgroups([])
        os.setresgid({uid}, {uid}, {uid})
        os.setresuid({uid}, {uid}, {uid})
        values = {values!r}
        with Client(socket={socket!r}) as kt:
            try:
        {body}
            except errors.KeeptimeError as exc:
                print(type(exc).__name__, exc.message)
    """).format(uid=NOBODY, values=values, socket=daemon.socket,
                body=textwrap.indent(textwrap.dedent(code).strip(), " " * 8))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def sleep_as_nobody(**popen) -> subprocess.Popen:
    return subprocess.Popen(["sleep", "60"], user=NOBODY, group=NOBODY, extra_groups=[], **popen)


@pytest.fixture
def nobodys_process():
    proc = sleep_as_nobody()
    yield proc.pid
    proc.kill()
    proc.wait()


def test_a_record_from_an_image_belongs_to_its_caller(daemon, client):
    record_id = as_nobody(daemon, "print(kt.checkpoint_criu_image(values['image'], 1).id)", image=IMAGE)
    assert client.get(record_id).source == "criu-image"  # root sees every record
    assert as_nobody(daemon, "print(kt.get(values['id']).id)", id=record_id) == record_id
    roots = client.checkpoint_criu_image(IMAGE, 1).id
    assert as_nobody(daemon, "print(kt.get(values['id']).id)", id=roots) == f"NotFound no record {roots}"


def test_nobody_plans_from_its_own_records_only(daemon, client):
    plan = """
        planned = kt.plan_criu_restore(values['image'], record_id=values['id'], policy='freeze')
        print(planned.timens_image == values['image'])
    """
    own = as_nobody(daemon, "print(kt.checkpoint_criu_image(values['image']).id)", image=IMAGE)
    assert as_nobody(daemon, plan, image=IMAGE, id=own) == "True"
    roots = client.checkpoint_criu_image(IMAGE).id
    assert as_nobody(daemon, plan, image=IMAGE, id=roots) == f"NotFound no record {roots}"
    # A record given as bytes is the caller's to use: it proves nothing about anyone's processes.
    by_bytes = "print(kt.plan_criu_restore(values['image'], record_file=values['data']).plan.record_id)"
    assert as_nobody(daemon, by_bytes, image=IMAGE, data=client.export_record(roots)) == roots


def test_nobody_verifies_its_own_processes_and_sees_its_own_verdicts(daemon, client, nobodys_process, sleeper):
    record = client.get(client.checkpoint_criu_image(encode_timens(TimensClocks(S, S))).id)
    data = recordfile.encode(record)
    verify = "print(kt.verify_restore(values['pid'], record_file=values['data'], stage='post-restore').ok)"
    assert as_nobody(daemon, verify, pid=nobodys_process, data=data) == "True"
    denied = as_nobody(daemon, verify, pid=sleeper, data=data)
    assert denied == f"PermissionDenied pid {sleeper} does not belong to uid {NOBODY}"
    client.verify_restore(sleeper, record_id=record.id, stage="post-restore")

    listed = "print(' '.join(str(e.pid) for e in kt.restores(values['id'])))"
    assert as_nobody(daemon, listed, id=record.id) == str(nobodys_process)
    assert [e.pid for e in client.restores(record.id)] == [nobodys_process, sleeper]


def test_the_hook_under_rootless_criu_records_and_verifies(daemon, client, workdir, nobodys_process):
    images = tempfile.mkdtemp(dir=workdir)
    os.chown(images, NOBODY, NOBODY)
    config = os.path.join(workdir, "hook.toml")
    with open(config, "w") as f:
        f.write('policy = "suspend"\n')
    seen = client.clocks(nobodys_process).clocks  # what CRIU writes: the tree's clocks, before post-dump
    with open(os.path.join(images, "timens-0.img"), "wb") as f:
        f.write(encode_timens(TimensClocks(seen.monotonic_ns, seen.boottime_ns)))
    fd = os.open(images, os.O_RDONLY | os.O_DIRECTORY)
    # Like rootless CRIU: the image directory is an fd of a process of the user's.
    holder = sleep_as_nobody(pass_fds=[fd])
    os.close(fd)
    try:
        def run_hook(action: str, pid: int) -> str:
            env = {"CRTOOLS_SCRIPT_ACTION": action, "CRTOOLS_IMAGE_DIR": f"/proc/{holder.pid}/fd/{fd}",
                   "CRTOOLS_INIT_PID": str(pid), "KEEPTIME_SOCKET": daemon.socket,
                   "KEEPTIME_CRIU_HOOK_CONFIG": config}
            code = "import contextlib, io, sys\n" \
                   "with contextlib.redirect_stderr(io.StringIO()) as said:\n" \
                   "    status = hook.main(values['env'])\n" \
                   "print(status, said.getvalue())"
            return as_nobody(daemon, code, env=env)

        said = run_hook("post-dump", nobodys_process)
        assert said.startswith("0 ") and f"from pid {nobodys_process}'s tree" in said, said
        with open(os.path.join(images, "keeptime-record.bin"), "rb") as f:
            record = recordfile.decode(f.read())
        assert as_nobody(daemon, "print(kt.get(values['id']).root_pid)", id=record.id) == str(nobodys_process)

        said = run_hook("post-restore", nobodys_process)
        assert said.startswith("0 ") and f"pid {nobodys_process}: clocks continue" in said, said
        assert [(e.pid, e.ok) for e in client.restores(record.id)] == [(nobodys_process, True)]
    finally:
        holder.kill()
        holder.wait()
