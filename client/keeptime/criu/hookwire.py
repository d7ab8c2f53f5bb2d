"""The CRIU hook's wire to keeptimed: one request, one reply, on keeptimed's
own socket.

CRIU runs its action script at every step of a dump and a restore, and time
spent there is charged to the dump, the restore and, between CRIU creating
the tree's time namespace and resuming it, to the tree's MONOTONIC. So what
speaks this wire is a small static program that only forwards
(keeptime-criu-forward, native/criu_forward.c, which the action script
keeptime-criu-hook execs): it opens, with its own privileges and in CRIU's pid and
mount namespaces, a pidfd of CRTOOLS_INIT_PID, the image directory
CRTOOLS_IMAGE_DIR and its configuration file, and passes the three
descriptors to keeptimed (SCM_RIGHTS), which does the work. gRPC cannot carry
descriptors, so this is not gRPC; keeptimed's caller relay tells the two
apart by the first bytes and knows the sender from SO_PEERCRED either way.

Request (the descriptors ride on the message's first byte):

    MAGIC                     8 bytes
    body length               u32, little-endian, at most MAX_BODY_BYTES
    body                      "key=value\\0" entries:
        action                CRTOOLS_SCRIPT_ACTION
        init_pid              CRTOOLS_INIT_PID, as CRIU set it (absent at pre-restore)
        image_dir             CRTOOLS_IMAGE_DIR, as CRIU set it
        config                the configuration file's path
        config_named          "1" when KEEPTIME_CRIU_HOOK_CONFIG named it
        fds                   the passed descriptors' names, in order, comma
                              separated: pidfd, image_dir, config
        <name>_errno          why a descriptor could not be opened (errno)
        answer                "early": answer as soon as the request is in,
                              and do the work after (post-resume, which
                              cannot change the restore)

Reply:

    MAGIC, exit status (u32), message length (u32), message (UTF-8 lines
    for CRIU's log, each already prefixed "keeptime criu-hook: ACTION: ")
"""
import socket
import struct
from typing import Mapping

MAGIC = b"KTCRIU1\n"
MAX_BODY_BYTES = 64 * 1024
MAX_MESSAGE_BYTES = 64 * 1024
FD_NAMES = ("pidfd", "image_dir", "config")
# The steps the hook forwards; it answers every other one itself, at once.
ACTIONS = ("post-dump", "pre-restore", "post-restore", "post-resume")
# The step keeptimed answers before doing it: the tree runs already and CRIU
# ignores its failure, so waiting for the work would only slow the restore.
ANSWERED_EARLY = "post-resume"
_U32 = struct.Struct("<I")
_HEADER = len(MAGIC) + _U32.size


class WireError(ValueError):
    """Bytes that are not a well-formed hook request or reply."""


def encode_request(fields: Mapping[str, str]) -> bytes:
    """A request carrying fields."""
    body = b"".join(f"{key}={value}".encode() + b"\0" for key, value in fields.items())
    if len(body) > MAX_BODY_BYTES:
        raise WireError(f"request body of {len(body)} bytes exceeds {MAX_BODY_BYTES}")
    return MAGIC + _U32.pack(len(body)) + body


def body_length(header: bytes) -> int:
    """The body length a request's first MAGIC + 4 bytes announce."""
    if header[:len(MAGIC)] != MAGIC:
        raise WireError("not a keeptime CRIU hook request")
    (length,) = _U32.unpack_from(header, len(MAGIC))
    if length > MAX_BODY_BYTES:
        raise WireError(f"request body of {length} bytes exceeds {MAX_BODY_BYTES}")
    return length


def parse_body(body: bytes) -> dict[str, str]:
    """The fields of a request body."""
    if body and not body.endswith(b"\0"):
        raise WireError("request body does not end with NUL")
    fields = {}
    for entry in body.split(b"\0")[:-1]:
        key, sep, value = entry.partition(b"=")
        if not sep or not key:
            raise WireError("request entry without key=value")
        try:
            fields[key.decode("ascii")] = value.decode("utf-8", "surrogateescape")
        except UnicodeDecodeError:
            raise WireError("request key is not ASCII") from None
    return fields


def encode_reply(code: int, message: str) -> bytes:
    data = message.encode("utf-8", "replace")[:MAX_MESSAGE_BYTES]
    return MAGIC + _U32.pack(code) + _U32.pack(len(data)) + data


def read_reply(sock: socket.socket) -> tuple[int, str]:
    """(exit status, message) from keeptimed."""
    header = _read_exactly(sock, _HEADER + _U32.size)
    if header[:len(MAGIC)] != MAGIC:
        raise WireError("keeptimed's reply does not start with the hook magic")
    (code,), (length,) = _U32.unpack_from(header, len(MAGIC)), _U32.unpack_from(header, _HEADER)
    if length > MAX_MESSAGE_BYTES:
        raise WireError(f"keeptimed's reply message of {length} bytes is too long")
    return code, _read_exactly(sock, length).decode("utf-8", "replace")


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    chunks, got = [], 0
    while got < size:
        chunk = sock.recv(size - got)
        if not chunk:
            raise WireError("keeptimed closed the connection before replying in full")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)
