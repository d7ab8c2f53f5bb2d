"""Page sizes and page tokens of the List RPCs.

A token is where the previous page ended, in the order the store lists in:
"<realtime_ns>.<record id>.<owner uid>" for records (two users may hold the
same id), the last event id for restores.
Clients treat tokens as opaque; a token that does not parse is refused with
INVALID_ARGUMENT rather than restarting the listing from the beginning.
Pages end at a count and at a number of bytes, whichever comes first.
"""
import re

from .errors import InvalidArgument

DEFAULT_PAGE_SIZE = 500
MAX_PAGE_SIZE = 1000
# A page also ends before it passes this many bytes (of stored record files;
# of restore messages), so a page of large records neither loads unbounded
# data nor outgrows a client's 4 MiB message limit. A page holds at least one.
MAX_PAGE_BYTES = 1024 * 1024
RESTORE_EVENT_BYTES = 200   # an event's fields besides its message, roughly

_RECORD_TOKEN = re.compile(r"([0-9]{1,19})\.([0-9a-f]{32})\.([0-9]{1,10})")
UINT32_MAX = 2**32 - 1
INT64_MAX = 2**63 - 1
_RESTORE_TOKEN = re.compile(r"[0-9]{1,19}")


def page_size(requested: int) -> int:
    """The page size to serve: the default for 0, at most MAX_PAGE_SIZE."""
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def one_page(rows: list, size: int, weight=lambda row: 0, max_bytes: int = MAX_PAGE_BYTES) -> tuple[list, bool]:
    """The page out of rows fetched with a limit of size + 1 (the extra row
    only tells that another page follows), and whether one does: at most
    size rows, and at most max_bytes of their weight (but at least one row)."""
    taken, total = 0, 0
    for row in rows[:size]:
        total += weight(row)
        if taken and total > max_bytes:
            break
        taken += 1
    return rows[:taken], len(rows) > taken


def record_token(realtime_ns: int, record_id: str, owner_uid: int) -> str:
    return f"{realtime_ns}.{record_id}.{owner_uid}"


def parse_record_token(token: str) -> "tuple[int, str, int] | None":
    """The (realtime_ns, id, owner_uid) a ListRecords page token continues after; None for ""."""
    if not token:
        return None
    match = _RECORD_TOKEN.fullmatch(token)
    if match is None or int(match.group(1)) > INT64_MAX or int(match.group(3)) > UINT32_MAX:
        raise InvalidArgument(f"page_token {token[:64]!r} is not one ListRecords returned")
    return int(match.group(1)), match.group(2), int(match.group(3))


def parse_restore_token(token: str) -> int:
    """The event id a ListRestores page token continues after; 0 for ""."""
    if not token:
        return 0
    if _RESTORE_TOKEN.fullmatch(token) is None or int(token) > INT64_MAX:
        raise InvalidArgument(f"page_token {token[:64]!r} is not one ListRestores returned")
    return int(token)
