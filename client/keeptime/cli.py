"""The keeptime command line: operators' and scripts' way into keeptimed.

Every command prints something a human can read, or with --json one JSON
document for machines; errors are one line on stderr and a non-zero exit.

This module only parses: what runs a command (gRPC, the generated API, the
output) is imported once the command line is known to need it, so
`keeptime --help`, `--version` and usage errors start in the time of a bare
Python start (the CRIU hook and operators start the CLI often).
"""
import argparse
import grp
import pwd
import sys
from typing import Optional

from . import __version__, completion
from .defaults import CONFIG_ENV, CRIU_RECORD_FILE, DEFAULT_CONFIG, DEFAULT_SOCKET, POLICIES, SOCKET_ENV
from .usage import EXIT_ERROR, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE, UsageError, fail as _fail  # noqa: F401 (the CLI's exit statuses)

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
                   help=f"take the record from CRIU image directory DIR ({CRIU_RECORD_FILE}, written by the "
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
            from .criu import hook as criu_hook
            return criu_hook.main(socket=args.socket, timeout=args.timeout)
        if args.command == "restore" and not args.record and not args.criu_images:
            raise UsageError("keeptime restore: give a record ID or --criu-images DIR")
        if command:
            _check_takes_a_command(parser, args.command, command)
            args.argv = list(args.argv) + command
        if args.command == "completion":
            sys.stdout.write(completion.bash(build_parser()))
            return EXIT_OK
        from .commands import execute   # gRPC and the generated API: only now
        return execute(args)
    except UsageError as exc:
        return _fail(EXIT_USAGE, "USAGE", str(exc), f"{exc}", as_json)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
