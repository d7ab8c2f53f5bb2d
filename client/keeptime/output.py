"""How the CLI prints results: one JSON document with --json (protobuf
messages as plain JSON types), else tables and lines for humans."""
import datetime
import json
import sys

from . import doctor
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


def _when(realtime_ns: int) -> str:
    return datetime.datetime.fromtimestamp(realtime_ns / 1e9, tz=datetime.timezone.utc).isoformat(timespec="milliseconds")


def _clock_line(label: str, clocks) -> str:
    return f"  {label:<10} MONOTONIC {format_ns(clocks.monotonic_ns):>24}   BOOTTIME {format_ns(clocks.boottime_ns):>24}"


def policy_name(value: int) -> str:
    return pb.Policy.Name(value).removeprefix("POLICY_").lower()


def print_plan(plan: pb.Plan) -> None:
    print(f"record    {plan.record_id}")
    print(f"policy    {policy_name(plan.policy)}")
    print(_clock_line("recorded", plan.recorded))
    print(_clock_line("target", plan.targets))
    print(_clock_line("offsets", plan.offsets))
    print(f"downtime  {format_duration(plan.downtime_ns)} "
          f"({'same boot' if plan.same_boot else 'other boot'}, {'same host' if plan.same_host else 'other host'})")
    print(f"why       {plan.explanation}")


def print_record(record: pb.Record) -> None:
    print(f"record      {record.id}")
    print(f"root pid    {record.root_pid}")
    print(f"taken       {_when(record.realtime_ns)} on {record.hostname or '?'} (boot {record.boot_id or '?'})")
    print(f"source      {record.source}")
    print(_clock_line("clocks", record.clocks))
    print(_clock_line("host", record.host_clocks))
    for key, value in sorted(record.labels.items()):
        print(f"label       {key}={value}")
    for ns in record.namespaces:
        root = "  (root's)" if ns.inode == record.root_timens_inode else ""
        print(f"namespace   {ns.inode}{root}: {len(ns.pids)} process(es), offsets "
              f"monotonic {format_ns(ns.offsets.monotonic_ns)}, boottime {format_ns(ns.offsets.boottime_ns)}")
    print(f"processes   {len(record.processes)}")
    for proc in record.processes[:50]:
        print(f"  {proc.pid:>8} {proc.ppid:>8} {proc.comm}")
    if len(record.processes) > 50:
        print(f"  ... and {len(record.processes) - 50} more (use --json)")


def print_list(records) -> None:
    if not records:
        print("no records")
        return
    print(f"{'ID':<32}  {'ROOT':>7}  {'PROCS':>5}  {'TAKEN (UTC)':<29}  {'HOST':<16}  MONOTONIC")
    for r in records:
        if r.error:
            print(f"{r.id:<32}  DAMAGED: {r.error}")
            continue
        print(f"{r.id:<32}  {r.root_pid:>7}  {r.process_count:>5}  {_when(r.realtime_ns):<29}  "
              f"{r.hostname[:16]:<16}  {format_ns(r.clocks.monotonic_ns)}")


def print_restores(events) -> None:
    if not events:
        print("no restores")
        return
    print(f"{'#':>5}  {'RECORD':<32}  {'PID':>7}  {'POLICY':<8}  {'STAGE':<13}  {'VERIFIED (UTC)':<29}  VERDICT")
    for e in events:
        verdict = "ok" if e.ok else VERDICTS.get(e.verdict, "REGRESSED")
        print(f"{e.id:>5}  {e.record_id or '-':<32}  {e.pid:>7}  {policy_name(e.policy):<8}  {e.stage[:13]:<13}  "
              f"{_when(e.realtime_ns):<29}  {verdict}: {e.message}")


VERDICTS = {pb.VERDICT_REGRESSED: "REGRESSED", pb.VERDICT_UNVERIFIED: "UNVERIFIED"}


def print_clocks(c: pb.ClocksResponse) -> None:
    where = "the host's" if c.host_namespace else "its own"
    print(f"pid        {c.pid}")
    print(f"namespace  {c.timens_inode} ({where})")
    print(_clock_line("sees", c.clocks))
    print(_clock_line("offsets", c.offsets))
    print(_clock_line("host", c.host_clocks))


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
        print(f"{key:<16}{value}")


def print_doctor(report: dict) -> None:
    for check in report["checks"]:
        print(f"{check['status']:<6}{check['name']:<17}{check['summary']}")
    warnings = sum(c["status"] == doctor.WARN for c in report["checks"])
    problems = sum(c["status"] == doctor.FAIL for c in report["checks"])
    if problems:
        print(f"{problems} blocking problem(s), {warnings} warning(s)")
    else:
        print(f"no blocking problem, {warnings} warning(s)")
