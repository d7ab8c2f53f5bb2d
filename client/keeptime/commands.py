"""What each keeptime command does against keeptimed, once the command line
is parsed (keeptime.cli): one client call, its output as text or JSON, and
keeptimed's errors as the CLI's exit statuses."""
import os
import sys

from . import errors
from .usage import EXIT_ERROR, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE, UsageError, fail
from .client import Client
from .defaults import DEFAULT_SOCKET, SOCKET_ENV
from .output import (emit, message_to_dict, policy_name, print_clocks, print_doctor, print_info, print_json,
                     print_list, print_plan, print_record, print_restores)
from .timefmt import format_ns


def execute(args) -> int:
    """Run a parsed command (not completion, not criu-hook); returns the exit status."""
    try:
        if args.command == "doctor":
            return run_doctor(args)
        with Client(socket=args.socket, timeout=args.timeout) as client:
            return run(args, client)
    except errors.KeeptimeError as exc:
        status = EXIT_ERROR
        if isinstance(exc, errors.Unavailable):
            status = EXIT_UNAVAILABLE
        elif isinstance(exc, errors.InvalidArgument):
            status = EXIT_USAGE
        return fail(status, exc.code.name, exc.message, f"keeptime: {exc}", args.json)


def run_doctor(args) -> int:
    """keeptime doctor: checks this host, and keeptimed if it answers."""
    from . import doctor   # its checks need modules no other command does

    socket_path = args.socket or os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET
    report = doctor.run(socket_path, min(args.timeout, 10.0), args.config, criu=not args.no_criu)
    if args.json:
        info = report["daemon"]
        print_json({**report, "daemon": message_to_dict(info) if info is not None else None})
    else:
        print_doctor(report)
    return EXIT_OK if report["ok"] else EXIT_ERROR


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


def _criu_record(args, client: Client) -> str:
    """Import the record CRIU's image directory carries; returns its id."""
    from .criu.dumpdir import RECORD_FILE, DumpDir   # CRIU's image readers: only this option needs them
    from .criu.imagedir import ImageDir, ImageFileError

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
