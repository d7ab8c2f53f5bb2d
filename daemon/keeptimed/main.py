"""keeptimed command line: ``keeptimed [--socket PATH] [--db PATH]``."""
import argparse
import logging
import os
import sys

from keeptime.defaults import DB_ENV, DEFAULT_DB, DEFAULT_SOCKET, SOCKET_ENV

from . import __version__
from .policies import POLICIES
from .server import Daemon, Settings, StartupError


def _ensure_standard_fds() -> None:
    """Keep fds 0-2 taken, so no socket or database lands on them by accident."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="keeptimed",
        description="keeptime daemon: records process-tree clocks and restores them in time namespaces.",
    )
    parser.add_argument("--socket", default=os.environ.get(SOCKET_ENV, DEFAULT_SOCKET),
                        help=f"unix socket to serve on (env {SOCKET_ENV}; default {DEFAULT_SOCKET})")
    parser.add_argument("--db", default=os.environ.get(DB_ENV, DEFAULT_DB),
                        help=f"SQLite record store (env {DB_ENV}; default {DEFAULT_DB})")
    parser.add_argument("--default-policy", choices=POLICIES, default="suspend",
                        help="policy used when a request names none (default suspend)")
    parser.add_argument("--workers", type=int, default=32, help="concurrent RPCs served (default 32)")
    parser.add_argument("--grace", type=float, default=10.0,
                        help="seconds in-flight calls get to finish at shutdown (default 10)")
    parser.add_argument("--socket-group", default=None, metavar="GROUP",
                        help="let GROUP's members call keeptimed (socket mode 0660). They are confined to their "
                             "own processes and uid, but reach a root daemon: grant it like the docker group")
    parser.add_argument("--tcp", default=None, metavar="HOST:PORT",
                        help="also listen on TCP for migration tooling; needs mutual TLS")
    parser.add_argument("--tls-cert", default=None, help="server certificate (PEM) for --tcp")
    parser.add_argument("--tls-key", default=None, help="server private key (PEM) for --tcp")
    parser.add_argument("--tls-client-ca", default=None, help="CA (PEM) that signs accepted client certificates")
    parser.add_argument("--tls-allow-name", action="append", default=[], metavar="NAME",
                        help="accept only client certificates with this common or subject-alternative name "
                             "(repeatable; default any certificate the CA signed)")
    parser.add_argument("--insecure-loopback", action="store_true",
                        help="allow --tcp without TLS on a loopback address (any local user becomes root-equivalent)")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    parser.add_argument("--version", action="version", version=f"keeptimed {__version__}")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    _ensure_standard_fds()
    logging.basicConfig(
        level=args.log_level, stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    settings = Settings(
        socket_path=os.path.abspath(args.socket),
        db_path=os.path.abspath(args.db),
        workers=args.workers,
        grace_seconds=args.grace,
        default_policy=args.default_policy,
        socket_group=args.socket_group,
        tcp_address=args.tcp,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        tls_allow_names=args.tls_allow_name,
        insecure_loopback=args.insecure_loopback,
    )
    try:
        return Daemon(settings).run()
    except StartupError as exc:
        print(f"keeptimed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
