from google.protobuf import descriptor_pb2 as _descriptor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Policy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POLICY_UNSPECIFIED: _ClassVar[Policy]
    POLICY_FREEZE: _ClassVar[Policy]
    POLICY_SUSPEND: _ClassVar[Policy]
    POLICY_ELAPSED: _ClassVar[Policy]

class Mechanism(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MECHANISM_UNSPECIFIED: _ClassVar[Mechanism]
    MECHANISM_CLONE3_TIMENS_OFFSET: _ClassVar[Mechanism]
    MECHANISM_UNSHARE_PROC_OFFSETS: _ClassVar[Mechanism]
    MECHANISM_SETNS: _ClassVar[Mechanism]

class DowntimeSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DOWNTIME_SOURCE_UNSPECIFIED: _ClassVar[DowntimeSource]
    DOWNTIME_SOURCE_SAME_BOOT: _ClassVar[DowntimeSource]
    DOWNTIME_SOURCE_REALTIME: _ClassVar[DowntimeSource]
    DOWNTIME_SOURCE_REALTIME_CLAMPED: _ClassVar[DowntimeSource]

class OffsetAbi(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OFFSET_ABI_UNSPECIFIED: _ClassVar[OffsetAbi]
    OFFSET_ABI_UNTRIED: _ClassVar[OffsetAbi]
    OFFSET_ABI_SUPPORTED: _ClassVar[OffsetAbi]
    OFFSET_ABI_UNSUPPORTED: _ClassVar[OffsetAbi]

class Verdict(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERDICT_UNSPECIFIED: _ClassVar[Verdict]
    VERDICT_CONTINUOUS: _ClassVar[Verdict]
    VERDICT_REGRESSED: _ClassVar[Verdict]
    VERDICT_UNVERIFIED: _ClassVar[Verdict]
POLICY_UNSPECIFIED: Policy
POLICY_FREEZE: Policy
POLICY_SUSPEND: Policy
POLICY_ELAPSED: Policy
MECHANISM_UNSPECIFIED: Mechanism
MECHANISM_CLONE3_TIMENS_OFFSET: Mechanism
MECHANISM_UNSHARE_PROC_OFFSETS: Mechanism
MECHANISM_SETNS: Mechanism
DOWNTIME_SOURCE_UNSPECIFIED: DowntimeSource
DOWNTIME_SOURCE_SAME_BOOT: DowntimeSource
DOWNTIME_SOURCE_REALTIME: DowntimeSource
DOWNTIME_SOURCE_REALTIME_CLAMPED: DowntimeSource
OFFSET_ABI_UNSPECIFIED: OffsetAbi
OFFSET_ABI_UNTRIED: OffsetAbi
OFFSET_ABI_SUPPORTED: OffsetAbi
OFFSET_ABI_UNSUPPORTED: OffsetAbi
VERDICT_UNSPECIFIED: Verdict
VERDICT_CONTINUOUS: Verdict
VERDICT_REGRESSED: Verdict
VERDICT_UNVERIFIED: Verdict
LIMIT_FIELD_NUMBER: _ClassVar[int]
limit: _descriptor.FieldDescriptor
MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
max_message_bytes: _descriptor.FieldDescriptor

class Limit(_message.Message):
    __slots__ = ("max_bytes", "max_items", "max_key_bytes")
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_ITEMS_FIELD_NUMBER: _ClassVar[int]
    MAX_KEY_BYTES_FIELD_NUMBER: _ClassVar[int]
    max_bytes: int
    max_items: int
    max_key_bytes: int
    def __init__(self, max_bytes: _Optional[int] = ..., max_items: _Optional[int] = ..., max_key_bytes: _Optional[int] = ...) -> None: ...

class ClockValues(_message.Message):
    __slots__ = ("monotonic_ns", "boottime_ns")
    MONOTONIC_NS_FIELD_NUMBER: _ClassVar[int]
    BOOTTIME_NS_FIELD_NUMBER: _ClassVar[int]
    monotonic_ns: int
    boottime_ns: int
    def __init__(self, monotonic_ns: _Optional[int] = ..., boottime_ns: _Optional[int] = ...) -> None: ...

class Offsets(_message.Message):
    __slots__ = ("monotonic_ns", "boottime_ns")
    MONOTONIC_NS_FIELD_NUMBER: _ClassVar[int]
    BOOTTIME_NS_FIELD_NUMBER: _ClassVar[int]
    monotonic_ns: int
    boottime_ns: int
    def __init__(self, monotonic_ns: _Optional[int] = ..., boottime_ns: _Optional[int] = ...) -> None: ...

class TimeNamespace(_message.Message):
    __slots__ = ("inode", "offsets", "clocks", "pids")
    INODE_FIELD_NUMBER: _ClassVar[int]
    OFFSETS_FIELD_NUMBER: _ClassVar[int]
    CLOCKS_FIELD_NUMBER: _ClassVar[int]
    PIDS_FIELD_NUMBER: _ClassVar[int]
    inode: int
    offsets: Offsets
    clocks: ClockValues
    pids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, inode: _Optional[int] = ..., offsets: _Optional[_Union[Offsets, _Mapping]] = ..., clocks: _Optional[_Union[ClockValues, _Mapping]] = ..., pids: _Optional[_Iterable[int]] = ...) -> None: ...

class ProcessInfo(_message.Message):
    __slots__ = ("pid", "ppid", "start_time_ticks", "timens_inode", "comm", "uid")
    PID_FIELD_NUMBER: _ClassVar[int]
    PPID_FIELD_NUMBER: _ClassVar[int]
    START_TIME_TICKS_FIELD_NUMBER: _ClassVar[int]
    TIMENS_INODE_FIELD_NUMBER: _ClassVar[int]
    COMM_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    pid: int
    ppid: int
    start_time_ticks: int
    timens_inode: int
    comm: str
    uid: int
    def __init__(self, pid: _Optional[int] = ..., ppid: _Optional[int] = ..., start_time_ticks: _Optional[int] = ..., timens_inode: _Optional[int] = ..., comm: _Optional[str] = ..., uid: _Optional[int] = ...) -> None: ...

class Record(_message.Message):
    __slots__ = ("id", "root_pid", "clocks", "realtime_ns", "host_clocks", "boot_id", "hostname", "root_timens_inode", "namespaces", "processes", "labels", "source")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    ROOT_PID_FIELD_NUMBER: _ClassVar[int]
    CLOCKS_FIELD_NUMBER: _ClassVar[int]
    REALTIME_NS_FIELD_NUMBER: _ClassVar[int]
    HOST_CLOCKS_FIELD_NUMBER: _ClassVar[int]
    BOOT_ID_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    ROOT_TIMENS_INODE_FIELD_NUMBER: _ClassVar[int]
    NAMESPACES_FIELD_NUMBER: _ClassVar[int]
    PROCESSES_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    id: str
    root_pid: int
    clocks: ClockValues
    realtime_ns: int
    host_clocks: ClockValues
    boot_id: str
    hostname: str
    root_timens_inode: int
    namespaces: _containers.RepeatedCompositeFieldContainer[TimeNamespace]
    processes: _containers.RepeatedCompositeFieldContainer[ProcessInfo]
    labels: _containers.ScalarMap[str, str]
    source: str
    def __init__(self, id: _Optional[str] = ..., root_pid: _Optional[int] = ..., clocks: _Optional[_Union[ClockValues, _Mapping]] = ..., realtime_ns: _Optional[int] = ..., host_clocks: _Optional[_Union[ClockValues, _Mapping]] = ..., boot_id: _Optional[str] = ..., hostname: _Optional[str] = ..., root_timens_inode: _Optional[int] = ..., namespaces: _Optional[_Iterable[_Union[TimeNamespace, _Mapping]]] = ..., processes: _Optional[_Iterable[_Union[ProcessInfo, _Mapping]]] = ..., labels: _Optional[_Mapping[str, str]] = ..., source: _Optional[str] = ...) -> None: ...

class RecordEnvelope(_message.Message):
    __slots__ = ("format_version", "record", "sha256")
    FORMAT_VERSION_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    format_version: int
    record: bytes
    sha256: bytes
    def __init__(self, format_version: _Optional[int] = ..., record: _Optional[bytes] = ..., sha256: _Optional[bytes] = ...) -> None: ...

class RecordSummary(_message.Message):
    __slots__ = ("id", "root_pid", "clocks", "realtime_ns", "boot_id", "hostname", "process_count", "namespace_count", "labels", "source", "error", "owner_uid")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    ROOT_PID_FIELD_NUMBER: _ClassVar[int]
    CLOCKS_FIELD_NUMBER: _ClassVar[int]
    REALTIME_NS_FIELD_NUMBER: _ClassVar[int]
    BOOT_ID_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    PROCESS_COUNT_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_COUNT_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    OWNER_UID_FIELD_NUMBER: _ClassVar[int]
    id: str
    root_pid: int
    clocks: ClockValues
    realtime_ns: int
    boot_id: str
    hostname: str
    process_count: int
    namespace_count: int
    labels: _containers.ScalarMap[str, str]
    source: str
    error: str
    owner_uid: int
    def __init__(self, id: _Optional[str] = ..., root_pid: _Optional[int] = ..., clocks: _Optional[_Union[ClockValues, _Mapping]] = ..., realtime_ns: _Optional[int] = ..., boot_id: _Optional[str] = ..., hostname: _Optional[str] = ..., process_count: _Optional[int] = ..., namespace_count: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ..., source: _Optional[str] = ..., error: _Optional[str] = ..., owner_uid: _Optional[int] = ...) -> None: ...

class Plan(_message.Message):
    __slots__ = ("record_id", "policy", "recorded", "targets", "offsets", "host_clocks", "realtime_ns", "downtime_ns", "downtime_source", "same_boot", "same_host", "explanation")
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    RECORDED_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    OFFSETS_FIELD_NUMBER: _ClassVar[int]
    HOST_CLOCKS_FIELD_NUMBER: _ClassVar[int]
    REALTIME_NS_FIELD_NUMBER: _ClassVar[int]
    DOWNTIME_NS_FIELD_NUMBER: _ClassVar[int]
    DOWNTIME_SOURCE_FIELD_NUMBER: _ClassVar[int]
    SAME_BOOT_FIELD_NUMBER: _ClassVar[int]
    SAME_HOST_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    policy: Policy
    recorded: ClockValues
    targets: ClockValues
    offsets: Offsets
    host_clocks: ClockValues
    realtime_ns: int
    downtime_ns: int
    downtime_source: DowntimeSource
    same_boot: bool
    same_host: bool
    explanation: str
    def __init__(self, record_id: _Optional[str] = ..., policy: _Optional[_Union[Policy, str]] = ..., recorded: _Optional[_Union[ClockValues, _Mapping]] = ..., targets: _Optional[_Union[ClockValues, _Mapping]] = ..., offsets: _Optional[_Union[Offsets, _Mapping]] = ..., host_clocks: _Optional[_Union[ClockValues, _Mapping]] = ..., realtime_ns: _Optional[int] = ..., downtime_ns: _Optional[int] = ..., downtime_source: _Optional[_Union[DowntimeSource, str]] = ..., same_boot: _Optional[bool] = ..., same_host: _Optional[bool] = ..., explanation: _Optional[str] = ...) -> None: ...

class Command(_message.Message):
    __slots__ = ("argv", "env", "cwd", "uid", "gid", "stdin_path", "stdout_path", "stderr_path")
    ARGV_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    CWD_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    GID_FIELD_NUMBER: _ClassVar[int]
    STDIN_PATH_FIELD_NUMBER: _ClassVar[int]
    STDOUT_PATH_FIELD_NUMBER: _ClassVar[int]
    STDERR_PATH_FIELD_NUMBER: _ClassVar[int]
    argv: _containers.RepeatedScalarFieldContainer[str]
    env: _containers.RepeatedScalarFieldContainer[str]
    cwd: str
    uid: int
    gid: int
    stdin_path: str
    stdout_path: str
    stderr_path: str
    def __init__(self, argv: _Optional[_Iterable[str]] = ..., env: _Optional[_Iterable[str]] = ..., cwd: _Optional[str] = ..., uid: _Optional[int] = ..., gid: _Optional[int] = ..., stdin_path: _Optional[str] = ..., stdout_path: _Optional[str] = ..., stderr_path: _Optional[str] = ...) -> None: ...

class CheckpointRequest(_message.Message):
    __slots__ = ("pid", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    pid: int
    labels: _containers.ScalarMap[str, str]
    def __init__(self, pid: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class CheckpointResponse(_message.Message):
    __slots__ = ("record",)
    RECORD_FIELD_NUMBER: _ClassVar[int]
    record: Record
    def __init__(self, record: _Optional[_Union[Record, _Mapping]] = ...) -> None: ...

class PlanRequest(_message.Message):
    __slots__ = ("record_id", "policy")
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    policy: Policy
    def __init__(self, record_id: _Optional[str] = ..., policy: _Optional[_Union[Policy, str]] = ...) -> None: ...

class PlanResponse(_message.Message):
    __slots__ = ("plan",)
    PLAN_FIELD_NUMBER: _ClassVar[int]
    plan: Plan
    def __init__(self, plan: _Optional[_Union[Plan, _Mapping]] = ...) -> None: ...

class RestoreRequest(_message.Message):
    __slots__ = ("record_id", "policy", "command")
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    policy: Policy
    command: Command
    def __init__(self, record_id: _Optional[str] = ..., policy: _Optional[_Union[Policy, str]] = ..., command: _Optional[_Union[Command, _Mapping]] = ...) -> None: ...

class RestoreResponse(_message.Message):
    __slots__ = ("pid", "offsets", "mechanism", "timens_inode", "plan")
    PID_FIELD_NUMBER: _ClassVar[int]
    OFFSETS_FIELD_NUMBER: _ClassVar[int]
    MECHANISM_FIELD_NUMBER: _ClassVar[int]
    TIMENS_INODE_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    pid: int
    offsets: Offsets
    mechanism: Mechanism
    timens_inode: int
    plan: Plan
    def __init__(self, pid: _Optional[int] = ..., offsets: _Optional[_Union[Offsets, _Mapping]] = ..., mechanism: _Optional[_Union[Mechanism, str]] = ..., timens_inode: _Optional[int] = ..., plan: _Optional[_Union[Plan, _Mapping]] = ...) -> None: ...

class WaitRequest(_message.Message):
    __slots__ = ("pid",)
    PID_FIELD_NUMBER: _ClassVar[int]
    pid: int
    def __init__(self, pid: _Optional[int] = ...) -> None: ...

class WaitResponse(_message.Message):
    __slots__ = ("pid", "exit_code", "signal", "status")
    PID_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    pid: int
    exit_code: int
    signal: int
    status: int
    def __init__(self, pid: _Optional[int] = ..., exit_code: _Optional[int] = ..., signal: _Optional[int] = ..., status: _Optional[int] = ...) -> None: ...

class GetRecordRequest(_message.Message):
    __slots__ = ("record_id",)
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    def __init__(self, record_id: _Optional[str] = ...) -> None: ...

class ListRecordsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListRecordsResponse(_message.Message):
    __slots__ = ("records", "next_page_token")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[RecordSummary]
    next_page_token: str
    def __init__(self, records: _Optional[_Iterable[_Union[RecordSummary, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteRecordRequest(_message.Message):
    __slots__ = ("record_id",)
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    def __init__(self, record_id: _Optional[str] = ...) -> None: ...

class DeleteRecordResponse(_message.Message):
    __slots__ = ("record_id",)
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    def __init__(self, record_id: _Optional[str] = ...) -> None: ...

class ClocksRequest(_message.Message):
    __slots__ = ("pid",)
    PID_FIELD_NUMBER: _ClassVar[int]
    pid: int
    def __init__(self, pid: _Optional[int] = ...) -> None: ...

class ClocksResponse(_message.Message):
    __slots__ = ("pid", "timens_inode", "host_namespace", "offsets", "clocks", "host_clocks", "realtime_ns")
    PID_FIELD_NUMBER: _ClassVar[int]
    TIMENS_INODE_FIELD_NUMBER: _ClassVar[int]
    HOST_NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    OFFSETS_FIELD_NUMBER: _ClassVar[int]
    CLOCKS_FIELD_NUMBER: _ClassVar[int]
    HOST_CLOCKS_FIELD_NUMBER: _ClassVar[int]
    REALTIME_NS_FIELD_NUMBER: _ClassVar[int]
    pid: int
    timens_inode: int
    host_namespace: bool
    offsets: Offsets
    clocks: ClockValues
    host_clocks: ClockValues
    realtime_ns: int
    def __init__(self, pid: _Optional[int] = ..., timens_inode: _Optional[int] = ..., host_namespace: _Optional[bool] = ..., offsets: _Optional[_Union[Offsets, _Mapping]] = ..., clocks: _Optional[_Union[ClockValues, _Mapping]] = ..., host_clocks: _Optional[_Union[ClockValues, _Mapping]] = ..., realtime_ns: _Optional[int] = ...) -> None: ...

class ExecRequest(_message.Message):
    __slots__ = ("pid", "command")
    PID_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    pid: int
    command: Command
    def __init__(self, pid: _Optional[int] = ..., command: _Optional[_Union[Command, _Mapping]] = ...) -> None: ...

class ExecResponse(_message.Message):
    __slots__ = ("pid", "timens_inode", "offsets", "mechanism")
    PID_FIELD_NUMBER: _ClassVar[int]
    TIMENS_INODE_FIELD_NUMBER: _ClassVar[int]
    OFFSETS_FIELD_NUMBER: _ClassVar[int]
    MECHANISM_FIELD_NUMBER: _ClassVar[int]
    pid: int
    timens_inode: int
    offsets: Offsets
    mechanism: Mechanism
    def __init__(self, pid: _Optional[int] = ..., timens_inode: _Optional[int] = ..., offsets: _Optional[_Union[Offsets, _Mapping]] = ..., mechanism: _Optional[_Union[Mechanism, str]] = ...) -> None: ...

class ExportRecordRequest(_message.Message):
    __slots__ = ("record_id",)
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    def __init__(self, record_id: _Optional[str] = ...) -> None: ...

class ExportRecordResponse(_message.Message):
    __slots__ = ("record_id", "data")
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    data: bytes
    def __init__(self, record_id: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class ImportRecordRequest(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class ImportRecordResponse(_message.Message):
    __slots__ = ("record",)
    RECORD_FIELD_NUMBER: _ClassVar[int]
    record: Record
    def __init__(self, record: _Optional[_Union[Record, _Mapping]] = ...) -> None: ...

class GetInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MissingCapability(_message.Message):
    __slots__ = ("name", "needed_for", "blocking")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NEEDED_FOR_FIELD_NUMBER: _ClassVar[int]
    BLOCKING_FIELD_NUMBER: _ClassVar[int]
    name: str
    needed_for: str
    blocking: bool
    def __init__(self, name: _Optional[str] = ..., needed_for: _Optional[str] = ..., blocking: _Optional[bool] = ...) -> None: ...

class GetInfoResponse(_message.Message):
    __slots__ = ("version", "pid", "started_realtime_ns", "kernel_release", "time_namespaces", "max_time_namespaces", "offset_abi", "capabilities", "missing_capabilities", "record_count", "children_running", "config_path", "config_file_loaded", "socket_path", "db_path", "metrics_address", "default_policy", "timens_inode", "host_time_namespace", "hostname", "boot_id")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    STARTED_REALTIME_NS_FIELD_NUMBER: _ClassVar[int]
    KERNEL_RELEASE_FIELD_NUMBER: _ClassVar[int]
    TIME_NAMESPACES_FIELD_NUMBER: _ClassVar[int]
    MAX_TIME_NAMESPACES_FIELD_NUMBER: _ClassVar[int]
    OFFSET_ABI_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    MISSING_CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    RECORD_COUNT_FIELD_NUMBER: _ClassVar[int]
    CHILDREN_RUNNING_FIELD_NUMBER: _ClassVar[int]
    CONFIG_PATH_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FILE_LOADED_FIELD_NUMBER: _ClassVar[int]
    SOCKET_PATH_FIELD_NUMBER: _ClassVar[int]
    DB_PATH_FIELD_NUMBER: _ClassVar[int]
    METRICS_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_POLICY_FIELD_NUMBER: _ClassVar[int]
    TIMENS_INODE_FIELD_NUMBER: _ClassVar[int]
    HOST_TIME_NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    BOOT_ID_FIELD_NUMBER: _ClassVar[int]
    version: str
    pid: int
    started_realtime_ns: int
    kernel_release: str
    time_namespaces: bool
    max_time_namespaces: int
    offset_abi: OffsetAbi
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    missing_capabilities: _containers.RepeatedCompositeFieldContainer[MissingCapability]
    record_count: int
    children_running: int
    config_path: str
    config_file_loaded: bool
    socket_path: str
    db_path: str
    metrics_address: str
    default_policy: Policy
    timens_inode: int
    host_time_namespace: bool
    hostname: str
    boot_id: str
    def __init__(self, version: _Optional[str] = ..., pid: _Optional[int] = ..., started_realtime_ns: _Optional[int] = ..., kernel_release: _Optional[str] = ..., time_namespaces: _Optional[bool] = ..., max_time_namespaces: _Optional[int] = ..., offset_abi: _Optional[_Union[OffsetAbi, str]] = ..., capabilities: _Optional[_Iterable[str]] = ..., missing_capabilities: _Optional[_Iterable[_Union[MissingCapability, _Mapping]]] = ..., record_count: _Optional[int] = ..., children_running: _Optional[int] = ..., config_path: _Optional[str] = ..., config_file_loaded: _Optional[bool] = ..., socket_path: _Optional[str] = ..., db_path: _Optional[str] = ..., metrics_address: _Optional[str] = ..., default_policy: _Optional[_Union[Policy, str]] = ..., timens_inode: _Optional[int] = ..., host_time_namespace: _Optional[bool] = ..., hostname: _Optional[str] = ..., boot_id: _Optional[str] = ...) -> None: ...

class RecordRef(_message.Message):
    __slots__ = ("record_id", "record_file")
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    RECORD_FILE_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    record_file: bytes
    def __init__(self, record_id: _Optional[str] = ..., record_file: _Optional[bytes] = ...) -> None: ...

class CheckpointCriuImageRequest(_message.Message):
    __slots__ = ("timens_image", "root_pid", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TIMENS_IMAGE_FIELD_NUMBER: _ClassVar[int]
    ROOT_PID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    timens_image: bytes
    root_pid: int
    labels: _containers.ScalarMap[str, str]
    def __init__(self, timens_image: _Optional[bytes] = ..., root_pid: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class PlanCriuRestoreRequest(_message.Message):
    __slots__ = ("record", "timens_image", "policy")
    RECORD_FIELD_NUMBER: _ClassVar[int]
    TIMENS_IMAGE_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    record: RecordRef
    timens_image: bytes
    policy: Policy
    def __init__(self, record: _Optional[_Union[RecordRef, _Mapping]] = ..., timens_image: _Optional[bytes] = ..., policy: _Optional[_Union[Policy, str]] = ...) -> None: ...

class PlanCriuRestoreResponse(_message.Message):
    __slots__ = ("timens_image", "plan")
    TIMENS_IMAGE_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    timens_image: bytes
    plan: Plan
    def __init__(self, timens_image: _Optional[bytes] = ..., plan: _Optional[_Union[Plan, _Mapping]] = ...) -> None: ...

class VerifyRestoreRequest(_message.Message):
    __slots__ = ("record", "pid", "policy", "timens_image", "stage")
    RECORD_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    TIMENS_IMAGE_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    record: RecordRef
    pid: int
    policy: Policy
    timens_image: bytes
    stage: str
    def __init__(self, record: _Optional[_Union[RecordRef, _Mapping]] = ..., pid: _Optional[int] = ..., policy: _Optional[_Union[Policy, str]] = ..., timens_image: _Optional[bytes] = ..., stage: _Optional[str] = ...) -> None: ...

class VerifyRestoreResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: RestoreEvent
    def __init__(self, event: _Optional[_Union[RestoreEvent, _Mapping]] = ...) -> None: ...

class RestoreEvent(_message.Message):
    __slots__ = ("id", "record_id", "pid", "policy", "stage", "ok", "dumped", "clocks", "offsets", "timens_inode", "realtime_ns", "message", "verdict", "owner_uid")
    ID_FIELD_NUMBER: _ClassVar[int]
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    DUMPED_FIELD_NUMBER: _ClassVar[int]
    CLOCKS_FIELD_NUMBER: _ClassVar[int]
    OFFSETS_FIELD_NUMBER: _ClassVar[int]
    TIMENS_INODE_FIELD_NUMBER: _ClassVar[int]
    REALTIME_NS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    OWNER_UID_FIELD_NUMBER: _ClassVar[int]
    id: int
    record_id: str
    pid: int
    policy: Policy
    stage: str
    ok: bool
    dumped: ClockValues
    clocks: ClockValues
    offsets: Offsets
    timens_inode: int
    realtime_ns: int
    message: str
    verdict: Verdict
    owner_uid: int
    def __init__(self, id: _Optional[int] = ..., record_id: _Optional[str] = ..., pid: _Optional[int] = ..., policy: _Optional[_Union[Policy, str]] = ..., stage: _Optional[str] = ..., ok: _Optional[bool] = ..., dumped: _Optional[_Union[ClockValues, _Mapping]] = ..., clocks: _Optional[_Union[ClockValues, _Mapping]] = ..., offsets: _Optional[_Union[Offsets, _Mapping]] = ..., timens_inode: _Optional[int] = ..., realtime_ns: _Optional[int] = ..., message: _Optional[str] = ..., verdict: _Optional[_Union[Verdict, str]] = ..., owner_uid: _Optional[int] = ...) -> None: ...

class ListRestoresRequest(_message.Message):
    __slots__ = ("record_id", "page_size", "page_token")
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    page_size: int
    page_token: str
    def __init__(self, record_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListRestoresResponse(_message.Message):
    __slots__ = ("events", "next_page_token")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[RestoreEvent]
    next_page_token: str
    def __init__(self, events: _Optional[_Iterable[_Union[RestoreEvent, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
