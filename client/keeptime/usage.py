"""What the CLI's parsing (keeptime.cli) and its commands (keeptime.commands)
share: exit statuses, the usage error and how an error is reported. A module
of its own, so that both see the same classes also when the CLI runs as
``python -m keeptime.cli``."""
import json
import sys

from .printable import printable

EXIT_OK = 0
EXIT_ERROR = 1        # the daemon refused or failed the request
EXIT_USAGE = 2        # bad command line or invalid argument
EXIT_UNAVAILABLE = 3  # keeptimed could not be reached


class UsageError(Exception):
    """A bad command line; the message is one line for stderr."""


def fail(status: int, code: str, message: str, line: str, as_json: bool) -> int:
    """Report an error on stderr: its line, or with --json one JSON object
    {"error": {"code", "message"}, "exit_status"}; returns the exit status."""
    if as_json:
        print(json.dumps({"error": {"code": code, "message": message}, "exit_status": status}), file=sys.stderr)
    else:
        print(printable(line), file=sys.stderr)
    return status
