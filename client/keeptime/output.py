"""How the CLI prints results: one JSON document with --json (protobuf
messages as plain JSON types, exactly as received), else tables and lines for
humans, in which whatever keeptimed or a record supplied is made printable."""
import datetime
import json
import sys

from .printable import printable
from .timefmt import format_duration, format_ns
from .v1 import keeptime_pb2 as pb


def message_to_dict(message) -> dict:
    """A protobuf message as plain JSON types: int64 stay numbers, enums are names."""
    out = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            out[field.name] = dict(value)
        elif field.is_repeated:
            out[field.name] = [_field_value(field, v) for v in value]
        elif field.message_type is not None and not message.HasField(field.name):
            out[field.name] = None
        else:
            out[field.name] = _field_value(field, value)
    return out


def _field_value(field, value):
    if field.message_type is not None:
        return message_to_dict(value)
    if field.enum_type is not None:
        return field.enum_type.values_by_number[value].name if value in field.enum_type.values_by_number else value
    if isinstance(value, bytes):
        return value.hex()
    return value


def print_json(value) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def emit(line, file=None) -> None:
    """Print one line for a human: control characters and the like escaped,
    so text from keeptimed (hostnames, labels, messages) cannot drive the terminal."""
    print(printable(str(line)), file=file or sys.stdout)


def _when(realtime_ns: int) -> str:
    return datetime.datetime.fromtimestamp(realtime_ns / 1e9, tz=datetime.timezone.utc).isoformat(timespec="milliseconds")


def _clock_line(label: str, clocks) -> str:
    return f"  {label:<10} MONOTONIC {format_ns(clocks.monotonic_ns):>24}   BOOTTIME {format_ns(clocks.boottime_ns):>24}"


def policy_name(value: int) -> str:
    return pb.Policy.Name(value).removeprefix("POLICY_").lower()


def print_plan(plan: pb.Plan) -> None:
    emit(f"record    {plan.record_id}")
    emit(f"policy    {policy_name(plan.policy)}")
    emit(_clock_line("recorded", plan.recorded))
    emit(_clock_line("target", plan.targets))
    emit(_clock_line("offsets", plan.offsets))
    emit(f"downtime  {format_duration(plan.downtime_ns)} "
          f"({'same boot' if plan.same_boot else 'other boot'}, {'same host' if plan.same_host else 'other host'})")
    emit(f"why       {plan.explanation}")


def print_record(record: pb.Record) -> None:
    emit(f"record      {record.id}")
    emit(f"root pid    {record.root_pid}")
    emit(f"taken       {_when(record.realtime_ns)} on {record.hostname or '?'} (boot {record.boot_id or '?'})")
    emit(f"source      {record.source}")
    emit(_clock_line("clocks", record.clocks))
    emit(_clock_line("host", record.host_clocks))
    for key, value in sorted(record.labels.items()):
        emit(f"label       {key}={value}")
    for ns in record.namespaces:
        root = "  (root's)" if ns.inode == record.root_timens_inode else ""
        emit(f"namespace   {ns.inode}{root}: {len(ns.pids)} process(es), offsets "
              f"monotonic {format_ns(ns.offsets.monotonic_ns)}, boottime {format_ns(ns.offsets.boottime_ns)}")
    emit(f"processes   {len(record.processes)}")
    for proc in record.processes[:50]:
        emit(f"  {proc.pid:>8} {proc.ppid:>8} {proc.comm}")
    if len(record.processes) > 50:
        emit(f"  ... and {len(record.processes) - 50} more (use --json)")


def print_list(records) -> None:
    if not records:
        emit("no records")
        return
    emit(f"{'ID':<32}  {'OWNER':>6}  {'ROOT':>7}  {'PROCS':>5}  {'TAKEN (UTC)':<29}  {'HOST':<16}  MONOTONIC")
    for r in records:
        if r.error:
            emit(f"{r.id:<32}  {r.owner_uid:>6}  DAMAGED: {r.error}")
            continue
        emit(f"{r.id:<32}  {r.owner_uid:>6}  {r.root_pid:>7}  {r.process_count:>5}  {_when(r.realtime_ns):<29}  "
              f"{r.hostname[:16]:<16}  {format_ns(r.clocks.monotonic_ns)}")


def print_restores(events) -> None:
    if not events:
        emit("no restores")
        return
    emit(f"{'#':>5}  {'RECORD':<32}  {'OWNER':>6}  {'PID':>7}  {'POLICY':<8}  {'STAGE':<13}  {'VERIFIED (UTC)':<29}  "
         f"VERDICT")
    for e in events:
        verdict = "ok" if e.ok else VERDICTS.get(e.verdict, "REGRESSED")
        emit(f"{e.id:>5}  {e.record_id or '-':<32}  {e.owner_uid:>6}  {e.pid:>7}  {policy_name(e.policy):<8}  "
             f"{e.stage[:13]:<13}  {_when(e.realtime_ns):<29}  {verdict}: {e.message}")


VERDICTS = {pb.VERDICT_REGRESSED: "REGRESSED", pb.VERDICT_UNVERIFIED: "UNVERIFIED"}


def print_clocks(c: pb.ClocksResponse) -> None:
    where = "the host's" if c.host_namespace else "its own"
    emit(f"pid        {c.pid}")
    emit(f"namespace  {c.timens_inode} ({where})")
    emit(_clock_line("sees", c.clocks))
    emit(_clock_line("offsets", c.offsets))
    emit(_clock_line("host", c.host_clocks))


def print_info(info: pb.GetInfoResponse) -> None:
    missing = ", ".join(m.name for m in info.missing_capabilities) or "none"
    abi = pb.OffsetAbi.Name(info.offset_abi).removeprefix("OFFSET_ABI_").lower()
    limit = "unknown" if info.max_time_namespaces < 0 else str(info.max_time_namespaces)
    rows = [
        ("version", f"keeptimed {info.version}, {f'pid {info.pid}' if info.pid else 'outside this pid namespace'}, "
                    f"started {_when(info.started_realtime_ns)}"),
        ("kernel", f"{info.kernel_release}, time namespaces {'yes' if info.time_namespaces else 'NO'}, "
                   f"limit {limit} per user namespace"),
        ("clone3 offsets", abi),
        ("time namespace", f"{info.timens_inode} ({'the host' if info.host_time_namespace else 'its own'})"),
        ("capabilities", f"{len(info.capabilities)} effective; missing needed: {missing}"),
        ("records", str(info.record_count)),
        ("children", f"{info.children_running} running"),
        ("socket", info.socket_path),
        ("db", info.db_path),
        ("config", info.config_path + ("" if info.config_file_loaded else " (absent: embedded defaults)")),
        ("metrics", f"http://{info.metrics_address}/metrics" if info.metrics_address else "off"),
        ("default policy", policy_name(info.default_policy)),
        ("host", f"{info.hostname} (boot {info.boot_id})"),
    ]
    for key, value in rows:
        emit(f"{key:<16}{value}")


def print_doctor(report: dict) -> None:
    from . import doctor   # only this command has its checks loaded

    for check in report["checks"]:
        emit(f"{check['status']:<6}{check['name']:<17}{check['summary']}")
    warnings = sum(c["status"] == doctor.WARN for c in report["checks"])
    problems = sum(c["status"] == doctor.FAIL for c in report["checks"])
    if problems:
        emit(f"{problems} blocking problem(s), {warnings} warning(s)")
    else:
        emit(f"no blocking problem, {warnings} warning(s)")
