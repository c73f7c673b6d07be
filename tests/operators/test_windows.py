from operators.windows import WindowSpec, slice_length

MINUTE = 60_000


def test_slice_length_is_the_gcd_of_lengths_and_slides() -> None:
    specs = [WindowSpec.tumbling("1m", MINUTE), WindowSpec.tumbling("1h", 60 * MINUTE),
             WindowSpec("5m", 5 * MINUTE, 30_000)]  # fmt: skip
    assert slice_length(specs) == 30_000
    assert slice_length([WindowSpec("odd", 7_000, 3_000)]) == 1_000


def test_tumbling_windows_align_to_the_epoch() -> None:
    spec = WindowSpec.tumbling("1m", MINUTE)
    assert list(spec.starts_containing(125_000)) == [120_000]
    assert list(spec.starts_containing(120_000)) == [120_000]  # a boundary belongs to the next
    assert list(spec.starts_containing(119_999)) == [60_000]


def test_sliding_windows_containing_an_instant_and_a_slice() -> None:
    spec = WindowSpec("5m/30s", 5 * MINUTE, 30_000)
    starts = list(spec.starts_containing(300_000))
    assert len(starts) == 10 and starts[0] == 300_000 and starts[-1] == 30_000
    assert all(s <= 300_000 < s + spec.length for s in starts)
    assert list(spec.starts_containing_slice(300_000, 30_000)) == starts


def test_a_slide_that_does_not_divide_the_length() -> None:
    spec = WindowSpec("7s/3s", 7_000, 3_000)
    for ts in range(0, 30_000, 500):
        expected = [s for s in range(ts - ts % 3_000, ts - 7_000, -3_000) if s <= ts < s + 7_000]
        assert list(spec.starts_containing(ts)) == expected
