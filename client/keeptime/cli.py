"""The keeptime command line: operators' and scripts' way into keeptimed.

Every command prints something a human can read, or with --json one JSON
document for machines; errors are one line on stderr and a non-zero exit.
"""
import argparse
import grp
import json
import os
import pwd
import sys
from typing import Optional

from . import __version__, completion, doctor, errors
from .client import Client
from .criu import hook as criu_hook
from .criu.dumpdir import RECORD_FILE, DumpDir
from .criu.imagedir import ImageDir, ImageFileError
from .defaults import CONFIG_ENV, DEFAULT_CONFIG, DEFAULT_SOCKET, POLICIES, SOCKET_ENV
from .output import (emit, message_to_dict, policy_name, print_clocks, print_doctor, print_info, print_json,
                     print_list, print_plan, print_record, print_restores)
from .timefmt import format_ns

EXIT_OK = 0
EXIT_ERROR = 1        # the daemon refused or failed the request
EXIT_USAGE = 2        # bad command line or invalid argument
EXIT_UNAVAILABLE = 3  # keeptimed could not be reached
INT32_MAX = 2**31 - 1

EXAMPLES = """\
examples:
  keeptime checkpoint 4242                   record the clocks of pid 4242's tree
  keeptime plan 3f9a --policy suspend        what a restore would do now
  keeptime restore 3f9a --policy freeze -- /usr/bin/myapp --resume
  keeptime wait 5150                         exit status of a restored process
  keeptime exec --stdout /tmp/out 5150 -- date
                                             run a command in pid 5150's clocks
  keeptime list; keeptime show 3f9a; keeptime rm 3f9a; keeptime clocks 5150
  keeptime restore --criu-images /var/lib/ckpt -- criu restore --unprivileged -D /var/lib/ckpt
  keeptime restores 3f9a                     verified restores of a record
  keeptime doctor                            is this host ready? what is wrong?
  keeptime COMMAND --help                    each command's options and examples

exit status: 0 ok, 1 the daemon refused or failed (doctor: a blocking problem;
health: not serving), 2 usage or invalid argument, 3 keeptimed unreachable;
`wait` exits with the waited process's status. Errors are one line on stderr;
with --json, one JSON object: {"error": {"code", "message"}, "exit_status"}.
"""


