from hypothesis import given
from hypothesis import strategies as st

from keeptime.timefmt import NSEC_PER_SEC, format_duration, format_ns, to_timespec


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_timespec_split_is_normalized_and_exact(ns):
    sec, nsec = to_timespec(ns)
    assert 0 <= nsec < NSEC_PER_SEC
    assert sec * NSEC_PER_SEC + nsec == ns


def test_negative_offsets_use_the_kernel_form():
    assert to_timespec(-1_500_000_000) == (-2, 500_000_000)
    assert to_timespec(-1) == (-1, 999_999_999)


def test_formats():
    assert format_ns(-1_500_000_000) == "-1.500000000 s"
    assert format_ns(864_000_123_456_789) == "864000.123456789 s"
    assert format_duration(850) == "850 ns"
    assert format_duration(12_300_000) == "12.3 ms"
    assert format_duration(3 * 86_400 * NSEC_PER_SEC + 7_384 * NSEC_PER_SEC) == "3 d 02:03:04"
