from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class pstree_entry(_message.Message):
    __slots__ = ("pid",)
    PID_FIELD_NUMBER: _ClassVar[int]
    pid: int
    def __init__(self, pid: _Optional[int] = ...) -> None: ...

class task_kobj_ids_entry(_message.Message):
    __slots__ = ("time_ns_id",)
    TIME_NS_ID_FIELD_NUMBER: _ClassVar[int]
    time_ns_id: int
    def __init__(self, time_ns_id: _Optional[int] = ...) -> None: ...

class inventory_entry(_message.Message):
    __slots__ = ("img_version", "root_ids", "dump_uptime")
    IMG_VERSION_FIELD_NUMBER: _ClassVar[int]
    ROOT_IDS_FIELD_NUMBER: _ClassVar[int]
    DUMP_UPTIME_FIELD_NUMBER: _ClassVar[int]
    img_version: int
    root_ids: task_kobj_ids_entry
    dump_uptime: int
    def __init__(self, img_version: _Optional[int] = ..., root_ids: _Optional[_Union[task_kobj_ids_entry, _Mapping]] = ..., dump_uptime: _Optional[int] = ...) -> None: ...