class UsageError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors instead of usage dumps."""

    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message}")


# -- argument types -----------------------------------------------------------

def _pid(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a pid: {text!r}") from None
    if not -INT32_MAX - 1 <= value <= INT32_MAX:
        raise argparse.ArgumentTypeError(f"pid out of range: {text}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, got {text!r}")
    return value


def _key_value(text: str) -> str:
    if "=" not in text or text.startswith("="):
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return text


def _uid(text: str) -> int:
    if text.isdigit():
        return int(text)
    try:
        return pwd.getpwnam(text).pw_uid
    except KeyError:
        raise argparse.ArgumentTypeError(f"no such user: {text!r}") from None


def _gid(text: str) -> int:
    if text.isdigit():
        return int(text)
    try:
        return grp.getgrnam(text).gr_gid
    except KeyError:
        raise argparse.ArgumentTypeError(f"no such group: {text!r}") from None


def build_parser() -> Parser:
    """The full command-line grammar of keeptime."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print one JSON document instead of text")
    common.add_argument("--socket", default=argparse.SUPPRESS, help="keeptimed's socket")

    parser = Parser(
        prog="keeptime",
        description="Keep CLOCK_MONOTONIC and CLOCK_BOOTTIME continuous across checkpoint/restore.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--socket", default=None,
                        help=f"keeptimed's socket (env {SOCKET_ENV}; default {DEFAULT_SOCKET})")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    parser.add_argument("--timeout", type=_seconds, default=30.0, help="seconds per call (default 30)")
    parser.add_argument("--version", action="version", version=f"keeptime {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)

    def command(name: str, help_text: str, examples: str = "") -> Parser:
        return sub.add_parser(name, parents=[common], help=help_text, description=help_text,
                              epilog=f"examples:\n{examples}" if examples else None,
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    p = command("checkpoint", "record the clocks of the process tree rooted at PID; prints the record id",
                "  keeptime checkpoint 4242\n  keeptime checkpoint --label app=db --json 4242\n")
    p.add_argument("pid", type=_pid)
    p.add_argument("--label", action="append", type=_key_value, default=[], metavar="K=V",
                   help="attach a label to the record (repeatable)")

    p = command("plan", "show the targets and offsets a restore would use now, without spawning",
                "  keeptime plan 3f9a --policy suspend\n")
    p.add_argument("record", metavar="ID")
    p.add_argument("--policy", choices=POLICIES, default=None, help="freeze, suspend or elapsed (default: the daemon's, suspend)")

    def add_command_options(p: Parser) -> None:
        p.add_argument("--env", action="append", type=_key_value, default=[], metavar="K=V",
                       help="environment entry (repeatable); nothing is inherited by default")
        p.add_argument("--env-from-caller", action="store_true", help="pass this shell's environment")
        p.add_argument("--cwd", help="working directory (default /)")
        p.add_argument("--uid", type=_uid, help="user (name or number) to run as")
        p.add_argument("--gid", type=_gid, help="group (name or number) to run as")
        p.add_argument("--stdin", metavar="FILE", help="default /dev/null")
        p.add_argument("--stdout", metavar="FILE", help="truncated, then appended to; default /dev/null")
        p.add_argument("--stderr", metavar="FILE", help="truncated, then appended to; default /dev/null")
        p.add_argument("argv", nargs="*", default=[], metavar="CMD ARGS",
                       help="the command to run; put it after -- when it has options of its own")

    p = command("restore", "start CMD in a new time namespace continuing the record's clocks; prints the pid",
                "  keeptime restore 3f9a --policy freeze -- /usr/bin/myapp --resume\n"
                "  keeptime restore 3f9a --uid app --env PATH=/usr/bin:/bin --stdout /var/log/app.out -- myapp\n"
                "  keeptime restore --criu-images /var/lib/ckpt -- criu restore --unprivileged -D /var/lib/ckpt\n")
    p.add_argument("record", metavar="ID", nargs="?", help="the record (not with --criu-images)")
    p.add_argument("--criu-images", metavar="DIR",
                   help=f"take the record from CRIU image directory DIR ({RECORD_FILE}, written by the "
                        f"criu-hook at dump) and import it; CMD is typically criu restore --unprivileged -D DIR")
    p.add_argument("--policy", choices=POLICIES, default=None, help="freeze, suspend or elapsed (default: the daemon's, suspend)")
    add_command_options(p)

    p = command("exec", "start CMD inside the time namespace of the live process PID; prints the pid",
                "  keeptime exec --stdout /tmp/uptime 5150 -- cat /proc/uptime   (its output goes to --stdout)\n"
                "  keeptime wait PID && cat /tmp/uptime          (PID: the one exec printed)\n")
    p.add_argument("pid", type=_pid)
    add_command_options(p)

    p = command("wait", "wait for a process started by restore or exec; prints and exits with its status",
                "  keeptime wait 5150; echo $?\n  keeptime wait --timeout 10 5150\n")
    p.add_argument("pid", type=_pid)
    p.add_argument("--timeout", type=_seconds, default=argparse.SUPPRESS, dest="wait_timeout",
                   help="give up after this many seconds (default: wait forever)")

    p = command("show", "print a record", "  keeptime show 3f9a\n  keeptime show --json 3f9a\n")
    p.add_argument("record", metavar="ID")
    command("list", "list records, oldest first", "  keeptime list\n  keeptime list --json\n")
    p = command("rm", "delete a record", "  keeptime rm 3f9a\n")
    p.add_argument("record", metavar="ID")
    p = command("clocks", "print the clocks a live process sees and its time namespace offsets",
                "  keeptime clocks 5150\n")
    p.add_argument("pid", type=_pid)
    p = command("restores", "list verified restores (CRIU's post-restore checks), oldest first",
                "  keeptime restores\n  keeptime restores --json 3f9a\n")
    p.add_argument("record", metavar="ID", nargs="?", default="", help="only this record's")
    command("criu-hook", "CRIU action script: run by CRIU with CRTOOLS_* set (see README)",
            "  keeptime criu-hook     (what /usr/libexec/keeptime/criu-hook runs as CRIU's --action-script)\n")

    command("info", "print what keeptimed is and can do: version, kernel support, privileges, configuration",
            "  keeptime info\n  keeptime info --json\n")
    command("health", "exit 0 when keeptimed serves, 1 when it does not (shutting down), 3 when unreachable",
            "  keeptime --timeout 5 health       (the Kubernetes probe)\n")
    p = command("doctor", "check that this host can checkpoint and restore; exit 1 on a blocking problem",
                "  keeptime doctor\n  keeptime doctor --json --no-criu\n")
    p.add_argument("--config", metavar="FILE",
                   help=f"configuration file to validate (default: the daemon's, else ${CONFIG_ENV} "
                        f"or {DEFAULT_CONFIG})")
    p.add_argument("--no-criu", action="store_true", help="do not look for CRIU or run `criu check`")
    p = command("completion", "print a shell completion script",
                "  keeptime completion bash > /etc/bash_completion.d/keeptime\n"
                "  source <(keeptime completion bash)\n")
    p.add_argument("shell", choices=completion.SHELLS)
    return parser


# -- commands -----------------------------------------------------------------

def _command_kwargs(args) -> dict:
    argv = list(args.argv)
    if not argv:
        raise UsageError(f"keeptime {args.command}: give the command to run after --")
    if not argv[0]:
        raise UsageError(f"keeptime {args.command}: the command to run is an empty string")
    env = [f"{k}={v}" for k, v in os.environ.items()] if args.env_from_caller else []
    env += args.env
    absolute = lambda path: os.path.abspath(path) if path else None  # noqa: E731 (relative to the caller)
    return dict(argv=argv, env=env, cwd=absolute(args.cwd), uid=args.uid, gid=args.gid,
                stdin=absolute(args.stdin), stdout=absolute(args.stdout), stderr=absolute(args.stderr))


PLANNING_VALUES = ("offsets", "host_clocks", "realtime_ns")


def _as_planned(plan: dict) -> dict:
    """A restore's plan with the values of the moment it was made labelled
    planned_*: the offsets written are the restore's own, computed later."""
    return {f"planned_{key}" if key in PLANNING_VALUES else key: value for key, value in plan.items()}


def run(args, client: Client) -> int:
    """Execute one parsed command; returns the exit status."""
    as_json = args.json
    if args.command == "checkpoint":
        labels = dict(label.split("=", 1) for label in args.label)
        record = client.checkpoint_record(args.pid, labels)
        print_json(message_to_dict(record)) if as_json else emit(record.id)
    elif args.command == "plan":
        plan = client.plan(args.record, args.policy)
        print_json(message_to_dict(plan)) if as_json else print_plan(plan)
    elif args.command == "restore":
        kwargs = _command_kwargs(args)
        record_id = _criu_record(args, client) if args.criu_images else args.record
        result = client.restore(record_id, policy=args.policy, **kwargs)
        if as_json:
            print_json({
                "pid": result.pid, "mechanism": result.mechanism, "timens_inode": result.timens_inode,
                "monotonic_offset_ns": result.monotonic_offset_ns, "boottime_offset_ns": result.boottime_offset_ns,
                "plan": _as_planned(message_to_dict(result.plan)),
            })
        else:
            print(result.pid)
            emit(f"keeptime: restored {result.plan.record_id} as pid {result.pid} under "
                 f"{policy_name(result.plan.policy)} via {result.mechanism}; offsets monotonic "
                 f"{format_ns(result.monotonic_offset_ns)}, boottime {format_ns(result.boottime_offset_ns)}",
                 file=sys.stderr)
    elif args.command == "exec":
        result = client.exec(args.pid, **_command_kwargs(args))
        if as_json:
            print_json({
                "pid": result.pid, "mechanism": result.mechanism, "timens_inode": result.timens_inode,
                "monotonic_offset_ns": result.monotonic_offset_ns, "boottime_offset_ns": result.boottime_offset_ns,
            })
        else:
            print(result.pid)
    elif args.command == "wait":
        status = client.wait_status(args.pid, getattr(args, "wait_timeout", None))
        if as_json:
            print_json({"pid": status.pid, "exit_code": status.exit_code, "signal": status.signal,
                         "status": status.status})
        else:
            print(status.status)
        return status.status if 0 <= status.status <= 255 else EXIT_ERROR
    elif args.command == "show":
        record = client.get(args.record)
        print_json(message_to_dict(record)) if as_json else print_record(record)
    elif args.command == "list":
        records = client.list()
        print_json([message_to_dict(r) for r in records]) if as_json else print_list(records)
    elif args.command == "rm":
        record_id = client.delete(args.record)
        print_json({"deleted": record_id}) if as_json else emit(record_id)
    elif args.command == "clocks":
        clocks = client.clocks(args.pid)
        print_json(message_to_dict(clocks)) if as_json else print_clocks(clocks)
    elif args.command == "info":
        info = client.info()
        print_json(message_to_dict(info)) if as_json else print_info(info)
    elif args.command == "health":
        status = client.health()
        print_json({"status": status}) if as_json else emit(status)
        return EXIT_OK if status == "SERVING" else EXIT_ERROR
    elif args.command == "restores":
        events = client.restores(args.record)
        print_json([message_to_dict(e) for e in events]) if as_json else print_restores(events)
    return EXIT_OK


def run_local(args) -> int:
    """Commands that do not go through one daemon call: completion, doctor."""
    if args.command == "completion":
        sys.stdout.write(completion.bash(build_parser()))
        return EXIT_OK
    socket_path = args.socket or os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET
    report = doctor.run(socket_path, min(args.timeout, 10.0), args.config, criu=not args.no_criu)
    if args.json:
        info = report["daemon"]
        print_json({**report, "daemon": message_to_dict(info) if info is not None else None})
    else:
        print_doctor(report)
    return EXIT_OK if report["ok"] else EXIT_ERROR


def _fail(status: int, code: str, message: str, line: str, as_json: bool) -> int:
    """Report an error on stderr: its line, or with --json one JSON object
    {"error": {"code", "message"}, "exit_status"}; returns the exit status."""
    if as_json:
        print(json.dumps({"error": {"code": code, "message": message}, "exit_status": status}), file=sys.stderr)
    else:
        emit(line, file=sys.stderr)
    return status


def _criu_record(args, client: Client) -> str:
    """Import the record CRIU's image directory carries; returns its id."""
    if args.record:
        raise UsageError("keeptime restore: give a record ID or --criu-images DIR, not both")
    try:
        with DumpDir(ImageDir(args.criu_images)) as dump:
            data = dump.read_record()
            timens = dump.timens_name() if dump.read_timens() is not None else ""
    except (OSError, ImageFileError) as exc:
        raise UsageError(f"keeptime restore: cannot read {args.criu_images}: "
                         f"{exc.strerror if isinstance(exc, OSError) else exc}") from None
    if data is None:
        raise UsageError(f"keeptime restore: {args.criu_images} has no {RECORD_FILE} "
                         f"(was the dump made with the keeptime CRIU hook?)")
    record_id = client.import_record(data)
    if timens and "--unprivileged" not in args.argv:
        print(f"keeptime: warning: {args.criu_images} has {timens}: unless CMD is criu restore "
              f"--unprivileged, CRIU applies that image itself and the namespace keeptime prepares does "
              f"not change the restored clocks", file=sys.stderr)
    return record_id


COMMAND_TAKERS = ("restore", "exec")   # the commands that take a command to run after --


def _commands(parser: Parser) -> dict:
    """keeptime's commands: name -> its parser."""
    return next(action for action in parser._actions if action.dest == "command").choices


def _command_word(parser: Parser, argv: list[str]) -> Optional[str]:
    """The first word of argv that names a keeptime command, if any."""
    return next((word for word in argv if word in _commands(parser)), None)


def _check_takes_a_command(parser: Parser, name: Optional[str], command: list[str]) -> None:
    """A usage error when words came after -- for a command that runs none."""
    if not command or name in COMMAND_TAKERS:
        return
    if name is None:
        raise UsageError(f"keeptime: -- comes after a command ({' or '.join(COMMAND_TAKERS)}), "
                         f"before the command to run")
    usage = " ".join(_commands(parser)[name].format_usage().split()).removeprefix("usage: ")
    raise UsageError(f"keeptime {name}: -- starts a command to run, which only {' and '.join(COMMAND_TAKERS)} "
                     f"take (usage: {usage})")


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of the keeptime command."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # Known before parsing, so that even a usage error comes out as JSON.
    as_json = "--json" in argv[:argv.index("--")] if "--" in argv else "--json" in argv
    try:
        # Everything after the first "--" is the command to run, untouched by
        # option parsing (argparse would otherwise read its options as ours).
        command: list[str] = []
        if "--" in argv:
            split = argv.index("--")
            argv, command = argv[:split], argv[split + 1:]
        try:
            args = parser.parse_args(argv)
        except UsageError:
            # What is missing may well be what came after --, where only a command belongs.
            _check_takes_a_command(parser, _command_word(parser, argv), command)
            raise
        if args.command == "criu-hook":
            if command:
                raise UsageError("keeptime criu-hook: takes no arguments; CRIU passes everything in CRTOOLS_*")
            return criu_hook.main(socket=args.socket, timeout=args.timeout)
        if args.command == "restore" and not args.record and not args.criu_images:
            raise UsageError("keeptime restore: give a record ID or --criu-images DIR")
        if command:
            _check_takes_a_command(parser, args.command, command)
            args.argv = list(args.argv) + command
        if args.command in ("completion", "doctor"):
            return run_local(args)
        with Client(socket=args.socket, timeout=args.timeout) as client:
            return run(args, client)
    except UsageError as exc:
        return _fail(EXIT_USAGE, "USAGE", str(exc), f"{exc}", as_json)
    except errors.KeeptimeError as exc:
        status = EXIT_ERROR
        if isinstance(exc, errors.Unavailable):
            status = EXIT_UNAVAILABLE
        elif isinstance(exc, errors.InvalidArgument):
            status = EXIT_USAGE
        return _fail(status, exc.code.name, exc.message, f"keeptime: {exc}", as_json)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
