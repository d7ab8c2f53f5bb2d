"""The timens-0.img codec against bytes built by hand from the documented
format (u32 common magic, u32 timens magic, u32 length + protobuf entry, all
little-endian), and its behaviour on damaged input: always ImageError with one
line, never another exception."""
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keeptime.criu import image
from keeptime.criu.image import ImageError, TimensClocks

NS = 1_000_000_000


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def timespec(sec: int, nsec: int) -> bytes:
    # field 1 (tv_sec) and field 2 (tv_nsec), wire type 0 (varint)
    return b"\x08" + varint(sec) + b"\x10" + varint(nsec)


def entry(mono: tuple[int, int], boot: tuple[int, int]) -> bytes:
    # field 1 (monotonic) and field 2 (boottime), wire type 2 (length-delimited)
    m, b = timespec(*mono), timespec(*boot)
    return b"\x0a" + varint(len(m)) + m + b"\x12" + varint(len(b)) + b


def framed(*entries: bytes, magic: int = 0x43114433) -> bytes:
    out = struct.pack("<II", 0x54564319, magic)
    for e in entries:
        out += struct.pack("<I", len(e)) + e
    return out


def test_decodes_hand_built_bytes():
    data = framed(entry((864_000, 123_456_789), (864_100, 1)))
    assert data[:8] == bytes.fromhex("1943565433441143")  # the magics, little-endian
    assert image.decode_timens(data) == TimensClocks(864_000_123_456_789, 864_100_000_000_001)


def test_encodes_exactly_the_hand_built_bytes():
    clocks = TimensClocks(864_000_123_456_789, 864_100_000_000_001)
    assert image.encode_timens(clocks) == framed(entry((864_000, 123_456_789), (864_100, 1)))


clock_ns = st.integers(min_value=0, max_value=2**63 - 1)


@given(clock_ns, clock_ns)
def test_round_trip(mono, boot):
    clocks = TimensClocks(mono, boot)
    data = image.encode_timens(clocks)
    assert data == framed(entry(divmod(mono, NS), divmod(boot, NS)))
    assert image.decode_timens(data) == clocks


@pytest.mark.parametrize("data, words", [
    (b"", "truncated"),
    (struct.pack("<I", 0x54564319), "truncated"),
    (framed(), "0 entries"),
    (framed(magic=0x12345678) + b"\x00" * 4, "another kind"),
    (struct.pack("<II", 0xDEADBEEF, 0x43114433), "not a CRIU image"),
    (framed(entry((1, 2), (3, 4)))[:-1], "truncated"),
    (framed(entry((1, 2), (3, 4))) + b"\x01\x02", "stray bytes"),
    (framed(entry((1, 2), (3, 4)), entry((1, 2), (3, 4))), "2 entries"),
    (framed(b"\xff\xff\xff"), "does not parse"),
    (framed(b"\x0a" + varint(len(timespec(1, 2))) + timespec(1, 2)), "lacks required fields"),
    (framed(entry((1, NS), (3, 4))), "tv_nsec"),
    (framed(entry((2**63 // NS + 1, 0), (3, 4))), "64-bit"),
])
def test_damage_is_a_clear_image_error(data, words):
    with pytest.raises(ImageError, match=words) as caught:
        image.decode_timens(data)
    assert "\n" not in str(caught.value)


def assert_clear(exc: ImageError) -> None:
    """One line that names the file."""
    assert str(exc).startswith(image.TIMENS_IMAGE) and "\n" not in str(exc)


@given(st.binary(max_size=200))
def test_garbage_never_crashes(data):
    try:
        image.decode_timens(data)
    except ImageError as exc:
        assert_clear(exc)


@given(st.binary(max_size=60))
def test_garbage_entries_after_a_valid_header_never_crash(payload):
    try:
        image.decode_timens(framed(payload))
    except ImageError as exc:
        assert_clear(exc)


@given(clock_ns, clock_ns, st.data())
def test_every_truncation_of_a_valid_image_is_an_error(mono, boot, data):
    good = image.encode_timens(TimensClocks(mono, boot))
    cut = data.draw(st.integers(min_value=0, max_value=len(good) - 1))
    with pytest.raises(ImageError):
        image.decode_timens(good[:cut])


@given(clock_ns, clock_ns, st.binary(min_size=1, max_size=20))
def test_trailing_bytes_are_an_error(mono, boot, tail):
    with pytest.raises(ImageError):
        image.decode_timens(image.encode_timens(TimensClocks(mono, boot)) + tail)


@pytest.mark.parametrize("clocks", [TimensClocks(-1, 0), TimensClocks(0, 2**63)])
def test_unrepresentable_clocks_are_refused_before_writing(clocks):
    with pytest.raises(ImageError, match="cannot be stored"):
        image.encode_timens(clocks)


def test_generic_framing_keeps_every_entry():
    data = image.write_entries(0x11223344, [b"a", b"", b"bcd"])
    assert image.read_entries(data, 0x11223344, "x.img") == [b"a", b"", b"bcd"]
