"""Hypothesis strategies for damaged CRIU timens images."""
from hypothesis import strategies as st

from keeptime.criu.image import (
    COMMON_MAGIC, MAX_CLOCK_NS, TIMENS_MAGIC, ImageError, TimensClocks, decode_timens, encode_timens,
)

HEADER = COMMON_MAGIC.to_bytes(4, "little") + TIMENS_MAGIC.to_bytes(4, "little")
_clock_ns = st.integers(min_value=0, max_value=MAX_CLOCK_NS)


def _damaged(data: bytes) -> bool:
    try:
        decode_timens(data)
    except ImageError:
        return True
    return False


@st.composite
def _truncated(draw) -> bytes:
    good = encode_timens(TimensClocks(draw(_clock_ns), draw(_clock_ns)))
    return good[:draw(st.integers(min_value=1, max_value=len(good) - 1))]


@st.composite
def _flipped(draw) -> bytes:
    good = bytearray(encode_timens(TimensClocks(draw(_clock_ns), draw(_clock_ns))))
    at = draw(st.integers(min_value=0, max_value=len(good) - 1))
    good[at] ^= draw(st.integers(min_value=1, max_value=255))
    return bytes(good)


def damaged_timens_images() -> st.SearchStrategy[bytes]:
    """Non-empty bytes that are not a sound timens-0.img: garbage, a valid
    header before garbage entries, truncations and bit flips of valid images."""
    return st.one_of(
        st.binary(min_size=1, max_size=40),
        st.binary(max_size=40).map(lambda entries: HEADER + entries),
        _truncated(),
        _flipped(),
    ).filter(_damaged)
