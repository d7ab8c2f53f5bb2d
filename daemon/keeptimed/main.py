"""keeptimed command line: ``keeptimed [--config FILE] [--socket PATH] [--db PATH] ...``.

Exit status: 0 after a clean shutdown (or --print-config, --version), 1 when
the daemon cannot start (the message says why), 2 for a bad flag or
configuration value.
"""
import argparse
import os
import sys

from keeptime.defaults import CONFIG_ENV, DEFAULT_CONFIG

from . import __version__, config, logs
from .sdnotify import Notifier
from .server import Daemon, StartupError

EXIT_STARTUP = 1
EXIT_CONFIG = 2

EPILOG = f"""\
Every setting can also be given in the configuration file ({DEFAULT_CONFIG},
or --config / {CONFIG_ENV}) as `key = value` with the flag's name in snake_case,
or as KEEPTIME_<KEY> in the environment. Precedence: flags > environment > file > defaults.

examples:
  keeptimed                                   serve with the file's settings or the defaults
  keeptimed --metrics-address 127.0.0.1:9540  also serve Prometheus metrics
  keeptimed --config ./keeptimed.toml --print-config
"""


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error and exit status 2 instead of a usage dump."""

    def error(self, message: str):
        self.exit(EXIT_CONFIG, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _ensure_standard_fds() -> None:
    """Keep fds 0-2 taken, so no socket or database lands on them by accident."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)


def build_parser() -> Parser:
    """keeptimed's flags: --config, --print-config, --version and one per setting."""
    parser = Parser(
        prog="keeptimed",
        description="keeptime daemon: records process-tree clocks and restores them in time namespaces.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="FILE",
                        help=f"configuration file (env {CONFIG_ENV}; default {DEFAULT_CONFIG}, "
                             "which may be absent; a file named here must exist)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the effective configuration as TOML and exit")
    config.add_flags(parser)
    parser.add_argument("--version", action="version", version=f"keeptimed {__version__}")
    return parser


def load_config(argv=None, environ=None) -> tuple[argparse.Namespace, config.Config]:
    """Parse flags and build the effective configuration (may raise ConfigError)."""
    environ = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    flags = {s.key: getattr(args, s.key) for s in config.SETTINGS if hasattr(args, s.key)}
    path, explicit = config.config_path(args.config, environ)
    return args, config.load(flags, environ, path, explicit)


def main(argv=None) -> int:
    try:
        args, cfg = load_config(argv)
    except config.ConfigError as exc:
        print(f"keeptimed: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.print_config:
        sys.stdout.write(cfg.to_toml())
        return 0
    _ensure_standard_fds()
    logs.setup(cfg.log_level, cfg.log_format)
    try:
        return Daemon(cfg, Notifier.from_environment()).run()
    except StartupError as exc:
        print(f"keeptimed: {exc}", file=sys.stderr)
        return EXIT_STARTUP


if __name__ == "__main__":
    sys.exit(main())
