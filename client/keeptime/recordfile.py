"""Record files, the writing half: a record as self-contained, checksummed bytes.

    b"keeptime-record\\n" + RecordEnvelope{format_version, record, sha256}

The same bytes are what ExportRecord returns, ImportRecord accepts and the
store keeps. Writing lives here, in the client package, because the CRIU
hook must be able to write a record itself when keeptimed is unreachable;
keeptimed.recordfile adds reading and validation.
"""
import hashlib
import re
import uuid

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
