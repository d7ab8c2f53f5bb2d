"""Record files: a record as self-contained, checksummed bytes.

    b"keeptime-record\\n" + RecordEnvelope{format_version, record, sha256}

The same bytes are what ExportRecord returns, ImportRecord accepts and the
store keeps. The format lives here, in the client package, because the CRIU
hook must write and read records itself when keeptimed is unreachable;
keeptimed.recordfile maps failures to its errors and validates the content.
"""
import hashlib
import re
import uuid
from typing import Optional

from google.protobuf.message import DecodeError

from .v1 import keeptime_pb2 as pb

MAGIC = b"keeptime-record\n"
FORMAT_VERSION = 1
RECORD_ID = re.compile(r"[0-9a-f]{32}")


def new_record_id() -> str:
    """A fresh record id: 32 lowercase hex digits."""
    return uuid.uuid4().hex


def encode(record: pb.Record) -> bytes:
    """Serialize a record into record-file bytes."""
    payload = record.SerializeToString(deterministic=True)
    envelope = pb.RecordEnvelope(
        format_version=FORMAT_VERSION, record=payload, sha256=hashlib.sha256(payload).digest()
    )
    return MAGIC + envelope.SerializeToString(deterministic=True)


class RecordFileError(ValueError):
    """Bytes that are not a sound record file; newer_version is set when
    they are one of a format newer than this code understands."""

    def __init__(self, message: str, newer_version: Optional[int] = None):
        super().__init__(message)
        self.newer_version = newer_version


def parse(data: bytes) -> pb.Record:
    """The record in record-file bytes, checksum verified (content is not validated)."""
    if not data.startswith(MAGIC):
        raise RecordFileError("not a keeptime record (bad magic)")
    envelope = pb.RecordEnvelope()
    try:
        envelope.ParseFromString(data[len(MAGIC):])
    except DecodeError:
        raise RecordFileError("corrupt keeptime record: the envelope does not parse") from None
    if envelope.format_version > FORMAT_VERSION:
        raise RecordFileError(
            f"record format version {envelope.format_version} is newer than this keeptime understands "
            f"({FORMAT_VERSION})", newer_version=envelope.format_version,
        )
    if envelope.format_version < 1:
        raise RecordFileError("corrupt keeptime record: no format version")
    if hashlib.sha256(envelope.record).digest() != envelope.sha256:
        raise RecordFileError("corrupt keeptime record: checksum mismatch")
    record = pb.Record()
    try:
        record.ParseFromString(envelope.record)
    except DecodeError:
        raise RecordFileError("corrupt keeptime record: the record does not parse") from None
    return record
